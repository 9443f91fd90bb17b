"""Hazard analysers (docs/MODEL.md#hazards, docs/HAZARDS.md) over the replayed state.

    from replay.hazards import findings_for_trace, findings_for_events, FindingIndex

``findings_for_trace(path)`` -> TraceFindings(findings, events, complete, stop,
index); ``findings_for_events(header, events)`` for an in-memory event list;
``Analysis(header)`` with ``feed(events)`` / ``finish()`` for incremental use.
Findings are ``Finding`` records (``to_json()`` gives the docs/CLI.md#check-json object);
``FindingIndex`` answers "open at step n" and next/previous queries.

One module per analyser family: rmrr (rmrr-disconnect), mismatch
(did-pt-mismatch), stale (stale-context, stale-iotlb, foreign-iotlb), did
(did-leak, did-dangling, did-reuse, did-incoherent), locks (lock-order), devtlb
(stale-devtlb), owner (owner-mismatch).  docs/HAZARDS.md
describes every kind, its Xen code window and its severity.
"""

from .analyse import ANALYSERS, Analysis, TraceFindings, findings_for_events, findings_for_trace
from .findings import (
    BENIGN,
    HAZARD,
    KINDS,
    SEVERITIES,
    SEVERITY_RANK,
    WARNING,
    Finding,
    FindingIndex,
    counts,
    decode_findings,
    encode_findings,
    sort_findings,
)

__all__ = [
    "ANALYSERS", "Analysis", "TraceFindings", "findings_for_events", "findings_for_trace",
    "BENIGN", "HAZARD", "KINDS", "SEVERITIES", "SEVERITY_RANK", "WARNING", "Finding", "FindingIndex",
    "counts", "decode_findings", "encode_findings", "sort_findings",
]
