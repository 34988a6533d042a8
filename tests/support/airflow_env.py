"""Airflow for tests: a throwaway AIRFLOW_HOME with a migrated SQLite DB, and scenarios in a child process.

The pytest process never imports Airflow. `migrated_home()` writes the environment and runs
`airflow db migrate` once; `run_scenarios()` runs a list of scenarios in ONE child process (this
module's `__main__`): it loads `dags/` with `DagBag` first (so it can tell what parsing imports),
then runs `dag.test()` for each scenario and writes what happened (task instances, asset events,
XComs) as JSON. Airflow's global state (settings, ORM, in-process API server) dies with the child.

`dag.test()` always creates a manual run. To exercise scheduled, backfill and asset-triggered runs,
a scenario swaps the run it creates for the run the scheduler would create: the timetable's
DagRunInfo (logical date, data interval, run_after) and run type, plus the consumed asset events
for an asset-triggered run, exactly as `airflow backfill create` and the scheduler call
`create_dagrun`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "dags"
PYTHON = sys.executable
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


# ------------------------------------------------------------------ parent side (no airflow import)


def airflow_environment(home: Path, **extra: str) -> dict[str, str]:
    """Environment of a child process that uses a private AIRFLOW_HOME and this repo's dags/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKFLUSH"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(DAGS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
        AIRFLOW__LOGGING__LOGGING_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(extra)
    return env


def openlineage_to_file(path: Path) -> dict[str, str]:
    """Airflow settings that enable the OpenLineage provider with its file transport (a JSON event a line)."""
    transport = {"type": "file", "log_file_path": str(path), "append": True}
    return {"AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "backflush-tests",
            # the listener emits from a forked process it kills after this many seconds (default 10):
            # a loaded CI machine must not lose an event
            "AIRFLOW__OPENLINEAGE__EXECUTION_TIMEOUT": "120"}


def migrated_home(home: Path, **extra: str) -> dict[str, str]:
    """Create AIRFLOW_HOME and its SQLite metadata DB (`airflow db migrate`); the child environment."""
    home.mkdir(parents=True, exist_ok=True)
    env = airflow_environment(home, **extra)
    done = subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return env


def run_scenarios(env: Mapping[str, str], scenarios: Sequence[Mapping[str, Any]], workdir: Path,
                  *, timeout: float = 300) -> dict[str, dict[str, Any]]:
    """Run scenarios in one child process; their results by name (each has `ok` and maybe `error`)."""
    spec, out = workdir / "scenarios.json", workdir / "results.json"
    spec.write_text(json.dumps({"scenarios": list(scenarios)}, default=str))
    done = subprocess.run([PYTHON, "-m", "tests.support.airflow_env", str(spec), str(out)], env=dict(env), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    (workdir / "child.log").write_text(done.stdout + "\n" + done.stderr)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"airflow child process failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


# ------------------------------------------------------------------ child side


def _parse(bag: Any, modules_at_parse: list[str], **_: Any) -> dict[str, Any]:
    """What loading dags/ produced: import errors, and per DAG the facts the policy tests check."""
    dags = {}
    for dag_id, dag in sorted(bag.dags.items()):
        tasks = {}
        for t in dag.tasks:
            partial = getattr(t, "partial_kwargs", {})
            tasks[t.task_id] = {
                "retries": t.retries,
                "pool": t.pool,
                "mapped": type(t).__name__ == "MappedOperator" or bool(getattr(t, "is_mapped", False)),
                "map_index_template": partial.get("map_index_template", getattr(t, "map_index_template", None)),
                "outlets": [type(o).__name__ + ":" + o.name for o in (t.outlets or [])],
                "inlets": [type(o).__name__ + ":" + o.name for o in (t.inlets or [])],
                "operator": type(t).__name__ if not partial else str(getattr(t, "operator_class", "")),
            }
        dags[dag_id] = {
            "fileloc": dag.fileloc,
            "tags": sorted(dag.tags),
            "owner": dag.owner,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "doc_md": dag.doc_md or "",
            "timetable": type(dag.timetable).__name__,
            "timetable_cron": getattr(dag.timetable, "expression", None),
            "timetable_timezone": str(getattr(dag.timetable, "timezone", None)),
            "params": {k: dag.params.get_param(k).resolve(suppress_exception=True) for k in dag.params},
            "tasks": tasks,
        }
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
            "modules_at_parse": modules_at_parse, "dags": dags}


