"""Reading the landing area: INVALID and DUPLICATE_ID quarantine, corrections, cancellations, repeats,
mixed CSV + Parquet, defaults of absent optional columns, and the SourceError stop.

All through the public path (landing files -> `job.run_dates` -> Parquet outputs), numbers by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline import job
from pipeline.errors import SourceError
from pipeline.intake import accept, scan
from tests.support.landing import config_for, make_landing, read, run, write_table

DAY = "2026-03-02"
AT = "2026-03-02T10:00:00Z"
ITEMS = [{"item_id": "FG", "uom": "EA"}, {"item_id": "RM", "uom": "EA"}]  # optional columns absent
BOM = [{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 1}]


def completion(cid: str, qty_good: object, *, location: str = "L1", at: object = AT, **extra: object) -> dict:
    return {"completion_id": cid, "plant_id": "P1", "location_id": location, "item_id": "FG",
            "qty_good": qty_good, "completed_at": at, **extra}


def adjustments_of(root: Path) -> dict[tuple[str, str, str], float]:
    f = read(root, "adjustments")
    return {(loc, i, k): q for loc, i, k, q in zip(f.location_id, f.item_id, f.kind, f.qty, strict=True)}


# ------------------------------------------------------------------ INVALID rows


INVALID = {  # completion -> (bad values, words the message must contain)
    "B_NUM": ({"qty_good": "abc"}, ["qty_good", "abc"]),
    "B_NEG": ({"qty_good": "-1"}, ["qty_good", "-1"]),
    "B_SCRAP": ({"qty_scrap": "-2"}, ["qty_scrap", "-2"]),
    "B_MISS": ({"location_id": ""}, ["location_id", "missing"]),
    "B_TS": ({"completed_at": "yesterday"}, ["completed_at", "yesterday"]),
}


@pytest.fixture(scope="module")
def invalid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("invalid")
    rows = [completion("G1", 1, qty_scrap=0)]
    for cid, (values, _) in INVALID.items():
        rows.append({**completion(cid, 2, qty_scrap=0), **values})
    landing = make_landing(
        root,
        items=ITEMS + [{"item_id": "BAD_DEC", "uom": "EA", "uom_decimals": "12"}],  # 0..9 only
        bom=BOM + [{"parent_item_id": "FG_X", "component_item_id": "RM", "qty_per": 0}],  # qty_per 0 is invalid
        completions=rows,
    )
    (landing / "items" / "latin.csv").write_bytes("item_id,uom\nK\xe4se,EA\n".encode("latin-1"))
    run(root, landing, [DAY])
    return root


@pytest.mark.parametrize("cid", list(INVALID))
def test_invalid_completion_is_quarantined(invalid: Path, cid: str) -> None:
    values, words = INVALID[cid]
    q = read(invalid, "quarantine")
    rows = q[q["source_key"] == cid]
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["table"], row["error_code"]) == ("completions", "INVALID")
    for word in words:
        assert word in row["message"], row["message"]
    original = json.loads(row["row"])
    assert original["completion_id"] == cid
    for column, value in values.items():
        assert _same(original[column], value), (column, original[column])  # the value as written


def _same(stored: object, written: str) -> bool:
    """A value of the `row` JSON is the one in the file (a number may come back typed: -1.0 for "-1")."""
    if stored is None:
        return written == ""
    if isinstance(stored, int | float):
        return float(stored) == float(written)
    return stored == written


def test_invalid_completions_are_in_no_output(invalid: Path) -> None:
    # only G1 (1 unit) gets through; each invalid row would have added 2 units
    assert adjustments_of(invalid) == pytest.approx({
        ("L1", "FG", "production_receipt"): 1.0,
        ("L1", "RM", "backflush_issue"): -1.0,  # -(1 * 1)
    })
    assert read(invalid, "consumption")["completions"].tolist() == [1]


def test_invalid_master_rows_are_quarantined(invalid: Path) -> None:
    q = read(invalid, "quarantine").set_index("source_key")
    assert q.loc["BAD_DEC", "table"] == "items" and q.loc["BAD_DEC", "error_code"] == "INVALID"
    assert "uom_decimals" in q.loc["BAD_DEC", "message"] and "12" in q.loc["BAD_DEC", "message"]
    bom = q[q["table"] == "bom"]
    assert bom["error_code"].tolist() == ["INVALID"] and "qty_per" in bom["message"].iloc[0]
    assert json.loads(bom["row"].iloc[0])["parent_item_id"] == "FG_X"


def test_bytes_that_are_not_utf8_make_their_row_invalid(invalid: Path) -> None:
    q = read(invalid, "quarantine")
    rows = q[q["table"].eq("items") & q["message"].str.contains("UTF-8")]
    assert len(rows) == 1 and rows.iloc[0]["error_code"] == "INVALID"
    assert "item_id" in rows.iloc[0]["message"]


# ------------------------------------------------------------------ quarantine across daily runs


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("twodays")
    landing = make_landing(
        root,
        items=ITEMS + [{"item_id": "BAD_DEC", "uom": "EA", "uom_decimals": "12"}],
        bom=BOM,
        completions=[completion("G1", 1), completion("B_NUM", "abc")],  # B_NUM's own date is 03-02
    )
    run(root, landing, [DAY])
    run(root, landing, ["2026-03-03"])  # the next daily run reads the same landing area
    return root


def test_dated_reject_is_one_row_in_its_own_business_date(two_days: Path) -> None:
    q = read(two_days, "quarantine")
    rows = q[q["source_key"] == "B_NUM"]
    assert rows["business_date"].tolist() == [pd.Timestamp(DAY)]  # completed_at is readable: 03-02


def test_master_reject_is_one_row_across_daily_runs(two_days: Path) -> None:
    q = read(two_days, "quarantine")
    assert (q["source_key"] == "BAD_DEC").sum() == 1


def test_plant_seen_only_in_rejected_rows_still_gets_its_quarantine(tmp_path: Path) -> None:
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[completion("B_ONLY", "1x")])
    result = run(tmp_path, landing, [DAY])
    assert result.rows_quarantined["completions"] == 1  # the one row read
    assert read(tmp_path, "quarantine")["source_key"].tolist() == ["B_ONLY"]


# ------------------------------------------------------------------ versions of a completion


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("versions")
    landing = make_landing(root, items=ITEMS, bom=BOM)
    t12, t13 = "2026-03-02T12:00:00Z", "2026-03-02T13:00:00Z"
    # a.csv sorts before z.csv: file order must not matter
    write_table(landing, "completions", name="a.csv", rows=[
        completion("C1", 7, location="L_CORR", recorded_at=t13),  # the correction, in the earlier file
        completion("X1", 0, location="L_CANC", qty_scrap=0, recorded_at=t13),  # cancelled: both 0
        completion("R1", 3, location="L_REP", recorded_at=t12),
        completion("D1", 2, location="L_DUP", recorded_at=t12),
        completion("N1", 2, location="L_NULL", recorded_at="2026-03-02T11:00:00Z"),
    ])
    write_table(landing, "completions", name="z.csv", rows=[
        completion("C1", 5, location="L_CORR", recorded_at=t12),
        completion("X1", 5, location="L_CANC", qty_scrap=1, recorded_at=t12),
        completion("R1", 3, location="L_REP", recorded_at=t12),  # identical repeat
        completion("D1", 4, location="L_DUP", recorded_at=t12),  # same id, same time, different content
        completion("N1", 1, location="L_NULL", recorded_at=""),  # recorded_at defaults to completed_at 10:00
    ])
    run(root, landing, [DAY])
    return root


def test_latest_version_wins_and_repeats_count_once(versions: Path) -> None:
    assert adjustments_of(versions) == pytest.approx({
        ("L_CORR", "FG", "production_receipt"): 7.0,  # recorded 13:00 beats 5 recorded 12:00
        ("L_CORR", "RM", "backflush_issue"): -7.0,
        ("L_REP", "FG", "production_receipt"): 3.0,  # 3, not 3 + 3
        ("L_REP", "RM", "backflush_issue"): -3.0,
        ("L_NULL", "FG", "production_receipt"): 2.0,  # recorded 11:00 beats completed (= recorded) 10:00
        ("L_NULL", "RM", "backflush_issue"): -2.0,
    })  # nothing at L_CANC (cancelled) nor at L_DUP (ambiguous)


def test_cancelled_completion_contributes_nothing(versions: Path) -> None:
    for dataset in ("consumption", "adjustments"):
        assert "L_CANC" not in set(read(versions, dataset)["location_id"])
    assert "X1" not in set(read(versions, "quarantine")["source_key"])  # a cancellation is not an error
    completions = read(versions, "consumption").set_index("location_id")["completions"]
    assert completions.to_dict() == {"L_CORR": 1, "L_NULL": 1, "L_REP": 1}


def test_conflicting_versions_are_all_duplicate_id(versions: Path) -> None:
    q = read(versions, "quarantine")
    rows = q[q["source_key"] == "D1"]
    assert rows["error_code"].tolist() == ["DUPLICATE_ID", "DUPLICATE_ID"]
    assert all("D1" in m for m in rows["message"])
    assert sorted(float(json.loads(r)["qty_good"]) for r in rows["row"]) == [2.0, 4.0]
    assert set(q["source_key"]) == {"D1"}


# ------------------------------------------------------------------ mixed formats and defaults


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mixed")
    landing = make_landing(
        root,
        items=[{"item_id": "FG", "uom": "EA"}, {"item_id": "SUB", "uom": "EA"}, {"item_id": "RM", "uom": "kg"}],
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 1.23456},
             {"parent_item_id": "FG", "component_item_id": "SUB", "qty_per": 1},
             {"parent_item_id": "SUB", "component_item_id": "RM", "qty_per": 100}],
        completions=[completion("M1", 1)],  # CSV: no qty_scrap, recorded_at, order_id columns
    )
    write_table(landing, "completions", name="more.parquet", rows=[
        {"completion_id": "M2", "plant_id": "P1", "location_id": "L1", "item_id": "FG", "qty_good": 2.0,
         "qty_scrap": 1.0, "completed_at": pd.Timestamp("2026-03-02T11:00:00Z")},
    ])
    run(root, landing, [DAY])
    return root


def test_mixed_csv_and_parquet_with_defaults(mixed: Path) -> None:
    frame = read(mixed, "consumption").set_index("component_item_id")
    assert frame["qty"].to_dict() == pytest.approx({
        "RM": 4.93824,  # (1 + 2 + 1) * 1.23456; SUB's own line to RM is not used (phantom defaults false)
        "SUB": 4.0,  # (1 + 2 + 1) * 1
    }, rel=1e-12)
    assert frame["backflushed"].to_dict() == {"RM": True, "SUB": True}  # backflush defaults to true
    assert frame["completions"].tolist() == [2, 2]  # M1 from CSV, M2 from Parquet
    assert adjustments_of(mixed) == pytest.approx({
        ("L1", "FG", "production_receipt"): 3.0,  # 1 + 2 (scrap not received)
        ("L1", "RM", "backflush_issue"): -4.938,  # uom_decimals defaults to 3: -4.93824 -> -4.938
        ("L1", "SUB", "backflush_issue"): -4.0,
    })
    assert read(mixed, "adjustments")["value"].tolist() == [0.0, 0.0, 0.0]  # standard_cost defaults to 0


# ------------------------------------------------------------------ what stops a run


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("published")
    run(root, make_landing(root, items=ITEMS, bom=BOM, completions=[completion("G1", 1)]), [DAY])
    return root


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _without_qty_good(landing: Path) -> str:
    write_table(landing, "completions", [{k: v for k, v in completion("G2", 1).items() if k != "qty_good"}])
    return "qty_good"


def _broken_parquet(landing: Path) -> str:
    (landing / "completions" / "broken.parquet").write_bytes(b"this is not parquet")
    return "broken.parquet"


def _no_items(landing: Path) -> str:
    for f in (landing / "items").iterdir():
        f.unlink()
    return "items"


@pytest.mark.parametrize("breakage", [_without_qty_good, _broken_parquet, _no_items])
def test_unreadable_input_raises_and_leaves_the_warehouse_untouched(published: Path, breakage, tmp_path: Path) -> None:
    landing = make_landing(tmp_path, items=ITEMS, bom=BOM, completions=[completion("G1", 1)])
    named = breakage(landing)
    before = _snapshot(published / "warehouse")
    with pytest.raises(SourceError) as raised:
        job.run_dates(config_for(published, landing), [pd.Timestamp(DAY).date()])
    message = str(raised.value)
    assert "\n" not in message and named in message, message
    assert _snapshot(published / "warehouse") == before


def test_quantities_in_another_unit_are_converted_or_rejected(tmp_path: Path) -> None:
    """The contract: quantities are in the item's base unit unless a `uom` column says otherwise."""

    landing = make_landing(
        tmp_path,
        items=[{"item_id": "FG", "uom": "EA", "standard_cost": 1, "phantom": "false", "backflush": "true",
                "uom_decimals": 0},
               {"item_id": "RM", "uom": "kg", "standard_cost": 1, "phantom": "false", "backflush": "true",
                "uom_decimals": 3}],
        uom_conversions=[{"item_id": "", "from_uom": "g", "to_uom": "kg", "factor": 0.001},
                         {"item_id": "FG", "from_uom": "BOX", "to_uom": "EA", "factor": 12}],
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 1}],
        completions=[
            {"completion_id": "C_BOX", "plant_id": "P1", "location_id": "L1", "item_id": "FG", "qty_good": 2,
             "qty_scrap": 1, "completed_at": "2026-01-05T10:00:00Z", "uom": "BOX"},
            {"completion_id": "C_EA", "plant_id": "P1", "location_id": "L1", "item_id": "FG", "qty_good": 5,
             "qty_scrap": 0, "completed_at": "2026-01-05T10:00:00Z", "uom": ""},
            {"completion_id": "C_PAL", "plant_id": "P1", "location_id": "L1", "item_id": "FG", "qty_good": 1,
             "qty_scrap": 0, "completed_at": "2026-01-05T10:00:00Z", "uom": "PALLET"},
        ],
        movements=[{"movement_id": "M1", "plant_id": "P1", "location_id": "L1", "item_id": "RM", "qty": 2500,
                    "moved_at": "2026-01-05T09:00:00Z", "kind": "receipt", "uom": "g"}],
    )
    inputs = accept.load_inputs(scan.read_landing_files(landing))
    got = inputs.completions.set_index("completion_id")[["qty_good", "qty_scrap"]].to_dict("index")
    assert got == {"C_BOX": {"qty_good": 24.0, "qty_scrap": 12.0},  # 2 BOX * 12, 1 BOX * 12
                   "C_EA": {"qty_good": 5.0, "qty_scrap": 0.0}}      # no unit: the base unit
    assert inputs.movements["qty"].tolist() == [2.5]                 # 2500 g * 0.001
    bad = inputs.quarantine.set_index("source_key")
    assert bad.loc["C_PAL", "error_code"] == "NO_UOM_CONVERSION"
    assert "PALLET" in bad.loc["C_PAL", "message"] and "FG" in bad.loc["C_PAL", "message"]
    assert bad.loc["C_PAL", "business_date"] == pd.Timestamp("2026-01-05")


