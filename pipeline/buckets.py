"""Completions a bucket at a time, so that a run's memory follows distinct keys, not completion rows.

A hash of each completion id picks its bucket, so every version of an id lands in the same one:
the latest-version rule and DUPLICATE_ID judge each bucket alone. Everything else a completion
contributes is a sum (its demand per explosion key, its fingerprint, its flows into count windows),
so the buckets' partial sums add up to the whole, whatever the split. Large inputs are spilled to
bucket files first (one read of each landing file); buckets are digested on worker processes when
there are several, and their partials merged in bucket order, so the result does not depend on
which worker finished first.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import tempfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipeline import consumption, variance
from pipeline import workers as workers_
from pipeline.sources import (
    LINE_COLUMN,
    CompletionAcceptor,
    CompletionBatch,
    CompletionSummary,
    empty_quarantine,
    keep_plants,
    keep_plants_arrow,
    key_hashes,
    plant_ids,
    read_file,
    read_file_chunks,
    read_parquet_chunks,
)

_ID = "completion_id"
_DEMAND_SUMS = ["qty_good", "qty_scrap", "qty", "completions", "orders"]
ORDER_COMPACT_ROWS = 1_000_000  # first completions of orders gathered before they are reduced again
# above this many buckets, the split finishes before the master data is read: side by side, the
# split's workers and a large master read would add their peaks
OVERLAP_MAX_BUCKETS = 40
# a run of more buckets holds large master data, counts and keys itself: its buckets are made this
# many times smaller, so that the run and its workers together stay within the same memory
LARGE_RUN_BUCKET_DIVISOR = 2
# rows of a file split at a time: a chunk becomes one spill file per bucket, so chunks much smaller
# than a bucket would make (rows / chunk) x buckets tiny files
SPILL_CHUNK_ROWS = 1_000_000
_CSV_BYTES_PER_ROW = 60  # a CSV's row count before reading it, for choosing the number of buckets


@dataclass
class CompletionTotals:
    """What a run needs of every completion, summed over buckets.

    demand: consumption.DEMAND_KEYS + key + qty_good, qty_scrap, qty, completions (every date);
    requirements / errors: the explosion of every key (`consumption.ExplosionCatalog`);
    explode_rejects: quarantine rows of completions whose BOM cannot be exploded (every date);
    fingerprints: `variance.fingerprint_parts` of the completions; windows: count windows with
    every completion added; summary: what `InputLoader.finish` needs (rows read, rejects, sites).
    """

    demand: pd.DataFrame
    requirements: pd.DataFrame
    errors: pd.DataFrame
    explode_rejects: pd.DataFrame
    fingerprints: pd.DataFrame
    windows: variance.CountWindows
    summary: CompletionSummary
    watermark: pd.Timestamp | None
    buckets: int = 1


@dataclass
class _Partial:
    """One bucket's contribution; keys are numbered by the catalog of the process that made it."""

    pid: int
    summary: CompletionSummary
    fingerprints: pd.DataFrame
    watermark: pd.Timestamp | None
    demand: pd.DataFrame
    explode_rejects: pd.DataFrame
    new_keys: pd.DataFrame
    new_requirements: pd.DataFrame
    new_errors: pd.DataFrame
    touched: np.ndarray
    receipts: np.ndarray
    usage: np.ndarray
    orders: pd.DataFrame  # consumption.ORDER_COLUMNS: the bucket's first completion of each order
    events: pd.DataFrame | None = None  # the bucket's flows into windows whose events are kept
    parents: tuple[np.ndarray, ...] | None = None  # variance.ParentFlows sums of the bucket


