"""Read the input tables from a SQL database: the same raw frames as landing files, pulled by window.

Every configured name (schema, table, column) must be a plain SQL identifier and must exist in the
database's reflected metadata before it is used; queries are SQLAlchemy Core statements over the
reflected tables, so names are quoted by the dialect and values (the time bounds) are bound
parameters, never text in the SQL. Credentials never leave this module: every URL that is printed
is masked and every database error is re-raised as a one-line `SourceError` without them.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, make_url

from pipeline.config import SqlSource
from pipeline.contract import schemas
from pipeline.domain import bom
from pipeline.errors import SourceError
from pipeline.intake import coerce

log = logging.getLogger("backflush.sql")

#: A plain, unquoted SQL identifier; anything else in the configuration is rejected before use.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
#: Master tables are read whole; these are bounded by their time column.
TIME_COLUMNS = {"completions": "completed_at", "stock_counts": "counted_at", "movements": "moved_at"}
#: Rows of a keyed table come back ordered by key (and version), so line numbers are deterministic.
_ORDER = {"completions": ("completion_id", "recorded_at")}
_MASKED = "***"
#: Completion rows fetched from the database and staged at a time, when they are streamed.
STREAM_ROWS = 100_000


# ------------------------------------------------------------------------------------ public


def read_sql_tables(
    sql: SqlSource,
    *,
    since: pd.Timestamp | None = None,
    until: pd.Timestamp | None = None,
    recorded_after: pd.Timestamp | None = None,
    plants: Sequence[str] | None = None,
    stage_dir: Path | None = None,
) -> dict[str, list[tuple[str, Any]]]:
    """Raw frames per contract table from the database, as ("sql:<schema>.<table>", frame) pairs.

    With `stage_dir`, completions are not one frame: they are streamed from a server-side cursor
    in batches of STREAM_ROWS, each staged under `stage_dir` as it arrives, and come back as one
    `buckets.StagedRows` that the run spills and digests like a landing file.

    Master tables (plants, items, uom_conversions, bom) are read whole. Completions are those with
    `completed_at` in [since, until) or recorded (`recorded_at`, else `completed_at`) after
    `recorded_after`; movements by `moved_at` in [since, until); stock counts by `counted_at` < until
    only (a count's previous count opens its window, however old it is).
    A bound of None is unbounded; timestamps without a zone are UTC. `plants`: completions,
    movements and counts of these plants only (see `_plant_condition`; rows without a plant are
    always read). Every bounded read also returns every row of each id it returns (`_key_seen`).
    Frames carry contract column names; an optional table missing from the database reads as empty.
    """
    tables, columns = _checked_names(sql)
    url = database_url(sql)
    shown = masked_url(url)
    bounds = {"since": _utc(since), "until": _utc(until), "recorded_after": _utc(recorded_after)}
    wanted = sorted(set(plants)) if plants else None
    try:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    except Exception as exc:  # a bad URL or a missing driver; the text may echo the URL
        raise SourceError(f"SQL source {shown} cannot be used: {_reason(exc, url)}") from None
    try:
        with engine.connect() as conn:
            with conn.begin():
                _snapshot(conn)
                raw = _read_all(conn, sql.schema, tables, columns, bounds, shown, stage_dir, wanted)
    except SourceError:
        raise
    except Exception as exc:  # driver and database errors: one line, credentials removed
        error = SourceError(f"SQL source {shown}: {_reason(exc, url)}")
        # a database that cannot be reached or dropped the connection may answer next time
        error.transient = isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError, OSError)) or (
            isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated)
        raise error from None
    finally:
        engine.dispose()
    log.info("read %s from %s", ", ".join(f"{t} {sum(_rows(f) for _, f in raw[t])}" for t in raw), shown)
    return raw


def _rows(raw: Any) -> int:
    return raw.rows() if hasattr(raw, "rows") else len(raw)


def database_url(sql: SqlSource) -> str:
    """The SQLAlchemy URL of the source: `url`, the variable named by `url_env`, or an Airflow connection."""
    given = [name for name in ("url", "url_env", "conn_id") if getattr(sql, name)]
    if len(given) != 1:
        raise SourceError(
            "SQL source: set exactly one of sql.url, sql.url_env and sql.conn_id"
            + (f" (found {', '.join('sql.' + g for g in given)})" if given else "")
        )
    if sql.url:
        url = sql.url
    elif sql.url_env:
        url = os.environ.get(sql.url_env, "")
        if not url.strip():
            raise SourceError(f"SQL source: environment variable {sql.url_env} (sql.url_env) is not set")
    else:
        url = _airflow_connection_url(str(sql.conn_id))
    return _with_driver(url)


def masked_url(url: str | URL) -> str:
    """The URL as it may be printed: the password replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # unparseable: show nothing of it rather than risk a secret
        return "<unparseable SQL URL>"


# ------------------------------------------------------------------------------------ names


def _checked_names(sql: SqlSource) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Contract table -> source table and table -> {contract column: source column}, all validated."""
    if sql.schema is not None:
        _identifier(sql.schema, "sql.schema")
    unknown = sorted(set(sql.tables) - set(schemas.INPUT_MODELS))
    if unknown:
        raise SourceError(f"sql.tables: unknown contract table {unknown[0]!r} (tables: {', '.join(schemas.INPUT_MODELS)})")
    tables = {t: _identifier(sql.tables.get(t, t), f"sql.tables.{t}") for t in schemas.INPUT_MODELS}
    columns: dict[str, dict[str, str]] = {}
    for table, mapping in sql.columns.items():
        if table not in schemas.INPUT_MODELS:
            raise SourceError(f"sql.columns: unknown contract table {table!r} (tables: {', '.join(schemas.INPUT_MODELS)})")
        known = schemas.column_kinds(table)
        for column, source in mapping.items():
            if column not in known:
                raise SourceError(f"sql.columns.{table}: {column!r} is not a column of {table} "
                                  f"(columns: {', '.join(known)})")
            columns.setdefault(table, {})[column] = _identifier(source, f"sql.columns.{table}.{column}")
    return tables, columns


def _identifier(value: object, setting: str) -> str:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise SourceError(
            f"{setting} = {str(value)[:80]!r} is not a valid SQL identifier "
            "(letters, digits and _, not starting with a digit, at most 63 characters)"
        )
    return value


# ------------------------------------------------------------------------------------ reading


def _snapshot(conn: Connection) -> None:
    """One consistent, read-only snapshot of every table, with timestamps in UTC (PostgreSQL)."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")


