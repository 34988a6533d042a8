"""Completions a bucket at a time, so that a run's memory follows distinct keys, not completion rows.

A hash of each completion id picks its bucket, so every version of an id lands in the same one:
the latest-version rule and DUPLICATE_ID judge each bucket alone. Everything else a completion
contributes is a sum (its demand per explosion key, its fingerprint, its flows into count windows),
so the buckets' partial sums add up to the whole, whatever the split. Large inputs are spilled to
bucket files first (one read of each landing file); buckets are digested on worker processes when
there are several, and their partials merged in bucket order, so the result does not depend on
which worker finished first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.contract.quarantine import empty_quarantine
from pipeline.domain import consumption, late_data, stock_windows
from pipeline.engine import workers as workers_
from pipeline.intake.accept import CompletionAcceptor, CompletionBatch, CompletionSummary
from pipeline.intake.spill import Spiller, bucket_frames

_ID = "completion_id"


_DEMAND_SUMS = ["qty_good", "qty_scrap", "qty", "completions", "orders"]


ORDER_COMPACT_ROWS = 1_000_000  # first completions of orders gathered before they are reduced again


@dataclass
class CompletionTotals:
    """What a run needs of every completion, summed over buckets.

    demand: consumption.DEMAND_KEYS + key + qty_good, qty_scrap, qty, completions (every date);
    requirements / errors: the explosion of every key (`consumption.ExplosionCatalog`);
    explode_rejects: quarantine rows of completions whose BOM cannot be exploded (every date);
    fingerprints: `late_data.fingerprint_parts` of the completions; windows: count windows with
    every completion added; summary: what `InputLoader.finish` needs (rows read, rejects, sites).
    """

    demand: pd.DataFrame
    requirements: pd.DataFrame
    errors: pd.DataFrame
    explode_rejects: pd.DataFrame
    fingerprints: pd.DataFrame
    windows: stock_windows.CountWindows
    summary: CompletionSummary
    watermark: pd.Timestamp | None
    buckets: int = 1


@dataclass
class _Partial:
    """One bucket's contribution; keys are numbered by the catalog of the process that made it."""

    pid: int
    summary: CompletionSummary
    fingerprints: pd.DataFrame
    watermark: pd.Timestamp | None
    demand: pd.DataFrame
    explode_rejects: pd.DataFrame
    new_keys: pd.DataFrame
    new_requirements: pd.DataFrame
    new_errors: pd.DataFrame
    touched: np.ndarray
    receipts: np.ndarray
    usage: np.ndarray
    orders: pd.DataFrame  # consumption.ORDER_COLUMNS: the bucket's first completion of each order
    events: pd.DataFrame | None = None  # the bucket's flows into windows whose events are kept
    parents: tuple[np.ndarray, ...] | None = None  # stock_windows.ParentFlows sums of the bucket


@dataclass
class _Digester:
    """Turns a bucket's raw completion files into a `_Partial` (one per process)."""

    acceptor: CompletionAcceptor
    catalog: consumption.ExplosionCatalog
    windows: stock_windows.CountWindows
    reported: int = 0  # catalog keys already sent with an earlier partial

    def digest(self, files: list[tuple[str, pd.DataFrame]]) -> _Partial:
        return self.digest_batch(self.acceptor.accept(files))

    def digest_batch(self, batch: CompletionBatch) -> _Partial:
        accepted = batch.accepted
        fingerprints = late_data.fingerprint_parts("completions", accepted)
        watermark = accepted["recorded_at"].max() if not accepted.empty else None
        tagged = self.catalog.tag(consumption.produced(accepted, orders=self.catalog.has_fixed))
        good, rejects = consumption.exploded_completions(tagged, self.catalog.errors, accepted)
        # a completion without an order carries its own fixed quantities; the first completion of an
        # order is found across buckets (`_Totals`), which add its fixed quantities when merged
        carried = good["order_id"].isna().to_numpy() if "order_id" in good.columns else np.ones(len(good), bool)
        demand = consumption.completion_demand(good, carried)
        orders = consumption.first_of_orders(good)  # none without order_id (no fixed line)
        self.windows.receipts[:] = 0.0
        self.windows.usage[:] = 0.0
        self.windows.parents.take()
        self.windows.add_completions(good.assign(orders=carried.astype("float64")), self.catalog.requirements)
        touched = np.flatnonzero((self.windows.receipts != 0) | (self.windows.usage != 0))
        keys = self.catalog.keys.iloc[self.reported:]
        self.reported = len(self.catalog.keys)
        new = keys["key"]
        requirements, errors = self.catalog.requirements, self.catalog.errors
        return _Partial(
            pid=os.getpid(), summary=batch.summary(), fingerprints=fingerprints,
            watermark=None if pd.isna(watermark) else watermark, demand=demand, explode_rejects=rejects,
            new_keys=keys.reset_index(drop=True), new_requirements=requirements[requirements["key"].isin(new)],
            new_errors=errors[errors["key"].isin(new)], touched=touched,
            receipts=self.windows.receipts[touched].copy(), usage=self.windows.usage[touched].copy(),
            orders=orders, parents=self.windows.parents.take(),
            events=self.windows.take_events() if self.windows.collecting is not None else None,
        )


