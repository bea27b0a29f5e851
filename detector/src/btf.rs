//! Struct offsets, flag bits and function prototypes from the running
//! kernel's BTF.
//!
//! Rust BPF programs cannot carry CO-RE relocations, so everything that
//! differs between kernels (the shape of `struct folio`, `enum pageflags`,
//! which argument of a function is the folio) is resolved here at load time
//! and handed to the programs. One binary then serves 6.1, 6.12 and 6.18.

use std::path::Path;

use btf_rs::{Btf, BtfType, Type};
use detector_common::{Layout, ABSENT};
use fallible_iterator::FallibleIterator;

/// Default location of the kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "{0} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF, and the detector \
         needs it to find struct offsets; use a kernel with BTF or replay a trace recorded elsewhere"
    )]
    Missing(String),
    #[error("cannot read kernel BTF from {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("kernel BTF has no `struct {0}`; this kernel is not supported")]
    NoStruct(&'static str),
}

/// A simplified C type, enough to recognise the arguments probes care about.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CType {
    Void,
    /// `struct NAME *` (or union).
    PtrTo(String),
    /// Any other pointer.
    Ptr,
    /// A named typedef / struct / int passed by value, e.g. `swp_entry_t`.
    Named(String),
    Other,
}

impl CType {
    pub fn is_ptr_to(&self, name: &str) -> bool {
        matches!(self, CType::PtrTo(n) if n == name)
    }
}

/// A function parameter as BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Param {
    pub name: String,
    pub ty: CType,
}

/// A function prototype as BTF describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Proto {
    pub params: Vec<Param>,
    pub ret: CType,
}

impl Proto {
    /// Index of the first parameter matching `pred`.
    pub fn find(&self, pred: impl Fn(&Param) -> bool) -> Option<u8> {
        self.params.iter().position(pred).map(|i| i as u8)
    }
}

