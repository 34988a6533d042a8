"""Landing pruning (issue 17.1, 17.2): a run that reads only the landing files it needs writes
exactly what a run that reads every file writes. Generated data is dropped the way an MES drop
does it (one file per day), then nights are run twice, side by side: on a warehouse with pruning
and on one without; every output must be the same, row for row. The expected values are the full
reads' outputs: an independent method (no file is left out), not numbers copied from the code.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import errors, job
from pipeline.config import load_config
from pipeline.intake import landing, scan
from pipeline.stages import read
from pipeline.store.warehouse import Warehouse
from pipeline.tools.generate import generate_landing
from tests.support.compare import run_both, same_outputs

START = dt.date(2026, 1, 1)
DAYS = 24
FIRST_NIGHTS = 16  # the landing holds days 1..16 when the warehouses are backfilled
# columns that name the run that wrote a row, or when: they differ between any two runs
DAILY = ("completions", "movements", "stock_counts")
EVENT = {"completions": "completed_at", "movements": "moved_at", "stock_counts": "counted_at"}


def _day(day: dt.date) -> str:
    return f"{day:%Y-%m-%d}"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated landing (two plants in their own zones, bad rows included), its completions,
    movements and counts split into one file per UTC day of their event time; rows without a
    readable time go to a file of their own."""
    root = tmp_path_factory.mktemp("generated")
    generate_landing(root, items=40, completions=4000, days=DAYS, seed=11, plants=2, bad_rows=True)
    for table in DAILY:
        frame = pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / table).glob("*.parquet"))],
                          ignore_index=True)
        for p in (root / table).glob("*"):
            p.unlink()
        when = pd.to_datetime(frame[EVENT[table]], utc=True, errors="coerce")
        day = when.dt.strftime("%Y-%m-%d").fillna("undated")
        for name, rows in frame.groupby(day.to_numpy(), sort=True):
            rows.to_parquet(root / table / f"{name}.parquet", index=False)
    return root


def _drop(generated: Path, landing_dir: Path, last: dt.date) -> None:
    """The landing as it stands after day `last`: master data, the undated files and every daily file
    up to `last` (files already there are left as they are)."""
    for table_dir in generated.iterdir():
        target = landing_dir / table_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for path in table_dir.iterdir():
            stem = path.stem
            dated = table_dir.name in DAILY and stem != "undated"
            if dated and dt.date.fromisoformat(stem) > last:
                continue
            if not (target / path.name).exists():
                shutil.copy2(path, target / path.name)


def _config(root: Path, landing_dir: Path, prune: bool):  # type: ignore[no-untyped-def]
    name = "pruned" if prune else "full"
    return load_config(None, landing=str(landing_dir), warehouse=str(root / f"warehouse-{name}"),
                       prune_landing=prune, workers=1, bucket_rows=1500)


def _late_files(generated: Path, landing_dir: Path, recorded: str) -> None:
    """Late data recorded at `recorded`, each in a new file of its own: a quantity changed on day 14;
    an id of day 15 moved to 20 December (before the data) (the file holds nothing in the look-back: only the id says it
    must be read, and the id's day-15 postings must be reversed); an id of day 4 (long settled)
    moved into day 15; and a movement of day 14 sent again, different, dated 19 December (two rows with
    one id: both are DUPLICATE_ID)."""
    def valid(day: int, table: str = "completions") -> pd.DataFrame:
        frame = pq.read_table(generated / table / f"2026-01-{day:02d}.parquet").to_pandas()
        key = "completion_id" if table == "completions" else "movement_id"
        return frame[frame[key].notna()].sort_values(key)

    changed, moved_out, moved_in = valid(14).iloc[[0]].copy(), valid(15).iloc[[1]].copy(), valid(4).iloc[[2]].copy()
    changed["qty_good"] = changed["qty_good"] + 7
    moved_out["completed_at"] = moved_out["completed_at"] - pd.Timedelta(days=26)
    moved_in["completed_at"] = moved_in["completed_at"] + pd.Timedelta(days=11)
    for name, rows in (("changed", changed), ("moved-out", moved_out), ("moved-in", moved_in)):
        rows = rows.assign(recorded_at=pd.Timestamp(recorded))
        rows.to_parquet(landing_dir / "completions" / f"late-{name}.parquet", index=False)
    resent = valid(14, "movements").iloc[[0]].copy()
    resent["qty"] = resent["qty"] + 1
    resent["moved_at"] = resent["moved_at"] - pd.Timedelta(days=26)
    resent.to_parquet(landing_dir / "movements" / "late-resent.parquet", index=False)


