"""Theoretical consumption: completions aggregated per explosion key, multiplied by the exploded BOM.

Completions are aggregated *before* they meet the BOM: per (plant, business date, location,
item) there is one demand row, and per (plant, item, effectivity epoch) one explosion, so the
cost of this stage follows distinct keys, not completion rows.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    # keys numbered in order of first appearance; one grouping pass instead of a join on three columns
    key = tagged.groupby(["plant_id", "item_id", "effective_date"], sort=False, dropna=False).ngroup()
    tagged["key"] = key.to_numpy(dtype="int64")
    first = ~tagged["key"].duplicated().to_numpy()
    keys = tagged.loc[first, ["plant_id", "item_id", "effective_date", "key"]].reset_index(drop=True)
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
    # one hashing pass over the component column; the master is looked up per distinct component
    codes, components = pd.factorize(consumed["component_item_id"])
    master = items.set_index("item_id").reindex(components)
    out = pd.DataFrame(
        {
            "plant_id": consumed["plant_id"],
            "business_date": consumed["business_date"],
            "location_id": consumed["location_id"],
            "item_id": consumed["item_id"],
            "component_item_id": consumed["component_item_id"],
            "qty": consumed["qty"],
            "uom": pd.Series(master["uom"].to_numpy(dtype=object)[codes], index=consumed.index, dtype="str"),
            "backflushed": master["backflush"].fillna(False).to_numpy(dtype=bool)[codes],
            "completions": consumed["completions"].astype("int64"),
        }
    )
    return out.sort_values(DEMAND_KEYS + ["component_item_id"]).reset_index(drop=True)


@dataclass(frozen=True)
class ExplodedCompletions:
    """Every accepted completion tagged with its explosion key, and the explosion of those keys.

    tagged: ENGINE_COLUMNS + key + _row (the row's position in the completions given), for every
        completion that is not a cancellation, whatever its date: consumption takes the dates in
        scope, variance every completion in a count's window. One explosion serves both.
    """

    tagged: pd.DataFrame
    requirements: pd.DataFrame
    errors: pd.DataFrame

    def good(self) -> pd.DataFrame:
        """The tagged completions whose BOM exploded."""
        return self.tagged[~self.tagged["key"].isin(self.errors["key"])]


def explode_all(
    completions: pd.DataFrame, bom_table: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame,
    broken: pd.DataFrame | None = None,
) -> ExplodedCompletions:
    """Tag completions with explosion keys and explode each distinct key once."""
    # a cancellation (both quantities 0) contributes nothing: no zero rows, and no explosion error
    produced = ((completions["qty_good"] + completions["qty_scrap"]) > 0).to_numpy()
    slim = completions.loc[produced, ENGINE_COLUMNS].assign(_row=np.flatnonzero(produced))
    lines = bom.plant_lines(bom.line_requirements(bom_table, items, conversions, broken),
                            sorted(slim["plant_id"].unique()))
    tagged, keys = with_explosion_keys(slim, lines)
    explosion = bom.explode(keys, lines, items)
    return ExplodedCompletions(tagged=tagged, requirements=explosion.requirements, errors=explosion.errors)


def demand_and_flows(
    exploded: ExplodedCompletions, tagged: pd.DataFrame, completions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(demand, component flows, quarantine) of `tagged`: a subset of `exploded.tagged` (the
    completions of the dates in scope); `completions` is the frame `_row` points into."""
    good, quarantine = exploded_completions(tagged, exploded.errors, completions)
    demand = completion_demand(good)
    return demand, component_flows(demand, exploded.requirements), quarantine


def explode_completions(
    completions: pd.DataFrame, bom_table: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame,
    broken: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Completions -> (demand, component flows, quarantine of completions that cannot explode)."""
    exploded = explode_all(completions, bom_table, items, conversions, broken)
    return demand_and_flows(exploded, exploded.tagged, completions)
