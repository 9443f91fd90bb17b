"""The diff's input adapters: one trace to compare as a ``Side``.

The streaming pass (streaming.py) reads each trace as a header and a stream
of event chunks.  A ``Side`` bundles them with what the pass may use
besides: the trace's catalogue (for presenting its events), its findings
(already computed) or a hazard ``Analysis`` to feed inline, the reader
Trace that reports where a damaged trace stops, and a ``state_at`` that
lets the pass skip folding A (checkpoints of a cached ReplaySession).

Two chunk sources exist.  A plain iterable of event lists (``Side.from_events``
batches a flat list, such as a ListSink's, into ``CHUNK``-event lists), and
``TraceChunks``, the chunks of an open reader Trace by index: it decodes a
chunk on request (every event checked against the catalogue by the reader,
then rewritten to this build's codes by replay.codes) and can tell whether
a chunk's payload is byte-identical to a chunk of the other trace, so that
the lockstep lane decodes such a chunk once for both.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from replay.codes import Event, event_translator
from replay.reader import CHUNK_HEADER, Trace
from replay.state import ReplayState

from .report import jsonable

# Events per chunk when a flat event list is batched.
CHUNK = 1024


class Side:
    """One trace to compare: its header and its events as a stream of chunks
    (lists of event arrays in this build's codes: TraceChunks translates a
    trace written with another catalogue).  ``trace`` (a reader Trace)
    supplies the stop report after the pass.  Hazard findings come from ``findings`` (already
    computed, e.g. from the sidecar) or from ``analysis`` (a
    ``replay.hazards.Analysis(header)`` the pass feeds with the events it
    reads anyway, and whose folded state it uses); with neither, the hazard
    delta is not available."""

    def __init__(self, header: dict[str, Any] | None, chunks: Iterable[list[Event]] | TraceChunks, *,
                 name: str = "A", findings: Any = None, analysis: Any = None, trace: Any = None,
                 state_at: Callable[[int], ReplayState] | None = None) -> None:
        self.header = header if isinstance(header, dict) else {}
        self.chunks = chunks
        self.name = name
        self.findings = findings    # a list of findings (dicts or Finding objects), or None
        self.analysis = analysis    # or a replay.hazards.Analysis to run inline over the events
        self.trace = trace
        self.state_at = state_at    # optional n -> ReplayState (a copy): lets A skip its fold
        self.count = 0          # events seen by the pass

    @classmethod
    def from_events(cls, header: dict[str, Any] | None, events: Iterable[Event], **kw: Any) -> Side:
        """From a flat event iterable (a ListSink's list, a generator)."""
        return cls(header, batched(events), **kw)

    @classmethod
    def from_trace(cls, trace: Trace, *, name: str | None = None, findings: Any = None, analysis: Any = None) -> Side:
        """From an open reader Trace (replay.reader.open_trace)."""
        return cls(trace.header, TraceChunks(trace), name=str(trace.path) if name is None else name,
                   findings=findings, analysis=analysis, trace=trace)

    def info(self) -> dict[Any, Any]:
        h = self.header
        eng = h["engine"] if isinstance(h.get("engine"), dict) else {}
        scen = h["scenario"] if isinstance(h.get("scenario"), dict) else {}
        out: dict[str, Any] = {
            "trace": self.name, "engine": jsonable(eng.get("name")), "cx16": jsonable(eng.get("cx16")),
            "scenario": jsonable(scen.get("name")), "events": self.count, "complete": True, "stop": None}
        if self.trace is not None:
            out["events"] = self.trace.count
            out["complete"] = self.trace.complete
            out["stop"] = self.trace.stop.to_json() if self.trace.stop else None
        return out


class TraceChunks:
    """The chunks of an open reader Trace by index (the EventStream source):
    ``decode(i)`` the events (in this build's codes), ``same_bytes(i, other,
    j)`` whether chunk i's payload is byte-identical to chunk j of another
    source's trace -- then one decoded list serves both."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.translate = event_translator(trace.schema)
        self._chunks = trace.chunks
        self._fd: int | None = None
        try:
            self._fd = os.open(trace.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            # The file was removed or made unreadable after the reader opened
            # it (the reader keeps its own descriptor): chunks are decoded,
            # never compared byte-wise.
            self._fd = None

    @property
    def count(self) -> int:
        return len(self.trace.chunks)

    def decode(self, i: int) -> list[Any] | None:
        """Chunk i's events (event lists, the reader's default), in this
        build's codes; None past the readable part."""
        evs: list[Any] | None = next(self.trace.iter_chunks(i), None)
        if evs is not None and self.translate is not None:
            evs = self.translate(evs)
        return evs

    def _head(self, fd: int, i: int) -> tuple[int, int, int, int, int] | None:
        off = self._chunks[i][0]
        head = os.pread(fd, CHUNK_HEADER.size, off)
        if len(head) != CHUNK_HEADER.size:
            return None
        _sync, _tag, plen, count, first, pcrc, _hcrc = CHUNK_HEADER.unpack(head)
        return off + CHUNK_HEADER.size, plen, count, first, pcrc

    def same_bytes(self, i: int, other: TraceChunks, j: int) -> bool:
        fa, fb = self._fd, other._fd
        if fa is None or fb is None or self.translate or other.translate:
            return False
        ha, hb = self._head(fa, i), other._head(fb, j)
        if ha is None or hb is None or ha[1:] != hb[1:]:
            return False
        pa = os.pread(fa, ha[1], ha[0])
        pb = os.pread(fb, hb[1], hb[0])
        return len(pa) == ha[1] and pa == pb

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def batched(events: Iterable[Event]) -> Iterator[list[Event]]:
    if isinstance(events, list):
        for i in range(0, len(events), CHUNK):
            yield events[i:i + CHUNK]
        return
    buf: list[Event] = []
    for ev in events:
        buf.append(ev)
        if len(buf) >= CHUNK:
            yield buf
            buf = []
    if buf:
        yield buf




