"""The benchmark's peers (issue 13) on small generated data: baselines C and D give the pipeline's
consumption and adjustments, the I/O floor writes the pipeline's row counts, and the process-tree
peak counts every worker."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from pipeline import cli

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import compare  # noqa: E402
import compare_warehouses  # noqa: E402
from measure import MIB, run_measured  # noqa: E402

START = dt.date(2026, 3, 5)  # the range crosses Chicago's switch to summer time (Mar 8)
END = START + dt.timedelta(days=5)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "landing"
    assert cli.main(["-q", "generate", "--out", str(out), "--items", "60", "--completions", "6000", "--days", "6",
                     "--seed", "7", "--start", START.isoformat()]) == 0
    return out


@pytest.fixture(scope="module")
def warehouse(landing: Path) -> Path:
    wh = landing.parent / "warehouse"
    assert cli.main(["-q", "backfill", "--landing", str(landing), "--warehouse", str(wh), "--start",
                     START.isoformat(), "--end", END.isoformat()]) == 0
    return wh


def run_baseline(script: str, landing: Path, out: Path) -> None:
    subprocess.run([sys.executable, str(BENCH / script), "--landing", str(landing), "--out", str(out)], check=True)


def test_the_data_exercises_every_part_of_the_core(landing: Path, warehouse: Path) -> None:
    """Agreement below means something only if the data has phantoms, by-products, conversions,
    plant BOMs, effectivity, scrap, several versions of a completion, and no rejected row."""
    bom = pq.read_table(landing / "bom").to_pandas()
    items = pq.read_table(landing / "items").to_pandas()
    completions = pq.read_table(landing / "completions").to_pandas()
    assert items["phantom"].sum() > 0
    assert (bom["qty_per"] < 0).sum() > 0  # by-products
    assert bom["uom"].notna().sum() > 0  # lines in another unit than the component's
    assert bom["plant_id"].notna().sum() > 0 and bom["plant_id"].isna().sum() > 0
    assert (bom["valid_from"].notna() | bom["valid_to"].notna()).sum() > 0
    assert (bom["scrap_pct"] > 0).sum() > 0
    assert completions["completion_id"].duplicated().sum() > 0
    assert not (warehouse / "quarantine").exists()  # clean data: every completion in the comparison


@pytest.mark.parametrize("script", ["baseline_duckdb_core.py", "baseline_polars.py"])
def test_baseline_gives_the_pipelines_numbers(script: str, landing: Path, warehouse: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_baseline(script, landing, out)
    # 1e-12 relative: far below the rounding unit (0.001 at 3 decimals) for any quantity here
    result = compare.compare(warehouse, out, START, END, rel=1e-12)
    for name in ("consumption", "adjustments"):
        s = result[name]
        assert s["rows_pipeline"] > 1000 and s["rows_other"] == s["rows_pipeline"]
        assert s["mismatched_rows"] == 0, s["examples"]
    assert result["adjustments"]["not_compared"] == ["adjustment_id"]  # the one column C and D leave out
    assert result["consumption"]["not_compared"] == []


def test_a_difference_of_one_rounding_unit_is_found(landing: Path, warehouse: Path, tmp_path: Path) -> None:
    """The comparison is not vacuous: one adjustment off by 0.001 (one unit at 3 decimals) is one mismatch."""
    out = tmp_path / "out"
    run_baseline("baseline_duckdb_core.py", landing, out)
    part = sorted((out / "adjustments").rglob("*.parquet"))[0]
    frame = pq.read_table(part).to_pandas()
    row = frame.index[frame["uom"].isin(["kg", "L", "m"])][0]
    items = pq.read_table(landing / "items").to_pandas().set_index("item_id")
    assert items.loc[frame.at[row, "item_id"], "uom_decimals"] == 3
    frame.loc[row, "qty"] += 0.001
    frame.to_parquet(part, index=False)
    result = compare.compare(warehouse, out, START, END, rel=1e-12)
    assert result["adjustments"]["mismatched_rows"] == 1
    assert result["adjustments"]["qty_differs"] == 1


def test_io_floor_writes_the_pipelines_files_and_rows(landing: Path, warehouse: Path, tmp_path: Path) -> None:
    shape, out = tmp_path / "shape.json", tmp_path / "floor"
    floor = [sys.executable, str(BENCH / "io_floor.py"), "--shape", str(shape)]
    subprocess.run(floor + ["--describe", str(warehouse)], check=True)
    subprocess.run(floor + ["--landing", str(landing), "--out", str(out)], check=True)
    for name in ("consumption", "adjustments", "postings", "variance", "bom_accuracy", "runs"):
        ours = sorted(p.relative_to(warehouse) for p in (warehouse / name).rglob("*.parquet"))
        floors = sorted(p.relative_to(out) for p in (out / name).rglob("*.parquet"))
        assert floors == ours and ours
        a, b = ds.dataset(warehouse / name, partitioning="hive"), ds.dataset(out / name, partitioning="hive")
        assert b.count_rows() == a.count_rows()
        assert b.schema.equals(a.schema)


def test_tree_peak_sums_every_worker(tmp_path: Path) -> None:
    """A parent (~0 MiB of data) with two workers that each hold 96 MiB for 2 s: the tree's summed
    RSS is at least 2 x 96 = 192 MiB, over 3 processes."""
    child = (
        "import multiprocessing as mp, time\n"
        "def hold(_):\n"
        "    data = b'x' * (96 * 2**20)\n"
        "    time.sleep(2.0)\n"
        "    return len(data)\n"
        "if __name__ == '__main__':\n"
        "    with mp.get_context('spawn').Pool(2) as pool:\n"
        "        print(sum(pool.map(hold, range(2))))\n"
    )
    script = tmp_path / "child.py"  # a file: spawned workers import their function from it
    script.write_text(child)
    m = run_measured([sys.executable, str(script)], log_path=tmp_path / "child.log", timeout_s=60)
    assert m.ok
    assert m.peak_tree_processes >= 3  # the parent and its two workers (spawn may add a tracker)
    assert m.peak_tree_rss_bytes >= 192 * MIB
    assert m.as_dict()["peak_tree_rss_bytes"] == m.peak_tree_rss_bytes


# ------------------------------------------------------------ benchmarks/compare_warehouses.py (issues 13.5, 14)

CMP_START = dt.date(2026, 3, 5)
CMP_END = CMP_START + dt.timedelta(days=3)


def backfill(landing: Path, wh: Path) -> Path:
    assert cli.main(["-q", "backfill", "--landing", str(landing), "--warehouse", str(wh), "--start",
                     CMP_START.isoformat(), "--end", CMP_END.isoformat()]) == 0
    return wh


@pytest.fixture(scope="module")
def twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A landing with rows of every quarantine code, and two backfills of it by the CLI."""
    root = tmp_path_factory.mktemp("compare")
    landing = root / "landing"
    assert cli.main(["-q", "generate", "--out", str(landing), "--items", "40", "--completions", "3000", "--days",
                     "4", "--seed", "3", "--start", CMP_START.isoformat(), "--bad-rows"]) == 0
    return landing, backfill(landing, root / "wh1"), backfill(landing, root / "wh2")


