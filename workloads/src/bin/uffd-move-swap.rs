//! UFFDIO_MOVE over swapped-out and swap-cached pages (seed 000).
//!
//! Each iteration fills a source range with a known pattern, pushes it to
//! swap with MADV_PAGEOUT, and moves it page by page (or `--pages-per-move`
//! pages per call) into a userfaultfd-registered destination while helper
//! threads
//!   - fault source pages back in (so some moves find a present folio that
//!     is still in the swap cache, others a swap PTE with or without a
//!     cached folio); with `--chase`, one faults in the first page of each
//!     move at the moment the move starts,
//!   - keep paging both ranges out (entries freed while a move looks them up),
//!   - churn a private region through swap (entries freed and reallocated
//!     quickly, which is what makes an ABA on an entry possible).
//!
//! Every destination page must end with exactly the data its source page
//! had, and every source word read during the run must be either the
//! pattern or zero (a moved-away page).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use clap::Parser;
use workloads::{
    check_page, fill_page, last_err, pattern_word, vmstat, Budget, Mapping, EXIT_CORRUPT,
    EXIT_SKIP, PAGE,
};

/// Moves swapped pages with UFFDIO_MOVE under concurrent faults and reclaim.
#[derive(Parser)]
struct Args {
    /// Size of the moved range per iteration, in MiB.
    #[arg(long, default_value_t = 8)]
    mib: usize,
    /// Iterations (a fresh source and destination each).
    #[arg(long, default_value_t = 12)]
    iterations: u64,
    /// Threads faulting source pages in.
    #[arg(long, default_value_t = 1)]
    faulters: usize,
    /// Contiguous pages per UFFDIO_MOVE (chunks still moved in a scattered
    /// order): a longer call keeps its early lookups open while the faulters'
    /// swap-ins and readahead fill the swap cache.
    #[arg(long, default_value_t = 1)]
    pages_per_move: usize,
    /// A thread faults in the first page of each chunk at the moment its
    /// move starts (the two meet at a handshake): the fault reads the swap
    /// PTE before the move takes it, so its swap-in adds the entry to the
    /// swap cache while the move's lookup of it is still open (the seed-000
    /// missed lookup, which 6.12 catches by re-checking SWAP_HAS_CACHE).
    #[arg(long)]
    chase: bool,
    /// Stop after this many seconds (the current iteration is finished).
    #[arg(long, default_value_t = 90)]
    seconds: u64,
}

// include/uapi/linux/userfaultfd.h
const UFFD_API: u64 = 0xAA;
const UFFD_FEATURE_MOVE: u64 = 1 << 16;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (0xAA << 8) | nr
}
const UFFDIO_API: u64 = iowr(0x3F, 24);
const UFFDIO_REGISTER: u64 = iowr(0x00, 32);
const UFFDIO_MOVE: u64 = iowr(0x05, 40);

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    moved: i64,
}

fn uffd_open(features: u64) -> std::io::Result<(OwnedFd, u64)> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(last_err("userfaultfd"));
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = UffdioApi {
        api: UFFD_API,
        features,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API reads and writes a struct uffdio_api we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API as _, &mut api) } != 0 {
        return Err(last_err("UFFDIO_API"));
    }
    Ok((fd, api.features))
}

fn register(fd: &OwnedFd, m: &Mapping) -> std::io::Result<()> {
    let mut r = UffdioRegister {
        start: m.addr() as u64,
        len: m.len() as u64,
        mode: UFFDIO_REGISTER_MODE_MISSING,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_REGISTER on our own mapping with a struct we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER as _, &mut r) } != 0 {
        return Err(last_err("UFFDIO_REGISTER"));
    }
    Ok(())
}

/// Counters reported at the end.
#[derive(Default)]
struct Stats {
    moved: AtomicU64,
    eagain: AtomicU64,
    ebusy: AtomicU64,
    faults: AtomicU64,
    pageouts: AtomicU64,
    churned: AtomicU64,
    bad_words: AtomicU64,
}

