//! Thousands of short-lived threads over swapped memory, so task ids are
//! reused while the detector tracks per-task state.
//!
//! Rounds of `--concurrency` threads are spawned and joined until the time
//! budget is spent. Each thread does one task and exits:
//!   - **swap-in**: takes a chunk of a shared pool that MADV_PAGEOUT pushed
//!     to swap, verifies it (read faults), rewrites it with the chunk's next
//!     generation (write faults) and pages it out again;
//!   - **fork/COW**: pages a chunk out and forks; the child verifies the
//!     chunk (swap-in of a shared entry), writes its own pattern over it
//!     (COW), verifies that and exits; the parent thread writes and verifies
//!     its own next generation meanwhile, then reaps the child;
//!   - **move** (when the kernel has UFFDIO_MOVE): fills a private source,
//!     pages it out and moves it page by page into a userfaultfd-registered
//!     destination, which must then hold the source's data.
//!
//! Linux hands out pids cyclically up to `/proc/sys/kernel/pid_max`; with a
//! small pid_max (the VM test lowers it) ids wrap within seconds, and every
//! id a thread or child gets that an earlier one had is counted as a reuse.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Parser;
use workloads::uffd::{Uffd, UFFD_FEATURE_MOVE};
use workloads::{
    check_page, fill_page, gettid, touch_write, vmstat, xorshift, Budget, Mapping, EXIT_CORRUPT,
    PAGE,
};

/// Spawns and joins short-lived threads doing swap-in, fork/COW and
/// UFFDIO_MOVE until the time budget is spent.
#[derive(Parser)]
struct Args {
    /// Run for this many seconds (the current round is finished).
    #[arg(long, default_value_t = 300)]
    seconds: u64,
    /// Size of the shared pool the swap-in and fork tasks work on, in MiB.
    #[arg(long, default_value_t = 16)]
    mib: usize,
    /// Pages per task (one pool chunk, or one moved range).
    #[arg(long, default_value_t = 16)]
    pages: usize,
    /// Threads alive at once (one round).
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Leave out the UFFDIO_MOVE tasks even where the kernel has the ioctl.
    #[arg(long)]
    no_move: bool,
}

#[derive(Default)]
struct Stats {
    threads: AtomicU64,
    swapin_tasks: AtomicU64,
    cow_tasks: AtomicU64,
    move_tasks: AtomicU64,
    /// Tasks that found every chunk taken and did nothing.
    idle_tasks: AtomicU64,
    moved: AtomicU64,
    eagain: AtomicU64,
    ebusy: AtomicU64,
    pages_verified: AtomicU64,
    bad_pages: AtomicU64,
    child_failures: AtomicU64,
}

/// A chunk of the pool: taken by one task at a time; `gen` names the
/// pattern it holds.
struct Chunk {
    busy: AtomicBool,
    gen: AtomicU64,
}

struct Pool {
    mem: Mapping,
    chunks: Vec<Chunk>,
    pages: usize,
}

fn seed_of(chunk: usize, gen: u64) -> u64 {
    (gen << 24) | chunk as u64
}

