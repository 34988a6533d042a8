"""BOM-line suggestions (issue 16.6): per (plant, parent, component) the quantity per unit that
best explains the counted usage, by ridge least squares toward the BOM. Expected numbers are
worked by hand in the comments."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipeline import cli, job
from pipeline.config import Config
from pipeline.domain import accuracy
from tests.support.landing import config_for, make_landing, read, run

P, L = "P1", "L1"
AS_OF = pd.Timestamp("2026-03-05T00:00:00Z")


def item(item_id: str, uom: str, *, decimals: int = 3) -> dict[str, object]:
    return {"item_id": item_id, "uom": uom, "standard_cost": 1.0, "phantom": "false", "backflush": "true",
            "uom_decimals": decimals}


def completion(cid: str, item_id: str, at: str, qty: float) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": P, "location_id": L, "item_id": item_id, "qty_good": qty,
            "qty_scrap": 0.0, "completed_at": at}


def count(cid: str, at: str, qty: float) -> dict[str, object]:
    return {"count_id": cid, "plant_id": P, "location_id": L, "item_id": "RM", "counted_qty": qty,
            "counted_at": at}


# Two parents share RM: the BOM says A uses 2 kg, B 1 kg; in truth A uses 2.5 kg.
#   window 1 (2 March): 10 A        theoretical 20, used 25
#   window 2 (3 March): 10 B        theoretical 10, used 10
#   window 3 (4 March): 10 A + 10 B theoretical 30, used 35
# X = [[10, 0], [0, 10], [10, 10]], y = [25, 10, 35], b0 = [2, 1]
# counts: 1000 -> 975 -> 965 -> 930
SHARED = {
    "items": [item("A", "EA", decimals=0), item("B", "EA", decimals=0), item("RM", "KG")],
    "bom": [{"parent_item_id": "A", "component_item_id": "RM", "qty_per": 2},
            {"parent_item_id": "B", "component_item_id": "RM", "qty_per": 1}],
    "completions": [completion("C1", "A", "2026-03-02T10:00:00Z", 10), completion("C2", "B", "2026-03-03T10:00:00Z", 10),
                    completion("C3", "A", "2026-03-04T10:00:00Z", 10), completion("C4", "B", "2026-03-04T11:00:00Z", 10)],
    "stock_counts": [count("K0", "2026-03-01T18:00:00Z", 1000), count("K1", "2026-03-02T18:00:00Z", 975),
                     count("K2", "2026-03-03T18:00:00Z", 965), count("K3", "2026-03-04T18:00:00Z", 930)],
}
DATES = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


def frames(used: list[float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The variance rows and parent flows of the three windows above, with `used` kg of RM used."""
    theoretical = [20.0, 10.0, 30.0]
    rows = pd.DataFrame({
        "count_id": ["K1", "K2", "K3"], "plant_id": P, "item_id": "RM", "uom": "KG", "status": "ok",
        "backflushed": True, "counted_at": pd.to_datetime(["2026-03-02T18:00Z", "2026-03-03T18:00Z", "2026-03-04T18:00Z"]),
        "theoretical_usage_qty": theoretical, "variance_qty": [t - u for t, u in zip(theoretical, used, strict=True)]})
    flows = pd.DataFrame({"count_id": ["K1", "K2", "K3", "K3"], "parent_item_id": ["A", "B", "A", "B"],
                          "units": [10.0, 10.0, 10.0, 10.0], "unit_usage": [20.0, 10.0, 20.0, 10.0],
                          "order_usage": 0.0})
    return rows, flows


def by_parent(out: pd.DataFrame) -> pd.DataFrame:
    return out.set_index("parent_item_id")


