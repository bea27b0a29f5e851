//! Many threads faulting the same swapped-out pages at once (seed 002).
//!
//! On a SWP_SYNCHRONOUS_IO device (zram) a single-mapped entry is swapped in
//! without the swap cache: the faulting task pins the entry with
//! `swapcache_prepare()` (SWAP_HAS_CACHE) and everyone else who faults the
//! same entry gets -EEXIST and retries. Each round pages the whole range
//! out, releases all threads together on the same page order, and every
//! thread checks every page it reads.

// Each workload binary links every dependency of the package; this one
// needs only some of them.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use clap::Parser;
use workloads::{check_page, fill_page, vmstat, Budget, Mapping, EXIT_CORRUPT};

/// Concurrent faults on the same swapped-out pages.
#[derive(Parser)]
struct Args {
    /// Size of the shared range, in MiB.
    #[arg(long, default_value_t = 8)]
    mib: usize,
    /// Threads faulting the range together.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Page-out / fault-in rounds.
    #[arg(long, default_value_t = 10)]
    iterations: u64,
    /// Stop after this many seconds (the current round is finished).
    #[arg(long, default_value_t = 90)]
    seconds: u64,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let budget = Budget::new(a.seconds);
    let m = match Mapping::anon(a.mib << 20) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sync-swapin: {e}");
            return ExitCode::from(2);
        }
    };
    let pages = m.pages();
    let threads = a.threads.max(1);
    let before = vmstat(&["pswpin", "pswpout"]);
    let bad = AtomicU64::new(0);
    let rounds = AtomicU64::new(0);
    let completed = AtomicU64::new(0);
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (m, bad, rounds, barrier, budget, completed) =
                (&m, &bad, &rounds, &barrier, &budget, &completed);
            let iterations = a.iterations;
            s.spawn(move || {
                for round in 0..iterations {
                    // Thread 0 prepares the round; the barrier publishes
                    // whether the budget allows it to every thread.
                    if t == 0 {
                        if budget.exhausted() {
                            rounds.store(u64::MAX, Ordering::SeqCst);
                        } else {
                            for i in 0..pages {
                                // SAFETY: page i of the shared mapping; the
                                // other threads wait at the barrier.
                                unsafe { fill_page(m.page_ptr(i), round, i as u64) };
                            }
                            if let Err(e) = m.madvise(0, pages, libc::MADV_PAGEOUT) {
                                eprintln!("sync-swapin: {e}");
                            }
                            rounds.store(round + 1, Ordering::SeqCst);
                        }
                    }
                    barrier.wait();
                    if rounds.load(Ordering::SeqCst) == u64::MAX {
                        return;
                    }
                    for i in 0..pages {
                        // SAFETY: concurrent reads of the shared mapping.
                        if let Some(mm) = unsafe { check_page(m.page_ptr(i), round, i as u64) } {
                            if bad.fetch_add(1, Ordering::Relaxed) < 10 {
                                eprintln!(
                                    "sync-swapin: thread {t} round {round} page {i}: word {} is {:#x}, expected {:#x}",
                                    mm.word, mm.found, mm.expected
                                );
                            }
                        }
                    }
                    if barrier.wait().is_leader() {
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });
    let after = vmstat(&["pswpin", "pswpout"]);
    let done = completed.load(Ordering::SeqCst);
    let bad = bad.load(Ordering::Relaxed);
    println!(
        "result: pages={pages} threads={threads} rounds={done} corrupt_reads={bad} pswpin={} pswpout={} secs={:.1} timed_out={}",
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    if bad > 0 {
        eprintln!("sync-swapin: {bad} page reads returned the wrong data");
        return ExitCode::from(EXIT_CORRUPT as u8);
    }
    ExitCode::SUCCESS
}
