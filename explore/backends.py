"""Where work units run: in this process, on a local process pool, or on a
Dask distributed cluster.

Every backend has one job: given a level's units (explore/units.py) and the
search's seen table, give back each unit's reports *in unit order*, whatever
order they finish in.  The search folds them in that order (and between
reports, so the table grows while a level runs), so the backend can change
the speed of a search but nothing it finds.

``InProcess``   runs each unit when the search asks for its reports, with the
                search's own live seen table (it is folded between units, so
                a later unit stops keying earlier than a worker would: an
                accelerator only, see explore/units.py).
``LocalPool``   a ``concurrent.futures`` process pool of N workers, given the
                problem once each.  Units go out a few at a time; before
                each, the seen table's changes since the last are written
                to a file once, which every worker applies to its replica
                (explore/units.py ``replica``).  Workers ignore
                SIGINT: a Ctrl-C is the coordinator's to handle (it stops,
                cancels what is queued and prints the partial summary).  A
                worker that dies breaks the pool: it is restarted and the
                units in flight sent again (``RESTARTS`` times a search).
``DaskCluster`` a ``distributed.Client`` on a running scheduler
                (``tcp://HOST:PORT``) or on a ``LocalCluster`` it starts and
                closes (``local``).  The problem is scattered to every worker
                once, the table's changes once per level (a scatter is a
                round trip to every worker: per unit it would make the
                coordinator the bottleneck); each unit is a task.  A worker
                lost mid-run has its tasks rescheduled by the scheduler
                (Dask's own resilience); which worker runs a unit, knowing
                what, changes no result (explore/units.py).
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import CancelledError
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .search import SeenTable

from .units import Changes, WorkerMismatch, WorkUnit, check_identity, code_identity, replica, run_work_unit


class BackendError(RuntimeError):
    """The backend cannot run the search (one line for the user)."""


class InProcess:
    def __init__(self, problem: Any) -> None:
        self.problem = problem

    def run(self, units: list[WorkUnit], seen: Mapping[bytes, int] | None) -> Iterator[list[Any]]:
        for u in units:
            yield run_work_unit(u, self.problem, seen)

    def close(self) -> None:
        pass


# --- a local process pool ----------------------------------------------------------

_pool_problem: Any = None


def _pool_init(problem: Any) -> None:
    global _pool_problem
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pool_problem = problem


def _pool_unit(unit: WorkUnit, changes_dir: str | None, batches: int) -> list[Any]:
    """A unit in a pool worker: the problem came with the process, the
    table's changes are files of the coordinator's (one per batch)."""
    def fetch(i: int) -> bytes:
        assert changes_dir is not None
        with open(os.path.join(changes_dir, f"{i:06d}"), "rb") as f:
            return f.read()

    seen = replica(unit.search, batches, fetch) if changes_dir is not None else None
    return run_work_unit(unit, _pool_problem, seen)


class LocalPool:
    """Units are submitted a few at a time (``2 * workers`` in flight), each
    with the table's changes up to the last report folded: a unit then knows
    nearly what the in-process search would, and keys as little."""

    RESTARTS = 3

    def __init__(self, problem: Any, workers: int) -> None:
        self.problem = problem
        self.workers = workers
        self.restarts = 0
        self.pool = self._start()
        self.window = 2 * workers
        self.dir = tempfile.mkdtemp(prefix="vtdtrace-explore-")
        self.changes = Changes()

    def _start(self) -> Any:
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(max_workers=self.workers, initializer=_pool_init, initargs=(self.problem,))

    def _restart(self, exc: BaseException) -> None:
        """A worker died (killed, out of memory): a new pool, or one line
        once a search has lost ``RESTARTS`` of them."""
        self.restarts += 1
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.restarts > self.RESTARTS:
            raise BackendError(f"worker processes died {self.restarts} times ({exc or type(exc).__name__}); "
                               "the search stopped") from None
        self.pool = self._start()

    def _ship(self, seen: SeenTable) -> None:
        if self.changes.pending(seen):
            data = self.changes.since_last(seen)
            with open(os.path.join(self.dir, f"{self.changes.batches - 1:06d}"), "wb") as out:
                out.write(data)

    def run(self, units: list[WorkUnit], seen: SeenTable | None) -> Iterator[list[Any]]:
        where = self.dir if seen is not None else None
        todo = iter(units)
        flight: collections.deque[Any] = collections.deque()

        def submit() -> None:
            u = next(todo, None)
            if u is not None:
                if seen is not None:
                    self._ship(seen)
                batches = self.changes.batches
                flight.append((u, batches, self.pool.submit(_pool_unit, u, where, batches)))

        for _ in range(self.window):
            submit()
        try:
            while flight:
                try:
                    reports = flight[0][2].result()
                except BrokenProcessPool as exc:
                    # a unit's reports do not depend on which process ran it
                    self._restart(exc)
                    for i, (u, batches, _f) in enumerate(flight):
                        flight[i] = (u, batches, self.pool.submit(_pool_unit, u, where, batches))
                    continue
                flight.popleft()
                yield reports           # folded by the search before we go on
                submit()
        finally:
            for _u, _b, f in flight:
                f.cancel()

    def close(self) -> None:
        # waits for the units already running (a Ctrl-C lands between units
        # or in one of at most UNIT_RUNS runs), so no worker outlives the search
        self.pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.dir, ignore_errors=True)


# --- Dask distributed ------------------------------------------------------------------

def _dask_unit(unit: WorkUnit, problem: Any, changes: list[bytes] | None) -> list[Any]:
    """A unit on a Dask worker: ``changes`` are every level's (scattered once
    each; the worker's replica applies those it has not applied yet)."""
    seen = replica(unit.search, len(changes), changes.__getitem__) if changes is not None else None
    return run_work_unit(unit, problem, seen)


