//! [`Store::copy_to`]: snapshots from one store into another (`relive push` and `pull`), any
//! backend to any backend. Only blobs the destination lacks travel, each checked against its
//! id on the way; manifests are written last, after the packs that hold their data are
//! durable, so a copy cut short leaves the destination as it was plus some unused data.

use std::collections::{BTreeMap, HashSet};

use crate::error::{io_at, Error, Result};
use crate::id::Id;
use crate::pack::{self, Entry, Kind, Stored};
use crate::parallel;
use crate::snapshot;
use crate::store::{PackFile, Store};

/// What [`Store::copy_to`] wrote to the destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Snapshots the destination did not have.
    pub snapshots: u64,
    /// Objects written: blobs, manifests and run documents.
    pub objects: u64,
    /// Bytes written (blobs as stored, compressed where they were).
    pub bytes: u64,
}

/// A pack whose share of needed bytes is at least this is fetched whole (one request) rather
/// than blob by blob.
const WHOLE_PACK_SHARE: f64 = 0.5;

impl Store {
    /// Copies `snapshots` (with every record and chunk they need) and the run documents
    /// `runs` into `dst`. `progress(done, total)` counts the bytes of blobs to copy.
    pub fn copy_to(
        &self,
        dst: &Store,
        snapshots: &[Id],
        runs: &[String],
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<CopyReport> {
        dst.refresh()?;
        let mut report = CopyReport::default();
        let mut manifests = Vec::new();
        let mut needed: Vec<Id> = Vec::new();
        let mut new_records: Vec<Id> = Vec::new();
        let mut seen = HashSet::new();
        for id in snapshots {
            let name = format!("snapshots/{}", id.to_hex());
            let bytes = self.backend.get(&name)?.ok_or_else(|| {
                Error::Invalid(format!(
                    "there is no snapshot {id} in the store at {}",
                    self.root.display()
                ))
            })?;
            if Id::of(&bytes) != *id {
                return Err(Error::Corrupt {
                    what: "snapshot",
                    id: Some(id.to_hex()),
                    path: self.backend.display(&name),
                    detail: "its content does not match its name".into(),
                });
            }
            let json = snapshot::decode(&bytes).map_err(|detail| Error::Corrupt {
                what: "snapshot",
                id: Some(id.to_hex()),
                path: self.backend.display(&name),
                detail,
            })?;
            for record in snapshot::record_ids(&json).map_err(Error::Invalid)? {
                if seen.insert(record) && !dst.contains(&record) {
                    new_records.push(record);
                }
            }
            manifests.push((name, bytes));
        }
        // A record the destination has comes with its chunks (they are written first); a new
        // one's chunks may be there already, from other snapshots. Records are read several
        // at a time: on a remote store each is a request.
        let read = parallel::map_on(
            self.read_threads(),
            &mut new_records,
            || (),
            |_, id| self.get_record(id),
        );
        for (record, decoded) in new_records.iter().zip(read) {
            needed.push(*record);
            for chunk in decoded?.buffers.iter().flat_map(|b| &b.chunks) {
                if seen.insert(*chunk) && !dst.contains(chunk) {
                    needed.push(*chunk);
                }
            }
        }
        self.copy_blobs(dst, &needed, &mut report, progress)?;
        dst.flush()?;
        for (run_id, doc) in self.runs()? {
            if !runs.contains(&run_id) {
                continue;
            }
            let name = format!("runs/{run_id}.json");
            if dst.backend.get(&name)?.as_deref() != Some(doc.as_slice()) {
                dst.put_run(&run_id, &doc)?;
                report.objects += 1;
                report.bytes += doc.len() as u64;
            }
        }
        // Last: a manifest becomes visible only once everything it needs is durable.
        for (name, bytes) in manifests {
            if !dst.backend.exists(&name)? {
                dst.backend.put_once(&name, &bytes)?;
                report.snapshots += 1;
                report.objects += 1;
                report.bytes += bytes.len() as u64;
            }
        }
        Ok(report)
    }

    /// Copies blobs `ids` into `dst`'s packs as they are stored (no recompression), reading
    /// each source pack once, several packs at a time.
    fn copy_blobs(
        &self,
        dst: &Store,
        ids: &[Id],
        report: &mut CopyReport,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<()> {
        let mut by_pack: BTreeMap<Id, (std::sync::Arc<PackFile>, Vec<Entry>)> = BTreeMap::new();
        for id in ids {
            let (pack, entry) = self.locate(id)?;
            by_pack
                .entry(pack.id)
                .or_insert_with(|| (pack, Vec::new()))
                .1
                .push(entry);
        }
        let total: u64 = by_pack
            .values()
            .flat_map(|(_, entries)| entries)
            .map(|e| u64::from(e.stored_len))
            .sum();
        progress(0, total);
        let mut done = 0;
        let mut groups: Vec<(std::sync::Arc<PackFile>, Vec<Entry>)> =
            by_pack.into_values().collect();
        // A few packs at a time: each batch is read in parallel, then appended in order.
        // At most 8: a remote pack may be fetched whole (up to 64 MiB each in memory).
        let threads = self.read_threads().min(8);
        for batch in groups.chunks_mut(threads) {
            let read = parallel::map_on(
                threads,
                batch,
                || (),
                |_, (pack, entries)| self.read_stored(pack, entries),
            );
            let mut writer = dst.writer();
            for blobs in read {
                for (entry, stored) in blobs? {
                    let stored = match entry.codec {
                        pack::Codec::Raw => Stored::Raw(&stored),
                        pack::Codec::Zstd => Stored::Zstd(stored.clone()),
                    };
                    report.bytes +=
                        dst.append(&mut writer, entry.id, entry.kind, &stored, entry.raw_len)?;
                    report.objects += 1;
                    done += u64::from(entry.stored_len);
                }
                progress(done, total);
            }
        }
        Ok(())
    }

    /// The stored bytes of `entries` of `pack`, each checked against its id.
    fn read_stored(&self, pack: &PackFile, entries: &[Entry]) -> Result<Vec<(Entry, Vec<u8>)>> {
        let needed: u64 = entries.iter().map(|e| u64::from(e.stored_len)).sum();
        let object = self
            .backend
            .open(&pack.name, None)?
            .ok_or_else(|| Error::MissingBlob {
                id: entries[0].id,
                path: self.root.clone(),
            })?;
        let size = object.size()?;
        let whole = if self.backend.local_root().is_none()
            && needed as f64 >= size as f64 * WHOLE_PACK_SHARE
        {
            // One GET of the whole pack, its size known, so that its time limit fits it.
            let mut bytes = vec![0u8; size as usize];
            let path = self.backend.display(&pack.name);
            object.read_at(0, &mut bytes).map_err(io_at(&path))?;
            Some(bytes)
        } else {
            None
        };
        let (mut scratch, mut dctx, mut raw) = (Vec::new(), None, Vec::new());
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let stored = match &whole {
                Some(bytes) => bytes
                    .get(
                        entry.offset as usize
                            ..(entry.offset + u64::from(entry.stored_len)) as usize,
                    )
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        self.damaged(pack, entry, "the pack ends before the blob does".into())
                    })?,
                None => {
                    let mut bytes = vec![0u8; entry.stored_len as usize];
                    object
                        .read_at(entry.offset, &mut bytes)
                        .map_err(|e| self.damaged(pack, entry, format!("cannot read it: {e}")))?;
                    bytes
                }
            };
            // Checked before it travels: a damaged blob is not copied.
            raw.resize(entry.raw_len as usize, 0);
            let check = pack::InMemory(stored);
            let local = Entry {
                offset: 0,
                ..*entry
            };
            pack::read_blob_into(&check, &local, &mut raw, &mut scratch, &mut dctx).map_err(
                |e| match e {
                    pack::BlobError::Corrupt(detail) => self.damaged(pack, entry, detail),
                    pack::BlobError::Io(e) => {
                        self.damaged(pack, entry, format!("cannot read it: {e}"))
                    }
                },
            )?;
            out.push((*entry, check.0));
        }
        Ok(out)
    }

    fn damaged(&self, pack: &PackFile, entry: &Entry, detail: String) -> Error {
        Error::Corrupt {
            what: if entry.kind == Kind::Record {
                "record"
            } else {
                "blob"
            },
            id: Some(entry.id.to_hex()),
            path: pack.path.clone(),
            detail,
        }
    }
}
