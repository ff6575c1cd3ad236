//! [`Store`]: the repository on disk, its in-memory index, and the pack being written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use zstd::bulk::{Compressor, Decompressor};

use crate::backend::{self, Backend, Object};
use crate::config;
use crate::durable;
use crate::error::{io_at, Error, Result};
use crate::fingerprint::{Fingerprints, Proven};
use crate::id::Id;
use crate::idle;
use crate::pack::{self, BlobError, BlobInfo, Codec, Entry, Kind, OpenPack, Stored};
use crate::parallel;
use crate::record::{self, BufferRef, Record};
use crate::snapshot;
use crate::upload::Uploads;
use crate::watch;

/// The repository format this version writes and the newest it reads.
pub const FORMAT: u64 = 1;
pub(crate) const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
/// New chunks are compressed and appended in batches of about this many bytes, which bounds the
/// memory a put needs beyond its input.
const BATCH_BYTES: usize = 64 << 20;

/// What [`Store::known_chunks`] found: each chunk's fingerprint (with the cache's seed), and
/// the id of those already stored.
pub(crate) struct Known {
    pub(crate) seed: u64,
    pub(crate) fingerprints: Vec<u128>,
    pub(crate) ids: Vec<Option<Id>>,
}

/// One buffer of a record to store (`Store::put_record_from`): its bytes, or a buffer of a
/// record already stored, whose chunks the new record refers to as they are.
pub enum BufferSource<'a> {
    Bytes(&'a [u8]),
    Stored(BufferRef),
}

/// What [`Store::put_record`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    /// The record's id.
    pub id: Id,
    /// Bytes newly appended to packs (as stored, after compression), the record included. Zero
    /// when the record was already stored.
    pub new_bytes: u64,
    /// The payload's length plus the buffers' lengths.
    pub raw_bytes: u64,
}

/// A relive repository: a directory of packs, snapshot manifests and run documents.
///
/// `Send + Sync`: reads run concurrently; writes go through one pack at a time.
pub struct Store {
    /// Where the store is, for messages: its directory, or its `s3://` URL.
    pub(crate) root: PathBuf,
    pub(crate) backend: Arc<dyn Backend>,
    chunk_size: usize,
    pub(crate) index: RwLock<Index>,
    /// Whether the packs have been listed and their indexes loaded once. Opening a store does
    /// not load them: `relive log` of a long run reads manifests only, and 10,000 pack indexes
    /// took it 0.2 s. The first use of the index loads them (`Store::listed`).
    listed: Mutex<bool>,
    writer: Mutex<Writer>,
    /// Loaded on the first put: read-only users never touch the cache.
    fingerprints: Mutex<Option<Fingerprints>>,
    /// Chunks this process (or its snapshot children) hashed: kept through `refresh`.
    proven: Mutex<Proven>,
    /// Whether new chunks are compressed on idle cores only (see `Store::set_compress_when_idle`).
    compress_when_idle: AtomicBool,
    /// The raw bytes of the blobs this handle has written (see `Store::raw_bytes_written`).
    raw_written: AtomicU64,
    /// The bytes a forked child kept by the ids the program's watch lent it (`watch::lent`).
    unread: AtomicU64,
    /// What the snapshot being written relies on, checked again at its commit.
    pending: Mutex<Pending>,
    /// Packs going up to a remote store.
    uploads: Uploads,
    /// Which store handle this is, to the buffers watched for copies (`watch.rs`), whose
    /// chunk ids are this store's.
    pub(crate) token: u64,
}

static TOKENS: AtomicU64 = AtomicU64::new(0);

/// The snapshot being written: which packs were seen on disk since the last commit (each is
/// checked once per snapshot) and the chunks of each record put (a record's pack alone does not
/// say where its chunks are).
#[derive(Default)]
struct Pending {
    packs_seen: HashSet<Id>,
    record_chunks: HashMap<Id, Vec<Id>>,
}

/// Every readable blob, by id.
#[derive(Default)]
pub(crate) struct Index {
    pub(crate) blobs: HashMap<Id, Location>,
    pub(crate) packs: Vec<Arc<PackFile>>,
    loaded: HashSet<Id>,
    /// Packs that failed their checks when loaded, with what is wrong.
    pub(crate) skipped: BTreeMap<PathBuf, String>,
    /// Packs a prune means to delete (see `prune.rs`): their blobs can be read, but a writer
    /// does not count on them and writes them again.
    doomed: HashSet<Id>,
}

pub(crate) struct PackFile {
    pub(crate) id: Id,
    /// Its object's name in the store.
    pub(crate) name: String,
    /// Where it is, for messages.
    pub(crate) path: PathBuf,
}

/// Where a blob is: the pack (an index into [`Index::packs`]) and its entry there.
#[derive(Clone, Copy)]
pub(crate) struct Location {
    pub(crate) pack: u32,
    kind: Kind,
    codec: Codec,
    offset: u64,
    pub(crate) stored_len: u32,
    raw_len: u32,
}

impl Location {
    fn entry(&self, id: Id) -> Entry {
        let Location {
            kind,
            codec,
            offset,
            stored_len,
            raw_len,
            ..
        } = *self;
        Entry {
            id,
            kind,
            codec,
            offset,
            stored_len,
            raw_len,
        }
    }
}

