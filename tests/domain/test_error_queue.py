"""The error queue that reprocesses itself (issue 16.1): quarantined completions that a master data
change resolves are reprocessed at any date and marked released; a backdated BOM change lists the
posted dates it alters and, with `reprocess_master_data`, reposts them. Numbers worked by hand.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from pipeline.config import ConfigError, load_config
from pipeline.domain import error_queue
from tests.support.landing import config_for, make_landing, read, write_table
from tests.support.postgres import reachable_engine

P, L = "P1", "L1"
ITEMS = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "NEW", "uom": "EA", "standard_cost": 7, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "KG", "standard_cost": 3, "phantom": "false", "backflush": "true", "uom_decimals": 3},
    {"item_id": "RM2", "uom": "KG", "standard_cost": 2, "phantom": "false", "backflush": "true", "uom_decimals": 3},
]
BOM_COLUMNS = ["parent_item_id", "component_item_id", "qty_per", "valid_from"]
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5, "valid_from": ""}]
OLD, POSTED, NIGHT = "2026-02-01", "2026-03-01", "2026-03-02"  # OLD is 29 days before NIGHT: outside the look-back


def completion(cid: str, item: str, qty: float, day: str) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": P, "location_id": L, "item_id": item, "qty_good": qty,
            "completed_at": f"{day}T10:00:00Z"}


COMPLETIONS = [
    completion("F0", "FG", 100, "2026-01-10"),
    completion("F1", "FG", 100, OLD),
    completion("F2", "FG", 100, POSTED),
    completion("N1", "NEW", 10, OLD),  # NEW has no BOM: NO_BOM
    completion("X1", "X9", 4, OLD),  # X9 is not in items: UNKNOWN_ITEM
]


def dates(*days: str) -> list[dt.date]:
    return [dt.date.fromisoformat(d) for d in days]


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    landing = make_landing(tmp_path, items=ITEMS, completions=COMPLETIONS)
    write_table(landing, "bom", BOM, columns=BOM_COLUMNS)
    first = job.run_dates(config_for(tmp_path, landing), dates("2026-01-10", OLD, POSTED))
    assert first.quarantine_by_code == {"NO_BOM": 1, "UNKNOWN_ITEM": 1}
    return landing


def nightly(root: Path, landing: Path, **overrides: object) -> job.RunResult:
    return job.run_dates(config_for(root, landing, **overrides), dates(NIGHT))


def postings_of(root: Path, run_id: str) -> dict[tuple[str, str, str], float]:
    rows = read(root, "postings")
    rows = rows[rows["run_id"] == run_id]
    return {(f"{d:%Y-%m-%d}", i, k): float(q) for d, i, k, q in
            zip(rows["business_date"], rows["item_id"], rows["kind"], rows["qty_delta"], strict=True)}


def completion_quarantine(root: Path) -> pd.DataFrame:
    rows = read(root, "quarantine")
    return rows[rows["table"] == "completions"].set_index("source_key")


def test_a_bom_line_added_releases_an_old_no_bom_completion(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "bom", BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 2,
                                        "valid_from": ""}], columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing)

    # OLD is reprocessed although no completion of it changed and it is outside the 7-day look-back
    assert second.business_dates == dates(OLD, NIGHT)
    assert second.released == ["completions:N1"]
    # N1: 10 NEW made: receipt +10 EA; 10 x 2 = 20 kg RM2 issued. F1 on OLD is posted already: no delta
    assert postings_of(tmp_path, second.run_id) == {
        (OLD, "NEW", "production_receipt"): 10.0, (OLD, "RM2", "backflush_issue"): -20.0}
    quarantined = completion_quarantine(tmp_path)
    assert quarantined.loc["N1", "released_by_run"] == second.run_id  # kept, marked: the history stays
    assert quarantined.loc["N1", "error_code"] == "NO_BOM"
    assert pd.isna(quarantined.loc["X1", "released_by_run"])  # X9 is still unknown
    runs = read(tmp_path, "runs").set_index("run_id")
    assert list(runs.loc[second.run_id, "released"]) == ["completions:N1"]

    third = nightly(tmp_path, landing)  # a re-run changes nothing
    assert third.business_dates == dates(NIGHT)
    assert third.released == [] and third.master_changed_dates == []
    assert postings_of(tmp_path, third.run_id) == {}
    again = completion_quarantine(tmp_path)
    assert again.loc["N1", "released_by_run"] == second.run_id
    assert len(again) == 2  # N1 (released) and X1 (open): one row each
    runs = read(tmp_path, "runs").set_index("run_id")
    # the BOM changed before the second run: it records the explosion; the third saw the same: null
    # (one change point per item: FG explodes alike on its three dates; NEW now explodes, on OLD)
    points = sorted(runs.loc[second.run_id, "master_fingerprints"])
    assert [p.rsplit("|", 1)[0] for p in points] == ["P1|FG|2026-01-10", "P1|NEW|2026-02-01"]
    assert runs.loc[third.run_id, "master_fingerprints"] is None


def test_an_unknown_item_is_resolved_by_adding_the_item(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "items", ITEMS + [{"item_id": "X9", "uom": "EA", "standard_cost": 1, "phantom": "false",
                                            "backflush": "true", "uom_decimals": 0}])
    write_table(landing, "bom", BOM + [{"parent_item_id": "X9", "component_item_id": "RM", "qty_per": 3,
                                        "valid_from": ""}], columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing)
    assert second.released == ["completions:X1"]
    # X1: 4 X9 made: receipt +4 EA; 4 x 3 = 12 kg RM issued
    assert postings_of(tmp_path, second.run_id) == {
        (OLD, "X9", "production_receipt"): 4.0, (OLD, "RM", "backflush_issue"): -12.0}
    quarantined = completion_quarantine(tmp_path)
    assert quarantined.loc["X1", "released_by_run"] == second.run_id
    assert pd.isna(quarantined.loc["N1", "released_by_run"])  # NEW still has no BOM


BACKDATED = BOM + [{"parent_item_id": "FG", "component_item_id": "RM2", "qty_per": 1, "valid_from": "2026-01-20"}]


def test_a_backdated_bom_change_lists_the_posted_dates_it_alters(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "bom", BACKDATED, columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing)
    # the new line is effective from 20 January: FG made on OLD and POSTED explodes differently,
    # FG made on 10 January does not; nothing is reposted by default
    assert second.master_changed_dates == [f"{P}|{OLD}", f"{P}|{POSTED}"]
    assert second.business_dates == dates(NIGHT)
    assert postings_of(tmp_path, second.run_id) == {}
    runs = read(tmp_path, "runs").set_index("run_id")
    assert list(runs.loc[second.run_id, "master_changed_dates"]) == [f"{P}|{OLD}", f"{P}|{POSTED}"]
    assert nightly(tmp_path, landing).master_changed_dates == []  # listed once: the run recorded the change


def test_with_reprocess_master_data_the_altered_dates_are_reposted(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "bom", BACKDATED, columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing, reprocess_master_data=True)
    assert second.business_dates == dates(OLD, POSTED, NIGHT)
    # 100 FG on each date now also take 100 x 1 = 100 kg RM2; RM (500 kg) and the receipt are unchanged
    assert postings_of(tmp_path, second.run_id) == {
        (OLD, "RM2", "backflush_issue"): -100.0, (POSTED, "RM2", "backflush_issue"): -100.0}
    third = nightly(tmp_path, landing, reprocess_master_data=True)
    assert third.master_changed_dates == [] and postings_of(tmp_path, third.run_id) == {}


def test_the_change_points_round_trip() -> None:
    current = pd.DataFrame({"plant_id": ["P|1", "P|1", "P|1", "P2"], "item_id": ["A", "A", "A", "A|5%"],
                            "business_date": pd.to_datetime(["2026-01-01", "2026-01-02", "2026-01-05", "2026-01-01"]),
                            "hash": ["h1", "h1", "h2", "h1"]})
    points = error_queue.change_points(current)
    # the separator and the escape character of the ids are escaped (%7C, %25)
    assert points == ["P%7C1|A|2026-01-01|h1", "P%7C1|A|2026-01-05|h2", "P2|A%7C5%25|2026-01-01|h1"]
    decoded_ids = error_queue._decode(pd.Series(points))[["plant_id", "item_id"]].drop_duplicates()
    assert list(map(tuple, decoded_ids.to_numpy())) == [("P|1", "A"), ("P2", "A|5%")]
    assert error_queue.unchanged(points, error_queue._decode(pd.Series(points)))
    # A's hash on 2 January changes to h3: only that posted date differs from the points
    now = current.assign(hash=["h1", "h3", "h2", "h1"])
    posted = now[["plant_id", "business_date"]].drop_duplicates()
    decoded = error_queue._decode(pd.Series(points))
    changed = error_queue.changed_posted_dates(now, decoded, posted)
    assert list(zip(changed["plant_id"], changed["business_date"].dt.strftime("%Y-%m-%d"), strict=True)) == [
        ("P|1", "2026-01-02")]


def test_reprocess_master_data_is_a_strict_boolean(tmp_path: Path) -> None:
    assert load_config(None, environ={}).reprocess_master_data is False
    path = tmp_path / "backflush.toml"
    path.write_text("reprocess_master_data = true\n")
    assert load_config(path, environ={}).reprocess_master_data is True
    path.write_text('reprocess_master_data = "yes"\n')
    with pytest.raises(ConfigError, match="reprocess_master_data"):
        load_config(path, environ={})


def test_the_cli_says_what_was_released(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "bom", BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 2,
                                        "valid_from": ""}], columns=BOM_COLUMNS)
    command = [sys.executable, "-m", "pipeline.cli", "run", "--landing", str(landing),
               "--warehouse", str(tmp_path / "warehouse"), "--date", NIGHT]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "released:         completions:N1" in done.stdout


def test_the_report_counts_released_rows_apart(tmp_path: Path, landing: Path) -> None:
    from pipeline.report import html as report

    write_table(landing, "bom", BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 2,
                                        "valid_from": ""}], columns=BOM_COLUMNS)
    nightly(tmp_path, landing)
    data = report.read_period(str(tmp_path / "warehouse"), dt.date(2026, 2, 1), dt.date(2026, 2, 1))
    figures = report.report_figures(data)
    # on 1 February: N1 released (NEW has a BOM now), X1 still open (X9 is not in items)
    assert figures.released == 1
    assert figures.quarantined["UNKNOWN_ITEM"] == 1 and figures.quarantined["NO_BOM"] == 0


def test_a_missing_conversion_is_resolved_by_adding_it(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, items=ITEMS, completions=COMPLETIONS)
    grams = [dict(line, uom="") for line in BOM] + [
        {"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 500, "valid_from": "", "uom": "G"}]
    write_table(landing, "bom", grams, columns=BOM_COLUMNS + ["uom"])
    first = job.run_dates(config_for(tmp_path, landing), dates("2026-01-10", OLD, POSTED))
    assert first.quarantine_by_code == {"NO_UOM_CONVERSION": 1, "UNKNOWN_ITEM": 1}  # N1 (G -> KG), X1
    write_table(landing, "uom_conversions", [{"item_id": "", "from_uom": "G", "to_uom": "KG", "factor": 0.001}])
    second = nightly(tmp_path, landing)
    assert second.released == ["completions:N1"]
    # 10 NEW x 500 g x 0.001 kg/g = 5 kg RM2
    assert postings_of(tmp_path, second.run_id) == {
        (OLD, "NEW", "production_receipt"): 10.0, (OLD, "RM2", "backflush_issue"): -5.0}
    assert completion_quarantine(tmp_path).loc["N1", "error_code"] == "NO_UOM_CONVERSION"


def test_the_cli_reposts_with_the_flag(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "bom", BACKDATED, columns=BOM_COLUMNS)
    command = [sys.executable, "-m", "pipeline.cli", "run", "--landing", str(landing),
               "--warehouse", str(tmp_path / "warehouse"), "--date", NIGHT, "--reprocess-master-data"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert f"master data changed posted date(s): {P}|{OLD}, {P}|{POSTED}" in done.stdout
    runs = read(tmp_path, "runs").sort_values("started_at")
    # as by hand in the test above: 100 kg RM2 more on each altered date
    assert postings_of(tmp_path, runs["run_id"].iloc[-1]) == {
        (OLD, "RM2", "backflush_issue"): -100.0, (POSTED, "RM2", "backflush_issue"): -100.0}


PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def test_a_sql_source_reprocesses_only_dates_it_reads(tmp_path: Path) -> None:
    """A SQL run reads the completions of its look-back only: a quarantined completion there is
    released; an older one is left open (recomputing its date without its completions would
    reverse the date's postings)."""
    import uuid

    from pipeline.config import SqlSource

    engine = reachable_engine(PG_URL)
    schema = f"bf_eq_test_{uuid.uuid4().hex[:10]}"
    rows = COMPLETIONS + [completion("N2", "NEW", 6, POSTED)]  # POSTED is within NIGHT's look-back

    def bom_frame(lines: list[dict[str, object]]) -> pd.DataFrame:
        frame = pd.DataFrame(lines)
        frame["valid_from"] = pd.to_datetime(frame["valid_from"].replace("", None)).dt.date
        return frame

    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        items = pd.DataFrame(ITEMS).assign(phantom=False, backflush=True)
        items.to_sql("items", engine, schema=schema, index=False)
        frame = pd.DataFrame(rows).assign(qty_scrap=0.0)
        frame["completed_at"] = pd.to_datetime(frame["completed_at"], utc=True)
        frame.to_sql("completions", engine, schema=schema, index=False)
        bom_frame(BOM).to_sql("bom", engine, schema=schema, index=False)
        pd.DataFrame({"count_id": pd.Series([], dtype="str"), "plant_id": pd.Series([], dtype="str"),
                      "location_id": pd.Series([], dtype="str"), "item_id": pd.Series([], dtype="str"),
                      "counted_qty": pd.Series([], dtype="float64"),
                      "counted_at": pd.Series([], dtype="datetime64[ns, UTC]")}).to_sql(
            "stock_counts", engine, schema=schema, index=False)
        config = load_config(None, environ={}, warehouse=str(tmp_path / "warehouse"),
                             sql=SqlSource(url=PG_URL, schema=schema))
        first = job.run_dates(config, dates("2026-01-10", OLD, POSTED))
        assert first.quarantine_by_code == {"NO_BOM": 2, "UNKNOWN_ITEM": 1}  # N1, N2; X1
        bom_frame(BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 2, "valid_from": ""}]) \
            .to_sql("bom", engine, schema=schema, index=False, if_exists="replace")
        second = job.run_dates(config, dates(NIGHT))
        assert second.business_dates == dates(POSTED, NIGHT)
        assert second.released == ["completions:N2"]
        # N2: 6 NEW made: +6 EA; 6 x 2 = 12 kg RM2
        assert postings_of(tmp_path, second.run_id) == {
            (POSTED, "NEW", "production_receipt"): 6.0, (POSTED, "RM2", "backflush_issue"): -12.0}
        quarantined = completion_quarantine(tmp_path)
        assert quarantined.loc["N2", "released_by_run"] == second.run_id
        assert pd.isna(quarantined.loc["N1", "released_by_run"])  # outside the read window: still open
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


