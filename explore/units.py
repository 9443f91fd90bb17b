"""Work units: what a worker is given, what it does, what it sends back.

Decomposition
    The search (explore/search.py) runs breadth-first in *levels*: every
    queued schedule prefix with the same (preemptions, number of choices).
    A level's prefixes, in frontier order, are cut into units of
    ``UNIT_RUNS`` consecutive prefixes, fewer in a small level so that it
    still makes ``UNITS_PER_LEVEL`` units to spread (``unit_size``).  The
    cut depends on nothing but the level's contents -- not on the number of
    workers, the backend or timing -- and ``--workers 1`` runs the very same
    units in process.  A unit is
    never large: each prefix is one run (the prefix, then the defaults to
    the end), so a unit costs at most ``UNIT_RUNS`` runs, whatever subtree
    lies below it; what lies below is queued by the coordinator and cut into
    the next levels' units.

What a unit returns
    One ``RunReport`` per prefix, in order: the run's counts (events,
    preemptions, engine limit), its hazard findings by identity (the
    coordinator decides which are violations: it alone knows the baseline
    and what earlier units found), and for every branch point past the
    prefix the state's 128-bit digest, the preemptions used there and the
    alternatives -- what pruning needs.  No trace: the coordinator
    re-records the counterexamples it keeps from their schedules.

The seen table
    A unit sees some past state of the coordinator's table of states seen
    (digest -> fewest preemptions): a replica brought up to date by batches
    of changes (``replica``), as of when the unit was sent.  It adds the
    keys its own runs meet, and those that earlier units of the same search
    met in the same process, if the coordinator folds them before this unit
    (``_Seen``).  It only uses the table to stop keying a run once the run
    meets a state seen with no more preemptions (explore/search.py
    ``run_unit``); the pruning decisions are the coordinator's, folding the
    reports in frontier order.

    Why that cannot change the result: a key K that a unit knows was met by
    a run R folded before the unit, with p preemptions.  If the fold keyed
    R at K, the coordinator holds K with <= p.  If the fold stopped keying R
    earlier, at a state seen before with no more preemptions, then R took
    only defaults from there (keys are taken past the prefix only), defaults
    cost no preemptions, and the state key decides what a run does next: the
    run that first met that state went on through the same states, K among
    them, with no more preemptions -- by induction some run folded before R
    was keyed at K.  Either way the coordinator holds K with <= p when it
    folds the unit, so a run stops keying only where the fold would stop
    anyway.  The result is the one-at-a-time search's whatever a unit knew.

Code identity
    Each unit carries the coordinator's vtdtrace version and the digest of
    the source of every module a run executes (the engine, the replay fold,
    the analysers, the search).  A worker compares them with its own before
    it runs anything and refuses with ``WorkerMismatch`` -- one line naming
    the worker and both identities -- instead of returning schedules another
    engine computed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tracer.sched import Choice

if TYPE_CHECKING:
    from .search import SeenTable

UNIT_RUNS = 8           # the most prefixes (runs) in a work unit
UNITS_PER_LEVEL = 32    # a level smaller than UNIT_RUNS * this is cut finer

# What a run executes: the record side, the fold and the analysers, the search.
_PACKAGES = ("tracer", "tracer.engine", "replay", "replay.hazards", "explore")


class WorkerMismatch(RuntimeError):
    """A worker runs other code than the coordinator."""


@dataclass(frozen=True)
class WorkUnit:
    level: tuple[int, int]                  # (preemptions, choices) of its prefixes
    index: int                              # its place in the level
    prefixes: tuple[tuple[Choice, ...], ...]
    identity: tuple[str, str]               # the coordinator's (version, code digest)
    search: str = ""                        # which search (a worker's own table is per search)

    @property
    def order(self) -> tuple[int, int, int]:
        """Fold order: every unit of an earlier level, then this level's by index."""
        return (self.level[0], self.level[1], self.index)


