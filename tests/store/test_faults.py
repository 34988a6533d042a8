"""A run killed with SIGKILL at any point leaves each partition as before or as after, never half,
and the next run completes and posts exactly once."""

from __future__ import annotations

import hashlib
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.store.warehouse import Warehouse
from tests.support import faults
from tests.support.landing import make_landing, write_table

ITEMS = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "kg", "standard_cost": 2, "phantom": "false", "backflush": "true", "uom_decimals": 3},
]
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 0.5}]
DATES = ["2026-01-05", "2026-01-06", "2026-01-07"]
DATA = ("consumption", "adjustments", "variance")  # datasets whose files are a pure function of the inputs


def completions(qty: int) -> list[dict[str, object]]:
    return [{"completion_id": f"C-{plant}-{day}", "plant_id": plant, "location_id": "L1", "item_id": "FG",
             "qty_good": qty + i, "completed_at": f"{day}T10:00:00Z", "recorded_at": f"{day}T10:00:00Z"}
            for i, (plant, day) in enumerate((p, d) for p in ("P1", "P2", "P3") for d in DATES)]


def counts() -> list[dict[str, object]]:
    return [{"count_id": f"K-{plant}-{day}", "plant_id": plant, "location_id": "L1", "item_id": "RM",
             "counted_qty": 100, "counted_at": f"{day}T20:00:00Z"} for plant in ("P1", "P2", "P3") for day in DATES]


def backfill(landing: Path, warehouse: Path, pause_after: str | None = None) -> subprocess.Popen[str]:
    arguments = ["-q", "backfill", "--landing", str(landing), "--warehouse", str(warehouse), "--start", DATES[0],
                 "--end", DATES[-1]]
    command = faults.command(pause_after, *arguments) if pause_after else [sys.executable, "-m", "pipeline.cli",
                                                                           *arguments]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def data_files(warehouse: Path) -> dict[str, str]:
    """Content hash of every file of the deterministic datasets, by relative path."""
    out = {}
    for dataset in DATA:
        for path in sorted((warehouse / dataset).rglob("*.parquet")):
            out[path.relative_to(warehouse).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def ledger_matches_adjustments(warehouse: Path) -> bool:
    wh = Warehouse(str(warehouse))
    key = ["plant_id", "business_date", "location_id", "item_id", "kind"]
    ledger = wh.read("postings").groupby(key)["qty_delta"].sum()
    current = wh.read("adjustments").set_index(key)["qty"]
    both = ledger.to_frame("posted").join(current.to_frame("qty"), how="outer").fillna(0.0)
    return bool(((both["posted"] - both["qty"]).abs() < 1e-9).all())


@pytest.fixture(scope="module")
def states(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A landing before and after a correction, and the warehouses a clean run makes of each."""
    root = tmp_path_factory.mktemp("faults")
    landing = make_landing(root, items=ITEMS, bom=BOM, completions=completions(4), stock_counts=counts())
    before = root / "before"
    assert backfill(landing, before).wait() == 0
    write_table(landing, "completions", [
        {**row, "qty_good": int(row["qty_good"]) * 3, "recorded_at": "2026-01-08T00:00:00Z"}  # type: ignore[call-overload]
        for row in completions(4)], name="corrections.csv")
    after = root / "after"
    shutil.copytree(before, after)
    assert backfill(landing, after).wait() == 0
    return {"landing": landing, "before": before, "after": after}


KILL_POINTS = [("after moves", "1"), ("after moves", "5"), ("after moves", "17")] + [
    ("after seconds", f"{random.Random(7 + i).uniform(0.3, 2.5):.2f}") for i in range(3)]


@pytest.mark.parametrize(("how", "when"), KILL_POINTS)
def test_sigkill_leaves_before_or_after_and_the_next_run_posts_once(
        states: dict[str, Path], tmp_path: Path, how: str, when: str) -> None:
    warehouse = tmp_path / "wh"
    shutil.copytree(states["before"], warehouse)
    before, after = data_files(states["before"]), data_files(states["after"])
    if how == "after moves":
        proc = backfill(states["landing"], warehouse, pause_after=when)
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert faults.PAUSED in line, line
    else:
        proc = backfill(states["landing"], warehouse)
        time.sleep(float(when))
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # every file is whole and is either the old or the new version of itself
    for rel, digest in data_files(warehouse).items():
        assert digest in {before.get(rel), after.get(rel)}, rel

    # the next run rolls forward or redoes the work, and the ledger sums to the adjustments
    assert backfill(states["landing"], warehouse).wait() == 0
    assert data_files(warehouse) == after
    assert ledger_matches_adjustments(warehouse)
    postings = Warehouse(str(warehouse)).read("postings")
    assert len(postings) == len(Warehouse(str(states["after"])).read("postings"))
    assert backfill(states["landing"], warehouse).wait() == 0
    assert len(Warehouse(str(warehouse)).read("postings")) == len(postings)  # and nothing twice
