//! Size-based rotation: `--rotate-size S --rotate-keep N`.
//!
//! Naming follows logrotate: `FILE` is always the segment being written,
//! `FILE.1` the one before it, `FILE.2` the one before that, and so on. Each
//! segment is a complete trace (same header except `segment`, its own
//! footer), so any of them replays on its own; `segment` in the header gives
//! the absolute order.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use detector_common::{Event, EVENT_SIZE};

use super::error::TraceError;
use super::format::TraceFormat;
use super::header::TraceHeader;
use super::writer::{Counts, TraceEnd, TraceSummary, TraceWriter};
use crate::event::StreamItem;

/// When to start a new segment and how many to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    /// A segment that has reached this many bytes is finished before the
    /// next record is written (so segments overshoot by at most one record
    /// plus the footer). A segment always holds at least one record.
    pub max_bytes: u64,
    /// Segments kept on disk, including the one being written; the oldest
    /// are deleted. 0 keeps all of them.
    pub keep: u32,
}

/// Path of the segment `k` rotations old: `FILE` for 0, `FILE.k` after.
pub fn segment_path(base: &Path, k: u32) -> PathBuf {
    if k == 0 {
        return base.to_path_buf();
    }
    let mut s = base.as_os_str().to_os_string();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

/// Segments of a rotated capture that exist on disk, oldest first (so in
/// replay order). Just `[FILE]` for an unrotated trace; empty if `FILE`
/// does not exist and no rotated segment does either.
pub fn existing_segments(base: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..)
        .map(|k| segment_path(base, k))
        .take_while(|p| p.exists())
        .collect();
    out.reverse();
    if base.exists() {
        out.push(base.to_path_buf());
    }
    out
}

/// A trace writer that rotates by size. Use it exactly like
/// [`TraceWriter`]; [`finish`](Self::finish) finishes the current segment.
pub struct RotatingWriter {
    base: PathBuf,
    policy: RotationPolicy,
    header: TraceHeader,
    format: TraceFormat,
    current: Option<TraceWriter<File>>,
    /// Rotated segments on disk: `FILE.1` ..= `FILE.rotated`.
    rotated: u32,
    /// Counts of the finished segments.
    totals: Counts,
    finished_bytes: u64,
}

impl RotatingWriter {
    /// Starts segment 0 at `base`. Replaces `base` and removes rotated
    /// segments an earlier capture left under the same name, so the
    /// directory only ever holds segments of this capture.
    pub fn create(
        base: impl AsRef<Path>,
        header: &TraceHeader,
        policy: RotationPolicy,
    ) -> Result<Self, TraceError> {
        Self::create_format(base, header, policy, TraceFormat::default())
    }

    /// As [`create`](Self::create), every segment in the given format.
    pub fn create_format(
        base: impl AsRef<Path>,
        header: &TraceHeader,
        policy: RotationPolicy,
        format: TraceFormat,
    ) -> Result<Self, TraceError> {
        if policy.max_bytes == 0 {
            return Err(TraceError::Rotation(
                "the rotation size must be at least 1 byte".to_string(),
            ));
        }
        let base = base.as_ref().to_path_buf();
        for old in (1..)
            .map(|k| segment_path(&base, k))
            .take_while(|p| p.exists())
        {
            remove(&old)?;
        }
        let mut header = header.clone();
        header.segment = 0;
        let current = TraceWriter::create_format(&base, &header, format)?;
        Ok(RotatingWriter {
            base,
            policy,
            header,
            format,
            current: Some(current),
            rotated: 0,
            totals: Counts::empty(),
            finished_bytes: 0,
        })
    }

    /// Path of the segment being written (always the base path).
    pub fn path(&self) -> &Path {
        &self.base
    }

    /// Index of the segment being written (0 for the first).
    pub fn segment(&self) -> u32 {
        self.header.segment
    }

    /// Bytes written over all segments, including buffered records.
    pub fn bytes_written(&self) -> u64 {
        self.finished_bytes + self.current.as_ref().map_or(0, TraceWriter::bytes_written)
    }

    /// Event records written over all segments.
    pub fn events_written(&self) -> u64 {
        self.totals.events + self.current.as_ref().map_or(0, TraceWriter::events_written)
    }

    fn writer(&mut self) -> Result<&mut TraceWriter<File>, TraceError> {
        self.current.as_mut().ok_or_else(|| {
            TraceError::io(
                "write",
                &self.base.display().to_string(),
                io::Error::other("an earlier rotation of this trace failed"),
            )
        })
    }

    #[inline]
    fn maybe_rotate(&mut self, ts_ns: u64) -> Result<(), TraceError> {
        let max = self.policy.max_bytes;
        let w = self.writer()?;
        if w.bytes_written() >= max && w.records_written() > 0 {
            self.rotate(ts_ns)?;
        }
        Ok(())
    }

    pub fn write_item(&mut self, item: &StreamItem) -> Result<(), TraceError> {
        match item {
            StreamItem::Event(ev) => self.write_event(ev),
            StreamItem::Lost {
                ts_ns,
                probe,
                total,
            } => self.write_lost(*ts_ns, *probe, *total),
        }
    }

