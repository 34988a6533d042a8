"""The period report: its figures equal an independent DuckDB computation over the Parquet files,
and the page renders offline in headless Chromium with those figures, its charts and sortable tables."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from pipeline import cli
from pipeline.report.html import (
    PeriodData,
    distinct_quarantine,
    item_pareto,
    nice_ticks,
    report_figures,
    valued_postings,
    variance_trend,
    write_report,
)

START, END = dt.date(2026, 1, 5), dt.date(2026, 1, 18)
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert cli.main(["--quiet", "demo", "--root", str(root)]) == 0
    return root / "warehouse"


@pytest.fixture(scope="module")
def report(warehouse: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("report") / "report.html"
    figures = write_report(str(warehouse), START, END, out)
    return out, figures


def chromium(tmp_path: Path, page: Path, *extra: str) -> str:
    """Run headless Chromium on a file URL; its stdout (the DOM after scripts ran, for --dump-dom)."""
    if CHROMIUM is None:
        if os.environ.get("BACKFLUSH_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    profile = tmp_path / "chromium-profile"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Figures(HTMLParser):
    """Every element's data-figure -> data-value, and the attributes of <body> and of each <svg>."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self.svgs: list[dict[str, str]] = []
        self.bars = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "data-figure" in a:
            self.figures[a["data-figure"]] = a.get("data-value", "")
        if tag == "body":
            self.body = a
        if tag == "svg":
            self.svgs.append(a)
        if tag == "rect" and "bar" in a.get("class", "").split():
            self.bars += 1


def parse(dom: str) -> _Figures:
    parser = _Figures()
    parser.feed(dom)
    return parser


# ------------------------------------------------------------------ the independent computation


