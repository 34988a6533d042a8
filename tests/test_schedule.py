"""Business dates of orchestrated runs (pipeline.schedule): every run type, plant zones, arrivals, retries."""

from __future__ import annotations

import ast
import datetime as dt
import enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pipeline import schedule
from pipeline.config import ConfigError
from pipeline.errors import LockError, SourceError, WarehouseError
from pipeline.schedule import RunPlan, arrival_plan, business_date_for_run, nightly_plan

UTC = dt.UTC
D = dt.date(2026, 1, 10)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


class RunType(enum.Enum):  # what Airflow passes: DagRunType, a str enum
    SCHEDULED = "scheduled"
    BACKFILL_JOB = "backfill"


# ------------------------------------------------------------------ nightly: every run type


def test_scheduled_run_processes_the_date_of_its_logical_date() -> None:
    # CronDataIntervalTimetable("0 0 * * *", UTC): logical date D 00:00Z, interval [D, D+1), starts D+1 00:00Z
    assert business_date_for_run(run_type="scheduled", logical_date=at("2026-01-10T00:00:00+00:00"),
                                 run_after=at("2026-01-11T00:00:00+00:00")) == D
    assert business_date_for_run(run_type=RunType.SCHEDULED, logical_date=at("2026-01-10T00:00:00+00:00"),
                                 run_after=None) == D


def test_backfill_runs_map_a_range_to_exactly_its_dates() -> None:
    # `airflow backfill create --from-date 2026-01-05 --to-date 2026-01-09`: one run per logical date 5..9
    logical_dates = [dt.datetime(2026, 1, d, tzinfo=UTC) for d in range(5, 10)]
    dates = [business_date_for_run(run_type=RunType.BACKFILL_JOB, logical_date=ld,
                                   run_after=ld + dt.timedelta(days=1)) for ld in logical_dates]
    assert dates == [dt.date(2026, 1, d) for d in range(5, 10)]


def test_manual_run_processes_the_last_full_day_before_its_logical_date() -> None:
    # Airflow gives a manual run the data interval [L-1 day, L) (aligned); the UI fills in L = now
    assert business_date_for_run(run_type="manual", logical_date=at("2026-01-11T00:00:00+00:00"),
                                 run_after=at("2026-11-24T09:00:00+00:00")) == D
    assert business_date_for_run(run_type="manual", logical_date=at("2026-01-11T17:42:10+00:00"),
                                 run_after=at("2026-01-11T17:42:10+00:00")) == D
    assert business_date_for_run(run_type="manual", logical_date=at("2026-01-11T23:30:00-05:00"),
                                 run_after=at("2026-11-24T09:00:00+00:00")) == dt.date(2026, 1, 11)


def test_manual_run_without_a_logical_date_processes_the_latest_ended_day() -> None:
    assert business_date_for_run(run_type="manual", logical_date=None,
                                 run_after=at("2026-01-11T07:15:00+00:00")) == D


def test_the_business_date_param_wins_for_manual_runs_only() -> None:
    kwargs: dict[str, Any] = {"logical_date": at("2026-01-10T00:00:00+00:00"),
                              "run_after": at("2026-01-11T00:00:00+00:00")}
    assert business_date_for_run(run_type="manual", requested="2026-01-03", **kwargs) == dt.date(2026, 1, 3)
    assert business_date_for_run(run_type="manual", requested="", **kwargs) == dt.date(2026, 1, 9)  # empty
    with pytest.raises(ValueError, match="only applies to manual runs"):
        business_date_for_run(run_type="backfill", requested="2026-01-03", **kwargs)
    with pytest.raises(ValueError, match="is not a date"):
        business_date_for_run(run_type="manual", requested="next tuesday", **kwargs)


def test_runs_that_cannot_name_a_date_are_refused() -> None:
    with pytest.raises(ValueError, match="no logical date"):
        business_date_for_run(run_type="scheduled", logical_date=None, run_after=at("2026-01-11T00:00:00+00:00"))
    with pytest.raises(ValueError, match="asset_triggered"):
        business_date_for_run(run_type="asset_triggered", logical_date=None,
                              run_after=at("2026-01-11T00:00:00+00:00"))