def _read_all(
    conn: Connection,
    schema: str | None,
    tables: Mapping[str, str],
    columns: Mapping[str, Mapping[str, str]],
    bounds: Mapping[str, pd.Timestamp | None],
    shown: str,
    stage_dir: Path | None = None,
    plants: Sequence[str] | None = None,
) -> dict[str, list[tuple[str, Any]]]:
    inspector = sa.inspect(conn)
    schema_name = schema or inspector.default_schema_name or ""
    if schema is not None and schema not in inspector.get_schema_names():
        raise SourceError(f"SQL source {shown}: schema {schema!r} (sql.schema) does not exist")
    present = set(inspector.get_table_names(schema=schema)) | set(inspector.get_view_names(schema=schema))
    if conn.dialect.name == "postgresql":
        present |= set(inspector.get_materialized_view_names(schema=schema))  # type: ignore[attr-defined]
    raw: dict[str, list[tuple[str, Any]]] = {}
    for table, source_table in tables.items():
        name = f"sql:{schema_name}.{source_table}" if schema_name else f"sql:{source_table}"
        if source_table not in present:
            if table in schemas.OPTIONAL_TABLES:
                raw[table] = []
                continue
            raise SourceError(f"required table {table}: {schema_name}.{source_table} does not exist in {shown}")
        reflected = sa.Table(source_table, sa.MetaData(), schema=schema, autoload_with=conn)
        # with fixed-quantity lines, an order's earlier completions decide which completion carries
        # it: those of orders completed in the window are read however old (issue 16.3)
        whole_orders = table == "completions" and _has_fixed_lines(raw.get("bom", []))
        statement = _select(table, reflected, columns.get(table, {}), bounds, name, plants, conn.dialect.name,
                            whole_orders=whole_orders)
        if table == "completions" and stage_dir is not None:
            from pipeline.intake.spill import StagedRows

            # a server-side cursor (psycopg: a named cursor in the snapshot's transaction): the
            # database sends STREAM_ROWS rows at a time and each batch is staged before the next
            batches = pd.read_sql_query(statement.execution_options(yield_per=STREAM_ROWS), conn,
                                        coerce_float=True, chunksize=STREAM_ROWS)
            raw[table] = [(name, StagedRows.stage(name, batches, stage_dir / table))]
            continue
        frame = pd.read_sql_query(statement, conn, coerce_float=True)
        raw[table] = [(name, frame)]
    return raw


