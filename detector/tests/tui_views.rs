//! Snapshot tests of every view: a real trace goes through the real replay
//! source, worker and analyzer into the model, and the views are rendered
//! with ratatui's TestBackend; the assertions read the screen text.

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

mod tui_support;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use detector::analyzer::Config;
use detector::bpfstats::{CostUpdate, ProbeCost, ProgCost, ProgKind, RunStats};
use detector::event::StreamItem;
use detector::groups::GroupInput;
use detector::plan::AttachMode;
use detector::stream::AnalyzerSetup;
use detector::stream::{FileSource, Source, Speed};
use detector::tui::app::{UiState, View};
use detector::tui::draw_frame;
use detector::tui::model::{Model, SourceState};
use detector::tui::render::buffer_text;
use detector::tui::worker::{lock, Worker};
use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

struct Fixture {
    model: Arc<Mutex<Model>>,
    ui: UiState,
    term: Terminal<TestBackend>,
    _dir: tempfile::TempDir,
}

fn fixture(w: u16, h: u16) -> Fixture {
    fixture_with(w, h, tui_support::stream(3000))
}

fn fixture_with(w: u16, h: u16, items: Vec<detector::event::StreamItem>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.dtr");
    let n = items.len() as u64;
    tui_support::write_trace(&path, &items);
    let source = FileSource::open(&path, Speed::Max).unwrap();
    let model = Arc::new(Mutex::new(Model::new(source.info())));
    let report = Worker {
        source: Box::new(source),
        setup: Some(AnalyzerSetup::given(Config::default())),
        recorder: None,
        model: Arc::clone(&model),
        stop: Arc::new(AtomicBool::new(false)),
    }
    .run();
    assert_eq!(report.items, n);
    Fixture {
        model,
        ui: UiState::default(),
        term: Terminal::new(TestBackend::new(w, h)).unwrap(),
        _dir: dir,
    }
}

impl Fixture {
    fn screen(&mut self) -> String {
        draw_frame(&mut self.term, &self.ui, &self.model).unwrap();
        let text = buffer_text(self.term.backend().buffer());
        if std::env::var_os("TUI_DUMP").is_some() {
            eprintln!("{text}");
        }
        text
    }

    fn key(&mut self, code: KeyCode) {
        let m = lock(&self.model);
        self.ui
            .handle_key(KeyEvent::new(code, KeyModifiers::NONE), &m);
    }

