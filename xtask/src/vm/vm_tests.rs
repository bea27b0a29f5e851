//! The real-kernel tests: what each boots, runs and expects, and the guest
//! `/init` script that runs it.

use detector::analyzer::{RuleId, Severity};
use detector_common::ProbeId;

use super::vm_kernel::KernelLine;

/// Swap device the guest uses.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Swap {
    /// /dev/vda, a virtio disk: asynchronous swap-in through the swap cache.
    Disk,
    /// zram: SWP_SYNCHRONOUS_IO, so single-mapped entries take the
    /// synchronous swap-in path guarded by `swapcache_prepare`.
    Zram { mib: u32 },
}

/// What the lost-event counters must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The ring buffer keeps up: the only losses are runs the kernel itself
    /// skipped, which the probes cannot prevent and the detector counts —
    /// the kprobe recursion guard and kretprobe instance pool in kprobe
    /// mode, and on preemptible kernels (Debian's 6.18 and 7.x) a probe
    /// program preempted on a CPU while another task calls the same
    /// function there. A few per ten thousand events at most, and every
    /// one in the stream and the footer; a filling ring loses thousands.
    Rare,
    /// A deliberately tiny ring buffer: losses must happen and be reported.
    Positive,
}

/// A window histogram that must be non-empty on this test.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WindowExpect {
    /// Substring of the analyzer's window name.
    pub(crate) name: &'static str,
    pub(crate) min_samples: u64,
    /// Lines where the kernel cannot open this window, and why.
    pub(crate) not_on: &'static [(KernelLine, &'static str)],
}

/// A kernel bug a line ships that the workload's own data check catches.
/// There the workload may fail with `signature` in its output: the result
/// is reported as the known bug instead of a failure, and the checks that
/// need the workload to run to its end (probe coverage, windows) become
/// notes; the trace must still be consistent and free of violations. A
/// newer package of the line that fixes the bug simply passes.
pub(crate) struct KernelBug {
    pub(crate) line: KernelLine,
    pub(crate) signature: &'static str,
    pub(crate) what: &'static str,
}

/// A finding a run must report, at least `min` times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Required {
    pub(crate) rule: RuleId,
    pub(crate) severity: Severity,
    pub(crate) min: u64,
}

/// What the analyzer must and may report on one kernel line. A finding
/// that is neither required nor allowed fails the test, and so does a
/// required finding seen fewer than `min` times.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Findings {
    pub(crate) required: &'static [Required],
    /// Findings that may appear (any number of times) besides the required
    /// ones. Never a violation on a stock kernel (a unit test checks).
    pub(crate) allowed: &'static [(RuleId, Severity)],
}

/// Nothing may be reported.
pub(crate) const NO_FINDINGS: Findings = Findings {
    required: &[],
    allowed: &[],
};

/// A minimum for one `key=value` counter of the workload's `result:` line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Effort {
    pub(crate) key: &'static str,
    pub(crate) min: u64,
}

pub(crate) const fn effort(key: &'static str, min: u64) -> Effort {
    Effort { key, min }
}

pub(crate) struct Expect {
    /// Probes the workload drives: each must fire when the plan attached it.
    pub(crate) probes: &'static [ProbeId],
    pub(crate) lost: Lost,
    /// Compare recorded swap reads with the guest's `pswpin` delta.
    pub(crate) pswpin_matches: bool,
    pub(crate) windows: &'static [WindowExpect],
    /// Findings on every kernel line without its own entry in `findings_on`.
    pub(crate) findings: Findings,
    /// Kernel lines whose findings differ from `findings`: one entry each.
    pub(crate) findings_on: &'static [(KernelLine, Findings)],
    /// Analyzer settings for the replay (the default unless a rule needs
    /// a lower threshold to show what the workload drives).
    pub(crate) eexist_threshold: Option<u32>,
    /// Minimum counters of the workload's `result:` line: the workload did
    /// the work the test is about.
    pub(crate) effort: &'static [Effort],
    /// Swap-cache lookups that returned a folio and were compared with the
    /// insert that named it, as a fraction of all such lookups (the rest hit
    /// folios inserted before the capture started or lost).
    pub(crate) min_lookups_compared: f64,
}

impl Expect {
    /// The findings declaration for `line`.
    pub(crate) fn findings_for(&self, line: KernelLine) -> &Findings {
        self.findings_on
            .iter()
            .find(|(l, _)| *l == line)
            .map(|(_, f)| f)
            .unwrap_or(&self.findings)
    }
}

// Workload budgets (`--seconds`) are generous: a workload cut short by its
// budget fails its test (it did less than declared), and a loaded 2-core
// host runs TCG guests at half speed (benign-soak measured 39 s idle, 117 s
// loaded). `timeout_secs` still bounds the whole boot.
pub(crate) struct VmTest {
    pub(crate) name: &'static str,
    pub(crate) about: &'static str,
    pub(crate) kernels: &'static [KernelLine],
    /// The lines CI runs it on (`vm-test --matrix ci`, the default): a
    /// subset of `kernels`. See docs/vm-tests.md for why.
    pub(crate) ci: &'static [KernelLine],
    /// Kernel lines where the workload is expected to exit 77 (the feature
    /// does not exist there); a skip anywhere else is a failure.
    pub(crate) skips_on: &'static [KernelLine],
    pub(crate) swap: Swap,
    /// `memory.max` of the workload's cgroup.
    pub(crate) memory_max: &'static str,
    /// Workload argv (binary name first), run inside the cgroup.
    pub(crate) workload: &'static [&'static str],
    /// `record --ring-size`; `None` uses [`RING_BYTES`].
    pub(crate) ring_size: Option<u64>,
    /// `record --attach`: `Some("kprobe")` forces the fallback path where
    /// fentry would work, and the check then requires a kprobe-only plan.
    pub(crate) attach: Option<&'static str>,
    /// `record --unfiltered`: every call becomes an event, so a probe whose
    /// relevance filter the workload would not pass is still seen firing.
    pub(crate) unfiltered: bool,
    pub(crate) expect: Expect,
    pub(crate) kernel_bugs: &'static [KernelBug],
    /// On the fault-injected kernel: the races it brings back for this
    /// workload, which the kernel logs and the detector must report one for
    /// one (docs/vm-tests.md, "Fault-injected kernel").
    pub(crate) injected: Option<Injected>,
    /// Wall-clock limit for the whole boot.
    pub(crate) timeout_secs: u64,
    /// Size of the swap disk in MiB; `None` uses the harness default. A
    /// disk barely larger than the workload's swapped set makes freed
    /// entries come back at once.
    pub(crate) swap_mib: Option<u64>,
    /// Guest settings beyond swap and the cgroup.
    pub(crate) setup: GuestSetup,
}

