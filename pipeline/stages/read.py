"""The read stage: the one entry point that builds a run's inputs (master data, explosion catalog, count
windows, summed completions) from the landing or SQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import Config
from pipeline.contract import quarantine
from pipeline.contract.inputs import Inputs
from pipeline.domain import bom, consumption, error_queue, late_data, stock_windows
from pipeline.engine import workers as workers_
from pipeline.intake import accept, landing, scan, spill
from pipeline.intake import sql as sql_source
from pipeline.stages import digest
from pipeline.store.warehouse import Warehouse

log = logging.getLogger("backflush")


@dataclass
class RunInputs:
    """A run's validated inputs: master data, counts and movements row by row, and completions as
    the totals a run needs of them (`digest.CompletionTotals`), so that memory follows keys."""

    inputs: Inputs
    completions: digest.CompletionTotals
    manifest: landing.Manifest | None = None  # of the landing files, published with the run's outputs
    files_read: dict[str, int] = field(default_factory=dict)  # completion and movement files read
    files_skipped: dict[str, int] = field(default_factory=dict)  # ... and pruned
    inputs_digest: str | None = None  # `pipeline.stages.rerun`: recorded in the run's `runs` row

    @property
    def plants(self) -> pd.DataFrame:
        return self.inputs.plants


def read_inputs(config: Config, dates: Sequence[dt.date] | None = None,
                plants: Sequence[str] | None = None) -> RunInputs:
    """Read and validate every input table from the configured source; completions a bucket at a time.

    A landing folder given the dates to process is pruned (`pipeline.intake.landing`): of completions and
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
        raw = sql_source.read_sql_tables(config.sql, plants=plants, stage_dir=stage)
        with _spiller(config, spill.raw_files(raw["completions"])) as spiller:
            return _summarised(config, accept.InputLoader(raw, timezone_overrides=config.plant_timezones), spiller,
                               dates)
    # a plant's business date D lies within [D - 1 day, D + 2 days) in UTC, whatever its zone
    since = pd.Timestamp(min(dates) - dt.timedelta(days=config.lookback_days + 1), tz="UTC")
    until = pd.Timestamp(max(dates) + dt.timedelta(days=2), tz="UTC")
    watermark = last_watermark(Warehouse(config.warehouse))
    for attempt in itertools.count():
        folder = stage / f"read-{attempt}"
        raw = sql_source.read_sql_tables(config.sql, since=since, until=until, recorded_after=watermark,
                                      plants=plants, stage_dir=folder)
        loader = accept.InputLoader(raw, timezone_overrides=config.plant_timezones)
        counts = loader.stock_counts
        # the counts the run may recompute: those dated on its dates, and on the look-back dates it
        # may reprocess as late (not known before reading) or whose windows reach one of them
        first = pd.Timestamp(min(dates) - dt.timedelta(days=config.lookback_days))
        reconciled = counts[counts["business_date"] >= first]
        opened = stock_windows.with_previous_count(counts).merge(reconciled[["count_id"]], on="count_id")
        oldest = opened["previous_counted_at"].min()
        if pd.isna(oldest) or oldest >= since:
            with _spiller(config, spill.raw_files(raw["completions"])) as spiller:
                return _summarised(config, loader, spiller, dates)
        since = oldest.floor("D")
        del raw, loader
        shutil.rmtree(folder, ignore_errors=True)  # read again from the earlier start
    raise AssertionError("unreachable")


def _read_landing(config: Config, dates: Sequence[dt.date] | None, plants: list[str] | None) -> RunInputs:
    """The landing folder's inputs: pruned when dates are given and every plant of the run has run
    before (a plant's first run records the fingerprint of every date it sees: it reads all)."""
    warehouse = Warehouse(config.warehouse)
    listed = scan.landing_files(config.landing)
    manifest = landing.survey(listed, warehouse)
    files = landing.with_plants(listed, manifest, plants)
    if dates and config.prune_landing and not config.reprocess_master_data:
        ran = _plants_that_ran(warehouse)
        if ran and (not (plants or config.plants) or set(plants or config.plants) <= ran):
            tables = scan.lazy_landing_files(files, skip=["completions"], plants=plants)
            loader = accept.InputLoader(tables, timezone_overrides=config.plant_timezones, movements_later=True)
            scope_plants = plants or list(config.plants) or None
            known = set(loader.zones["plant_id"]) | manifest.plants()
            if (scope_plants is not None or known <= ran) and not bom.has_fixed_lines(loader.bom):
                lo, hi = landing.flow_span(config, dates, loader.stock_counts, scope_plants)
                lo, hi = _releasable_span(warehouse, loader, scope_plants, lo, hi)
                choice = landing.choose(manifest, files, lo, hi, plants)
                log.info("landing pruned to flows in %s .. %s: files read %s, skipped %s; pieces read %s, "
                         "skipped %s", lo, hi, choice.read, choice.skipped, choice.pieces_read, choice.pieces_skipped)
                loader.add_known(choice.unread_plants)
                loader.add_movements(scan.lazy_landing_files(
                    {"movements": choice.files["movements"]}, plants=plants, row_groups=choice.row_groups)["movements"])
                with _spiller(config, spill.with_plant_ids(spill.raw_files(choice.files["completions"], plants,
                                                                           choice.row_groups))) as spiller:
                    read = _summarised(config, loader, spiller, dates)
                read.manifest, read.files_read, read.files_skipped = manifest, choice.read, choice.skipped
                return read
    # completions are split into buckets on worker processes while the master data is read here
    with _spiller(config, spill.with_plant_ids(spill.raw_files(files["completions"], plants))) as spiller:
        if spiller.large:  # the split's workers and a large master read would add their peaks
            spiller.spilled()
        tables = scan.lazy_landing_files(files, skip=["completions"], plants=plants)
        read = _summarised(config, accept.InputLoader(tables, timezone_overrides=config.plant_timezones), spiller,
                           dates)
    read.manifest = manifest
    read.files_read = {t: len(files[t]) for t in landing.FLOWS}
    return read


