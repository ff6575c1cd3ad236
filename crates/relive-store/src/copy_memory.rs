//! Memory that snapshots copy into, kept from one use to the next.
//!
//! A copied snapshot (`staged.rs`) copies what changed into memory of its own while the
//! program pauses, and every pack written around the page cache gathers its bytes in an
//! 8 MiB buffer (`pack_file.rs`). Into fresh memory a copy is bound by the kernel's
//! first-touch page faults: 107 MB in 65 ms here (1.6 GB/s), where the same copy into memory
//! already touched takes 17 ms. A program's copied snapshots mostly copy the same buffers each
//! time (DCGAN's 100 MB of weights, gradients and optimizer state, rewritten at every step),
//! and packs follow one another: the memory one used is kept for the next use of about its
//! size.
//!
//! What is kept costs the program no memory it needs: it is handed to the kernel with
//! `MADV_FREE` once written from, so the kernel takes it back first under memory pressure
//! (its cgroup's too) and gives fresh zeroed pages on the next touch; where it did not, the
//! copy writes it with no fault (30 ms for the 107 MB, against 65 ms fresh). A mapping not
//! reused by the next copied snapshot is unmapped at the one after ([`new_round`]), so what is
//! kept never outlives one snapshot that did not need it. A forked child starts from nothing
//! kept (its parent's mappings are shared with the parent, a copy on each write) and keeps
//! its own, unless a thread of the parent held the lock at the fork: then it keeps nothing.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use memmap2::MmapMut;

struct Kept {
    map: MmapMut,
    /// The round in which it was given back.
    round: u64,
}

struct Pool {
    kept: Vec<Kept>,
    round: u64,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    kept: Vec::new(),
    round: 0,
});
/// The process whose pool it is (a forked child takes it over, see `lock`).
static OWNER: AtomicU32 = AtomicU32::new(0);

fn lock() -> Option<MutexGuard<'static, Pool>> {
    let me = std::process::id();
    if OWNER.load(Ordering::Relaxed) == me {
        return Some(POOL.lock().unwrap_or_else(PoisonError::into_inner));
    }
    // The first use in this process. In a forked child the lock may have been held by a
    // thread of the parent, which will never release it here: never waited for.
    let mut pool = match POOL.try_lock() {
        Ok(pool) => pool,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    if OWNER.swap(me, Ordering::Relaxed) != 0 {
        pool.kept.clear(); // the parent's: writing them would copy each page on write
    }
    Some(pool)
}

/// Starts a copied snapshot: the mappings no copy took since the last round began are unmapped.
pub(crate) fn new_round() {
    if let Some(mut pool) = lock() {
        let round = pool.round;
        pool.kept.retain(|k| k.round >= round);
        pool.round += 1;
    }
}

/// Memory from [`take`]: a mapping, given back for a later use when dropped.
pub(crate) struct Memory {
    map: Option<MmapMut>, // Some until dropped
    fresh: bool,
}

impl Memory {
    /// Whether it was mapped for this use, none of its pages touched yet (see [`populate`]).
    pub(crate) fn fresh(&self) -> bool {
        self.fresh
    }
}

impl std::ops::Deref for Memory {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.map.as_deref().unwrap_or_default()
    }
}

impl std::ops::DerefMut for Memory {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.map.as_deref_mut().unwrap_or_default()
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            give_back(map);
        }
    }
}

/// Asks the kernel for the pages under `bytes`, part of a [`Memory::fresh`] mapping, at once
/// (`MADV_POPULATE_WRITE`, Linux 5.14 and later), before a copy writes them: faulted in a
/// page at a time they cost a third more (160 MB copied into fresh memory here: 82 ms, 60 ms
/// populated a MiB at a time). Not for kept memory, which it only slows (26 -> 32 ms).
/// Best effort: an older kernel refuses and the copy faults the pages in as before.
pub(crate) fn populate(bytes: &mut [u8]) {
    #[cfg(target_os = "linux")]
    {
        let page = 4096; // the smallest page size: an aligned start on any of them
        let start = bytes.as_mut_ptr() as usize & !(page - 1);
        let len = bytes.as_mut_ptr() as usize + bytes.len() - start;
        // SAFETY: `start` rounds `bytes` down to its page, which lies in the same private
        // anonymous mapping (mappings are page-aligned), as does the end rounded up by the
        // kernel. MADV_POPULATE_WRITE only faults in pages not yet present, as a write
        // would, and never changes a byte of one that is: a thread copying into a page of
        // it meanwhile loses nothing.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
        }
    }
}

/// A kept mapping of at least `len` bytes (the smallest that fits, and at most twice `len`),
/// or a fresh one asked for huge pages. None where the system gives no mapping.
pub(crate) fn take(len: usize) -> Option<Memory> {
    if let Some(mut pool) = lock() {
        // No more than twice the copy: a small copy would keep large memory busy for little.
        let fits = |k: &Kept| k.map.len() >= len && len.saturating_mul(2) >= k.map.len();
        let best = (0..pool.kept.len())
            .filter(|&i| fits(&pool.kept[i]))
            .min_by_key(|&i| pool.kept[i].map.len());
        if let Some(i) = best {
            return Some(Memory {
                map: Some(pool.kept.swap_remove(i).map),
                fresh: false,
            });
        }
    }
    let map = MmapMut::map_anon(len).ok()?;
    #[cfg(target_os = "linux")]
    {
        // Best effort: without transparent huge pages the mapping works as well.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    Some(Memory {
        map: Some(map),
        fresh: true,
    })
}

/// Keeps `map`, written from, for the next copied snapshot; its pages are the kernel's to
/// take back meanwhile.
fn give_back(map: MmapMut) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: MADV_FREE only tells the kernel that it may drop these pages' contents (a
        // later read gives zeros or the old bytes; nothing reads them before a copy writes
        // them again); `map` is this private anonymous mapping, alive for the whole call.
        if unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::Free) }.is_err() {
            return; // unmapped on drop, as without a pool
        }
    }
    if let Some(mut pool) = lock() {
        let round = pool.round;
        pool.kept.push(Kept { map, round });
    }
}

/// How many mappings of `len` bytes are kept.
#[cfg(test)]
pub(crate) fn kept(len: usize) -> usize {
    lock().map_or(0, |pool| {
        pool.kept.iter().filter(|k| k.map.len() == len).count()
    })
}

/// Lets go of everything kept (a test starts from nothing kept).
#[cfg(test)]
pub(crate) fn forget_all() {
    if let Some(mut pool) = lock() {
        pool.kept.clear();
    }
}
