"""Peers we did not write (issue 13): baseline C, baseline D and the I/O floor, against the pipeline.

Each round of `make bench` runs the pipeline (and baseline B), then each peer, one after the
other, so that every contender sees the shared machine's load alike; at least ROUNDS rounds.
Reported: the median wall and CPU of each, the pipeline's median over each peer's median and
the ratio of each round's pair, the peak memory of each contender's whole process tree, and
whether C and D give the pipeline's consumption and adjustments.

  baseline C  benchmarks/baseline_duckdb_core.sql: the core as one plain DuckDB script;
  baseline D  benchmarks/baseline_polars.py: the same core as a lazy Polars query;
  I/O floor   benchmarks/io_floor.py: read the needed landing columns, write the pipeline's
              output files again (same rows and schemas), compute nothing.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from landing import LandingSpec
from measure import GIB, Measurement

ROUNDS = 3
TREE_TARGET = 2 * GIB
C_RATIO_MAX = 1.0  # pipeline wall <= baseline C's
FLOOR_RATIO_MAX = 2.0  # pipeline wall <= 2 x the I/O floor's
AGREE_REL = 1e-12  # far below the rounding unit: 1e-12 x the largest quantity (~1e7 at 5M) < 0.001
NAMES = {"c": "baseline C (DuckDB SQL script)", "d": "baseline D (lazy Polars)", "floor": "I/O floor (pyarrow)"}
# the stages of the in-process breakdown that variance and the ledger add (the engine has no switch)
VARIANCE_LEDGER_STAGES = ("flows into count windows (variance.CountWindows)",
                          "postings delta (ledger.postings_delta + read ledger)",
                          "variance (variance_scope + count_variance)", "BOM accuracy")


class BenchLike(Protocol):
    work: Path

    def run(self, name: str, command: list[str]) -> Measurement: ...
    def fresh(self, name: str) -> Path: ...
    def python(self, script: str, *args: str) -> list[str]: ...
    def say(self, text: str) -> None: ...


def gib(b: float | None) -> str:
    return "-" if b is None else f"{b / GIB:.2f} GiB"


class Peers:
    """The peers' runs of one benchmark invocation."""

    def __init__(self, bench: BenchLike, landing: Path, spec: LandingSpec, skip: set[str]) -> None:
        self.bench, self.landing, self.spec = bench, landing, spec
        self.names = [k for k in NAMES if k not in skip]
        self.runs: dict[str, list[Measurement]] = {k: [] for k in self.names}
        self.shape = bench.work / "io-floor-shape.json"

    @property
    def active(self) -> bool:
        return bool(self.names)

    def rounds(self, repeat: int) -> int:
        return max(repeat, ROUNDS) if self.active else repeat

    def out(self, name: str) -> Path:
        return self.bench.work / f"peer-{name}"

    def round(self, pipeline_wh: Path, pipeline_ok: bool) -> None:
        """One run of each peer (after the round's pipeline run)."""
        b = self.bench
        for name in self.names:
            out = b.fresh(f"peer-{name}")
            if name == "c":
                command = b.python("baseline_duckdb_core.py", "--landing", str(self.landing), "--out", str(out))
            elif name == "d":
                command = b.python("baseline_polars.py", "--landing", str(self.landing), "--out", str(out))
            else:
                if not self.shape.exists():  # the outputs' shape, from the first good pipeline run (not timed)
                    if not pipeline_ok:
                        continue
                    subprocess.run(b.python("io_floor.py", "--describe", str(pipeline_wh), "--shape",
                                            str(self.shape)), check=True)
                command = b.python("io_floor.py", "--landing", str(self.landing), "--shape", str(self.shape),
                                   "--out", str(out))
            self.runs[name].append(b.run(f"peer-{name}", command))

    def agreement(self, name: str, pipeline_wh: Path) -> dict[str, Any]:
        """compare.py on the last round's output of a baseline and the pipeline's warehouse."""
        b, spec = self.bench, self.spec
        out = b.work / f"compare-{name}.json"
        m = b.run(f"compare-{name}", b.python("compare.py", "--pipeline", str(pipeline_wh), "--other",
                                              str(self.out(name)), "--start", spec.start.isoformat(), "--end",
                                              spec.end.isoformat(), "--rel", str(AGREE_REL), "--out", str(out)))
        if not out.exists():
            return {"agree": False, "error": m.killed or f"exit {m.exit_code}, see {m.log}"}
        return dict(json.loads(out.read_text()))

    def finish(self, pipeline_runs: list[Measurement], pipeline_wh: Path) -> dict[str, Any]:
        """Medians, per-round ratios, tree peaks and agreement, for the results JSON."""
        result: dict[str, Any] = {"rounds": len(pipeline_runs), "pipeline": summary(pipeline_runs), "peers": {}}
        pipe = result["pipeline"]
        for name in self.names:
            runs = self.runs[name]
            s = summary(runs)
            s["label"] = NAMES[name]
            stats_file = self.out(name) / "stats.json"
            if stats_file.exists():
                s["stats"] = json.loads(stats_file.read_text())
            if pipe["median_wall_s"] and s["median_wall_s"]:
                s["pipeline_over_it"] = round(pipe["median_wall_s"] / s["median_wall_s"], 3)
                pairs = [p.wall_s / x.wall_s for p, x in zip(pipeline_runs, runs, strict=False)
                         if p.ok and x.ok and x.wall_s]
                s["pair_ratios"] = [round(x, 3) for x in pairs]
                s["median_pair_ratio"] = round(statistics.median(pairs), 3) if pairs else None
            if name in ("c", "d") and s["ok_runs"] and pipeline_runs and pipeline_runs[-1].ok:
                s["agreement"] = self.agreement(name, pipeline_wh)
                self.bench.say(f"    {NAMES[name]} vs pipeline: "
                               + ("agree" if s["agreement"].get("agree") else "MISMATCH (see report)"))
            result["peers"][name] = s
        return result


