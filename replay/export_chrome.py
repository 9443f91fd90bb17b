"""Chrome Trace Event JSON (opens in ui.perfetto.dev and chrome://tracing).

Lanes (the Trace Event Format's pid/tid, as Perfetto groups them):

* process 0 "Xen": thread "operations" (top-level operations and rollbacks
  as slices, log lines and injected faults as instants), one "CPU n" thread
  per CPU with its call/return slices and its lock waits (instants), one
  thread per lock instance that does not belong to an IOMMU (pcidevs_lock,
  mapping_lock[d], rcu_domain[d] ...) with its holds as slices (``cpu`` in
  their args), and "domains" (lifecycle, page tables, identity maps);
* several CPUs (header ``schedule.cpus`` > 1): ops overlap, so each op and
  its rollbacks are slices on the track of the CPU running it, around its
  calls, instead of on "operations"; a device's DMA (events of CPU -1) are
  instants on the thread "device DMA";
* process 1 + u "IOMMU u": one thread per requester ID ``SSSS:BB:DD.F``
  (context-entry writes, cache syncs, device-selective flushes, owner moves
  of the device there, as instants with their fields), and threads
  "flushes", "DIDs", "root table", "iommu->lock", "register_lock";
* hazard findings, when given, as async b/e pairs on their device's track
  (replay.hazards.chrome).

Time is logical: ``ts`` = seq in microseconds, and every event carries its
seq and step label in ``args``.  Slices are B/E pairs that nest per thread
by construction (one thread per lock, a call stack per CPU); whatever is
still open when the trace ends -- a truncated recording -- is closed at
``last seq + 1``, so every B has its E.  Output is streamed in seq order and
deterministic (no clock, no dict-order dependence on anything but the trace).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

from tracer import schema as S

from .hazards.chrome import begin_event as hz_begin
from .hazards.chrome import end_event as hz_end
from .hazards.chrome import track as hz_track
from .jsonout import EventPresenter, json_safe
from .render import PlatformView, fmt_rid

if TYPE_CHECKING:
    from .reader import StopReport, TraceSchema

PID_XEN = 0
TID_OPS = 0
TID_DOMAINS = 1
TID_CPU0 = 10                 # + cpu
TID_DMA = TID_CPU0 - 1        # events of no CPU: a device's DMA
TID_LOCK0 = 1000              # + n, global lock instances in order of first use
# Per-IOMMU threads above every RID (RID tids are rid16 + 1, up to 0x10000).
TID_FLUSHES, TID_DIDS, TID_ROOT, TID_IOMMU_LOCK, TID_REGISTER_LOCK = range(0x10001, 0x10006)
IOMMU_LOCKS = {"iommu->lock": TID_IOMMU_LOCK, "register_lock": TID_REGISTER_LOCK}

# Where the fields a lane is chosen by sit, per kind (tracer/schema_fields.py).
_RID_FIELDS = {S.K_CTX_WRITE: (S.F_CTX_WRITE_IOMMU, S.F_CTX_WRITE_BUS, S.F_CTX_WRITE_DEVFN),
               S.K_CACHE_SYNC: (S.F_CACHE_SYNC_IOMMU, S.F_CACHE_SYNC_BUS, S.F_CACHE_SYNC_DEVFN)}
_UNIT_FIELD = {S.K_FLUSH_IOTLB: S.F_FLUSH_IOTLB_IOMMU, S.K_FLUSH_WRITE_BUFFER: S.F_FLUSH_WRITE_BUFFER_IOMMU,
               S.K_DID_BITMAP: S.F_DID_BITMAP_IOMMU, S.K_DID_MAP: S.F_DID_MAP_IOMMU,
               S.K_IOMMU_BITMAP: S.F_IOMMU_BITMAP_IOMMU,
               S.K_ROOT_WRITE: S.F_ROOT_WRITE_IOMMU, S.K_TRANSLATION_ENABLE: S.F_TRANSLATION_ENABLE_IOMMU}
_DID_FIELD = {S.K_DID_BITMAP: S.F_DID_BITMAP_DID, S.K_DID_MAP: S.F_DID_MAP_DID}
_DEVICE_FIELDS = {S.K_OWNER_MOVE: (S.F_OWNER_MOVE_SEG, S.F_OWNER_MOVE_BDF),
                  S.K_DEVICE_ADD: (S.F_DEVICE_ADD_SEG, S.F_DEVICE_ADD_BDF),
                  S.K_DEVICE_REMOVE: (S.F_DEVICE_REMOVE_SEG, S.F_DEVICE_REMOVE_BDF),
                  S.K_ATS_ENABLE: (S.F_ATS_ENABLE_SEG, S.F_ATS_ENABLE_BDF)}
_TEXT_FIELD = {S.K_LOG: S.F_LOG_TEXT, S.K_FAULT_INJECT: S.F_FAULT_INJECT_POINT, S.K_ENGINE_LIMIT: S.F_ENGINE_LIMIT_WHAT}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


class _Out:
    """Streams trace events; tracks per-thread open slices and names."""

    def __init__(self, fp: TextIO) -> None:
        self.fp = fp
        self.first = True
        self.named: set[tuple[Any, int]] = set()
        self.open: dict[tuple[int, int], list[str]] = {}   # (pid, tid) -> [slice name, ...]

    def raw(self, obj: Any) -> None:
        self.fp.write(("" if self.first else ",\n") + _dumps(obj))
        self.first = False

    def name_process(self, pid: int, name: str) -> None:
        if ("p", pid) not in self.named:
            self.named.add(("p", pid))
            self.raw({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": name}})
            self.raw({"name": "process_sort_index", "ph": "M", "pid": pid, "tid": 0,
                      "args": {"sort_index": pid}})

    def name_thread(self, pid: int, tid: int, name: str) -> None:
        if (pid, tid) not in self.named:
            self.named.add((pid, tid))
            self.raw({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}})
            self.raw({"name": "thread_sort_index", "ph": "M", "pid": pid, "tid": tid,
                      "args": {"sort_index": tid}})

    def instant(self, pid: int, tid: int, ts: int, name: str, cat: str, args: Any, scope: str = "t") -> None:
        self.raw({"name": name, "cat": cat, "ph": "i", "s": scope, "ts": ts, "pid": pid, "tid": tid,
                  "args": args})

    def begin(self, pid: int, tid: int, ts: int, name: str, cat: str, args: Any) -> None:
        self.open.setdefault((pid, tid), []).append(name)
        self.raw({"name": name, "cat": cat, "ph": "B", "ts": ts, "pid": pid, "tid": tid, "args": args})

    def end(self, pid: int, tid: int, ts: int, name: str | None = None, args: Any = None) -> None:
        """Close the innermost slice called ``name`` on the thread (and any
        left open inside it); without a name the innermost one.  Nothing is
        emitted when no such slice is open (an unmatched unlock/return)."""
        stack = self.open.get((pid, tid))
        if not stack:
            return
        if name is not None:
            if name not in stack:
                return
            while stack[-1] != name:
                stack.pop()
                self.raw({"ph": "E", "ts": ts, "pid": pid, "tid": tid})
        stack.pop()
        ev: dict[str, Any] = {"ph": "E", "ts": ts, "pid": pid, "tid": tid}
        if args:
            ev["args"] = args
        self.raw(ev)

    def close_all(self, ts: int) -> None:
        for (pid, tid), stack in sorted(self.open.items()):
            while stack:
                stack.pop()
                self.raw({"ph": "E", "ts": ts, "pid": pid, "tid": tid, "args": {"closed_at_end": True}})


class ChromeExporter:
    """One pass over a trace's events (this build's kind/func codes)."""

    def __init__(self, fp: TextIO, header: dict[str, Any], schema: TraceSchema) -> None:
        self.out = _Out(fp)
        self.view = PlatformView(header)
        self.pres = EventPresenter(schema, header)
        self.header = header
        self._global_locks: dict[tuple[Any, Any], int] = {}
        self._last_seq = 0

    # --- lanes ----------------------------------------------------------------

    def _xen(self, tid: int, name: str) -> tuple[int, int]:
        self.out.name_process(PID_XEN, "Xen")
        self.out.name_thread(PID_XEN, tid, name)
        return PID_XEN, tid

    def _cpu(self, cpu: Any) -> tuple[int, int]:
        lane = cpu if isinstance(cpu, int) and 0 <= cpu < 0x100 else 0
        return self._xen(TID_CPU0 + lane, f"CPU {lane}")

    def _op_lane(self, cpu: Any) -> tuple[int, int]:
        """Ops and rollbacks: "operations" on one CPU; with several, ops
        overlap, and slices on one thread must nest: the CPU's own track."""
        if self.view.cpus > 1:
            return self._cpu(cpu)
        return self._xen(TID_OPS, "operations")

    def _iommu(self, u: Any, tid: int, name: str) -> tuple[int, int]:
        pid = 1 + u if isinstance(u, int) and u >= 0 else PID_XEN
        if pid == PID_XEN:
            return self._xen(TID_DOMAINS, "domains")
        seg = self.view.segment.get(u, 0)
        self.out.name_process(pid, f"IOMMU {u} (segment {seg:04x})")
        self.out.name_thread(pid, tid, name)
        return pid, tid

    def _rid(self, u: Any, bus: Any, devfn: Any) -> tuple[int, int]:
        if not (isinstance(bus, int) and isinstance(devfn, int) and 0 <= bus < 256 and 0 <= devfn < 256):
            return self._iommu(u, TID_FLUSHES, "flushes")
        name = self.view.rid(u, bus, devfn) if isinstance(u, int) else fmt_rid(0, bus, devfn)
        dtype = self.view.device_type(self.view.segment.get(u, 0), bus, devfn)
        return self._iommu(u, (bus << 8 | devfn) + 1, f"{name} {dtype}" if dtype else name)

    def _device(self, seg: Any, bdf: Any) -> tuple[int, int]:
        if isinstance(seg, int) and isinstance(bdf, int) and 0 <= bdf < 0x10000:
            u = self.view.drhd(seg, bdf >> 8, bdf & 0xFF)
            if u is not None:
                return self._rid(u, bdf >> 8, bdf & 0xFF)
        return self._xen(TID_DOMAINS, "domains")

    def _lock_lane(self, lock: Any, target: Any) -> tuple[int, int]:
        if lock in IOMMU_LOCKS and isinstance(target, int):
            return self._iommu(target, IOMMU_LOCKS[lock], str(lock))
        key = (lock, target)
        tid = self._global_locks.get(key)
        if tid is None:
            tid = self._global_locks[key] = TID_LOCK0 + len(self._global_locks)
        return self._xen(tid, self.view.lock_name(lock, target))

    # --- events ---------------------------------------------------------------

    def _args(self, ev: Any) -> dict[str, Any]:
        """The event's JSON form (as `log --jsonl`) minus what the slice shows."""
        d = self.pres.to_json(ev)
        return {k: v for k, v in d.items() if k not in ("cpu", "kind")}

    def event(self, ev: Any) -> None:
        if (type(ev) is not list or len(ev) < S.F0 or type(ev[S.I_KIND]) is not int
                or type(ev[S.I_SEQ]) is not int):
            return
        out = self.out
        k, ts, cpu, op, label = ev[S.I_KIND], ev[S.I_SEQ], ev[S.I_CPU], ev[S.I_OP], ev[S.I_LABEL]
        if ts < self._last_seq:        # never let time run backwards on a lane
            return
        self._last_seq = ts
        name = S.KINDS[k].name if 0 <= k < len(S.KINDS) else f"kind-{k}"
        title: str | None
        try:
            if cpu == -1:
                pid, tid = self._xen(TID_DMA, "device DMA")
                out.instant(pid, tid, ts, name, "dma", self._args(ev))
            elif k == S.K_CALL or k == S.K_RETURN:
                pid, tid = self._cpu(cpu)
                func = self.pres.func_name(ev[S.I_FUNC])
                if k == S.K_CALL:
                    out.begin(pid, tid, ts, func, "call", self._args(ev))
                else:
                    out.end(pid, tid, ts, func, {"rc": self._args(ev).get("rc"), "seq": ts})
            elif k == S.K_LOCK:
                lock, target = ev[S.F_LOCK_LOCK], ev[S.F_LOCK_TARGET]
                pid, tid = self._lock_lane(lock, target)
                out.begin(pid, tid, ts, self.view.lock_name(lock, target), "lock",
                          {"seq": ts, "label": label, "cpu": cpu})
            elif k == S.K_UNLOCK:
                lock, target = ev[S.F_UNLOCK_LOCK], ev[S.F_UNLOCK_TARGET]
                pid, tid = self._lock_lane(lock, target)
                out.end(pid, tid, ts, self.view.lock_name(lock, target), {"seq": ts, "label": label})
            elif k == S.K_LOCK_WAIT:
                lock, target = ev[S.F_LOCK_WAIT_LOCK], ev[S.F_LOCK_WAIT_TARGET]
                pid, tid = self._cpu(cpu)
                out.instant(pid, tid, ts, f"spins on {self.view.lock_name(lock, target)}", "lock",
                            {**self._args(ev), "cpu": cpu})
            elif k == S.K_OP_BEGIN:
                pid, tid = self._op_lane(cpu)
                a = self._args(ev)
                out.begin(pid, tid, ts, " ".join(str(x) for x in (f"op {op}", a.get("verb"), a.get("bdf"),
                                                                 a.get("domain")) if x is not None), "op", a)
            elif k == S.K_OP_END:
                pid, tid = self._op_lane(cpu)
                stack = out.open.get((pid, tid)) or []
                title = next((n for n in reversed(stack) if (n == f"op {op}" or n.startswith(f"op {op} "))), None)
                if title is not None:
                    out.end(pid, tid, ts, title, self._args(ev))
            elif k == S.K_ROLLBACK_BEGIN:
                pid, tid = self._op_lane(cpu)
                out.begin(pid, tid, ts, f"rollback {ev[S.F_ROLLBACK_BEGIN_WHAT]}", "rollback", self._args(ev))
            elif k == S.K_ROLLBACK_END:
                pid, tid = self._op_lane(cpu)
                stack = out.open.get((pid, tid)) or []
                title = next((n for n in reversed(stack) if n.startswith("rollback")), None)
                if title is not None:
                    out.end(pid, tid, ts, title, self._args(ev))
            elif k in _RID_FIELDS:
                unit, bus, devfn = (ev[i] for i in _RID_FIELDS[k])
                pid, tid = self._rid(unit, bus, devfn)
                a = self._args(ev)
                if k == S.K_CTX_WRITE and isinstance(ev[S.F_CTX_WRITE_NEW_HI], int):
                    new_lo = ev[S.F_CTX_WRITE_NEW_LO]
                    a["did"] = (ev[S.F_CTX_WRITE_NEW_HI] >> 8) & 0xFFFF
                    a["present"] = bool(new_lo & 1) if isinstance(new_lo, int) else None
                out.instant(pid, tid, ts, name, "context", a)
            elif k == S.K_FLUSH_CONTEXT:
                unit, gran, sid = ev[S.F_FLUSH_CONTEXT_IOMMU], ev[S.F_FLUSH_CONTEXT_GRAN], ev[S.F_FLUSH_CONTEXT_SID]
                if gran == "device" and isinstance(sid, int):
                    pid, tid = self._rid(unit, sid >> 8, sid & 0xFF)
                else:
                    pid, tid = self._iommu(unit, TID_FLUSHES, "flushes")
                out.instant(pid, tid, ts, f"{name} {gran}", "flush", self._args(ev))
            elif k == S.K_FLUSH_DEV_IOTLB:
                sid = ev[S.F_FLUSH_DEV_IOTLB_SID]
                sid = sid if isinstance(sid, int) else -1
                pid, tid = self._rid(ev[S.F_FLUSH_DEV_IOTLB_IOMMU], sid >> 8, sid & 0xFF)
                out.instant(pid, tid, ts, name, "flush", self._args(ev))
            elif k in (S.K_FLUSH_IOTLB, S.K_FLUSH_WRITE_BUFFER):
                pid, tid = self._iommu(ev[_UNIT_FIELD[k]], TID_FLUSHES, "flushes")
                out.instant(pid, tid, ts, f"{name} {ev[S.F_FLUSH_IOTLB_GRAN]}" if k == S.K_FLUSH_IOTLB else name,
                            "flush", self._args(ev))
            elif k in _DID_FIELD:
                pid, tid = self._iommu(ev[_UNIT_FIELD[k]], TID_DIDS, "DIDs")
                out.instant(pid, tid, ts, f"{name} {ev[_DID_FIELD[k]]}", "did", self._args(ev))
            elif k == S.K_IOMMU_BITMAP:
                pid, tid = self._iommu(ev[S.F_IOMMU_BITMAP_IOMMU], TID_DIDS, "DIDs")
                out.instant(pid, tid, ts, name, "did", self._args(ev))
            elif k in (S.K_ROOT_WRITE, S.K_TRANSLATION_ENABLE):
                pid, tid = self._iommu(ev[_UNIT_FIELD[k]], TID_ROOT, "root table")
                out.instant(pid, tid, ts, name, "root", self._args(ev),
                            scope="p" if k == S.K_TRANSLATION_ENABLE else "t")
            elif k in _DEVICE_FIELDS:
                seg, bdf = (ev[i] for i in _DEVICE_FIELDS[k])
                pid, tid = self._device(seg, bdf)
                out.instant(pid, tid, ts, name, "device", self._args(ev))
            elif k in _TEXT_FIELD:
                pid, tid = self._xen(TID_OPS, "operations")
                text = ev[_TEXT_FIELD[k]]
                out.instant(pid, tid, ts, f"{name}: {text}"[:120], name, self._args(ev),
                            scope="t" if k == S.K_LOG else "p")
            else:
                pid, tid = self._xen(TID_DOMAINS, "domains")
                out.instant(pid, tid, ts, name, "domain", self._args(ev))
        except (TypeError, IndexError, ValueError):
            # A malformed event (untrusted trace): show it, do not stop.
            pid, tid = self._xen(TID_OPS, "operations")
            out.instant(pid, tid, ts, "malformed event", "error", {"event": self.pres.to_json(ev)})

    # --- hazard windows ---------------------------------------------------------

    def findings(self, items: Iterable[tuple[int, Any]], at_seq: int, end_ts: int | None = None) -> None:
        """Async b (start == at_seq) or e (end == at_seq; or ``end_ts`` for
        windows still open when the trace ends) of findings, on the track of
        their device as replay.hazards.chrome lays them out."""
        for n, f in items:
            pid, tid = hz_track(f)
            if pid == PID_XEN:
                self._xen(TID_OPS, "operations")
            elif tid:
                self._rid(pid - 1, (tid - 1) >> 8, (tid - 1) & 0xFF)
            else:
                self._iommu(pid - 1, 0, "hazards")
            if end_ts is None and (f.get("start") if isinstance(f, dict) else getattr(f, "start", None)) == at_seq:
                self.out.raw(hz_begin(f, n))
            else:
                ev = hz_end(f, n, at_seq if end_ts is None else end_ts)
                if end_ts is not None:
                    ev["ts"] = end_ts        # past a truncation the window ends with the trace
                self.out.raw(ev)


