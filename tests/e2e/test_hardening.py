"""Hostile input: whatever the shop floor sends, no traceback; every row accepted or quarantined,
or the run stops with one line and writes nothing."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.contract import schemas
from pipeline.intake import accept, scan
from tests.support.landing import ITEM_COLUMNS, write_table

NASTY_TEXT = ["", " ", "abc", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1e308", "9" * 40, "0x1F", "1,5",
              "null", "None", "\t", "ü", "a/b", "..", "x=y", "2026-02-30T25:61:00", "2026-01-05", "true", "-0",
              "'; DROP TABLE completions; --", "\u202e", "1" * 200]
NUMBERS = st.one_of(st.integers(-10, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(NASTY_TEXT))
STAMPS = st.one_of(st.sampled_from(["2026-01-05T10:00:00Z", "2026-01-05T23:30:00+01:00", "2026-01-05 10:00",
                                    "2026-01-05", "05/01/2026 10:00", "2026-13-01T00:00:00Z", "1767607200"]),
                   st.sampled_from(NASTY_TEXT))
IDS = st.one_of(st.sampled_from(["FG", "RM", "XX", "", " FG ", "a/b", "..", "x=y", "ü"]), st.text(max_size=8))
COLUMNS = ["completion_id", "plant_id", "location_id", "item_id", "qty_good", "qty_scrap", "completed_at",
           "recorded_at", "order_id"]


@st.composite
def completion_rows(draw: st.DrawFn) -> list[dict[str, str]]:
    n = draw(st.integers(0, 12))
    rows = []
    for i in range(n):
        rows.append({
            "completion_id": draw(st.one_of(st.just(f"C{i}"), st.just(""))),
            "plant_id": draw(st.sampled_from(["P1", "P2", "", "Pü", "a/b"])),
            "location_id": draw(st.sampled_from(["L1", "", "../x"])),
            "item_id": draw(IDS),
            "qty_good": draw(NUMBERS),
            "qty_scrap": draw(st.one_of(st.just(""), NUMBERS)),
            "completed_at": draw(STAMPS),
            "recorded_at": draw(st.one_of(st.just(""), STAMPS)),
            "order_id": draw(st.one_of(st.just(""), IDS)),
        })
    return rows


def _strip_nul(text: str) -> str:
    return text.replace("\x00", "")


def _base_landing(root: Path) -> Path:
    landing = root / "landing"
    write_table(landing, "items", [
        {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
        {"item_id": "RM", "uom": "kg", "standard_cost": 2, "phantom": "false", "backflush": "true", "uom_decimals": 3},
    ], columns=ITEM_COLUMNS)
    write_table(landing, "bom", [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 0.5}])
    write_table(landing, "stock_counts", [], columns=["count_id", "plant_id", "location_id", "item_id",
                                                      "counted_qty", "counted_at"])
    write_table(landing, "plants", [{"plant_id": "P1", "timezone": "Europe/Berlin"},
                                    {"plant_id": "P2", "timezone": "Mars/Olympus_Mons"}])
    return landing


def _sources_of(frame: pd.DataFrame) -> set[str]:
    return set(frame["_source"]) if "_source" in frame.columns else set()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=completion_rows(), drop=st.sets(st.sampled_from(["qty_scrap", "recorded_at", "order_id"])),
       extra=st.booleans())
def test_every_hostile_row_is_accepted_or_quarantined(tmp_path_factory, rows, drop, extra) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("hostile")
    landing = _base_landing(root)
    columns = [c for c in COLUMNS if c not in drop] + (["unexpected"] if extra else [])
    cleaned = [{k: _strip_nul(v) for k, v in r.items() if k in columns} | ({"unexpected": "?"} if extra else {})
               for r in rows]
    write_table(landing, "completions", cleaned, columns=columns)
    inputs = accept.load_inputs(scan.read_landing_files(landing))
    lines = {f"completions/part.csv:{i + 2}" for i in range(len(rows))}
    accepted = _sources_of(inputs.completions)
    quarantined_rows = inputs.quarantine[inputs.quarantine["table"] == "completions"]
    quarantined = set(quarantined_rows["source"])
    # the row JSON holds the table's own columns (and extras as read), no internal bookkeeping
    allowed = set(schemas.column_kinds("completions")) | set(columns)
    assert all(set(json.loads(r)) <= allowed for r in quarantined_rows["row"])
    superseded = inputs.stats["completions"].superseded
    assert accepted.isdisjoint(quarantined)
    assert len(accepted) + len(quarantined) + superseded == len(rows)
    assert accepted | quarantined <= lines
    assert (quarantined_rows["message"].str.len() > 0).all()
    # what was accepted is typed and within the contract's ranges
    done = inputs.completions
    assert (done["qty_good"] >= 0).all() and done["qty_good"].map(math.isfinite).all()
    assert done["completed_at"].notna().all()
    assert not done["plant_id"].isin(["P2"]).any()  # P2's time zone is not a zone: its rows are INVALID


def test_hostile_parquet_types_are_quarantined_not_crashed(tmp_path: Path) -> None:
    landing = _base_landing(tmp_path)
    table = pa.table({
        "completion_id": pa.array([1, 2, 3, 4], pa.int64()),  # numbers where strings belong: fine as text
        "plant_id": ["P1", "P1", "P1", None],
        "location_id": ["L1", "L1", "L1", "L1"],
        "item_id": ["FG", "FG", "FG", "FG"],
        "qty_good": pa.array(["5", "abc", "1e400", "2"]),  # strings where numbers belong
        "completed_at": pa.array([1767607200, 1767607200, 1767607200, 1767607200], pa.int64()),  # not timestamps
    })
    (landing / "completions").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, landing / "completions" / "weird.parquet")
    inputs = accept.load_inputs(scan.read_landing_files(landing))
    assert inputs.completions.empty
    codes = inputs.quarantine[inputs.quarantine["table"] == "completions"]
    assert len(codes) == 4 and set(codes["error_code"]) == {"INVALID"}
    assert codes["message"].str.contains("completed_at").all()


def _cli(landing: Path, warehouse: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "-q", "run", "--landing", str(landing),
                           "--warehouse", str(warehouse), "--date", "2026-01-05"], capture_output=True, text=True)


def test_files_that_cannot_be_read_stop_the_run_in_one_line(tmp_path: Path) -> None:
    landing = _base_landing(tmp_path)
    write_table(landing, "completions", [{"completion_id": "C1", "plant_id": "P1", "location_id": "L1",
                                          "item_id": "FG", "qty_good": 1, "completed_at": "2026-01-05T10:00:00Z"}])
    warehouse = tmp_path / "wh"
    cases = {
        "truncated.parquet": b"PAR1\x00\x01\x02",
        "binary.csv": b"\x00\x00\xff\xfe\x00garbage",
        "empty.parquet": b"",
    }
    for name, payload in cases.items():
        bad = landing / "completions" / name
        bad.write_bytes(payload)
        proc = _cli(landing, warehouse)
        assert proc.returncode in (0, 1), proc.stderr
        assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
        if proc.returncode == 1:
            assert proc.stderr.count("\n") == 1 and name in proc.stderr
            assert not any(warehouse.rglob("*.parquet"))
        bad.unlink()
    # empty and header-only CSV files hold no rows: the run goes on
    (landing / "completions" / "empty.csv").write_bytes(b"")
    (landing / "completions" / "header.csv").write_text(",".join(COLUMNS[:7]) + "\n")
    proc = _cli(landing, warehouse)
    assert proc.returncode == 0, proc.stderr


def test_non_utf8_bytes_quarantine_the_row(tmp_path: Path) -> None:
    landing = _base_landing(tmp_path)
    (landing / "completions").mkdir(parents=True, exist_ok=True)
    (landing / "completions" / "latin1.csv").write_bytes(
        b"completion_id,plant_id,location_id,item_id,qty_good,completed_at\n"
        b"C1,P1,L\xe9,FG,1,2026-01-05T10:00:00Z\n"
        b"C2,P1,L1,FG,2,2026-01-05T10:00:00Z\n")
    inputs = accept.load_inputs(scan.read_landing_files(landing))
    assert inputs.completions["completion_id"].tolist() == ["C2"]
    bad = inputs.quarantine[inputs.quarantine["source_key"] == "C1"]
    assert bad["error_code"].tolist() == ["INVALID"]
    assert "not UTF-8" in bad["message"].iloc[0] and "location_id" in bad["message"].iloc[0]
