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
//! without compression, only larger. What a thread reads is copied for it, so that a thread
//! never outlives what it reads: the writer never waits for a thread that the scheduler keeps
//! from running. A large chunk is first handed as its sample (`pack::sample`, 48 KiB), and
//! copied whole only where that compresses: most of a large state does not (trained weights,
//! optimizer moments, float noise), and copying each of its chunks for nothing cost the
//! writer a sixth of its CPU (`put_record` of a 107 MB float64 array of noise: 73-77 ms of
//! CPU with its workers, 60-66 ms handing samples). A chunk whose sample compresses is handed
//! whole as soon as the writer sees that, while it waits for an earlier one: handed only when
//! the writer got to it, compressible chunks were compressed one after the other (100 MB of
//! small integers held as floats: 340 ms where it takes 180).

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
    /// Each chunk's compression: None until done.
    results: Mutex<Vec<Option<Done>>>,
    done: Condvar,
    /// Chunks compressed so far: progress, which tells a starved thread from a busy one.
    completed: AtomicUsize,
    /// Chunks the writer stored raw before their thread got to them: skipped.
    given_up: Vec<AtomicBool>,
}

/// What a thread made of a chunk it was handed.
enum Done {
    Compressed(Vec<u8>),
    /// Compressing it does not pay (whole, or judged by its sample).
    Raw,
    /// Its sample compresses: the writer hands it whole.
    Wanted,
}

/// A chunk handed to a thread: its index, and the bytes copied for it, whole or its sample.
struct Job {
    index: usize,
    bytes: Vec<u8>,
    whole: bool,
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
    write_in_order(
        pieces,
        threads,
        true,
        &STALLED_AT,
        compress,
        pack::sample,
        put,
    )
}

/// `bytes` compressed at `level`, or None where that does not pay, with this thread's own
/// compressor. Not judged by a sample again (`pack::compress_judged`): what a thread is handed
/// is a sample, a chunk too short to have one, or a chunk whose sample compressed.
fn zstd(level: i32, bytes: &[u8]) -> Option<Vec<u8>> {
    thread_local! {
        static CCTX: RefCell<Option<Compressor<'static>>> = const { RefCell::new(None) };
    }
    CCTX.with(|cctx| {
        let mut cctx = cctx.borrow_mut();
        if cctx.is_none() {
            *cctx = Compressor::new(level).ok();
        }
        match pack::compress_judged(cctx.as_mut()?, bytes) {
            Stored::Zstd(compressed) => Some(compressed),
            Stored::Raw(_) => None,
        }
    })
}

