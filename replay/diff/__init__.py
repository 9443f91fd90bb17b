"""Trace diff (DESIGN §7): hierarchical alignment of two traces, the report
(first divergence, per-operation differences, state difference at aligned
operation boundaries, hazard delta) and its text/JSON renderings.

Entry points:

* ``diff_files(path_a, path_b)`` / ``diff_traces(trace_a, trace_b)`` -- from
  files or open reader Traces (findings from the hazard analysers);
* ``diff_streams(Side(header, chunks), Side(...))`` -- the core, on any event
  stream (``Side.from_events(header, events)`` for a plain list);
* ``DiffReport.alignment`` -- the ``Alignment`` the side-by-side view follows:
  ``rows(start, stop)``, ``row_of(side, seq)``, ``regions``,
  ``next_region``/``prev_region``; hazard-delta positions via
  ``DiffReport.hazards`` / ``next_hazard`` / ``prev_hazard``.

replay.diff never imports the engine (tracer.engine): it diffs events alone.
"""

from .align import ARGS, CLASSES, ONLY_A, ONLY_B, SAME, Alignment, OpPair, Region, Row
from .report import (DiffInputError, DiffReport, HazardDelta, Side, StateDiff, diff_files, diff_streams,
                     diff_traces)
from .text import render_text

__all__ = [
    "ARGS", "CLASSES", "ONLY_A", "ONLY_B", "SAME", "Alignment", "OpPair", "Region", "Row",
    "DiffInputError", "DiffReport", "HazardDelta", "Side", "StateDiff", "diff_files", "diff_streams",
    "diff_traces", "render_text",
]
