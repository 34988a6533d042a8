"""Two warehouses' outputs side by side, without what differs from run to run (ids, times, file
names): the pruned-read tests compare a pruned run with a full read this way."""

from __future__ import annotations

import pandas as pd

from pipeline.config import Config
from pipeline.store.warehouse import Warehouse

RUN_COLUMNS = {"run_id", "posted_at", "posting_id", "as_of", "source"}
COMPARED = ["consumption", "adjustments", "postings", "variance", "bom_accuracy", "quarantine"]


def outputs(config: Config) -> dict[str, pd.DataFrame]:
    """The compared datasets of a warehouse, sorted, less the run-specific columns, plus the
    fingerprints and dates of its runs in order."""
    warehouse = Warehouse(config.warehouse)
    out = {}
    for name in COMPARED:
        frame = warehouse.read(name)
        frame = frame.drop(columns=[c for c in frame.columns if c in RUN_COLUMNS])
        out[name] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    runs = warehouse.read("runs").sort_values("started_at")
    out["runs"] = runs[["input_fingerprints"]].reset_index(drop=True)
    out["run_dates"] = pd.DataFrame({"dates": [sorted(str(d) for d in v) for v in runs["business_dates"]]})
    return out


def same_outputs(full: Config, pruned: Config) -> None:
    """Assert that the two warehouses hold the same outputs (see `outputs`)."""
    a, b = outputs(full), outputs(pruned)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_dtype=True, obj=name)
