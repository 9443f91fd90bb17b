"""Cache plumbing of the diff: what it reads from and writes to the traces'
sidecars (replay/sidecar.py).

The trace stays the authority: a sidecar only saves work.  The diff asks a
trace's sidecar for two things and stores one:

* its hazard findings (``cached_findings``): as the positional rows the
  sidecar holds (``FindingRows``, matched without building objects) when
  they are in the layout this build reads, else as Finding objects;
* A's checkpoints (``cached_session``): a ReplaySession whose ``state_at``
  lets the pass skip folding A over identical stretches -- the diff never
  builds checkpoints, it folds instead;
* findings the pass computed inline go back into the sidecar
  (``store_findings``) for the next diff, check or view.

A sidecar that is absent, untrusted for the trace as it is now, damaged,
unreadable or of another build is a miss: replay.hazards.analyse and
replay.session handle their sidecar's errors (SidecarError, OSError) and
answer None / store nothing, so a cache problem never changes an answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from replay import hazards
from replay.hazards.analyse import cached_finding_rows
from replay.hazards.analyse import cached_findings as _hazards_cached_findings
from replay.hazards.analyse import store_findings as _hazards_store_findings
from replay.hazards.findings import FINDINGS_FORMAT, Finding
from replay.reader import StopReport, Trace
from replay.session import ReplaySession

from .hazard_match import ROW_FIELDS, FindingRows


def _cached_rows(path: Path | str) -> FindingRows | None:
    """The sidecar's finding rows when they are in the layout ROW_FIELDS
    reads, else None."""
    if FINDINGS_FORMAT != 1:
        return None
    rows = cached_finding_rows(path)
    if rows is None:
        return None
    if rows and (type(rows[0]) is not list or len(rows[0]) != len(ROW_FIELDS)):
        return None
    return FindingRows(rows)


def cached_findings(path: Path | str, trace: Trace) -> FindingRows | list[Finding] | None:
    """The findings of a trace from its sidecar, when a fresh entry is there
    (None otherwise)."""
    rows = _cached_rows(path)
    if rows is not None:
        return rows
    got = _hazards_cached_findings(path, trace)
    return None if got is None else got.findings


def store_findings(path: Path | str, trace: Trace, analysis: hazards.Analysis, findings: list[Finding],
                   binding: tuple[Any, Any] | None = None) -> None:
    """Put findings computed inline into the trace's sidecar (best effort), as
    findings_for_trace(path, sidecar=True) would have.  ``binding``: the
    trace's (identity, content) from before the diff read it
    (replay.sidecar), which lets an untrusted sidecar be bound to it."""
    stop = trace.stop
    if analysis.bad is not None and stop is None:
        stop = StopReport("corrupt", 0, 0, analysis.seq, analysis.bad[1])
    identity, content = binding if binding is not None else (None, None)
    _hazards_store_findings(path, hazards.TraceFindings(path, trace.header, findings, analysis.seq, stop is None,
                                                        stop), identity, content)


def cached_session(path: Path | str) -> ReplaySession | None:
    """A ReplaySession of the trace when its sidecar already holds fresh
    checkpoints (opening it is then O(1)); None otherwise.  The sidecar is
    trusted only for the file as it is now, so a path the diff has just
    opened as a trace opens as one here."""
    return ReplaySession.open_cached(path)
