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

The manifest describes pieces (issue 17.1): each row group of a Parquet file is a piece with
facts of its own (its coerced rows: `row_group` 0..n-1, `row_groups` n), a CSV file (or a
Parquet file without row groups) is one whole-file piece (`row_group` null). Every rule below is
of pieces, as it was of files, and a run reads only the row groups it chose of a Parquet file
(`Choice.row_groups`; their rows keep their lines in the whole file), so a monthly file or a
growing history file is not read whole every night. A Parquet file known only from a manifest
written before pieces (no `row_groups`) is described again, once. Footer statistics are not used.

A run for dates D reads, of completions and movements, only the pieces that can change what it
writes (`choose`; "file" below reads "piece"):

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
    """The manifest entry of one landing file as a whole (one piece; `describe_pieces` gives a
    Parquet file's row groups their own entries)."""
    frame = _placing_columns(table, source, path)
    return _facts(table, frame, [len(frame)], source=source, size=size, mtime_ns=mtime_ns,
                  fingerprint=fingerprint, now=now, row_groups=None)[0]


def describe_pieces(table: str, source: str, path: Path, *, size: int, mtime_ns: int, fingerprint: str,
                    now: pd.Timestamp) -> list[dict[str, object]]:
    """The manifest entries of one landing file, one per piece (SourceError if it cannot be read or
    lacks a required column, as the run's own read would say): a Parquet file's row groups, each
    with the facts of its own coerced rows (row_group 0..n-1 of row_groups n); a CSV file, or a
    Parquet file without row groups, as one whole-file piece (row_group null).

    Only the plant, location, id and time columns are read (a Parquet file's footer names its
    columns), once for the whole file, and coerced as a run coerces them; every row counts, valid
    or not, so each fact is a superset of what the run accepts (a wider range only makes a piece
    be read more often). Coercion is value by value, so a row group's facts are those the run
    finds reading that row group alone."""
    frame = _placing_columns(table, source, path)
    groups: list[int] | None = None
    if path.suffix.lower() == ".parquet":
        with scan.reading(path):
            metadata = pq.ParquetFile(path).metadata
        groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    sizes = groups if groups else [len(frame)]
    return _facts(table, frame, sizes, source=source, size=size, mtime_ns=mtime_ns, fingerprint=fingerprint,
                  now=now, row_groups=None if groups is None else len(groups))


def _placing_columns(table: str, source: str, path: Path) -> pd.DataFrame:
    """The raw plant, location, id and time columns of a landing file (names stripped), in file order."""
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
    return frame.rename(columns=lambda c: str(c).strip())


