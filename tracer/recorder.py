"""Where the engine's events go: the recorder numbers them and hands them to a
sink (the trace writer, a list, or nothing).  An optional observer sees every
event right after it is emitted -- the replay property tests use it to take
the engine's live snapshot after each event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .schema import FUNC_CODE

if TYPE_CHECKING:
    from .sched import Scheduler

# One event as the engine emits it: [kind, seq, cpu, op, func, label, *fields].
Event = list[Any]


class Sink(Protocol):
    def append(self, event: Event) -> None: ...


class NullSink:
    """Drops events (used to measure the engine without I/O)."""

    def append(self, event: Event) -> None:
        pass


class ListSink:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def append(self, event: Event) -> None:
        self.events.append(event)


class Recorder:
    def __init__(self, sink: Sink, observer: Callable[[Event], None] | None = None) -> None:
        self.sink = sink
        self.observer = observer
        self.seq = 0
        self.cpu = 0
        self.op = 0
        # With several actors (tracer/sched.py) every shared event is a
        # scheduling point: the scheduler may run another CPU before emit returns.
        self.sched: Scheduler | None = None
        self.shared: frozenset[int] = frozenset()
        # the op and step label of the last event (a [[dma]] source's `at`
        # is matched against them at a scheduling point)
        self.last_op = 0
        self.last_label = ""

    def emit(self, kind: int, func: str, label: str, *fields: object) -> None:
        self.seq += 1
        ev = [kind, self.seq, self.cpu, self.op, FUNC_CODE[func], label, *fields]
        self.sink.append(ev)
        self.last_op, self.last_label = self.op, label
        if self.observer is not None:
            self.observer(ev)
        if self.sched is not None and kind in self.shared:
            self.sched.point()
