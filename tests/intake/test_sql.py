"""SQL sources against the real PostgreSQL on 127.0.0.1:5432: same outputs as landing files, names, bounds, safety."""

from __future__ import annotations

import contextlib
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

from pipeline import job
from pipeline.config import Config, SqlSource, load_config
from pipeline.contract import schemas
from pipeline.errors import SourceError
from pipeline.intake import accept
from pipeline.intake import sql as sql_source
from pipeline.stages import read
from pipeline.store.warehouse import Warehouse
from pipeline.tools.generate import generate_landing
from tests.support.landing import write_table
from tests.support.postgres import URL, reachable_engine

START = dt.date(2026, 1, 1)
DAYS = 4
VOLATILE = {"run_id", "posted_at", "posting_id", "started_at", "finished_at", "as_of",  # run identity and clock
            "source",  # where a rejected row was read: a file line vs a SQL table
            "inputs_digest"}  # a landing run's digest of its files (pipeline.stages.rerun); a SQL run records none


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    eng = reachable_engine(URL)
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
            if not (landing / table).is_dir():  # optional tables the generator does not write
                continue
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



# master data of the hand-worked SQL cases: FG (10.00 each, whole units) takes 5 kg RM (3.00/kg)
FG_FROM_RM: dict[str, list[dict[str, object]]] = {
    "items": [{"item_id": "FG", "uom": "EA", "standard_cost": 10.0, "phantom": False, "backflush": True,
               "uom_decimals": 0},
              {"item_id": "RM", "uom": "KG", "standard_cost": 3.0, "phantom": False, "backflush": True,
               "uom_decimals": 3}],
    "bom": [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5.0}],
}
@contextlib.contextmanager
def _files_and_sql(engine: sa.Engine, tmp_path: Path, tables: dict[str, list[dict[str, object]]],
                   prefix: str) -> Iterator[tuple[Config, Config, str]]:
    """The same rows as Parquet landing files and as tables of a fresh schema (dropped at the end):
    yields (config reading the files, config reading SQL, schema)."""
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    landing = tmp_path / "landing"
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')  # a name made here, not configuration
    try:
        for table, rows in tables.items():
            write_table(landing, table, rows, name="part.parquet")
            pd.DataFrame(rows).to_sql(table, engine, schema=schema, index=False)
        from_files = load_config(None, landing=str(landing), warehouse=str(tmp_path / "files"))
        yield from_files, from_files.replace(warehouse=str(tmp_path / "sql"), landing=str(tmp_path / "no-landing"),
                                             sql=SqlSource(url=URL, schema=schema)), schema
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
    typed = accept.load_inputs(renamed)
    assert len(typed.completions) == len(accept.load_inputs(plain).completions) > 0


def test_optional_tables_missing_from_the_database_are_empty(engine: sa.Engine, db: tuple[str, Path]) -> None:
    schema, _ = db
    only_required = SqlSource(url=URL, schema=schema, tables={"plants": "no_such_plants", "movements": "no_moves",
                                                              "uom_conversions": "no_conversions"})
    raw = sql_source.read_sql_tables(only_required)
    assert raw["plants"] == [] and raw["movements"] == [] and raw["uom_conversions"] == []
    assert len(accept.load_inputs(raw).items) > 0
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


def _with_ids(frame: pd.DataFrame, key: str, chosen: pd.Series) -> int:
    """How many rows are chosen or share a (non-null) id with a chosen row."""
    return int((chosen | frame[key].isin(frame.loc[chosen, key].dropna())).sum())


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

    # rows without a time are always pulled (they must reach quarantine); with every row of each
    # id pulled (every version of a completion, every row of an id: DUPLICATE_ID is judged whole)
    in_window = (completions["completed_at"].ge(since) & completions["completed_at"].lt(until)) | completions[
        "completed_at"].isna()
    recorded = completions["recorded_at"].fillna(completions["completed_at"]) > watermark
    assert _count(everything, "completions") == len(completions)
    window_rows = _with_ids(completions, "completion_id", in_window)
    assert 0 < _count(window, "completions") == window_rows < len(completions)
    assert _count(incremental, "completions") == _with_ids(completions, "completion_id", in_window | recorded) > \
        _count(window, "completions")
    assert _count(open_start, "completions") == _with_ids(completions, "completion_id", completions[
        "completed_at"].lt(until) | completions["completed_at"].isna())
    # counts have no lower bound: a count's previous count opens its window, however old
    assert 0 < _count(window, "stock_counts") == _with_ids(counts, "count_id", counts["counted_at"].lt(until)
                                                           | counts["counted_at"].isna())
    assert 0 < _count(window, "movements") == _with_ids(moves, "movement_id", (
        moves["moved_at"].ge(since) & moves["moved_at"].lt(until)) | moves["moved_at"].isna())
    for master in ("plants", "items", "uom_conversions", "bom"):
        assert _count(window, master) == _count(everything, master) == len(_landing_frame(landing, master))
    # a naive bound is UTC, and a column without a time zone holds UTC: the same rows either way
    naive = sql_source.read_sql_tables(
        SqlSource(url=URL, schema=schema, tables={"completions": "mes_confirmations"},
                  columns={"completions": {"completion_id": "conf_no", "completed_at": "finished_ts",
                                           "qty_good": "good_qty"}}),
        since=since.tz_localize(None), until=until.tz_convert("Asia/Shanghai"), recorded_after=watermark)
    assert _count(naive, "completions") == _count(incremental, "completions")


