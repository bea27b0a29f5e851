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

use detector_common::{ArgSpec, ProbeId, NO_ARG, REL_FAILED, REL_LAZYFREE, REL_MAYBE_PINNED};

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

/// The probe set. Alternates cover 6.1, 6.12 and 6.18.
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
        candidates: &["swap_cache_add_folio", "add_to_swap_cache"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapCacheDelete,
        hook: Hook::Enter,
        candidates: &["__swap_cache_del_folio", "__delete_from_swap_cache"],
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
        candidates: &["swap_duplicate", "__swap_duplicate"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapEntryFree,
        hook: Hook::Enter,
        candidates: &[
            "swap_entries_free",
            "swap_entry_range_free",
            "free_swap_slot",
        ],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapcachePrepare,
        hook: Hook::Exit,
        candidates: &["swapcache_prepare"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::SwapcacheClear,
        hook: Hook::Enter,
        candidates: &["swapcache_clear"],
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
        candidates: &["move_pages"],
        degraded_only: false,
    },
    Role {
        probe: ProbeId::MovePagesLookup,
        hook: Hook::Exit,
        candidates: &["__filemap_get_folio"],
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
        candidates: &["unpin_user_page"],
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
pub fn arg_spec(probe: ProbeId, proto: &Proto) -> Result<ArgSpec, String> {
    let mut s = ArgSpec::NONE;
    let folio = proto.find(|p| p.ty.is_ptr_to("folio"));
    let page = proto.find(|p| p.ty.is_ptr_to("page"));
    let entry = proto.find(|p| p.ty == CType::Named("swp_entry_t".into()));
    let vmf = proto.find(|p| p.ty.is_ptr_to("vm_fault"));
    let nr = proto.find(|p| is_u(p, &["nr", "nr_pages", "nr_entries", "refs"]));
    let ret_folio = proto.ret.is_ptr_to("folio");
    s.has_ret = u8::from(proto.ret != CType::Void);
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
        ProbeId::SwapEntryDup
        | ProbeId::SwapEntryFree
        | ProbeId::SwapcachePrepare
        | ProbeId::SwapcacheClear => {
            s.entry = need("swp_entry_t argument", entry)?;
            if probe == ProbeId::SwapEntryDup {
                s.relevance = REL_FAILED;
            }
        }
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
            // Only the UFFDIO_MOVE worker: it takes src_start.
            s.addr = need("src_start argument", proto.find(|p| p.name == "src_start"))?;
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
    let mut skipped = Vec::new();
    for sym in role.candidates {
        if role.hook == Hook::Tracepoint {
            return Ok(Resolved {
                symbol: (*sym).to_string(),
                spec: tracepoint_spec(role.probe),
                skipped,
            });
        }
        match btf.func_proto(sym) {
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
}