/// Moves `len` bytes, retrying the rest while the kernel says the source
/// is in flux (a partial move reports how much it moved).
fn move_range(fd: &OwnedFd, dst: usize, src: usize, len: usize, st: &Stats) -> Result<(), String> {
    let mut done = 0usize;
    for _ in 0..100_000 {
        let mut mv = UffdioMove {
            dst: (dst + done) as u64,
            src: (src + done) as u64,
            len: (len - done) as u64,
            mode: 0,
            moved: 0,
        };
        // SAFETY: UFFDIO_MOVE between two mappings of this process.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_MOVE as _, &mut mv) };
        let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if mv.moved > 0 {
            done += mv.moved as usize;
            st.moved
                .fetch_add(mv.moved as u64 / PAGE as u64, Ordering::Relaxed);
        }
        if done >= len {
            return Ok(());
        }
        if rc == 0 {
            continue;
        }
        match errno {
            libc::EAGAIN => st.eagain.fetch_add(1, Ordering::Relaxed),
            // A folio briefly pinned or locked by a racing fault/reclaim.
            libc::EBUSY => st.ebusy.fetch_add(1, Ordering::Relaxed),
            _ => {
                return Err(format!(
                    "UFFDIO_MOVE {:#x} -> {:#x} failed: {} (moved {})",
                    src + done,
                    dst + done,
                    std::io::Error::from_raw_os_error(errno),
                    mv.moved
                ))
            }
        };
        std::thread::yield_now();
    }
    Err(format!(
        "UFFDIO_MOVE {src:#x} kept failing with EAGAIN/EBUSY"
    ))
}

