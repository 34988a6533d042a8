"""Posting precision: round half away from zero at an item's `uom_decimals`, immune to float noise."""

from __future__ import annotations

import numpy as np
import pandas as pd

NOISE_ULPS = 8  # a quantity summed from a few float products is off by a few units in the last place
NOISE_MIN = 5e-7  # a shortfall this small (in units of the last kept decimal) is always noise
NOISE_MAX = 0.25  # beyond ~15 significant digits a float cannot tell a half from a quarter anyway


def round_half_away(values: pd.Series | np.ndarray, decimals: pd.Series | np.ndarray | int) -> np.ndarray:
    """Round each value to its number of decimals, halves away from zero (2.675 -> 2.68, -0.5 -> -1).

    Binary floats store 2.675 as 2.67499999...; a fraction that falls short of one half by no more
    than float noise is the decimal half it was written as. The noise is measured in units in the
    last place of the scaled value, so this holds at every magnitude (a fixed 6-decimal cleanup
    fails once the scaled value nears 2**53 / 1e6: 76860652.365 at 2 decimals, 8243.3485995 at 6).
    """
    v = np.asarray(values, dtype="float64")
    scale = np.power(10.0, np.asarray(decimals, dtype="float64"))
    scaled = np.abs(v) * scale
    whole = np.floor(scaled)
    noise = np.clip(NOISE_ULPS * np.spacing(scaled), NOISE_MIN, NOISE_MAX)
    up = (scaled - whole) >= 0.5 - noise
    out = np.sign(v) * (whole + up) / scale
    return out + 0.0  # no negative zeros
