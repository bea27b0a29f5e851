use detector_common::NO_ARG;

use super::*;
use crate::btf::{CType, KernelBtf, Param, Proto};

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
    // The filter walks the mapping's page table: the vma and the address.
    let spec = arg_spec(ProbeId::TryToUnmapOne, &ttu).unwrap();
    assert_eq!((spec.folio, spec.vma, spec.addr), (0, 1, 2));
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
    ("6.1", include_str!("../../testdata/btf/6.1.json")),
    ("6.12", include_str!("../../testdata/btf/6.12.json")),
    ("6.18", include_str!("../../testdata/btf/6.18.json")),
    ("7.2", include_str!("../../testdata/btf/7.2.json")),
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
