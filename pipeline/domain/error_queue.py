"""The error queue that reprocesses itself (SAP COGI, Oracle pending transactions).

Two things a change of master data (a BOM line, an item, a conversion) does to dates already run:

* a completion quarantined because its BOM could not be exploded (`RESOLVABLE`) may explode now:
  the run finds those completions in the quarantine dataset at any date, reprocesses exactly
  their (plant, date), and the rows that are no longer rejected stay in quarantine, marked
  `released_by_run` / `released_at` (the quarantine keeps its history);
* a posted date's explosion may differ (a backdated BOM change): the run compares a fingerprint
  of each (plant, item)'s explosion over time with the one the last run recorded, lists the
  posted dates whose explosion changed, and reposts them with `reprocess_master_data = true`.

The master fingerprint is recorded in `runs.master_fingerprints` as run-length change points:
"plant|item|YYYY-MM-DD|hash" where the hash of the item's explosion on that date differs from
the previous date that had completions. A date's old hash is that of the latest point on or
before it: exact for every date whose completions existed when the points were recorded.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.contract.inputs import Inputs
from pipeline.domain import consumption

# explosion errors a change of items, BOM lines or conversions can resolve
RESOLVABLE = ("NO_BOM", "UNKNOWN_ITEM", "NO_UOM_CONVERSION", "BOM_CYCLE", "INVALID")
SEP = "|"


def _pairs(plant: Sequence[str] | pd.Series = (), date: Sequence[object] | pd.Series = ()) -> pd.DataFrame:
    return pd.DataFrame({"plant_id": pd.Series(list(plant), dtype="str"),
                         "business_date": pd.Series(list(date), dtype="datetime64[ns]")})


@dataclass
class Plan:
    """What the error queue adds to a run's scope, and what it lists."""

    released_dates: pd.DataFrame  # (plant, date) of quarantined completions that explode now
    changed_dates: pd.DataFrame  # posted (plant, date) whose explosion changed
    fingerprints: list[str] | None  # the master fingerprint to record ("plant|item|date|hash"); None: as recorded
    earliest: dt.date | None = None  # a source read by window (SQL): no date before it is reprocessed

    def dates(self, reprocess_master_data: bool) -> pd.DataFrame:
        """The (plant, date) pairs to add to the run's scope."""
        parts = [self.released_dates] + ([self.changed_dates] if reprocess_master_data else [])
        both = pd.concat(parts, ignore_index=True).drop_duplicates().reset_index(drop=True)
        return in_read_window(both, self.earliest)


# ------------------------------------------------------------------ master fingerprints


def key_hashes(requirements: pd.DataFrame, errors: pd.DataFrame) -> pd.Series:
    """Per explosion key, an order-independent hash (a string) of its per-unit requirements, or of
    its error code when it cannot be exploded."""
    def digest(key: pd.Series, values: pd.DataFrame, prefix: str) -> pd.Series:
        if values.empty:
            return pd.Series([], dtype="str")
        hashed = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype="uint64")
        frame = pd.DataFrame({"key": key.to_numpy(), "hi": (hashed >> np.uint64(32)).astype("int64"),
                              "lo": (hashed & np.uint64(0xFFFFFFFF)).astype("int64")})
        sums = frame.groupby("key").agg(hi=("hi", "sum"), lo=("lo", "sum"), n=("hi", "size"))
        return prefix + sums["n"].astype("str") + ":" + sums["hi"].astype("str") + ":" + sums["lo"].astype("str")

    # quantities to 9 decimals: the same BOM explodes to the same hash however the sum was ordered
    req = requirements.assign(q=np.round(requirements["qty_per_unit"].to_numpy(dtype="float64"), 9))
    ok = digest(req["key"], req[["component_item_id", "q"]], "")
    bad = digest(errors["key"], errors[["error_code"]], "E")
    both = pd.concat([ok[~ok.index.isin(bad.index)], bad])
    return both


def current_hashes(demand: pd.DataFrame, requirements: pd.DataFrame, errors: pd.DataFrame,
                   plants: Sequence[str]) -> pd.DataFrame:
    """(plant_id, item_id, business_date, hash) of every date an item was completed in a plant."""
    keys = demand.loc[demand["plant_id"].isin(list(plants)), ["plant_id", "item_id", "business_date", "key"]]
    keys = keys.drop_duplicates(["plant_id", "item_id", "business_date"])
    hashes = key_hashes(requirements, errors)
    out = keys.assign(hash=hashes.reindex(keys["key"].to_numpy()).fillna("").to_numpy()).drop(columns="key")
    out = out.astype({"plant_id": "str", "item_id": "str", "business_date": "datetime64[ns]"})
    return out.sort_values(["plant_id", "item_id", "business_date"], kind="stable").reset_index(drop=True)


