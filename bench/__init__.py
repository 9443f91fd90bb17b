"""`python -m bench [SECTION ...]`: performance figures measured as same-run
ratios (the host is noisy: absolute rates moved by up to 2x between runs,
while ratios measured side by side in one process held; see README.md#performance).

Sections register themselves; any module named ``bench/*_bench.py`` is
imported by ``python -m bench``, so adding ``bench/replay_bench.py`` with

    from bench import Result, section

    @section("replay", "fold rate vs raw unpack")
    def run(opts) -> list[Result]: ...

makes ``python -m bench replay`` work and adds it to the default run.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SECTIONS: dict[str, Section] = {}


@dataclass
class Result:
    """One row of the table.  `ratio` is ours / baseline expressed so that
    the goal reads naturally (`>= 0.85`, `<= 1.15`); `goal` is (op, value)."""

    metric: str
    ours: float
    baseline: float | None = None
    unit: str = ""
    ratio: float | None = None
    goal: tuple[str, float] | None = None
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.goal is None or self.ratio is None:
            return ""
        op, value = self.goal
        return "ok" if (self.ratio >= value if op == ">=" else self.ratio <= value) else "MISS"

    def to_json(self) -> dict:
        return {"metric": self.metric, "ours": self.ours, "baseline": self.baseline, "unit": self.unit,
                "ratio": self.ratio, "goal": list(self.goal) if self.goal else None,
                "verdict": self.verdict, "note": self.note}


@dataclass
class Options:
    events: int = 1_000_000
    reps: int = 5
    extra: dict = field(default_factory=dict)


@dataclass
class Section:
    name: str
    help: str
    run: Callable[[Options], list]


def section(name: str, help: str):
    def register(fn):
        SECTIONS[name] = Section(name, help, fn)
        return fn
    return register


def clock() -> float:
    """CPU seconds of this process (user + system).  The benchmark host is a
    shared 2-vCPU VM: wall time also counts the time other processes hold the
    CPU, which moves rates by 2x between runs; CPU time does not."""
    return time.process_time()


def interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median CPU time per named function, running them in turn in every
    repetition (rotating the order) so that host noise hits all alike."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for k in order:
            gc.collect()
            t0 = clock()
            fns[k]()
            times[k].append(clock() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


# A child's ru_maxrss starts at its parent's peak (Linux keeps the larger of
# the two across fork and exec), and a bench process holds decoded traces by
# then: a measured command runs under a small Python launcher instead, which
# reports its child's ru_maxrss (RUSAGE_CHILDREN), wall seconds and exit code
# on stderr.  The launcher's own few MB are the floor.
_LAUNCHER = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
code = subprocess.call(sys.argv[2:], stdout=None if sys.argv[1] == "out" else subprocess.DEVNULL)
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t0, file=sys.stderr)
"""


def peak_rss(argv: list[str], keep_output: bool = False, cwd: str | None = None) -> tuple[float, float, int, str]:
    """(peak RSS in MB, wall seconds, exit code, stdout) of argv run in a
    child process of the launcher."""
    out = subprocess.run([sys.executable, "-c", _LAUNCHER, "out" if keep_output else "none", *argv],
                         capture_output=True, text=True, check=True, cwd=cwd)
    code, kb, seconds = out.stderr.split()[-3:]
    return int(kb) / 1024.0, float(seconds), int(code), out.stdout
