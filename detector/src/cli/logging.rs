//! Log messages (the `log` crate's macros) to standard error, one line per
//! message, in a form journald reads: when standard error is the journal's
//! stream (systemd sets `JOURNAL_STREAM` to its device and inode), each
//! line starts with the sd-daemon priority prefix (`<3>` error, `<4>`
//! warning, `<6>` info, `<7>` debug and trace) and nothing else, since the
//! journal stamps time and unit itself; elsewhere it reads `detector:
//! warning: ...`.
//!
//! The BPF programs' diagnostics (`--bpf-log`) arrive with target `bpf` and
//! have their own level, so an agent logging only warnings can still show
//! the programs' debug reports; they read `detector: bpf: <level>:
//! <message>` (in the journal, `bpf: <message>` after the priority). Other
//! libraries speak only from warnings up: aya logs every relocation of
//! every program at debug level while loading.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

struct Logger {
    journal: AtomicBool,
    /// `LevelFilter as usize` for the detector's own messages and for the
    /// programs' (target `bpf`); `log::max_level` is the larger of the two.
    own: AtomicUsize,
    bpf: AtomicUsize,
}

static LOGGER: Logger = Logger {
    journal: AtomicBool::new(false),
    own: AtomicUsize::new(LevelFilter::Warn as usize),
    bpf: AtomicUsize::new(LevelFilter::Off as usize),
};

const BPF_TARGET: &str = "bpf";

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
fn format_line(journal: bool, bpf: bool, level: Level, message: &str) -> String {
    let flat: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    match (journal, bpf) {
        (true, false) => format!("{}{flat}\n", priority(level)),
        (true, true) => format!("{}bpf: {flat}\n", priority(level)),
        (false, false) => format!("detector: {}: {flat}\n", word(level)),
        (false, true) => format!(
            "detector: bpf: {}: {flat}\n",
            level.as_str().to_ascii_lowercase()
        ),
    }
}

fn filter(raw: usize) -> LevelFilter {
    LevelFilter::iter()
        .find(|f| *f as usize == raw)
        .unwrap_or(LevelFilter::Off)
}

/// The programs' reports at their level, the detector's own at its level,
/// other crates only from warnings up.
fn wanted(own: LevelFilter, bpf: LevelFilter, metadata: &Metadata<'_>) -> bool {
    let target = metadata.target();
    let level = metadata.level();
    if target == BPF_TARGET {
        level <= bpf
    } else if target == "detector" || target.starts_with("detector::") {
        level <= own
    } else {
        level <= own && level <= Level::Warn
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        let own = filter(self.own.load(Ordering::Relaxed));
        let bpf = filter(self.bpf.load(Ordering::Relaxed));
        wanted(own, bpf, metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let journal = self.journal.load(Ordering::Relaxed);
        let bpf = record.target() == BPF_TARGET;
        let line = format_line(journal, bpf, record.level(), &record.args().to_string());
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

/// Installs the logger: the detector's own messages at `level`, the BPF
/// programs' diagnostics at `bpf`. A second call changes only the levels
/// (the `log` crate takes one logger per process).
pub fn init(level: LevelFilter, bpf: LevelFilter) {
    let journal = stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref());
    LOGGER.journal.store(journal, Ordering::Relaxed);
    LOGGER.own.store(level as usize, Ordering::Relaxed);
    LOGGER.bpf.store(bpf as usize, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level.max(bpf));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_the_journal_priority_or_the_level_word() {
        assert_eq!(
            format_line(true, false, Level::Warn, "ring full"),
            "<4>ring full\n"
        );
        assert_eq!(format_line(true, false, Level::Error, "x"), "<3>x\n");
        assert_eq!(format_line(true, false, Level::Info, "x"), "<6>x\n");
        assert_eq!(format_line(true, false, Level::Trace, "x"), "<7>x\n");
        assert_eq!(
            format_line(false, false, Level::Warn, "two\nlines"),
            "detector: warning: two lines\n"
        );
    }

    #[test]
    fn bpf_lines_name_their_origin_and_level() {
        let msg = "swap_read: argument 11 is unreadable";
        assert_eq!(
            format_line(false, true, Level::Warn, msg),
            format!("detector: bpf: warn: {msg}\n")
        );
        assert_eq!(
            format_line(true, true, Level::Debug, msg),
            format!("<7>bpf: {msg}\n")
        );
    }

    #[test]
    fn the_programs_level_is_their_own_and_libraries_speak_only_from_warnings_up() {
        let meta = |target, level| Metadata::builder().target(target).level(level).build();
        let (own, bpf) = (LevelFilter::Warn, LevelFilter::Debug);
        assert!(wanted(own, bpf, &meta("bpf", Level::Debug)));
        assert!(!wanted(own, bpf, &meta("bpf", Level::Trace)));
        assert!(!wanted(own, bpf, &meta("detector::agent", Level::Info)));
        assert!(wanted(own, bpf, &meta("detector::agent", Level::Warn)));
        assert!(!wanted(own, LevelFilter::Off, &meta("bpf", Level::Error)));
        let own = LevelFilter::Debug;
        assert!(wanted(own, bpf, &meta("detector::loader", Level::Debug)));
        assert!(!wanted(own, bpf, &meta("aya::bpf", Level::Debug)));
        assert!(!wanted(own, bpf, &meta("aya_obj::relocation", Level::Info)));
        assert!(wanted(own, bpf, &meta("aya::bpf", Level::Warn)));
        assert_eq!(filter(LevelFilter::Info as usize), LevelFilter::Info);
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