def _params(bag: Any, dag_id: str, values: Mapping[str, Any], **_: Any) -> dict[str, Any]:
    """Validate param values the way a trigger does; the error text if they are refused."""
    import copy

    params = copy.deepcopy(bag.get_dag(dag_id).params)
    try:
        for key, value in values.items():
            params[key] = value
        return {"valid": True, "resolved": params.validate()}
    except Exception as exc:  # ParamValidationError
        return {"valid": False, "message": f"{type(exc).__name__}: {exc}"}


def _backfill_dry_run(bag: Any, dag_id: str, from_date: str, to_date: str, **_: Any) -> dict[str, Any]:
    """The runs `airflow backfill create --dry-run --from-date A --to-date B` would create, and their dates."""
    from airflow._shared.timezones.timezone import parse as parsedate  # the CLI parses dates so
    from airflow.models.backfill import ReprocessBehavior, _do_dry_run
    from airflow.utils.session import create_session

    from pipeline import schedule

    _sync_dags()
    with create_session() as session:
        infos = list(_do_dry_run(dag_id=dag_id, from_date=parsedate(from_date), to_date=parsedate(to_date),
                                 reverse=False, reprocess_behavior=ReprocessBehavior.COMPLETED, session=session))
    return {
        "logical_dates": [i.logical_date.isoformat() for i in infos],
        "data_intervals": [[i.data_interval.start.isoformat(), i.data_interval.end.isoformat()] for i in infos],
        "business_dates": [
            schedule.business_date_for_run(run_type="backfill", logical_date=i.logical_date,
                                           run_after=i.run_after).isoformat()
            for i in infos
        ],
    }


def _sync_dags() -> None:
    """Write the dags folder's DAGs (and their assets) to the metadata DB, as dag.test() does."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        sync_bag_to_db(bag, bundle.name, bundle.version)


def _register_events(asset_name: str, extras: Sequence[Mapping[str, Any]]) -> list[int]:
    """Record asset events as `POST /api/v2/assets/events` does (AssetManager.register_asset_change)."""
    from airflow.assets.manager import AssetManager
    from airflow.models.asset import AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    _sync_dags()
    ids = []
    with create_session() as session:
        asset = session.scalar(select(AssetModel).where(AssetModel.name == asset_name))
        if asset is None:
            raise LookupError(f"asset {asset_name} is not registered")
        for extra in extras:
            event = AssetManager().register_asset_change(asset=asset, extra={**extra, "from_rest_api": True},
                                                         source_is_api=True, session=session)
            session.flush()
            ids.append(event.id)
    return ids


def _run_factory(run_type: str | None, event_ids: Sequence[int]) -> Any:
    """A stand-in for dag.test()'s get_or_create_dagrun that creates the run the scheduler would."""
    import airflow.models.dagrun as dagrun_module
    from airflow.models.asset import AssetEvent
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import select

    original = dagrun_module.get_or_create_dagrun
    if run_type in (None, "manual"):
        return original

    def create(*, dag: Any, logical_date: Any, run_after: Any, conf: Any, session: Any, **_: Any) -> Any:
        kind = DagRunType(run_type)
        if kind == DagRunType.ASSET_TRIGGERED:
            logical, interval, after, by = None, None, run_after, DagRunTriggeredByType.ASSET
        else:  # scheduled or backfill: the timetable's own run for that logical date
            info = next(iter(dag.iter_dagrun_infos_between(logical_date, logical_date)))
            logical, interval, after = info.logical_date, info.data_interval, info.run_after
            by = DagRunTriggeredByType.BACKFILL if kind == DagRunType.BACKFILL_JOB else DagRunTriggeredByType.TIMETABLE
            DagRun = dagrun_module.DagRun
            stale = session.scalar(select(DagRun).where(DagRun.dag_id == dag.dag_id, DagRun.logical_date == logical))
            if stale is not None:  # a re-run replaces the earlier one, as dag.test() itself does
                session.delete(stale)
                session.commit()
        run = dag.create_dagrun(
            run_id=dagrun_module.DagRun.generate_run_id(run_type=kind, logical_date=logical, run_after=after),
            logical_date=logical, data_interval=interval, run_after=after, conf=conf, run_type=kind,
            triggered_by=by, state=DagRunState.RUNNING, start_date=after, session=session,
        )
        run.consumed_asset_events.extend(session.get(AssetEvent, i) for i in event_ids)
        session.commit()
        return run

    return create


