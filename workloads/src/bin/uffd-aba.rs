//! The seed-000 UFFDIO_MOVE swap-entry ABA, staged step by step on the
//! fault-injected kernel (run it as `inj-uffd-aba`).
//!
//! The race (seed 000): move_pages reads the source's swap PTE (entry S1),
//! looks S1 up in the swap cache with no lock held, locks the folio it got
//! and rechecks the PTE. If S1 is freed and given to another page's folio B
//! before the lookup, the lookup returns B; if B then leaves S1 and the
//! source's own folio A is swapped out to S1 again before the recheck, the
//! PTE looks untouched and B is moved: its rmap now points at the
//! destination while B is still mapped at the other page. The 6.12 guard
//! (the locked folio must still be the swap-cache folio of S1) stops it;
//! the injected kernel skips the guard for `inj-*` tasks, logs
//! `detector-inject: seed000 stale-folio`, and sleeps `delay_us` in both
//! windows (after reading the PTE, and after the lookup).
//!
//! Each round stages the interleaving deterministically:
//!  - P (the source, pattern), Q (another page, pattern), C (a control),
//!    R (moved on the present-PTE path); a destination registered with
//!    userfaultfd;
//!  - P is paged out (its entry S1), then filler pages until the swap disk
//!    is full: S1 is the only slot that can be free again;
//!  - the mover thread calls UFFDIO_MOVE dst <- P. While it sleeps in
//!    window 1 this thread read-faults P (swap being full, the fault drops
//!    A from the swap cache and frees S1) and pages Q out: B takes S1, so
//!    the mover's lookup returns B. While it sleeps in window 2 this thread
//!    read-faults Q (B leaves the swap cache, S1 is free again) and pages P
//!    out: A takes S1, P's PTE is swap:S1 again, the recheck passes and the
//!    kernel moves B.
//!
//! The windows are told apart from the mover's kernel stack
//! (/proc/self/task/TID/stack, as root): the sleep of window 1 and that of
//! window 2 are called from different places of move_pages_pte. Every step
//! is verified through /proc/self/pagemap (swap type and offset) and
//! SwapFree; a round where a step did not land is reported and not counted.
//!
//! What the workload can observe of a stale move: the destination gets the
//! swap PTE (S1, A's data: correct data), but B's rmap now names the
//! destination's anon_vma and index while B stays mapped at Q, so reclaim's
//! rmap walk cannot find Q's PTE and MADV_PAGEOUT can never page Q out,
//! while a control page C paged out the same way goes. Each round where
//! that happens prints `stale: entry=T:0xOFF ...`, one line per observed
//! stale move. Every page's data is checked too (`bad=` counts wrong words).
//!
//! Mappings are never unmapped before exit: B mapped under a foreign rmap
//! must not meet an unmap of the destination's anon_vma while the process
//! runs.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use workloads::uffd::{Uffd, UFFD_FEATURE_MOVE};
use workloads::{
    check_page, fill_page, gettid, vmstat, Budget, Mapping, EXIT_CORRUPT, EXIT_SKIP, PAGE,
};

const DELAY_US: &str = "/sys/module/detector_inject/parameters/delay_us";
const PAGE_CLUSTER: &str = "/proc/sys/vm/page-cluster";

/// Stages the seed-000 swap-entry ABA under UFFDIO_MOVE, round by round.
#[derive(Parser)]
struct Args {
    /// Rounds to stage.
    #[arg(long, default_value_t = 8)]
    rounds: u64,
    /// Length of each injected window (detector_inject.delay_us), in ms:
    /// long enough for a fault and a page-out to land inside it on a slow
    /// guest.
    #[arg(long, default_value_t = 300)]
    delay_ms: u64,
    /// Stop after this many seconds (the current round is finished).
    #[arg(long, default_value_t = 150)]
    seconds: u64,
    /// Refuse a swap area larger than this (MiB): the filler must fill it
    /// every round.
    #[arg(long, default_value_t = 16)]
    max_swap_mib: u64,
}

