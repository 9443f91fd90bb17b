"""Hazard-delta matching: the findings of one trace without a counterpart in
the other.

Two findings match when they have the same kind, severity, device,
requester ID and step labels and start in the same aligned operation pair (align.py); among
several on one key, in order of start.  Per side, the findings are reduced
to (match key, pair index) and counted; where the two counters agree --
almost everywhere, 10^5 benign windows of two long traces are mostly the
same -- nothing more is done, and only the findings of keys whose counts
differ are looked at: the last ``surplus`` of each such key (in start
order) have no counterpart and become ``HazardDelta``s, placed at the row
of their start event.

Findings come in three forms, each reduced at C speed where it can be:

* ``FindingRows`` -- the sidecar's positional rows (replay.hazards
  ``Finding.to_row`` order, ``ROW_FIELDS``), matched without building
  objects;
* ``replay.hazards.Finding`` objects -- an inline analysis' result;
* anything else one finding at a time: ``check --json`` dicts, or objects
  with the Finding attributes (``labels`` = (start, end) accepted for the
  two label fields).

hazard_pairs.py then pairs up unmatched findings that are one window with
another extent.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from operator import attrgetter, itemgetter
from typing import Any

from replay.hazards.findings import Finding

from .align import Alignment
from .report import HazardDelta, jsonable

FINDING_KEYS = ("kind", "severity", "device", "rid", "iommu", "start", "end", "open_at_end",
                "start_label", "end_label", "detail")
# replay.hazards' positional finding row (Finding.to_row), format 1
ROW_FIELDS = ("kind", "severity", "device", "rid", "iommu", "start", "end", "start_label", "end_label", "detail")
# what two findings must share to match (and their start decides the pair)
MATCH_FIELDS = ("kind", "severity", "device", "rid", "start_label", "end_label")
_ROW_KEY = itemgetter(*(ROW_FIELDS.index(f) for f in MATCH_FIELDS))
_ROW_START = itemgetter(ROW_FIELDS.index("start"))
_ATTR_KEY = attrgetter(*MATCH_FIELDS)
_ATTR_START = attrgetter("start")
# (match keys, pair indexes, starts, findings) of one side
Keyed = tuple[list[Any], list[int], list[int], Any]


class FindingRows(list[list[Any]]):
    """Findings as the sidecar stores them: positional rows in
    replay.hazards.Finding.to_row order, matched without building objects."""

    __slots__ = ()


def row_json(r: list[Any]) -> dict[str, Any]:
    """A sidecar row as the check --json dict."""
    d = dict(zip(ROW_FIELDS, r))
    d["open_at_end"] = d["end"] is None
    return {k: d[k] for k in FINDING_KEYS}


def finding_dict(f: Any) -> dict[str, Any]:
    """A finding (dict or object) as the check --json dict."""
    if hasattr(f, "to_json"):
        f = f.to_json()
    if isinstance(f, dict):
        get = f.get
    else:
        def get(k: str, default: Any = None) -> Any:
            return getattr(f, k, default)
    out = {k: get(k) for k in FINDING_KEYS}
    labels = get("labels")
    if isinstance(labels, (list, tuple)) and len(labels) == 2:
        out["start_label"] = out["start_label"] if out["start_label"] is not None else labels[0]
        out["end_label"] = out["end_label"] if out["end_label"] is not None else labels[1]
    if out["open_at_end"] is None:
        out["open_at_end"] = out["end"] is None
    return {k: jsonable(v) for k, v in out.items()}


def _fkey(f: Any) -> tuple[tuple[Any, ...], Any]:
    """(match key, start) of a finding given as a dict or an object."""
    if isinstance(f, dict):
        get = f.get
        sl, el = get("start_label"), get("end_label")
        labels = get("labels")
        if sl is None and el is None and isinstance(labels, (list, tuple)) and len(labels) == 2:
            sl, el = labels
        return (get("kind"), get("severity"), get("device"), get("rid"), sl, el), get("start")
    sl, el = getattr(f, "start_label", None), getattr(f, "end_label", None)
    if sl is None and el is None:
        labels = getattr(f, "labels", None)
        if isinstance(labels, (list, tuple)) and len(labels) == 2:
            sl, el = labels
    return (getattr(f, "kind", None), getattr(f, "severity", None), getattr(f, "device", None),
            getattr(f, "rid", None), sl, el), \
        getattr(f, "start", None)


def _keyed(al: Alignment, side: str, fs: Any) -> Keyed:
    """(keys, pair indexes, starts, findings) of one side's findings: C-speed
    (itemgetter/attrgetter, bisect) for sidecar rows and Finding objects."""
    if fs is None:
        fs = []
    if type(fs) is FindingRows:
        starts = list(map(_ROW_START, fs))
        return list(map(_ROW_KEY, fs)), al.pair_indexes(side, starts), starts, fs
    fs = list(fs)
    if set(map(type, fs)) <= {Finding}:
        starts = list(map(_ATTR_START, fs))
        return list(map(_ATTR_KEY, fs)), al.pair_indexes(side, starts), starts, fs
    keys, pidx, starts, objs = [], [], [], []
    for f in fs:
        k, start = _fkey(f)
        p = -1
        if type(start) is int:
            pair = al.pair_of_seq(side, start)
            p = pair.index if pair is not None else -1
        else:
            start = -1
        keys.append(k)
        pidx.append(p)
        starts.append(start)
        objs.append(f)
    return keys, pidx, starts, objs


def hazard_delta(al: Alignment, findings_a: Any, findings_b: Any) -> list[HazardDelta]:
    """Findings without a counterpart: the same kind, severity, device,
    requester ID and step labels, starting in the same aligned operation pair (matched in
    order of start when several).  Only the unmatched ones are converted."""
    ka = _keyed(al, "a", findings_a)
    kb = _keyed(al, "b", findings_b)
    ca = Counter(zip(ka[0], ka[1]))
    cb = Counter(zip(kb[0], kb[1]))
    if ca == cb:
        return []
    out = []
    for side, (keys, pidx, starts, fs), mine, other in (("a", ka, ca, cb), ("b", kb, cb, ca)):
        # the keys whose counts differ, found in C among 10^5 equal ones
        differ = mine.items() - other.items()
        extra = {k: n - other.get(k, 0) for k, n in differ if n > other.get(k, 0)}
        if not extra:
            continue
        # the last `extra[k]` of each key (in start order) have no counterpart
        by_key: dict[Any, Any] = {}
        for i in _candidates(al, side, {k[1] for k in extra}, starts, pidx):
            key = (keys[i], pidx[i])
            if key in extra:
                by_key.setdefault(key, []).append((starts[i], fs[i]))
        for key, lst in by_key.items():
            lst.sort(key=lambda x: x[0])
            for start, f in lst[len(lst) - extra[key]:]:
                d = row_json(f) if type(fs) is FindingRows else finding_dict(f)
                row = al.nearest_row(side, start) if start >= 0 else None
                out.append(HazardDelta(side, d, row, key[1] if key[1] >= 0 else None))
    out.sort(key=lambda h: (h.row if h.row is not None else -1, h.side, _fstart(h.finding),
                            str(h.finding.get("kind")), str(h.finding.get("rid"))))
    return out


def _candidates(al: Alignment, side: str, pairs: set[int], starts: list[int], pidx: list[int]) -> list[int]:
    """Indexes of the findings that start in the given pairs: by bisection
    when the starts are sorted (the check order), else by a scan."""
    n = len(starts)
    ordered = all(starts[i] <= starts[i + 1] for i in range(0, n - 1, max(1, n // 64))) and \
        starts == sorted(starts)
    if not ordered:
        return [i for i in range(n) if pidx[i] in pairs]
    out: list[int] = []
    for p in sorted(x for x in pairs if x >= 0):
        pair = al.pairs[p]
        first, count = (pair.first_a, pair.count_a) if side == "a" else (pair.first_b, pair.count_b)
        if not count:
            continue
        out.extend(range(bisect_left(starts, first), bisect_left(starts, first + count)))
    if -1 in pairs:
        out.extend(i for i in range(n) if pidx[i] == -1)
    return out


def _fstart(d: dict[str, Any]) -> int:
    s = d.get("start")
    return s if type(s) is int else -1


