//! Which pages of a buffer the program wrote since a copied snapshot last looked at it.
//!
//! A copied snapshot (`staged.rs`) must find, while the program pauses, which chunks of each
//! buffer changed. By content that is a fingerprint pass over every byte: 36 ms for a 1 GB
//! array of which 11 MB changed (a 2 ms copy). Linux 6.7+ can say which pages were written
//! instead, without privileges: a userfaultfd registered for write protection with
//! asynchronous faults (`UFFD_FEATURE_WP_ASYNC`) lets the kernel write-protect a buffer's
//! pages; the program's first write to one lifts the protection in the fault handler (about
//! 1.5 µs; no signal, no thread of ours), and `PAGEMAP_SCAN` lists the pages written since and
//! protects them again in the same call (0.3-0.45 ms for 1 GiB here).
//!
//! What could change a page's bytes other than by writing it is ruled out or checked:
//! - memory given back (`MADV_DONTNEED`, as allocators do with freed memory) reads as zeros
//!   with no write: a second scan finds pages neither present nor swapped out (a protected
//!   page that was never touched carries a marker, and counts as swapped). Linux 6.18 reports
//!   such pages as written already; the second scan is for kernels that may not;
//! - memory unmapped and mapped again: the new mapping is not registered, and a scan that
//!   meets it fails (`PM_SCAN_CHECK_WPASYNC`): the buffer is fingerprinted;
//! - shared or file-backed memory (another process may write it): never watched;
//! - a forked child: its mappings lose the registration; only the process that registered a
//!   buffer scans it.
//!
//! Not seen: a device writing by DMA into pinned memory (CUDA's pinned or registered host
//! memory, RDMA, io_uring's fixed buffers). The Python side does not ask for watching once
//! CUDA is initialized; `RELIVE_WATCH_PAGES=0` turns it off.
//!
//! This module only talks to the kernel ([`Pages`]); which buffers are watched and what their
//! chunks were is `watch.rs`'s.

#![cfg(target_os = "linux")]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The kernel's ABI (include/uapi/linux/userfaultfd.h, fs.h), which the C library's headers
/// here predate.
mod abi {
    pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    pub const UFFD_API: u64 = 0xAA;
    pub const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
    pub const UFFDIO_REGISTER_MODE_WP: u64 = 1 << 1;
    pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1 << 0;

    const fn iowr(kind: u64, nr: u64, size: usize) -> u64 {
        (3 << 30) | ((size as u64) << 16) | (kind << 8) | nr
    }
    const fn ior(kind: u64, nr: u64, size: usize) -> u64 {
        (2 << 30) | ((size as u64) << 16) | (kind << 8) | nr
    }

    #[repr(C)]
    pub struct UffdioApi {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct UffdioRange {
        pub start: u64,
        pub len: u64,
    }
    #[repr(C)]
    pub struct UffdioRegister {
        pub range: UffdioRange,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct UffdioWriteprotect {
        pub range: UffdioRange,
        pub mode: u64,
    }
    pub const UFFDIO_API: u64 = iowr(0xAA, 0x3F, std::mem::size_of::<UffdioApi>());
    pub const UFFDIO_REGISTER: u64 = iowr(0xAA, 0x00, std::mem::size_of::<UffdioRegister>());
    pub const UFFDIO_UNREGISTER: u64 = ior(0xAA, 0x01, std::mem::size_of::<UffdioRange>());
    pub const UFFDIO_WRITEPROTECT: u64 =
        iowr(0xAA, 0x06, std::mem::size_of::<UffdioWriteprotect>());

    pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
    pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
    pub const PAGE_IS_PRESENT: u64 = 1 << 3;
    pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
    pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct PageRegion {
        pub start: u64,
        pub end: u64,
        pub categories: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    pub struct PmScanArg {
        pub size: u64,
        pub flags: u64,
        pub start: u64,
        pub end: u64,
        pub walk_end: u64,
        pub vec: u64,
        pub vec_len: u64,
        pub max_pages: u64,
        pub category_inverted: u64,
        pub category_mask: u64,
        pub category_anyof_mask: u64,
        pub return_mask: u64,
    }
    pub const PAGEMAP_SCAN: u64 = iowr(b'f' as u64, 16, std::mem::size_of::<PmScanArg>());
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// One process's means to watch its memory for writes: a userfaultfd with asynchronous write
/// protection, and its own `/proc/self/pagemap` to scan. Valid in the process that made it
/// only (a forked child's mappings are not registered, and its pagemap file is the parent's).
pub(crate) struct Pages {
    uffd: OwnedFd,
    pagemap: File,
    page: usize,
}

/// Page-aligned `[start, end)` covering `addr..addr + len`.
fn covering(addr: usize, len: usize, page: usize) -> (u64, u64) {
    let start = addr / page * page;
    let end = (addr + len).div_ceil(page) * page;
    (start as u64, end as u64)
}

impl Pages {
    /// None where this kernel cannot (before 6.7, userfaultfd refused, no `/proc`).
    pub(crate) fn open() -> io::Result<Pages> {
        Pages::open_with(abi::UFFD_FEATURE_WP_ASYNC | abi::UFFD_FEATURE_WP_UNPOPULATED)
    }

    /// As [`Pages::open`], but protecting the pages present only: a page never touched is not
    /// marked (which takes page tables for memory never used: a sparse reservation of 100 GB
    /// would take 200 MB of them), and its first write is not told from a write since.
    pub(crate) fn open_present() -> io::Result<Pages> {
        Pages::open_with(abi::UFFD_FEATURE_WP_ASYNC)
    }

    /// As [`Pages::open`], with the userfaultfd features given (`WP_UNPOPULATED` or not).
    fn open_with(features: u64) -> io::Result<Pages> {
        // SAFETY: a system call taking flags only; it returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | abi::UFFD_USER_MODE_ONLY,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let mut api = abi::UffdioApi {
            api: abi::UFFD_API,
            features,
            ioctls: 0,
        };
        ioctl(uffd.as_raw_fd(), abi::UFFDIO_API, &mut api)?;
        let pagemap = File::open("/proc/self/pagemap")?;
        let pages = Pages {
            uffd,
            pagemap,
            page: page_size(),
        };
        // PAGEMAP_SCAN itself (6.7+): an empty scan answers or fails here, not on first use.
        pages.scan_from(0, 0, 0, 0, abi::PAGE_IS_WRITTEN, 0, &mut [])?;
        Ok(pages)
    }

    /// [`Pages::watch_in`], reading `/proc/self/maps` itself.
    #[cfg(test)]
    pub(crate) fn watch(&self, addr: usize, len: usize) -> io::Result<()> {
        self.watch_in(&std::fs::read_to_string("/proc/self/maps")?, addr, len)
    }

    /// Watches the pages under `addr..addr + len` from now on: registers them and protects
    /// them all (pages not yet touched included). Fails where the memory is not private
    /// anonymous memory this process alone writes (as `maps`, `/proc/self/maps` read since
    /// the memory was mapped, tells), or another userfaultfd watches it.
    pub(crate) fn watch_in(&self, maps: &str, addr: usize, len: usize) -> io::Result<()> {
        let (start, end) = covering(addr, len, self.page);
        // Asynchronous write protection takes any memory; only private anonymous memory is
        // written by this process alone.
        if !private_anonymous(maps, start, end) {
            return Err(io::Error::other("not private anonymous memory"));
        }
        self.protect(start, end)
    }

    /// Registers the pages of `[start, end)` (page-aligned) and protects them; on failure
    /// nothing stays registered.
    pub(crate) fn protect(&self, start: u64, end: u64) -> io::Result<()> {
        let range = abi::UffdioRange {
            start,
            len: end - start,
        };
        let mut register = abi::UffdioRegister {
            range,
            mode: abi::UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        ioctl(self.uffd.as_raw_fd(), abi::UFFDIO_REGISTER, &mut register)?;
        let mut protect = abi::UffdioWriteprotect {
            range,
            mode: abi::UFFDIO_WRITEPROTECT_MODE_WP,
        };
        if let Err(e) = ioctl(
            self.uffd.as_raw_fd(),
            abi::UFFDIO_WRITEPROTECT,
            &mut protect,
        ) {
            self.forget(start as usize, (end - start) as usize);
            return Err(e);
        }
        Ok(())
    }

    /// Stops watching (best effort: the memory may be gone). The pages lose their protection.
    pub(crate) fn forget(&self, addr: usize, len: usize) {
        let (start, end) = covering(addr, len, self.page);
        let mut range = abi::UffdioRange {
            start,
            len: end - start,
        };
        let _ = ioctl(self.uffd.as_raw_fd(), abi::UFFDIO_UNREGISTER, &mut range);
    }

    /// The byte ranges under `addr..addr + len` whose pages may hold other bytes than when
    /// last protected (written, or given back), each protected again. An error where some of
    /// the memory is no longer watched (unmapped and mapped again): then nothing is known.
    pub(crate) fn changed(&self, addr: usize, len: usize) -> io::Result<Vec<(usize, usize)>> {
        let (start, end) = covering(addr, len, self.page);
        let flags = abi::PM_SCAN_WP_MATCHING | abi::PM_SCAN_CHECK_WPASYNC;
        let mut changed = self.regions(start, end, flags, 0, abi::PAGE_IS_WRITTEN, 0)?;
        // After the written pages were protected again: a page given back since then is found
        // here, or at the next scan.
        let given_back = self.given_back(start, end)?;
        for &(from, to) in &given_back {
            let mut protect = abi::UffdioWriteprotect {
                range: abi::UffdioRange {
                    start: from as u64,
                    len: (to - from) as u64,
                },
                mode: abi::UFFDIO_WRITEPROTECT_MODE_WP,
            };
            ioctl(
                self.uffd.as_raw_fd(),
                abi::UFFDIO_WRITEPROTECT,
                &mut protect,
            )?;
        }
        changed.extend(given_back);
        changed.sort_unstable();
        Ok(changed)
    }

    /// As [`Pages::changed`], but protecting nothing again: the next `changed` finds the same
    /// pages (and any written since). What a forked child is told (`watch::lend_to_child`).
    pub(crate) fn changed_since(&self, addr: usize, len: usize) -> io::Result<Vec<(usize, usize)>> {
        let (start, end) = covering(addr, len, self.page);
        let check = abi::PM_SCAN_CHECK_WPASYNC;
        let mut changed = self.regions(start, end, check, 0, abi::PAGE_IS_WRITTEN, 0)?;
        changed.extend(self.given_back(start, end)?);
        changed.sort_unstable();
        Ok(changed)
    }

    /// The pages of `[start, end)` (page-aligned) neither present nor swapped out: given back
    /// to the kernel (`MADV_DONTNEED`), reading as zeros with no write.
    fn given_back(&self, start: u64, end: u64) -> io::Result<Vec<(usize, usize)>> {
        let gone = abi::PAGE_IS_PRESENT | abi::PAGE_IS_SWAPPED;
        self.regions(start, end, abi::PM_SCAN_CHECK_WPASYNC, gone, 0, gone)
    }

    /// The bytes of `[start, end)` (page-aligned) this process wrote since protecting them
    /// (and pages first touched since: fresh pages carry no protection), protecting nothing
    /// again; memory mapped since (not registered) counts for nothing.
    pub(crate) fn written_bytes(&self, start: u64, end: u64) -> io::Result<u64> {
        let written = abi::PAGE_IS_WRITTEN | abi::PAGE_IS_PRESENT | abi::PAGE_IS_WPALLOWED;
        let regions = self.regions(start, end, 0, 0, 0, written)?;
        Ok(regions.iter().map(|&(from, to)| (to - from) as u64).sum())
    }

    /// Every region of `[start, end)` matching the categories, through as many scans as the
    /// output needs.
    fn regions(
        &self,
        start: u64,
        end: u64,
        flags: u64,
        inverted: u64,
        anyof: u64,
        mask: u64,
    ) -> io::Result<Vec<(usize, usize)>> {
        let mut found = Vec::new();
        let mut out = vec![abi::PageRegion::default(); 256];
        let mut at = start;
        while at < end {
            let (n, walk_end) = self.scan_from(at, end, flags, inverted, anyof, mask, &mut out)?;
            found.extend(out[..n].iter().map(|r| (r.start as usize, r.end as usize)));
            if walk_end <= at {
                return Err(io::Error::other("PAGEMAP_SCAN made no progress"));
            }
            at = walk_end;
        }
        Ok(found)
    }

    /// One `PAGEMAP_SCAN`: how many regions it wrote to `out`, and where it stopped.
    #[allow(clippy::too_many_arguments)]
    fn scan_from(
        &self,
        start: u64,
        end: u64,
        flags: u64,
        inverted: u64,
        anyof: u64,
        mask: u64,
        out: &mut [abi::PageRegion],
    ) -> io::Result<(usize, u64)> {
        let mut arg = abi::PmScanArg {
            size: std::mem::size_of::<abi::PmScanArg>() as u64,
            flags,
            start,
            end,
            vec: out.as_mut_ptr() as u64,
            vec_len: out.len() as u64,
            category_inverted: inverted,
            category_mask: mask,
            category_anyof_mask: anyof,
            return_mask: anyof | mask,
            ..Default::default()
        };
        let n = ioctl(self.pagemap.as_raw_fd(), abi::PAGEMAP_SCAN, &mut arg)?;
        Ok((n as usize, arg.walk_end))
    }
}

/// Whether `/proc/self/maps` (`maps`) shows `[start, end)` as private anonymous mappings
/// only (no file, not shared: no other process writes them), with no gap.
fn private_anonymous(maps: &str, start: u64, end: u64) -> bool {
    let mut at = start;
    for mapping in mappings(maps) {
        let Some(mapping) = mapping else { return false };
        if mapping.to <= at {
            continue;
        }
        if mapping.from > at || !mapping.private_anonymous {
            return false; // a gap (not mapped), or memory another process may write
        }
        at = mapping.to;
        if at >= end {
            return true;
        }
    }
    false
}

/// The writable private anonymous mappings of `maps` (`/proc/self/maps`), page-aligned
/// `[start, end)`: the memory only this process writes.
pub(crate) fn writable_private_anonymous(maps: &str) -> Vec<(u64, u64)> {
    mappings(maps)
        .flatten()
        .filter(|m| m.private_anonymous && m.writable)
        .map(|m| (m.from, m.to))
        .collect()
}

/// One line of `/proc/self/maps`.
struct Mapping {
    from: u64,
    to: u64,
    writable: bool,
    /// No file, not shared (the heap, `mmap` of anonymous memory, named `[anon:...]`).
    private_anonymous: bool,
}

/// The lines of `maps`, each None where it cannot be read.
fn mappings(maps: &str) -> impl Iterator<Item = Option<Mapping>> + '_ {
    maps.lines().map(|line| {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        let path = fields.nth(3).unwrap_or("");
        let (from, to) = range.split_once('-')?;
        let anonymous = path.is_empty() || path == "[heap]" || path.starts_with("[anon:");
        Some(Mapping {
            from: u64::from_str_radix(from, 16).ok()?,
            to: u64::from_str_radix(to, 16).ok()?,
            writable: perms.get(1..2) == Some("w"),
            private_anonymous: perms.ends_with('p') && anonymous,
        })
    })
}

/// An ioctl whose argument is a `T` the kernel reads and may write back.
fn ioctl<T>(fd: libc::c_int, request: u64, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: each request above is paired with the `#[repr(C)]` struct the kernel's ABI
    // declares for it, and the kernel writes no more than that struct's size through the
    // pointer (PAGEMAP_SCAN also writes `vec_len` regions to `vec`, a slice borrowed mutably
    // for the call). The memory named by ranges is only ever this process's own.
    let rc = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Test helper: maps fresh memory over `addr..addr + len`, a mapping of the calling test's
/// own, as an allocator that unmaps and maps again at the same place would.
#[cfg(test)]
pub(crate) fn map_again(addr: usize, len: usize) {
    // SAFETY (test): the range is the calling test's own mapping, replaced whole.
    let again = unsafe {
        libc::mmap(
            addr as *mut _,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        )
    };
    assert_eq!(again as usize, addr);
}

#[cfg(test)]
mod tests {
    use super::*;
    use memmap2::MmapMut;

    /// None where this kernel cannot watch (the tests that need it say so and pass).
    fn pages() -> Option<Pages> {
        match Pages::open() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("page watching unavailable here: {e}");
                None
            }
        }
    }

