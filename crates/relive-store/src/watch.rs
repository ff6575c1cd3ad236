//! Large buffers watched for writes between copied snapshots, and what their chunks were.
//!
//! A copied snapshot asks, for each large buffer, which chunks are known unchanged since the
//! last copy ([`before_fingerprints`]): those keep the ids they had, and only the others are
//! fingerprinted (a pass over 1 GB: 36 ms) and copied. What the kernel tells is in
//! `page_writes.rs`; this is the bookkeeping, process-wide, as the kernel's is.
//!
//! Watching costs the program a fault at its first write to each page after each copied
//! snapshot (about 1.5 µs, 0.4 s for 1 GiB rewritten, where fingerprinting it costs 36 ms),
//! and splits the huge pages it writes. So only buffers found quiet are watched. A large
//! buffer is protected at a copy before it is fingerprinted (so that a write by another thread
//! while the program pauses is never missed), unless the last copy found it busy; where the
//! fingerprints then find more than an eighth of its chunks changed, it is let go at once,
//! before the program has written a page of it, and otherwise watched from then on. A buffer
//! seen first, whose chunks are new to the store, is let go the same way but protected again
//! at the next copy, whose fingerprints tell. Watching stops where a quarter of its chunks or
//! more were written. A buffer not seen at a copy is no longer watched. So a buffer the store
//! holds (written by a forked snapshot) is read unwatched from the next copy on, and one
//! first copied from the copy after next: PyTorch's MNIST example fingerprinted its 250 MB of
//! images at two copies while the watch waited for one copy to prove them quiet and the next
//! to protect them, and k-means its 305 MB after its first (forked) snapshot.
//!
//! Each copied snapshot is one "copies" number ([`begin_copies`]): a buffer found in two
//! records of one snapshot gets one answer; a buffer whose chunks were not learned (the copy
//! was given up, or not yet written when the next began) is fingerprinted whole. The chunk ids
//! given are checked against the store's index by the caller, as fingerprint hits are.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock, PoisonError};

use crate::id::Id;

/// Smaller buffers are fingerprinted (8 MiB: 0.3 ms) rather than watched.
pub(crate) const WATCH_FROM: usize = 8 << 20;

/// Buffers at least this long are judged at each copy ([`after_fingerprints`]), watched or
/// not, so that one rewritten at every step is copied without a fingerprint ([`rewritten`]).
const JUDGED_FROM: usize = 64 << 10;

/// What a chunk was when its buffer was last protected: its fingerprint (with the seed it was
/// taken with) where one was taken, and its id.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) struct Was {
    pub(crate) fingerprint: Option<(u64, u128)>,
    pub(crate) id: Id,
}

/// What the watch knows of one chunk of a buffer.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Seen {
    /// No page of it was written since it was this.
    Unchanged(Was),
    /// A page of it was written: it is copied, not fingerprinted (it rarely holds what it held).
    Written,
    /// Nothing known: it is fingerprinted.
    Unknown,
}

/// Which buffer: where, how long, cut how, for which store (ids are one store's).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Buffer {
    pub(crate) addr: usize,
    pub(crate) len: usize,
    pub(crate) chunk_size: usize,
    pub(crate) store: u64,
}

impl Buffer {
    fn chunks(&self) -> usize {
        self.len.div_ceil(self.chunk_size)
    }
}

struct Watched {
    buffer: Buffer,
    /// The copies number at which its pages were last protected.
    armed_in: u64,
    /// Its chunks as they were then, once learned from the copy's write.
    chunks: Option<Vec<Was>>,
    /// The answer given at `armed_in`, for another record of the same snapshot.
    answer: Vec<Seen>,
}

#[derive(Default)]
struct Watch {
    #[cfg(target_os = "linux")]
    pages: Option<crate::page_writes::Pages>,
    tried: bool,
    /// By start address; no two overlap (a scan of one would protect the other's pages again).
    watched: BTreeMap<usize, Watched>,
    /// What the last copy that saw a buffer found of it, and that copy's number.
    seen: HashMap<Buffer, (u64, Found)>,
    /// `/proc/self/maps` as read at one copy (the program stands still meanwhile).
    #[cfg(target_os = "linux")]
    maps: Option<(u64, String)>,
}

