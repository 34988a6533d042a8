-- Baseline C: the backflush core as one plain DuckDB SQL script, the way an analyst would write it.
--
-- No validation, no error handling, no quarantine, no ledger, no variance: the landing is taken
-- to be clean (as `backflush generate` writes it without --bad-rows). What it does compute, per
-- docs/CONTRACT.md: the latest version of each completion (latest recorded_at, default
-- completed_at), its business date in the plant's time zone, a recursive explosion through
-- phantoms of the BOM lines effective on that date ([valid_from, valid_to)), a plant's own lines
-- for a parent replacing the group lines, unit conversions (item-specific before generic, a row
-- read backwards as 1/factor), base_qty, component scrap on positive lines, by-products, and
-- `consumption` and `adjustments` written as Hive-partitioned Parquet (rounded half away from zero
-- at uom_decimals).
--
-- ${landing} and ${out} are filled in by benchmarks/baseline_duckdb_core.py.

SET TimeZone = 'UTC';
SET preserve_insertion_order = false;

CREATE TEMP TABLE items AS
SELECT item_id, uom, coalesce(standard_cost, 0) AS standard_cost, coalesce(phantom, false) AS phantom,
       coalesce(backflush, true) AS backflush, coalesce(uom_decimals, 3) AS uom_decimals
FROM read_parquet('${landing}/items/*.parquet');

-- the latest version of each completion, with its business date in the plant's zone
CREATE TEMP TABLE completions AS
SELECT c.plant_id, c.location_id, c.item_id, c.qty_good, c.qty_good + coalesce(c.qty_scrap, 0) AS q,
       CAST(timezone(coalesce(p.timezone, 'UTC'), c.completed_at) AS DATE) AS business_date
FROM read_parquet('${landing}/completions/*.parquet') c
LEFT JOIN read_parquet('${landing}/plants/*.parquet') p USING (plant_id)
QUALIFY row_number() OVER (PARTITION BY c.completion_id
                           ORDER BY coalesce(c.recorded_at, c.completed_at) DESC) = 1;

-- each BOM line's requirement per unit of parent, in the component's base unit
CREATE TEMP TABLE lines AS
WITH conv AS (SELECT item_id, from_uom, to_uom, factor FROM read_parquet('${landing}/uom_conversions/*.parquet')),
b AS (
    SELECT b.*, i.uom AS base_uom, coalesce(b.uom, i.uom) AS line_uom, i.phantom
    FROM read_parquet('${landing}/bom/*.parquet') b JOIN items i ON i.item_id = b.component_item_id
)
SELECT b.plant_id, b.parent_item_id AS parent, b.component_item_id AS component, b.phantom,
       b.valid_from, b.valid_to,
       b.qty_per / coalesce(b.base_qty, 1)
           * CASE WHEN b.qty_per > 0 THEN 1 + coalesce(b.scrap_pct, 0) / 100 ELSE 1 END
           * CASE WHEN b.line_uom = b.base_uom THEN 1
                  ELSE coalesce(f1.factor, 1 / f2.factor, f3.factor, 1 / f4.factor) END AS r
FROM b
LEFT JOIN conv f1 ON f1.item_id = b.component_item_id AND f1.from_uom = b.line_uom AND f1.to_uom = b.base_uom
LEFT JOIN conv f2 ON f2.item_id = b.component_item_id AND f2.from_uom = b.base_uom AND f2.to_uom = b.line_uom
LEFT JOIN conv f3 ON f3.item_id IS NULL AND f3.from_uom = b.line_uom AND f3.to_uom = b.base_uom
LEFT JOIN conv f4 ON f4.item_id IS NULL AND f4.from_uom = b.base_uom AND f4.to_uom = b.line_uom;

-- the lines each plant uses: its own for a parent if it has any, else the group's
CREATE TEMP TABLE plant_lines AS
SELECT * FROM lines WHERE plant_id IS NOT NULL
UNION ALL BY NAME
SELECT p.plant_id, g.* EXCLUDE (plant_id)
FROM (SELECT DISTINCT plant_id FROM completions) p, lines g
WHERE g.plant_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM lines o WHERE o.plant_id = p.plant_id AND o.parent = g.parent);

-- explode each (plant, item, business date) once, through phantoms
CREATE TEMP TABLE requirements AS
WITH RECURSIVE keys AS (
    SELECT DISTINCT plant_id, item_id, business_date FROM completions WHERE q > 0
), x AS (
    SELECT k.plant_id, k.item_id, k.business_date, l.component, l.phantom, l.r
    FROM keys k JOIN plant_lines l ON l.plant_id = k.plant_id AND l.parent = k.item_id
     AND (l.valid_from IS NULL OR l.valid_from <= k.business_date)
     AND (l.valid_to IS NULL OR k.business_date < l.valid_to)
    UNION ALL
    SELECT x.plant_id, x.item_id, x.business_date, l.component, l.phantom, x.r * l.r
    FROM x JOIN plant_lines l ON l.plant_id = x.plant_id AND l.parent = x.component
     AND (l.valid_from IS NULL OR l.valid_from <= x.business_date)
     AND (l.valid_to IS NULL OR x.business_date < l.valid_to)
    WHERE x.phantom
)
SELECT plant_id, item_id, business_date, component, sum(r) AS r
FROM x WHERE NOT phantom GROUP BY ALL;

CREATE TEMP TABLE demand AS
SELECT plant_id, business_date, location_id, item_id, sum(qty_good) AS qty_good, sum(q) AS q,
       count(*) AS completions
FROM completions WHERE q > 0 GROUP BY ALL;

CREATE TEMP TABLE flows AS
SELECT d.plant_id, d.business_date, d.location_id, d.item_id, r.component, r.r, d.q * r.r AS qty,
       d.completions, i.uom, i.backflush
FROM demand d JOIN requirements r USING (plant_id, item_id, business_date)
JOIN items i ON i.item_id = r.component;

COPY (
    SELECT plant_id, business_date, location_id, item_id, component AS component_item_id, qty, uom,
           backflush AS backflushed, completions
    FROM flows WHERE r > 0
) TO '${out}/consumption' (FORMAT parquet, PARTITION_BY (plant_id, business_date));

COPY (
    WITH raw AS (
        SELECT plant_id, business_date, location_id, item_id, 'production_receipt' AS kind,
               qty_good AS qty, completions
        FROM demand
        UNION ALL
        SELECT plant_id, business_date, location_id, component,
               CASE WHEN r > 0 THEN 'backflush_issue' ELSE 'byproduct_receipt' END, -sum(qty), sum(completions)
        FROM flows WHERE r < 0 OR backflush GROUP BY ALL
    ), rounded AS (  -- half away from zero; the scaled value first cleaned of binary noise at 6 decimals
        SELECT raw.*, i.uom, i.standard_cost,
               sign(raw.qty) * floor(round(abs(raw.qty) * pow(10, i.uom_decimals), 6) + 0.5)
                   / pow(10, i.uom_decimals) AS rounded_qty
        FROM raw JOIN items i USING (item_id)
    )
    SELECT plant_id, business_date, location_id, item_id, kind, rounded_qty AS qty, uom,
           rounded_qty * standard_cost AS value, completions
    FROM rounded
) TO '${out}/adjustments' (FORMAT parquet, PARTITION_BY (plant_id, business_date));
