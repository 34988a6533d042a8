"""One configuration object, built in one place (file, environment, command line) and passed down.

The model is pydantic, strict: a value of the wrong type is an error, not a guess (`lookback_days =
"7"` is refused, as `true` would be), keys that do not exist are errors, and every bound is
checked once, here. An error is one line naming where the value came from (the file, the
environment variable or the command line), the key, the value and what is allowed.

Layers, later wins: defaults < the TOML file (`path`, or `$BACKFLUSH_CONFIG`) < environment
variables `BACKFLUSH_<KEY>` (`BACKFLUSH_<TABLE>__<KEY>` inside `[tolerances]` and `[sql]`) < the
overrides given to `load_config` (the command line's flags).
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import os
import tomllib
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import annotated_types
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

CONFIG_ENV = "BACKFLUSH_CONFIG"
ENV_PREFIX = "BACKFLUSH_"
ENV_NESTING = "__"
SECRET_KEYS = frozenset({("sql", "url")})  # never echoed in an error


class ConfigError(ValueError):
    """The configuration cannot be used; the message says what to change."""


def _time_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not an IANA time zone") from exc
    return name


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    # what is allowed, where the type and bounds alone do not say it
    allowed: ClassVar[Mapping[str, str]] = {}


class Tolerances(_Model):
    """When a count's variance is over tolerance: it exceeds all three bounds that are set.

    A variance is `over_tolerance` when |variance_qty| > abs_qty AND |variance_value| > abs_value
    AND |usage_variance_pct| > pct (a bound of None is not checked; a null percentage, e.g. for a
    non-backflushed item, does not block the other two). Defaults: 0 units, 50.00 of value, 5 %.
    """

    abs_qty: float | None = Field(default=0.0, ge=0)
    abs_value: float | None = Field(default=50.0, ge=0)
    pct: float | None = Field(default=5.0, ge=0)


with warnings.catch_warnings():  # `schema` shadows BaseModel.schema(), a deprecated classmethod: meant
    warnings.filterwarnings("ignore", message='Field name "schema"', category=UserWarning)

    class SqlSource(_Model):
        """Input tables read from a SQL database instead of landing files."""

        url: str | None = Field(default=None, repr=False)  # SQLAlchemy URL (secret); prefer url_env
        url_env: str | None = None  # name of an environment variable holding the URL
        conn_id: str | None = None  # Airflow connection id (resolved by the DAG layer)
        schema: str | None = None  # type: ignore[assignment]
        tables: Mapping[str, str] = Field(default_factory=dict)  # contract table -> source table
        columns: Mapping[str, Mapping[str, str]] = Field(default_factory=dict)  # table -> {contract col: source col}


class Config(_Model):
    """Everything a run needs to know about where data lives and how to judge it."""

    landing: str = Field(default="data/landing", min_length=1)
    warehouse: str = Field(default="data/warehouse", min_length=1)
    plants: tuple[Annotated[str, Field(min_length=1)], ...] = ()  # empty: every plant found in the inputs
    # for plants absent from the plants table
    plant_timezones: Mapping[str, Annotated[str, AfterValidator(_time_zone)]] = Field(default_factory=dict)
    lookback_days: int = Field(default=7, ge=0)
    # repost the posted dates whose explosion a master data change altered (a backdated BOM change);
    # false: the run only lists them (runs.master_changed_dates, the log)
    reprocess_master_data: bool = False
    tolerances: Tolerances = Field(default_factory=Tolerances)
    bom_accuracy_counts: int = Field(default=6, ge=1)  # trailing counts per component behind a BOM accuracy estimate
    sql: SqlSource | None = None
    lock_timeout_seconds: float = Field(default=0.0, ge=0)  # 0: a second run for the same plant stops at once
    # a plant lock older than this is taken over whatever host took it (None: only locks of dead
    # processes on this host); set it above the longest run when workers run on several machines
    lock_stale_after_seconds: float | None = Field(default=None, gt=0)
    date_batch_days: int = Field(default=31, ge=1)  # a backfill commits this many dates at a time
    # completions are read a bucket of about this many rows at a time (memory follows it, not the total)
    bucket_rows: int = Field(default=300_000, ge=1)
    workers: int = Field(default=2, ge=1)  # processes digesting buckets when there are several (1: all in the run's own process)
    spill_dir: str | None = None  # where buckets are spilled (default: the system's temporary folder)
    # posting periods through this business date are closed: their postings never change, a correction
    # posts its delta on the first open date (see pipeline/domain/periods.py; a `periods` table closes more)
    closed_through: dt.date | None = None
    # a run for some dates reads only the landing files that can change what it writes (pipeline.intake.landing)
    prune_landing: bool = True
    # a run whose landing, master data, configuration, code and warehouse are as at the last run of
    # the same command and dates stops early and records only its `runs` row (pipeline.stages.rerun)
    skip_unchanged_reruns: bool = True

    allowed: ClassVar[Mapping[str, str]] = {
        "plant_timezones": 'a table of plant id = IANA time zone name (e.g. P9 = "Europe/Vienna")',
        "closed_through": "a date without quotes, e.g. closed_through = 2026-01-31",
    }

    @field_validator("plants", mode="before")
    @classmethod
    def _list_of_plants(cls, value: Any) -> Any:
        return tuple(value) if isinstance(value, list) else value  # TOML and flags give lists

    def replace(self, **changes: Any) -> Config:
        """A validated copy with some fields changed; None values are ignored."""
        return _apply(self, {k: v for k, v in changes.items() if v is not None}, "arguments")


def load_config(path: str | os.PathLike[str] | None = None, *, origin: str = "arguments",
                environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the configuration: defaults < file (path, or $BACKFLUSH_CONFIG) < environment < overrides.

    `origin` names where the overrides came from in an error ("command line" for the CLI's flags);
    `environ` defaults to os.environ.
    """
    environ = os.environ if environ is None else environ
    path = path or environ.get(CONFIG_ENV)
    config = Config()
    if path:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {p} does not exist") from exc
        except IsADirectoryError as exc:
            raise ConfigError(f"config file {p} is a folder, not a file") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {p} is not UTF-8 text") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
        config = _apply(config, _resolve_paths(data, p.parent), f"config file {p}")
    for name, (key, text) in _from_environment(environ).items():
        config = _apply(config, _nest(key, _env_value(key, text)), f"environment variable {name}")
    return _apply(config, {k: v for k, v in overrides.items() if v is not None}, origin)


