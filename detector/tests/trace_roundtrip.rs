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
