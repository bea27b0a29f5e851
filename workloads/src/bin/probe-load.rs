//! Drives one traced kernel path at a chosen rate, for the benchmarks.
//!
//! Each call hits exactly one detector probe, so the call rate is the event
//! rate of that probe:
//!   - `gup`: `pread` of one page of our own `/proc/self/mem`, which the
//!     kernel serves through slow GUP (`try_grab_folio`, the `gup_grab`
//!     probe) on the page that backs it;
//!   - `madvise-free`: `MADV_FREE` of one present page, one
//!     `madvise_free_pte_range` walk (the `madvise_free` probe);
//!   - `fault`: touch one page of a fresh anonymous mapping and unmap it:
//!     one LRU insertion and one page free, the two events of the degraded
//!     tracepoint mode (where function probes are refused).
//!
//! With `--rate 0` the calls run back to back and the cost per call is the
//! number to compare with and without the probe attached.

use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use workloads::Mapping;

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Gup,
    MadviseFree,
    Fault,
}

/// Hit one traced path at a fixed rate.
#[derive(Parser)]
struct Args {
    #[arg(long, value_enum, default_value_t = Mode::Gup)]
    mode: Mode,
    /// Calls per second over all threads; 0 runs as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// How long to run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Calling threads.
    #[arg(long, default_value_t = 1)]
    threads: u32,
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("probe-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One thread's calls: paced in chunks so the clock is read rarely, and
/// sleeping only when ahead of schedule (the ring of a falling-behind
/// thread is never "caught up" by bursts of sleep-free calls it owed).
fn worker(a: &Args, per_thread_rate: f64, calls: &AtomicU64) -> anyhow::Result<()> {
    let page = Mapping::anon(4096)?;
    // SAFETY: our own freshly mapped page.
    unsafe { page.page_ptr(0).write_volatile(1) };
    let mem = std::fs::File::open("/proc/self/mem")?;
    let mut buf = [0u8; 64];
    let addr = page.addr() as u64;
    let deadline = Duration::from_secs_f64(a.seconds);
    let start = Instant::now();
    let mut n = 0u64;
    const CHUNK: u64 = 32;
    loop {
        for _ in 0..CHUNK {
            match a.mode {
                Mode::Gup => {
                    mem.read_at(&mut buf, addr)?;
                }
                Mode::MadviseFree => {
                    page.madvise(0, 1, libc::MADV_FREE)?;
                }
                Mode::Fault => {
                    let fresh = Mapping::anon(4096)?;
                    // SAFETY: our own freshly mapped page; unmapped on drop.
                    unsafe { fresh.page_ptr(0).write_volatile(1) };
                }
            }
        }
        n += CHUNK;
        let now = start.elapsed();
        if now >= deadline {
            break;
        }
        if per_thread_rate > 0.0 {
            let due = Duration::from_secs_f64(n as f64 / per_thread_rate);
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
    calls.fetch_add(n, Ordering::Relaxed);
    Ok(())
}

fn run(a: &Args) -> anyhow::Result<()> {
    let threads = a.threads.max(1);
    let per_thread = a.rate as f64 / f64::from(threads);
    let calls = AtomicU64::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let hs: Vec<_> = (0..threads)
            .map(|_| s.spawn(|| worker(a, per_thread, &calls)))
            .collect();
        for h in hs {
            h.join()
                .map_err(|_| anyhow::anyhow!("a calling thread panicked"))??;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let n = calls.load(Ordering::Relaxed);
    println!(
        "result: mode={} threads={threads} target_rate={} calls={n} secs={secs:.3} rate={:.0} ns_per_call={:.0}",
        match a.mode {
            Mode::Gup => "gup",
            Mode::MadviseFree => "madvise-free",
            Mode::Fault => "fault",
        },
        a.rate,
        n as f64 / secs,
        secs * 1e9 * f64::from(threads) / n.max(1) as f64
    );
    Ok(())
}
