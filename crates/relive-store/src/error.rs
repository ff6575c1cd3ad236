//! Errors of the store: each says what happened, where, and what to do.

use std::io;
use std::path::{Path, PathBuf};

use crate::id::Id;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// There is no store (no `config` file) at `path`.
    #[error("no relive store at {} (run a program with `relive run` first, or pass --store)", path.display())]
    NotFound { path: PathBuf },

    /// The store was written in a format this version cannot read.
    #[error(
        "the relive store at {} was written by a newer relive (format {found}, this relive reads {supported}): upgrade relive",
        path.display()
    )]
    FormatTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },

    /// `config` is gone but the directory still holds snapshots or packs: a new store must not
    /// be started over them (`relive repair` rebuilds the config from what is there).
    #[error(
        "the relive store at {} has no config file, but it holds {held} (was the config deleted?): run `relive repair --store {}` to rebuild it",
        path.display(), path.display()
    )]
    ConfigMissing { path: PathBuf, held: String },

    /// Packs that a snapshot being written relies on were deleted before it was committed.
    #[error(
        "{count} pack file(s) of the relive store at {} vanished while a snapshot was written, so it was not committed; the next snapshot writes their data again",
        path.display()
    )]
    PacksVanished { path: PathBuf, count: usize },

    /// A file failed its integrity check. No bytes of it are returned.
    #[error("{}", corrupt_message(what, id.as_deref(), path, detail))]
    Corrupt {
        /// What is damaged: "blob", "record", "pack", "snapshot", "config", ...
        what: &'static str,
        /// The id of the damaged object, where it has one.
        id: Option<String>,
        /// The file that holds it.
        path: PathBuf,
        detail: String,
    },

    /// A blob that a record or manifest names is in no readable pack.
    #[error(
        "blob {id} is missing from the relive store at {} (a pack file may be damaged or missing; run `relive verify`)",
        path.display()
    )]
    MissingBlob { id: Id, path: PathBuf },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },

    /// The storage service failed or refused (after retries): what failed, in one line.
    #[error("the relive store at {location}: {detail}")]
    Remote { location: String, detail: String },

    /// A caller passed something the store cannot accept.
    #[error("{0}")]
    Invalid(String),
}

fn corrupt_message(what: &str, id: Option<&str>, path: &Path, detail: &str) -> String {
    let id = id.map(|id| format!(" {id}")).unwrap_or_default();
    // A store without a readable config cannot be opened, so `relive verify` cannot help.
    let todo = if what == "config" {
        "run `relive repair`"
    } else {
        "run `relive verify`"
    };
    format!(
        "corrupt {what}{id} in {}: {detail} (the store failed its integrity check; {todo})",
        path.display()
    )
}

/// `map_err(io_at(path))`: an I/O error that names the file.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}
