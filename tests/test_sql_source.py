"""SQL sources against the real PostgreSQL on 127.0.0.1:5432: same outputs as landing files, names, bounds, safety."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipeline import job, schemas, sources, sql_source
from pipeline.config import SqlSource, load_config
from pipeline.generate import generate_landing
from pipeline.sources import SourceError

URL = os.environ.get("BACKFLUSH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
START = dt.date(2026, 1, 1)
DAYS = 4
VOLATILE = {"run_id", "posted_at", "posting_id", "started_at", "finished_at", "as_of",  # run identity and clock
            "source"}  # where a rejected row was read: a file line vs a SQL table


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    eng = sa.create_engine(URL, poolclass=sa.pool.NullPool)
    try:
        with eng.connect():
            pass
    except sa.exc.OperationalError:
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432; start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    yield eng
    eng.dispose()


@pytest.fixture(scope="module")
def db(engine: sa.Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A schema of its own holding the generated landing tables (bad rows included); dropped at the end."""
    schema = f"bf_sql_test_{uuid.uuid4().hex[:10]}"
    landing = tmp_path_factory.mktemp("sql") / "landing"
    generate_landing(landing, items=8, completions=400, days=DAYS, seed=7, start=START, plants=2, bad_rows=True)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')  # a name made here, not configuration
    try:
        for table in schemas.INPUT_MODELS:
            frame = _landing_frame(landing, table)
            frame.to_sql(table, engine, schema=schema, index=False)
        # the same completions under other names, with a naive (UTC) timestamp column
        renamed = _landing_frame(landing, "completions").rename(
            columns={"completion_id": "conf_no", "completed_at": "finished_ts", "qty_good": "good_qty"})
        renamed["finished_ts"] = renamed["finished_ts"].dt.tz_localize(None)
        renamed.to_sql("mes_confirmations", engine, schema=schema, index=False)
        _landing_frame(landing, "items").rename(columns={"item_id": "matnr"}).to_sql(
            "material_master", engine, schema=schema, index=False)
        with engine.begin() as conn:
            conn.exec_driver_sql(f'CREATE TABLE "{schema}".canary (x int)')
        yield schema, landing
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _landing_frame(landing: Path, table: str) -> pd.DataFrame:
    files = sorted((landing / table).glob("*.parquet"))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def _table_exists(engine: sa.Engine, schema: str, table: str) -> bool:
    return sa.inspect(engine).has_table(table, schema=schema)


# ------------------------------------------------------------------------------------ equivalence


def _outputs(warehouse: Path) -> dict[str, pd.DataFrame]:
    """Every Parquet file of a warehouse, keyed by path with run ids removed, volatile columns dropped."""
    out: dict[str, pd.DataFrame] = {}
    for path in sorted(warehouse.rglob("*.parquet")):
        rel = path.relative_to(warehouse).as_posix()
        if rel.startswith(("_", "landing_manifest/")):  # the manifest describes landing files, not outputs
            continue
        key = rel.rsplit("/", 1)[0] + "/" + ("<run>" if rel.startswith(("postings/", "runs/")) else path.name)
        frame = pq.read_table(path).to_pandas()
        frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
        if "row" in frame.columns:  # the original row, minus where it was read from (file vs table)
            frame["row"] = frame["row"].map(
                lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "_source"},
                                        sort_keys=True))
        frame = frame.astype({c: "str" for c in frame.columns if frame[c].dtype == object})
        out[key] = pd.concat([out[key], frame]) if key in out else frame
    return {k: v.sort_values(list(v.columns)).reset_index(drop=True) for k, v in out.items()}


def test_sql_source_gives_the_same_outputs_as_landing_files(db: tuple[str, Path], tmp_path: Path) -> None:
    schema, landing = db
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    from_files = load_config(None, landing=str(landing), warehouse=str(tmp_path / "files"))
    from_sql = from_files.replace(warehouse=str(tmp_path / "sql"), landing=str(tmp_path / "no-landing"),
                                  sql=SqlSource(url=URL, schema=schema))
    result_files = job.run_dates(from_files, dates)
    result_sql = job.run_dates(from_sql, dates)

    assert result_sql.rows_read == result_files.rows_read
    assert result_sql.quarantine_by_code == result_files.quarantine_by_code
    assert sum(result_sql.quarantine_by_code.values()) > 0, "the data set exercises the quarantine"
    files, sql = _outputs(tmp_path / "files"), _outputs(tmp_path / "sql")
    assert sorted(sql) == sorted(files)
    assert {k.split("/")[0] for k in files} >= {"consumption", "adjustments", "postings", "variance", "quarantine", "runs"}
    for key in files:
        pd.testing.assert_frame_equal(sql[key], files[key], check_exact=False, rtol=1e-12, obj=key)


