"""Book stock and variance per stock count, late-data detection, and BOM accuracy.

Book stock at a count is the previous count plus every flow in between: movements, production
and by-product receipts, minus theoretical usage when the item is backflushed. Flows are summed
per segment between count instants and differenced through cumulative sums, so each count's
window costs a lookup, not a scan.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import consumption
from pipeline.config import Config, Tolerances
from pipeline.rounding import round_half_away
from pipeline.sources import Inputs

STOCK_KEY = ["plant_id", "location_id", "item_id"]


@dataclass(frozen=True)
class CountScope:
    """The counts whose variance a run recomputes, and the (plant, count_date) partitions they fill."""

    counts: pd.DataFrame
    scope: pd.DataFrame


# ------------------------------------------------------------------ late data (semantics 6)


def input_fingerprints(inputs: Inputs, plants: list[str]) -> pd.DataFrame:
    """An order-independent hash of the completions and movements of each (plant, business date)."""
    parts = []
    for frame, columns in (
        (inputs.completions, ["completion_id", "location_id", "item_id", "qty_good", "qty_scrap",
                              "completed_at", "recorded_at"]),
        (inputs.movements, ["movement_id", "location_id", "item_id", "qty", "moved_at"]),
    ):
        rows = frame[frame["plant_id"].isin(plants)]
        if rows.empty:
            continue
        hashed = pd.util.hash_pandas_object(rows[columns], index=False).to_numpy()
        parts.append(pd.DataFrame({"plant_id": rows["plant_id"].to_numpy(),
                                   "business_date": rows["business_date"].to_numpy(),
                                   "h": (hashed % np.uint64(2**31)).astype("int64")}))
    if not parts:
        return pd.DataFrame({"plant_id": pd.Series([], dtype="str"),
                             "business_date": pd.Series([], dtype="datetime64[ns]"),
                             "fingerprint": pd.Series([], dtype="int64")})
    both = pd.concat(parts, ignore_index=True)
    out = both.groupby(["plant_id", "business_date"], as_index=False).agg(fingerprint=("h", "sum"),
                                                                          rows=("h", "size"))
    out["fingerprint"] = out["fingerprint"] * 1_000_003 + out["rows"]
    return out.drop(columns="rows")


def recorded_fingerprints(history: pd.DataFrame) -> pd.DataFrame:
    """The latest fingerprint that any successful run recorded per (plant, business date)."""
    ok = history[history["status"] == "ok"].sort_values("started_at")
    rows: dict[tuple[str, str], str] = {}
    for text in ok["input_fingerprints"].dropna():  # one entry per run, not per data row
        for key, value in json.loads(text).items():
            plant, date = key.rsplit("|", 1)
            rows[(plant, date)] = value
    return pd.DataFrame(
        {
            "plant_id": pd.Series([k[0] for k in rows], dtype="str"),
            "business_date": pd.to_datetime(pd.Series([k[1] for k in rows], dtype="str")).astype("datetime64[ns]"),
            "recorded": pd.Series(list(rows.values()), dtype="str"),
        }
    )


def changed_dates(
    fingerprints: pd.DataFrame, history: pd.DataFrame, requested: list[dt.date], lookback_days: int
) -> pd.DataFrame:
    """Earlier dates within the look-back whose inputs differ from what the last runs saw.

    Only plants that have run before are checked: a first run processes what it was asked for.
    """
    if not requested or lookback_days <= 0 or history.empty:
        return pd.DataFrame({"plant_id": pd.Series([], dtype="str"),
                             "business_date": pd.Series([], dtype="datetime64[ns]")})
    recorded = recorded_fingerprints(history)
    window = _lookback_window(requested, lookback_days)
    current = fingerprints[fingerprints["business_date"].isin(window)]
    seen = recorded[recorded["business_date"].isin(window)]
    both = current.merge(seen, on=["plant_id", "business_date"], how="outer")
    both = both[both["plant_id"].isin(set(recorded["plant_id"]))]
    differs = both["fingerprint"].astype("Int64").astype("str") != both["recorded"].fillna("<none>")
    differs &= ~(both["fingerprint"].isna() & both["recorded"].isna())
    return both.loc[differs, ["plant_id", "business_date"]].drop_duplicates().reset_index(drop=True)


def _lookback_window(requested: list[dt.date], lookback_days: int) -> list[pd.Timestamp]:
    dates: set[dt.date] = set()
    for day in requested:
        dates |= {day - dt.timedelta(days=i) for i in range(1, lookback_days + 1)}
    dates -= set(requested)
    return [pd.Timestamp(d) for d in sorted(dates)]


# ------------------------------------------------------------------ which counts a run recomputes


def with_previous_count(counts: pd.DataFrame) -> pd.DataFrame:
    """Each count with the time and quantity of the count before it at the same (plant, location, item)."""
    ordered = counts.sort_values(STOCK_KEY + ["counted_at", "count_id"], kind="stable").reset_index(drop=True)
    previous = ordered.groupby(STOCK_KEY, sort=False)[["counted_at", "counted_qty"]].shift(1)
    return ordered.assign(previous_counted_at=previous["counted_at"], opening_qty=previous["counted_qty"])


def variance_scope(inputs: Inputs, scope: pd.DataFrame, config: Config) -> CountScope:
    """Counts dated in the scope, plus later counts (up to the last requested date) whose window
    reaches back into a recomputed date; every count of each touched (plant, count_date)."""
    counts = with_previous_count(inputs.stock_counts)
    counts = counts.rename(columns={"business_date": "count_date"})
    plants = set(scope["plant_id"])
    counts = counts[counts["plant_id"].isin(plants)]
    last = scope["business_date"].max() if not scope.empty else pd.NaT
    first_touched = scope.groupby("plant_id")["business_date"].min()
    in_scope = counts.merge(scope.rename(columns={"business_date": "count_date"}), on=["plant_id", "count_date"],
                            how="left", indicator=True)["_merge"].eq("both").to_numpy()
    starts = counts["plant_id"].map(first_touched)
    window_start = counts["previous_counted_at"].dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    reaches_back = counts["previous_counted_at"].notna() & (window_start <= starts + pd.Timedelta(days=1)) & (
        counts["count_date"] >= starts) & (counts["count_date"] <= last)
    touched = counts[in_scope | reaches_back.to_numpy()][["plant_id", "count_date"]].drop_duplicates()
    partitions = pd.concat([touched, scope.rename(columns={"business_date": "count_date"})], ignore_index=True)
    partitions = partitions.drop_duplicates().sort_values(["plant_id", "count_date"]).reset_index(drop=True)
    chosen = counts.merge(partitions, on=["plant_id", "count_date"], how="inner")
    return CountScope(counts=chosen, scope=partitions)


# ------------------------------------------------------------------ book stock and variance


def count_variance(inputs: Inputs, scope: CountScope, config: Config) -> pd.DataFrame:
    """One `variance` row per count in scope (plus plant_id and count_date for partitioning)."""
    counts = scope.counts
    if counts.empty:
        return _empty_variance()
    breaks = pd.concat(
        [counts[["plant_id", "location_id", "counted_at"]],
         counts[["plant_id", "location_id", "previous_counted_at"]].dropna().rename(
             columns={"previous_counted_at": "counted_at"})],
        ignore_index=True,
    ).drop_duplicates()
    counted = counts[STOCK_KEY].drop_duplicates()
    completions = inputs.completions.merge(breaks[["plant_id", "location_id"]].drop_duplicates(),
                                           on=["plant_id", "location_id"], how="inner")
    flows = consumption.flows_between_counts(completions, inputs.bom, inputs.items, inputs.uom_conversions, breaks)
    movements = inputs.movements.merge(counted, on=STOCK_KEY, how="inner")
    moved = consumption.assign_segments(movements, breaks, "moved_at")
    moved = moved.groupby(STOCK_KEY + ["segment_end"], as_index=False)["qty"].sum().rename(
        columns={"qty": "movements_qty"})
    flows = flows.merge(counted, on=STOCK_KEY, how="inner")
    all_flows = pd.concat([flows.assign(movements_qty=0.0),
                           moved.assign(receipts_qty=0.0, usage_qty=0.0)], ignore_index=True)
    all_flows = all_flows.groupby(STOCK_KEY + ["segment_end"], as_index=False)[
        ["movements_qty", "receipts_qty", "usage_qty"]].sum()
    all_flows = all_flows.sort_values(STOCK_KEY + ["segment_end"], kind="stable")
    cum = all_flows.groupby(STOCK_KEY, sort=False)[["movements_qty", "receipts_qty", "usage_qty"]].cumsum()
    all_flows[["movements_qty", "receipts_qty", "usage_qty"]] = cum

    at_count = _cumulative_at(counts, all_flows, "counted_at")
    at_previous = _cumulative_at(counts, all_flows, "previous_counted_at")
    master = inputs.items.set_index("item_id")
    out = counts.copy()
    for column in ("movements_qty", "receipts_qty", "usage_qty"):
        out[column] = at_count[column].to_numpy() - at_previous[column].to_numpy()
    out = out.rename(columns={"usage_qty": "theoretical_usage_qty"})
    out["backflushed"] = out["item_id"].map(master["backflush"]).astype(bool)
    out["standard_cost"] = out["item_id"].map(master["standard_cost"]).astype("float64")
    out["uom"] = out["item_id"].map(master["uom"])
    return finish_variance(out, out["item_id"].map(master["uom_decimals"]), config.tolerances)


def _cumulative_at(counts: pd.DataFrame, cumulative: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """Cumulative flows of each count's (plant, location, item) at its `time_column` (0 before any flow)."""
    probe = counts[STOCK_KEY + [time_column]].reset_index().rename(columns={time_column: "t"})
    present = probe["t"].notna()
    out = pd.DataFrame(0.0, index=probe.index, columns=["movements_qty", "receipts_qty", "usage_qty"])
    if cumulative.empty or not present.any():
        return out
    left = probe[present].sort_values("t", kind="stable")
    right = cumulative.sort_values("segment_end", kind="stable")
    found = pd.merge_asof(left, right, left_on="t", right_on="segment_end", by=STOCK_KEY,
                          direction="backward", allow_exact_matches=True)
    found = found.set_index("index")[["movements_qty", "receipts_qty", "usage_qty"]].fillna(0.0)
    out.loc[found.index] = found
    return out


