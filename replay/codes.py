"""One translator from a trace's kind and function codes to this build's.

A trace carries its own catalogue (tracer/schema.py's ``schema_dict()`` in the
header), so a trace written by another build may number kinds and functions
differently.  Everything in replay/ dispatches on this build's codes, so every
consumer that reads events of such a trace (the fold, the analysers, the diff)
rewrites them through the function below, and only through it.

Rules:

* a kind the trace's catalogue names and this build knows becomes this build's
  code; a kind unknown here becomes ``len(KINDS)``, a code no dispatch table
  has, so the fold and the analysers skip it;
* a function this build knows becomes its code; one it does not becomes a code
  past ``FUNCS`` (rendered as the bare number), distinct per name;
* the rest of the event is untouched: positions of known fields do not move
  between catalogues (a newer minor version only appends).

Events reach the translator after decoding has checked the container rules
against the trace's own catalogue (replay/validate.py ``check_seq``: every event
an array, kind and func codes within the trace's tables).  Only the type of a
code may still be wrong there (``True`` or ``2.0`` compare equal to a code): such
a code is left as it is, so the fold, which checks that codes are ints, reports
the event as damaged instead of reading it as another kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from tracer.schema import FUNC_CODE, FUNCS, I_FUNC, I_KIND, KINDS

Event = list[Any]
Translate = Callable[[Iterable[Sequence[Any]]], list[Event]]

# The code a kind unknown to this build gets: no dispatch table has it.
UNKNOWN_KIND = len(KINDS)


class _Schema(Protocol):
    @property
    def is_current(self) -> bool: ...
    @property
    def to_current(self) -> tuple[int, ...]: ...
    @property
    def funcs(self) -> tuple[str, ...]: ...


def event_translator(schema: _Schema | None) -> Translate | None:
    """A function rewriting a chunk's events to this build's kind and function
    codes, or None when the trace uses them already (the common case, so
    callers skip the copy).  ``schema`` is the trace's
    ``replay.reader.TraceSchema``; None means "this build's"."""
    if schema is None or schema.is_current:
        return None
    kmap = [c if c >= 0 else UNKNOWN_KIND for c in schema.to_current]
    fmap = [FUNC_CODE.get(name, len(FUNCS) + i) for i, name in enumerate(schema.funcs)]

    def translate(evs: Iterable[Sequence[Any]]) -> list[Event]:
        out = []
        for ev in evs:
            ev = list(ev)
            k, f = ev[I_KIND], ev[I_FUNC]
            if type(k) is int:
                ev[I_KIND] = kmap[k]
            if type(f) is int:
                ev[I_FUNC] = fmap[f]
            out.append(ev)
        return out
    return translate
