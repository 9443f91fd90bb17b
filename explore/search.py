"""The bounded search over interleavings (docs/EXPLORE.md).

Runs
    A run is given a schedule prefix: a list of non-default choices
    (tracer/sched.py: ``SEQ:KV``).  ``run_unit`` re-executes the scenario
    from the start (stateless search: no snapshot, no file per run), follows
    the prefix, then takes the default at every point until the run ends.  At
    every point past the prefix that has alternatives it records a
    ``Branch``: the state key there (explore/key.py), the preemptions used so
    far and each alternative with the preemptions it would use.  The run is
    judged when it ends (explore/judge.py).  A run needs nothing but the
    problem and its prefix, and returns plain values, so runs can be made
    anywhere and in any order; only the frontier and the seen states below
    are shared.  Runs travel in *work units* of a few consecutive prefixes
    of one level (explore/units.py) to a backend (explore/backends.py: in
    process, a process pool, a Dask cluster), which gives their reports
    back in unit order.

Frontier
    A priority queue of prefixes ordered by (preemptions used, number of
    choices, the choices themselves).  A child's prefix extends its parent's
    by one choice, so it sorts after it: runs are taken in breadth-first
    order of that key, and the first run in which a violation appears has a
    schedule with the fewest preemptions, then the fewest choices, among the
    schedules explored -- the counterexample kept is a shortest one.  The
    tie-break on the choices makes the order, and so every output, the same
    on every run.

    The queued prefixes of the smallest (preemptions, choices) form a
    *level*; its units run together, and their reports are folded in
    frontier order, which is the one-at-a-time search whatever ran them.

Pruning
    ``seen`` maps a state's digest (explore/key.py) to the fewest
    preemptions it was reached with.
    At a branch whose key was seen with no more preemptions, the
    alternatives are not enqueued (counted as ``pruned``): everything they
    lead to is reachable from the first visit with at least as much of the
    bound left.  Otherwise the key is recorded and each alternative whose
    preemptions fit the bound (CHESS-style, ``--preemptions K``) is
    enqueued.  Pruning only limits branching: every run started goes to its
    end and is judged.  Soundness and its limit: docs/EXPLORE.md#pruning.

Stopping
    ``max_runs`` caps the runs (the summary then says ``complete: false``);
    a KeyboardInterrupt ends the search after the runs finished so far, with
    the same partial summary.
"""

from __future__ import annotations

import heapq
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from tracer.record import make_header, record
from tracer.recorder import NullSink
from tracer.sched import Choice, Point, format_schedule

from . import key as keys
from .judge import Identity, RunJudge, file_header, hazards

if TYPE_CHECKING:
    from replay.hazards import Finding
    from tracer.engine import Engine
    from tracer.platform import Platform

_KIND_ORDER = {k: i for i, k in enumerate("dxtac")}


