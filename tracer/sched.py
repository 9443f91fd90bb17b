"""Who runs next: the CPUs and devices of a recording, and the schedule that
picks between them (docs/ENGINE.md#scheduling).

Actors
    Each CPU a scenario names runs its ops in listed order on a greenlet of
    its own, so the engine stays a function-by-function transliteration of the
    C: a CPU is suspended in the middle of ``domain_context_mapping_one`` with
    its Python locals (``prev_did``, ``old`` ...) exactly where the C keeps
    them.  Devices that a scenario lets DMA (``[[dma]]``) are actors too: a
    DMA is issued between two events, on no CPU.

Scheduling points
    After every event that touches state another actor can see
    (``SHARED_KINDS``: locks, context-entry stores, flushes, DID map and
    bitmap updates, page tables, owners ...) and at the end of every op.
    Calls, returns, log lines and the op-begin/op-end bookkeeping are not
    points: they touch nothing shared.  At a point the scheduler first asks
    whether a device issues its DMA (``d``), then which CPU runs on (``c``).
    A CPU that finds a spin lock taken by another CPU records a ``lock-wait``
    event and is not schedulable until the lock is free.

Choices and the schedule
    Each question is a ``Point`` with its options; option 0 is the default:
    the running CPU goes on while it is inside an op, and at the end of an
    op (or when the running CPU waits) the CPU whose next op comes first in
    the listing runs.  The default everywhere is "run to completion in
    listed order", which is what a recording without a schedule does.  The
    schedule is the list of non-default choices, each ``SEQ:KV``: after
    event SEQ, choice kind K took value V --

        c   the CPU that runs            (V = CPU number)
        d   a DMA is issued              (V = index of the [[dma]] entry, 0-based)
        x   context-cache value used     (V = option index, 0 = the entry in memory)
        t   IOTLB entry used             (V = option index, 0 = walk the tables)
        a   device-TLB entry used        (V = option index, 0 = ask the IOMMU)

    e.g. ``"41:c1 57:d0 57:t1"``.  It is stored in the trace header
    (``schedule``), so ``record --schedule`` re-records any interleaving
    byte for byte.  Choosing another CPU while the running one could go on
    is a *preemption*; switching at the end of an op or away from a waiting
    CPU is free.  The explorer bounds preemptions (CHESS).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from greenlet import GreenletExit, getcurrent, greenlet

from . import schema as S

if TYPE_CHECKING:
    from .engine import Engine
    from .platform import Op

SCHEDULE_VERSION = 1

# Events after which another actor may run.
SHARED_KINDS = frozenset({
    S.K_LOCK, S.K_UNLOCK, S.K_ROOT_WRITE, S.K_CTX_WRITE, S.K_CACHE_SYNC, S.K_FLUSH_CONTEXT,
    S.K_FLUSH_IOTLB, S.K_FLUSH_DEV_IOTLB, S.K_FLUSH_WRITE_BUFFER, S.K_TRANSLATION_ENABLE,
    S.K_DID_BITMAP, S.K_DID_MAP, S.K_IOMMU_BITMAP, S.K_PT_ALLOC, S.K_PT_FREE, S.K_IDMAP_ADD,
    S.K_IDMAP_REMOVE, S.K_OWNER_MOVE, S.K_DEVICE_ADD, S.K_DEVICE_REMOVE, S.K_ATS_ENABLE,
    S.K_DOMAIN_CREATE, S.K_DOMAIN_DYING, S.K_DOMAIN_DESTROY, S.K_PSEUDO_DOMID, S.K_DMA,
})

CHOICE_KINDS = {"c": "cpu", "d": "dma", "x": "context-cache", "t": "iotlb", "a": "device-tlb"}
# Choices taken at one point, in the order they are asked.
_KIND_ORDER = {k: i for i, k in enumerate("dxtac")}


class ScheduleError(ValueError):
    """A schedule that cannot be read, or that does not fit the scenario."""


class Deadlock(Exception):
    """Every CPU that has work left waits for a lock or a condition (Xen
    would hang; the engine records an engine-limit event)."""


@dataclass(frozen=True)
class Choice:
    seq: int
    kind: str
    value: int

    def __str__(self) -> str:
        return f"{self.seq}:{self.kind}{self.value}"


_CHOICE_RE = re.compile(r"^(\d+):([cdxta])(\d+)$")


def parse_schedule(text: str) -> tuple[Choice, ...]:
    """``"41:c1 57:d0"`` (spaces or commas between choices) -> choices."""
    out: list[Choice] = []
    seen: set[tuple[int, str]] = set()
    for tok in re.split(r"[\s,]+", text.strip()):
        if not tok:
            continue
        m = _CHOICE_RE.match(tok)
        if m is None:
            raise ScheduleError(f"bad choice {tok!r}: expected SEQ:KV, K one of {''.join(CHOICE_KINDS)} "
                                "(e.g. 41:c1)")
        c = Choice(int(m.group(1)), m.group(2), int(m.group(3)))
        if (c.seq, c.kind) in seen:
            raise ScheduleError(f"two {CHOICE_KINDS[c.kind]} choices after event {c.seq}")
        seen.add((c.seq, c.kind))
        out.append(c)
    return tuple(sorted(out, key=lambda c: (c.seq, _KIND_ORDER[c.kind])))


def format_schedule(choices: Iterable[Choice]) -> str:
    return " ".join(str(c) for c in sorted(choices, key=lambda c: (c.seq, _KIND_ORDER[c.kind])))


def schedule_header(cpus: int, choices: Iterable[Choice]) -> dict[str, Any]:
    """The trace header's ``schedule`` entry (docs/FORMAT.md#schedule)."""
    return {"version": SCHEDULE_VERSION, "cpus": cpus, "choices": format_schedule(choices)}


