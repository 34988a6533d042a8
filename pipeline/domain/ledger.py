"""Backflush adjustments (the desired postings per day) and the append-only postings ledger.

Adjustments are a pure function of the inputs: re-running a date gives the same rows and the
same `adjustment_id`s. The ledger holds what was sent downstream; each run appends only the
difference between the current adjustments and what the ledger already sums to, so a re-run
over unchanged input appends nothing and a correction appends exactly its delta.

Keys are grouped and joined as integer codes (one shared, sorted vocabulary per key column), and
text is only built for the rows that are returned: re-factorising and taking Arrow strings is
what costs most at scale.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.domain import consumption
from pipeline.domain.costs import costs_in_force
from pipeline.domain.rounding import round_half_away

ADJUSTMENT_KEY = ["plant_id", "business_date", "location_id", "item_id", "kind"]
KINDS = ("backflush_issue", "byproduct_receipt", "production_receipt")  # sorted: code order is text order
ISSUE, BYPRODUCT, RECEIPT = range(len(KINDS))

# two fixed SipHash keys: 128 bits of id, as stable as the key text
_ID_KEYS = ("backflush-ids-k1", "backflush-ids-k2")
_SEPARATOR = "\x1f"
_MISSING_TEXT = "nan"  # the key text of a row with a missing part (as str(NaN))
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# byte value -> its two lowercase hex digits, high nibble first, as one 2-byte unit
_HEX_PAIRS = np.stack([_HEX_DIGITS[np.arange(256) >> 4], _HEX_DIGITS[np.arange(256) & 15]],
                      axis=1).view(np.uint16)[:, 0]
_DATE_FORMAT = "%Y-%m-%d"
_HASH_BLOCK = 1 << 20  # key texts hashed at a time


def stable_ids(*parts: pd.Series | str) -> pd.Series:
    """A deterministic 32-hex-digit id per row from the given key columns (SipHash-2-4, two keys).

    The id hashes the UTF-8 text of the parts joined by U+001F; a str part is the same text on
    every row (at least one part is a Series). The result has the index of the first Series part.
    """
    index = next(p.index for p in parts if isinstance(p, pd.Series))
    if len(index) == 0:
        return pd.Series([], dtype="str", index=index)
    texts = [pa.scalar(p, pa.large_string()) if isinstance(p, str)
             else pa.chunked_array(p.astype("str")).cast(pa.large_string()) for p in parts]
    joined = pc.binary_join_element_wise(*texts, pa.scalar(_SEPARATOR, pa.large_string()))
    joined = pc.fill_null(joined, _MISSING_TEXT)
    words = np.empty((len(_ID_KEYS), len(joined)), dtype=np.uint64)
    for start in range(0, len(joined), _HASH_BLOCK):
        # bytes objects, hashed as they are (not re-encoded); one block at a time bounds their memory
        keys = joined.slice(start, _HASH_BLOCK).cast(pa.large_binary()).to_numpy(zero_copy_only=False)
        for word, key in zip(words, _ID_KEYS, strict=True):
            word[start:start + len(keys)] = pd.util.hash_array(keys, hash_key=key, categorize=False)
    return pd.Series(_hex_text(words), index=index, dtype="str")


def _hex_text(words: np.ndarray) -> pa.Array:
    """Per column of uint64 words, its words as lowercase hex digits (most significant first) in one string."""
    raw = words.T.astype(">u8", order="C").view(np.uint8)  # one row of big-endian bytes per string
    digits = _HEX_PAIRS[raw]  # two ASCII digits per byte, row after row: the string data buffer
    width = 2 * raw.shape[1]
    offsets = np.arange(0, width * (len(raw) + 1), width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(len(raw), pa.py_buffer(offsets), pa.py_buffer(digits))


class _Keys(NamedTuple):
    """Key columns of several frames, numbered in one vocabulary per column; rows of all frames stacked."""

    codes: list[np.ndarray]  # per column: the code of each stacked row
    values: list[pd.Index]  # per column: the distinct values, sorted (missing last), at their code
    key: np.ndarray  # per stacked row: one int64 that orders like the tuple of its values
    size: int  # every key is below this
    missing: np.ndarray  # per stacked row: some key value is missing


def _keys(columns: list[list[pd.Series]]) -> _Keys:
    """Code the key columns (each given as its parts, one per frame) jointly across frames."""
    codes, values = [], []
    for parts in columns:
        c, v = pd.factorize(pd.concat(parts, ignore_index=True), sort=True, use_na_sentinel=False)
        codes.append(c.astype(np.int32))
        values.append(pd.Index(v))
    key, size = np.zeros(len(codes[0]), dtype=np.int64), 1
    missing = np.zeros(len(key), dtype=bool)
    for c, v in zip(codes, values, strict=True):
        key, size = _extend(key, size, c, len(v))
        missing |= np.asarray(v.isna())[c]
    return _Keys(codes, values, key, size, missing)


def _extend(key: np.ndarray, size: int, codes: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Append a column of codes (below n) to composite keys (below size), keeping their order."""
    if size * n >= 2**63:  # would overflow: renumber the distinct keys densely first, in order
        key, distinct = pd.factorize(key, sort=True)
        size = len(distinct)
    return key * n + codes, size * n


