"""The period report: one self-contained HTML page of postings, variance, quarantine and BOM accuracy.

Reading (`read_period`) is split from the figures (pure DataFrame functions, tested on hand-made
frames) and from the rendering (HTML strings; charts are inline SVG drawn here, tables are sorted
by a few lines of inline JavaScript). The page needs no server, no network and no library: it
opens from a file, an e-mail attachment or a shared drive, and prints.
"""

from __future__ import annotations

import datetime as dt
import html
import importlib.resources
import math
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from pipeline import __version__
from pipeline.contract import schemas
from pipeline.store.warehouse import Warehouse

TEMPLATE = "report_template.html"
PARETO_BARS = 20  # items drawn in the Pareto chart; the table lists every item
TOP_COUNTS = 100  # largest count variances listed
QUARANTINE_ROWS = 500  # quarantined rows listed (the by-code totals count all of them)
TOP_SUGGESTIONS = 15  # BOM-line suggestions listed and charted
SUGGESTION_CONFIDENCE = 0.9  # the least confidence of a suggestion worth an analyst's look
BOM_FLAGS = ("bom_qty_low", "bom_qty_high", "insufficient_counts", "ok")
PLANT_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7F7F7F", "#B8860B")
SHORTAGE, SURPLUS, CUMULATIVE = "#C0392B", "#1F77B4", "#3D4852"


@dataclass(frozen=True)
class ReportFigures:
    """The period's key figures, as shown on the page (values at standard cost)."""

    start: dt.date
    end: dt.date
    plants: list[str]
    postings: dict[str, int]  # kind -> postings appended for business dates in the period
    postings_value: dict[str, float]  # kind -> sum of qty_delta × standard cost
    postings_unvalued: int  # postings whose standard cost could not be found (valued 0)
    adjustments_value: dict[str, float]  # kind -> current desired value of the same dates
    counts: int  # stock counts dated in the period (count_date)
    counts_checked: int  # counts with a variance (not the first count of their item)
    counts_over_tolerance: int
    share_over_tolerance: float | None  # over tolerance / checked; None when nothing was checked
    variance_value: float  # net variance value of the checked counts
    variance_value_abs: float  # sum of |variance value|: gross, before gains offset losses
    quarantined: dict[str, int]  # error code -> distinct rejected input rows dated in the period
    bom_accuracy_flags: dict[str, int]  # flag -> components, latest estimate
    bom_accuracy_as_of: dt.datetime | None = None
    released: int = 0  # quarantined rows dated in the period that the error queue released since


@dataclass
class PeriodData:
    """What the report reads from the warehouse for a period and a set of plants."""

    start: dt.date
    end: dt.date
    plants: list[str] | None
    postings: pd.DataFrame
    adjustments: pd.DataFrame
    variance: pd.DataFrame
    item_costs: pd.DataFrame
    quarantine: pd.DataFrame
    bom_accuracy: pd.DataFrame
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    stock_exceptions: pd.DataFrame = field(default_factory=pd.DataFrame)
    released: pd.DataFrame = field(default_factory=pd.DataFrame)  # quarantined rows released since
    bom_suggestions: pd.DataFrame = field(default_factory=pd.DataFrame)
    fixed_quantities: pd.DataFrame = field(default_factory=pd.DataFrame)  # consumption rows with a fixed part


# ------------------------------------------------------------------ reading


def read_period(warehouse: str, start: dt.date, end: dt.date, *, plants: list[str] | None = None) -> PeriodData:
    """The rows of every output that fall in [start, end] (business_date / count_date), for `plants`."""
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    wh = Warehouse(warehouse)
    if not wh.exists(wh.path("runs")) and not wh.exists(wh.path("variance")):
        raise ValueError(f"{warehouse} is not a backflush warehouse (no runs, no variance)")
    plant_filter = ds.field("plant_id").isin(plants) if plants else None

    def period(column: str) -> ds.Expression:
        expr = (ds.field(column) >= pa.scalar(start, pa.date32())) & (ds.field(column) <= pa.scalar(end, pa.date32()))
        return expr & plant_filter if plant_filter is not None else expr

    quarantine = wh.read("quarantine", filters=period("business_date") if not plants else
                         (ds.field("business_date") >= pa.scalar(start, pa.date32()))
                         & (ds.field("business_date") <= pa.scalar(end, pa.date32())))
    if plants:  # rows without a plant (master data) concern every plant
        quarantine = quarantine[quarantine["plant_id"].isna() | quarantine["plant_id"].isin(plants)]
    return PeriodData(
        start=start,
        end=end,
        plants=sorted(plants) if plants else None,
        postings=wh.read("postings", filters=period("business_date")),
        adjustments=wh.read("adjustments", filters=period("business_date"),
                            columns=["adjustment_id", "item_id", "kind", "qty", "value", "plant_id", "business_date"]),
        variance=wh.read("variance", filters=period("count_date")),
        item_costs=wh.read("variance", filters=plant_filter, columns=["item_id", "standard_cost", "counted_at"]),
        # open rows; those the error queue released (issue 16.1) are counted apart
        quarantine=quarantine[quarantine["released_by_run"].isna()].reset_index(drop=True),
        released=quarantine[quarantine["released_by_run"].notna()].reset_index(drop=True),
        bom_accuracy=wh.read("bom_accuracy", filters=plant_filter),
        runs=wh.read("runs", columns=["run_id", "status", "business_dates", "plants", "finished_at"]),
        stock_exceptions=wh.read("stock_exceptions", filters=period("count_date")),
        bom_suggestions=wh.read("bom_suggestions", filters=plant_filter),
        fixed_quantities=wh.read("consumption", filters=period("business_date") & (ds.field("fixed_qty") != 0),
                                 columns=["plant_id", "component_item_id", "uom", "fixed_qty"]),
    )


# ------------------------------------------------------------------ figures (pure)


