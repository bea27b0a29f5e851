//! Loads the embedded BPF object, resolves the probe plan for the running
//! kernel and attaches it.
//!
//! Probes are chosen by trying: for each role, the first candidate symbol
//! whose BTF prototype fits is attached with fentry/fexit; if the kernel
//! refuses, with kprobe/kretprobe; if that fails too the role is marked
//! unavailable with the reasons. When no function probe attaches at all the
//! plan degrades to typed tracepoints and says so. Kernel version numbers
//! are never compared.

mod attach;
pub mod bpf_log;
pub mod privileges;

use std::fmt::Write as _;

use aya::maps::Array;
use aya::{Btf, Ebpf, EbpfLoader};
use detector_common::{
    ArgSpec, Filter, Layout, ProbeId, ABSENT, GLOBAL_FILTER, GLOBAL_LOG_LEVEL, GLOBAL_WAKEUP_BYTES,
    MAP_EVENTS, MAP_LAYOUT,
};

use crate::btf::{BtfError, KernelBtf};
use crate::plan::{self, AttachMode, Hook, PlanEntry, Role, ROLES};

pub(crate) use attach::error_chain;
use attach::{set_spec, short, try_kprobe, try_tracepoint, try_trampoline};
pub use bpf_log::BpfLog;

/// The BPF object built by `cargo xtask build-ebpf`, embedded at build time.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/detector.bpf.o"));

/// Default ring buffer size (bytes): ~27k events of headroom.
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "loading the BPF probes needs {missing}, which this process lacks; run it as root (sudo), \
         or grant them once with `sudo setcap {setcap}+ep {binary}` (an existing trace needs \
         neither: `detector replay FILE`)"
    )]
    NotPermitted {
        missing: &'static str,
        setcap: &'static str,
        binary: String,
    },
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
    /// The programs' diagnostics to send (`AYA_LOG_LEVEL`).
    pub bpf_log: BpfLog,
    /// Test only: make two diagnostics fire on every kernel (see
    /// [`SELFTEST_ARG`]).
    pub bpf_log_selftest: bool,
}

/// `--bpf-log-selftest` gives the `swap_read` probe this argument position
/// for its (unused) address, beyond any traced function's arguments, so
/// `bpf_get_func_arg` refuses it on every call (fentry mode); and hides
/// `vm_fault.address` from the programs, as if this kernel's BTF lacked it
/// (an unexpected layout for `do_swap_page` and `do_wp_page`). Neither
/// changes what any rule reads.
pub const SELFTEST_ARG: u8 = 11;

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ring_bytes: DEFAULT_RING_BYTES,
            filter: Filter::default(),
            policy: AttachPolicy::Auto,
            wakeup_bytes: None,
            unfiltered: false,
            bpf_log: BpfLog::Off,
            bpf_log_selftest: false,
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

/// Fails early, with one sentence, when BPF cannot be loaded at all: a
/// capability is missing, or the binary has no BPF object.
pub fn preflight() -> Result<(), LoadError> {
    let knows_cap_bpf = privileges::kernel_knows_cap_bpf();
    if let Some(missing) = privileges::missing_for_load(privileges::effective_bits(), knows_cap_bpf)
    {
        return Err(LoadError::NotPermitted {
            missing,
            setcap: if knows_cap_bpf {
                "cap_bpf,cap_perfmon,cap_syslog"
            } else {
                "cap_sys_admin"
            },
            binary: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "detector".to_string()),
        });
    }
    if BPF_OBJECT.is_empty() {
        return Err(LoadError::NoObject);
    }
    Ok(())
}

/// Lifts the locked-memory limit as far as this process may. Kernels
/// before 5.11 charge BPF maps and programs to RLIMIT_MEMLOCK, whose
/// default is far below a 4 MiB ring buffer; raising the hard limit takes
/// CAP_SYS_RESOURCE. Newer kernels charge the memory cgroup instead and
/// ignore the limit, so a refusal is not an error here: loading then says
/// what failed.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads one valid rlimit struct and has no other
    // effect on memory.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, std::ptr::from_ref(&unlimited)) } == 0 {
        return;
    }
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct into `cur`, which is valid
    // for writes; setrlimit then reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, std::ptr::from_mut(&mut cur)) == 0 {
            cur.rlim_cur = cur.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, std::ptr::from_ref(&cur));
        }
    }
}

