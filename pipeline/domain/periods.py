"""Closed posting periods: which business dates may no longer change, and where their corrections go.

A date is closed when it is on or before `closed_through` (config) or inside a closed period of its
plant (or of every plant) in the `periods` table. A posting for a closed date is made on the first
open business date after it instead, keeping the date it is for (`postings.for_business_date`).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

_DAY = pd.Timedelta(days=1)


def closed_intervals(plants: list[str], closed_through: dt.date | None, periods: pd.DataFrame | None) -> pd.DataFrame:
    """Per plant, the closed dates as disjoint, non-adjacent [start, end] intervals (inclusive),
    sorted (`closed_through` closes everything from 1900-01-01 on)."""
    parts = []
    plant_frame = pd.DataFrame({"plant_id": pd.Series(plants, dtype="str")})
    if closed_through is not None:
        parts.append(plant_frame.assign(start=pd.Timestamp("1900-01-01"),
                                        end=pd.Timestamp(closed_through)))
    if periods is not None and not periods.empty:
        closed = periods[periods["status"] == "closed"]
        own = closed[closed["plant_id"].notna()]
        every = closed[closed["plant_id"].isna()].drop(columns="plant_id").merge(plant_frame, how="cross")
        both = pd.concat([own, every], ignore_index=True)
        both = both[both["plant_id"].astype("str").isin(plants)]
        parts.append(pd.DataFrame({"plant_id": both["plant_id"].astype("str"),
                                   "start": pd.to_datetime(both["period_start"]),
                                   "end": pd.to_datetime(both["period_end"])}))
    if not parts:
        return pd.DataFrame({"plant_id": pd.Series([], dtype="str"), "start": pd.Series([], dtype="datetime64[ns]"),
                             "end": pd.Series([], dtype="datetime64[ns]")})
    spans = pd.concat(parts, ignore_index=True).astype({"start": "datetime64[ns]", "end": "datetime64[ns]"})
    spans = spans.sort_values(["plant_id", "start", "end"], kind="stable").reset_index(drop=True)
    # an interval opens a new group when it starts after the day following every earlier end of its plant
    reach = spans.groupby("plant_id")["end"].cummax()
    previous = reach.groupby(spans["plant_id"]).shift()
    fresh = previous.isna() | (spans["start"] > previous + _DAY)
    group = fresh.cumsum()
    merged = spans.groupby(group).agg(plant_id=("plant_id", "first"), start=("start", "min"), end=("end", "max"))
    return merged.reset_index(drop=True)


def posting_dates(scope: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """For each (plant_id, business_date) of scope: `closed`, and `posting_date`, the date its
    postings are made on (the date itself when open, else the first open date after it)."""
    out = scope[["plant_id", "business_date"]].reset_index(drop=True).astype(
        {"plant_id": "str", "business_date": "datetime64[ns]"})
    out["closed"] = False
    out["posting_date"] = out["business_date"]
    if intervals.empty or out.empty:
        return out
    probe = out.reset_index().sort_values("business_date", kind="stable")
    found = pd.merge_asof(probe, intervals.sort_values("start", kind="stable"), left_on="business_date",
                          right_on="start", by="plant_id", direction="backward")
    inside = (found["end"].notna() & (found["business_date"] <= found["end"])).to_numpy()
    rows = found["index"].to_numpy()[inside]
    out.loc[rows, "closed"] = True
    out.loc[rows, "posting_date"] = (found["end"].to_numpy()[inside] + np.timedelta64(1, "D"))
    return out
