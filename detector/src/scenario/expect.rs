//! `expect` lines: what a finding must name, and the exact matching of a
//! scenario's expectations against the findings it produced.

use std::fmt;

use thiserror::Error;

use crate::analyzer::{ConfidenceLevel, Finding, RuleId, Severity};
use crate::event::fmt_entry;

/// One expected finding: its rule and severity, and optionally the objects
/// it must name and its confidence. A field left `None` / empty is not
/// checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    pub rule: RuleId,
    pub severity: Severity,
    /// Swap entries the finding must list (`entry=`), raw values.
    pub entries: Vec<u64>,
    /// Folio addresses the finding must list (`folio=`).
    pub folios: Vec<u64>,
    /// Thread ids the finding must list (`tid=`).
    pub tids: Vec<u32>,
    pub confidence: Option<ConfidenceLevel>,
    /// `confidence.lost_events` (`lost=`).
    pub lost: Option<u64>,
    /// Line of the `expect` directive (1-based) and its text, for messages.
    pub line: usize,
    pub text: String,
}

impl Expectation {
    /// Only rule and severity, as the short form `expect RULE SEVERITY`.
    pub fn new(rule: RuleId, severity: Severity) -> Expectation {
        Expectation {
            rule,
            severity,
            entries: Vec::new(),
            folios: Vec::new(),
            tids: Vec::new(),
            confidence: None,
            lost: None,
            line: 0,
            text: String::new(),
        }
    }

    /// Whether `f` satisfies every declared field. Objects are checked by
    /// inclusion: a finding lists every object of its evidence chain, and
    /// the expectation names the ones it must blame.
    pub fn matches(&self, f: &Finding) -> bool {
        f.rule == self.rule
            && f.severity == self.severity
            && self
                .entries
                .iter()
                .all(|e| f.objects.entries.contains(&fmt_entry(*e)))
            && self
                .folios
                .iter()
                .all(|x| f.objects.folios.contains(&format!("{x:#x}")))
            && self.tids.iter().all(|t| f.objects.tids.contains(t))
            && self.confidence.is_none_or(|c| f.confidence.level == c)
            && self.lost.is_none_or(|n| f.confidence.lost_events == n)
    }
}

impl std::fmt::Display for Expectation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.text.is_empty() {
            return write!(f, "line {}: {}", self.line, self.text);
        }
        write!(f, "{} {}", self.rule, self.severity)?;
        for e in &self.entries {
            write!(f, " entry={}", fmt_entry(*e))?;
        }
        for x in &self.folios {
            write!(f, " folio={x:#x}")?;
        }
        for t in &self.tids {
            write!(f, " tid={t}")?;
        }
        if let Some(c) = self.confidence {
            write!(f, " confidence={}", confidence_name(c))?;
        }
        if let Some(n) = self.lost {
            write!(f, " lost={n}")?;
        }
        Ok(())
    }
}

fn confidence_name(c: ConfidenceLevel) -> &'static str {
    match c {
        ConfidenceLevel::Full => "full",
        ConfidenceLevel::Reduced => "reduced",
    }
}

/// One line describing a finding the way an `expect` line would.
pub fn describe_finding(f: &Finding) -> String {
    format!(
        "{} {} entries={:?} folios={:?} tids={:?} confidence={} lost={}",
        f.rule,
        f.severity,
        f.objects.entries,
        f.objects.folios,
        f.objects.tids,
        confidence_name(f.confidence.level),
        f.confidence.lost_events
    )
}

/// Checks `findings` against `expect` exactly: every expectation is met by
/// its own finding and every finding meets one expectation (a perfect
/// matching, so a loose expectation cannot steal the only finding a
/// stricter one accepts). Returns what is missing and what is unexpected.
pub fn check_findings(expect: &[Expectation], findings: &[Finding]) -> Result<(), Mismatch> {
    // Kuhn's augmenting paths: scenarios hold a handful of findings.
    let fits: Vec<Vec<usize>> = expect
        .iter()
        .map(|x| {
            (0..findings.len())
                .filter(|&j| x.matches(&findings[j]))
                .collect()
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; findings.len()];
    fn augment(
        i: usize,
        fits: &[Vec<usize>],
        seen: &mut [bool],
        owner: &mut [Option<usize>],
    ) -> bool {
        for &j in &fits[i] {
            if seen[j] {
                continue;
            }
            seen[j] = true;
            if owner[j].is_none_or(|k| augment(k, fits, seen, owner)) {
                owner[j] = Some(i);
                return true;
            }
        }
        false
    }
    let mut missing = Vec::new();
    for i in 0..expect.len() {
        let mut seen = vec![false; findings.len()];
        if !augment(i, &fits, &mut seen, &mut owner) {
            missing.push(i);
        }
    }
    let extra: Vec<usize> = (0..findings.len())
        .filter(|&j| owner[j].is_none())
        .collect();
    if missing.is_empty() && extra.is_empty() {
        return Ok(());
    }
    Err(Mismatch {
        missing: missing.into_iter().map(|i| expect[i].clone()).collect(),
        unexpected: extra.into_iter().map(|j| findings[j].clone()).collect(),
    })
}

/// Findings that do not match a scenario's expectations exactly.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub struct Mismatch {
    /// Expectations no finding of their own met.
    pub missing: Vec<Expectation>,
    /// Findings that met no expectation.
    pub unexpected: Vec<Finding>,
}

/// One line per missing expectation and per unexpected finding, each
/// starting on a new line (callers append it to a heading).
impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for x in &self.missing {
            write!(f, "\n  missing: {x}")?;
        }
        for u in &self.unexpected {
            write!(f, "\n  unexpected: #{} {}", u.id, describe_finding(u))?;
        }
        Ok(())
    }
}
