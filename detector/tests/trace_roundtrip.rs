//! Writing and reading back trace files.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use detector::event::StreamItem;
use detector::plan::{AttachMode, PlanEntry};
use detector::trace::{
    read_all, EndState, TraceEnd, TraceFormat, TraceHeader, TraceReader, TraceWriter,
    FORMAT_VERSION,
};
use detector_common::{Event, Layout, ProbeId};

fn event(i: u64) -> Event {
    let mut comm = [0u8; 16];
    comm[..4].copy_from_slice(b"task");
    Event {
        ts_ns: 1_000_000 + i * 7,
        folio: 0xffff_ea00_0000_0000 + (i << 6),
        entry: i * 3,
        pte: i.rotate_left(17),
        addr: 0x7f00_0000_0000 + (i << 12),
        ret: -(i as i64 % 20),
        f_flags: i ^ 0x5555,
        f_swap: i * 11,
        f_mapping: 0xffff_8880_0000_0001 | (i << 4),
        f_index: i,
        pid: (i % 1000) as u32,
        tid: (i % 977) as u32,
        cpu: (i % 8) as u32,
        nr: 1 + (i % 4) as u32,
        f_refcount: (i % 1030) as i32,
        f_mapcount: (i % 3) as i32,
        f_large_mapcount: 0,
        f_entire_mapcount: 0,
        f_pincount: (i % 2) as i32,
        f_nr_pages: 1,
        f_state: (i % 2048) as u32,
        arg: i as u32,
        probe: ProbeId::ALL[(i as usize) % ProbeId::ALL.len()] as u16,
        kind: (i % 3) as u8,
        valid: (i % 256) as u8,
        comm,
        task_start: 0,
    }
}

fn header() -> TraceHeader {
    let mut layout = Layout::EMPTY;
    layout.folio_swap = 40;
    let mut h = TraceHeader::for_this_host(
        "test",
        &layout,
        vec![PlanEntry {
            probe: "swap_cache_lookup".into(),
            target: "swap_cache_get_folio".into(),
            mode: AttachMode::Fentry,
            entry: true,
            exit: true,
            note: String::new(),
            filter: String::new(),
        }],
        1 << 24,
    );
    h.start_monotonic_ns = 1_000_000;
    h
}

fn stream(n: u64) -> Vec<StreamItem> {
    let mut items = Vec::new();
    for i in 0..n {
        items.push(StreamItem::Event(event(i)));
        if i % 1000 == 999 {
            items.push(StreamItem::Lost {
                ts_ns: 1_000_000 + i * 7,
                probe: (i % 21) as u16,
                total: i / 1000,
            });
        }
    }
    items
}

#[test]
fn many_events_and_lost_records_round_trip_through_a_file() {
    for format in [TraceFormat::V1, TraceFormat::V2] {
        many_events_and_lost_records_round_trip_through_a_file_in(format);
    }
}

fn many_events_and_lost_records_round_trip_through_a_file_in(format: TraceFormat) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.trace");
    let items = stream(50_000);
    let h = header();
    let mut w = TraceWriter::create_format(&path, &h, format).unwrap();
    for it in &items {
        w.write_item(it).unwrap();
    }
    let summary = w.finish(TraceEnd::at(9_000_000, "duration")).unwrap();
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(summary.totals.events, 50_000);
    assert_eq!(summary.totals.records, items.len() as u64);

    let (rh, back, end) = read_all(&path).unwrap();
    assert_eq!(
        rh,
        TraceHeader {
            format_version: format.version(),
            ..h
        }
    );
    assert!(rh.format_version <= FORMAT_VERSION);
    assert_eq!(rh.layout["folio_swap"], 40);
    assert_eq!(rh.layout().folio_swap, 40);
    assert_eq!(back, items);
    let EndState::Complete { footer } = end else {
        panic!("not complete: {end:?}")
    };
    assert_eq!(footer, summary.totals);
    assert_eq!(footer.stop_reason, "duration");
    assert_eq!(
        footer.lost_total,
        footer.lost_per_probe.values().sum::<u64>()
    );
    let per_probe: u64 = footer.events_per_probe.values().sum();
    assert_eq!(per_probe, 50_000);
    assert_eq!(footer.first_event_ns, 1_000_000);
    assert_eq!(footer.last_event_ns, 1_000_000 + 49_999 * 7);
}

