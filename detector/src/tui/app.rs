//! UI state and key handling. Keys only change this state (and, for pause,
//! take one snapshot of the model); they never wait on the worker.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::Model;
use super::objects::{ObjHistory, ObjKey, ObjRecord};
use crate::groups::Group;
use crate::present::row::FindingRow;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Overview,
    Findings,
    Objects,
    Windows,
}

impl View {
    pub const ALL: [View; 4] = [View::Overview, View::Findings, View::Objects, View::Windows];

    pub fn title(self) -> &'static str {
        match self {
            View::Overview => "Overview",
            View::Findings => "Findings",
            View::Objects => "Objects",
            View::Windows => "Windows",
        }
    }

    fn index(self) -> usize {
        match self {
            View::Overview => 0,
            View::Findings => 1,
            View::Objects => 2,
            View::Windows => 3,
        }
    }
}

/// A filter term that does not parse (shown in the footer).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("`{0}`: a pid is a decimal number")]
    Pid(String),
}

/// A `/` filter: space-separated terms, all of which must match.
/// `pid:N` (pid or tid), `comm:S` (substring), `rule:S` (substring), or a
/// bare word matching a rule or a comm.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pids: Vec<u32>,
    comms: Vec<String>,
    rules: Vec<String>,
    words: Vec<String>,
}

impl Filter {
    pub fn parse(s: &str) -> Result<Filter, FilterError> {
        let mut f = Filter::default();
        for term in s.split_whitespace() {
            match term.split_once(':') {
                Some(("pid" | "tid", v)) => f
                    .pids
                    .push(v.parse().map_err(|_| FilterError::Pid(term.to_owned()))?),
                Some(("comm", v)) => f.comms.push(v.to_owned()),
                Some(("rule", v)) => f.rules.push(v.to_owned()),
                _ => f.words.push(term.to_owned()),
            }
        }
        Ok(f)
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
            && self.comms.is_empty()
            && self.rules.is_empty()
            && self.words.is_empty()
    }

    /// A group matches when its task or any step of its examples does.
    pub fn matches_group(&self, g: &Group<FindingRow>) -> bool {
        let steps = || g.examples.iter().flat_map(|f| f.evidence.iter());
        let comm_has = |c: &str| g.comm.contains(c) || steps().any(|e| e.comm.contains(c));
        let rule = g.rule.name();
        self.pids
            .iter()
            .all(|&p| g.tid == p || steps().any(|e| e.pid == p || e.tid == p))
            && self.comms.iter().all(|c| comm_has(c))
            && self.rules.iter().all(|r| rule.contains(r.as_str()))
            && self
                .words
                .iter()
                .all(|w| rule.contains(w.as_str()) || comm_has(w))
    }

    pub fn matches_record(&self, r: &ObjRecord) -> bool {
        self.pids.iter().all(|&p| r.pid == p || r.tid == p)
            && self.comms.iter().all(|c| r.comm_str().contains(c.as_str()))
            && self
                .words
                .iter()
                .all(|w| r.comm_str().contains(w.as_str()) || r.probe_name().contains(w.as_str()))
    }

    pub fn matches_object(&self, h: &ObjHistory) -> bool {
        self.is_empty() || h.records.iter().any(|r| self.matches_record(r))
    }
}

#[derive(Debug, Default)]
pub struct UiState {
    pub view_index: usize,
    /// Selected finding group (index in the model's groups); `None`
    /// follows the newest.
    pub finding_sel: Option<usize>,
    /// Group being drilled into.
    pub finding_detail: Option<usize>,
    /// Which of that group's examples is shown.
    pub example: usize,
    pub detail_scroll: usize,
    /// Selected object; `None` follows the most recent.
    pub object_sel: Option<ObjKey>,
    pub object_detail: Option<ObjKey>,
    pub window_sel: usize,
    pub probe_scroll: usize,
    pub filter: Filter,
    pub filter_text: String,
    /// Text being typed after `/`.
    pub prompt: Option<String>,
    /// Frozen copy of the model while paused.
    pub paused: Option<Box<Model>>,
    pub help: bool,
    pub quit: bool,
    /// One-line status message (bad filter, object not found).
    pub message: Option<String>,
}