/// Reads a source page word by word: each word must be the pattern (not yet
/// moved) or zero (moved away; the read mapped the zero page).
fn probe_source(src: &Mapping, page: usize, seed: u64, st: &Stats) {
    let p = src.page_ptr(page).cast::<u64>();
    for w in (0..PAGE / 8).step_by(61) {
        // SAFETY: in bounds of our own mapping.
        let v = unsafe { p.add(w).read_volatile() };
        if v != 0
            && v != pattern_word(seed, page as u64, w as u64)
            && st.bad_words.fetch_add(1, Ordering::Relaxed) < 10
        {
            eprintln!(
                "uffd-move-swap: source page {page} word {w} reads {v:#x}: neither the pattern nor zero"
            );
        }
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

/// Ok(corrupt word count), or why the run could not complete.
fn run(a: &Args) -> anyhow::Result<u64> {
    let (probe_fd, features) = uffd_open(0)?;
    drop(probe_fd);
    if features & UFFD_FEATURE_MOVE == 0 {
        println!("SKIP: this kernel has no UFFDIO_MOVE (UFFD_FEATURE_MOVE arrived in Linux 6.8)");
        std::process::exit(EXIT_SKIP);
    }
    let budget = Budget::new(a.seconds);
    let st = Stats::default();
    let churn = Mapping::anon(2 << 20)?;
    let before = vmstat(&["pswpin", "pswpout"]);
    let mut iterations = 0;
    let mut failure = None;
    for iter in 0..a.iterations {
        if budget.exhausted() {
            break;
        }
        let seed = 1000 + iter;
        let src = Mapping::anon(a.mib << 20)?;
        let dst = Mapping::anon(a.mib << 20)?;
        let pages = src.pages();
        let (fd, _) = uffd_open(UFFD_FEATURE_MOVE)?;
        register(&fd, &dst)?;
        for i in 0..pages {
            // SAFETY: page i of our own mapping.
            unsafe { fill_page(src.page_ptr(i), seed, i as u64) };
        }
        src.madvise(0, pages, libc::MADV_PAGEOUT)?;
        let stop = AtomicBool::new(false);
        // Handshake with the chaser: the mover publishes `chunk = page + 1`,
        // the chaser answers `ack = page + 1` just before it faults the page.
        let (chunk, ack) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let result = std::thread::scope(|s| {
            if a.chase {
                let (src, st, stop, chunk, ack) = (&src, &st, &stop, &chunk, &ack);
                s.spawn(move || {
                    let mut seen = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let c = chunk.load(Ordering::Acquire);
                        if c == seen {
                            std::thread::yield_now();
                            continue;
                        }
                        seen = c;
                        ack.store(c, Ordering::Release);
                        probe_source(src, c - 1, seed, st);
                        st.faults.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for f in 0..a.faulters {
                let (src, st, stop) = (&src, &st, &stop);
                s.spawn(move || {
                    let mut rng = 0x1234_5678_9abc_def1u64 ^ ((f as u64 + 1) << 32) ^ seed;
                    while !stop.load(Ordering::Relaxed) {
                        let p = (xorshift(&mut rng) as usize) % pages;
                        probe_source(src, p, seed, st);
                        st.faults.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            {
                let (src, dst, st, stop) = (&src, &dst, &st, &stop);
                s.spawn(move || {
                    let chunk = 64.min(pages);
                    let mut at = 0;
                    while !stop.load(Ordering::Relaxed) {
                        // Push the not-yet-moved sources and the already
                        // moved destinations back out, a chunk at a time.
                        let _ = src.madvise(at, chunk, libc::MADV_PAGEOUT);
                        let _ = dst.madvise(at, chunk, libc::MADV_PAGEOUT);
                        st.pageouts.fetch_add(1, Ordering::Relaxed);
                        at = (at + chunk) % (pages - chunk + 1);
                    }
                });
            }
            {
                let (churn, st, stop) = (&churn, &st, &stop);
                s.spawn(move || {
                    let mut round = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..churn.pages() {
                            // SAFETY: page i of our own mapping.
                            unsafe { fill_page(churn.page_ptr(i), round, i as u64) };
                        }
                        let _ = churn.madvise(0, churn.pages(), libc::MADV_PAGEOUT);
                        for i in 0..churn.pages() {
                            // SAFETY: as above.
                            if unsafe { check_page(churn.page_ptr(i), round, i as u64) }.is_some() {
                                st.bad_words.fetch_add(1, Ordering::Relaxed);
                                eprintln!("uffd-move-swap: churn page {i} lost its data");
                            }
                        }
                        st.churned
                            .fetch_add(churn.pages() as u64, Ordering::Relaxed);
                        round += 1;
                    }
                });
            }
            // Move in a scattered order so moves, faults and pageouts of
            // neighbouring entries interleave.
            let mut res = Ok(());
            let per = a.pages_per_move.clamp(1, pages);
            // 7919 is prime: k -> 7919 k mod chunks visits every chunk.
            let chunks = pages.div_ceil(per);
            for k in 0..chunks {
                let i = (k * 7919) % chunks * per;
                let (d, s) = (dst.addr() + i * PAGE, src.addr() + i * PAGE);
                if a.chase {
                    chunk.store(i + 1, Ordering::Release);
                    // Bounded: a chaser that never answers only costs time.
                    for _ in 0..100_000 {
                        if ack.load(Ordering::Acquire) == i + 1 {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
                if let Err(e) = move_range(&fd, d, s, per.min(pages - i) * PAGE, &st) {
                    res = Err(e);
                    break;
                }
            }
            stop.store(true, Ordering::Relaxed);
            res
        });
        // Unregister before verifying: a destination hole must read as a
        // (wrong) zero page, not block on a missing-page fault forever.
        drop(fd);
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
        for i in 0..pages {
            // SAFETY: page i of our own mapping.
            if let Some(m) = unsafe { check_page(dst.page_ptr(i), seed, i as u64) } {
                if st.bad_words.fetch_add(1, Ordering::Relaxed) < 10 {
                    eprintln!(
                        "uffd-move-swap: iteration {iter}: destination page {i} word {} is {:#x}, expected {:#x}",
                        m.word, m.found, m.expected
                    );
                }
            }
            probe_source(&src, i, seed, &st);
        }
        iterations += 1;
    }
    let after = vmstat(&["pswpin", "pswpout"]);
    println!(
        "result: iterations={iterations} moved={} eagain={} ebusy={} source_reads={} pageout_calls={} churned_pages={} bad={} pswpin={} pswpout={} secs={:.1} timed_out={}",
        st.moved.load(Ordering::Relaxed),
        st.eagain.load(Ordering::Relaxed),
        st.ebusy.load(Ordering::Relaxed),
        st.faults.load(Ordering::Relaxed),
        st.pageouts.load(Ordering::Relaxed),
        st.churned.load(Ordering::Relaxed),
        st.bad_words.load(Ordering::Relaxed),
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    match failure {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(st.bad_words.load(Ordering::Relaxed)),
    }
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Err(e) => {
            eprintln!("uffd-move-swap: {e:#}");
            ExitCode::from(2)
        }
        Ok(0) => ExitCode::SUCCESS,
        Ok(bad) => {
            eprintln!("uffd-move-swap: {bad} words read back wrong: a page was moved or swapped in with the wrong data");
            ExitCode::from(EXIT_CORRUPT as u8)
        }
    }
}
