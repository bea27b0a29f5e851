//! UFFDIO_MOVE over swapped-out and swap-cached pages (seed 000).
//!
//! Each iteration fills a source range with a known pattern, pushes it to
//! swap with MADV_PAGEOUT, and moves it page by page into a userfaultfd-
//! registered destination while helper threads
//!   - fault source pages back in (so some moves find a present folio that
//!     is still in the swap cache, others a swap PTE with or without a
//!     cached folio),
//!   - keep paging both ranges out (entries freed while a move looks them up),
//!   - churn a private region through swap (entries freed and reallocated
//!     quickly, which is what makes an ABA on an entry possible).
//!
//! With `--siblings N`, N more threads of the same process churn the page
//! being moved and its neighbours (read and write faults, MADV_PAGEOUT and
//! re-faults), so between the mover's swap-cache lookup and its PTE
//! recheck an entry is swapped in, freed, and reallocated, and the move
//! retries on a page that is present again. With `--chase`, one thread
//! faults in the first page of each move at the moment the move starts
//! (the two meet at a handshake), so the fault's swap-in fills the swap
//! cache while the move's lookup of that entry is open. With `--large-folios` the
//! source may be backed by mTHP folios, which reach the swap cache whole.
//!
//! Every destination page must end with exactly the data its source page
//! had, and every source word read during the run must be either the
//! pattern or zero (a moved-away page).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use clap::Parser;
use workloads::uffd::{Uffd, UFFD_FEATURE_MOVE};
use workloads::{
    check_page, fill_page, mthp_stats, pattern_word, touch_write, vmstat, xorshift, Budget,
    Mapping, EXIT_CORRUPT, EXIT_SKIP, PAGE,
};

/// Moves swapped pages with UFFDIO_MOVE under concurrent faults and reclaim.
#[derive(Parser)]
struct Args {
    /// Size of the moved range per iteration, in MiB.
    #[arg(long, default_value_t = 8)]
    mib: usize,
    /// Iterations (a fresh source and destination each); 0 runs until
    /// `--seconds` is spent (a soak, judged by its counters).
    #[arg(long, default_value_t = 12)]
    iterations: u64,
    /// Threads faulting source pages in.
    #[arg(long, default_value_t = 1)]
    faulters: usize,
    /// Stop after this many seconds (the current iteration is finished).
    #[arg(long, default_value_t = 90)]
    seconds: u64,
    /// Sibling threads that churn the page being moved and its neighbours:
    /// read and write faults, MADV_PAGEOUT and re-faults, so an entry the
    /// mover looked up is swapped in, freed, and its folio swapped out and
    /// in again under other entries while the move is still deciding.
    #[arg(long, default_value_t = 0)]
    siblings: usize,
    /// How many pages either side of the page being moved the siblings hit.
    #[arg(long, default_value_t = 8)]
    neighbours: usize,
    /// Map the source (and the churn region) where the kernel may use large
    /// folios (mTHP), so large folios go through the swap cache. UFFDIO_MOVE
    /// refuses a large swap-cache folio with EBUSY; the mover then faults the
    /// page in (a present large folio is split by the move) and retries.
    #[arg(long)]
    large_folios: bool,
    /// Pages per UFFDIO_MOVE call (contiguous; the runs are moved in a
    /// scattered order). One call looks up and moves each page in turn, so
    /// a longer call keeps its earlier lookups' entries in view longer.
    #[arg(long, default_value_t = 1)]
    move_pages: usize,
    /// A thread faults in the first page of each move at the moment the move
    /// starts: the fault reads the swap PTE before the move takes it, so its
    /// swap-in adds the entry to the swap cache while the move's lookup of
    /// it is still open (the seed-000 missed lookup, which 6.12 catches by
    /// re-checking SWAP_HAS_CACHE).
    #[arg(long)]
    chase: bool,
}

