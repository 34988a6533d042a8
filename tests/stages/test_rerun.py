"""Unchanged re-runs (issue 17.5): a `run --date D` over inputs, configuration, code and warehouse as
they were at the last run of the same command stops early and writes only its `runs` row; any
change makes it a full run that writes what a run without the short-circuit writes.

Every scenario runs side by side on two warehouses over the same landing: one with the
short-circuit (`skip_unchanged_reruns = true`, the default) and one without (false: every run is
a full run, the independent method). Outputs are compared row for row, less the columns that name
the run that wrote a row or when (`tests.support.compare.RUN_COLUMNS`). The landing stays at one path
(the digest holds the landing's path): each test restores it in place from a pristine copy, with
the files' mtimes.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import cli, job
from pipeline.config import Config, Tolerances, load_config
from pipeline.contract.inputs import INPUT_TABLES
from pipeline.stages import rerun
from pipeline.store.warehouse import Warehouse
from tests.intake.test_landing import START, _drop, generated  # noqa: F401  (a fixture)
from tests.store.test_objectstore import endpoint, landings  # noqa: F401  (fixtures)
from tests.support.compare import dataset_outputs

NIGHT = START + dt.timedelta(days=15)  # the landing holds days 1..16; days 1..15 are backfilled
COMPARED = ["consumption", "adjustments", "postings", "variance", "stock_exceptions", "bom_accuracy",
            "bom_suggestions", "quarantine"]


@pytest.fixture(scope="module")
def base(generated: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:  # noqa: F811
    """The landing after day 16 (and a pristine copy), two warehouses backfilled over days 1..15
    and then run for day 16 (`run --date`), one with the short-circuit and one without."""
    root = tmp_path_factory.mktemp("rerun")
    landing_dir = root / "landing"
    _drop(generated, landing_dir, NIGHT)
    shutil.copytree(landing_dir, root / "pristine")
    paths = {"root": root, "landing": landing_dir, "pristine": root / "pristine"}
    for name, skip in (("skip", True), ("full", False)):
        config = _config(landing_dir, root / f"wh-{name}", skip)
        job.backfill(config, START, NIGHT - dt.timedelta(days=1))
        job.run_dates(config, [NIGHT])
        paths[name] = root / f"wh-{name}"
    return paths


@pytest.fixture
def world(base: dict[str, Path], tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Copies of both warehouses for one test; the landing restored in place afterwards."""
    out = {"landing": base["landing"], "skip": tmp_path / "wh-skip", "full": tmp_path / "wh-full"}
    shutil.copytree(base["skip"], out["skip"])
    shutil.copytree(base["full"], out["full"])
    yield out
    shutil.rmtree(base["landing"])
    shutil.copytree(base["pristine"], base["landing"])  # copy2: the mtimes the manifest knows


def _config(landing_dir: Path, warehouse: Path, skip: bool, **overrides: object) -> Config:
    return load_config(None, landing=str(landing_dir), warehouse=str(warehouse), workers=1, bucket_rows=1500,
                       skip_unchanged_reruns=skip, **overrides)


def _both(world: dict[str, Path], **overrides: object) -> tuple[Config, Config]:
    return (_config(world["landing"], world["skip"], True, **overrides),
            _config(world["landing"], world["full"], False, **overrides))


def _files(warehouse: Path) -> dict[str, bytes]:
    return {p.relative_to(warehouse).as_posix(): p.read_bytes() for p in sorted(warehouse.rglob("*")) if p.is_file()}


def _runs(config: Config) -> pd.DataFrame:
    return Warehouse(config.warehouse).read("runs").sort_values("finished_at").reset_index(drop=True)


