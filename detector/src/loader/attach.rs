//! Attaching one program, or one role's programs, all or nothing, and the
//! one-line reasons a refusal is noted with in the plan.

use std::fmt::Write as _;

use aya::maps::Array;
use aya::programs::{BtfTracePoint, FEntry, FExit, KProbe};
use aya::{Btf, Ebpf};
use detector_common::{ArgSpec, ProbeId, MAP_ARGS};
use thiserror::Error;

use crate::plan::Hook;

/// Why a program did not load or attach, in a line fit for the plan's
/// notes.
#[derive(Debug, Error)]
pub(super) enum AttachError {
    #[error("{0} map missing")]
    MissingMap(&'static str),
    #[error("program {0} missing from the object")]
    MissingProgram(String),
    /// The kernel or aya refused; the error chain, shortened.
    #[error("{0}")]
    Refused(String),
    /// A refusal in the words of the kernel feature behind it.
    #[error("{}", reason(.kind, &.cause.to_string()))]
    Mode {
        kind: &'static str,
        cause: Box<AttachError>,
    },
}

impl AttachError {
    fn refused(e: &dyn std::error::Error) -> Self {
        AttachError::Refused(short(e))
    }

    fn in_mode(self, kind: &'static str) -> Self {
        AttachError::Mode {
            kind,
            cause: Box::new(self),
        }
    }
}

/// Names the usual refusals in the words of the kernel feature behind them;
/// anything else is passed through.
fn reason(kind: &str, e: &str) -> String {
    if e.contains("kprobe/type") {
        format!("{kind}: this kernel has no kprobe support (CONFIG_KPROBES off)")
    } else if e.contains("Operation not permitted") {
        format!("{kind} refused with EPERM (function tracing is blocked on this kernel)")
    } else if e.contains("Permission denied") && e.contains("Verifier") {
        format!("{kind}: the verifier rejected the program ({e})")
    } else if e.contains("No such file") || e.contains("not found") {
        format!("{kind}: symbol not traceable here ({e})")
    } else {
        format!("{kind} refused: {e}")
    }
}

/// An error and its sources, joined with `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let _ = write!(s, ": {inner}");
        src = inner.source();
    }
    s
}

/// One line for an error chain, capped: verifier logs can be megabytes.
pub(super) fn short(e: &dyn std::error::Error) -> String {
    let s = error_chain(e);
    // DETECTOR_VERBOSE=1 keeps whole verifier logs for debugging a refusal.
    if std::env::var_os("DETECTOR_VERBOSE").is_some() {
        return s;
    }
    let s = s.replace('\n', " ");
    if s.len() > 160 {
        let mut cut = 160;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

/// Tells the programs of `probe` where their arguments are.
pub(super) fn set_spec(ebpf: &mut Ebpf, probe: ProbeId, spec: &ArgSpec) -> Result<(), AttachError> {
    let map = ebpf
        .map_mut(MAP_ARGS)
        .ok_or(AttachError::MissingMap(MAP_ARGS))?;
    let mut args: Array<_, ArgSpec> = Array::try_from(map).map_err(|e| AttachError::refused(&e))?;
    args.set(probe as u32, spec, 0)
        .map_err(|e| AttachError::refused(&e))
}

fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &Btf,
    prog: &str,
    sym: &str,
    exit: bool,
) -> Result<(), AttachError> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| AttachError::MissingProgram(prog.to_owned()))?;
    let refused = |e: &dyn std::error::Error| AttachError::refused(e);
    if exit {
        let p: &mut FExit = p.try_into().map_err(|e| refused(&e))?;
        p.load(sym, btf).map_err(|e| refused(&e))?;
        p.attach().map_err(|e| refused(&e))?;
    } else {
        let p: &mut FEntry = p.try_into().map_err(|e| refused(&e))?;
        p.load(sym, btf).map_err(|e| refused(&e))?;
        p.attach().map_err(|e| refused(&e))?;
    }
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf, prog: &str, sym: &str) -> Result<(), AttachError> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| AttachError::MissingProgram(prog.to_owned()))?;
    let p: &mut KProbe = p.try_into().map_err(|e| AttachError::refused(&e))?;
    p.load().map_err(|e| AttachError::refused(&e))?;
    p.attach(sym, 0).map_err(|e| AttachError::refused(&e))?;
    Ok(())
}