/// Counters reported at the end.
#[derive(Default)]
struct Stats {
    moved: AtomicU64,
    eagain: AtomicU64,
    ebusy: AtomicU64,
    /// Moves that kept failing with EBUSY until the mover faulted the
    /// source page in (a large swap-cache folio).
    ebusy_fallbacks: AtomicU64,
    sibling_reads: AtomicU64,
    sibling_writes: AtomicU64,
    sibling_pageouts: AtomicU64,
    /// Moved destination pages the siblings read back and verified.
    sibling_dst_checks: AtomicU64,
    faults: AtomicU64,
    pageouts: AtomicU64,
    churned: AtomicU64,
    bad_words: AtomicU64,
}

/// Consecutive EBUSY answers after which the mover faults the source page
/// in: a large folio in the swap cache is refused with EBUSY every time
/// (6.12 cannot split an unmapped large swap-cache folio), a mapped one is
/// split by the move.
const EBUSY_BEFORE_FAULT: u32 = 4;

/// Moves `npages` contiguous pages, in as many UFFDIO_MOVE calls as it
/// takes (a call may move part of the range and then fail), retrying while
/// the kernel says a source page is in flux. `done(i)` is called for each
/// page moved, in order.
fn move_pages(
    fd: &Uffd,
    dst: usize,
    src: usize,
    npages: usize,
    st: &Stats,
    mut done: impl FnMut(usize),
) -> Result<(), String> {
    let mut busy_run = 0;
    let mut at = 0;
    for _ in 0..100_000 {
        let off = at * PAGE;
        let (n, err) = fd.move_range(dst + off, src + off, (npages - at) * PAGE);
        if n % PAGE != 0 {
            return Err(format!(
                "UFFDIO_MOVE {:#x} moved {n} bytes, not whole pages",
                src + off
            ));
        }
        for i in at..at + n / PAGE {
            done(i);
        }
        st.moved.fetch_add((n / PAGE) as u64, Ordering::Relaxed);
        at += n / PAGE;
        if n > 0 {
            busy_run = 0;
        }
        let errno = match err {
            None if at == npages => return Ok(()),
            None => continue,
            Some(e) => e,
        };
        let src_page = src + at * PAGE;
        match errno {
            libc::EAGAIN => {
                busy_run = 0;
                st.eagain.fetch_add(1, Ordering::Relaxed);
            }
            // A folio briefly pinned or locked by a racing fault/reclaim, or
            // a large folio in the swap cache.
            libc::EBUSY => {
                st.ebusy.fetch_add(1, Ordering::Relaxed);
                busy_run += 1;
                if busy_run >= EBUSY_BEFORE_FAULT {
                    busy_run = 0;
                    st.ebusy_fallbacks.fetch_add(1, Ordering::Relaxed);
                    // SAFETY: the source page is ours and not moved yet
                    // (only this thread moves it).
                    unsafe { touch_write(src_page as *mut u8) };
                }
            }
            _ => {
                return Err(format!(
                    "UFFDIO_MOVE {src_page:#x} -> {:#x} failed: {}",
                    dst + at * PAGE,
                    std::io::Error::from_raw_os_error(errno),
                ))
            }
        }
        std::thread::yield_now();
    }
    Err(format!(
        "UFFDIO_MOVE {src:#x} kept failing with EAGAIN/EBUSY"
    ))
}