impl Index {
    fn add_pack(&mut self, id: Id, name: String, path: PathBuf, entries: &[Entry]) {
        if !self.loaded.insert(id) {
            return;
        }
        let Ok(pack) = u32::try_from(self.packs.len()) else {
            return;
        };
        self.packs.push(Arc::new(PackFile { id, name, path }));
        for e in entries {
            let Entry {
                kind,
                codec,
                offset,
                stored_len,
                raw_len,
                ..
            } = *e;
            let location = Location {
                pack,
                kind,
                codec,
                offset,
                stored_len,
                raw_len,
            };
            // A blob written again because its pack is doomed is found in its new pack.
            let doomed = self
                .blobs
                .get(&e.id)
                .is_some_and(|old| self.in_doomed_pack(old));
            if doomed || !self.blobs.contains_key(&e.id) {
                self.blobs.insert(e.id, location);
            }
        }
    }

    /// Forgets a pack that is gone: its blobs are no longer stored (unless it comes back).
    fn forget_pack(&mut self, pack: u32) {
        self.blobs.retain(|_, loc| loc.pack != pack);
        if let Some(file) = self.packs.get(pack as usize) {
            self.loaded.remove(&file.id);
        }
    }

    /// Whether a blob is stored where a writer may count on it (not in a doomed pack).
    pub(crate) fn stored(&self, id: &Id) -> bool {
        self.blobs
            .get(id)
            .is_some_and(|loc| !self.in_doomed_pack(loc))
    }

    fn in_doomed_pack(&self, loc: &Location) -> bool {
        !self.doomed.is_empty()
            && self
                .packs
                .get(loc.pack as usize)
                .is_some_and(|p| self.doomed.contains(&p.id))
    }

    pub(crate) fn get(&self, id: &Id) -> Option<(Arc<PackFile>, Entry)> {
        let loc = self.blobs.get(id)?;
        let pack = self.packs.get(loc.pack as usize)?;
        Some((Arc::clone(pack), loc.entry(*id)))
    }
}

pub(crate) struct Writer {
    open: Option<OpenPack>,
    /// Whether this process has cleaned `tmp/` since it started writing.
    cleaned_tmp: bool,
}

/// Per-thread state for reading blobs.
#[derive(Default)]
struct Reader {
    file: Option<(Id, Box<dyn Object>)>,
    scratch: Vec<u8>,
    dctx: Option<Decompressor<'static>>,
}

impl Store {
    /// Opens the store at `path`. `Error::NotFound` if there is none, `Error::FormatTooNew` if a
    /// newer relive wrote it. Its packs are loaded when a blob is first looked up; packs that
    /// fail their checks are skipped ([`Store::verify`] reports them). Nothing is written until
    /// something is stored.
    /// `path` may be an `s3://bucket/prefix` URL (see [`crate::backend`]).
    pub fn open(path: &Path) -> Result<Store> {
        Store::open_on(backend::for_location(&path.to_string_lossy())?)
    }

    /// Opens the store that `backend` holds.
    pub fn open_on(backend: Arc<dyn Backend>) -> Result<Store> {
        let config = match config::read(backend.as_ref(), FORMAT) {
            Err(Error::NotFound { path }) => {
                return Err(match config::held_data(backend.as_ref()) {
                    Some(held) => Error::ConfigMissing { path, held },
                    None => Error::NotFound { path },
                })
            }
            other => other?,
        };
        Store::with_chunk_size(backend, config.chunk_size)
    }

    /// The store, whatever its config says (for `verify` and `repair` of a store whose config
    /// is damaged or missing).
    pub(crate) fn with_chunk_size(backend: Arc<dyn Backend>, chunk_size: usize) -> Result<Store> {
        let store = Store {
            root: PathBuf::from(backend.location()),
            backend,
            chunk_size,
            index: RwLock::new(Index::default()),
            listed: Mutex::new(false),
            writer: Mutex::new(Writer {
                open: None,
                cleaned_tmp: false,
            }),
            fingerprints: Mutex::new(None),
            proven: Mutex::new(Proven::default()),
            compress_when_idle: AtomicBool::new(compress_when_idle_by_default()),
            raw_written: AtomicU64::new(0),
            unread: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            uploads: Uploads::new(),
            token: TOKENS.fetch_add(1, Ordering::Relaxed) + 1,
        };
        Ok(store)
    }

    /// Opens the store at `path`, creating it (and missing parent directories) if there is none.
    pub fn create(path: &Path) -> Result<Store> {
        Store::create_with_chunk_size(path, DEFAULT_CHUNK_SIZE)
    }

    /// [`Store::create`], with the chunk size a new store gets (an existing store keeps its own).
    pub fn create_with_chunk_size(path: &Path, chunk_size: usize) -> Result<Store> {
        Store::create_on(backend::for_location(&path.to_string_lossy())?, chunk_size)
    }

