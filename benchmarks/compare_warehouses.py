"""Two warehouses, dataset by dataset: identical, or how they differ (issues 13.5 and 14).

    .venv/bin/python benchmarks/compare_warehouses.py BEFORE AFTER [--examples 3] [--ignore DATASET.COLUMN]

Every dataset present in either warehouse is found by listing its top folder (names starting
with `_` or `.` are the warehouse's own bookkeeping: journal, staging, locks). For each one, every
Parquet file under it is read (Hive partitions `key=value/...`, any number of part files per
partition folder), the partition values become string columns, the columns that are legitimately
run-specific (RUN_SPECIFIC below, each with its reason) are dropped, the columns holding a run id
(RUN_ID_COLUMNS) are replaced by the run's rank in its warehouse, and the two sides are compared
exactly: the set of partition folders, the file schema (names, order, Arrow types, nullability;
Parquet metadata aside), the row count, and the rows as multisets: equal in file order (files in
path order, each written sorted: the common case, under a second a dataset), or else every distinct
row counted on each side in one DuckDB aggregation (the same as sorting both by every remaining
column and comparing row by row). Values are compared as DuckDB compares them: no tolerance on floats; NULL equals NULL, NaN equals NaN and
-0.0 equals 0.0. How many files a partition is split into (postings: one file per run, or per
batch of dates when workers wrote them) is physical layout and only printed as a note.

One line per dataset; a few example rows under every difference (sorted by every column); exit
status 0 when every dataset is identical, 1 on any difference, 2 when a folder is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

#: (dataset, column) -> why it differs from run to run of the same engine on the same input.
RUN_SPECIFIC: dict[tuple[str, str], str] = {
    ("runs", "started_at"): "the run's wall-clock start (job.run: started = now)",
    ("runs", "finished_at"): "the run's wall-clock end",
    ("runs", "code_version"): "the engine's version string (pipeline.__version__): a property of the build, not of the data",
    ("postings", "posting_id"): "ledger.stable_ids(run_id, adjustment_id): a hash of the run id; adjustment_id is "
                                "compared and posting_id is checked unique on each side (CHECKS)",
    ("postings", "posted_at"): "the run's start time (job.py: posted_at=shared['started'])",
    ("quarantine", "released_at"): "the wall-clock time of the releasing run (error_queue.release: at)",
    ("landing_manifest", "described_at"): "when the run surveyed the file (landing.describe: now)",
    ("bom_accuracy", "as_of"): "the run's start time (job.py: as_of=started)",
    ("bom_suggestions", "as_of"): "the run's start time (job.py: as_of=started)",
}

#: (dataset, column) holding a run id (job.new_run_id: UTC start time + a random suffix): replaced by
#: the run's rank among the run ids of its warehouse's `runs` dataset (1 = the first run, sorted by
#: run_id, which sorts by start time; 0 = an id not in `runs`), so "which run wrote this row" is still
#: compared while the id itself is not.
RUN_ID_COLUMNS: dict[tuple[str, str], str] = {
    ("runs", "run_id"): "the run's own id",
    ("postings", "run_id"): "the run that posted the row",
    ("quarantine", "run_id"): "the run that quarantined the row",
    ("quarantine", "released_by_run"): "the run that released it (null: still open)",
}

#: (dataset, column) that must be unique on each side: the dropped id still identifies one row.
CHECKS: dict[tuple[str, str], str] = {
    ("postings", "posting_id"): "one posting per (run, adjustment)",
}

#: Columns that are not run-specific although their names suggest it, kept on purpose (documentation).
KEPT_ON_PURPOSE: dict[tuple[str, str], str] = {
    ("runs", "watermark_recorded_at"): "the largest recorded_at of the input: data, not time of run",
    ("landing_manifest", "mtime_ns"): "the landing file's mtime: the same landing folder gives the same value",
    ("landing_manifest", "source"): "the file's path relative to the landing folder",
}


@dataclass
class Side:
    """One dataset of one warehouse, as read."""

    files: int = 0
    partitions: dict[str, int] = field(default_factory=dict)  # partition folder -> files in it
    schemas: list[pa.Schema] = field(default_factory=list)  # distinct file schemas, first seen first
    table: pa.Table | None = None
    problems: list[str] = field(default_factory=list)
    others: set[str] = field(default_factory=set)  # visible files that are not Parquet

    @property
    def rows(self) -> int:
        return 0 if self.table is None else self.table.num_rows


def is_hidden(name: str) -> bool:
    return name.startswith(("_", "."))


def unsettled(root: Path) -> list[str]:
    """Signs that a run is in progress or crashed before its journal was rolled forward: the published
    datasets are then not the warehouse's final state (the next run recovers it)."""
    found = []
    for folder in ("_staging", "_journal", "_locks"):
        if (root / folder).is_dir() and any(p.is_file() for p in (root / folder).rglob("*")):
            found.append(folder)
    return found


