//! [`Store::verify`]: read everything, check everything, and name the snapshots that each
//! damaged or missing blob costs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

use zstd::bulk::Decompressor;

use crate::backend::{Backend, Object};
use crate::durable;
use crate::error::{Error, Result};
use crate::fingerprint::{self, Fingerprints};
use crate::id::Id;
use crate::pack::{self, BlobError, Kind};
use crate::parallel;
use crate::record::{self, Record};
use crate::snapshot;
use crate::store::Store;

/// What [`Store::verify`] read and what it found wrong.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub packs: u64,
    pub blobs: u64,
    pub snapshots: u64,
    /// Bytes of pack files read.
    pub bytes: u64,
    /// Damage: the store is not whole (`relive repair` makes it so).
    pub problems: Vec<Problem>,
    /// What is worth knowing but is no damage: `leftover-tmp` (a file a writer that is gone left
    /// in `tmp/`), `lost-blob` (data that `relive repair` found lost: the snapshots that need it
    /// load all but the variables it held, until a new snapshot writes the same data again).
    pub notes: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `corrupt-pack`, `corrupt-blob`, `corrupt-snapshot`, `corrupt-record`, `missing-blob`,
    /// `corrupt-run`, `corrupt-cache`, `wrong-fingerprint`, `missing-config` or
    /// `corrupt-config`; for notes `leftover-tmp` or `lost-blob`.
    pub kind: String,
    /// The id of the damaged or missing object, where it has one.
    pub id: Option<String>,
    /// The file that holds (or should lead to) it.
    pub path: PathBuf,
    pub detail: String,
    /// For a damaged or missing blob: the snapshots that need it, each with its record that
    /// needs it (the blob itself, or the record whose chunk it is), as `(snapshot, record)`.
    pub needed_by: Vec<(String, String)>,
}

impl Problem {
    pub(crate) fn new(
        kind: &str,
        id: Option<&Id>,
        path: PathBuf,
        detail: impl Into<String>,
    ) -> Problem {
        Problem {
            kind: kind.into(),
            id: id.map(Id::to_hex),
            path,
            detail: detail.into(),
            needed_by: Vec::new(),
        }
    }
}

/// How often progress is reported at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct PackCheck {
    blobs: u64,
    bytes: u64,
    problems: Vec<Problem>,
}

/// The fingerprint cache's entries by blob id, to check against each chunk as it is read.
struct CacheCheck {
    seed: u64,
    by_id: HashMap<Id, Vec<u128>>,
    path: PathBuf,
}

/// Whether a blob a snapshot needs can be read.
enum BlobState {
    Readable,
    Damaged(usize),
    Missing,
}

