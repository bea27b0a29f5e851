//! The `log` facade's output: one line per message on stderr, which a
//! terminal, a file or journald takes as it is (no colour, no timestamp:
//! the journal stamps lines itself). The BPF programs' diagnostics arrive
//! with target `bpf` (`--bpf-log`) and read `detector: bpf: <level>:
//! <message>`; the others `detector: <level>: <message>`.

use std::io::Write as _;

struct Stderr;

static LOGGER: Stderr = Stderr;

/// Sends `log` records at `level` and above to stderr. A second call only
/// changes the level.
pub fn init(level: log::LevelFilter) {
    log::set_max_level(level);
    // Already set (a second call, or a test harness): keep that logger.
    let _ = log::set_logger(&LOGGER);
}

/// One message as the line it is written as, without the newline.
fn line(record: &log::Record<'_>) -> String {
    let level = record.level().as_str().to_ascii_lowercase();
    if record.target() == "bpf" {
        format!("detector: bpf: {level}: {}", record.args())
    } else {
        format!("detector: {level}: {}", record.args())
    }
}

/// The detector's own messages and the programs' reports at the level
/// asked for; the libraries' only from warnings up (aya logs every
/// relocation of every program at debug level while loading).
fn wanted(metadata: &log::Metadata<'_>) -> bool {
    let target = metadata.target();
    let ours = target == "bpf" || target == "detector" || target.starts_with("detector::");
    metadata.level() <= log::max_level() && (ours || metadata.level() <= log::Level::Warn)
}

impl log::Log for Stderr {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        wanted(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut text = line(record);
        text.push('\n');
        // One write per line, so lines from several threads never
        // interleave; a stderr that is gone has nobody to tell.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_records_name_their_origin_and_level() {
        let args = format_args!("swap_read: argument 11 is unreadable");
        let r = log::Record::builder()
            .target("bpf")
            .level(log::Level::Warn)
            .args(args)
            .build();
        assert_eq!(
            line(&r),
            "detector: bpf: warn: swap_read: argument 11 is unreadable"
        );
        let args = format_args!("attached");
        let r = log::Record::builder()
            .target("detector::cli::record")
            .level(log::Level::Info)
            .args(args)
            .build();
        assert_eq!(line(&r), "detector: info: attached");
    }

    #[test]
    fn libraries_speak_only_from_warnings_up() {
        log::set_max_level(log::LevelFilter::Debug);
        let meta = |target, level| log::Metadata::builder().target(target).level(level).build();
        assert!(wanted(&meta("bpf", log::Level::Debug)));
        assert!(wanted(&meta("detector::loader", log::Level::Debug)));
        assert!(!wanted(&meta("bpf", log::Level::Trace)));
        assert!(!wanted(&meta("aya::bpf", log::Level::Debug)));
        assert!(!wanted(&meta("aya_obj::relocation", log::Level::Info)));
        assert!(wanted(&meta("aya::bpf", log::Level::Warn)));
    }
}
