//! The file of a pack being written: around the page cache where the file system allows.
//!
//! A snapshot writes gigabytes that nothing reads back soon. Through the page cache each byte
//! is copied into a page the kernel must first find and zero: on the 2-core VM (whose fresh
//! memory the host faults in), 0.3 to 3.2 s of CPU per GB, 61% of a forked snapshot's CPU
//! for 1 GB of new data. With `O_DIRECT` the same GB took 0.03 s of CPU and 0.6 s of wall
//! time, against 0.9 s written and synced through the cache. So on Linux a pack's bytes are
//! gathered in an aligned buffer of ours and written in whole blocks with `O_DIRECT`; its
//! last bytes (less than a block) go through the page cache, as does everything where the
//! file system refuses `O_DIRECT` (a network file system may) and where
//! `RELIVE_DIRECT_WRITES=0` asks.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::copy_memory;
use crate::durable;
use crate::error::{io_at, Result};

/// What `O_DIRECT` asks to be aligned: the memory, the file offset and the length (4 KiB
/// serves 512-byte and 4 KiB sectors alike).
const BLOCK: usize = 4096;
/// The buffer a pack's bytes gather in: one write per 8 MiB.
const BUFFER: usize = 8 << 20;

pub(crate) struct PackFile {
    file: File,
    path: PathBuf,
    /// Where `file` was opened with `O_DIRECT`: the bytes not written yet.
    blocks: Option<Blocks>,
}

struct Blocks {
    /// Page-aligned, as a mapping is; kept for the next pack once written from
    /// (`copy_memory.rs`: a fresh 8 MiB per 64 MiB pack cost 5 ms of page faults here).
    buf: copy_memory::Memory,
    filled: usize,
}

impl PackFile {
    /// A new file in `tmp_dir`, written around the page cache where it can be.
    pub(crate) fn create(tmp_dir: &Path) -> Result<PackFile> {
        #[cfg(target_os = "linux")]
        if let Some(buf) = direct_writes().then(|| copy_memory::take(BUFFER)).flatten() {
            if let Some((file, path)) = durable::create_tmp_with(tmp_dir, "pack", libc::O_DIRECT)? {
                let blocks = Some(Blocks { buf, filled: 0 });
                return Ok(PackFile { file, path, blocks });
            }
        }
        let (file, path) = durable::create_tmp(tmp_dir, "pack")?;
        Ok(PackFile {
            file,
            path,
            blocks: None,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether its bytes go around the page cache.
    #[cfg(test)]
    fn direct(&self) -> bool {
        self.blocks.is_some()
    }

    pub(crate) fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let Some(blocks) = self.blocks.as_mut() else {
                return self.file.write_all(bytes).map_err(io_at(&self.path));
            };
            let n = bytes.len().min(BUFFER - blocks.filled);
            blocks.buf[blocks.filled..blocks.filled + n].copy_from_slice(&bytes[..n]);
            blocks.filled += n;
            bytes = &bytes[n..];
            if blocks.filled == BUFFER {
                self.write_blocks()?;
            }
        }
        Ok(())
    }

    /// Writes the whole blocks of what is gathered; keeps the rest (less than a block).
    fn write_blocks(&mut self) -> Result<()> {
        let Some(blocks) = self.blocks.as_mut() else {
            return Ok(());
        };
        let whole = blocks.filled / BLOCK * BLOCK;
        let mut done = 0;
        while done < whole {
            match self.file.write(&blocks.buf[done..whole]) {
                Ok(0) => return Err(io_at(&self.path)(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    done += n;
                    // A short write of whole blocks leaves the rest aligned; one of less is
                    // the file system's own business: the rest goes through the page cache.
                    if n % BLOCK != 0 {
                        return self.through_the_cache(done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Opened with O_DIRECT, yet refused (a file system that checks only now).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    return self.through_the_cache(done)
                }
                Err(e) => return Err(io_at(&self.path)(e)),
            }
        }
        blocks.buf.copy_within(whole..blocks.filled, 0);
        blocks.filled -= whole;
        Ok(())
    }

    /// From here on, through the page cache: what is gathered past `written` is written
    /// that way, by a handle opened without `O_DIRECT`, at the file's end.
    fn through_the_cache(&mut self, written: usize) -> Result<()> {
        let Some(blocks) = self.blocks.take() else {
            return Ok(());
        };
        let mut file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(io_at(&self.path))?;
        file.seek(SeekFrom::End(0))
            .and_then(|_| file.write_all(&blocks.buf[written..blocks.filled]))
            .map_err(io_at(&self.path))?;
        self.file = file;
        Ok(())
    }

    /// Writes what is left, and syncs where `sync`: the file holds every byte given.
    pub(crate) fn finish(&mut self, sync: bool) -> Result<()> {
        self.write_blocks()?;
        if self.blocks.as_ref().is_some_and(|b| b.filled > 0) {
            self.through_the_cache(0)?;
        }
        if sync {
            self.file.sync_all().map_err(io_at(&self.path))?;
        }
        Ok(())
    }
}

/// Packs are written around the page cache unless `RELIVE_DIRECT_WRITES=0`.
#[cfg(target_os = "linux")]
fn direct_writes() -> bool {
    std::env::var("RELIVE_DIRECT_WRITES").map_or(true, |v| v.trim() != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Pieces of every awkward length, across buffer and block boundaries, come back whole.
    fn written_back(dir: &Path, lens: &[usize]) {
        let mut file = PackFile::create(dir).unwrap();
        let mut all = Vec::new();
        for (i, &len) in lens.iter().enumerate() {
            let piece = data(len, i as u64 + 1);
            file.write_all(&piece).unwrap();
            all.extend_from_slice(&piece);
        }
        file.finish(true).unwrap();
        assert_eq!(std::fs::read(file.path()).unwrap(), all, "{lens:?}");
    }

    #[test]
    fn every_byte_given_is_in_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        #[cfg(target_os = "linux")]
        {
            // Where the file system takes O_DIRECT, packs are written with it.
            use std::os::unix::fs::OpenOptionsExt;
            let takes_it = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(dir.path().join("probe"))
                .is_ok();
            assert_eq!(PackFile::create(dir.path()).unwrap().direct(), takes_it);
        }
        let cases: [&[usize]; 6] = [
            &[],
            &[8],
            &[BLOCK],
            &[BLOCK - 1, 1, BLOCK + 1],
            &[BUFFER - 8, 16, 3 * BUFFER + 5, 100],
            &[BUFFER, BUFFER, 7],
        ];
        for lens in cases {
            written_back(dir.path(), lens);
        }
    }

    /// tmpfs took O_DIRECT from Linux 6.6 on: a file system that refuses it is simulated.
    #[test]
    fn a_file_opened_direct_that_is_refused_later_goes_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = PackFile::create(dir.path()).unwrap();
        let first = data(BLOCK + 10, 1);
        file.write_all(&first).unwrap();
        // As if a write had refused the alignment: what was gathered goes through the cache.
        file.through_the_cache(0).unwrap();
        let second = data(BUFFER + 1, 2);
        file.write_all(&second).unwrap();
        file.finish(true).unwrap();
        assert!(!file.direct());
        assert_eq!(
            std::fs::read(file.path()).unwrap(),
            [first, second].concat()
        );
    }
}
