"""Subprocess runs with per-child peak RSS and CPU time, plus small statistics helpers for the benchmark.

Kept free of torch/transformers so the orchestrating process stays small and idle while children are measured.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

RESULT_MARK = "BENCH_RESULT "  # worker.py prints its JSON after this mark, so library chatter on stdout is harmless


@dataclass
class Run:
    cmd: list[str]
    rc: int
    wall_s: float
    max_rss_mb: float
    cpu_s: float
    others_busy: float | None  # share of all cores other processes kept busy while this child ran
    stdout: str = field(repr=False)
    stderr: str = field(repr=False)

    def check(self) -> Run:
        if self.rc != 0:
            tail = self.stderr.strip().splitlines()[-15:]
            raise RuntimeError(f"exit {self.rc}: {' '.join(self.cmd)}\n" + "\n".join(tail))
        return self

    def json(self) -> dict:
        """The JSON document on stdout: a worker's marked line, else the whole of stdout (bertclf --json)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith(RESULT_MARK):
                return json.loads(line[len(RESULT_MARK):])
        return json.loads(self.stdout)

    def brief(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "max_rss_mb": round(self.max_rss_mb, 1), "cpu_s": round(self.cpu_s, 2),
                "others_busy": None if self.others_busy is None else round(self.others_busy, 3)}


def child_env(threads: int) -> dict[str, str]:
    """Same environment for both sides: offline, same thread count, no tokenizer fork warnings."""
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1",
                "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"})
    return env


def run(cmd: list[str], env: dict[str, str], *, cwd: Path | None = None, timeout: float = 3600) -> Run:
    """Run one child and measure it alone. os.wait4 gives this child's own rusage; RUSAGE_CHILDREN would be the
    maximum over every child this process ever waited for. Output goes to files, so no pipe can fill up."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as out, tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        busy_before = cpu_ticks()
        started = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=err, env=env, cwd=cwd)
        # Block in wait4 (a polling loop would add its own sleep to short wall times); a timer kills a hung child.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C or SIGTERM of the benchmark: take the measured child down too
            proc.kill()
            os.wait4(proc.pid, 0)
            raise
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        busy_after = cpu_ticks()
        child_cpu = usage.ru_utime + usage.ru_stime
        others = None
        if busy_before and busy_after:
            others = max(0.0, (busy_after - busy_before) / TICKS - child_cpu) / (wall * (os.cpu_count() or 1))
        proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
        out.seek(0)
        err.seek(0)
        return Run([str(c) for c in cmd], proc.returncode, wall, usage.ru_maxrss / 1024, child_cpu, others,
                   out.read(), err.read())


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks() -> int | None:
    """Busy clock ticks of all CPUs so far (/proc/stat), to see whether something else ran during a measurement."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    return sum(fields[:8]) - fields[3] - fields[4]  # all but idle and iowait


def interleaved(names: list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, name) in ABC CBA ABC ... order: every variant sees the same mix of early and late slots, so a
    slow drift (another job, thermal state) moves all of them alike instead of biasing one."""
    order = []
    for r in range(repeats):
        order += [(r, name) for name in (names if r % 2 == 0 else list(reversed(names)))]
    return order


def summary(values: list[float]) -> dict:
    clean = [v for v in values if v is not None]
    if not clean:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean), "n": len(clean),
            "values": [round(v, 4) for v in clean]}


def paired_ratio(ours: list[float], theirs: list[float], *, higher_is_better: bool = True) -> float | None:
    """Median of per-repeat ratios: each pair ran back to back, so the ratio survives drift between repeats."""
    pairs = [(a, b) for a, b in zip(ours, theirs, strict=False) if a and b]
    if not pairs:
        return None
    return statistics.median(a / b if higher_is_better else b / a for a, b in pairs)


def loadavg() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
