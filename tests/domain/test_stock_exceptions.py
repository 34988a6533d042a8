"""Negative book stock exceptions (issue 16.5), end to end, with numbers worked by hand.

Each test writes a small landing folder, runs `job.run_dates` and reads `stock_exceptions` (and
`variance`) back from the warehouse. A window (previous count, count] has a row when its running
book stock (opening count, then every movement, receipt and backflushed usage at its own time)
goes below zero; the expected moments and quantities are worked out in the comments.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from pipeline.contract import schemas
from tests.support.landing import config_for, make_landing, read

P, L = "P1", "L1"


def item(item_id: str, uom: str, *, backflush: bool = True, decimals: int = 3) -> dict[str, object]:
    return {"item_id": item_id, "uom": uom, "standard_cost": 1.0, "phantom": "false",
            "backflush": str(backflush).lower(), "uom_decimals": decimals}


def completion(cid: str, at: str, qty_good: float, *, plant: str = P) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": plant, "location_id": L, "item_id": "FG",
            "qty_good": qty_good, "qty_scrap": 0, "completed_at": at}


def count(cid: str, item_id: str, at: str, qty: float, *, plant: str = P) -> dict[str, object]:
    return {"count_id": cid, "plant_id": plant, "location_id": L, "item_id": item_id, "counted_qty": qty,
            "counted_at": at}


def movement(mid: str, item_id: str, at: str, qty: float, *, plant: str = P) -> dict[str, object]:
    return {"movement_id": mid, "plant_id": plant, "location_id": L, "item_id": item_id, "qty": qty,
            "moved_at": at, "kind": "receipt" if qty > 0 else "issue"}


ITEMS = [item("FG", "EA", decimals=0), item("RM", "KG"), item("PK", "EA", decimals=0),
         item("TL", "EA", backflush=False, decimals=0)]
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5},
       {"parent_item_id": "FG", "component_item_id": "TL", "qty_per": 100}]

ONE_PLANT = {
    "items": ITEMS,
    "bom": BOM,
    "completions": [
        completion("C1", "2026-03-02T09:00:00Z", 10),  # RM -50, TL not backflushed: no usage
        completion("C2", "2026-03-02T14:00:00Z", 4),  # RM -20
        completion("C3", "2026-03-03T10:00:00Z", 2),  # RM -10
    ],
    "movements": [
        movement("M1", "RM", "2026-03-02T12:00:00Z", -80),
        movement("M2", "RM", "2026-03-02T16:00:00Z", 120),
        movement("M3", "PK", "2026-03-02T12:00:00Z", -10),
    ],
    "stock_counts": [
        count("K0", "RM", "2026-03-02T06:00:00Z", 100), count("K1", "RM", "2026-03-03T18:00:00Z", 50),
        # PK: 10 - 10 = 0 at 12:00, never below zero
        count("K2", "PK", "2026-03-02T06:00:00Z", 10), count("K3", "PK", "2026-03-03T18:00:00Z", 0),
        # TL: 5 counted, 1,600 "used" by the BOM (16 FG x 100), but TL is not backflushed: the book
        # stock never counts usage of it, so it stays at 5
        count("K4", "TL", "2026-03-02T06:00:00Z", 5), count("K5", "TL", "2026-03-03T18:00:00Z", 5),
    ],
}
DATES = [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]


def _run(root: Path, tables: dict[str, list[dict[str, object]]], dates: list[dt.date], **overrides: object
         ) -> job.RunResult:
    landing = make_landing(root, **tables)
    return job.run_dates(config_for(root, landing, **overrides), dates)


@pytest.fixture(scope="module")
def one_plant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one-plant")
    _run(root, ONE_PLANT, DATES)
    return root


def test_a_movement_out_takes_stock_negative_and_a_receipt_brings_it_back(one_plant: Path) -> None:
    rows = read(one_plant, "stock_exceptions")
    assert list(rows["count_id"]) == ["K1"]  # K0, K2, K4 open no window; K3 and K5 never go below zero
    row = rows.iloc[0]
    # RM, window (K0 06:00, K1 next day 18:00], opening 100:
    #   09:00 C1 -50 -> 50;  12:00 M1 -80 -> -30 (first below zero);  14:00 C2 -20 -> -50 (lowest);
    #   16:00 M2 +120 -> 70;  next day 10:00 C3 -10 -> 60
    assert row["previous_count_id"] == "K0"
    assert row["opening_qty"] == 100.0
    assert row["negative_at"] == pd.Timestamp("2026-03-02T12:00:00Z")
    assert row["negative_date"] == pd.Timestamp("2026-03-02")  # a UTC plant
    assert row["book_qty_at_negative"] == -30.0
    assert row["min_book_qty"] == -50.0
    assert row["min_at"] == pd.Timestamp("2026-03-02T14:00:00Z")
    # the flows up to and including 12:00: M1, and C1's usage of 10 FG x 5 kg
    assert row["movements_qty"] == -80.0
    assert row["receipts_qty"] == 0.0
    assert row["usage_qty"] == 50.0
    # 100 - 80 + 0 - 50 = -30: the stock at the moment
    assert row["largest_flow_kind"] == "movement" and row["largest_flow_id"] == "M1"
    assert row["largest_flow_qty"] == -80.0  # larger than C1's -50
    assert row["uom"] == "KG" and bool(row["backflushed"])
    assert row["plant_id"] == P and row["count_date"] == pd.Timestamp("2026-03-03")  # K1's date
    assert row["counted_qty"] == 50.0


def test_the_last_moment_is_the_variance_book_stock(one_plant: Path) -> None:
    variance = read(one_plant, "variance").set_index("count_id")
    # K1: 100 + (-80 + 120) + 0 - (50 + 20 + 10) = 60, the running stock after C3
    assert variance.loc["K1", "book_qty"] == 60.0
    # K3: 10 - 10 = 0: zero is not below zero, so no exception row
    assert variance.loc["K3", "book_qty"] == 0.0
    # K5: TL is not backflushed, its book is the opening 5
    assert variance.loc["K5", "book_qty"] == 5.0


def test_a_rerun_writes_the_same_rows(one_plant: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(one_plant, tmp_path, dirs_exist_ok=True)
    before = read(tmp_path, "stock_exceptions")
    config = config_for(tmp_path, tmp_path / "landing")
    job.run_dates(config, DATES)  # the same dates again
    again = read(tmp_path, "stock_exceptions")
    pd.testing.assert_frame_equal(before, again)
    # only the count's own date: K1 is dated 2026-03-03, its partition is rewritten whole, the same
    result = job.run_dates(config, [dt.date(2026, 3, 3)])
    pd.testing.assert_frame_equal(before, read(tmp_path, "stock_exceptions"))
    assert result.variance_summary["stock_exceptions"] == 1
    files = sorted(p.relative_to(tmp_path / "warehouse") for p in (tmp_path / "warehouse" / "stock_exceptions")
                   .rglob("*.parquet"))
    assert [str(f) for f in files] == ["stock_exceptions/plant_id=P1/count_date=2026-03-03/part-0.parquet"]


def test_a_corrected_receipt_removes_the_row(one_plant: Path, tmp_path: Path) -> None:
    """M1 was really -30 (a typo): 100 - 50 - 30 = 20 at 12:00, 0 at 14:00, never below zero; the
    re-run (late data on 2026-03-02, found by the look-back) leaves the partition empty."""
    import shutil

    shutil.copytree(one_plant, tmp_path, dirs_exist_ok=True)
    tables = {**ONE_PLANT, "movements": [movement("M1", "RM", "2026-03-02T12:00:00Z", -30),
                                          *ONE_PLANT["movements"][1:]]}
    _run(tmp_path, tables, [dt.date(2026, 3, 3)])
    assert read(tmp_path, "stock_exceptions").empty
    # and the variance was recomputed from the same flows: 100 + (-30 + 120) - 80 = 110
    assert read(tmp_path, "variance").set_index("count_id").loc["K1", "book_qty"] == 110.0
    assert not (tmp_path / "warehouse" / "stock_exceptions" / "plant_id=P1" / "count_date=2026-03-03").exists()


def test_time_zone_midnight_partitions(tmp_path: Path) -> None:
    """A Berlin plant (UTC+1 in March 2026): a moment at 23:30 UTC is 00:30 the next local day."""
    tables = {
        "plants": [{"plant_id": "P2", "timezone": "Europe/Berlin"}],
        "items": ITEMS,
        "bom": BOM,
        "movements": [
            # 10 - 15 = -5 at 2026-03-02T23:30Z = 2026-03-03 00:30 local; + 5 -> 0
            movement("N1", "RM", "2026-03-02T23:30:00Z", -15, plant="P2"),
            movement("N2", "RM", "2026-03-03T06:00:00Z", 5, plant="P2"),
        ],
        "stock_counts": [
            count("Q0", "RM", "2026-03-02T12:00:00Z", 10, plant="P2"),
            # 2026-03-03T23:30Z is 2026-03-04 00:30 in Berlin: the count's date, and partition, is the 4th
            count("Q1", "RM", "2026-03-03T23:30:00Z", 0, plant="P2"),
        ],
    }
    _run(tmp_path, tables, [dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 4)])
    rows = read(tmp_path, "stock_exceptions")
    assert len(rows) == 1
    row = rows.iloc[0]
    assert row["negative_at"] == pd.Timestamp("2026-03-02T23:30:00Z")
    assert row["negative_date"] == pd.Timestamp("2026-03-03")  # local date, not the UTC 2nd
    assert row["count_date"] == pd.Timestamp("2026-03-04")
    assert row["min_book_qty"] == -5.0 and row["book_qty_at_negative"] == -5.0
    assert row["largest_flow_id"] == "N1" and row["movements_qty"] == -15.0
    assert (tmp_path / "warehouse" / "stock_exceptions" / "plant_id=P2" / "count_date=2026-03-04").is_dir()


MANY = {
    "items": ITEMS,
    "bom": BOM[:1],
    # 40 completions of 1 FG, one a minute from 01:01 to 01:40, each using 5 kg RM
    "completions": [completion(f"C{i:02d}", f"2026-03-02T01:{i:02d}:00Z", 1) for i in range(1, 41)],
    "movements": [movement("M9", "RM", "2026-03-02T02:00:00Z", 150)],
    "stock_counts": [count("K0", "RM", "2026-03-02T00:00:00Z", 100),
                     count("K1", "RM", "2026-03-02T20:00:00Z", 50)],
}


@pytest.mark.parametrize(("bucket_rows", "workers"), [(5, 2), (300_000, 1)])
def test_completions_over_several_buckets(tmp_path: Path, bucket_rows: int, workers: int) -> None:
    result = _run(tmp_path, MANY, [dt.date(2026, 3, 2)], bucket_rows=bucket_rows, workers=workers)
    rows = read(tmp_path, "stock_exceptions")
    assert len(rows) == 1
    row = rows.iloc[0]
    # 100 - 5 i: 0 after C20 (not below), -5 after C21 at 01:21; lowest 100 - 200 = -100 after C40
    assert row["negative_at"] == pd.Timestamp("2026-03-02T01:21:00Z")
    assert row["book_qty_at_negative"] == -5.0
    assert row["usage_qty"] == 105.0  # C01..C21: 21 x 5
    assert row["movements_qty"] == 0.0  # M9 comes at 02:00, after the moment
    assert row["min_book_qty"] == -100.0
    assert row["min_at"] == pd.Timestamp("2026-03-02T01:40:00Z")
    # every outflow is -5: the earliest, C01, is named
    assert row["largest_flow_id"] == "C01" and row["largest_flow_kind"] == "usage"
    assert row["largest_flow_qty"] == -5.0
    # the book stock at K1: 100 - 200 + 150 = 50, the count: no variance
    variance = read(tmp_path, "variance").set_index("count_id")
    assert variance.loc["K1", "book_qty"] == 50.0
    assert result.rows_written.get("stock_exceptions") == 1


def test_schema_has_the_partition_columns_apart() -> None:
    schema, partitions = schemas.OUTPUT_DATASETS["stock_exceptions"]
    assert partitions == ("plant_id", "count_date")
    assert not set(partitions) & set(schema.names)


def test_flows_of_one_instant_are_netted_and_ties_name_the_smallest_id(tmp_path: Path) -> None:
    tables = {
        "items": ITEMS,
        "bom": BOM,
        "movements": [
            # PK: 5, then -10 and +10 at the same instant: the stock at 12:00 is 5, never below zero
            movement("P-OUT", "PK", "2026-03-02T12:00:00Z", -10), movement("P-IN", "PK", "2026-03-02T12:00:00Z", 10),
            # RM: 10, then two issues of -7 at the same instant: 10 - 14 = -4 at 12:00
            movement("MB", "RM", "2026-03-02T12:00:00Z", -7), movement("MA", "RM", "2026-03-02T12:00:00Z", -7),
        ],
        "stock_counts": [count("K0", "PK", "2026-03-02T06:00:00Z", 5), count("K1", "PK", "2026-03-02T18:00:00Z", 5),
                         count("K2", "RM", "2026-03-02T06:00:00Z", 10), count("K3", "RM", "2026-03-02T18:00:00Z", 0)],
    }
    _run(tmp_path, tables, [dt.date(2026, 3, 2)])
    rows = read(tmp_path, "stock_exceptions")
    assert list(rows["count_id"]) == ["K3"]
    row = rows.iloc[0]
    assert row["book_qty_at_negative"] == -4.0 and row["movements_qty"] == -14.0
    assert row["largest_flow_id"] == "MA" and row["largest_flow_qty"] == -7.0  # same size, same time: "MA" < "MB"


def test_cli_backfill_and_report_show_the_exception(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline import cli

    landing = make_landing(tmp_path, **ONE_PLANT)
    warehouse = tmp_path / "warehouse"
    common = ["--landing", str(landing), "--warehouse", str(warehouse)]
    assert cli.main(["backfill", *common, "--start", "2026-03-02", "--end", "2026-03-03"]) == 0
    out = capsys.readouterr().out
    # the backfill is one run of both dates (date_batch_days): K1's window, the only one below zero
    assert "stock exceptions: 1 count windows whose book stock went below zero" in out
    page = tmp_path / "report.html"
    assert cli.main(["report", "--warehouse", str(warehouse), "--from", "2026-03-02", "--to", "2026-03-03",
                     "--out", str(page)]) == 0
    html = page.read_text("utf-8")
    section = html[html.index('<section id="stock-exceptions">'):]
    section = section[:section.index("</section>")]
    assert "K1" in section and "movement M1" in section  # the window and its largest outflow
    assert "K3" not in section and "K5" not in section
