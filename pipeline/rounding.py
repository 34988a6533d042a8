"""Posting precision: round half away from zero at an item's `uom_decimals`, immune to float noise."""

from __future__ import annotations

import numpy as np
import pandas as pd


def round_half_away(values: pd.Series | np.ndarray, decimals: pd.Series | np.ndarray | int) -> np.ndarray:
    """Round each value to its number of decimals, halves away from zero (2.675 -> 2.68, -0.5 -> -1).

    Binary floats store 2.675 as 2.67499999...; the scaled value is first cleaned to 6 decimals
    so that a decimal half is treated as the half it was written as.
    """
    v = np.asarray(values, dtype="float64")
    scale = np.power(10.0, np.asarray(decimals, dtype="float64"))
    scaled = np.round(np.abs(v) * scale, 6)
    out = np.sign(v) * np.floor(scaled + 0.5) / scale
    return out + 0.0  # no negative zeros