def test_the_rows_of_window_ids_are_a_semi_join_not_a_subquery_per_row(db: tuple[str, Path]) -> None:
    """`window OR id IN (SELECT ...)` makes PostgreSQL run the subquery for every row (a SubPlan,
    quadratic: minutes at a million rows); the read is a UNION ALL whose IN is a semi-join."""
    schema, _ = db
    bounds = {"since": pd.Timestamp("2026-01-02", tz="UTC"), "until": pd.Timestamp("2026-01-03", tz="UTC"),
              "recorded_after": pd.Timestamp("2026-01-02", tz="UTC")}
    engine = sa.create_engine(URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            for table in ("completions", "movements", "stock_counts"):
                reflected = sa.Table(table, sa.MetaData(), schema=schema, autoload_with=conn)
                for plants in (None, ["P1"]):
                    statement = sql_source._select(table, reflected, {}, bounds, f"sql:{schema}.{table}", plants,
                                                   conn.dialect.name)
                    compiled = statement.compile(conn, compile_kwargs={"render_postcompile": True})
                    plan = "\n".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + str(compiled),
                                                                             compiled.params))
                    assert "SubPlan" not in plan, plan
                    assert "Semi Join" in plan or "Join" in plan, plan
    finally:
        engine.dispose()


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
        "from pipeline.intake import sql as sql_source\n"
        "from pipeline.config import SqlSource\n"
        f"raw = sql_source.read_sql_tables(SqlSource(conn_id='bf_test_pg', schema={schema!r}))\n"
        "print('ITEMS', sum(len(f) for _, f in raw['items']))\n"
        f"try:\n    sql_source.read_sql_tables(SqlSource(conn_id='bf_test_pg', schema={schema!r}, tables={{'bom': 'nope'}}))\n"
        "except Exception as exc:\n    print('ERROR', exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
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
    assert result_sql.rows_read["completions"] < read.read_inputs(from_files).inputs.stats["completions"].read
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


# ------------------------------------------------------------------------------------ corrections (issue 12.3)


def _at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _completion(cid: str, qty: float, completed: str, recorded: str) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": "P1", "location_id": "L1", "item_id": "FG", "qty_good": qty,
            "qty_scrap": 0.0, "completed_at": _at(completed), "recorded_at": _at(recorded)}


def _movement(mid: str, qty: float, moved: str) -> dict[str, object]:
    return {"movement_id": mid, "plant_id": "P1", "location_id": "L1", "item_id": "RM", "qty": qty,
            "moved_at": _at(moved), "kind": "receipt"}


