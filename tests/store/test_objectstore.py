"""Object-store warehouses against moto's S3 emulation, run as an HTTP server on loopback (its server mode).

moto is not a real S3-compatible server: it emulates the S3 API in Python, in memory. It is what
can be installed here (no AWS, MinIO or other S3 server is), and the emulation speaks real HTTP,
so pyarrow's and boto3's S3 clients run unchanged; what it cannot show is how a real store
behaves (latency, throttling, its own implementation of conditional writes).

Covers: a run to s3:// gives the same outputs as to a local folder; a commit killed with SIGKILL
half-way leaves whole files (old or new per partition) and the next run rolls it forward and
posts exactly once; pyarrow, pandas and DuckDB read the datasets; plant locks are conditional
PUTs; credentials never appear in messages.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from moto.server import ThreadedMotoServer

from pipeline import job
from pipeline.config import Config, load_config
from pipeline.errors import LockError, WarehouseError
from pipeline.store import objectstore
from pipeline.store.warehouse import Warehouse
from pipeline.tools.generate import generate_landing
from tests.support import faults

REPO = Path(__file__).resolve().parents[2]
START = dt.date(2026, 1, 1)
DATES = [START + dt.timedelta(days=i) for i in range(3)]
VOLATILE = {"run_id", "posted_at", "posting_id", "started_at", "finished_at", "as_of"}  # run identity and clock
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait for an instance-metadata endpoint
}


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 emulation, served over HTTP on a free loopback port; the AWS_* environment points at it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            env.delenv(name, raising=False)
        for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": url}.items():
            env.setenv(name, value)
        yield url
    server.stop()


def new_bucket(endpoint: str) -> str:
    name = f"bf-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def landings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Version A of the landing data, and version B = A plus corrections of some completions."""
    root = tmp_path_factory.mktemp("landing")
    a, b = root / "a", root / "b"
    generate_landing(a, items=6, completions=240, days=len(DATES), seed=3, start=START, plants=2)
    generate_landing(b, items=6, completions=240, days=len(DATES), seed=3, start=START, plants=2)
    completions = pq.read_table(sorted((b / "completions").glob("*.parquet"))[0])
    frame = completions.to_pandas().iloc[::12].copy()
    frame["qty_good"] = frame["qty_good"] * 2 + 1
    frame["recorded_at"] = frame["completed_at"] + pd.Timedelta(hours=30)
    pq.write_table(pa.Table.from_pandas(frame, schema=completions.schema, preserve_index=False),
                   b / "completions" / "zz-corrections.parquet")
    return a, b


def config(landing: Path, warehouse: str) -> Config:
    return load_config(None, landing=str(landing), warehouse=warehouse)


