"""Acceptance of the landing tables: coerced and validated rows become the run's typed inputs, with the
latest version of each completion, business dates and base units; the rest is quarantined.

Every input row leaves this module either accepted (typed, with its business date) or as a
quarantine row with a code and a message. What cannot be read at all (a missing required
column, an unreadable file) stops the run with a one-line `SourceError`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.contract import schemas
from pipeline.contract.inputs import EVENT_TIME, Inputs, TableStats, empty_broken_bom, empty_table
from pipeline.contract.quarantine import empty_like, empty_quarantine, quarantine_rows, source_keys
from pipeline.domain.timezones import VALID_ZONES, business_dates, plant_timezones
from pipeline.engine.strings import duplicated_mask, isin
from pipeline.intake.coerce import coerce_table, finalise_dtypes


def _dedupe_by_key(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Identical repeats collapse to one row; conflicting rows with one key are DUPLICATE_ID."""
    key = schemas.INPUT_KEYS[table]
    natural = schemas.NATURAL_KEYS.get(table)
    if frame.empty or (key is None and natural is None):
        return frame, empty_quarantine(), 0
    values = frame[key] if key is not None else source_keys(table, frame)
    if not duplicated_mask(values).any():
        return frame, empty_quarantine(), 0
    content = list(schemas.column_kinds(table))
    unique = frame.drop_duplicates(subset=content)
    repeated = len(frame) - len(unique)
    values = values.loc[unique.index]
    conflicting = values.duplicated(keep=False)
    if not conflicting.any():
        return unique, empty_quarantine(), repeated
    bad = unique[conflicting]
    named = values[conflicting]
    message = (
        f"{key or ' / '.join(natural or ())} " + named.astype("str").map(repr) + " has conflicting rows ("
        + named.groupby(named).transform("size").astype("str") + " versions)"
    )
    return unique[~conflicting], quarantine_rows(table, bad, "DUPLICATE_ID", message), repeated


