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
from pipeline.store.warehouse import Warehouse, encode_segment
from tests.support.landing import config_for, make_landing

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


# ------------------------------------------------------------------ staging (background writes)


def _reference_table(frame: pd.DataFrame, schema: pa.Schema, sort_by: list[str]) -> pa.Table:
    """What a staged file must hold: pandas' stable sort, then each column cast to the schema."""
    rows = frame.sort_values(sort_by, kind="stable")
    arrays = []
    for fld in schema:
        values = rows[fld.name]
        if pa.types.is_date32(fld.type):
            values = pd.to_datetime(values).dt.date
        arrays.append(pa.array(values, type=fld.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _staged_tables(wh: Warehouse, txn: object) -> list[pa.Table]:
    return [pq.read_table(final, filesystem=wh.filesystem) for _, final in txn.moves]  # type: ignore[attr-defined]


def test_staged_files_are_ordered_exactly_as_pandas_sorts(tmp_path: Path) -> None:
    from pipeline.contract import schemas

    rng = __import__("random").Random(7)
    n = 2000
    stamps = pd.to_datetime("2026-01-05", utc=True) + pd.to_timedelta([rng.randrange(0, 3 * 86400) for _ in range(n)],
                                                                     unit="s")
    frame = pd.DataFrame({
        "posting_id": [f"p{i}" for i in range(n)],  # unique: shows the order of ties (stability)
        "run_id": "r1",
        # a datetime key written as a date: rows of one day still sort by time of day, as in pandas
        "business_date": pd.Series(stamps).dt.tz_localize(None).astype("datetime64[ns]"),
        "for_business_date": pd.Series(stamps).dt.tz_localize(None).astype("datetime64[ns]"),
        "adjustment_id": "a",
        "location_id": [rng.choice(["L2", "L10", "L1", "", None, "Ü", "é"]) for _ in range(n)],
        "item_id": pd.Series([rng.choice(["B", "A", "b", None]) for _ in range(n)], dtype=object),
        "kind": [rng.choice(["backflush_issue", "production_receipt"]) for _ in range(n)],
        "qty_delta": [rng.choice([1.5, -2.0, float("nan"), 0.0, -0.0]) for _ in range(n)],
        "uom": "EA",
        "posted_at": stamps,
    })
    wh = Warehouse(str(tmp_path / "wh"))
    sorts = [["business_date", "location_id", "item_id", "kind"], ["item_id", "qty_delta"], ["location_id"]]
    txn = wh.begin("r1", ["P1"])
    for i, sort_by in enumerate(sorts):
        txn.put("postings", {"plant_id": f"P{i}"}, frame, file_name="f.parquet", sort_by=sort_by)
    txn.put("postings", {"plant_id": "Px"}, frame, file_name="f.parquet")  # no sort: frame order
    txn.commit()
    tables = _staged_tables(wh, txn)
    for table, sort_by in zip(tables, [*sorts, None], strict=True):
        expected = _reference_table(frame, schemas.POSTINGS, sort_by) if sort_by else \
            _reference_table(frame.assign(_i=range(n)), schemas.POSTINGS, ["_i"])
        assert table.equals(expected), sort_by


def test_keys_arrow_cannot_order_like_pandas_are_sorted_by_pandas(tmp_path: Path) -> None:
    from pipeline.contract import schemas

    kinds = pd.Categorical(["production_receipt", "backflush_issue", "byproduct_receipt", "backflush_issue"],
                           categories=["production_receipt", "backflush_issue", "byproduct_receipt"], ordered=True)
    frame = pd.DataFrame({"adjustment_id": ["a1", "a2", "a3", "a4"], "location_id": "L1", "item_id": "I",
                          "kind": kinds, "qty": [1.0, 2.0, 3.0, 4.0], "uom": "EA", "value": 0.0, "completions": 1})
    wh = Warehouse(str(tmp_path / "wh"))
    txn = wh.begin("r1", ["P1"])
    txn.put("adjustments", {"plant_id": "P1", "business_date": dt.date(2026, 1, 5)}, frame, sort_by=["kind"])
    txn.commit()
    (table,) = _staged_tables(wh, txn)
    assert table["adjustment_id"].to_pylist() == ["a1", "a2", "a4", "a3"]  # category order, not a-z
    assert table.schema == schemas.ADJUSTMENTS


def test_dates_are_the_calendar_dates_pandas_gives() -> None:
    from pipeline.store.warehouse import to_arrow

    schema = pa.schema([("d", pa.date32())])
    values = ["1969-12-31T23:00:00", "2026-01-05T10:00:00", None, "1900-01-01T00:00:01"]
    naive = pd.DataFrame({"d": pd.to_datetime(pd.Series(values))})
    zoned = pd.DataFrame({"d": pd.to_datetime(pd.Series(["2026-01-05T23:30Z", "2026-01-05T00:30Z", None]))
                          .dt.tz_convert("America/New_York")})
    objects = pd.DataFrame({"d": pd.Series([dt.date(2026, 1, 5), None, dt.date(1960, 2, 29)], dtype=object)})
    for frame in (naive, zoned, objects):
        expected = pa.array(pd.to_datetime(frame["d"]).dt.date, type=pa.date32(), from_pandas=True)
        assert to_arrow(frame, schema)["d"].combine_chunks().equals(expected)


def _accuracy_row() -> pd.DataFrame:
    from pipeline.contract import schemas

    return pa.Table.from_pylist([{"component_item_id": "C", "uom": "kg", "counts": 1}],
                                schema=schemas.BOM_ACCURACY).to_pandas()


def test_a_failed_background_write_aborts_the_whole_transaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    wh = Warehouse(str(tmp_path / "wh"))
    frame = _accuracy_row()
    real_write = pq.write_table
    calls = {"n": 0}
    lock = threading.Lock()

    def flaky_write(*args: object, **kwargs: object) -> None:
        with lock:
            calls["n"] += 1
            n = calls["n"]
        time.sleep(0.05)  # still writing when the caller moves on
        if n == 2:
            raise OSError("disk full (injected)")
        real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", flaky_write)
    txn = wh.begin("r1", ["P1"])
    with pytest.raises(OSError, match="injected"):
        for i in range(20):
            txn.put("bom_accuracy", {"plant_id": f"P{i}"}, frame, sort_by=["component_item_id"])
        txn.commit()
    txn.abort()
    assert calls["n"] < 20  # the failure stopped the queued writes
    time.sleep(0.2)  # nothing still running could write a staged file after the abort
    assert not [p for p in (tmp_path / "wh").rglob("*") if p.is_file()]
    assert not (tmp_path / "wh" / "_journal").exists()


def test_abort_waits_for_running_writes_and_commit_for_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    wh = Warehouse(str(tmp_path / "wh"))
    frame = _accuracy_row()
    real_write = pq.write_table

    def slow_write(*args: object, **kwargs: object) -> None:
        time.sleep(0.1)
        real_write(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", slow_write)
    txn = wh.begin("r1", ["P1"])
    for i in range(3):
        txn.put("bom_accuracy", {"plant_id": f"P{i}"}, frame)
    txn.abort()  # the writes are still running
    time.sleep(0.3)
    assert not (tmp_path / "wh" / "_staging").exists() or not any((tmp_path / "wh" / "_staging").rglob("*"))
    assert not (tmp_path / "wh" / "bom_accuracy").exists()

    txn = wh.begin("r2", ["P1"])
    for i in range(6):
        txn.put("bom_accuracy", {"plant_id": f"P{i}"}, frame)
    txn.commit()
    assert len(wh.read("bom_accuracy")) == 6
    assert not any((tmp_path / "wh" / "_staging").rglob("*"))


def test_replace_stages_each_partition_of_scope_exactly_as_put_would(tmp_path: Path) -> None:
    from pipeline.contract import schemas

    rng = __import__("random").Random(11)
    n = 600
    counted = pd.to_datetime("2026-01-05", utc=True) + pd.to_timedelta([rng.randrange(0, 4 * 86400) for _ in range(n)],
                                                                      unit="s")
    table = pa.Table.from_pylist([{"count_id": f"K{i}", "location_id": rng.choice(["L2", "L1", None]),
                                   "item_id": rng.choice(["B", "A"])} for i in range(n)], schema=schemas.VARIANCE)
    frame = table.to_pandas()
    frame["counted_at"] = counted
    frame["plant_id"] = [rng.choice(["P1", "P2", "P3"]) for _ in range(n)]
    frame["count_date"] = counted.tz_localize(None).normalize().astype("datetime64[ns]")
    frame = frame.sample(frac=1, random_state=3)  # any row order, any index
    dates = sorted(frame["count_date"].unique())
    scope = [{"plant_id": p, "count_date": d} for p in ("P2", "P1") for d in dates[:3]] + \
        [{"plant_id": "P9", "count_date": dates[0]}]  # P3 out of scope; P9 has no rows
    sort_by = ["location_id", "item_id", "counted_at"]
    wh = Warehouse(str(tmp_path / "wh"))
    txn = wh.begin("r1", ["P1", "P2"])
    txn.replace("variance", frame, scope, sort_by=sort_by)
    txn.commit()
    written = _staged_tables(wh, txn)
    assert len(written) == 6 and len(txn.partitions["variance"]) == 6
    for table, partition in zip(written, scope, strict=False):
        rows = frame[(frame["plant_id"] == partition["plant_id"]) & (frame["count_date"] == partition["count_date"])]
        assert table.equals(_reference_table(rows, schemas.VARIANCE, sort_by))


def test_arrow_sort_keys_order_rows_as_pandas_and_spot_sorted_input() -> None:
    import random

    import numpy as np
    import pyarrow.compute as pc

    from pipeline.store.warehouse import _sort_keys, _StagedWrite

    rng = random.Random(5)
    values: dict[str, list[object]] = {
        "s": ["a", "b", "B", "", None, "é"], "f": [1.0, -0.0, 0.0, float("nan"), None, 2.5], "b": [True, False],
        "t": list(pd.to_datetime(["2026-01-01", "2026-01-02", None], utc=True)), "i": [1, 2, 3],
        "o": [None, "x", "y"], "n": [None],
    }
    for _ in range(1500):
        n = rng.randrange(0, 9)
        names = rng.sample(list(values), rng.randrange(1, 4))
        frame = pd.DataFrame({k: pd.Series([rng.choice(values[k]) for _ in range(n)],
                                           dtype=object if k in ("o", "n") else None) for k in names})
        if rng.random() < 0.5:
            frame = frame.sort_values(names, kind="stable").reset_index(drop=True)
        keys = _sort_keys(frame, names)
        assert keys is not None
        order = pc.sort_indices(keys, sort_keys=[(k, "ascending") for k in keys.column_names]).to_numpy()
        assert order.tolist() == frame.sort_values(names, kind="stable").index.tolist(), frame
        in_order = bool(np.array_equal(order, np.arange(n)))
        assert _StagedWrite._in_order(keys) == in_order, frame
        chunked = pa.Table.from_batches(keys.to_batches(max_chunksize=2), schema=keys.schema)
        assert _StagedWrite._in_order(chunked) == in_order, frame
