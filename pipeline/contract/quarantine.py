"""Quarantine rows: the one shape every rejected input row takes (table, source key, code, message, row)."""

from __future__ import annotations

import pandas as pd

from pipeline.contract import schemas
from pipeline.contract.inputs import EVENT_TIME


def row_json(frame: pd.DataFrame) -> pd.Series:
    """Each row as a JSON object of its own columns (where it was read from goes to `source`)."""
    frame = frame.drop(columns=[c for c in ("_source",) if c in frame.columns])
    if frame.empty:
        return pd.Series([], dtype="str", index=frame.index)
    text = frame.to_json(orient="records", lines=True, date_format="iso", default_handler=str)
    return pd.Series(text.rstrip("\n").split("\n"), index=frame.index, dtype="str").str.replace("\\/", "/")


_EMPTY_QUARANTINE = pd.DataFrame(
    {
        "table": pd.Series([], dtype="str"),
        "plant_id": pd.Series([], dtype="str"),
        "business_date": pd.Series([], dtype="datetime64[ns]"),
        "source_key": pd.Series([], dtype="str"),
        "error_code": pd.Series([], dtype="str"),
        "message": pd.Series([], dtype="str"),
        "row": pd.Series([], dtype="str"),
        "source": pd.Series([], dtype="str"),
        "event_at": pd.Series([], dtype="datetime64[us, UTC]"),
    }
)


def empty_like(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame with the columns and dtypes of `frame` and no rows, holding none of its memory (a
    slice of Arrow-backed columns would keep every buffer alive)."""
    return pd.DataFrame({c: pd.Series([], dtype=frame[c].dtype) for c in frame.columns})


def empty_quarantine() -> pd.DataFrame:
    """A quarantine frame with no rows and the right columns."""
    return _EMPTY_QUARANTINE.copy()  # building one from scratch costs milliseconds, and it is asked for often


def source_keys(table: str, rows: pd.DataFrame) -> pd.Series:
    """The key that identifies a row of `table` to a person (its id, or its natural key)."""
    key = schemas.INPUT_KEYS[table]
    if key is not None and key in rows.columns:
        return rows[key].astype("str").where(rows[key].notna(), rows.get("_source", ""))
    if table == "bom":
        return (
            rows["plant_id"].fillna("*").astype("str")
            + ":" + rows["parent_item_id"].astype("str")
            + ">" + rows["component_item_id"].astype("str")
        )
    if table == "uom_conversions":
        return (
            rows["item_id"].fillna("*").astype("str")
            + ":" + rows["from_uom"].astype("str")
            + ">" + rows["to_uom"].astype("str")
        )
    if table == "item_costs":
        valid_from = pd.to_datetime(rows["valid_from"], errors="coerce")
        return rows["item_id"].astype("str") + "@" + valid_from.dt.strftime("%Y-%m-%d").fillna("?")
    return rows.get("_source", pd.Series("", index=rows.index))


def quarantine_frame(
    table: str,
    rows: pd.DataFrame,
    code: str | pd.Series,
    message: str | pd.Series,
    row_json: pd.Series,
) -> pd.DataFrame:
    plant = rows["plant_id"] if "plant_id" in rows.columns else pd.Series(None, index=rows.index)
    date = rows["business_date"] if "business_date" in rows.columns else pd.Series(pd.NaT, index=rows.index)
    moment = EVENT_TIME.get(table)
    event_at = (rows[moment] if moment in rows.columns and isinstance(rows[moment].dtype, pd.DatetimeTZDtype)
                else pd.Series(pd.NaT, index=rows.index, dtype="datetime64[us, UTC]"))
    frame = pd.DataFrame(
        {
            "table": table,
            "plant_id": plant.astype("str").where(plant.notna()),
            "business_date": pd.to_datetime(date).astype("datetime64[ns]"),
            "source_key": source_keys(table, rows).astype("str"),
            "error_code": code,
            "message": message,
            "row": row_json,
            "source": rows["_source"].astype("str") if "_source" in rows.columns else None,
            "event_at": event_at.astype("datetime64[us, UTC]"),
        },
        index=rows.index,
    )
    return frame.reset_index(drop=True)


def quarantine_rows(
    table: str, rows: pd.DataFrame, code: str | pd.Series, message: str | pd.Series
) -> pd.DataFrame:
    """Quarantine accepted rows of `table` for a reason found after validation."""
    columns = [c for c in schemas.column_kinds(table) if c in rows.columns] + ["_source"]
    return quarantine_frame(table, rows, code, message, row_json(rows[[c for c in columns if c in rows.columns]]))
