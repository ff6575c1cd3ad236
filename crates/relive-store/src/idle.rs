//! Compression on idle cores.
//!
//! zstd runs at 0.2-0.7 GB/s a core, several times the hashing and writing of the same bytes:
//! compressing the first snapshot of PyTorch's MNIST example (188 MB of normalized images)
//! took 1 s of a forked child's CPU, and on a machine whose cores the program keeps busy
//! (PyTorch's intra-op threads, OpenMP) every second of it is taken from the program. Yet
//! most machines a snapshot is written on have cores to spare (a GPU job's CPUs wait on the
//! GPU; a single-threaded program leaves the others idle).
//!
//! So new chunks are compressed by threads of the lowest priority there is (Linux's
//! `SCHED_IDLE`: they run only on a core nothing else wants; measured here, such a thread
//! beside a 2-thread PyTorch loop on 2 cores left its time unchanged, where a normal one
//! doubled it), while the writer takes their results in order. Where a chunk's compression has
//! not come back within [`STALL`] (the program has every core), the writer stores it raw and
//! goes on without waiting, until the threads are seen to make progress again (it looks every
//! [`PROBE_EVERY`], in this and the next records): the snapshot is written about as fast as
//! without compression, only larger. Each chunk is copied for its thread, so that a thread
//! never outlives what it reads: the writer never waits for a thread that the scheduler keeps
//! from running.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use zstd::bulk::Compressor;

use crate::pack::{self, Stored};
use crate::parallel;

/// How long the writer waits for a chunk an idle thread is compressing (a 1 MiB chunk takes
/// 2-5 ms on a free core) before it takes the cores to be busy and stores the chunk raw.
const STALL: Duration = Duration::from_millis(20);

/// Once the threads were found starved, the writer waits for them again (at most [`STALL`])
/// only this long after: a snapshot of many records would otherwise wait at each.
const PROBE_EVERY: Duration = Duration::from_millis(200);

/// Batches whose new chunks come to less than this are compressed by the writer itself, as
/// before there were idle threads: a few milliseconds at most, not worth threads.
const SMALL: usize = 256 << 10;

/// When this process last found the threads starved (nanoseconds since [`epoch`]); 0 when they
/// have made progress since.
static STALLED_AT: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64 + 1 // never 0
}

/// The CPU time the idle-priority threads have spent compressing, in nanoseconds.
static IDLE_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// The CPU seconds this process has spent compressing at idle priority: time no other thread
/// wanted, so not charged to the program (a forked child starts from its parent's count).
pub fn idle_cpu_seconds() -> f64 {
    IDLE_CPU_NS.load(Ordering::Relaxed) as f64 / 1e9
}

/// What the writer and its threads share for one batch of chunks.
struct Shared {
    /// Each chunk's compression: None until done; then its compressed bytes, or None where
    /// compressing did not pay.
    results: Mutex<Vec<Option<Option<Vec<u8>>>>>,
    done: Condvar,
    /// Chunks compressed so far: progress, which tells a starved thread from a busy one.
    completed: AtomicUsize,
    /// Chunks the writer stored raw before their thread got to them: skipped.
    given_up: Vec<AtomicBool>,
}