/// The races a test on the injected kernel drives, and how many times at
/// least the kernel must log each (a run where the race never happened
/// proves nothing).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Injected {
    /// `detector-inject: seed003 lazyfree-discard` lines.
    pub(crate) lazyfree_discards: u64,
    /// `detector-inject: seed000 stale-folio` lines.
    pub(crate) stale_moves: u64,
}

/// Guest settings a test may change; [`GuestSetup::PLAIN`] changes none.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuestSetup {
    /// mTHP sizes (`hugepages-<size>`) set to `always` for anonymous
    /// memory; every other size, the PMD size included, is set to `never`.
    /// Non-empty also marks the swap disk non-rotational, because swap
    /// entries for a large folio come only from the clusters of a
    /// solid-state device (SWP_SOLIDSTATE); otherwise reclaim splits the
    /// folio first. Workloads opt in per mapping (MADV_HUGEPAGE, aligned).
    pub(crate) mthp: &'static [&'static str],
    /// `kernel.pid_max` for the run: a small value makes task ids wrap
    /// (and get reused) within minutes.
    pub(crate) pid_max: Option<u32>,
    /// `record --rotate-size SIZE --rotate-keep KEEP`; the check analyzes
    /// every kept segment, oldest first, as one stream.
    pub(crate) rotate: Option<(&'static str, u32)>,
    /// Capture with `detector agent --record` instead of `detector
    /// record`: the same trace checks apply to its recording, and its
    /// JSON-lines findings, heartbeats and scraped metrics are checked
    /// against the replay of that recording (`vm_agent`).
    pub(crate) agent: bool,
    /// `record --bpf-log`: the programs' diagnostics on, and what must
    /// reach `record`'s stderr.
    pub(crate) bpf_log: Option<BpfLogRun>,
}

impl GuestSetup {
    pub(crate) const PLAIN: GuestSetup = GuestSetup {
        mthp: &[],
        pid_max: None,
        rotate: None,
        agent: false,
        bpf_log: None,
    };
}

/// A recording with the BPF programs' diagnostics on (`--bpf-log`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct BpfLogRun {
    /// `--bpf-log LEVEL`.
    pub(crate) level: &'static str,
    /// `--bpf-log-selftest`: two diagnostics fire on every kernel
    /// (`detector::loader::SELFTEST_ARG`).
    pub(crate) selftest: bool,
    /// Reports that must be in `record`'s stderr, by their text after the
    /// probe's name (the logger's prefix is not part of it). The first
    /// line of each must be its first occurrence, and the rate limit must
    /// hold: a report is sent at the 1st, 2nd, 4th... occurrence only.
    pub(crate) reports: &'static [&'static str],
}

/// Ring buffer for tests that must lose nothing: TCG runs the consumer in
/// bursts, so the ring has to absorb a few hundred ms of events at ~100k/s.
pub(crate) const RING_BYTES: u64 = 64 << 20;

use ProbeId as P;

const SWAP_CORE: &[ProbeId] = &[
    P::SwapCacheLookup,
    P::SwapCacheInsert,
    P::SwapCacheDelete,
    P::SwapEntryAlloc,
    P::SwapEntryFree,
    P::SwapcachePrepare,
    P::DoSwapPage,
    P::SwapRead,
    P::RemoveMapping,
];

/// Every function role of the plan (`detector::plan::ROLES`), the
/// swap-out tracepoint the pswpout check counts and the task-exit
/// tracepoint: all exist on 6.12, 6.18 and 7.2.
const ALL_ROLES: &[ProbeId] = &[
    P::SwapCacheLookup,
    P::SwapCacheInsert,
    P::SwapCacheDelete,
    P::SwapEntryAlloc,
    P::SwapEntryDup,
    P::SwapEntryFree,
    P::SwapcachePrepare,
    P::SwapcacheClear,
    P::DoSwapPage,
    P::FolioMoveAnonRmap,
    P::MovePages,
    P::MovePagesLookup,
    P::MovePresent,
    P::RemoveMapping,
    P::TryToUnmapOne,
    P::MadviseFree,
    P::LazyfreeMark,
    P::GupGrab,
    P::GupGrabFast,
    P::GupPut,
    P::UnpinUserPage,
    P::DoWpPage,
    P::SwapRead,
    P::TpWriteFolio,
    P::TaskExit,
];

/// 6.1 has no UFFDIO_MOVE (`move_pages` arrived in 6.8), so neither the
/// window nor the lookups inside it exist there; every other role attaches
/// under its older name (`page_move_anon_rmap`, `mark_page_lazyfree`, `try_grab_page`,
/// `free_swap_slot`, `swap_readpage`), measured on 6.1.0-57.
const ROLES_6_1: &[ProbeId] = &[
    P::SwapCacheLookup,
    P::SwapCacheInsert,
    P::SwapCacheDelete,
    P::SwapEntryAlloc,
    P::SwapEntryDup,
    P::SwapEntryFree,
    P::SwapcachePrepare,
    P::SwapcacheClear,
    P::DoSwapPage,
    P::FolioMoveAnonRmap,
    P::RemoveMapping,
    P::TryToUnmapOne,
    P::MadviseFree,
    P::LazyfreeMark,
    P::GupGrab,
    P::GupGrabFast,
    P::GupPut,
    P::UnpinUserPage,
    P::DoWpPage,
    P::SwapRead,
    P::TpWriteFolio,
    P::TaskExit,
];

