"""Trace diff (docs/CLI.md#diff-json): hierarchical alignment of two traces, the report
(first divergence, per-operation differences, state difference at aligned
operation boundaries, hazard delta) and its text/JSON renderings.

Entry points
------------
* ``diff_files(path_a, path_b, *, findings=True, progress=None)`` -- from
  files.  Raises ``DiffInputError`` (exit 2) for what is not a trace; a
  damaged trace is compared on its readable prefix (``report.exit_code`` 3).
  Findings come from the sidecar when cached there, else the hazard
  analysers run inside the diff's own pass (and are cached for next time).
* ``diff_traces(trace_a, trace_b, ...)`` -- from open reader Traces.
* ``diff_streams(Side(header, chunks), Side(...))`` -- the core, on any event
  stream; ``Side.from_events(header, events, findings=..., analysis=...)``
  for a plain list (a ListSink's).  ``progress(done, total)`` is called
  every ~16k events of A; raising from it aborts (a TUI's cancel).

For the side-by-side view (``report.alignment``, an ``Alignment``)
------------------------------------------------------------------------
* ``n_rows``; ``rows(start, stop) -> [Row]`` and ``row(i)``: the aligned row
  list.  ``Row(index, seq_a, seq_b, cls, fields, pair)``: ``seq_a``/``seq_b``
  are None on a gap row; ``cls`` is ``same`` / ``args`` / ``only-a`` /
  ``only-b``; ``fields`` names the differing fields of an ``args`` row
  (schema field names, ``label``, ``cpu``, ``args.NAME`` for one call
  argument).  Rows of identical operations are implicit, so this stays cheap
  at 10^6 rows; fetch only the visible window.
* ``row_of(side, seq)`` / ``nearest_row(side, seq)`` -- the row of event
  ``seq`` of side ``"a"``/``"b"`` (cursor synchronisation: move one side,
  look up the row, read the other side's seq from it; on a gap row keep the
  other cursor where it is).
* ``regions`` (``Region(index, pair, row_start, row_end, seq_a, seq_b,
  counts, path)``, ``classes``), ``next_region(row)``, ``prev_region(row)``,
  ``region_at(row)`` -- the ``}``/``{`` keys.
* ``pairs`` (``OpPair``: op ids, op-begin keys, seq ranges, status, ``n_ops``
  for a run of identical operations) and ``pair_at_row(row)`` /
  ``pair_of_seq(side, seq)``.

On the report: ``hazards`` (``HazardDelta(side, finding, row, pair)`` sorted
by row), ``next_hazard(row)`` / ``prev_hazard(row)`` -- the ``]``/``[`` keys;
``state_diff`` (``StateDiff`` with ``row``, ``seq_a``, ``seq_b``,
``changes``); ``first_divergence``; ``to_json()``; ``render_text(report)``.

Modules, one job each: ``inputs`` (Side, the chunk sources), ``report``
(the result types), ``header`` (header difference), ``state_tracker``
(both states and their decoded difference), ``state_delta`` (the same at
any two steps), ``hazard_match`` and ``hazard_pairs`` (the hazard delta),
``align`` (the alignment), ``streaming`` (the pass), ``sidecar_io`` (cache
plumbing), ``files`` (opening traces), ``text`` (renderings).

replay.diff never imports the engine (tracer.engine): it diffs events alone.
"""

from .align import ARGS, CLASSES, ONLY_A, ONLY_B, SAME, Alignment, OpPair, Region, Row
from .files import DiffInputError, diff_files, diff_traces
from .inputs import Side
from .report import DiffReport, HazardDelta, StateDiff
from .streaming import diff_streams
from .text import render_text

__all__ = [
    "ARGS", "CLASSES", "ONLY_A", "ONLY_B", "SAME", "Alignment", "OpPair", "Region", "Row",
    "DiffInputError", "DiffReport", "HazardDelta", "Side", "StateDiff", "diff_files", "diff_streams",
    "diff_traces", "render_text",
]
