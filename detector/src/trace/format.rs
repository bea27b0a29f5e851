//! Byte-level constants of format v1 (v2 shares its preamble and header)
//! and the event codec.
//!
//! On little-endian hosts an event is copied as a whole (its `#[repr(C)]`
//! layout is the on-disk layout); this roughly halves the reader's cost per
//! event compared with decoding 26 fields one by one. The field-by-field
//! codec stays for big-endian hosts and is tested against the fast one.

use std::sync::OnceLock;

use detector_common::{Event, EVENT_SIZE};

/// First 8 bytes of every trace file. The high first byte and the CR LF / ^Z
/// bytes make text-mode transfers and `cat` of a text file fail loudly (the
/// same trick PNG uses).
pub const MAGIC: [u8; 8] = [0x89, b'D', b'T', b'R', b'\r', b'\n', 0x1a, b'\n'];
/// Format version this code writes by default, and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;

/// Which format a writer produces. Readers take both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TraceFormat {
    /// Fixed 164-byte records, each with its own CRC (what detector wrote
    /// before v2; for tools that only read v1).
    V1,
    /// Compressed blocks of variable-size records, with a block index.
    #[default]
    V2,
}

impl TraceFormat {
    /// The preamble's version number.
    pub fn version(self) -> u32 {
        match self {
            TraceFormat::V1 => 1,
            TraceFormat::V2 => 2,
        }
    }
}

impl std::fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.version())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a trace format: give v1 or v2")]
pub struct BadTraceFormat(String);

impl std::str::FromStr for TraceFormat {
    type Err = BadTraceFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v1" | "1" => Ok(TraceFormat::V1),
            "v2" | "2" => Ok(TraceFormat::V2),
            _ => Err(BadTraceFormat(s.to_owned())),
        }
    }
}
/// Magic, format version (u32 LE), header length (u32 LE).
pub const PREAMBLE_LEN: usize = 16;
/// Record framing before the payload: length (u32 LE), type (u16 LE),
/// flags (u16 LE, zero in v1).
pub const RECORD_HEADER_LEN: usize = 8;
/// CRC32 (u32 LE) after every payload.
pub const RECORD_CRC_LEN: usize = 4;
/// Records larger than this are taken as corruption rather than allocated.
pub const MAX_RECORD_PAYLOAD: usize = 16 << 20;
/// Headers larger than this are taken as corruption (real ones are a few
/// KiB: the plan's notes are most of it).
pub const MAX_HEADER_LEN: usize = 16 << 20;

/// One [`Event`], 152 bytes.
pub const RECORD_EVENT: u16 = 1;
/// A lost-event running total, 24 bytes.
pub const RECORD_LOST: u16 = 2;
/// The footer: a JSON object, always the last record.
pub const RECORD_FOOTER: u16 = 3;

pub(crate) const LOST_PAYLOAD_LEN: usize = 24;
pub(crate) const EVENT_RECORD_LEN: usize = RECORD_HEADER_LEN + EVENT_SIZE + RECORD_CRC_LEN;

/// Offsets of each field in the on-disk event, identical to the `#[repr(C)]`
/// layout on a little-endian machine; written out so the format does not
/// depend on the host's endianness.
macro_rules! event_fields {
    ($m:ident) => {
        $m!(ts_ns, u64, 0);
        $m!(folio, u64, 8);
        $m!(entry, u64, 16);
        $m!(pte, u64, 24);
        $m!(addr, u64, 32);
        $m!(ret, i64, 40);
        $m!(f_flags, u64, 48);
        $m!(f_swap, u64, 56);
        $m!(f_mapping, u64, 64);
        $m!(f_index, u64, 72);
        $m!(pid, u32, 80);
        $m!(tid, u32, 84);
        $m!(cpu, u32, 88);
        $m!(nr, u32, 92);
        $m!(f_refcount, i32, 96);
        $m!(f_mapcount, i32, 100);
        $m!(f_large_mapcount, i32, 104);
        $m!(f_entire_mapcount, i32, 108);
        $m!(f_pincount, i32, 112);
        $m!(f_nr_pages, u32, 116);
        $m!(f_state, u32, 120);
        $m!(arg, u32, 124);
        $m!(probe, u16, 128);
        $m!(kind, u8, 130);
        $m!(valid, u8, 131);
        $m!(task_start, u32, 148);
    };
}
const COMM_OFFSET: usize = 132;

/// Serialises an event into its 152 on-disk bytes (little-endian fields).
#[inline]
pub fn encode_event(ev: &Event, out: &mut [u8; EVENT_SIZE]) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: `out` is exactly `size_of::<Event>()` writable bytes and
        // `write_unaligned` has no alignment requirement; on a little-endian
        // host the memory layout is the on-disk layout (checked by
        // `offsets_match_repr_c_layout`).
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast::<Event>(), *ev) }
    }
    #[cfg(not(target_endian = "little"))]
    encode_fields(ev, out)
}

