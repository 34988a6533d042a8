"""Where the pipeline's own time and memory go: one backfill in-process, every engine function timed.

Every function of the engine modules (and the methods of Warehouse and Transaction) is wrapped
with a timer that keeps a call tree: inclusive wall seconds, calls, and the peak RSS while the
function ran (the kernel's high-water mark, reset at each boundary, so peaks are exact, not
sampled). Wrapping is by discovery, so it follows the engine as it is refactored. Functions whose
first argument is a short string (a table or dataset name) are split per name, e.g.
`sources.coerce_table[completions]`.

With --cprofile, the same backfill runs under cProfile instead (no stage wrappers), and the top
functions by own and cumulative time are written out: that is where the pandas operations show.

    python benchmarks/stages.py --landing L --warehouse W --start D --end D --out stages.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import importlib
import inspect
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ENGINE_MODULES = ("job", "stages.read", "stages.digest", "stages.daily", "stages.counts", "stages.quarantine_files", "stages.result", "intake.scan", "intake.coerce",
                  "intake.accept", "intake.spill", "contract.schemas", "domain.bom", "domain.consumption",
                  "domain.ledger", "domain.variance", "domain.stock_windows", "domain.late_data", "domain.accuracy",
                  "store.warehouse", "domain.rounding", "progress")
CLASSES = {"warehouse": ("Warehouse", "Transaction"), "accept": ("InputLoader", "CompletionAcceptor"),
           "consumption": ("ExplosionCatalog",), "stock_windows": ("CountWindows",), "digest": ("_Totals",)}
# tiny helpers called per partition or per value: timing them costs more than they do
SKIP = {"encode_segment", "_date", "_normalise", "_jsonable", "_file_token", "path", "partition_path",
        "exists", "is_local", "new_run_id", "column_kinds", "required_columns", "column_defaults",
        "empty_quarantine", "default_column"}


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


class Interrupted(BaseException):
    """The run was stopped from outside (SIGTERM); the stages measured so far are still written."""


class Node:
    """One function at one place in the call tree."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls = 0
        self.seconds = 0.0
        self.peak = 0
        self.rss_in = 0
        self.rss_out = 0
        self.children: dict[str, Node] = {}

    def child(self, name: str) -> Node:
        node = self.children.get(name)
        if node is None:
            node = self.children[name] = Node(name)
        return node

    def as_dict(self, total: float, min_seconds: float) -> dict[str, Any]:
        own = self.seconds - sum(c.seconds for c in self.children.values())
        kids = [c for c in sorted(self.children.values(), key=lambda c: -c.seconds) if c.seconds >= min_seconds]
        return {
            "name": self.name,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "own_seconds": round(own, 3),
            "share": round(self.seconds / total, 4) if total else None,
            "peak_rss_bytes": self.peak,
            "rss_in_bytes": self.rss_in,
            "rss_delta_bytes": self.rss_out - self.rss_in,
            "children": [c.as_dict(total, min_seconds) for c in kids],
        }


class Tracer:
    """The call tree and the peak-RSS bookkeeping (exact: VmHWM is reset at every boundary)."""

    def __init__(self) -> None:
        self.root = Node("backfill (in-process)")
        self.stack: list[tuple[Node, float, int]] = []  # node, start time, peak so far
        self.wrapped: list[str] = []

    def enter(self, name: str) -> None:
        hwm = _status("VmHWM")
        if self.stack:
            node, t0, peak = self.stack[-1]
            self.stack[-1] = (node, t0, max(peak, hwm))
        parent = self.stack[-1][0] if self.stack else self.root
        node = parent.child(name)
        node.calls += 1
        rss = _status("VmRSS")
        node.rss_in = rss if node.calls == 1 else node.rss_in
        _reset_peak()
        self.stack.append((node, time.perf_counter(), rss))

    @property
    def open_stages(self) -> list[str]:
        return [node.name for node, _, _ in self.stack]

    def exit(self) -> None:
        node, t0, peak = self.stack.pop()
        node.seconds += time.perf_counter() - t0
        peak = max(peak, _status("VmHWM"))
        node.peak = max(node.peak, peak)
        node.rss_out = _status("VmRSS")
        if self.stack:
            pnode, pt0, ppeak = self.stack[-1]
            self.stack[-1] = (pnode, pt0, max(ppeak, peak))
        _reset_peak()

    def wrap(self, label: str, fn: Callable[..., Any], *, method: bool) -> Callable[..., Any]:
        tracer = self
        arg_index = 1 if method else 0

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = label
            if len(args) > arg_index and isinstance(args[arg_index], str) and len(args[arg_index]) <= 40:
                name = f"{label}[{args[arg_index]}]"
            tracer.enter(name)
            try:
                return fn(*args, **kwargs)
            finally:
                tracer.exit()

        timed.__wrapped_by_bench__ = True  # type: ignore[attr-defined]
        return timed