def export_chrome(events: Iterable[Any], header: dict[str, Any], schema: TraceSchema, fp: TextIO, *,
                  findings: Iterable[Any] = (),
                  stop: StopReport | Callable[[], StopReport | None] | None = None) -> int:
    """Write Chrome Trace Event JSON for ``events`` (this build's codes) to
    ``fp``; returns the number of trace events consumed.  ``findings`` are
    hazard windows (replay.hazards Finding objects or check --json dicts);
    ``stop`` the reader's StopReport, or a callable giving it once the
    events are consumed (a reader learns about damage as it decodes)."""
    fp.write('{"traceEvents":[\n')
    ex = ChromeExporter(fp, header, schema)
    fs = list(enumerate(findings))
    starts: dict[int, list[tuple[int, Any]]] = {}
    ends: dict[int, list[tuple[int, Any]]] = {}
    open_at_end: list[tuple[int, Any]] = []
    for n, f in fs:
        get = f.get if isinstance(f, dict) else (lambda key, f=f: getattr(f, key, None))
        s, e = get("start"), get("end")
        if isinstance(s, int):
            starts.setdefault(s, []).append((n, f))
            if isinstance(e, int) and e > s:
                ends.setdefault(e, []).append((n, f))
            else:
                open_at_end.append((n, f))
    count = 0
    for ev in events:
        ex.event(ev)
        count += 1
        seq = ex._last_seq
        if seq in ends:
            ex.findings(ends.pop(seq), seq)
        if seq in starts:
            ex.findings(starts.pop(seq), seq)
    if callable(stop):
        stop = stop()
    final = ex._last_seq + 1
    ex.out.close_all(final)
    # Windows still open at the end (or whose end lies past a truncation).
    rest = open_at_end + [x for v in ends.values() for x in v]
    never = {n for v in starts.values() for n, _ in v}     # start beyond the readable part
    ex.findings(sorted((x for x in rest if x[0] not in never), key=lambda x: x[0]), final, end_ts=final)
    other = {
        "tool": "vtdtrace",
        "engine": header.get("engine") if isinstance(header, dict) else None,
        "scenario": (header.get("scenario") or {}).get("name") if isinstance(header, dict) else None,
        "events": count,
        "complete": stop is None,
        "stop": stop.to_json() if stop is not None else None,
        "time_unit": "1 us = 1 event (ts is the event seq)",
    }
    fp.write('\n],"displayTimeUnit":"ns","otherData":' + _dumps(json_safe(other)) + "}\n")
    return count
