//! `--redact`: kernel addresses replaced by keyed pseudonyms, so a trace
//! can be shared without handing out the kernel's memory layout (KASLR
//! offsets, where the vmemmap and the direct map sit, physical frame
//! numbers).
//!
//! Every kernel pointer an event carries (the folio, a pointer return, an
//! `address_space` in `addr`, `folio->mapping`) goes through one keyed
//! permutation, and the frame number of a present PTE through another.
//! Within one run the mapping is fixed, so a folio keeps one redacted value
//! in every event, every field and every rotated segment, and the
//! analyzer's reasoning (this lookup returned that folio, NULL or not, an
//! errno or not) is unchanged. The key is drawn at random for each run and
//! never written anywhere, so values cannot be related across files.
//!
//! The permutation keeps a value's shape: a kernel pointer stays a kernel
//! pointer of the same paging mode (4- or 5-level), never NULL and never
//! an `ERR_PTR`, with its low six bits (struct alignment, the anon/KSM tag
//! bits of `folio->mapping`) as they were. Being a permutation rather than
//! a truncated hash, two different folios can never collide into one. It
//! is a Feistel network whose round function is SipHash-1-3 keyed with
//! 128 random bits.
//!
//! User addresses, swap entries, PTEs that are not present (they encode
//! swap entries), counts, flags and task names are kept: they are what the
//! analysis is about and say nothing about the kernel's layout.

use std::hash::Hasher;

use detector_common::{Event, EVENT_SIZE};
use siphasher::sip::SipHasher13;

use super::format::{decode_event, encode_event};
use super::header::TraceHeader;
use crate::event::{is_errno, StreamItem};

/// Kernel half of the address space with 4-level paging (48-bit virtual
/// addresses).
const KERNEL_48: u64 = 0xffff_8000_0000_0000;
/// Kernel half with 5-level paging (57-bit); below [`KERNEL_48`] only
/// 5-level kernels place anything here.
const KERNEL_57: u64 = 0xff00_0000_0000_0000;
/// Low bits kept as they are: alignment of kernel structures and the tag
/// bits of `folio->mapping`.
const KEPT_LOW_BITS: u32 = 6;
/// x86-64 PTE bits: present, and PROT_NONE (present to the kernel too).
const PTE_PRESENT: u64 = 1;
const PTE_PROTNONE: u64 = 1 << 8;
/// Frame number of a PTE: bits 12..52.
const PFN_SHIFT: u32 = 12;
const PFN_BITS: u32 = 40;
const PFN_MASK: u64 = ((1 << PFN_BITS) - 1) << PFN_SHIFT;
/// Feistel rounds; each one changes one half.
const ROUNDS: u8 = 6;

/// The two mappings are independent permutations.
#[derive(Clone, Copy)]
enum Domain {
    Pointer48 = 1,
    Pointer57 = 2,
    Pfn = 3,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot draw a random key for --redact: {0}")]
pub struct RedactError(String);

/// One run's redaction: the same input always gives the same output.
#[derive(Clone)]
pub struct Redactor {
    k0: u64,
    k1: u64,
}

impl std::fmt::Debug for Redactor {
    // The key must not end up in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Redactor { .. }")
    }
}

