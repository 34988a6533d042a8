"""Fault injection for crash tests: the CLI in a subprocess that pauses half-way through its commit.

The warehouse calls `pipeline.store.warehouse.after_move(n)` after publishing the n-th file of a commit
when a hook is installed; this launcher installs one that announces the pause on stderr and sleeps, so
a test can SIGKILL the run at that exact point. Production code reads no switch for it.

    faults.command(N, *backflush_arguments)  # a command line for subprocess
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PAUSED = "FAULT: paused after"  # the line the child prints on stderr when it pauses


def command(pause_after: int | str, *arguments: str) -> list[str]:
    """The command line of `backflush <arguments>` that pauses after `pause_after` published files."""
    launcher = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests.support.faults import main; "
                "sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", launcher, str(pause_after), *arguments]


def _pause_after(count: int) -> None:
    from pipeline.store import warehouse

    def pause(moved: int) -> None:
        if moved == count:
            print(f"{PAUSED} {moved} moves", file=sys.stderr, flush=True)
            time.sleep(600)

    warehouse.after_move = pause


def main(argv: list[str]) -> int:
    from pipeline import cli

    _pause_after(int(argv[0]))
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
