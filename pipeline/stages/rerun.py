"""Unchanged re-runs (issue 17.5): a run whose inputs, configuration, code and warehouse are what they
were at the last run of the same command stops before reading anything, and says so.

A run for dates D records an *inputs digest* (`runs.inputs_digest`): BLAKE2b over

- the run's key: command, requested dates, the plants asked for (none: every plant) and whether
  late data is reprocessed;
- the configuration that can change an output: every field of `Config` but those that only
  decide how a run works (workers, bucket size, spill folder, locks, this switch), with the
  landing folder's resolved path; and the package version;
- every landing file: its table, source name and a BLAKE2b of its bytes. Completions, movements
  and stock counts take the fingerprint the landing manifest records (`pipeline.intake.landing.survey`:
  a file whose size and mtime are as recorded is not opened; a touched one is hashed again);
  master data (plants, items, uom_conversions, bom, item_costs, periods: the tables a run reads
  whole) is hashed every time, before the run reads it.

A later run with the same key is *unchanged* (`check`) when no described landing file is new,
gone or different in its bytes, the master files hash the same and the digest is equal, and the
last run in `runs` (by `finished_at`, any plant, any command) is a successful one with that key
and that digest. The warehouse a full run reads (postings, quarantine, variance history, the
runs before it) was then last written by a run over the same inputs: a full run would recompute
the same rows. It is checked again under the plants' lock. The run then writes one `runs` row
(`skip_row`) and, if some landing file was only touched, the manifest with its new mtimes; nothing
else. Never skipped: a SQL source, `prune_landing = false`, `reprocess_master_data`, inputs given
by the caller (a backfill's batches), a command other than `run` (the DAG's backfills),
`skip_unchanged_reruns = false`, a warehouse whose last run has no digest (written before this
column, or a backfill).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import __version__
from pipeline.config import Config
from pipeline.contract import schemas
from pipeline.contract.inputs import INPUT_TABLES
from pipeline.intake import landing, scan
from pipeline.progress import Progress
from pipeline.stages.result import RunResult
from pipeline.store.warehouse import Warehouse

log = logging.getLogger("backflush")

DIGEST_SCHEME = "inputs-digest-v1"
UNCHANGED_PREFIX = "unchanged since run "  # the `message` of a run that stopped early
MASTER_TABLES = tuple(t for t in schemas.INPUT_MODELS if t not in landing.DESCRIBED)
# Config fields that decide how a run works, not what it writes
NOT_IN_DIGEST = frozenset({"warehouse", "workers", "bucket_rows", "spill_dir", "lock_timeout_seconds",
                           "lock_stale_after_seconds", "date_batch_days", "skip_unchanged_reruns"})


@dataclass
class Check:
    """What a run knows of its inputs before reading them: its key, the master files' hashes, and,
    once the landing was compared with the manifest, whether it is unchanged (`previous`)."""

    key: dict[str, object]
    master: list[tuple[str, str, str]]  # (table, source, BLAKE2b of the bytes), hashed before the read
    digest: str | None = None  # of the landing as the manifest knows it, when nothing is new or gone
    previous: pd.Series | None = None  # the last run, when it had this key and this digest
    touched: landing.Manifest | None = None  # the manifest with new mtimes, when files were only touched
    notes: list[str] = field(default_factory=list)  # why not unchanged (logged)

    def digest_of(self, manifest: landing.Manifest | None) -> str | None:
        """The digest of a run that read the landing this manifest describes (None: no manifest)."""
        if manifest is None:
            return None
        described = [(str(e["table"]), str(e["source"]), str(e["fingerprint"])) for e in manifest.entries]
        return _digest(self.key, self.master, described)


def eligible(config: Config) -> bool:
    """Whether a run of this configuration may stop early at all."""
    return (config.skip_unchanged_reruns and config.sql is None and config.prune_landing
            and not config.reprocess_master_data)


def check(config: Config, dates: Sequence[dt.date], plants: Sequence[str] | None, command: str,
          late_data: bool) -> Check | None:
    """The run's key and master hashes, and whether it is an unchanged re-run (`Check.previous`);
    None when it may not stop early (`eligible`). Reads no landing file but the master data."""
    if not eligible(config) or not dates or command != "run":  # a backfill recomputes on purpose
        return None
    key = {"scheme": DIGEST_SCHEME, "command": command, "dates": sorted(f"{d:%Y-%m-%d}" for d in set(dates)),
           "plants": sorted(set(plants or ())), "late_data": bool(late_data), "version": __version__,
           "config": config_digest(config)}
    files = scan.landing_files(config.landing)
    master = [(t, s, landing.file_fingerprint(p)) for t in MASTER_TABLES for s, p in files.get(t, [])]
    out = Check(key=key, master=master)
    warehouse = Warehouse(config.warehouse)
    last = last_run(warehouse)
    if last is None or not isinstance(last.get("inputs_digest"), str):
        out.notes.append("the last run recorded no inputs digest")
        return out
    described = _described(files, warehouse, out)
    if described is None:
        return out
    out.digest = _digest(key, master, described)
    if same_run(last, out):
        out.previous = last
    else:
        out.notes.append(f"the last run ({last['run_id']}) had other inputs, configuration, code or dates")
    return out


def config_digest(config: Config) -> str:
    """BLAKE2b of the configuration fields that can change an output (see NOT_IN_DIGEST)."""
    fields = config.model_dump(mode="json", exclude=set(NOT_IN_DIGEST))
    fields["landing"] = str(Path(config.landing).resolve())
    return hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=16).hexdigest()


def last_run(warehouse: Warehouse) -> pd.Series | None:
    """The run that committed last (`finished_at`; runs of shared plants commit in lock order)."""
    runs = warehouse.read("runs")
    if runs.empty:
        return None
    return runs.sort_values(["finished_at", "run_id"], kind="stable").iloc[-1]


def same_run(last: pd.Series, check_: Check) -> bool:
    """Whether `last` is a successful run of this key that recorded this digest."""
    dates = sorted(f"{pd.Timestamp(d):%Y-%m-%d}" for d in last["requested_dates"])
    return (last["status"] == "ok" and last["command"] == check_.key["command"] and dates == check_.key["dates"]
            and last.get("inputs_digest") == check_.digest and last["code_version"] == __version__)


def _described(files: landing.Files, warehouse: Warehouse, out: Check) -> list[tuple[str, str, str]] | None:
    """(table, source, fingerprint) of every current file of the described tables, from the manifest,
    or None (a note says why) when one is new, gone or changed: no file is described here."""
    known, names = landing.load(warehouse)
    listed = {s for table in landing.DESCRIBED for s, _ in files.get(table, [])}
    if set(known) - listed:
        out.notes.append(f"landing file(s) gone: {', '.join(sorted(set(known) - listed)[:3])}")
        return None
    described, entries, touched = [], [], False
    notes = {"new": "new landing file {}", "before pieces": "landing file {} is described again, by row group",
             "changed": "landing file {} changed"}
    for table in landing.DESCRIBED:
        for source, path in files.get(table, []):
            state = landing.seen(table, source, path, known)
            if state.why is not None:
                out.notes.append(notes[state.why].format(source))
                return None
            touched |= state.touched
            entries.extend(state.pieces)
            described.append((table, source, str(state.pieces[0]["fingerprint"])))
    if touched:
        out.touched = landing.Manifest(entries=entries, replaces=names)
    return described


def _digest(key: dict[str, object], master: list[tuple[str, str, str]],
            described: list[tuple[str, str, str]]) -> str:
    payload = {"key": key, "files": sorted([*master, *described])}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest()


def still_last(warehouse: Warehouse, previous: pd.Series) -> bool:
    """Under the lock: the run found before taking it is still the last one."""
    last = last_run(warehouse)
    return last is not None and last["run_id"] == previous["run_id"]


def skip_row(run_id: str, command: str, check_: Check, started: pd.Timestamp, finished: pd.Timestamp,
             tables: Sequence[str]) -> pd.DataFrame:
    """The `runs` row of a run that stopped early: successful, nothing processed (no business
    dates, so late-data and error-queue references stay those of the runs before it), zero rows
    read, the plants of the run it matched, and its digest; `message` names that run."""
    assert check_.previous is not None
    zeros = [(t, 0) for t in tables]
    return pd.DataFrame({
        "run_id": [run_id], "command": [command], "status": ["ok"],
        "message": [UNCHANGED_PREFIX + str(check_.previous["run_id"])],
        "business_dates": [[]], "requested_dates": [[dt.date.fromisoformat(str(d)) for d in check_.key["dates"]]],  # type: ignore[attr-defined]
        "plants": [list(check_.previous["plants"])],
        "rows_read": [zeros], "rows_accepted": [zeros], "rows_quarantined": [zeros], "rows_superseded": [zeros],
        "rows_written": [[("runs", 1)] + ([(landing.DATASET, len(check_.touched.entries))] if check_.touched else [])],
        "input_fingerprints": ["{}"], "watermark_recorded_at": [pd.NaT],
        "started_at": [started], "finished_at": [finished], "code_version": [__version__],
        "released": [[]], "master_changed_dates": [[]], "master_fingerprints": [None],
        "inputs_digest": [check_.digest],
    })


def skip(config: Config, check_: Check, run_id: str, started: pd.Timestamp, command: str, dry_run: bool,
         progress: Progress) -> RunResult | None:
    """Stop the run early when `check_` found it unchanged and, under the plants' lock, its match
    is still the last run: write its `runs` row (and a touched manifest) and return its result;
    else None (the run goes on as usual)."""
    if check_.previous is None:
        for note in check_.notes:
            log.info("not an unchanged re-run: %s", note)
        return None
    previous = check_.previous
    plants = sorted(str(p) for p in previous["plants"])
    warehouse = Warehouse(config.warehouse)
    with warehouse.locked(plants, run_id, timeout=config.lock_timeout_seconds,
                          stale_after=config.lock_stale_after_seconds):
        warehouse.recover(plants)
        if not still_last(warehouse, previous):
            log.info("not an unchanged re-run: another run committed since run %s", previous["run_id"])
            return None
        finished = pd.Timestamp.now(tz="UTC").floor("us")
        row = skip_row(run_id, command, check_, started, finished, INPUT_TABLES)
        result = RunResult(
            run_id=run_id, command=command, status="ok", requested_dates=[dt.date.fromisoformat(str(d))
                                                                         for d in check_.key["dates"]],  # type: ignore[attr-defined]
            business_dates=[], plants=plants, rows_read={t: 0 for t in INPUT_TABLES},
            rows_written=dict(row["rows_written"].iloc[0]), started_at=started, finished_at=finished,
            dry_run=dry_run, unchanged_since=str(previous["run_id"]), inputs_digest=check_.digest)
        progress.stage("unchanged" if not dry_run else "dry-run: nothing written", since=str(previous["run_id"]))
        if dry_run:
            return result
        txn = warehouse.begin(run_id, plants)
        try:
            txn.put_file("runs", f"run-{run_id}.parquet", row)
            if check_.touched is not None:
                check_.touched.stage(txn, run_id)
            txn.commit()
        except BaseException:
            txn.abort()
            raise
    log.info("unchanged re-run: landing, master data, configuration and code as at run %s; nothing recomputed",
             previous["run_id"])
    return result
