"""`vtdtrace explore`: schedules per second of the bounded search and the
share of alternatives pruned (goal >= 100 schedules/s on the benchmark host,
measured, never asserted).

The scenario is a parameter: ``VTDTRACE_BENCH_EXPLORE=SCENARIO[,ENGINE[,K]]``
(a scenario file or shipped name, an engine variant, the preemption bound).
Without it the section benches the shipped XSA-399 race
(``s9-xsa399-race``) under ``legacy`` with K = 2 when that scenario exists,
else a two-CPU scenario of its own (the s1 platform, two assigns and two
deassigns spread over CPUs 0 and 1).  The baseline row re-records the very
schedules the search ran with nothing but the engine (no judging, no state
keys): the ratio is the search's cost per schedule over the engine's.
"""

from __future__ import annotations

import os

from bench import Result, clock, interleaved, section

XSA399 = "s9-xsa399-race"
MAX_RUNS = 5000             # S9 under legacy at K = 2 is ~2,500: complete
GOAL = 100.0                 # schedules per second

_OWN = """
[[domain]]
name = "guest2"
id = 2

[[op]]
do = "assign"
device = "0000:00:14.0"
to = "guest"

[[op]]
do = "assign"
device = "0000:00:17.0"
to = "guest2"
cpu = 1

[[op]]
do = "deassign"
device = "0000:00:14.0"

[[op]]
do = "deassign"
device = "0000:00:17.0"
cpu = 1
"""


def problem_from_env(var: str):
    """``SCENARIO[,ENGINE[,K[,...]]]`` from ``var``: (Problem, K, label, the
    rest of the fields), or None when unset."""
    from explore.search import Problem
    from tracer.scenario import load_scenario

    spec = os.environ.get(var, "")
    if not spec:
        return None
    parts = spec.split(",")
    platform = load_scenario(parts[0])
    variant = parts[1] if len(parts) > 1 else "legacy"
    bound = int(parts[2]) if len(parts) > 2 else 2
    return Problem(platform, variant), bound, f"{platform.name} ({variant}, K={bound})", parts[3:]


def _problem():
    from explore.search import Problem
    from tracer.scenario import list_shipped, load_scenario, loads_scenario, shipped_dir

    given = problem_from_env("VTDTRACE_BENCH_EXPLORE")
    if given is not None:
        return given[:3]
    if XSA399 in dict(list_shipped()):
        platform = load_scenario(XSA399)
        return Problem(platform, "legacy"), 2, f"{platform.name} (legacy, K=2)"
    shipped = shipped_dir()
    assert shipped is not None
    text = (shipped / "s1-usb-rmrr.toml").read_text(encoding="utf-8")
    text = text[:text.index("[[op]]")].replace('name = "s1-usb-rmrr"', 'name = "bench-two-cpu"') + _OWN
    platform = loads_scenario(text, "bench-two-cpu.toml")
    return Problem(platform, "legacy"), 2, "bench-two-cpu (s1 platform, 4 ops on 2 CPUs; legacy, K=2)"


@section("explore", "bounded interleaving search: schedules/s and the share pruned")
def run(opts) -> list[Result]:
    from explore.search import explore
    from tracer.record import record
    from tracer.recorder import NullSink

    problem, bound, label = _problem()
    prefixes: list = []
    t0 = clock()
    first = explore(problem, bound=bound, max_runs=MAX_RUNS, on_run=lambda r: prefixes.append(r.prefix))
    once = clock() - t0

    def search() -> None:
        explore(problem, bound=bound, max_runs=MAX_RUNS)

    def engine_only() -> None:
        for p in prefixes:
            record(problem.platform, problem.variant, NullSink(), schedule=p)

    # a search of tens of seconds is its own median; short ones are repeated
    key_share = _key_share(problem, bound)
    reps = 1 if once > 10 else max(1, min(opts.reps, 3)) if once > 2 else max(3, opts.reps)
    t = interleaved({"search": search, "engine": engine_only}, reps)
    n = first.schedules
    fits = first.alternatives - first.over_bound
    share = first.pruned / fits if fits else 0.0
    done = "complete" if first.complete else f"capped at {MAX_RUNS} runs"
    return [
        Result("explore, schedules/s vs the goal", n / t["search"], GOAL, "sched/s",
               ratio=(n / t["search"]) / GOAL, goal=(">=", 1.0),
               note=f"{label}: {n} schedules ({done}), {first.states} states, CPU seconds"),
        Result("explore vs the engine alone, per schedule", t["search"] / n * 1e3, t["engine"] / n * 1e3, "ms",
               ratio=t["search"] / t["engine"],
               note="the same schedules re-recorded into a null sink: the rest is judging and state keys"),
        Result("explore, share of the search in state keys", key_share * 100, None, "%",
               note="CPU time inside explore.key.state_key over the whole search"),
        Result("explore, alternatives pruned", share * 100, None, "%",
               note=f"{first.pruned} of {fits} alternatives within the bound "
                    f"({first.over_bound} more over it)"),
    ]


def _key_share(problem, bound: int) -> float:
    """The share of one search's CPU time spent computing state keys
    (explore.key.state_key wrapped for the measurement)."""
    import explore.key as keys
    from explore.search import explore

    spent = [0.0]
    real = keys.state_key

    def timed(*args):
        t0 = clock()
        try:
            return real(*args)
        finally:
            spent[0] += clock() - t0

    keys.state_key = timed
    try:
        t0 = clock()
        explore(problem, bound=bound, max_runs=MAX_RUNS)
        total = clock() - t0
    finally:
        keys.state_key = real
    return spent[0] / total if total else 0.0
