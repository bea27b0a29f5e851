//! The Overview view: what the stream and the analyzer did, the probe
//! plan, and one row per probe with its rate, sparkline, totals and cost.

use detector_common::{ProbeId, MAX_PROBES};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::analyzer::Severity;
use crate::event::ProbeName;
use crate::plan::AttachMode;
use crate::present::units::count as fmt_count;

use super::super::app::UiState;
use super::super::model::Model;
use super::theme;

const SPARK: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub(super) fn draw(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
    let banner_h = if m.info.degraded.is_some() { 4 } else { 0 };
    let summary_h = if m.analysis_note.is_empty() { 4 } else { 5 };
    let [summary, banner, probes] = Layout::vertical([
        Constraint::Length(summary_h),
        Constraint::Length(banner_h),
        Constraint::Min(0),
    ])
    .areas(area);
    if let Some(text) = &m.info.degraded {
        frame.render_widget(
            Paragraph::new(format!(" {text}"))
                .wrap(Wrap { trim: false })
                .style(theme::warning()),
            banner,
        );
    }
    frame.render_widget(Paragraph::new(summary_lines(m)), summary);
    draw_probes(frame, probes, ui, m);
}

/// Events and loss, findings by severity, the analyzer's state and
/// configuration, the probe plan.
fn summary_lines(m: &Model) -> Vec<Line<'static>> {
    let totals = m.findings.totals();
    let mut lines = vec![
        Line::from(vec![
            Span::raw(format!(
                " events {}  ({}/s)   ",
                fmt_count(m.events),
                fmt_count(m.total_rate())
            )),
            Span::styled(format!(" lost {} ", fmt_count(m.lost)), theme::lost(m.lost)),
        ]),
        Line::from(vec![
            Span::raw(format!(" findings {}: ", m.findings.total())),
            Span::styled(
                format!("{} violation", totals.violation),
                theme::severity(Severity::Violation),
            ),
            Span::raw(", "),
            Span::styled(
                format!("{} near_miss", totals.near_miss),
                theme::severity(Severity::NearMiss),
            ),
            Span::raw(format!(
                ", {} info in {} group(s)",
                totals.info,
                m.findings.len()
            )),
        ]),
        Line::from(format!(
            " analyzer: tracked objects {}, evictions {}   history index: {} objects ({} dropped)",
            fmt_count(m.tracked_objects),
            fmt_count(m.evictions),
            m.objects.len(),
            m.objects.dropped
        )),
    ];
    if !m.analysis_note.is_empty() {
        lines.push(Line::styled(
            format!(" analyzer config {}", m.analysis_note),
            Style::new().dim(),
        ));
    }
    lines.push(plan_line(m));
    lines
}

/// `plan: N probes: F fentry, K kprobe, T tracepoint, U unavailable`, and
/// the degraded warning when some are not function probes.
fn plan_line(m: &Model) -> Line<'static> {
    let (tp, missing) = m.degraded();
    let fentry = m
        .info
        .plan
        .iter()
        .filter(|p| p.mode == AttachMode::Fentry)
        .count();
    let kprobe = m
        .info
        .plan
        .iter()
        .filter(|p| p.mode == AttachMode::Kprobe)
        .count();
    let mut plan_line = vec![Span::raw(format!(
        " plan: {} probes: {fentry} fentry, {kprobe} kprobe, ",
        m.info.plan.len()
    ))];
    plan_line.push(Span::styled(
        format!("{tp} tracepoint"),
        if tp > 0 {
            theme::mode(AttachMode::Tracepoint)
        } else {
            Style::new()
        },
    ));
    plan_line.push(Span::raw(", "));
    plan_line.push(Span::styled(
        format!("{missing} unavailable"),
        if missing > 0 {
            theme::mode(AttachMode::Unavailable)
        } else {
            Style::new()
        },
    ));
    if tp + missing > 0 {
        plan_line.push(Span::styled(
            "  DEGRADED: some races cannot be seen (see notes)",
            theme::warning(),
        ));
    }
    Line::from(plan_line)
}

/// Plan entries in the order the table shows them: one row per plan entry,
/// then any probe that sent events without being in the plan (an old trace,
/// or a plan the source did not provide). Each is (plan index or
/// `usize::MAX`, probe id when known).
fn probe_order(m: &Model) -> Vec<(usize, Option<usize>)> {
    let mut order: Vec<(usize, Option<usize>)> = Vec::with_capacity(MAX_PROBES as usize);
    let mut seen = [false; MAX_PROBES as usize];
    for (i, p) in m.info.plan.iter().enumerate() {
        let id = ProbeId::from_name(&p.probe).map(|id| id as usize);
        if let Some(id) = id.filter(|&id| id < seen.len()) {
            seen[id] = true;
        }
        order.push((i, id));
    }
    for (id, st) in m.probes.iter().enumerate() {
        if !seen[id] && (st.events > 0 || st.lost > 0) {
            order.push((usize::MAX, Some(id)));
        }
    }
    // What is attached first: on a degraded kernel the few live probes
    // must not sit below a screenful of unavailable ones.
    order.sort_by_key(|&(i, _)| {
        m.info
            .plan
            .get(i)
            .is_some_and(|e| e.mode == AttachMode::Unavailable)
    });
    order
}