fn unload(ebpf: &mut Ebpf, progs: &[String]) {
    for name in progs {
        let Some(p) = ebpf.program_mut(name) else {
            continue;
        };
        // Detaches whatever this program attached; an error means it was
        // never loaded, which is the state wanted anyway.
        let _ = match p {
            aya::programs::Program::FEntry(p) => p.unload(),
            aya::programs::Program::FExit(p) => p.unload(),
            aya::programs::Program::KProbe(p) => p.unload(),
            aya::programs::Program::BtfTracePoint(p) => p.unload(),
            _ => Ok(()),
        };
    }
}

/// Tries fentry/fexit for a function role, all or nothing.
pub(super) fn try_trampoline(
    ebpf: &mut Ebpf,
    btf: &Btf,
    base: &str,
    hook: Hook,
    sym: &str,
) -> Result<(), AttachError> {
    let mut done = Vec::new();
    let wanted: &[(&str, bool)] = match hook {
        Hook::Enter => &[("fentry", false)],
        Hook::Exit => &[("fexit", true)],
        Hook::Both | Hook::Tracepoint => &[("fentry", false), ("fexit", true)],
    };
    for (kind, exit) in wanted {
        let prog = format!("{kind}_{base}");
        if let Err(e) = attach_fentry(ebpf, btf, &prog, sym, *exit) {
            done.push(prog);
            unload(ebpf, &done);
            return Err(e.in_mode(kind));
        }
        done.push(prog);
    }
    Ok(())
}

/// Tries kprobe (+ kretprobe for exits) for a function role, all or nothing.
pub(super) fn try_kprobe(
    ebpf: &mut Ebpf,
    base: &str,
    hook: Hook,
    sym: &str,
) -> Result<(), AttachError> {
    let mut progs = vec![format!("kprobe_{base}")];
    if matches!(hook, Hook::Exit | Hook::Both) {
        progs.push(format!("kretprobe_{base}"));
    }
    let mut done = Vec::new();
    for prog in &progs {
        let r = attach_kprobe(ebpf, prog, sym);
        done.push(prog.clone());
        if let Err(e) = r {
            unload(ebpf, &done);
            return Err(e.in_mode("kprobe"));
        }
    }
    Ok(())
}

/// Attaches a typed tracepoint (`category:name`).
pub(super) fn try_tracepoint(
    ebpf: &mut Ebpf,
    btf: &Btf,
    prog: &str,
    tp: &str,
) -> Result<(), AttachError> {
    let name = tp.split(':').nth(1).unwrap_or(tp);
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| AttachError::MissingProgram(prog.to_owned()))?;
    let p: &mut BtfTracePoint = p.try_into().map_err(|e| AttachError::refused(&e))?;
    p.load(name, btf)
        .map_err(|e| AttachError::refused(&e).in_mode("tp_btf"))?;
    p.attach()
        .map_err(|e| AttachError::refused(&e).in_mode("tp_btf"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_read_as_the_kernel_feature_behind_them() {
        let e =
            AttachError::Refused("Operation not permitted (os error 1)".into()).in_mode("fentry");
        assert_eq!(
            e.to_string(),
            "fentry refused with EPERM (function tracing is blocked on this kernel)"
        );
        let e = AttachError::MissingProgram("kprobe_x".into()).in_mode("kprobe");
        assert_eq!(
            e.to_string(),
            "kprobe refused: program kprobe_x missing from the object"
        );
        assert_eq!(
            AttachError::MissingMap("ARGS").to_string(),
            "ARGS map missing"
        );
    }
}
