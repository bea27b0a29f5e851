//! Plain swap pressure: touch more memory than the cgroup allows, then
//! verify and rewrite every page on each pass, so every page goes out to
//! swap and comes back with the data it had.

// Each workload binary links every dependency of the package; this one
// needs only some of them.
#![allow(unused_crate_dependencies)]

use std::process::ExitCode;

use clap::Parser;
use workloads::{check_page, fill_page, mthp_stats, vmstat, Budget, Mapping, EXIT_CORRUPT};

/// Writes a pattern over `--mib` MiB and verifies it `--passes` times.
#[derive(Parser)]
struct Args {
    /// Memory to touch, in MiB (make it larger than the cgroup's memory.max).
    #[arg(long, default_value_t = 160)]
    mib: usize,
    /// Verify-and-rewrite passes after the first write.
    #[arg(long, default_value_t = 2)]
    passes: u64,
    /// Stop early (still verifying what was written) after this many seconds.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Map the memory where the kernel may use large folios (mTHP sizes the
    /// system enabled), so reclaim swaps large folios out whole.
    #[arg(long)]
    large_folios: bool,
}

const MTHP_KEYS: &[&str] = &[
    "anon_fault_alloc",
    "anon_fault_fallback",
    "swpout",
    "swpout_fallback",
];

fn main() -> ExitCode {
    let a = Args::parse();
    let budget = Budget::new(a.seconds);
    let before = vmstat(&["pswpin", "pswpout", "thp_swpout", "thp_swpout_fallback"]);
    let mthp_before = mthp_stats(MTHP_KEYS);
    let m = match if a.large_folios {
        Mapping::anon_large_folios(a.mib << 20)
    } else {
        Mapping::anon(a.mib << 20)
    } {
        Ok(m) => m,
        Err(e) => {
            eprintln!("swap-hog: {e}");
            return ExitCode::from(2);
        }
    };
    let pages = m.pages();
    for i in 0..pages {
        // SAFETY: page i of our own mapping.
        unsafe { fill_page(m.page_ptr(i), 0, i as u64) };
    }
    let mut bad = 0u64;
    let mut done = 0;
    for pass in 1..=a.passes {
        if budget.exhausted() {
            println!("swap-hog: time budget reached after {done} passes");
            break;
        }
        for i in 0..pages {
            // SAFETY: page i of our own mapping.
            if let Some(mm) = unsafe { check_page(m.page_ptr(i), pass - 1, i as u64) } {
                if bad < 10 {
                    eprintln!(
                        "swap-hog: page {i} pass {pass}: word {} is {:#x}, expected {:#x}",
                        mm.word, mm.found, mm.expected
                    );
                }
                bad += 1;
            }
            // SAFETY: as above.
            unsafe { fill_page(m.page_ptr(i), pass, i as u64) };
        }
        done = pass;
    }
    for i in 0..pages {
        // SAFETY: page i of our own mapping.
        if unsafe { check_page(m.page_ptr(i), done, i as u64) }.is_some() {
            bad += 1;
        }
    }
    let after = vmstat(&["pswpin", "pswpout", "thp_swpout", "thp_swpout_fallback"]);
    let mthp_after = mthp_stats(MTHP_KEYS);
    println!(
        "result: pages={pages} passes={done} corrupt_pages={bad} pswpin={} pswpout={} thp_swpout={} thp_swpout_fallback={} \
         mthp_anon_fault_alloc={} mthp_anon_fault_fallback={} mthp_swpout={} mthp_swpout_fallback={} secs={:.1} timed_out={}",
        after[0] - before[0],
        after[1] - before[1],
        after[2] - before[2],
        after[3] - before[3],
        mthp_after[0] - mthp_before[0],
        mthp_after[1] - mthp_before[1],
        mthp_after[2] - mthp_before[2],
        mthp_after[3] - mthp_before[3],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    if bad > 0 {
        eprintln!("swap-hog: {bad} pages came back from swap with the wrong data");
        return ExitCode::from(EXIT_CORRUPT as u8);
    }
    ExitCode::SUCCESS
}