def datasets(root: Path) -> dict[str, Path]:
    """Every dataset folder (and top-level file) of a warehouse, by name."""
    return {p.name: p for p in sorted(root.iterdir()) if not is_hidden(p.name)}


def data_files(folder: Path) -> list[tuple[str, Path]]:
    """(partition folder relative to the dataset, file) of every visible Parquet file of a dataset."""
    if folder.is_file():
        return [("", folder)] if folder.suffix == ".parquet" else []
    out = []
    for path in sorted(folder.rglob("*.parquet")):
        rel = path.relative_to(folder)
        if any(is_hidden(part) for part in rel.parts):
            continue
        out.append((rel.parent.as_posix() if rel.parent != Path(".") else "", path))
    return out


def other_files(folder: Path) -> set[str]:
    """The visible files of a dataset that are not Parquet (none expected), relative to the dataset."""
    if folder.is_file():
        return set() if folder.suffix == ".parquet" else {folder.name}
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.suffix != ".parquet"
            and not any(is_hidden(part) for part in p.relative_to(folder).parts)}


def partition_values(rel: str) -> list[tuple[str, str]]:
    values: list[tuple[str, str]] = []
    for segment in rel.split("/") if rel else []:
        key, sep, value = segment.partition("=")
        values.append((key, urllib.parse.unquote(value)) if sep else (f"_dir{len(values)}", segment))
    return values


def read_side(folder: Path | None, threads: int) -> Side:
    """All files of one dataset, partition values as string columns (named `key`, or `_partition_key`
    when the file has a column of that name)."""
    side = Side()
    if folder is None:
        return side
    files = data_files(folder)
    side.files = len(files)
    side.others = other_files(folder)
    for rel, _ in files:
        side.partitions[rel] = side.partitions.get(rel, 0) + 1

    def one(item: tuple[str, Path]) -> pa.Table:
        rel, path = item
        table = pq.ParquetFile(path).read()
        table = table.replace_schema_metadata(None)
        for key, value in partition_values(rel):
            name = f"_partition_{key}" if key in table.column_names else key
            table = table.append_column(name, pa.repeat(pa.scalar(value, pa.string()), table.num_rows))
        return table

    with ThreadPoolExecutor(threads) as pool:
        tables = list(pool.map(one, files))
    for t in tables:
        if not any(t.schema.equals(s) for s in side.schemas):
            side.schemas.append(t.schema)
    if len(side.schemas) > 1:
        side.problems.append(f"{len(side.schemas)} different file schemas within the dataset")
    if tables:
        side.table = pa.concat_tables(tables, promote_options="permissive") if len(side.schemas) > 1 \
            else pa.concat_tables(tables)
    return side


def run_ranks(runs: Side) -> pa.Array:
    """The sorted distinct run ids of a warehouse's runs dataset."""
    if runs.table is None or "run_id" not in runs.table.column_names:
        return pa.array([], pa.string())
    return pc.unique(runs.table["run_id"].drop_null()).sort()


