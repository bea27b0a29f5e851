//! Drawing. Reads the model and the UI state, writes cells; no I/O, and
//! only the visible rows are formatted.

use std::fmt::Write as _;

use detector_common::{ProbeId, MAX_PROBES};
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::analyzer::Severity;
use crate::event::{flags, fmt_entry, kind_name, RetFmt};
use crate::plan::AttachMode;
use crate::present::units::{bytes as fmt_bytes, count as fmt_count, ns_short as fmt_ns};

use super::app::{UiState, View};
use super::model::{Model, SourceState};
use super::objects::{ObjKey, ObjRecord};

/// Smallest terminal the views fit in.
pub const MIN_WIDTH: u16 = 64;
pub const MIN_HEIGHT: u16 = 14;

const SPARK: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

pub fn draw(frame: &mut Frame, ui: &UiState, live: &Model) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small: {}x{}, need at least {MIN_WIDTH}x{MIN_HEIGHT} (q quits)",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(msg)
                .wrap(Wrap { trim: true })
                .style(Style::new().fg(Color::Yellow)),
            area,
        );
        return;
    }
    let model = ui.paused.as_deref().unwrap_or(live);
    let [title, tabs, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_title(frame, title, ui, model);
    draw_tabs(frame, tabs, ui, model);
    match ui.view() {
        View::Overview => draw_overview(frame, body, ui, model),
        View::Findings => match ui.finding_detail {
            Some(group) => draw_finding_detail(frame, body, ui, model, group),
            None => draw_findings(frame, body, ui, model),
        },
        View::Objects => match ui.object_detail {
            Some(key) => draw_object_detail(frame, body, ui, model, key),
            None => draw_objects(frame, body, ui, model),
        },
        View::Windows => draw_windows(frame, body, ui, model),
    }
    draw_footer(frame, footer, ui);
    if ui.help {
        draw_help(frame, area);
    }
}

fn draw_title(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
    let up = m.started.elapsed().as_secs();
    let mut spans = vec![Span::styled(
        " detector live ",
        Style::new().bold().reversed(),
    )];
    // What needs attention first, so a narrow terminal never cuts it off.
    if ui.paused.is_some() {
        spans.push(Span::styled(
            " PAUSED (p resumes) ",
            Style::new().fg(Color::Black).bg(Color::Yellow).bold(),
        ));
    }
    match &m.state {
        SourceState::Running => {}
        SourceState::Ended(note) => spans.push(Span::styled(
            format!(" ended: {note} │"),
            Style::new().fg(Color::Cyan),
        )),
        SourceState::Failed(e) => spans.push(Span::styled(
            format!(" source failed: {e} │"),
            Style::new().fg(Color::Red).bold(),
        )),
    }
    if let Some(n) = &m.notice {
        spans.push(Span::styled(
            format!(" {n} │"),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    if let Some((path, bytes)) = &m.recording {
        spans.push(Span::styled(
            format!(" ● rec {path} {} │", fmt_bytes(*bytes)),
            Style::new().fg(Color::Red),
        ));
    }
    spans.push(Span::raw(format!(" {} ", m.info.title)));
    if !m.info.kernel_release.is_empty() {
        spans.push(Span::raw(format!("│ kernel {} ", m.info.kernel_release)));
    }
    spans.push(Span::raw(format!(
        "│ stream {} │ up {}:{:02}:{:02} ",
        fmt_ns(m.stream_ns()),
        up / 3600,
        up / 60 % 60,
        up % 60
    )));
    frame.render_widget(Line::from(spans), area);
}

fn draw_tabs(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
    let mut spans = Vec::with_capacity(10);
    for (i, v) in View::ALL.iter().enumerate() {
        let label = match v {
            View::Findings => format!(" {} {} ({}) ", i + 1, v.title(), m.findings.total()),
            _ => format!(" {} {} ", i + 1, v.title()),
        };
        let style = if *v == ui.view() {
            Style::new().fg(Color::Black).bg(Color::Cyan).bold()
        } else {
            Style::new()
        };
        spans.push(Span::styled(label, style));
        spans.push(Span::raw(" "));
    }
    if !ui.filter_text.is_empty() {
        spans.push(Span::styled(
            format!(" filter: {} ", ui.filter_text),
            Style::new().fg(Color::Magenta),
        ));
    }
    frame.render_widget(Line::from(spans), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, ui: &UiState) {
    let line = if let Some(text) = &ui.prompt {
        let what = if ui.view() == View::Objects {
            "filter or object (T:OFFSET, 0xFOLIO)"
        } else {
            "filter (pid:N comm:S rule:S)"
        };
        Line::from(vec![
            Span::styled(format!("/ {what}: "), Style::new().fg(Color::Magenta)),
            Span::raw(text.as_str()),
            Span::styled("█", Style::new().fg(Color::Magenta)),
            Span::raw("  Enter apply, Esc cancel"),
        ])
    } else if let Some(msg) = &ui.message {
        Line::from(Span::styled(msg.as_str(), Style::new().fg(Color::Yellow)))
    } else {
        let hint = match ui.view() {
            View::Findings if ui.finding_detail.is_some() => "↑↓ scroll  n/N example  Esc back",
            View::Objects if ui.object_detail.is_some() => "↑↓ scroll  Esc back",
            View::Findings | View::Objects => "↑↓/jk move  Enter details  / filter",
            View::Windows => "↑↓ choose window",
            View::Overview => "↑↓ scroll probes  Enter findings",
        };
        Line::from(vec![
            Span::raw(format!(" {hint}  ")),
            Span::styled("Tab/1-4 views  p pause  ? keys  q quit", Style::new().dim()),
        ])
    };
    frame.render_widget(line, area);
}

fn draw_help(frame: &mut Frame, area: Rect) {
    const KEYS: &[(&str, &str)] = &[
        ("q, Ctrl-C", "quit"),
        ("Tab, Shift-Tab", "next / previous view"),
        ("1 2 3 4", "Overview, Findings, Objects, Windows"),
        ("↑ ↓, j k", "move (PgUp/PgDn, g/G: jump)"),
        ("Enter", "drill down (finding evidence, object history)"),
        ("n N, ] [", "next / previous example of a finding group"),
        ("Esc", "back out; clears the filter at top level"),
        ("/", "filter: pid:N comm:S rule:S or a word"),
        (
            "/ in Objects",
            "look up T:OFFSET (swap entry) or 0xADDR (folio)",
        ),
        ("p", "pause the display (capture and analysis go on)"),
        ("?", "this help"),
    ];
    let w = 66.min(area.width);
    let h = (KEYS.len() as u16 + 4).min(area.height);
    let popup = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    );
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<16}"), Style::new().bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .title(" keys ")
                .title_bottom(" any key closes "),
        ),
        popup,
    );
}

