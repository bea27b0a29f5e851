//! Format v2 damaged and cut off: a file cut at any byte replays exactly
//! the blocks that are complete and says where it stopped; a flipped byte
//! stops the replay at the block it hit; a block that claims a huge size
//! is damage; none of it panics or hangs. (The allocation caps are checked
//! in `trace_alloc.rs`.)

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use detector::event::StreamItem;
use detector::trace::v2::{
    BlockHeader, BLOCK_FOOTER, BLOCK_HEADER_LEN, BLOCK_ITEMS, CODEC_STORED, CODEC_ZSTD,
    MAX_BLOCK_LEN, TRAILER_LEN,
};
use detector::trace::{
    EndState, TraceEnd, TraceError, TraceHeader, TraceReader, TraceWriter, MAGIC, PREAMBLE_LEN,
};
use detector_common::Event;
use proptest::prelude::*;

/// A v2 file of `blocks` blocks of `per` items each (flushed after every
/// `per`-th item), with where each block starts: `small()` has five
/// blocks of three items, too small to compress (stored), `compressed()`
/// two of 300 (zstd).
struct Small {
    bytes: Vec<u8>,
    items: Vec<StreamItem>,
    header_len: u64,
    /// Offset and first item of each item block.
    blocks: Vec<(u64, usize)>,
    footer: u64,
}

fn small() -> Small {
    let s = blocks(5, 3);
    assert!(
        s.codecs().iter().all(|&c| c == CODEC_STORED),
        "{:?}",
        s.codecs()
    );
    s
}

fn compressed() -> Small {
    let s = blocks(2, 300);
    assert!(s.codecs().iter().all(|&c| c == CODEC_ZSTD));
    s
}

impl Small {
    fn codecs(&self) -> Vec<u8> {
        self.blocks
            .iter()
            .map(|&(at, _)| self.bytes[at as usize + 5])
            .collect()
    }
}

fn blocks(blocks: usize, per: usize) -> Small {
    let mut items = Vec::new();
    for i in 0..(blocks * per) as u64 {
        items.push(if i % 5 == 4 {
            StreamItem::Lost {
                ts_ns: 10 + i,
                probe: 3,
                total: i,
            }
        } else {
            StreamItem::Event(Event {
                ts_ns: 10 + i,
                folio: 0xffff_ea00_0000_0000 + 0x40 * i,
                f_refcount: i as i32,
                probe: (i % 4) as u16,
                tid: 7 + (i % 2) as u32,
                comm: if i % 2 == 0 {
                    *b"kworker/0:1\0\0\0\0\0"
                } else {
                    *b"fio\0\0\0\0\0\0\0\0\0\0\0\0\0"
                },
                ..Event::default()
            })
        });
    }
    let mut bytes = Vec::new();
    let mut w = TraceWriter::new(&mut bytes, &TraceHeader::new("test")).unwrap();
    let header_len = w.bytes_written();
    let mut starts = Vec::new();
    for (k, it) in items.iter().enumerate() {
        if k % per == 0 {
            starts.push((w.bytes_written(), k));
        }
        w.write_item(it).unwrap();
        if k % per == per - 1 {
            w.flush().unwrap();
        }
    }
    let footer = w.bytes_written();
    w.finish(TraceEnd::at(100, "end")).unwrap();
    Small {
        bytes,
        items,
        header_len,
        blocks: starts,
        footer,
    }
}

fn replay(bytes: &[u8]) -> Result<(Vec<(u64, StreamItem)>, EndState), TraceError> {
    let mut r = TraceReader::from_reader(bytes)?;
    let items: Vec<_> = r.by_ref().collect();
    Ok((items, r.end_state().cloned().expect("ended")))
}

/// The block that holds byte `at`, as (its offset, its first item).
fn block_at(s: &Small, at: u64) -> (u64, usize) {
    *s.blocks.iter().rev().find(|b| b.0 <= at).expect("a block")
}

#[test]
fn a_cut_at_every_byte_replays_exactly_the_complete_blocks() {
    cut_everywhere(&small(), 1);
    cut_everywhere(&compressed(), 5);
}