def valued_postings(postings: pd.DataFrame, adjustments: pd.DataFrame, item_costs: pd.DataFrame) -> pd.DataFrame:
    """Postings with `unit_cost` and `value` = qty_delta × the item's standard cost.

    Postings carry no cost; the adjustment they post carries value = qty × standard cost, so the
    cost is value / qty of the same adjustment. A posting whose adjustment is gone or now 0 (a
    cancelled completion) takes the item's cost from another adjustment of the period, then from
    the item's latest count (variance.standard_cost); failing all three it is valued 0 and counted
    as unvalued.
    """
    usable = adjustments[adjustments["qty"].fillna(0) != 0]
    cost = usable["value"] / usable["qty"]
    by_adjustment = pd.Series(cost.to_numpy(), index=usable["adjustment_id"].to_numpy()).groupby(level=0).last()
    latest = usable.assign(cost=cost).sort_values("business_date", kind="stable")
    by_item = latest.groupby("item_id")["cost"].last()
    counted = item_costs.dropna(subset=["standard_cost"]).sort_values("counted_at", kind="stable")
    by_count = counted.groupby("item_id")["standard_cost"].last()
    unit = postings["adjustment_id"].map(by_adjustment)
    unit = unit.fillna(postings["item_id"].map(by_item)).fillna(postings["item_id"].map(by_count))
    out = postings.assign(unit_cost=unit.astype("float64"))
    out["value"] = out["qty_delta"].astype("float64") * out["unit_cost"]
    return out


def _kinds(values: Iterable[str]) -> list[str]:
    present = set(values)
    return list(schemas.ADJUSTMENT_KINDS) + sorted(present - set(schemas.ADJUSTMENT_KINDS))


def distinct_quarantine(quarantine: pd.DataFrame) -> pd.DataFrame:
    """One row per rejected input row: a master-data row re-rejected by every run of the period counts once."""
    if quarantine.empty:
        return quarantine
    ordered = quarantine.sort_values(["business_date", "table", "source_key"], kind="stable")
    return ordered.drop_duplicates(subset=["table", "error_code", "row"], keep="last").reset_index(drop=True)


def report_figures(data: PeriodData) -> ReportFigures:
    """The key figures of the period from what `read_period` returned."""
    posted = valued_postings(data.postings, data.adjustments, data.item_costs)
    kinds = _kinds(list(posted["kind"]) + list(data.adjustments["kind"]))
    counts = data.variance
    checked = counts[counts["status"] != "baseline"]
    over = int((counts["status"] == "over_tolerance").sum())
    quarantined = distinct_quarantine(data.quarantine)
    codes = list(schemas.ERROR_CODES) + sorted(set(quarantined["error_code"]) - set(schemas.ERROR_CODES))
    accuracy = data.bom_accuracy
    flags = list(BOM_FLAGS) + sorted(set(accuracy["flag"]) - set(BOM_FLAGS))
    as_of = accuracy["as_of"].max() if not accuracy.empty else None
    plants = data.plants or sorted(
        set(data.postings["plant_id"]) | set(data.variance["plant_id"]) | set(data.adjustments["plant_id"])
    )
    return ReportFigures(
        start=data.start,
        end=data.end,
        plants=list(plants),
        postings={k: int((posted["kind"] == k).sum()) for k in kinds},
        postings_value={k: float(posted.loc[posted["kind"] == k, "value"].sum()) for k in kinds},
        postings_unvalued=int(posted["unit_cost"].isna().sum()),
        adjustments_value={k: float(data.adjustments.loc[data.adjustments["kind"] == k, "value"].sum())
                           for k in kinds},
        counts=int(len(counts)),
        counts_checked=int(len(checked)),
        counts_over_tolerance=over,
        share_over_tolerance=over / len(checked) if len(checked) else None,
        variance_value=float(checked["variance_value"].sum()),
        variance_value_abs=float(checked["variance_value"].abs().sum()),
        quarantined={c: int((quarantined["error_code"] == c).sum()) for c in codes},
        bom_accuracy_flags={f: int((accuracy["flag"] == f).sum()) for f in flags},
        bom_accuracy_as_of=as_of.to_pydatetime() if as_of is not None and not pd.isna(as_of) else None,
        released=len(distinct_quarantine(data.released)),
    )


def item_pareto(variance: pd.DataFrame) -> pd.DataFrame:
    """Counted items by |net variance value| over the period, with each one's cumulative share."""
    checked = variance[variance["status"] != "baseline"]
    columns = ["item_id", "uom", "counts", "over_tolerance", "variance_qty", "variance_value",
               "abs_variance_value", "gross_variance_value", "share", "cumulative_share"]
    if checked.empty:
        return pd.DataFrame({c: pd.Series([], dtype="float64" if c not in ("item_id", "uom") else "str")
                             for c in columns})
    g = checked.assign(abs_value=checked["variance_value"].abs(),
                       over=(checked["status"] == "over_tolerance").astype("int64"))
    g = g.groupby("item_id", as_index=False).agg(
        uom=("uom", "last"), counts=("count_id", "size"), over_tolerance=("over", "sum"),
        variance_qty=("variance_qty", "sum"), variance_value=("variance_value", "sum"),
        gross_variance_value=("abs_value", "sum"),
    )
    g["abs_variance_value"] = g["variance_value"].abs()
    g = g.sort_values(["abs_variance_value", "item_id"], ascending=[False, True], kind="stable")
    total = g["abs_variance_value"].sum()
    g["share"] = g["abs_variance_value"] / total if total else 0.0
    g["cumulative_share"] = g["share"].cumsum()
    return g[columns].reset_index(drop=True)


def top_suggestions(suggestions: pd.DataFrame, n: int = TOP_SUGGESTIONS,
                    min_confidence: float = SUGGESTION_CONFIDENCE) -> pd.DataFrame:
    """The BOM-line suggestions an analyst should look at first: confidence at least
    `min_confidence`, largest relative change first (ties: plant, component, parent)."""
    if suggestions.empty or "confidence" not in suggestions.columns:
        return suggestions
    good = suggestions[(suggestions["confidence"] >= min_confidence) & suggestions["change_pct"].notna()]
    good = good.assign(_abs=good["change_pct"].abs()).sort_values(
        ["_abs", "plant_id", "component_item_id", "parent_item_id"], ascending=[False, True, True, True],
        kind="stable")
    return good.drop(columns="_abs").head(n).reset_index(drop=True)


