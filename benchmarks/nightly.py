"""The nightly scenario (`benchmarks/run.py --nightly`, issue 17 items 5 and 6): a nightly run after a year.

A landing of `--nightly-days` (365) days at the daily volume of the 30-day default (5M / 30 =
166,667 completions a day; `--nightly-daily-rows` for a smaller one), laid out the way an MES drop
lands: one Parquet file per day per table (completions/2026-01-05.parquet, stock_counts/...,
movements/...), each holding the rows that arrived that day (the UTC date of recorded_at, else
completed_at; of counted_at; of moved_at), plus a few late correction files
(completions/<day>-corrections.parquet: the later versions of earlier days' completions that
arrived on that day, one of them on the last day). The same files cut to the last 8 days are the
second landing. Rows that would arrive after the last business date has ended in their plant's
zone are left out: they are not there yet when the nightly run starts.

Each landing without its last day's files is backfilled once (`backflush backfill` up to the day
before) and the warehouse kept as a snapshot. Then, in `--nightly-pairs` interleaved rounds (the
order of the two landings alternates, so both see the machine's load alike), each from a fresh
hard-linked copy of the snapshots (the engine never writes a file in place; checked afterwards):

  nightly-365  `backflush run --date <last day>` on the 365-day landing: what the night brought;
  nightly-8    the same run on the 8-day landing and its warehouse: what it costs if only the
               night's files are read;
  rerun-365    the same run as nightly-365 again straight after it: nothing changed;
  planning     the DAG's `plants_to_process` task function (dags/backflush.py), called as Airflow
               calls it, on the 365-day landing and warehouse; timed in-process around the call
               (the interpreter's start and the Airflow import are not counted).

Medians over the rounds. Targets (issue 17): nightly(365) / nightly(8) <= 1.2; the unchanged
re-run <= 0.2 x nightly(365); planning <= 2 s. Memory (17.6): the peak of each run's process
group (proportional set sizes, measure.py), nightly(365) / nightly(8) as a ratio.

    python benchmarks/nightly.py split --src GENERATED --dst LANDINGS --days 365 --short 8
    python benchmarks/nightly.py plan --config CFG --date D --out plan.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from landing import LandingSpec, backflush_command, ensure_landing  # noqa: E402
from measure import GIB, Measurement, run_measured, tail  # noqa: E402

if TYPE_CHECKING:
    from run import Bench

NIGHTLY_RATIO_MAX = 1.2  # nightly(365 d) / nightly(8 d)
RERUN_RATIO_MAX = 0.2  # unchanged re-run / real nightly run
PLANNING_S_MAX = 2.0  # the DAG's plants_to_process on the 365-day landing
DEFAULT_DAILY_ROWS = 5_000_000 // 30  # the 30-day default's daily volume
SHORT_DAYS = 8  # the night plus the 7 days of the default look-back
LAYOUT_VERSION = 1  # bump when split_landing writes a different layout (the cache key)

TIMED = {"completions": ("recorded_at", "completed_at"), "stock_counts": ("counted_at",), "movements": ("moved_at",)}
_DAY_US = 86_400 * 1_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scenario's options, on run.py's parser."""
    g = parser.add_argument_group("nightly scenario (issue 17.5)")
    g.add_argument("--nightly", action="store_true",
                   help="run the nightly scenario (365-day landing, one file a day) instead of the 30-day comparison")
    g.add_argument("--nightly-daily-rows", type=int, default=DEFAULT_DAILY_ROWS,
                   help="completions a day (default %(default)s = the 30-day default's 5M / 30)")
    g.add_argument("--nightly-days", type=int, default=365, help="days of history in the landing (default 365)")
    g.add_argument("--nightly-pairs", type=int, default=3, help="interleaved rounds; medians count (default 3)")


# ------------------------------------------------------------------------------------ the landing


