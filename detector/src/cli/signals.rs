//! SIGINT and SIGTERM as a stop request: the first one ends the stream
//! cleanly (what was captured is written, the summary printed); the
//! handler then resets, so a second one kills at once. SIGHUP, for the
//! agent, as a request to reopen its output files.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// The signal caught, 0 before any.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// A SIGHUP arrived since the last [`take_reopen`].
static REOPEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_hangup(_sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REOPEN.store(true, Ordering::Relaxed);
}

/// Installs the SIGHUP handler (it stays: every SIGHUP is a request).
pub fn catch_reopen_signal() {
    // SAFETY: as in `catch_stop_signals`; SA_RESTART keeps the pipeline's
    // blocking calls from failing with EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_hangup as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut sa.sa_mask);
        libc::sigaction(libc::SIGHUP, &raw const sa, std::ptr::null_mut());
    }
}

/// Whether a SIGHUP arrived since the last call.
pub fn take_reopen() -> bool {
    REOPEN.swap(false, Ordering::Relaxed)
}

extern "C" fn on_signal(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    CAUGHT.store(sig, Ordering::Relaxed);
}

/// Installs the handlers (the terminal UI reads Ctrl-C as a key instead).
pub fn catch_stop_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid starting value; the handler
        // only performs an atomic store, which is async-signal-safe; the
        // pointers passed are valid for the duration of the calls.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
        }
    }
}

/// Why to stop, once a signal arrived: `interrupted (SIGINT)` or
/// `terminated (SIGTERM)` (the trace footer's stop reason).
pub fn caught() -> Option<String> {
    match CAUGHT.load(Ordering::Relaxed) {
        0 => None,
        libc::SIGINT => Some(String::from("interrupted (SIGINT)")),
        libc::SIGTERM => Some(String::from("terminated (SIGTERM)")),
        n => Some(format!("stopped by signal {n}")),
    }
}
