//! The probe plan: which kernel function implements each role on the running
//! kernel, and how it was attached (or why it was not).

use serde::{Deserialize, Serialize};

/// How a role ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    Fentry,
    Kprobe,
    Tracepoint,
    Unavailable,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Fentry => "fentry",
            AttachMode::Kprobe => "kprobe",
            AttachMode::Tracepoint => "tracepoint",
            AttachMode::Unavailable => "unavailable",
        }
    }
}

/// One line of the plan, as stored in the trace header and shown by `doctor`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanEntry {
    /// `ProbeId::name()` of the role.
    pub probe: String,
    /// Kernel symbol or `category:tracepoint` the role is attached to
    /// (empty when unavailable).
    pub target: String,
    pub mode: AttachMode,
    /// Whether an entry and/or exit program is attached.
    pub entry: bool,
    pub exit: bool,
    /// Why this mode (fallback reason, or why unavailable).
    pub note: String,
    /// The in-kernel relevance filter in effect (empty: every call).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub filter: String,
}

use detector_common::{
    ArgSpec, ProbeId, NO_ARG, REL_FAILED, REL_LAZYFREE, REL_MAYBE_PINNED, REL_OUTSIDE_MOVE,
};

/// The probes a plan attached, for `Analyzer::set_attached`. `None` when
/// the plan is empty (a simulated stream that records no plan): then the
/// analyzer assumes every probe, as the scenario was written for.
pub fn attached_probes(plan: &[PlanEntry]) -> Option<Vec<ProbeId>> {
    if plan.is_empty() {
        return None;
    }
    Some(
        plan.iter()
            .filter(|p| p.mode != AttachMode::Unavailable)
            .filter_map(|p| ProbeId::from_name(&p.probe))
            .collect(),
    )
}

/// What a probe's in-kernel relevance filter keeps, for the plan and docs.
pub fn relevance_text(relevance: u8) -> String {
    let mut parts = Vec::new();
    if relevance & REL_LAZYFREE != 0 {
        parts.push("only clean lazyfree folios with extra references");
    }
    if relevance & REL_MAYBE_PINNED != 0 {
        parts.push("only maybe-pinned folios (refcount >= 1024 or large)");
    }
    if relevance & REL_FAILED != 0 {
        parts.push("only failed calls");
    }
    if relevance & REL_OUTSIDE_MOVE != 0 {
        parts.push("only calls outside a UFFDIO_MOVE window (move_pages_lookup has those)");
    }
    parts.join(", ")
}

use crate::btf::{CType, KernelBtf, Proto};

/// `SWAP_ADDRESS_SPACE_SHIFT` (mm/swap.h): one swap `address_space` per
/// 2^14 entries, indexed by the entry's offset within it. A macro, so not
/// in BTF; unchanged since swap address spaces were split in 4.9.
const SWAP_ADDRESS_SPACE_SHIFT: u8 = 14;

/// How a role is observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Function entry only.
    Enter,
    /// Function exit only (arguments and return value).
    Exit,
    /// Both.
    Both,
    /// A typed (BTF) tracepoint.
    Tracepoint,
}

/// One role of the probe set: its candidates in order of preference.
pub struct Role {
    pub probe: ProbeId,
    pub hook: Hook,
    /// Kernel symbols (or tracepoint names) that implement the role on some
    /// kernel, newest first. The first one whose BTF prototype fits is used.
    pub candidates: &'static [&'static str],
    /// Tracepoints are hot or redundant when function probes work: they are
    /// only attached in degraded mode.
    pub degraded_only: bool,
}

