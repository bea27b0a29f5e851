//! Diagnostics of the rare failure paths, sent to userspace with aya-log
//! (its `AYA_LOGS` ring buffer) and shown at the level `--bpf-log` picks:
//! a kernel read that failed, a folio that cannot be read, an argument or
//! return value the trampoline refused, an offset this kernel's BTF did not
//! give, the kprobe stash losing a call (`detector_common::DiagKind`).
//!
//! Cost with logging off: every report sits on a branch a program only
//! takes once something already failed, behind a test of `AYA_LOG_LEVEL`,
//! aya-log's read-only global, which userspace fixes before load. The
//! verifier reads a frozen read-only global as a constant, so with the
//! level at 0 it proves every report dead and removes it: the kernel runs
//! the programs without them, and `AYA_LOGS` is never written.
//!
//! Cost with logging on: the reports go through one global BPF function,
//! [`detector_diag`], which the verifier checks once, on its own, instead
//! of at each of the dozens of places that report (a static function is
//! checked again at every call site, and aya-log's record writing is long:
//! measured, that made the verifier process 400-600 thousand instructions
//! per program). A global function takes only numbers, so the record holds
//! numbers (probe, kind, two values, the count) and userspace words them.
//!
//! Reports are counted per kind and probe (`DIAG`); the 1st, 2nd, 4th,
//! 8th... occurrence is sent, with its count, so a field that fails on
//! every event costs one line per doubling instead of one per event.

use aya_log_ebpf::macro_support::{Level, AYA_LOG_LEVEL};
use detector_common::{DiagField, DiagKind, ProbeId, ABSENT, DIAG_KINDS, MAX_PROBES};

use crate::maps::DIAG;

/// Reports `kind` for `probe` with its two values, when `--bpf-log` asks
/// for its level. Inlined at the failure branch; `kind` is a constant
/// there, so the test is one load of the level and one comparison.
#[inline(always)]
pub(crate) fn report(probe: ProbeId, kind: DiagKind, a: u64, b: u64) {
    if AYA_LOG_LEVEL.load() >= kind.level() {
        core::hint::cold_path();
        detector_diag(probe as u32, kind as u32, u32::from(kind.level()), a, b);
    }
}

/// A field the event needs could not be read: its offset is unknown on
/// this kernel (`ABSENT`: a layout the programs did not expect) or the
/// read at it failed.
#[inline(always)]
pub(crate) fn field_unreadable(probe: ProbeId, field: DiagField, off: u32, base: u64) {
    // The level first: with logging off the verifier then drops the test
    // of `off` too, not only the reports.
    if AYA_LOG_LEVEL.load() == 0 {
        return;
    }
    if off == ABSENT {
        report(probe, DiagKind::OffsetUnknown, field as u64, 0);
    } else {
        report(probe, DiagKind::ReadFailed, field as u64, base);
    }
}

/// Counts one more report of `kind` for `probe`; the count when it is a
/// power of two (the report is sent), else `None`.
#[inline(always)]
fn occurrence(probe: u32, kind: u32) -> Option<u32> {
    if probe >= MAX_PROBES || kind >= DIAG_KINDS {
        return None;
    }
    let p = DIAG.get_ptr_mut(kind * MAX_PROBES + probe)?;
    // SAFETY: `p` points at a map value, valid while the program runs. Two
    // CPUs reporting at once can lose a count, which shifts the powers of
    // two a report is sent at; nothing else depends on it.
    let n = unsafe { *p }.wrapping_add(1);
    // SAFETY: as above.
    unsafe { *p = n };
    (n & n.wrapping_sub(1) == 0).then_some(n)
}

/// The one place that writes reports. Global (`no_mangle`, BTF linkage
/// global), so the verifier checks it once per program, with arguments it
/// knows only as numbers. The record's text is
/// `diag <probe> <kind> <a> <b> <occurrence>`, at `level` (the kind's, which
/// the caller knows as a constant: looking it up here from `kind` would be
/// a table read at an offset the verifier cannot bound); the detector's
/// `loader::bpf_log` turns it into a sentence. Returns 0 (a global BPF
/// function must return a scalar).
// `pub` keeps the symbol global, which is the point; nothing else calls it.
#[allow(unreachable_pub)]
#[no_mangle]
#[inline(never)]
pub extern "C" fn detector_diag(probe: u32, kind: u32, level: u32, a: u64, b: u64) -> u32 {
    // Kernels before 6.8 verify a global function even when no call to it
    // is left; with logging off this makes the rest dead code there too.
    if AYA_LOG_LEVEL.load() == 0 {
        return 0;
    }
    let Some(n) = occurrence(probe, kind) else {
        return 0;
    };
    let level = if level <= 1 {
        Level::Error
    } else if level == 2 {
        Level::Warn
    } else if level == 3 {
        Level::Info
    } else if level == 4 {
        Level::Debug
    } else {
        Level::Trace
    };
    aya_log_ebpf::log!(&(), target: "bpf", level, "diag {} {} {} {} {}", probe, kind, a, b, n);
    0
}