    /// `n` pages of fresh memory, each written once, then watched: the mapping and its address.
    fn watched(pages: &Pages, n: usize) -> (MmapMut, usize) {
        let page = page_size();
        let mut map = MmapMut::map_anon(n * page).unwrap();
        touch(&mut map, page, &(0..n).collect::<Vec<_>>());
        let addr = map.as_ptr() as usize;
        pages.watch(addr, map.len()).unwrap();
        (map, addr)
    }

    fn touch(map: &mut MmapMut, page: usize, pages: &[usize]) {
        for &p in pages {
            map[p * page + 7] = map[p * page + 7].wrapping_add(1);
        }
    }

    #[test]
    fn the_pages_written_since_are_found_and_protected_again() {
        let Some(pages) = pages() else { return };
        let page = page_size();
        let (mut map, addr) = watched(&pages, 64);
        assert!(pages.changed(addr, map.len()).unwrap().is_empty());
        touch(&mut map, page, &[3, 4, 40]);
        let _ = map[10 * page]; // a read is not a write
        assert_eq!(
            pages.changed(addr, map.len()).unwrap(),
            vec![
                (addr + 3 * page, addr + 5 * page),
                (addr + 40 * page, addr + 41 * page)
            ]
        );
        assert!(pages.changed(addr, map.len()).unwrap().is_empty());
        pages.forget(addr, map.len());
        assert!(pages.changed(addr, map.len()).is_err()); // no longer watched: nothing known
    }

