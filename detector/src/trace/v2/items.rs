//! The items inside a v2 block, before compression: variable-size records
//! that carry only what differs from what the block already said.
//!
//! - Tasks (pid, tid, start time, comm) and shapes (probe, kind, valid
//!   bits) are defined once per block, inline just before the first item
//!   that uses them, and referred to by number after that.
//! - An event's time is a delta from the previous item's.
//! - Every other field is one of 20 columns, coded as the difference from
//!   the same column of the previous event of the same shape in the block
//!   (zero before the first): a bit mask says which columns differ, and
//!   only those follow. A probe never fills most columns, so they cost
//!   nothing; folio state read twice in a row costs nothing either.
//!
//! Every block starts with empty tables and zero predictions, so a block
//! decodes on its own. The byte-level description is in
//! `docs/trace-format.md`.

use detector_common::Event;
use hashbrown::HashMap;

use super::varint::{self, MAX_VARINT_LEN};
use crate::event::StreamItem;

/// Item codes: a lost-event total, a task definition, a shape definition;
/// `OP_EVENT + n` is an event of shape `n`.
pub(crate) const OP_LOST: u8 = 0x00;
pub(crate) const OP_TASK: u8 = 0x01;
pub(crate) const OP_SHAPE: u8 = 0x02;
pub(crate) const OP_EVENT: u8 = 0x10;
/// Shapes one block may define (every code from `OP_EVENT` up).
pub(crate) const MAX_SHAPES: usize = 256 - OP_EVENT as usize;
/// Tasks one block may define; a writer starts a new block rather than
/// define more.
pub(crate) const MAX_TASKS: usize = 4096;
/// Bytes of `comm`.
const COMM_LEN: usize = 16;

/// Columns coded against the prediction, in mask-bit order (the ones that
/// change most often first, so that the mask is usually one byte).
pub(crate) const COLUMNS: usize = 20;
const C_TASK: usize = 0;
const C_CPU: usize = 1;
const C_FOLIO: usize = 2;
const C_REFCOUNT: usize = 3;
const C_FLAGS: usize = 4;
const C_ENTRY: usize = 5;
const C_RET: usize = 6;
const C_STATE: usize = 7;
const C_MAPCOUNT: usize = 8;
const C_ADDR: usize = 9;
const C_PTE: usize = 10;
const C_SWAP: usize = 11;
const C_MAPPING: usize = 12;
const C_INDEX: usize = 13;
const C_NR: usize = 14;
const C_LARGE_MAPCOUNT: usize = 15;
const C_ENTIRE_MAPCOUNT: usize = 16;
const C_PINCOUNT: usize = 17;
const C_NR_PAGES: usize = 18;
const C_ARG: usize = 19;
/// Columns holding 64-bit values; the others hold 32-bit ones, whose
/// differences are taken modulo 2^32.
const WIDE: u32 = 1 << C_FOLIO
    | 1 << C_FLAGS
    | 1 << C_ENTRY
    | 1 << C_RET
    | 1 << C_ADDR
    | 1 << C_PTE
    | 1 << C_SWAP
    | 1 << C_MAPPING
    | 1 << C_INDEX;

/// Longest event item: code, time, mask and every column at full width.
pub(crate) const MAX_EVENT_ITEM: usize = 1 + 2 * MAX_VARINT_LEN + COLUMNS * MAX_VARINT_LEN;
/// Longest task plus shape definition.
pub(crate) const MAX_DEFINITIONS: usize = (1 + 3 * 5 + 1 + COMM_LEN) + (1 + 3 + 2);

type Columns = [u64; COLUMNS];

