//! [`Store::check`] and [`Store::repair`]: verify a store that may not even open, and make a
//! damaged store whole again. restic's `check` and `repair` are the model: nothing is modified
//! in place; damaged files are moved aside to `damaged/`, what can still be read is written
//! again into new files first, and what is lost is recorded (append-only, in `lost/`) so that
//! `verify` lists the snapshots that need it without failing on them again.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use zstd::bulk::Compressor;

use crate::backend;
use crate::config;
use crate::durable;
use crate::error::{io_at, Error, Result};
use crate::id::Id;
use crate::pack::{self, BlobError, Kind};

use crate::store::{Store, DEFAULT_CHUNK_SIZE, FORMAT};
use crate::verify::{Problem, VerifyReport};

/// What [`Store::repair`] did, and the store as verified afterwards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// One line per thing done, in the user's words.
    pub actions: Vec<String>,
    pub report: VerifyReport,
}

impl Store {
    /// [`Store::verify`] of the store at `path`, which may have a damaged or missing config
    /// (reported as a problem; the rest is checked all the same). `Error::NotFound` when there
    /// is no store at all.
    pub fn check(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let (store, config_problem) = open_for_repair(path)?;
        let mut report = store.verify(progress)?;
        report.problems.splice(0..0, config_problem);
        Ok(report)
    }

