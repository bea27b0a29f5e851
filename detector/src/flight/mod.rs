//! The flight recorder: the last seconds of the stream kept in memory, and
//! a self-contained trace (a *snapshot*) written when a finding at or above
//! a severity appears, so that a race seen once in days leaves its
//! explanation on disk when it happens.
//!
//! - [`ring`]: the bounded buffer (stream time and bytes).
//! - [`store`]: the snapshot directory (budgets, names, atomic writes).
//! - [`manifest`]: the `.json` next to each snapshot.
//! - this module: triggers, merging of repeats, budgets and the rate limit,
//!   writing and closing snapshots.
//!
//! A snapshot is an ordinary trace (`detector replay` reads it): the
//! capture's header, lost-total records for the losses before the window,
//! the ring from `keep` before the trigger (earlier when the trigger's
//! evidence starts earlier and the ring still holds it), the trigger, and
//! `after` more. See `docs/flight-recorder.md`.

mod manifest;
mod policy;
mod ring;
mod store;
#[cfg(test)]
mod tests;

pub use manifest::{
    Covered, EvidenceCover, Losses, Manifest, PolicyRecord, SnapshotState, Window, COVERED_MAX,
    MANIFEST_VERSION,
};
pub use policy::{FlightPolicy, SnapshotOn, MIN_MEMORY};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

use crate::analyzer::{Finding, RuleId, Severity};
use crate::event::{monotonic_ns, ProbeName, StreamItem};
use crate::stream::{Ctx, Sink};
use crate::trace::{TraceEnd, TraceError, TraceFormat, TraceHeader, TraceWriter};

use ring::{apply_lost, LostTotals, Ring};
use store::{realtime_now_ns, Store, MANIFEST_EXT, TRACE_EXT};

/// Snapshots written at the same time, at most: a finding whose evidence
/// starts before every open snapshot's window gets its own.
const MAX_OPEN: usize = 4;
/// Closed snapshots' findings remembered for the cool-down, at most.
const RECENT_MAX: usize = 4096;
/// Notices kept until taken.
const NOTICES_MAX: usize = 256;
/// A day of stream time.
const DAY_NS: u64 = 86_400_000_000_000;
/// The directory is read again, when a budget refuses, at most this often.
const RESCAN_NS: u64 = 1_000_000_000;
/// Room kept, per snapshot, for what is written when it closes (the
/// trace's footer, the manifest) so that the byte budgets hold.
const CLOSE_RESERVE: u64 = 64 << 10;
/// Items reach userspace a little after their timestamps (ring-buffer
/// wakeups, batches): the clock closes a quiet stream's snapshot only this
/// long after its after-window, so that late items still get in.
const TICK_GRACE_NS: u64 = 1_000_000_000;
/// A refused snapshot is said at most this often (stream time).
const REFUSAL_NOTICE_NS: u64 = 60_000_000_000;

#[derive(Debug, Error)]
pub enum FlightError {
    #[error("invalid flight recorder settings: {0}")]
    Policy(String),
    #[error(
        "cannot use {dir} for snapshots: {error}; create it (writable by this user) or choose \
         another directory"
    )]
    Dir { dir: PathBuf, error: io::Error },
}

