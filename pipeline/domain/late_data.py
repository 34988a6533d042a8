"""Late and corrected data (semantics 6): fingerprints of each (plant, date)'s input rows, and the dates
whose fingerprint changed since the last successful run."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd

from pipeline.contract.inputs import Inputs

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
