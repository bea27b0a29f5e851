"""Counts over a fleet of `detector export --format parquet` directories,
as DuckDB computes them: `host_duckdb.rs` compares them with `detector
replay`. Usage: fleet_counts.py FLEET_DIR; prints one JSON object keyed by
capture_id."""

import json
import sys

import duckdb

fleet = sys.argv[1]
events = f"{fleet}/*/events.parquet"
findings = f"{fleet}/*/findings.parquet"
con = duckdb.connect()


def rows(sql):
    params = {k: v for k, v in (("events", events), ("findings", findings)) if f"${k}" in sql}
    return con.execute(sql, params).fetchall()


out = {}


def capture(cid):
    return out.setdefault(
        cid,
        {
            "rows": 0,
            "events_per_probe": {},
            "lost_per_probe": {},
            "findings_per_rule": {},
            "findings_per_severity": {},
            "hosts": [],
            "findings_without_events": 0,
            "steps_not_matching_events": 0,
        },
    )


for cid, n in rows("SELECT capture_id, count(*) FROM read_parquet($events) GROUP BY ALL"):
    capture(cid)["rows"] = n

for cid, probe, n in rows(
    "SELECT capture_id, probe, count(*) FROM read_parquet($events) "
    "WHERE type = 'event' GROUP BY ALL"
):
    capture(cid)["events_per_probe"][probe] = n

for cid, probe, lost in rows(
    "SELECT capture_id, probe, max(lost_total) FROM read_parquet($events) "
    "WHERE type = 'lost' GROUP BY ALL"
):
    capture(cid)["lost_per_probe"][probe] = lost

for cid, rule, n in rows(
    "SELECT capture_id, rule, count(*) FROM read_parquet($findings) GROUP BY ALL"
):
    capture(cid)["findings_per_rule"][rule] = n

for cid, sev, n in rows(
    "SELECT capture_id, severity, count(*) FROM read_parquet($findings) GROUP BY ALL"
):
    capture(cid)["findings_per_severity"][sev] = n

for cid, hosts in rows(
    "SELECT capture_id, list(DISTINCT coalesce(host, '')) FROM read_parquet($events) GROUP BY ALL"
):
    capture(cid)["hosts"] = sorted(hosts)

# Every finding's last evidence step is an event of its own capture.
for cid, n in rows(
    "SELECT f.capture_id, count(*) FROM read_parquet($findings) f "
    "ANTI JOIN read_parquet($events) e "
    "ON e.capture_id = f.capture_id AND e.index = f.last_index AND e.type = 'event' "
    "GROUP BY ALL"
):
    capture(cid)["findings_without_events"] = n

# Every evidence step names the probe, task and time of the event at its
# index.
for cid, n in rows(
    "WITH steps AS (SELECT f.capture_id, unnest(f.evidence) AS s FROM read_parquet($findings) f) "
    "SELECT steps.capture_id, count(*) FROM steps "
    "LEFT JOIN read_parquet($events) e "
    "ON e.capture_id = steps.capture_id AND e.index = s.index "
    "WHERE e.index IS NULL OR e.probe <> s.probe OR e.tid <> s.tid OR e.ts_ns <> s.ts_ns "
    "GROUP BY ALL"
):
    capture(cid)["steps_not_matching_events"] = n

json.dump(out, sys.stdout, sort_keys=True)