def _has_fixed_lines(bom_files: list[tuple[str, pd.DataFrame]]) -> bool:
    """Whether a BOM read raw has a line whose fixed_qty coerces to true."""
    return any(bom.has_fixed_lines(frame.assign(fixed_qty=coerce.coerce_column(frame["fixed_qty"], "bool")))
               for _, frame in bom_files if "fixed_qty" in frame.columns)


def _select(
    table: str,
    reflected: sa.Table,
    renames: Mapping[str, str],
    bounds: Mapping[str, pd.Timestamp | None],
    name: str,
    plants: Sequence[str] | None = None,
    dialect: str = "",
    *,
    whole_orders: bool = False,
) -> sa.Select[Any]:
    """SELECT the contract columns (labelled with contract names) of one table, bounded by time
    (and plants), with every row of each id it selects."""
    available = {c.name: c for c in reflected.columns}
    chosen: dict[str, sa.Column[Any]] = {}
    for column in schemas.column_kinds(table):
        source = renames.get(column, column)
        if source in available:
            chosen[column] = available[source]
        elif column in renames:
            raise SourceError(f"sql.columns.{table}.{column}: column {source!r} does not exist in "
                              f"{name[4:]} (columns: {', '.join(available)})")
    statement = sa.select(*(col.label(column) for column, col in chosen.items()))
    time_column = TIME_COLUMNS.get(table)
    key = schemas.INPUT_KEYS[table]
    order_names = [c for c in _ORDER.get(table, ()) if c in chosen]
    if key is not None and key in chosen and not order_names:
        order_names = [key]
    order_names = order_names or list(chosen)
    if time_column is not None:
        if time_column not in chosen:
            raise SourceError(f"{name}: required column {time_column} missing "
                              f"(map it with sql.columns.{table}.{time_column})")
        condition = _window_condition(table, chosen, bounds, name, plants, dialect)
        if condition is not None and key is not None and key in chosen:
            # rows of the ids the window holds, plus the window's rows without an id. Not one WHERE
            # with `window OR id IN (...)`: PostgreSQL plans that OR as a subquery per row (quadratic),
            # an IN alone as a hash semi-join
            by_id = statement.where(_key_seen(table, reflected, renames, key, bounds, name, plants, dialect))
            no_id = statement.where(sa.and_(condition, chosen[key].is_(None)))
            branches: list[Any] = [by_id, no_id]
            if whole_orders and "order_id" in chosen:
                # and every completion of an order completed in the window (issue 16.3), less the rows
                # the ids already bring (EXCEPT ALL: a row read twice would count as a repeat)
                by_order = statement.where(_orders_in_window(chosen, bounds, name), chosen[key].is_not(None))
                branches.append(sa.select(*sa.except_all(by_order, by_id).subquery(f"{table}_orders").c))
            read = sa.union_all(*branches).subquery(f"{table}_read")
            return sa.select(*read.c).order_by(*(read.c[c] for c in order_names))
        if condition is not None:
            statement = statement.where(condition)
    return statement.order_by(*(chosen[c] for c in order_names))


