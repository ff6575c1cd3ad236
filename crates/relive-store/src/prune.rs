//! [`Store::prune`]: forget snapshots and reclaim the space only they used, safely while
//! programs write to the same store, on any backend, without locks.
//!
//! Two phases, because a writer may have decided that a blob is stored (and not written it
//! again) just before a prune found that no snapshot uses it:
//!
//! 1. The forgotten manifests are deleted. Packs that no remaining manifest uses are named in a
//!    new *intent*, `prune/<time>-<random>.json`; nothing else is deleted yet. Writers read the
//!    intents whenever they open or refresh the store (every forked snapshot does) and treat
//!    the blobs of those packs as not stored: they write them again, into new packs.
//! 2. A later prune, once an intent is older than the grace period (longer than any snapshot
//!    takes to write), lists the manifests
//!    again and deletes the intent's packs that are still unused; a pack that a snapshot
//!    committed meanwhile needs is kept. Then the intent goes.
//!
//! (The grace period, 15 minutes by default, is three times `--snapshot-timeout`'s default:
//! a snapshot still writing after it has been stopped.)
//!
//! A writer that relied on a pack deleted after all (one that never refreshed during the
//! grace period) notices at its commit, which checks that every pack it relied on is still
//! there, and commits nothing; its next snapshot writes the data again.
//!
//! Only whole packs go: a pack that still holds a blob some snapshot needs stays whole (its
//! unused bytes are reported). Packs are up to 64 MiB and a snapshot's new data goes into new
//! packs, so the packs of forgotten snapshots are mostly wholly unused.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::durable;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack;
use crate::parallel;
use crate::snapshot;
use crate::store::Store;

/// What [`Store::prune`] did (or, dry, would do).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Manifests deleted.
    pub forgotten: u64,
    /// Packs deleted, and their bytes.
    pub packs_deleted: u64,
    pub bytes_freed: u64,
    /// Packs unused now, left for a later prune (after the grace period), and their bytes.
    pub packs_pending: u64,
    pub bytes_pending: u64,
    /// Bytes of packs kept because they still hold blobs that snapshots need, unused
    /// themselves.
    pub bytes_kept_unused: u64,
}

/// An intent: packs to delete once no snapshot uses them, after the grace period.
struct Intent {
    name: String,
    written: u64,
    packs: Vec<Id>,
}

