"""Landing pruning: a manifest of what every landing file holds, and the files a run must read.

The warehouse keeps a manifest (dataset `landing_manifest`) of every landing file of completions,
movements and stock counts that a run has seen: its path, size, mtime, a fingerprint of its bytes,
and what its rows say about themselves (min/max event time, min/max version of a completion,
min/max row id, its plants and (plant, location) sites, and whether a row lacks a plant or an
event time). A file is described once, by reading it whole, the first time it is seen or when it
changed (size or mtime differ and so do its bytes); an unchanged file is not opened again. CSV
and Parquet are treated alike: coercion decides what a row holds (a Parquet footer's statistics
are of raw values: ' P1 ' is plant P1 and a text timestamp has no order), so a file's facts are
those of its coerced rows.

A run for dates D reads, of completions and movements, only the files that can change what it
writes (`choose`):

- files with an event in the UTC span of the dates it may recompute (D and the look-back, each
  widened by the day either side that any time zone adds) and of the windows of the counts those
  dates touch (a count's window reaches back to the previous count of its key: its flows count);
- files with a row that has no readable plant or event time (its quarantine row is written to the
  run's date by every run);
- the closure under ids: every version of an id of those files must be read with it (the latest
  version wins; two movements with one id are a DUPLICATE_ID): for completions a file whose id
  range meets the id range of a file chosen and that holds a version at least as new as the
  oldest version chosen (an older one can neither win nor tie); for movements a file that shares
  an id hash with a file chosen. An id of a file added this way that has no row in the span is
  dated outside it, whatever its latest version: the closure takes one step.

Master data and stock counts are read whole (a count's previous count may be of any age). A
pruned read adds the plants of the files it did not read (from the manifest), so that the plants
of a run are those of a full read (the manifest's sites, kept in its rows, are no longer read).
The manifest is staged in the run's transaction and published with its outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import errors
from pipeline.config import Config
from pipeline.contract import inputs, schemas
from pipeline.domain import variance
from pipeline.engine import strings
from pipeline.intake import coerce, scan
from pipeline.store.warehouse import Transaction, Warehouse

DATASET = "landing_manifest"
DESCRIBED = ("completions", "movements", "stock_counts")  # tables whose files the manifest describes
FLOWS = ("completions", "movements")  # tables whose files a run prunes
SITE_SEP = "\x1f"
_DAY = pd.Timedelta(days=1)

Files = dict[str, list[tuple[str, Path]]]


# ------------------------------------------------------------------------------------ the manifest


def file_fingerprint(path: Path) -> str:
    """BLAKE2b (128 bits) of a file's bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with scan.reading(path), path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(table: str, source: str, path: Path, *, size: int, mtime_ns: int, fingerprint: str,
             now: pd.Timestamp) -> dict[str, object]:
    """The manifest entry of one landing file, from the columns that place its rows (SourceError if
    it cannot be read or lacks a required column, as the run's own read would say).

    Only the plant, location, id and time columns are read (a Parquet file's footer names its
    columns) and coerced as a run coerces them; every row counts, valid or not, so each fact is a
    superset of what the run accepts (a wider range only makes a file be read more often)."""
    event = inputs.EVENT_TIME[table]
    key = schemas.INPUT_KEYS[table]
    wanted = [c for c in ("plant_id", "location_id", key, event, "recorded_at") if c is not None]
    with scan.reading(path):
        if path.suffix.lower() == ".parquet":
            names = pq.ParquetFile(path).schema_arrow.names
            _check_columns(table, source, names)
            frame = pq.read_table(path, columns=[n for n in names if n.strip() in wanted]).to_pandas()
        elif path.stat().st_size == 0:
            frame = pd.DataFrame()
        else:
            header = pd.read_csv(path, nrows=0, **scan.CSV_OPTIONS).columns
            _check_columns(table, source, header)
            frame = pd.read_csv(path, usecols=[c for c in header if str(c).strip() in wanted], **scan.CSV_OPTIONS)
    frame = frame.rename(columns=lambda c: str(c).strip())

    def column(name: str, kind: str) -> pd.Series:
        if name not in frame.columns:
            return pd.Series(None, index=frame.index, dtype="object" if kind == "str" else "datetime64[us, UTC]")
        return coerce.coerce_column(frame[name], kind)

    plant, location = column("plant_id", "str"), column("location_id", "str")
    times = column(event, "timestamp")
    version = column("recorded_at", "timestamp").fillna(times) if table == "completions" else times
    ids = column(key, "str").dropna().astype("str") if key is not None else pd.Series([], dtype="str")
    placed = plant.notna() & location.notna()
    sites = (plant[placed].astype("str") + SITE_SEP + location[placed].astype("str")).unique()
    return {
        "table": table, "source": source, "size": size, "mtime_ns": mtime_ns, "fingerprint": fingerprint,
        "rows": len(frame),
        "min_event": _stamp(times.min()), "max_event": _stamp(times.max()),
        "min_version": _stamp(version.min()), "max_version": _stamp(version.max()),
        "min_id": None if ids.empty else str(ids.min()), "max_id": None if ids.empty else str(ids.max()),
        "floating": bool((plant.isna() | times.isna()).any()),
        "plants": sorted(set(plant.dropna().astype("str"))), "sites": sorted(str(s) for s in sites),
        "described_at": now,
        "id_hashes": np.unique(strings.key_hashes(ids)).tobytes() if table == "movements" else None,
    }


