"""Standard cost history (issue 16.4): adjustments at the cost in force on their business date,
variance at the cost in force on the count's business date, in the plant's own time zone.
Numbers worked by hand in the comments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.domain.costs import costs_in_force
from tests.support.landing import make_landing, read, run

ITEMS = [{"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true",
          "uom_decimals": 0},
         {"item_id": "RM", "uom": "KG", "standard_cost": 3, "phantom": "false", "backflush": "true",
          "uom_decimals": 3}]


def _completion(cid: str, at: str, qty: float) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": "P1", "location_id": "L1", "item_id": "FG", "qty_good": qty,
            "completed_at": at}


def _count(cid: str, at: str, qty: float) -> dict[str, object]:
    return {"count_id": cid, "plant_id": "P1", "location_id": "L1", "item_id": "RM", "counted_qty": qty,
            "counted_at": at}


def test_adjustments_and_variance_take_the_cost_in_force_on_their_date(tmp_path: Path) -> None:
    """P1 is in Vienna (UTC+1 in March). RM costs 3 (items), 4 from 03-03, 5 from 03-05; FG costs 10,
    12 from 03-04. FG needs 5 kg RM each.
      03-02: +100 FG at 10 = 1,000; -500 kg RM at 3 = -1,500
      03-03: +10 FG at 10 = 100;    -50 kg RM at 4 = -200
      03-04: +1 FG at 12 = 12;      -5 kg RM at 4 = -20
    K1 is counted at 03-04 23:30 UTC = 03-05 00:30 in Vienna: its date is 03-05, so it is valued at 5.
    Window (03-02 06:00Z, 03-04 23:30Z] holds all three completions: usage 555 kg, book 1,000 - 555 =
    445, variance 400 - 445 = -45 kg, valued -45 x 5 = -225 (at the 03-04 cost it would be -180)."""
    landing = make_landing(
        tmp_path,
        plants=[{"plant_id": "P1", "timezone": "Europe/Vienna"}],
        items=ITEMS,
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}],
        completions=[_completion("C1", "2026-03-02T10:00:00Z", 100), _completion("C2", "2026-03-03T10:00:00Z", 10),
                     _completion("C3", "2026-03-04T10:00:00Z", 1)],
        stock_counts=[_count("K0", "2026-03-02T06:00:00Z", 1000), _count("K1", "2026-03-04T23:30:00Z", 400)],
        item_costs=[{"item_id": "RM", "valid_from": "2026-03-03", "standard_cost": 4},
                    {"item_id": "RM", "valid_from": "2026-03-05", "standard_cost": 5},
                    {"item_id": "FG", "valid_from": "2026-03-04", "standard_cost": 12}],
    )
    run(tmp_path, landing, ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"])
    adjustments = read(tmp_path, "adjustments")
    got = {(str(r.business_date.date()), r.item_id): (r.qty, r.value) for r in adjustments.itertuples()}
    assert got == {("2026-03-02", "FG"): (100.0, 1000.0), ("2026-03-02", "RM"): (-500.0, -1500.0),
                   ("2026-03-03", "FG"): (10.0, 100.0), ("2026-03-03", "RM"): (-50.0, -200.0),
                   ("2026-03-04", "FG"): (1.0, 12.0), ("2026-03-04", "RM"): (-5.0, -20.0)}
    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    assert (k1["book_qty"], k1["variance_qty"]) == (445.0, -45.0)
    assert (k1["standard_cost"], k1["variance_value"]) == (5.0, -225.0)
    assert read(tmp_path, "quarantine").empty


def test_conflicting_and_unknown_cost_rows_are_quarantined(tmp_path: Path) -> None:
    """Two different costs for RM from 03-02 are DUPLICATE_ID (both), and a cost of an item that does not
    exist is UNKNOWN_ITEM; an identical repeat is one row. RM then costs its items price 3 on 03-02:
    -500 kg x 3 = -1,500; FG's repeated row (11 from 03-01) values +100 FG at 11 = 1,100."""
    landing = make_landing(
        tmp_path,
        items=ITEMS,
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}],
        completions=[_completion("C1", "2026-03-02T10:00:00Z", 100)],
        item_costs=[{"item_id": "RM", "valid_from": "2026-03-02", "standard_cost": 4},
                    {"item_id": "RM", "valid_from": "2026-03-02", "standard_cost": 4.5},
                    {"item_id": "FG", "valid_from": "2026-03-01", "standard_cost": 11},
                    {"item_id": "FG", "valid_from": "2026-03-01", "standard_cost": 11},
                    {"item_id": "NOPE", "valid_from": "2026-03-01", "standard_cost": 1}],
    )
    run(tmp_path, landing, ["2026-03-02"])
    values = read(tmp_path, "adjustments").set_index("item_id")["value"].to_dict()
    assert values == {"FG": 1100.0, "RM": -1500.0}
    q = read(tmp_path, "quarantine")
    q = q[q["table"] == "item_costs"]
    assert sorted(zip(q["source_key"], q["error_code"], strict=True)) == [
        ("NOPE@2026-03-01", "UNKNOWN_ITEM"), ("RM@2026-03-02", "DUPLICATE_ID"), ("RM@2026-03-02", "DUPLICATE_ID")]


