"""Book stock and variance (semantics 5), and negative book stock within a window (issue 16.5)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import Config, Tolerances
from pipeline.contract import schemas
from pipeline.contract.inputs import Inputs
from pipeline.domain.costs import costs_in_force
from pipeline.domain.rounding import round_half_away
from pipeline.domain.stock_windows import (
    EVENT_BY_PRODUCT,
    EVENT_KINDS,
    EVENT_MOVEMENT,
    EVENT_RECEIPT,
    EVENT_USAGE,
    CountWindows,
    micros,
    with_previous_count,
)
from pipeline.domain.timezones import business_dates, plant_timezones


@dataclass(frozen=True)
class CountScope:
    """The counts whose variance a run recomputes, and the (plant, count_date) partitions they fill."""

    counts: pd.DataFrame
    scope: pd.DataFrame


def variance_scope(inputs: Inputs, scope: pd.DataFrame, config: Config) -> CountScope:
    """The counts a run recomputes: those dated in the scope, and every later count (whatever its
    own date) whose window (previous count, count] contains a recomputed business date, since a
    variance row is recomputed whenever a flow in its window changes; with every other count of
    each (plant, count_date) partition they fall in, since partitions are rewritten whole.

    A window's flows lie on business dates from the previous count's date to the count's date,
    so a count is touched when the first recomputed date on or after its previous count's date
    is on or before its own date.
    """
    counts = inputs.stock_counts
    counts = counts[counts["plant_id"].isin(set(scope["plant_id"]))]  # previous counts are the plant's own
    counts = with_previous_count(counts).rename(columns={"business_date": "count_date"}).reset_index(drop=True)
    dates = scope.rename(columns={"business_date": "count_date"})[["plant_id", "count_date"]]
    in_scope = counts[["plant_id", "count_date"]].merge(dates.assign(_in=True), on=["plant_id", "count_date"],
                                                        how="left")["_in"].fillna(False).to_numpy(dtype=bool)
    reaches = np.zeros(len(counts), dtype=bool)
    windows = counts.loc[counts["previous_count_date"].notna(), ["plant_id", "previous_count_date", "count_date"]]
    if not windows.empty and not dates.empty:
        touched = dates.rename(columns={"count_date": "touched"}).sort_values("touched", kind="stable")
        found = pd.merge_asof(windows.reset_index().sort_values("previous_count_date", kind="stable"), touched,
                              left_on="previous_count_date", right_on="touched", by="plant_id",
                              direction="forward", allow_exact_matches=True)
        hit = found.loc[found["touched"].notna() & (found["touched"] <= found["count_date"]), "index"]
        reaches[hit.to_numpy(dtype="int64")] = True
    touched_partitions = counts.loc[in_scope | reaches, ["plant_id", "count_date"]]
    partitions = pd.concat([touched_partitions, dates], ignore_index=True)
    partitions = partitions.drop_duplicates().sort_values(["plant_id", "count_date"]).reset_index(drop=True)
    chosen = counts.merge(partitions, on=["plant_id", "count_date"], how="inner")
    return CountScope(counts=chosen.drop(columns="previous_count_date"), scope=partitions)


def count_variance(inputs: Inputs, scope: CountScope, config: Config, windows: CountWindows) -> pd.DataFrame:
    """One `variance` row per count in scope (plus plant_id and count_date for partitioning).

    windows: the count windows of every accepted count, with every accepted completion and
    movement added (`CountWindows.add_completions`, `add_movements`).
    """
    counts = scope.counts.reset_index(drop=True)
    if counts.empty:
        return _empty_variance()
    sums = windows.sums().set_index("count_id").reindex(counts["count_id"])
    master = inputs.items.set_index("item_id")
    out = counts.copy()
    for column in ("movements_qty", "receipts_qty", "usage_qty"):
        out[column] = sums[column].fillna(0.0).to_numpy()
    out = out.rename(columns={"usage_qty": "theoretical_usage_qty"})
    out["backflushed"] = out["item_id"].map(master["backflush"]).astype(bool)
    out["standard_cost"] = costs_in_force(out["item_id"], out["count_date"], inputs.items, inputs.item_costs)
    out["uom"] = out["item_id"].map(master["uom"])
    return finish_variance(out, out["item_id"].map(master["uom_decimals"]), config.tolerances)


def stock_exceptions(inputs: Inputs, scope: CountScope, windows: CountWindows, config: Config) -> pd.DataFrame:
    """One `stock_exceptions` row per count in scope whose window (previous count, count] takes the
    book stock below zero (plus plant_id and count_date for partitioning); see docs/CONTRACT.md.

    The running book stock of a window is the opening count plus, moment by moment (the events of
    one instant are netted: the stock at an instant is the stock after all its flows), every
    movement, receipt, by-product and, for a backflushed item, theoretical usage: the terms of
    `book_qty`, so the last moment's stock is the variance's book stock. Each moment's stock is
    rounded to the item's decimals before it is judged (float noise is not a shortfall).
    windows: with the events of every count in scope kept (`CountWindows.collect_events`).

    Its length is one pass over the windows' events in time order (net per instant, running stock,
    first negative, lowest point, largest outflow); each step needs the arrays of the one before.
    """
    counts = scope.counts[scope.counts["previous_counted_at"].notna()].reset_index(drop=True)
    if counts.empty:
        return _empty_exceptions()
    position = pd.Index(windows.count_ids).get_indexer(counts["count_id"])
    if windows.collecting is None or not windows.collecting[position].all():
        raise ValueError("stock exceptions need the events of every count in scope (collect_events)")
    master = inputs.items.set_index("item_id")
    backflushed = counts["item_id"].map(master["backflush"]).fillna(False).to_numpy(dtype=bool)
    decimals = counts["item_id"].map(master["uom_decimals"]).to_numpy()
    # the window's events, with its row in `counts`; usage only lowers the book of a backflushed item
    slot = np.full(len(windows.count_ids), -1, dtype="int64")
    slot[position] = np.arange(len(counts))
    events = windows.events()
    row = slot[events["window"].to_numpy(dtype="int64")]
    keep = row >= 0
    keep[keep] &= (events["kind"].to_numpy()[keep] != EVENT_USAGE) | backflushed[row[keep]]
    sources = events["source"].array[keep]
    # integer codes in the order of the ids (not strings): a smaller code is a smaller id
    source, source_names = pd.factorize(sources, sort=True, use_na_sentinel=False)
    flows = pd.DataFrame({"row": row[keep], "at": events["at"].to_numpy()[keep], "qty": events["qty"].to_numpy()[keep],
                          "kind": events["kind"].to_numpy()[keep], "source": source})
    # one flow per (window, instant, kind, source): a completion's several BOM lines of one component
    flows = flows.groupby(["row", "at", "kind", "source"], as_index=False, sort=False)["qty"].sum()
    # the running stock per moment: the opening (at the previous count) then each instant's net flow
    opening = pd.DataFrame({"row": np.arange(len(counts)), "at": micros(counts["previous_counted_at"]),
                            "qty": counts["opening_qty"].to_numpy(dtype="float64")})
    moments = pd.concat([opening, flows.groupby(["row", "at"], as_index=False, sort=False)["qty"].sum()],
                        ignore_index=True)
    moments = moments.iloc[np.lexsort((moments["at"].to_numpy(), moments["row"].to_numpy()))]
    moment_rows = moments["row"].to_numpy()
    stock = moments.groupby("row", sort=False)["qty"].cumsum().to_numpy()
    stock = round_half_away(stock, decimals[moment_rows])
    moments = pd.DataFrame({"row": moment_rows, "at": moments["at"].to_numpy(), "stock": stock})
    below = moments[moments["stock"] < 0]
    if below.empty:
        return _empty_exceptions()
    first = below.groupby("row", sort=True).head(1).set_index("row")  # moments are in time order
    lowest = below.iloc[np.lexsort((below["at"].to_numpy(), below["stock"].to_numpy(), below["row"].to_numpy()))]
    lowest = lowest.groupby("row", sort=True).head(1).set_index("row")
    hit = first.index.to_numpy()
    # the flows up to and including the first negative moment
    until = np.full(len(counts), np.iinfo("int64").min)
    until[hit] = first["at"].to_numpy()
    taken = flows[flows["at"].to_numpy() <= until[flows["row"].to_numpy()]]
    kind = taken["kind"].to_numpy()
    sums = {name: np.bincount(taken["row"].to_numpy(), weights=np.where(mask, taken["qty"].to_numpy(), 0.0),
                              minlength=len(counts))
            for name, mask in (("movements", kind == EVENT_MOVEMENT),
                               ("receipts", (kind == EVENT_RECEIPT) | (kind == EVENT_BY_PRODUCT)),
                               ("usage", kind == EVENT_USAGE))}
    # the largest single outflow among them (ties: the earliest, then the smallest source id)
    outflows = taken[taken["qty"] < 0]
    largest = outflows.sort_values(["row", "qty", "at", "source"], kind="stable")
    largest = largest.groupby("row", sort=True).head(1).set_index("row").reindex(hit)
    out = counts.iloc[hit].reset_index(drop=True)
    d = decimals[hit]
    zones = plant_timezones(inputs.plants, set(out["plant_id"]), config.plant_timezones)
    negative_at = _stamps(first["at"].to_numpy())
    out = out.assign(
        uom=out["item_id"].map(master["uom"]),
        backflushed=backflushed[hit],
        opening_qty=round_half_away(out["opening_qty"], d),
        negative_at=negative_at,
        negative_date=business_dates(pd.Series(negative_at), out["plant_id"], zones).to_numpy(),
        book_qty_at_negative=first["stock"].to_numpy(),
        min_book_qty=lowest["stock"].to_numpy(),
        min_at=_stamps(lowest["at"].to_numpy()),
        movements_qty=round_half_away(sums["movements"][hit], d),
        receipts_qty=round_half_away(sums["receipts"][hit], d),
        usage_qty=round_half_away(-sums["usage"][hit], d),
        largest_flow_kind=pd.Series(EVENT_KINDS[largest["kind"].fillna(0).to_numpy(dtype="int64")]).where(
            largest["kind"].notna().to_numpy()).to_numpy(),
        largest_flow_id=np.concatenate([np.asarray(source_names, dtype=object), np.array([None], dtype=object)])[
            largest["source"].fillna(len(source_names)).to_numpy(dtype="int64")],
        largest_flow_qty=round_half_away(largest["qty"].to_numpy(dtype="float64"), d),
    )
    return out[["plant_id", "count_date", *[f.name for f in schemas.STOCK_EXCEPTIONS]]].reset_index(drop=True)


def _stamps(micros: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(np.asarray(micros, dtype="int64"), unit="us", utc=True)


def _empty_exceptions() -> pd.DataFrame:
    columns = {f.name: pd.Series([], dtype="object") for f in schemas.STOCK_EXCEPTIONS}
    return pd.DataFrame({"plant_id": pd.Series([], dtype="str"), "count_date": pd.Series([], dtype="datetime64[ns]"),
                         **columns})


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
        over &= beyond(variance, tolerances.abs_qty)
    if tolerances.abs_value is not None:
        over &= beyond(value, tolerances.abs_value)
    if tolerances.pct is not None:
        over &= pct.isna() | beyond(pct, tolerances.pct)
    out["book_qty"] = book
    out["variance_qty"] = variance
    out["variance_value"] = value
    out["usage_variance_pct"] = pct
    first, ok, off = schemas.VARIANCE_STATUSES
    out["status"] = np.where(baseline, first, np.where(over, off, ok))
    quantities = ["opening_qty", "movements_qty", "receipts_qty", "theoretical_usage_qty", "book_qty",
                  "counted_qty", "variance_qty"]
    for column in quantities:
        out[column] = pd.Series(round_half_away(out[column], decimals), index=out.index)
    for column in quantities + ["variance_value", "usage_variance_pct"]:
        if column != "counted_qty":
            out[column] = out[column].where(~baseline)
    return out.reset_index(drop=True)


def beyond(values: pd.Series, bound: float) -> pd.Series:
    """|values| > bound, ignoring float noise: a variance of exactly the tolerance (0.07 * 100 is
    7.000000000000001 in binary) is within it."""
    return pd.Series(np.round(np.abs(values.to_numpy(dtype="float64")), 9) > bound, index=values.index)


def _empty_variance() -> pd.DataFrame:
    columns = {f.name: pd.Series([], dtype="object") for f in schemas.VARIANCE}
    return pd.DataFrame({**columns, "plant_id": pd.Series([], dtype="str"),
                         "count_date": pd.Series([], dtype="datetime64[ns]")})


SUMMARY_COLUMNS = ["count_id", "plant_id", "location_id", "item_id", "status", "variance_qty", "uom", "variance_value"]


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
