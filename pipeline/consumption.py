"""Theoretical consumption: completions aggregated per explosion key, multiplied by the exploded BOM.

Completions are aggregated *before* they meet the BOM: per (plant, business date, location,
item) there is one demand row, and per (plant, item, effectivity epoch) one explosion, so the
cost of this stage follows distinct keys, not completion rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import bom
from pipeline.sources import empty_quarantine, quarantine_rows

DEMAND_KEYS = ["plant_id", "business_date", "location_id", "item_id"]
# what the engine needs of a completion; the rest (order, source line) stays behind until quarantine
ENGINE_COLUMNS = ["completion_id", "plant_id", "location_id", "item_id", "qty_good", "qty_scrap", "completed_at",
                  "business_date"]


def with_explosion_keys(completions: pd.DataFrame, lines: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tag each completion with its explosion key (plant, item, the item's effectivity epoch of its
    business date); return (tagged completions, distinct keys)."""
    tagged = completions.assign(effective_date=bom.item_epochs(completions, bom.item_boundaries(lines)))
    keys = tagged[["plant_id", "item_id", "effective_date"]].drop_duplicates().reset_index(drop=True)
    keys["key"] = np.arange(len(keys), dtype="int64")
    tagged = tagged.merge(keys, on=["plant_id", "item_id", "effective_date"], how="left")
    return tagged, keys