def finish_variance(counts: pd.DataFrame, decimals: pd.Series, tolerances: Tolerances) -> pd.DataFrame:
    """Book stock, variance, valuation, usage variance % and status; quantities rounded on the way out.

    Input columns: the count, previous_counted_at, opening_qty, movements_qty, receipts_qty,
    theoretical_usage_qty (unrounded), backflushed, standard_cost, uom.
    """
    out = counts.copy()
    baseline = out["previous_counted_at"].isna()
    usage = out["theoretical_usage_qty"].where(out["backflushed"], 0.0)
    book = out["opening_qty"] + out["movements_qty"] + out["receipts_qty"] - usage
    variance = out["counted_qty"] - book
    value = variance * out["standard_cost"]
    pct = (-variance / out["theoretical_usage_qty"] * 100.0).where(
        out["backflushed"] & (out["theoretical_usage_qty"] != 0))
    over = pd.Series(True, index=out.index)
    if tolerances.abs_qty is not None:
        over &= variance.abs() > tolerances.abs_qty
    if tolerances.abs_value is not None:
        over &= value.abs() > tolerances.abs_value
    if tolerances.pct is not None:
        over &= pct.isna() | (pct.abs() > tolerances.pct)
    out["book_qty"] = book
    out["variance_qty"] = variance
    out["variance_value"] = value
    out["usage_variance_pct"] = pct
    out["status"] = np.where(baseline, "baseline", np.where(over, "over_tolerance", "ok"))
    quantities = ["opening_qty", "movements_qty", "receipts_qty", "theoretical_usage_qty", "book_qty",
                  "counted_qty", "variance_qty"]
    for column in quantities:
        out[column] = pd.Series(round_half_away(out[column], decimals), index=out.index)
    for column in quantities + ["variance_value", "usage_variance_pct"]:
        if column != "counted_qty":
            out[column] = out[column].where(~baseline)
    return out.reset_index(drop=True)


