"""Rounding of written quantities (contract Outputs; decisions: half away from zero at uom_decimals).

A quantity is a decimal number: the float is read as the decimal of its 15 significant digits and
that decimal is rounded half away from zero. Expected values are worked out by hand, or by Python's
`decimal` on the decimal text the float was made from.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.domain.rounding import round_half_away
from tests.support.landing import completion, make_landing, read, run


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        (2.4999996, 0, 2.0),  # a genuine value below the half: 0.4999996 < 0.5
        (-2.4999996, 0, -2.0),
        (1.0004999996, 3, 1.0),  # 0.4999996 of the last kept unit: below the half
        (1.00049999999999, 3, 1.0),  # 14 significant digits, still below
        (2.49999999999999, 0, 2.0),  # 15 significant digits below the half: the float keeps it
        (2.675, 2, 2.68),  # stored as 2.67499999999999982236...: its 15 digits are 2.67500000000000
        (0.1 + 0.2, 9, 0.3),  # 0.30000000000000004: noise past the 15th digit
        (999.9995, 3, 1000.0),  # a half that carries into a new digit
        (1000.0, 0, 1000.0),  # log10 of a power of ten
        (0.0005, 3, 0.001),  # an exact half of the last unit, nothing kept before it
        (0.00049, 3, 0.0),
        (4.9e-10, 9, 0.0),
        (5e-10, 9, 1e-9),
        (1e-20, 3, 0.0),  # far below the last unit
        (1e20, 3, 1e20),  # nothing to drop
        (-0.0, 3, 0.0),
    ],
)
def test_decimal_value_rounds_half_away(value: float, decimals: int, expected: float) -> None:
    got = round_half_away(np.array([value]), np.array([decimals]))[0]
    assert got == expected
    assert np.signbit(got) == np.signbit(expected)


def test_missing_values_and_precisions_stay_missing() -> None:
    got = round_half_away(np.array([np.nan, 1.5, 2.5]), np.array([0.0, np.nan, 0.0]))
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert got[2] == 3.0  # 2.5 -> 3, away from zero


@settings(max_examples=300, deadline=None)
@given(digits=st.integers(1, 15).flatmap(lambda n: st.integers(10 ** (n - 1), 10**n - 1)),  # n significant digits
       negative=st.booleans(), exponent=st.integers(-5, 14), decimals=st.integers(0, 9))
def test_any_decimal_of_up_to_15_digits_rounds_like_decimal(digits: int, negative: bool, exponent: int,
                                                            decimals: int) -> None:
    """±digits × 10**-exponent, written with at most 15 significant digits, rounds as `decimal` does."""
    written = Decimal(-digits if negative else digits).scaleb(-exponent)
    expected = float(written.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP))  # half away from 0
    got = float(round_half_away([float(written)], [decimals])[0])
    assert got == expected


# ------------------------------------------------------------------ the same rule in every output

ITEMS = [
    {"item_id": "FG", "uom": "EA", "standard_cost": 1.0, "phantom": "false", "backflush": "true", "uom_decimals": 0},
    {"item_id": "RM", "uom": "EA", "standard_cost": 2.0, "phantom": "false", "backflush": "true", "uom_decimals": 0},
]


def test_adjustments_postings_and_variance_keep_a_value_below_the_half(tmp_path: Path) -> None:
    landing = make_landing(
        tmp_path,
        items=ITEMS,
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 2.4999996}],
        completions=[completion("C1", "FG", 1, at="2026-03-02T10:00:00Z")],
        stock_counts=[
            {"count_id": "K0", "plant_id": "P1", "location_id": "L1", "item_id": "RM", "counted_qty": 10,
             "counted_at": "2026-03-02T06:00:00Z"},
            {"count_id": "K1", "plant_id": "P1", "location_id": "L1", "item_id": "RM", "counted_qty": 5,
             "counted_at": "2026-03-02T18:00:00Z"},
        ],
    )
    run(tmp_path, landing, ["2026-03-02"])
    adjustments = read(tmp_path, "adjustments").set_index(["item_id", "kind"])["qty"]
    # 1 unit x 2.4999996 = 2.4999996 EA of RM -> 2 at 0 decimals (a fixed 5e-7 noise band gave 3)
    assert adjustments[("RM", "backflush_issue")] == -2.0
    assert adjustments[("FG", "production_receipt")] == 1.0
    postings = read(tmp_path, "postings").groupby(["item_id", "kind"])["qty_delta"].sum()
    assert postings[("RM", "backflush_issue")] == -2.0
    k1 = read(tmp_path, "variance").set_index("count_id").loc["K1"]
    # book = 10 - 2.4999996 = 7.5000004 -> 8; variance = 5 - 7.5000004 = -2.5000004 -> -3
    assert k1["book_qty"] == 8.0
    assert k1["variance_qty"] == -3.0
    assert k1["theoretical_usage_qty"] == 2.0  # 2.4999996 -> 2
    assert k1["variance_value"] == pytest.approx(-2.5000004 * 2.0)  # valued unrounded


def test_postings_delta_of_a_correction_is_the_rounded_difference(tmp_path: Path) -> None:
    landing = make_landing(
        tmp_path,
        items=ITEMS,
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 1.4999996}],
        completions=[completion("C1", "FG", 1, at="2026-03-02T10:00:00Z")],
    )
    run(tmp_path, landing, ["2026-03-02"])
    # corrected to 3 units: 3 x 1.4999996 = 4.4999988 -> 4; first posting 1.4999996 -> 1, delta -3
    pd.DataFrame([{**completion("C1", "FG", 3, at="2026-03-02T10:00:00Z"),
                   "recorded_at": "2026-03-02T12:00:00Z"}]).to_csv(landing / "completions" / "fix.csv", index=False)
    run(tmp_path, landing, ["2026-03-02"])
    postings = read(tmp_path, "postings")
    rm = postings[postings["item_id"] == "RM"].sort_values("posted_at")["qty_delta"].tolist()
    assert rm == [-1.0, -3.0]