@dataclass
class _Totals:
    """The merge of partials, in bucket order."""

    catalog: consumption.ExplosionCatalog
    windows: stock_windows.CountWindows
    summary: CompletionSummary = field(default_factory=CompletionSummary)
    demand: _DemandSums = field(default_factory=lambda: _DemandSums())
    rejects: list[pd.DataFrame] = field(default_factory=list)
    fingerprints: list[pd.DataFrame] = field(default_factory=list)
    watermark: pd.Timestamp | None = None
    renumber: dict[int, np.ndarray] = field(default_factory=dict)
    locations: pd.Index = field(default_factory=lambda: pd.Index([], dtype="object"))
    orders: list[pd.DataFrame] = field(default_factory=list)  # first completions of orders (run's keys)
    order_rows: int = 0

    def add(self, part: _Partial) -> None:
        mapping = self.catalog.adopt(part.new_keys, part.new_requirements, part.new_errors)
        known = self.renumber.get(part.pid, np.zeros(0, dtype="int64"))
        if len(mapping) > len(known):
            known = np.concatenate([known, np.full(len(mapping) - len(known), -1, dtype="int64")])
        given = mapping >= 0
        known[: len(mapping)][given] = mapping[given]
        self.renumber[part.pid] = known
        if not part.demand.empty:
            self._add_demand(part.demand, known)
        if not part.orders.empty:
            self._add_orders(part.orders.assign(key=known[part.orders["key"].to_numpy(dtype="int64")]))
        self.summary.add(part.summary)
        if not part.explode_rejects.empty:
            self.rejects.append(part.explode_rejects)
        if not part.fingerprints.empty:
            self.fingerprints.append(part.fingerprints)
        if part.watermark is not None and (self.watermark is None or part.watermark > self.watermark):
            self.watermark = part.watermark
        self.windows.add(part.touched, part.receipts, part.usage, part.parents)
        if part.events is not None:
            self.windows.add_events(part.events)

    def _add_demand(self, demand: pd.DataFrame, renumber: np.ndarray) -> None:
        """A bucket's demand, as integer codes only: the key (which names plant and item), the day,
        the location (a code into `self.locations`): a third of the memory of the strings."""
        codes, values = pd.factorize(demand["location_id"])
        known = self.locations.get_indexer(values)
        if (known < 0).any():
            self.locations = self.locations.append(pd.Index(values[known < 0]))
            known = self.locations.get_indexer(values)
        self.demand.add(renumber[demand["key"].to_numpy(dtype="int64")],
                        demand["business_date"].to_numpy(dtype="datetime64[ns]").view("int64"),
                        known[codes].astype("int64"), {c: demand[c].to_numpy() for c in _DEMAND_SUMS})

    def _add_orders(self, orders: pd.DataFrame) -> None:
        """A bucket's first completion of each order; reduced to one per order when many gathered."""
        self.orders.append(orders)
        self.order_rows += len(orders)
        if self.order_rows > ORDER_COMPACT_ROWS:
            self.orders = [consumption.first_of_orders(pd.concat(self.orders, ignore_index=True))]
            self.order_rows = len(self.orders[0])

    def _carry_orders(self) -> pd.DataFrame:
        """The first completion of every order over all buckets carries the order's fixed
        quantities: one order more in its demand row, its fixed flows in the count windows at its
        time; the fingerprint parts of the orders whose first completion needs a fixed quantity."""
        if not self.orders:
            return pd.DataFrame()
        firsts = consumption.first_of_orders(pd.concat(self.orders, ignore_index=True))
        self.orders, self.order_rows = [], 0
        if firsts.empty:
            return pd.DataFrame()
        zeros = np.zeros(len(firsts))
        rows = firsts.assign(qty_good=zeros, qty_scrap=zeros, qty=zeros, completions=zeros.astype("int64"),
                             orders=np.ones(len(firsts), dtype="int64"))
        self._add_demand(rows, np.arange(int(firsts["key"].max()) + 1, dtype="int64"))
        requirements = self.catalog.requirements
        self.windows.add_completions(rows.assign(orders=1.0), requirements)
        fixed_keys = requirements.loc[requirements["qty_per_order"] != 0, "key"].unique()
        return late_data.fingerprint_parts("orders", firsts[firsts["key"].isin(fixed_keys)])

    def _decoded(self) -> pd.DataFrame:
        """The demand frame (`consumption.completion_demand`) of the summed codes, in its key order
        (DEMAND_KEYS, then key), found by sorting integer ranks rather than strings."""
        key, day, location, sums = self.demand.summed()
        keys = self.catalog.keys.set_index("key").reindex(np.arange(int(key.max()) + 1 if len(key) else 0))
        plant_rank = pd.factorize(keys["plant_id"], sort=True)[0]
        item_rank = pd.factorize(keys["item_id"], sort=True)[0]
        location_rank = np.argsort(np.argsort(self.locations.to_numpy(dtype=object), kind="stable"))
        order = np.lexsort((key, item_rank[key], location_rank[location], day, plant_rank[key]))
        key, location = key[order], location[order]
        empty = consumption.empty_demand()
        text = {c: empty[c].dtype for c in ("plant_id", "location_id", "item_id")}
        demand = pd.DataFrame({  # strings taken as stored (no Python object per row)
            "plant_id": keys["plant_id"].astype(text["plant_id"]).array.take(key),
            "business_date": day[order].view("datetime64[ns]"),
            "location_id": pd.array(self.locations, dtype=text["location_id"]).take(location),
            "item_id": keys["item_id"].astype(text["item_id"]).array.take(key),
            "key": key,
            **{c: sums[c][order] for c in _DEMAND_SUMS},
        })
        return demand

    def result(self, buckets: int) -> CompletionTotals:
        order_parts = self._carry_orders()
        if not order_parts.empty:
            self.fingerprints.append(order_parts)
        demand = self._decoded() if self.demand.rows else consumption.empty_demand()
        self.demand = _DemandSums()
        fingerprints = pd.concat(self.fingerprints, ignore_index=True) if self.fingerprints else pd.DataFrame()
        rejects = pd.concat(self.rejects, ignore_index=True) if self.rejects else empty_quarantine()
        return CompletionTotals(
            demand=demand.reset_index(drop=True), requirements=self.catalog.requirements,
            errors=self.catalog.errors, explode_rejects=rejects, fingerprints=fingerprints, windows=self.windows,
            summary=self.summary, watermark=self.watermark, buckets=buckets,
        )


