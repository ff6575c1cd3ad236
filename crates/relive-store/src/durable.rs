//! Durable, owner-only file system writes: every file is written in `tmp/`, synced, renamed into
//! place, and the directory that received it is synced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{io_at, Result};

/// Creates `dir` (owner-only) if it is missing, syncing its parent when it was created.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    let mut created = dir_builder().create(dir);
    if matches!(&created, Err(e) if e.kind() == io::ErrorKind::NotFound) {
        // A missing parent: on a fresh machine, `~/.cache/relive` above an S3 store's
        // staging directory. Made (owner-only), then this one.
        if let Some(parent) = dir.parent() {
            ensure_dir_all(parent)?;
        }
        created = dir_builder().create(dir);
    }
    match created {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_at(dir)(e)),
    }
}

/// Creates `dir` and any missing parents, owner-only.
pub(crate) fn ensure_dir_all(dir: &Path) -> Result<()> {
    dir_builder()
        .recursive(true)
        .create(dir)
        .map_err(io_at(dir))
}

fn dir_builder() -> fs::DirBuilder {
    #[allow(unused_mut)]
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
}

/// Makes a rename or file creation in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a directory as a file; NTFS journals renames.
        let _ = dir;
        Ok(())
    }
}

/// A new owner-only file `tmp/<kind>-<pid>-<random>.tmp`, opened for writing.
pub(crate) fn create_tmp(tmp_dir: &Path, kind: &str) -> Result<(File, PathBuf)> {
    create_tmp_with(tmp_dir, kind, 0)?
        .ok_or_else(|| crate::Error::Invalid("a file opened with no flags was refused".into()))
}

/// [`create_tmp`] opened with the `open(2)` flags `flags` besides (`O_DIRECT`): None where the
/// file system refuses them (`EINVAL`), nothing created.
pub(crate) fn create_tmp_with(
    tmp_dir: &Path,
    kind: &str,
    flags: i32,
) -> Result<Option<(File, PathBuf)>> {
    ensure_dir(tmp_dir)?;
    loop {
        let path = tmp_dir.join(format!(
            "{kind}-{}-{}.tmp",
            std::process::id(),
            random_suffix()
        ));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600).custom_flags(flags);
        }
        match options.open(&path) {
            Ok(file) => return Ok(Some((file, path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) if flags != 0 && e.kind() == io::ErrorKind::InvalidInput => {
                let _ = fs::remove_file(&path); // some systems create the file before refusing
                return Ok(None);
            }
            Err(e) => return Err(io_at(&path)(e)),
        }
    }
}

/// Writes `bytes` to `target` so that `target` is either absent/old or complete, never partial.
pub(crate) fn write_atomic(tmp_dir: &Path, kind: &str, target: &Path, bytes: &[u8]) -> Result<()> {
    let (file, tmp) = create_tmp(tmp_dir, kind)?;
    let result = write_synced(file, &tmp, bytes).and_then(|()| rename_durable(&tmp, target));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Writes all of `bytes` and syncs the file.
pub(crate) fn write_synced(mut file: File, path: &Path, bytes: &[u8]) -> Result<()> {
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io_at(path))
}

/// Renames `from` to `to` and syncs the directory that received it.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(io_at(to))?;
    match to.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Tmp files idle this long whose writer is gone are removed when a writer opens the store. The
/// age guard protects writers that this machine cannot see (another host on a shared file
/// system, another pid namespace); removing a live writer's file costs it only that snapshot
/// (its rename fails), never a committed one.
const STALE_AGE: Duration = Duration::from_secs(600);

/// `relive repair` removes (and `verify` reports) tmp files idle this long whose writer is gone:
/// a writer that is still writing touches its file far more often.
pub(crate) const LEFTOVER_AGE: Duration = Duration::from_secs(60);

/// Removes `tmp/` files left by processes that are gone (Linux only: elsewhere they stay until
/// `relive repair`). Best effort: errors are ignored.
pub(crate) fn remove_stale_tmp(tmp_dir: &Path) {
    for (path, _) in stale_tmp(tmp_dir, STALE_AGE, false) {
        let _ = fs::remove_file(path);
    }
}

/// The files in `tmp/` (and their sizes) that no live writer of this machine owns and that were
/// not modified for `min_idle`. With `unknown`, also files whose name does not say their writer.
pub(crate) fn stale_tmp(tmp_dir: &Path, min_idle: Duration, unknown: bool) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        match name.to_str().and_then(tmp_owner) {
            Some(pid) if pid == std::process::id() || pid_alive(pid) => continue,
            Some(_) => {}
            None if !unknown => continue,
            None => {}
        }
        let Ok(meta) = entry.metadata() else { continue };
        let idle = meta
            .modified()
            .map(|modified| now.duration_since(modified).unwrap_or_default() >= min_idle)
            .unwrap_or(false);
        if idle && !meta.is_dir() {
            stale.push((entry.path(), meta.len()));
        }
    }
    stale.sort();
    stale
}

/// The pid in a name `<kind>-<pid>-<random>.tmp`.
fn tmp_owner(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".tmp")?;
    let mut parts = stem.rsplitn(3, '-');
    let _random = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

#[cfg(target_os = "linux")]
fn pid_alive(pid: u32) -> bool {
    // Errors other than "absent" count as alive: only delete what is certainly orphaned.
    !matches!(fs::metadata(format!("/proc/{pid}")), Err(e) if e.kind() == io::ErrorKind::NotFound)
}

#[cfg(not(target_os = "linux"))]
fn pid_alive(_pid: u32) -> bool {
    true
}

/// 16 hex digits, different for every call in every process.
pub(crate) fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = blake3::Hasher::new();
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    hasher.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    hasher.update(&(&hasher as *const _ as usize).to_le_bytes());
    hasher.finalize().to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names() {
        assert_eq!(tmp_owner("pack-123-0123456789abcdef.tmp"), Some(123));
        assert_eq!(tmp_owner("snapshot-7-ab.tmp"), Some(7));
        assert_eq!(tmp_owner("pack-x-ab.tmp"), None);
        assert_eq!(tmp_owner("123-ab.tmp"), None);
        assert_eq!(tmp_owner("notes.txt"), None);
        assert_ne!(random_suffix(), random_suffix());
    }

    #[test]
    fn a_temporary_file_makes_its_missing_parents() {
        // An S3 store stages packs in ~/.cache/relive/staging, which a fresh machine lacks.
        let base = std::env::temp_dir().join(format!("relive-durable-{}", random_suffix()));
        let staging = base.join("relive").join("staging");
        let (_file, path) = create_tmp(&staging, "pack").expect("made with its parents");
        assert!(path.starts_with(&staging) && path.is_file());
        fs::remove_dir_all(&base).unwrap();
    }
}