/// One sibling of the mover: churns the page being moved and its
/// neighbours until `stop`. Source pages are only ever written with their
/// own value (an atomic RMW), so the data the mover carries never changes;
/// destination pages are touched only once moved, and then verified.
#[allow(clippy::too_many_arguments)]
fn sibling(
    id: usize,
    src: &Mapping,
    dst: &Mapping,
    moved: &[AtomicBool],
    cursor: &AtomicUsize,
    neighbours: usize,
    seed: u64,
    st: &Stats,
    stop: &AtomicBool,
) {
    let pages = src.pages();
    let mut rng = 0x2545_f491_4f6c_dd1du64 ^ ((id as u64 + 1) << 40) ^ seed;
    let span = 2 * neighbours + 1;
    while !stop.load(Ordering::Relaxed) {
        let c = cursor.load(Ordering::Relaxed);
        let r = xorshift(&mut rng);
        let p = (c + pages + (r as usize % span)).saturating_sub(neighbours) % pages;
        let lo = p.saturating_sub(2);
        let n = (p + 3).min(pages) - lo;
        match (r >> 32) % 4 {
            0 => {
                probe_source(src, p, seed, st);
                st.sibling_reads.fetch_add(1, Ordering::Relaxed);
            }
            1 => {
                // Write fault: a swapped page comes in and its entry is
                // freed (the folio leaves the swap cache).
                // SAFETY: page p of our own source mapping.
                unsafe { touch_write(src.page_ptr(p)) };
                st.sibling_writes.fetch_add(1, Ordering::Relaxed);
            }
            2 => {
                // Out, in (write: the entry is freed), out again under a new
                // entry, and in again (read: stays in the swap cache).
                let _ = src.madvise(lo, n, libc::MADV_PAGEOUT);
                // SAFETY: as above.
                unsafe { touch_write(src.page_ptr(p)) };
                let _ = src.madvise(lo, n, libc::MADV_PAGEOUT);
                probe_source(src, p, seed, st);
                st.sibling_pageouts.fetch_add(2, Ordering::Relaxed);
                st.sibling_writes.fetch_add(1, Ordering::Relaxed);
                st.sibling_reads.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                // Moved neighbours in the destination: out and back in,
                // verified.
                let _ = dst.madvise(lo, n, libc::MADV_PAGEOUT);
                st.sibling_pageouts.fetch_add(1, Ordering::Relaxed);
                if moved[p].load(Ordering::Acquire) {
                    // SAFETY: page p of the destination, already moved (so
                    // present or swapped, never a missing-page fault).
                    if let Some(m) = unsafe { check_page(dst.page_ptr(p), seed, p as u64) } {
                        if st.bad_words.fetch_add(1, Ordering::Relaxed) < 10 {
                            eprintln!(
                                "uffd-move-swap: moved destination page {p} word {} is {:#x}, expected {:#x}",
                                m.word, m.found, m.expected
                            );
                        }
                    }
                    st.sibling_dst_checks.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
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

const MTHP_KEYS: &[&str] = &["anon_fault_alloc", "swpout", "swpout_fallback"];

/// Spawns a named thread (the name is the task's `comm` in the detector's
/// evidence, so a chain says which helper did what).
fn spawn_named<'s, 'e, F>(s: &'s std::thread::Scope<'s, 'e>, name: String, f: F)
where
    F: FnOnce() + Send + 's,
{
    if let Err(e) = std::thread::Builder::new().name(name).spawn_scoped(s, f) {
        eprintln!("uffd-move-swap: cannot start a helper thread: {e}");
        std::process::exit(2);
    }
}

/// Ok(corrupt word count), or why the run could not complete.
fn run(a: &Args) -> anyhow::Result<u64> {
    if !Uffd::move_supported()? {
        println!("SKIP: this kernel has no UFFDIO_MOVE (UFFD_FEATURE_MOVE arrived in Linux 6.8)");
        std::process::exit(EXIT_SKIP);
    }
    let run = a.move_pages.max(1);
    anyhow::ensure!(
        ((a.mib << 20) / PAGE).is_multiple_of(run),
        "--move-pages must divide the {} pages of --mib",
        (a.mib << 20) / PAGE
    );
    // --iterations 0: a soak that runs until the budget is spent.
    let budget = if a.iterations == 0 {
        Budget::soak(a.seconds)
    } else {
        Budget::new(a.seconds)
    };
    let st = Stats::default();
    let map = |len| {
        if a.large_folios {
            Mapping::anon_large_folios(len)
        } else {
            Mapping::anon(len)
        }
    };
    let churn = map(2 << 20)?;
    let before = vmstat(&["pswpin", "pswpout"]);
    let mthp_before = mthp_stats(MTHP_KEYS);
    let mut iterations = 0;
    let mut failure = None;
    for iter in 0..if a.iterations == 0 {
        u64::MAX
    } else {
        a.iterations
    } {
        if budget.exhausted() {
            break;
        }
        let seed = 1000 + iter;
        let src = map(a.mib << 20)?;
        let dst = Mapping::anon(a.mib << 20)?;
        let pages = src.pages();
        let fd = Uffd::open(UFFD_FEATURE_MOVE)?;
        fd.register(&dst)?;
        let moved: Vec<AtomicBool> = (0..pages).map(|_| AtomicBool::new(false)).collect();
        let cursor = AtomicUsize::new(0);
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
                spawn_named(s, "chaser".to_string(), move || {
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
                spawn_named(s, "faulter".to_string(), move || {
                    let mut rng = 0x1234_5678_9abc_def1u64 ^ ((f as u64 + 1) << 32) ^ seed;
                    while !stop.load(Ordering::Relaxed) {
                        let p = (xorshift(&mut rng) as usize) % pages;
                        probe_source(src, p, seed, st);
                        st.faults.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            for id in 0..a.siblings {
                let (src, dst, moved, cursor, st, stop) = (&src, &dst, &moved, &cursor, &st, &stop);
                let neighbours = a.neighbours;
                spawn_named(s, format!("sibling-{id}"), move || {
                    sibling(id, src, dst, moved, cursor, neighbours, seed, st, stop);
                });
            }
            {
                let (src, dst, st, stop) = (&src, &dst, &st, &stop);
                spawn_named(s, "pager".to_string(), move || {
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
                spawn_named(s, "churn".to_string(), move || {
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
            let runs = pages / run;
            for k in 0..runs {
                let first = (k * 7919) % runs * run;
                cursor.store(first, Ordering::Relaxed);
                let (d, s) = (dst.addr() + first * PAGE, src.addr() + first * PAGE);
                if a.chase {
                    chunk.store(first + 1, Ordering::Release);
                    // Bounded: a chaser that never answers only costs time.
                    for _ in 0..100_000 {
                        if ack.load(Ordering::Acquire) == first + 1 {
                            break;
                        }
                        std::thread::yield_now();
                    }
                }
                if let Err(e) = move_pages(&fd, d, s, run, &st, |i| {
                    moved[first + i].store(true, Ordering::Release);
                    cursor.store(first + i + 1, Ordering::Relaxed);
                }) {
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
    let mthp_after = mthp_stats(MTHP_KEYS);
    let ld = |x: &AtomicU64| x.load(Ordering::Relaxed);
    println!(
        "result: iterations={iterations} moved={} eagain={} ebusy={} ebusy_fallbacks={} source_reads={} pageout_calls={} churned_pages={} \
         sibling_reads={} sibling_writes={} sibling_pageouts={} sibling_dst_checks={} bad={} pswpin={} pswpout={} \
         mthp_anon_fault_alloc={} mthp_swpout={} mthp_swpout_fallback={} secs={:.1} timed_out={}",
        ld(&st.moved),
        ld(&st.eagain),
        ld(&st.ebusy),
        ld(&st.ebusy_fallbacks),
        ld(&st.faults),
        ld(&st.pageouts),
        ld(&st.churned),
        ld(&st.sibling_reads),
        ld(&st.sibling_writes),
        ld(&st.sibling_pageouts),
        ld(&st.sibling_dst_checks),
        ld(&st.bad_words),
        after[0] - before[0],
        after[1] - before[1],
        mthp_after[0] - mthp_before[0],
        mthp_after[1] - mthp_before[1],
        mthp_after[2] - mthp_before[2],
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
