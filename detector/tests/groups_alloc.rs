//! A finding storm must not cost memory per finding: once a group holds its
//! examples, counting another finding into it allocates nothing. Checked
//! with a counting global allocator (its own test binary, one test, so no
//! other thread allocates while it counts).

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use detector::analyzer::{Confidence, Evidence, Finding, Objects, RuleId, Severity, StateSnapshot};
use detector::groups::{GroupInput, Groups};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counter is only an atomic add.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's layout contract is passed through as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`, and `new_size` comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn finding(id: u64) -> Finding {
    Finding {
        id,
        rule: RuleId::SwapinWithoutCachePin,
        severity: Severity::Violation,
        objects: Objects::default(),
        explanation: "tid 700 read swap entry 2:0x30 without the pin".into(),
        evidence: vec![Evidence {
            index: id * 9,
            ts_ns: 1_000 * id,
            probe: "swap_read".into(),
            kind: "enter".into(),
            tid: 700,
            comm: "stress".into(),
            note: String::new(),
            state: StateSnapshot::default(),
        }],
        confidence: Confidence::full(),
        cause: "not_held".into(),
    }
}

#[test]
fn counting_into_a_full_group_allocates_nothing() {
    let mut groups: Groups<Finding> = Groups::default();
    let storm: Vec<Finding> = (1..=10_000).map(finding).collect();
    for f in &storm[..3] {
        groups.add(GroupInput::of(f), || f.clone());
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for f in &storm[3..] {
        let placed = groups.add(GroupInput::of(f), || f.clone());
        assert!(!placed.example);
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(after - before, 0, "allocations while counting");
    let g = &groups.groups()[0];
    assert_eq!(g.span.count, 10_000);
    assert_eq!(g.examples.len(), 3);
    assert_eq!((g.span.first_id, g.span.last_id), (1, 10_000));
}
