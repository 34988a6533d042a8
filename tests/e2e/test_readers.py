"""Readers as users read: every output dataset of a demo warehouse, read with Polars and with Spark.

Each reader reads the Parquet folders as the README shows (Polars `scan_parquet` with hive
partitioning and a typed hive schema; Spark's Parquet source on local[2]) and must give the same
rows as pyarrow's dataset reader, with the partition columns typed: ids as strings, dates as dates.
No pipeline code reads here: only the writing goes through the pipeline.

Spark needs a Java runtime (`.ci/run` installs one). If Spark cannot start, the Spark tests fail;
they never skip.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from pipeline import job
from pipeline.config import Config
from pipeline.tools.generate import generate_landing

START = dt.date(2026, 1, 5)
DAYS = 6
# dataset -> its partition columns in path order and their types (docs/CONTRACT.md "Outputs")
DATASETS: dict[str, dict[str, str]] = {
    "consumption": {"plant_id": "string", "business_date": "date"},
    "adjustments": {"plant_id": "string", "business_date": "date"},
    "postings": {"plant_id": "string"},
    "variance": {"plant_id": "string", "count_date": "date"},
    "quarantine": {"table": "string", "business_date": "date"},
    "bom_accuracy": {"plant_id": "string"},
    "runs": {},
}
ARROW = {"string": pa.string(), "date": pa.date32()}
POLARS = {"string": pl.String, "date": pl.Date}
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo warehouse: 6 business dates of 3 plants with bad rows (so quarantine has rows), loaded
    in two backfills (so a plant's postings are two files) and re-run once (a third runs row)."""
    root = tmp_path_factory.mktemp("readers")
    generate_landing(root / "landing", items=30, completions=900, days=DAYS, seed=11, start=START, bad_rows=True,
                     file_format="csv")
    config = Config(landing=str(root / "landing"), warehouse=str(root / "warehouse"))
    end = START + dt.timedelta(days=DAYS - 1)
    job.backfill(config, START, START + dt.timedelta(days=2))
    job.backfill(config, START + dt.timedelta(days=3), end)
    job.backfill(config, end - dt.timedelta(days=1), end)  # posts nothing, records a run
    return root / "warehouse"


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One small local Spark session for the module (2 cores, 1 GB driver, no UI, UTC)."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]").appName("backflush-readers")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        # partition values are read as strings and typed by the reader, as hive_schema does in Polars
        # (inference would turn a plant "007" into the integer 7)
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


# ------------------------------------------------------------------ the reference and the comparison


def pyarrow_table(warehouse: Path, dataset: str) -> pa.Table:
    """The dataset as pyarrow reads it, partition columns typed by an explicit hive partitioning."""
    parts = DATASETS[dataset]
    partitioning = ds.partitioning(pa.schema([(c, ARROW[t]) for c, t in parts.items()]), flavor="hive") \
        if parts else None
    return ds.dataset(warehouse / dataset, format="parquet", partitioning=partitioning).to_table()


