//! What the flight recorder keeps and when it writes: [`FlightPolicy`].

use std::path::PathBuf;
use std::time::Duration;

use crate::analyzer::Severity;

use super::FlightError;

/// The least severity that makes a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotOn {
    /// Violations only.
    Violation,
    /// Near misses and violations.
    NearMiss,
}

impl SnapshotOn {
    /// Accepts `violation`, `near-miss` and `near_miss`.
    pub fn from_name(s: &str) -> Option<SnapshotOn> {
        match s {
            "violation" => Some(SnapshotOn::Violation),
            "near-miss" | "near_miss" => Some(SnapshotOn::NearMiss),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SnapshotOn::Violation => "violation",
            SnapshotOn::NearMiss => "near-miss",
        }
    }

    /// Whether a finding of `severity` makes a snapshot.
    pub fn wants(self, severity: Severity) -> bool {
        let least = match self {
            SnapshotOn::Violation => Severity::Violation,
            SnapshotOn::NearMiss => Severity::NearMiss,
        };
        severity >= least
    }
}

/// How much the flight recorder keeps in memory and what it may write.
/// Windows are stream time (the items' CLOCK_MONOTONIC timestamps); the
/// daily rate is a rolling 24 hours of stream time. See
/// `docs/flight-recorder.md`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlightPolicy {
    /// Stream time kept before a trigger (and, at least, the trigger's
    /// whole evidence chain while the ring still holds it).
    pub keep: Duration,
    /// Bytes the ring may hold, counted as the capacity of the buffers it
    /// allocated. Whichever of `keep` and `memory` is reached first bounds
    /// what a snapshot can reach back to.
    pub memory: u64,
    /// Stream time written after the trigger.
    pub after: Duration,
    /// The same finding firing again extends the after-window, but never
    /// past this long after the first trigger.
    pub after_max: Duration,
    /// Least severity that makes a snapshot.
    pub on: SnapshotOn,
    /// Snapshots of this recorder (`flight-*`) the directory may hold.
    pub max_count: u32,
    /// Bytes those snapshots (traces and manifests) may take.
    pub max_bytes: u64,
    /// One snapshot file is closed once it reaches this size.
    pub snapshot_bytes: u64,
    /// Snapshots started in any 24 hours.
    pub per_day: u32,
    /// After a snapshot closed, the same finding (rule, severity, objects)
    /// firing again within this long is counted as merged into it, not
    /// written again.
    pub cooldown: Duration,
    /// Where snapshots go; created (mode 0700) when missing.
    pub dir: PathBuf,
}

impl Default for FlightPolicy {
    fn default() -> Self {
        FlightPolicy {
            keep: Duration::from_secs(30),
            memory: 64 << 20,
            after: Duration::from_secs(5),
            after_max: Duration::from_secs(60),
            on: SnapshotOn::Violation,
            max_count: 32,
            max_bytes: 2 << 30,
            snapshot_bytes: 256 << 20,
            per_day: 24,
            cooldown: Duration::from_secs(600),
            dir: PathBuf::from("/var/lib/detector/flight"),
        }
    }
}

/// Least ring size: a few chunks of the smallest size, so that dropping
/// the oldest chunk never empties the ring.
pub const MIN_MEMORY: u64 = 64 << 10;

impl FlightPolicy {
    pub(crate) fn validate(&self) -> Result<(), FlightError> {
        let bad = |what: String| Err(FlightError::Policy(what));
        if self.keep.is_zero() {
            return bad("keep must be longer than zero".into());
        }
        if self.memory < MIN_MEMORY {
            return bad(format!(
                "memory must be at least {} KiB, got {} bytes",
                MIN_MEMORY >> 10,
                self.memory
            ));
        }
        if self.after_max < self.after {
            return bad("after_max must not be shorter than after".into());
        }
        if self.max_count == 0 || self.per_day == 0 {
            return bad("max_count and per_day must allow at least one snapshot".into());
        }
        if self.max_bytes < MIN_MEMORY {
            return bad(format!(
                "max_bytes must be at least {} KiB",
                MIN_MEMORY >> 10
            ));
        }
        // What the ring holds is written at the trigger: it must fit one
        // snapshot with room for the after-window.
        if self.snapshot_bytes < self.memory.saturating_mul(2) {
            return bad(format!(
                "snapshot_bytes ({}) must be at least twice memory ({})",
                self.snapshot_bytes, self.memory
            ));
        }
        Ok(())
    }

    pub(crate) fn keep_ns(&self) -> u64 {
        ns(self.keep)
    }
    pub(crate) fn after_ns(&self) -> u64 {
        ns(self.after)
    }
    pub(crate) fn after_max_ns(&self) -> u64 {
        ns(self.after_max)
    }
    pub(crate) fn cooldown_ns(&self) -> u64 {
        ns(self.cooldown)
    }
}

pub(crate) fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_thresholds() {
        assert_eq!(
            SnapshotOn::from_name("near-miss"),
            Some(SnapshotOn::NearMiss)
        );
        assert_eq!(
            SnapshotOn::from_name("near_miss"),
            Some(SnapshotOn::NearMiss)
        );
        assert_eq!(
            SnapshotOn::from_name("violation"),
            Some(SnapshotOn::Violation)
        );
        assert_eq!(SnapshotOn::from_name("info"), None);
        assert!(SnapshotOn::NearMiss.wants(Severity::NearMiss));
        assert!(SnapshotOn::NearMiss.wants(Severity::Violation));
        assert!(!SnapshotOn::NearMiss.wants(Severity::Info));
        assert!(!SnapshotOn::Violation.wants(Severity::NearMiss));
        assert!(SnapshotOn::Violation.wants(Severity::Violation));
    }

    #[test]
    fn the_defaults_validate_and_nonsense_does_not() {
        assert!(FlightPolicy::default().validate().is_ok());
        for p in [
            FlightPolicy {
                keep: Duration::ZERO,
                ..FlightPolicy::default()
            },
            FlightPolicy {
                memory: 1000,
                ..FlightPolicy::default()
            },
            FlightPolicy {
                after_max: Duration::from_secs(1),
                ..FlightPolicy::default()
            },
            FlightPolicy {
                per_day: 0,
                ..FlightPolicy::default()
            },
            FlightPolicy {
                snapshot_bytes: 64 << 20,
                ..FlightPolicy::default()
            },
        ] {
            assert!(matches!(p.validate(), Err(FlightError::Policy(_))), "{p:?}");
        }
    }
}
