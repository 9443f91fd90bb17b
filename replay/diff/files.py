"""The file layer of the diff: open two traces, find their findings, run
the streaming pass.

``diff_files(path_a, path_b)`` opens both files (``DiffInputError`` for a
path that is not a trace: exit 2) and ``diff_traces`` diffs two open reader
Traces -- their readable prefixes when damaged (``report.exit_code`` 3).

Findings come from a trace's sidecar when it is trusted for the trace as it
is now and holds them (sidecar_io.py); otherwise the hazard analysers run
inside the diff's own pass (an ``Analysis`` fed the events the pass reads
anyway) and their result is stored in the sidecar for next time, bound to
the trace's identity and content as they were *before* the diff read it.
With findings from the sidecar on both sides, A's checkpoints (when cached)
spare the pass folding A.

When one trace records real code (engine ``xen-c``) and the other a model,
the pass compares their projections (projection.py): read once here, each
trace feeds its hazard analysis whole and the diff its projection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replay import hazards
from replay.reader import NotATrace, Trace, open_trace
from replay.sidecar import content_of, trace_identity

from .hazard_match import FindingRows, finding_dict, hazard_delta, row_json
from .hazard_pairs import pair_changed
from .inputs import Side, TraceChunks
from .projection import Projector, implementations_differ, is_real_code, projected_findings
from .report import DiffReport
from .sidecar_io import cached_findings, cached_session, store_findings
from .streaming import diff_streams


class DiffInputError(Exception):
    """A path that is not a trace (CLI exit 2)."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def diff_traces(trace_a: Trace, trace_b: Trace, *, findings: bool = True, names: tuple[str, str] | None = None,
                paths: tuple[Path | str, Path | str] | None = None, bindings: tuple[Any, Any] | None = None,
                projection: bool | None = None, **kw: Any) -> DiffReport:
    """Diff two open reader Traces (their readable prefixes when damaged).

    Findings: from the sidecar when it is trusted for the trace as it is now
    and holds them (``paths`` given), else the hazard analysers run inline
    in the same pass (and, with ``paths``, their result is cached for next
    time; ``bindings``: each trace's replay.sidecar (identity, content) from
    before it was read, see store_findings).  ``projection``: compare the
    projections (projection.py) -- None: when one trace is real code and the
    other a model."""
    na, nb = names or (None, None)
    pa, pb = paths or (None, None)
    if projection is None:
        projection = implementations_differ(trace_a.header, trace_b.header)
    if projection:
        return _diff_projections((trace_a, trace_b), (na, nb), (pa, pb), bindings, findings, **kw)
    sides = []
    for trace, name, path in ((trace_a, na, pa), (trace_b, nb, pb)):
        fs = analysis = None
        if findings:
            fs = cached_findings(path, trace) if path is not None else None
            if fs is None:
                analysis = hazards.Analysis(trace.header)
        sides.append(Side.from_trace(trace, name=name, findings=fs, analysis=analysis))
    session = None
    if pa is not None and sides[0].analysis is None and sides[1].analysis is None:
        session = cached_session(pa)
        if session is not None and (session.count, session.stop is None) != (trace_a.count, trace_a.stop is None):
            # The checkpoints describe another readable part than the one
            # this diff reads: fold instead.
            session.close()
            session = None
        if session is not None:
            sides[0].state_at = session.state_at
    try:
        report = diff_streams(*sides, **kw)
    finally:
        if session is not None:
            session.close()
        for side in sides:
            if isinstance(side.chunks, TraceChunks):
                side.chunks.close()
    if paths is not None:
        for side, path, binding in zip(sides, paths, bindings or (None, None)):
            if side.analysis is not None:
                store_findings(path, side.trace, side.analysis, side.findings, binding)
    return report


