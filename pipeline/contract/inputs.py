"""The validated input tables a run works on, and what became of their rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.contract import schemas

LINE_COLUMN = "__line__"  # a raw row's line in its file, where rows were split off from it (see pipeline.stages.digest)


EVENT_TIME = {"completions": "completed_at", "stock_counts": "counted_at", "movements": "moved_at"}


@dataclass
class TableStats:
    """How the rows of one input table were disposed of."""

    read: int = 0
    accepted: int = 0
    quarantined: int = 0
    superseded: int = 0  # older versions of a corrected completion, and identical repeats


@dataclass
class Inputs:
    """The validated input tables of a run, with business dates, plus everything rejected."""

    plants: pd.DataFrame
    items: pd.DataFrame
    uom_conversions: pd.DataFrame
    bom: pd.DataFrame
    completions: pd.DataFrame
    stock_counts: pd.DataFrame
    movements: pd.DataFrame
    quarantine: pd.DataFrame
    stats: dict[str, TableStats] = field(default_factory=dict)
    item_costs: pd.DataFrame = field(default_factory=lambda: empty_table("item_costs"))
    periods: pd.DataFrame = field(default_factory=lambda: empty_table("periods"))
    broken_bom: pd.DataFrame = field(default_factory=lambda: empty_broken_bom())


def default_column(kind: str, default: object, n: int) -> pd.Series:
    if kind == "timestamp":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    if kind == "date":
        return pd.Series(pd.NaT, index=range(n), dtype="datetime64[ns]")
    if kind == "bool":
        return pd.Series(default if default is not None else pd.NA, index=range(n), dtype="boolean")
    if kind in ("float", "int"):
        return pd.Series(np.nan if default is None else default, index=range(n), dtype="float64")
    return pd.Series(default, index=range(n), dtype="str")


def empty_table(table: str) -> pd.DataFrame:
    kinds = schemas.column_kinds(table)
    frame = pd.DataFrame({c: default_column(k, None, 0) for c, k in kinds.items()})
    frame["_source"] = pd.Series([], dtype="str")
    return frame


INPUT_TABLES = ("plants", "items", "uom_conversions", "bom", "completions", "stock_counts", "movements",
                "item_costs")


def empty_broken_bom() -> pd.DataFrame:
    """No rejected BOM lines: (plant_id, parent_item_id, message) of every rejected line whose parent
    can be read (see intake.accept)."""
    return pd.DataFrame({"plant_id": pd.Series([], dtype="object"), "parent_item_id": pd.Series([], dtype="str"),
                         "message": pd.Series([], dtype="str")})