    /// Makes the store at `path` whole: rebuilds a damaged or missing config, copies the
    /// readable blobs of damaged packs into a new pack and moves the damaged ones aside, moves
    /// damaged snapshots and run documents aside, removes a wrong fingerprint cache and the
    /// files that writers that are gone left in `tmp/`, and records blobs that no pack holds
    /// any more as lost. Then verifies the store again. Safe while programs write to it: their
    /// files are never touched, and a writer that relied on a pack moved aside notices at its
    /// next snapshot.
    pub fn repair(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<RepairReport> {
        if path.to_string_lossy().starts_with("s3://") {
            return Err(Error::Invalid(format!(
                "relive repair works on a local store: `relive pull {}` into a directory, repair that, and push it to a new prefix",
                path.display()
            )));
        }
        let mut actions = Vec::new();
        let (store, config_problem) = open_for_repair(path)?;
        if let Some(problem) = config_problem {
            store.rebuild_config(&problem, &mut actions)?;
        }
        drop(store);
        let store = Store::open(path)?;
        let found = store.verify(progress)?;
        store.fix(&found, &mut actions)?;
        drop(store);
        // A fresh handle: the old one still indexes the packs moved aside.
        let store = Store::open(path)?;
        let mut report = store.verify(&mut |_, _| {})?;
        let missing: BTreeSet<Id> = report
            .problems
            .iter()
            .filter(|p| p.kind == "missing-blob")
            .filter_map(|p| Id::from_hex(p.id.as_deref()?))
            .collect();
        if !missing.is_empty() {
            let file = store.record_lost(&missing)?;
            let snapshots: BTreeSet<&str> = report
                .problems
                .iter()
                .filter(|p| p.kind == "missing-blob")
                .flat_map(|p| p.needed_by.iter().map(|(sid, _)| sid.as_str()))
                .collect();
            actions.push(format!(
                "recorded {} blob(s) as lost in {} (no pack holds them; {} snapshot(s) need them)",
                missing.len(),
                file.display(),
                snapshots.len()
            ));
            store.note_lost(&mut report);
        }
        Ok(RepairReport { actions, report })
    }

    fn rebuild_config(&self, problem: &Problem, actions: &mut Vec<String>) -> Result<()> {
        let config = self.root.join("config");
        if problem.kind == "corrupt-config" {
            let aside = move_aside(&self.root, &config, "")?;
            actions.push(format!(
                "moved the damaged config aside to {}",
                aside.display()
            ));
        }
        let (chunk_size, how) = match self.recorded_chunk_size() {
            Some(size) => (size, "read back from the stored records"),
            None => (DEFAULT_CHUNK_SIZE, "the default: no stored record says"),
        };
        config::write_new(self.backend.as_ref(), FORMAT, chunk_size)?;
        actions.push(format!(
            "rebuilt the config: format {FORMAT}, chunk size {chunk_size} ({how})"
        ));
        Ok(())
    }

    /// The chunk size the stored records were cut with: the length of the first chunk of a
    /// buffer cut into several. None when no record shows it.
    fn recorded_chunk_size(&self) -> Option<usize> {
        let records: Vec<Id> = {
            let index = self.read_index();
            index
                .blobs
                .keys()
                .filter(|id| index.get(id).is_some_and(|(_, e)| e.kind == Kind::Record))
                .copied()
                .collect()
        };
        records.iter().find_map(|id| {
            let record = self.get_record(id).ok()?;
            let first = record.buffers.iter().find(|b| b.chunks.len() > 1)?.chunks[0];
            let (_, entry) = self.read_index().get(&first)?;
            Some(entry.raw_len as usize)
        })
    }

    fn fix(&self, found: &VerifyReport, actions: &mut Vec<String>) -> Result<()> {
        let damaged_packs: BTreeSet<&PathBuf> = found
            .problems
            .iter()
            .filter(|p| p.kind == "corrupt-pack" || p.kind == "corrupt-blob")
            .map(|p| &p.path)
            .collect();
        for pack in damaged_packs {
            self.salvage_pack(pack, actions)?;
        }
        let mut moved = HashSet::new();
        for problem in &found.problems {
            let sub = match problem.kind.as_str() {
                "corrupt-snapshot" => "snapshots",
                "corrupt-run" => "runs",
                _ => continue,
            };
            if moved.insert(&problem.path) && problem.path.exists() {
                let aside = move_aside(&self.root, &problem.path, sub)?;
                actions.push(format!(
                    "moved the damaged {} {} aside to {}",
                    &sub[..sub.len() - 1],
                    file_name(&problem.path),
                    aside.display()
                ));
            }
        }
        let cache = self.fingerprints_path().unwrap_or_default();
        if found
            .problems
            .iter()
            .any(|p| p.kind == "corrupt-cache" || p.kind == "wrong-fingerprint")
        {
            match fs::remove_file(&cache) {
                Ok(()) => actions.push(format!(
                    "removed the wrong fingerprint cache {} (the next snapshot rebuilds it)",
                    cache.display()
                )),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(&cache)(e)),
            }
        }
        let leftovers = durable::stale_tmp(&self.tmp_dir(), durable::LEFTOVER_AGE, true);
        let bytes: u64 = leftovers.iter().map(|(_, size)| size).sum();
        let removed = leftovers
            .iter()
            .filter(|(path, _)| fs::remove_file(path).is_ok())
            .count();
        if removed > 0 {
            actions.push(format!(
                "removed {removed} file(s) left in tmp/ by writers that are gone ({bytes} bytes)"
            ));
        }
        Ok(())
    }

