"""Warehouse: partition layout, all-or-nothing commits, crash recovery, safe partition names."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline import job
from pipeline.warehouse import Warehouse, encode_segment
from tests.landing import config_for, make_landing

ITEMS = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "kg", "standard_cost": 2, "phantom": "false", "backflush": "true", "uom_decimals": 3},
]
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 0.25}]


def completion(cid: str, qty: float, at: str, plant: str = "P1") -> dict[str, object]:
    return {"completion_id": cid, "plant_id": plant, "location_id": "L1", "item_id": "FG", "qty_good": qty,
            "completed_at": at}


def snapshot(root: Path) -> dict[str, str]:
    """Every published file and its content hash (bookkeeping folders excluded)."""
    files = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(("_locks", "_staging", "_journal")):
            files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return files


@pytest.fixture
def two_days(tmp_path: Path) -> tuple[Path, Path]:
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        completion("C1", 4, "2026-01-05T10:00:00Z"), completion("C2", 8, "2026-01-06T10:00:00Z")])
    config = config_for(tmp_path, landing)
    job.backfill(config, pd.Timestamp("2026-01-05").date(), pd.Timestamp("2026-01-06").date())
    return tmp_path, landing


def test_layout_is_hive_partitioned_and_readable_by_pyarrow(two_days: tuple[Path, Path]) -> None:
    root, _ = two_days
    wh = root / "warehouse"
    assert (wh / "adjustments/plant_id=P1/business_date=2026-01-05/part-0.parquet").is_file()
    table = ds.dataset(wh / "adjustments", format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas()
    # 4 FG received on the 5th, 8 on the 6th; RM issued 4 * 0.25 = 1.000 and 8 * 0.25 = 2.000 kg
    receipts = frame[frame["kind"] == "production_receipt"].sort_values("business_date")["qty"].tolist()
    issues = frame[frame["kind"] == "backflush_issue"].sort_values("business_date")["qty"].tolist()
    assert receipts == [4.0, 8.0]
    assert issues == [-1.0, -2.0]
    # partition columns are not repeated inside the files
    assert "plant_id" not in pq.read_schema(wh / "adjustments/plant_id=P1/business_date=2026-01-05/part-0.parquet").names


def test_crash_while_staging_leaves_warehouse_unchanged(two_days: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, landing = two_days
    before = snapshot(root / "warehouse")
    # a correction arrives, then the run dies while writing its third file
    (landing / "completions" / "late.csv").write_text(
        "completion_id,plant_id,location_id,item_id,qty_good,completed_at,recorded_at\n"
        "C1,P1,L1,FG,5,2026-01-05T10:00:00Z,2026-01-07T08:00:00Z\n")
    real_write = pq.write_table
    calls = {"n": 0}

    def failing_write(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full (injected)")
        real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing_write)
    config = config_for(root, landing)
    with pytest.raises(OSError, match="injected"):
        job.backfill(config, pd.Timestamp("2026-01-05").date(), pd.Timestamp("2026-01-06").date())
    assert snapshot(root / "warehouse") == before
    assert not any((root / "warehouse" / "_staging").glob("*"))
    assert not any((root / "warehouse" / "_locks").glob("*"))
    monkeypatch.setattr(pq, "write_table", real_write)
    job.backfill(config, pd.Timestamp("2026-01-05").date(), pd.Timestamp("2026-01-06").date())
    postings = Warehouse(str(root / "warehouse")).read("postings")
    receipts = postings[(postings["kind"] == "production_receipt") & (postings["business_date"] == "2026-01-05")]
    # posted 4, then corrected to 5: one delta of +1
    assert sorted(receipts["qty_delta"].tolist()) == [1.0, 4.0]


def test_crash_during_publication_is_rolled_forward(two_days: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    root, landing = two_days
    (landing / "completions" / "late.csv").write_text(
        "completion_id,plant_id,location_id,item_id,qty_good,completed_at,recorded_at\n"
        "C2,P1,L1,FG,0,2026-01-06T10:00:00Z,2026-01-07T08:00:00Z\n")  # C2 cancelled
    real_apply = Warehouse._apply

    def half_apply(self: Warehouse, journal: dict[str, object]) -> None:
        moves = list(journal["moves"])  # type: ignore[call-overload]
        real_apply(self, {**journal, "moves": moves[: len(moves) // 2], "deletes": []})
        raise KeyboardInterrupt("killed during publication (injected)")

    monkeypatch.setattr(Warehouse, "_apply", half_apply)
    config = config_for(root, landing)
    with pytest.raises(KeyboardInterrupt):
        job.run_dates(config, [pd.Timestamp("2026-01-06").date()])
    assert list((root / "warehouse" / "_journal").glob("*.json")), "the journal survives the crash"
    monkeypatch.setattr(Warehouse, "_apply", real_apply)
    # the next run rolls the interrupted one forward before doing its own work
    job.run_dates(config, [pd.Timestamp("2026-01-06").date()])
    assert not list((root / "warehouse" / "_journal").glob("*.json"))
    wh = Warehouse(str(root / "warehouse"))
    postings = wh.read("postings")
    day = postings[postings["business_date"] == "2026-01-06"]
    # 8 received then reversed: the ledger sums to the cancelled state (0) exactly once
    assert day.groupby("kind")["qty_delta"].sum().to_dict() == {"backflush_issue": 0.0, "production_receipt": 0.0}
    # a cancelled completion contributes nothing: the day's adjustments partition is gone
    adjustments = wh.read("adjustments")
    assert adjustments[adjustments["business_date"] == "2026-01-06"].empty
    assert not (root / "warehouse/adjustments/plant_id=P1/business_date=2026-01-06").exists()


def test_rerun_gives_identical_outputs(two_days: tuple[Path, Path]) -> None:
    root, landing = two_days
    wh = Warehouse(str(root / "warehouse"))
    before = {name: wh.read(name) for name in ("consumption", "adjustments", "variance")}
    postings_before = len(wh.read("postings"))
    job.backfill(config_for(root, landing), pd.Timestamp("2026-01-05").date(), pd.Timestamp("2026-01-06").date())
    for name, frame in before.items():
        pd.testing.assert_frame_equal(wh.read(name), frame)
    assert len(wh.read("postings")) == postings_before


@pytest.mark.parametrize("value", ["a/b", "..", ".", "x=y", "nul\x00byte", "50%", "Ü"])
def test_partition_values_cannot_escape_or_collide(value: str) -> None:
    segment = encode_segment(value)
    assert "/" not in segment and "\x00" not in segment and segment not in (".", "..") and "=" not in segment
    assert segment != encode_segment(value + "_")


def test_weird_plant_ids_stay_inside_the_warehouse(tmp_path: Path) -> None:
    plants = ["../evil", "a/b", "x=y"]
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        completion(f"C{i}", 1 + i, "2026-01-05T10:00:00Z", plant=p) for i, p in enumerate(plants)])
    job.run_dates(config_for(tmp_path, landing), [pd.Timestamp("2026-01-05").date()])
    inside = {p.resolve() for p in (tmp_path / "warehouse").rglob("*")}
    assert all(str(p).startswith(str((tmp_path / "warehouse").resolve())) for p in inside)
    assert not (tmp_path / "evil").exists()
    adjustments = Warehouse(str(tmp_path / "warehouse")).read("adjustments")
    receipts = adjustments[adjustments["kind"] == "production_receipt"].set_index("plant_id")["qty"].to_dict()
    assert receipts == {"../evil": 1.0, "a/b": 2.0, "x=y": 3.0}


def test_files_are_sorted_with_statistics_so_filters_prune(two_days: tuple[Path, Path]) -> None:
    root, _ = two_days
    wh = root / "warehouse"
    for path in (wh / "adjustments").rglob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        stats = meta.row_group(0).column(names.index("item_id")).statistics
        assert stats is not None and stats.has_min_max  # min/max per row group: readers skip by item
        frame = pq.read_table(path).to_pandas()
        keys = frame[["location_id", "item_id", "kind"]].astype(str).apply(tuple, axis=1).tolist()
        assert keys == sorted(keys)
    # a filter on the partition columns opens only the matching files
    part = ds.partitioning(pa.schema([("plant_id", pa.string()), ("business_date", pa.date32())]), flavor="hive")
    dataset = ds.dataset(wh / "adjustments", format="parquet", partitioning=part)
    chosen = list(dataset.get_fragments(filter=(ds.field("business_date") == dt.date(2026, 1, 6))))
    assert [Path(f.path).parent.name for f in chosen] == ["business_date=2026-01-06"]