def summary(runs: list[Measurement]) -> dict[str, Any]:
    ok = [m for m in runs if m.ok]
    return {
        "runs": len(runs), "ok_runs": len(ok),
        "all_wall_s": [round(m.wall_s, 2) for m in runs],
        "all_cpu_s": [round(m.user_s + m.sys_s, 2) for m in runs],
        "median_wall_s": round(statistics.median(m.wall_s for m in ok), 3) if ok else None,
        "median_cpu_s": round(statistics.median(m.user_s + m.sys_s for m in ok), 3) if ok else None,
        # the largest over the rounds: the peak the machine must have room for
        "peak_tree_rss_bytes": max((m.peak_tree_rss_bytes for m in ok), default=None),
        "peak_tree_processes": max((m.peak_tree_processes for m in ok), default=None),
        "peak_group_pss_bytes": max((m.peak_rss_bytes for m in ok), default=None),
        "other_processes_cores_busy": [round(m.other_cpu, 2) for m in runs],
        "failures": [m.killed or f"exit {m.exit_code}" for m in runs if not m.ok],
    }


def cpu_ratio(pipe: dict[str, Any], x: dict[str, Any]) -> float | None:
    """The pipeline's median CPU seconds over a peer's: less moved by other users' load than wall."""
    if not pipe.get("median_cpu_s") or not x.get("median_cpu_s"):
        return None
    return float(pipe["median_cpu_s"] / x["median_cpu_s"])


def without_variance_ledger(r: dict[str, Any]) -> dict[str, Any] | None:
    """The in-process stage breakdown less the stages that variance and the ledger add."""
    st = r.get("stages")
    if not st or not st.get("summary"):
        return None
    rows = {row["stage"]: row["seconds"] for row in st["summary"]}
    parts = {name: rows.get(name, 0.0) for name in VARIANCE_LEDGER_STAGES}
    return {"in_process_wall_s": st["wall_s"], "variance_ledger_stages_s": parts,
            "without_variance_ledger_s": round(st["wall_s"] - sum(parts.values()), 2)}


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    p = r.get("peers")
    if not p:
        return []
    out = []
    n = r["params"]["completions"]
    pipe = p["pipeline"]

    def line(name: str, ok: bool | None, measured: str) -> None:
        out.append({"target": name, "status": "SKIP" if ok is None else "PASS" if ok else "FAIL", "measured": measured})

    for key, limit in (("c", C_RATIO_MAX), ("floor", FLOOR_RATIO_MAX)):
        label = f"pipeline median wall <= {limit:g} x {NAMES[key]} median wall"
        x = p["peers"].get(key)
        if not x or x.get("pipeline_over_it") is None:
            line(label, None, "not run" if not x else "a contender failed")
            continue
        line(label, x["pipeline_over_it"] <= limit,
             f"{pipe['median_wall_s']:.1f} s / {x['median_wall_s']:.1f} s = {x['pipeline_over_it']:.2f} "
             f"(pairs {', '.join(f'{v:.2f}' for v in x['pair_ratios'])}; CPU {pipe['median_cpu_s']:.1f} s / "
             f"{x['median_cpu_s']:.1f} s = {cpu_ratio(pipe, x) or 0:.2f})")
    tree = pipe["peak_tree_rss_bytes"]
    line(f"pipeline process tree peak <= 2 GiB at {n / 1e6:g}M completions", None if tree is None else tree <= TREE_TARGET,
         f"{gib(tree)} summed RSS over {pipe['peak_tree_processes']} processes (group PSS {gib(pipe['peak_group_pss_bytes'])})"
         + ("" if n in (5_000_000, 50_000_000) else " (the target is set at 5M and 50M)"))
    for key in ("c", "d"):
        x = p["peers"].get(key)
        if x and "agreement" in x:
            a = x["agreement"]
            line(f"{NAMES[key]} gives the pipeline's consumption and adjustments (rel {AGREE_REL:g})", bool(a.get("agree")),
                 a.get("error") or ", ".join(f"{d} {a[d]['rows_pipeline']:,} rows, {a[d]['mismatched_rows']:,} mismatched"
                                             for d in ("consumption", "adjustments")))
    return out


