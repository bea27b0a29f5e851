//! What this process has used so far (`getrusage(RUSAGE_SELF)`), for the
//! cost lines `replay --stats` and `record` print; and what it holds now
//! (resident memory, open files), for the agent's metrics.

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

/// Resident set size now, in bytes (`/proc/self/statm`).
pub fn current_rss() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages.saturating_mul(u64::try_from(page).ok()?))
}

/// File descriptors open now (`/proc/self/fd`; `None` where this process
/// may not list it, e.g. a non-dumpable one without CAP_DAC_READ_SEARCH).
pub fn open_fds() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    // The directory handle being read is one of the entries.
    Some((dir.count() as u64).saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_usage_follows_what_the_process_holds() {
        let rss = current_rss().unwrap();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        assert!(current_rss().unwrap() >= rss + (32 << 20));
        drop(big);
        // Other tests of this process open and close files meanwhile: a
        // margin, far below the 200 opened here.
        let fds = open_fds().unwrap();
        let files: Vec<_> = (0..200)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let now = open_fds().unwrap();
        assert!(now >= fds + 150 && now <= fds + 250, "{fds} -> {now}");
        drop(files);
    }
}
