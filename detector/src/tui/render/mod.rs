//! Drawing: one file per view, the styles in [`theme`]. Reads the model
//! and the UI state, writes cells; no I/O, and only the visible rows are
//! formatted.

mod findings;
mod objects;
mod overview;
mod theme;
mod windows;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

use crate::present::units::{bytes, ns_short};

use super::app::{UiState, View};
use super::model::{Model, SourceState};

pub use objects::{fmt_folio_state, fmt_state};

/// Smallest terminal the views fit in.
pub const MIN_WIDTH: u16 = 64;
pub const MIN_HEIGHT: u16 = 14;

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
        View::Overview => overview::draw(frame, body, ui, model),
        View::Findings => match ui.finding_detail {
            Some(group) => findings::draw_detail(frame, body, ui, model, group),
            None => findings::draw(frame, body, ui, model),
        },
        View::Objects => match ui.object_detail {
            Some(key) => objects::draw_detail(frame, body, ui, model, key),
            None => objects::draw(frame, body, ui, model),
        },
        View::Windows => windows::draw(frame, body, ui, model),
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
    if let Some((path, written)) = &m.recording {
        spans.push(Span::styled(
            format!(" ● rec {path} {} │", bytes(*written)),
            Style::new().fg(Color::Red),
        ));
    }
    spans.push(Span::raw(format!(" {} ", m.info.title)));
    if !m.info.kernel_release.is_empty() {
        spans.push(Span::raw(format!("│ kernel {} ", m.info.kernel_release)));
    }
    spans.push(Span::raw(format!(
        "│ stream {} │ up {}:{:02}:{:02} ",
        ns_short(m.stream_ns()),
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
