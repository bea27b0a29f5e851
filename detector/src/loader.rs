//! Loads the embedded BPF object, resolves the probe plan for the running
//! kernel and attaches it.
//!
//! Probes are chosen by trying: for each role, the first candidate symbol
//! whose BTF prototype fits is attached with fentry/fexit; if the kernel
//! refuses, with kprobe/kretprobe; if that fails too the role is marked
//! unavailable with the reasons. When no function probe attaches at all the
//! plan degrades to typed tracepoints and says so. Kernel version numbers
//! are never compared.

use std::fmt::Write as _;

use aya::maps::Array;
use aya::programs::{BtfTracePoint, FEntry, FExit, KProbe};
use aya::{Btf, Ebpf, EbpfLoader};
use detector_common::{ArgSpec, Filter, Layout, ProbeId};

use crate::btf::{BtfError, KernelBtf};
use crate::plan::{self, AttachMode, Hook, PlanEntry, ROLES};

/// The BPF object built by `cargo xtask build-ebpf`, embedded at build time.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detector.bpf.o"));

/// Default ring buffer size (bytes): ~27k events of headroom.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "loading BPF programs needs root (or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN); run the \
         command with sudo, or analyze an existing trace with `detector replay FILE`"
    )]
    NotPermitted,
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error(
        "this detector binary was built without its BPF programs; run `cargo xtask build-ebpf` \
         and rebuild"
    )]
    NoObject,
    #[error("the kernel refused the BPF object ({0}); is BPF enabled (CONFIG_BPF_SYSCALL)?")]
    Object(String),
    #[error("--ring-size must be a power of two of at least 4096 bytes, got {0}")]
    RingSize(u32),
    #[error("no probe could be attached on this kernel:\n{0}")]
    NothingAttached(String),
}

/// Which attach modes the loader may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachPolicy {
    /// fentry/fexit, falling back to kprobes, then to tracepoints.
    Auto,
    /// fentry/fexit only.
    Fentry,
    /// kprobe/kretprobe only (to test the fallback where fentry works).
    Kprobe,
    /// The degraded tracepoint mode only.
    Tracepoint,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub ring_bytes: u32,
    pub filter: Filter,
    pub policy: AttachPolicy,
    /// Unread bytes at which the kernel wakes the reader; `None` is a
    /// quarter of the ring, `Some(0)` wakes on every record. Below the
    /// threshold the reader drains on its own timer.
    pub wakeup_bytes: Option<u64>,
    /// Turn off the in-kernel relevance filters: every call of every probe
    /// becomes an event (see `ArgSpec::relevance`).
    pub unfiltered: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ring_bytes: DEFAULT_RING_BYTES,
            filter: Filter::default(),
            policy: AttachPolicy::Auto,
            wakeup_bytes: None,
            unfiltered: false,
        }
    }
}

/// BPF programs attached to the running kernel. Dropping it detaches them.
pub struct Loaded {
    pub ebpf: Ebpf,
    pub plan: Vec<PlanEntry>,
    pub layout: Layout,
    /// Layout fields this kernel lacks, aliases used.
    pub layout_notes: Vec<String>,
    /// True when only tracepoints could be attached.
    pub degraded: bool,
    pub ring_bytes: u32,
}

/// Effective capabilities of this process (`CapEff` in /proc/self/status).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Fails early, with one sentence, when BPF cannot be loaded at all.
pub fn preflight() -> Result<(), LoadError> {
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_PERFMON: u64 = 1 << 38;
    const CAP_BPF: u64 = 1 << 39;
    let caps = effective_caps();
    let enough = caps & CAP_SYS_ADMIN != 0 || (caps & CAP_BPF != 0 && caps & CAP_PERFMON != 0);
    if !enough {
        return Err(LoadError::NotPermitted);
    }
    if BPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    Ok(())
}