# ------------------------------------------------------------------ fast paths give the plain pandas answers


IDS = ["C1", "C1", "C2", "ab", "ab ", "ab", "abcdefgh", "abcdefghi", "abcdefgh"]  # short ASCII: hashed


@pytest.mark.parametrize("values", [
    IDS, IDS[::-1], IDS + ["ä", "ä"], IDS + ["x" * 70, "x" * 70], ["a"], [], ["a", None, None], ["", ""], ["", "a"],
    [f"C{i:07d}" for i in range(3000)] + ["C0000042", "C0001234"],  # ids of one length, two repeated
])
def test_repeated_ids_are_the_ones_pandas_calls_duplicated(values: list) -> None:
    from pipeline.engine.strings import duplicated_mask

    ids = pd.Series(values, dtype="str")
    chunks = pd.concat([ids, ids.iloc[:3], ids.iloc[1:]], ignore_index=True)  # several Arrow chunks
    for series in (ids, ids.iloc[1:], chunks, ids.astype(object)):
        assert duplicated_mask(series).tolist() == series.duplicated(keep=False).tolist()


@pytest.mark.parametrize("values", [["a", " b", "c\t", None], ["a", "b", None], ["x\u3000", "\xa0y"], [None], []])
def test_text_is_stripped_as_pandas_strips_it_and_kept_when_nothing_changes(values: list) -> None:
    from pipeline.engine.strings import strip_text

    text = pd.Series(values, dtype="str")
    stripped = strip_text(text)
    pd.testing.assert_series_equal(stripped, text.str.strip())
    assert (stripped is text) == text.str.strip().equals(text)  # no second copy of unchanged strings


