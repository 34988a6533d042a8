"""The `postings` ledger: appended deltas sum to the adjustments; re-runs append nothing;
corrections append their difference; cancellations reverse. Numbers worked by hand.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support.landing import FG_AND_RM, make_landing, read, run, write_table

P, L = "P1", "L1"
KEY = ["plant_id", "business_date", "location_id", "item_id", "kind"]
ITEMS = FG_AND_RM
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}]
COUNTS = [
    {"count_id": "K0", "plant_id": P, "location_id": L, "item_id": "RM", "counted_qty": 1000,
     "counted_at": "2026-03-02T06:00:00Z"},
    {"count_id": "K1", "plant_id": P, "location_id": L, "item_id": "RM", "counted_qty": 1070,
     "counted_at": "2026-03-02T18:00:00Z"},
]
MOVEMENTS = [{"movement_id": "M1", "plant_id": P, "location_id": L, "item_id": "RM", "qty": 600,
              "moved_at": "2026-03-02T08:00:00Z", "kind": "receipt"}]


def completion(cid: str, at: str, qty_good: float, *, recorded_at: str | None = None,
               qty_scrap: float = 0.0) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": P, "location_id": L, "item_id": "FG", "qty_good": qty_good,
            "qty_scrap": qty_scrap, "completed_at": at, "recorded_at": recorded_at or at}


def ledger_sums(root: Path) -> pd.Series:
    """sum(qty_delta) per key."""
    return read(root, "postings").groupby(KEY)["qty_delta"].sum()


def assert_ledger_matches_adjustments(root: Path) -> None:
    """For every key, sum(qty_delta) == adjustments.qty; keys missing from adjustments sum to 0."""
    posted = ledger_sums(root)
    wanted = read(root, "adjustments").set_index(KEY)["qty"]
    assert not wanted.index.duplicated().any()
    keys = posted.index.union(wanted.index)
    diff = posted.reindex(keys, fill_value=0.0) - wanted.reindex(keys, fill_value=0.0)
    assert (diff.abs() < 1e-9).all(), diff[diff.abs() >= 1e-9]


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return make_landing(
        tmp_path, items=ITEMS, bom=BOM, stock_counts=COUNTS, movements=MOVEMENTS,
        completions=[completion("C1", "2026-03-02T10:00:00Z", 100), completion("C2", "2026-03-03T10:00:00Z", 40)],
    )


def test_the_first_run_posts_the_adjustments(tmp_path: Path, landing: Path) -> None:
    result = run(tmp_path, landing, ["2026-03-02"])
    postings = read(tmp_path, "postings").set_index("item_id")
    assert sorted(postings.index) == ["FG", "RM"]
    assert postings.loc["FG", "kind"] == "production_receipt"
    assert postings.loc["FG", "qty_delta"] == 100.0  # C1's 100 good units
    assert postings.loc["FG", "uom"] == "EA"
    assert postings.loc["RM", "kind"] == "backflush_issue"
    assert postings.loc["RM", "qty_delta"] == -500.0  # 100 FG x 5 kg, issued: negative
    assert postings.loc["RM", "uom"] == "KG"
    assert set(postings["run_id"]) == {result.run_id}
    assert set(postings["business_date"]) == {day("2026-03-02")}  # C2 (3 March) was not asked for
    assert set(postings["posted_at"]) == {result.started_at}
    assert postings["posting_id"].is_unique
    adjustments = read(tmp_path, "adjustments").set_index("item_id")
    assert (postings["adjustment_id"] == adjustments.loc[postings.index, "adjustment_id"]).all()
    assert result.rows_written["postings"] == 2
    assert_ledger_matches_adjustments(tmp_path)


def test_re_running_a_date_or_a_range_over_unchanged_input_appends_nothing(tmp_path: Path, landing: Path) -> None:
    run(tmp_path, landing, ["2026-03-02"])
    again = run(tmp_path, landing, ["2026-03-02"])
    assert again.rows_written.get("postings", 0) == 0
    assert len(read(tmp_path, "postings")) == 2  # still the first run's two rows

    both = run(tmp_path, landing, ["2026-03-02", "2026-03-03"])
    assert both.rows_written.get("postings", 0) == 2  # only 3 March is new: FG +40, RM -200
    sums = ledger_sums(tmp_path)
    assert sums[(P, day("2026-03-03"), L, "FG", "production_receipt")] == 40.0  # C2's 40 good units
    assert sums[(P, day("2026-03-03"), L, "RM", "backflush_issue")] == -200.0  # 40 x 5 kg
    assert run(tmp_path, landing, ["2026-03-02", "2026-03-03"]).rows_written.get("postings", 0) == 0
    assert run(tmp_path, landing, ["2026-03-03"]).rows_written.get("postings", 0) == 0
    assert len(read(tmp_path, "postings")) == 4  # 2 + 2, nothing since
    assert_ledger_matches_adjustments(tmp_path)


def test_a_correction_appends_exactly_its_difference_and_a_new_variance(tmp_path: Path, landing: Path) -> None:
    first = run(tmp_path, landing, ["2026-03-02"])
    assert read(tmp_path, "variance").set_index("count_id").loc["K1", "variance_qty"] == -30.0  # 1070 - (1000 + 600 - 500)
    write_table(landing, "completions", [
        completion("C1", "2026-03-02T10:00:00Z", 120, recorded_at="2026-03-02T20:00:00Z"),  # the correction
        completion("C1", "2026-03-02T10:00:00Z", 90, recorded_at="2026-03-02T09:00:00Z"),  # an older version: ignored
    ], name="corrections.csv")
    second = run(tmp_path, landing, ["2026-03-02"])
    postings = read(tmp_path, "postings")
    new = postings[postings["run_id"] == second.run_id].set_index("item_id")
    assert len(new) == 2 and second.rows_written["postings"] == 2
    assert new.loc["FG", "qty_delta"] == 20.0  # 120 - 100
    assert new.loc["RM", "qty_delta"] == -100.0  # -(120 x 5) - (-500)
    assert len(postings[postings["run_id"] == first.run_id]) == 2  # the first run's rows stay: append-only
    sums = ledger_sums(tmp_path)
    assert sums[(P, day("2026-03-02"), L, "FG", "production_receipt")] == 120.0  # 100 + 20
    assert sums[(P, day("2026-03-02"), L, "RM", "backflush_issue")] == -600.0  # -500 - 100
    assert_ledger_matches_adjustments(tmp_path)

    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert k1["theoretical_usage_qty"] == 600.0  # 120 x 5
    assert k1["book_qty"] == 1000.0  # 1000 + 600 - 600
    assert k1["variance_qty"] == 70.0  # 1070 - 1000
    assert k1["variance_value"] == pytest.approx(210.0)  # 70 x 3.00
    assert k1["usage_variance_pct"] == pytest.approx(-70 / 600 * 100)  # -11.67 %: less used than the BOM says
    assert k1["status"] == "over_tolerance"  # 70 > 0, 210 > 50, 11.67 % > 5 %


def test_a_cancellation_reverses_its_postings(tmp_path: Path, landing: Path) -> None:
    run(tmp_path, landing, ["2026-03-02"])
    write_table(landing, "completions", [
        completion("C1", "2026-03-02T10:00:00Z", 0, recorded_at="2026-03-02T20:00:00Z"),  # cancelled
    ], name="cancellations.csv")
    cancel = run(tmp_path, landing, ["2026-03-02"])
    new = read(tmp_path, "postings")
    new = new[new["run_id"] == cancel.run_id].set_index("item_id")
    assert new.loc["FG", "qty_delta"] == -100.0  # reverses the receipt of 100
    assert new.loc["RM", "qty_delta"] == 500.0  # gives back the 500 kg issued
    assert len(new) == 2
    sums = ledger_sums(tmp_path)
    assert (sums == 0).all()  # every key of 2 March sums to nothing
    adjustments = read(tmp_path, "adjustments")
    assert (adjustments.loc[adjustments["business_date"] == day("2026-03-02"), "qty"] == 0).all()
    assert_ledger_matches_adjustments(tmp_path)
    assert run(tmp_path, landing, ["2026-03-02"]).rows_written.get("postings", 0) == 0  # and stays reversed

    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert k1["theoretical_usage_qty"] == 0.0  # nothing produced any more
    assert k1["book_qty"] == 1600.0  # 1000 + 600
    assert k1["variance_qty"] == -530.0  # 1070 - 1600
    assert pd.isna(k1["usage_variance_pct"])  # no usage to compare with
    assert k1["status"] == "over_tolerance"  # 530 > 0 and 1,590.00 > 50.00; a null % does not block


# ------------------------------------------------------------------ property: any sequence of runs

DAYS = [dt.date(2026, 3, 2) + dt.timedelta(days=i) for i in range(4)]
PROPERTY_ITEMS = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "KG", "standard_cost": 3, "phantom": "false", "backflush": "true", "uom_decimals": 2},
    {"item_id": "BY", "uom": "KG", "standard_cost": 1, "phantom": "false", "backflush": "true", "uom_decimals": 1},
]
# 0.35 kg of RM per FG (two decimals: never rounded); 0.125 kg of BY per FG received (one
# decimal: sums like 3 x 0.125 = 0.375 are halves, rounded away from zero to 0.4)
PROPERTY_BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 0.35},
                {"parent_item_id": "FG", "component_item_id": "BY", "qty_per": -0.125}]

operation = st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.integers(0, 30), st.integers(0, 3)),
    st.tuples(st.just("correct"), st.integers(0, 20), st.integers(0, 3), st.integers(0, 30), st.integers(0, 3)),
    st.tuples(st.just("cancel"), st.integers(0, 20)),
    st.tuples(st.just("run"), st.integers(0, 3), st.integers(0, 2)),
)


def _round_half_up(value: Decimal, places: int) -> float:
    return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _expected_adjustments(latest: dict[str, dict[str, object]]) -> dict[tuple[object, ...], float]:
    """Adjustments by hand from the current version of every completion (exact decimals)."""
    good: dict[dt.date, int] = {}
    total: dict[dt.date, int] = {}
    for row in latest.values():
        d = dt.date.fromisoformat(str(row["completed_at"])[:10])
        good[d] = good.get(d, 0) + int(row["qty_good"])  # type: ignore[call-overload]
        total[d] = total.get(d, 0) + int(row["qty_good"]) + int(row["qty_scrap"])  # type: ignore[call-overload]
    out: dict[tuple[object, ...], float] = {}
    for d in total:
        if total[d] == 0:
            continue  # only cancelled completions: nothing to post
        key = (P, pd.Timestamp(d), L)
        if good[d]:
            out[(*key, "FG", "production_receipt")] = float(good[d])
        out[(*key, "RM", "backflush_issue")] = -_round_half_up(Decimal(total[d]) * Decimal("0.35"), 2)
        out[(*key, "BY", "byproduct_receipt")] = _round_half_up(Decimal(total[d]) * Decimal("0.125"), 1)
    return out


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=7))
# always: run, then move a completion to another day and cancel another, then run the new day only
# (the old day is found as late data)
@example([("add", 0, 10, 1), ("add", 1, 3, 0), ("run", 0, 1), ("correct", 0, 1, 7, 2), ("cancel", 1),
          ("run", 1, 0)])
def test_the_ledger_sums_to_the_adjustments_after_any_sequence_of_runs(ops: list[tuple[object, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        landing = make_landing(root, items=PROPERTY_ITEMS, bom=PROPERTY_BOM)
        versions: list[dict[str, object]] = []  # every version ever sent, as the landing holds them
        latest: dict[str, dict[str, object]] = {}
        clock = pd.Timestamp("2026-03-10T00:00:00Z")  # recorded_at of each new version: strictly later
        runs = 0

        def send(cid: str, d: int, good: int, scrap: int) -> None:
            nonlocal clock
            clock += pd.Timedelta(minutes=1)
            row = completion(cid, f"{DAYS[d].isoformat()}T10:00:00Z", good, qty_scrap=scrap,
                             recorded_at=clock.isoformat())
            versions.append(row)
            latest[cid] = row
            write_table(landing, "completions", versions)

        for op in ops:
            ids = sorted(latest)
            if op[0] == "add":
                send(f"C{len(ids)}", *op[1:])  # type: ignore[arg-type]
            elif op[0] == "correct" and ids:
                send(ids[int(op[1]) % len(ids)], *op[2:])  # type: ignore[arg-type]
            elif op[0] == "cancel" and ids:
                cid = ids[int(op[1]) % len(ids)]
                send(cid, DAYS.index(dt.date.fromisoformat(str(latest[cid]["completed_at"])[:10])), 0, 0)
            elif op[0] == "run" and runs < 2:
                first = int(op[1])  # type: ignore[call-overload]
                last = min(3, first + int(op[2]))  # type: ignore[call-overload]
                run(root, landing, [d.isoformat() for d in DAYS[first:last + 1]])
                runs += 1
                assert_ledger_matches_adjustments(root)

        # whatever happened before, processing every date brings ledger and adjustments to the truth
        run(root, landing, [d.isoformat() for d in DAYS])
        assert_ledger_matches_adjustments(root)
        expected = _expected_adjustments(latest)
        wanted = read(root, "adjustments").set_index(KEY)["qty"]
        wanted = wanted[wanted != 0]
        assert {k: float(v) for k, v in wanted.items()} == pytest.approx(expected)
        # and a re-run over unchanged input appends nothing
        assert run(root, landing, [d.isoformat() for d in DAYS]).rows_written.get("postings", 0) == 0
