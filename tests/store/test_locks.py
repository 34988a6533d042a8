"""Two runs for the same plant cannot post twice: a plant lock, a clear message for the run that
stops, and a wait (lock_timeout_seconds) for the run that may wait.

The concurrent runs are real `backflush run` processes. The first is held inside its commit by
a fault injection point of the warehouse's commit (tests/support/faults.py), so the overlap is certain, not a
matter of timing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from pipeline.errors import LockError
from pipeline.store.warehouse import Warehouse
from tests.support import faults
from tests.support.landing import config_for, make_landing

P, L = "P1", "L1"
DATE = "2026-03-02"
READY = "ready to run"
# the CLI as installed, preceded by a line on stdout once the imports are done (the CLI imports the
# engine only after parsing its arguments: imported here first, so READY means ready to run)
CLI = (f"import sys\nfrom pipeline import cli, job\nprint({READY!r}, flush=True)\n"
       "sys.exit(cli.main(sys.argv[1:]))")


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    return make_landing(
        tmp_path,
        items=[{"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true",
                "uom_decimals": 0},
               {"item_id": "RM", "uom": "KG", "standard_cost": 3, "phantom": "false", "backflush": "true",
                "uom_decimals": 3}],
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 5}],
        completions=[{"completion_id": "C1", "plant_id": P, "location_id": L, "item_id": "FG", "qty_good": 100,
                      "completed_at": f"{DATE}T10:00:00Z"}],
    )


def backflush(tmp_path: Path, landing: Path, *extra: str, pause: bool = False) -> subprocess.Popen[str]:
    """Start `backflush run` for P1 on DATE in a process of its own."""
    arguments = ["--quiet", "run", "--landing", str(landing), "--warehouse", str(tmp_path / "warehouse"),
                 "--date", DATE, "--plant", P, *extra]
    # paused: stop for good after the first file of the commit is published
    command = faults.command(1, *arguments) if pause else [sys.executable, "-c", CLI, *arguments]
    return subprocess.Popen(command, cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def wait_for_line(stream: object, text: str, proc: subprocess.Popen[str]) -> None:
    lines = []
    while True:
        line = stream.readline()  # type: ignore[attr-defined]
        lines.append(line)
        if text in line:
            return
        if not line:
            proc.kill()
            raise AssertionError(f"process ended before {text!r}: {''.join(lines)}{proc.stderr.read()}")  # type: ignore[union-attr]


def read(tmp_path: Path, dataset: str) -> pd.DataFrame:
    return Warehouse(str(tmp_path / "warehouse")).read(dataset)


def test_two_concurrent_runs_post_once(tmp_path: Path, landing: Path) -> None:
    config_file = tmp_path / "wait.toml"
    config_file.write_text("lock_timeout_seconds = 90\n")

    first = backflush(tmp_path, landing, pause=True)
    try:
        wait_for_line(first.stderr, f"{faults.PAUSED} 1 moves", first)  # it holds P1's lock, mid-commit
        waiter = backflush(tmp_path, landing, "--config", str(config_file))
        stopper = backflush(tmp_path, landing)  # default lock_timeout_seconds = 0: stop at once
        _, stop_err = stopper.communicate(timeout=120)
        assert stopper.returncode == 75  # EX_TEMPFAIL: try again later
        message = stop_err.strip()
        assert len(message.splitlines()) == 1, message
        assert message.startswith(f"backflush: plant {P} is locked by run ")
        assert f"(pid {first.pid} on " in message and "try again when it has finished" in message

        wait_for_line(waiter.stdout, READY, waiter)
        time.sleep(1.0)  # the waiter is now inside run_dates, polling the lock
        assert waiter.poll() is None  # still waiting, not failed
    finally:
        first.kill()  # the first run dies half-way through its commit
        first.wait()
    released = pd.Timestamp.now(tz="UTC")
    _, wait_err = waiter.communicate(timeout=120)
    assert waiter.returncode == 0, wait_err

    runs = read(tmp_path, "runs").set_index("run_id")
    assert len(runs) == 2  # the first run (rolled forward by the waiter) and the waiter; not the stopper
    postings = read(tmp_path, "postings")
    assert len(postings) == 2  # FG +100 and RM -500, once
    first_run = postings["run_id"].iloc[0]
    assert set(postings["run_id"]) == {first_run}
    assert postings.set_index("item_id")["qty_delta"].to_dict() == {"FG": 100.0, "RM": -500.0}  # 100 FG x 5 kg
    waited = runs.drop(index=first_run).iloc[0]
    assert dict(waited["rows_written"]).get("postings", 0) == 0  # the waiter appended nothing
    assert waited["started_at"] < released < waited["finished_at"]  # it really waited for the lock
    assert list((tmp_path / "warehouse" / "_locks").glob("*.lock")) == []  # and released it


def test_a_run_stops_with_a_clear_message_when_the_plant_is_locked(tmp_path: Path, landing: Path) -> None:
    config = config_for(tmp_path, landing)
    warehouse = Warehouse(config.warehouse)
    with warehouse.locked([P], "the-other-run"):
        with pytest.raises(LockError, match=rf"plant {P} is locked by run the-other-run \(pid {os.getpid()} on "):
            job.run_dates(config, [dt.date(2026, 3, 2)], plants=[P])
        start = time.monotonic()
        with pytest.raises(LockError):
            job.run_dates(config.replace(lock_timeout_seconds=0.5), [dt.date(2026, 3, 2)], plants=[P])
        assert time.monotonic() - start >= 0.5  # it waited that long before giving up
    assert read(tmp_path, "postings").empty and read(tmp_path, "runs").empty  # nothing was written
    result = job.run_dates(config, [dt.date(2026, 3, 2)], plants=[P])  # released: the run goes ahead
    assert result.rows_written["postings"] == 2  # FG and RM


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path, landing: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer exists
    lock = tmp_path / "warehouse" / "_locks" / f"plant_id={P}.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"run_id": "crashed", "pid": gone.pid, "host": socket.gethostname(),
                                "since": "2026-03-02T00:00:00+00:00"}))
    result = job.run_dates(config_for(tmp_path, landing), [dt.date(2026, 3, 2)], plants=[P])
    assert result.rows_written["postings"] == 2
    assert not lock.exists()


def test_a_lock_of_another_host_expires_only_with_a_lease(tmp_path: Path) -> None:
    """A worker on another machine died holding P1: its pid means nothing here. Without a lease the
    lock stands; with `stale_after` shorter than its age it is taken over."""
    warehouse = Warehouse(str(tmp_path / "wh"))
    lock = tmp_path / "wh" / "_locks" / "plant_id=P1.lock"
    lock.parent.mkdir(parents=True)
    two_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).isoformat(timespec="seconds")
    lock.write_text(json.dumps({"run_id": "r-dead", "pid": 1, "host": "another-host", "since": two_hours_ago}))
    with pytest.raises(LockError, match="r-dead"), warehouse.locked(["P1"], "r-new"):
        pass
    with pytest.raises(LockError), warehouse.locked(["P1"], "r-new", stale_after=3 * 3600):
        pass  # 2 h old, 3 h lease: still held
    with warehouse.locked(["P1"], "r-new", stale_after=3600):
        assert json.loads(lock.read_text())["run_id"] == "r-new"
    assert not lock.exists()
