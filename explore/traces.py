"""Counterexamples as ordinary traces.

A violation's schedule is re-recorded with ``tracer.record.record`` into a
trace whose header carries that schedule, exactly as ``vtdtrace record
SCENARIO --engine V --schedule S`` writes it, so ``view``, ``check`` and
``diff`` open it and ``record --schedule`` reproduces it byte for byte.
The file is written under a temporary name and renamed into place, so an
interrupted search never leaves half a counterexample under its final name.
"""

from __future__ import annotations

import os
import re

from tracer.record import record
from tracer.writer import TraceWriter

from .search import Problem, Violation

NAME_RE = re.compile(r"^explore-\d{3,}-[a-z0-9-]+\.vtdt$")


def counterexample_name(v: Violation) -> str:
    """``explore-NNN-KIND.vtdt``, NNN the violation's number (discovery order)."""
    return f"explore-{v.number:03d}-{v.identity.kind}.vtdt"


def earlier_counterexamples(directory: str) -> list[str]:
    """Files of an earlier explore in ``directory`` (sorted names)."""
    return sorted(n for n in os.listdir(directory) if NAME_RE.match(n))


def write_counterexample(problem: Problem, v: Violation, directory: str) -> str:
    """Record ``v``'s schedule into DIRECTORY/explore-NNN-KIND.vtdt; returns the file name."""
    name = counterexample_name(v)
    path = os.path.join(directory, name)
    part = os.path.join(directory, f".{name}.part")
    try:
        with TraceWriter(part, problem.header(v.schedule), force=True) as w:
            record(problem.platform, problem.variant, w, schedule=v.schedule)
        os.replace(part, path)
    except BaseException:
        if os.path.exists(part):
            os.unlink(part)
        raise
    return name
