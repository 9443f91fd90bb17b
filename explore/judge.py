"""Judging a run: its events go through the analysers of ``vtdtrace check``
and its hazard findings are compared with the baseline's.

One ``replay.hazards.Analysis`` per run is fed the run's events as the engine
emits them.  Its state (``Analysis.st``) is the replayed state the state key
reads (explore/key.py): one fold serves both.  Events are buffered and fed in
batches, when the key needs the state or the run ends, so the fold runs once
per batch rather than once per event.  The header the analysers see is the
one ``record`` would write (tracer.record.make_header), round-tripped through
msgpack the way a file read gives it back.

A finding's *identity* is (kind, devices, ops): the device and requester ID
it names, and the ops (1-based, as in the events; 0 = boot) of the events
that open and close its window.  A *violation* is a hazard-severity finding
of a run whose identity is not among the baseline's hazard identities (the
baseline is the run-to-completion schedule of the same scenario).  Start and
end seqs are not part of it: an interleaving that moves a window by a few
events has not made anything worse.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from replay.hazards import HAZARD, Analysis, Finding
from replay.state import ReplayState
from tracer.schema import I_OP


@dataclass(frozen=True, order=True)
class Identity:
    """What makes two findings the same violation."""

    kind: str
    devices: tuple[str, ...]
    ops: tuple[int, ...]


class JudgeError(RuntimeError):
    """The analysers could not read a run's own events (a bug, not bad input)."""


def file_header(header: dict[str, Any]) -> dict[str, Any]:
    """``header`` as a reader would return it from a trace file."""
    data: bytes = msgpack.packb(header, use_bin_type=True)
    back: dict[str, Any] = msgpack.unpackb(data, raw=False)
    return back


class RunJudge:
    """Follows one run: ``on_event`` for every event, ``state()`` whenever
    the replayed state is needed, ``finish()`` at the end."""

    __slots__ = ("analysis", "pending", "op_of")

    def __init__(self, header: dict[str, Any]) -> None:
        self.analysis = Analysis(header)
        self.pending: list[Any] = []
        self.op_of: list[int] = [0]          # op_of[seq]: the op of event seq

    def on_event(self, ev: list[Any]) -> None:
        self.pending.append(ev)
        self.op_of.append(ev[I_OP])

    def _flush(self) -> None:
        if self.pending:
            self.analysis.feed(self.pending)
            self.pending = []
            if self.analysis.bad is not None:
                raise JudgeError(f"the analysers cannot read the run's events: {self.analysis.bad[1]}")

    def state(self) -> ReplayState:
        """The replayed state after every event so far."""
        self._flush()
        st: ReplayState = self.analysis.st      # type: ignore[assignment]  # Analysis types it as its tables
        return st

    def finish(self) -> list[Finding]:
        self._flush()
        return self.analysis.finish()

    def identity(self, f: Finding) -> Identity:
        devices = tuple(sorted({d for d in (f.device, f.rid) if d is not None}))
        ops = {self.op_of[f.start]} if 0 < f.start < len(self.op_of) else set()
        if f.end is not None and 0 < f.end < len(self.op_of):
            ops.add(self.op_of[f.end])
        return Identity(f.kind, devices, tuple(sorted(ops)))


def hazards(judge: RunJudge, findings: Iterable[Finding]) -> dict[Identity, Finding]:
    """The run's hazard findings by identity (the first of each, in check order)."""
    out: dict[Identity, Finding] = {}
    for f in findings:
        if f.severity == HAZARD:
            out.setdefault(judge.identity(f), f)
    return out