/// What the recorder did, for logs and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlightStats {
    /// Findings at or above the policy's severity.
    pub triggers: u64,
    /// Snapshots started and finished on disk.
    pub started: u64,
    pub written: u64,
    /// The same finding again: extended an open snapshot, or came within
    /// the cool-down of a written one.
    pub merged: u64,
    /// Another finding whose evidence an open snapshot's window holds.
    pub covered: u64,
    /// Not written: the directory's count or byte budget was full.
    pub suppressed_budget: u64,
    /// Not written: `per_day` snapshots in the last 24 hours.
    pub suppressed_rate: u64,
    /// Not written: too many snapshots open at once.
    pub suppressed_busy: u64,
    /// Near-miss snapshots removed to make room for a violation's.
    pub displaced: u64,
    /// Snapshots closed before their after-window ended (size or budget).
    pub cut: u64,
    /// Snapshots whose trigger's evidence begins before what the ring held.
    pub evidence_incomplete: u64,
    /// Snapshots that failed to write (their files removed).
    pub errors: u64,
    /// The ring: bytes it holds (allocated capacity), items, and the stream
    /// time between its oldest and newest item.
    pub buffered_bytes: u64,
    pub buffered_items: u64,
    pub buffered_span_ns: u64,
    pub peak_buffered_bytes: u64,
    pub open: u64,
    /// Our snapshots in the directory (as last counted).
    pub on_disk_count: u64,
    pub on_disk_bytes: u64,
    /// Notices dropped because nobody took them.
    pub notices_dropped: u64,
}

/// Something worth a log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub level: NoticeLevel,
    pub text: String,
}

/// A snapshot that was closed on disk: what a service says about it (the
/// agent's `snapshot` line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenSnapshot {
    pub trace: PathBuf,
    pub manifest: PathBuf,
    pub rule: RuleId,
    pub severity: Severity,
    /// The trigger finding's id (the live stream's).
    pub finding_id: u64,
    /// `complete`, `cut_size`, `cut_budget` or `stream_ended`.
    pub state: SnapshotState,
    pub trace_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeLevel {
    Info,
    Warn,
}

/// What makes two findings "the same": rule, severity and the objects
/// (entries and folios; the tasks only when the finding names neither).
/// Never the task alone, so one process racing on many folios gives one
/// snapshot per folio, not one for all.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    rule: RuleId,
    severity: Severity,
    objects: Vec<String>,
}

impl Key {
    fn of(f: &Finding) -> Self {
        let o = &f.objects;
        let mut objects: Vec<String> = o
            .entries
            .iter()
            .map(|e| format!("e:{e}"))
            .chain(o.folios.iter().map(|x| format!("f:{x}")))
            .collect();
        if objects.is_empty() {
            objects.extend(o.tids.iter().map(|t| format!("t:{t}")));
        }
        objects.sort_unstable();
        Key {
            rule: f.rule,
            severity: f.severity,
            objects,
        }
    }
}

/// A finding that may start a snapshot.
struct Trigger<'a> {
    /// The item that completed it.
    index: u64,
    ts: u64,
    f: &'a Finding,
    key: Key,
    /// Stream index of its earliest evidence.
    earliest: u64,
}

struct Recent {
    until_ns: u64,
}

/// A snapshot being written.
struct Open {
    writer: TraceWriter<File>,
    meta: Meta,
}

/// What an open snapshot knows besides its writer.
struct Meta {
    stem: String,
    /// The trigger's key first, then those of covered findings.
    keys: Vec<Key>,
    manifest: Manifest,
    /// Where the after-window ends, and how far repeats may push it.
    end_ns: u64,
    cap_ns: u64,
    /// Lost totals as of the last item written, and before the window.
    lost: LostTotals,
    base_lost: LostTotals,
}

pub struct FlightRecorder {
    policy: FlightPolicy,
    header: TraceHeader,
    /// The snapshots' trace format (v2 unless asked).
    format: TraceFormat,
    ring: Ring,
    store: Store,
    open: Vec<Open>,
    recent: HashMap<Key, Recent>,
    /// Stream times snapshots were started at, within the last day.
    started_at: VecDeque<u64>,
    /// Ages (ns) of our snapshots already on disk at start, counted in the
    /// rate limit from the first item on.
    seed_ages: Option<Vec<u64>>,
    last_index: u64,
    last_rescan_ns: Option<u64>,
    refusal_noticed_at: Option<u64>,
    stats: FlightStats,
    notices: VecDeque<Notice>,
    written: VecDeque<WrittenSnapshot>,
}