def test_membership_of_arrow_strings_is_the_one_pandas_computes() -> None:
    from pipeline.engine.strings import isin

    values = pd.Series(["a", None, "b", "ä"], dtype="str", index=[3, 1, 4, 1])
    for allowed in (["a", "ä"], ["b", None], []):
        pd.testing.assert_series_equal(isin(values, pd.Series(allowed, dtype="str")), values.isin(allowed))


def test_business_date_is_the_day_in_the_plants_time_zone() -> None:
    from pipeline.domain.timezones import business_dates

    zones = pd.DataFrame({"plant_id": ["P1", "P2"], "timezone": ["America/New_York", "Asia/Tokyo"]})
    at = pd.Series(pd.to_datetime(["2026-03-08T04:30Z", "2026-03-08T15:30Z", "2026-03-08T23:30Z", None,
                                   "2026-03-08T23:30Z"], utc=True), index=[5, 6, 7, 8, 9]).astype("datetime64[us, UTC]")
    plants = pd.Series(["P1", "P2", "P9", "P1", None], dtype="str", index=at.index)
    expected = pd.Series(pd.to_datetime(["2026-03-07", "2026-03-09", "2026-03-08", None, "2026-03-08"]),
                         index=at.index).astype("datetime64[ns]")  # an unknown or missing plant counts in UTC
    pd.testing.assert_series_equal(business_dates(at, plants, zones), expected)