    #[test]
    fn pages_never_touched_are_watched_and_pages_given_back_are_changed() {
        let Some(pages) = pages() else { return };
        let page = page_size();
        let mut map = MmapMut::map_anon(32 * page).unwrap();
        touch(&mut map, page, &(0..16).collect::<Vec<_>>()); // the rest is never touched
        let addr = map.as_ptr() as usize;
        pages.watch(addr, map.len()).unwrap();
        touch(&mut map, page, &[20]);
        // SAFETY (test): the range is this test's own mapping.
        unsafe {
            libc::madvise((addr + 8 * page) as *mut _, 2 * page, libc::MADV_DONTNEED);
        }
        assert_eq!(
            pages.changed(addr, map.len()).unwrap(),
            vec![
                (addr + 8 * page, addr + 10 * page),
                (addr + 20 * page, addr + 21 * page)
            ]
        );
        assert!(pages.changed(addr, map.len()).unwrap().is_empty());
    }

    #[test]
    fn memory_mapped_again_is_not_watched() {
        let Some(pages) = pages() else { return };
        let page = page_size();
        let map = MmapMut::map_anon(16 * page).unwrap();
        let (addr, len) = (map.as_ptr() as usize, map.len());
        pages.watch(addr, len).unwrap();
        map_again(addr, len);
        assert!(pages.changed(addr, len).is_err());
    }

