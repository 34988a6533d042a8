"""Completions a bucket at a time: however completions are split into buckets, and on however many
processes they are digested, a run writes what one bucket writes.

The reference is the same run with every completion in one bucket (the whole table in memory, as
the exact-number tests elsewhere check it); the property is that splitting by completion id is
invisible: every row still ends in exactly one output or quarantine row, ids and lines included.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import errors, job
from pipeline.config import load_config
from pipeline.contract.inputs import LINE_COLUMN, Inputs
from pipeline.domain import consumption, stock_windows
from pipeline.intake import accept, scan, spill
from pipeline.stages import daily, digest, read
from pipeline.store.warehouse import Warehouse
from pipeline.tools.generate import generate_landing
from tests.support.landing import make_landing, write_table

START = dt.date(2026, 1, 5)
DAYS = 6
DATASETS = ["consumption", "adjustments", "postings", "variance", "bom_accuracy", "bom_suggestions", "quarantine"]
VOLATILE = ["run_id", "posting_id", "posted_at", "computed_at", "as_of"]  # differ between any two runs


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated data with a row of every quarantine code, completions in several CSV files."""
    root = tmp_path_factory.mktemp("buckets") / "landing"
    generate_landing(root, items=30, completions=3000, days=DAYS, seed=7, start=START, bad_rows=True,
                     file_format="csv")
    return root


def _outputs(warehouse: Path) -> dict[str, pd.DataFrame]:
    out = {}
    wh = Warehouse(str(warehouse))
    for name in DATASETS:
        frame = wh.read(name)
        frame = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
        keys = [c for c in frame.columns if frame[c].dtype == object or str(frame[c].dtype) in ("str", "string")
                or "datetime" in str(frame[c].dtype)]
        out[name] = frame.sort_values(keys).reset_index(drop=True)
    return out


def _backfill(landing: Path, warehouse: Path, **settings: object) -> list[job.RunResult]:
    config = load_config(None, landing=str(landing), warehouse=str(warehouse), **settings)
    return job.backfill(config, START, START + dt.timedelta(days=DAYS - 1))


@pytest.fixture(scope="module")
def whole(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, pd.DataFrame], job.RunResult]:
    warehouse = tmp_path_factory.mktemp("whole") / "wh"
    results = _backfill(landing, warehouse)
    return _outputs(warehouse), results[0]


