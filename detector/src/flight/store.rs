//! The snapshot directory: which snapshots of ours it holds (for the
//! budgets), names, atomic manifest writes, removal.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::analyzer::{RuleId, Severity};
use crate::trace::create_private;

/// Every file of ours starts with this; nothing else in the directory is
/// counted, displaced or removed.
pub(crate) const PREFIX: &str = "flight-";
pub(crate) const TRACE_EXT: &str = "trace";
pub(crate) const MANIFEST_EXT: &str = "json";

/// One snapshot on disk: `<stem>.trace` and `<stem>.json`.
#[derive(Clone, Debug)]
pub(crate) struct OnDisk {
    pub(crate) stem: String,
    pub(crate) bytes: u64,
    /// From the name; `None` for a name this build does not parse.
    pub(crate) severity: Option<Severity>,
    /// Last modification, seconds since the epoch.
    pub(crate) mtime_s: u64,
}

pub(crate) struct Store {
    dir: PathBuf,
    /// Oldest first (names sort by time).
    on_disk: Vec<OnDisk>,
    /// Their bytes, summed (read on every item for the stats).
    bytes: u64,
}

impl Store {
    /// Creates the directory (mode 0700) when missing and reads what it
    /// holds.
    pub(crate) fn open(dir: &Path) -> io::Result<Self> {
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        let mut s = Store {
            dir: dir.to_path_buf(),
            on_disk: Vec::new(),
            bytes: 0,
        };
        s.rescan()?;
        Ok(s)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads the directory again (the operator may have removed
    /// snapshots). Manifest temporaries a crash left behind are removed.
    pub(crate) fn rescan(&mut self) -> io::Result<()> {
        let mut found: Vec<OnDisk> = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&format!(".{PREFIX}")) && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
                continue;
            }
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let path = Path::new(rest);
            let ext = path.extension().and_then(OsStr::to_str);
            if ext != Some(TRACE_EXT) && ext != Some(MANIFEST_EXT) {
                continue;
            }
            let Some(stem) = Path::new(name).file_stem().and_then(OsStr::to_str) else {
                continue;
            };
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let mtime_s = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            match found.iter_mut().find(|d| d.stem == stem) {
                Some(d) => {
                    d.bytes += meta.len();
                    d.mtime_s = d.mtime_s.max(mtime_s);
                }
                None => found.push(OnDisk {
                    stem: stem.to_string(),
                    bytes: meta.len(),
                    severity: severity_of(stem),
                    mtime_s,
                }),
            }
        }
        found.sort_by(|a, b| a.stem.cmp(&b.stem));
        self.bytes = found.iter().map(|d| d.bytes).sum();
        self.on_disk = found;
        Ok(())
    }

    /// Our snapshots, oldest first.
    pub(crate) fn on_disk(&self) -> &[OnDisk] {
        &self.on_disk
    }

    pub(crate) fn count(&self) -> u64 {
        self.on_disk.len() as u64
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn path(&self, stem: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{stem}.{ext}"))
    }

    /// A stem no file in the directory has yet:
    /// `flight-<UTC time>-<rule>-<severity>[-N]`.
    pub(crate) fn new_stem(&self, realtime_ns: u64, rule: RuleId, severity: Severity) -> String {
        let base = format!(
            "{PREFIX}{}-{}-{}",
            utc_stamp(realtime_ns),
            rule.name(),
            severity.name()
        );
        let free = |s: &str| {
            !self.path(s, TRACE_EXT).exists()
                && !self.path(s, MANIFEST_EXT).exists()
                && !self.on_disk.iter().any(|d| d.stem == s)
        };
        if free(&base) {
            return base;
        }
        (2u32..)
            .map(|n| format!("{base}-{n}"))
            .find(|s| free(s))
            .unwrap_or(base)
    }

    /// Writes `<stem>.json` atomically: a private temporary in the same
    /// directory, synced, renamed over the name. Returns its size.
    pub(crate) fn write_manifest(&self, stem: &str, json: &[u8]) -> io::Result<u64> {
        let tmp = self.dir.join(format!(".{stem}.{MANIFEST_EXT}.tmp"));
        let r = (|| {
            let mut f = create_private(&tmp)?;
            f.write_all(json)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path(stem, MANIFEST_EXT))
        })();
        if r.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        r.map(|()| json.len() as u64)
    }

    /// Makes the renames and creations in the directory durable.
    pub(crate) fn sync_dir(&self) -> io::Result<()> {
        fs::File::open(&self.dir)?.sync_all()
    }

    /// Removes both files of a snapshot (whichever exist).
    pub(crate) fn remove(&mut self, stem: &str) {
        for ext in [TRACE_EXT, MANIFEST_EXT] {
            let _ = fs::remove_file(self.path(stem, ext));
        }
        if let Some(k) = self.on_disk.iter().position(|d| d.stem == stem) {
            let d = self.on_disk.remove(k);
            self.bytes -= d.bytes;
        }
    }

    /// Counts a finished snapshot.
    pub(crate) fn add(&mut self, stem: &str, bytes: u64, severity: Severity) {
        let mtime_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Snapshots finish in stream order: the newest goes last.
        self.bytes += bytes;
        self.on_disk.push(OnDisk {
            stem: stem.to_string(),
            bytes,
            severity: Some(severity),
            mtime_s,
        });
    }
}