/// Addresses of kernel variables from /proc/kallsyms, in one pass; 0 for
/// each that is hidden (kptr_restrict shows zeros) or absent.
pub fn kernel_variables<const N: usize>(names: [&str; N]) -> [u64; N] {
    let mut out = [0u64; N];
    let Ok(syms) = std::fs::read_to_string("/proc/kallsyms") else {
        return out;
    };
    for l in syms.lines() {
        let mut it = l.split_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if let Some(i) = names.iter().position(|n| *n == name) {
            if out[i] == 0 {
                out[i] = u64::from_str_radix(addr, 16).unwrap_or(0);
            }
        }
    }
    out
}

/// Fills the layout's kernel-variable addresses from /proc/kallsyms: the
/// (possibly randomized) vmemmap base, without which the BPF side uses the
/// fixed x86_64 default, and the direct map's base, without which it walks
/// no page table.
pub fn resolve_kernel_variables(layout: &mut Layout) {
    [layout.vmemmap_base_sym, layout.page_offset_base_sym] =
        kernel_variables(["vmemmap_base", "page_offset_base"]);
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
    resolve_kernel_variables(&mut layout);
    let btf = Btf::from_sys_fs().map_err(|e| {
        LoadError::Btf(BtfError::Unreadable {
            path: crate::btf::VMLINUX_BTF.into(),
            reason: short(&e),
        })
    })?;
    raise_memlock_limit();
    let mut ebpf = open_object(opts, &btf, layout)?;
    let mut att = Attaching {
        ebpf: &mut ebpf,
        btf: &btf,
        opts,
        plan: Vec::with_capacity(ROLES.len()),
        failures: String::new(),
        attached: Vec::with_capacity(ROLES.len()),
    };
    let functions = att.functions(&kbtf, &layout);
    att.split_move_lookups();
    // Tracepoints stand in for what function probes would have seen.
    let degraded = functions == 0;
    att.tracepoints(degraded);
    let Attaching { plan, failures, .. } = att;
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

/// The object loaded with the filter, the wakeup threshold, the
/// diagnostics level, the ring size and this kernel's layout in place. The
/// layout goes in before any probe attaches: a probe that fires without
/// one emits nothing rather than misreading struct folio.
fn open_object(opts: &LoadOptions, btf: &Btf, mut layout: Layout) -> Result<Ebpf, LoadError> {
    if opts.bpf_log_selftest {
        layout.vmf_address = ABSENT;
    }
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .override_global(GLOBAL_FILTER, &opts.filter, true)
        .override_global(
            GLOBAL_WAKEUP_BYTES,
            &opts.wakeup_bytes.unwrap_or(u64::from(opts.ring_bytes) / 4),
            true,
        )
        .override_global(GLOBAL_LOG_LEVEL, &opts.bpf_log.global(), true)
        .map_max_entries(MAP_EVENTS, opts.ring_bytes)
        .load(BPF_OBJECT)
        .map_err(|e| LoadError::Object(short(&e)))?;
    let map = ebpf
        .map_mut(MAP_LAYOUT)
        .ok_or_else(|| LoadError::Object(format!("the {MAP_LAYOUT} map is missing")))?;
    let mut arr: Array<_, Layout> =
        Array::try_from(map).map_err(|e| LoadError::Object(short(&e)))?;
    arr.set(0, layout, 0)
        .map_err(|e| LoadError::Object(short(&e)))?;
    Ok(ebpf)
}

/// The plan being built as roles attach.
struct Attaching<'a> {
    ebpf: &'a mut Ebpf,
    btf: &'a Btf,
    opts: &'a LoadOptions,
    plan: Vec<PlanEntry>,
    /// `  role: why` for every role that attached nowhere.
    failures: String,
    /// Attached function roles: symbol and spec, for the adjustments made
    /// once every role is attached.
    attached: Vec<(ProbeId, String, ArgSpec)>,
}