#[inline]
fn columns(e: &Event, task: u32) -> Columns {
    let mut c = [0u64; COLUMNS];
    c[C_TASK] = u64::from(task);
    c[C_CPU] = u64::from(e.cpu);
    c[C_FOLIO] = e.folio;
    c[C_REFCOUNT] = u64::from(e.f_refcount as u32);
    c[C_FLAGS] = e.f_flags;
    c[C_ENTRY] = e.entry;
    c[C_RET] = e.ret as u64;
    c[C_STATE] = u64::from(e.f_state);
    c[C_MAPCOUNT] = u64::from(e.f_mapcount as u32);
    c[C_ADDR] = e.addr;
    c[C_PTE] = e.pte;
    c[C_SWAP] = e.f_swap;
    c[C_MAPPING] = e.f_mapping;
    c[C_INDEX] = e.f_index;
    c[C_NR] = u64::from(e.nr);
    c[C_LARGE_MAPCOUNT] = u64::from(e.f_large_mapcount as u32);
    c[C_ENTIRE_MAPCOUNT] = u64::from(e.f_entire_mapcount as u32);
    c[C_PINCOUNT] = u64::from(e.f_pincount as u32);
    c[C_NR_PAGES] = u64::from(e.f_nr_pages);
    c[C_ARG] = u64::from(e.arg);
    c
}

/// Fills the column fields of `e` (the task is resolved by the caller).
#[inline]
fn set_columns(e: &mut Event, c: &Columns) {
    // Narrow columns hold values below 2^32 by construction (decoding
    // checks it), so these casts only drop zero bits.
    e.cpu = c[C_CPU] as u32;
    e.folio = c[C_FOLIO];
    e.f_refcount = c[C_REFCOUNT] as u32 as i32;
    e.f_flags = c[C_FLAGS];
    e.entry = c[C_ENTRY];
    e.ret = c[C_RET] as i64;
    e.f_state = c[C_STATE] as u32;
    e.f_mapcount = c[C_MAPCOUNT] as u32 as i32;
    e.addr = c[C_ADDR];
    e.pte = c[C_PTE];
    e.f_swap = c[C_SWAP];
    e.f_mapping = c[C_MAPPING];
    e.f_index = c[C_INDEX];
    e.nr = c[C_NR] as u32;
    e.f_large_mapcount = c[C_LARGE_MAPCOUNT] as u32 as i32;
    e.f_entire_mapcount = c[C_ENTIRE_MAPCOUNT] as u32 as i32;
    e.f_pincount = c[C_PINCOUNT] as u32 as i32;
    e.f_nr_pages = c[C_NR_PAGES] as u32;
    e.arg = c[C_ARG] as u32;
}

/// A column's value coded against its prediction: the zigzagged
/// difference, at the column's width.
#[inline(always)]
fn delta(col: usize, v: u64, p: u64) -> u64 {
    if WIDE & (1 << col) != 0 {
        varint::zigzag(v.wrapping_sub(p) as i64)
    } else {
        let d = (v as u32).wrapping_sub(p as u32) as i32;
        u64::from(((d << 1) ^ (d >> 31)) as u32)
    }
}

/// Inverse of [`delta`]; `None` when a narrow column's delta does not fit
/// in 32 bits.
#[inline(always)]
fn undelta(col: usize, d: u64, p: u64) -> Option<u64> {
    if WIDE & (1 << col) != 0 {
        Some(p.wrapping_add(varint::unzigzag(d) as u64))
    } else {
        let d = u32::try_from(d).ok()?;
        let diff = ((d >> 1) as i32) ^ -((d & 1) as i32);
        Some(u64::from((p as u32).wrapping_add(diff as u32)))
    }
}

