"""End to end under a real Airflow: scheduler, dag-processor and API server as separate processes.

Nothing here calls dag.test(). The test starts the three Airflow components on a throwaway
AIRFLOW_HOME with the LocalExecutor and a fresh PostgreSQL database as the metadata DB (SQLite
cannot serve the LocalExecutor), then drives the two DAGs the way an operator does, with the
commands of docs/airflow.md ("A real scheduler, step by step"):

- a first manual run of one plant (a new deployment's first run: see "The first run: one plant");
- `airflow backfill create` over 2026-01-05..2026-01-07 (three backfill runs, one per date);
- `airflow dags trigger backflush_nightly` for the business date 2026-01-08;
- `POST /api/v2/assets/events` on `backflush.landing.completions` naming 2026-01-09, which makes
  the scheduler create an asset-triggered run of `backflush_on_arrival`;

waits for each step's runs to succeed before the next, and checks that the warehouse then holds exactly what
`backflush backfill --start 2026-01-05 --end 2026-01-09` writes into an empty warehouse.

Marked `scheduler`: `make test` runs it (about 3-5 minutes on 2 busy cores); skip it with
`-m "not scheduler"`. It skips when PostgreSQL is not reachable, unless BACKFLUSH_REQUIRE_SCHEDULER
is set (.ci/run sets it: in CI it fails instead).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pipeline.store.warehouse import Warehouse
from tests.e2e.test_dags import COMPARED, read, write_config
from tests.support.airflow_env import AIRFLOW, airflow_environment

pytestmark = pytest.mark.scheduler

PG = "postgres@127.0.0.1:5432"
START = dt.date(2026, 1, 5)
DAYS = 5  # 2026-01-05 .. 2026-01-09
BACKFILL = ("2026-01-05", "2026-01-07")  # three backfill runs
NIGHTLY_DATE = "2026-01-08"  # a manual nightly run
ARRIVAL_DATE = "2026-01-09"  # an asset event
USER = "e2e"
TIMEOUT = 600  # seconds per step; all steps together take 1-3 minutes on 2 busy cores


# ------------------------------------------------------------------ helpers


def pg_admin(sql: str) -> None:
    """Run one statement on the server's `postgres` database, outside a transaction."""
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow(env: dict[str, str], *args: str, timeout: float = 180) -> str:
    """One `airflow ...` command; its stdout. Fails the test with its output if it fails."""
    done = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def backflush(*args: str) -> str:
    """One `backflush ...` command (-q: the summary only); its stdout."""
    cli = Path(sys.executable).with_name("backflush")
    done = subprocess.run([str(cli), "-q", *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"backflush {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


class Api:
    """The public REST API (v2) with a JWT from the simple auth manager's POST /auth/token."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base, self.username, self.password = base, username, password
        self.token: str | None = None

    def call(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            if self.token is None:
                self.token = self.call("POST", "/auth/token", {"username": self.username,
                                                               "password": self.password}, auth=False)["access_token"]
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def runs(self, dag_id: str, run_type: str | None = None) -> list[dict[str, Any]]:
        query = f"?run_type={run_type}" if run_type else ""
        return list(self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns{query}")["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id)}/taskInstances?limit=100"
        return list(self.call("GET", path)["task_instances"])


def wait_for(what: str, check: Any, timeout: float, logs: Path, interval: float = 3.0) -> Any:
    """Poll check() until it returns something truthy; fail with the components' log tails."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            value = None  # the API server is still starting
        if value:
            return value
        time.sleep(interval)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(logs.glob("*.log")))
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tails}")


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Stop each component, its process group and every process it started.

    LocalExecutor workers share the scheduler's process group, but each task process starts a
    session of its own: those are found as descendants (psutil, an Airflow dependency) first.
    """
    import psutil

    family: list[psutil.Process] = []
    for proc in processes:
        try:
            family += psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for proc in processes:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for child in family:
        try:
            child.terminate()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + 30
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    psutil.wait_procs(family, timeout=max(0.1, deadline - time.monotonic()))
    for proc in processes:  # the leader may be gone while members of its group linger
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for child in family:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


# ------------------------------------------------------------------ the stack


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Landing data, a config, a metadata DB and the three running Airflow components."""
    try:
        pg_admin("SELECT 1")
    except Exception as exc:
        if os.environ.get("BACKFLUSH_REQUIRE_SCHEDULER"):
            raise
        pytest.skip(f"PostgreSQL is not reachable on {PG} ({type(exc).__name__}): start it with "
                    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    root = tmp_path_factory.mktemp("scheduler")
    landing = root / "landing"
    backflush("generate", "--out", str(landing), "--items", "12", "--completions", "300", "--days", str(DAYS),
              "--seed", "7", "--start", START.isoformat(), "--plants", "2", "--bad-rows", "--format", "csv")
    config = write_config(root / "backflush.toml", landing, root / "warehouse", lock_timeout_seconds=600)

    database = f"airflow_e2e_{os.getpid()}"
    home, logs = root / "airflow-home", root / "logs"
    home.mkdir()
    logs.mkdir()
    port = free_port()
    password = secrets.token_urlsafe(16)
    (home / "passwords.json").write_text(json.dumps({USER: password}))
    env = airflow_environment(
        home,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"postgresql+psycopg://{PG}/{database}",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=f"postgresql+psycopg_async://{PG}/{database}",
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__WORKERS="1",
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__LOGGING__LOGGING_LEVEL="INFO",
        BACKFLUSH_CONFIG=str(config),
    )
    pg_admin(f'CREATE DATABASE "{database}"')
    processes: list[subprocess.Popen[bytes]] = []
    # a CI timeout sends SIGTERM: end like Ctrl-C, through the finally below, not leaving the
    # components (each in a session of its own) and the database behind
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        airflow(env, "db", "migrate", timeout=300)
        airflow(env, "pools", "set", "backflush_sources", "2", "backflush: concurrent reads of the landing data")
        for component in (["dag-processor"], ["scheduler"], ["api-server", "--port", str(port)]):
            with (logs / f"{component[0]}.log").open("wb") as out:  # the child keeps its own descriptor
                processes.append(subprocess.Popen([AIRFLOW, *component], env=env, stdout=out,
                                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                  start_new_session=True))
        api = Api(f"http://127.0.0.1:{port}", USER, password)
        yield {"root": root, "landing": landing, "config": config, "env": env, "api": api, "logs": logs,
               "processes": processes}
    finally:
        try:
            stop(processes)
        finally:
            pg_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            signal.signal(signal.SIGTERM, previous)


def trigger(env: dict[str, str], conf: dict[str, Any]) -> str:
    """`airflow dags trigger backflush_nightly --conf ...`; the new run's id."""
    out = airflow(env, "dags", "trigger", "backflush_nightly", "--conf", json.dumps(conf), "--output", "json")
    (triggered,) = json.loads(out.strip().splitlines()[-1])  # the last line; log lines may precede it
    return str(triggered["dag_run_id"])


def finished(api: Api, dag_id: str, run_ids: list[str]) -> dict[str, str] | None:
    """The states of the runs once none is queued or running; None before."""
    states = {r["dag_run_id"]: r["state"] for r in api.runs(dag_id) if r["dag_run_id"] in run_ids}
    if len(states) < len(run_ids) or any(s in ("queued", "running") for s in states.values()):
        return None
    return states


@pytest.fixture(scope="module")
def world(stack: dict[str, Any]) -> dict[str, Any]:
    """Drive the DAGs as docs/airflow.md does and wait for every run; what happened."""
    api, env, logs = stack["api"], stack["env"], stack["logs"]
    started = time.monotonic()
    # the dag-processor has parsed dags/ and the API server answers
    wait_for("both DAGs to be parsed", lambda: {d["dag_id"] for d in api.call("GET", "/api/v2/dags")["dags"]}
             >= {"backflush_nightly", "backflush_on_arrival"}, 240, logs)
    airflow(env, "dags", "unpause", "backflush_nightly")
    airflow(env, "dags", "unpause", "backflush_on_arrival")

    # Unpausing a catchup=False DAG makes the scheduler create the run of the latest interval
    # (yesterday, UTC) at once. Its Chicago plant would wait for its day end (up to 06:30 UTC)
    # and, with max_active_runs=1, hold the manual run behind it: mark it failed, as an
    # operator who only wants the demo dates would.
    scheduled = wait_for("the scheduled run of the latest interval",
                         lambda: api.runs("backflush_nightly", "scheduled"), 120, logs, interval=1)
    for run in scheduled:
        api.call("PATCH", f"/api/v2/dags/backflush_nightly/dagRuns/{urllib.request.quote(run['dag_run_id'])}",
                 {"state": "failed"})

    # 0. The first run of a new deployment: one plant. Airflow creates an asset that a task
    # announces through an alias when its first event arrives, and two plant tasks announcing the
    # same new asset at once race to create it: the loser is marked failed, without a retry
    # (Airflow 3.3.2: IntegrityError on idx_asset_name_uri_unique in the execution API).
    first_id = trigger(env, {"business_date": BACKFILL[0], "plants": ["P1"]})
    states = wait_for("the first run", lambda: finished(api, "backflush_nightly", [first_id]), TIMEOUT, logs)
    # created on their first event, but not always listed as active yet (only_active defaults to true)
    listed = api.call("GET", "/api/v2/assets?name_pattern=backflush.&only_active=false")["assets"]
    outputs = sorted(a["name"] for a in listed)

    # Each step waits for its runs before the next: a row whose date cannot be read is kept in the
    # quarantine partition of the date of the last run that saw it (one row, not one per night), so
    # only runs in date order leave the warehouse equal to one CLI backfill of the range.
    # 1. history: one backfill run per date, oldest first
    airflow(env, "backfill", "create", "--dag-id", "backflush_nightly", "--from-date", BACKFILL[0],
            "--to-date", BACKFILL[1], "--max-active-runs", "1")
    backfill_ids = [r["dag_run_id"] for r in api.runs("backflush_nightly", "backfill")]
    states |= wait_for("the backfill runs", lambda: finished(api, "backflush_nightly", backfill_ids), TIMEOUT, logs)
    # 2. one date by hand
    manual_id = trigger(env, {"business_date": NIGHTLY_DATE})
    states |= wait_for("the manual run", lambda: finished(api, "backflush_nightly", [manual_id]), TIMEOUT, logs)
    # 3. new landing data announced by the source side: an asset event through the REST API
    asset = api.call("GET", "/api/v2/assets?name_pattern=backflush.landing.completions")["assets"][0]
    event = api.call("POST", "/api/v2/assets/events",
                     {"asset_id": asset["id"], "extra": {"business_dates": [ARRIVAL_DATE]}})
    arrival = wait_for("the asset-triggered run", lambda: api.runs("backflush_on_arrival", "asset_triggered"),
                       120, logs)
    arrival_ids = [r["dag_run_id"] for r in arrival]
    states |= wait_for("the arrival run", lambda: finished(api, "backflush_on_arrival", arrival_ids), TIMEOUT, logs)
    tis = {run_id: api.task_instances("backflush_nightly", run_id) for run_id in [first_id, *backfill_ids, manual_id]}
    tis |= {run_id: api.task_instances("backflush_on_arrival", run_id) for run_id in arrival_ids}
    runs = {r["dag_run_id"]: r for dag_id in ("backflush_nightly", "backflush_on_arrival") for r in api.runs(dag_id)}

    # the CLI, over the same range, into an empty warehouse
    cli_wh = stack["root"] / "cli-warehouse"
    backflush("backfill", "--landing", str(stack["landing"]), "--warehouse", str(cli_wh), "--start", BACKFILL[0],
              "--end", ARRIVAL_DATE)
    return {"scheduled": scheduled, "first_id": first_id, "outputs": outputs, "backfill_ids": backfill_ids, "manual_id": manual_id, "event": event,
            "arrival_ids": arrival_ids, "states": states, "tis": tis, "runs": runs,
            "warehouse": stack["root"] / "warehouse", "cli_warehouse": cli_wh,
            "seconds": round(time.monotonic() - started)}


# ------------------------------------------------------------------ tests


def test_the_scheduler_created_the_latest_scheduled_run_on_unpause(world: dict[str, Any]) -> None:
    (run,) = world["scheduled"]
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)  # catchup=False: the latest full day
    assert dt.datetime.fromisoformat(run["logical_date"]).date() == yesterday
    assert world["runs"][run["dag_run_id"]]["state"] == "failed"  # as marked: none of its work is compared


