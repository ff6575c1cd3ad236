//! Copy-then-write: a record copied out of the program now, written later by another thread.
//!
//! Where a snapshot cannot be written by a forked child (CUDA is initialized, fork is
//! unsafe), the program pauses only for what must happen while its objects stand still: the
//! pickling, and a copy of the bytes that changed since the last snapshot. [`Store::stage`]
//! fingerprints each chunk at memory speed (XXH3, as `put_record` does) and copies only the
//! chunks the store does not hold yet; [`Store::put_staged`] then hashes, compresses and writes
//! them on the store's threads while the program runs on. A staged record owns everything it
//! needs, so the program may change or free its buffers as soon as `stage` returns.

use crate::copy_memory;
use crate::error::Result;
use crate::fingerprint::Fingerprints;
use crate::id::Id;
use crate::parallel;
use crate::store::{BufferSource, PutOutcome, Store};
use crate::told;
use crate::watch::{self, Seen, Was};

/// Copies of at least this size get a mapping of their own (`copy_memory.rs`: memory a
/// written snapshot copied into, kept for the next, or fresh, asked for huge pages): copying
/// into fresh 4 KiB pages is bound by the page faults (about half the copy's time here), and
/// writing from them into the page cache ran 1.5x slower than from the program's own
/// (huge-page) array.
const MAPPED_FROM: usize = 2 << 20;

/// A record copied for writing later.
pub struct Staged {
    payload: Vec<u8>,
    lens: Vec<u64>,
    chunks: Vec<Chunk>,
    /// The copied chunks, one after the other.
    copies: Copies,
    /// The fingerprint of each chunk of the given bytes, where one is known, and the cache's
    /// seed, to remember once the ids are known (none for a remote store).
    fingerprints: Option<(u64, Vec<Option<u128>>)>,
    /// The watched buffers (`watch.rs`), each with the index of its first chunk among the
    /// given bytes' and the copies number it was staged in: told their chunks once written.
    watched: Vec<(watch::Buffer, usize, u64)>,
    /// The buffers copied whole, without fingerprints, as rewritten at the last copy
    /// (`watch::rewritten`), in the same form: judged again once their ids are known.
    rewritten: Vec<(watch::Buffer, usize, u64)>,
    /// The buffers whose owner told the versions of their blocks (`told.rs`), each with the
    /// index of its first chunk and its chunks' versions: told their chunks once written.
    told: Vec<(watch::Buffer, usize, Vec<u64>)>,
    unread: u64,
}

#[derive(Clone, Copy)]
enum Chunk {
    /// Already in the store, found by its fingerprint: only its id is kept.
    Stored(Id),
    /// A chunk of a stored buffer the record refers to (`BufferSource::Stored`): no
    /// fingerprint of it was taken.
    Referenced(Id),
    /// New or changed: its bytes, copied to `copies[start..start + len]`.
    Copied { start: usize, len: usize },
}

enum Copies {
    Heap(Vec<u8>),
    /// The first `len` bytes of memory kept from one copy to the next (`copy_memory.rs`).
    Mapped {
        memory: copy_memory::Memory,
        len: usize,
    },
}

impl Copies {
    fn new(len: usize) -> Copies {
        if len >= MAPPED_FROM {
            if let Some(memory) = copy_memory::take(len) {
                return Copies::Mapped { memory, len };
            }
        }
        Copies::Heap(vec![0; len])
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Copies::Heap(v) => v,
            Copies::Mapped { memory, len } => &memory[..*len],
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Copies::Heap(v) => v,
            Copies::Mapped { memory, len } => &mut memory[..*len],
        }
    }
}

impl Staged {
    /// The bytes copied out of the program's buffers (the payload included): the memory this
    /// record holds until it is written.
    pub fn copied_bytes(&self) -> u64 {
        (self.payload.len() + self.copies.bytes().len()) as u64
    }

    /// The bytes of watched buffers known unchanged without being read (`watch.rs`).
    pub fn unread_bytes(&self) -> u64 {
        self.unread
    }

    /// The payload's length plus the buffers' lengths, as [`PutOutcome::raw_bytes`].
    pub fn raw_bytes(&self) -> u64 {
        self.payload.len() as u64 + self.lens.iter().sum::<u64>()
    }

    fn piece(&self, chunk: &Chunk) -> Option<&[u8]> {
        match *chunk {
            Chunk::Copied { start, len } => Some(&self.copies.bytes()[start..start + len]),
            Chunk::Stored(_) | Chunk::Referenced(_) => None,
        }
    }
}

