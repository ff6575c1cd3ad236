//! Where a store's objects live: the one seam between the repository format and storage.
//!
//! A store is a set of named objects (`config`, `packs/ab/<id>.pack`, `snapshots/<id>`,
//! `runs/<run>.json`). A [`Backend`] holds them: [`LocalDir`] in a directory, [`S3`] under a
//! prefix of an S3-compatible bucket. The repository format above relies on these rules only,
//! and `tests/backend.rs` checks every backend against them:
//!
//! - **Whole or nothing.** An object written by [`Backend::put_once`], [`Backend::put_file`] or
//!   [`Backend::replace`] is seen by every later read (of any process, any machine) complete,
//!   once the call returns; before, it is absent (or its old version). Never partial.
//! - **Durable on return.** The local backend syncs the file and its directory; S3 returns
//!   after the server acknowledged the object.
//! - **No conditional writes, no read-modify-write.** Names written by `put_once` are content
//!   addresses or unique, so two writers of one name write the same bytes and either may win.
//!   [`Backend::replace`] is for documents with a single writer (a run's record). Some S3
//!   servers ignore `If-None-Match`, so nothing relies on it.
//! - **Listing** (`list(prefix)`) returns whole objects only, with their sizes; an object being
//!   written may be missing from it.
//! - **Deleting** an absent object is not an error.

use std::fmt;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::durable;
use crate::error::{io_at, Error, Result};

/// Storage for a store's objects. See the module documentation for the rules.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where the store is, as the user names it: a directory, or `s3://bucket/prefix`.
    fn location(&self) -> &str;

    /// The directory, for a local store (its `tmp/`, caches and `repair` live there).
    fn local_root(&self) -> Option<&Path>;

    /// Where a pack is staged while it is written, before [`Backend::put_file`] publishes it.
    fn staging_dir(&self) -> PathBuf;

    /// Writes a new object durably (see the module documentation).
    fn put_once(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Publishes the finished local file `file` (in [`Backend::staging_dir`]) as `name`; the
    /// file is gone afterwards, whether or not it succeeded.
    fn put_file(&self, name: &str, file: &Path) -> Result<()>;

    /// Writes or replaces a single-writer document, whole or nothing.
    fn replace(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// Writes `name` unless it exists. Locally atomic; on S3 a check then a write (two
    /// creators at once may both write; the last one's object wins, for both).
    fn create_once(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// An object's bytes; `None` if there is no such object.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Opens an object for ranged reads; `None` if there is none. `len`: its size if the
    /// caller knows it (from a listing), which saves S3 a request.
    fn open(&self, name: &str, len: Option<u64>) -> Result<Option<Box<dyn Object>>>;

    /// Whether an object exists.
    fn exists(&self, name: &str) -> Result<bool>;

    /// Every object whose name starts with `prefix` (a directory: ends with `/`), with its
    /// size, in name order.
    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>>;

    /// Deletes an object; deleting one that is absent is not an error.
    fn delete(&self, name: &str) -> Result<()>;

    /// Where `name` is, for messages: a path, or a URL.
    fn display(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("{}/{name}", self.location().trim_end_matches('/')))
    }
}

/// An object opened for ranged reads.
pub trait Object: Send {
    /// Its size in bytes.
    fn size(&self) -> Result<u64>;

    /// Fills `out` from `offset`; an object too short is an `UnexpectedEof` I/O error.
    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()>;
}

/// The backend for `location`: `s3://bucket/prefix`, else a local directory.
pub fn for_location(location: &str) -> Result<Arc<dyn Backend>> {
    if let Some(rest) = location.strip_prefix("s3://") {
        Ok(Arc::new(S3::new(rest)?))
    } else {
        Ok(Arc::new(LocalDir::new(Path::new(location))))
    }
}

/// A store in a directory: owner-only files, written in `tmp/`, synced, renamed into place.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    location: String,
}

