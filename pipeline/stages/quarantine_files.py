"""Quarantine files: the rejected rows of the processed window, filed by plant and date, with the error
queue's released rows carried."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from pipeline.config import Config
from pipeline.contract.inputs import INPUT_TABLES
from pipeline.domain import error_queue
from pipeline.stages.context import RunContext
from pipeline.stages.daily import _put_or_delete
from pipeline.stages.read import RunInputs
from pipeline.store.warehouse import Transaction, Warehouse, encode_segment

GLOBAL_FILE = "part-global.parquet"  # quarantine rows without a plant (master data)


def _plant_filter(plants: list[str]) -> object:
    import pyarrow.dataset as ds

    return ds.field("plant_id").isin(plants)


def carried_quarantine(warehouse: Warehouse, quarantine: pd.DataFrame, scope: pd.DataFrame, plants: list[str],
                        run_id: str, started: pd.Timestamp) -> pd.DataFrame:
    """Quarantined completions of the rewritten files that stay, marked released (`error_queue.carried_rows`)."""
    import pyarrow.dataset as ds

    previous = warehouse.read("quarantine", filters=(ds.field("table") == "completions")
                              & ds.field("plant_id").isin(plants))
    carried = error_queue.carried_rows(previous, quarantine, scope, run_id, started)
    return carried.assign(_file=carried["plant_id"].map(plant_file)) if not carried.empty else carried


def quarantine_in_scope(
    read_rejects: pd.DataFrame, explode_rejects: pd.DataFrame, scope: pd.DataFrame, plants: list[str],
    run_date: dt.date, run_id: str,
) -> pd.DataFrame:
    """Rejected rows of the processed window, each with the file it goes to (`_file`).

    A row with a plant and a business date goes to that date's partition, in its plant's file. A
    row whose date cannot be read (with its plant's `undated` file) or that has no plant (master
    data: the `global` file) goes to the run's date, and only there: the same file is removed from
    the table's other dates, so a row rejected night after night is one row, not one per night.
    """
    rows = pd.concat([read_rejects, explode_rejects], ignore_index=True)
    rows["business_date"] = pd.to_datetime(rows["business_date"]).astype("datetime64[ns]")
    undated = rows["business_date"].isna()
    no_plant = rows["plant_id"].isna()
    dated = rows[~undated & ~no_plant].merge(scope, on=["plant_id", "business_date"], how="inner")
    dated["_file"] = dated["plant_id"].map(plant_file)
    floating = rows[(undated | no_plant) & (no_plant | rows["plant_id"].isin(plants))].copy()
    floating["_file"] = floating["plant_id"].map(undated_file, na_action="ignore").astype("object").fillna(GLOBAL_FILE)
    floating["business_date"] = pd.Timestamp(run_date)
    out = pd.concat([dated, floating], ignore_index=True)
    out["run_id"] = run_id
    return out.drop_duplicates(subset=["table", "source_key", "error_code", "message", "row"]).reset_index(drop=True)


def plant_file(plant: str) -> str:
    """The quarantine file of a plant's dated rows within a (table, business_date) partition."""
    return f"part-p-{encode_segment(plant)}.parquet"


def undated_file(plant: str) -> str:
    """The quarantine file of a plant's rows whose business date cannot be read."""
    return f"part-u-{encode_segment(plant)}.parquet"


def write_quarantine(
    txn: Transaction, warehouse: Warehouse, quarantine: pd.DataFrame, scope: pd.DataFrame, plants: list[str],
    run_date: dt.date,
) -> None:
    """Stage every quarantine file of the processed window (see `quarantine_in_scope`)."""
    groups = dict(iter(quarantine.groupby(["table", "business_date", "_file"], sort=False)))
    sort_by = ["source_key", "error_code"]
    empty = quarantine.iloc[0:0]
    day = pd.Timestamp(run_date)
    floating_files = [GLOBAL_FILE] + [undated_file(p) for p in plants]
    moved_away = {name: warehouse.partitions_with_file("quarantine", name) for name in floating_files}
    for table in INPUT_TABLES:
        for plant, date in zip(scope["plant_id"], scope["business_date"], strict=True):
            name = plant_file(plant)
            _put_or_delete(txn, table, date, groups.get((table, date, name), empty), name, sort_by)
        for name in floating_files:
            _put_or_delete(txn, table, day, groups.get((table, day, name), empty), name, sort_by)
            for partition in moved_away[name]:
                if partition.get("table") == table and partition.get("business_date") != f"{run_date:%Y-%m-%d}":
                    txn.delete("quarantine", {"table": table, "business_date": partition["business_date"]},
                               file_name=name)


def plan_error_queue(config: Config, run_inputs: RunInputs, warehouse: Warehouse, history: pd.DataFrame,
                     plants: list[str], requested: list[dt.date]) -> error_queue.Plan:
    """The error queue's part of a run (`pipeline.domain.error_queue`): the dates of quarantined
    completions that explode now, and the posted dates whose explosion changed."""
    import pyarrow.dataset as ds

    totals = run_inputs.completions
    current = error_queue.current_hashes(totals.demand, totals.requirements, totals.errors, plants)
    points, posted = error_queue.recorded(history, plants)
    points_now = error_queue.change_points(current)
    changed = error_queue.changed_posted_dates(current, points, posted)
    held = warehouse.read("quarantine", filters=(ds.field("table") == "completions")
                          & ds.field("error_code").isin(list(error_queue.RESOLVABLE)) & ds.field("plant_id").isin(plants),
                          columns=["plant_id", "table", "business_date", "source_key", "error_code", "message", "row",
                                   "released_by_run"])
    released = error_queue.releasable_dates(error_queue.open_rows(held), run_inputs.inputs)
    # a source read by window (SQL) holds the completions of the look-back only: older dates are
    # listed, not reprocessed (recomputed without their completions, they would be reversed)
    earliest = min(requested) - dt.timedelta(days=config.lookback_days) if config.sql is not None and requested else None
    return error_queue.Plan(released_dates=released, changed_dates=changed, earliest=earliest,
                            fingerprints=None if error_queue.unchanged(points_now, points) else points_now)


def file_quarantine(run: RunContext, rejected: pd.DataFrame) -> pd.DataFrame:
    """Stage the quarantine files of the window: the rows rejected now, open, and the rows of the
    rewritten files that stay, released (`carried_quarantine`). Returns the carried rows."""
    carried = carried_quarantine(run.warehouse, rejected, run.scope, run.plants, run.run_id, run.started)
    filed = rejected.assign(released_by_run=None, released_at=pd.NaT)
    filed = pd.concat([filed, carried], ignore_index=True) if not carried.empty else filed
    write_quarantine(run.txn, run.warehouse, filed, run.scope, run.plants, run.run_date)
    return carried
