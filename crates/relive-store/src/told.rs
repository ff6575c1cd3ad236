//! Buffers whose owner tells which of their blocks it wrote, and what their chunks were.
//!
//! A CUDA tensor's host copy (its *mirror*, `relive.state.gpu_copies`) is written by the GPU
//! (DMA), which page watching (`watch.rs`) cannot see. But relive writes it itself, block by
//! block, and knows which blocks it wrote: each block carries a version, a number new at each
//! write (one counter for the whole process, so that no two writes, of any buffer, share
//! one). The owner tells the versions ([`tell`]); a copied snapshot then keeps the id of each
//! chunk whose blocks have the versions they had at its last written copy, and copies the
//! other chunks without fingerprinting them (their bytes were written since). A frozen
//! backbone's weights are then neither fingerprinted nor copied at each snapshot, where the
//! whole mirror was fingerprinted on the CPU (36-75 ms per GB here).
//!
//! What a buffer's chunks were is learned once its copy is written ([`learned`]). An address
//! is forgotten when its owner frees it ([`forget`]): memory reused for anything else must
//! never be taken for the buffer told. The ids kept are checked against the store's index by
//! the caller, as the watch's are.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};

use crate::watch::{Buffer, Seen, Was};

#[derive(Default)]
struct Told {
    /// By (address, length): the block size and each block's version.
    versions: HashMap<(usize, usize), (usize, Vec<u64>)>,
    /// Each chunk of a buffer as its last written copy found it: the version of its blocks
    /// then (the highest) and what it was.
    chunks: HashMap<Buffer, Vec<(u64, Was)>>,
}

static TOLD: LazyLock<Mutex<Told>> = LazyLock::new(|| Mutex::new(Told::default()));

fn lock() -> MutexGuard<'static, Told> {
    TOLD.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `addr..addr + len` is cut in blocks of `block` bytes, the k-th last written at
/// `versions[k]` (a number no other write had).
pub fn tell(addr: usize, len: usize, block: usize, versions: Vec<u64>) {
    if block == 0 || versions.len() != len.div_ceil(block) {
        forget(addr, len); // what was told before no longer holds, and this says nothing
        return;
    }
    lock().versions.insert((addr, len), (block, versions));
}

/// The buffer at `addr..addr + len` is freed: nothing told of it holds any more.
pub fn forget(addr: usize, len: usize) {
    let mut told = lock();
    told.versions.remove(&(addr, len));
    told.chunks.retain(|b, _| (b.addr, b.len) != (addr, len));
}

/// Where `buffer` was told: each chunk's version (the highest of its blocks'), and what is
/// known of it: unchanged since the last written copy (its version is the same), written
/// since, or, with no written copy to go by, unknown.
pub(crate) fn before_fingerprints(buffer: Buffer) -> Option<(Vec<u64>, Vec<Seen>)> {
    let told = lock();
    let (block, versions) = told.versions.get(&(buffer.addr, buffer.len))?;
    let size = buffer.chunk_size;
    let now: Vec<u64> = (0..buffer.len.div_ceil(size))
        .map(|k| {
            let (from, to) = (k * size, ((k + 1) * size).min(buffer.len));
            let blocks = &versions[from / block..=(to - 1) / block];
            blocks.iter().copied().max().unwrap_or(0)
        })
        .collect();
    let seen = match told.chunks.get(&buffer) {
        Some(then) if then.len() == now.len() => now
            .iter()
            .zip(then)
            .map(|(v, (then, was))| match v == then {
                true => Seen::Unchanged(*was),
                false => Seen::Written,
            })
            .collect(),
        _ => vec![Seen::Unknown; now.len()],
    };
    Some((now, seen))
}

/// What the chunks of `buffer` were when it was copied at `versions` (as
/// [`before_fingerprints`] gave them), once that copy is written.
pub(crate) fn learned(buffer: Buffer, versions: &[u64], chunks: Vec<Was>) {
    let mut told = lock();
    if versions.len() == chunks.len() && told.versions.contains_key(&(buffer.addr, buffer.len)) {
        let then = versions.iter().copied().zip(chunks).collect();
        told.chunks.insert(buffer, then);
    }
}
