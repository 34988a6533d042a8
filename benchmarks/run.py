"""`make bench`: the pipeline against two baselines at scale, with per-stage time and memory, and targets.

Contenders, each in its own child process so that peak RSS is measured per contender:
  pipeline    `backflush backfill` over the whole range, into a fresh warehouse;
  baseline A  the ERP way: per-completion recursive explosion in plain Python, on a sample of
              completions, scaled linearly to the full count;
  baseline B  what a data engineer would write instead: the same core as DuckDB SQL over the
              same landing Parquet files, checked to give the same numbers as the pipeline;
  baseline C, baseline D, I/O floor  peers we did not write (benchmarks/peers.py), interleaved
              with the pipeline for at least 3 rounds: medians, ratios, process-tree peaks.
Then the pipeline once more in-process with every engine function timed (stage breakdown), the
explosion's cost at 10 % and 100 % of the completions, and sampled single-day runs. Options add
the scaling sweep (--scaling), a run at 50 million completions (--scale 50M) and cProfile.

Results are printed and written to benchmarks/out/results-<timestamp>.json and results-latest.json.
--nightly runs the nightly scenario instead (benchmarks/nightly.py: a 365-day landing of daily drop
files, the nightly run against the same run on 8 days, an unchanged re-run, the DAG's planning);
its results go to results-nightly-<timestamp>.json and results-nightly-latest.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import nightly  # noqa: E402
import peers  # noqa: E402
from landing import LandingSpec, backflush_command, ensure_landing  # noqa: E402
from measure import (  # noqa: E402
    GIB,
    Measurement,
    default_memory_cap,
    memory_total_bytes,
    run_measured,
    tail,
    wait_for_idle,
)

RSS_TARGET = 2 * GIB
LINEAR_EXPONENT_MAX = 1.15  # cost ~ size^k; k above this is super-linear
SINGLE_DAY_RATIO_MAX = 0.2  # "far less": one backfill costs at most a fifth of the daily runs it replaces
EXPLODE_GROWTH_MAX = 1.5  # explosion time at 10x the completions, at most this many times more


def count(text: str) -> int:
    """200k, 5M, 50M, 1_000_000 -> int."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def human(n: float) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:g}{unit}"
    return f"{n:g}"


def gib(b: float | None) -> str:
    return "-" if b is None else f"{b / GIB:.2f} GiB"