def by_name(results: list[compare_warehouses.Result]) -> dict[str, compare_warehouses.Result]:
    return {r.dataset: r for r in results}


def test_two_backfills_of_one_landing_are_identical(twice: tuple[Path, Path, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, wh1, wh2 = twice
    # the comparison has something to hide: the two runs' ids and start times differ
    runs1, runs2 = pq.read_table(wh1 / "runs").to_pandas(), pq.read_table(wh2 / "runs").to_pandas()
    assert runs1["run_id"].iloc[0] != runs2["run_id"].iloc[0]
    assert runs1["started_at"].iloc[0] != runs2["started_at"].iloc[0]
    assert compare_warehouses.main([str(wh1), str(wh2)]) == 0
    out = capsys.readouterr().out
    listed = sorted(p.name for p in wh1.iterdir() if not p.name.startswith("_"))
    assert {"adjustments", "postings", "consumption", "variance", "quarantine", "runs", "landing_manifest",
            "bom_accuracy"} <= set(listed)
    for name in listed:  # one line per dataset, each identical
        assert any(line.startswith(name + " ") and "identical" in line for line in out.splitlines()), out
    results = by_name(compare_warehouses.compare(wh1, wh2))
    assert sorted(results) == listed
    assert all(r.identical for r in compare_warehouses.compare(wh1, wh2, multiset=True))  # the full count too
    assert results["quarantine"].line.startswith("identical")
    quarantined = pq.read_table(wh1 / "quarantine").num_rows
    assert quarantined > 0 and f"({quarantined:,} rows" in results["quarantine"].line


def test_a_changed_input_is_reported(twice: tuple[Path, Path, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """One completion's qty_good + 1: its adjustments differ; counted independently with a pandas merge."""
    landing, wh1, _ = twice
    changed = tmp_path / "landing"
    shutil.copytree(landing, changed)
    part = sorted((changed / "completions").glob("*.parquet"))[0]
    frame = pq.read_table(part).to_pandas()
    row = frame.index[frame["completion_id"].str.match(r"C\d+$") & (frame["qty_good"] >= 1)][0]
    frame.loc[row, "qty_good"] += 1
    frame.to_parquet(part, index=False)
    wh3 = backfill(changed, tmp_path / "wh3")
    assert compare_warehouses.main([str(wh1), str(wh3)]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("adjustments ") and "DIFFERS" in line for line in out.splitlines()), out
    results = by_name(compare_warehouses.compare(wh1, wh3))
    a = pd.read_parquet(wh1 / "adjustments")  # no run-specific column in adjustments: compared whole
    b = pd.read_parquet(wh3 / "adjustments")
    merged = a.astype({c: "str" for c in ("plant_id", "business_date")}).merge(
        b.astype({c: "str" for c in ("plant_id", "business_date")}), how="outer", indicator=True)
    only_a, only_b = int((merged["_merge"] == "left_only").sum()), int((merged["_merge"] == "right_only").sum())
    assert only_a >= 1 and only_b >= 1  # the receipt of the changed completion at least
    assert (results["adjustments"].only_a, results["adjustments"].only_b) == (only_a, only_b)
    assert not results["landing_manifest"].identical  # the file's fingerprint changed
    assert results["quarantine"].identical  # no rejected row changed


def test_each_kind_of_difference_is_reported(twice: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, wh1, _ = twice
    wh = tmp_path / "wh"
    shutil.copytree(wh1, wh)
    # a posting off by 0.001: one row only in each side
    posting = sorted((wh / "postings").rglob("*.parquet"))[0]
    table = pq.read_table(posting)
    frame = table.to_pandas()
    frame.loc[0, "qty_delta"] += 0.001
    pq.write_table(pa.Table.from_pandas(frame, schema=table.schema, preserve_index=False), posting)
    # a variance partition gone: its rows only in A, the partition sets differ
    gone = sorted((wh / "variance").rglob("*.parquet"))[0]
    gone_rows = pq.read_table(gone).num_rows
    shutil.rmtree(gone.parent)
    (wh / "variance" / "notes.txt").write_text("not data")  # a file that is not Parquet
    # a consumption column of another type
    part = sorted((wh / "consumption").rglob("*.parquet"))[0]
    table = pq.read_table(part)
    pq.write_table(table.set_column(table.schema.get_field_index("completions"), "completions",
                                    table["completions"].cast(pa.float64())), part)
    # a dataset only in B
    (wh / "extra").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), wh / "extra" / "part-0.parquet")
    # an adjustments file split into two part files: layout only, still identical
    adjustments = sorted((wh / "adjustments").rglob("*.parquet"))[0]
    table = pq.read_table(adjustments)
    half = table.num_rows // 2
    pq.write_table(table.slice(0, half), adjustments.parent / "part-a.parquet")
    pq.write_table(table.slice(half), adjustments.parent / "part-b.parquet")
    adjustments.unlink()

    # a bom_suggestions file with its rows in reverse order: the same rows, identical
    exceptions = sorted((wh / "bom_suggestions").rglob("*.parquet"))[0]
    table = pq.read_table(exceptions)
    assert table.num_rows > 1
    pq.write_table(table.take(pa.array(range(table.num_rows - 1, -1, -1))), exceptions)

    results = by_name(compare_warehouses.compare(wh1, wh))
    assert results["bom_suggestions"].identical
    assert (results["postings"].only_a, results["postings"].only_b) == (1, 1)
    assert "qty_delta" in " ".join(results["postings"].details)
    assert results["variance"].only_a == gone_rows > 0 and results["variance"].only_b == 0
    assert "partition sets differ" in results["variance"].line
    assert any("not Parquet" in d and "notes.txt" in d for d in results["variance"].details)
    assert "schema differs" in results["consumption"].line
    assert any("completions: int64 vs double" in d for d in results["consumption"].details)
    assert results["extra"].line == "only in B (2 rows)"
    assert results["adjustments"].identical
    assert any("layout only" in d for d in results["adjustments"].details)
    unchanged = {"bom_accuracy", "landing_manifest", "quarantine", "runs", "stock_exceptions"}
    assert all(results[n].identical for n in unchanged & set(results))
    assert compare_warehouses.main([str(wh1), str(wh)]) == 1


def test_run_ids_are_compared_by_rank(twice: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Two warehouses of two runs each (a backfill, then the same backfill again): identical, though all four
    run ids differ; against a warehouse of one run, `runs` differs by one row (rank 2)."""
    landing, wh1, _ = twice
    a = backfill(landing, backfill(landing, tmp_path / "a"))
    b = backfill(landing, backfill(landing, tmp_path / "b"))
    ids = set(pq.read_table(a / "runs").column("run_id").to_pylist()) | set(
        pq.read_table(b / "runs").column("run_id").to_pylist())
    assert len(ids) == 4
    assert all(r.identical for r in compare_warehouses.compare(a, b)), compare_warehouses.compare(a, b)
    runs = by_name(compare_warehouses.compare(wh1, a))["runs"]
    assert (runs.only_a, runs.only_b) == (0, 1)
    assert any(d.startswith("only in B: run_id=2,") for d in runs.details), runs.details
