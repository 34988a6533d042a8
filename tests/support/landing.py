"""Build small landing folders from literal rows, for exact-number tests."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from pipeline import job
from pipeline.config import Config, load_config

ITEM_COLUMNS = ["item_id", "uom", "standard_cost", "phantom", "backflush", "uom_decimals"]
# the items of most hand-worked cases: a finished good counted in units, a raw material in kg (3 decimals)
FG_AND_RM = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 10, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "KG", "standard_cost": 3, "phantom": "false", "backflush": "true", "uom_decimals": 3},
]


def write_table(landing: Path, table: str, rows: Sequence[Mapping[str, object]], *, name: str = "part.csv",
                columns: Sequence[str] | None = None) -> Path:
    """Write rows as one CSV (or Parquet, if name ends .parquet) file of a landing table."""
    folder = landing / table
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in rows for k in r))
    if name.endswith(".parquet"):
        pd.DataFrame(list(rows), columns=cols).to_parquet(path, index=False)
        return path
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=cols)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def make_landing(root: Path, **tables: Sequence[Mapping[str, object]]) -> Path:
    """A landing folder with the given tables (items, bom, completions and stock_counts default to empty)."""
    landing = root / "landing"
    defaults: dict[str, list[str]] = {
        "items": ITEM_COLUMNS,
        "bom": ["parent_item_id", "component_item_id", "qty_per"],
        "completions": ["completion_id", "plant_id", "location_id", "item_id", "qty_good", "completed_at"],
        "stock_counts": ["count_id", "plant_id", "location_id", "item_id", "counted_qty", "counted_at"],
    }
    for table, columns in defaults.items():
        if table not in tables:
            write_table(landing, table, [], columns=columns)
    for table, rows in tables.items():
        write_table(landing, table, rows)
    return landing


def config_for(root: Path, landing: Path, **overrides: object) -> Config:
    """A config with the landing folder and a warehouse under root. Unchanged re-runs do not stop
    early here (`skip_unchanged_reruns = false` unless overridden): these tests re-run to check what
    the engine recomputes (idempotence, nothing posted twice); the short-circuit has its own tests
    (tests/stages/test_rerun.py), which compare it with exactly this full re-run."""
    overrides.setdefault("skip_unchanged_reruns", False)
    return load_config(None, landing=str(landing), warehouse=str(root / "warehouse"), **overrides)


def run(root: Path, landing: Path, dates: Sequence[str], **kwargs: object) -> job.RunResult:
    """Run the pipeline for the given ISO dates; returns the run result."""
    import datetime as dt

    config = config_for(root, landing)
    return job.run_dates(config, [dt.date.fromisoformat(d) for d in dates], **kwargs)  # type: ignore[arg-type]


def read(root: Path, dataset: str) -> pd.DataFrame:
    """An output dataset of the warehouse under root, as pandas."""
    from pipeline.store.warehouse import Warehouse

    return Warehouse(str(root / "warehouse")).read(dataset)


def completion(cid: str, item_id: str, qty_good: float, *, plant: str = "P1", location: str = "L1",
               qty_scrap: float = 0, at: str = "2026-03-02T10:00:00Z") -> dict[str, object]:
    """One completion row (UTC plants: business date 2026-03-02 by default)."""
    return {"completion_id": cid, "plant_id": plant, "location_id": location, "item_id": item_id,
            "qty_good": qty_good, "qty_scrap": qty_scrap, "completed_at": at}
