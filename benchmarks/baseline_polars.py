"""Baseline D: the backflush core as a lazy Polars query (the same core as baseline C).

No validation, no error handling: the landing is taken to be clean. The latest version of each
completion, its business date in the plant's time zone, the BOM lines effective on that date (a
plant's own lines for a parent replacing the group's), unit conversions (item-specific before
generic, a row read backwards as 1/factor), base_qty, component scrap on positive lines,
by-products, phantoms exploded level by level on the distinct (plant, item, business date) keys,
and `consumption` and `adjustments` sunk as Hive-partitioned Parquet in one `collect_all`.

    python benchmarks/baseline_polars.py --landing L --out DIR

Writes DIR/consumption, DIR/adjustments and DIR/stats.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import polars as pl

KEY = ["plant_id", "item_id", "business_date"]


def scan(landing: Path, table: str) -> pl.LazyFrame:
    return pl.scan_parquet(str(landing / table / "*.parquet"))


def business_date(zones: dict[str, str]) -> pl.Expr:
    """completed_at as a date in its plant's zone (a zone is a constant per expression in Polars)."""
    utc = pl.col("completed_at").dt.convert_time_zone("UTC").dt.date()
    expr: pl.Expr | None = None
    for plant, zone in zones.items():
        local = pl.col("completed_at").dt.convert_time_zone(zone).dt.date()
        expr = (pl.when(pl.col("plant_id") == plant) if expr is None
                else expr.when(pl.col("plant_id") == plant)).then(local)  # type: ignore[attr-defined]
    return utc if expr is None else expr.otherwise(utc)  # type: ignore[attr-defined]


