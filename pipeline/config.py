"""One configuration object, built in one place (file, environment, command line) and passed down."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "BACKFLUSH_CONFIG"


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


@dataclass(frozen=True)
class Tolerances:
    """When a count's variance is over tolerance: it exceeds all three bounds that are set.

    A variance is `over_tolerance` when |variance_qty| > abs_qty AND |variance_value| > abs_value
    AND |usage_variance_pct| > pct (a bound of None is not checked; a null percentage, e.g. for a
    non-backflushed item, does not block the other two). Defaults: 0 units, 50.00 of value, 5 %.
    """

    abs_qty: float | None = 0.0
    abs_value: float | None = 50.0
    pct: float | None = 5.0


@dataclass(frozen=True)
class SqlSource:
    """Input tables read from a SQL database instead of landing files."""

    url: str | None = field(default=None, repr=False)  # SQLAlchemy URL (secret); prefer url_env
    url_env: str | None = None  # name of an environment variable holding the URL
    conn_id: str | None = None  # Airflow connection id (resolved by the DAG layer)
    schema: str | None = None
    tables: Mapping[str, str] = field(default_factory=dict)  # contract table -> source table
    columns: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # table -> {contract col: source col}


@dataclass(frozen=True)
class Config:
    """Everything a run needs to know about where data lives and how to judge it."""

    landing: str = "data/landing"
    warehouse: str = "data/warehouse"
    plants: tuple[str, ...] = ()  # empty: every plant found in the inputs
    plant_timezones: Mapping[str, str] = field(default_factory=dict)  # for plants absent from `plants`
    lookback_days: int = 7
    tolerances: Tolerances = field(default_factory=Tolerances)
    bom_accuracy_counts: int = 6  # trailing counts per component behind a BOM accuracy estimate
    sql: SqlSource | None = None
    lock_timeout_seconds: float = 0.0  # 0: a second run for the same plant stops at once
    # a plant lock older than this is taken over whatever host took it (None: only locks of dead
    # processes on this host); set it above the longest run when workers run on several machines
    lock_stale_after_seconds: float | None = None
    date_batch_days: int = 31  # a backfill commits this many dates at a time
    # completions are read a bucket of about this many rows at a time (memory follows it, not the total)
    bucket_rows: int = 300_000
    workers: int = 2  # processes digesting buckets when there are several (1: all in the run's own process)
    spill_dir: str | None = None  # where buckets are spilled (default: the system's temporary folder)
    # a run for some dates reads only the landing files that can change what it writes (pipeline.landing)
    prune_landing: bool = True

    def replace(self, **changes: Any) -> Config:
        """A copy with some fields changed; None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Build the configuration: defaults < file (path, or $BACKFLUSH_CONFIG) < overrides."""
    path = path or os.environ.get(CONFIG_ENV)
    data: dict[str, Any] = {}
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
        data = _resolve_paths(data, p.parent)
    return _from_mapping(data).replace(**overrides)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative landing/warehouse paths in a config file are relative to the file."""
    out = dict(data)
    for key in ("landing", "warehouse"):
        value = out.get(key)
        if isinstance(value, str) and "://" not in value and not Path(value).is_absolute():
            out[key] = str((base / value).resolve())
    return out


def _from_mapping(data: Mapping[str, Any]) -> Config:
    known = {f.name for f in dataclasses.fields(Config)}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = dict(data)
    if "plants" in kwargs:
        kwargs["plants"] = tuple(kwargs["plants"])
    if "tolerances" in kwargs:
        kwargs["tolerances"] = Tolerances(**kwargs["tolerances"])
    if "sql" in kwargs:
        kwargs["sql"] = SqlSource(**kwargs["sql"])
    try:
        config = Config(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"bad config: {exc}") from exc
    if config.lookback_days < 0:
        raise ConfigError("lookback_days must be >= 0")
    if config.bucket_rows < 1 or config.workers < 1:
        raise ConfigError("bucket_rows and workers must be >= 1")
    return config
