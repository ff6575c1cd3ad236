//! Data parallelism on short-lived scoped threads. No pool: a pool's threads do not survive
//! `fork`, and the store is used in forked children.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;

/// The CPU time of every worker thread that has ended, in nanoseconds: what the store's threads
/// took from the program's cores, beyond the calling thread's own (which the caller measures).
static WORKERS_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// The CPU seconds the store's worker threads have used in this process so far (a forked child
/// starts from its parent's count): a snapshot written by a thread of the program is charged
/// the difference, as a forked one is charged its child's CPU.
pub fn workers_cpu_seconds() -> f64 {
    WORKERS_CPU_NS.load(Ordering::Relaxed) as f64 / 1e9
}

/// This thread's CPU time so far, in nanoseconds (0 where the clock is not there).
pub(crate) fn thread_cpu_ns() -> u64 {
    #[cfg(unix)]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime only writes the timespec it is given, which lives on this
        // stack for the whole call; CLOCK_THREAD_CPUTIME_ID is the calling thread's clock.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        if rc == 0 {
            return now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        }
    }
    0
}

/// How many threads the store uses: one per core, at most 8.
pub(crate) fn workers() -> usize {
    thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// `f` over `items` on up to [`workers`] threads, each with its own state from `init`. Results
/// come back in the order of `items`. Runs inline when there is one item or one core; when the OS
/// refuses a thread, the threads that did start (and this one) do all the work.
pub(crate) fn map_with<T, R, S>(
    items: &mut [T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &mut T) -> R + Sync,
) -> Vec<R>
where
    T: Send,
    R: Send,
{
    map_on(workers(), items, init, f)
}

/// Threads for work that waits on I/O (requests to a remote store) rather than the CPU.
pub(crate) const IO_THREADS: usize = 16;

/// [`map_with`] on up to `threads` threads (for requests, which wait rather than compute:
/// [`IO_THREADS`], whatever the cores).
pub(crate) fn map_on<T, R, S>(
    threads: usize,
    items: &mut [T],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &mut T) -> R + Sync,
) -> Vec<R>
where
    T: Send,
    R: Send,
{
    let threads = threads.min(items.len());
    if threads <= 1 {
        let mut state = init();
        return items.iter_mut().map(|item| f(&mut state, item)).collect();
    }
    // A few shares per thread balance uneven work (compressible and incompressible chunks).
    let per_share = items.len().div_ceil(threads * 4);
    let mut shares: Vec<(usize, &mut [T])> = items.chunks_mut(per_share).enumerate().collect();
    let n_shares = shares.len();
    shares.reverse(); // popped from the end: in order, which keeps file reads sequential
    let queue = Mutex::new(shares);
    let results: Mutex<Vec<Option<Vec<R>>>> = Mutex::new((0..n_shares).map(|_| None).collect());
    let work = || {
        let mut state = None;
        loop {
            let next = queue.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some((i, share)) = next else { break };
            let state = state.get_or_insert_with(&init);
            let out: Vec<R> = share.iter_mut().map(|item| f(state, item)).collect();
            results.lock().unwrap_or_else(PoisonError::into_inner)[i] = Some(out);
        }
    };
    thread::scope(|scope| {
        for _ in 1..threads {
            // A refused thread is no loss: the queue is drained by whoever runs.
            let _ = thread::Builder::new().spawn_scoped(scope, || {
                work();
                WORKERS_CPU_NS.fetch_add(thread_cpu_ns(), Ordering::Relaxed);
            });
        }
        work();
    });
    results
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .into_iter()
        .flatten()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order() {
        let mut items: Vec<u64> = (0..1000).collect();
        let out = map_with(
            &mut items,
            || 0u64,
            |calls, x| {
                *calls += 1;
                *x * 2
            },
        );
        assert_eq!(out, (0..1000).map(|x| x * 2).collect::<Vec<_>>());
        let mut one = [7u64];
        assert_eq!(map_with(&mut one, || (), |_, x| *x), vec![7]);
        let mut none: [u64; 0] = [];
        assert!(map_with(&mut none, || (), |_, x| *x).is_empty());
    }
}