def _same(a: Config, b: Config) -> None:
    left, right = dataset_outputs(a, COMPARED), dataset_outputs(b, COMPARED)
    for name in COMPARED:
        pd.testing.assert_frame_equal(left[name], right[name], obj=name)
    # the runs of both record the same dates processed and the same inputs
    ra, rb = _runs(a), _runs(b)
    for column in ("command", "plants", "business_dates", "input_fingerprints", "master_fingerprints",
                   "rows_read", "rows_quarantined"):
        assert [_plain(v) for v in ra[column]] == [_plain(v) for v in rb[column]], column


def _plain(value: object) -> object:
    if value is None or isinstance(value, str):
        return value
    try:
        return [tuple(v) if isinstance(v, tuple) else str(v) for v in value]  # type: ignore[attr-defined]
    except TypeError:
        return None if pd.isna(value) else value  # type: ignore[call-overload]


def _is_skip(result: job.RunResult) -> bool:
    return result.unchanged_since is not None


# ---------------------------------------------------------------------------------- the short-circuit


def test_an_unchanged_rerun_stops_early_and_writes_only_its_runs_row(
        world: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    skip, full = _both(world)
    before = _files(world["skip"])
    previous = _runs(skip).iloc[-1]
    assert isinstance(previous["inputs_digest"], str) and len(previous["inputs_digest"]) == 32
    args = ["run", "--landing", str(world["landing"]), "--warehouse", str(world["skip"]), "--date", f"{NIGHT}"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and f"unchanged since run {previous['run_id']}" in out[0]

    after = _files(world["skip"])
    added = sorted(set(after) - set(before))
    assert len(added) == 1 and added[0].startswith("runs/run-")
    assert set(before) <= set(after) and all(after[name] == data for name, data in before.items())
    row = _runs(skip).iloc[-1]
    assert row["run_id"] != previous["run_id"] and row["status"] == "ok" and row["command"] == "run"
    assert row["message"] == f"unchanged since run {previous['run_id']}"
    assert list(row["business_dates"]) == [] and [pd.Timestamp(d).date() for d in row["requested_dates"]] == [NIGHT]
    assert sorted(row["plants"]) == sorted(previous["plants"]) == ["P1", "P2"]
    assert dict(row["rows_read"]) == {t: 0 for t in INPUT_TABLES}
    assert dict(row["rows_written"]) == {"runs": 1}
    assert row["inputs_digest"] == previous["inputs_digest"]
    assert row["input_fingerprints"] == "{}" and row["master_fingerprints"] is None
    assert pd.isna(row["watermark_recorded_at"])

    # a full run instead (no short-circuit) writes the same outputs: a re-run recomputes nothing new
    full_result = job.run_dates(full, [NIGHT])
    assert not _is_skip(full_result) and full_result.business_dates == [NIGHT]
    left, right = dataset_outputs(skip, COMPARED), dataset_outputs(full, COMPARED)
    for name in COMPARED:
        pd.testing.assert_frame_equal(left[name], right[name], obj=name)

    # and again: the last run is now the one that stopped early, with the same key and digest
    again = job.run_dates(skip, [NIGHT])
    assert again.unchanged_since == row["run_id"] and again.rows_written == {"runs": 1}
    # a dry run says so and writes nothing
    count = len(_files(world["skip"]))
    dry = job.run_dates(skip, [NIGHT], dry_run=True)
    assert _is_skip(dry) and dry.dry_run and len(_files(world["skip"])) == count
    # late data after the runs that stopped early is judged against the run that processed the date
    _new_completion(world["landing"], NIGHT - dt.timedelta(days=2))
    late = job.run_dates(skip, [NIGHT])
    assert not _is_skip(late) and NIGHT - dt.timedelta(days=2) in late.business_dates


def test_a_touched_but_identical_file_still_stops_early_and_refreshes_the_manifest(world: dict[str, Path]) -> None:
    skip, full = _both(world)
    touched = world["landing"] / "completions" / f"{NIGHT - dt.timedelta(days=3):%Y-%m-%d}.parquet"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    before = _files(world["skip"])
    result = job.run_dates(skip, [NIGHT])
    assert _is_skip(result)
    after = _files(world["skip"])
    changed = sorted(name for name in set(before) | set(after) if before.get(name) != after.get(name))
    assert [n.split("/")[0] for n in changed] == ["landing_manifest", "landing_manifest", "runs"]
    manifest = Warehouse(skip.warehouse).read("landing_manifest")
    entry = manifest[manifest["source"] == touched.relative_to(world["landing"]).as_posix()]
    assert entry["mtime_ns"].tolist() == [touched.stat().st_mtime_ns]
    assert job.run_dates(skip, [NIGHT]).unchanged_since == result.run_id  # not hashed again
    job.run_dates(full, [NIGHT])
    left, right = dataset_outputs(skip, COMPARED), dataset_outputs(full, COMPARED)
    for name in COMPARED:
        pd.testing.assert_frame_equal(left[name], right[name], obj=name)


# ---------------------------------------------------------------------------------- every change runs


def _new_completion(landing_dir: Path, day: dt.date) -> None:
    """A new file: a copy of one valid completion of `day`, with a new id and 5 more units."""
    frame = pq.read_table(landing_dir / "completions" / f"{day:%Y-%m-%d}.parquet").to_pandas()
    row = frame[frame["completion_id"].notna() & frame["plant_id"].notna()].iloc[[0]].copy()
    row["completion_id"] = "LATE-NEW-1"
    row["qty_good"] = row["qty_good"] + 5
    row.to_parquet(landing_dir / "completions" / "late-new.parquet", index=False)


def _change_file(landing_dir: Path) -> None:
    """An old movement file of the look-back rewritten with one quantity changed."""
    path = landing_dir / "movements" / f"{NIGHT - dt.timedelta(days=4):%Y-%m-%d}.parquet"
    rows = pq.read_table(path).to_pandas()
    rows.loc[rows.index[0], "qty"] = rows["qty"].iloc[0] + 3
    rows.to_parquet(path, index=False)


def _change_bom(landing_dir: Path) -> None:
    """One BOM line's quantity per parent doubled (its files rewritten)."""
    for path in sorted((landing_dir / "bom").glob("*")):
        if path.suffix == ".parquet":
            rows = pq.read_table(path).to_pandas()
            rows.loc[rows.index[0], "qty_per"] = rows["qty_per"].iloc[0] * 2
            rows.to_parquet(path, index=False)
            return
        rows = pd.read_csv(path, dtype=str)
        rows.loc[rows.index[0], "qty_per"] = str(float(rows["qty_per"].iloc[0]) * 2)
        rows.to_csv(path, index=False)
        return
    raise AssertionError("no BOM file")


@pytest.mark.parametrize("change", ["new completion file", "changed file", "changed BOM", "tolerance",
                                    "other date", "one plant after all", "backfill in between",
                                    "another run in between"])
def test_every_change_makes_a_full_run_that_writes_what_a_run_without_the_short_circuit_writes(
        world: dict[str, Path], change: str) -> None:
    overrides: dict[str, object] = {}
    dates, plants = [NIGHT], None
    if change == "new completion file":
        _new_completion(world["landing"], NIGHT)
    elif change == "changed file":
        _change_file(world["landing"])
    elif change == "changed BOM":
        _change_bom(world["landing"])
    elif change == "tolerance":
        overrides["tolerances"] = Tolerances(abs_qty=0.0, abs_value=10.0, pct=2.0)
    elif change == "other date":
        dates = [NIGHT - dt.timedelta(days=1)]
    elif change == "one plant after all":
        plants = ["P1"]
    skip, full = _both(world, **overrides)
    if change == "backfill in between":
        for config in (skip, full):
            job.backfill(config, NIGHT - dt.timedelta(days=2), NIGHT - dt.timedelta(days=1))
    elif change == "another run in between":
        for config in (skip, full):
            job.run_dates(config, [NIGHT - dt.timedelta(days=1)], plants=["P2"])
    results = [job.run_dates(config, dates, plants=plants) for config in (skip, full)]
    assert not any(_is_skip(r) for r in results)
    assert results[0].business_dates == results[1].business_dates
    assert results[0].rows_written == results[1].rows_written
    _same(skip, full)
    # the full run recorded its digest: the same run once more stops early
    assert _is_skip(job.run_dates(skip, dates, plants=plants))


def test_never_skipped_without_pruning_or_with_master_data_reprocessing(world: dict[str, Path]) -> None:
    for overrides in ({"prune_landing": False}, {"reprocess_master_data": True}):
        skip, _ = _both(world, **overrides)
        assert not rerun.eligible(skip)
        assert not _is_skip(job.run_dates(skip, [NIGHT]))
        assert pd.isna(_runs(skip).iloc[-1]["inputs_digest"])  # a run that may not stop early records none
    # a SQL source has no landing bytes to compare: never (checked before anything is read)
    sql = load_config(None, landing=str(world["landing"]), warehouse=str(world["skip"]),
                      sql={"url": "postgresql://127.0.0.1:5432/test"})
    assert not rerun.eligible(sql) and rerun.check(sql, [NIGHT], None, "run", True) is None
    # nor a backfill, the command or the DAG's (`run_dates(command="backfill")`): it asks to recompute
    assert rerun.check(_config(world["landing"], world["skip"], True), [NIGHT], None, "backfill", False) is None
    # nor after such a run (its digest is null), until a run records one
    skip, _ = _both(world)
    assert not _is_skip(job.run_dates(skip, [NIGHT]))
    assert _is_skip(job.run_dates(skip, [NIGHT]))


def test_a_warehouse_from_before_the_column_still_reads_and_runs_in_full_once(world: dict[str, Path]) -> None:
    skip, _ = _both(world)
    runs_dir = world["skip"] / "runs"
    for path in runs_dir.glob("*.parquet"):  # as an older version wrote them: no inputs_digest
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["inputs_digest"]), path)
    assert "inputs_digest" not in pq.read_schema(next(runs_dir.glob("*.parquet"))).names
    runs = Warehouse(skip.warehouse).read("runs")
    assert len(runs) == 2 and runs["inputs_digest"].isna().all()  # the backfill and the night, read as null
    first = job.run_dates(skip, [NIGHT])
    assert not _is_skip(first) and first.business_dates == [NIGHT]
    assert _is_skip(job.run_dates(skip, [NIGHT]))
    assert pa.types.is_string(pq.read_schema(runs_dir / f"run-{first.run_id}.parquet").field("inputs_digest").type)


