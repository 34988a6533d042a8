"""Late and corrected data (semantics 6): a run for date D reprocesses the earlier dates, within
the look-back, whose completions or movements changed since the last successful run, and
recomputes the variance of every count whose window they touch. Numbers worked by hand.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from tests.support.landing import FG_AND_RM, config_for, make_landing, read, run, write_table

P, L = "P1", "L1"
KEY = ["plant_id", "business_date", "location_id", "item_id", "kind"]
ITEMS = FG_AND_RM
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}]
# D = 5 March; D+1 = 6 March. 100 FG at 10:00 on each of these days (500 kg of RM each):
PRODUCTION_DAYS = ["2026-02-26", "2026-02-27", "2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05", "2026-03-06"]
INITIAL_DATES = ["2026-02-26", "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02", "2026-03-03",
                 "2026-03-04", "2026-03-05"]  # everything up to D, in one run


def completion(day: str, qty_good: float, *, recorded_at: str | None = None) -> dict[str, object]:
    return {"completion_id": f"C{day}", "plant_id": P, "location_id": L, "item_id": "FG", "qty_good": qty_good,
            "completed_at": f"{day}T10:00:00Z", "recorded_at": recorded_at or f"{day}T10:00:00Z"}


def count(cid: str, day: str, qty: float) -> dict[str, object]:
    return {"count_id": cid, "plant_id": P, "location_id": L, "item_id": "RM", "counted_qty": qty,
            "counted_at": f"{day}T18:00:00Z"}


COUNTS = [
    count("K0", "2026-03-01", 5000),  # baseline
    count("K1", "2026-03-04", 3500),  # window: 2, 3, 4 March: 5000 - 3 x 500 = 3500, no variance
    count("K2", "2026-03-06", 2500),  # window: 5, 6 March: 3500 - 2 x 500 = 2500, no variance
]


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def add_late_data(landing: Path) -> None:
    """After the run for D: corrections for D-2 (3 March), 27 and 26 February; a new movement for D-3."""
    late = "2026-03-06T07:00:00Z"
    write_table(landing, "completions", [
        completion("2026-03-03", 110, recorded_at=late),  # D-2: 100 -> 110
        completion("2026-02-27", 130, recorded_at=late),  # D+1 - 7 days: 100 -> 130, inside the look-back
        completion("2026-02-26", 150, recorded_at=late),  # D+1 - 8 days: 100 -> 150, outside it
    ], name="late.csv")
    write_table(landing, "movements", [
        {"movement_id": "M-late", "plant_id": P, "location_id": L, "item_id": "RM", "qty": 200,
         "moved_at": "2026-03-02T12:00:00Z", "kind": "receipt"},  # D-3
    ], name="late.csv")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, stock_counts=COUNTS,
                           completions=[completion(d, 100) for d in PRODUCTION_DAYS],
                           movements=[{"movement_id": "M0", "plant_id": P, "location_id": L, "item_id": "RM",
                                       "qty": 0, "moved_at": "2026-02-20T00:00:00Z", "kind": "receipt"}])
    run(tmp_path, landing, INITIAL_DATES)
    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert k1["variance_qty"] == 0.0  # 3500 - (5000 - 1500)
    return landing


def backflush_run(root: Path, landing: Path, date: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """`backflush run` in a process of its own: whatever it knows of earlier runs is in the warehouse."""
    command = [sys.executable, "-m", "pipeline.cli", "--quiet", "run", "--landing", str(landing),
               "--warehouse", str(root / "warehouse"), "--date", date, *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_a_run_reprocesses_changed_dates_within_the_look_back(tmp_path: Path, landing: Path) -> None:
    add_late_data(landing)
    done = backflush_run(tmp_path, landing, "2026-03-06")  # D+1, a new process
    assert done.returncode == 0, done.stderr

    runs = read(tmp_path, "runs").sort_values("started_at")
    last = runs.iloc[-1]
    assert [str(d) for d in last["requested_dates"]] == ["2026-03-06"]
    # 27 Feb (7 days back), 2 March (D-3: the movement), 3 March (D-2: the correction), and D+1 itself;
    # 26 Feb (8 days back) is outside the default look-back of 7 days
    assert [str(d) for d in last["business_dates"]] == ["2026-02-27", "2026-03-02", "2026-03-03", "2026-03-06"]

    postings = read(tmp_path, "postings")
    new = postings[postings["run_id"] == last["run_id"]].set_index(["business_date", "item_id"])["qty_delta"]
    assert new.to_dict() == {
        (day("2026-02-27"), "FG"): 30.0,  # 130 - 100
        (day("2026-02-27"), "RM"): -150.0,  # -(130 - 100) x 5
        (day("2026-03-03"), "FG"): 10.0,  # 110 - 100
        (day("2026-03-03"), "RM"): -50.0,  # -(110 - 100) x 5
        (day("2026-03-06"), "FG"): 100.0,  # D+1's own completion
        (day("2026-03-06"), "RM"): -500.0,  # 100 x 5
    }  # nothing for 2 March: a movement is not posted; nothing for 26 Feb: not reprocessed
    sums = postings.groupby(KEY)["qty_delta"].sum()
    assert sums[(P, day("2026-02-26"), L, "FG", "production_receipt")] == 100.0  # still the old version
    adjustments = read(tmp_path, "adjustments").set_index(KEY)["qty"]
    assert adjustments[(P, day("2026-02-26"), L, "FG", "production_receipt")] == 100.0  # not recomputed either

    variance = read(tmp_path, "variance").set_index("count_id")
    k1 = variance.loc["K1"]  # dated 4 March, not a processed date, but its window spans D-3 and D-2
    assert k1["movements_qty"] == 200.0  # the late receipt
    assert k1["theoretical_usage_qty"] == 1550.0  # (100 + 110 + 100) x 5
    assert k1["book_qty"] == 3650.0  # 5000 + 200 - 1550
    assert k1["variance_qty"] == -150.0  # 3500 - 3650
    assert k1["variance_value"] == pytest.approx(-450.0)  # -150 x 3.00
    assert k1["usage_variance_pct"] == pytest.approx(150 / 1550 * 100)  # 9.68 %
    assert k1["status"] == "over_tolerance"  # 150 > 0, 450 > 50, 9.68 % > 5 %
    k2 = variance.loc["K2"]
    assert k2["opening_qty"] == 3500.0  # K1's counted quantity: unchanged by the late data
    assert k2["book_qty"] == 2500.0  # 3500 - (100 + 100) x 5
    assert k2["variance_qty"] == 0.0  # 2500 - 2500
    assert variance.loc["K0", "status"] == "baseline"

    # the watermark is now recorded: re-running D+1 finds nothing late and appends nothing
    again = job.run_dates(config_for(tmp_path, landing), [dt.date(2026, 3, 6)])
    assert again.business_dates == [dt.date(2026, 3, 6)]
    assert again.rows_written.get("postings", 0) == 0
    # 26 Feb is picked up when it is asked for
    asked = job.run_dates(config_for(tmp_path, landing), [dt.date(2026, 2, 26)])
    new = read(tmp_path, "postings")
    new = new[new["run_id"] == asked.run_id].set_index("item_id")["qty_delta"]
    assert new.to_dict() == {"FG": 50.0, "RM": -250.0}  # 150 - 100; -(150 - 100) x 5


def test_the_watermark_is_in_the_runs_dataset(tmp_path: Path, landing: Path) -> None:
    runs = read(tmp_path, "runs")
    assert len(runs) == 1
    recorded = json.loads(runs.iloc[0]["input_fingerprints"])
    # one fingerprint per (plant, date) with completions, movements or counts, as the run saw them
    assert sorted(recorded) == [f"{P}|{d}" for d in sorted(["2026-02-20", "2026-03-01", *PRODUCTION_DAYS])]
    # without that history (a fresh warehouse) no run has recorded any date: every look-back date
    # holding rows is new data and is processed (26 Feb is 8 days back; 28 Feb holds no rows)
    add_late_data(landing)
    fresh = job.run_dates(config_for(tmp_path / "fresh", landing), [dt.date(2026, 3, 6)])
    assert fresh.business_dates == [dt.date(2026, 2, 27), *(dt.date(2026, 3, d) for d in range(1, 7))]


def test_a_shorter_look_back_leaves_older_changes_alone(tmp_path: Path, landing: Path) -> None:
    add_late_data(landing)
    config = config_for(tmp_path, landing, lookback_days=2)  # 4 and 5 March only
    result = job.run_dates(config, [dt.date(2026, 3, 6)])
    assert result.business_dates == [dt.date(2026, 3, 6)]
    postings = read(tmp_path, "postings")
    assert set(postings.loc[postings["run_id"] == result.run_id, "business_date"]) == {day("2026-03-06")}
    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert k1["variance_qty"] == 0.0  # not recomputed: 3 March is 3 days back
    # a look-back of 0 turns late data off
    write_table(landing, "completions", [completion("2026-03-05", 90, recorded_at="2026-03-06T08:00:00Z")],
                name="later.csv")
    off = job.run_dates(config.replace(lookback_days=0), [dt.date(2026, 3, 6)])
    assert off.business_dates == [dt.date(2026, 3, 6)]
    # and with the look-back back on, 5 March (1 day back) is found
    on = job.run_dates(config, [dt.date(2026, 3, 6)])
    assert on.business_dates == [dt.date(2026, 3, 5), dt.date(2026, 3, 6)]
    new = read(tmp_path, "postings")
    new = new[new["run_id"] == on.run_id].set_index("item_id")["qty_delta"]
    assert new.to_dict() == {"FG": -10.0, "RM": 50.0}  # 90 - 100; -(90 - 100) x 5


def test_a_date_that_lost_all_its_rows_is_reprocessed_once(tmp_path: Path, landing: Path) -> None:
    # 3 March's completion is cancelled: its date now has no rows that count
    write_table(landing, "completions", [completion("2026-03-03", 0, recorded_at="2026-03-06T07:00:00Z")],
                name="cancel.csv")
    first = job.run_dates(config_for(tmp_path, landing), [dt.date(2026, 3, 6)])
    assert first.business_dates == [dt.date(2026, 3, 3), dt.date(2026, 3, 6)]
    postings = read(tmp_path, "postings")
    sums = postings.groupby(KEY)["qty_delta"].sum()
    assert sums[(P, day("2026-03-03"), L, "FG", "production_receipt")] == 0.0  # 100 - 100: reversed
    assert sums[(P, day("2026-03-03"), L, "RM", "backflush_issue")] == 0.0  # -500 + 500
    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert k1["variance_qty"] == -500.0  # 3500 - (5000 - 2 x 500)
    second = job.run_dates(config_for(tmp_path, landing), [dt.date(2026, 3, 6)])
    assert second.business_dates == [dt.date(2026, 3, 6)]  # not again and again


def test_a_late_count_is_late_data(tmp_path: Path, landing: Path) -> None:
    write_table(landing, "stock_counts", [count("K1b", "2026-03-03", 4100)], name="late.csv")
    result = job.run_dates(config_for(tmp_path, landing), [dt.date(2026, 3, 6)])
    assert result.business_dates == [dt.date(2026, 3, 3), dt.date(2026, 3, 6)]
    assert result.rows_written.get("postings", 0) == 2  # 6 March's own; 3 March's completions did not change
    variance = read(tmp_path, "variance").set_index("count_id")
    k1b = variance.loc["K1b"]
    assert k1b["book_qty"] == 4000.0  # 5000 - (100 + 100) x 5 over 2 and 3 March
    assert k1b["variance_qty"] == 100.0  # 4100 - 4000
    k1 = variance.loc["K1"]  # the count after it now starts from it
    assert k1["previous_counted_at"] == pd.Timestamp("2026-03-03T18:00:00Z")
    assert k1["opening_qty"] == 4100.0  # K1b's counted quantity
    assert k1["book_qty"] == 3600.0  # 4100 - 100 x 5 on 4 March
    assert k1["variance_qty"] == -100.0  # 3500 - 3600


# ------------------------------------------------------------------ plants no run has seen (issue 12.2)


def plant_completion(cid: str, plant: str, day_: str, qty_good: float, recorded_at: str | None = None,
                     ) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": plant, "location_id": L, "item_id": "FG", "qty_good": qty_good,
            "completed_at": f"{day_}T10:00:00Z", "recorded_at": recorded_at or f"{day_}T10:00:00Z"}


def _posted(root: Path, run_id: str) -> dict[tuple[str, pd.Timestamp, str], float]:
    postings = read(root, "postings")
    mine = postings[postings["run_id"] == run_id]
    return {(p, d, i): q for p, d, i, q in zip(mine["plant_id"], mine["business_date"], mine["item_id"],
                                                mine["qty_delta"], strict=True)}


def test_late_first_data_of_a_new_plant_is_processed(tmp_path: Path) -> None:
    """D = 5 March. The run for D-1 saw only P1; then P2's first completion ever arrives, for D-2."""
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM,
                           completions=[plant_completion("A1", "P1", "2026-03-04", 100)])
    before = run(tmp_path, landing, ["2026-03-04"])
    assert before.plants == ["P1"] and before.business_dates == [dt.date(2026, 3, 4)]
    write_table(landing, "completions", [
        plant_completion("B1", "P2", "2026-03-03", 40, recorded_at="2026-03-05T07:00:00Z"),  # late, P2's first
        plant_completion("A2", "P1", "2026-03-05", 100),
    ], name="late.csv")
    result = run(tmp_path, landing, ["2026-03-05"])
    assert result.plants == ["P1", "P2"]
    assert result.business_dates == [dt.date(2026, 3, 3), dt.date(2026, 3, 5)]
    assert _posted(tmp_path, result.run_id) == {
        ("P2", day("2026-03-03"), "FG"): 40.0,  # P2's late completion: 40 FG received
        ("P2", day("2026-03-03"), "RM"): -200.0,  # -(40 x 5) kg issued
        ("P1", day("2026-03-05"), "FG"): 100.0,  # D's own completion
        ("P1", day("2026-03-05"), "RM"): -500.0,  # -(100 x 5)
    }
    adjustments = read(tmp_path, "adjustments").set_index(KEY)
    receipt = adjustments.loc[("P2", day("2026-03-03"), L, "FG", "production_receipt")]
    issue = adjustments.loc[("P2", day("2026-03-03"), L, "RM", "backflush_issue")]
    assert (receipt["qty"], receipt["value"]) == (40.0, 400.0)  # 40 x 10.00
    assert (issue["qty"], issue["value"]) == (-200.0, -600.0)  # -200 x 3.00
    # recorded now: the same run again finds nothing late and posts nothing
    again = run(tmp_path, landing, ["2026-03-05"])
    assert again.business_dates == [dt.date(2026, 3, 5)]
    assert again.rows_written.get("postings", 0) == 0