def test_a_pruned_night_writes_what_a_full_read_writes(generated: Path, tmp_path: Path) -> None:
    landing_dir = tmp_path / "landing"
    full, pruned = _config(tmp_path, landing_dir, False), _config(tmp_path, landing_dir, True)
    _drop(generated, landing_dir, START + dt.timedelta(days=FIRST_NIGHTS - 1))
    for config in (full, pruned):
        job.backfill(config, START, START + dt.timedelta(days=FIRST_NIGHTS - 1))
    same_outputs(full, pruned)

    # night 17: the day's files arrive
    night = START + dt.timedelta(days=FIRST_NIGHTS)
    _drop(generated, landing_dir, night)
    run_both(full, pruned, [night])
    result = read.read_inputs(pruned, [night])
    assert result.files_skipped["completions"] > 0 and result.files_skipped["movements"] > 0

    # night 18: late corrections in a new file, one of them moving an id out of the look-back
    night += dt.timedelta(days=1)
    _drop(generated, landing_dir, night)
    _late_files(generated, landing_dir, f"{_day(night)}T03:00:00Z")
    run_both(full, pruned, [night])
    # the id moved to day 3 is no longer produced on day 15: that day was reprocessed (late data)
    runs = Warehouse(pruned.warehouse).read("runs").sort_values("started_at")
    assert dt.date(2026, 1, 15) in list(runs["business_dates"].iloc[-1])
    quarantine = Warehouse(pruned.warehouse).read("quarantine")
    assert (quarantine["error_code"] == "DUPLICATE_ID").any()

    # night 19: an old file changed (a movement's quantity), the day's files arrive
    night += dt.timedelta(days=1)
    _drop(generated, landing_dir, night)
    old = landing_dir / "movements" / "2026-01-16.parquet"
    rows = pq.read_table(old).to_pandas()
    rows.loc[rows.index[0], "qty"] = rows["qty"].iloc[0] + 3
    rows.to_parquet(old, index=False)
    run_both(full, pruned, [night])
    runs = Warehouse(pruned.warehouse).read("runs").sort_values("started_at")
    assert dt.date(2026, 1, 16) in list(runs["business_dates"].iloc[-1])  # the changed file is late data

    # a re-run of an old date: counts after it exist, and their windows reach back into it
    run_both(full, pruned, [dt.date(2026, 1, 9)])

    # one plant (17.2): only its rows are read, and it writes what a full read of every plant writes
    run_both(full, pruned, [night], plants=["P2"])


def test_a_manifest_describes_each_file_once_and_is_published_with_the_run(generated: Path, tmp_path: Path) -> None:
    landing_dir = tmp_path / "landing"
    _drop(generated, landing_dir, START + dt.timedelta(days=9))
    config = _config(tmp_path, landing_dir, True)
    warehouse = Warehouse(config.warehouse)
    first = landing.survey(scan.landing_files(landing_dir), warehouse)
    described = {e["source"] for e in first.entries}
    # 10 daily files of each described table, plus their undated files
    assert len([s for s in described if str(s).startswith("completions/2026-")]) == 10
    assert first.fresh == described
    job.run_dates(config, [START + dt.timedelta(days=9)], dry_run=True)
    assert landing.load(warehouse)[0] == {}  # a dry run publishes nothing
    job.run_dates(config, [START + dt.timedelta(days=9)])
    again = landing.survey(scan.landing_files(landing_dir), warehouse)
    assert again.fresh == set()  # nothing opened again
    one = landing_dir / "completions" / "2026-01-05.parquet"
    table = pq.read_table(one)
    pq.write_table(table.slice(1), one)
    assert landing.survey(scan.landing_files(landing_dir), warehouse).fresh == {"completions/2026-01-05.parquet"}


def test_a_file_that_cannot_be_read_fails_the_run_with_its_name(generated: Path, tmp_path: Path) -> None:
    landing_dir = tmp_path / "landing"
    _drop(generated, landing_dir, START + dt.timedelta(days=4))
    (landing_dir / "movements" / "2026-01-09.parquet").write_bytes(b"not parquet")
    with pytest.raises(errors.SourceError, match=r"2026-01-09\.parquet"):
        job.run_dates(_config(tmp_path, landing_dir, True), [START + dt.timedelta(days=4)])


def test_hive_date_folders_are_read(tmp_path: Path) -> None:
    from tests.support.landing import FG_AND_RM, completion, make_landing, read, run

    items = FG_AND_RM
    landing_dir = make_landing(tmp_path, items=items, bom=[{"parent_item_id": "FG", "component_item_id": "RM",
                                                            "qty_per": 2}],
                               completions=[completion("C1", "FG", 4)])
    folder = landing_dir / "completions" / "date=2026-03-02"
    folder.mkdir()
    (landing_dir / "completions" / "part.csv").rename(folder / "part.csv")
    (landing_dir / "completions" / "extra.csv").write_text("completion_id,plant_id,location_id,item_id,qty_good,"
                                                          "completed_at\nC2,P1,L1,FG,1,2026-03-02T11:00:00Z\n")
    listed = scan.landing_files(landing_dir)["completions"]
    assert [s for s, _ in listed] == ["completions/extra.csv", "completions/date=2026-03-02/part.csv"]
    run(tmp_path, landing_dir, ["2026-03-02"])
    usage = read(tmp_path, "consumption")
    # 4 + 1 FG made, 2 kg of RM each: 10 kg
    assert usage.loc[usage["component_item_id"] == "RM", "qty"].sum() == pytest.approx(10.0)


