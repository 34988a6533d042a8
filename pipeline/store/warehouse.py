"""The warehouse: Hive-partitioned Parquet datasets, written all-or-nothing per run.

A run stages every file it will publish under `_staging/<run_id>/`, then writes a commit
journal (`_journal/<run_id>.json`, one atomic object), then moves each staged file onto its
final name (an atomic rename locally, an atomic object replacement on object stores) and
deletes the partitions that became empty. A crash before the journal leaves the warehouse as it
was; a crash after it is rolled forward by the next run (`recover`). Readers never see half a
file: each partition is one file, replaced whole. Staged files are converted to Arrow on the
caller's thread, then sorted and written on a small thread pool: the journal is written only once
every one of them is whole, and a failed write fails the run like any other error. Paths
starting with `_` are invisible to pyarrow, pandas, DuckDB and Spark dataset discovery.

On an object store (`s3://bucket/prefix`, see pipeline.store.objectstore) the same protocol holds with
object operations: a "move" is a server-side copy then a delete of the staged object (a single
object replace is atomic for readers), there are no directories to create or prune, and the plant
locks are conditional PUTs. A warehouse URI is only ever printed redacted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.contract import schemas
from pipeline.errors import LockError, WarehouseError

PARTITION_TYPES: dict[str, pa.DataType] = {
    "plant_id": pa.string(),
    "business_date": pa.date32(),
    "count_date": pa.date32(),
    "table": pa.string(),
}
DATA_FILE = "part-0.parquet"
ROW_GROUP_SIZE = 256 * 1024
_PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "write_statistics": True}
#: Staged files are sorted and written to Parquet on this many background threads (pyarrow's
#: sort and Parquet writer release the GIL); pandas -> Arrow conversion stays on the caller's thread.
STAGING_THREADS = 2
#: At most this many converted tables wait for (or are in) a background write, holding together
#: at most this many bytes of Arrow data (one bigger table is written alone): staging holds about
#: as much memory as writing one file at a time did, and a failed write is reported within a few files.
STAGING_QUEUE = 2 * STAGING_THREADS
STAGING_BYTES = 128 * 1024 * 1024
#: Fault injection point: called with the count of files a commit has published so far, after each
#: one. Nothing is installed in production; crash tests install a pause here (tests/support/faults.py)
#: to kill a run half-way through its commit.
after_move: Callable[[int], None] | None = None


def encode_segment(value: object) -> str:
    """A partition value as a safe path segment (URI-encoded: '/', '=', '..', NUL cannot escape)."""
    if isinstance(value, dt.datetime):
        value = value.date()
    text = value.isoformat() if isinstance(value, dt.date) else str(value)
    encoded = urllib.parse.quote(text, safe="")
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


def _date(value: object) -> dt.date:
    if isinstance(value, pd.Timestamp):
        return value.date()
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


@dataclass(repr=False)
class Warehouse:
    """A warehouse root: a local folder or an object-store URI understood by pyarrow."""

    uri: str
    filesystem: pafs.FileSystem = field(init=False)
    root: str = field(init=False)

    def __post_init__(self) -> None:
        if "://" in self.uri and not self.uri.startswith("file://"):
            from pipeline.store import objectstore

            self.filesystem, self.root = objectstore.open_filesystem(self.uri)
        else:
            path = self.uri[len("file://"):] if self.uri.startswith("file://") else self.uri
            self.filesystem = pafs.LocalFileSystem()
            self.root = str(Path(path).resolve())
        self.root = self.root.rstrip("/")

    def __repr__(self) -> str:
        return f"Warehouse({self.display_uri!r})"

    @property
    def is_local(self) -> bool:
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    @property
    def display_uri(self) -> str:
        """The root as it may be printed or logged (credentials redacted)."""
        if self.is_local:
            return self.uri
        from pipeline.store import objectstore

        return objectstore.redact_uri(self.uri)

    def _make_parent(self, path: str) -> None:
        """Create the folder of `path`; object stores have no folders (pyarrow would write markers)."""
        if self.is_local:
            self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)

    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def partition_path(self, dataset: str, partition: Mapping[str, object]) -> str:
        """The folder of one partition: dataset/col=value/... in the dataset's partition order."""
        _, columns = schemas.OUTPUT_DATASETS[dataset]
        segments = [
            f"{c}={encode_segment(_date(partition[c]) if PARTITION_TYPES[c] == pa.date32() else partition[c])}"
            for c in columns
        ]
        return self.path(dataset, *segments)

    # ------------------------------------------------------------------ reading

    def exists(self, path: str) -> bool:
        return self.filesystem.get_file_info(path).type != pafs.FileType.NotFound

    def read(self, dataset: str, *, filters: object = None, columns: list[str] | None = None) -> pd.DataFrame:
        """A dataset as pandas, partition columns typed (dates as datetime64, ids as strings)."""
        schema, partition_columns = schemas.OUTPUT_DATASETS[dataset]
        full_schema = pa.schema(list(schema) + [pa.field(c, PARTITION_TYPES[c]) for c in partition_columns])
        path = self.path(dataset)
        if not self.exists(path):
            table = full_schema.empty_table()
        else:
            partitioning = (
                ds.partitioning(pa.schema([(c, PARTITION_TYPES[c]) for c in partition_columns]), flavor="hive")
                if partition_columns else None
            )
            data = ds.dataset(path, filesystem=self.filesystem, format="parquet", partitioning=partitioning,
                              schema=full_schema)
            table = data.to_table(filter=filters, columns=columns)
        frame = table.to_pandas(types_mapper=None)
        for c in partition_columns:
            if c in frame.columns and PARTITION_TYPES[c] == pa.date32():
                frame[c] = pd.to_datetime(frame[c]).astype("datetime64[ns]")
            elif c in frame.columns:
                frame[c] = frame[c].astype("str")
        for name in schema.names:
            if name in frame.columns and pa.types.is_date32(schema.field(name).type):
                frame[name] = pd.to_datetime(frame[name]).astype("datetime64[ns]")
        return frame

    def partitions_with_file(self, dataset: str, file_name: str) -> list[dict[str, str]]:
        """Every partition of a dataset that holds a file of this name (partition values as in the path)."""
        folder = self.path(dataset)
        infos = self.filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True, recursive=True))
        found = []
        for info in infos:
            if info.type != pafs.FileType.File or info.base_name != file_name:
                continue
            segments = info.path[len(folder) + 1:].split("/")[:-1]
            if all("=" in seg for seg in segments):
                found.append({k: urllib.parse.unquote(v) for k, v in (seg.split("=", 1) for seg in segments)})
        return found

    # ------------------------------------------------------------------ writing

    def begin(self, run_id: str, plants: Iterable[str]) -> Transaction:
        """Start staging the files of one run."""
        return Transaction(self, run_id, sorted(set(plants)))

    def _write_bytes_atomically(self, path: str, payload: bytes) -> None:
        self._make_parent(path)
        if self.is_local:
            tmp = path + ".tmp"
            with self.filesystem.open_output_stream(tmp) as out:
                out.write(payload)
            os.replace(tmp, path)
        else:
            with self.filesystem.open_output_stream(path) as out:  # one PUT: all or nothing
                out.write(payload)

    def recover(self, plants: Iterable[str] | None = None) -> list[str]:
        """Roll forward every commit journal left by a crashed run (whose plants are all in `plants`)."""
        journal_dir = self.path("_journal")
        infos = self.filesystem.get_file_info(pafs.FileSelector(journal_dir, allow_not_found=True))
        held = None if plants is None else set(plants)
        recovered = []
        for info in sorted(infos, key=lambda i: i.path):
            if not info.base_name.endswith(".json"):
                continue
            with self.filesystem.open_input_stream(info.path) as stream:
                journal = json.loads(stream.read())
            if held is not None and not set(journal["plants"]) <= held:
                continue
            self._apply(journal)
            self.filesystem.delete_file(info.path)
            self._drop_staging(journal["run_id"])
            recovered.append(journal["run_id"])
        return recovered

    def _apply(self, journal: Mapping[str, object]) -> None:
        fs = self.filesystem
        moved = 0
        moves = cast("list[tuple[str, str]]", journal["moves"])
        for staged, final in moves:
            if fs.get_file_info(staged).type == pafs.FileType.NotFound:
                continue  # moved before the crash
            self._make_parent(final)
            fs.move(staged, final)  # S3: copy, then delete the staged object; a crash between is redone
            moved += 1
            if after_move is not None:
                after_move(moved)
        for final in cast("list[str]", journal["deletes"]):
            if fs.get_file_info(final).type != pafs.FileType.NotFound:
                fs.delete_file(final)
                self._prune_empty_dirs(final.rsplit("/", 1)[0])

    def _prune_empty_dirs(self, folder: str) -> None:
        if not self.is_local:
            return
        path = Path(folder)
        while str(path).startswith(self.root) and str(path) != self.root:
            try:
                path.rmdir()
            except OSError:
                return
            path = path.parent

    def _drop_staging(self, run_id: str) -> None:
        staging = self.path("_staging", encode_segment(run_id))
        if self.exists(staging):
            self.filesystem.delete_dir(staging)

    # ------------------------------------------------------------------ locks

    @contextmanager
    def locked(self, plants: Iterable[str], run_id: str, *, timeout: float = 0.0,
               stale_after: float | None = None) -> Iterator[None]:
        """Hold the lock of every plant for the duration; wait up to `timeout` seconds for it.

        A lock is taken over when its process is gone (same host), or, with `stale_after`, when it
        is older than that many seconds whatever host took it (workers of other machines).
        """
        held: list[str] = []
        try:
            for plant in sorted(set(plants)):
                held.append(self._acquire(plant, run_id, timeout, stale_after))
            yield
        finally:
            for path in held:
                try:
                    self.filesystem.delete_file(path)
                except (FileNotFoundError, OSError):
                    pass

    def _acquire(self, plant: str, run_id: str, timeout: float, stale_after: float | None = None) -> str:
        path = self.path("_locks", f"plant_id={encode_segment(plant)}.lock")
        payload = json.dumps(
            {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
             "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        ).encode()
        deadline = time.monotonic() + timeout
        while True:
            if self._create_exclusive(path, payload):
                return path
            holder = self._lock_holder(path)
            if holder is not None and (self._is_stale(holder) or _expired(holder, stale_after)):
                self.filesystem.delete_file(path)
                continue
            if time.monotonic() >= deadline:
                who = f"run {holder['run_id']} (pid {holder['pid']} on {holder['host']}, since {holder['since']})" \
                    if holder else "another run"
                raise LockError(f"plant {plant} is locked by {who}; try again when it has finished")
            time.sleep(0.2)

    def _create_exclusive(self, path: str, payload: bytes) -> bool:
        if self.is_local:
            os.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as out:
                out.write(payload)
            return True
        return _create_exclusive_object(self, path, payload)

    def _lock_holder(self, path: str) -> dict[str, object] | None:
        try:
            with self.filesystem.open_input_stream(path) as stream:
                return json.loads(stream.read() or b"null")
        except (FileNotFoundError, OSError, ValueError):
            return None

    @staticmethod
    def _is_stale(holder: Mapping[str, object]) -> bool:
        """A lock whose process is gone (same host only: elsewhere we cannot tell)."""
        if holder.get("host") != socket.gethostname():
            return False
        pid = holder.get("pid")
        if not isinstance(pid, int):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError, TypeError, OverflowError):
            return False
        return False


def _expired(holder: Mapping[str, object], stale_after: float | None) -> bool:
    """Whether a lock is older than its lease (None: locks never expire by age)."""
    if stale_after is None:
        return False
    try:
        since = dt.datetime.fromisoformat(str(holder.get("since")))
    except ValueError:
        return False
    return (dt.datetime.now(dt.UTC) - since).total_seconds() > stale_after


def _create_exclusive_object(warehouse: Warehouse, path: str, payload: bytes) -> bool:
    """Create-if-absent on an object store (conditional PUT); see pipeline.store.objectstore."""
    from pipeline.store import objectstore

    return objectstore.create_if_absent(warehouse.uri, warehouse.filesystem, path, payload)


@dataclass
class Transaction:
    """The files one run will publish, staged until `commit`.

    `put`/`put_file` convert a frame to Arrow on the caller's thread, then sort it and write it
    under `_staging/` on a small thread pool. Nothing is published until `commit`, which first
    waits for every staged write (the first failure is raised, after every other write has
    stopped) and only then writes the journal. `abort` stops the writes before it drops the
    staging folder, so a failed run leaves the warehouse exactly as it was.
    """

    warehouse: Warehouse
    run_id: str
    plants: list[str]
    moves: list[tuple[str, str]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    rows_written: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = field(default=None, init=False, repr=False, compare=False)
    _pending: deque[tuple[Future[None], int]] = field(default_factory=deque, init=False, repr=False, compare=False)
    _pending_bytes: int = field(default=0, init=False, repr=False, compare=False)
    _staging_ready: bool = field(default=False, init=False, repr=False, compare=False)

    def _staged_path(self, name: str) -> str:
        """A file in the run's staging folder (the folder is made once: every staged file is in it)."""
        staged = self.warehouse.path("_staging", encode_segment(self.run_id), name)
        if not self._staging_ready:
            self.warehouse._make_parent(staged)
            self._staging_ready = True
        return staged

    def _stage(self, table: pa.Table, sort_keys: pa.Table | None = None) -> str:
        """Queue `table` (ordered by `sort_keys`, if any) for writing under a new staged name."""
        staged = self._staged_path(f"{len(self.moves):06d}.parquet")
        size = table.nbytes
        self._wait_for_writes(room_for=size)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=STAGING_THREADS, thread_name_prefix="backflush-stage")
        write = _StagedWrite(table, sort_keys, staged, self.warehouse.filesystem)
        self._pending.append((self._pool.submit(write.run), size))
        self._pending_bytes += size
        return staged

    def _wait_for_writes(self, room_for: int | None = None) -> None:
        """Wait for queued writes until one more table of `room_for` bytes fits (None: until all are done).

        Raises the first failed write (in staging order), after every other write has stopped.
        """
        try:
            failed = [f for f, _ in self._pending if f.done() and f.exception() is not None]
            if failed:
                failed[0].result()
            while self._pending and (
                self._pending[0][0].done() or room_for is None or len(self._pending) >= STAGING_QUEUE
                or self._pending_bytes + room_for > STAGING_BYTES
            ):
                future, size = self._pending[0]
                future.result()
                self._pending.popleft()
                self._pending_bytes -= size
        except BaseException:
            self._stop_writes()
            raise

    def _stop_writes(self) -> None:
        """Cancel queued writes, wait for running ones (their errors are dropped) and end the pool."""
        pending = [f for f, _ in self._pending]
        self._pending, self._pending_bytes = deque(), 0
        for f in pending:
            f.cancel()
        wait_futures(pending)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def put(self, dataset: str, partition: Mapping[str, object], frame: pd.DataFrame,
            *, file_name: str = DATA_FILE, sort_by: list[str] | None = None) -> None:
        """Stage `frame` as the whole content of one file of one partition (rows ordered by `sort_by`)."""
        table, keys = _prepared(dataset, frame, sort_by)
        self._put_table(dataset, partition, table, keys, file_name)

    def _put_table(self, dataset: str, partition: Mapping[str, object], table: pa.Table,
                   sort_keys: pa.Table | None, file_name: str) -> None:
        self.put_staged(dataset, partition, self._stage(table, sort_keys), table.num_rows, file_name=file_name)

    def staging_for(self, label: str) -> StagingSlot:
        """Where another process may stage files of this run (see `stage_frame`, `put_staged`).

        Only on a local warehouse: a forked process must not share an object store's client.
        """
        folder = self._staged_path(encode_segment(label)).rsplit("/", 1)[0]
        return StagingSlot(folder=folder, label=encode_segment(label), root=self.warehouse.root)

    def put_staged(self, dataset: str, partition: Mapping[str, object], staged: str, rows: int,
                   *, file_name: str = DATA_FILE) -> None:
        """Publish at commit a file another process staged with `stage_frame` (as `put` would have)."""
        final = self.warehouse.partition_path(dataset, partition) + "/" + file_name
        self.moves.append((staged, final))
        self.rows_written[dataset] = self.rows_written.get(dataset, 0) + rows
        self.partitions.setdefault(dataset, []).append({**{k: _jsonable(v) for k, v in partition.items()},
                                                        "rows": rows})

    def put_file(self, dataset: str, file_name: str, frame: pd.DataFrame) -> None:
        """Stage an unpartitioned file of a dataset (e.g. one `runs` row per run)."""
        schema, _ = schemas.OUTPUT_DATASETS[dataset]
        table = to_arrow(frame, schema)
        self.moves.append((self._stage(table), self.warehouse.path(dataset, file_name)))
        self.rows_written[dataset] = self.rows_written.get(dataset, 0) + table.num_rows

    def delete(self, dataset: str, partition: Mapping[str, object], *, file_name: str = DATA_FILE) -> None:
        """Remove one file of a partition at commit, if it exists (its partition became empty)."""
        final = self.warehouse.partition_path(dataset, partition) + "/" + file_name
        if self.warehouse.exists(final):
            self.deletes.append(final)

    def replace(self, dataset: str, frame: pd.DataFrame, scope: Iterable[Mapping[str, object]],
                *, file_name: str = DATA_FILE, sort_by: list[str] | None = None) -> None:
        """Make each partition in `scope` hold exactly the rows of `frame` that belong to it."""
        schema, columns = schemas.OUTPUT_DATASETS[dataset]
        groups = frame.groupby(list(columns), sort=True).indices if not frame.empty else {}
        normalised = {tuple(_normalise(v) for v in (key if isinstance(key, tuple) else (key,))): positions
                      for key, positions in groups.items()}
        kept: list[tuple[Mapping[str, object], np.ndarray]] = []  # (partition, its rows' positions), scope order
        for partition in scope:
            key = tuple(_normalise(partition[c]) for c in columns)
            positions = normalised.get(key)
            if positions is None or len(positions) == 0:
                self.delete(dataset, partition, file_name=file_name)
            else:
                kept.append((partition, positions))
        if not kept:
            return
        # the rows of every kept partition, partition after partition, converted to Arrow at once;
        # each file is then a slice of that table (sorted on a staging thread)
        rows = frame.take(np.concatenate([positions for _, positions in kept])).drop(columns=list(columns))
        keys = _sort_keys(rows, sort_by) if sort_by else None
        if sort_by and keys is None:  # sorted in pandas, partition by partition
            for partition, positions in kept:
                self.put(dataset, partition, frame.take(positions).drop(columns=list(columns)),
                         file_name=file_name, sort_by=sort_by)
            return
        table = to_arrow(rows, schema)
        del rows
        start = 0
        for partition, positions in kept:
            n = len(positions)
            self._put_table(dataset, partition, table.slice(start, n),
                            None if keys is None else keys.slice(start, n), file_name)
            start += n

    def commit(self) -> None:
        """Publish everything staged, all or nothing (a crash half-way is rolled forward later)."""
        self._wait_for_writes()  # every staged file is whole on storage before the journal names it
        self._stop_writes()
        journal = {"run_id": self.run_id, "plants": self.plants, "moves": self.moves, "deletes": self.deletes}
        path = self.warehouse.path("_journal", encode_segment(self.run_id) + ".json")
        self.warehouse._write_bytes_atomically(path, json.dumps(journal).encode())
        self.warehouse._apply(journal)
        self.warehouse.filesystem.delete_file(path)
        self.warehouse._drop_staging(self.run_id)

    def abort(self) -> None:
        """Forget everything staged; the warehouse stays as it was."""
        self._stop_writes()  # no write may recreate a staged file after the folder is gone
        self.warehouse._drop_staging(self.run_id)


def _prepared(dataset: str, frame: pd.DataFrame, sort_by: list[str] | None) -> tuple[pa.Table, pa.Table | None]:
    """A frame as the dataset's Arrow table, and the keys to sort it by (None: in order already)."""
    schema, _ = schemas.OUTPUT_DATASETS[dataset]
    keys = _sort_keys(frame, sort_by) if sort_by else None
    if sort_by and keys is None:  # a key Arrow would not order as pandas does: sort in pandas
        frame = frame.sort_values(sort_by, kind="stable")
    return to_arrow(frame, schema), keys


@dataclass(frozen=True)
class StagingSlot:
    """A run's staging folder as another process sees it: it names its files with its own label."""

    folder: str
    label: str
    root: str

    def stage_frame(self, dataset: str, frame: pd.DataFrame, name: str, *, sort_by: list[str] | None = None
                    ) -> tuple[str, int]:
        """Write `frame` as `Transaction.put` would (same schema, order and format), here and now;
        return (the staged file, its rows) for `Transaction.put_staged`."""
        table, keys = _prepared(dataset, frame, sort_by)
        staged = f"{self.folder}/{self.label}-{encode_segment(name)}.parquet"
        _StagedWrite(table, keys, staged, Warehouse(self.root).filesystem).run()
        return staged, table.num_rows


class _StagedWrite:
    """One staged file: sort (Arrow compute) and write (Parquet), run on a staging thread.

    A class, not a function, so that nothing run on a staging thread touches pandas or the
    engine's own functions (benchmarks/stages.py wraps those with a single-threaded tracer).
    """

    __slots__ = ("filesystem", "path", "sort_keys", "table")

    def __init__(self, table: pa.Table, sort_keys: pa.Table | None, path: str, filesystem: pafs.FileSystem) -> None:
        self.table = table
        self.sort_keys = sort_keys
        self.path = path
        self.filesystem = filesystem

    def run(self) -> None:
        table, keys = self.table, self.sort_keys
        self.table = self.sort_keys = None  # the pool's work item keeps `self`: free the data when done
        if keys is not None and not self._in_order(keys):  # rows mostly come sorted: no copy then
            # stable, like pandas' kind="stable"; nulls last (Arrow's default, pandas' na_position)
            order = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])
            table = table.take(order)
            del order
        del keys
        pq.write_table(table, self.path, filesystem=self.filesystem, row_group_size=ROW_GROUP_SIZE,
                       **_PARQUET_OPTIONS)

    @staticmethod
    def _in_order(keys: pa.Table) -> bool:
        """Whether no row sorts after the next one (keys compared in turn, nulls after every value).

        Then a stable sort would leave every row where it is.
        """
        if keys.num_rows < 2:
            return True
        after: pa.ChunkedArray | None = None  # row i sorts after row i+1 on the keys seen so far
        for column in reversed(keys.columns):
            if pa.types.is_null(column.type):
                continue  # all null: every row equal on this key
            a, b = column.slice(0, keys.num_rows - 1), column.slice(1)
            a_null, b_null = pc.is_null(a), pc.is_null(b)
            greater = pc.or_(pc.fill_null(pc.greater(a, b), False), pc.and_not(a_null, b_null))
            if after is None:
                after = greater
            else:
                equal = pc.or_(pc.fill_null(pc.equal(a, b), False), pc.and_(a_null, b_null))
                after = pc.or_(greater, pc.and_(equal, after))
        return after is None or not pc.any(after).as_py()