impl Attaching<'_> {
    /// Every function role, in plan order. Returns how many attached.
    fn functions(&mut self, kbtf: &KernelBtf, layout: &Layout) -> usize {
        let mut attached = 0;
        let mut move_pages = false;
        for role in ROLES.iter().filter(|r| r.hook != Hook::Tracepoint) {
            let why_not = if self.opts.policy == AttachPolicy::Tracepoint {
                Some("tracepoint mode requested")
            } else if plan::needs_move_window(role.probe) && !move_pages {
                Some("needs the move_pages probe (UFFDIO_MOVE window)")
            } else {
                None
            };
            let e = match why_not {
                Some(why) => entry(
                    role.probe,
                    "",
                    AttachMode::Unavailable,
                    role.hook,
                    why.into(),
                ),
                None => self.function(kbtf, layout, role),
            };
            if e.mode != AttachMode::Unavailable {
                attached += 1;
                move_pages |= role.probe == ProbeId::MovePages;
            }
            self.plan.push(e);
        }
        attached
    }

    /// One function role: the first candidate whose BTF prototype fits,
    /// with fentry/fexit, else kprobe/kretprobe, as the policy allows.
    fn function(&mut self, kbtf: &KernelBtf, layout: &Layout, role: &Role) -> PlanEntry {
        let probe = role.probe;
        let resolved = match plan::resolve(kbtf, role) {
            Ok(r) => r,
            Err(why) => {
                return entry(
                    probe,
                    "",
                    AttachMode::Unavailable,
                    role.hook,
                    why.to_string(),
                )
            }
        };
        let sym = resolved.symbol.as_str();
        let mut notes: Vec<String> = resolved.skipped.iter().map(ToString::to_string).collect();
        let mut spec = resolved.spec;
        if spec.folio_from_pte != 0 && layout.vmemmap_base_sym == 0 {
            // With a randomized memory layout the fixed vmemmap default would
            // name the wrong struct page; seeing no folio beats a wrong one.
            spec.folio_from_pte = 0;
            notes.push(
                "folio not resolved from the PTE: vmemmap_base is not in /proc/kallsyms".into(),
            );
        }
        if self.opts.unfiltered {
            spec.relevance = 0;
        }
        if self.opts.bpf_log_selftest && probe == ProbeId::SwapRead {
            spec.addr = SELFTEST_ARG;
        }
        if let Err(e) = set_spec(self.ebpf, probe, &spec) {
            return entry(
                probe,
                sym,
                AttachMode::Unavailable,
                role.hook,
                e.to_string(),
            );
        }
        let base = plan::program_base(probe);
        let mut mode = AttachMode::Unavailable;
        if self.opts.policy != AttachPolicy::Kprobe {
            match try_trampoline(self.ebpf, self.btf, base, role.hook, sym) {
                Ok(()) => mode = AttachMode::Fentry,
                Err(e) => notes.push(e.to_string()),
            }
        }
        if mode == AttachMode::Unavailable && self.opts.policy != AttachPolicy::Fentry {
            match try_kprobe(self.ebpf, base, role.hook, sym) {
                Ok(()) => mode = AttachMode::Kprobe,
                Err(e) => notes.push(e.to_string()),
            }
        }
        if mode == AttachMode::Unavailable {
            // Keep the programs quiet if some half attached earlier.
            let _ = set_spec(self.ebpf, probe, &ArgSpec::NONE);
            let _ = writeln!(self.failures, "  {}: {}", probe.name(), notes.join("; "));
        }
        let mut e = entry(probe, sym, mode, role.hook, notes.join("; "));
        if mode != AttachMode::Unavailable {
            e.filter = plan::relevance_text(spec.relevance);
            self.attached.push((probe, sym.to_string(), spec));
        }
        e
    }

    /// Where UFFDIO_MOVE looks up the swap cache with the same function as
    /// everyone else (6.18, 7.x), `move_pages_lookup` reports the calls
    /// inside a move window; the general lookup probe then leaves those out
    /// so each call is one event. Decided once both are attached, so a
    /// lookup role whose move twin failed keeps every call.
    fn split_move_lookups(&mut self) {
        let find = |p: ProbeId| self.attached.iter().find(|(q, _, _)| *q == p);
        let (Some((_, lsym, lspec)), Some((_, msym, _))) = (
            find(ProbeId::SwapCacheLookup),
            find(ProbeId::MovePagesLookup),
        ) else {
            return;
        };
        if lsym != msym {
            return;
        }
        let mut spec = *lspec;
        spec.relevance |= detector_common::REL_OUTSIDE_MOVE;
        if set_spec(self.ebpf, ProbeId::SwapCacheLookup, &spec).is_ok() {
            if let Some(e) = self
                .plan
                .iter_mut()
                .find(|e| e.probe == ProbeId::SwapCacheLookup.name())
            {
                e.filter = plan::relevance_text(spec.relevance);
            }
        }
    }

    /// The tracepoint roles; the degraded-only ones only when no function
    /// probe attached.
    fn tracepoints(&mut self, degraded: bool) {
        for role in ROLES.iter().filter(|r| r.hook == Hook::Tracepoint) {
            let probe = role.probe;
            let tp = role.candidates.first().copied().unwrap_or_default();
            if role.degraded_only && !degraded {
                self.plan.push(entry(
                    probe,
                    tp,
                    AttachMode::Unavailable,
                    role.hook,
                    "only used in degraded mode (function probes attached)".into(),
                ));
                continue;
            }
            let spec = plan::tracepoint_spec(probe);
            let r = set_spec(self.ebpf, probe, &spec)
                .and_then(|()| try_tracepoint(self.ebpf, self.btf, plan::program_base(probe), tp));
            let e = match r {
                Ok(()) => entry(probe, tp, AttachMode::Tracepoint, role.hook, String::new()),
                Err(e) => {
                    let _ = set_spec(self.ebpf, probe, &ArgSpec::NONE);
                    let _ = writeln!(self.failures, "  {}: {e}", probe.name());
                    entry(probe, tp, AttachMode::Unavailable, role.hook, e.to_string())
                }
            };
            self.plan.push(e);
        }
    }
}