def test_least_squares_finds_the_line_that_is_off() -> None:
    rows, flows = frames([25.0, 10.0, 35.0])
    out = by_parent(accuracy.bom_suggestions(rows, flows, Config(), as_of=AS_OF, ridge=1e-6))
    # XᵀX = [[200, 100], [100, 200]], Xᵀy = [10·25 + 10·35, 10·10 + 10·35] = [600, 450]
    # b = (XᵀX)⁻¹ Xᵀy = [200·600 − 100·450, −100·600 + 200·450] / 30000 = [2.5, 1.0]
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(2.5, rel=1e-4)
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(1.0, rel=1e-4)
    assert out.loc["A", "current_qty_per"] == pytest.approx(2.0)  # 40 kg drawn for 20 units
    assert out.loc["A", "change_pct"] == pytest.approx(25.0, rel=1e-4)  # 2.5 / 2 − 1
    assert out.loc["A", "windows"] == 2 and out.loc["A", "component_windows"] == 3
    assert out.loc["A", "produced_qty"] == pytest.approx(20.0)  # 10 + 10
    assert out.loc["A", "component_actual_usage_qty"] == pytest.approx(70.0)  # 25 + 10 + 35
    # an exact fit with one residual degree of freedom (3 windows − 2 lines): no standard error
    assert out.loc["A", "std_error"] == pytest.approx(0.0, abs=1e-4)
    assert out.loc["A", "confidence"] == pytest.approx(1.0, abs=1e-4)


def test_the_bom_quantity_pulls_as_a_prior() -> None:
    rows, flows = frames([25.0, 10.0, 35.0])
    # λ = 0.01: Λ = 0.01 · diag(Σ x_A², Σ x_B²) = diag(2, 2)
    # (XᵀX + Λ) b = Xᵀy + Λ b0: [[202, 100], [100, 202]] b = [600 + 4, 450 + 2]
    # det = 202² − 100² = 30804; b_A = (202·604 − 100·452) / 30804 = 76808 / 30804,
    # b_B = (202·452 − 100·604) / 30804 = 30904 / 30804
    out = by_parent(accuracy.bom_suggestions(rows, flows, Config(), as_of=AS_OF))
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(76808 / 30804)  # 2.4934
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(30904 / 30804)  # 1.0032
    # λ = 1: Λ = diag(200, 200): [[400, 100], [100, 400]] b = [1000, 650], det = 150000
    strong = by_parent(accuracy.bom_suggestions(rows, flows, Config(), as_of=AS_OF, ridge=1.0))
    assert strong.loc["A", "suggested_qty_per"] == pytest.approx(335000 / 150000)  # (400·1000 − 100·650)
    assert strong.loc["B", "suggested_qty_per"] == pytest.approx(160000 / 150000)  # (400·650 − 100·1000)


def test_standard_error_and_confidence_from_the_residuals() -> None:
    rows, flows = frames([25.0, 10.0, 36.0])  # one kilogram of noise in window 3
    out = by_parent(accuracy.bom_suggestions(rows, flows, Config(), as_of=AS_OF, ridge=1e-6))
    # Xᵀy = [250 + 360, 100 + 360] = [610, 460]: b = [122000 − 46000, −61000 + 92000] / 30000
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(76000 / 30000, rel=1e-4)  # 2.5333
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(31000 / 30000, rel=1e-4)  # 1.0333
    # fitted 25.333, 10.333, 35.667: residuals −1/3, −1/3, +1/3, SSE = 1/3, dof = 3 − 2: σ² = 1/3
    # var(b_A) = σ² · [(XᵀX)⁻¹]_AA = 1/3 · 200/30000 = 1/450
    se = (1 / 450) ** 0.5  # 0.04714
    assert out.loc["A", "std_error"] == pytest.approx(se, rel=1e-4)
    assert out.loc["B", "std_error"] == pytest.approx(se, rel=1e-4)
    assert out.loc["A", "confidence"] == pytest.approx(1 - se / (76000 / 30000), rel=1e-4)  # 0.9814


def test_fixed_quantities_are_taken_off_and_suggest_nothing() -> None:
    rows, flows = frames([30.0, 10.0, 35.0])  # window 1 also drew a set-up of 5 kg for an order of C
    fixed = pd.DataFrame({"count_id": ["K1"], "parent_item_id": ["C"], "units": [4.0], "unit_usage": [0.0],
                          "order_usage": [5.0]})
    rows = rows.assign(theoretical_usage_qty=[25.0, 10.0, 30.0], variance_qty=[-5.0, 0.0, -5.0])
    out = by_parent(accuracy.bom_suggestions(rows, pd.concat([flows, fixed]), Config(), as_of=AS_OF, ridge=1e-6))
    # y = [30 − 5, 10, 35]: as in test_least_squares_finds_the_line_that_is_off; C (fixed only) is no line
    assert set(out.index) == {"A", "B"}
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(2.5, rel=1e-4)
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(1.0, rel=1e-4)
    assert out.loc["A", "component_actual_usage_qty"] == pytest.approx(75.0)  # 30 + 10 + 35, set-up included