def test_planning_knows_the_plants_and_zones_of_a_full_read_without_one(
        generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    landing_dir = tmp_path / "landing"
    _drop(generated, landing_dir, START + dt.timedelta(days=DAYS - 1))
    config = _config(tmp_path, landing_dir, True)
    full = read.read_inputs(config).plants  # the independent method: every file read
    job.run_dates(config, [START + dt.timedelta(days=DAYS - 1)])  # the manifest is published
    opened: list[str] = []
    real = scan.read_file
    monkeypatch.setattr(scan, "read_file", lambda path: opened.append(str(path)) or real(path))
    planned = read.known_plants(config).plants
    pd.testing.assert_frame_equal(planned.reset_index(drop=True), full.reset_index(drop=True))
    assert set(planned["plant_id"]) == {"P1", "P2"}
    assert not [p for p in opened if any(f"/{t}/" in p for t in DAILY)]  # no flow file read whole


def test_a_plant_run_reads_only_that_plants_rows(tmp_path: Path) -> None:
    """--plant P2: rows of P1 are dropped in the scan; ' P2 ' is P2 once stripped, and a row without
    a plant is kept (every run quarantines it)."""
    from tests.support.landing import FG_AND_RM, completion, make_landing

    items = FG_AND_RM
    rows = [completion("C1", "FG", 4), completion("C2", "FG", 3, plant="P2"),
            completion("C3", "FG", 2, plant=" P2 "), completion("C4", "FG", 1, plant=""),
            completion("C5", "FG", 5, plant="P1")]
    landing_dir = make_landing(tmp_path, items=items,
                               bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 2}],
                               completions=rows)
    config = load_config(None, landing=str(landing_dir), warehouse=str(tmp_path / "wh"))
    stats = read.read_inputs(config, [dt.date(2026, 3, 2)], plants=["P2"]).inputs.stats["completions"]
    # read: C2, C3 (P2 once stripped) and C4 (no plant); C1 and C5 are P1's
    assert stats.read == 3
    job.run_dates(config, [dt.date(2026, 3, 2)], plants=["P2"])
    usage = Warehouse(config.warehouse).read("consumption")
    assert set(usage["plant_id"]) == {"P2"}
    # (3 + 2) FG made at P2, 2 kg of RM each: 10 kg
    assert usage.loc[usage["component_item_id"] == "RM", "qty"].sum() == pytest.approx(10.0)
    quarantine = Warehouse(config.warehouse).read("quarantine")
    assert list(quarantine["source_key"]) == ["C4"]  # the row without a plant, as a full read has it


@pytest.mark.parametrize("prune", [True, False])
def test_a_plant_run_sees_a_correction_that_moved_its_completion_to_another_plant(tmp_path: Path, prune: bool) -> None:
    """C1 was made at P2 (file a.csv, P2 rows only); a later version, recorded the next day in a file
    of P1 rows only, says it was made at P1. A --plant P2 run must open that file too (the id is
    P2's), so C1 is no longer P2's: what a run of every plant says for P2."""
    from tests.support.landing import FG_AND_RM, completion, make_landing, write_table

    items = FG_AND_RM
    first = [{**completion("C1", "FG", 4, plant="P2"), "recorded_at": "2026-03-02T10:00:00Z"},
             {**completion("C2", "FG", 3, plant="P2"), "recorded_at": "2026-03-02T10:00:00Z"}]
    landing_dir = make_landing(tmp_path, items=items,
                               bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 2}],
                               completions=first)
    (landing_dir / "completions" / "part.csv").rename(landing_dir / "completions" / "a.csv")
    moved = [{**completion("C1", "FG", 4, plant="P1"), "recorded_at": "2026-03-03T08:00:00Z"}]
    write_table(landing_dir, "completions", moved, name="b.csv")
    day = dt.date(2026, 3, 2)
    for name, plants in (("one", ["P2"]), ("all", None)):
        config = load_config(None, landing=str(landing_dir), warehouse=str(tmp_path / name), prune_landing=prune,
                             skip_unchanged_reruns=False)
        job.run_dates(config, [day], plants=plants)
    one = Warehouse(str(tmp_path / "one")).read("consumption")
    every = Warehouse(str(tmp_path / "all")).read("consumption")
    # P2 made only C2: 3 FG x 2 kg = 6 kg of RM (C1's 4 FG are P1's now: 8 kg there)
    assert one.loc[one["component_item_id"] == "RM", "qty"].sum() == pytest.approx(6.0)
    p2 = every[every["plant_id"] == "P2"]
    assert p2.loc[p2["component_item_id"] == "RM", "qty"].sum() == pytest.approx(6.0)
    p1 = every[every["plant_id"] == "P1"]
    assert p1.loc[p1["component_item_id"] == "RM", "qty"].sum() == pytest.approx(8.0)