# ------------------------------------------------------------------------------------ environment


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for mod in ("pandas", "pyarrow", "duckdb", "numpy", "pandera"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {"nproc": os.cpu_count(), "memory_gib": round(memory_total_bytes() / GIB, 1), "cpu_model": cpu,
            "kernel": platform.release(), "python": platform.python_version(), "versions": versions,
            "loadavg_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "shared_machine": True}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def engine_info(engine: Path, rev: str | None) -> dict[str, Any]:
    """Which engine code was measured: commit, uncommitted changes, and a hash of pipeline/*.py."""
    digest = hashlib.sha256()
    for p in sorted((engine / "pipeline").glob("*.py")):
        digest.update(p.name.encode() + p.read_bytes())
    return {"path": str(engine), "rev": rev or "working tree", "head": _git("rev-parse", "--short", "HEAD"),
            "head_subject": _git("log", "-1", "--format=%s"),
            "uncommitted_pipeline_files": [] if rev else _git("status", "--porcelain", "pipeline").splitlines(),
            "pipeline_sha256": digest.hexdigest()[:12]}


def export_engine(rev: str, out: Path) -> Path:
    """The pipeline package of a git revision, exported under out/engines/<sha> (for --engine-rev)."""
    sha = _git("rev-parse", "--short", rev)
    if not sha:
        raise SystemExit(f"bench: {rev!r} is not a git revision")
    folder = out / "engines" / sha
    if not (folder / "pipeline").exists():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha, "pipeline"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder


# ------------------------------------------------------------------------------------ the runs


class Bench:
    """One benchmark invocation: where things go and how children are run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.work = self.out / "work"
        self.logs = self.out / "logs"
        self.env = dict(os.environ)
        self.engine = ROOT
        if args.engine_rev:
            self.engine = export_engine(args.engine_rev, self.out)
            self.env["PYTHONPATH"] = str(self.engine) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.setdefault("PYTHONHASHSEED", "0")
        self.cap = int(args.memory_cap_gib * GIB) if args.memory_cap_gib else default_memory_cap()

    def say(self, text: str) -> None:
        print(text, flush=True)

    def run(self, name: str, command: list[str]) -> Measurement:
        if self.args.wait_for_idle:
            busy = wait_for_idle(self.args.wait_for_idle)
            self.say(f"  running {name} (machine busy {busy:.2f} cores before it) ...")
        else:
            self.say(f"  running {name} ...")
        m = run_measured(command, log_path=self.logs / f"{name}.log", env=self.env, cwd=ROOT,
                         timeout_s=self.args.timeout, memory_cap_bytes=self.cap)
        status = "ok" if m.ok else f"FAILED ({m.killed or 'exit ' + str(m.exit_code)})"
        self.say(f"    {name}: {m.wall_s:.1f} s wall, {m.user_s + m.sys_s:.1f} s CPU, "
                 f"peak RSS {gib(m.peak_rss_bytes)}, tree {gib(m.peak_tree_rss_bytes)}, "
                 f"other processes busy {m.other_cpu:.2f} cores: {status}")
        if not m.ok:
            self.say("    " + tail(m.log, 6).replace("\n", "\n    "))
        return m

    def fresh(self, name: str) -> Path:
        path = self.work / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def python(self, script: str, *args: str) -> list[str]:
        return [sys.executable, str(HERE / script), *args]

    def pipeline(self, name: str, landing: Path, spec: LandingSpec, warehouse: Path | None = None) -> Measurement:
        wh = warehouse or self.fresh(f"warehouse-{name}")
        return self.run(name, backflush_command() + [
            "backfill", "--landing", str(landing), "--warehouse", str(wh),
            "--start", spec.start.isoformat(), "--end", spec.end.isoformat()])


def best(measurements: list[Measurement]) -> Measurement:
    ok = [m for m in measurements if m.ok]
    return min(ok, key=lambda m: m.wall_s) if ok else measurements[-1]


def contender(m: Measurement, completions: int, **extra: Any) -> dict[str, Any]:
    d = m.as_dict()
    d["completions"] = completions
    d["completions_per_s"] = round(completions / m.wall_s) if m.ok and m.wall_s else None
    d.update(extra)
    return d


def baseline_a(bench: Bench, landing: Path, completions: int) -> dict[str, Any]:
    out = bench.fresh("baseline-a")
    sample = bench.args.sample
    m = bench.run("baseline-a", bench.python("baseline_erp.py", "--landing", str(landing), "--out", str(out),
                                              "--sample", str(sample)))
    if not m.ok:
        return contender(m, completions, estimated=True)
    stats = json.loads((out / "stats.json").read_text())
    # the child's own wall includes interpreter start and sampling; scale only the per-completion part
    overhead = m.wall_s - stats["setup_s"] - stats["processing_s"] - stats["sampling_s_not_counted"]
    wall = stats["setup_s"] + stats["processing_s"] * stats["scale_factor"] + max(0.0, overhead)
    d = contender(m, completions)
    d.update({
        "estimated": stats["scale_factor"] > 1.0,
        "measured_wall_s": round(m.wall_s, 3),
        "measured_cpu_s": round(m.user_s + m.sys_s, 3),
        "wall_s": round(wall, 1),
        "cpu_s": round(wall, 1),  # one Python thread: CPU = wall (the sample's extra CPU is parallel Parquet reading)
        "completions_per_s": round(completions / wall) if wall else None,
        "sample": stats["completions_processed"],
        "per_completion_us": stats["per_completion_us"],
        "setup_s": stats["setup_s"],
        "note": (f"{stats['completions_processed']:,} of {completions:,} completions processed, per-completion time "
                 f"scaled x{stats['scale_factor']:g}; peak RSS is the sample's") if stats["scale_factor"] > 1 else
                "every completion processed",
    })
    return d


def baseline_b(bench: Bench, landing: Path, pipeline_wh: Path | None) -> Measurement:
    out = bench.fresh("baseline-b")
    args = ["--landing", str(landing), "--out", str(out)]
    if pipeline_wh is not None and pipeline_wh.exists():
        args += ["--exclude-from", str(pipeline_wh)]
    if bench.args.b_memory_limit:
        args += ["--memory-limit", bench.args.b_memory_limit]
    return bench.run("baseline-b", bench.python("baseline_sql.py", *args))


def compare_outputs(bench: Bench, name: str, pipeline_wh: Path, other: Path, spec: LandingSpec) -> dict[str, Any]:
    """benchmarks/compare.py in a child process (it joins millions of rows; this process stays small)."""
    out = bench.work / f"{name}.json"
    m = bench.run(name, bench.python("compare.py", "--pipeline", str(pipeline_wh), "--other", str(other),
                                     "--start", spec.start.isoformat(), "--end", spec.end.isoformat(),
                                     "--out", str(out)))
    if not out.exists():
        return {"agree": False, "error": m.killed or tail(m.log), "consumption": None, "adjustments": None}
    return dict(json.loads(out.read_text()))


def stage_profile(bench: Bench, landing: Path, spec: LandingSpec, *, cprofile: bool) -> dict[str, Any]:
    name = "stages-cprofile" if cprofile else "stages"
    wh = bench.fresh(f"warehouse-{name}")
    out = bench.out / "work" / f"{name}.json"
    args = ["--landing", str(landing), "--warehouse", str(wh), "--start", spec.start.isoformat(),
            "--end", spec.end.isoformat(), "--out", str(out)] + (["--cprofile"] if cprofile else [])
    m = bench.run(name, bench.python("stages.py", *args))
    result: dict[str, Any] = {"process": m.as_dict()}
    if out.exists():  # also when stopped by the memory cap: the stages up to then are in it
        result.update(json.loads(out.read_text()))
        if not cprofile:
            # the tracer resets the kernel's high-water mark at every stage boundary, which is also what
            # wait4 reports: the process's true peak is the tracer's, the maximum over all stages
            result["process"]["peak_rss_bytes"] = result["peak_rss_bytes"]
            result["process"]["peak_rss_gib"] = round(result["peak_rss_bytes"] / GIB, 3)
            bench.say(f"    (stages: true peak RSS {gib(result['peak_rss_bytes'])}, from the tracer)")
        if not m.ok and not result.get("interrupted"):
            result["interrupted"] = m.killed or f"exit {m.exit_code}"
    shutil.rmtree(wh, ignore_errors=True)
    return result


STAGE_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("read master data, counts, movements (accept.InputLoader)", ("accept.InputLoader.__init__",
                                                                   "scan.lazy_landing_files",
                                                                   "coerce.coerce_table", "scan.read_file",
                                                                   "accept._dedupe_by_key")),
    ("split completions into buckets (spill._spill_file)", ("spill._spill_file",)),
    ("accept completions per bucket (coerce, validate, dedupe, date)", ("accept.CompletionAcceptor.accept",)),
    ("fingerprints per bucket and late-data check", ("late_data.fingerprint_parts", "late_data.input_fingerprints",
                                                     "late_data.changed_dates")),
    ("explode keys, tag completions (consumption.ExplosionCatalog)", ("consumption.ExplosionCatalog.tag",
                                                                      "consumption.ExplosionCatalog.adopt")),
    ("demand per key (consumption.completion_demand)", ("consumption.completion_demand",)),
    ("flows into count windows (stock_windows.CountWindows)", ("stock_windows.CountWindows.add_completions",
                                                          "stock_windows.CountWindows.add_movements",
                                                          "stock_windows.count_windows")),
    ("merge bucket partials", ("digest._Totals.add", "digest._Totals.result")),
    ("finish inputs (stock points, quarantine dates)", ("accept.InputLoader.finish",)),
    ("component flows, theoretical consumption", ("consumption.component_flows",
                                                  "consumption.theoretical_consumption")),
    ("adjustments (ledger.adjustments)", ("ledger.adjustments",)),
    ("postings delta (ledger.postings_delta + read ledger)", ("ledger.postings_delta",
                                                              "warehouse.Warehouse.read[postings]")),
    ("variance (variance_scope + count_variance)", ("variance.variance_scope", "variance.count_variance")),
    ("BOM accuracy", ("counts.plant_bom_accuracy",)),
    ("quarantine rows in scope", ("quarantine_files.quarantine_in_scope", "quarantine_files.write_quarantine")),
    ("stage output files (sort, to Arrow, write Parquet)", ("warehouse.Transaction.put",
                                                             "warehouse.Transaction.replace",
                                                             "warehouse.Transaction.put_file")),
    ("run summary (top components etc.)", ("daily.largest_components", "variance.summary", "result.runs_row")),
    ("commit (journal, renames)", ("warehouse.Transaction.commit",)),
]


def stage_summary(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The tree folded into the issue's named stages (top-most occurrences only, so nothing is counted twice)."""
    total = tree["seconds"]
    sums = {label: [0.0, 0] for label, _ in STAGE_GROUPS}

    def group_of(name: str) -> str | None:
        base = name.split("[", 1)[0]
        for label, names in STAGE_GROUPS:
            if name in names or base in names:
                return label
        return None

    def walk(node: dict[str, Any]) -> None:
        label = group_of(node["name"])
        if label is not None:
            sums[label][0] += node["seconds"]
            sums[label][1] = max(sums[label][1], node["peak_rss_bytes"])
            return
        for child in node["children"]:
            walk(child)

    walk(tree)
    rows = [{"stage": label, "seconds": round(s, 2), "share": round(s / total, 3) if total else None,
             "peak_rss_bytes": peak} for label, (s, peak) in sums.items()]
    accounted = sum(r["seconds"] for r in rows)
    rows.append({"stage": "other (interpreter, locks, small steps)", "seconds": round(total - accounted, 2),
                 "share": round((total - accounted) / total, 3) if total else None, "peak_rss_bytes": None})
    return rows


def explode_cost(bench: Bench, landing: Path, completions: int) -> dict[str, Any]:
    small = max(1, completions // 10)
    out = bench.out / "work" / "explode-cost.json"
    m = bench.run("explode-cost", bench.python("explode_cost.py", "--landing", str(landing), "--sizes",
                                                f"{small},{completions}", "--out", str(out)))
    result: dict[str, Any] = {"process": m.as_dict()}
    if m.ok and out.exists():
        result.update(json.loads(out.read_text()))
    return result


def single_days(bench: Bench, landing: Path, spec: LandingSpec, backfill: Measurement) -> dict[str, Any]:
    """`backflush run --date D` for a few days spread over the range, in date order into one warehouse.

    as-of (default): each run reads the landing data as it stood at the end of D (what a nightly
    run finds); full: every run reads the whole range's landing data, later counts included.
    """
    n = min(bench.args.single_days, spec.days)
    mode = bench.args.single_days_landing
    days = sorted({spec.start + dt.timedelta(days=round(i * (spec.days - 1) / max(1, n - 1))) for i in range(n)})
    wh = bench.fresh("warehouse-single-days")
    runs = []
    for day in days:
        day_landing = landing
        if mode == "as-of":
            day_landing = bench.fresh(f"landing-as-of-{day}")
            prep = run_measured([sys.executable, str(HERE / "landing.py"), "--src", str(landing),
                                 "--dst", str(day_landing), "--date", day.isoformat()],
                                log_path=bench.logs / f"landing-as-of-{day}.log", env=bench.env, cwd=ROOT)
            if not prep.ok:
                bench.say(f"    landing as of {day} failed: {tail(prep.log)}")
                continue
        m = bench.run(f"run-{day}", backflush_command() + ["run", "--landing", str(day_landing), "--warehouse",
                                                           str(wh), "--date", day.isoformat()])
        runs.append({"date": day.isoformat(), **m.as_dict()})
        if mode == "as-of":
            shutil.rmtree(day_landing, ignore_errors=True)
    ok = [r for r in runs if r["exit_code"] == 0 and not r["killed"]]
    mean = sum(r["wall_s"] for r in ok) / len(ok) if ok else None
    estimate = mean * spec.days if mean is not None else None
    shutil.rmtree(wh, ignore_errors=True)
    return {"landing": mode, "days_sampled": [d.isoformat() for d in days], "runs": runs,
            "mean_single_day_wall_s": mean, "estimated_all_days_wall_s": estimate,
            "backfill_wall_s": backfill.wall_s,
            "ratio": backfill.wall_s / estimate if estimate and backfill.ok else None,
            "max_single_day_peak_rss_bytes": max((r["peak_rss_bytes"] for r in ok), default=None)}


def fit(points: list[tuple[float, float]]) -> dict[str, Any]:
    """Least-squares line y = a + b x, and the exponent k of y ~ x^k between the ends."""
    n = len(points)
    if n < 2:
        return {}
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sum((y - a - b * x) ** 2 for x, y in points) / ss_tot if ss_tot else 1.0
    ordered = sorted(points)

    def exponent(p0: tuple[float, float], p1: tuple[float, float]) -> float | None:
        (x0, y0), (x1, y1) = p0, p1
        return round(math.log(y1 / y0) / math.log(x1 / x0), 3) if y0 > 0 and y1 > 0 and x1 != x0 else None

    # the top step shows the marginal behaviour; the whole range is diluted by fixed costs
    return {"intercept": round(a, 3), "slope": b, "r2": round(r2, 4),
            "exponent": exponent(ordered[-2], ordered[-1]), "exponent_whole_range": exponent(ordered[0], ordered[-1])}


def scaling(bench: Bench, base: LandingSpec, full: Measurement, full_spec: LandingSpec) -> dict[str, Any]:
    """The pipeline at several completion counts (same days) and several day counts (same daily volume)."""
    args = bench.args
    sizes = [count(s) for s in args.scaling_completions.split(",")]
    day_counts = [int(d) for d in args.scaling_days.split(",")]
    per_day = max(sizes) / base.days
    runs: dict[tuple[int, int], dict[str, Any]] = {}

    def measure(completions: int, days: int) -> dict[str, Any]:
        if (completions, days) in runs:
            return runs[(completions, days)]
        spec = LandingSpec(items=base.items, completions=completions, days=days, seed=base.seed, plants=base.plants)
        if spec == full_spec:
            m = full
        else:
            landing, _ = ensure_landing(spec, bench.out / "data", log=bench.say)
            m = bench.pipeline(f"pipeline-c{human(completions)}-d{days}", landing, spec)
        runs[(completions, days)] = {"completions": completions, "days": days, "wall_s": round(m.wall_s, 2),
                                     "cpu_s": round(m.user_s + m.sys_s, 2), "peak_rss_bytes": m.peak_rss_bytes,
                                     "ok": m.ok, "other_processes_cores_busy": round(m.other_cpu, 2)}
        return runs[(completions, days)]

    by_completions = [measure(c, base.days) for c in sizes]
    if full_spec.days == base.days and full_spec.completions not in sizes:
        by_completions.append(measure(full_spec.completions, base.days))  # the main run is a point too
    by_days = [measure(round(per_day * d), d) for d in day_counts]

    def fits(rows: list[dict[str, Any]], x: str) -> dict[str, Any]:
        ok = [r for r in rows if r["ok"]]
        return {"wall": fit([(r[x], r["wall_s"]) for r in ok]), "cpu": fit([(r[x], r["cpu_s"]) for r in ok]),
                "rss": fit([(r[x], r["peak_rss_bytes"]) for r in ok])}

    return {"by_completions": by_completions, "by_days": by_days, "completions_per_day_in_days_sweep": per_day,
            "fit_completions": fits(by_completions, "completions"), "fit_days": fits(by_days, "days")}


# ------------------------------------------------------------------------------------ targets and report


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    c = r["contenders"]
    p, b = c.get("pipeline"), c.get("baseline_b")
    n = r["params"]["completions"]

    def line(name: str, ok: bool | None, measured: str) -> None:
        out.append({"target": name, "status": "SKIP" if ok is None else "PASS" if ok else "FAIL", "measured": measured})

    if p and b and p["exit_code"] == 0 and b["exit_code"] == 0:
        ratio = p["wall_s"] / b["wall_s"]
        line("pipeline wall <= baseline B core wall (ratio <= 1.0)", ratio <= 1.0,
             f"{p['wall_s']:.1f} s / {b['wall_s']:.1f} s = {ratio:.2f} (CPU {p['cpu_s']:.0f} s vs {b['cpu_s']:.0f} s)")
    else:
        line("pipeline wall <= baseline B core wall (ratio <= 1.0)", None,
             "baseline B not run" if not b else "a contender failed")
    if p:
        ok = p["exit_code"] == 0 and not p["killed"]
        line(f"peak RSS <= 2 GiB at {human(n)} completions", ok and p["peak_rss_bytes"] <= RSS_TARGET,
             f"{gib(p['peak_rss_bytes'])}" + ("" if ok else f" ({p['killed'] or 'failed'})")
             + ("" if n == 5_000_000 else " (the target is set at 5M)"))
    big = r.get("scale_50m")
    if big:
        ok = big["exit_code"] == 0 and not big["killed"]
        line(f"peak RSS <= 2 GiB at {human(big['completions'])} completions", ok and big["peak_rss_bytes"] <= RSS_TARGET,
             f"{gib(big['peak_rss_bytes'])}, {big['wall_s']:.0f} s" + ("" if ok else f" ({big['killed'] or 'failed'})"))
    else:
        line("peak RSS <= 2 GiB at 50M completions", None, "run with --scale 50M")
    s = r.get("scaling")
    if s:
        for label, key in (("completions", "fit_completions"), ("days", "fit_days")):
            f = s[key]["cpu"]  # CPU seconds: the cost, and far less disturbed by other users than wall
            k = f.get("exponent")
            rows = s["by_completions" if label == "completions" else "by_days"]
            shown = ", ".join(f"{human(x['completions'])}/{x['days']}d {x['cpu_s']:.0f} s CPU ({x['wall_s']:.0f} s wall)"
                              for x in rows)
            line(f"cost grows linearly with {label} (CPU s ~ size^k between the two largest, k <= "
                 f"{LINEAR_EXPONENT_MAX})", k is not None and k <= LINEAR_EXPONENT_MAX,
                 f"k = {k} (whole range {f.get('exponent_whole_range')}; wall k = {s[key]['wall'].get('exponent')}), "
                 f"linear fit R2 = {f.get('r2')}; {shown}")
    else:
        line("cost grows linearly with completions and days", None, "run with --scaling")
    d = r.get("single_days")
    if d and d.get("ratio") is not None:
        line(f"one {r['params']['days']}-day backfill <= {SINGLE_DAY_RATIO_MAX:g} x {r['params']['days']} single-day runs",
             d["ratio"] <= SINGLE_DAY_RATIO_MAX,
             f"backfill {d['backfill_wall_s']:.1f} s vs {d['estimated_all_days_wall_s']:.1f} s "
             f"(mean of {len(d['days_sampled'])} sampled days {d['mean_single_day_wall_s']:.1f} s x {r['params']['days']}) "
             f"= {d['ratio']:.3f}")
    else:
        line("a backfill costs far less than single-day runs", None, "not measured")
    out.extend(peers.targets(r))
    e = r.get("explode_cost", {}).get("sizes")
    if e and len(e) == 2:
        growth = e[1]["explode_s"] / e[0]["explode_s"] if e[0]["explode_s"] else float("inf")
        line(f"bom.explode cost does not grow with completions (x10 completions -> <= x{EXPLODE_GROWTH_MAX})",
             growth <= EXPLODE_GROWTH_MAX,
             f"{human(e[0]['completions'])}: {e[0]['explode_s']:.2f} s ({e[0]['explosion_keys']:,} keys) -> "
             f"{human(e[1]['completions'])}: {e[1]['explode_s']:.2f} s ({e[1]['explosion_keys']:,} keys) = x{growth:.2f}")
    else:
        line("bom.explode cost does not grow with completions", None, "not measured")
    return out


def report(r: dict[str, Any]) -> str:
    lines = []
    m = r["machine"]
    lines.append(f"backflush benchmark {r['started_at']}  ({m['nproc']} cores, {m['memory_gib']} GiB, {m['cpu_model']};"
                 " SHARED machine: other engineers' tests ran concurrently, see 'others busy')")
    e = r["engine"]
    lines.append(f"engine: {e['rev']} at {e['head']} ({e['head_subject']}); pipeline sha {e['pipeline_sha256']}"
                 + (f"; uncommitted: {len(e['uncommitted_pipeline_files'])} files" if e["uncommitted_pipeline_files"] else ""))
    p = r["params"]
    lines.append(f"data: {p['completions']:,} completions over {p['days']} days ({p['start']} .. {p['end']}), "
                 f"{p['items']:,} finished goods, {p['plants']} plants, seed {p['seed']}; rows: "
                 + ", ".join(f"{t} {n:,}" for t, n in r["landing"].get("rows", {}).items()))
    lines.append("")
    lines.append(f"{'contender':<34}{'wall s':>9}{'CPU s':>9}{'peak RSS':>11}{'compl/s':>11}"
                 f"{'pipeline/it':>13}{'others busy':>13}")
    c = r["contenders"]
    pipe = c.get("pipeline")
    labels = {"pipeline": "pipeline (backflush backfill)", "baseline_a": "baseline A (ERP, per completion)",
              "baseline_b": "baseline B (DuckDB SQL core)"}
    for key, label in labels.items():
        x = c.get(key)
        if not x:
            continue
        failed = x["exit_code"] != 0 or x["killed"]
        ratio = (f"{pipe['wall_s'] / x['wall_s']:.2f}x" if pipe and not failed and key != "pipeline"
                 and pipe["exit_code"] == 0 else "")
        lines.append(f"{label + (' *' if x.get('estimated') else ''):<34}{x['wall_s']:>9.1f}{x['cpu_s']:>9.1f}"
                     f"{gib(x['peak_rss_bytes']):>11}{(x['completions_per_s'] or 0):>11,}{ratio:>13}"
                     f"{x['other_processes_cores_busy']:>13.2f}" + ("  FAILED " + (x["killed"] or "") if failed else ""))
    a = c.get("baseline_a")
    if a and a.get("estimated"):
        lines.append(f"  * {a['note']} ({a['per_completion_us']} us per completion, measured wall "
                     f"{a['measured_wall_s']:.1f} s)")
    if pipe and c.get("baseline_b") and pipe["exit_code"] == 0:
        b = c["baseline_b"]
        lines.append(f"  pipeline vs baseline B: wall x{pipe['wall_s'] / b['wall_s']:.2f}, CPU x{pipe['cpu_s'] / b['cpu_s']:.2f},"
                     f" peak RSS x{pipe['peak_rss_bytes'] / b['peak_rss_bytes']:.2f}")
    if pipe and a and pipe["exit_code"] == 0 and a["exit_code"] == 0:
        lines.append(f"  pipeline vs baseline A: wall x{pipe['wall_s'] / a['wall_s']:.2f}")
    agreement = r.get("agreement")
    if agreement and agreement.get("error"):
        lines.append(f"baseline B vs pipeline: comparison failed: {agreement['error']}")
    elif agreement:
        lines.append("")
        lines.append("baseline B vs pipeline (same completions; pipeline's quarantined completions excluded):")
        for name in ("consumption", "adjustments"):
            s = agreement[name]
            lines.append(f"  {name:<12} {s['rows_pipeline']:>11,} rows vs {s['rows_other']:>11,}: "
                         + ("AGREE" if s["agree"] else f"{s['mismatched_rows']:,} MISMATCHED rows "
                            + ", ".join(f"{k} {v:,}" for k, v in s.items() if k.endswith("differs") and v)
                            + f", only in pipeline {s['only_in_pipeline']:,}, only in B {s['only_in_other']:,}"))
            for side, n_zero in (("pipeline", s["zero_rows_only_in_pipeline"]), ("B", s["zero_rows_only_in_other"])):
                if n_zero:
                    lines.append(f"      ({n_zero:,} rows of zero quantity from zero counted completions, i.e. only "
                                 f"cancellations, exist only in {side}: not a different number, not counted)")
            idc = s.get("adjustment_id_check")
            if idc:
                lines.append(f"      adjustment_id: unique per key in pipeline {idc['pipeline_ids_unique_per_key']}, "
                             f"in B {idc['other_ids_unique_per_key']}; identical to B's (SHA-256) ids on "
                             f"{idc['same_ids_on_both_sides']:,} keys (the contract fixes no hash function)")
            for ex in s["examples"][:3]:
                lines.append(f"      e.g. {json.dumps(ex, default=str)}")
        lines.append(f"  quarantined by the pipeline: {agreement.get('pipeline_quarantined_completions') or 'none'};"
                     f" rejected by B itself: {agreement.get('other_rejected_completions') or 'none'}")
    if r.get("agreement_a") and not r["agreement_a"].get("error"):
        s = r["agreement_a"]
        lines.append("baseline A (every completion) vs pipeline: " + ("AGREE" if s["agree"] else "MISMATCH "
                     + ", ".join(f"{n} {s[n]['mismatched_rows']:,}" for n in ("consumption", "adjustments"))))
    st = r.get("stages")
    if st and st.get("tree"):
        lines.append("")
        lines.append(f"pipeline time by stage (in-process, every engine function timed: {st['wall_s']:.1f} s, "
                     f"peak RSS {gib(st['peak_rss_bytes'])}):")
        if st.get("interrupted"):
            lines.append(f"  INCOMPLETE: {st['interrupted']} ({st['process']['killed']})")
        for row in st["summary"]:
            share = f"{row['share'] * 100:5.1f} %" if row["share"] is not None else ""
            lines.append(f"  {row['stage']:<56}{row['seconds']:>8.1f} s {share:>8}   peak {gib(row['peak_rss_bytes'])}")
        lines.append("  call tree (>= 1 % of the time):")
        from stages import flat_stages

        for row in flat_stages(st["tree"], 4):
            if row["share"] is not None and row["share"] >= 0.01:
                lines.append(f"    {row['stage']:<66}{row['seconds']:>8.1f} s {row['calls']:>5}x"
                             f"   RSS in {gib(row['rss_in_bytes'])} peak {gib(row['peak_rss_bytes'])}")
    cp = r.get("cprofile")
    if cp and cp.get("top_own"):
        lines.append("")
        lines.append(f"cProfile (wall {cp['wall_s']:.1f} s under the profiler), top functions by own time:")
        for row in cp["top_own"][:15]:
            lines.append(f"  {row['own_seconds']:>8.2f} s {row['calls']:>10,}x  {row['function']}")
    e = r.get("explode_cost", {}).get("sizes")
    if e:
        lines.append("")
        lines.append("explosion cost (bom.explode, best of 3):")
        for x in e:
            lines.append(f"  {x['completions']:>11,} completions: {x['explosion_keys']:>9,} keys "
                         f"({x['distinct_items']:,} items, {x['effectivity_epochs']} effectivity epochs) "
                         f"explode {x['explode_s']:.2f} s; explode_completions {x['explode_completions_s']:.2f} s")
    d = r.get("single_days")
    if d:
        lines.append("")
        lines.append("single-day runs (`backflush run --date D`, in date order into one fresh warehouse, landing "
                     + ("as it stood at the end of D" if d.get("landing") == "as-of" else "of the whole range") + "):")
        for x in d["runs"]:
            lines.append(f"  {x['date']}: {x['wall_s']:.1f} s, peak RSS {x['peak_rss_gib']:.2f} GiB")
    s = r.get("scaling")
    if s:
        lines.append("")
        lines.append("scaling (pipeline backfill):")
        for x in s["by_completions"] + [y for y in s["by_days"] if y not in s["by_completions"]]:
            lines.append(f"  {x['completions']:>11,} completions / {x['days']:>2} days: {x['wall_s']:>8.1f} s wall,"
                         f" {x['cpu_s']:>8.1f} s CPU, peak RSS {gib(x['peak_rss_bytes'])}")
        for label, key in (("completions", "fit_completions"), ("days", "fit_days")):
            f = s[key]
            lines.append(f"  vs {label} (exponent k of cost ~ size^k, two largest sizes / whole range): "
                         f"CPU {f['cpu'].get('exponent')} / {f['cpu'].get('exponent_whole_range')}, "
                         f"wall {f['wall'].get('exponent')} / {f['wall'].get('exponent_whole_range')}, "
                         f"peak RSS {f['rss'].get('exponent')} / {f['rss'].get('exponent_whole_range')}")
    lines.extend(peers.report(r))
    lines.append("")
    lines.append("targets:")
    for t in r["targets"]:
        lines.append(f"  {t['status']:<5} {t['target']}: {t['measured']}")
    return "\n".join(lines)


def markdown(r: dict[str, Any]) -> str:
    """The headline tables as Markdown, for docs/performance.md."""
    out = []
    m, p = r["machine"], r["params"]
    out.append(f"Measured {r['started_at']} on {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
               f"shared with other engineers' test runs; engine {r['engine']['rev']} at {r['engine']['head']}; "
               f"{p['completions']:,} completions over {p['days']} days.")
    out.append("")
    out.append("| contender | wall s | CPU s | peak RSS | completions/s | pipeline wall / contender | others busy (cores) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    c = r["contenders"]
    pipe = c.get("pipeline")
    names = {"pipeline": "pipeline: `backflush backfill`", "baseline_a": "baseline A: ERP, per completion (estimated)",
             "baseline_b": "baseline B: DuckDB SQL core"}
    for key, label in names.items():
        x = c.get(key)
        if not x:
            continue
        ratio = f"{pipe['wall_s'] / x['wall_s']:.2f}" if pipe and key != "pipeline" and x["wall_s"] else ""
        out.append(f"| {label} | {x['wall_s']:,.1f} | {x['cpu_s']:,.1f} | {gib(x['peak_rss_bytes'])} | "
                   f"{(x['completions_per_s'] or 0):,} | {ratio} | {x['other_processes_cores_busy']:.2f} |")
    st = r.get("stages")
    if st and st.get("summary"):
        out.append("")
        out.append(f"| pipeline stage (in-process run, {st['wall_s']:.0f} s) | seconds | share | peak RSS during |")
        out.append("|---|---:|---:|---:|")
        for row in st["summary"]:
            share = f"{row['share'] * 100:.1f} %" if row["share"] is not None else ""
            out.append(f"| {row['stage']} | {row['seconds']:.1f} | {share} | {gib(row['peak_rss_bytes'])} |")
    out.extend(peers.markdown(r))
    out.append("")
    out.append("| target | result | measured |")
    out.append("|---|---|---|")
    for t in r["targets"]:
        out.append(f"| {t['target']} | **{t['status']}** | {t['measured']} |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8000, help="finished goods (default %(default)s)")
    parser.add_argument("--completions", type=count, default=5_000_000, help="e.g. 200k, 5M (default 5M)")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--plants", type=int, default=3)
    parser.add_argument("--bad-rows", action="store_true", help="generate rows of every quarantine code too")
    parser.add_argument("--sample", type=count, default=20_000, help="baseline A's sample of completions (0: all)")
    parser.add_argument("--b-memory-limit", help="DuckDB memory_limit for baseline B, e.g. 2GB (default: DuckDB's)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of pipeline and baseline B; the best counts "
                        f"(at least {peers.ROUNDS} interleaved rounds unless c, d and floor are skipped)")
    parser.add_argument("--skip", default="", help="comma-separated: a, b, c, d, floor, stages, explode, single-days")
    parser.add_argument("--single-days", type=int, default=5, help="single-day runs to sample (default 5)")
    parser.add_argument("--single-days-landing", choices=["as-of", "full"], default="as-of",
                        help="single-day runs read the landing as of the end of their date (default) or all of it")
    parser.add_argument("--scaling", action="store_true", help="also run the pipeline at several sizes and fit")
    parser.add_argument("--scaling-completions", default="500k,1M,2M")
    parser.add_argument("--scaling-days", default="10,20,30")
    parser.add_argument("--scale", type=count, help="also run the pipeline at this many completions, e.g. 50M")
    parser.add_argument("--cprofile", action="store_true", help="also profile the pipeline with cProfile")
    parser.add_argument("--check-a", action="store_true", help="also run baseline A on every completion and "
                        "compare it with the pipeline (small scales only)")
    parser.add_argument("--engine-rev", help="benchmark the pipeline package of this git revision "
                        "instead of the working tree")
    parser.add_argument("--wait-for-idle", type=float, default=0, metavar="SECONDS",
                        help="before each run, wait up to this long for other processes to go quiet")
    parser.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per child (default 3 h)")
    parser.add_argument("--memory-cap-gib", type=float, help="stop a child beyond this RSS (default 70 %% of RAM)")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--keep", action="store_true", help="keep warehouses and baseline outputs under out/work")
    parser.add_argument("--report-from", type=Path, metavar="JSON",
                        help="print the report (and Markdown tables) of an earlier results file; run nothing")
    parser.add_argument("--recompare", action="store_true",
                        help="with --report-from: compare the outputs kept under out/work again and update the file")
    nightly.add_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_from:
        earlier = json.loads(args.report_from.read_text())
        if args.recompare:  # the comparison again, on the outputs a --keep run left under out/work
            bench = Bench(args)
            spec = LandingSpec(**{k: v for k, v in earlier["params"].items() if k not in ("start", "end")},
                               start=dt.date.fromisoformat(earlier["params"]["start"]))
            earlier["agreement"] = compare_outputs(bench, "compare-b", bench.work / "warehouse-pipeline",
                                                   bench.work / "baseline-b", spec)
            earlier["agreement"]["recompared_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            earlier["targets"] = targets(earlier)
            earlier["report"] = report(earlier)
            args.report_from.write_text(json.dumps(earlier, indent=1, default=str))
        if "nightly" in earlier:
            print(nightly.report(earlier) + "\n\n" + nightly.markdown(earlier))
            return 0
        print(report(earlier) + "\n\n" + markdown(earlier))
        return 0
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    bench = Bench(args)
    started = dt.datetime.now(dt.UTC)
    spec = LandingSpec(items=args.items, completions=args.completions, days=args.days, seed=args.seed,
                       plants=args.plants, bad_rows=args.bad_rows)
    r: dict[str, Any] = {"started_at": started.isoformat(timespec="seconds"), "machine": machine(),
                         "engine": engine_info(bench.engine, args.engine_rev), "params": spec.as_dict(),
                         "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                         "contenders": {}}
    if args.nightly:  # the nightly scenario alone (benchmarks/nightly.py, issue 17.5 and 17.6)
        r["nightly"] = nightly.scenario(bench, args)
        r["params"], r["targets"] = r["nightly"]["params"], nightly.targets(r["nightly"])
        return save_results(args, bench, r, started, "results-nightly", nightly.report, nightly.markdown)
    bench.say(f"backflush benchmark: {spec.completions:,} completions, {spec.days} days "
              f"(machine shared: timings include other processes' load)")
    landing, info = ensure_landing(spec, args.out / "data", log=bench.say)
    r["landing"] = info
    n = spec.completions

    bench.say("contenders:")
    wh = bench.fresh("warehouse-pipeline")
    runs: list[Measurement] = []
    b_runs: list[Measurement] = []
    b_out = bench.work / "baseline-b"
    others = peers.Peers(bench, landing, spec, skip)
    for i in range(others.rounds(args.repeat)):  # interleaved, so that all see the machine's load alike
        if i:
            shutil.rmtree(wh, ignore_errors=True)
        runs.append(bench.pipeline("pipeline", landing, spec, wh))
        if "b" not in skip:
            b_runs.append(baseline_b(bench, landing, wh if runs[-1].ok else None))
        others.round(wh, runs[-1].ok)
    pipe = best(runs)
    r["contenders"]["pipeline"] = contender(pipe, n, all_wall_s=[round(m.wall_s, 2) for m in runs])
    if "a" not in skip:
        r["contenders"]["baseline_a"] = baseline_a(bench, landing, n)
    if b_runs:
        b = contender(best(b_runs), n, all_wall_s=[round(m.wall_s, 2) for m in b_runs])
        stats_path = b_out / "stats.json"
        if stats_path.exists():
            stats = json.loads(stats_path.read_text())
            b.update(steps_s=stats["seconds"], rows=stats["rows"], duckdb_threads=stats["threads"],
                     excluded_pipeline_quarantine=stats["excluded_pipeline_quarantine"])
        r["contenders"]["baseline_b"] = b
        if pipe.ok and b["exit_code"] == 0:
            r["agreement"] = compare_outputs(bench, "compare-b", wh, b_out, spec)
            bench.say("    " + ("agree" if r["agreement"].get("agree") else "MISMATCH (see report)"))
    if others.active:
        r["peers"] = others.finish(runs, wh)
    if args.check_a and pipe.ok:
        out = bench.fresh("baseline-a-all")
        m = bench.run("baseline-a-all", bench.python("baseline_erp.py", "--landing", str(landing), "--out", str(out),
                                                      "--sample", "0"))
        if m.ok:
            r["agreement_a"] = compare_outputs(bench, "compare-a", wh, out, spec)
            r["agreement_a"]["process"] = m.as_dict()
    if "stages" not in skip:
        bench.say("stage breakdown:")
        st = stage_profile(bench, landing, spec, cprofile=False)
        if st.get("tree"):
            st["summary"] = stage_summary(st["tree"])
        r["stages"] = st
    if args.cprofile:
        bench.say("cProfile:")
        r["cprofile"] = stage_profile(bench, landing, spec, cprofile=True)
        prof = Path(r["cprofile"].get("prof", ""))
        if prof.is_file():
            kept = args.out / "cprofile-latest.prof"
            shutil.move(prof, kept)
            r["cprofile"]["prof"] = str(kept)
    if "explode" not in skip:
        bench.say("explosion cost:")
        r["explode_cost"] = explode_cost(bench, landing, n)
    if "single-days" not in skip and args.single_days > 0 and pipe.ok:
        bench.say("single-day runs:")
        r["single_days"] = single_days(bench, landing, spec, pipe)
    if args.scaling:
        bench.say("scaling:")
        r["scaling"] = scaling(bench, spec, pipe, spec)
    if args.scale:
        bench.say(f"scale {human(args.scale)}:")
        big = LandingSpec(items=args.items, completions=args.scale, days=args.days, seed=args.seed, plants=args.plants)
        big_landing, big_info = ensure_landing(big, args.out / "data", log=bench.say)
        m = bench.pipeline(f"pipeline-{human(args.scale)}", big_landing, big)
        r["scale_50m"] = contender(m, args.scale, landing=big_info)
        shutil.rmtree(bench.work / f"warehouse-pipeline-{human(args.scale)}", ignore_errors=True)

    r["targets"] = targets(r)
    return save_results(args, bench, r, started)


def save_results(args: argparse.Namespace, bench: Bench, r: dict[str, Any], started: dt.datetime,
                 prefix: str = "results", render: Any = report, render_md: Any = markdown) -> int:
    """Print the report; write <prefix>-<timestamp>.json, <prefix>-latest.json and <prefix>-latest.md."""
    r["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    text = render(r)
    r["report"] = text
    print("\n" + text)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    args.out.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(r, indent=1, default=str)
    (args.out / f"{prefix}-{stamp}.json").write_text(payload)
    (args.out / f"{prefix}-latest.json").write_text(payload)
    (args.out / f"{prefix}-latest.md").write_text(render_md(r) + "\n")
    print(f"\nwritten: {args.out / f'{prefix}-{stamp}.json'} and {prefix}-latest.json")
    if not args.keep:
        shutil.rmtree(bench.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