/// What a copy's fingerprints (or scan) found of a buffer.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Found {
    /// At most an eighth of its chunks changed (or, watched, written).
    Quiet,
    /// Seen for the first time, its chunks not all stored: the next copy tells.
    New,
    /// More changed: fingerprinted, not watched, at the next copy.
    Busy,
    /// Found busy at the last copy too, and seven eighths of its chunks or more changed now:
    /// copied whole at the next, not fingerprinted ([`rewritten`]), and judged again once
    /// hashed (a buffer that stops changing is copied whole once more, then fingerprinted).
    Rewritten,
}

static WATCH: LazyLock<Mutex<Watch>> = LazyLock::new(|| Mutex::new(Watch::default()));
static COPIES: AtomicU64 = AtomicU64::new(0);
static PAGE: OnceLock<usize> = OnceLock::new();
/// The process that watches: the first to take the lock. A forked child (whose mappings lost
/// the watch) never takes it, which a thread of the parent may have held at the fork.
static OWNER: AtomicU32 = AtomicU32::new(0);

/// Starts a copied snapshot: returns its copies number. Buffers not seen at the last one are
/// no longer watched.
pub(crate) fn begin_copies() -> u64 {
    let copies = COPIES.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(mut watch) = lock() {
        let stale: Vec<usize> = watch
            .watched
            .values()
            .filter(|w| w.armed_in + 1 < copies)
            .map(|w| w.buffer.addr)
            .collect();
        for addr in stale {
            watch.stop(addr);
        }
        watch.seen.retain(|_, (at, _)| *at + 1 >= copies);
    }
    copies
}

/// What the kernel says of each chunk of `buffer` since it was last protected; None where
/// the buffer is not watched. Protects a buffer not found busy before it is fingerprinted,
/// to watch it from now on (`after_fingerprints` lets it go if it was not quiet).
pub(crate) fn before_fingerprints(buffer: Buffer, copies: u64) -> Option<Vec<Seen>> {
    if buffer.len < WATCH_FROM || copies == 0 || copies != COPIES.load(Ordering::Relaxed) {
        return None;
    }
    let mut watch = lock()?;
    watch.answer(buffer, copies)
}

/// Whether `buffer` was found rewritten at the last copy ([`Found::Rewritten`]): a training
/// step rewrites every weight, gradient and optimizer moment, and fingerprinting them during
/// the pause (a pass over each at memory speed) only finds them changed. Such a buffer is
/// copied whole and hashed once written, where its few unchanged chunks are found by their
/// ids and not written again: the same record, without the fingerprints' pass.
pub(crate) fn rewritten(buffer: Buffer, copies: u64) -> bool {
    if buffer.len < JUDGED_FROM || copies == 0 || copies != COPIES.load(Ordering::Relaxed) {
        return false;
    }
    lock().is_some_and(|watch| watch.seen.get(&buffer) == Some(&(copies - 1, Found::Rewritten)))
}

/// What the fingerprints of a buffer fingerprinted whole found: `changed` of its chunks new
/// (or, for one copied whole as [`rewritten`], what hashing its copy found). One protected at
/// this copy (`answer`) and not found quiet is let go before the program goes on.
pub(crate) fn after_fingerprints(buffer: Buffer, copies: u64, changed: usize) {
    if buffer.len < JUDGED_FROM || copies == 0 {
        return;
    }
    if let Some(mut watch) = lock() {
        let before = watch.seen.get(&buffer).copied();
        let first_sight = before.is_none_or(|(at, _)| at + 1 < copies);
        let found = if changed * 8 <= buffer.chunks() {
            Found::Quiet
        } else if first_sight || before == Some((copies, Found::New)) {
            Found::New
        } else if changed * 8 >= buffer.chunks() * 7
            && matches!(before, Some((at, Found::Busy | Found::Rewritten)) if at + 1 == copies)
        {
            Found::Rewritten
        } else {
            Found::Busy
        };
        if found != Found::Quiet {
            if let Some(w) = watch.watched.get(&buffer.addr) {
                if w.buffer == buffer && w.armed_in == copies {
                    watch.stop(buffer.addr);
                }
            }
        }
        watch.seen.insert(buffer, (copies, found));
    }
}