def change_points(current: pd.DataFrame) -> list[str]:
    """The run-length encoding of `current_hashes`, as the strings `runs` records."""
    group = current["plant_id"] + SEP + current["item_id"]
    first = group.ne(group.shift())
    points = current[first | current["hash"].ne(current["hash"].shift())]
    return _encoded(points["plant_id"], points["item_id"], points["business_date"], points["hash"]).tolist()


def _encoded(plant: pd.Series, item: pd.Series, date: pd.Series, recorded: pd.Series) -> pd.Series:
    """`plant|item|date|hash`, with "%" and "|" of the ids written %25 and %7C, so that ids holding
    the separator decode as they were (ids without them are written as they are)."""
    return (_escape(plant) + SEP + _escape(item) + SEP + date.dt.strftime("%Y-%m-%d") + SEP + recorded)


def _escape(ids: pd.Series) -> pd.Series:
    return ids.astype("str").str.replace("%", "%25", regex=False).str.replace(SEP, "%7C", regex=False)


def _unescape(ids: pd.Series) -> pd.Series:
    return ids.astype("str").str.replace("%7C", SEP, regex=False).str.replace("%25", "%", regex=False)


def _decode(points: pd.Series) -> pd.DataFrame:
    if points.empty:
        return pd.DataFrame({"plant_id": pd.Series([], dtype="str"), "item_id": pd.Series([], dtype="str"),
                             "business_date": pd.Series([], dtype="datetime64[ns]"),
                             "recorded": pd.Series([], dtype="str")})
    # the hash and the date hold no separator, the ids hold it escaped (`_encoded`); points written
    # before ids were escaped split from the right (an item id with "|" was then misread)
    parts = points.str.rsplit(SEP, n=2, expand=True)
    head = parts[0].str.rsplit(SEP, n=1, expand=True)
    return pd.DataFrame({"plant_id": _unescape(head[0]), "item_id": _unescape(head[1]),
                         "business_date": pd.to_datetime(parts[1]).astype("datetime64[ns]"),
                         "recorded": parts[2].astype("str")})


def _as_list(value: object) -> list[object]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)  # type: ignore[call-overload]


def recorded(history: pd.DataFrame, plants: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the master fingerprint points each plant's last successful run recorded, the (plant, date)
    pairs some successful run processed: the posted dates). A run whose points were those already
    recorded records none (null), so `runs` grows with master data changes, not with runs."""
    if history.empty or "master_fingerprints" not in history.columns:
        return _decode(pd.Series([], dtype="str")), _pairs()
    ok = history[history["status"] == "ok"].sort_values("started_at", kind="stable")
    latest: dict[str, int] = {}
    # one iteration per run (not per data row): which run last recorded each plant
    for position, (run_plants, points) in enumerate(zip(ok["plants"], ok["master_fingerprints"], strict=True)):
        if points is not None and not (isinstance(points, float)):
            for p in _as_list(run_plants):
                latest[str(p)] = position
    frames = []
    wanted = {p: latest[p] for p in plants if p in latest}
    for position in sorted(set(wanted.values())):  # each run's points decoded once
        decoded = _decode(pd.Series(_as_list(ok["master_fingerprints"].iloc[position]), dtype="str"))
        frames.append(decoded[decoded["plant_id"].isin([p for p, at in wanted.items() if at == position])])
    points = pd.concat(frames, ignore_index=True) if frames else _decode(pd.Series([], dtype="str"))
    runs = ok[["plants", "business_dates"]].explode("plants").explode("business_dates").dropna()
    posted = _pairs(runs["plants"].astype("str"), pd.to_datetime(runs["business_dates"]))
    return points, posted[posted["plant_id"].isin(list(plants))].drop_duplicates()


def unchanged(points: list[str], reference: pd.DataFrame) -> bool:
    """Whether the change points are those recorded (a run then records none: null in `runs`)."""
    if len(points) != len(reference):
        return False
    recorded_points = _encoded(reference["plant_id"], reference["item_id"], reference["business_date"],
                               reference["recorded"])
    return set(points) == set(recorded_points.tolist())


def changed_posted_dates(current: pd.DataFrame, points: pd.DataFrame, posted: pd.DataFrame) -> pd.DataFrame:
    """Posted (plant, date) pairs where an item's explosion differs from the recorded one."""
    if current.empty or points.empty or posted.empty:
        return _pairs()
    day = {"business_date": "datetime64[ns]"}
    probe = current.astype(day).merge(posted.astype(day), on=["plant_id", "business_date"], how="inner")
    if probe.empty:
        return _pairs()
    probe = probe.sort_values("business_date", kind="stable")
    right = points.astype(day).sort_values("business_date", kind="stable")
    found = pd.merge_asof(probe, right, on="business_date", by=["plant_id", "item_id"], direction="backward")
    differs = found["recorded"].notna() & (found["recorded"] != found["hash"])
    out = found.loc[differs, ["plant_id", "business_date"]].drop_duplicates()
    return out.sort_values(["plant_id", "business_date"]).reset_index(drop=True)


