//! Format v2: the same preamble and header as v1, then blocks of
//! compressed items, a footer block with the counts and a block index, and
//! a fixed-size trailer pointing at the footer block so a reader can seek.
//! Byte by byte in `docs/trace-format.md`.

pub(crate) mod items;
pub(crate) mod varint;

use super::format::record_crc;

/// Blocks hold at most this many bytes, stored or decoded, whatever kind
/// they are: a reader refuses a block header claiming more, so no length
/// field can make it allocate beyond this.
pub const MAX_BLOCK_LEN: usize = 4 << 20;
/// A writer closes an item block once its decoded items reach this size
/// (or when flushed): about 4000 events of a typical mix.
pub(crate) const BLOCK_TARGET: usize = 128 << 10;
/// Bytes of a block header.
pub const BLOCK_HEADER_LEN: usize = 44;
/// First 4 bytes of every block.
pub const BLOCK_MAGIC: [u8; 4] = [0x89, b'B', b'L', b'K'];
/// Last 8 bytes of a complete v2 file.
pub const TRAILER_MAGIC: [u8; 8] = [0x89, b'D', b'T', b'R', b'E', b'N', b'D', b'\n'];
/// Footer block offset (u64) and [`TRAILER_MAGIC`].
pub const TRAILER_LEN: usize = 16;

/// Block kinds.
pub const BLOCK_ITEMS: u8 = 1;
pub const BLOCK_FOOTER: u8 = 2;
/// How a block's payload is stored.
pub const CODEC_STORED: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;

/// One entry of the footer's block index.
pub const INDEX_ENTRY_LEN: usize = 28;
/// Index entries a footer may hold: what fits in one block beside the
/// footer JSON. A file with more blocks has no index (readers scan).
pub(crate) const MAX_INDEX_ENTRIES: usize = (MAX_BLOCK_LEN - (1 << 20)) / INDEX_ENTRY_LEN;

/// zstd level of the blocks. Measured on a real 6.12 capture (523 k
/// events): level 3 gives 5.84 bytes an event for about 600 instructions an
/// event of compression, level 1 gives 6.31 for about 430, level -1 6.72
/// for 390. Level 1: most of the ratio at a recorder's lower cost.
pub(crate) const ZSTD_LEVEL: i32 = 1;
/// Largest window a reader accepts (2^22 = [`MAX_BLOCK_LEN`]): a frame
/// asking for more is refused rather than allocated.
pub(crate) const ZSTD_WINDOW_LOG_MAX: u32 = 22;

/// The fixed part in front of every block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockHeader {
    pub kind: u8,
    pub codec: u8,
    /// Payload bytes in the file, after this header.
    pub stored_len: u32,
    /// Payload bytes once decoded.
    pub raw_len: u32,
    /// Stream items in the block (0 for a footer).
    pub items: u32,
    /// CRC32 of the stored payload.
    pub payload_crc: u32,
    /// Stream index of the block's first item (for a footer: the number
    /// of items in the file).
    pub first_index: u64,
    /// Time of the block's first item, the base of its time deltas.
    pub first_ts: u64,
}