def test_a_rejected_datetime_is_shown_as_its_column_writes_it() -> None:
    """pandas writes a midnight without its time only when the whole column is midnights."""
    from pipeline.intake.coerce import coerce_table

    frame = pd.DataFrame({"completion_id": ["A", "B"], "plant_id": "P1", "location_id": "L1", "item_id": "FG",
                          "qty_good": 1.0, "completed_at": pd.to_datetime(["1500-01-01T00:00", "2026-03-02T10:00"]).as_unit("us")})
    _, bad = coerce_table("completions", [("completions/x.parquet", frame)])
    assert bad["message"].tolist() == ["completed_at = '1500-01-01 00:00:00' is not an ISO 8601 timestamp"]


def test_completions_in_other_units_when_every_item_is_rejected_are_unknown_items(tmp_path: Path) -> None:
    """No item survives validation, and a completion names a unit: it is quarantined as an unknown
    item, not a crash of the unit conversion on an empty item master."""
    landing = make_landing(
        tmp_path,
        items=[{"item_id": "F", "uom": "EA", "standard_cost": "cheap", "phantom": False, "backflush": True,
                "uom_decimals": 3}],
        bom=[{"parent_item_id": "F", "component_item_id": "R", "qty_per": 2}],
        completions=[{"completion_id": "C1", "plant_id": "P1", "location_id": "L1", "item_id": "F", "qty_good": 1,
                      "uom": "BOX", "completed_at": "2026-01-05T10:00:00Z"}],
    )
    result = run(tmp_path, landing, ["2026-01-05"])
    assert result.quarantine_by_code == {"INVALID": 1, "UNKNOWN_ITEM": 1}
    rejected = read(tmp_path, "quarantine").set_index("table")
    assert rejected.loc["completions", "source_key"] == "C1"
    assert rejected.loc["items", "error_code"] == "INVALID"


