"""The run result: what a run did, for the CLI summary, the DAG's XCom and the `runs` dataset."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from dataclasses import dataclass, field

import pandas as pd

from pipeline import __version__
from pipeline.contract.inputs import INPUT_TABLES
from pipeline.domain import error_queue, variance
from pipeline.stages.context import RunContext
from pipeline.stages.counts import CountTotals
from pipeline.stages.daily import DailyTotals
from pipeline.stages.read import RunInputs

log = logging.getLogger("backflush")


def runs_row(result: RunResult, fingerprints: pd.DataFrame, watermark: pd.Timestamp | None,
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
            "inputs_digest": [result.inputs_digest],
        }
    )


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
    unchanged_since: str | None = None  # an unchanged re-run (`pipeline.stages.rerun`): the run it matched
    inputs_digest: str | None = None  # runs.inputs_digest (`pipeline.stages.rerun`)


def new_run_id(now: pd.Timestamp) -> str:
    """Sortable and unique: UTC start time plus a random suffix."""
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:8]


def summarise_run(run: RunContext, run_inputs: RunInputs, rejected: pd.DataFrame, explode_rejects: pd.DataFrame,
                  daily: DailyTotals, counts: CountTotals, carried: pd.DataFrame,
                  queue: error_queue.Plan) -> RunResult:
    """What the run did, from the outputs it staged (the runs row is staged by `stage_runs_row`)."""
    inputs = run_inputs.inputs
    result = RunResult(
        run_id=run.run_id,
        command=run.command,
        status="ok",
        requested_dates=run.requested,
        business_dates=sorted({d.date() for d in run.scope["business_date"]}),
        plants=run.plants,
        rows_read={t: s.read for t, s in inputs.stats.items()},
        rows_accepted={t: s.accepted - int((explode_rejects["table"] == t).sum()) for t, s in inputs.stats.items()},
        rows_quarantined={t: int((rejected["table"] == t).sum()) for t in INPUT_TABLES},
        rows_superseded={t: s.superseded for t, s in inputs.stats.items()},
        started_at=run.started,
        finished_at=pd.Timestamp.now(tz="UTC").floor("us"),
        inputs_digest=run_inputs.inputs_digest,
    )
    result.quarantine_by_code = {str(k): int(v) for k, v in rejected["error_code"].value_counts().sort_index().items()}
    result.adjustments_by_kind = daily.adjustments_by_kind
    result.top_components = daily.top_components
    result.variance_summary = {**variance.summary(counts.variance_rows), "stock_exceptions": counts.exception_rows}
    result.bom_accuracy_flags = {str(k): int(v) for k, v in counts.accuracy_flags.value_counts().sort_index().items()}
    freed = carried[carried["released_by_run"] == run.run_id] if not carried.empty else carried
    # a row released from one error but rejected with another (a BOM line added with a unit that
    # has no conversion) is marked in quarantine, and not listed: it is not posted
    again = rejected.loc[rejected["table"] == "completions", "source_key"]
    freed = freed[~freed["source_key"].isin(again)] if not freed.empty else freed
    result.released = sorted(("completions:" + freed["source_key"].astype("str")).tolist()) if not freed.empty else []
    changed = queue.changed_dates
    result.master_changed_dates = (changed["plant_id"] + "|" + changed["business_date"].dt.strftime("%Y-%m-%d")).tolist()
    if result.released:
        log.info("error queue: %d quarantined row(s) released: %s", len(result.released), ", ".join(result.released))
    if result.master_changed_dates:
        log.warning("master data changed the explosion of %d posted date(s)%s: %s", len(result.master_changed_dates),
                    "" if run.config.reprocess_master_data else " (not reposted: reprocess_master_data = false)",
                    ", ".join(result.master_changed_dates))
    return result


def stage_runs_row(run: RunContext, result: RunResult, fingerprints: pd.DataFrame, history: pd.DataFrame,
                   watermark: pd.Timestamp | None, queue: error_queue.Plan) -> None:
    """Stage the run's row in `runs`, with the fingerprints of the dates it processed (of every date
    on a plant's first run), and record in `result` what the run writes."""
    result.rows_written = dict(run.txn.rows_written)
    result.rows_written.setdefault("runs", 1)
    ran_before = {str(p) for plants_of_run in history.loc[history["status"] == "ok", "plants"] for p in plants_of_run}
    first_run = set(run.plants) - ran_before
    run.txn.put_file("runs", f"run-{run.run_id}.parquet",
                     runs_row(result, fingerprints, watermark, first_run, queue.fingerprints))
    result.rows_written = dict(run.txn.rows_written)
    result.partitions = dict(run.txn.partitions)
