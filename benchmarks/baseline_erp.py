"""Baseline A: backflush the way ERPs do it, one completion at a time, recursive explosion in plain Python.

Master data (items, unit conversions, BOM lines with their per-unit requirement, plant time
zones) is loaded once into dictionaries, as an ERP caches it. Then every completion is handled on
its own, as a confirmation arriving from the shop floor: latest recorded_at wins per completion
id, its business date is computed in the plant's time zone, its item's BOM (the plant's own lines
if it has any for that parent, else the group lines) is filtered for effectivity and exploded
recursively through phantoms, and the resulting requirements are posted into consumption and
adjustment totals. Nothing is shared between completions: that is the point of the baseline.

On the full landing data this takes hours, so by default it runs on a sample of completion rows
(every k-th row, deterministic) and the per-completion cost is scaled linearly to the full count.
The time to pick the sample out of the Parquet files is not counted; converting the sampled rows
to Python objects is (a message from the shop floor arrives as one).

    python benchmarks/baseline_erp.py --landing L --sample 20000 --out DIR

Writes DIR/stats.json; with --sample 0 (every completion) also DIR/consumption/ and
DIR/adjustments/ (Hive-partitioned) and DIR/rejected.parquet, comparable with the pipeline.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import shutil
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

COMPLETION_COLUMNS = ["completion_id", "plant_id", "location_id", "item_id", "qty_good", "qty_scrap",
                      "completed_at", "recorded_at", "order_id"]


class ExplosionError(Exception):
    """The completion cannot be exploded; it is rejected whole."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _rows(landing: Path, table: str) -> list[dict[str, Any]]:
    files = sorted((landing / table).glob("*.parquet"))
    if not files:
        return []
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default").to_pylist()


class Master:
    """Items, conversions, time zones and BOM lines, indexed for per-completion lookups."""

    def __init__(self, landing: Path) -> None:
        self.items = {r["item_id"]: r for r in _rows(landing, "items")}
        self.zones = {r["plant_id"]: ZoneInfo(r.get("timezone") or "UTC") for r in _rows(landing, "plants")}
        conv: dict[tuple[str | None, str, str], float] = {}
        for r in _rows(landing, "uom_conversions"):
            conv.setdefault((r.get("item_id"), r["from_uom"], r["to_uom"]), r["factor"])
        self.conversions = conv
        self.lines: dict[tuple[str | None, str], list[tuple[Any, ...]]] = defaultdict(list)
        for r in _rows(landing, "bom"):
            if not r.get("qty_per") or not 0 <= (r.get("scrap_pct") or 0.0) < 100 or (r.get("base_qty") or 1.0) <= 0:
                continue  # the pipeline quarantines such lines as INVALID
            vf, vt = r.get("valid_from"), r.get("valid_to")
            if vf is not None and vt is not None and vf >= vt:
                continue
            self.lines[(r.get("plant_id"), r["parent_item_id"])].append(self._line(r))

    def _factor(self, item: str, line_uom: str, base: str) -> float | None:
        if line_uom == base:
            return 1.0
        c = self.conversions
        for key, invert in (((item, line_uom, base), False), ((item, base, line_uom), True),
                            ((None, line_uom, base), False), ((None, base, line_uom), True)):
            if key in c:
                return 1.0 / c[key] if invert else c[key]
        return None

    def _line(self, r: dict[str, Any]) -> tuple[Any, ...]:
        comp = self.items.get(r["component_item_id"])
        err = None
        r_per_unit = 0.0
        if comp is None:
            err = "UNKNOWN_ITEM"
        else:
            factor = self._factor(r["component_item_id"], r.get("uom") or comp["uom"], comp["uom"])
            if factor is None:
                err = "NO_UOM_CONVERSION"
            else:
                scrap = 1 + (r.get("scrap_pct") or 0.0) / 100 if r["qty_per"] > 0 else 1.0
                r_per_unit = r["qty_per"] * factor / (r.get("base_qty") or 1.0) * scrap
        phantom = bool(comp and comp.get("phantom"))
        return (r["component_item_id"], r_per_unit, r.get("valid_from"), r.get("valid_to"), phantom, err)

    def bom(self, plant: str, parent: str, day: dt.date) -> list[tuple[Any, ...]]:
        """The lines of `parent` effective at `plant` on `day` (the plant's own BOM replaces the group's)."""
        lines = self.lines.get((plant, parent))
        if lines is None:
            lines = self.lines.get((None, parent), [])
        return [ln for ln in lines if (ln[2] is None or ln[2] <= day) and (ln[3] is None or day < ln[3])]


def explode(master: Master, plant: str, parent: str, day: dt.date, qty: float, path: tuple[str, ...],
            out: dict[str, float]) -> None:
    """Add the requirements of `qty` units of `parent` to `out`, recursively through phantoms."""
    lines = master.bom(plant, parent, day)
    if not lines:
        raise ExplosionError("NO_BOM")
    for component, r, _vf, _vt, phantom, err in lines:
        if err:
            raise ExplosionError(err)
        if component in path:
            raise ExplosionError("BOM_CYCLE")
        if phantom:
            explode(master, plant, component, day, qty * r, path + (component,), out)
        else:
            out[component] = out.get(component, 0.0) + qty * r


