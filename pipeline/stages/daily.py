"""Daily outputs: a plant's consumption, adjustments and postings, a batch of dates at a time (on workers
for a big run), staged in the run's transaction."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.domain import consumption, ledger, periods
from pipeline.engine import workers as workers_
from pipeline.progress import Progress
from pipeline.stages.context import RunContext
from pipeline.stages.read import RunInputs
from pipeline.store.warehouse import Transaction, Warehouse


def _daily_frames(shared: Mapping[str, Any], plant: str, dates: list[pd.Timestamp], part_scope: pd.DataFrame,
                  part_demand: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(consumption, adjustments, postings) of one plant's batch of dates."""
    items = shared["items"]
    flows = consumption.component_flows(part_demand, shared["requirements"])
    consumed = consumption.theoretical_consumption(flows, items, sort=False)
    adjustments = ledger.adjustments(part_demand, flows, items, shared["item_costs"])
    del flows
    import pyarrow.dataset as ds

    days = pa.array([d.date() for d in dates], pa.date32())
    # a posting counts for the date it is for (files from before closed periods have only business_date)
    is_for = ds.field("for_business_date").isin(days) | (
        ds.field("for_business_date").is_null() & ds.field("business_date").isin(days))
    posted = Warehouse(shared["warehouse"]).read("postings", filters=(ds.field("plant_id") == plant) & is_for)
    postings = ledger.postings_delta(adjustments, posted, part_scope, items, run_id=shared["run_id"],
                                     posted_at=shared["started"], posting_dates=shared["posting_dates"])
    return consumed, adjustments, postings


DEMAND_ROWS_PER_BATCH = 100_000  # demand rows whose flows, consumption and adjustments are in memory at once


def date_batches(scope: pd.DataFrame, demand: pd.DataFrame) -> list[list[pd.Timestamp]]:
    """A plant's dates in scope, in runs of consecutive dates holding about DEMAND_ROWS_PER_BATCH
    demand rows (a date with more is a batch of its own)."""
    per_date = demand.groupby("business_date").size()
    batches: list[list[pd.Timestamp]] = [[]]
    rows = 0
    for date in sorted(scope["business_date"]):
        n = int(per_date.get(date, 0))
        if batches[-1] and rows + n > DEMAND_ROWS_PER_BATCH:
            batches.append([])
            rows = 0
        batches[-1].append(date)
        rows += n
    return [b for b in batches if b]


def in_scope(frame: pd.DataFrame, scope: pd.DataFrame, date_column: str = "business_date") -> pd.DataFrame:
    keys = scope.rename(columns={"business_date": date_column})
    return frame.merge(keys, on=["plant_id", date_column], how="inner")


POSTINGS_SORT = ["business_date", "location_id", "item_id", "kind"]


DAILY_SORT = {"consumption": ["location_id", "item_id", "component_item_id"],
              "adjustments": ["location_id", "item_id", "kind"]}


@dataclass
class _BatchOutput:
    """One batch of a plant's dates, ready to stage: per partition and daily dataset either a file
    staged by a worker, or the frame to stage, or neither (the partition is empty: delete it)."""

    files: list[tuple[str, dict[str, object], str | None, int, pd.DataFrame | None]]
    postings: pd.DataFrame  # the batch's postings, or none when a worker staged them (`postings_part`)
    steps: list[dict[str, object]]
    kinds: dict[str, tuple[int, float, float]]
    postings_part: tuple[str, int] | None = None  # (staged file, rows) of the batch's postings


