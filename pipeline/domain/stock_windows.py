"""Count windows: the flows of each (previous count, count] window, summed as completions and movements stream past.

Book stock at a count is the previous count plus every flow in between: movements, production
and by-product receipts, minus theoretical usage when the item is backflushed. Each flow finds
its count's window by binary search on integer codes and is summed into it, so the cost follows
the flows of counted stock keys, with no sort and no join of them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STOCK_KEY = ["plant_id", "location_id", "item_id"]


def with_previous_count(counts: pd.DataFrame) -> pd.DataFrame:
    """Each count with the time, quantity and business date of the count before it at the same
    (plant, location, item)."""
    ordered = counts.sort_values(STOCK_KEY + ["counted_at", "count_id"], kind="stable").reset_index(drop=True)
    previous = ordered.groupby(STOCK_KEY, sort=False)[["count_id", "counted_at", "counted_qty",
                                                       "business_date"]].shift(1)
    return ordered.assign(previous_count_id=previous["count_id"], previous_counted_at=previous["counted_at"],
                          opening_qty=previous["counted_qty"],
                          previous_count_date=previous["business_date"].astype("datetime64[ns]"))


EVENT_MOVEMENT, EVENT_RECEIPT, EVENT_BY_PRODUCT, EVENT_USAGE = 0, 1, 2, 3


EVENT_KINDS = np.array(["movement", "receipt", "by_product", "usage"], dtype=object)


_CHUNK_ROWS = 100_000  # completions expanded into component flows at a time: bounds the transient memory


class CountWindows:
    """Movements, receipts and theoretical usage within each count's window (previous count, count].

    counts: plant_id, location_id, item_id, counted_at, previous_counted_at (NaT: no window), and
    count_id. Completions are added any number of times (a bucket at a time: the sums are
    additive), then `sums` gives the totals per count.

    Every flow is an event (stock key, time, quantity): a completion's receipt of its item, each
    component it uses or gives off as a by-product, a movement. An event belongs to the window of
    the first count of its stock key at or after its time, if the event is after that count's
    previous count; windows of one stock key never overlap, so each event lands in at most one and
    the sums are one `bincount`. Only stock keys that are counted produce events at all.

    With `collect_events`, the events of chosen windows are also kept one by one (`events`), for
    the running book stock of `stock_exceptions`: window, time, signed stock effect, kind, source id.
    """

    def __init__(self, counts: pd.DataFrame, items: pd.DataFrame) -> None:
        # as stored (Arrow strings), not a Python object per count
        self.count_ids = counts["count_id"].array if "count_id" in counts.columns else np.arange(len(counts))
        n = len(counts)
        self.receipts = np.zeros(n)
        self.usage = np.zeros(n)
        self.moved = np.zeros(n)
        self._requirements_of: pd.DataFrame | None = None
        self._requirements: tuple[np.ndarray, ...] = (np.zeros(0, dtype="int64"),) * 7
        self.parents = ParentFlows()
        has_window = counts["previous_counted_at"].notna().to_numpy()
        self.finder = _WindowFinder(counts, has_window, items) if has_window.any() else None
        self.collecting: np.ndarray | None = None  # per count: are its window's events kept
        self._events: list[pd.DataFrame] = []

    def collect_events(self, chosen: np.ndarray) -> None:
        """Keep the events of the windows of these counts (a mask over `counts`) from now on."""
        self.collecting = np.asarray(chosen, dtype=bool)
        self._events = []

    def _record(self, window: np.ndarray, at: np.ndarray, qty: np.ndarray, kind: np.ndarray | int,
                source: pd.Series) -> None:
        """Events of chosen windows kept: window (-1: none), time (us), signed stock effect, kind, source id."""
        if self.collecting is None:
            return
        hit = np.flatnonzero(window >= 0)
        hit = hit[self.collecting[window[hit]]]
        if not len(hit):
            return
        kinds = np.broadcast_to(np.asarray(kind, dtype="int8"), window.shape)
        self._events.append(pd.DataFrame({
            "window": window[hit], "at": at[hit], "qty": qty[hit], "kind": kinds[hit],
            "source": source.array.take(hit),  # as stored (Arrow strings), not a Python object per event
        }))

    def events(self) -> pd.DataFrame:
        """The kept events so far (`_record`'s columns), in the order they were added."""
        if not self._events:
            return empty_events()
        if len(self._events) > 1:
            self._events = [pd.concat(self._events, ignore_index=True)]
        return self._events[0]

    def take_events(self) -> pd.DataFrame:
        """The kept events, let go of here (a bucket's, sent with its partial)."""
        out = self.events()
        self._events = []
        return out

    def add_events(self, events: pd.DataFrame) -> None:
        """Events kept by another `CountWindows` of the same counts (another process's)."""
        if not events.empty:
            self._events.append(events)

    @classmethod
    def like(cls, other: CountWindows) -> CountWindows:
        """Empty windows of the same counts (sums made in another process add to `other`)."""
        copy = object.__new__(cls)
        copy.count_ids, copy.finder = other.count_ids, other.finder
        copy.receipts, copy.usage = np.zeros(len(other.receipts)), np.zeros(len(other.usage))
        copy.moved = np.zeros(len(other.moved))
        copy._requirements_of, copy._requirements = None, other._requirements
        copy.collecting, copy._events = other.collecting, []
        copy.parents = ParentFlows()
        return copy

    def add_completions(self, completions: pd.DataFrame, requirements: pd.DataFrame) -> None:
        """completions: plant_id, location_id, item_id, completed_at, qty_good, qty_scrap, key, of
        completions whose BOM exploded, and optionally `orders` (1 where the completion carries its
        order's fixed quantities, which flow at its time; default 0); requirements: key,
        component_item_id, qty_per_unit, qty_per_order (optional)."""
        finder = self.finder
        if finder is None or completions.empty:
            return
        at = finder.place_codes(completions["plant_id"], completions["location_id"])
        keep = at >= 0
        completions, at = completions[keep], at[keep]
        times = micros(completions["completed_at"])
        received = finder.windows_of(finder.stock_codes(at, finder.item_codes(completions["item_id"])), times)
        good = completions["qty_good"].to_numpy(dtype="float64")
        self.receipts += finder.sums(received, good)
        ids = completions["completion_id"] if self.collecting is not None else None
        if ids is not None:
            self._record(received, times, good, EVENT_RECEIPT, ids)

        first_line, lines, req_component, req_qpu, req_qpo, req_used, req_share = \
            self._counted_requirements(requirements)
        parent = finder.item_codes(completions["item_id"])
        keys = completions["key"].to_numpy(dtype="int64")
        known = (keys >= 0) & (keys < len(lines))
        qty = (completions["qty_good"] + completions["qty_scrap"]).to_numpy(dtype="float64")
        orders = completions["orders"].to_numpy(dtype="float64") if "orders" in completions.columns \
            else np.zeros(len(completions))
        for start in range(0, len(completions), _CHUNK_ROWS):
            part = slice(start, start + _CHUNK_ROWS)
            key = np.where(known[part], keys[part], 0)
            first, width = first_line[key], np.where(known[part], lines[key], 0)
            row = np.repeat(np.arange(len(first)), width)
            line = np.repeat(first - np.cumsum(width) + width, width) + np.arange(int(width.sum()))
            stock = finder.stock_codes(at[part][row], req_component[line])
            counted = np.flatnonzero(stock >= 0)  # only stock keys counted at the completion's place
            row, line = row[counted], line[counted]
            window = finder.windows_of(stock[counted], times[part][row])
            flow = qty[part][row] * req_qpu[line] + orders[part][row] * req_qpo[line]
            used = req_used[line]
            self.usage += finder.sums(window, np.where(used, flow, 0.0))
            self.receipts += finder.sums(window, np.where(used, 0.0, -flow))
            if ids is not None:
                self._record(window, times[part][row], -flow, np.where(used, EVENT_USAGE, EVENT_BY_PRODUCT),
                             ids.iloc[start:start + _CHUNK_ROWS].iloc[row])
            # per (window, parent item): the units made and the usage they drew (BOM-line suggestions)
            made = (window >= 0) & used & (parent[part][row] >= 0)
            self.parents.add(window[made], parent[part][row][made], qty[part][row][made] * req_share[line][made],
                             (qty[part][row] * req_qpu[line])[made], (orders[part][row] * req_qpo[line])[made])

    def _counted_requirements(self, requirements: pd.DataFrame) -> tuple[np.ndarray, ...]:
        """Per key code, its first line and number of lines; per line, its component code and
        qty_per_unit, qty_per_order and whether it is consumed (`consumption.consumed`): the
        requirements of components counted somewhere, kept while the same
        requirements frame comes again (bucket after bucket)."""
        if self._requirements_of is not requirements:
            finder = self.finder
            assert finder is not None
            req = requirements.assign(component=finder.item_codes(requirements["component_item_id"]))
            req = req[req["component"] >= 0].sort_values("key", kind="stable")
            keys = req["key"].to_numpy(dtype="int64")
            size = int(requirements["key"].max()) + 1 if len(requirements) else 0
            first = np.searchsorted(keys, np.arange(size), side="left")
            self._requirements_of = requirements
            per_order = req["qty_per_order"].to_numpy(dtype="float64") if "qty_per_order" in req.columns \
                else np.zeros(len(req))
            qpu = req["qty_per_unit"].to_numpy(dtype="float64")
            used = (qpu > 0) | ((qpu == 0) & (per_order > 0))  # as consumption.consumed
            # a key with two used lines of one component (two phantom paths) makes its units once
            lines_of = pd.Series(used.astype("int64")).groupby(
                [req["key"].to_numpy(), req["component"].to_numpy()]).transform("sum").to_numpy()
            share = np.where(used, 1.0 / np.maximum(lines_of, 1), 0.0)
            self._requirements = (first, np.searchsorted(keys, np.arange(size), side="right") - first,
                                  req["component"].to_numpy(dtype="int64"), req["qty_per_unit"].to_numpy(dtype="float64"),
                                  per_order, used, share)
        return self._requirements

    def add(self, counts: np.ndarray, receipts: np.ndarray, usage: np.ndarray,
            parents: tuple[np.ndarray, ...] | None = None) -> None:
        """Add sums made by another `CountWindows` of the same counts (another process's), given
        for some counts (positions in `counts`) only; parents: its `ParentFlows.take()`."""
        np.add.at(self.receipts, counts, receipts)
        np.add.at(self.usage, counts, usage)
        if parents is not None:
            self.parents.add(*parents)

    def parent_flows(self) -> pd.DataFrame:
        """count_id, parent_item_id, units (qty_good + qty_scrap of the parent made at the count's
        place in its window, whose explosion uses the counted item), unit_usage (their per-unit
        usage of it), order_usage (fixed quantities per order): one row per (count, parent)."""
        window, parent, units, unit_usage, order_usage = self.parents.summed()
        items = self.finder.items if self.finder is not None else pd.Index([], dtype="object")
        return pd.DataFrame({
            "count_id": pd.Series(self.count_ids).take(window).to_numpy() if len(window) else
            pd.Series([], dtype="str"),
            "parent_item_id": np.asarray(items, dtype=object)[parent] if len(parent) else pd.Series([], dtype="str"),
            "units": units, "unit_usage": unit_usage, "order_usage": order_usage})

    def add_movements(self, movements: pd.DataFrame) -> None:
        """movements: plant_id, location_id, item_id, moved_at, qty (accepted, in base units)."""
        if self.finder is not None and not movements.empty:
            window = self.finder.locate(movements["plant_id"], movements["location_id"], movements["item_id"],
                                        movements["moved_at"])
            qty = movements["qty"].to_numpy(dtype="float64")
            self.moved += self.finder.sums(window, qty)
            if self.collecting is not None:
                self._record(window, micros(movements["moved_at"]), qty, EVENT_MOVEMENT, movements["movement_id"])

    def sums(self) -> pd.DataFrame:
        """count_id, movements_qty, receipts_qty, usage_qty (0 where a count has no window)."""
        return pd.DataFrame({"count_id": self.count_ids, "movements_qty": self.moved, "receipts_qty": self.receipts,
                             "usage_qty": self.usage})


_PARENT_COMPACT_ROWS = 2_000_000  # gathered (window, parent) rows before they are summed again


class ParentFlows:
    """Sums per (count window, parent item code): units made, per-unit usage, per-order usage."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.rows = 0

    def add(self, window: np.ndarray, parent: np.ndarray, units: np.ndarray, unit_usage: np.ndarray,
            order_usage: np.ndarray) -> None:
        if not len(window):
            return
        self.parts.append(_summed_by_pair(window, parent, units, unit_usage, order_usage))
        self.rows += len(self.parts[-1][0])
        if self.rows > _PARENT_COMPACT_ROWS and len(self.parts) > 1:
            self.parts = [self.summed()]
            self.rows = len(self.parts[0][0])

    def summed(self) -> tuple[np.ndarray, ...]:
        if not self.parts:
            return (np.zeros(0, dtype="int64"),) * 2 + (np.zeros(0),) * 3
        both = [np.concatenate([p[i] for p in self.parts]) for i in range(5)]
        return _summed_by_pair(*both)

    def take(self) -> tuple[np.ndarray, ...]:
        """The sums, and an empty start (a bucket's partial, sent to the merging process)."""
        out = self.summed()
        self.parts, self.rows = [], 0
        return out


def _summed_by_pair(window: np.ndarray, parent: np.ndarray, *values: np.ndarray) -> tuple[np.ndarray, ...]:
    pair = window.astype("int64") * (2**31) + parent.astype("int64")
    unique, inverse = np.unique(pair, return_inverse=True)
    sums = [np.bincount(inverse, weights=v, minlength=len(unique)) for v in values]
    return (unique // (2**31), unique % (2**31), *sums)


def window_flows(
    counts: pd.DataFrame, completions: pd.DataFrame, requirements: pd.DataFrame, movements: pd.DataFrame,
    items: pd.DataFrame,
) -> pd.DataFrame:
    """movements_qty, receipts_qty, usage_qty of each count's window, aligned with `counts` (see
    `CountWindows`; completions whose BOM exploded, with their key)."""
    windows = CountWindows(counts.reset_index(drop=True).drop(columns="count_id", errors="ignore"), items)
    if "orders" not in completions.columns and "completion_id" in completions.columns:
        from pipeline.domain.consumption import carries_order

        completions = completions.assign(orders=carries_order(completions).astype("float64"))
    windows.add_completions(completions, requirements)
    windows.add_movements(movements)
    return windows.sums().drop(columns="count_id")


def count_windows(stock_counts: pd.DataFrame, items: pd.DataFrame,
                  events_from: pd.Timestamp | None = None) -> CountWindows:
    """Empty windows of every count of `stock_counts` (accepted counts, in any order), keeping the
    events of the windows of counts dated on or after `events_from` (every count: None), which are
    the only ones a run can recompute (`stock_exceptions`)."""
    needed = ["count_id", *STOCK_KEY, "counted_at", "counted_qty", "business_date"]
    counts = with_previous_count(stock_counts[needed])
    windows = CountWindows(counts, items)
    dated = counts["business_date"]
    windows.collect_events(np.ones(len(counts), dtype=bool) if events_from is None
                           else (dated >= events_from).to_numpy(dtype=bool))
    return windows


_DENSE_MAX = 20_000_000  # (place x item) grid cells for a direct stock-key lookup table (160 MB)


_CELLS_MAX = 4_000_000  # (stock key x time cell) entries of the window search table (32 MB)


class _WindowFinder:
    """Finds the count window of (place, item, time) events with integer codes and a table.

    Windows are held in (stock key, end) order. A table gives, per stock key and time cell (the
    counts' time span cut into equal cells), the first window of the key ending at or after the
    cell's start; an event steps from there past the windows that end before it, of which a cell
    holds few: a lookup and a step or two per event, not a binary search over every window.
    """

    def __init__(self, counts: pd.DataFrame, has_window: np.ndarray, items: pd.DataFrame) -> None:
        self.n = len(counts)
        self.items = pd.Index(pd.unique(pd.concat([items["item_id"], counts["item_id"]]).to_numpy(dtype=object)))
        places = pd.MultiIndex.from_arrays([counts["plant_id"], counts["location_id"]])
        self.places = places.unique()
        place = self.places.get_indexer(places)
        item = self.item_codes(counts["item_id"])
        stock = place.astype("int64") * len(self.items) + item
        self.stock_keys, stock_code = np.unique(stock, return_inverse=True)
        # stock key -> its index, by direct lookup when the (place x item) grid is small enough
        size = len(self.places) * len(self.items)
        self.dense = np.full(size, -1, dtype="int64") if size <= _DENSE_MAX else None
        if self.dense is not None:
            self.dense[self.stock_keys] = np.arange(len(self.stock_keys))
        window = np.flatnonzero(has_window)
        closes = micros(counts["counted_at"])[window]
        opens = micros(counts["previous_counted_at"].iloc[window])
        order = np.lexsort((closes, stock_code[window]))
        self.window, self.closes, self.opens = window[order], closes[order], opens[order]
        window_stock = stock_code[window][order].astype("int64")
        keys = len(self.stock_keys)
        self.last = np.searchsorted(window_stock, np.arange(keys), side="right")  # past each key's windows
        self.start = int(self.closes.min())
        self.cells = int(np.clip(_CELLS_MAX // max(keys, 1), 1, 4096))
        self.cell = max(1, -(-(int(self.closes.max()) - self.start + 1) // self.cells))
        cell_starts = self.start + self.cell * np.arange(self.cells, dtype="int64")
        # a window ends at or after the start of cell c iff c < (cell starts at or before its end)
        reached = np.searchsorted(cell_starts, self.closes, side="right")
        composite = window_stock * (self.cells + 1) + reached
        probe = (np.arange(keys, dtype="int64")[:, None] * (self.cells + 1) + np.arange(1, self.cells + 1)).ravel()
        self.table = np.searchsorted(composite, probe, side="left").astype("int64")

    def item_codes(self, item_ids: pd.Series) -> np.ndarray:
        """Position of each item in `self.items` (-1: none); hashes each distinct value once."""
        codes, distinct = pd.factorize(item_ids)
        found = self.items.get_indexer(np.asarray(distinct, dtype=object)).astype("int64")
        return np.where(codes >= 0, found[codes], -1)

    def place_codes(self, plant_ids: pd.Series, location_ids: pd.Series) -> np.ndarray:
        """Position of each (plant, location) in `self.places` (-1: none counted there)."""
        plant, plants = pd.factorize(plant_ids)
        location, locations = pd.factorize(location_ids)
        grid = self.places.get_indexer(pd.MultiIndex.from_product(
            [np.asarray(plants, dtype=object), np.asarray(locations, dtype=object)])).astype("int64")
        return np.where((plant >= 0) & (location >= 0), grid[plant.astype("int64") * len(locations) + location], -1)

    def stock_codes(self, place: np.ndarray, item: np.ndarray) -> np.ndarray:
        """The counted stock key of each (place, item) code pair (-1: never counted)."""
        valid = (place >= 0) & (item >= 0)
        stock = np.where(valid, place * len(self.items) + item, 0)
        if self.dense is not None:
            return np.where(valid, self.dense[stock], -1)
        pos = np.minimum(np.searchsorted(self.stock_keys, stock), len(self.stock_keys) - 1)
        return np.where(valid & (self.stock_keys[pos] == stock), pos, -1)

    def locate(self, plant_ids: pd.Series, location_ids: pd.Series, item_ids: pd.Series, at: pd.Series) -> np.ndarray:
        stock = self.stock_codes(self.place_codes(plant_ids, location_ids), self.item_codes(item_ids))
        return self.windows_of(stock, micros(at))

    def windows_of(self, stock: np.ndarray, times: np.ndarray) -> np.ndarray:
        """The count (row of `counts`) whose window holds each event, -1 for none."""
        out = np.full(len(stock), -1, dtype="int64")
        hit = np.flatnonzero(stock >= 0)
        if not len(hit):
            return out
        key, at = stock[hit], times[hit]
        cell = np.clip((at - self.start) // self.cell, 0, self.cells - 1)
        found, last = self.table[key * self.cells + cell], self.last[key]
        behind = np.flatnonzero((found < last) & (self.closes[np.minimum(found, len(self.closes) - 1)] < at))
        while len(behind):  # past the windows of the key that end in the event's cell before it
            found[behind] += 1
            step = behind[found[behind] < last[behind]]
            behind = step[self.closes[found[step]] < at[step]]
        inside = found < last
        inside[inside] = at[inside] > self.opens[found[inside]]
        out[hit[inside]] = self.window[found[inside]]
        return out

    def sums(self, window: np.ndarray, values: np.ndarray) -> np.ndarray:
        hit = window >= 0
        return np.bincount(window[hit], weights=values[hit], minlength=self.n)


def micros(stamps: pd.Series) -> np.ndarray:
    """Timestamps as integer microseconds since the epoch, UTC (comparable across frames of any unit)."""
    return np.asarray(pd.DatetimeIndex(stamps).as_unit("us").asi8, dtype="int64")


def empty_events() -> pd.DataFrame:
    return pd.DataFrame({"window": np.zeros(0, dtype="int64"), "at": np.zeros(0, dtype="int64"),
                         "qty": np.zeros(0), "kind": np.zeros(0, dtype="int8"),
                         "source": pd.Series([], dtype="str")})
