//! Event lines (`TIME TASK PROBE KIND key=value...`, `TIME lost PROBE
//! TOTAL`) and the values they are written with.

use detector_common::{
    swp_entry, Event, EventKind, ProbeId, V_ADDR, V_ENTRY, V_ENTRY_PARTIAL, V_FOLIO, V_FOLIO_STATE,
    V_PIN, V_PTE, V_RET,
};

use super::{Parser, FOLIO_BASE, SPACE_BASE};
use crate::analyzer::parse_flags;
use crate::event::StreamItem;

pub(super) fn num(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let v = if let Some(h) = body.strip_prefix("0x") {
        u64::from_str_radix(h, 16).map(|v| v as i64)
    } else {
        body.parse::<i64>()
    }
    .map_err(|_| format!("`{s}` is not a number"))?;
    if neg {
        v.checked_neg()
            .ok_or_else(|| format!("`{s}` is out of range"))
    } else {
        Ok(v)
    }
}

/// `type:offset`, offset decimal or 0x-hex.
pub(super) fn entry(s: &str) -> Result<u64, String> {
    let (t, o) = s
        .split_once(':')
        .ok_or_else(|| format!("`{s}` is not a swap entry (type:offset)"))?;
    Ok(swp_entry(num(t)? as u32, num(o)? as u64))
}

/// x86_64 swap PTE encoding of an entry (inverse of
/// `x86_64_pte_to_swp_entry`).
pub fn swap_pte(val: u64) -> u64 {
    let ty = detector_common::swp_type(val) as u64;
    let off = detector_common::swp_offset(val);
    ((!off) << 14 >> 5) & !0x1ff & !(0x1f << 59) | (ty << 59) | 0b10
}

impl Parser {
    pub(super) fn folio(&mut self, name: &str) -> Result<u64, String> {
        if name.starts_with("0x") {
            return num(name).map(|v| v as u64);
        }
        let n = self.folios.len() as u64;
        Ok(*self
            .folios
            .entry(name.to_string())
            .or_insert(FOLIO_BASE + (n + 1) * 0x40))
    }

    pub(super) fn space(&mut self, name: &str) -> Result<u64, String> {
        if name.starts_with("0x") {
            return num(name).map(|v| v as u64);
        }
        let n = self.spaces.len() as u64;
        Ok(*self
            .spaces
            .entry(name.to_string())
            .or_insert(SPACE_BASE + (n + 1) * 0x1000))
    }

    pub(super) fn event(&mut self, ts: u64, w: &[&str]) -> Result<StreamItem, String> {
        let task = w
            .first()
            .ok_or("an event line needs TIME TASK PROBE KIND")?;
        if *task == "lost" {
            let probe = w.get(1).ok_or("`TIME lost PROBE TOTAL`")?;
            let probe =
                ProbeId::from_name(probe).ok_or_else(|| format!("unknown probe `{probe}`"))?;
            let total = num(w.get(2).ok_or("`TIME lost PROBE TOTAL`")?)? as u64;
            return Ok(StreamItem::Lost {
                ts_ns: ts,
                probe: probe as u16,
                total,
            });
        }
        let t = self
            .tasks
            .get(*task)
            .ok_or_else(|| format!("unknown task `{task}` (declare it with `task`)"))?;
        let probe = w.get(1).ok_or("missing probe")?;
        let probe = ProbeId::from_name(probe).ok_or_else(|| format!("unknown probe `{probe}`"))?;
        let kind = match *w.get(2).ok_or("missing kind (enter, exit or tp)")? {
            "enter" => EventKind::Enter,
            "exit" => EventKind::Exit,
            "tp" => EventKind::Tracepoint,
            k => return Err(format!("unknown kind `{k}` (enter, exit or tp)")),
        };
        let mut e = Event {
            ts_ns: ts,
            pid: t.pid,
            tid: t.tid,
            cpu: t.tid % 2,
            comm: t.comm,
            task_start: t.start,
            probe: probe as u16,
            kind: kind as u8,
            nr: 1,
            ..Default::default()
        };
        for kv in &w[3..] {
            if *kv == "foll_pin" {
                e.valid |= V_PIN;
                continue;
            }
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got `{kv}`"))?;
            match k {
                "folio" => {
                    e.folio = self.folio(v)?;
                    e.valid |= V_FOLIO;
                }
                "state" => {
                    e.f_state =
                        parse_flags(v).ok_or_else(|| format!("unknown folio flag in `{v}`"))?;
                    e.valid |= V_FOLIO_STATE;
                }
                "ref" => {
                    e.f_refcount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "map" => {
                    e.f_mapcount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "largemap" => {
                    e.f_large_mapcount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "pincount" => {
                    e.f_pincount = num(v)? as i32;
                    e.valid |= V_FOLIO_STATE;
                }
                "pages" => {
                    e.f_nr_pages = num(v)? as u32;
                    e.valid |= V_FOLIO_STATE;
                }
                "swap" => {
                    e.f_swap = entry(v)?;
                    e.valid |= V_FOLIO_STATE;
                }
                "entry" => {
                    e.entry = entry(v)?;
                    e.valid |= V_ENTRY;
                }
                "index" => {
                    e.entry = num(v)? as u64;
                    e.valid |= V_ENTRY | V_ENTRY_PARTIAL;
                }
                "space" => {
                    e.addr = self.space(v)?;
                    e.valid |= V_ADDR;
                }
                "addr" => {
                    e.addr = num(v)? as u64;
                    e.valid |= V_ADDR;
                }
                "pte" => {
                    e.pte = match v.strip_prefix("swap:") {
                        Some(ent) => swap_pte(entry(ent)?),
                        None => num(v)? as u64,
                    };
                    e.valid |= V_PTE;
                }
                "ret" => {
                    e.ret = match v {
                        "EEXIST" => -17,
                        "EAGAIN" => -11,
                        "EBUSY" => -16,
                        "ENOENT" => -2,
                        _ => num(v)?,
                    };
                    e.valid |= V_RET;
                }
                "nr" => e.nr = num(v)? as u32,
                "arg" => e.arg = num(v)? as u32,
                "cpu" => e.cpu = num(v)? as u32,
                _ => return Err(format!("unknown event attribute `{k}`")),
            }
        }
        Ok(StreamItem::Event(e))
    }
}