def test_as_many_lines_as_windows_gives_no_confidence() -> None:
    rows, flows = frames([25.0, 10.0, 35.0])
    rows, flows = rows[rows["count_id"] != "K3"], flows[flows["count_id"] != "K3"]
    out = by_parent(accuracy.bom_suggestions(rows, flows, Config(), as_of=AS_OF, ridge=1e-6))
    # 2 windows, 2 lines: A alone in window 1 (25 kg for 10: 2.5), B alone in window 2 (1.0)
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(2.5, rel=1e-4)
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(1.0, rel=1e-4)
    assert (out["confidence"] == 0.0).all()  # an exact fit whatever the truth: nothing to judge by


def test_a_run_publishes_the_suggestions(tmp_path: Path) -> None:
    run(tmp_path, make_landing(tmp_path, **SHARED), DATES)
    out = by_parent(read(tmp_path, "bom_suggestions"))
    assert set(out.index) == {"A", "B"}
    assert (out["plant_id"] == P).all() and (out["component_item_id"] == "RM").all()
    # as in test_the_bom_quantity_pulls_as_a_prior (λ = 0.01)
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(76808 / 30804)
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(30904 / 30804)
    assert out.loc["A", "current_qty_per"] == pytest.approx(2.0)
    assert out.loc["B", "current_qty_per"] == pytest.approx(1.0)
    assert out.loc["A", "theoretical_usage_qty"] == pytest.approx(40.0)  # 20 A x 2 kg
    assert out.loc["B", "produced_qty"] == pytest.approx(20.0)


def test_suggestions_count_the_last_configured_windows(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, **SHARED)
    config = config_for(tmp_path, landing, bom_accuracy_counts=2)
    job.run_dates(config, [dt.date.fromisoformat(d) for d in DATES])
    out = by_parent(read(tmp_path, "bom_suggestions"))
    # windows 2 and 3 only: X = [[0, 10], [10, 10]], y = [10, 35]; Λ = 0.01 · diag(100, 200) = diag(1, 2)
    # [[101, 100], [100, 202]] b = [350 + 2, 450 + 2]; det = 101·202 − 100² = 10402
    assert out.loc["A", "windows"] == 1 and out.loc["A", "component_windows"] == 2
    assert out.loc["A", "produced_qty"] == pytest.approx(10.0)
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(25904 / 10402)  # 202·352 − 100·452
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(10452 / 10402)  # 101·452 − 100·352


def test_the_cli_publishes_the_suggestions(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, **SHARED)
    assert cli.main(["-q", "backfill", "--landing", str(landing), "--warehouse", str(tmp_path / "warehouse"),
                     "--start", DATES[0], "--end", DATES[-1]]) == 0
    out = by_parent(read(tmp_path, "bom_suggestions"))
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(76808 / 30804)  # as with λ = 0.01 above
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(30904 / 30804)


# ------------------------------------------------------------------ generated data (the test)

GEN_START, GEN_DAYS = dt.date(2026, 1, 5), 20


def _units_in_windows(completions: pd.DataFrame, counts: pd.DataFrame, parent: str) -> pd.Series:
    """Units (good + scrap) of `parent` made at each count's location in its window (previous
    count, count], by count_id: worked out from the landing rows, not by the pipeline."""
    made = completions[completions["item_id"] == parent]
    out = {}
    for row in counts.itertuples():
        if pd.isna(row.previous):
            out[row.count_id] = 0.0
            continue
        here = made[(made["location_id"] == row.location_id) & (made["completed_at"] > row.previous)
                    & (made["completed_at"] <= row.counted_at)]
        out[row.count_id] = float((here["qty_good"] + here["qty_scrap"]).sum())
    return pd.Series(out)