/// Probes that must attach on each kernel line, whatever the test: a probe
/// in this list that the recorded plan marks unavailable (or lacks) fails
/// the test. A line without an entry fails every test on it (a unit test
/// checks that every line has one).
pub(crate) const MUST_ATTACH: &[(KernelLine, &[ProbeId])] = &[
    (KernelLine::V6_12, ALL_ROLES),
    (KernelLine::V6_1, ROLES_6_1),
    // The same 6.12 source, built with the config fragment's BPF options.
    (KernelLine::V6_12Inject, ALL_ROLES),
    (KernelLine::V6_18, ALL_ROLES),
    (KernelLine::V7_2, ALL_ROLES),
];

pub(crate) fn must_attach(line: KernelLine) -> Option<&'static [ProbeId]> {
    MUST_ATTACH
        .iter()
        .find(|(l, _)| *l == line)
        .map(|(_, p)| *p)
}

const fn window_n(name: &'static str, min_samples: u64) -> WindowExpect {
    WindowExpect {
        name,
        min_samples,
        not_on: &[],
    }
}
pub(crate) const fn needs(rule: RuleId, severity: Severity, min: u64) -> Required {
    Required {
        rule,
        severity,
        min,
    }
}

use RuleId as R;
use Severity as S;

/// Lookups of entries inserted while recording: all of them on a run that
/// loses nothing (measured 100% on every 6.12 test but sync-swapin).
const COMPARED: f64 = 0.98;

const MOVE_PROBES: &[ProbeId] = &[
    P::MovePages,
    P::MovePagesLookup,
    P::MovePresent,
    P::FolioMoveAnonRmap,
    P::SwapCacheLookup,
    P::SwapEntryAlloc,
    P::SwapEntryFree,
    P::DoSwapPage,
];
/// tid-churn: the swap core, the task exits and, where UFFDIO_MOVE exists,
/// the move probes (on 6.1 the plan has no move_pages and the check says so).
const CHURN_PROBES: &[ProbeId] = &[
    P::SwapCacheLookup,
    P::SwapCacheInsert,
    P::SwapCacheDelete,
    P::SwapEntryAlloc,
    P::SwapEntryFree,
    P::SwapcachePrepare,
    P::DoSwapPage,
    P::SwapRead,
    P::RemoveMapping,
    P::MovePages,
    P::MovePagesLookup,
    P::TaskExit,
];
/// A move retried by the kernel is a near miss; so is a lookup that missed
/// a folio the kernel then found by re-checking. Neither may be a violation
/// on a stock kernel.
const MOVE_NEAR_MISSES: &[(RuleId, Severity)] = &[
    (R::SwapEntryAba, S::NearMiss),
    (R::SwapEntryAba, S::Info),
    (R::MissedSwapcacheLookup, S::NearMiss),
    (R::StaleFolioMove, S::NearMiss),
];

/// Every workload runs on every line (the full matrix); only
/// uffd-move-swap is expected to skip, on 6.1.
const ALL: &[KernelLine] = KernelLine::ALL;
/// CI (docs/vm-tests.md, "CI"): every test on 6.12, the line whose
/// findings every test declares from measured runs and where every role of
/// the plan attaches; the smoke set (swap-pressure, uffd-move-swap) on
/// every line.
const CI_FULL: &[KernelLine] = &[KernelLine::V6_12];
const CI_SMOKE: &[KernelLine] = KernelLine::ALL;

/// 6.1's block layer takes direct-I/O buffers with FOLL_GET references
/// (pins for direct I/O arrived in 6.5), so no pin window opens there.
const NO_PIN_WINDOW_6_1: &[(KernelLine, &str)] = &[(
    KernelLine::V6_1,
    "6.1's direct I/O takes FOLL_GET references, not FOLL_PIN pins",
)];

/// 6.18's UFFDIO_MOVE bug, which every mover workload can run into.
const MOVE_BUGS: &[KernelBug] = &[KernelBug {
    line: KernelLine::V6_18,
    signature: "failed: File exists (os error 17)",
    what: "6.18's move_pages() keeps err = -EAGAIN after a retry (it does not reset it, as 7.x \
           does), so the retry that moves the page is reported as a failure and the next pass \
           finds the destination filled: UFFDIO_MOVE returns -EEXIST for a page it moved",
}];

/// The fault-injected kernel (`cargo xtask build-kernel`): only its own
/// tests run there, in CI too.
const INJECT: &[KernelLine] = &[KernelLine::V6_12Inject];

/// Lines with UFFDIO_MOVE and mTHP swap-out (6.10+).
const MODERN: &[KernelLine] = &[KernelLine::V6_12, KernelLine::V6_18, KernelLine::V7_2];

/// Seed 003's workload: two readers, 1000 reads each.
const MADVFREE_DIO: &[&str] = &[
    "madvfree-dio",
    "--device",
    "/dev/vdc",
    "--mib",
    "4",
    "--iterations",
    "1000",
    "--seconds",
    "240",
];

const MADVFREE_DIO_EXPECT: Expect = Expect {
    probes: &[P::MadviseFree, P::TryToUnmapOne, P::GupGrabFast, P::GupPut],
    lost: Lost::Rare,
    pswpin_matches: true,
    windows: &[WindowExpect {
        name: "gup pin",
        min_samples: 5_000,
        not_on: NO_PIN_WINDOW_6_1,
    }],
    // Seed 003 on a fixed kernel: reclaim meets clean lazyfree folios that
    // DIO holds pinned (refcount 1026) and the kernel's refcount check
    // keeps them. Measured 697-960 near misses. A reader's pin may also
    // land while reclaim is inside the unmap of a folio it has written
    // again: the write, not the refcount, keeps it (info).
    findings: Findings {
        required: &[needs(R::LazyfreeExtraRefs, S::NearMiss, 100)],
        allowed: &[(R::LazyfreeExtraRefs, S::Info)],
    },
    findings_on: &[],
    eexist_threshold: None,
    // 2 readers x 1000 reads; thousands of lazyfree pages freed.
    effort: &[effort("reads", 2_000), effort("pglazyfreed", 1_000)],
    min_lookups_compared: COMPARED,
};

