"""Findings both traces have, with another extent: "changed", not "only in A"
plus "only in B".

``hazard_delta`` (hazard_match.py) matches a finding of A with one of B when they
have the same kind, severity, device, requester ID and step labels and start
in the same aligned operation pair.  Two engines often open the same window at
different steps -- legacy's stale-context runs UO3 -> UO5, direct's
MO7 -> MO9, for the same device in the same reassignment -- so the labels
differ and both would be reported as unmatched, one on each side, although
each trace has the window.  This pass pairs them up afterwards:

  an unmatched finding of A and one of B with the same kind, severity,
  device, requester ID and IOMMU, starting in the same aligned operation
  pair, are one *changed* finding; several on a key pair in order of
  start (the k-th of A with the k-th of B), the rest stay unmatched.

Severity is part of the key on purpose: a window that is benign in A and a
hazard in B is news about B and stays "only in B".  Findings outside any
aligned pair (pair None) are never paired.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .report import HazardDelta


@dataclass
class ChangedHazard:
    """One window both traces have, with other extents (or labels)."""

    a: HazardDelta       # of side "a"
    b: HazardDelta       # ... of side "b"

    @property
    def row(self) -> int | None:
        rows = [r for r in (self.a.row, self.b.row) if r is not None]
        return min(rows) if rows else None

    def to_json(self) -> dict[Any, Any]:
        return {"a": self.a.finding, "b": self.b.finding}


def _key(h: HazardDelta) -> tuple[Any, ...]:
    f = h.finding
    return (h.pair, str(f.get("kind")), str(f.get("severity")), str(f.get("device")), str(f.get("rid")),
            str(f.get("iommu")))


def _start(h: HazardDelta) -> int:
    s = h.finding.get("start")
    return s if type(s) is int else -1


def pair_changed(hazards: list[HazardDelta]) -> tuple[list[HazardDelta], list[ChangedHazard]]:
    """(still unmatched HazardDeltas in their order, [ChangedHazard] by row)."""
    by_key: dict[Any, Any] = {}
    for h in hazards:
        if h.pair is not None:
            by_key.setdefault(_key(h), {"a": [], "b": []})[h.side].append(h)
    paired: set[Any] = set()
    changed = []
    for sides in by_key.values():
        for ha, hb in zip(sorted(sides["a"], key=_start), sorted(sides["b"], key=_start)):
            changed.append(ChangedHazard(ha, hb))
            paired.update((id(ha), id(hb)))
    if not changed:
        return hazards, []
    changed.sort(key=lambda c: (c.row if c.row is not None else -1, _start(c.a), _start(c.b),
                                str(c.a.finding.get("kind")), str(c.a.finding.get("rid"))))
    return [h for h in hazards if id(h) not in paired], changed