def test_a_row_rejected_as_it_was_read_is_not_retried(tmp_path: Path) -> None:
    """INVALID names both a broken BOM line (retried) and a bad input value (not: only the source
    can fix it). A completion with a negative quantity on OLD stays open and OLD is not recomputed."""
    landing = make_landing(tmp_path, items=ITEMS, completions=[completion("F1", "FG", 100, OLD),
                                                               completion("B1", "FG", -5, OLD)])
    write_table(landing, "bom", BOM, columns=BOM_COLUMNS)
    first = job.run_dates(config_for(tmp_path, landing), dates(OLD))
    assert first.quarantine_by_code == {"INVALID": 1}
    second = nightly(tmp_path, landing)
    assert second.business_dates == dates(NIGHT) and second.released == []
    assert pd.isna(completion_quarantine(tmp_path).loc["B1", "released_by_run"])


def test_a_bom_cycle_is_resolved_by_breaking_it(tmp_path: Path) -> None:
    items = ITEMS + [{"item_id": "PH", "uom": "EA", "standard_cost": 0, "phantom": "true", "backflush": "true",
                      "uom_decimals": 0}]
    cycle = BOM + [{"parent_item_id": "NEW", "component_item_id": "PH", "qty_per": 1, "valid_from": ""},
                   {"parent_item_id": "PH", "component_item_id": "NEW", "qty_per": 1, "valid_from": ""}]
    landing = make_landing(tmp_path, items=items, completions=[completion("N1", "NEW", 10, OLD)])
    write_table(landing, "bom", cycle, columns=BOM_COLUMNS)
    assert job.run_dates(config_for(tmp_path, landing), dates(OLD)).quarantine_by_code == {"BOM_CYCLE": 1}
    fixed = cycle[:2] + [{"parent_item_id": "PH", "component_item_id": "RM2", "qty_per": 3, "valid_from": ""}]
    write_table(landing, "bom", fixed, columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing)
    assert second.released == ["completions:N1"]
    # NEW > PH (phantom, 1 per NEW) > 3 kg RM2: 10 x 1 x 3 = 30 kg RM2
    assert postings_of(tmp_path, second.run_id) == {
        (OLD, "NEW", "production_receipt"): 10.0, (OLD, "RM2", "backflush_issue"): -30.0}