def test_nightly_plans_per_run_type() -> None:
    logical, after = at("2026-01-10T00:00:00+00:00"), at("2026-01-11T00:00:00+00:00")
    scheduled = nightly_plan(run_type="scheduled", logical_date=logical, run_after=after,
                             params={"business_date": None, "plants": [], "dry_run": False})
    assert (scheduled.business_dates, scheduled.plants) == ((D,), ())
    assert scheduled.late_data and scheduled.wait_for_day_end and scheduled.command == "run"

    backfill = nightly_plan(run_type="backfill", logical_date=logical, run_after=after, params={"plants": ["P2"]})
    assert backfill.business_dates == (D,) and backfill.plants == ("P2",)
    assert not backfill.late_data and not backfill.wait_for_day_end and backfill.command == "backfill"

    manual = nightly_plan(run_type="manual", logical_date=None, run_after=after,
                          params={"business_date": "2026-01-07", "plants": ["P3", "P1", "P1"], "dry_run": True})
    assert manual.business_dates == (dt.date(2026, 1, 7),) and manual.plants == ("P1", "P3")
    assert manual.dry_run and manual.late_data and not manual.wait_for_day_end


# ------------------------------------------------------------------ plant time zones


@pytest.mark.parametrize(("zone", "day", "ends"), [
    ("Europe/Berlin", "2026-01-10", "2026-01-10T23:00:00+00:00"),
    ("America/Chicago", "2026-01-10", "2026-01-11T06:00:00+00:00"),
    ("Asia/Shanghai", "2026-01-10", "2026-01-10T16:00:00+00:00"),
    ("UTC", "2026-01-10", "2026-01-11T00:00:00+00:00"),
    ("Europe/Berlin", "2026-03-29", "2026-03-29T22:00:00+00:00"),  # the day clocks go forward: 23 hours
    ("America/Chicago", "2026-11-01", "2026-11-02T06:00:00+00:00"),  # the day clocks go back: 25 hours
])
def test_a_business_day_ends_at_local_midnight(zone: str, day: str, ends: str) -> None:
    assert schedule.day_ends_at(dt.date.fromisoformat(day), zone) == at(ends)


def test_only_scheduled_runs_wait_for_the_plant_day_to_end() -> None:
    logical, after = at("2026-01-10T00:00:00+00:00"), at("2026-01-11T00:00:00+00:00")
    grace = dt.timedelta(minutes=30)
    scheduled = nightly_plan(run_type="scheduled", logical_date=logical, run_after=after)
    assert schedule.ready_at(scheduled, "America/Chicago", grace=grace) == at("2026-01-11T06:30:00+00:00")
    east = schedule.ready_at(scheduled, "Asia/Shanghai", grace=grace)
    assert east is not None and east < after  # no wait east of UTC
    backfill = nightly_plan(run_type="backfill", logical_date=logical, run_after=after)
    assert schedule.ready_at(backfill, "America/Chicago", grace=grace) is None


def test_a_plan_without_dates_runs_each_plants_own_today() -> None:
    plan = arrival_plan(run_type="asset_triggered", events=[{}], run_after=at("2026-01-10T20:00:00+00:00"))
    assert plan.business_dates == ()
    assert plan.dates_for("Asia/Shanghai") == [dt.date(2026, 1, 11)]  # already tomorrow in Shanghai
    assert plan.dates_for("America/Chicago") == [D]
    with pytest.raises(ValueError, match="as_of"):
        RunPlan(business_dates=()).dates_for("UTC")


def test_a_plan_survives_xcom() -> None:
    plan = nightly_plan(run_type="manual", logical_date=None, run_after=at("2026-01-11T03:00:00+00:00"),
                        params={"plants": ["P1"], "dry_run": True})
    data = plan.to_dict()
    assert data["business_dates"] == ["2026-01-10"] and data["as_of"] == "2026-01-11T03:00:00+00:00"
    assert RunPlan.from_dict(data) == plan


# ------------------------------------------------------------------ arrivals


def test_arrival_processes_the_union_of_the_dates_and_plants_the_events_name() -> None:
    events: list[dict[str, Any]] = [
        {"business_dates": ["2026-01-08", "2026-01-09"], "plants": ["P1"], "from_rest_api": True},
        {"business_dates": "2026-01-09", "plants": ["P2"]},
    ]
    plan = arrival_plan(run_type="asset_triggered", events=events, run_after=at("2026-01-12T08:00:00+00:00"))
    assert plan.business_dates == (dt.date(2026, 1, 8), dt.date(2026, 1, 9))
    assert plan.plants == ("P1", "P2") and plan.late_data and plan.command == "run"


def test_arrival_derives_dates_when_any_event_leaves_them_out() -> None:
    events = [{"business_dates": ["2026-01-08"], "plants": ["P1"]}, {"plants": ["P2"]}]
    plan = arrival_plan(run_type="asset_triggered", events=events, run_after=at("2026-01-12T08:00:00+00:00"))
    assert plan.business_dates == () and plan.plants == ("P1", "P2") and plan.late_data
    everything = arrival_plan(run_type="asset_triggered", events=[{"business_dates": ["2026-01-08"]}],
                              run_after=at("2026-01-12T08:00:00+00:00"))
    assert everything.plants == ()  # an event without plants concerns every plant