/// Which chunks of `buffer` hold a byte of the `written` ranges.
fn touched(buffer: &Buffer, written: &[(usize, usize)]) -> Vec<bool> {
    let mut touched = vec![false; buffer.chunks()];
    for &(from, to) in written {
        let first = from.saturating_sub(buffer.addr) / buffer.chunk_size;
        let last = (to - 1).saturating_sub(buffer.addr) / buffer.chunk_size;
        for chunk in touched.iter_mut().take(last + 1).skip(first) {
            *chunk = true;
        }
    }
    touched
}

/// What the watch knew when the program forked a snapshot's child: per watched buffer of
/// one store (by where it is: the child opens a handle of its own), the id of each chunk no
/// page of which was written since its last copy. The child cannot ask the kernel (its
/// mappings are not watched), and this is in its memory.
struct Lent {
    by: u32,
    store: PathBuf,
    buffers: HashMap<(usize, usize, usize), Vec<Option<Id>>>,
}

static LENT: Mutex<Option<Lent>> = Mutex::new(None);

/// Before the program forks a snapshot's child: what the watch knows of the chunks of the
/// buffers watched for the store handle `token` (at `store`), for the child to keep by id
/// rather than read (`lent`). Protects nothing again: the program's next copy finds the same
/// writes. Returns the bytes lent. As a copy's, it holds what the kernel said at the pause:
/// a write by another thread of the program between this and the fork is not seen (a copy
/// would not have seen it either).
pub(crate) fn lend_to_child(token: u64, store: &Path) -> u64 {
    let Some(watch) = lock() else {
        return 0;
    };
    let (mut buffers, mut bytes) = (HashMap::new(), 0);
    for w in watch.watched.values().filter(|w| w.buffer.store == token) {
        let Some(chunks) = &w.chunks else {
            continue; // not learned: its last copy is still being written
        };
        let Some(Ok(written)) = watch.changed_since(&w.buffer) else {
            continue;
        };
        let touched = touched(&w.buffer, &written);
        let ids: Vec<Option<Id>> = chunks
            .iter()
            .zip(&touched)
            .map(|(was, touched)| (!touched).then_some(was.id))
            .collect();
        bytes += ids.iter().filter(|id| id.is_some()).count() * w.buffer.chunk_size;
        let b = w.buffer;
        buffers.insert((b.addr, b.len, b.chunk_size), ids);
    }
    let (by, store) = (std::process::id(), store.to_path_buf());
    *LENT.lock().unwrap_or_else(PoisonError::into_inner) = Some(Lent { by, store, buffers });
    bytes as u64
}