fn mode_style(mode: AttachMode) -> Style {
    match mode {
        AttachMode::Fentry => Style::new().fg(Color::Green),
        AttachMode::Kprobe => Style::new().fg(Color::Cyan),
        AttachMode::Tracepoint => Style::new().fg(Color::Yellow),
        AttachMode::Unavailable => Style::new().fg(Color::Red),
    }
}

fn lost_style(lost: u64) -> Style {
    if lost > 0 {
        Style::new().fg(Color::White).bg(Color::Red).bold()
    } else {
        Style::new().fg(Color::Green)
    }
}

fn draw_overview(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
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
                .style(Style::new().fg(Color::Yellow).bold()),
            banner,
        );
    }
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
            mode_style(AttachMode::Tracepoint)
        } else {
            Style::new()
        },
    ));
    plan_line.push(Span::raw(", "));
    plan_line.push(Span::styled(
        format!("{missing} unavailable"),
        if missing > 0 {
            mode_style(AttachMode::Unavailable)
        } else {
            Style::new()
        },
    ));
    if tp + missing > 0 {
        plan_line.push(Span::styled(
            "  DEGRADED: some races cannot be seen (see notes)",
            Style::new().fg(Color::Yellow).bold(),
        ));
    }
    let totals = m.findings.totals();
    let lines = vec![
        Line::from(vec![
            Span::raw(format!(
                " events {}  ({}/s)   ",
                fmt_count(m.events),
                fmt_count(m.total_rate())
            )),
            Span::styled(format!(" lost {} ", fmt_count(m.lost)), lost_style(m.lost)),
        ]),
        Line::from(vec![
            Span::raw(format!(" findings {}: ", m.findings.total())),
            Span::styled(
                format!("{} violation", totals.violation),
                sev_style(Severity::Violation),
            ),
            Span::raw(", "),
            Span::styled(
                format!("{} near_miss", totals.near_miss),
                sev_style(Severity::NearMiss),
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
    let mut lines = lines;
    if !m.analysis_note.is_empty() {
        lines.push(Line::styled(
            format!(" analyzer config {}", m.analysis_note),
            Style::new().dim(),
        ));
    }
    lines.push(Line::from(plan_line));
    frame.render_widget(Paragraph::new(lines), summary);

    // One row per plan entry, then any probe that sent events without being
    // in the plan (an old trace, or a plan the source did not provide).
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
    // The sparkline gets what the fixed columns leave (the note keeps 24,
    // enough for a fallback reason's first words), so the newest seconds
    // are never the ones cut off.
    const FIXED: u16 = 22 + 18 + 24 + 7 + 8 + 7 + 7 + 24 + 8;
    let spark_w = usize::from(probes.width.saturating_sub(FIXED)).clamp(4, 30);
    let mut series = [0u64; 30];
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
        .map(|&(plan_i, id)| {
            let entry = m.info.plan.get(plan_i);
            let name = match (entry, id) {
                (Some(e), _) => e.probe.clone(),
                (None, Some(id)) => ProbeId::from_u16(id as u16)
                    .map_or_else(|| format!("probe {id}"), |p| p.name().to_owned()),
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
                        Span::styled(format!("{}{ends}", e.mode.as_str()), mode_style(e.mode)),
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
                Cell::from(spark).style(Style::new().fg(Color::Cyan)),
                Cell::from(fmt_count(events)),
                Cell::from(fmt_count(lost)).style(lost_style(lost)),
                Cell::from(cost),
                Cell::from(note).style(Style::new().dim()),
            ])
        })
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
        .style(Style::new().bold().underlined()),
    )
    .block(Block::new().borders(Borders::TOP).title(probes_title));
    frame.render_widget(table, probes);
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

fn sev_style(s: Severity) -> Style {
    match s {
        Severity::Violation => Style::new().fg(Color::Red).bold(),
        Severity::NearMiss => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::Blue),
    }
}

fn draw_findings(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
    let total = ui.filtered_findings(m).count();
    let sel = ui.selected_finding(m).map(|(p, _, _)| p);
    let visible = area.height.saturating_sub(3) as usize;
    let offset = sel.map_or(0, |s| s.saturating_sub(visible.saturating_sub(1)));
    let now = m.last_ts;
    let rows: Vec<Row> = ui
        .filtered_findings(m)
        .skip(offset)
        .take(visible)
        .map(|(_, g)| {
            let sev = g.severity;
            let objects = g.examples.first().map_or("", |f| f.objects.as_str());
            Row::new(vec![
                Cell::from(format!("#{}", g.span.first_id)),
                Cell::from(if g.span.count > 1 {
                    format!("×{}", fmt_count(g.span.count))
                } else {
                    String::new()
                }),
                Cell::from(fmt_ns(now.saturating_sub(g.span.last_ns))),
                Cell::from(sev.name()).style(sev_style(sev)),
                Cell::from(g.rule.name()),
                Cell::from(objects),
                Cell::from(format!("{}/{}", g.comm, g.tid)),
            ])
        })
        .collect();
    let mut state = TableState::default().with_selected(sel.map(|s| s - offset));
    let overflow = m.findings.overflow().span.count;
    let mut title = if ui.filter.is_empty() {
        format!(
            " findings: {} in {} group(s), newest first",
            m.findings.total(),
            m.findings.len()
        )
    } else {
        format!(
            " groups matching `{}`: {total} of {}",
            ui.filter_text,
            m.findings.len()
        )
    };
    if overflow > 0 {
        let _ = write!(title, "; {overflow} more beyond the group limit");
    }
    title.push(' ');
    let table = Table::new(
        rows,
        [
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(25),
            Constraint::Min(20),
            Constraint::Length(22),
        ],
    )
    .header(
        Row::new(["#", "count", "age", "severity", "rule", "objects", "task"])
            .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(Style::new().reversed())
    .highlight_symbol("▶ ")
    .block(Block::new().borders(Borders::TOP).title(title));
    frame.render_stateful_widget(table, area, &mut state);
    if total == 0 {
        let msg = if m.findings.is_empty() {
            "no findings yet: nothing reused under anyone's feet"
        } else {
            "no finding matches the filter (Esc clears it)"
        };
        let inner = Rect::new(area.x + 2, area.y + 3, area.width.saturating_sub(4), 1);
        frame.render_widget(Paragraph::new(msg).style(Style::new().dim()), inner);
    }
}

fn draw_finding_detail(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model, group: usize) {
    let Some(g) = m.findings.get(group) else {
        frame.render_widget(
            Paragraph::new(" this finding group is not in the list (Esc goes back)"),
            area,
        );
        return;
    };
    let Some(f) = g
        .examples
        .get(ui.example.min(g.examples.len().saturating_sub(1)))
    else {
        frame.render_widget(
            Paragraph::new(" this group keeps no example (Esc goes back)"),
            area,
        );
        return;
    };
    let grouped = g.span.count > 1;
    let [head, timeline] = Layout::vertical([
        Constraint::Length(if grouped { 6 } else { 5 }),
        Constraint::Min(0),
    ])
    .areas(area);
    let mut lines = vec![
        Line::from(vec![
            Span::styled(format!(" finding #{} ", f.seq), Style::new().bold()),
            Span::styled(f.severity.name().to_uppercase(), sev_style(f.severity)),
            Span::raw(format!("  {}", f.rule)),
            Span::styled(
                if f.confidence.is_empty() {
                    String::new()
                } else {
                    format!("  confidence: {}", f.confidence)
                },
                Style::new().dim(),
            ),
        ]),
        Line::from(format!(" objects: {}", f.objects)),
        Line::from(vec![
            Span::raw(" "),
            Span::styled(f.explanation.as_str(), Style::new().italic()),
        ]),
        Line::from(format!(
            " evidence: {} steps over {}",
            f.evidence.len(),
            fmt_ns(
                f.evidence
                    .last()
                    .map_or(0, |l| l.ts_ns)
                    .saturating_sub(f.evidence.first().map_or(0, |e| e.ts_ns))
            )
        )),
    ];
    if grouped {
        let first = m.first_ts.unwrap_or(0);
        let cause = if g.cause.is_empty() {
            String::new()
        } else {
            format!(", cause {}", g.cause)
        };
        lines.insert(
            1,
            Line::styled(
                format!(
                    " group: {} findings by {}/{}{cause}, #{}..#{}, the first at {} (stream \
                     time), the last {} later; example {} of {} (n/N: next/previous)",
                    g.span.count,
                    g.comm,
                    g.tid,
                    g.span.first_id,
                    g.span.last_id,
                    fmt_ns(g.span.first_ns.saturating_sub(first)),
                    fmt_ns(g.span.last_ns.saturating_sub(g.span.first_ns)),
                    ui.example.min(g.examples.len() - 1) + 1,
                    g.examples.len()
                ),
                Style::new().fg(Color::Magenta),
            ),
        );
    }
    frame.render_widget(Paragraph::new(lines).wrap(Wrap { trim: false }), head);
    let t0 = f.evidence.first().map_or(0, |e| e.ts_ns);
    // Two lines per step: what happened, then the state seen.
    let visible = (timeline.height.saturating_sub(2) / 2) as usize;
    let skip = ui
        .detail_scroll
        .min(f.evidence.len().saturating_sub(visible));
    let rows: Vec<Row> = f
        .evidence
        .iter()
        .enumerate()
        .skip(skip)
        .take(visible)
        .map(|(i, e)| {
            Row::new(vec![
                Cell::from(format!("{}", i + 1)),
                Cell::from(format!("+{}", fmt_ns(e.ts_ns.saturating_sub(t0)))),
                Cell::from(e.cpu.map_or_else(|| String::from("-"), |c| c.to_string())),
                Cell::from(format!("{}/{}", e.comm, e.tid)),
                Cell::from(e.probe.as_str()),
                Cell::from(Text::from(vec![
                    Line::from(e.note.as_str()),
                    Line::styled(e.state.as_str(), Style::new().fg(Color::Cyan)),
                ])),
            ])
            .height(2)
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(3),
            Constraint::Length(9),
            Constraint::Length(4),
            Constraint::Length(20),
            Constraint::Length(27),
            Constraint::Min(30),
        ],
    )
    .header(
        Row::new([
            "#",
            "time",
            "cpu",
            "task",
            "probe",
            "what happened / state seen",
        ])
        .style(Style::new().bold().underlined()),
    )
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(" evidence timeline "),
    );
    frame.render_widget(table, timeline);
}

fn draw_objects(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
    let sel = ui.selected_object(m).map(|(i, _)| i);
    let visible = area.height.saturating_sub(3) as usize;
    let offset = sel.map_or(0, |s| s.saturating_sub(visible.saturating_sub(1)));
    let rows: Vec<Row> = ui
        .filtered_objects(m)
        .skip(offset)
        .take(visible)
        .filter_map(|k| m.objects.get(*k))
        .map(|(k, h)| {
            let last = h.records.back();
            let gen = match k {
                ObjKey::Entry(_) => h.generation.to_string(),
                ObjKey::Folio(_) => String::from("-"),
            };
            Row::new(vec![
                Cell::from(k.to_string()),
                Cell::from(gen),
                Cell::from(fmt_count(h.total)),
                Cell::from(last.map_or("", |r| r.probe_name())),
                Cell::from(
                    last.map_or_else(String::new, |r| format!("{}/{}", r.comm_str(), r.tid)),
                ),
                Cell::from(last.map_or_else(String::new, fmt_state)),
            ])
        })
        .collect();
    let mut state = TableState::default().with_selected(sel.map(|s| s - offset));
    let table = Table::new(
        rows,
        [
            Constraint::Length(26),
            Constraint::Length(4),
            Constraint::Length(7),
            Constraint::Length(20),
            Constraint::Length(20),
            Constraint::Min(20),
        ],
    )
    .header(
        Row::new([
            "object",
            "gen",
            "events",
            "last probe",
            "last task",
            "last state",
        ])
        .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(Style::new().reversed())
    .highlight_symbol("▶ ")
    .block(Block::new().borders(Borders::TOP).title(format!(
        " recent objects: {} (most recent first; / T:OFFSET or 0xFOLIO looks one up) ",
        m.objects.len()
    )));
    frame.render_stateful_widget(table, area, &mut state);
}

fn draw_object_detail(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model, key: ObjKey) {
    let Some((key, h)) = m.objects.get(key) else {
        frame.render_widget(
            Paragraph::new(format!(
                " {key} is no longer in the recent history (Esc goes back)"
            )),
            area,
        );
        return;
    };
    let [head, hist] = Layout::vertical([Constraint::Length(3), Constraint::Min(0)]).areas(area);
    let mut lookers = String::new();
    for l in h.lookers.iter().filter(|l| l.count > 0) {
        if !lookers.is_empty() {
            lookers.push_str(", ");
        }
        let _ = write!(lookers, "{}/{} ×{}", l.comm_str(), l.tid, l.count);
    }
    if lookers.is_empty() {
        lookers.push_str("nobody seen");
    }
    let mut first = format!(" {key}");
    if let ObjKey::Entry(_) = key {
        let _ = write!(first, "  generation {}", h.generation);
        if h.nr > 1 {
            let _ = write!(first, "  block of {} entries", h.nr);
        }
    }
    let _ = write!(
        first,
        "  events {} (last {} kept)",
        h.total,
        h.records.len()
    );
    let lines = vec![
        Line::from(Span::styled(first, Style::new().bold())),
        Line::from(format!(" looked up by: {lookers}")),
    ];
    frame.render_widget(Paragraph::new(lines), head);

    let t0 = h.records.front().map_or(0, |r| r.ts_ns);
    let visible = hist.height.saturating_sub(2) as usize;
    let skip = ui
        .detail_scroll
        .min(h.records.len().saturating_sub(visible));
    let rows: Vec<Row> = h
        .records
        .iter()
        .filter(|r| ui.filter.matches_record(r))
        .skip(skip)
        .take(visible)
        .map(|r| {
            let kind = kind_name(r.kind);
            let ret = if r.has_ret() {
                RetFmt {
                    probe: ProbeId::from_u16(r.probe),
                    ret: r.ret,
                }
                .to_string()
            } else {
                String::new()
            };
            Row::new(vec![
                Cell::from(format!("+{}", fmt_ns(r.ts_ns.saturating_sub(t0)))),
                Cell::from(if r.entry != 0 {
                    r.generation.to_string()
                } else {
                    String::from("-")
                }),
                Cell::from(format!("{} {kind}", r.probe_name())),
                Cell::from(format!("{}/{}", r.comm_str(), r.tid)),
                Cell::from(r.cpu.to_string()),
                Cell::from(if r.folio != 0 {
                    format!("{:#x}", r.folio)
                } else {
                    String::new()
                }),
                Cell::from(if r.entry != 0 {
                    fmt_entry(r.entry)
                } else {
                    String::new()
                }),
                Cell::from(fmt_state(r)).style(Style::new().fg(Color::Cyan)),
                Cell::from(ret),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(4),
            Constraint::Length(24),
            Constraint::Length(18),
            Constraint::Length(4),
            Constraint::Length(19),
            Constraint::Length(12),
            Constraint::Min(16),
            Constraint::Length(18),
        ],
    )
    .header(
        Row::new([
            "time", "gen", "probe", "task", "cpu", "folio", "entry", "state", "ret",
        ])
        .style(Style::new().bold().underlined()),
    )
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(" history, oldest first "),
    );
    frame.render_widget(table, hist);
}

fn draw_windows(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
    if m.windows.is_empty() {
        frame.render_widget(
            Paragraph::new(
                " no window measured yet (lookup→close, free→realloc, prepare→clear, ...)",
            )
            .style(Style::new().dim()),
            area,
        );
        return;
    }
    let table_h = (m.windows.len() as u16 + 3).min(area.height / 2).max(4);
    let [top, bottom] =
        Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(area);
    let sel = ui.window_sel.min(m.windows.len() - 1);
    let rows: Vec<Row> = m
        .windows
        .iter()
        .map(|w| {
            Row::new(vec![
                Cell::from(w.name.as_str()),
                Cell::from(fmt_count(w.count)),
                Cell::from(fmt_ns(w.min)),
                Cell::from(fmt_ns(w.p50)),
                Cell::from(fmt_ns(w.p90)),
                Cell::from(fmt_ns(w.p99)),
                Cell::from(fmt_ns(w.max)),
            ])
        })
        .collect();
    let mut state = TableState::default().with_selected(Some(sel));
    let table = Table::new(
        rows,
        [
            Constraint::Min(24),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Length(9),
        ],
    )
    .header(
        Row::new(["window", "count", "min", "p50", "p90", "p99", "max"])
            .style(Style::new().bold().underlined()),
    )
    .row_highlight_style(Style::new().reversed())
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(" windows (how close each race came) "),
    );
    frame.render_stateful_widget(table, top, &mut state);

    let w = &m.windows[sel];
    let first = w.log2_buckets.iter().position(|&c| c > 0).unwrap_or(0);
    let last = w.log2_buckets.iter().rposition(|&c| c > 0).unwrap_or(0);
    let max = w.log2_buckets.iter().copied().max().unwrap_or(0).max(1);
    let bar_w = bottom.width.saturating_sub(30) as u64;
    let mut lines: Vec<Line> = Vec::with_capacity(last + 2 - first);
    if w.log2_buckets.is_empty() {
        lines.push(Line::from(" no distribution for this window"));
    }
    for (i, &c) in w
        .log2_buckets
        .iter()
        .enumerate()
        .skip(first)
        .take(last + 1 - first)
    {
        let lo = 1u64 << i;
        let n = (c * bar_w).div_ceil(max) as usize;
        lines.push(Line::from(vec![
            Span::raw(format!(" ≥{:>8} ", fmt_ns(lo))),
            Span::styled("█".repeat(n), Style::new().fg(Color::Cyan)),
            Span::raw(format!(" {}", fmt_count(c))),
        ]));
    }
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::new()
                .borders(Borders::TOP)
                .title(format!(" {} distribution ", w.name))
                .title_alignment(Alignment::Left),
        ),
        bottom,
    );
}

/// Folio state in a compact form: flag codes, then refcount and mapcount.
pub fn fmt_state(r: &ObjRecord) -> String {
    if r.valid & detector_common::V_FOLIO_STATE == 0 {
        return String::new();
    }
    fmt_folio_state(r.f_state, r.refcount, r.mapcount)
}

/// `sc sb an ...  ref R map M` (see docs/tui.md for the codes).
pub fn fmt_folio_state(f_state: u32, refcount: i32, mapcount: i32) -> String {
    let mut s = String::with_capacity(40);
    for f in flags::set(f_state) {
        s.push_str(f.code);
        s.push(' ');
    }
    let _ = write!(s, "ref {refcount} map {mapcount}");
    s
}

/// The characters of a rendered buffer, one line per row: what a person
/// would read (snapshot tests, the benchmark).
pub fn buffer_text(buf: &ratatui::buffer::Buffer) -> String {
    let area = buf.area;
    let mut out = String::with_capacity(usize::from(area.width + 1) * usize::from(area.height));
    for y in area.y..area.y + area.height {
        for x in area.x..area.x + area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}
