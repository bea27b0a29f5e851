//! `--bpf-log`: the programs' own diagnostics (detector-ebpf's `diag`: a
//! kernel read that failed, a folio that cannot be read, an argument the
//! trampoline refused, an offset this kernel's BTF did not give), carried
//! by aya-log and handed to the `log` facade with target `bpf`.
//!
//! The level is aya-log's `AYA_LOG_LEVEL` global, fixed before load. Off
//! (the default) is level 0: the verifier, which reads the frozen global as
//! a constant, removes every report from the programs, and the `AYA_LOGS`
//! ring buffer is created but never written or read.
//!
//! A program sends numbers, not sentences (`diag <probe> <kind> <a> <b>
//! <occurrence>`, numbered by `detector_common::DiagKind`): its reports go
//! through one global BPF function that takes only numbers, which keeps
//! the verifier's work small (docs/probes.md, "Diagnostics"). [`describe`]
//! writes the sentence before the record reaches the logger.

use aya::Ebpf;
use aya_log::EbpfLogger;
use detector_common::{DiagField, DiagKind, ProbeId, MAP_AYA_LOGS};

/// How much of the programs' diagnostics to show.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BpfLog {
    /// Nothing, at no cost per event (the programs carry no report).
    #[default]
    Off,
    /// Offsets this kernel's BTF did not give: a layout the programs did
    /// not expect.
    Error,
    /// Also failed kernel reads, unreadable folios and arguments (the
    /// event is dropped or lacks a field).
    Warn,
    /// As warn (no report uses this level).
    Info,
    /// Also kprobe mode's lost exit events (the stash).
    Debug,
    /// As debug (no report uses this level).
    Trace,
}

impl BpfLog {
    fn level(self) -> Option<aya_log::Level> {
        match self {
            BpfLog::Off => None,
            BpfLog::Error => Some(aya_log::Level::Error),
            BpfLog::Warn => Some(aya_log::Level::Warn),
            BpfLog::Info => Some(aya_log::Level::Info),
            BpfLog::Debug => Some(aya_log::Level::Debug),
            BpfLog::Trace => Some(aya_log::Level::Trace),
        }
    }

    /// The value of `AYA_LOG_LEVEL`: the programs send reports of this
    /// level and the more severe ones (aya-log-ebpf compares the numbers),
    /// none at 0.
    pub fn global(self) -> u8 {
        self.level().map_or(0, u8::from)
    }

    /// The same threshold for the `log` facade.
    pub fn filter(self) -> log::LevelFilter {
        match self {
            BpfLog::Off => log::LevelFilter::Off,
            BpfLog::Error => log::LevelFilter::Error,
            BpfLog::Warn => log::LevelFilter::Warn,
            BpfLog::Info => log::LevelFilter::Info,
            BpfLog::Debug => log::LevelFilter::Debug,
            BpfLog::Trace => log::LevelFilter::Trace,
        }
    }
}

/// The sentence for a report's text (`diag <probe> <kind> <a> <b>
/// <occurrence>`), or `None` when the text is not one.
pub fn describe(text: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    if words.next()? != "diag" {
        return None;
    }
    let mut num = || words.next()?.parse::<u64>().ok();
    let (probe, kind, a, b, n) = (num()?, num()?, num()?, num()?, num()?);
    if words.next().is_some() {
        return None;
    }
    let probe = u16::try_from(probe)
        .ok()
        .and_then(ProbeId::from_u16)
        .map_or_else(|| format!("probe {probe}"), |p| p.name().to_string());
    let field = |v: u64| {
        DiagField::from_u64(v).map_or_else(|| format!("field {v}"), |f| f.name().to_string())
    };
    // Errors travel as the u64 of a negative errno.
    let errno = |v: u64| v as i64;
    let what = match DiagKind::from_u32(u32::try_from(kind).ok()?)? {
        DiagKind::ArgUnreadable => format!(
            "argument {a} of the traced function is unreadable (bpf_get_func_arg: {}): the event \
             lacks what it gives",
            errno(b)
        ),
        DiagKind::RetUnreadable => format!(
            "the return value is unreadable (bpf_get_func_ret: {}): the event lacks it",
            errno(a)
        ),
        DiagKind::FolioUnreadable => {
            format!("folio {a:#x} is unreadable: the event has its address but not its state")
        }
        DiagKind::FolioDropped => format!(
            "folio {a:#x} is unreadable: the relevance filter could not judge the call and \
             dropped it"
        ),
        DiagKind::OffsetUnknown => format!(
            "unexpected layout: no offset for {} on this kernel: events lack what it gives",
            field(a)
        ),
        DiagKind::ReadFailed => format!(
            "reading {} (object at {b:#x}) failed: the event lacks it",
            field(a)
        ),
        DiagKind::LayoutUnreadable => "the LAYOUT map has no entry: the event was dropped".into(),
        DiagKind::StashTaken => "an earlier call's arguments were still stashed: its kretprobe \
                                 never ran and its exit event is lost"
            .into(),
        DiagKind::StashFull => "the kprobe stash is full: this call's exit event is lost".into(),
        DiagKind::NothingStashed => "the kretprobe found no stashed arguments (its kprobe was \
                                     skipped): the exit event is lost"
            .into(),
    };
    Some(format!("{probe}: {what} (occurrence {n})"))
}