#[inline]
fn shape_key(e: &Event) -> u32 {
    u32::from(e.probe) << 16 | u32::from(e.kind) << 8 | u32::from(e.valid)
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct TaskKey {
    pid: u32,
    tid: u32,
    start: u32,
    comm: [u8; COMM_LEN],
}

impl TaskKey {
    #[inline]
    fn of(e: &Event) -> Self {
        TaskKey {
            pid: e.pid,
            tid: e.tid,
            start: e.task_start,
            comm: e.comm,
        }
    }
}

/// Builds one block's items. Allocation-free once its tables have grown to
/// their working size (they are cleared, not dropped, between blocks).
pub(crate) struct Encoder {
    /// The block's items so far.
    pub(crate) raw: Vec<u8>,
    pub(crate) items: u32,
    /// Time of the block's first item.
    pub(crate) first_ts: u64,
    prev_ts: u64,
    shapes: HashMap<u32, u8>,
    tasks: HashMap<TaskKey, u32>,
    /// Per shape, the columns of its previous event in this block.
    pred: Box<[Columns; MAX_SHAPES]>,
    /// The last event's shape and task: most events repeat one of them.
    last_shape: Option<(u32, u8)>,
    last_task: Option<(TaskKey, u32)>,
}

impl Encoder {
    pub(crate) fn new(capacity: usize) -> Self {
        Encoder {
            raw: Vec::with_capacity(capacity),
            items: 0,
            first_ts: 0,
            prev_ts: 0,
            shapes: HashMap::with_capacity(MAX_SHAPES),
            tasks: HashMap::with_capacity(256),
            pred: Box::new([[0; COLUMNS]; MAX_SHAPES]),
            last_shape: None,
            last_task: None,
        }
    }

    /// Starts a new block: empty tables.
    pub(crate) fn reset(&mut self) {
        self.raw.clear();
        self.items = 0;
        self.shapes.clear();
        self.tasks.clear();
        self.last_shape = None;
        self.last_task = None;
    }

    #[inline]
    fn put_ts(&mut self, ts: u64) {
        if self.items == 0 {
            self.first_ts = ts;
            self.prev_ts = ts;
        }
        varint::put(
            &mut self.raw,
            varint::zigzag(ts.wrapping_sub(self.prev_ts) as i64),
        );
        self.prev_ts = ts;
    }

    /// Appends an event; `false` (and nothing written) when the block's
    /// task or shape table is full, so the caller must start a new block.
    #[inline]
    pub(crate) fn event(&mut self, e: &Event) -> bool {
        let key = shape_key(e);
        let shape = match self.last_shape {
            Some((k, s)) if k == key => Some(s),
            _ => self.shapes.get(&key).copied(),
        };
        let tkey = TaskKey::of(e);
        let task = match &self.last_task {
            Some((k, t)) if *k == tkey => Some(*t),
            _ => self.tasks.get(&tkey).copied(),
        };
        if (shape.is_none() && self.shapes.len() >= MAX_SHAPES)
            || (task.is_none() && self.tasks.len() >= MAX_TASKS)
        {
            return false;
        }
        let task = task.unwrap_or_else(|| self.define_task(tkey));
        let shape = shape.unwrap_or_else(|| self.define_shape(key, e));
        self.last_shape = Some((key, shape));
        self.last_task = Some((tkey, task));

        if self.items == 0 {
            self.first_ts = e.ts_ns;
            self.prev_ts = e.ts_ns;
        }
        // The item is built on the stack and appended at once: one
        // capacity check instead of one per byte.
        let mut b = [0u8; MAX_EVENT_ITEM];
        b[0] = OP_EVENT + shape;
        let ts_delta = varint::zigzag(e.ts_ns.wrapping_sub(self.prev_ts) as i64);
        self.prev_ts = e.ts_ns;
        let mut at = varint::put_at(&mut b, 1, ts_delta);
        let cols = columns(e, task);
        let pred = &mut self.pred[usize::from(shape)];
        // Every delta, then the mask, written out column by column so that
        // each column's width is a constant (a loop over the columns costs
        // three times as many instructions).
        let mut deltas = [0u64; COLUMNS];
        let mut mask = 0u32;
        macro_rules! code {
            ($($col:ident),*) => {$(
                deltas[$col] = delta($col, cols[$col], pred[$col]);
                mask |= u32::from(deltas[$col] != 0) << $col;
            )*};
        }
        code!(
            C_TASK,
            C_CPU,
            C_FOLIO,
            C_REFCOUNT,
            C_FLAGS,
            C_ENTRY,
            C_RET,
            C_STATE,
            C_MAPCOUNT,
            C_ADDR,
            C_PTE,
            C_SWAP,
            C_MAPPING,
            C_INDEX,
            C_NR,
            C_LARGE_MAPCOUNT,
            C_ENTIRE_MAPCOUNT,
            C_PINCOUNT,
            C_NR_PAGES,
            C_ARG
        );
        *pred = cols;
        at = varint::put_at(&mut b, at, u64::from(mask));
        let mut bits = mask;
        while bits != 0 {
            let col = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            at = varint::put_at(&mut b, at, deltas[col]);
        }
        self.raw.extend_from_slice(&b[..at]);
        self.items += 1;
        true
    }

    #[cold]
    fn define_task(&mut self, k: TaskKey) -> u32 {
        let t = self.tasks.len() as u32;
        self.tasks.insert(k, t);
        self.raw.push(OP_TASK);
        varint::put(&mut self.raw, u64::from(k.pid));
        varint::put(&mut self.raw, u64::from(k.tid));
        varint::put(&mut self.raw, u64::from(k.start));
        let len = COMM_LEN - k.comm.iter().rev().take_while(|&&c| c == 0).count();
        self.raw.push(len as u8);
        self.raw.extend_from_slice(&k.comm[..len]);
        t
    }

    #[cold]
    fn define_shape(&mut self, key: u32, e: &Event) -> u8 {
        let s = self.shapes.len() as u8;
        self.shapes.insert(key, s);
        self.pred[usize::from(s)] = [0; COLUMNS];
        self.raw.push(OP_SHAPE);
        varint::put(&mut self.raw, u64::from(e.probe));
        self.raw.push(e.kind);
        self.raw.push(e.valid);
        s
    }

    /// Appends a lost-event running total.
    pub(crate) fn lost(&mut self, ts_ns: u64, probe: u16, total: u64) {
        self.raw.push(OP_LOST);
        self.put_ts(ts_ns);
        varint::put(&mut self.raw, u64::from(probe));
        varint::put(&mut self.raw, total);
        self.items += 1;
    }
}

#[derive(Clone, Copy, Default)]
struct Shape {
    probe: u16,
    kind: u8,
    valid: u8,
}

#[derive(Clone, Copy, Default)]
struct Task {
    pid: u32,
    tid: u32,
    start: u32,
    comm: [u8; COMM_LEN],
}

/// Why a block's items do not decode (the block's checksum was good, so a
/// writer bug or a crafted file).
pub(crate) type DecodeError = &'static str;

/// Reads one block's items back. Its tables hold at most [`MAX_SHAPES`]
/// shapes and [`MAX_TASKS`] tasks whatever the block says.
pub(crate) struct Decoder {
    pos: usize,
    left: u32,
    prev_ts: u64,
    shapes: Vec<Shape>,
    tasks: Vec<Task>,
    pred: Box<[Columns; MAX_SHAPES]>,
}

impl Decoder {
    pub(crate) fn new() -> Self {
        Decoder {
            pos: 0,
            left: 0,
            prev_ts: 0,
            shapes: Vec::with_capacity(MAX_SHAPES),
            tasks: Vec::new(),
            pred: Box::new([[0; COLUMNS]; MAX_SHAPES]),
        }
    }

    /// Starts a block of `items` items whose first item is at `first_ts`.
    pub(crate) fn start(&mut self, items: u32, first_ts: u64) {
        self.pos = 0;
        self.left = items;
        self.prev_ts = first_ts;
        self.shapes.clear();
        self.tasks.clear();
    }

    /// Items of the block not yet decoded.
    #[inline]
    pub(crate) fn left(&self) -> u32 {
        self.left
    }

    /// After the last item: the block must end there.
    pub(crate) fn check_end(&self, raw: &[u8]) -> Result<(), DecodeError> {
        if self.pos == raw.len() {
            Ok(())
        } else {
            Err("bytes left after the block's last item")
        }
    }

    #[inline]
    fn ts(&mut self, raw: &[u8]) -> Result<u64, DecodeError> {
        let d = varint::get(raw, &mut self.pos).ok_or("item time cut short")?;
        self.prev_ts = self.prev_ts.wrapping_add(varint::unzigzag(d) as u64);
        Ok(self.prev_ts)
    }

    /// Decodes the next item of the block into `out` (in place when `out`
    /// already holds an event). Call only while [`left`](Self::left) > 0.
    #[inline]
    pub(crate) fn next(&mut self, raw: &[u8], out: &mut StreamItem) -> Result<(), DecodeError> {
        loop {
            let op = *raw.get(self.pos).ok_or("the block's items end early")?;
            self.pos += 1;
            match op {
                OP_LOST => {
                    let ts_ns = self.ts(raw)?;
                    let probe = varint::get(raw, &mut self.pos)
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or("bad probe in a lost item")?;
                    let total = varint::get(raw, &mut self.pos).ok_or("bad lost total")?;
                    *out = StreamItem::Lost {
                        ts_ns,
                        probe,
                        total,
                    };
                    self.left -= 1;
                    return Ok(());
                }
                OP_TASK => self.define_task(raw)?,
                OP_SHAPE => self.define_shape(raw)?,
                op if op >= OP_EVENT => {
                    self.event(raw, usize::from(op - OP_EVENT), out)?;
                    self.left -= 1;
                    return Ok(());
                }
                _ => return Err("unknown item code"),
            }
        }
    }

    #[inline]
    fn event(&mut self, raw: &[u8], shape: usize, out: &mut StreamItem) -> Result<(), DecodeError> {
        let s = *self
            .shapes
            .get(shape)
            .ok_or("event of an undefined shape")?;
        let ts = self.ts(raw)?;
        let mask = varint::get(raw, &mut self.pos)
            .and_then(|m| u32::try_from(m).ok())
            .filter(|m| m >> COLUMNS == 0)
            .ok_or("bad column mask")?;
        let pred = &mut self.pred[shape];
        let mut bits = mask;
        while bits != 0 {
            let col = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let d = varint::get(raw, &mut self.pos).ok_or("column cut short")?;
            pred[col] = undelta(col, d, pred[col]).ok_or("32-bit column out of range")?;
        }
        let t = usize::try_from(pred[C_TASK])
            .ok()
            .and_then(|t| self.tasks.get(t))
            .ok_or("event of an undefined task")?;
        if !matches!(out, StreamItem::Event(_)) {
            *out = StreamItem::Event(Event::default());
        }
        if let StreamItem::Event(e) = out {
            e.ts_ns = ts;
            e.probe = s.probe;
            e.kind = s.kind;
            e.valid = s.valid;
            e.pid = t.pid;
            e.tid = t.tid;
            e.task_start = t.start;
            e.comm = t.comm;
            set_columns(e, pred);
        }
        Ok(())
    }

    #[cold]
    fn define_task(&mut self, raw: &[u8]) -> Result<(), DecodeError> {
        if self.tasks.len() >= MAX_TASKS {
            return Err("more tasks than a block may define");
        }
        let mut u32_field = || {
            varint::get(raw, &mut self.pos)
                .and_then(|v| u32::try_from(v).ok())
                .ok_or("bad task definition")
        };
        let (pid, tid, start) = (u32_field()?, u32_field()?, u32_field()?);
        let len = usize::from(*raw.get(self.pos).ok_or("bad task definition")?);
        self.pos += 1;
        if len > COMM_LEN {
            return Err("task name longer than 16 bytes");
        }
        let name = raw
            .get(self.pos..self.pos + len)
            .ok_or("bad task definition")?;
        self.pos += len;
        let mut comm = [0u8; COMM_LEN];
        comm[..len].copy_from_slice(name);
        self.tasks.push(Task {
            pid,
            tid,
            start,
            comm,
        });
        Ok(())
    }

    #[cold]
    fn define_shape(&mut self, raw: &[u8]) -> Result<(), DecodeError> {
        if self.shapes.len() >= MAX_SHAPES {
            return Err("more shapes than a block may define");
        }
        let probe = varint::get(raw, &mut self.pos)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or("bad shape definition")?;
        let kv = raw
            .get(self.pos..self.pos + 2)
            .ok_or("bad shape definition")?;
        let (kind, valid) = (kv[0], kv[1]);
        self.pos += 2;
        self.pred[self.shapes.len()] = [0; COLUMNS];
        self.shapes.push(Shape { probe, kind, valid });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> Event {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(if i.is_multiple_of(3) {
            b"kswa"
        } else {
            b"fio\0"
        });
        comm[15] = (i % 2) as u8; // bytes after a NUL are kept too
        Event {
            ts_ns: 1_000_000 + i * 37 - (i % 5) * 60,
            folio: 0xffff_ea00_0000_0000 + (i % 7) * 64,
            entry: (1 << 58) | (i * 3),
            ret: if i.is_multiple_of(4) {
                -17
            } else {
                (i * 11) as i64
            },
            f_refcount: (i % 9) as i32 - 4,
            f_mapcount: -1,
            f_pincount: i32::MIN + i as i32,
            f_flags: u64::MAX - i,
            pid: 100 + (i % 3) as u32,
            tid: 200 + (i % 5) as u32,
            task_start: (i % 3) as u32 * 1_000_000_007,
            cpu: (i % 2) as u32,
            arg: u32::MAX - (i as u32),
            probe: (i % 7) as u16 * 300,
            kind: (i % 3) as u8,
            valid: (i % 5 * 29) as u8,
            comm,
            ..Event::default()
        }
    }

    fn decode_all(enc: &Encoder) -> Vec<StreamItem> {
        let mut d = Decoder::new();
        d.start(enc.items, enc.first_ts);
        let mut out = Vec::new();
        let mut slot = StreamItem::Event(Event::default());
        while d.left() > 0 {
            d.next(&enc.raw, &mut slot).unwrap();
            out.push(slot);
        }
        d.check_end(&enc.raw).unwrap();
        out
    }

    #[test]
    fn items_round_trip_exactly() {
        let mut enc = Encoder::new(1 << 16);
        let mut want = Vec::new();
        for i in 0..2000u64 {
            let e = ev(i);
            assert!(enc.event(&e));
            want.push(StreamItem::Event(e));
            if i % 97 == 0 {
                enc.lost(i * 5, (i % 40) as u16, i * i);
                want.push(StreamItem::Lost {
                    ts_ns: i * 5,
                    probe: (i % 40) as u16,
                    total: i * i,
                });
            }
        }
        assert_eq!(decode_all(&enc), want);
        // A second block on the same encoder starts from scratch.
        enc.reset();
        assert!(enc.event(&ev(5)));
        assert_eq!(decode_all(&enc), vec![StreamItem::Event(ev(5))]);
    }

    #[test]
    fn full_tables_refuse_without_writing() {
        let mut enc = Encoder::new(1 << 16);
        for i in 0..MAX_SHAPES as u64 {
            assert!(enc.event(&Event {
                probe: i as u16,
                ..Event::default()
            }));
        }
        let before = enc.raw.len();
        assert!(!enc.event(&Event {
            probe: 9999,
            ..Event::default()
        }));
        assert_eq!(enc.raw.len(), before);
        // A known shape with a new task still fits.
        assert!(enc.event(&Event {
            probe: 3,
            tid: 77,
            ..Event::default()
        }));
        enc.reset();
        for i in 0..MAX_TASKS as u32 {
            assert!(enc.event(&Event {
                tid: i,
                ..Event::default()
            }));
        }
        assert!(!enc.event(&Event {
            tid: u32::MAX,
            ..Event::default()
        }));
        assert_eq!(decode_all(&enc).len(), MAX_TASKS);
    }

    #[test]
    fn damaged_items_are_errors_not_panics() {
        let mut enc = Encoder::new(1 << 16);
        for i in 0..50 {
            assert!(enc.event(&ev(i)));
        }
        let good = enc.raw.clone();
        for cut in 0..good.len() {
            let mut d = Decoder::new();
            d.start(enc.items, enc.first_ts);
            let mut slot = StreamItem::Event(Event::default());
            let mut ok = true;
            while d.left() > 0 && ok {
                ok = d.next(&good[..cut], &mut slot).is_ok();
            }
            assert!(!ok || d.check_end(&good[..cut]).is_err(), "cut {cut}");
        }
        for at in 0..good.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= x;
                let mut d = Decoder::new();
                d.start(enc.items, enc.first_ts);
                let mut slot = StreamItem::Event(Event::default());
                while d.left() > 0 {
                    if d.next(&bad, &mut slot).is_err() {
                        break;
                    }
                }
            }
        }
    }
}