def _check_columns(table: str, source: str, names: Iterable[object]) -> None:
    """The run's own message for a file without a required column (`coerce.coerce_table`)."""
    present = [str(n).strip() for n in names]
    missing = [c for c in schemas.required_columns(table) if c not in present]
    if missing and present:
        raise errors.SourceError(
            f"{source}: required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} missing (has: {', '.join(map(str, names)) or 'none'})")


def _stamp(value: object) -> pd.Timestamp | None:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)  # type: ignore[arg-type]


@dataclass
class Manifest:
    """The manifest entries of every current landing file of the described tables (`survey`)."""

    entries: list[dict[str, object]]
    fresh: set[str] = field(default_factory=set)  # sources described by this survey (new or changed)
    replaces: list[str] = field(default_factory=list)  # manifest files read (replaced at commit)

    def frame(self) -> pd.DataFrame:
        columns = schemas.LANDING_MANIFEST.names
        frame = pd.DataFrame(self.entries, columns=columns)
        for name in ("min_event", "max_event", "min_version", "max_version", "described_at"):
            frame[name] = pd.to_datetime(frame[name], utc=True)
        return frame

    def plants(self, tables: Iterable[str] = DESCRIBED) -> set[str]:
        wanted = set(tables)
        return {str(p) for e in self.entries if e["table"] in wanted for p in e["plants"]}  # type: ignore[attr-defined]

    def stage(self, txn: Transaction, run_id: str) -> None:
        """The manifest as one file of this run, replacing the manifest files it was read from."""
        own = f"part-{run_id}.parquet"
        txn.put_file(DATASET, own, self.frame())
        for name in self.replaces:
            if name != own:
                txn.delete(DATASET, {}, file_name=name)
        self.replaces = [own]  # a backfill's next batch replaces this one


def load(warehouse: Warehouse) -> tuple[dict[str, dict[str, object]], list[str]]:
    """The newest manifest entry of each source, and the manifest files they were read from.

    Runs of different plants may commit at the same time: each writes the whole manifest it read
    plus what it learnt, and deletes the files it read; a file deleted while it is listed here was
    replaced by a newer one, and skipping it only makes a file be described again."""
    fs = warehouse.filesystem
    infos = fs.get_file_info(pafs.FileSelector(warehouse.path(DATASET), allow_not_found=True))
    entries: dict[str, dict[str, object]] = {}
    names = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        try:
            rows = pq.read_table(info.path, filesystem=fs, schema=schemas.LANDING_MANIFEST).to_pylist()
        except (FileNotFoundError, pa.ArrowException, OSError):
            continue
        names.append(info.base_name)
        for row in rows:
            known = entries.get(str(row["source"]))
            if known is None or row["described_at"] >= known["described_at"]:  # type: ignore[operator]
                entries[str(row["source"])] = row
    return entries, names


