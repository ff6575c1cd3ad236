//! Helpers shared by the store's tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use relive_store::Store;

/// `len` incompressible bytes, the same for the same seed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut hasher = blake3::Hasher::new();
    hasher.update(&seed.to_le_bytes());
    hasher.finalize_xof().fill(&mut out);
    out
}

/// Bytes that compress well.
pub fn text(len: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A fresh store in a temporary directory.
pub fn store(chunk_size: usize) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create_with_chunk_size(&dir.path().join(".relive"), chunk_size).unwrap();
    // What is compressed must not depend on how busy the machine running the tests is.
    store.set_compress_when_idle(false);
    (dir, store)
}

/// Every sealed pack file under `root`.
pub fn pack_files(root: &Path) -> Vec<PathBuf> {
    let mut packs = Vec::new();
    for dir in fs::read_dir(root.join("packs")).unwrap() {
        for file in fs::read_dir(dir.unwrap().path()).unwrap() {
            packs.push(file.unwrap().path());
        }
    }
    packs.sort();
    packs
}

/// Reads every buffer of a record back.
pub fn read_all(store: &Store, id: &relive_store::Id) -> (Vec<u8>, Vec<Vec<u8>>) {
    let record = store.get_record(id).unwrap();
    let buffers = record
        .buffers
        .iter()
        .map(|b| {
            let mut out = vec![0u8; b.len as usize];
            store.read_buffer_into(b, &mut out).unwrap();
            out
        })
        .collect();
    (record.payload, buffers)
}

pub fn flip_byte(path: &Path, at: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at as usize] ^= 0x5a;
    fs::write(path, bytes).unwrap();
}
pub mod seaweed;
