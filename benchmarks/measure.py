"""Run one contender as its own child process and measure its wall time and peak resident memory.

Peak RSS is the child's own high-water mark from `os.wait4`. The child is started by a tiny
launcher (this module run as a script), not by the benchmark process itself: on Linux a process
started through vfork+exec inherits its parent's high-water mark as the floor of its own, so a
benchmark process that once held 4 GiB (say, while comparing outputs) would make every later
child look at least that big. The launcher is small and never grows, and reports the rusage of
the one child it waited for. A light /proc sampler records an RSS timeline of the process group
and stops a child that would exceed a memory cap: the machine is shared. It also samples, with
psutil, the RSS of the whole process tree below the launcher (the contender and every worker it
started, summed; a page a forked worker shares with its parent counts in each): the tree peak.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

GIB = 1024**3
MIB = 1024**2


@dataclass
class Measurement:
    """What one child process cost."""

    command: list[str]
    wall_s: float
    peak_rss_bytes: int
    user_s: float
    sys_s: float
    exit_code: int
    killed: str = ""  # why the benchmark stopped the child, if it did
    other_cpu: float = 0.0  # cores busy with other processes during the run (shared machine)
    loadavg: str = ""
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds, rss bytes), sampled
    log: str = ""
    peak_tree_rss_bytes: int = 0  # the largest sampled sum of RSS over the contender's process tree
    peak_tree_processes: int = 0  # processes in the tree at that moment

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.killed

    def as_dict(self) -> dict[str, object]:
        return {
            "command": shlex.join(self.command),
            "wall_s": round(self.wall_s, 3),
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_rss_gib": round(self.peak_rss_bytes / GIB, 3),
            "peak_tree_rss_bytes": self.peak_tree_rss_bytes,
            "peak_tree_rss_gib": round(self.peak_tree_rss_bytes / GIB, 3),
            "peak_tree_processes": self.peak_tree_processes,
            "user_s": round(self.user_s, 3),
            "sys_s": round(self.sys_s, 3),
            "cpu_s": round(self.user_s + self.sys_s, 3),
            "cpu_utilisation": round((self.user_s + self.sys_s) / self.wall_s, 2) if self.wall_s else None,
            "other_processes_cores_busy": round(self.other_cpu, 2),
            "loadavg_after": self.loadavg,
            "exit_code": self.exit_code,
            "killed": self.killed,
            "log": self.log,
            "rss_timeline": [(round(t, 1), round(r / MIB)) for t, r in _thin(self.timeline, 120)],
        }


def memory_total_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def default_memory_cap() -> int:
    """Stop a contender beyond 70 % of this machine's memory (others work here too)."""
    return int(memory_total_bytes() * 0.70)


