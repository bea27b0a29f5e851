//! Durations, times, counts and sizes as people read them. Each form has
//! one function; the `Display` ones write without allocating.

use std::fmt;

/// A duration in the largest unit that keeps at least two whole digits,
/// truncated: `9999ns`, `12us`, `63ms`, `17s`. The report's fixed-width
/// columns use it (ASCII `us`).
pub fn ns_whole(ns: u64) -> String {
    if ns >= 10_000_000_000 {
        format!("{}s", ns / 1_000_000_000)
    } else if ns >= 10_000_000 {
        format!("{}ms", ns / 1_000_000)
    } else if ns >= 10_000 {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

/// A duration in the largest unit below 1000 with `places` decimals:
/// `999ns`, `12.3µs`, `1.25ms`, `4.0s`. The UI (one decimal) and the probe
/// run-time tables (two) use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsDecimal {
    pub ns: u64,
    pub places: usize,
}

impl fmt::Display for NsDecimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ns, p) = (self.ns, self.places);
        if ns < 1_000 {
            write!(f, "{ns}ns")
        } else if ns < 1_000_000 {
            write!(f, "{:.p$}µs", ns as f64 / 1e3)
        } else if ns < 1_000_000_000 {
            write!(f, "{:.p$}ms", ns as f64 / 1e6)
        } else {
            write!(f, "{:.p$}s", ns as f64 / 1e9)
        }
    }
}

/// [`NsDecimal`] with one decimal, as a `String` (the UI's durations).
pub fn ns_short(ns: u64) -> String {
    NsDecimal { ns, places: 1 }.to_string()
}

/// Seconds from `base` to `ts` with microsecond precision (`12.345678`),
/// 0 when `ts` is earlier: stream times of findings and groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Secs {
    pub ts: u64,
    pub base: u64,
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.ts.saturating_sub(self.base) as f64 / 1e9)
    }
}

/// Signed seconds from `base` to `ts` with nanosecond precision
/// (`1.000123456`, `-0.000000005`): the trace text's event times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelTime {
    pub ts: u64,
    pub base: u64,
}

impl fmt::Display for RelTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sign, d) = if self.ts >= self.base {
            ("", self.ts - self.base)
        } else {
            ("-", self.base - self.ts)
        };
        write!(f, "{sign}{}.{:09}", d / 1_000_000_000, d % 1_000_000_000)
    }
}

/// Signed nanoseconds printed as microseconds with three decimals (the
/// Chrome trace format's unit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelMicros(pub i128);

impl fmt::Display for RelMicros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let a = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:03}", a / 1000, a % 1000)
    }
}

/// A count in at most six characters: `9999`, `12.3k`, `4.5M`.
pub fn count(n: u64) -> String {
    if n < 10_000 {
        n.to_string()
    } else if n < 10_000_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        format!("{:.1}M", n as f64 / 1e6)
    }
}

/// A file size: `12KiB`, `3.4MiB`.
pub fn bytes(n: u64) -> String {
    if n < 1 << 20 {
        format!("{:.0}KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1}MiB", n as f64 / f64::from(1u32 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(ns_whole(9_999), "9999ns");
        assert_eq!(ns_whole(11_000), "11us");
        assert_eq!(ns_whole(63_999_999), "63ms");
        assert_eq!(ns_whole(17_500_000_000), "17s");
        assert_eq!(ns_short(999), "999ns");
        assert_eq!(ns_short(19_000), "19.0µs");
        assert_eq!(ns_short(4_000_000_000), "4.0s");
        assert_eq!(
            NsDecimal {
                ns: 12_000_000,
                places: 2
            }
            .to_string(),
            "12.00ms"
        );
    }

    #[test]
    fn times_counts_sizes() {
        assert_eq!(
            Secs {
                ts: 1_500_000_000,
                base: 0
            }
            .to_string(),
            "1.500000"
        );
        assert_eq!(Secs { ts: 1, base: 5 }.to_string(), "0.000000");
        assert_eq!(RelTime { ts: 5, base: 10 }.to_string(), "-0.000000005");
        assert_eq!(RelMicros(-1500).to_string(), "-1.500");
        assert_eq!(count(12_345), "12.3k");
        assert_eq!(count(45_000_000), "45.0M");
        assert_eq!(bytes(2048), "2KiB");
        assert_eq!(bytes(3 << 20), "3.0MiB");
    }
}