/// The kernel's BTF, with the lookups the loader needs.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open_vmlinux() -> Result<Self, BtfError> {
        Self::open(Path::new(VMLINUX_BTF))
    }

    pub fn open(path: &Path) -> Result<Self, BtfError> {
        if !path.exists() {
            return Err(BtfError::Missing(path.display().to_string()));
        }
        Btf::from_file(path)
            .map(|btf| KernelBtf { btf })
            .map_err(|e| BtfError::Unreadable {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    fn name_of(&self, t: &dyn BtfType) -> String {
        self.btf.resolve_name(t).unwrap_or_default()
    }

    /// Follows typedef / const / volatile / restrict / type tags.
    fn strip(&self, mut t: Type) -> Type {
        for _ in 0..16 {
            match &t {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let next = match t.as_btf_type() {
                        Some(bt) => self.btf.resolve_chained_type(bt),
                        None => return t,
                    };
                    match next {
                        Ok(n) => t = n,
                        Err(_) => return t,
                    }
                }
                _ => return t,
            }
        }
        t
    }

    fn find_struct(&self, name: &str) -> Option<btf_rs::Struct> {
        let types = self.btf.resolve_types_by_name(name).ok()?;
        types.into_iter().find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
    }

    /// Byte offset of `member` in `struct sname`, looking through anonymous
    /// structs and unions (where most of `struct folio` lives).
    pub fn member_offset(&self, sname: &str, member: &str) -> Option<u32> {
        let s = self.find_struct(sname)?;
        self.member_offset_in(&s, member, 0)
    }

    fn member_offset_in(&self, s: &btf_rs::Struct, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        // Named members at this level first, so `flags` of the folio wins
        // over a `flags` nested deeper.
        for m in &s.members {
            if self.name_of(m) == member {
                return Some(m.bit_offset() / 8);
            }
        }
        for m in &s.members {
            if !self.name_of(m).is_empty() {
                continue;
            }
            let inner = match self.btf.resolve_chained_type(m) {
                Ok(t) => self.strip(t),
                Err(_) => continue,
            };
            if let Type::Struct(st) | Type::Union(st) = inner {
                if let Some(off) = self.member_offset_in(&st, member, depth + 1) {
                    return Some(m.bit_offset() / 8 + off);
                }
            }
        }
        None
    }

    /// Element count of array member `member` of `struct sname` (a direct
    /// member, typedefs looked through).
    pub fn member_array_len(&self, sname: &str, member: &str) -> Option<u32> {
        let s = self.find_struct(sname)?;
        let m = s.members.iter().find(|m| self.name_of(*m) == member)?;
        match self.strip(self.btf.resolve_chained_type(m).ok()?) {
            Type::Array(a) => u32::try_from(a.len()).ok(),
            _ => None,
        }
    }

    /// Pages per swap cluster (`SWAPFILE_CLUSTER`, a macro, so not in BTF
    /// itself): `HPAGE_PMD_NR` with `CONFIG_THP_SWAP`, else 256. The swap
    /// allocator keeps one slot per order up to `PMD_ORDER` with THP_SWAP
    /// and a single one without (`SWAP_NR_ORDERS`), and that array length
    /// is in BTF.
    pub fn swap_cluster_pages(&self) -> Option<u32> {
        let orders = self
            .member_array_len("swap_sequential_cluster", "next")
            .or_else(|| self.member_array_len("percpu_swap_cluster", "offset"))?;
        match orders {
            0 => None,
            1 => Some(256),
            n if n <= 20 => Some(1 << (n - 1)),
            _ => None,
        }
    }

    /// `sizeof(struct sname)`.
    pub fn struct_size(&self, sname: &str) -> Option<u32> {
        self.find_struct(sname).map(|s| s.size() as u32)
    }

    /// Value of enumerator `member` of `enum ename`.
    pub fn enum_value(&self, ename: &str, member: &str) -> Option<u64> {
        let types = self.btf.resolve_types_by_name(ename).ok()?;
        types.iter().find_map(|t| self.enumerator_in(t, member))
    }

    fn enumerator_in(&self, t: &Type, member: &str) -> Option<u64> {
        match t {
            Type::Enum(e) => e
                .members
                .iter()
                .find(|m| self.name_of(*m) == member)
                .map(|m| m.val() as u64),
            Type::Enum64(e) => e
                .members
                .iter()
                .find(|m| self.name_of(*m) == member)
                .map(btf_rs::Enum64Member::val),
            _ => None,
        }
    }

    /// Value of an enumerator that may live in an anonymous enum (like
    /// `FOLL_PIN`): scans every enum once.
    pub fn any_enumerator(&self, member: &str) -> Option<u64> {
        let mut it = self.btf.type_iter();
        // A parse error mid-way ends the scan like the end of the list.
        while let Ok(Some(t)) = it.next() {
            if let Some(v) = self.enumerator_in(&t, member) {
                return Some(v);
            }
        }
        None
    }

    fn ctype(&self, t: Type) -> CType {
        match self.strip_keep_typedef_name(t) {
            (Some(name), _) => CType::Named(name),
            (None, Type::Void) => CType::Void,
            (None, Type::Ptr(p)) => match self.btf.resolve_chained_type(&p) {
                Ok(inner) => match self.strip(inner) {
                    Type::Struct(s) | Type::Union(s) => CType::PtrTo(self.name_of(&s)),
                    Type::Fwd(f) => CType::PtrTo(self.name_of(&f)),
                    _ => CType::Ptr,
                },
                Err(_) => CType::Ptr,
            },
            (None, Type::Struct(s)) => CType::Named(self.name_of(&s)),
            (None, Type::Int(i)) => CType::Named(self.name_of(&i)),
            _ => CType::Other,
        }
    }

    /// Returns the first typedef name on the chain (so `swp_entry_t` is seen
    /// as itself), else the stripped type.
    fn strip_keep_typedef_name(&self, t: Type) -> (Option<String>, Type) {
        if let Type::Typedef(td) = &t {
            let name = self.name_of(td);
            if !name.is_empty() {
                return (Some(name), t);
            }
        }
        let s = self.strip(t);
        (None, s)
    }

    /// Whether typed tracepoint `name` (without its group) exists: tp_btf
    /// programs attach through the `btf_trace_<name>` typedef, which every
    /// tracepoint has. The `__bpf_trace_*` function is named after the event
    /// class instead, so it is absent for events defined with DEFINE_EVENT
    /// (`sched_process_exit` up to 6.15).
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.btf
            .resolve_types_by_name(&format!("btf_trace_{name}"))
            .is_ok_and(|ts| ts.iter().any(|t| matches!(t, Type::Typedef(_))))
    }

    /// Prototype of kernel function `func`, if BTF knows it.
    pub fn func_proto(&self, func: &str) -> Option<Proto> {
        let types = self.btf.resolve_types_by_name(func).ok()?;
        let f = types.into_iter().find_map(|t| match t {
            Type::Func(f) => Some(f),
            _ => None,
        })?;
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&f).ok()? else {
            return None;
        };
        let ret = if proto.return_type_id() == 0 {
            CType::Void
        } else {
            match self.btf.resolve_type_by_id(proto.return_type_id()) {
                Ok(t) => self.ctype(t),
                Err(_) => CType::Other,
            }
        };
        let params = proto
            .parameters
            .iter()
            .filter(|p| !p.is_variadic())
            .map(|p| Param {
                name: self.name_of(p),
                ty: self
                    .btf
                    .resolve_chained_type(p)
                    .map(|t| self.ctype(t))
                    .unwrap_or(CType::Other),
            })
            .collect();
        Some(Proto { params, ret })
    }

    /// Resolves the [`Layout`] handed to the BPF programs. Fields this kernel
    /// does not have stay [`ABSENT`]; `notes` says which, and what replaced
    /// them.
    pub fn layout(&self) -> Result<(Layout, Vec<String>), BtfError> {
        if self.find_struct("folio").is_none() {
            return Err(BtfError::NoStruct("folio"));
        }
        let mut notes = Vec::new();
        let mut l = Layout::EMPTY;
        let f = |name: &str| self.member_offset("folio", name).unwrap_or(ABSENT);
        l.folio_flags = f("flags");
        l.folio_mapping = f("mapping");
        l.folio_index = f("index");
        // Before `folio->swap` existed, a swap-cache folio kept its entry in
        // `private` (set_page_private), at the same place in the union.
        l.folio_swap = f("swap");
        if l.folio_swap == ABSENT {
            l.folio_swap = f("private");
            if l.folio_swap != ABSENT {
                notes.push("folio->swap not in BTF: reading the entry from folio->private".into());
            }
        }
        l.folio_mapcount = f("_mapcount");
        l.folio_refcount = f("_refcount");
        l.folio_large_mapcount = f("_large_mapcount");
        l.folio_entire_mapcount = f("_entire_mapcount");
        l.folio_pincount = f("_pincount");
        // Renamed over time; both names mean the page count of a large folio.
        l.folio_nr_pages = self
            .member_offset("folio", "_nr_pages")
            .or_else(|| self.member_offset("folio", "_folio_nr_pages"))
            .unwrap_or(ABSENT);
        l.vmf_orig_pte = self.member_offset("vm_fault", "orig_pte").unwrap_or(ABSENT);
        l.vmf_address = self.member_offset("vm_fault", "address").unwrap_or(ABSENT);
        // Renamed `compound_info` in 7.x, where with the HugeTLB vmemmap
        // optimization a tail page may hold a mask instead of a pointer
        // (the BPF side tells the two encodings apart by value).
        l.page_compound_head = self
            .member_offset("page", "compound_head")
            .or_else(|| self.member_offset("page", "compound_info"))
            .unwrap_or(ABSENT);
        l.page_size_of = self.struct_size("page").unwrap_or(ABSENT);
        l.task_start_time = self
            .member_offset("task_struct", "start_time")
            .unwrap_or(ABSENT);
        // A swap entry named by (device, cluster, offset in cluster), as the
        // swap-table kernels' free path passes it.
        l.si_type = self
            .member_offset("swap_info_struct", "type")
            .unwrap_or(ABSENT);
        l.si_cluster_info = self
            .member_offset("swap_info_struct", "cluster_info")
            .unwrap_or(ABSENT);
        l.ci_size_of = self.struct_size("swap_cluster_info").unwrap_or(ABSENT);
        l.cluster_pages = self.swap_cluster_pages().unwrap_or(ABSENT);
        // The lazyfree filter walks the page table of the mapping being
        // unmapped (vma -> mm -> pgd) to see whether it was written again.
        l.vma_mm = self
            .member_offset("vm_area_struct", "vm_mm")
            .unwrap_or(ABSENT);
        l.vma_flags = self
            .member_offset("vm_area_struct", "vm_flags")
            .unwrap_or(ABSENT);
        l.mm_pgd = self.member_offset("mm_struct", "pgd").unwrap_or(ABSENT);
        // A macro (bit 40 on 64-bit since VM_DROPPABLE appeared in 6.11)
        // until the vma flags became an enum; before 6.11 bit 40 is unused,
        // so testing it costs nothing there.
        l.vm_droppable_bit = ["VMA_DROPPABLE_BIT", "VM_DROPPABLE_BIT"]
            .iter()
            .find_map(|n| self.any_enumerator(n))
            .map_or(40, |v| v as u32);

        let pg = |name: &str| {
            self.enum_value("pageflags", name)
                .map(|v| v as u32)
                .unwrap_or(ABSENT)
        };
        l.pg_locked = pg("PG_locked");
        l.pg_swapbacked = pg("PG_swapbacked");
        l.pg_head = pg("PG_head");
        l.pg_dirty = pg("PG_dirty");
        l.pg_lru = pg("PG_lru");
        l.pg_writeback = pg("PG_writeback");
        l.pg_uptodate = pg("PG_uptodate");
        // PG_swapcache and PG_anon_exclusive are aliases of other bits; BTF
        // normally lists the aliases, but fall back to what they alias.
        l.pg_swapcache = pg("PG_swapcache");
        if l.pg_swapcache == ABSENT {
            l.pg_swapcache = pg("PG_owner_priv_1");
            notes.push("PG_swapcache not in BTF: using PG_owner_priv_1, its alias".into());
        }
        l.pg_anon_exclusive = pg("PG_anon_exclusive");
        if l.pg_anon_exclusive == ABSENT {
            l.pg_anon_exclusive = pg("PG_mappedtodisk");
            notes.push("PG_anon_exclusive not in BTF: using PG_mappedtodisk, its alias".into());
        }
        l.foll_pin = match self.any_enumerator("FOLL_PIN") {
            Some(v) => v as u32,
            None => {
                // Kernels before FOLL_* became an enum define it as a macro
                // with this value.
                notes.push("FOLL_PIN not in BTF: using the macro value 0x40000".into());
                0x40000
            }
        };
        Ok((l, notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the kernel this test runs on; every Linux kernel the
    /// tool supports has these.
    #[test]
    fn resolves_running_kernel_layout() {
        let Ok(btf) = KernelBtf::open_vmlinux() else {
            eprintln!("no kernel BTF here; skipping");
            return;
        };
        let (l, _notes) = btf.layout().expect("struct folio");
        assert_eq!(l.folio_flags, 0, "flags is the first word of struct page");
        assert!(l.folio_refcount != ABSENT && l.folio_refcount < 64);
        assert!(l.folio_mapcount != ABSENT && l.folio_mapcount < 64);
        assert!(l.folio_swap != ABSENT);
        assert!(
            l.folio_pincount != ABSENT && l.folio_pincount >= 64,
            "second page"
        );
        assert!(l.pg_locked == 0, "PG_locked is bit 0");
        assert!(l.pg_swapbacked != ABSENT && l.pg_head != ABSENT);
        assert!(l.pg_swapcache != ABSENT && l.pg_anon_exclusive != ABSENT);
        assert_eq!(l.page_size_of, 64);
        assert_eq!(l.page_compound_head, 8);
        assert!(l.vmf_orig_pte != ABSENT);
    }

    #[test]
    fn prototypes_name_their_arguments() {
        let Ok(btf) = KernelBtf::open_vmlinux() else {
            return;
        };
        let p = btf
            .func_proto("swapcache_prepare")
            .expect("swapcache_prepare");
        assert_eq!(p.params[0].ty, CType::Named("swp_entry_t".into()));
        assert_eq!(p.ret, CType::Named("int".into()));
        let p = btf.func_proto("do_swap_page").expect("do_swap_page");
        assert!(p.params[0].ty.is_ptr_to("vm_fault"));
        let p = btf.func_proto("swap_cache_get_folio").expect("lookup");
        assert!(p.ret.is_ptr_to("folio"));
    }

    #[test]
    fn tracepoints_are_found_through_their_typedef() {
        let Ok(btf) = KernelBtf::open_vmlinux() else {
            return;
        };
        // sched_wakeup is a DEFINE_EVENT of sched_wakeup_template: no BTF
        // trace function of its own, yet attachable.
        assert!(btf.func_proto("__bpf_trace_sched_wakeup").is_none());
        assert!(btf.has_tracepoint("sched_wakeup"));
        assert!(!btf.has_tracepoint("sched_no_such_event"));
    }
}
