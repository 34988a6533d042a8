"""Completion files split into buckets by a hash of the completion id, so every version of an id lands in
one bucket and a run's memory follows a bucket, not the landing."""

from __future__ import annotations

import math
import multiprocessing
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from pipeline.contract.inputs import LINE_COLUMN
from pipeline.engine import workers as workers_
from pipeline.engine.strings import key_hashes
from pipeline.intake.scan import (
    keep_plants,
    keep_plants_arrow,
    plant_ids,
    read_file,
    read_file_chunks,
    read_parquet_chunks,
)

# above this many buckets, the split finishes before the master data is read: side by side, the
# split's workers and a large master read would add their peaks
OVERLAP_MAX_BUCKETS = 40


# a run of more buckets holds large master data, counts and keys itself: its buckets are made this
# many times smaller, so that the run and its workers together stay within the same memory
LARGE_RUN_BUCKET_DIVISOR = 2


# rows of a file split at a time: a chunk becomes one spill file per bucket, so chunks much smaller
# than a bucket would make (rows / chunk) x buckets tiny files
_ID = "completion_id"
SPILL_CHUNK_ROWS = 1_000_000


_CSV_BYTES_PER_ROW = 60  # a CSV's row count before reading it, for choosing the number of buckets


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
    sources (Parquet files), only these row groups are read (a pruned read, `pipeline.intake.landing`)."""
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
    `stages.digest.summarise` waits for them and digests the buckets. With a single bucket nothing is spilled:
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
            # forked, like every worker of a run (see pipeline.engine.workers)
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

    def spilled(self) -> list[list[tuple[str, Path]]]:
        """Per bucket, its (source, spill file) pairs, once every file is split (waits for that)."""
        if self._parts is None:
            self.start()
            self._parts = sorted(part for done in self._spilled for part in done.result())  # bucket, file, chunk
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None
        return _per_bucket(self._parts, self.buckets)


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


def bucket_frames(spilled: list[tuple[str, Path]]) -> list[tuple[str, pd.DataFrame]]:
    return [(source, read_spilled(path)) for source, path in spilled]
