"""The one place where every table's columns, types, defaults and checks are written.

Input tables are pandera models (validated at read, failures quarantined as INVALID);
output datasets are Arrow schemas (cast before every write, so Parquet schemas never drift).
"""

from __future__ import annotations

from typing import Annotated

import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow
from pandera.typing import Series

MAX_ABS_QTY = 1e12  # beyond this a quantity is garbage, not production
UTC_TIMESTAMP = Annotated[pd.DatetimeTZDtype, "us", "UTC"]
UOM_DECIMALS_MAX = 9


class _Input(pa.DataFrameModel):
    class Config:
        strict = False  # extra landing columns are ignored, not an error
        coerce = False  # sources coerce explicitly, so failed coercions become quarantine rows


class Plants(_Input):
    """A plant and the time zone its business dates are counted in."""

    plant_id: Series[str] = pa.Field(str_length={"min_value": 1})
    timezone: Series[str] = pa.Field(nullable=True, default="UTC")


class Items(_Input):
    """Item master: base unit, standard cost, phantom and backflush flags, posting precision."""

    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    uom: Series[str] = pa.Field(str_length={"min_value": 1})
    standard_cost: Series[float] = pa.Field(ge=0, le=MAX_ABS_QTY, default=0.0)
    phantom: Series[bool] = pa.Field(default=False)
    backflush: Series[bool] = pa.Field(default=True)
    uom_decimals: Series[int] = pa.Field(ge=0, le=UOM_DECIMALS_MAX, default=3)


class ItemCosts(_Input):
    """Standard cost history: `standard_cost` is in force from `valid_from` (a business date) until the
    item's next row; before its first row the item's `items.standard_cost` applies (issue 16)."""

    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    valid_from: Series[pd.Timestamp]
    standard_cost: Series[float] = pa.Field(ge=0, le=MAX_ABS_QTY)


class Periods(_Input):
    """A posting period of a plant (plant_id null: every plant); only closed ones matter (issue 16.2)."""

    plant_id: Series[str] = pa.Field(nullable=True, default=None)
    period_start: Series[pd.Timestamp]
    period_end: Series[pd.Timestamp]  # the period's last business date (inclusive)
    status: Series[str] = pa.Field(isin=["open", "closed"], default="closed")

    @pa.dataframe_check(ignore_na=False)
    def period_start_not_after_period_end(cls, df: pd.DataFrame) -> Series[bool]:
        """A period holds at least its first day."""
        return df["period_start"] <= df["period_end"]


class UomConversions(_Input):
    """1 from_uom = factor to_uom; item_id null means valid for every item."""

    item_id: Series[str] = pa.Field(nullable=True)
    from_uom: Series[str] = pa.Field(str_length={"min_value": 1})
    to_uom: Series[str] = pa.Field(str_length={"min_value": 1})
    factor: Series[float] = pa.Field(gt=0, le=MAX_ABS_QTY)


class Bom(_Input):
    """One BOM line: qty_per of a component per base_qty of the parent (negative: by-product)."""

    plant_id: Series[str] = pa.Field(nullable=True, default=None)
    parent_item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    component_item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    qty_per: Series[float] = pa.Field(ne=0, ge=-MAX_ABS_QTY, le=MAX_ABS_QTY)
    base_qty: Series[float] = pa.Field(gt=0, le=MAX_ABS_QTY, default=1.0)
    uom: Series[str] = pa.Field(nullable=True, default=None)
    scrap_pct: Series[float] = pa.Field(ge=0, lt=100, default=0.0)
    valid_from: Series[pd.Timestamp] = pa.Field(nullable=True, default=None)
    valid_to: Series[pd.Timestamp] = pa.Field(nullable=True, default=None)
    # needed once per production order (completions.order_id), not per unit (issue 16.3)
    fixed_qty: Series[bool] = pa.Field(default=False)

    @pa.dataframe_check(ignore_na=False)
    def valid_from_not_after_valid_to(cls, df: pd.DataFrame) -> Series[bool]:
        """An effectivity interval must not run backwards. An empty one (valid_from == valid_to) is
        allowed: the line is effective on no date, so it simply never applies."""
        return df["valid_from"].isna() | df["valid_to"].isna() | (df["valid_from"] <= df["valid_to"])