impl BlockHeader {
    pub fn encode(&self) -> [u8; BLOCK_HEADER_LEN] {
        let mut b = [0u8; BLOCK_HEADER_LEN];
        b[0..4].copy_from_slice(&BLOCK_MAGIC);
        b[4] = self.kind;
        b[5] = self.codec;
        b[8..12].copy_from_slice(&self.stored_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.raw_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.items.to_le_bytes());
        b[20..24].copy_from_slice(&self.payload_crc.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_ts.to_le_bytes());
        let crc = record_crc(&b[..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks a block header: magic, checksum, and the caps on
    /// its lengths (so that damage to a length reads as damage, never as a
    /// huge block to wait for).
    pub fn decode(b: &[u8; BLOCK_HEADER_LEN]) -> Result<Self, String> {
        if b[0..4] != BLOCK_MAGIC {
            return Err("no block starts here (bad block magic)".to_string());
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        if record_crc(&b[..40]) != u32_at(40) {
            return Err("block header checksum mismatch".to_string());
        }
        let h = BlockHeader {
            kind: b[4],
            codec: b[5],
            stored_len: u32_at(8),
            raw_len: u32_at(12),
            items: u32_at(16),
            payload_crc: u32_at(20),
            first_index: u64_at(24),
            first_ts: u64_at(32),
        };
        for (what, len) in [("stored", h.stored_len), ("decoded", h.raw_len)] {
            if len as usize > MAX_BLOCK_LEN {
                return Err(format!(
                    "block claims {len} {what} bytes, more than the {MAX_BLOCK_LEN}-byte cap"
                ));
            }
        }
        match h.codec {
            CODEC_STORED if h.stored_len != h.raw_len => {
                return Err("stored block whose two lengths differ".to_string())
            }
            CODEC_STORED | CODEC_ZSTD => {}
            c => return Err(format!("unknown block codec {c}")),
        }
        // Every item takes at least two bytes (its code and its time).
        if u64::from(h.items) * 2 > u64::from(h.raw_len) {
            return Err(format!(
                "block claims {} items in {} bytes",
                h.items, h.raw_len
            ));
        }
        Ok(h)
    }
}

/// One block of the footer's index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockEntry {
    /// File offset of the block header.
    pub offset: u64,
    pub first_index: u64,
    pub first_ts: u64,
    pub items: u32,
}

impl BlockEntry {
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.first_index.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_ts.to_le_bytes());
        b[24..28].copy_from_slice(&self.items.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        let b: &[u8; INDEX_ENTRY_LEN] = b.try_into().ok()?;
        let u64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Some(BlockEntry {
            offset: u64_at(0),
            first_index: u64_at(8),
            first_ts: u64_at(16),
            items: u32::from_le_bytes([b[24], b[25], b[26], b[27]]),
        })
    }
}

/// The trailer of a complete file: where its footer block starts.
pub fn encode_trailer(footer_offset: u64) -> [u8; TRAILER_LEN] {
    let mut b = [0u8; TRAILER_LEN];
    b[..8].copy_from_slice(&footer_offset.to_le_bytes());
    b[8..].copy_from_slice(&TRAILER_MAGIC);
    b
}

/// The footer block offset a trailer holds, if it is one.
pub fn decode_trailer(b: &[u8; TRAILER_LEN]) -> Option<u64> {
    if b[8..] != TRAILER_MAGIC {
        return None;
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    Some(u64::from_le_bytes(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_header_round_trips_and_checks() {
        let h = BlockHeader {
            kind: BLOCK_ITEMS,
            codec: CODEC_ZSTD,
            stored_len: 1000,
            raw_len: 5000,
            items: 300,
            payload_crc: 0xdead_beef,
            first_index: 1 << 40,
            first_ts: 123_456_789,
        };
        let b = h.encode();
        assert_eq!(BlockHeader::decode(&b), Ok(h));
        for i in 0..BLOCK_HEADER_LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(BlockHeader::decode(&bad).is_err(), "flip at {i}");
        }
        let huge = BlockHeader {
            raw_len: MAX_BLOCK_LEN as u32 + 1,
            ..h
        };
        assert!(BlockHeader::decode(&huge.encode()).is_err());
        let crowded = BlockHeader { items: 2501, ..h };
        assert!(BlockHeader::decode(&crowded.encode()).is_err());
    }

    #[test]
    fn index_entries_and_trailer_round_trip() {
        let e = BlockEntry {
            offset: 99,
            first_index: 1 << 33,
            first_ts: 7,
            items: 4000,
        };
        assert_eq!(BlockEntry::decode(&e.encode()), Some(e));
        assert_eq!(decode_trailer(&encode_trailer(12345)), Some(12345));
        let mut t = encode_trailer(1);
        t[15] = 0;
        assert_eq!(decode_trailer(&t), None);
    }
}