def test_a_plant_left_out_of_earlier_runs_has_its_look_back_processed(tmp_path: Path) -> None:
    """P2's rows were there all along, but every earlier run was for P1 only: no run has a
    fingerprint of P2, so its look-back dates are new data when it is first processed."""
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        plant_completion("A1", "P1", "2026-03-04", 100),
        plant_completion("B1", "P2", "2026-03-02", 10),  # D-3
        plant_completion("B0", "P2", "2026-02-25", 20),  # D-8: outside the 7-day look-back of D
    ])
    run(tmp_path, landing, ["2026-03-04"], plants=["P1"])
    result = run(tmp_path, landing, ["2026-03-05"], plants=["P2"])
    assert result.business_dates == [dt.date(2026, 3, 2), dt.date(2026, 3, 5)]
    assert _posted(tmp_path, result.run_id) == {
        ("P2", day("2026-03-02"), "FG"): 10.0,  # 10 FG received
        ("P2", day("2026-03-02"), "RM"): -50.0,  # -(10 x 5)
    }


def test_the_first_run_on_a_fresh_warehouse_processes_its_look_back(tmp_path: Path) -> None:
    """No run at all before: every date of the look-back that holds rows has data no run has seen."""
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[
        plant_completion("A0", "P1", "2026-02-25", 20),  # D-8: outside the look-back, left alone
        plant_completion("A1", "P1", "2026-03-02", 30),  # D-3
        plant_completion("A2", "P1", "2026-03-05", 100),  # D
    ])
    result = run(tmp_path, landing, ["2026-03-05"])
    assert result.business_dates == [dt.date(2026, 3, 2), dt.date(2026, 3, 5)]
    assert _posted(tmp_path, result.run_id) == {
        ("P1", day("2026-03-02"), "FG"): 30.0,
        ("P1", day("2026-03-02"), "RM"): -150.0,  # -(30 x 5)
        ("P1", day("2026-03-05"), "FG"): 100.0,
        ("P1", day("2026-03-05"), "RM"): -500.0,  # -(100 x 5)
    }
    # 25 Feb was seen by that first run (its fingerprint is recorded): a later run whose look-back
    # reaches it leaves it alone until it changes, as before
    later = run(tmp_path, landing, ["2026-03-01"])
    assert later.business_dates == [dt.date(2026, 3, 1)]
