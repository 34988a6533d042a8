"""Does the BOM explosion's cost grow with completions? Time `bom.explode` on keys from N and 10 N completions.

For each size, the first N completion rows of the landing data are loaded through the pipeline's
own `accept.load_inputs` (not timed), tagged with explosion keys exactly as
`consumption.explode_completions` does, and `bom.explode` is timed on those keys (best of
--repeat). `explode_completions` as a whole (which does touch every completion) is timed once
for context.

    python benchmarks/explode_cost.py --landing L --sizes 500000,5000000 --out JSON
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pipeline.intake import accept, scan


def _truncate(raw: dict[str, list[tuple[str, Any]]], table: str, n: int) -> None:
    kept = []
    left = n
    for name, frame in raw[table]:
        if left <= 0:
            break
        kept.append((name, frame.iloc[:left]))
        left -= len(frame)
    raw[table] = kept


def measure(landing: str, n: int, repeat: int) -> dict[str, Any]:
    from pipeline.domain import bom, consumption

    raw = scan.read_landing_files(landing)
    _truncate(raw, "completions", n)
    for table in ("stock_counts", "movements"):
        raw[table] = [(name, frame.iloc[:0]) for name, frame in raw.get(table, [])][:1]
    inputs = accept.load_inputs(raw)
    completions = inputs.completions
    lines = bom.plant_lines(bom.line_requirements(inputs.bom, inputs.items, inputs.uom_conversions),
                            sorted(completions["plant_id"].unique()))
    catalog = consumption.ExplosionCatalog(inputs.bom, inputs.items, inputs.uom_conversions)
    catalog.tag(consumption.produced(completions))
    keys = catalog.keys
    times = []
    requirements = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        explosion = bom.explode(keys, lines, inputs.items)
        times.append(time.perf_counter() - t0)
        requirements = len(explosion.requirements)
    what_if = keys_with_epochs_per_item(completions, lines)
    t0 = time.perf_counter()
    consumption.explode_completions(completions, inputs.bom, inputs.items, inputs.uom_conversions)
    whole = time.perf_counter() - t0
    return {
        "completions": int(len(completions)),
        "explosion_keys": int(len(keys)),
        "distinct_items": int(keys["item_id"].nunique()),
        "effectivity_epochs": int(keys["effective_date"].nunique()),
        "requirement_rows": int(requirements),
        "explode_s": round(min(times), 3),
        "explode_s_all": [round(t, 3) for t in times],
        "explode_completions_s": round(whole, 3),
        "explosion_keys_if_epochs_per_item": what_if,
    }


def keys_with_epochs_per_item(completions: Any, lines: Any) -> int | None:
    """What-if: explosion keys if each (plant, item) had its own effectivity epochs.

    An item's effective explosion changes only on the validity boundaries of its own lines and of
    the lines of the phantoms below it; the pipeline maps dates to epochs of *all* BOM boundaries.
    """
    import pandas as pd

    try:
        roots = completions[["plant_id", "item_id"]].drop_duplicates()
        edges = lines.loc[lines["component_phantom"].astype(bool),
                          ["plant_id", "parent_item_id", "component_item_id"]].drop_duplicates()
        reach = roots.assign(node=roots["item_id"])
        frontier = reach
        for _ in range(64):
            step = frontier.merge(edges, left_on=["plant_id", "node"], right_on=["plant_id", "parent_item_id"])
            step = step[["plant_id", "item_id", "component_item_id"]].rename(columns={"component_item_id": "node"})
            new = step.merge(reach, how="left", indicator=True)
            frontier = new[new["_merge"] == "left_only"].drop(columns="_merge").drop_duplicates()
            if frontier.empty:
                break
            reach = pd.concat([reach, frontier], ignore_index=True)
        bounds = pd.concat([lines[["plant_id", "parent_item_id", "valid_from"]].rename(columns={"valid_from": "d"}),
                            lines[["plant_id", "parent_item_id", "valid_to"]].rename(columns={"valid_to": "d"})])
        bounds = bounds.dropna().drop_duplicates()
        root_bounds = reach.merge(bounds, left_on=["plant_id", "node"], right_on=["plant_id", "parent_item_id"])
        root_bounds = root_bounds[["plant_id", "item_id", "d"]].drop_duplicates()
        days = completions[["plant_id", "item_id", "business_date"]].drop_duplicates()
        days = days.assign(t=days["business_date"].astype("datetime64[ns]")).sort_values("t")
        root_bounds = root_bounds.assign(d=root_bounds["d"].astype("datetime64[ns]")).sort_values("d")
        for c in ("plant_id", "item_id"):
            days[c] = days[c].astype(object)
            root_bounds[c] = root_bounds[c].astype(object)
        tagged = pd.merge_asof(days, root_bounds, left_on="t", right_on="d", by=["plant_id", "item_id"],
                               direction="backward")
        return int(len(tagged[["plant_id", "item_id", "d"]].drop_duplicates()))
    except Exception:  # a what-if statistic must never fail the benchmark
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True)
    parser.add_argument("--sizes", required=True, help="comma-separated completion counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = [measure(args.landing, int(n), args.repeat) for n in args.sizes.split(",")]
    Path(args.out).write_text(json.dumps({"sizes": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
