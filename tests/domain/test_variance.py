"""Book stock and variance per stock count (semantics 5), end to end, with numbers worked by hand.

Every test writes a small landing folder, runs `job.run_dates` and reads the `variance` (or
`bom_accuracy`, `quarantine`) dataset back from the warehouse. Expected numbers are derived in
the comment next to them, never copied from the pipeline's output.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from pipeline.config import Tolerances, load_config
from tests.support.landing import config_for, make_landing, read, run

P, L = "P1", "L1"


def item(item_id: str, uom: str, cost: float, *, backflush: bool = True, decimals: int = 3) -> dict[str, object]:
    return {"item_id": item_id, "uom": uom, "standard_cost": cost, "phantom": "false",
            "backflush": str(backflush).lower(), "uom_decimals": decimals}


def completion(cid: str, at: str, qty_good: float, *, item_id: str = "FG", qty_scrap: float = 0.0,
               location: str = L) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": P, "location_id": location, "item_id": item_id,
            "qty_good": qty_good, "qty_scrap": qty_scrap, "completed_at": at}


def count(cid: str, item_id: str, at: str, qty: object, *, location: str = L) -> dict[str, object]:
    return {"count_id": cid, "plant_id": P, "location_id": location, "item_id": item_id,
            "counted_qty": qty, "counted_at": at}


def movement(mid: str, item_id: str, at: str, qty: float, kind: str = "receipt") -> dict[str, object]:
    return {"movement_id": mid, "plant_id": P, "location_id": L, "item_id": item_id, "qty": qty,
            "moved_at": at, "kind": kind}


def variance_by_count(root: Path) -> pd.DataFrame:
    return read(root, "variance").set_index("count_id")


# ------------------------------------------------------------------ the worked example

WORKED = {
    "items": [item("FG", "EA", 10.0, decimals=0), item("RM", "KG", 3.0)],
    "bom": [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}],
    "completions": [completion("C1", "2026-03-02T10:00:00Z", 100)],
    "movements": [movement("M1", "RM", "2026-03-02T08:00:00Z", 600)],
    "stock_counts": [count("K0", "RM", "2026-03-02T06:00:00Z", 1000),
                     count("K1", "RM", "2026-03-02T18:00:00Z", 1070)],
}


@pytest.fixture(scope="module")
def worked_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("worked")
    run(root, make_landing(root, **WORKED), ["2026-03-02"])
    return root


@pytest.fixture(scope="module")
def worked(worked_root: Path) -> pd.DataFrame:
    return variance_by_count(worked_root)


def test_worked_example_book_stock_and_variance(worked: pd.DataFrame) -> None:
    k1 = worked.loc["K1"]
    assert k1["previous_counted_at"] == pd.Timestamp("2026-03-02T06:00:00Z")
    assert k1["opening_qty"] == 1000.0  # K0's counted quantity
    assert k1["movements_qty"] == 600.0  # the receipt M1
    assert k1["receipts_qty"] == 0.0  # RM is never produced
    assert k1["theoretical_usage_qty"] == 500.0  # 100 FG x 5 kg
    assert k1["book_qty"] == 1100.0  # 1,000 + 600 + 0 - 500
    assert k1["counted_qty"] == 1070.0
    assert k1["variance_qty"] == -30.0  # 1,070 - 1,100
    assert k1["variance_value"] == pytest.approx(-90.0)  # -30 kg x 3.00
    assert k1["usage_variance_pct"] == pytest.approx(6.0)  # -(-30) / 500 x 100: 6 % more used than the BOM says
    # default tolerances: |-30| > 0 kg and |-90.00| > 50.00 and |6 %| > 5 %
    assert k1["status"] == "over_tolerance"
    assert k1["uom"] == "KG" and bool(k1["backflushed"]) and k1["standard_cost"] == 3.0
    assert k1["count_date"] == pd.Timestamp("2026-03-02")


def test_first_count_is_a_baseline_without_variance(worked: pd.DataFrame) -> None:
    k0 = worked.loc["K0"]
    assert k0["status"] == "baseline"
    assert k0["counted_qty"] == 1000.0  # the count itself is kept
    for column in ("opening_qty", "movements_qty", "receipts_qty", "theoretical_usage_qty", "book_qty",
                   "variance_qty", "variance_value", "usage_variance_pct"):
        assert pd.isna(k0[column]), column
    assert pd.isna(k0["previous_counted_at"])


@pytest.mark.parametrize(
    ("tolerances", "status"),
    [
        (Tolerances(abs_value=100.0), "ok"),  # |-90.00| <= 100.00 blocks it
        (Tolerances(abs_qty=30.0), "ok"),  # |-30| kg is not > 30 kg: a variance exactly at the bound is within
        (Tolerances(abs_qty=29.999), "over_tolerance"),  # 30 > 29.999; 90 > 50; 6 > 5
        (Tolerances(abs_qty=None, abs_value=None, pct=6.0), "ok"),  # |6 %| is not > 6 %
        (Tolerances(abs_qty=None, abs_value=None, pct=5.99), "over_tolerance"),  # 6 % > 5.99 %
        (Tolerances(abs_qty=None, abs_value=None, pct=None), "over_tolerance"),  # no bound: every variance
    ],
)
def test_status_follows_the_configured_tolerances(worked_root: Path, tmp_path: Path, tolerances: Tolerances,
                                                  status: str) -> None:
    assert variance_by_count(worked_root).loc["K1", "status"] == "over_tolerance"  # defaults, as above
    shutil.copytree(worked_root, tmp_path, dirs_exist_ok=True)
    config = config_for(tmp_path, tmp_path / "landing", tolerances=tolerances)
    # the same date re-run under changed tolerances rewrites the status
    job.run_dates(config, [dt.date(2026, 3, 2)])
    rows = variance_by_count(tmp_path)
    assert len(rows) == 2
    assert rows.loc["K1", "status"] == status
    assert rows.loc["K1", "variance_qty"] == -30.0  # the numbers do not depend on the tolerances


def test_tolerances_from_a_config_file(worked_root: Path, tmp_path: Path) -> None:
    shutil.copytree(worked_root, tmp_path, dirs_exist_ok=True)
    config_file = tmp_path / "backflush.toml"
    config_file.write_text("landing = 'landing'\nwarehouse = 'warehouse'\n\n[tolerances]\nabs_value = 90.0\n")
    job.run_dates(load_config(config_file), [dt.date(2026, 3, 2)])
    assert variance_by_count(tmp_path).loc["K1", "status"] == "ok"  # |-90.00| is not > 90.00


def test_re_running_a_date_rewrites_the_same_variance(worked_root: Path, tmp_path: Path) -> None:
    shutil.copytree(worked_root, tmp_path, dirs_exist_ok=True)
    before = variance_by_count(tmp_path)
    job.run_dates(config_for(tmp_path, tmp_path / "landing"), [dt.date(2026, 3, 2)])
    pd.testing.assert_frame_equal(variance_by_count(tmp_path), before)


def test_a_zero_variance_is_ok(tmp_path: Path) -> None:
    counts = [count("K0", "RM", "2026-03-02T06:00:00Z", 1000), count("K1", "RM", "2026-03-02T18:00:00Z", 1100)]
    run(tmp_path, make_landing(tmp_path, **{**WORKED, "stock_counts": counts}), ["2026-03-02"])
    k1 = variance_by_count(tmp_path).loc["K1"]
    assert k1["variance_qty"] == 0.0  # 1,100 - (1,000 + 600 - 500)
    assert k1["usage_variance_pct"] == 0.0  # -0 / 500 x 100
    assert k1["status"] == "ok"


# ------------------------------------------------------------------ windows: (previous counted_at, counted_at]


def test_a_count_mid_day_sees_the_morning_and_not_the_afternoon(tmp_path: Path) -> None:
    landing = make_landing(
        tmp_path,
        items=WORKED["items"],
        bom=WORKED["bom"],
        completions=[
            completion("C1", "2026-03-02T06:00:00Z", 10),  # exactly at K0: before K1's window
            completion("C2", "2026-03-02T09:00:00Z", 20),  # morning: K1
            completion("C3", "2026-03-02T14:00:00Z", 30),  # exactly at K1: K1
            completion("C4", "2026-03-02T14:00:00.000001Z", 40),  # a microsecond after K1: K2
        ],
        movements=[
            movement("M0", "RM", "2026-03-02T06:00:00Z", 1000),  # exactly at K0: already in K0
            movement("M1", "RM", "2026-03-02T14:00:00Z", 300),  # exactly at K1: K1
            movement("M2", "RM", "2026-03-02T18:00:00Z", -50, "shipment"),  # exactly at K2: K2
        ],
        stock_counts=[
            count("K0", "RM", "2026-03-02T06:00:00Z", 1000),
            count("K1", "RM", "2026-03-02T14:00:00Z", 1040),
            count("K2", "RM", "2026-03-02T18:00:00Z", 800),
        ],
    )
    run(tmp_path, landing, ["2026-03-02"])
    rows = variance_by_count(tmp_path)
    k1, k2 = rows.loc["K1"], rows.loc["K2"]
    assert k1["movements_qty"] == 300.0  # M1 only (M0 is at K0's instant, excluded)
    assert k1["theoretical_usage_qty"] == 250.0  # (C2 20 + C3 30) FG x 5 kg; C1 at K0 is excluded
    assert k1["book_qty"] == 1050.0  # 1,000 + 300 - 250
    assert k1["variance_qty"] == -10.0  # 1,040 - 1,050
    assert k1["variance_value"] == pytest.approx(-30.0)  # -10 x 3.00
    assert k1["usage_variance_pct"] == pytest.approx(4.0)  # 10 / 250 x 100
    assert k1["status"] == "ok"  # |-30.00| <= 50.00 (and 4 % <= 5 %)

    assert k2["previous_counted_at"] == pd.Timestamp("2026-03-02T14:00:00Z")
    assert k2["opening_qty"] == 1040.0  # K1's counted quantity, not its book
    assert k2["movements_qty"] == -50.0  # M2, exactly at K2's instant, is included
    assert k2["theoretical_usage_qty"] == 200.0  # C4 40 FG x 5 kg
    assert k2["book_qty"] == 790.0  # 1,040 - 50 - 200
    assert k2["variance_qty"] == 10.0  # 800 - 790
    assert k2["usage_variance_pct"] == pytest.approx(-5.0)  # -10 / 200 x 100: less used than the BOM says
    assert k2["status"] == "ok"  # |+30.00| <= 50.00; and |-5 %| is not > 5 %


def test_variance_over_several_days_and_daily_runs(tmp_path: Path) -> None:
    landing = make_landing(
        tmp_path,
        items=WORKED["items"],
        bom=WORKED["bom"],
        completions=[completion("C1", "2026-03-03T10:00:00Z", 100),
                     completion("C2", "2026-03-04T10:00:00Z", 60),
                     completion("C3", "2026-03-05T10:00:00Z", 10)],  # after K1: in no window yet
        movements=[movement("M1", "RM", "2026-03-03T07:00:00Z", 400),
                   movement("M2", "RM", "2026-03-04T19:00:00Z", 99)],  # after K1
        stock_counts=[count("K0", "RM", "2026-03-02T18:00:00Z", 1000),
                      count("K1", "RM", "2026-03-04T18:00:00Z", 590)],
    )
    for day in ("2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"):
        run(tmp_path, landing, [day])
    rows = variance_by_count(tmp_path)
    k1 = rows.loc["K1"]
    assert k1["count_date"] == pd.Timestamp("2026-03-04")
    assert k1["movements_qty"] == 400.0  # M1; M2 is after the count
    assert k1["theoretical_usage_qty"] == 800.0  # (100 + 60) FG x 5 kg over two days
    assert k1["book_qty"] == 600.0  # 1,000 + 400 - 800
    assert k1["variance_qty"] == -10.0  # 590 - 600
    assert k1["variance_value"] == pytest.approx(-30.0)  # -10 x 3.00
    assert k1["usage_variance_pct"] == pytest.approx(1.25)  # 10 / 800 x 100
    assert k1["status"] == "ok"
    assert rows.loc["K0", "status"] == "baseline"
    assert len(rows) == 2


def test_count_dates_are_plant_local_and_locations_do_not_mix(tmp_path: Path) -> None:
    landing = make_landing(
        tmp_path,
        plants=[{"plant_id": P, "timezone": "Europe/Berlin"}],  # UTC+1 in March
        items=WORKED["items"],
        bom=WORKED["bom"],
        completions=[completion("C1", "2026-03-02T23:15:00Z", 10),  # 00:15 on 3 March in Berlin
                     completion("C2", "2026-03-02T23:15:00Z", 99, location="L2")],  # another location
        movements=[movement("M1", "RM", "2026-03-02T12:00:00Z", 100)],
        stock_counts=[count("K0", "RM", "2026-03-01T22:30:00Z", 1000),  # 23:30 on 1 March in Berlin
                      count("K1", "RM", "2026-03-02T23:30:00Z", 1040)],  # 00:30 on 3 March in Berlin
    )
    run(tmp_path, landing, ["2026-03-03"])
    k1 = variance_by_count(tmp_path).loc["K1"]
    assert k1["count_date"] == pd.Timestamp("2026-03-03")  # its date in Berlin, not in UTC (2 March)
    assert k1["theoretical_usage_qty"] == 50.0  # C1 10 FG x 5 kg; C2 is at L2
    assert k1["book_qty"] == 1050.0  # 1000 + 100 - 50
    assert k1["variance_qty"] == -10.0  # 1040 - 1050


# ------------------------------------------------------------------ receipts, by-products, hand-issued items

MIXED = {
    "items": [item("FG", "EA", 10.0, decimals=0), item("RM", "KG", 3.0),
              item("PK", "EA", 0.5, backflush=False, decimals=0), item("BP", "KG", 1.0)],
    "bom": [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5},
            {"parent_item_id": "FG", "component_item_id": "PK", "qty_per": 1},
            {"parent_item_id": "FG", "component_item_id": "BP", "qty_per": -0.2}],  # a by-product
    "completions": [completion("C1", "2026-03-02T10:00:00Z", 100, qty_scrap=5)],
    "movements": [movement("M1", "PK", "2026-03-02T09:00:00Z", -95, "issue"),
                  movement("M2", "BP", "2026-03-02T11:00:00Z", -10, "shipment"),
                  movement("M3", "FG", "2026-03-02T12:00:00Z", -60, "shipment")],
    "stock_counts": [count("K0-PK", "PK", "2026-03-02T06:00:00Z", 500),
                     count("K1-PK", "PK", "2026-03-02T18:00:00Z", 400),
                     count("K0-BP", "BP", "2026-03-02T06:00:00Z", 50),
                     count("K1-BP", "BP", "2026-03-02T18:00:00Z", 58),
                     count("K0-FG", "FG", "2026-03-02T06:00:00Z", 0),
                     count("K1-FG", "FG", "2026-03-02T18:00:00Z", 40),
                     count("K0-RM", "RM", "2026-03-02T06:00:00Z", 1000),
                     count("K1-RM", "RM", "2026-03-02T18:00:00Z", 470)],
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("mixed")
    run(root, make_landing(root, **MIXED), ["2026-03-02"])
    return variance_by_count(root)


def test_a_hand_issued_item_is_booked_from_its_movements(mixed: pd.DataFrame) -> None:
    pk = mixed.loc["K1-PK"]
    assert not bool(pk["backflushed"])
    assert pk["theoretical_usage_qty"] == 105.0  # (100 good + 5 scrap) FG x 1: reported ...
    assert pk["movements_qty"] == -95.0  # ... but the issue that counts is the manual one
    assert pk["book_qty"] == 405.0  # 500 - 95; the theoretical 105 is not subtracted
    assert pk["variance_qty"] == -5.0  # 400 - 405
    assert pk["variance_value"] == pytest.approx(-2.5)  # -5 x 0.50
    assert pd.isna(pk["usage_variance_pct"])  # not backflushed: no usage variance
    assert pk["status"] == "ok"  # |-2.50| <= 50.00; a null % does not decide


def test_by_product_receipts_are_receipts(mixed: pd.DataFrame) -> None:
    bp = mixed.loc["K1-BP"]
    assert bp["receipts_qty"] == pytest.approx(21.0)  # (100 + 5) FG x 0.2 kg received; scrap is ignored on by-product lines
    assert bp["movements_qty"] == -10.0  # M2
    assert bp["theoretical_usage_qty"] == 0.0  # a by-product is never consumed
    assert bp["book_qty"] == pytest.approx(61.0)  # 50 - 10 + 21
    assert bp["variance_qty"] == pytest.approx(-3.0)  # 58 - 61
    assert bp["variance_value"] == pytest.approx(-3.0)  # -3 x 1.00
    assert pd.isna(bp["usage_variance_pct"])  # no usage to compare with
    assert bp["status"] == "ok"


def test_production_receipts_count_good_units_only(mixed: pd.DataFrame) -> None:
    fg = mixed.loc["K1-FG"]
    assert fg["receipts_qty"] == 100.0  # the 100 good units; the 5 scrapped are not received
    assert fg["movements_qty"] == -60.0  # M3
    assert fg["book_qty"] == 40.0  # 0 - 60 + 100
    assert fg["variance_qty"] == 0.0  # 40 - 40
    assert fg["status"] == "ok"


def test_scrapped_units_consume_components_too(mixed: pd.DataFrame) -> None:
    rm = mixed.loc["K1-RM"]
    assert rm["theoretical_usage_qty"] == 525.0  # (100 good + 5 scrap) x 5 kg
    assert rm["book_qty"] == 475.0  # 1,000 - 525
    assert rm["variance_qty"] == -5.0  # 470 - 475
    assert rm["usage_variance_pct"] == pytest.approx(100 * 5 / 525)  # 0.952 %


# ------------------------------------------------------------------ rounding happens only on write


def test_quantities_are_rounded_only_when_written(tmp_path: Path) -> None:
    landing = make_landing(
        tmp_path,
        items=[item("FG", "EA", 1.0, decimals=0), item("GR", "KG", 100.0, decimals=1)],
        bom=[{"parent_item_id": "FG", "component_item_id": "GR", "qty_per": 0.04}],
        completions=[completion(f"C{i}", f"2026-03-02T1{i}:00:00Z", 1) for i in range(3)],
        movements=[movement("M1", "GR", "2026-03-02T09:00:00Z", 0.07),
                   movement("M2", "GR", "2026-03-02T09:30:00Z", 0.07)],
        stock_counts=[count("K0", "GR", "2026-03-02T06:00:00Z", 10), count("K1", "GR", "2026-03-02T18:00:00Z", 10)],
    )
    run(tmp_path, landing, ["2026-03-02"])
    k1 = variance_by_count(tmp_path).loc["K1"]
    # unrounded: usage 3 x 0.04 = 0.12, movements 0.07 + 0.07 = 0.14, book 10 + 0.14 - 0.12 = 10.02,
    # variance 10 - 10.02 = -0.02 (kg)
    assert k1["theoretical_usage_qty"] == 0.1  # 0.12 written at 1 decimal
    assert k1["movements_qty"] == 0.1  # 0.14 written at 1 decimal
    assert k1["book_qty"] == 10.0  # 10.02 written at 1 decimal
    assert k1["variance_qty"] == 0.0  # -0.02 written at 1 decimal (and not -0.0)
    assert str(k1["variance_qty"]) == "0.0"
    assert k1["variance_value"] == pytest.approx(-2.0)  # -0.02 kg x 100.00: from the unrounded variance
    assert k1["usage_variance_pct"] == pytest.approx(100 * 0.02 / 0.12)  # 16.67 %, from unrounded quantities
    # rounding first would give 10 + 0.1 - 0.1 = 10.0, variance 0, value 0.00, 0 %
    assert k1["status"] == "ok"  # |-2.00| <= 50.00


# ------------------------------------------------------------------ counts that cannot be booked


def test_bad_counts_are_quarantined(tmp_path: Path) -> None:
    counts = [*WORKED["stock_counts"],
              count("K-UNKNOWN-ITEM", "NOPE", "2026-03-02T18:00:00Z", 5),
              count("K-NEGATIVE", "RM", "2026-03-02T18:00:00Z", -1),
              count("K-NOT-A-NUMBER", "RM", "2026-03-02T18:00:00Z", "lots"),
              count("K-NO-TIME", "RM", "yesterday", 3)]
    run(tmp_path, make_landing(tmp_path, **{**WORKED, "stock_counts": counts}), ["2026-03-02"])
    assert sorted(variance_by_count(tmp_path).index) == ["K0", "K1"]  # the bad ones are not booked
    q = read(tmp_path, "quarantine")
    q = q[q["table"] == "stock_counts"].set_index("source_key")
    assert sorted(q.index) == ["K-NEGATIVE", "K-NO-TIME", "K-NOT-A-NUMBER", "K-UNKNOWN-ITEM"]
    assert q.loc["K-UNKNOWN-ITEM", "error_code"] == "UNKNOWN_ITEM"
    assert "NOPE" in q.loc["K-UNKNOWN-ITEM", "message"]
    for key in ("K-NEGATIVE", "K-NOT-A-NUMBER", "K-NO-TIME"):
        assert q.loc[key, "error_code"] == "INVALID"
    assert "counted_qty" in q.loc["K-NOT-A-NUMBER", "message"]
    assert "counted_at" in q.loc["K-NO-TIME", "message"]
    # the unreadable timestamp has no business date of its own: it lands on the run's date
    assert q.loc["K-NO-TIME", "business_date"] == pd.Timestamp("2026-03-02")
    # the rejected rows do not break K1's window: it is the same as in the worked example
    assert variance_by_count(tmp_path).loc["K1", "variance_qty"] == -30.0  # 1,070 - 1,100


def test_counts_at_a_location_without_completions_or_movements_get_variance_rows(tmp_path: Path) -> None:
    """Issue 12's decision: L9 has no completions and no movements, yet it is a stock point. Its first
    count (K9a, 5 kg) is a baseline; the next (K9b, 4 kg) has book stock = the opening 5 (nothing flowed),
    so variance = 4 - 5 = -1 kg, valued at 3.00/kg = -3.00, and no row is quarantined."""
    counts = [*WORKED["stock_counts"], count("K9a", "RM", "2026-03-02T07:00:00Z", 5, location="L9"),
              count("K9b", "RM", "2026-03-02T19:00:00Z", 4, location="L9")]
    run(tmp_path, make_landing(tmp_path, **{**WORKED, "stock_counts": counts}), ["2026-03-02"])
    got = variance_by_count(tmp_path)
    assert got.loc["K9a", "status"] == "baseline" and got.loc["K9a", "counted_qty"] == 5.0
    assert pd.isna(got.loc["K9a", "book_qty"])
    k9b = got.loc["K9b"]
    assert (k9b["opening_qty"], k9b["movements_qty"], k9b["receipts_qty"], k9b["theoretical_usage_qty"]) == (
        5.0, 0.0, 0.0, 0.0)
    assert (k9b["book_qty"], k9b["variance_qty"], k9b["variance_value"]) == (5.0, -1.0, -3.0)
    assert got.loc["K1", "variance_qty"] == -30.0  # L1 is unaffected: 1,070 - 1,100
    q = read(tmp_path, "quarantine")
    assert q[q["table"] == "stock_counts"].empty


# ------------------------------------------------------------------ BOM accuracy


def _daily_counts(item_id: str, quantities: list[float]) -> list[dict[str, object]]:
    """Counts at 18:00 on 1, 2, 3, ... March."""
    return [count(f"K{i}-{item_id}", item_id, f"2026-03-{i + 1:02d}T18:00:00Z", q) for i, q in enumerate(quantities)]


BOM_ACCURACY = {
    "items": [item("FG", "EA", 10.0, decimals=0), item("RM", "KG", 3.0), item("GL", "KG", 2.0),
              item("OL", "KG", 2.0), item("SC", "KG", 1.0), item("LB", "EA", 0.1, decimals=0)],
    "bom": [
        {"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5, "scrap_pct": 2},  # 5.1 kg per FG
        {"parent_item_id": "FG", "component_item_id": "GL", "qty_per": 1, "scrap_pct": 0},
        {"parent_item_id": "FG", "component_item_id": "OL", "qty_per": 1, "scrap_pct": 0},
        {"parent_item_id": "FG", "component_item_id": "SC", "qty_per": 2, "scrap_pct": 0},
        {"parent_item_id": "FG", "component_item_id": "LB", "qty_per": 1, "scrap_pct": 0},
    ],
    # 100 FG on each of 2, 3 and 4 March
    "completions": [completion(f"C{d}", f"2026-03-0{d}T10:00:00Z", 100) for d in (2, 3, 4)],
    "movements": [movement(f"M{d}", "RM", f"2026-03-0{d}T08:00:00Z", 600) for d in (2, 3, 4)],
    "stock_counts": [
        # RM: 510 kg theoretical a day (100 x 5 x 1.02), 540 used: variance -30 every day
        # 1000 -> 1000 + 600 - 540 = 1060 -> 1120 -> 1180
        *_daily_counts("RM", [1000, 1060, 1120, 1180]),
        # GL: 100 kg a day; variances -8, -9, +1: 1000 -> 892 -> 783 -> 684
        *_daily_counts("GL", [1000, 892, 783, 684]),
        # OL: 100 kg a day; variances -30, -1, -1: one bad count, then noise: 1000 -> 870 -> 769 -> 668
        *_daily_counts("OL", [1000, 870, 769, 668]),
        # SC: 200 kg a day; variances +12 every day: 1000 -> 812 -> 624 -> 436
        *_daily_counts("SC", [1000, 812, 624, 436]),
        # LB: 100 a day, counted on 1, 3 and 4 March only, no variance: 1000 -> 800 -> 700
        count("K0-LB", "LB", "2026-03-01T18:00:00Z", 1000),
        count("K2-LB", "LB", "2026-03-03T18:00:00Z", 800),
        count("K3-LB", "LB", "2026-03-04T18:00:00Z", 700),
    ],
}


@pytest.fixture(scope="module")
def accuracy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("accuracy")
    run(root, make_landing(root, **BOM_ACCURACY), ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"])
    return root


def test_bom_accuracy_flags_a_component_used_more_than_its_bom(accuracy_root: Path) -> None:
    acc = read(accuracy_root, "bom_accuracy").set_index("component_item_id")
    rm = acc.loc["RM"]
    assert rm["plant_id"] == P
    assert rm["counts"] == 3  # the counts of 2, 3 and 4 March (1 March is the baseline)
    assert rm["theoretical_usage_qty"] == pytest.approx(1530.0)  # 3 x 510
    assert rm["actual_usage_qty"] == pytest.approx(1620.0)  # 3 x (510 + 30)
    assert rm["usage_ratio"] == pytest.approx(1620 / 1530)  # 1.0588: 5.88 % more than the BOM
    assert rm["planned_scrap_pct"] == 2.0
    # realised scrap: 1.02 x 1620 / 1530 - 1 = 1.08 - 1: each FG used 5 x 1.08 = 5.4 kg
    assert rm["realised_scrap_pct"] == pytest.approx(8.0)
    assert rm["flag"] == "bom_qty_low"  # 5.88 % > 5 % pooled, and the median count (5.88 %) too
    assert rm["first_counted_at"] == pd.Timestamp("2026-03-02T18:00:00Z")
    assert rm["last_counted_at"] == pd.Timestamp("2026-03-04T18:00:00Z")


def test_bom_accuracy_judges_persistence_by_the_median_count(accuracy_root: Path) -> None:
    acc = read(accuracy_root, "bom_accuracy").set_index("component_item_id")
    gl = acc.loc["GL"]
    assert gl["actual_usage_qty"] == pytest.approx(316.0)  # 300 + 8 + 9 - 1
    assert gl["realised_scrap_pct"] == pytest.approx(16 / 3)  # 316 / 300 - 1 = 5.33 %
    # per count: 8 %, 9 %, -1 %: median 8 % > 5 %, pooled 5.33 % > 5 %: one count of the other
    # sign does not hide a BOM that is short in most counts
    assert gl["flag"] == "bom_qty_low"
    ol = acc.loc["OL"]
    assert ol["actual_usage_qty"] == pytest.approx(332.0)  # 300 + 30 + 1 + 1
    assert ol["realised_scrap_pct"] == pytest.approx(32 / 3)  # 332 / 300 - 1 = 10.67 %
    # per count: 30 %, 1 %, 1 %: median 1 %: one bad count is an event, not a wrong BOM
    assert ol["flag"] == "ok"
    sc = acc.loc["SC"]
    assert sc["actual_usage_qty"] == pytest.approx(564.0)  # 600 - 3 x 12
    assert sc["realised_scrap_pct"] == pytest.approx(-6.0)  # 564 / 600 - 1
    assert sc["flag"] == "bom_qty_high"  # -6 % pooled and median, beyond -5 %
    lb = acc.loc["LB"]
    assert lb["counts"] == 2  # 3 March (a two-day window: 200 used) and 4 March (100 used)
    assert lb["theoretical_usage_qty"] == pytest.approx(300.0)  # 200 + 100
    assert lb["realised_scrap_pct"] == pytest.approx(0.0)  # 300 / 300 - 1
    assert lb["flag"] == "insufficient_counts"  # 2 < 3 counts
    assert set(acc.index) == {"RM", "GL", "OL", "SC", "LB"}  # FG is produced, not consumed


def test_bom_accuracy_uses_the_configured_trailing_counts(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, **BOM_ACCURACY)
    config = config_for(tmp_path, landing, bom_accuracy_counts=2)
    job.run_dates(config, [dt.date(2026, 3, d) for d in (1, 2, 3, 4)])
    acc = read(tmp_path, "bom_accuracy").set_index("component_item_id")
    assert acc.loc["RM", "counts"] == 2  # the last two of three checked counts
    assert acc.loc["RM", "first_counted_at"] == pd.Timestamp("2026-03-03T18:00:00Z")
    assert acc.loc["RM", "realised_scrap_pct"] == pytest.approx(8.0)  # 1.02 x 1080 / 1020 - 1
    assert acc.loc["RM", "flag"] == "insufficient_counts"  # 2 < 3
    assert acc.loc["GL", "actual_usage_qty"] == pytest.approx(208.0)  # last two counts: 200 + 9 - 1
