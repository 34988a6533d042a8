"""BOM accuracy and BOM-line suggestions: what the counts say about the BOM's quantities."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.contract import schemas
from pipeline.domain.variance import beyond


def bom_accuracy(
    variance_rows: pd.DataFrame, planned_scrap: pd.DataFrame, config: Config, *, as_of: pd.Timestamp
) -> pd.DataFrame:
    """Per plant and backflushed component: actual vs theoretical usage over its trailing counts.

    Over the last `config.bom_accuracy_counts` checked counts of the component at the plant (all
    locations; counts without theoretical usage tell nothing about the BOM and are skipped):

    - actual usage = theoretical usage − variance (a shortfall at the count was used);
    - usage_ratio = Σ actual / Σ theoretical: pooled, so a count is weighted by its volume;
    - realised_scrap_pct = (1 + planned_scrap_pct/100) × usage_ratio − 1, in %: the scrap factor
      that would have made the BOM match. Counts cannot tell a wrong quantity from a wrong scrap
      factor; this is the one number that corrects either.

    flag, judged against the percent tolerance (`tolerances.pct`, 5 % when unset):
    `insufficient_counts` below 3 counts; `bom_qty_low` (the BOM understates usage: more was
    used) when the pooled deviation (usage_ratio − 1) × 100 AND the median of the counts' own
    usage variances both exceed +tolerance; `bom_qty_high` when both are below −tolerance;
    else `ok`. The median makes the flag mean "persistently off": one bad count (a lost pallet,
    a late receipt) moves the pooled figure but not the median, and one count of the opposite
    sign does not hide a BOM that is wrong in most counts.
    """
    rows = variance_rows[(variance_rows["status"] != "baseline") & variance_rows["backflushed"].astype(bool)
                         & (variance_rows["theoretical_usage_qty"] > 0)]
    if rows.empty:
        return pd.DataFrame(columns=["plant_id", *_ACCURACY_COLUMNS])
    rows = rows.sort_values(["plant_id", "item_id", "counted_at", "count_id"], kind="stable")
    rows = rows.groupby(["plant_id", "item_id"], sort=False).tail(max(1, config.bom_accuracy_counts))
    rows = rows.assign(actual=rows["theoretical_usage_qty"] - rows["variance_qty"],
                       pct=-rows["variance_qty"] / rows["theoretical_usage_qty"] * 100.0)
    g = rows.groupby(["plant_id", "item_id"], as_index=False).agg(
        uom=("uom", "last"), counts=("count_id", "size"), first_counted_at=("counted_at", "min"),
        last_counted_at=("counted_at", "max"), theoretical_usage_qty=("theoretical_usage_qty", "sum"),
        actual_usage_qty=("actual", "sum"), median_pct=("pct", "median"),
    )
    g = g.merge(planned_scrap, on=["plant_id", "item_id"], how="left")
    g["planned_scrap_pct"] = g["planned_scrap_pct"].astype("float64").fillna(0.0)
    g["usage_ratio"] = g["actual_usage_qty"] / g["theoretical_usage_qty"]
    g["realised_scrap_pct"] = ((1 + g["planned_scrap_pct"] / 100.0) * g["usage_ratio"] - 1) * 100.0
    deviation = (g["usage_ratio"] - 1) * 100.0
    tolerance = config.tolerances.pct if config.tolerances.pct is not None else DEFAULT_ACCURACY_PCT
    pooled_over, median_over = beyond(deviation, tolerance), beyond(g["median_pct"], tolerance)
    flag = np.select(
        [g["counts"] < MIN_ACCURACY_COUNTS,
         pooled_over & median_over & (deviation > 0) & (g["median_pct"] > 0),
         pooled_over & median_over & (deviation < 0) & (g["median_pct"] < 0)],
        ["insufficient_counts", "bom_qty_low", "bom_qty_high"], default="ok",
    )
    g["flag"] = flag
    g["as_of"] = as_of
    g = g.rename(columns={"item_id": "component_item_id"})
    return g[["plant_id", *_ACCURACY_COLUMNS]].reset_index(drop=True)


MIN_ACCURACY_COUNTS = 3  # fewer counts are an anecdote, not an estimate


DEFAULT_ACCURACY_PCT = 5.0


_ACCURACY_COLUMNS = [
    "component_item_id", "uom", "counts", "first_counted_at", "last_counted_at", "theoretical_usage_qty",
    "actual_usage_qty", "usage_ratio", "planned_scrap_pct", "realised_scrap_pct", "flag", "as_of",
]


def planned_scrap(bom_table: pd.DataFrame, plants: list[str]) -> pd.DataFrame:
    """Average planned scrap % of each component's consuming BOM lines, per plant.

    A plant's own lines count for the parents it has them for; group lines for the rest.
    """
    from pipeline.domain import bom

    lines = bom_table[bom_table["qty_per"] > 0].assign(r=1.0, line_error="", line_message="",
                                                       component_phantom=False)
    used = bom.plant_lines(lines, plants)
    out = used.groupby(["plant_id", "component_item_id"], as_index=False)["scrap_pct"].mean()
    return out.rename(columns={"component_item_id": "item_id", "scrap_pct": "planned_scrap_pct"})


SUGGESTION_RIDGE = 0.01  # λ: the BOM quantity's weight as a prior, relative to each line's own evidence


_SUGGESTION_COLUMNS = [
    "parent_item_id", "component_item_id", "uom", "windows", "component_windows", "produced_qty",
    "theoretical_usage_qty", "component_actual_usage_qty", "current_qty_per", "suggested_qty_per",
    "change_pct", "std_error", "confidence", "as_of",
]


def bom_suggestions(
    variance_rows: pd.DataFrame, parent_flows: pd.DataFrame, config: Config, *, as_of: pd.Timestamp,
    ridge: float = SUGGESTION_RIDGE,
) -> pd.DataFrame:
    """Per (plant, parent, component): the quantity per unit of parent that best explains the
    counted usage of the component over its last `config.bom_accuracy_counts` checked counts (the
    counts `bom_accuracy` pools).

    For a component with windows w (counts, all locations) and parents p (items whose explosion
    uses it, made at the counted location in the window): y_w = actual usage (theoretical usage −
    variance) less the fixed per-order quantities drawn in the window; x_wp = units of p made;
    b0_p = the line's current quantity per unit as the explosion drew it (Σ per-unit usage / Σ
    units over the windows). The suggestion b minimises

        ||y − X b||² + λ Σ_p s_p (b_p − b0_p)²,   s_p = Σ_w x_wp²,  λ = `ridge` (SUGGESTION_RIDGE),

    a ridge toward the BOM whose weight is a fixed fraction of each line's own evidence (unit
    free). It is solved in its dual form, a (windows × windows) system per component, stacked:
    b = b0 + Λ⁻¹ Xᵀ (I + X Λ⁻¹ Xᵀ)⁻¹ (y − X b0), so lines without enough windows to tell them
    apart stay near their BOM quantity. std_error: √(σ² [(XᵀX + Λ)⁻¹]_pp), σ² = residual sum of
    squares / (windows − lines); confidence = max(0, 1 − std_error / |b_p|), 0 when the
    component has no more windows than lines (the fit could be exact whatever the truth: the
    windows cannot tell the lines apart, the ridge only keeps them near their BOM quantity).

    Its length is one least-squares pipeline (evidence per window, design matrix per component, ridge
    solve, confidence); splitting it would pass the same six frames between the pieces.
    """
    rows = variance_rows[(variance_rows["status"] != "baseline") & variance_rows["backflushed"].astype(bool)
                         & (variance_rows["theoretical_usage_qty"] > 0)]
    if rows.empty or parent_flows.empty:
        return _empty_suggestions()
    rows = rows.sort_values(["plant_id", "item_id", "counted_at", "count_id"], kind="stable")
    rows = rows.groupby(["plant_id", "item_id"], sort=False).tail(max(1, config.bom_accuracy_counts))
    flows = parent_flows[parent_flows["units"] > 0].merge(
        rows[["count_id", "plant_id", "item_id"]], on="count_id", how="inner")
    # windows whose flows this run did not see (a count older than the inputs read) tell nothing
    rows = rows[rows["count_id"].isin(flows["count_id"])]
    if rows.empty:
        return _empty_suggestions()
    fixed = flows.groupby("count_id")["order_usage"].sum()
    rows = rows.assign(actual=(rows["theoretical_usage_qty"] - rows["variance_qty"]).to_numpy(dtype="float64"),
                       y=lambda r: r["actual"] - r["count_id"].map(fixed).fillna(0.0))
    group_keys = rows[["plant_id", "item_id"]].drop_duplicates().reset_index(drop=True)
    gindex = pd.MultiIndex.from_frame(group_keys)
    rows = rows.assign(g=gindex.get_indexer(pd.MultiIndex.from_frame(rows[["plant_id", "item_id"]])))
    rows = rows.assign(w=rows.groupby("g").cumcount())
    k, width = len(group_keys), int(rows["w"].max()) + 1
    flows = flows.merge(rows[["count_id", "g", "w"]], on="count_id", how="inner")
    flows = flows.assign(units2=flows["units"].to_numpy(dtype="float64") ** 2)
    lines = flows.groupby(["g", "parent_item_id"], as_index=False).agg(
        windows=("w", "size"), produced_qty=("units", "sum"), theoretical_usage_qty=("unit_usage", "sum"),
        s=("units2", "sum"))
    # a line of fixed quantities only (nothing per unit) has no quantity per unit to suggest: its
    # per-order quantities are taken off y above, its units are no regressor
    lines = lines[lines["theoretical_usage_qty"] > 0].reset_index(drop=True)
    if lines.empty:
        return _empty_suggestions()
    line_of = pd.MultiIndex.from_frame(lines[["g", "parent_item_id"]]).get_indexer(
        pd.MultiIndex.from_frame(flows[["g", "parent_item_id"]]))
    flows = flows[line_of >= 0]
    line_of = line_of[line_of >= 0]
    n = len(lines)
    gl = lines["g"].to_numpy(dtype="int64")
    b0 = lines["theoretical_usage_qty"].to_numpy() / lines["produced_qty"].to_numpy()
    lam = ridge * lines["s"].to_numpy()
    x = np.zeros((n, width))  # each line's units per window of its component
    x[line_of, flows["w"].to_numpy(dtype="int64")] = flows["units"].to_numpy(dtype="float64")
    y = np.zeros((k, width))
    y[rows["g"].to_numpy(), rows["w"].to_numpy()] = rows["y"].to_numpy(dtype="float64")
    present = np.zeros((k, width), dtype=bool)
    present[rows["g"].to_numpy(), rows["w"].to_numpy()] = True
    fitted0 = np.zeros((k, width))
    np.add.at(fitted0, gl, x * b0[:, None])
    m = np.zeros((k, width, width))  # X Λ⁻¹ Xᵀ per component
    np.add.at(m, gl, np.einsum("li,lj->lij", x, x) / lam[:, None, None])
    inv = np.linalg.inv(m + np.eye(width)[None, :, :])  # padded windows: a row of the identity
    alpha = np.einsum("kij,kj->ki", inv, y - fitted0)
    b = b0 + np.einsum("li,li->l", x, alpha[gl]) / lam
    fitted = np.zeros((k, width))
    np.add.at(fitted, gl, x * b[:, None])
    sse = np.where(present, (y - fitted) ** 2, 0.0).sum(axis=1)
    # residual degrees of freedom: windows − lines. Not the ridge's effective parameters (the trace of
    # M (I+M)⁻¹), which treat a line the windows cannot tell from another as known from its prior
    dof = present.sum(axis=1) - np.bincount(gl, minlength=k)
    sigma2 = np.where(dof >= 1, sse / np.maximum(dof, 1), np.nan)
    quad = np.einsum("li,lij,lj->l", x, inv[gl], x)
    variance_b = np.maximum(1.0 / lam - quad / lam**2, 0.0) * sigma2[gl]
    se = np.sqrt(variance_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = np.where(np.isfinite(se) & (b != 0), np.clip(1.0 - se / np.abs(b), 0.0, 1.0), 0.0)
    uom = rows.groupby("g")["uom"].last()
    actual = rows.groupby("g")["actual"].sum()
    count = rows.groupby("g").size()
    out = pd.DataFrame({
        "plant_id": group_keys["plant_id"].to_numpy()[gl],
        "parent_item_id": lines["parent_item_id"].to_numpy(),
        "component_item_id": group_keys["item_id"].to_numpy()[gl],
        "uom": uom.reindex(gl).to_numpy(),
        "windows": lines["windows"].to_numpy(dtype="int64"),
        "component_windows": count.reindex(gl).to_numpy(dtype="int64"),
        "produced_qty": lines["produced_qty"].to_numpy(),
        "theoretical_usage_qty": lines["theoretical_usage_qty"].to_numpy(),
        "component_actual_usage_qty": actual.reindex(gl).to_numpy(),
        "current_qty_per": b0,
        "suggested_qty_per": b,
        "change_pct": np.where(b0 != 0, (b / np.where(b0 != 0, b0, 1.0) - 1.0) * 100.0, np.nan),
        "std_error": se,
        "confidence": confidence,
    })
    out["as_of"] = as_of
    return out.sort_values(["plant_id", "component_item_id", "parent_item_id"]).reset_index(drop=True)


def _empty_suggestions() -> pd.DataFrame:
    columns = {f.name: pd.Series([], dtype="object") for f in schemas.BOM_SUGGESTIONS}
    return pd.DataFrame({"plant_id": pd.Series([], dtype="str"), **columns})
