"""Where the time of a hot path goes: cProfile, or the analysers' hooks one by one.

    python -m bench.profile check [--events N] [--sort tottime|cumulative] [--limit K]
    python -m bench.profile hooks [--events N]
    python -m bench.profile fold|open|record [--events N] [--sort ...]

Workloads, on the cached `vtdtrace synth` trace of N events (default 10^5,
seed 1, the trace bench.replay_bench and bench.instr use; no sidecar read or
written except by ``open``, which works on a copy):

* ``check``  -- ``replay.hazards.findings_for_trace`` (decode + fold + every analyser)
* ``fold``   -- decode + fold, as bench.instr's ``fold``
* ``open``   -- a first ``ReplaySession`` open of a copy: fold + checkpoints + indexes + sidecar write
* ``record`` -- the engine recording the same workload into a trace file
* ``hooks``  -- ``check`` with a CPU clock around every analyser hook: the
  seconds and calls per analyser and per hook (kind of event).  The clock
  costs about a microsecond a call, so the shares matter, not the total.

cProfile charges its own per-call overhead to every Python function and
none to C: use it to find where, and bench.instr (callgrind) or the bench
sections to measure how much.  For a sampling profile without that bias,
py-spy in a virtual environment of its own (not the project's):

    python -m venv /tmp/prof-venv && /tmp/prof-venv/bin/pip install py-spy
    /tmp/prof-venv/bin/py-spy record -r 500 -o check.svg -- \\
        .venv/bin/python -c "from replay.hazards import findings_for_trace as f; f('TRACE')"
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORKLOADS = ("check", "hooks", "fold", "open", "record")


def _fold(path: Path) -> None:
    from replay.codes import event_translator
    from replay.reader import open_trace
    from replay.state import fold, initial_state

    with open_trace(path, verify=False) as t:
        st, tr = initial_state(t.header.get("platform")), event_translator(t.schema)
        for chunk in t.iter_chunks(folded=True):
            fold(st, tr(chunk) if tr else chunk)


def _check(path: Path) -> None:
    from replay.hazards import findings_for_trace

    findings_for_trace(path)


def _open(path: Path) -> None:
    from replay.session import ReplaySession

    with tempfile.TemporaryDirectory(prefix="vtdtrace-profile-") as d:
        copy = Path(d) / "t.vtdt"
        shutil.copyfile(path, copy)
        ReplaySession(copy).close()


def _record(path: Path, events: int, seed: int) -> None:
    from tracer.synth import synth, synth_header
    from tracer.writer import TraceWriter

    with tempfile.TemporaryDirectory(prefix="vtdtrace-profile-") as d:
        with TraceWriter(Path(d) / "rec.vtdt", synth_header(seed, "direct", True, events), force=True) as w:
            synth(events, seed, w, "direct", True)


def hook_times(path: Path) -> tuple[dict[str, float], Counter[str]]:
    """(CPU seconds, calls) per ``Owner.hook`` over one ``check`` of path:
    every hook of replay.hazards' dispatch table wrapped in a clock."""
    import replay.hazards.analyse as analyse

    seconds: dict[str, float] = {}
    calls: Counter[str] = Counter()
    build = analyse.Analysis._build_dispatch

    def timed(self: analyse.Analysis) -> None:
        build(self)
        clock = time.thread_time

        def wrap(h: Callable[[Any], None]) -> Callable[[Any], None]:
            name = f"{type(getattr(h, '__self__', None)).__name__}.{getattr(h, '__name__', '?')}"

            def run(ev: Any) -> None:
                t0 = clock()
                h(ev)
                seconds[name] = seconds.get(name, 0.0) + clock() - t0
                calls[name] += 1
            return run

        self._hooks = {code: tuple(wrap(h) for h in hs) for code, hs in self._hooks.items()}

    analyse.Analysis._build_dispatch = timed      # type: ignore[method-assign]
    try:
        _check(path)
    finally:
        analyse.Analysis._build_dispatch = build  # type: ignore[method-assign]
    return seconds, calls


def _print_hooks(path: Path) -> None:
    t0 = time.process_time()
    seconds, calls = hook_times(path)
    total = time.process_time() - t0
    by_owner: dict[str, float] = {}
    for name, s in seconds.items():
        owner = name.split(".")[0]
        by_owner[owner] = by_owner.get(owner, 0.0) + s
    print(f"check under the hook clock: {total:.3f} s CPU, hooks {sum(seconds.values()):.3f} s "
          f"({sum(calls.values()):,} calls)")
    for owner, s in sorted(by_owner.items(), key=lambda kv: -kv[1]):
        print(f"  {owner:28s} {s:8.3f} s")
    print(f"{'hook':44s} {'calls':>8s} {'seconds':>8s} {'us/call':>8s}")
    for name, s in sorted(seconds.items(), key=lambda kv: -kv[1])[:30]:
        print(f"{name:44s} {calls[name]:8,d} {s:8.3f} {s / calls[name] * 1e6:8.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workload", choices=WORKLOADS)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative, ncalls ...)")
    ap.add_argument("--limit", type=int, default=40, help="rows of the profile to print")
    args = ap.parse_args(argv)

    from bench.replay_bench import synth_trace

    path = synth_trace(args.events, args.seed)
    if args.workload == "hooks":
        _print_hooks(path)
        return 0
    work: dict[str, Callable[[], None]] = {
        "check": lambda: _check(path),
        "fold": lambda: _fold(path),
        "open": lambda: _open(path),
        "record": lambda: _record(path, args.events, args.seed),
    }
    prof = cProfile.Profile()
    prof.runcall(work[args.workload])
    pstats.Stats(prof, stream=sys.stdout).sort_stats(args.sort).print_stats(args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
