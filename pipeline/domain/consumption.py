"""Theoretical consumption: completions aggregated per explosion key, multiplied by the exploded BOM.

Completions are aggregated *before* they meet the BOM: per (plant, business date, location,
item) there is one demand row, and per (plant, item, effectivity epoch) one explosion, so the
cost of this stage follows distinct keys, not completion rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contract.quarantine import empty_quarantine, quarantine_rows
from pipeline.domain import bom

DEMAND_KEYS = ["plant_id", "business_date", "location_id", "item_id"]
# what the engine needs of a completion (order_id only when a BOM line is fixed); the rest (source
# line) stays behind until quarantine
ENGINE_COLUMNS = ["completion_id", "plant_id", "location_id", "item_id", "qty_good", "qty_scrap", "completed_at",
                  "business_date", "order_id"]
# a production order: its fixed quantities are needed once, by its first completion (issue 16.3)
ORDER_KEYS = ["plant_id", "item_id", "order_id"]
# what the first completion of an order tells the merge of buckets
ORDER_COLUMNS = ORDER_KEYS + ["completed_at", "completion_id", "business_date", "location_id", "key"]


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


def first_of_orders(good: pd.DataFrame) -> pd.DataFrame:
    """ORDER_COLUMNS of the first completion of each order among `good` (completions that
    produced something and exploded): first by completed_at, then completion_id. Completions
    without an order_id are orders of their own and are not listed."""
    if "order_id" not in good.columns:
        return good.iloc[0:0].reindex(columns=ORDER_COLUMNS)
    ordered = good.loc[good["order_id"].notna(), ORDER_COLUMNS]
    ordered = ordered.sort_values(ORDER_KEYS + ["completed_at", "completion_id"], kind="stable")
    return ordered.drop_duplicates(ORDER_KEYS).reset_index(drop=True)


def carries_order(good: pd.DataFrame) -> np.ndarray:
    """Whether each completion carries its order's fixed quantities: one without an order_id
    always does, one with an order_id when it is its order's first (`first_of_orders`) in `good`."""
    if "order_id" not in good.columns:
        return np.ones(len(good), dtype=bool)
    carried = good["order_id"].isna().to_numpy()
    firsts = first_of_orders(good)
    if not firsts.empty:
        carried |= good["completion_id"].isin(firsts["completion_id"]).to_numpy() & ~carried
    return carried


def completion_demand(tagged: pd.DataFrame, carried: np.ndarray | None = None) -> pd.DataFrame:
    """Good, scrapped and total units per (plant, business date, location, item, explosion key),
    and the orders whose fixed quantities they carry.

    carried: per completion, whether it carries its order's fixed quantities (default: as
    `carries_order` finds within `tagged`; a bucket passes only the completions without an order,
    the first of each order being found across buckets).
    """
    if carried is None:
        carried = carries_order(tagged)
    frame = tagged.assign(
        qty=tagged["qty_good"] + tagged["qty_scrap"],
        counted=(tagged["qty_good"] + tagged["qty_scrap"] > 0).astype("int64"),
        orders=np.asarray(carried, dtype="int64"),
    )
    return frame.groupby(DEMAND_KEYS + ["key"], as_index=False, sort=True).agg(
        qty_good=("qty_good", "sum"),
        qty_scrap=("qty_scrap", "sum"),
        qty=("qty", "sum"),
        completions=("counted", "sum"),
        orders=("orders", "sum"),
    )


def empty_demand() -> pd.DataFrame:
    """A demand frame (`completion_demand`) without rows."""
    text = pd.Series([], dtype="str")
    return pd.DataFrame({"plant_id": text, "business_date": pd.Series([], dtype="datetime64[ns]"),
                         "location_id": text, "item_id": text, "key": pd.Series([], dtype="int64"),
                         "qty_good": pd.Series([], dtype="float64"), "qty_scrap": pd.Series([], dtype="float64"),
                         "qty": pd.Series([], dtype="float64"), "completions": pd.Series([], dtype="int64"),
                         "orders": pd.Series([], dtype="int64")})


def consumed(qty_per_unit: np.ndarray | pd.Series, qty_per_order: np.ndarray | pd.Series | None) -> np.ndarray:
    """Whether a requirement is a consumption (else a by-product): the sign of its per-unit
    quantity, or of its per-order one when it has none per unit."""
    per_unit = np.asarray(qty_per_unit, dtype="float64")
    if qty_per_order is None:
        return per_unit > 0
    return (per_unit > 0) | ((per_unit == 0) & (np.asarray(qty_per_order, dtype="float64") > 0))


