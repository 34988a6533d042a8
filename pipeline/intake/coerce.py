"""Coercion and validation: raw text and Parquet values to the contract's types, row by column, with
INVALID rows quarantined and named."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pandera.errors

from pipeline.contract import schemas
from pipeline.contract.inputs import LINE_COLUMN, default_column, empty_table
from pipeline.contract.quarantine import empty_quarantine, quarantine_frame, row_json
from pipeline.engine.strings import as_text
from pipeline.errors import SourceError

_TRUE = frozenset({"true", "t", "1", "yes", "y"})


_FALSE = frozenset({"false", "f", "0", "no", "n"})


_SURROGATES = "[\udc80-\udcff]"


_EARLIEST = pd.Timestamp("1700-01-01", tz="UTC")


_LATEST = pd.Timestamp("2260-01-01", tz="UTC")


def _is_text(values: pd.Series) -> bool:
    return values.dtype == object or pd.api.types.is_string_dtype(values.dtype)


def _present(values: pd.Series) -> pd.Series:
    """Whether a value was given (a blank string is no value); typed columns are never stringified."""
    return as_text(values).notna() if _is_text(values) else values.notna()


def _coerce_str(values: pd.Series) -> pd.Series:
    return as_text(values)


def _coerce_float(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64")
    return pd.to_numeric(as_text(values), errors="coerce").astype("float64")


def _coerce_int(values: pd.Series) -> pd.Series:
    numbers = _coerce_float(values)
    integral = numbers.notna() & np.isfinite(numbers) & (numbers == np.floor(numbers))
    return numbers.where(integral)


def _coerce_bool(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("boolean")
    text = as_text(values).str.lower()
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
    text = as_text(values)
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
        parsed = pd.to_datetime(as_text(values), format="ISO8601", errors="coerce")
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


def coerce_table(table: str, files: Iterable[tuple[str, pd.DataFrame]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Typed, checked rows of one table (defaults applied) and the INVALID rows, with their original values.

    Its length is the loop over a table's columns: every column is coerced, checked and its failures
    named in the same few lines."""
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
                typed[column] = default_column(kind, default, len(raw))
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
                    values = values.where(~unset | failed, default_column(kind, default, len(raw)))
            typed[column] = values
        # header is line 1; an integer Series is cast to text by Arrow (an Index goes value by value)
        typed["_source"] = source + ":" + pd.Series(lines, index=raw.index).astype("str")
        raw = raw.assign(_source=typed["_source"])
        if problems:
            messages = pd.concat(problems).groupby(level=0, sort=True).agg("".join).astype("str")
            bad = raw.index.isin(messages.index)
            bad_parts.append(
                quarantine_frame(table, typed[bad], "INVALID", messages.str.rstrip("; "), row_json(raw[bad]))
            )
            typed, raw = typed[~bad], raw[~bad]
        valid, failed_checks = validate_table(table, finalise_dtypes(table, typed), raw)
        typed_parts.append(valid)
        if not failed_checks.empty:
            bad_parts.append(failed_checks)
    typed_all = (
        pd.concat(typed_parts, ignore_index=True) if typed_parts else empty_table(table)
    )
    typed_all = finalise_dtypes(table, typed_all)
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


def finalise_dtypes(table: str, typed: pd.DataFrame) -> pd.DataFrame:
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
    quarantine = quarantine_frame(table, bad_rows, "INVALID", messages, row_json(original))
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
