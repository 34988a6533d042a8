"""One run, end to end: read, validate, explode, adjust, post, reconcile, and publish atomically.

This is the composition root that the command line and the Airflow DAGs both call; it owns no
business rule of its own, only the order of the stages and what each run writes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

import pandas as pd

from pipeline.config import Config
from pipeline.contract.inputs import Inputs
from pipeline.domain import error_queue
from pipeline.domain.late_data import changed_dates, input_fingerprints
from pipeline.progress import SILENT, Progress
from pipeline.stages import counts, daily, quarantine_files, rerun, result
from pipeline.stages.context import RunContext
from pipeline.stages.read import KnownPlants, RunInputs, known_plants, read_inputs, summarised
from pipeline.stages.result import RunResult, new_run_id
from pipeline.store.warehouse import Warehouse

log = logging.getLogger("backflush")


def plants_in_scope(inputs: Inputs | RunInputs | KnownPlants, requested: Sequence[str] | None, config: Config) -> list[str]:
    """The plants a run processes: those asked for, else the configured ones, else every plant seen."""
    if requested:
        return sorted(set(requested))
    if config.plants:
        return sorted(set(config.plants))
    return sorted(inputs.plants["plant_id"].unique())


def run_dates(
    config: Config,
    dates: Sequence[dt.date],
    *,
    plants: Sequence[str] | None = None,
    dry_run: bool = False,
    command: str = "run",
    inputs: Inputs | RunInputs | None = None,
    late_data: bool = True,
    progress: Progress | None = None,
) -> RunResult:
    """Process business dates for plants and publish every output, all or nothing.

    With `late_data`, earlier dates within the look-back whose completions or movements changed
    since the last successful run are reprocessed too (semantics 6).
    """
    started = pd.Timestamp.now(tz="UTC").floor("us")
    run_id = new_run_id(started)
    progress = progress or SILENT
    check = None
    if inputs is None:  # an unchanged re-run stops here (`pipeline.stages.rerun`)
        check = rerun.check(config, dates, plants, command, late_data)
        skipped = rerun.skip(config, check, run_id, started, command, dry_run, progress) if check else None
        if skipped is not None:
            return skipped
        progress.stage("read", source="sql" if config.sql is not None else config.landing)
        inputs = read_inputs(config, dates, plants=plants or config.plants or None)
    run_inputs = summarised(inputs)
    if check is not None:
        run_inputs.inputs_digest = check.digest_of(run_inputs.manifest)
    scope_plants = plants_in_scope(run_inputs, plants, config)
    warehouse = Warehouse(config.warehouse)
    requested = sorted(set(dates))
    with warehouse.locked(scope_plants, run_id, timeout=config.lock_timeout_seconds,
                          stale_after=config.lock_stale_after_seconds):
        warehouse.recover(scope_plants)
        history = warehouse.read("runs")
        fingerprints = input_fingerprints(run_inputs.inputs, scope_plants,
                                          [run_inputs.completions.fingerprints])
        late = (
            changed_dates(fingerprints, history, requested, config.lookback_days)
            if late_data else pd.DataFrame({"plant_id": [], "business_date": []})
        )
        queue = quarantine_files.plan_error_queue(config, run_inputs, warehouse, history, scope_plants, requested)
        if late_data:
            late = pd.concat([late, queue.dates(config.reprocess_master_data)], ignore_index=True)
        scope = _scope(scope_plants, requested, late)
        txn = warehouse.begin(run_id, scope_plants)
        try:
            run = RunContext(config=config, warehouse=warehouse, txn=txn, run_id=run_id, started=started,
                             command=command, progress=progress, plants=scope_plants, requested=requested, scope=scope)
            outcome = _process(run, run_inputs, fingerprints, history, queue)
            if run_inputs.manifest is not None:  # published with the outputs, or not at all
                run_inputs.manifest.stage(txn, run_id)
            progress.stage("commit" if not dry_run else "dry-run: nothing written", files=len(txn.moves))
            outcome.dry_run = dry_run
            if dry_run:
                txn.abort()
            else:
                txn.commit()
        except BaseException:
            txn.abort()
            raise
    return outcome


def _scope(plants: list[str], requested: list[dt.date], late: pd.DataFrame) -> pd.DataFrame:
    """(plant_id, business_date) pairs to recompute: every requested date, plus late ones."""
    grid = pd.MultiIndex.from_product(
        [plants, pd.to_datetime(pd.Series(requested)).astype("datetime64[ns]")], names=["plant_id", "business_date"]
    ).to_frame(index=False)
    late = late[late["plant_id"].isin(plants)] if not late.empty else late
    both = pd.concat([grid, late[["plant_id", "business_date"]]], ignore_index=True) if not late.empty else grid
    both["business_date"] = pd.to_datetime(both["business_date"]).astype("datetime64[ns]")
    both["plant_id"] = both["plant_id"].astype("str")
    return both.drop_duplicates().sort_values(["plant_id", "business_date"]).reset_index(drop=True)


def _process(run: RunContext, run_inputs: RunInputs, fingerprints: pd.DataFrame, history: pd.DataFrame,
             queue: error_queue.Plan) -> RunResult:
    """The stages of one run, in order, all staged in its transaction."""
    inputs, totals = run_inputs.inputs, run_inputs.completions
    demand = daily.in_scope(totals.demand, run.scope)
    explode_rejects = daily.in_scope(totals.explode_rejects, run.scope) if not totals.explode_rejects.empty \
        else totals.explode_rejects
    run.progress.stage("explode", completions=int(demand["completions"].sum()), plants=len(run.plants),
                       dates=run.scope["business_date"].nunique())
    rejected = quarantine_files.quarantine_in_scope(inputs.quarantine, explode_rejects, run.scope, run.plants,
                                                    run.run_date, run.run_id)
    day_totals = daily.write_daily(run, run_inputs, demand, rejected)
    del demand
    count_totals = counts.write_counts(run, inputs, totals.windows)
    carried = quarantine_files.file_quarantine(run, rejected)
    outcome = result.summarise_run(run, run_inputs, rejected, explode_rejects, day_totals, count_totals, carried, queue)
    result.stage_runs_row(run, outcome, fingerprints, history, totals.watermark, queue)
    return outcome


def date_range(start: dt.date, end: dt.date) -> list[dt.date]:
    """Every date from start to end, inclusive."""
    if end < start:
        raise ValueError(f"--end {end} is before --start {start}")
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def backfill(
    config: Config,
    start: dt.date,
    end: dt.date,
    *,
    plants: Sequence[str] | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Process every date of [start, end] in order; the landing data is read once for the range.

    Dates are committed in batches of `config.date_batch_days` (one run each), oldest first.
    """
    dates = date_range(start, end)
    progress = progress or SILENT
    progress.stage("read", source="sql" if config.sql is not None else config.landing)
    inputs = read_inputs(config, dates, plants=plants or config.plants or None)
    results: list[RunResult] = []
    step = max(1, config.date_batch_days)
    for i in range(0, len(dates), step):
        results.append(run_dates(config, dates[i:i + step], plants=plants, dry_run=dry_run,
                                 command="backfill", inputs=inputs, late_data=False, progress=progress))
    return results


__all__ = ["RunResult", "backfill", "date_range", "known_plants", "run_dates", "read_inputs"]