def report(r: dict[str, Any]) -> list[str]:
    p = r.get("peers")
    if not p:
        return []
    pipe = p["pipeline"]
    lines = ["", f"peers, {p['rounds']} interleaved rounds (medians; pipeline/it = pipeline median over its median):",
             f"{'contender':<34}{'wall s':>9}{'CPU s':>9}{'tree peak':>11}{'procs':>6}{'pipeline/it':>13}{'CPU':>7}"
             "  rounds (wall s)"]

    def row(label: str, s: dict[str, Any], ratio: str, cpu: str = "") -> None:
        wall = f"{s['median_wall_s']:>9.1f}" if s["median_wall_s"] is not None else f"{'FAILED':>9}"
        cpu_s = f"{s['median_cpu_s']:>9.1f}" if s["median_cpu_s"] is not None else f"{'':>9}"
        lines.append(f"{label:<34}{wall}{cpu_s}{gib(s['peak_tree_rss_bytes']):>11}{s['peak_tree_processes'] or '':>6}"
                     f"{ratio:>13}{cpu:>7}  {', '.join(f'{w:.1f}' for w in s['all_wall_s'])}"
                     + (f"  failures: {s['failures']}" if s["failures"] else ""))

    row("pipeline (backflush backfill)", pipe, "")
    for s in p["peers"].values():
        ratio = f"{s['pipeline_over_it']:.2f}x" if s.get("pipeline_over_it") is not None else ""
        c = cpu_ratio(pipe, s)
        row(s["label"], s, ratio, f"{c:.2f}x" if c is not None else "")
        if s.get("pair_ratios"):
            lines.append(f"  {'':<32}pipeline/it per round: {', '.join(f'{v:.2f}' for v in s['pair_ratios'])}")
    lines.append("  tree peak: RSS summed over the contender's process and every worker it started, sampled with "
                 "psutil every 0.25 s; the largest over the rounds")
    for key in ("c", "d"):
        a = p["peers"].get(key, {}).get("agreement")
        if a and not a.get("error"):
            lines.append(f"  {NAMES[key]} vs pipeline: " + "; ".join(
                f"{d} {a[d]['rows_pipeline']:,} vs {a[d]['rows_other']:,} rows "
                + ("AGREE" if a[d]["agree"] else f"{a[d]['mismatched_rows']:,} MISMATCHED")
                + (f" (not compared: {', '.join(a[d]['not_compared'])})" if a[d].get("not_compared") else "")
                for d in ("consumption", "adjustments")))
        elif a:
            lines.append(f"  {NAMES[key]} vs pipeline: comparison failed: {a['error']}")
    w = without_variance_ledger(r)
    if w:
        parts = ", ".join(f"{k.split(' (')[0]} {v:.1f} s" for k, v in w["variance_ledger_stages_s"].items())
        lines.append(f"  without variance and ledger (the engine has no switch; from the in-process stage breakdown): "
                     f"{w['in_process_wall_s']:.1f} s - ({parts}) = {w['without_variance_ledger_s']:.1f} s")
    return lines


def markdown(r: dict[str, Any]) -> list[str]:
    """The peers' table as Markdown, for docs/performance.md."""
    p = r.get("peers")
    if not p:
        return []
    out = ["", f"| contender ({p['rounds']} interleaved rounds) | median wall s | median CPU s | process tree peak "
           "| pipeline wall / contender (medians) | per round |", "|---|---:|---:|---:|---:|---|"]
    for label, s in [("pipeline: `backflush backfill`", p["pipeline"])] + [(x["label"], x) for x in p["peers"].values()]:
        wall = f"{s['median_wall_s']:.1f}" if s["median_wall_s"] is not None else "failed"
        cpu = f"{s['median_cpu_s']:.1f}" if s["median_cpu_s"] is not None else ""
        ratio = f"{s['pipeline_over_it']:.2f}" if s.get("pipeline_over_it") is not None else ""
        pairs = ", ".join(f"{v:.2f}" for v in s.get("pair_ratios", []))
        out.append(f"| {label} | {wall} | {cpu} | {gib(s['peak_tree_rss_bytes'])} | {ratio} | {pairs} |")
    return out


if __name__ == "__main__":
    sys.exit("peers.py is used by benchmarks/run.py")