def survey(files: Mapping[str, list[tuple[str, Path]]], warehouse: Warehouse) -> Manifest:
    """Manifest entries of every current file of the described tables: an unchanged file's entry
    as recorded, a new or changed one described now (read whole once)."""
    known, names = load(warehouse)
    now = pd.Timestamp.now(tz="UTC").floor("us")
    entries: list[dict[str, object]] = []
    fresh: set[str] = set()
    for table in DESCRIBED:
        for source, path in files.get(table, []):
            with scan.reading(path):
                stat = path.stat()
            entry = known.get(source)
            if entry is not None and entry["table"] == table and entry["size"] == stat.st_size \
                    and entry["mtime_ns"] == stat.st_mtime_ns:
                entries.append(entry)
                continue
            fingerprint = file_fingerprint(path)
            if entry is not None and entry["table"] == table and entry["fingerprint"] == fingerprint:
                entries.append({**entry, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})  # touched only
                continue
            entries.append(describe(table, source, path, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                    fingerprint=fingerprint, now=now))
            fresh.add(source)
    return Manifest(entries=entries, fresh=fresh, replaces=names)


# ------------------------------------------------------------------------------------ choosing files


def with_plants(files: Files, manifest: Manifest, plants: Sequence[str] | None) -> Files:
    """The landing files, less the described files that hold no row of `plants` (and no row
    without a plant): a run of some plants does not open them."""
    if not plants:
        return files
    wanted = set(plants)
    holds = {str(e["source"]) for e in manifest.entries
             if e["floating"] or wanted & set(e["plants"])}  # type: ignore[call-overload]
    return {table: [(s, p) for s, p in listed if table not in DESCRIBED or s in holds]
            for table, listed in files.items()}


