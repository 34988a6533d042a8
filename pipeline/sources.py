"""Read the landing tables, coerce them to the declared types and quarantine what does not fit.

Every input row leaves this module either accepted (typed, with its business date) or as a
quarantine row with a code and a message. What cannot be read at all (a missing required
column, an unreadable file) stops the run with a one-line `SourceError`.
"""

from __future__ import annotations

import contextlib
import io
import re
import zoneinfo
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pandera.errors
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import schemas

_TRUE = frozenset({"true", "t", "1", "yes", "y"})
_FALSE = frozenset({"false", "f", "0", "no", "n"})
_VALID_ZONES = frozenset(zoneinfo.available_timezones())
_SURROGATES = "[\udc80-\udcff]"
_EARLIEST = pd.Timestamp("1700-01-01", tz="UTC")
_LATEST = pd.Timestamp("2260-01-01", tz="UTC")
LINE_COLUMN = "__line__"  # a raw row's line in its file, where rows were split off from it (see pipeline.buckets)
EVENT_TIME = {"completions": "completed_at", "stock_counts": "counted_at", "movements": "moved_at"}


class SourceError(RuntimeError):
    """A landing table cannot be read; the message is the one-line reason.

    `transient` is true when trying again later may succeed (a database that could not be reached).
    """

    transient: bool = False


@dataclass
class TableStats:
    """How the rows of one input table were disposed of."""

    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    superseded: int = 0  # older versions of a corrected completion, and identical repeats


@dataclass
class Inputs:
    """The validated input tables of a run, with business dates, plus everything rejected."""

    plants: pd.DataFrame
    items: pd.DataFrame
    uom_conversions: pd.DataFrame
    bom: pd.DataFrame
    completions: pd.DataFrame
    stock_counts: pd.DataFrame
    movements: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict[str, TableStats] = field(default_factory=dict)
    item_costs: pd.DataFrame = field(default_factory=lambda: _empty_typed("item_costs"))
    periods: pd.DataFrame = field(default_factory=lambda: _empty_typed("periods"))
    broken_bom: pd.DataFrame = field(default_factory=lambda: _broken_bom(empty_quarantine()))


# ------------------------------------------------------------------------------------ reading


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
        if _is_arrow_text(values):
            values = _arrow(values)
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


def read_sql_tables(sql: object, **bounds: object) -> dict[str, list[tuple[str, Any]]]:
    """Raw frames per table from a SQL database (see pipeline.sql_source for bounds and naming)."""
    from pipeline import sql_source

    return sql_source.read_sql_tables(sql, **bounds)  # type: ignore[arg-type]


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
reading = _reading  # for modules that open landing files themselves (pipeline.landing)


def read_file(path: Path, row_groups: Sequence[int] | None = None) -> pd.DataFrame:
    """The raw rows of one landing file (CSV as text, Parquet as typed); SourceError if unreadable.

    row_groups: of a Parquet file, only these row groups (a pruned read, `pipeline.landing`), each
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
        line, any_rows = 2, False
        for run in runs:  # consecutive row groups: their lines follow on
            line = 2 if run is None or first is None else int(first[run[0]])
            for batch in parquet.iter_batches(batch_size=rows, row_groups=run):
                any_rows = True
                yield line, pa.Table.from_batches([batch])
                line += batch.num_rows
        if not any_rows:
            yield line, parquet.schema_arrow.empty_table()


# ------------------------------------------------------------------------------------ coercion


def _as_text(values: pd.Series) -> pd.Series:
    """Strings, stripped, with empty strings as missing."""
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("str")
    else:
        text = values.astype("str").where(values.notna())
    text = _strip(text)
    return text.where(text != "")


def _strip(text: pd.Series) -> pd.Series:
    """`text.str.strip()`, but `text` itself (no second copy of the strings) when no value would change."""
    if _is_arrow_text(text) and not any(_strippable(chunk) for chunk in _arrow(text).chunks):
        return text
    return text.str.strip()


def _strippable(strings: pa.Array) -> bool:
    """Whether a string has surrounding whitespace (pandas strips Arrow strings with utf8_trim_whitespace)."""
    # stripping only removes characters: as many bytes after as before means no value changes
    return _byte_count(pc.utf8_trim_whitespace(strings)) != _byte_count(strings)


def _byte_count(strings: pa.Array) -> int:
    return pc.sum(pc.binary_length(strings)).as_py() or 0


def _is_arrow_text(values: pd.Series) -> bool:
    """Whether `values` are strings stored in Arrow (pandas' default `str` dtype)."""
    return isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"


def _arrow(values: pd.Series) -> pa.ChunkedArray:
    """The Arrow array behind an Arrow-backed Series, as stored (no copy)."""
    array = pa.array(values.array)
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])


