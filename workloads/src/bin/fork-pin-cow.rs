//! GUP pins across fork and COW (seed 001).
//!
//! The parent keeps O_DIRECT reads in flight into the first half of every
//! buffer page (the block layer pins those pages with FOLL_PIN for the whole
//! I/O) while another parent thread writes the second half of the same pages
//! and the main thread forks over and over. A page that is pinned at fork
//! must stay with the parent (the child gets a copy); a page that is merely
//! shared must be COW-copied on the first write. If COW went the wrong way,
//! the DMA lands in a page the parent no longer maps and the parent reads
//! stale bytes; if a missed COW leaked a page, the child sees the parent's
//! writes. Reclaim (MADV_PAGEOUT) swaps the buffer out now and then, so
//! swap-in also changes mapcounts under these decisions.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use clap::Parser;
use workloads::{
    check_page, fill_page, last_err, pattern_word, vmstat, Budget, DirectDev, Mapping,
    EXIT_CORRUPT, PAGE,
};

/// O_DIRECT pins, fork and writes on both sides.
#[derive(Parser)]
struct Args {
    /// Block device to read (its first MiB is overwritten with a pattern).
    #[arg(long, default_value = "/dev/vdc")]
    device: String,
    /// Buffer pages.
    #[arg(long, default_value_t = 32)]
    pages: usize,
    /// Forks.
    #[arg(long, default_value_t = 40)]
    iterations: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 90)]
    seconds: u64,
}

