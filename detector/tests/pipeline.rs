//! The one loop: the raw recording path, rotated files read back as one
//! stream, a failing recording, and a stop that still hands over what was
//! captured.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

mod tui_support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use detector::analyzer::Config;
use detector::event::StreamItem;
use detector::sinks::ReportSink;
use detector::stream::{
    AnalyzerSetup, End, FileSource, Item, OnRecordError, Pipeline, PipelineError, Pull, Recorder,
    Source, SourceError, SourceInfo, Speed, TraceRecorder,
};
use detector::trace::{
    encode_event, existing_segments, read_all, EndState, RotationPolicy, TraceError, TraceFormat,
    TraceHeader, TraceSummary,
};
use detector_common::EVENT_SIZE;

/// Items from memory, handed over in pulls of `per_pull`, events as raw
/// bytes when asked (as the kernel source does); `drained` more at a stop.
struct MemSource {
    header: TraceHeader,
    items: Vec<StreamItem>,
    next: usize,
    per_pull: usize,
    drained: Vec<StreamItem>,
    /// Behaves like a running kernel: idle (not ended) once the items are
    /// handed over, and time passes without events.
    live: bool,
}

impl MemSource {
    fn new(items: Vec<StreamItem>, per_pull: usize) -> Self {
        MemSource {
            header: tui_support::header(),
            items,
            next: 0,
            per_pull,
            drained: Vec::new(),
            live: false,
        }
    }

