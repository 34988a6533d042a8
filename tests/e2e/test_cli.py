"""The `backflush` command end to end on generated landing data."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import tomllib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest

from pipeline import cli
from pipeline.intake import scan
from pipeline.store.warehouse import Warehouse


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "landing"
    assert cli.main(["generate", "--out", str(out), "--items", "30", "--completions", "4000", "--days", "6",
                     "--seed", "3", "--start", "2026-02-02", "--bad-rows", "--format", "csv"]) == 0
    return out


def test_backfill_then_rerun_posts_nothing_twice(generated: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    wh = tmp_path / "wh"
    args = ["backfill", "--landing", str(generated), "--warehouse", str(wh), "--start", "2026-02-02",
            "--end", "2026-02-07"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "quarantined:" in out and "adjustments:" in out and "top components by consumed value" in out
    warehouse = Warehouse(str(wh))
    postings = warehouse.read("postings")
    adjustments = warehouse.read("adjustments")
    key = ["plant_id", "business_date", "location_id", "item_id", "kind"]
    ledger = postings.groupby(key)["qty_delta"].sum()
    assert (ledger - adjustments.set_index(key)["qty"]).abs().max() < 1e-9
    assert cli.main(args) == 0
    assert len(warehouse.read("postings")) == len(postings)
    runs = warehouse.read("runs")
    assert len(runs) == 2 and set(runs["status"]) == {"ok"}


def test_every_quarantine_code_and_nothing_lost(generated: Path, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert cli.main(["-q", "backfill", "--landing", str(generated), "--warehouse", str(wh),
                     "--start", "2026-02-02", "--end", "2026-02-07"]) == 0
    warehouse = Warehouse(str(wh))
    quarantine = warehouse.read("quarantine")
    assert {"INVALID", "UNKNOWN_ITEM", "NO_BOM", "BOM_CYCLE", "NO_UOM_CONVERSION", "DUPLICATE_ID"} <= set(
        quarantine["error_code"])
    assert quarantine["row"].map(lambda r: isinstance(json.loads(r), dict)).all()
    # Independently of the engine: every completion id in the landing ends in quarantine or in the
    # completions behind the production receipts (receipts sum to the accepted good units).
    raw = pd.concat([pd.read_csv(p, dtype=str) for p in sorted((generated / "completions").glob("*.csv"))])
    ids = set(raw["completion_id"])
    quarantined_ids = set(quarantine.loc[quarantine["table"] == "completions", "source_key"])
    accepted = raw[~raw["completion_id"].isin(quarantined_ids)].copy()
    accepted["recorded"] = pd.to_datetime(accepted["recorded_at"].fillna(accepted["completed_at"]), utc=True,
                                          format="ISO8601")
    latest = accepted.sort_values("recorded").groupby("completion_id").tail(1)
    assert ids == quarantined_ids | set(latest["completion_id"])
    received = warehouse.read("adjustments")
    received = received[received["kind"] == "production_receipt"]
    # group by plant-local business date and round each key half away from zero with Decimal
    zones = pd.read_csv(generated / "plants" / "plants.csv").set_index("plant_id")["timezone"]
    decimals = pd.read_csv(generated / "items" / "items.csv").set_index("item_id")["uom_decimals"]
    done = pd.to_datetime(latest["completed_at"], utc=True, format="ISO8601")
    latest["date"] = [t.tz_convert(zones.get(p, "UTC")).date() for t, p in zip(done, latest["plant_id"], strict=True)]
    latest = latest[latest["date"].between(dt.date(2026, 2, 2), dt.date(2026, 2, 7))]
    # a cancelled completion (both quantities 0) contributes nothing, not even a zero row
    units = pd.to_numeric(latest["qty_good"]) + pd.to_numeric(latest["qty_scrap"]).fillna(0)
    latest = latest[units > 0]
    expected = {}
    for (plant, date, location, item), rows in latest.groupby(["plant_id", "date", "location_id", "item_id"]):
        total = sum(Decimal(v) for v in rows["qty_good"])
        exponent = Decimal(1).scaleb(-int(decimals[item]))
        expected[(plant, date, location, item)] = float(total.quantize(exponent, rounding=ROUND_HALF_UP))
    got = {(r.plant_id, r.business_date.date(), r.location_id, r.item_id): r.qty for r in received.itertuples()}
    assert got == expected


def test_run_single_date_and_dry_run(generated: Path, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert cli.main(["-q", "run", "--landing", str(generated), "--warehouse", str(wh), "--date", "2026-02-03",
                     "--dry-run"]) == 0
    assert not (wh / "adjustments").exists()
    assert cli.main(["-q", "run", "--landing", str(generated), "--warehouse", str(wh), "--date", "2026-02-03",
                     "--plant", "P1"]) == 0
    adjustments = Warehouse(str(wh)).read("adjustments")
    assert set(adjustments["plant_id"]) == {"P1"}
    # a first run on a fresh warehouse also processes the look-back dates (7 days) that hold data:
    # P1's completions on 27 Jan .. 2 Feb in its own zone, here the generated data's first day
    raw = pd.concat([pd.read_csv(p, dtype=str) for p in sorted((generated / "completions").glob("*.csv"))])
    zone = pd.read_csv(generated / "plants" / "plants.csv").set_index("plant_id")["timezone"].get("P1", "UTC")
    p1 = raw[raw["plant_id"] == "P1"]
    local = pd.to_datetime(p1["completed_at"], utc=True, format="ISO8601", errors="coerce").dt.tz_convert(zone)
    earlier = {d.isoformat() for d in local.dt.date.dropna() if dt.date(2026, 1, 27) <= d < dt.date(2026, 2, 3)}
    got = set(adjustments["business_date"].dt.strftime("%Y-%m-%d"))
    assert "2026-02-03" in got and got <= earlier | {"2026-02-03"} and got - {"2026-02-03"}


def test_backfill_reads_landing_once(generated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real = scan.read_file
    monkeypatch.setattr(scan, "read_file", lambda path: reads.append(str(path)) or real(path))
    assert cli.main(["-q", "backfill", "--landing", str(generated), "--warehouse", str(tmp_path / "wh"),
                     "--start", "2026-02-02", "--end", "2026-02-07"]) == 0
    assert reads and len(reads) == len(set(reads))  # every file once


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) ")


def reason(proc: subprocess.CompletedProcess[str]) -> str:
    """The one line a failure says: stderr minus its log lines, which must all come before it."""
    lines = proc.stderr.splitlines()
    said = [line for line in lines if not LOG_LINE.match(line)]
    assert len(said) == 1 and lines[-1] == said[0], proc.stderr[-2000:]
    return said[0]


def test_failures_say_why_in_one_line_and_write_nothing(generated: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(generated), str(broken)], check=True)
    (broken / "completions" / "extra.csv").write_text("completion_id,plant_id\nX,P1\n")
    wh = tmp_path / "wh"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--landing", str(broken), "--warehouse",
                           str(wh), "--date", "2026-02-03"], capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""  # logs (not quiet) go to stderr, before the reason
    assert "required columns" in reason(proc) and "extra.csv" in reason(proc)
    assert not wh.exists() or not any(p.is_file() for p in wh.rglob("*.parquet"))
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--landing", str(tmp_path / "nowhere"),
                           "--warehouse", str(wh), "--date", "2026-02-03"], capture_output=True, text=True)
    assert proc.returncode == 1 and reason(proc).startswith("backflush: landing folder")
    (broken / "completions" / "extra.csv").write_bytes(b"PAR1 not really parquet")
    (broken / "completions" / "extra.csv").rename(broken / "completions" / "extra.parquet")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--landing", str(broken), "--warehouse",
                           str(wh), "--date", "2026-02-03"], capture_output=True, text=True)
    assert proc.returncode == 1 and "extra.parquet cannot be read" in reason(proc)


def test_demo_prints_its_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for heading in ("rows read:", "quarantined:", "adjustments:", "top components by consumed value", "variance:"):
        assert heading in out


# ------------------------------------------------------------------------------------ conventions

COMMANDS = ["run", "backfill", "generate", "report", "demo"]  # every subcommand the README lists
HEAVY = {"pandas", "pyarrow", "numpy", "pydantic", "pipeline.job", "pipeline.intake.accept", "pipeline.config"}


def backflush_command() -> list[str]:
    """The console script as installed (beside this interpreter), else the module."""
    script = Path(sys.executable).parent / "backflush"
    return [sys.executable, str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def test_help_lists_every_command_and_the_exit_codes() -> None:
    proc = subprocess.run([*backflush_command(), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == ""
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.startswith("    ") and line.split()}
    assert set(COMMANDS) <= listed, proc.stdout
    codes = {line.split()[0] for line in proc.stdout.split("exit codes:")[1].splitlines() if line.startswith("  ")
             and line.split()[0].isdigit()}
    assert codes == {"0", "1", "2", "75"}


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"], ["report", "--help"],
                                  ["run", "--date", "yesterday"]])
def test_help_version_and_usage_errors_import_nothing_heavy(args: list[str]) -> None:
    """`python -X importtime` lists every module the process imported (on stderr): none of the heavy ones."""
    command = backflush_command()
    proc = subprocess.run([command[0], "-X", "importtime", *command[1:], *args], capture_output=True, text=True)
    assert proc.returncode == (2 if "yesterday" in args else 0), proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "argparse" in imported  # the listing is real
    assert not imported & HEAVY, sorted(imported & HEAVY)
    assert not any(name.startswith(("pandas.", "pyarrow.", "numpy.", "pydantic.")) for name in imported)


def test_version_is_the_package_version() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    proc = subprocess.run([*backflush_command(), "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == f"backflush {pyproject['project']['version']}\n"


def test_global_flags_before_or_after_the_command() -> None:
    parser = cli.build_parser()
    before = parser.parse_args(["-q", "--config", "a.toml", "run", "--date", "2026-02-03"])
    after = parser.parse_args(["run", "--date", "2026-02-03", "-q", "--config", "a.toml"])
    assert vars(before) == vars(after)
    assert (after.quiet, after.verbose, after.config) == (True, False, "a.toml")
    # given before and not repeated after, a flag is not reset by the command's parser
    assert parser.parse_args(["-v", "backfill", "--start", "2026-02-02", "--end", "2026-02-03"]).verbose is True
    plain = parser.parse_args(["report", "--from", "2026-02-02", "--to", "2026-02-03", "--out", "r.html"])
    assert (plain.quiet, plain.verbose, plain.config) == (False, False, None)


def test_quiet_after_the_command_and_results_on_stdout_logs_on_stderr(generated: Path, tmp_path: Path) -> None:
    base = [*backflush_command(), "run", "--landing", str(generated), "--warehouse", str(tmp_path / "wh"),
            "--date", "2026-02-03"]
    quiet = subprocess.run([*base, "-q"], capture_output=True, text=True)
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    # another date (the same one again would stop early: an unchanged re-run, tests/stages/test_rerun.py)
    loud = subprocess.run([*base[:-1], "2026-02-04", "--dry-run"], capture_output=True, text=True)  # not a terminal: log lines
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert loud.stdout.startswith("dry run (nothing written) ") and "rows read:" in loud.stdout
    assert not any(LOG_LINE.match(line) for line in loud.stdout.splitlines())
    logged = loud.stderr.splitlines()
    assert logged and all(LOG_LINE.match(line) for line in logged), loud.stderr[-2000:]
    assert any("event=stage stage=read" in line for line in logged)


def test_usage_errors_exit_2() -> None:
    for args in (["run", "--date", "2026-02-30"], ["frobnicate"], ["--config", "x.toml", "generate", "--out", "o",
                 "--items", "1", "--completions", "1", "--days", "1", "--seed", "1"]):
        proc = subprocess.run([*backflush_command(), *args], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stdout == "", args
        assert re.match(r"backflush( run)?: error: ", proc.stderr.splitlines()[-1]), proc.stderr