def component_flows(demand: pd.DataFrame, requirements: pd.DataFrame) -> pd.DataFrame:
    """Signed component quantity per (plant, date, location, produced item, component).

    Positive: theoretical consumption; negative: by-product received. Per completion the same
    component's requirements are already summed over lines and paths (in the explosion), so the
    sign of a row is the sign of that sum (`consumed`).

    qty = units x qty_per_unit + orders x qty_per_order: a fixed quantity once per order the row
    carries. A component needed only per order gives no row where the demand carries no order.
    """
    flows = demand.merge(requirements, on="key", how="inner")
    if "qty_per_order" not in flows.columns:
        flows["qty_per_order"] = 0.0
    orders = flows["orders"] if "orders" in flows.columns else 0
    flows["fixed_qty"] = orders * flows["qty_per_order"]
    flows["qty"] = flows["qty"] * flows["qty_per_unit"] + flows["fixed_qty"]
    keep = (flows["qty_per_unit"] != 0) | (flows["qty"] != 0)
    if not keep.all():
        flows = flows[keep]
    columns = DEMAND_KEYS + ["component_item_id", "qty_per_unit", "qty_per_order", "qty", "fixed_qty", "completions"]
    return flows[columns].reset_index(drop=True)


def theoretical_consumption(flows: pd.DataFrame, items: pd.DataFrame, *, sort: bool = True) -> pd.DataFrame:
    """The `consumption` dataset: positive component requirements with unit and backflush flag.

    sort: in key order (the warehouse sorts each partition as it writes it, and needs no order).
    """
    consumed = flows[consumed_rows(flows)]
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
            # the part of qty needed once per order (fixed-quantity lines, issue 16.3)
            "fixed_qty": consumed["fixed_qty"].astype("float64") if "fixed_qty" in consumed.columns else 0.0,
            "uom": pd.Series(master["uom"].to_numpy(dtype=object)[codes], index=consumed.index, dtype="str"),
            "backflushed": master["backflush"].fillna(False).to_numpy(dtype=bool)[codes],
            "completions": consumed["completions"].astype("int64"),
        }
    )
    return (out.sort_values(DEMAND_KEYS + ["component_item_id"]) if sort else out).reset_index(drop=True)


def consumed_rows(frame: pd.DataFrame) -> np.ndarray:
    """`consumed` of a frame of requirements or flows (qty_per_order optional)."""
    return consumed(frame["qty_per_unit"], frame["qty_per_order"] if "qty_per_order" in frame.columns else None)