def canonical(dataset: str, side: Side, ranks: pa.Array, ignored: set[tuple[str, str]]) -> tuple[pa.Table | None, list[str]]:
    """The table with run-specific columns dropped and run ids ranked, and the CHECKS it fails."""
    table = side.table
    failures: list[str] = []
    if table is None:
        return None, failures
    for (ds_name, column), why in CHECKS.items():
        if ds_name == dataset and column in table.column_names:
            distinct = len(pc.unique(table[column]))
            if distinct != table.num_rows:
                failures.append(f"{column} not unique ({distinct:,} distinct of {table.num_rows:,}: {why})")
    for column in table.column_names:
        if (dataset, column) in RUN_ID_COLUMNS and (dataset, column) not in ignored:
            values = table[column]
            rank = pc.add(pc.index_in(values, value_set=ranks), 1)
            rank = pc.if_else(pc.and_(pc.is_valid(values), pc.is_null(rank)), 0, rank).cast(pa.int64())
            table = table.set_column(table.column_names.index(column), column, rank)
    drop = [c for c in table.column_names if (dataset, c) in RUN_SPECIFIC or (dataset, c) in ignored]
    return table.drop_columns(drop), failures


def schema_lines(a: Sequence[pa.Schema], b: Sequence[pa.Schema]) -> list[str]:
    """How the file schemas differ (empty: they do not)."""
    if len(a) == len(b) and all(x.equals(y) for x, y in zip(a, b, strict=True)):
        return []
    if not a or not b:
        return []  # a dataset missing on one side is reported as such
    sa, sb = a[0], b[0]
    lines = []
    fa, fb = {f.name: f for f in sa}, {f.name: f for f in sb}
    only_a = [n for n in sa.names if n not in fb]
    only_b = [n for n in sb.names if n not in fa]
    if only_a:
        lines.append(f"columns only in A: {', '.join(only_a)}")
    if only_b:
        lines.append(f"columns only in B: {', '.join(only_b)}")
    for name in sa.names:
        if name in fb and not fa[name].equals(fb[name]):
            lines.append(f"{name}: {fa[name].type}{'' if fa[name].nullable else ' not null'} vs "
                         f"{fb[name].type}{'' if fb[name].nullable else ' not null'}")
    common = [n for n in sa.names if n in fb]
    if not lines and common != [n for n in sb.names if n in fa]:
        lines.append(f"column order: {', '.join(sa.names)} vs {', '.join(sb.names)}")
    if not lines and len(a) != len(b):
        lines.append(f"{len(a)} vs {len(b)} distinct file schemas")
    if not lines:
        lines.append("schemas differ in a detail (e.g. field metadata)")
    return lines


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def short(columns: Sequence[str], row: Sequence[object], width: int = 400) -> str:
    text = ", ".join(f"{k}={v!r}" for k, v in zip(columns, row, strict=True))
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass
class Result:
    dataset: str
    identical: bool
    line: str
    details: list[str] = field(default_factory=list)
    only_a: int = 0  # rows only in A (after dropping and ranking)
    only_b: int = 0