pub(crate) const TESTS: &[VmTest] = &[
    VmTest {
        name: "swap-pressure",
        about: "a memory hog under a 64M cgroup pushes 160 MiB through swap while the detector records",
        kernels: ALL,
        ci: CI_SMOKE,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        workload: &["swap-hog", "--mib", "160", "--passes", "2", "--seconds", "240"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Rare,
            pswpin_matches: true,
            // Measured 46-55 k reallocations on 6.12 and 6.1.
            windows: &[window_n("free->realloc", 10_000)],
            // Plain swap traffic: no race to find, nothing may be reported.
            findings: NO_FINDINGS,
            findings_on: &[],
            eexist_threshold: None,
            // 160 MiB through a 64M cgroup twice: measured pswpin 123 k.
            effort: &[effort("passes", 2), effort("pswpin", 60_000)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "kprobe-fallback",
        about: "the swap hog with --attach kprobe: every function probe through kprobe/kretprobe, same checks",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        // Sized like swap-pressure: enough traffic for the allocator to wrap
        // around the 256 MiB swap disk, so freed entries are reallocated.
        workload: &["swap-hog", "--mib", "160", "--passes", "2", "--seconds", "240"],
        ring_size: None,
        attach: Some("kprobe"),
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[window_n("free->realloc", 10_000)],
            findings: NO_FINDINGS,
            findings_on: &[],
            eexist_threshold: None,
            effort: &[effort("passes", 2), effort("pswpin", 60_000)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "tiny-ring",
        about: "the same hog with a 4 KiB ring buffer: events must be lost and the loss reported",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "32M",
        workload: &["swap-hog", "--mib", "64", "--passes", "2", "--seconds", "180"],
        ring_size: Some(4096),
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::SwapCacheLookup, P::DoSwapPage],
            lost: Lost::Positive,
            pswpin_matches: false,
            windows: &[],
            // Most events are lost (measured 490 k of 580 k): a finding
            // built on what is left would be noise, and none was seen.
            findings: NO_FINDINGS,
            findings_on: &[],
            eexist_threshold: None,
            effort: &[effort("passes", 2), effort("pswpin", 20_000)],
            // Lost inserts leave most lookups without a recorded insert
            // (measured 33% compared): the mismatch bound still applies.
            min_lookups_compared: 0.0,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 300,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "bpf-log",
        about: "a short swap hog recorded with --bpf-log debug and the self-test's two failures: the programs' diagnostics reach record's stderr, rate-limited",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "32M",
        workload: &["swap-hog", "--mib", "48", "--passes", "1", "--seconds", "120"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::SwapCacheLookup, P::DoSwapPage, P::SwapRead],
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[],
            findings: NO_FINDINGS,
            findings_on: &[],
            eexist_threshold: None,
            effort: &[effort("passes", 1), effort("pswpin", 2_000)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 240,
        swap_mib: None,
        setup: GuestSetup {
            bpf_log: Some(BpfLogRun {
                level: "debug",
                selftest: true,
                reports: &[
                    // swap_read's address at argument 11: bpf_get_func_arg
                    // refuses it on every swap read (-EINVAL).
                    "swap_read: argument 11 of the traced function is unreadable (bpf_get_func_arg: -22)",
                    // vm_fault.address hidden from the programs: every swap
                    // fault meets a layout without it.
                    "do_swap_page: unexpected layout: no offset for vm_fault.address on this kernel",
                ],
            }),
            ..GuestSetup::PLAIN
        },
    },
    VmTest {
        name: "uffd-move-swap",
        about: "UFFDIO_MOVE of swapped-out and swap-cached pages while other threads fault them in and reclaim pushes them out (seed 000)",
        kernels: ALL,
        ci: CI_SMOKE,
        skips_on: &[KernelLine::V6_1],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &[
            "uffd-move-swap", "--mib", "8", "--iterations", "12", "--faulters", "2",
            "--move-pages", "16", "--chase", "--seconds", "240",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[
                P::MovePages,
                P::MovePagesLookup,
                P::FolioMoveAnonRmap,
                P::SwapCacheLookup,
                P::SwapEntryAlloc,
                P::SwapEntryFree,
                P::DoSwapPage,
            ],
            lost: Lost::Rare,
            pswpin_matches: true,
            // Measured 16 k lookup->close and 20 k free->realloc samples.
            windows: &[
                window_n("move_pages lookup", 4_000),
                window_n("free->realloc", 2_000),
            ],
            // The seed-000 window: a lookup inside move_pages that found no
            // folio while another thread swapped the entry in before the
            // call returned. 6.12 re-checks SWAP_HAS_CACHE and retries, so
            // this is a near miss, and it is what the run can honestly be
            // required to show (measured 16). An ABA needs the entry freed
            // and reallocated inside a ~7 us window: never seen, allowed as
            // a near miss (retried moves) or info, never as a violation.
            findings: Findings {
                required: &[needs(R::MissedSwapcacheLookup, S::NearMiss, 1)],
                allowed: &[(R::SwapEntryAba, S::NearMiss), (R::SwapEntryAba, S::Info)],
            },
            findings_on: &[],
            eexist_threshold: None,
            // 12 iterations of 8 MiB: every one of the 2048 pages moved.
            effort: &[
                effort("iterations", 12),
                effort("moved", 24_576),
                effort("pswpin", 1_000),
            ],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: MOVE_BUGS,
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "madvfree-dio",
        about: "MADV_FREE buffers used for O_DIRECT reads from a virtio disk while MADV_PAGEOUT reclaims them (seed 003)",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: MADVFREE_DIO,
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: MADVFREE_DIO_EXPECT,
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "agent-madvfree-dio",
        about: "madvfree-dio watched by `detector agent` (JSON-lines findings, heartbeat, metrics scraped in the guest, continuous recording) instead of `detector record`",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: MADVFREE_DIO,
        ring_size: None,
        attach: None,
        unfiltered: false,
        // The agent's recording is held to everything madvfree-dio's
        // trace is; its own outputs are checked against that recording.
        expect: MADVFREE_DIO_EXPECT,
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup {
            agent: true,
            ..GuestSetup::PLAIN
        },
    },
    VmTest {
        name: "fork-pin-cow",
        about: "O_DIRECT reads pin buffer pages while the process forks and both sides write (seed 001)",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        workload: &[
            "fork-pin-cow", "--device", "/dev/vdc", "--iterations", "800", "--seconds", "240",
        ],
        ring_size: None,
        attach: None,
        unfiltered: true,
        expect: Expect {
            probes: &[P::GupGrabFast, P::GupPut, P::DoWpPage],
            lost: Lost::Rare,
            pswpin_matches: true,
            // Measured 330 k pin lifetimes.
            windows: &[WindowExpect {
                name: "gup pin",
                min_samples: 50_000,
                not_on: NO_PIN_WINDOW_6_1,
            }],
            // A fixed kernel copies pinned pages at fork, so the wrong COW
            // of seed 001 cannot happen and no rule has anything to report:
            // the test holds the COW and pin rules to no false positive on
            // 800 forks over pinned pages, and the pin window to real data.
            findings: NO_FINDINGS,
            findings_on: &[],
            eexist_threshold: None,
            // Swap-ins are not the point (the paged-out buffer is faulted
            // back from the swap cache: pswpin stays 0).
            effort: &[effort("forks", 800), effort("dio_reads", 1_000)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[KernelBug {
            line: KernelLine::V6_1,
            signature: "a COW decision sent data to the wrong page",
            what: "6.1's direct I/O takes FOLL_GET references: a fork during the read write-protects \
                   the buffer, the parent's next write copies the page away, and the read lands in \
                   the copy the parent no longer maps (seed 001's wrong COW; fixed when direct I/O \
                   moved to FOLL_PIN)",
        }],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "sync-swapin",
        about: "threads fault the same zram-swapped pages at once: synchronous swap-in and swapcache_prepare contention (seed 002)",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Zram { mib: 256 },
        memory_max: "max",
        workload: &["sync-swapin", "--mib", "8", "--threads", "4", "--iterations", "30", "--seconds", "240"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::SwapcachePrepare, P::SwapcacheClear, P::DoSwapPage, P::SwapRead],
            lost: Lost::Rare,
            pswpin_matches: true,
            // One prepare->clear per page swapped in (measured 61 k).
            windows: &[window_n("prepare->clear", 30_000)],
            // Seed 002: racing faults get -EEXIST from swapcache_prepare
            // while the first one reads the page. Measured per holding
            // window: 2971 -EEXIST answers, 4 or more on ~75 entries, 3 or
            // more on ~350, never 64 (the default threshold, meant for
            // livelocks). At threshold 3 the contention is reported.
            findings: Findings {
                required: &[needs(R::EexistStorm, S::Info, 20)],
                allowed: &[],
            },
            findings_on: &[],
            eexist_threshold: Some(3),
            // 30 rounds of 8 MiB on zram: every page read back (61 440).
            effort: &[effort("rounds", 30), effort("pswpin", 30_000)],
            // Synchronous swap-in bypasses the swap cache: measured 76
            // lookups that found a folio, 75 of them inserted while recording.
            min_lookups_compared: 0.9,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "benign-soak",
        about: "mixed swap-heavy load (hog, fork, MADV_FREE reuse, pageout) for a fixed count of iterations: no findings expected",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &["benign-soak", "--mib", "64", "--iterations", "3", "--seconds", "240"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Rare,
            pswpin_matches: true,
            // Measured 53 k reallocations.
            windows: &[window_n("free->realloc", 10_000)],
            // Race-free by construction. Reclaim does meet the lazyfree
            // buffer while a fault or the pager holds a transient reference
            // (refcount 3): the kernel keeps the folio (measured 81 info and
            // 1 near miss, 123 near misses in an earlier run).
            findings: Findings {
                required: &[],
                allowed: &[(R::LazyfreeExtraRefs, S::NearMiss), (R::LazyfreeExtraRefs, S::Info)],
            },
            findings_on: &[],
            eexist_threshold: None,
            effort: &[
                effort("passes", 3),
                effort("forks", 10),
                effort("lazyfree_rounds", 10),
                effort("pswpin", 10_000),
            ],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "uffd-move-swap-churn",
        about: "UFFDIO_MOVE while sibling threads fault, page out and re-fault the pages being moved and their neighbours, on a swap disk barely larger than the working set",
        kernels: MODERN,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        // 4 MiB moved + 2 MiB churned on a 6 MiB disk: the disk is nearly
        // full, so the allocator hands out the few entries just freed, and
        // a freed entry comes back within the move windows. The siblings
        // do the faulting (no separate random faulter spinning on present
        // pages and taking their CPU). 16 pages per UFFDIO_MOVE call: the
        // call looks up each page in turn, so on 6.12 its window holds its
        // earlier lookups while the siblings churn the run's neighbours
        // (6.18 and 7.x: one window per page's move_pages_ptes call).
        workload: &[
            "uffd-move-swap", "--mib", "4", "--iterations", "0", "--siblings", "3",
            "--neighbours", "8", "--faulters", "0", "--move-pages", "16", "--seconds", "60",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: MOVE_PROBES,
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[
                window_n("move_pages lookup", 1_000),
                window_n("free->realloc", 100),
            ],
            // Stock kernel: every move the siblings disturb is retried or
            // refused by the kernel. Measured 0 findings with the path
            // judged by move_present (the analyzer before it reported 7-30
            // false stale-folio violations here).
            findings: Findings {
                required: &[],
                allowed: MOVE_NEAR_MISSES,
            },
            findings_on: &[],
            eexist_threshold: None,
            // Measured 125 952 pages moved, 2 682 sibling pageouts. Swap-ins
            // are few (pswpin 33): the siblings' faults find the pages in
            // the swap cache.
            effort: &[effort("moved", 10_000), effort("sibling_pageouts", 1_000)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: MOVE_BUGS,
        injected: None,
        timeout_secs: 600,
        swap_mib: Some(6),
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "tid-churn",
        about: "2-minute soak: thousands of short-lived threads doing swap-in, fork/COW and UFFDIO_MOVE (where the kernel has it) with pid_max lowered so tids are reused, recorded with rotation",
        kernels: ALL,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        // A 32 MiB pool under 24M: MADV_PAGEOUT only writes a page out and
        // leaves it in the swap cache (it skips swap PTEs on a second call),
        // so the cgroup's own reclaim has to drop the cached copies for
        // the tasks' faults to read from the disk.
        memory_max: "24M",
        workload: &[
            "tid-churn", "--seconds", "120", "--mib", "32", "--pages", "16", "--concurrency", "4",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: CHURN_PROBES,
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[window_n("free->realloc", 1_000)],
            // Thousands of tasks exit and their tids come back while their
            // events are in flight: nothing may be reported (measured 0 over
            // 16 k exits and 15 k tid reuses on 6.12).
            findings: Findings {
                required: &[],
                allowed: MOVE_NEAR_MISSES,
            },
            findings_on: &[],
            eexist_threshold: None,
            effort: &[
                effort("tid_reuses", 1_000),
                effort("swapin_tasks", 500),
                effort("pages_verified", 10_000),
            ],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: MOVE_BUGS,
        injected: None,
        timeout_secs: 1200,
        swap_mib: None,
        setup: GuestSetup {
            // About 700 ids above the 300 reserved ones: a thread or child
            // gets a reused id after ~700 spawns.
            pid_max: Some(1024),
            // 64 segments of 64 MiB fit the 4 GiB results disk; the check
            // fails if the oldest segment was deleted during the run.
            rotate: Some(("64M", 64)),
            ..GuestSetup::PLAIN
        },
    },
    VmTest {
        name: "swap-pressure-mthp",
        about: "the swap hog on mTHP-backed memory (16/32/64 kB folios) with a non-rotational swap disk: large folios go through the swap cache whole",
        kernels: MODERN,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "64M",
        workload: &["swap-hog", "--mib", "160", "--passes", "2", "--large-folios"],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: SWAP_CORE,
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[window_n("free->realloc", 1_000)],
            findings: NO_FINDINGS,
            findings_on: &[],
            eexist_threshold: None,
            // Large folios must reach swap whole (measured 1.5 k large
            // inserts; the check also counts them in the trace).
            effort: &[effort("passes", 2), effort("mthp_swpout", 100)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: MTHP,
    },
    VmTest {
        name: "uffd-move-swap-mthp",
        about: "UFFDIO_MOVE of mTHP-backed sources: large swap-cache folios are refused with EBUSY, faulted in, split by the move and moved",
        kernels: MODERN,
        ci: CI_FULL,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &[
            "uffd-move-swap", "--mib", "8", "--iterations", "12", "--large-folios", "--seconds", "90",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: MOVE_PROBES,
            lost: Lost::Rare,
            pswpin_matches: true,
            // The default 256 MiB disk, non-rotational: the cluster
            // allocator spreads entries over it and an entry freed here is
            // not handed out again within the run (no free->realloc).
            windows: &[window_n("move_pages lookup", 1_000)],
            // Measured 1 missed-lookup near miss on 6.12.
            findings: Findings {
                required: &[],
                allowed: MOVE_NEAR_MISSES,
            },
            findings_on: &[],
            eexist_threshold: None,
            effort: &[effort("iterations", 12), effort("moved", 24_576)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: MOVE_BUGS,
        injected: None,
        timeout_secs: 420,
        swap_mib: None,
        setup: MTHP,
    },
    VmTest {
        name: "inj-madvfree-dio",
        about: "madvfree-dio opted into the injected seed-003 race (reclaim discards a pinned lazyfree page): every discard the kernel logs is one lazyfree_extra_refs violation, every zeroed page has one",
        kernels: INJECT,
        ci: INJECT,
        skips_on: &[],
        swap: Swap::Disk,
        memory_max: "48M",
        workload: &[
            "inj-madvfree-dio", "--device", "/dev/vdc", "--mib", "4", "--iterations", "1000", "--seconds", "240",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: &[P::MadviseFree, P::TryToUnmapOne, P::GupGrabFast, P::GupPut],
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[window_n("gup pin", 1_000)],
            // The race itself, once per discard; kswapd (not opted in)
            // still meets the stock refcount check: near misses.
            findings: Findings {
                required: &[needs(R::LazyfreeExtraRefs, S::Violation, 1)],
                allowed: &[(R::LazyfreeExtraRefs, S::NearMiss), (R::LazyfreeExtraRefs, S::Info)],
            },
            findings_on: &[],
            eexist_threshold: None,
            effort: &[effort("reads", 2_000)],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: Some(Injected {
            lazyfree_discards: 1,
            stale_moves: 0,
        }),
        timeout_secs: 600,
        swap_mib: None,
        setup: GuestSetup::PLAIN,
    },
    VmTest {
        name: "inj-uffd-aba",
        about: "The seed-000 swap-entry ABA staged step by step on the injected kernel: while UFFDIO_MOVE sleeps in its widened windows, the source's entry is freed and given to another page's folio before the lookup, and given back to the source after it, on a 1 MiB swap disk kept full; every stale move the kernel logs and every one the workload observes (the other page can no longer be paged out) is a swap_entry_aba or stale_folio_move violation on its entry",
        kernels: INJECT,
        ci: INJECT,
        skips_on: &[],
        swap: Swap::Disk,
        // Only the workload's own MADV_PAGEOUT may swap: every slot it
        // counts on is one it placed.
        memory_max: "max",
        workload: &[
            "inj-uffd-aba", "--rounds", "8", "--delay-ms", "300", "--seconds", "150",
        ],
        ring_size: None,
        attach: None,
        unfiltered: false,
        expect: Expect {
            probes: MOVE_PROBES,
            lost: Lost::Rare,
            pswpin_matches: true,
            windows: &[window_n("move_pages lookup", 5)],
            findings: Findings {
                required: &[],
                allowed: &[
                    (R::SwapEntryAba, S::Violation),
                    (R::StaleFolioMove, S::Violation),
                    (R::SwapEntryAba, S::NearMiss),
                    (R::SwapEntryAba, S::Info),
                    (R::StaleFolioMove, S::NearMiss),
                    (R::MissedSwapcacheLookup, S::NearMiss),
                ],
            },
            findings_on: &[],
            eexist_threshold: None,
            effort: &[
                effort("rounds", 8),
                effort("staged", 5),
                effort("moved", 5),
                effort("stale_moves_seen", 1),
                effort("present_moves", 5),
            ],
            min_lookups_compared: COMPARED,
        },
        kernel_bugs: &[],
        injected: Some(Injected {
            lazyfree_discards: 0,
            stale_moves: 1,
        }),
        timeout_secs: 600,
        // 256 slots: below 2 * 64 per CPU the swap-slots cache stays off,
        // so a freed slot is free at once and the free ones can be counted.
        swap_mib: Some(1),
        setup: GuestSetup::PLAIN,
    },
];

/// Anonymous mTHP sizes below the PMD size; 6.12 offers 16 kB to 2 MB
/// (order 1 is never used for anonymous memory).
const MTHP: GuestSetup = GuestSetup {
    mthp: &["16kB", "32kB", "64kB"],
    ..GuestSetup::PLAIN
};

#[cfg(test)]
mod tests {
    use super::super::vm_guest::{init_script, GuestRun};
    use super::*;

    #[test]
    fn every_test_runs_somewhere_and_names_are_unique() {
        let mut names = std::collections::HashSet::new();
        for t in TESTS {
            assert!(!t.kernels.is_empty(), "{}", t.name);
            assert!(names.insert(t.name), "duplicate {}", t.name);
        }
        for t in TESTS {
            assert!(!t.ci.is_empty(), "{} runs nowhere in CI", t.name);
            for k in t.ci {
                assert!(
                    t.kernels.contains(k),
                    "{}: CI line {k:?} not in kernels",
                    t.name
                );
            }
        }
        // CI covers every line.
        for k in KernelLine::ALL {
            assert!(TESTS.iter().any(|t| t.ci.contains(k)), "{k:?}");
        }
    }

    #[test]
    fn every_kernel_line_declares_the_probes_that_must_attach() {
        use clap::ValueEnum;
        for line in KernelLine::value_variants() {
            let list = must_attach(*line)
                .unwrap_or_else(|| panic!("no MUST_ATTACH entry for {}", line.as_str()));
            assert!(!list.is_empty(), "{}", line.as_str());
        }
    }

    /// Each line's list is what the role table resolves on that line's
    /// kernel (its BTF digest, detector/testdata/btf), with the loader's
    /// move-window rule: neither a role the kernel cannot have nor one it
    /// has and the list forgot.
    #[test]
    fn must_attach_lists_match_each_lines_btf() {
        use clap::ValueEnum;
        // Every line decides here (the match is exhaustive): a Debian
        // package's digest, or None with the reason.
        let digest = |line: KernelLine| match line {
            KernelLine::V6_1 => Some(include_str!("../../../detector/testdata/btf/6.1.json")),
            KernelLine::V6_12 => Some(include_str!("../../../detector/testdata/btf/6.12.json")),
            KernelLine::V6_18 => Some(include_str!("../../../detector/testdata/btf/6.18.json")),
            KernelLine::V7_2 => Some(include_str!("../../../detector/testdata/btf/7.2.json")),
            // Built here from the 6.12 source: no Debian package to digest;
            // the VM test's plan check is what holds it to every role.
            KernelLine::V6_12Inject => None,
        };
        for line in KernelLine::value_variants() {
            let Some(json) = digest(*line) else { continue };
            let d = detector::plan::BtfDigest::parse(json).expect("digest parses");
            assert!(d.kernel.starts_with(line.as_str()), "{}", d.kernel);
            assert!(
                d.unrecorded().is_empty(),
                "{}: {:?}",
                d.kernel,
                d.unrecorded()
            );
            let names = |v: &[ProbeId]| {
                let mut n: Vec<&str> = v.iter().map(|p| p.name()).collect();
                n.sort_unstable();
                n
            };
            let want = names(must_attach(*line).unwrap_or_default());
            assert_eq!(want, names(&d.attaches()), "{}", line.as_str());
        }
    }

    /// 6.12 must attach every role the plan attaches outside degraded mode:
    /// a role added to the plan is required there until a test says why not.
    #[test]
    fn six_twelve_requires_every_role_of_the_plan() {
        for r in detector::plan::ROLES.iter().filter(|r| !r.degraded_only) {
            assert!(ALL_ROLES.contains(&r.probe), "{} missing", r.probe.name());
        }
    }

    /// A stock kernel has no known bug these workloads hit: a violation
    /// there is a false positive or news, never an expected outcome. Only a
    /// fault-injected kernel line may declare one.
    #[test]
    fn findings_declarations_are_sound() {
        for t in TESTS {
            for (line, _) in t.expect.findings_on {
                assert!(
                    t.kernels.contains(line),
                    "{}: findings declared for {}, where the test does not run",
                    t.name,
                    line.as_str()
                );
            }
            for line in t.kernels {
                let d = t.expect.findings_for(*line);
                let stock = !line.as_str().contains("inject");
                for r in d.required {
                    assert!(r.min >= 1, "{}: required {} with min 0", t.name, r.rule);
                    assert!(
                        !(stock && r.severity == Severity::Violation),
                        "{} on {}: requires a violation on a stock kernel",
                        t.name,
                        line.as_str()
                    );
                }
                for (r, sev) in d.allowed {
                    assert!(
                        !(stock && *sev == Severity::Violation),
                        "{} on {}: allows {r} violations on a stock kernel",
                        t.name,
                        line.as_str()
                    );
                }
            }
            assert!(
                (0.0..=1.0).contains(&t.expect.min_lookups_compared),
                "{}",
                t.name
            );
        }
    }

    #[test]
    fn a_line_without_its_own_declaration_uses_the_default() {
        const ON_61: Findings = Findings {
            required: &[],
            allowed: &[(RuleId::EexistStorm, Severity::Info)],
        };
        let e = Expect {
            probes: &[],
            lost: Lost::Rare,
            pswpin_matches: false,
            windows: &[],
            findings: NO_FINDINGS,
            findings_on: &[(KernelLine::V6_1, ON_61)],
            eexist_threshold: None,
            effort: &[],
            min_lookups_compared: 0.0,
        };
        assert_eq!(e.findings_for(KernelLine::V6_1).allowed.len(), 1);
        assert!(e.findings_for(KernelLine::V6_12).allowed.is_empty());
    }

    #[test]
    fn init_quotes_arguments_and_ends_with_results() {
        let s = init_script(&GuestRun {
            swap: Swap::Zram { mib: 64 },
            memory_max: "64M".into(),
            record: Some(vec!["--ring-size".into(), "4096".into()]),
            workload: Some(vec!["swap-hog".into(), "a b".into()]),
            foreground: None,
            setup: GuestSetup::PLAIN,
        });
        assert!(s.contains("swap-hog 'a b'"));
        assert!(s.contains("/sys/block/zram0/disksize"));
        assert!(s.contains("--ring-size 4096"));
        assert!(s.trim_end().ends_with("poweroff -f"));
        let results = s.find("results written").unwrap_or(0);
        assert!(!s.contains("pid_max") && !s.contains("rotational"));
        assert!(results > s.find("kill -INT $DPID").unwrap_or(usize::MAX));
    }

    #[test]
    fn init_sets_mthp_sizes_nonrotational_swap_and_pid_max() {
        let s = init_script(&GuestRun {
            swap: Swap::Disk,
            memory_max: "64M".into(),
            record: Some(vec![]),
            workload: Some(vec!["swap-hog".into()]),
            foreground: None,
            setup: GuestSetup {
                pid_max: Some(1024),
                ..MTHP
            },
        });
        let rot = s
            .find("echo 0 > /sys/block/vda/queue/rotational")
            .expect("rotational");
        assert!(rot < s.find("swapon /dev/vda").expect("swapon"));
        assert!(s.contains("echo always > $T/hugepages-64kB/enabled"));
        assert!(s.contains("echo 1024 > /proc/sys/kernel/pid_max"));
        assert!(s.contains("> /out/mthp.before") && s.contains("> /out/mthp.after"));
    }

    #[test]
    fn an_agent_test_runs_the_agent_scrapes_it_and_stops_it_with_sigterm() {
        let s = init_script(&GuestRun {
            swap: Swap::Disk,
            memory_max: "48M".into(),
            record: Some(vec!["--ring-size".into(), "4096".into()]),
            workload: Some(vec!["madvfree-dio".into()]),
            foreground: None,
            setup: GuestSetup {
                agent: true,
                ..GuestSetup::PLAIN
            },
        });
        assert!(!s.contains("detector record -o"));
        let lo = s.find("ip link set lo up").expect("loopback up");
        let agent = s
            .find("detector agent --record /out/trace.dtr --findings /out/findings.jsonl")
            .expect("agent");
        assert!(lo < agent && s.contains("--ring-size 4096"));
        assert!(s.contains(crate::vm::vm_guest::AGENT_SNAPSHOTS));
        let workload = s.find("> /out/workload.log").expect("workload");
        let before = s.find("findings.before-scrape.jsonl").expect("snapshot");
        let scrape = s
            .find("/metrics; echo $? > /out/metrics.rc")
            .expect("scrape");
        let after = s.find("findings.after-scrape.jsonl").expect("snapshot");
        let term = s.find("kill -TERM $DPID").expect("SIGTERM");
        assert!(workload < before && before < scrape && scrape < after && after < term);
        assert!(!s.contains("kill -INT $DPID"));
        assert!(TESTS.iter().any(|t| t.setup.agent && t.ci == CI_FULL));
    }

    #[test]
    fn doctor_loads_with_the_recordings_bpf_log_level() {
        let run = |setup| {
            init_script(&GuestRun {
                swap: Swap::Disk,
                memory_max: "64M".into(),
                record: Some(vec![]),
                workload: Some(vec!["swap-hog".into()]),
                foreground: None,
                setup,
            })
        };
        assert!(run(GuestSetup::PLAIN).contains("detector doctor --programs > /out/doctor.txt"));
        let t = TESTS
            .iter()
            .find(|t| t.name == "bpf-log")
            .expect("bpf-log test");
        assert!(
            run(t.setup).contains("detector doctor --programs --bpf-log debug > /out/doctor.txt")
        );
        let b = t.setup.bpf_log.expect("bpf-log run");
        assert!(b.selftest && !b.reports.is_empty());
    }

    #[test]
    fn rotated_tests_keep_segments_within_the_results_disk() {
        for t in TESTS {
            if let Some((size, keep)) = t.setup.rotate {
                let mib: u64 = size.trim_end_matches('M').parse().expect("size in M");
                assert!(mib * u64::from(keep) <= 4096, "{}", t.name);
            }
        }
    }
}
