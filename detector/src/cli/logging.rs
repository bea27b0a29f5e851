//! Log messages (the `log` crate's macros) to standard error, one line per
//! message, in a form journald reads: when standard error is the journal's
//! stream (systemd sets `JOURNAL_STREAM` to its device and inode), each
//! line starts with the sd-daemon priority prefix (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug and trace) and nothing else, since the
//! journal stamps time and unit itself; elsewhere it reads `detector:
//! warning: ...`.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    journal: AtomicBool,
}

static LOGGER: Logger = Logger {
    journal: AtomicBool::new(false),
};

/// The sd-daemon priority of a level (`sd-daemon.h`: SD_ERR 3, SD_WARNING
/// 4, SD_INFO 6, SD_DEBUG 7).
fn priority(level: Level) -> &'static str {
    match level {
        Level::Error => "<3>",
        Level::Warn => "<4>",
        Level::Info => "<6>",
        Level::Debug | Level::Trace => "<7>",
    }
}

fn word(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// One line for `message`: line breaks inside it become spaces, so a
/// message never spreads over several journal entries.
fn format_line(journal: bool, level: Level, message: &str) -> String {
    let flat: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if journal {
        format!("{}{flat}\n", priority(level))
    } else {
        format!("detector: {}: {flat}\n", word(level))
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let journal = self.journal.load(Ordering::Relaxed);
        let line = format_line(journal, record.level(), &record.args().to_string());
        // One write per line, so lines of two threads never interleave; a
        // closed standard error leaves nowhere to say so.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Whether standard error is the stream `JOURNAL_STREAM` names
/// (`DEVICE:INODE`): a child whose standard error was redirected inherits
/// the variable but does not write to the journal.
fn stderr_is_journal(var: Option<&str>) -> bool {
    let Some((dev, ino)) = var.and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Installs the logger at `level`. A second call changes only the level
/// (the `log` crate takes one logger per process).
pub fn init(level: LevelFilter) {
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    LOGGER.journal.store(journal, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_journal_priority_or_the_level_word() {
        assert_eq!(
            format_line(true, Level::Warn, "ring full"),
            "<4>ring full\n"
        );
        assert_eq!(format_line(true, Level::Error, "x"), "<3>x\n");
        assert_eq!(format_line(true, Level::Info, "x"), "<6>x\n");
        assert_eq!(format_line(true, Level::Trace, "x"), "<7>x\n");
        assert_eq!(
            format_line(false, Level::Warn, "two\nlines"),
            "detector: warning: two lines\n"
        );
    }

    #[test]
    fn the_journal_is_recognised_by_device_and_inode() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:2")));
        let m = std::fs::metadata("/proc/self/fd/2").unwrap();
        assert!(stderr_is_journal(Some(&format!("{}:{}", m.dev(), m.ino()))));
    }
}
