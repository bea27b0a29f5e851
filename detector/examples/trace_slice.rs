//! Cuts records `FROM..TO` out of a trace into a small, complete trace
//! (same header, a fresh footer): how the real-capture fixtures under
//! `detector/testdata/` and the fuzz seeds were made from full captures.
//!
//! ```sh
//! cargo run -p detector --example trace_slice -- real-madvfree.dtr 3400 3600 \
//!     detector/testdata/real-madvfree-slice.dtr [v1|v2]
//! ```
//!
//! The slice is written in format v2 unless `v1` is given; a number after
//! the format closes a v2 block every that many records (the fuzz seeds of
//! `fuzz/seeds/trace_blocks` hold several small blocks each).

// Every test, bench and example target links all of the package's
// dependencies; the lint is meant for the library.
#![allow(unused_crate_dependencies)]

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use detector::trace::{TraceEnd, TraceFormat, TraceReader, TraceWriter};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (input, from, to, output, format, per_block) = match args.as_slice() {
        [i, f, t, o] => (i, f, t, o, TraceFormat::default(), u64::MAX),
        [i, f, t, o, format] => (i, f, t, o, format.parse()?, u64::MAX),
        [i, f, t, o, format, n] => (i, f, t, o, format.parse()?, n.parse::<u64>()?.max(1)),
        _ => bail!(
            "usage: trace_slice INPUT FROM TO OUTPUT [v1|v2 [RECORDS_PER_BLOCK]] (record \
             indexes, TO exclusive)"
        ),
    };
    let (from, to): (u64, u64) = (from.parse()?, to.parse()?);
    let mut r = TraceReader::open(input)?;
    let mut header = r.header().clone();
    header.origin = format!("{} (records {from}..{to})", header.origin);
    let out = PathBuf::from(output);
    let mut w = TraceWriter::create_format(&out, &header, format)?;
    let mut last_ts = header.start_monotonic_ns;
    for (i, item) in r.by_ref() {
        if i >= to {
            break;
        }
        if i >= from {
            last_ts = last_ts.max(item.ts_ns());
            w.write_item(&item)?;
            if (i - from) % per_block == per_block - 1 {
                w.flush()?;
            }
        }
    }
    let n = w.records_written();
    w.finish(TraceEnd::at(last_ts, format!("slice of {input}")))
        .with_context(|| format!("finishing {}", out.display()))?;
    eprintln!("wrote {n} records to {}", out.display());
    Ok(())
}
