"""Backflush reconciliation under Airflow: a nightly run per business date and a run per landing drop.

Both DAGs are thin: every task calls the `pipeline` functions the `backflush` command uses
(`load_config`, `known_plants`, `plants_in_scope`, `run_dates`), and which business dates a run
processes is decided by `pipeline.schedule` (no Airflow import, unit-tested for every run type).
Each plant is its own mapped task instance: plants share nothing but the warehouse, whose per-plant
lock and all-or-nothing commit make them safe to run in parallel on any executor.
How to run, trigger and backfill them: docs/airflow.md.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.sdk import (
    Asset,
    AssetAlias,
    CronDataIntervalTimetable,
    Param,
    PokeReturnValue,
    Variable,
    dag,
    get_current_context,
    task,
)
from airflow.sdk.exceptions import AirflowFailException

log = logging.getLogger(__name__)

SOURCE_POOL = "backflush_sources"  # create it: `airflow pools set backflush_sources 2 "..."` (docs/airflow.md)
CONFIG_VARIABLE = "backflush_config"  # optional Airflow Variable naming the config file; else $BACKFLUSH_CONFIG
DAY_END_GRACE = dt.timedelta(minutes=30)  # MES confirmations of the last minutes arrive after local midnight
START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# The source side announces new completions on this asset (REST POST /api/v2/assets/events or a
# producer task); the extra may name `business_dates` and `plants`.
LANDING_COMPLETIONS = Asset(name="backflush.landing.completions", uri="backflush://landing/completions")
# Events go through an alias so that a task announces only what it wrote: nothing for a dry run,
# no `postings` event for a re-run that appended no postings. The assets behind it are the dataset
# folders of the warehouse the run wrote to (`output_asset`), so their URIs are known only at run time.
OUTPUTS = AssetAlias(name="backflush.outputs")


def output_asset(dataset: str, warehouse: str) -> Asset:
    """The asset of one output dataset: `backflush.<dataset>`, URI its folder in the warehouse.

    `file:///...` for a local warehouse, `s3://bucket/prefix/<dataset>` for a bucket: URIs Airflow
    normalises, which the OpenLineage provider maps to datasets (namespace `file` with the absolute
    path as name; namespace `s3://bucket` with the key prefix as name).
    """
    from pipeline.schedule import asset_uri

    return Asset(name=f"backflush.{dataset}", uri=asset_uri(warehouse, dataset))

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "data-engineering",
    "retries": 3,  # only transient failures get here: the rest raise AirflowFailException
    "retry_delay": dt.timedelta(minutes=5),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": dt.timedelta(minutes=30),
}
PLANT_LABEL = "{{ task.op_kwargs['plant']['plant_id'] }}"  # mapped instances are named by plant


def plants_param() -> Param:
    """The `plants` param; a new object per DAG (a run's conf is written into its DAG's params)."""
    return Param([], type="array", items={"type": "string"}, title="Plants",
                 description="Plant ids to process; empty: every plant (config, else the landing data).")


def dry_run_param() -> Param:
    """The `dry_run` param, likewise one per DAG."""
    return Param(False, type="boolean", title="Dry run", description="Compute everything, write nothing.")


# ------------------------------------------------------------------ glue shared by both DAGs


@contextmanager
def failures_classified() -> Iterator[None]:
    """Transient failures (I/O, a plant lock held by another run) propagate and are retried;
    everything else (bad config, contract-breaking source data, a bug) fails at once."""
    try:
        yield
    except AirflowFailException:
        raise
    except Exception as exc:
        from pipeline.schedule import is_transient

        if is_transient(exc):
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__  # pipeline messages carry no secrets
        raise AirflowFailException(f"{type(exc).__name__}: {reason}") from exc


def config_path() -> str | None:
    """The config file named by the Variable; None: $BACKFLUSH_CONFIG, as for the CLI."""
    path = Variable.get(CONFIG_VARIABLE, default=None) or None  # outside failures_classified: retried
    log.info("config file: %s", path or "$BACKFLUSH_CONFIG")
    return path


@task(pool=SOURCE_POOL)
def plants_to_process(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The plants in scope, each with its time zone and the instant its work may start."""
    from pipeline import job, schedule
    from pipeline.config import load_config

    run_plan = schedule.RunPlan.from_dict(plan)
    path = config_path()
    with failures_classified():
        config = load_config(path)
        inputs = job.known_plants(config)  # the plants table and the manifest, not a full read
        plants = job.plants_in_scope(inputs, run_plan.plants or None, config)
        zones = dict(zip(inputs.plants["plant_id"], inputs.plants["timezone"], strict=True))
        out = []
        for plant in plants:
            zone = str(zones.get(plant, "UTC"))  # contract: a plant without a zone is in UTC
            ready = schedule.ready_at(run_plan, zone, grace=DAY_END_GRACE)
            out.append({"plant_id": plant, "timezone": zone, "ready_at": ready.isoformat() if ready else None})
    log.info("plants: %s", ", ".join(f"{p['plant_id']} ({p['timezone']})" for p in out) or "none")
    return out