impl Redactor {
    /// A redactor with a fresh random key.
    pub fn new() -> Result<Self, RedactError> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key).map_err(|e| RedactError(e.to_string()))?;
        let (a, b) = key.split_at(8);
        let word = |s: &[u8]| {
            let mut w = [0u8; 8];
            w.copy_from_slice(s);
            u64::from_le_bytes(w)
        };
        Ok(Redactor {
            k0: word(a),
            k1: word(b),
        })
    }

    /// A redactor with a given key: for tests, which need two runs to
    /// agree.
    pub fn with_key(k0: u64, k1: u64) -> Self {
        Redactor { k0, k1 }
    }

    fn round(&self, domain: Domain, round: u8, v: u64) -> u64 {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u64(v);
        h.write_u8(domain as u8);
        h.write_u8(round);
        h.finish()
    }

    /// A keyed permutation of the `bits`-wide integers: rounds alternately
    /// XOR one half with a keyed hash of the other, each step invertible,
    /// so the whole is a bijection for any width.
    fn permute(&self, domain: Domain, bits: u32, x: u64) -> u64 {
        let low_bits = bits / 2;
        let low_mask = (1u64 << low_bits) - 1;
        let high_mask = (1u64 << (bits - low_bits)) - 1;
        let (mut high, mut low) = (x >> low_bits, x & low_mask);
        for r in 0..ROUNDS {
            if r % 2 == 0 {
                high ^= self.round(domain, r, low) & high_mask;
            } else {
                low ^= self.round(domain, r, high) & low_mask;
            }
        }
        (high << low_bits) | low
    }

    /// The permutation restricted to the values `ok` accepts (cycle
    /// walking): still a bijection on them, provided `x` is one.
    fn walk(&self, domain: Domain, bits: u32, x: u64, ok: impl Fn(u64) -> bool) -> u64 {
        let mut y = x;
        loop {
            y = self.permute(domain, bits, y);
            if ok(y) {
                return y;
            }
        }
    }

    /// A kernel pointer's pseudonym; anything else (NULL, an errno, a user
    /// address, a swap entry, a small integer) comes back unchanged.
    pub fn pointer(&self, v: u64) -> u64 {
        let (base, end, domain) = if v >= KERNEL_48 {
            (KERNEL_48, u64::MAX, Domain::Pointer48)
        } else if v >= KERNEL_57 {
            (KERNEL_57, KERNEL_48 - 1, Domain::Pointer57)
        } else {
            return v;
        };
        if is_errno(v as i64) {
            return v;
        }
        let low = v & ((1 << KEPT_LOW_BITS) - 1);
        let slots = ((end - base) >> KEPT_LOW_BITS) + 1;
        let bits = 64 - (slots - 1).leading_zeros();
        let value = |slot: u64| base + (slot << KEPT_LOW_BITS) + low;
        let slot = self.walk(domain, bits, (v - base) >> KEPT_LOW_BITS, |s| {
            s < slots && !is_errno(value(s) as i64)
        });
        value(slot)
    }

    /// A PTE with the frame number of a present page replaced; swap and
    /// empty PTEs unchanged.
    pub fn pte(&self, pte: u64) -> u64 {
        if pte & (PTE_PRESENT | PTE_PROTNONE) == 0 {
            return pte;
        }
        let pfn = (pte & PFN_MASK) >> PFN_SHIFT;
        if pfn == 0 {
            return pte;
        }
        let out = self.walk(Domain::Pfn, PFN_BITS, pfn, |y| y != 0);
        (pte & !PFN_MASK) | (out << PFN_SHIFT)
    }

    /// Every kernel address an event carries.
    #[inline]
    pub fn event(&self, e: &mut Event) {
        e.folio = self.pointer(e.folio);
        e.ret = self.pointer(e.ret as u64) as i64;
        e.addr = self.pointer(e.addr);
        e.f_mapping = self.pointer(e.f_mapping);
        e.pte = self.pte(e.pte);
    }

    /// As [`event`](Self::event), on an event's on-disk bytes.
    #[inline]
    pub fn event_bytes(&self, b: &[u8; EVENT_SIZE]) -> [u8; EVENT_SIZE] {
        let mut e = decode_event(b);
        self.event(&mut e);
        let mut out = [0u8; EVENT_SIZE];
        encode_event(&e, &mut out);
        out
    }

    /// A stream item with its addresses redacted (lost records have none).
    #[inline]
    pub fn item(&self, item: &StreamItem) -> StreamItem {
        match *item {
            StreamItem::Event(mut e) => {
                self.event(&mut e);
                StreamItem::Event(e)
            }
            lost @ StreamItem::Lost { .. } => lost,
        }
    }

    /// The header without what gives the layout away: the addresses of
    /// `vmemmap_base` and `page_offset_base` are dropped from the layout map, and kernel addresses
    /// in the plan's notes and the command line are redacted like those in
    /// events. Marks the header `redacted`.
    pub fn header(&self, h: &TraceHeader) -> TraceHeader {
        let mut h = h.clone();
        h.layout.remove("vmemmap_base_sym");
        h.layout.remove("page_offset_base_sym");
        for p in &mut h.plan {
            p.target = self.text(&p.target);
            p.note = self.text(&p.note);
            p.filter = self.text(&p.filter);
        }
        for arg in &mut h.command_line {
            *arg = self.text(arg);
        }
        h.origin = self.text(&h.origin);
        h.redacted = true;
        h
    }

    /// `s` with every kernel address in it redacted: `0x`-prefixed hex
    /// numbers, and bare 16-digit ones (the form of /proc/kallsyms), each
    /// standing as a word of its own.
    pub fn text(&self, s: &str) -> String {
        let b = s.as_bytes();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        let mut copied = 0;
        while i < b.len() {
            let word_start = i == 0 || !is_word(b[i - 1]);
            if !word_start || !b[i].is_ascii_hexdigit() {
                i += 1;
                continue;
            }
            let prefixed = b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X'));
            let digits_at = if prefixed { i + 2 } else { i };
            let end = digits_at
                + b[digits_at..]
                    .iter()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .count();
            let n = end - digits_at;
            let whole_word = end == b.len() || !is_word(b[end]);
            let fits = if prefixed {
                (1..=16).contains(&n)
            } else {
                n == 16
            };
            if whole_word && fits {
                if let Ok(v) = u64::from_str_radix(&s[digits_at..end], 16) {
                    let r = self.pointer(v);
                    if r != v {
                        out.push_str(&s[copied..digits_at]);
                        out.push_str(&format!("{r:0n$x}"));
                        copied = end;
                    }
                }
            }
            i = end.max(i + 1);
        }
        out.push_str(&s[copied..]);
        out
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;
    use detector_common::{V_FOLIO, V_PTE, V_RET};

    fn r() -> Redactor {
        Redactor::with_key(0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210)
    }

    #[test]
    fn pointers_keep_their_shape_and_identity() {
        let r = r();
        for v in [
            0xffff_ea00_0012_3440u64,
            0xffff_8880_0000_0001,
            0xffff_ffff_8200_0000,
            0xffd2_770c_801b_6dc0,
            0xff11_0000_0000_0003,
        ] {
            let x = r.pointer(v);
            assert_ne!(x, v);
            assert_eq!(x, r.pointer(v), "stable");
            assert_eq!(x & 0x3f, v & 0x3f, "low bits kept");
            assert_eq!(x >= KERNEL_48, v >= KERNEL_48, "{v:#x} -> {x:#x}");
            assert!(x >= KERNEL_57, "{v:#x} -> {x:#x}");
            assert!(!is_errno(x as i64));
            assert_eq!(
                crate::event::is_kernel_pointer(x as i64),
                crate::event::is_kernel_pointer(v as i64)
            );
        }
        // Not kernel pointers: unchanged.
        for v in [
            0u64,
            1,
            (-17i64) as u64,
            (-4095i64) as u64,
            0x7fff_0000_1000,
            0x0000_8000_0000_0000,
            (1 << 58) | 0x1f3,
        ] {
            assert_eq!(r.pointer(v), v, "{v:#x}");
        }
        // Another key, other values.
        let other = Redactor::with_key(1, 2);
        assert_ne!(
            other.pointer(0xffff_ea00_0012_3440),
            r.pointer(0xffff_ea00_0012_3440)
        );
    }

    #[test]
    fn distinct_pointers_stay_distinct() {
        let r = r();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000u64 {
            let v = 0xffff_ea00_0000_0000 + i * 64;
            assert!(seen.insert(r.pointer(v)), "collision at {v:#x}");
        }
    }

    /// On a small width the permutation can be checked exhaustively.
    #[test]
    fn permute_is_a_bijection_for_odd_and_even_widths() {
        let r = r();
        for bits in [1u32, 2, 7, 10, 11] {
            let n = 1u64 << bits;
            let mut hit = vec![false; n as usize];
            for x in 0..n {
                let y = r.permute(Domain::Pointer48, bits, x);
                assert!(y < n);
                assert!(!hit[y as usize], "bits {bits}: {y} twice");
                hit[y as usize] = true;
            }
        }
    }

    #[test]
    fn only_present_ptes_lose_their_frame() {
        let r = r();
        let present = 0x8000_0001_2345_6067u64;
        let x = r.pte(present);
        assert_eq!(x & !PFN_MASK, present & !PFN_MASK, "flag bits kept");
        assert_ne!(x & PFN_MASK, present & PFN_MASK);
        assert_ne!(x & PFN_MASK, 0);
        let protnone = 0x0000_0001_2345_6100u64;
        assert_ne!(r.pte(protnone) & PFN_MASK, protnone & PFN_MASK);
        // A swap PTE and an empty one carry no frame.
        let swap = crate::scenario::swap_pte((1 << 58) | 0x1f3);
        assert_eq!(r.pte(swap), swap);
        assert_eq!(r.pte(0), 0);
    }

    #[test]
    fn events_lose_every_kernel_address_and_keep_the_rest() {
        let r = r();
        let folio = 0xffff_ea00_04d3_c0c0u64;
        let e = Event {
            folio,
            ret: folio as i64,
            addr: 0x7f00_1234_5000,
            f_mapping: 0xffff_8880_1234_5601,
            pte: 0x8000_0001_2345_6067,
            entry: (1 << 58) | 0x1f3,
            f_swap: (1 << 58) | 0x1f3,
            f_index: 0x0007_f001_2345,
            valid: V_FOLIO | V_RET | V_PTE,
            ..Event::default()
        };
        let mut x = e;
        r.event(&mut x);
        assert_eq!(x.folio, r.pointer(folio));
        assert_eq!(x.ret as u64, x.folio, "a lookup's return is its folio");
        assert_eq!(x.f_mapping & 3, 1, "anon tag kept");
        assert_ne!(x.f_mapping, e.f_mapping);
        assert_ne!(x.pte, e.pte);
        assert_eq!(
            (x.addr, x.entry, x.f_swap, x.f_index),
            (e.addr, e.entry, e.f_swap, e.f_index)
        );
        let mut bytes = [0u8; EVENT_SIZE];
        encode_event(&e, &mut bytes);
        assert_eq!(decode_event(&r.event_bytes(&bytes)), x);
    }

    #[test]
    fn text_redacts_kernel_addresses_only() {
        let r = r();
        let p = 0xffff_ffff_8200_0000u64;
        let s = format!(
            "vmemmap_base at {p:#x}; sym {p:016x}; user 0x7fff00001000; errno 0xfffffffffffffff2; \
             word0xffffffff82000000 boot_id 3f2c0d44-8f1e-4a1b-9a31-4e7f6c0a1b2c"
        );
        let t = r.text(&s);
        let q = r.pointer(p);
        assert_eq!(
            t,
            format!(
                "vmemmap_base at {q:#x}; sym {q:016x}; user 0x7fff00001000; errno \
                 0xfffffffffffffff2; word0xffffffff82000000 boot_id \
                 3f2c0d44-8f1e-4a1b-9a31-4e7f6c0a1b2c"
            )
        );
        assert_eq!(r.text("no numbers"), "no numbers");
        assert_eq!(r.text(""), "");
    }

    #[test]
    fn header_drops_the_kernel_symbol_addresses_and_is_marked() {
        let r = r();
        let mut h = TraceHeader::new("live");
        h.layout
            .insert("vmemmap_base_sym".into(), 0xffff_ffff_8200_0000);
        h.layout
            .insert("page_offset_base_sym".into(), 0xffff_ffff_8200_0008);
        h.layout.insert("folio_swap".into(), 40);
        h.command_line = vec!["detector".into(), "--pid".into(), "12".into()];
        let x = r.header(&h);
        assert!(x.redacted && !h.redacted);
        assert!(!x.layout.contains_key("vmemmap_base_sym"));
        assert!(!x.layout.contains_key("page_offset_base_sym"));
        assert_eq!(x.layout["folio_swap"], 40);
        assert_eq!(x.command_line, h.command_line);
    }
}
