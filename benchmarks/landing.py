"""Landing data for the benchmark, generated once with `backflush generate` and cached by parameters."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from measure import run_measured, tail

ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2026, 1, 5)  # `backflush generate`'s default first business date, passed explicitly


@dataclass(frozen=True)
class LandingSpec:
    """The parameters of one generated landing folder (the cache key)."""

    items: int
    completions: int
    days: int
    seed: int
    plants: int = 3
    bad_rows: bool = False
    start: dt.date = START

    @property
    def end(self) -> dt.date:
        return self.start + dt.timedelta(days=self.days - 1)

    def name(self) -> str:
        bad = "-bad" if self.bad_rows else ""
        return (f"landing-i{self.items}-c{self.completions}-d{self.days}-s{self.seed}-p{self.plants}"
                f"-{self.start:%Y%m%d}{bad}-g{generator_version()}")

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["start"] = self.start.isoformat()
        d["end"] = self.end.isoformat()
        return d


def generator_version() -> str:
    """A short hash of the generator's source: cached data is regenerated when the generator changes."""
    return hashlib.sha256((ROOT / "pipeline" / "tools" / "generate.py").read_bytes()).hexdigest()[:8]


def backflush_command() -> list[str]:
    """The installed `backflush` command of this interpreter's environment."""
    script = Path(sys.executable).parent / "backflush"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipeline.cli"]


def ensure_landing(
    spec: LandingSpec, out: Path, *, log: Callable[[str], None] = print
) -> tuple[Path, dict[str, object]]:
    """The landing folder for `spec` under `out`, generating it if it is not cached yet."""
    folder = out / spec.name()
    marker = folder / "_generated.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        info["cached"] = True
        return folder, info
    for stale in out.glob(f"landing-i{spec.items}-c{spec.completions}-d{spec.days}-s{spec.seed}-*"):
        if stale != folder and not (stale / "_generated.json").exists():
            shutil.rmtree(stale, ignore_errors=True)  # a half-written earlier attempt
    tmp = out / (spec.name() + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    command = backflush_command() + [
        "generate", "--out", str(tmp), "--items", str(spec.items), "--completions", str(spec.completions),
        "--days", str(spec.days), "--seed", str(spec.seed), "--plants", str(spec.plants),
        "--start", spec.start.isoformat(),
    ] + (["--bad-rows"] if spec.bad_rows else [])
    log(f"generating landing data: {' '.join(command[1:])}")
    t0 = time.perf_counter()
    m = run_measured(command, log_path=out / "logs" / f"generate-{spec.name()}.log", cwd=ROOT)
    if not m.ok:
        raise RuntimeError(f"backflush generate failed ({m.killed or m.exit_code}): {tail(m.log)}")
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    info = {"spec": spec.as_dict(), "generate_wall_s": round(time.perf_counter() - t0, 1),
            "generate_peak_rss_gib": round(m.peak_rss_bytes / 1024**3, 2),
            "rows": _row_counts(folder), "bytes": _bytes(folder)}
    marker.write_text(json.dumps(info, indent=1))
    info["cached"] = False
    return folder, info


def _row_counts(folder: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    counts = {}
    for table in sorted(p for p in folder.iterdir() if p.is_dir()):
        counts[table.name] = sum(pq.read_metadata(f).num_rows for f in table.glob("*.parquet"))
    return counts


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def landing_as_of(src: Path, dst: Path, day: dt.date) -> dict[str, int]:
    """A copy of the landing folder `src` as it stood at the end of business date `day` (plant-local).

    Completions completed or recorded later, and counts and movements timed later, are left out;
    master data is linked as it is. This is what a nightly `run --date day` would find.
    """
    from zoneinfo import ZoneInfo

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    shutil.rmtree(dst, ignore_errors=True)
    plant_files = sorted((src / "plants").glob("*.parquet"))
    zones = {r["plant_id"]: r.get("timezone") or "UTC" for f in plant_files for r in pq.read_table(f).to_pylist()}
    next_day = day + dt.timedelta(days=1)

    def cutoff(zone: str) -> dt.datetime:
        return dt.datetime(next_day.year, next_day.month, next_day.day, tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)

    names = sorted(zones)
    cutoffs = pa.array([cutoff(zones[p]) for p in names], pa.timestamp("us", tz="UTC"))
    utc_cutoff = pa.scalar(cutoff("UTC"), pa.timestamp("us", tz="UTC"))
    timed = {"completions": ("completed_at", "recorded_at"), "stock_counts": ("counted_at",),
             "movements": ("moved_at",)}
    kept: dict[str, int] = {}
    for folder in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / folder.name).mkdir(parents=True)
        for f in sorted(folder.glob("*.parquet")):
            if folder.name not in timed:
                os.link(f, dst / folder.name / f.name)
                continue
            table = pq.read_table(f)
            limit = pc.fill_null(pc.take(cutoffs, pc.index_in(table["plant_id"], value_set=pa.array(names))),
                                 utc_cutoff)
            first = table[timed[folder.name][0]]
            mask = None
            for column in timed[folder.name]:
                values = pc.coalesce(table[column], first)
                ok = pc.less(values, limit)
                mask = ok if mask is None else pc.and_(mask, ok)
            part = table.filter(pc.fill_null(mask, False))
            pq.write_table(part, dst / folder.name / f.name, compression="snappy")
            kept[folder.name] = kept.get(folder.name, 0) + part.num_rows
    return kept


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="write a landing folder as it stood at the end of a date")
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--dst", type=Path, required=True)
    parser.add_argument("--date", type=dt.date.fromisoformat, required=True)
    args = parser.parse_args()
    print(json.dumps(landing_as_of(args.src, args.dst, args.date)))