def _sort_keys(frame: pd.DataFrame, sort_by: list[str]) -> pa.Table | None:
    """The sort columns as Arrow arrays ordering rows exactly as pandas' stable sort_values would.

    Taken from the frame (not the output table), so a key sorts on its pandas values (a datetime
    key written as a date still sorts by time of day). None when a key's pandas order is not the
    plain Arrow order of its values (categoricals, mixed objects, ...): the caller sorts in pandas.
    """
    arrays = []
    for name in sort_by:
        if name not in frame.columns:
            return None
        values = frame[name]
        if not isinstance(values, pd.Series):  # a duplicated column name
            return None
        dtype = values.dtype
        if isinstance(dtype, pd.StringDtype) or isinstance(dtype, pd.DatetimeTZDtype):
            pass
        elif isinstance(dtype, pd.ArrowDtype):
            if not (pa.types.is_string(dtype.pyarrow_dtype) or pa.types.is_large_string(dtype.pyarrow_dtype)):
                return None
        elif isinstance(dtype, np.dtype) and (dtype.kind in "iubM" or dtype in (np.float32, np.float64)):
            pass
        elif isinstance(dtype, np.dtype) and dtype.kind == "O" \
                and pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
            pass
        else:
            return None
        # nulls and NaN (NA to pandas) both become null: after every value, in their order
        arrays.append(pa.array(values, from_pandas=True))
    return pa.Table.from_arrays(arrays, names=[f"k{i}" for i in range(len(arrays))])