def _facts(table: str, frame: pd.DataFrame, sizes: Sequence[int], *, source: str, size: int, mtime_ns: int,
           fingerprint: str, now: pd.Timestamp, row_groups: int | None) -> list[dict[str, object]]:
    """One manifest entry per piece: the consecutive runs of `sizes` rows of `frame` (the placing
    columns of a file, in file order). row_groups: the file's number of row groups (pieces are its
    row groups), or None (one piece, the whole file)."""
    event = inputs.EVENT_TIME[table]
    key = schemas.INPUT_KEYS[table]
    pieces = len(sizes)
    group = np.repeat(np.arange(pieces), np.asarray(sizes, dtype=np.int64))
    assert len(group) == len(frame), (source, len(group), len(frame))
    frame = frame.reset_index(drop=True)
    every = pd.RangeIndex(pieces)

    def column(name: str, kind: str) -> pd.Series:
        if name not in frame.columns:
            return pd.Series(None, index=frame.index, dtype="object" if kind == "str" else "datetime64[us, UTC]")
        return coerce.coerce_column(frame[name], kind)

    def per_piece(values: pd.Series, of: np.ndarray, how: str) -> list[object]:
        if values.empty:
            return [None] * pieces
        return list(values.groupby(of, sort=True).agg(how).reindex(every))

    def sets(values: pd.Series, of: np.ndarray) -> list[list[str]]:
        """The distinct strings of each piece, sorted (as Python sorts them)."""
        pairs = pd.DataFrame({"piece": of, "value": values.to_numpy(dtype=object)}).drop_duplicates()
        pairs = pairs.sort_values("piece", kind="stable")
        bounds = np.searchsorted(pairs["piece"].to_numpy(), np.arange(pieces + 1))
        found = pairs["value"].to_numpy(dtype=object)
        return [sorted(str(v) for v in found[bounds[i]:bounds[i + 1]]) for i in range(pieces)]  # per piece

    plant, location = column("plant_id", "str"), column("location_id", "str")
    times = column(event, "timestamp")
    version = column("recorded_at", "timestamp").fillna(times) if table == "completions" else times
    keys = column(key, "str") if key is not None else pd.Series(None, index=frame.index, dtype="object")
    named = keys.notna().to_numpy(dtype=bool)
    ids, id_group = keys[named].astype("str"), group[named]
    placed = (plant.notna() & location.notna()).to_numpy(dtype=bool)
    sites = plant[placed].astype("str") + SITE_SEP + location[placed].astype("str")
    has_plant = plant.notna().to_numpy(dtype=bool)
    floating = (plant.isna() | times.isna()).to_numpy(dtype=bool)
    floats = np.bincount(group[floating], minlength=pieces) > 0
    hashes: list[bytes | None] = [None] * pieces
    if table == "movements":
        values = strings.key_hashes(ids)
        order = np.lexsort((values, id_group))
        values, owners = values[order], id_group[order]
        first = np.ones(len(values), dtype=bool)
        first[1:] = (values[1:] != values[:-1]) | (owners[1:] != owners[:-1])
        values, owners = values[first], owners[first]
        bounds = np.searchsorted(owners, np.arange(pieces + 1))
        hashes = [values[bounds[i]:bounds[i + 1]].tobytes() for i in range(pieces)]
    low_event, high_event = per_piece(times, group, "min"), per_piece(times, group, "max")
    low_version, high_version = per_piece(version, group, "min"), per_piece(version, group, "max")
    low_id, high_id = per_piece(ids, id_group, "min"), per_piece(ids, id_group, "max")
    plants, site_sets = sets(plant[has_plant].astype("str"), group[has_plant]), sets(sites, group[placed])
    return [{
        "table": table, "source": source, "size": size, "mtime_ns": mtime_ns, "fingerprint": fingerprint,
        "rows": int(sizes[i]),
        "min_event": _stamp(low_event[i]), "max_event": _stamp(high_event[i]),
        "min_version": _stamp(low_version[i]), "max_version": _stamp(high_version[i]),
        "min_id": None if _missing(low_id[i]) else str(low_id[i]),
        "max_id": None if _missing(high_id[i]) else str(high_id[i]),
        "floating": bool(floats[i]),
        "plants": plants[i], "sites": site_sets[i],
        "described_at": now,
        "id_hashes": hashes[i],
        "row_group": None if row_groups is None else i, "row_groups": row_groups,
    } for i in range(pieces)]  # one per piece


def _missing(value: object) -> bool:
    return value is None or bool(pd.isna(value))  # type: ignore[arg-type]


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
        for name in ("row_group", "row_groups"):
            frame[name] = frame[name].astype("Int64")
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


def load(warehouse: Warehouse) -> tuple[dict[str, list[dict[str, object]]], list[str]]:
    """The newest manifest entries of each source (its pieces, in row-group order), and the manifest
    files they were read from.

    Runs of different plants may commit at the same time: each writes the whole manifest it read
    plus what it learnt, and deletes the files it read; a file deleted while it is listed here was
    replaced by a newer one, and skipping it only makes a file be described again. The pieces of a
    file are described together (one `described_at`): the newest description wins whole."""
    fs = warehouse.filesystem
    infos = fs.get_file_info(pafs.FileSelector(warehouse.path(DATASET), allow_not_found=True))
    entries: dict[str, dict[object, dict[str, object]]] = {}
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
            known = entries.setdefault(str(row["source"]), {})
            when = next(iter(known.values()))["described_at"] if known else None
            if when is not None and row["described_at"] > when:  # type: ignore[operator]
                known.clear()  # a newer description of the file
            if when is None or row["described_at"] >= when:  # type: ignore[operator]
                known[row["row_group"]] = row
    return {source: [pieces[k] for k in sorted(pieces, key=_group_order)] for source, pieces in entries.items()}, names