    /// Writes the readable blobs of a damaged pack into a new pack, then moves the damaged one
    /// aside: a crash in between leaves both, and the blobs twice, which is harmless.
    fn salvage_pack(&self, path: &Path, actions: &mut Vec<String>) -> Result<()> {
        let (mut kept, mut lost) = (0usize, 0usize);
        let index = backend::open_local(path)
            .ok()
            .and_then(|file| Some((pack::read_index(file.as_ref()).ok()?, file)));
        if let Some((index, file)) = index {
            let mut writer = self.writer();
            let (mut scratch, mut dctx) = (Vec::new(), None);
            let mut cctx = Compressor::new(pack::CHUNK_LEVEL).ok();
            for entry in &index.entries {
                let mut raw = vec![0u8; entry.raw_len as usize];
                match pack::read_blob_into(file.as_ref(), entry, &mut raw, &mut scratch, &mut dctx)
                {
                    Ok(()) => {
                        let stored = pack::compress(cctx.as_mut(), &raw);
                        self.append(&mut writer, entry.id, entry.kind, &stored, entry.raw_len)?;
                        kept += 1;
                    }
                    Err(BlobError::Corrupt(_) | BlobError::Io(_)) => lost += 1,
                }
            }
            self.seal(&mut writer)?;
        }
        let aside = move_aside(&self.root, path, "packs")?;
        actions.push(if kept + lost == 0 {
            format!(
                "moved the unreadable pack {} aside to {}",
                file_name(path),
                aside.display()
            )
        } else {
            format!(
                "copied the {kept} readable blob(s) of the damaged pack {} into a new pack and moved it aside to {} ({lost} damaged blob(s) lost)",
                file_name(path),
                aside.display()
            )
        });
        Ok(())
    }

    /// Writes a new file in `lost/` naming `blobs`; returns its path.
    fn record_lost(&self, blobs: &BTreeSet<Id>) -> Result<PathBuf> {
        let dir = self.root.join("lost");
        durable::ensure_dir(&dir)?;
        let now = config::rfc3339_now();
        let doc = json!({
            "time": now,
            "blobs": blobs.iter().map(Id::to_hex).collect::<Vec<_>>(),
        });
        let name = format!(
            "{}-{}.json",
            now.replace([':', '-'], ""),
            durable::random_suffix()
        );
        let path = dir.join(name);
        let bytes = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        durable::write_atomic(&self.tmp_dir(), "lost", &path, &bytes)?;
        Ok(path)
    }

    /// Every blob recorded as lost by `relive repair` (unreadable records are skipped).
    pub(crate) fn lost_blobs(&self) -> HashSet<Id> {
        let Ok(entries) = fs::read_dir(self.root.join("lost")) else {
            return HashSet::new();
        };
        let mut lost = HashSet::new();
        for entry in entries.flatten() {
            let Ok(doc) = fs::read(entry.path()) else {
                continue;
            };
            let Ok(doc) = serde_json::from_slice::<Value>(&doc) else {
                continue;
            };
            let blobs = doc.get("blobs").and_then(Value::as_array);
            lost.extend(
                blobs
                    .into_iter()
                    .flatten()
                    .filter_map(|b| Id::from_hex(b.as_str()?)),
            );
        }
        lost
    }
}

/// The store at `path` and what is wrong with its config, if anything: a store without a
/// readable config is still opened (with the default chunk size) so that it can be checked.
fn open_for_repair(path: &Path) -> Result<(Store, Option<Problem>)> {
    let config = path.join("config");
    let problem = match Store::open(path) {
        Ok(store) => return Ok((store, None)),
        Err(Error::ConfigMissing { held, .. }) => Problem::new(
            "missing-config",
            None,
            config,
            format!("the config file is missing, but the store holds {held} (`relive repair` rebuilds it)"),
        ),
        Err(Error::Corrupt {
            what: "config",
            detail,
            ..
        }) => Problem::new(
            "corrupt-config",
            None,
            config,
            format!("{detail} (`relive repair` rebuilds it)"),
        ),
        Err(e) => return Err(e),
    };
    Ok((
        Store::with_chunk_size(
            backend::for_location(&path.to_string_lossy())?,
            DEFAULT_CHUNK_SIZE,
        )?,
        Some(problem),
    ))
}

/// Moves `file` to `damaged/<sub>/` (a new name if one is there already); returns where to.
fn move_aside(root: &Path, file: &Path, sub: &str) -> Result<PathBuf> {
    let dir = root.join("damaged").join(sub);
    durable::ensure_dir_all(&dir)?;
    let name = file_name(file);
    let mut target = dir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = dir.join(format!("{name}.{n}"));
        n += 1;
    }
    durable::rename_durable(file, &target)?;
    Ok(target)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