/// [`compress_where_idle`] with `threads` threads (of idle priority where `lower`), each
/// piece compressed by `compress` (None: not worth it), first tried on `sample` of it where
/// that gives one (`pack::sample`); `stalled_at` as [`STALLED_AT`].
fn write_in_order<'a, E, F>(
    pieces: &[&'a [u8]],
    threads: usize,
    lower: bool,
    stalled_at: &AtomicU64,
    compress: F,
    sample: impl Fn(&[u8]) -> Option<Vec<u8>>,
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
    let (jobs, queue) = mpsc::channel::<Job>();
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
                    let job = match sample(pieces[handed]) {
                        Some(bytes) => Job {
                            index: handed,
                            bytes,
                            whole: false,
                        },
                        None => whole(handed, pieces[handed]),
                    };
                    if jobs.send(job).is_err() {
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
            let hand_whole = |j: usize| jobs.send(whole(j, pieces[j])).is_ok();
            let done = (i < handed)
                .then(|| take(&shared, i, handed, wait, hand_whole))
                .flatten();
            let stored = match done {
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

/// Chunk `index` handed whole, in a buffer of its own.
fn whole(index: usize, piece: &[u8]) -> Job {
    Job {
        index,
        bytes: copy_of(&SPARE, piece),
        whole: true,
    }
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

/// Chunk `i`'s compression (None inside: not worth it), waiting at most `wait` for it; None
/// if it has not come back. Meanwhile each chunk of `i..handed` whose sample came back compressible is handed whole
/// (`hand_whole`) as soon as it is seen, not when the writer gets to it: its compression runs
/// ahead of the writer, as when chunks were handed whole from the start. Handing chunk `i`
/// itself whole gives it `wait` again. With no wait (the threads starved), nothing is handed:
/// the writer stores what has not come back raw.
fn take(
    shared: &Shared,
    i: usize,
    handed: usize,
    wait: Duration,
    mut hand_whole: impl FnMut(usize) -> bool,
) -> Option<Option<Vec<u8>>> {
    let mut deadline = Instant::now() + wait;
    let lock = || {
        shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    };
    let mut results = lock();
    loop {
        let wanted: Vec<usize> = (i..handed)
            .filter(|&j| matches!(results[j], Some(Done::Wanted)))
            .collect();
        if !wanted.is_empty() && !wait.is_zero() {
            for &j in &wanted {
                results[j] = None;
            }
            drop(results); // the threads post results while chunks are copied
            for j in wanted {
                if !hand_whole(j) {
                    return None; // every thread has ended (cannot happen while jobs are sent)
                }
                if j == i {
                    deadline = Instant::now() + wait;
                }
            }
            results = lock();
            continue;
        }
        match results[i].take() {
            Some(Done::Compressed(compressed)) => return Some(Some(compressed)),
            Some(Done::Raw) => return Some(None),
            Some(Done::Wanted) => return None, // no wait: not handed whole
            None => {}
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
    queue: &Mutex<Receiver<Job>>,
    lower: bool,
    compress: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
) {
    if lower {
        lower_priority();
    }
    loop {
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(Job {
            index: i,
            bytes,
            whole,
        }) = job
        else {
            break;
        };
        // Only a whole chunk's buffer is kept for the next copies: a sample's is too small.
        let done_with = |bytes: Vec<u8>| {
            if whole {
                give_back(&SPARE, bytes)
            }
        };
        if shared.given_up[i].load(Ordering::Relaxed) {
            done_with(bytes);
            continue;
        }
        let started = parallel::thread_cpu_ns();
        let done = match (compress(&bytes), whole) {
            (Some(compressed), true) => Done::Compressed(compressed),
            (Some(_), false) => Done::Wanted,
            (None, _) => Done::Raw,
        };
        done_with(bytes);
        let spent = parallel::thread_cpu_ns().saturating_sub(started);
        IDLE_CPU_NS.fetch_add(spent, Ordering::Relaxed);
        shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[i] = Some(done);
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

    /// A `put` that checks each piece stored is `pieces[i]` (decompressed where it was
    /// compressed) and records `(i, compressed)` in `stored`.
    fn checking<'a>(
        pieces: &'a [&'a [u8]],
        stored: &'a mut Vec<(usize, bool)>,
    ) -> impl FnMut(usize, Stored<'_>) -> Result<(), ()> + 'a {
        move |i, s| {
            let raw = match &s {
                Stored::Zstd(z) => zstd::bulk::decompress(z, pieces[i].len()).unwrap(),
                Stored::Raw(r) => r.to_vec(),
            };
            assert!(raw == pieces[i]);
            stored.push((i, matches!(s, Stored::Zstd(_))));
            Ok(())
        }
    }

    /// Every piece of `n` put once, in order, and the odd ones (noise) never compressed.
    fn in_order_noise_raw(stored: &[(usize, bool)], n: usize) {
        let order: Vec<usize> = stored.iter().map(|s| s.0).collect();
        assert_eq!(order, (0..n).collect::<Vec<_>>());
        assert!(stored.iter().all(|&(i, zstd)| !zstd || i % 2 == 0));
    }

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
        compress_where_idle(&pieces, 1, checking(&pieces, &mut seen)).unwrap();
        in_order_noise_raw(&seen, 20);
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
        write_in_order(
            &pieces,
            1,
            false,
            &stalled_at,
            compress,
            |_| None,
            |i, stored| {
                seen.push((i, matches!(stored, Stored::Zstd(_))));
                if let Stored::Zstd(bytes) = stored {
                    assert_eq!(bytes, vec![i as u8]); // chunk i's own result
                }
                if i == 2 {
                    release.store(true, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(2)); // writing takes time
                Ok::<(), ()>(())
            },
        )
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
                |_| None,
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
    fn a_chunk_is_copied_whole_for_a_thread_only_where_its_sample_compresses() {
        // Chunks of 1 MiB: even ones compress (runs of a byte), odd ones do not (noise).
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let data: Vec<Vec<u8>> = (0..8)
            .map(|i| {
                (0..1 << 20)
                    .map(|j| {
                        if i % 2 == 0 {
                            (j >> 12) as u8
                        } else {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            (x >> 32) as u8
                        }
                    })
                    .collect()
            })
            .collect();
        let pieces: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        // What the threads were given: its length, and whether it is noise (a run's first
        // 4 KiB hold one byte).
        let handed = Arc::new(Mutex::new(Vec::new()));
        let seen_by_threads = Arc::clone(&handed);
        let compress = move |bytes: &[u8]| {
            let noise = bytes[..4096].iter().any(|&b| b != bytes[0]);
            seen_by_threads.lock().unwrap().push((bytes.len(), noise));
            let mut cctx = Compressor::new(1).ok();
            match pack::compress(cctx.as_mut(), bytes) {
                Stored::Zstd(z) => Some(z),
                Stored::Raw(_) => None,
            }
        };
        let mut stored = Vec::new();
        let stalled_at = AtomicU64::new(0);
        let put = checking(&pieces, &mut stored);
        write_in_order(&pieces, 2, false, &stalled_at, compress, pack::sample, put).unwrap();
        in_order_noise_raw(&stored, 8);
        let handed = handed.lock().unwrap().clone();
        let sample = pack::sample(pieces[0]).unwrap().len();
        // Noise was judged by its sample, and never copied whole.
        assert!(handed.contains(&(sample, true)), "{handed:?}");
        assert!(!handed.contains(&(1 << 20, true)), "{handed:?}");
        // Where the threads kept up (they do, but on a machine loaded past the writer's
        // wait): every chunk sampled, the runs compressed whole.
        if stored.iter().all(|&(i, zstd)| zstd == (i % 2 == 0)) {
            assert_eq!(handed.len(), 8 + 4, "{handed:?}");
        }
    }

    #[test]
    fn chunks_whose_samples_compress_are_handed_whole_ahead_of_the_writer() {
        // Compressible chunks of 1 MiB, chunk j's first byte j. Chunk 0's whole compression
        // ends only once the threads have judged the samples handed with it; the writer then
        // must hand the next chunks whole before it writes chunk 0, or writing chunk 0 (which
        // waits for chunk 1's whole compression to start) never ends: handed whole only when
        // the writer reaches them, compressible chunks were compressed one at a time.
        let data: Vec<Vec<u8>> = (0..8u8)
            .map(|j| {
                (0..1usize << 20)
                    .map(|k| if k == 0 { j } else { (k >> 12) as u8 })
                    .collect()
            })
            .collect();
        let pieces: Vec<&[u8]> = data.iter().map(|d| &d[..]).collect();
        // (samples judged, chunks whose whole compression started), and its changes
        type State = (usize, Vec<u8>);
        type Seen = (Mutex<State>, Condvar);
        let seen: Arc<Seen> = Arc::new((Mutex::new((0, Vec::new())), Condvar::new()));
        let until = |seen: &Seen, ok: &dyn Fn(&State) -> bool| {
            let (state, changed) = seen;
            let state = state.lock().unwrap();
            let (state, timeout) = changed
                .wait_timeout_while(state, Duration::from_secs(10), |s| !ok(s))
                .unwrap();
            assert!(!timeout.timed_out(), "waited in vain: {:?}", *state);
        };
        let threads_see = Arc::clone(&seen);
        let compress = move |bytes: &[u8]| {
            let (state, changed) = &*threads_see;
            if bytes.len() < 1 << 20 {
                state.lock().unwrap().0 += 1;
            } else {
                state.lock().unwrap().1.push(bytes[0]);
                if bytes[0] == 0 {
                    until(&threads_see, &|s| s.0 >= 5); // chunks 0-4 handed: 2 threads, 2 ahead each
                }
            }
            changed.notify_all();
            Some(bytes[..1].to_vec())
        };
        let mut stored = Vec::new();
        write_in_order(
            &pieces,
            2,
            false,
            &AtomicU64::new(0),
            compress,
            pack::sample,
            |i, s| {
                if i == 0 {
                    until(&seen, &|s| s.1.contains(&1));
                }
                stored.push((i, matches!(s, Stored::Zstd(_))));
                Ok::<(), ()>(())
            },
        )
        .unwrap();
        assert_eq!(stored[0], (0, true), "{stored:?}");
        assert_eq!(stored.len(), 8);
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