def flow_span(config: Config, dates: Sequence[dt.date], counts: pd.DataFrame,
              plants: Sequence[str] | None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The UTC instants [lo, hi] whose completions and movements a run for `dates` may need: the
    dates it may recompute (each date and its look-back; a business date lies within
    [D - 1 day, D + 2 days) in UTC, whatever the zone), and the windows of every count those
    dates touch (`variance.variance_scope` over every date it may recompute)."""
    candidates = sorted({d - dt.timedelta(days=i) for d in dates for i in range(config.lookback_days + 1)})
    lo = pd.Timestamp(candidates[0], tz="UTC") - _DAY
    hi = pd.Timestamp(candidates[-1], tz="UTC") + 2 * _DAY
    if plants:
        counts = counts[counts["plant_id"].isin(set(plants))]
    chosen_plants = sorted(set(plants)) if plants else sorted(counts["plant_id"].dropna().unique())
    if counts.empty or not chosen_plants:
        return lo, hi
    grid = pd.MultiIndex.from_product(
        [chosen_plants, pd.to_datetime(pd.Series(candidates)).astype("datetime64[ns]")],
        names=["plant_id", "business_date"]).to_frame(index=False)
    grid["plant_id"] = grid["plant_id"].astype("str")
    touched = variance.variance_scope(types.SimpleNamespace(stock_counts=counts), grid,  # type: ignore[arg-type]
                                      config).counts
    if not touched.empty:
        first, last = touched["previous_counted_at"].min(), touched["counted_at"].max()
        lo = min(lo, first) if pd.notna(first) else lo
        hi = max(hi, last) if pd.notna(last) else hi
    return lo, hi


@dataclass
class Choice:
    """What a pruned read reads of completions and movements, and what it knows of the rest."""

    files: Files
    unread_plants: set[str]
    read: dict[str, int]
    skipped: dict[str, int]


def choose(manifest: Manifest, files: Files, lo: pd.Timestamp, hi: pd.Timestamp,
           plants: Sequence[str] | None) -> Choice:
    """The completion and movement files a run must read (see the module's docstring)."""
    frame = manifest.frame()
    listed = {s for table in FLOWS for s, _ in files.get(table, [])}
    frame = frame[frame["table"].isin(FLOWS) & frame["source"].isin(listed)].reset_index(drop=True)
    wanted = set(plants) if plants else None
    if wanted is not None:
        holds = frame["floating"].to_numpy(dtype=bool) | np.array(
            [bool(wanted & set(p)) for p in frame["plants"]], dtype=bool)
    else:
        holds = np.ones(len(frame), dtype=bool)
    overlaps = ((frame["rows"] > 0) & (frame["min_event"] <= hi) & (frame["max_event"] >= lo)).to_numpy(dtype=bool)
    need = (frame["floating"].to_numpy(dtype=bool) | overlaps) & holds
    _close_completions(frame, need, holds)
    _close_movements(frame, need, holds)
    reading = set(frame.loc[need, "source"])
    unread = frame[~need & holds]
    unread_plants = {str(p) for ps in unread["plants"] for p in ps}
    if wanted is not None:
        unread_plants &= wanted
    chosen_files = {table: [(s, p) for s, p in files.get(table, []) if s in reading] for table in FLOWS}
    return Choice(files=chosen_files, unread_plants=unread_plants,
                  read={t: len(chosen_files[t]) for t in FLOWS},
                  skipped={t: len(files.get(t, [])) - len(chosen_files[t]) for t in FLOWS})


def _close_completions(frame: pd.DataFrame, need: np.ndarray, holds: np.ndarray) -> None:
    """Add to `need` every completion file that may hold a version, as new as the oldest version of
    the files chosen so far, of an id of theirs: its id range meets theirs (ids ordered as strings).

    One pass: the rows that matter are those of the chosen files (which hold every row in the span);
    an id of an added file without a version in the span is dated outside it whatever its latest
    version, so the added files' own ids need no closure of their own."""
    mine = (frame["table"] == "completions").to_numpy(dtype=bool) & frame["min_id"].notna().to_numpy(dtype=bool) \
        & holds
    chosen = need & mine
    rest = np.flatnonzero(~need & mine)
    oldest = frame.loc[chosen, "min_version"].min()
    if not chosen.any() or not len(rest) or pd.isna(oldest):
        return
    low, high = frame["min_id"].to_numpy(dtype=object), frame["max_id"].to_numpy(dtype=object)
    starts, ends = _merged(low[chosen], high[chosen])
    at = np.searchsorted(starts, high[rest], side="right") - 1
    hit = at >= 0
    hit[hit] = ends[at[hit]] >= low[rest][hit]
    hit &= (frame["max_version"].iloc[rest] >= oldest).to_numpy(dtype=bool)
    need[rest[hit]] = True


def _close_movements(frame: pd.DataFrame, need: np.ndarray, holds: np.ndarray) -> None:
    """Add to `need` every movement file that holds an id of a file chosen so far (two rows with one
    id are judged together: identical repeats collapse, others are DUPLICATE_ID), by the files' id
    hashes; one pass, as for completions."""
    mine = (frame["table"] == "movements").to_numpy(dtype=bool) & holds
    chosen = np.flatnonzero(need & mine)
    rest = np.flatnonzero(~need & mine)
    if not len(chosen) or not len(rest):
        return
    hashes = [np.frombuffer(h, dtype=np.uint64) if isinstance(h, bytes) else np.zeros(0, dtype=np.uint64)
              for h in frame["id_hashes"]]
    read = np.unique(np.concatenate([hashes[i] for i in chosen]))
    pool = np.concatenate([hashes[i] for i in rest])
    owner = np.repeat(rest, [len(hashes[i]) for i in rest])
    need[np.unique(owner[np.isin(pool, read)])] = True


def _merged(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intervals [start, end] merged into sorted, disjoint ones (strings compare as Python does)."""
    order = sorted(range(len(starts)), key=lambda i: starts[i])  # one per file, not per row
    out_starts: list[object] = []
    out_ends: list[object] = []
    for i in order:
        if out_ends and starts[i] <= out_ends[-1]:
            out_ends[-1] = max(out_ends[-1], ends[i])  # type: ignore[type-var]
        else:
            out_starts.append(starts[i])
            out_ends.append(ends[i])
    return np.array(out_starts, dtype=object), np.array(out_ends, dtype=object)