# ---------------------------------------------------------------------------------- on an object store


def test_an_unchanged_rerun_stops_early_on_an_s3_warehouse(endpoint: str, landings: tuple[Path, Path]) -> None:  # noqa: F811
    """The same check and commit on an s3:// warehouse (moto's S3 emulation on loopback, as in
    tests/test_objectstore.py): the re-run adds its `runs` object and changes no other."""
    import pyarrow.fs as pafs

    from tests.store.test_objectstore import DATES, config, new_bucket

    _, b = landings
    uri = f"s3://{new_bucket(endpoint)}/warehouse"
    first = job.run_dates(config(b, uri), DATES[-1:])
    warehouse = Warehouse(uri)

    def objects() -> dict[str, bytes]:
        infos = warehouse.filesystem.get_file_info(pafs.FileSelector(warehouse.root, recursive=True))
        out = {}
        for info in infos:
            if info.type == pafs.FileType.File:
                with warehouse.filesystem.open_input_stream(info.path) as stream:
                    out[info.path] = stream.read()
        return out

    before = objects()
    again = job.run_dates(config(b, uri), DATES[-1:])
    assert again.unchanged_since == first.run_id and again.rows_written == {"runs": 1}
    after = objects()
    assert sorted(set(after) - set(before)) == [f"{warehouse.root}/runs/run-{again.run_id}.parquet"]
    assert all(after[name] == data for name, data in before.items())