#[test]
fn record_indices_count_every_record() {
    for format in [TraceFormat::V1, TraceFormat::V2] {
        record_indices_count_every_record_in(format);
    }
}

fn record_indices_count_every_record_in(format: TraceFormat) {
    let mut buf = Vec::new();
    let items = stream(3000);
    let mut w = TraceWriter::with_format(&mut buf, &header(), "t".into(), format).unwrap();
    for it in &items {
        w.write_item(it).unwrap();
    }
    w.finish(TraceEnd::at(0, "end")).unwrap();
    let mut r = TraceReader::from_reader(buf.as_slice()).unwrap();
    assert!(r.end_state().is_none());
    let got: Vec<(u64, StreamItem)> = r.by_ref().collect();
    assert_eq!(got.len(), items.len());
    for (k, (idx, it)) in got.iter().enumerate() {
        assert_eq!(*idx, k as u64);
        assert_eq!(*it, items[k]);
    }
    assert!(r.end_state().unwrap().is_complete());
    assert_eq!(r.byte_offset(), buf.len() as u64);
    // Iterating past the end stays at the end.
    assert!(r.next().is_none());
}

#[test]
fn reads_from_a_source_that_returns_short_reads() {
    for format in [TraceFormat::V1, TraceFormat::V2] {
        reads_from_a_source_that_returns_short_reads_in(format);
    }
}

fn reads_from_a_source_that_returns_short_reads_in(format: TraceFormat) {
    struct Dribble<'a>(&'a [u8]);
    impl std::io::Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = out.len().min(self.0.len()).min(7);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let mut buf = Vec::new();
    let items = stream(500);
    let mut w = TraceWriter::with_format(&mut buf, &header(), "t".into(), format).unwrap();
    for it in &items {
        w.write_item(it).unwrap();
    }
    w.finish(TraceEnd::at(0, "end")).unwrap();
    let mut r = TraceReader::from_reader(Dribble(&buf)).unwrap();
    let back: Vec<StreamItem> = r.by_ref().map(|(_, it)| it).collect();
    assert_eq!(back, items);
    assert!(r.end_state().unwrap().is_complete());
}

#[test]
fn an_unfinished_writer_leaves_a_truncated_but_readable_file() {
    for format in [TraceFormat::V1, TraceFormat::V2] {
        an_unfinished_writer_leaves_a_truncated_but_readable_file_in(format);
    }
}

fn an_unfinished_writer_leaves_a_truncated_but_readable_file_in(format: TraceFormat) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("killed.trace");
    let mut w = TraceWriter::create_format(&path, &header(), format).unwrap();
    for i in 0..100 {
        w.write_event(&event(i)).unwrap();
    }
    w.flush().unwrap();
    let len = w.bytes_written();
    drop(w);
    let (_, items, end) = read_all(&path).unwrap();
    assert_eq!(items.len(), 100);
    assert_eq!(
        end,
        EndState::Truncated {
            byte_offset: len,
            records_read: 100
        }
    );
    assert!(end.to_string().contains("truncated at byte"));
}

#[test]
fn an_empty_trace_is_complete() {
    for format in [TraceFormat::V1, TraceFormat::V2] {
        an_empty_trace_is_complete_in(format);
    }
}

fn an_empty_trace_is_complete_in(format: TraceFormat) {
    let mut buf = Vec::new();
    let w = TraceWriter::with_format(
        &mut buf,
        &TraceHeader::new("simulate:empty.scn"),
        "t".into(),
        format,
    )
    .unwrap();
    w.finish(TraceEnd::at(5, "end of script")).unwrap();
    let mut r = TraceReader::from_reader(buf.as_slice()).unwrap();
    assert_eq!(r.header().origin, "simulate:empty.scn");
    assert!(r.next().is_none());
    let footer = r.end_state().unwrap().footer().unwrap();
    assert_eq!((footer.events, footer.records), (0, 0));
}

