"""Tests of the synthetic landing-data generator, checked with independent pandas code."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.tools import generate as gen
from pipeline.tools.generate import generate_landing

START = datetime.date(2026, 3, 20)  # the range crosses the DST switch in Berlin (Mar 29)
DAYS = 14
PARAMS = {"items": 40, "completions": 6000, "days": DAYS, "seed": 11, "start": START}
TABLES = ("plants", "items", "uom_conversions", "bom", "completions", "stock_counts", "movements")
DATES = [START + datetime.timedelta(days=d) for d in range(DAYS)]


def read(out: Path, table: str) -> pd.DataFrame:
    files = sorted((out / table).iterdir())
    if files[0].suffix == ".csv":
        return pd.concat(
            [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files], ignore_index=True
        )
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("good")
    return out, generate_landing(out, **PARAMS)


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("bad")
    return out, generate_landing(out, **PARAMS, bad_rows=True)


@pytest.fixture(scope="module")
def bad_csv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    out = tmp_path_factory.mktemp("badcsv")
    return out, generate_landing(out, **PARAMS, bad_rows=True, file_format="csv")


def good_bom(out: Path) -> pd.DataFrame:
    bom = read(out, "bom")
    bom = bom[~bom.parent_item_id.str.startswith("X")].copy()
    bom["valid_from"] = pd.to_datetime(bom["valid_from"])
    bom["valid_to"] = pd.to_datetime(bom["valid_to"])
    return bom


def effective(bom: pd.DataFrame, plant: str, day: datetime.date) -> pd.DataFrame:
    """Lines used at `plant` on `day`: the plant's own lines for a parent if it has any, else the group's."""
    own = set(bom.loc[bom.plant_id == plant, "parent_item_id"])
    use = bom[(bom.plant_id == plant) | (bom.plant_id.isna() & ~bom.parent_item_id.isin(own))]
    ts = pd.Timestamp(day)
    return use[
        (use.valid_from.isna() | (use.valid_from <= ts))
        & (use.valid_to.isna() | (use.valid_to > ts))
    ]


def local_dates(df: pd.DataFrame, col: str, plants: pd.DataFrame) -> pd.Series:
    out = pd.Series(index=df.index, dtype=object)
    for plant, tz in zip(plants.plant_id, plants.timezone, strict=True):
        sel = df.plant_id == plant
        out[sel] = df.loc[sel, col].dt.tz_convert(tz).dt.date
    return out


def convertible(bom: pd.DataFrame, items: pd.DataFrame, conv: pd.DataFrame) -> pd.Series:
    """Whether every line's uom converts to its component's base uom (same unit or a conversion row)."""
    base = bom.component_item_id.map(items.set_index("item_id").uom)
    line = bom.uom.where(bom.uom.notna(), base)
    generic = set(
        zip(conv[conv.item_id.isna()].from_uom, conv[conv.item_id.isna()].to_uom, strict=True)
    )
    specific = set(zip(conv.item_id, conv.from_uom, conv.to_uom, strict=True))
    ok = [
        u == b or (u, b) in generic or (c, u, b) in specific
        for c, u, b in zip(bom.component_item_id, line, base, strict=True)
    ]
    return pd.Series(ok, index=bom.index)


# --------------------------------------------------------------------------- files


def files_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_deterministic(tmp_path: Path, file_format: str) -> None:
    args = {**PARAMS, "completions": 2000, "bad_rows": True, "file_format": file_format}
    a = generate_landing(tmp_path / "a", **args)
    b = generate_landing(tmp_path / "b", **args)
    assert a == b
    fa, fb = files_bytes(tmp_path / "a"), files_bytes(tmp_path / "b")
    assert fa.keys() == fb.keys()
    assert fa == fb
    c = generate_landing(tmp_path / "c", **{**args, "seed": 12})
    assert files_bytes(tmp_path / "c") != fa
    assert c["completions"] == a["completions"]


def test_layout_and_counts(
    landing: tuple[Path, dict[str, int]], bad_csv: tuple[Path, dict[str, int]]
) -> None:
    out, counts = landing
    assert set(counts) == set(TABLES)
    for t in ("plants", "items", "uom_conversions", "bom"):
        assert (out / t / f"{t}.parquet").is_file()
    for t in ("completions", "stock_counts", "movements"):
        assert (out / t / "part-00000.parquet").is_file()
    for t in TABLES:
        assert pq.read_table(out / t).num_rows == counts[t], t
    assert counts["completions"] == PARAMS["completions"]
    assert counts["stock_counts"] == round(6000 / 26)
    assert counts["movements"] == 600
    assert counts["plants"] == 3
    comp = pq.read_schema(out / "completions" / "part-00000.parquet")
    assert comp.field("completed_at").type == pa.timestamp("us", tz="UTC")
    assert comp.field("recorded_at").type == pa.timestamp("us", tz="UTC")
    assert comp.field("qty_good").type == pa.float64()
    bom = pq.read_schema(out / "bom" / "bom.parquet")
    assert bom.field("valid_from").type == pa.date32()
    assert bom.field("valid_to").type == pa.date32()
    assert pq.read_schema(out / "stock_counts" / "part-00000.parquet").field(
        "counted_at"
    ).type == pa.timestamp("us", tz="UTC")
    cout, ccounts = bad_csv
    for t in TABLES:
        assert len(read(cout, t)) == ccounts[t], t


def test_rerun_cleans_folders(tmp_path: Path) -> None:
    generate_landing(tmp_path, **{**PARAMS, "completions": 500})
    generate_landing(tmp_path, **{**PARAMS, "completions": 500, "file_format": "csv"})
    assert not list(tmp_path.rglob("*.parquet"))
    assert (tmp_path / "completions" / "part-00000.csv").is_file()


def test_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gen, "CHUNK_ROWS", 1000)
    counts = generate_landing(
        tmp_path, **{**PARAMS, "completions": 2500, "counts": 2100, "movements": 1500}
    )
    assert sorted(p.name for p in (tmp_path / "completions").iterdir()) == [
        "part-00000.parquet",
        "part-00001.parquet",
        "part-00002.parquet",
    ]
    assert len(list((tmp_path / "stock_counts").iterdir())) == 3
    assert len(list((tmp_path / "movements").iterdir())) == 2
    c = read(tmp_path, "completions")
    assert len(c) == counts["completions"] == 2500
    # ids of different chunks never collide: an id's rows are versions of one completion
    per_id = c.groupby("completion_id").agg(n=("item_id", "size"), items=("item_id", "nunique"))
    assert (per_id["items"] == 1).all()
    assert per_id.n.max() <= 2
    assert read(tmp_path, "stock_counts").count_id.is_unique
    assert read(tmp_path, "movements").movement_id.is_unique


def test_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_landing(tmp_path, **{**PARAMS, "file_format": "json"})
    with pytest.raises(ValueError):
        generate_landing(tmp_path, **{**PARAMS, "days": 0})
    counts = generate_landing(tmp_path, items=3, completions=0, days=1, seed=0, plants=1)
    assert counts["completions"] == 0
    assert counts["stock_counts"] == 50 and counts["movements"] == 100
    assert pq.read_table(tmp_path / "completions").num_rows == 0


# --------------------------------------------------------------------------- BOM


def test_every_parent_has_an_effective_bom(landing: tuple[Path, dict[str, int]]) -> None:
    out, _ = landing
    bom = good_bom(out)
    items = read(out, "items")
    plants = read(out, "plants")
    parents = set(items.loc[items.item_id.str.match(r"(FG|SA)-") | items.phantom, "item_id"])
    assert len(parents) > 40
    for plant in plants.plant_id:
        for day in DATES:
            missing = parents - set(effective(bom, plant, day).parent_item_id)
            assert not missing, (plant, day, sorted(missing)[:5])
    # stricter reading too: a plant's own lines alone cover every date
    own = bom[bom.plant_id.notna()]
    for (plant, parent), _ in own.groupby(["plant_id", "parent_item_id"]):
        for day in DATES:
            eff = effective(
                own[(own.plant_id == plant) & (own.parent_item_id == parent)], plant, day
            )
            assert len(eff), (plant, parent, day)


def test_no_cycles(landing: tuple[Path, dict[str, int]]) -> None:
    bom = good_bom(landing[0])
    edges = bom[["parent_item_id", "component_item_id"]].drop_duplicates()
    nodes = set(edges.parent_item_id) | set(edges.component_item_id)
    indeg = dict.fromkeys(nodes, 0)
    for c in edges.component_item_id:
        indeg[c] += 1
    children = edges.groupby("parent_item_id").component_item_id.apply(list).to_dict()
    ready = [n for n, d in indeg.items() if d == 0]
    seen = 0
    while ready:
        n = ready.pop()
        seen += 1
        for c in children.get(n, []):
            indeg[c] -= 1
            if indeg[c] == 0:
                ready.append(c)
    assert seen == len(nodes)


def test_bom_features(landing: tuple[Path, dict[str, int]]) -> None:
    out, _ = landing
    bom = good_bom(out)
    items = read(out, "items").set_index("item_id")
    conv = read(out, "uom_conversions")
    phantom = items.phantom
    start, end = pd.Timestamp(START), pd.Timestamp(START + datetime.timedelta(days=DAYS))

    # nested phantoms: a phantom whose BOM contains a phantom, used by a FG
    nested = bom[bom.parent_item_id.map(phantom) & bom.component_item_id.map(phantom)]
    assert len(nested)
    assert (
        bom[bom.parent_item_id.str.startswith("FG-")]
        .component_item_id.isin(nested.parent_item_id)
        .any()
    )
    # 4 levels: FG -> phantom -> phantom -> raw material
    levels = bom.merge(
        bom, left_on="component_item_id", right_on="parent_item_id", suffixes=("", "_2")
    )
    levels = levels.merge(
        bom, left_on="component_item_id_2", right_on="parent_item_id", suffixes=("", "_3")
    )
    assert levels.parent_item_id.str.startswith("FG-").any()
    # plant-specific BOMs for some parents; those parents keep group lines for the other plants
    own = bom[bom.plant_id.notna()]
    assert 0 < own.parent_item_id.nunique() < bom.parent_item_id.nunique() / 4
    assert own.parent_item_id.isin(bom[bom.plant_id.isna()].parent_item_id).all()
    assert own.parent_item_id.str.startswith("FG-").any()
    # by-products on FGs; scrap_pct on some positive lines (and some by-product lines, where it is ignored)
    byp = bom[bom.qty_per < 0]
    assert (
        byp.parent_item_id.str.startswith("FG-").any()
        and byp.component_item_id.str.startswith("BP-").all()
    )
    assert ((bom.qty_per > 0) & (bom.scrap_pct > 0)).any()
    assert bom.scrap_pct.between(0, 5).all()
    assert (bom.qty_per != 0).all() and (bom.base_qty > 0).all()
    # base_qty other than 1
    assert set(bom.base_qty.unique()) >= {1.0, 10.0, 100.0}
    # lines in a unit other than the component's base unit, all convertible
    base = bom.component_item_id.map(items.uom)
    other = bom[bom.uom.notna() & (bom.uom != base)]
    assert {"g", "kg", "mL", "BOX"} <= set(other.uom)
    assert (bom.uom.notna() & (bom.uom == base)).any()  # the base unit spelled out
    assert convertible(bom, items.reset_index(), conv).all()
    box_items = set(bom.loc[bom.uom == "BOX", "component_item_id"])
    specific = set(conv.loc[conv.item_id.notna() & (conv.from_uom == "BOX"), "item_id"])
    assert (
        box_items & specific and box_items - specific
    )  # both the item-specific and the generic factor
    generic_box = conv[conv.item_id.isna() & (conv.from_uom == "BOX")].factor
    assert (
        conv[conv.item_id.notna() & (conv.from_uom == "BOX")].factor != generic_box.iloc[0]
    ).all()
    # effectivity switch inside the range: a line ends on D and its replacement starts on D
    inside = bom[(bom.valid_to > start) & (bom.valid_to < end)]
    starts = bom[(bom.valid_from > start) & (bom.valid_from < end)]
    switch = inside.merge(
        starts,
        left_on=["plant_id", "parent_item_id", "valid_to"],
        right_on=["plant_id", "parent_item_id", "valid_from"],
    )
    assert len(switch)
    assert (switch.qty_per_x != switch.qty_per_y).any()
    # lines never effective in the range (expired before it, starting after it)
    assert (bom.valid_to <= start).any() and (bom.valid_from >= end).any()
    # stocked sub-assemblies appear as components and have their own BOM
    sa = bom[bom.component_item_id.str.startswith("SA-")].component_item_id
    assert len(sa) and not sa.map(phantom).any() and sa.isin(bom.parent_item_id).all()
    # non-backflushed components are used
    assert (~bom.component_item_id.map(items.backflush)).any()


def test_items(landing: tuple[Path, dict[str, int]]) -> None:
    items = read(landing[0], "items")
    assert items.item_id.is_unique
    assert (items.standard_cost > 0).all()
    assert (items.standard_cost == items.standard_cost.round(4)).all()
    prefix = items.item_id.str.split("-").str[0]
    assert set(prefix) == {"FG", "SA", "PH1", "PH2", "RM", "PK", "BP"}
    assert (prefix == "FG").sum() == PARAMS["items"]
    assert set(items.loc[prefix == "RM", "uom"]) == {"kg", "g", "L"}
    assert items.loc[items.uom == "kg", "uom_decimals"].eq(3).all()
    assert items.loc[items.uom == "EA", "uom_decimals"].eq(0).all()
    assert items.loc[items.phantom, "item_id"].str.startswith("PH").all()
    assert not items.backflush.all()
    assert set(items.loc[prefix == "BP", "uom"]) == {"kg"}


# --------------------------------------------------------------------------- transactions


def test_completions(landing: tuple[Path, dict[str, int]]) -> None:
    out, _ = landing
    c = read(out, "completions")
    items = read(out, "items")
    plants = read(out, "plants")
    assert c.item_id.isin(items.item_id).all()
    assert c.item_id.str.match(r"(FG|SA)-").all() and c.item_id.str.startswith("SA-").any()
    assert (c.location_id.str.split("-").str[0] == c.plant_id).all()
    assert c.groupby("plant_id").location_id.nunique().between(2, 3).all()
    assert (c.qty_good >= 0).all() and (c.qty_scrap >= 0).all()
    assert (c.qty_good == c.qty_good.round()).mean() > 0.95
    assert (c.qty_scrap == 0).mean() > 0.8 and (c.qty_scrap > 0).any()
    assert c.completed_at.notna().all()
    assert (c.recorded_at.isna() | (c.recorded_at >= c.completed_at)).all()
    assert c.recorded_at.isna().any()
    assert c.order_id.notna().mean() > 0.9
    # business dates inside the range, some within an hour of local midnight
    dates = local_dates(c, "completed_at", plants)
    assert dates.min() == START and dates.max() == DATES[-1]
    tod = pd.Series(index=c.index, dtype="float64")
    for plant, tz in zip(plants.plant_id, plants.timezone, strict=True):
        sel = c.plant_id == plant
        local = c.loc[sel, "completed_at"].dt.tz_convert(tz)
        tod[sel] = local.dt.hour * 60 + local.dt.minute
    assert ((tod < 60) | (tod >= 23 * 60)).mean() > 0.1
    # popularity is skewed
    share = c.item_id.value_counts(normalize=True)
    assert share.iloc[0] > 5 * share.median()

    versions = c.groupby("completion_id")
    n = versions.size()
    multi = c[c.completion_id.isin(n[n > 1].index)]
    repeats = multi[multi.duplicated(keep=False)].completion_id.unique()
    changed = multi.drop_duplicates()
    changed = changed[changed.completion_id.duplicated(keep=False)].sort_values(
        ["completion_id", "recorded_at"]
    )
    last = changed.groupby("completion_id").tail(1)
    first = changed.groupby("completion_id").head(1)
    cancels = last[(last.qty_good == 0) & (last.qty_scrap == 0)]
    corrections = last[(last.qty_good != 0) | (last.qty_scrap != 0)]
    assert len(repeats) >= 3
    assert len(cancels) >= 3
    assert len(corrections) >= 20
    assert (
        corrections.qty_good.to_numpy()
        != first.set_index("completion_id").loc[corrections.completion_id].qty_good.to_numpy()
    ).all()
    assert (last.recorded_at.to_numpy() > first.recorded_at.to_numpy()).all()
    # no ambiguity in good data: the rows of an id at its latest recorded_at are identical
    rec = c.recorded_at.fillna(c.completed_at)
    latest = c[rec == rec.groupby(c.completion_id).transform("max")].drop_duplicates()
    assert latest.completion_id.is_unique
    # all-scrap completions are not cancellations
    assert ((c.qty_good == 0) & (c.qty_scrap > 0)).any()


def test_stock_counts(landing: tuple[Path, dict[str, int]]) -> None:
    out, _ = landing
    k = read(out, "stock_counts")
    c = read(out, "completions")
    plants = read(out, "plants")
    items = read(out, "items").set_index("item_id")
    assert k.count_id.is_unique
    assert (k.counted_qty >= 0).all()
    assert set(k.location_id) <= set(c.location_id)
    dates = local_dates(k, "counted_at", plants)
    assert dates.between(START, DATES[-1]).all()
    per_key = k.groupby(["plant_id", "location_id", "item_id"]).size()
    assert (per_key >= 2).all() and per_key.mean() > 4
    prefix = k.item_id.str.split("-").str[0]
    assert {"RM", "SA", "FG"} <= set(prefix) and (prefix == "FG").mean() < 0.2
    assert not k.item_id.map(items.phantom).any()
    # counts at various times of day, including exactly local midnight
    hours = set()
    for plant, tz in zip(plants.plant_id, plants.timezone, strict=True):
        local = k.loc[k.plant_id == plant, "counted_at"].dt.tz_convert(tz)
        hours |= set(local.dt.hour)
        assert ((local.dt.hour == 0) & (local.dt.minute == 0) & (local.dt.second == 0)).any()
    assert len(hours) > 20


def test_movements(landing: tuple[Path, dict[str, int]]) -> None:
    out, _ = landing
    m = read(out, "movements")
    items = read(out, "items").set_index("item_id")
    plants = read(out, "plants")
    assert m.movement_id.is_unique
    assert set(m.kind) == {"receipt", "shipment", "issue", "transfer", "scrap"}
    assert (m.qty != 0).all()
    rec = m[m.kind == "receipt"]
    assert (rec.qty > 0).all() and rec.item_id.str.match(r"(RM|PK)-").all()
    ship = m[m.kind == "shipment"]
    assert (ship.qty < 0).all() and ship.item_id.str.startswith("FG-").mean() > 0.8
    issue = m[m.kind == "issue"]
    assert (issue.qty < 0).all() and (~issue.item_id.map(items.backflush)).all()
    assert (m[m.kind == "scrap"].qty < 0).all()
    tr = m[m.kind == "transfer"]
    assert len(tr) and len(tr) % 2 == 0
    net = tr.groupby(["plant_id", "item_id", "moved_at"]).qty.sum()
    assert np.allclose(net, 0)
    assert not m.item_id.map(items.phantom).any()
    assert local_dates(m, "moved_at", plants).between(START, DATES[-1]).all()


# --------------------------------------------------------------------------- bad rows


def test_good_data_stays_good(
    landing: tuple[Path, dict[str, int]], bad: tuple[Path, dict[str, int]]
) -> None:
    for t in TABLES:
        good, mixed = read(landing[0], t), read(bad[0], t)
        keep = pd.Series(True, index=mixed.index)
        for col in ("item_id", "parent_item_id", "completion_id", "count_id", "movement_id"):
            if col in mixed:
                keep &= ~mixed[col].fillna("").str.startswith("X") & ~mixed[col].fillna(
                    ""
                ).str.match(r"[CKM]X-")
        mixed = mixed[keep]
        cols = list(good.columns)
        a = good.sort_values(cols).reset_index(drop=True)
        b = mixed.sort_values(cols).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_index_type=False)


def check_bad_cases(out: Path, csv: bool) -> None:
    items = read(out, "items")
    bom = read(out, "bom")
    conv = read(out, "uom_conversions")
    c = read(out, "completions")
    k = read(out, "stock_counts")
    m = read(out, "movements")
    if csv:
        for df, cols in (
            (items, ["standard_cost"]),
            (bom, ["qty_per", "base_qty", "scrap_pct"]),
            (conv, ["factor"]),
        ):
            for col in cols:
                df[col] = pd.to_numeric(df[col])
        items["phantom"] = items.phantom == "true"
        for df in (items, bom, conv):
            df.replace("", np.nan, inplace=True)
        bom["valid_from"] = pd.to_datetime(bom.valid_from)
        bom["valid_to"] = pd.to_datetime(bom.valid_to)
        # unparseable numbers and timestamps
        assert (pd.to_numeric(c.qty_good, errors="coerce").isna() & (c.qty_good != "")).any()
        assert (pd.to_numeric(m.qty, errors="coerce").isna() & (m.qty != "")).any()
        parsed = pd.to_datetime(c.completed_at, format="ISO8601", utc=True, errors="coerce")
        assert (parsed.isna() & (c.completed_at != "")).any()
        c_at = parsed
        c_good = pd.to_numeric(c.qty_good, errors="coerce")
        k_qty = pd.to_numeric(k.counted_qty, errors="coerce")
        c_rec = pd.to_datetime(c.recorded_at, format="ISO8601", utc=True, errors="coerce")
    else:
        bom["valid_from"] = pd.to_datetime(bom.valid_from)
        bom["valid_to"] = pd.to_datetime(bom.valid_to)
        c_at, c_good, k_qty, c_rec = c.completed_at, c.qty_good, k.counted_qty, c.recorded_at
        assert c_at.isna().any()
        assert m.moved_at.isna().any()
    # INVALID
    assert (c_good < 0).any()
    assert (bom.scrap_pct >= 100).any() and (bom.qty_per == 0).any()
    assert (k_qty < 0).any()
    # UNKNOWN_ITEM
    assert not c.item_id.isin(items.item_id).all()
    # NO_BOM: an item without lines, and a FG whose phantom's lines all expired before the range
    assert (c.item_id.isin(items.item_id) & ~c.item_id.isin(bom.parent_item_id)).any()
    start = pd.Timestamp(START)
    expired = bom.groupby("parent_item_id").valid_to.apply(
        lambda s: s.notna().all() and (s <= start).all()
    )
    phantoms = set(items.loc[items.phantom, "item_id"])
    dead = set(expired[expired].index) & phantoms
    assert dead and bom[bom.component_item_id.isin(dead)].parent_item_id.isin(c.item_id).any()
    # BOM_CYCLE reachable from a completed item
    children = bom.groupby("parent_item_id").component_item_id.apply(set).to_dict()

    def cyclic(node: str, path: tuple[str, ...]) -> bool:
        if node in path:
            return True
        return any(cyclic(ch, (*path, node)) for ch in children.get(node, ()))

    assert any(cyclic(i, ()) for i in set(c.item_id))
    # NO_UOM_CONVERSION on an item that has completions
    bad_lines = bom[~convertible(bom, items, conv)]
    assert len(bad_lines) and bad_lines.parent_item_id.isin(c.item_id).any()
    # DUPLICATE_ID: different rows with the same id and the same recorded_at
    rows = c.assign(_rec=c_rec).drop_duplicates()
    dup = rows[rows.duplicated(["completion_id", "_rec"], keep=False)]
    assert len(dup) >= 2 and dup[["qty_good"]].nunique().iloc[0] > 1


def test_bad_rows_parquet(bad: tuple[Path, dict[str, int]]) -> None:
    check_bad_cases(bad[0], csv=False)


def test_bad_rows_csv(bad_csv: tuple[Path, dict[str, int]]) -> None:
    check_bad_cases(bad_csv[0], csv=True)


def test_no_bad_cases_in_good_data(landing: tuple[Path, dict[str, int]]) -> None:
    out, _ = landing
    items, bom, c = read(out, "items"), good_bom(out), read(out, "completions")
    assert c.item_id.isin(items.item_id).all() and c.item_id.isin(bom.parent_item_id).all()
    assert c.completed_at.notna().all() and (c.qty_good >= 0).all()
    assert (bom.scrap_pct < 100).all() and (read(out, "stock_counts").counted_qty >= 0).all()
    assert not any(s.startswith("X") for s in items.item_id)


# --------------------------------------------------------------------------- CSV


def test_csv_matches_parquet(tmp_path: Path) -> None:
    args = {**PARAMS, "completions": 3000}
    generate_landing(tmp_path / "p", **args)
    generate_landing(tmp_path / "c", **args, file_format="csv")
    for t, ts_cols in (
        ("completions", ["completed_at", "recorded_at"]),
        ("stock_counts", ["counted_at"]),
        ("movements", ["moved_at"]),
    ):
        p = read(tmp_path / "p", t)
        c = pd.read_csv(tmp_path / "c" / t / "part-00000.csv")
        raw = c[ts_cols[0]]
        assert raw.str.contains(r"[+-]\d\d:\d\d$").any()  # with an explicit offset
        assert raw.str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$").any()  # no offset: UTC
        for col in ts_cols:
            c[col] = pd.to_datetime(c[col], format="ISO8601", utc=True).dt.as_unit("us")
            assert (c[col].dropna() == p[col].dropna()).all()
        num = [col for col in p.columns if p[col].dtype == "float64"]
        assert np.allclose(c[num].to_numpy(float), p[num].to_numpy(float), equal_nan=True)
    offsets = pd.read_csv(
        tmp_path / "c" / "completions" / "part-00000.csv"
    ).completed_at.str.extract(r"([+-]\d\d:\d\d)$")[0]
    assert {"+01:00", "+02:00", "-05:00", "+08:00"} <= set(
        offsets.dropna()
    )  # Berlin DST both sides
    for t in ("plants", "items", "uom_conversions", "bom"):
        c = pd.read_csv(tmp_path / "c" / t / f"{t}.csv")
        assert len(c) == pq.read_table(tmp_path / "p" / t).num_rows
    bom = pd.read_csv(tmp_path / "c" / "bom" / "bom.csv", parse_dates=["valid_from", "valid_to"])
    assert bom.valid_from.notna().any()
    items = pd.read_csv(tmp_path / "c" / "items" / "items.csv")
    assert items.phantom.dtype == bool