def _rss_of_group(pgid: int) -> int:
    """The memory of every process in a process group (the launcher and what it started).

    Each process counts its proportional set size (PSS): a page shared by n processes (a forked
    worker's inherited data) counts 1/n in each, so the sum is the memory the group really holds,
    where summing RSS would count shared pages once per process. RSS where PSS cannot be read.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[2]) != pgid:  # fields after "(comm)": state ppid pgrp ... rss is the 22nd
            continue
        rss = int(fields[21]) * page
        try:
            with open(f"/proc/{entry}/smaps_rollup") as f:
                pss = next((int(line.split()[1]) * 1024 for line in f if line.startswith("Pss:")), None)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            pss = None
        total += rss if pss is None else pss
    return total


def tree_rss(root: psutil.Process) -> tuple[int, int]:
    """(summed RSS, processes) of every process below `root` (the launcher), sampled with psutil.

    RSS, not PSS: each worker counts every page it maps, shared ones too, so the sum is an upper
    bound of what the tree holds (the process group's PSS sum in the timeline is the tight one).
    """
    total = n = 0
    try:
        tree = root.children(recursive=True)
    except psutil.Error:
        return 0, 0
    for proc in tree:
        try:
            total += proc.memory_info().rss
            n += 1
        except psutil.Error:  # ended between the listing and the read
            continue
    return total, n


def _busy_seconds() -> float:
    """CPU seconds spent by everything on this machine since boot (all cores, not idle or iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def others_busy_now(window_s: float = 2.0) -> float:
    """Cores kept busy by all processes over the next `window_s` seconds (this one is idle meanwhile)."""
    b0 = _busy_seconds()
    time.sleep(window_s)
    return (_busy_seconds() - b0) / window_s


def wait_for_idle(max_wait_s: float, *, below: float = 0.5) -> float:
    """Wait (at most `max_wait_s`) until other processes keep fewer than `below` cores busy; return that load."""
    deadline = time.monotonic() + max_wait_s
    busy = others_busy_now()
    while busy >= below and time.monotonic() < deadline:
        busy = others_busy_now(5.0)
    return busy


def _loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _thin(points: list[tuple[float, int]], n: int) -> list[tuple[float, int]]:
    if len(points) <= n:
        return points
    step = len(points) / n
    kept = [points[int(i * step)] for i in range(n)]
    peak = max(points, key=lambda p: p[1])
    return sorted(set(kept) | {peak, points[-1]})


def run_measured(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout_s: float | None = None,
    memory_cap_bytes: int | None = None,
    sample_every_s: float = 0.25,
) -> Measurement:
    """Run `command` to completion (stdout and stderr to `log_path`) and measure it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cap = memory_cap_bytes if memory_cap_bytes is not None else default_memory_cap()
    timeline: list[tuple[float, int]] = []
    tree_peak = [0, 0]  # summed RSS of the tree, its processes
    killed: list[str] = []
    done = threading.Event()
    busy0 = _busy_seconds()
    fd, rusage_name = tempfile.mkstemp(prefix="bench-rusage-", suffix=".json")
    os.close(fd)
    rusage_path = Path(rusage_name)
    launcher = [sys.executable, str(Path(__file__).resolve()), "--rusage-out", str(rusage_path), "--"]
    with open(log_path, "wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(launcher + list(command), stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                env=dict(env) if env is not None else None, start_new_session=True)

        def stop(reason: str) -> None:
            """SIGTERM (a child may save what it measured so far), SIGKILL if it is still there 20 s later."""
            if killed:
                return
            killed.append(reason)
            for sig, delay in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 0.0)):
                try:
                    os.killpg(proc.pid, sig)  # the group we created for this child only
                except ProcessLookupError:
                    return
                if done.wait(delay) if delay else True:
                    return

        try:
            root: psutil.Process | None = psutil.Process(proc.pid)
        except psutil.Error:  # already gone
            root = None

        def sample() -> None:
            while not done.wait(sample_every_s):
                if root is not None:
                    tree, n = tree_rss(root)
                    if tree > tree_peak[0]:
                        tree_peak[:] = [tree, n]
                rss = _rss_of_group(proc.pid)
                if rss:
                    timeline.append((time.perf_counter() - start, rss))
                if rss > cap:
                    stop(f"memory cap: RSS {rss / GIB:.2f} GiB > {cap / GIB:.2f} GiB")
                if timeout_s is not None and time.perf_counter() - start > timeout_s:
                    stop(f"timeout after {timeout_s:.0f} s")

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        exit_code = proc.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    try:
        child = json.loads(rusage_path.read_text() or "{}")
    except (OSError, ValueError):
        child = {}
    rusage_path.unlink(missing_ok=True)
    if not child:  # the launcher itself was killed (SIGKILL after the cap): fall back to the samples
        child = {"maxrss_kib": max((r for _, r in timeline), default=0) // 1024, "utime": 0.0, "stime": 0.0,
                 "exit_code": exit_code}
    others = max(0.0, _busy_seconds() - busy0 - child["utime"] - child["stime"])
    return Measurement(
        command=list(command),
        wall_s=wall,
        # the largest single process (rusage), or the group's sampled total if that is more (workers)
        peak_rss_bytes=max(int(child["maxrss_kib"]) * 1024, max((r for _, r in timeline), default=0)),
        user_s=child["utime"],
        sys_s=child["stime"],
        exit_code=int(child["exit_code"]),
        killed=killed[0] if killed else "",
        timeline=timeline,
        log=str(log_path),
        other_cpu=others / wall if wall else 0.0,
        loadavg=_loadavg(),
        # a tree too short-lived to be sampled: its one process's own high-water mark
        peak_tree_rss_bytes=tree_peak[0] or int(child["maxrss_kib"]) * 1024,
        peak_tree_processes=tree_peak[1] or 1,
    )


def tail(path: str | Path, lines: int = 5) -> str:
    """The last lines of a log, for a failure message."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return ""
    return "\n".join(text[-lines:])


def _launch(rusage_out: Path, command: list[str]) -> int:
    """Run `command` (inheriting stdout/stderr), wait for it, write its own rusage as JSON."""
    def forward(signum: int, _frame: object) -> None:  # the group gets it too; just do not die first
        pass

    signal.signal(signal.SIGTERM, forward)  # a handler, not SIG_IGN: exec resets handlers, not ignores
    proc = subprocess.Popen(command)
    while True:
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    rusage_out.write_text(json.dumps({"maxrss_kib": usage.ru_maxrss, "utime": usage.ru_utime,
                                      "stime": usage.ru_stime, "exit_code": code}))
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    if len(sys.argv) > 3 and sys.argv[1] == "--rusage-out" and sys.argv[3] == "--":
        raise SystemExit(_launch(Path(sys.argv[2]), sys.argv[4:]))
    raise SystemExit("usage: measure.py --rusage-out FILE -- COMMAND...")
