//! Kernel side of the detector: one small program per role and attach mode.
//!
//! Every program funnels into [`emit::emit`], which reads the objects a
//! role concerns from the traced function's arguments at the positions
//! userspace resolved from BTF (map `ARGS`), snapshots the folio's state
//! with the field offsets userspace resolved (map `LAYOUT`), and writes one
//! fixed-size `Event` into the ring buffer. Rust BPF cannot emit CO-RE
//! relocations, which is why both tables come from userspace at load time.
//!
//! Modules, each using only those above it:
//! - `maps`: every map and global the object exports;
//! - `diag`: reports of the rare failure paths through aya-log, off unless
//!   `--bpf-log` asks;
//! - `kread`: kernel memory reads; `task`: the current task's identity;
//! - `args`: the call's arguments per attach mode (trampoline, registers,
//!   the kprobe's stash, tracepoint arguments);
//! - `folio`: struct folio and struct page snapshots through `LAYOUT`;
//! - `event`: one `Event` filled from the call;
//! - `move_window`: the per-thread UFFDIO_MOVE window;
//! - `relevance`: the capture filter and the per-probe relevance filters;
//! - `emit`: spec lookup, filters, ring-buffer reserve and submit, losses;
//! - `programs`: the programs, one file per kernel area.
#![no_std]
#![no_main]

mod args;
mod diag;
mod emit;
mod event;
mod folio;
mod kread;
mod maps;
mod move_window;
mod pagetable;
mod programs;
mod relevance;
mod task;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