    fn hand(&mut self, item: StreamItem, raw: bool, f: &mut dyn FnMut(u64, Item<'_>)) {
        let index = self.next as u64;
        self.next += 1;
        match item {
            StreamItem::Event(ev) if raw => {
                let mut b = [0u8; EVENT_SIZE];
                encode_event(&ev, &mut b);
                f(index, Item::Raw(&b));
            }
            _ => f(index, Item::Decoded(&item)),
        }
    }
}

impl Source for MemSource {
    fn info(&self) -> SourceInfo {
        SourceInfo::default()
    }
    fn header(&self) -> &TraceHeader {
        &self.header
    }
    fn pull(
        &mut self,
        wait: Duration,
        raw: bool,
        f: &mut dyn FnMut(u64, Item<'_>),
    ) -> Result<Pull, SourceError> {
        if self.next >= self.items.len() {
            if self.live {
                std::thread::sleep(wait);
                return Ok(Pull::Idle);
            }
            return Ok(Pull::End("end of memory".into()));
        }
        let end = (self.next + self.per_pull).min(self.items.len());
        for i in self.next..end {
            let item = self.items[i];
            self.hand(item, raw, f);
        }
        Ok(Pull::Items)
    }
    fn raw_capable(&self) -> bool {
        true
    }
    fn clock_ns(&self) -> Option<u64> {
        self.live.then(detector::event::monotonic_ns)
    }
    fn drain(&mut self, raw: bool, f: &mut dyn FnMut(u64, Item<'_>)) -> Result<(), SourceError> {
        for item in std::mem::take(&mut self.drained) {
            self.hand(item, raw, f);
        }
        Ok(())
    }
}

/// Counts raw and decoded writes; fails every write after `fail_after`.
struct Counting {
    inner: TraceRecorder,
    raw: Arc<AtomicU64>,
    decoded: Arc<AtomicU64>,
    fail_after: u64,
}

impl Counting {
    fn check(&self) -> Result<(), TraceError> {
        let n = self.raw.load(Ordering::Relaxed) + self.decoded.load(Ordering::Relaxed);
        if n > self.fail_after {
            return Err(TraceError::Rotation("the disk is full".into()));
        }
        Ok(())
    }
}

impl Recorder for Counting {
    fn write(&mut self, item: &StreamItem) -> Result<(), TraceError> {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        self.inner.write(item)
    }
    fn accepts_raw(&self) -> bool {
        self.inner.accepts_raw()
    }
    fn write_raw(&mut self, b: &[u8; EVENT_SIZE]) -> Result<(), TraceError> {
        self.raw.fetch_add(1, Ordering::Relaxed);
        self.check()?;
        self.inner.write_raw(b)
    }
    fn bytes(&self) -> u64 {
        self.inner.bytes()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
    fn finish(self: Box<Self>, reason: &str) -> Result<TraceSummary, TraceError> {
        Box::new(self.inner).finish(reason)
    }
}

fn counting(path: &Path, fail_after: u64) -> (Box<Counting>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let raw = Arc::new(AtomicU64::new(0));
    let decoded = Arc::new(AtomicU64::new(0));
    let r = Counting {
        inner: TraceRecorder::create(path, &tui_support::header(), None).unwrap(),
        raw: Arc::clone(&raw),
        decoded: Arc::clone(&decoded),
        fail_after,
    };
    (Box::new(r), raw, decoded)
}

#[test]
fn raw_and_decoded_recordings_hold_the_same_stream() {
    let dir = tempfile::tempdir().unwrap();
    let items = tui_support::stream(3000);
    let events = items
        .iter()
        .filter(|i| matches!(i, StreamItem::Event(_)))
        .count() as u64;
    let mut runs = Vec::new();
    for analyze in [false, true] {
        let path = dir.path().join(format!("{analyze}.dtr"));
        let mut src = MemSource::new(items.clone(), 500);
        let (rec, raw, decoded) = counting(&path, u64::MAX);
        let mut p = Pipeline::new(&mut src).record(rec, OnRecordError::Fail);
        // Nothing reads the items unless the analyzer runs: the raw path.
        let mut sink: Option<ReportSink> = None;
        if analyze {
            p = p.analyze(&AnalyzerSetup::given(Config::default()));
            sink = Some(ReportSink::new(false));
        }
        let out = p.run(&mut sink).unwrap();
        assert!(matches!(out.end, End::Finished(_)));
        assert_eq!(out.items, items.len() as u64);
        let (raw, decoded) = (raw.load(Ordering::Relaxed), decoded.load(Ordering::Relaxed));
        if analyze {
            assert_eq!((raw, decoded), (0, items.len() as u64));
            assert_eq!(sink.map(|s| s.groups.total()), Some(1), "the ABA");
        } else {
            assert_eq!((raw, decoded), (events, items.len() as u64 - events));
        }
        let summary = out.recording.unwrap().unwrap();
        assert_eq!(summary.totals.events, events);
        runs.push(read_all(&path).unwrap());
    }
    let (h0, items0, end0) = &runs[0];
    let (h1, items1, end1) = &runs[1];
    assert_eq!(items0, &items);
    assert_eq!(items1, &items);
    assert_eq!(h0.plan, h1.plan);
    assert!(end0.is_complete() && end1.is_complete());
    assert_eq!(
        end0.footer().map(|f| &f.events_per_probe),
        end1.footer().map(|f| &f.events_per_probe)
    );
}

#[test]
fn rotated_segments_read_back_as_one_stream() {
    // Sizes that make a few segments of this stream in either format.
    for (format, max_bytes) in [(TraceFormat::V1, 64 << 10), (TraceFormat::V2, 6 << 10)] {
        rotated_segments(format, max_bytes);
    }
}

fn rotated_segments(format: TraceFormat, max_bytes: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rot.dtr");
    let items = tui_support::stream(3000);
    let mut src = MemSource::new(items.clone(), 700);
    let rec = TraceRecorder::create_format(
        &path,
        &tui_support::header(),
        Some(RotationPolicy { max_bytes, keep: 0 }),
        None,
        format,
    )
    .unwrap();
    Pipeline::new(&mut src)
        .record(Box::new(rec), OnRecordError::Fail)
        .run(&mut None::<ReportSink>)
        .unwrap();
    let segments = existing_segments(&path);
    assert!(segments.len() > 3, "{segments:?}");

    let mut file = FileSource::open_segments(&segments, Speed::Max).unwrap();
    let mut got = Vec::new();
    while let Ok(Pull::Items) = file.pull_into(&mut got, Duration::ZERO) {}
    let indexes: Vec<u64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, (0..items.len() as u64).collect::<Vec<_>>());
    assert_eq!(got.into_iter().map(|(_, i)| i).collect::<Vec<_>>(), items);
    let ends = file.segment_ends();
    assert_eq!(ends.len(), segments.len());
    assert!(ends
        .iter()
        .all(|e| e.end.as_ref().is_some_and(EndState::is_complete)));
    let numbers: Vec<u32> = ends.iter().map(|e| e.segment).collect();
    assert_eq!(numbers, (0..segments.len() as u32).collect::<Vec<_>>());

    // The analysis of the segments is the analysis of the stream.
    let setup = AnalyzerSetup::given(Config::default());
    let mut whole = ReportSink::new(true);
    let mut file = FileSource::open_segments(&segments, Speed::Max).unwrap();
    Pipeline::new(&mut file)
        .analyze(&setup)
        .run(&mut whole)
        .unwrap();
    let mut mem = ReportSink::new(true);
    Pipeline::new(&mut MemSource::new(items, 3000))
        .analyze(&setup)
        .run(&mut mem)
        .unwrap();
    assert_eq!(whole.all, mem.all);
    assert_eq!(whole.all.map(|a| a.len()), Some(1));
}

#[test]
fn a_failed_recording_stops_it_or_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let items = tui_support::stream(1000);
    // The live view: the recording stops, the stream goes on.
    let (rec, _, _) = counting(&dir.path().join("a.dtr"), 100);
    let mut sink = ReportSink::new(true);
    let mut src = MemSource::new(items.clone(), 64);
    let out = Pipeline::new(&mut src)
        .analyze(&AnalyzerSetup::given(Config::default()))
        .record(rec, OnRecordError::Continue)
        .run(&mut sink)
        .unwrap();
    assert_eq!(out.items, items.len() as u64);
    assert_eq!(sink.all.map(|a| a.len()), Some(1), "the analysis went on");
    let e = out.recording.unwrap().unwrap_err();
    assert!(e.to_string().contains("the disk is full"), "{e}");

    // `record`: the file is the point, so the run fails.
    let (rec, _, _) = counting(&dir.path().join("b.dtr"), 100);
    let mut src = MemSource::new(items, 64);
    let r = Pipeline::new(&mut src)
        .record(rec, OnRecordError::Fail)
        .run(&mut None::<ReportSink>);
    assert!(matches!(r, Err(PipelineError::Record(_))));
}

#[test]
fn a_stop_hands_over_what_was_captured() {
    let items = tui_support::stream(1000);
    let (first, rest) = items.split_at(400);
    let mut src = MemSource::new(first.to_vec(), 400);
    src.drained = rest.to_vec();
    let mut pulls = 0;
    let mut sink = ReportSink::new(true);
    let out = Pipeline::new(&mut src)
        .analyze(&AnalyzerSetup::given(Config::default()))
        .stop_when(|| {
            pulls += 1;
            (pulls > 1).then(|| String::from("interrupted"))
        })
        .run(&mut sink)
        .unwrap();
    assert!(matches!(&out.end, End::Stopped(why) if why == "interrupted"));
    assert_eq!(out.items, items.len() as u64);
    assert_eq!(out.end.reason(), "interrupted");
    assert_eq!(
        sink.span().1,
        items.iter().map(StreamItem::ts_ns).max().unwrap()
    );
}

/// A live stream's recording reaches the file within about a second even
/// when nothing else fills a block: what a killed recorder loses is
/// bounded in time.
#[test]
fn a_live_recording_is_flushed_about_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("live.dtr");
    let items = tui_support::stream(50);
    let mut src = MemSource::new(items.clone(), 1000);
    src.live = true;
    let rec = TraceRecorder::create(&path, &tui_support::header(), None).unwrap();
    let start = std::time::Instant::now();
    let mut on_disk = Vec::new();
    let out = Pipeline::new(&mut src)
        .record(Box::new(rec), OnRecordError::Fail)
        .wait(Duration::from_millis(20))
        .stop_when(|| {
            let elapsed = start.elapsed();
            if elapsed < detector::stream::FLUSH_EVERY.mul_f32(1.5) {
                return None;
            }
            // Read what a crash now would leave.
            on_disk = read_all(&path).unwrap().1;
            Some("interrupted".into())
        })
        .run(&mut None::<ReportSink>)
        .unwrap();
    assert_eq!(out.items, items.len() as u64);
    assert_eq!(on_disk, items, "everything handed over is on disk");
    // A source that is not live (a file) is not flushed by time.
    let path = dir.path().join("file.dtr");
    let mut src = MemSource::new(items.clone(), 10);
    let rec = TraceRecorder::create(&path, &tui_support::header(), None).unwrap();
    let mut before_end = None;
    Pipeline::new(&mut src)
        .record(Box::new(rec), OnRecordError::Fail)
        .stop_when(|| {
            if before_end.is_none() {
                std::thread::sleep(detector::stream::FLUSH_EVERY.mul_f32(1.2));
                before_end = Some(0);
                None
            } else {
                before_end = Some(read_all(&path).unwrap().1.len());
                Some("stop".into())
            }
        })
        .run(&mut None::<ReportSink>)
        .unwrap();
    assert_eq!(before_end, Some(0), "one block, written at the end");
}