@pytest.mark.parametrize("bucket_rows, workers", [(250, 1), (900, 2), (50, 2)])
def test_a_run_in_buckets_writes_what_one_bucket_writes(
    landing: Path, tmp_path: Path, whole: tuple[dict[str, pd.DataFrame], job.RunResult], bucket_rows: int,
    workers: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """...and staged in batches of a few dates rather than a plant at a time. At 50 rows a bucket the
    run is a large one (over 40 buckets): split first, in buckets half that size, workers trimming."""
    reference, reference_run = whole
    monkeypatch.setattr(daily, "DEMAND_ROWS_PER_BATCH", 40)
    split: list[tuple[int, bool]] = []
    digest_all = digest._digest_all

    def recorded(spilled: list[list[tuple[str, Path]]], *args: object, large: bool = False) -> object:
        split.append((len(spilled), large))
        return digest_all(spilled, *args, large=large)  # type: ignore[arg-type]

    monkeypatch.setattr(digest, "_digest_all", recorded)
    results = _backfill(landing, tmp_path / "wh", bucket_rows=bucket_rows, workers=workers)
    large = bucket_rows == 50
    assert split and split[0][1] == large and (split[0][0] > 2 * spill.OVERLAP_MAX_BUCKETS) == large
    outputs = _outputs(tmp_path / "wh")
    assert reference["quarantine"]["error_code"].nunique() >= 6  # the bad rows are there to be found
    for name in DATASETS:
        assert not reference[name].empty, name
        pd.testing.assert_frame_equal(outputs[name], reference[name], check_exact=False, rtol=1e-12, obj=name)
    for counter in ("rows_read", "rows_accepted", "rows_quarantined", "rows_superseded", "rows_written"):
        assert getattr(results[0], counter) == getattr(reference_run, counter), counter


def test_a_rerun_in_other_buckets_posts_nothing(landing: Path, tmp_path: Path) -> None:
    """Postings are exactly-once whatever the split: a re-run with other buckets adds no posting."""
    _backfill(landing, tmp_path / "wh")
    before = Warehouse(str(tmp_path / "wh")).read("postings")
    _backfill(landing, tmp_path / "wh", bucket_rows=333, workers=1)
    after = Warehouse(str(tmp_path / "wh")).read("postings")
    assert len(before) > 0 and len(after) == len(before)


def test_spill_puts_every_version_of_an_id_in_one_bucket_and_keeps_lines(tmp_path: Path) -> None:
    """Ids are judged as coerced: ' C1 ' in a CSV and C1 elsewhere are one id, and share a bucket."""
    first = pd.DataFrame({"completion_id": [" C1 ", "C2", "C3", "7", None], "qty_good": ["1", "2", "3", "4", "5"]})
    second = pd.DataFrame({"completion_id": pd.Series([7, 8], dtype="int64"), "qty_good": [1.0, 2.0]})
    third = pd.DataFrame({"completion_id": ["C1", "C2"], "qty_good": ["9", "9"]})
    files = spill.raw_files([("completions/a.csv", first), ("completions/b.parquet", second),
                               ("completions/c.csv", third)])
    spilled = spill.spill(files, 5, tmp_path)
    seen: dict[str, set[int]] = {}
    rows = []
    for number, files in enumerate(spilled):
        for source, path in files:
            part = spill.read_spilled(path)
            for cid, line in zip(part["completion_id"], part[LINE_COLUMN], strict=True):
                key = "<none>" if pd.isna(cid) else str(cid).strip()
                seen.setdefault(key, set()).add(number)
                rows.append((source, int(line)))
    assert all(len(found) == 1 for found in seen.values()), seen
    # every row once, with its line in its own file (header = line 1)
    assert sorted(rows) == sorted([("completions/a.csv", i) for i in range(2, 7)]
                                  + [("completions/b.parquet", i) for i in (2, 3)]
                                  + [("completions/c.csv", i) for i in (2, 3)])


def test_a_column_of_mixed_python_values_is_spilled_as_text(tmp_path: Path) -> None:
    """A frame from SQL may hold a column Arrow cannot type as one (numbers and text): it is spilled as
    text, which is how coercion reads it, and its rows keep their lines."""
    mixed = pd.DataFrame({"completion_id": [7, "C2", None, " C3 "], "qty_good": [1, "2", 3.5, None]}, dtype=object)
    spilled = spill.spill(spill.raw_files([("sql:completions", mixed)]), 3, tmp_path)
    back = pd.concat([spill.read_spilled(path) for files in spilled for _, path in files], ignore_index=True)
    back = back.sort_values(LINE_COLUMN).reset_index(drop=True)
    assert back[LINE_COLUMN].tolist() == [2, 3, 4, 5]
    assert [None if pd.isna(v) else v for v in back["completion_id"]] == ["7", "C2", None, " C3 "]
    assert [None if pd.isna(v) else v for v in back["qty_good"]] == ["1", "2", "3.5", None]


def test_a_rejected_row_of_a_bucket_names_its_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spill, "SPILL_CHUNK_ROWS", 7)  # the file is split a few rows at a time
    items = [{"item_id": i, "uom": "EA", "standard_cost": 1.0, "phantom": False, "backflush": True,
              "uom_decimals": 3} for i in ("F", "R")]
    completions = [{"completion_id": f"C{i}", "plant_id": "P1", "location_id": "L1", "item_id": "F",
                    "qty_good": 1.0 if i != 17 else "lots", "completed_at": "2026-01-05T10:00:00Z"} for i in range(40)]
    landing = make_landing(tmp_path, items=items, bom=[{"parent_item_id": "F", "component_item_id": "R", "qty_per": 2}],
                           completions=completions)
    config = load_config(None, landing=str(landing), warehouse=str(tmp_path / "wh"), bucket_rows=4, workers=1)
    run_inputs = read.read_inputs(config)
    assert run_inputs.completions.buckets > 1  # a CSV's rows are estimated from its size
    bad = run_inputs.inputs.quarantine
    assert bad[["source_key", "error_code", "source"]].values.tolist() == [["C17", "INVALID", "completions/part.csv:19"]]
    assert run_inputs.inputs.stats["completions"].read == 40
    assert run_inputs.inputs.stats["completions"].accepted == 39
    demand = run_inputs.completions.demand
    assert demand["qty_good"].sum() == 39.0 and demand["completions"].sum() == 39


def test_a_missing_id_column_stops_a_bucketed_run_with_one_line(tmp_path: Path) -> None:
    landing = make_landing(tmp_path)
    write_table(landing, "completions", [{"plant_id": "P1", "qty_good": 1}] * 10)
    config = load_config(None, landing=str(landing), warehouse=str(tmp_path / "wh"), bucket_rows=3)
    with pytest.raises(errors.SourceError, match="required column.*completion_id"):
        read.read_inputs(config)


def _tagging_inputs(landing: Path) -> Inputs:
    return accept.load_inputs(scan.read_landing_files(landing))


