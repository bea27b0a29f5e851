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
    #[error("{}", reason(.kind, &.cause.to_string(), *.paranoid))]
    Mode {
        kind: &'static str,
        cause: Box<AttachError>,
        /// `kernel.perf_event_paranoid` when a kprobe was refused with
        /// EACCES: it says why, and what to change.
        paranoid: Option<i32>,
    },
}

impl AttachError {
    fn refused(e: &dyn std::error::Error) -> Self {
        AttachError::Refused(short(e))
    }

    fn in_mode(self, kind: &'static str) -> Self {
        let paranoid = match &self {
            AttachError::Refused(e) if kind == "kprobe" && is_eacces(e) => {
                std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            }
            _ => None,
        };
        AttachError::Mode {
            kind,
            cause: Box::new(self),
            paranoid,
        }
    }
}

/// EACCES from the kernel, not the verifier (which aya also reports as
/// "Permission denied", with its log).
fn is_eacces(e: &str) -> bool {
    e.contains("Permission denied") && !e.contains("Verifier")
}

/// Names the usual refusals in the words of the kernel feature behind them;
/// anything else is passed through.
fn reason(kind: &str, e: &str, paranoid: Option<i32>) -> String {
    if let Some(level @ 3..) = paranoid.filter(|_| is_eacces(e)) {
        // Debian's kernels patch perf_event_open(2) to want CAP_SYS_ADMIN
        // above level 2, whatever CAP_PERFMON says (docs/packaging.md).
        return format!(
            "{kind} refused with EACCES: kernel.perf_event_paranoid is {level}, at which this \
             kernel lets only CAP_SYS_ADMIN open the perf event a kprobe needs; `sysctl \
             kernel.perf_event_paranoid=2` lets CAP_PERFMON attach it ({e})"
        );
    }
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

    #[test]
    fn a_kprobe_refused_at_paranoid_3_names_the_sysctl() {
        let eacces = "perf_event_open failed: Permission denied (os error 13)";
        let r = reason("kprobe", eacces, Some(3));
        assert!(r.starts_with("kprobe refused with EACCES: kernel.perf_event_paranoid is 3"));
        assert!(r.contains("kernel.perf_event_paranoid=2"), "{r}");
        // Level 2 lets CAP_PERFMON in: the refusal is something else.
        assert_eq!(
            reason("kprobe", eacces, Some(2)),
            format!("kprobe refused: {eacces}")
        );
        // The verifier's "Permission denied" is not the sysctl's.
        let verifier = "Verifier output: ... Permission denied (os error 13)";
        assert!(reason("kprobe", verifier, Some(3)).contains("the verifier rejected"));
        // Only a kprobe's refusal reads the sysctl.
        let e = AttachError::Refused(eacces.into()).in_mode("fentry");
        assert!(matches!(e, AttachError::Mode { paranoid: None, .. }));
    }
}