    #[inline]
    pub fn write_event(&mut self, ev: &Event) -> Result<(), TraceError> {
        self.maybe_rotate(ev.ts_ns)?;
        self.writer()?.write_event(ev)
    }

    /// As [`write_event`](Self::write_event), from the event's on-disk bytes.
    #[inline]
    pub fn write_event_bytes(&mut self, payload: &[u8; EVENT_SIZE]) -> Result<(), TraceError> {
        self.maybe_rotate(super::format::event_ts(payload))?;
        self.writer()?.write_event_bytes(payload)
    }

    pub fn write_lost(&mut self, ts_ns: u64, probe: u16, total: u64) -> Result<(), TraceError> {
        self.maybe_rotate(ts_ns)?;
        self.writer()?.write_lost(ts_ns, probe, total)
    }

    pub fn flush(&mut self) -> Result<(), TraceError> {
        self.writer()?.flush()
    }

    /// Finishes the current segment now and starts the next one at the
    /// base path, as a rotation by size would: what a reopen (the agent's
    /// SIGHUP) does. The finished segment becomes `FILE.1` when segments
    /// are kept; with a keep of 1 it is deleted unless it was renamed away
    /// first (logrotate's way).
    pub fn rotate_now(&mut self) -> Result<(), TraceError> {
        self.rotate(crate::event::monotonic_ns())
    }

    /// Finishes the current segment at `ts_ns` (the time of the record that
    /// did not fit) and opens the next one.
    fn rotate(&mut self, ts_ns: u64) -> Result<(), TraceError> {
        let Some(w) = self.current.take() else {
            return Ok(());
        };
        let counts = w.counts().clone();
        let lost = counts.lost.clone();
        let summary = w.finish(TraceEnd::at(ts_ns, "rotated"))?;
        self.totals.absorb(&counts);
        self.finished_bytes += summary.bytes;

        // Rotated files allowed besides the one being written.
        let max_rotated = match self.policy.keep {
            0 => u32::MAX,
            n => n - 1,
        };
        while self.rotated > 0 && self.rotated >= max_rotated {
            remove(&segment_path(&self.base, self.rotated))?;
            self.rotated -= 1;
        }
        for k in (1..=self.rotated).rev() {
            rename(
                &segment_path(&self.base, k),
                &segment_path(&self.base, k + 1),
            )?;
        }
        if max_rotated == 0 {
            remove(&self.base)?;
        } else {
            rename(&self.base, &segment_path(&self.base, 1))?;
            self.rotated += 1;
        }

        self.header.segment += 1;
        let mut next = TraceWriter::create_format(&self.base, &self.header, self.format)?;
        next.inherit_lost(lost);
        self.current = Some(next);
        Ok(())
    }

    /// Finishes the current segment. The summary's totals cover every
    /// segment written, including deleted ones.
    pub fn finish(mut self, end: TraceEnd) -> Result<TraceSummary, TraceError> {
        let Some(w) = self.current.take() else {
            return Err(TraceError::Rotation("no segment is open".to_string()));
        };
        let counts = w.counts().clone();
        let summary = w.finish(end.clone())?;
        self.totals.absorb(&counts);
        Ok(TraceSummary {
            bytes: self.finished_bytes + summary.bytes,
            segments: self.header.segment + 1,
            files: existing_segments(&self.base),
            totals: self.totals.footer(&end, &self.header),
        })
    }
}