@task.sensor(mode="reschedule", poke_interval=600, timeout=36 * 3600, map_index_template=PLANT_LABEL)
def wait_for_day_end(plant: dict[str, Any]) -> PokeReturnValue:
    """Hold a plant until its business day has ended in its own zone (plus a grace period)."""
    ready = plant.get("ready_at")
    done = ready is None or dt.datetime.now(dt.UTC) >= dt.datetime.fromisoformat(ready)
    return PokeReturnValue(is_done=done, xcom_value=plant)


@task(pool=SOURCE_POOL, outlets=[OUTPUTS], map_index_template=PLANT_LABEL)
def process_plant(plant: dict[str, Any], plan: dict[str, Any]) -> dict[str, Any]:
    """Run the pipeline for one plant and announce what it wrote as asset events."""
    from pipeline import job, schedule
    from pipeline.config import load_config

    run_plan = schedule.RunPlan.from_dict(plan)
    path = config_path()
    with failures_classified():
        config = load_config(path)
        dates = run_plan.dates_for(plant["timezone"])
        result = job.run_dates(config, dates, plants=[plant["plant_id"]], dry_run=run_plan.dry_run,
                               command=run_plan.command, late_data=run_plan.late_data)
    events = schedule.output_events(result)
    outlet_events = get_current_context()["outlet_events"]
    for name, extra in events.items():
        outlet_events[OUTPUTS].add(output_asset(name, config.warehouse), extra=extra)
    summary = {
        "plant_id": plant["plant_id"],
        "run_id": result.run_id,
        "business_dates": [d.isoformat() for d in result.business_dates],
        "rows_written": dict(result.rows_written),
        "quarantine_by_code": dict(result.quarantine_by_code),
        "dry_run": result.dry_run,
        "announced": sorted(events),
    }
    log.info("plant %s: %s", plant["plant_id"], summary)
    return summary


# ------------------------------------------------------------------ backflush_nightly


@task
def plan_nightly() -> dict[str, Any]:
    """Which business date this run processes (scheduled, backfill or manual), for which plants."""
    from pipeline import schedule

    context = get_current_context()
    dag_run = context["dag_run"]
    with failures_classified():
        plan = schedule.nightly_plan(run_type=dag_run.run_type, logical_date=dag_run.logical_date,
                                     run_after=dag_run.run_after, params=context["params"])
    log.info("plan: %s", "; ".join(plan.reasons))
    return plan.to_dict()


@dag(
    dag_id="backflush_nightly",
    # Data interval [D 00:00, D+1 00:00) UTC: the run for business date D has logical date D and
    # starts once D has ended in UTC; `airflow backfill create --from-date A --to-date B` makes one
    # run per date A..B. Plants west of UTC are held by wait_for_day_end until D ended locally.
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,  # history is loaded explicitly with `airflow backfill create`
    max_active_runs=1,  # two nightly runs would only queue on the same plant locks
    default_args=DEFAULT_ARGS,
    params={
        "business_date": Param(None, type=["null", "string"], format="date", title="Business date",
                               description="Manual runs only: the date to process. Empty: the last full "
                                           "day before the logical date (yesterday, when triggered now)."),
        "plants": plants_param(),
        "dry_run": dry_run_param(),
    },
    tags=["backflush", "nightly"],
)
def backflush_nightly() -> None:
    """Nightly backflush: post the business date that has just ended, for every plant in parallel.

    One mapped task per plant; each waits until the date has ended in the plant's own time zone,
    then runs `backflush run --date D --plant P` (late data within the look-back included).
    Manual runs take the params `business_date`, `plants` and `dry_run`.
    """
    plan = plan_nightly()
    ready = wait_for_day_end.expand(plant=plants_to_process(plan))
    process_plant.partial(plan=plan).expand(plant=ready)


# ------------------------------------------------------------------ backflush_on_arrival


@task
def plan_arrival() -> dict[str, Any]:
    """The business dates and plants the new landing data touches, from the asset events' extras."""
    from pipeline import schedule

    context = get_current_context()
    dag_run = context["dag_run"]
    events = [dict(event.extra or {}) for batch in context["triggering_asset_events"].values() for event in batch]
    with failures_classified():
        plan = schedule.arrival_plan(run_type=dag_run.run_type, events=events, run_after=dag_run.run_after,
                                     params=context["params"])
    log.info("plan from %d event(s): %s", len(events), "; ".join(plan.reasons))
    return plan.to_dict()


@dag(
    dag_id="backflush_on_arrival",
    schedule=[LANDING_COMPLETIONS],  # events that arrive during a run are batched into the next one
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "business_dates": Param([], type="array", items={"type": "string", "format": "date"},
                                title="Business dates",
                                description="Manual runs: dates to process; empty: derive them from the "
                                            "landing data changed since the last run."),
        "plants": plants_param(),
        "dry_run": dry_run_param(),
    },
    tags=["backflush", "event-driven"],
)
def backflush_on_arrival() -> None:
    """On arrival: post the business dates that newly landed completions touch, as soon as they land.

    Triggered by an event on the `backflush.landing.completions` asset. Its extra may carry
    `business_dates` and `plants`; without them each plant's today is run with the late-data
    look-back, which finds exactly the dates whose data changed. Same idempotent code as the nightly
    run, so a nightly run afterwards posts nothing new.
    """
    plan = plan_arrival()
    process_plant.partial(plan=plan).expand(plant=plants_to_process(plan))


backflush_nightly()
backflush_on_arrival()