    #[test]
    fn only_private_anonymous_memory_without_gaps_is_watched() {
        let maps = "1000-3000 rw-p 00000000 00:00 0 \n\
                    3000-4000 rw-p 00000000 00:00 0                          [heap]\n\
                    4000-5000 rw-s 00000000 00:01 12                         /dev/zero (deleted)\n\
                    6000-7000 rw-p 00000000 08:01 99                         /data/x.npy\n\
                    8000-9000 rw-p 00000000 00:00 0                          [anon:torch]\n";
        assert!(private_anonymous(maps, 0x1000, 0x4000));
        assert!(private_anonymous(maps, 0x2000, 0x3000));
        assert!(!private_anonymous(maps, 0x3000, 0x5000)); // shared
        assert!(!private_anonymous(maps, 0x6000, 0x7000)); // a file
        assert!(!private_anonymous(maps, 0x5000, 0x6000)); // not mapped
        assert!(private_anonymous(maps, 0x8000, 0x9000));
        assert!(!private_anonymous(maps, 0x8000, 0xa000)); // runs past the mappings
    }

    #[test]
    fn the_memory_a_probe_watches_is_writable_private_anonymous_memory() {
        let maps = "1000-3000 rw-p 00000000 00:00 0 \n\
                    3000-4000 r--p 00000000 00:00 0 \n\
                    4000-5000 rw-s 00000000 00:01 12                         /dev/zero (deleted)\n\
                    6000-7000 rw-p 00000000 08:01 99                         /data/x.npy\n\
                    7000-8000 ---p 00000000 00:00 0 \n\
                    8000-9000 rw-p 00000000 00:00 0                          [heap]\n\
                    9000-a000 rw-p 00000000 00:00 0                          [stack]\n\
                    not a line\n\
                    b000-c000 rw-p 00000000 00:00 0                          [anon:torch]\n";
        assert_eq!(
            writable_private_anonymous(maps),
            vec![(0x1000, 0x3000), (0x8000, 0x9000), (0xb000, 0xc000)]
        );
    }

    #[test]
    fn shared_memory_is_not_watched() {
        let Some(pages) = pages() else { return };
        let file = tempfile::tempfile().unwrap();
        file.set_len(16 * 4096).unwrap();
        // SAFETY (test): a mapping of a temporary file no one else has.
        let map = unsafe { MmapMut::map_mut(&file).unwrap() };
        assert!(pages.watch(map.as_ptr() as usize, map.len()).is_err());
    }

    #[test]
    fn writes_while_a_forked_child_lives_are_found() {
        let Some(pages) = pages() else { return };
        let page = page_size();
        let (mut map, addr) = watched(&pages, 16);
        // SAFETY (test): the child only sleeps and exits, touching nothing of the parent's.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: async-signal-safe calls only, in the child.
            unsafe {
                libc::usleep(200_000);
                libc::_exit(0);
            }
        }
        touch(&mut map, page, &[5]); // copy-on-write and protection at once
        let mut status = 0;
        // SAFETY (test): waits for the child forked above.
        unsafe { libc::waitpid(child, &mut status, 0) };
        touch(&mut map, page, &[9]);
        assert_eq!(
            pages.changed(addr, map.len()).unwrap(),
            vec![
                (addr + 5 * page, addr + 6 * page),
                (addr + 9 * page, addr + 10 * page)
            ]
        );
    }
}