def _empty_variance() -> pd.DataFrame:
    from pipeline import schemas

    columns = {f.name: pd.Series([], dtype="object") for f in schemas.VARIANCE}
    return pd.DataFrame({**columns, "plant_id": pd.Series([], dtype="str"),
                         "count_date": pd.Series([], dtype="datetime64[ns]")})


def summary(rows: pd.DataFrame, top: int = 5) -> dict[str, object]:
    """Counts checked, over tolerance, and the largest variances by value."""
    checked = rows[rows["status"] != "baseline"] if not rows.empty else rows
    biggest = checked.assign(abs_value=checked["variance_value"].abs()).sort_values(
        ["abs_value", "count_id"], ascending=[False, True]).head(top) if not checked.empty else checked
    return {
        "counts": int(len(rows)),
        "baselines": int((rows["status"] == "baseline").sum()) if not rows.empty else 0,
        "checked": int(len(checked)),
        "over_tolerance": int((rows["status"] == "over_tolerance").sum()) if not rows.empty else 0,
        "variance_value": float(checked["variance_value"].sum()) if not checked.empty else 0.0,
        "top": biggest[["count_id", "plant_id", "location_id", "item_id", "variance_qty", "uom",
                        "variance_value"]].to_dict("records") if not checked.empty else [],
    }