impl Store {
    /// Reads the store in restic's order: the snapshot list first, then every pack completely
    /// (header, index, every blob decompressed and hashed, every fingerprint cache entry
    /// against the chunk it names), then every listed snapshot (its hash, its JSON, that every
    /// record it names exists and decodes and all the record's chunks exist), every run
    /// document, and what is left in `tmp/`. A snapshot is committed only once the packs it
    /// needs are durable, so snapshots that other processes commit meanwhile are never
    /// reported as missing blobs. `progress(done, total)` is called with pack bytes as they are
    /// read. Errors are only for a store that cannot be listed; damage is reported in
    /// [`VerifyReport::problems`].
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let snapshots = self.snapshot_ids()?;
        self.refresh()?;
        let packs = pack::list_packs(self.backend.as_ref())?;
        let mut report = VerifyReport {
            packs: packs.len() as u64,
            ..VerifyReport::default()
        };
        let cache = self.cache_check(&mut report);
        for check in self.check_packs_with_progress(&packs, cache.as_ref(), progress) {
            report.blobs += check.blobs;
            report.bytes += check.bytes;
            report.problems.extend(check.problems);
        }
        let listed: HashSet<Id> = packs.iter().map(|(id, _, _)| *id).collect();
        self.check_snapshots(&snapshots, &listed, &mut report);
        self.check_runs(&mut report)?;
        self.note_leftovers(&mut report);
        self.note_lost(&mut report);
        Ok(report)
    }

    fn check_packs_with_progress(
        &self,
        packs: &[(Id, String, u64)],
        cache: Option<&CacheCheck>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Vec<PackCheck> {
        let total: u64 = packs.iter().map(|(_, _, len)| len).sum();
        let backend = self.backend.as_ref();
        progress(0, total);
        let (tx, rx) = mpsc::channel::<u64>();
        let checks = thread::scope(|scope| {
            let checker = thread::Builder::new()
                .spawn_scoped(scope, move || check_packs(backend, packs, cache, &tx));
            match checker {
                Ok(handle) => {
                    let (mut done, mut last) = (0u64, Instant::now());
                    for bytes in rx {
                        done += bytes;
                        if last.elapsed() >= PROGRESS_INTERVAL {
                            progress(done.min(total), total);
                            last = Instant::now();
                        }
                    }
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                }
                // No thread for the checker: check here, reporting progress only at the end.
                Err(_) => check_packs(backend, packs, cache, &mpsc::channel().0),
            }
        });
        progress(total, total);
        checks
    }

    /// The fingerprint cache to check, or None (with a problem when it is damaged).
    fn cache_check(&self, report: &mut VerifyReport) -> Option<CacheCheck> {
        let path = self.fingerprints_path()?;
        match fingerprint::read_entries(&path) {
            Ok(None) => None,
            Ok(Some((seed, entries))) => {
                let mut by_id: HashMap<Id, Vec<u128>> = HashMap::new();
                for (fp, id) in entries {
                    by_id.entry(id).or_default().push(fp);
                }
                Some(CacheCheck { seed, by_id, path })
            }
            Err(detail) => {
                report.problems.push(Problem::new(
                    "corrupt-cache",
                    None,
                    path,
                    format!("the fingerprint cache is damaged: {detail} (`relive repair` removes it; it is rebuilt by the next snapshot)"),
                ));
                None
            }
        }
    }

    fn check_snapshots(&self, snapshots: &[Id], listed: &HashSet<Id>, report: &mut VerifyReport) {
        report.snapshots = snapshots.len() as u64;
        let mut damage = Damage::new(report);
        let mut records: HashMap<Id, Option<Record>> = HashMap::new();
        let mut reader = BlobReader::default();
        for &sid in snapshots {
            let name = format!("snapshots/{}", sid.to_hex());
            let path = self.backend.display(&name);
            let needed = match self.read_snapshot(&sid) {
                Ok(json) => snapshot::record_ids(&json),
                // Removed since it was listed (by `relive repair`, or by hand): nothing to check.
                Err(_) if !self.backend.exists(&name).unwrap_or(true) => continue,
                Err(Error::Corrupt { detail, .. }) => Err(detail),
                Err(other) => Err(other.to_string()),
            };
            let needed = match needed {
                Ok(needed) => needed,
                Err(detail) => {
                    damage.report.problems.push(Problem::new(
                        "corrupt-snapshot",
                        Some(&sid),
                        path,
                        detail,
                    ));
                    continue;
                }
            };
            for rid in needed {
                match damage.state(self, listed, &rid) {
                    BlobState::Readable => {}
                    state => {
                        let detail = format!("record {rid} is in no readable pack");
                        damage.need(state, "missing-blob", rid, &path, detail, sid, rid);
                        continue;
                    }
                }
                let record = records
                    .entry(rid)
                    .or_insert_with(|| self.checked_record(&rid, &mut reader, damage.report));
                let Some(record) = record else { continue };
                for buffer in &record.buffers {
                    for &cid in &buffer.chunks {
                        let state = damage.state(self, listed, &cid);
                        let detail = format!("a chunk of record {rid} is in no readable pack");
                        damage.need(state, "missing-blob", cid, &path, detail, sid, rid);
                    }
                }
            }
        }
    }

    /// A record, read and decoded, with its buffers' lengths checked; None (and a problem) when
    /// that fails.
    fn checked_record(
        &self,
        rid: &Id,
        reader: &mut BlobReader,
        report: &mut VerifyReport,
    ) -> Option<Record> {
        let (pack, entry) = self.read_index().get(rid)?;
        let mut bytes = vec![0u8; entry.raw_len as usize];
        let opened = self
            .backend
            .open(&pack.name, None)
            .map_err(|e| BlobError::Io(std::io::Error::other(e.to_string())));
        let read = opened
            .and_then(|f| f.ok_or_else(|| BlobError::Io(std::io::ErrorKind::NotFound.into())))
            .and_then(|f| {
                pack::read_blob_into(
                    f.as_ref(),
                    &entry,
                    &mut bytes,
                    &mut reader.scratch,
                    &mut reader.dctx,
                )
            });
        let decoded = match read {
            Ok(()) => record::decode(&bytes),
            Err(BlobError::Corrupt(detail)) => Err(detail),
            Err(BlobError::Io(e)) => Err(format!("cannot read it: {e}")),
        };
        let problem =
            |detail: String| Problem::new("corrupt-record", Some(rid), pack.path.clone(), detail);
        let record = match decoded {
            Ok(record) => record,
            Err(detail) => {
                report.problems.push(problem(detail));
                return None;
            }
        };
        for buffer in &record.buffers {
            let held: Option<u64> = buffer
                .chunks
                .iter()
                .map(|c| self.read_index().get(c).map(|(_, e)| u64::from(e.raw_len)))
                .sum();
            if held.is_some_and(|held| held != buffer.len) {
                report.problems.push(problem(format!(
                    "a buffer of {} bytes has chunks holding {}",
                    buffer.len,
                    held.unwrap_or(0)
                )));
            }
        }
        Some(record)
    }

    fn check_runs(&self, report: &mut VerifyReport) -> Result<()> {
        for (run_id, doc) in self.runs()? {
            if let Err(detail) = check_run(&doc) {
                report.problems.push(Problem::new(
                    "corrupt-run",
                    None,
                    self.backend.display(&format!("runs/{run_id}.json")),
                    format!("run {run_id} {detail}"),
                ));
            }
        }
        Ok(())
    }

    fn note_leftovers(&self, report: &mut VerifyReport) {
        if self.backend.local_root().is_none() {
            return; // a remote store's packs are staged on the machine that writes them
        }
        for (path, size) in durable::stale_tmp(&self.tmp_dir(), durable::LEFTOVER_AGE, true) {
            report.notes.push(Problem::new(
                "leftover-tmp",
                None,
                path,
                format!("{size} bytes left by a writer that is gone (`relive repair` removes it)"),
            ));
        }
    }

    /// Missing blobs that `relive repair` recorded as lost are notes, not problems: repair has
    /// done what it can.
    pub(crate) fn note_lost(&self, report: &mut VerifyReport) {
        let lost = self.lost_blobs();
        let (known, problems): (Vec<Problem>, Vec<Problem>) = std::mem::take(&mut report.problems)
            .into_iter()
            .partition(|p| {
                p.kind == "missing-blob"
                    && p.id
                        .as_deref()
                        .and_then(Id::from_hex)
                        .is_some_and(|id| lost.contains(&id))
            });
        report.problems = problems;
        report.notes.extend(known.into_iter().map(|mut p| {
            p.kind = "lost-blob".into();
            p.detail = format!("{} (recorded as lost by `relive repair`; a snapshot that holds the same data writes it again)", p.detail);
            p
        }));
    }
}