def build(landing: Path, out: Path) -> list[pl.LazyFrame]:
    items = scan(landing, "items").select(
        "item_id", "uom", pl.col("standard_cost").fill_null(0.0), pl.col("phantom").fill_null(False),
        pl.col("backflush").fill_null(True), pl.col("uom_decimals").fill_null(3))
    plants = scan(landing, "plants").collect()
    zones = {p: z or "UTC" for p, z in zip(plants["plant_id"], plants["timezone"], strict=True)}

    completions = (
        scan(landing, "completions")
        .with_columns(recorded=pl.coalesce("recorded_at", "completed_at"))
        .sort("recorded")
        .unique("completion_id", keep="last")
        .select("plant_id", "location_id", "item_id", "qty_good",
                q=pl.col("qty_good") + pl.col("qty_scrap").fill_null(0.0), business_date=business_date(zones))
        .filter(pl.col("q") > 0)
    )

    # each BOM line's requirement per unit of parent, in the component's base unit
    conv = scan(landing, "uom_conversions").select("item_id", "from_uom", "to_uom", "factor")
    specific, generic = conv.filter(pl.col("item_id").is_not_null()), conv.filter(pl.col("item_id").is_null())
    lines = (
        scan(landing, "bom")
        .join(items.select(component_item_id="item_id", base_uom="uom", phantom="phantom"), on="component_item_id")
        .with_columns(line_uom=pl.coalesce("uom", "base_uom"))
        .join(specific.rename({"item_id": "component_item_id", "from_uom": "line_uom", "to_uom": "base_uom",
                               "factor": "f1"}), on=["component_item_id", "line_uom", "base_uom"], how="left")
        .join(specific.rename({"item_id": "component_item_id", "from_uom": "base_uom", "to_uom": "line_uom",
                               "factor": "f2"}), on=["component_item_id", "line_uom", "base_uom"], how="left")
        .join(generic.drop("item_id").rename({"from_uom": "line_uom", "to_uom": "base_uom", "factor": "f3"}),
              on=["line_uom", "base_uom"], how="left")
        .join(generic.drop("item_id").rename({"from_uom": "base_uom", "to_uom": "line_uom", "factor": "f4"}),
              on=["line_uom", "base_uom"], how="left")
        .select(
            "plant_id", "phantom", "valid_from", "valid_to", parent="parent_item_id", component="component_item_id",
            r=pl.col("qty_per") / pl.col("base_qty").fill_null(1.0)
            * pl.when(pl.col("qty_per") > 0).then(1 + pl.col("scrap_pct").fill_null(0.0) / 100).otherwise(1.0)
            * pl.when(pl.col("line_uom") == pl.col("base_uom")).then(1.0)
            .otherwise(pl.coalesce("f1", 1 / pl.col("f2"), "f3", 1 / pl.col("f4"))))
    ).collect()

    # the lines each plant uses: its own for a parent if it has any, else the group's
    own = lines.filter(pl.col("plant_id").is_not_null())
    group = lines.filter(pl.col("plant_id").is_null()).drop("plant_id")
    plant_ids = completions.select("plant_id").unique().collect()
    plant_lines = pl.concat([
        own,
        plant_ids.join(group, how="cross")
        .join(own.select("plant_id", "parent").unique(), on=["plant_id", "parent"], how="anti")
        .select(own.columns),
    ])

    # explode each (plant, item, business date) once, through phantoms, a level at a time
    def effective(frame: pl.DataFrame, parent: str) -> pl.DataFrame:
        return frame.join(plant_lines, left_on=["plant_id", parent], right_on=["plant_id", "parent"]).filter(
            (pl.col("valid_from").is_null() | (pl.col("valid_from") <= pl.col("business_date")))
            & (pl.col("valid_to").is_null() | (pl.col("business_date") < pl.col("valid_to"))))

    keys = completions.select(KEY).unique().collect()
    level = effective(keys, "item_id").select(*KEY, "component", "phantom", "r")
    found = []
    while level.height:
        found.append(level.filter(~pl.col("phantom")))
        deeper = level.filter(pl.col("phantom")).select(*KEY, parent="component", r_above="r")
        level = effective(deeper, "parent").select(
            *KEY, "component", "phantom", r=pl.col("r_above") * pl.col("r"))
    requirements = pl.concat(found).group_by(*KEY, "component").agg(pl.col("r").sum()).lazy()

    demand = completions.group_by("plant_id", "business_date", "location_id", "item_id").agg(
        pl.col("qty_good").sum(), pl.col("q").sum(), completions=pl.len())
    flows = (
        demand.join(requirements, on=KEY)
        .join(items.select(component="item_id", uom="uom", backflush="backflush"), on="component")
        .with_columns(qty=pl.col("q") * pl.col("r"))
    )
    consumption = flows.filter(pl.col("r") > 0).select(
        "plant_id", "business_date", "location_id", "item_id", "qty", "uom", "completions",
        component_item_id="component", backflushed="backflush")
    raw = pl.concat([
        demand.select("plant_id", "business_date", "location_id", "item_id", "completions",
                      kind=pl.lit("production_receipt"), qty="qty_good"),
        flows.filter((pl.col("r") < 0) | pl.col("backflush"))
        .group_by("plant_id", "business_date", "location_id", item_id="component",
                  kind=pl.when(pl.col("r") > 0).then(pl.lit("backflush_issue")).otherwise(pl.lit("byproduct_receipt")))
        .agg(-pl.col("qty").sum(), pl.col("completions").sum()),
    ], how="diagonal")
    scale = 10.0 ** pl.col("uom_decimals")
    adjustments = (
        raw.join(items.select("item_id", "uom", "standard_cost", "uom_decimals"), on="item_id")
        # half away from zero; the scaled value first cleaned of binary noise at 6 decimals
        .with_columns(qty=pl.col("qty").sign() * ((pl.col("qty").abs() * scale).round(6) + 0.5).floor() / scale)
        .select("plant_id", "business_date", "location_id", "item_id", "kind", "qty", "uom",
                (pl.col("qty") * pl.col("standard_cost")).alias("value"), "completions")
    )
    by = ["plant_id", "business_date"]
    return [consumption.sink_parquet(pl.PartitionBy(str(out / "consumption"), key=by), lazy=True, mkdir=True),
            adjustments.sink_parquet(pl.PartitionBy(str(out / "adjustments"), key=by), lazy=True, mkdir=True)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    t0 = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    pl.collect_all(build(args.landing, args.out))
    stats = {"wall_s": round(time.perf_counter() - t0, 3), "polars": pl.__version__,
             "threads": pl.thread_pool_size()}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