def batch_outputs(shared: Mapping[str, Any], task: tuple[int, str, list[pd.Timestamp]]) -> _BatchOutput:
    """Consumption, adjustments and postings of one plant's batch of dates, per partition; a worker
    given a staging slot (`shared["slot"]`) writes the partition files itself."""
    number, plant, dates = task
    scope, demand = shared["scope"], shared["demand"]
    part_scope = scope[(scope["plant_id"] == plant) & scope["business_date"].isin(dates)]
    part_demand = demand[(demand["plant_id"] == plant) & demand["business_date"].isin(dates)]
    consumed, adjustments, postings = _daily_frames(shared, plant, dates, part_scope, part_demand)
    day = ["plant_id", "business_date"]
    slot = shared.get("slot")
    by_day = {name: dict(iter(frame.groupby(day, sort=False))) for name, frame in
              (("consumption", consumed), ("adjustments", adjustments))}
    completions = part_demand.groupby(day)["completions"].sum().to_dict()
    posted = postings.groupby(day).size().to_dict()
    files: list[tuple[str, dict[str, object], str | None, int, pd.DataFrame | None]] = []
    steps: list[dict[str, object]] = []
    for date in part_scope["business_date"]:
        partition: dict[str, object] = {"plant_id": plant, "business_date": date}
        for name in ("consumption", "adjustments"):
            if name == "adjustments" and (plant, date) in shared["frozen"]:
                continue  # a closed date's adjustments stay as posted
            rows = by_day[name].get((plant, date))
            if rows is None or rows.empty:
                files.append((name, partition, None, 0, None))
            elif slot is not None:
                staged, count = slot.stage_frame(name, rows.drop(columns=day), f"{number:05d}-{len(files):05d}",
                                                 sort_by=DAILY_SORT[name])
                files.append((name, partition, staged, count, None))
            else:
                files.append((name, partition, None, len(rows), rows.drop(columns=day)))
        adjustment_rows = by_day["adjustments"].get((plant, date))
        steps.append({"plant": plant, "business_date": f"{date:%Y-%m-%d}",
                      "completions": int(completions.get((plant, date), 0)),
                      "adjustments": 0 if adjustment_rows is None else len(adjustment_rows),
                      "postings": int(posted.get((plant, date), 0)),
                      "quarantined": int(shared["rejected"].get((plant, date), 0))})
    if shared["frozen"]:
        frozen = pd.DataFrame(list(shared["frozen"]), columns=day).astype({"business_date": "datetime64[ns]"})
        kept = adjustments[day].astype({"business_date": "datetime64[ns]"}).merge(frozen, how="left", indicator=True)
        adjustments = adjustments[kept["_merge"].eq("left_only").to_numpy()]
    kinds = {str(kind): (len(g), float(g["qty"].sum()), float(g["value"].sum()))
             for kind, g in adjustments.groupby("kind", sort=True)}
    if slot is not None:  # a worker: what the batch took goes back to the system, not to the next batch
        part = None
        if not postings.empty:
            part = slot.stage_frame("postings", postings.drop(columns="plant_id"), f"{number:05d}-postings",
                                    sort_by=POSTINGS_SORT)
        del consumed, adjustments, by_day
        workers_.give_back_memory()
        return _BatchOutput(files=files, postings=postings.iloc[0:0], steps=steps, kinds=kinds, postings_part=part)
    return _BatchOutput(files=files, postings=postings, steps=steps, kinds=kinds)


def frozen_adjustments(warehouse: Warehouse, closed: pd.DataFrame) -> set[tuple[str, pd.Timestamp]]:
    """The closed (plant, date) pairs whose adjustments were written before: they stay as they are.
    A closed date never written (a first backfill into a closed period) gets its adjustments."""
    pairs = zip(closed["plant_id"], closed["business_date"], strict=True)
    return {(plant, date) for plant, date in pairs if warehouse.exists(
        warehouse.partition_path("adjustments", {"plant_id": plant, "business_date": date}))}


def _put_or_delete(txn: Transaction, table: str, date: object, rows: pd.DataFrame, name: str,
                   sort_by: list[str]) -> None:
    partition = {"table": table, "business_date": date}
    if rows.empty:
        txn.delete("quarantine", partition, file_name=name)
    else:
        txn.put("quarantine", partition, rows, file_name=name, sort_by=sort_by)


def largest_components(demand: pd.DataFrame, requirements: pd.DataFrame, items: pd.DataFrame,
                    n: int = 5) -> list[dict[str, object]]:
    """The components consumed most by value: per explosion key, units made times units used per unit."""
    if demand.empty:
        return []
    made = demand.groupby("key", sort=False)[["qty", "orders"]].sum()
    used = requirements[consumption.consumed_rows(requirements)]
    per_key = made.reindex(used["key"]).fillna(0.0)  # fixed quantities once per order carried
    used = used.assign(qty=used["qty_per_unit"].to_numpy() * per_key["qty"].to_numpy()
                       + used["qty_per_order"].to_numpy() * per_key["orders"].to_numpy())
    top = used.groupby("component_item_id", as_index=False)["qty"].sum()
    top = top[top["qty"] > 0]
    master = items.set_index("item_id")
    top["uom"] = top["component_item_id"].map(master["uom"])
    top["value"] = top["qty"] * top["component_item_id"].map(master["standard_cost"])
    top = top.sort_values(["value", "component_item_id"], ascending=[False, True]).head(n)
    return top[["component_item_id", "uom", "qty", "value"]].to_dict("records")


@dataclass
class DailyTotals:
    """What the daily outputs add up to, for the run summary."""

    adjustments_by_kind: dict[str, dict[str, float]]
    top_components: list[dict[str, object]]


