"""Fixed-quantity BOM lines (issue 16.3): a line with `fixed_qty` is needed once per production
order (plant, item, order_id), carried by the order's first completion (by completed_at, then
completion_id, among current, non-cancelled, exploded completions); a completion without an
order is an order of its own. Every number is worked out by hand in its comment.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import job
from pipeline.domain import bom
from pipeline.engine.strings import key_hashes
from pipeline.intake import spill
from tests.support.landing import config_for, make_landing, read, write_table
from tests.support.postgres import URL, reachable_engine

P, L, L2 = "P1", "L1", "L2"
KEY = ["business_date", "location_id", "item_id", "kind"]
ITEMS = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "KG", "standard_cost": 3, "phantom": "false", "backflush": "true", "uom_decimals": 3},
    {"item_id": "SETUP", "uom": "EA", "standard_cost": 7, "phantom": "false", "backflush": "true",
     "uom_decimals": 3},
]
# per FG: 5 kg RM per unit; 2 SETUP once per order (base_qty 4 divides nothing of a fixed line)
BOM = [
    {"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5, "base_qty": 1, "fixed_qty": "false"},
    {"parent_item_id": "FG", "component_item_id": "SETUP", "qty_per": 2, "base_qty": 4, "fixed_qty": "true"},
]


def completion(cid: str, qty: float, at: str, order: str | None, *, location: str = L,
               recorded_at: str | None = None) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": P, "location_id": location, "item_id": "FG", "qty_good": qty,
            "completed_at": at, "order_id": order, "recorded_at": recorded_at or at}


def count(cid: str, at: str, qty: float, item: str = "SETUP") -> dict[str, object]:
    return {"count_id": cid, "plant_id": P, "location_id": L, "item_id": item, "counted_qty": qty, "counted_at": at}


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def run(root: Path, landing: Path, dates: list[str], **overrides: object) -> job.RunResult:
    config = config_for(root, landing, **overrides)
    return job.run_dates(config, [dt.date.fromisoformat(d) for d in dates])


def adjustments(root: Path) -> dict[tuple[pd.Timestamp, str, str, str], float]:
    frame = read(root, "adjustments")
    return {tuple(k): q for k, q in zip(frame[KEY].itertuples(index=False), frame["qty"], strict=True)}


# ------------------------------------------------------------------------------------ the explosion


def test_a_fixed_line_under_a_phantom_and_a_fixed_phantom() -> None:
    """FG -> PH (phantom) 2 per unit; PH -> SETUP 3 fixed (base_qty 10, scrap 50 %); PH -> RM 1.5;
    FG -> KIT (phantom) 1 fixed; KIT -> RM 4 per unit of KIT; KIT -> TOOL 2 fixed."""
    items = pd.DataFrame({"item_id": ["FG", "PH", "KIT", "RM", "SETUP", "TOOL"], "uom": "EA", "standard_cost": 0.0,
                          "phantom": [False, True, True, False, False, False], "backflush": True,
                          "uom_decimals": 3})
    table = pd.DataFrame([
        {"parent_item_id": "FG", "component_item_id": "PH", "qty_per": 2.0, "fixed_qty": False},
        {"parent_item_id": "PH", "component_item_id": "SETUP", "qty_per": 3.0, "base_qty": 10.0, "scrap_pct": 50.0,
         "fixed_qty": True},
        {"parent_item_id": "PH", "component_item_id": "RM", "qty_per": 1.5, "fixed_qty": False},
        {"parent_item_id": "FG", "component_item_id": "KIT", "qty_per": 1.0, "fixed_qty": True},
        {"parent_item_id": "KIT", "component_item_id": "RM", "qty_per": 4.0, "fixed_qty": False},
        {"parent_item_id": "KIT", "component_item_id": "TOOL", "qty_per": 2.0, "fixed_qty": True},
    ])
    table = table.assign(plant_id=None, uom=None, valid_from=pd.NaT, valid_to=pd.NaT)
    table["base_qty"] = table["base_qty"].fillna(1.0)
    table["scrap_pct"] = table["scrap_pct"].fillna(0.0)
    lines = bom.plant_lines(bom.line_requirements(table, items, pd.DataFrame(
        columns=["item_id", "from_uom", "to_uom", "factor"])), [P])
    keys = pd.DataFrame({"key": [0], "plant_id": P, "item_id": "FG",
                         "effective_date": pd.to_datetime(["2026-03-02"]).astype("datetime64[ns]")})
    got = bom.explode(keys, lines, items)
    assert got.errors.empty
    req = got.requirements.set_index("component_item_id")
    assert req.loc["RM", "qty_per_unit"] == 3.0  # 2 PH per FG x 1.5 RM per PH
    assert req.loc["RM", "qty_per_order"] == 4.0  # 1 KIT per order x 4 RM per KIT
    assert req.loc["SETUP", "qty_per_unit"] == 0.0
    assert req.loc["SETUP", "qty_per_order"] == 4.5  # 3 x 1.5 (scrap), neither x 2 PH nor / base_qty 10
    assert req.loc["TOOL", "qty_per_order"] == 2.0  # fixed under a fixed phantom: its own 2, not 1 x 2 again
    assert req.loc["TOOL", "qty_per_unit"] == 0.0


def test_without_fixed_lines_requirements_have_nothing_per_order() -> None:
    items = pd.DataFrame({"item_id": ["FG", "RM"], "uom": "EA", "standard_cost": 0.0, "phantom": False,
                          "backflush": True, "uom_decimals": 3})
    table = pd.DataFrame([{"plant_id": None, "parent_item_id": "FG", "component_item_id": "RM", "qty_per": 2.0,
                           "base_qty": 4.0, "uom": None, "scrap_pct": 0.0, "valid_from": pd.NaT, "valid_to": pd.NaT}])
    lines = bom.plant_lines(bom.line_requirements(table, items, pd.DataFrame(
        columns=["item_id", "from_uom", "to_uom", "factor"])), [P])
    keys = pd.DataFrame({"key": [0], "plant_id": P, "item_id": "FG",
                         "effective_date": pd.to_datetime(["2026-03-02"]).astype("datetime64[ns]")})
    req = bom.explode(keys, lines, items).requirements
    assert req[["qty_per_unit", "qty_per_order"]].values.tolist() == [[0.5, 0.0]]  # 2 / 4 per unit


# ------------------------------------------------------------------------------------ end to end

ORDER = [
    completion("C0", 0, "2026-03-02T07:00:00Z", "MO1"),  # cancelled: carries nothing, though first
    completion("C1", 6, "2026-03-02T08:00:00Z", "MO1"),  # the order's first real completion
    completion("C2", 4, "2026-03-02T12:00:00Z", "MO1"),
    completion("C3", 5, "2026-03-03T09:00:00Z", "MO1"),
]
SETUP_COUNTS = [
    count("K0", "2026-03-01T18:00:00Z", 100),
    count("K1", "2026-03-02T18:00:00Z", 98),  # window: 2 March (C1 at 08:00 carries the order)
    count("K2", "2026-03-03T18:00:00Z", 98),  # window: 3 March: no SETUP flows
]


def test_partial_completions_of_an_order_share_its_fixed_quantity(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=ORDER, stock_counts=SETUP_COUNTS)
    result = run(tmp_path, landing, ["2026-03-02", "2026-03-03"])
    # the run's summary: RM 75 kg (15 x 5) at 3.00 = 225; SETUP 2 (once) at 7.00 = 14
    assert result.top_components == [{"component_item_id": "RM", "uom": "KG", "qty": 75.0, "value": 225.0},
                                      {"component_item_id": "SETUP", "uom": "EA", "qty": 2.0, "value": 14.0}]
    assert adjustments(tmp_path) == {
        (day("2026-03-02"), L, "FG", "production_receipt"): 10.0,  # 6 + 4
        (day("2026-03-02"), L, "RM", "backflush_issue"): -50.0,  # 10 x 5
        (day("2026-03-02"), L, "SETUP", "backflush_issue"): -2.0,  # once, for MO1
        (day("2026-03-03"), L, "FG", "production_receipt"): 5.0,
        (day("2026-03-03"), L, "RM", "backflush_issue"): -25.0,  # 5 x 5; no SETUP: MO1 had it already
    }
    setup = read(tmp_path, "adjustments").set_index("item_id").loc["SETUP"]
    assert setup["value"] == pytest.approx(-14.0)  # -2 x 7.00
    consumed = read(tmp_path, "consumption")
    consumed = consumed.set_index(["business_date", "component_item_id"])["qty"].to_dict()
    assert consumed == {(day("2026-03-02"), "RM"): 50.0, (day("2026-03-02"), "SETUP"): 2.0,
                        (day("2026-03-03"), "RM"): 25.0}
    variance = read(tmp_path, "variance").set_index("count_id")
    assert variance.loc["K1", "theoretical_usage_qty"] == 2.0  # the fixed quantity at C1's time
    assert variance.loc["K1", "book_qty"] == 98.0  # 100 - 2
    assert variance.loc["K1", "variance_qty"] == 0.0  # 98 counted
    assert variance.loc["K2", "theoretical_usage_qty"] == 0.0
    assert variance.loc["K2", "variance_qty"] == 0.0  # 98 - (98 - 0)
    again = run(tmp_path, landing, ["2026-03-02", "2026-03-03"])
    assert again.rows_written.get("postings", 0) == 0


def test_completions_without_an_order_each_carry_the_fixed_quantity(tmp_path: Path) -> None:
    completions = [
        completion("X1", 5, "2026-03-02T08:00:00Z", None),
        completion("X2", 3, "2026-03-02T09:00:00Z", None),
        # one order, two completions at the same moment: the smaller id (A at L2) carries it
        completion("B", 1, "2026-03-02T10:00:00Z", "MO7", location=L),
        completion("A", 2, "2026-03-02T10:00:00Z", "MO7", location=L2),
        # same order id, another item would be another order: here another plant's order is not ours
    ]
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=completions)
    run(tmp_path, landing, ["2026-03-02"])
    assert adjustments(tmp_path) == {
        (day("2026-03-02"), L, "FG", "production_receipt"): 9.0,  # 5 + 3 + 1
        (day("2026-03-02"), L, "RM", "backflush_issue"): -45.0,  # 9 x 5
        (day("2026-03-02"), L, "SETUP", "backflush_issue"): -4.0,  # X1 and X2: 2 each; not B
        (day("2026-03-02"), L2, "FG", "production_receipt"): 2.0,
        (day("2026-03-02"), L2, "RM", "backflush_issue"): -10.0,  # 2 x 5
        (day("2026-03-02"), L2, "SETUP", "backflush_issue"): -2.0,  # MO7, carried by A
    }


def test_orders_are_per_item(tmp_path: Path) -> None:
    """MO1 of FG and MO1 of FG2 are two orders: each needs its fixed quantity."""
    items = [*ITEMS, {"item_id": "FG2", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true",
                      "uom_decimals": 0}]
    lines = [*BOM, {"parent_item_id": "FG2", "component_item_id": "SETUP", "qty_per": 3, "base_qty": 1,
                    "fixed_qty": "true"}]
    other = {**completion("D1", 4, "2026-03-02T09:00:00Z", "MO1"), "item_id": "FG2"}
    landing = make_landing(tmp_path, items=items, bom=lines, completions=[*ORDER[1:3], other])
    run(tmp_path, landing, ["2026-03-02"])
    got = adjustments(tmp_path)
    assert got[(day("2026-03-02"), L, "SETUP", "backflush_issue")] == -5.0  # 2 for FG's MO1 + 3 for FG2's


def test_a_late_earlier_completion_moves_the_fixed_quantity(tmp_path: Path) -> None:
    first = [completion("C2", 10, "2026-03-03T10:00:00Z", "MO1"), completion("C3", 5, "2026-03-04T10:00:00Z", "MO1")]
    counts = [count("K0", "2026-03-01T18:00:00Z", 100), count("K1", "2026-03-02T18:00:00Z", 98),
              count("K2", "2026-03-03T18:00:00Z", 98)]
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=first, stock_counts=counts)
    run(tmp_path, landing, ["2026-03-02", "2026-03-03", "2026-03-04"])
    before = read(tmp_path, "variance").set_index("count_id")
    assert before.loc["K1", "variance_qty"] == -2.0  # 98 - 100: the SETUP was not yet booked
    assert before.loc["K2", "theoretical_usage_qty"] == 2.0  # C2 carried MO1 then
    assert before.loc["K2", "variance_qty"] == 2.0  # 98 - (98 - 2)

    # C1, recorded on 5 March, was completed on 2 March before C2: it is now MO1's first
    write_table(landing, "completions", [completion("C1", 3, "2026-03-02T08:00:00Z", "MO1",
                                                    recorded_at="2026-03-05T07:00:00Z")], name="late.csv")
    result = run(tmp_path, landing, ["2026-03-05"])
    # 2 March: its new row; 3 March: its rows are the same, but it no longer carries MO1
    assert result.business_dates == [dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 5)]
    postings = read(tmp_path, "postings")
    new = postings[postings["run_id"] == result.run_id].set_index(["business_date", "item_id"])["qty_delta"]
    assert new.to_dict() == {
        (day("2026-03-02"), "FG"): 3.0,
        (day("2026-03-02"), "RM"): -15.0,  # 3 x 5
        (day("2026-03-02"), "SETUP"): -2.0,  # MO1's fixed quantity, now here
        (day("2026-03-03"), "SETUP"): 2.0,  # reversed where it was
    }
    totals = postings.groupby(["business_date", "item_id"])["qty_delta"].sum()
    assert totals[(day("2026-03-03"), "SETUP")] == 0.0  # -2 + 2
    after = read(tmp_path, "variance").set_index("count_id")
    assert after.loc["K1", "theoretical_usage_qty"] == 2.0
    assert after.loc["K1", "variance_qty"] == 0.0  # 98 - (100 - 2)
    assert after.loc["K2", "theoretical_usage_qty"] == 0.0
    assert after.loc["K2", "variance_qty"] == 0.0  # 98 - (98 - 0)
    again = run(tmp_path, landing, ["2026-03-05"])
    assert again.business_dates == [dt.date(2026, 3, 5)]  # nothing late any more
    assert again.rows_written.get("postings", 0) == 0


# ------------------------------------------------------------------------------------ buckets

# MO1: 3 completions over 2 days; MO2: 2 completions, the later one first in id order; 2 without an order
SPLIT = [
    completion("C1", 6, "2026-03-02T08:00:00Z", "MO1"),
    completion("C2", 4, "2026-03-02T12:00:00Z", "MO1"),
    completion("C3", 5, "2026-03-03T09:00:00Z", "MO1"),
    completion("Z1", 2, "2026-03-02T20:00:00Z", "MO2"),
    completion("A9", 1, "2026-03-03T06:00:00Z", "MO2"),
    completion("X1", 1, "2026-03-02T09:00:00Z", None),
    completion("X2", 2, "2026-03-03T09:00:00Z", None),
]
SPLIT_EXPECTED = {
    (day("2026-03-02"), L, "FG", "production_receipt"): 13.0,  # 6 + 4 + 2 + 1
    (day("2026-03-02"), L, "RM", "backflush_issue"): -65.0,  # 13 x 5
    (day("2026-03-02"), L, "SETUP", "backflush_issue"): -6.0,  # MO1 (C1), MO2 (Z1), X1: 3 x 2
    (day("2026-03-03"), L, "FG", "production_receipt"): 8.0,  # 5 + 1 + 2
    (day("2026-03-03"), L, "RM", "backflush_issue"): -40.0,  # 8 x 5
    (day("2026-03-03"), L, "SETUP", "backflush_issue"): -2.0,  # X2 only
}


@pytest.mark.parametrize("bucket_rows, workers", [(300_000, 1), (1, 2)])
def test_orders_split_across_buckets_give_the_same_result(tmp_path: Path, bucket_rows: int, workers: int) -> None:
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=SPLIT, stock_counts=SETUP_COUNTS)
    files = spill.raw_files([("completions", landing / "completions" / "part.csv")])
    split = spill.Spiller(files, bucket_rows=bucket_rows, workers=workers).buckets
    ids = pd.Series([c["completion_id"] for c in SPLIT])
    bucket_of = dict(zip(ids, key_hashes(ids) % np.uint64(split), strict=True))
    if bucket_rows == 1:  # the split this test is about: each order's completions in more than one bucket
        assert len({bucket_of[c] for c in ("C1", "C2", "C3")}) > 1
        assert bucket_of["Z1"] != bucket_of["A9"]
    run(tmp_path, landing, ["2026-03-02", "2026-03-03"], bucket_rows=bucket_rows, workers=workers)
    assert adjustments(tmp_path) == SPLIT_EXPECTED
    variance = read(tmp_path, "variance").set_index("count_id")
    # the fixed quantity flows at the time of the completion that carries it: K1 (2 March 18:00)
    # has C1 (08:00) and X1 (09:00); Z1 (MO2's first, 20:00 on 2 March) is in K2's window, with X2
    assert variance.loc["K1", "theoretical_usage_qty"] == 4.0  # 2 + 2
    assert variance.loc["K2", "theoretical_usage_qty"] == 4.0  # 2 + 2
    again = run(tmp_path, landing, ["2026-03-02", "2026-03-03"], bucket_rows=bucket_rows, workers=workers)
    assert again.rows_written.get("postings", 0) == 0


def test_fixed_quantities_through_the_command_line(tmp_path: Path) -> None:
    """`backflush run` in a process of its own over the order of the first test."""
    import subprocess
    import sys

    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=ORDER)
    command = [sys.executable, "-m", "pipeline.cli", "--quiet", "run", "--landing", str(landing),
               "--warehouse", str(tmp_path / "warehouse"), "--date", "2026-03-02"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    got = adjustments(tmp_path)
    assert got == {
        (day("2026-03-02"), L, "FG", "production_receipt"): 10.0,  # C1 6 + C2 4
        (day("2026-03-02"), L, "RM", "backflush_issue"): -50.0,  # 10 x 5
        (day("2026-03-02"), L, "SETUP", "backflush_issue"): -2.0,  # MO1 once
    }
    postings = read(tmp_path, "postings").set_index("item_id")["qty_delta"].to_dict()
    assert postings == {"FG": 10.0, "RM": -50.0, "SETUP": -2.0}
    # consumption says which part is fixed: SETUP 2 of 2, RM none of 50
    consumed = read(tmp_path, "consumption").set_index("component_item_id")["fixed_qty"].to_dict()
    assert consumed == {"RM": 0.0, "SETUP": 2.0}
    page = tmp_path / "report.html"
    report = [sys.executable, "-m", "pipeline.cli", "--quiet", "report", "--warehouse", str(tmp_path / "warehouse"),
              "--from", "2026-03-02", "--to", "2026-03-02", "--out", str(page)]
    done = subprocess.run(report, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    html = page.read_text("utf-8")
    table = html[html.index('id="fixed-quantities"'):]
    table = table[:table.index("</table>")]
    assert "SETUP" in table and "2.000" in table and "RM" not in table


# ------------------------------------------------------------------------------------ SQL sources


def test_a_bounded_sql_pull_reads_the_earlier_completions_of_its_orders(tmp_path: Path) -> None:
    """A SQL pull for 10 March with a look-back of 1 day reads completions from 8 March on; MO1's
    first completion (1 March) is older, and still carries MO1: it is read because MO1 has a
    completion in the window. Against the real PostgreSQL, in a schema of its own."""
    import uuid

    from pipeline.config import SqlSource

    engine = reachable_engine()
    schema = f"bf_fixed_{uuid.uuid4().hex[:10]}"
    stamp = "datetime64[us, UTC]"
    completions = pd.DataFrame([
        completion("O1", 4, "2026-03-01T10:00:00Z", "MO1"),
        completion("O2", 6, "2026-03-10T10:00:00Z", "MO1"),
        completion("X1", 1, "2026-03-10T11:00:00Z", None),
        completion("Q1", 9, "2026-03-01T12:00:00Z", "MO9"),  # an old order with nothing in the window
    ]).astype({"completed_at": stamp, "recorded_at": stamp})
    tables = {
        "items": pd.DataFrame(ITEMS).astype({"phantom": "str", "backflush": "str"}),
        "bom": pd.DataFrame(BOM).assign(fixed_qty=[False, True]),
        "completions": completions,
        "stock_counts": pd.DataFrame({"count_id": pd.Series([], dtype="str"), "plant_id": pd.Series([], dtype="str"),
                                      "location_id": pd.Series([], dtype="str"), "item_id": pd.Series([], dtype="str"),
                                      "counted_qty": pd.Series([], dtype="float64"),
                                      "counted_at": pd.Series([], dtype=stamp)}),
    }
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')  # a name made here
    try:
        for name, frame in tables.items():
            frame.to_sql(name, engine, schema=schema, index=False)
        config = config_for(tmp_path, tmp_path / "no-landing", lookback_days=1).replace(
            sql=SqlSource(url=URL, schema=schema))
        result = job.run_dates(config, [dt.date(2026, 3, 10)])
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
    assert result.rows_read["completions"] == 3  # O1 (its order is in the window), O2, X1; not Q1
    assert adjustments(tmp_path) == {
        (day("2026-03-10"), L, "FG", "production_receipt"): 7.0,  # 6 + 1
        (day("2026-03-10"), L, "RM", "backflush_issue"): -35.0,  # 7 x 5
        (day("2026-03-10"), L, "SETUP", "backflush_issue"): -2.0,  # X1 only: MO1 was carried by O1
    }


def test_a_fixed_qty_that_is_not_a_boolean_is_an_invalid_line(tmp_path: Path) -> None:
    """fixed_qty "maybe": the line is INVALID, so FG cannot explode and its completion is quarantined
    whole (decisions: an INVALID line makes its parent unusable); an empty fixed_qty is false."""
    lines = [{**BOM[0], "fixed_qty": ""}, {**BOM[1], "fixed_qty": "maybe"}]
    landing = make_landing(tmp_path, items=ITEMS, bom=lines, completions=ORDER[1:2])
    result = run(tmp_path, landing, ["2026-03-02"])
    quarantine = read(tmp_path, "quarantine")
    assert sorted(quarantine["table"]) == ["bom", "completions"]
    assert set(quarantine["error_code"]) == {"INVALID"}
    assert result.rows_written.get("postings", 0) == 0


def test_cancelling_the_first_completions_hands_the_order_to_the_next(tmp_path: Path) -> None:
    """C1 and C2 (2 March) are cancelled later: C3 (3 March) is MO1's first now and carries SETUP."""
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=ORDER)
    run(tmp_path, landing, ["2026-03-02", "2026-03-03"])
    late = "2026-03-04T07:00:00Z"
    write_table(landing, "completions", [completion("C1", 0, "2026-03-02T08:00:00Z", "MO1", recorded_at=late),
                                         completion("C2", 0, "2026-03-02T12:00:00Z", "MO1", recorded_at=late)],
                name="cancel.csv")
    result = run(tmp_path, landing, ["2026-03-04"])
    assert result.business_dates == [dt.date(2026, 3, 2), dt.date(2026, 3, 3), dt.date(2026, 3, 4)]
    postings = read(tmp_path, "postings")
    new = postings[postings["run_id"] == result.run_id].set_index(["business_date", "item_id"])["qty_delta"]
    assert new.to_dict() == {
        (day("2026-03-02"), "FG"): -10.0,  # 6 + 4 cancelled
        (day("2026-03-02"), "RM"): 50.0,  # 10 x 5 given back
        (day("2026-03-02"), "SETUP"): 2.0,  # MO1's SETUP leaves 2 March
        (day("2026-03-03"), "SETUP"): -2.0,  # and is issued with C3
    }
    assert adjustments(tmp_path) == {
        (day("2026-03-03"), L, "FG", "production_receipt"): 5.0,
        (day("2026-03-03"), L, "RM", "backflush_issue"): -25.0,
        (day("2026-03-03"), L, "SETUP", "backflush_issue"): -2.0,
    }