fn remove(p: &Path) -> Result<(), TraceError> {
    match fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(TraceError::io(
            "delete old trace segment",
            &p.display().to_string(),
            e,
        )),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), TraceError> {
    fs::rename(from, to).map_err(|e| {
        TraceError::io(
            "rotate trace segment",
            &format!("{} to {}", from.display(), to.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{read_all, EndState};

    fn ev(i: u64) -> Event {
        Event {
            ts_ns: 1000 + i,
            probe: (i % 5) as u16,
            pid: i as u32,
            ..Event::default()
        }
    }

    #[test]
    fn segment_names() {
        let b = Path::new("/tmp/x.trace");
        assert_eq!(segment_path(b, 0), PathBuf::from("/tmp/x.trace"));
        assert_eq!(segment_path(b, 3), PathBuf::from("/tmp/x.trace.3"));
    }

    #[test]
    fn keeps_newest_n_segments_each_replayable() {
        for format in [TraceFormat::V1, TraceFormat::V2] {
            keeps_newest_n_segments(format);
        }
    }

    fn keeps_newest_n_segments(format: TraceFormat) {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("cap.trace");
        // Stale segment from an earlier capture must go away.
        fs::write(segment_path(&base, 1), b"old").unwrap();
        let policy = RotationPolicy {
            max_bytes: 4096,
            keep: 3,
        };
        let mut header = TraceHeader::new("test");
        let cfg = crate::analyzer::Config {
            eexist_threshold: 5,
            ..crate::analyzer::Config::default()
        };
        header.analyzer_config = Some(cfg.clone());
        let mut w = RotatingWriter::create_format(&base, &header, policy, format).unwrap();
        // Enough for several segments in either format.
        let n = 3000u64;
        for i in 0..n {
            w.write_event(&ev(i)).unwrap();
            if i == 10 {
                w.write_lost(1010, 2, 4).unwrap();
            }
        }
        let s = w.finish(TraceEnd::at(9999, "done")).unwrap();
        assert_eq!(s.totals.events, n);
        assert_eq!(s.totals.lost_total, 4);
        assert!(s.segments > 3, "only {} segments", s.segments);
        assert_eq!(s.files.len(), 3);
        assert_eq!(
            s.files,
            vec![segment_path(&base, 2), segment_path(&base, 1), base.clone()]
        );
        assert!(!segment_path(&base, 3).exists());

        // Kept segments are consecutive, complete and in order; together
        // with the deleted ones they hold every event exactly once.
        let mut last_pid = None;
        for (expect_segment, f) in (s.segments - 3..).zip(&s.files) {
            let (h, items, end) = read_all(f).unwrap();
            assert_eq!(h.segment, expect_segment);
            assert_eq!(h.format_version, format.version());
            // Every segment replays with the capture's analyzer settings.
            assert_eq!(h.analyzer_config.as_ref(), Some(&cfg));
            let footer = match end {
                EndState::Complete { footer } => footer,
                other => panic!("{}: {other:?}", f.display()),
            };
            assert_eq!(footer.lost_total, 4, "lost totals carry over");
            assert_eq!(footer.events as usize, items.len());
            assert!(fs::metadata(f).unwrap().len() < 4096 + 600);
            for it in items {
                let StreamItem::Event(e) = it else { continue };
                if let Some(p) = last_pid {
                    assert_eq!(e.pid, p + 1);
                }
                last_pid = Some(e.pid);
            }
        }
        assert_eq!(last_pid, Some(n as u32 - 1));
    }

    #[test]
    fn keep_one_and_keep_all() {
        let dir = tempfile::tempdir().unwrap();
        for (keep, format) in [
            (1u32, TraceFormat::V1),
            (0, TraceFormat::V1),
            (1, TraceFormat::V2),
            (0, TraceFormat::V2),
        ] {
            let base = dir.path().join(format!("k{keep}{format}.trace"));
            let policy = RotationPolicy {
                max_bytes: 2000,
                keep,
            };
            let mut w =
                RotatingWriter::create_format(&base, &TraceHeader::new("t"), policy, format)
                    .unwrap();
            for i in 0..1000 {
                w.write_event(&ev(i)).unwrap();
            }
            let s = w.finish(TraceEnd::at(0, "done")).unwrap();
            let total: usize = s.files.iter().map(|f| read_all(f).unwrap().1.len()).sum();
            if keep == 1 {
                assert_eq!(s.files, vec![base.clone()]);
                assert!(total < 1000);
            } else {
                assert_eq!(s.files.len() as u32, s.segments);
                assert_eq!(total, 1000);
            }
        }
    }

    #[test]
    fn zero_size_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let policy = RotationPolicy {
            max_bytes: 0,
            keep: 2,
        };
        let err = RotatingWriter::create(dir.path().join("z"), &TraceHeader::new("t"), policy);
        assert!(matches!(err, Err(TraceError::Rotation(_))));
    }

    #[test]
    fn rotate_now_keeps_the_finished_file_or_leaves_a_renamed_one_alone() {
        let dir = tempfile::tempdir().unwrap();
        // Kept segments: the finished file becomes FILE.1.
        let base = dir.path().join("kept.trace");
        let policy = RotationPolicy {
            max_bytes: u64::MAX,
            keep: 3,
        };
        let mut w = RotatingWriter::create(&base, &TraceHeader::new("t"), policy).unwrap();
        w.write_event(&ev(1)).unwrap();
        w.rotate_now().unwrap();
        w.write_event(&ev(2)).unwrap();
        let s = w.finish(TraceEnd::at(0, "done")).unwrap();
        assert_eq!(s.files, vec![segment_path(&base, 1), base.clone()]);
        for f in &s.files {
            let (_, items, end) = read_all(f).unwrap();
            assert!(end.is_complete(), "{end:?}");
            assert_eq!(items.len(), 1);
        }

        // One file (no rotation): renamed away first, as logrotate does, it
        // is finished where it now is and a new one starts at the path.
        let base = dir.path().join("one.trace");
        let policy = RotationPolicy {
            max_bytes: u64::MAX,
            keep: 1,
        };
        let mut w = RotatingWriter::create(&base, &TraceHeader::new("t"), policy).unwrap();
        w.write_event(&ev(1)).unwrap();
        let moved = dir.path().join("one.trace.old");
        fs::rename(&base, &moved).unwrap();
        w.rotate_now().unwrap();
        w.write_event(&ev(2)).unwrap();
        w.finish(TraceEnd::at(0, "done")).unwrap();
        let (_, old, end) = read_all(&moved).unwrap();
        assert!(end.is_complete() && old.len() == 1, "{end:?}");
        let (h, new, end) = read_all(&base).unwrap();
        assert!(end.is_complete() && new.len() == 1, "{end:?}");
        assert_eq!(h.segment, 1);
    }
}