def test_costs_in_force_against_a_search_per_row() -> None:
    """The vectorised lookup against the definition, row by row, on random histories."""
    rng = np.random.default_rng(7)
    items = pd.DataFrame({"item_id": [f"I{i}" for i in range(6)], "standard_cost": rng.uniform(0, 9, 6)})
    history = pd.DataFrame({"item_id": rng.choice(items["item_id"], 40),
                            "valid_from": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.integers(0, 60, 40), "D"),
                            "standard_cost": rng.uniform(0, 9, 40)}).drop_duplicates(["item_id", "valid_from"])
    probe_items = pd.Series(rng.choice(items["item_id"], 500))
    probe_days = pd.Series(pd.Timestamp("2025-12-25") + pd.to_timedelta(rng.integers(0, 75, 500), "D"))
    got = costs_in_force(probe_items, probe_days, items, history)
    base = items.set_index("item_id")["standard_cost"]
    for i, (item_id, day) in enumerate(zip(probe_items, probe_days, strict=True)):
        rows = history[(history["item_id"] == item_id) & (history["valid_from"] <= day)]
        expected = rows.sort_values("valid_from")["standard_cost"].iloc[-1] if len(rows) else base[item_id]
        assert got[i] == expected


def test_cli_backfill_and_report_show_the_cost_history(tmp_path: Path) -> None:
    """Through the command line: RM costs 3 (items) and 4 from 03-03 (item_costs); FG needs 5 kg.
    C1 100 FG on 03-02 and C2 10 FG on 03-03: RM is issued -500 x 3 = -1,500 and -50 x 4 = -200. The
    report's postings section lists RM as valued at two costs, first 3, last 4; FG (10 each day) not."""
    from pipeline import cli

    landing = make_landing(
        tmp_path, items=ITEMS, bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}],
        completions=[_completion("C1", "2026-03-02T10:00:00Z", 100), _completion("C2", "2026-03-03T10:00:00Z", 10)],
        item_costs=[{"item_id": "RM", "valid_from": "2026-03-03", "standard_cost": 4}])
    warehouse = tmp_path / "warehouse"
    assert cli.main(["-q", "backfill", "--landing", str(landing), "--warehouse", str(warehouse),
                     "--start", "2026-03-02", "--end", "2026-03-03"]) == 0
    adjustments = read(tmp_path, "adjustments")
    rm = adjustments[adjustments["item_id"] == "RM"].sort_values("business_date")
    assert rm["value"].tolist() == [-1500.0, -200.0]
    page = tmp_path / "report.html"
    assert cli.main(["-q", "report", "--warehouse", str(warehouse), "--from", "2026-03-02", "--to", "2026-03-03",
                     "--out", str(page)]) == 0
    html = page.read_text("utf-8")
    table = html[html.index('id="cost-changes"'):]
    table = table[:table.index("</table>")]
    assert "RM" in table and "FG" not in table
    assert "3.0000" in table and "4.0000" in table
