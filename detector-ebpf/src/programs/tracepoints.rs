//! Typed (BTF) tracepoints: the task exit, which every mode attaches, and
//! the degraded mode's view where function tracing is blocked.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use super::*;
use crate::args::scalar;

// A task exits: tracepoints work everywhere, the host's degraded mode
// included. Everything the event needs is `current`'s.

#[btf_tracepoint(function = "sched_process_exit")]
fn tp_task_exit(_ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [0; 6],
        n: 0,
        ret: None,
    };
    emit(&a, ProbeId::TaskExit, EventKind::Tracepoint);
    0
}

// Degraded mode: typed tracepoints, which the kernel allows where function
// tracing is blocked. Their arguments are fixed by the tracepoint, so they
// are read at constant offsets and handed over like stashed arguments.

#[btf_tracepoint(function = "mm_vmscan_write_folio")]
fn tp_vmscan_write_folio(ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [scalar(ctx.arg::<u64>(0)), 0, 0, 0, 0, 0],
        n: 1,
        ret: None,
    };
    emit(&a, ProbeId::TpWriteFolio, EventKind::Tracepoint);
    0
}

#[btf_tracepoint(function = "mm_page_free")]
fn tp_page_free(ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [scalar(ctx.arg::<u64>(0)), ctx.arg::<u64>(1), 0, 0, 0, 0],
        n: 2,
        ret: None,
    };
    emit(&a, ProbeId::TpPageFree, EventKind::Tracepoint);
    0
}

#[btf_tracepoint(function = "mm_lru_insertion")]
fn tp_lru_insertion(ctx: BtfTracePointContext) -> u32 {
    let a = Fixed {
        a: [scalar(ctx.arg::<u64>(0)), 0, 0, 0, 0, 0],
        n: 1,
        ret: None,
    };
    emit(&a, ProbeId::TpLruInsertion, EventKind::Tracepoint);
    0
}
