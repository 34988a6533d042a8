"""Deterministic synthetic landing data, so every contract feature can be tested and benchmarked at any size.

A tool, not the engine: its longer functions (`_completions_chunk`, `_bad_rows`, `generate_landing`,
...) are lists of generated columns and cases, one after the other, and read best as such."""

from __future__ import annotations

import datetime
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

__all__ = ["CHUNK_ROWS", "TABLES", "ZONES", "generate_landing"]

TABLES = ("plants", "items", "uom_conversions", "bom", "completions", "stock_counts", "movements")
#: Rows per file of the chunked tables (completions, stock_counts, movements); bounds memory.
CHUNK_ROWS = 2_000_000
#: Plant time zones, cycled: P1, P4, ... Berlin; P2, P5, ... Chicago; P3, P6, ... Shanghai.
ZONES = ("Europe/Berlin", "America/Chicago", "Asia/Shanghai")

_US = 1_000_000
_DAY = 86_400
_NODATE = np.iinfo(np.int64).min
_EPOCH = datetime.date(1970, 1, 1)

# item classes
_FG, _SA, _PH1, _PH2, _RM, _PK, _BP, _XX = range(8)
_PREFIX = {_FG: "FG", _SA: "SA", _PH1: "PH1", _PH2: "PH2", _RM: "RM", _PK: "PK", _BP: "BP"}
_RM_UOM = np.array(["kg", "kg", "L", "g", "kg", "kg", "L", "kg", "g", "kg"], dtype=object)
_DECIMALS = {"EA": 0, "kg": 3, "g": 1, "L": 3}

# random streams (one independent generator per stream and chunk)
_S_ITEMS, _S_BOM, _S_COMPL, _S_COUNTS, _S_MOVES, _S_POP, _S_BAD = range(1, 8)

# per parent class: (component class, probabilities of 0, 1, 2, ... lines of that class)
_SPEC: dict[int, tuple[tuple[int, tuple[float, ...]], ...]] = {
    _FG: (
        (_SA, (0.35, 0.45, 0.20)),
        (_PH1, (0.5, 0.5)),
        (_PH2, (0.85, 0.15)),
        (_RM, (0.0, 0.0, 0.3, 0.4, 0.3)),
        (_PK, (0.0, 0.6, 0.4)),
        (_BP, (0.9, 0.1)),
    ),
    _SA: ((_PH2, (0.6, 0.4)), (_RM, (0.0, 0.3, 0.4, 0.3)), (_PK, (0.7, 0.3))),
    _PH1: ((_PH2, (0.0, 1.0)), (_RM, (0.0, 0.5, 0.5))),
    _PH2: ((_RM, (0.0, 0.0, 0.5, 0.5)), (_PK, (0.8, 0.2))),
}

_TS = pa.timestamp("us", tz="UTC")
_SCHEMAS = {
    "plants": pa.schema([("plant_id", pa.string()), ("timezone", pa.string())]),
    "items": pa.schema(
        [
            ("item_id", pa.string()),
            ("uom", pa.string()),
            ("standard_cost", pa.float64()),
            ("phantom", pa.bool_()),
            ("backflush", pa.bool_()),
            ("uom_decimals", pa.int64()),
        ]
    ),
    "uom_conversions": pa.schema(
        [
            ("item_id", pa.string()),
            ("from_uom", pa.string()),
            ("to_uom", pa.string()),
            ("factor", pa.float64()),
        ]
    ),
    "bom": pa.schema(
        [
            ("plant_id", pa.string()),
            ("parent_item_id", pa.string()),
            ("component_item_id", pa.string()),
            ("qty_per", pa.float64()),
            ("base_qty", pa.float64()),
            ("uom", pa.string()),
            ("scrap_pct", pa.float64()),
            ("valid_from", pa.date32()),
            ("valid_to", pa.date32()),
        ]
    ),
    "completions": pa.schema(
        [
            ("completion_id", pa.string()),
            ("plant_id", pa.string()),
            ("location_id", pa.string()),
            ("item_id", pa.string()),
            ("qty_good", pa.float64()),
            ("qty_scrap", pa.float64()),
            ("completed_at", _TS),
            ("recorded_at", _TS),
            ("order_id", pa.string()),
        ]
    ),
    "stock_counts": pa.schema(
        [
            ("count_id", pa.string()),
            ("plant_id", pa.string()),
            ("location_id", pa.string()),
            ("item_id", pa.string()),
            ("counted_qty", pa.float64()),
            ("counted_at", _TS),
        ]
    ),
    "movements": pa.schema(
        [
            ("movement_id", pa.string()),
            ("plant_id", pa.string()),
            ("location_id", pa.string()),
            ("item_id", pa.string()),
            ("qty", pa.float64()),
            ("moved_at", _TS),
            ("kind", pa.string()),
        ]
    ),
}

Lines = dict[str, np.ndarray]


def _rng(seed: int, stream: int, chunk: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, chunk])