def test_conflicting_conversion_rows_are_all_duplicate_id(tmp_path: Path) -> None:
    """Two rows for kg -> g of RM (1,000 and 100) cannot both be right: both are DUPLICATE_ID (docs/
    decisions.md), and an identical repeat of the generic L -> ML row is one row. FG's line in kg then
    has no conversion (NO_UOM_CONVERSION); GX's line of 2 L of the ML item W needs 2 x 1,000 = 2,000 ML."""
    landing = make_landing(
        tmp_path,
        items=[{"item_id": "FG", "uom": "EA"}, {"item_id": "GX", "uom": "EA"}, {"item_id": "RM", "uom": "g"},
               {"item_id": "W", "uom": "ML"}],
        bom=[{"parent_item_id": "FG", "component_item_id": "RM", "qty_per": 1, "uom": "kg"},
             {"parent_item_id": "GX", "component_item_id": "W", "qty_per": 2, "uom": "L"}],
        uom_conversions=[{"item_id": "RM", "from_uom": "kg", "to_uom": "g", "factor": 1000},
                         {"item_id": "RM", "from_uom": "kg", "to_uom": "g", "factor": 100},
                         {"item_id": "", "from_uom": "L", "to_uom": "ML", "factor": 1000},
                         {"item_id": "", "from_uom": "L", "to_uom": "ML", "factor": 1000}],
        completions=[completion("C1", 1), {**completion("C2", 1), "item_id": "GX"}],
    )
    run(tmp_path, landing, [DAY])
    q = read(tmp_path, "quarantine")
    conversions = q[q["table"] == "uom_conversions"]
    assert conversions["error_code"].tolist() == ["DUPLICATE_ID", "DUPLICATE_ID"]
    assert set(conversions["source_key"]) == {"RM:kg>g"}
    assert q.set_index("source_key").loc["C1", "error_code"] == "NO_UOM_CONVERSION"
    assert adjustments_of(tmp_path) == {("L1", "GX", "production_receipt"): 1.0,
                                        ("L1", "W", "backflush_issue"): -2000.0}
