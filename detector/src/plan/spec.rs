//! A candidate function's BTF prototype read into the argument spec of a
//! role: where the folio, page, swap entry, fault or address is among its
//! arguments, or why the prototype does not fit the role.

use detector_common::{ArgSpec, ProbeId, NO_ARG, REL_FAILED, REL_LAZYFREE, REL_MAYBE_PINNED};
use thiserror::Error;

use crate::btf::{CType, Param, Proto};

/// `SWAP_ADDRESS_SPACE_SHIFT` (mm/swap.h): one swap `address_space` per
/// 2^14 entries, indexed by the entry's offset within it. A macro, so not
/// in BTF; unchanged since swap address spaces were split in 4.9.
const SWAP_ADDRESS_SPACE_SHIFT: u8 = 14;

/// Why a function's prototype does not fit a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Unfit {
    /// An argument the role reads is not in the prototype.
    #[error("prototype has no {0}")]
    Missing(&'static str),
    #[error("does not return a folio")]
    NoFolioReturned,
    #[error("does not return a pte_t")]
    NoPteReturned,
    #[error("not the one-argument swap-cache lookup UFFDIO_MOVE uses on this kernel")]
    NotTheMoveLookup,
    /// `try_grab_folio` where it is the lockless grab (GupGrabFast's).
    #[error("returns a folio: this is the lockless variant")]
    LocklessGrab,
    /// `try_grab_folio` where it is the slow-path grab (GupGrab's).
    #[error("does not return a folio: this is the slow-path variant")]
    SlowPathGrab,
    #[error("tracepoints have fixed arguments")]
    Tracepoint,
}

fn is_u(p: &Param, names: &[&str]) -> bool {
    names.iter().any(|n| p.name == *n)
}

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

/// Builds the argument spec of `probe` for a function with prototype
/// `proto`, or says why the prototype does not fit the role.
pub fn arg_spec(probe: ProbeId, proto: &Proto) -> Result<ArgSpec, Unfit> {
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
    let need = |what: &'static str, v: Option<u8>| v.ok_or(Unfit::Missing(what));
    match probe {
        ProbeId::SwapCacheLookup => {
            s.entry = need("swp_entry_t argument", entry)?;
            if !ret_folio {
                return Err(Unfit::NoFolioReturned);
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
            _ => return Err(Unfit::Missing("swp_entry_t or folio argument")),
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
                _ => return Err(Unfit::Missing("folio or page argument")),
            }
            if probe == ProbeId::SwapRead {
                s.entry_from_folio = 1;
                s.nr_from_folio = 1;
            }
            if probe == ProbeId::TryToUnmapOne {
                s.addr = proto.find(|p| p.name == "address").unwrap_or(NO_ARG);
                s.vma = proto
                    .find(|p| p.ty.is_ptr_to("vm_area_struct"))
                    .unwrap_or(NO_ARG);
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
                return Err(Unfit::NotTheMoveLookup);
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
                return Err(Unfit::NoFolioReturned);
            }
            s.ret_folio = 1;
            s.entry_from_folio = 1;
            s.entry_index_bits = SWAP_ADDRESS_SPACE_SHIFT;
        }
        ProbeId::MovePresent => {
            if proto.ret != CType::Named("pte_t".into()) {
                return Err(Unfit::NoPteReturned);
            }
            s.ret_pte = 1;
            s.addr = need("address argument", proto.find(|p| p.name == "address"))?;
        }
        ProbeId::LazyfreeMark => match (folio, page) {
            (Some(f), _) => s.folio = f,
            (None, Some(p)) => s.page = p,
            _ => return Err(Unfit::Missing("folio or page argument")),
        },
        ProbeId::MadviseFree => {
            s.addr = need("addr argument", proto.find(|p| p.name == "addr"))?;
        }
        ProbeId::GupGrab => {
            // The slow-path grab returns an error code, the fast one a folio;
            // on kernels where `try_grab_folio` is the fast path this
            // candidate is refused here and taken by GupGrabFast.
            if ret_folio {
                return Err(Unfit::LocklessGrab);
            }
            match (folio, page) {
                (Some(f), _) => s.folio = f,
                (None, Some(p)) => s.page = p,
                _ => return Err(Unfit::Missing("folio or page argument")),
            }
            s.gup_flags = need("flags argument", proto.find(|p| p.name == "flags"))?;
        }
        ProbeId::GupGrabFast => {
            if !ret_folio {
                return Err(Unfit::SlowPathGrab);
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
            return Err(Unfit::Tracepoint);
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
