"""Posting precision: round the decimal value half away from zero at an item's `uom_decimals`.

The contract's quantities are decimal numbers; a float holds the nearest binary value (2.675 is
stored as 2.67499999...). The float is first read back as the decimal it stands for, its 15
significant digits (every decimal of up to 15 digits survives a round trip through a float, so this
cannot move a genuine value: 2.4999996 stays below the half), and that decimal is rounded exactly,
in integer arithmetic.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SIGNIFICANT_DIGITS = 15  # DBL_DIG: the most decimal digits a float keeps through a round trip
_TOP = 10 ** (SIGNIFICANT_DIGITS - 1)  # a 15-digit mantissa lies in [_TOP, 10 * _TOP)
_POW10 = 10 ** np.arange(SIGNIFICANT_DIGITS + 1, dtype="int64")  # exact integer powers 10**0 .. 10**15


def _pow10(exponents: np.ndarray) -> np.ndarray:
    """10.0 ** k as floats; exact for |k| <= 22, the nearest float beyond."""
    return np.power(10.0, exponents.astype("float64"))


def round_half_away(values: pd.Series | np.ndarray, decimals: pd.Series | np.ndarray | int) -> np.ndarray:
    """Round each value to its number of decimals, halves away from zero (2.675 -> 2.68, -0.5 -> -1).

    A value is taken as the decimal of its 15 significant digits (mantissa m * 10**(e - 14), m an
    integer of 15 digits); dropping the k = 14 - e - decimals last digits of m rounds up when the
    dropped part is at least half of 10**k. Missing values (or precisions) give missing values; zero and signs of zero
    come out as +0.0.
    """
    v = np.asarray(values, dtype="float64")
    wanted = np.broadcast_to(np.asarray(decimals, dtype="float64"), v.shape)
    known = np.isfinite(wanted)
    places = np.where(known, wanted, 0).astype("int64")
    magnitude = np.abs(v)
    finite = np.isfinite(v) & (magnitude > 0)
    safe = np.where(finite, magnitude, 1.0)
    exponent = np.floor(np.log10(safe)).astype("int64")
    scaled = safe * _pow10(SIGNIFICANT_DIGITS - 1 - exponent)
    # log10 can land one off near a power of ten: bring the scaled value back to 15 integer digits
    # (its rounding may still give 10**15, fifteen nines rounded up: a value of 10**(e + 1) either way)
    exponent = exponent + (scaled >= 10 * _TOP) - (scaled < _TOP)
    mantissa = np.rint(safe * _pow10(SIGNIFICANT_DIGITS - 1 - exponent)).astype("int64")

    dropped = SIGNIFICANT_DIGITS - 1 - exponent - places  # digits of the mantissa past the last kept decimal
    k = np.clip(dropped, 0, SIGNIFICANT_DIGITS)
    unit = _POW10[k]
    kept, rest = np.divmod(mantissa, unit)
    kept = kept + (2 * rest >= unit)  # 2 * rest < 2 * 10**15: no overflow
    rounded = kept / _pow10(places)  # an integer below 2**53 over an exact power of ten: correctly rounded
    rounded = np.where(dropped > SIGNIFICANT_DIGITS, 0.0, rounded)  # below half a unit of the last decimal
    as_written = np.where(exponent >= SIGNIFICANT_DIGITS - 1,  # nothing to drop: the 15 digits themselves
                          mantissa * _pow10(exponent - (SIGNIFICANT_DIGITS - 1)),
                          mantissa / _pow10(SIGNIFICANT_DIGITS - 1 - exponent))
    out = np.where(dropped > 0, rounded, as_written)
    out = np.where(finite, np.sign(v) * out, v)
    out = np.where(known, out, np.nan)  # no precision, no rounded value
    return out + 0.0  # no negative zeros