/// The probe set. Alternates cover 6.1, 6.12, 6.18 and the swap-table
/// kernels (7.x), where the swap cache lives in per-cluster swap tables,
/// SWAP_HAS_CACHE and `swapcache_prepare` are gone and the swap-cache folio
/// itself pins an entry during swap-in (see docs/probes.md for what each
/// 7.x function stands for).
pub const ROLES: &[Role] = &[
    Role {
        probe: ProbeId::SwapCacheLookup,
        hook: Hook::Exit,
        candidates: &["swap_cache_get_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapCacheInsert,
        hook: Hook::Exit,
        // 7.x: the one place both the swap-out allocator
        // (__swap_cache_add_folio) and the swap-in allocation
        // (swap_cache_alloc_folio) put a folio into the swap table.
        candidates: &[
            "__swap_cache_do_add_folio",
            "swap_cache_add_folio",
            "add_to_swap_cache",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapCacheDelete,
        hook: Hook::Enter,
        // 7.x: __swap_cache_del_folio and the swap-in allocation's roll
        // back (a failed memcg charge) both end here.
        candidates: &[
            "__swap_cache_do_del_folio",
            "__swap_cache_del_folio",
            "__delete_from_swap_cache",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryAlloc,
        hook: Hook::Exit,
        candidates: &["folio_alloc_swap"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryDup,
        hook: Hook::Exit,
        // 7.x: swap_dup_entry_direct is fork's copy of a swap PTE (what
        // swap_duplicate did); the unmap side became folio_dup_swap.
        candidates: &[
            "swap_duplicate",
            "__swap_duplicate",
            "swap_dup_entry_direct",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryFree,
        hook: Hook::Enter,
        // 7.x: every slot whose count and cache are both gone is freed by
        // __swap_cluster_free_entries(si, ci, ci_start, nr_pages).
        candidates: &[
            "swap_entries_free",
            "swap_entry_range_free",
            "free_swap_slot",
            "__swap_cluster_free_entries",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapcachePrepare,
        hook: Hook::Exit,
        // 7.x: the swap-in pin is taken by allocating the folio straight
        // into the swap cache: a folio back (pinned, locked) or -EEXIST
        // (another folio already holds the entry), as swapcache_prepare's
        // 0 or -EEXIST.
        candidates: &["swapcache_prepare", "swap_cache_alloc_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapcacheClear,
        hook: Hook::Enter,
        // 7.x: the pin ends when the folio leaves the swap cache outside
        // reclaim (swap-in done: folio_free_swap; back-outs; zswap
        // writeback). Reclaim's own removal is __swap_cache_del_folio.
        candidates: &["swapcache_clear", "swap_cache_del_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::DoSwapPage,
        hook: Hook::Both,
        candidates: &["do_swap_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::FolioMoveAnonRmap,
        hook: Hook::Enter,
        candidates: &["folio_move_anon_rmap", "page_move_anon_rmap"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePages,
        hook: Hook::Both,
        // The per-PMD worker move_pages_ptes (6.18, 7.x; 7.x inlines
        // move_pages) holds the whole lookup -> lock -> recheck -> move
        // sequence of a page, and gives up with -EAGAIN once the source PTE
        // it looked up changes: a retry is a new call. Its present path
        // clears PTEs inline, so per-call windows are what keep a retry's
        // present-path move apart from the lookup before it (the analyzer's
        // "which path a move took"). 6.12 inlines move_pages_pte into
        // move_pages, whose window spans retries; ptep_clear_flush
        // (move_present) marks the present path there.
        candidates: &["move_pages_ptes", "move_pages"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePagesLookup,
        hook: Hook::Exit,
        // 6.18 and 7.x look up with the one-argument swap_cache_get_folio;
        // 6.12 with filemap_get_folio (its swap_cache_get_folio takes a vma
        // and address for readahead accounting, which UFFDIO_MOVE avoids).
        candidates: &["swap_cache_get_folio", "__filemap_get_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::RemoveMapping,
        hook: Hook::Both,
        candidates: &["__remove_mapping"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TryToUnmapOne,
        hook: Hook::Both,
        candidates: &["try_to_unmap_one"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MadviseFree,
        hook: Hook::Enter,
        candidates: &["madvise_free_pte_range"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::GupGrab,
        hook: Hook::Exit,
        candidates: &["try_grab_folio", "try_grab_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::GupGrabFast,
        hook: Hook::Exit,
        candidates: &["try_grab_folio_fast", "try_grab_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::GupPut,
        hook: Hook::Enter,
        candidates: &["gup_put_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::UnpinUserPage,
        hook: Hook::Enter,
        // Direct I/O releases its pins with unpin_user_folio(folio, npages)
        // (bio_release_pages). 7.x inlines gup_put_folio into it, so the
        // gup_put role no longer sees those releases there.
        candidates: &["unpin_user_folio", "unpin_user_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::DoWpPage,
        hook: Hook::Enter,
        candidates: &["do_wp_page"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapRead,
        hook: Hook::Enter,
        candidates: &["swap_read_folio", "swap_readpage"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePresent,
        hook: Hook::Exit,
        candidates: &["ptep_clear_flush"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::LazyfreeMark,
        hook: Hook::Enter,
        candidates: &["folio_mark_lazyfree", "mark_page_lazyfree"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TaskExit,
        hook: Hook::Tracepoint,
        candidates: &["sched:sched_process_exit"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TpWriteFolio,
        hook: Hook::Tracepoint,
        candidates: &["vmscan:mm_vmscan_write_folio"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::TpPageFree,
        hook: Hook::Tracepoint,
        candidates: &["kmem:mm_page_free"],
        degraded_only: true,
    },
    Role {
        probe: ProbeId::TpLruInsertion,
        hook: Hook::Tracepoint,
        candidates: &["pagemap:mm_lru_insertion"],
        degraded_only: true,
    },
];

/// Base name of the BPF programs implementing a role (`fentry_<base>`,
/// `fexit_<base>`, `kprobe_<base>`, `kretprobe_<base>`, or the tracepoint
/// program itself).
pub fn program_base(probe: ProbeId) -> &'static str {
    match probe {
        ProbeId::TpWriteFolio => "tp_vmscan_write_folio",
        ProbeId::TpPageFree => "tp_page_free",
        ProbeId::TpLruInsertion => "tp_lru_insertion",
        ProbeId::TaskExit => "tp_task_exit",
        other => other.name(),
    }
}

fn is_u(p: &crate::btf::Param, names: &[&str]) -> bool {
    names.iter().any(|n| p.name == *n)
}

/// Builds the argument spec of `probe` for a function with prototype
/// `proto`, or says why the prototype does not fit the role.
/// Bits and signedness of a return type narrower than a register, as
/// `ArgSpec::ret_bits` / `ret_signed` take them; (0, 0) for a full-width
/// or pointer return.
fn ret_width(t: &CType) -> (u8, u8) {
    let CType::Named(name) = t else {
        return (0, 0);
    };
    match name.as_str() {
        "int" | "s32" | "int32_t" => (32, 1),
        "unsigned int" | "u32" | "uint32_t" | "vm_fault_t" | "gfp_t" | "fgf_t" => (32, 0),
        "bool" | "_Bool" | "u8" | "unsigned char" => (8, 0),
        "short int" | "s16" => (16, 1),
        "short unsigned int" | "u16" => (16, 0),
        _ => (0, 0),
    }
}

pub fn arg_spec(probe: ProbeId, proto: &Proto) -> Result<ArgSpec, String> {
    let mut s = ArgSpec::NONE;
    let folio = proto.find(|p| p.ty.is_ptr_to("folio"));
    let page = proto.find(|p| p.ty.is_ptr_to("page"));
    let entry = proto.find(|p| p.ty == CType::Named("swp_entry_t".into()));
    let vmf = proto.find(|p| p.ty.is_ptr_to("vm_fault"));
    let nr = proto.find(|p| is_u(p, &["nr", "nr_pages", "nr_entries", "refs", "npages"]));
    let ret_folio = proto.ret.is_ptr_to("folio");
    s.has_ret = u8::from(proto.ret != CType::Void);
    (s.ret_bits, s.ret_signed) = ret_width(&proto.ret);
    s.nr = nr.unwrap_or(NO_ARG);
    let need = |what: &str, v: Option<u8>| v.ok_or_else(|| format!("prototype has no {what}"));
    match probe {
        ProbeId::SwapCacheLookup => {
            s.entry = need("swp_entry_t argument", entry)?;
            if !ret_folio {
                return Err("does not return a folio".into());
            }
            s.ret_folio = 1;
        }
        ProbeId::SwapCacheInsert | ProbeId::SwapCacheDelete => {
            s.folio = need("folio argument", folio)?;
            match entry {
                Some(e) => s.entry = e,
                None => s.entry_from_folio = 1,
            }
            s.nr_from_folio = 1;
        }
        ProbeId::SwapEntryAlloc => {
            s.folio = need("folio argument", folio)?;
            // Older kernels return the entry; newer ones store it in
            // folio->swap and return an error code.
            if proto.ret == CType::Named("swp_entry_t".into()) {
                s.ret_entry = 1;
                s.has_ret = 0;
            } else {
                s.entry_from_folio = 1;
            }
            s.nr_from_folio = 1;
        }
        ProbeId::SwapEntryDup => {
            s.entry = need("swp_entry_t argument", entry)?;
            s.relevance = REL_FAILED;
        }
        ProbeId::SwapEntryFree => match entry {
            Some(e) => s.entry = e,
            None => {
                // (device, cluster, offset in cluster), as 7.x frees.
                s.si = need(
                    "swp_entry_t or swap_info_struct argument",
                    proto.find(|p| p.ty.is_ptr_to("swap_info_struct")),
                )?;
                s.ci = need(
                    "swap_cluster_info argument",
                    proto.find(|p| p.ty.is_ptr_to("swap_cluster_info")),
                )?;
                s.ci_off = need(
                    "offset-in-cluster argument",
                    proto.find(|p| is_u(p, &["ci_start", "ci_off", "offset"])),
                )?;
            }
        },
        ProbeId::SwapcachePrepare => {
            s.entry = need("swp_entry_t argument", entry)?;
            // swapcache_prepare returns 0 / -EEXIST; its 7.x successor the
            // pinned folio itself / ERR_PTR(-EEXIST).
            s.ret_folio = u8::from(ret_folio);
        }
        ProbeId::SwapcacheClear => match (entry, folio) {
            (Some(e), _) => s.entry = e,
            (None, Some(f)) => {
                s.folio = f;
                s.entry_from_folio = 1;
            }
            _ => return Err("prototype has no swp_entry_t or folio argument".into()),
        },
        ProbeId::DoSwapPage => {
            s.vmf = need("vm_fault argument", vmf)?;
        }
        ProbeId::DoWpPage => {
            s.vmf = need("vm_fault argument", vmf)?;
            s.folio_from_pte = 1;
            s.relevance = REL_MAYBE_PINNED;
        }
        ProbeId::FolioMoveAnonRmap
        | ProbeId::RemoveMapping
        | ProbeId::TryToUnmapOne
        | ProbeId::UnpinUserPage
        | ProbeId::SwapRead => {
            match (folio, page) {
                (Some(f), _) => s.folio = f,
                (None, Some(p)) => s.page = p,
                _ => return Err("prototype has no folio or page argument".into()),
            }
            if probe == ProbeId::SwapRead {
                s.entry_from_folio = 1;
                s.nr_from_folio = 1;
            }
            if probe == ProbeId::TryToUnmapOne {
                s.addr = proto.find(|p| p.name == "address").unwrap_or(NO_ARG);
                s.relevance = REL_LAZYFREE;
            }
        }
        ProbeId::MovePages => {
            // Only the UFFDIO_MOVE worker: it takes src_start (move_pages)
            // or src_addr (move_pages_ptes); the move_pages(2) syscall's
            // helpers take neither.
            s.addr = need(
                "src_start argument",
                proto.find(|p| is_u(p, &["src_start", "src_addr"])),
            )?;
        }
        ProbeId::MovePagesLookup if entry.is_some() => {
            // The pure swap-cache lookup: the entry, nothing else.
            if proto.params.len() != 1 || !ret_folio {
                return Err(
                    "not the one-argument swap-cache lookup UFFDIO_MOVE uses on this kernel".into(),
                );
            }
            s.entry = need("swp_entry_t argument", entry)?;
            s.ret_folio = 1;
        }
        ProbeId::MovePagesLookup => {
            s.addr = need(
                "address_space argument",
                proto.find(|p| p.ty.is_ptr_to("address_space")),
            )?;
            s.index = need("index argument", proto.find(|p| p.name == "index"))?;
            if !ret_folio {
                return Err("does not return a folio".into());
            }
            s.ret_folio = 1;
            s.entry_from_folio = 1;
            s.entry_index_bits = SWAP_ADDRESS_SPACE_SHIFT;
        }
        ProbeId::MovePresent => {
            if proto.ret != CType::Named("pte_t".into()) {
                return Err("does not return a pte_t".into());
            }
            s.ret_pte = 1;
            s.addr = need("address argument", proto.find(|p| p.name == "address"))?;
        }
        ProbeId::LazyfreeMark => match (folio, page) {
            (Some(f), _) => s.folio = f,
            (None, Some(p)) => s.page = p,
            _ => return Err("prototype has no folio or page argument".into()),
        },
        ProbeId::MadviseFree => {
            s.addr = need("addr argument", proto.find(|p| p.name == "addr"))?;
        }
        ProbeId::GupGrab => {
            // The slow-path grab returns an error code, the fast one a folio;
            // on kernels where `try_grab_folio` is the fast path this
            // candidate is refused here and taken by GupGrabFast.
            if ret_folio {
                return Err("returns a folio: this is the lockless variant".into());
            }
            match (folio, page) {
                (Some(f), _) => s.folio = f,
                (None, Some(p)) => s.page = p,
                _ => return Err("prototype has no folio or page argument".into()),
            }
            s.gup_flags = need("flags argument", proto.find(|p| p.name == "flags"))?;
        }
        ProbeId::GupGrabFast => {
            if !ret_folio {
                return Err("does not return a folio: this is the slow-path variant".into());
            }
            s.ret_folio = 1;
            s.gup_flags = need("flags argument", proto.find(|p| p.name == "flags"))?;
        }
        ProbeId::GupPut => {
            s.folio = need("folio argument", folio)?;
            s.gup_flags = need("flags argument", proto.find(|p| p.name == "flags"))?;
        }
        ProbeId::TpWriteFolio
        | ProbeId::TpLruInsertion
        | ProbeId::TpPageFree
        | ProbeId::TaskExit => {
            return Err("tracepoints have fixed arguments".into());
        }
    }
    s.enabled = 1;
    Ok(s)
}

/// Argument specs of the typed tracepoints (fixed by the tracepoint).
pub fn tracepoint_spec(probe: ProbeId) -> ArgSpec {
    let mut s = ArgSpec::NONE;
    match probe {
        ProbeId::TpPageFree => {
            s.page = 0;
            s.nr = 1;
            s.nr_is_order = 1;
        }
        // Everything a task exit says is the current task's.
        ProbeId::TaskExit => {}
        _ => {
            s.folio = 0;
            s.entry_from_folio = 1;
        }
    }
    s.enabled = 1;
    s
}

/// A role's resolved target on this kernel, before attaching.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub symbol: String,
    pub spec: ArgSpec,
    /// Candidates skipped on the way, with the reason.
    pub skipped: Vec<String>,
}

/// Picks the first candidate of `role` that BTF knows with a fitting
/// prototype.
pub fn resolve(btf: &KernelBtf, role: &Role) -> Result<Resolved, String> {
    resolve_with(|sym| btf.func_proto(sym), role)
}

/// [`resolve`] over any source of prototypes (a kernel's BTF, or a
/// recorded digest of one in tests).
pub fn resolve_with(
    proto_of: impl Fn(&str) -> Option<Proto>,
    role: &Role,
) -> Result<Resolved, String> {
    let mut skipped = Vec::new();
    for sym in role.candidates {
        if role.hook == Hook::Tracepoint {
            return Ok(Resolved {
                symbol: (*sym).to_string(),
                spec: tracepoint_spec(role.probe),
                skipped,
            });
        }
        match proto_of(sym) {
            None => skipped.push(format!("{sym}: not in this kernel")),
            Some(proto) => match arg_spec(role.probe, &proto) {
                Ok(spec) => {
                    return Ok(Resolved {
                        symbol: (*sym).to_string(),
                        spec,
                        skipped,
                    })
                }
                Err(why) => skipped.push(format!("{sym}: {why}")),
            },
        }
    }
    Err(skipped.join("; "))
}

/// Roles that only mean something inside a UFFDIO_MOVE window: the loader
/// attaches them only once `move_pages` attached (6.1 has the functions,
/// but no window to read them in).
pub fn needs_move_window(probe: ProbeId) -> bool {
    matches!(probe, ProbeId::MovePagesLookup | ProbeId::MovePresent)
}

/// A recorded digest of one kernel's BTF (`examples/btf_digest.rs`,
/// `detector/testdata/btf/`): the prototype of every candidate symbol and
/// the typed tracepoints' presence, so the role table can be checked
/// against real kernels without booting them.
#[derive(Clone, Debug, Deserialize)]
pub struct BtfDigest {
    /// `uname -r` of the kernel.
    pub kernel: String,
    /// Prototype per symbol; `None`: the kernel has no such function.
    pub functions: std::collections::BTreeMap<String, Option<Proto>>,
    /// Typed tracepoint (`group:name`) -> present.
    pub tracepoints: std::collections::BTreeMap<String, bool>,
}

impl BtfDigest {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// Candidates of the role table the digest has no record of (it
    /// predates them): regenerate it with `examples/btf_digest.rs`.
    pub fn unrecorded(&self) -> Vec<&'static str> {
        ROLES
            .iter()
            .flat_map(|r| r.candidates.iter().map(move |c| (r.hook, *c)))
            .filter(|(hook, c)| match hook {
                Hook::Tracepoint => !self.tracepoints.contains_key(*c),
                _ => !self.functions.contains_key(*c),
            })
            .map(|(_, c)| c)
            .collect()
    }

    /// [`resolve`] against the digest. An unrecorded symbol counts as
    /// absent; check [`BtfDigest::unrecorded`] first.
    pub fn resolve(&self, role: &Role) -> Result<Resolved, String> {
        if role.hook == Hook::Tracepoint {
            let absent: Vec<&str> = role
                .candidates
                .iter()
                .copied()
                .filter(|c| self.tracepoints.get(*c) != Some(&true))
                .collect();
            if !absent.is_empty() {
                return Err(format!("{}: not in this kernel", absent.join(", ")));
            }
        }
        resolve_with(|sym| self.functions.get(sym).cloned().flatten(), role)
    }

    /// The roles the loader attaches on this kernel when it allows
    /// function probes (not degraded mode): every function role that
    /// resolves (the move-window ones only with `move_pages`) and every
    /// tracepoint role the kernel has that is not degraded-only.
    pub fn attaches(&self) -> Vec<ProbeId> {
        let move_window = ROLES
            .iter()
            .any(|r| r.probe == ProbeId::MovePages && self.resolve(r).is_ok());
        ROLES
            .iter()
            .filter(|r| !r.degraded_only)
            .filter(|r| move_window || !needs_move_window(r.probe))
            .filter(|r| self.resolve(r).is_ok())
            .map(|r| r.probe)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::btf::{CType, Param, Proto};

    fn p(name: &str, ty: CType) -> Param {
        Param {
            name: name.into(),
            ty,
        }
    }

    #[test]
    fn every_probe_has_a_role() {
        for probe in ProbeId::ALL {
            assert!(
                ROLES.iter().any(|r| r.probe == *probe),
                "{probe:?} has no role"
            );
        }
    }

    #[test]
    fn delete_folio_position_follows_the_prototype() {
        // 6.12: __delete_from_swap_cache(folio, entry, shadow)
        let old = Proto {
            params: vec![
                p("folio", CType::PtrTo("folio".into())),
                p("entry", CType::Named("swp_entry_t".into())),
                p("shadow", CType::Ptr),
            ],
            ret: CType::Void,
        };
        // 6.18: __swap_cache_del_folio(ci, folio, entry, shadow)
        let new = Proto {
            params: vec![
                p("ci", CType::PtrTo("swap_cluster_info".into())),
                p("folio", CType::PtrTo("folio".into())),
                p("entry", CType::Named("swp_entry_t".into())),
                p("shadow", CType::Ptr),
            ],
            ret: CType::Void,
        };
        let a = arg_spec(ProbeId::SwapCacheDelete, &old).unwrap();
        let b = arg_spec(ProbeId::SwapCacheDelete, &new).unwrap();
        assert_eq!((a.folio, a.entry), (0, 1));
        assert_eq!((b.folio, b.entry), (1, 2));
        assert_eq!(a.has_ret, 0);
    }

    #[test]
    fn narrow_returns_carry_their_width() {
        let proto = |ret: &str| Proto {
            ret: CType::Named(ret.into()),
            params: vec![
                Param {
                    name: "entry".into(),
                    ty: CType::Named("swp_entry_t".into()),
                },
                Param {
                    name: "nr".into(),
                    ty: CType::Other,
                },
            ],
        };
        let s = arg_spec(ProbeId::SwapcachePrepare, &proto("int")).unwrap();
        assert_eq!((s.has_ret, s.ret_bits, s.ret_signed), (1, 32, 1));
        let s = arg_spec(ProbeId::SwapcachePrepare, &proto("bool")).unwrap();
        assert_eq!((s.ret_bits, s.ret_signed), (8, 0));
        let s = arg_spec(ProbeId::SwapcachePrepare, &proto("long int")).unwrap();
        assert_eq!((s.ret_bits, s.ret_signed), (0, 0));
    }

    #[test]
    fn try_grab_folio_goes_to_the_role_its_signature_fits() {
        // 6.1: struct folio *try_grab_folio(struct page *page, int refs, unsigned int flags)
        let fast = Proto {
            params: vec![
                p("page", CType::PtrTo("page".into())),
                p("refs", CType::Named("int".into())),
                p("flags", CType::Named("unsigned int".into())),
            ],
            ret: CType::PtrTo("folio".into()),
        };
        // 6.12: int try_grab_folio(struct folio *folio, int refs, unsigned int flags)
        let slow = Proto {
            params: vec![
                p("folio", CType::PtrTo("folio".into())),
                p("refs", CType::Named("int".into())),
                p("flags", CType::Named("unsigned int".into())),
            ],
            ret: CType::Named("int".into()),
        };
        assert!(arg_spec(ProbeId::GupGrab, &fast).is_err());
        assert!(arg_spec(ProbeId::GupGrabFast, &slow).is_err());
        let s = arg_spec(ProbeId::GupGrab, &slow).unwrap();
        assert_eq!((s.folio, s.nr, s.gup_flags), (0, 1, 2));
        let f = arg_spec(ProbeId::GupGrabFast, &fast).unwrap();
        assert_eq!((f.ret_folio, f.nr, f.gup_flags), (1, 1, 2));
    }

    #[test]
    fn hot_probes_get_their_relevance_filter() {
        let ttu = Proto {
            params: vec![
                p("folio", CType::PtrTo("folio".into())),
                p("vma", CType::PtrTo("vm_area_struct".into())),
                p("address", CType::Named("unsigned long".into())),
                p("arg", CType::PtrTo("void".into())),
            ],
            ret: CType::Named("bool".into()),
        };
        let wp = Proto {
            params: vec![p("vmf", CType::PtrTo("vm_fault".into()))],
            ret: CType::Named("vm_fault_t".into()),
        };
        let dup = Proto {
            params: vec![p("entry", CType::Named("swp_entry_t".into()))],
            ret: CType::Named("int".into()),
        };
        let r = |probe, proto: &Proto| arg_spec(probe, proto).unwrap().relevance;
        assert_eq!(r(ProbeId::TryToUnmapOne, &ttu), REL_LAZYFREE);
        assert_eq!(r(ProbeId::DoWpPage, &wp), REL_MAYBE_PINNED);
        assert_eq!(r(ProbeId::SwapEntryDup, &dup), REL_FAILED);
        // The swap lifecycle itself is never filtered: every rule needs it.
        assert_eq!(r(ProbeId::SwapEntryFree, &dup), 0);
        assert_eq!(r(ProbeId::DoSwapPage, &wp), 0);
        assert_eq!(relevance_text(0), "");
        assert_eq!(relevance_text(REL_FAILED), "only failed calls");
    }

    #[test]
    fn alloc_entry_comes_from_return_or_folio() {
        let old = Proto {
            params: vec![p("folio", CType::PtrTo("folio".into()))],
            ret: CType::Named("swp_entry_t".into()),
        };
        let new = Proto {
            params: vec![
                p("folio", CType::PtrTo("folio".into())),
                p("gfp", CType::Named("gfp_t".into())),
            ],
            ret: CType::Named("int".into()),
        };
        let a = arg_spec(ProbeId::SwapEntryAlloc, &old).unwrap();
        assert_eq!((a.ret_entry, a.entry_from_folio), (1, 0));
        let b = arg_spec(ProbeId::SwapEntryAlloc, &new).unwrap();
        assert_eq!((b.ret_entry, b.entry_from_folio), (0, 1));
    }

    #[test]
    fn resolves_against_running_kernel() {
        let Ok(btf) = KernelBtf::open_vmlinux() else {
            return;
        };
        // Roles every supported kernel implements.
        for probe in [
            ProbeId::SwapCacheLookup,
            ProbeId::SwapcachePrepare,
            ProbeId::DoSwapPage,
            ProbeId::RemoveMapping,
            ProbeId::TryToUnmapOne,
        ] {
            let role = ROLES.iter().find(|r| r.probe == probe).unwrap();
            let r = resolve(&btf, role).unwrap_or_else(|e| panic!("{probe:?}: {e}"));
            assert_eq!(r.spec.enabled, 1);
        }
    }

    fn digest(json: &str) -> BtfDigest {
        let d = BtfDigest::parse(json).expect("digest parses");
        assert!(
            d.unrecorded().is_empty(),
            "the {} digest has no entry for {:?}: regenerate detector/testdata/btf with \
             examples/btf_digest.rs",
            d.kernel,
            d.unrecorded()
        );
        d
    }

    const DIGESTS: &[(&str, &str)] = &[
        ("6.1", include_str!("../testdata/btf/6.1.json")),
        ("6.12", include_str!("../testdata/btf/6.12.json")),
        ("6.18", include_str!("../testdata/btf/6.18.json")),
        ("7.2", include_str!("../testdata/btf/7.2.json")),
    ];

    /// Every function role of a digest: the symbol chosen, or why none.
    fn resolve_all(d: &BtfDigest) -> Vec<(ProbeId, Result<Resolved, String>)> {
        ROLES
            .iter()
            .filter(|r| r.hook != Hook::Tracepoint)
            .map(|r| (r.probe, d.resolve(r)))
            .collect()
    }

    /// The role table against four real kernels' BTF: which symbol each
    /// role takes, and why a role has none (6.1 has no UFFDIO_MOVE).
    #[test]
    fn roles_resolve_on_every_kernel_line() {
        use ProbeId as P;
        // Symbols that differ between the lines; every other function role
        // takes the same symbol everywhere (checked below).
        type Line = (&'static str, &'static [(ProbeId, Option<&'static str>)]);
        let expect: &[Line] = &[
            (
                "6.1",
                &[
                    (P::SwapCacheInsert, Some("add_to_swap_cache")),
                    (P::SwapCacheDelete, Some("__delete_from_swap_cache")),
                    (P::SwapEntryDup, Some("swap_duplicate")),
                    (P::SwapEntryFree, Some("free_swap_slot")),
                    (P::SwapcachePrepare, Some("swapcache_prepare")),
                    (P::SwapcacheClear, Some("swapcache_clear")),
                    (P::FolioMoveAnonRmap, Some("page_move_anon_rmap")),
                    (P::MovePages, None),
                    (P::MovePagesLookup, Some("__filemap_get_folio")),
                    (P::GupGrab, Some("try_grab_page")),
                    (P::GupGrabFast, Some("try_grab_folio")),
                    (P::UnpinUserPage, Some("unpin_user_page")),
                    (P::SwapRead, Some("swap_readpage")),
                    (P::LazyfreeMark, Some("mark_page_lazyfree")),
                ],
            ),
            (
                "6.12",
                &[
                    (P::SwapCacheInsert, Some("add_to_swap_cache")),
                    (P::SwapCacheDelete, Some("__delete_from_swap_cache")),
                    (P::SwapEntryDup, Some("swap_duplicate")),
                    (P::SwapEntryFree, Some("swap_entry_range_free")),
                    (P::SwapcachePrepare, Some("swapcache_prepare")),
                    (P::SwapcacheClear, Some("swapcache_clear")),
                    (P::FolioMoveAnonRmap, Some("folio_move_anon_rmap")),
                    (P::MovePages, Some("move_pages")),
                    (P::MovePagesLookup, Some("__filemap_get_folio")),
                    (P::GupGrab, Some("try_grab_folio")),
                    (P::GupGrabFast, Some("try_grab_folio_fast")),
                    (P::UnpinUserPage, Some("unpin_user_folio")),
                    (P::SwapRead, Some("swap_read_folio")),
                    (P::LazyfreeMark, Some("folio_mark_lazyfree")),
                ],
            ),
            (
                "6.18",
                &[
                    (P::SwapCacheInsert, Some("swap_cache_add_folio")),
                    (P::SwapCacheDelete, Some("__swap_cache_del_folio")),
                    (P::SwapEntryDup, Some("swap_duplicate")),
                    (P::SwapEntryFree, Some("swap_entries_free")),
                    (P::SwapcachePrepare, Some("swapcache_prepare")),
                    (P::SwapcacheClear, Some("swapcache_clear")),
                    (P::FolioMoveAnonRmap, Some("folio_move_anon_rmap")),
                    (P::MovePages, Some("move_pages_ptes")),
                    (P::MovePagesLookup, Some("swap_cache_get_folio")),
                    (P::GupGrab, Some("try_grab_folio")),
                    (P::GupGrabFast, Some("try_grab_folio_fast")),
                    (P::UnpinUserPage, Some("unpin_user_folio")),
                    (P::SwapRead, Some("swap_read_folio")),
                    (P::LazyfreeMark, Some("folio_mark_lazyfree")),
                ],
            ),
            (
                "7.2",
                &[
                    (P::SwapCacheInsert, Some("__swap_cache_do_add_folio")),
                    (P::SwapCacheDelete, Some("__swap_cache_do_del_folio")),
                    (P::SwapEntryDup, Some("swap_dup_entry_direct")),
                    (P::SwapEntryFree, Some("__swap_cluster_free_entries")),
                    (P::SwapcachePrepare, Some("swap_cache_alloc_folio")),
                    (P::SwapcacheClear, Some("swap_cache_del_folio")),
                    (P::FolioMoveAnonRmap, Some("folio_move_anon_rmap")),
                    (P::MovePages, Some("move_pages_ptes")),
                    (P::MovePagesLookup, Some("swap_cache_get_folio")),
                    (P::GupGrab, Some("try_grab_folio")),
                    (P::GupGrabFast, Some("try_grab_folio_fast")),
                    (P::UnpinUserPage, Some("unpin_user_folio")),
                    (P::SwapRead, Some("swap_read_folio")),
                    (P::LazyfreeMark, Some("folio_mark_lazyfree")),
                ],
            ),
        ];
        let same: &[(ProbeId, &str)] = &[
            (P::SwapCacheLookup, "swap_cache_get_folio"),
            (P::SwapEntryAlloc, "folio_alloc_swap"),
            (P::DoSwapPage, "do_swap_page"),
            (P::RemoveMapping, "__remove_mapping"),
            (P::TryToUnmapOne, "try_to_unmap_one"),
            (P::MadviseFree, "madvise_free_pte_range"),
            (P::GupPut, "gup_put_folio"),
            (P::DoWpPage, "do_wp_page"),
            // Resolves on 6.1 too, which has no move window to attach it in
            // (see BtfDigest::attaches).
            (P::MovePresent, "ptep_clear_flush"),
        ];
        assert_eq!(DIGESTS.len(), expect.len());
        for ((line, json), (eline, roles)) in DIGESTS.iter().zip(expect) {
            assert_eq!(line, eline);
            let d = digest(json);
            let got = resolve_all(&d);
            assert_eq!(
                got.len(),
                roles.len() + same.len(),
                "{line}: a role is unaccounted for"
            );
            for (probe, r) in &got {
                let want = roles
                    .iter()
                    .find(|(p, _)| p == probe)
                    .map(|(_, s)| *s)
                    .or_else(|| same.iter().find(|(p, _)| p == probe).map(|(_, s)| Some(*s)))
                    .unwrap_or_else(|| panic!("{line}: no expectation for {probe:?}"));
                match (r, want) {
                    (Ok(r), Some(sym)) => {
                        assert_eq!(r.symbol, sym, "{line} {probe:?}");
                        assert_eq!(r.spec.enabled, 1);
                    }
                    (Err(why), None) => {
                        // Unavailable, and the reason names every candidate.
                        let role = ROLES.iter().find(|x| x.probe == *probe).unwrap();
                        for c in role.candidates {
                            assert!(why.contains(c), "{line} {probe:?}: {why}");
                        }
                    }
                    (r, w) => panic!("{line} {probe:?}: resolved {r:?}, expected {w:?}"),
                }
            }
        }
    }

    /// Every typed tracepoint role exists on every line: task_exit is a
    /// DEFINE_EVENT of sched_process_template up to 6.15 (no BTF trace
    /// function of its own) and its own TRACE_EVENT, with `group_dead`,
    /// from 6.16; both attach through `btf_trace_sched_process_exit`.
    #[test]
    fn tracepoints_exist_on_every_kernel_line() {
        for (line, json) in DIGESTS {
            let d = digest(json);
            for r in ROLES.iter().filter(|r| r.hook == Hook::Tracepoint) {
                let got = d.resolve(r);
                assert!(got.is_ok(), "{line} {:?}: {got:?}", r.probe);
            }
        }
        let mut d = digest(DIGESTS[0].1);
        d.tracepoints
            .insert("sched:sched_process_exit".into(), false);
        let role = ROLES.iter().find(|r| r.probe == ProbeId::TaskExit).unwrap();
        assert!(d.resolve(role).is_err());
        assert!(!d.attaches().contains(&ProbeId::TaskExit));
    }

    /// What a line attaches: the move-window roles only where move_pages
    /// resolves, degraded-only tracepoints never.
    #[test]
    fn attaches_follows_the_move_window() {
        use ProbeId as P;
        for (line, json) in DIGESTS {
            let a = digest(json).attaches();
            let window = *line != "6.1";
            for p in [P::MovePages, P::MovePagesLookup, P::MovePresent] {
                assert_eq!(a.contains(&p), window, "{line} {p:?}");
            }
            assert!(a.contains(&P::LazyfreeMark), "{line}");
            assert!(a.contains(&P::TaskExit), "{line}");
            assert!(!a.contains(&P::TpPageFree), "{line}");
        }
    }

    /// The move window is one move_pages_ptes call wherever BTF has the
    /// worker out of line (6.18, 7.2; a retry is a new window), the whole
    /// move_pages call where it is inlined (6.12).
    #[test]
    fn move_window_is_the_per_pmd_worker_where_it_exists() {
        let role = ROLES
            .iter()
            .find(|r| r.probe == ProbeId::MovePages)
            .unwrap();
        for (line, sym, addr) in [
            ("6.12", "move_pages", 2),
            ("6.18", "move_pages_ptes", 6),
            ("7.2", "move_pages_ptes", 6),
        ] {
            let (_, json) = DIGESTS.iter().find(|(l, _)| *l == line).unwrap();
            let d = digest(json);
            let r = d.resolve(role).unwrap();
            assert_eq!((r.symbol.as_str(), r.spec.addr), (sym, addr), "{line}");
        }
    }

    /// The swap-table kernel's prototypes put the objects where the BPF
    /// side must look for them.
    #[test]
    fn swap_table_kernel_arguments() {
        let d = digest(DIGESTS[3].1);
        assert!(d.kernel.starts_with("7.2"));
        let got = resolve_all(&d);
        let spec = |p: ProbeId| {
            got.iter()
                .find(|(q, _)| *q == p)
                .and_then(|(_, r)| r.as_ref().ok())
                .map(|r| r.spec)
                .unwrap_or_else(|| panic!("{p:?} unresolved"))
        };
        // __swap_cluster_free_entries(si, ci, ci_start, nr_pages): no entry,
        // the cluster triple instead.
        let f = spec(ProbeId::SwapEntryFree);
        assert_eq!((f.entry, f.si, f.ci, f.ci_off, f.nr), (NO_ARG, 0, 1, 2, 3));
        // __swap_cache_do_add_folio(ci, folio, entry).
        let i = spec(ProbeId::SwapCacheInsert);
        assert_eq!((i.folio, i.entry, i.has_ret), (1, 2, 0));
        // swap_cache_alloc_folio(targ_entry, ...) returns the pinned folio.
        let p = spec(ProbeId::SwapcachePrepare);
        assert_eq!((p.entry, p.ret_folio, p.has_ret), (0, 1, 1));
        // swap_cache_del_folio(folio): the entry is still in folio->swap at
        // entry to the call.
        let c = spec(ProbeId::SwapcacheClear);
        assert_eq!((c.folio, c.entry, c.entry_from_folio), (0, NO_ARG, 1));
        // move_pages_ptes(mm, dst_pmd, src_pmd, dst_vma, src_vma, dst_addr,
        // src_addr, len, mode): src_addr is the 7th argument (fentry only;
        // kprobes see the first six).
        assert_eq!(spec(ProbeId::MovePages).addr, 6);
        let l = spec(ProbeId::MovePagesLookup);
        assert_eq!((l.entry, l.ret_folio, l.index), (0, 1, NO_ARG));
        // unpin_user_folio(folio, npages): the page count of the release.
        let u = spec(ProbeId::UnpinUserPage);
        assert_eq!((u.folio, u.nr), (0, 1));
        // Fork's swap_dup_entry_direct keeps the failed-calls filter.
        assert_eq!(spec(ProbeId::SwapEntryDup).relevance, REL_FAILED);
    }

    #[test]
    fn move_lookup_takes_only_the_one_argument_swap_cache_lookup() {
        // 6.12: swap_cache_get_folio(entry, vma, addr) accounts readahead;
        // UFFDIO_MOVE calls filemap_get_folio there instead.
        let old = Proto {
            params: vec![
                p("entry", CType::Named("swp_entry_t".into())),
                p("vma", CType::PtrTo("vm_area_struct".into())),
                p("addr", CType::Named("long unsigned int".into())),
            ],
            ret: CType::PtrTo("folio".into()),
        };
        assert!(arg_spec(ProbeId::MovePagesLookup, &old).is_err());
        assert!(arg_spec(ProbeId::SwapCacheLookup, &old).is_ok());
        let new = Proto {
            params: vec![p("entry", CType::Named("swp_entry_t".into()))],
            ret: CType::PtrTo("folio".into()),
        };
        let s = arg_spec(ProbeId::MovePagesLookup, &new).unwrap();
        assert_eq!((s.entry, s.ret_folio), (0, 1));
        assert_eq!(
            relevance_text(REL_OUTSIDE_MOVE),
            "only calls outside a UFFDIO_MOVE window (move_pages_lookup has those)"
        );
    }
}
