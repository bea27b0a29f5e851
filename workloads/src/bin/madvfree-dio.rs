//! MADV_FREE buffers as O_DIRECT read targets while reclaim runs (seed 003).
//!
//! Reader threads dirty their buffer, MADV_FREE it (clean lazyfree pages the
//! kernel may discard), then read a known region of a block device into it
//! with O_DIRECT. A reclaim thread keeps calling MADV_PAGEOUT on all buffers,
//! which sends the lazyfree pages through `try_to_unmap_one`'s discard path
//! while DIO holds GUP references on them. Before the fix in the seed, the
//! PTE could be dropped mid-read and userspace then read a zero page; here
//! every buffer must match the device after every read.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Parser;
use workloads::{check_page, gettid, vmstat, Budget, DirectDev, Mapping, EXIT_CORRUPT, PAGE};

/// O_DIRECT reads into MADV_FREE'd buffers under reclaim.
#[derive(Parser)]
struct Args {
    /// Block device to read (its first --mib MiB are overwritten with a pattern).
    #[arg(long, default_value = "/dev/vdc")]
    device: String,
    /// Size of the device region used, in MiB.
    #[arg(long, default_value_t = 4)]
    mib: usize,
    /// Reads per reader thread.
    #[arg(long, default_value_t = 150)]
    iterations: u64,
    /// Reader threads.
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Pages per read.
    #[arg(long, default_value_t = 16)]
    pages: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 90)]
    seconds: u64,
}

const SEED: u64 = 0x5eed_0003;

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(bad) => {
            eprintln!("madvfree-dio: {bad} pages differ from the device after an O_DIRECT read");
            ExitCode::from(EXIT_CORRUPT as u8)
        }
        Err(e) => {
            eprintln!("madvfree-dio: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether every byte of the page is zero: the DIO data went to a page the
/// process no longer maps, and the fault after it mapped a fresh one.
///
/// # Safety
/// `p` must point to `PAGE` readable bytes, 8-byte aligned.
unsafe fn page_is_zero(p: *const u8) -> bool {
    let w = p.cast::<u64>();
    // SAFETY: in bounds per the caller's contract.
    (0..PAGE / 8).all(|i| unsafe { w.add(i).read_volatile() } == 0)
}

fn run(a: &Args) -> anyhow::Result<u64> {
    let budget = Budget::new(a.seconds);
    let dev = DirectDev::open(&a.device)?;
    let region_pages = ((a.mib << 20) / PAGE).min((dev.size / PAGE as u64) as usize);
    anyhow::ensure!(region_pages >= a.pages, "{} is too small", a.device);
    dev.fill(SEED, region_pages)?;
    let readers = a.readers.max(1);
    let buffers = Mapping::anon(readers * a.pages * PAGE)?;
    let before = vmstat(&["pswpin", "pswpout", "pglazyfree", "pglazyfreed"]);
    let stop = AtomicBool::new(false);
    let bad = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let zeroed = AtomicU64::new(0);
    let pageouts = AtomicU64::new(0);
    let errors = std::thread::scope(|s| {
        {
            let (buffers, stop, pageouts) = (&buffers, &stop, &pageouts);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = buffers.madvise(0, buffers.pages(), libc::MADV_PAGEOUT);
                    pageouts.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut handles = Vec::new();
        for r in 0..readers {
            let (buffers, dev, bad, reads, budget, zeroed) =
                (&buffers, &dev, &bad, &reads, &budget, &zeroed);
            let (npages, iterations) = (a.pages, a.iterations);
            handles.push(s.spawn(move || -> anyhow::Result<()> {
                let first = r * npages;
                let tid = gettid();
                let mut rng = 0x9e37_79b9u64 + r as u64;
                for it in 0..iterations {
                    if budget.exhausted() {
                        break;
                    }
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let dev_page = ((rng >> 33) as usize) % (region_pages - npages + 1);
                    for i in 0..npages {
                        // SAFETY: this reader's own pages of the buffer mapping.
                        unsafe { buffers.page_ptr(first + i).write_bytes(0xEE, PAGE) };
                    }
                    buffers.madvise(first, npages, libc::MADV_FREE)?;
                    if it % 2 == 0 {
                        // Every other read, discard the clean lazyfree pages
                        // ourselves first: the read then faults fresh pages in
                        // through GUP (the benign order the seed calls "good").
                        buffers.madvise(first, npages, libc::MADV_PAGEOUT)?;
                    }
                    // SAFETY: the buffer pages belong to this reader and
                    // outlive the call.
                    let n = unsafe {
                        dev.pread(buffers.page_ptr(first), npages * PAGE, (dev_page * PAGE) as u64)?
                    };
                    anyhow::ensure!(n == npages * PAGE, "short O_DIRECT read: {n} bytes");
                    reads.fetch_add(1, Ordering::Relaxed);
                    for i in 0..npages {
                        let want = (dev_page + i) as u64;
                        // SAFETY: as above.
                        if let Some(m) = unsafe { check_page(buffers.page_ptr(first + i), SEED, want) } {
                            // SAFETY: as above.
                            if unsafe { page_is_zero(buffers.page_ptr(first + i)) } {
                                // One line per zeroed page, every one of them:
                                // a later check pairs each with the detector's
                                // finding on the same address and task.
                                zeroed.fetch_add(1, Ordering::Relaxed);
                                println!(
                                    "zeroed: addr={:#x} iter={it} tid={tid} reader={r} device_page={want}",
                                    buffers.page_ptr(first + i) as usize
                                );
                            }
                            if bad.fetch_add(1, Ordering::Relaxed) < 10 {
                                eprintln!(
                                    "madvfree-dio: reader {r}: buffer page {i} (device page {want}) word {} is {:#x}, expected {:#x}{}",
                                    m.word,
                                    m.found,
                                    m.expected,
                                    if m.found == 0 { " (zero page: the DIO data went elsewhere)" } else { "" }
                                );
                            }
                        }
                    }
                }
                Ok(())
            }));
        }
        let errs: Vec<String> = handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(format!("{e:#}")),
                Err(_) => Some("a reader thread panicked".into()),
            })
            .collect();
        stop.store(true, Ordering::Relaxed);
        errs
    });
    if let Some(e) = errors.first() {
        anyhow::bail!("{e}");
    }
    let after = vmstat(&["pswpin", "pswpout", "pglazyfree", "pglazyfreed"]);
    let bad = bad.load(Ordering::Relaxed);
    println!(
        "result: reads={} pageout_calls={} corrupt_pages={bad} zeroed_pages={} pglazyfree={} pglazyfreed={} pswpin={} pswpout={} secs={:.1} timed_out={}",
        reads.load(Ordering::Relaxed),
        pageouts.load(Ordering::Relaxed),
        zeroed.load(Ordering::Relaxed),
        after[2] - before[2],
        after[3] - before[3],
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    Ok(bad)
}