def test_the_catalog_numbers_and_explodes_each_key_once_however_completions_arrive(landing: Path) -> None:
    inputs = _tagging_inputs(landing)
    made = consumption.produced(inputs.completions)
    whole = consumption.ExplosionCatalog(inputs.bom, inputs.items, inputs.uom_conversions, inputs.broken_bom)
    at_once = whole.tag(made)
    split = consumption.ExplosionCatalog(inputs.bom, inputs.items, inputs.uom_conversions, inputs.broken_bom)
    halves = pd.concat([split.tag(made.iloc[::2]), split.tag(made.iloc[1::2])]).sort_index()
    distinct = at_once.groupby(["plant_id", "item_id", "effective_date"]).ngroups
    assert len(split.keys) == len(whole.keys) == distinct > 1

    def by_content(catalog: consumption.ExplosionCatalog, tagged: pd.DataFrame) -> pd.DataFrame:
        req = catalog.requirements.merge(catalog.keys, on="key")
        per_row = tagged[["_row", "key"]].merge(req, on="key").drop(columns="key")
        return per_row.sort_values(["_row", "component_item_id"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(by_content(split, halves), by_content(whole, at_once))
    # another process's catalog, adopted: its numbers map onto equal keys here
    other = whole.empty_copy()
    theirs = other.tag(made.iloc[::-1])
    mapping = whole.adopt(other.keys, other.requirements, other.errors)
    assert (mapping[theirs["key"].to_numpy()] == at_once.loc[theirs.index, "key"].to_numpy()).all()


def test_count_windows_add_up_over_any_split(landing: Path) -> None:
    inputs = _tagging_inputs(landing)
    exploded = consumption.explode_all(inputs.completions, inputs.bom, inputs.items, inputs.uom_conversions,
                                       inputs.broken_bom)
    good = exploded.good()
    once = stock_windows.count_windows(inputs.stock_counts, inputs.items)
    once.add_completions(good, exploded.requirements)
    split = stock_windows.count_windows(inputs.stock_counts, inputs.items)
    for part in np.array_split(np.arange(len(good)), 3):
        piece = stock_windows.CountWindows.like(split)
        piece.add_completions(good.iloc[part], exploded.requirements)
        split.add(np.arange(len(piece.receipts)), piece.receipts, piece.usage)
    once.add_movements(inputs.movements)
    split.add_movements(inputs.movements)
    a, b = once.sums(), split.sums()
    assert (a["usage_qty"] != 0).sum() > 10 and (a["receipts_qty"] != 0).sum() > 3
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


@pytest.mark.parametrize("name", ["c.csv", "c.parquet"])
def test_a_file_read_in_chunks_is_the_file_read_whole(tmp_path: Path, name: str) -> None:
    rows = [{"completion_id": f"C{i}", "qty_good": "" if i == 3 else str(i), "note": "a, \"quoted\" one"}
            for i in range(11)]
    path = write_table(tmp_path, "completions", rows, name=name)
    whole = scan.read_file(path)
    chunks = list(scan.read_file_chunks(path, 4))
    assert [line for line, _ in chunks] == [2, 6, 10]
    pd.testing.assert_frame_equal(pd.concat([c for _, c in chunks], ignore_index=True), whole)
    header_only = write_table(tmp_path, "completions", [], name="empty-" + name, columns=["completion_id", "qty"])
    (line, empty), = scan.read_file_chunks(header_only, 4)
    assert line == 2 and list(empty.columns) == ["completion_id", "qty"] and empty.empty


def test_an_unreadable_file_fails_a_bucketed_run_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """A corrupt completion file, found by a spill worker: the run stops with the file's name, the
    warehouse is as it was, and no spill folder is left behind."""
    completions = [{"completion_id": f"C{i}", "plant_id": "P1", "location_id": "L1", "item_id": "F",
                    "qty_good": 1.0, "completed_at": "2026-01-05T10:00:00Z"} for i in range(30)]
    landing = make_landing(tmp_path, completions=completions)
    write_table(landing, "completions", completions, name="more.csv")
    (landing / "completions" / "zz-broken.parquet").write_bytes(b"PAR1 this is not parquet")
    spill_folder = tmp_path / "spill"
    spill_folder.mkdir()
    config = load_config(None, landing=str(landing), warehouse=str(tmp_path / "wh"), bucket_rows=5, workers=2,
                         spill_dir=str(spill_folder))
    with pytest.raises(errors.SourceError, match=r"zz-broken\.parquet cannot be read") as failure:
        job.run_dates(config, [START])
    assert "\n" not in str(failure.value)
    assert list(spill_folder.iterdir()) == []
    assert not (tmp_path / "wh").exists() or not any((tmp_path / "wh").rglob("*.parquet"))


def test_forked_map_returns_results_in_task_order_on_workers_and_in_process() -> None:
    from pipeline.engine import workers

    tasks = list(range(7))
    shared = {"offset": 100}
    assert list(workers.forked_map(_slow_first, tasks, workers=2, shared=shared)) == [100 + t for t in tasks]
    assert list(workers.forked_map(_slow_first, tasks, workers=1, shared=shared)) == [100 + t for t in tasks]


def _slow_first(shared: dict[str, int], task: int) -> int:
    """The first task finishes last: order must come from the tasks, not from the workers."""
    import time

    if task == 0:
        time.sleep(0.3)
    return shared["offset"] + task


def test_every_row_read_is_accepted_quarantined_or_superseded_when_streamed(
    landing: Path, tmp_path: Path,
) -> None:
    """The counters of a streamed run account for every row, movements included (their rows are let
    go of early): the accepted rows are those a whole-table load keeps."""
    config = load_config(None, landing=str(landing), warehouse=str(tmp_path / "wh"), bucket_rows=250, workers=1)
    stats = read.read_inputs(config).inputs.stats
    whole = _tagging_inputs(landing)
    for table, stat in stats.items():
        assert stat.read == stat.accepted + stat.quarantined + stat.superseded, table
    assert stats["movements"].accepted == len(whole.movements) > 0
    assert stats["stock_counts"].accepted == len(whole.stock_counts) > 0
    assert stats["completions"].accepted == len(whole.completions) > 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(st.integers(0, 6), st.integers(-3, 40), st.integers(0, 3),
                               st.integers(-50, 50), st.integers(0, 4)), max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=6), merge_rows=st.integers(1, 8))