@pytest.fixture(scope="module")
def local_reference(landings: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same runs into a local folder: outputs after run A (all dates) and after run B (last date)."""
    a, b = landings
    folder = str(tmp_path_factory.mktemp("local") / "warehouse")
    job.run_dates(config(a, folder), DATES)
    after_a = outputs(Warehouse(folder))
    job.run_dates(config(b, folder), DATES[-1:])
    return {"after_a": after_a, "after_b": outputs(Warehouse(folder)), "folder": folder}


@pytest.fixture(scope="module")
def filled(endpoint: str, landings: tuple[Path, Path]) -> str:
    """An s3:// warehouse after the same two runs as the local reference."""
    a, b = landings
    uri = f"s3://{new_bucket(endpoint)}/warehouse"
    job.run_dates(config(a, uri), DATES)
    job.run_dates(config(b, uri), DATES[-1:])
    return uri


# ------------------------------------------------------------------------------------ snapshots


def files(warehouse: Warehouse) -> dict[str, pd.DataFrame]:
    """Every published Parquet file by relative path, volatile columns dropped, rows sorted."""
    selector = pafs.FileSelector(warehouse.root, recursive=True, allow_not_found=True)
    out = {}
    for info in warehouse.filesystem.get_file_info(selector):
        rel = info.path[len(warehouse.root) + 1:]
        if info.type != pafs.FileType.File or rel.startswith("_") or not rel.endswith(".parquet"):
            continue
        if rel.startswith("landing_manifest/"):  # describes the landing copy (mtimes), not an output
            continue
        frame = pq.read_table(info.path, filesystem=warehouse.filesystem).to_pandas()  # a torn file raises
        frame = frame.drop(columns=[c for c in frame.columns if c in VOLATILE])
        frame = frame.astype({c: "str" for c in frame.columns if frame[c].dtype == object})
        out[rel] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def outputs(warehouse: Warehouse) -> dict[str, pd.DataFrame]:
    """`files`, with the per-run files (postings, runs) of one folder concatenated: comparable across warehouses."""
    out: dict[str, pd.DataFrame] = {}
    for rel, frame in files(warehouse).items():
        folder, name = rel.rsplit("/", 1)
        key = folder + "/" + ("<run>" if rel.startswith(("postings/", "runs/")) else name)
        out[key] = pd.concat([out[key], frame], ignore_index=True) if key in out else frame
    return {k: v.sort_values(list(v.columns)).reset_index(drop=True) for k, v in out.items()}


def assert_same_outputs(got: dict[str, pd.DataFrame], expected: dict[str, pd.DataFrame]) -> None:
    assert sorted(got) == sorted(expected)
    for key in expected:
        pd.testing.assert_frame_equal(got[key], expected[key], obj=key)


def same(a: pd.DataFrame | None, b: pd.DataFrame | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(a.equals(b))


# ------------------------------------------------------------------------------------ runs


def test_a_run_to_s3_gives_the_same_outputs_as_a_local_folder(filled: str, local_reference: dict[str, Any]) -> None:
    warehouse = Warehouse(filled)
    assert warehouse.filesystem.type_name == "s3"
    assert_same_outputs(outputs(warehouse), local_reference["after_b"])
    leftovers = warehouse.filesystem.get_file_info(pafs.FileSelector(warehouse.root, recursive=True))
    assert not [i.path for i in leftovers if i.type == pafs.FileType.File
                and i.path[len(warehouse.root) + 1:].startswith(("_staging", "_journal", "_locks"))]


def test_readers_read_the_s3_datasets(filled: str, local_reference: dict[str, Any]) -> None:
    warehouse = Warehouse(filled)
    local = Warehouse(local_reference["folder"])
    expected = local.read("adjustments").sort_values(["adjustment_id"]).reset_index(drop=True)
    # the warehouse's own reader
    got = warehouse.read("adjustments").sort_values(["adjustment_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)
    # pyarrow, from a plain URI (endpoint and keys from the environment), hive partitions discovered
    dataset = ds.dataset(f"{filled}/adjustments", format="parquet", partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == len(expected) > 0
    assert {"plant_id", "business_date", "qty", "adjustment_id"} <= set(table.column_names)
    # pandas, through the pyarrow filesystem
    frame = pd.read_parquet(f"{warehouse.root}/consumption", filesystem=warehouse.filesystem)
    assert len(frame) == len(local.read("consumption")) > 0 and "business_date" in frame.columns
    # DuckDB, scanning the pyarrow dataset (its httpfs extension is not installed offline)
    totals = duckdb.sql("SELECT plant_id, kind, round(sum(qty), 6) AS qty FROM dataset "
                        "GROUP BY ALL ORDER BY ALL").df()
    by_pandas = expected.groupby(["plant_id", "kind"], as_index=False)["qty"].sum().round(6)
    assert totals["qty"].tolist() == by_pandas["qty"].tolist()
    assert len(duckdb.sql("SELECT * FROM dataset WHERE kind = 'backflush_issue'").fetchall()) == \
        int((expected["kind"] == "backflush_issue").sum())


def test_a_commit_killed_half_way_is_rolled_forward_and_posts_once(
    endpoint: str, landings: tuple[Path, Path], local_reference: dict[str, Any]
) -> None:
    a, b = landings
    uri = f"s3://{new_bucket(endpoint)}/warehouse"
    warehouse = Warehouse(uri)
    job.run_dates(config(a, uri), DATES)
    old = files(warehouse)

    pause_after = 6
    killed_run = _run_killed_during_commit(uri, b, DATES[-1], pause_after)

    # the journal and the stale lock of the dead run are there; half of its moves are done
    fs = warehouse.filesystem
    journals = fs.get_file_info(pafs.FileSelector(warehouse.path("_journal")))
    assert [i.base_name for i in journals] == [f"{killed_run}.json"]
    with fs.open_input_stream(journals[0].path) as stream:
        journal = json.loads(stream.read())
    staged_left = [s for s, _ in journal["moves"] if fs.get_file_info(s).type == pafs.FileType.File]
    assert len(staged_left) == len(journal["moves"]) - pause_after > 0
    assert fs.get_file_info(pafs.FileSelector(warehouse.path("_locks"))), "the dead run's lock is left"
    torn = files(warehouse)  # every published object reads as whole Parquet

    job.run_dates(config(b, uri), DATES[-1:])  # takes over the stale lock, rolls forward, runs
    new = files(warehouse)
    for path in sorted(set(torn) | set(old)):
        assert same(torn.get(path), old.get(path)) or same(torn.get(path), new.get(path)), path
    assert any(not same(old.get(p), new.get(p)) and same(torn.get(p), new.get(p)) for p in new), "some moved"
    assert any(not same(old.get(p), new.get(p)) and same(torn.get(p), old.get(p)) for p in new), "some not yet"
    for internal in ("_journal", "_staging", "_locks"):
        left = fs.get_file_info(pafs.FileSelector(warehouse.path(internal), recursive=True, allow_not_found=True))
        assert not [i for i in left if i.type == pafs.FileType.File], internal

    # posted exactly once: the same outputs and ledger as the uninterrupted local runs (plus one runs row)
    final = outputs(warehouse)
    expected = local_reference["after_b"]
    assert_same_outputs({k: v for k, v in final.items() if not k.startswith("runs/")},
                        {k: v for k, v in expected.items() if not k.startswith("runs/")})
    runs = warehouse.read("runs")
    assert killed_run in set(runs["run_id"]) and len(runs) == 3
    postings = warehouse.read("postings")
    assert set(postings["run_id"]) <= set(runs["run_id"]) - {runs.sort_values("started_at")["run_id"].iloc[-1]}
    key = ["plant_id", "business_date", "location_id", "item_id", "kind"]
    ledger = postings.groupby(key)["qty_delta"].sum()
    adjustments = warehouse.read("adjustments").set_index(key)["qty"]
    both = pd.concat([ledger.rename("ledger"), adjustments.rename("adjusted")], axis=1).fillna(0.0)
    assert (both["ledger"] - both["adjusted"]).abs().max() < 1e-9


def _run_killed_during_commit(uri: str, landing: Path, date: dt.date, pause_after: int) -> str:
    """`backflush run` in a real subprocess, SIGKILLed while its commit pauses after some moves; its run id."""
    process = subprocess.Popen(
        faults.command(pause_after, "--quiet", "run", "--landing", str(landing), "--warehouse", uri,
                       "--date", date.isoformat()),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    said = []
    try:
        deadline = time.monotonic() + 60
        assert process.stderr is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stderr], [], [], 1.0)
            if not ready:
                continue
            line = process.stderr.readline()
            if not line:
                break  # ended without pausing
            said.append(line)
            if line.startswith(faults.PAUSED):
                break
        assert said and said[-1].startswith(faults.PAUSED), "".join(said)[-3000:]
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)  # reaped: its pid is gone, so its lock is stale
    warehouse = Warehouse(uri)
    journals = warehouse.filesystem.get_file_info(pafs.FileSelector(warehouse.path("_journal")))
    return journals[0].base_name.removesuffix(".json")


# ------------------------------------------------------------------------------------ locks


def test_create_if_absent_is_a_conditional_put(endpoint: str) -> None:
    warehouse = Warehouse(f"s3://{new_bucket(endpoint)}/wh")
    path = warehouse.path("_locks", "plant_id=P1.lock")
    assert objectstore.create_if_absent(warehouse.uri, warehouse.filesystem, path, b"first") is True
    assert objectstore.create_if_absent(warehouse.uri, warehouse.filesystem, path, b"second") is False
    with warehouse.filesystem.open_input_stream(path) as stream:
        assert stream.read() == b"first"
    warehouse.filesystem.delete_file(path)
    assert objectstore.create_if_absent(warehouse.uri, warehouse.filesystem, path, b"third") is True


def test_plant_locks_on_s3_are_exclusive_and_stale_ones_are_taken_over(endpoint: str) -> None:
    uri = f"s3://{new_bucket(endpoint)}/wh"
    with Warehouse(uri).locked(["P1", "P2"], "run-a"):
        with pytest.raises(LockError, match="plant P2 is locked by run run-a"):
            with Warehouse(uri).locked(["P2"], "run-b"):
                pass
        with Warehouse(uri).locked(["P3"], "run-c"):  # other plants are free
            pass
    with Warehouse(uri).locked(["P2"], "run-b"):  # released
        pass
    # a lock left by a process that is gone (same host) is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    warehouse = Warehouse(uri)
    stale = json.dumps({"run_id": "run-dead", "pid": int(dead.stdout), "host": socket.gethostname(),
                        "since": "2026-01-01T00:00:00+00:00"}).encode()
    assert objectstore.create_if_absent(warehouse.uri, warehouse.filesystem, warehouse.path("_locks", "plant_id=P1.lock"), stale)
    with Warehouse(uri).locked(["P1"], "run-d"):
        pass


def test_a_store_that_ignores_conditional_writes_is_refused() -> None:
    class IgnoresConditions:
        def put_object(self, **_: object) -> dict[str, object]:
            return {}

        def delete_object(self, **_: object) -> None:
            pass

    with pytest.raises(WarehouseError, match="ignores If-None-Match"):
        objectstore._check_conditional_writes("s3://b/wh", IgnoresConditions(), "b", "wh/_locks")


# ------------------------------------------------------------------------------------ credentials


def test_uri_query_parameters_configure_the_endpoint_and_secrets_are_never_printed(
    endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = new_bucket(endpoint)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    hostport = endpoint.removeprefix("http://")
    secret = "Vry-S3cret-Key"
    uri = f"s3://testing:{secret}@{bucket}/wh?endpoint_override={hostport}&scheme=http&region=us-east-1"
    warehouse = Warehouse(uri)
    with warehouse.locked(["P1"], "run-q"):  # boto3 is configured from the same URI
        assert warehouse.exists(warehouse.path("_locks", "plant_id=P1.lock"))
    assert secret not in repr(warehouse) and secret not in warehouse.display_uri
    assert warehouse.display_uri == f"s3://***@{bucket}/wh?endpoint_override={hostport}&scheme=http&region=us-east-1"
    with pytest.raises(WarehouseError) as info:
        Warehouse(uri.replace("region=us-east-1", "region=us-east-1&no_such_option=1"))
    assert secret not in str(info.value) and "***" in str(info.value)
    assert objectstore.redact_uri("s3://bucket/p?session_token=abc123&scheme=http") == \
        "s3://bucket/p?session_token=***&scheme=http"
    assert objectstore.redact_uri("/local/path") == "/local/path"
    assert objectstore.scrub(f"failed for {uri}: denied for {secret}", uri).count(secret) == 0