/// Address of the kernel variable holding the (possibly randomized) vmemmap
/// base, from /proc/kallsyms; 0 when hidden or absent (the BPF side then
/// uses the fixed x86_64 default).
pub fn vmemmap_base_symbol() -> u64 {
    let Ok(syms) = std::fs::read_to_string("/proc/kallsyms") else {
        return 0;
    };
    syms.lines()
        .find_map(|l| {
            let mut it = l.split_whitespace();
            let addr = it.next()?;
            let _kind = it.next()?;
            (it.next()? == "vmemmap_base").then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or(0)
}

/// Names the usual refusals in the words of the kernel feature behind them;
/// anything else is passed through shortened.
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
fn short(e: &dyn std::error::Error) -> String {
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

fn set_spec(ebpf: &mut Ebpf, probe: ProbeId, spec: &ArgSpec) -> Result<(), String> {
    let map = ebpf.map_mut("ARGS").ok_or("ARGS map missing")?;
    let mut args: Array<_, ArgSpec> = Array::try_from(map).map_err(|e| short(&e))?;
    args.set(probe as u32, spec, 0).map_err(|e| short(&e))
}

fn attach_fentry(
    ebpf: &mut Ebpf,
    btf: &Btf,
    prog: &str,
    sym: &str,
    exit: bool,
) -> Result<(), String> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("program {prog} missing from the object"))?;
    if exit {
        let p: &mut FExit = p.try_into().map_err(|e| short(&e))?;
        p.load(sym, btf).map_err(|e| short(&e))?;
        p.attach().map_err(|e| short(&e))?;
    } else {
        let p: &mut FEntry = p.try_into().map_err(|e| short(&e))?;
        p.load(sym, btf).map_err(|e| short(&e))?;
        p.attach().map_err(|e| short(&e))?;
    }
    Ok(())
}

fn attach_kprobe(ebpf: &mut Ebpf, prog: &str, sym: &str) -> Result<(), String> {
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("program {prog} missing from the object"))?;
    let p: &mut KProbe = p.try_into().map_err(|e| short(&e))?;
    p.load().map_err(|e| short(&e))?;
    p.attach(sym, 0).map_err(|e| short(&e))?;
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
fn try_trampoline(
    ebpf: &mut Ebpf,
    btf: &Btf,
    base: &str,
    hook: Hook,
    sym: &str,
) -> Result<(), String> {
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
            return Err(reason(kind, &e));
        }
        done.push(prog);
    }
    Ok(())
}

/// Tries kprobe (+ kretprobe for exits) for a function role, all or nothing.
fn try_kprobe(ebpf: &mut Ebpf, base: &str, hook: Hook, sym: &str) -> Result<(), String> {
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
            return Err(reason("kprobe", &e));
        }
    }
    Ok(())
}

fn try_tracepoint(ebpf: &mut Ebpf, btf: &Btf, prog: &str, tp: &str) -> Result<(), String> {
    let name = tp.split(':').nth(1).unwrap_or(tp);
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| format!("program {prog} missing from the object"))?;
    let p: &mut BtfTracePoint = p.try_into().map_err(|e| short(&e))?;
    p.load(name, btf)
        .map_err(|e| reason("tp_btf", &short(&e)))?;
    p.attach().map_err(|e| reason("tp_btf", &short(&e)))?;
    Ok(())
}

fn entry(probe: ProbeId, target: &str, mode: AttachMode, hook: Hook, note: String) -> PlanEntry {
    let attached = mode != AttachMode::Unavailable;
    PlanEntry {
        probe: probe.name().to_string(),
        target: target.to_string(),
        mode,
        entry: attached && matches!(hook, Hook::Enter | Hook::Both | Hook::Tracepoint),
        exit: attached && matches!(hook, Hook::Exit | Hook::Both),
        note,
        filter: String::new(),
    }
}