def _key_seen(
    table: str,
    reflected: sa.Table,
    renames: Mapping[str, str],
    key: str,
    bounds: Mapping[str, pd.Timestamp | None],
    name: str,
    plants: Sequence[str] | None = None,
    dialect: str = "",
) -> sa.ColumnElement[bool]:
    """Rows whose key is among the keys of the bounded rows (the window's own rows with a key
    among them): every version of a completion the
    window holds a version of, whatever its own times (a correction that moved it out of the window,
    loaded after the watermark passed its `recorded_at`, still supersedes it), and every row sharing
    an id with a row of the window (conflicting rows are `DUPLICATE_ID` as in a whole read). So a
    bounded read judges each key it returns exactly as a read of the whole table does."""
    inner = reflected.alias(f"{reflected.name}_window")
    columns = {c.name: c for c in inner.columns}
    seen = {column: columns[renames.get(column, column)] for column in schemas.column_kinds(table)
            if renames.get(column, column) in columns}
    condition = _window_condition(table, seen, bounds, name, plants, dialect, suffix="_seen")
    assert condition is not None
    outer = reflected.columns[renames.get(key, key)]
    return outer.in_(sa.select(seen[key]).where(condition))


def _window_condition(
    table: str,
    chosen: Mapping[str, sa.Column[Any]],
    bounds: Mapping[str, pd.Timestamp | None],
    name: str,
    plants: Sequence[str] | None,
    dialect: str,
    suffix: str = "",
) -> sa.ColumnElement[bool] | None:
    """The rows of the run's window: its time bounds and its plants (None: every row)."""
    parts = [c for c in (_time_condition(table, chosen, bounds, name, suffix),
                         _plant_condition(chosen.get("plant_id"), plants, dialect, suffix)) if c is not None]
    return None if not parts else parts[0] if len(parts) == 1 else sa.and_(*parts)


#: A plant id that coercion keeps exactly as it is (no surrounding whitespace to strip, not blank).
_PLAIN_ID = "^[A-Za-z0-9_.:/-]+$"


def _plant_condition(column: sa.Column[Any] | None, plants: Sequence[str] | None, dialect: str,
                     suffix: str = "") -> sa.ColumnElement[bool] | None:
    """Rows that may belong to `plants` once coerced: the plant exactly as given, or missing, or
    any value that is not a plain id (padded with whitespace, blank, unusual characters), which
    coercion decides. Only rows with a plain id of another plant are left out, and for those the
    raw value is the coerced one. Pushed down only on PostgreSQL (`~`) and a text column; None
    (every row) otherwise."""
    if not plants or column is None or dialect != "postgresql" or not isinstance(column.type, sa.String):
        return None
    named: sa.BindParameter[list[str]] = sa.bindparam("plants" + suffix, list(plants), expanding=True)
    plain = column.op("~", is_comparison=True)(sa.bindparam("plain_id" + suffix, _PLAIN_ID, type_=sa.String()))
    return sa.or_(column.is_(None), column.in_(named), sa.not_(plain))


def _time_condition(
    table: str,
    chosen: Mapping[str, sa.Column[Any]],
    bounds: Mapping[str, pd.Timestamp | None],
    name: str,
    suffix: str = "",
) -> sa.ColumnElement[bool] | None:
    """[since, until) on the table's time column; for completions OR recorded after the watermark."""
    column = chosen[TIME_COLUMNS[table]]
    window: list[sa.ColumnElement[bool]] = []
    # a count's previous count may be any age (it opens the count's window): counts have no lower bound
    if bounds["since"] is not None and table != "stock_counts":
        window.append(column >= _bound("since" + suffix, bounds["since"], column, name))
    if bounds["until"] is not None:
        window.append(column < _bound("until" + suffix, bounds["until"], column, name))
    if not window:
        return None  # unbounded window: every row, whatever the watermark
    # a row without a time belongs to no window but must still reach quarantine
    condition = sa.or_(sa.and_(*window), column.is_(None))
    if table == "completions" and bounds["recorded_after"] is not None:
        recorded = chosen.get("recorded_at")
        version = sa.func.coalesce(recorded, column) if recorded is not None else column
        condition = sa.or_(condition, version > _bound("recorded_after" + suffix, bounds["recorded_after"], column, name))
    return condition