def _ts_us(column: Any) -> Any:
    """A timestamp column as int64 microseconds since the epoch (UTC), nulls as a very small number."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    values = pc.cast(pc.cast(column, pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(pc.fill_null(values, np.iinfo(np.int64).min).to_numpy(zero_copy_only=False))


def _later_versions(ids: Any, arrival: Any) -> Any:
    """True for every row that is not the first-recorded version of its completion_id (vectorised)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(ids)
    order = pc.sort_indices(pa.table({"id": ids, "at": arrival}), sort_keys=[("id", "ascending"), ("at", "ascending")])
    sorted_ids = pc.take(ids, order)
    later_sorted = np.zeros(n, dtype=bool)
    if n > 1:
        same = pc.equal(sorted_ids.slice(1), sorted_ids.slice(0, n - 1))
        later_sorted[1:] = np.asarray(pc.fill_null(same, False).to_numpy(zero_copy_only=False))
    later = np.empty(n, dtype=bool)
    later[np.asarray(order)] = later_sorted
    return later


def split_landing(src: Path, dst: Path, *, days: int, short_days: int, first: dt.date) -> dict[str, Any]:
    """Rewrite a generated landing (part files spread over the whole range) as daily drop files.

    dst/full: master data as generated; each timed table as one file per arrival day (UTC), the
    later versions of earlier days' completions on a few correction days in a file of their own.
    dst/short: the same files of the last `short_days` days. Two passes, one part file in memory at
    a time: each part is cut by day into pieces, then each day's pieces are joined into its file.
    """
    from zoneinfo import ZoneInfo

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    last = first + dt.timedelta(days=days - 1)
    correction_days = sorted({days // 3, (2 * days) // 3, days - 1})
    full, short = dst / "full", dst / "short"
    pieces = dst / "_pieces"
    for p in (full, short, pieces):
        shutil.rmtree(p, ignore_errors=True)
    zones = {r["plant_id"]: r.get("timezone") or "UTC"
             for f in sorted((src / "plants").glob("*.parquet")) for r in pq.read_table(f).to_pylist()}
    end = last + dt.timedelta(days=1)

    def cutoff_us(zone: str) -> int:
        instant = dt.datetime(end.year, end.month, end.day, tzinfo=ZoneInfo(zone))
        return int(instant.timestamp()) * 1_000_000

    names = sorted(zones)
    cutoffs = np.array([cutoff_us(zones[p]) for p in names] + [cutoff_us("UTC")], dtype=np.int64)
    first_us = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp()) * 1_000_000
    info: dict[str, Any] = {"rows": {}, "rows_left_out_arriving_later": {}, "files": {},
                            "correction_days": [(first + dt.timedelta(days=d)).isoformat() for d in correction_days]}
    for table in sorted(p.name for p in src.iterdir() if p.is_dir()):
        (full / table).mkdir(parents=True)
        (short / table).mkdir(parents=True)
        if table not in TIMED:
            for f in sorted((src / table).glob("*")):
                os.link(f, full / table / f.name)
                os.link(f, short / table / f.name)
            continue
        columns = TIMED[table]
        left_out = 0
        for k, f in enumerate(sorted((src / table).glob("*.parquet"))):
            t = pq.read_table(f)
            plant = np.asarray(pc.fill_null(pc.index_in(t["plant_id"], value_set=pa.array(names)), len(names))
                               .to_numpy(zero_copy_only=False))
            limit = cutoffs[plant]
            times = [_ts_us(t[c]) for c in columns]
            floor = np.iinfo(np.int64).min
            arrival = times[0]
            for other in times[1:]:
                arrival = np.where(arrival == floor, other, arrival)
            keep = arrival < limit
            for values in times[1:]:  # completed_at, too: nothing completed after the night has ended
                keep &= values < limit
            day = np.clip((arrival - first_us) // _DAY_US, 0, days - 1)  # a null time: the first day
            group = day * 2
            if table == "completions":
                done_day = (times[1] - first_us) // _DAY_US
                late = _later_versions(t["completion_id"], pa.array(arrival)) & (day > done_day)
                group = group + (late & np.isin(day, correction_days))
            left_out += int((~keep).sum())
            t = t.append_column("__arrival", pa.array(arrival)).append_column("__group", pa.array(group))
            t = t.filter(pa.array(keep)).sort_by([("__group", "ascending"), ("__arrival", "ascending")])
            g = np.asarray(t["__group"].to_numpy())
            bounds = np.flatnonzero(np.diff(g)) + 1
            starts = np.concatenate([[0], bounds]) if len(g) else np.array([], dtype=np.int64)
            stops = np.concatenate([bounds, [len(g)]]) if len(g) else np.array([], dtype=np.int64)
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):  # one slice per day, not per row
                folder = pieces / table / f"{int(g[a]):05d}"
                folder.mkdir(parents=True, exist_ok=True)
                pq.write_table(t.slice(a, b - a).drop_columns(["__group"]), folder / f"{k:05d}.parquet")
        rows = 0
        files = 0
        for folder in sorted((pieces / table).iterdir()):
            gid = int(folder.name)
            d = first + dt.timedelta(days=gid // 2)
            name = f"{d.isoformat()}{'-corrections' if gid % 2 else ''}.parquet"
            part = pq.read_table(sorted(folder.glob("*.parquet"))).sort_by("__arrival").drop_columns(["__arrival"])
            pq.write_table(part, full / table / name, compression="snappy")
            if d > last - dt.timedelta(days=short_days):
                os.link(full / table / name, short / table / name)
            rows += part.num_rows
            files += 1
            shutil.rmtree(folder)
        info["rows"][table] = rows
        info["files"][table] = files
        info["rows_left_out_arriving_later"][table] = left_out
    shutil.rmtree(pieces, ignore_errors=True)
    info["short_rows"] = {table: sum(pq.read_metadata(f).num_rows for f in (short / table).glob("*.parquet"))
                          for table in TIMED}
    info["bytes"] = sum(f.stat().st_size for f in full.rglob("*") if f.is_file())
    return info


def ensure_nightly_landing(bench: Bench, spec: LandingSpec) -> tuple[Path, Path, dict[str, Any]]:
    """The 365-day and 8-day drop landings for `spec`, generated and split once, then cached."""
    data = bench.out / "data"
    folder = data / f"nightly-{spec.name()}-v{LAYOUT_VERSION}"
    marker = folder / "_split.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        info["cached"] = True
        return folder / "full", folder / "short", info
    generated, gen_info = ensure_landing(spec, data, log=bench.say)
    shutil.rmtree(folder, ignore_errors=True)
    bench.say(f"  splitting {generated.name} into daily drop files ...")
    out = folder / "_split.tmp.json"
    m = run_measured([sys.executable, str(HERE / "nightly.py"), "split", "--src", str(generated), "--dst", str(folder),
                      "--days", str(spec.days), "--short", str(SHORT_DAYS), "--first", spec.start.isoformat(),
                      "--out", str(out)], log_path=bench.logs / "nightly-split.log", env=bench.env, cwd=ROOT)
    if not m.ok or not out.exists():
        raise RuntimeError(f"splitting the nightly landing failed ({m.killed or m.exit_code}): {tail(m.log)}")
    info = json.loads(out.read_text())
    info.update(generated=gen_info, split_wall_s=round(m.wall_s, 1), split_peak_rss_gib=round(m.peak_rss_bytes / GIB, 2))
    out.unlink()
    marker.write_text(json.dumps(info, indent=1))
    shutil.rmtree(generated, ignore_errors=True)  # the split files hold hard links to its master data
    info["cached"] = False
    return folder / "full", folder / "short", info


def landing_before(landing: Path, dst: Path, day: dt.date) -> Path:
    """A hard-linked view of `landing` without the files that arrived on `day` (the landing the night before)."""
    shutil.rmtree(dst, ignore_errors=True)
    for table in sorted(p for p in landing.iterdir() if p.is_dir()):
        (dst / table.name).mkdir(parents=True)
        for f in sorted(table.iterdir()):
            if table.name in TIMED and f.name.startswith(day.isoformat()):
                continue
            os.link(f, dst / table.name / f.name)
    return dst


# ------------------------------------------------------------------------------------ warehouses


def clone(snapshot: Path, dst: Path) -> Path:
    """A copy of a warehouse as hard links (the engine writes new files and renames, never in place)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(snapshot, dst, copy_function=os.link)
    return dst


def tree_state(folder: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file: to check that runs on a clone left its snapshot as it was."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


# ------------------------------------------------------------------------------------ planning


def plan_child(config: Path, day: dt.date, out: Path) -> None:
    """In a child: the DAG's plants_to_process task function for a manual nightly run of `day`, timed."""
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT / "dags"))
    import backflush as dag_module  # noqa: E402  (dags/backflush.py: the DAG file itself)

    from pipeline import schedule

    imported = time.perf_counter() - t0
    after = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC) + dt.timedelta(days=1)
    plan = schedule.nightly_plan(run_type="manual", logical_date=after, run_after=after,
                                 params={"business_date": day.isoformat(), "plants": [], "dry_run": False})
    task = dag_module.plants_to_process.function  # the callable Airflow runs for the task
    t1 = time.perf_counter()
    plants = task(plan.to_dict())
    seconds = time.perf_counter() - t1
    out.write_text(json.dumps({"seconds": seconds, "import_s": imported, "plants": plants, "config": str(config)}))