impl FlightRecorder {
    /// A recorder for a stream whose recording would start with `header`
    /// (the capture's: kernel, boot id, layout, plan, and the analyzer
    /// configuration the stream is analyzed with, which every snapshot
    /// records so that a replay uses it). Creates the directory when
    /// missing and counts the snapshots it already holds.
    pub fn new(header: &TraceHeader, policy: FlightPolicy) -> Result<Self, FlightError> {
        policy.validate()?;
        let store = Store::open(&policy.dir).map_err(|error| FlightError::Dir {
            dir: policy.dir.clone(),
            error,
        })?;
        let now_s = realtime_now_ns() / 1_000_000_000;
        let seed_ages = store
            .on_disk()
            .iter()
            .map(|d| {
                now_s
                    .saturating_sub(d.mtime_s)
                    .saturating_mul(1_000_000_000)
            })
            .filter(|&age| age < DAY_NS)
            .collect();
        let stats = FlightStats {
            on_disk_count: store.count(),
            on_disk_bytes: store.bytes(),
            ..FlightStats::default()
        };
        Ok(FlightRecorder {
            ring: Ring::new(policy.keep_ns(), policy.memory),
            policy,
            header: header.clone(),
            format: TraceFormat::default(),
            store,
            open: Vec::new(),
            recent: HashMap::new(),
            started_at: VecDeque::new(),
            seed_ages: Some(seed_ages),
            last_index: 0,
            last_rescan_ns: None,
            refusal_noticed_at: None,
            stats,
            notices: VecDeque::new(),
            written: VecDeque::new(),
        })
    }

    /// Snapshots in `format` instead of the default v2 (v1 for tools that
    /// read only v1). The budgets hold either way: they count the bytes
    /// written, and a snapshot's pre-window is estimated at the size of the
    /// items in memory, more than either format takes for them.
    pub fn with_format(mut self, format: TraceFormat) -> Self {
        self.format = format;
        self
    }

    pub fn policy(&self) -> &FlightPolicy {
        &self.policy
    }

    pub fn stats(&self) -> &FlightStats {
        &self.stats
    }