def variance_trend(variance: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Net variance value per plant and count date, every date of the period (0 on days without counts)."""
    checked = variance[variance["status"] != "baseline"]
    dates = pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq="D")
    plants = sorted(set(variance["plant_id"]))
    daily = checked.groupby(["plant_id", "count_date"])["variance_value"].agg(["sum", "size"])
    full = pd.MultiIndex.from_product([plants, dates], names=["plant_id", "count_date"])
    out = daily.reindex(full).reset_index()
    out["counts"] = out["size"].fillna(0).astype("int64")
    out["variance_value"] = out["sum"].fillna(0.0)
    return out[["plant_id", "count_date", "counts", "variance_value"]]


def plant_summary(variance: pd.DataFrame) -> pd.DataFrame:
    """Counts, checks, share over tolerance and variance value per plant."""
    rows = variance.assign(
        checked=(variance["status"] != "baseline").astype("int64"),
        over=(variance["status"] == "over_tolerance").astype("int64"),
        abs_value=variance["variance_value"].abs(),
    )
    g = rows.groupby("plant_id", as_index=False).agg(
        counts=("count_id", "size"), checked=("checked", "sum"), over_tolerance=("over", "sum"),
        variance_value=("variance_value", "sum"), gross_variance_value=("abs_value", "sum"),
    )
    g["share_over_tolerance"] = (g["over_tolerance"] / g["checked"]).where(g["checked"] > 0)
    return g


def quarantine_summary(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Distinct rejected rows per error code and input table."""
    rows = distinct_quarantine(quarantine)
    if rows.empty:
        return pd.DataFrame({"error_code": pd.Series([], dtype="str"), "table": pd.Series([], dtype="str"),
                             "rows": pd.Series([], dtype="int64")})
    return rows.groupby(["error_code", "table"], as_index=False).size().rename(columns={"size": "rows"})


# ------------------------------------------------------------------ formatting


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT


def _num(value: object, decimals: int = 2) -> str:
    if _is_missing(value):
        return ""
    return f"{float(value):,.{decimals}f}"  # type: ignore[arg-type]


def _pct(value: object, decimals: int = 1) -> str:
    return "" if _is_missing(value) else f"{float(value) * 100:,.{decimals}f} %"  # type: ignore[arg-type]


def _compact(value: float) -> str:
    """An axis label: 1.5M, 250k, -3M."""
    size = abs(value)
    for limit, suffix in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
        if size >= limit:
            text = f"{value / limit:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:g}"


def _sign_class(value: object) -> str:
    if _is_missing(value):
        return ""
    return "neg" if float(value) < 0 else "pos" if float(value) > 0 else ""  # type: ignore[arg-type]


def _e(text: object) -> str:
    return html.escape("" if _is_missing(text) else str(text), quote=True)


def _raw(value: object) -> str:
    """A cell's machine value (sorting, CSV, tests): full precision, '' when missing."""
    if _is_missing(value):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return str(value)


# ------------------------------------------------------------------ tables


@dataclass(frozen=True)
class Column:
    """One table column: header, source field, and how its cells are shown."""

    header: str
    field: str
    kind: str = "text"  # text, int, money, qty, pct, ratio, date, datetime, flag
    decimals: int = 2


def _cell(column: Column, value: object) -> str:
    kind = column.kind
    if kind == "text":
        return f"<td>{_e(value)}</td>"
    if kind == "wrap":
        return f'<td class="wrap">{_e(value)}</td>'
    if kind == "flag":
        cls = "flag-bad" if value in ("bom_qty_low", "bom_qty_high") else "flag-warn" \
            if value == "insufficient_counts" else ""
        return f'<td class="{cls}">{_e(value)}</td>'
    if kind == "date":
        text = "" if _is_missing(value) else pd.Timestamp(value).strftime("%Y-%m-%d")  # type: ignore[arg-type]
        return f'<td data-value="{_e(text)}">{_e(text)}</td>'
    if kind == "datetime":
        text = "" if _is_missing(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M")  # type: ignore[arg-type]
        return f'<td data-value="{_e(_raw(value))}">{_e(text)}</td>'
    if kind == "int":
        text = "" if _is_missing(value) else f"{int(value):,}"  # type: ignore[call-overload]
    elif kind == "pct":
        text = _pct(value, column.decimals)
    elif kind == "pct100":  # already in percent
        text = "" if _is_missing(value) else f"{float(value):,.{column.decimals}f} %"  # type: ignore[arg-type]
    else:
        text = _num(value, column.decimals)
    cls = "num " + _sign_class(value) if kind == "money" else "num"
    return f'<td class="{cls.strip()}" data-value="{_raw(value)}">{_e(text)}</td>'


def _table(table_id: str, columns: Sequence[Column], rows: pd.DataFrame, *, note: str = "",
           footer: dict[str, object] | None = None) -> str:
    """A sortable table with a CSV button; numeric cells carry their raw value in data-value."""
    if rows.empty:
        return '<div class="empty">Nothing in this period.</div>'
    numeric = {"int", "money", "qty", "pct", "pct100", "ratio"}
    head = "".join(
        ('<th class="num" scope="col">' if c.kind in numeric else '<th scope="col">') + f"{_e(c.header)}</th>"
        for c in columns
    )
    body = "\n".join(
        "<tr>" + "".join(_cell(c, record[c.field]) for c in columns) + "</tr>"
        for record in rows.to_dict("records")
    )
    foot = ""
    if footer is not None:
        cells = []
        for c in columns:
            if c.field in footer:
                cells.append(_cell(c, footer[c.field]) if c.kind in numeric else f"<td>{_e(footer[c.field])}</td>")
            else:
                cells.append("<td></td>")
        foot = "<tfoot><tr>" + "".join(cells) + "</tr></tfoot>"
    tools = (f'<div class="tabletools"><span>{_e(note)}</span>'
             f'<button type="button" class="csv" data-table="{table_id}">Download CSV</button></div>')
    return (f'{tools}<div class="tablewrap"><table id="{table_id}" class="sortable" data-csv="{table_id}">'
            f"<thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody>{foot}</table></div>")


# ------------------------------------------------------------------ charts (inline SVG)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round axis ticks covering [low, high] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [round(first, 10)]
    while ticks[-1] < high - step * 1e-9:  # the last tick is at or above `high`
        ticks.append(round(first + len(ticks) * step, 10))
    return ticks



def _chart_start(width: int, height: int, data: str, label: str, ticks: list[float],
                 y: Callable[[float], float], left: float, plot_w: float) -> list[str]:
    """The opening of an SVG chart: the root element and the horizontal grid with value labels."""
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
             f'{data} aria-label="{label}">', '<g class="grid axis">']
    for t in ticks:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(t):.1f}" y2="{y(t):.1f}"/>'
                     f'<text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{_e(_compact(t))}</text>')
    return parts