def planning(bench: Bench, name: str, landing: Path, warehouse: Path, day: dt.date) -> dict[str, Any]:
    """plan_child in its own process, with the config the DAG's Airflow Variable would name."""
    folder = bench.work / "nightly"
    home = folder / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    config = folder / "planning.toml"
    config.write_text(f"landing = {json.dumps(str(landing))}\nwarehouse = {json.dumps(str(warehouse))}\n")
    out = folder / f"{name}.json"
    out.unlink(missing_ok=True)
    env = {k: v for k, v in bench.env.items() if not k.startswith(("AIRFLOW", "BACKFLUSH"))}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
               AIRFLOW_VAR_BACKFLUSH_CONFIG=str(config))  # the Variable the task reads, by its env route
    bench.say(f"  running {name} ...")
    m = run_measured([sys.executable, str(HERE / "nightly.py"), "plan", "--config", str(config), "--date",
                      day.isoformat(), "--out", str(out)], log_path=bench.logs / f"{name}.log", env=env, cwd=ROOT,
                     timeout_s=bench.args.timeout, memory_cap_bytes=bench.cap)
    result: dict[str, Any] = {"process": m.as_dict(), "seconds": None}
    if m.ok and out.exists():
        result.update(json.loads(out.read_text()))
        bench.say(f"    {name}: plants_to_process {result['seconds']:.2f} s (process {m.wall_s:.1f} s, "
                  f"Airflow import {result['import_s']:.1f} s), peak RSS {m.peak_rss_bytes / GIB:.2f} GiB")
    else:
        bench.say(f"    {name}: FAILED ({m.killed or 'exit ' + str(m.exit_code)})\n    " + tail(m.log, 6))
    return result


