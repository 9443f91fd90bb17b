"""What two *implementations* are compared on: the hardware's view of a trace.

A trace of the Python model and a trace of the real C (engine ``xen-c``,
recorded from a Xen tree) of the same scenario get there by different
means.  The model records every call, lock and step label of the commit it
transliterates; the real code is observed through stand-ins, and its calls,
locks and page-table allocations are those of *its* Xen version (4.17
allocates no boot quarantine tables and only the page-table levels the units
need; 4.19 takes ``d->pci_lock``).  Comparing those event for event would
report the version, not a fidelity problem.  So when exactly one of the two
traces is real code, ``vtdtrace diff`` compares their **projections**:

What is kept
------------
Every event except those that are each implementation's own way of getting
there.  **Left out** (``LEFT_OUT``): ``call`` and ``return``, ``lock``,
``unlock`` and ``lock-wait``, ``pt-alloc`` and ``pt-free`` (which page-table
levels exist when is the Xen version's choice), ``log`` (printk text), and
``rollback-begin``/``rollback-end`` (the model's brackets around its own
error-path steps; the stores and flushes a rollback makes are kept).
**Kept**: root-entry and context-entry stores with their values and method,
cache write-backs, DID bookkeeping (``did-map``, ``did-bitmap``,
``pseudo-domid``) and the units' domain bitmaps, flushes with their
parameters and return codes, ownership moves, identity maps, translation
enables, injected faults, engine limits (where the model gave up), DMA, the operations with
their return codes, and the domains and devices that come and go -- a kind a
newer catalogue adds is kept too, so nothing new is hidden by default.

Each kept event loses its function and step label -- the two sides name
their steps differently (MO7 / a line of the C), which is not a difference
in behaviour -- and is numbered by its place in the projection for the
alignment, which needs consecutive numbers; ``seq_map`` leads back to its
seq in the trace, and the report shows trace seqs (DiffReport.trace_seq).
``check`` still analyses each trace whole, and the hazard delta compares
those findings.

What is normalised
------------------
Exactly the differences that come from *recording* real code rather than
from what it does:

1. **Root entries.**  The C sets a root entry's context-table pointer and
   its present bit with two 64-bit stores; the model records one event.
   On the real code's side only, a store of the pointer into a non-present
   entry followed at once (nothing kept between) by the store that sets the
   present bit of the same entry and changes nothing else becomes one event:
   the first one's old value, the second one's new value.
2. **Flush position.**  The model records a flush inside ``register_lock``;
   the real code's flush is seen by the wrapper around the tree's flush
   function, after the lock is dropped.  Locks are not kept, so the flush
   keeps its place among the stores; the count says how many flushes were
   recorded after the lock.
3. **Unchanged DID stores.**  A store of the value already there is an
   event in the model (``did-map ... old=dom0 new=dom0``) but cannot be
   seen through a shadow copy of the real ``domid_map[]``; likewise a
   ``set_bit`` of a DID bit already set.  DID events that change nothing
   are dropped on both sides.

Machine addresses need no normalisation: the model's allocator and the real
code's stand-in allocator hand out pages by the same rule
(tracer.platform.IOMMU_TABLES_BASE), so the same table has the same address.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tracer import schema as S

from ..codes import Event

# The engine name of a real-code trace (xenc.record).
REAL_CODE_ENGINE = "xen-c"

LEFT_OUT = frozenset({S.K_CALL, S.K_RETURN, S.K_LOCK, S.K_UNLOCK, S.K_LOCK_WAIT, S.K_PT_ALLOC, S.K_PT_FREE,
                      S.K_LOG, S.K_ROLLBACK_BEGIN, S.K_ROLLBACK_END})
FLUSH_KINDS = frozenset({S.K_FLUSH_CONTEXT, S.K_FLUSH_IOTLB, S.K_FLUSH_WRITE_BUFFER, S.K_FLUSH_DEV_IOTLB})
NO_FUNC = S.FUNC_CODE[""]


def engine_name(header: object) -> object:
    eng = header.get("engine") if isinstance(header, dict) else None
    return eng.get("name") if isinstance(eng, dict) else None


def is_real_code(header: object) -> bool:
    return engine_name(header) == REAL_CODE_ENGINE


def implementations_differ(header_a: object, header_b: object) -> bool:
    """One trace records real code and the other a model: compare projections."""
    return is_real_code(header_a) != is_real_code(header_b)


@dataclass
class Normalised:
    """How often each normalisation applied to one trace (module docstring)."""
    root_stores_merged: int = 0          # (1) stores folded into the previous one
    flushes_after_lock: int = 0          # (2) flushes recorded after register_lock was dropped
    unchanged_did_stores: int = 0        # (3) DID events that changed nothing, dropped
    events: int = 0                      # events read
    kept: int = 0                        # events in the projection

    def to_json(self) -> dict[str, int]:
        return {"root_stores_merged": self.root_stores_merged, "flushes_after_lock": self.flushes_after_lock,
                "unchanged_did_stores": self.unchanged_did_stores, "events": self.events, "kept": self.kept}


@dataclass
class Projector:
    """Projects one trace's events chunk by chunk (``feed`` returns the kept
    events of a chunk), in this build's event codes."""
    real_code: bool = False              # the trace records real code: (1) applies
    counts: Normalised = field(default_factory=Normalised)
    seq_map: list[int] = field(default_factory=list)     # kept event n (from 1) -> its trace seq at n - 1
    _bits: dict[tuple[int, int], int] = field(default_factory=dict)
    _last: Event | None = None           # the last kept event (a root store may merge into it)
    _after_unlock: bool = False          # the previous event dropped register_lock

    def feed(self, events: Iterable[Event]) -> list[Event]:
        out: list[Event] = []
        c = self.counts
        for ev in events:
            c.events += 1
            k = ev[S.I_KIND]
            after_unlock = self._after_unlock
            self._after_unlock = k == S.K_UNLOCK and ev[S.F_UNLOCK_LOCK] == "register_lock"
            if k in LEFT_OUT:
                continue
            if k in FLUSH_KINDS and after_unlock:
                c.flushes_after_lock += 1
            if k == S.K_ROOT_WRITE:
                if self.real_code and _pointer_then_present(self._last, ev):
                    assert self._last is not None
                    self._last[S.F_ROOT_WRITE_NEW] = ev[S.F_ROOT_WRITE_NEW]     # (1)
                    c.root_stores_merged += 1
                    continue
            elif k == S.K_DID_MAP:
                if ev[S.F_DID_MAP_OLD] == ev[S.F_DID_MAP_NEW]:
                    c.unchanged_did_stores += 1                       # (3)
                    continue
            elif k == S.K_DID_BITMAP:
                key = (ev[S.F_DID_BITMAP_IOMMU], ev[S.F_DID_BITMAP_DID])
                if self._bits.get(key, 0) == ev[S.F_DID_BITMAP_VALUE]:
                    c.unchanged_did_stores += 1                       # (3)
                    continue
                self._bits[key] = ev[S.F_DID_BITMAP_VALUE]
            kept = list(ev)
            self.seq_map.append(ev[S.I_SEQ])
            kept[S.I_SEQ] = len(self.seq_map)
            kept[S.I_FUNC] = NO_FUNC
            kept[S.I_LABEL] = ""
            out.append(kept)
            self._last = kept
        c.kept += len(out)
        return out

    def position(self, seq: int) -> int:
        """The projection's number for trace seq ``seq``: that of the first
        kept event at or after it (the last kept event's when none is: a
        finding that starts after it belongs to the last operation)."""
        return max(1, min(bisect_left(self.seq_map, seq) + 1, len(self.seq_map)))