def unit_size(level_prefixes: int) -> int:
    """Prefixes per unit for a level of that many: UNIT_RUNS, or fewer so
    that a small level still makes UNITS_PER_LEVEL units (a level of 18
    prefixes is 18 units, not 3).  A function of the level's size alone."""
    return max(1, min(UNIT_RUNS, -(-level_prefixes // UNITS_PER_LEVEL)))


def cut(level: tuple[int, int], prefixes: Sequence[tuple[Choice, ...]], identity: tuple[str, str],
        search: str = "", size: int | None = None) -> list[WorkUnit]:
    """A level's prefixes (frontier order) as units of ``size`` consecutive
    prefixes (default ``unit_size``)."""
    n = size or unit_size(len(prefixes))
    return [WorkUnit(level, i // n, tuple(prefixes[i:i + n]), identity, search) for i in range(0, len(prefixes), n)]


# --- code identity ------------------------------------------------------------------

_identity: tuple[str, str] | None = None


def code_identity() -> tuple[str, str]:
    """(installed vtdtrace version and the Python running it, BLAKE2b digest
    of every module a run executes), computed once per process.  The
    Python counts: the state key reads frames' locals and line numbers,
    which another minor version lays out differently (3.12 inlines
    comprehensions), so the same state could digest differently."""
    global _identity
    if _identity is None:
        from replay.codeid import package_modules, package_version, source_digest
        mods: list[str] = []
        for p in _PACKAGES:
            mods += package_modules(p)
        impl = f"{sys.implementation.name} {sys.version_info[0]}.{sys.version_info[1]}"
        _identity = (f"{package_version()} on {impl}", source_digest(mods))
    return _identity


def check_identity(expected: tuple[str, str], where: str, mine: tuple[str, str] | None = None) -> None:
    """Refuse (``WorkerMismatch``) when this process's identity -- or the
    one a worker reported, ``mine`` -- is not the coordinator's."""
    mine = mine or code_identity()
    if tuple(expected) != mine:
        raise WorkerMismatch(
            f"worker {where} runs vtdtrace {mine[0]} (code {mine[1][:12]}), the coordinator vtdtrace "
            f"{expected[0]} (code {expected[1][:12]}): install the same vtdtrace on every worker")


# --- running a unit -------------------------------------------------------------------

# This process's keys of the current search: digest -> (preemptions, unit order).
_process: tuple[str, dict[bytes, tuple[int, tuple[int, int, int]]]] | None = None


class _Seen:
    """What a run may stop keying on: the level's table (read only), the
    keys this unit's earlier runs recorded, and the keys earlier units of
    this search recorded in this process -- only those of units the
    coordinator folds before this one (``WorkUnit.order``), so that the
    argument in the module docstring holds: a state known here is one the
    coordinator knows, with no more preemptions, when it folds this unit."""

    def __init__(self, base: Mapping[bytes, int], unit: WorkUnit) -> None:
        self.base = base
        self.own: dict[bytes, int] = {}
        self.order = unit.order
        global _process
        if _process is None or _process[0] != unit.search:
            _process = (unit.search, {})
        self.process = _process[1]

    def get(self, key: bytes, /) -> int | None:
        best = self.base.get(key)
        b = self.own.get(key)
        if b is not None and (best is None or b < best):
            best = b
        c = self.process.get(key)
        if c is not None and c[1] < self.order and (best is None or c[0] < best):
            best = c[0]
        return best

    def add(self, key: bytes, preemptions: int) -> None:
        before = self.own.get(key)
        if before is None or preemptions < before:
            self.own[key] = preemptions
        # Keep the entry of the unit folded earliest (the most units may use
        # it), units run out of order too; equal order: the fewer preemptions.
        mine = (preemptions, self.order)
        known = self.process.get(key)
        if known is None or (known[1], known[0]) > (mine[1], mine[0]):
            self.process[key] = mine


def run_work_unit(unit: WorkUnit, problem: Any, seen: Mapping[bytes, int] | None) -> list[Any]:
    """Run a unit's prefixes in order; their ``RunReport``s.  ``seen`` None:
    pruning is off, every branch is keyed."""
    from .judge import file_header
    from .search import run_unit

    check_identity(unit.identity, _where())
    header = file_header(problem.header())
    table = _Seen(seen, unit) if seen is not None else None
    reports = []
    for prefix in unit.prefixes:
        report = run_unit(problem, prefix, header, table)
        if table is not None:
            for b in report.branches:
                if b.key is not None:
                    table.add(b.key, b.preemptions)
        reports.append(report)
    return reports


# --- the seen table on a worker ---------------------------------------------------

# The table travels as batches of changes: the digests whose fewest
# preemptions are new or lower since the last batch, 16 bytes each followed
# by the count in 2 bytes.  A worker applies each batch once and keeps its
# replica for the rest of the search, so a unit costs the same to send
# whether the search has met a hundred states or a million.
_ENTRY = 18


def encode_changes(changes: Mapping[bytes, int]) -> bytes:
    return b"".join(k + v.to_bytes(2, "little") for k, v in sorted(changes.items()))


def decode_changes(data: bytes, into: dict[bytes, int]) -> None:
    for i in range(0, len(data), _ENTRY):
        into[data[i:i + 16]] = int.from_bytes(data[i + 16:i + _ENTRY], "little")


class Changes:
    """The coordinator's side: what changed in its table since the last
    batch.  The search's table logs the keys it sets (``SeenTable.log``), so
    a batch costs what changed, not the table."""

    def __init__(self) -> None:
        self.pos = 0
        self.batches = 0

    def pending(self, seen: SeenTable) -> bool:
        return len(seen.log) > self.pos

    def since_last(self, seen: SeenTable) -> bytes:
        keys = seen.log[self.pos:]
        self.pos = len(seen.log)
        self.batches += 1
        return encode_changes({k: seen[k] for k in keys})


# This process's replica: (search, batches applied, table).
_replica: tuple[str, int, dict[bytes, int]] | None = None


def replica(search: str, batches: int, fetch: Any) -> dict[bytes, int]:
    """The coordinator's table as of its ``batches``-th batch of changes,
    applying those this process has not applied yet (``fetch(i)``: batch i).
    Any state of the coordinator's table is sound for a unit folded later
    (module docstring): its table only gains states and lowers counts."""
    global _replica
    if _replica is None or _replica[0] != search:
        _replica = (search, 0, {})
    _s, applied, table = _replica
    for i in range(applied, batches):
        decode_changes(fetch(i), table)
    _replica = (search, max(applied, batches), table)
    return table


def _where() -> str:
    try:
        from distributed import get_worker
        return str(get_worker().address)
    except (ImportError, ValueError):
        return f"process {os.getpid()}"