@dataclass
class _Digester:
    """Turns a bucket's raw completion files into a `_Partial` (one per process)."""

    acceptor: CompletionAcceptor
    catalog: consumption.ExplosionCatalog
    windows: variance.CountWindows
    reported: int = 0  # catalog keys already sent with an earlier partial

    def digest(self, files: list[tuple[str, pd.DataFrame]]) -> _Partial:
        return self.digest_batch(self.acceptor.accept(files))

    def digest_batch(self, batch: CompletionBatch) -> _Partial:
        accepted = batch.accepted
        fingerprints = variance.fingerprint_parts("completions", accepted)
        watermark = accepted["recorded_at"].max() if not accepted.empty else None
        tagged = self.catalog.tag(consumption.produced(accepted, orders=self.catalog.has_fixed))
        good, rejects = consumption.exploded_completions(tagged, self.catalog.errors, accepted)
        # a completion without an order carries its own fixed quantities; the first completion of an
        # order is found across buckets (`_Totals`), which add its fixed quantities when merged
        carried = good["order_id"].isna().to_numpy() if "order_id" in good.columns else np.ones(len(good), bool)
        demand = consumption.completion_demand(good, carried)
        orders = consumption.first_of_orders(good)  # none without order_id (no fixed line)
        self.windows.receipts[:] = 0.0
        self.windows.usage[:] = 0.0
        self.windows.parents.take()
        self.windows.add_completions(good.assign(orders=carried.astype("float64")), self.catalog.requirements)
        touched = np.flatnonzero((self.windows.receipts != 0) | (self.windows.usage != 0))
        keys = self.catalog.keys.iloc[self.reported:]
        self.reported = len(self.catalog.keys)
        new = keys["key"]
        requirements, errors = self.catalog.requirements, self.catalog.errors
        return _Partial(
            pid=os.getpid(), summary=batch.summary(), fingerprints=fingerprints,
            watermark=None if pd.isna(watermark) else watermark, demand=demand, explode_rejects=rejects,
            new_keys=keys.reset_index(drop=True), new_requirements=requirements[requirements["key"].isin(new)],
            new_errors=errors[errors["key"].isin(new)], touched=touched,
            receipts=self.windows.receipts[touched].copy(), usage=self.windows.usage[touched].copy(),
            orders=orders, parents=self.windows.parents.take(),
            events=self.windows.take_events() if self.windows.collecting is not None else None,
        )