#[cfg_attr(target_endian = "little", allow(dead_code))]
fn encode_fields(ev: &Event, out: &mut [u8; EVENT_SIZE]) {
    macro_rules! put {
        ($f:ident, $t:ty, $off:expr) => {
            out[$off..$off + size_of::<$t>()].copy_from_slice(&ev.$f.to_le_bytes());
        };
    }
    event_fields!(put);
    out[COMM_OFFSET..COMM_OFFSET + 16].copy_from_slice(&ev.comm);
}

/// `Event::ts_ns` of an event's on-disk bytes, without decoding the rest.
#[inline]
pub fn event_ts(b: &[u8; EVENT_SIZE]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// `Event::probe` of an event's on-disk bytes, without decoding the rest.
#[inline]
pub fn event_probe(b: &[u8; EVENT_SIZE]) -> u16 {
    const OFF: usize = std::mem::offset_of!(Event, probe);
    u16::from_le_bytes([b[OFF], b[OFF + 1]])
}

/// Reads an event back from its 152 on-disk bytes. Every byte pattern is a
/// valid event, so this cannot fail.
#[inline]
pub fn decode_event(b: &[u8; EVENT_SIZE]) -> Event {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: `Event` is #[repr(C)], exactly EVENT_SIZE bytes, made only
        // of integers with no padding, so every byte pattern is a valid
        // value; on a little-endian host its memory layout is the on-disk
        // layout (checked by `offsets_match_repr_c_layout`), and
        // `read_unaligned` has no alignment requirement on `b`.
        unsafe { std::ptr::read_unaligned(b.as_ptr().cast::<Event>()) }
    }
    #[cfg(not(target_endian = "little"))]
    decode_fields(b)
}

/// As [`decode_event`], into an existing event: one 152-byte copy straight
/// from the record, no temporary.
#[inline]
pub(super) fn decode_event_into(b: &[u8; EVENT_SIZE], out: &mut Event) {
    #[cfg(target_endian = "little")]
    {
        // SAFETY: `out` is a valid, exclusively borrowed `Event`, which is
        // #[repr(C)], exactly EVENT_SIZE bytes and made only of integers
        // with no padding, so any EVENT_SIZE bytes written over it form a
        // valid value; `b` is EVENT_SIZE readable bytes that cannot overlap
        // `out` (one is borrowed shared, the other exclusively), and a byte
        // copy has no alignment requirement. On a little-endian host the
        // memory layout is the on-disk layout (`offsets_match_repr_c_layout`).
        unsafe {
            std::ptr::copy_nonoverlapping(b.as_ptr(), (out as *mut Event).cast::<u8>(), EVENT_SIZE);
        }
    }
    #[cfg(not(target_endian = "little"))]
    {
        *out = decode_fields(b);
    }
}

#[cfg_attr(target_endian = "little", allow(dead_code))]
fn decode_fields(b: &[u8; EVENT_SIZE]) -> Event {
    macro_rules! get {
        ($f:ident, $t:ty, $off:expr) => {
            <$t>::from_le_bytes(fixed(b, $off))
        };
    }
    let mut comm = [0u8; 16];
    comm.copy_from_slice(&b[COMM_OFFSET..COMM_OFFSET + 16]);
    Event {
        ts_ns: get!(ts_ns, u64, 0),
        folio: get!(folio, u64, 8),
        entry: get!(entry, u64, 16),
        pte: get!(pte, u64, 24),
        addr: get!(addr, u64, 32),
        ret: get!(ret, i64, 40),
        f_flags: get!(f_flags, u64, 48),
        f_swap: get!(f_swap, u64, 56),
        f_mapping: get!(f_mapping, u64, 64),
        f_index: get!(f_index, u64, 72),
        pid: get!(pid, u32, 80),
        tid: get!(tid, u32, 84),
        cpu: get!(cpu, u32, 88),
        nr: get!(nr, u32, 92),
        f_refcount: get!(f_refcount, i32, 96),
        f_mapcount: get!(f_mapcount, i32, 100),
        f_large_mapcount: get!(f_large_mapcount, i32, 104),
        f_entire_mapcount: get!(f_entire_mapcount, i32, 108),
        f_pincount: get!(f_pincount, i32, 112),
        f_nr_pages: get!(f_nr_pages, u32, 116),
        f_state: get!(f_state, u32, 120),
        arg: get!(arg, u32, 124),
        probe: get!(probe, u16, 128),
        kind: get!(kind, u8, 130),
        valid: get!(valid, u8, 131),
        comm,
        task_start: get!(task_start, u32, 148),
    }
}

