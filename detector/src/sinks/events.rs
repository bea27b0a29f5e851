//! Every item written out as it passes, decoded, without analysis:
//! `replay --format text|jsonl` and `export`.

use std::io::{self, Write};

use crate::analyzer::Finding;
use crate::event::StreamItem;
use crate::present::events::{write_jsonl, write_text};
use crate::present::perfetto::ChromeTrace;
use crate::stream::{Ctx, Sink};
use crate::trace::TraceHeader;

/// The form items are written in.
pub enum EventFormat {
    /// One line per item, times relative to `base_ns`.
    Text { base_ns: u64 },
    /// JSON lines.
    Jsonl,
    /// A Chrome trace-event document.
    Perfetto,
}

pub struct EventWriter<W: Write> {
    w: W,
    format: EventFormat,
    chrome: Option<ChromeTrace>,
    /// Event records written (lost-event records not counted).
    pub events: u64,
    /// Items written.
    pub items: u64,
    /// What the document holds at the end (for Perfetto, trace events).
    pub written: u64,
}

impl<W: Write> EventWriter<W> {
    /// Starts the output (a Perfetto document's opening is written here).
    pub fn new(mut w: W, format: EventFormat, header: &TraceHeader) -> io::Result<Self> {
        let chrome = match format {
            EventFormat::Perfetto => Some(ChromeTrace::begin(&mut w, header)?),
            _ => None,
        };
        Ok(EventWriter {
            w,
            format,
            chrome,
            events: 0,
            items: 0,
            written: 0,
        })
    }
}

impl<W: Write> Sink for EventWriter<W> {
    fn item(&mut self, index: u64, item: &StreamItem, _found: &mut Vec<Finding>) -> io::Result<()> {
        self.items += 1;
        self.events += u64::from(matches!(item, StreamItem::Event(_)));
        match (&self.format, self.chrome.as_mut()) {
            (EventFormat::Text { base_ns }, _) => write_text(&mut self.w, *base_ns, index, item),
            (EventFormat::Jsonl, _) => write_jsonl(&mut self.w, index, item),
            (EventFormat::Perfetto, Some(c)) => c.item(&mut self.w, index, item),
            (EventFormat::Perfetto, None) => Ok(()),
        }
    }

    fn finish(&mut self, _found: &mut Vec<Finding>, _ctx: &mut Ctx<'_>) -> io::Result<()> {
        self.written = match self.chrome.take() {
            Some(c) => c.end(&mut self.w)?,
            None => self.items,
        };
        self.w.flush()
    }
}
