"""Business dates: a plant's local calendar date of an instant, by the plant's IANA time zone."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

VALID_ZONES = frozenset(zoneinfo.available_timezones())


def plant_timezones(
    plants: pd.DataFrame, seen: Iterable[str], overrides: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """plant_id -> timezone for every plant: the plants table, then config, else UTC."""
    zones = dict(overrides or {})
    zones.update(dict(zip(plants["plant_id"], plants["timezone"].fillna("UTC"), strict=True)))
    all_plants = sorted(set(seen) | set(zones))
    return pd.DataFrame(
        {"plant_id": pd.Series(all_plants, dtype="str"), "timezone": [zones.get(p, "UTC") for p in all_plants]}
    )


def business_dates(timestamps: pd.Series, plant_ids: pd.Series, zones: pd.DataFrame) -> pd.Series:
    """The calendar date of each UTC timestamp in its plant's time zone (naive midnight)."""
    zone_of = dict(zip(zones["plant_id"], zones["timezone"], strict=True))
    plant_codes, plants = pd.factorize(plant_ids)  # a missing plant is -1, the last zone: UTC
    names, zone_codes = np.unique([zone_of.get(p, "UTC") for p in plants] + ["UTC"], return_inverse=True)
    row_zones = zone_codes[plant_codes]
    stamps = timestamps.array
    out = np.full(len(stamps), np.datetime64("NaT"), dtype="datetime64[ns]")
    for code, zone in enumerate(names):
        rows = np.flatnonzero(row_zones == code)
        if len(rows):
            local = stamps[rows].tz_convert(zone).tz_localize(None).normalize()
            out[rows] = local.as_unit("ns").to_numpy()
    return pd.Series(out, index=timestamps.index)
