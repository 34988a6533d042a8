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

import math
import multiprocessing
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from pipeline import consumption, variance
from pipeline.sources import (
    LINE_COLUMN,
    CompletionAcceptor,
    CompletionBatch,
    CompletionSummary,
    empty_quarantine,
    key_hashes,
    read_file,
)

RawFile = tuple[str, Callable[[], pd.DataFrame]]  # (source name, reads the file's raw rows)
_ID = "completion_id"
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
        fingerprints = variance.fingerprint_parts("completions", accepted) if not accepted.empty else pd.DataFrame()
        watermark = accepted["recorded_at"].max() if not accepted.empty else None
        tagged = self.catalog.tag(consumption.produced(accepted))
        good, rejects = consumption.exploded_completions(tagged, self.catalog.errors, accepted)
        demand = consumption.completion_demand(good)
        self.windows.receipts[:] = 0.0
        self.windows.usage[:] = 0.0
        self.windows.add_completions(good, self.catalog.requirements)
        touched = np.flatnonzero((self.windows.receipts != 0) | (self.windows.usage != 0))
        keys = self.catalog.keys.iloc[self.reported:]
        self.reported = len(self.catalog.keys)
        new = keys["key"]
        requirements, errors = self.catalog.requirements, self.catalog.errors
        return _Partial(
            pid=_pid(), summary=batch.summary(), fingerprints=fingerprints,
            watermark=None if pd.isna(watermark) else watermark, demand=demand, explode_rejects=rejects,
            new_keys=keys.reset_index(drop=True), new_requirements=requirements[requirements["key"].isin(new)],
            new_errors=errors[errors["key"].isin(new)], touched=touched,
            receipts=self.windows.receipts[touched].copy(), usage=self.windows.usage[touched].copy(),
        )


def _pid() -> int:
    import os

    return os.getpid()


@dataclass
class _Totals:
    """The merge of partials, in bucket order."""

    catalog: consumption.ExplosionCatalog
    windows: variance.CountWindows
    summary: CompletionSummary = field(default_factory=CompletionSummary)
    demand: list[pd.DataFrame] = field(default_factory=list)
    demand_rows: int = 0
    compacted_rows: int = 0
    rejects: list[pd.DataFrame] = field(default_factory=list)
    fingerprints: list[pd.DataFrame] = field(default_factory=list)
    watermark: pd.Timestamp | None = None
    renumber: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, part: _Partial) -> None:
        mapping = self.catalog.adopt(part.new_keys, part.new_requirements, part.new_errors)
        known = self.renumber.get(part.pid, np.zeros(0, dtype="int64"))
        if len(mapping) > len(known):
            known = np.concatenate([known, np.full(len(mapping) - len(known), -1, dtype="int64")])
        given = mapping >= 0
        known[: len(mapping)][given] = mapping[given]
        self.renumber[part.pid] = known
        if not part.demand.empty:
            self.demand.append(part.demand.assign(key=known[part.demand["key"].to_numpy(dtype="int64")]))
            self.demand_rows += len(part.demand)
            if self.demand_rows > 2 * max(self.compacted_rows, 1_000_000):
                self._compact()
        self.summary.add(part.summary)
        if not part.explode_rejects.empty:
            self.rejects.append(part.explode_rejects)
        if not part.fingerprints.empty:
            self.fingerprints.append(part.fingerprints)
        if part.watermark is not None and (self.watermark is None or part.watermark > self.watermark):
            self.watermark = part.watermark
        np.add.at(self.windows.receipts, part.touched, part.receipts)
        np.add.at(self.windows.usage, part.touched, part.usage)

    def _compact(self) -> None:
        """Sum the demand rows of one key across buckets (memory follows distinct keys)."""
        if len(self.demand) > 1:
            both = pd.concat(self.demand, ignore_index=True)
            self.demand = [both.groupby(consumption.DEMAND_KEYS + ["key"], as_index=False, sort=True).agg(
                qty_good=("qty_good", "sum"), qty_scrap=("qty_scrap", "sum"), qty=("qty", "sum"),
                completions=("completions", "sum"))]
        self.demand_rows = self.compacted_rows = sum(len(d) for d in self.demand)

    def result(self, buckets: int) -> CompletionTotals:
        if self.demand:
            self._compact()
            demand = self.demand[0]
        else:
            demand = consumption.empty_demand()
        fingerprints = pd.concat(self.fingerprints, ignore_index=True) if self.fingerprints else pd.DataFrame()
        rejects = pd.concat(self.rejects, ignore_index=True) if self.rejects else empty_quarantine()
        return CompletionTotals(
            demand=demand.reset_index(drop=True), requirements=self.catalog.requirements,
            errors=self.catalog.errors, explode_rejects=rejects, fingerprints=fingerprints, windows=self.windows,
            summary=self.summary, watermark=self.watermark, buckets=buckets,
        )


# ------------------------------------------------------------------------------------ the run's entry