def _pointer_then_present(last: Event | None, ev: Event) -> bool:
    """``last`` stored a context-table pointer into a non-present root entry
    and ``ev`` sets that entry's present bit, nothing else (known difference 1)."""
    if last is None or last[S.I_KIND] != S.K_ROOT_WRITE:
        return False
    if (last[S.F_ROOT_WRITE_IOMMU], last[S.F_ROOT_WRITE_BUS]) != (ev[S.F_ROOT_WRITE_IOMMU], ev[S.F_ROOT_WRITE_BUS]):
        return False
    pointer, new = last[S.F_ROOT_WRITE_NEW], ev[S.F_ROOT_WRITE_NEW]
    return (not last[S.F_ROOT_WRITE_OLD] & 1 and not pointer & 1 and ev[S.F_ROOT_WRITE_OLD] == pointer
            and new == pointer | 1)


def project(events: Iterable[Event], *, real_code: bool = False) -> tuple[list[Event], Normalised]:
    """A whole event list's projection and its normalisation counts."""
    p = Projector(real_code=real_code)
    kept = p.feed(events)
    return kept, p.counts


def projected_findings(findings: Iterable[dict[str, Any]], projector: Projector) -> list[dict[str, Any]]:
    """Findings (check --json dicts) as the hazard delta matches them on
    projections: start and end as projection numbers, no step labels (each
    side's own), and ``detail`` holding the finding's index in ``findings``
    so that the delta can show the finding itself."""
    out = []
    for i, f in enumerate(findings):
        start, end = f.get("start"), f.get("end")
        out.append(dict(f, start=projector.position(start) if type(start) is int else start,
                        end=projector.position(end) if type(end) is int else end,
                        start_label="", end_label="", detail=i))
    return out
