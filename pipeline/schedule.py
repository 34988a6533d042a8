"""Which business dates and plants an orchestrated run processes; pure functions, no orchestrator import.

The Airflow DAGs in `dags/` hand these functions what they know about a run (its type, logical
date, trigger time, params, asset-event extras) as plain values and get back a `RunPlan`: the
dates to process, whether late data is looked for, and what to record as the run's command.
Keeping this here makes every rule testable without Airflow and usable by any other scheduler.

Mapping (schedule `0 0 * * *` in UTC with data intervals, i.e. CronDataIntervalTimetable):

| run                                       | business date                                  |
|-------------------------------------------|------------------------------------------------|
| scheduled, logical date D 00:00Z          | D (the run starts at D+1 00:00Z, when D ended) |
| backfill `--from-date A --to-date B`      | one run per logical date A..B: A..B            |
| manual with the param `business_date`     | that date                                      |
| manual with a logical date L              | the last full UTC day before L (its interval)  |
| manual without a logical date             | the last full UTC day before the trigger time  |
"""

from __future__ import annotations

import datetime as dt
import urllib.parse
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEDULED, MANUAL, BACKFILL, ASSET_TRIGGERED = "scheduled", "manual", "backfill", "asset_triggered"
SCHEDULE_TIMEZONE = "UTC"  # the zone the nightly timetable and its logical dates live in
OUTPUT_DATASETS = ("adjustments", "postings", "variance")  # announced to downstream consumers


@dataclass(frozen=True)
class RunPlan:
    """What one orchestrated run processes, as the pipeline's `run_dates` takes it."""

    business_dates: tuple[dt.date, ...]  # empty: "today" in each plant's zone, plus late data
    plants: tuple[str, ...] = ()  # empty: every plant in scope (config, else the inputs)
    late_data: bool = True  # semantics 6: also reprocess changed dates within the look-back
    command: str = "run"  # recorded in `runs.command`, as the CLI does ("run" / "backfill")
    dry_run: bool = False
    wait_for_day_end: bool = False  # hold each plant until its business day has ended locally
    as_of: dt.datetime | None = None  # when the run was triggered (UTC); anchors a derived "today"
    reasons: tuple[str, ...] = field(default=(), compare=False)  # how the dates were chosen, for logs

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe form (for XCom)."""
        return {
            "business_dates": [d.isoformat() for d in self.business_dates],
            "plants": list(self.plants),
            "late_data": self.late_data,
            "command": self.command,
            "dry_run": self.dry_run,
            "wait_for_day_end": self.wait_for_day_end,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "reasons": list(self.reasons),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunPlan:
        """The inverse of `to_dict`."""
        as_of = data.get("as_of")
        return cls(
            business_dates=tuple(parse_date(d, what="business date") for d in data.get("business_dates") or ()),
            plants=tuple(str(p) for p in data.get("plants") or ()),
            late_data=bool(data.get("late_data", True)),
            command=str(data.get("command", "run")),
            dry_run=bool(data.get("dry_run", False)),
            wait_for_day_end=bool(data.get("wait_for_day_end", False)),
            as_of=_utc(dt.datetime.fromisoformat(as_of)) if as_of else None,
            reasons=tuple(data.get("reasons") or ()),
        )

    def dates_for(self, timezone: str) -> list[dt.date]:
        """The dates to request for one plant: the planned ones, else the plant's local "today"."""
        if self.business_dates:
            return list(self.business_dates)
        if self.as_of is None:
            raise ValueError("a plan without business dates needs as_of to derive the plant's today")
        return [local_date(self.as_of, timezone)]


# ------------------------------------------------------------------ values


def parse_date(value: object, *, what: str = "date") -> dt.date:
    """A date from a date, a datetime (its own calendar date) or an ISO string; ValueError otherwise."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(text).date()
        except ValueError:
            pass
    raise ValueError(f"{what} {value!r} is not a date (YYYY-MM-DD)")


def parse_plants(value: object, *, what: str = "plants") -> tuple[str, ...]:
    """Plant ids from a list of strings (or one string); sorted and de-duplicated."""
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or isinstance(items, Mapping):
        raise ValueError(f"{what} must be a list of plant ids, not {value!r}")
    plants = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"{what}: {item!r} is not a plant id")
        plants.append(item.strip())
    return tuple(sorted(set(plants)))


def _utc(instant: dt.datetime) -> dt.datetime:
    if instant.tzinfo is None:
        return instant.replace(tzinfo=dt.UTC)  # contract: a timestamp without an offset is UTC
    return instant.astimezone(dt.UTC)


def local_date(instant: dt.datetime, timezone: str) -> dt.date:
    """The calendar date of an instant in a plant's (IANA) time zone."""
    return _utc(instant).astimezone(zoneinfo.ZoneInfo(timezone)).date()