# ------------------------------------------------------------------------------------ the scenario


def run_log_summary(log: str) -> dict[str, Any]:
    """What `backflush run` printed: the dates it processed, rows read, postings appended."""
    try:
        text = Path(log).read_text(errors="replace")
    except OSError:
        return {}
    out: dict[str, Any] = {}
    dates = re.search(r"(\d+) business date\(s\) ([\d-]+)(?: \.\. ([\d-]+))?", text)
    if dates:
        out["business_dates"] = int(dates.group(1))
        out["dates"] = [d for d in dates.group(2, 3) if d]
    rows = re.search(r"^rows read:\s+(.*)$", text, re.M)
    if rows:
        out["rows_read"] = {k: int(v.replace(",", "")) for k, v in re.findall(r"(\w+) ([\d,]+)", rows.group(1))}
    posted = re.search(r"postings appended: ([\d,]+)", text)
    if posted:
        out["postings_appended"] = int(posted.group(1).replace(",", ""))
    unchanged = re.search(r"unchanged since run (\S+)", text)
    if unchanged:  # an unchanged re-run stopped early (issue 17.5): it read and posted nothing
        out.update(unchanged_since=unchanged.group(1), business_dates=0, postings_appended=0,
                   rows_read={"completions": 0})
    return out


def _said(s: dict[str, Any]) -> str:
    """A run's log summary in one line."""
    def num(v: object) -> str:
        return f"{v:,}" if isinstance(v, int) else "?"

    if s.get("unchanged_since"):
        return f"unchanged since run {s['unchanged_since']}: stopped early, nothing read or posted"
    return (f"{num(s.get('business_dates'))} date(s) {' .. '.join(s.get('dates', []))} processed, completions read "
            f"{num(s.get('rows_read', {}).get('completions'))}, postings appended {num(s.get('postings_appended'))}")


