"""Book stock and variance per stock count, late-data detection, and BOM accuracy.

Book stock at a count is the previous count plus every flow in between: movements, production
and by-product receipts, minus theoretical usage when the item is backflushed. Each flow finds
its count's window by binary search on integer codes and is summed into it, so the cost follows
the flows of counted stock keys, with no sort and no join of them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import schemas
from pipeline.config import Config, Tolerances
from pipeline.costs import costs_in_force
from pipeline.rounding import round_half_away
from pipeline.sources import Inputs, business_dates, plant_timezones

STOCK_KEY = ["plant_id", "location_id", "item_id"]


@dataclass(frozen=True)
class CountScope:
    """The counts whose variance a run recomputes, and the (plant, count_date) partitions they fill."""

    counts: pd.DataFrame
    scope: pd.DataFrame


# ------------------------------------------------------------------ late data (semantics 6)

_FINGERPRINT_COLUMNS = {
    "completions": ["completion_id", "location_id", "item_id", "qty_good", "qty_scrap", "completed_at",
                    "recorded_at"],
    "movements": ["movement_id", "location_id", "item_id", "qty", "moved_at"],
    # a count that arrives late is late data too: its own row, and the window of the count after it
    "stock_counts": ["count_id", "location_id", "item_id", "counted_qty", "counted_at"],
}


# not an input table: the orders whose fixed quantities a date carries (issue 16.3), so that a date
# that gains or loses the first completion of an order is late data though its own rows are the same
_ORDER_FINGERPRINT_COLUMNS = ["order_id", "item_id", "completion_id"]


def fingerprint_parts(table: str, rows: pd.DataFrame) -> pd.DataFrame:
    """The parts of the fingerprints of one table's rows: per (plant, business date) the row count
    and the sums of the rows' hash halves. Parts of disjoint row sets add up (`input_fingerprints`).
    table "orders": the first completions of orders that carry fixed quantities."""
    columns = _ORDER_FINGERPRINT_COLUMNS if table == "orders" else _FINGERPRINT_COLUMNS[table]
    hashed = pd.util.hash_pandas_object(rows[columns], index=False).to_numpy(dtype="uint64")
    frame = pd.DataFrame({"plant_id": rows["plant_id"].to_numpy(),
                          "business_date": rows["business_date"].to_numpy(),
                          "hi": (hashed >> np.uint64(32)).astype("int64"),
                          "lo": (hashed & np.uint64(0xFFFFFFFF)).astype("int64")})
    return frame.groupby(["plant_id", "business_date"], as_index=False).agg(
        hi=("hi", "sum"), lo=("lo", "sum"), rows=("hi", "size"))


def input_fingerprints(inputs: Inputs, plants: list[str], parts: list[pd.DataFrame] | None = None) -> pd.DataFrame:
    """An order-independent hash (a string) of the completions, movements and stock counts of each
    (plant, business date).

    Each row's 64-bit hash is split into two 32-bit halves that are summed exactly (no float, no
    overflow), so any changed, added or removed row changes the fingerprint. parts: more
    `fingerprint_parts` (of completions that were streamed rather than kept in `inputs`).
    """
    parts = list(parts or [])
    for table in _FINGERPRINT_COLUMNS:
        parts.append(fingerprint_parts(table, getattr(inputs, table)))
    both = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if not both.empty:
        both = both[both["plant_id"].isin(plants)]
    if both.empty:
        return pd.DataFrame({"plant_id": pd.Series([], dtype="str"),
                             "business_date": pd.Series([], dtype="datetime64[ns]"),
                             "fingerprint": pd.Series([], dtype="str")})
    out = both.groupby(["plant_id", "business_date"], as_index=False).agg(
        hi=("hi", "sum"), lo=("lo", "sum"), rows=("rows", "sum"))
    out["fingerprint"] = (out["rows"].astype("str") + ":" + out["hi"].astype("str") + ":"
                          + out["lo"].astype("str"))
    return out.drop(columns=["hi", "lo", "rows"])


NO_ROWS = "<none>"  # the fingerprint of a (plant, date) without input rows


def recorded_fingerprints(history: pd.DataFrame, window: list[pd.Timestamp] | None = None) -> pd.DataFrame:
    """The reference fingerprint of each (plant, business date) that late data is judged against.

    It is what the date's inputs were when a successful run last *processed* it (a run records
    the fingerprints of every date of its plants, but only those in its `business_dates` were
    recomputed: a change that a run merely saw is still pending). A date no run ever processed
    is judged against the plant's first run: what existed before the pipeline started is not
    late, what arrived after it is. `window`: only these dates are needed.
    """
    ok = history[history["status"] == "ok"].sort_values("started_at", kind="stable")
    wanted = None if window is None else {d.date() for d in window}
    first_seen: dict[tuple[str, dt.date], str] = {}
    processed: dict[tuple[str, dt.date], str] = {}
    started: set[str] = set()
    # one iteration per run, not per data row; a run's JSON is parsed only when it matters
    for plants, dates, text in zip(ok["plants"], ok["business_dates"], ok["input_fingerprints"], strict=True):
        run_plants = [str(p) for p in _as_list(plants)]
        new_plants = [p for p in run_plants if p not in started]
        run_dates = [d for d in map(_as_date, _as_list(dates)) if wanted is None or d in wanted]
        if not new_plants and not run_dates:
            continue
        recorded = json.loads(text) if isinstance(text, str) and text else {}
        for key, value in recorded.items():
            plant, date = key.rsplit("|", 1)
            day = dt.date.fromisoformat(date)
            if plant in new_plants and (wanted is None or day in wanted):
                first_seen[(plant, day)] = str(value)
        for plant in run_plants:
            for day in run_dates:
                processed[(plant, day)] = str(recorded.get(f"{plant}|{day:%Y-%m-%d}", NO_ROWS))
        started.update(new_plants)
    reference = {**first_seen, **processed}
    return pd.DataFrame(
        {
            "plant_id": pd.Series([k[0] for k in reference], dtype="str"),
            "business_date": pd.Series([pd.Timestamp(k[1]) for k in reference], dtype="datetime64[ns]"),
            "recorded": pd.Series(list(reference.values()), dtype="str"),
        }
    )


def _as_list(value: object) -> list[object]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)  # type: ignore[call-overload]


def _as_date(value: object) -> dt.date:
    return pd.Timestamp(value).date()  # type: ignore[arg-type]


def changed_dates(
    fingerprints: pd.DataFrame, history: pd.DataFrame, requested: list[dt.date], lookback_days: int
) -> pd.DataFrame:
    """Earlier dates within the look-back whose inputs differ from their reference fingerprint
    (see `recorded_fingerprints`): new, corrected or removed completions, movements or counts.

    A date with input rows that no successful run has recorded a fingerprint for is new data: so a
    plant that no run has seen yet (its first data arrived late, or a fresh warehouse) has every
    look-back date that holds rows reprocessed, like any other plant's new date (semantics 6).
    """
    none = pd.DataFrame({"plant_id": pd.Series([], dtype="str"),
                         "business_date": pd.Series([], dtype="datetime64[ns]")})
    if not requested or lookback_days <= 0:
        return none
    window = _lookback_window(requested, lookback_days)
    recorded = recorded_fingerprints(history, window) if not history.empty else none.assign(
        recorded=pd.Series([], dtype="str"))
    current = fingerprints[fingerprints["business_date"].isin(window)]
    if current.empty and recorded.empty:
        return none
    both = current.astype({"fingerprint": "str"}).merge(recorded, on=["plant_id", "business_date"], how="outer")
    differs = both["fingerprint"].fillna(NO_ROWS) != both["recorded"].fillna(NO_ROWS)
    return both.loc[differs, ["plant_id", "business_date"]].drop_duplicates().reset_index(drop=True)


def _lookback_window(requested: list[dt.date], lookback_days: int) -> list[pd.Timestamp]:
    dates: set[dt.date] = set()
    for day in requested:
        dates |= {day - dt.timedelta(days=i) for i in range(1, lookback_days + 1)}
    dates -= set(requested)
    return [pd.Timestamp(d) for d in sorted(dates)]


# ------------------------------------------------------------------ which counts a run recomputes


def with_previous_count(counts: pd.DataFrame) -> pd.DataFrame:
    """Each count with the time, quantity and business date of the count before it at the same
    (plant, location, item)."""
    ordered = counts.sort_values(STOCK_KEY + ["counted_at", "count_id"], kind="stable").reset_index(drop=True)
    previous = ordered.groupby(STOCK_KEY, sort=False)[["count_id", "counted_at", "counted_qty",
                                                       "business_date"]].shift(1)
    return ordered.assign(previous_count_id=previous["count_id"], previous_counted_at=previous["counted_at"],
                          opening_qty=previous["counted_qty"],
                          previous_count_date=previous["business_date"].astype("datetime64[ns]"))


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


# ------------------------------------------------------------------ book stock and variance


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


# ------------------------------------------------------------------ negative book stock (issue 16.5)

EVENT_MOVEMENT, EVENT_RECEIPT, EVENT_BY_PRODUCT, EVENT_USAGE = 0, 1, 2, 3
EVENT_KINDS = np.array(["movement", "receipt", "by_product", "usage"], dtype=object)


def _empty_events() -> pd.DataFrame:
    return pd.DataFrame({"window": np.zeros(0, dtype="int64"), "at": np.zeros(0, dtype="int64"),
                         "qty": np.zeros(0), "kind": np.zeros(0, dtype="int8"),
                         "source": pd.Series([], dtype="str")})


def stock_exceptions(inputs: Inputs, scope: CountScope, windows: CountWindows, config: Config) -> pd.DataFrame:
    """One `stock_exceptions` row per count in scope whose window (previous count, count] takes the
    book stock below zero (plus plant_id and count_date for partitioning); see docs/CONTRACT.md.

    The running book stock of a window is the opening count plus, moment by moment (the events of
    one instant are netted: the stock at an instant is the stock after all its flows), every
    movement, receipt, by-product and, for a backflushed item, theoretical usage: the terms of
    `book_qty`, so the last moment's stock is the variance's book stock. Each moment's stock is
    rounded to the item's decimals before it is judged (float noise is not a shortfall).
    windows: with the events of every count in scope kept (`CountWindows.collect_events`).
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
    opening = pd.DataFrame({"row": np.arange(len(counts)), "at": _micros(counts["previous_counted_at"]),
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
            return _empty_events()
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
        times = _micros(completions["completed_at"])
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
                self._record(window, _micros(movements["moved_at"]), qty, EVENT_MOVEMENT, movements["movement_id"])

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
        from pipeline.consumption import carries_order  # consumption reads no variance: no cycle

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
        closes = _micros(counts["counted_at"])[window]
        opens = _micros(counts["previous_counted_at"].iloc[window])
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
        return self.windows_of(stock, _micros(at))

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


def _micros(stamps: pd.Series) -> np.ndarray:
    """Timestamps as integer microseconds since the epoch, UTC (comparable across frames of any unit)."""
    return np.asarray(pd.DatetimeIndex(stamps).as_unit("us").asi8, dtype="int64")


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
        over &= _beyond(variance, tolerances.abs_qty)
    if tolerances.abs_value is not None:
        over &= _beyond(value, tolerances.abs_value)
    if tolerances.pct is not None:
        over &= pct.isna() | _beyond(pct, tolerances.pct)
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


def _beyond(values: pd.Series, bound: float) -> pd.Series:
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


# ------------------------------------------------------------------ BOM accuracy


def bom_accuracy(
    variance_rows: pd.DataFrame, planned_scrap: pd.DataFrame, config: Config, *, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Per plant and backflushed component: actual vs theoretical usage over its trailing counts.

    Over the last `config.bom_accuracy_counts` checked counts of the component at the plant (all
    locations; counts without theoretical usage tell nothing about the BOM and are skipped):

    - actual usage = theoretical usage − variance (a shortfall at the count was used);
    - usage_ratio = Σ actual / Σ theoretical: pooled, so a count is weighted by its volume;
    - realised_scrap_pct = (1 + planned_scrap_pct/100) × usage_ratio − 1, in %: the scrap factor
      that would have made the BOM match. Counts cannot tell a wrong quantity from a wrong scrap
      factor; this is the one number that corrects either.

    flag, judged against the percent tolerance (`tolerances.pct`, 5 % when unset):
    `insufficient_counts` below 3 counts; `bom_qty_low` (the BOM understates usage: more was
    used) when the pooled deviation (usage_ratio − 1) × 100 AND the median of the counts' own
    usage variances both exceed +tolerance; `bom_qty_high` when both are below −tolerance;
    else `ok`. The median makes the flag mean "persistently off": one bad count (a lost pallet,
    a late receipt) moves the pooled figure but not the median, and one count of the opposite
    sign does not hide a BOM that is wrong in most counts.
    """
    rows = variance_rows[(variance_rows["status"] != "baseline") & variance_rows["backflushed"].astype(bool)
                         & (variance_rows["theoretical_usage_qty"] > 0)]
    if rows.empty:
        return pd.DataFrame(columns=["plant_id", *_ACCURACY_COLUMNS])
    rows = rows.sort_values(["plant_id", "item_id", "counted_at", "count_id"], kind="stable")
    rows = rows.groupby(["plant_id", "item_id"], sort=False).tail(max(1, config.bom_accuracy_counts))
    rows = rows.assign(actual=rows["theoretical_usage_qty"] - rows["variance_qty"],
                       pct=-rows["variance_qty"] / rows["theoretical_usage_qty"] * 100.0)
    g = rows.groupby(["plant_id", "item_id"], as_index=False).agg(
        uom=("uom", "last"), counts=("count_id", "size"), first_counted_at=("counted_at", "min"),
        last_counted_at=("counted_at", "max"), theoretical_usage_qty=("theoretical_usage_qty", "sum"),
        actual_usage_qty=("actual", "sum"), median_pct=("pct", "median"),
    )
    g = g.merge(planned_scrap, on=["plant_id", "item_id"], how="left")
    g["planned_scrap_pct"] = g["planned_scrap_pct"].astype("float64").fillna(0.0)
    g["usage_ratio"] = g["actual_usage_qty"] / g["theoretical_usage_qty"]
    g["realised_scrap_pct"] = ((1 + g["planned_scrap_pct"] / 100.0) * g["usage_ratio"] - 1) * 100.0
    deviation = (g["usage_ratio"] - 1) * 100.0
    tolerance = config.tolerances.pct if config.tolerances.pct is not None else DEFAULT_ACCURACY_PCT
    pooled_over, median_over = _beyond(deviation, tolerance), _beyond(g["median_pct"], tolerance)
    flag = np.select(
        [g["counts"] < MIN_ACCURACY_COUNTS,
         pooled_over & median_over & (deviation > 0) & (g["median_pct"] > 0),
         pooled_over & median_over & (deviation < 0) & (g["median_pct"] < 0)],
        ["insufficient_counts", "bom_qty_low", "bom_qty_high"], default="ok",
    )
    g["flag"] = flag
    g["as_of"] = as_of
    g = g.rename(columns={"item_id": "component_item_id"})
    return g[["plant_id", *_ACCURACY_COLUMNS]].reset_index(drop=True)


MIN_ACCURACY_COUNTS = 3  # fewer counts are an anecdote, not an estimate
DEFAULT_ACCURACY_PCT = 5.0
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


# ------------------------------------------------------------------ BOM-line suggestions (issue 16.6)

SUGGESTION_RIDGE = 0.01  # λ: the BOM quantity's weight as a prior, relative to each line's own evidence
_SUGGESTION_COLUMNS = [
    "parent_item_id", "component_item_id", "uom", "windows", "component_windows", "produced_qty",
    "theoretical_usage_qty", "component_actual_usage_qty", "current_qty_per", "suggested_qty_per",
    "change_pct", "std_error", "confidence", "as_of",
]


def bom_suggestions(
    variance_rows: pd.DataFrame, parent_flows: pd.DataFrame, config: Config, *, as_of: pd.Timestamp,
    ridge: float = SUGGESTION_RIDGE,
) -> pd.DataFrame:
    """Per (plant, parent, component): the quantity per unit of parent that best explains the
    counted usage of the component over its last `config.bom_accuracy_counts` checked counts (the
    counts `bom_accuracy` pools).

    For a component with windows w (counts, all locations) and parents p (items whose explosion
    uses it, made at the counted location in the window): y_w = actual usage (theoretical usage −
    variance) less the fixed per-order quantities drawn in the window; x_wp = units of p made;
    b0_p = the line's current quantity per unit as the explosion drew it (Σ per-unit usage / Σ
    units over the windows). The suggestion b minimises

        ||y − X b||² + λ Σ_p s_p (b_p − b0_p)²,   s_p = Σ_w x_wp²,  λ = `ridge` (SUGGESTION_RIDGE),

    a ridge toward the BOM whose weight is a fixed fraction of each line's own evidence (unit
    free). It is solved in its dual form, a (windows × windows) system per component, stacked:
    b = b0 + Λ⁻¹ Xᵀ (I + X Λ⁻¹ Xᵀ)⁻¹ (y − X b0), so lines without enough windows to tell them
    apart stay near their BOM quantity. std_error: √(σ² [(XᵀX + Λ)⁻¹]_pp), σ² = residual sum of
    squares / (windows − lines); confidence = max(0, 1 − std_error / |b_p|), 0 when the
    component has no more windows than lines (the fit could be exact whatever the truth: the
    windows cannot tell the lines apart, the ridge only keeps them near their BOM quantity).
    """
    rows = variance_rows[(variance_rows["status"] != "baseline") & variance_rows["backflushed"].astype(bool)
                         & (variance_rows["theoretical_usage_qty"] > 0)]
    if rows.empty or parent_flows.empty:
        return _empty_suggestions()
    rows = rows.sort_values(["plant_id", "item_id", "counted_at", "count_id"], kind="stable")
    rows = rows.groupby(["plant_id", "item_id"], sort=False).tail(max(1, config.bom_accuracy_counts))
    flows = parent_flows[parent_flows["units"] > 0].merge(
        rows[["count_id", "plant_id", "item_id"]], on="count_id", how="inner")
    # windows whose flows this run did not see (a count older than the inputs read) tell nothing
    rows = rows[rows["count_id"].isin(flows["count_id"])]
    if rows.empty:
        return _empty_suggestions()
    fixed = flows.groupby("count_id")["order_usage"].sum()
    rows = rows.assign(actual=(rows["theoretical_usage_qty"] - rows["variance_qty"]).to_numpy(dtype="float64"),
                       y=lambda r: r["actual"] - r["count_id"].map(fixed).fillna(0.0))
    group_keys = rows[["plant_id", "item_id"]].drop_duplicates().reset_index(drop=True)
    gindex = pd.MultiIndex.from_frame(group_keys)
    rows = rows.assign(g=gindex.get_indexer(pd.MultiIndex.from_frame(rows[["plant_id", "item_id"]])))
    rows = rows.assign(w=rows.groupby("g").cumcount())
    k, width = len(group_keys), int(rows["w"].max()) + 1
    flows = flows.merge(rows[["count_id", "g", "w"]], on="count_id", how="inner")
    flows = flows.assign(units2=flows["units"].to_numpy(dtype="float64") ** 2)
    lines = flows.groupby(["g", "parent_item_id"], as_index=False).agg(
        windows=("w", "size"), produced_qty=("units", "sum"), theoretical_usage_qty=("unit_usage", "sum"),
        s=("units2", "sum"))
    # a line of fixed quantities only (nothing per unit) has no quantity per unit to suggest: its
    # per-order quantities are taken off y above, its units are no regressor
    lines = lines[lines["theoretical_usage_qty"] > 0].reset_index(drop=True)
    if lines.empty:
        return _empty_suggestions()
    line_of = pd.MultiIndex.from_frame(lines[["g", "parent_item_id"]]).get_indexer(
        pd.MultiIndex.from_frame(flows[["g", "parent_item_id"]]))
    flows = flows[line_of >= 0]
    line_of = line_of[line_of >= 0]
    n = len(lines)
    gl = lines["g"].to_numpy(dtype="int64")
    b0 = lines["theoretical_usage_qty"].to_numpy() / lines["produced_qty"].to_numpy()
    lam = ridge * lines["s"].to_numpy()
    x = np.zeros((n, width))  # each line's units per window of its component
    x[line_of, flows["w"].to_numpy(dtype="int64")] = flows["units"].to_numpy(dtype="float64")
    y = np.zeros((k, width))
    y[rows["g"].to_numpy(), rows["w"].to_numpy()] = rows["y"].to_numpy(dtype="float64")
    present = np.zeros((k, width), dtype=bool)
    present[rows["g"].to_numpy(), rows["w"].to_numpy()] = True
    fitted0 = np.zeros((k, width))
    np.add.at(fitted0, gl, x * b0[:, None])
    m = np.zeros((k, width, width))  # X Λ⁻¹ Xᵀ per component
    np.add.at(m, gl, np.einsum("li,lj->lij", x, x) / lam[:, None, None])
    inv = np.linalg.inv(m + np.eye(width)[None, :, :])  # padded windows: a row of the identity
    alpha = np.einsum("kij,kj->ki", inv, y - fitted0)
    b = b0 + np.einsum("li,li->l", x, alpha[gl]) / lam
    fitted = np.zeros((k, width))
    np.add.at(fitted, gl, x * b[:, None])
    sse = np.where(present, (y - fitted) ** 2, 0.0).sum(axis=1)
    # residual degrees of freedom: windows − lines. Not the ridge's effective parameters (the trace of
    # M (I+M)⁻¹), which treat a line the windows cannot tell from another as known from its prior
    dof = present.sum(axis=1) - np.bincount(gl, minlength=k)
    sigma2 = np.where(dof >= 1, sse / np.maximum(dof, 1), np.nan)
    quad = np.einsum("li,lij,lj->l", x, inv[gl], x)
    variance_b = np.maximum(1.0 / lam - quad / lam**2, 0.0) * sigma2[gl]
    se = np.sqrt(variance_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = np.where(np.isfinite(se) & (b != 0), np.clip(1.0 - se / np.abs(b), 0.0, 1.0), 0.0)
    uom = rows.groupby("g")["uom"].last()
    actual = rows.groupby("g")["actual"].sum()
    count = rows.groupby("g").size()
    out = pd.DataFrame({
        "plant_id": group_keys["plant_id"].to_numpy()[gl],
        "parent_item_id": lines["parent_item_id"].to_numpy(),
        "component_item_id": group_keys["item_id"].to_numpy()[gl],
        "uom": uom.reindex(gl).to_numpy(),
        "windows": lines["windows"].to_numpy(dtype="int64"),
        "component_windows": count.reindex(gl).to_numpy(dtype="int64"),
        "produced_qty": lines["produced_qty"].to_numpy(),
        "theoretical_usage_qty": lines["theoretical_usage_qty"].to_numpy(),
        "component_actual_usage_qty": actual.reindex(gl).to_numpy(),
        "current_qty_per": b0,
        "suggested_qty_per": b,
        "change_pct": np.where(b0 != 0, (b / np.where(b0 != 0, b0, 1.0) - 1.0) * 100.0, np.nan),
        "std_error": se,
        "confidence": confidence,
    })
    out["as_of"] = as_of
    return out.sort_values(["plant_id", "component_item_id", "parent_item_id"]).reset_index(drop=True)


def _empty_suggestions() -> pd.DataFrame:
    columns = {f.name: pd.Series([], dtype="object") for f in schemas.BOM_SUGGESTIONS}
    return pd.DataFrame({"plant_id": pd.Series([], dtype="str"), **columns})