# ------------------------------------------------------------------ BOM accuracy


def bom_accuracy(
    variance_rows: pd.DataFrame, planned_scrap: pd.DataFrame, config: Config, *, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Per plant and backflushed component: actual vs theoretical usage over its trailing counts.

    actual usage = theoretical usage − variance (a shortfall at the count was used). The
    realised scrap rate is what the planned scrap would have to be for the BOM to match:
    (1 + planned/100) × actual/theoretical − 1. A component is flagged `bom_qty_low` or
    `bom_qty_high` when, over at least 3 counts, the usage variance has the same sign every time
    and the pooled deviation exceeds the percent tolerance; `insufficient_counts` below 3.
    """
    rows = variance_rows[(variance_rows["status"] != "baseline") & variance_rows["backflushed"].astype(bool)
                         & (variance_rows["theoretical_usage_qty"] > 0)]
    if rows.empty:
        return pd.DataFrame(columns=["plant_id", *_ACCURACY_COLUMNS])
    rows = rows.sort_values(["plant_id", "item_id", "counted_at"], kind="stable")
    rows = rows.groupby(["plant_id", "item_id"], sort=False).tail(max(1, config.bom_accuracy_counts))
    rows = rows.assign(actual=rows["theoretical_usage_qty"] - rows["variance_qty"],
                       positive=(rows["variance_qty"] < 0).astype(int), negative=(rows["variance_qty"] > 0).astype(int))
    g = rows.groupby(["plant_id", "item_id"], as_index=False).agg(
        uom=("uom", "last"), counts=("count_id", "size"), first_counted_at=("counted_at", "min"),
        last_counted_at=("counted_at", "max"), theoretical_usage_qty=("theoretical_usage_qty", "sum"),
        actual_usage_qty=("actual", "sum"), more_used=("positive", "sum"), less_used=("negative", "sum"),
    )
    g = g.merge(planned_scrap, on=["plant_id", "item_id"], how="left")
    g["planned_scrap_pct"] = g["planned_scrap_pct"].fillna(0.0)
    g["usage_ratio"] = g["actual_usage_qty"] / g["theoretical_usage_qty"]
    g["realised_scrap_pct"] = ((1 + g["planned_scrap_pct"] / 100.0) * g["usage_ratio"] - 1) * 100.0
    deviation = (g["usage_ratio"] - 1) * 100.0
    tolerance = config.tolerances.pct if config.tolerances.pct is not None else 5.0
    enough = g["counts"] >= 3
    flag = np.select(
        [~enough, (g["more_used"] == g["counts"]) & (deviation > tolerance),
         (g["less_used"] == g["counts"]) & (deviation < -tolerance)],
        ["insufficient_counts", "bom_qty_low", "bom_qty_high"], default="ok",
    )
    g["flag"] = flag
    g["as_of"] = as_of
    g = g.rename(columns={"item_id": "component_item_id"})
    return g[["plant_id", *_ACCURACY_COLUMNS]].reset_index(drop=True)


_ACCURACY_COLUMNS = [
    "component_item_id", "uom", "counts", "first_counted_at", "last_counted_at", "theoretical_usage_qty",
    "actual_usage_qty", "usage_ratio", "planned_scrap_pct", "realised_scrap_pct", "flag", "as_of",
]


def planned_scrap(bom_table: pd.DataFrame, plants: list[str]) -> pd.DataFrame:
    """Average planned scrap % of each component's consuming BOM lines, per plant.

    A plant's own lines count for the parents it has them for; group lines for the rest.
    """
    from pipeline import bom

    lines = bom_table[bom_table["qty_per"] > 0].assign(r=1.0, line_error="", line_message="",
                                                       component_phantom=False)
    used = bom.plant_lines(lines, plants)
    out = used.groupby(["plant_id", "component_item_id"], as_index=False)["scrap_pct"].mean()
    return out.rename(columns={"component_item_id": "item_id", "scrap_pct": "planned_scrap_pct"})