def latest_completions(completions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """One version per completion: the latest `recorded_at` wins; ties that differ are ambiguous.

    Returns the winning rows, DUPLICATE_ID quarantine rows, and how many rows were superseded or
    repeated.
    """
    if completions.empty:
        return completions, empty_quarantine(), 0
    frame = completions.copy(deep=False)
    frame["recorded_at"] = frame["recorded_at"].fillna(frame["completed_at"])
    # only ids sent more than once need versions compared (a few percent of the rows at most)
    repeated = duplicated_mask(frame["completion_id"])
    if not repeated.any():
        return frame, empty_quarantine(), 0
    positions = np.flatnonzero(repeated)
    versions = frame.iloc[positions].set_axis(positions)  # labelled by position in `frame`
    content = list(schemas.column_kinds("completions"))
    unique = versions.drop_duplicates(subset=content)
    latest = unique.groupby("completion_id", sort=False)["recorded_at"].transform("max")
    winners = unique[unique["recorded_at"] == latest]
    conflicting = winners["completion_id"].duplicated(keep=False)  # an id sent once has no rival
    # the rows sent once, then the winning versions: one copy of the table, not one per step
    current = frame.take(np.concatenate([np.flatnonzero(~repeated), winners.index[~conflicting]]))
    superseded = len(frame) - len(current) - int(conflicting.sum())
    if not conflicting.any():
        return current, empty_quarantine(), superseded
    bad = winners[conflicting]
    message = (
        "completion_id " + bad["completion_id"].astype("str").map(repr)
        + " has " + bad.groupby("completion_id")["completion_id"].transform("size").astype("str")
        + " different versions recorded at " + bad["recorded_at"].astype("str")
    )
    return current, quarantine_rows("completions", bad, "DUPLICATE_ID", message), superseded


UNIT_QUANTITIES = {"completions": ["qty_good", "qty_scrap"], "stock_counts": ["counted_qty"], "movements": ["qty"]}


def _in_base_units(
    table: str, frame: pd.DataFrame, quantities: list[str], items: pd.DataFrame, conversions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quantities of rows that name a `uom` converted to the item's base unit (the conversion rules of
    BOM lines); rows whose unit cannot be converted are NO_UOM_CONVERSION."""
    from pipeline.domain.bom import conversion_factors

    probe = frame[["item_id", "uom"]].rename(columns={"item_id": "component_item_id"})
    known = isin(frame["item_id"], items["item_id"])
    factor = conversion_factors(probe, items, conversions).where(frame["uom"].notna(), 1.0)
    failed = known & factor.isna()  # unknown items are judged (and rejected) elsewhere
    converted = frame.copy(deep=False)
    for column in quantities:
        converted[column] = frame[column] * factor.fillna(1.0)
    converted["uom"] = None
    if not failed.any():
        return converted, empty_quarantine()
    bad = frame[failed]
    base = bad["item_id"].map(items.set_index("item_id")["uom"])
    message = ("no conversion from " + bad["uom"].astype("str") + " to " + base.astype("str") + " for item "
               + bad["item_id"].astype("str"))
    return converted[~failed].reset_index(drop=True), quarantine_rows(table, bad, "NO_UOM_CONVERSION", message)


def _broken_bom(quarantine: pd.DataFrame) -> pd.DataFrame:
    """(plant_id, parent_item_id, message) of every rejected BOM line whose parent can be read.

    Exploding such a parent with its remaining lines would be a guess; the explosion fails it.
    """
    rows = quarantine[quarantine["table"] == "bom"]
    if rows.empty:
        return empty_broken_bom()
    original = pd.read_json(io.StringIO("\n".join(rows["row"])), lines=True, dtype=False)
    parent = original.get("parent_item_id", pd.Series(None, index=original.index)).astype("object")
    plant = original.get("plant_id", pd.Series(None, index=original.index)).astype("object")
    parent = parent.where(parent.notna() & (parent.astype("str").str.strip() != ""))
    broken = pd.DataFrame({
        "plant_id": plant.where(plant.notna() & (plant.astype("str").str.strip() != "")).to_numpy(),
        "parent_item_id": parent.astype("str").str.strip().to_numpy(),
        "message": ("BOM line " + rows["source_key"].astype("str") + " is invalid (" + rows["message"].astype("str")
                    + ")").to_numpy(),
    })
    broken = broken[parent.notna().to_numpy()]
    broken["plant_id"] = broken["plant_id"].map(lambda v: str(v).strip(), na_action="ignore")
    return broken.reset_index(drop=True)


def load_inputs(
    raw: Mapping[str, Iterable[tuple[str, pd.DataFrame]]],
    *,
    timezone_overrides: Mapping[str, str] | None = None,
) -> Inputs:
    """Coerce, validate and key-check every input table; attach business dates."""
    loader = InputLoader(raw, timezone_overrides=timezone_overrides)
    batch = loader.acceptor().accept(raw.get("completions", []))
    return loader.finish(batch.accepted, batch.summary())


@dataclass
class CompletionSummary:
    """What `InputLoader.finish` needs to know of completions it was not given row by row."""

    read: int = 0
    superseded: int = 0
    accepted: int = 0
    quarantine: list[pd.DataFrame] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # plants named by a completion, accepted or not

    def add(self, other: CompletionSummary) -> None:
        self.read += other.read
        self.superseded += other.superseded
        self.accepted += other.accepted
        self.quarantine.extend(other.quarantine)
        self.seen |= other.seen


@dataclass
class CompletionBatch:
    """Completions of some files (or of one bucket of them), accepted and rejected."""

    accepted: pd.DataFrame
    quarantine: pd.DataFrame
    read: int
    superseded: int

    def summary(self) -> CompletionSummary:
        seen = set(self.accepted["plant_id"].dropna().unique()) | set(self.quarantine["plant_id"].dropna())
        return CompletionSummary(read=self.read, superseded=self.superseded, accepted=len(self.accepted),
                                 quarantine=[self.quarantine] if not self.quarantine.empty else [], seen=seen)


@dataclass
class CompletionAcceptor:
    """Accepts completions: coerced, the latest version per id, dated, in base units.

    Any number of batches can be accepted, one after the other or in other processes, as long as
    every version of a completion id is in the same batch.
    """

    bad_plants: set[str]
    zones: pd.DataFrame
    items: pd.DataFrame
    conversions: pd.DataFrame

    def accept(self, files: Iterable[tuple[str, pd.DataFrame]]) -> CompletionBatch:
        valid, bad_rows = coerce_table("completions", list(files))
        read = len(valid) + len(bad_rows)
        valid, dupes, superseded = latest_completions(valid)
        dated, bad_plant = _dated("completions", valid.reset_index(drop=True), self.bad_plants, self.zones)
        converted, bad_unit = _converted("completions", dated, self.items, self.conversions)
        rejects = [q for q in (bad_rows, dupes, bad_plant, bad_unit) if not q.empty]
        quarantine = pd.concat(rejects, ignore_index=True) if rejects else empty_quarantine()
        return CompletionBatch(accepted=converted.reset_index(drop=True), quarantine=quarantine, read=read,
                               superseded=superseded)


def _dated(table: str, frame: pd.DataFrame, bad_plants: set[str], zones: pd.DataFrame
           ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of plants without a valid zone rejected; the rest with their business date."""
    bad = frame["plant_id"].isin(bad_plants)
    rejected = empty_quarantine()
    if bad.any():
        rows = frame[bad]
        rejected = quarantine_rows(table, rows, "INVALID", "plant " + rows["plant_id"].map(repr)
                                   + " has no valid time zone")
        frame = frame[~bad].reset_index(drop=True)
    dated = frame.assign(business_date=business_dates(frame[EVENT_TIME[table]], frame["plant_id"], zones))
    return dated, rejected


def _converted(table: str, frame: pd.DataFrame, items: pd.DataFrame, conversions: pd.DataFrame
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    if frame.empty or frame["uom"].isna().all():
        return frame, empty_quarantine()
    return _in_base_units(table, frame, UNIT_QUANTITIES[table], items, conversions)


class InputLoader:
    """`load_inputs` in three steps, so that completions can be accepted a bucket at a time.

    The constructor coerces and checks every table but completions; `acceptor()` accepts the
    completions of some files (any number of times, for disjoint sets of completion ids, in this
    process or another); `finish` files what was rejected under business dates and returns the
    inputs.
    """

    def __init__(
        self,
        raw: Mapping[str, Iterable[tuple[str, pd.DataFrame]]],
        *,
        timezone_overrides: Mapping[str, str] | None = None,
        movements_later: bool = False,
    ) -> None:
        """movements_later: movements are not read here but given to `add_movements` (a pruned
        read chooses its movement files from the counts)."""
        accepted: dict[str, pd.DataFrame] = {}
        quarantined: list[pd.DataFrame] = []
        stats: dict[str, TableStats] = {}
        for table in schemas.INPUT_MODELS:
            if table == "completions":
                continue
            files = [] if table == "movements" and movements_later else raw.get(table, [])
            valid, bad_rows = coerce_table(table, files)  # a lazy source reads a file at a time
            stat = TableStats(read=len(valid) + len(bad_rows))
            valid, dupes, stat.superseded = _dedupe_by_key(table, valid)
            accepted[table] = valid.reset_index(drop=True)
            quarantined.extend([bad_rows, dupes])
            stats[table] = stat

        plants = accepted["plants"]
        bad_zone = ~plants["timezone"].fillna("UTC").isin(VALID_ZONES)
        if bad_zone.any():
            quarantined.append(
                quarantine_rows(
                    "plants",
                    plants[bad_zone],
                    "INVALID",
                    "timezone " + plants.loc[bad_zone, "timezone"].map(repr) + " is not an IANA time zone",
                )
            )
        accepted["plants"] = plants[~bad_zone].reset_index(drop=True)
        self.bad_plants = set(plants.loc[bad_zone, "plant_id"])
        self.overrides = dict(timezone_overrides or {})
        self.seen: set[str] = set()
        self.accepted = accepted
        self.quarantined = quarantined
        self.stats = stats
        self._note_plants(("stock_counts", "movements", "bom"), quarantined)
        for table in ("stock_counts", "movements"):
            self._accept_flows(table)
        # costs of items that do not exist cannot value anything
        self._reject("item_costs", ~isin(accepted["item_costs"]["item_id"], accepted["items"]["item_id"]),
                     "UNKNOWN_ITEM", lambda rows: "item " + rows["item_id"].map(repr) + " is not in items")
        for table, stat in stats.items():
            stat.accepted = len(accepted[table])

    def _note_plants(self, tables: Iterable[str], rejected: list[pd.DataFrame]) -> None:
        """Plants named by accepted rows of `tables` or by rejected counts and movements are plants
        (a plant whose every row was rejected is still a plant); zones follow the plants seen (a
        plant absent from the plants table and the overrides is in UTC, whoever names it)."""
        for table in tables:
            self.seen |= set(self.accepted[table]["plant_id"].dropna().unique())
        for rejects in rejected:
            plant_rows = rejects["table"].isin(["stock_counts", "movements"])
            self.seen |= set(rejects.loc[plant_rows, "plant_id"].dropna())
        self.zones = plant_timezones(self.accepted["plants"], self.seen - self.bad_plants, self.overrides)

    def _accept_flows(self, table: str) -> None:
        """Counts or movements dated; those of unknown items rejected; quantities in base units."""
        accepted, quarantined = self.accepted, self.quarantined
        frame, rejected = _dated(table, accepted[table], self.bad_plants, self.zones)
        accepted[table] = frame
        quarantined.append(rejected)
        # counts and movements of items that do not exist cannot be valued or booked
        self._reject(table, ~isin(accepted[table]["item_id"], accepted["items"]["item_id"]), "UNKNOWN_ITEM",
                     lambda rows: "item " + rows["item_id"].map(repr) + " is not in items")
        # quantities given in another unit than the item's base unit are converted, or rejected
        frame, rejected = _converted(table, accepted[table], accepted["items"], accepted["uom_conversions"])
        accepted[table] = frame
        quarantined.append(rejected)
        # counted now: movements may be let go of before `finish` (which recounts the counts it rejects)
        self.stats[table].accepted = len(accepted[table])

    def add_movements(self, files: Iterable[tuple[str, pd.DataFrame]]) -> None:
        """The movements of a loader made with `movements_later`."""
        valid, bad_rows = coerce_table("movements", files)
        stat = TableStats(read=len(valid) + len(bad_rows))
        valid, dupes, stat.superseded = _dedupe_by_key("movements", valid)
        self.accepted["movements"] = valid.reset_index(drop=True)
        self.quarantined.extend([bad_rows, dupes])
        self.stats["movements"] = stat
        self._note_plants(["movements"], [bad_rows, dupes])
        self._accept_flows("movements")

    def add_known(self, plants: Iterable[str]) -> None:
        """Plants of landing rows a pruned read did not read (from the manifest), as if seen."""
        self.seen |= set(plants)
        self.zones = plant_timezones(self.accepted["plants"], self.seen - self.bad_plants, self.overrides)

    @property
    def items(self) -> pd.DataFrame:
        return self.accepted["items"]

    @property
    def stock_counts(self) -> pd.DataFrame:
        """The accepted counts."""
        return self.accepted["stock_counts"]

    def _reject(self, table: str, mask: pd.Series, code: str, message: Callable[[pd.DataFrame], pd.Series]) -> None:
        """Move the accepted rows of `table` where `mask` holds to quarantine, with message(those rows)."""
        if mask.any():
            rows = self.accepted[table][mask]
            self.quarantined.append(quarantine_rows(table, rows, code, message(rows)))
            self.accepted[table] = self.accepted[table][~mask].reset_index(drop=True)

    @property
    def bom(self) -> pd.DataFrame:
        return self.accepted["bom"]

    @property
    def uom_conversions(self) -> pd.DataFrame:
        return self.accepted["uom_conversions"]

    @property
    def broken_bom(self) -> pd.DataFrame:
        """(plant_id, parent_item_id, message) of the rejected BOM lines (see `_broken_bom`)."""
        rejects = [q for q in self.quarantined if not q.empty]
        return _broken_bom(pd.concat(rejects, ignore_index=True) if rejects else empty_quarantine())

    def let_go_of_movements(self) -> pd.DataFrame:
        """The accepted movements, no longer held here: `finish` gives inputs without movement rows,
        for a caller that keeps only what it needs of them."""
        movements = self.accepted["movements"]
        self.accepted["movements"] = empty_like(movements)
        return movements

    def acceptor(self) -> CompletionAcceptor:
        """What accepts completions, given this master data (picklable, for worker processes)."""
        return CompletionAcceptor(bad_plants=self.bad_plants, zones=self.zones, items=self.accepted["items"],
                                  conversions=self.accepted["uom_conversions"])

    def finish(self, completions: pd.DataFrame | None, summary: CompletionSummary) -> Inputs:
        """The inputs, given the accepted completions (none, when they were streamed) and the
        summary of every batch of them."""
        if completions is None:
            completions = finalise_dtypes("completions", empty_table("completions")).assign(
                business_date=pd.Series([], dtype="datetime64[ns]"))
        accepted, quarantined = self.accepted, [*self.quarantined, *summary.quarantine]
        stat = TableStats(read=summary.read, accepted=summary.accepted, superseded=summary.superseded)
        seen = summary.seen
        zones = plant_timezones(accepted["plants"], (self.seen | seen) - self.bad_plants, self.overrides)
        # a count at a location with no completions or movements is a stock point like any other:
        # its book stock is its opening quantity (issue 12; UNKNOWN_LOCATION is no longer a code)
        counts = accepted["stock_counts"]
        quarantine = pd.concat([q for q in quarantined if not q.empty] or [empty_quarantine()], ignore_index=True)
        # a rejected row whose plant and moment could be read belongs to its own business date
        undated = quarantine["business_date"].isna() & quarantine["event_at"].notna() & quarantine["plant_id"].notna()
        if undated.any():
            rows = quarantine[undated]
            quarantine.loc[undated, "business_date"] = business_dates(rows["event_at"], rows["plant_id"], zones)
        stats = {table: self.stats[table] if table != "completions" else stat for table in schemas.INPUT_MODELS}
        stats["stock_counts"].accepted = len(counts)
        for table, table_stat in stats.items():
            table_stat.quarantined = int((quarantine["table"] == table).sum())
        return Inputs(
            broken_bom=_broken_bom(quarantine),
            plants=zones,
            items=accepted["items"],
            uom_conversions=accepted["uom_conversions"],
            bom=accepted["bom"],
            completions=completions,
            stock_counts=counts,
            movements=accepted["movements"],
            item_costs=accepted["item_costs"],
            periods=accepted["periods"],
            quarantine=quarantine,
            stats=stats,
        )
