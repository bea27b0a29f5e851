//! UFFDIO_MOVE (seed 000): `move_pages` opens and closes the per-thread
//! window that gates the lookup and present-PTE probes, whose functions
//! every task calls; the rmap move is the step the ABA rule judges.

use super::*;
use crate::move_window::{in_move_window, move_window_close, move_window_open};

enter_probe!(
    fentry_folio_move_anon_rmap,
    kprobe_folio_move_anon_rmap,
    ProbeId::FolioMoveAnonRmap
);

#[fentry]
fn fentry_move_pages(ctx: FEntryContext) -> u32 {
    move_window_open();
    emit(
        &Tramp {
            ctx: ctx.as_ptr(),
            exit: false,
            probe: ProbeId::MovePages,
        },
        ProbeId::MovePages,
        EventKind::Enter,
    );
    0
}

#[fexit]
fn fexit_move_pages(ctx: FExitContext) -> u32 {
    move_window_close();
    emit(
        &Tramp {
            ctx: ctx.as_ptr(),
            exit: true,
            probe: ProbeId::MovePages,
        },
        ProbeId::MovePages,
        EventKind::Exit,
    );
    0
}

#[kprobe]
fn kprobe_move_pages(ctx: ProbeContext) -> u32 {
    move_window_open();
    let a = regs(&ctx);
    stash(&a, ProbeId::MovePages);
    emit(&a, ProbeId::MovePages, EventKind::Enter);
    0
}

#[kretprobe]
fn kretprobe_move_pages(ctx: RetProbeContext) -> u32 {
    move_window_close();
    if let Some(a) = unstash(&ctx, ProbeId::MovePages) {
        emit(&a, ProbeId::MovePages, EventKind::Exit);
    }
    0
}

// `__filemap_get_folio` runs for every page-cache lookup in the system, so
// the in-window test comes before anything else.

#[fexit]
fn fexit_move_pages_lookup(ctx: FExitContext) -> u32 {
    if in_move_window() {
        emit(
            &Tramp {
                ctx: ctx.as_ptr(),
                exit: true,
                probe: ProbeId::MovePagesLookup,
            },
            ProbeId::MovePagesLookup,
            EventKind::Exit,
        );
    }
    0
}

#[kprobe]
fn kprobe_move_pages_lookup(ctx: ProbeContext) -> u32 {
    if in_move_window() {
        stash(&regs(&ctx), ProbeId::MovePagesLookup);
    }
    0
}

#[kretprobe]
fn kretprobe_move_pages_lookup(ctx: RetProbeContext) -> u32 {
    if let Some(a) = unstash(&ctx, ProbeId::MovePagesLookup) {
        emit(&a, ProbeId::MovePagesLookup, EventKind::Exit);
    }
    0
}

// `ptep_clear_flush` runs on every COW, migration and reclaim unmap; only
// calls inside a move window (the present-PTE path of UFFDIO_MOVE, just
// before `folio_move_anon_rmap`) are recorded.

#[fexit]
fn fexit_move_present(ctx: FExitContext) -> u32 {
    if in_move_window() {
        emit(
            &Tramp {
                ctx: ctx.as_ptr(),
                exit: true,
                probe: ProbeId::MovePresent,
            },
            ProbeId::MovePresent,
            EventKind::Exit,
        );
    }
    0
}

#[kprobe]
fn kprobe_move_present(ctx: ProbeContext) -> u32 {
    if in_move_window() {
        stash(&regs(&ctx), ProbeId::MovePresent);
    }
    0
}

#[kretprobe]
fn kretprobe_move_present(ctx: RetProbeContext) -> u32 {
    if let Some(a) = unstash(&ctx, ProbeId::MovePresent) {
        emit(&a, ProbeId::MovePresent, EventKind::Exit);
    }
    0
}
