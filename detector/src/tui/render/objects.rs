//! The Objects view: recent swap entries and folios, and one object's
//! history.

use std::fmt::Write as _;

use detector_common::ProbeId;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Stylize;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

use crate::event::{flags, fmt_entry, kind_name, RetFmt};
use crate::present::units::{count as fmt_count, ns_short as fmt_ns};

use super::super::app::UiState;
use super::super::model::Model;
use super::super::objects::{ObjKey, ObjRecord};
use super::theme;

pub(super) fn draw(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model) {
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
        .style(theme::header()),
    )
    .row_highlight_style(theme::selected())
    .highlight_symbol("▶ ")
    .block(Block::new().borders(Borders::TOP).title(format!(
        " recent objects: {} (most recent first; / T:OFFSET or 0xFOLIO looks one up) ",
        m.objects.len()
    )));
    frame.render_stateful_widget(table, area, &mut state);
}

pub(super) fn draw_detail(frame: &mut Frame, area: Rect, ui: &UiState, m: &Model, key: ObjKey) {
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
        Line::from(Span::styled(first, ratatui::style::Style::new().bold())),
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
                Cell::from(fmt_state(r)).style(theme::state()),
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
        .style(theme::header()),
    )
    .block(
        Block::new()
            .borders(Borders::TOP)
            .title(" history, oldest first "),
    );
    frame.render_widget(table, hist);
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