def compare_dataset(dataset: str, a_path: Path | None, b_path: Path | None, ranks: tuple[pa.Array, pa.Array],
                    *, examples: int, ignored: set[tuple[str, str]], threads: int,
                    con: duckdb.DuckDBPyConnection, multiset: bool = False) -> Result:
    if a_path is None or b_path is None:
        present = a_path or b_path
        assert present is not None
        rows = read_side(present, threads).rows
        return Result(dataset, False, f"only in {'A' if a_path else 'B'} ({rows:,} rows)",
                      only_a=rows if a_path else 0, only_b=0 if a_path else rows)
    if a_path.is_file() != b_path.is_file():
        return Result(dataset, False, "a file on one side, a folder on the other")
    a, b = read_side(a_path, threads), read_side(b_path, threads)
    details: list[str] = []
    notes: list[str] = []
    different = False
    for label, side in (("A", a), ("B", b)):
        for problem in side.problems:
            details.append(f"{label}: {problem}")
            different = True
    if a.others != b.others:
        different = True
        details.append(f"other (not Parquet) files differ: only in A {sorted(a.others - b.others)[:examples]}, "
                       f"only in B {sorted(b.others - a.others)[:examples]}")
    elif a.others:
        notes.append(f"{len(a.others)} file(s) that are not Parquet on both sides, not compared")
    if set(a.partitions) != set(b.partitions):
        different = True
        only_a = sorted(set(a.partitions) - set(b.partitions))
        only_b = sorted(set(b.partitions) - set(a.partitions))
        details.append(f"partition sets differ: {len(only_a)} only in A {only_a[:examples]}, "
                       f"{len(only_b)} only in B {only_b[:examples]}")
    elif a.partitions != b.partitions:
        notes.append(f"files per partition differ ({a.files} vs {b.files} files): layout only")
    schema = schema_lines(a.schemas, b.schemas)
    if schema:
        different = True
        details += [f"schema: {line}" for line in schema]
    ta, failures_a = canonical(dataset, a, ranks[0], ignored)
    tb, failures_b = canonical(dataset, b, ranks[1], ignored)
    for label, failures in (("A", failures_a), ("B", failures_b)):
        for failure in failures:
            different = True
            details.append(f"{label}: {failure}")
    only_a_rows = only_b_rows = 0
    if ta is not None and tb is not None:
        ftb = {f.name: f.type for f in tb.schema}
        for f in ta.schema:  # a column of another type is compared cast to A's type, when it casts
            if f.name in ftb and not ftb[f.name].equals(f.type):
                try:
                    tb = tb.set_column(tb.column_names.index(f.name), f.name, tb[f.name].cast(f.type))
                    ftb[f.name] = f.type
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    pass
        columns = [f.name for f in ta.schema if f.name in ftb and ftb[f.name].equals(f.type)]
        skipped = [n for n in ta.column_names if n not in columns] + [n for n in tb.column_names if n not in ta.column_names]
        if skipped:
            details.append(f"rows compared on the {len(columns)} columns that cast to the same type "
                           f"(not {', '.join(skipped)})")
        ta, tb = ta.select(columns), tb.select(columns)
        # exact and fast: rows equal in file order (files in path order, each written sorted) are
        # equal as multisets; otherwise the multiset difference, both ways
        same_order = not multiset and ta.num_rows == tb.num_rows and ta.equals(tb)
        con.register("a_side", ta)
        con.register("b_side", tb)
        select = ", ".join(quoted(c) for c in columns)
        if not same_order:
            # one hash aggregation: every distinct row with (copies in A) - (copies in B); nonzero = a difference
            con.execute(f"CREATE OR REPLACE TEMP TABLE diff AS SELECT {select}, sum(w) AS _n FROM ("
                        f"SELECT {select}, 1 AS w FROM a_side UNION ALL SELECT {select}, -1 AS w FROM b_side) "
                        f"GROUP BY {select} HAVING sum(w) <> 0").fetchall()
            tally = con.execute("SELECT coalesce(sum(_n) FILTER (WHERE _n > 0), 0), "
                                 "coalesce(-sum(_n) FILTER (WHERE _n < 0), 0) FROM diff").fetchall()[0]
            only_a_rows, only_b_rows = int(tally[0]), int(tally[1])
            for label, sign in (("A", ">"), ("B", "<")):
                found = con.execute(f"SELECT {select} FROM diff WHERE _n {sign} 0 ORDER BY ALL LIMIT {examples}").fetchall()
                details += [f"only in {label}: {short(columns, row)}" for row in found]
            con.execute("DROP TABLE diff").fetchall()
        con.unregister("a_side")
        con.unregister("b_side")
    elif (ta is None) != (tb is None):
        only_a_rows, only_b_rows = a.rows, b.rows
    if only_a_rows or only_b_rows:
        different = True
    counts = f"{a.rows:,} rows" if a.rows == b.rows else f"{a.rows:,} vs {b.rows:,} rows"
    size = f"{counts}, {len(a.partitions):,} partition folder(s), {a.files:,} vs {b.files:,} files" \
        if a.files != b.files else f"{counts}, {len(a.partitions):,} partition folder(s), {a.files:,} files"
    if not different:
        return Result(dataset, True, f"identical ({size})", notes)
    result = Result(dataset, False, "", details + notes, only_a_rows, only_b_rows)
    what = []
    if only_a_rows or only_b_rows:
        what.append(f"{only_a_rows:,} rows only in A, {only_b_rows:,} only in B")
    if schema:
        what.append("schema differs")
    if set(a.partitions) != set(b.partitions):
        what.append("partition sets differ")
    if not what:
        what.append("differs")
    result.line = f"DIFFERS: {'; '.join(what)} ({size})"
    return result