def test_the_first_run_registers_the_output_assets(world: dict[str, Any]) -> None:
    assert world["outputs"] == ["backflush.adjustments", "backflush.landing.completions", "backflush.postings",
                                "backflush.variance"]


def test_every_run_succeeded(world: dict[str, Any]) -> None:
    assert len(world["backfill_ids"]) == 3  # 2026-01-05, -06, -07
    assert len(world["arrival_ids"]) == 1  # one event, one run
    assert set(world["states"].values()) == {"success"}, world["states"]
    for run_id, tis in world["tis"].items():
        bad = [(t["task_id"], t["rendered_map_index"], t["state"]) for t in tis if t["state"] != "success"]
        assert not bad, f"{run_id}: {bad}"


def test_runs_have_the_types_and_dates_asked_for(world: dict[str, Any]) -> None:
    runs = world["runs"]
    backfill_dates = sorted(dt.datetime.fromisoformat(runs[r]["logical_date"]).date().isoformat()
                            for r in world["backfill_ids"])
    assert backfill_dates == ["2026-01-05", "2026-01-06", "2026-01-07"]  # logical date = business date
    manual = runs[world["manual_id"]]
    assert manual["run_type"] == "manual" and manual["conf"] == {"business_date": NIGHTLY_DATE}
    (arrival_id,) = world["arrival_ids"]
    assert runs[arrival_id]["run_type"] == "asset_triggered"
    assert world["event"]["extra"]["business_dates"] == [ARRIVAL_DATE]