def write_daily(run: RunContext, run_inputs: RunInputs, demand: pd.DataFrame, rejected: pd.DataFrame) -> DailyTotals:
    """Stage consumption, adjustments and postings of every date in scope, a plant at a time: a
    plant's flows are staged (written to disk) before the next plant's exist, so memory follows one
    plant's keys. `rejected` is the window's quarantine (its completions are counted per date)."""
    inputs, totals = run_inputs.inputs, run_inputs.completions
    scope, txn = run.scope, run.txn
    dated = periods.posting_dates(scope, periods.closed_intervals(run.plants, run.config.closed_through, inputs.periods))
    closed = dated[dated["closed"]].reset_index(drop=True)
    run.progress.stage("write", partitions=len(scope))
    run.progress.start_steps(len(scope), "partition")
    batches = [(plant, dates) for plant in run.plants
               for dates in date_batches(scope[scope["plant_id"] == plant], demand[demand["plant_id"] == plant])]
    day = ["plant_id", "business_date"]
    shared: dict[str, Any] = {
        "demand": demand, "requirements": totals.requirements, "items": inputs.items, "item_costs": inputs.item_costs,
        "scope": scope, "posting_dates": closed, "frozen": frozen_adjustments(run.warehouse, closed),
        "warehouse": run.config.warehouse, "run_id": run.run_id, "started": run.started,
        "rejected": rejected[rejected["table"] == "completions"].groupby(day).size().to_dict(),
    }
    # a big run on a local warehouse stages its daily files on worker processes, which write them
    # themselves (sending the frames back would cost more than it saves); otherwise in this process
    workers = run.config.workers if len(demand) > 2 * DEMAND_ROWS_PER_BATCH and run.warehouse.is_local else 1
    if workers > 1 and workers_.can_fork():
        shared["slot"] = txn.staging_for(f"daily-{run.run_id}")
    tasks = [(number, plant, dates) for number, (plant, dates) in enumerate(batches)]
    kinds: dict[str, list[float]] = {}
    postings = _PlantPostings(txn, run.run_id)
    with contextlib.closing(workers_.forked_map(batch_outputs, tasks, workers=workers, shared=shared)) as outputs:
        for (number, plant, _), out in zip(tasks, outputs, strict=True):
            _stage_batch(txn, out, run.progress, kinds)
            postings.add(out)
            del out
            if number + 1 == len(tasks) or tasks[number + 1][1] != plant:  # the plant's last batch
                postings.stage(plant)
    by_kind = {kind: {"rows": int(rows), "qty": qty, "value": value} for kind, (rows, qty, value) in sorted(kinds.items())}
    return DailyTotals(adjustments_by_kind=by_kind,
                       top_components=largest_components(demand, totals.requirements, inputs.items))


def _stage_batch(txn: Transaction, out: _BatchOutput, progress: Progress, kinds: dict[str, list[float]]) -> None:
    """One batch's daily files into the transaction, its progress steps and adjustment sums."""
    for name, partition, staged, rows, frame in out.files:
        if staged is not None:
            txn.put_staged(name, partition, staged, rows)
        elif frame is not None:
            txn.put(name, partition, frame, sort_by=DAILY_SORT[name])
        else:
            txn.delete(name, partition)
    for step in out.steps:
        progress.step(**step)
    for kind, (rows, qty, value) in out.kinds.items():
        sums = kinds.setdefault(kind, [0, 0.0, 0.0])
        sums[0] += rows
        sums[1] += qty
        sums[2] += value


class _PlantPostings:
    """A plant's postings, gathered batch by batch and appended when its last batch is done.

    A run appends its postings of a plant as one file, or, when workers staged them, one file per
    batch of dates (each sorted, in date order): rewriting them as one would cost a copy of the
    plant's postings.
    """

    def __init__(self, txn: Transaction, run_id: str) -> None:
        self.txn, self.run_id = txn, run_id
        self.frames: list[pd.DataFrame] = []
        self.parts: list[tuple[str, int]] = []

    def add(self, out: _BatchOutput) -> None:
        if out.postings_part is not None:
            self.parts.append(out.postings_part)
        self.frames.append(out.postings)

    def stage(self, plant: str) -> None:
        for part, (path, rows) in enumerate(self.parts):
            name = f"part-{self.run_id}.parquet" if len(self.parts) == 1 else f"part-{self.run_id}-{part:05d}.parquet"
            self.txn.put_staged("postings", {"plant_id": plant}, path, rows, file_name=name)
        plant_rows = pd.concat(self.frames, ignore_index=True)
        if not plant_rows.empty:
            self.txn.put("postings", {"plant_id": plant}, plant_rows.drop(columns="plant_id"),
                         file_name=f"part-{self.run_id}.parquet", sort_by=POSTINGS_SORT)
        self.frames, self.parts = [], []