def compare(a_root: Path, b_root: Path, *, examples: int = 3, ignore: Iterable[str] = (), threads: int = 4,
            only: Iterable[str] = (), multiset: bool = False) -> list[Result]:
    ignored = set()
    for item in ignore:
        dataset, _, column = item.partition(".")
        ignored.add((dataset, column))
    a_sets, b_sets = datasets(a_root), datasets(b_root)
    names = sorted(set(a_sets) | set(b_sets))
    wanted = set(only)
    if wanted:
        names = [n for n in names if n in wanted]
    ranks = (run_ranks(read_side(a_sets.get("runs"), threads)), run_ranks(read_side(b_sets.get("runs"), threads)))
    con = duckdb.connect()
    con.execute(f"SET threads TO {threads}")
    return [compare_dataset(n, a_sets.get(n), b_sets.get(n), ranks, examples=examples, ignored=ignored,
                            threads=threads, con=con, multiset=multiset) for n in names]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="warehouse folder A (before)")
    parser.add_argument("b", type=Path, help="warehouse folder B (after)")
    parser.add_argument("--examples", type=int, default=3, help="example rows per difference (default 3)")
    parser.add_argument("--ignore", action="append", default=[], metavar="DATASET.COLUMN",
                        help="also leave out this column (repeatable)")
    parser.add_argument("--dataset", action="append", default=[], help="compare only this dataset (repeatable)")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--multiset", action="store_true",
                        help="always compute the multiset difference (skip the equal-in-file-order shortcut)")
    parser.add_argument("--list-dropped", action="store_true", help="print the dropped and ranked columns, and why")
    args = parser.parse_args(argv)
    for root in (args.a, args.b):
        if not root.is_dir():
            print(f"not a warehouse folder: {root}", file=sys.stderr)
            return 2
    if args.list_dropped:
        for title, table in (("dropped", RUN_SPECIFIC), ("run id -> rank", RUN_ID_COLUMNS),
                             ("must be unique", CHECKS), ("kept on purpose", KEPT_ON_PURPOSE)):
            for (dataset, column), why in table.items():
                print(f"{title:16} {dataset}.{column}: {why}")
    started = time.perf_counter()
    print(f"A: {args.a}\nB: {args.b}")
    for label, root in (("A", args.a), ("B", args.b)):
        if unsettled(root):
            print(f"warning: {label} has files in {', '.join(unsettled(root))}: a run is in progress or did "
                  "not finish; the comparison sees only what is published")
    results = compare(args.a, args.b, examples=args.examples, ignore=args.ignore, threads=args.threads,
                      only=args.dataset, multiset=args.multiset)
    width = max((len(r.dataset) for r in results), default=0)
    for r in results:
        print(f"{r.dataset:{width}}  {r.line}")
        for d in r.details:
            print(f"{'':{width}}    {d}")
    differ = [r.dataset for r in results if not r.identical]
    print(f"{len(results)} datasets, {len(differ)} differ{': ' + ', '.join(differ) if differ else ''} "
          f"({time.perf_counter() - started:.1f} s)")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
