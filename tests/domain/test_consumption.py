"""Theoretical consumption (contract semantics 1-3) with numbers worked out by hand.

Each feature has its own small landing folder, run once through `job.run_dates`; the tests read
the `consumption` and `adjustments` Parquet datasets. Every expected number shows its arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.domain import consumption
from tests.support.landing import completion, make_landing, read, run

DAY = "2026-03-02"
AT = "2026-03-02T10:00:00Z"


def item(item_id: str, uom: str = "EA", *, cost: float = 0.0, phantom: bool = False,
         backflush: bool = True, decimals: int = 3) -> dict[str, object]:
    return {"item_id": item_id, "uom": uom, "standard_cost": cost, "phantom": str(phantom).lower(),
            "backflush": str(backflush).lower(), "uom_decimals": decimals}


def line(parent: str, component: str, qty_per: float, *, base_qty: float = 1, scrap_pct: float = 0,
         valid_from: str | None = None, valid_to: str | None = None) -> dict[str, object]:
    return {"parent_item_id": parent, "component_item_id": component, "qty_per": qty_per, "base_qty": base_qty,
            "scrap_pct": scrap_pct, "valid_from": valid_from, "valid_to": valid_to}


def consumption_of(root: Path, *, with_date: bool = False) -> dict[tuple[object, ...], float]:
    """(plant, [business date,] location, produced item, component) -> qty."""
    f = read(root, "consumption")
    keys = ["plant_id"] + (["business_date"] if with_date else []) + ["location_id", "item_id", "component_item_id"]
    return {tuple(k): q for k, q in zip(f[keys].itertuples(index=False), f["qty"], strict=True)}


def adjustments_of(root: Path, *, with_date: bool = False) -> dict[tuple[object, ...], float]:
    """(plant, [business date,] location, item, kind) -> qty."""
    f = read(root, "adjustments")
    keys = ["plant_id"] + (["business_date"] if with_date else []) + ["location_id", "item_id", "kind"]
    return {tuple(k): q for k, q in zip(f[keys].itertuples(index=False), f["qty"], strict=True)}


def approx(expected: dict) -> object:
    return pytest.approx(expected, rel=1e-12, abs=1e-12)


D1, D2 = pd.Timestamp("2026-03-01"), pd.Timestamp("2026-03-02")


# ------------------------------------------------------------------ effectivity at local midnight


@pytest.fixture(scope="module")
def midnight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("midnight")
    landing = make_landing(
        root,
        plants=[{"plant_id": "BER", "timezone": "Europe/Berlin"}, {"plant_id": "CHI", "timezone": "America/Chicago"}],
        items=[item("FG"), item("A"), item("B")],
        bom=[line("FG", "A", 1, valid_to="2026-03-02"),  # A up to and including business date 03-01
             line("FG", "B", 1, valid_from="2026-03-02")],  # B from business date 03-02
        completions=[
            # Berlin is UTC+1 in March (summer time starts 03-29)
            completion("K1", "FG", 1, plant="BER", at="2026-03-01T22:59:59Z"),  # local 03-01 23:59:59 -> A
            completion("K2", "FG", 2, plant="BER", at="2026-03-01T23:00:00Z"),  # local 03-02 00:00:00 -> B
            completion("K3", "FG", 4, plant="BER", at="2026-03-01T18:30:00-05:00"),  # 23:30Z, local 03-02 00:30 -> B
            completion("K4", "FG", 8, plant="BER", at="2026-03-01T23:30:00"),  # no offset: UTC, local 03-02 00:30 -> B
            # Chicago is UTC-6 in early March (daylight time starts 03-08)
            completion("K5", "FG", 16, plant="CHI", at="2026-03-02T03:00:00Z"),  # local 03-01 21:00 -> A
            completion("K6", "FG", 32, plant="CHI", at="2026-03-02T06:00:00Z"),  # local 03-02 00:00 -> B
        ],
    )
    run(root, landing, ["2026-03-01", "2026-03-02"])
    return root


def test_effectivity_switches_at_the_plants_local_midnight(midnight: Path) -> None:
    # quantities are powers of two, so each sum tells which completions are in it
    assert consumption_of(midnight, with_date=True) == approx({
        ("BER", D1, "L1", "FG", "A"): 1.0,  # K1 only
        ("BER", D2, "L1", "FG", "B"): 14.0,  # K2 + K3 + K4 = 2 + 4 + 8
        ("CHI", D1, "L1", "FG", "A"): 16.0,  # K5: a UTC 03-02 timestamp on Chicago's 03-01
        ("CHI", D2, "L1", "FG", "B"): 32.0,  # K6
    })


def test_adjustments_are_partitioned_by_local_business_date(midnight: Path) -> None:
    adjustments = adjustments_of(midnight, with_date=True)
    receipts = {k: v for k, v in adjustments.items() if k[-1] == "production_receipt"}
    assert receipts == approx({
        ("BER", D1, "L1", "FG", "production_receipt"): 1.0,  # K1
        ("BER", D2, "L1", "FG", "production_receipt"): 14.0,  # 2 + 4 + 8
        ("CHI", D1, "L1", "FG", "production_receipt"): 16.0,  # K5
        ("CHI", D2, "L1", "FG", "production_receipt"): 32.0,  # K6
    })
    completions = read(midnight, "consumption").set_index(["plant_id", "business_date"])["completions"]
    assert completions.to_dict() == {("BER", D1): 1, ("BER", D2): 3, ("CHI", D1): 1, ("CHI", D2): 1}


# ------------------------------------------------------------------ base_qty, scrap_pct, qty_scrap


@pytest.fixture(scope="module")
def scrap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("scrap")
    landing = make_landing(
        root,
        items=[item("FG"), item("RM", "kg"), item("RM2")],
        bom=[line("FG", "RM", 3, base_qty=10, scrap_pct=2), line("FG", "RM2", 1)],
        completions=[completion("K1", "FG", 7, qty_scrap=3)],
    )
    run(root, landing, [DAY])
    return root


def test_base_qty_component_scrap_and_scrapped_units(scrap: Path) -> None:
    assert consumption_of(scrap) == approx({
        ("P1", "L1", "FG", "RM"): 3.06,  # (7 good + 3 scrapped) * 3 / 10 * (1 + 2/100) = 3 * 1.02
        ("P1", "L1", "FG", "RM2"): 10.0,  # (7 + 3) * 1
    })


def test_scrapped_units_are_not_received(scrap: Path) -> None:
    assert adjustments_of(scrap) == approx({
        ("P1", "L1", "FG", "production_receipt"): 7.0,  # qty_good only, not 7 + 3
        ("P1", "L1", "RM", "backflush_issue"): -3.06,  # -(10 * 0.3 * 1.02)
        ("P1", "L1", "RM2", "backflush_issue"): -10.0,
    })


# ------------------------------------------------------------------ by-products


@pytest.fixture(scope="module")
def byproducts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("byproducts")
    landing = make_landing(
        root,
        items=[item("FG"), item("RM", "kg"), item("BY", "kg", cost=1.5), item("Z", cost=2),
               item("PH", phantom=True), item("BY2", "kg"), item("RM2")],
        bom=[
            line("FG", "RM", 2, scrap_pct=10),
            line("FG", "BY", -0.5, scrap_pct=10),  # by-product: scrap ignored
            line("FG", "Z", 1, scrap_pct=10), line("FG", "Z", -3),  # Z nets to a by-product
            line("FG", "PH", 2),
            line("PH", "BY2", -0.25), line("PH", "RM2", 1),  # a by-product below a phantom
        ],
        completions=[completion("K1", "FG", 3, qty_scrap=1)],
    )
    run(root, landing, [DAY])
    return root


def test_by_products_are_not_consumption(byproducts: Path) -> None:
    assert consumption_of(byproducts) == approx({
        ("P1", "L1", "FG", "RM"): 8.8,  # (3 + 1) * 2 * 1.10
        ("P1", "L1", "FG", "RM2"): 8.0,  # 4 * 2 PH * 1
    })  # no BY, BY2 or Z: their per-completion sums are negative


def test_by_products_are_received(byproducts: Path) -> None:
    assert adjustments_of(byproducts) == approx({
        ("P1", "L1", "FG", "production_receipt"): 3.0,  # good units only
        ("P1", "L1", "RM", "backflush_issue"): -8.8,  # -(4 * 2 * 1.1)
        ("P1", "L1", "RM2", "backflush_issue"): -8.0,  # -(4 * 2 * 1)
        ("P1", "L1", "BY", "byproduct_receipt"): 2.0,  # -(4 * -0.5); not 2.2 (scrap ignored)
        ("P1", "L1", "Z", "byproduct_receipt"): 7.6,  # -(4 * (1 * 1.1 - 3)) = -(4 * -1.9)
        ("P1", "L1", "BY2", "byproduct_receipt"): 2.0,  # -(4 * 2 * -0.25)
    })
    values = read(byproducts, "adjustments").set_index("item_id")["value"]
    assert values["BY"] == pytest.approx(3.0)  # 2.0 kg * 1.5
    assert values["Z"] == pytest.approx(15.2)  # 7.6 * 2


# ------------------------------------------------------------------ components issued by hand


@pytest.fixture(scope="module")
def manual(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("manual")
    landing = make_landing(
        root,
        items=[item("FG"), item("GLUE", "kg", backflush=False), item("RM")],
        bom=[line("FG", "GLUE", 0.2), line("FG", "RM", 1)],
        completions=[completion("K1", "FG", 5)],
    )
    run(root, landing, [DAY])
    return root


def test_non_backflushed_component_is_consumed_but_not_issued(manual: Path) -> None:
    frame = read(manual, "consumption").set_index("component_item_id")
    assert frame["qty"].to_dict() == approx({"GLUE": 1.0,  # 5 * 0.2
                                             "RM": 5.0})  # 5 * 1
    assert frame["backflushed"].to_dict() == {"GLUE": False, "RM": True}
    assert adjustments_of(manual) == approx({
        ("P1", "L1", "FG", "production_receipt"): 5.0,
        ("P1", "L1", "RM", "backflush_issue"): -5.0,  # and no backflush_issue of GLUE
    })


# ------------------------------------------------------------------ stocked sub-assemblies


@pytest.fixture(scope="module")
def subassembly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("subassembly")
    landing = make_landing(
        root,
        items=[item("FG"), item("SA"), item("RM"), item("RM2")],
        bom=[line("FG", "SA", 2), line("FG", "RM", 1), line("SA", "RM2", 5)],
        completions=[completion("K1", "FG", 3, location="L1"), completion("K2", "SA", 4, location="L2")],
    )
    run(root, landing, [DAY])
    return root


def test_stocked_subassembly_is_consumed_as_itself(subassembly: Path) -> None:
    assert consumption_of(subassembly) == approx({
        ("P1", "L1", "FG", "SA"): 6.0,  # 3 FG * 2 SA; SA is not exploded into RM2
        ("P1", "L1", "FG", "RM"): 3.0,  # 3 * 1
        ("P1", "L2", "SA", "RM2"): 20.0,  # SA's own completion: 4 * 5
    })
    assert adjustments_of(subassembly) == approx({
        ("P1", "L1", "FG", "production_receipt"): 3.0,
        ("P1", "L1", "SA", "backflush_issue"): -6.0,
        ("P1", "L1", "RM", "backflush_issue"): -3.0,
        ("P1", "L2", "SA", "production_receipt"): 4.0,
        ("P1", "L2", "RM2", "backflush_issue"): -20.0,
    })


# ------------------------------------------------------------------ unit: the stage functions


def test_completion_demand_and_flows_unit() -> None:
    tagged = pd.DataFrame({
        "plant_id": ["P1", "P1", "P1"], "business_date": [D2] * 3, "location_id": ["L1", "L1", "L1"],
        "item_id": ["FG"] * 3, "key": [0, 0, 0], "qty_good": [2.0, 3.0, 0.0], "qty_scrap": [1.0, 0.0, 0.0],
    })
    demand = consumption.completion_demand(tagged)
    assert demand[["qty_good", "qty_scrap", "qty", "completions"]].iloc[0].tolist() == [
        5.0,  # 2 + 3 + 0
        1.0,  # 1 + 0 + 0
        6.0,  # (2 + 1) + (3 + 0)
        2,  # the third row is a cancellation (0 + 0): it counts for nothing
    ]
    requirements = pd.DataFrame({"key": [0, 0], "component_item_id": ["RM", "BY"], "qty_per_unit": [1.5, -0.5]})
    flows = consumption.component_flows(demand, requirements).set_index("component_item_id")["qty"]
    assert flows.to_dict() == approx({"RM": 9.0,  # 6 * 1.5
                                      "BY": -3.0})  # 6 * -0.5
