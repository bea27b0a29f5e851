use detector_common::{swp_entry, V_ENTRY_PARTIAL};

use super::*;
use crate::analyzer::Finding;
use crate::event::EventExt;

#[test]
fn parses_tasks_events_and_expectations() {
    let s = parse(
        "name t\nseed 000\ntask m tid=7 pid=5 comm=mover\n\
         1 m move_pages enter addr=0x1000\n\
         2 m move_pages_lookup exit index=0x40 space=S1\n\
         3 m do_swap_page exit pte=swap:1:0x40 ret=0\n\
         4 lost swap_entry_free 3\n\
         expect swap_entry_aba near_miss x2\n",
        "t",
    )
    .unwrap();
    assert_eq!(s.items.len(), 4);
    let mut want = Expectation::new(RuleId::SwapEntryAba, Severity::NearMiss);
    want.line = 8;
    want.text = "expect swap_entry_aba near_miss x2".into();
    assert_eq!(s.expect, vec![want; 2]);
    let StreamItem::Event(e) = s.items[2] else {
        panic!()
    };
    assert_eq!(e.swap_entry(), Some(swp_entry(1, 0x40)));
    assert_eq!((e.tid, e.pid), (7, 5));
    let StreamItem::Event(l) = s.items[1] else {
        panic!()
    };
    assert_ne!(l.valid & V_ENTRY_PARTIAL, 0);
}

fn finding(folios: &[u64], tids: &[u32], level: ConfidenceLevel) -> Finding {
    Finding {
        id: 1,
        rule: RuleId::SwapEntryAba,
        severity: Severity::Violation,
        objects: crate::analyzer::Objects {
            entries: vec!["1:0x40".into()],
            folios: folios.iter().map(|f| format!("{f:#x}")).collect(),
            tids: tids.to_vec(),
        },
        explanation: String::new(),
        cause: String::new(),
        evidence: Vec::new(),
        confidence: crate::analyzer::Confidence {
            level,
            lost_events: u64::from(level == ConfidenceLevel::Reduced) * 12,
            note: String::new(),
        },
    }
}

#[test]
fn expectations_name_objects_and_confidence() {
    let s = parse(
        "name t\ntask m tid=7\ntask k tid=9\n\
         1 m move_pages_lookup exit entry=1:0x40 folio=B\n\
         2 k swap_entry_alloc exit entry=1:0x40 folio=A\n\
         expect swap_entry_aba violation entry=1:0x40 folio=B,A tid=m confidence=full\n\
         expect swap_entry_aba violation x2 tid=9 lost=12\n",
        "t",
    )
    .unwrap();
    assert_eq!(s.expect.len(), 3);
    let (a, b) = (FOLIO_BASE + 0x40, FOLIO_BASE + 0x80);
    assert_eq!(s.expect[0].folios, vec![a, b]);
    assert_eq!(s.expect[0].tids, vec![7]);
    assert_eq!(s.expect[0].confidence, Some(ConfidenceLevel::Full));
    assert_eq!(s.expect[1].tids, vec![9]);
    assert_eq!(s.expect[1].lost, Some(12));
    assert!(s.expect[0].matches(&finding(&[b, a], &[7, 9], ConfidenceLevel::Full)));
    assert!(!s.expect[0].matches(&finding(&[a], &[7], ConfidenceLevel::Full)));
    assert!(!s.expect[0].matches(&finding(&[a, b], &[7], ConfidenceLevel::Reduced)));
    // A folio name no event defines is a typo, not a silent mismatch.
    let e = parse(
        "name t\ntask m tid=7\n1 m gup_grab exit folio=F\nexpect pin_not_exclusive violation folio=G\n",
        "f.scn",
    )
    .unwrap_err();
    assert_eq!(e.line, 4);
    let e = parse(
        "name t\nexpect pin_not_exclusive violation tid=nobody\n",
        "f",
    )
    .unwrap_err();
    assert!(e.to_string().contains("nobody"), "{e}");
    let e = parse(
        "name t\nexpect pin_not_exclusive violation confidence=high\n",
        "f",
    );
    assert!(e.is_err());
}

#[test]
fn matching_is_exact_and_finds_a_perfect_assignment() {
    let (a, b) = (0x1000, 0x2000);
    let loose = Expectation::new(RuleId::SwapEntryAba, Severity::Violation);
    let mut strict = loose.clone();
    strict.folios = vec![a];
    let fa = finding(&[a], &[1], ConfidenceLevel::Full);
    let fb = finding(&[b], &[1], ConfidenceLevel::Full);
    // The loose expectation comes first and could take `fa`; the
    // matching must still give `fa` to the strict one.
    assert!(check_findings(&[loose.clone(), strict.clone()], &[fa.clone(), fb.clone()]).is_ok());
    let err = check_findings(std::slice::from_ref(&strict), std::slice::from_ref(&fb)).unwrap_err();
    assert_eq!(
        (&err.missing[..], &err.unexpected[..]),
        (std::slice::from_ref(&strict), std::slice::from_ref(&fb))
    );
    let text = err.to_string();
    assert!(
        text.contains("\n  missing: ") && text.contains("\n  unexpected: #1 swap_entry_aba"),
        "{text}"
    );
    let err = check_findings(std::slice::from_ref(&loose), &[fa.clone(), fb]).unwrap_err();
    assert!(err.missing.is_empty() && err.unexpected.len() == 1, "{err}");
    let err = check_findings(&[loose.clone(), loose], &[fa]).unwrap_err();
    assert!(err.missing.len() == 1 && err.unexpected.is_empty(), "{err}");
    assert!(check_findings(&[], &[]).is_ok());
}

#[test]
fn errors_name_the_line() {
    let e = parse(
        "name t\ntask m tid=1\n1 m bogus enter\nexpect none\n",
        "f.scn",
    )
    .unwrap_err();
    assert_eq!(e.line, 3);
    assert!(e.to_string().contains("unknown probe"));
    assert!(parse("name t\n", "f").is_err());
}