@dataclass(frozen=True)
class Point:
    """One question: after event ``seq``, which of ``options`` (values as in
    the schedule; ``options[0]`` is the default)?  ``costs[i]`` is the
    number of preemptions option i spends."""

    seq: int
    kind: str
    options: tuple[int, ...]
    costs: tuple[int, ...]


class Chooser(Protocol):
    def choose(self, point: Point) -> int:
        """The index into point.options to take."""
        ...


class FollowSchedule:
    """Takes the schedule's choice where it has one, else the default."""

    def __init__(self, choices: Sequence[Choice] = ()) -> None:
        self.want = {(c.seq, c.kind): c.value for c in choices}
        self.taken: set[tuple[int, str]] = set()

    def choose(self, point: Point) -> int:
        v = self.want.get((point.seq, point.kind))
        if v is None:
            return 0
        if v not in point.options:
            opts = ", ".join(map(str, point.options))
            raise ScheduleError(f"choice {point.seq}:{point.kind}{v} does not fit: after event {point.seq} the "
                                f"{CHOICE_KINDS[point.kind]} choice is one of {opts}")
        self.taken.add((point.seq, point.kind))
        return point.options.index(v)

    def unused(self) -> list[Choice]:
        return [Choice(s, k, v) for (s, k), v in sorted(self.want.items()) if (s, k) not in self.taken]


# The engine's attributes that belong to the CPU running it, not to the machine.
PER_CPU = ("stack", "cur_pdev", "mo14_depth")


@dataclass(eq=False)
class Cpu:
    index: int
    ops: list[Op]
    next_op: int = 0                     # index into ops of the op to run next
    in_op: bool = False
    done: bool = False
    glet: greenlet | None = None
    # why it cannot run: a predicate that says when it can again, and what it waits for
    wait: Callable[[], bool] | None = None
    waiting_for: str = ""
    saved: dict[str, Any] = field(default_factory=dict)
    quiescent: int = 0                   # op ends passed (RCU quiescent states)

    def runnable(self) -> bool:
        return not self.done and (self.wait is None or self.wait())

    def next_op_index(self) -> int:
        return self.ops[self.next_op].index if self.next_op < len(self.ops) else 1 << 30


