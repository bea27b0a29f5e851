//! How every output looks: the one place that turns findings, events,
//! flags, durations, severities and probe costs into text and JSON.
//!
//! - [`report`]: the `detector replay` report (text and JSON).
//! - [`finding`]: a finding in full, group lines, the one-line forms.
//! - [`row`]: a finding formatted once into the row the UI and the
//!   one-line printer show.
//! - [`events`]: events as text lines and JSON lines; [`perfetto`]: a
//!   trace as a Chrome trace-event document.
//! - [`columns`]: events and findings as Arrow record batches (the
//!   Parquet export's columns).
//! - [`costs`]: the per-probe BPF run-time table.
//! - [`units`]: durations, times, counts and sizes.
//!
//! Names of the ABI's values (probes, errnos, return values, swap entries,
//! folio flags) come from [`crate::event`]; severities and rules print as
//! the analyzer names them (`violation`, `near_miss`, `info`), everywhere.
//! Nothing here reads the kernel, a file or the clock.

#[cfg(feature = "parquet")]
pub mod columns;
pub mod costs;
pub mod events;
pub mod finding;
pub mod perfetto;
pub mod report;
pub mod row;
pub mod units;

use std::fmt::Write as _;

use crate::analyzer::Config;

/// `key=value ...` for every analyzer setting, in name order (through
/// serde, so a setting added to [`Config`] shows up without touching this).
pub fn describe_config(c: &Config) -> String {
    let mut s = String::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(c) {
        for (k, v) in m {
            if !s.is_empty() {
                s.push(' ');
            }
            let _ = write!(s, "{k}={v}");
        }
    }
    s
}

/// `ORIGIN: key=value ...`: the configuration an analysis runs with and
/// where it came from, as every command announces it.
pub fn describe_setup(origin: &str, config: &Config) -> String {
    format!("{origin}: {}", describe_config(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_description_names_every_setting() {
        let d = describe_config(&Config::default());
        for k in [
            "max_tracked=",
            "eexist_threshold=64",
            "lookups_per_window=",
            "task_idle_ns=",
        ] {
            assert!(d.contains(k), "{d}");
        }
    }
}