def _run(bench: Bench, name: str, landing: Path, warehouse: Path, day: dt.date) -> dict[str, Any]:
    m = bench.run(name, backflush_command() + ["run", "--landing", str(landing), "--warehouse", str(warehouse),
                                               "--date", day.isoformat()])
    d = m.as_dict()
    d.pop("rss_timeline", None)
    d.update(ok=m.ok, summary=run_log_summary(m.log))
    s = d["summary"]
    if s:
        bench.say(f"      {_said(s)}")
    return d


def _backfill(bench: Bench, name: str, landing: Path, warehouse: Path, start: dt.date, end: dt.date) -> Measurement:
    shutil.rmtree(warehouse, ignore_errors=True)
    return bench.run(name, backflush_command() + ["backfill", "--landing", str(landing), "--warehouse", str(warehouse),
                                                  "--start", start.isoformat(), "--end", end.isoformat()])


def _median(values: list[float | None]) -> float | None:
    ok = [v for v in values if v is not None]
    return statistics.median(ok) if ok else None


def scenario(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) the landings, backfill once, then the interleaved rounds; medians and ratios."""
    days, daily = args.nightly_days, args.nightly_daily_rows
    if days <= SHORT_DAYS:
        raise SystemExit(f"bench: --nightly-days must be more than {SHORT_DAYS}")
    spec = LandingSpec(items=args.items, completions=daily * days, days=days, seed=args.seed, plants=args.plants)
    last, short_first = spec.end, spec.end - dt.timedelta(days=SHORT_DAYS - 1)
    bench.say(f"nightly scenario: {daily:,} completions a day over {days} days ({spec.completions:,}), "
              f"nightly run for {last}; {args.nightly_pairs} interleaved rounds")
    full, short, info = ensure_nightly_landing(bench, spec)
    r: dict[str, Any] = {"params": {**spec.as_dict(), "daily_rows": daily, "short_days": SHORT_DAYS,
                                    "short_start": short_first.isoformat(), "night": last.isoformat(),
                                    "pairs": args.nightly_pairs,
                                    "default_daily_rows": DEFAULT_DAILY_ROWS,
                                    "reduced_volume": daily < DEFAULT_DAILY_ROWS},
                         "landing": info}
    work = bench.work / "nightly"
    work.mkdir(parents=True, exist_ok=True)
    bench.say("  backfill once, up to the day before the night:")
    snap = {"365": work / "warehouse-365-snapshot", "8": work / "warehouse-8-snapshot"}
    b365 = _backfill(bench, "nightly-backfill-365", landing_before(full, work / "landing-365-before", last),
                     snap["365"], spec.start, last - dt.timedelta(days=1))
    b8 = _backfill(bench, "nightly-backfill-8", landing_before(short, work / "landing-8-before", last),
                   snap["8"], short_first, last - dt.timedelta(days=1))
    r["backfill"] = {"365": {k: v for k, v in b365.as_dict().items() if k != "rss_timeline"},
                     "8": {k: v for k, v in b8.as_dict().items() if k != "rss_timeline"}}
    shutil.rmtree(work / "landing-365-before", ignore_errors=True)
    shutil.rmtree(work / "landing-8-before", ignore_errors=True)
    if not (b365.ok and b8.ok):
        r["error"] = "a backfill failed: " + tail(b365.log if not b365.ok else b8.log)
        return r
    states = {k: tree_state(p) for k, p in snap.items()}
    rounds = []
    for i in range(args.nightly_pairs):
        n = i + 1
        bench.say(f"  round {n}:")
        wh365, wh8 = clone(snap["365"], work / "warehouse-365"), clone(snap["8"], work / "warehouse-8")
        row: dict[str, Any] = {"round": n, "order": "365 first" if i % 2 == 0 else "8 first"}
        if i % 2:
            row["nightly_8"] = _run(bench, f"nightly-8-{n}", short, wh8, last)
        row["nightly_365"] = _run(bench, f"nightly-365-{n}", full, wh365, last)
        row["rerun_365"] = _run(bench, f"rerun-365-{n}", full, wh365, last)
        if i % 2 == 0:
            row["nightly_8"] = _run(bench, f"nightly-8-{n}", short, wh8, last)
        row["planning"] = planning(bench, f"planning-{n}", full, wh365, last)
        rounds.append(row)
        # the rounds so far, in case the invocation is stopped before the end (they take long)
        (bench.out / "results-nightly-partial.json").write_text(json.dumps({**r, "rounds": rounds}, indent=1,
                                                                            default=str))
    r["rounds"] = rounds
    r["snapshots_intact"] = all(tree_state(p) == states[k] for k, p in snap.items())
    for p in (work / "warehouse-365", work / "warehouse-8", *snap.values()):
        shutil.rmtree(p, ignore_errors=True)

    return summarise(r)


def summarise(r: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds and the ratios (also for the rounds of a partial results file)."""
    rounds = r["rounds"]

    def med(run: str, key: str) -> float | None:
        return _median([x[run][key] if x[run]["ok"] else None for x in rounds])

    m = {run: {"wall_s": med(run, "wall_s"), "cpu_s": med(run, "cpu_s"), "peak_rss_bytes": med(run, "peak_rss_bytes"),
               "all_wall_s": [x[run]["wall_s"] for x in rounds], "failed": sum(not x[run]["ok"] for x in rounds)}
         for run in ("nightly_365", "nightly_8", "rerun_365")}
    m["planning"] = {"seconds": _median([x["planning"]["seconds"] for x in rounds]),
                     "all_seconds": [x["planning"]["seconds"] for x in rounds],
                     "process_wall_s": _median([x["planning"]["process"]["wall_s"] for x in rounds]),
                     "peak_rss_bytes": _median([x["planning"]["process"]["peak_rss_bytes"] for x in rounds])}
    r["medians"] = m

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    n365, n8, rerun = m["nightly_365"], m["nightly_8"], m["rerun_365"]
    r["ratios"] = {
        "nightly_365_over_8_wall": ratio(n365["wall_s"], n8["wall_s"]),
        "nightly_365_over_8_cpu": ratio(n365["cpu_s"], n8["cpu_s"]),
        "rerun_over_nightly_wall": ratio(rerun["wall_s"], n365["wall_s"]),
        "rerun_over_nightly_cpu": ratio(rerun["cpu_s"], n365["cpu_s"]),
        "peak_memory_365_over_8": ratio(n365["peak_rss_bytes"], n8["peak_rss_bytes"]),
        "planning_s": round(m["planning"]["seconds"], 3) if m["planning"]["seconds"] is not None else None,
    }
    return r


