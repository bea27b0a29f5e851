//! Events and findings as Arrow record batches: the columns of `detector
//! export --format parquet` (`docs/parquet.md` documents every one).
//!
//! Every column a query filters or groups on is typed: numbers stay
//! numbers (addresses as `UInt64`, never hex strings), names are
//! dictionary-encoded strings, and a field an event does not carry is
//! null, as in the JSON lines export. Each row also carries the capture's
//! identity (host, kernel, boot, capture id), so the files of a fleet's
//! captures can be read as one table.
//!
//! Rows are appended one at a time into Arrow builders and taken out as a
//! batch; appending copies into the builders' buffers and allocates only
//! when a buffer grows.

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StringDictionaryBuilder, TimestampNanosecondBuilder, UInt16Builder, UInt32Builder,
    UInt64Builder, UInt8Builder,
};
use arrow_array::types::{UInt16Type, UInt8Type};
use arrow_array::{
    new_null_array, ArrayRef, DictionaryArray, ListArray, RecordBatch, StringArray, StructArray,
    UInt8Array,
};
use arrow_buffer::OffsetBuffer;
use arrow_schema::{ArrowError, DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use detector_common::{
    swp_offset, swp_type, EventKind, MAX_PROBES, V_ADDR, V_ENTRY, V_ENTRY_PARTIAL, V_FOLIO,
    V_FOLIO_STATE, V_PIN, V_PTE, V_RET,
};

use crate::analyzer::{ConfidenceLevel, Finding, RuleId, Severity};
use crate::event::{errno_name, flags, Entry, EventExt, ProbeName, StreamItem};
use crate::plan::AttachMode;
use crate::trace::TraceHeader;

/// Version of the columns below, stored in each file's key-value metadata
/// (`detector.schema_version`): columns are only ever added.
pub const SCHEMA_VERSION: u32 = 1;

/// `type`'s values.
const TYPES: [&str; 2] = ["event", "lost"];
/// `kind`'s values: [`EventKind`]'s names, `?` for a kind this build does
/// not know, and `lost` for lost-event rows.
const KINDS: [&str; 5] = ["enter", "exit", "tp", "?", "lost"];
const KIND_UNKNOWN: u8 = 3;
const KIND_LOST: u8 = 4;
const MODES: [AttachMode; 4] = [
    AttachMode::Fentry,
    AttachMode::Kprobe,
    AttachMode::Tracepoint,
    AttachMode::Unavailable,
];
const SEVERITIES: [Severity; 3] = [Severity::Info, Severity::NearMiss, Severity::Violation];
const CONFIDENCES: [&str; 2] = ["full", "reduced"];

/// x86-64 PTE bits: present, PROT_NONE (present to the kernel too), and
/// where the frame number sits.
const PTE_PRESENT: u64 = 1;
const PTE_PROTNONE: u64 = 1 << 8;
const PFN_MASK: u64 = ((1 << 40) - 1) << 12;

fn dict(key: DataType) -> DataType {
    DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

fn col(name: &str, ty: DataType, nullable: bool) -> Field {
    Field::new(name, ty, nullable)
}

/// The identity columns every row of both files starts with.
fn identity_fields() -> [Field; 4] {
    [
        col("host", dict(DataType::UInt8), true),
        col("kernel_release", dict(DataType::UInt8), true),
        col("boot_id", dict(DataType::UInt8), true),
        col("capture_id", dict(DataType::UInt8), false),
    ]
}

/// The columns of `events.parquet`: one row per event or lost-event record.
pub fn event_schema() -> SchemaRef {
    use DataType::{Boolean, Int32, Int64, UInt16, UInt32, UInt64, UInt8, Utf8};
    let mut fields: Vec<Field> = identity_fields().into();
    fields.extend([
        col("index", UInt64, false),
        col("type", dict(UInt8), false),
        col("ts_ns", UInt64, false),
        col("time", timestamp(), true),
        col("probe", dict(UInt16), false),
        col("probe_id", UInt16, false),
        col("kind", dict(UInt8), false),
        col("attach_mode", dict(UInt8), true),
        col("cpu", UInt32, true),
        col("pid", UInt32, true),
        col("tid", UInt32, true),
        col("comm", Utf8, true),
        col("task_start", UInt32, true),
        col("folio", UInt64, true),
        col("entry", UInt64, true),
        col("swap_type", UInt8, true),
        col("swap_offset", UInt64, true),
        col("entry_raw", UInt64, true),
        col("entry_partial", Boolean, true),
        col("nr", UInt32, true),
        col("pte", UInt64, true),
        col("pfn", UInt64, true),
        col("addr", UInt64, true),
        col("ret", Int64, true),
        col("errno", dict(UInt8), true),
        col("arg", UInt32, true),
        col("pin", Boolean, true),
        col("valid", UInt8, true),
        col("folio_flags", list_of(Utf8), true),
        col("state_bits", UInt32, true),
        col("flags_raw", UInt64, true),
        col("refcount", Int32, true),
        col("mapcount", Int32, true),
        col("page_mapcount", Int32, true),
        col("large_mapcount", Int32, true),
        col("entire_mapcount", Int32, true),
        col("pincount", Int32, true),
        col("maybe_dma_pinned", Boolean, true),
        col("nr_pages", UInt32, true),
        col("folio_swap", UInt64, true),
        col("mapping", UInt64, true),
        col("folio_index", UInt64, true),
        col("lost_total", UInt64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// The fields of one step of a finding's evidence chain.
fn evidence_fields() -> Fields {
    use DataType::{Int32, Int64, UInt32, UInt64, Utf8};
    Fields::from(vec![
        col("index", UInt64, false),
        col("ts_ns", UInt64, false),
        col("time", timestamp(), true),
        col("probe", Utf8, false),
        col("kind", Utf8, false),
        col("tid", UInt32, false),
        col("comm", Utf8, false),
        col("note", Utf8, false),
        col("folio", UInt64, true),
        col("entry", UInt64, true),
        col("folio_swap", UInt64, true),
        col("refcount", Int32, true),
        col("mapcount", Int32, true),
        col("pincount", Int32, true),
        col("flags", list_of(Utf8), true),
        col("ret", Int64, true),
        col("ret_text", Utf8, true),
        col("addr", UInt64, true),
    ])
}

fn evidence_item() -> FieldRef {
    Arc::new(Field::new(
        "item",
        DataType::Struct(evidence_fields()),
        false,
    ))
}

/// The columns of `findings.parquet`: one row per finding.
pub fn finding_schema() -> SchemaRef {
    use DataType::{UInt32, UInt64, UInt8, Utf8};
    let mut fields: Vec<Field> = identity_fields().into();
    fields.extend([
        col("finding_id", UInt64, false),
        col("rule", dict(UInt8), false),
        col("severity", dict(UInt8), false),
        col("cause", dict(DataType::UInt16), true),
        col("confidence", dict(UInt8), false),
        col("lost_events", UInt64, false),
        col("confidence_note", Utf8, true),
        col("message", Utf8, false),
        col("entry", UInt64, true),
        col("swap_type", UInt8, true),
        col("swap_offset", UInt64, true),
        col("folio", UInt64, true),
        col("pid", UInt32, true),
        col("tid", UInt32, true),
        col("comm", Utf8, true),
        col("entries", list_of(UInt64), false),
        col("folios", list_of(UInt64), false),
        col("tids", list_of(UInt32), false),
        col("first_index", UInt64, true),
        col("last_index", UInt64, true),
        col("first_ts_ns", UInt64, true),
        col("last_ts_ns", UInt64, true),
        col("first_time", timestamp(), true),
        col("last_time", timestamp(), true),
        col("evidence", DataType::List(evidence_item()), false),
    ]);
    Arc::new(Schema::new(fields))
}

/// Who and where a capture comes from, from its header: the first
/// columns of every row, and the clocks that turn event times into wall
/// time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capture {
    /// `None` where the header leaves it empty (simulated traces).
    pub host: Option<String>,
    pub kernel_release: Option<String>,
    pub boot_id: Option<String>,
    pub capture_id: String,
    start_monotonic_ns: u64,
    /// `None` when the header did not record the wall clock.
    start_realtime_ns: Option<u64>,
}

impl Capture {
    /// The capture `header` describes; `capture_id` names it, or, when
    /// `None`, [`default_capture_id`] does.
    pub fn of(header: &TraceHeader, capture_id: Option<String>) -> Capture {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        Capture {
            host: some(&header.hostname),
            kernel_release: some(&header.kernel_release),
            boot_id: some(&header.boot_id),
            capture_id: capture_id.unwrap_or_else(|| default_capture_id(header)),
            start_monotonic_ns: header.start_monotonic_ns,
            start_realtime_ns: (header.start_realtime_ns != 0).then_some(header.start_realtime_ns),
        }
    }

    /// Wall-clock nanoseconds since the epoch of a monotonic `ts_ns`.
    fn wall(&self, ts_ns: u64) -> Option<i64> {
        let real = i128::from(self.start_realtime_ns?);
        let t = real + i128::from(ts_ns) - i128::from(self.start_monotonic_ns);
        i64::try_from(t).ok()
    }

    /// The four identity columns for `rows` rows: dictionary arrays of one
    /// value, which Parquet stores in a few bytes per page.
    fn columns(&self, rows: usize) -> Result<[ArrayRef; 4], ArrowError> {
        Ok([
            constant(self.host.as_deref(), rows)?,
            constant(self.kernel_release.as_deref(), rows)?,
            constant(self.boot_id.as_deref(), rows)?,
            constant(Some(&self.capture_id), rows)?,
        ])
    }
}

/// A capture's id when none is given: 16 hex digits of a hash of its
/// header (host, boot, clocks at the start, command line, origin), so the
/// same file always exports under the same id and two captures differ.
pub fn default_capture_id(header: &TraceHeader) -> String {
    use std::hash::Hasher;
    let mut h = siphasher::sip::SipHasher13::new();
    // Serializing a header cannot fail (strings, numbers and maps with
    // string keys); an empty hash input would still give an id.
    h.write(&serde_json::to_vec(header).unwrap_or_default());
    format!("{:016x}", h.finish())
}

fn constant(value: Option<&str>, rows: usize) -> Result<ArrayRef, ArrowError> {
    let Some(v) = value else {
        return Ok(new_null_array(&dict(DataType::UInt8), rows));
    };
    let keys = UInt8Array::from(vec![0u8; rows]);
    let values: ArrayRef = Arc::new(StringArray::from(vec![v]));
    Ok(Arc::new(DictionaryArray::<UInt8Type>::try_new(
        keys, values,
    )?))
}

/// Dictionary keys into a fixed list of names.
fn keyed<const N: usize>(
    keys: &mut UInt8Builder,
    names: [&str; N],
) -> Result<ArrayRef, ArrowError> {
    let values: ArrayRef = Arc::new(StringArray::from(names.to_vec()));
    Ok(Arc::new(DictionaryArray::<UInt8Type>::try_new(
        keys.finish(),
        values,
    )?))
}

/// A builder's contents as an array; the builder starts empty again.
fn finished<B: arrow_array::builder::ArrayBuilder>(b: &mut B) -> ArrayRef {
    b.finish()
}

/// Rows of `events.parquet` being gathered.
pub struct EventColumns {
    capture: Capture,
    /// Attach mode per probe id (index into [`MODES`]), from the plan.
    modes: Vec<Option<u8>>,
    rows: usize,
    index: UInt64Builder,
    ty: UInt8Builder,
    ts_ns: UInt64Builder,
    time: TimestampNanosecondBuilder,
    /// Keys are the probe ids themselves; the names are made when the
    /// batch is taken, up to the largest id in it.
    probe: UInt16Builder,
    max_probe: u16,
    probe_id: UInt16Builder,
    kind: UInt8Builder,
    attach_mode: UInt8Builder,
    cpu: UInt32Builder,
    pid: UInt32Builder,
    tid: UInt32Builder,
    comm: StringBuilder,
    task_start: UInt32Builder,
    folio: UInt64Builder,
    entry: UInt64Builder,
    swap_type: UInt8Builder,
    swap_offset: UInt64Builder,
    entry_raw: UInt64Builder,
    entry_partial: BooleanBuilder,
    nr: UInt32Builder,
    pte: UInt64Builder,
    pfn: UInt64Builder,
    addr: UInt64Builder,
    ret: Int64Builder,
    errno: StringDictionaryBuilder<UInt8Type>,
    arg: UInt32Builder,
    pin: BooleanBuilder,
    valid: UInt8Builder,
    folio_flags: ListBuilder<StringBuilder>,
    state_bits: UInt32Builder,
    flags_raw: UInt64Builder,
    refcount: Int32Builder,
    mapcount: Int32Builder,
    page_mapcount: Int32Builder,
    large_mapcount: Int32Builder,
    entire_mapcount: Int32Builder,
    pincount: Int32Builder,
    maybe_dma_pinned: BooleanBuilder,
    nr_pages: UInt32Builder,
    folio_swap: UInt64Builder,
    mapping: UInt64Builder,
    folio_index: UInt64Builder,
    lost_total: UInt64Builder,
}

impl EventColumns {
    pub fn new(capture: Capture, header: &TraceHeader) -> Self {
        let mut modes = vec![None; MAX_PROBES as usize];
        for p in &header.plan {
            let id = detector_common::ProbeId::from_name(&p.probe);
            let slot = id.and_then(|id| modes.get_mut(id as usize));
            if let Some(slot) = slot {
                *slot = MODES.iter().position(|m| *m == p.mode).map(|k| k as u8);
            }
        }
        EventColumns {
            capture,
            modes,
            rows: 0,
            index: UInt64Builder::new(),
            ty: UInt8Builder::new(),
            ts_ns: UInt64Builder::new(),
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            probe: UInt16Builder::new(),
            max_probe: 0,
            probe_id: UInt16Builder::new(),
            kind: UInt8Builder::new(),
            attach_mode: UInt8Builder::new(),
            cpu: UInt32Builder::new(),
            pid: UInt32Builder::new(),
            tid: UInt32Builder::new(),
            comm: StringBuilder::new(),
            task_start: UInt32Builder::new(),
            folio: UInt64Builder::new(),
            entry: UInt64Builder::new(),
            swap_type: UInt8Builder::new(),
            swap_offset: UInt64Builder::new(),
            entry_raw: UInt64Builder::new(),
            entry_partial: BooleanBuilder::new(),
            nr: UInt32Builder::new(),
            pte: UInt64Builder::new(),
            pfn: UInt64Builder::new(),
            addr: UInt64Builder::new(),
            ret: Int64Builder::new(),
            errno: StringDictionaryBuilder::new(),
            arg: UInt32Builder::new(),
            pin: BooleanBuilder::new(),
            valid: UInt8Builder::new(),
            folio_flags: ListBuilder::new(StringBuilder::new()).with_field(Field::new(
                "item",
                DataType::Utf8,
                false,
            )),
            state_bits: UInt32Builder::new(),
            flags_raw: UInt64Builder::new(),
            refcount: Int32Builder::new(),
            mapcount: Int32Builder::new(),
            page_mapcount: Int32Builder::new(),
            large_mapcount: Int32Builder::new(),
            entire_mapcount: Int32Builder::new(),
            pincount: Int32Builder::new(),
            maybe_dma_pinned: BooleanBuilder::new(),
            nr_pages: UInt32Builder::new(),
            folio_swap: UInt64Builder::new(),
            mapping: UInt64Builder::new(),
            folio_index: UInt64Builder::new(),
            lost_total: UInt64Builder::new(),
        }
    }

    /// Rows gathered since the last [`take`](Self::take).
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// One row for the item at stream position `index`.
    pub fn push(&mut self, index: u64, item: &StreamItem) -> Result<(), ArrowError> {
        self.rows += 1;
        self.index.append_value(index);
        let (ts, probe) = match item {
            StreamItem::Event(e) => (e.ts_ns, e.probe),
            StreamItem::Lost { ts_ns, probe, .. } => (*ts_ns, *probe),
        };
        self.ts_ns.append_value(ts);
        self.time.append_option(self.capture.wall(ts));
        self.probe.append_value(probe);
        self.max_probe = self.max_probe.max(probe);
        self.probe_id.append_value(probe);
        self.attach_mode
            .append_option(self.modes.get(usize::from(probe)).copied().flatten());
        match item {
            StreamItem::Event(e) => self.event(e),
            StreamItem::Lost { total, .. } => {
                self.ty.append_value(1);
                self.kind.append_value(KIND_LOST);
                self.lost_total.append_value(*total);
                self.event_nulls();
                self.state_nulls();
                Ok(())
            }
        }
    }

    fn event(&mut self, e: &detector_common::Event) -> Result<(), ArrowError> {
        let has = |bit: u8| e.valid & bit != 0;
        let opt = |bit: u8, v: u64| has(bit).then_some(v);
        self.ty.append_value(0);
        self.kind.append_value(match e.event_kind() {
            Some(EventKind::Enter) => 0,
            Some(EventKind::Exit) => 1,
            Some(EventKind::Tracepoint) => 2,
            None => KIND_UNKNOWN,
        });
        self.lost_total.append_null();
        self.cpu.append_value(e.cpu);
        self.pid.append_value(e.pid);
        self.tid.append_value(e.tid);
        self.comm.append_value(e.comm_str());
        self.task_start
            .append_option((e.task_start != 0).then_some(e.task_start));
        self.folio.append_option(opt(V_FOLIO, e.folio));
        let entry = e.swap_entry();
        self.entry.append_option(entry);
        self.swap_type
            .append_option(entry.map(|v| swp_type(v) as u8));
        self.swap_offset.append_option(entry.map(swp_offset));
        self.entry_raw.append_option(opt(V_ENTRY, e.entry));
        self.entry_partial.append_value(has(V_ENTRY_PARTIAL));
        self.nr.append_value(e.nr);
        self.pte.append_option(opt(V_PTE, e.pte));
        let present = e.pte & (PTE_PRESENT | PTE_PROTNONE) != 0;
        self.pfn
            .append_option((has(V_PTE) && present).then_some((e.pte & PFN_MASK) >> 12));
        self.addr.append_option(opt(V_ADDR, e.addr));
        self.ret.append_option(has(V_RET).then_some(e.ret));
        match errno_name(e.ret).filter(|_| has(V_RET)) {
            Some(name) => {
                self.errno.append(name)?;
            }
            None => self.errno.append_null(),
        }
        self.arg.append_value(e.arg);
        self.pin.append_value(has(V_PIN));
        self.valid.append_value(e.valid);
        if !has(V_FOLIO_STATE) {
            self.state_nulls();
            return Ok(());
        }
        for f in flags::set(e.f_state) {
            self.folio_flags.values().append_value(f.name);
        }
        self.folio_flags.append(true);
        self.state_bits.append_value(e.f_state);
        self.flags_raw.append_value(e.f_flags);
        self.refcount.append_value(e.f_refcount);
        self.mapcount.append_value(e.mapcount());
        self.page_mapcount.append_value(e.f_mapcount);
        self.large_mapcount.append_value(e.f_large_mapcount);
        self.entire_mapcount.append_value(e.f_entire_mapcount);
        self.pincount.append_value(e.f_pincount);
        self.maybe_dma_pinned.append_value(e.maybe_dma_pinned());
        self.nr_pages.append_value(e.f_nr_pages);
        // Kept whatever the flags say, as the JSON lines keep it: it is the
        // folio's entry only while `swapcache` is set.
        self.folio_swap.append_value(e.f_swap);
        self.mapping.append_value(e.f_mapping);
        self.folio_index.append_value(e.f_index);
        Ok(())
    }

    /// A lost-event row has no task and no event fields.
    fn event_nulls(&mut self) {
        self.cpu.append_null();
        self.pid.append_null();
        self.tid.append_null();
        self.comm.append_null();
        self.task_start.append_null();
        self.folio.append_null();
        self.entry.append_null();
        self.swap_type.append_null();
        self.swap_offset.append_null();
        self.entry_raw.append_null();
        self.entry_partial.append_null();
        self.nr.append_null();
        self.pte.append_null();
        self.pfn.append_null();
        self.addr.append_null();
        self.ret.append_null();
        self.errno.append_null();
        self.arg.append_null();
        self.pin.append_null();
        self.valid.append_null();
    }

    fn state_nulls(&mut self) {
        self.folio_flags.append_null();
        self.state_bits.append_null();
        self.flags_raw.append_null();
        self.refcount.append_null();
        self.mapcount.append_null();
        self.page_mapcount.append_null();
        self.large_mapcount.append_null();
        self.entire_mapcount.append_null();
        self.pincount.append_null();
        self.maybe_dma_pinned.append_null();
        self.nr_pages.append_null();
        self.folio_swap.append_null();
        self.mapping.append_null();
        self.folio_index.append_null();
    }

    /// The rows gathered so far as one batch; the columns start empty
    /// again.
    pub fn take(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = std::mem::take(&mut self.rows);
        let names: Vec<String> = (0..=self.max_probe)
            .map(|p| ProbeName(p).to_string())
            .collect();
        self.max_probe = 0;
        let probe: ArrayRef = Arc::new(DictionaryArray::<UInt16Type>::try_new(
            self.probe.finish(),
            Arc::new(StringArray::from(names)),
        )?);
        let modes: [&str; 4] = MODES.map(AttachMode::as_str);
        let mut columns: Vec<ArrayRef> = self.capture.columns(rows)?.into();
        columns.extend([
            finished(&mut self.index),
            keyed(&mut self.ty, TYPES)?,
            finished(&mut self.ts_ns),
            finished(&mut self.time),
            probe,
            finished(&mut self.probe_id),
            keyed(&mut self.kind, KINDS)?,
            keyed(&mut self.attach_mode, modes)?,
            finished(&mut self.cpu),
            finished(&mut self.pid),
            finished(&mut self.tid),
            finished(&mut self.comm),
            finished(&mut self.task_start),
            finished(&mut self.folio),
            finished(&mut self.entry),
            finished(&mut self.swap_type),
            finished(&mut self.swap_offset),
            finished(&mut self.entry_raw),
            finished(&mut self.entry_partial),
            finished(&mut self.nr),
            finished(&mut self.pte),
            finished(&mut self.pfn),
            finished(&mut self.addr),
            finished(&mut self.ret),
            finished(&mut self.errno),
            finished(&mut self.arg),
            finished(&mut self.pin),
            finished(&mut self.valid),
            finished(&mut self.folio_flags),
            finished(&mut self.state_bits),
            finished(&mut self.flags_raw),
            finished(&mut self.refcount),
            finished(&mut self.mapcount),
            finished(&mut self.page_mapcount),
            finished(&mut self.large_mapcount),
            finished(&mut self.entire_mapcount),
            finished(&mut self.pincount),
            finished(&mut self.maybe_dma_pinned),
            finished(&mut self.nr_pages),
            finished(&mut self.folio_swap),
            finished(&mut self.mapping),
            finished(&mut self.folio_index),
            finished(&mut self.lost_total),
        ]);
        RecordBatch::try_new(event_schema(), columns)
    }
}

/// A `0x`-prefixed hex number, as findings carry addresses.
fn hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u64::from_str_radix(digits, 16).ok()
}

/// The evidence steps of the findings being gathered, column by column;
/// `offsets` delimits each finding's steps.
struct EvidenceColumns {
    offsets: Vec<i32>,
    index: UInt64Builder,
    ts_ns: UInt64Builder,
    time: TimestampNanosecondBuilder,
    probe: StringBuilder,
    kind: StringBuilder,
    tid: UInt32Builder,
    comm: StringBuilder,
    note: StringBuilder,
    folio: UInt64Builder,
    entry: UInt64Builder,
    folio_swap: UInt64Builder,
    refcount: Int32Builder,
    mapcount: Int32Builder,
    pincount: Int32Builder,
    flags: ListBuilder<StringBuilder>,
    ret: Int64Builder,
    ret_text: StringBuilder,
    addr: UInt64Builder,
}

impl EvidenceColumns {
    fn new() -> Self {
        EvidenceColumns {
            offsets: vec![0],
            index: UInt64Builder::new(),
            ts_ns: UInt64Builder::new(),
            time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
            probe: StringBuilder::new(),
            kind: StringBuilder::new(),
            tid: UInt32Builder::new(),
            comm: StringBuilder::new(),
            note: StringBuilder::new(),
            folio: UInt64Builder::new(),
            entry: UInt64Builder::new(),
            folio_swap: UInt64Builder::new(),
            refcount: Int32Builder::new(),
            mapcount: Int32Builder::new(),
            pincount: Int32Builder::new(),
            flags: ListBuilder::new(StringBuilder::new()).with_field(Field::new(
                "item",
                DataType::Utf8,
                false,
            )),
            ret: Int64Builder::new(),
            ret_text: StringBuilder::new(),
            addr: UInt64Builder::new(),
        }
    }

    fn push(&mut self, f: &Finding, capture: &Capture) -> Result<(), ArrowError> {
        for e in &f.evidence {
            let s = &e.state;
            self.index.append_value(e.index);
            self.ts_ns.append_value(e.ts_ns);
            self.time.append_option(capture.wall(e.ts_ns));
            self.probe.append_value(&e.probe);
            self.kind.append_value(&e.kind);
            self.tid.append_value(e.tid);
            self.comm.append_value(&e.comm);
            self.note.append_value(&e.note);
            self.folio.append_option(s.folio.as_deref().and_then(hex));
            self.entry
                .append_option(s.entry.as_deref().and_then(Entry::parse));
            self.folio_swap
                .append_option(s.folio_swap.as_deref().and_then(Entry::parse));
            self.refcount.append_option(s.refcount);
            self.mapcount.append_option(s.mapcount);
            self.pincount.append_option(s.pincount);
            match &s.flags {
                Some(names) => {
                    for n in names.split('|').filter(|n| !n.is_empty()) {
                        self.flags.values().append_value(n);
                    }
                    self.flags.append(true);
                }
                None => self.flags.append_null(),
            }
            self.ret.append_option(s.ret);
            self.ret_text.append_option(e.ret_display());
            self.addr.append_option(s.addr.as_deref().and_then(hex));
        }
        let last = self.offsets.last().copied().unwrap_or(0);
        let steps = i32::try_from(f.evidence.len())
            .map_err(|_| ArrowError::ComputeError("evidence chain too long".into()))?;
        self.offsets.push(last + steps);
        Ok(())
    }

    fn take(&mut self) -> Result<ArrayRef, ArrowError> {
        let columns: Vec<ArrayRef> = vec![
            finished(&mut self.index),
            finished(&mut self.ts_ns),
            finished(&mut self.time),
            finished(&mut self.probe),
            finished(&mut self.kind),
            finished(&mut self.tid),
            finished(&mut self.comm),
            finished(&mut self.note),
            finished(&mut self.folio),
            finished(&mut self.entry),
            finished(&mut self.folio_swap),
            finished(&mut self.refcount),
            finished(&mut self.mapcount),
            finished(&mut self.pincount),
            finished(&mut self.flags),
            finished(&mut self.ret),
            finished(&mut self.ret_text),
            finished(&mut self.addr),
        ];
        let steps = StructArray::try_new(evidence_fields(), columns, None)?;
        let offsets = std::mem::replace(&mut self.offsets, vec![0]);
        Ok(Arc::new(ListArray::try_new(
            evidence_item(),
            OffsetBuffer::new(offsets.into()),
            Arc::new(steps),
            None,
        )?))
    }
}

/// Rows of `findings.parquet` being gathered.
pub struct FindingColumns {
    capture: Capture,
    rows: usize,
    finding_id: UInt64Builder,
    rule: UInt8Builder,
    severity: UInt8Builder,
    cause: StringDictionaryBuilder<UInt16Type>,
    confidence: UInt8Builder,
    lost_events: UInt64Builder,
    confidence_note: StringBuilder,
    message: StringBuilder,
    entry: UInt64Builder,
    swap_type: UInt8Builder,
    swap_offset: UInt64Builder,
    folio: UInt64Builder,
    pid: UInt32Builder,
    tid: UInt32Builder,
    comm: StringBuilder,
    entries: ListBuilder<UInt64Builder>,
    folios: ListBuilder<UInt64Builder>,
    tids: ListBuilder<UInt32Builder>,
    first_index: UInt64Builder,
    last_index: UInt64Builder,
    first_ts_ns: UInt64Builder,
    last_ts_ns: UInt64Builder,
    first_time: TimestampNanosecondBuilder,
    last_time: TimestampNanosecondBuilder,
    evidence: EvidenceColumns,
}

fn list<T: arrow_array::builder::ArrayBuilder>(values: T, ty: DataType) -> ListBuilder<T> {
    ListBuilder::new(values).with_field(Field::new("item", ty, false))
}

impl FindingColumns {
    pub fn new(capture: Capture) -> Self {
        let ts = || TimestampNanosecondBuilder::new().with_timezone("UTC");
        FindingColumns {
            capture,
            rows: 0,
            finding_id: UInt64Builder::new(),
            rule: UInt8Builder::new(),
            severity: UInt8Builder::new(),
            cause: StringDictionaryBuilder::new(),
            confidence: UInt8Builder::new(),
            lost_events: UInt64Builder::new(),
            confidence_note: StringBuilder::new(),
            message: StringBuilder::new(),
            entry: UInt64Builder::new(),
            swap_type: UInt8Builder::new(),
            swap_offset: UInt64Builder::new(),
            folio: UInt64Builder::new(),
            pid: UInt32Builder::new(),
            tid: UInt32Builder::new(),
            comm: StringBuilder::new(),
            entries: list(UInt64Builder::new(), DataType::UInt64),
            folios: list(UInt64Builder::new(), DataType::UInt64),
            tids: list(UInt32Builder::new(), DataType::UInt32),
            first_index: UInt64Builder::new(),
            last_index: UInt64Builder::new(),
            first_ts_ns: UInt64Builder::new(),
            last_ts_ns: UInt64Builder::new(),
            first_time: ts(),
            last_time: ts(),
            evidence: EvidenceColumns::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// One row for `f`; `pid` is the process of the task its last evidence
    /// step names, when the caller still knows it (evidence names threads
    /// only).
    pub fn push(&mut self, f: &Finding, pid: Option<u32>) -> Result<(), ArrowError> {
        self.rows += 1;
        self.finding_id.append_value(f.id);
        let rule = RuleId::ALL.iter().position(|r| *r == f.rule).unwrap_or(0);
        self.rule.append_value(rule as u8);
        let sev = SEVERITIES
            .iter()
            .position(|s| *s == f.severity)
            .unwrap_or(0);
        self.severity.append_value(sev as u8);
        if f.cause.is_empty() {
            self.cause.append_null();
        } else {
            self.cause.append(&f.cause)?;
        }
        let c = &f.confidence;
        self.confidence
            .append_value(u8::from(c.level == ConfidenceLevel::Reduced));
        self.lost_events.append_value(c.lost_events);
        self.confidence_note
            .append_option((!c.note.is_empty()).then_some(&c.note));
        self.message.append_value(&f.explanation);
        let o = &f.objects;
        let entry = o.entries.first().and_then(|e| Entry::parse(e));
        self.entry.append_option(entry);
        self.swap_type
            .append_option(entry.map(|v| swp_type(v) as u8));
        self.swap_offset.append_option(entry.map(swp_offset));
        self.folio
            .append_option(o.folios.first().and_then(|s| hex(s)));
        let last = f.evidence.iter().max_by_key(|e| e.index);
        self.pid.append_option(pid.filter(|_| last.is_some()));
        self.tid.append_option(last.map(|e| e.tid));
        self.comm.append_option(last.map(|e| e.comm.as_str()));
        for e in &o.entries {
            if let Some(v) = Entry::parse(e) {
                self.entries.values().append_value(v);
            }
        }
        self.entries.append(true);
        for s in &o.folios {
            if let Some(v) = hex(s) {
                self.folios.values().append_value(v);
            }
        }
        self.folios.append(true);
        for t in &o.tids {
            self.tids.values().append_value(*t);
        }
        self.tids.append(true);
        let first_index = f.evidence.iter().map(|e| e.index).min();
        let last_index = f.evidence.iter().map(|e| e.index).max();
        let first_ts = f.evidence.iter().map(|e| e.ts_ns).min();
        let last_ts = f.evidence.iter().map(|e| e.ts_ns).max();
        self.first_index.append_option(first_index);
        self.last_index.append_option(last_index);
        self.first_ts_ns.append_option(first_ts);
        self.last_ts_ns.append_option(last_ts);
        self.first_time
            .append_option(first_ts.and_then(|t| self.capture.wall(t)));
        self.last_time
            .append_option(last_ts.and_then(|t| self.capture.wall(t)));
        self.evidence.push(f, &self.capture)
    }

    /// The findings gathered so far as one batch.
    pub fn take(&mut self) -> Result<RecordBatch, ArrowError> {
        let rows = std::mem::take(&mut self.rows);
        let rules = RuleId::ALL.iter().map(|r| r.name()).collect::<Vec<_>>();
        let rule: ArrayRef = Arc::new(DictionaryArray::<UInt8Type>::try_new(
            self.rule.finish(),
            Arc::new(StringArray::from(rules)),
        )?);
        let mut columns: Vec<ArrayRef> = self.capture.columns(rows)?.into();
        columns.extend([
            finished(&mut self.finding_id),
            rule,
            keyed(&mut self.severity, SEVERITIES.map(Severity::name))?,
            finished(&mut self.cause),
            keyed(&mut self.confidence, CONFIDENCES)?,
            finished(&mut self.lost_events),
            finished(&mut self.confidence_note),
            finished(&mut self.message),
            finished(&mut self.entry),
            finished(&mut self.swap_type),
            finished(&mut self.swap_offset),
            finished(&mut self.folio),
            finished(&mut self.pid),
            finished(&mut self.tid),
            finished(&mut self.comm),
            finished(&mut self.entries),
            finished(&mut self.folios),
            finished(&mut self.tids),
            finished(&mut self.first_index),
            finished(&mut self.last_index),
            finished(&mut self.first_ts_ns),
            finished(&mut self.last_ts_ns),
            finished(&mut self.first_time),
            finished(&mut self.last_time),
            self.evidence.take()?,
        ]);
        RecordBatch::try_new(finding_schema(), columns)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The names in the first cell of each table row between `from` and
    /// `to` in docs/parquet.md (`| \`a\`, \`b\` | ...` names two).
    fn documented(from: &str, to: &str) -> BTreeSet<String> {
        let doc = include_str!("../../../docs/parquet.md");
        let start = doc.find(from).unwrap();
        let end = start + doc[start..].find(to).unwrap();
        doc[start..end]
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .flat_map(|l| {
                let cell = l.split(" |").next().unwrap_or("");
                cell.split(", ")
                    .map(|n| n.trim_matches('`').to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn names(fields: &Fields) -> BTreeSet<String> {
        fields.iter().map(|f| f.name().clone()).collect()
    }

    #[test]
    fn docs_list_exactly_the_columns_written() {
        assert_eq!(
            documented("## `events.parquet`", "## `findings.parquet`"),
            names(event_schema().fields())
        );
        assert_eq!(
            documented("## `findings.parquet`", "Each step of `evidence`"),
            names(finding_schema().fields())
        );
        assert_eq!(
            documented("Each step of `evidence`", "## Queries"),
            names(&evidence_fields())
        );
    }

    #[test]
    fn wall_time_follows_the_capture_clocks() {
        let mut h = TraceHeader::new("t");
        h.start_monotonic_ns = 1_000;
        h.start_realtime_ns = 5_000_000;
        let c = Capture::of(&h, None);
        assert_eq!(c.wall(1_500), Some(5_000_500));
        // Before the start (an event stamped before the header's clocks
        // were read) is still a time.
        assert_eq!(c.wall(500), Some(4_999_500));
        assert_eq!(c.host, None);
        h.start_realtime_ns = 0;
        assert_eq!(Capture::of(&h, None).wall(1_500), None);
        // One id per header, another for another header.
        let id = default_capture_id(&h);
        assert_eq!(id.len(), 16);
        assert_eq!(Capture::of(&h, None).capture_id, id);
        h.boot_id = "b".into();
        assert_ne!(default_capture_id(&h), id);
        assert_eq!(Capture::of(&h, Some("x".into())).capture_id, "x");
    }
}
