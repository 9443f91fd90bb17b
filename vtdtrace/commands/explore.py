"""vtdtrace explore SCENARIO --engine V [--cx16|--no-cx16] [--no-xsa399-fix] [--preemptions K] [--max-runs N]
[--workers N] [--scheduler tcp://HOST:PORT|local] [-o DIR] [--force] [--all] [--json] [--no-prune]

The bounded search over interleavings (explore/, docs/EXPLORE.md): runs the
scenario under every schedule within the preemption bound, judges each run
with the analysers of `check`, and writes a shortest counterexample trace
for every violation (a hazard the run-to-completion schedule does not have)
into DIR.  The summary goes to stdout (text, or --json); progress and
elapsed time go to stderr only.  Exit 0 no violation, 1 a violation, 2 usage
error, 130 interrupted (after the partial summary).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ..engine_options import add_engine_options, apply_engine_options
from ..errors import EXIT_FINDING, EXIT_OK, EXIT_USAGE, fail

EXIT_INTERRUPTED = 130
PROGRESS_EVERY = 2.0        # seconds between progress lines on stderr


def add_parser(p) -> None:
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or the name of a shipped one")
    add_engine_options(p)
    p.add_argument("--preemptions", type=int, default=2, metavar="K",
                   help="the preemption bound: schedules that switch away from a CPU that could go on "
                        "at most K times (default 2; 0 = only switches at op ends and waits)")
    p.add_argument("--max-runs", type=int, default=None, metavar="N",
                   help="stop after N schedules (the summary then says complete: false)")
    p.add_argument("-o", "--output", metavar="DIR", default=".",
                   help="directory for the counterexample traces explore-NNN-KIND.vtdt (default: the "
                        "current directory; created if missing)")
    p.add_argument("--force", action="store_true",
                   help="remove the explore-NNN-*.vtdt files an earlier explore left in DIR (without it, "
                        "such files are refused)")
    p.add_argument("--all", action="store_true",
                   help="also list the hazards the run-to-completion schedule has itself")
    p.add_argument("--json", action="store_true", help="the summary as one JSON object (docs/EXPLORE.md)")
    p.add_argument("--no-prune", action="store_true",
                   help="explore every schedule within the bound, also from states already explored "
                        "(slower; the result must be the same: a check of the pruning)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the work units on N local processes (default: the number of cores this "
                        "process may use; 1 = in this process); with --scheduler local, the number of Dask "
                        "worker processes; ignored with --scheduler tcp://, whose workers are the cluster's. "
                        "The summary and the counterexamples are the same bytes whatever N")
    p.add_argument("--scheduler", metavar="ADDR", default=None,
                   help="run the work units on Dask distributed: tcp://HOST:PORT submits them to a "
                        "running scheduler (start one with `dask scheduler` and, on each worker host, "
                        "`dask worker ADDR --nworkers auto --nthreads 1`), `local` starts a LocalCluster of "
                        "--workers processes for the run. Needs the cluster extra (pip install "
                        "'vtdtrace[cluster]'); docs/EXPLORE.md#parallel")


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _prepare_dir(out: str, force: bool) -> int | None:
    """Make DIR usable; the exit code after a one-line refusal, or None."""
    from explore.traces import earlier_counterexamples

    if os.path.exists(out) and not os.path.isdir(out):
        return fail(out, "-o: not a directory")
    if not os.path.exists(out):
        try:
            os.mkdir(out)
        except OSError as exc:
            return fail(out, f"-o: cannot create the directory: {exc.strerror or exc}")
    try:
        old = earlier_counterexamples(out)
    except OSError as exc:
        return fail(out, f"-o: cannot read the directory: {exc.strerror or exc}")
    if old and not force:
        return fail(out, f"-o: holds counterexamples of an earlier explore ({old[0]} ...); "
                         "use --force to replace them or choose another directory")
    for name in old:
        try:
            os.unlink(os.path.join(out, name))
        except OSError as exc:
            return fail(os.path.join(out, name), f"cannot remove: {exc.strerror or exc}")
    if not os.access(out, os.W_OK | os.X_OK):
        return fail(out, "-o: the directory is not writable")
    return None


class _Progress:
    """Throttled progress on stderr: at most one line every PROGRESS_EVERY s.
    The ETA is for the work queued now (the prefixes waiting and the level
    running) at the mean rate so far; a search queues more as it goes, so it
    is a lower bound until the last level."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.last = self.start

    def __call__(self, s) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY:
            self.last = now
            dt = now - self.start
            rate = s.schedules / dt if dt > 0 else 0.0
            eta = f", queued work ~{s.queued / rate:.0f} s more" if rate > 0 else ""
            print(f"explore: {s.units} units ({s.level_done}/{s.level_units} of this level), {s.schedules} "
                  f"schedules, {s.states} states, {len(s.violations)} violations, {dt:.1f} s, "
                  f"{rate:.0f} schedules/s, {s.queued} queued{eta}", file=sys.stderr, flush=True)

    def done(self, s) -> None:
        dt = time.monotonic() - self.start
        rate = f" ({s.schedules / dt:.0f} schedules/s)" if dt > 0 else ""
        print(f"explore: {s.schedules} schedules in {dt:.1f} s{rate}", file=sys.stderr, flush=True)


def _finding_json(ident, severity: str) -> dict[str, Any]:
    return {"kind": ident.kind, "severity": severity, "devices": list(ident.devices), "ops": list(ident.ops)}


