//! The stream and its findings as Parquet (`export --format parquet`): one
//! directory per capture holding `events.parquet` (every event and
//! lost-event record) and `findings.parquet` (every finding the analyzer
//! made, with its evidence chain), so a fleet's exports read as one table
//! with `read_parquet('fleet/*/events.parquet')`. The columns are
//! [`crate::present::columns`]'; `docs/parquet.md` documents them.
//!
//! Memory stays bounded whatever the capture's length: rows are gathered
//! in batches of [`EVENT_BATCH`] events or [`FINDING_BATCH`] findings and
//! handed to the Parquet writer, which holds at most one row group before
//! writing it out. Until the export succeeds the files are called
//! `*.parquet.partial`, so a glob over a fleet's directories never reads
//! a half-written file.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use ::parquet::arrow::ArrowWriter;
use ::parquet::basic::{Compression, Encoding, ZstdLevel};
use ::parquet::file::metadata::KeyValue;
use ::parquet::file::properties::WriterProperties;
use ::parquet::schema::types::ColumnPath;
use arrow_array::RecordBatch;

use crate::analyzer::Finding;
use crate::event::StreamItem;
use crate::present::columns::{
    event_schema, finding_schema, Capture, EventColumns, FindingColumns, SCHEMA_VERSION,
};
use crate::present::row::EventMeta;
use crate::stream::{AnalyzerSetup, Ctx, Sink};
use crate::trace::{create_private, Redactor, TraceHeader};

/// Event rows per batch handed to the writer.
pub const EVENT_BATCH: usize = 8192;
/// Findings per batch (each carries its evidence chain).
pub const FINDING_BATCH: usize = 1024;
/// Rows per row group: large enough for a scan to read long runs of each
/// column (DuckDB splits its work by row group), small enough that the
/// row group the writer holds in memory stays a few MiB.
pub const ROW_GROUP_ROWS: usize = 256 * 1024;
/// A row group is also cut at this estimated size (findings with long
/// evidence chains reach it before the row count).
const ROW_GROUP_BYTES: usize = 64 << 20;
/// zstd's level: its default, a good ratio at several hundred MB/s.
const ZSTD_LEVEL: i32 = 3;

/// Columns that grow row by row (in both files where they exist).
const ASCENDING: [&str; 4] = ["index", "ts_ns", "time", "finding_id"];
/// Addresses, entries and raw words: seldom repeated within a page, so a
/// dictionary costs time and saves nothing (measured: with these two
/// lists the synthetic mix takes 2.1 MB per million events instead of 10.3,
/// a real 6.12 capture 9.9 bytes an event instead of 16.3).
const SCATTERED: [&str; 12] = [
    "folio",
    "entry",
    "swap_offset",
    "entry_raw",
    "pte",
    "pfn",
    "addr",
    "ret",
    "flags_raw",
    "folio_swap",
    "mapping",
    "folio_index",
];

pub const EVENTS_FILE: &str = "events.parquet";
pub const FINDINGS_FILE: &str = "findings.parquet";

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCounts {
    pub events: u64,
    /// Lost-event records (rows of type `lost`), not the events they count.
    pub lost_records: u64,
    pub findings: u64,
}

/// One output file: written as `NAME.partial`, renamed when complete.
struct Output {
    writer: Option<ArrowWriter<File>>,
    partial: PathBuf,
    path: PathBuf,
}