# ------------------------------------------------------------------ quarantined completions


def explosion_rejects(quarantine: pd.DataFrame) -> pd.DataFrame:
    """The quarantined completions whose BOM could not be exploded with a code a master data change
    can resolve: not the rows rejected as they were read (an `INVALID` timestamp, say, which the
    same code names), told apart by the message the explosion writes ("completion ID of ITEM on ...")."""
    rows = quarantine[(quarantine["table"] == "completions") & quarantine["error_code"].isin(RESOLVABLE)
                      & quarantine["plant_id"].notna() & quarantine["business_date"].notna()]
    prefix = ("completion " + rows["source_key"].astype("str") + " of ").to_numpy(dtype=str)
    exploded = np.char.startswith(rows["message"].astype("str").to_numpy(dtype=str), prefix)
    return rows[exploded]


def open_rows(quarantine: pd.DataFrame) -> pd.DataFrame:
    """Quarantined explosion rejects (`explosion_rejects`) that are not released yet."""
    rows = explosion_rejects(quarantine)
    return rows[rows["released_by_run"].isna()].reset_index(drop=True)


def _items_of(rows: pd.Series) -> pd.Series:
    """The item_id of each quarantined row (its JSON), parsed in one pass."""
    if rows.empty:
        return pd.Series([], dtype="str")
    parsed = pd.read_json(io.StringIO("\n".join(rows.tolist())), lines=True, dtype=False)
    return parsed["item_id"].astype("str")


def releasable_dates(open_completions: pd.DataFrame, inputs: Inputs) -> pd.DataFrame:
    """(plant, date) of the open quarantined completions whose (plant, item, date) explodes now."""
    if open_completions.empty:
        return _pairs()
    keys = pd.DataFrame({"plant_id": open_completions["plant_id"].astype("str"),
                         "item_id": _items_of(open_completions["row"]).to_numpy(),
                         "business_date": open_completions["business_date"].astype("datetime64[ns]")})
    keys = keys.drop_duplicates().reset_index(drop=True)
    catalog = consumption.ExplosionCatalog(inputs.bom, inputs.items, inputs.uom_conversions, inputs.broken_bom)
    tagged = catalog.tag(keys)
    explodes = ~tagged["key"].isin(catalog.errors["key"])
    return tagged.loc[explodes, ["plant_id", "business_date"]].drop_duplicates().reset_index(drop=True)


def in_read_window(pairs: pd.DataFrame, earliest: dt.date | None) -> pd.DataFrame:
    """The pairs on or after `earliest` (None: every pair): a source read by window (SQL) holds no
    completions before it, and a date recomputed without them would lose its postings."""
    if earliest is None or pairs.empty:
        return pairs
    return pairs[pairs["business_date"] >= pd.Timestamp(earliest)].reset_index(drop=True)


def carried_rows(previous: pd.DataFrame, quarantine: pd.DataFrame, scope: pd.DataFrame, run_id: str,
                 at: pd.Timestamp) -> pd.DataFrame:
    """Rows of the quarantine files the run rewrites that stay there although the run does not
    reject them again: released rows as they were, and open rows with a resolvable code that the
    run no longer rejects, marked released by this run."""
    if previous.empty:
        return previous
    rows = explosion_rejects(previous).merge(scope, on=["plant_id", "business_date"], how="inner")
    kept = rows[rows["released_by_run"].notna()]
    still = quarantine.loc[quarantine["table"] == "completions", ["plant_id", "business_date", "source_key",
                                                                  "error_code"]].drop_duplicates()
    opened = rows[rows["released_by_run"].isna()].merge(still, how="left", indicator=True,
                                                         on=["plant_id", "business_date", "source_key", "error_code"])
    freed = opened[opened["_merge"] == "left_only"].drop(columns="_merge")
    freed = freed.assign(released_by_run=run_id, released_at=at)
    return pd.concat([kept, freed], ignore_index=True)