    /// Notices since the last call (snapshots written, refused, failed),
    /// oldest first.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        self.notices.drain(..).collect()
    }

    /// Snapshots closed on disk since the last call, oldest first (at most
    /// the last 256 when nobody takes them).
    pub fn take_written(&mut self) -> Vec<WrittenSnapshot> {
        self.written.drain(..).collect()
    }

    /// Every stream item in order, with the findings it completed (what a
    /// [`Sink::item`] is handed).
    pub fn item(&mut self, index: u64, item: &StreamItem, found: &[Finding]) {
        let ts = item.ts_ns();
        if let Some(ages) = self.seed_ages.take() {
            let mut at: Vec<u64> = ages.iter().map(|a| ts.saturating_sub(*a)).collect();
            at.sort_unstable();
            self.started_at.extend(at);
        }
        self.last_index = index;
        self.ring.push(index, item);
        let mut k = 0;
        while k < self.open.len() {
            if ts > self.open[k].meta.end_ns {
                let o = self.open.swap_remove(k);
                self.close(o, SnapshotState::Complete);
                continue;
            }
            match self.append(k, index, item) {
                Ok(None) => k += 1,
                Ok(Some(state)) => {
                    let o = self.open.swap_remove(k);
                    self.close(o, state);
                }
                Err(e) => {
                    let o = self.open.swap_remove(k);
                    self.abort(o, &e);
                }
            }
        }
        for f in found {
            self.consider(index, ts, f);
        }
        self.update_stats();
    }

    /// Between pulls, or when the stream is quiet: closes the snapshots
    /// whose after-window ended more than a second ago by the clock of the
    /// events (CLOCK_MONOTONIC).
    pub fn tick(&mut self) {
        self.tick_at(monotonic_ns());
    }

    /// As [`tick`](Self::tick), with the stream clock given.
    pub fn tick_at(&mut self, now_ns: u64) {
        let mut k = 0;
        while k < self.open.len() {
            if now_ns > self.open[k].meta.end_ns.saturating_add(TICK_GRACE_NS) {
                let o = self.open.swap_remove(k);
                self.close(o, SnapshotState::Complete);
            } else {
                k += 1;
            }
        }
        self.update_stats();
    }

    /// End of stream: `found` are the findings the analyzer's end
    /// completed (they may start snapshots, with no after-window); every
    /// open snapshot is closed.
    pub fn finish(&mut self, found: &[Finding]) {
        let now = self.ring.now();
        for f in found {
            self.consider(self.last_index, now, f);
        }
        for o in std::mem::take(&mut self.open) {
            let state = if o.meta.end_ns > now {
                SnapshotState::StreamEnded
            } else {
                SnapshotState::Complete
            };
            self.close(o, state);
        }
        self.update_stats();
    }

    fn update_stats(&mut self) {
        let s = &mut self.stats;
        s.buffered_bytes = self.ring.bytes();
        s.peak_buffered_bytes = s.peak_buffered_bytes.max(s.buffered_bytes);
        s.buffered_items = self.ring.len() as u64;
        s.buffered_span_ns = self
            .ring
            .oldest_ts()
            .map_or(0, |t| self.ring.now().saturating_sub(t));
        s.open = self.open.len() as u64;
        s.on_disk_count = self.store.count();
        s.on_disk_bytes = self.store.bytes();
    }

    fn notice(&mut self, level: NoticeLevel, text: String) {
        if self.notices.len() >= NOTICES_MAX {
            self.notices.pop_front();
            self.stats.notices_dropped += 1;
        }
        self.notices.push_back(Notice { level, text });
    }

    /// A finding of the stream: merged, covered, refused or a new snapshot.
    fn consider(&mut self, index: u64, ts: u64, f: &Finding) {
        if !self.policy.on.wants(f.severity) {
            return;
        }
        self.stats.triggers += 1;
        let key = Key::of(f);
        if let Some(o) = self.open.iter_mut().find(|o| o.meta.keys.contains(&key)) {
            let m = &mut o.meta;
            m.manifest.merged += 1;
            if m.keys.first() == Some(&key) {
                m.end_ns = m
                    .end_ns
                    .max(ts.saturating_add(self.policy.after_ns()))
                    .min(m.cap_ns);
            }
            self.stats.merged += 1;
            return;
        }
        if self.recent.get(&key).is_some_and(|r| r.until_ns >= ts) {
            self.stats.merged += 1;
            return;
        }
        let earliest = f.evidence.first().map_or(index, |e| e.index.min(index));
        // A snapshot started by a near miss never stands for a violation:
        // its name, and what the budget may remove, say near miss.
        if let Some(o) = self.open.iter_mut().find(|o| {
            o.meta.manifest.window.first_index <= earliest
                && o.meta.manifest.trigger.severity >= f.severity
        }) {
            let m = &mut o.meta;
            if m.manifest.covered.len() < COVERED_MAX {
                m.manifest.covered.push(Covered::of(f, index, ts));
                m.keys.push(key);
            } else {
                m.manifest.covered_more += 1;
            }
            self.stats.covered += 1;
            return;
        }
        self.start(&Trigger {
            index,
            ts,
            f,
            key,
            earliest,
        });
    }

    /// Whether the budgets leave room for a snapshot of about `estimate`
    /// bytes; a violation may displace near-miss snapshots.
    fn room_for(&mut self, ts: u64, estimate: u64, severity: Severity) -> bool {
        let fits = |s: &Self| {
            let count = s.store.count() + s.open.len() as u64 + 1;
            let bytes = s.committed_bytes() + estimate + CLOSE_RESERVE;
            count <= u64::from(s.policy.max_count) && bytes <= s.policy.max_bytes
        };
        if fits(self) {
            return true;
        }
        // The operator may have removed snapshots since the last look.
        if self
            .last_rescan_ns
            .is_none_or(|t| ts.saturating_sub(t) >= RESCAN_NS)
        {
            self.last_rescan_ns = Some(ts);
            if let Err(e) = self.store.rescan() {
                self.notice(
                    NoticeLevel::Warn,
                    format!(
                        "cannot read the snapshot directory {}: {e}",
                        self.store.dir().display()
                    ),
                );
            }
            if fits(self) {
                return true;
            }
        }
        if severity != Severity::Violation {
            return false;
        }
        // Which near-miss snapshots, oldest first, would make room; none
        // is removed unless removing them is enough.
        let count = self.store.count() + self.open.len() as u64 + 1;
        let bytes = self.committed_bytes() + estimate + CLOSE_RESERVE;
        let (mut over_count, mut over_bytes) = (
            count.saturating_sub(u64::from(self.policy.max_count)),
            bytes.saturating_sub(self.policy.max_bytes),
        );
        let mut victims = Vec::new();
        for d in self.store.on_disk() {
            if over_count == 0 && over_bytes == 0 {
                break;
            }
            if d.severity.is_some_and(|s| s < Severity::Violation) {
                victims.push(d.stem.clone());
                over_count = over_count.saturating_sub(1);
                over_bytes = over_bytes.saturating_sub(d.bytes);
            }
        }
        if over_count > 0 || over_bytes > 0 {
            return false;
        }
        for victim in victims {
            self.store.remove(&victim);
            self.stats.displaced += 1;
            self.notice(
                NoticeLevel::Warn,
                format!(
                    "removed near-miss snapshot {victim} to make room for a violation's (the \
                     snapshot budget is full)"
                ),
            );
        }
        true
    }

    /// Starts a snapshot for a trigger, when the limits allow.
    fn start(&mut self, t: &Trigger<'_>) {
        let (ts, f) = (t.ts, t.f);
        while self.started_at.front().is_some_and(|&t| t + DAY_NS <= ts) {
            self.started_at.pop_front();
        }
        if self.started_at.len() >= self.policy.per_day as usize {
            self.stats.suppressed_rate += 1;
            self.refused(t, "the per-day limit is reached");
            return;
        }
        if self.open.len() >= MAX_OPEN {
            self.stats.suppressed_busy += 1;
            self.refused(t, "too many snapshots are open at once");
            return;
        }
        let Some(ring_first) = self.ring.first_index() else {
            return;
        };
        let keep_from = self
            .ring
            .index_at(ts.saturating_sub(self.policy.keep_ns()))
            .unwrap_or(ring_first);
        let from = keep_from.min(t.earliest).max(ring_first);
        let items = self.ring.iter_from(from).count() as u64;
        let estimate = items * size_of::<StreamItem>() as u64;
        if !self.room_for(ts, estimate, f.severity) {
            self.stats.suppressed_budget += 1;
            self.refused(t, "the directory's snapshot budget is full");
            return;
        }
        let stem = self
            .store
            .new_stem(self.realtime_of(ts), f.rule, f.severity);
        match self.begin(&stem, t, from) {
            Ok(o) => {
                self.stats.started += 1;
                self.started_at.push_back(ts);
                if !o.meta.manifest.evidence.complete {
                    self.stats.evidence_incomplete += 1;
                }
                self.open.push(o);
            }
            Err(e) => self.failed(&stem, &e),
        }
    }

    /// Says a snapshot was refused: at most once a minute of stream time,
    /// so that a storm of findings is not a storm of log lines.
    fn refused(&mut self, t: &Trigger<'_>, why: &str) {
        if self
            .refusal_noticed_at
            .is_some_and(|at| t.ts.saturating_sub(at) < REFUSAL_NOTICE_NS)
        {
            return;
        }
        self.refusal_noticed_at = Some(t.ts);
        let s = &self.stats;
        let refused = s.suppressed_budget + s.suppressed_rate + s.suppressed_busy;
        self.notice(
            NoticeLevel::Warn,
            format!(
                "no snapshot for {} {} #{}: {why} ({refused} refused so far; later refusals \
                 within a minute are only counted)",
                t.f.rule, t.f.severity, t.f.id
            ),
        );
    }

    fn failed(&mut self, stem: &str, e: &SnapError) {
        self.store.remove(stem);
        self.stats.errors += 1;
        self.notice(
            NoticeLevel::Warn,
            format!("snapshot {stem} not written: {e}; its files were removed"),
        );
    }

    /// The wall-clock time of a stream time, from the header's clock pair
    /// (now when the header has none).
    fn realtime_of(&self, ts: u64) -> u64 {
        let h = &self.header;
        if h.start_realtime_ns == 0 {
            return realtime_now_ns();
        }
        if ts >= h.start_monotonic_ns {
            h.start_realtime_ns
                .saturating_add(ts - h.start_monotonic_ns)
        } else {
            h.start_realtime_ns
                .saturating_sub(h.start_monotonic_ns - ts)
        }
    }

    /// Creates the trace, writes the ring from `from` on and an `open`
    /// manifest.
    fn begin(&mut self, stem: &str, t: &Trigger<'_>, from: u64) -> Result<Open, SnapError> {
        let (index, ts, f, earliest) = (t.index, t.ts, t.f, t.earliest);
        let path = self.store.path(stem, TRACE_EXT);
        let mut header = self.header.clone();
        header.origin = format!(
            "flight recorder: {} {} in {}",
            f.rule,
            f.severity,
            if self.header.origin.is_empty() {
                "a stream"
            } else {
                &self.header.origin
            }
        );
        header.segment = 0;
        // The ring holds the stream's own items: a snapshot is never
        // redacted, whatever a recording of the same stream is.
        header.redacted = false;
        let mut writer = TraceWriter::create_format(&path, &header, self.format)?;
        let base_lost = self.ring.lost_before(from);
        let mut window = Window::default();
        let first_ts = self
            .ring
            .iter_from(from)
            .next()
            .map_or(ts, |(_, it)| it.ts_ns());
        for (p, &total) in base_lost.iter().enumerate() {
            if total > 0 {
                writer.write_lost(first_ts, p as u16, total)?;
                window.baseline_records += 1;
            }
        }
        let mut lost = base_lost;
        window.first_index = from;
        window.start_ns = first_ts;
        for (i, it) in self.ring.iter_from(from) {
            writer.write_item(it)?;
            note_item(&mut window, &mut lost, i, it);
        }
        writer.flush()?;
        window.short_of_keep = self
            .ring
            .dropped_ts()
            .is_some_and(|t| t >= ts.saturating_sub(self.policy.keep_ns()));
        let end_ns = ts.saturating_add(self.policy.after_ns());
        window.planned_end_ns = end_ns;
        let earliest_ns = f.evidence.first().map_or(ts, |e| e.ts_ns);
        let complete = earliest >= from;
        let evidence = EvidenceCover {
            earliest_index: earliest,
            earliest_ns,
            complete,
            note: if complete {
                String::new()
            } else {
                format!(
                    "the evidence starts at stream index {earliest} ({earliest_ns} ns), before \
                     the oldest item the ring still held (index {from}, {first_ts} ns): a replay \
                     of this snapshot lacks the start of the chain and may not reproduce the \
                     finding"
                )
            },
        };
        let h = &self.header;
        let manifest = Manifest {
            manifest_version: MANIFEST_VERSION,
            trace: format!("{stem}.{TRACE_EXT}"),
            state: SnapshotState::Open,
            trigger: f.clone(),
            trigger_index: index,
            trigger_ns: ts,
            merged: 0,
            covered: Vec::new(),
            covered_more: 0,
            kernel_release: h.kernel_release.clone(),
            boot_id: h.boot_id.clone(),
            hostname: h.hostname.clone(),
            detector_version: env!("CARGO_PKG_VERSION").to_string(),
            analyzer_config: h.analyzer_config.clone(),
            policy: PolicyRecord::of(&self.policy),
            window,
            evidence,
            lost: Losses::default(),
            trace_bytes: writer.bytes_written(),
        };
        let mut meta = Meta {
            stem: stem.to_string(),
            keys: vec![t.key.clone()],
            manifest,
            end_ns,
            cap_ns: ts.saturating_add(self.policy.after_max_ns()),
            lost,
            base_lost,
        };
        self.write_manifest(&mut meta)?;
        Ok(Open { writer, meta })
    }

    /// Writes one more item into the open snapshot `k`; `Some` when it must
    /// close now (size or budget).
    fn append(
        &mut self,
        k: usize,
        index: u64,
        item: &StreamItem,
    ) -> Result<Option<SnapshotState>, SnapError> {
        let o = &mut self.open[k];
        o.writer.write_item(item)?;
        note_item(&mut o.meta.manifest.window, &mut o.meta.lost, index, item);
        // One more item must fit besides what closing writes.
        let next = (2 * size_of::<StreamItem>()) as u64;
        if o.writer.bytes_written() + next + CLOSE_RESERVE >= self.policy.snapshot_bytes {
            return Ok(Some(SnapshotState::CutSize));
        }
        if self.committed_bytes() + next > self.policy.max_bytes {
            return Ok(Some(SnapshotState::CutBudget));
        }
        Ok(None)
    }

    /// Bytes the directory's snapshots take or will take: those on disk,
    /// and the open ones as written so far plus what closing adds.
    fn committed_bytes(&self) -> u64 {
        let open: u64 = self
            .open
            .iter()
            .map(|o| o.writer.bytes_written() + CLOSE_RESERVE)
            .sum();
        self.store.bytes() + open
    }

    /// Writes the manifest (atomically); returns its size.
    fn write_manifest(&self, o: &mut Meta) -> Result<u64, SnapError> {
        let mut per_probe = BTreeMap::new();
        let mut before = BTreeMap::new();
        let mut total = 0;
        for (p, (&now, &base)) in o.lost.iter().zip(o.base_lost.iter()).enumerate() {
            let name = ProbeName(p as u16).to_string();
            if now > base {
                per_probe.insert(name.clone(), now - base);
                total += now - base;
            }
            if base > 0 {
                before.insert(name, base);
            }
        }
        o.manifest.lost = Losses {
            total,
            per_probe,
            before_window: before,
        };
        let json = serde_json::to_vec_pretty(&o.manifest)
            .map_err(|e| SnapError::Io(io::Error::other(e.to_string())))?;
        Ok(self.store.write_manifest(&o.stem, &json)?)
    }

    /// Finishes the trace (footer, synced) and the manifest.
    fn close(&mut self, o: Open, state: SnapshotState) {
        let Open { writer, mut meta } = o;
        let end = TraceEnd::at(
            meta.manifest.window.end_ns.max(meta.manifest.trigger_ns),
            format!("flight recorder snapshot {}", state_name(state)),
        );
        let finished = writer
            .finish_into_inner(end)
            .map_err(SnapError::from)
            .and_then(|(summary, file)| {
                file.sync_all()?;
                Ok(summary.bytes)
            });
        let bytes = match finished {
            Ok(b) => b,
            Err(e) => {
                self.failed(&meta.stem, &e);
                return;
            }
        };
        meta.manifest.state = state;
        meta.manifest.window.planned_end_ns = meta.end_ns;
        meta.manifest.trace_bytes = bytes;
        let written = self
            .write_manifest(&mut meta)
            .and_then(|n| self.store.sync_dir().map(|()| n).map_err(SnapError::Io));
        let manifest_bytes = match written {
            Ok(n) => n,
            Err(e) => {
                self.failed(&meta.stem, &e);
                return;
            }
        };
        let m = &meta.manifest;
        self.store
            .add(&meta.stem, bytes + manifest_bytes, m.trigger.severity);
        if matches!(state, SnapshotState::CutSize | SnapshotState::CutBudget) {
            self.stats.cut += 1;
        }
        self.stats.written += 1;
        let text = format!(
            "wrote snapshot {} ({} {}, {} bytes, {})",
            self.store.path(&meta.stem, TRACE_EXT).display(),
            m.trigger.rule,
            m.trigger.severity,
            bytes,
            state_name(state)
        );
        if self.written.len() >= NOTICES_MAX {
            self.written.pop_front();
        }
        self.written.push_back(WrittenSnapshot {
            trace: self.store.path(&meta.stem, TRACE_EXT),
            manifest: self.store.path(&meta.stem, MANIFEST_EXT),
            rule: m.trigger.rule,
            severity: m.trigger.severity,
            finding_id: m.trigger.id,
            state,
            trace_bytes: bytes,
        });
        let until = m.window.end_ns.saturating_add(self.policy.cooldown_ns());
        self.remember(meta.keys, until);
        self.notice(NoticeLevel::Info, text);
    }

    /// A snapshot whose writing failed: its files removed, counted.
    fn abort(&mut self, o: Open, e: &SnapError) {
        let Open { writer, meta } = o;
        drop(writer);
        self.failed(&meta.stem, e);
    }

    fn remember(&mut self, keys: Vec<Key>, until_ns: u64) {
        if self.recent.len() + keys.len() > RECENT_MAX {
            let now = self.ring.now();
            self.recent.retain(|_, r| r.until_ns >= now);
        }
        while self.recent.len() + keys.len() > RECENT_MAX {
            let Some(k) = self
                .recent
                .iter()
                .min_by_key(|(_, r)| r.until_ns)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.recent.remove(&k);
        }
        for k in keys {
            self.recent.insert(k, Recent { until_ns });
        }
    }
}

