"""Arrow string kernels: membership and 64-bit key hashes of string columns, without Python objects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def isin(values: pd.Series, allowed: pd.Series) -> pd.Series:
    """`values.isin(allowed)`; in Arrow when both hold Arrow strings (pandas goes value by value)."""
    if not (is_arrow_text(values) and is_arrow_text(allowed)):
        return values.isin(allowed)
    strings = as_arrow(values)
    found = pc.is_in(strings, value_set=as_arrow(allowed).cast(strings.type))  # null matches null, as in pandas
    return pd.Series(found.to_numpy(zero_copy_only=False), index=values.index)


_SPACES = np.frombuffer(b" " * 8, dtype=np.uint64)[0]


_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier (2**64 / golden ratio) of the string hash


def duplicated_mask(values: pd.Series) -> np.ndarray:
    """Whether each value occurs more than once, as `values.duplicated(keep=False)` says.

    Short ASCII Arrow strings (ids) are padded to whole 64-bit words and hashed in numpy; only the
    few rows whose hash repeats are then compared exactly. Hashing them in pandas is 3x slower.
    """
    if is_arrow_text(values) and len(values) and not values.hasnans:
        strings = as_arrow(values)
        width = -(-pc.max(pc.binary_length(strings)).as_py() // 8) * 8
        if 0 < width <= 64 and pc.all(pc.string_is_ascii(strings)).as_py():
            hashes = np.concatenate([_hashes(chunk, width) for chunk in strings.chunks])
            maybe = np.flatnonzero(_repeated_numbers(hashes))
            repeated = np.zeros(len(values), dtype=bool)
            repeated[maybe] = values.iloc[maybe].duplicated(keep=False).to_numpy()
            return repeated
    return values.duplicated(keep=False).to_numpy()


def key_hashes(values: pd.Series) -> np.ndarray:
    """A 64-bit hash of each key value as coerced to text: a function of the value alone (the same
    for a value read from CSV or Parquet, in any file); missing values hash to 0."""
    text = as_text(values)
    out = np.zeros(len(text), dtype=np.uint64)
    if not len(text):
        return out
    strings = as_arrow(text) if is_arrow_text(text) else \
        pa.chunked_array([pa.array(text.to_numpy(dtype=object), type=pa.string(), from_pandas=True)])
    valid = text.notna().to_numpy()
    fast = valid & pc.and_(pc.string_is_ascii(strings), pc.less_equal(pc.binary_length(strings), 64)) \
        .to_numpy(zero_copy_only=False).astype(bool, copy=False)
    if fast.all():
        out[:] = _hashes(strings.combine_chunks(), 64)
    elif fast.any():
        out[fast] = _hashes(pc.filter(strings, pa.array(fast)).combine_chunks(), 64)
    slow = valid & ~fast
    if slow.any():
        out[slow] = pd.util.hash_array(text[slow].to_numpy(dtype=object))
    return out


def _hashes(strings: pa.Array, width: int) -> np.ndarray:
    """A 64-bit hash of each ASCII string of at most `width` bytes (a multiple of 8): its bytes
    padded with spaces to `width`, mixed 8 at a time."""
    longest = pc.max(pc.binary_length(strings)).as_py() or 0
    short = max(8, -(-longest // 8) * 8)  # only the words that hold some string's bytes are read
    padded = pc.cast(pc.ascii_rpad(strings, width=short, padding=" "), pa.binary(short))
    data = np.frombuffer(padded.buffers()[1], dtype=np.uint8)[padded.offset * short:][: len(padded) * short]
    hashes = np.zeros(len(padded), dtype=np.uint64)
    for word in data.view(np.uint64).reshape(len(padded), short // 8).T:
        hashes = (hashes ^ word) * _MIX
    for _ in range((width - short) // 8):  # the words of spaces only, as if every string were padded to width
        hashes = (hashes ^ _SPACES) * _MIX
    return hashes


def _repeated_numbers(numbers: np.ndarray) -> np.ndarray:
    """Whether each number occurs more than once (a sort finds the few repeated ones fast)."""
    ordered = np.sort(numbers)
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    return pd.Series(numbers).isin(repeats).to_numpy()


def as_text(values: pd.Series) -> pd.Series:
    """Strings, stripped, with empty strings as missing."""
    if values.dtype == object or pd.api.types.is_string_dtype(values.dtype):
        text = values.astype("str")
    else:
        text = values.astype("str").where(values.notna())
    text = strip_text(text)
    return text.where(text != "")


def strip_text(text: pd.Series) -> pd.Series:
    """`text.str.strip()`, but `text` itself (no second copy of the strings) when no value would change."""
    if is_arrow_text(text) and not any(strippable(chunk) for chunk in as_arrow(text).chunks):
        return text
    return text.str.strip()


def strippable(strings: pa.Array) -> bool:
    """Whether a string has surrounding whitespace (pandas strips Arrow strings with utf8_trim_whitespace)."""
    # stripping only removes characters: as many bytes after as before means no value changes
    return _byte_count(pc.utf8_trim_whitespace(strings)) != _byte_count(strings)


def is_arrow_text(values: pd.Series) -> bool:
    """Whether `values` are strings stored in Arrow (pandas' default `str` dtype)."""
    return isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow"


def as_arrow(values: pd.Series) -> pa.ChunkedArray:
    """The Arrow array behind an Arrow-backed Series, as stored (no copy)."""
    array = pa.array(values.array)
    return array if isinstance(array, pa.ChunkedArray) else pa.chunked_array([array])


def _byte_count(strings: pa.Array) -> int:
    return pc.sum(pc.binary_length(strings)).as_py() or 0