def instrument(tracer: Tracer) -> None:
    """Wrap every engine function, and rebind every module-level reference to it (from-imports too)."""
    modules = {}
    for path in ENGINE_MODULES:
        short = path.rsplit(".", 1)[-1]
        try:
            modules[short] = importlib.import_module(f"pipeline.{path}")
        except ImportError:
            continue
    replaced: dict[int, Callable[..., Any]] = {}
    for short, module in modules.items():
        for name, obj in list(vars(module).items()):
            if inspect.isfunction(obj) and obj.__module__ == module.__name__ and name not in SKIP:
                wrapper = tracer.wrap(f"{short}.{name}", obj, method=False)
                replaced[id(obj)] = wrapper
                setattr(module, name, wrapper)
                tracer.wrapped.append(f"{short}.{name}")
        for cls_name in CLASSES.get(short, ()):
            cls = getattr(module, cls_name, None)
            if cls is None:
                continue
            for name, obj in list(vars(cls).items()):
                if inspect.isfunction(obj) and name not in SKIP and not name.startswith("__"):
                    setattr(cls, name, tracer.wrap(f"{short}.{cls_name}.{name}", obj, method=True))
                    tracer.wrapped.append(f"{short}.{cls_name}.{name}")
    for module in modules.values():  # `from pipeline.x import f` bound the original: rebind it
        for name, obj in list(vars(module).items()):
            if inspect.isfunction(obj) and id(obj) in replaced:
                setattr(module, name, replaced[id(obj)])


def flat_stages(tree: dict[str, Any], depth: int) -> list[dict[str, Any]]:
    """The tree's nodes down to `depth` as rows (name indented by level)."""
    rows: list[dict[str, Any]] = []

    def walk(node: dict[str, Any], level: int) -> None:
        rows.append({"stage": "  " * level + node["name"], "seconds": node["seconds"], "share": node["share"],
                     "calls": node["calls"], "peak_rss_bytes": node["peak_rss_bytes"],
                     "rss_in_bytes": node.get("rss_in_bytes"), "rss_delta_bytes": node.get("rss_delta_bytes")})
        if level < depth:
            for c in node["children"]:
                walk(c, level + 1)

    walk(tree, 0)
    return rows


def _run_backfill(landing: str, warehouse: str, start: dt.date, end: dt.date) -> object:
    from pipeline import job
    from pipeline.config import load_config

    # in one process (workers = 1): every stage's time is then its own, not a wait for workers
    config = load_config(None, landing=landing, warehouse=warehouse, workers=1)
    return job.backfill(config, start, end)


def _cprofile(args: argparse.Namespace, start: dt.date, end: dt.date) -> dict[str, Any]:
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    profiler.enable()
    _run_backfill(args.landing, args.warehouse, start, end)
    profiler.disable()
    wall = time.perf_counter() - t0
    prof_path = Path(args.out).with_suffix(".prof")
    profiler.dump_stats(prof_path)
    stats = pstats.Stats(profiler)
    rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = filename
        for marker in ("site-packages/", "/pipeline/"):
            if marker in filename:
                short = ("pipeline/" if marker == "/pipeline/" else "") + filename.split(marker, 1)[1]
        rows.append({"function": f"{short}:{line}({func})", "calls": nc, "own_seconds": round(tt, 3),
                     "cumulative_seconds": round(ct, 3)})
    by_own = sorted(rows, key=lambda r: -r["own_seconds"])[: args.top]
    engine = [r for r in rows if r["function"].startswith("pipeline/")]
    by_cum = sorted(engine, key=lambda r: -r["cumulative_seconds"])[: args.top]
    return {"mode": "cprofile", "wall_s": round(wall, 3), "prof": str(prof_path),
            "peak_rss_bytes": _status("VmHWM"), "top_own": by_own, "top_engine_cumulative": by_cum}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--end", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--cprofile", action="store_true", help="profile with cProfile instead of stage timers")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--min-seconds", type=float, default=0.005, help="omit tree nodes shorter than this")
    args = parser.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.cprofile:
        result = _cprofile(args, args.start, args.end)
    else:
        tracer = Tracer()
        instrument(tracer)
        _reset_peak()
        interrupted = ""

        def stop(signum: int, _frame: object) -> None:
            raise Interrupted(f"signal {signum} while in {' > '.join(tracer.open_stages)}")

        signal.signal(signal.SIGTERM, stop)  # the benchmark's memory cap or timeout: keep what was measured
        t0 = time.perf_counter()
        try:
            _run_backfill(args.landing, args.warehouse, args.start, args.end)
        except Interrupted as exc:
            interrupted = f"stopped by {exc}"
        wall = time.perf_counter() - t0
        top = tracer.root.children["job.backfill"]
        result = {"mode": "stages", "wall_s": round(wall, 3), "peak_rss_bytes": top.peak,
                  "wrapped": len(tracer.wrapped), "interrupted": interrupted,
                  "tree": top.as_dict(top.seconds, args.min_seconds)}
    Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