class ExplosionCatalog:
    """Explosion keys numbered once per run, each exploded once, as completions arrive.

    Completions may arrive a bucket at a time: `tag` numbers each new (plant, item, epoch) key
    in order of first appearance and explodes only the new ones, so the explosion's cost follows
    distinct keys however the completions are split. A plant's BOM lines are resolved the first
    time a completion names it. `adopt` merges another catalog's keys (another process's).
    """

    def __init__(self, bom_table: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame,
                 broken: pd.DataFrame | None = None) -> None:
        self.items = items
        self._all_lines = bom.line_requirements(bom_table, items, conversions, broken)
        self.floor = bom.epoch_floor(self._all_lines)
        # any fixed-quantity line at all: only then are the first completions of orders sought
        self.has_fixed = bool(self._all_lines["fixed"].any())
        self._empty()

    def _empty(self) -> None:
        """No plant resolved, no key numbered yet."""
        self.plants: set[str] = set()
        self.lines = bom.plant_lines(self._all_lines, [])
        self.boundaries = bom.item_boundaries(self.lines)
        self.keys = pd.DataFrame({"plant_id": pd.Series([], dtype="str"), "item_id": pd.Series([], dtype="str"),
                                  "effective_date": pd.Series([], dtype="datetime64[ns]"),
                                  "key": pd.Series([], dtype="int64")})
        self._requirements: list[pd.DataFrame] = []
        self._errors: list[pd.DataFrame] = []
        self._cache: tuple[pd.DataFrame, pd.DataFrame] | None = None

    def empty_copy(self) -> ExplosionCatalog:
        """A catalog of the same BOM without keys (for another process to fill)."""
        copy = object.__new__(ExplosionCatalog)
        copy.items, copy._all_lines, copy.floor = self.items, self._all_lines, self.floor
        copy.has_fixed = self.has_fixed
        copy._empty()
        return copy

    def _resolve_plants(self, plants: list[str]) -> None:
        new = sorted(set(plants) - self.plants)
        if new:
            lines = bom.plant_lines(self._all_lines, new)
            self.lines = pd.concat([self.lines, lines], ignore_index=True)
            self.boundaries = pd.concat([self.boundaries, bom.item_boundaries(lines)], ignore_index=True)
            self.plants.update(new)

    def tag(self, completions: pd.DataFrame) -> pd.DataFrame:
        """`completions` with effective_date and key; new keys are exploded on the way."""
        self._resolve_plants(list(completions["plant_id"].unique()))
        tagged = completions.assign(effective_date=bom.item_epochs(completions, self.boundaries, self.floor))
        # one grouping pass numbers the bucket's keys; only its distinct keys meet the catalog
        local = tagged.groupby(["plant_id", "item_id", "effective_date"], sort=False, dropna=False).ngroup()
        local = local.to_numpy(dtype="int64")
        first = np.unique(local, return_index=True)[1]
        distinct = tagged.iloc[first][["plant_id", "item_id", "effective_date"]].reset_index(drop=True)
        found = self._number(distinct)
        tagged["key"] = found[local] if len(local) else np.zeros(0, dtype="int64")
        return tagged

    def _number(self, distinct: pd.DataFrame) -> np.ndarray:
        """The catalog key of each distinct (plant, item, epoch), exploding those not seen yet."""
        known = distinct.merge(self.keys, on=["plant_id", "item_id", "effective_date"], how="left")["key"]
        fresh = known.isna().to_numpy()
        if fresh.any():
            new = distinct[fresh].reset_index(drop=True)
            new["key"] = np.arange(len(self.keys), len(self.keys) + len(new), dtype="int64")
            explosion = bom.explode(new, self.lines, self.items)
            self.keys = pd.concat([self.keys, new], ignore_index=True)
            self._requirements.append(explosion.requirements)
            self._errors.append(explosion.errors)
            self._cache = None
            known = known.copy()
            known[fresh] = new["key"].to_numpy()
        return known.to_numpy(dtype="int64")

    def adopt(self, keys: pd.DataFrame, requirements: pd.DataFrame, errors: pd.DataFrame) -> np.ndarray:
        """Take in another catalog's keys (with their explosion); return, per key number there
        (0..max), the number here (-1 for numbers not given)."""
        self._resolve_plants(list(keys["plant_id"].unique()))
        known = keys.merge(self.keys, on=["plant_id", "item_id", "effective_date"], how="left",
                           suffixes=("", "_here"))["key_here"]
        fresh = known.isna().to_numpy()
        ours = known.to_numpy(dtype="float64", copy=True)
        if fresh.any():
            new = keys[fresh].reset_index(drop=True)
            numbers = np.arange(len(self.keys), len(self.keys) + len(new), dtype="int64")
            renumber = pd.Series(numbers, index=new["key"].to_numpy())
            self._requirements.append(requirements[requirements["key"].isin(renumber.index)].assign(
                key=lambda f: renumber.reindex(f["key"]).to_numpy()))
            self._errors.append(errors[errors["key"].isin(renumber.index)].assign(
                key=lambda f: renumber.reindex(f["key"]).to_numpy()))
            self.keys = pd.concat([self.keys, new.assign(key=numbers)], ignore_index=True)
            self._cache = None
            ours[fresh] = numbers
        mapping = np.full(int(keys["key"].max()) + 1 if len(keys) else 0, -1, dtype="int64")
        mapping[keys["key"].to_numpy(dtype="int64")] = ours.astype("int64")
        return mapping

    def _tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        # new keys have higher numbers than every key before them, so appending keeps the order by key
        if self._cache is None:
            if not self._requirements:
                empty = bom.explode(self.keys.iloc[0:0], self.lines, self.items)
                self._requirements, self._errors = [empty.requirements], [empty.errors]
            requirements = pd.concat(self._requirements, ignore_index=True)
            errors = pd.concat(self._errors, ignore_index=True)
            self._cache = (requirements, errors)
            self._requirements, self._errors = [requirements], [errors]
        return self._cache

    @property
    def requirements(self) -> pd.DataFrame:
        """key, component_item_id, qty_per_unit, qty_per_order of every key that exploded."""
        return self._tables()[0]

    @property
    def errors(self) -> pd.DataFrame:
        """key, error_code, message of every key that cannot be exploded."""
        return self._tables()[1]


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


def produced(completions: pd.DataFrame, *, orders: bool = True) -> pd.DataFrame:
    """ENGINE_COLUMNS + _row of the completions that produced something.

    A cancellation (both quantities 0) contributes nothing: no zero rows, and no explosion error.
    orders: keep order_id (only fixed-quantity lines need it; without it every completion is an
    order of its own, which changes nothing when no line is fixed).
    """
    made = ((completions["qty_good"] + completions["qty_scrap"]) > 0).to_numpy()
    columns = [c for c in ENGINE_COLUMNS if c in completions.columns and (orders or c != "order_id")]
    return completions.loc[made, columns].assign(_row=np.flatnonzero(made))


def explode_all(
    completions: pd.DataFrame, bom_table: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame,
    broken: pd.DataFrame | None = None, catalog: ExplosionCatalog | None = None,
) -> ExplodedCompletions:
    """Tag completions with explosion keys and explode each distinct key once (in `catalog`, if
    given: keys it knows are not exploded again)."""
    catalog = catalog or ExplosionCatalog(bom_table, items, conversions, broken)
    tagged = catalog.tag(produced(completions, orders=catalog.has_fixed))
    return ExplodedCompletions(tagged=tagged, requirements=catalog.requirements, errors=catalog.errors)


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
