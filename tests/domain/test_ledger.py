"""The `adjustments` dataset (contract semantics 3 and Outputs): kinds, signs, rounding, value and ids.

Numbers are worked out by hand in the comments; rounding is half away from zero at each item's
`uom_decimals`, applied once to the unrounded sum of a key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.domain import ledger
from pipeline.domain.rounding import round_half_away
from tests.support.landing import make_landing, read, run

DAY = "2026-03-02"
AT = "2026-03-02T10:00:00Z"


def item(item_id: str, uom: str, *, cost: float, decimals: int) -> dict[str, object]:
    return {"item_id": item_id, "uom": uom, "standard_cost": cost, "phantom": "false", "backflush": "true",
            "uom_decimals": decimals}


def completion(cid: str, location: str) -> dict[str, object]:
    return {"completion_id": cid, "plant_id": "P1", "location_id": location, "item_id": "FG", "qty_good": 1,
            "completed_at": AT}


ITEMS = [
    item("FG", "EA", cost=10, decimals=0),
    item("RM", "kg", cost=4, decimals=2),
    item("PART", "EA", cost=3, decimals=0),
    item("FINE", "kg", cost=100, decimals=2),
    item("BY", "EA", cost=5, decimals=0),
]
BOM = [
    {"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 2.675},
    {"parent_item_id": "FG", "component_item_id": "PART", "qty_per": 0.5},
    {"parent_item_id": "FG", "component_item_id": "FINE", "qty_per": 0.004},
    {"parent_item_id": "FG", "component_item_id": "BY", "qty_per": -2.5},
]
# one unit of FG at L1; three completions of one unit each at L2
COMPLETIONS = [completion("K1", "L1"), completion("K2", "L2"), completion("K3", "L2"), completion("K4", "L2")]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_landing(tmp_path_factory.mktemp("landing"), items=ITEMS, bom=BOM, completions=COMPLETIONS)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory, landing: Path) -> Path:
    root = tmp_path_factory.mktemp("first")
    run(root, landing, [DAY])
    return root


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory, landing: Path) -> Path:
    root = tmp_path_factory.mktemp("second")
    run(root, landing, [DAY])
    return root


def adjustments_of(root: Path, column: str) -> dict[tuple[str, str, str], object]:
    f = read(root, "adjustments")
    return {(loc, i, k): v for loc, i, k, v in zip(f.location_id, f.item_id, f.kind, f[column], strict=True)}


def test_adjustment_quantities_are_rounded_half_away_from_zero_once(first: Path) -> None:
    assert adjustments_of(first, "qty") == pytest.approx({
        ("L1", "FG", "production_receipt"): 1.0,
        ("L1", "RM", "backflush_issue"): -2.68,  # -2.675 at 2 decimals, half away from zero
        ("L1", "PART", "backflush_issue"): -1.0,  # -0.5 at 0 decimals -> -1
        ("L1", "FINE", "backflush_issue"): 0.0,  # -0.004 at 2 decimals -> 0
        ("L1", "BY", "byproduct_receipt"): 3.0,  # -(1 * -2.5) = 2.5 at 0 decimals -> 3
        ("L2", "FG", "production_receipt"): 3.0,  # 1 + 1 + 1
        ("L2", "RM", "backflush_issue"): -8.03,  # -(3 * 2.675) = -8.025 -> -8.03
        ("L2", "PART", "backflush_issue"): -2.0,  # -(3 * 0.5) = -1.5 -> -2 (rounding each: 3 * -1 = -3)
        ("L2", "FINE", "backflush_issue"): -0.01,  # -(3 * 0.004) = -0.012 -> -0.01 (rounding each: 0)
        ("L2", "BY", "byproduct_receipt"): 8.0,  # 3 * 2.5 = 7.5 -> 8 (rounding each: 3 * 3 = 9)
    }, rel=1e-12, abs=1e-12)


def test_value_is_rounded_qty_times_standard_cost(first: Path) -> None:
    assert adjustments_of(first, "value") == pytest.approx({
        ("L1", "FG", "production_receipt"): 10.0,  # 1 * 10
        ("L1", "RM", "backflush_issue"): -10.72,  # -2.68 * 4 (not -2.675 * 4 = -10.70)
        ("L1", "PART", "backflush_issue"): -3.0,  # -1 * 3
        ("L1", "FINE", "backflush_issue"): 0.0,  # 0 * 100
        ("L1", "BY", "byproduct_receipt"): 15.0,  # 3 * 5
        ("L2", "FG", "production_receipt"): 30.0,  # 3 * 10
        ("L2", "RM", "backflush_issue"): -32.12,  # -8.03 * 4
        ("L2", "PART", "backflush_issue"): -6.0,  # -2 * 3
        ("L2", "FINE", "backflush_issue"): -1.0,  # -0.01 * 100
        ("L2", "BY", "byproduct_receipt"): 40.0,  # 8 * 5
    }, rel=1e-12, abs=1e-12)


def test_adjustment_columns(first: Path) -> None:
    frame = read(first, "adjustments")
    assert set(frame["plant_id"]) == {"P1"} and set(frame["business_date"]) == {pd.Timestamp(DAY)}
    assert adjustments_of(first, "uom")[("L2", "RM", "backflush_issue")] == "kg"
    assert adjustments_of(first, "completions")[("L2", "RM", "backflush_issue")] == 3  # K2, K3, K4


def test_consumption_stays_unrounded(first: Path) -> None:
    frame = read(first, "consumption")
    qty = {(loc, c): q for loc, c, q in zip(frame.location_id, frame.component_item_id, frame.qty, strict=True)}
    assert qty == pytest.approx({
        ("L1", "RM"): 2.675, ("L1", "PART"): 0.5, ("L1", "FINE"): 0.004,  # 1 unit * qty_per
        ("L2", "RM"): 8.025, ("L2", "PART"): 1.5, ("L2", "FINE"): 0.012,  # 3 units * qty_per
    }, rel=1e-12)


def test_adjustment_id_is_deterministic_across_warehouses(first: Path, second: Path, landing: Path) -> None:
    ids_first = adjustments_of(first, "adjustment_id")
    ids_second = adjustments_of(second, "adjustment_id")
    assert ids_first == ids_second
    assert len(set(ids_first.values())) == len(ids_first) == 10  # 5 keys at L1 + 5 at L2, all different
    run(first, landing, [DAY])  # a re-run over the same input keeps every id
    assert adjustments_of(first, "adjustment_id") == ids_first


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (2.675, 2, 2.68),  # 2.675 is stored as 2.67499999...; still a decimal half
        (-2.675, 2, -2.68),
        (-0.5, 0, -1.0),
        (0.5, 0, 1.0),
        (1.5, 0, 2.0),
        (2.5, 0, 3.0),  # not banker's rounding (which gives 2)
        (0.0004999, 3, 0.0),  # below the half
        (1.0005, 3, 1.001),
        (-0.0004, 3, 0.0),  # no negative zero
        (123456.789, 0, 123457.0),
        (76860652.365, 2, 76860652.37),  # large values: the half must survive float noise too
        (76860652.3649, 2, 76860652.36),
        (-69858185.225, 2, -69858185.23),
        (8243.3485995, 6, 8243.3486),
        (8.189092265, 9, 8.189092265),
        (8.1890922645, 9, 8.189092265),
    ],
)
def test_round_half_away(value: float, decimals: int, expected: float) -> None:
    got = round_half_away(np.array([value]), np.array([decimals]))[0]
    assert got == pytest.approx(expected, abs=1e-12)
    assert np.signbit(got) == np.signbit(expected)


def _one(value: str) -> pd.Series:
    return pd.Series([value], dtype="str")


def test_ids_keep_their_persisted_values() -> None:
    # adjustment_id and posting_id are stored in users' warehouses: these values must never change
    key = [_one("P1"), _one("2026-03-02"), _one("L1"), _one("FG"), _one("production_receipt")]
    assert ledger.stable_ids(*key).tolist() == ["de1882293cb9251a06435a574dbf0832"]
    posting = ledger.stable_ids("20260302T100000000000Z-0123abcd", _one("e52e8e019d0c1ebb6bbbc599eb536f80"))
    assert posting.tolist() == ["12b740cb41388a0ef72fc3f7f1e81f65"]
    assert ledger.stable_ids(_one("Zürich"), _one("日本")).tolist() == ["7b697296eeaca295f7d1a53c64905702"]


def _row_id(*parts: object) -> str:
    """The id, one row at a time: two SipHash-2-4 words of the joined UTF-8 text ("nan" if a part is missing)."""
    text = "nan" if any(pd.isna(p) for p in parts) else "\x1f".join(str(p) for p in parts)
    words = [pd.util.hash_array(np.array([text], dtype=object), hash_key=key, categorize=False)[0]
             for key in ("backflush-ids-k1", "backflush-ids-k2")]
    return "".join(f"{w:016x}" for w in words)


def test_stable_ids_follow_the_row_by_row_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "_HASH_BLOCK", 2)  # several hashing blocks
    a = pd.Series(["Zürich", "", None, "P1", "日本語", "x" * 300, "ß"], dtype="str", index=[6, 5, 4, 3, 2, 1, 0])
    b = pd.Series(["日本", "", "x", "\x1f", "é", "y", None], dtype="str", index=a.index)
    ids = ledger.stable_ids(a, "run", b)
    assert ids.index.equals(a.index) and ids.dtype == "str"
    assert ids.tolist() == [_row_id(x, "run", y) for x, y in zip(a, b, strict=True)]
    assert ledger.stable_ids(a.iloc[:0], b.iloc[:0]).dtype == "str"


def _adjustments_by_groupby(demand: pd.DataFrame, flows: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The plain pandas definition of `ledger.adjustments` (one groupby per kind, then a sort)."""
    master = items.set_index("item_id")
    keys = ["plant_id", "business_date", "location_id", "item_id"]
    components = flows.rename(columns={"item_id": "produced_item_id", "component_item_id": "item_id"})
    consumed = components[components["qty_per_unit"] > 0]
    parts = [(demand.rename(columns={"qty_good": "qty"}), 1.0, "production_receipt"),
             (consumed[consumed["item_id"].map(master["backflush"]).astype(bool)], -1.0, "backflush_issue"),
             (components[components["qty_per_unit"] < 0], -1.0, "byproduct_receipt")]
    out = pd.concat([rows.groupby(keys, as_index=False).agg(qty=("qty", "sum"), completions=("completions", "sum"))
                     .assign(qty=lambda f, s=sign: s * f["qty"], kind=kind) for rows, sign, kind in parts],
                    ignore_index=True)
    out["qty"] = round_half_away(out["qty"], out["item_id"].map(master["uom_decimals"]).astype("float64"))
    out["uom"] = out["item_id"].map(master["uom"])
    out["value"] = out["qty"] * out["item_id"].map(master["standard_cost"]).astype("float64")
    out["adjustment_id"] = [_row_id(p, d.strftime("%Y-%m-%d"), loc, i, k) for p, d, loc, i, k in
                            zip(out.plant_id, out.business_date, out.location_id, out.item_id, out.kind, strict=True)]
    return out.sort_values(ledger.ADJUSTMENT_KEY).reset_index(drop=True)


