"""Hazard windows as Chrome Trace Event async slices on the device's track.

Lanes follow replay/export_chrome.py: process
``1 + iommu`` is IOMMU ``iommu``, thread ``rid16 + 1`` on it is requester ID
``rid16 = bus << 8 | devfn``.  A finding goes on the thread of its *device*
(the device whose RMRR is cut off, whose entry is stale ...) on the
finding's unit -- the RID itself when the finding has no device -- so the
windows line up with that device's context-entry writes; findings without a
unit (a lock finding outside any IOMMU) go to process 0, thread 0.

Hazard windows overlap each other and the lock / call slices, so they are
nestable async events: a ``b`` at ``ts = start`` and an ``e`` at
``ts = end`` (``end_ts`` -- normally last seq + 1 -- for a window still
open when the trace ends), sharing ``cat`` and a unique ``id``.  ``ts`` is the
event seq (1 step = 1 us), as in the exporter.  ``args`` carries the whole
finding of docs/CLI.md#check-json.

    events = chrome_hazard_events(findings, end_ts=last_seq + 1)

returns the b/e pairs (sorted by ts, then id) plus ``M`` thread_name records
for the device tracks it uses, ready to be written into ``traceEvents`` in
any order (Chrome and Perfetto sort by ts).  ``begin_event`` / ``end_event``
build one side, for an exporter that streams in seq order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .findings import Finding
from .topology import parse_bdf

PID_XEN = 0
CAT = "hazard"

# a Finding, or its check --json object
FindingLike = Finding | dict[str, Any]


def _get(f: FindingLike, name: str) -> Any:
    return f.get(name) if isinstance(f, dict) else getattr(f, name, None)


def track(f: FindingLike) -> tuple[int, int]:
    """(pid, tid) of the device track a finding belongs on."""
    u = _get(f, "iommu")
    if not isinstance(u, int) or u < 0:
        return PID_XEN, 0
    for name in ("device", "rid"):
        loc = parse_bdf(_get(f, name))
        if loc is not None:
            return 1 + u, ((loc[1] << 8) | loc[2]) + 1
    return 1 + u, 0


def _json(f: FindingLike) -> dict[str, Any]:
    if isinstance(f, Finding):
        return f.to_json()
    return dict(f)


def title(f: FindingLike) -> str:
    sev = _get(f, "severity")
    rid = _get(f, "rid")
    dev = _get(f, "device")
    where = f" {rid}" if rid and rid != dev else ""
    return f"{_get(f, 'kind')}{where}" + (f" ({sev})" if sev and sev != "hazard" else "")


def begin_event(f: FindingLike, n: int) -> dict[str, Any]:
    pid, tid = track(f)
    return {"name": title(f), "cat": f"{CAT},{_get(f, 'kind')},{_get(f, 'severity')}", "ph": "b",
            "id": f"hz{n}", "pid": pid, "tid": tid, "ts": _get(f, "start"), "args": _json(f)}


def end_event(f: FindingLike, n: int, end_ts: int) -> dict[str, Any]:
    pid, tid = track(f)
    end = _get(f, "end")
    ts = end if isinstance(end, int) else end_ts
    return {"name": title(f), "cat": f"{CAT},{_get(f, 'kind')},{_get(f, 'severity')}", "ph": "e",
            "id": f"hz{n}", "pid": pid, "tid": tid, "ts": ts,
            "args": {"end_label": _get(f, "end_label"), "open_at_end": not isinstance(end, int)}}


def chrome_hazard_events(findings: Iterable[FindingLike], *, end_ts: int,
                         names: bool = True) -> list[dict[str, Any]]:
    """b/e pairs for every finding (Finding objects or check --json dicts),
    plus thread_name metadata for the device tracks used when ``names``."""
    out = []
    tracks: dict[tuple[int, int], str] = {}
    for n, f in enumerate(findings):
        if not isinstance(_get(f, "start"), int):
            continue
        out.append(begin_event(f, n))
        out.append(end_event(f, n, end_ts))
        pid, tid = track(f)
        if pid != PID_XEN and tid:
            tracks.setdefault((pid, tid), _get(f, "device") or _get(f, "rid"))
    out.sort(key=lambda e: (e["ts"], 0 if e["ph"] == "e" else 1, e["id"]))
    if names:
        meta = [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}}
                for (pid, tid), name in sorted(tracks.items())]
        out = meta + out
    return out
