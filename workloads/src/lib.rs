//! Shared pieces of the workload programs: anonymous mappings, page
//! patterns a program can verify, madvise, O_DIRECT device access, and the
//! time budget every workload honours.
//!
//! Every workload knows the bytes it wrote, so corrupted data (a page from
//! the wrong swap entry, a zero page after a lost DIO read, a COW that went
//! the wrong way) shows up as a failed check and a non-zero exit.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

// Only the binaries parse arguments and report errors with these; a
// package's dependencies are its library's too.
use anyhow as _;
use clap as _;

pub mod uffd;

pub const PAGE: usize = 4096;
/// Exit status meaning "this kernel cannot run the workload" (as automake).
pub const EXIT_SKIP: i32 = 77;
/// Exit status meaning "the data check failed".
pub const EXIT_CORRUPT: i32 = 1;

/// `errno` of the last failed libc call, as an `io::Error`.
pub fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A private anonymous mapping, unmapped on drop.
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; threads coordinate their accesses
// through the workload's own protocol (disjoint pages or atomics).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub fn anon(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(last_err("mmap"));
        }
        // THP would turn the swap paths into large-folio ones and make the
        // workloads less predictable; the races under test are per page.
        // SAFETY: advising our own mapping.
        unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
    /// A mapping where the kernel may use large folios (mTHP): aligned to
    /// 2 MiB so every mTHP size fits whole, and advised MADV_HUGEPAGE so the
    /// sizes set to `madvise` (or `inherit` under a `madvise` top level) are
    /// allowed. The guest decides which sizes are on; with none on, this is
    /// an ordinary mapping.
    pub fn anon_large_folios(len: usize) -> io::Result<Mapping> {
        const ALIGN: usize = 2 << 20;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address,
        // over-sized so an aligned range of `len` bytes lies inside it.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + ALIGN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return Err(last_err("mmap"));
        }
        let start = raw as usize;
        let aligned = (start + ALIGN - 1) & !(ALIGN - 1);
        let (head, tail) = (aligned - start, start + len + ALIGN - (aligned + len));
        // SAFETY: unmapping the unaligned head and tail of our own mapping,
        // both page multiples outside [aligned, aligned + len).
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + len) as *mut libc::c_void, tail);
            }
        }
        let ptr = aligned as *mut u8;
        madvise(ptr, len, libc::MADV_HUGEPAGE)?;
        Ok(Mapping { ptr, len })
    }
    pub fn addr(&self) -> usize {
        self.ptr as usize
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn pages(&self) -> usize {
        self.len / PAGE
    }
    pub fn page_ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.pages());
        // SAFETY: in bounds of the mapping (checked above).
        unsafe { self.ptr.add(i * PAGE) }
    }
    pub fn madvise(&self, first_page: usize, pages: usize, advice: libc::c_int) -> io::Result<()> {
        madvise(self.page_ptr(first_page), pages * PAGE, advice)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

pub fn madvise(ptr: *mut u8, len: usize, advice: libc::c_int) -> io::Result<()> {
    // SAFETY: madvise only changes how the kernel treats the range; an
    // invalid range is reported as an error, not undefined behaviour.
    if unsafe { libc::madvise(ptr.cast(), len, advice) } != 0 {
        return Err(last_err("madvise"));
    }
    Ok(())
}

/// The 64-bit word at `word` of page `page` for a data set named `seed`.
/// Never zero, so a zero page (data lost) never passes.
#[inline]
pub fn pattern_word(seed: u64, page: u64, word: u64) -> u64 {
    let mut x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(page.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(word);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    x | 1
}

/// Fills one page (or a page-sized slice) with the pattern.
///
/// # Safety
/// `p` must point to `PAGE` writable bytes, 8-byte aligned.
pub unsafe fn fill_page(p: *mut u8, seed: u64, page: u64) {
    let w = p.cast::<u64>();
    for i in 0..(PAGE / 8) {
        // SAFETY: in bounds per the caller's contract; volatile so the
        // write really reaches memory (faults included).
        unsafe { w.add(i).write_volatile(pattern_word(seed, page, i as u64)) };
    }
}

/// Where a page differs from its pattern.
#[derive(Debug)]
pub struct Mismatch {
    pub word: usize,
    pub expected: u64,
    pub found: u64,
}

/// Checks one page against the pattern.
///
/// # Safety
/// `p` must point to `PAGE` readable bytes, 8-byte aligned.
pub unsafe fn check_page(p: *const u8, seed: u64, page: u64) -> Option<Mismatch> {
    let w = p.cast::<u64>();
    for i in 0..(PAGE / 8) {
        // SAFETY: in bounds per the caller's contract.
        let found = unsafe { w.add(i).read_volatile() };
        let expected = pattern_word(seed, page, i as u64);
        if found != expected {
            return Some(Mismatch {
                word: i,
                expected,
                found,
            });
        }
    }
    None
}

/// Wall-clock budget: workloads stop early (and say so) rather than run
/// past what the test harness allows.
///
/// Workloads ask [`Budget::exhausted`] only before starting a unit of work
/// they would otherwise do, so a `true` answer means work was cut short:
/// the budget remembers it, and the result line reports it as
/// `timed_out=1` (the VM tests fail on that: the workload did less than
/// the test declares).
pub struct Budget {
    start: Instant,
    limit: Duration,
    cut_short: AtomicBool,
    /// The budget is the work (a soak runs until it is spent): reaching it
    /// does not cut anything short.
    soak: bool,
}

impl Budget {
    pub fn new(secs: u64) -> Budget {
        Budget {
            start: Instant::now(),
            limit: Duration::from_secs(secs),
            cut_short: AtomicBool::new(false),
            soak: false,
        }
    }
    /// A soak's budget: the workload runs until it is spent, so its result
    /// line says `timed_out=0` (its effort is judged by its counters).
    pub fn soak(secs: u64) -> Budget {
        Budget {
            soak: true,
            ..Budget::new(secs)
        }
    }
    pub fn exhausted(&self) -> bool {
        let out = self.start.elapsed() >= self.limit;
        if out && !self.soak {
            self.cut_short.store(true, Ordering::Relaxed);
        }
        out
    }
    /// 1 if [`Budget::exhausted`] ever stopped work, else 0 (the
    /// `timed_out=` field of a result line).
    pub fn timed_out(&self) -> u8 {
        u8::from(self.cut_short.load(Ordering::Relaxed))
    }
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Swap counters from /proc/vmstat, for the workload's own summary line.
pub fn vmstat(keys: &[&str]) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    keys.iter()
        .map(|k| {
            text.lines()
                .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix(' ')))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Sums of the per-size mTHP counters under
/// `/sys/kernel/mm/transparent_hugepage/hugepages-*/stats/` (Linux 6.9+),
/// in the order of `keys` (e.g. `anon_fault_alloc`, `swpout`,
/// `swpout_fallback`); zeros where the kernel has no such counters.
pub fn mthp_stats(keys: &[&str]) -> Vec<u64> {
    let mut sums = vec![0u64; keys.len()];
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/transparent_hugepage") else {
        return sums;
    };
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("hugepages-") {
            continue;
        }
        for (k, sum) in keys.iter().zip(sums.iter_mut()) {
            let v = std::fs::read_to_string(e.path().join("stats").join(k)).unwrap_or_default();
            *sum += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    sums
}

/// Writes the first word of the page at `p` with its own value through an
/// atomic compare-exchange: a write fault (swap-in, COW, unshare) that
/// cannot change the data even when it races with a move of the page.
///
/// # Safety
/// `p` must point into a readable and writable mapping, 8-byte aligned.
pub unsafe fn touch_write(p: *mut u8) {
    // SAFETY: per the caller's contract; an AtomicU64 has the layout of u64.
    let a = unsafe { &*p.cast::<std::sync::atomic::AtomicU64>() };
    // Not fetch_or(0): LLVM lowers an idempotent RMW on x86 to a fenced
    // load, which never faults for write. A compare-exchange of a value
    // with itself is a locked write cycle on x86 whether it succeeds or not.
    let v = a.load(std::sync::atomic::Ordering::Relaxed);
    let _ = a.compare_exchange(
        v,
        v,
        std::sync::atomic::Ordering::Relaxed,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// The calling thread's kernel task id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// A small, fast, deterministic generator (xorshift64); `s` must not be 0.
pub fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// A block device (or file) opened with O_DIRECT.
pub struct DirectDev {
    fd: OwnedFd,
    pub size: u64,
}

impl DirectDev {
    pub fn open(path: &str) -> io::Result<DirectDev> {
        let c = CString::new(path).map_err(|_| io::Error::other("device path contains NUL"))?;
        // SAFETY: opening a path we own the string for.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_DIRECT | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(last_err(&format!("open {path} with O_DIRECT")));
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: lseek on our descriptor.
        let size = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_END) };
        if size < 0 {
            return Err(last_err("lseek"));
        }
        Ok(DirectDev {
            fd,
            size: size as u64,
        })
    }

    pub fn raw_fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// `pread` into `len` bytes at `buf`; returns the byte count.
    ///
    /// # Safety
    /// `buf` must be valid for `len` writable bytes for the whole call.
    pub unsafe fn pread(&self, buf: *mut u8, len: usize, off: u64) -> io::Result<usize> {
        // SAFETY: per the caller's contract.
        let n = unsafe { libc::pread(self.fd.as_raw_fd(), buf.cast(), len, off as libc::off_t) };
        if n < 0 {
            return Err(last_err("O_DIRECT pread"));
        }
        Ok(n as usize)
    }

    /// # Safety
    /// `buf` must be valid for `len` readable bytes for the whole call.
    pub unsafe fn pwrite(&self, buf: *const u8, len: usize, off: u64) -> io::Result<usize> {
        // SAFETY: per the caller's contract.
        let n = unsafe { libc::pwrite(self.fd.as_raw_fd(), buf.cast(), len, off as libc::off_t) };
        if n < 0 {
            return Err(last_err("O_DIRECT pwrite"));
        }
        Ok(n as usize)
    }

    /// Writes the pattern `seed` over the first `pages` pages of the device
    /// (page `i` of the device holds pattern page `i`).
    pub fn fill(&self, seed: u64, pages: usize) -> io::Result<()> {
        const CHUNK: usize = 64;
        let buf = Mapping::anon(CHUNK * PAGE)?;
        let mut done = 0;
        while done < pages {
            let n = CHUNK.min(pages - done);
            for i in 0..n {
                // SAFETY: page i of our own mapping.
                unsafe { fill_page(buf.page_ptr(i), seed, (done + i) as u64) };
            }
            // SAFETY: the mapping outlives the call and holds n pages.
            let w = unsafe { self.pwrite(buf.page_ptr(0), n * PAGE, (done * PAGE) as u64)? };
            if w != n * PAGE {
                return Err(io::Error::other(format!("short O_DIRECT write: {w} bytes")));
            }
            done += n;
        }
        // SAFETY: fsync on our descriptor.
        unsafe { libc::fsync(self.fd.as_raw_fd()) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_never_zero_and_differs_per_page() {
        for p in 0..64 {
            assert_ne!(pattern_word(1, p, 0), 0);
            assert_ne!(pattern_word(1, p, 0), pattern_word(1, p + 1, 0));
            assert_ne!(pattern_word(1, p, 0), pattern_word(2, p, 0));
        }
    }

    #[test]
    fn page_round_trip_and_corruption_is_seen() {
        let m = Mapping::anon(2 * PAGE).expect("mmap");
        // SAFETY: pages of our own mapping.
        unsafe {
            fill_page(m.page_ptr(1), 7, 1);
            assert!(check_page(m.page_ptr(1), 7, 1).is_none());
            assert!(check_page(m.page_ptr(1), 7, 2).is_some());
            m.page_ptr(1).add(100).write(0);
            let bad = check_page(m.page_ptr(1), 7, 1).expect("mismatch");
            assert_eq!(bad.word, 12);
            // An untouched page reads as zeros and never passes.
            assert!(check_page(m.page_ptr(0), 7, 0).is_some());
        }
    }
}