impl Store {
    /// Deletes the manifests `forget`, then reclaims packs no remaining snapshot uses: those
    /// named by intents older than `grace` are deleted (if still unused), the others are named
    /// in a new intent. `grace` zero deletes at once (only safe when nothing writes to the
    /// store). `dry_run`: nothing is deleted or written; the report says what would go,
    /// counting every unused pack as freed.
    pub fn prune(&self, forget: &[Id], grace: Duration, dry_run: bool) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        let forget: HashSet<Id> = forget.iter().copied().collect();
        if !dry_run {
            for id in &forget {
                self.backend.delete(&format!("snapshots/{}", id.to_hex()))?;
                report.forgotten += 1;
            }
        } else {
            report.forgotten = forget.len() as u64;
        }
        self.refresh()?;
        let live = self.live_blobs(&forget)?;
        let mut sizes: HashMap<Id, u64> = HashMap::new();
        let mut unused: HashSet<Id> = HashSet::new();
        {
            let index = self.read_index();
            // Per pack (by its place in the index): whether a live blob is in it, and the
            // bytes of its blobs no snapshot needs.
            let mut used = vec![false; index.packs.len()];
            let mut unused_bytes = vec![0u64; index.packs.len()];
            for (blob, loc) in &index.blobs {
                let n = loc.pack as usize;
                if live.contains(blob) {
                    used[n] = true;
                } else {
                    unused_bytes[n] += u64::from(loc.stored_len);
                }
            }
            let place: HashMap<Id, usize> = index
                .packs
                .iter()
                .enumerate()
                .map(|(n, p)| (p.id, n))
                .collect();
            for (id, _, len) in pack::list_packs(self.backend.as_ref())? {
                sizes.insert(id, len);
                // A pack that is not indexed cannot be read: `verify` and `repair` see to it.
                let Some(&n) = place.get(&id) else { continue };
                if used[n] {
                    report.bytes_kept_unused += unused_bytes[n];
                } else {
                    unused.insert(id);
                }
            }
        }
        let now = unix_now();
        let intents = self.intents()?;
        let mut named: HashSet<Id> = HashSet::new();
        for intent in &intents {
            let due = grace.is_zero() || now.saturating_sub(intent.written) >= grace.as_secs();
            if !due {
                named.extend(intent.packs.iter().copied());
                continue;
            }
            let still_unused: Vec<Id> = intent
                .packs
                .iter()
                .filter(|id| unused.contains(id))
                .copied()
                .collect();
            for id in &still_unused {
                report.packs_deleted += 1;
                report.bytes_freed += sizes.get(id).copied().unwrap_or(0);
                if !dry_run {
                    self.backend.delete(&pack::pack_name(id))?;
                }
                unused.remove(id);
            }
            if !dry_run {
                self.backend.delete(&intent.name)?;
            }
        }
        let fresh: Vec<Id> = {
            let mut fresh: Vec<Id> = unused.difference(&named).copied().collect();
            fresh.sort();
            fresh
        };
        let pending: Vec<&Id> = unused.iter().filter(|id| named.contains(id)).collect();
        report.packs_pending = pending.len() as u64;
        report.bytes_pending = pending
            .iter()
            .map(|id| sizes.get(id).copied().unwrap_or(0))
            .sum();
        if dry_run || grace.is_zero() {
            for id in &fresh {
                report.packs_deleted += 1;
                report.bytes_freed += sizes.get(id).copied().unwrap_or(0);
                if !dry_run {
                    self.backend.delete(&pack::pack_name(id))?;
                }
            }
        } else if !fresh.is_empty() {
            let doc = json!({
                "time": crate::config::rfc3339_now(),
                "written": now,
                "packs": fresh.iter().map(Id::to_hex).collect::<Vec<_>>(),
            });
            let name = format!("prune/{now}-{}.json", durable::random_suffix());
            self.backend
                .put_once(&name, &serde_json::to_vec_pretty(&doc).unwrap_or_default())?;
            report.packs_pending += fresh.len() as u64;
            report.bytes_pending += fresh
                .iter()
                .map(|id| sizes.get(id).copied().unwrap_or(0))
                .sum::<u64>();
        }
        Ok(report)
    }

    /// Every blob a snapshot other than `forget` needs: the records its manifest names and
    /// their chunks. A manifest that cannot be read stops the prune: what it needs is unknown.
    fn live_blobs(&self, forget: &HashSet<Id>) -> Result<HashSet<Id>> {
        let mut records: Vec<Id> = Vec::new();
        let mut live = HashSet::new();
        for sid in self
            .snapshot_ids()?
            .into_iter()
            .filter(|s| !forget.contains(s))
        {
            let json = match self.read_snapshot(&sid) {
                Ok(json) => json,
                // Deleted since it was listed (another prune): it needs nothing any more.
                Err(Error::Invalid(_)) => continue,
                Err(e) => {
                    return Err(Error::Invalid(format!(
                        "snapshot {sid} cannot be read, so what it needs is unknown and nothing is reclaimed ({e}); run `relive verify`"
                    )))
                }
            };
            for r in snapshot::record_ids(&json).map_err(Error::Invalid)? {
                if live.insert(r) {
                    records.push(r);
                }
            }
        }
        let decoded = parallel::map_on(
            self.read_threads(),
            &mut records,
            || (),
            |_, id| self.get_record(id),
        );
        for record in decoded {
            live.extend(record?.buffers.into_iter().flat_map(|b| b.chunks));
        }
        Ok(live)
    }

    /// The intents in `prune/` (ones that cannot be read are skipped: they name nothing).
    fn intents(&self) -> Result<Vec<Intent>> {
        let mut intents = Vec::new();
        for (name, _) in self.backend.list("prune/")? {
            let Some(doc) = self.backend.get(&name)? else {
                continue;
            };
            let Ok(doc) = serde_json::from_slice::<Value>(&doc) else {
                continue;
            };
            let written = doc.get("written").and_then(Value::as_u64).unwrap_or(0);
            let packs = doc
                .get("packs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| Id::from_hex(p.as_str()?))
                .collect();
            intents.push(Intent {
                name,
                written,
                packs,
            });
        }
        Ok(intents)
    }

    /// The packs that intents name: writers do not count on their blobs.
    pub(crate) fn doomed_packs(&self) -> Result<HashSet<Id>> {
        Ok(self.intents()?.into_iter().flat_map(|i| i.packs).collect())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
