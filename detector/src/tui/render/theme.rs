//! The UI's colours and text styles, in one place.

use ratatui::style::{Color, Style, Stylize};

use crate::analyzer::Severity;
use crate::plan::AttachMode;

/// How an attach mode shows: green fentry, cyan kprobe, yellow (degraded)
/// tracepoint, red unavailable.
pub(super) fn mode(mode: AttachMode) -> Style {
    match mode {
        AttachMode::Fentry => Style::new().fg(Color::Green),
        AttachMode::Kprobe => Style::new().fg(Color::Cyan),
        AttachMode::Tracepoint => Style::new().fg(Color::Yellow),
        AttachMode::Unavailable => Style::new().fg(Color::Red),
    }
}

/// A lost-event count: loud when not zero.
pub(super) fn lost(lost: u64) -> Style {
    if lost > 0 {
        Style::new().fg(Color::White).bg(Color::Red).bold()
    } else {
        Style::new().fg(Color::Green)
    }
}

/// Red violation, yellow near_miss, blue info.
pub(super) fn severity(s: Severity) -> Style {
    match s {
        Severity::Violation => Style::new().fg(Color::Red).bold(),
        Severity::NearMiss => Style::new().fg(Color::Yellow),
        Severity::Info => Style::new().fg(Color::Blue),
    }
}

/// A table's header row.
pub(super) fn header() -> Style {
    Style::new().bold().underlined()
}

/// The selected row.
pub(super) fn selected() -> Style {
    Style::new().reversed()
}

/// What the user must not miss (degraded mode).
pub(super) fn warning() -> Style {
    Style::new().fg(Color::Yellow).bold()
}

/// Folio / entry state and other measured values.
pub(super) fn state() -> Style {
    Style::new().fg(Color::Cyan)
}