def test_generated_data_the_line_that_is_off_and_its_true_quantity(tmp_path: Path) -> None:
    from pipeline.tools.generate import generate_landing

    landing = tmp_path / "landing"
    generate_landing(landing, items=30, completions=6000, days=GEN_DAYS, seed=5, plants=1, start=GEN_START,
                     counts=3000)
    end = GEN_START + dt.timedelta(days=GEN_DAYS - 1)
    job.backfill(config_for(tmp_path / "first", landing), GEN_START, end)
    first = read(tmp_path / "first", "variance")
    bom = pd.read_parquet(landing / "bom")
    items = pd.read_parquet(landing / "items").set_index("item_id")
    completions = pd.read_parquet(landing / "completions").sort_values("recorded_at").drop_duplicates(
        "completion_id", keep="last")
    # a line whose quantity per unit is plain to see: group line, open validity, per 1 in the base unit,
    # of a parent with no phantom or plant-specific line (its explosion uses the component by this line only)
    phantom_parent = bom.loc[bom["component_item_id"].map(items["phantom"]).astype(bool), "parent_item_id"]
    local_parent = bom.loc[bom["plant_id"].notna(), "parent_item_id"]
    plain = bom[(bom["qty_per"] > 0) & bom["plant_id"].isna() & bom["valid_from"].isna() & bom["valid_to"].isna() & (bom["base_qty"] == 1)
                & bom["uom"].isna() & ~bom["parent_item_id"].isin(phantom_parent) & ~bom["parent_item_id"].isin(local_parent)
                & bom["component_item_id"].map(items["backflush"]).astype(bool)
                & (bom["component_item_id"].map(items["uom_decimals"]) >= 3)]  # counts to the gram, not the piece
    made = completions.groupby("item_id")["qty_good"].sum()
    shared = bom[bom["qty_per"] > 0].groupby("component_item_id")["parent_item_id"].nunique()
    plain = plain[plain["component_item_id"].map(shared) >= 2].assign(made=plain["parent_item_id"].map(made))
    counted = first[first["status"] != "baseline"].groupby("item_id").size()
    # the component with the most windows per parent line (fewer windows than lines cannot tell them apart)
    plain = plain.assign(windows=plain["component_item_id"].map(counted).fillna(0),
                         per_line=lambda f: f["windows"] / f["component_item_id"].map(shared)).sort_values(
        ["per_line", "made"], ascending=False)
    line = plain.iloc[0]
    parent, component = line["parent_item_id"], line["component_item_id"]
    assert line["windows"] >= 4
    bom_qty = float(line["qty_per"]) * (1 + float(line["scrap_pct"]) / 100)  # per unit with planned scrap
    true_qty = bom_qty * 1.10  # the shop floor uses 10 % more than this line says

    # rewrite the component's counts as book stock plus exactly the extra the line uses (no other deviation)
    rows = first[first["item_id"] == component].sort_values(["location_id", "counted_at", "count_id"])
    rows = rows.assign(previous=rows.groupby("location_id")["counted_at"].shift(1))
    extra = (true_qty - bom_qty) * _units_in_windows(completions, rows, parent).reindex(rows["count_id"]).to_numpy()
    assert extra.sum() > 0
    net = (rows["book_qty"] - rows["opening_qty"]).fillna(0.0).to_numpy()  # the window's booked flows
    step = pd.Series(net - extra, index=rows.index).where(rows["previous"].notna(), 0.0)
    recount = 1_000_000.0 + step.groupby(rows["location_id"]).cumsum()
    new = dict(zip(rows["count_id"], recount.round(3), strict=True))
    path = landing / "stock_counts" / "part-00000.parquet"
    counts = pd.read_parquet(path)
    counts["counted_qty"] = counts["count_id"].map(new).fillna(counts["counted_qty"])
    counts.to_parquet(path, index=False)

    job.backfill(config_for(tmp_path, landing, bom_accuracy_counts=1000), GEN_START, end)
    out = read(tmp_path, "bom_suggestions")
    lines = out[out["component_item_id"] == component].set_index("parent_item_id")
    assert lines["windows"].max() >= 1 and len(lines) >= 2
    assert lines.loc[parent, "current_qty_per"] == pytest.approx(bom_qty)
    # the line that is off is the one with the largest change, and its true quantity within 2 %
    assert lines["change_pct"].abs().idxmax() == parent
    assert lines.loc[parent, "suggested_qty_per"] == pytest.approx(true_qty, rel=0.02)
    others = lines.drop(index=parent)
    assert (others["change_pct"].abs() < 2.0).all()  # the other lines stay at their BOM quantity


# ------------------------------------------------------------------ the report


