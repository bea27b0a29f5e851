//! The one way out of every program: look up the probe's spec, apply the
//! filters, fill an event, pack it into a ring record that leaves out
//! what the probe did not fill (`detector_common::ring`) and send it. A
//! full ring buffer is counted per probe (`LOST`), never silent.

use core::mem::MaybeUninit;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel};

use detector_common::{ring, ArgSpec, DiagKind, EventKind, Layout, ProbeId, EVENT_SIZE};

use crate::args::Args;
use crate::diag;
use crate::event::fill;
use crate::maps::{count_lost, layout, ARGS, EVENTS, SCRATCH, SCRATCH_SLOTS, WAKEUP_BYTES};
use crate::relevance::{pass_filter, relevant};

/// Looks up the probe's spec, applies the filters and writes one event.
/// Ring-buffer exhaustion is counted per probe, never silent.
#[inline(always)]
pub(crate) fn emit<A: Args>(a: &A, probe: ProbeId, kind: EventKind) {
    let p = probe as u32;
    let spec = match ARGS.get(p) {
        Some(s) if s.enabled != 0 => *s,
        _ => return,
    };
    let Some(l) = layout() else {
        diag::report(probe, DiagKind::LayoutUnreadable, 0, 0);
        return;
    };
    if !pass_filter() {
        return;
    }
    if spec.relevance != 0 && !relevant(a, &spec, l, probe, kind) {
        return;
    }
    // Tracepoint programs keep few arguments and have the room too; the
    // kprobe programs (entry stash, register copies) do not.
    if A::ROOM_TO_PACK || kind == EventKind::Tracepoint {
        send_packed(a, &spec, l, probe, kind);
    } else {
        send_whole(a, &spec, l, probe, kind);
    }
}