# ------------------------------------------------------------------------------------ targets and report


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    x = r.get("ratios") or {}
    m = r.get("medians") or {}
    p = r["params"]
    scale = "" if not p.get("reduced_volume") else f" (at {p['daily_rows']:,} completions a day, not {p['default_daily_rows']:,})"

    def line(name: str, value: float | None, limit: float | None, measured: str) -> None:
        status = "SKIP" if value is None else "INFO" if limit is None else "PASS" if value <= limit else "FAIL"
        out.append({"target": name, "status": status, "measured": measured + scale if value is not None
                    else r.get("error", "not measured")})

    def s(run: str) -> str:
        d = m.get(run) or {}
        return f"{d['wall_s']:.1f} s" if d.get("wall_s") is not None else "-"

    line(f"nightly run after {p['days']} days <= {NIGHTLY_RATIO_MAX:g} x the same run on the {p['short_days']}-day landing",
         x.get("nightly_365_over_8_wall"), NIGHTLY_RATIO_MAX,
         f"{s('nightly_365')} / {s('nightly_8')} = {x.get('nightly_365_over_8_wall')} "
         f"(CPU {x.get('nightly_365_over_8_cpu')}), medians of {len(r.get('rounds', []))} rounds")
    line(f"unchanged re-run <= {RERUN_RATIO_MAX:g} x a real nightly run", x.get("rerun_over_nightly_wall"),
         RERUN_RATIO_MAX, f"{s('rerun_365')} / {s('nightly_365')} = {x.get('rerun_over_nightly_wall')} "
         f"(CPU {x.get('rerun_over_nightly_cpu')})")
    plan = m.get("planning") or {}
    line(f"planning (the DAG's plants_to_process) on the {p['days']}-day landing <= {PLANNING_S_MAX:g} s",
         x.get("planning_s"), PLANNING_S_MAX,
         f"{x.get('planning_s')} s (all: {', '.join(f'{v:.2f}' for v in plan.get('all_seconds', []) if v is not None)};"
         f" the task's process {plan.get('process_wall_s') or 0:.1f} s with Airflow's import)")
    line(f"nightly peak memory, {p['days']} d / {p['short_days']} d (17.6: follows the night, not the history)",
         x.get("peak_memory_365_over_8"), None,
         f"{(m.get('nightly_365') or {}).get('peak_rss_bytes', 0) / GIB:.2f} GiB / "
         f"{(m.get('nightly_8') or {}).get('peak_rss_bytes', 0) / GIB:.2f} GiB = {x.get('peak_memory_365_over_8')}")
    return out