def _group_order(group: object) -> int:
    return -1 if group is None else int(group)  # type: ignore[call-overload]


def survey(files: Mapping[str, list[tuple[str, Path]]], warehouse: Warehouse) -> Manifest:
    """Manifest entries of every current file of the described tables: an unchanged file's entries
    as recorded, a new or changed one described now (read whole once, `describe_pieces`), as is a
    Parquet file known only from a manifest written before pieces."""
    known, names = load(warehouse)
    now = pd.Timestamp.now(tz="UTC").floor("us")
    entries: list[dict[str, object]] = []
    fresh: set[str] = set()
    for table in DESCRIBED:
        for source, path in files.get(table, []):
            state = seen(table, source, path, known)
            if state.why is None:
                entries.extend(state.pieces)
                continue
            entries.extend(describe_pieces(table, source, path, size=state.size, mtime_ns=state.mtime_ns,
                                           fingerprint=state.fingerprint or file_fingerprint(path), now=now))
            fresh.add(source)
    return Manifest(entries=entries, fresh=fresh, replaces=names)


@dataclass
class Seen:
    """What the manifest knows of a landing file as it is now. `why` is None when its recorded
    pieces still hold (`pieces`, with the new size and mtime of a file only touched), else why it
    must be described: "new", "before pieces" or "changed"."""

    why: str | None
    pieces: list[dict[str, object]]
    size: int
    mtime_ns: int
    fingerprint: str | None  # of the bytes, when the size or mtime differ from the recorded ones
    touched: bool = False


def seen(table: str, source: str, path: Path, known: Mapping[str, list[dict[str, object]]]) -> Seen:
    """Whether a file's recorded pieces (`load`) still hold: the same size and mtime, or the same
    bytes (touched only); SourceError if it cannot be read."""
    with scan.reading(path):
        stat = path.stat()
    pieces = known.get(source, [])
    entry = pieces[0] if pieces else None
    if entry is None or entry["table"] != table:
        return Seen("new", [], stat.st_size, stat.st_mtime_ns, None)
    if described_before_pieces(entry, path):
        return Seen("before pieces", [], stat.st_size, stat.st_mtime_ns, None)
    if entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
        return Seen(None, pieces, stat.st_size, stat.st_mtime_ns, None)
    fingerprint = file_fingerprint(path)
    if entry["fingerprint"] != fingerprint:
        return Seen("changed", [], stat.st_size, stat.st_mtime_ns, fingerprint)
    touched = [{**p, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns} for p in pieces]
    return Seen(None, touched, stat.st_size, stat.st_mtime_ns, fingerprint, touched=True)


def described_before_pieces(entry: Mapping[str, object], path: Path) -> bool:
    """Whether a Parquet file's entry is from a manifest written before pieces (no row_groups)."""
    return path.suffix.lower() == ".parquet" and entry.get("row_groups") is None


# ------------------------------------------------------------------------------------ choosing files