# --- one run ----------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """What every run of one search shares: the scenario (with the engine
    options already applied to its knobs) and the engine variant."""

    platform: Platform
    variant: str

    def header(self, schedule: Sequence[Choice] = ()) -> dict[str, Any]:
        return make_header(self.platform, self.variant, schedule)


class Branch(NamedTuple):
    """A point past the prefix with alternatives: plain values only, because
    a run's branches are most of what a worker sends back (a tuple of ints
    unpickles without calling anything; the alternatives are made into
    ``Choice``s only by the coordinator, only for those it queues)."""

    key: bytes | None           # the state's digest; None after the run met a seen state
    preemptions: int            # used before this point
    seq: int                    # the point (Point.seq, .kind, .options, .costs)
    kind: str
    options: tuple[int, ...]    # options[0] is the default the run took
    costs: tuple[int, ...]

    @property
    def alternatives(self) -> list[tuple[Choice, int]]:
        """(choice, preemptions the child uses) for each non-default option."""
        return [(Choice(self.seq, self.kind, self.options[i]), self.preemptions + self.costs[i])
                for i in range(1, len(self.options))]


@dataclass
class RunReport:
    prefix: tuple[Choice, ...]
    preemptions: int
    events: int
    limit: str | None
    hazards: dict[Identity, Finding]
    branches: list[Branch]


class SeenLookup(Protocol):
    """What a run asks of a seen table: a dict, or a worker's view of one
    (explore/units.py ``_Seen``)."""

    def get(self, key: bytes, /) -> int | None: ...


class _PrefixChooser:
    """Follows the prefix; past it takes the default and records branches."""

    def __init__(self, prefix: Sequence[Choice], judge: RunJudge, seen: SeenLookup | None) -> None:
        self.want = {(c.seq, c.kind): c.value for c in prefix}
        self.left = len(prefix)
        self.judge = judge
        self.seen = seen
        self.merged = False
        self.engine: Engine | None = None
        self.branches: list[Branch] = []

    def choose(self, point: Point) -> int:
        if self.left:
            v = self.want.get((point.seq, point.kind))
            if v is None:
                return 0
            self.left -= 1
            return point.options.index(v)
        eng = self.engine
        assert eng is not None and eng.sched is not None
        sched = eng.sched
        used = sched.preemptions
        key: bytes | None = None
        if not self.merged:
            key = keys.digest(keys.state_key(self.judge.state(), eng, sched, point))
            before = self.seen.get(key) if self.seen is not None else None
            # From a state seen with no more preemptions the defaults retrace
            # the run that saw it: every later point's state was seen too.
            self.merged = before is not None and before <= used
        self.branches.append(Branch(key, used, point.seq, point.kind, point.options, point.costs))
        return 0


def run_unit(problem: Problem, prefix: Sequence[Choice], header: dict[str, Any] | None = None,
             seen: SeenLookup | None = None) -> RunReport:
    """One run: the prefix, then defaults to the end; judged.  ``header`` is
    the file-read form of the problem's header (computed when not given).

    ``seen`` (state digest -> fewest preemptions it was reached with) is an
    accelerator: once the run meets a state seen with no more preemptions,
    its later branches carry no key (``key`` None), since following the
    defaults from there retraces the run that saw it.  Without it every
    branch gets its key; the search's result is the same."""
    judge = RunJudge(header if header is not None else file_header(problem.header()))
    chooser = _PrefixChooser(prefix, judge, seen)

    def on_event(engine: Engine, ev: list[Any]) -> None:
        chooser.engine = engine
        judge.on_event(ev)

    result = record(problem.platform, problem.variant, NullSink(), on_event=on_event, chooser=chooser)
    if chooser.left:
        raise RuntimeError(f"prefix {format_schedule(prefix)} not followed: {chooser.left} choices never asked")
    found = hazards(judge, judge.finish())
    eng = chooser.engine
    used = eng.sched.preemptions if eng is not None and eng.sched is not None else 0
    return RunReport(tuple(prefix), used, result.events, result.limit, found, chooser.branches)


# --- the search -------------------------------------------------------------------

@dataclass
class Violation:
    number: int                 # 1-based, in discovery order
    identity: Identity
    severity: str
    schedule: tuple[Choice, ...]
    preemptions: int
    run: int                    # the run (1-based) that found it
    trace: str | None = None    # file name of its counterexample, once written


@dataclass
class Summary:
    bound: int
    schedules: int = 0                  # runs completed (the baseline is run 1)
    states: int = 0                     # distinct state keys met
    pruned: int = 0                     # alternatives not enqueued: their state was seen
    alternatives: int = 0               # alternatives met past the prefixes
    over_bound: int = 0                 # alternatives not enqueued: over the preemption bound
    limits: int = 0                     # runs that ended at an engine limit (e.g. deadlock)
    max_preemptions: int = 0            # the most any run used
    complete: bool = False
    interrupted: bool = False
    frontier: int = 0                   # prefixes still queued when the search stopped
    units: int = 0                      # work units folded (explore/units.py)
    level_units: int = 0                # units of the level being run (progress only)
    level_done: int = 0                 # of which folded
    queued: int = 0                     # prefixes queued or in the running level, not yet folded
    baseline: dict[Identity, Finding] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)