def test_a_correction_moved_out_of_the_read_window_is_seen(engine: sa.Engine, tmp_path: Path) -> None:
    """C1 (100 FG on 3 March) is corrected to 1 February; the correction is loaded after the run for
    4 March although its recorded_at is older than that run's watermark. A SQL run for 5 March reads
    from 20 February (K1's previous count) on: it must still see that C1 moved away, exactly as a
    landing holding the same rows does, and reverse 3 March's postings. A movement id with a second,
    conflicting row outside the window is DUPLICATE_ID from both sources."""

    tables: dict[str, list[dict[str, object]]] = {
        **FG_FROM_RM,
        "completions": [_completion("C1", 100, "2026-03-03T10:00", "2026-03-03T10:00"),
                        _completion("C2", 50, "2026-03-04T10:00", "2026-03-04T10:00")],  # watermark: 4 March 10:00
        "stock_counts": [{"count_id": k, "plant_id": "P1", "location_id": "L1", "item_id": "RM", "counted_qty": q,
                          "counted_at": _at(t)} for k, q, t in (("K0", 1000.0, "2026-02-20T18:00"),
                                                                ("K1", 250.0, "2026-03-04T18:00"))],
        "movements": [_movement("M1", 7, "2026-03-03T12:00"), _movement("M1", 7, "2026-02-01T12:00")],
    }
    correction = [_completion("C1", 100, "2026-02-01T10:00", "2026-03-03T12:00")]  # recorded before the watermark
    with _files_and_sql(engine, tmp_path, tables, "bf_sql_move") as (from_files, from_sql, schema):
        for config in (from_files, from_sql):
            job.run_dates(config, [dt.date(2026, 3, 4)])
        write_table(tmp_path / "landing", "completions", correction, name="late.parquet")
        pd.DataFrame(correction).to_sql("completions", engine, schema=schema, index=False, if_exists="append")
        results = [job.run_dates(config, [dt.date(2026, 3, 5)]) for config in (from_files, from_sql)]

    for result in results:  # 3 March changed (C1 left it); 1 February is outside the 7-day look-back
        assert result.business_dates == [dt.date(2026, 3, 3), dt.date(2026, 3, 5)]
    files, sql = _outputs(tmp_path / "files"), _outputs(tmp_path / "sql")
    compared = [k for k in files if k.split("/")[0] in ("consumption", "adjustments", "postings", "variance",
                                                       "quarantine")]
    assert compared == [k for k in sql if k.split("/")[0] in ("consumption", "adjustments", "postings", "variance",
                                                             "quarantine")]
    for key in compared:
        pd.testing.assert_frame_equal(sql[key], files[key], check_exact=False, rtol=1e-12, obj=key)

    warehouse = Warehouse(str(tmp_path / "sql"))
    postings = warehouse.read("postings")
    last = postings[postings["run_id"] == results[1].run_id]
    assert {(d.date().isoformat(), i): q for d, i, q in zip(last["business_date"], last["item_id"], last["qty_delta"],
                                                            strict=True)} == {
        ("2026-03-03", "FG"): -100.0,  # C1's receipt reversed: 0 - 100
        ("2026-03-03", "RM"): 500.0,  # and its issue: 0 - (-(100 x 5))
    }
    totals = postings.groupby([postings["business_date"].dt.strftime("%Y-%m-%d"), "item_id"])["qty_delta"].sum()
    assert totals.to_dict() == {("2026-03-03", "FG"): 0.0, ("2026-03-03", "RM"): 0.0,  # +100 - 100; -500 + 500
                                ("2026-03-04", "FG"): 50.0, ("2026-03-04", "RM"): -250.0}  # C2: 50; -(50 x 5)
    k1 = warehouse.read("variance").set_index("count_id").loc["K1"]
    assert k1["movements_qty"] == 0.0  # both M1 rows are DUPLICATE_ID: no movement counts
    assert k1["theoretical_usage_qty"] == 250.0  # C2 only: 50 x 5 (C1 is now before K0)
    assert k1["book_qty"] == 750.0  # 1000 - 250
    assert k1["variance_qty"] == -500.0  # 250 - 750
    assert k1["variance_value"] == -1500.0  # -500 x 3.00
    quarantine = warehouse.read("quarantine")
    assert sorted(quarantine.loc[quarantine["error_code"] == "DUPLICATE_ID", "source_key"]) == ["M1"]  # 3 March's row


# ------------------------------------------------------------------------------------ streaming (issue 17.4)