/// What degraded mode cannot see, for `doctor` and the capture banner.
pub fn degraded_statement(plan: &[PlanEntry]) -> Option<String> {
    let any_function = plan
        .iter()
        .any(|p| matches!(p.mode, AttachMode::Fentry | AttachMode::Kprobe));
    // A degraded-only role is not missed while function probes attach: it
    // stands in for them.
    let stands_in = |p: &PlanEntry| {
        any_function
            && ROLES
                .iter()
                .any(|r| r.degraded_only && r.probe.name() == p.probe)
    };
    let missing: Vec<&str> = plan
        .iter()
        .filter(|p| p.mode == AttachMode::Unavailable && !stands_in(p))
        .map(|p| p.probe.as_str())
        .collect();
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

#[cfg(test)]
mod object_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn e(probe: ProbeId, mode: AttachMode, note: &str) -> PlanEntry {
        entry(probe, "t", mode, Hook::Enter, note.into())
    }

    #[test]
    fn degraded_statement_reads_the_roles_not_the_notes() {
        // Function probes attached: a degraded-only tracepoint left out is
        // not missed, whatever its note says.
        let plan = [
            e(ProbeId::SwapCacheLookup, AttachMode::Fentry, ""),
            e(ProbeId::TpPageFree, AttachMode::Unavailable, "any words"),
            e(ProbeId::GupGrabFast, AttachMode::Unavailable, "no symbol"),
        ];
        assert_eq!(
            degraded_statement(&plan).as_deref(),
            Some("Not observed on this kernel: gup_grab_fast")
        );
        // No function probe: the same tracepoint failing is missed.
        let plan = [
            e(ProbeId::SwapCacheLookup, AttachMode::Unavailable, "EPERM"),
            e(
                ProbeId::TpPageFree,
                AttachMode::Unavailable,
                "only used in degraded mode",
            ),
            e(ProbeId::TpLruInsertion, AttachMode::Tracepoint, ""),
        ];
        let s = degraded_statement(&plan).unwrap_or_default();
        assert!(s.starts_with("DEGRADED MODE"), "{s}");
        assert!(
            s.ends_with("Unavailable: swap_cache_lookup, tp_page_free"),
            "{s}"
        );
        let all = [e(ProbeId::SwapCacheLookup, AttachMode::Kprobe, "")];
        assert_eq!(degraded_statement(&all), None);
    }
}
