"""Do two implementations give the same `consumption` and `adjustments`? Compared key by key in DuckDB.

consumption is keyed by (plant_id, business_date, location_id, item_id, component_item_id) and
compared on qty (unrounded, within a relative tolerance), completions, uom and backflushed;
adjustments by (plant_id, business_date, location_id, item_id, kind) on qty (rounded), value,
completions and adjustment_id. Rows present on one side only are mismatches too.

    python benchmarks/compare.py --pipeline WAREHOUSE --other DIR --start D --end D
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb

KEYS = {
    "consumption": ["plant_id", "business_date", "location_id", "item_id", "component_item_id"],
    "adjustments": ["plant_id", "business_date", "location_id", "item_id", "kind"],
}
EXACT = {
    "consumption": ["completions", "uom", "backflushed"],
    "adjustments": ["completions", "uom"],
}
# the contract asks for an id "deterministic from the key", not for one hash function: ids are checked
# to be present and unique per key on each side; equality across sides is only reported
IDS = {"adjustments": "adjustment_id"}
CLOSE = {"consumption": ["qty"], "adjustments": ["qty", "value"]}


def _dataset(path: Path) -> str:
    """A DuckDB relation over a Hive-partitioned dataset folder or a single Parquet file."""
    if path.is_file():
        return f"read_parquet('{path}')"
    return f"read_parquet('{path}/**/*.parquet', hive_partitioning = true, union_by_name = true)"


def _columns(con: duckdb.DuckDBPyConnection, path: Path) -> set[str] | None:
    """The columns a dataset's files carry (None: nothing written, compare every column)."""
    if not (path.is_file() or (path.exists() and any(path.rglob("*.parquet")))):
        return None
    return {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {_dataset(path)}").fetchall()}


def _close(a: str, b: str, rel: float) -> str:
    return (f"(({a} IS NULL AND {b} IS NULL) OR abs({a} - {b}) <= {rel} * greatest(abs({a}), abs({b}))"
            f" OR abs({a} - {b}) <= 1e-12)")


def compare_dataset(con: duckdb.DuckDBPyConnection, name: str, pipeline: Path, other: Path,
                    start: dt.date, end: dt.date, *, rel: float, examples: int) -> dict[str, Any]:
    keys = KEYS[name]
    # a column the other side does not write (a minimal baseline's adjustment_id, say) is not compared
    written = _columns(con, other)
    exact = [c for c in EXACT[name] if written is None or c in written]
    close = [c for c in CLOSE[name] if written is None or c in written]
    id_col = IDS.get(name) if written is None or IDS.get(name) in written else None
    cols = keys + exact + close + ([id_col] if id_col else [])

    def side(path: Path) -> str:
        if not (path.is_file() or any(path.rglob("*.parquet"))):  # nothing written: an empty side
            return "SELECT " + ", ".join(f"NULL AS {c}" for c in cols) + " WHERE false"
        select = ", ".join("CAST(business_date AS DATE) AS business_date" if c == "business_date"
                           else "CAST(plant_id AS VARCHAR) AS plant_id" if c == "plant_id" else c for c in cols)
        return (f"SELECT {select} FROM {_dataset(path)} "
                f"WHERE CAST(business_date AS DATE) BETWEEN DATE '{start}' AND DATE '{end}'")

    con.execute(f"CREATE OR REPLACE TEMP TABLE p_{name} AS {side(pipeline)}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE o_{name} AS {side(other)}")
    on = " AND ".join(f"p.{k} = o.{k}" for k in keys)
    checks = {f"{c}_differs": f"NOT (p.{c} IS NOT DISTINCT FROM o.{c})" for c in exact}
    checks.update({f"{c}_differs": f"NOT {_close('p.' + c, 'o.' + c, rel)}" for c in close})
    key_select = ", ".join(f"coalesce(p.{k}, o.{k}) AS {k}" for k in keys)
    flags = ", ".join(f"{expr} AS {flag}" for flag, expr in checks.items())
    values = ", ".join(f"p.{c} AS pipeline_{c}, o.{c} AS other_{c}" for c in exact + close)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE j_{name} AS
        SELECT {key_select}, p.{keys[0]} IS NULL AS only_other, o.{keys[0]} IS NULL AS only_pipeline,
               {flags}, {values}
        FROM p_{name} p FULL OUTER JOIN o_{name} o ON {on}
    """)
    counts = con.execute(f"""
        SELECT count(*) FILTER (WHERE NOT only_other), count(*) FILTER (WHERE NOT only_pipeline),
               count(*) FILTER (WHERE only_pipeline), count(*) FILTER (WHERE only_other),
               {", ".join(f"count(*) FILTER (WHERE NOT only_pipeline AND NOT only_other AND {f})" for f in checks)}
        FROM j_{name}
    """).fetchone()
    assert counts is not None
    summary: dict[str, Any] = {
        "rows_pipeline": counts[0], "rows_other": counts[1], "only_in_pipeline": counts[2],
        "only_in_other": counts[3],
        **{flag: n for flag, n in zip(checks, counts[4:], strict=True)},
    }
    # a row of zero quantity from zero counted completions (e.g. only cancellations) on one side only is
    # a presentation choice, not a different number: reported, not counted as a mismatch
    zero_p = "(only_pipeline AND pipeline_qty = 0 AND coalesce(pipeline_completions, 0) = 0)"
    zero_o = "(only_other AND other_qty = 0 AND coalesce(other_completions, 0) = 0)"
    zeros = con.execute(f"SELECT count(*) FILTER (WHERE {zero_p}), count(*) FILTER (WHERE {zero_o}) "
                        f"FROM j_{name}").fetchone()
    assert zeros is not None
    summary["zero_rows_only_in_pipeline"], summary["zero_rows_only_in_other"] = zeros
    mismatch = (f"(({' OR '.join(['only_pipeline', 'only_other'] + list(checks))}) "
                f"AND NOT {zero_p} AND NOT {zero_o})")
    summary["mismatched_rows"] = con.execute(f"SELECT count(*) FROM j_{name} WHERE {mismatch}").fetchone()[0]  # type: ignore[index]
    rows = con.execute(f"""
        SELECT * FROM j_{name} WHERE {mismatch}
        ORDER BY only_pipeline, only_other, {", ".join(keys)} LIMIT {examples}
    """).fetchdf()
    summary["examples"] = json.loads(rows.to_json(orient="records", date_format="iso"))
    if summary["zero_rows_only_in_pipeline"] or summary["zero_rows_only_in_other"]:
        zero = con.execute(f"SELECT * FROM j_{name} WHERE {zero_p} OR {zero_o} ORDER BY ALL LIMIT 2").fetchdf()
        summary["zero_row_examples"] = json.loads(zero.to_json(orient="records", date_format="iso"))
    summary["agree"] = summary["mismatched_rows"] == 0
    summary["not_compared"] = [c for c in EXACT[name] + CLOSE[name] + ([IDS[name]] if name in IDS else [])
                               if c not in cols]
    if id_col:
        col = id_col
        ids: dict[str, Any] = {}
        for side_name, table in (("pipeline", f"p_{name}"), ("other", f"o_{name}")):
            n, distinct, nulls = con.execute(
                f"SELECT count(*), count(DISTINCT {col}), count(*) FILTER (WHERE {col} IS NULL) FROM {table}"
            ).fetchone()  # type: ignore[misc]
            ids[f"{side_name}_ids_unique_per_key"] = n == distinct and nulls == 0
        ids["same_ids_on_both_sides"] = con.execute(
            f"SELECT count(*) FROM p_{name} p JOIN o_{name} o USING ({', '.join(keys)}) WHERE p.{col} = o.{col}"
        ).fetchone()[0]  # type: ignore[index]
        summary[f"{col}_check"] = ids
        summary["agree"] = summary["agree"] and ids["pipeline_ids_unique_per_key"]
    return summary


def compare(pipeline: Path, other: Path, start: dt.date, end: dt.date, *, rel: float = 1e-6,
            examples: int = 8, other_rejected: Path | None = None) -> dict[str, Any]:
    """Both datasets compared; plus which completions each side rejected, when known."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    out: dict[str, Any] = {"relative_tolerance": rel}
    for name in KEYS:
        out[name] = compare_dataset(con, name, pipeline / name, other / name, start, end, rel=rel,
                                    examples=examples)
    quarantine = pipeline / "quarantine" / "table=completions"
    files = sorted(str(p) for p in quarantine.rglob("*.parquet")) if quarantine.exists() else []
    if files:
        q = con.execute("SELECT error_code, count(DISTINCT source_key) FROM read_parquet(?) GROUP BY 1 ORDER BY 1",
                        [files]).fetchall()
        out["pipeline_quarantined_completions"] = dict(q)
    else:
        out["pipeline_quarantined_completions"] = {}
    if other_rejected is not None and other_rejected.exists():
        r = con.execute(f"SELECT error_code, count(DISTINCT completion_id) FROM read_parquet('{other_rejected}') "
                        "GROUP BY 1 ORDER BY 1").fetchall()
        out["other_rejected_completions"] = dict(r)
        if files:
            diff = con.execute(f"""
                WITH p AS (SELECT DISTINCT source_key AS id, error_code FROM read_parquet(?)
                           WHERE error_code NOT IN ('INVALID')),
                     o AS (SELECT DISTINCT completion_id AS id, error_code FROM read_parquet('{other_rejected}'))
                SELECT coalesce(p.id, o.id) AS completion_id, p.error_code AS pipeline, o.error_code AS other
                FROM p FULL OUTER JOIN o ON p.id = o.id
                WHERE p.error_code IS DISTINCT FROM o.error_code ORDER BY 1 LIMIT 10""", [files]).fetchall()
            out["rejection_differences"] = [dict(zip(("completion_id", "pipeline", "other"), d, strict=True))
                                            for d in diff]
    out["agree"] = all(out[name]["agree"] for name in KEYS)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pipeline", type=Path, required=True, help="the pipeline's warehouse")
    parser.add_argument("--other", type=Path, required=True, help="folder with consumption/ and adjustments/")
    parser.add_argument("--start", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--end", type=dt.date.fromisoformat, required=True)
    parser.add_argument("--rel", type=float, default=1e-6)
    parser.add_argument("--out", type=Path, help="write the result as JSON here (default: print it)")
    args = parser.parse_args()
    result = compare(args.pipeline, args.other, args.start, args.end, rel=args.rel,
                     other_rejected=args.other / "rejected.parquet")
    text = json.dumps(result, indent=1, default=str)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0 if result["agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