def test_adjustments_match_the_groupby_definition() -> None:
    rng = np.random.default_rng(3)
    ids = np.array(["FG", "RM", "rm", "Ä-1", "B", "B2", "日本", "Z"])
    items = pd.DataFrame({"item_id": pd.Series(ids, dtype="str"), "uom": pd.Series(["EA", "kg"] * 4, dtype="str"),
                          "standard_cost": rng.random(8) * 10, "backflush": pd.array([True] * 6 + [False] * 2),
                          "uom_decimals": rng.integers(0, 4, 8).astype("float64")})

    def frame(n: int, **columns: object) -> pd.DataFrame:
        return pd.DataFrame({"plant_id": pd.Series(rng.choice(["P2", "P1", "Pü"], n), dtype="str"),
                             "business_date": pd.to_datetime("2026-03-01") + pd.to_timedelta(rng.integers(0, 4, n), "D"),
                             "location_id": pd.Series(rng.choice(["L1", "L10", "L2"], n), dtype="str"),
                             "item_id": pd.Series(rng.choice(ids, n), dtype="str"), **columns})

    demand = frame(600, qty_good=rng.integers(0, 9, 600) * 1.0, completions=rng.integers(1, 3, 600))
    flows = frame(2000, component_item_id=pd.Series(rng.choice(ids, 2000), dtype="str"),
                  qty_per_unit=rng.choice([0.0, 1.5, -0.25, 2.675, 0.004], 2000), qty=rng.random(2000) * 9,
                  completions=rng.integers(1, 3, 2000))
    got = ledger.adjustments(demand, flows, items)
    pd.testing.assert_frame_equal(got, _adjustments_by_groupby(demand, flows, items), check_exact=True)