impl Output {
    fn create(
        dir: &Path,
        name: &str,
        schema: arrow_schema::SchemaRef,
        props: WriterProperties,
    ) -> io::Result<Output> {
        let path = dir.join(name);
        let partial = dir.join(format!("{name}.partial"));
        let file = create_private(&partial)?;
        let writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(io::Error::other)?;
        Ok(Output {
            writer: Some(writer),
            partial,
            path,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.write(batch).map_err(io::Error::other),
            None => Err(io::Error::other("the Parquet file was already closed")),
        }
    }

    /// Writes the footer.
    fn close(&mut self) -> io::Result<()> {
        match self.writer.take() {
            Some(w) => w.close().map(|_| ()).map_err(io::Error::other),
            None => Ok(()),
        }
    }
}

/// The sink of `export --format parquet`.
pub struct ParquetExport {
    events: Output,
    findings: Output,
    event_rows: EventColumns,
    finding_rows: FindingColumns,
    redact: Option<Redactor>,
    /// The pid of recent events, for a finding's task (evidence names the
    /// thread only).
    meta: EventMeta,
    counts: ExportCounts,
    committed: bool,
}

impl ParquetExport {
    /// Creates `dir` if it does not exist (readable by its owner only) and
    /// starts both files in it. `header` is the header as exported
    /// (redacted already with `redact`), `setup` the analyzer's, recorded in
    /// each file's metadata with the header.
    pub fn create(
        dir: &Path,
        header: &TraceHeader,
        setup: &AnalyzerSetup,
        capture_id: Option<String>,
        redact: Option<Redactor>,
    ) -> io::Result<ParquetExport> {
        make_dir(dir)?;
        let capture = Capture::of(header, capture_id);
        let kv = vec![
            KeyValue::new("detector.schema_version".into(), SCHEMA_VERSION.to_string()),
            KeyValue::new("detector.capture_id".into(), capture.capture_id.clone()),
            KeyValue::new("detector.header".into(), json(header)),
            KeyValue::new("detector.analyzer_config".into(), json(&setup.config)),
            KeyValue::new(
                "detector.analyzer_config_source".into(),
                setup.origin.clone(),
            ),
        ];
        let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(io::Error::other)?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
            .set_key_value_metadata(Some(kv));
        // Positions and times grow: deltas store them in a few bits each,
        // where a dictionary would only grow until the writer gave up on it.
        for c in ASCENDING {
            props = props
                .set_column_dictionary_enabled(ColumnPath::from(c), false)
                .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
        }
        for c in SCATTERED {
            props = props.set_column_dictionary_enabled(ColumnPath::from(c), false);
        }
        let props = props.build();
        Ok(ParquetExport {
            events: Output::create(dir, EVENTS_FILE, event_schema(), props.clone())?,
            findings: Output::create(dir, FINDINGS_FILE, finding_schema(), props)?,
            event_rows: EventColumns::new(capture.clone(), header),
            finding_rows: FindingColumns::new(capture),
            redact,
            meta: EventMeta::new(16),
            counts: ExportCounts::default(),
            committed: false,
        })
    }

    /// Gives both files their final names; call after the pipeline's run
    /// succeeded (its finish wrote the footers).
    pub fn commit(mut self) -> io::Result<ExportCounts> {
        self.events.close()?;
        self.findings.close()?;
        for out in [&self.events, &self.findings] {
            std::fs::rename(&out.partial, &out.path)?;
        }
        self.committed = true;
        Ok(self.counts)
    }

    fn flush_events(&mut self) -> io::Result<()> {
        if self.event_rows.is_empty() {
            return Ok(());
        }
        let batch = self.event_rows.take().map_err(io::Error::other)?;
        self.events.write(&batch)
    }

    fn flush_findings(&mut self) -> io::Result<()> {
        if self.finding_rows.is_empty() {
            return Ok(());
        }
        let batch = self.finding_rows.take().map_err(io::Error::other)?;
        self.findings.write(&batch)
    }

    fn take_findings(&mut self, found: &mut Vec<Finding>) -> io::Result<()> {
        for mut f in found.drain(..) {
            self.counts.findings += 1;
            if let Some(r) = &self.redact {
                redact_finding(r, &mut f);
            }
            let last = f.evidence.iter().map(|e| e.index).max();
            let pid = last.and_then(|i| self.meta.get(i)).map(|(_, pid)| pid);
            self.finding_rows.push(&f, pid).map_err(io::Error::other)?;
            if self.finding_rows.len() >= FINDING_BATCH {
                self.flush_findings()?;
            }
        }
        Ok(())
    }
}

impl Drop for ParquetExport {
    /// An export that did not complete leaves no partial file behind.
    fn drop(&mut self) {
        if !self.committed {
            for out in [&self.events, &self.findings] {
                let _ = std::fs::remove_file(&out.partial);
            }
        }
    }
}

impl Sink for ParquetExport {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        let redacted;
        let item = match &self.redact {
            Some(r) => {
                redacted = r.item(item);
                &redacted
            }
            None => item,
        };
        match item {
            StreamItem::Event(_) => self.counts.events += 1,
            StreamItem::Lost { .. } => self.counts.lost_records += 1,
        }
        self.meta.record(index, item);
        self.event_rows
            .push(index, item)
            .map_err(io::Error::other)?;
        if self.event_rows.len() >= EVENT_BATCH {
            self.flush_events()?;
        }
        if !found.is_empty() {
            self.take_findings(found)?;
        }
        Ok(())
    }

