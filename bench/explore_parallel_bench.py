"""`vtdtrace explore` on several processes: wall time with 2 workers vs 1
(goal >= 1.6x on a 2-core host), the coordinator's share, and a projection
to 8, 64 and 512 workers from the measured per-unit costs.

The scenario must have at least 10^4 schedules.  The shipped two-CPU ones
prune down to a few thousand, so the default is the XSA-399 platform with a
third CPU moving the audio device to guest-b and back while the race runs
(``bench-three-cpu``, legacy, K = 2, the first ``MAX_RUNS`` schedules of
some 10^5).  ``VTDTRACE_BENCH_EXPLORE_PARALLEL=SCENARIO[,ENGINE[,K[,RUNS]]]``
chooses another.

Measured in one run, interleaved (``--reps``, default 1 in the quick run:
a repetition is minutes):

* in process (``--workers 1``): wall and CPU seconds;
* a process pool of 2 (``--workers 2``): wall, the coordinator's CPU
  seconds (unpickling reports, folding, queueing) and the workers' (from
  the children's rusage);
* a Dask LocalCluster of 2 processes (``--scheduler local``), when
  distributed is installed: wall.

Wall time is the figure the goal is about, and on a shared host it also
counts other processes: the host's load average is printed beside it.  The
CPU columns say what the parallel run costs whatever the load: workers'
CPU over the in-process CPU is the price of parallelism (units that know
less of the seen table key more states; pickling), and with the
coordinator's CPU per unit it drives the projection:

    T(W) = sum over levels of  max(ceil(L / W) * c_unit,  L * c_coord)

L the level's units, c_unit a unit's worker CPU seconds, c_coord the
coordinator's per unit.  The coordinator becomes the bottleneck once W
passes c_unit / c_coord.  Dask's per-task overhead (scheduler round trip,
~1 ms) adds to c_coord on a cluster; the Dask row shows it on this host.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from typing import Any

from bench import Result, section

MAX_RUNS = 10_000
GOAL = 1.6
PROJECT = (8, 64, 512)

_THIRD_CPU = """

[[op]]
do = "assign"
device = "0000:00:1b.0"
to = "guest-b"
cpu = 2

[[op]]
do = "deassign"
device = "0000:00:1b.0"
cpu = 2
"""


def _problem():
    from bench.explore_bench import problem_from_env
    from explore.search import Problem
    from tracer.scenario import loads_scenario, shipped_dir

    given = problem_from_env("VTDTRACE_BENCH_EXPLORE_PARALLEL")
    if given is not None:
        problem, bound, label, rest = given
        return problem, bound, int(rest[0]) if rest else MAX_RUNS, label
    shipped = shipped_dir()
    assert shipped is not None
    text = (shipped / "s9-xsa399-race.toml").read_text(encoding="utf-8")
    text = text.replace('name = "s9-xsa399-race"', 'name = "bench-three-cpu"') + _THIRD_CPU
    platform = loads_scenario(text, "bench-three-cpu.toml")
    return Problem(platform, "legacy"), 2, MAX_RUNS, "bench-three-cpu (S9 + a third CPU; legacy, K=2)"


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _timed(problem, bound: int, runs: int, **kw) -> dict:
    from explore.search import explore

    levels: list[int] = []

    def on_progress(s) -> None:
        if s.level_done == 1:
            levels.append(s.level_units)

    c0, k0, t0 = time.process_time(), _children_cpu(), time.perf_counter()
    s = explore(problem, bound=bound, max_runs=runs, on_progress=on_progress, **kw)
    wall = time.perf_counter() - t0
    return {"wall": wall, "cpu": time.process_time() - c0, "children": _children_cpu() - k0, "summary": s,
            "levels": levels, "load": os.getloadavg()[0]}


def project(levels: list[int], c_unit: float, c_coord: float, workers: int) -> float:
    """Projected wall seconds with ``workers`` workers (module docstring)."""
    return sum(max(math.ceil(n / workers) * c_unit, n * c_coord) for n in levels)


@section("explore-parallel", "explore on 2 workers vs 1, the coordinator's share, a projection")
def run(opts) -> list[Result]:
    problem, bound, runs, label = _problem()
    try:
        import distributed  # noqa: F401
        dask = True
    except ImportError:
        dask = False
    reps = max(1, opts.reps if opts.extra.get("full") else 1)
    configs: dict[str, dict[str, Any]] = {"one": {"workers": 1}, "pool": {"workers": 2}}
    if dask:
        configs["dask"] = {"workers": 2, "scheduler": "local"}
    got: dict[str, list[dict]] = {k: [] for k in configs}
    names = list(configs)
    for rep in range(reps):
        for k in names[rep % len(names):] + names[:rep % len(names)]:
            got[k].append(_timed(problem, bound, runs, **configs[k]))
    first = got["one"][0]["summary"]
    for k in names:
        for g in got[k]:
            s = g["summary"]
            assert (s.schedules, s.states, s.pruned) == (first.schedules, first.states, first.pruned), k
    wall = {k: statistics.median([g["wall"] for g in got[k]]) for k in names}
    one_cpu = statistics.median([g["cpu"] for g in got["one"]])
    coord = statistics.median([g["cpu"] for g in got["pool"]])
    workers_cpu = statistics.median([g["children"] for g in got["pool"]])
    units = first.units
    levels = got["pool"][0]["levels"]
    c_unit, c_coord = workers_cpu / units, coord / units
    load = statistics.median([g["load"] for k in names for g in got[k]])
    n = first.schedules
    rows = [
        Result("explore-parallel, 2 workers vs 1 (wall)", wall["pool"], wall["one"], "s",
               ratio=wall["one"] / wall["pool"], goal=(">=", GOAL),
               note=f"{label}: {n} schedules, {units} units in {len(levels)} levels; host load average "
                    f"{load:.1f} on {os.cpu_count()} CPUs; medians of {reps}"),
        Result("explore-parallel, coordinator's share of the 2-worker run", coord / wall["pool"] * 100, None, "%",
               note=f"its CPU seconds ({coord:.2f}) over the wall time: reports unpickled, folded, queued"),
        Result("explore-parallel, workers' CPU vs in-process CPU", workers_cpu, one_cpu, "s",
               ratio=workers_cpu / one_cpu if one_cpu else None,
               note="the price of parallelism: a unit knows the seen table as of when it was sent, "
                    "so it may key more states; pickling (the in-process figure includes the fold)"),
    ]
    if dask:
        rows.append(Result("explore-parallel, Dask LocalCluster of 2 vs 1 (wall)", wall["dask"], wall["one"], "s",
                           ratio=wall["one"] / wall["dask"],
                           note="scheduler round trips, the scattered seen table per level, worker start-up"))
    t1 = project(levels, c_unit, c_coord, 1)
    for w in PROJECT:
        tw = project(levels, c_unit, c_coord, w)
        rows.append(Result(f"explore-parallel, projected speed-up on {w} workers", t1 / tw, None, "x",
                           note=f"c_unit {c_unit * 1e3:.1f} ms, c_coord {c_coord * 1e3:.2f} ms per unit; "
                                f"the coordinator bounds it from ~{c_unit / c_coord:.0f} workers"
                           if c_coord else ""))
    return rows