def independent_figures(warehouse: Path, start: dt.date, end: dt.date, plants: list[str] | None = None) -> dict:
    """The key figures straight from the Parquet files with DuckDB (no pipeline code)."""
    con = duckdb.connect()

    def view(name: str) -> None:
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{warehouse}/{name}/**/*.parquet', "
                    "hive_partitioning = true, union_by_name = true)")

    for name in ("postings", "adjustments", "variance", "quarantine", "bom_accuracy"):
        view(name)
    plant_in = "TRUE" if not plants else "plant_id IN (" + ", ".join(f"'{p}'" for p in plants) + ")"
    period = f"BETWEEN DATE '{start}' AND DATE '{end}'"
    values = con.execute(f"""
        WITH adj AS (SELECT * FROM adjustments WHERE business_date {period} AND {plant_in}),
        by_adjustment AS (SELECT adjustment_id, value / qty AS cost FROM adj WHERE qty <> 0),
        by_item AS (SELECT item_id, arg_max(value / qty, business_date) AS cost FROM adj WHERE qty <> 0
                    GROUP BY item_id),
        by_count AS (SELECT item_id, arg_max(standard_cost, counted_at) AS cost FROM variance
                     WHERE {plant_in} AND standard_cost IS NOT NULL GROUP BY item_id),
        p AS (SELECT p.kind, p.qty_delta * coalesce(a.cost, i.cost, c.cost) AS value,
                     coalesce(a.cost, i.cost, c.cost) IS NULL AS unvalued
              FROM postings p
              LEFT JOIN by_adjustment a USING (adjustment_id)
              LEFT JOIN by_item i ON i.item_id = p.item_id
              LEFT JOIN by_count c ON c.item_id = p.item_id
              WHERE p.business_date {period} AND {plant_in})
        SELECT kind, count(*) AS n, coalesce(sum(value), 0) AS value, sum(unvalued::INT) AS unvalued
        FROM p GROUP BY kind
    """).fetchall()
    adjustments = dict(con.execute(f"""SELECT kind, sum(value) FROM adjustments
                                       WHERE business_date {period} AND {plant_in} GROUP BY kind""").fetchall())
    counts, checked, over, net, gross = con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE status <> 'baseline'),
               count(*) FILTER (WHERE status = 'over_tolerance'),
               coalesce(sum(variance_value) FILTER (WHERE status <> 'baseline'), 0),
               coalesce(sum(abs(variance_value)) FILTER (WHERE status <> 'baseline'), 0)
        FROM variance WHERE count_date {period} AND {plant_in}""").fetchone()
    plant_or_null = "TRUE" if not plants else f"(plant_id IS NULL OR {plant_in})"
    quarantined = dict(con.execute(f"""
        SELECT error_code, count(*) FROM (SELECT DISTINCT "table", error_code, "row" FROM quarantine
                                          WHERE business_date {period} AND {plant_or_null})
        GROUP BY error_code""").fetchall())
    flags = dict(con.execute(f"SELECT flag, count(*) FROM bom_accuracy WHERE {plant_in} GROUP BY flag").fetchall())
    return {
        "postings": {k: n for k, n, _, _ in values},
        "postings_value": {k: v for k, _, v, _ in values},
        "postings_unvalued": sum(u for *_, u in values),
        "adjustments_value": adjustments,
        "counts": counts,
        "counts_checked": checked,
        "counts_over_tolerance": over,
        "share_over_tolerance": over / checked if checked else None,
        "variance_value": net,
        "variance_value_abs": gross,
        "quarantined": quarantined,
        "bom_accuracy_flags": flags,
    }


def nonzero(mapping: dict) -> dict:
    return {k: v for k, v in mapping.items() if v}


def assert_figures_equal(figures: object, expected: dict) -> None:
    for name in ("counts", "counts_checked", "counts_over_tolerance", "postings_unvalued"):
        assert getattr(figures, name) == expected[name], name
    for name in ("share_over_tolerance", "variance_value", "variance_value_abs"):
        assert getattr(figures, name) == pytest.approx(expected[name], rel=1e-9, abs=1e-6), name
    for name in ("postings", "quarantined", "bom_accuracy_flags"):
        assert nonzero(getattr(figures, name)) == nonzero(expected[name]), name
    for name in ("postings_value", "adjustments_value"):
        got = nonzero(getattr(figures, name))
        assert got.keys() == nonzero(expected[name]).keys(), name
        assert got == pytest.approx(expected[name], rel=1e-9, abs=1e-6), name


# ------------------------------------------------------------------ end to end


def test_report_figures_equal_an_independent_duckdb_computation(warehouse: Path, report: tuple) -> None:
    _, figures = report
    expected = independent_figures(warehouse, START, END)
    assert expected["counts_checked"] > 0 and expected["postings"] and expected["quarantined"]  # a real check
    assert_figures_equal(figures, expected)
    assert figures.plants == ["P1", "P2", "P3"]


def test_report_for_one_plant_keeps_master_data_rejects(warehouse: Path, tmp_path: Path) -> None:
    figures = write_report(str(warehouse), START, END, tmp_path / "p2.html", plants=["P2"])
    expected = independent_figures(warehouse, START, END, plants=["P2"])
    assert_figures_equal(figures, expected)
    assert figures.plants == ["P2"]
    assert figures.quarantined["INVALID"] >= 2  # the group-BOM rows have no plant: they concern P2 too


def test_page_is_self_contained(report: tuple) -> None:
    page = report[0].read_text(encoding="utf-8")
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page)
    assert re.findall(r"https?://[^\s\"'<>]+", page) == ["http://www.w3.org/2000/svg"] * 3  # SVG namespaces
    assert "url(" not in page and "@import" not in page
    assert len(page) < 1_000_000


def test_page_renders_offline_in_chromium_with_the_figures(warehouse: Path, report: tuple, tmp_path: Path) -> None:
    page, figures = report
    dom = parse(chromium(tmp_path, page, "--dump-dom"))
    assert dom.body.get("data-report-ready") == "1"  # the inline script ran to its end
    assert int(dom.body["data-sortable-tables"]) >= 6
    charts = {s["data-chart"]: s for s in dom.svgs if "data-chart" in s}
    assert charts.keys() == {"pareto", "trend", "suggestions"}
    assert int(charts["pareto"]["data-bars"]) == 20
    assert int(charts["pareto"]["data-bars"]) + int(charts["suggestions"]["data-bars"]) == dom.bars
    assert charts["trend"]["data-lines"] == "3"

    expected = independent_figures(warehouse, START, END)
    shown = dom.figures
    for name in ("counts", "counts_checked", "counts_over_tolerance", "postings_unvalued"):
        assert int(shown[name]) == expected[name], name
    for name in ("share_over_tolerance", "variance_value", "variance_value_abs"):
        assert float(shown[name]) == pytest.approx(expected[name], rel=1e-9), name
    for kind, value in expected["postings_value"].items():
        assert float(shown[f"postings_value.{kind}"]) == pytest.approx(value, rel=1e-9), kind
        assert int(shown[f"postings.{kind}"]) == expected["postings"][kind], kind
    for code, n in expected["quarantined"].items():
        assert int(shown[f"quarantined.{code}"]) == n, code
    for flag, n in expected["bom_accuracy_flags"].items():
        assert int(shown[f"bom_accuracy_flags.{flag}"]) == n, flag
    assert float(shown["variance_value"]) == pytest.approx(figures.variance_value, rel=1e-12)


def test_tables_sort_and_charts_have_a_size_in_chromium(report: tuple, tmp_path: Path) -> None:
    probe = """<script>