/// One row per probe: attach mode and target, rate, sparkline, totals,
/// cost per event, the loader's note.
fn draw_probes(frame: &mut Frame, probes: Rect, ui: &UiState, m: &Model) {
    let order = probe_order(m);
    // The sparkline gets what the fixed columns leave (the note keeps 24,
    // enough for a fallback reason's first words), so the newest seconds
    // are never the ones cut off.
    const FIXED: u16 = 22 + 18 + 24 + 7 + 8 + 7 + 7 + 24 + 8;
    let spark_w = usize::from(probes.width.saturating_sub(FIXED)).clamp(4, 30);
    let spark_title = format!("last {spark_w}s");
    let inner_rows = probes.height.saturating_sub(3) as usize;
    let skip = ui.probe_scroll.min(order.len().saturating_sub(inner_rows));
    let probes_title = match &m.cost_note {
        Some(why) => Line::from(vec![
            Span::raw(" probes "),
            Span::styled(
                format!(" per-probe run time unavailable: {why} "),
                Style::new().fg(Color::Yellow),
            ),
        ]),
        None => Line::from(" probes "),
    };
    let rows: Vec<Row> = order
        .iter()
        .skip(skip)
        .take(inner_rows)
        .map(|&(plan_i, id)| probe_row(m, plan_i, id, spark_w))
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(22),
            Constraint::Length(18),
            Constraint::Length(24),
            Constraint::Length(7),
            Constraint::Length(spark_w as u16),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Min(10),
        ],
    )
    .header(
        Row::new([
            "probe",
            "attach",
            "target",
            "ev/s",
            spark_title.as_str(),
            "events",
            "lost",
            "ns/ev",
            "note",
        ])
        .style(theme::header()),
    )
    .block(Block::new().borders(Borders::TOP).title(probes_title));
    frame.render_widget(table, probes);
}

/// The probe table's row for plan entry `plan_i` (or, past the plan, the
/// probe `id`), with a sparkline of the last `spark_w` seconds.
fn probe_row(m: &Model, plan_i: usize, id: Option<usize>, spark_w: usize) -> Row<'static> {
    let mut series = [0u64; 30];
    let entry = m.info.plan.get(plan_i);
    let name = match (entry, id) {
        (Some(e), _) => e.probe.clone(),
        (None, Some(id)) => ProbeName(id as u16).to_string(),
        (None, None) => String::from("?"),
    };
    let (mode, target, note) = match entry {
        Some(e) => {
            let ends = match (e.entry, e.exit) {
                (true, true) => "",
                (true, false) => " (entry)",
                (false, true) => " (exit)",
                (false, false) => "",
            };
            (
                Span::styled(format!("{}{ends}", e.mode.as_str()), theme::mode(e.mode)),
                e.target.clone(),
                e.note.clone(),
            )
        }
        None => (Span::raw("-"), String::new(), String::from("not in plan")),
    };
    let st = id.and_then(|id| m.probes.get(id));
    let (events, lost) = st.map_or((0, 0), |s| (s.events, s.lost));
    // Replays carry no run time: the column stays "-" there.
    let mut cost = String::new();
    crate::present::costs::fmt_ns_per_event(st.and_then(|s| s.ns_per_event), &mut cost);
    let rate = id.map_or(0, |id| m.rate(id));
    if let Some(id) = id {
        m.series(id, &mut series);
    }
    let spark = if id.is_some() {
        sparkline(&series[30 - spark_w..])
    } else {
        String::new()
    };
    Row::new(vec![
        Cell::from(name),
        Cell::from(mode),
        Cell::from(target),
        Cell::from(fmt_count(u64::from(rate))),
        Cell::from(spark).style(theme::state()),
        Cell::from(fmt_count(events)),
        Cell::from(fmt_count(lost)).style(theme::lost(lost)),
        Cell::from(cost),
        Cell::from(note).style(Style::new().dim()),
    ])
}

fn sparkline(data: &[u64]) -> String {
    let max = data.iter().copied().max().unwrap_or(0);
    data.iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                SPARK[0]
            } else {
                // Any non-zero second shows at least the lowest bar.
                SPARK[(1 + (v * 7 / max) as usize).min(8)]
            }
        })
        .collect()
}