class Scheduler:
    """Runs the ops of an engine on its CPUs under a chooser.  The engine
    calls ``point()`` (through its recorder) after every shared event,
    ``wait_until()`` to spin, and reads ``preemptions``."""

    def __init__(self, engine: Engine, chooser: Chooser, ops: Sequence[Op], cpus: int) -> None:
        self.engine = engine
        self.chooser = chooser
        self.cpus = [Cpu(i, [op for op in ops if op.cpu == i]) for i in range(cpus)]
        self.current: Cpu | None = None
        self.next: Cpu | None = None
        self.preemptions = 0
        self.rcs: dict[int, int] = {}
        self.choices: list[Choice] = []      # every non-default choice taken, in order
        self._main: greenlet | None = None
        self._in_dma = False

    # --- running -------------------------------------------------------------

    def run(self) -> list[int]:
        """Every op to the end; their return codes in listed order."""
        self._main = getcurrent()
        for cpu in self.cpus:
            cpu.glet = greenlet(self._cpu_main, parent=self._main)
        self._boundary(first=True)
        while self.next is not None:
            cpu, self.next = self.next, None
            self._load(cpu)
            assert cpu.glet is not None
            switched = cpu.glet.switch(cpu)
            if isinstance(switched, BaseException):
                raise switched
        return [self.rcs[op.index] for op in sorted((op for c in self.cpus for op in c.ops),
                                                    key=lambda o: o.index)]

    def _cpu_main(self, cpu: Cpu) -> None:
        try:
            while cpu.next_op < len(cpu.ops):
                op = cpu.ops[cpu.next_op]
                cpu.in_op = True
                self.rcs[op.index] = self.engine.run_op(op)
                cpu.in_op = False
                cpu.next_op += 1
                cpu.quiescent += 1
                if cpu.next_op == len(cpu.ops):
                    break
                self._boundary()
            cpu.done = True
            self._save(cpu)
            self._boundary(leaving=True)
        except GreenletExit:
            raise
        except BaseException as exc:      # hand it to run(), on the main greenlet
            self.next = None
            assert self._main is not None
            self._main.switch(exc)

    def _save(self, cpu: Cpu) -> None:
        eng = self.engine
        cpu.saved = {name: getattr(eng, name) for name in PER_CPU}
        cpu.saved["rec_op"] = eng.rec.op

    def _load(self, cpu: Cpu) -> None:
        eng = self.engine
        if cpu.saved:
            for name in PER_CPU:
                setattr(eng, name, cpu.saved[name])
            eng.rec.op = cpu.saved["rec_op"]
        else:
            eng.stack, eng.cur_pdev, eng.mo14_depth = [], None, 0
        eng.rec.cpu = cpu.index
        self.current = cpu

    # --- points ----------------------------------------------------------------

    def point(self) -> None:
        """After a shared event of the running CPU."""
        if self._in_dma:
            return
        self._dma_point()
        cur = self.current
        assert cur is not None
        others = [c for c in self.cpus if c is not cur and c.runnable()]
        if not others:
            return
        # Default: the running CPU goes on (it is inside an op: run_op is on its stack).
        options = (cur.index,) + tuple(c.index for c in others)
        costs = (0,) + (1,) * len(others)
        pick = self._ask(Point(self.engine.rec.seq, "c", options, costs))
        if pick != 0:
            self.preemptions += 1
            self._switch(self.cpus[options[pick]])

    def _boundary(self, first: bool = False, leaving: bool = False) -> None:
        """At the end of an op (or before the first): free choice of the next CPU."""
        self._dma_point()
        cands = [c for c in self.cpus if c.runnable()]
        if not cands:
            if any(not c.done for c in self.cpus):
                raise Deadlock(self._deadlock_text())
            self.next = None
            return
        cands.sort(key=lambda c: (c.next_op_index() if not c.in_op else -1, c.index))
        options = tuple(c.index for c in cands)
        pick = self._ask(Point(self.engine.rec.seq, "c", options, (0,) * len(options)))
        chosen = self.cpus[options[pick]]
        if first or leaving:
            # before the first op: run() starts it; a CPU with no ops left
            # returns to run() by ending its greenlet
            self.next = chosen
        elif chosen is not self.current:
            self._switch(chosen)

    def _ask(self, point: Point) -> int:
        if len(point.options) == 1:
            return 0
        pick = self.chooser.choose(point)
        if pick:
            self.choices.append(Choice(point.seq, point.kind, point.options[pick]))
        return pick

    def _switch(self, cpu: Cpu) -> None:
        cur = self.current
        if cur is not None and not cur.done:
            self._save(cur)
        self.next = cpu
        self._to_main()

    def _to_main(self) -> None:
        assert self._main is not None
        self._main.switch()

    # --- waiting ---------------------------------------------------------------

    def wait_until(self, ready: Callable[[], bool], what: str) -> None:
        """The running CPU spins until ``ready()``: not schedulable until then;
        switching away is free."""
        cur = self.current
        assert cur is not None
        cur.wait, cur.waiting_for = ready, what
        try:
            while not ready():
                cands = [c for c in self.cpus if c is not cur and c.runnable()]
                if not cands:
                    raise Deadlock(self._deadlock_text())
                cands.sort(key=lambda c: (c.next_op_index() if not c.in_op else -1, c.index))
                options = tuple(c.index for c in cands)
                pick = self._ask(Point(self.engine.rec.seq, "c", options, (0,) * len(options)))
                self._switch(self.cpus[options[pick]])
        finally:
            cur.wait, cur.waiting_for = None, ""

    def _deadlock_text(self) -> str:
        stuck = [f"CPU {c.index} waits for {c.waiting_for}" for c in self.cpus if not c.done]
        return "deadlock: " + "; ".join(stuck)

    # --- DMA -------------------------------------------------------------------

    def _dma_point(self) -> None:
        """Devices may issue their DMA here: one question per DMA issued."""
        eng = self.engine
        while True:
            ready = eng.dma_ready()       # the engine leaves out the sources already issued
            if not ready:
                return
            options = (-1,) + tuple(ready)
            pick = self._ask(Point(eng.rec.seq, "d", options, (0,) * len(options)))
            if not pick:
                return
            src = options[pick]
            cpu, op = eng.rec.cpu, eng.rec.op
            self._in_dma = True
            eng.rec.cpu = -1
            try:
                eng.issue_dma(src)
            finally:
                self._in_dma = False
                eng.rec.cpu, eng.rec.op = cpu, op

    def cache_choice(self, kind: str, n: int) -> int:
        """Inside a DMA: which of n cached values (0 = none: memory / walk)."""
        return self._ask(Point(self.engine.rec.seq, kind, tuple(range(n)), (0,) * n))

    # --- what the explorer reads --------------------------------------------------

    def frames(self, cpu: Cpu) -> list[FrameType]:
        """The CPU's engine frames (tracer/engine/ code only: not the
        scheduler's, the recorder's or a chooser's), outermost first; empty
        when it is not inside an op."""
        if cpu is self.current:
            f: FrameType | None = sys._getframe(1)
        else:
            f = cpu.glet.gr_frame if cpu.glet is not None else None
        out: list[FrameType] = []
        while f is not None and f.f_code is not Scheduler._cpu_main.__code__:
            if f.f_code.co_filename.startswith(_ENGINE_DIR):
                out.append(f)
            f = f.f_back
        out.reverse()
        return out


_ENGINE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine") + os.sep
