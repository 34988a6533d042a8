"""The I/O floor: read what the pipeline must read, write as much Parquet as it writes, compute nothing.

Reads the needed columns of every landing table with pyarrow, then writes every output file the
pipeline wrote (same datasets, same partition folders, same row count and schema per file, zstd
like the warehouse) with values sliced from the columns just read. No contender can be faster
than this on the same machine: the pipeline's wall over this is what its computing costs.

    python benchmarks/io_floor.py --describe WAREHOUSE --shape SHAPE.json   # once, not timed
    python benchmarks/io_floor.py --landing L --shape SHAPE.json --out DIR  # the timed floor

--describe records the shape of a pipeline warehouse (every output file: path, rows, schema) in
SHAPE.json, so that the floor itself reads no output of the pipeline's.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

# what the outputs depend on (order_id only reaches quarantine rows; movement kinds nothing)
NEEDED = {
    "plants": ["plant_id", "timezone"],
    "items": ["item_id", "uom", "standard_cost", "phantom", "backflush", "uom_decimals"],
    "uom_conversions": ["item_id", "from_uom", "to_uom", "factor"],
    "bom": ["plant_id", "parent_item_id", "component_item_id", "qty_per", "base_qty", "uom", "scrap_pct",
            "valid_from", "valid_to"],
    "completions": ["completion_id", "plant_id", "location_id", "item_id", "qty_good", "qty_scrap",
                    "completed_at", "recorded_at"],
    "stock_counts": ["count_id", "plant_id", "location_id", "item_id", "counted_qty", "counted_at"],
    "movements": ["movement_id", "plant_id", "location_id", "item_id", "qty", "moved_at"],
}
OUTPUTS = ("consumption", "adjustments", "postings", "variance", "bom_accuracy", "quarantine", "runs")
PARQUET = {"compression": "zstd", "write_statistics": True, "row_group_size": 256 * 1024}  # as the warehouse
HASH_IDS = {"adjustment_id", "posting_id"}  # 32 hex digits per row in the warehouse (ledger.stable_ids)


def describe(warehouse: Path) -> dict[str, Any]:
    """Every output file of a warehouse: relative path and rows, and each dataset's schema."""
    shape: dict[str, Any] = {}
    for name in OUTPUTS:
        files = sorted((warehouse / name).rglob("*.parquet")) if (warehouse / name).exists() else []
        if not files:
            continue
        schema = pq.read_schema(files[0])
        shape[name] = {"schema": base64.b64encode(schema.serialize().to_pybytes()).decode(),
                       "files": [[str(f.relative_to(warehouse)), pq.read_metadata(f).num_rows] for f in files]}
    return shape


def read_landing(landing: Path) -> dict[str, pa.Table]:
    out = {}
    for table, columns in NEEDED.items():
        files = sorted((landing / table).glob("*.parquet"))
        if files:
            have = set(pq.read_schema(files[0]).names)
            out[table] = pa.concat_tables(pq.read_table(f, columns=[c for c in columns if c in have]) for f in files)
    return out


def hex_ids(n: int, seed: int = 0) -> pa.Array:
    """n random strings of 32 hex digits, built as one buffer (as incompressible as the warehouse's ids)."""
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    data = digits[np.random.default_rng(seed).integers(0, 16, size=32 * n, dtype=np.uint8)]
    offsets = np.arange(0, 32 * n + 1, 32, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class Pools:
    """Values to slice output columns from (cycled when an output is longer): text from the landing's
    columns, quantities as the product of a completion's units and a BOM line's qty_per (as the
    outputs' are), and 32-hex-digit ids for the hash id columns."""

    def __init__(self, tables: dict[str, pa.Table]) -> None:
        c = tables["completions"]
        self.strings = pa.chunked_array(c["item_id"].chunks + c["location_id"].chunks + c["completion_id"].chunks)
        qty = c["qty_good"].to_numpy()
        per = tables["bom"]["qty_per"].to_numpy()  # quantities like the outputs': completed units x a BOM line's qty
        self.floats = pa.chunked_array([qty * np.resize(per, len(qty))])
        self.ids = pa.chunked_array([hex_ids(len(c))])
        self.times = c["completed_at"]
        self.n = len(c)
        self.offset = 0

    def _slice(self, pool: pa.ChunkedArray, rows: int) -> pa.ChunkedArray:
        parts, start, left = [], self.offset % len(pool), rows
        while left:
            take = min(left, len(pool) - start)
            parts.extend(pool.slice(start, take).chunks)
            left, start = left - take, 0
        return pa.chunked_array(parts, type=pool.type)

    def column(self, field: pa.Field, rows: int) -> pa.ChunkedArray | pa.Array:
        t = field.type
        if field.name in HASH_IDS:
            col = self._slice(self.ids, rows)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            col = self._slice(self.strings, rows)
        elif pa.types.is_floating(t):
            col = self._slice(self.floats, rows)
        elif pa.types.is_integer(t):
            return pa.array(np.arange(self.offset, self.offset + rows) % 1000, type=t)
        elif pa.types.is_boolean(t):
            return pa.array(np.arange(rows) % 3 == 0)
        elif pa.types.is_timestamp(t) or pa.types.is_date(t):
            col = self._slice(self.times, rows)
        else:  # lists and maps (the runs row): nulls of the type
            return pa.nulls(rows, type=t)
        return pc.cast(col, t)

    def table(self, schema: pa.Schema, rows: int) -> pa.Table:
        table = pa.table([self.column(f, rows) for f in schema], schema=schema)
        self.offset += rows
        return table


def write_outputs(pools: Pools, shape: dict[str, Any], out: Path, threads: int) -> dict[str, int]:
    written: dict[str, int] = {}
    jobs = []
    for name, d in shape.items():
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
        for path, rows in d["files"]:
            jobs.append((out / path, pools.table(schema, rows)))  # slices: no copy until written
            written[name] = written.get(name, 0) + rows
    for target in {p.parent for p, _ in jobs}:
        target.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(threads) as pool:  # pyarrow writes without the GIL
        list(pool.map(lambda job: pq.write_table(job[1], job[0], **PARQUET), jobs))
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--describe", type=Path, metavar="WAREHOUSE", help="write the shape of this warehouse")
    parser.add_argument("--shape", type=Path, required=True)
    parser.add_argument("--landing", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--threads", type=int, default=pa.cpu_count())
    args = parser.parse_args()
    if args.describe:
        args.shape.write_text(json.dumps(describe(args.describe)))
        return 0
    if args.landing is None or args.out is None:
        parser.error("--landing and --out are needed (or --describe)")
    t0 = time.perf_counter()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    shape = json.loads(args.shape.read_text())
    tables = read_landing(args.landing)
    t_read = time.perf_counter()
    written = write_outputs(Pools(tables), shape, args.out, args.threads)
    t_end = time.perf_counter()
    stats = {"read_s": round(t_read - t0, 3), "write_s": round(t_end - t_read, 3), "wall_s": round(t_end - t0, 3),
             "rows_read": {t: x.num_rows for t, x in tables.items()}, "rows_written": written,
             "files_written": sum(len(d["files"]) for d in shape.values())}
    (args.out / "stats.json").write_text(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