/// After the fork, in the program: what was lent is the child's alone.
pub fn take_back_from_child() {
    *LENT.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// In a forked child: the ids of the chunks of `addr..addr + len` (cut every `chunk_size`
/// bytes) known unchanged in the store at `store` when it was forked (None for the others);
/// None where nothing was lent for it.
pub(crate) fn lent(
    store: &Path,
    addr: usize,
    len: usize,
    chunk_size: usize,
) -> Option<Vec<Option<Id>>> {
    lent_to(store, (addr, len, chunk_size), std::process::id())
}

pub(crate) fn lent_to(
    store: &Path,
    buffer: (usize, usize, usize),
    me: u32,
) -> Option<Vec<Option<Id>>> {
    // try_lock: no thread of the child can hold it, but one of the program could at the fork.
    let lent = LENT.try_lock().ok()?;
    let lent = lent
        .as_ref()
        .filter(|lent| lent.by != me && lent.store == store)?;
    lent.buffers.get(&buffer).cloned()
}

/// The chunks of a buffer as the copy numbered `copies` wrote them (after the write).
pub(crate) fn learned(buffer: Buffer, copies: u64, chunks: Vec<Was>) {
    if let Some(mut watch) = lock() {
        if let Some(w) = watch.watched.get_mut(&buffer.addr) {
            if w.buffer == buffer && w.armed_in == copies && chunks.len() == buffer.chunks() {
                w.chunks = Some(chunks);
            }
        }
    }
}

/// Forgets every buffer (a test's, whose memory the next test's may reuse).
#[cfg(test)]
pub(crate) fn forget_all() {
    if let Some(mut watch) = lock() {
        let addrs: Vec<usize> = watch.watched.keys().copied().collect();
        for addr in addrs {
            watch.stop(addr);
        }
        watch.seen.clear();
    }
}

/// Whether this process can watch its pages (a kernel that can, userfaultfd allowed, and
/// `RELIVE_WATCH_PAGES` not 0).
pub fn pages_watchable() -> bool {
    lock().is_some_and(|mut watch| watch.pages().is_some())
}

fn lock() -> Option<std::sync::MutexGuard<'static, Watch>> {
    let me = std::process::id();
    match OWNER.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => {}
        Err(owner) if owner == me => {}
        Err(_) => return None,
    }
    Some(WATCH.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Whether `RELIVE_WATCH_PAGES` leaves page watching on (it is unless 0).
pub(crate) fn watching_allowed() -> bool {
    std::env::var("RELIVE_WATCH_PAGES").map_or(true, |v| v.trim() != "0")
}

impl Watch {
    fn answer(&mut self, buffer: Buffer, copies: u64) -> Option<Vec<Seen>> {
        if let Some(w) = self.watched.get(&buffer.addr) {
            if w.buffer != buffer {
                return None; // another view of that memory: the watched one keeps its answers
            }
            if w.armed_in == copies {
                return Some(w.answer.clone());
            } else {
                return self.scan(buffer, copies);
            }
        }
        let last = self.seen.get(&buffer).filter(|(at, _)| at + 1 == copies);
        let busy = last.is_some_and(|(_, found)| matches!(found, Found::Busy | Found::Rewritten));
        if busy || self.overlaps(&buffer) {
            return None;
        }
        self.protect(&buffer, copies)?;
        self.watched.insert(
            buffer.addr,
            Watched {
                buffer,
                armed_in: copies,
                chunks: None,
                answer: vec![Seen::Unknown; buffer.chunks()],
            },
        );
        Some(vec![Seen::Unknown; buffer.chunks()])
    }

    /// What was written of `buffer` since its last protection, protecting nothing.
    #[cfg(target_os = "linux")]
    fn changed_since(&self, buffer: &Buffer) -> Option<std::io::Result<Vec<(usize, usize)>>> {
        Some(self.pages.as_ref()?.changed_since(buffer.addr, buffer.len))
    }

    #[cfg(not(target_os = "linux"))]
    fn changed_since(&self, _: &Buffer) -> Option<std::io::Result<Vec<(usize, usize)>>> {
        None
    }

    /// Starts watching `buffer`'s pages: protects them all.
    #[cfg(target_os = "linux")]
    fn protect(&mut self, buffer: &Buffer, copies: u64) -> Option<()> {
        self.pages()?;
        // Read once per copy: with PyTorch loaded it is thousands of lines.
        if self.maps.as_ref().is_none_or(|(at, _)| *at != copies) {
            self.maps = Some((copies, std::fs::read_to_string("/proc/self/maps").ok()?));
        }
        let (pages, (_, maps)) = (self.pages.as_ref()?, self.maps.as_ref()?);
        pages.watch_in(maps, buffer.addr, buffer.len).ok()
    }

    #[cfg(not(target_os = "linux"))]
    fn protect(&mut self, _: &Buffer, _: u64) -> Option<()> {
        None
    }

    /// Asks the kernel what was written since the last protection (protecting it again).
    fn scan(&mut self, buffer: Buffer, copies: u64) -> Option<Vec<Seen>> {
        let written = match self.pages()?.changed(buffer.addr, buffer.len) {
            Ok(written) => written,
            Err(_) => {
                self.stop(buffer.addr); // no longer all watched: nothing is known
                return None;
            }
        };
        let w = self.watched.get_mut(&buffer.addr)?;
        let was = w.chunks.take();
        w.armed_in = copies;
        let mut answer: Vec<Seen> = match was {
            Some(chunks) => chunks.into_iter().map(Seen::Unchanged).collect(),
            None => vec![Seen::Unknown; buffer.chunks()],
        };
        let touched = touched(&buffer, &written);
        for (chunk, touched) in answer.iter_mut().zip(&touched) {
            if *touched && matches!(chunk, Seen::Unchanged(_)) {
                *chunk = Seen::Written;
            }
        }
        if touched.iter().filter(|&&t| t).count() * 4 > buffer.chunks() {
            self.stop(buffer.addr); // rewritten: cheaper fingerprinted than watched
            self.seen.insert(buffer, (copies, Found::Busy));
        } else if let Some(w) = self.watched.get_mut(&buffer.addr) {
            w.answer.clone_from(&answer);
            self.seen.insert(buffer, (copies, Found::Quiet));
        }
        Some(answer)
    }

    /// Whether `buffer` shares a page with a watched one (which is then protected by that
    /// one's scans). Watched buffers never do, so the nearest one below its end tells.
    fn overlaps(&self, buffer: &Buffer) -> bool {
        let page = PAGE.get_or_init(page_size);
        let first_page = |addr: usize| addr / page * page;
        let end_page = |addr: usize, len: usize| (addr + len).div_ceil(*page) * page;
        let end = end_page(buffer.addr, buffer.len);
        let below = self.watched.range(..end).next_back();
        below.is_some_and(|(_, w)| end_page(w.buffer.addr, w.buffer.len) > first_page(buffer.addr))
    }

    fn stop(&mut self, addr: usize) {
        if let Some(w) = self.watched.remove(&addr) {
            #[cfg(target_os = "linux")]
            if let Some(pages) = &self.pages {
                pages.forget(w.buffer.addr, w.buffer.len);
            }
        }
    }

    #[cfg(target_os = "linux")]
    fn pages(&mut self) -> Option<&crate::page_writes::Pages> {
        if !self.tried {
            self.tried = true;
            if watching_allowed() {
                self.pages = crate::page_writes::Pages::open().ok();
            }
        }
        self.pages.as_ref()
    }

    #[cfg(not(target_os = "linux"))]
    fn pages(&mut self) -> Option<&NoPages> {
        None
    }
}

#[cfg(target_os = "linux")]
use crate::page_writes::page_size;
#[cfg(not(target_os = "linux"))]
fn page_size() -> usize {
    4096
}

#[cfg(not(target_os = "linux"))]
struct NoPages;
#[cfg(not(target_os = "linux"))]
impl NoPages {
    fn changed(&self, _: usize, _: usize) -> std::io::Result<Vec<(usize, usize)>> {
        Err(std::io::Error::other("not watched here"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(addr: usize, len: usize) -> Buffer {
        Buffer {
            addr,
            len,
            chunk_size: 1 << 20,
            store: 1,
        }
    }

    #[test]
    fn buffers_sharing_a_page_are_not_both_watched() {
        let page = page_size();
        let mut watch = Watch::default();
        let watched = buffer(100 * page + 16, 10 * page);
        watch.watched.insert(
            watched.addr,
            Watched {
                buffer: watched,
                armed_in: 1,
                chunks: None,
                answer: vec![],
            },
        );
        // Ends in the page the watched one starts in; starts in the page it ends in.
        assert!(watch.overlaps(&buffer(90 * page, 10 * page + 8)));
        assert!(watch.overlaps(&buffer(110 * page + 100, page)));
        assert!(watch.overlaps(&buffer(105 * page, page)));
        assert!(watch.overlaps(&buffer(50 * page, 100 * page)));
        // Next to it, on pages of their own.
        assert!(!watch.overlaps(&buffer(90 * page, 10 * page)));
        assert!(!watch.overlaps(&buffer(111 * page, page)));
    }
}