def _releasable_span(warehouse: Warehouse, loader: accept.InputLoader, plants: Sequence[str] | None,
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
    files = scan.landing_files(config.landing)
    manifest = landing.survey(files, Warehouse(config.warehouse))
    master = scan.lazy_landing_files({t: files[t] for t in ("plants", "bom")})
    loader = accept.InputLoader(master, timezone_overrides=config.plant_timezones, movements_later=True)
    loader.add_known(manifest.plants())
    return KnownPlants(plants=loader.zones)


def _plants_that_ran(warehouse: Warehouse) -> set[str]:
    runs = warehouse.read("runs", columns=["status", "plants"])
    return {str(p) for plants in runs.loc[runs["status"] == "ok", "plants"] for p in plants}


def _spiller(config: Config, files: list[spill.RawFile]) -> spill.Spiller:
    return spill.Spiller(files, bucket_rows=config.bucket_rows, workers=config.workers, spill_dir=config.spill_dir)


def _summarised(config: Config, loader: accept.InputLoader, spiller: spill.Spiller,
                dates: Sequence[dt.date] | None = None) -> RunInputs:
    """Completions accepted and summed a bucket at a time, then the inputs finished with them.

    The flows of the windows of counts a run on `dates` can recompute (dated from the look-back's
    first day on) are also kept one by one, for `stock_exceptions`; every window's without dates."""
    since = pd.Timestamp(min(dates) - dt.timedelta(days=config.lookback_days)) if dates else None
    windows = stock_windows.count_windows(loader.stock_counts, loader.items, events_from=since)
    # movements, like completions, are kept only as the sums a run needs: their flows into count
    # windows and their fingerprints; their rows are let go of before completions are digested
    movement_parts = _movement_sums(loader.let_go_of_movements(), windows)
    workers_.give_back_memory()  # what reading the tables took, before workers are forked
    catalog = consumption.ExplosionCatalog(loader.bom, loader.items, loader.uom_conversions, loader.broken_bom)
    totals = digest.summarise(spiller, loader.acceptor(), catalog, windows)
    workers_.give_back_memory()  # what merging the buckets took
    totals.fingerprints = pd.concat([totals.fingerprints, movement_parts], ignore_index=True)
    return RunInputs(inputs=loader.finish(None, totals.summary), completions=totals)


MOVEMENT_CHUNK_ROWS = 1_000_000  # movements hashed and placed in count windows at a time


def _movement_sums(movements: pd.DataFrame, windows: stock_windows.CountWindows) -> pd.DataFrame:
    """Movements added to the count windows; their fingerprint parts returned (all a run keeps of them),
    a chunk of rows at a time (both are sums), so hashing them takes memory for one chunk."""
    parts = []
    for start in range(0, max(len(movements), 1), MOVEMENT_CHUNK_ROWS):
        chunk = movements.iloc[start:start + MOVEMENT_CHUNK_ROWS]
        windows.add_movements(chunk)
        parts.append(late_data.fingerprint_parts("movements", chunk))
    return pd.concat(parts, ignore_index=True)


def summarised(inputs: Inputs | RunInputs) -> RunInputs:
    """Inputs loaded whole (`accept.load_inputs`, tests and tools) as a run takes them."""
    if isinstance(inputs, RunInputs):
        return inputs
    catalog = consumption.ExplosionCatalog(inputs.bom, inputs.items, inputs.uom_conversions, inputs.broken_bom)
    windows = stock_windows.count_windows(inputs.stock_counts, inputs.items)
    totals = digest.summarise_accepted(inputs.completions, catalog, windows)
    totals.fingerprints = pd.concat([totals.fingerprints, _movement_sums(inputs.movements, windows)],
                                    ignore_index=True)
    return RunInputs(inputs=dataclasses.replace(inputs, completions=quarantine.empty_like(inputs.completions),
                                                movements=quarantine.empty_like(inputs.movements)), completions=totals)


def last_watermark(warehouse: Warehouse) -> pd.Timestamp | None:
    runs = warehouse.read("runs", columns=["status", "watermark_recorded_at"])
    done = runs[runs["status"] == "ok"]["watermark_recorded_at"].dropna()
    return None if done.empty else done.max()