const SEED: u64 = 0x5eed_0001;
const HALF: usize = PAGE / 2;
const REGION_PAGES: usize = 256;

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(bad) => {
            eprintln!("fork-pin-cow: {bad} data checks failed: a COW decision sent data to the wrong page");
            ExitCode::from(EXIT_CORRUPT as u8)
        }
        Err(e) => {
            eprintln!("fork-pin-cow: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The child: write a private pattern over the whole buffer, read it back.
/// Exit status 0 (fine) or 1 (saw something other than its own writes).
fn child(buf: &Mapping, iter: u64) -> ! {
    let seed = 0xC41D_0000 + iter;
    let mut bad = 0;
    for i in 0..buf.pages() {
        // SAFETY: the child's private copy of the buffer (single-threaded).
        unsafe { fill_page(buf.page_ptr(i), seed, i as u64) };
    }
    let _ = buf.madvise(0, buf.pages(), libc::MADV_PAGEOUT);
    for i in 0..buf.pages() {
        // SAFETY: as above.
        if unsafe { check_page(buf.page_ptr(i), seed, i as u64) }.is_some() {
            bad += 1;
        }
    }
    // SAFETY: leave without running the parent's destructors or atexit.
    unsafe { libc::_exit(if bad == 0 { 0 } else { 1 }) }
}

fn run(a: &Args) -> anyhow::Result<u64> {
    let budget = Budget::new(a.seconds);
    let dev = DirectDev::open(&a.device)?;
    let region = REGION_PAGES.min((dev.size / PAGE as u64) as usize);
    anyhow::ensure!(region >= a.pages, "{} is too small", a.device);
    dev.fill(SEED, region)?;
    let buf = Mapping::anon(a.pages * PAGE)?;
    for i in 0..buf.pages() {
        // SAFETY: our own mapping, before any thread starts.
        unsafe { buf.page_ptr(i).write_bytes(0x11, PAGE) };
    }
    let before = vmstat(&["pswpin", "pswpout"]);
    let stop = AtomicBool::new(false);
    let bad = AtomicU64::new(0);
    let reads = AtomicU64::new(0);
    let touches = AtomicU64::new(0);
    let mut forks = 0u64;
    let mut child_failures = 0u64;
    let res: anyhow::Result<()> = std::thread::scope(|s| {
        let reader = {
            let (buf, dev, stop, bad, reads) = (&buf, &dev, &stop, &bad, &reads);
            s.spawn(move || -> anyhow::Result<()> {
                let n = buf.pages();
                let mut rng = 0x2545_f491_4f6c_dd1du64;
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    // Half k of the read is device bytes [dp*PAGE + k*HALF, +HALF).
                    let dp = (rng as usize) % (region - n / 2);
                    let iov: Vec<libc::iovec> = (0..n)
                        .map(|i| {
                            let p = buf.page_ptr(i);
                            // SAFETY: first half of our own page; only this
                            // thread writes first halves.
                            unsafe { p.write_bytes(0xEE, HALF) };
                            libc::iovec {
                                iov_base: p.cast(),
                                iov_len: HALF,
                            }
                        })
                        .collect();
                    // SAFETY: every iovec points into `buf`, which outlives the call.
                    let got = unsafe {
                        libc::preadv(dev.raw_fd(), iov.as_ptr(), n as i32, (dp * PAGE) as libc::off_t)
                    };
                    if got < 0 {
                        return Err(last_err("O_DIRECT preadv").into());
                    }
                    anyhow::ensure!(got as usize == n * HALF, "short O_DIRECT read: {got} bytes");
                    reads.fetch_add(1, Ordering::Relaxed);
                    for k in 0..n {
                        let (page, base) = ((dp + k / 2) as u64, (k % 2) * HALF / 8);
                        let w = buf.page_ptr(k).cast::<u64>();
                        for j in 0..HALF / 8 {
                            // SAFETY: first half of page k of our own mapping.
                            let v = unsafe { w.add(j).read_volatile() };
                            let want = pattern_word(SEED, page, (base + j) as u64);
                            if v != want {
                                if bad.fetch_add(1, Ordering::Relaxed) < 10 {
                                    eprintln!(
                                        "fork-pin-cow: buffer page {k} word {j} after O_DIRECT read is {v:#x}, expected {want:#x}"
                                    );
                                }
                                break;
                            }
                        }
                    }
                }
                Ok(())
            })
        };
        {
            let (buf, stop, touches) = (&buf, &stop, &touches);
            s.spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for i in 0..buf.pages() {
                        // SAFETY: second half of our own page; only this
                        // thread writes second halves (a write fault after
                        // fork is the COW under test).
                        unsafe {
                            buf.page_ptr(i)
                                .add(HALF)
                                .cast::<u64>()
                                .write_volatile(round);
                        };
                    }
                    touches.fetch_add(1, Ordering::Relaxed);
                    round += 1;
                }
            });
        }
        for iter in 0..a.iterations {
            if budget.exhausted() || reader.is_finished() {
                break;
            }
            if iter % 4 == 3 {
                let _ = buf.madvise(0, buf.pages(), libc::MADV_PAGEOUT);
            }
            // SAFETY: the child only touches its copy of `buf` and _exits.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                stop.store(true, Ordering::Relaxed);
                return Err(last_err("fork").into());
            }
            if pid == 0 {
                child(&buf, iter);
            }
            forks += 1;
            let mut status = 0;
            // SAFETY: waiting for the child we just forked.
            if unsafe { libc::waitpid(pid, &raw mut status, 0) } < 0 {
                stop.store(true, Ordering::Relaxed);
                return Err(last_err("waitpid").into());
            }
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
                child_failures += 1;
                eprintln!("fork-pin-cow: child {iter} saw data other than its own writes (status {status:#x})");
            }
        }
        stop.store(true, Ordering::Relaxed);
        match reader.join() {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("the reader thread panicked")),
        }
    });
    res?;
    // The parent's own view after everything: second halves hold the last
    // round the toucher wrote, identical across pages (no child data leaked).
    let mut leaked = 0;
    // SAFETY: all threads have been joined.
    let last = unsafe { buf.page_ptr(0).add(HALF).cast::<u64>().read_volatile() };
    for i in 0..buf.pages() {
        // SAFETY: as above.
        let v = unsafe { buf.page_ptr(i).add(HALF).cast::<u64>().read_volatile() };
        if v != last && v + 1 != last {
            leaked += 1;
        }
    }
    let after = vmstat(&["pswpin", "pswpout"]);
    let bad = bad.load(Ordering::Relaxed) + child_failures + leaked;
    println!(
        "result: forks={forks} dio_reads={} touch_rounds={} child_failures={child_failures} corrupt={bad} pswpin={} pswpout={} secs={:.1} timed_out={}",
        reads.load(Ordering::Relaxed),
        touches.load(Ordering::Relaxed),
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    Ok(bad)
}
