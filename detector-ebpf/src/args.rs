//! Where the arguments of the traced call come from, per attach mode:
//! the fentry/fexit trampoline, the kprobe's registers, the kprobe's stash
//! for its kretprobe, or a typed tracepoint's fixed arguments.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_func_arg, bpf_get_func_ret},
    },
    programs::{ProbeContext, RetProbeContext},
};
use detector_common::{DiagKind, ProbeId, NO_ARG};

use crate::diag;
use crate::maps::{count_lost, ARGS, STASH};
use crate::task::tid_probe_key;

/// The traced call's arguments and return value.
pub(crate) trait Args {
    /// Whether a program with these arguments has the stack room to pack
    /// its event into a ring record there (`emit`).
    const ROOM_TO_PACK: bool = false;
    fn arg(&self, n: u8) -> Option<u64>;
    fn ret(&self) -> Option<u64>;
}

/// fentry / fexit: the trampoline's saved arguments, read with
/// `bpf_get_func_arg`, which bounds-checks a runtime index (a plain ctx load
/// needs a constant offset valid for the attach target's prototype).
pub(crate) struct Tramp {
    pub(crate) ctx: *mut c_void,
    pub(crate) exit: bool,
    /// For reports only (a constant once the program is inlined).
    pub(crate) probe: ProbeId,
}

impl Args for Tramp {
    const ROOM_TO_PACK: bool = true;
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        if n == NO_ARG {
            return None;
        }
        let mut v = 0u64;
        // SAFETY: ctx is the tracing context the kernel passed in; the helper
        // checks `n` against the traced function's argument count.
        let r = unsafe { bpf_get_func_arg(self.ctx, n as u32, &raw mut v) };
        if r == 0 {
            Some(v)
        } else {
            diag::report(self.probe, DiagKind::ArgUnreadable, n as u64, r as u64);
            None
        }
    }
    #[inline(always)]
    fn ret(&self) -> Option<u64> {
        if !self.exit {
            return None;
        }
        let mut v = 0u64;
        // SAFETY: ctx is the tracing context the kernel passed in, and
        // `exit` is only set by fexit programs, whose ctx carries the
        // return value.
        let r = unsafe { bpf_get_func_ret(self.ctx, &raw mut v) };
        if r == 0 {
            Some(v)
        } else {
            diag::report(self.probe, DiagKind::RetUnreadable, r as u64, 0);
            None
        }
    }
}

/// kprobe: the six argument registers of `pt_regs`, each read at its own
/// constant offset (the verifier refuses a computed offset into ctx, which
/// is what a runtime index would compile to).
#[inline(always)]
pub(crate) fn regs(ctx: &ProbeContext) -> Fixed {
    Fixed {
        a: [
            ctx.arg::<u64>(0).unwrap_or(0),
            ctx.arg::<u64>(1).unwrap_or(0),
            ctx.arg::<u64>(2).unwrap_or(0),
            ctx.arg::<u64>(3).unwrap_or(0),
            ctx.arg::<u64>(4).unwrap_or(0),
            ctx.arg::<u64>(5).unwrap_or(0),
        ],
        n: 6,
        ret: None,
    }
}

/// A typed tracepoint argument as a plain number: the verifier tracks
/// BTF pointers and refuses arithmetic on them, but the programs only ever
/// use them as addresses for `bpf_probe_read_kernel`.
#[inline(always)]
pub(crate) fn scalar(v: u64) -> u64 {
    // SAFETY: reads a u64 from our own stack slot.
    unsafe { bpf_probe_read_kernel(&raw const v) }.unwrap_or(0)
}

/// Arguments already copied out (kretprobe from the stash, tracepoints).
pub(crate) struct Fixed {
    pub(crate) a: [u64; 6],
    pub(crate) n: u8,
    pub(crate) ret: Option<u64>,
}

impl Args for Fixed {
    #[inline(always)]
    fn arg(&self, n: u8) -> Option<u64> {
        if n >= self.n {
            return None;
        }
        match n {
            0 => Some(self.a[0]),
            1 => Some(self.a[1]),
            2 => Some(self.a[2]),
            3 => Some(self.a[3]),
            4 => Some(self.a[4]),
            5 => Some(self.a[5]),
            _ => None,
        }
    }
    #[inline(always)]
    fn ret(&self) -> Option<u64> {
        self.ret
    }
}

/// Probes that only stash inside a `move_pages` window: their kretprobe
/// finds no stash on every other call, which is not a loss.
#[inline(always)]
fn in_window_only(probe: ProbeId) -> bool {
    matches!(probe, ProbeId::MovePagesLookup | ProbeId::MovePresent)
}

/// kprobe half of an exit probe: keep the arguments for the kretprobe.
#[inline(always)]
pub(crate) fn stash(args: &Fixed, probe: ProbeId) {
    match ARGS.get(probe as u32) {
        Some(s) if s.enabled != 0 => {}
        _ => return,
    }
    const BPF_NOEXIST: u64 = 1;
    let key = tid_probe_key(probe);
    if STASH.insert(&key, &args.a, BPF_NOEXIST).is_ok() {
        return;
    }
    // Either the previous call's kretprobe never ran (the kernel skipped it:
    // instance pool exhausted, recursion) and its exit event is lost, or the
    // map is full and this one's will be. Both are counted, never silent.
    count_lost(probe as u32);
    if STASH.insert(&key, &args.a, 0).is_ok() {
        diag::report(probe, DiagKind::StashTaken, 0, 0);
    } else {
        diag::report(probe, DiagKind::StashFull, 0, 0);
        count_lost(probe as u32);
    }
}

/// kretprobe: the stashed arguments plus the return register.
#[inline(always)]
pub(crate) fn unstash(ctx: &RetProbeContext, probe: ProbeId) -> Option<Fixed> {
    let key = tid_probe_key(probe);
    // SAFETY: the value is copied out before the entry is removed.
    let Some(a) = unsafe { STASH.get(&key) }.copied() else {
        // The entry half never ran (the kernel skipped the kprobe, e.g.
        // recursion protection) or could not stash: the event is lost.
        if matches!(ARGS.get(probe as u32), Some(s) if s.enabled != 0) && !in_window_only(probe) {
            count_lost(probe as u32);
            diag::report(probe, DiagKind::NothingStashed, 0, 0);
        }
        return None;
    };
    let _ = STASH.remove(&key);
    Some(Fixed {
        a,
        n: 6,
        ret: Some(ctx.ret::<u64>()),
    })
}
