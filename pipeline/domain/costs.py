"""Standard cost in force on a date: the item's latest `item_costs` row on or before it, else its
`items.standard_cost`. Adjustments are valued on their business date, variance on the count's date.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def costs_in_force(item_ids: pd.Series, dates: pd.Series, items: pd.DataFrame,
                   item_costs: pd.DataFrame | None) -> np.ndarray:
    """The standard cost of each (item_id, date) pair, aligned with the inputs (NaN: unknown item).

    dates: business dates (naive, midnight). A cost row applies from its `valid_from` on, until the
    next row of the same item.
    """
    base = item_ids.map(items.set_index("item_id")["standard_cost"]).to_numpy(dtype="float64", na_value=np.nan)
    if item_costs is None or item_costs.empty or len(item_ids) == 0:
        return base
    probe = pd.DataFrame({"item_id": item_ids.astype("str").to_numpy(),
                          "day": pd.to_datetime(dates).astype("datetime64[ns]").to_numpy(),
                          "position": np.arange(len(item_ids))})
    history = pd.DataFrame({"item_id": item_costs["item_id"].astype("str").to_numpy(),
                            "day": pd.to_datetime(item_costs["valid_from"]).astype("datetime64[ns]").to_numpy(),
                            "cost": item_costs["standard_cost"].to_numpy(dtype="float64")})
    found = pd.merge_asof(probe.sort_values("day", kind="stable"), history.sort_values("day", kind="stable"),
                          on="day", by="item_id", direction="backward", allow_exact_matches=True)
    cost = np.full(len(item_ids), np.nan)
    cost[found["position"].to_numpy()] = found["cost"].to_numpy(dtype="float64", na_value=np.nan)
    return np.where(np.isnan(cost), base, cost)
