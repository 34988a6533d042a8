"""Progress of a run: a bar per date and plant on a terminal, structured log lines everywhere else.

Under Airflow, in CI or with output redirected, nobody watches a bar: each stage and each
(plant, business date) becomes one `key=value` log line that log search can filter on.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("backflush")


def _fields(**fields: object) -> str:
    parts = []
    for key, value in fields.items():
        text = str(value)
        parts.append(f"{key}={text!r}" if (" " in text or "=" in text or not text) else f"{key}={text}")
    return " ".join(parts)


class Progress:
    """Reports stages and per-partition steps; silent with quiet, a bar only on a terminal."""

    def __init__(self, *, quiet: bool = False, stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.bar = (not quiet) and (self.stream.isatty() if bar is None else bar)
        self.started = time.monotonic()
        self.total = 0
        self.done = 0
        self.label = ""

    def stage(self, name: str, **fields: object) -> None:
        """A stage of the run begins (read, validate, explode, ...)."""
        elapsed = time.monotonic() - self.started
        log.info("%s", _fields(event="stage", stage=name, elapsed_s=f"{elapsed:.2f}", **fields))
        if self.bar:
            self._draw(f"{name}…")

    def start_steps(self, total: int, label: str) -> None:
        """Steps (one per plant and business date) are about to be taken."""
        self.total, self.done, self.label = total, 0, label

    def step(self, **fields: object) -> None:
        """One (plant, business date) is done; its figures go to the log."""
        self.done += 1
        log.info("%s", _fields(event=self.label, **fields))
        if self.bar:
            width = 30
            filled = int(width * self.done / max(self.total, 1))
            where = " ".join(str(v) for v in fields.values())[:40]
            self._draw(f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} {where}")

    def finish(self) -> None:
        if self.bar:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()

    def _draw(self, text: str) -> None:
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()


SILENT = Progress(quiet=True)