class Books:
    """Consumption and adjustment totals, posted one completion at a time."""

    def __init__(self) -> None:
        self.consumption: dict[tuple[Any, ...], list[float]] = {}
        self.adjustments: dict[tuple[Any, ...], list[float]] = {}
        self.rejected: list[tuple[str, str]] = []

    def _add(self, book: dict[tuple[Any, ...], list[float]], key: tuple[Any, ...], qty: float, counted: int) -> None:
        row = book.get(key)
        if row is None:
            book[key] = [qty, counted]
        else:
            row[0] += qty
            row[1] += counted

    def post(self, master: Master, c: dict[str, Any]) -> None:
        item = c["item_id"]
        if item not in master.items:
            self.rejected.append((c["completion_id"], "UNKNOWN_ITEM"))
            return
        zone = master.zones.get(c["plant_id"], ZoneInfo("UTC"))
        day = c["completed_at"].astimezone(zone).date()
        q = c["qty_good"] + (c["qty_scrap"] or 0.0)
        need: dict[str, float] = {}
        try:
            explode(master, c["plant_id"], item, day, q, (item,), need)
        except ExplosionError as exc:
            self.rejected.append((c["completion_id"], exc.code))
            return
        counted = 1 if q > 0 else 0
        where = (c["plant_id"], day, c["location_id"])
        self._add(self.adjustments, (*where, item, "production_receipt"), c["qty_good"], counted)
        for component, qty in need.items():
            # the per-unit sum decides: a positive sum is consumed, a negative one is a by-product
            if (qty / q if q else _per_unit(master, c["plant_id"], item, day, component)) > 0:
                self._add(self.consumption, (*where, item, component), qty, counted)
                if master.items[component].get("backflush", True) is not False:
                    self._add(self.adjustments, (*where, component, "backflush_issue"), -qty, counted)
            else:
                self._add(self.adjustments, (*where, component, "byproduct_receipt"), -qty, counted)


def _per_unit(master: Master, plant: str, item: str, day: dt.date, component: str) -> float:
    one: dict[str, float] = {}
    explode(master, plant, item, day, 1.0, (item,), one)
    return one.get(component, 0.0)


def latest_versions(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Latest recorded_at wins per completion id; different rows tied at the latest are rejected."""
    best: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        r["recorded_at"] = r["recorded_at"] or r["completed_at"]
        r["qty_scrap"] = r["qty_scrap"] if r["qty_scrap"] is not None else 0.0
        if r["completion_id"] is None or r["completed_at"] is None or r["qty_good"] is None \
                or r["qty_good"] < 0 or r["qty_scrap"] < 0:
            continue  # INVALID in the pipeline
        seen = best.get(r["completion_id"])
        if seen is None or r["recorded_at"] > seen[0]["recorded_at"]:
            best[r["completion_id"]] = [r]
        elif r["recorded_at"] == seen[0]["recorded_at"] and r not in seen:
            seen.append(r)
    winners = [v[0] for v in best.values() if len(v) == 1]
    ties = [(k, "DUPLICATE_ID") for k, v in best.items() if len(v) > 1]
    return winners, ties


def _round_half_away(x: float, decimals: int) -> float:
    scale = 10.0 ** decimals
    return math.copysign(math.floor(round(abs(x) * scale, 6) + 0.5) / scale, x) + 0.0


def write_outputs(master: Master, books: Books, out: Path) -> None:
    cons = [{"plant_id": k[0], "business_date": k[1], "location_id": k[2], "item_id": k[3],
             "component_item_id": k[4], "qty": v[0], "uom": master.items[k[4]]["uom"],
             "backflushed": master.items[k[4]].get("backflush", True) is not False, "completions": int(v[1])}
            for k, v in books.consumption.items()]
    adj = []
    for k, v in books.adjustments.items():
        item = master.items[k[3]]
        qty = _round_half_away(v[0], item.get("uom_decimals", 3))
        key = "\x1f".join([k[0], k[1].isoformat(), k[2], k[3], k[4]])
        adj.append({"plant_id": k[0], "business_date": k[1], "location_id": k[2], "item_id": k[3], "kind": k[4],
                    "qty": qty, "uom": item["uom"], "value": qty * (item.get("standard_cost") or 0.0),
                    "completions": int(v[1]), "adjustment_id": hashlib.sha256(key.encode()).hexdigest()[:32]})
    for name, rows in (("consumption", cons), ("adjustments", adj)):
        if rows:
            ds.write_dataset(pa.Table.from_pylist(rows), out / name, format="parquet",
                             partitioning=["plant_id", "business_date"], partitioning_flavor="hive")
    pq.write_table(pa.table({"completion_id": [r[0] for r in books.rejected],
                             "error_code": [r[1] for r in books.rejected]},
                            schema=pa.schema([("completion_id", pa.string()), ("error_code", pa.string())])),
                   out / "rejected.parquet")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sample", type=int, default=20_000, help="completion rows to process; 0: all")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)

    t0 = time.perf_counter()
    master = Master(args.landing)
    setup_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    files = sorted((args.landing / "completions").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(f, columns=COMPLETION_COLUMNS) for f in files], promote_options="default")
    total = table.num_rows
    if args.sample and args.sample < total:
        step = total / args.sample
        table = table.take(pc.cast(pa.array([int(i * step) for i in range(args.sample)]), pa.int64()))
    sampling_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = table.to_pylist()
    winners, ties = latest_versions(rows)
    books = Books()
    books.rejected.extend(ties)
    for c in winners:
        books.post(master, c)
    per_row_s = time.perf_counter() - t0
    processed = len(rows)
    scale = total / processed if processed else 0.0
    if not args.sample or args.sample >= total:
        write_outputs(master, books, args.out)
    stats = {
        "completions_total": total,
        "completions_processed": processed,
        "scale_factor": round(scale, 3),
        "setup_s": round(setup_s, 3),
        "sampling_s_not_counted": round(sampling_s, 3),
        "processing_s": round(per_row_s, 3),
        "per_completion_us": round(per_row_s / processed * 1e6, 2) if processed else None,
        "estimated_full_s": round(setup_s + per_row_s * scale, 1),
        "rejected": len(books.rejected),
        "consumption_rows": len(books.consumption),
        "adjustment_rows": len(books.adjustments),
    }
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