def test_completions_are_streamed_in_staged_batches(db: tuple[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stage folder, completions come from a server-side cursor STREAM_ROWS rows at a time,
    each batch staged as it arrives: the same rows, in the same order, as one whole read."""
    from pipeline.intake.spill import StagedRows

    schema, landing = db
    monkeypatch.setattr(sql_source, "STREAM_ROWS", 50)
    sql = SqlSource(url=URL, schema=schema)
    whole = sql_source.read_sql_tables(sql)
    streamed = sql_source.read_sql_tables(sql, stage_dir=tmp_path / "stage")
    [(name, staged)] = streamed["completions"]
    assert isinstance(staged, StagedRows) and name == f"sql:{schema}.completions"
    rows = len(_landing_frame(landing, "completions"))
    assert staged.rows() == rows and len(staged.parts) == -(-rows // 50)  # ceil(rows / 50) batches
    assert all(count == 50 for _, count in staged.parts[:-1])
    (_, frame), = whole["completions"]
    got = staged.read()
    assert list(got.columns) == list(frame.columns)
    assert got["completion_id"].astype("str").tolist() == frame["completion_id"].astype("str").tolist()
    pd.testing.assert_series_equal(got["qty_good"].astype("float64"), frame["qty_good"].astype("float64"))
    # chunks for spilling join batches up to the asked size and count lines on across them
    chunks = [(line, table.num_rows) for line, table in staged.chunks(120)]
    assert sum(n for _, n in chunks) == rows and all(n <= 120 for _, n in chunks[:-1])
    assert [line for line, _ in chunks] == [2 + sum(n for _, n in chunks[:i]) for i in range(len(chunks))]
    assert [n for _, n in chunks[:-1]] == [100] * (len(chunks) - 1)  # two 50-row batches; a third makes 150
    # master tables and the other bounded tables are still frames
    assert all(isinstance(f, pd.DataFrame) for t in ("items", "movements") for _, f in streamed[t])


def test_streamed_batches_through_many_buckets_give_the_same_outputs_as_files(
        db: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small batches and small buckets: the staged batches are spilled across buckets like files."""
    schema, landing = db
    monkeypatch.setattr(sql_source, "STREAM_ROWS", 37)
    dates = [START + dt.timedelta(days=i) for i in range(DAYS)]
    from_files = load_config(None, landing=str(landing), warehouse=str(tmp_path / "files"), bucket_rows=60)
    from_sql = from_files.replace(warehouse=str(tmp_path / "sql"), landing=str(tmp_path / "no-landing"),
                                  sql=SqlSource(url=URL, schema=schema))
    result_files = job.run_dates(from_files, dates)
    result_sql = job.run_dates(from_sql, dates)
    assert result_sql.rows_read == result_files.rows_read
    files, sql = _outputs(tmp_path / "files"), _outputs(tmp_path / "sql")
    assert sorted(sql) == sorted(files)
    for key in files:
        pd.testing.assert_frame_equal(sql[key], files[key], check_exact=False, rtol=1e-12, obj=key)


def test_a_plant_restricted_run_reads_only_its_plants_rows_and_writes_what_files_give(
        engine: sa.Engine, tmp_path: Path) -> None:
    """`--plant P1` from SQL pulls P1's rows, rows without a usable plant (coercion judges them) and
    every row of each id it pulls; it writes exactly what the same rows in a landing give."""

    def row(cid: str, plant: str | None, qty: float, recorded: str = "2026-03-03T10:00") -> dict[str, object]:
        return {**_completion(cid, qty, "2026-03-03T10:00", recorded), "plant_id": plant}

    tables: dict[str, list[dict[str, object]]] = {
        **FG_FROM_RM,
        "completions": [
            row("A1", "P1", 10),
            row("A2", " P1 ", 20),  # P1 once stripped: not a plain id, so pulled
            row("A3", "\t", 5),  # blank: INVALID, in quarantine
            row("A4", None, 6),  # missing: INVALID, in quarantine
            row("B1", "P2", 40),  # another plant's plain id: not pulled
            row("A5", "P1", 7), row("A5", "P2", 7, recorded="2026-03-03T11:00"),  # moved to P2 by a correction
            row("A6", "P1", 8), row("A6", "P2", 9),  # conflicting, same recorded_at: DUPLICATE_ID, both
        ],
        "stock_counts": [{"count_id": k, "plant_id": p, "location_id": "L1", "item_id": "RM", "counted_qty": 100.0,
                          "counted_at": _at("2026-03-03T18:00")} for k, p in (("K1", "P1"), ("K2", "P2"))],
    }
    with _files_and_sql(engine, tmp_path, tables, "bf_sql_plant") as (from_files, from_sql, _):
        result_files, result_sql = (job.run_dates(c, [dt.date(2026, 3, 3)], plants=["P1"])
                                    for c in (from_files, from_sql))

    # neither reads B1 (P2's own id); both read A5's and A6's P2 rows (ids P1 has a row of)
    assert result_files.rows_read["completions"] == 8 and result_sql.rows_read["completions"] == 8
    assert result_files.rows_read["stock_counts"] == 1 and result_sql.rows_read["stock_counts"] == 1  # not K2
    files, sql = _outputs(tmp_path / "files"), _outputs(tmp_path / "sql")
    compared = [k for k in files if not k.startswith("runs/")]
    assert compared and compared == [k for k in sql if not k.startswith("runs/")]
    for key in compared:
        pd.testing.assert_frame_equal(sql[key], files[key], check_exact=False, rtol=1e-12, obj=key)
    adjustments = Warehouse(str(tmp_path / "sql")).read("adjustments").set_index(["plant_id", "item_id"])["qty"]
    assert adjustments.to_dict() == {("P1", "FG"): 30.0, ("P1", "RM"): -150.0}  # A1 + A2 = 10 + 20; -(30 x 5)
    quarantine = Warehouse(str(tmp_path / "sql")).read("quarantine")
    rejected = quarantine[quarantine["table"] == "completions"]
    assert sorted(zip(rejected["source_key"], rejected["error_code"], strict=True)) == [
        ("A3", "INVALID"), ("A4", "INVALID"), ("A6", "DUPLICATE_ID")]  # A6's P2 row is P2's, not in this run