_SLOT = 2**31  # a demand code is key x _SLOT + slot, a slot a (day, location) pair's number


_DAY_NS = 86_400 * 10**9


class _DemandSums:
    """Demand summed per (key, day, location) as bucket partials arrive, in memory that follows the
    distinct keys: sorted integer codes with one array per sum, merged with the rows not yet summed
    whenever those reach half as many (or a million). Every sum is added in bucket order, so the
    result depends on the partials alone, not on timing or the number of workers.
    """

    MERGE_ROWS = 1_000_000  # pending rows merged at the latest when they are this many

    def __init__(self) -> None:
        self.codes = np.zeros(0, dtype="int64")  # sorted, unique
        self.sums: dict[str, np.ndarray] = {}
        self.slots = pd.Index([], dtype="int64")  # day (days since 1970) x 2**32 + location code
        self.pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.pending_rows = 0

    @property
    def rows(self) -> int:
        return len(self.codes) + self.pending_rows

    def add(self, key: np.ndarray, day: np.ndarray, location: np.ndarray, sums: dict[str, np.ndarray]) -> None:
        """Rows of demand: key (the run's numbering), day (datetime64[ns] as int64), location code."""
        slot_keys = (day // _DAY_NS) * 2**32 + location
        slot = self.slots.get_indexer(slot_keys)
        if (slot < 0).any():
            self.slots = self.slots.append(pd.Index(pd.unique(slot_keys[slot < 0])))
            slot = self.slots.get_indexer(slot_keys)
        self.pending.append((key * _SLOT + slot, sums))
        self.pending_rows += len(key)
        if self.pending_rows > max(len(self.codes) // 2, self.MERGE_ROWS):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        codes = np.concatenate([c for c, _ in self.pending])
        order = np.argsort(codes, kind="stable")  # stable: a code's rows stay in bucket order
        ordered = codes[order]
        del codes
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        new = ordered[starts]
        del ordered
        sums = {c: np.add.reduceat(np.concatenate([p[c] for _, p in self.pending])[order], starts)
                for c in self.pending[0][1]}
        self.pending, self.pending_rows = [], 0
        if not self.sums:
            self.sums = {c: v[:0] for c, v in sums.items()}
        at = np.searchsorted(self.codes, new)
        found = at < len(self.codes)
        found[found] = self.codes[at[found]] == new[found]
        for c, values in sums.items():
            self.sums[c][at[found]] += values[found]
        if not found.all():
            fresh = ~found
            self.codes = np.insert(self.codes, at[fresh], new[fresh])
            for c, values in sums.items():
                self.sums[c] = np.insert(self.sums[c], at[fresh], values[fresh])

    def summed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(key, day as datetime64[ns] int64, location code, sums) per distinct (key, day, location)."""
        self._merge()
        slot_keys = self.slots.to_numpy()[self.codes % _SLOT]
        return self.codes // _SLOT, (slot_keys // 2**32) * _DAY_NS, slot_keys % 2**32, self.sums


def summarise_accepted(
    completions: pd.DataFrame, catalog: consumption.ExplosionCatalog, windows: stock_windows.CountWindows
) -> CompletionTotals:
    """The totals of completions accepted already (`sources.load_inputs`), in one bucket; the
    summary is empty: the inputs hold their rejects and counts."""
    digester = _Digester(None, catalog, stock_windows.CountWindows.like(windows))  # type: ignore[arg-type]
    totals = _Totals(catalog=catalog, windows=windows)
    totals.add(digester.digest_batch(CompletionBatch(accepted=completions, quarantine=empty_quarantine(), read=0,
                                                     superseded=0)))
    totals.summary = CompletionSummary()
    return totals.result(1)


def _digest_all(
    spilled: list[list[tuple[str, Path]]], acceptor: CompletionAcceptor, catalog: consumption.ExplosionCatalog,
    windows: stock_windows.CountWindows, workers: int, *, large: bool = False,
) -> Generator[_Partial, None, None]:
    """Each bucket's partial, in bucket order (on forked workers when there are several)."""
    work = [files for files in spilled if files]
    shared = {"acceptor": acceptor, "catalog": catalog.empty_copy(), "windows": stock_windows.CountWindows.like(windows),
              "digesters": {}, "large": large}
    return workers_.forked_map(_digest_bucket, work, workers=workers, shared=shared)


def _digest_bucket(shared: Mapping[str, Any], files: list[tuple[str, Path]]) -> _Partial:
    """One bucket's partial, by this process's digester (its catalog grows bucket after bucket)."""
    digesters: dict[int, _Digester] = shared["digesters"]  # a forked worker has its own copy of the dict
    digester = digesters.get(os.getpid())
    if digester is None:
        digester = digesters[os.getpid()] = _Digester(shared["acceptor"], shared["catalog"], shared["windows"])
    partial = digester.digest(bucket_frames(files))
    if shared["large"]:  # what the bucket's rows took goes back before the next bucket's are read
        workers_.give_back_memory()
    return partial


def summarise(spiller: Spiller, acceptor: CompletionAcceptor, catalog: consumption.ExplosionCatalog,
              windows: stock_windows.CountWindows) -> CompletionTotals:
    """Every completion accepted, exploded and summed, a bucket at a time, in bucket order."""
    totals = _Totals(catalog=catalog, windows=windows)
    if spiller.buckets == 1:
        digester = _Digester(acceptor, catalog, stock_windows.CountWindows.like(windows))
        totals.add(digester.digest([(f.source, f.read()) for f in spiller.files]))
        return totals.result(1)
    with contextlib.closing(_digest_all(spiller.spilled(), acceptor, catalog, windows, spiller.workers,
                                        large=spiller.large)) as parts:
        for part in parts:
            totals.add(part)
    return totals.result(spiller.buckets)

