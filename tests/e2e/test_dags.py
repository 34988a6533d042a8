"""The Airflow DAGs: they load, follow the policy, and produce what the CLI produces.

Airflow runs in one child process per module (tests.airflow_env): this process never imports it.
The child loads dags/, then runs dag.test() for a nightly run, a manual run with params, two
backfill runs of one date, and an on-arrival run after each of two simulated landing drops.
"""

from __future__ import annotations

import ast
import csv
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from pipeline import job
from pipeline.config import load_config
from pipeline.intake import accept, scan
from pipeline.store.warehouse import Warehouse
from pipeline.tools.generate import generate_landing
from tests.support.airflow_env import DAGS, ROOT, migrated_home, openlineage_to_file, run_scenarios

START = dt.date(2026, 1, 5)
DAYS = 14
NIGHTLY_DATE = "2026-01-10"
BACKFILL_DATE = "2026-01-06"
VOLATILE = ["run_id", "posted_at", "posting_id", "as_of", "released_by_run", "released_at"]  # differ between any two runs
COMPARED = ["consumption", "adjustments", "postings", "variance", "quarantine", "bom_accuracy", "stock_exceptions",
            "bom_suggestions"]
DAG_IDS = {"backflush_nightly", "backflush_on_arrival"}
OUTPUTS = ("adjustments", "postings", "variance")
SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"
# warehouse -> (OpenLineage namespace, name of the dataset folder without the dataset), worked out
# from the OpenLineage naming spec: a local file is namespace "file" with its absolute path as name;
# an S3 object is namespace "s3://<bucket>" with its key (no leading slash) as name.
LINEAGE_WAREHOUSES = {
    "/srv/backflush/warehouse": ("file", "/srv/backflush/warehouse/"),
    "file:///srv/backflush/warehouse/": ("file", "/srv/backflush/warehouse/"),
    f"s3://AKIAEXAMPLE:{SECRET}@plant-data/backflush/warehouse?endpoint_override=127.0.0.1:9000&scheme=http":
        ("s3://plant-data", "backflush/warehouse/"),
    "s3://plant-data": ("s3://plant-data", ""),
}


# ------------------------------------------------------------------ fixtures


def write_config(path: Path, landing: Path, warehouse: Path, **extra: object) -> Path:
    lines = [f'landing = "{landing}"', f'warehouse = "{warehouse}"']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def read(warehouse: Path, dataset: str) -> pd.DataFrame:
    """A dataset without run-specific columns, in a canonical row order."""
    frame = Warehouse(str(warehouse)).read(dataset)
    frame = frame.drop(columns=[c for c in VOLATILE if c in frame.columns])
    return frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)


def runs(warehouse: Path) -> pd.DataFrame:
    frame = Warehouse(str(warehouse)).read("runs")
    frame["plant"] = frame["plants"].map(lambda p: ",".join(p))
    frame["dates"] = frame["business_dates"].map(lambda ds: [pd.Timestamp(d).date().isoformat() for d in ds])
    return frame.sort_values("started_at").reset_index(drop=True)


def postings_of(warehouse: Path, run_ids: list[str]) -> pd.DataFrame:
    postings = Warehouse(str(warehouse)).read("postings")
    return postings[postings["run_id"].isin(run_ids)]