/// Words each report (see [`describe`]) and hands it, with target `bpf`,
/// to whatever logger the process installed when the record arrives
/// (aya-log's own `init` binds the one installed at start, which would
/// silently drop everything if the logger came later).
struct Facade;

impl log::Log for Facade {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        log::logger().enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let text = record.args().to_string();
        match describe(&text) {
            Some(sentence) => log::logger().log(
                &log::Record::builder()
                    .level(record.level())
                    .target("bpf")
                    .args(format_args!("{sentence}"))
                    .build(),
            ),
            None => log::logger().log(record),
        }
    }

    fn flush(&self) {
        log::logger().flush();
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot read the BPF programs' diagnostics ({MAP_AYA_LOGS}): {0}")]
pub struct BpfLogError(#[from] aya_log::Error);

/// The reading end of the programs' diagnostics.
pub struct BpfLogReader {
    logger: EbpfLogger<Facade>,
}

impl BpfLogReader {
    /// Takes aya-log's ring buffer out of the loaded object. Its memory is
    /// mapped here, so reading it later needs no capability.
    pub fn start(ebpf: &mut Ebpf) -> Result<Self, BpfLogError> {
        Ok(BpfLogReader {
            logger: EbpfLogger::init_with_logger(ebpf, Facade)?,
        })
    }

    /// Logs every report waiting in the ring buffer. It reads memory shared
    /// with the kernel and never waits, so the capture loop calls it on
    /// each pass.
    pub fn flush(&mut self) {
        self.logger.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn levels_map_to_aya_log_numbers_and_log_filters() {
        let all: Vec<(u8, log::LevelFilter)> = BpfLog::value_variants()
            .iter()
            .map(|l| (l.global(), l.filter()))
            .collect();
        assert_eq!(
            all,
            [
                (0, log::LevelFilter::Off),
                (1, log::LevelFilter::Error),
                (2, log::LevelFilter::Warn),
                (3, log::LevelFilter::Info),
                (4, log::LevelFilter::Debug),
                (5, log::LevelFilter::Trace),
            ]
        );
        // aya-log-ebpf sends a report when its level's number is at most
        // the global: each level includes the more severe ones.
        assert_eq!(u8::from(aya_log::Level::Error), 1);
        assert_eq!(u8::from(aya_log::Level::Trace), 5);
        assert_eq!(BpfLog::default(), BpfLog::Off);
    }

    #[test]
    fn reports_become_sentences() {
        let arg = format!("diag {} 0 11 {} 1", ProbeId::SwapRead as u16, -22i64 as u64);
        assert_eq!(
            describe(&arg).as_deref(),
            Some(
                "swap_read: argument 11 of the traced function is unreadable \
                 (bpf_get_func_arg: -22): the event lacks what it gives (occurrence 1)"
            )
        );
        let layout = format!(
            "diag {} 4 {} 0 64",
            ProbeId::DoSwapPage as u16,
            DiagField::VmfAddress as u32
        );
        assert_eq!(
            describe(&layout).as_deref(),
            Some(
                "do_swap_page: unexpected layout: no offset for vm_fault.address on this \
                 kernel: events lack what it gives (occurrence 64)"
            )
        );
        let read = format!("diag 3 5 {} 65535 2", DiagField::TaskStartTime as u32);
        assert!(describe(&read)
            .unwrap_or_default()
            .contains("reading task_struct.start_time (object at 0xffff) failed"));
        // Every kind has its sentence.
        for k in DiagKind::ALL {
            assert!(
                describe(&format!("diag 0 {} 0 0 1", k as u32)).is_some(),
                "{k:?}"
            );
        }
        // Not a report: passed on as it is.
        assert_eq!(describe("hello from a program"), None);
        assert_eq!(describe("diag 1 2 3"), None);
        assert_eq!(describe("diag 1 99 0 0 1"), None);
        assert_eq!(describe("diag 1 2 3 4 5 6"), None);
        // An unknown probe or field still reads.
        assert!(describe("diag 999 4 77 0 1")
            .unwrap_or_default()
            .starts_with("probe 999: unexpected layout: no offset for field 77"));
    }

    #[test]
    fn the_levels_of_reports_are_aya_log_levels() {
        for k in DiagKind::ALL {
            assert!((1..=5).contains(&k.level()), "{k:?}");
        }
        assert_eq!(
            DiagKind::OffsetUnknown.level(),
            u8::from(aya_log::Level::Error)
        );
        assert_eq!(DiagKind::ReadFailed.level(), u8::from(aya_log::Level::Warn));
        assert_eq!(
            DiagKind::NothingStashed.level(),
            u8::from(aya_log::Level::Debug)
        );
        assert_eq!(DiagKind::from_u32(detector_common::DIAG_KINDS), None);
        for (i, k) in DiagKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
        for (i, f) in DiagField::ALL.iter().enumerate() {
            assert_eq!(*f as usize, i);
        }
    }

    #[test]
    fn the_level_global_is_the_one_aya_log_names() {
        assert_eq!(detector_common::GLOBAL_LOG_LEVEL, aya_log::LEVEL);
    }
}
