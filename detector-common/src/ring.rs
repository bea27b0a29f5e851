//! The ring-buffer record: an [`Event`] without the fields its probe left
//! empty.
//!
//! Most fields of a full [`Event`] are zero in most records: a swap-entry
//! probe reads no folio, a small folio has no large-folio counts, `nr` is
//! 1 and `arg` 0 for all but a few probes. The programs send only a fixed
//! head and the sections that carry something, and the reader rebuilds
//! the [`Event`] with zeros (or `nr = 1`) where a section is absent, so
//! what userspace sees is exactly what the programs filled.
//!
//! The record is a sequence of native-endian 64-bit words (the ring buffer
//! never leaves the host that wrote it; the trace file has its own
//! encodings). Two 32-bit values in one word are the low half, then the
//! high half.
//!
//! | words | present when | content |
//! |---|---|---|
//! | 4 | always | `ts_ns`; `pid`, `tid`; `task_start`, `cpu`; `probe` (16 bits), `kind` (8), `valid` (8), sections (16), zero (16) |
//! | 2 | [`S_COMM`] | `comm` |
//! | 1 | [`S_NR_ARG`] | `nr`, `arg` |
//! | 1 | [`S_FOLIO`] | `folio` |
//! | 6 | [`S_STATE`] | `f_flags`; `f_swap`; `f_mapping`; `f_index`; `f_refcount`, `f_mapcount`; `f_nr_pages`, `f_state` |
//! | 2 | [`S_LARGE`] | `f_large_mapcount`, `f_entire_mapcount`; `f_pincount`, zero |
//! | 1 | [`S_ENTRY`] | `entry` |
//! | 1 | [`S_PTE`] | `pte` |
//! | 1 | [`S_ADDR`] | `addr` |
//! | 1 | [`S_RET`] | `ret` |
//!
//! A section is present exactly when one of its fields differs from its
//! absent value (0; for [`S_NR_ARG`], `nr = 1` and `arg = 0`), so
//! [`pack`] then [`unpack`] gives back every event unchanged.
//!
//! The kprobe programs have no stack room to pack (LLVM refuses them past
//! 512 bytes): they fill a whole [`Event`] straight into the ring-buffer
//! reservation instead, behind [`WHOLE_MARKER`] ([`WholeRecord`], 160
//! bytes). [`unpack`] reads both.

use crate::Event;

/// First word of a [`WholeRecord`]: no packed record starts with it (it
/// is a timestamp there, and no clock reads `u64::MAX`).
pub const WHOLE_MARKER: u64 = u64::MAX;

/// A whole [`Event`] behind [`WHOLE_MARKER`]: what the programs without
/// the stack room to pack send (the event is filled straight into the
/// ring-buffer reservation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WholeRecord {
    pub marker: u64,
    pub ev: Event,
}

/// Bytes of a [`WholeRecord`].
pub const WHOLE_RECORD_LEN: usize = core::mem::size_of::<WholeRecord>();
const _: () = assert!(WHOLE_RECORD_LEN == 8 + crate::EVENT_SIZE);

/// Words of the head every record starts with.
pub const RING_HEAD_WORDS: usize = 4;
/// Words of the longest record: the head and every section.
pub const RING_MAX_WORDS: usize = 20;
/// Bytes of the longest record.
pub const RING_RECORD_MAX: usize = RING_MAX_WORDS * 8;

/// `current->comm`.
pub const S_COMM: u16 = 1 << 0;
/// `nr` other than 1, or a nonzero `arg`.
pub const S_NR_ARG: u16 = 1 << 1;
pub const S_FOLIO: u16 = 1 << 2;
/// The folio's flags, identity and small-folio counts.
pub const S_STATE: u16 = 1 << 3;
/// The counts only a large folio has.
pub const S_LARGE: u16 = 1 << 4;
pub const S_ENTRY: u16 = 1 << 5;
pub const S_PTE: u16 = 1 << 6;
pub const S_ADDR: u16 = 1 << 7;
pub const S_RET: u16 = 1 << 8;
/// Every section bit this layout defines.
pub const S_ALL: u16 = (1 << 9) - 1;

