"""Explode multi-level BOMs into per-unit component requirements, one BOM level at a time.

The explosion runs on distinct explosion keys (plant, item, effectivity epoch), never on
completions: thousands of completions of one item on one day share one explosion. An item's
effectivity epoch of a date is the latest validity boundary, among the lines reachable from
that item, on or before the date: it selects exactly the same lines as the date itself, so a
month of completions explodes once per change of *that item's* BOM, not once per day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.engine.strings import isin

ERROR_PRIORITY = {"UNKNOWN_ITEM": 0, "INVALID": 1, "BOM_CYCLE": 2, "NO_BOM": 3, "NO_UOM_CONVERSION": 4}


@dataclass(frozen=True)
class Explosion:
    """Per-unit requirements of each explosion key, and the keys that cannot be exploded.

    requirements: key, component_item_id, qty_per_unit (signed, in the component's base unit;
        negative: a by-product), qty_per_order (the same, needed once per production order: the
        fixed-quantity lines and what they reach), each summed over every line and path that
        reaches the component.
    errors: key, error_code, message (one row per failing key).
    """

    requirements: pd.DataFrame
    errors: pd.DataFrame



def has_fixed_lines(bom: pd.DataFrame) -> bool:
    """Whether a (coerced) BOM table has a fixed-quantity line (`bom.fixed_qty`, issue 16.3)."""
    return "fixed_qty" in bom.columns and bool(bom["fixed_qty"].fillna(False).astype(bool).any())

def item_boundaries(lines: pd.DataFrame) -> pd.DataFrame:
    """Per (plant, item): every validity boundary of a line reachable from it through phantoms.

    lines: plant-resolved lines (see `plant_lines`). The closure follows phantom components level
    by level until no new boundary appears (cycles end it too).
    """
    direct = pd.concat([
        lines[["plant_id", "parent_item_id", "valid_from"]].rename(columns={"valid_from": "boundary"}),
        lines[["plant_id", "parent_item_id", "valid_to"]].rename(columns={"valid_to": "boundary"}),
    ], ignore_index=True).dropna().rename(columns={"parent_item_id": "item_id"}).drop_duplicates()
    edges = lines.loc[lines["component_phantom"], ["plant_id", "parent_item_id", "component_item_id"]]
    edges = edges.drop_duplicates().rename(columns={"parent_item_id": "item_id", "component_item_id": "child"})
    known, frontier = direct, direct
    while True:  # ends: the set of (plant, item, boundary) only grows, and is finite
        reached = edges.merge(frontier.rename(columns={"item_id": "child"}), on=["plant_id", "child"])
        reached = reached[["plant_id", "item_id", "boundary"]].drop_duplicates()
        fresh = reached.merge(known, on=["plant_id", "item_id", "boundary"], how="left", indicator=True)
        frontier = fresh.loc[fresh["_merge"] == "left_only", ["plant_id", "item_id", "boundary"]]
        if frontier.empty:
            break
        known = pd.concat([known, frontier], ignore_index=True)
    return known.astype({"boundary": "datetime64[ns]"}).reset_index(drop=True)


def epoch_floor(lines: pd.DataFrame) -> pd.Timestamp:
    """The epoch of dates before every boundary: a day before the first bound of any line."""
    bounds = pd.concat([lines["valid_from"], lines["valid_to"]]).dropna()
    return (pd.Timestamp(bounds.min()) if not bounds.empty else pd.Timestamp("1970-01-02")) - pd.Timedelta(days=1)


def item_epochs(keys: pd.DataFrame, boundaries: pd.DataFrame, floor: pd.Timestamp | None = None) -> pd.Series:
    """The effectivity epoch of each (plant_id, item_id, business_date) row: the latest boundary of
    that item's reachable lines on or before the date (a day before all of them if none is).

    Every line the explosion of (plant, item) can reach has both its bounds among those boundaries,
    so on the epoch date each of them is effective exactly when it is on the business date: the
    explosion is the same, and all dates between two of the item's own BOM changes share it.
    floor: the epoch of dates before every boundary (default: a day before the first one given).
    """
    if floor is None:
        floor = (boundaries["boundary"].min() if not boundaries.empty else pd.Timestamp("1970-01-02")) - pd.Timedelta(days=1)
    probe = keys[["plant_id", "item_id", "business_date"]].reset_index().rename(columns={"business_date": "day"})
    probe["day"] = probe["day"].astype("datetime64[ns]")
    probe = probe.astype({"plant_id": "str", "item_id": "str"})
    right = boundaries.sort_values("boundary", kind="stable").astype({"plant_id": "str", "item_id": "str"})
    right = right.assign(day=right["boundary"])
    found = pd.merge_asof(probe.sort_values("day", kind="stable"), right, on="day", by=["plant_id", "item_id"],
                          direction="backward", allow_exact_matches=True)
    epoch = found.set_index("index")["boundary"].reindex(probe["index"]).fillna(floor)
    return pd.Series(epoch.to_numpy(), index=keys.index, dtype="datetime64[ns]")


def conversion_factors(
    lines: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame
) -> pd.Series:
    """Factor from each line's uom to its component's base uom (NaN: no conversion exists).

    Lookup order: same unit; item-specific row; item-specific row read backwards; generic row;
    generic row read backwards. An item-specific row beats a generic one.
    """
    base = lines["component_item_id"].map(items.set_index("item_id")["uom"])
    line_uom = lines["uom"].astype(object).fillna(base.astype(object))
    factor = pd.Series(np.where(line_uom == base, 1.0, np.nan), index=lines.index)
    if conversions.empty:
        return factor
    conv = conversions[["item_id", "from_uom", "to_uom", "factor"]]
    specific = conv[conv["item_id"].notna()]
    generic = conv[conv["item_id"].isna()]
    probe = pd.DataFrame({"item_id": lines["component_item_id"], "line_uom": line_uom, "base": base})

    def lookup(table: pd.DataFrame, with_item: bool, backwards: bool) -> pd.Series:
        left = ["line_uom", "base"] if not backwards else ["base", "line_uom"]
        on_left = (["item_id"] if with_item else []) + left
        on_right = (["item_id"] if with_item else []) + ["from_uom", "to_uom"]
        right = table.drop(columns=[] if with_item else ["item_id"])
        found = probe.reset_index().merge(right, left_on=on_left, right_on=on_right, how="inner")
        found = found.drop_duplicates("index").set_index("index")["factor"]
        found = 1.0 / found if backwards else found
        return found.reindex(lines.index)

    for table, with_item in ((specific, True), (generic, False)):
        for backwards in (False, True):
            factor = factor.fillna(lookup(table, with_item, backwards))
    return factor


def line_requirements(
    bom: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame, broken: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Each BOM line's requirement per one unit of its parent, in the component's base unit.

    r = qty_per * conv(uom -> base uom) / base_qty * (1 + scrap_pct/100), scrap only when qty_per > 0.
    A fixed-quantity line (`fixed`) is needed once per order, whatever the parent's quantity: its
    base_qty divides nothing (r = qty_per * conv * scrap).
    Lines that cannot be computed carry a `line_error` code and message instead. `broken`:
    (plant_id, parent_item_id, message) of lines rejected at read; each becomes an always
    effective INVALID line of its parent, so the parent cannot explode on what is left.

    Its length is one vectorised pass over the BOM lines: each judgement (unknown component,
    conversion, scrap) is a few lines next to the next, in the order the contract states them.
    """
    lines = bom.reset_index(drop=True)
    phantom = items.set_index("item_id")["phantom"].astype(bool)
    factor = conversion_factors(lines, items, conversions)
    scrap = np.where(lines["qty_per"] > 0, 1.0 + lines["scrap_pct"] / 100.0, 1.0)
    fixed = lines["fixed_qty"].fillna(False).astype(bool) if "fixed_qty" in lines.columns \
        else pd.Series(False, index=lines.index)
    r = lines["qty_per"] * factor / lines["base_qty"].where(~fixed, 1.0) * scrap
    unknown = ~isin(lines["component_item_id"], items["item_id"])
    no_conv = ~unknown & factor.isna()
    base = lines["component_item_id"].map(items.set_index("item_id")["uom"])
    error = np.select([unknown, no_conv], ["UNKNOWN_ITEM", "NO_UOM_CONVERSION"], default="")
    message = np.select(
        [unknown, no_conv],
        [
            "component " + lines["component_item_id"] + " in the BOM of " + lines["parent_item_id"]
            + " is not in items",
            "no conversion from " + lines["uom"].astype(object).fillna("?") + " to " + base.astype(object).fillna("?")
            + " for component " + lines["component_item_id"] + " in the BOM of " + lines["parent_item_id"],
        ],
        default="",
    )
    out = pd.DataFrame(
        {
            "plant_id": lines["plant_id"],
            "parent_item_id": lines["parent_item_id"],
            "component_item_id": lines["component_item_id"],
            "r": r.astype("float64"),
            "valid_from": lines["valid_from"].astype("datetime64[ns]"),
            "valid_to": lines["valid_to"].astype("datetime64[ns]"),
            "component_phantom": lines["component_item_id"].map(phantom).astype("boolean").fillna(False).astype(bool),
            "fixed": fixed.to_numpy(dtype=bool),
            "line_error": pd.Series(error, dtype="str"),
            "line_message": pd.Series(message, dtype="str"),
        }
    )
    if broken is None or broken.empty:
        return out
    invalid = pd.DataFrame(
        {
            "plant_id": broken["plant_id"].astype("object"),
            "parent_item_id": broken["parent_item_id"].astype("str"),
            "component_item_id": "",
            "r": np.nan,
            "valid_from": pd.Series(pd.NaT, index=broken.index, dtype="datetime64[ns]"),
            "valid_to": pd.Series(pd.NaT, index=broken.index, dtype="datetime64[ns]"),
            "component_phantom": False,
            "fixed": False,
            "line_error": "INVALID",
            "line_message": broken["message"].astype("str"),
        }
    )
    return pd.concat([out, invalid], ignore_index=True)