def canon(value: Any) -> Any:
    """One value in a form every reader's Python values agree on.

    Timestamps become microseconds since the epoch (Spark gives naive local datetimes, pyarrow and
    Polars aware UTC ones); maps become sorted (key, value) pairs (pyarrow gives a list of tuples,
    Polars a list of {key, value} structs, Spark a dict); lists become tuples; NaN a marker.
    """
    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.astimezone()  # naive: the process's local time
        return ("ts", (aware - EPOCH) // dt.timedelta(microseconds=1))
    if isinstance(value, dt.date):
        return ("date", value.isoformat())
    if isinstance(value, dict) and set(value) != {"key", "value"}:
        return ("map", tuple(sorted((canon(k), canon(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, dict) and set(v) == {"key", "value"} for v in value):
            return ("map", tuple(sorted((canon(v["key"]), canon(v["value"])) for v in value)))
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return ("map", tuple(sorted((canon(k), canon(v)) for k, v in value)))
        return ("list", tuple(canon(v) for v in value))
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value


def rows(records: list[dict[str, Any]], columns: list[str]) -> list[tuple[Any, ...]]:
    """Records as canonical tuples in the given column order, sorted (a multiset)."""
    return sorted((tuple(canon(r[c]) for c in columns) for r in records), key=repr)


def empty_map_as_list(value: Any) -> Any:
    """An empty map is `{}` in Spark and `[]` in pyarrow and Polars: one form for both."""
    return ("list", ()) if value == ("map", ()) else value


def same_rows(actual: list[tuple[Any, ...]], expected: list[tuple[Any, ...]]) -> None:
    def norm(table: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return sorted((tuple(empty_map_as_list(v) for v in row) for row in table), key=repr)

    assert len(actual) == len(expected)
    assert norm(actual) == norm(expected)


@pytest.fixture(scope="module")
def reference(warehouse: Path) -> dict[str, pa.Table]:
    tables = {name: pyarrow_table(warehouse, name) for name in DATASETS}
    for name, table in tables.items():
        assert table.num_rows > 0, f"the demo warehouse has no {name} rows: the comparison would be empty"
    return tables


def test_the_demo_warehouse_has_several_files_per_dataset(warehouse: Path) -> None:
    """Readers must combine files: each backfill that posts adds a postings file per plant."""
    for plant in ("P1", "P2", "P3"):
        assert len(list((warehouse / "postings" / f"plant_id={plant}").glob("*.parquet"))) == 2, plant
    assert len(list((warehouse / "runs").glob("*.parquet"))) == 3  # one file per run


# ------------------------------------------------------------------ Polars


def polars_frame(warehouse: Path, dataset: str) -> pl.DataFrame:
    parts = DATASETS[dataset]
    if not parts:
        return pl.scan_parquet(f"{warehouse / dataset}/*.parquet").collect()
    return pl.scan_parquet(f"{warehouse / dataset}/**/*.parquet", hive_partitioning=True,
                           hive_schema={c: POLARS[t] for c, t in parts.items()}).collect()


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_polars_reads_every_dataset_like_pyarrow(warehouse: Path, reference: dict[str, pa.Table],
                                                 dataset: str) -> None:
    frame = polars_frame(warehouse, dataset)
    expected = reference[dataset]
    assert sorted(frame.columns) == sorted(expected.column_names)
    for column, kind in DATASETS[dataset].items():
        assert frame.schema[column] == POLARS[kind], f"{dataset}.{column} is {frame.schema[column]}"
        assert expected.schema.field(column).type == ARROW[kind]
    columns = sorted(expected.column_names)
    same_rows(rows(frame.to_dicts(), columns), rows(expected.to_pylist(), columns))


# ------------------------------------------------------------------ Spark


def spark_frame(spark: Any, warehouse: Path, dataset: str) -> Any:
    from pyspark.sql import functions as F

    path = str(warehouse / dataset)
    frame = spark.read.option("basePath", path).parquet(path)
    for column, kind in DATASETS[dataset].items():
        if kind == "date":
            frame = frame.withColumn(column, F.to_date(F.col(column), "yyyy-MM-dd"))
    return frame


def test_spark_starts(spark: Any) -> None:
    assert spark.range(5).selectExpr("sum(id) AS s").collect()[0]["s"] == 10  # 0+1+2+3+4


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_spark_reads_every_dataset_like_pyarrow(spark: Any, warehouse: Path, reference: dict[str, pa.Table],
                                                dataset: str) -> None:
    from pyspark.sql import types as T

    frame = spark_frame(spark, warehouse, dataset)
    expected = reference[dataset]
    assert sorted(frame.columns) == sorted(expected.column_names)
    spark_types = {"string": T.StringType(), "date": T.DateType()}
    for column, kind in DATASETS[dataset].items():
        assert frame.schema[column].dataType == spark_types[kind], f"{dataset}.{column}"
    columns = sorted(expected.column_names)
    records = [r.asDict(recursive=True) for r in frame.collect()]
    same_rows(rows(records, columns), rows(expected.to_pylist(), columns))
