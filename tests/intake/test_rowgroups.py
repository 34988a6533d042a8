"""Landing pruning by row group (issue 17.1): a Parquet file is described one row group at a time,
and a run reads only the row groups it needs, with the rules it has for files. A landing that
writes a few large Parquet files (one for the first days, a growing history file, Hive folders)
is run night after night twice, side by side: with pruning and with `prune_landing = false`; the
outputs must be the same, row for row (the full read is the independent method: no row is left
out). A small case is worked by hand: which row groups a night needs, and what it writes.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import job
from pipeline.config import load_config
from pipeline.contract import inputs, schemas
from pipeline.intake import landing, scan
from pipeline.store.warehouse import Warehouse
from pipeline.tools.generate import generate_landing
from tests.support.compare import run_both, same_outputs
from tests.support.landing import FG_AND_RM, make_landing


def _config(root: Path, landing_dir: Path, prune: bool, **extra: object):  # type: ignore[no-untyped-def]
    name = "pruned" if prune else "full"
    return load_config(None, landing=str(landing_dir), warehouse=str(root / f"warehouse-{name}"),
                       prune_landing=prune, workers=1, **extra)


def _last_rows_read(config) -> dict[str, int]:  # type: ignore[no-untyped-def]
    runs = Warehouse(config.warehouse).read("runs").sort_values("started_at")
    return dict(runs["rows_read"].iloc[-1])


# ------------------------------------------------------------------------------------ worked by hand

ITEMS = FG_AND_RM
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 2}]
HISTORY = "completions/history.parquet"


def _row(cid: str | None, qty: float, at: str, recorded: str | None = None, plant: str = "P1",
         scrap: float = 0) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": plant, "location_id": "L1", "item_id": "FG", "qty_good": qty,
            "qty_scrap": scrap, "completed_at": at, "recorded_at": recorded}


# a growing history file, two rows a row group, its timestamps as text (as some MES exports write them)
FIRST = [
    _row("C1", 4, "2026-03-01T10:00:00Z", "2026-03-01T10:05:00Z"),
    _row("C2", 1, "2026-03-01T11:00:00+01:00", plant=" P1 "),  # 10:00 UTC; plant P1 once stripped
    _row("C3", 2, "2026-03-05T09:00:00Z"),
    _row("C4", 3, "2026-03-05T12:00:00Z"),
    _row("C5", 5, "2026-03-10T08:00:00Z"),
    _row("C1", 6, "2026-03-01T10:00:00Z", "2026-03-10T09:00:00Z"),  # C1 corrected, on 10 March
    _row("C6", 7, "2026-03-12T08:00:00Z"),
    _row("C7", 1, "2026-03-13T09:00:00Z"),
]
LATER = [
    _row(None, 1, "2026-03-14T09:00:00Z"),  # no id: INVALID, known by its line (10) in the file
    _row("C3", 9, "2026-03-14T07:00:00Z", "2026-03-14T08:00:00Z"),  # C3 moved from 5 to 14 March, 9 made
    _row("C5", 0, "2026-03-10T08:00:00Z", "2026-03-14T08:00:00Z"),  # C5 cancelled
    _row("C8", 2, "2026-03-14T10:00:00Z"),
    _row("C7", 1, "2026-02-20T10:00:00Z", "2026-03-14T08:00:00Z"),  # C7 moved out of every span: 20 Feb
]


def _write_history(landing_dir: Path, rows: list[dict[str, object]]) -> None:
    frame = pd.DataFrame(rows).astype({"completed_at": "str", "recorded_at": "object"})
    table = pa.Table.from_pandas(frame, preserve_index=False,
                                 schema=pa.schema([("completion_id", pa.string()), ("plant_id", pa.string()),
                                                   ("location_id", pa.string()), ("item_id", pa.string()),
                                                   ("qty_good", pa.float64()), ("qty_scrap", pa.float64()),
                                                   ("completed_at", pa.string()), ("recorded_at", pa.string())]))
    pq.write_table(table, landing_dir / HISTORY, row_group_size=2)


def _rm(config, day: str) -> float:  # type: ignore[no-untyped-def]
    usage = Warehouse(config.warehouse).read("consumption")
    rows = usage[(usage["component_item_id"] == "RM") & (usage["business_date"] == pd.Timestamp(day))]
    return float(rows["qty"].sum())


def test_a_night_reads_the_row_groups_it_needs_worked_by_hand(tmp_path: Path) -> None:
    landing_dir = make_landing(tmp_path, items=ITEMS, bom=BOM)  # completions/part.csv: a header, no rows
    _write_history(landing_dir, FIRST)
    full, pruned = _config(tmp_path, landing_dir, False), _config(tmp_path, landing_dir, True)

    # the pieces: four row groups of the Parquet file, and the CSV file whole
    manifest = landing.survey(scan.landing_files(landing_dir), Warehouse(pruned.warehouse))
    pieces = sorted((e for e in manifest.entries if e["source"] == HISTORY), key=lambda e: e["row_group"])
    assert [(e["row_group"], e["row_groups"], e["rows"]) for e in pieces] == [(0, 4, 2), (1, 4, 2), (2, 4, 2),
                                                                               (3, 4, 2)]
    csv = [e for e in manifest.entries if e["source"] == "completions/part.csv"]
    assert [(e["row_group"], e["row_groups"], e["rows"]) for e in csv] == [(None, None, 0)]
    utc = "UTC"
    # row group 0: C1 at 10:00Z and C2 at 11:00+01:00 = 10:00Z; ' P1 ' is P1; C2 has no recorded_at
    assert pieces[0]["min_event"] == pieces[0]["max_event"] == pd.Timestamp("2026-03-01 10:00", tz=utc)
    assert pieces[0]["min_version"] == pd.Timestamp("2026-03-01 10:00", tz=utc)
    assert pieces[0]["max_version"] == pd.Timestamp("2026-03-01 10:05", tz=utc)
    assert (pieces[0]["min_id"], pieces[0]["max_id"], pieces[0]["plants"]) == ("C1", "C2", ["P1"])
    # row group 2: C5 on 10 March and C1's correction (dated 1 March, recorded 10 March 09:00)
    assert (pieces[2]["min_event"], pieces[2]["max_event"]) == (pd.Timestamp("2026-03-01 10:00", tz=utc),
                                                                pd.Timestamp("2026-03-10 08:00", tz=utc))
    assert (pieces[2]["min_id"], pieces[2]["max_id"]) == ("C1", "C5")

    for config in (full, pruned):
        job.backfill(config, dt.date(2026, 3, 1), dt.date(2026, 3, 12))  # a plant's first run reads all

    # night of 13 March, look-back 7: dates 6..13 March, in UTC 5 March 00:00 .. 15 March 00:00.
    # Row group 0 (1 March) is outside; 1 (5 March), 2 (1..10 March) and 3 (12, 13 March) meet it.
    # The closure: row group 0's ids C1..C2 meet row group 2's, but its newest version (1 March
    # 10:05) is older than the oldest version read (5 March 09:00): none of its rows can win.
    warehouse = Warehouse(pruned.warehouse)
    manifest = landing.survey(scan.landing_files(landing_dir), warehouse)
    assert manifest.fresh == set()  # described by the backfill, unchanged since
    lo, hi = pd.Timestamp("2026-03-05", tz=utc), pd.Timestamp("2026-03-15", tz=utc)
    choice = landing.choose(manifest, scan.landing_files(landing_dir), lo, hi, None)
    assert choice.row_groups == {HISTORY: [1, 2, 3]}
    assert choice.pieces_read["completions"] == 3 and choice.pieces_skipped["completions"] == 2  # RG 0, the CSV
    for config in (full, pruned):
        job.run_dates(config, [dt.date(2026, 3, 13)])
    assert _last_rows_read(pruned)["completions"] == 6  # row groups 1..3
    assert _last_rows_read(full)["completions"] == 8
    same_outputs(full, pruned)
    assert _rm(pruned, "2026-03-13") == pytest.approx(2.0)  # C7: 1 FG, 2 kg each

    # night of 14 March: the history file grows by row groups 4 (a row without an id; C3 moved to
    # 14 March), 5 (C5 cancelled; C8) and 6 (C7 moved to 20 February); it changed, so it is
    # described again. Dates 7..14 March: 6 .. 16 March in UTC. Row groups 2..5 meet it; 6 does
    # not, but its C7 is an id of row group 3 and its version (14 March) is newer than the oldest
    # read (10 March 08:00, C5 in row group 2): it is read, and C7 leaves 13 March. Row groups 0
    # (1 March) and 1 (5 March, newest version 5 March 12:00) are older than 10 March 08:00.
    _write_history(landing_dir, FIRST + LATER)
    manifest = landing.survey(scan.landing_files(landing_dir), warehouse)
    assert manifest.fresh == {HISTORY}
    choice = landing.choose(manifest, scan.landing_files(landing_dir), pd.Timestamp("2026-03-06", tz=utc),
                            pd.Timestamp("2026-03-16", tz=utc), None)
    assert choice.row_groups == {HISTORY: [2, 3, 4, 5, 6]}
    for config in (full, pruned):
        job.run_dates(config, [dt.date(2026, 3, 14)])
    assert _last_rows_read(pruned)["completions"] == 9  # 2 + 2 + 2 + 2 + 1
    assert _last_rows_read(full)["completions"] == 13
    same_outputs(full, pruned)
    # by hand: 1 March keeps C1 (6, its correction) + C2 (1) = 7 FG = 14 kg; 5 March (outside the
    # look-back, not recomputed) keeps C3 (2) + C4 (3) = 10 kg; 10 March: C5 cancelled, nothing;
    # 12 March: C6, 14 kg; 13 March: C7 moved away, nothing; 14 March: C3 (9) + C8 (2), 22 kg
    for day, kg in (("2026-03-01", 14), ("2026-03-05", 10), ("2026-03-10", 0), ("2026-03-12", 14),
                    ("2026-03-13", 0), ("2026-03-14", 22)):
        assert _rm(pruned, day) == pytest.approx(kg), day
    # the row without an id, read from row group 4 alone, is named by its line in the whole file
    quarantine = Warehouse(pruned.warehouse).read("quarantine")
    assert list(quarantine["source_key"]) == [f"{HISTORY}:10"]


def test_a_manifest_from_before_pieces_still_loads(tmp_path: Path) -> None:
    """A manifest written before pieces has neither row_group nor row_groups: its CSV entries are
    whole-file pieces, still valid; its Parquet files are described again, once, by row group."""
    landing_dir = make_landing(tmp_path, items=ITEMS, bom=BOM)
    _write_history(landing_dir, FIRST)
    warehouse = Warehouse(str(tmp_path / "wh"))
    listed = scan.landing_files(landing_dir)
    now = pd.Timestamp("2026-03-01", tz="UTC")
    old = []
    for table in landing.DESCRIBED:
        for source, path in listed[table]:
            stat = path.stat()
            old.append(landing.describe(table, source, path, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                        fingerprint=landing.file_fingerprint(path), now=now))
    before = pa.schema([f for f in schemas.LANDING_MANIFEST if f.name not in ("row_group", "row_groups")])
    folder = Path(warehouse.path(landing.DATASET))
    folder.mkdir(parents=True)
    frame = pd.DataFrame(old)
    pq.write_table(pa.Table.from_pandas(frame[before.names], schema=before, preserve_index=False),
                   folder / "part-old.parquet")
    known, names = landing.load(warehouse)
    assert names == ["part-old.parquet"]
    assert known[HISTORY][0]["row_group"] is None and known[HISTORY][0]["row_groups"] is None
    manifest = landing.survey(listed, warehouse)
    assert manifest.fresh == {HISTORY}  # the CSV files are as they were; the Parquet file now has pieces
    pieces = [e for e in manifest.entries if e["source"] == HISTORY]
    assert [e["row_group"] for e in pieces] == [0, 1, 2, 3]
    # the old whole-file entry and the pieces agree: its facts are those of the pieces together
    whole = next(e for e in old if e["source"] == HISTORY)
    assert whole["rows"] == sum(int(e["rows"]) for e in pieces) == 8  # type: ignore[call-overload]
    assert whole["min_event"] == min(e["min_event"] for e in pieces)  # type: ignore[type-var]
    assert whole["max_event"] == max(e["max_event"] for e in pieces)  # type: ignore[type-var]
    assert whole["max_version"] == max(e["max_version"] for e in pieces)  # type: ignore[type-var]
    assert (whole["min_id"], whole["max_id"]) == ("C1", "C7")
    # and the new manifest round-trips: published, loaded, nothing described again
    txn = warehouse.begin("run-1", ["P1"])
    manifest.stage(txn, "run-1")
    txn.commit()
    assert landing.survey(listed, warehouse).fresh == set()


# ------------------------------------------------------------------------------------ generated data

START = dt.date(2026, 1, 1)
DAYS = 24
FIRST_NIGHTS = 16
GROUP_ROWS = 150  # completions per row group: ~11 row groups for the first ten days
MOVEMENT_GROUP_ROWS = 16
FIRST_COUNT = dt.date(2026, 1, 8)
MASTER = ("items", "bom", "plants", "uom_conversions")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """Generated data (two plants in their own zones, corrections and bad rows included), each
    flow with the UTC day it arrived: of recorded_at, else completed_at (rows without a readable
    time arrive on the first day); of moved_at; of counted_at."""
    root = tmp_path_factory.mktemp("generated")
    generate_landing(root, items=40, completions=4000, days=DAYS, seed=11, plants=2, bad_rows=True)
    out: dict[str, pd.DataFrame] = {"root": pd.DataFrame({"path": [str(root)]})}
    for table, times in (("completions", ("recorded_at", "completed_at")), ("movements", ("moved_at",)),
                         ("stock_counts", ("counted_at",))):
        frame = pd.concat([pq.read_table(p).to_pandas() for p in sorted((root / table).glob("*.parquet"))],
                          ignore_index=True)
        when = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[us, UTC]")
        for column in times:
            when = when.fillna(pd.to_datetime(frame[column], utc=True, errors="coerce"))
        frame["_arrived"] = when.fillna(pd.Timestamp(START, tz="UTC"))
        out[table] = frame
    # a row without an id beside a completion of P1 on day 10 at midday (the first file's last row
    # groups): quarantined, known by its line in the file, on a date night 17 reprocesses
    completions = out["completions"]
    when = pd.to_datetime(completions["completed_at"], utc=True, errors="coerce")
    noon = completions[(when >= pd.Timestamp("2026-01-10T10:00Z")) & (when < pd.Timestamp("2026-01-10T14:00Z"))
                       & (completions["plant_id"] == "P1") & completions["completion_id"].notna()
                       & (completions["qty_good"] > 0)].sort_values("completion_id").iloc[[0]]
    out["noon"] = noon
    out["completions"] = pd.concat([completions, noon.assign(completion_id=None)], ignore_index=True)
    return out


def _write(frame: pd.DataFrame, path: Path, group_rows: int, *, once: bool = False) -> None:
    """Rows written as one Parquet file of `group_rows` rows a row group, in arrival order, if that
    changes the file (an MES drop rewrites its history file when it grows); `once`: a file
    already there is left as it is."""
    if once and path.exists():
        return
    frame = frame.sort_values(["_arrived", frame.columns[0]], kind="stable")
    table = pa.Table.from_pandas(frame.drop(columns=["_arrived"]), preserve_index=False)
    if path.exists() and pq.read_table(path).equals(table):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=group_rows)


def _land(generated: dict[str, pd.DataFrame], landing_dir: Path, last: dt.date,
          extra: dict[str, pd.DataFrame] | None = None) -> None:
    """The landing as it stands after day `last`: completions that arrived by day 10 in one file, those
    since in a growing history file; movements in two Hive folders (by day 12, and since); counts
    from day 8 (FIRST_COUNT) in one file; `extra` rows (late ones) appended to the history files."""
    root = Path(str(generated["root"]["path"].iloc[0]))
    for table in MASTER:
        if (root / table).is_dir():
            shutil.copytree(root / table, landing_dir / table, dirs_exist_ok=True)
    end = pd.Timestamp(last + dt.timedelta(days=1), tz="UTC")
    split = {"completions": pd.Timestamp(START + dt.timedelta(days=10), tz="UTC"),
             "movements": pd.Timestamp(START + dt.timedelta(days=12), tz="UTC")}
    extra = extra or {}
    completions = pd.concat([generated["completions"], extra.get("completions")], ignore_index=True)
    completions = completions[completions["_arrived"] < end]
    early = completions["_arrived"] < split["completions"]
    _write(completions[early], landing_dir / "completions" / "2026-01-a.parquet", GROUP_ROWS, once=True)
    _write(completions[~early], landing_dir / "completions" / "history.parquet", GROUP_ROWS)
    movements = pd.concat([generated["movements"], extra.get("movements")], ignore_index=True)
    movements = movements[movements["_arrived"] < end]
    early = movements["_arrived"] < split["movements"]
    _write(movements[early], landing_dir / "movements" / "date=2026-01-01" / "part.parquet", MOVEMENT_GROUP_ROWS,
           once=True)
    _write(movements[~early], landing_dir / "movements" / "date=2026-01-13" / "part.parquet", MOVEMENT_GROUP_ROWS)
    counts = generated["stock_counts"]  # from day 8 on: the windows of later counts reach back to it at most
    counts = counts[(counts["_arrived"] < end) & (counts["_arrived"] >= pd.Timestamp(FIRST_COUNT, tz="UTC"))]
    _write(counts, landing_dir / "stock_counts" / "counts.parquet", 1000)


def _valid(generated: dict[str, pd.DataFrame], day: int, table: str = "completions") -> pd.DataFrame:
    """Valid rows of one UTC day of the event time, the latest version of each id, by id."""
    frame = generated[table]
    event, key = ("completed_at", "completion_id") if table == "completions" else ("moved_at", "movement_id")
    when = pd.to_datetime(frame[event], utc=True, errors="coerce")
    rows = frame[(when.dt.date == dt.date(2026, 1, day)) & frame[key].notna() & frame["plant_id"].isin(["P1", "P2"])]
    if table == "completions":
        rows = rows.sort_values("recorded_at").drop_duplicates(key, keep="last")
    return rows.sort_values(key)


def _late(generated: dict[str, pd.DataFrame], night: dt.date
          ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
    """Late data recorded on the night: (a new completion file's rows, a new movement file's rows,
    rows appended to the history file).

    The new completion file, two rows a row group (they mix dates): a quantity changed on day 14
    and an id of day 4 (long settled) moved into day 15; an id of day 13 cancelled and an id of day
    16 moved to day 12; alone in the last row group, an id of day 15 moved to 20 December (before
    the data: only its id says that row group must be read). The new movement file, one row a row
    group: one of day 14 sent again, different, dated 19 December (two rows with one id: both
    DUPLICATE_ID; only its id says it must be read), and an identical repeat of one of day 2
    (outside every span: not read). Appended to the history file (they sort among the night's own
    rows, so its last row groups hold days far apart): corrections of day 5 (outside the
    look-back) and of day 12."""
    recorded = pd.Timestamp(f"{night:%Y-%m-%d}T03:00:00Z")
    changed, moved_out = _valid(generated, 14).iloc[[0]].copy(), _valid(generated, 15).iloc[[1]].copy()
    moved_in, cancelled = _valid(generated, 4).iloc[[2]].copy(), _valid(generated, 13).iloc[[3]].copy()
    moved_back = _valid(generated, 16).iloc[[4]].copy()
    changed["qty_good"] = changed["qty_good"] + 7
    moved_out["completed_at"] = moved_out["completed_at"] - pd.Timedelta(days=26)
    moved_in["completed_at"] = moved_in["completed_at"] + pd.Timedelta(days=11)
    cancelled[["qty_good", "qty_scrap"]] = 0.0
    moved_back["completed_at"] = moved_back["completed_at"] - pd.Timedelta(days=4)
    new_file = pd.concat([changed, moved_in, cancelled, moved_back, moved_out], ignore_index=True)
    new_file = new_file.assign(recorded_at=recorded, _arrived=recorded)
    old, recent = _valid(generated, 5).iloc[[5]].copy(), _valid(generated, 12).iloc[[6]].copy()
    old["qty_good"], recent["qty_scrap"] = old["qty_good"] + 2, recent["qty_scrap"] + 1
    appended = pd.concat([old, recent], ignore_index=True).assign(recorded_at=recorded, _arrived=recorded)
    resent = _valid(generated, 14, "movements").iloc[[0]].copy()
    resent["qty"] = resent["qty"] + 1
    resent["moved_at"] = resent["moved_at"] - pd.Timedelta(days=26)
    movements = pd.concat([resent, _valid(generated, 2, "movements").iloc[[0]]], ignore_index=True)
    return new_file, movements.drop(columns=["_arrived"]), {"completions": appended}


def test_pruned_row_groups_write_what_a_full_read_writes(generated: dict[str, pd.DataFrame], tmp_path: Path) -> None:
    landing_dir = tmp_path / "landing"
    # buckets of 1,000 rows: completions are split into buckets a chunk of row groups at a time
    full, pruned = (_config(tmp_path, landing_dir, False, bucket_rows=1000),
                    _config(tmp_path, landing_dir, True, bucket_rows=1000))
    _land(generated, landing_dir, START + dt.timedelta(days=FIRST_NIGHTS - 1))
    listed = scan.landing_files(landing_dir)
    # a few large files of many row groups each
    assert [s for s, _ in listed["completions"]] == ["completions/2026-01-a.parquet", "completions/history.parquet"]
    assert all(pq.ParquetFile(p).metadata.num_row_groups >= 4 for _, p in listed["completions"] + listed["movements"])
    assert [s for s, _ in listed["movements"]] == ["movements/date=2026-01-01/part.parquet",
                                                  "movements/date=2026-01-13/part.parquet"]  # Hive folders
    for config in (full, pruned):
        job.backfill(config, START, START + dt.timedelta(days=FIRST_NIGHTS - 1))
    same_outputs(full, pruned)

    # night 17: the history files grow (changed: described again), with a correction of day 10
    night = START + dt.timedelta(days=FIRST_NIGHTS)
    recorded = pd.Timestamp(f"{night:%Y-%m-%d}T02:00:00Z")
    corrected = generated["noon"].assign(qty_good=generated["noon"]["qty_good"] + 1, recorded_at=recorded,
                                         _arrived=recorded)
    _land(generated, landing_dir, night, {"completions": corrected})
    run_both(full, pruned, [night])
    runs = Warehouse(pruned.warehouse).read("runs").sort_values("started_at")
    assert dt.date(2026, 1, 10) in set(runs["business_dates"].iloc[-1])  # its quarantine rewritten too
    read, every = _last_rows_read(pruned), _last_rows_read(full)
    assert read["completions"] < every["completions"] and read["movements"] < every["movements"]
    result = job.read_inputs(pruned, [night])
    # every file has a row group the night needs, yet fewer rows are read: row groups were left out
    # (of the Hive folders' movement files too)
    assert result.files_skipped == {"completions": 0, "movements": 0}
    assert result.inputs.stats["completions"].read == read["completions"]

    # night 18: late corrections, in a new file of a Hive folder and appended to the history files
    night += dt.timedelta(days=1)
    new_file, resent, appended = _late(generated, night)
    appended = {"completions": pd.concat([corrected, appended["completions"]], ignore_index=True)}
    for table, rows, group_rows in (("completions", new_file.drop(columns=["_arrived"]), 2),
                                    ("movements", resent, 1)):
        folder = landing_dir / table / f"date={night:%Y-%m-%d}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), folder / "late.parquet",
                       row_group_size=group_rows)
    _land(generated, landing_dir, night, appended)
    run_both(full, pruned, [night])
    runs = Warehouse(pruned.warehouse).read("runs").sort_values("started_at")
    reprocessed = set(runs["business_dates"].iloc[-1])
    # day 15 lost an id (moved to December) and gained one (from day 4); 12, 13, 14 changed too
    assert {dt.date(2026, 1, d) for d in (12, 13, 14, 15, 16)} <= reprocessed
    quarantine = Warehouse(pruned.warehouse).read("quarantine")
    assert (quarantine["error_code"] == "DUPLICATE_ID").any()
    assert _last_rows_read(pruned)["completions"] < _last_rows_read(full)["completions"]

    # night 19: the first file is rewritten in id order (each row group now spans all its days) with
    # one quantity changed; the history files grow
    night += dt.timedelta(days=1)
    first = landing_dir / "completions" / "2026-01-a.parquet"
    rows = pq.read_table(first).to_pandas().sort_values("completion_id", kind="stable")
    rows.loc[rows.index[0], "qty_good"] = rows["qty_good"].iloc[0] + 3
    pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), first, row_group_size=GROUP_ROWS)
    _land(generated, landing_dir, night, appended)
    run_both(full, pruned, [night])

    # night 20, then a re-run of an old date (counts after it reach back into it), then one plant
    night += dt.timedelta(days=1)
    _land(generated, landing_dir, night, appended)
    run_both(full, pruned, [night])
    run_both(full, pruned, [dt.date(2026, 1, 9)])
    run_both(full, pruned, [night], plants=["P2"])


def test_only_the_chosen_row_groups_are_read_with_their_lines(tmp_path: Path) -> None:
    """Rows of a row group read alone keep their line in the whole file (a quarantined row's source)."""
    path = tmp_path / "f.parquet"
    frame = pd.DataFrame({"completion_id": [f"C{i}" for i in range(7)], "qty_good": np.arange(7.0)})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=2)
    some = scan.read_file(path, [1, 3])
    # row groups 1 (rows 2, 3: lines 4, 5) and 3 (row 6: line 8); the header is line 1
    assert list(some["completion_id"]) == ["C2", "C3", "C6"]
    assert list(some[inputs.LINE_COLUMN]) == [4, 5, 8]
    chunks = list(scan.read_parquet_chunks(path, 10, [0, 1, 3]))
    assert [(line, t.num_rows) for line, t in chunks] == [(2, 4), (8, 1)]
    assert scan.read_file(path).shape == (7, 2)
