mod tui_support;

use detector::analyzer::{Analyzer, Config};

#[test]
fn the_crafted_stream_produces_an_aba_finding() {
    let items = tui_support::stream(300);
    let mut a = Analyzer::new(Config::default());
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        a.process(i as u64, it, &mut out);
    }
    a.finish(&mut out);
    for f in &out {
        eprintln!("{:?} {:?} {}", f.rule, f.severity, f.explanation);
    }
    assert!(
        out.iter().any(|f| f.rule.name() == "swap_entry_aba"),
        "{out:#?}"
    );
}