    fn type_text(&mut self, s: &str) {
        for c in s.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    /// The text of the probes table's cell under `header` in the row
    /// containing `needle` (cells are located by screen column, so a value
    /// in the wrong column does not count).
    fn probe_cell(&mut self, header: &str, needle: &str) -> String {
        let screen = self.screen();
        let lines: Vec<Vec<char>> = screen.lines().map(|l| l.chars().collect()).collect();
        let as_str = |l: &[char]| l.iter().collect::<String>();
        let head = lines
            .iter()
            .find(|l| as_str(l).starts_with("probe "))
            .unwrap_or_else(|| panic!("no probes header in\n{screen}"));
        let hs = as_str(head);
        let byte = hs.find(header).expect("header column");
        let col = hs[..byte].chars().count();
        let row = lines
            .iter()
            .find(|l| as_str(l).contains(needle))
            .unwrap_or_else(|| panic!("no row with {needle:?} in\n{screen}"));
        as_str(&row[col..])
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    }

    /// The screen line containing `needle`.
    fn line_with(&mut self, needle: &str) -> String {
        let screen = self.screen();
        screen
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in\n{screen}"))
            .to_string()
    }
}

#[test]
fn overview_shows_plan_rates_and_losses() {
    let mut f = fixture(150, 36);
    let s = f.screen();
    assert!(s.contains("kernel 6.12.95+deb12-cloud-amd64"), "{s}");
    assert!(
        s.contains("ended: end of trace, 3007 records, complete"),
        "{s}"
    );
    assert!(s.contains("events 3006"), "{s}");
    assert!(s.contains("lost 17"), "{s}");
    assert!(s.contains("1 violation"), "{s}");
    assert!(s.contains("2 fentry") || s.contains("8 fentry"), "{s}");
    assert!(
        s.contains("1 tracepoint") && s.contains("1 unavailable"),
        "{s}"
    );
    assert!(s.contains("DEGRADED"), "{s}");
    let lookup = f.line_with("swap_cache_get_folio");
    assert!(lookup.contains("fentry"), "{lookup}");
    assert!(lookup.contains("17"), "{lookup}");
    // 3000 background events over 3 s: three quarters are lookups, so about
    // 750 per second; the last complete second is shown.
    assert!(
        lookup.contains("750") || lookup.contains("749") || lookup.contains("751"),
        "{lookup}"
    );
    // A sparkline of the seconds seen.
    assert!(lookup.contains('█'), "{lookup}");
    let del = f.line_with("__delete_from_swap_cache");
    assert!(
        del.contains("kprobe") && del.contains("fentry refused: EBUSY"),
        "{del}"
    );
    // A replay has no run time to show.
    assert!(s.contains("ns/ev"), "{s}");
    assert_eq!(f.probe_cell("ns/ev", "swap_cache_get_folio"), "-");
    assert_eq!(f.probe_cell("ns/ev", "__delete_from_swap_cache"), "-");
    let gup = f.line_with("no try_grab_folio_fast");
    assert!(
        gup.contains("unavailable") && gup.contains("no try_grab_folio_fast"),
        "{gup}"
    );

    // Lost events are red, never hidden.
    let buf = f.term.backend().buffer().clone();
    let y = (0..buf.area.height)
        .find(|&y| {
            (0..buf.area.width)
                .map(|x| buf[(x, y)].symbol())
                .collect::<String>()
                .contains("swap_cache_get_folio")
        })
        .unwrap();
    let row: String = (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect();
    let col = row.find(" 17 ").unwrap() + 1;
    assert_eq!(buf[(col as u16, y)].bg, Color::Red);
}

fn cost(probe: detector_common::ProbeId, kind: ProgKind, run_cnt: u64, ns: u64) -> ProbeCost {
    let prog = ProgCost {
        kind,
        stats: RunStats {
            run_cnt,
            run_time_ns: ns,
        },
    };
    let exit = matches!(kind, ProgKind::Fexit | ProgKind::Kretprobe);
    ProbeCost {
        probe,
        mode: AttachMode::Fentry,
        entry: (!exit).then_some(prog),
        exit: exit.then_some(prog),
    }
}

#[test]
fn overview_shows_live_run_time_per_event() {
    use detector_common::ProbeId;
    let mut f = fixture(150, 36);
    {
        let mut m = lock(&f.model);
        m.info.live = true;
        m.apply_costs(&CostUpdate {
            total: vec![
                cost(ProbeId::SwapCacheLookup, ProgKind::Fexit, 10_000, 2_000_000),
                cost(ProbeId::SwapCacheInsert, ProgKind::Fexit, 50, 21_120),
            ],
            recent: vec![
                cost(ProbeId::SwapCacheLookup, ProgKind::Fexit, 1000, 152_600),
                cost(ProbeId::SwapCacheInsert, ProgKind::Fexit, 0, 0),
            ],
            unavailable: None,
        });
    }
    // The last interval's cost, not the average since the start (200).
    assert_eq!(f.probe_cell("ns/ev", "swap_cache_get_folio"), "153");
    // Idle in the last interval: the average since the start.
    assert_eq!(f.probe_cell("ns/ev", "add_to_swap_cache"), "422");
    // No reading for a probe: "-", never a made-up 0.
    assert_eq!(f.probe_cell("ns/ev", "__delete_from_swap_cache"), "-");
    assert!(!f.screen().contains("run time unavailable"));

    lock(&f.model).apply_costs(&CostUpdate {
        unavailable: Some("the kernel did not enable BPF run-time statistics: EINVAL".into()),
        ..CostUpdate::default()
    });
    // Said where the column is, in the probes table's title.
    let title = f.line_with("per-probe run time unavailable");
    assert!(
        title.starts_with(" probes ")
            && title
                .contains("unavailable: the kernel did not enable BPF run-time statistics: EINVAL"),
        "{title}"
    );
    assert_eq!(f.probe_cell("ns/ev", "swap_cache_get_folio"), "-");
}

#[test]
fn findings_list_and_evidence_drill_down() {
    let mut f = fixture(150, 36);
    f.key(KeyCode::Char('2'));
    assert_eq!(f.ui.view(), View::Findings);
    let row = f.line_with("swap_entry_aba");
    assert!(row.contains("violation"), "{row}");
    assert!(row.contains("entry 0:0x1a2b"), "{row}");
    assert!(row.contains("folio 0xffffea0000042000"), "{row}");
    assert!(row.contains("uffd-mover/4242"), "{row}");

    f.key(KeyCode::Enter);
    let s = f.screen();
    assert!(s.contains("finding #1"), "{s}");
    assert!(s.contains("VIOLATION"), "{s}");
    assert!(s.contains("PTE recheck passed on a reused entry"), "{s}");
    assert!(s.contains("evidence timeline"), "{s}");
    // The timeline starts where the window opened.
    let open = f.line_with("move_pages enter");
    assert!(open.contains("+0ns"), "{open}");
    let lookup = f.line_with("move_pages_lookup");
    assert!(lookup.contains("uffd-mover/4242"), "{lookup}");
    assert!(lookup.contains("+1.0µs"), "{lookup}");
    let free = f.line_with("swap_entry_free");
    assert!(free.contains("kswapd0/77"), "{free}");
    // CPU comes from the event itself (kswapd0 runs on CPU 1 here).
    assert!(free.contains(" 1 "), "{free}");
    assert!(free.contains("+5.0µs"), "{free}");
    let moved = f.line_with("folio_move_anon_rmap enter");
    assert!(moved.contains("+14.0µs"), "{moved}");
    // The state line under each step, in the report's form.
    assert!(
        s.contains("folio=0xffffea0000042000 [anon|swapbacked|uptodate] ref=2 map=0"),
        "{s}"
    );

    f.key(KeyCode::Esc);
    assert!(f
        .screen()
        .contains("findings: 1 in 1 group(s), newest first"));
}

#[test]
fn a_storm_is_one_group_whose_examples_drill_down() {
    let mut items = tui_support::stream(3000);
    let end = items.last().map_or(0, StreamItem::ts_ns);
    tui_support::storm(&mut items, end + 1_000, 500);
    let mut f = fixture_with(150, 36, items);
    {
        let m = lock(&f.model);
        // 500 findings, 3 rows kept.
        let g = m.findings.groups().last().unwrap();
        assert_eq!(g.span.count, 500);
        assert_eq!(g.examples.len(), 3);
        assert_eq!(m.findings.total(), 501);
    }
    f.key(KeyCode::Char('2'));
    let s = f.screen();
    assert!(
        s.contains("findings: 501 in 2 group(s), newest first"),
        "{s}"
    );
    let row = f.line_with("swapin_without_cache_pin");
    assert!(row.contains("×500"), "{row}");
    assert!(row.contains("#2 "), "{row}");
    assert!(row.contains("stress/700"), "{row}");
    // The ABA stays its own group of one.
    assert!(!f.line_with("swap_entry_aba").contains('×'));

    // The newest group is selected: drill into its first example.
    f.key(KeyCode::Enter);
    let s = f.screen();
    assert!(s.contains("finding #2 "), "{s}");
    assert!(
        s.contains("group: 500 findings by stress/700, cause not_held, #2..#501"),
        "{s}"
    );
    assert!(s.contains("example 1 of 3"), "{s}");
    assert!(s.contains("swap_read enter"), "{s}");
    f.key(KeyCode::Char('n'));
    let s = f.screen();
    assert!(
        s.contains("finding #3 ") && s.contains("example 2 of 3"),
        "{s}"
    );
    f.key(KeyCode::Char('N'));
    f.key(KeyCode::Char('N'));
    let s = f.screen();
    assert!(
        s.contains("finding #4 ") && s.contains("example 3 of 3"),
        "{s}"
    );
    f.key(KeyCode::Esc);
    assert!(f.screen().contains("newest first"));

    // Filters see the group through its task and its examples.
    f.key(KeyCode::Char('/'));
    f.type_text("pid:700");
    f.key(KeyCode::Enter);
    let s = f.screen();
    assert!(s.contains("groups matching `pid:700`: 1 of 2"), "{s}");
}

#[test]
fn filter_by_pid_comm_and_rule() {
    let mut f = fixture(150, 30);
    f.key(KeyCode::Char('2'));
    f.key(KeyCode::Char('/'));
    f.type_text("pid:9001");
    assert!(f
        .screen()
        .contains("filter (pid:N comm:S rule:S): pid:9001"));
    f.key(KeyCode::Enter);
    let s = f.screen();
    assert!(s.contains("no finding matches the filter"), "{s}");
    assert!(s.contains("filter: pid:9001"), "{s}");
    f.key(KeyCode::Esc);
    assert!(!f.screen().contains("filter: pid:9001"));
    f.key(KeyCode::Char('/'));
    f.type_text("comm:uffd rule:abx");
    f.key(KeyCode::Backspace);
    f.type_text("a");
    f.key(KeyCode::Enter);
    assert!(f.screen().contains("swap_entry_aba"));
    f.key(KeyCode::Char('/'));
    f.type_text("pid:notanumber");
    f.key(KeyCode::Enter);
    assert!(f.screen().contains("a pid is a decimal number"));
}

#[test]
fn objects_lookup_shows_generations_and_lookers() {
    let mut f = fixture(150, 30);
    f.key(KeyCode::Char('3'));
    assert!(f.screen().contains("recent objects:"));
    f.key(KeyCode::Char('/'));
    f.type_text("0:0x1a2b");
    f.key(KeyCode::Enter);
    let s = f.screen();
    assert!(s.contains("entry 0:0x1a2b  generation 1"), "{s}");
    assert!(s.contains("looked up by: uffd-mover/4242 ×1"), "{s}");
    let free = f.line_with("swap_entry_free");
    assert!(free.contains("kswapd0/77"), "{free}");
    let alloc = f.line_with("swap_entry_alloc");
    assert!(alloc.contains("0xffffea0000043000"), "{alloc}");
    // The folio the mover got has its own history.
    f.key(KeyCode::Esc);
    f.key(KeyCode::Char('/'));
    f.type_text("0xffffea0000042000");
    f.key(KeyCode::Enter);
    let s = f.screen();
    assert!(s.contains("folio 0xffffea0000042000"), "{s}");
    assert!(f
        .line_with("folio_move_anon_rmap")
        .contains("sb an ud ref 2 map 0"));
    // Something never seen.
    f.key(KeyCode::Esc);
    f.key(KeyCode::Char('/'));
    f.type_text("3:0x99");
    f.key(KeyCode::Enter);
    assert!(f
        .screen()
        .contains("entry 3:0x99: not in the recent history"));
}

#[test]
fn windows_view_shows_percentiles() {
    let mut f = fixture(150, 30);
    f.key(KeyCode::Char('4'));
    let s = f.screen();
    assert!(s.contains("p50") && s.contains("p99"), "{s}");
    let w = f.line_with("move_pages lookup->close");
    // One window of 19 µs (lookup at +1 µs, return at +20 µs).
    assert!(w.contains("19.0µs"), "{w}");
    assert!(s.contains("distribution"), "{s}");
}

#[test]
fn help_pause_and_view_switching() {
    let mut f = fixture(150, 30);
    f.key(KeyCode::Char('?'));
    let s = f.screen();
    assert!(s.contains("pause the display"), "{s}");
    f.key(KeyCode::Char('x'));
    assert!(!f.screen().contains("pause the display"));
    f.key(KeyCode::Tab);
    assert_eq!(f.ui.view(), View::Findings);
    f.key(KeyCode::BackTab);
    assert_eq!(f.ui.view(), View::Overview);

    f.key(KeyCode::Char('p'));
    assert!(f.screen().contains("PAUSED"));
    // The worker keeps going: a finding that arrives while paused is in
    // the model but not on screen until the display resumes.
    {
        let mut m = lock(&f.model);
        let g = m.findings.groups()[0].clone();
        let mut extra = g.examples[0].clone();
        extra.seq = 2;
        m.add_finding(
            GroupInput {
                rule: g.rule,
                severity: g.severity,
                tid: g.tid,
                comm: &g.comm,
                cause: &g.cause,
                id: 2,
                ts_ns: g.span.last_ns,
            },
            || extra,
        );
        m.state = SourceState::Running;
    }
    f.key(KeyCode::Char('2'));
    let s = f.screen();
    assert!(s.contains("findings: 1 in 1 group(s),"), "{s}");
    f.key(KeyCode::Char('p'));
    let s = f.screen();
    assert!(
        s.contains("findings: 2 in 1 group(s),") && !s.contains("PAUSED"),
        "{s}"
    );
    // The second finding of the same kind joined the first one's group.
    assert!(f.line_with("swap_entry_aba").contains("×2"), "{s}");
}

#[test]
fn tiny_terminal_and_resize() {
    let mut f = fixture(40, 10);
    let s = f.screen();
    assert!(s.contains("terminal too small: 40x10"), "{s}");
    f.term.backend_mut().resize(100, 30);
    let s = f.screen();
    assert!(s.contains("detector live"), "{s}");
    assert!(!s.contains("too small"), "{s}");
    f.term.backend_mut().resize(64, 14);
    let s = f.screen();
    assert!(s.contains("Overview"), "{s}");
}

#[test]
fn quit_keys() {
    let mut f = fixture(100, 30);
    f.key(KeyCode::Char('q'));
    assert!(f.ui.quit);
    let mut f = fixture(100, 30);
    {
        let m = lock(&f.model);
        f.ui.handle_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL), &m);
    }
    assert!(f.ui.quit);
}
