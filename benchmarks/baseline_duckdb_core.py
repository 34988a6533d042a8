"""Baseline C: the backflush core as one plain DuckDB SQL script (baseline_duckdb_core.sql).

What an analyst would write first instead of the pipeline: no validation, no error handling, no
ledger or variance, just the core (see the script's header). Run by the duckdb Python package:

    python benchmarks/baseline_duckdb_core.py --landing L --out DIR [--threads N]

Writes DIR/consumption and DIR/adjustments (Hive-partitioned by plant_id, business_date) and
DIR/stats.json (seconds, rows, DuckDB threads).
"""

from __future__ import annotations

import argparse
import json
import shutil
import string
import time
from pathlib import Path

import duckdb

SCRIPT = Path(__file__).resolve().with_suffix(".sql")


def sql_text(landing: Path, out: Path) -> str:
    """The script with its ${landing} and ${out} filled in (quotes doubled for SQL literals)."""
    quote = lambda p: str(p).replace("'", "''")  # noqa: E731
    return string.Template(SCRIPT.read_text()).substitute(landing=quote(landing), out=quote(out))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: every core)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    con.execute(sql_text(args.landing.resolve(), args.out.resolve()))
    rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("completions", "requirements", "demand", "flows")}
    stats = {"wall_s": round(time.perf_counter() - t0, 3), "rows": rows, "duckdb": duckdb.__version__,
             "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}  # type: ignore[index]
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
