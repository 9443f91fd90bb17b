"""Fidelity check as a library call: do a model's trace and a real-code trace
of the same scenario store, allocate and flush the same?

Both traces are projected the way ``vtdtrace diff`` projects a real-code
trace against a model (replay/diff/projection.py, which says what is kept
and which three recording differences are normalised) and the projections
are compared event by event.  ``vtdtrace diff MODEL REAL`` is the same
comparison with the diff's report; this module serves the tests and the
benchmark, which want the first difference as a value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from replay.diff.projection import Normalised, project
from tracer import schema as S

Event = list[Any]


@dataclass
class Comparison:
    a: list[Event]          # projected events of A: [kind, op, *fields] (no seq/cpu/func/label)
    b: list[Event]
    first_difference: int | None   # index into both projections, None when equal
    normalised: tuple[Normalised, Normalised]

    @property
    def equal(self) -> bool:
        return self.first_difference is None

    def describe(self, names: tuple[str, str] = ("A", "B"), context: int = 3) -> list[str]:
        if self.first_difference is None:
            return [f"{len(self.a)} projected events: the same"]
        i = self.first_difference
        out = [f"projections differ at projected event {i + 1} "
               f"({len(self.a)} in {names[0]}, {len(self.b)} in {names[1]}):"]
        for j in range(max(0, i - context), i):
            out.append(f"  = {_fmt(self.a[j])}")
        for name, side in zip(names, (self.a, self.b)):
            out.append(f"  {name}: {_fmt(side[i]) if i < len(side) else '(end)'}")
        return out


def _fmt(ev: Event) -> str:
    kind = S.KINDS[ev[0]]
    return f"op {ev[1]} {kind.name} " + " ".join(f"{f}={_val(v)}" for f, v in zip(kind.fields, ev[2:]))


def _val(v: object) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0xFFFF:
        return f"{v:#x}"
    return str(v)


def _short(events: list[Event]) -> list[Event]:
    return [[ev[S.I_KIND], ev[S.I_OP], *ev[S.F0:]] for ev in events]


def compare(a_events: Sequence[Sequence[Any]], b_events: Sequence[Sequence[Any]]) -> Comparison:
    """A model's events (A) against real code's (B)."""
    pa, na = project(list(map(list, a_events)))
    pb, nb = project(list(map(list, b_events)), real_code=True)
    ca, cb = _short(pa), _short(pb)
    first = None
    for i in range(max(len(ca), len(cb))):
        if i >= len(ca) or i >= len(cb) or ca[i] != cb[i]:
            first = i
            break
    return Comparison(ca, cb, first, (na, nb))
