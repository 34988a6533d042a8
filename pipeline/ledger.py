"""Backflush adjustments (the desired postings per day) and the append-only postings ledger.

Adjustments are a pure function of the inputs: re-running a date gives the same rows and the
same `adjustment_id`s. The ledger holds what was sent downstream; each run appends only the
difference between the current adjustments and what the ledger already sums to, so a re-run
over unchanged input appends nothing and a correction appends exactly its delta.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.rounding import round_half_away

ADJUSTMENT_KEY = ["plant_id", "business_date", "location_id", "item_id", "kind"]


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype="S1")
_NIBBLE_SHIFTS = np.arange(60, -1, -4, dtype=np.uint64)
# two fixed SipHash keys: 128 bits of id, as stable as the key text
_ID_KEYS = ("backflush-ids-k1", "backflush-ids-k2")


def stable_ids(*parts: pd.Series) -> pd.Series:
    """A deterministic 32-hex-digit id per row from the given key columns (SipHash-2-4, two keys)."""
    if len(parts[0]) == 0:
        return pd.Series([], dtype="str", index=parts[0].index)
    joined = parts[0].astype("str")
    for part in parts[1:]:
        joined = joined + "\x1f" + part.astype("str")
    text = pd.Series(joined.to_numpy(dtype=object), index=joined.index)
    halves = [_hex16(pd.util.hash_pandas_object(text, index=False, hash_key=key, categorize=False).to_numpy())
              for key in _ID_KEYS]
    digits = np.char.add(halves[0], halves[1])
    return pd.Series(digits.astype("U32"), index=joined.index).astype("str")


def _hex16(values: np.ndarray) -> np.ndarray:
    """Each uint64 as 16 lowercase hex digits, without a Python loop."""
    nibbles = (values.astype(np.uint64)[:, None] >> _NIBBLE_SHIFTS) & np.uint64(15)
    return np.ascontiguousarray(_HEX_DIGITS[nibbles.astype(np.intp)]).view("S16").ravel()


def adjustments(demand: pd.DataFrame, flows: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """One desired posting per (plant, date, location, item, kind), rounded once at uom_decimals.

    production_receipt: + good units of the produced item; backflush_issue: − consumed units of
    each backflushed component; byproduct_receipt: + units of each by-product.
    """
    master = items.set_index("item_id")
    keys = ["plant_id", "business_date", "location_id"]
    receipts = demand.groupby(keys + ["item_id"], as_index=False).agg(
        qty=("qty_good", "sum"), completions=("completions", "sum")
    )
    receipts["kind"] = "production_receipt"
    components = flows.rename(columns={"item_id": "produced_item_id", "component_item_id": "item_id"})
    consumed = components[components["qty_per_unit"] > 0]
    consumed = consumed[consumed["item_id"].map(master["backflush"]).astype(bool)]
    issues = consumed.groupby(keys + ["item_id"], as_index=False).agg(
        qty=("qty", "sum"), completions=("completions", "sum")
    )
    issues["qty"] = -issues["qty"]
    issues["kind"] = "backflush_issue"
    byproducts = components[components["qty_per_unit"] < 0]
    byproducts = byproducts.groupby(keys + ["item_id"], as_index=False).agg(
        qty=("qty", "sum"), completions=("completions", "sum")
    )
    byproducts["qty"] = -byproducts["qty"]
    byproducts["kind"] = "byproduct_receipt"
    out = pd.concat([receipts, issues, byproducts], ignore_index=True)
    # .astype: on an empty frame, map() keeps the key's string dtype
    decimals = out["item_id"].map(master["uom_decimals"]).astype("float64")
    out["qty"] = pd.Series(round_half_away(out["qty"].astype("float64"), decimals), index=out.index)
    out["uom"] = out["item_id"].map(master["uom"])
    out["value"] = out["qty"] * out["item_id"].map(master["standard_cost"]).astype("float64")
    out["completions"] = out["completions"].astype("int64")
    out["adjustment_id"] = stable_ids(
        out["plant_id"], out["business_date"].dt.strftime("%Y-%m-%d"), out["location_id"], out["item_id"], out["kind"]
    )
    return out.sort_values(ADJUSTMENT_KEY).reset_index(drop=True)


def postings_delta(
    current: pd.DataFrame,
    ledger: pd.DataFrame,
    scope: pd.DataFrame,
    items: pd.DataFrame,
    *,
    run_id: str,
    posted_at: pd.Timestamp,
) -> pd.DataFrame:
    """Ledger rows that bring the ledger's sum per key to the current adjustments in `scope`.

    scope: the (plant_id, business_date) pairs whose adjustments were recomputed; a key posted
    before but absent now is reversed to zero.
    """
    in_scope = ledger.merge(scope, on=["plant_id", "business_date"], how="inner")
    posted = in_scope.groupby(ADJUSTMENT_KEY, as_index=False).agg(
        posted=("qty_delta", "sum"), posted_uom=("uom", "last")
    )
    wanted = current[ADJUSTMENT_KEY + ["qty", "uom", "adjustment_id"]]
    if wanted.empty and posted.empty:
        # nothing wanted, nothing posted (and pandas cannot merge two chunk-less Arrow string keys)
        return _empty_postings()
    both = wanted.merge(posted, on=ADJUSTMENT_KEY, how="outer")
    decimals = both["item_id"].map(items.set_index("item_id")["uom_decimals"]).astype("float64").fillna(9)
    delta = round_half_away(both["qty"].fillna(0.0) - both["posted"].fillna(0.0), decimals)
    both["qty_delta"] = delta
    both = both[np.abs(delta) > 0].copy()
    both["uom"] = both["uom"].fillna(both["posted_uom"])
    missing = both["adjustment_id"].isna()  # keys reversed to zero: no current adjustment carries the id
    if missing.any():
        gone = both[missing]
        both.loc[missing, "adjustment_id"] = stable_ids(
            gone["plant_id"], gone["business_date"].dt.strftime("%Y-%m-%d"), gone["location_id"], gone["item_id"],
            gone["kind"])
    both["run_id"] = run_id
    both["posting_id"] = stable_ids(both["run_id"], both["adjustment_id"])
    both["posted_at"] = posted_at
    return both[POSTING_COLUMNS].sort_values(ADJUSTMENT_KEY).reset_index(drop=True)


POSTING_COLUMNS = ["posting_id", "run_id", "plant_id", "business_date", "adjustment_id", "location_id",
                   "item_id", "kind", "qty_delta", "uom", "posted_at"]


def _empty_postings() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in POSTING_COLUMNS})
    return frame.astype({"business_date": "datetime64[ns]", "qty_delta": "float64",
                         "posted_at": "datetime64[us, UTC]"})