def diff_files(path_a: Path | str, path_b: Path | str, *, findings: bool = True, **kw: Any) -> DiffReport:
    """Open both files and diff them.  Raises DiffInputError for a path that
    is not a trace (exit 2); a damaged trace is diffed on its readable part
    (report.damaged, exit 3)."""
    # Each trace's identity before it is read, and its content as the CRC
    # pass of the (verifying) open finds it: what a findings entry stored
    # for next time is bound to.
    ida = trace_identity(path_a)
    try:
        ta = open_trace(path_a)
    except NotATrace as exc:
        raise DiffInputError(path_a, exc.message) from None
    try:
        idb = trace_identity(path_b)
        try:
            tb = open_trace(path_b)
        except NotATrace as exc:
            raise DiffInputError(path_b, exc.message) from None
        with tb:
            bindings = ((ida, content_of(ta)), (idb, content_of(tb)))
            return diff_traces(ta, tb, findings=findings, names=(str(path_a), str(path_b)),
                               paths=(path_a, path_b), bindings=bindings, **kw)
    finally:
        ta.close()


def _diff_projections(traces: tuple[Trace, Trace], names: tuple[str | None, str | None],
                      paths: tuple[Path | str | None, Path | str | None], bindings: tuple[Any, Any] | None,
                      findings: bool, **kw: Any) -> DiffReport:
    """The diff of two traces' projections; findings of the whole traces."""
    sides: list[Side] = []
    projectors: list[Projector] = []
    found: list[list[dict[str, Any]] | None] = []
    notes: list[str] = []
    for trace, name, path, binding in zip(traces, names, paths, bindings or (None, None)):
        fs = cached_findings(path, trace) if findings and path is not None else None
        analysis = hazards.Analysis(trace.header) if findings and fs is None else None
        projector = Projector(real_code=is_real_code(trace.header))
        kept: list[Any] = []
        chunks = TraceChunks(trace)
        try:
            for i in range(chunks.count):
                evs = chunks.decode(i)
                if evs is None:
                    break
                if analysis is not None:
                    analysis.feed(evs)
                kept.extend(projector.feed(evs))
        finally:
            chunks.close()
        if analysis is not None:
            if analysis.bad is not None:
                notes.append(f"{'AB'[len(sides)]}'s hazard analysis stopped: {analysis.bad[1]}")
            fs = analysis.finish()
            if path is not None:
                store_findings(path, trace, analysis, fs, binding)
        sides.append(Side.from_events(trace.header, kept, name=str(trace.path) if name is None else name,
                                      trace=trace))
        projectors.append(projector)
        found.append(None if fs is None else
                     [row_json(f) for f in fs] if type(fs) is FindingRows else [finding_dict(f) for f in fs])
    report = diff_streams(*sides, **kw)
    report.projection = {"a": projectors[0].counts.to_json(), "b": projectors[1].counts.to_json()}
    report.seq_maps = (projectors[0].seq_map, projectors[1].seq_map)
    if notes:
        report.state_note = "; ".join(([report.state_note] if report.state_note else []) + notes)
    _trace_seqs(report)
    fa, fb = found
    if fa is not None and fb is not None:
        # matched on the projections' numbering, shown as check reports them
        hz, changed = pair_changed(hazard_delta(report.alignment, projected_findings(fa, projectors[0]),
                                                projected_findings(fb, projectors[1])))
        for h in [*hz, *(x for c in changed for x in (c.a, c.b))]:
            h.finding = (fa if h.side == "a" else fb)[h.finding["detail"]]
        report.hazards, report.changed_hazards, report.hazards_available = hz, changed, True
    return report


def _trace_seqs(report: DiffReport) -> None:
    """The first divergence and the state boundaries in trace seqs (the pass
    numbered the kept events); the rows are translated where they are shown
    (text.py, DiffReport.trace_seq)."""
    ts = report.trace_seq
    f = report.first_divergence
    if f is not None:
        f["seq_a"], f["seq_b"] = ts("a", f["seq_a"]), ts("b", f["seq_b"])
        for c in f.get("context") or ():
            c["seq_a"], c["seq_b"] = ts("a", c.get("seq_a")), ts("b", c.get("seq_b"))
        for side in ("a", "b"):
            e = f.get(f"event_{side}")
            if isinstance(e, dict) and "seq" in e:
                e["seq"] = ts(side, e["seq"])
    for sd in report.state_diff:
        sd.seq_a, sd.seq_b = ts("a", sd.seq_a), ts("b", sd.seq_b)