def _orders_in_window(
    chosen: Mapping[str, sa.Column[Any]], bounds: Mapping[str, pd.Timestamp | None], name: str
) -> sa.ColumnElement[bool]:
    """Completions of an order that has a completion in [since, until): matched on order_id alone
    (an order is also its plant and item, so this reads a few rows more, never fewer)."""
    order, time = chosen["order_id"], chosen[TIME_COLUMNS["completions"]]
    inner = order.table.alias("orders_in_window")
    inner_order, inner_time = inner.c[order.name], inner.c[time.name]
    window: list[sa.ColumnElement[bool]] = [inner_order.is_not(None)]
    if bounds["since"] is not None:
        window.append(inner_time >= _bound("orders_since", bounds["since"], time, name))
    if bounds["until"] is not None:
        window.append(inner_time < _bound("orders_until", bounds["until"], time, name))
    return sa.and_(order.is_not(None), order.in_(sa.select(inner_order).where(*window)))


def _bound(key: str, value: pd.Timestamp | None, column: sa.Column[Any], name: str) -> sa.BindParameter[Any]:
    """A bound parameter matching the column: aware UTC for zoned columns, naive UTC otherwise."""
    assert value is not None
    if not isinstance(column.type, sa.DateTime):
        raise SourceError(f"{name}: column {column.name} is {column.type}, not a timestamp; "
                          "a bounded read needs a timestamp column")
    moment = value.to_pydatetime()
    if not column.type.timezone:
        moment = moment.replace(tzinfo=None)  # a timestamp without a zone is UTC (contract)
    return sa.bindparam(key, moment, type_=column.type)


def _utc(value: object) -> pd.Timestamp | None:
    if value is None:
        return None
    stamp = pd.Timestamp(value)  # type: ignore[arg-type]
    if pd.isna(stamp):
        return None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# ------------------------------------------------------------------------------------ URLs


def _airflow_connection_url(conn_id: str) -> str:
    """The URI of an Airflow connection; Airflow is imported only here, when a conn_id is configured."""
    try:
        from airflow.sdk import Connection
    except ImportError as exc:
        raise SourceError(f"sql.conn_id {conn_id!r} needs Airflow 3 (airflow.sdk), which is not installed") from exc
    try:
        return str(Connection.get(conn_id).get_uri())
    except Exception as exc:
        raise SourceError(f"sql.conn_id {conn_id!r}: the Airflow connection cannot be read "
                          f"({type(exc).__name__})") from None


def _with_driver(url: str) -> str:
    """Plain PostgreSQL URLs (as Airflow writes them) use psycopg 3, the driver this project ships."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise SourceError(f"SQL source URL cannot be parsed: {_reason(exc, url)}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if "__extra__" in parsed.query:  # Airflow's JSON extras are not connection arguments
        parsed = parsed.difference_update_query(["__extra__"])
    return parsed.render_as_string(hide_password=False)


def _reason(exc: BaseException, url: str) -> str:
    """The first line of an error, with the URL masked and its password removed."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.replace(url, masked_url(url))
    for secret in _secrets(url):
        text = text.replace(secret, _MASKED)
    return text


def _secrets(url: str) -> list[str]:
    """Every form in which the URL's password could appear in a message, longest first."""
    found = set()
    match = re.search(r"://[^/@]*?:([^@/]*)@", url)
    if match and match.group(1):
        found |= {match.group(1), urllib.parse.unquote(match.group(1))}
    try:
        password = make_url(url).password
    except Exception:
        password = None
    if password:
        found |= {str(password), urllib.parse.quote(str(password), safe=""), urllib.parse.quote_plus(str(password))}
    return sorted((s for s in found if s), key=len, reverse=True)
