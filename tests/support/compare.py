"""Two warehouses' outputs side by side, without what differs from run to run (ids, times, file
names): the pruned-read tests compare a pruned run with a full read this way."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from pipeline import job
from pipeline.config import Config
from pipeline.store.warehouse import Warehouse

RUN_COLUMNS = {"run_id", "posted_at", "posting_id", "as_of", "source"}
COMPARED = ["consumption", "adjustments", "postings", "variance", "bom_accuracy", "quarantine"]


def dataset_outputs(config: Config, datasets: Sequence[str] = COMPARED) -> dict[str, pd.DataFrame]:
    """The datasets of a warehouse, each sorted by every column, less the run-specific columns."""
    warehouse = Warehouse(config.warehouse)
    out = {}
    for name in datasets:
        frame = warehouse.read(name)
        frame = frame.drop(columns=[c for c in frame.columns if c in RUN_COLUMNS])
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return out


def outputs(config: Config) -> dict[str, pd.DataFrame]:
    """The compared datasets (`dataset_outputs`), plus the fingerprints and dates of the runs in order."""
    out = dataset_outputs(config)
    runs = Warehouse(config.warehouse).read("runs").sort_values("started_at")
    out["runs"] = runs[["input_fingerprints"]].reset_index(drop=True)
    out["run_dates"] = pd.DataFrame({"dates": [sorted(str(d) for d in v) for v in runs["business_dates"]]})
    return out


def same_outputs(full: Config, pruned: Config) -> None:
    """Assert that the two warehouses hold the same outputs (see `outputs`)."""
    a, b = outputs(full), outputs(pruned)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=True, obj=name)


def run_both(full: Config, pruned: Config, dates: Sequence[dt.date], *, plants: Sequence[str] | None = None) -> None:
    """`run` the same dates into both warehouses, then assert they hold the same outputs."""
    for config in (full, pruned):
        job.run_dates(config, list(dates), plants=plants)
    same_outputs(full, pruned)