CLUSTER_EXTRA = "install the cluster extra: pip install 'vtdtrace[cluster]'"


class DaskCluster:
    def __init__(self, problem: Any, scheduler: str, workers: int) -> None:
        try:
            # typed Any: distributed ships no annotations strict mode accepts
            distributed: Any = importlib.import_module("distributed")
        except ImportError:
            raise BackendError(f"--scheduler needs Dask distributed, which is not installed: {CLUSTER_EXTRA}") \
                from None
        self.cluster: Any = None
        self.client: Any = None
        try:
            if scheduler == "local":
                # Its processes inherit SIGINT ignored: a Ctrl-C at the
                # terminal is the coordinator's, which closes the cluster.
                previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
                try:
                    self.cluster = distributed.LocalCluster(
                        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                        silence_logs=logging.CRITICAL)
                finally:
                    signal.signal(signal.SIGINT, previous)
                self.client = distributed.Client(self.cluster)
            else:
                self.client = distributed.Client(scheduler, timeout="5s")
        except Exception as exc:        # distributed raises many types for one failed connection
            self.close()
            raise BackendError(f"--scheduler {scheduler}: cannot reach the scheduler: "
                               f"{exc or type(exc).__name__}") from None
        self._probe()
        self.problem = self.client.scatter([problem], broadcast=True, hash=False)[0]
        self.changes = Changes()
        self.batches: list[Any] = []        # each level's changes, scattered (kept for the search)

    def _probe(self) -> None:
        """Ask every worker connected now for its code identity, by a call
        whose arguments are plain values: a worker too old to have this
        search fails here by name instead of on its first unit's inputs.
        (A worker that joins later is checked by each unit it runs.)"""
        mine = code_identity()
        try:
            theirs = self.client.run(code_identity)
        except Exception as exc:
            raise BackendError(f"a worker cannot run this vtdtrace's search ({type(exc).__name__}: {exc}): "
                               "install the same vtdtrace on every worker") from None
        try:
            for addr, ident in sorted(theirs.items()):
                check_identity(mine, addr, tuple(ident))
        except WorkerMismatch:
            self.close()
            raise

    def run(self, units: list[WorkUnit], seen: SeenTable | None) -> Iterator[list[Any]]:
        killed: Any = importlib.import_module("distributed").KilledWorker
        changes = None
        if seen is not None:
            if self.changes.pending(seen):
                self.batches.append(self.client.scatter([self.changes.since_last(seen)], broadcast=True,
                                                        hash=False)[0])
            changes = list(self.batches)
        futures = self.client.map(_dask_unit, units, problem=self.problem, changes=changes, pure=False)
        try:
            for f in futures:
                try:
                    yield f.result()
                except killed as exc:
                    raise BackendError(f"a work unit killed every worker that ran it ({exc})") from None
                except (CancelledError, asyncio.CancelledError) as exc:
                    # e.g. every worker holding a level's scattered table
                    # changes was lost at once (scattered data has no
                    # recipe to recompute it), or the scheduler went away
                    raise BackendError(f"the cluster lost a work unit ({type(exc).__name__}: {exc}); "
                                       "run the search again") from None
        finally:
            self.client.cancel(futures)

    def close(self) -> None:
        self.batches = []
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def open_backend(problem: Any, workers: int, scheduler: str | None) -> Any:
    if scheduler is not None:
        return DaskCluster(problem, scheduler, workers)
    if workers <= 1:
        return InProcess(problem)
    return LocalPool(problem, workers)
