//! Mixed, swap-heavy, race-free load for a fixed number of iterations: the
//! detector must report no finding on it.
//!
//! Per iteration, concurrently:
//!   - a hog verifies and rewrites its range (larger than the cgroup allows),
//!   - a forker forks children that read a slice of the hog range (shared
//!     swap entries, swap_duplicate) and write their own copy (COW),
//!   - a lazyfree thread writes a buffer, MADV_FREEs it and writes it again
//!     (which cancels the free) before checking it,
//!   - a pager MADV_PAGEOUTs slices of the hog range.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Parser;
use workloads::{check_page, fill_page, last_err, vmstat, Budget, Mapping, EXIT_CORRUPT};

/// Mixed benign swap load.
#[derive(Parser)]
struct Args {
    /// Hog range in MiB.
    #[arg(long, default_value_t = 96)]
    mib: usize,
    /// Hog passes (each verifies the previous pass and rewrites).
    #[arg(long, default_value_t = 3)]
    iterations: u64,
    /// Milliseconds between forks.
    #[arg(long, default_value_t = 500)]
    fork_every_ms: u64,
    /// Stop after this many seconds (the current pass is finished).
    #[arg(long, default_value_t = 120)]
    seconds: u64,
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(bad) => {
            eprintln!("benign-soak: {bad} data checks failed");
            ExitCode::from(EXIT_CORRUPT as u8)
        }
        Err(e) => {
            eprintln!("benign-soak: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn report(bad: &AtomicU64, what: std::fmt::Arguments) {
    if bad.fetch_add(1, Ordering::Relaxed) < 10 {
        eprintln!("benign-soak: {what}");
    }
}

fn run(a: &Args) -> anyhow::Result<u64> {
    let budget = Budget::new(a.seconds);
    let hog = Mapping::anon(a.mib << 20)?;
    let lazy = Mapping::anon(1 << 20)?;
    let pages = hog.pages();
    for i in 0..pages {
        // SAFETY: our own mapping, before any thread starts.
        unsafe { fill_page(hog.page_ptr(i), 0, i as u64) };
    }
    let before = vmstat(&["pswpin", "pswpout"]);
    let stop = AtomicBool::new(false);
    let bad = AtomicU64::new(0);
    let (forks, lazy_rounds, pageouts) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mut passes = 0;
    std::thread::scope(|s| -> anyhow::Result<()> {
        {
            let (hog, stop, bad, forks) = (&hog, &stop, &bad, &forks);
            let fork_every_ms = a.fork_every_ms;
            s.spawn(move || {
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: the child only touches its private copy and _exits.
                    let pid = unsafe { libc::fork() };
                    if pid < 0 {
                        report(bad, format_args!("{}", last_err("fork")));
                        return;
                    }
                    if pid == 0 {
                        let first = (k as usize * 257) % pages.saturating_sub(64).max(1);
                        let mut fail = 0;
                        for i in first..(first + 64).min(pages) {
                            // SAFETY: the child's copy; it is single-threaded.
                            unsafe { fill_page(hog.page_ptr(i), 0xC0DE + k, i as u64) };
                            // SAFETY: as above.
                            if unsafe { check_page(hog.page_ptr(i), 0xC0DE + k, i as u64) }
                                .is_some()
                            {
                                fail = 1;
                            }
                        }
                        // SAFETY: leave without the parent's destructors.
                        unsafe { libc::_exit(fail) };
                    }
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(pid, &raw mut status, 0) };
                    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                        report(
                            bad,
                            format_args!("fork child {k} failed its own COW check ({status:#x})"),
                        );
                    }
                    forks.fetch_add(1, Ordering::Relaxed);
                    k += 1;
                    // Each fork duplicates every swap entry of the hog range
                    // (swap_duplicate per entry): pace it so the trace stays
                    // a size the guest can write.
                    std::thread::sleep(std::time::Duration::from_millis(fork_every_ms));
                }
            });
        }
        {
            let (lazy, stop, bad, lazy_rounds) = (&lazy, &stop, &bad, &lazy_rounds);
            s.spawn(move || {
                let mut r = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..lazy.pages() {
                        // SAFETY: this thread's own buffer.
                        unsafe { fill_page(lazy.page_ptr(i), r, i as u64) };
                    }
                    let _ = lazy.madvise(0, lazy.pages(), libc::MADV_FREE);
                    // Rewriting a lazyfree page makes it dirty again: from
                    // here on the kernel must keep it.
                    for i in 0..lazy.pages() {
                        // SAFETY: as above.
                        unsafe { fill_page(lazy.page_ptr(i), r + 1, i as u64) };
                    }
                    let _ = lazy.madvise(0, lazy.pages(), libc::MADV_PAGEOUT);
                    for i in 0..lazy.pages() {
                        // SAFETY: as above.
                        if unsafe { check_page(lazy.page_ptr(i), r + 1, i as u64) }.is_some() {
                            report(
                                bad,
                                format_args!("rewritten lazyfree page {i} lost its data"),
                            );
                        }
                    }
                    lazy_rounds.fetch_add(1, Ordering::Relaxed);
                    r += 2;
                }
            });
        }
        {
            let (hog, stop, pageouts) = (&hog, &stop, &pageouts);
            s.spawn(move || {
                let mut at = 0;
                while !stop.load(Ordering::Relaxed) {
                    let n = 256.min(pages - at);
                    let _ = hog.madvise(at, n, libc::MADV_PAGEOUT);
                    pageouts.fetch_add(1, Ordering::Relaxed);
                    at = (at + n) % pages;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
        }
        for pass in 1..=a.iterations {
            if budget.exhausted() {
                break;
            }
            for i in 0..pages {
                // SAFETY: only this thread writes the hog range.
                if let Some(m) = unsafe { check_page(hog.page_ptr(i), pass - 1, i as u64) } {
                    report(
                        &bad,
                        format_args!(
                            "hog page {i} pass {pass}: word {} is {:#x}",
                            m.word, m.found
                        ),
                    );
                }
                // SAFETY: as above.
                unsafe { fill_page(hog.page_ptr(i), pass, i as u64) };
            }
            passes = pass;
        }
        stop.store(true, Ordering::Relaxed);
        Ok(())
    })?;
    for i in 0..pages {
        // SAFETY: all threads joined.
        if unsafe { check_page(hog.page_ptr(i), passes, i as u64) }.is_some() {
            report(&bad, format_args!("hog page {i} lost its final data"));
        }
    }
    let after = vmstat(&["pswpin", "pswpout"]);
    println!(
        "result: passes={passes} forks={} lazyfree_rounds={} pageout_calls={} bad={} pswpin={} pswpout={} secs={:.1} timed_out={}",
        forks.load(Ordering::Relaxed),
        lazy_rounds.load(Ordering::Relaxed),
        pageouts.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    Ok(bad.load(Ordering::Relaxed))
}