def test_a_bounded_sql_pull_with_fixed_lines_reconciles_like_the_whole_landing(tmp_path: Path) -> None:
    """Generated data (orders spanning several days), a fifth of the BOM lines made fixed: a run for
    the last date from SQL, bounded to a look-back of 1 day, gives the same consumption,
    adjustments and variance as the same run over the whole landing (an independent method: the
    landing run sees every earlier completion of every order)."""
    import uuid

    import pyarrow.parquet as pq

    from pipeline.config import SqlSource
    from pipeline.tools.generate import generate_landing

    engine = reachable_engine()
    landing = tmp_path / "landing"
    start, days = dt.date(2026, 1, 1), 6
    generate_landing(landing, items=8, completions=3000, days=days, seed=11, start=start, plants=2)
    for path in sorted((landing / "bom").glob("*.parquet")):
        lines = pq.read_table(path).to_pandas()
        lines["fixed_qty"] = np.arange(len(lines)) % 5 == 0
        lines.to_parquet(path, index=False)
    frames = {table: pd.concat([pq.read_table(f).to_pandas() for f in sorted((landing / table).glob("*.parquet"))],
                               ignore_index=True)
              for table in ("plants", "items", "uom_conversions", "bom", "completions", "stock_counts", "movements")
              if (landing / table).is_dir()}
    orders = frames["completions"].dropna(subset=["order_id"]).assign(day=lambda f: f["completed_at"].dt.date)
    assert (orders.groupby(["plant_id", "item_id", "order_id"])["day"].nunique() > 2).any()  # the case at stake
    schema = f"bf_fixed_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')  # a name made here
    last = start + dt.timedelta(days=days - 1)
    try:
        for table, frame in frames.items():
            frame.to_sql(table, engine, schema=schema, index=False)
        from_files = config_for(tmp_path / "files", landing, lookback_days=1)
        from_sql = config_for(tmp_path / "sql", tmp_path / "no-landing", lookback_days=1).replace(
            sql=SqlSource(url=URL, schema=schema))
        job.run_dates(from_files, [last])
        result = job.run_dates(from_sql, [last])
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
    assert result.rows_read["completions"] < len(frames["completions"])  # the pull was bounded
    for dataset in ("consumption", "adjustments", "variance"):
        files = read(tmp_path / "files", dataset)
        sql = read(tmp_path / "sql", dataset)
        columns = sorted(c for c in files.columns if c != "run_id")
        files = files[columns].sort_values(columns).reset_index(drop=True)
        sql = sql[columns].sort_values(columns).reset_index(drop=True)
        assert len(files) > 0
        pd.testing.assert_frame_equal(sql, files, check_exact=False, rtol=1e-12, obj=dataset)