class Completions(_Input):
    """A production confirmation: good and scrapped units of an item at a plant and location."""

    completion_id: Series[str] = pa.Field(str_length={"min_value": 1})
    plant_id: Series[str] = pa.Field(str_length={"min_value": 1})
    location_id: Series[str] = pa.Field(str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    qty_good: Series[float] = pa.Field(ge=0, le=MAX_ABS_QTY)
    qty_scrap: Series[float] = pa.Field(ge=0, le=MAX_ABS_QTY, default=0.0)
    completed_at: Series[UTC_TIMESTAMP]  # type: ignore[type-arg]
    recorded_at: Series[UTC_TIMESTAMP] = pa.Field(nullable=True, default=None)  # type: ignore[type-arg]
    order_id: Series[str] = pa.Field(nullable=True, default=None)
    uom: Series[str] = pa.Field(nullable=True, default=None)  # unit of the quantities; null: base unit


class StockCounts(_Input):
    """A physical count: the quantity found, including every flow at or before counted_at."""

    count_id: Series[str] = pa.Field(str_length={"min_value": 1})
    plant_id: Series[str] = pa.Field(str_length={"min_value": 1})
    location_id: Series[str] = pa.Field(str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    counted_qty: Series[float] = pa.Field(ge=0, le=MAX_ABS_QTY)
    counted_at: Series[UTC_TIMESTAMP]  # type: ignore[type-arg]
    uom: Series[str] = pa.Field(nullable=True, default=None)  # unit of counted_qty; null: base unit


class Movements(_Input):
    """Every recorded flow not produced by this pipeline (receipts, shipments, manual issues)."""

    movement_id: Series[str] = pa.Field(str_length={"min_value": 1})
    plant_id: Series[str] = pa.Field(str_length={"min_value": 1})
    location_id: Series[str] = pa.Field(str_length={"min_value": 1})
    item_id: Series[str] = pa.Field(str_length={"min_value": 1})
    qty: Series[float] = pa.Field(ge=-MAX_ABS_QTY, le=MAX_ABS_QTY)
    moved_at: Series[UTC_TIMESTAMP]  # type: ignore[type-arg]
    kind: Series[str] = pa.Field(nullable=True, default=None)
    uom: Series[str] = pa.Field(nullable=True, default=None)  # unit of qty; null: base unit


INPUT_MODELS: dict[str, type[_Input]] = {
    "plants": Plants,
    "items": Items,
    "uom_conversions": UomConversions,
    "bom": Bom,
    "completions": Completions,
    "stock_counts": StockCounts,
    "movements": Movements,
    "item_costs": ItemCosts,
    "periods": Periods,
}
OPTIONAL_TABLES = frozenset({"plants", "uom_conversions", "movements", "item_costs", "periods"})
INPUT_KEYS: dict[str, str | None] = {
    "plants": "plant_id",
    "items": "item_id",
    "uom_conversions": None,
    "bom": None,
    "completions": "completion_id",
    "stock_counts": "count_id",
    "movements": "movement_id",
    "item_costs": None,
    "periods": None,
}
# Tables without an id: rows with the same natural key and different content are DUPLICATE_ID.
NATURAL_KEYS: dict[str, tuple[str, ...]] = {
    "uom_conversions": ("item_id", "from_uom", "to_uom"),
    "item_costs": ("item_id", "valid_from"),
}
DATE_COLUMNS = frozenset({"valid_from", "valid_to", "period_start", "period_end"})
# The columns each row-wide (dataframe) check reads: a quarantine message names only these.
ROW_CHECK_COLUMNS: dict[str, tuple[str, ...]] = {"valid_from_not_after_valid_to": ("valid_from", "valid_to"),
                                                  "period_start_not_after_period_end": ("period_start", "period_end")}


def column_kinds(table: str) -> dict[str, str]:
    """Column name -> one of str, float, int, bool, timestamp, date, as declared by the model."""
    schema = INPUT_MODELS[table].to_schema()
    kinds: dict[str, str] = {}
    for name, column in schema.columns.items():
        dtype = str(column.dtype)
        if name in DATE_COLUMNS:
            kinds[name] = "date"
        elif "datetime" in dtype:
            kinds[name] = "timestamp"
        elif dtype.startswith("float"):
            kinds[name] = "float"
        elif dtype.startswith("int"):
            kinds[name] = "int"
        elif dtype == "bool":
            kinds[name] = "bool"
        else:
            kinds[name] = "str"
    return kinds


def required_columns(table: str) -> list[str]:
    """Columns a landing table must carry: those without a default in the model."""
    schema = INPUT_MODELS[table].to_schema()
    return [n for n, c in schema.columns.items() if c.default is None and not c.nullable]


def column_defaults(table: str) -> dict[str, object]:
    """Optional columns and the value they take when absent or null."""
    schema = INPUT_MODELS[table].to_schema()
    return {n: c.default for n, c in schema.columns.items() if c.default is not None or c.nullable}


# ---------------------------------------------------------------- outputs (Arrow)

ADJUSTMENT_KINDS = ("production_receipt", "backflush_issue", "byproduct_receipt")
VARIANCE_STATUSES = ("baseline", "ok", "over_tolerance")
ERROR_CODES = (
    "INVALID",
    "UNKNOWN_ITEM",
    "NO_BOM",
    "BOM_CYCLE",
    "NO_UOM_CONVERSION",
    "DUPLICATE_ID",
)

_ts = pa_arrow.timestamp("us", tz="UTC")
_str = pa_arrow.string()
_f64 = pa_arrow.float64()
_i64 = pa_arrow.int64()

CONSUMPTION = pa_arrow.schema(
    [
        ("location_id", _str),
        ("item_id", _str),
        ("component_item_id", _str),
        ("qty", _f64),
        ("fixed_qty", _f64),  # the part of qty needed once per production order (bom.fixed_qty)
        ("uom", _str),
        ("backflushed", pa_arrow.bool_()),
        ("completions", _i64),
    ]
)
ADJUSTMENTS = pa_arrow.schema(
    [
        ("adjustment_id", _str),
        ("location_id", _str),
        ("item_id", _str),
        ("kind", _str),
        ("qty", _f64),
        ("uom", _str),
        ("value", _f64),
        ("completions", _i64),
    ]
)
POSTINGS = pa_arrow.schema(
    [
        ("posting_id", _str),
        ("run_id", _str),
        ("business_date", pa_arrow.date32()),
        ("for_business_date", pa_arrow.date32()),
        ("adjustment_id", _str),
        ("location_id", _str),
        ("item_id", _str),
        ("kind", _str),
        ("qty_delta", _f64),
        ("uom", _str),
        ("posted_at", _ts),
    ]
)
VARIANCE = pa_arrow.schema(
    [
        ("count_id", _str),
        ("location_id", _str),
        ("item_id", _str),
        ("counted_at", _ts),
        ("previous_counted_at", _ts),
        ("opening_qty", _f64),
        ("movements_qty", _f64),
        ("receipts_qty", _f64),
        ("theoretical_usage_qty", _f64),
        ("book_qty", _f64),
        ("counted_qty", _f64),
        ("variance_qty", _f64),
        ("variance_value", _f64),
        ("usage_variance_pct", _f64),
        ("status", _str),
        ("uom", _str),
        ("backflushed", pa_arrow.bool_()),
        ("standard_cost", _f64),
    ]
)
QUARANTINE = pa_arrow.schema(
    [
        ("source_key", _str),
        ("error_code", _str),
        ("message", _str),
        ("row", _str),
        ("run_id", _str),
        ("plant_id", _str),
        ("source", _str),  # where the row was read: file:line, or sql:schema.table
        ("released_by_run", _str),  # the run that no longer rejected it (the error queue); null: open
        ("released_at", _ts),
    ]
)
RUNS = pa_arrow.schema(
    [
        ("run_id", _str),
        ("command", _str),
        ("status", _str),
        ("message", _str),
        ("business_dates", pa_arrow.list_(pa_arrow.date32())),
        ("requested_dates", pa_arrow.list_(pa_arrow.date32())),
        ("plants", pa_arrow.list_(_str)),
        ("rows_read", pa_arrow.map_(_str, _i64)),
        ("rows_accepted", pa_arrow.map_(_str, _i64)),
        ("rows_quarantined", pa_arrow.map_(_str, _i64)),
        ("rows_superseded", pa_arrow.map_(_str, _i64)),
        ("rows_written", pa_arrow.map_(_str, _i64)),
        ("input_fingerprints", _str),
        ("watermark_recorded_at", _ts),
        ("started_at", _ts),
        ("finished_at", _ts),
        ("code_version", _str),
        ("released", pa_arrow.list_(_str)),  # quarantined rows this run released: "table:source_key"
        ("master_changed_dates", pa_arrow.list_(_str)),  # posted "plant|date" whose explosion changed
        ("master_fingerprints", pa_arrow.list_(_str)),  # see pipeline.domain.error_queue
        ("inputs_digest", _str),  # see pipeline.stages.rerun; null: not recorded (older runs, backfills, SQL)
    ]
)

BOM_ACCURACY = pa_arrow.schema(
    [
        ("component_item_id", _str),
        ("uom", _str),
        ("counts", _i64),
        ("first_counted_at", _ts),
        ("last_counted_at", _ts),
        ("theoretical_usage_qty", _f64),
        ("actual_usage_qty", _f64),
        ("usage_ratio", _f64),
        ("planned_scrap_pct", _f64),
        ("realised_scrap_pct", _f64),
        ("flag", _str),
        ("as_of", _ts),
    ]
)

STOCK_EXCEPTIONS = pa_arrow.schema(
    [
        ("count_id", _str),  # the window's closing count
        ("previous_count_id", _str),  # its opening count
        ("location_id", _str),
        ("item_id", _str),
        ("uom", _str),
        ("backflushed", pa_arrow.bool_()),
        ("previous_counted_at", _ts),
        ("counted_at", _ts),
        ("opening_qty", _f64),
        ("negative_at", _ts),  # the first moment the running book stock is below zero
        ("negative_date", pa_arrow.date32()),  # its business date, in the plant's time zone
        ("book_qty_at_negative", _f64),
        ("min_book_qty", _f64),
        ("min_at", _ts),
        ("movements_qty", _f64),  # the flows of the window up to and including negative_at
        ("receipts_qty", _f64),
        ("usage_qty", _f64),
        ("largest_flow_kind", _str),  # movement, receipt, by_product or usage
        ("largest_flow_id", _str),  # its movement_id or completion_id
        ("largest_flow_qty", _f64),  # its signed effect on the stock
        ("counted_qty", _f64),
    ]
)

BOM_SUGGESTIONS = pa_arrow.schema(
    [
        ("parent_item_id", _str),
        ("component_item_id", _str),
        ("uom", _str),
        ("windows", _i64),
        ("component_windows", _i64),
        ("produced_qty", _f64),
        ("theoretical_usage_qty", _f64),
        ("component_actual_usage_qty", _f64),
        ("current_qty_per", _f64),
        ("suggested_qty_per", _f64),
        ("change_pct", _f64),
        ("std_error", _f64),
        ("confidence", _f64),
        ("as_of", _ts),
    ]
)

# dataset -> (Arrow schema of the file columns, partition columns in path order)
#: What a run knows of each landing file of completions, movements and stock counts (pipeline.intake.landing)
LANDING_MANIFEST = pa_arrow.schema(
    [
        ("table", _str),
        ("source", _str),  # the file's path under the landing folder
        ("size", _i64),
        ("mtime_ns", _i64),
        ("fingerprint", _str),  # BLAKE2b of the file's bytes
        ("rows", _i64),
        ("min_event", _ts),  # completed_at / moved_at / counted_at of rows that have one
        ("max_event", _ts),
        ("min_version", _ts),  # completions: recorded_at, else completed_at, of valid rows
        ("max_version", _ts),
        ("min_id", _str),  # the row key of valid rows, stripped
        ("max_id", _str),
        ("floating", pa_arrow.bool_()),  # a row without a readable plant or event time
        ("plants", pa_arrow.list_(_str)),
        ("sites", pa_arrow.list_(_str)),  # plant_id + "\x1f" + location_id of valid rows
        ("id_hashes", pa_arrow.binary()),  # movements: sorted unique 64-bit hashes of the valid rows' ids
        ("described_at", _ts),
        # the piece of the file an entry describes (issue 17.1): a Parquet file has one entry per row
        # group (row_group 0..row_groups-1); a CSV file, or a Parquet file without row groups, one
        # entry for the whole file (row_group null). Manifests written before pieces lack both
        # columns: their Parquet entries (row_groups null) are described again, once.
        ("row_group", _i64),
        ("row_groups", _i64),  # how many row groups the Parquet file has (null for CSV)
    ]
)

OUTPUT_DATASETS: dict[str, tuple[pa_arrow.Schema, tuple[str, ...]]] = {
    "consumption": (CONSUMPTION, ("plant_id", "business_date")),
    "adjustments": (ADJUSTMENTS, ("plant_id", "business_date")),
    "postings": (POSTINGS, ("plant_id",)),
    "variance": (VARIANCE, ("plant_id", "count_date")),
    "stock_exceptions": (STOCK_EXCEPTIONS, ("plant_id", "count_date")),
    "quarantine": (QUARANTINE, ("table", "business_date")),
    "bom_accuracy": (BOM_ACCURACY, ("plant_id",)),
    "bom_suggestions": (BOM_SUGGESTIONS, ("plant_id",)),
    "runs": (RUNS, ()),
    "landing_manifest": (LANDING_MANIFEST, ()),
}