/// A file of 5000 items in blocks of 100 (v2) or records (v1).
fn seekable(format: TraceFormat) -> (Vec<u8>, Vec<StreamItem>) {
    let items = stream(5000);
    let mut buf = Vec::new();
    let mut w = TraceWriter::with_format(&mut buf, &header(), "t".into(), format).unwrap();
    for (k, it) in items.iter().enumerate() {
        w.write_item(it).unwrap();
        if k % 100 == 99 {
            w.flush().unwrap();
        }
    }
    w.finish(TraceEnd::at(0, "end")).unwrap();
    (buf, items)
}

#[test]
fn a_v2_reader_seeks_through_the_block_index() {
    let (buf, items) = seekable(TraceFormat::V2);
    let n = items.len() as u64;
    let mut r = TraceReader::from_reader(std::io::Cursor::new(&buf)).unwrap();
    let index = r
        .block_index()
        .unwrap()
        .expect("a complete v2 file has an index");
    assert_eq!(index.len() as u64, n.div_ceil(100));
    for (k, e) in index.iter().enumerate() {
        assert_eq!(e.first_index, k as u64 * 100);
        assert!(k == 0 || e.offset > index[k - 1].offset);
    }
    // Reading a little, looking at the index, reading on: undisturbed.
    let head: Vec<StreamItem> = r.by_ref().take(150).map(|(_, it)| it).collect();
    assert!(r.block_index().unwrap().is_some());
    let (i, next) = r.next_item().unwrap();
    assert_eq!((i, head.as_slice(), next), (150, &items[..150], items[150]));

    for at in [0, 1, 99, 100, 101, 2500, 4999, n, 0, 3333] {
        assert!(r.seek_item(at).unwrap(), "{at}");
        match r.next_item() {
            Some((i, it)) => assert_eq!((i, it), (at, items[at as usize])),
            None => assert_eq!(at, n),
        }
    }
    assert!(!r.seek_item(n + 1).unwrap());
    assert!(r.end_state().is_some_and(EndState::is_complete));
    // After a seek the rest reads to a complete end.
    assert!(r.seek_item(4321).unwrap());
    let rest: Vec<StreamItem> = r.by_ref().map(|(_, it)| it).collect();
    assert_eq!(rest, items[4321..]);
    assert!(
        r.end_state().is_some_and(EndState::is_complete),
        "{:?}",
        r.end_state()
    );
}

#[test]
fn a_cut_v2_file_and_a_v1_file_seek_without_an_index() {
    let (buf, items) = seekable(TraceFormat::V2);
    let cut = &buf[..buf.len() * 2 / 3];
    let mut r = TraceReader::from_reader(std::io::Cursor::new(cut)).unwrap();
    assert_eq!(r.block_index().unwrap(), None);
    assert!(r.seek_item(1234).unwrap());
    assert_eq!(r.next_item(), Some((1234, items[1234])));
    assert!(!r.seek_item(4000).unwrap());
    assert!(matches!(r.end_state(), Some(EndState::Truncated { .. })));
    let complete = r.records_read();
    // Every complete block, and not one more: the scan found the block
    // that is cut off where a reader would.
    let whole = read_all_bytes(cut);
    assert_eq!(complete, whole.0);
    assert_eq!(r.end_state(), Some(&whole.1));
    assert!(r.seek_item(complete - 1).unwrap());
    assert_eq!(
        r.next_item(),
        Some((complete - 1, items[complete as usize - 1]))
    );

    let (buf, items) = seekable(TraceFormat::V1);
    let mut r = TraceReader::from_reader(std::io::Cursor::new(&buf)).unwrap();
    assert_eq!(r.block_index().unwrap(), None);
    for at in [3000, 10, 4999] {
        assert!(r.seek_item(at).unwrap());
        assert_eq!(r.next_item(), Some((at, items[at as usize])));
    }
    assert!(!r.seek_item(6000).unwrap());
    assert!(r.end_state().is_some_and(EndState::is_complete));
}

fn read_all_bytes(b: &[u8]) -> (u64, EndState) {
    let mut r = TraceReader::from_reader(b).unwrap();
    let n = r.by_ref().count() as u64;
    (n, r.end_state().cloned().unwrap())
}