impl Pool {
    fn take(&self, rng: &mut u64) -> Option<usize> {
        let n = self.chunks.len();
        let start = xorshift(rng) as usize % n;
        (0..n).map(|k| (start + k) % n).find(|&c| {
            self.chunks[c]
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
    }
    fn release(&self, c: usize) {
        self.chunks[c].busy.store(false, Ordering::Release);
    }
    fn page(&self, c: usize, i: usize) -> *mut u8 {
        self.mem.page_ptr(c * self.pages + i)
    }
    /// Pages of chunk `c` that differ from generation `gen`.
    fn verify(&self, c: usize, gen: u64) -> u64 {
        (0..self.pages)
            .filter(|&i| {
                // SAFETY: page of a chunk this task holds.
                unsafe { check_page(self.page(c, i), seed_of(c, gen), i as u64) }.is_some()
            })
            .count() as u64
    }
    fn fill(&self, c: usize, gen: u64) {
        for i in 0..self.pages {
            // SAFETY: page of a chunk this task holds.
            unsafe { fill_page(self.page(c, i), seed_of(c, gen), i as u64) };
        }
    }
    fn page_out(&self, c: usize) {
        let _ = self
            .mem
            .madvise(c * self.pages, self.pages, libc::MADV_PAGEOUT);
    }
}

fn report_bad(st: &Stats, n: u64, what: std::fmt::Arguments) {
    if n > 0 && st.bad_pages.fetch_add(n, Ordering::Relaxed) < 10 {
        eprintln!("tid-churn: {what}: {n} pages hold the wrong data");
    }
}

fn swapin_task(pool: &Pool, st: &Stats, rng: &mut u64) {
    let Some(c) = pool.take(rng) else {
        st.idle_tasks.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let gen = pool.chunks[c].gen.load(Ordering::Relaxed);
    report_bad(
        st,
        pool.verify(c, gen),
        format_args!("chunk {c} after swap-in"),
    );
    pool.fill(c, gen + 1);
    pool.chunks[c].gen.store(gen + 1, Ordering::Relaxed);
    pool.page_out(c);
    st.pages_verified
        .fetch_add(pool.pages as u64, Ordering::Relaxed);
    st.swapin_tasks.fetch_add(1, Ordering::Relaxed);
    pool.release(c);
}

/// Child of the fork task: only memory accesses and `_exit` (the parent is
/// multithreaded, so nothing that may take a lock).
fn cow_child(pool: &Pool, c: usize, gen: u64) -> ! {
    let mut bad = pool.verify(c, gen);
    pool.fill(c, gen + 1_000_000);
    bad += pool.verify(c, gen + 1_000_000);
    // SAFETY: _exit is async-signal-safe and ends only this child.
    unsafe { libc::_exit(if bad == 0 { 0 } else { 1 }) }
}

/// Returns the child's pid (a task id too), if the fork happened.
fn cow_task(pool: &Pool, st: &Stats, rng: &mut u64) -> Option<u32> {
    let Some(c) = pool.take(rng) else {
        st.idle_tasks.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    let gen = pool.chunks[c].gen.load(Ordering::Relaxed);
    pool.page_out(c);
    // SAFETY: the child runs only cow_child (memory accesses and _exit).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        cow_child(pool, c, gen);
    }
    if pid < 0 {
        eprintln!(
            "tid-churn: fork failed: {}",
            std::io::Error::last_os_error()
        );
        pool.release(c);
        return None;
    }
    // The parent's side of the COW, while the child does its own.
    report_bad(
        st,
        pool.verify(c, gen),
        format_args!("chunk {c} in the parent after fork"),
    );
    pool.fill(c, gen + 1);
    report_bad(
        st,
        pool.verify(c, gen + 1),
        format_args!("chunk {c} after the parent's COW"),
    );
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if r != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        st.child_failures.fetch_add(1, Ordering::Relaxed);
        report_bad(
            st,
            1,
            format_args!("chunk {c}: fork child (status {status:#x})"),
        );
    }
    pool.chunks[c].gen.store(gen + 1, Ordering::Relaxed);
    pool.page_out(c);
    st.pages_verified
        .fetch_add(2 * pool.pages as u64, Ordering::Relaxed);
    st.cow_tasks.fetch_add(1, Ordering::Relaxed);
    pool.release(c);
    Some(pid as u32)
}

fn move_task(pages: usize, st: &Stats, tid: u32) -> Result<(), String> {
    let src = Mapping::anon(pages * PAGE).map_err(|e| e.to_string())?;
    let dst = Mapping::anon(pages * PAGE).map_err(|e| e.to_string())?;
    // Children forked by the other tasks must not share these pages:
    // UFFDIO_MOVE refuses a shared (non-exclusive) page with EBUSY, and the
    // point is to move swapped pages, not to fault them in first.
    let _ = src.madvise(0, pages, libc::MADV_DONTFORK);
    let _ = dst.madvise(0, pages, libc::MADV_DONTFORK);
    let seed = 0x7000_0000_0000 | u64::from(tid);
    for i in 0..pages {
        // SAFETY: page i of our own mapping.
        unsafe { fill_page(src.page_ptr(i), seed, i as u64) };
    }
    let _ = src.madvise(0, pages, libc::MADV_PAGEOUT);
    let fd = Uffd::open(UFFD_FEATURE_MOVE).map_err(|e| e.to_string())?;
    fd.register(&dst).map_err(|e| e.to_string())?;
    for i in 0..pages {
        let (d, s) = (dst.addr() + i * PAGE, src.addr() + i * PAGE);
        let mut busy = 0;
        loop {
            match fd.move_range(d, s, PAGE) {
                (PAGE, _) => break,
                (n, None) => return Err(format!("UFFDIO_MOVE moved {n} bytes of a page")),
                (_, Some(libc::EAGAIN)) => {
                    st.eagain.fetch_add(1, Ordering::Relaxed);
                }
                (_, Some(libc::EBUSY)) => {
                    st.ebusy.fetch_add(1, Ordering::Relaxed);
                    busy += 1;
                    if busy % 4 == 0 {
                        // A large folio in the swap cache: map it, the move
                        // splits it.
                        // SAFETY: the source page is ours and not moved yet.
                        unsafe { touch_write(s as *mut u8) };
                    }
                    if busy > 10_000 {
                        return Err("UFFDIO_MOVE kept failing with EBUSY".into());
                    }
                }
                (_, Some(e)) => {
                    return Err(format!(
                        "UFFDIO_MOVE failed: {}",
                        std::io::Error::from_raw_os_error(e)
                    ))
                }
            }
        }
        st.moved.fetch_add(1, Ordering::Relaxed);
    }
    drop(fd);
    let bad = (0..pages)
        .filter(|&i| {
            // SAFETY: page i of our own destination, moved (present or swapped).
            unsafe { check_page(dst.page_ptr(i), seed, i as u64) }.is_some()
        })
        .count() as u64;
    report_bad(st, bad, format_args!("moved range of task {tid}"));
    st.pages_verified.fetch_add(pages as u64, Ordering::Relaxed);
    st.move_tasks.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

fn read_u64(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn run(a: &Args) -> anyhow::Result<u64> {
    anyhow::ensure!(
        a.pages > 0 && a.concurrency > 0,
        "--pages and --concurrency must be at least 1"
    );
    let budget = Budget::soak(a.seconds);
    let can_move = !a.no_move && Uffd::move_supported()?;
    let mem = Mapping::anon(a.mib << 20)?;
    let nchunks = mem.pages() / a.pages;
    anyhow::ensure!(
        nchunks >= a.concurrency,
        "--mib is too small for --pages x --concurrency"
    );
    let pool = Pool {
        mem,
        chunks: (0..nchunks)
            .map(|_| Chunk {
                busy: AtomicBool::new(false),
                gen: AtomicU64::new(0),
            })
            .collect(),
        pages: a.pages,
    };
    for c in 0..nchunks {
        pool.fill(c, 0);
    }
    let _ = pool.mem.madvise(0, pool.mem.pages(), libc::MADV_PAGEOUT);
    let before = vmstat(&["pswpin", "pswpout"]);
    let st = Stats::default();
    let kinds = if can_move { 3 } else { 2 };
    let mut seen: HashMap<u32, u32> = HashMap::new();
    let (mut reuses, mut spawned) = (0u64, 0u64);
    let mut failure: Option<String> = None;
    let mut round = 0u64;
    while !budget.exhausted() && failure.is_none() {
        let ids: Vec<Result<(u32, Option<u32>), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..a.concurrency)
                .map(|k| {
                    let (pool, st) = (&pool, &st);
                    let kind = (round as usize + k) % kinds;
                    let pages = a.pages;
                    std::thread::Builder::new()
                        .stack_size(128 << 10)
                        .spawn_scoped(s, move || -> Result<(u32, Option<u32>), String> {
                            let tid = gettid();
                            let mut rng = (u64::from(tid) << 32) ^ round ^ 0x9e37_79b9_7f4a_7c15;
                            st.threads.fetch_add(1, Ordering::Relaxed);
                            let child = match kind {
                                0 => {
                                    swapin_task(pool, st, &mut rng);
                                    None
                                }
                                1 => cow_task(pool, st, &mut rng),
                                _ => {
                                    move_task(pages, st, tid)?;
                                    None
                                }
                            };
                            Ok((tid, child))
                        })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h
                        .join()
                        .unwrap_or_else(|_| Err("a task thread panicked".into())),
                    Err(e) => Err(format!("spawning a thread failed: {e}")),
                })
                .collect()
        });
        for r in ids {
            match r {
                Ok((tid, child)) => {
                    for id in std::iter::once(tid).chain(child) {
                        spawned += 1;
                        let n = seen.entry(id).or_default();
                        if *n > 0 {
                            reuses += 1;
                        }
                        *n += 1;
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        round += 1;
    }
    // Everything still in the pool must hold its last generation.
    for c in 0..nchunks {
        let gen = pool.chunks[c].gen.load(Ordering::Relaxed);
        report_bad(
            &st,
            pool.verify(c, gen),
            format_args!("chunk {c} at the end"),
        );
    }
    let after = vmstat(&["pswpin", "pswpout"]);
    let ld = |x: &AtomicU64| x.load(Ordering::Relaxed);
    println!(
        "result: rounds={round} threads={} tasks_with_ids={spawned} distinct_tids={} tid_reuses={reuses} \
         swapin_tasks={} cow_tasks={} move_tasks={} idle_tasks={} move_supported={} moved={} eagain={} ebusy={} \
         pages_verified={} bad={} child_failures={} pid_max={} pswpin={} pswpout={} secs={:.1} timed_out={}",
        ld(&st.threads),
        seen.len(),
        ld(&st.swapin_tasks),
        ld(&st.cow_tasks),
        ld(&st.move_tasks),
        ld(&st.idle_tasks),
        u8::from(can_move),
        ld(&st.moved),
        ld(&st.eagain),
        ld(&st.ebusy),
        ld(&st.pages_verified),
        ld(&st.bad_pages),
        ld(&st.child_failures),
        read_u64("/proc/sys/kernel/pid_max"),
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    if let Some(e) = failure {
        anyhow::bail!(e);
    }
    Ok(ld(&st.bad_pages))
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(bad) => {
            eprintln!("tid-churn: {bad} pages read back wrong: swap-in, COW or a move lost data");
            ExitCode::from(EXIT_CORRUPT as u8)
        }
        Err(e) => {
            eprintln!("tid-churn: {e:#}");
            ExitCode::from(2)
        }
    }
}
