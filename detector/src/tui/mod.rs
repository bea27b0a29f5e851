//! The live terminal UI (`detector live`).
//!
//! Two threads. The worker ([`worker`]) runs the stream's pipeline (the
//! kernel capture or a trace replay, `--record`, the analyzer) and applies
//! each pull to the shared [`model::Model`]. The UI thread reads
//! keys and draws; a frame renders into ratatui's buffer while holding the
//! model lock (no I/O, only visible rows formatted), then writes the diff to
//! the terminal after letting go of it. Data-driven redraws are capped at
//! [`FRAME`]; a key redraws at once, so input stays responsive whatever the
//! event rate.

pub mod app;
pub mod model;
pub mod objects;
pub mod render;
pub mod worker;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent};
use ratatui::backend::Backend;
use ratatui::Terminal;
use thiserror::Error;

use app::UiState;
use model::Model;
use worker::{lock, Worker, WorkerReport};

use crate::stream::{AnalyzerSetup, Recorder, Source};

/// Shortest time between two data-driven frames (20 frames per second).
pub const FRAME: Duration = Duration::from_millis(50);
/// Redraw at least this often, so clocks and ages move on a quiet system.
const IDLE_REDRAW: Duration = Duration::from_secs(1);

#[derive(Debug, Error)]
pub enum TuiError {
    #[error("cannot drive the terminal: {0}")]
    Terminal(#[from] io::Error),
    #[error("cannot start the worker thread: {0}")]
    Thread(io::Error),
}

/// Draws one frame: renders into the back buffer under the model lock (no
/// I/O there), then releases the lock and writes the changes out.
pub fn draw_frame<B: Backend>(
    terminal: &mut Terminal<B>,
    ui: &UiState,
    model: &Mutex<Model>,
) -> io::Result<u64> {
    terminal.autoresize()?;
    let version = {
        let m = lock(model);
        let mut frame = terminal.get_frame();
        render::draw(&mut frame, ui, &m);
        m.version
    };
    terminal.hide_cursor()?;
    terminal.flush()?;
    terminal.swap_buffers();
    terminal.backend_mut().flush()?;
    Ok(version)
}

/// Runs the UI on the process's terminal until the user quits. The worker
/// is stopped and joined before returning (so a recording gets its footer).
pub fn run_terminal(
    source: Box<dyn Source>,
    setup: &AnalyzerSetup,
    recorder: Option<Box<dyn Recorder>>,
) -> Result<WorkerReport, TuiError> {
    let model = Arc::new(Mutex::new(Model::new(source.info())));
    let stop = Arc::new(AtomicBool::new(false));
    let handle = Worker {
        source,
        setup: Some(setup.clone()),
        recorder,
        model: Arc::clone(&model),
        stop: Arc::clone(&stop),
    }
    .spawn()
    .map_err(TuiError::Thread)?;
    // try_init enters the alternate screen and raw mode and installs a
    // panic hook that restores the terminal first.
    let result = ratatui::try_init()
        .map_err(TuiError::from)
        .and_then(|mut terminal| {
            let r = ui_loop(&mut terminal, &model);
            ratatui::restore();
            r
        });
    stop.store(true, Ordering::Relaxed);
    let report = handle.join().unwrap_or_default();
    result.map(|()| report)
}

fn ui_loop<B: Backend>(terminal: &mut Terminal<B>, model: &Mutex<Model>) -> Result<(), TuiError> {
    let mut ui = UiState::default();
    let mut drawn = u64::MAX;
    let mut last_draw = Instant::now();
    let mut force = true;
    loop {
        let since = last_draw.elapsed();
        let version = lock(model).version;
        let stale = version != drawn;
        if force || (stale && since >= FRAME) || since >= IDLE_REDRAW {
            drawn = draw_frame(terminal, &ui, model)?;
            last_draw = Instant::now();
            force = false;
        }
        let timeout = if lock(model).version != drawn {
            FRAME.saturating_sub(last_draw.elapsed())
        } else {
            IDLE_REDRAW.saturating_sub(last_draw.elapsed())
        };
        if event::poll(timeout)? {
            // Take every pending input before the next frame so a burst of
            // keys costs one redraw, not one each.
            loop {
                match event::read()? {
                    TermEvent::Key(k) => {
                        let m = lock(model);
                        ui.handle_key(k, &m);
                        force = true;
                    }
                    TermEvent::Resize(..) => force = true,
                    _ => {}
                }
                if ui.quit || !event::poll(Duration::ZERO)? {
                    break;
                }
            }
        }
        if ui.quit {
            return Ok(());
        }
    }
}
