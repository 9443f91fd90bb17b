"""Findings: the record the analysers produce, the severity vocabulary, the
JSON and sidecar encodings, and the interval index.

A finding is a window ``[start, end)`` over event seq (docs/CLI.md#positions):
the hazard holds for ``state_at(t)`` for every ``start <= t < end``.
``start`` is the event after which the condition first holds, ``end`` the
event after which it no longer does; both carry the Xen step label of that
event (``UO3``, ``PM5``, ``MO7`` ...).  A window still open when the readable
trace ends has ``end`` None and ``open_at_end`` True.

Severity (docs/HAZARDS.md has the table and the reasoning):

* ``benign``  -- a window the operation closes itself with its own flush
  (the stale-context / stale-iotlb windows between a write and MO9/MO10 or
  UO5);
* ``warning`` -- a window Xen knowingly accepts (the lock-free XSA-399
  teardown; a leaked DID that nothing translates through) or one without a
  victim (MAP_SINGLE_DEVICE / MAP_OWNER_DYING: no other device uses the DID);
* ``hazard``  -- everything else: every rmrr-disconnect, a skipped or
  wrong-DID flush, a did-pt-mismatch or foreign-iotlb with victims, a dangling
  or reused DID, a lock taken against the order.

The index answers "which findings are open at step n" with a static centred
interval tree (O(log m + answer)) and "next / previous finding" with a
``sortedcontainers.SortedKeyList`` ordered like ``check --json``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sortedcontainers import SortedKeyList

# Finding kinds, in the order `check` lists its counts (docs/CLI.md#check-json).
KINDS = (
    "rmrr-disconnect",
    "did-pt-mismatch",
    "stale-context",
    "stale-iotlb",
    "foreign-iotlb",
    "did-leak",
    "did-dangling",
    "did-reuse",
    "lock-order",
    "stale-devtlb",
    "owner-mismatch",
    "did-incoherent",
)
BENIGN, WARNING, HAZARD = "benign", "warning", "hazard"
SEVERITIES = (BENIGN, WARNING, HAZARD)
SEVERITY_RANK = {BENIGN: 1, WARNING: 2, HAZARD: 3}

# Bump when what a serialised finding means or holds changes (sidecar rows).
FINDINGS_FORMAT = 1

JSON_FIELDS = ("kind", "severity", "device", "rid", "iommu", "start", "end", "open_at_end",
               "start_label", "end_label", "detail")


class Finding:
    """One hazard window.  ``device`` / ``rid`` are ``SSSS:BB:DD.F`` strings
    (or None), ``iommu`` the DRHD index (or None for a lock finding that
    concerns no unit)."""

    __slots__ = ("kind", "severity", "device", "rid", "iommu", "start", "end",
                 "start_label", "end_label", "_detail")

    def __init__(self, kind: str, severity: str, device: str | None, rid: str | None, iommu: int | None,
                 start: int, end: int | None, start_label: str | None, end_label: str | None,
                 detail: str | tuple[Any, ...]) -> None:
        self.kind = kind
        self.severity = severity
        self.device = device
        self.rid = rid
        self.iommu = iommu
        self.start = start
        self.end = end
        self.start_label = start_label
        self.end_label = end_label
        # a str, or deferred facts (code, names, *facts): the sentence is
        # written on first use (a long trace has hundreds of thousands of
        # benign windows nobody reads)
        self._detail = detail

    @property
    def detail(self) -> str:
        d = self._detail
        if isinstance(d, str):
            return d
        render: Renderer = _RENDERERS[d[0]]
        text = render(self, d)
        self._detail = text
        return text

    @detail.setter
    def detail(self, value: str) -> None:
        self._detail = value

    def detail_once(self) -> str:
        """The detail sentence without keeping it: for a report that writes
        every finding once (`check` on 10^7 events lists ~5*10^5), where
        keeping each sentence would hold them all in memory at the end."""
        d = self._detail
        if isinstance(d, str):
            return d
        render: Renderer = _RENDERERS[d[0]]
        return render(self, d)

    @property
    def open_at_end(self) -> bool:
        return self.end is None

    def holds_at(self, n: int) -> bool:
        return self.start <= n and (self.end is None or n < self.end)

    def sort_key(self) -> tuple[int, str, int, str, str, int, str]:
        """(start, kind, iommu, rid) as docs/CLI.md#check-json orders `check --json`, then
        the rest so the order is total and deterministic."""
        return (self.start, self.kind, -1 if self.iommu is None else self.iommu, self.rid or "",
                self.device or "", -1 if self.end is None else self.end, self.severity)

    def to_json(self, keep: bool = True) -> dict[str, Any]:
        """The ``check --json`` finding object (docs/CLI.md#check-json);
        ``keep=False`` writes the detail without keeping it (detail_once)."""
        return {
            "kind": self.kind,
            "severity": self.severity,
            "device": self.device,
            "rid": self.rid,
            "iommu": self.iommu,
            "start": self.start,
            "end": self.end,
            "open_at_end": self.end is None,
            "start_label": self.start_label,
            "end_label": self.end_label,
            "detail": self.detail if keep else self.detail_once(),
        }

    to_dict = to_json

    def to_row(self, keep: bool = True) -> list[Any]:
        """Compact positional form for the sidecar (msgpack); ``keep=False``
        writes the detail without keeping it (detail_once)."""
        return [self.kind, self.severity, self.device, self.rid, self.iommu, self.start, self.end,
                self.start_label, self.end_label, self.detail if keep else self.detail_once()]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Finding:
        """Inverse of ``to_json`` (a ``check --json`` finding object); absent
        optional fields are None, an absent detail is empty."""
        return cls(d["kind"], d["severity"], d.get("device"), d.get("rid"), d.get("iommu"), d["start"],
                   d.get("end"), d.get("start_label"), d.get("end_label"), d.get("detail") or "")

    @classmethod
    def from_row(cls, row: object) -> Finding:
        if not isinstance(row, (list, tuple)) or len(row) != 10:
            raise ValueError("finding row must have 10 fields")
        kind, sev, dev, rid, iommu, start, end, sl, el, detail = row
        if kind not in KINDS or sev not in SEVERITIES:
            raise ValueError(f"unknown finding kind/severity {kind!r}/{sev!r}")
        if type(start) is not int or not (end is None or type(end) is int):
            raise ValueError("finding start/end must be integers")
        return cls(kind, sev, dev, rid, iommu, start, end, sl, el, detail)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Finding):
            return NotImplemented
        return self.to_row() == other.to_row()

    __hash__ = None     # type: ignore[assignment]  # mutable (a clipped window's end changes): unhashable

    def __repr__(self) -> str:
        end = "open" if self.end is None else self.end
        return (f"Finding({self.kind} {self.severity} dev={self.device} rid={self.rid} "
                f"iommu={self.iommu} [{self.start} {self.start_label}, {end} {self.end_label}))")


# Deferred details: Finding(..., detail=(code, names, *facts)) -- names the
# analysis' (domid, name) pairs, shared by all its findings; facts plain values
# (ints, strings, None, small tuples of those) that the finding's own fields
# (unit, requester ID, end and its label) do not already hold -- written by
# _RENDERERS[code](finding, detail) on first use.  A finding thus costs its
# record, two ints and one flat tuple: ~0.3 KB where the sentence would take
# as much again, and a trace of 10^7 events has half a million of them.
Renderer = Callable[[Finding, tuple[Any, ...]], str]
_RENDERERS: list[Renderer] = []


def renderer(fn: Renderer) -> int:
    """Register a detail renderer fn(finding, detail) -> str; returns the
    code that starts its deferred details."""
    _RENDERERS.append(fn)
    return len(_RENDERERS) - 1


OP_END = "op-end"


def boundary_label(label: str | None) -> str:
    """How a window's start or end is named in text: its step label, or
    ``op-end`` for an event without one.  The only unlabelled events a window
    opens or closes at are op-end events (owner-mismatch is judged only when a
    top-level operation returns, and every other analyser opens and closes at
    labelled engine steps), so a missing label names that event rather than
    an unknown ``?``.  check, diff and the TUI use this one rule."""
    return label if label else OP_END


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """``sorted(findings, key=Finding.sort_key)``, without a key tuple per
    finding alive at once (half a million of them at 10^7 events): a stable
    sort by start, then the full key only within each run of equal starts
    (a handful of windows open at one event) -- the same order."""
    out = sorted(findings, key=_start)
    n = len(out)
    i = 0
    while i < n:
        s = out[i].start
        j = i + 1
        while j < n and out[j].start == s:
            j += 1
        if j - i > 1:
            out[i:j] = sorted(out[i:j], key=Finding.sort_key)
        i = j
    return out


def _start(f: Finding) -> int:
    return f.start


def counts(findings: Iterable[Finding], kinds: Iterable[str] = KINDS) -> dict[str, int]:
    """{kind: number of findings} with every kind present."""
    out = {k: 0 for k in kinds}
    for f in findings:
        if f.kind in out:
            out[f.kind] += 1
    return out


def worst_severity(findings: Iterable[Finding]) -> str | None:
    best = None
    for f in findings:
        if best is None or SEVERITY_RANK[f.severity] > SEVERITY_RANK[best]:
            best = f.severity
    return best


# --- sidecar encoding ----------------------------------------------------------------
#
# The entry is [FINDINGS_FORMAT, [row, ...]] with Finding.to_row rows.  At 10^7
# events there are half a million rows: packing them all as lists first, or
# unpacking the whole entry into a tuple tree and then into Findings, held two
# or three copies of every finding at once (sidecar writes and reads peaked
# 400-500 MB above the analysis itself).  pack_findings writes the same bytes a
# row at a time; findings_from_rows builds each Finding as its row arrives and
# shares the strings that repeat: kind, severity, device, requester ID and step
# labels have a handful of distinct values, and the detail sentences repeat too
# (the 10^7-event synth trace: 110,055 distinct among 553,458, 224 characters on
# average) -- each otherwise a fresh copy per row.

_ROWS_PER_FLUSH = 4096


def encode_findings(findings: Iterable[Finding]) -> list[Any]:
    """A msgpack-able value: [FINDINGS_FORMAT, [row, ...]]."""
    return [FINDINGS_FORMAT, [f.to_row(keep=False) for f in findings]]


def pack_findings(packer: Any, findings: Sequence[Finding], flush: Callable[[], None]) -> None:
    """Pack ``encode_findings(findings)`` into ``packer`` (a msgpack.Packer
    with autoreset off) a row at a time -- the same bytes packb gives --
    calling ``flush()`` every few thousand rows so that the caller can move
    the packed bytes out.

    Each detail sentence is written once and kept, equal sentences shared
    (as findings_from_rows shares them): `check` writes them all again right
    after storing them, and rendering costs more than packing (25 us a
    finding), while the shared sentences take less memory than the deferred
    facts they replace."""
    packer.pack_array_header(2)
    packer.pack(FINDINGS_FORMAT)
    packer.pack_array_header(len(findings))
    pack = packer.pack
    share: dict[str, str] = {}
    keep = share.setdefault
    for i, f in enumerate(findings, 1):
        if not isinstance(f._detail, str):
            text = f.detail_once()
            f._detail = keep(text, text)
        pack(f.to_row())
        if i % _ROWS_PER_FLUSH == 0:
            flush()


def decode_findings(value: object) -> list[Finding]:
    """Inverse of encode_findings; ValueError when the value is not one
    (another format, or a damaged / foreign sidecar entry)."""
    if not isinstance(value, (list, tuple)) or len(value) != 2 or value[0] != FINDINGS_FORMAT:
        raise ValueError("not a findings entry of this format")
    rows = value[1]
    if not isinstance(rows, (list, tuple)):
        raise ValueError("findings entry without rows")
    return findings_from_rows(rows)


def unpack_findings(unpacker: Any) -> list[Finding]:
    """decode_findings of the next value of ``unpacker`` (a msgpack.Unpacker),
    read a row at a time.  ValueError when it is not a findings value of this
    format; msgpack's errors when the stream is not msgpack."""
    if unpacker.read_array_header() != 2 or unpacker.unpack() != FINDINGS_FORMAT:
        raise ValueError("not a findings entry of this format")
    n = unpacker.read_array_header()
    unpack = unpacker.unpack
    return findings_from_rows(unpack() for _ in range(n))


def findings_from_rows(rows: Iterable[object]) -> list[Finding]:
    """Finding.from_row of each row, equal strings shared (one dict entry per
    distinct value, dropped on return)."""
    share: dict[Any, Any] = {}
    keep = share.setdefault
    out = []
    try:
        for row in rows:
            f = Finding.from_row(row)
            f.kind = keep(f.kind, f.kind)
            f.severity = keep(f.severity, f.severity)
            f.device = keep(f.device, f.device)
            f.rid = keep(f.rid, f.rid)
            f.start_label = keep(f.start_label, f.start_label)
            f.end_label = keep(f.end_label, f.end_label)
            f._detail = keep(f._detail, f._detail)
            out.append(f)
    except TypeError:
        # an unhashable field (a map where a string belongs): not a row
        raise ValueError("finding row with a field of the wrong type") from None
    return out


# --- the index ----------------------------------------------------------------------

class _Node:
    """A node of the centred interval tree: the intervals containing
    ``center`` (start <= center < end), sorted by start and by end."""

    __slots__ = ("center", "starts", "by_start", "ends", "by_end", "left", "right")

    center: int
    starts: list[int]
    by_start: list[Finding]
    ends: list[float]
    by_end: list[Finding]
    left: _Node | None
    right: _Node | None


# (start, end, finding) with end exclusive; an open window ends at infinity
_Item = tuple[int, float, Finding]


def _build(items: list[_Item]) -> _Node | None:
    if not items:
        return None
    points = sorted({s for s, _, _ in items})
    center = points[len(points) // 2]
    here: list[_Item] = []
    left: list[_Item] = []
    right: list[_Item] = []
    for it in items:
        s, e, _ = it
        if e <= center:
            left.append(it)
        elif s > center:
            right.append(it)
        else:
            here.append(it)
    node = _Node()
    node.center = center
    here_s = sorted(here, key=lambda it: it[0])
    node.starts = [it[0] for it in here_s]
    node.by_start = [it[2] for it in here_s]
    here_e = sorted(here, key=lambda it: it[1])
    node.ends = [it[1] for it in here_e]
    node.by_end = [it[2] for it in here_e]
    node.left = _build(left)
    node.right = _build(right)
    return node


class FindingIndex:
    """Findings of one trace, queryable by step.

    ``open_at(n)``        findings with start <= n < end (open ones hold to the end),
                          in check order; O(log m + answer)
    ``next_after(n)``     the first finding (check order) with start > n, or None
    ``previous_before(n)``the last finding with start < n, or None
    ``starting_at(n)``    findings whose window opens at n
    Both neighbour queries bisect a SortedKeyList: O(log m)."""

    def __init__(self, findings: Iterable[Finding] = ()) -> None:
        self._sorted = SortedKeyList(findings, key=Finding.sort_key)
        inf = float("inf")
        items: list[_Item] = [(f.start, inf if f.end is None else f.end, f) for f in self._sorted
                              if f.end is None or f.end > f.start]
        self._root = _build(items)

    def __len__(self) -> int:
        return len(self._sorted)

    def __iter__(self) -> Iterator[Finding]:
        return iter(self._sorted)

    @property
    def findings(self) -> list[Finding]:
        return list(self._sorted)

    def open_at(self, n: int) -> list[Finding]:
        out: list[Finding] = []
        node = self._root
        while node is not None:
            if n < node.center:
                # every interval here ends after center > n: open iff start <= n
                i = bisect.bisect_right(node.starts, n)
                out.extend(node.by_start[:i])
                node = node.left
            else:
                # every interval here starts at or before center <= n: open iff end > n
                i = bisect.bisect_right(node.ends, n)
                out.extend(node.by_end[i:])
                if n == node.center:
                    break
                node = node.right
        out.sort(key=Finding.sort_key)
        return out

    def next_after(self, n: int) -> Finding | None:
        # (n + 1,) sorts before every key starting at n + 1 and after every
        # key starting at or before n.
        i = self._sorted.bisect_key_left((n + 1,))
        return self._sorted[i] if i < len(self._sorted) else None

    def previous_before(self, n: int) -> Finding | None:
        i = self._sorted.bisect_key_left((n,))
        return self._sorted[i - 1] if i > 0 else None

    def starting_at(self, n: int) -> list[Finding]:
        lo = self._sorted.bisect_key_left((n,))
        hi = self._sorted.bisect_key_left((n + 1,))
        return list(self._sorted.islice(lo, hi))

    def worst_at(self, n: int) -> str | None:
        """The worst severity open at n, or None."""
        return worst_severity(self.open_at(n))
