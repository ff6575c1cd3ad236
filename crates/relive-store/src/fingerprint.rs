//! Chunk fingerprints: what makes an unchanged buffer cost one pass at memory speed.
//!
//! A fingerprint is XXH3-128 of a chunk (about twice BLAKE3's speed on one core here, and
//! memory-bound), seeded with a secret random per store so that data cannot be crafted to
//! collide with what a program stores. The store remembers which BLAKE3 id each fingerprint
//! stood for; a chunk whose fingerprint is known, and whose id is stored, is not hashed again.
//!
//! The map lives in `cache/fingerprints`, a local cache like any other: it holds the chunks of
//! the latest snapshot written, each process (each forked snapshot child) reads it on its first
//! put and writes it back at commit. A missing or damaged cache costs speed, never correctness:
//! ids are only ever taken from it for chunks already in the store.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::path::Path;

use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::durable;
use crate::error::Result;
use crate::id::Id;

const MAGIC: &[u8; 8] = b"RLVFPR\x01\x00";
const ENTRY: usize = 16 + 32;

pub(crate) struct Fingerprints {
    seed: u64,
    known: HashMap<u128, Id>,
    /// The fingerprints of the chunks put by this process since its last save: what it saves.
    used: HashMap<u128, Id>,
}

impl Fingerprints {
    /// The cache at `path`, or an empty one with a fresh seed when it is missing or damaged.
    pub(crate) fn load(path: &Path) -> Fingerprints {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| decode(&bytes))
            .unwrap_or_else(|| Fingerprints {
                seed: RandomState::new().hash_one(0u8),
                known: HashMap::new(),
                used: HashMap::new(),
            })
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    pub(crate) fn of(seed: u64, chunk: &[u8]) -> u128 {
        xxh3_128_with_seed(chunk, seed)
    }

    pub(crate) fn get(&self, fingerprint: u128) -> Option<Id> {
        self.known.get(&fingerprint).copied()
    }

    pub(crate) fn insert(&mut self, fingerprint: u128, id: Id) {
        self.known.insert(fingerprint, id);
        self.used.insert(fingerprint, id);
    }

    /// Forgets every fingerprint read or learned so far (one proved wrong: none is trusted).
    pub(crate) fn forget_known(&mut self) {
        self.known.clear();
        self.used.clear();
    }

    /// Writes the fingerprints used since the last save (if any) to `path`, atomically.
    pub(crate) fn save(&mut self, tmp_dir: &Path, path: &Path) -> Result<()> {
        if self.used.is_empty() {
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            durable::ensure_dir(dir)?;
        }
        let mut bytes = Vec::with_capacity(MAGIC.len() + 12 + self.used.len() * ENTRY + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.seed.to_le_bytes());
        bytes.extend_from_slice(&(self.used.len() as u32).to_le_bytes());
        for (fingerprint, id) in &self.used {
            bytes.extend_from_slice(&fingerprint.to_le_bytes());
            bytes.extend_from_slice(id.as_bytes());
        }
        let check = Id::of(&bytes);
        bytes.extend_from_slice(check.as_bytes());
        durable::write_atomic(tmp_dir, "fingerprints", path, &bytes)?;
        self.used.clear();
        Ok(())
    }
}

/// Fingerprints whose chunks this process hashed itself (or a forked snapshot child of it did,
/// and said so: [`Proven::encode`]): their ids need no spot check, and a compressed chunk's,
/// which a spot check cannot read without decompressing it, need no hash. Copy-then-write
/// snapshots copied every compressible chunk at each snapshot without them (its id unknown,
/// the program's bytes must be kept until hashed): all of MNIST's 190 MB of training data,
/// for a 400 ms pause. Not the cache file: a wrong entry there must still be caught, and
/// these never came from it.
#[derive(Default)]
pub(crate) struct Proven {
    ids: HashMap<(u64, u128), Id>,
}

