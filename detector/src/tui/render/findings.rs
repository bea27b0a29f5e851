//! The Findings view: one row per group, and a group's example with its
//! evidence timeline.

use std::fmt::Write as _;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

use crate::present::units::{count as fmt_count, ns_short as fmt_ns};

use super::super::app::UiState;
use super::super::model::Model;
use super::theme;

pub(super) fn draw(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
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
                Cell::from(sev.name()).style(theme::severity(sev)),
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
            .style(theme::header()),
    )
    .row_highlight_style(theme::selected())
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

pub(super) fn draw_detail(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model, group: usize) {
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
            Span::styled(
                f.severity.name().to_uppercase(),
                theme::severity(f.severity),
            ),
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
                    Line::styled(e.state.as_str(), theme::state()),
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
        .style(theme::header()),
    )
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(" evidence timeline "),
    );
    frame.render_widget(table, timeline);
}