# ------------------------------------------------------------------------------------ names


def test_tables_and_columns_are_renamed_through_config(db: tuple[str, Path]) -> None:
    schema, _ = db
    plain = sql_source.read_sql_tables(SqlSource(url=URL, schema=schema))
    renamed = sql_source.read_sql_tables(SqlSource(
        url=URL, schema=schema,
        tables={"completions": "mes_confirmations", "items": "material_master"},
        columns={"completions": {"completion_id": "conf_no", "completed_at": "finished_ts", "qty_good": "good_qty"},
                 "items": {"item_id": "matnr"}},
    ))
    assert [name for name, _ in renamed["completions"]] == [f"sql:{schema}.mes_confirmations"]
    assert [name for name, _ in plain["completions"]] == [f"sql:{schema}.completions"]
    for table in ("completions", "items"):
        (_, expected), (_, got) = plain[table][0], renamed[table][0]
        if table == "completions":  # mes_confirmations.finished_ts has no time zone: it holds UTC
            got = got.assign(completed_at=got["completed_at"].dt.tz_localize("UTC"))
        assert list(got.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(got, expected)
    typed = sources.load_inputs(renamed)
    assert len(typed.completions) == len(sources.load_inputs(plain).completions) > 0


def test_optional_tables_missing_from_the_database_are_empty(engine: sa.Engine, db: tuple[str, Path]) -> None:
    schema, _ = db
    only_required = SqlSource(url=URL, schema=schema, tables={"plants": "no_such_plants", "movements": "no_moves",
                                                              "uom_conversions": "no_conversions"})
    raw = sql_source.read_sql_tables(only_required)
    assert raw["plants"] == [] and raw["movements"] == [] and raw["uom_conversions"] == []
    assert len(sources.load_inputs(raw).items) > 0
    with pytest.raises(SourceError, match=rf"required table bom: {schema}\.no_bom does not exist"):
        sql_source.read_sql_tables(SqlSource(url=URL, schema=schema, tables={"bom": "no_bom"}))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tables": {"items": "items; DROP TABLE canary"}}, r"sql\.tables\.items = 'items; DROP TABLE canary' is not a valid SQL identifier"),
        ({"tables": {"items": 'items" --'}}, r"sql\.tables\.items .* is not a valid SQL identifier"),
        ({"schema": "public; DROP TABLE canary"}, r"sql\.schema .* is not a valid SQL identifier"),
        ({"columns": {"items": {"item_id": "item_id) FROM canary; --"}}}, r"sql\.columns\.items\.item_id .* is not a valid SQL identifier"),
        ({"columns": {"items": {"no_such_column": "x"}}}, r"sql\.columns\.items: 'no_such_column' is not a column of items"),
        ({"tables": {"bananas": "items"}}, r"sql\.tables: unknown contract table 'bananas'"),
        ({"columns": {"items": {"uom": "unit_of_measure"}}}, r"sql\.columns\.items\.uom: column 'unit_of_measure' does not exist"),
    ],
)
def test_bad_names_in_config_are_rejected_with_a_clear_error(
    engine: sa.Engine, db: tuple[str, Path], settings: dict[str, object], message: str
) -> None:
    schema, _ = db
    config = {"url": URL, "schema": schema, **settings}
    with pytest.raises(SourceError, match=message):
        sql_source.read_sql_tables(SqlSource(**config))  # type: ignore[arg-type]
    assert _table_exists(engine, schema, "canary") and _table_exists(engine, schema, "items")


def test_a_missing_schema_is_named(db: tuple[str, Path]) -> None:
    with pytest.raises(SourceError, match="schema 'bf_no_such_schema' .* does not exist"):
        sql_source.read_sql_tables(SqlSource(url=URL, schema="bf_no_such_schema"))


# ------------------------------------------------------------------------------------ bounds


def _count(raw: dict[str, list[tuple[str, pd.DataFrame]]], table: str) -> int:
    return sum(len(frame) for _, frame in raw[table])


