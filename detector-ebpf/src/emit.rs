//! The one way out of every program: look up the probe's spec, apply the
//! filters, reserve a ring-buffer record, fill it and submit it. A full
//! ring buffer is counted per probe (`LOST`), never silent.

use core::ptr::read_volatile;

use detector_common::{DiagKind, Event, EventKind, ProbeId};

use crate::args::Args;
use crate::diag;
use crate::event::fill;
use crate::maps::{count_lost, layout, ARGS, EVENTS, WAKEUP_BYTES};
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
    let Some(mut slot) = EVENTS.reserve::<Event>(0) else {
        count_lost(p);
        return;
    };
    let e = slot.as_mut_ptr();
    // SAFETY: `e` points at a reserved, exclusively owned ring-buffer slot
    // of size_of::<Event>() bytes; zeroing makes every field initialized.
    unsafe { core::ptr::write_bytes(e, 0, 1) };
    // SAFETY: initialized just above; nothing else aliases the slot.
    fill(unsafe { &mut *e }, a, &spec, l, probe, kind);
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