def drop_file(landing: Path, name: str, rows: list[dict[str, object]]) -> Path:
    """A completions file as the MES drops it (written elsewhere, moved in by a scenario)."""
    path = landing.parent / "outbox" / name
    path.parent.mkdir(exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def corrected(completions: pd.DataFrame, adjustments: pd.DataFrame, plant: str, day: str, *,
              new_id: str | None = None, more: float = 5.0) -> dict[str, object]:
    """A re-sent (or new, with `new_id`) completion of an item that was posted at plant/day."""
    posted = adjustments[(adjustments["plant_id"] == plant) & (adjustments["business_date"] == pd.Timestamp(day))
                         & (adjustments["kind"] == "production_receipt")]
    rows = completions[(completions["plant_id"] == plant) & (completions["business_date"] == pd.Timestamp(day))]
    rows = rows.merge(posted[["location_id", "item_id"]].drop_duplicates(), on=["location_id", "item_id"])
    row = rows.sort_values("completion_id").iloc[0]
    return {
        "completion_id": new_id or row["completion_id"], "plant_id": plant, "location_id": row["location_id"],
        "item_id": row["item_id"], "qty_good": float(row["qty_good"]) + more, "qty_scrap": float(row["qty_scrap"]),
        "completed_at": row["completed_at"].isoformat(),
        "recorded_at": (row["recorded_at"] + pd.Timedelta(days=3)).isoformat(), "order_id": "",
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Demo landing data, one warehouse per scenario, the CLI's run, and every Airflow scenario's result."""
    root = tmp_path_factory.mktemp("dags")
    landing = root / "landing"
    generate_landing(landing, items=40, completions=2000, days=DAYS, seed=42, start=START, bad_rows=True,
                     file_format="csv")
    wh = {name: root / f"wh-{name}" for name in ("nightly", "cli", "backfill", "arrival")}
    cfg = {name: write_config(root / f"{name}.toml", landing, wh[name]) for name in ("nightly", "backfill")}

    # The on-arrival warehouse has history: every date loaded, then two drops (a look-back long enough
    # to reach the demo dates from today, so "today + late data" finds them whenever the test runs).
    arrival_landing = root / "arrival" / "landing"
    generate_landing(arrival_landing, items=40, completions=2000, days=DAYS, seed=42, start=START,
                     bad_rows=True, file_format="csv")
    lookback = (dt.date.today() - START).days + 30
    cfg["arrival"] = write_config(root / "arrival.toml", arrival_landing, wh["arrival"], lookback_days=lookback)
    arrival_config = load_config(cfg["arrival"])
    job.backfill(arrival_config, START, START + dt.timedelta(days=DAYS - 1))
    inputs = accept.load_inputs(scan.read_landing_files(arrival_config.landing))
    adjustments = Warehouse(str(wh["arrival"])).read("adjustments")
    drop1_rows = [
        corrected(inputs.completions, adjustments, "P1", "2026-01-08"),
        corrected(inputs.completions, adjustments, "P2", "2026-01-09", new_id="DROP1-P2-NEW"),
    ]
    drop1 = drop_file(arrival_landing, "drop-1.csv", drop1_rows)
    drop2 = drop_file(arrival_landing, "drop-2.csv", [
        corrected(inputs.completions, adjustments, "P3", "2026-01-11", more=3.0),
    ])
    history = runs(wh["arrival"])

    # Airflow, in one child process, in dependency order
    # the OpenLineage provider enabled, writing its events to a file, as a deployment would send them
    env = migrated_home(root / "airflow-home", **openlineage_to_file(root / "openlineage.jsonl"))
    nightly_env = {"BACKFLUSH_CONFIG": str(cfg["nightly"])}
    arrival_env = {"AIRFLOW_VAR_BACKFLUSH_CONFIG": str(cfg["arrival"])}  # the Variable route
    logical = f"{NIGHTLY_DATE}T00:00:00+00:00"
    scenarios = [
        {"name": "parse", "kind": "parse"},
        {"name": "lineage", "kind": "lineage", "warehouses": list(LINEAGE_WAREHOUSES)},
        {"name": "params_ok", "kind": "params", "dag_id": "backflush_nightly",
         "values": {"business_date": "2026-01-07", "plants": ["P2"], "dry_run": True}},
        {"name": "params_bad_date", "kind": "params", "dag_id": "backflush_nightly",
         "values": {"business_date": "2026-13-45"}},
        {"name": "params_bad_plants", "kind": "params", "dag_id": "backflush_on_arrival",
         "values": {"plants": "P1"}},
        {"name": "nightly", "kind": "dag_test", "dag_id": "backflush_nightly", "run_type": "scheduled",
         "logical_date": logical, "env": nightly_env},
        {"name": "bad_config", "kind": "dag_test", "dag_id": "backflush_nightly", "logical_date": logical,
         "env": {"BACKFLUSH_CONFIG": str(root / "missing.toml")}},
        {"name": "manual", "kind": "dag_test", "dag_id": "backflush_nightly", "env": nightly_env,
         "conf": {"business_date": "2026-01-07", "plants": ["P2"], "dry_run": True}},
        {"name": "backfill_dry_run", "kind": "backfill_dry_run", "dag_id": "backflush_nightly",
         "from_date": "2026-01-05", "to_date": "2026-01-09"},
        {"name": "backfill_1", "kind": "dag_test", "dag_id": "backflush_nightly", "run_type": "backfill",
         "logical_date": f"{BACKFILL_DATE}T00:00:00+00:00", "env": {"BACKFLUSH_CONFIG": str(cfg["backfill"])}},
        {"name": "backfill_2", "kind": "dag_test", "dag_id": "backflush_nightly", "run_type": "backfill",
         "logical_date": f"{BACKFILL_DATE}T00:00:00+00:00", "env": {"BACKFLUSH_CONFIG": str(cfg["backfill"])}},
        {"name": "drop_1", "kind": "move", "src": str(drop1), "dst": str(arrival_landing / "completions")},
        {"name": "arrival_named", "kind": "dag_test", "dag_id": "backflush_on_arrival",
         "run_type": "asset_triggered", "env": arrival_env,
         "events": [{"business_dates": ["2026-01-08"], "plants": ["P1", "P2"]},
                    {"business_dates": ["2026-01-09"], "plants": ["P2"]}]},
        {"name": "nightly_after", "kind": "dag_test", "dag_id": "backflush_nightly", "env": arrival_env,
         "logical_date": "2026-01-10T00:00:00+00:00"},  # manual: interval [01-09, 01-10) -> 2026-01-09
        {"name": "drop_2", "kind": "move", "src": str(drop2), "dst": str(arrival_landing / "completions")},
        {"name": "arrival_derived", "kind": "dag_test", "dag_id": "backflush_on_arrival",
         "run_type": "asset_triggered", "env": arrival_env, "events": [{"source": "mes"}]},
    ]
    results = run_scenarios(env, scenarios, root)

    # the CLI, for the same date, into its own warehouse
    cli = Path(sys.executable).with_name("backflush")
    done = subprocess.run([str(cli), "-q", "run", "--landing", str(landing), "--warehouse", str(wh["cli"]),
                           "--date", NIGHTLY_DATE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return {"root": root, "landing": landing, "wh": wh, "results": results, "history": history,
            "drop1": drop1_rows, "openlineage": root / "openlineage.jsonl"}


def scenario(world: dict[str, Any], name: str) -> dict[str, Any]:
    result = world["results"].get(name)
    assert result is not None, f"scenario {name} did not run (see {world['root']}/child.log)"
    assert result["ok"], result.get("error")
    return result


def succeeded(result: dict[str, Any]) -> None:
    failed = [ti for ti in result["task_instances"] if ti[3] not in ("success", "skipped")]
    assert result["state"] == "success" and not failed, f"run {result['state']}, tasks not done: {failed}"


def mapped(result: dict[str, Any], task_id: str) -> list[str]:
    return [ti[2] for ti in result["task_instances"] if ti[0] == task_id]


# ------------------------------------------------------------------ loading and policy


def test_dag_folder_loads_without_import_errors(world: dict[str, Any]) -> None:
    parsed = scenario(world, "parse")
    assert parsed["import_errors"] == {}
    assert set(parsed["dags"]) == DAG_IDS


def test_parsing_the_dags_imports_no_business_logic(world: dict[str, Any]) -> None:
    """DAG files import only Airflow and the standard library at top level; the pipeline loads in tasks."""
    assert scenario(world, "parse")["modules_at_parse"] == []
    allowed = ("__future__", "airflow.sdk", "datetime", "logging", "collections", "contextlib", "typing", "os")
    for path in sorted(DAGS.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                for name in names:
                    assert name.startswith(allowed), f"{path.name}: top-level import of {name}"


def test_every_dag_follows_the_policy(world: dict[str, Any]) -> None:
    for dag_id, info in scenario(world, "parse")["dags"].items():
        assert info["tags"] and "backflush" in info["tags"], dag_id
        assert info["owner"] == "data-engineering", dag_id
        assert info["catchup"] is False and info["max_active_runs"] == 1, dag_id
        assert len(info["doc_md"]) > 100, f"{dag_id}: document the DAG in its docstring"
        for task_id, task in info["tasks"].items():
            assert task["retries"] >= 1, f"{dag_id}.{task_id} has no retries"
            if task_id in ("plants_to_process", "process_plant"):  # they read the sources
                assert task["pool"] == "backflush_sources", f"{dag_id}.{task_id} is not throttled"
            if task["mapped"]:
                assert "plant_id" in (task["map_index_template"] or ""), f"{dag_id}.{task_id}: name instances"
        assert info["tasks"]["process_plant"]["outlets"] == ["AssetAlias:backflush.outputs"]


def test_schedules(world: dict[str, Any]) -> None:
    dags = scenario(world, "parse")["dags"]
    nightly, arrival = dags["backflush_nightly"], dags["backflush_on_arrival"]
    assert nightly["timetable"] == "CronDataIntervalTimetable"
    assert (nightly["timetable_cron"], nightly["timetable_timezone"]) == ("0 0 * * *", "UTC")
    assert nightly["params"] == {"business_date": None, "plants": [], "dry_run": False}
    assert arrival["timetable"] == "AssetTriggeredTimetable"
    assert arrival["params"] == {"business_dates": [], "plants": [], "dry_run": False}


def test_params_are_validated(world: dict[str, Any]) -> None:
    assert scenario(world, "params_ok")["valid"]
    assert not scenario(world, "params_bad_date")["valid"]
    assert not scenario(world, "params_bad_plants")["valid"]


# ------------------------------------------------------------------ nightly


def test_nightly_run_writes_what_the_cli_writes(world: dict[str, Any]) -> None:
    succeeded(scenario(world, "nightly"))  # without the pool backflush_sources: dag.test() ignores pools
    for dataset in COMPARED:
        dag_rows, cli_rows = read(world["wh"]["nightly"], dataset), read(world["wh"]["cli"], dataset)
        assert len(dag_rows) > 0 or dataset in ("bom_accuracy", "stock_exceptions", "bom_suggestions"), \
            f"{dataset} is empty"
        pd.testing.assert_frame_equal(dag_rows, cli_rows, obj=dataset)
    dag_runs = runs(world["wh"]["nightly"])
    assert sorted(dag_runs["plant"]) == ["P1", "P2", "P3"]  # one run per plant task
    # the first run on a fresh warehouse also processes the look-back dates holding data (issue 12)
    dates = {d for ds in dag_runs["dates"] for d in ds}
    assert dates == {d for ds in runs(world["wh"]["cli"])["dates"] for d in ds}
    look_back = {(dt.date.fromisoformat(NIGHTLY_DATE) - dt.timedelta(days=i)).isoformat() for i in range(1, 8)}
    assert NIGHTLY_DATE in dates and dates - {NIGHTLY_DATE} and dates - {NIGHTLY_DATE} <= look_back


def test_nightly_fans_out_one_named_task_per_plant(world: dict[str, Any]) -> None:
    result = scenario(world, "nightly")
    assert result["run_type"] == "scheduled" and result["logical_date"].startswith(NIGHTLY_DATE)
    assert mapped(result, "process_plant") == ["P1", "P2", "P3"]
    assert mapped(result, "wait_for_day_end") == ["P1", "P2", "P3"]
    plan = result["xcoms"]["plan_nightly"][0]
    assert plan["business_dates"] == [NIGHTLY_DATE] and plan["late_data"] and plan["wait_for_day_end"]
    zones = {p["plant_id"]: p for p in result["xcoms"]["plants_to_process"][0]}
    # each plant starts once the date has ended in its own zone, plus the grace period
    assert zones["P1"]["ready_at"] == "2026-01-10T23:30:00+00:00"  # Europe/Berlin, UTC+1
    assert zones["P2"]["ready_at"] == "2026-01-11T06:30:00+00:00"  # America/Chicago, UTC-6
    assert zones["P3"]["ready_at"] == "2026-01-10T16:30:00+00:00"  # Asia/Shanghai, UTC+8


def test_nightly_announces_partitions_and_rows_as_asset_events(world: dict[str, Any]) -> None:
    events = scenario(world, "nightly")["asset_events"]
    by_asset: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_asset.setdefault(event["asset"], []).append(event["extra"])
    assert set(by_asset) == {"backflush.adjustments", "backflush.postings", "backflush.variance"}
    for asset, extras in by_asset.items():
        dataset = asset.removeprefix("backflush.")
        assert sorted(e["plants"][0] for e in extras) == ["P1", "P2", "P3"]
        table = Warehouse(str(world["wh"]["nightly"])).read(dataset)
        processed = runs(world["wh"]["nightly"]).set_index("plant")["dates"]
        for extra in extras:
            plant = extra["plants"][0]
            assert extra["business_dates"] == processed[plant]  # the night and its look-back (a first run)
            assert NIGHTLY_DATE in extra["business_dates"]
            assert extra["rows"] == sum(p["rows"] for p in extra["partitions"]) > 0
            assert all(p["plant_id"] == plant for p in extra["partitions"])
            assert extra["rows"] == int((table["plant_id"] == plant).sum()), f"{asset} {plant}"


def test_output_assets_are_the_dataset_folders_of_the_warehouse(world: dict[str, Any]) -> None:
    events = scenario(world, "nightly")["asset_events"]
    folder = world["wh"]["nightly"].resolve()
    uris = {e["asset"]: e["uri"] for e in events}
    assert uris == {f"backflush.{d}": f"file://{folder}/{d}" for d in OUTPUTS}
    assert all(Path(uri.removeprefix("file://")).is_dir() for uri in uris.values())


def test_openlineage_provider_maps_output_assets_to_datasets(world: dict[str, Any]) -> None:
    """Through the provider's own translation (the one its listener applies to asset events)."""
    assets = scenario(world, "lineage")["assets"]
    for warehouse, (namespace, prefix) in LINEAGE_WAREHOUSES.items():
        for dataset in OUTPUTS:
            asset = assets[warehouse][dataset]
            assert asset["name"] == f"backflush.{dataset}"
            assert asset["normalized_uri"] == asset["uri"], "Airflow cannot normalise the URI"
            assert asset["openlineage"] == {"namespace": namespace, "name": prefix + dataset}, warehouse
            assert SECRET not in asset["uri"] and "endpoint_override" not in asset["uri"]


def test_nightly_run_emits_openlineage_events_with_the_output_datasets(world: dict[str, Any]) -> None:
    """The provider's listener, enabled with a file transport, reports each plant task's outputs."""
    run_id = scenario(world, "nightly")["run_id"]
    events = [json.loads(line) for line in world["openlineage"].read_text().splitlines() if line.strip()]
    done = [e for e in events if e["eventType"] == "COMPLETE"
            and e["job"]["name"] == "backflush_nightly.process_plant"
            and e["run"]["facets"]["airflow"]["dagRun"]["run_id"] == run_id]
    assert len(done) == 3, "one COMPLETE event per plant task"  # P1, P2, P3
    folder = str(world["wh"]["nightly"].resolve())
    for event in done:
        outputs = sorted((o["namespace"], o["name"]) for o in event["outputs"])
        assert outputs == [("file", f"{folder}/{d}") for d in OUTPUTS]


def test_a_contract_violation_fails_at_once_without_retries(world: dict[str, Any]) -> None:
    """A config file that does not exist is a ConfigError: AirflowFailException, not up_for_retry."""
    result = scenario(world, "bad_config")
    assert result["state"] == "failed"
    states = {ti[0]: ti[3] for ti in result["task_instances"]}
    assert states["plan_nightly"] == "success"
    assert states["plants_to_process"] == "failed"  # with retries=3 left: failed at once
    assert states["process_plant"] == "upstream_failed"


def test_manual_run_params_pick_date_plants_and_dry_run(world: dict[str, Any]) -> None:
    result = scenario(world, "manual")
    succeeded(result)
    assert result["logical_date"] is None
    assert mapped(result, "process_plant") == ["P2"]
    (summary,) = result["xcoms"]["process_plant"]
    assert summary["dry_run"] and summary["business_dates"] == ["2026-01-07"] and summary["announced"] == []
    assert result["asset_events"] == []  # a dry run writes nothing and announces nothing
    assert len(runs(world["wh"]["nightly"])) == 3  # only the scheduled run's three plant runs


# ------------------------------------------------------------------ backfill


def test_backfill_range_maps_to_exactly_its_business_dates(world: dict[str, Any]) -> None:
    """`airflow backfill create --from-date 2026-01-05 --to-date 2026-01-09` -> business dates 5..9."""
    dry = scenario(world, "backfill_dry_run")
    assert dry["business_dates"] == [f"2026-01-0{d}" for d in range(5, 10)]
    assert dry["data_intervals"][0] == ["2026-01-05T00:00:00+00:00", "2026-01-06T00:00:00+00:00"]


def test_backfill_run_processes_its_date_and_a_rerun_posts_nothing(world: dict[str, Any]) -> None:
    first, second = scenario(world, "backfill_1"), scenario(world, "backfill_2")
    succeeded(first)
    succeeded(second)
    assert first["run_type"] == "backfill"
    history = runs(world["wh"]["backfill"])
    assert len(history) == 6 and set(history["command"]) == {"backfill"}
    assert all(d == [BACKFILL_DATE] for d in history["dates"])  # no late-data dates in a backfill
    first_ids = [s["run_id"] for s in first["xcoms"]["process_plant"]]
    second_ids = [s["run_id"] for s in second["xcoms"]["process_plant"]]
    assert len(postings_of(world["wh"]["backfill"], first_ids)) > 0
    assert len(postings_of(world["wh"]["backfill"], second_ids)) == 0
    announced = {e["asset"] for e in second["asset_events"]}
    assert "backflush.adjustments" in announced and "backflush.postings" not in announced


# ------------------------------------------------------------------ on arrival


def test_arrival_processes_the_dates_the_events_name(world: dict[str, Any]) -> None:
    result = scenario(world, "arrival_named")
    succeeded(result)
    assert result["run_type"] == "asset_triggered" and result["logical_date"] is None
    assert mapped(result, "process_plant") == ["P1", "P2"]
    summaries = {s["plant_id"]: s for s in result["xcoms"]["process_plant"]}
    assert summaries["P1"]["business_dates"] == ["2026-01-08", "2026-01-09"]  # union of both events
    postings = postings_of(world["wh"]["arrival"], [s["run_id"] for s in summaries.values()])
    touched = {(p, d.date().isoformat()) for p, d in zip(postings["plant_id"], postings["business_date"],
                                                         strict=True)}
    assert touched == {("P1", "2026-01-08"), ("P2", "2026-01-09")}  # only what the drop changed
    receipts = postings[postings["kind"] == "production_receipt"].groupby("plant_id")["qty_delta"].sum()
    p2_new = world["drop1"][1]["qty_good"]  # P1's completion was corrected by +5, P2's is new
    assert receipts.to_dict() == {"P1": 5.0, "P2": p2_new}


def test_nightly_after_arrival_posts_nothing_new(world: dict[str, Any]) -> None:
    result = scenario(world, "nightly_after")
    succeeded(result)
    summaries = result["xcoms"]["process_plant"]
    assert [s["business_dates"] for s in summaries] == [["2026-01-09"]] * 3  # nothing late left either
    assert postings_of(world["wh"]["arrival"], [s["run_id"] for s in summaries]).empty
    assert "backflush.postings" not in {e["asset"] for e in result["asset_events"]}


def test_arrival_without_dates_derives_them_from_changed_data(world: dict[str, Any]) -> None:
    result = scenario(world, "arrival_derived")
    succeeded(result)
    summaries = {s["plant_id"]: s for s in result["xcoms"]["process_plant"]}
    assert sorted(summaries) == ["P1", "P2", "P3"]
    as_of = dt.datetime.fromisoformat(result["xcoms"]["plan_arrival"][0]["as_of"])
    zones = {"P1": "Europe/Berlin", "P2": "America/Chicago", "P3": "Asia/Shanghai"}
    today = {p: as_of.astimezone(ZoneInfo(z)).date().isoformat() for p, z in zones.items()}  # each plant's
    assert summaries["P3"]["business_dates"] == ["2026-01-11", today["P3"]]  # the drop's date, found
    assert summaries["P1"]["business_dates"] == [today["P1"]]  # nothing changed at P1 and P2
    postings = postings_of(world["wh"]["arrival"], [s["run_id"] for s in summaries.values()])
    assert set(postings["plant_id"]) == {"P3"}
    assert {d.date().isoformat() for d in postings["business_date"]} == {"2026-01-11"}


# ------------------------------------------------------------------ plants in separate processes


PLANT_TASK = """
import datetime as dt, sys
from pipeline import job, schedule
from pipeline.config import load_config

config_path, plant, zone = sys.argv[1:4]
for day in ("2026-01-09", "2026-01-10"):  # what process_plant runs for a scheduled nightly run
    logical = dt.datetime.fromisoformat(day + "T00:00:00+00:00")
    plan = schedule.nightly_plan(run_type="scheduled", logical_date=logical,
                                 run_after=logical + dt.timedelta(days=1), params={})
    job.run_dates(load_config(config_path), plan.dates_for(zone), plants=[plant], command=plan.command,
                  late_data=plan.late_data, dry_run=plan.dry_run)
"""


def test_plant_tasks_in_separate_processes_match_one_process(tmp_path: Path, world: dict[str, Any]) -> None:
    landing = world["landing"]
    shared = write_config(tmp_path / "shared.toml", landing, tmp_path / "wh-shared")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, "-c", PLANT_TASK, str(shared), plant, zone], env=env,
                                stderr=subprocess.PIPE, text=True)
               for plant, zone in (("P1", "Europe/Berlin"), ("P2", "America/Chicago"))]
    deadline = time.monotonic() + 120
    for worker in workers:
        _, err = worker.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert worker.returncode == 0, err[-2000:]

    one = load_config(write_config(tmp_path / "one.toml", landing, tmp_path / "wh-one"))
    for day in (dt.date(2026, 1, 9), dt.date(2026, 1, 10)):
        job.run_dates(one, [day], plants=["P1", "P2"])
    for dataset in COMPARED:
        pd.testing.assert_frame_equal(read(tmp_path / "wh-shared", dataset), read(tmp_path / "wh-one", dataset),
                                      obj=dataset)
    assert sorted(runs(tmp_path / "wh-shared")["plant"]) == ["P1", "P1", "P2", "P2"]
