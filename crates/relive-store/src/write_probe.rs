//! How much of its memory the program writes in a while: what a fork would cost it.
//!
//! While a forked snapshot's child lives, each page the program writes of those it shared
//! with the child is copied first: a fault, a fresh page and a copy (on the 2-core VM, about
//! 2-3 s per GB). A training loop rewrites its gradients, activations and optimizer state at
//! every step (PyTorch's MNIST example: 94 MB of pages; DCGAN: 280 MB in a second); a
//! k-means or t-SNE loop rewrites a few MB and allocates the rest afresh. Before the first
//! snapshot nothing else says which kind a program is, so `--mode auto` asks this probe
//! for a second: it write-protects every page of the process's private anonymous memory
//! without a handler (asynchronous userfaultfd faults, as `page_writes.rs`), lets the first
//! write to each lift it (about 0.5 µs a page here), and counts the pages written.
//!
//! Pages not yet present when the probe starts carry no protection: their first write (a
//! fresh page, which a fork does not make dearer) counts as written too. Memory mapped since
//! the start is not registered and counts for nothing; memory a fork would not share
//! (`MADV_DONTFORK`) counts as any other. A forked child's mappings lose the registration;
//! the parent's keep it.

use std::io;

#[cfg(target_os = "linux")]
use crate::page_writes::{writable_private_anonymous, Pages};

/// A running probe: dropping it unregisters the memory, which loses its protection.
#[cfg(target_os = "linux")]
pub struct WriteProbe {
    pages: Pages,
    regions: Vec<(u64, u64)>,
}

#[cfg(target_os = "linux")]
impl WriteProbe {
    /// Watches all the process's writable private anonymous memory from now on. Memory that
    /// cannot be registered (another userfaultfd watches it, a special mapping) is left out.
    /// Refused where `RELIVE_WATCH_PAGES=0` turns page watching off.
    pub fn start() -> io::Result<WriteProbe> {
        if !crate::watch::watching_allowed() {
            return Err(io::Error::other(
                "page watching is off (RELIVE_WATCH_PAGES=0)",
            ));
        }
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        WriteProbe::over(&writable_private_anonymous(&maps))
    }

    /// Watches the page-aligned `regions` (private anonymous memory) from now on.
    fn over(regions: &[(u64, u64)]) -> io::Result<WriteProbe> {
        let pages = Pages::open_present()?;
        let regions = regions
            .iter()
            .copied()
            .filter(|&(start, end)| pages.protect(start, end).is_ok())
            .collect();
        Ok(WriteProbe { pages, regions })
    }

    /// The bytes of the memory watched that were written since the start, each page once.
    pub fn written(&self) -> u64 {
        let regions = self.regions.iter();
        // Memory unmapped since: nothing to count there (a scan of it may fail).
        regions
            .map(|&(start, end)| self.pages.written_bytes(start, end).unwrap_or(0))
            .sum()
    }
}

#[cfg(target_os = "linux")]
impl Drop for WriteProbe {
    fn drop(&mut self) {
        for &(start, end) in &self.regions {
            self.pages.forget(start as usize, (end - start) as usize);
        }
    }
}

/// Elsewhere than Linux no page is watched: the probe cannot start.
#[cfg(not(target_os = "linux"))]
pub struct WriteProbe;

#[cfg(not(target_os = "linux"))]
impl WriteProbe {
    pub fn start() -> io::Result<WriteProbe> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "pages are watched on Linux only",
        ))
    }

    pub fn written(&self) -> u64 {
        0
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::page_writes::{map_again, page_size};
    use memmap2::MmapMut;

    /// A mapping of `n` pages, each touched once, and the probe over it (None where this
    /// kernel cannot watch pages: the test says so and passes).
    fn probed(n: usize) -> Option<(MmapMut, WriteProbe)> {
        let page = page_size();
        let mut map = MmapMut::map_anon(n * page).unwrap();
        for p in 0..n {
            map[p * page] = 1;
        }
        let start = map.as_ptr() as u64;
        match WriteProbe::over(&[(start, start + map.len() as u64)]) {
            Ok(probe) => Some((map, probe)),
            Err(e) => {
                eprintln!("page watching unavailable here: {e}");
                None
            }
        }
    }

    #[test]
    fn the_pages_written_since_the_start_are_counted_once_each() {
        let Some((mut map, probe)) = probed(64) else {
            return;
        };
        let page = page_size();
        assert_eq!(probe.written(), 0);
        for _ in 0..3 {
            for p in [3, 10, 11, 12, 63] {
                map[p * page + 5] = 2;
            }
        }
        let _ = map[20 * page]; // a read is not a write
        assert_eq!(probe.written(), 5 * page as u64);
        assert_eq!(probe.written(), 5 * page as u64); // counting protects nothing again
    }

    #[test]
    fn once_dropped_the_memory_is_free_to_watch_again() {
        let Some((map, probe)) = probed(8) else {
            return;
        };
        drop(probe);
        let pages = Pages::open().unwrap();
        pages.watch(map.as_ptr() as usize, map.len()).unwrap();
    }

    #[test]
    fn memory_mapped_since_counts_for_nothing() {
        let Some((map, probe)) = probed(16) else {
            return;
        };
        let (addr, len) = (map.as_ptr() as usize, map.len());
        map_again(addr, len);
        // SAFETY (test): the new mapping is this test's, `len` bytes long.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 7, len) };
        assert_eq!(probe.written(), 0);
    }
}