@dataclass
class _Totals:
    """The merge of partials, in bucket order."""

    catalog: consumption.ExplosionCatalog
    windows: variance.CountWindows
    summary: CompletionSummary = field(default_factory=CompletionSummary)
    demand: _DemandSums = field(default_factory=lambda: _DemandSums())
    rejects: list[pd.DataFrame] = field(default_factory=list)
    fingerprints: list[pd.DataFrame] = field(default_factory=list)
    watermark: pd.Timestamp | None = None
    renumber: dict[int, np.ndarray] = field(default_factory=dict)
    locations: pd.Index = field(default_factory=lambda: pd.Index([], dtype="object"))
    orders: list[pd.DataFrame] = field(default_factory=list)  # first completions of orders (run's keys)
    order_rows: int = 0

    def add(self, part: _Partial) -> None:
        mapping = self.catalog.adopt(part.new_keys, part.new_requirements, part.new_errors)
        known = self.renumber.get(part.pid, np.zeros(0, dtype="int64"))
        if len(mapping) > len(known):
            known = np.concatenate([known, np.full(len(mapping) - len(known), -1, dtype="int64")])
        given = mapping >= 0
        known[: len(mapping)][given] = mapping[given]
        self.renumber[part.pid] = known
        if not part.demand.empty:
            self._add_demand(part.demand, known)
        if not part.orders.empty:
            self._add_orders(part.orders.assign(key=known[part.orders["key"].to_numpy(dtype="int64")]))
        self.summary.add(part.summary)
        if not part.explode_rejects.empty:
            self.rejects.append(part.explode_rejects)
        if not part.fingerprints.empty:
            self.fingerprints.append(part.fingerprints)
        if part.watermark is not None and (self.watermark is None or part.watermark > self.watermark):
            self.watermark = part.watermark
        self.windows.add(part.touched, part.receipts, part.usage, part.parents)
        if part.events is not None:
            self.windows.add_events(part.events)

    def _add_demand(self, demand: pd.DataFrame, renumber: np.ndarray) -> None:
        """A bucket's demand, as integer codes only: the key (which names plant and item), the day,
        the location (a code into `self.locations`): a third of the memory of the strings."""
        codes, values = pd.factorize(demand["location_id"])
        known = self.locations.get_indexer(values)
        if (known < 0).any():
            self.locations = self.locations.append(pd.Index(values[known < 0]))
            known = self.locations.get_indexer(values)
        self.demand.add(renumber[demand["key"].to_numpy(dtype="int64")],
                        demand["business_date"].to_numpy(dtype="datetime64[ns]").view("int64"),
                        known[codes].astype("int64"), {c: demand[c].to_numpy() for c in _DEMAND_SUMS})

    def _add_orders(self, orders: pd.DataFrame) -> None:
        """A bucket's first completion of each order; reduced to one per order when many gathered."""
        self.orders.append(orders)
        self.order_rows += len(orders)
        if self.order_rows > ORDER_COMPACT_ROWS:
            self.orders = [consumption.first_of_orders(pd.concat(self.orders, ignore_index=True))]
            self.order_rows = len(self.orders[0])

    def _carry_orders(self) -> pd.DataFrame:
        """The first completion of every order over all buckets carries the order's fixed
        quantities: one order more in its demand row, its fixed flows in the count windows at its
        time; the fingerprint parts of the orders whose first completion needs a fixed quantity."""
        if not self.orders:
            return pd.DataFrame()
        firsts = consumption.first_of_orders(pd.concat(self.orders, ignore_index=True))
        self.orders, self.order_rows = [], 0
        if firsts.empty:
            return pd.DataFrame()
        zeros = np.zeros(len(firsts))
        rows = firsts.assign(qty_good=zeros, qty_scrap=zeros, qty=zeros, completions=zeros.astype("int64"),
                             orders=np.ones(len(firsts), dtype="int64"))
        self._add_demand(rows, np.arange(int(firsts["key"].max()) + 1, dtype="int64"))
        requirements = self.catalog.requirements
        self.windows.add_completions(rows.assign(orders=1.0), requirements)
        fixed_keys = requirements.loc[requirements["qty_per_order"] != 0, "key"].unique()
        return variance.fingerprint_parts("orders", firsts[firsts["key"].isin(fixed_keys)])

    def _decoded(self) -> pd.DataFrame:
        """The demand frame (`consumption.completion_demand`) of the summed codes, in its key order
        (DEMAND_KEYS, then key), found by sorting integer ranks rather than strings."""
        key, day, location, sums = self.demand.summed()
        keys = self.catalog.keys.set_index("key").reindex(np.arange(int(key.max()) + 1 if len(key) else 0))
        plant_rank = pd.factorize(keys["plant_id"], sort=True)[0]
        item_rank = pd.factorize(keys["item_id"], sort=True)[0]
        location_rank = np.argsort(np.argsort(self.locations.to_numpy(dtype=object), kind="stable"))
        order = np.lexsort((key, item_rank[key], location_rank[location], day, plant_rank[key]))
        key, location = key[order], location[order]
        empty = consumption.empty_demand()
        text = {c: empty[c].dtype for c in ("plant_id", "location_id", "item_id")}
        demand = pd.DataFrame({  # strings taken as stored (no Python object per row)
            "plant_id": keys["plant_id"].astype(text["plant_id"]).array.take(key),
            "business_date": day[order].view("datetime64[ns]"),
            "location_id": pd.array(self.locations, dtype=text["location_id"]).take(location),
            "item_id": keys["item_id"].astype(text["item_id"]).array.take(key),
            "key": key,
            **{c: sums[c][order] for c in _DEMAND_SUMS},
        })
        return demand

    def result(self, buckets: int) -> CompletionTotals:
        order_parts = self._carry_orders()
        if not order_parts.empty:
            self.fingerprints.append(order_parts)
        demand = self._decoded() if self.demand.rows else consumption.empty_demand()
        self.demand = _DemandSums()
        fingerprints = pd.concat(self.fingerprints, ignore_index=True) if self.fingerprints else pd.DataFrame()
        rejects = pd.concat(self.rejects, ignore_index=True) if self.rejects else empty_quarantine()
        return CompletionTotals(
            demand=demand.reset_index(drop=True), requirements=self.catalog.requirements,
            errors=self.catalog.errors, explode_rejects=rejects, fingerprints=fingerprints, windows=self.windows,
            summary=self.summary, watermark=self.watermark, buckets=buckets,
        )


_SLOT = 2**31  # a demand code is key x _SLOT + slot, a slot a (day, location) pair's number
_DAY_NS = 86_400 * 10**9


