"""BOM explosion (contract semantics 1 and 4) with numbers worked out by hand.

Most tests go the public way: landing CSV -> `job.run_dates` -> the Parquet outputs. A few call
`pipeline.domain.bom` directly where the per-unit requirement is the clearest thing to look at.
Every expected number carries its arithmetic in a comment.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.domain import bom
from tests.support.landing import completion, make_landing, read, run

DAY = "2026-03-02"
AT = "2026-03-02T10:00:00Z"  # plants without a time zone are UTC: business date 2026-03-02


def item(item_id: str, uom: str = "EA", *, cost: float = 0.0, phantom: bool = False,
         backflush: bool = True, decimals: int = 3) -> dict[str, object]:
    return {"item_id": item_id, "uom": uom, "standard_cost": cost, "phantom": str(phantom).lower(),
            "backflush": str(backflush).lower(), "uom_decimals": decimals}


def line(parent: str, component: str, qty_per: float, *, plant: str | None = None, base_qty: float = 1,
         uom: str | None = None, scrap_pct: float = 0, valid_from: str | None = None,
         valid_to: str | None = None) -> dict[str, object]:
    return {"plant_id": plant, "parent_item_id": parent, "component_item_id": component, "qty_per": qty_per,
            "base_qty": base_qty, "uom": uom, "scrap_pct": scrap_pct, "valid_from": valid_from,
            "valid_to": valid_to}


def consumption_of(root: Path) -> dict[tuple[str, str, str, str], float]:
    """(plant, location, produced item, component) -> qty of the consumption dataset."""
    frame = read(root, "consumption")
    return {(p, loc, i, c): q for p, loc, i, c, q in
            zip(frame.plant_id, frame.location_id, frame.item_id, frame.component_item_id, frame.qty, strict=True)}


def adjustments_of(root: Path) -> dict[tuple[str, str, str, str], float]:
    """(plant, location, item, kind) -> qty of the adjustments dataset."""
    frame = read(root, "adjustments")
    return {(p, loc, i, k): q for p, loc, i, k, q in
            zip(frame.plant_id, frame.location_id, frame.item_id, frame.kind, frame.qty, strict=True)}


def approx(expected: dict) -> object:
    return pytest.approx(expected, rel=1e-12, abs=1e-12)


# ------------------------------------------------------------------ nested phantoms, two paths


NESTED_ITEMS = [item("FG"), item("PH1", phantom=True), item("PH2", phantom=True), item("RM", "kg"), item("C")]
NESTED_BOM = [
    line("FG", "PH1", 2),
    line("PH1", "PH2", 3),
    line("PH2", "RM", 0.5),
    line("FG", "C", 1),  # C is reached directly ...
    line("PH1", "C", 4),  # ... and through PH1
]


@pytest.fixture(scope="module")
def nested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nested")
    landing = make_landing(root, items=NESTED_ITEMS, bom=NESTED_BOM,
                           completions=[completion("K1", "FG", 5), completion("K2", "FG", 1)])
    run(root, landing, [DAY])
    return root


def test_nested_phantoms_multiply_down_and_paths_add_up(nested: Path) -> None:
    assert consumption_of(nested) == approx({
        ("P1", "L1", "FG", "RM"): 18.0,  # (5 + 1) FG * 2 PH1 * 3 PH2 * 0.5 kg = 6 * 3 = 18
        ("P1", "L1", "FG", "C"): 54.0,  # (5 + 1) * (1 direct + 2 PH1 * 4) = 6 * 9 = 54
    })  # phantoms PH1 and PH2 never appear as consumed components


def test_nested_consumption_columns(nested: Path) -> None:
    frame = read(nested, "consumption").set_index("component_item_id")
    assert frame.loc["RM", "uom"] == "kg"  # the component's base unit
    assert frame.loc["C", "uom"] == "EA"
    assert frame["backflushed"].tolist() == [True, True]
    assert frame["completions"].tolist() == [2, 2]  # K1 and K2
    assert set(frame["business_date"]) == {pd.Timestamp(DAY)}


def test_nested_adjustments(nested: Path) -> None:
    assert adjustments_of(nested) == approx({
        ("P1", "L1", "FG", "production_receipt"): 6.0,  # 5 + 1 good units
        ("P1", "L1", "RM", "backflush_issue"): -18.0,  # issue is negative: -(6 * 2 * 3 * 0.5)
        ("P1", "L1", "C", "backflush_issue"): -54.0,  # -(6 * (1 + 2 * 4))
    })


def test_explode_per_unit_requirements() -> None:
    items = pd.DataFrame({"item_id": ["FG", "PH1", "PH2", "RM", "C"], "uom": ["EA", "EA", "EA", "kg", "EA"],
                          "phantom": [False, True, True, False, False]})
    lines = bom.line_requirements(_bom_frame(NESTED_BOM), items, _no_conversions())
    keys = pd.DataFrame({"key": [0], "plant_id": ["P1"], "item_id": ["FG"],
                         "effective_date": [pd.Timestamp(DAY)]})
    result = bom.explode(keys, bom.plant_lines(lines, ["P1"]), items)
    assert result.errors.empty
    per_unit = dict(zip(result.requirements.component_item_id, result.requirements.qty_per_unit, strict=True))
    assert per_unit == approx({"RM": 3.0,  # 2 * 3 * 0.5
                               "C": 9.0})  # 1 + 2 * 4


def _bom_frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in ("valid_from", "valid_to"):
        frame[column] = pd.to_datetime(frame[column])
    return frame


def _no_conversions() -> pd.DataFrame:
    return pd.DataFrame({"item_id": pd.Series([], dtype="str"), "from_uom": pd.Series([], dtype="str"),
                         "to_uom": pd.Series([], dtype="str"), "factor": pd.Series([], dtype="float64")})


# ------------------------------------------------------------------ plant BOM replaces group BOM


PLANT_BOM = [
    line("FG", "A", 1),  # group
    line("FG", "B", 2),  # group; B is in the group BOM only
    line("FG", "A", 5, plant="P2"),
    line("FG", "X", 3, plant="P2"),
    line("FG", "A", 7, plant="P3", valid_to="2026-03-01"),  # P3's own BOM for FG has expired
]


@pytest.fixture(scope="module")
def plant_bom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plantbom")
    landing = make_landing(
        root,
        items=[item("FG"), item("A"), item("B"), item("X")],
        bom=PLANT_BOM,
        completions=[completion("K1", "FG", 1, plant="P1"), completion("K2", "FG", 10, plant="P2"),
                     completion("K3", "FG", 100, plant="P3")],
    )
    run(root, landing, [DAY])
    return root


def test_plant_bom_replaces_group_bom(plant_bom: Path) -> None:
    assert consumption_of(plant_bom) == approx({
        ("P1", "L1", "FG", "A"): 1.0,  # P1 has no own lines: group, 1 * 1
        ("P1", "L1", "FG", "B"): 2.0,  # group, 1 * 2
        ("P2", "L1", "FG", "A"): 50.0,  # P2's own line: 10 * 5 (not 10 * 1 from the group)
        ("P2", "L1", "FG", "X"): 30.0,  # 10 * 3; and no B at P2 although B is only in the group BOM
    })


def test_plant_with_only_expired_own_lines_does_not_fall_back_to_group(plant_bom: Path) -> None:
    q = read(plant_bom, "quarantine")
    row = q[q["source_key"] == "K3"].iloc[0]
    assert row["error_code"] == "NO_BOM"
    assert "FG" in row["message"] and "P3" in row["message"]
    assert not (read(plant_bom, "adjustments")["plant_id"] == "P3").any()


def test_plant_lines_unit() -> None:
    lines = pd.DataFrame({"plant_id": [None, None, "P2", "P2"], "parent_item_id": ["FG", "FG", "FG", "FG"],
                          "component_item_id": ["A", "B", "A", "X"], "r": [1.0, 2.0, 5.0, 3.0]})
    used = bom.plant_lines(lines, ["P1", "P2"])
    got = sorted(zip(used.plant_id, used.component_item_id, used.r, strict=True))
    assert got == [("P1", "A", 1.0), ("P1", "B", 2.0),  # group lines copied to P1
                   ("P2", "A", 5.0), ("P2", "X", 3.0)]  # P2 only its own


# ------------------------------------------------------------------ units of measure


@pytest.fixture(scope="module")
def uoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uom")
    landing = make_landing(
        root,
        items=[item("FG"), item("FLOUR", "kg"), item("SCREW"), item("NUT")],
        uom_conversions=[
            {"item_id": None, "from_uom": "g", "to_uom": "kg", "factor": 0.001},
            {"item_id": None, "from_uom": "BOX", "to_uom": "EA", "factor": 10},  # generic box of 10
            {"item_id": "SCREW", "from_uom": "BOX", "to_uom": "EA", "factor": 12},  # screws come by 12
        ],
        bom=[line("FG", "FLOUR", 250, uom="g"), line("FG", "SCREW", 2, uom="BOX"),
             line("FG", "NUT", 1, uom="BOX")],
        completions=[completion("K1", "FG", 3)],
    )
    run(root, landing, [DAY])
    return root


def test_unit_conversions(uoms: Path) -> None:
    assert consumption_of(uoms) == approx({
        ("P1", "L1", "FG", "FLOUR"): 0.75,  # 3 * 250 g * 0.001 kg/g
        ("P1", "L1", "FG", "SCREW"): 72.0,  # 3 * 2 BOX * 12 EA/BOX (item-specific beats the generic 10)
        ("P1", "L1", "FG", "NUT"): 30.0,  # 3 * 1 BOX * 10 EA/BOX (generic)
    })
    units = dict(zip(read(uoms, "consumption").component_item_id, read(uoms, "consumption").uom, strict=True))
    assert units == {"FLOUR": "kg", "SCREW": "EA", "NUT": "EA"}  # always the component's base unit


def test_line_requirement_formula() -> None:
    items = pd.DataFrame({"item_id": ["FG", "FLOUR", "SCREW", "BY"], "uom": ["EA", "kg", "EA", "kg"],
                          "phantom": [False] * 4})
    conversions = pd.DataFrame({"item_id": [None, "SCREW", None], "from_uom": ["g", "BOX", "BOX"],
                                "to_uom": ["kg", "EA", "EA"], "factor": [0.001, 12.0, 10.0]})
    rows = [line("FG", "FLOUR", 300, uom="g", base_qty=10, scrap_pct=2),
            line("FG", "SCREW", 1, uom="BOX", base_qty=4),
            line("FG", "BY", -0.5, scrap_pct=10)]
    lines = bom.line_requirements(_bom_frame(rows), items, conversions)
    assert lines["r"].tolist() == pytest.approx([
        0.0306,  # 300 g * 0.001 / 10 * 1.02 = 0.03 * 1.02
        3.0,  # 1 BOX * 12 / 4
        -0.5,  # by-product: scrap ignored, -0.5 * 1 / 1
    ], rel=1e-12)
    assert (lines["line_error"] == "").all()


# ------------------------------------------------------------------ explosion errors (semantics 4)


ERROR_ITEMS = [
    item("FG"), item("A"), item("FG_U"), item("FG_P"), item("PHX", phantom=True), item("FG_Y"),
    item("PHY", phantom=True), item("FG_E"), item("FG_C"), item("PA", phantom=True), item("PB", phantom=True),
    item("FG_N"), item("NB"),
]
ERROR_BOM = [
    line("FG", "A", 1),
    line("FG_U", "A", 1), line("FG_U", "NOPE", 2),  # NOPE is not in items
    line("FG_P", "PHX", 1), line("PHX", "A", 1, valid_to="2026-03-01"),  # PHX's only line has expired
    line("FG_Y", "PHY", 1),  # PHY has no lines at all
    line("FG_E", "A", 1, valid_to="2026-03-01"), line("FG_E", "A", 2, valid_from="2026-04-01"),  # none on 03-02
    line("FG_C", "PA", 1), line("PA", "PB", 1), line("PB", "PA", 1),  # PA > PB > PA
    line("FG_N", "A", 1, uom="lb"),  # A is counted in EA; nothing converts lb to EA
]
ERROR_CASES = {  # completion -> (item, code, words the message must contain)
    "Q_GHOST": ("GHOST", "UNKNOWN_ITEM", ["GHOST"]),
    "Q_NOPE": ("FG_U", "UNKNOWN_ITEM", ["NOPE", "FG_U"]),
    "Q_PHX": ("FG_P", "NO_BOM", ["PHX"]),
    "Q_PHY": ("FG_Y", "NO_BOM", ["PHY"]),
    "Q_EXP": ("FG_E", "NO_BOM", ["FG_E"]),
    "Q_NB": ("NB", "NO_BOM", ["NB"]),
    "Q_CYC": ("FG_C", "BOM_CYCLE", ["PA", "PB"]),
    "Q_UOM": ("FG_N", "NO_UOM_CONVERSION", ["lb", "EA", "FG_N"]),
}


@pytest.fixture(scope="module")
def errors(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("errors")
    rows = [completion("Q_GOOD", "FG", 1)] + [completion(cid, it, 1) for cid, (it, _, _) in ERROR_CASES.items()]
    landing = make_landing(root, items=ERROR_ITEMS, bom=ERROR_BOM, completions=rows)
    run(root, landing, [DAY])
    return root


@pytest.mark.parametrize("cid", list(ERROR_CASES))
def test_explosion_error_quarantines_the_whole_completion(errors: Path, cid: str) -> None:
    item_id, code, words = ERROR_CASES[cid]
    q = read(errors, "quarantine")
    rows = q[q["source_key"] == cid]
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["table"], row["error_code"], row["plant_id"]) == ("completions", code, "P1")
    assert row["business_date"] == pd.Timestamp(DAY)
    for word in words:
        assert word in row["message"], row["message"]
    original = json.loads(row["row"])
    assert original["completion_id"] == cid and original["item_id"] == item_id


def test_explosion_errors_leave_no_trace_in_outputs(errors: Path) -> None:
    # only Q_GOOD gets through: FG_U's good line to A must not leak (A would be 2, not 1)
    assert consumption_of(errors) == approx({("P1", "L1", "FG", "A"): 1.0})  # 1 FG * 1 A
    assert adjustments_of(errors) == approx({
        ("P1", "L1", "FG", "production_receipt"): 1.0,
        ("P1", "L1", "A", "backflush_issue"): -1.0,  # -(1 * 1)
    })
    assert set(read(errors, "quarantine")["source_key"]) == set(ERROR_CASES)


def test_runs_row_counts_each_completion_once(errors: Path) -> None:
    runs = read(errors, "runs").iloc[0]
    read_, accepted, quarantined, superseded = (dict(runs[c])["completions"] for c in (
        "rows_read", "rows_accepted", "rows_quarantined", "rows_superseded"))
    assert (read_, accepted, quarantined, superseded) == (
        9,  # Q_GOOD + 8 error cases
        1,  # Q_GOOD
        8,  # one per error case
        0,
    )


def test_explode_unit_cycle_and_unknown_component() -> None:
    items = pd.DataFrame({"item_id": ["F", "PA", "PB", "A"], "uom": ["EA"] * 4,
                          "phantom": [False, True, True, False]})
    rows = [line("F", "PA", 1), line("PA", "PB", 1), line("PB", "PA", 1), line("G", "NOPE", 1)]
    lines = bom.plant_lines(bom.line_requirements(_bom_frame(rows), items, _no_conversions()), ["P1"])
    keys = pd.DataFrame({"key": [0, 1], "plant_id": ["P1", "P1"], "item_id": ["F", "A"],
                         "effective_date": [pd.Timestamp(DAY)] * 2})
    result = bom.explode(keys, lines, items)
    codes = dict(zip(result.errors.key, result.errors.error_code, strict=True))
    assert codes == {0: "BOM_CYCLE",  # F > PA > PB > PA
                     1: "NO_BOM"}  # A has no lines
    assert result.requirements.empty


def test_a_parent_with_an_invalid_line_is_not_exploded_on_what_is_left(tmp_path: Path) -> None:
    """FG's BOM has a good line (A) and a line with scrap_pct 100 (out of range). Exploding FG with
    A alone would understate consumption: a guess. FG's completion is quarantined whole; G, whose
    group line is broken but whose plant P2 has its own lines, is unaffected at P2."""
    landing = make_landing(
        tmp_path,
        items=[item("FG", "EA"), item("G", "EA"), item("A", "kg"), item("B", "kg")],
        bom=[
            {"plant_id": "", "parent_item_id": "FG", "component_item_id": "A", "qty_per": 1, "scrap_pct": 0},
            {"plant_id": "", "parent_item_id": "FG", "component_item_id": "B", "qty_per": 1, "scrap_pct": 100},
            {"plant_id": "", "parent_item_id": "G", "component_item_id": "B", "qty_per": -1, "scrap_pct": 0},
            {"plant_id": "", "parent_item_id": "G", "component_item_id": "A", "qty_per": "x", "scrap_pct": 0},
            {"plant_id": "P2", "parent_item_id": "G", "component_item_id": "A", "qty_per": 2, "scrap_pct": 0},
        ],
        completions=[completion("C_FG", "FG", 3), completion("C_G1", "G", 5),
                     completion("C_G2", "G", 4, plant="P2")],
    )
    run(tmp_path, landing, [DAY])
    quarantine = read(tmp_path, "quarantine")
    by_key = quarantine.set_index("source_key")
    assert by_key.loc["C_FG", "error_code"] == "INVALID"
    assert "FG>B" in by_key.loc["C_FG", "message"] and "scrap_pct" in by_key.loc["C_FG", "message"]
    assert by_key.loc["C_G1", "error_code"] == "INVALID"  # P1 uses the group BOM of G, which is broken
    assert set(quarantine.loc[quarantine["table"] == "bom", "source_key"]) == {"*:FG>B", "*:G>A"}
    adjustments = read(tmp_path, "adjustments")
    got = {(r.plant_id, r.item_id, r.kind): r.qty for r in adjustments.itertuples()}
    # only C_G2 at P2 explodes: 4 G received, A issued 4 * 2 = 8 (P2's own line; no group lines mixed in)
    assert got == {("P2", "G", "production_receipt"): 4.0, ("P2", "A", "backflush_issue"): -8.0}


def test_effectivity_epochs_follow_each_items_own_reachable_lines() -> None:
    """FG -> phantom PH, whose RM1 line ends and RM2 line starts on 03-05; another item's BOM
    changes on 03-03. FG's dates before 03-05 share one epoch (03-03 is not FG's business), dates
    from 03-05 on share the next; both epochs explode as the dates themselves would."""
    items_ = pd.DataFrame({"item_id": ["FG", "PH", "RM1", "RM2", "OTHER", "X"], "uom": "EA", "standard_cost": 0.0,
                           "phantom": [False, True, False, False, False, False], "backflush": True,
                           "uom_decimals": 3})
    table = pd.DataFrame([
        {"plant_id": None, "parent_item_id": "FG", "component_item_id": "PH", "qty_per": 1.0},
        {"plant_id": None, "parent_item_id": "PH", "component_item_id": "RM1", "qty_per": 2.0,
         "valid_to": pd.Timestamp("2026-03-05")},
        {"plant_id": None, "parent_item_id": "PH", "component_item_id": "RM2", "qty_per": 3.0,
         "valid_from": pd.Timestamp("2026-03-05")},
        {"plant_id": None, "parent_item_id": "OTHER", "component_item_id": "X", "qty_per": 1.0,
         "valid_from": pd.Timestamp("2026-03-03")},
    ]).assign(base_qty=1.0, uom=None, scrap_pct=0.0)
    table["valid_from"] = pd.to_datetime(table.get("valid_from")).astype("datetime64[ns]")
    table["valid_to"] = pd.to_datetime(table.get("valid_to")).astype("datetime64[ns]")
    lines = bom.plant_lines(bom.line_requirements(table, items_, pd.DataFrame(
        columns=["item_id", "from_uom", "to_uom", "factor"])), ["P1"])
    days = pd.to_datetime(["2026-03-02", "2026-03-04", "2026-03-05", "2026-03-09"]).astype("datetime64[ns]")
    keys = pd.DataFrame({"plant_id": "P1", "item_id": "FG", "business_date": days})
    epochs = bom.item_epochs(keys, bom.item_boundaries(lines)).tolist()
    assert epochs[0] == epochs[1] and epochs[2] == epochs[3] == pd.Timestamp("2026-03-05")
    assert epochs[0] < pd.Timestamp("2026-03-05")
    explode_keys = pd.DataFrame({"key": range(4), "plant_id": "P1", "item_id": "FG", "effective_date": epochs})
    per_key = bom.explode(explode_keys, lines, items_).requirements
    got = {(int(k), c): q for k, c, q in per_key[["key", "component_item_id", "qty_per_unit"]].itertuples(index=False)}
    # before 03-05: RM1 2 per FG; from 03-05: RM2 3 per FG (through the phantom, 1 per FG)
    assert got == {(0, "RM1"): 2.0, (1, "RM1"): 2.0, (2, "RM2"): 3.0, (3, "RM2"): 3.0}


# ------------------------------------------------------------------ deep chains (issue 12.4)


def test_a_chain_of_100_nested_phantoms_explodes_and_a_revisit_at_depth_70_is_a_cycle(tmp_path: Path) -> None:
    """FG > PH1 > PH2 > ... > PH100 > RM: no item is revisited, so it explodes however deep it is.
    Every link has qty_per 1 except FG > PH1 (2) and PH100 > RM (3): 1 FG needs 2 * 1^99 * 3 = 6 RM,
    5 FG need 30. The line from PH100 to RM starts on 03-02: on 03-01 PH100 has no effective BOM
    (the boundary is found through all 100 levels). G > PG1 > ... > PG70 > PG1 revisits PG1 on its
    path at depth 70: BOM_CYCLE, not a depth limit."""
    chain = [f"PH{i}" for i in range(1, 101)]
    loop = [f"PG{i}" for i in range(1, 71)]
    links = ([line("FG", chain[0], 2)] + [line(a, b, 1) for a, b in zip(chain, chain[1:], strict=False)]
             + [line(chain[-1], "RM", 3, valid_from="2026-03-02")]
             + [line("G", loop[0], 1)] + [line(a, b, 1) for a, b in zip(loop, loop[1:], strict=False)]
             + [line(loop[-1], loop[0], 1)])
    landing = make_landing(
        tmp_path,
        items=[item("FG"), item("G"), item("RM")] + [item(p, phantom=True) for p in chain + loop],
        bom=links,
        completions=[completion("C1", "FG", 5), completion("C2", "G", 1),
                     completion("C0", "FG", 1, at="2026-03-01T10:00:00Z")],
    )
    run(tmp_path, landing, ["2026-03-01", DAY])
    assert adjustments_of(tmp_path) == approx({("P1", "L1", "FG", "production_receipt"): 5.0,
                                               ("P1", "L1", "RM", "backflush_issue"): -30.0})
    quarantine = read(tmp_path, "quarantine").set_index("source_key")
    assert quarantine.loc["C2", "error_code"] == "BOM_CYCLE"
    assert quarantine.loc["C2", "message"].endswith("PG70 > PG1")
    assert quarantine.loc["C0", "error_code"] == "NO_BOM"  # PH100's only line starts on 03-02
    assert "PH100" in quarantine.loc["C0", "message"]


# ------------------------------------------------------------------ empty effectivity (issue 12.5)


def test_a_line_valid_from_equal_to_valid_to_never_applies_and_is_not_invalid(tmp_path: Path) -> None:
    """FG's line to A is effective on [03-02, 03-02): no date. It breaks no type or range, so it is not
    quarantined and never applies: 4 FG issue only B, 4 * 1.5 = 6. A line whose interval runs
    backwards (valid_from after valid_to) is still INVALID, and its message names the two dates, not
    the nullable columns that are empty (plant_id, uom)."""
    landing = make_landing(
        tmp_path,
        items=[item("FG"), item("G"), item("A"), item("B")],
        bom=[line("FG", "A", 2, valid_from=DAY, valid_to=DAY), line("FG", "B", 1.5),
             line("G", "A", 1, valid_from="2026-03-05", valid_to="2026-03-01")],
        completions=[completion("C1", "FG", 4), completion("C2", "G", 1)],
    )
    run(tmp_path, landing, [DAY])
    assert adjustments_of(tmp_path) == approx({("P1", "L1", "FG", "production_receipt"): 4.0,
                                               ("P1", "L1", "B", "backflush_issue"): -6.0})
    quarantine = read(tmp_path, "quarantine")
    bom_rows = quarantine[quarantine["table"] == "bom"]
    assert list(bom_rows["source_key"]) == ["*:G>A"]
    message = bom_rows["message"].iloc[0]
    assert message == "valid_from = 2026-03-05, valid_to = 2026-03-01 fails valid_from_not_after_valid_to"
    assert "missing" not in message
    completions = quarantine[quarantine["table"] == "completions"].set_index("source_key")
    assert list(completions.index) == ["C2"] and completions.loc["C2", "error_code"] == "INVALID"