def report_lines(r: dict[str, Any]) -> list[str]:
    p, info = r["params"], r["landing"]
    lines = [f"nightly scenario: {p['daily_rows']:,} completions a day over {p['days']} days ({p['start']} .. "
             f"{p['end']}), night {p['night']}; short landing {p['short_start']} .. {p['end']}"
             + (f"; REDUCED daily volume (default {p['default_daily_rows']:,})" if p.get("reduced_volume") else ""),
             "  landing: " + ", ".join(f"{t} {n:,} rows in {info['files'][t]} files" for t, n in info["rows"].items())
             + f"; correction files on {', '.join(info['correction_days'])}; short landing: "
             + ", ".join(f"{t} {n:,}" for t, n in info["short_rows"].items())
             + "; left out (arriving after the night): "
             + ", ".join(f"{t} {n:,}" for t, n in info["rows_left_out_arriving_later"].items())]
    b = r.get("backfill")
    if b:
        lines.append(f"  backfill once: {p['days'] - 1} days {b['365']['wall_s']:.1f} s (peak "
                     f"{b['365']['peak_rss_gib']:.2f} GiB); {p['short_days'] - 1} days {b['8']['wall_s']:.1f} s")
    if r.get("error"):
        lines.append(f"  ERROR: {r['error']}")
        return lines
    lines.append(f"  {'round':<7}{'nightly ' + str(p['days']) + ' d':>15}{'nightly ' + str(p['short_days']) + ' d':>14}"
                 f"{'re-run ' + str(p['days']) + ' d':>15}{'planning':>11}{'peak memory':>20}")
    def w(run: dict[str, Any]) -> str:
        return f"{run['wall_s']:.1f} s" + ("" if run["ok"] else " FAIL")

    for x in r["rounds"]:
        plan = x["planning"]["seconds"]
        lines.append(f"  {x['round']:<7}{w(x['nightly_365']):>15}{w(x['nightly_8']):>14}{w(x['rerun_365']):>15}"
                     f"{(f'{plan:.2f} s' if plan is not None else 'FAIL'):>11}"
                     f"{x['nightly_365']['peak_rss_gib']:>9.2f} / {x['nightly_8']['peak_rss_gib']:.2f} GiB")
    m = r["medians"]
    lines.append(f"  {'median':<7}{m['nightly_365']['wall_s'] or 0:>13.1f} s{m['nightly_8']['wall_s'] or 0:>12.1f} s"
                 f"{m['rerun_365']['wall_s'] or 0:>13.1f} s{m['planning']['seconds'] or 0:>9.2f} s")
    s = r["rounds"][0]
    for run in ("nightly_365", "nightly_8", "rerun_365"):
        lines.append(f"  {run} (round 1): {_said(s[run].get('summary') or {})}")
    lines.append("  ratios: " + ", ".join(f"{k} {v}" for k, v in r["ratios"].items())
                 + ("" if r.get("snapshots_intact") else "; WARNING: a warehouse snapshot changed during the rounds"))
    return lines