def _resolve_paths(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative landing/warehouse paths in a config file are relative to the file."""
    out = dict(data)
    for key in ("landing", "warehouse"):
        value = out.get(key)
        if isinstance(value, str) and value and "://" not in value and not Path(value).is_absolute():
            out[key] = str((base / value).resolve())
    return out


# ------------------------------------------------------------------------------------ layers


def _apply(base: Config, changes: Mapping[str, Any], origin: str) -> Config:
    """`base` with `changes` (tables merged key by key) validated; a ConfigError naming `origin`."""
    if not changes:
        return base
    data: dict[str, Any] = {name: getattr(base, name) for name in Config.model_fields}
    for key, value in changes.items():
        current = data.get(key)
        if isinstance(value, Mapping) and isinstance(current, _Model):
            value = {**_fields(current), **value}
        data[key] = value
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_message(exc, origin)) from None


def _fields(model: _Model) -> dict[str, Any]:
    return {(field.alias or name): getattr(model, name) for name, field in type(model).model_fields.items()}


def _from_environment(environ: Mapping[str, str]) -> dict[str, tuple[tuple[str, ...], str]]:
    """Environment variables named after a config key: name -> (key path, text)."""
    found = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        key = tuple(name[len(ENV_PREFIX):].lower().split(ENV_NESTING))
        if _field_at(key) is not None:  # other BACKFLUSH_* variables are not config
            found[name] = (key, environ[name])
    return found


def _field_at(key: tuple[str, ...]) -> Any:
    model: type[_Model] = Config
    for i, part in enumerate(key):
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        if part not in fields:
            return None
        if i == len(key) - 1:
            return fields[part]
        inner = _model_of(fields[part].annotation)
        if inner is None:
            return None
        model = inner
    return None


def _env_value(key: tuple[str, ...], text: str) -> Any:
    """A string field takes the text as it is; any other reads it as a TOML value (7, 2.5, ["P1"])."""
    field = _field_at(key)
    if _plain(field.annotation) is str:
        return text
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # refused by the model as the wrong type, with the text shown


def _nest(key: tuple[str, ...], value: Any) -> dict[str, Any]:
    return {key[0]: value} if len(key) == 1 else {key[0]: {key[1]: value}}


# ------------------------------------------------------------------------------------ messages


def _message(exc: ValidationError, origin: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    text = f"{origin}: {_key_text(loc)} = {_value_text(loc, first.get('input'))}: "
    if first["type"] == "extra_forbidden":
        model = _model_at(loc[:-1])
        names = sorted((f.alias or n) for n, f in model.model_fields.items())
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        text += "unknown key" + (f" (did you mean {close[0]}?)" if close else "") + f"; allowed keys: {', '.join(names)}"
    else:
        model, name = _owner(loc)
        kind = first["type"]
        problem = ("out of range" if kind in _RANGE_ERRORS else "wrong type" if kind.endswith(("_type", "_parsing"))
                   else "not allowed")
        text += f"{problem}; allowed: {_allowed(model, name)}"
    if len(errors) > 1:
        text += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return text


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "string_too_short",
                 "too_short", "too_long"}


def _key_text(loc: tuple[Any, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else str(p) for p in loc]
    if len(loc) > 1 and _model_of(Config.model_fields.get(str(loc[0]), _NOFIELD).annotation) is not None:
        return f"[{parts[0]}] " + ".".join(parts[1:]).replace(".[", "[")
    return ".".join(parts).replace(".[", "[")


def _value_text(loc: tuple[Any, ...], value: Any) -> str:
    if tuple(str(p) for p in loc[:2]) in SECRET_KEYS:
        return "(hidden)"
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


class _NoField:
    annotation = None


_NOFIELD = _NoField()


def _model_of(annotation: Any) -> type[_Model] | None:
    """The config table an annotation holds (`Tolerances`, `SqlSource | None`), if any."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, _Model):
            return candidate
    return None


def _model_at(loc: tuple[Any, ...]) -> type[_Model]:
    model: type[_Model] = Config
    for part in loc:
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        inner = _model_of(fields[str(part)].annotation) if str(part) in fields else None
        if inner is None:
            break
        model = inner
    return model


def _owner(loc: tuple[Any, ...]) -> tuple[type[_Model], str]:
    """The table and key a location points into (a value inside a list or table is its key's)."""
    model: type[_Model] = Config
    name = str(loc[0])
    for part in loc[1:]:
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        inner = _model_of(fields[name].annotation) if name in fields else None
        if inner is None:
            break
        model, name = inner, str(part)
    return model, name


def _plain(annotation: Any) -> Any:
    """`X | None` -> X."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _allowed(model: type[_Model], name: str) -> str:
    if name in model.allowed:
        return model.allowed[name]
    fields = {(f.alias or n): f for n, f in model.model_fields.items()}
    field = fields[name]
    text = _describe(field.annotation)
    bounds = []
    for rule in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(rule, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {getattr(rule, attr)}")
        if isinstance(rule, annotated_types.MinLen) and rule.min_length == 1:
            text = text.replace("a string", "a non-empty string")
    return text + (" " + " and ".join(bounds) if bounds else "")


_NAMES = {str: ("a string", "strings"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          bool: ("true or false", "booleans")}


def _describe(annotation: Any, plural: bool = False) -> str:
    annotation = _plain(annotation)
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if annotation in _NAMES:
        return _NAMES[annotation][plural]
    model = _model_of(annotation)
    if model is not None:
        keys = ", ".join(sorted((f.alias or n) for n, f in model.model_fields.items()))
        return f"{'tables' if plural else 'a table'} with keys {keys}"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple or origin is list:
        return f"{'lists' if plural else 'a list'} of {_describe(args[0], plural=True)}"
    if isinstance(origin, type) and issubclass(origin, Mapping):
        return f"{'tables' if plural else 'a table'} of {_describe(args[1], plural=True)}"
    return str(annotation)