/// Builds the event in a per-CPU scratch slot and sends only what the
/// probe filled (`detector_common::ring`).
///
/// The slot is not this call's alone: on a preemptible kernel (7.x) a
/// program can be preempted mid-event and another task's program run on
/// the same CPU, and an interrupt's program can run in the middle of this
/// one. So the call stamps the slot with its own token before filling it
/// and checks the stamp after packing it onto its stack: any program that
/// used the slot in between stamped it too, the check sees it, and the
/// event is counted lost, never sent mixed. (Filling it again into a
/// ring-buffer reservation instead would put a second fill in the program,
/// which 6.12's verifier refuses: over 512 bytes of stack.) The slot is
/// chosen by the task's tid, so only tasks that share a CPU and the tid's
/// low bits (or an interrupt's program) ever meet there.
/// Not on the stack: the verifier tracks what a program stores on its
/// stack and walked the fill's branches apart (past its limit), and the
/// kprobe programs have no stack room for it.
#[inline(always)]
fn send_packed<A: Args>(a: &A, spec: &ArgSpec, l: &Layout, probe: ProbeId, kind: EventKind) {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(slot) = SCRATCH.get_ptr_mut(tid % SCRATCH_SLOTS) else {
        count_lost(probe as u32);
        return;
    };
    // SAFETY: helper has no preconditions. Two calls on one CPU never read
    // the same nanosecond.
    let token = unsafe { bpf_ktime_get_ns() } | 1;
    // SAFETY: `slot` points at this CPU's slot of a map value, valid while
    // the program runs. The fences keep the compiler from moving the
    // event's writes above the stamp or the pack's reads below its check:
    // one CPU sees its own stores in program order, so that order is all
    // the check needs.
    unsafe { write_volatile(&raw mut (*slot).token, token) };
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above; other programs may write the event concurrently
    // in the sense above, which the stamp check catches. `Event` is plain
    // integers, so all-zero bytes are a valid value, and it is a whole
    // number of u64 words at an 8-aligned offset.
    let ev = unsafe {
        zero_words((&raw mut (*slot).ev).cast::<u64>(), EVENT_SIZE / 8);
        &mut (*slot).ev
    };
    fill(ev, a, spec, l, probe, kind);
    let mut out = MaybeUninit::<[u64; ring::RING_MAX_WORDS]>::uninit();
    // SAFETY: `out` is RING_MAX_WORDS u64 words on this stack.
    unsafe { zero_words(out.as_mut_ptr().cast::<u64>(), ring::RING_MAX_WORDS) };
    // SAFETY: every word was zeroed just above; a reference in place, not
    // a copy (a copy would double the stack).
    let out = unsafe { &mut *out.as_mut_ptr() };
    let len = ring::pack_sections(ev, opaque(ring::sections(ev)), out);
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as above.
    if unsafe { read_volatile(&raw const (*slot).token) } != token {
        count_lost(probe as u32);
        return;
    }
    // The verifier needs the length bounded by the buffer it reads from.
    if len > ring::RING_RECORD_MAX {
        return;
    }
    // SAFETY: `out` is RING_RECORD_MAX initialized bytes and `len` is at
    // most that.
    let rec = unsafe { core::slice::from_raw_parts(out.as_ptr().cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(rec, wakeup_flag()).is_err() {
        count_lost(probe as u32);
    }
}

/// Zeroes `n` words at `p` with single stores. A plain zeroing of this
/// size becomes a call to `memset`, a global function, which 6.1's
/// verifier refuses to pass a map value or stack pointer to (measured: every
/// fentry and tracepoint program refused on 6.1).
///
/// # Safety
/// `p` must be valid for writes of `n` aligned u64 words.
#[inline(always)]
unsafe fn zero_words(p: *mut u64, n: usize) {
    let mut i = 0;
    while i < n {
        // SAFETY: `i < n`, within what the caller vouched for; volatile
        // keeps LLVM from turning the loop back into `memset`.
        unsafe { write_volatile(p.add(i), 0) };
        i += 1;
    }
}

/// `v` as a value the verifier knows nothing about (copied through a
/// helper). The record's length and the offsets its sections are written
/// at derive from the sections `v` names; left as it is, the verifier
/// would trace that length back to every field the event was filled with
/// and tell apart every combination of their values, where otherwise it
/// merges paths whose values do not matter. Measured on the tracepoint
/// programs: past the one-million-instruction limit without this.
#[inline(always)]
fn opaque(v: u16) -> u16 {
    // SAFETY: reads two bytes of our own stack; on failure (impossible for
    // a stack address) every section is written, which is still a valid
    // record.
    unsafe { bpf_probe_read_kernel(&raw const v) }.unwrap_or(ring::S_ALL)
}

/// Fills the whole event straight into a ring-buffer reservation, for the
/// programs without the stack room to pack (the kprobes: entry stash and
/// register copies).
#[inline(always)]
fn send_whole<A: Args>(a: &A, spec: &ArgSpec, l: &Layout, probe: ProbeId, kind: EventKind) {
    let Some(mut slot) = EVENTS.reserve::<ring::WholeRecord>(0) else {
        count_lost(probe as u32);
        return;
    };
    let r = slot.as_mut_ptr();
    // SAFETY: `r` points at a reserved, exclusively owned, 8-aligned
    // ring-buffer slot of size_of::<WholeRecord>() bytes, a whole number
    // of words; zeroing makes every field initialized.
    unsafe { zero_words(r.cast::<u64>(), ring::WHOLE_RECORD_LEN / 8) };
    // SAFETY: initialized just above; nothing else aliases the slot.
    let r = unsafe { &mut *r };
    r.marker = ring::WHOLE_MARKER;
    fill(&mut r.ev, a, spec, l, probe, kind);
    slot.submit(wakeup_flag());
}

/// `BPF_RB_NO_WAKEUP` while the unread backlog is under the threshold,
/// `BPF_RB_FORCE_WAKEUP` past it (the default would wake only when this
/// record is the first unread one, which a batching consumer never sees).
#[inline(always)]
fn wakeup_flag() -> u64 {
    const BPF_RB_NO_WAKEUP: u64 = 1;
    const BPF_RB_FORCE_WAKEUP: u64 = 2;
    const BPF_RB_AVAIL_DATA: u64 = 0;
    // SAFETY: a plain read of a global that userspace fixed before load.
    let threshold = unsafe { read_volatile(&raw const WAKEUP_BYTES) };
    if threshold == 0 {
        return 0;
    }
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}