/// A run document must be a JSON object in UTF-8. Strings may hold lone surrogate escapes
/// (`"\udcff"`): that is how Python's `json` writes arguments that are not valid UTF-8.
fn check_run(doc: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(doc).map_err(|e| format!("is not UTF-8 text ({e})"))?;
    if !text.trim_start().starts_with('{') {
        return Err("is not a JSON object".into());
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|e| format!("is not JSON: {e}"))
}

#[derive(Default)]
struct BlobReader {
    scratch: Vec<u8>,
    dctx: Option<Decompressor<'static>>,
}

/// The blob problems found so far, by blob id, so that each damaged or missing blob is one
/// problem naming every snapshot that needs it.
struct Damage<'r> {
    report: &'r mut VerifyReport,
    by_blob: HashMap<Id, usize>,
}

impl<'r> Damage<'r> {
    fn new(report: &'r mut VerifyReport) -> Damage<'r> {
        let by_blob = report
            .problems
            .iter()
            .enumerate()
            .filter(|(_, p)| p.kind == "corrupt-blob")
            .filter_map(|(i, p)| Some((Id::from_hex(p.id.as_deref()?)?, i)))
            .collect();
        Damage { report, by_blob }
    }

    fn state(&self, store: &Store, listed: &HashSet<Id>, id: &Id) -> BlobState {
        if let Some(&i) = self.by_blob.get(id) {
            return BlobState::Damaged(i);
        }
        // A pack in the index but no longer on disk holds nothing.
        match store.read_index().get(id) {
            Some((pack, _)) if listed.contains(&pack.id) => BlobState::Readable,
            _ => BlobState::Missing,
        }
    }

    /// Notes that snapshot `sid` (through record `rid`) needs blob `id`, which is in `state`.
    #[allow(clippy::too_many_arguments)]
    fn need(
        &mut self,
        state: BlobState,
        kind: &str,
        id: Id,
        path: &Path,
        detail: String,
        sid: Id,
        rid: Id,
    ) {
        let i = match state {
            BlobState::Readable => return,
            BlobState::Damaged(i) => i,
            BlobState::Missing => *self.by_blob.entry(id).or_insert_with(|| {
                self.report.problems.push(Problem::new(
                    kind,
                    Some(&id),
                    path.to_path_buf(),
                    detail,
                ));
                self.report.problems.len() - 1
            }),
        };
        let needer = (sid.to_hex(), rid.to_hex());
        let needed_by = &mut self.report.problems[i].needed_by;
        if !needed_by.contains(&needer) {
            needed_by.push(needer);
        }
    }
}

/// Checks every pack on up to [`parallel::workers`] threads, sending bytes read to `progress`.
fn check_packs(
    backend: &dyn Backend,
    packs: &[(Id, String, u64)],
    cache: Option<&CacheCheck>,
    progress: &Sender<u64>,
) -> Vec<PackCheck> {
    let mut items: Vec<&(Id, String, u64)> = packs.iter().collect();
    parallel::map_with(
        &mut items,
        || (Vec::new(), Vec::new(), None),
        |(out, scratch, dctx), (id, name, _)| {
            check_pack(backend, id, name, cache, progress, out, scratch, dctx)
        },
    )
}

/// A pack to read completely: the local file, or a remote object fetched whole (one request
/// rather than one per blob).
fn open_whole(backend: &dyn Backend, name: &str) -> Result<Option<Box<dyn Object>>> {
    if backend.local_root().is_some() {
        return backend.open(name, None);
    }
    Ok(backend
        .get(name)?
        .map(|bytes| Box::new(pack::InMemory(bytes)) as Box<dyn Object>))
}

#[allow(clippy::too_many_arguments)]
fn check_pack(
    backend: &dyn Backend,
    id: &Id,
    name: &str,
    cache: Option<&CacheCheck>,
    progress: &Sender<u64>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    dctx: &mut Option<Decompressor<'static>>,
) -> PackCheck {
    let mut check = PackCheck::default();
    let path = backend.display(name);
    let pack_problem =
        |detail: String| Problem::new("corrupt-pack", Some(id), path.clone(), detail);
    let file = match open_whole(backend, name) {
        Ok(Some(file)) => file,
        Ok(None) => {
            check.problems.push(pack_problem("the pack is gone".into()));
            return check;
        }
        Err(e) => {
            check
                .problems
                .push(pack_problem(format!("cannot open the pack: {e}")));
            return check;
        }
    };
    let file = file.as_ref();
    let len = file.size().unwrap_or(0);
    check.bytes = len;
    let index = match pack::read_index(file) {
        Ok(index) => index,
        Err(detail) => {
            check.problems.push(pack_problem(detail));
            let _ = progress.send(len);
            return check;
        }
    };
    if index.hash != *id {
        check.problems.push(pack_problem(format!(
            "its index hashes to {}, not to its name",
            index.hash
        )));
    }
    let mut sent = 0u64;
    for entry in &index.entries {
        out.clear();
        out.resize(entry.raw_len as usize, 0);
        match pack::read_blob_into(file, entry, out, scratch, dctx) {
            Ok(()) => check
                .problems
                .extend(wrong_fingerprints(cache, entry.id, entry.kind, out)),
            Err(BlobError::Corrupt(detail)) => check.problems.push(Problem::new(
                "corrupt-blob",
                Some(&entry.id),
                path.clone(),
                detail,
            )),
            Err(BlobError::Io(e)) => check.problems.push(Problem::new(
                "corrupt-blob",
                Some(&entry.id),
                path.clone(),
                format!("cannot read it: {e}"),
            )),
        }
        check.blobs += 1;
        sent += u64::from(entry.stored_len);
        let _ = progress.send(u64::from(entry.stored_len));
    }
    let _ = progress.send(len.saturating_sub(sent));
    check
}

/// The fingerprint cache entries that name chunk `id` (whose bytes are `chunk`) for other bytes:
/// each would make a snapshot of those bytes load as this chunk.
fn wrong_fingerprints(
    cache: Option<&CacheCheck>,
    id: Id,
    kind: Kind,
    chunk: &[u8],
) -> Vec<Problem> {
    let Some(cache) = cache else {
        return Vec::new();
    };
    let Some(fps) = cache.by_id.get(&id) else {
        return Vec::new();
    };
    let actual = Fingerprints::of(cache.seed, chunk);
    fps.iter()
        .filter(|&&fp| kind != Kind::Chunk || fp != actual)
        .map(|fp| {
            Problem::new(
                "wrong-fingerprint",
                Some(&id),
                cache.path.clone(),
                format!(
                    "the fingerprint cache maps {fp:032x} to chunk {id}, which has other bytes (a snapshot of those bytes would load this chunk's instead; `relive repair` removes the cache)"
                ),
            )
        })
        .collect()
}