/// Stores each of `pieces`, in order, with `put`: compressed at `level` by an idle-priority
/// thread where that pays and a thread got to it in time, raw otherwise (a batch under
/// [`SMALL`]: compressed by the writer).
pub(crate) fn compress_where_idle<'a, E>(
    pieces: &[&'a [u8]],
    level: i32,
    mut put: impl FnMut(usize, Stored<'a>) -> Result<(), E>,
) -> Result<(), E> {
    if pieces.iter().map(|p| p.len()).sum::<usize>() < SMALL {
        for (i, piece) in pieces.iter().enumerate() {
            put(
                i,
                zstd(level, piece).map_or(Stored::Raw(piece), Stored::Zstd),
            )?;
        }
        return Ok(());
    }
    let threads = parallel::workers().min(pieces.len());
    let compress = move |bytes: &[u8]| zstd(level, bytes);
    write_in_order(pieces, threads, true, &STALLED_AT, compress, put)
}

/// `bytes` compressed at `level`, or None where that does not pay (`pack::compress`), with this
/// thread's own compressor.
fn zstd(level: i32, bytes: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static CCTX: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    }
    CCTX.with(|cctx| {
        let mut cctx = cctx.borrow_mut();
        if cctx.is_none() {
            *cctx = Compressor::new(level).ok();
        }
        match pack::compress(cctx.as_mut(), bytes) {
            Stored::Zstd(compressed) => Some(compressed),
            Stored::Raw(_) => None,
        }
    })
}