def test_bounded_queries_filter_in_the_database(db: tuple[str, Path]) -> None:
    schema, landing = db
    sql = SqlSource(url=URL, schema=schema)
    completions = _landing_frame(landing, "completions")
    counts = _landing_frame(landing, "stock_counts")
    moves = _landing_frame(landing, "movements")
    since, until = pd.Timestamp("2026-01-02", tz="UTC"), pd.Timestamp("2026-01-03 12:00", tz="UTC")
    watermark = completions["recorded_at"].fillna(completions["completed_at"]).quantile(0.9)

    everything = sql_source.read_sql_tables(sql)
    window = sql_source.read_sql_tables(sql, since=since, until=until)
    incremental = sql_source.read_sql_tables(sql, since=since, until=until, recorded_after=watermark)
    open_start = sql_source.read_sql_tables(sql, until=until)

    # rows without a time are always pulled (they must reach quarantine)
    in_window = (completions["completed_at"].ge(since) & completions["completed_at"].lt(until)) | completions[
        "completed_at"].isna()
    recorded = completions["recorded_at"].fillna(completions["completed_at"]) > watermark
    assert _count(everything, "completions") == len(completions)
    assert 0 < _count(window, "completions") == int(in_window.sum()) < len(completions)
    assert _count(incremental, "completions") == int((in_window | recorded).sum()) > _count(window, "completions")
    assert _count(open_start, "completions") == int((completions["completed_at"].lt(until)
                                                      | completions["completed_at"].isna()).sum())
    # counts have no lower bound: a count's previous count opens its window, however old
    assert 0 < _count(window, "stock_counts") == int((counts["counted_at"].lt(until) | counts["counted_at"].isna()).sum())
    assert 0 < _count(window, "movements") == int(((moves["moved_at"].ge(since) & moves["moved_at"].lt(until))
                                                  | moves["moved_at"].isna()).sum())
    for master in ("plants", "items", "uom_conversions", "bom"):
        assert _count(window, master) == _count(everything, master) == len(_landing_frame(landing, master))
    # a naive bound is UTC, and a column without a time zone holds UTC: the same rows either way
    naive = sql_source.read_sql_tables(
        SqlSource(url=URL, schema=schema, tables={"completions": "mes_confirmations"},
                  columns={"completions": {"completion_id": "conf_no", "completed_at": "finished_ts",
                                           "qty_good": "good_qty"}}),
        since=since.tz_localize(None), until=until.tz_convert("Asia/Shanghai"), recorded_after=watermark)
    assert _count(naive, "completions") == _count(incremental, "completions")


# ------------------------------------------------------------------------------------ credentials


SECRET = "Sup3r-s3cret/pw"


def _everything_said(exc: BaseException) -> str:
    return str(exc) + repr(exc) + "".join(traceback.format_exception(exc))


