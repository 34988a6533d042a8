"""Counts: variance, negative stock exceptions, BOM accuracy and suggestions, a plant at a time."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from pipeline.config import Config
from pipeline.contract.inputs import Inputs
from pipeline.domain import accuracy, stock_windows, variance
from pipeline.stages.context import RunContext
from pipeline.stages.quarantine_files import _plant_filter
from pipeline.store.warehouse import Warehouse


def variance_after(warehouse: Warehouse, new_rows: pd.DataFrame, rewritten: pd.DataFrame,
                    plants: list[str]) -> pd.DataFrame:
    """The variance history of the plants as it will be after this run."""
    history = warehouse.read("variance", filters=_plant_filter(plants))
    kept = history.merge(rewritten, on=["plant_id", "count_date"], how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([kept, new_rows], ignore_index=True) if not kept.empty else new_rows


def plant_bom_accuracy(rows: pd.DataFrame, inputs: Inputs, plants: list[str], config: Config,
                  as_of: pd.Timestamp) -> pd.DataFrame:
    """BOM accuracy over the variance history as it will be after this run (`variance_after`)."""
    scrap = accuracy.planned_scrap(inputs.bom, plants)
    return accuracy.bom_accuracy(rows, scrap, config, as_of=as_of)


@dataclass
class CountTotals:
    """What the count outputs add up to, for the run summary."""

    variance_rows: pd.DataFrame  # the run's variance rows, `variance.SUMMARY_COLUMNS` only
    accuracy_flags: pd.Series
    exception_rows: int


def write_counts(run: RunContext, inputs: Inputs, windows: stock_windows.CountWindows) -> CountTotals:
    """Stage variance, stock exceptions, BOM accuracy and BOM-line suggestions a plant at a time: a
    plant's counts are reconciled and written before the next plant's exist (memory follows one
    plant's counts)."""
    run.progress.stage("variance", plants=len(run.plants))
    variance_parts, accuracy_parts = [], []
    exception_rows = 0
    parent_flows = windows.parent_flows()  # per (count window, parent): units made (issue 16.6)
    for plant in run.plants:
        counts = variance.variance_scope(inputs, run.scope[run.scope["plant_id"] == plant], run.config)
        variance_rows = variance.count_variance(inputs, counts, run.config, windows)
        exceptions = variance.stock_exceptions(inputs, counts, windows, run.config)
        checked = variance_after(run.warehouse, variance_rows, counts.scope, [plant])
        accuracy_rows = plant_bom_accuracy(checked, inputs, [plant], run.config, run.started)
        suggestions = accuracy.bom_suggestions(checked, parent_flows, run.config, as_of=run.started)
        run.txn.replace("bom_suggestions", suggestions, [{"plant_id": plant}],
                        sort_by=["component_item_id", "parent_item_id"])
        del checked, suggestions
        # stock exceptions have the variance's partitions: a window's row belongs to its closing count's date
        partitions = [{"plant_id": p, "count_date": d}
                      for p, d in zip(counts.scope["plant_id"], counts.scope["count_date"], strict=True)]
        run.txn.replace("variance", variance_rows, partitions, sort_by=["location_id", "item_id", "counted_at"])
        run.txn.replace("stock_exceptions", exceptions, partitions, sort_by=["location_id", "item_id", "counted_at"])
        exception_rows += len(exceptions)
        run.txn.replace("bom_accuracy", accuracy_rows, [{"plant_id": plant}], sort_by=["component_item_id"])
        variance_parts.append(variance_rows[variance.SUMMARY_COLUMNS])
        accuracy_parts.append(accuracy_rows["flag"])
        del counts, variance_rows, accuracy_rows, exceptions
    summary = pd.concat(variance_parts, ignore_index=True) if variance_parts else \
        pd.DataFrame(columns=variance.SUMMARY_COLUMNS)
    flags = pd.concat(accuracy_parts, ignore_index=True) if accuracy_parts else pd.Series([], dtype="str")
    return CountTotals(variance_rows=summary, accuracy_flags=flags, exception_rows=exception_rows)