impl UiState {
    pub fn view(&self) -> View {
        View::ALL[self.view_index % View::ALL.len()]
    }

    pub fn set_view(&mut self, v: View) {
        self.view_index = v.index();
    }

    /// Applies one key. `live` is the current model (used to take the pause
    /// snapshot and to resolve selections).
    pub fn handle_key(&mut self, key: KeyEvent, live: &Model) {
        if key.kind == KeyEventKind::Release {
            return;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        if ctrl && matches!(key.code, KeyCode::Char('c')) {
            self.quit = true;
            return;
        }
        if let Some(text) = self.prompt.as_mut() {
            match key.code {
                KeyCode::Esc => self.prompt = None,
                KeyCode::Enter => {
                    let text = std::mem::take(text);
                    self.prompt = None;
                    self.apply_prompt(&text, live);
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) if !ctrl => text.push(c),
                _ => {}
            }
            return;
        }
        if self.help {
            // Any key closes the help; q still quits.
            self.help = false;
            if key.code == KeyCode::Char('q') {
                self.quit = true;
            }
            return;
        }
        self.message = None;
        if matches!(key.code, KeyCode::Char('p') | KeyCode::Char(' ')) {
            self.paused = match self.paused.take() {
                Some(_) => None,
                None => Some(Box::new(live.clone())),
            };
            return;
        }
        // Moves and drills act on what is on screen: the frozen copy while
        // paused. Taken out for the duration so `self` can change.
        let paused = self.paused.take();
        let model = paused.as_deref().unwrap_or(live);
        self.navigate(key, model);
        self.paused = paused;
    }

    fn navigate(&mut self, key: KeyEvent, model: &Model) {
        match key.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Tab => self.view_index = (self.view_index + 1) % View::ALL.len(),
            KeyCode::BackTab => {
                self.view_index = (self.view_index + View::ALL.len() - 1) % View::ALL.len();
            }
            KeyCode::Char(c @ '1'..='4') => self.view_index = usize::from(c as u8 - b'1'),
            KeyCode::Char('/') => self.prompt = Some(String::new()),
            KeyCode::Char('n' | ']') => self.next_example(model, 1),
            KeyCode::Char('N' | '[') => self.next_example(model, -1),
            KeyCode::Esc => self.back(),
            KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => self.drill(model),
            KeyCode::Left | KeyCode::Char('h') => self.back(),
            KeyCode::Up | KeyCode::Char('k') => self.move_by(model, -1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(model, 1),
            KeyCode::PageUp => self.move_by(model, -10),
            KeyCode::PageDown => self.move_by(model, 10),
            KeyCode::Home | KeyCode::Char('g') => self.move_by(model, isize::MIN / 2),
            KeyCode::End | KeyCode::Char('G') => self.move_by(model, isize::MAX / 2),
            _ => {}
        }
    }

    /// `/` text: an object key in the Objects view jumps to that object;
    /// anything else is a filter.
    fn apply_prompt(&mut self, text: &str, live: &Model) {
        if self.view() == View::Objects {
            if let Some(key) = ObjKey::parse(text) {
                let model = self.paused.as_deref().unwrap_or(live);
                match model.objects.get(key) {
                    Some((found, _)) => {
                        self.object_sel = Some(found);
                        self.object_detail = Some(found);
                        self.detail_scroll = 0;
                    }
                    None => {
                        self.message = Some(format!("{key}: not in the recent history"));
                    }
                }
                return;
            }
        }
        match Filter::parse(text) {
            Ok(f) => {
                self.filter = f;
                self.filter_text = text.trim().to_owned();
                self.finding_sel = None;
                self.object_sel = None;
            }
            Err(e) => self.message = Some(e.to_string()),
        }
    }

    fn back(&mut self) {
        if self.finding_detail.is_some() && self.view() == View::Findings {
            self.finding_detail = None;
        } else if self.object_detail.is_some() && self.view() == View::Objects {
            self.object_detail = None;
        } else if !self.filter.is_empty() {
            self.filter = Filter::default();
            self.filter_text.clear();
        }
        self.detail_scroll = 0;
    }

    /// In a group's drill-down: the next (or previous) example, wrapping.
    fn next_example(&mut self, model: &Model, delta: isize) {
        if self.view() != View::Findings {
            return;
        }
        let Some(n) = self
            .finding_detail
            .and_then(|i| model.findings.get(i))
            .map(|g| g.examples.len())
            .filter(|&n| n > 0)
        else {
            return;
        };
        let cur = self.example.min(n - 1) as isize;
        self.example = (cur + delta).rem_euclid(n as isize) as usize;
        self.detail_scroll = 0;
    }

    fn drill(&mut self, model: &Model) {
        match self.view() {
            View::Findings if self.finding_detail.is_none() => {
                let group = self.selected_finding(model).map(|(_, i, _)| i);
                self.finding_detail = group;
                self.example = 0;
                self.detail_scroll = 0;
            }
            View::Objects if self.object_detail.is_none() => {
                let key = self.selected_object(model).map(|(_, k)| k);
                self.object_detail = key;
                self.detail_scroll = 0;
            }
            View::Overview => self.set_view(View::Findings),
            _ => {}
        }
    }

    fn move_by(&mut self, model: &Model, delta: isize) {
        let step = |pos: usize, len: usize| -> usize {
            if len == 0 {
                0
            } else {
                pos.saturating_add_signed(delta).min(len - 1)
            }
        };
        match self.view() {
            View::Findings if self.finding_detail.is_some() => {
                self.detail_scroll = self.detail_scroll.saturating_add_signed(delta).min(10_000);
            }
            View::Objects if self.object_detail.is_some() => {
                self.detail_scroll = self.detail_scroll.saturating_add_signed(delta).min(10_000);
            }
            View::Findings => {
                let len = self.filtered_findings(model).count();
                let pos = self.selected_finding(model).map_or(0, |(p, _, _)| p);
                let new = step(pos, len);
                let group = self.filtered_findings(model).nth(new).map(|(i, _)| i);
                self.finding_sel = group;
            }
            View::Objects => {
                let len = self.filtered_objects(model).count();
                let pos = self.selected_object(model).map_or(0, |(i, _)| i);
                let new = step(pos, len);
                let key = self.filtered_objects(model).nth(new).copied();
                self.object_sel = key;
            }
            View::Windows => self.window_sel = step(self.window_sel, model.windows.len()),
            View::Overview => {
                self.probe_scroll = step(self.probe_scroll, model.info.plan.len().max(1));
            }
        }
    }

    /// Finding groups that pass the filter, with their index in the
    /// model, newest group first (groups keep their place as they grow).
    pub fn filtered_findings<'a>(
        &'a self,
        m: &'a Model,
    ) -> impl Iterator<Item = (usize, &'a Group<FindingRow>)> + 'a {
        m.findings
            .groups()
            .iter()
            .enumerate()
            .rev()
            .filter(move |(_, g)| self.filter.matches_group(g))
    }

    /// The selected group: its position in the filtered list, its index
    /// and the group; follows the newest when nothing was chosen or the
    /// choice is filtered out.
    pub fn selected_finding<'a>(
        &'a self,
        m: &'a Model,
    ) -> Option<(usize, usize, &'a Group<FindingRow>)> {
        let mut it = self
            .filtered_findings(m)
            .enumerate()
            .map(|(p, (i, g))| (p, i, g));
        match self.finding_sel {
            Some(sel) => it
                .find(|(_, i, _)| *i == sel)
                .or_else(|| self.filtered_findings(m).next().map(|(i, g)| (0, i, g))),
            None => it.next(),
        }
    }

    pub fn filtered_objects<'a>(&'a self, m: &'a Model) -> impl Iterator<Item = &'a ObjKey> + 'a {
        m.objects
            .iter_recent()
            .filter(move |(_, h)| self.filter.matches_object(h))
            .map(|(k, _)| k)
    }

    pub fn selected_object(&self, m: &Model) -> Option<(usize, ObjKey)> {
        let mut it = self.filtered_objects(m).copied().enumerate();
        match self.object_sel {
            Some(key) => it
                .find(|(_, k)| *k == key)
                .or_else(|| self.filtered_objects(m).next().map(|k| (0, *k))),
            None => it.next(),
        }
    }
}
