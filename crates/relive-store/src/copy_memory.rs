//! Memory for copied snapshots, kept from one copied snapshot to the next.
//!
//! A copied snapshot (`staged.rs`) copies what changed into memory of its own while the
//! program pauses. Into fresh memory that copy is bound by the kernel's first-touch page
//! faults: 107 MB in 65 ms here (1.6 GB/s, transparent huge pages not granted on this VM),
//! where the same copy into memory already touched takes 17 ms. A program's copied snapshots
//! mostly copy the same buffers each time (DCGAN's 100 MB of weights, gradients and optimizer
//! state, rewritten at every step), so the memory a written snapshot copied into is kept for
//! the next one's copies of about the same sizes.
//!
//! What is kept costs the program no memory it needs: it is handed to the kernel with
//! `MADV_FREE` once written from, so the kernel takes it back first under memory pressure
//! (its cgroup's too) and gives fresh zeroed pages on the next touch; where it did not, the
//! copy writes it with no fault (30 ms for the 107 MB, against 65 ms fresh). A mapping not
//! reused by the next copied snapshot is unmapped at the one after ([`new_round`]), so what is
//! kept never outlives one snapshot that did not need it. Only the process that kept a mapping
//! reuses it: a forked child never takes the lock a thread of its parent may have held.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};

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
/// The process whose pool it is: the first to take the lock (see `watch.rs`'s `OWNER`).
static OWNER: AtomicU32 = AtomicU32::new(0);

fn lock() -> Option<std::sync::MutexGuard<'static, Pool>> {
    let me = std::process::id();
    match OWNER.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => {}
        Err(owner) if owner == me => {}
        Err(_) => return None,
    }
    Some(POOL.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Starts a copied snapshot: the mappings no copy took since the last round began are unmapped.
pub(crate) fn new_round() {
    if let Some(mut pool) = lock() {
        let round = pool.round;
        pool.kept.retain(|k| k.round >= round);
        pool.round += 1;
    }
}

/// A kept mapping of at least `len` bytes (the smallest that fits, and at most twice `len`),
/// or a fresh one asked for huge pages. None where the system gives no mapping.
pub(crate) fn take(len: usize) -> Option<MmapMut> {
    if let Some(mut pool) = lock() {
        // No more than twice the copy: a small copy would keep large memory busy for little.
        let fits = |k: &Kept| k.map.len() >= len && len.saturating_mul(2) >= k.map.len();
        let best = (0..pool.kept.len())
            .filter(|&i| fits(&pool.kept[i]))
            .min_by_key(|&i| pool.kept[i].map.len());
        if let Some(i) = best {
            return Some(pool.kept.swap_remove(i).map);
        }
    }
    let map = MmapMut::map_anon(len).ok()?;
    #[cfg(target_os = "linux")]
    {
        // Best effort: without transparent huge pages the mapping works as well.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    Some(map)
}

/// Keeps `map`, written from, for the next copied snapshot; its pages are the kernel's to
/// take back meanwhile.
pub(crate) fn give_back(map: MmapMut) {
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

/// The bytes kept for the next copies.
#[cfg(test)]
pub(crate) fn kept_bytes() -> usize {
    lock().map_or(0, |pool| pool.kept.iter().map(|k| k.map.len()).sum())
}

/// Lets go of everything kept (a test starts from nothing kept).
#[cfg(test)]
pub(crate) fn forget_all() {
    if let Some(mut pool) = lock() {
        pool.kept.clear();
    }
}
