//! [`Store::verify`]: read everything, check everything.

use std::collections::HashSet;
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::{Duration, Instant};

use zstd::bulk::Decompressor;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{self, BlobError};
use crate::parallel;
use crate::record;
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
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One thing wrong with a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// `corrupt-pack`, `corrupt-blob`, `corrupt-snapshot`, `corrupt-record`, `missing-blob` or
    /// `corrupt-run`.
    pub kind: String,
    /// The id of the damaged or missing object, where it has one.
    pub id: Option<String>,
    /// The file that holds (or should lead to) it.
    pub path: PathBuf,
    pub detail: String,
}

impl Problem {
    fn new(kind: &str, id: Option<&Id>, path: PathBuf, detail: impl Into<String>) -> Problem {
        Problem {
            kind: kind.into(),
            id: id.map(Id::to_hex),
            path,
            detail: detail.into(),
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

impl Store {
    /// Reads every pack completely (header, index, every blob decompressed and hashed), then
    /// checks every snapshot (its hash, its JSON, and that every record it names exists and
    /// decodes and all the record's chunks exist), and every run document. `progress(done,
    /// total)` is called with pack bytes as they are read. Errors are only for a store that cannot
    /// be listed; damage is reported in [`VerifyReport::problems`].
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        self.refresh()?;
        let packs = pack::list_packs(&self.packs_dir())?;
        let total: u64 = packs
            .iter()
            .map(|(_, path)| path.metadata().map_or(0, |m| m.len()))
            .sum();
        progress(0, total);
        let packs_ref = &packs;
        let (tx, rx) = mpsc::channel::<u64>();
        let checks = thread::scope(|scope| {
            let checker =
                thread::Builder::new().spawn_scoped(scope, move || check_packs(packs_ref, &tx));
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
                Err(_) => check_packs(packs_ref, &mpsc::channel().0),
            }
        });
        let mut report = VerifyReport {
            packs: packs.len() as u64,
            ..VerifyReport::default()
        };
        for check in checks {
            report.blobs += check.blobs;
            report.bytes += check.bytes;
            report.problems.extend(check.problems);
        }
        progress(total, total);
        self.check_snapshots(&mut report)?;
        self.check_runs(&mut report)?;
        Ok(report)
    }

    fn check_snapshots(&self, report: &mut VerifyReport) -> Result<()> {
        let ids = self.snapshot_ids()?;
        report.snapshots = ids.len() as u64;
        let mut checked = HashSet::new();
        let mut scratch = Vec::new();
        let mut dctx: Option<Decompressor<'static>> = None;
        for sid in ids {
            let path = self.root.join("snapshots").join(sid.to_hex());
            let records = self
                .read_snapshot(&sid)
                .map_err(|e| match e {
                    Error::Corrupt { detail, .. } => detail,
                    other => other.to_string(),
                })
                .and_then(|json| snapshot::record_ids(&json));
            let records = match records {
                Ok(records) => records,
                Err(detail) => {
                    report.problems.push(Problem::new(
                        "corrupt-snapshot",
                        Some(&sid),
                        path,
                        detail,
                    ));
                    continue;
                }
            };
            for rid in records {
                if !checked.insert(rid) {
                    continue;
                }
                let Some((pack, entry)) = self.read_index().get(&rid) else {
                    report.problems.push(Problem::new(
                        "missing-blob",
                        Some(&rid),
                        path.clone(),
                        format!("record {rid} of snapshot {sid} is in no readable pack"),
                    ));
                    continue;
                };
                let mut bytes = vec![0u8; entry.raw_len as usize];
                let file = File::open(&pack.path);
                let read = file.map_err(BlobError::Io).and_then(|f| {
                    pack::read_blob_into(&f, &entry, &mut bytes, &mut scratch, &mut dctx)
                });
                let decoded = match read {
                    Ok(()) => record::decode(&bytes),
                    Err(BlobError::Corrupt(detail)) => Err(detail),
                    Err(BlobError::Io(e)) => Err(format!("cannot read it: {e}")),
                };
                let rec = match decoded {
                    Ok(rec) => rec,
                    Err(detail) => {
                        report.problems.push(Problem::new(
                            "corrupt-record",
                            Some(&rid),
                            pack.path.clone(),
                            format!("record of snapshot {sid}: {detail}"),
                        ));
                        continue;
                    }
                };
                for buffer in &rec.buffers {
                    let mut held = 0u64;
                    for cid in &buffer.chunks {
                        match self.read_index().get(cid) {
                            Some((_, chunk)) => held += u64::from(chunk.raw_len),
                            None => report.problems.push(Problem::new(
                                "missing-blob",
                                Some(cid),
                                path.clone(),
                                format!(
                                    "chunk of record {rid} (snapshot {sid}) is in no readable pack"
                                ),
                            )),
                        }
                    }
                    let all_present = buffer
                        .chunks
                        .iter()
                        .all(|c| self.read_index().blobs.contains_key(c));
                    if all_present && held != buffer.len {
                        report.problems.push(Problem::new(
                            "corrupt-record",
                            Some(&rid),
                            pack.path.clone(),
                            format!("a buffer of {} bytes has chunks holding {held}", buffer.len),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_runs(&self, report: &mut VerifyReport) -> Result<()> {
        for (run_id, doc) in self.runs()? {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&doc) {
                report.problems.push(Problem::new(
                    "corrupt-run",
                    None,
                    self.root.join("runs").join(format!("{run_id}.json")),
                    format!("run {run_id} is not JSON: {e}"),
                ));
            }
        }
        Ok(())
    }
}

/// Checks every pack on up to [`parallel::workers`] threads, sending bytes read to `progress`.
fn check_packs(packs: &[(Id, PathBuf)], progress: &Sender<u64>) -> Vec<PackCheck> {
    let mut items: Vec<&(Id, PathBuf)> = packs.iter().collect();
    parallel::map_with(
        &mut items,
        || (Vec::new(), Vec::new(), None),
        |(out, scratch, dctx), (id, path)| check_pack(id, path, progress, out, scratch, dctx),
    )
}

fn check_pack(
    id: &Id,
    path: &PathBuf,
    progress: &Sender<u64>,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    dctx: &mut Option<Decompressor<'static>>,
) -> PackCheck {
    let mut check = PackCheck::default();
    let pack_problem =
        |detail: String| Problem::new("corrupt-pack", Some(id), path.clone(), detail);
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) => {
            check
                .problems
                .push(pack_problem(format!("cannot open the pack: {e}")));
            return check;
        }
    };
    let len = file.metadata().map_or(0, |m| m.len());
    check.bytes = len;
    let index = match pack::read_index(&file) {
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
        match pack::read_blob_into(&file, entry, out, scratch, dctx) {
            Ok(()) => {}
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