    /// [`Store::create_with_chunk_size`] on `backend`.
    pub fn create_on(backend: Arc<dyn Backend>, chunk_size: usize) -> Result<Store> {
        match Store::open_on(Arc::clone(&backend)) {
            Ok(store) => {
                store.remove_stale_tmp();
                return Ok(store);
            }
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        if !(1..=1 << 30).contains(&chunk_size) {
            return Err(Error::Invalid(format!(
                "chunk size {chunk_size} is not in 1..=2^30"
            )));
        }
        if let Some(path) = backend.local_root() {
            durable::ensure_dir_all(path)?;
            for dir in ["tmp", "packs", "snapshots", "runs"] {
                durable::ensure_dir(&path.join(dir))?;
            }
            // A store inside a git work tree must not be committed: it holds everything the
            // program held. Written before the config, so that every store has it.
            backend.replace(".gitignore", b"*\n")?;
        }
        config::write_new(backend.as_ref(), FORMAT, chunk_size)?;
        Store::open_on(backend)
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The size buffers are cut into.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Loads the packs that appeared since the store was opened (written by other processes),
    /// and forgets the fingerprints read so far (those processes may have added some).
    pub fn refresh(&self) -> Result<()> {
        *self
            .fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        self.load_packs()?;
        *self.listed_flag() = true;
        Ok(())
    }

    /// Loads the packs not in the index yet. Through the index as it is, never
    /// [`Store::read_index`] (which calls this the first time), and without the fingerprints'
    /// lock (`chunk_ids` holds it when it first reads the index).
    fn load_packs(&self) -> Result<()> {
        // Intents that cannot be read doom nothing: a writer then counts on those packs, and
        // the prune's grace period and the commit's check of its packs cover it.
        let doomed = self.doomed_packs().unwrap_or_default();
        self.index_for_writing().doomed = doomed;
        let on_disk = pack::list_packs(self.backend.as_ref())?;
        let mut new: Vec<(Id, String, u64)> = {
            let index = self.index_for_reading();
            on_disk
                .into_iter()
                .filter(|(id, name, _)| {
                    !index.loaded.contains(id)
                        && !index.skipped.contains_key(&self.backend.display(name))
                })
                .collect()
        };
        if new.is_empty() {
            return Ok(());
        }
        // In parallel: on a remote store each index is two requests.
        let loaded: Vec<(Id, String, Result<Vec<Entry>, String>)> = parallel::map_on(
            self.read_threads(),
            &mut new,
            || (),
            |_, (id, name, len)| {
                let (id, name) = (*id, std::mem::take(name));
                let entries = self
                    .backend
                    .open(&name, Some(*len))
                    .map_err(|e| format!("cannot open the pack: {e}"))
                    .and_then(|file| file.ok_or_else(|| "the pack is gone".to_string()))
                    .and_then(|file| pack::read_index(file.as_ref()))
                    .and_then(|index| {
                        if index.hash == id {
                            Ok(index.entries)
                        } else {
                            Err(format!(
                                "its index hashes to {}, not to its name",
                                index.hash
                            ))
                        }
                    });
                (id, name, entries)
            },
        );
        let mut index = self.index_for_writing();
        for (id, name, entries) in loaded {
            let path = self.backend.display(&name);
            match entries {
                Ok(entries) => index.add_pack(id, name, path, &entries),
                // A pack deleted between the listing and the read is simply not there.
                Err(detail) if detail == "the pack is gone" => {}
                Err(detail) => {
                    index.skipped.insert(path, detail);
                }
            }
        }
        Ok(())
    }

    /// Loads the packs once, on the first use of the index. A failure here is not reported:
    /// the index then holds what it held, and a blob not found in it is looked up again
    /// through [`Store::refresh`], which reports it (as `locate` and `commit` do).
    fn listed(&self) {
        // Held while loading: other threads wait for the packs rather than find none. Set
        // whatever the outcome: a failed load is not retried at every lookup.
        let mut listed = self.listed_flag();
        if !*listed {
            let _ = self.load_packs();
            *listed = true;
        }
    }

    fn listed_flag(&self) -> MutexGuard<'_, bool> {
        self.listed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a blob is stored (or being written by this store).
    pub fn contains(&self, id: &Id) -> bool {
        // Two statements: the index guard must be gone before the writer is locked (a seal holds
        // the writer and waits for the index).
        let sealed = self.read_index().stored(id);
        sealed || self.open_pack_contains(&self.writer(), id)
    }

    /// Where and how a blob is stored, if it is in a sealed pack.
    pub fn blob_info(&self, id: &Id) -> Option<BlobInfo> {
        let (pack, e) = self.read_index().get(id)?;
        Some(BlobInfo {
            kind: e.kind,
            codec: e.codec,
            stored_len: e.stored_len,
            raw_len: e.raw_len,
            pack: pack.path.clone(),
        })
    }

    /// Stores a record: `payload` plus `buffers`, each cut into chunks. Chunks and records that
    /// are already stored are not written again.
    pub fn put_record(&self, payload: &[u8], buffers: &[&[u8]]) -> Result<PutOutcome> {
        let sources: Vec<BufferSource<'_>> =
            buffers.iter().map(|b| BufferSource::Bytes(b)).collect();
        self.put_record_from(payload, &sources)
    }

    /// Stores a record some of whose buffers are buffers of records already stored
    /// (`BufferSource::Stored`): their chunks are referenced by id, neither read nor hashed.
    /// Fails, as `put_pieces` does, where one of those chunks is no longer stored.
    pub fn put_record_from(
        &self,
        payload: &[u8],
        buffers: &[BufferSource<'_>],
    ) -> Result<PutOutcome> {
        let mut lens = Vec::with_capacity(buffers.len());
        let mut ids: Vec<Option<Id>> = Vec::new();
        let mut pieces: Vec<Option<&[u8]>> = Vec::new();
        let mut to_hash: Vec<(usize, &[u8])> = Vec::new();
        for buffer in buffers {
            match buffer {
                BufferSource::Bytes(bytes) => {
                    lens.push(bytes.len() as u64);
                    // In a forked child: the chunks the program's watch knew unchanged since
                    // its last copy keep their ids, unread.
                    let addr = bytes.as_ptr() as usize;
                    let lent = watch::lent(&self.root, addr, bytes.len(), self.chunk_size);
                    for (k, chunk) in bytes.chunks(self.chunk_size).enumerate() {
                        match lent.as_ref().and_then(|ids| ids.get(k).copied().flatten()) {
                            Some(id) => {
                                self.unread.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                                ids.push(Some(id));
                            }
                            None => {
                                to_hash.push((ids.len(), chunk));
                                ids.push(None);
                            }
                        }
                        pieces.push(Some(chunk));
                    }
                }
                BufferSource::Stored(stored) => {
                    lens.push(stored.len);
                    ids.extend(stored.chunks.iter().copied().map(Some));
                    pieces.extend(stored.chunks.iter().map(|_| None));
                }
            }
        }
        let hashed = self.chunk_ids(&to_hash.iter().map(|&(_, chunk)| chunk).collect::<Vec<_>>());
        for (&(i, _), id) in to_hash.iter().zip(hashed) {
            ids[i] = Some(id);
        }
        let ids: Vec<Id> = ids
            .into_iter()
            .map(|id| id.expect("every chunk has an id"))
            .collect();
        self.put_pieces(payload, &lens, &ids, &pieces)
    }

    /// Writes a record whose chunk ids are known: the chunks not stored yet (their bytes in
    /// `pieces`; `None` only for chunks known to be stored), then the record itself.
    pub(crate) fn put_pieces(
        &self,
        payload: &[u8],
        lens: &[u64],
        ids: &[Id],
        pieces: &[Option<&[u8]>],
    ) -> Result<PutOutcome> {
        let chunk_size = self.chunk_size;
        let encoded = record::encode(payload, lens, ids, chunk_size);
        let record_len = u32::try_from(encoded.len()).map_err(|_| {
            Error::Invalid(format!(
                "a record of {} bytes is too large (the limit is 4 GiB; pass large data as buffers)",
                encoded.len()
            ))
        })?;
        let id = Id::of(&encoded);
        let raw_bytes = payload.len() as u64 + lens.iter().sum::<u64>();
        // Packs deleted since they were indexed (by hand, or moved aside by `relive repair`)
        // hold nothing any more: what this record needs from them is written again.
        self.forget_vanished_packs(ids.iter().chain([&id]), false);
        self.pending().record_chunks.insert(id, ids.to_vec());

        let mut writer = self.writer();
        // What `contains` asks, under the writer's lock this holds (the index after it, as a
        // seal takes them).
        let (record_stored, fresh) = {
            let index = self.read_index();
            let held = |id: &Id| index.stored(id) || self.open_pack_contains(&writer, id);
            let mut seen = HashSet::new();
            let fresh: Vec<usize> = (0..ids.len())
                .filter(|&i| !held(&ids[i]) && seen.insert(ids[i]))
                .collect();
            (held(&id), fresh)
        };
        // A record is written after its chunks, so a stored one usually has them all; not when
        // a pack of its chunks was deleted.
        if record_stored && fresh.is_empty() {
            return Ok(PutOutcome {
                id,
                new_bytes: 0,
                raw_bytes,
            });
        }
        let fresh: Vec<(usize, &[u8])> = fresh
            .into_iter()
            .map(|i| {
                pieces[i].map(|piece| (i, piece)).ok_or_else(|| {
                    Error::Invalid(format!(
                        "chunk {} is no longer in the store (its pack was removed while the \
                         snapshot was being written)",
                        ids[i].to_hex()
                    ))
                })
            })
            .collect::<Result<_>>()?;
        let mut new_bytes = 0;
        let batch = (BATCH_BYTES / chunk_size).max(parallel::workers());
        for group in fresh.chunks(batch) {
            let mut put = |k: usize, stored: Stored| {
                let (i, piece) = group[k];
                let raw_len = piece.len() as u32; // chunk_size <= 2^30
                new_bytes += self.append(&mut writer, ids[i], Kind::Chunk, &stored, raw_len)?;
                Ok::<(), Error>(())
            };
            let mut pieces: Vec<&[u8]> = group.iter().map(|&(_, piece)| piece).collect();
            if self.compress_when_idle.load(Ordering::Relaxed) {
                idle::compress_where_idle(&pieces, pack::CHUNK_LEVEL, put)?;
            } else {
                let stored = parallel::map_with(
                    &mut pieces,
                    || Compressor::new(pack::CHUNK_LEVEL).ok(),
                    |cctx, piece| pack::compress(cctx.as_mut(), piece),
                );
                for (k, stored) in stored.into_iter().enumerate() {
                    put(k, stored)?;
                }
            }
        }
        if !record_stored {
            let mut cctx = Compressor::new(pack::RECORD_LEVEL).ok();
            let stored = pack::compress(cctx.as_mut(), &encoded);
            new_bytes += self.append(&mut writer, id, Kind::Record, &stored, record_len)?;
        }
        Ok(PutOutcome {
            id,
            new_bytes,
            raw_bytes,
        })
    }

    /// The BLAKE3 id of each chunk. A chunk whose fingerprint the cache knows, with the id
    /// stored in a sealed pack, costs only its fingerprint and a spot check (see
    /// [`Store::hit_matches`]); the others are hashed, in parallel either way.
    fn chunk_ids(&self, pieces: &[&[u8]]) -> Vec<Id> {
        let Some(known) = self.known_chunks(pieces) else {
            // A remote store: checking a cache hit would cost a request, more than hashing.
            return parallel::map_with(&mut pieces.to_vec(), || (), |_, p| Id::of(p));
        };
        let mut ids = known.ids;
        let mut missing: Vec<usize> = (0..pieces.len()).filter(|&i| ids[i].is_none()).collect();
        let hashed = parallel::map_with(&mut missing, || (), |_, &mut i| (i, Id::of(pieces[i])));
        self.prove(
            known.seed,
            hashed.iter().map(|&(i, id)| (known.fingerprints[i], id)),
        );
        for (i, id) in hashed {
            ids[i] = Some(id);
        }
        let ids: Vec<Id> = ids
            .into_iter()
            .map(|id| id.expect("every chunk has an id"))
            .collect();
        self.remember(known.seed, &known.fingerprints, &ids);
        ids
    }

    /// Each chunk's fingerprint, and the id of those the cache knows and the store holds;
    /// None for a remote store, which keeps no cache.
    pub(crate) fn known_chunks(&self, pieces: &[&[u8]]) -> Option<Known> {
        let cache_path = self.fingerprints_path()?;
        let mut cache = self
            .fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let fps = cache.get_or_insert_with(|| Fingerprints::load(&cache_path));
        let seed = fps.seed();
        let fingerprints = parallel::map_with(
            &mut pieces.to_vec(),
            || (),
            |_, p| Fingerprints::of(seed, p),
        );
        let index = self.read_index();
        let mut check = HitCheck::new(self.backend.as_ref());
        let proven = self.proven.lock().unwrap_or_else(PoisonError::into_inner);
        let hits: Vec<Option<Id>> = fingerprints
            .iter()
            .enumerate()
            .map(|(i, &fp)| {
                if let Some(id) = proven.get(seed, fp).filter(|id| index.get(id).is_some()) {
                    return Some(id);
                }
                let id = fps.get(fp)?;
                let (pack, entry) = index.get(&id)?;
                Some(id).filter(|_| check.matches(&pack, &entry, fp, pieces[i]))
            })
            .collect();
        let ids = if check.failed {
            // An entry named a blob with other bytes: the cache is wrong (damaged, or made
            // by hand), so none of it is trusted and every chunk is hashed.
            fps.forget_known();
            vec![None; pieces.len()]
        } else {
            hits
        };
        Some(Known {
            seed,
            fingerprints,
            ids,
        })
    }

    /// Adds what was learned (fingerprint `fps[i]` is chunk `ids[i]`) to the cache, unless
    /// the cache was read again meanwhile with another seed (`refresh`).
    pub(crate) fn remember(&self, seed: u64, fps: &[u128], ids: &[Id]) {
        let Some(cache_path) = self.fingerprints_path() else {
            return;
        };
        let mut cache = self
            .fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let cache = cache.get_or_insert_with(|| Fingerprints::load(&cache_path));
        if cache.seed() != seed {
            return;
        }
        for (&fp, &id) in fps.iter().zip(ids) {
            cache.insert(fp, id);
        }
    }

    /// Chunks hashed here: fingerprint `fp` (under `seed`) is chunk `id` ([`Proven`]).
    pub(crate) fn prove(&self, seed: u64, hashed: impl Iterator<Item = (u128, Id)>) {
        let mut proven = self.proven.lock().unwrap_or_else(PoisonError::into_inner);
        for (fp, id) in hashed {
            proven.add(seed, fp, id);
        }
    }

    /// Whether the chunks this handle writes from now on are compressed (where that pays) by
    /// idle-priority threads, and stored raw where none got to them in time (the default: a
    /// snapshot never takes a busy program's cores to compress, see `idle.rs`), or each by
    /// the store's own threads, whatever else runs (false: the same bytes stored, whatever the
    /// machine's load, as tests want).
    pub fn set_compress_when_idle(&self, when_idle: bool) {
        self.compress_when_idle.store(when_idle, Ordering::Relaxed);
    }

    /// The bytes of the blobs this handle has written so far, before compression: what a
    /// snapshot found new, whether or not its chunks were compressed (which depends on the
    /// machine's load, `idle.rs`).
    pub fn raw_bytes_written(&self) -> u64 {
        self.raw_written.load(Ordering::Relaxed)
    }

    /// Before the program forks a snapshot's child, which opens a handle of its own on this
    /// store: the ids of the chunks of the buffers watched for this handle's copies that no
    /// page was written of since (`watch::lend_to_child`). Returns the bytes lent.
    pub fn lend_to_child(&self) -> u64 {
        watch::lend_to_child(self.token, &self.root)
    }

    /// The bytes of buffers this handle kept by the ids the program's watch lent to this
    /// forked child, without reading them ([`crate::watch::lend_to_child`]).
    pub fn unread_bytes(&self) -> u64 {
        self.unread.load(Ordering::Relaxed)
    }

    /// What this process proved ([`Proven`]), for the process it was forked from.
    pub fn proven_chunks(&self) -> Vec<u8> {
        self.proven
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .encode()
    }

    /// Takes in what a forked snapshot child proved (its [`Store::proven_chunks`]); false
    /// when `bytes` are not that.
    pub fn add_proven_chunks(&self, bytes: &[u8]) -> bool {
        self.proven
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add_encoded(bytes)
    }

    /// The local cache of chunk fingerprints; none for a remote store.
    pub(crate) fn fingerprints_path(&self) -> Option<PathBuf> {
        Some(
            self.backend
                .local_root()?
                .join("cache")
                .join("fingerprints"),
        )
    }

    /// Reads and decodes a record.
    pub fn get_record(&self, id: &Id) -> Result<Record> {
        let (pack, entry) = self.locate(id)?;
        let mut bytes = vec![0u8; entry.raw_len as usize];
        self.read_blob(&mut Reader::default(), &pack, &entry, &mut bytes)?;
        record::decode(&bytes).map_err(|detail| Error::Corrupt {
            what: "record",
            id: Some(id.to_hex()),
            path: pack.path.clone(),
            detail,
        })
    }

    /// Fills `out` (exactly `buf.len` bytes) with a buffer's content, decompressing each chunk
    /// straight into its place, on several threads, and verifying every chunk. On error `out`
    /// holds unverified bytes and must be discarded.
    pub fn read_buffer_into(&self, buf: &BufferRef, out: &mut [u8]) -> Result<()> {
        if out.len() as u64 != buf.len {
            return Err(Error::Invalid(format!(
                "the output has {} bytes, the buffer {}",
                out.len(),
                buf.len
            )));
        }
        let located = buf
            .chunks
            .iter()
            .map(|id| self.locate(id))
            .collect::<Result<Vec<_>>>()?;
        let total: u64 = located.iter().map(|(_, e)| u64::from(e.raw_len)).sum();
        if total != buf.len {
            return Err(Error::Corrupt {
                what: "buffer",
                id: buf.chunks.first().map(Id::to_hex),
                path: self.root.clone(),
                detail: format!("its chunks hold {total} bytes, its record says {}", buf.len),
            });
        }
        let mut jobs = Vec::with_capacity(located.len());
        let mut rest = out;
        for (pack, entry) in &located {
            let (slice, tail) = std::mem::take(&mut rest).split_at_mut(entry.raw_len as usize);
            jobs.push((pack, entry, slice));
            rest = tail;
        }
        parallel::map_on(
            self.read_threads(),
            &mut jobs,
            Reader::default,
            |reader, (pack, entry, slice)| self.read_blob(reader, pack, entry, slice),
        )
        .into_iter()
        .collect()
    }

    /// Seals the pack being written, durably.
    pub fn flush(&self) -> Result<()> {
        let mut writer = self.writer();
        self.seal(&mut writer)?;
        self.finish_uploads()
    }

    /// Waits for the packs going up to a remote store; one that failed is forgotten (its
    /// blobs are not stored) and its error returned.
    fn finish_uploads(&self) -> Result<()> {
        self.uploads
            .finish()
            .map_err(|failed| self.upload_failed(failed))
    }

    fn upload_failed(&self, (id, error): (Id, Error)) -> Error {
        let mut index = self.write_index();
        if let Some(n) = index.packs.iter().position(|p| p.id == id) {
            index.forget_pack(n as u32);
        }
        error
    }

    /// Makes a snapshot: flushes, checks that every id in the manifest's `"records"` is a stored
    /// record, then writes the manifest atomically. Returns the snapshot's id.
    pub fn commit(&self, manifest_json: &[u8]) -> Result<Id> {
        self.flush()?;
        let records = snapshot::record_ids(manifest_json).map_err(Error::Invalid)?;
        let mut refreshed = false;
        for id in &records {
            let mut found = self.read_index().get(id);
            if found.is_none() && !refreshed {
                self.refresh()?;
                refreshed = true;
                found = self.read_index().get(id);
            }
            match found {
                Some((_, e)) if e.kind == Kind::Record => {}
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "the manifest names {id} as a record, but it is a chunk"
                    )))
                }
                None => {
                    return Err(Error::Invalid(format!(
                        "the manifest names record {id}, which is not in the store at {}",
                        self.root.display()
                    )))
                }
            }
        }
        // Packs can be deleted while a snapshot is written (by hand, or moved aside by `relive
        // repair`): a manifest needing their blobs would not load. So, at the last moment, every
        // pack holding this snapshot's records and their chunks must still be there.
        let pending = std::mem::take(&mut *self.pending());
        let needed = records.iter().chain(
            records
                .iter()
                .filter_map(|r| pending.record_chunks.get(r))
                .flatten(),
        );
        let vanished = self.forget_vanished_packs(needed, true);
        if vanished > 0 {
            return Err(Error::PacksVanished {
                path: self.root.clone(),
                count: vanished,
            });
        }
        let bytes = snapshot::encode(manifest_json).map_err(io_at(&self.root))?;
        let id = Id::of(&bytes);
        self.backend
            .put_once(&format!("snapshots/{}", id.to_hex()), &bytes)?;
        // The next snapshot (often another forked process) starts from these fingerprints. A
        // cache: failing to write it costs the next snapshot some hashing, nothing more.
        let Some(path) = self.fingerprints_path() else {
            return Ok(id);
        };
        if let Some(fps) = self
            .fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            let _ = fps.save(&self.tmp_dir(), &path);
        }
        Ok(id)
    }

    /// The ids of all snapshots, in id order (their manifests say when they were taken).
    pub fn snapshot_ids(&self) -> Result<Vec<Id>> {
        let mut ids: Vec<Id> = self
            .backend
            .list("snapshots/")?
            .iter()
            .filter_map(|(name, _)| name.strip_prefix("snapshots/"))
            .filter(|name| Id::is_canonical(name))
            .filter_map(Id::from_hex)
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// A snapshot's manifest JSON, verified against the snapshot's id.
    pub fn read_snapshot(&self, id: &Id) -> Result<Vec<u8>> {
        let name = format!("snapshots/{}", id.to_hex());
        let path = self.backend.display(&name);
        let Some(bytes) = self.backend.get(&name)? else {
            return Err(Error::Invalid(format!(
                "there is no snapshot {id} in the store at {}",
                self.root.display()
            )));
        };
        let corrupt = |detail: String| Error::Corrupt {
            what: "snapshot",
            id: Some(id.to_hex()),
            path: path.clone(),
            detail,
        };
        if Id::of(&bytes) != *id {
            return Err(corrupt("its content does not match its name".into()));
        }
        snapshot::decode(&bytes).map_err(corrupt)
    }

    /// Writes (or atomically replaces) the run document `runs/<run_id>.json`.
    pub fn put_run(&self, run_id: &str, doc: &[u8]) -> Result<()> {
        if !is_run_id(run_id) {
            return Err(Error::Invalid(format!(
                "{run_id:?} is not a run id (use 1 to 200 of A-Z a-z 0-9 _ -)"
            )));
        }
        self.backend.replace(&format!("runs/{run_id}.json"), doc)
    }

    /// Every run document, by run id, in run id order.
    pub fn runs(&self) -> Result<Vec<(String, Vec<u8>)>> {
        let mut names: Vec<(String, String)> = self
            .backend
            .list("runs/")?
            .into_iter()
            .filter_map(|(name, _)| {
                let run_id = name.strip_prefix("runs/")?.strip_suffix(".json")?;
                Some((run_id.to_string(), name.clone())).filter(|(r, _)| is_run_id(r))
            })
            .collect();
        // In parallel: on a remote store each is a request.
        let read = parallel::map_on(
            self.read_threads(),
            &mut names,
            || (),
            |_, (run_id, name)| {
                self.backend
                    .get(name)
                    .map(|doc| doc.map(|d| (run_id.clone(), d)))
            },
        );
        let mut runs: Vec<(String, Vec<u8>)> = read
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        runs.sort();
        Ok(runs)
    }

    /// Deletes `tmp/` files left by processes that are gone (and idle for ten minutes, which protects
    /// writers on other machines sharing the directory). Linux only; elsewhere they stay.
    pub fn remove_stale_tmp(&self) {
        durable::remove_stale_tmp(&self.tmp_dir());
    }

    /// Threads for reading many blobs or objects at once: the cores for a local store (reads
    /// are checked, which hashes), many more for a remote one (each read is a request).
    pub(crate) fn read_threads(&self) -> usize {
        if self.backend.local_root().is_some() {
            parallel::workers()
        } else {
            parallel::IO_THREADS
        }
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.backend.staging_dir()
    }

    /// The index, its packs loaded (the first call loads them).
    pub(crate) fn read_index(&self) -> RwLockReadGuard<'_, Index> {
        self.listed();
        self.index_for_reading()
    }

    fn write_index(&self) -> RwLockWriteGuard<'_, Index> {
        self.listed();
        self.index_for_writing()
    }

    /// The index as it is (for `refresh`, which loads it).
    fn index_for_reading(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn index_for_writing(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer, minus a pack inherited across `fork`: that one belongs to the parent.
    pub(crate) fn writer(&self) -> MutexGuard<'_, Writer> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer
            .open
            .as_ref()
            .is_some_and(|p| !p.owned_by_this_process())
        {
            writer.open = None; // closes our copy of the descriptor; the file is untouched
            writer.cleaned_tmp = false;
        }
        writer
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the packs holding any of `ids` that are no longer on disk; returns how many.
    /// Without `recheck`, a pack already seen since the last commit is not looked at again.
    fn forget_vanished_packs<'a>(&self, ids: impl Iterator<Item = &'a Id>, recheck: bool) -> usize {
        let packs: BTreeMap<u32, Arc<PackFile>> = {
            let index = self.read_index();
            ids.filter_map(|id| {
                let loc = index.blobs.get(id)?;
                Some((loc.pack, Arc::clone(index.packs.get(loc.pack as usize)?)))
            })
            .collect()
        };
        let mut vanished = Vec::new();
        {
            let mut pending = self.pending();
            for (n, pack) in packs {
                if !recheck && pending.packs_seen.contains(&pack.id) {
                    continue;
                }
                match self.backend.exists(&pack.name) {
                    Ok(false) => vanished.push(n),
                    // Unknown (the service failed): the commit that relies on it says so later.
                    _ => {
                        pending.packs_seen.insert(pack.id);
                    }
                }
            }
        }
        if !vanished.is_empty() {
            let mut index = self.write_index();
            for &n in &vanished {
                index.forget_pack(n);
            }
        }
        vanished.len()
    }

    fn open_pack_contains(&self, writer: &Writer, id: &Id) -> bool {
        writer.open.as_ref().is_some_and(|p| p.contains(id))
    }

    /// Appends one blob to the open pack (opening one if needed); returns the bytes written.
    pub(crate) fn append(
        &self,
        writer: &mut Writer,
        id: Id,
        kind: Kind,
        stored: &Stored,
        raw_len: u32,
    ) -> Result<u64> {
        if writer.open.is_none() {
            if !writer.cleaned_tmp {
                self.remove_stale_tmp();
                writer.cleaned_tmp = true;
            }
            writer.open = Some(OpenPack::create(&self.tmp_dir())?);
        }
        let Some(open) = writer.open.as_mut() else {
            return Err(Error::Invalid("no open pack".into()));
        };
        if let Err(e) = open.append(id, kind, stored, raw_len) {
            if let Some(open) = writer.open.take() {
                open.discard();
            }
            return Err(e);
        }
        self.raw_written
            .fetch_add(u64::from(raw_len), Ordering::Relaxed);
        if open.len() >= pack::PACK_TARGET_SIZE {
            self.seal(writer)?;
        }
        Ok(stored.bytes().len() as u64)
    }

    pub(crate) fn seal(&self, writer: &mut Writer) -> Result<()> {
        let Some(open) = writer.open.take() else {
            return Ok(());
        };
        let (id, staged, entries) = open.seal(self.backend.local_root().is_some())?;
        if entries.is_empty() {
            return Ok(());
        }
        let name = pack::pack_name(&id);
        if self.backend.local_root().is_some() {
            self.backend.put_file(&name, &staged)?;
        }
        // Indexed before a remote upload ends: blobs in flight are not written again; reads
        // wait for the uploads (`locate`), and so does the commit (`flush`).
        self.write_index()
            .add_pack(id, name.clone(), self.backend.display(&name), &entries);
        if self.backend.local_root().is_none() {
            self.uploads
                .start(&self.backend, id, name, staged)
                .map_err(|failed| self.upload_failed(failed))?;
        }
        Ok(())
    }

    /// Finds a blob: in the index, else in the pack being written (which is then sealed), else
    /// in packs other processes wrote since the store was opened.
    pub(crate) fn locate(&self, id: &Id) -> Result<(Arc<PackFile>, Entry)> {
        self.finish_uploads()?;
        if let Some(found) = self.read_index().get(id) {
            return Ok(found);
        }
        {
            let mut writer = self.writer();
            if self.open_pack_contains(&writer, id) {
                self.seal(&mut writer)?;
            }
        }
        if let Some(found) = self.read_index().get(id) {
            return Ok(found);
        }
        self.refresh()?;
        self.read_index().get(id).ok_or_else(|| Error::MissingBlob {
            id: *id,
            path: self.root.clone(),
        })
    }

    /// Reads blob `entry` of `pack` into `out`, verified.
    fn read_blob(
        &self,
        reader: &mut Reader,
        pack: &PackFile,
        entry: &Entry,
        out: &mut [u8],
    ) -> Result<()> {
        let file = match &mut reader.file {
            Some((id, file)) if *id == pack.id => file,
            slot => {
                let file = self
                    .backend
                    .open(&pack.name, None)?
                    .ok_or_else(|| io_at(&pack.path)(io::Error::from(io::ErrorKind::NotFound)))?;
                &mut slot.insert((pack.id, file)).1
            }
        };
        pack::read_blob_into(
            file.as_ref(),
            entry,
            out,
            &mut reader.scratch,
            &mut reader.dctx,
        )
        .map_err(|e| {
            let corrupt = |detail: String| Error::Corrupt {
                what: "blob",
                id: Some(entry.id.to_hex()),
                path: pack.path.clone(),
                detail,
            };
            match e {
                BlobError::Corrupt(detail) => corrupt(detail),
                BlobError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    corrupt("the pack ends before the blob does (truncated?)".into())
                }
                BlobError::Io(e) => io_at(&pack.path)(e),
            }
        })
    }
}