def summary_json(problem, args, s) -> dict[str, Any]:
    from tracer.sched import format_schedule

    out: dict[str, Any] = {
        "scenario": problem.platform.name,
        "engine": problem.variant,
        "cx16": problem.platform.knobs.cx16,
        "xsa399_fix": problem.platform.knobs.xsa399_fix,
        "bound": s.bound,
        "max_runs": args.max_runs,
        "prune": not args.no_prune,
        "schedules": s.schedules,
        "states": s.states,
        "pruned": s.pruned,
        "alternatives": s.alternatives,
        "over_bound": s.over_bound,
        "limits": s.limits,
        "max_preemptions": s.max_preemptions,
        "complete": s.complete,
        "units": s.units,
        "interrupted": s.interrupted,
        "violations": [
            {**_finding_json(v.identity, v.severity), "number": v.number,
             "schedule": format_schedule(v.schedule), "preemptions": v.preemptions, "trace": v.trace}
            for v in s.violations
        ],
    }
    if args.all:
        out["baseline"] = [_finding_json(i, f.severity) for i, f in sorted(s.baseline.items())]
    return out


def summary_text(problem, args, s) -> list[str]:
    from tracer.sched import format_schedule

    knobs = problem.platform.knobs
    state = "complete" if s.complete else ("interrupted" if s.interrupted else
                                           f"stopped at --max-runs {args.max_runs}")
    opts = ("cx16" if knobs.cx16 else "no cx16") + ("" if knobs.xsa399_fix else ", no XSA-399 fix")
    lines = [f"explore {problem.platform.name} under {problem.variant} ({opts}), "
             f"preemption bound {s.bound}: {state}",
             f"  schedules run    {s.schedules} (the most preemptions used: {s.max_preemptions})",
             f"  distinct states  {s.states}",
             f"  pruned           {s.pruned} of {s.alternatives} alternatives "
             f"({s.over_bound} over the bound{'; pruning off' if args.no_prune else ''})"]
    if s.limits:
        lines.append(f"  engine limits    {s.limits} runs stopped at an engine limit (e.g. a deadlock)")
    if args.all:
        lines.append(f"baseline (run to completion): {len(s.baseline)} hazard{'s' if len(s.baseline) != 1 else ''}"
                     " (not violations)")
        for ident, _f in sorted(s.baseline.items()):
            lines.append(f"  {ident.kind:<15} {', '.join(ident.devices) or '-':<14} ops {_ops(ident.ops)}")
    n = len(s.violations)
    lines.append(f"violations: {n}" if n else "violations: none")
    for v in s.violations:
        where = os.path.join(args.output, v.trace) if v.trace else "(not written)"
        lines.append(f"  {v.number:>3} {v.identity.kind:<15} {', '.join(v.identity.devices) or '-':<14} "
                     f"ops {_ops(v.identity.ops)}  {where}")
        lines.append(f"      schedule \"{format_schedule(v.schedule)}\" ({v.preemptions} preemption"
                     f"{'s' if v.preemptions != 1 else ''})")
    return lines


def _ops(ops) -> str:
    return ",".join(str(o) for o in ops) or "-"


def run(args) -> int:
    from explore.backends import BackendError
    from explore.search import Problem, explore
    from explore.traces import write_counterexample
    from explore.units import WorkerMismatch
    from replay.jsonout import dumps
    from tracer.engine import VARIANTS
    from tracer.scenario import ScenarioError, load_scenario

    if args.engine == "xen-c":
        return fail(None, "explore does not run the xen-c engine (real C has no scheduling points "
                          "inside it); explore a model variant and diff against a xen-c trace")
    if args.engine not in VARIANTS:
        return fail(None, f"unknown engine variant {args.engine!r} (available: {', '.join(VARIANTS)})")
    if args.preemptions < 0:
        return fail(None, f"--preemptions: must be 0 or more, got {args.preemptions}")
    if args.max_runs is not None and args.max_runs < 1:
        return fail(None, f"--max-runs: must be 1 or more, got {args.max_runs}")
    if args.workers is None:
        args.workers = default_workers()
    if args.workers < 1:
        return fail(None, f"--workers: must be 1 or more, got {args.workers}")
    if args.scheduler is not None and args.scheduler != "local" and not args.scheduler.startswith("tcp://"):
        return fail(None, f"--scheduler: expected tcp://HOST:PORT or local, got {args.scheduler!r}")
    try:
        platform = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"vtdtrace: {exc}", file=sys.stderr)
        return EXIT_USAGE
    apply_engine_options(platform, args)
    refused = _prepare_dir(args.output, args.force)
    if refused is not None:
        return refused
    problem = Problem(platform, args.engine)
    progress = _Progress()

    def written(v) -> None:
        v.trace = write_counterexample(problem, v, args.output)

    try:
        summary = explore(problem, bound=args.preemptions, max_runs=args.max_runs, prune=not args.no_prune,
                          on_violation=written, on_progress=progress, workers=args.workers,
                          scheduler=args.scheduler)
    except (BackendError, WorkerMismatch) as exc:
        return fail(None, f"explore: {exc}")
    progress.done(summary)
    if args.json:
        sys.stdout.write(dumps(summary_json(problem, args, summary)) + "\n")
    else:
        sys.stdout.write("\n".join(summary_text(problem, args, summary)) + "\n")
    sys.stdout.flush()
    if summary.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_FINDING if summary.violations else EXIT_OK