def _is_text(values: pd.Series) -> bool:
    return values.dtype == object or pd.api.types.is_string_dtype(values.dtype)


def _present(values: pd.Series) -> pd.Series:
    """Whether a value was given (a blank string is no value); typed columns are never stringified."""
    return _as_text(values).notna() if _is_text(values) else values.notna()


def _coerce_str(values: pd.Series) -> pd.Series:
    return _as_text(values)


def _coerce_float(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64")
    return pd.to_numeric(_as_text(values), errors="coerce").astype("float64")


def _coerce_int(values: pd.Series) -> pd.Series:
    numbers = _coerce_float(values)
    integral = numbers.notna() & np.isfinite(numbers) & (numbers == np.floor(numbers))
    return numbers.where(integral)


def _coerce_bool(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean")
    text = _as_text(values).str.lower()
    out = pd.Series(pd.NA, index=values.index, dtype="boolean")
    out[text.isin(_TRUE)] = True
    out[text.isin(_FALSE)] = False
    return out


def _coerce_timestamp(values: pd.Series) -> pd.Series:
    """UTC timestamps; a value without an offset is UTC."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        stamps = values.dt.tz_convert("UTC").dt.as_unit("us")
        return stamps.where((stamps >= _EARLIEST) & (stamps < _LATEST))
    if pd.api.types.is_datetime64_dtype(values.dtype):
        stamps = values.dt.tz_localize("UTC").dt.as_unit("us")
        return stamps.where((stamps >= _EARLIEST) & (stamps < _LATEST))
    text = _as_text(values)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce").dt.as_unit("us")
    # years outside 1678..2261 cannot be dated in every time zone: not a production timestamp
    return parsed.where((parsed >= _EARLIEST) & (parsed < _LATEST))


def _coerce_date(values: pd.Series) -> pd.Series:
    """Calendar dates (naive midnight timestamps); a value with a time of day is not a date."""
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        parsed = values.dt.tz_localize(None) if isinstance(values.dtype, pd.DatetimeTZDtype) else values
    elif values.dtype == object and values.map(lambda v: hasattr(v, "isoformat"), na_action="ignore").any():
        parsed = pd.to_datetime(values, errors="coerce")
    else:
        parsed = pd.to_datetime(_as_text(values), format="ISO8601", errors="coerce")
        if isinstance(parsed.dtype, pd.DatetimeTZDtype):
            parsed = parsed.dt.tz_localize(None)
    parsed = parsed.astype("datetime64[ns]")
    return parsed.where(parsed == parsed.dt.normalize())


def coerce_column(values: pd.Series, kind: str) -> pd.Series:
    """One raw column coerced as `coerce_table` coerces a column of that kind (missing: NaN/NaT)."""
    return _COERCE[kind](values)


_COERCE: dict[str, Callable[[pd.Series], pd.Series]] = {
    "str": _coerce_str,
    "float": _coerce_float,
    "int": _coerce_int,
    "bool": _coerce_bool,
    "timestamp": _coerce_timestamp,
    "date": _coerce_date,
}
_KIND_WORDS = {
    "float": "a number",
    "int": "a whole number",
    "bool": "true or false",
    "timestamp": "an ISO 8601 timestamp",
    "date": "an ISO 8601 date",
}


def _row_json(frame: pd.DataFrame) -> pd.Series:
    """Each row as a JSON object of its own columns (where it was read from goes to `source`)."""
    frame = frame.drop(columns=[c for c in ("_source",) if c in frame.columns])
    if frame.empty:
        return pd.Series([], dtype="str", index=frame.index)
    text = frame.to_json(orient="records", lines=True, date_format="iso", default_handler=str)
    return pd.Series(text.rstrip("\n").split("\n"), index=frame.index, dtype="str").str.replace("\\/", "/")


def coerce_table(table: str, files: Iterable[tuple[str, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed, checked rows of one table (defaults applied) and the INVALID rows, with their original values."""
    kinds = schemas.column_kinds(table)
    required = schemas.required_columns(table)
    defaults = schemas.column_defaults(table)
    typed_parts: list[pd.DataFrame] = []
    bad_parts: list[pd.DataFrame] = []
    for source, raw in files:
        if raw.shape[1] == 0 and raw.shape[0] == 0:
            continue  # an empty file holds no rows
        raw = raw.rename(columns=lambda c: str(c).strip())
        missing = [c for c in required if c not in raw.columns]
        if missing:
            raise SourceError(
                f"{source}: required column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(missing)} missing (has: {', '.join(map(str, raw.columns)) or 'none'})"
            )
        raw = raw.reset_index(drop=True)
        # a bucket of a streamed file keeps each row's line in the file it came from
        lines = raw.pop(LINE_COLUMN).to_numpy() if LINE_COLUMN in raw.columns else np.arange(2, len(raw) + 2)
        typed = pd.DataFrame(index=raw.index)
        problems: list[pd.Series] = []  # text for the failing rows of one check each, by row label
        for column in raw.columns:
            undecodable = _undecodable(raw[column])
            if undecodable is not None:
                text = str(column) + " holds bytes that are not UTF-8; "
                problems.append(pd.Series(text, index=raw.index[undecodable], dtype="str"))
                raw[column] = raw[column].str.replace(_SURROGATES, "\ufffd", regex=True)
        for column, kind in kinds.items():
            if column not in raw.columns:
                default = defaults.get(column)
                typed[column] = _default_column(kind, default, len(raw))
                continue
            values = _COERCE[kind](raw[column])
            unset = values.isna()
            if unset.any():  # a missing value fails if one was given, else it takes the default
                present = _present(raw[column]) if kind != "str" else values.notna()
                failed = present & unset
                if failed.any():
                    # the whole column is cast: how pandas writes a datetime depends on its neighbours
                    shown = raw[column].astype("str")[failed].str.slice(0, 60)
                    problems.append(column + " = " + shown.map(repr) + " is not " + _KIND_WORDS[kind] + "; ")
                default = defaults.get(column)
                if default is not None:
                    values = values.where(~unset | failed, _default_column(kind, default, len(raw)))
            typed[column] = values
        # header is line 1; an integer Series is cast to text by Arrow (an Index goes value by value)
        typed["_source"] = source + ":" + pd.Series(lines, index=raw.index).astype("str")
        raw = raw.assign(_source=typed["_source"])
        if problems:
            messages = pd.concat(problems).groupby(level=0, sort=True).agg("".join).astype("str")
            bad = raw.index.isin(messages.index)
            bad_parts.append(
                _quarantine_frame(table, typed[bad], "INVALID", messages.str.rstrip("; "), _row_json(raw[bad]))
            )
            typed, raw = typed[~bad], raw[~bad]
        valid, failed_checks = validate_table(table, _finalise_dtypes(table, typed), raw)
        typed_parts.append(valid)
        if not failed_checks.empty:
            bad_parts.append(failed_checks)
    typed_all = (
        pd.concat(typed_parts, ignore_index=True) if typed_parts else _empty_typed(table)
    )
    typed_all = _finalise_dtypes(table, typed_all)
    bad_all = pd.concat(bad_parts, ignore_index=True) if bad_parts else empty_quarantine()
    return typed_all, bad_all


def _undecodable(values: pd.Series) -> np.ndarray | None:
    """Which values hold bytes that are not UTF-8; None when none does."""
    # only Python strings (CSV) can hold undecodable bytes; Arrow strings cannot
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) != "string":
        return None
    if not re.search(_SURROGATES, "".join(values.dropna())):  # one scan of all the text, not one per value
        return None
    return values.str.contains(_SURROGATES, regex=True, na=False).to_numpy()


def _default_column(kind: str, default: object, n: int) -> pd.Series:
    if kind == "timestamp":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    if kind == "date":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")
    if kind == "bool":
        return pd.Series(default if default is not None else pd.NA, index=range(n), dtype="boolean")
    if kind in ("float", "int"):
        return pd.Series(np.nan if default is None else default, index=range(n), dtype="float64")
    return pd.Series(default, index=range(n), dtype="str")


def _empty_typed(table: str) -> pd.DataFrame:
    kinds = schemas.column_kinds(table)
    frame = pd.DataFrame({c: _default_column(k, None, 0) for c, k in kinds.items()})
    frame["_source"] = pd.Series([], dtype="str")
    return frame


def _finalise_dtypes(table: str, typed: pd.DataFrame) -> pd.DataFrame:
    """Cast to the exact dtypes the pandera model declares (nullable ones stay nullable)."""
    kinds = schemas.column_kinds(table)
    out = typed.copy(deep=False)  # columns are replaced, not mutated
    for column, kind in kinds.items():
        if kind == "str":
            if out[column].dtype != "str":
                out[column] = out[column].astype("str").where(out[column].notna())
        elif kind == "bool":
            out[column] = out[column].astype("boolean")
        elif kind == "date":
            out[column] = out[column].astype("datetime64[ns]")
        elif kind == "timestamp":
            out[column] = out[column].astype("datetime64[us, UTC]")
        else:
            out[column] = out[column].astype("float64")
    return out


# ------------------------------------------------------------------------------------ validation


def validate_table(
    table: str, typed: pd.DataFrame, raw: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the table's pandera checks; failing rows become INVALID quarantine rows.

    raw: the same rows as read (same index), so the quarantine keeps the original values.
    """
    model = schemas.INPUT_MODELS[table]
    kinds = schemas.column_kinds(table)
    checked = typed.copy(deep=False)
    # pandera checks typed columns; nullable extension dtypes are cast for the check only
    for column, kind in kinds.items():
        if kind == "bool":
            checked[column] = checked[column].astype(object).where(checked[column].notna(), None)
    try:
        # the frame checked is this function's own (copy-on-write) copy: pandera need not copy it again
        model.validate(_for_pandera(table, checked), lazy=True, inplace=True)
        return typed, empty_quarantine()
    except pandera.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    row_cases = cases[cases["index"].notna()]
    schema_cases = cases[cases["index"].isna()]
    if not schema_cases.empty:
        first = schema_cases.iloc[0]
        raise SourceError(
            f"table {table}: {first['check']} failed for column {first['column']}"
        )
    row_cases = row_cases.assign(index=row_cases["index"].astype("int64"))
    messages = _failure_messages(row_cases)
    bad_index = messages.index
    bad_rows = typed.loc[bad_index]
    original = raw.loc[bad_index] if raw is not None else bad_rows
    quarantine = _quarantine_frame(table, bad_rows, "INVALID", messages, _row_json(original))
    return typed.drop(index=bad_index), quarantine


def _for_pandera(table: str, frame: pd.DataFrame) -> pd.DataFrame:
    kinds = schemas.column_kinds(table)
    out = frame[list(kinds)].copy(deep=False)
    for column, kind in kinds.items():
        if kind == "int":
            out[column] = out[column].astype("Int64")
            # the model declares int64: a missing whole number is a null failure, not a dtype one
            if out[column].notna().all():
                out[column] = out[column].astype("int64")
        elif kind == "bool":
            if out[column].notna().all():
                out[column] = out[column].astype("bool")
    return out


def _failure_messages(cases: pd.DataFrame) -> pd.Series:
    """One message per failing row (index: the row's index), its failures joined by "; ".

    A row-wide check is one failure naming the columns it reads ("valid_from = 2026-03-02, valid_to =
    2026-03-01 fails valid_from_not_after_valid_to"): pandera reports it once for every column, and a
    null in a nullable column it does not read is no failure."""
    row_wide = cases["schema_context"].astype("str").eq("DataFrameSchema")
    per_column = cases[~row_wide].assign(text=_column_failure_text(cases[~row_wide]))
    reads = pd.DataFrame([(check, column) for check, columns in schemas.ROW_CHECK_COLUMNS.items()
                          for column in columns], columns=["check", "column"])
    wide = cases[row_wide].astype({"check": "str", "column": "str"}).merge(reads, on=["check", "column"])
    wide = wide.assign(text=wide["column"] + " = " + wide["failure_case"].map(_shown_value).astype("str"))
    wide = wide.groupby(["index", "check"], sort=False)["text"].agg(", ".join).reset_index()
    wide["text"] = wide["text"] + " fails " + wide["check"]
    texts = pd.concat([per_column[["index", "text"]], wide[["index", "text"]]], ignore_index=True)
    return texts.groupby("index", sort=True)["text"].agg("; ".join)


def _shown_value(value: object) -> str:
    if value is None or value != value:
        return "missing"
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return value.date().isoformat()
    return repr(value)


def _column_failure_text(cases: pd.DataFrame) -> pd.Series:
    column = cases["column"].astype("str")
    check = cases["check"].astype("str")
    value = cases["failure_case"].map(lambda v: "missing" if v is None or v != v else repr(v))
    nullable_failure = check.eq("not_nullable") | value.eq("missing")
    dtype_failure = check.str.startswith("dtype(")
    text = column + " = " + value + " fails " + check
    text = text.where(~nullable_failure, column + " is missing")
    return text.where(~dtype_failure, column + " has values of the wrong type")


_EMPTY_QUARANTINE = pd.DataFrame(
    {
        "table": pd.Series([], dtype="str"),
        "plant_id": pd.Series([], dtype="str"),
        "business_date": pd.Series([], dtype="datetime64[ns]"),
        "source_key": pd.Series([], dtype="str"),
        "error_code": pd.Series([], dtype="str"),
        "message": pd.Series([], dtype="str"),
        "row": pd.Series([], dtype="str"),
        "source": pd.Series([], dtype="str"),
        "event_at": pd.Series([], dtype="datetime64[us, UTC]"),
    }
)


def empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with the columns and dtypes of `frame` and no rows, holding none of its memory (a
    slice of Arrow-backed columns would keep every buffer alive)."""
    return pd.DataFrame({c: pd.Series([], dtype=frame[c].dtype) for c in frame.columns})


def empty_quarantine() -> pd.DataFrame:
    """A quarantine frame with no rows and the right columns."""
    return _EMPTY_QUARANTINE.copy()  # building one from scratch costs milliseconds, and it is asked for often


def source_keys(table: str, rows: pd.DataFrame) -> pd.Series:
    """The key that identifies a row of `table` to a person (its id, or its natural key)."""
    key = schemas.INPUT_KEYS[table]
    if key is not None and key in rows.columns:
        return rows[key].astype("str").where(rows[key].notna(), rows.get("_source", ""))
    if table == "bom":
        return (
            rows["plant_id"].fillna("*").astype("str")
            + ":" + rows["parent_item_id"].astype("str")
            + ">" + rows["component_item_id"].astype("str")
        )
    if table == "uom_conversions":
        return (
            rows["item_id"].fillna("*").astype("str")
            + ":" + rows["from_uom"].astype("str")
            + ">" + rows["to_uom"].astype("str")
        )
    if table == "item_costs":
        valid_from = pd.to_datetime(rows["valid_from"], errors="coerce")
        return rows["item_id"].astype("str") + "@" + valid_from.dt.strftime("%Y-%m-%d").fillna("?")
    return rows.get("_source", pd.Series("", index=rows.index))


def _quarantine_frame(
    table: str,
    rows: pd.DataFrame,
    code: str | pd.Series,
    message: str | pd.Series,
    row_json: pd.Series,
) -> pd.DataFrame:
    plant = rows["plant_id"] if "plant_id" in rows.columns else pd.Series(None, index=rows.index)
    date = rows["business_date"] if "business_date" in rows.columns else pd.Series(pd.NaT, index=rows.index)
    moment = EVENT_TIME.get(table)
    event_at = (rows[moment] if moment in rows.columns and isinstance(rows[moment].dtype, pd.DatetimeTZDtype)
                else pd.Series(pd.NaT, index=rows.index, dtype="datetime64[us, UTC]"))
    frame = pd.DataFrame(
        {
            "table": table,
            "plant_id": plant.astype("str").where(plant.notna()),
            "business_date": pd.to_datetime(date).astype("datetime64[ns]"),
            "source_key": source_keys(table, rows).astype("str"),
            "error_code": code,
            "message": message,
            "row": row_json,
            "source": rows["_source"].astype("str") if "_source" in rows.columns else None,
            "event_at": event_at.astype("datetime64[us, UTC]"),
        },
        index=rows.index,
    )
    return frame.reset_index(drop=True)


def quarantine_rows(
    table: str, rows: pd.DataFrame, code: str | pd.Series, message: str | pd.Series
) -> pd.DataFrame:
    """Quarantine accepted rows of `table` for a reason found after validation."""
    columns = [c for c in schemas.column_kinds(table) if c in rows.columns] + ["_source"]
    return _quarantine_frame(table, rows, code, message, _row_json(rows[[c for c in columns if c in rows.columns]]))


# ------------------------------------------------------------------------------------ keys


def _dedupe_by_key(table: str, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Identical repeats collapse to one row; conflicting rows with one key are DUPLICATE_ID."""
    key = schemas.INPUT_KEYS[table]
    natural = schemas.NATURAL_KEYS.get(table)
    if frame.empty or (key is None and natural is None):
        return frame, empty_quarantine(), 0
    values = frame[key] if key is not None else source_keys(table, frame)
    if not _repeated(values).any():
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


def isin(values: pd.Series, allowed: pd.Series) -> pd.Series:
    """`values.isin(allowed)`; in Arrow when both hold Arrow strings (pandas goes value by value)."""
    if not (_is_arrow_text(values) and _is_arrow_text(allowed)):
        return values.isin(allowed)
    strings = _arrow(values)
    found = pc.is_in(strings, value_set=_arrow(allowed).cast(strings.type))  # null matches null, as in pandas
    return pd.Series(found.to_numpy(zero_copy_only=False), index=values.index)


_SPACES = np.frombuffer(b" " * 8, dtype=np.uint64)[0]
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (2**64 / golden ratio) of the string hash


def _repeated(values: pd.Series) -> np.ndarray:
    """Whether each value occurs more than once, as `values.duplicated(keep=False)` says.

    Short ASCII Arrow strings (ids) are padded to whole 64-bit words and hashed in numpy; only the
    few rows whose hash repeats are then compared exactly. Hashing them in pandas is 3x slower.
    """
    if _is_arrow_text(values) and len(values) and not values.hasnans:
        strings = _arrow(values)
        width = -(-pc.max(pc.binary_length(strings)).as_py() // 8) * 8
        if 0 < width <= 64 and pc.all(pc.string_is_ascii(strings)).as_py():
            hashes = np.concatenate([_hashes(chunk, width) for chunk in strings.chunks])
            maybe = np.flatnonzero(_repeated_numbers(hashes))
            repeated = np.zeros(len(values), dtype=bool)
            repeated[maybe] = values.iloc[maybe].duplicated(keep=False).to_numpy()
            return repeated
    return values.duplicated(keep=False).to_numpy()


def key_hashes(values: pd.Series) -> np.ndarray:
    """A 64-bit hash of each key value as coerced to text: a function of the value alone (the same
    for a value read from CSV or Parquet, in any file); missing values hash to 0."""
    text = _coerce_str(values)
    out = np.zeros(len(text), dtype=np.uint64)
    if not len(text):
        return out
    strings = _arrow(text) if _is_arrow_text(text) else \
        pa.chunked_array([pa.array(text.to_numpy(dtype=object), type=pa.string(), from_pandas=True)])
    valid = text.notna().to_numpy()
    fast = valid & pc.and_(pc.string_is_ascii(strings), pc.less_equal(pc.binary_length(strings), 64)) \
        .to_numpy(zero_copy_only=False).astype(bool, copy=False)
    if fast.all():
        out[:] = _hashes(strings.combine_chunks(), 64)
    elif fast.any():
        out[fast] = _hashes(pc.filter(strings, pa.array(fast)).combine_chunks(), 64)
    slow = valid & ~fast
    if slow.any():
        out[slow] = pd.util.hash_array(text[slow].to_numpy(dtype=object))
    return out


def _hashes(strings: pa.Array, width: int) -> np.ndarray:
    """A 64-bit hash of each ASCII string of at most `width` bytes (a multiple of 8): its bytes
    padded with spaces to `width`, mixed 8 at a time."""
    longest = pc.max(pc.binary_length(strings)).as_py() or 0
    short = max(8, -(-longest // 8) * 8)  # only the words that hold some string's bytes are read
    padded = pc.cast(pc.ascii_rpad(strings, width=short, padding=" "), pa.binary(short))
    data = np.frombuffer(padded.buffers()[1], dtype=np.uint8)[padded.offset * short:][: len(padded) * short]
    hashes = np.zeros(len(padded), dtype=np.uint64)
    for word in data.view(np.uint64).reshape(len(padded), short // 8).T:
        hashes = (hashes ^ word) * _MIX
    for _ in range((width - short) // 8):  # the words of spaces only, as if every string were padded to width
        hashes = (hashes ^ _SPACES) * _MIX
    return hashes


def _repeated_numbers(numbers: np.ndarray) -> np.ndarray:
    """Whether each number occurs more than once (a sort finds the few repeated ones fast)."""
    ordered = np.sort(numbers)
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    return pd.Series(numbers).isin(repeats).to_numpy()


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
    repeated = _repeated(frame["completion_id"])
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


# ------------------------------------------------------------------------------------ time zones


def plant_timezones(
    plants: pd.DataFrame, seen: Iterable[str], overrides: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """plant_id -> timezone for every plant: the plants table, then config, else UTC."""
    zones = dict(overrides or {})
    zones.update(dict(zip(plants["plant_id"], plants["timezone"].fillna("UTC"), strict=True)))
    all_plants = sorted(set(seen) | set(zones))
    return pd.DataFrame(
        {"plant_id": pd.Series(all_plants, dtype="str"), "timezone": [zones.get(p, "UTC") for p in all_plants]}
    )


def business_dates(timestamps: pd.Series, plant_ids: pd.Series, zones: pd.DataFrame) -> pd.Series:
    """The calendar date of each UTC timestamp in its plant's time zone (naive midnight)."""
    zone_of = dict(zip(zones["plant_id"], zones["timezone"], strict=True))
    plant_codes, plants = pd.factorize(plant_ids)  # a missing plant is -1, the last zone: UTC
    names, zone_codes = np.unique([zone_of.get(p, "UTC") for p in plants] + ["UTC"], return_inverse=True)
    row_zones = zone_codes[plant_codes]
    stamps = timestamps.array
    out = np.full(len(stamps), np.datetime64("NaT"), dtype="datetime64[ns]")
    for code, zone in enumerate(names):
        rows = np.flatnonzero(row_zones == code)
        if len(rows):
            local = stamps[rows].tz_convert(zone).tz_localize(None).normalize()
            out[rows] = local.as_unit("ns").to_numpy()
    return pd.Series(out, index=timestamps.index)


UNIT_QUANTITIES = {"completions": ["qty_good", "qty_scrap"], "stock_counts": ["counted_qty"], "movements": ["qty"]}


def _in_base_units(
    table: str, frame: pd.DataFrame, quantities: list[str], items: pd.DataFrame, conversions: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quantities of rows that name a `uom` converted to the item's base unit (the conversion rules of
    BOM lines); rows whose unit cannot be converted are NO_UOM_CONVERSION."""
    from pipeline.bom import conversion_factors

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
    columns = {"plant_id": pd.Series([], dtype="object"), "parent_item_id": pd.Series([], dtype="str"),
               "message": pd.Series([], dtype="str")}
    if rows.empty:
        return pd.DataFrame(columns)
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


# ------------------------------------------------------------------------------------ the whole set


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
        bad_zone = ~plants["timezone"].fillna("UTC").isin(_VALID_ZONES)
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
            completions = _finalise_dtypes("completions", _empty_typed("completions")).assign(
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
