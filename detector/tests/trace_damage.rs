//! Damaged, cut-off and foreign files: every one must produce a clear error
//! or replay exactly the intact records, and none may panic. Format v1
//! here (`trace_v2_damage.rs` has v2's); the header checks are shared.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use detector::event::StreamItem;
use detector::trace::{
    EndState, TraceEnd, TraceError, TraceFormat, TraceHeader, TraceReader, TraceWriter,
    FORMAT_VERSION, MAGIC, PREAMBLE_LEN,
};
use detector_common::Event;
use proptest::prelude::*;

fn small_trace() -> (Vec<u8>, Vec<StreamItem>, Vec<u64>, u64) {
    let mut items = Vec::new();
    for i in 0..6u64 {
        items.push(StreamItem::Event(Event {
            ts_ns: 10 + i,
            folio: 0x1000 * i,
            probe: i as u16,
            comm: *b"kworker/0:1\0\0\0\0\0",
            ..Event::default()
        }));
        if i == 2 || i == 4 {
            items.push(StreamItem::Lost {
                ts_ns: 10 + i,
                probe: 3,
                total: i,
            });
        }
    }
    let mut buf = Vec::new();
    let mut w = TraceWriter::with_format(
        &mut buf,
        &TraceHeader::new("test"),
        "test".into(),
        TraceFormat::V1,
    )
    .unwrap();
    let header_len = w.bytes_written();
    // Start offset of each record, plus the footer's.
    let mut starts = Vec::new();
    for it in &items {
        starts.push(w.bytes_written());
        w.write_item(it).unwrap();
    }
    starts.push(w.bytes_written());
    w.finish(TraceEnd::at(100, "end")).unwrap();
    (buf, items, starts, header_len)
}

fn replay(bytes: &[u8]) -> Result<(Vec<(u64, StreamItem)>, EndState), TraceError> {
    let mut r = TraceReader::from_reader(bytes)?;
    let items: Vec<_> = r.by_ref().collect();
    Ok((
        items,
        r.end_state().cloned().expect("end state after iteration"),
    ))
}

#[test]
fn a_cut_at_every_byte_replays_exactly_the_complete_records() {
    let (buf, items, starts, header_len) = small_trace();
    for cut in 0..buf.len() {
        let res = replay(&buf[..cut]);
        if (cut as u64) < header_len {
            match res {
                Err(TraceError::Empty { .. }) => assert_eq!(cut, 0),
                Err(TraceError::TruncatedHeader { have, .. }) => assert_eq!(have, cut as u64),
                other => panic!("cut at {cut}: {other:?}"),
            }
            continue;
        }
        let (got, end) = res.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        // Records that end at or before the cut are complete.
        let complete = starts
            .iter()
            .skip(1)
            .take_while(|&&s| s <= cut as u64)
            .count();
        assert_eq!(got.len(), complete, "cut at {cut}");
        for (k, (idx, it)) in got.iter().enumerate() {
            assert_eq!((*idx, it), (k as u64, &items[k]));
        }
        assert_eq!(
            end,
            EndState::Truncated {
                byte_offset: starts[complete],
                records_read: complete as u64
            },
            "cut at {cut}"
        );
    }
    let (got, end) = replay(&buf).unwrap();
    assert_eq!(got.len(), items.len());
    assert!(end.is_complete());
}

#[test]
fn a_flipped_bit_in_a_record_is_reported_at_that_record() {
    let (buf, items, starts, _) = small_trace();
    for rec in 0..items.len() {
        for byte in starts[rec]..starts[rec + 1] {
            for bit in [0, 3, 7] {
                let mut bad = buf.clone();
                bad[byte as usize] ^= 1 << bit;
                let (got, end) = replay(&bad).unwrap();
                assert_eq!(got.len(), rec, "byte {byte} bit {bit}");
                match end {
                    EndState::Corrupt {
                        byte_offset,
                        record_index,
                        ..
                    } => {
                        assert_eq!((byte_offset, record_index), (starts[rec], rec as u64));
                    }
                    other => panic!("byte {byte} bit {bit}: {other:?}"),
                }
            }
        }
    }
    // Damage in the footer loses nothing but the footer.
    for byte in starts[items.len()]..buf.len() as u64 {
        let mut bad = buf.clone();
        bad[byte as usize] ^= 0x10;
        let (got, end) = replay(&bad).unwrap();
        assert_eq!(got.len(), items.len());
        assert!(!end.is_complete(), "byte {byte}");
    }
}

#[test]
fn data_after_the_footer_is_reported() {
    let (mut buf, items, _, _) = small_trace();
    buf.extend_from_slice(b"junk");
    let (got, end) = replay(&buf).unwrap();
    assert_eq!(got.len(), items.len());
    assert!(matches!(end, EndState::Corrupt { reason, .. } if reason.contains("after the footer")));
}

#[test]
fn a_damaged_header_is_an_error() {
    let (buf, _, _, header_len) = small_trace();
    for byte in PREAMBLE_LEN as u64..header_len {
        let mut bad = buf.clone();
        bad[byte as usize] ^= 0x01;
        assert!(
            matches!(replay(&bad), Err(TraceError::CorruptHeader { .. })),
            "byte {byte}"
        );
    }
}

fn open_file(bytes: &[u8]) -> TraceError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.bin");
    std::fs::write(&path, bytes).unwrap();
    match TraceReader::open(&path) {
        Ok(_) => panic!("{bytes:?} was accepted"),
        Err(e) => e,
    }
}