/// Past this many (1 MiB chunks: 256 GiB), what was proven is forgotten: it costs only speed.
const MAX_PROVEN: usize = 1 << 18;
const PROVEN_ENTRY: usize = 8 + 16 + 32;

impl Proven {
    pub(crate) fn get(&self, seed: u64, fingerprint: u128) -> Option<Id> {
        self.ids.get(&(seed, fingerprint)).copied()
    }

    pub(crate) fn add(&mut self, seed: u64, fingerprint: u128, id: Id) {
        if self.ids.len() >= MAX_PROVEN {
            self.ids.clear();
        }
        self.ids.insert((seed, fingerprint), id);
    }

    /// All of them, for the process this one was forked from.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ids.len() * PROVEN_ENTRY);
        for (&(seed, fingerprint), id) in &self.ids {
            out.extend_from_slice(&seed.to_le_bytes());
            out.extend_from_slice(&fingerprint.to_le_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// Adds what [`Proven::encode`] gave; false (and nothing added) when `bytes` are not that.
    pub(crate) fn add_encoded(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() % PROVEN_ENTRY != 0 {
            return false;
        }
        for entry in bytes.chunks_exact(PROVEN_ENTRY) {
            let seed = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            let fingerprint = u128::from_le_bytes(entry[8..24].try_into().expect("16 bytes"));
            let id = Id(entry[24..].try_into().expect("32 bytes"));
            self.add(seed, fingerprint, id);
        }
        true
    }
}

fn decode(bytes: &[u8]) -> Option<Fingerprints> {
    let (seed, entries) = decode_entries(bytes).ok()?;
    Some(Fingerprints {
        seed,
        known: entries.into_iter().collect(),
        used: HashMap::new(),
    })
}

/// The seed and the entries of the cache at `path`, for `verify`: None when there is no cache,
/// what is wrong when it cannot be read.
pub(crate) fn read_entries(path: &Path) -> Result<Option<Entries>, String> {
    match std::fs::read(path) {
        Ok(bytes) => decode_entries(&bytes).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

/// A cache's seed and its `(fingerprint, id)` entries.
pub(crate) type Entries = (u64, Vec<(u128, Id)>);

fn decode_entries(bytes: &[u8]) -> Result<Entries, String> {
    let damaged =
        || "it is not a complete fingerprint cache (truncated, or overwritten)".to_string();
    let body = bytes
        .get(..bytes.len().checked_sub(32).ok_or_else(damaged)?)
        .ok_or_else(damaged)?;
    if Id::of(body).as_bytes() != &bytes[body.len()..] || !body.starts_with(MAGIC) {
        return Err("it does not match its checksum".into());
    }
    let field = |range: std::ops::Range<usize>| body.get(range).ok_or_else(damaged);
    let seed = u64::from_le_bytes(field(8..16)?.try_into().map_err(|_| damaged())?);
    let count = u32::from_le_bytes(field(16..20)?.try_into().map_err(|_| damaged())?) as usize;
    let entries = field(20..body.len())?;
    if Some(entries.len()) != count.checked_mul(ENTRY) {
        return Err(format!(
            "it claims {count} entries, but holds {} bytes of them",
            entries.len()
        ));
    }
    let entries = entries
        .chunks_exact(ENTRY)
        .map(|e| {
            let fingerprint = u128::from_le_bytes(e[..16].try_into().expect("16 bytes"));
            let id = Id(e[16..].try_into().expect("32 bytes"));
            (fingerprint, id)
        })
        .collect();
    Ok((seed, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache").join("fingerprints");
        let mut fps = Fingerprints::load(&path);
        let fp = Fingerprints::of(fps.seed(), b"chunk");
        fps.insert(fp, Id::of(b"chunk"));
        fps.save(dir.path(), &path).unwrap();
        let again = Fingerprints::load(&path);
        assert_eq!(again.seed(), fps.seed());
        assert_eq!(again.get(fp), Some(Id::of(b"chunk")));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[25] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let damaged = Fingerprints::load(&path);
        assert_eq!(damaged.get(fp), None);
    }
}