def _dag_test(bag: Any, dag_id: str, logical_date: str | None = None, conf: Mapping[str, Any] | None = None,
              env: Mapping[str, str] | None = None, run_type: str | None = None,
              events: Sequence[Mapping[str, Any]] = (), event_asset: str = "backflush.landing.completions",
              **_: Any) -> dict[str, Any]:
    """dag.test() of one DAG as a given run type; what its tasks did and which asset events it emitted."""
    import datetime as dt
    from unittest import mock

    import airflow.models.dagrun as dagrun_module
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.asset import AssetEvent
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:  # run ids repeat when a run is re-run: tell events apart by id
        last_event = session.scalar(select(func.max(AssetEvent.id))) or 0
    os.environ.update(env or {})
    try:
        event_ids = _register_events(event_asset, events) if events else []
        logical = dt.datetime.fromisoformat(logical_date) if logical_date else None
        # a freshly parsed DAG each time: in-process runs write a run's conf into the DAG's params
        dag = DagBag(dag_folder=str(DAGS)).get_dag(dag_id)
        with mock.patch.object(dagrun_module, "get_or_create_dagrun", _run_factory(run_type, event_ids)):
            run = dag.test(logical_date=logical, run_conf=dict(conf or {}))
    finally:
        for key in env or {}:
            os.environ.pop(key, None)
    with create_session() as session:
        tis = sorted(((ti.task_id, ti.map_index, ti.rendered_map_index, str(ti.state))
                      for ti in run.get_task_instances(session=session)), key=lambda t: (t[0], t[1]))
        emitted = [{"asset": e.asset.name, "uri": e.asset.uri, "extra": e.extra, "map_index": e.source_map_index}
                   for e in session.scalars(select(AssetEvent).where(AssetEvent.source_dag_id == dag_id,
                                                                     AssetEvent.source_run_id == run.run_id,
                                                                     AssetEvent.id > last_event))]
        xcoms: dict[str, list[Any]] = {}
        for row in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, key="return_value")):
            xcoms.setdefault(row.task_id, []).append([row.map_index, XComModel.deserialize_value(row)])
    return {
        "state": str(run.state), "run_id": run.run_id, "run_type": str(run.run_type),
        "logical_date": run.logical_date.isoformat() if run.logical_date else None,
        "task_instances": tis, "asset_events": emitted,
        "xcoms": {k: [v for _, v in sorted(rows, key=lambda r: r[0])] for k, rows in xcoms.items()},
    }


def _lineage(bag: Any, warehouses: Sequence[str], **_: Any) -> dict[str, Any]:
    """Per warehouse, each output dataset's asset (as the DAG builds it) and the OpenLineage dataset
    the OpenLineage provider translates it into (None: the provider cannot map its URI)."""
    import importlib.util

    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    from pipeline.schedule import OUTPUT_DATASETS

    spec = importlib.util.spec_from_file_location("backflush_dag_module", DAGS / "backflush.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out: dict[str, Any] = {}
    for warehouse in warehouses:
        for dataset in OUTPUT_DATASETS:
            asset = module.output_asset(dataset, warehouse)
            ol = translate_airflow_asset(asset, None)
            out.setdefault(warehouse, {})[dataset] = {
                "name": asset.name, "uri": asset.uri, "normalized_uri": asset.normalized_uri,
                "openlineage": None if ol is None else {"namespace": ol.namespace, "name": ol.name},
            }
    return {"assets": out}


def _move(bag: Any, src: str, dst: str, **_: Any) -> dict[str, Any]:
    """A landing drop: a finished file appears in the landing folder at once (rename, as MES drops do)."""
    target = Path(dst) / Path(src).name
    os.replace(src, target)
    return {"path": str(target)}


SCENARIOS = {"move": _move, "parse": _parse, "lineage": _lineage, "params": _params, "backfill_dry_run": _backfill_dry_run,
             "dag_test": _dag_test}


def _main(spec_path: str, out_path: str) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    heavy = ("pandas", "pyarrow", "numpy", "pipeline", "pandera")
    modules_at_parse = sorted(m for m in heavy if m in sys.modules)
    results: dict[str, Any] = {}
    for scenario in json.loads(Path(spec_path).read_text())["scenarios"]:
        name, kind = scenario["name"], scenario["kind"]
        started = time.monotonic()
        try:
            kwargs = {k: v for k, v in scenario.items() if k not in ("name", "kind")}
            results[name] = {"ok": True, **SCENARIOS[kind](bag, modules_at_parse=modules_at_parse, **kwargs)}
        except Exception:
            results[name] = {"ok": False, "error": traceback.format_exc()}
        results[name]["seconds"] = round(time.monotonic() - started, 2)
        Path(out_path).write_text(json.dumps(results, default=str))


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