def with_plants(files: Files, manifest: Manifest, plants: Sequence[str] | None) -> Files:
    """The landing files, less the described files that hold no row of `plants` (and no row
    without a plant): a run of some plants does not open them."""
    if not plants:
        return files
    wanted = set(plants)
    frame = manifest.frame()
    holds = (frame["floating"].to_numpy(dtype=bool)
             | np.array([bool(wanted & set(p)) for p in frame["plants"]], dtype=bool))
    # a completion file of other plants may hold a newer version of an id of theirs (a correction
    # that moved it to another plant): it is opened too, and the scan keeps the rows of their ids
    _close_completions(frame, holds)
    kept = set(frame.loc[holds, "source"].astype("str"))
    return {table: [(s, p) for s, p in listed if table not in DESCRIBED or s in kept]
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
    """What a pruned read reads of completions and movements, and what it knows of the rest.

    `files` are the files read (any of their pieces); `row_groups` the row groups to read of the
    Parquet files of which only some are needed (a file not in it is read whole); `pieces_read`
    and `pieces_skipped` count pieces (a row group, or a whole file) as `read` and `skipped` count
    files."""

    files: Files
    unread_plants: set[str]
    read: dict[str, int]
    skipped: dict[str, int]
    row_groups: dict[str, list[int]] = field(default_factory=dict)
    pieces_read: dict[str, int] = field(default_factory=dict)
    pieces_skipped: dict[str, int] = field(default_factory=dict)


def choose(manifest: Manifest, files: Files, lo: pd.Timestamp, hi: pd.Timestamp,
           plants: Sequence[str] | None) -> Choice:
    """The completion and movement pieces a run must read (see the module's docstring): every rule
    is of pieces, a Parquet file's row groups or a whole file, as it was of files."""
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
    # a completion piece of other plants may hold a newer version of an id of theirs (a correction
    # that moved it to another plant): the closure looks at every piece, the scan keeps their ids' rows
    _close_completions(frame, need)
    _close_movements(frame, need, holds)
    reading = set(frame.loc[need, "source"])
    unread = frame[~need & holds]
    unread_plants = {str(p) for ps in unread["plants"] for p in ps}
    if wanted is not None:
        unread_plants &= wanted
    chosen_files = {table: [(s, p) for s, p in files.get(table, []) if s in reading] for table in FLOWS}
    groups = frame["row_group"]
    partial = frame[groups.notna().to_numpy(dtype=bool)]
    partial_need = need[groups.notna().to_numpy(dtype=bool)]
    row_groups: dict[str, list[int]] = {}
    for source, positions in partial.groupby("source", sort=True).indices.items():  # per file
        chosen = partial_need[positions]
        if chosen.any() and not chosen.all():
            row_groups[str(source)] = sorted(int(g) for g in partial["row_group"].iloc[positions[chosen]])
    in_table = {t: (frame["table"] == t).to_numpy(dtype=bool) for t in FLOWS}
    return Choice(files=chosen_files, unread_plants=unread_plants,
                  read={t: len(chosen_files[t]) for t in FLOWS},
                  skipped={t: len(files.get(t, [])) - len(chosen_files[t]) for t in FLOWS},
                  row_groups=row_groups,
                  pieces_read={t: int((need & in_table[t]).sum()) for t in FLOWS},
                  pieces_skipped={t: int((~need & in_table[t]).sum()) for t in FLOWS})


def _close_completions(frame: pd.DataFrame, need: np.ndarray) -> None:
    """Add to `need` every completion file that may hold a version, as new as the oldest version of
    the files chosen so far, of an id of theirs: its id range meets theirs (ids ordered as strings).

    One pass: the rows that matter are those of the chosen files (which hold every row in the span);
    an id of an added file without a version in the span is dated outside it whatever its latest
    version, so the added files' own ids need no closure of their own. Files of any plant are looked
    at: a correction may have moved an id of the plants read to another plant."""
    mine = (frame["table"] == "completions").to_numpy(dtype=bool) & frame["min_id"].notna().to_numpy(dtype=bool)
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
    order = sorted(range(len(starts)), key=lambda i: starts[i])  # one per piece, not per row
    out_starts: list[object] = []
    out_ends: list[object] = []
    for i in order:
        if out_ends and starts[i] <= out_ends[-1]:
            out_ends[-1] = max(out_ends[-1], ends[i])  # type: ignore[type-var]
        else:
            out_starts.append(starts[i])
            out_ends.append(ends[i])
    return np.array(out_starts, dtype=object), np.array(out_ends, dtype=object)