/// What /proc/self/pagemap says about one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pte {
    None,
    Present,
    Swap { ty: u32, off: u64 },
}

impl Pte {
    /// Decodes a pagemap word (Documentation/admin-guide/mm/pagemap.rst):
    /// bit 63 present, bit 62 swapped, then bits 0-4 the swap type and
    /// 5-54 the offset.
    fn decode(w: u64) -> Pte {
        if w & (1 << 63) != 0 {
            Pte::Present
        } else if w & (1 << 62) != 0 {
            Pte::Swap {
                ty: (w & 0x1f) as u32,
                off: (w >> 5) & ((1 << 50) - 1),
            }
        } else {
            Pte::None
        }
    }
    fn slot(self) -> Option<(u32, u64)> {
        match self {
            Pte::Swap { ty, off } => Some((ty, off)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Pte {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pte::None => f.write_str("none"),
            Pte::Present => f.write_str("present"),
            Pte::Swap { ty, off } => write!(f, "swap:{ty}:{off:#x}"),
        }
    }
}

/// An entry as the detector and the kernel log checks print it.
fn fmt_slot((ty, off): (u32, u64)) -> String {
    format!("{ty}:{off:#x}")
}

struct Pagemap(File);

impl Pagemap {
    fn open() -> io::Result<Pagemap> {
        Ok(Pagemap(File::open("/proc/self/pagemap")?))
    }
    fn pte(&self, addr: usize) -> io::Result<Pte> {
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, (addr / PAGE * 8) as u64)?;
        Ok(Pte::decode(u64::from_le_bytes(b)))
    }
}

/// SwapFree from /proc/meminfo, in pages.
fn swap_free_pages() -> u64 {
    meminfo("SwapFree:") / (PAGE as u64 / 1024)
}

fn meminfo(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded) until no page is under writeback: a folio under
/// writeback cannot leave the swap cache, so the next step would not land.
fn settle_writeback(limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if vmstat(&["nr_writeback"])[0] == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A sysctl or module parameter set for the run and put back on drop.
struct Knob {
    path: &'static str,
    old: String,
}

impl Knob {
    fn set(path: &'static str, value: &str) -> io::Result<Knob> {
        let old = std::fs::read_to_string(path)?.trim().to_string();
        std::fs::write(path, value)?;
        Ok(Knob { path, old })
    }
}

impl Drop for Knob {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.old) {
            eprintln!(
                "uffd-aba: cannot restore {} to {}: {e}",
                self.path, self.old
            );
        }
    }
}

/// Where the mover is, read from its kernel stack.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Asleep in an injected window; the frames below the sleep say which.
    Window(String),
    /// Anything else (running, or blocked elsewhere).
    Other,
}

/// The mover's phase, from its state and its kernel stack (under
/// /proc/self/task/TID/). The stack of a sleeping task starts at the
/// function that called into the scheduler's sleep helpers
/// (usleep_range_state() and below are `__sched` and not shown):
/// detector_inject_widen() in window 1, move_pages() itself (where
/// move_pages_pte() is inlined) in window 2. The two windows differ in
/// those frames, which is all this needs to know; anything else (running,
/// or asleep outside move_pages) is `Other`.
fn classify(state: char, stack: &str) -> Phase {
    let top = stack
        .lines()
        .map(|l| l.split_once("] ").map_or(l, |(_, f)| f).trim())
        .find(|f| !f.is_empty());
    match top {
        Some(t)
            if state == 'D'
                && (t.starts_with("detector_inject_widen") || t.starts_with("move_pages")) =>
        {
            Phase::Window(t.to_string())
        }
        _ => Phase::Other,
    }
}

fn phase(task_dir: &str) -> io::Result<Phase> {
    let mut stat = String::new();
    File::open(format!("{task_dir}/stat"))?.read_to_string(&mut stat)?;
    // The state follows the parenthesised name (which may hold spaces).
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, r)| r.chars().next())
        .unwrap_or('?');
    let mut stack = String::new();
    File::open(format!("{task_dir}/stack"))?.read_to_string(&mut stack)?;
    Ok(classify(state, &stack))
}

