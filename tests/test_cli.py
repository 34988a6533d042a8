"""The `backflush` command end to end on generated landing data."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipeline import cli, sources
from pipeline.warehouse import Warehouse


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "landing"
    assert cli.main(["generate", "--out", str(out), "--items", "30", "--completions", "4000", "--days", "6",
                     "--seed", "3", "--start", "2026-02-02", "--bad-rows", "--format", "csv"]) == 0
    return out


def test_backfill_then_rerun_posts_nothing_twice(generated: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    wh = tmp_path / "wh"
    args = ["backfill", "--landing", str(generated), "--warehouse", str(wh), "--start", "2026-02-02",
            "--end", "2026-02-07"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "quarantined:" in out and "adjustments:" in out and "top components by consumed value" in out
    warehouse = Warehouse(str(wh))
    postings = warehouse.read("postings")
    adjustments = warehouse.read("adjustments")
    key = ["plant_id", "business_date", "location_id", "item_id", "kind"]
    ledger = postings.groupby(key)["qty_delta"].sum()
    assert (ledger - adjustments.set_index(key)["qty"]).abs().max() < 1e-9
    assert cli.main(args) == 0
    assert len(warehouse.read("postings")) == len(postings)
    runs = warehouse.read("runs")
    assert len(runs) == 2 and set(runs["status"]) == {"ok"}


def test_every_quarantine_code_and_nothing_lost(generated: Path, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert cli.main(["-q", "backfill", "--landing", str(generated), "--warehouse", str(wh),
                     "--start", "2026-02-02", "--end", "2026-02-07"]) == 0
    warehouse = Warehouse(str(wh))
    quarantine = warehouse.read("quarantine")
    assert {"INVALID", "UNKNOWN_ITEM", "NO_BOM", "BOM_CYCLE", "NO_UOM_CONVERSION", "DUPLICATE_ID"} <= set(
        quarantine["error_code"])
    assert quarantine["row"].map(lambda r: isinstance(json.loads(r), dict)).all()
    # Independently of the engine: every completion id in the landing ends in quarantine or in the
    # completions behind the production receipts (receipts sum to the accepted good units).
    raw = pd.concat([pd.read_csv(p, dtype=str) for p in sorted((generated / "completions").glob("*.csv"))])
    ids = set(raw["completion_id"])
    quarantined_ids = set(quarantine.loc[quarantine["table"] == "completions", "source_key"])
    accepted = raw[~raw["completion_id"].isin(quarantined_ids)].copy()
    accepted["recorded"] = pd.to_datetime(accepted["recorded_at"].fillna(accepted["completed_at"]), utc=True,
                                          format="ISO8601")
    latest = accepted.sort_values("recorded").groupby("completion_id").tail(1)
    assert ids == quarantined_ids | set(latest["completion_id"])
    received = warehouse.read("adjustments")
    received = received[received["kind"] == "production_receipt"]
    # group by plant-local business date and round each key half away from zero with Decimal
    zones = pd.read_csv(generated / "plants" / "plants.csv").set_index("plant_id")["timezone"]
    decimals = pd.read_csv(generated / "items" / "items.csv").set_index("item_id")["uom_decimals"]
    done = pd.to_datetime(latest["completed_at"], utc=True, format="ISO8601")
    latest["date"] = [t.tz_convert(zones.get(p, "UTC")).date() for t, p in zip(done, latest["plant_id"], strict=True)]
    latest = latest[latest["date"].between(dt.date(2026, 2, 2), dt.date(2026, 2, 7))]
    # a cancelled completion (both quantities 0) contributes nothing, not even a zero row
    units = pd.to_numeric(latest["qty_good"]) + pd.to_numeric(latest["qty_scrap"]).fillna(0)
    latest = latest[units > 0]
    expected = {}
    for (plant, date, location, item), rows in latest.groupby(["plant_id", "date", "location_id", "item_id"]):
        total = sum(Decimal(v) for v in rows["qty_good"])
        exponent = Decimal(1).scaleb(-int(decimals[item]))
        expected[(plant, date, location, item)] = float(total.quantize(exponent, rounding=ROUND_HALF_UP))
    got = {(r.plant_id, r.business_date.date(), r.location_id, r.item_id): r.qty for r in received.itertuples()}
    assert got == expected


def test_run_single_date_and_dry_run(generated: Path, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert cli.main(["-q", "run", "--landing", str(generated), "--warehouse", str(wh), "--date", "2026-02-03",
                     "--dry-run"]) == 0
    assert not (wh / "adjustments").exists()
    assert cli.main(["-q", "run", "--landing", str(generated), "--warehouse", str(wh), "--date", "2026-02-03",
                     "--plant", "P1"]) == 0
    adjustments = Warehouse(str(wh)).read("adjustments")
    assert set(adjustments["plant_id"]) == {"P1"}
    # a first run on a fresh warehouse also processes the look-back dates (7 days) that hold data:
    # P1's completions on 27 Jan .. 2 Feb in its own zone, here the generated data's first day
    raw = pd.concat([pd.read_csv(p, dtype=str) for p in sorted((generated / "completions").glob("*.csv"))])
    zone = pd.read_csv(generated / "plants" / "plants.csv").set_index("plant_id")["timezone"].get("P1", "UTC")
    p1 = raw[raw["plant_id"] == "P1"]
    local = pd.to_datetime(p1["completed_at"], utc=True, format="ISO8601", errors="coerce").dt.tz_convert(zone)
    earlier = {d.isoformat() for d in local.dt.date.dropna() if dt.date(2026, 1, 27) <= d < dt.date(2026, 2, 3)}
    got = set(adjustments["business_date"].dt.strftime("%Y-%m-%d"))
    assert "2026-02-03" in got and got <= earlier | {"2026-02-03"} and got - {"2026-02-03"}


def test_backfill_reads_landing_once(generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = sources.read_file
    monkeypatch.setattr(sources, "read_file", lambda path: reads.append(str(path)) or real(path))
    assert cli.main(["-q", "backfill", "--landing", str(generated), "--warehouse", str(tmp_path / "wh"),
                     "--start", "2026-02-02", "--end", "2026-02-07"]) == 0
    assert reads and len(reads) == len(set(reads))  # every file once


def test_failures_say_why_in_one_line_and_write_nothing(generated: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(generated), str(broken)], check=True)
    (broken / "completions" / "extra.csv").write_text("completion_id,plant_id\nX,P1\n")
    wh = tmp_path / "wh"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--landing", str(broken), "--warehouse",
                           str(wh), "--date", "2026-02-03"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "required columns" in proc.stderr and "extra.csv" in proc.stderr
    assert not wh.exists() or not any(p.is_file() for p in wh.rglob("*.parquet"))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--landing", str(tmp_path / "nowhere"),
                           "--warehouse", str(wh), "--date", "2026-02-03"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("backflush: landing folder")
    (broken / "completions" / "extra.csv").write_bytes(b"PAR1 not really parquet")
    (broken / "completions" / "extra.csv").rename(broken / "completions" / "extra.parquet")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--landing", str(broken), "--warehouse",
                           str(wh), "--date", "2026-02-03"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "extra.parquet cannot be read" in proc.stderr


def test_demo_prints_its_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for heading in ("rows read:", "quarantined:", "adjustments:", "top components by consumed value", "variance:"):
        assert heading in out