def day_ends_at(business_date: dt.date, timezone: str) -> dt.datetime:
    """The UTC instant at which a business date ends in a plant's zone (its local midnight after)."""
    zone = zoneinfo.ZoneInfo(timezone)
    next_midnight = dt.datetime.combine(business_date + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return next_midnight.astimezone(dt.UTC)


def ready_at(plan: RunPlan, timezone: str, *, grace: dt.timedelta = dt.timedelta()) -> dt.datetime | None:
    """When a plant's work for a plan may start: `grace` after its last business date ended locally.

    None when the plan does not wait (manual runs, backfills, arrivals).
    """
    if not plan.wait_for_day_end or not plan.business_dates:
        return None
    return day_ends_at(max(plan.business_dates), timezone) + grace


# ------------------------------------------------------------------ nightly runs


def business_date_for_run(
    *,
    run_type: object,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
    requested: object = None,
    timezone: str = SCHEDULE_TIMEZONE,
) -> dt.date:
    """The business date a nightly run processes: the day its data interval covers.

    Scheduled and backfill runs: the calendar date of the logical date, which is the start of the
    daily data interval. Manual runs: the `requested` date if given; else the last full day before
    the logical date or, without one, before the trigger time. That is the data interval Airflow
    infers for a manual run, and the UI's trigger form fills in "now" as the logical date: a
    manual run left at its defaults processes yesterday, like the nightly run, never a day that
    is still going on.
    """
    run_type = _run_type(run_type)
    if requested not in (None, ""):
        if run_type != MANUAL:
            raise ValueError(
                f"param business_date={requested!r} only applies to manual runs; a {run_type} run "
                "processes the date of its logical date (use `airflow backfill create` for ranges)"
            )
        return parse_date(requested, what="param business_date")
    if run_type in (SCHEDULED, BACKFILL):
        if logical_date is None:
            raise ValueError(f"a {run_type} run has no logical date; the nightly DAG needs a time schedule")
        return local_date(logical_date, timezone)
    if run_type == MANUAL:
        instant = logical_date or run_after
        if instant is None:
            raise ValueError("a manual run without a logical date needs its trigger time (run_after)")
        return local_date(instant, timezone) - dt.timedelta(days=1)
    raise ValueError(f"a {run_type} run cannot be mapped to a business date; the nightly DAG is time-scheduled")


def nightly_plan(
    *,
    run_type: object,
    logical_date: dt.datetime | None,
    run_after: dt.datetime | None,
    params: Mapping[str, Any] | None = None,
    timezone: str = SCHEDULE_TIMEZONE,
) -> RunPlan:
    """The plan of one nightly run: its business date, for the chosen plants.

    A backfill run processes exactly its date (no late-data look-back, as `backflush backfill`);
    every other run also reprocesses the changed dates within the look-back, as `backflush run`.
    Only scheduled runs wait for each plant's business day to end in the plant's own zone.
    """
    params = params or {}
    run_type = _run_type(run_type)
    day = business_date_for_run(run_type=run_type, logical_date=logical_date, run_after=run_after,
                                requested=params.get("business_date"), timezone=timezone)
    backfill = run_type == BACKFILL
    return RunPlan(
        business_dates=(day,),
        plants=parse_plants(params.get("plants"), what="param plants"),
        late_data=not backfill,
        command="backfill" if backfill else "run",
        dry_run=bool(params.get("dry_run", False)),
        wait_for_day_end=run_type == SCHEDULED,
        as_of=_utc(run_after) if run_after else None,
        reasons=(f"{run_type} run -> business date {day.isoformat()}",),
    )


# ------------------------------------------------------------------ event-driven runs


def arrival_plan(
    *,
    run_type: object,
    events: Sequence[Mapping[str, Any]] = (),
    run_after: dt.datetime | None = None,
    params: Mapping[str, Any] | None = None,
) -> RunPlan:
    """The plan of a run triggered by new landing data: the business dates and plants it touches.

    `events` are the extras of the asset events that triggered the run. Each may carry
    `business_dates` (ISO dates) and `plants`; the run processes their union. If any event (or a
    manual run's params) leaves the dates out, they are derived from the data: each plant's
    "today" is processed with the late-data look-back, which picks up exactly the earlier dates
    whose completions or movements changed since the last successful run. Likewise a missing
    `plants` means every plant.
    """
    params = params or {}
    run_type = _run_type(run_type)
    sources: list[Mapping[str, Any]] = list(events) if events else [
        {"business_dates": params.get("business_dates") or None, "plants": params.get("plants") or None}
    ]
    dates: set[dt.date] = set()
    plants: set[str] = set()
    derive_dates = all_plants = False
    reasons = []
    for i, extra in enumerate(sources):
        name = f"asset event {i + 1}" if events else "params"
        if not isinstance(extra, Mapping):
            raise ValueError(f"{name}: extra must be a JSON object, not {extra!r}")
        given = extra.get("business_dates")
        if given in (None, [], ""):
            derive_dates = True
        else:
            items = [given] if isinstance(given, str) else given
            if not isinstance(items, Iterable):
                raise ValueError(f"{name}: business_dates must be a list of dates, not {given!r}")
            dates |= {parse_date(d, what=f"{name}: business date") for d in items}
        named = parse_plants(extra.get("plants"), what=f"{name}: plants")
        if named:
            plants |= set(named)
        else:
            all_plants = True
    if derive_dates:
        reasons.append("dates derived from changed landing data (today per plant + late-data look-back)")
        dates = set()
    else:
        reasons.append("dates named by the " + ("asset events" if events else "params"))
    return RunPlan(
        business_dates=tuple(sorted(dates)),
        plants=() if all_plants else tuple(sorted(plants)),
        late_data=True,
        command="run",
        dry_run=bool(params.get("dry_run", False)),
        wait_for_day_end=False,
        as_of=_utc(run_after) if run_after else None,
        reasons=tuple(reasons),
    )


# ------------------------------------------------------------------ results and failures


def output_events(result: Any, datasets: Sequence[str] = OUTPUT_DATASETS) -> dict[str, dict[str, Any]]:
    """Per output dataset a run wrote to, the extra of its asset event: partitions and row counts.

    `result` is a `pipeline.job.RunResult`. A dry run, or a dataset the run wrote no rows to (a
    re-run over unchanged input appends no postings), announces nothing.
    """
    if getattr(result, "dry_run", False):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for name in datasets:
        partitions = [_json_partition(p) for p in (result.partitions.get(name) or [])]
        partitions = [p for p in partitions if int(p.get("rows", 0)) > 0]  # type: ignore[call-overload]
        if not partitions:
            continue
        out[name] = {
            "run_id": result.run_id,
            "plants": list(result.plants),
            "business_dates": [d.isoformat() for d in result.business_dates],
            "rows": int(sum(int(p["rows"]) for p in partitions)),  # type: ignore[call-overload]
            "partitions": partitions,
        }
    return out


def asset_uri(warehouse: str, dataset: str) -> str:
    """The URI of a warehouse dataset's folder as an Airflow asset, in a form Airflow normalises.

    A local warehouse gives `file:///absolute/path/<dataset>` (relative paths resolved against the
    working directory, as `Warehouse` does), an object store `s3://bucket/prefix/<dataset>` (or its
    own scheme). Credentials, query parameters (endpoint, region) and fragments are dropped: an asset
    URI names the data, it is shown in the UI and sent to lineage backends.
    """
    if "://" not in warehouse or warehouse.startswith("file://"):
        path = Path(warehouse.removeprefix("file://")).resolve() / dataset
        return "file://" + urllib.parse.quote(path.as_posix())  # quote: an asset URI must be ASCII
    parts = urllib.parse.urlsplit(warehouse)
    host = parts.netloc.rpartition("@")[2]
    prefix = parts.path.strip("/")
    return f"{parts.scheme.lower()}://{host}/{prefix + '/' if prefix else ''}{dataset}"


def _json_partition(partition: Mapping[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in partition.items():
        if isinstance(value, (dt.date, dt.datetime)):
            value = value.isoformat()
        if key in ("business_date", "count_date") and isinstance(value, str):
            value = value[:10]  # partition dates arrive as midnight timestamps
        out[key] = value
    return out


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same run later may succeed.

    Transient: I/O failures (OSError: network, object store, a landing file replaced while it
    was read), also when the pipeline wrapped one into a one-line SourceError/WarehouseError, and
    a plant lock held by another run (the CLI exits 75, EX_TEMPFAIL, for it), and any error that
    says so itself with a true `transient` attribute (e.g. a source that lost its database
    connection). Permanent: a bad configuration, source data that breaks the contract, a
    permission error, a bug; these fail the same way on every try.
    """
    from pipeline.config import ConfigError
    from pipeline.errors import LockError

    if isinstance(exc, LockError):
        return True
    if isinstance(exc, ConfigError):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "transient", False) is True:
            return True
        if isinstance(current, PermissionError):
            return False
        if isinstance(current, OSError):
            return True
        current = current.__cause__
    return False


def _run_type(value: object) -> str:
    """A run type as a plain string (accepts Airflow's DagRunType enum or its value)."""
    text = str(getattr(value, "value", value)).lower()
    aliases = {"backfill_job": BACKFILL, "asset_materialization": MANUAL}
    return aliases.get(text, text)


__all__ = [
    "ASSET_TRIGGERED", "BACKFILL", "MANUAL", "OUTPUT_DATASETS", "SCHEDULED", "SCHEDULE_TIMEZONE",
    "RunPlan", "arrival_plan", "asset_uri", "business_date_for_run", "day_ends_at", "is_transient", "local_date",
    "nightly_plan", "output_events", "parse_date", "parse_plants", "ready_at",
]