(function () {
  function column(table, header) {
    var th = Array.prototype.find.call(table.tHead.rows[0].cells, function (c) {
      return c.textContent.trim().indexOf(header) === 0; });
    th.click();
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.cells[th.cellIndex].getAttribute("data-value"); });
  }
  var counts = document.getElementById("largest-variances");
  var result = {
    value_first_click: column(counts, "Variance value"),
    value_second_click: column(counts, "Variance value"),
    usage_first_click: column(counts, "Usage var."),
    usage_second_click: column(counts, "Usage var."),
    sort_state: counts.tHead.rows[0].cells[1].getAttribute("aria-sort"),
    pareto_width: document.querySelector('svg[data-chart="pareto"]').getBoundingClientRect().width,
    trend_height: document.querySelector('svg[data-chart="trend"]').getBoundingClientRect().height,
    first_bar_height: document.querySelector("rect.bar").getBBox().height
  };
  document.body.setAttribute("data-probe", JSON.stringify(result));
})();
</script>"""
    page = tmp_path / "probed.html"
    page.write_text(report[0].read_text(encoding="utf-8").replace("</body>", probe + "</body>"), encoding="utf-8")
    result = json.loads(parse(chromium(tmp_path, page, "--window-size=1280,900", "--dump-dom")).body["data-probe"])

    values = [float(v) for v in result["value_first_click"]]
    assert len(values) == 100 and values == sorted(values, reverse=True)  # money: largest first on the first click
    assert [float(v) for v in result["value_second_click"]] == sorted(values)
    for key, descending in (("usage_first_click", True), ("usage_second_click", False)):
        cells = result[key]
        filled = [float(v) for v in cells if v != ""]
        assert cells[:len(filled)] == [c for c in cells if c != ""], "blank cells sort last either way"
        assert filled == sorted(filled, reverse=descending)
    assert "" in result["usage_first_click"]  # the demo has non-backflushed items: the blanks case is exercised
    assert result["sort_state"] == "none"
    assert result["pareto_width"] > 800 and result["trend_height"] > 200
    assert result["first_bar_height"] > 100


def test_screenshot_is_drawn(report: tuple, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(tmp_path, report[0], "--window-size=1280,2400", f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 2400)
    assert len(data) > 150_000  # charts, cards and tables; an empty page compresses to a few KB


def test_empty_period_still_renders(warehouse: Path, tmp_path: Path) -> None:
    out = tmp_path / "empty.html"
    figures = write_report(str(warehouse), dt.date(2025, 1, 1), dt.date(2025, 1, 31), out)
    assert figures.counts == 0 and figures.share_over_tolerance is None and figures.variance_value == 0.0
    assert sum(figures.postings.values()) == 0 and sum(figures.quarantined.values()) == 0
    page = out.read_text(encoding="utf-8")
    assert 'data-chart="pareto" data-bars="0"' in page and "No variance in this period." in page
    assert 'data-figure="share_over_tolerance" data-value=""' in page


def test_rejects_a_reversed_period_and_a_missing_warehouse(warehouse: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="before"):
        write_report(str(warehouse), END, START, tmp_path / "x.html")
    with pytest.raises(ValueError, match="not a backflush warehouse"):
        write_report(str(tmp_path / "nowhere"), START, END, tmp_path / "x.html")
    assert not (tmp_path / "x.html").exists()


def test_cli_report_subcommand(warehouse: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    actions = [a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    if "report" not in actions[0].choices:
        pytest.skip("pipeline/cli.py has no `report` subcommand yet")
    out = tmp_path / "cli.html"
    base = ["report", "--warehouse", str(warehouse), "--out", str(out)]
    assert cli.main([*base, "--from", "2026-01-05", "--to", "2026-01-18", "--plant", "P1"]) == 0
    assert "counts checked" in capsys.readouterr().out and out.exists()
    assert cli.main([*base, "--from", "2026-01-18", "--to", "2026-01-05"]) == cli.EXIT_FAILED
    assert capsys.readouterr().err.strip() == "backflush: --to 2026-01-05 is before --from 2026-01-18"


# ------------------------------------------------------------------ pure functions on hand-made frames


def _frames() -> PeriodData:
    day = pd.Timestamp("2026-01-05")
    postings = pd.DataFrame({
        "plant_id": ["P1"] * 5,
        "business_date": [day] * 5,
        "adjustment_id": ["a1", "a1", "gone", "gone2", "gone3"],
        "item_id": ["RM", "RM", "RM", "SA", "XX"],
        "kind": ["backflush_issue", "backflush_issue", "backflush_issue", "production_receipt", "backflush_issue"],
        "qty_delta": [-10.0, 2.0, -4.0, 3.0, -1.0],
    })
    adjustments = pd.DataFrame({
        "adjustment_id": ["a1", "z0"], "item_id": ["RM", "RM"], "kind": ["backflush_issue"] * 2,
        "qty": [-8.0, 0.0], "value": [-20.0, 0.0], "plant_id": ["P1", "P1"], "business_date": [day, day],
    })
    item_costs = pd.DataFrame({"item_id": ["SA", "SA"], "standard_cost": [7.0, 9.0],
                               "counted_at": pd.to_datetime(["2026-01-01", "2026-01-03"], utc=True)})
    variance = pd.DataFrame({
        "plant_id": ["P1", "P1", "P2", "P2"],
        "count_id": ["k1", "k2", "k3", "k4"],
        "item_id": ["RM", "SA", "RM", "SA"],
        "uom": ["kg", "EA", "kg", "EA"],
        "count_date": [day, day, day + pd.Timedelta(days=2), day],
        "status": ["over_tolerance", "ok", "over_tolerance", "baseline"],
        "variance_qty": [-4.0, 1.0, 1.0, None],
        "variance_value": [-10.0, 9.0, 2.5, None],
    })
    quarantine = pd.DataFrame({
        "table": ["bom", "bom", "completions", "completions"],
        "error_code": ["INVALID", "INVALID", "NO_BOM", "NO_BOM"],
        "row": ['{"a":1}', '{"a":1}', '{"c":1}', '{"c":2}'],
        "source_key": ["*:X>Y", "*:X>Y", "C1", "C2"],
        "plant_id": [None, None, "P1", "P1"],
        "business_date": [day, day + pd.Timedelta(days=1), day, day],
        "message": ["m"] * 4,
    })
    accuracy = pd.DataFrame({"plant_id": ["P1", "P1"], "flag": ["ok", "bom_qty_low"],
                             "as_of": pd.to_datetime(["2026-01-06", "2026-01-06"], utc=True)})
    return PeriodData(start=dt.date(2026, 1, 5), end=dt.date(2026, 1, 7), plants=None, postings=postings,
                      adjustments=adjustments, variance=variance, item_costs=item_costs, quarantine=quarantine,
                      bom_accuracy=accuracy)


def test_postings_are_valued_by_their_adjustment_then_the_item_then_the_last_count() -> None:
    data = _frames()
    out = valued_postings(data.postings, data.adjustments, data.item_costs)
    # a1: 2.5 per kg from its own adjustment; 'gone': RM's cost from another adjustment of the period;
    # 'gone2': SA has no adjustment, its latest count says 9; XX: nothing known
    assert out["unit_cost"].tolist()[:4] == [2.5, 2.5, 2.5, 9.0]
    assert pd.isna(out["unit_cost"].iloc[4])
    assert out["value"].tolist()[:4] == [-25.0, 5.0, -10.0, 27.0]


def test_figures_on_hand_made_frames() -> None:
    f = report_figures(_frames())
    assert f.postings == {"production_receipt": 1, "backflush_issue": 4, "byproduct_receipt": 0}
    assert f.postings_value == {"production_receipt": 27.0, "backflush_issue": -30.0, "byproduct_receipt": 0.0}
    assert f.postings_unvalued == 1
    assert (f.counts, f.counts_checked, f.counts_over_tolerance) == (4, 3, 2)
    assert f.share_over_tolerance == pytest.approx(2 / 3)
    assert f.variance_value == pytest.approx(1.5) and f.variance_value_abs == pytest.approx(21.5)
    assert nonzero(f.quarantined) == {"INVALID": 1, "NO_BOM": 2}  # the bom row re-rejected on two dates counts once
    assert nonzero(f.bom_accuracy_flags) == {"ok": 1, "bom_qty_low": 1}
    assert f.plants == ["P1", "P2"]


def test_distinct_quarantine_keeps_one_row_per_rejected_input_row() -> None:
    rows = distinct_quarantine(_frames().quarantine)
    assert sorted(rows["source_key"]) == ["*:X>Y", "C1", "C2"]


def test_item_pareto_ranks_by_absolute_net_value() -> None:
    pareto = item_pareto(_frames().variance)
    assert pareto["item_id"].tolist() == ["SA", "RM"]  # |9| > |-10 + 2.5|
    assert pareto["variance_value"].tolist() == [9.0, -7.5]
    assert pareto["gross_variance_value"].tolist() == [9.0, 12.5]
    assert pareto["cumulative_share"].tolist() == pytest.approx([9 / 16.5, 1.0])


def test_variance_trend_has_every_date_for_every_plant() -> None:
    trend = variance_trend(_frames().variance, dt.date(2026, 1, 5), dt.date(2026, 1, 7))
    assert len(trend) == 6
    p1 = trend[trend["plant_id"] == "P1"]
    assert p1["variance_value"].tolist() == [-1.0, 0.0, 0.0] and p1["counts"].tolist() == [2, 0, 0]
    p2 = trend[trend["plant_id"] == "P2"]
    assert p2["variance_value"].tolist() == [0.0, 0.0, 2.5]  # the P2 baseline is not a variance


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0, 9_878_063, [0, 2e6, 4e6, 6e6, 8e6, 10e6]),
    (-712_000, 3_260_000, [-1e6, 0, 1e6, 2e6, 3e6, 4e6]),
    (0, 0, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
])
def test_nice_ticks(low: float, high: float, expected: list[float]) -> None:
    assert nice_ticks(low, high) == pytest.approx(expected)