def plant_lines(lines: pd.DataFrame, plants: list[str]) -> pd.DataFrame:
    """The lines each plant uses: its own lines for a parent if it has any, else the group lines."""
    own = lines[lines["plant_id"].notna() & lines["plant_id"].isin(plants)]
    group = lines[lines["plant_id"].isna()].drop(columns="plant_id")
    plant_frame = pd.DataFrame({"plant_id": pd.Series(plants, dtype="str")})
    group_per_plant = plant_frame.merge(group, how="cross")
    has_own = own[["plant_id", "parent_item_id"]].drop_duplicates()
    marked = group_per_plant.merge(has_own, on=["plant_id", "parent_item_id"], how="left", indicator=True)
    group_used = marked[marked["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([own, group_used[own.columns]], ignore_index=True)


def explode(keys: pd.DataFrame, lines: pd.DataFrame, items: pd.DataFrame) -> Explosion:
    """Explode each key (key, plant_id, item_id, effective_date) into per-unit requirements.

    Phantoms are replaced by their own effective BOM, recursively, their quantity multiplying
    down; every other component is a leaf. A key fails whole when its item is unknown, it or a
    phantom on its path has no effective BOM, a line needs a missing conversion or names an
    unknown component, or an item reappears on its own path.

    A fixed-quantity line needs its own quantity once per order (not `mult` times it: the quantity
    of its parent does not scale it), and everything below it is per order too: a variable line
    under it multiplies the per-order quantity, a fixed one starts again from its own.

    Its length is the loop over BOM levels kept in one piece, so a level reads top to bottom: join the
    effective lines, judge them (`_level_errors`), keep the leaves, build the next frontier.
    """
    errors: list[pd.DataFrame] = []
    results: list[pd.DataFrame] = []

    unknown_root = ~isin(keys["item_id"], items["item_id"])
    if unknown_root.any():
        bad = keys[unknown_root]
        errors.append(_errors(bad["key"], "UNKNOWN_ITEM", "item " + bad["item_id"] + " is not in items"))
    frontier = pd.DataFrame(
        {
            "key": keys.loc[~unknown_root, "key"].to_numpy(),
            "plant_id": keys.loc[~unknown_root, "plant_id"].to_numpy(),
            "effective_date": keys.loc[~unknown_root, "effective_date"].to_numpy().astype("datetime64[ns]"),
            "parent_item_id": keys.loc[~unknown_root, "item_id"].to_numpy(),
            "mult": 1.0,
            "per_order": False,
        }
    )
    frontier["path"] = frontier["parent_item_id"]
    frontier["anc_0"] = frontier["parent_item_id"]
    line_columns = ["plant_id", "parent_item_id", "component_item_id", "r", "valid_from", "valid_to",
                    "component_phantom", "fixed", "line_error", "line_message"]
    level = 0
    # No level cap: a path that never revisits an item is at most as long as there are items, and a
    # revisit ends its path as BOM_CYCLE, so the loop ends on every BOM however deep.
    while not frontier.empty:
        frontier = frontier.reset_index(drop=True)
        frontier["row"] = np.arange(len(frontier))
        joined = frontier.merge(lines[line_columns], on=["plant_id", "parent_item_id"], how="inner")
        effective = (joined["valid_from"].isna() | (joined["valid_from"] <= joined["effective_date"])) & (
            joined["valid_to"].isna() | (joined["effective_date"] < joined["valid_to"])
        )
        joined = joined[effective]
        line_failed, revisits = _level_errors(frontier, joined, level, errors)
        ok = joined[~line_failed & ~revisits]
        fixed = ok["fixed"].to_numpy(dtype=bool)
        qty = ok["r"].where(fixed, ok["mult"] * ok["r"])
        per_order = ok["per_order"].to_numpy(dtype=bool) | fixed
        leaves = ~ok["component_phantom"]
        leaf_qty, leaf_order = qty[leaves], per_order[leaves.to_numpy()]
        results.append(pd.DataFrame({"key": ok.loc[leaves, "key"], "component_item_id": ok.loc[leaves, "component_item_id"],
                                     "qty_per_unit": np.where(leaf_order, 0.0, leaf_qty),
                                     "qty_per_order": np.where(leaf_order, leaf_qty, 0.0)}))
        deeper = ok[~leaves]
        ancestors = [c for c in joined.columns if c.startswith("anc_")]
        level += 1
        frontier = pd.DataFrame(
            {
                "key": deeper["key"],
                "plant_id": deeper["plant_id"],
                "effective_date": deeper["effective_date"],
                "parent_item_id": deeper["component_item_id"],
                "mult": qty[~leaves],
                "per_order": per_order[~leaves.to_numpy()],
                "path": deeper["path"] + " > " + deeper["component_item_id"],
                **{c: deeper[c] for c in ancestors},
                f"anc_{level}": deeper["component_item_id"],
            }
        )

    error_frame = _first_error_per_key(errors)
    requirements = pd.concat(results, ignore_index=True) if results else pd.DataFrame(
        {"key": pd.Series([], dtype="int64"), "component_item_id": pd.Series([], dtype="str"),
         "qty_per_unit": pd.Series([], dtype="float64"), "qty_per_order": pd.Series([], dtype="float64")})
    requirements = requirements[~requirements["key"].isin(error_frame["key"])]
    requirements = requirements.groupby(["key", "component_item_id"], as_index=False, sort=True)[
        ["qty_per_unit", "qty_per_order"]].sum()
    return Explosion(requirements=requirements, errors=error_frame)


def _level_errors(frontier: pd.DataFrame, joined: pd.DataFrame, level: int,
                  errors: list[pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """The errors of one explosion level, appended to `errors`: parents without an effective line
    (`NO_BOM`), lines that failed when they were read (`line_error`), components already on their
    own path (`BOM_CYCLE`). Returns the masks of failed and revisiting lines of `joined`."""
    no_bom = ~frontier["row"].isin(joined["row"])
    if no_bom.any():
        bad = frontier[no_bom]
        what = "item " if level == 0 else "phantom "
        where = "" if level == 0 else " (path " + bad["path"] + ")"
        errors.append(_errors(bad["key"], "NO_BOM",
                              what + bad["parent_item_id"] + where + " has no BOM effective at plant "
                              + bad["plant_id"]))
    line_failed = (joined["line_error"] != "").to_numpy()
    if line_failed.any():
        bad = joined[line_failed]
        errors.append(_errors(bad["key"], bad["line_error"], bad["line_message"]))
    revisits = np.zeros(len(joined), dtype=bool)
    for column in (c for c in joined.columns if c.startswith("anc_")):
        revisits |= (joined[column] == joined["component_item_id"]).to_numpy()
    if revisits.any():
        bad = joined[revisits]
        errors.append(_errors(bad["key"], "BOM_CYCLE",
                              "BOM cycle: " + bad["path"] + " > " + bad["component_item_id"]))
    return line_failed, revisits


def _errors(key: pd.Series, code: str | pd.Series, message: pd.Series) -> pd.DataFrame:
    return pd.DataFrame({"key": key.to_numpy(), "error_code": code, "message": message.to_numpy()})


def _first_error_per_key(errors: list[pd.DataFrame]) -> pd.DataFrame:
    if not errors:
        return pd.DataFrame({"key": pd.Series([], dtype="int64"), "error_code": pd.Series([], dtype="str"),
                             "message": pd.Series([], dtype="str")})
    frame = pd.concat(errors, ignore_index=True)
    frame["priority"] = frame["error_code"].map(ERROR_PRIORITY)
    frame = frame.sort_values(["key", "priority", "message"], kind="stable")
    return frame.drop_duplicates("key")[["key", "error_code", "message"]].reset_index(drop=True)