/// [`compress_where_idle`] with `threads` threads (of idle priority where `lower`), each
/// piece compressed by `compress`; `stalled_at` as [`STALLED_AT`].
fn write_in_order<'a, E, F>(
    pieces: &[&'a [u8]],
    threads: usize,
    lower: bool,
    stalled_at: &AtomicU64,
    compress: F,
    mut put: impl FnMut(usize, Stored<'a>) -> Result<(), E>,
) -> Result<(), E>
where
    F: Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync + 'static,
{
    let n = pieces.len();
    let shared = Arc::new(Shared {
        results: Mutex::new((0..n).map(|_| None).collect()),
        done: Condvar::new(),
        completed: AtomicUsize::new(0),
        given_up: (0..n).map(|_| AtomicBool::new(false)).collect(),
    });
    let (jobs, queue) = mpsc::channel::<(usize, Vec<u8>)>();
    let queue = Arc::new(Mutex::new(queue));
    let compress = Arc::new(compress);
    let threads = (0..threads)
        .filter(|_| {
            let (shared, queue, compress) = (
                Arc::clone(&shared),
                Arc::clone(&queue),
                Arc::clone(&compress),
            );
            thread::Builder::new()
                .name("relive-compress".into())
                .spawn(move || compress_jobs(&shared, &queue, lower, &*compress))
                .is_ok() // a refused thread: fewer chunks compressed
        })
        .count();
    let ahead = 2 * threads; // chunks handed out beyond the one awaited
    let mut stalled = threads == 0 || stalled_at.load(Ordering::Relaxed) != 0;
    let (mut handed, mut seen) = (0, 0);
    let outcome = (|| {
        for (i, piece) in pieces.iter().enumerate() {
            // Starved a while ago: see whether the threads run again, waiting for one chunk.
            let since = now_ns().saturating_sub(stalled_at.load(Ordering::Relaxed));
            let probe = stalled && threads > 0 && since >= PROBE_EVERY.as_nanos() as u64;
            if !stalled || probe {
                while handed < n && handed <= i + ahead {
                    if jobs
                        .send((handed, copy_of(&SPARE, pieces[handed])))
                        .is_err()
                    {
                        break; // every thread has ended (cannot happen while `jobs` lives)
                    }
                    handed += 1;
                }
            }
            let wait = if stalled && !probe {
                Duration::ZERO
            } else {
                STALL
            };
            let stored = match (i < handed).then(|| take(&shared, i, wait)).flatten() {
                Some(Some(compressed)) => Stored::Zstd(compressed),
                Some(None) => Stored::Raw(piece),
                None => {
                    shared.given_up[i].store(true, Ordering::Relaxed);
                    if !wait.is_zero() {
                        stalled_at.store(now_ns(), Ordering::Relaxed);
                    }
                    stalled = true;
                    Stored::Raw(piece)
                }
            };
            put(i, stored)?;
            let completed = shared.completed.load(Ordering::Relaxed);
            if completed != seen {
                (seen, stalled) = (completed, false); // the threads run again: wait for them
                stalled_at.store(0, Ordering::Relaxed);
            }
        }
        Ok(())
    })();
    // Whatever is still queued is skipped; the threads end once the queue is empty.
    for given_up in &shared.given_up {
        given_up.store(true, Ordering::Relaxed);
    }
    drop(jobs);
    outcome
}

/// Buffers that chunks were copied into for the threads, back from them: a new buffer costs a
/// page fault every 4 KiB as the copy first writes it (measured here: 0.06-0.13 s of kernel
/// time for 292 MB, a third of what writing them took at normal priority), a reused one only
/// the copy. A few are kept ([`SPARE_BYTES`]), for the process's life.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// What [`SPARE`] keeps at most: enough for the chunks in flight at the default chunk size.
const SPARE_BYTES: usize = 16 << 20;

/// `piece` in a buffer of its own, one of `spare` where there is one ([`SPARE`]). Never
/// waits for the lock (`try_lock`): a process forked while one of its threads held it would
/// wait forever.
fn copy_of(spare: &Mutex<Vec<Vec<u8>>>, piece: &[u8]) -> Vec<u8> {
    let reused = spare.try_lock().ok().and_then(|mut spare| spare.pop());
    let mut copy = reused.unwrap_or_default();
    copy.clear();
    copy.extend_from_slice(piece);
    copy
}

/// Keeps `buffer` in `spare` for [`copy_of`], within [`SPARE_BYTES`]; frees it otherwise.
fn give_back(spare: &Mutex<Vec<Vec<u8>>>, buffer: Vec<u8>) {
    if let Ok(mut spare) = spare.try_lock() {
        let kept: usize = spare.iter().map(Vec::capacity).sum();
        if kept + buffer.capacity() <= SPARE_BYTES {
            spare.push(buffer);
        }
    }
}

/// Chunk `i`'s compression, waiting at most `wait` for it; None if it has not come back.
fn take(shared: &Shared, i: usize, wait: Duration) -> Option<Option<Vec<u8>>> {
    let deadline = Instant::now() + wait;
    let mut results = shared
        .results
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    loop {
        if let Some(result) = results[i].take() {
            return Some(result);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        results = shared
            .done
            .wait_timeout(results, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// An idle-priority thread (where `lower`): compresses the chunks it is handed until the queue
/// closes.
fn compress_jobs(
    shared: &Shared,
    queue: &Mutex<Receiver<(usize, Vec<u8>)>>,
    lower: bool,
    compress: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) {
    if lower {
        lower_priority();
    }
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok((i, bytes)) = job else { break };
        if shared.given_up[i].load(Ordering::Relaxed) {
            give_back(&SPARE, bytes);
            continue;
        }
        let started = parallel::thread_cpu_ns();
        let compressed = compress(&bytes);
        give_back(&SPARE, bytes);
        let spent = parallel::thread_cpu_ns().saturating_sub(started);
        IDLE_CPU_NS.fetch_add(spent, Ordering::Relaxed);
        shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[i] = Some(compressed);
        shared.completed.fetch_add(1, Ordering::Relaxed);
        shared.done.notify_all();
    }
}

/// Makes the calling thread run only where no other thread wants a core (best effort).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler only reads the sched_param it is given, which lives on
        // this stack for the whole call; pid 0 is the calling thread. Lowering one's own
        // priority needs no privilege; a refusal leaves the thread as it was.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_is_put_once_in_order_compressed_where_that_pays() {
        let compressible: Vec<u8> = (0..300_000u32).map(|i| (i / 1000) as u8).collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let pieces: Vec<&[u8]> = (0..20)
            .map(|i| {
                if i % 2 == 0 {
                    &compressible[..]
                } else {
                    &noise[..]
                }
            })
            .collect();
        let mut seen = Vec::new();
        compress_where_idle(&pieces, 1, |i, stored| {
            let raw = match &stored {
                Stored::Zstd(z) => zstd::bulk::decompress(z, pieces[i].len()).unwrap(),
                Stored::Raw(r) => r.to_vec(),
            };
            assert_eq!(raw, pieces[i]);
            seen.push((i, matches!(stored, Stored::Zstd(_))));
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        assert!(seen.iter().all(|&(i, zstd)| !zstd || i % 2 == 0)); // noise is never compressed
    }

    #[test]
    fn a_chunk_not_back_in_time_is_stored_raw_and_so_are_the_next_until_the_threads_progress() {
        // One thread, whose first chunk takes until the writer has put three (a program
        // holding every core, then letting go).
        let release = Arc::new(AtomicBool::new(false));
        let held = Arc::clone(&release);
        let compress = move |bytes: &[u8]| {
            while !held.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(1));
            }
            Some(bytes[..1].to_vec())
        };
        let data: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 4096]).collect();
        let pieces: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        let mut seen = Vec::new();
        let stalled_at = AtomicU64::new(0);
        write_in_order(&pieces, 1, false, &stalled_at, compress, |i, stored| {
            seen.push((i, matches!(stored, Stored::Zstd(_))));
            if let Stored::Zstd(bytes) = stored {
                assert_eq!(bytes, vec![i as u8]); // chunk i's own result
            }
            if i == 2 {
                release.store(true, Ordering::Relaxed);
            }
            thread::sleep(Duration::from_millis(2)); // writing takes time
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(
            seen.iter().map(|s| s.0).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        assert!(seen[..3].iter().all(|&(_, zstd)| !zstd), "{seen:?}"); // raw: not back within STALL
        assert!(seen[19].1, "{seen:?}"); // the thread runs again: waited for
    }

    #[test]
    fn once_starved_the_next_records_do_not_wait_until_a_probe_finds_the_threads_running() {
        let data = vec![3u8; 4096];
        let pieces: Vec<&[u8]> = vec![&data; 5];
        let compressed = |stalled_at: &AtomicU64| {
            let mut zstd = Vec::new();
            write_in_order(
                &pieces,
                1,
                false,
                stalled_at,
                |b| Some(b[..1].to_vec()),
                |_, s| {
                    zstd.push(matches!(s, Stored::Zstd(_)));
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
            zstd
        };
        let stalled_at = AtomicU64::new(now_ns()); // starved just now: no wait, all raw
        assert_eq!(compressed(&stalled_at), vec![false; 5]);
        assert_ne!(stalled_at.load(Ordering::Relaxed), 0);
        thread::sleep(PROBE_EVERY); // time to look again: they run
        assert!(compressed(&stalled_at)[4]);
        assert_eq!(stalled_at.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn buffers_come_back_for_the_next_copies_and_hold_only_what_they_copy() {
        let spare = Mutex::new(Vec::new());
        let first = copy_of(&spare, &[1u8; 1000]);
        let at = first.as_ptr();
        give_back(&spare, first);
        let again = copy_of(&spare, &[2u8; 10]);
        assert_eq!((again.as_ptr(), &again[..]), (at, &[2u8; 10][..])); // the same buffer, this chunk
        give_back(&spare, again);
        give_back(&spare, vec![0u8; SPARE_BYTES]); // beyond what is kept: freed
        assert_eq!(spare.lock().unwrap().len(), 1);
        let _held = spare.lock().unwrap(); // as a thread would hold it at a fork
        assert_eq!(copy_of(&spare, &[3u8; 5]), vec![3u8; 5]); // a new buffer, not a wait
    }

    #[test]
    fn an_error_from_put_stops_the_writing() {
        let data = vec![7u8; 100_000];
        let pieces: Vec<&[u8]> = vec![&data; 10];
        let mut calls = 0;
        let outcome = compress_where_idle(&pieces, 1, |i, _| {
            calls += 1;
            if i == 3 {
                Err("disk full")
            } else {
                Ok(())
            }
        });
        assert_eq!(outcome, Err("disk full"));
        assert_eq!(calls, 4);
    }
}