impl Drop for Store {
    /// Seals the pack being written, so stored blobs stay usable (errors cannot be reported here;
    /// the pack then stays in `tmp/` and is cleaned up later).
    fn drop(&mut self) {
        // Packs still going up (when no flush waited for them) finish first.
        let _ = self.uploads.finish();
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = writer.open.take() {
            if open.owned_by_this_process() {
                if let Ok((id, staged, entries)) = open.seal(self.backend.local_root().is_some()) {
                    if !entries.is_empty() {
                        let _ = self.backend.put_file(&pack::pack_name(&id), &staged);
                    }
                }
            }
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.root)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// The spot check of a fingerprint cache hit, which guards against a wrong cache entry without
/// hashing the chunk (the cache exists to avoid that): the stored blob must be a chunk of the
/// chunk's length, stored raw (incompressible data: most of a large state, where the cache
/// pays), with the same 32 bytes at a place the fingerprint picks (one small read, from the
/// page cache when the pack is recent). A compressed blob cannot be sampled without
/// decompressing it, which costs more than hashing the chunk: such a chunk is hashed. Together
/// with `relive verify`, which checks every entry, a wrong entry never goes unnoticed.
struct HitCheck<'a> {
    backend: &'a dyn Backend,
    files: HashMap<Id, Option<Box<dyn Object>>>,
    failed: bool,
}

impl<'a> HitCheck<'a> {
    fn new(backend: &'a dyn Backend) -> HitCheck<'a> {
        HitCheck {
            backend,
            files: HashMap::new(),
            failed: false,
        }
    }

    /// Whether the hit may be used; a hit proven wrong also sets `failed`.
    fn matches(&mut self, pack: &PackFile, entry: &Entry, fp: u128, chunk: &[u8]) -> bool {
        match self.check(pack, entry, fp, chunk) {
            Some(ok) => {
                self.failed |= !ok;
                ok
            }
            // Compressed, or the pack cannot be read: the chunk is hashed, the cache not blamed.
            None => false,
        }
    }

    fn check(&mut self, pack: &PackFile, entry: &Entry, fp: u128, chunk: &[u8]) -> Option<bool> {
        if entry.raw_len as usize != chunk.len() || entry.kind != Kind::Chunk {
            return Some(false);
        }
        if entry.codec != Codec::Raw {
            return None;
        }
        let len = chunk.len().min(32);
        let at = (fp as u64 % (chunk.len() - len + 1) as u64) as usize;
        let file = self
            .files
            .entry(pack.id)
            .or_insert_with(|| self.backend.open(&pack.name, None).ok().flatten());
        let mut sample = [0u8; 32];
        file.as_ref()?
            .read_at(entry.offset + at as u64, &mut sample[..len])
            .ok()?;
        Some(sample[..len] == chunk[at..at + len])
    }
}

fn is_run_id(s: &str) -> bool {
    (1..=200).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `RELIVE_COMPRESS=always` compresses every chunk that pays on the store's threads, whatever
/// else runs (a smaller store for slower snapshots on a busy machine; the same bytes stored
/// whatever the load, as the test suite wants); unset or `idle`, on idle cores only.
fn compress_when_idle_by_default() -> bool {
    std::env::var("RELIVE_COMPRESS").map_or(true, |v| v.trim() != "always")
}