/// Polls the mover's phase until `want` accepts it, or `limit` passes, or
/// the mover is done. Without a match, also returns the distinct stacks
/// seen meanwhile (their top frames), to say where the mover was instead.
fn wait_phase(
    task_dir: &str,
    limit: Duration,
    done: &AtomicU32,
    want: impl Fn(&Phase) -> bool,
) -> io::Result<(Option<Phase>, Vec<String>)> {
    let t = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    while t.elapsed() < limit && done.load(Ordering::Acquire) == 0 {
        let p = phase(task_dir)?;
        if want(&p) {
            // The same sleep a moment later: not a passing block.
            std::thread::sleep(Duration::from_millis(2));
            if phase(task_dir)? == p {
                return Ok((Some(p), seen));
            }
        }
        if seen.len() < 6 {
            let raw = std::fs::read_to_string(format!("{task_dir}/stack")).unwrap_or_default();
            let top = raw.lines().take(4).collect::<Vec<_>>().join(" < ");
            if !seen.contains(&top) {
                seen.push(top);
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok((None, seen))
}

/// Reads page `p` (a read fault if it is swapped) and checks its data.
fn read_check(m: &Mapping, page: usize, seed: u64, bad: &mut u64, what: &str) {
    // SAFETY: a page of our own mapping, never a uffd-registered hole.
    if let Some(x) = unsafe { check_page(m.page_ptr(page), seed, page as u64) } {
        *bad += 1;
        eprintln!(
            "uffd-aba: {what} word {} is {:#x}, expected {:#x}",
            x.word, x.found, x.expected
        );
    }
}

#[derive(Default)]
struct Totals {
    rounds: u64,
    staged: u64,
    moved: u64,
    eagain: u64,
    stale_moves_seen: u64,
    q_stuck: u64,
    control_out: u64,
    present_moves: u64,
    not_staged: u64,
    bad: u64,
}

/// The round's pages in its source mapping.
const P: usize = 0;
const Q: usize = 1;
const C: usize = 2;
const R: usize = 3;

struct Run<'a> {
    a: &'a Args,
    fd: Uffd,
    pm: Pagemap,
    filler: Mapping,
    /// Mappings kept until exit (see the module comment).
    keep: Vec<Mapping>,
    t: Totals,
}

impl Run<'_> {
    /// Pages filler out until the swap disk is full. Every filler slot of
    /// the previous round was dropped first, so the disk fills the same
    /// way each round.
    fn fill_swap(&mut self) -> anyhow::Result<()> {
        const CHUNK: usize = 16;
        let pages = self.filler.pages();
        let mut at = 0;
        while swap_free_pages() > 0 {
            anyhow::ensure!(
                at < pages,
                "the filler ({pages} pages) could not fill the swap disk: SwapFree is still {} pages",
                swap_free_pages()
            );
            let n = CHUNK.min(pages - at);
            for i in at..at + n {
                // SAFETY: page i of our own filler mapping.
                unsafe {
                    self.filler
                        .page_ptr(i)
                        .cast::<u64>()
                        .write_volatile(i as u64 + 1);
                };
            }
            self.filler.madvise(at, n, libc::MADV_PAGEOUT)?;
            at += n;
        }
        settle_writeback(Duration::from_secs(5));
        Ok(())
    }

    fn round(&mut self, k: u64) -> anyhow::Result<()> {
        let d = Duration::from_millis(self.a.delay_ms);
        let seed = 0xABA0 + k;
        let src = Mapping::anon(4 * PAGE)?;
        let dst = Mapping::anon(2 * PAGE)?;
        self.fd.register(&dst)?;
        let (p, q) = (src.page_ptr(P) as usize, src.page_ptr(Q) as usize);
        // Free every filler slot: the swap disk is empty but for the slots
        // earlier rounds' destinations still hold.
        self.filler
            .madvise(0, self.filler.pages(), libc::MADV_DONTNEED)?;
        for i in [P, Q, C, R] {
            // SAFETY: page i of our own mapping.
            unsafe { fill_page(src.page_ptr(i), seed, i as u64) };
        }
        src.madvise(P, 1, libc::MADV_PAGEOUT)?;
        settle_writeback(Duration::from_secs(5));
        let s1 = self.pm.pte(p)?.slot();
        let Some(s1) = s1 else {
            println!(
                "round {k}: not staged: P was not paged out ({})",
                self.pm.pte(p)?
            );
            self.t.not_staged += 1;
            self.keep.extend([src, dst]);
            return Ok(());
        };
        self.fill_swap()?;
        let q0 = self.pm.pte(q)?;

        // The mover: one UFFDIO_MOVE dst <- P, retried on EAGAIN (as a real
        // user would; the retry finds the page's current state).
        let tid = AtomicU32::new(0);
        let done = AtomicU32::new(0);
        let mut log = String::new();
        let mut staged = true;
        let (moved_first, moved_total, eagain) =
            std::thread::scope(|s| -> anyhow::Result<_> {
                let (fd, tid_ref, done_ref) = (&self.fd, &tid, &done);
                let dst_addr = dst.addr();
                // The name keeps the "inj-" prefix: the kernel opts tasks in by
                // their name.
                let h = std::thread::Builder::new()
                    .name("inj-aba-mover".to_string())
                    .spawn_scoped(s, move || {
                        tid_ref.store(gettid(), Ordering::Release);
                        let mut first = None;
                        let mut eagain = 0u64;
                        let mut total = 0usize;
                        for _ in 0..4 {
                            let (n, err) = fd.move_range(dst_addr, p, PAGE);
                            first.get_or_insert((n, err));
                            total += n;
                            match err {
                                Some(libc::EAGAIN) => eagain += 1,
                                _ => break,
                            }
                        }
                        done_ref.store(1, Ordering::Release);
                        (first.unwrap_or((0, None)), total, eagain)
                    })?;
                while tid.load(Ordering::Acquire) == 0 {
                    std::thread::yield_now();
                }
                let task_dir = format!("/proc/self/task/{}", tid.load(Ordering::Acquire));
                // Window 1: the mover read P's PTE (swap:S1) and sleeps before
                // its lookup.
                let (w1, seen1) = wait_phase(&task_dir, 10 * d, &done, |ph| {
                    matches!(ph, Phase::Window(_))
                })?;
                match &w1 {
                    Some(_) => {
                        std::thread::sleep(d / 4);
                        // (1) P comes back in; the disk being full, the fault
                        // drops A from the swap cache and frees S1.
                        read_check(&src, P, seed, &mut self.t.bad, "P after its swap-in");
                        let free_after_p = swap_free_pages();
                        // Q's folio B takes S1, the only free slot.
                        src.madvise(Q, 1, libc::MADV_PAGEOUT)?;
                        let q1 = self.pm.pte(q)?;
                        let still = phase(&task_dir)? == w1.clone().unwrap_or(Phase::Other);
                        log +=
                            &format!(
                        " | w1: P faulted in (SwapFree {free_after_p}), Q paged out to {q1}{}",
                        if still { "" } else { " (LATE: the lookup had already run)" }
                    );
                        staged &= still && q1.slot() == Some(s1);
                    }
                    None => {
                        log += &format!(
                            " | the move never slept in window 1 (its stacks: {})",
                            seen1.join(" ; ")
                        );
                        staged = false;
                    }
                }
                // Window 2: the lookup returned B; the mover sleeps before
                // locking it.
                let w1p = w1.clone();
                let (w2, seen2) = if staged {
                    wait_phase(&task_dir, 10 * d, &done, |ph| {
                        matches!(ph, Phase::Window(_)) && Some(ph) != w1p.as_ref()
                    })?
                } else {
                    (None, Vec::new())
                };
                if let Some(w2) = &w2 {
                    // B must be off writeback to leave the swap cache.
                    let wb = settle_writeback(d / 4);
                    // (2) Q comes back in: B leaves the swap cache, S1 is free.
                    read_check(&src, Q, seed, &mut self.t.bad, "Q after its swap-in");
                    let free_after_q = swap_free_pages();
                    // A takes S1 again: P's PTE is swap:S1 as the mover read it.
                    src.madvise(P, 1, libc::MADV_PAGEOUT)?;
                    let p2 = self.pm.pte(p)?;
                    let still = phase(&task_dir)? == *w2;
                    log +=
                        &format!(
                    " | w2: Q faulted in (SwapFree {free_after_q}{}), P paged out to {p2}{}",
                    if wb { "" } else { ", writeback pending" },
                    if still { "" } else { " (LATE: the mover had woken)" }
                );
                    staged &= still && p2.slot() == Some(s1);
                } else if staged {
                    log += &format!(
                        " | the move never slept in window 2 (its stacks: {})",
                        seen2.join(" ; ")
                    );
                    staged = false;
                }
                let ((n, err), total, eagain) = h
                    .join()
                    .map_err(|_| anyhow::anyhow!("the mover thread panicked"))?;
                let first = match err {
                    None => format!("moved {n}"),
                    Some(e) => format!("{} after {n}", io::Error::from_raw_os_error(e)),
                };
                log += &format!(" | first move: {first}, {eagain} EAGAIN retries");
                Ok((err.is_none() && n == PAGE, total, eagain))
            })?;
        self.t.rounds += 1;
        self.t.eagain += eagain;
        self.t.moved += (moved_total / PAGE) as u64;
        if staged {
            self.t.staged += 1;
        } else {
            self.t.not_staged += 1;
        }
        let (p3, q3, d3) = (self.pm.pte(p)?, self.pm.pte(q)?, self.pm.pte(dst.addr())?);

        // What the move left: can reclaim still find Q's PTE? Free a few
        // slots first (the disk is full), then page Q and the control C out.
        let free = 16.min(self.filler.pages());
        self.filler.madvise(0, free, libc::MADV_DONTNEED)?;
        let (mut qx, mut cx) = (Pte::Present, Pte::Present);
        for _ in 0..3 {
            src.madvise(Q, 1, libc::MADV_PAGEOUT)?;
            src.madvise(C, 1, libc::MADV_PAGEOUT)?;
            (qx, cx) = (self.pm.pte(q)?, self.pm.pte(src.page_ptr(C) as usize)?);
            if qx != Pte::Present {
                break;
            }
        }
        let control = cx.slot().is_some();
        let stuck = qx == Pte::Present;
        if control {
            self.t.control_out += 1;
        }
        if stuck && control {
            self.t.q_stuck += 1;
        }
        // Observed stale move: the staged ABA, the first move succeeded
        // (only the stale folio passes the recheck there), and Q's folio
        // can no longer be reclaimed while an ordinary page can.
        let stale = staged && moved_first && stuck && control;
        let verdict = if stale {
            self.t.stale_moves_seen += 1;
            "STALE MOVE: Q's folio was moved (its rmap no longer finds Q)"
        } else if !control {
            "inconclusive: the control page did not page out"
        } else if stuck {
            "Q cannot be paged out, but the round was not staged"
        } else {
            "no stale move"
        };
        println!(
            "round {k}: P slot={} Q slot before={q0}{log} | after move: P={p3} Q={q3} dst={d3} | \
             pageout: Q={qx} C={cx} | {verdict}",
            fmt_slot(s1)
        );
        if stale {
            println!(
                "stale: entry={} q={q:#x} dst={:#x} round={k}",
                fmt_slot(s1),
                dst.addr()
            );
        }
        // The data: the destination holds P's pattern (A's data came with
        // the swap PTE), Q and C keep theirs, P reads as a hole.
        if moved_total == PAGE {
            // SAFETY: page 0 of the destination, filled by the move.
            if let Some(x) = unsafe { check_page(dst.page_ptr(0), seed, P as u64) } {
                self.t.bad += 1;
                eprintln!(
                    "uffd-aba: round {k}: destination word {} is {:#x}, expected {:#x}",
                    x.word, x.found, x.expected
                );
            }
        }
        read_check(&src, Q, seed, &mut self.t.bad, "Q at the end of the round");
        read_check(&src, C, seed, &mut self.t.bad, "C at the end of the round");
        // R on the present-PTE path, into the second destination page.
        let (n, err) = self
            .fd
            .move_range(dst.addr() + PAGE, src.page_ptr(R) as usize, PAGE);
        if err.is_none() && n == PAGE {
            self.t.present_moves += 1;
            // SAFETY: page 1 of the destination, filled by the move.
            if let Some(x) = unsafe { check_page(dst.page_ptr(1), seed, R as u64) } {
                self.t.bad += 1;
                eprintln!(
                    "uffd-aba: round {k}: present-moved page word {} is {:#x}, expected {:#x}",
                    x.word, x.found, x.expected
                );
            }
        }
        self.keep.extend([src, dst]);
        Ok(())
    }
}

fn comm() -> String {
    std::fs::read_to_string("/proc/self/comm")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Runs every thread on CPU 0: a page faulted in by one thread must be on
/// the LRU when the next MADV_PAGEOUT (which drains only its own CPU's
/// batch) isolates it.
fn pin_to_cpu0() -> io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: sched_setaffinity on this thread with a set we own.
    if unsafe {
        libc::sched_setaffinity(
            0,
            std::mem::size_of::<libc::cpu_set_t>(),
            std::ptr::from_ref(&set),
        )
    } != 0
    {
        return Err(workloads::last_err("sched_setaffinity"));
    }
    Ok(())
}

fn run(a: &Args) -> anyhow::Result<Totals> {
    if !Uffd::move_supported()? {
        println!("SKIP: this kernel has no UFFDIO_MOVE (UFFD_FEATURE_MOVE arrived in Linux 6.8)");
        std::process::exit(EXIT_SKIP);
    }
    if !std::path::Path::new(DELAY_US).exists() {
        println!("SKIP: this kernel has no detector_inject (the ABA is staged on the fault-injected 6.12 test kernel only)");
        std::process::exit(EXIT_SKIP);
    }
    anyhow::ensure!(
        comm().starts_with("inj-"),
        "run this workload as inj-uffd-aba: the kernel injects the race only for tasks named inj-*"
    );
    let total_kb = meminfo("SwapTotal:");
    anyhow::ensure!(
        total_kb > 0 && total_kb <= a.max_swap_mib * 1024,
        "the swap area is {total_kb} kB; the ABA needs a small swap disk (1 MiB) the filler can fill every round \
         (at most --max-swap-mib {})",
        a.max_swap_mib
    );
    pin_to_cpu0()?;
    let _delay = Knob::set(DELAY_US, &(a.delay_ms * 1000).to_string())?;
    // No swap readahead: a fault reads exactly the page it needs, so no
    // neighbouring slot gets a swap-cache folio the steps did not plan.
    let _cluster = Knob::set(PAGE_CLUSTER, "0")?;
    let budget = Budget::new(a.seconds);
    let filler_pages = (meminfo("SwapTotal:") / (PAGE as u64 / 1024)) as usize + 64;
    let mut r = Run {
        a,
        fd: Uffd::open(UFFD_FEATURE_MOVE)?,
        pm: Pagemap::open()?,
        filler: Mapping::anon(filler_pages * PAGE)?,
        keep: Vec::new(),
        t: Totals::default(),
    };
    let before = vmstat(&["pswpin", "pswpout"]);
    for k in 0..a.rounds {
        if budget.exhausted() {
            break;
        }
        r.round(k)?;
    }
    let after = vmstat(&["pswpin", "pswpout"]);
    let t = &r.t;
    println!(
        "result: rounds={} staged={} not_staged={} moved={} eagain={} stale_moves_seen={} q_stuck={} \
         control_out={} present_moves={} bad={} pswpin={} pswpout={} secs={:.1} timed_out={}",
        t.rounds,
        t.staged,
        t.not_staged,
        t.moved,
        t.eagain,
        t.stale_moves_seen,
        t.q_stuck,
        t.control_out,
        t.present_moves,
        t.bad,
        after[0] - before[0],
        after[1] - before[1],
        budget.elapsed().as_secs_f64(),
        budget.timed_out()
    );
    Ok(std::mem::take(&mut r.t))
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(&a) {
        Err(e) => {
            eprintln!("uffd-aba: {e:#}");
            ExitCode::from(2)
        }
        Ok(t) if t.stale_moves_seen == 0 && t.bad == 0 => ExitCode::SUCCESS,
        Ok(t) => {
            eprintln!(
                "uffd-aba: {} stale move(s) seen (a folio moved away from a page that still maps it), {} wrong page(s)",
                t.stale_moves_seen, t.bad
            );
            ExitCode::from(EXIT_CORRUPT as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagemap_words_decode() {
        assert_eq!(Pte::decode(0), Pte::None);
        assert_eq!(Pte::decode((1 << 63) | 0x1234), Pte::Present);
        // Type 1, offset 0x1a2, soft-dirty and exclusive bits set.
        let w = (1u64 << 62) | (1 << 56) | (1 << 55) | (0x1a2 << 5) | 1;
        assert_eq!(Pte::decode(w), Pte::Swap { ty: 1, off: 0x1a2 });
        assert_eq!(Pte::decode(w).slot().map(fmt_slot), Some("1:0x1a2".into()));
        assert_eq!(Pte::Present.slot(), None);
    }

    #[test]
    fn own_pagemap_sees_a_present_page() {
        let m = Mapping::anon(2 * PAGE).expect("mmap");
        // SAFETY: page 0 of our own mapping.
        unsafe { fill_page(m.page_ptr(0), 1, 0) };
        let pm = Pagemap::open().expect("pagemap");
        assert_eq!(pm.pte(m.page_ptr(0) as usize).expect("read"), Pte::Present);
        assert_eq!(pm.pte(m.page_ptr(1) as usize).expect("read"), Pte::None);
    }

    #[test]
    fn the_window_is_named_by_the_frame_that_sleeps() {
        // As 6.12-inject shows them (a BPF trampoline on move_pages).
        let w1 = "[<0>] detector_inject_widen+0x5d/0xf0\n[<0>] move_pages+0xe02/0x1670\n\
                  [<0>] bpf_trampoline_6442469137+0x91/0x137\n[<0>] move_pages+0x5/0x1670\n";
        let w2 = "[<0>] move_pages+0xecb/0x1670\n[<0>] bpf_trampoline_6442469137+0x91/0x137\n\
                  [<0>] move_pages+0x5/0x1670\n[<0>] userfaultfd_ioctl+0x1c0/0xe40\n";
        let lock = "[<0>] __folio_lock+0x13f/0x350\n[<0>] move_pages+0xe40/0x1670\n";
        let out = "[<0>] mmput+0xe/0x20\n[<0>] userfaultfd_ioctl+0x1cb/0xe40\n";
        let p1 = classify('D', w1);
        let p2 = classify('D', w2);
        assert_eq!(p1, Phase::Window("detector_inject_widen+0x5d/0xf0".into()));
        assert!(matches!(p2, Phase::Window(_)));
        assert_ne!(p1, p2);
        // Running (the stack of a running task means nothing), blocked
        // elsewhere, or back out of move_pages.
        assert_eq!(classify('R', w2), Phase::Other);
        assert_eq!(classify('D', lock), Phase::Other);
        assert_eq!(classify('S', out), Phase::Other);
        assert_eq!(classify('D', ""), Phase::Other);
    }
}