def pareto_svg(pareto: pd.DataFrame, *, bars: int = PARETO_BARS) -> str:
    """Bars of |net variance value| per item, largest first, and the cumulative share of the total."""
    if pareto.empty or float(pareto["abs_variance_value"].sum()) == 0.0:
        return '<div class="empty" data-chart="pareto" data-bars="0">No variance in this period.</div>'
    top = pareto.head(bars)
    width, height = 960, 380
    left, right, top_m, bottom = 78, 56, 28, 86
    plot_w, plot_h = width - left - right, height - top_m - bottom
    ticks = nice_ticks(0.0, float(top["abs_variance_value"].max()))
    y_max = ticks[-1]
    band = plot_w / len(top)

    def y(value: float) -> float:
        return top_m + plot_h - value / y_max * plot_h

    def y_share(share: float) -> float:
        return top_m + plot_h - share * plot_h

    parts = _chart_start(width, height, f'data-chart="pareto" data-bars="{len(top)}"',
                         "Pareto of items by absolute variance value", ticks, y, left, plot_w)
    for share in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0):
        parts.append(f'<text x="{left + plot_w + 6}" y="{y_share(share) + 4:.1f}">{share * 100:.0f} %</text>')
    parts.append("</g>")
    parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y_share(0.8):.1f}" y2="{y_share(0.8):.1f}" '
                 f'stroke="#7b8794" stroke-dasharray="5 4"/>')
    points = []
    for i, row in enumerate(top.to_dict("records")):
        x = left + i * band
        value = float(row["variance_value"])
        colour = SHORTAGE if value < 0 else SURPLUS
        bar_h = max(0.5, plot_h - (y(float(row["abs_variance_value"])) - top_m))
        label = (f"{row['item_id']}: net variance value {_num(value)} "
                 f"({'shortage' if value < 0 else 'surplus'}), {_pct(row['share'])} of the total, "
                 f"cumulative {_pct(row['cumulative_share'])}, {int(row['counts'])} counts")
        parts.append(f'<rect class="bar" x="{x + band * 0.15:.1f}" y="{top_m + plot_h - bar_h:.1f}" '
                     f'width="{band * 0.7:.1f}" height="{bar_h:.1f}" fill="{colour}" '
                     f'data-item="{_e(row["item_id"])}" data-value="{_raw(value)}"><title>{_e(label)}</title></rect>')
        cx = x + band / 2
        parts.append(f'<text class="axis" transform="translate({cx:.1f},{top_m + plot_h + 10}) rotate(-45)" '
                     f'text-anchor="end" font-size="11">{_e(row["item_id"])}</text>')
        points.append((cx, y_share(float(row["cumulative_share"])), float(row["cumulative_share"])))
    parts.append(f'<polyline fill="none" stroke="{CUMULATIVE}" stroke-width="2" points="'
                 + " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in points) + '"/>')
    for px, py, share in points:
        parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{CUMULATIVE}">'
                     f"<title>cumulative {_pct(share)}</title></circle>")
    parts.append(f'<line class="zero" x1="{left}" x2="{left + plot_w}" y1="{top_m + plot_h}" y2="{top_m + plot_h}"/>')
    legend = [(SHORTAGE, "rect", "shortage (counted below book)"), (SURPLUS, "rect", "surplus (counted above book)"),
              (CUMULATIVE, "line", "cumulative share of the total (right axis)")]
    parts.append(_legend(legend, left, 12))
    parts.append(f'<text x="14" y="{top_m + plot_h / 2:.0f}" transform="rotate(-90 14 {top_m + plot_h / 2:.0f})" '
                 f'text-anchor="middle" font-size="12" fill="#52606d">|net variance value|</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def suggestions_svg(top: pd.DataFrame) -> str:
    """One bar per suggested BOM line: the suggested change of its quantity per unit, in %
    (up: the line uses more than the BOM says, down: less)."""
    if top.empty:
        return '<div class="empty" data-chart="suggestions" data-bars="0">No confident suggestion.</div>'
    width, height = 960, 360
    left, right, top_m, bottom = 78, 24, 30, 110
    plot_w, plot_h = width - left - right, height - top_m - bottom
    values = top["change_pct"].astype("float64")
    ticks = nice_ticks(min(0.0, float(values.min())), max(0.0, float(values.max())))
    y_min, y_max = ticks[0], ticks[-1]
    band = plot_w / len(top)

    def y(value: float) -> float:
        return top_m + (y_max - value) / (y_max - y_min) * plot_h

    parts = _chart_start(width, height, f'data-chart="suggestions" data-bars="{len(top)}"',
                         "Suggested change of BOM line quantities, in percent", ticks, y, left, plot_w)
    parts.append("</g>")
    for i, row in enumerate(top.to_dict("records")):
        x = left + i * band
        value = float(row["change_pct"])
        colour = SHORTAGE if value > 0 else SURPLUS
        y0, y1 = sorted((y(0.0), y(value)))
        line = f"{row['parent_item_id']} → {row['component_item_id']}"
        label = (f"{row['plant_id']} {line}: {_num(row['current_qty_per'], 4)} → "
                 f"{_num(row['suggested_qty_per'], 4)} {row['uom']} per unit ({value:+.1f} %), "
                 f"confidence {_pct(row['confidence'])}, {int(row['windows'])} windows")
        parts.append(f'<rect class="bar" x="{x + band * 0.15:.1f}" y="{y0:.1f}" width="{band * 0.7:.1f}" '
                     f'height="{max(0.5, y1 - y0):.1f}" fill="{colour}" data-parent="{_e(row["parent_item_id"])}" '
                     f'data-component="{_e(row["component_item_id"])}" data-value="{_raw(value)}">'
                     f"<title>{_e(label)}</title></rect>")
        parts.append(f'<text class="axis" transform="translate({x + band / 2:.1f},{top_m + plot_h + 10}) rotate(-45)" '
                     f'text-anchor="end" font-size="11">{_e(line)}</text>')
    parts.append(f'<line class="zero" x1="{left}" x2="{left + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    parts.append(_legend([(SHORTAGE, "rect", "uses more than the BOM says"),
                          (SURPLUS, "rect", "uses less than the BOM says")], left, 14))
    parts.append(f'<text x="14" y="{top_m + plot_h / 2:.0f}" transform="rotate(-90 14 {top_m + plot_h / 2:.0f})" '
                 f'text-anchor="middle" font-size="12" fill="#52606d">suggested change, %</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _legend(entries: Sequence[tuple[str, str, str]], x: float, y: float) -> str:
    parts = ['<g class="legend" font-size="12">']
    for colour, shape, label in entries:
        if shape == "rect":
            parts.append(f'<rect x="{x:.0f}" y="{y - 9:.0f}" width="12" height="10" fill="{colour}"/>')
        else:
            parts.append(f'<line x1="{x:.0f}" x2="{x + 14:.0f}" y1="{y - 4:.0f}" y2="{y - 4:.0f}" '
                         f'stroke="{colour}" stroke-width="2.5"/>')
        parts.append(f'<text x="{x + 18:.0f}" y="{y:.0f}">{_e(label)}</text>')
        x += 26 + 6.6 * len(label)
    parts.append("</g>")
    return "".join(parts)


def trend_svg(trend: pd.DataFrame) -> str:
    """One line per plant: net variance value of the counts of each day."""
    if trend.empty:
        return '<div class="empty" data-chart="trend" data-lines="0">No stock counts in this period.</div>'
    width, height = 960, 330
    left, right, top_m, bottom = 78, 24, 30, 54
    plot_w, plot_h = width - left - right, height - top_m - bottom
    dates = sorted(trend["count_date"].unique())
    plants = sorted(trend["plant_id"].unique())
    values = trend["variance_value"].astype("float64")
    ticks = nice_ticks(min(0.0, float(values.min())), max(0.0, float(values.max())))
    y_min, y_max = ticks[0], ticks[-1]
    step = plot_w / max(1, len(dates) - 1)
    x_of = {d: left + (i * step if len(dates) > 1 else plot_w / 2) for i, d in enumerate(dates)}

    def y(value: float) -> float:
        return top_m + (y_max - value) / (y_max - y_min) * plot_h

    parts = _chart_start(width, height, f'data-chart="trend" data-lines="{len(plants)}"',
                         "Net variance value per plant and day", ticks, y, left, plot_w)
    every = max(1, math.ceil(len(dates) / 16))
    for i, d in enumerate(dates):
        if i % every == 0:
            day = pd.Timestamp(d)
            parts.append(f'<text x="{x_of[d]:.1f}" y="{top_m + plot_h + 16}" text-anchor="middle">'
                         f'{day.strftime("%d %b")}</text>'
                         f'<text x="{x_of[d]:.1f}" y="{top_m + plot_h + 29}" text-anchor="middle">'
                         f'{day.strftime("%a")}</text>')
    parts.append("</g>")
    parts.append(f'<line class="zero" x1="{left}" x2="{left + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    markers = len(dates) <= 62
    legend = []
    for i, plant in enumerate(plants):
        colour = PLANT_COLOURS[i % len(PLANT_COLOURS)]
        legend.append((colour, "line", str(plant)))
        rows = trend[trend["plant_id"] == plant].sort_values("count_date")
        points = [(x_of[d], y(float(v)), d, float(v), int(n))
                  for d, v, n in zip(rows["count_date"], rows["variance_value"], rows["counts"], strict=True)]
        parts.append(f'<g class="series" data-plant="{_e(plant)}">')
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="'
                     + " ".join(f"{px:.1f},{py:.1f}" for px, py, *_ in points) + '"/>')
        if markers:
            for px, py, d, v, n in points:
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{3.5 if n else 2}" fill="{colour}">'
                             f"<title>{_e(plant)} {pd.Timestamp(d):%Y-%m-%d}: {_num(v)} "
                             f"({n} count{'s' if n != 1 else ''})</title></circle>")
        parts.append("</g>")
    parts.append(_legend(legend, left, 14))
    parts.append(f'<text x="14" y="{top_m + plot_h / 2:.0f}" transform="rotate(-90 14 {top_m + plot_h / 2:.0f})" '
                 f'text-anchor="middle" font-size="12" fill="#52606d">net variance value</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# ------------------------------------------------------------------ page


def _figure(name: str, value: object, text: str, cls: str = "") -> str:
    """A key figure: shown formatted, its exact value in data-value (what tests and scrapers read)."""
    class_attr = f' class="{cls}"' if cls else ""
    return f'<span data-figure="{_e(name)}" data-value="{_raw(value)}"{class_attr}>{_e(text)}</span>'


def _cards(f: ReportFigures) -> str:
    kinds_label = {"production_receipt": "Production receipts", "backflush_issue": "Backflush issues",
                   "byproduct_receipt": "By-product receipts"}
    posting_rows = "".join(
        f"<tr><td>{_e(kinds_label.get(k, k))}</td>"
        f'<td class="num">{_figure(f"postings_value.{k}", v, _num(v), _sign_class(v))}</td>'
        f'<td class="num">{_figure(f"postings.{k}", f.postings[k], f"{f.postings[k]:,}")}</td></tr>'
        for k, v in f.postings_value.items()
    )
    total_postings = sum(f.postings.values())
    total_value = sum(f.postings_value.values())
    posting_rows += (f'<tr class="total"><td>Net</td>'
                     f'<td class="num {_sign_class(total_value)}">{_num(total_value)}</td>'
                     f'<td class="num">{total_postings:,}</td></tr>')
    unvalued = (f'<div class="sub neg">{_figure("postings_unvalued", f.postings_unvalued, f"{f.postings_unvalued:,}")}'
                " postings without a known standard cost (valued 0)</div>") if f.postings_unvalued else \
        _figure("postings_unvalued", 0, "", "")
    share = f.share_over_tolerance
    quarantined = sum(f.quarantined.values())
    codes = "".join(f"<dt>{_e(c)}</dt><dd>{_figure(f'quarantined.{c}', n, f'{n:,}')}</dd>"
                    for c, n in f.quarantined.items() if n)
    flags = "".join(
        f"<dt>{_e(k)}</dt><dd>"
        f"{_figure(f'bom_accuracy_flags.{k}', n, f'{n:,}', 'flag-bad' if k.startswith('bom_qty') and n else '')}</dd>"
        for k, n in f.bom_accuracy_flags.items()
    )
    flagged = f.bom_accuracy_flags.get("bom_qty_low", 0) + f.bom_accuracy_flags.get("bom_qty_high", 0)
    return f"""
<section id="key-figures">
<h2>Key figures</h2>
<div class="cards">
  <div class="card wide"><div class="label">Postings sent downstream, at standard cost</div>
    <table class="mini"><thead><tr><th>Kind</th><th class="num">Value</th><th class="num">Postings</th></tr></thead>
    <tbody>{posting_rows}</tbody></table>{unvalued}</div>
  <div class="card"><div class="label">Stock counts checked</div>
    <div class="big">{_figure("counts_checked", f.counts_checked, f"{f.counts_checked:,}")}</div>
    <div class="sub">of {_figure("counts", f.counts, f"{f.counts:,}")} counts dated in the period;
      the others are baselines (first count of an item at a location)</div></div>
  <div class="card"><div class="label">Counts over tolerance</div>
    <div class="big">{_figure("share_over_tolerance", share, _pct(share) if share is not None else "n/a",
                              "neg" if share else "")}</div>
    <div class="sub">{_figure("counts_over_tolerance", f.counts_over_tolerance, f"{f.counts_over_tolerance:,}")}
      of {f.counts_checked:,} checked counts</div></div>
  <div class="card"><div class="label">Net variance value</div>
    <div class="big">{_figure("variance_value", f.variance_value, _num(f.variance_value),
                              _sign_class(f.variance_value))}</div>
    <div class="sub">gross (sum of |value|):
      {_figure("variance_value_abs", f.variance_value_abs, _num(f.variance_value_abs))}</div></div>
  <div class="card"><div class="label">Quarantined input rows</div>
    <div class="big">{_e(f"{quarantined:,}")}</div>
    <dl>{codes or "<dt>none</dt><dd></dd>"}</dl>
    <div class="sub">{_figure("released", f.released, f"{f.released:,}")} released by the error queue
      (the master data was fixed; reprocessed)</div></div>
  <div class="card"><div class="label">BOM accuracy: components flagged</div>
    <div class="big {"neg" if flagged else ""}">{_e(f"{flagged:,}")}</div>
    <dl>{flags}</dl></div>
</div>
</section>"""


def closed_period_postings(postings: pd.DataFrame) -> pd.DataFrame:
    """Postings made on an open date for a closed one (issue 16.2): for_business_date differs."""
    if postings.empty or "for_business_date" not in postings.columns:
        return postings.iloc[0:0]
    moved = postings["for_business_date"].notna() & (postings["for_business_date"] != postings["business_date"])
    return postings[moved]


def cost_changes(adjustments: pd.DataFrame) -> pd.DataFrame:
    """Items valued at more than one standard cost in the period (a cost history, issue 16.4):
    item_id, first and last unit cost (value / qty by business date), dates valued."""
    usable = adjustments[adjustments["qty"].fillna(0) != 0]
    if usable.empty:
        return pd.DataFrame({"item_id": [], "first_cost": [], "last_cost": [], "costs": []})
    priced = usable.assign(cost=(usable["value"] / usable["qty"]).round(9)).sort_values(
        ["item_id", "business_date"], kind="stable")
    per_item = priced.groupby("item_id").agg(first_cost=("cost", "first"), last_cost=("cost", "last"),
                                             costs=("cost", "nunique"))
    return per_item[per_item["costs"] > 1].reset_index()


def _postings_section(data: PeriodData, f: ReportFigures) -> str:
    moved = closed_period_postings(data.postings)
    closed_note = (f'<p class="how" id="closed-period-postings">{len(moved):,} posting(s) of the period were made on '
                   f"an open date for a closed one ({moved['for_business_date'].nunique():,} closed date(s)): "
                   "see postings.for_business_date.</p>" if not moved.empty else "")
    changed = cost_changes(data.adjustments)
    cost_table = "" if changed.empty else _table(
        "cost-changes", [Column("Item", "item_id"), Column("First cost", "first_cost", "qty", 4),
                         Column("Last cost", "last_cost", "qty", 4), Column("Costs", "costs", "int")],
        changed.head(TOP_COUNTS), note="items whose standard cost changed in the period (item_costs)")
    rows = pd.DataFrame({
        "kind": list(f.postings),
        "postings": list(f.postings.values()),
        "value": list(f.postings_value.values()),
        "adjustments_value": [f.adjustments_value[k] for k in f.postings],
    })
    rows["difference"] = rows["adjustments_value"] - rows["value"]
    columns = [Column("Kind", "kind"), Column("Postings", "postings", "int"),
               Column("Posted value", "value", "money"),
               Column("Current adjustments value", "adjustments_value", "money"),
               Column("Not yet posted", "difference", "money")]
    totals = {"kind": "Total", "postings": int(rows["postings"].sum()), "value": float(rows["value"].sum()),
              "adjustments_value": float(rows["adjustments_value"].sum()),
              "difference": float(rows["difference"].sum())}
    return f"""
<section id="postings">
<h2>Postings by kind</h2>
<p class="how">Every posting appended to the ledger for a business date of the period (corrections
included), valued at the item's standard cost: quantity delta × standard cost. Receipts are positive,
issues negative. "Current adjustments value" is what the warehouse now wants posted for the same dates;
"Not yet posted" should be 0 once every run has posted its deltas.</p>
{_table("postings-by-kind", columns, rows, footer=totals)}
{closed_note}
{cost_table}
</section>"""


def _variance_section(data: PeriodData, f: ReportFigures) -> str:
    pareto = item_pareto(data.variance)
    trend = variance_trend(data.variance, data.start, data.end)
    by_plant = plant_summary(data.variance)
    n_items = len(pareto)
    shown = min(PARETO_BARS, n_items)
    covered = float(pareto["cumulative_share"].iloc[shown - 1]) if shown else 0.0
    over80 = int((pareto["cumulative_share"] < 0.8).sum()) + 1 if n_items else 0
    pareto_cols = [Column("Item", "item_id"), Column("UoM", "uom"), Column("Counts", "counts", "int"),
                   Column("Over tolerance", "over_tolerance", "int"),
                   Column("Net variance qty", "variance_qty", "qty", 3),
                   Column("Net variance value", "variance_value", "money"),
                   Column("Gross |value|", "gross_variance_value", "qty", 2),
                   Column("Share", "share", "pct"), Column("Cumulative", "cumulative_share", "pct")]
    plant_cols = [Column("Plant", "plant_id"), Column("Counts", "counts", "int"),
                  Column("Checked", "checked", "int"), Column("Over tolerance", "over_tolerance", "int"),
                  Column("Share over tolerance", "share_over_tolerance", "pct"),
                  Column("Net variance value", "variance_value", "money"),
                  Column("Gross |value|", "gross_variance_value", "qty", 2)]
    plant_totals = {"plant_id": "Total", "counts": f.counts, "checked": f.counts_checked,
                    "over_tolerance": f.counts_over_tolerance, "share_over_tolerance": f.share_over_tolerance,
                    "variance_value": f.variance_value, "gross_variance_value": f.variance_value_abs}
    checked = data.variance[data.variance["status"] != "baseline"]
    largest = checked.assign(abs_value=checked["variance_value"].abs()).sort_values(
        ["abs_value", "count_id"], ascending=[False, True], kind="stable").head(TOP_COUNTS)
    largest = largest.assign(where=largest["plant_id"].astype("str") + " / " + largest["location_id"].astype("str"))
    count_cols = [Column("Count", "count_id"), Column("Plant / location", "where"),
                  Column("Item", "item_id"), Column("Counted at (UTC)", "counted_at", "datetime"),
                  Column("Previous count (UTC)", "previous_counted_at", "datetime"),
                  Column("Book qty", "book_qty", "qty", 3), Column("Counted qty", "counted_qty", "qty", 3),
                  Column("Variance qty", "variance_qty", "qty", 3), Column("UoM", "uom"),
                  Column("Std cost", "standard_cost", "qty", 4),
                  Column("Variance value", "variance_value", "money"),
                  Column("Usage var.", "usage_variance_pct", "pct100")]
    return f"""
<section id="variance">
<h2>Stock count variance</h2>
<p class="how">Variance = counted quantity − book stock at the count (book = previous count + movements +
receipts − theoretical backflush usage), valued at standard cost. Negative: stock is missing
(a loss); positive: more was found than the books say. Only checked counts (not baselines) are included.</p>
<h3>Pareto: which items carry the variance</h3>
<p class="how">Items ranked by the absolute value of their net variance over the period; the line is the
running share of the total. {f"The first {over80} of {n_items} items make up 80 % of it; " if n_items else ""}
{f"the {shown} bars shown cover {_pct(covered)}." if shown else ""}</p>
<figure>{pareto_svg(pareto)}</figure>
<h3>Trend: net variance value per plant and day</h3>
<p class="how">Sum of the variance value of the counts taken each day (plant business date). A dot
marks a day with counts; a line on the zero axis means no counts.</p>
<figure>{trend_svg(trend)}</figure>
<h3>By plant</h3>
{_table("variance-by-plant", plant_cols, by_plant, footer=plant_totals)}
<h3>Items by variance value</h3>
{_table("variance-by-item", pareto_cols, pareto, note=f"{n_items:,} counted items, ranked as in the Pareto chart")}
<h3>Largest count variances</h3>
{_table("largest-variances", count_cols, largest,
        note=f"the {len(largest):,} largest of {len(checked):,} checked counts by |variance value|")}
</section>"""


def _stock_exceptions_section(data: PeriodData, f: ReportFigures) -> str:
    rows = data.stock_exceptions
    if rows.empty:
        table = '<div class="empty" data-table="stock-exceptions">No count window went below zero.</div>'
        total = 0
    else:
        total = len(rows)
        rows = rows.sort_values(["negative_at", "plant_id", "location_id", "item_id"], kind="stable").head(TOP_COUNTS)
        rows = rows.assign(where=rows["plant_id"].astype("str") + " / " + rows["location_id"].astype("str"),
                           flow=rows["largest_flow_kind"].fillna("").astype("str") + " "
                           + rows["largest_flow_id"].fillna("").astype("str"))
        columns = [Column("Count", "count_id"), Column("Plant / location", "where"), Column("Item", "item_id"),
                   Column("Below zero at (UTC)", "negative_at", "datetime"),
                   Column("Business date", "negative_date", "date"),
                   Column("Book qty then", "book_qty_at_negative", "qty", 3),
                   Column("Lowest book qty", "min_book_qty", "qty", 3), Column("UoM", "uom"),
                   Column("Opening", "opening_qty", "qty", 3), Column("Movements", "movements_qty", "qty", 3),
                   Column("Receipts", "receipts_qty", "qty", 3), Column("Usage", "usage_qty", "qty", 3),
                   Column("Largest outflow", "flow"), Column("Its qty", "largest_flow_qty", "qty", 3)]
        table = _table("stock-exceptions", columns, rows,
                       note=f"the first {len(rows):,} of {total:,} windows, by the moment they went below zero")
    return f"""
<section id="stock-exceptions">
<h2>Negative book stock</h2>
<p class="how">Count windows of the period (by the closing count's date) whose book stock, flow by flow,
went below zero before the count: the sign of a missing receipt or of a BOM that uses too much. Opening
+ movements + receipts − usage up to that moment give the book quantity then; the largest outflow is the
single movement or completion that took most of it away.</p>
{table}
</section>"""


def _bom_section(data: PeriodData, f: ReportFigures) -> str:
    acc = data.bom_accuracy
    order = {flag: i for i, flag in enumerate(BOM_FLAGS)}
    rows = acc.assign(_o=acc["flag"].map(order).fillna(len(order)),
                      _d=(acc["usage_ratio"] - 1).abs()).sort_values(
        ["_o", "_d", "plant_id", "component_item_id"], ascending=[True, False, True, True], kind="stable")
    columns = [Column("Plant", "plant_id"), Column("Component", "component_item_id"), Column("UoM", "uom"),
               Column("Flag", "flag", "flag"), Column("Counts", "counts", "int"),
               Column("Last count (UTC)", "last_counted_at", "datetime"),
               Column("Theoretical usage", "theoretical_usage_qty", "qty", 3),
               Column("Actual usage", "actual_usage_qty", "qty", 3),
               Column("Actual / BOM", "usage_ratio", "ratio", 3),
               Column("Planned scrap", "planned_scrap_pct", "pct100", 2),
               Column("Realised scrap", "realised_scrap_pct", "pct100", 2)]
    as_of = f"{f.bom_accuracy_as_of:%Y-%m-%d %H:%M} UTC" if f.bom_accuracy_as_of else "never computed"
    return f"""
<section id="bom-accuracy">
<h2>BOM accuracy</h2>
<p class="how">Latest estimate (as of {_e(as_of)}, over each component's last counts, not limited to
this period). Actual usage = theoretical usage − variance. <b>bom_qty_low</b>: at every one of at least
3 counts more was used than the BOM says and the pooled excess is over tolerance; the BOM quantity or
scrap % is probably too low. <b>bom_qty_high</b>: the reverse. <b>insufficient_counts</b>: fewer than 3
counts so far. Realised scrap is the scrap % that would make the BOM match what was used.</p>
{_table("bom-accuracy-table", columns, rows, note="flagged components first, largest deviation first")}
{_suggestions_part(data)}
{_fixed_part(data)}
</section>"""


def fixed_quantity_totals(consumption: pd.DataFrame) -> pd.DataFrame:
    """Per (plant, component, uom): the fixed quantities (once per order) consumed in the period."""
    if consumption.empty:
        return pd.DataFrame({"plant_id": [], "component_item_id": [], "uom": [], "fixed_qty": []})
    return consumption.groupby(["plant_id", "component_item_id", "uom"], as_index=False, sort=True)["fixed_qty"].sum()


def _fixed_part(data: PeriodData) -> str:
    totals = fixed_quantity_totals(data.fixed_quantities)
    if totals.empty:
        return ""
    columns = [Column("Plant", "plant_id"), Column("Component", "component_item_id"), Column("UoM", "uom"),
               Column("Fixed quantity", "fixed_qty", "qty", 3)]
    return f"""
<h3>Fixed quantities</h3>
<p class="how">The part of consumption a fixed-quantity BOM line needs once per production order
(set-ups, test pieces), carried by each order's first completion: it does not grow with the units made.</p>
{_table("fixed-quantities", columns, totals.head(TOP_COUNTS))}"""


def _suggestions_part(data: PeriodData) -> str:
    top = top_suggestions(data.bom_suggestions)
    total = len(data.bom_suggestions)
    columns = [Column("Plant", "plant_id"), Column("Parent", "parent_item_id"),
               Column("Component", "component_item_id"), Column("UoM", "uom"),
               Column("Current qty per", "current_qty_per", "qty", 4),
               Column("Suggested qty per", "suggested_qty_per", "qty", 4),
               Column("Change", "change_pct", "pct100", 1), Column("Confidence", "confidence", "pct", 1),
               Column("Windows", "windows", "int"), Column("Produced", "produced_qty", "qty", 2),
               Column("Component actual usage", "component_actual_usage_qty", "qty", 3)]
    return f"""<h3 id="bom-suggestions">Suggested BOM lines</h3>
<p class="how">When a component is used by several parents, the counts alone cannot say which BOM line is
off. Per (plant, parent, component) line, the quantity per unit that best explains the counted usage over
the component's last counts (least squares of each count window's actual usage on the units of each parent
made there, pulled slightly toward the BOM quantity). Shown: lines with a confidence of at least
{SUGGESTION_CONFIDENCE * 100:.0f} % (1 − standard error / suggested quantity), largest change first.
Quantities per unit of parent, in the component's base unit, scrap included.</p>
<figure>{suggestions_svg(top)}</figure>
{_table("bom-suggestions-table", columns, top,
        note=f"the {len(top):,} largest confident changes of {total:,} lines estimated")}"""


def _quarantine_section(data: PeriodData, f: ReportFigures) -> str:
    summary = quarantine_summary(data.quarantine)
    rows = distinct_quarantine(data.quarantine).head(QUARANTINE_ROWS)
    columns = [Column("Code", "error_code"), Column("Table", "table"), Column("Rows", "rows", "int")]
    row_cols = [Column("Code", "error_code"), Column("Table", "table"), Column("Key", "source_key"),
                Column("Plant", "plant_id"), Column("Business date", "business_date", "date"),
                Column("Message", "message", "wrap")]
    return f"""
<section id="quarantine">
<h2>Quarantined input rows</h2>
<p class="how">Input rows rejected by the pipeline, dated in the period (rows without a date of their
own, such as master data, are dated on the run that rejected them; one row re-rejected by several runs
counts once). They are not in any figure above until they are corrected at the source, or, for a
completion whose BOM could not be exploded, until the master data is fixed: the next run then
reprocesses it and it leaves this list ({f.released:,} released so far; <code>quarantine.released_by_run</code>).</p>
{_table("quarantine-by-code", columns, summary)}
<h3>Rows</h3>
{_table("quarantine-rows", row_cols, rows, note=f"{len(rows):,} rows" + (
        f" (first {QUARANTINE_ROWS})" if len(rows) >= QUARANTINE_ROWS else ""))}
</section>"""


def _footer(warehouse: str, data: PeriodData) -> str:
    runs = data.runs
    ok = runs[runs["status"] == "ok"] if not runs.empty else runs
    if not ok.empty:
        last = ok.sort_values("finished_at").iloc[-1]
        finished = pd.Timestamp(last["finished_at"])
        runs_text = (f"data as of run {_e(last['run_id'])}, finished {finished:%Y-%m-%d %H:%M} UTC "
                     f"({len(ok):,} successful run{'s' if len(ok) != 1 else ''} in the warehouse)")
    else:
        runs_text = "no successful run found in the warehouse"
    return (f"<p>Source: warehouse <code>{_e(warehouse)}</code>; {runs_text}. Periods are plant business "
            "dates (postings and quarantine by business_date, counts by count_date). Values are quantity × "
            "standard cost, in the currency of the item master. Generated by <code>backflush report</code> "
            f"{_e(__version__)}; see docs/report.md.</p>")


def render_report(data: PeriodData, figures: ReportFigures, *, warehouse: str) -> str:
    """The whole page as one HTML string."""
    template = string.Template(importlib.resources.files("pipeline.report").joinpath(TEMPLATE).read_text("utf-8"))
    found = ", ".join(figures.plants)
    plants = f"plant{'s' if len(figures.plants) > 1 else ''} {found}" if data.plants else \
        f"all plants ({found})" if found else "all plants"
    period = f"{figures.start:%d %b %Y} – {figures.end:%d %b %Y}"
    content = "\n".join(section(data, figures) for section in _SECTIONS)
    return template.substitute(
        title=_e(f"Backflush reconciliation report, {period}"),
        subtitle=_e(f"Business dates {figures.start.isoformat()} to {figures.end.isoformat()} · {plants}"
                    " · values at standard cost"),
        content=_cards(figures) + content,
        footer=_footer(warehouse, data),
        version=_e(__version__),
    )


_SECTIONS: tuple[Callable[[PeriodData, ReportFigures], str], ...] = (
    _postings_section, _variance_section, _stock_exceptions_section, _bom_section, _quarantine_section,
)


def write_report(
    warehouse: str, start: dt.date, end: dt.date, out: str | Path, *, plants: list[str] | None = None
) -> ReportFigures:
    """Write the period's self-contained HTML report to `out`; return the key figures shown on it."""
    data = read_period(warehouse, start, end, plants=plants)
    figures = report_figures(data)
    page = render_report(data, figures, warehouse=warehouse)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a reader (or a browser auto-refresh) never sees half a page
    return figures