def exploded_completions(
    tagged: pd.DataFrame, errors: pd.DataFrame, original: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split completions into those whose BOM exploded and quarantine rows for the rest (whole).

    original: the completions as accepted (all columns), which `tagged["_row"]` points into, so
    the quarantine keeps the whole row while the engine carries only what it needs.
    """
    failed = tagged["key"].isin(errors["key"])
    if not failed.any():
        return tagged, empty_quarantine()
    bad = tagged[failed].merge(errors, on="key", how="left").reset_index(drop=True)
    rows = bad
    if original is not None and "_row" in bad.columns:
        rows = original.iloc[bad["_row"].to_numpy()].reset_index(drop=True).assign(
            business_date=bad["business_date"].to_numpy())
    message = (
        "completion " + bad["completion_id"] + " of " + bad["item_id"] + " on "
        + bad["business_date"].dt.strftime("%Y-%m-%d") + ": " + bad["message"]
    )
    return tagged[~failed], quarantine_rows("completions", rows, bad["error_code"], message)


def completion_demand(tagged: pd.DataFrame) -> pd.DataFrame:
    """Good, scrapped and total units per (plant, business date, location, item, explosion key)."""
    frame = tagged.assign(
        qty=tagged["qty_good"] + tagged["qty_scrap"],
        counted=(tagged["qty_good"] + tagged["qty_scrap"] > 0).astype("int64"),
    )
    return frame.groupby(DEMAND_KEYS + ["key"], as_index=False, sort=True).agg(
        qty_good=("qty_good", "sum"),
        qty_scrap=("qty_scrap", "sum"),
        qty=("qty", "sum"),
        completions=("counted", "sum"),
    )


def component_flows(demand: pd.DataFrame, requirements: pd.DataFrame) -> pd.DataFrame:
    """Signed component quantity per (plant, date, location, produced item, component).

    Positive: theoretical consumption; negative: by-product received. Per completion the same
    component's requirements are already summed over lines and paths (in the explosion), so the
    sign of a row is the sign of that sum.
    """
    flows = demand.merge(requirements, on="key", how="inner")
    flows["qty"] = flows["qty"] * flows["qty_per_unit"]
    columns = DEMAND_KEYS + ["component_item_id", "qty_per_unit", "qty", "completions"]
    return flows[columns].reset_index(drop=True)


def theoretical_consumption(flows: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The `consumption` dataset: positive component requirements with unit and backflush flag."""
    consumed = flows[flows["qty_per_unit"] > 0]
    master = items.set_index("item_id")
    out = pd.DataFrame(
        {
            "plant_id": consumed["plant_id"],
            "business_date": consumed["business_date"],
            "location_id": consumed["location_id"],
            "item_id": consumed["item_id"],
            "component_item_id": consumed["component_item_id"],
            "qty": consumed["qty"],
            "uom": consumed["component_item_id"].map(master["uom"]),
            "backflushed": consumed["component_item_id"].map(master["backflush"]).astype(bool),
            "completions": consumed["completions"].astype("int64"),
        }
    )
    return out.sort_values(DEMAND_KEYS + ["component_item_id"]).reset_index(drop=True)


def explode_completions(
    completions: pd.DataFrame, bom_table: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame,
    broken: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Completions -> (demand, component flows, quarantine of completions that cannot explode)."""
    # a cancellation (both quantities 0) contributes nothing: no zero rows, and no explosion error
    completions = completions[(completions["qty_good"] + completions["qty_scrap"]) > 0]
    slim = completions[ENGINE_COLUMNS].assign(_row=np.arange(len(completions)))
    lines = bom.plant_lines(bom.line_requirements(bom_table, items, conversions, broken),
                            sorted(slim["plant_id"].unique()))
    tagged, keys = with_explosion_keys(slim, lines)
    explosion = bom.explode(keys, lines, items)
    good, quarantine = exploded_completions(tagged, explosion.errors, completions)
    demand = completion_demand(good)
    return demand, component_flows(demand, explosion.requirements), quarantine


def flows_between_counts(
    completions: pd.DataFrame,
    bom_table: pd.DataFrame,
    items: pd.DataFrame,
    conversions: pd.DataFrame,
    breaks: pd.DataFrame,
    broken: pd.DataFrame | None = None,
    counted: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Receipts and theoretical usage per (plant, location, item, segment between count times).

    breaks: (plant_id, location_id, counted_at) instants at which counts are taken. Each completion
    falls in the segment that ends at the first break at or after its `completed_at`; completions
    before a location's first break or after its last one are in no window and are dropped.
    counted: (plant_id, location_id, item_id) that are counted; when given, flows of anything else
    are not computed at all (the bulk of the work at scale).
    Returns plant_id, location_id, item_id, segment_end, receipts_qty, usage_qty (unrounded).
    """
    empty = pd.DataFrame({"plant_id": pd.Series([], dtype="str"), "location_id": pd.Series([], dtype="str"),
                          "item_id": pd.Series([], dtype="str"),
                          "segment_end": pd.Series([], dtype="datetime64[us, UTC]"),
                          "receipts_qty": pd.Series([], dtype="float64"), "usage_qty": pd.Series([], dtype="float64")})
    if completions.empty or breaks.empty:
        return empty
    segmented = assign_segments(completions, breaks, "completed_at")
    if segmented.empty:
        return empty
    lines = bom.plant_lines(bom.line_requirements(bom_table, items, conversions, broken),
                            sorted(segmented["plant_id"].unique()))
    tagged, keys = with_explosion_keys(segmented, lines)
    explosion = bom.explode(keys, lines, items)
    good = tagged[~tagged["key"].isin(explosion.errors["key"])]
    group = ["plant_id", "location_id", "item_id", "segment_end", "key"]
    demand = good.assign(qty=good["qty_good"] + good["qty_scrap"]).groupby(group, as_index=False, sort=False)[
        ["qty_good", "qty"]].sum()
    receipts = demand.groupby(group[:-1], as_index=False, sort=False)["qty_good"].sum().rename(
        columns={"qty_good": "receipts_qty"})
    requirements = explosion.requirements
    if counted is not None:
        stock = ["plant_id", "location_id", "item_id"]
        receipts = receipts.merge(counted[stock].drop_duplicates(), on=stock, how="inner")
        at_plant = counted[["plant_id", "item_id"]].drop_duplicates().rename(columns={"item_id": "component_item_id"})
        requirements = requirements.merge(keys[["key", "plant_id"]], on="key").merge(
            at_plant, on=["plant_id", "component_item_id"]).drop(columns="plant_id")
    comp = demand.merge(requirements, on="key", how="inner")
    if counted is not None:
        comp = comp.merge(counted[["plant_id", "location_id", "item_id"]].drop_duplicates().rename(
            columns={"item_id": "component_item_id"}), on=["plant_id", "location_id", "component_item_id"])
    comp["flow"] = comp["qty"] * comp["qty_per_unit"]
    comp["item_id"] = comp["component_item_id"]
    comp["usage_qty"] = comp["flow"].where(comp["qty_per_unit"] > 0, 0.0)
    comp["receipts_qty"] = (-comp["flow"]).where(comp["qty_per_unit"] < 0, 0.0)
    parts = [receipts.assign(usage_qty=0.0), comp[group[:-1] + ["receipts_qty", "usage_qty"]]]
    flows = pd.concat(parts, ignore_index=True)
    return flows.groupby(group[:-1], as_index=False, sort=False)[["receipts_qty", "usage_qty"]].sum()


def assign_segments(frame: pd.DataFrame, breaks: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """Tag rows with `segment_end`: the first break of their (plant, location) at or after their time."""
    b = breaks[["plant_id", "location_id", "counted_at"]].drop_duplicates()
    first = b.groupby(["plant_id", "location_id"], as_index=False)["counted_at"].min().rename(
        columns={"counted_at": "first_break"})
    rows = frame.merge(first, on=["plant_id", "location_id"], how="inner")
    rows = rows[rows[time_column] > rows["first_break"]].drop(columns="first_break")
    if rows.empty:
        return rows.assign(segment_end=pd.Series([], dtype="datetime64[us, UTC]"))
    rows = rows.sort_values(time_column, kind="stable")
    b = b.sort_values("counted_at", kind="stable").rename(columns={"counted_at": "segment_end"})
    b["_t"] = b["segment_end"]
    tagged = pd.merge_asof(rows, b, left_on=time_column, right_on="_t", by=["plant_id", "location_id"],
                           direction="forward", allow_exact_matches=True).drop(columns="_t")
    return tagged[tagged["segment_end"].notna()]