impl Store {
    /// Copies what a record needs to be written later: `payload`, and each chunk of `buffers`
    /// the store does not hold (a chunk whose fingerprint names a stored chunk is kept by id).
    /// Fast: one fingerprint pass over the buffers and a copy of what changed, in parallel.
    /// None, with nothing copied, where that would be more than `at_most` bytes (found by the
    /// fingerprint pass: a copy that would pause the program longer than a fork, which
    /// `--mode auto` takes instead).
    pub fn stage(&self, payload: &[u8], buffers: &[&[u8]], at_most: u64) -> Option<Staged> {
        let sources: Vec<BufferSource<'_>> =
            buffers.iter().map(|b| BufferSource::Bytes(b)).collect();
        self.stage_from(payload, &sources, at_most, 0, false)
    }

    /// Starts the copies of one snapshot: the number to give [`Store::stage_from`], which
    /// then asks which pages of large buffers the program wrote since the last copies, rather
    /// than fingerprinting all of them (`watch.rs`). The memory kept for copies that the last
    /// copies did not reuse is let go (`copy_memory.rs`).
    pub fn begin_copies(&self) -> u64 {
        copy_memory::new_round();
        watch::begin_copies()
    }

    /// [`Store::stage`] where some buffers are already stored (a large dict's segments of the
    /// last record, `BufferSource::Stored`): those are kept by their chunk ids, as
    /// [`Store::put_record_from`] keeps them, neither fingerprinted nor copied. With `copies`
    /// (from [`Store::begin_copies`]; 0: none), a buffer found rewritten at the last copies is
    /// copied without a fingerprint pass (`watch::rewritten`), and with `watch_pages` too, the
    /// chunks of watched buffers whose pages were not written since the last copies keep their
    /// ids without being fingerprinted (not where a device may write the program's memory by
    /// DMA, which no page protection sees: CUDA's pinned memory).
    pub fn stage_from(
        &self,
        payload: &[u8],
        buffers: &[BufferSource<'_>],
        at_most: u64,
        copies: u64,
        watch_pages: bool,
    ) -> Option<Staged> {
        let size = self.chunk_size();
        // Every chunk of the given bytes (a piece), in order; what the watch knows of each.
        let mut pieces: Vec<&[u8]> = Vec::new();
        let mut seen: Vec<Seen> = Vec::new();
        let (mut watched, mut unwatched, mut rewritten) = (Vec::new(), Vec::new(), Vec::new());
        let mut versioned = Vec::new(); // told: (buffer, first chunk, versions)
        for buffer in buffers {
            let BufferSource::Bytes(bytes) = buffer else {
                continue;
            };
            let key = watch::Buffer {
                addr: bytes.as_ptr() as usize,
                len: bytes.len(),
                chunk_size: size,
                store: self.token,
            };
            let first = pieces.len();
            pieces.extend(bytes.chunks(size));
            if let Some((versions, answer)) = told::before_fingerprints(key) {
                seen.extend(answer);
                versioned.push((key, first, versions));
                continue;
            }
            let answer = watch_pages
                .then(|| watch::before_fingerprints(key, copies))
                .flatten();
            match answer {
                Some(answer) => {
                    seen.extend(answer);
                    watched.push((key, first));
                }
                None if watch::rewritten(key, copies) => {
                    seen.resize(pieces.len(), Seen::Written); // copied, not fingerprinted
                    rewritten.push((key, first, copies));
                }
                None => {
                    seen.resize(pieces.len(), Seen::Unknown);
                    unwatched.push((key, first));
                }
            }
        }
        if !watched.is_empty() || !versioned.is_empty() {
            let index = self.read_index();
            for s in seen.iter_mut() {
                if matches!(s, Seen::Unchanged(was) if !index.stored(&was.id)) {
                    *s = Seen::Unknown; // pruned since: stored again
                }
            }
        }
        let unread = pieces
            .iter()
            .zip(&seen)
            .filter(|(_, s)| matches!(s, Seen::Unchanged(_)))
            .map(|(p, _)| p.len() as u64)
            .sum();
        let todo: Vec<&[u8]> = pieces
            .iter()
            .zip(&seen)
            .filter(|(_, s)| **s == Seen::Unknown)
            .map(|(p, _)| *p)
            .collect();
        let (found, seed, fps) = match self.known_chunks(&todo) {
            Some(known) => (known.ids, Some(known.seed), Some(known.fingerprints)),
            None => (self.stored_by_hash(&todo), None, None),
        };
        // Per piece: its id where stored, and its fingerprint where one is known.
        let (mut found, mut fps) = (found.into_iter(), fps.map(Vec::into_iter));
        let (ids, fingerprints): (Vec<Option<Id>>, Vec<Option<u128>>) = seen
            .iter()
            .map(|s| match s {
                Seen::Unchanged(was) => (
                    Some(was.id),
                    was.fingerprint
                        .filter(|(s, _)| Some(*s) == seed)
                        .map(|(_, f)| f),
                ),
                Seen::Written => (None, None), // its fingerprint is taken after the pause
                Seen::Unknown => (
                    found.next().flatten(),
                    fps.as_mut().and_then(Iterator::next),
                ),
            })
            .collect();
        // Buffers fingerprinted whole (a watched one protected at this copy, or whose last
        // chunks were not learned, too): what they found decides whether they are watched.
        let whole = watched.iter().filter(|(key, first)| {
            let n = key.len.div_ceil(size);
            seen[*first..first + n].iter().all(|s| *s == Seen::Unknown)
        });
        for &(key, first) in unwatched.iter().chain(whole) {
            let n = key.len.div_ceil(size);
            let changed = ids[first..first + n]
                .iter()
                .filter(|id| id.is_none())
                .count();
            watch::after_fingerprints(key, copies, changed);
        }
        let mut at = 0;
        let mut found = pieces.iter().zip(&ids);
        let mut chunks: Vec<Chunk> = Vec::new();
        for buffer in buffers {
            match buffer {
                BufferSource::Stored(stored) => {
                    chunks.extend(stored.chunks.iter().map(|&id| Chunk::Referenced(id)))
                }
                BufferSource::Bytes(bytes) => {
                    for (piece, id) in found.by_ref().take(bytes.chunks(size).len()) {
                        chunks.push(match id {
                            Some(id) => Chunk::Stored(*id),
                            None => {
                                at += piece.len();
                                Chunk::Copied {
                                    start: at - piece.len(),
                                    len: piece.len(),
                                }
                            }
                        });
                    }
                }
            }
        }
        if (payload.len() + at) as u64 > at_most {
            return None;
        }
        let mut copies_of = Copies::new(at);
        let fresh = matches!(&copies_of, Copies::Mapped { memory, .. } if memory.fresh());
        // Each copied chunk's place in `copies`, split off in order, paired with its source.
        let mut rest = copies_of.bytes_mut();
        let mut work: Vec<(&mut [u8], &[u8])> = Vec::new();
        for (piece, id) in pieces.iter().zip(&ids) {
            if id.is_none() {
                let (place, after) = rest.split_at_mut(piece.len());
                work.push((place, piece));
                rest = after;
            }
        }
        parallel::map_with(
            &mut work,
            || (),
            |_, (place, piece)| {
                if fresh {
                    copy_memory::populate(place);
                }
                place.copy_from_slice(piece)
            },
        );
        drop(work);
        Some(Staged {
            payload: payload.to_vec(),
            lens: buffers
                .iter()
                .map(|b| match b {
                    BufferSource::Bytes(bytes) => bytes.len() as u64,
                    BufferSource::Stored(stored) => stored.len,
                })
                .collect(),
            chunks,
            copies: copies_of,
            fingerprints: seed.map(|seed| (seed, fingerprints)),
            watched: watched
                .into_iter()
                .map(|(key, first)| (key, first, copies))
                .collect(),
            rewritten,
            told: versioned,
            unread,
        })
    }

    /// A remote store keeps no fingerprint cache (see `chunk_ids`): the chunks it holds are
    /// found by their BLAKE3 id, a pass at a fifth of the fingerprints' speed, rather than
    /// every chunk being copied at every snapshot.
    fn stored_by_hash(&self, pieces: &[&[u8]]) -> Vec<Option<Id>> {
        let ids = parallel::map_with(&mut pieces.to_vec(), || (), |_, p| Id::of(p));
        let index = self.read_index();
        ids.into_iter()
            .map(|id| Some(id).filter(|id| index.stored(id)))
            .collect()
    }

    /// Writes a staged record as [`Store::put_record`] would have written it when it was staged:
    /// the same id, the same chunks. Hashes the copied chunks on the store's threads.
    pub fn put_staged(&self, staged: Staged) -> Result<PutOutcome> {
        let mut chunks = staged.chunks.clone();
        let ids = parallel::map_with(
            &mut chunks,
            || (),
            |_, chunk| match *chunk {
                Chunk::Stored(id) | Chunk::Referenced(id) => id,
                Chunk::Copied { start, len } => Id::of(&staged.copies.bytes()[start..start + len]),
            },
        );
        // The given bytes' chunks (the pieces staging cut), in order, with their ids.
        let pieces: Vec<(&Chunk, Id)> = staged
            .chunks
            .iter()
            .zip(ids.iter().copied())
            .filter(|(chunk, _)| !matches!(chunk, Chunk::Referenced(_)))
            .collect();
        // A buffer copied whole as rewritten is judged by how many of its chunks are new; one
        // still rewritten is not fingerprinted (the next step rewrites it again).
        let mut unjudged = vec![false; pieces.len()];
        for &(key, first, copies) in &staged.rewritten {
            let n = key.len.div_ceil(key.chunk_size);
            let its = &pieces[first..first + n];
            let changed = its.iter().filter(|(_, id)| !self.contains(id)).count();
            watch::after_fingerprints(key, copies, changed);
            if changed * 8 > n {
                unjudged[first..first + n].fill(true);
            }
        }
        // The other chunks copied without a fingerprint (of watched buffers whose pages were
        // written: the pause only copied them) are fingerprinted now, for the cache.
        let mut fingerprints = staged.fingerprints.clone();
        if let Some((seed, fps)) = &mut fingerprints {
            for ((&(chunk, _), fp), unjudged) in pieces.iter().zip(fps.iter_mut()).zip(unjudged) {
                if let (Some(bytes), None, false) = (staged.piece(chunk), *fp, unjudged) {
                    *fp = Some(Fingerprints::of(*seed, bytes));
                }
            }
        }
        if let Some((seed, fps)) = &fingerprints {
            let known: Vec<(u128, Id)> = pieces
                .iter()
                .zip(fps)
                .filter_map(|(&(_, id), fp)| fp.map(|fp| (fp, id)))
                .collect();
            let (fps_known, ids_known): (Vec<u128>, Vec<Id>) = known.into_iter().unzip();
            self.remember(*seed, &fps_known, &ids_known);
            // The copied chunks were hashed just now.
            let copied = pieces
                .iter()
                .zip(fps)
                .filter(|((chunk, _), _)| matches!(chunk, Chunk::Copied { .. }))
                .filter_map(|(&(_, id), fp)| fp.map(|fp| (fp, id)));
            self.prove(*seed, copied);
        }
        let slices: Vec<Option<&[u8]>> = staged.chunks.iter().map(|c| staged.piece(c)).collect();
        let outcome = self.put_pieces(&staged.payload, &staged.lens, &ids, &slices)?;
        // What each chunk of a buffer was, for the next copy of a watched or told one.
        let was = |key: watch::Buffer, first: usize| -> Vec<Was> {
            let n = key.len.div_ceil(key.chunk_size);
            (first..first + n)
                .map(|i| Was {
                    fingerprint: fingerprints
                        .as_ref()
                        .and_then(|(seed, fps)| fps[i].map(|fp| (*seed, fp))),
                    id: pieces[i].1,
                })
                .collect()
        };
        for &(key, first, copies) in &staged.watched {
            watch::learned(key, copies, was(key, first));
        }
        for (key, first, versions) in &staged.told {
            told::learned(*key, versions, was(*key, *first));
        }
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        Store::create_with_chunk_size(&dir.join("store"), 1024).unwrap()
    }

    /// Bytes that do not compress (a compressed chunk's fingerprint hit cannot be checked).
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|_| {
                // splitmix64
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                (z ^ (z >> 31)) as u8
            })
            .collect()
    }

    #[test]
    fn a_staged_record_is_the_record_put_record_writes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            store(dir.path()),
            Store::create_with_chunk_size(&dir.path().join("other"), 1024).unwrap(),
        );
        let buffer = data(10_000, 1);
        let staged = a.stage(b"payload", &[&buffer], u64::MAX).unwrap();
        assert_eq!(staged.copied_bytes(), 7 + 10_000);
        assert_eq!(staged.raw_bytes(), 7 + 10_000);
        let put = a.put_staged(staged).unwrap();
        let direct = b.put_record(b"payload", &[&buffer]).unwrap();
        assert_eq!(put.id, direct.id);
        assert_eq!(put.new_bytes, direct.new_bytes);
        let record = a.get_record(&put.id).unwrap();
        assert_eq!(record.payload, b"payload");
    }

    #[test]
    fn a_stored_buffer_is_referred_to_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let (old, new) = (data(5000, 3), data(3000, 4));
        let first = s.put_record(b"p", &[&old]).unwrap();
        let stored = s.get_record(&first.id).unwrap().buffers[0].clone();
        let sources = [
            BufferSource::Stored(stored.clone()),
            BufferSource::Bytes(&new),
        ];
        let staged = s.stage_from(b"q", &sources, u64::MAX, 0, false).unwrap();
        assert_eq!(staged.copied_bytes(), 1 + 3000); // the new buffer only
        assert_eq!(staged.raw_bytes(), 1 + 5000 + 3000);
        let put = s.put_staged(staged).unwrap();
        let direct = s.put_record_from(b"q", &sources).unwrap();
        assert_eq!(put.id, direct.id);
        let record = s.get_record(&put.id).unwrap();
        let mut out = vec![0u8; 5000];
        s.read_buffer_into(&record.buffers[0], &mut out).unwrap();
        assert_eq!(out, old);
    }

    #[test]
    fn only_changed_chunks_are_copied_and_the_copy_is_what_was_staged() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut buffer = data(8 * 1024, 2);
        let first = s.put_record(b"p", &[&buffer]).unwrap();
        s.flush().unwrap(); // fingerprint hits are used for chunks in sealed packs
        buffer[3 * 1024 + 5] ^= 0xff; // one chunk changes
        let staged = s.stage(b"p", &[&buffer], u64::MAX).unwrap();
        assert_eq!(staged.copied_bytes(), 1 + 1024);
        let expected = buffer.clone();
        buffer.fill(0); // the program writes on before the record is written
        let put = s.put_staged(staged).unwrap();
        assert_ne!(put.id, first.id);
        let mut out = vec![0u8; expected.len()];
        let record = s.get_record(&put.id).unwrap();
        s.read_buffer_into(&record.buffers[0], &mut out).unwrap();
        assert_eq!(out, expected);
    }

    /// The watch is the process's, its copies numbered across stores: one test at a time,
    /// each from a watch that knows no buffer (an earlier test's memory may be reused).
    static WATCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn watching_alone() -> std::sync::MutexGuard<'static, ()> {
        let one = WATCHING.lock().unwrap_or_else(|e| e.into_inner());
        watch::forget_all();
        copy_memory::forget_all();
        one
    }

    /// Stages `buffer` as a record of its own, writes it and reads it back.
    fn copy_and_check(s: &Store, buffer: &[u8]) {
        let staged = s.stage(b"p", &[buffer], u64::MAX).unwrap();
        let put = s.put_staged(staged).unwrap();
        let record = s.get_record(&put.id).unwrap();
        let mut out = vec![0u8; buffer.len()];
        s.read_buffer_into(&record.buffers[0], &mut out).unwrap();
        assert!(out == buffer);
    }

    #[test]
    fn the_memory_a_written_copy_used_is_reused_by_the_next_and_let_go_when_not() {
        // Sizes no pack buffer (8 MiB) takes: other tests write packs meanwhile.
        let _one = watching_alone(); // nothing kept, and no other test copies meanwhile
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 1 << 20).unwrap();
        let (small, large) = (3 << 20, 20 << 20);
        s.begin_copies();
        copy_and_check(&s, &data(small, 7));
        assert_eq!(copy_memory::kept(small), 1); // kept once written from
        s.begin_copies();
        let staged = s.stage(b"p", &[&data(small, 8)], u64::MAX).unwrap();
        assert_eq!(copy_memory::kept(small), 0); // the next copy of that size took it
        drop(staged);
        s.begin_copies();
        copy_and_check(&s, &data(small, 9)); // written into memory a copy used before
        copy_and_check(&s, &data(large, 10)); // too large for it: fresh memory
        assert_eq!((copy_memory::kept(small), copy_memory::kept(large)), (1, 1));
        s.begin_copies();
        copy_and_check(&s, &data(large, 11));
        // Too small for the large copy, the small mapping kept through these copies is let go
        // at the next; the large one just written from is kept.
        s.begin_copies();
        assert_eq!((copy_memory::kept(small), copy_memory::kept(large)), (0, 1));
    }

    #[test]
    fn chunks_copied_into_fresh_memory_at_any_offset_read_back_as_they_were() {
        // The first buffer's odd length puts the second's chunks off page boundaries in the
        // copy: each is populated from the page below its start (`copy_memory::populate`).
        let _one = watching_alone(); // nothing kept: the copy maps fresh memory
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 1 << 20).unwrap();
        let (a, b) = (data((3 << 20) + 12_345, 30), data((5 << 20) + 777, 31));
        let staged = s.stage(b"p", &[&a, &b], u64::MAX).unwrap();
        assert!(matches!(&staged.copies, Copies::Mapped { memory, .. } if memory.fresh()));
        let put = s.put_staged(staged).unwrap();
        let record = s.get_record(&put.id).unwrap();
        for (buffer, stored) in [&a, &b].into_iter().zip(&record.buffers) {
            let mut out = vec![0u8; buffer.len()];
            s.read_buffer_into(stored, &mut out).unwrap();
            assert!(out == *buffer);
        }
    }

    /// One copied snapshot of `buffer` (a record of it, its copies numbered), written: the
    /// MiB it copied and the MiB the watch kept unread. Checks the record holds the buffer.
    fn copy_watched(s: &Store, buffer: &[u8]) -> (u64, u64) {
        let copies = s.begin_copies();
        let staged = s
            .stage_from(b"p", &[BufferSource::Bytes(buffer)], u64::MAX, copies, true)
            .unwrap();
        let (copied, unread) = (staged.copied_bytes() - 1, staged.unread_bytes());
        let id = s.put_staged(staged).unwrap().id;
        let mut out = vec![0u8; buffer.len()];
        s.read_buffer_into(&s.get_record(&id).unwrap().buffers[0], &mut out)
            .unwrap();
        assert!(out == buffer, "the record holds the buffer as it was");
        s.flush().unwrap();
        (copied >> 20, unread >> 20)
    }

    #[test]
    fn a_quiet_buffer_is_watched_and_only_its_written_chunks_are_read() {
        let _one = watching_alone();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 1 << 20).unwrap();
        let mut buffer = memmap2::MmapMut::map_anon(16 << 20).unwrap();
        buffer.copy_from_slice(&data(16 << 20, 7));
        let copy = |buffer: &[u8]| copy_watched(&s, buffer);
        assert_eq!(copy(&buffer), (16, 0)); // new
        assert_eq!(copy(&buffer), (0, 0)); // protected, then fingerprinted: found quiet
        if crate::page_writes::Pages::open().is_err() {
            eprintln!("page watching unavailable here");
            return;
        }
        assert_eq!(copy(&buffer), (0, 16)); // nothing written: nothing read
        buffer[5 << 20] ^= 0xff;
        buffer[(9 << 20) - 1] ^= 0xff;
        assert_eq!(copy(&buffer), (2, 14));
        // Memory given back reads as zeros, unwritten: found all the same.
        // SAFETY (test): the range is within this test's own mapping.
        unsafe {
            libc::madvise(
                buffer.as_mut_ptr().add(3 << 20) as *mut _,
                4096,
                libc::MADV_DONTNEED,
            );
        }
        assert_eq!(copy(&buffer), (1, 15));
        // Rewritten at large: no longer watched, fingerprinted again.
        for i in 0..8 {
            buffer[(i << 20) + 1] ^= 0xff;
        }
        assert_eq!(copy(&buffer), (8, 8));
        assert_eq!(copy(&buffer), (0, 0));
    }

    #[test]
    fn a_buffer_found_rewritten_when_first_protected_is_let_go() {
        let _one = watching_alone();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 1 << 20).unwrap();
        if crate::page_writes::Pages::open().is_err() {
            eprintln!("page watching unavailable here");
            return;
        }
        let mut buffer = memmap2::MmapMut::map_anon(16 << 20).unwrap();
        buffer.copy_from_slice(&data(16 << 20, 8));
        let copy = |buffer: &[u8]| copy_watched(&s, buffer);
        assert_eq!(copy(&buffer), (16, 0)); // first seen
        for i in 0..16 {
            buffer[(i << 20) + 3] ^= 0xff; // rewritten at large
        }
        assert_eq!(copy(&buffer), (16, 0)); // protected, fingerprinted: let go
                                            // Not watched since: a write to it cannot be missed and costs no fault.
        buffer[(2 << 20) + 7] ^= 0xff;
        assert_eq!(copy(&buffer), (1, 0)); // fingerprinted: found quiet
        assert_eq!(copy(&buffer), (0, 0)); // protected, then fingerprinted
        assert_eq!(copy(&buffer), (0, 16));
    }

    /// One copy of `buffer` alone, with no page watched (as where CUDA writes host memory).
    fn stage_unwatched(s: &Store, buffer: &[u8]) -> Staged {
        let copies = s.begin_copies();
        let sources = [BufferSource::Bytes(buffer)];
        s.stage_from(b"p", &sources, u64::MAX, copies, false)
            .unwrap()
    }

    #[test]
    fn a_buffer_rewritten_at_every_copy_is_copied_whole_unfingerprinted_until_it_stops() {
        let _one = watching_alone();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 16 << 10).unwrap();
        // 256 KiB in 16 chunks: judged at each copy, not watched (too small for that), and
        // with no page watched at all, as where CUDA writes host memory by DMA: the judgement
        // is by content.
        let mut buffer = data(256 << 10, 20);
        let copy = |buffer: &[u8]| {
            let staged = stage_unwatched(&s, buffer);
            let fingerprinted = staged.fingerprints.as_ref().unwrap().1.iter();
            let fingerprinted = fingerprinted.filter(|f| f.is_some()).count();
            let copied = (staged.copied_bytes() - 1) >> 14;
            let put = s.put_staged(staged).unwrap();
            // Written as a snapshot's commit writes it: the record a fingerprinted copy (or a
            // fork's put_record) would have written.
            s.flush().unwrap();
            let other = tempfile::tempdir().unwrap();
            let direct = Store::create_with_chunk_size(other.path(), 16 << 10).unwrap();
            assert_eq!(put.id, direct.put_record(b"p", &[buffer]).unwrap().id);
            (fingerprinted, copied, put.new_bytes >> 14)
        };
        assert_eq!(copy(&buffer), (16, 16, 16)); // first seen
        let step = |buffer: &mut Vec<u8>, seed| buffer.copy_from_slice(&data(256 << 10, seed));
        step(&mut buffer, 21);
        assert_eq!(copy(&buffer), (16, 16, 16)); // busy
        step(&mut buffer, 22);
        assert_eq!(copy(&buffer), (16, 16, 16)); // busy again, all of it: rewritten
        step(&mut buffer, 23);
        assert_eq!(copy(&buffer), (0, 16, 16)); // copied whole, no fingerprint taken
        step(&mut buffer, 24);
        let was = data(256 << 10, 23); // its first chunk as it was at the last copy
        buffer[..16 << 10].copy_from_slice(&was[..16 << 10]);
        assert_eq!(copy(&buffer), (0, 16, 15)); // 15 of 16 new: still rewritten
        assert_eq!(copy(&buffer), (0, 16, 0)); // it stopped: copied whole once more, none new
        assert_eq!(copy(&buffer), (16, 0, 0)); // fingerprinted again: found, nothing copied
    }

    #[test]
    fn a_told_buffer_keeps_the_chunks_whose_blocks_kept_their_versions_unread() {
        let _one = watching_alone();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 64 << 10).unwrap();
        // 1 MiB in 16 chunks, told in 8 blocks of 128 KiB (a GPU mirror's are 1 MiB); no
        // page watched, as where CUDA writes it.
        let mut buffer = data(1 << 20, 30);
        let (addr, len) = (buffer.as_ptr() as usize, buffer.len());
        let mut versions = vec![1u64; 8];
        told::tell(addr, len, 128 << 10, versions.clone());
        let copy = |buffer: &[u8]| {
            let staged = stage_unwatched(&s, buffer);
            // Chunks copied with no fingerprint (known or taken): those told written.
            let fps = staged.fingerprints.as_ref().unwrap().1.iter();
            let unfingerprinted = fps.filter(|f| f.is_none()).count();
            let copied = (staged.copied_bytes() - 1) >> 16;
            let unread = staged.unread_bytes() >> 16;
            let put = s.put_staged(staged).unwrap();
            s.flush().unwrap();
            let other = tempfile::tempdir().unwrap();
            let direct = Store::create_with_chunk_size(other.path(), 64 << 10).unwrap();
            assert_eq!(put.id, direct.put_record(b"p", &[buffer]).unwrap().id);
            (unfingerprinted, copied, unread, put.new_bytes >> 16)
        };
        // No written copy to go by: fingerprinted.
        assert_eq!(copy(&buffer), (0, 16, 0, 16));
        // Every block kept its version: nothing read.
        assert_eq!(copy(&buffer), (0, 0, 16, 0));
        // Block 3 (chunks 6 and 7) written again, and told.
        buffer[(3 << 17) + 5] ^= 0xff;
        versions[3] = 2;
        told::tell(addr, len, 128 << 10, versions.clone());
        // Both copied without fingerprints, the rest unread; chunk 7, rewritten with the same
        // bytes, is found stored once hashed.
        assert_eq!(copy(&buffer), (2, 2, 14, 1));
        assert_eq!(copy(&buffer), (0, 0, 16, 0));
        // Freed, say, and the memory used again for other bytes: not taken for what was told.
        told::forget(addr, len);
        buffer[5] ^= 0xff;
        assert_eq!(copy(&buffer), (0, 1, 0, 1));
        assert_eq!(
            told::before_fingerprints(watch::Buffer {
                addr,
                len,
                chunk_size: 64 << 10,
                store: s.token,
            }),
            None
        );
    }

    #[test]
    fn a_buffer_the_store_holds_is_read_unwatched_from_the_second_copy() {
        let _one = watching_alone();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 1 << 20).unwrap();
        if crate::page_writes::Pages::open().is_err() {
            eprintln!("page watching unavailable here");
            return;
        }
        let mut buffer = memmap2::MmapMut::map_anon(16 << 20).unwrap();
        buffer.copy_from_slice(&data(16 << 20, 9));
        s.put_record(b"p", &[&buffer]).unwrap(); // as a forked snapshot writes it
        s.flush().unwrap();
        let copy = |buffer: &[u8]| copy_watched(&s, buffer);
        assert_eq!(copy(&buffer), (0, 0)); // protected, then fingerprinted: found stored
        buffer[(4 << 20) + 1] ^= 0xff;
        assert_eq!(copy(&buffer), (1, 15));
    }

    #[test]
    fn a_forked_child_is_lent_the_ids_of_the_chunks_not_written_since_the_last_copy() {
        let _one = watching_alone();
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create_with_chunk_size(&dir.path().join("store"), 1 << 20).unwrap();
        if crate::page_writes::Pages::open().is_err() {
            eprintln!("page watching unavailable here");
            return;
        }
        let mut buffer = memmap2::MmapMut::map_anon(8 << 20).unwrap();
        buffer.copy_from_slice(&data(8 << 20, 10));
        let mut ids = Vec::new();
        for _ in 0..2 {
            let staged = s
                .stage_from(
                    b"p",
                    &[BufferSource::Bytes(&buffer)],
                    u64::MAX,
                    s.begin_copies(),
                    true,
                )
                .unwrap();
            let id = s.put_staged(staged).unwrap().id;
            ids = s.get_record(&id).unwrap().buffers[0].chunks.clone();
            s.flush().unwrap();
        }
        buffer[(3 << 20) + 5] ^= 0xff; // the program writes one chunk after the last copy
        let key = (buffer.as_ptr() as usize, buffer.len(), 1 << 20);
        let (me, root) = (std::process::id(), s.root.clone());
        assert_eq!(s.lend_to_child(), 7 << 20);
        let lent = watch::lent_to(&root, key, me + 1).expect("lent to a child");
        let expected: Vec<Option<Id>> = (0..8).map(|k| (k != 3).then_some(ids[k])).collect();
        assert_eq!(lent, expected);
        assert_eq!(
            watch::lent_to(&root, key, me),
            None,
            "not to the program itself"
        );
        let elsewhere = dir.path().join("another store");
        assert_eq!(
            watch::lent_to(&elsewhere, key, me + 1),
            None,
            "nor for another store"
        );
        watch::take_back_from_child();
        assert_eq!(watch::lent_to(&root, key, me + 1), None);
        // Nothing was protected again: the next copy finds the write.
        let staged = s
            .stage_from(
                b"p",
                &[BufferSource::Bytes(&buffer)],
                u64::MAX,
                s.begin_copies(),
                true,
            )
            .unwrap();
        assert_eq!(
            (staged.copied_bytes() - 1, staged.unread_bytes()),
            (1 << 20, 7 << 20)
        );
    }

    #[test]
    fn a_record_that_would_copy_more_than_asked_is_not_copied() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut buffer = data(8 * 1024, 5);
        s.put_record(b"p", &[&buffer]).unwrap();
        s.flush().unwrap();
        buffer[1024] ^= 0xff; // one chunk changes: 1 + 1024 bytes to copy
        let sources = [BufferSource::Bytes(&buffer)];
        assert!(s.stage_from(b"p", &sources, 1024, 0, false).is_none());
        let staged = s.stage_from(b"p", &sources, 1025, 0, false).unwrap();
        assert_eq!(staged.copied_bytes(), 1025);
        // A new buffer is found new by its fingerprints, before any of it is copied.
        let new = data(64 * 1024, 6);
        assert!(s
            .stage_from(b"q", &[BufferSource::Bytes(&new)], 32 * 1024, 0, false)
            .is_none());
    }

    #[test]
    fn compressible_chunks_hashed_here_or_in_a_child_are_not_copied_again() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let buffer: Vec<u8> = (0..8 * 1024).map(|i| (i / 100) as u8).collect(); // compresses
        let first = s.put_record(b"p", &[&buffer]).unwrap();
        let manifest = format!(r#"{{"records":["{}"]}}"#, first.id.to_hex());
        s.commit(manifest.as_bytes()).unwrap(); // saves the fingerprints, as a child's commit does
                                                // Written by another handle (a forked child): this one cannot spot-check a compressed
                                                // chunk, so it copies all of them, to hash them once the program has gone on.
        let program = Store::open(&dir.path().join("store")).unwrap();
        assert_eq!(
            program
                .stage(b"p", &[&buffer], u64::MAX)
                .unwrap()
                .copied_bytes(),
            1 + 8 * 1024
        );
        // What the child hashed, given to the program's handle: nothing is copied.
        assert!(program.add_proven_chunks(&s.proven_chunks()));
        let staged = program.stage(b"p", &[&buffer], u64::MAX).unwrap();
        assert_eq!(staged.copied_bytes(), 1);
        assert_eq!(program.put_staged(staged).unwrap().id, first.id);
        // Hashed by this handle itself (put_staged): not copied again either.
        let fresh = Store::open(&dir.path().join("store")).unwrap();
        let staged = fresh.stage(b"p", &[&buffer], u64::MAX).unwrap();
        assert_eq!(staged.copied_bytes(), 1 + 8 * 1024);
        fresh.put_staged(staged).unwrap();
        assert_eq!(
            fresh
                .stage(b"p", &[&buffer], u64::MAX)
                .unwrap()
                .copied_bytes(),
            1
        );
        assert!(!fresh.add_proven_chunks(b"not that"));
    }
}