/// Words of each section, indexed by its bit number.
const SECTION_WORDS: [usize; 9] = [2, 1, 1, 6, 2, 1, 1, 1, 1];

const _: () = {
    let mut total = RING_HEAD_WORDS;
    let mut i = 0;
    while i < SECTION_WORDS.len() {
        total += SECTION_WORDS[i];
        i += 1;
    }
    assert!(total == RING_MAX_WORDS);
};

#[inline(always)]
fn pair(lo: u32, hi: u32) -> u64 {
    lo as u64 | (hi as u64) << 32
}

/// Writes `ev` as a ring record into `out` and returns its length in
/// bytes (a multiple of 8, at most [`RING_RECORD_MAX`]).
#[inline(always)]
pub fn pack(ev: &Event, out: &mut [u64; RING_MAX_WORDS]) -> usize {
    pack_sections(ev, sections(ev), out)
}

/// The sections `ev` needs: one bit for each that carries something.
#[inline(always)]
pub fn sections(ev: &Event) -> u16 {
    let mut s = 0u16;
    let comm = comm_words(ev);
    if comm[0] | comm[1] != 0 {
        s |= S_COMM;
    }
    if ev.nr != 1 || ev.arg != 0 {
        s |= S_NR_ARG;
    }
    if ev.folio != 0 {
        s |= S_FOLIO;
    }
    if ev.f_flags
        | ev.f_swap
        | ev.f_mapping
        | ev.f_index
        | (ev.f_refcount | ev.f_mapcount) as u32 as u64
        | (ev.f_nr_pages | ev.f_state) as u64
        != 0
    {
        s |= S_STATE;
    }
    if (ev.f_large_mapcount | ev.f_entire_mapcount | ev.f_pincount) != 0 {
        s |= S_LARGE;
    }
    if ev.entry != 0 {
        s |= S_ENTRY;
    }
    if ev.pte != 0 {
        s |= S_PTE;
    }
    if ev.addr != 0 {
        s |= S_ADDR;
    }
    if ev.ret != 0 {
        s |= S_RET;
    }
    s
}

#[inline(always)]
fn comm_words(ev: &Event) -> [u64; 2] {
    let c = &ev.comm;
    [
        u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        u64::from_ne_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]),
    ]
}

/// [`pack`] with the sections already chosen ([`sections`], or a superset
/// of it: a section not needed is written as its absent value's words,
/// which [`unpack`] reads back the same). Bits outside [`S_ALL`] are
/// ignored.
///
/// Written for the BPF programs: straight-line code with no bounds checks
/// (every store lands inside `out`, whatever `s` is) and no loops. The
/// programs pass `s` through a helper first, so the verifier does not tie
/// the record's length back to every field of the event (which made it
/// walk each combination of the fields' values apart).
#[inline(always)]
pub fn pack_sections(ev: &Event, s: u16, out: &mut [u64; RING_MAX_WORDS]) -> usize {
    let s = (s & S_ALL) as usize;
    let comm = comm_words(ev);
    let p = out.as_mut_ptr();
    // Every section is written, present or not, each at the offset the
    // present sections before it add up to: no branch, so the verifier
    // walks this once. An absent section's words land where the next
    // present sections (written after it) or the record's end are, so
    // what is sent is exactly the present sections.
    let put = |w: usize, v: u64| {
        // SAFETY: a section starts after at most the words of all sections
        // before it, so its last word is below the head plus every section,
        // RING_MAX_WORDS words (checked at compile time above): inside
        // `out` whatever `s` is.
        unsafe { p.add(w).write(v) };
    };
    // Behind black_box, LLVM cannot see that the offset and the bit share
    // no set bits, and adds them instead of or-ing them: 6.1's verifier
    // loses an offset's bounds through an `or` of two unknowns and then
    // refuses the store (measured).
    let has = |bit: u16| core::hint::black_box((s >> bit.trailing_zeros()) & 1);
    put(0, ev.ts_ns);
    put(1, pair(ev.pid, ev.tid));
    put(2, pair(ev.task_start, ev.cpu));
    put(
        3,
        ev.probe as u64 | (ev.kind as u64) << 16 | (ev.valid as u64) << 24 | (s as u64) << 32,
    );
    let mut w = RING_HEAD_WORDS;
    put(w, comm[0]);
    put(w + 1, comm[1]);
    w += 2 * has(S_COMM);
    put(w, pair(ev.nr, ev.arg));
    w += has(S_NR_ARG);
    put(w, ev.folio);
    w += has(S_FOLIO);
    put(w, ev.f_flags);
    put(w + 1, ev.f_swap);
    put(w + 2, ev.f_mapping);
    put(w + 3, ev.f_index);
    put(w + 4, pair(ev.f_refcount as u32, ev.f_mapcount as u32));
    put(w + 5, pair(ev.f_nr_pages, ev.f_state));
    w += 6 * has(S_STATE);
    put(
        w,
        pair(ev.f_large_mapcount as u32, ev.f_entire_mapcount as u32),
    );
    put(w + 1, ev.f_pincount as u32 as u64);
    w += 2 * has(S_LARGE);
    put(w, ev.entry);
    w += has(S_ENTRY);
    put(w, ev.pte);
    w += has(S_PTE);
    put(w, ev.addr);
    w += has(S_ADDR);
    put(w, ev.ret as u64);
    w += has(S_RET);
    w * 8
}

