"""One run, end to end: read, validate, explode, adjust, post, reconcile, and publish atomically.

This is the composition root that the command line and the Airflow DAGs both call; it owns no
business rule of its own, only the order of the stages and what each run writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

import pipeline.error_queue as error_queue
from pipeline import __version__, buckets, consumption, landing, ledger, periods, sources, variance
from pipeline import workers as workers_
from pipeline.config import Config
from pipeline.progress import SILENT, Progress
from pipeline.sources import Inputs
from pipeline.warehouse import Transaction, Warehouse, encode_segment

log = logging.getLogger("backflush")
INPUT_TABLES = ("plants", "items", "uom_conversions", "bom", "completions", "stock_counts", "movements",
                "item_costs")
GLOBAL_FILE = "part-global.parquet"  # quarantine rows without a plant (master data)


@dataclass
class RunResult:
    """What one run did: the dates and plants it processed and what it read and wrote."""

    run_id: str
    command: str
    status: str
    requested_dates: list[dt.date]
    business_dates: list[dt.date]
    plants: list[str]
    rows_read: dict[str, int] = field(default_factory=dict)
    rows_accepted: dict[str, int] = field(default_factory=dict)
    rows_quarantined: dict[str, int] = field(default_factory=dict)
    rows_superseded: dict[str, int] = field(default_factory=dict)
    rows_written: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    quarantine_by_code: dict[str, int] = field(default_factory=dict)
    adjustments_by_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    top_components: list[dict[str, object]] = field(default_factory=list)
    variance_summary: dict[str, object] = field(default_factory=dict)
    bom_accuracy_flags: dict[str, int] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)  # quarantined rows released: "table:source_key"
    master_changed_dates: list[str] = field(default_factory=list)  # posted "plant|date" whose explosion changed
    dry_run: bool = False
    started_at: pd.Timestamp | None = None
    finished_at: pd.Timestamp | None = None


def new_run_id(now: pd.Timestamp) -> str:
    """Sortable and unique: UTC start time plus a random suffix."""
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


@dataclass
class RunInputs:
    """A run's validated inputs: master data, counts and movements row by row, and completions as
    the totals a run needs of them (`buckets.CompletionTotals`), so that memory follows keys."""

    inputs: Inputs
    completions: buckets.CompletionTotals
    manifest: landing.Manifest | None = None  # of the landing files, published with the run's outputs
    files_read: dict[str, int] = field(default_factory=dict)  # completion and movement files read
    files_skipped: dict[str, int] = field(default_factory=dict)  # ... and pruned

    @property
    def plants(self) -> pd.DataFrame:
        return self.inputs.plants


def read_inputs(config: Config, dates: Sequence[dt.date] | None = None,
                plants: Sequence[str] | None = None) -> RunInputs:
    """Read and validate every input table from the configured source; completions a bucket at a time.

    A landing folder given the dates to process is pruned (`pipeline.landing`): of completions and
    movements only the files that can change what those dates write are read. `plants`: only rows
    of these plants are read of completions, movements and counts (filtered in the scan).
    A SQL source given the dates to process pulls only what they need: completions and movements
    from the look-back window (and, for completions, every version recorded after the last run's
    watermark; for every id it pulls, all of that id's rows), widened to the oldest previous count
    of the counts dated on those dates or their look-back (a late date's counts are recomputed
    too); master data whole; with `plants`, completions, movements and counts of those plants
    (and rows without a plant) only. Landing files are read whole.
    """
    if config.sql is None:
        return _read_landing(config, dates, sorted(set(plants)) if plants else None)
    # completions stream from the database into staged batches, spilled and digested like files
    with tempfile.TemporaryDirectory(prefix="backflush-sql-", dir=config.spill_dir) as stage:
        return _read_sql(config, dates, plants, Path(stage))


def _read_sql(config: Config, dates: Sequence[dt.date] | None, plants: Sequence[str] | None,
              stage: Path) -> RunInputs:
    assert config.sql is not None
    if not dates:
        raw = sources.read_sql_tables(config.sql, plants=plants, stage_dir=stage)
        with _spiller(config, buckets.raw_files(raw["completions"])) as spiller:
            return _summarised(config, sources.InputLoader(raw, timezone_overrides=config.plant_timezones), spiller,
                               dates)
    # a plant's business date D lies within [D - 1 day, D + 2 days) in UTC, whatever its zone
    since = pd.Timestamp(min(dates) - dt.timedelta(days=config.lookback_days + 1), tz="UTC")
    until = pd.Timestamp(max(dates) + dt.timedelta(days=2), tz="UTC")
    watermark = _last_watermark(Warehouse(config.warehouse))
    for attempt in itertools.count():
        folder = stage / f"read-{attempt}"
        raw = sources.read_sql_tables(config.sql, since=since, until=until, recorded_after=watermark,
                                      plants=plants, stage_dir=folder)
        loader = sources.InputLoader(raw, timezone_overrides=config.plant_timezones)
        counts = loader.stock_counts
        # the counts the run may recompute: those dated on its dates, and on the look-back dates it
        # may reprocess as late (not known before reading) or whose windows reach one of them
        first = pd.Timestamp(min(dates) - dt.timedelta(days=config.lookback_days))
        reconciled = counts[counts["business_date"] >= first]
        opened = variance.with_previous_count(counts).merge(reconciled[["count_id"]], on="count_id")
        oldest = opened["previous_counted_at"].min()
        if pd.isna(oldest) or oldest >= since:
            with _spiller(config, buckets.raw_files(raw["completions"])) as spiller:
                return _summarised(config, loader, spiller, dates)
        since = oldest.floor("D")
        del raw, loader
        shutil.rmtree(folder, ignore_errors=True)  # read again from the earlier start
    raise AssertionError("unreachable")


def _read_landing(config: Config, dates: Sequence[dt.date] | None, plants: list[str] | None) -> RunInputs:
    """The landing folder's inputs: pruned when dates are given and every plant of the run has run
    before (a plant's first run records the fingerprint of every date it sees: it reads all)."""
    warehouse = Warehouse(config.warehouse)
    listed = sources.landing_files(config.landing)
    manifest = landing.survey(listed, warehouse)
    files = landing.with_plants(listed, manifest, plants)
    if dates and config.prune_landing and not config.reprocess_master_data:
        ran = _plants_that_ran(warehouse)
        if ran and (not (plants or config.plants) or set(plants or config.plants) <= ran):
            tables = sources.lazy_landing_files(files, skip=["completions"], plants=plants)
            loader = sources.InputLoader(tables, timezone_overrides=config.plant_timezones, movements_later=True)
            scope_plants = plants or list(config.plants) or None
            known = set(loader.zones["plant_id"]) | manifest.plants()
            if (scope_plants is not None or known <= ran) and not _has_fixed_lines(loader):
                lo, hi = landing.flow_span(config, dates, loader.stock_counts, scope_plants)
                lo, hi = _releasable_span(warehouse, loader, scope_plants, lo, hi)
                choice = landing.choose(manifest, files, lo, hi, plants)
                log.info("landing pruned to flows in %s .. %s: files read %s, skipped %s; pieces read %s, "
                         "skipped %s", lo, hi, choice.read, choice.skipped, choice.pieces_read, choice.pieces_skipped)
                loader.add_known(choice.unread_plants)
                loader.add_movements(sources.lazy_landing_files(
                    {"movements": choice.files["movements"]}, plants=plants, row_groups=choice.row_groups)["movements"])
                with _spiller(config, buckets.with_plant_ids(buckets.raw_files(choice.files["completions"], plants,
                                                                               choice.row_groups))) as spiller:
                    read = _summarised(config, loader, spiller, dates)
                read.manifest, read.files_read, read.files_skipped = manifest, choice.read, choice.skipped
                return read
    # completions are split into buckets on worker processes while the master data is read here
    with _spiller(config, buckets.with_plant_ids(buckets.raw_files(files["completions"], plants))) as spiller:
        if spiller.large:  # the split's workers and a large master read would add their peaks
            spiller.spilled()
        tables = sources.lazy_landing_files(files, skip=["completions"], plants=plants)
        read = _summarised(config, sources.InputLoader(tables, timezone_overrides=config.plant_timezones), spiller,
                           dates)
    read.manifest = manifest
    read.files_read = {t: len(files[t]) for t in landing.FLOWS}
    return read


def _has_fixed_lines(loader: sources.InputLoader) -> bool:
    """Whether the BOM has a fixed-quantity line: an order's earlier completions, at any date, decide
    which completion carries it (issue 16.3), so a read pruned to a flow span is not enough."""
    bom = loader.bom
    return "fixed_qty" in bom.columns and bool(bom["fixed_qty"].fillna(False).astype(bool).any())


def _releasable_span(warehouse: Warehouse, loader: sources.InputLoader, plants: Sequence[str] | None,
                     lo: pd.Timestamp, hi: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[lo, hi] widened to the dates of open quarantined completions that explode with today's master
    data: the error queue (issue 16.1) reprocesses them, and a date recomputed without its
    completions would lose its postings. Stuck rows that still fail widen nothing."""
    import pyarrow.dataset as ds

    held = (ds.field("table") == "completions") & ds.field("error_code").isin(list(error_queue.RESOLVABLE))
    if plants:
        held &= ds.field("plant_id").isin(list(plants))
    rows = warehouse.read("quarantine", filters=held, columns=["plant_id", "table", "business_date", "source_key",
                                                               "error_code", "message", "row", "released_by_run"])
    dates = error_queue.releasable_dates(error_queue.open_rows(rows), loader)  # type: ignore[arg-type]
    if dates.empty:
        return lo, hi
    first, last = dates["business_date"].min(), dates["business_date"].max()
    return min(lo, pd.Timestamp(first, tz="UTC") - pd.Timedelta(days=1)), max(hi, pd.Timestamp(last, tz="UTC")
                                                                            + pd.Timedelta(days=2))


@dataclass
class KnownPlants:
    """The plants a landing names, with their time zones (`known_plants`)."""

    plants: pd.DataFrame


def known_plants(config: Config) -> KnownPlants | RunInputs:
    """The plants of the inputs and their time zones, as a full read finds them, without one: the
    plants table and the BOM, and the plants of every landing file of completions, movements and
    counts from the warehouse's manifest (a file it does not know yet has its plant, id and time
    columns read). A SQL source is read as before."""
    if config.sql is not None:
        return read_inputs(config)
    files = sources.landing_files(config.landing)
    manifest = landing.survey(files, Warehouse(config.warehouse))
    master = sources.lazy_landing_files({t: files[t] for t in ("plants", "bom")})
    loader = sources.InputLoader(master, timezone_overrides=config.plant_timezones, movements_later=True)
    loader.add_known(manifest.plants())
    return KnownPlants(plants=loader.zones)


def _plants_that_ran(warehouse: Warehouse) -> set[str]:
    runs = warehouse.read("runs", columns=["status", "plants"])
    return {str(p) for plants in runs.loc[runs["status"] == "ok", "plants"] for p in plants}


def _spiller(config: Config, files: list[buckets.RawFile]) -> buckets.Spiller:
    return buckets.Spiller(files, bucket_rows=config.bucket_rows, workers=config.workers, spill_dir=config.spill_dir)


def _summarised(config: Config, loader: sources.InputLoader, spiller: buckets.Spiller,
                dates: Sequence[dt.date] | None = None) -> RunInputs:
    """Completions accepted and summed a bucket at a time, then the inputs finished with them.

    The flows of the windows of counts a run on `dates` can recompute (dated from the look-back's
    first day on) are also kept one by one, for `stock_exceptions`; every window's without dates."""
    since = pd.Timestamp(min(dates) - dt.timedelta(days=config.lookback_days)) if dates else None
    windows = variance.count_windows(loader.stock_counts, loader.items, events_from=since)
    # movements, like completions, are kept only as the sums a run needs: their flows into count
    # windows and their fingerprints; their rows are let go of before completions are digested
    movement_parts = _movement_sums(loader.let_go_of_movements(), windows)
    workers_.give_back_memory()  # what reading the tables took, before workers are forked
    catalog = consumption.ExplosionCatalog(loader.bom, loader.items, loader.uom_conversions, loader.broken_bom)
    totals = spiller.summarise(loader.acceptor(), catalog, windows)
    workers_.give_back_memory()  # what merging the buckets took
    totals.fingerprints = pd.concat([totals.fingerprints, movement_parts], ignore_index=True)
    return RunInputs(inputs=loader.finish(None, totals.summary), completions=totals)


MOVEMENT_CHUNK_ROWS = 1_000_000  # movements hashed and placed in count windows at a time


def _movement_sums(movements: pd.DataFrame, windows: variance.CountWindows) -> pd.DataFrame:
    """Movements added to the count windows; their fingerprint parts returned (all a run keeps of them),
    a chunk of rows at a time (both are sums), so hashing them takes memory for one chunk."""
    parts = []
    for start in range(0, max(len(movements), 1), MOVEMENT_CHUNK_ROWS):
        chunk = movements.iloc[start:start + MOVEMENT_CHUNK_ROWS]
        windows.add_movements(chunk)
        parts.append(variance.fingerprint_parts("movements", chunk))
    return pd.concat(parts, ignore_index=True)


def summarised(inputs: Inputs | RunInputs) -> RunInputs:
    """Inputs loaded whole (`sources.load_inputs`, tests and tools) as a run takes them."""
    if isinstance(inputs, RunInputs):
        return inputs
    catalog = consumption.ExplosionCatalog(inputs.bom, inputs.items, inputs.uom_conversions, inputs.broken_bom)
    windows = variance.count_windows(inputs.stock_counts, inputs.items)
    totals = buckets.summarise_accepted(inputs.completions, catalog, windows)
    totals.fingerprints = pd.concat([totals.fingerprints, _movement_sums(inputs.movements, windows)],
                                    ignore_index=True)
    return RunInputs(inputs=dataclasses.replace(inputs, completions=sources.empty_like(inputs.completions),
                                                movements=sources.empty_like(inputs.movements)), completions=totals)


def _last_watermark(warehouse: Warehouse) -> pd.Timestamp | None:
    runs = warehouse.read("runs", columns=["status", "watermark_recorded_at"])
    done = runs[runs["status"] == "ok"]["watermark_recorded_at"].dropna()
    return None if done.empty else done.max()


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
    if inputs is None:
        progress.stage("read", source="sql" if config.sql is not None else config.landing)
        inputs = read_inputs(config, dates, plants=plants or config.plants or None)
    run_inputs = summarised(inputs)
    scope_plants = plants_in_scope(run_inputs, plants, config)
    warehouse = Warehouse(config.warehouse)
    requested = sorted(set(dates))
    with warehouse.locked(scope_plants, run_id, timeout=config.lock_timeout_seconds,
                          stale_after=config.lock_stale_after_seconds):
        warehouse.recover(scope_plants)
        history = warehouse.read("runs")
        fingerprints = variance.input_fingerprints(run_inputs.inputs, scope_plants,
                                                   [run_inputs.completions.fingerprints])
        late = (
            variance.changed_dates(fingerprints, history, requested, config.lookback_days)
            if late_data else pd.DataFrame({"plant_id": [], "business_date": []})
        )
        queue = _error_queue(config, run_inputs, warehouse, history, scope_plants, requested)
        if late_data:
            late = pd.concat([late, queue.dates(config.reprocess_master_data)], ignore_index=True)
        scope = _scope(scope_plants, requested, late)
        txn = warehouse.begin(run_id, scope_plants)
        try:
            result = _process(config, run_inputs, warehouse, txn, scope, requested, scope_plants,
                              fingerprints, history, run_id, started, command, progress, queue)
            if run_inputs.manifest is not None:  # published with the outputs, or not at all
                run_inputs.manifest.stage(txn, run_id)
            progress.stage("commit" if not dry_run else "dry-run: nothing written", files=len(txn.moves))
            result.dry_run = dry_run
            if dry_run:
                txn.abort()
            else:
                txn.commit()
        except BaseException:
            txn.abort()
            raise
    return result


def _error_queue(config: Config, run_inputs: RunInputs, warehouse: Warehouse, history: pd.DataFrame,
                 plants: list[str], requested: list[dt.date]) -> error_queue.Plan:
    """The error queue's part of a run (`pipeline.error_queue`): the dates of quarantined
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


def _date_batches(scope: pd.DataFrame, demand: pd.DataFrame) -> list[list[pd.Timestamp]]:
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


def _in_scope(frame: pd.DataFrame, scope: pd.DataFrame, date_column: str = "business_date") -> pd.DataFrame:
    keys = scope.rename(columns={"business_date": date_column})
    return frame.merge(keys, on=["plant_id", date_column], how="inner")


def _process(
    config: Config,
    run_inputs: RunInputs,
    warehouse: Warehouse,
    txn: Transaction,
    scope: pd.DataFrame,
    requested: list[dt.date],
    plants: list[str],
    fingerprints: pd.DataFrame,
    history: pd.DataFrame,
    run_id: str,
    started: pd.Timestamp,
    command: str,
    progress: Progress,
    queue: error_queue.Plan,
) -> RunResult:
    inputs, totals = run_inputs.inputs, run_inputs.completions
    demand = _in_scope(totals.demand, scope)
    explode_quarantine = _in_scope(totals.explode_rejects, scope) if not totals.explode_rejects.empty \
        else totals.explode_rejects
    progress.stage("explode", completions=int(demand["completions"].sum()), plants=len(plants),
                   dates=scope["business_date"].nunique())
    run_date = max(requested) if requested else dt.date.today()
    quarantine = _quarantine_in_scope(inputs.quarantine, explode_quarantine, scope, plants, run_date, run_id)

    dated = periods.posting_dates(scope, periods.closed_intervals(plants, config.closed_through, inputs.periods))
    closed = dated[dated["closed"]].reset_index(drop=True)
    # one plant at a time: its component flows, consumption, adjustments and postings are staged
    # (written to disk) before the next plant's exist, so memory follows one plant's keys
    progress.stage("write", partitions=len(scope))
    progress.start_steps(len(scope), "partition")
    adjustment_totals: dict[str, list[float]] = {}
    batches = [(plant, dates) for plant in plants
               for dates in _date_batches(scope[scope["plant_id"] == plant], demand[demand["plant_id"] == plant])]
    day = ["plant_id", "business_date"]
    shared: dict[str, Any] = {
        "demand": demand, "requirements": totals.requirements, "items": inputs.items, "item_costs": inputs.item_costs,
        "scope": scope, "posting_dates": closed, "frozen": _frozen_adjustments(warehouse, closed),
        "warehouse": config.warehouse, "run_id": run_id, "started": started,
        "rejected": quarantine[quarantine["table"] == "completions"].groupby(day).size().to_dict(),
    }
    # a big run on a local warehouse stages its daily files on worker processes, which write them
    # themselves (sending the frames back would cost more than it saves); otherwise in this process
    workers = config.workers if len(demand) > 2 * DEMAND_ROWS_PER_BATCH and warehouse.is_local else 1
    if workers > 1 and workers_.can_fork():
        shared["slot"] = txn.staging_for(f"daily-{run_id}")
    tasks = [(number, plant, dates) for number, (plant, dates) in enumerate(batches)]
    plant_postings: list[pd.DataFrame] = []
    postings_parts: list[tuple[str, int]] = []
    with contextlib.closing(workers_.forked_map(_batch_outputs, tasks, workers=workers, shared=shared)) as outputs:
        for (number, plant, _), out in zip(tasks, outputs, strict=True):
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
                sums = adjustment_totals.setdefault(kind, [0, 0.0, 0.0])
                sums[0] += rows
                sums[1] += qty
                sums[2] += value
            if out.postings_part is not None:
                postings_parts.append(out.postings_part)
            plant_postings.append(out.postings)
            del out
            if number + 1 == len(tasks) or tasks[number + 1][1] != plant:  # the plant's last batch
                # a run appends its postings of a plant as one file, or, when workers staged them, one
                # file per batch of dates (each sorted, in date order): rewriting them as one would
                # cost a copy of the plant's postings
                for part, (path, rows) in enumerate(postings_parts):
                    name = f"part-{run_id}.parquet" if len(postings_parts) == 1 else f"part-{run_id}-{part:05d}.parquet"
                    txn.put_staged("postings", {"plant_id": plant}, path, rows, file_name=name)
                plant_rows = pd.concat(plant_postings, ignore_index=True)
                if not plant_rows.empty:
                    txn.put("postings", {"plant_id": plant}, plant_rows.drop(columns="plant_id"),
                            file_name=f"part-{run_id}.parquet", sort_by=POSTINGS_SORT)
                plant_postings, postings_parts = [], []
    adjustments_by_kind = {kind: {"rows": int(rows), "qty": qty, "value": value}
                           for kind, (rows, qty, value) in sorted(adjustment_totals.items())}
    top_components = _top_components(demand, totals.requirements, inputs.items)
    del demand

    # variance and BOM accuracy a plant at a time: a plant's counts are reconciled and written
    # before the next plant's exist (memory follows one plant's counts)
    progress.stage("variance", plants=len(plants))
    variance_parts, accuracy_parts = [], []
    exception_rows = 0
    parent_flows = totals.windows.parent_flows()  # per (count window, parent): units made (issue 16.6)
    for plant in plants:
        counts = variance.variance_scope(inputs, scope[scope["plant_id"] == plant], config)
        variance_rows = variance.count_variance(inputs, counts, config, totals.windows)
        exceptions = variance.stock_exceptions(inputs, counts, totals.windows, config)
        checked = _variance_after(warehouse, variance_rows, counts.scope, [plant])
        accuracy = _bom_accuracy(checked, inputs, [plant], config, started)
        suggestions = variance.bom_suggestions(checked, parent_flows, config, as_of=started)
        txn.replace("bom_suggestions", suggestions, [{"plant_id": plant}],
                    sort_by=["component_item_id", "parent_item_id"])
        del checked, suggestions
        count_scope = counts.scope
        txn.replace("variance", variance_rows, [{"plant_id": p, "count_date": d} for p, d in zip(
            count_scope["plant_id"], count_scope["count_date"], strict=True)],
            sort_by=["location_id", "item_id", "counted_at"])
        # same partitions as the variance: a window's row belongs to its closing count's date
        txn.replace("stock_exceptions", exceptions, [{"plant_id": p, "count_date": d} for p, d in zip(
            count_scope["plant_id"], count_scope["count_date"], strict=True)],
            sort_by=["location_id", "item_id", "counted_at"])
        exception_rows += len(exceptions)
        txn.replace("bom_accuracy", accuracy, [{"plant_id": plant}], sort_by=["component_item_id"])
        variance_parts.append(variance_rows[variance.SUMMARY_COLUMNS])
        accuracy_parts.append(accuracy["flag"])
        del counts, variance_rows, accuracy, exceptions
    variance_rows = pd.concat(variance_parts, ignore_index=True) if variance_parts else \
        pd.DataFrame(columns=variance.SUMMARY_COLUMNS)
    flags = pd.concat(accuracy_parts, ignore_index=True) if accuracy_parts else pd.Series([], dtype="str")
    carried = _carried_quarantine(warehouse, quarantine, scope, plants, run_id, started)
    filed = quarantine.assign(released_by_run=None, released_at=pd.NaT)
    filed = pd.concat([filed, carried], ignore_index=True) if not carried.empty else filed
    _write_quarantine(txn, warehouse, filed, scope, plants, run_date)

    finished = pd.Timestamp.now(tz="UTC").floor("us")
    result = RunResult(
        run_id=run_id,
        command=command,
        status="ok",
        requested_dates=requested,
        business_dates=sorted({d.date() for d in scope["business_date"]}),
        plants=plants,
        rows_read={t: s.read for t, s in inputs.stats.items()},
        rows_accepted={t: s.accepted - int((explode_quarantine["table"] == t).sum()) for t, s in inputs.stats.items()},
        rows_quarantined={t: int((quarantine["table"] == t).sum()) for t in INPUT_TABLES},
        rows_superseded={t: s.superseded for t, s in inputs.stats.items()},
        started_at=started,
        finished_at=finished,
    )
    result.quarantine_by_code = {str(k): int(v) for k, v in quarantine["error_code"].value_counts().sort_index().items()}
    result.adjustments_by_kind = adjustments_by_kind
    result.top_components = top_components
    result.variance_summary = {**variance.summary(variance_rows), "stock_exceptions": exception_rows}
    result.bom_accuracy_flags = {str(k): int(v) for k, v in flags.value_counts().sort_index().items()}
    freed = carried[carried["released_by_run"] == run_id] if not carried.empty else carried
    # a row released from one error but rejected with another (a BOM line added with a unit that
    # has no conversion) is marked in quarantine, and not listed: it is not posted
    again = quarantine.loc[quarantine["table"] == "completions", "source_key"]
    freed = freed[~freed["source_key"].isin(again)] if not freed.empty else freed
    result.released = sorted(("completions:" + freed["source_key"].astype("str")).tolist()) if not freed.empty else []
    changed = queue.changed_dates
    result.master_changed_dates = (changed["plant_id"] + "|" + changed["business_date"].dt.strftime("%Y-%m-%d")).tolist()
    if result.released:
        log.info("error queue: %d quarantined row(s) released: %s", len(result.released), ", ".join(result.released))
    if result.master_changed_dates:
        log.warning("master data changed the explosion of %d posted date(s)%s: %s", len(result.master_changed_dates),
                    "" if config.reprocess_master_data else " (not reposted: reprocess_master_data = false)",
                    ", ".join(result.master_changed_dates))
    result.rows_written = dict(txn.rows_written)
    result.rows_written.setdefault("runs", 1)
    ran_before = {str(p) for plants_of_run in history.loc[history["status"] == "ok", "plants"] for p in plants_of_run}
    first_run = set(plants) - ran_before
    txn.put_file("runs", f"run-{run_id}.parquet", _runs_row(result, fingerprints, totals.watermark, first_run,
                                                            queue.fingerprints))
    result.rows_written = dict(txn.rows_written)
    result.partitions = dict(txn.partitions)
    return result


def _variance_after(warehouse: Warehouse, new_rows: pd.DataFrame, rewritten: pd.DataFrame,
                    plants: list[str]) -> pd.DataFrame:
    """The variance history of the plants as it will be after this run."""
    history = warehouse.read("variance", filters=_plant_filter(plants))
    kept = history.merge(rewritten, on=["plant_id", "count_date"], how="left", indicator=True)
    kept = kept[kept["_merge"] == "left_only"].drop(columns="_merge")
    return pd.concat([kept, new_rows], ignore_index=True) if not kept.empty else new_rows


def _bom_accuracy(rows: pd.DataFrame, inputs: Inputs, plants: list[str], config: Config,
                  as_of: pd.Timestamp) -> pd.DataFrame:
    """BOM accuracy over the variance history as it will be after this run (`_variance_after`)."""
    scrap = variance.planned_scrap(inputs.bom, plants)
    return variance.bom_accuracy(rows, scrap, config, as_of=as_of)


def _plant_filter(plants: list[str]) -> object:
    import pyarrow.dataset as ds

    return ds.field("plant_id").isin(plants)


def _carried_quarantine(warehouse: Warehouse, quarantine: pd.DataFrame, scope: pd.DataFrame, plants: list[str],
                        run_id: str, started: pd.Timestamp) -> pd.DataFrame:
    """Quarantined completions of the rewritten files that stay, marked released (`error_queue.carried_rows`)."""
    import pyarrow.dataset as ds

    previous = warehouse.read("quarantine", filters=(ds.field("table") == "completions")
                              & ds.field("plant_id").isin(plants))
    carried = error_queue.carried_rows(previous, quarantine, scope, run_id, started)
    return carried.assign(_file=carried["plant_id"].map(plant_file)) if not carried.empty else carried


def _quarantine_in_scope(
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


def _write_quarantine(
    txn: Transaction, warehouse: Warehouse, quarantine: pd.DataFrame, scope: pd.DataFrame, plants: list[str],
    run_date: dt.date,
) -> None:
    """Stage every quarantine file of the processed window (see `_quarantine_in_scope`)."""
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


def _batch_outputs(shared: Mapping[str, Any], task: tuple[int, str, list[pd.Timestamp]]) -> _BatchOutput:
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


def _frozen_adjustments(warehouse: Warehouse, closed: pd.DataFrame) -> set[tuple[str, pd.Timestamp]]:
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


def _top_components(demand: pd.DataFrame, requirements: pd.DataFrame, items: pd.DataFrame,
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


def _runs_row(result: RunResult, fingerprints: pd.DataFrame, watermark: pd.Timestamp | None,
              first_run: set[str], master_fingerprints: list[str] | None) -> pd.DataFrame:
    """The run's row; fingerprints of the dates it processed (of every date on a plant's first run)."""
    watermark = pd.NaT if watermark is None else watermark
    processed = pd.to_datetime(pd.Series(result.business_dates, dtype="object")).astype("datetime64[ns]")
    fp = fingerprints[fingerprints["plant_id"].isin(result.plants)
                      & (fingerprints["business_date"].isin(processed) | fingerprints["plant_id"].isin(first_run))]
    fp_json = json.dumps(
        {f"{p}|{d:%Y-%m-%d}": str(h) for p, d, h in zip(fp["plant_id"], fp["business_date"], fp["fingerprint"], strict=True)},
        sort_keys=True,
    )
    return pd.DataFrame(
        {
            "run_id": [result.run_id],
            "command": [result.command],
            "status": [result.status],
            "message": [""],
            "business_dates": [result.business_dates],
            "requested_dates": [result.requested_dates],
            "plants": [result.plants],
            "rows_read": [list(result.rows_read.items())],
            "rows_accepted": [list(result.rows_accepted.items())],
            "rows_quarantined": [list(result.rows_quarantined.items())],
            "rows_superseded": [list(result.rows_superseded.items())],
            "rows_written": [list(result.rows_written.items())],
            "input_fingerprints": [fp_json],
            "watermark_recorded_at": [watermark],
            "started_at": [result.started_at],
            "finished_at": [result.finished_at],
            "code_version": [__version__],
            "released": [result.released],
            "master_changed_dates": [result.master_changed_dates],
            "master_fingerprints": [master_fingerprints],
        }
    )


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