def _master_rows(items: pd.DataFrame, item_ids: pd.Index) -> np.ndarray:
    """The item-master row of each item id; -1 for an id the master lacks."""
    return pd.Index(items["item_id"]).get_indexer(item_ids)


def _numbers(column: pd.Series, rows: np.ndarray) -> np.ndarray:
    """A column's values at the given rows as float64; NaN at row -1 (and for missing values)."""
    return np.append(column.to_numpy(dtype="float64", na_value=np.nan), np.nan)[rows]


def _texts(column: pd.Series, rows: np.ndarray) -> pd.Series:
    """A column's values at the given rows (missing at row -1), on a fresh RangeIndex."""
    return pd.Series(column.array.take(rows, allow_fill=True))


def _decode(keys: _Keys, rows: np.ndarray, names: list[str]) -> dict[str, pd.api.extensions.ExtensionArray]:
    """The key values of the given stacked rows, per column name."""
    return {name: v.array.take(c[rows]) for name, v, c in zip(names, keys.values, keys.codes, strict=True)}


def _date_text(keys: _Keys, rows: np.ndarray) -> pd.Series:
    """business_date (key column 1) of the given stacked rows as YYYY-MM-DD, formatted once per date."""
    return pd.Series(keys.values[1].strftime(_DATE_FORMAT).take(keys.codes[1][rows]))


def _given_off(flows: pd.DataFrame) -> np.ndarray:
    """Whether each flow is a by-product: a consumption's mirror (see `consumption.consumed`)."""
    per_order = flows["qty_per_order"] if "qty_per_order" in flows.columns else None
    return consumption.consumed(-flows["qty_per_unit"].to_numpy(dtype="float64", na_value=np.nan),
                                None if per_order is None else -per_order.to_numpy(dtype="float64", na_value=np.nan))