fn note_item(w: &mut Window, lost: &mut LostTotals, index: u64, item: &StreamItem) {
    w.items += 1;
    w.last_index = index;
    w.end_ns = w.end_ns.max(item.ts_ns());
    match item {
        StreamItem::Event(_) => w.events += 1,
        StreamItem::Lost { probe, total, .. } => apply_lost(lost, *probe, *total),
    }
}

fn state_name(s: SnapshotState) -> &'static str {
    match s {
        SnapshotState::Open => "open",
        SnapshotState::Complete => "complete",
        SnapshotState::CutSize => "cut at its size limit",
        SnapshotState::CutBudget => "cut at the directory's byte budget",
        SnapshotState::StreamEnded => "cut short by the end of the stream",
    }
}

/// Why one snapshot failed (never fatal to the stream).
#[derive(Debug, Error)]
enum SnapError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The recorder as the pipeline's sink (or one of a sink's parts): items
/// and findings go to [`FlightRecorder::item`], pulls and idle waits close
/// after-windows by the source's clock (a live source has one; a file's
/// clock is its items), the end to [`FlightRecorder::finish`].
impl Sink for FlightRecorder {
    fn item(&mut self, index: u64, item: &StreamItem, found: &mut Vec<Finding>) -> io::Result<()> {
        FlightRecorder::item(self, index, item, found);
        Ok(())
    }
    fn pulled(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        if let Some(now) = ctx.source.clock_ns() {
            self.tick_at(now);
        }
        Ok(())
    }
    fn idle(&mut self, ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.pulled(ctx)
    }
    fn finish(&mut self, found: &mut Vec<Finding>, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        FlightRecorder::finish(self, found);
        Ok(())
    }
}