/// The severity a stem names (its last word, or the one before a `-N`).
fn severity_of(stem: &str) -> Option<Severity> {
    let mut words = stem.rsplit('-');
    let last = words.next()?;
    let word = if last.bytes().all(|b| b.is_ascii_digit()) {
        words.next()?
    } else {
        last
    };
    Severity::from_name(word)
}

/// `20251202T044639.123456Z`: sorts as it reads, no `:` (file names);
/// microseconds, so that two triggers practically never share a stamp.
pub(crate) fn utc_stamp(realtime_ns: u64) -> String {
    let secs = (realtime_ns / 1_000_000_000) as libc::time_t;
    let us = (realtime_ns / 1_000) % 1_000_000;
    // SAFETY: an all-zero `tm` is a valid value of the plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; gmtime_r is
    // thread-safe and only writes `tm`.
    let ok = !unsafe { libc::gmtime_r(&raw const secs, &raw mut tm) }.is_null();
    if !ok {
        return format!("{secs}s");
    }
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{us:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// CLOCK_REALTIME now, in ns.
pub(crate) fn realtime_now_ns() -> u64 {
    crate::event::clock_ns(libc::CLOCK_REALTIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stamps_are_utc() {
        // 2025-12-02 04:46:39.123 UTC.
        assert_eq!(
            utc_stamp(1_764_650_799_123_456_789),
            "20251202T044639.123456Z"
        );
        assert_eq!(utc_stamp(0), "19700101T000000.000000Z");
    }

    #[test]
    fn stems_name_the_finding_and_stay_unique() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        let a = s.new_stem(0, RuleId::LazyfreeExtraRefs, Severity::NearMiss);
        assert_eq!(
            a,
            "flight-19700101T000000.000000Z-lazyfree_extra_refs-near_miss"
        );
        s.write_manifest(&a, b"{}").unwrap();
        let b = s.new_stem(0, RuleId::LazyfreeExtraRefs, Severity::NearMiss);
        assert_eq!(b, format!("{a}-2"));
        assert_eq!(severity_of(&a), Some(Severity::NearMiss));
        assert_eq!(severity_of(&b), Some(Severity::NearMiss));
        assert_eq!(
            severity_of("flight-x-swap_entry_aba-violation"),
            Some(Severity::Violation)
        );
        let m = s.path(&a, MANIFEST_EXT);
        assert_eq!(fs::metadata(&m).unwrap().mode() & 0o777, 0o600);
        s.rescan().unwrap();
        assert_eq!(s.count(), 1);
        assert_eq!(s.bytes(), 2);
    }

    #[test]
    fn only_our_files_count_and_temporaries_go() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        fs::write(
            p.join("flight-a-swap_entry_aba-violation.trace"),
            [0u8; 100],
        )
        .unwrap();
        fs::write(p.join("flight-a-swap_entry_aba-violation.json"), [0u8; 10]).unwrap();
        fs::write(p.join("other.trace"), [0u8; 1000]).unwrap();
        fs::write(p.join("flight-notes.txt"), [0u8; 1000]).unwrap();
        fs::write(p.join(".flight-b.json.tmp"), [0u8; 5]).unwrap();
        let s = Store::open(p).unwrap();
        assert_eq!((s.count(), s.bytes()), (1, 110));
        assert!(!p.join(".flight-b.json.tmp").exists());
        assert!(p.join("other.trace").exists());
    }
}