    fn finish(&mut self, found: &mut Vec<Finding>, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.take_findings(found)?;
        self.flush_events()?;
        self.flush_findings()?;
        self.events.close()?;
        self.findings.close()
    }
}

/// `dir`, created mode 0700 when missing; an existing directory is used
/// as it is (its two files are replaced).
fn make_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it exists and is not a directory (the Parquet export writes a directory)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir),
        Err(e) => Err(e),
    }
}

/// A finding's kernel addresses redacted with the same key as the events:
/// a folio keeps the one pseudonym in both files.
fn redact_finding(r: &Redactor, f: &mut Finding) {
    for a in &mut f.objects.folios {
        *a = r.text(a);
    }
    f.explanation = r.text(&f.explanation);
    for e in &mut f.evidence {
        e.note = r.text(&e.note);
        let s = &mut e.state;
        for v in [&mut s.folio, &mut s.ret_text, &mut s.addr]
            .into_iter()
            .flatten()
        {
            *v = r.text(v);
        }
        s.ret = s.ret.map(|v| r.pointer(v as u64) as i64);
    }
}

/// Serializing the header or the configuration cannot fail (strings,
/// numbers, maps with string keys); `{}` stands in should it ever.
fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| String::from("{}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{
        Int32Type, TimestampNanosecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
    };
    use arrow_array::{Array, ListArray, StructArray};
    use detector_common::{swp_entry, ProbeId};

    use super::*;
    use crate::analyzer::Config;
    use crate::event::EventExt;
    use crate::plan::{AttachMode, PlanEntry};
    use crate::stream::{ConfigChoice, FileSource, Overrides, Pipeline, Source, Speed};
    use crate::trace::{TraceEnd, TraceWriter};

    /// Two of the corpus's scenarios in one stream (an ABA with a lost
    /// record, then an -EEXIST storm), the second moved after the first.
    fn items() -> (Vec<StreamItem>, Config) {
        let aba = crate::scenario::parse(
            include_str!("../../scenarios/000_aba_lost_events.scn"),
            "aba",
        )
        .unwrap();
        let storm = crate::scenario::parse(
            include_str!("../../scenarios/002_eexist_storm.scn"),
            "storm",
        )
        .unwrap();
        let mut items = aba.items.clone();
        for mut it in storm.items {
            match &mut it {
                StreamItem::Event(e) => e.ts_ns += 1_000_000,
                StreamItem::Lost { ts_ns, .. } => *ts_ns += 1_000_000,
            }
            items.push(it);
        }
        (items, storm.config)
    }

    const REALTIME: u64 = 1_700_000_000_000_000_000;

    /// A trace of [`items`] with a host, a boot and a plan in its header.
    fn trace(dir: &Path) -> (PathBuf, Vec<StreamItem>) {
        let (items, config) = items();
        let mut h = TraceHeader::new("test");
        h.hostname = "web-17".into();
        h.kernel_release = "6.12.0-test".into();
        h.boot_id = "b0".into();
        h.start_monotonic_ns = crate::scenario::BASE_NS;
        h.start_realtime_ns = REALTIME;
        h.analyzer_config = Some(config);
        h.plan = ProbeId::ALL
            .iter()
            .map(|p| PlanEntry {
                probe: p.name().into(),
                target: String::new(),
                mode: if *p == ProbeId::SwapcachePrepare {
                    AttachMode::Kprobe
                } else {
                    AttachMode::Fentry
                },
                entry: true,
                exit: true,
                note: String::new(),
                filter: String::new(),
            })
            .collect();
        let path = dir.join("t.trace");
        let mut w = TraceWriter::create(&path, &h).unwrap();
        for it in &items {
            w.write_item(it).unwrap();
        }
        w.finish(TraceEnd::at(0, "end")).unwrap();
        (path, items)
    }

    fn export(trace: &Path, out: &Path, redact: Option<Redactor>) -> ExportCounts {
        let mut source = FileSource::open(trace, Speed::Max).unwrap();
        let setup = ConfigChoice::FromTrace(Overrides::default()).setup(&source);
        let header = match &redact {
            Some(r) => r.header(source.header()),
            None => source.header().clone(),
        };
        let mut sink =
            ParquetExport::create(out, &header, &setup, Some("cap-1".into()), redact).unwrap();
        Pipeline::new(&mut source)
            .analyze(&setup)
            .run(&mut sink)
            .unwrap();
        sink.commit().unwrap()
    }

    /// Every batch of a file, and its key-value metadata.
    fn read(path: &Path) -> (Vec<RecordBatch>, BTreeMap<String, String>, usize) {
        let b = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let kv = b
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .into_iter()
            .flatten()
            .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
            .collect();
        let groups = b.metadata().num_row_groups();
        let batches = b.build().unwrap().collect::<Result<Vec<_>, _>>().unwrap();
        (batches, kv, groups)
    }

    fn string_at(b: &RecordBatch, col: &str, row: usize) -> Option<String> {
        let c = b.column_by_name(col).unwrap();
        if c.is_null(row) {
            return None;
        }
        let s = match c.data_type() {
            arrow_schema::DataType::Dictionary(k, _) => match k.as_ref() {
                arrow_schema::DataType::UInt8 => {
                    let d = c.as_dictionary::<UInt8Type>();
                    let v = d.values().as_string::<i32>();
                    v.value(d.keys().value(row) as usize).to_string()
                }
                _ => {
                    let d = c.as_dictionary::<UInt16Type>();
                    let v = d.values().as_string::<i32>();
                    v.value(d.keys().value(row) as usize).to_string()
                }
            },
            _ => c.as_string::<i32>().value(row).to_string(),
        };
        Some(s)
    }

    fn u64_at(b: &RecordBatch, col: &str, row: usize) -> Option<u64> {
        let c = b.column_by_name(col).unwrap().as_primitive::<UInt64Type>();
        (!c.is_null(row)).then(|| c.value(row))
    }

    #[test]
    fn written_files_read_back_with_their_rows_types_and_values() {
        let dir = tempfile::tempdir().unwrap();
        let (path, items) = trace(dir.path());
        let out = dir.path().join("cap");
        let n = export(&path, &out, None);
        let report = crate::sinks::analyze_file(&path, items_config()).unwrap();
        let findings = report.findings.clone().unwrap();
        assert_eq!(n.events + n.lost_records, items.len() as u64);
        assert_eq!(n.lost_records, 1);
        assert_eq!(n.findings, findings.len() as u64);
        assert!(!out.join("events.parquet.partial").exists());

        let (batches, kv, _) = read(&out.join(EVENTS_FILE));
        assert_eq!(batches.len(), 1, "fewer rows than one reader batch");
        let ev = &batches[0];
        // The Arrow schema round-trips, dictionaries and all.
        assert_eq!(ev.schema(), event_schema());
        assert_eq!(ev.num_rows(), items.len());
        assert_eq!(kv["detector.capture_id"], "cap-1");
        assert_eq!(kv["detector.schema_version"], SCHEMA_VERSION.to_string());
        let header: TraceHeader = serde_json::from_str(&kv["detector.header"]).unwrap();
        assert_eq!(header.hostname, "web-17");
        for row in 0..ev.num_rows() {
            assert_eq!(string_at(ev, "host", row).as_deref(), Some("web-17"));
            assert_eq!(string_at(ev, "boot_id", row).as_deref(), Some("b0"));
            assert_eq!(string_at(ev, "capture_id", row).as_deref(), Some("cap-1"));
            assert_eq!(u64_at(ev, "index", row), Some(row as u64));
        }
        // Row by row against the items.
        let time = ev
            .column_by_name("time")
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        for (row, it) in items.iter().enumerate() {
            assert_eq!(u64_at(ev, "ts_ns", row), Some(it.ts_ns()));
            let wall = REALTIME + it.ts_ns() - crate::scenario::BASE_NS;
            assert_eq!(time.value(row), wall as i64);
            match it {
                StreamItem::Event(e) => {
                    assert_eq!(string_at(ev, "type", row).as_deref(), Some("event"));
                    assert_eq!(
                        string_at(ev, "probe", row),
                        Some(crate::event::ProbeName(e.probe).to_string())
                    );
                    let mode = if e.probe == ProbeId::SwapcachePrepare as u16 {
                        "kprobe"
                    } else {
                        "fentry"
                    };
                    assert_eq!(string_at(ev, "attach_mode", row).as_deref(), Some(mode));
                    assert_eq!(
                        u64_at(ev, "folio", row),
                        (e.valid & detector_common::V_FOLIO != 0).then_some(e.folio)
                    );
                    assert_eq!(u64_at(ev, "entry", row), e.swap_entry());
                    assert_eq!(u64_at(ev, "lost_total", row), None);
                }
                StreamItem::Lost { probe, total, .. } => {
                    assert_eq!(string_at(ev, "type", row).as_deref(), Some("lost"));
                    assert_eq!(string_at(ev, "kind", row).as_deref(), Some("lost"));
                    assert_eq!(
                        string_at(ev, "probe", row),
                        Some(crate::event::ProbeName(*probe).to_string())
                    );
                    assert_eq!(u64_at(ev, "lost_total", row), Some(*total));
                    assert!(ev.column_by_name("tid").unwrap().is_null(row));
                    assert!(ev.column_by_name("folio_flags").unwrap().is_null(row));
                }
            }
        }
        // The storm's -EEXIST answers.
        let eexist = (0..ev.num_rows())
            .filter(|r| string_at(ev, "errno", *r).as_deref() == Some("EEXIST"))
            .count();
        assert_eq!(eexist, 5);
        // Folio state as a list of flag names.
        let flags = ev.column_by_name("folio_flags").unwrap().as_list::<i32>();
        let row = (0..ev.num_rows()).find(|r| !flags.is_null(*r)).unwrap();
        let names = flags.value(row);
        let names: Vec<&str> = names.as_string::<i32>().iter().flatten().collect();
        assert!(names.contains(&"swapcache"), "{names:?}");
        let refcount = ev
            .column_by_name("refcount")
            .unwrap()
            .as_primitive::<Int32Type>();
        assert_eq!(refcount.value(row), 3);

        let (batches, kv, _) = read(&out.join(FINDINGS_FILE));
        assert_eq!(kv["detector.capture_id"], "cap-1");
        let fi = &batches[0];
        assert_eq!(fi.schema(), finding_schema());
        assert_eq!(fi.num_rows(), findings.len());
        let evidence: &ListArray = fi.column_by_name("evidence").unwrap().as_list::<i32>();
        for (row, f) in findings.iter().enumerate() {
            assert_eq!(u64_at(fi, "finding_id", row), Some(f.id));
            assert_eq!(string_at(fi, "rule", row).as_deref(), Some(f.rule.name()));
            assert_eq!(
                string_at(fi, "severity", row).as_deref(),
                Some(f.severity.name())
            );
            assert_eq!(string_at(fi, "message", row), Some(f.explanation.clone()));
            let steps = evidence.value(row);
            let steps: &StructArray = steps.as_struct();
            assert_eq!(steps.len(), f.evidence.len());
            let idx = steps.column_by_name("index").unwrap();
            let idx = idx.as_primitive::<UInt64Type>();
            for (i, e) in f.evidence.iter().enumerate() {
                assert_eq!(idx.value(i), e.index);
            }
            assert_eq!(
                u64_at(fi, "last_index", row),
                f.evidence.iter().map(|e| e.index).max()
            );
            let entries = fi.column_by_name("entries").unwrap().as_list::<i32>();
            let entries = entries.value(row);
            let entries: Vec<u64> = entries
                .as_primitive::<UInt64Type>()
                .iter()
                .flatten()
                .collect();
            let want: Vec<u64> = f
                .objects
                .entries
                .iter()
                .map(|s| crate::event::Entry::parse(s).unwrap())
                .collect();
            assert_eq!(entries, want);
        }
        let rules: Vec<String> = (0..fi.num_rows())
            .filter_map(|r| string_at(fi, "rule", r))
            .collect();
        assert!(rules.contains(&"swap_entry_aba".to_string()), "{rules:?}");
        assert!(rules.contains(&"eexist_storm".to_string()), "{rules:?}");
        let aba = rules.iter().position(|r| r == "swap_entry_aba").unwrap();
        assert_eq!(u64_at(fi, "entry", aba), Some(swp_entry(1, 0x40)));
        assert_eq!(string_at(fi, "confidence", aba).as_deref(), Some("reduced"));
        // The task of the last step, and its process from the events.
        let pid = fi
            .column_by_name("pid")
            .unwrap()
            .as_primitive::<UInt32Type>();
        assert!(!pid.is_null(aba));
    }

    /// The configuration the trace header records (the storm scenario's).
    fn items_config() -> Config {
        items().1
    }

    #[test]
    fn redacted_export_names_a_folio_alike_in_events_and_findings() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = trace(dir.path());
        let plain = dir.path().join("plain");
        let red = dir.path().join("red");
        export(&path, &plain, None);
        export(&path, &red, Some(Redactor::with_key(1, 2)));
        let folios = |d: &Path| {
            let (b, _, _) = read(&d.join(EVENTS_FILE));
            let (f, _, _) = read(&d.join(FINDINGS_FILE));
            let ev: Vec<u64> = (0..b[0].num_rows())
                .filter_map(|r| u64_at(&b[0], "folio", r))
                .collect();
            let fi: Vec<u64> = (0..f[0].num_rows())
                .filter_map(|r| u64_at(&f[0], "folio", r))
                .collect();
            (ev, fi)
        };
        let (plain_ev, plain_fi) = folios(&plain);
        let (red_ev, red_fi) = folios(&red);
        assert!(!plain_fi.is_empty());
        let r = Redactor::with_key(1, 2);
        assert_eq!(
            red_ev,
            plain_ev.iter().map(|f| r.pointer(*f)).collect::<Vec<_>>()
        );
        assert_ne!(red_ev, plain_ev);
        assert_eq!(
            red_fi,
            plain_fi.iter().map(|f| r.pointer(*f)).collect::<Vec<_>>()
        );
        // Each finding's folio is one of the events' (redacted) folios.
        assert!(red_fi.iter().all(|f| red_ev.contains(f)));
    }

    #[test]
    fn an_export_that_does_not_complete_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cap");
        let header = TraceHeader::new("test");
        let setup = crate::stream::AnalyzerSetup::given(Config::default());
        let sink = ParquetExport::create(&out, &header, &setup, None, None).unwrap();
        assert!(out.join("events.parquet.partial").exists());
        drop(sink);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
        // A file where the directory should be is refused.
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let e = ParquetExport::create(&file, &header, &setup, None, None)
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn long_streams_are_cut_into_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.trace");
        let h = TraceHeader::new("synthetic");
        let mut w = TraceWriter::create(&path, &h).unwrap();
        let n = ROW_GROUP_ROWS + EVENT_BATCH + 5;
        for e in crate::synth::Synth::storm(500).take(n) {
            w.write_event(&e).unwrap();
        }
        w.finish(TraceEnd::at(0, "end")).unwrap();
        let out = dir.path().join("cap");
        let counts = export(&path, &out, None);
        assert_eq!(counts.events, n as u64);
        let (batches, _, groups) = read(&out.join(EVENTS_FILE));
        assert_eq!(groups, 2);
        assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), n);
        let (batches, _, _) = read(&out.join(FINDINGS_FILE));
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!(rows as u64, counts.findings);
        assert!(rows > FINDING_BATCH, "{rows} findings");
    }
}
