//! The programs, grouped by the kernel area they watch. Most roles are one
//! of three shapes (entry, exit, both), each with a trampoline (fentry /
//! fexit) and a kprobe form; the loader picks the form this kernel allows,
//! by the program names (`<form>_<role>`). The UFFDIO_MOVE window and the
//! tracepoints are written out by hand.
//!
//! The submodules take the names below with `use super::*`.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
    EbpfContext,
};
use detector_common::{EventKind, ProbeId};

use crate::args::{regs, stash, unstash, Fixed, Tramp};
use crate::emit::emit;

/// A role observed at function entry.
macro_rules! enter_probe {
    ($fentry:ident, $kprobe:ident, $probe:expr) => {
        #[fentry]
        fn $fentry(ctx: FEntryContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: false,
                    probe: $probe,
                },
                $probe,
                EventKind::Enter,
            );
            0
        }

        #[kprobe]
        fn $kprobe(ctx: ProbeContext) -> u32 {
            emit(&regs(&ctx), $probe, EventKind::Enter);
            0
        }
    };
}

/// A role observed at function exit (arguments and return value).
macro_rules! exit_probe {
    ($fexit:ident, $kprobe:ident, $kretprobe:ident, $probe:expr) => {
        #[fexit]
        fn $fexit(ctx: FExitContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: true,
                    probe: $probe,
                },
                $probe,
                EventKind::Exit,
            );
            0
        }

        #[kprobe]
        fn $kprobe(ctx: ProbeContext) -> u32 {
            stash(&regs(&ctx), $probe);
            0
        }

        #[kretprobe]
        fn $kretprobe(ctx: RetProbeContext) -> u32 {
            if let Some(a) = unstash(&ctx, $probe) {
                emit(&a, $probe, EventKind::Exit);
            }
            0
        }
    };
}

/// A role observed at both entry and exit.
macro_rules! enter_exit_probe {
    ($fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident, $probe:expr) => {
        #[fentry]
        fn $fentry(ctx: FEntryContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: false,
                    probe: $probe,
                },
                $probe,
                EventKind::Enter,
            );
            0
        }

        #[fexit]
        fn $fexit(ctx: FExitContext) -> u32 {
            emit(
                &Tramp {
                    ctx: ctx.as_ptr(),
                    exit: true,
                    probe: $probe,
                },
                $probe,
                EventKind::Exit,
            );
            0
        }

        #[kprobe]
        fn $kprobe(ctx: ProbeContext) -> u32 {
            let a = regs(&ctx);
            stash(&a, $probe);
            emit(&a, $probe, EventKind::Enter);
            0
        }

        #[kretprobe]
        fn $kretprobe(ctx: RetProbeContext) -> u32 {
            if let Some(a) = unstash(&ctx, $probe) {
                emit(&a, $probe, EventKind::Exit);
            }
            0
        }
    };
}

// After the macros: a `macro_rules!` is only in scope below it.
mod gup;
mod reclaim;
mod swap_cache;
mod swap_entry;
mod tracepoints;
mod uffd_move;
