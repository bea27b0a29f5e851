//! The Windows view: the analyzer's window histograms and the selected
//! window's distribution.

use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::present::units::{count as fmt_count, ns_short as fmt_ns};

use super::super::app::UiState;
use super::super::model::Model;
use super::theme;

pub(super) fn draw(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
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
    .header(Row::new(["window", "count", "min", "p50", "p90", "p99", "max"]).style(theme::header()))
    .row_highlight_style(theme::selected())
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
            Span::styled("█".repeat(n), theme::state()),
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