class _DemandSums:
    """Demand summed per (key, day, location) as bucket partials arrive, in memory that follows the
    distinct keys: sorted integer codes with one array per sum, merged with the rows not yet summed
    whenever those reach half as many (or a million). Every sum is added in bucket order, so the
    result depends on the partials alone, not on timing or the number of workers.
    """

    MERGE_ROWS = 1_000_000  # pending rows merged at the latest when they are this many

    def __init__(self) -> None:
        self.codes = np.zeros(0, dtype="int64")  # sorted, unique
        self.sums: dict[str, np.ndarray] = {}
        self.slots = pd.Index([], dtype="int64")  # day (days since 1970) x 2**32 + location code
        self.pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
        self.pending_rows = 0

    @property
    def rows(self) -> int:
        return len(self.codes) + self.pending_rows

    def add(self, key: np.ndarray, day: np.ndarray, location: np.ndarray, sums: dict[str, np.ndarray]) -> None:
        """Rows of demand: key (the run's numbering), day (datetime64[ns] as int64), location code."""
        slot_keys = (day // _DAY_NS) * 2**32 + location
        slot = self.slots.get_indexer(slot_keys)
        if (slot < 0).any():
            self.slots = self.slots.append(pd.Index(pd.unique(slot_keys[slot < 0])))
            slot = self.slots.get_indexer(slot_keys)
        self.pending.append((key * _SLOT + slot, sums))
        self.pending_rows += len(key)
        if self.pending_rows > max(len(self.codes) // 2, self.MERGE_ROWS):
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        codes = np.concatenate([c for c, _ in self.pending])
        order = np.argsort(codes, kind="stable")  # stable: a code's rows stay in bucket order
        ordered = codes[order]
        del codes
        starts = np.flatnonzero(np.concatenate([[True], ordered[1:] != ordered[:-1]]))
        new = ordered[starts]
        del ordered
        sums = {c: np.add.reduceat(np.concatenate([p[c] for _, p in self.pending])[order], starts)
                for c in self.pending[0][1]}
        self.pending, self.pending_rows = [], 0
        if not self.sums:
            self.sums = {c: v[:0] for c, v in sums.items()}
        at = np.searchsorted(self.codes, new)
        found = at < len(self.codes)
        found[found] = self.codes[at[found]] == new[found]
        for c, values in sums.items():
            self.sums[c][at[found]] += values[found]
        if not found.all():
            fresh = ~found
            self.codes = np.insert(self.codes, at[fresh], new[fresh])
            for c, values in sums.items():
                self.sums[c] = np.insert(self.sums[c], at[fresh], values[fresh])

    def summed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """(key, day as datetime64[ns] int64, location code, sums) per distinct (key, day, location)."""
        self._merge()
        slot_keys = self.slots.to_numpy()[self.codes % _SLOT]
        return self.codes // _SLOT, (slot_keys // 2**32) * _DAY_NS, slot_keys % 2**32, self.sums


# ------------------------------------------------------------------------------------ the run's entry


class RawFile:
    """One completion file (or a frame already read, from SQL), read in chunks when it is spilled."""

    def __init__(self, source: str, path: Path | None = None, frame: pd.DataFrame | None = None,
                 plants: Sequence[str] | None = None) -> None:
        self.source, self.path, self.frame = source, path, frame
        self.plants = plants  # only rows that may be of these plants are kept (`sources.keep_plants`)
        self.ids: np.ndarray | None = None  # and every row of these ids (`with_plant_ids`)
        self.row_groups: list[int] | None = None  # of a Parquet file, only these (a pruned read)

    def read(self) -> pd.DataFrame:
        frame = self.frame if self.frame is not None else read_file(self.path, self.row_groups)  # type: ignore[arg-type]
        return keep_plants(frame, self.plants, ids=self.ids)

    def chunks(self, rows: int) -> Iterator[tuple[int, pa.Table]]:
        """The file's raw rows as Arrow tables, each with the line of its first row (header = 1)."""
        if self.path is not None and self.path.suffix.lower() == ".parquet":
            yield from read_parquet_chunks(self.path, rows, self.row_groups)
            return
        frames = [(2, self.frame)] if self.frame is not None else read_file_chunks(self.path, rows)  # type: ignore[arg-type]
        for line, frame in frames:
            yield line, _arrow_table(frame)

    def rows(self) -> int:
        """How many rows the file holds (estimated for CSV), for choosing the number of buckets."""
        if self.frame is not None:
            return len(self.frame)
        path = self.path
        assert path is not None
        if path.suffix.lower() == ".parquet":
            try:
                metadata = pq.ParquetFile(path).metadata
                if self.row_groups is not None:
                    return sum(int(metadata.row_group(g).num_rows) for g in self.row_groups)
                return int(metadata.num_rows)
            except Exception:  # unreadable: reading it says why, in one line
                return 0
        return int(path.stat().st_size // _CSV_BYTES_PER_ROW) + 1


class StagedRows(RawFile):
    """Rows streamed from a source in batches (a SQL query's server-side cursor), each batch staged
    as an Arrow IPC file as it arrives, so that no more than one batch is held in memory; spilled and
    digested like a landing file, its lines counted on from batch to batch as one file's are."""

    def __init__(self, source: str, parts: list[tuple[Path, int]]) -> None:
        super().__init__(source)
        self.parts = parts

    @classmethod
    def stage(cls, source: str, batches: Iterator[pd.DataFrame], folder: Path) -> StagedRows:
        """Each batch written to `folder` as it comes (its pandas types kept, as `_arrow_table` keeps them)."""
        folder.mkdir(parents=True, exist_ok=True)
        parts: list[tuple[Path, int]] = []
        for number, frame in enumerate(batches):
            if parts and frame.empty:
                continue
            table = _arrow_table(frame)
            path = folder / f"part-{number:06d}.arrow"
            with ipc.new_file(path, table.schema) as writer:  # our own file, read back by this run only
                writer.write_table(table)
            parts.append((path, table.num_rows))
            del frame, table
        return cls(source, parts)

    def read(self) -> pd.DataFrame:
        tables = [table for _, table in self.chunks(max(1, self.rows()))]
        return tables[0].to_pandas() if len(tables) == 1 else pd.concat(
            [t.to_pandas() for t in tables], ignore_index=True)

    def chunks(self, rows: int) -> Iterator[tuple[int, pa.Table]]:
        """The staged batches, consecutive ones joined into tables of about `rows` rows (a column
        that is all null in one batch takes the type it has in another), each with its first line."""
        line, size = 2, 0
        group: list[pa.Table] = []
        for path, count in self.parts:
            if group and size + count > rows:
                yield from self._joined(line, group)
                line, group, size = line + size, [], 0
            with ipc.open_file(path) as reader:
                group.append(reader.read_all())
            size += count
        if group:
            yield from self._joined(line, group)

    @staticmethod
    def _joined(line: int, tables: list[pa.Table]) -> Iterator[tuple[int, pa.Table]]:
        try:
            yield line, pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):  # types that do not join
            for table in tables:
                yield line, table
                line += table.num_rows

    def rows(self) -> int:
        return sum(count for _, count in self.parts)


def with_plant_ids(files: list[RawFile], rows: int = SPILL_CHUNK_ROWS) -> list[RawFile]:
    """Files filtered to some plants also keep every row of each completion id those plants have a
    row of, in any file (one more read of each file): so a correction that moved a completion to
    another plant supersedes its version here, and a conflict across plants is DUPLICATE_ID, as in a
    read of every plant (and as the SQL source pulls every row of each id)."""
    filtered = [f for f in files if f.plants]
    if not filtered:
        return files
    ids = plant_ids((table for f in filtered for _, table in f.chunks(rows)), filtered[0].plants or [])
    for f in filtered:
        f.ids = ids
    return files


def raw_files(files: Sequence[tuple[str, Path]] | Sequence[tuple[str, pd.DataFrame]] | Sequence[RawFile],
              plants: Sequence[str] | None = None, row_groups: Mapping[str, Sequence[int]] | None = None
              ) -> list[RawFile]:
    """(source, path) pairs of landing files, (source, frame) pairs read already, or `RawFile`s;
    plants: only rows that may be of these plants are read from files and frames (filtered in the
    scan, before coercion; staged SQL rows were filtered by the query); row_groups: of these
    sources (Parquet files), only these row groups are read (a pruned read, `pipeline.landing`)."""
    out: list[RawFile] = []
    for item in files:
        if isinstance(item, RawFile):
            out.append(item)
            continue
        source, raw = item
        if isinstance(raw, RawFile):
            out.append(raw)
        elif isinstance(raw, pd.DataFrame):
            out.append(RawFile(source, frame=raw, plants=plants))
        else:
            out.append(RawFile(source, path=Path(raw), plants=plants))
            if row_groups and source in row_groups:
                out[-1].row_groups = list(row_groups[source])
    return out


class Spiller:
    """Completion files split into buckets, on worker processes, while the run reads its master data.

    `start` forks the spill workers (before the master data is in memory, so they are small);
    `summarise` waits for them and digests the buckets. With a single bucket nothing is spilled:
    the files are read whole when they are digested.
    """

    def __init__(self, files: Sequence[RawFile], *, bucket_rows: int = 300_000, workers: int = 1,
                 spill_dir: str | None = None) -> None:
        self.files = list(files)
        self.bucket_rows = max(1, bucket_rows)
        self.workers = max(1, workers)
        rows = sum(f.rows() for f in self.files)
        self.buckets = max(1, math.ceil(rows / self.bucket_rows))
        # a large run: its split finishes before the master data is read, its buckets are smaller,
        # and its workers give memory back after each bucket
        self.large = self.buckets > OVERLAP_MAX_BUCKETS
        if self.large:
            self.buckets = math.ceil(rows * LARGE_RUN_BUCKET_DIVISOR / self.bucket_rows)
        if self.buckets > 1:  # as many buckets for each worker: none idles while another digests its last
            self.buckets = math.ceil(self.buckets / self.workers) * self.workers
        self.spill_dir = spill_dir
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._spilled: list[Future[list[tuple[int, int, int, str, Path]]]] = []
        self._parts: list[tuple[int, int, int, str, Path]] | None = None

    def __enter__(self) -> Spiller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self.buckets == 1 or self._folder is not None:
            return
        self._folder = tempfile.TemporaryDirectory(prefix="backflush-buckets-", dir=self.spill_dir)
        folder = Path(self._folder.name)
        if self.workers > 1 and len(self.files) > 1 and workers_.can_fork():
            # forked, like every worker of a run (see pipeline.workers)
            self._pool = ProcessPoolExecutor(max_workers=min(self.workers, len(self.files)),
                                             mp_context=multiprocessing.get_context("fork"))
            self._spilled = [self._pool.submit(_spill_file, f, number, self.buckets, SPILL_CHUNK_ROWS, folder)
                             for number, f in enumerate(self.files)]
        else:
            self._spilled = []
            for number, f in enumerate(self.files):
                done: Future[list[tuple[int, int, int, str, Path]]] = Future()
                done.set_result(_spill_file(f, number, self.buckets, SPILL_CHUNK_ROWS, folder))
                self._spilled.append(done)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def summarise(self, acceptor: CompletionAcceptor, catalog: consumption.ExplosionCatalog,
                  windows: variance.CountWindows) -> CompletionTotals:
        """Every completion accepted, exploded and summed, a bucket at a time, in bucket order."""
        totals = _Totals(catalog=catalog, windows=windows)
        if self.buckets == 1:
            digester = _Digester(acceptor, catalog, variance.CountWindows.like(windows))
            totals.add(digester.digest([(f.source, f.read()) for f in self.files]))
            return totals.result(1)
        with contextlib.closing(_digest_all(self.spilled(), acceptor, catalog, windows, self.workers,
                                            large=self.large)) as parts:
            for part in parts:
                totals.add(part)
        return totals.result(self.buckets)

    def spilled(self) -> list[list[tuple[str, Path]]]:
        """Per bucket, its (source, spill file) pairs, once every file is split (waits for that)."""
        if self._parts is None:
            self.start()
            self._parts = sorted(part for done in self._spilled for part in done.result())  # bucket, file, chunk
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        return _per_bucket(self._parts, self.buckets)


def summarise_accepted(
    completions: pd.DataFrame, catalog: consumption.ExplosionCatalog, windows: variance.CountWindows
) -> CompletionTotals:
    """The totals of completions accepted already (`sources.load_inputs`), in one bucket; the
    summary is empty: the inputs hold their rejects and counts."""
    digester = _Digester(None, catalog, variance.CountWindows.like(windows))  # type: ignore[arg-type]
    totals = _Totals(catalog=catalog, windows=windows)
    totals.add(digester.digest_batch(CompletionBatch(accepted=completions, quarantine=empty_quarantine(), read=0,
                                                     superseded=0)))
    totals.summary = CompletionSummary()
    return totals.result(1)


def _spill_file(raw: RawFile, number: int, buckets: int, rows: int, folder: Path
                ) -> list[tuple[int, int, int, str, Path]]:
    """Split one file's rows into `buckets` by a hash of the completion id, a chunk at a time,
    keeping each row's line in its file: (bucket, file number, chunk, source, spill file) per part.
    Spill files are Arrow IPC files of the raw rows, read back as `read_file` would give them."""
    out = []
    for chunk, (first_line, table) in enumerate(raw.chunks(rows)):
        if table.num_columns == 0:
            continue
        table = table.append_column(LINE_COLUMN, pa.array(np.arange(first_line, first_line + table.num_rows)))
        table = keep_plants_arrow(table, raw.plants, raw.ids)
        id_column = next((c for c in table.column_names if str(c).strip() == _ID), None)
        # without an id column every row goes to bucket 0, where reading it fails with the reason
        bucket = (key_hashes(table.column(id_column).to_pandas()) % np.uint64(buckets)).astype("int64") \
            if id_column is not None else np.zeros(table.num_rows, dtype="int64")
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
        table = table.take(order)
        for b in range(buckets):
            size = int(bounds[b + 1] - bounds[b])
            if size or (b == 0 and not table.num_rows):
                path = folder / f"b{b:05d}-f{number:05d}-c{chunk:05d}.arrow"
                with ipc.new_file(path, table.schema) as writer:  # our own file, read back by this run only
                    writer.write_table(table.slice(int(bounds[b]), size))
                out.append((b, number, chunk, raw.source, path))
    return out


def _arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A frame of raw rows as Arrow (its pandas types kept); a column of mixed Python values that Arrow
    cannot hold as one type goes as text (coercion reads it as text anyway)."""
    frame = frame.reset_index(drop=True)
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        mixed = {}
        for column in frame.columns:
            try:
                pa.array(frame[column], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                mixed[column] = frame[column].astype("str").where(frame[column].notna())
        return pa.Table.from_pandas(frame.assign(**mixed), preserve_index=False)


def spill(files: Sequence[RawFile], buckets: int, folder: Path, rows: int = 1_000_000
          ) -> list[list[tuple[str, Path]]]:
    """Per bucket, its (source, spill file) pairs: every file split by a hash of the completion id."""
    return _per_bucket(sorted(p for number, f in enumerate(files) for p in _spill_file(f, number, buckets, rows, folder)),
                       buckets)


def _per_bucket(parts: list[tuple[int, int, int, str, Path]], buckets: int) -> list[list[tuple[str, Path]]]:
    """Spilled parts (bucket, file, chunk, source, spill file), in that order, as each bucket's
    (source, spill file) pairs."""
    out: list[list[tuple[str, Path]]] = [[] for _ in range(buckets)]
    for bucket, _, _, source, path in parts:
        out[bucket].append((source, path))
    return out


def read_spilled(path: Path) -> pd.DataFrame:
    """The raw rows of one spill file."""
    with ipc.open_file(path) as reader:
        return reader.read_all().to_pandas()


def _bucket_files(spilled: list[tuple[str, Path]]) -> list[tuple[str, pd.DataFrame]]:
    return [(source, read_spilled(path)) for source, path in spilled]


def _digest_all(
    spilled: list[list[tuple[str, Path]]], acceptor: CompletionAcceptor, catalog: consumption.ExplosionCatalog,
    windows: variance.CountWindows, workers: int, *, large: bool = False,
) -> Generator[_Partial, None, None]:
    """Each bucket's partial, in bucket order (on forked workers when there are several)."""
    work = [files for files in spilled if files]
    shared = {"acceptor": acceptor, "catalog": catalog.empty_copy(), "windows": variance.CountWindows.like(windows),
              "digesters": {}, "large": large}
    return workers_.forked_map(_digest_bucket, work, workers=workers, shared=shared)


def _digest_bucket(shared: Mapping[str, Any], files: list[tuple[str, Path]]) -> _Partial:
    """One bucket's partial, by this process's digester (its catalog grows bucket after bucket)."""
    digesters: dict[int, _Digester] = shared["digesters"]  # a forked worker has its own copy of the dict
    digester = digesters.get(os.getpid())
    if digester is None:
        digester = digesters[os.getpid()] = _Digester(shared["acceptor"], shared["catalog"], shared["windows"])
    partial = digester.digest(_bucket_files(files))
    if shared["large"]:  # what the bucket's rows took goes back before the next bucket's are read
        workers_.give_back_memory()
    return partial


__all__ = ["CompletionTotals", "RawFile", "Spiller", "StagedRows", "raw_files", "read_spilled", "spill", "summarise_accepted"]