def test_each_plant_ran_as_its_own_task(world: dict[str, Any]) -> None:
    for run_id, tis in world["tis"].items():
        plants = sorted(t["rendered_map_index"] for t in tis if t["task_id"] == "process_plant")
        expected = ["P1"] if run_id == world["first_id"] else ["P1", "P2"]  # the demo landing has two plants
        assert plants == expected, run_id


def test_warehouse_equals_a_cli_backfill_of_the_same_range(world: dict[str, Any]) -> None:
    for dataset in COMPARED:
        airflow_rows, cli_rows = read(world["warehouse"], dataset), read(world["cli_warehouse"], dataset)
        assert len(airflow_rows) > 0 or dataset == "bom_accuracy", f"{dataset} is empty"
        pd.testing.assert_frame_equal(airflow_rows, cli_rows, obj=dataset)


def test_each_date_was_run_by_the_run_that_asked_for_it(world: dict[str, Any]) -> None:
    history = Warehouse(str(world["warehouse"])).read("runs")
    by = {}
    for command, plants, dates in zip(history["command"], history["plants"], history["business_dates"],
                                      strict=True):
        for day in dates:
            by.setdefault(pd.Timestamp(day).date().isoformat(), set()).add((command, ",".join(plants)))
    # backfill runs: command backfill; the manual and the asset-triggered runs: command run (with late
    # data, which finds nothing here: the landing data did not change between runs)
    assert by == {
        "2026-01-05": {("run", "P1"), ("backfill", "P1"), ("backfill", "P2")},  # the first run, then the backfill
        "2026-01-06": {("backfill", "P1"), ("backfill", "P2")},
        "2026-01-07": {("backfill", "P1"), ("backfill", "P2")},
        NIGHTLY_DATE: {("run", "P1"), ("run", "P2")},
        ARRIVAL_DATE: {("run", "P1"), ("run", "P2")},
    }