def _normalise(value: object) -> object:
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date)):
        return _date(value)
    return str(value)


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, (dt.date, dt.datetime)) else value


def to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Cast a frame to a declared output schema (missing columns are an error, extras dropped)."""
    missing = [n for n in schema.names if n not in frame.columns]
    if missing:
        raise WarehouseError(f"output is missing columns {missing}")
    arrays = []
    for fld in schema:
        values = frame[fld.name]
        if pa.types.is_date32(fld.type):
            values = _calendar_days(values)
        arrays.append(pa.array(values, type=fld.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def _calendar_days(values: pd.Series) -> np.ndarray:
    """The calendar date of each value (local date if zoned; NaT stays NaT), as datetime64[D].

    Same dates as `pd.to_datetime(values).dt.date`, without a Python object per row.
    """
    stamps = pd.to_datetime(values)
    if isinstance(stamps.dtype, pd.DatetimeTZDtype):
        stamps = stamps.dt.tz_localize(None)  # the wall-clock time, whose date .dt.date gives
    if not (isinstance(stamps.dtype, np.dtype) and stamps.dtype.kind == "M"):
        return np.asarray(stamps.dt.date, dtype=object)  # e.g. Arrow-backed timestamps
    return stamps.to_numpy().astype("datetime64[D]")  # numpy floors: 23:00 the day before stays that day
