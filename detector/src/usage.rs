//! What this process has used so far (`getrusage(RUSAGE_SELF)`), for the
//! cost lines `replay --stats` and `record` print.

use std::time::Duration;

/// Resources this process used so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Peak resident set size, bytes.
    pub max_rss: u64,
    pub user: Duration,
    pub sys: Duration,
}

pub fn self_usage() -> Option<Usage> {
    // SAFETY: `rusage` is integers and `timeval`s of integers, for which
    // all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a live, writable `rusage`; getrusage only writes
    // into it, and RUSAGE_SELF is always a valid target.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut ru) } != 0 {
        return None;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Some(Usage {
        // Linux reports kibibytes.
        max_rss: u64::try_from(ru.ru_maxrss)
            .unwrap_or(0)
            .saturating_mul(1024),
        user: time(ru.ru_utime),
        sys: time(ru.ru_stime),
    })
}