def test_demand_sums_equal_a_group_by_over_every_row(rows: list[tuple[int, int, int, int, int]], cuts: list[int],
                                                     merge_rows: int) -> None:
    """The merged demand of partials (however they are cut, merged early or late, with days before
    1970) is pandas' group-by sum of all their rows: the same keys, every sum exact."""
    frame = pd.DataFrame(rows, columns=["key", "day", "location", "qty", "completions"])
    frame["day"] = (pd.Timestamp("1969-12-29") + pd.to_timedelta(frame["day"], unit="D")).astype("datetime64[ns]")
    frame["qty"] = frame["qty"] / 4.0  # quarters add up exactly in floating point
    sums = digest._DemandSums()
    sums.MERGE_ROWS = merge_rows  # merged early and often
    bounds = sorted({0, len(frame), *[c for c in cuts if c <= len(frame)]})
    for start, stop in zip(bounds, bounds[1:], strict=False):
        part = frame.iloc[start:stop]
        sums.add(part["key"].to_numpy(dtype="int64"), part["day"].to_numpy().view("int64"),
                 part["location"].to_numpy(dtype="int64"),
                 {"qty": part["qty"].to_numpy(), "completions": part["completions"].to_numpy(dtype="int64")})
    if frame.empty:
        assert sums.rows == 0
        return
    key, day, location, got = sums.summed()
    merged = pd.DataFrame({"key": key, "day": day.view("datetime64[ns]"), "location": location, **got})
    expected = frame.groupby(["key", "day", "location"], as_index=False)[["qty", "completions"]].sum()
    pd.testing.assert_frame_equal(merged.sort_values(["key", "day", "location"]).reset_index(drop=True),
                                  expected, check_dtype=False)
    assert merged["completions"].dtype == np.int64 and sums.rows == len(expected)


def test_staged_batches_join_a_column_that_is_null_in_one_batch(tmp_path: Path) -> None:
    """A streamed batch whose column is all null (Arrow type null) joins a batch that has values:
    the rows come back as one table and one frame, with lines counted on across batches."""
    first = pd.DataFrame({"completion_id": ["A", "B"], "qty_good": [1.0, 2.0], "order_id": [None, None]})
    second = pd.DataFrame({"completion_id": ["C"], "qty_good": [3.0], "order_id": ["O-7"]})
    staged = spill.StagedRows.stage("sql:s.completions", iter([first, second]), tmp_path / "stage")
    assert staged.rows() == 3 and [n for _, n in staged.parts] == [2, 1]
    [(line, table)] = list(staged.chunks(10))
    assert line == 2 and table.num_rows == 3 and (
        pa.types.is_string(table.schema.field("order_id").type) or pa.types.is_large_string(table.schema.field("order_id").type))
    frame = staged.read()
    assert frame["completion_id"].tolist() == ["A", "B", "C"]
    assert frame["order_id"].isna().tolist() == [True, True, False] and frame["order_id"].iloc[2] == "O-7"
    # chunks smaller than the batches: one batch each, lines 2 and 4
    assert [(line, t.num_rows) for line, t in staged.chunks(1)] == [(2, 2), (4, 1)]
    # an empty stream is one empty batch (its columns still say what the source holds)
    empty = spill.StagedRows.stage("sql:s.completions", iter([first.iloc[0:0]]), tmp_path / "empty")
    assert empty.rows() == 0 and list(empty.read().columns) == ["completion_id", "qty_good", "order_id"]
