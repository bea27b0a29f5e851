//! Findings and finding groups in text: the report's blocks and group
//! lines, and the one-line forms of a streaming printer (`live --plain`,
//! `record --analyze`). The TUI's rows are in [`super::row`].

use std::fmt;
use std::io::{self, Write};

use super::row::FindingRow;
use super::units::Secs;
use crate::analyzer::{Finding, StateSnapshot};
use crate::groups::{Group, GroupInput, Placed, MAX_EXAMPLES};

/// What an evidence step saw of the folio and entry, and what the probe
/// returned: ` folio=F entry=E [flags] ref=R map=M swap=S ret=V`, each
/// field only when the step recorded it (each with a leading space). The
/// report prints it after the step's note; the UI shows it under the note
/// (with the pin count of a large folio when it has pins).
pub struct EvidenceState<'a> {
    pub state: &'a StateSnapshot,
    /// The return value as [`Evidence::ret_display`] gives it.
    ///
    /// [`Evidence::ret_display`]: crate::analyzer::Evidence::ret_display
    pub ret: Option<&'a str>,
    /// Also ` pin=P` after the mapcount when a large folio's pin count is
    /// known and not zero.
    pub pin: bool,
}

impl fmt::Display for EvidenceState<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state;
        if let Some(x) = &s.folio {
            write!(f, " folio={x}")?;
        }
        if let Some(x) = &s.entry {
            write!(f, " entry={x}")?;
        }
        if let Some(x) = &s.flags {
            write!(f, " [{x}]")?;
        }
        if let (Some(r), Some(m)) = (s.refcount, s.mapcount) {
            write!(f, " ref={r} map={m}")?;
        }
        if let Some(p) = s.pincount.filter(|&p| self.pin && p != 0) {
            write!(f, " pin={p}")?;
        }
        if let Some(x) = &s.folio_swap {
            write!(f, " swap={x}")?;
        }
        if let Some(x) = &s.addr {
            write!(f, " addr={x}")?;
        }
        if let Some(x) = self.ret {
            write!(f, " ret={x}")?;
        }
        Ok(())
    }
}

/// A finding in full, as the report prints it: header, explanation,
/// objects, confidence, then one line per evidence step.
pub fn render_finding(w: &mut dyn Write, f: &Finding) -> io::Result<()> {
    writeln!(w)?;
    writeln!(w, "#{} [{}] {}", f.id, f.severity, f.rule)?;
    writeln!(w, "  {}", f.explanation)?;
    if !f.objects.entries.is_empty() || !f.objects.folios.is_empty() {
        writeln!(
            w,
            "  objects: entries [{}] folios [{}] tids {:?}",
            f.objects.entries.join(", "),
            f.objects.folios.join(", "),
            f.objects.tids
        )?;
    }
    if !f.confidence.note.is_empty() {
        writeln!(w, "  confidence reduced: {}", f.confidence.note)?;
    }
    for e in &f.evidence {
        let ret = e.ret_display();
        writeln!(
            w,
            "    #{:<8} {:>16}ns {:<20} {:<5} {}/{}: {}{}",
            e.index,
            e.ts_ns,
            e.probe,
            e.kind,
            e.tid,
            e.comm,
            e.note,
            EvidenceState {
                state: &e.state,
                ret: ret.as_deref(),
                pin: false,
            }
        )?;
    }
    Ok(())
}

/// A group: its header line when it holds more than one finding, then its
/// examples in full. Returns whether findings were left out.
pub fn render_group(w: &mut dyn Write, g: &Group<Finding>, base_ns: u64) -> io::Result<bool> {
    let shown = g.examples.len() as u64;
    if g.span.count > 1 {
        writeln!(w)?;
        writeln!(w, "== {}; {} shown", group_line(g, base_ns), shown)?;
    }
    for f in &g.examples {
        render_finding(w, f)?;
    }
    Ok(g.span.count > shown)
}

/// `COUNT x [SEVERITY] RULE task COMM/TID cause C: findings #A..#B, from
/// T1s to T2s` (times in seconds since `base_ns`).
pub fn group_line<T>(g: &Group<T>, base_ns: u64) -> String {
    format!(
        "{} x [{}] {} task {}/{}{}: findings #{}..#{}, from {}s to {}s",
        g.span.count,
        g.severity,
        g.rule,
        g.comm,
        g.tid,
        cause_suffix(&g.cause),
        g.span.first_id,
        g.span.last_id,
        Secs {
            ts: g.span.first_ns,
            base: base_ns
        },
        Secs {
            ts: g.span.last_ns,
            base: base_ns
        },
    )
}

/// ` cause X`, or nothing when the rule gives none.
fn cause_suffix(cause: &str) -> String {
    if cause.is_empty() {
        String::new()
    } else {
        format!(" cause {cause}")
    }
}

/// ` cause=X`, or nothing when the rule gives none.
fn cause_field(cause: &str) -> String {
    if cause.is_empty() {
        String::new()
    } else {
        format!(" cause={cause}")
    }
}

/// One finding as a line: stream time, id, severity, rule, objects, task,
/// the cause when the rule gives one, and the explanation; tab-free so
/// `cut -d' '` and grep work.
pub fn finding_line(f: &FindingRow, first_ts: u64) -> String {
    let task = f
        .task()
        .map_or_else(String::new, |e| format!(" task={}/{}", e.comm, e.tid));
    format!(
        "{} #{} {} {} [{}]{}{} {}",
        Secs {
            ts: f.ts_ns,
            base: first_ts
        },
        f.seq,
        f.severity,
        f.rule,
        f.objects,
        task,
        cause_field(&f.cause),
        f.explanation
    )
}

/// A group's count reached 10, 100, 1000, ...: one line saying the storm
/// goes on, instead of one per finding. Starts with `group` where a
/// finding line has `#ID`, so the two never mix up.
pub fn decade_line(g: &GroupInput<'_>, placed: &Placed, first_id: u64, first_ts: u64) -> String {
    let what = match placed.group {
        Some(_) => format!(
            "{} {} task={}/{}{}",
            g.severity,
            g.rule,
            g.comm,
            g.tid,
            cause_field(g.cause)
        ),
        None => String::from("other kinds beyond the group limit"),
    };
    format!(
        "{} group {what} count={} first=#{first_id} latest=#{}: the first {} were printed, \
         the rest are counted",
        Secs {
            ts: g.ts_ns,
            base: first_ts
        },
        placed.count,
        g.id,
        MAX_EXAMPLES
    )
}