def _codes(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """`prefix` + zero-padded numbers, vectorised in Arrow."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width, "0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _ensure(mask: np.ndarray, cand: np.ndarray) -> None:
    """Switch `mask` on for the first candidate when no candidate has it (features survive small sizes)."""
    if cand.any() and not (mask & cand).any():
        mask[np.flatnonzero(cand)[0]] = True


def _cover(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """n draws from range(size), every value at least once when n >= size."""
    if n < size:
        return rng.choice(size, n, replace=False)
    idx = np.concatenate([rng.permutation(size), rng.integers(0, size, n - size)])
    return rng.permutation(idx)


# --------------------------------------------------------------------------- item master


@dataclass
class _Master:
    ids: np.ndarray  # object (str)
    cls: np.ndarray  # int64 class code
    uom: np.ndarray  # object (str)
    phantom: np.ndarray
    backflush: np.ndarray
    cost: np.ndarray
    start: dict[int, int]
    size: dict[int, int]

    def idx(self, c: int) -> np.ndarray:
        return np.arange(self.start[c], self.start[c] + self.size[c])

    def index_of(self, item_id: str) -> int:
        return int(np.flatnonzero(self.ids == item_id)[0])


def _class_sizes(items: int) -> dict[int, int]:
    return {
        _FG: items,
        _SA: max(2, items // 4),
        _PH1: max(2, items // 8),
        _PH2: max(2, items // 16),
        _RM: max(8, items // 2),
        _PK: max(3, items // 20),
        _BP: max(2, items // 200),
    }


# dedicated items of bad_rows=True: (item_id, class, uom, phantom)
_BAD_ITEMS = (
    ("XFG-INV", _XX, "EA", False),  # carries INVALID completions
    ("XFG-DUP", _XX, "EA", False),  # DUPLICATE_ID completions
    ("XFG-BADLINE", _XX, "EA", False),  # INVALID bom lines (scrap_pct 100, qty_per 0)
    ("XFG-NOBOM", _XX, "EA", False),  # no BOM at all
    ("XFG-PHEXP", _XX, "EA", False),  # only phantom's BOM expired before the range
    ("XPH-EXPIRED", _XX, "EA", True),
    ("XFG-CYCLE", _XX, "EA", False),  # XPH-CYC-A -> XPH-CYC-B -> XPH-CYC-A
    ("XPH-CYC-A", _XX, "EA", True),
    ("XPH-CYC-B", _XX, "EA", True),
    ("XFG-NOCONV", _XX, "EA", False),  # a line in `lb`, which has no conversion
    ("XRM-BAD", _XX, "kg", False),  # carries INVALID counts and movements
)


def _master(items: int, seed: int, bad_rows: bool) -> _Master:
    rng = _rng(seed, _S_ITEMS)
    sizes = _class_sizes(items)
    ids: list[np.ndarray] = []
    cls: list[np.ndarray] = []
    uom: list[np.ndarray] = []
    start: dict[int, int] = {}
    pos = 0
    for c, n in sizes.items():
        start[c] = pos
        pos += n
        width = max(4, len(str(n)))
        ids.append(
            _codes(_PREFIX[c] + "-", np.arange(1, n + 1), width).to_numpy(zero_copy_only=False)
        )
        cls.append(np.full(n, c, dtype=np.int64))
        if c == _RM:
            uom.append(_RM_UOM[np.arange(n) % len(_RM_UOM)])
        elif c == _BP:
            uom.append(np.full(n, "kg", dtype=object))
        else:
            uom.append(np.full(n, "EA", dtype=object))
    ids_a = np.concatenate(ids).astype(object)
    cls_a = np.concatenate(cls)
    uom_a = np.concatenate(uom).astype(object)
    n_all = ids_a.size
    u = rng.random(n_all)
    lo_hi = {
        _FG: (20.0, 800.0),
        _SA: (5.0, 200.0),
        _PH1: (2.0, 100.0),
        _PH2: (2.0, 100.0),
        _PK: (0.02, 3.0),
        _BP: (0.05, 1.5),
    }
    lo = np.zeros(n_all)
    hi = np.zeros(n_all)
    for c, (a, b) in lo_hi.items():
        lo[cls_a == c] = a
        hi[cls_a == c] = b
    for unit, (a, b) in {"kg": (0.5, 60.0), "g": (0.001, 0.2), "L": (0.8, 30.0)}.items():
        m = (cls_a == _RM) & (uom_a == unit)
        lo[m] = a
        hi[m] = b
    cost = np.maximum(np.round(lo + u * (hi - lo), 4), 0.0001)
    phantom = (cls_a == _PH1) | (cls_a == _PH2)
    rm_i = np.arange(n_all) - start[_RM]
    backflush = ~((cls_a == _RM) & ((rm_i % 40 == 7) | (rm_i % 80 == 13)))
    if bad_rows:
        start[_XX] = n_all
        sizes[_XX] = len(_BAD_ITEMS)
        ids_a = np.concatenate([ids_a, np.array([b[0] for b in _BAD_ITEMS], dtype=object)])
        cls_a = np.concatenate([cls_a, np.array([b[1] for b in _BAD_ITEMS], dtype=np.int64)])
        uom_a = np.concatenate([uom_a, np.array([b[2] for b in _BAD_ITEMS], dtype=object)])
        phantom = np.concatenate([phantom, np.array([b[3] for b in _BAD_ITEMS])])
        backflush = np.concatenate([backflush, np.ones(len(_BAD_ITEMS), dtype=bool)])
        cost = np.concatenate([cost, np.full(len(_BAD_ITEMS), 10.0)])
    return _Master(ids_a, cls_a, uom_a, phantom, backflush, cost, start, sizes)


def _items_table(m: _Master) -> pa.Table:
    dec = np.zeros(m.ids.size, dtype=np.int64)
    for unit, d in _DECIMALS.items():
        dec[m.uom == unit] = d
    return pa.table(
        {
            "item_id": pa.array(m.ids, pa.string()),
            "uom": pa.array(m.uom, pa.string()),
            "standard_cost": pa.array(m.cost, pa.float64()),
            "phantom": pa.array(m.phantom, pa.bool_()),
            "backflush": pa.array(m.backflush, pa.bool_()),
            "uom_decimals": pa.array(dec, pa.int64()),
        },
        schema=_SCHEMAS["items"],
    )


def _conversions_table(m: _Master) -> pa.Table:
    """Generic unit rows; BOX->EA is 10 generically and 12 for two thirds of the packaging items."""
    pk = m.idx(_PK)
    specific = pk[(pk - m.start[_PK]) % 3 != 2]
    n = specific.size
    item = np.concatenate([np.full(5, None, dtype=object), m.ids[specific]])
    frm = np.concatenate(
        [np.array(["g", "kg", "mL", "L", "BOX"], dtype=object), np.full(n, "BOX", dtype=object)]
    )
    to = np.concatenate(
        [np.array(["kg", "g", "L", "mL", "EA"], dtype=object), np.full(n, "EA", dtype=object)]
    )
    factor = np.concatenate([np.array([0.001, 1000.0, 0.001, 1000.0, 10.0]), np.full(n, 12.0)])
    return pa.table(
        {"item_id": item, "from_uom": frm, "to_uom": to, "factor": factor},
        schema=_SCHEMAS["uom_conversions"],
    )


# --------------------------------------------------------------------------- BOM


def _line_attrs(rng: np.random.Generator, m: _Master, comp: np.ndarray) -> Lines:
    """qty_per, base_qty, uom and scrap_pct for lines on the given components."""
    n = comp.size
    cls = m.cls[comp]
    cu = m.uom[comp]
    u = rng.random((8, n))
    ints = rng.integers(1, 4, n).astype(np.float64)
    qty = np.zeros(n)
    base = np.ones(n)
    uom = np.full(n, None, dtype=object)
    scrap = np.zeros(n)

    ea_comp = np.isin(cls, [_SA, _PH1, _PH2, _PK])
    rm = cls == _RM
    kg, g, litre = rm & (cu == "kg"), rm & (cu == "g"), rm & (cu == "L")
    bp = cls == _BP
    qty[ea_comp] = ints[ea_comp]
    qty[kg] = np.round(0.05 + u[0][kg] * 4.95, 3)
    qty[g] = np.round(1 + u[0][g] * 499, 1)
    qty[litre] = np.round(0.01 + u[0][litre] * 1.99, 3)
    qty[bp] = -np.round(0.01 + u[0][bp] * 0.49, 3)

    # base_qty 10 or 100 on some raw-material lines
    m_base = rm & (u[1] < 0.08)
    _ensure(m_base, rm)
    base[m_base] = np.where(u[2][m_base] < 0.5, 10.0, 100.0)
    qty[m_base] = np.round(qty[m_base] * base[m_base], 3)

    # lines in a unit other than the component's base unit
    m_g = kg & (u[3] < 0.10)
    _ensure(m_g, kg)
    uom[m_g] = "g"
    qty[m_g] = np.round(qty[m_g] * 1000, 1)
    m_kg = g & (u[3] < 0.10)
    _ensure(m_kg, g)
    uom[m_kg] = "kg"
    qty[m_kg] = np.round(qty[m_kg] / 1000, 4)
    m_ml = litre & (u[3] < 0.10)
    _ensure(m_ml, litre)
    uom[m_ml] = "mL"
    qty[m_ml] = np.round(qty[m_ml] * 1000, 1)
    pk = cls == _PK
    m_box = pk & (u[3] < 0.15)
    _ensure(m_box, pk)
    uom[m_box] = "BOX"
    qty[m_box] = 1.0
    base[m_box] = np.array([6.0, 12.0, 24.0])[(u[4][m_box] * 3).astype(np.int64)]
    # the base unit spelled out explicitly
    m_same = ~(m_g | m_kg | m_ml | m_box) & (u[5] < 0.05)
    uom[m_same] = cu[m_same]

    # component scrap on some positive lines; also on some by-product lines, where it is ignored
    m_scrap = (qty > 0) & (u[6] < 0.2)
    _ensure(m_scrap, qty > 0)
    scrap[m_scrap] = np.array([0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])[
        (u[7][m_scrap] * 8).astype(np.int64)
    ]
    m_bps = bp & (u[6] < 0.3)
    _ensure(m_bps, bp)
    scrap[m_bps] = 2.0
    return {"qty": qty, "base": base, "uom": uom, "scrap": scrap}


def _component_lines(
    rng: np.random.Generator, m: _Master, parent_cls: int, parents: np.ndarray
) -> Lines:
    """Fresh lines for `parents` (all of class `parent_cls`), following `_SPEC`."""
    par: list[np.ndarray] = []
    comp: list[np.ndarray] = []
    for c, probs in _SPEC[parent_cls]:
        k = rng.choice(len(probs), size=parents.size, p=np.asarray(probs))
        if parents.size and k.sum() == 0:
            k[0] = 1  # every kind of line exists even at tiny sizes
        par.append(np.repeat(parents, k))
        comp.append(m.start[c] + _cover(rng, int(k.sum()), m.size[c]))
    p = np.concatenate(par)
    cmp = np.concatenate(comp)
    lines: Lines = {"parent": p, "comp": cmp, **_line_attrs(rng, m, cmp)}
    n = p.size
    lines["plant"] = np.full(n, -1, dtype=np.int64)
    lines["vfrom"] = np.full(n, _NODATE, dtype=np.int64)
    lines["vto"] = np.full(n, _NODATE, dtype=np.int64)
    return lines


def _take(lines: Lines, idx: np.ndarray) -> Lines:
    return {k: v[idx] for k, v in lines.items()}


def _concat(parts: Sequence[Lines]) -> Lines:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _bom_lines(m: _Master, seed: int, start_day: int, days: int, n_plants: int) -> Lines:
    rng = _rng(seed, _S_BOM)
    parent_classes = (_FG, _SA, _PH1, _PH2)
    group = _concat([_component_lines(rng, m, c, m.idx(c)) for c in parent_classes])

    # plant-specific BOMs: ~10% of parents, at one plant each, fully replacing the group lines there
    plant_parts: list[Lines] = []
    for c in parent_classes:
        ps = m.idx(c)
        sel = rng.random(ps.size) < 0.10
        if c in (_FG, _PH1):
            _ensure(sel, np.ones(ps.size, dtype=bool))
        chosen = ps[sel]
        lines = _component_lines(rng, m, c, chosen)
        plant_of = np.zeros(m.ids.size, dtype=np.int64)
        plant_of[chosen] = rng.integers(0, n_plants, chosen.size)
        lines["plant"] = plant_of[lines["parent"]]
        plant_parts.append(lines)
    lines = _concat([group, *plant_parts])
    n = lines["parent"].size

    # validity that does not change anything inside the range
    past = rng.random(n) < 0.3
    lines["vfrom"][past] = start_day - rng.integers(30, 700, n)[past]
    far = rng.random(n) < 0.05
    lines["vto"][far] = start_day + days + rng.integers(30, 400, n)[far]

    # effectivity switches inside the range: old line valid_to = D, replacement valid_from = D
    sw = rng.random(n) < 0.10
    _ensure(sw, np.ones(n, dtype=bool))
    sw_i = np.flatnonzero(sw)
    k = sw_i.size
    d = start_day + (rng.integers(1, days, k) if days >= 2 else np.zeros(k, dtype=np.int64))
    old = _take(lines, sw_i)
    new = _take(lines, sw_i)
    old["vto"] = d
    new["vfrom"] = d
    q = new["qty"]
    whole = (np.abs(q) >= 1) & (q == np.round(q))
    factor = np.array([0.8, 0.9, 1.1, 1.2])[rng.integers(0, 4, k)]
    new["qty"] = np.where(whole, q + np.sign(q), np.round(q * factor, 4))
    cand = m.start[_RM] + rng.integers(0, m.size[_RM], k)
    swap = (m.cls[new["comp"]] == _RM) & (m.uom[cand] == m.uom[new["comp"]]) & (rng.random(k) < 0.3)
    new["comp"] = np.where(swap, cand, new["comp"])
    keep = _take(lines, np.flatnonzero(~sw))

    # group lines that are never effective in the range: expired (valid_to <= start) and future ones
    every = np.concatenate([m.idx(c) for c in parent_classes])
    extra: list[Lines] = []
    for rate, expired in ((0.02, True), (0.01, False)):
        sel = rng.random(every.size) < rate
        _ensure(sel, np.ones(every.size, dtype=bool))
        ps = every[sel]
        comp = m.start[_RM] + rng.integers(0, m.size[_RM], ps.size)
        e: Lines = {"parent": ps, "comp": comp, **_line_attrs(rng, m, comp)}
        e["plant"] = np.full(ps.size, -1, dtype=np.int64)
        if expired:
            e["vfrom"] = start_day - rng.integers(200, 800, ps.size)
            e["vto"] = start_day - rng.integers(0, 30, ps.size)
            e["vto"][0] = start_day  # exactly on the boundary
        else:
            e["vfrom"] = start_day + days + rng.integers(0, 30, ps.size)
            e["vfrom"][0] = start_day + days
            e["vto"] = np.full(ps.size, _NODATE, dtype=np.int64)
        extra.append(e)

    out = _concat([keep, old, new, *extra])
    order = np.lexsort((out["vfrom"], out["plant"], out["parent"]))
    return _take(out, order)


def _bom_table(m: _Master, lines: Lines, plant_ids: Sequence[str]) -> pa.Table:
    names = np.array([*plant_ids, None], dtype=object)

    def dates(v: np.ndarray) -> pa.Array:
        null = v == _NODATE
        return pa.array(np.where(null, 0, v).astype(np.int32), type=pa.date32(), mask=null)

    return pa.table(
        {
            "plant_id": pa.array(names[lines["plant"]], pa.string()),
            "parent_item_id": pa.array(m.ids[lines["parent"]], pa.string()),
            "component_item_id": pa.array(m.ids[lines["comp"]], pa.string()),
            "qty_per": lines["qty"],
            "base_qty": lines["base"],
            "uom": pa.array(lines["uom"], pa.string()),
            "scrap_pct": lines["scrap"],
            "valid_from": dates(lines["vfrom"]),
            "valid_to": dates(lines["vto"]),
        },
        schema=_SCHEMAS["bom"],
    )


def _bad_bom_rows(m: _Master, start: datetime.date) -> list[dict[str, Any]]:
    rm_kg = m.ids[m.start[_RM]]  # RM-0001 is in kg
    rm_2 = m.ids[m.start[_RM] + 1]

    def line(parent: str, comp: str, qty: float = 1.0, **kw: Any) -> dict[str, Any]:
        row: dict[str, Any] = {
            "plant_id": None,
            "parent_item_id": parent,
            "component_item_id": comp,
            "qty_per": qty,
            "base_qty": 1.0,
            "uom": None,
            "scrap_pct": 0.0,
            "valid_from": None,
            "valid_to": None,
        }
        row.update(kw)
        return row

    return [
        line("XFG-INV", rm_kg, 0.5),
        line("XFG-DUP", rm_kg, 0.25),
        line("XFG-BADLINE", rm_kg, 0.5),
        line("XFG-BADLINE", rm_2, 0.3, scrap_pct=100.0),  # INVALID: scrap_pct must be < 100
        line("XFG-BADLINE", rm_2, 0.0),  # INVALID: qty_per must not be 0
        line("XFG-PHEXP", rm_kg, 0.5),
        line("XFG-PHEXP", "XPH-EXPIRED", 1.0),
        line(
            "XPH-EXPIRED",
            rm_2,
            0.2,
            valid_from=start - datetime.timedelta(days=400),
            valid_to=start - datetime.timedelta(days=10),
        ),
        line("XFG-CYCLE", rm_kg, 0.5),
        line("XFG-CYCLE", "XPH-CYC-A", 1.0),
        line("XPH-CYC-A", rm_2, 0.1),
        line("XPH-CYC-A", "XPH-CYC-B", 1.0),
        line("XPH-CYC-B", rm_2, 0.1),
        line("XPH-CYC-B", "XPH-CYC-A", 1.0),
        line("XFG-NOCONV", rm_2, 0.4),
        line("XFG-NOCONV", rm_kg, 2.0, uom="lb"),  # NO_UOM_CONVERSION: no lb row at all
    ]


# --------------------------------------------------------------------------- chunked tables


@dataclass
class _Ctx:
    m: _Master
    seed: int
    days: int
    file_format: str
    zones: list[str]
    plant_ids: pa.Array
    loc_ids: pa.Array
    loc_plant: np.ndarray  # plant index of every location
    loc_start: np.ndarray  # first location index of every plant
    loc_count: np.ndarray
    mid: np.ndarray  # [plant, d] UTC epoch seconds of local midnight of start + d, d = 0..days
    produced: np.ndarray  # items produced by completions (FG and SA)
    produced_cdf: np.ndarray  # Zipf-like popularity
    fg_cdf: np.ndarray


def _context(
    m: _Master, seed: int, start: datetime.date, days: int, n_plants: int, file_format: str
) -> _Ctx:
    zones = [ZONES[p % len(ZONES)] for p in range(n_plants)]
    plant_names = [f"P{p + 1}" for p in range(n_plants)]
    loc_count = np.array([3 if p % 2 == 0 else 2 for p in range(n_plants)], dtype=np.int64)
    loc_start = np.concatenate([[0], np.cumsum(loc_count)[:-1]]).astype(np.int64)
    loc_plant = np.repeat(np.arange(n_plants), loc_count)
    loc_names = [f"{plant_names[p]}-L{j + 1}" for p in range(n_plants) for j in range(loc_count[p])]
    mid = np.empty((n_plants, days + 1), dtype=np.int64)
    for p, tz in enumerate(zones):
        zone = ZoneInfo(tz)
        for d in range(days + 1):
            day = start + datetime.timedelta(days=d)
            mid[p, d] = int(
                datetime.datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
            )
    rng = _rng(seed, _S_POP)
    produced = np.concatenate([m.idx(_FG), m.idx(_SA)])

    def zipf_cdf(n: int) -> np.ndarray:
        w = 1.0 / (rng.permutation(n) + 1.0) ** 0.8
        cdf = np.cumsum(w)
        return cdf / cdf[-1]

    return _Ctx(
        m=m,
        seed=seed,
        days=days,
        file_format=file_format,
        zones=zones,
        plant_ids=pa.array(plant_names, pa.string()),
        loc_ids=pa.array(loc_names, pa.string()),
        loc_plant=loc_plant,
        loc_start=loc_start,
        loc_count=loc_count,
        mid=mid,
        produced=produced,
        produced_cdf=zipf_cdf(produced.size),
        fg_cdf=zipf_cdf(m.size[_FG]),
    )


def _pick(rng: np.random.Generator, cdf: np.ndarray, n: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), cdf.size - 1)


def _instants(
    rng: np.random.Generator, ctx: _Ctx, plant: np.ndarray, near_midnight: float
) -> np.ndarray:
    """UTC epoch seconds inside the plant's local date range; a share within an hour of local midnight."""
    n = plant.size
    lo = ctx.mid[plant, 0]
    hi = ctx.mid[plant, -1]
    t = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
    near = rng.random(n) < near_midnight
    t_near = ctx.mid[plant, rng.integers(0, ctx.days + 1, n)] + rng.integers(-3600, 3600, n)
    return np.where(near, np.clip(t_near, lo, hi - 1), t)


def _locations(rng: np.random.Generator, ctx: _Ctx, plant: np.ndarray) -> np.ndarray:
    return ctx.loc_start[plant] + (rng.random(plant.size) * ctx.loc_count[plant]).astype(np.int64)


def _iso(
    sec: np.ndarray, null: np.ndarray, plant: np.ndarray, style: np.ndarray, zones: list[str]
) -> pa.Array:
    """ISO 8601 strings: style 0 without offset (UTC), 1 plant-local with offset, 2 UTC with `Z`."""
    off = np.zeros(sec.size, dtype=np.int64)
    for p, tz in enumerate(zones):
        sel = (plant == p) & (style == 1) & ~null
        if sel.any():
            local = pd.to_datetime(sec[sel], unit="s", utc=True).tz_convert(tz).tz_localize(None)
            off[sel] = local.as_unit("s").asi8 - sec[sel]
    base = np.datetime_as_string((sec + off).astype("datetime64[s]"), unit="s")
    uniq, inv = np.unique(off, return_inverse=True)
    labels = np.array(
        [
            f"{'+' if o >= 0 else '-'}{abs(int(o)) // 3600:02d}:{abs(int(o)) % 3600 // 60:02d}"
            for o in uniq
        ],
        dtype=object,
    )
    suffix = np.where(style == 1, labels[inv], np.where(style == 2, "Z", "")).astype(str)
    return pa.array(np.char.add(base, suffix), pa.string(), mask=null)


def _timestamps(
    ctx: _Ctx,
    rng: np.random.Generator,
    plant: np.ndarray,
    cols: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, pa.Array]:
    """Timestamp columns (epoch seconds + null mask) as Parquet timestamps or CSV strings."""
    if ctx.file_format == "parquet":
        return {
            name: pa.array(np.where(null, 0, sec) * _US, _TS, mask=null)
            for name, (sec, null) in cols.items()
        }
    style = rng.choice(
        3, size=plant.size, p=[0.5, 0.4, 0.1]
    )  # one style per row, like one source system
    return {name: _iso(sec, null, plant, style, ctx.zones) for name, (sec, null) in cols.items()}


def _round_by_uom(q: np.ndarray, uom: np.ndarray) -> np.ndarray:
    out = q.copy()
    for unit, d in _DECIMALS.items():
        sel = uom == unit
        out[sel] = np.round(q[sel], d)
    return out


def _completions_chunk(
    ctx: _Ctx, k: int, n: int, id_offset: int, order_offset: int
) -> tuple[pa.Table, int, int]:
    rng = _rng(ctx.seed, _S_COMPL, k)
    if n >= 100:
        n_corr, n_canc, n_rep = max(1, n * 5 // 1000), max(1, n // 1000), max(1, n // 1000)
    else:
        n_corr = n_canc = n_rep = 0
    nb = n - n_corr - n_canc - n_rep
    n_orders = max(1, nb // 6)

    # production orders: one item at one plant and location, several completions each
    o_item = ctx.produced[_pick(rng, ctx.produced_cdf, n_orders)]
    o_plant = rng.integers(0, ctx.loc_start.size, n_orders)
    o_loc = _locations(rng, ctx, o_plant)
    o = rng.integers(0, n_orders, nb)
    plant, loc, item = o_plant[o], o_loc[o], o_item[o]
    order_no = order_offset + o
    order_null = rng.random(nb) < 0.02

    done = _instants(rng, ctx, plant, near_midnight=0.10)
    rec = done + rng.integers(60, 900, nb)
    late = rng.random(nb) < 0.005
    rec[late] += rng.integers(3600, 48 * 3600, nb)[late]
    good = np.minimum(50, 1 + (rng.random(nb) ** 2 * 50).astype(np.int64)).astype(np.float64)
    frac = rng.random(nb) < 0.01
    good[frac] += 0.5
    scrap = np.where(rng.random(nb) < 0.08, rng.integers(1, 4, nb), 0).astype(np.float64)
    all_scrap = rng.random(nb) < 0.002
    good[all_scrap] = 0.0
    scrap[all_scrap] = np.maximum(scrap[all_scrap], 1.0)
    ids = id_offset + np.arange(nb)

    perm = rng.permutation(nb)
    corr = perm[:n_corr]
    canc = perm[n_corr : n_corr + n_canc]
    rep = perm[n_corr + n_canc : n_corr + n_canc + n_rep]
    rec_null = rng.random(nb) < 0.003
    rec_null[corr] = False
    rec_null[canc] = False

    # corrections: same id, later recorded_at, different qty_good (sometimes qty_scrap too)
    step = rng.integers(1, 6, n_corr).astype(np.float64)
    down = (rng.random(n_corr) < 0.5) & (good[corr] - step >= 1)
    c_good = np.where(down, good[corr] - step, good[corr] + step)
    c_scrap = np.where(rng.random(n_corr) < 0.2, scrap[corr] + 1, scrap[corr])
    c_rec = rec[corr] + rng.integers(3600, 72 * 3600, n_corr)
    # cancellations: a later version with both quantities 0
    x_rec = rec[canc] + rng.integers(3600, 48 * 3600, n_canc)

    src = np.concatenate([np.arange(nb), corr, canc, rep])
    g_all = np.concatenate([good, c_good, np.zeros(n_canc), good[rep]])
    s_all = np.concatenate([scrap, c_scrap, np.zeros(n_canc), scrap[rep]])
    r_all = np.concatenate([rec, c_rec, x_rec, rec[rep]])
    rn_all = np.concatenate([rec_null, np.zeros(n_corr + n_canc, dtype=bool), rec_null[rep]])

    shuffle = rng.permutation(n)
    src = src[shuffle]
    p_all = plant[src]
    ts = _timestamps(
        ctx,
        rng,
        p_all,
        {
            "completed_at": (done[src], np.zeros(n, dtype=bool)),
            "recorded_at": (r_all[shuffle], rn_all[shuffle]),
        },
    )
    order_ids = _codes("MO", order_no[src], 9)
    table = pa.table(
        {
            "completion_id": _codes("C", ids[src], 10),
            "plant_id": ctx.plant_ids.take(pa.array(p_all)),
            "location_id": ctx.loc_ids.take(pa.array(loc[src])),
            "item_id": pa.array(ctx.m.ids, pa.string()).take(pa.array(item[src])),
            "qty_good": g_all[shuffle],
            "qty_scrap": s_all[shuffle],
            "completed_at": ts["completed_at"],
            "recorded_at": ts["recorded_at"],
            "order_id": pc.if_else(
                pa.array(order_null[src]), pa.scalar(None, pa.string()), order_ids
            ),
        }
    )
    return table, nb, n_orders


def _count_keys(ctx: _Ctx, counts: int) -> tuple[np.ndarray, np.ndarray]:
    """(location, item) keys that are counted: components and by-products, plus a few FGs."""
    rng = _rng(ctx.seed, _S_COUNTS, 10_000)
    m = ctx.m
    n_loc = ctx.loc_plant.size
    comps = np.concatenate([m.idx(_RM), m.idx(_PK), m.idx(_SA), m.idx(_BP)])
    target = max(1, counts // 6)
    n_fg = min(m.size[_FG] * n_loc, max(1, target // 20))
    n_comp = min(comps.size * n_loc, max(1, target - n_fg))
    s = rng.choice(comps.size * n_loc, n_comp, replace=False)
    f = rng.choice(m.size[_FG] * n_loc, n_fg, replace=False)
    loc = np.concatenate([s % n_loc, f % n_loc])
    item = np.concatenate([comps[s // n_loc], m.start[_FG] + f // n_loc])
    perm = rng.permutation(loc.size)
    return loc[perm], item[perm]


def _counts_chunk(
    ctx: _Ctx, keys: tuple[np.ndarray, np.ndarray], k: int, n: int, offset: int
) -> pa.Table:
    rng = _rng(ctx.seed, _S_COUNTS, k)
    key_loc, key_item = keys
    nk = key_loc.size
    j = offset + np.arange(n)
    key = np.where(j < 2 * nk, j % nk, rng.integers(0, nk, n))  # every key counted at least twice
    loc, item = key_loc[key], key_item[key]
    plant = ctx.loc_plant[loc]
    at = _instants(rng, ctx, plant, near_midnight=0.05)
    midnight = rng.random(n) < 0.08  # exactly local 00:00:00
    at[midnight] = ctx.mid[plant, rng.integers(0, ctx.days, n)][midnight]
    uom = ctx.m.uom[item]
    scale = np.select([uom == "EA", uom == "kg", uom == "g"], [2000.0, 1000.0, 100_000.0], 500.0)
    qty = _round_by_uom(rng.random(n) * scale, uom)
    qty[rng.random(n) < 0.03] = 0.0
    ts = _timestamps(ctx, rng, plant, {"counted_at": (at, np.zeros(n, dtype=bool))})
    return pa.table(
        {
            "count_id": _codes("K", j, 9),
            "plant_id": ctx.plant_ids.take(pa.array(plant)),
            "location_id": ctx.loc_ids.take(pa.array(loc)),
            "item_id": pa.array(ctx.m.ids, pa.string()).take(pa.array(item)),
            "counted_qty": qty,
            "counted_at": ts["counted_at"],
        }
    )


def _moves_chunk(ctx: _Ctx, k: int, n: int, offset: int) -> pa.Table:
    rng = _rng(ctx.seed, _S_MOVES, k)
    m = ctx.m
    at_least = 1 if n >= 40 else 0
    pairs = max(at_least, n * 4 // 100)
    rest = n - 2 * pairs
    n_ship = max(at_least, rest * 28 // 100)
    n_issue = max(at_least, rest * 8 // 100)
    n_scrap = max(at_least, rest * 5 // 100)
    n_rec = rest - n_ship - n_issue - n_scrap
    if n_rec < 0:  # tiny tables: receipts only
        pairs, n_ship, n_issue, n_scrap, n_rec = 0, 0, 0, 0, n

    stocked = np.concatenate([m.idx(_RM), m.idx(_PK), m.idx(_SA), m.idx(_FG)])
    receivable = np.concatenate([m.idx(_RM), m.idx(_PK)])
    manual = m.idx(_RM)[~m.backflush[m.idx(_RM)]]
    ship_item = m.start[_FG] + _pick(rng, ctx.fg_cdf, n_ship)
    byp = rng.random(n_ship) < 0.05
    ship_item[byp] = m.start[_BP] + rng.integers(0, m.size[_BP], n_ship)[byp]
    item = np.concatenate(
        [
            receivable[rng.integers(0, receivable.size, n_rec)],
            ship_item,
            manual[rng.integers(0, manual.size, n_issue)],
            stocked[rng.integers(0, stocked.size, n_scrap)],
        ]
    )
    kind = np.repeat(np.arange(5), [n_rec, n_ship, n_issue, n_scrap, 0])
    ranges = np.array([[50.0, 2000.0], [1.0, 100.0], [0.5, 50.0], [0.1, 10.0], [1.0, 100.0]])[kind]
    sign = np.array([1.0, -1.0, -1.0, -1.0, 1.0])[kind]
    single = item.size
    plant = rng.integers(0, ctx.loc_start.size, single)
    loc = _locations(rng, ctx, plant)
    at = _instants(rng, ctx, plant, near_midnight=0.05)
    # transfers: a pair of rows between two locations of one plant, same moment
    t_item = stocked[rng.integers(0, stocked.size, pairs)]
    t_plant = rng.integers(0, ctx.loc_start.size, pairs)
    cnt = ctx.loc_count[t_plant]
    a = (rng.random(pairs) * cnt).astype(np.int64)
    b = (a + 1 + (rng.random(pairs) * (cnt - 1)).astype(np.int64)) % cnt
    t_at = _instants(rng, ctx, t_plant, near_midnight=0.0)

    item = np.concatenate([item, t_item, t_item])
    plant = np.concatenate([plant, t_plant, t_plant])
    loc = np.concatenate([loc, ctx.loc_start[t_plant] + a, ctx.loc_start[t_plant] + b])
    at = np.concatenate([at, t_at, t_at])
    kind = np.concatenate([kind, np.full(2 * pairs, 4)])
    sign = np.concatenate([sign, -np.ones(pairs), np.ones(pairs)])
    ranges = np.concatenate([ranges, np.tile([1.0, 100.0], (2 * pairs, 1))])
    t_mag = rng.random(pairs)
    mag_u = np.concatenate([rng.random(single), t_mag, t_mag])
    uom = m.uom[item]
    unit_scale = np.select([uom == "g"], [1000.0], 1.0)
    qty = sign * _round_by_uom(
        (ranges[:, 0] + mag_u * (ranges[:, 1] - ranges[:, 0])) * unit_scale, uom
    )
    qty = np.where(qty == 0, sign, qty)  # a movement always moves something

    perm = rng.permutation(n)
    kinds = pa.array(["receipt", "shipment", "issue", "scrap", "transfer"], pa.string())
    ts = _timestamps(ctx, rng, plant[perm], {"moved_at": (at[perm], np.zeros(n, dtype=bool))})
    return pa.table(
        {
            "movement_id": _codes("M", offset + np.arange(n), 9),
            "plant_id": ctx.plant_ids.take(pa.array(plant[perm])),
            "location_id": ctx.loc_ids.take(pa.array(loc[perm])),
            "item_id": pa.array(m.ids, pa.string()).take(pa.array(item[perm])),
            "qty": qty[perm],
            "moved_at": ts["moved_at"],
            "kind": kinds.take(pa.array(kind[perm])),
        }
    )


# --------------------------------------------------------------------------- bad rows


def _bad_rows(ctx: _Ctx, table: str) -> list[dict[str, Any]]:
    """Rows the pipeline must quarantine; values are CSV text or Parquet-typed values."""
    csv = ctx.file_format == "csv"
    t0 = int(ctx.mid[0, ctx.days // 2]) + 12 * 3600  # noon of a day in the middle of the range, P1
    utc = ZoneInfo("UTC")

    def ts(sec: int) -> Any:
        dt = datetime.datetime.fromtimestamp(sec, utc)
        return dt.strftime("%Y-%m-%dT%H:%M:%S") if csv else dt

    def num(x: float) -> Any:
        return repr(x) if csv else x

    if table == "completions":

        def c(cid: str, item: str, good: Any = 5.0, done: Any = "default") -> dict[str, Any]:
            # `done=None` is a missing (null) completed_at
            return {
                "completion_id": cid,
                "plant_id": "P1",
                "location_id": "P1-L1",
                "item_id": item,
                "qty_good": good if isinstance(good, str) else num(good),
                "qty_scrap": num(0.0),
                "completed_at": ts(t0) if done == "default" else done,
                "recorded_at": ts(t0 + 300),
                "order_id": "MO-BAD",
            }

        rows = [
            c("CX-NEGQTY", "XFG-INV", good=-5.0),  # INVALID
            c("CX-BADTS", "XFG-INV", done="2026-02-30T25:61:00" if csv else None),  # INVALID
            c("CX-UNKNOWN", "XFG-UNKNOWN"),  # UNKNOWN_ITEM
            c("CX-NOBOM", "XFG-NOBOM"),  # NO_BOM
            c("CX-PHEXP", "XFG-PHEXP"),  # NO_BOM (phantom without effective BOM)
            c("CX-CYCLE", "XFG-CYCLE"),  # BOM_CYCLE
            c("CX-NOCONV", "XFG-NOCONV"),  # NO_UOM_CONVERSION
            c(
                "CX-DUP", "XFG-DUP", good=5.0
            ),  # DUPLICATE_ID: same id, same recorded_at, different qty
            c("CX-DUP", "XFG-DUP", good=7.0),
        ]
        if csv:
            rows.append(c("CX-TEXTQTY", "XFG-INV", good="abc"))  # INVALID: not a number
        return rows
    if table == "stock_counts":

        def k(cid: str, qty: Any, at: Any) -> dict[str, Any]:
            return {
                "count_id": cid,
                "plant_id": "P1",
                "location_id": "P1-L1",
                "item_id": "XRM-BAD",
                "counted_qty": qty,
                "counted_at": at,
            }

        rows = [
            k("KX-BASE", num(10.0), ts(t0 - _DAY)),  # a good count, so the key exists
            k("KX-NEGQTY", num(-3.0), ts(t0)),  # INVALID
            k("KX-BADTS", num(4.0), "yesterday" if csv else None),  # INVALID
        ]
        if csv:
            rows.append(k("KX-TEXTQTY", "ten", ts(t0 + 60)))
        return rows

    def mv(mid: str, qty: Any, at: Any) -> dict[str, Any]:
        return {
            "movement_id": mid,
            "plant_id": "P1",
            "location_id": "P1-L1",
            "item_id": "XRM-BAD",
            "qty": qty,
            "moved_at": at,
            "kind": "receipt",
        }

    rows = [mv("MX-BADTS", num(5.0), "31/02/2026 10:00" if csv else None)]  # INVALID
    if csv:
        rows.append(mv("MX-TEXTQTY", "n/a", ts(t0)))  # INVALID
    return rows


def _with_bad(
    table: pa.Table, rows: list[dict[str, Any]], csv: bool, rng: np.random.Generator
) -> pa.Table:
    """Mix `rows` into `table` at deterministic random positions."""
    if csv:
        table = table.cast(pa.schema([(f.name, pa.string()) for f in table.schema]))
        bad = pa.Table.from_pylist(rows, schema=table.schema)
    else:
        bad = pa.Table.from_pylist(rows, schema=table.schema)
    both = pa.concat_tables([table, bad])
    return both.take(pa.array(rng.permutation(both.num_rows)))


# --------------------------------------------------------------------------- writing


def _write(table: pa.Table, path: Path, file_format: str) -> int:
    if file_format == "parquet":
        pq.write_table(table, path.with_suffix(".parquet"), compression="snappy")
    else:
        pacsv.write_csv(
            table,
            path.with_suffix(".csv"),
            write_options=pacsv.WriteOptions(quoting_style="needed"),
        )
    return table.num_rows


def _write_chunked(
    folder: Path,
    total: int,
    file_format: str,
    make: Callable[[int, int, int], pa.Table],
    finish: Callable[[pa.Table], pa.Table] | None = None,
) -> int:
    """Write `total` rows as part-NNNNN files of at most CHUNK_ROWS rows; `finish` edits the last one."""
    n_chunks = max(1, math.ceil(total / CHUNK_ROWS))
    written = 0
    for k in range(n_chunks):
        offset = k * CHUNK_ROWS
        table = make(k, min(CHUNK_ROWS, total - offset), offset)
        if finish is not None and k == n_chunks - 1:
            table = finish(table)
        written += _write(table, folder / f"part-{k:05d}", file_format)
    return written


def generate_landing(
    out: str | Path,
    *,
    items: int,
    completions: int,
    days: int,
    seed: int,
    start: datetime.date = datetime.date(2026, 1, 1),
    plants: int = 3,
    counts: int | None = None,
    movements: int | None = None,
    bad_rows: bool = False,
    file_format: str = "parquet",
) -> dict[str, int]:
    """Write landing tables under out/<table>/ and return the row count written per table."""
    if items < 1 or days < 1 or plants < 1 or completions < 0 or seed < 0:
        raise ValueError("items, days and plants must be >= 1; completions and seed >= 0")
    if file_format not in ("parquet", "csv"):
        raise ValueError(f"file_format must be 'parquet' or 'csv', not {file_format!r}")
    n_counts = max(50, round(completions / 26)) if counts is None else counts
    n_moves = max(100, completions // 10) if movements is None else movements
    if n_counts < 0 or n_moves < 0:
        raise ValueError("counts and movements must be >= 0")

    root = Path(out)
    for name in TABLES:
        folder = root / name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    csv = file_format == "csv"

    m = _master(items, seed, bad_rows)
    ctx = _context(m, seed, start, days, plants, file_format)
    start_day = (start - _EPOCH).days
    result: dict[str, int] = {}

    plants_t = pa.table({"plant_id": ctx.plant_ids, "timezone": pa.array(ctx.zones, pa.string())})
    result["plants"] = _write(plants_t, root / "plants" / "plants", file_format)
    result["items"] = _write(_items_table(m), root / "items" / "items", file_format)
    result["uom_conversions"] = _write(
        _conversions_table(m), root / "uom_conversions" / "uom_conversions", file_format
    )
    bom = _bom_table(m, _bom_lines(m, seed, start_day, days, plants), ctx.plant_ids.to_pylist())
    if bad_rows:
        bom = pa.concat_tables(
            [bom, pa.Table.from_pylist(_bad_bom_rows(m, start), schema=_SCHEMAS["bom"])]
        )
    result["bom"] = _write(bom, root / "bom" / "bom", file_format)

    state = {"ids": 0, "orders": 0}

    def completions_part(k: int, n: int, offset: int) -> pa.Table:
        table, n_base, n_orders = _completions_chunk(ctx, k, n, state["ids"], state["orders"])
        state["ids"] += n_base
        state["orders"] += n_orders
        return table

    keys = _count_keys(ctx, n_counts)

    def finisher(name: str) -> Callable[[pa.Table], pa.Table] | None:
        if not bad_rows:
            return None
        return lambda t: _with_bad(
            t, _bad_rows(ctx, name), csv, _rng(seed, _S_BAD, TABLES.index(name))
        )

    result["completions"] = _write_chunked(
        root / "completions", completions, file_format, completions_part, finisher("completions")
    )
    result["stock_counts"] = _write_chunked(
        root / "stock_counts",
        n_counts,
        file_format,
        lambda k, n, offset: _counts_chunk(ctx, keys, k, n, offset),
        finisher("stock_counts"),
    )
    result["movements"] = _write_chunked(
        root / "movements",
        n_moves,
        file_format,
        lambda k, n, offset: _moves_chunk(ctx, k, n, offset),
        finisher("movements"),
    )
    return result


def calibrate_counts(landing: str | Path, variance: pd.DataFrame, *, seed: int) -> int:
    """Rewrite the counted quantities of generated counts as book stock plus realistic deviations.

    Random counts make every variance huge. Given a first pass's `variance` rows (book_qty,
    opening_qty, theoretical_usage_qty per count), each (plant, location, item) gets a starting
    stock large enough never to run dry, then each count = previous count + the window's net
    flow − usage × the component's bias + noise. About 15 % of components carry a systematic
    bias (±6–8 % usage: a BOM quantity that is off), which BOM accuracy should flag; the rest
    deviate by about 1 %. Returns the number of counts rewritten.
    """
    rng = _rng(seed, 99)
    rows = variance.sort_values(["plant_id", "location_id", "item_id", "counted_at", "count_id"]).reset_index(drop=True)
    if rows.empty:
        return 0
    baseline = rows["status"] == "baseline"
    net = (rows["book_qty"] - rows["opening_qty"]).fillna(0.0)
    usage = rows["theoretical_usage_qty"].fillna(0.0)
    items = pd.Series(rows["item_id"].unique())
    bias = pd.Series(rng.choice([0.0, 0.08, -0.06], size=len(items), p=[0.85, 0.075, 0.075]), index=items)
    drift = -usage * rows["item_id"].map(bias) + rng.normal(0.0, 0.01, len(rows)) * np.maximum(usage, 1.0)
    step = (net + drift).where(~baseline, 0.0)
    key = ["plant_id", "location_id", "item_id"]
    reserve = (step.abs() + usage).groupby([rows[k] for k in key]).transform("sum")
    start = rows["counted_qty"].where(baseline).groupby([rows[k] for k in key]).transform("first").fillna(0.0)
    counted = start + reserve + step.groupby([rows[k] for k in key]).cumsum()
    decimals = rows["uom"].map({"EA": 0}).fillna(3).to_numpy()
    counted = np.round(counted.to_numpy() * 10.0**decimals) / 10.0**decimals
    new = dict(zip(rows["count_id"], counted, strict=True))
    written = 0
    for path in sorted(Path(landing, "stock_counts").glob("*")):
        if path.suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            continue
        hit = frame["count_id"].isin(list(new))
        values = frame.loc[hit, "count_id"].map(new)
        frame["counted_qty"] = frame["counted_qty"].astype(object)
        frame.loc[hit, "counted_qty"] = values.map(lambda v: f"{v:.3f}".rstrip("0").rstrip(".")) \
            if path.suffix == ".csv" else values
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame["counted_qty"] = pd.to_numeric(frame["counted_qty"])
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
        written += int(hit.sum())
    return written