def test_top_suggestions_rank_confident_changes_first() -> None:
    from pipeline.report.html import top_suggestions

    frame = pd.DataFrame({"plant_id": "P1", "parent_item_id": ["A", "B", "C", "D"], "component_item_id": "RM",
                          "change_pct": [5.0, -30.0, 50.0, float("nan")], "confidence": [0.95, 0.92, 0.5, 1.0]})
    top = top_suggestions(frame)
    # C changes most but at 50 % confidence (< 90 %); D has no current quantity to change from
    assert top["parent_item_id"].tolist() == ["B", "A"]


def test_the_report_shows_the_suggestions_with_a_chart(tmp_path: Path) -> None:
    import re

    from pipeline.report.html import write_report

    run(tmp_path, make_landing(tmp_path, **SHARED), DATES)
    out = tmp_path / "report.html"
    write_report(str(tmp_path / "warehouse"), dt.date(2026, 3, 1), dt.date(2026, 3, 4), out)
    page = out.read_text("utf-8")
    table = page[page.index('id="bom-suggestions-table"'):]
    table = table[:table.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)[1:]  # after the header
    # A: 2 → 76808/30804 = 2.4934 kg (+24.67 %), B: 1 → 1.0032 (+0.32 %); both fit exactly but for the prior
    assert [re.findall(r"<td>(\w+)</td>", r)[1] for r in rows] == ["A", "B"]
    changes = [float(v) for v in re.findall(r'data-value="([-0-9.e]+)">[^<]*%</td>', table)[::2]]
    assert changes[0] == pytest.approx((76808 / 30804 / 2 - 1) * 100)
    chart = page[page.index('data-chart="suggestions"'):]
    assert 'data-bars="2"' in chart[:200]
    bars = re.findall(r'<rect class="bar"[^>]*data-parent="(\w+)"[^>]*data-value="([-0-9.e]+)"', chart)
    assert [b[0] for b in bars] == ["A", "B"]
    assert float(bars[0][1]) == pytest.approx((76808 / 30804 / 2 - 1) * 100)


def test_two_paths_count_units_once_and_fixed_quantities_are_offsets(tmp_path: Path) -> None:
    phantom = {**item("PH", "EA", decimals=0), "phantom": "true"}
    landing = make_landing(
        tmp_path,
        items=[*SHARED["items"], item("C", "EA", decimals=0), phantom],
        bom=[{"parent_item_id": "A", "component_item_id": "RM", "qty_per": 1, "fixed_qty": "false"},
             {"parent_item_id": "A", "component_item_id": "PH", "qty_per": 1, "fixed_qty": "false"},
             {"parent_item_id": "PH", "component_item_id": "RM", "qty_per": 1, "fixed_qty": "false"},
             {"parent_item_id": "B", "component_item_id": "RM", "qty_per": 1, "fixed_qty": "false"},
             {"parent_item_id": "C", "component_item_id": "RM", "qty_per": 5, "fixed_qty": "true"}],
        completions=[*SHARED["completions"], completion("C5", "C", "2026-03-02T12:00:00Z", 3)],
        # A draws 1 + 1 kg per unit (directly and through PH), C's order 5 kg once; A truly uses 2.5:
        # window 1: 25 + 5 = 30 used (theoretical 20 + 5), window 2: 10, window 3: 35
        stock_counts=[count("K0", "2026-03-01T18:00:00Z", 1000), count("K1", "2026-03-02T18:00:00Z", 970),
                      count("K2", "2026-03-03T18:00:00Z", 960), count("K3", "2026-03-04T18:00:00Z", 925)])
    run(tmp_path, landing, DATES)
    out = by_parent(read(tmp_path, "bom_suggestions"))
    assert set(out.index) == {"A", "B"}  # C's line is a fixed quantity: nothing per unit to suggest
    assert out.loc["A", "produced_qty"] == pytest.approx(20.0)  # 10 + 10 units, once though two paths
    assert out.loc["A", "current_qty_per"] == pytest.approx(2.0)  # 40 kg for 20 units
    # y = [30 − 5, 10, 35]: the numbers of test_the_bom_quantity_pulls_as_a_prior
    assert out.loc["A", "suggested_qty_per"] == pytest.approx(76808 / 30804)
    assert out.loc["B", "suggested_qty_per"] == pytest.approx(30904 / 30804)
