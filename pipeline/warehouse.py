"""The warehouse: Hive-partitioned Parquet datasets, written all-or-nothing per run.

A run stages every file it will publish under `_staging/<run_id>/`, then writes a commit
journal (`_journal/<run_id>.json`, one atomic object), then moves each staged file onto its
final name (an atomic rename locally, an atomic object replacement on object stores) and
deletes the partitions that became empty. A crash before the journal leaves the warehouse as it
was; a crash after it is rolled forward by the next run (`recover`). Readers never see half a
file: each partition is one file, replaced whole. Paths starting with `_` are invisible to
pyarrow, pandas, DuckDB and Spark dataset discovery.

On an object store (`s3://bucket/prefix`, see pipeline.objectstore) the same protocol holds with
object operations: a "move" is a server-side copy then a delete of the staged object (a single
object replace is atomic for readers), there are no directories to create or prune, and the plant
locks are conditional PUTs. A warehouse URI is only ever printed redacted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline import schemas

PARTITION_TYPES: dict[str, pa.DataType] = {
    "plant_id": pa.string(),
    "business_date": pa.date32(),
    "count_date": pa.date32(),
    "table": pa.string(),
}
DATA_FILE = "part-0.parquet"
ROW_GROUP_SIZE = 256 * 1024
#: Tests only: a commit pauses after this many file moves so a test can kill it half-way
#: (tests/test_objectstore.py); unset in production.
PAUSE_AFTER_MOVES_ENV = "BACKFLUSH_TEST_PAUSE_AFTER_MOVES"


class WarehouseError(RuntimeError):
    """The warehouse cannot be written or read; the message is the one-line reason."""


class LockError(WarehouseError):
    """Another run holds the lock of a plant."""


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
            from pipeline import objectstore  # only needed for object stores

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
        from pipeline import objectstore

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
            _pause_for_tests(moved)
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


def _pause_for_tests(moved: int) -> None:
    """Crash-test hook: with $BACKFLUSH_TEST_PAUSE_AFTER_MOVES=N, announce and sleep after N moves."""
    if os.environ.get(PAUSE_AFTER_MOVES_ENV) == str(moved):
        print(f"{PAUSE_AFTER_MOVES_ENV}: paused after {moved} moves", file=sys.stderr, flush=True)
        time.sleep(600)


def _create_exclusive_object(warehouse: Warehouse, path: str, payload: bytes) -> bool:
    """Create-if-absent on an object store (conditional PUT); see pipeline.objectstore."""
    from pipeline import objectstore  # only needed for object stores

    return objectstore.create_if_absent(warehouse, path, payload)


@dataclass
class Transaction:
    """The files one run will publish, staged until `commit`."""

    warehouse: Warehouse
    run_id: str
    plants: list[str]
    moves: list[tuple[str, str]] = field(default_factory=list)
    deletes: list[str] = field(default_factory=list)
    rows_written: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list[dict[str, object]]] = field(default_factory=dict)

    def _stage(self, table: pa.Table) -> str:
        staged = self.warehouse.path("_staging", encode_segment(self.run_id), f"{len(self.moves):06d}.parquet")
        self.warehouse._make_parent(staged)
        pq.write_table(table, staged, filesystem=self.warehouse.filesystem, compression="zstd",
                       row_group_size=ROW_GROUP_SIZE, write_statistics=True)
        return staged

    def put(self, dataset: str, partition: Mapping[str, object], frame: pd.DataFrame,
            *, file_name: str = DATA_FILE, sort_by: list[str] | None = None) -> None:
        """Stage `frame` as the whole content of one file of one partition."""
        schema, _ = schemas.OUTPUT_DATASETS[dataset]
        rows = frame.sort_values(sort_by, kind="stable") if sort_by else frame
        table = to_arrow(rows, schema)
        final = self.warehouse.partition_path(dataset, partition) + "/" + file_name
        self.moves.append((self._stage(table), final))
        self.rows_written[dataset] = self.rows_written.get(dataset, 0) + table.num_rows
        self.partitions.setdefault(dataset, []).append({**{k: _jsonable(v) for k, v in partition.items()},
                                                        "rows": table.num_rows})

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
        _, columns = schemas.OUTPUT_DATASETS[dataset]
        groups = {k if isinstance(k, tuple) else (k,): g for k, g in frame.groupby(list(columns), sort=True)} \
            if not frame.empty else {}
        normalised = {tuple(_normalise(v) for v in key): rows for key, rows in groups.items()}
        for partition in scope:
            key = tuple(_normalise(partition[c]) for c in columns)
            rows = normalised.get(key)
            if rows is None or rows.empty:
                self.delete(dataset, partition, file_name=file_name)
            else:
                self.put(dataset, partition, rows.drop(columns=list(columns)), file_name=file_name, sort_by=sort_by)

    def commit(self) -> None:
        """Publish everything staged, all or nothing (a crash half-way is rolled forward later)."""
        journal = {"run_id": self.run_id, "plants": self.plants, "moves": self.moves, "deletes": self.deletes}
        path = self.warehouse.path("_journal", encode_segment(self.run_id) + ".json")
        self.warehouse._write_bytes_atomically(path, json.dumps(journal).encode())
        self.warehouse._apply(journal)
        self.warehouse.filesystem.delete_file(path)
        self.warehouse._drop_staging(self.run_id)

    def abort(self) -> None:
        """Forget everything staged; the warehouse stays as it was."""
        self.warehouse._drop_staging(self.run_id)


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
            values = pd.to_datetime(values).dt.date
        arrays.append(pa.array(values, type=fld.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)