#[test]
fn wrong_files_get_one_sentence_errors() {
    let e = open_file(b"");
    assert!(matches!(e, TraceError::Empty { .. }));
    assert!(e.to_string().contains("x.bin is empty"), "{e}");

    let e = open_file(&[0x00, 0xff, 0x13, 0x37, 0x99, 0x42, 0x01, 0x02, 0x03]);
    assert!(matches!(e, TraceError::BadMagic { .. }));
    assert_eq!(
        e.to_string().split_once("x.bin ").unwrap().1,
        "is not a detector trace (bad magic); was it written by `detector record`?"
    );

    let e = open_file(b"PERFILE2\x68\x00\x00\x00");
    assert!(e.to_string().contains("perf.data"), "{e}");
    let e = open_file(&[0x1f, 0x8b, 0x08, 0x00]);
    assert!(e.to_string().contains("gzip"), "{e}");
    let e = open_file(b"{\"index\":0,\"type\":\"event\"}\n");
    assert!(e.to_string().contains("JSON"), "{e}");
    let e = open_file(b"[workspace]\nmembers = []\n");
    assert!(e.to_string().contains("text file"), "{e}");
    let e = open_file(b"swap_cache_lookup entry=1:0x10\n");
    assert!(e.to_string().contains("text file"), "{e}");

    let e = open_file(&MAGIC[..5]);
    assert!(matches!(e, TraceError::TruncatedHeader { .. }), "{e}");

    let e = TraceReader::open("/nonexistent/dir/x.trace").err().unwrap();
    assert!(
        e.to_string()
            .starts_with("cannot open /nonexistent/dir/x.trace"),
        "{e}"
    );

    for e in [open_file(b""), open_file(b"hello"), open_file(&MAGIC[..5])] {
        let msg = e.to_string();
        assert!(!msg.contains('\n') && msg.len() < 200, "{msg}");
    }
}

#[test]
fn newer_and_impossible_versions_are_refused() {
    let (buf, _, _, _) = small_trace();
    let mut newer = buf.clone();
    newer[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = open_file(&newer);
    assert!(
        matches!(e, TraceError::NewerVersion { found, supported, .. }
            if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION),
        "{e}"
    );
    assert!(e.to_string().contains("newer detector"), "{e}");

    let mut zero = buf.clone();
    zero[8..12].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(open_file(&zero), TraceError::BadVersion { .. }));
}

/// Builds a file by hand from the documented layout: preamble, JSON, CRC32
/// over version + length + JSON.
fn hand_made(json: &str) -> Vec<u8> {
    let mut v = MAGIC.to_vec();
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&(json.len() as u32).to_le_bytes());
    v.extend_from_slice(json.as_bytes());
    let crc = crc32fast::hash(&v[8..]);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

#[test]
fn a_hand_written_file_following_the_docs_is_read() {
    let mut v =
        hand_made(r#"{"format_version":1,"abi_version":1,"event_size":152,"origin":"hand"}"#);
    // One lost record: length 24, type 2, flags 0, payload, CRC32 of all that.
    let start = v.len();
    v.extend_from_slice(&24u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&77u64.to_le_bytes()); // ts_ns
    v.extend_from_slice(&5u64.to_le_bytes()); // total
    v.extend_from_slice(&9u16.to_le_bytes()); // probe
    v.extend_from_slice(&[0; 6]);
    let crc = crc32fast::hash(&v[start..]);
    v.extend_from_slice(&crc.to_le_bytes());
    // A record of a type this reader does not know is skipped.
    let start = v.len();
    v.extend_from_slice(&3u32.to_le_bytes());
    v.extend_from_slice(&0x4000u16.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(b"abc");
    let crc = crc32fast::hash(&v[start..]);
    v.extend_from_slice(&crc.to_le_bytes());

    let (got, end) = replay(&v).unwrap();
    assert_eq!(
        got,
        vec![(
            0,
            StreamItem::Lost {
                ts_ns: 77,
                probe: 9,
                total: 5
            }
        )]
    );
    assert_eq!(
        end,
        EndState::Truncated {
            byte_offset: v.len() as u64,
            records_read: 2
        }
    );
}

#[test]
fn another_event_abi_is_refused() {
    // A newer ABI, and a known one with another event size.
    for (abi, size) in [(detector_common::ABI_VERSION + 1, 152), (2, 160), (0, 152)] {
        let v = hand_made(&format!(
            r#"{{"format_version":1,"abi_version":{abi},"event_size":{size}}}"#
        ));
        let e = open_file(&v);
        assert!(
            matches!(e, TraceError::AbiMismatch { found, size: s, .. } if found == abi && s == size),
            "{e}"
        );
    }
    let v = hand_made("not json");
    assert!(matches!(open_file(&v), TraceError::CorruptHeader { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = replay(&bytes);
    }

    #[test]
    fn random_bytes_after_the_magic_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
        version in 0u32..3,
        len in prop_oneof![0u32..4096, any::<u32>()],
    ) {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&len.to_le_bytes());
        v.extend_from_slice(&tail);
        let _ = replay(&v);
    }

    #[test]
    fn random_records_after_a_valid_header_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut v = hand_made(r#"{"origin":"fuzz"}"#);
        v.extend_from_slice(&tail);
        let (_, end) = replay(&v).unwrap();
        prop_assert!(!end.is_complete() || tail.is_empty() || end.footer().is_some());
    }

    #[test]
    fn random_damage_to_a_valid_file_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let (mut buf, items, _, _) = small_trace();
        for (at, val) in edits {
            let i = at.index(buf.len());
            buf[i] = val;
        }
        let len = cut.index(buf.len() + 1);
        if let Ok((got, _)) = replay(&buf[..len]) {
            prop_assert!(got.len() <= items.len() + 1);
        }
    }
}