impl LocalDir {
    pub fn new(root: &Path) -> LocalDir {
        LocalDir {
            root: root.to_path_buf(),
            location: root.display().to_string(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Creates the directories above `path` inside the store, owner-only.
    fn ensure_parents(&self, path: &Path) -> Result<()> {
        if !self.root.is_dir() {
            durable::ensure_dir_all(&self.root)?;
        }
        let mut missing = Vec::new();
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || d.is_dir() {
                break;
            }
            missing.push(d);
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            durable::ensure_dir(d)?;
        }
        Ok(())
    }
}

/// A local file opened for ranged reads (for `repair`, which reads files moved aside).
pub(crate) fn open_local(path: &Path) -> io::Result<Box<dyn Object>> {
    Ok(Box::new(LocalObject {
        file: fs::File::open(path)?,
        path: path.to_path_buf(),
    }))
}

struct LocalObject {
    file: fs::File,
    path: PathBuf,
}

impl Object for LocalObject {
    fn size(&self) -> Result<u64> {
        Ok(self.file.metadata().map_err(io_at(&self.path))?.len())
    }

    fn read_at(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        crate::pack::read_at(&self.file, out, offset)
    }
}

impl Backend for LocalDir {
    fn location(&self) -> &str {
        &self.location
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }

    fn staging_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn put_once(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.replace(name, bytes)
    }

    fn put_file(&self, name: &str, file: &Path) -> Result<()> {
        let path = self.path(name);
        let moved = self
            .ensure_parents(&path)
            .and_then(|()| durable::rename_durable(file, &path));
        if moved.is_err() {
            let _ = fs::remove_file(file);
        }
        moved
    }

    fn replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        self.ensure_parents(&path)?;
        let kind = name.split('/').next().unwrap_or("object");
        durable::write_atomic(&self.staging_dir(), kind, &path, bytes)
    }

    fn create_once(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let target = self.path(name);
        self.ensure_parents(&target)?;
        let (file, tmp) = durable::create_tmp(&self.staging_dir(), name)?;
        // A hard link never replaces: when two processes create the same store at once, the
        // first object wins and both see it.
        let result = durable::write_synced(file, &tmp, bytes).and_then(|()| {
            match fs::hard_link(&tmp, &target) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                // File systems without hard links.
                Err(_) => fs::rename(&tmp, &target).map_err(io_at(&target)),
            }
        });
        let _ = fs::remove_file(&tmp);
        result?;
        durable::sync_dir(target.parent().unwrap_or(&self.root))
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn open(&self, name: &str, _len: Option<u64>) -> Result<Option<Box<dyn Object>>> {
        let path = self.path(name);
        match fs::File::open(&path) {
            Ok(file) => Ok(Some(Box::new(LocalObject { file, path }))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn exists(&self, name: &str) -> Result<bool> {
        let path = self.path(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // The directory holding the prefix, walked below it; `tmp/` never lists.
        let (dir, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut found = Vec::new();
        walk(&self.root, dir, &mut found)?;
        found.retain(|(name, _)| {
            name.starts_with(prefix) && name != "tmp" && !name.starts_with("tmp/")
        });
        found.sort();
        Ok(found)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn display(&self, name: &str) -> PathBuf {
        self.path(name)
    }
}

/// The regular files below `root/dir` (and empty directories), by name relative to `root`
/// (`/`-separated, UTF-8 only).
fn walk(root: &Path, dir: &str, found: &mut Vec<(String, u64)>) -> Result<()> {
    let path = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    let entries = match fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
        Err(e) => return Err(io_at(&path)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_at(&path))?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue;
        };
        let name = if dir.is_empty() {
            file_name
        } else {
            format!("{dir}/{file_name}")
        };
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            let before = found.len();
            walk(root, &name, found)?;
            if found.len() == before {
                // Not a store's own: listed as itself, so that a read of it fails and
                // `verify` names it (a directory where a snapshot should be).
                found.push((name, 0));
            }
        } else if kind.is_file() {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            found.push((name, len));
        }
    }
    Ok(())
}

pub use crate::s3::S3;

/// A value made once per process: after `fork` the child must not use its parent's threads or
/// sockets (an async runtime's workers are not in the child; its epoll instance is shared with
/// the parent), so it makes its own and leaks the inherited one untouched.
pub(crate) struct PerProcess<T> {
    slot: Mutex<Option<(u32, Arc<T>)>>,
}

impl<T> PerProcess<T> {
    pub(crate) fn new() -> PerProcess<T> {
        PerProcess {
            slot: Mutex::new(None),
        }
    }

    pub(crate) fn get(&self, make: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let pid = std::process::id();
        match slot.take() {
            Some((owner, value)) if owner == pid => {
                *slot = Some((owner, Arc::clone(&value)));
                return Ok(value);
            }
            // Never dropped: dropping would deregister the parent's sockets from the epoll
            // instance the two processes share.
            Some((_, inherited)) => std::mem::forget(inherited),
            None => {}
        }
        let value = Arc::new(make()?);
        *slot = Some((pid, Arc::clone(&value)));
        Ok(value)
    }
}

/// How long one request may take, and how long retries of one operation may go on.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const RETRY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one whole operation that moves little data (a document, a listing page, a
/// delete) may take, retries included; one that moves more gets that much longer again for
/// its bytes at `SLOWEST_RATE` (bytes per second).
pub(crate) const QUICK_LIMIT: Duration = Duration::from_secs(10);
pub(crate) const SLOWEST_RATE: f64 = 1024.0 * 1024.0;

/// The byte range `offset..offset+len`.
pub(crate) fn range(offset: u64, len: usize) -> Range<u64> {
    offset..offset + len as u64
}

/// An error of the storage service, in one line that says what failed.
pub(crate) fn remote(location: &str, detail: impl fmt::Display) -> Error {
    Error::Remote {
        location: location.to_string(),
        detail: detail.to_string(),
    }
}