/// Why a ring record could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackError {
    /// Shorter than the head, or not whole words.
    Truncated,
    /// Section bits this layout does not define (a mismatched object).
    UnknownSections(u16),
    /// The sections the head names do not add up to the record's length.
    Length { sections: u16, len: usize },
}

/// Reads a ring record made by [`pack`], or a [`WholeRecord`], on this
/// host.
pub fn unpack(b: &[u8]) -> Result<Event, UnpackError> {
    if b.len() < RING_HEAD_WORDS * 8 || !b.len().is_multiple_of(8) {
        return Err(UnpackError::Truncated);
    }
    if b.len() == WHOLE_RECORD_LEN && b[..8] == WHOLE_MARKER.to_ne_bytes() {
        // SAFETY: `Event` is repr(C) plain integers, so any EVENT_SIZE
        // bytes are a valid value, and the slice after the marker is
        // exactly EVENT_SIZE bytes; read_unaligned copes with any
        // alignment.
        return Ok(unsafe { core::ptr::read_unaligned(b[8..].as_ptr().cast::<Event>()) });
    }
    let mut words = b.chunks_exact(8).map(|c| {
        let mut a = [0u8; 8];
        a.copy_from_slice(c);
        u64::from_ne_bytes(a)
    });
    let mut next = || words.next().unwrap_or(0);
    let lo = |v: u64| v as u32;
    let hi = |v: u64| (v >> 32) as u32;

    let mut ev = Event {
        ts_ns: next(),
        nr: 1,
        ..Event::default()
    };
    let w = next();
    (ev.pid, ev.tid) = (lo(w), hi(w));
    let w = next();
    (ev.task_start, ev.cpu) = (lo(w), hi(w));
    let w = next();
    ev.probe = w as u16;
    ev.kind = (w >> 16) as u8;
    ev.valid = (w >> 24) as u8;
    let s = (w >> 32) as u16;
    if s & !S_ALL != 0 {
        return Err(UnpackError::UnknownSections(s));
    }
    let mut want = RING_HEAD_WORDS;
    for (i, n) in SECTION_WORDS.iter().enumerate() {
        if s & (1 << i) != 0 {
            want += n;
        }
    }
    if want * 8 != b.len() {
        return Err(UnpackError::Length {
            sections: s,
            len: b.len(),
        });
    }
    if s & S_COMM != 0 {
        ev.comm[..8].copy_from_slice(&next().to_ne_bytes());
        ev.comm[8..].copy_from_slice(&next().to_ne_bytes());
    }
    if s & S_NR_ARG != 0 {
        let w = next();
        (ev.nr, ev.arg) = (lo(w), hi(w));
    }
    if s & S_FOLIO != 0 {
        ev.folio = next();
    }
    if s & S_STATE != 0 {
        ev.f_flags = next();
        ev.f_swap = next();
        ev.f_mapping = next();
        ev.f_index = next();
        let w = next();
        (ev.f_refcount, ev.f_mapcount) = (lo(w) as i32, hi(w) as i32);
        let w = next();
        (ev.f_nr_pages, ev.f_state) = (lo(w), hi(w));
    }
    if s & S_LARGE != 0 {
        let w = next();
        (ev.f_large_mapcount, ev.f_entire_mapcount) = (lo(w) as i32, hi(w) as i32);
        ev.f_pincount = lo(next()) as i32;
    }
    if s & S_ENTRY != 0 {
        ev.entry = next();
    }
    if s & S_PTE != 0 {
        ev.pte = next();
    }
    if s & S_ADDR != 0 {
        ev.addr = next();
    }
    if s & S_RET != 0 {
        ev.ret = next() as i64;
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(out: &[u64; RING_MAX_WORDS], len: usize) -> [u8; RING_RECORD_MAX] {
        let mut b = [0u8; RING_RECORD_MAX];
        for (i, w) in out.iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        assert!(len <= RING_RECORD_MAX);
        b
    }

    fn round_trip(ev: &Event) -> usize {
        let mut out = [0u64; RING_MAX_WORDS];
        let len = pack(ev, &mut out);
        let b = bytes(&out, len);
        assert_eq!(unpack(&b[..len]), Ok(*ev), "{ev:?}");
        len
    }

    /// An event with every section of the record in use.
    fn every_section() -> Event {
        Event {
            ts_ns: 1,
            nr: 2,
            folio: 1,
            f_flags: 1,
            f_pincount: 1,
            entry: 1,
            pte: 1,
            addr: 1,
            ret: 1,
            comm: [1; 16],
            ..Event::default()
        }
    }

    /// xorshift64*: enough to vary every field without a dependency.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn every_field_survives_whatever_else_is_empty() {
        let mut st = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let r = rng(&mut st);
            // Each field is zero half the time, so every combination of
            // present and absent sections comes up.
            let mut f = |bit: u32| {
                let v = rng(&mut st);
                if r >> bit & 1 == 0 {
                    0
                } else {
                    v
                }
            };
            let mut comm = [0u8; 16];
            comm[..8].copy_from_slice(&f(0).to_ne_bytes());
            comm[8..].copy_from_slice(&f(1).to_ne_bytes());
            let ev = Event {
                ts_ns: f(2),
                folio: f(3),
                entry: f(4),
                pte: f(5),
                addr: f(6),
                ret: f(7) as i64,
                f_flags: f(8),
                f_swap: f(9),
                f_mapping: f(10),
                f_index: f(11),
                pid: f(12) as u32,
                tid: f(13) as u32,
                cpu: f(14) as u32,
                nr: if r >> 15 & 1 == 0 { 1 } else { f(16) as u32 },
                f_refcount: f(17) as i32,
                f_mapcount: f(18) as i32,
                f_large_mapcount: f(19) as i32,
                f_entire_mapcount: f(20) as i32,
                f_pincount: f(21) as i32,
                f_nr_pages: f(22) as u32,
                f_state: f(23) as u32,
                arg: f(24) as u32,
                probe: f(25) as u16,
                kind: f(26) as u8,
                valid: f(27) as u8,
                comm,
                task_start: f(28) as u32,
            };
            round_trip(&ev);
        }
    }

    #[test]
    fn sizes_follow_what_the_probe_filled() {
        let head = Event {
            nr: 1,
            ..Event::default()
        };
        assert_eq!(round_trip(&head), 32);
        // A swap-fault entry: task, PTE and address.
        let fault = Event {
            comm: *b"stress\0\0\0\0\0\0\0\0\0\0",
            pte: 0x1234_5600,
            addr: 0x7f00_0000_1000,
            ..head
        };
        assert_eq!(round_trip(&fault), 64);
        // A small folio: no large-folio section.
        let small = Event {
            folio: 0xffff_ea00_0000_0040,
            f_flags: 0x2_0029,
            f_refcount: 2,
            f_mapcount: 1,
            f_nr_pages: 1,
            ..fault
        };
        assert_eq!(round_trip(&small), 64 + 8 + 48);
        let large = Event {
            f_large_mapcount: 16,
            nr: 16,
            ..small
        };
        assert_eq!(round_trip(&large), 64 + 8 + 48 + 16 + 8);
        // Negative counts (a folio being freed reads -1) are not absent.
        let freed = Event {
            f_mapcount: -1,
            ..head
        };
        assert_eq!(round_trip(&freed), 32 + 48);
        let full = Event {
            entry: 1,
            ret: -12,
            arg: 3,
            f_pincount: 1,
            ..large
        };
        assert_eq!(round_trip(&full), RING_RECORD_MAX);
    }

    #[test]
    fn whole_records_are_read_as_they_are() {
        let ev = Event {
            ts_ns: 5,
            folio: 0xffff_ea00_0000_0040,
            f_refcount: 3,
            comm: *b"kswapd0\0\0\0\0\0\0\0\0\0",
            ..Event::default()
        };
        let r = WholeRecord {
            marker: WHOLE_MARKER,
            ev,
        };
        // SAFETY: reading the bytes of a plain-integer repr(C) value.
        let b =
            unsafe { core::slice::from_raw_parts((&raw const r).cast::<u8>(), WHOLE_RECORD_LEN) };
        assert_eq!(unpack(b), Ok(ev));
        // A packed record of the same length is not mistaken for one.
        assert_eq!(round_trip(&every_section()), WHOLE_RECORD_LEN);
    }

    #[test]
    fn more_sections_than_needed_read_back_the_same() {
        let ev = Event {
            ts_ns: 9,
            nr: 1,
            folio: 0x40,
            f_refcount: 1,
            ..Event::default()
        };
        // What a program sends when its section word could not be copied.
        let mut out = [0u64; RING_MAX_WORDS];
        let len = pack_sections(&ev, S_ALL, &mut out);
        assert_eq!(len, RING_RECORD_MAX);
        assert_eq!(unpack(&bytes(&out, len)[..len]), Ok(ev));
        // Bits outside the layout are ignored, not sent.
        let len = pack_sections(&ev, sections(&ev) | 1 << 15, &mut out);
        assert_eq!(len, 32 + 8 + 48);
        assert_eq!(unpack(&bytes(&out, len)[..len]), Ok(ev));
    }

    #[test]
    fn damaged_records_are_refused() {
        let mut out = [0u64; RING_MAX_WORDS];
        let ev = Event {
            nr: 1,
            folio: 8,
            ..Event::default()
        };
        let len = pack(&ev, &mut out);
        let b = bytes(&out, len);
        assert_eq!(
            unpack(&b[..len - 8]),
            Err(UnpackError::Length {
                sections: S_FOLIO,
                len: len - 8
            })
        );
        assert_eq!(unpack(&b[..len - 1]), Err(UnpackError::Truncated));
        assert_eq!(unpack(&b[..16]), Err(UnpackError::Truncated));
        let mut bad = out;
        bad[3] |= 1 << (32 + 12);
        let b = bytes(&bad, len);
        assert!(matches!(
            unpack(&b[..len]),
            Err(UnpackError::UnknownSections(_))
        ));
        // Whatever the bytes, unpack answers without panicking.
        let mut st = 7u64;
        for n in 0..=RING_RECORD_MAX + 8 {
            let junk: [u8; RING_RECORD_MAX + 8] = core::array::from_fn(|_| rng(&mut st) as u8);
            let _ = unpack(&junk[..n]);
        }
    }
}