fn cut_everywhere(s: &Small, step: usize) {
    for cut in (0..s.bytes.len()).step_by(step) {
        let res = replay(&s.bytes[..cut]);
        if (cut as u64) < s.header_len {
            match res {
                Err(TraceError::Empty { .. }) => assert_eq!(cut, 0),
                Err(TraceError::TruncatedHeader { have, .. }) => assert_eq!(have, cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
            continue;
        }
        let (got, end) = res.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // The first block not wholly before the cut, or the footer.
        let (stop, complete) = s
            .blocks
            .iter()
            .zip(s.blocks.iter().skip(1).map(|b| b.0).chain([s.footer]))
            .find(|(_, end)| *end > cut as u64)
            .map_or((s.footer, s.items.len()), |(b, _)| *b);
        assert_eq!(got.len(), complete, "cut at {cut}");
        for (k, (idx, it)) in got.iter().enumerate() {
            assert_eq!((*idx, it), (k as u64, &s.items[k]), "cut at {cut}");
        }
        assert_eq!(
            end,
            EndState::Truncated {
                byte_offset: stop,
                records_read: complete as u64
            },
            "cut at {cut}"
        );
        assert!(end
            .to_string()
            .contains(&format!("truncated at byte {stop}")));
    }
    let (got, end) = replay(&s.bytes).unwrap();
    assert_eq!(got.len(), s.items.len());
    assert_eq!(end.footer().map(|f| f.records), Some(s.items.len() as u64));
}

#[test]
fn a_flipped_bit_stops_the_replay_at_its_block() {
    flipped_bits(&small(), 1);
    flipped_bits(&compressed(), 7);
}

fn flipped_bits(s: &Small, step: usize) {
    let n = s.items.len();
    for at in (s.header_len..s.footer).step_by(step) {
        for bit in [0, 3, 7] {
            let mut bad = s.bytes.clone();
            bad[at as usize] ^= 1 << bit;
            let (got, end) = replay(&bad).unwrap();
            let (block, first) = block_at(s, at);
            assert_eq!(got.len(), first, "byte {at} bit {bit}");
            match end {
                EndState::Corrupt {
                    byte_offset,
                    record_index,
                    ..
                } => assert_eq!(
                    (byte_offset, record_index),
                    (block, first as u64),
                    "byte {at} bit {bit}"
                ),
                other => panic!("byte {at} bit {bit}: {other:?}"),
            }
        }
    }
    // Damage in the footer block or the trailer loses no item, only the
    // file's claim to be complete.
    for at in s.footer..s.bytes.len() as u64 {
        let mut bad = s.bytes.clone();
        bad[at as usize] ^= 0x10;
        let (got, end) = replay(&bad).unwrap();
        assert_eq!(got.len(), n, "byte {at}");
        assert!(
            matches!(end, EndState::Corrupt { record_index, .. } if record_index == n as u64),
            "byte {at}: {end:?}"
        );
    }
}

#[test]
fn data_after_the_trailer_is_reported() {
    let mut s = small();
    s.bytes.extend_from_slice(b"junk");
    let (got, end) = replay(&s.bytes).unwrap();
    assert_eq!(got.len(), s.items.len());
    assert!(
        matches!(&end, EndState::Corrupt { reason, .. } if reason.contains("after the end")),
        "{end:?}"
    );
}

/// The file cut after `keep` blocks, then a block header (with a good
/// checksum) from `h`, then `tail` bytes.
fn with_block(s: &Small, keep: usize, h: &BlockHeader, tail: &[u8]) -> Vec<u8> {
    let at = s.blocks.get(keep).map_or(s.footer, |b| b.0) as usize;
    let mut out = s.bytes[..at].to_vec();
    out.extend_from_slice(&h.encode());
    out.extend_from_slice(tail);
    out
}

fn items_block(stored_len: u32, raw_len: u32, items: u32, first_index: u64) -> BlockHeader {
    BlockHeader {
        kind: BLOCK_ITEMS,
        codec: CODEC_ZSTD,
        stored_len,
        raw_len,
        items,
        payload_crc: 0,
        first_index,
        first_ts: 0,
    }
}

#[test]
fn a_block_claiming_a_huge_size_is_damage_not_a_wait() {
    let s = small();
    for (stored, raw, items) in [
        (u32::MAX, 100, 1),
        (100, u32::MAX, 1),
        (MAX_BLOCK_LEN as u32 + 1, 100, 1),
        (100, MAX_BLOCK_LEN as u32 + 1, 1),
        (100, 100, u32::MAX),
        (100, 1000, 501),
    ] {
        let bad = with_block(&s, 2, &items_block(stored, raw, items, 6), &[0x5a; 64]);
        let (got, end) = replay(&bad).unwrap();
        assert_eq!(got.len(), 6, "{stored} {raw} {items}");
        assert!(
            matches!(end, EndState::Corrupt { byte_offset, record_index: 6, .. }
                if byte_offset == s.blocks[2].0),
            "{stored} {raw} {items}: {end:?}"
        );
    }
    // Just under the cap, with a few bytes behind it: a block cut short.
    let h = items_block(MAX_BLOCK_LEN as u32, MAX_BLOCK_LEN as u32, 3, 6);
    let (got, end) = replay(&with_block(&s, 2, &h, &[0x5a; 64])).unwrap();
    assert_eq!(got.len(), 6);
    assert!(
        matches!(
            end,
            EndState::Truncated {
                records_read: 6,
                ..
            }
        ),
        "{end:?}"
    );
}

/// Builds the damaged block `payload` as block 2 of the small file, with
/// good checksums, so that what is inside it is what gets tested.
fn with_payload(s: &Small, codec: u8, raw_len: u32, items: u32, payload: &[u8]) -> Vec<u8> {
    let h = BlockHeader {
        kind: BLOCK_ITEMS,
        codec,
        stored_len: payload.len() as u32,
        raw_len,
        items,
        payload_crc: crc32fast::hash(payload),
        first_index: 6,
        first_ts: 0,
    };
    with_block(s, 2, &h, payload)
}

#[test]
fn payloads_that_lie_about_their_contents_are_damage() {
    let s = small();
    let cases: Vec<(&str, u8, u32, u32, Vec<u8>)> = vec![
        // zstd data that is not zstd.
        ("garbage", CODEC_ZSTD, 64, 2, vec![0xab; 40]),
        // A real frame that decompresses to more than the header says.
        (
            "bomb",
            CODEC_ZSTD,
            1000,
            2,
            zstd::bulk::compress(&[0u8; 1 << 20], 3).unwrap(),
        ),
        // ... and to less.
        (
            "short",
            CODEC_ZSTD,
            1000,
            2,
            zstd::bulk::compress(&[0u8; 10], 3).unwrap(),
        ),
        // Items: an unknown code, an undefined shape, an undefined task,
        // fewer items than claimed, bytes after the last one.
        ("unknown code", CODEC_STORED, 2, 1, vec![0x07, 0]),
        ("undefined shape", CODEC_STORED, 3, 1, vec![0x10, 0, 0]),
        (
            "undefined task",
            CODEC_STORED,
            8,
            1,
            vec![0x02, 1, 0, 0, 0x10, 0, 1, 2],
        ),
        ("too few items", CODEC_STORED, 4, 2, vec![0x00, 0, 1, 1]),
        (
            "bytes left over",
            CODEC_STORED,
            6,
            1,
            vec![0x00, 0, 1, 1, 9, 9],
        ),
        (
            "comm longer than 16",
            CODEC_STORED,
            6,
            1,
            vec![0x01, 1, 1, 0, 17, 0],
        ),
    ];
    for (what, codec, raw, items, payload) in cases {
        let bad = with_payload(&s, codec, raw, items, &payload);
        let (got, end) = replay(&bad).unwrap();
        assert!(
            got.len() >= 6 && got.len() < 6 + items as usize + 1,
            "{what}"
        );
        assert_eq!(&got[..6], &replay(&s.bytes).unwrap().0[..6], "{what}");
        assert!(
            matches!(&end, EndState::Corrupt { byte_offset, .. } if *byte_offset == s.blocks[2].0),
            "{what}: {end:?}"
        );
    }
}

#[test]
fn blocks_out_of_order_are_damage() {
    let s = small();
    // Block 3 where block 2 belongs: its first item is #9, not #6.
    let (b2, b3, b4) = (
        s.blocks[2].0 as usize,
        s.blocks[3].0 as usize,
        s.blocks[4].0 as usize,
    );
    let mut bad = s.bytes[..b2].to_vec();
    bad.extend_from_slice(&s.bytes[b3..b4]);
    let (got, end) = replay(&bad).unwrap();
    assert_eq!(got.len(), 6);
    assert!(
        matches!(&end, EndState::Corrupt { reason, .. } if reason.contains("first item is #9")),
        "{end:?}"
    );
}

/// Builds a file by hand from `docs/trace-format.md`: the v1 preamble and
/// header with version 2, one stored item block, the footer block with
/// its index, the trailer.
#[test]
fn a_hand_written_v2_file_following_the_docs_is_read() {
    let json = r#"{"format_version":2,"abi_version":2,"event_size":152,"origin":"hand"}"#;
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&2u32.to_le_bytes());
    v.extend_from_slice(&(json.len() as u32).to_le_bytes());
    v.extend_from_slice(json.as_bytes());
    let crc = crc32fast::hash(&v[8..]);
    v.extend_from_slice(&crc.to_le_bytes());

    // Items: shape 0 = (probe 6, kind 1, valid 0x14); task 0 = (pid 100,
    // tid 101, start 5, "fio"); an event of both at ts 1000 with entry
    // 0x1f3 and ret -17; a lost total (probe 3, total 4) 10 ns later; a
    // second event of the same shape, task and entry 2 ns after that, ret
    // back to 0.
    let mut items = vec![0x02, 6, 1, 0x14];
    items.extend_from_slice(&[0x01, 100, 101, 5, 3, b'f', b'i', b'o']);
    // code, ts delta 0, mask: task (bit 0, value 0: not set), entry (bit
    // 5) and ret (bit 6); entry zigzag(0x1f3) = 0x3e6, ret zigzag(-17)=33.
    items.extend_from_slice(&[0x10, 0, 0x60, 0xe6, 0x07, 33]);
    items.extend_from_slice(&[0x00, 20, 3, 4]);
    // ts +2 (zigzag 4); only ret differs from the shape's last event:
    // 0 - (-17) = 17, zigzag 34.
    items.extend_from_slice(&[0x10, 4, 0x40, 34]);
    let block_at = v.len() as u64;
    let mut h = [0u8; BLOCK_HEADER_LEN];
    h[..4].copy_from_slice(&[0x89, b'B', b'L', b'K']);
    h[4] = 1; // items
    h[5] = 0; // stored
    h[8..12].copy_from_slice(&(items.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(items.len() as u32).to_le_bytes());
    h[16..20].copy_from_slice(&3u32.to_le_bytes());
    h[20..24].copy_from_slice(&crc32fast::hash(&items).to_le_bytes());
    h[24..32].copy_from_slice(&0u64.to_le_bytes());
    h[32..40].copy_from_slice(&1000u64.to_le_bytes());
    let hcrc = crc32fast::hash(&h[..40]);
    h[40..44].copy_from_slice(&hcrc.to_le_bytes());
    v.extend_from_slice(&h);
    v.extend_from_slice(&items);

    let footer_json = br#"{"records":3,"events":2,"stop_reason":"by hand"}"#;
    let mut f = (footer_json.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(footer_json);
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&block_at.to_le_bytes());
    f.extend_from_slice(&0u64.to_le_bytes()); // first item
    f.extend_from_slice(&1000u64.to_le_bytes()); // first ts
    f.extend_from_slice(&3u32.to_le_bytes()); // items
    let footer_at = v.len() as u64;
    let mut h = [0u8; BLOCK_HEADER_LEN];
    h[..4].copy_from_slice(&[0x89, b'B', b'L', b'K']);
    h[4] = 2; // footer
    h[8..12].copy_from_slice(&(f.len() as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(f.len() as u32).to_le_bytes());
    h[20..24].copy_from_slice(&crc32fast::hash(&f).to_le_bytes());
    h[24..32].copy_from_slice(&3u64.to_le_bytes());
    let hcrc = crc32fast::hash(&h[..40]);
    h[40..44].copy_from_slice(&hcrc.to_le_bytes());
    v.extend_from_slice(&h);
    v.extend_from_slice(&f);
    v.extend_from_slice(&footer_at.to_le_bytes());
    v.extend_from_slice(b"\x89DTREND\n");

    let (got, end) = replay(&v).unwrap();
    let mut comm = [0u8; 16];
    comm[..3].copy_from_slice(b"fio");
    let ev = Event {
        ts_ns: 1000,
        entry: 0x1f3,
        ret: -17,
        pid: 100,
        tid: 101,
        task_start: 5,
        probe: 6,
        kind: 1,
        valid: 0x14,
        comm,
        ..Event::default()
    };
    assert_eq!(
        got,
        vec![
            (0, StreamItem::Event(ev)),
            (
                1,
                StreamItem::Lost {
                    ts_ns: 1010,
                    probe: 3,
                    total: 4
                }
            ),
            (
                2,
                StreamItem::Event(Event {
                    ts_ns: 1012,
                    ret: 0,
                    ..ev
                })
            ),
        ]
    );
    let footer = end.footer().expect("complete");
    assert_eq!(footer.stop_reason, "by hand");
    assert_eq!(
        v.len() as u64,
        footer_at + (BLOCK_HEADER_LEN + f.len() + TRAILER_LEN) as u64
    );
    assert_eq!(BLOCK_FOOTER, 2);
}

#[test]
fn a_damaged_v2_header_is_an_error() {
    let s = small();
    for byte in PREAMBLE_LEN as u64..s.header_len {
        let mut bad = s.bytes.clone();
        bad[byte as usize] ^= 0x01;
        assert!(
            matches!(replay(&bad), Err(TraceError::CorruptHeader { .. })),
            "byte {byte}"
        );
    }
}

/// Recomputes every block's checksums in place, walking blocks by their
/// (possibly damaged) lengths, so that damage reaches the decoders instead
/// of being caught by a checksum.
fn fix_checksums(b: &mut [u8], mut at: usize) {
    while at + BLOCK_HEADER_LEN <= b.len() {
        let stored = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        let end = (at + BLOCK_HEADER_LEN).saturating_add(stored).min(b.len());
        let crc = crc32fast::hash(&b[at + BLOCK_HEADER_LEN..end]);
        b[at + 20..at + 24].copy_from_slice(&crc.to_le_bytes());
        let hcrc = crc32fast::hash(&b[at..at + 40]);
        b[at + 40..at + 44].copy_from_slice(&hcrc.to_le_bytes());
        at = end;
    }
}

/// A v2 file whose blocks are stored (a few items each do not compress),
/// so edits land in the item codec.
fn stored_blocks() -> (Vec<u8>, u64, usize) {
    let s = small();
    (s.bytes, s.header_len, s.items.len())
}

#[test]
fn a_flush_never_leaves_an_empty_block() {
    let mut bytes = Vec::new();
    let mut w = TraceWriter::new(&mut bytes, &TraceHeader::new("t")).unwrap();
    let before = w.bytes_written();
    w.flush().unwrap();
    w.flush().unwrap();
    assert_eq!(w.bytes_written(), before);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_damage_to_a_v2_file_never_panics_and_yields_a_prefix(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let s = small();
        let mut buf = s.bytes.clone();
        for (at, val) in edits {
            let i = at.index(buf.len());
            buf[i] = val;
        }
        let len = cut.index(buf.len() + 1);
        if let Ok((got, _)) = replay(&buf[..len]) {
            prop_assert!(got.len() <= s.items.len());
            for (k, (i, it)) in got.iter().enumerate() {
                prop_assert_eq!(*i, k as u64);
                prop_assert_eq!(it, &s.items[k]);
            }
        }
    }

    #[test]
    fn damage_behind_good_checksums_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut buf, header_len, n) = stored_blocks();
        for (at, val) in edits {
            let i = header_len as usize + at.index(buf.len() - header_len as usize);
            buf[i] = val;
        }
        fix_checksums(&mut buf, header_len as usize);
        let len = cut.index(buf.len() + 1);
        if let Ok((got, _)) = replay(&buf[..len]) {
            // Items are decoded one by one: a block whose later items are
            // damaged may hand over its earlier ones first, but never more
            // than the file could hold.
            prop_assert!(got.len() <= n + MAX_BLOCK_LEN);
        }
    }

    #[test]
    fn random_blocks_after_a_valid_v2_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let s = small();
        let mut v = s.bytes[..s.header_len as usize].to_vec();
        v.extend_from_slice(&tail);
        fix_checksums(&mut v, s.header_len as usize);
        let _ = replay(&v);
    }
}
