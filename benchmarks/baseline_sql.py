"""Baseline B: the backflush core as a data engineer would write it instead, in DuckDB SQL.

Same landing Parquet files, same semantics as the pipeline's `consumption` and `adjustments`:
latest-recorded_at-wins dedupe of completions (identical repeats are one row; conflicting rows at
the latest recorded_at are DUPLICATE_ID), business dates in the plant's time zone, BOM lines
effective on that date, a plant's own lines replacing the group lines for a parent, unit
conversions, base_qty and component scrap, by-products, and nested phantoms exploded with a
recursive CTE on the distinct (plant, item, business date) keys. Explosion errors (UNKNOWN_ITEM,
NO_BOM, BOM_CYCLE, NO_UOM_CONVERSION) reject a key's completions whole.

Not in scope (the pipeline does them, this does not): stock counts, movements, variance, the
postings ledger, BOM accuracy, row-level quarantine with messages, atomic publication.

    python benchmarks/baseline_sql.py --landing L --out DIR [--exclude-from WAREHOUSE]

Writes DIR/consumption and DIR/adjustments (Hive-partitioned by plant_id, business_date),
DIR/rejected.parquet (completion_id, error_code) and DIR/stats.json (rows and seconds per step).
With --exclude-from, the completions that the pipeline quarantined in that warehouse are left
out too, so that both sides aggregate the same completions when they are compared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import duckdb

STEPS: list[tuple[str, str]] = [
    # ------------------------------------------------------------------ master data
    ("items", """
        CREATE TEMP TABLE items AS
        SELECT item_id, uom, coalesce(standard_cost, 0) AS standard_cost, coalesce(phantom, false) AS phantom,
               coalesce(backflush, true) AS backflush, coalesce(uom_decimals, 3) AS uom_decimals
        FROM src_items
        WHERE item_id IS NOT NULL AND uom IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY item_id) = 1
    """),
    ("lines", """
        -- each BOM line's requirement per one unit of parent, in the component's base unit
        CREATE TEMP TABLE lines AS
        WITH conv AS (
            SELECT item_id, from_uom, to_uom, any_value(factor) AS factor FROM src_uom_conversions
            WHERE factor > 0 GROUP BY ALL
        ), b AS (
            SELECT bom.*, i.uom AS base_uom, i.phantom AS component_phantom, i.item_id IS NULL AS unknown,
                   coalesce(bom.uom, i.uom) AS line_uom
            FROM src_bom bom LEFT JOIN items i ON i.item_id = bom.component_item_id
            WHERE bom.parent_item_id IS NOT NULL AND bom.component_item_id IS NOT NULL
              AND bom.qty_per IS NOT NULL AND bom.qty_per <> 0 AND coalesce(bom.base_qty, 1) > 0
              AND coalesce(bom.scrap_pct, 0) >= 0 AND coalesce(bom.scrap_pct, 0) < 100
              AND (bom.valid_from IS NULL OR bom.valid_to IS NULL OR bom.valid_from < bom.valid_to)
        )
        SELECT b.plant_id, b.parent_item_id AS parent, b.component_item_id AS component,
               b.qty_per * f.factor / coalesce(b.base_qty, 1)
                   * CASE WHEN b.qty_per > 0 THEN 1 + coalesce(b.scrap_pct, 0) / 100 ELSE 1 END AS r,
               b.valid_from, b.valid_to, coalesce(b.component_phantom, false) AS phantom,
               CASE WHEN b.unknown THEN 'UNKNOWN_ITEM' WHEN f.factor IS NULL THEN 'NO_UOM_CONVERSION' END AS err
        FROM b, LATERAL (
            SELECT CASE WHEN b.line_uom = b.base_uom THEN 1.0 ELSE coalesce(
                (SELECT factor FROM conv c WHERE c.item_id = b.component_item_id
                   AND c.from_uom = b.line_uom AND c.to_uom = b.base_uom),
                (SELECT 1 / factor FROM conv c WHERE c.item_id = b.component_item_id
                   AND c.from_uom = b.base_uom AND c.to_uom = b.line_uom),
                (SELECT factor FROM conv c WHERE c.item_id IS NULL
                   AND c.from_uom = b.line_uom AND c.to_uom = b.base_uom),
                (SELECT 1 / factor FROM conv c WHERE c.item_id IS NULL
                   AND c.from_uom = b.base_uom AND c.to_uom = b.line_uom)) END AS factor
        ) f
    """),
    # ------------------------------------------------------------------ completions
    ("completions", """
        -- identical repeats are one row; the latest recorded_at wins; a tie of different rows is ambiguous
        CREATE TEMP TABLE completions AS
        WITH versions AS (
            SELECT DISTINCT completion_id, plant_id, location_id, item_id, qty_good,
                   coalesce(qty_scrap, 0) AS qty_scrap, completed_at,
                   coalesce(recorded_at, completed_at) AS recorded_at, order_id
            FROM src_completions
            WHERE completion_id IS NOT NULL AND plant_id IS NOT NULL AND location_id IS NOT NULL
              AND item_id IS NOT NULL AND completed_at IS NOT NULL
              AND qty_good >= 0 AND coalesce(qty_scrap, 0) >= 0
        ), latest AS (
            SELECT * FROM versions
            QUALIFY recorded_at = max(recorded_at) OVER (PARTITION BY completion_id)
        )
        SELECT l.completion_id, l.plant_id, l.location_id, l.item_id, l.qty_good, l.qty_scrap,
               l.qty_good + l.qty_scrap AS q,
               CAST(timezone(coalesce(p.timezone, 'UTC'), l.completed_at) AS DATE) AS business_date,
               count(*) OVER (PARTITION BY l.completion_id) > 1 AS duplicate
        FROM latest l LEFT JOIN src_plants p ON p.plant_id = l.plant_id
    """),
    ("plant_lines", """
        -- a plant with any line of its own for a parent uses only those lines for it
        CREATE TEMP TABLE plant_lines AS
        SELECT plant_id, parent, component, r, valid_from, valid_to, phantom, err
        FROM lines WHERE plant_id IS NOT NULL
        UNION ALL
        SELECT p.plant_id, g.parent, g.component, g.r, g.valid_from, g.valid_to, g.phantom, g.err
        FROM (SELECT DISTINCT plant_id FROM completions) p
        CROSS JOIN (SELECT * FROM lines WHERE plant_id IS NULL) g
        ANTI JOIN (SELECT DISTINCT plant_id, parent FROM lines WHERE plant_id IS NOT NULL) own
            ON own.plant_id = p.plant_id AND own.parent = g.parent
    """),
    ("keys", """
        CREATE TEMP TABLE keys AS
        SELECT DISTINCT plant_id, item_id, business_date FROM completions WHERE NOT duplicate
    """),
    # ------------------------------------------------------------------ explosion
    ("explode", """
        -- every path from each key's item through phantoms; anc = the items above the component
        CREATE TEMP TABLE paths AS
        WITH RECURSIVE x(plant_id, item_id, business_date, component, qty, phantom, err, anc, depth) AS (
            SELECT k.plant_id, k.item_id, k.business_date, l.component, l.r, l.phantom, l.err,
                   [k.item_id], 1
            FROM keys k JOIN plant_lines l ON l.plant_id = k.plant_id AND l.parent = k.item_id
             AND (l.valid_from IS NULL OR l.valid_from <= k.business_date)
             AND (l.valid_to IS NULL OR k.business_date < l.valid_to)
            UNION ALL
            SELECT x.plant_id, x.item_id, x.business_date, l.component, x.qty * l.r, l.phantom, l.err,
                   list_append(x.anc, x.component), x.depth + 1
            FROM x JOIN plant_lines l ON l.plant_id = x.plant_id AND l.parent = x.component
             AND (l.valid_from IS NULL OR l.valid_from <= x.business_date)
             AND (l.valid_to IS NULL OR x.business_date < l.valid_to)
            WHERE x.phantom AND x.err IS NULL AND NOT list_contains(x.anc, x.component) AND x.depth < 64
        )
        SELECT *, list_contains(anc, component) AS cycle FROM x
    """),
    ("key_errors", """
        CREATE TEMP TABLE key_errors AS
        SELECT plant_id, item_id, business_date, min(code) AS error_code FROM (
            SELECT k.plant_id, k.item_id, k.business_date,
                   CASE WHEN i.item_id IS NULL THEN '0 UNKNOWN_ITEM' ELSE '2 NO_BOM' END AS code
            FROM keys k LEFT JOIN items i ON i.item_id = k.item_id
            WHERE NOT EXISTS (SELECT 1 FROM paths e WHERE e.depth = 1 AND e.plant_id = k.plant_id
                                AND e.item_id = k.item_id AND e.business_date = k.business_date)
            UNION ALL
            SELECT plant_id, item_id, business_date,
                   CASE WHEN err = 'UNKNOWN_ITEM' THEN '0 UNKNOWN_ITEM' ELSE '3 ' || err END
            FROM paths WHERE err IS NOT NULL
            UNION ALL
            SELECT plant_id, item_id, business_date, '1 BOM_CYCLE' FROM paths
            WHERE cycle OR (phantom AND depth >= 64)
            UNION ALL  -- a phantom with no effective BOM of its own
            SELECT x.plant_id, x.item_id, x.business_date, '2 NO_BOM' FROM paths x
            WHERE x.phantom AND x.err IS NULL AND NOT x.cycle AND NOT EXISTS (
                SELECT 1 FROM plant_lines l WHERE l.plant_id = x.plant_id AND l.parent = x.component
                  AND (l.valid_from IS NULL OR l.valid_from <= x.business_date)
                  AND (l.valid_to IS NULL OR x.business_date < l.valid_to))
        ) GROUP BY ALL
    """),
    ("requirements", """
        -- per key and component: the requirement per unit, summed over every line and path
        CREATE TEMP TABLE requirements AS
        SELECT plant_id, item_id, business_date, component AS component_item_id, sum(qty) AS qty_per_unit
        FROM paths ANTI JOIN key_errors USING (plant_id, item_id, business_date)
        WHERE NOT phantom
        GROUP BY ALL
    """),
    ("demand", """
        CREATE TEMP TABLE demand AS
        SELECT c.plant_id, c.business_date, c.location_id, c.item_id, sum(c.qty_good) AS qty_good,
               sum(c.q) AS q, count(*) FILTER (WHERE c.q > 0) AS completions
        FROM completions c
        ANTI JOIN key_errors e USING (plant_id, item_id, business_date)
        ANTI JOIN excluded x USING (completion_id)
        WHERE NOT c.duplicate
        GROUP BY ALL
    """),
    ("flows", """
        CREATE TEMP TABLE flows AS
        SELECT d.plant_id, d.business_date, d.location_id, d.item_id, r.component_item_id, r.qty_per_unit,
               d.q * r.qty_per_unit AS qty, d.completions
        FROM demand d JOIN requirements r USING (plant_id, item_id, business_date)
    """),
    # ------------------------------------------------------------------ outputs
    ("consumption", """
        CREATE TEMP TABLE out_consumption AS
        SELECT f.plant_id, f.business_date, f.location_id, f.item_id, f.component_item_id, f.qty,
               i.uom, i.backflush AS backflushed, f.completions
        FROM flows f JOIN items i ON i.item_id = f.component_item_id
        WHERE f.qty_per_unit > 0
    """),
    ("adjustments", """
        CREATE TEMP TABLE out_adjustments AS
        WITH raw AS (
            SELECT plant_id, business_date, location_id, item_id, 'production_receipt' AS kind,
                   sum(qty_good) AS qty, sum(completions) AS completions
            FROM demand GROUP BY ALL
            UNION ALL
            SELECT f.plant_id, f.business_date, f.location_id, f.component_item_id, 'backflush_issue',
                   -sum(f.qty), sum(f.completions)
            FROM flows f JOIN items i ON i.item_id = f.component_item_id
            WHERE f.qty_per_unit > 0 AND i.backflush GROUP BY ALL
            UNION ALL
            SELECT plant_id, business_date, location_id, component_item_id, 'byproduct_receipt',
                   -sum(qty), sum(completions)
            FROM flows WHERE qty_per_unit < 0 GROUP BY ALL
        ), rounded AS (  -- half away from zero at uom_decimals, the scaled value cleaned to 6 decimals
            SELECT raw.*, i.uom, i.standard_cost,
                   sign(raw.qty) * floor(round(abs(raw.qty) * pow(10, i.uom_decimals), 6) + 0.5)
                       / pow(10, i.uom_decimals) + 0.0 AS qty_rounded
            FROM raw JOIN items i USING (item_id)
        )
        SELECT plant_id, business_date, location_id, item_id, kind, qty_rounded AS qty, uom,
               qty_rounded * standard_cost AS value, completions,
               sha256(concat_ws(chr(31), plant_id, strftime(business_date, '%Y-%m-%d'), location_id,
                                item_id, kind))[1:32] AS adjustment_id
        FROM rounded
    """),
]


def _files(landing: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (landing / table).glob("*.parquet"))


def _source_view(con: duckdb.DuckDBPyConnection, landing: Path, table: str, columns: dict[str, str]) -> None:
    """src_<table>: the landing files with every contract column (absent optional ones as NULL)."""
    files = _files(landing, table)
    if files:
        have = {r[0] for r in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?, union_by_name = true)", [files]).fetchall()}
        select = ", ".join(c if c in have else f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"CREATE VIEW src_{table} AS SELECT {select} FROM read_parquet([{listing}], union_by_name = true)")
    else:
        select = ", ".join(f"CAST(NULL AS {t}) AS {c}" for c, t in columns.items())
        con.execute(f"CREATE VIEW src_{table} AS SELECT {select} WHERE false")


SOURCES = {
    "plants": {"plant_id": "VARCHAR", "timezone": "VARCHAR"},
    "items": {"item_id": "VARCHAR", "uom": "VARCHAR", "standard_cost": "DOUBLE", "phantom": "BOOLEAN",
              "backflush": "BOOLEAN", "uom_decimals": "INTEGER"},
    "uom_conversions": {"item_id": "VARCHAR", "from_uom": "VARCHAR", "to_uom": "VARCHAR", "factor": "DOUBLE"},
    "bom": {"plant_id": "VARCHAR", "parent_item_id": "VARCHAR", "component_item_id": "VARCHAR",
            "qty_per": "DOUBLE", "base_qty": "DOUBLE", "uom": "VARCHAR", "scrap_pct": "DOUBLE",
            "valid_from": "DATE", "valid_to": "DATE"},
    "completions": {"completion_id": "VARCHAR", "plant_id": "VARCHAR", "location_id": "VARCHAR",
                    "item_id": "VARCHAR", "qty_good": "DOUBLE", "qty_scrap": "DOUBLE",
                    "completed_at": "TIMESTAMPTZ", "recorded_at": "TIMESTAMPTZ", "order_id": "VARCHAR"},
}


def quarantined_completion_ids(warehouse: Path) -> list[str]:
    """Completion ids in the pipeline's quarantine dataset."""
    folder = warehouse / "quarantine" / "table=completions"
    files = sorted(str(p) for p in folder.rglob("*.parquet")) if folder.exists() else []
    if not files:
        return []
    rows = duckdb.execute("SELECT DISTINCT source_key FROM read_parquet(?)", [files]).fetchall()
    return [r[0] for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--landing", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--exclude-from", type=Path, help="a pipeline warehouse: leave out its quarantined completions")
    parser.add_argument("--threads", type=int, help="DuckDB threads (default: every core)")
    parser.add_argument("--memory-limit", help="DuckDB memory_limit, e.g. 4GB (default: DuckDB's)")
    args = parser.parse_args()

    t_start = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    if args.threads:
        con.execute(f"SET threads = {int(args.threads)}")
    if args.memory_limit:
        con.execute(f"SET memory_limit = '{args.memory_limit}'")
    con.execute(f"SET temp_directory = '{args.out / '_spill'}'")
    for table, columns in SOURCES.items():
        _source_view(con, args.landing, table, columns)
    excluded = quarantined_completion_ids(args.exclude_from) if args.exclude_from else []
    con.execute("CREATE TEMP TABLE excluded (completion_id VARCHAR)")
    if excluded:
        con.executemany("INSERT INTO excluded VALUES (?)", [(x,) for x in excluded])

    seconds: dict[str, float] = {}
    rows: dict[str, int] = {}
    for name, sql in STEPS:
        t0 = time.perf_counter()
        con.execute(sql)
        seconds[name] = round(time.perf_counter() - t0, 3)
        table = sql.split("CREATE TEMP TABLE", 1)[1].split()[0]
        rows[name] = con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]

    t0 = time.perf_counter()
    for name in ("consumption", "adjustments"):
        target = str(args.out / name).replace("'", "''")
        con.execute(f"COPY (SELECT * FROM out_{name} ORDER BY ALL) TO '{target}' "
                    "(FORMAT parquet, COMPRESSION zstd, PARTITION_BY (plant_id, business_date))")
    rejected = str(args.out / "rejected.parquet").replace("'", "''")
    con.execute(f"""
        COPY (SELECT c.completion_id, substr(e.error_code, 3) AS error_code
              FROM completions c JOIN key_errors e USING (plant_id, item_id, business_date)
              UNION ALL
              SELECT completion_id, 'DUPLICATE_ID' FROM completions WHERE duplicate
              ORDER BY ALL) TO '{rejected}' (FORMAT parquet)""")
    seconds["write"] = round(time.perf_counter() - t0, 3)
    shutil.rmtree(args.out / "_spill", ignore_errors=True)
    stats = {"seconds": seconds, "rows": rows, "excluded_pipeline_quarantine": len(excluded),
             "threads": con.execute("SELECT current_setting('threads')").fetchone()[0],  # type: ignore[index]
             "memory_limit": con.execute("SELECT current_setting('memory_limit')").fetchone()[0],  # type: ignore[index]
             "duckdb": duckdb.__version__, "wall_s": round(time.perf_counter() - t_start, 3)}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
