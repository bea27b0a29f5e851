//! The per-probe BPF run-time table (`doctor --stats`, `record --stats`)
//! and the UI's cost column.

use std::fmt::Write as _;
use std::time::Duration;

use super::units::NsDecimal;
use crate::bpfstats::{ProbeCost, RunStats, SpanCosts, StatsError};

/// Printed under every cost table: the number is easy to over-read.
pub const BODY_ONLY_NOTE: &str = "note: run time is the BPF program body as timed by the kernel \
     (bpf_stats); the fentry trampoline or kprobe/kretprobe entry and exit around it is not included";

/// The cost table of a measured span, or one sentence saying why there is
/// none: what `doctor --stats` prints, and `record --stats` at the end.
pub fn write_span(out: &mut dyn std::io::Write, costs: &SpanCosts) -> std::io::Result<()> {
    let mut text = String::new();
    match costs {
        Ok((rows, span)) => format_table(rows, *span, &mut text),
        Err(e) => format_unavailable(e, &mut text),
    }
    out.write_all(text.as_bytes())
}

/// The one sentence shown instead of the numbers.
pub fn format_unavailable(e: &StatsError, out: &mut String) {
    let _ = writeln!(out, "per-probe run time unavailable: {e}");
}

/// Nanoseconds per event in at most 7 columns (`-` without runs).
pub fn fmt_ns_per_event(v: Option<f64>, out: &mut String) {
    let _ = match v {
        None => write!(out, "-"),
        Some(v) if v < 100.0 => write!(out, "{v:.1}"),
        Some(v) if v < 1e6 => write!(out, "{v:.0}"),
        Some(v) => write!(out, "{:.0}µs", v / 1e3),
    };
}

/// The cost table: one line per probe with the entry and exit programs
/// summed, and under a probe with both, one line per program.
pub fn format_table(rows: &[ProbeCost], span: Duration, out: &mut String) {
    let _ = writeln!(
        out,
        "per-probe BPF run time over {:.1}s (kernel bpf_stats):",
        span.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "{:<22} {:<11} {:<30} {:>10} {:>11} {:>9}",
        "probe", "mode", "program", "hits", "run time", "ns/event"
    );
    let mut cell = String::new();
    let mut line = |out: &mut String, probe: &str, mode: &str, prog: &str, s: RunStats| {
        let _ = write!(out, "{probe:<22} {mode:<11} {prog:<30} {:>10} ", s.run_cnt);
        cell.clear();
        let _ = write!(
            cell,
            "{}",
            NsDecimal {
                ns: s.run_time_ns,
                places: 2
            }
        );
        let _ = write!(out, "{cell:>11} ");
        cell.clear();
        fmt_ns_per_event(s.ns_per_event(), &mut cell);
        let _ = writeln!(out, "{cell:>9}");
    };
    let mut sum = RunStats::default();
    for r in rows {
        let total = r.total();
        sum = sum.plus(total);
        let name = r.probe.name();
        match (r.entry, r.exit) {
            (Some(e), Some(x)) => {
                line(out, name, r.mode.as_str(), "entry+exit", total);
                for p in [e, x] {
                    let prog = p.kind.program_name(r.probe);
                    line(out, "", "", &format!("  {prog}"), p.stats);
                }
            }
            (Some(p), None) | (None, Some(p)) => {
                let prog = p.kind.program_name(r.probe);
                line(out, name, r.mode.as_str(), &prog, p.stats);
            }
            (None, None) => {}
        }
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(no probe attached)");
    } else {
        line(out, "all probes", "", "", sum);
    }
    let _ = writeln!(out, "{BODY_ONLY_NOTE}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpfstats::tests::cost;
    use crate::bpfstats::ProgKind;
    use crate::plan::AttachMode;
    use detector_common::ProbeId;

    #[test]
    fn table_text() {
        let rows = [
            cost(
                ProbeId::DoSwapPage,
                AttachMode::Fentry,
                Some((ProgKind::Fentry, 100, 12_000)),
                Some((ProgKind::Fexit, 100, 8_000)),
            ),
            cost(
                ProbeId::TpPageFree,
                AttachMode::Tracepoint,
                Some((ProgKind::Tracepoint, 3_000_000, 2_450_000_000)),
                None,
            ),
            cost(
                ProbeId::TpLruInsertion,
                AttachMode::Tracepoint,
                Some((ProgKind::Tracepoint, 0, 0)),
                None,
            ),
        ];
        let mut s = String::new();
        format_table(&rows, Duration::from_millis(2000), &mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "per-probe BPF run time over 2.0s (kernel bpf_stats):"
        );
        assert!(lines[1].starts_with("probe "), "{s}");
        assert!(lines[1].ends_with("ns/event"), "{s}");
        let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            words(lines[2]),
            [
                "do_swap_page",
                "fentry",
                "entry+exit",
                "200",
                "20.00µs",
                "100"
            ]
        );
        assert_eq!(
            words(lines[3]),
            ["fentry_do_swap_page", "100", "12.00µs", "120"]
        );
        assert_eq!(
            words(lines[4]),
            ["fexit_do_swap_page", "100", "8.00µs", "80.0"]
        );
        assert_eq!(
            words(lines[5]),
            [
                "tp_page_free",
                "tracepoint",
                "tp_page_free",
                "3000000",
                "2.45s",
                "817"
            ]
        );
        // No runs: no average, not a division by zero.
        assert_eq!(
            words(lines[6]),
            [
                "tp_lru_insertion",
                "tracepoint",
                "tp_lru_insertion",
                "0",
                "0ns",
                "-"
            ]
        );
        assert_eq!(
            words(lines[7]),
            ["all", "probes", "3000200", "2.45s", "817"]
        );
        assert_eq!(lines[8], BODY_ONLY_NOTE);
        assert_eq!(lines.len(), 9);
        // Columns line up: every number ends where its header does.
        let end = lines[1].len();
        for l in &lines[2..8] {
            assert_eq!(l.chars().count(), end, "{l:?}");
        }
    }

    #[test]
    fn ns_per_event_fits_the_column() {
        let f = |v| {
            let mut s = String::new();
            fmt_ns_per_event(v, &mut s);
            s
        };
        assert_eq!(f(None), "-");
        assert_eq!(f(Some(42.24)), "42.2");
        assert_eq!(f(Some(152.6)), "153");
        assert_eq!(f(Some(999_999.0)), "999999");
        assert_eq!(f(Some(12_345_678.0)), "12346µs");
        assert!(
            f(Some(1e12)).chars().count() > 7,
            "only absurd values overflow"
        );
    }
}