/// Loads the BPF object with this kernel's layout and attaches the plan.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    preflight()?;
    if opts.ring_bytes < 4096 || !opts.ring_bytes.is_power_of_two() {
        return Err(LoadError::RingSize(opts.ring_bytes));
    }
    let kbtf = KernelBtf::open_vmlinux()?;
    let (mut layout, layout_notes) = kbtf.layout()?;
    layout.vmemmap_base_sym = vmemmap_base_symbol();
    let btf = Btf::from_sys_fs().map_err(|e| {
        LoadError::Btf(BtfError::Unreadable {
            path: crate::btf::VMLINUX_BTF.into(),
            reason: short(&e),
        })
    })?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .override_global("FILTER", &opts.filter, true)
        .override_global(
            "WAKEUP_BYTES",
            &opts.wakeup_bytes.unwrap_or(opts.ring_bytes as u64 / 4),
            true,
        )
        .map_max_entries("EVENTS", opts.ring_bytes)
        .load(BPF_OBJECT)
        .map_err(|e| LoadError::Object(short(&e)))?;

    // Before any probe attaches: a probe that fires without a layout emits
    // nothing rather than misreading struct folio.
    {
        let map = ebpf
            .map_mut("LAYOUT")
            .ok_or_else(|| LoadError::Object("the LAYOUT map is missing".into()))?;
        let mut arr: Array<_, Layout> =
            Array::try_from(map).map_err(|e| LoadError::Object(short(&e)))?;
        arr.set(0, layout, 0)
            .map_err(|e| LoadError::Object(short(&e)))?;
    }
    let mut plan = Vec::with_capacity(ROLES.len());
    let mut functions_attached = 0usize;
    let mut move_pages_attached = false;
    let mut failures = String::new();
    // Attached roles' symbol and spec, for the one adjustment made after
    // all of them are attached (below).
    let mut attached: Vec<(ProbeId, String, ArgSpec)> = Vec::new();

    for role in ROLES.iter().filter(|r| r.hook != Hook::Tracepoint) {
        let probe = role.probe;
        let base = plan::program_base(probe);
        if opts.policy == AttachPolicy::Tracepoint {
            plan.push(entry(
                probe,
                "",
                AttachMode::Unavailable,
                role.hook,
                "tracepoint mode requested".into(),
            ));
            continue;
        }
        if probe == ProbeId::MovePagesLookup && !move_pages_attached {
            plan.push(entry(
                probe,
                "",
                AttachMode::Unavailable,
                role.hook,
                "needs the move_pages probe (UFFDIO_MOVE window)".into(),
            ));
            continue;
        }
        let resolved = match plan::resolve(&kbtf, role) {
            Ok(r) => r,
            Err(why) => {
                plan.push(entry(probe, "", AttachMode::Unavailable, role.hook, why));
                continue;
            }
        };
        let sym = resolved.symbol.as_str();
        let mut notes = resolved.skipped.clone();
        let mut resolved_spec = resolved.spec;
        if resolved_spec.folio_from_pte != 0 && layout.vmemmap_base_sym == 0 {
            // With a randomized memory layout the fixed vmemmap default would
            // name the wrong struct page; seeing no folio beats a wrong one.
            resolved_spec.folio_from_pte = 0;
            notes.push(
                "folio not resolved from the PTE: vmemmap_base is not in /proc/kallsyms".into(),
            );
        }
        if opts.unfiltered {
            resolved_spec.relevance = 0;
        }
        if let Err(e) = set_spec(&mut ebpf, probe, &resolved_spec) {
            plan.push(entry(probe, sym, AttachMode::Unavailable, role.hook, e));
            continue;
        }
        let mut mode = AttachMode::Unavailable;
        if opts.policy != AttachPolicy::Kprobe {
            match try_trampoline(&mut ebpf, &btf, base, role.hook, sym) {
                Ok(()) => mode = AttachMode::Fentry,
                Err(e) => notes.push(e),
            }
        }
        if mode == AttachMode::Unavailable && opts.policy != AttachPolicy::Fentry {
            match try_kprobe(&mut ebpf, base, role.hook, sym) {
                Ok(()) => mode = AttachMode::Kprobe,
                Err(e) => notes.push(e),
            }
        }
        if mode == AttachMode::Unavailable {
            // Keep the programs quiet if some half attached earlier.
            let _ = set_spec(&mut ebpf, probe, &ArgSpec::NONE);
            let _ = writeln!(failures, "  {}: {}", probe.name(), notes.join("; "));
        } else {
            functions_attached += 1;
            if probe == ProbeId::MovePages {
                move_pages_attached = true;
            }
            attached.push((probe, sym.to_string(), resolved_spec));
        }
        let mut e = entry(probe, sym, mode, role.hook, notes.join("; "));
        if mode != AttachMode::Unavailable {
            e.filter = plan::relevance_text(resolved_spec.relevance);
        }
        plan.push(e);
    }

    // Where UFFDIO_MOVE looks up the swap cache with the same function as
    // everyone else (6.18, 7.x), move_pages_lookup reports the calls inside
    // a move window; the general lookup probe then leaves those out so each
    // call is one event. Decided once both are attached, so a lookup role
    // whose move twin failed keeps every call.
    let find = |p: ProbeId| attached.iter().find(|(q, _, _)| *q == p);
    if let (Some((_, lsym, lspec)), Some((_, msym, _))) = (
        find(ProbeId::SwapCacheLookup),
        find(ProbeId::MovePagesLookup),
    ) {
        if lsym == msym {
            let mut spec = *lspec;
            spec.relevance |= detector_common::REL_OUTSIDE_MOVE;
            if set_spec(&mut ebpf, ProbeId::SwapCacheLookup, &spec).is_ok() {
                if let Some(e) = plan
                    .iter_mut()
                    .find(|e| e.probe == ProbeId::SwapCacheLookup.name())
                {
                    e.filter = plan::relevance_text(spec.relevance);
                }
            }
        }
    }

    let degraded = functions_attached == 0;
    for role in ROLES.iter().filter(|r| r.hook == Hook::Tracepoint) {
        let probe = role.probe;
        let tp = role.candidates.first().copied().unwrap_or_default();
        if role.degraded_only && !degraded {
            plan.push(entry(
                probe,
                tp,
                AttachMode::Unavailable,
                role.hook,
                "only used in degraded mode (function probes attached)".into(),
            ));
            continue;
        }
        let spec = plan::tracepoint_spec(probe);
        let r = set_spec(&mut ebpf, probe, &spec)
            .and_then(|()| try_tracepoint(&mut ebpf, &btf, plan::program_base(probe), tp));
        match r {
            Ok(()) => plan.push(entry(
                probe,
                tp,
                AttachMode::Tracepoint,
                role.hook,
                String::new(),
            )),
            Err(e) => {
                let _ = set_spec(&mut ebpf, probe, &ArgSpec::NONE);
                let _ = writeln!(failures, "  {}: {e}", probe.name());
                plan.push(entry(probe, tp, AttachMode::Unavailable, role.hook, e));
            }
        }
    }

    if plan.iter().all(|p| p.mode == AttachMode::Unavailable) {
        return Err(LoadError::NothingAttached(failures));
    }
    Ok(Loaded {
        ebpf,
        plan,
        layout,
        layout_notes,
        degraded,
        ring_bytes: opts.ring_bytes,
    })
}

/// What degraded mode cannot see, for `doctor` and the capture banner.
pub fn degraded_statement(plan: &[PlanEntry]) -> Option<String> {
    let missing: Vec<&str> = plan
        .iter()
        .filter(|p| {
            p.mode == AttachMode::Unavailable && !p.note.starts_with("only used in degraded")
        })
        .map(|p| p.probe.as_str())
        .collect();
    let any_function = plan
        .iter()
        .any(|p| matches!(p.mode, AttachMode::Fentry | AttachMode::Kprobe));
    if !any_function {
        Some(format!(
            "DEGRADED MODE: this kernel refuses function probes (fentry and kprobe), so only \
             tracepoints are attached. Swap-cache lookups, swap entry allocation and freeing, \
             swapcache_prepare/clear, UFFDIO_MOVE, GUP grabs/puts and COW faults are NOT seen; \
             the ABA, stale-move, GUP and swap-pin rules cannot fire. Unavailable: {}",
            missing.join(", ")
        ))
    } else if !missing.is_empty() {
        Some(format!(
            "Not observed on this kernel: {}",
            missing.join(", ")
        ))
    } else {
        None
    }
}