def adjustments(demand: pd.DataFrame, flows: pd.DataFrame, items: pd.DataFrame,
                item_costs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One desired posting per (plant, date, location, item, kind), rounded once at uom_decimals.

    production_receipt: + good units of the produced item; backflush_issue: − consumed units of
    each backflushed component; byproduct_receipt: + units of each by-product. `value` is the
    rounded quantity at the standard cost in force on the business date (`costs.costs_in_force`).
    """
    keys = _keys([[demand["plant_id"], flows["plant_id"]], [demand["business_date"], flows["business_date"]],
                  [demand["location_id"], flows["location_id"]], [demand["item_id"], flows["component_item_id"]]])
    master = _master_rows(items, keys.values[3])
    item = keys.codes[3]
    n = len(demand)
    # a component needed only per order (a fixed quantity) has its direction from that quantity
    is_used = consumption.consumed_rows(flows)
    consumed = np.flatnonzero(is_used)
    backflush = _numbers(items["backflush"], master[item[n + consumed]])
    if np.isnan(backflush).any():
        raise ValueError("cannot convert float NaN to bool: a consumed component has no backflush flag")
    issued = np.zeros(len(flows), dtype=bool)
    issued[consumed] = backflush.astype(bool)
    kind = np.concatenate([np.full(n, RECEIPT), np.where(is_used, ISSUE, BYPRODUCT)]).astype(np.int8)
    rows = np.concatenate([np.arange(n), n + np.flatnonzero(issued | _given_off(flows))])
    rows = rows[~keys.missing[rows]]  # as groupby: a row with a missing key is in no group
    group, _ = _extend(keys.key[rows], keys.size, kind[rows], len(KINDS))
    qty = np.concatenate([demand["qty_good"].to_numpy(dtype="float64", na_value=np.nan),
                          flows["qty"].to_numpy(dtype="float64", na_value=np.nan)])
    completions = np.concatenate([demand["completions"].to_numpy(), flows["completions"].to_numpy()])
    # sorted by key, and each group sums its rows in input order: the sums of a groupby per kind
    sums = pd.DataFrame({"qty": qty[rows], "completions": completions[rows], "row": rows}).groupby(
        group, sort=True).agg(qty=("qty", "sum"), completions=("completions", "sum"), row=("row", "first"))
    first = sums["row"].to_numpy()
    kinds = kind[first]
    item_rows = master[item[first]]
    total = sums["qty"].to_numpy()
    rounded = round_half_away(np.where(kinds == RECEIPT, total, -total), _numbers(items["uom_decimals"], item_rows))
    out = pd.DataFrame({
        **_decode(keys, first, ADJUSTMENT_KEY[:4]),
        "qty": rounded,
        "completions": sums["completions"].to_numpy().astype("int64"),
        "kind": pd.array(KINDS, dtype="str").take(kinds),
        "uom": items["uom"].array.take(item_rows, allow_fill=True),
        "value": rounded * _numbers(items["standard_cost"], item_rows),
    }, copy=False)
    if item_costs is not None and not item_costs.empty:
        out["value"] = rounded * costs_in_force(out["item_id"], out["business_date"], items, item_costs)
    out["adjustment_id"] = stable_ids(out["plant_id"], _date_text(keys, first), out["location_id"], out["item_id"],
                                      out["kind"])
    return out


def postings_delta(
    current: pd.DataFrame,
    ledger: pd.DataFrame,
    scope: pd.DataFrame,
    items: pd.DataFrame,
    *,
    run_id: str,
    posted_at: pd.Timestamp,
    posting_dates: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Ledger rows that bring the ledger's sum per key to the current adjustments in `scope`.

    scope: the (plant_id, business_date) pairs whose adjustments were recomputed; a key posted
    before but absent now is reversed to zero. A ledger row counts for its `for_business_date`
    (the date it is for; its `business_date` when absent, as in files written before closed periods).
    posting_dates: (plant_id, business_date, posting_date) of closed dates: their postings are made
    on the posting date instead, for_business_date keeping the date they are for.

    Its length is the ledger's one rule written out: sum what was posted per key, compare with what
    should be, redirect closed dates, give each delta its id.
    """
    if "for_business_date" in ledger.columns:
        ledger = ledger.assign(business_date=ledger["for_business_date"].fillna(ledger["business_date"]))
    ledger = ledger[ADJUSTMENT_KEY + ["qty_delta", "uom"]]
    in_scope = _in_scope(ledger, scope)
    if not in_scope.all():
        ledger = ledger[in_scope]
    keys = _keys([[current[c], ledger[c]] for c in ADJUSTMENT_KEY])
    n = len(current)
    old = np.flatnonzero(~keys.missing[n:])  # as groupby: a ledger row with a missing key is in no group
    uom_posted = ledger["uom"].notna().to_numpy()[old]
    # per key: the posted sum (in ledger order), a stacked row with the key, the last ledger row with a uom
    posted = pd.DataFrame({"posted": ledger["qty_delta"].to_numpy()[old], "row": n + old,
                           "uom_row": np.where(uom_posted, old, np.nan)}).groupby(keys.key[n:][old], sort=True).agg(
        posted=("posted", "sum"), row=("row", "first"), uom_row=("uom_row", "last"))
    if n == 0 and posted.empty:
        return _empty_postings()
    wanted = pd.DataFrame({"key": keys.key[:n], "current": np.arange(n)})
    both = wanted.merge(posted.rename_axis("key").reset_index(), on="key", how="outer", sort=True)
    now = both["current"].fillna(-1).to_numpy(dtype=np.int64)  # row in `current`, -1 if none
    stacked = np.where(now >= 0, now, both["row"].fillna(-1).to_numpy(dtype=np.int64))
    decimals = _numbers(items["uom_decimals"], _master_rows(items, keys.values[3])[keys.codes[3][stacked]])
    qty = _numbers(current["qty"], now)
    delta = round_half_away(np.where(np.isnan(qty), 0.0, qty) - both["posted"].fillna(0.0).to_numpy(),
                            np.where(np.isnan(decimals), 9.0, decimals))
    keep = np.flatnonzero(np.abs(delta) > 0)
    now, stacked = now[keep], stacked[keep]
    out = pd.DataFrame(_decode(keys, stacked, ADJUSTMENT_KEY), copy=False)
    posted_uom = _texts(ledger["uom"], both["uom_row"].fillna(-1).to_numpy(dtype=np.int64)[keep])
    out["uom"] = _texts(current["uom"], now).fillna(posted_uom)
    out["qty_delta"] = delta[keep]
    # keys reversed to zero: no current adjustment carries the id
    ids = _texts(current["adjustment_id"], now)
    gone = ids.isna().to_numpy()
    if gone.any():
        rows = out[gone]
        ids = ids.fillna(stable_ids(rows["plant_id"], _date_text(keys, stacked[gone]).set_axis(rows.index),
                                    rows["location_id"], rows["item_id"], rows["kind"]))
    out["adjustment_id"] = ids
    out["run_id"] = run_id
    out["posting_id"] = stable_ids(run_id, out["adjustment_id"])
    out["posted_at"] = posted_at
    out["for_business_date"] = out["business_date"]
    if posting_dates is not None and not posting_dates.empty and not out.empty:
        moved = out[["plant_id", "business_date"]].astype({"plant_id": "str", "business_date": "datetime64[ns]"}).merge(
            posting_dates[["plant_id", "business_date", "posting_date"]].astype({"plant_id": "str"}),
            on=["plant_id", "business_date"], how="left")
        out["business_date"] = moved["posting_date"].fillna(moved["business_date"]).to_numpy()
    return out[POSTING_COLUMNS]


def _in_scope(frame: pd.DataFrame, scope: pd.DataFrame) -> np.ndarray:
    """Whether each row's (plant_id, business_date) is one of the scope's pairs."""
    keys = _keys([[frame[c], scope[c]] for c in ("plant_id", "business_date")])
    return np.isin(keys.key[:len(frame)], keys.key[len(frame):])


POSTING_COLUMNS = ["posting_id", "run_id", "plant_id", "business_date", "for_business_date", "adjustment_id",
                   "location_id", "item_id", "kind", "qty_delta", "uom", "posted_at"]


def _empty_postings() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in POSTING_COLUMNS})
    return frame.astype({"business_date": "datetime64[ns]", "for_business_date": "datetime64[ns]", "qty_delta": "float64",
                         "posted_at": "datetime64[us, UTC]"})