def report(r: dict[str, Any]) -> str:
    m, e = r["machine"], r["engine"]
    lines = [f"backflush benchmark, nightly scenario, {r['started_at']} ({m['nproc']} cores, {m['memory_gib']} GiB, "
             f"{m['cpu_model']}; SHARED machine)",
             f"engine: {e['rev']} at {e['head']} ({e['head_subject']}); pipeline sha {e['pipeline_sha256']}"
             + (f"; uncommitted: {len(e['uncommitted_pipeline_files'])} files" if e["uncommitted_pipeline_files"] else ""),
             ""]
    lines += report_lines(r["nightly"])
    lines += ["", "targets:"] + [f"  {t['status']:<5} {t['target']}: {t['measured']}" for t in r["targets"]]
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    n, m = r["nightly"], r["machine"]
    p = n["params"]
    out = [f"Nightly scenario measured {r['started_at']} on {m['nproc']} cores ({m['cpu_model']}), shared machine; "
           f"engine {r['engine']['rev']} at {r['engine']['head']}; {p['daily_rows']:,} completions a day over "
           f"{p['days']} days, medians of {len(n.get('rounds', []))} interleaved rounds.", ""]
    if n.get("medians"):
        md = n["medians"]
        out += ["| run | wall s (median) | CPU s | peak memory |", "|---|---:|---:|---:|"]
        for key, label in (("nightly_365", f"nightly `run --date {p['night']}`, {p['days']}-day landing"),
                           ("nightly_8", f"the same, {p['short_days']}-day landing"),
                           ("rerun_365", f"unchanged re-run, {p['days']}-day landing")):
            x = md[key]
            out.append(f"| {label} | {x['wall_s'] or 0:.1f} | {x['cpu_s'] or 0:.1f} | {(x['peak_rss_bytes'] or 0) / GIB:.2f} GiB |")
        out.append(f"| planning: the DAG's `plants_to_process` | {md['planning']['seconds'] or 0:.2f} | | "
                   f"{(md['planning']['peak_rss_bytes'] or 0) / GIB:.2f} GiB |")
        out.append("")
    out += ["| target | result | measured |", "|---|---|---|"]
    out += [f"| {t['target']} | **{t['status']}** | {t['measured']} |" for t in r["targets"]]
    return "\n".join(out)


# ------------------------------------------------------------------------------------ child entry points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="children of the nightly scenario")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="rewrite a generated landing as daily drop files")
    s.add_argument("--src", type=Path, required=True)
    s.add_argument("--dst", type=Path, required=True)
    s.add_argument("--days", type=int, required=True)
    s.add_argument("--short", type=int, default=SHORT_DAYS)
    s.add_argument("--first", type=dt.date.fromisoformat, required=True)
    s.add_argument("--out", type=Path, required=True)
    pl = sub.add_parser("plan", help="time the DAG's plants_to_process task function")
    pl.add_argument("--config", type=Path, required=True)
    pl.add_argument("--date", type=dt.date.fromisoformat, required=True)
    pl.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "split":
        info = split_landing(args.src, args.dst, days=args.days, short_days=args.short, first=args.first)
        args.out.write_text(json.dumps(info, indent=1))
    else:
        plan_child(args.config, args.date, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
