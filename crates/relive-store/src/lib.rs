//! The relive repository format.
//!
//! A store holds the history of a program's state, in a directory or under a prefix of an
//! S3-compatible bucket (see [`backend`]: the one seam to storage, its rules, its two
//! backends), with the same layout:
//!
//! ```text
//! config                       JSON {"format": 1, "chunk_size": 1048576, "created": "<RFC3339 UTC>"}
//! packs/<2 hex>/<64 hex>.pack  pack files (name = blake3 of the pack's index section), immutable
//! snapshots/<64 hex>           one manifest per snapshot; name = blake3 of the file's bytes
//! runs/<run id>.json           run documents (opaque JSON bytes)
//! prune/<time>-<random>.json   packs a prune will delete once no snapshot uses them (prune.rs)
//! tmp/                         half-written files, never read
//! cache/fingerprints           local cache: chunk fingerprints of the latest snapshot (rebuildable)
//! cache/summaries              the Python side's summaries of snapshots, for listing (rebuildable)
//! writing/<run>-<pid>          the Python side's markers of exit snapshots still being written
//! lost/<time>-<random>.json    blobs `relive repair` found lost: {"time": ..., "blobs": [ids]}
//! damaged/                     what `relive repair` moved aside (packs, snapshots, runs, config)
//! ```
//!
//! Everything is content addressed with BLAKE3 and every read is verified. Large buffers are cut
//! into fixed-size chunks; a [`Record`] holds a payload (a pickled skeleton, to the store just
//! bytes) and the chunk ids of its buffers. Blobs already stored are never written again, so an
//! unchanged buffer costs one hash and a partly changed one costs only its changed chunks. A
//! snapshot becomes visible only when its manifest is renamed into `snapshots/`, after every pack
//! it depends on is durable: a crash at any moment leaves every earlier snapshot loadable.
//!
//! [`Store`] is `Send + Sync`; it runs its own short-lived worker threads (no thread pool, so it
//! keeps working in a child process after `fork`), and compresses new chunks on idle-priority
//! threads, storing raw what they do not get to in time (see `idle.rs`). Where a snapshot
//! cannot be written by a forked child, [`Store::stage`] copies a record's changed chunks while
//! the program pauses and [`Store::put_staged`] writes them later from another thread (see
//! `staged.rs`); on Linux 6.7+ the kernel says which pages of large quiet buffers were
//! written since the last copies, and the rest is not read (`watch.rs`, `page_writes.rs`).

pub mod backend;
mod config;
mod copy_memory;
mod durable;
mod error;
mod fingerprint;
mod id;
mod idle;
mod pack;
mod pack_file;
mod page_writes;
mod parallel;
mod prune;
mod record;
mod repair;
mod s3;
mod snapshot;
mod staged;
mod store;
mod told;
mod transfer;
mod upload;
mod verify;
mod watch;
mod write_probe;

pub use error::{Error, Result};
pub use id::Id;
pub use idle::idle_cpu_seconds;
pub use pack::{BlobInfo, Codec, Kind};
pub use parallel::workers_cpu_seconds;
pub use prune::PruneReport;
pub use record::{BufferRef, Record};
pub use repair::RepairReport;
pub use staged::Staged;
pub use store::{BufferSource, PutOutcome, Store, FORMAT};
pub use told::{forget as forget_told, tell as tell_written};
pub use transfer::CopyReport;
pub use verify::{Problem, VerifyReport};
pub use watch::{pages_watchable, take_back_from_child};
pub use write_probe::WriteProbe;