def test_manual_arrival_runs_take_their_params() -> None:
    plan = arrival_plan(run_type="manual", events=[], run_after=at("2026-01-12T08:00:00+00:00"),
                        params={"business_dates": ["2026-01-09"], "plants": [], "dry_run": True})
    assert plan.business_dates == (dt.date(2026, 1, 9),) and plan.plants == () and plan.dry_run
    derived = arrival_plan(run_type="manual", run_after=at("2026-01-12T08:00:00+00:00"),
                           params={"business_dates": [], "plants": ["P3"]})
    assert derived.business_dates == () and derived.plants == ("P3",)


@pytest.mark.parametrize("extra", [
    {"business_dates": ["2026-02-30"]},
    {"business_dates": [20260109]},
    {"plants": [""]},
    {"plants": {"P1": True}},
])
def test_malformed_event_extras_are_refused(extra: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        arrival_plan(run_type="asset_triggered", events=[extra], run_after=at("2026-01-12T08:00:00+00:00"))


# ------------------------------------------------------------------ asset events and failures


def test_output_events_carry_partitions_and_rows_of_what_was_written() -> None:
    result = SimpleNamespace(
        run_id="r1", plants=["P1"], business_dates=[D], dry_run=False,
        partitions={
            "adjustments": [{"plant_id": "P1", "business_date": "2026-01-10T00:00:00", "rows": 7}],
            "postings": [],
            "variance": [{"plant_id": "P1", "count_date": dt.datetime(2026, 1, 10), "rows": 2},
                         {"plant_id": "P1", "count_date": dt.datetime(2026, 1, 9), "rows": 0}],
            "consumption": [{"plant_id": "P1", "business_date": "2026-01-10T00:00:00", "rows": 30}],
        },
    )
    events = schedule.output_events(result)
    assert sorted(events) == ["adjustments", "variance"]  # no postings appended: nothing to announce
    assert events["adjustments"] == {
        "run_id": "r1", "plants": ["P1"], "business_dates": ["2026-01-10"], "rows": 7,
        "partitions": [{"plant_id": "P1", "business_date": "2026-01-10", "rows": 7}],
    }
    assert events["variance"]["partitions"] == [{"plant_id": "P1", "count_date": "2026-01-10", "rows": 2}]
    assert schedule.output_events(SimpleNamespace(**{**vars(result), "dry_run": True})) == {}


def _flagged(error: Exception) -> Exception:
    error.transient = True  # type: ignore[attr-defined]
    return error


def _wrapped(error: type[Exception], cause: BaseException) -> Exception:
    try:
        raise error("one line") from cause
    except Exception as exc:
        return exc


@pytest.mark.parametrize(("exc", "transient"), [
    (OSError("connection reset"), True),
    (TimeoutError("read timed out"), True),
    (LockError("plant P1 is locked by run x"), True),
    (_wrapped(SourceError, ConnectionResetError("reset by peer")), True),
    (_wrapped(WarehouseError, OSError("s3: slow down")), True),
    (_wrapped(SourceError, FileNotFoundError("file replaced while read")), True),
    (_flagged(SourceError("SQL source postgresql://***@db/mes: connection refused")), True),
    (SourceError("required table items: no .csv or .parquet file"), False),
    (_wrapped(ConfigError, FileNotFoundError("backflush.toml")), False),
    (_wrapped(SourceError, PermissionError("landing/bom")), False),
    (WarehouseError("output is missing columns ['qty']"), False),
    (ValueError("--end is before --start"), False),
    (KeyError("plant_id"), False),
])
def test_only_transient_failures_are_retried(exc: BaseException, transient: bool) -> None:
    assert schedule.is_transient(exc) is transient


def test_the_schedule_module_does_not_import_airflow() -> None:
    tree = ast.parse(Path(schedule.__file__).read_text())
    imported = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(name.split(".")[0] == "airflow" for name in imported)


def test_asset_uri_is_the_dataset_folder_without_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert schedule.asset_uri("wh", "postings") == f"file://{tmp_path.resolve()}/wh/postings"  # relative: cwd
    assert schedule.asset_uri("/a b/wh/", "variance") == "file:///a%20b/wh/variance"  # asset URIs are ASCII
    assert schedule.asset_uri("S3://key:secret@bkt/x/y/?region=eu-west-1", "adjustments") == "s3://bkt/x/y/adjustments"
    assert schedule.asset_uri("hdfs://namenode:8020/wh", "postings") == "hdfs://namenode:8020/wh/postings"
