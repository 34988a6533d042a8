"""Landing files: listing a landing folder, opening CSV and Parquet files, and plant filters in the scan."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.contract import schemas
from pipeline.contract.inputs import LINE_COLUMN
from pipeline.engine.strings import as_arrow, is_arrow_text, key_hashes
from pipeline.errors import SourceError


def landing_files(landing: str | Path) -> dict[str, list[tuple[str, Path]]]:
    """The files of each table in LANDING/<table>/*.csv|*.parquet, and in Hive-style folders below
    it (LANDING/<table>/date=2026-01-12/*.parquet), as (source name, path) pairs; the source name is
    the file's path under LANDING."""
    root = Path(landing)
    if not root.is_dir():
        raise SourceError(f"landing folder {root} does not exist")
    found: dict[str, list[tuple[str, Path]]] = {}
    for table in schemas.INPUT_MODELS:
        folder = root / table
        files = sorted(_data_files(folder)) if folder.is_dir() else []
        files += sorted(p for sub in sorted(folder.glob("*=*")) if sub.is_dir() for p in _data_files(sub)) \
            if folder.is_dir() else []
        if not files and table not in schemas.OPTIONAL_TABLES:
            raise SourceError(f"required table {table}: no .csv or .parquet file in {folder}")
        found[table] = [(p.relative_to(root).as_posix(), p) for p in files]
    return found


def _data_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("*") if p.is_file() and p.suffix.lower() in (".csv", ".parquet")]


def read_landing_files(
    landing: str | Path, *, skip: Iterable[str] = ()
) -> dict[str, list[tuple[str, pd.DataFrame]]]:
    """Raw frames per table from LANDING/<table>/*.csv|*.parquet, as (file name, frame) pairs.

    skip: tables whose files are not read (they are listed as empty).
    """
    return {table: list(frames) for table, frames in lazy_landing_files(landing, skip=skip).items()}


def lazy_landing_files(landing: str | Path | Mapping[str, list[tuple[str, Path]]], *, skip: Iterable[str] = (),
                       plants: Iterable[str] | None = None, row_groups: Mapping[str, Sequence[int]] | None = None
                       ) -> dict[str, Iterable[tuple[str, pd.DataFrame]]]:
    """As `read_landing_files`, but each file is read only when iterated (one raw file in memory).

    landing: the folder, or the files to read per table (`landing_files`, perhaps pruned);
    plants: only rows of these plants are kept of the tables in PLANT_FILTERED (`keep_plants`);
    row_groups: of these sources (Parquet files), only these row groups are read (`read_file`).
    """
    pieces = row_groups or {}
    skipped = set(skip)
    wanted = None if plants is None else sorted(set(plants))
    listed = landing_files(landing) if isinstance(landing, (str, Path)) else landing

    def frames(table: str, files: list[tuple[str, Path]]) -> Iterator[tuple[str, pd.DataFrame]]:
        for source, path in files:
            groups = pieces.get(source)
            frame = read_file(path) if groups is None else read_file(path, groups)
            yield source, keep_plants(frame, wanted) if table in PLANT_FILTERED else frame

    return {table: [] if table in skipped else frames(table, files) for table, files in listed.items()}


#: tables whose rows a run of some plants reads only for those plants (master data is read whole)
PLANT_FILTERED = frozenset({"completions", "stock_counts", "movements"})


def plant_mask(values: pd.Series | pa.Array | pa.ChunkedArray, plants: Iterable[str]) -> np.ndarray:
    """Which raw plant ids may belong to `plants` once coerced: the stripped value is one of them,
    or the value is missing or blank (such a row is quarantined without a plant, by every run)."""
    wanted = pa.array(sorted(set(plants)), pa.string())
    if isinstance(values, pd.Series):
        if is_arrow_text(values):
            values = as_arrow(values)
        else:
            try:
                values = pa.array(values, pa.string(), from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers, or mixed values: as coercion writes them
                values = pa.array(values.astype("str").where(values.notna()), pa.string(), from_pandas=True)
    elif not pa.types.is_string(values.type) and not pa.types.is_large_string(values.type):
        values = pc.cast(values, pa.string())
    stripped = pc.utf8_trim_whitespace(values)
    keep = pc.or_kleene(pc.is_in(stripped, value_set=wanted.cast(stripped.type)),
                        pc.or_kleene(pc.is_null(stripped), pc.equal(stripped, "")))
    return np.asarray(pc.fill_null(keep, True).to_numpy(zero_copy_only=False), dtype=bool)


def _plant_column(columns: Iterable[object]) -> object | None:
    return next((c for c in columns if str(c).strip() == "plant_id"), None)


def keep_plants(frame: pd.DataFrame, plants: Iterable[str] | None, first_line: int = 2,
                ids: np.ndarray | None = None) -> pd.DataFrame:
    """The raw rows of a file that may belong to `plants` (`plant_mask`), before coercion, each
    with its line in the file (LINE_COLUMN); every row when `plants` is None or there is no plant
    column (coercion then says what is missing). With `ids`, every row of those completion ids too
    (`keep_plants_arrow`)."""
    column = _plant_column(frame.columns) if plants is not None else None
    if column is None or frame.empty:
        return frame
    keep = plant_mask(frame[column], plants)  # type: ignore[arg-type]
    if ids is not None and not keep.all():
        id_column = next((c for c in frame.columns if str(c).strip() == "completion_id"), None)
        if id_column is not None:
            keep |= np.isin(key_hashes(frame[id_column]), ids)
    if keep.all():
        return frame
    lines = frame[LINE_COLUMN].to_numpy() if LINE_COLUMN in frame.columns else np.arange(first_line, first_line + len(frame))
    return frame.assign(**{LINE_COLUMN: lines})[keep].reset_index(drop=True)


def keep_plants_arrow(table: pa.Table, plants: Iterable[str] | None, ids: np.ndarray | None = None) -> pa.Table:
    """`keep_plants` of an Arrow table that carries LINE_COLUMN already; with `ids` (sorted key hashes
    of completion ids, `plant_ids`), also every row of those ids, whatever its plant: a correction
    that moved a completion to another plant must still supersede its version at `plants`."""
    column = _plant_column(table.column_names) if plants is not None else None
    if column is None or table.num_rows == 0:
        return table
    keep = plant_mask(table.column(str(column)), plants)  # type: ignore[arg-type]
    if ids is not None and not keep.all():
        id_column = next((c for c in table.column_names if str(c).strip() == "completion_id"), None)
        if id_column is not None:
            keep |= np.isin(key_hashes(table.column(id_column).to_pandas()), ids)
    return table if keep.all() else table.filter(pa.array(keep))


def plant_ids(tables: Iterable[pa.Table], plants: Iterable[str]) -> np.ndarray:
    """Sorted key hashes of the completion ids that have a row of `plants` (`plant_mask`) in tables."""
    wanted = list(plants)
    found = [np.zeros(0, dtype=np.uint64)]
    for table in tables:
        column = _plant_column(table.column_names)
        id_column = next((c for c in table.column_names if str(c).strip() == "completion_id"), None)
        if column is None or id_column is None or table.num_rows == 0:
            continue
        keep = plant_mask(table.column(str(column)), wanted)
        found.append(key_hashes(table.column(id_column).filter(pa.array(keep)).to_pandas()))
    return np.unique(np.concatenate(found))


# undecodable bytes survive as surrogates and make their rows INVALID, not the whole file
_CSV_OPTIONS: dict[str, Any] = dict(dtype=object, keep_default_na=False, na_values=[""], encoding="utf-8",
                                    encoding_errors="surrogateescape")


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """A file that cannot be read stops the run with a one-line SourceError naming it."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise SourceError(f"file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except (pa.ArrowException, pd.errors.ParserError, OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"file {path} cannot be read: {reason}") from exc


CSV_OPTIONS = _CSV_OPTIONS


reading = _reading  # for modules that open landing files themselves (pipeline.intake.landing)


def read_file(path: Path, row_groups: Sequence[int] | None = None) -> pd.DataFrame:
    """The raw rows of one landing file (CSV as text, Parquet as typed); SourceError if unreadable.

    row_groups: of a Parquet file, only these row groups (a pruned read, `pipeline.intake.landing`), each
    row with its line in the whole file (LINE_COLUMN), so that its `_source` is a full read's."""
    with _reading(path):
        if path.suffix.lower() == ".csv":
            if path.stat().st_size == 0:
                return pd.DataFrame()
            return pd.read_csv(path, **_CSV_OPTIONS)
        if row_groups is None:
            return pq.read_table(path).to_pandas()
        parquet = pq.ParquetFile(path)
        first = _first_lines(parquet)
        frame = parquet.read_row_groups(list(row_groups)).to_pandas()
        lines = np.concatenate([np.arange(first[g], first[g + 1]) for g in row_groups] or [np.zeros(0, dtype=np.int64)])
        return frame.assign(**{LINE_COLUMN: lines})


def _first_lines(parquet: pq.ParquetFile) -> np.ndarray:
    """The line of each row group's first row (header = line 1, as a CSV file counts), and one past the last."""
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
    return np.concatenate([[2], 2 + np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)


def _runs(groups: Sequence[int]) -> list[list[int]]:
    """Sorted row groups as runs of consecutive ones ([0, 1, 3] -> [[0, 1], [3]])."""
    out: list[list[int]] = []
    for g in sorted(groups):  # per row group, not per row
        if out and g == out[-1][-1] + 1:
            out[-1].append(g)
        else:
            out.append([g])
    return out


def read_file_chunks(path: Path, rows: int) -> Iterator[tuple[int, pd.DataFrame]]:
    """The raw rows of one landing file in chunks of about `rows` rows, each with the line of its
    first row (header = line 1), read as `read_file` reads the whole file; SourceError if unreadable."""
    with _reading(path):
        if path.suffix.lower() == ".csv":
            if path.stat().st_size == 0:
                yield 2, pd.DataFrame()
                return
            line, chunks = 2, 0
            for chunk in pd.read_csv(path, chunksize=rows, **_CSV_OPTIONS):
                yield line, chunk.reset_index(drop=True)
                line, chunks = line + len(chunk), chunks + 1
            if not chunks:  # a header without rows still says which columns the file has
                yield line, pd.read_csv(path, nrows=0, **_CSV_OPTIONS)
            return
    for line, table in read_parquet_chunks(path, rows):
        yield line, table.to_pandas()


def read_parquet_chunks(path: Path, rows: int, row_groups: Sequence[int] | None = None
                        ) -> Iterator[tuple[int, pa.Table]]:
    """A Parquet landing file's rows as Arrow tables of about `rows` rows, each with the line of its
    first row (as `read_file_chunks` counts them); SourceError if unreadable. row_groups: only
    these row groups (`read_file`), their lines those of the whole file."""
    with _reading(path):
        parquet = pq.ParquetFile(path)
        first = _first_lines(parquet) if row_groups is not None else None
        runs = [None] if row_groups is None else _runs(row_groups)
        any_rows = False
        line = 2
        for run in runs:  # consecutive row groups: their lines follow on
            line = 2 if run is None or first is None else int(first[run[0]])
            for batch in parquet.iter_batches(batch_size=rows, row_groups=run):
                any_rows = True
                yield line, pa.Table.from_batches([batch])
                line += batch.num_rows
        if not any_rows:
            yield line, parquet.schema_arrow.empty_table()