/// A fixed-size window of a fixed-size buffer; the offsets above are
/// constants, so the bounds checks fold away.
#[inline(always)]
fn fixed<const N: usize>(b: &[u8; EVENT_SIZE], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

pub(crate) fn encode_lost(ts_ns: u64, probe: u16, total: u64) -> [u8; LOST_PAYLOAD_LEN] {
    let mut out = [0u8; LOST_PAYLOAD_LEN];
    out[0..8].copy_from_slice(&ts_ns.to_le_bytes());
    out[8..16].copy_from_slice(&total.to_le_bytes());
    out[16..18].copy_from_slice(&probe.to_le_bytes());
    out
}

pub(crate) fn decode_lost(b: &[u8]) -> Option<(u64, u16, u64)> {
    let b: &[u8; LOST_PAYLOAD_LEN] = b.try_into().ok()?;
    let ts = u64::from_le_bytes(b[0..8].try_into().ok()?);
    let total = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let probe = u16::from_le_bytes(b[16..18].try_into().ok()?);
    Some((ts, probe, total))
}

/// CRC of a record: over its framing and payload, so a flipped length or
/// type is caught as well as a flipped payload byte.
#[inline]
pub(crate) fn record_crc(frame_and_payload: &[u8]) -> u32 {
    // `crc32fast::hash` detects the CPU's features on every call, which
    // costs about a fifth of checking a 164-byte record; a hasher cloned
    // from one made once has them already.
    static PROTO: OnceLock<crc32fast::Hasher> = OnceLock::new();
    let mut h = PROTO.get_or_init(crc32fast::Hasher::new).clone();
    h.update(frame_and_payload);
    h.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"kswapd0");
        Event {
            ts_ns: 0x0102030405060708,
            folio: 0xffff_ea00_0012_3440,
            entry: 0x11,
            pte: 0x22,
            addr: 0x7fff_0000_1000,
            ret: -17,
            f_flags: 0x33,
            f_swap: 0x44,
            f_mapping: 0xffff_8880_0000_0001,
            f_index: 0x55,
            pid: 1,
            tid: 2,
            cpu: 3,
            nr: 4,
            f_refcount: -5,
            f_mapcount: 6,
            f_large_mapcount: 7,
            f_entire_mapcount: 8,
            f_pincount: 9,
            f_nr_pages: 10,
            f_state: 11,
            arg: 12,
            probe: 13,
            kind: 1,
            valid: 0xff,
            comm,
            task_start: 0xdead_beef,
        }
    }

    #[test]
    fn event_codec_round_trips() {
        let ev = sample();
        let mut buf = [0u8; EVENT_SIZE];
        encode_event(&ev, &mut buf);
        assert_eq!(decode_event(&buf), ev);
        let mut into = Event::default();
        decode_event_into(&buf, &mut into);
        assert_eq!(into, ev);
    }

    /// The documented offsets must be the in-memory `#[repr(C)]` layout, so
    /// a reader in C can `memcpy` into `struct event` on little-endian hosts.
    #[test]
    #[cfg(target_endian = "little")]
    fn offsets_match_repr_c_layout() {
        let ev = sample();
        let mut buf = [0u8; EVENT_SIZE];
        encode_event(&ev, &mut buf);
        // SAFETY: `Event` is #[repr(C)], 152 bytes, integers only, no padding,
        // so viewing it as bytes reads only initialised memory.
        let raw: [u8; EVENT_SIZE] = unsafe { std::mem::transmute(ev) };
        assert_eq!(buf, raw);
    }

    /// The portable field-by-field codec (used on big-endian hosts) must
    /// agree with the fast one byte for byte.
    #[test]
    fn portable_codec_matches_fast_codec() {
        let ev = sample();
        let (mut fast, mut portable) = ([0u8; EVENT_SIZE], [0u8; EVENT_SIZE]);
        encode_event(&ev, &mut fast);
        encode_fields(&ev, &mut portable);
        assert_eq!(fast, portable);
        assert_eq!(decode_fields(&fast), ev);
        let noise: [u8; EVENT_SIZE] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
        assert_eq!(decode_fields(&noise), decode_event(&noise));
    }

    #[test]
    fn record_crc_is_crc32() {
        let b: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for len in [0, 1, 15, 16, 127, 128, 160, 164, 1000] {
            assert_eq!(record_crc(&b[..len]), crc32fast::hash(&b[..len]));
        }
        // The IEEE CRC-32 check value.
        assert_eq!(record_crc(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn lost_codec_round_trips() {
        let b = encode_lost(5, 7, 9);
        assert_eq!(decode_lost(&b), Some((5, 7, 9)));
        assert_eq!(decode_lost(&b[..23]), None);
    }
}