def summarise(
    files: Sequence[RawFile] | Sequence[tuple[str, pd.DataFrame]],
    acceptor: CompletionAcceptor,
    catalog: consumption.ExplosionCatalog,
    windows: variance.CountWindows,
    *,
    rows: int | None = None,
    bucket_rows: int = 500_000,
    workers: int = 1,
    spill_dir: str | None = None,
) -> CompletionTotals:
    """Every completion of `files` accepted, exploded and summed, a bucket at a time.

    files: (source, raw frame) pairs, or (source, a function that reads the raw frame) pairs;
    rows: how many rows they hold (estimated when not given). With more rows than `bucket_rows`,
    the files are spilled to buckets under `spill_dir` (the system's temporary folder by default)
    and digested on up to `workers` processes.
    """
    readers = [(source, raw if callable(raw) else _given(raw)) for source, raw in files]
    total = rows if rows is not None else sum(_rows_of(raw) for _, raw in files)
    buckets = max(1, math.ceil(total / max(1, bucket_rows)))
    totals = _Totals(catalog=catalog, windows=windows)
    if buckets == 1:
        digester = _Digester(acceptor, catalog, variance.CountWindows.like(windows))
        totals.add(digester.digest([(source, read()) for source, read in readers]))
        return totals.result(1)
    with tempfile.TemporaryDirectory(prefix="backflush-buckets-", dir=spill_dir) as folder:
        spilled = spill(readers, buckets, Path(folder))
        for part in _digest_all(spilled, acceptor, catalog, windows, workers):
            totals.add(part)
    return totals.result(buckets)


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


def _given(frame: pd.DataFrame) -> Callable[[], pd.DataFrame]:
    return lambda: frame


def _rows_of(raw: object) -> int:
    if isinstance(raw, pd.DataFrame):
        return len(raw)
    path = getattr(raw, "path", None)
    if isinstance(path, Path):
        if path.suffix.lower() == ".parquet":
            try:
                return int(pq.ParquetFile(path).metadata.num_rows)
            except Exception:  # unreadable: reading it says why, in one line
                return 0
        return int(path.stat().st_size // _CSV_BYTES_PER_ROW) + 1
    return 0


class LandingFile:
    """Reads one landing file when called (and says where it is, for the row count)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> pd.DataFrame:
        return read_file(self.path)


def spill(readers: Sequence[RawFile], buckets: int, folder: Path) -> list[list[tuple[str, Path]]]:
    """Split every file's rows into `buckets` by a hash of the completion id, keeping each row's
    line in its file; returns, per bucket, its (source, spill file) pairs."""
    out: list[list[tuple[str, Path]]] = [[] for _ in range(buckets)]
    for number, (source, read) in enumerate(readers):
        raw = read()
        if raw.shape == (0, 0):
            continue
        raw = raw.reset_index(drop=True)
        raw[LINE_COLUMN] = np.arange(2, len(raw) + 2)
        id_column = next((c for c in raw.columns if str(c).strip() == _ID), None)
        # without an id column every row goes to bucket 0, where reading it fails with the reason
        bucket = (key_hashes(raw[id_column]) % np.uint64(buckets)).astype("int64") if id_column is not None \
            else np.zeros(len(raw), dtype="int64")
        order = np.argsort(bucket, kind="stable")
        bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
        for b in range(buckets):
            rows = order[bounds[b]:bounds[b + 1]]
            if len(rows) or (b == 0 and not len(raw)):
                path = folder / f"b{b:05d}-f{number:05d}.pkl"
                raw.iloc[rows].to_pickle(path)  # our own file, read back by this run only
                out[b].append((source, path))
        del raw
    return out


def _bucket_files(spilled: list[tuple[str, Path]]) -> list[tuple[str, pd.DataFrame]]:
    return [(source, pd.read_pickle(path)) for source, path in spilled]


_WORKER: _Digester | None = None


def _start_worker(acceptor: CompletionAcceptor, catalog: consumption.ExplosionCatalog,
                  windows: variance.CountWindows) -> None:
    global _WORKER
    _WORKER = _Digester(acceptor, catalog, windows)


def _digest_in_worker(spilled: list[tuple[str, Path]]) -> _Partial:
    assert _WORKER is not None
    return _WORKER.digest(_bucket_files(spilled))


def _digest_all(
    spilled: list[list[tuple[str, Path]]], acceptor: CompletionAcceptor, catalog: consumption.ExplosionCatalog,
    windows: variance.CountWindows, workers: int,
) -> Iterator[_Partial]:
    """Each bucket's partial, in bucket order."""
    work = [files for files in spilled if files]
    fresh_catalog = catalog.empty_copy()
    if workers <= 1 or len(work) <= 1:
        digester = _Digester(acceptor, fresh_catalog, variance.CountWindows.like(windows))
        for files in work:
            yield digester.digest(_bucket_files(files))
        return
    context = multiprocessing.get_context("spawn")  # no inherited threads or locks: safe under any host
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker,
                             initargs=(acceptor, fresh_catalog, variance.CountWindows.like(windows))) as pool:
        # a few buckets in flight, not all: finished partials wait in memory until their turn
        pending: deque[Future[_Partial]] = deque()
        for files in work:
            pending.append(pool.submit(_digest_in_worker, files))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


__all__ = ["CompletionTotals", "LandingFile", "spill", "summarise", "summarise_accepted"]
