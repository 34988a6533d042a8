"""The `backflush` command: run, backfill, generate, report, demo.

Results (the summary) go to stdout; logs, the progress bar and the one-line reason of a failure
go to stderr. The global flags (-q, -v, --config) are accepted before or after the command.
Nothing heavy (pandas, pyarrow, pydantic, the engine) is imported until the arguments are parsed,
so `--help`, `--version` and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline import job

DISTRIBUTION = "backflush-pipeline"
EXIT_OK = 0
EXIT_FAILED = 1  # the run could not be done (input, warehouse, I/O); nothing was half-written
EXIT_USAGE = 2  # a bad command line (argparse's own code) or a bad configuration
EXIT_LOCKED = 75  # EX_TEMPFAIL: another run holds the plant; try again later
EXIT_CODES = f"""exit codes:
  {EXIT_OK:<3} done (quarantined rows are reported, not a failure)
  {EXIT_FAILED:<3} the run could not be done (unreadable or contract-breaking input, warehouse or I/O
      error); the reason is one line on stderr and nothing was half-written
  {EXIT_USAGE:<3} usage: a bad command line or configuration (file, BACKFLUSH_* variable, flag)
  {EXIT_LOCKED:<3} another run holds a plant's lock (EX_TEMPFAIL): try again later

results go to stdout; logs, progress and errors to stderr."""
COMMANDS_WITH_CONFIG = ("run", "backfill", "report")
DEMO_ROOT = Path("data") / "demo"
DEMO_START = dt.date(2026, 1, 5)
DEMO_DAYS = 14


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def version() -> str:
    """The installed package's version (its metadata), else the source tree's."""
    from importlib import metadata

    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        from pipeline import __version__

        return __version__


def _global_flags(parser: argparse.ArgumentParser, *, config: bool, top: bool) -> None:
    """-q/-v (and --config) on the main parser and again on each command: before or after it.

    On a command the defaults are SUPPRESS, so a flag given before the command is not reset by
    the command's parser when it is not repeated after it.
    """
    unset: Any = argparse.SUPPRESS
    group = parser.add_argument_group("global options (before or after the command)") if not top else parser
    group.add_argument("--verbose", "-v", action="store_true", default=False if top else unset,
                       help="log every stage at DEBUG; tracebacks on failure")
    group.add_argument("--quiet", "-q", action="store_true", default=False if top else unset,
                       help="print nothing but errors")
    if config:
        group.add_argument("--config", metavar="FILE", default=None if top else unset,
                           help="config file (TOML); default $BACKFLUSH_CONFIG")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backflush", description=__doc__.splitlines()[0], epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    _global_flags(parser, config=True, top=True)
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=EXIT_CODES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _global_flags(p, config=name in COMMANDS_WITH_CONFIG, top=False)
        return p

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--landing", help="landing folder (LANDING/<table>/*.csv|*.parquet)")
        p.add_argument("--warehouse", help="warehouse root: a folder or an object-store URI")
        p.add_argument("--plant", action="append", dest="plants", help="process only this plant (repeatable)")
        p.add_argument("--dry-run", action="store_true", help="compute everything, write nothing")

    run = command("run", "process one business date (and late data within the look-back)")
    common(run)
    run.add_argument("--date", type=_date, required=True, help="business date YYYY-MM-DD")
    run.add_argument("--lookback-days", type=int, help="how far back late data is looked for (default 7)")
    run.add_argument("--reprocess-master-data", action="store_true", default=None,
                     help="repost the posted dates a master data change altered (default: only list them)")

    backfill = command("backfill", "process every business date of an inclusive range, in order")
    common(backfill)
    backfill.add_argument("--start", type=_date, required=True)
    backfill.add_argument("--end", type=_date, required=True)

    gen = command("generate", "write deterministic synthetic landing data")
    gen.add_argument("--out", required=True)
    gen.add_argument("--items", type=int, required=True, help="number of finished goods")
    gen.add_argument("--completions", type=int, required=True)
    gen.add_argument("--days", type=int, required=True)
    gen.add_argument("--seed", type=int, required=True)
    gen.add_argument("--start", type=_date, default=DEMO_START, help="first business date (default %(default)s)")
    gen.add_argument("--plants", type=int, default=3)
    gen.add_argument("--counts", type=int, help="stock counts (default: completions/26)")
    gen.add_argument("--movements", type=int, help="movements (default: completions/10)")
    gen.add_argument("--bad-rows", action="store_true", help="add rows of every quarantine code")
    gen.add_argument("--format", choices=["parquet", "csv"], default="parquet")

    report = command("report", "write a self-contained HTML report of a period (opens offline)")
    report.add_argument("--warehouse", help="warehouse root: a folder or an object-store URI")
    report.add_argument("--from", dest="start", type=_date, required=True, help="first business date YYYY-MM-DD")
    report.add_argument("--to", dest="end", type=_date, required=True, help="last business date (inclusive)")
    report.add_argument("--out", required=True, help="the HTML file to write")
    report.add_argument("--plant", action="append", dest="plants", help="report only this plant (repeatable)")

    demo = command("demo", "generate demo data under data/demo, backfill two weeks, print a summary")
    demo.add_argument("--root", default=str(DEMO_ROOT), help="where the demo landing and warehouse go")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None and args.command not in COMMANDS_WITH_CONFIG:
        parser.error(f"{args.command} reads no config file (--config is for {', '.join(COMMANDS_WITH_CONFIG)})")
    # On a terminal the progress bar (stderr) speaks; elsewhere (Airflow, CI, files) structured log
    # lines do, also on stderr: stdout holds the results alone, and the last line of stderr is
    # the one-line reason of a failure.
    interactive = sys.stderr.isatty() and not args.verbose
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if (args.quiet or interactive) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # the heavy imports, now that the arguments are known to be good
    from pipeline.config import ConfigError
    from pipeline.errors import LockError, SourceError, WarehouseError

    try:
        return _dispatch(args)
    except LockError as exc:
        print(f"backflush: {exc}", file=sys.stderr)
        return EXIT_LOCKED
    except ConfigError as exc:
        print(f"backflush: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (SourceError, WarehouseError, ValueError, OSError) as exc:
        if args.verbose:
            logging.getLogger("backflush").exception("run failed")
        print(f"backflush: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # the run stops; say why in one line, not a traceback
        if args.verbose:
            logging.getLogger("backflush").exception("run failed")
        print(f"backflush: unexpected {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _dispatch(args: argparse.Namespace) -> int:
    from pipeline.config import load_config

    if args.command == "generate":
        from pipeline.tools.generate import generate_landing

        counts = generate_landing(
            args.out, items=args.items, completions=args.completions, days=args.days, seed=args.seed,
            start=args.start, plants=args.plants, counts=args.counts, movements=args.movements,
            bad_rows=args.bad_rows, file_format=args.format,
        )
        if not args.quiet:
            print(", ".join(f"{t}: {n:,}" for t, n in counts.items()))
        return 0
    if args.command == "demo":
        return _demo(Path(args.root), quiet=args.quiet)
    if args.command == "report":
        from pipeline.report.html import write_report

        report_config = load_config(args.config, origin="command line", warehouse=args.warehouse)
        figures = write_report(report_config.warehouse, args.start, args.end, args.out, plants=args.plants)
        if not args.quiet:
            share = "n/a" if figures.share_over_tolerance is None else f"{figures.share_over_tolerance:.1%}"
            print(f"report {args.out}: {figures.counts_checked:,} counts checked, {share} over tolerance, "
                  f"net variance value {figures.variance_value:,.2f}")
        return 0
    from pipeline import job
    from pipeline.progress import Progress

    config = load_config(args.config, origin="command line", landing=args.landing, warehouse=args.warehouse,
                         lookback_days=getattr(args, "lookback_days", None),
                         reprocess_master_data=getattr(args, "reprocess_master_data", None))
    progress = Progress(quiet=args.quiet)
    if args.command == "run":
        results = [job.run_dates(config, [args.date], plants=args.plants, dry_run=args.dry_run, progress=progress)]
    else:
        results = job.backfill(config, args.start, args.end, plants=args.plants, dry_run=args.dry_run,
                               progress=progress)
    progress.finish()
    if not args.quiet:
        print(render_summary(results))
    return 0


def _demo(root: Path, *, quiet: bool) -> int:
    from pipeline import job
    from pipeline.config import load_config
    from pipeline.progress import Progress
    from pipeline.store.warehouse import Warehouse
    from pipeline.tools.generate import calibrate_counts, generate_landing

    landing, warehouse = root / "landing", root / "warehouse"
    generate_landing(landing, items=40, completions=20_000, days=DEMO_DAYS, seed=42, start=DEMO_START,
                     bad_rows=True, file_format="csv")
    end = DEMO_START + dt.timedelta(days=DEMO_DAYS - 1)
    # counts that look like a real shop floor: book stock plus small deviations (see calibrate_counts)
    with tempfile.TemporaryDirectory() as scratch:
        first = load_config(None, landing=str(landing), warehouse=scratch)
        job.backfill(first, DEMO_START, end)
        calibrate_counts(landing, Warehouse(scratch).read("variance"), seed=42)
    config = load_config(None, landing=str(landing), warehouse=str(warehouse))
    results = job.backfill(config, DEMO_START, end, progress=Progress(quiet=quiet))
    if not quiet:
        print(f"demo: landing {landing}, warehouse {warehouse}, {DEMO_START} .. {end}")
        print(render_summary(results))
    return 0


def render_summary(results: Sequence[job.RunResult]) -> str:
    """One screen: what was read, quarantined, posted and found at the counts."""
    if not results:
        return "nothing to do"
    last = results[-1]
    if last.unchanged_since is not None and len(results) == 1:
        verb = "dry run (nothing written)" if last.dry_run else "run"
        return (f"{verb} {last.run_id}: unchanged since run {last.unchanged_since} (landing, master data, config "
                f"and code as then): nothing read, recomputed or posted; only its runs row written")
    lines = []
    dates = sorted({d for r in results for d in r.business_dates})
    runs = ", ".join(r.run_id for r in results)
    verb = "dry run (nothing written)" if last.dry_run else "run"
    lines.append(f"{verb} {runs}: {len(dates)} business date(s) {dates[0] if dates else ''}"
                 f"{' .. ' + str(dates[-1]) if len(dates) > 1 else ''}, plants {', '.join(last.plants)}")
    lines.append("rows read:        " + ", ".join(f"{t} {n:,}" for t, n in last.rows_read.items()))
    quarantined: dict[str, int] = {}
    for r in results:
        for code, n in r.quarantine_by_code.items():
            quarantined[code] = quarantined.get(code, 0) + n
    lines.append("quarantined:      " + (", ".join(f"{c} {n:,}" for c, n in sorted(quarantined.items())) or "none"))
    released = [key for r in results for key in r.released]
    if released:
        lines.append("released:         " + ", ".join(released) + " (the error queue: they explode now)")
    changed = [d for r in results for d in r.master_changed_dates]
    if changed:
        lines.append("master data changed posted date(s): " + ", ".join(changed))
    kinds: dict[str, dict[str, float]] = {}
    for r in results:
        for kind, agg in r.adjustments_by_kind.items():
            k = kinds.setdefault(kind, {"rows": 0, "value": 0.0})
            k["rows"] += agg["rows"]
            k["value"] += agg["value"]
    lines.append("adjustments:      " + (", ".join(
        f"{k} {v['rows']:,.0f} rows value {v['value']:,.2f}" for k, v in sorted(kinds.items())) or "none"))
    written: dict[str, int] = {}
    for r in results:
        for ds_name, n in r.rows_written.items():
            written[ds_name] = written.get(ds_name, 0) + n
    lines.append("rows written:     " + ", ".join(f"{d} {n:,}" for d, n in sorted(written.items())))
    lines.append(f"postings appended: {written.get('postings', 0):,} (0 on a re-run over unchanged input)")
    top = last.top_components
    if top:
        lines.append("top components by consumed value:")
        for row in top:
            lines.append(f"  {row['component_item_id']:<16} {row['qty']:>14,.3f} {row['uom']:<4} {row['value']:>14,.2f}")
    v = last.variance_summary
    if v:
        lines.append(f"variance:         {v['counts']:,} counts, {v['checked']:,} checked, "
                     f"{v['over_tolerance']:,} over tolerance, {v['baselines']:,} baselines, "
                     f"net value {v['variance_value']:,.2f}")
        top_variances: list[dict[str, Any]] = v.get("top", [])  # type: ignore[assignment]
        for row in top_variances:
            lines.append(f"  {row['count_id']:<14} {row['plant_id']}/{row['location_id']} {row['item_id']:<14} "
                         f"{row['variance_qty']:>12,.3f} {row['uom']:<4} {row['variance_value']:>12,.2f}")
        if "stock_exceptions" in v:  # after the largest variances, which belong to the line above
            lines.append(f"stock exceptions: {v['stock_exceptions']:,} count windows whose book stock went below zero")
    flags = last.bom_accuracy_flags
    if flags:
        lines.append("BOM accuracy:     " + ", ".join(f"{k} {n}" for k, n in sorted(flags.items())))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
