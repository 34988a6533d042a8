"""Closed posting periods (issue 16.2): a closed date's postings never change; a correction to it
posts its delta on the first open business date, `for_business_date` keeping the date it is for.
Numbers worked by hand in the comments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from pipeline.domain import periods
from tests.support.landing import config_for, make_landing, read, write_table

ITEMS = [{"item_id": "FG", "uom": "EA", "standard_cost": 10, "uom_decimals": 0},
         {"item_id": "RM", "uom": "KG", "standard_cost": 3, "uom_decimals": 3}]
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}]


def _completion(cid: str, at: str, qty: float, recorded_at: str, plant: str = "P1") -> dict[str, object]:
    return {"completion_id": cid, "plant_id": plant, "location_id": "L1", "item_id": "FG", "qty_good": qty,
            "completed_at": at, "recorded_at": recorded_at}


def _postings(root: Path) -> list[tuple[str, str, str, float]]:
    """(business_date, for_business_date, item, qty_delta) of every posting, sorted."""
    p = read(root, "postings")
    return sorted(zip(p["business_date"].dt.strftime("%m-%d"), p["for_business_date"].dt.strftime("%m-%d"),
                      p["item_id"], p["qty_delta"], strict=True))


def _days(start: str, end: str) -> list[dt.date]:
    return job.date_range(dt.date.fromisoformat(start), dt.date.fromisoformat(end))


def test_a_correction_to_a_closed_date_posts_its_delta_on_the_first_open_date(tmp_path: Path) -> None:
    """January is posted while open: C1 100 FG on 01-30, C2 10 FG on 02-02 (5 kg RM each).
    Then January closes (closed_through 01-31) and C1 is corrected to 120. The nightly run of 02-02
    finds 01-30 changed (look-back): its delta, +20 FG and -100 kg RM, is posted on 02-01, the first
    open date, for 01-30. 01-30's adjustments stay as posted (100 / -500); its consumption is the
    truth (600 kg). The variance uses the true flows: K1 on 02-03 after K0 (1,000 kg on 01-29) has
    usage 120 x 5 + 10 x 5 = 650, book 350, counted 300, variance -50. A re-run posts nothing."""
    counts = [{"count_id": "K0", "plant_id": "P1", "location_id": "L1", "item_id": "RM", "counted_qty": 1000,
               "counted_at": "2026-01-29T12:00:00Z"},
              {"count_id": "K1", "plant_id": "P1", "location_id": "L1", "item_id": "RM", "counted_qty": 300,
               "counted_at": "2026-02-03T12:00:00Z"}]
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, stock_counts=counts, completions=[
        _completion("C1", "2026-01-30T10:00:00Z", 100, "2026-01-30T10:00:00Z"),
        _completion("C2", "2026-02-02T10:00:00Z", 10, "2026-02-02T10:00:00Z")])
    job.backfill(config_for(tmp_path, landing), dt.date(2026, 1, 29), dt.date(2026, 2, 2))
    assert _postings(tmp_path) == [("01-30", "01-30", "FG", 100.0), ("01-30", "01-30", "RM", -500.0),
                                   ("02-02", "02-02", "FG", 10.0), ("02-02", "02-02", "RM", -50.0)]

    write_table(landing, "completions", name="late.csv",
                rows=[_completion("C1", "2026-01-30T10:00:00Z", 120, "2026-02-02T23:00:00Z")])
    closed = config_for(tmp_path, landing, closed_through=dt.date(2026, 1, 31))
    job.run_dates(closed, [dt.date(2026, 2, 3)])
    assert _postings(tmp_path) == [("01-30", "01-30", "FG", 100.0), ("01-30", "01-30", "RM", -500.0),
                                   ("02-01", "01-30", "FG", 20.0), ("02-01", "01-30", "RM", -100.0),
                                   ("02-02", "02-02", "FG", 10.0), ("02-02", "02-02", "RM", -50.0)]
    adjustments = read(tmp_path, "adjustments")
    jan30 = adjustments[adjustments["business_date"] == pd.Timestamp("2026-01-30")]
    assert dict(zip(jan30["item_id"], jan30["qty"], strict=True)) == {"FG": 100.0, "RM": -500.0}
    consumption = read(tmp_path, "consumption")
    assert consumption.loc[consumption["business_date"] == pd.Timestamp("2026-01-30"), "qty"].tolist() == [600.0]
    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert (k1["theoretical_usage_qty"], k1["book_qty"], k1["variance_qty"]) == (650.0, 350.0, -50.0)

    before = len(read(tmp_path, "postings"))
    job.run_dates(closed, [dt.date(2026, 2, 3)])
    job.backfill(closed, dt.date(2026, 1, 29), dt.date(2026, 2, 3))
    assert len(read(tmp_path, "postings")) == before  # the ledger per for_business_date is already right


def test_a_first_backfill_into_a_closed_period_writes_adjustments_and_posts_on_the_open_date(
        tmp_path: Path) -> None:
    """Nothing was posted for 01-30 yet: its adjustments are written (100 / -500), and its postings are
    made on 02-01 for 01-30."""
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        _completion("C1", "2026-01-30T10:00:00Z", 100, "2026-01-30T10:00:00Z")])
    job.backfill(config_for(tmp_path, landing, closed_through=dt.date(2026, 1, 31)),
                 dt.date(2026, 1, 30), dt.date(2026, 1, 30))
    assert _postings(tmp_path) == [("02-01", "01-30", "FG", 100.0), ("02-01", "01-30", "RM", -500.0)]
    assert sorted(read(tmp_path, "adjustments")["qty"]) == [-500.0, 100.0]


def test_closed_periods_table_per_plant_and_for_every_plant(tmp_path: Path) -> None:
    """periods: P1 closed 02-01..02-03, every plant closed 02-04..02-04 (adjacent: P1 is closed
    02-01..02-04, first open 02-05), P1 open 02-10..02-12 (open rows close nothing). At P2 only 02-04
    is closed. C1 (P1, 02-02) posts on 02-05; C2 (P2, 02-04) on 02-05; C3 (P2, 02-02) on its own date."""
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        _completion("C1", "2026-02-02T10:00:00Z", 1, "2026-02-02T10:00:00Z"),
        _completion("C2", "2026-02-04T10:00:00Z", 2, "2026-02-04T10:00:00Z", plant="P2"),
        _completion("C3", "2026-02-02T10:00:00Z", 3, "2026-02-02T10:00:00Z", plant="P2")],
        periods=[{"plant_id": "P1", "period_start": "2026-02-01", "period_end": "2026-02-03", "status": "closed"},
                 {"plant_id": "", "period_start": "2026-02-04", "period_end": "2026-02-04", "status": "closed"},
                 {"plant_id": "P1", "period_start": "2026-02-10", "period_end": "2026-02-12", "status": "open"}])
    job.backfill(config_for(tmp_path, landing), dt.date(2026, 2, 1), dt.date(2026, 2, 5))
    p = read(tmp_path, "postings")
    got = sorted(zip(p["plant_id"], p["business_date"].dt.strftime("%m-%d"), p["for_business_date"].dt.strftime("%m-%d"),
                     p["item_id"], p["qty_delta"], strict=True))
    assert got == [("P1", "02-05", "02-02", "FG", 1.0), ("P1", "02-05", "02-02", "RM", -5.0),
                   ("P2", "02-02", "02-02", "FG", 3.0), ("P2", "02-02", "02-02", "RM", -15.0),
                   ("P2", "02-05", "02-04", "FG", 2.0), ("P2", "02-05", "02-04", "RM", -10.0)]


@pytest.mark.parametrize(("day", "closed", "posting_day"), [
    ("2026-01-31", True, "2026-02-06"),  # closed_through, then the adjacent period 02-01..02-05
    ("2026-02-05", True, "2026-02-06"),
    ("2026-02-06", False, "2026-02-06"),
    ("2026-02-08", True, "2026-02-10"),  # inside 02-07..02-09, which overlaps 02-08..02-08
    ("2026-02-10", False, "2026-02-10"),
])
def test_posting_dates_merge_adjacent_and_overlapping_closed_periods(day: str, closed: bool, posting_day: str) -> None:
    table = pd.DataFrame({"plant_id": ["P1", None, "P1"],
                          "period_start": pd.to_datetime(["2026-02-01", "2026-02-07", "2026-02-08"]),
                          "period_end": pd.to_datetime(["2026-02-05", "2026-02-09", "2026-02-08"]),
                          "status": "closed"})
    intervals = periods.closed_intervals(["P1"], dt.date(2026, 1, 31), table)
    scope = pd.DataFrame({"plant_id": ["P1"], "business_date": [pd.Timestamp(day)]})
    got = periods.posting_dates(scope, intervals).iloc[0]
    assert (bool(got["closed"]), got["posting_date"]) == (closed, pd.Timestamp(posting_day))


def test_cli_run_with_closed_through_and_the_report_row(tmp_path: Path) -> None:
    """Through the command line with a config file closing January: a first backfill of 01-30 posts
    C1 (100 FG, -500 kg RM) on 02-01 for 01-30, and the report's postings section says 2 postings were
    made on an open date for 1 closed date."""
    from pipeline import cli

    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        _completion("C1", "2026-01-30T10:00:00Z", 100, "2026-01-30T10:00:00Z")])
    config = tmp_path / "backflush.toml"
    config.write_text(f'landing = "{landing}"\nwarehouse = "{tmp_path / "warehouse"}"\nclosed_through = 2026-01-31\n')
    assert cli.main(["backfill", "--config", str(config), "--start", "2026-01-30", "--end", "2026-01-30", "-q"]) == 0
    assert _postings(tmp_path) == [("02-01", "01-30", "FG", 100.0), ("02-01", "01-30", "RM", -500.0)]
    page = tmp_path / "report.html"
    assert cli.main(["report", "--config", str(config), "--warehouse", str(tmp_path / "warehouse"),
                     "--from", "2026-01-30", "--to", "2026-02-01", "--out", str(page), "-q"]) == 0
    html = page.read_text("utf-8")
    assert "2 posting(s) of the period were made on an open date for a closed one (1 closed date(s))" in html