def test_a_row_that_fails_otherwise_is_marked_but_not_listed(tmp_path: Path, landing: Path) -> None:
    # NEW gets a BOM line in grams, and no conversion to kg: NO_BOM is resolved, NO_UOM_CONVERSION is not
    write_table(landing, "bom", [dict(line, uom="") for line in BOM] + [
        {"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 500, "valid_from": "", "uom": "G"}],
        columns=BOM_COLUMNS + ["uom"])
    # N1 does not explode now: the nightly run leaves OLD alone, and its row as it is
    assert nightly(tmp_path, landing).business_dates == dates(NIGHT)
    assert pd.isna(completion_quarantine(tmp_path).loc["N1", "released_by_run"])
    # a backfill recomputes OLD: the NO_BOM row is marked, the new error is open; nothing posted
    [second] = job.backfill(config_for(tmp_path, landing), dt.date.fromisoformat(OLD), dt.date.fromisoformat(OLD))
    assert second.released == []
    assert postings_of(tmp_path, second.run_id) == {}
    rows = read(tmp_path, "quarantine")
    n1 = rows[rows["source_key"] == "N1"].set_index("error_code")
    assert n1.loc["NO_BOM", "released_by_run"] == second.run_id
    assert pd.isna(n1.loc["NO_UOM_CONVERSION", "released_by_run"])


def test_a_release_into_a_closed_period_posts_on_the_first_open_date(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "bom", BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 2,
                                        "valid_from": ""}], columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing, closed_through=dt.date(2026, 2, 28))
    assert second.released == ["completions:N1"]
    rows = read(tmp_path, "postings")
    rows = rows[rows["run_id"] == second.run_id]
    # N1's +10 NEW and -20 kg RM2 are for OLD (closed), posted on 1 March, the first open date
    assert sorted(zip(rows["business_date"].dt.strftime("%Y-%m-%d"), rows["for_business_date"].dt.strftime("%Y-%m-%d"),
                      rows["item_id"], rows["qty_delta"], strict=True)) == [
        (POSTED, OLD, "NEW", 10.0), (POSTED, OLD, "RM2", -20.0)]


def test_an_invalid_bom_line_is_resolved_by_fixing_it(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, items=ITEMS, completions=[completion("N1", "NEW", 10, OLD)])
    broken = BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": "two", "valid_from": ""}]
    write_table(landing, "bom", broken, columns=BOM_COLUMNS)
    first = job.run_dates(config_for(tmp_path, landing), dates(OLD))
    assert first.quarantine_by_code == {"INVALID": 2}  # the BOM line as read, and N1 that cannot explode on it
    write_table(landing, "bom", BOM + [{"parent_item_id": "NEW", "component_item_id": "RM2", "qty_per": 2,
                                        "valid_from": ""}], columns=BOM_COLUMNS)
    second = nightly(tmp_path, landing)
    assert second.released == ["completions:N1"]
    # 10 NEW: +10 EA, 10 x 2 = 20 kg RM2
    assert postings_of(tmp_path, second.run_id) == {
        (OLD, "NEW", "production_receipt"): 10.0, (OLD, "RM2", "backflush_issue"): -20.0}