class SeenTable(dict[bytes, int]):
    """The search's table of states seen (digest -> fewest preemptions),
    logging every key it sets so that backends can send workers what changed
    since they last did (explore/units.py ``Changes``)."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[bytes] = []

    def __setitem__(self, key: bytes, value: int) -> None:
        super().__setitem__(key, value)
        self.log.append(key)


def _order(prefix: tuple[Choice, ...]) -> tuple[tuple[int, int, int], ...]:
    return tuple((c.seq, _KIND_ORDER[c.kind], c.value) for c in prefix)


def explore(problem: Problem, bound: int = 2, max_runs: int | None = None, prune: bool = True,
            on_violation: Callable[[Violation], None] | None = None,
            on_progress: Callable[[Summary], None] | None = None,
            on_run: Callable[[RunReport], None] | None = None, workers: int = 1,
            scheduler: str | None = None) -> Summary:
    """Breadth-first bounded search (module docstring).  ``on_violation`` is
    called as each new violation is found (the CLI writes its trace then);
    ``on_run`` with each run's report and ``on_progress`` after every unit.
    ``workers`` and ``scheduler`` choose where the work units run
    (explore/backends.py); nothing else depends on them."""
    from .backends import open_backend
    from .units import code_identity, cut

    if bound < 0:
        raise ValueError("the preemption bound must be >= 0")
    summary = Summary(bound)
    seen = SeenTable()
    found: dict[Identity, Violation] = {}
    frontier: list[tuple[int, int, tuple[tuple[int, int, int], ...], tuple[Choice, ...]]] = [(0, 0, (), ())]
    identity = code_identity()
    token = uuid.uuid4().hex         # names this search to the workers' own tables, nothing else
    backend = None
    try:
        backend = open_backend(problem, workers, scheduler)
        while frontier:
            if max_runs is not None and summary.schedules >= max_runs:
                break
            # A level: every queued prefix of the smallest (preemptions,
            # length), in frontier order.  Their children all sort after the
            # level, so running its units anywhere and folding their reports
            # in this order is the one-at-a-time search.
            batch = [heapq.heappop(frontier)]
            while frontier and frontier[0][:2] == batch[0][:2]:
                batch.append(heapq.heappop(frontier))
            if max_runs is not None:
                for entry in batch[max_runs - summary.schedules:]:
                    heapq.heappush(frontier, entry)
                batch = batch[:max_runs - summary.schedules]
            units = cut(batch[0][:2], [entry[3] for entry in batch], identity, token)
            summary.level_units = len(units)
            summary.level_done = 0
            folded = 0
            try:
                for reports in backend.run(units, seen if prune else None):
                    for report in reports:
                        _fold(report, summary, seen, found, frontier, bound, prune, on_violation, on_run)
                        folded += 1
                    summary.units += 1
                    summary.level_done += 1
                    summary.queued = len(frontier) + len(batch) - folded
                    if on_progress is not None:
                        on_progress(summary)
            except KeyboardInterrupt:
                for entry in batch[folded:]:
                    heapq.heappush(frontier, entry)
                raise
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if backend is not None:
            backend.close()
    summary.states = len(seen)
    summary.frontier = len(frontier)
    summary.queued = len(frontier)
    summary.complete = not frontier and not summary.interrupted
    return summary


def _fold(report: RunReport, summary: Summary, seen: dict[bytes, int], found: dict[Identity, Violation],
          frontier: list[tuple[int, int, tuple[tuple[int, int, int], ...], tuple[Choice, ...]]], bound: int,
          prune: bool, on_violation: Callable[[Violation], None] | None,
          on_run: Callable[[RunReport], None] | None) -> None:
    """One run's report into the search, in frontier order."""
    prefix = report.prefix
    summary.schedules += 1
    if on_run is not None:
        on_run(report)
    summary.max_preemptions = max(summary.max_preemptions, report.preemptions)
    if report.limit is not None:
        summary.limits += 1
    if not prefix:
        summary.baseline = report.hazards
    for ident, f in report.hazards.items():
        if ident in summary.baseline or ident in found:
            continue
        v = Violation(len(found) + 1, ident, f.severity, prefix, report.preemptions, summary.schedules)
        found[ident] = v
        summary.violations.append(v)
        if on_violation is not None:
            on_violation(v)
    merged = False
    for key, used, seq, kind, options, costs in report.branches:
        n = len(options) - 1
        fits = [i for i in range(1, n + 1) if used + costs[i] <= bound]
        summary.alternatives += n
        summary.over_bound += n - len(fits)
        if key is None or merged:       # past a merge with a seen state (run_unit)
            summary.pruned += len(fits)
            continue
        before = seen.get(key)
        if before is not None and before <= used and prune:
            # run_unit with the live table stops keying here; a
            # worker without it keyed on: treat its later branches alike
            merged = True
            summary.pruned += len(fits)
            continue
        if before is None or used < before:
            seen[key] = used
        for i in fits:
            child = prefix + (Choice(seq, kind, options[i]),)
            p = used + costs[i]
            heapq.heappush(frontier, (p, len(child), _order(child), child))
    summary.states = len(seen)