def test_a_password_never_appears_in_errors(db: tuple[str, Path], monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    schema, _ = db
    quoted = SECRET.replace("/", "%2F")
    caplog.set_level("DEBUG")
    attempts = [
        # nothing listens on port 1: the driver's error must not carry the password
        SqlSource(url=f"postgresql+psycopg://postgres:{quoted}@127.0.0.1:1/test", schema=schema),
        # trust auth accepts any password: an error after connecting must not carry it either
        SqlSource(url=f"postgresql+psycopg://postgres:{quoted}@127.0.0.1:5432/test", schema=schema,
                  tables={"items": "no_such_items"}),
        SqlSource(url=f"postgresql+psycopg://postgres:{quoted}@127.0.0.1:5432/no_such_database_bf"),
        SqlSource(url=f"nosuchdialect://postgres:{quoted}@127.0.0.1:5432/test"),
        SqlSource(url=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:5432:99/test"),
    ]
    monkeypatch.setenv("BF_TEST_SQL_URL", f"postgresql://postgres:{quoted}@127.0.0.1:1/test")
    attempts.append(SqlSource(url_env="BF_TEST_SQL_URL", schema=schema))
    for sql in attempts:
        with pytest.raises(SourceError) as info:
            sql_source.read_sql_tables(sql)
        said = _everything_said(info.value)
        assert SECRET not in said and quoted not in said, said
    assert "***" in str(_raised(attempts[0]))
    assert SECRET not in caplog.text and quoted not in caplog.text
    # a working URL with a password reads, and its log line is masked too
    ok = sql_source.read_sql_tables(SqlSource(url=f"postgresql://postgres:{quoted}@127.0.0.1:5432/test", schema=schema))
    assert _count(ok, "items") > 0
    assert quoted not in caplog.text and "postgres:***@" in caplog.text


def _raised(sql: SqlSource) -> BaseException:
    try:
        sql_source.read_sql_tables(sql)
    except SourceError as exc:
        return exc
    raise AssertionError("no error")


def test_the_url_comes_from_exactly_one_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BF_TEST_UNSET_URL", raising=False)
    with pytest.raises(SourceError, match="BF_TEST_UNSET_URL .* is not set"):
        sql_source.read_sql_tables(SqlSource(url_env="BF_TEST_UNSET_URL"))
    with pytest.raises(SourceError, match="exactly one of"):
        sql_source.read_sql_tables(SqlSource())
    with pytest.raises(SourceError, match=r"found sql\.url, sql\.conn_id"):
        sql_source.read_sql_tables(SqlSource(url=URL, conn_id="x"))
    # Airflow writes postgres://; the project's driver is psycopg 3
    assert sql_source.database_url(SqlSource(url="postgres://u:p@h:5432/db?__extra__=%7B%7D")) == \
        "postgresql+psycopg://u:p@h:5432/db"


def test_an_airflow_connection_id_is_resolved(db: tuple[str, Path], tmp_path: Path) -> None:
    """Resolved by Airflow itself (here from an AIRFLOW_CONN_ variable), in a separate process."""
    schema, _ = db
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"),
           "AIRFLOW_CONN_BF_TEST_PG": f"postgres://postgres:{SECRET.replace('/', '%2F')}@127.0.0.1:5432/test"}
    code = (
        "from pipeline import sql_source\n"
        "from pipeline.config import SqlSource\n"
        f"raw = sql_source.read_sql_tables(SqlSource(conn_id='bf_test_pg', schema={schema!r}))\n"
        "print('ITEMS', sum(len(f) for _, f in raw['items']))\n"
        f"try:\n    sql_source.read_sql_tables(SqlSource(conn_id='bf_test_pg', schema={schema!r}, tables={{'bom': 'nope'}}))\n"
        "except Exception as exc:\n    print('ERROR', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    said = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in done.stdout.splitlines()
            if line.startswith(("ITEMS ", "ERROR "))}
    assert int(said["ITEMS"]) > 0
    assert "does not exist in postgresql+psycopg://postgres:***@127.0.0.1:5432/test" in said["ERROR"]
    assert "Sup3r" not in done.stdout + done.stderr


def test_a_bounded_single_date_pull_gives_the_same_outputs_as_files(db: tuple[str, Path], tmp_path: Path) -> None:
    """One mid-range date: the SQL pull is bounded to the look-back and widened to the oldest previous
    count of that date's counts, and still reconciles exactly like the whole landing does."""
    schema, landing = db
    day = START + dt.timedelta(days=DAYS - 1)
    from_files = load_config(None, landing=str(landing), warehouse=str(tmp_path / "files"), lookback_days=1)
    from_sql = from_files.replace(warehouse=str(tmp_path / "sql"), landing=str(tmp_path / "no-landing"),
                                  sql=SqlSource(url=URL, schema=schema))
    job.run_dates(from_files, [day])
    result_sql = job.run_dates(from_sql, [day])
    assert result_sql.rows_read["completions"] < job.read_inputs(from_files).inputs.stats["completions"].read
    files, sql = _outputs(tmp_path / "files"), _outputs(tmp_path / "sql")
    for dataset in ("consumption", "adjustments", "variance"):
        keys = [k for k in files if k.startswith(dataset + "/")]
        assert keys and keys == [k for k in sql if k.startswith(dataset + "/")]
        for key in keys:
            pd.testing.assert_frame_equal(sql[key], files[key], check_exact=False, rtol=1e-12, obj=key)


def test_an_unreachable_database_is_a_transient_failure() -> None:
    """Nothing listens on port 1: the error is one line, names no secret, and says it may pass."""
    with pytest.raises(SourceError) as caught:
        sql_source.read_sql_tables(SqlSource(url="postgresql+psycopg://u:s3cret@127.0.0.1:1/test"))
    assert caught.value.transient is True
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(SourceError) as caught:
        sql_source.read_sql_tables(SqlSource(url=URL, schema="bf_no_such_schema"))
    assert caught.value.transient is False  # a configuration mistake does not go away by waiting
