"""The diff report: one streaming pass over two traces (DESIGN §7, §8).

``diff_streams(a, b)`` walks both traces op group by op group (align.py),
aligns what differs, folds each trace's state alongside and compares the
states at every aligned operation boundary, then matches the two traces'
hazard findings.  The file layer (``diff_files``/``diff_traces``) only opens
the traces and finds their findings; the core takes a header and an event
stream per side, so tests and other tools can diff event lists directly.

What is reported:

* ``first_divergence`` -- the first row (in alignment order) that is not the
  same on both sides: its seq in each trace, its class (``only-a`` /
  ``only-b``: an event one trace has and the other lacks; ``args``: the same
  event with other field values; ``state``: the same events leaving a
  different state, which only happens when the platform knobs in the headers
  differ) and the last common events before it.  For a one-sided event the
  other seq is where the missing event would be (the next event of that
  trace).
* ``ops`` -- every aligned operation pair that is not identical, with its
  difference regions and their rows.
* ``state_diff`` -- the state difference at the end of aligned operations,
  listed where it *changes* (appears, changes, disappears): the difference at
  any boundary is the last entry at or before it.  Sections: context entries
  (decoded: present, did, did_owner, pt_owner, tt, aw, lo, hi), DIDs (in use,
  owner), devices (present, owner), identity maps, domains, caches (what the
  IOMMU may still hold); only changed fields.
* ``hazard_delta`` -- findings of one trace without a counterpart in the other:
  matched on kind, device, requester ID and step labels inside the same
  aligned operation.

Cost: identical operations are compared as whole lists (C speed) and fold
once -- while the two states are equal only trace A is folded.  Differing
operations get the hierarchical alignment and both folds until the states
are equal again.  Memory: one op group per side plus the look-ahead, the op
pair table, and the rows of differing operations.
"""

from __future__ import annotations

import gc
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable

from tracer import schema as S

from .. import caches as C
from ..render import PlatformView, cache_view, did_owner, fmt_rid, hex64, pt_owner
from ..state import ZERO, BadEvent, fold, initial_state
from .align import (ARGS, C_SAME, CLASSES, ONLY_A, ONLY_B, SAME, Alignment, OpPair, align_ops,
                    groups_equal, op_groups, pair_groups)

CONTEXT_EVENTS = 3
# Detail kept for the report: events of at most this many differing rows
# (over all pairs) are kept for rendering; counts are always exact.
DETAIL_ROWS = 20_000
CHUNK = 1024

SECTIONS = ("context", "dids", "devices", "idmaps", "domains", "caches")


# --------------------------------------------------------------------------------
# Input


class Side:
    """One trace to compare: its header and its events as a stream of chunks
    (lists of event arrays).  ``trace`` (a reader Trace) supplies the stop
    report after the pass.  Hazard findings come from ``findings`` (already
    computed, e.g. from the sidecar) or from ``analysis`` (a
    ``replay.hazards.Analysis(header)`` the pass feeds with the events it
    reads anyway, and whose folded state it uses); with neither, the hazard
    delta is not available."""

    def __init__(self, header: dict | None, chunks: Iterable[list], *, name: str = "A",
                 schema=None, findings=None, analysis=None, trace=None) -> None:
        self.header = header if isinstance(header, dict) else {}
        self.chunks = chunks
        self.name = name
        self.schema = schema
        self.findings = findings    # a list of findings (dicts or Finding objects), or None
        self.analysis = analysis    # or a replay.hazards.Analysis to run inline over the events
        self.trace = trace
        self.count = 0          # events seen by the pass

    @classmethod
    def from_events(cls, header: dict | None, events: Iterable[list], **kw) -> "Side":
        """From a flat event iterable (a ListSink's list, a generator)."""
        return cls(header, _batched(events), **kw)

    @classmethod
    def from_trace(cls, trace, *, name=None, findings=None, analysis=None) -> "Side":
        """From an open reader Trace (replay.reader.open_trace)."""
        translate = _translator(trace.schema)
        chunks = trace.iter_chunks()
        if translate is not None:
            chunks = map(translate, chunks)
        return cls(trace.header, chunks, name=str(trace.path) if name is None else name,
                   schema=trace.schema, findings=findings, analysis=analysis, trace=trace)

    def info(self) -> dict:
        h = self.header
        eng = h.get("engine") if isinstance(h.get("engine"), dict) else {}
        scen = h.get("scenario") if isinstance(h.get("scenario"), dict) else {}
        out = {"trace": self.name, "engine": _js(eng.get("name")), "cx16": _js(eng.get("cx16")),
               "scenario": _js(scen.get("name")), "events": self.count, "complete": True, "stop": None}
        if self.trace is not None:
            out["events"] = self.trace.count
            out["complete"] = self.trace.complete
            out["stop"] = self.trace.stop.to_json() if self.trace.stop else None
        return out


def _batched(events):
    if isinstance(events, list):
        for i in range(0, len(events), CHUNK):
            yield events[i:i + CHUNK]
        return
    buf = []
    for ev in events:
        buf.append(ev)
        if len(buf) >= CHUNK:
            yield buf
            buf = []
    if buf:
        yield buf


def _translator(schema):
    """Rewrite events of a trace written with another catalogue to this
    build's kind/function codes (None when it already uses them)."""
    if schema is None or schema.is_current:
        return None
    unknown = len(S.KINDS)
    kmap = [c if c >= 0 else unknown for c in schema.to_current]
    fmap = [S.FUNC_CODE.get(name, len(S.FUNCS) + i) for i, name in enumerate(schema.funcs)]

    def translate(evs):
        out = []
        for ev in evs:
            ev = list(ev)
            k = ev[0] if ev else None
            if ev:
                ev[0] = kmap[k] if type(k) is int and 0 <= k < len(kmap) else unknown
            f = ev[4] if len(ev) > 4 else None
            if type(f) is int and 0 <= f < len(fmap):
                ev[4] = fmap[f]
            out.append(ev)
        return out
    return translate


def _js(v):
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (list, tuple)):
        return [_js(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _js(x) for k, x in v.items()}
    return repr(v)


# --------------------------------------------------------------------------------
# Output


@dataclass
class StateDiff:
    """The state difference after an aligned operation pair, where it changes."""

    pair: int
    op_a: int | None
    op_b: int | None
    seq_a: int            # state_at(seq_a) of A ...
    seq_b: int            # ... against state_at(seq_b) of B
    row: int              # last row of the pair
    changes: list         # [{"section", <identity>, "a": {...}, "b": {...}}]

    def to_json(self) -> dict:
        return {"op_a": self.op_a, "op_b": self.op_b, "seq_a": self.seq_a, "seq_b": self.seq_b,
                "changes": self.changes}


@dataclass
class HazardDelta:
    """A finding present in one trace only, with its position in the alignment."""

    side: str            # "a" | "b"
    finding: dict
    row: int | None      # the row of its start event
    pair: int | None


@dataclass
class DiffReport:
    a: dict
    b: dict
    header_diff: list
    alignment: Alignment
    first_divergence: dict | None
    state_diff: list
    hazards: list                       # [HazardDelta] sorted by row
    hazards_available: bool
    differing_pairs: int = 0
    renumbered: int = 0
    state_note: str | None = None       # why the state comparison stopped early
    detail_truncated: bool = False
    presenters: tuple = field(default=(None, None), repr=False)

    @property
    def equivalent(self) -> bool:
        """Same event payloads in the same operations (headers aside)."""
        return self.differing_pairs == 0 and self.renumbered == 0

    @property
    def damaged(self) -> bool:
        return not (self.a["complete"] and self.b["complete"])

    @property
    def exit_code(self) -> int:
        """DESIGN §8: 3 damaged input > 1 different > 0 equivalent."""
        if self.damaged:
            return 3
        return 0 if self.equivalent else 1

    def hazard_delta(self) -> dict:
        out = {"only_a": [h.finding for h in self.hazards if h.side == "a"],
               "only_b": [h.finding for h in self.hazards if h.side == "b"]}
        if not self.hazards_available:
            out["available"] = False
        return out

    # -- positions for the side-by-side view ----------------------------------------
    def next_hazard(self, row: int) -> HazardDelta | None:
        for h in self.hazards:
            if h.row is not None and h.row > row:
                return h
        return None

    def prev_hazard(self, row: int) -> HazardDelta | None:
        for h in reversed(self.hazards):
            if h.row is not None and h.row < row:
                return h
        return None

    def to_json(self) -> dict:
        from .text import ops_json
        return {
            "equivalent": self.equivalent,
            "header_diff": self.header_diff,
            "first_divergence": self.first_divergence,
            "ops": ops_json(self),
            "state_diff": [s.to_json() for s in self.state_diff],
            "hazard_delta": self.hazard_delta(),
            "a": self.a,
            "b": self.b,
            "summary": self.summary(),
        }

    def summary(self) -> dict:
        al = self.alignment
        counts = {"same": 0, "different": 0, "only-a": 0, "only-b": 0}
        for p in al.pairs:
            counts[p.status] += 1
        rows = {c: 0 for c in CLASSES}
        for reg in al.regions:
            for c, n in reg.counts.items():
                rows[c] += n
        out = {"op_pairs": len(al.pairs), "ops_same": counts["same"], "ops_different": counts["different"],
               "ops_only_a": counts["only-a"], "ops_only_b": counts["only-b"], "ops_renumbered": self.renumbered,
               "regions": len(al.regions), "rows": al.n_rows,
               "rows_args": rows[ARGS], "rows_only_a": rows[ONLY_A], "rows_only_b": rows[ONLY_B]}
        if self.state_note:
            out["state_note"] = self.state_note
        if self.detail_truncated:
            out["detail_truncated"] = True
        return out


# --------------------------------------------------------------------------------
# Header difference


def header_diff(ha: dict, hb: dict) -> list:
    """[{"path", "a", "b"}] for every differing leaf (the writer's format and
    schema maps included; long strings summarised)."""
    out: list = []
    _hdiff(ha, hb, "", out)
    return out


_MISS = object()


def _hdiff(a, b, path, out):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _hdiff(a.get(k, _MISS), b.get(k, _MISS), f"{path}.{k}" if path else str(k), out)
        return
    if isinstance(a, list) and isinstance(b, list) and path not in ("schema.kinds", "schema.funcs"):
        for i in range(max(len(a), len(b))):
            _hdiff(a[i] if i < len(a) else _MISS, b[i] if i < len(b) else _MISS, f"{path}[{i}]", out)
        return
    if a is _MISS or b is _MISS or a != b or type(a) is not type(b):
        if a is not _MISS and b is not _MISS and a == b and type(a) is type(b):
            return
        out.append({"path": path, "a": _hval(a), "b": _hval(b)})


def _hval(v):
    if v is _MISS:
        return None
    if isinstance(v, str) and (len(v) > 80 or "\n" in v):
        import hashlib
        return f"<{len(v)} chars, sha256 {hashlib.sha256(v.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}>"
    if isinstance(v, list) and len(_js(v).__repr__()) > 200:
        return f"<list of {len(v)}>"
    return _js(v)


# --------------------------------------------------------------------------------
# State tracking


_CACHE_KINDS = {S.K_CTX_WRITE, S.K_CACHE_SYNC, S.K_FLUSH_CONTEXT, S.K_FLUSH_IOTLB, S.K_FLUSH_DEV_IOTLB,
                S.K_TRANSLATION_ENABLE}


class _Touched:
    __slots__ = ("ctx", "dids", "did_owner", "pages", "pages_all", "devices", "idmaps", "idmaps_all",
                 "domains", "units", "units_all")

    def __init__(self) -> None:
        self.ctx = set()
        self.dids = set()
        self.did_owner = set()
        self.pages = set()
        self.pages_all = False
        self.devices = set()
        self.idmaps = set()
        self.idmaps_all = False
        self.domains = set()
        self.units = set()
        self.units_all = False

    def scan(self, events) -> None:
        for ev in events:
            try:
                k = ev[0]
                if k == S.K_CTX_WRITE:
                    self.ctx.add((ev[6], ev[7], ev[8]))
                    self.units.add(ev[6])
                elif k in _CACHE_KINDS:
                    self.units.add(ev[6])
                elif k == S.K_DID_BITMAP:
                    self.dids.add((ev[6], ev[7]))
                elif k == S.K_DID_MAP:
                    self.dids.add((ev[6], ev[7]))
                    self.did_owner.add((ev[6], ev[7]))
                elif k == S.K_PT_ALLOC:
                    self.pages.add(ev[7])
                elif k == S.K_PT_FREE:
                    self.pages_all = True
                elif k in (S.K_OWNER_MOVE, S.K_DEVICE_ADD, S.K_DEVICE_REMOVE):
                    self.devices.add((ev[6], ev[7]))
                elif k in (S.K_IDMAP_ADD, S.K_IDMAP_REMOVE):
                    self.idmaps.add((ev[6], ev[7], ev[8]))
                elif k in (S.K_DOMAIN_CREATE, S.K_DOMAIN_DYING):
                    self.domains.add(ev[6])
                elif k == S.K_DOMAIN_DESTROY:
                    self.domains.add(ev[6])
                    self.pages_all = self.idmaps_all = True
            except (TypeError, IndexError, KeyError, AttributeError):
                continue


class _Tracker:
    """Keeps both traces' states and their decoded difference.

    A side with a hazard ``Analysis`` running inline is fed every event (the
    analysis folds its own state, ``analysis.st``, which is used as is).  A
    side without one folds its own state -- lazily: while the two states are
    equal, a lazy side is not folded at all (its state would be the other
    side's); on the first difference it gets a copy and is folded until the
    states are equal again.  With no analysis on either side only A is folded
    over identical stretches."""

    def __init__(self, ha: dict, hb: dict, view_a: PlatformView, view_b: PlatformView,
                 analysis_a=None, analysis_b=None) -> None:
        self.va, self.vb = view_a, view_b
        self.an = (analysis_a, analysis_b)
        sa = analysis_a.st if analysis_a is not None else initial_state(ha)
        sb = analysis_b.st if analysis_b is not None else initial_state(hb)
        self.st = [sa, sb]
        # which side may skip folding while the states are equal
        self.lazy = 1 if analysis_b is None else (0 if analysis_a is None else None)
        self.equal = (sa.cm, sa.coherent) == (sb.cm, sb.coherent)
        self.detached = False         # lazy side currently holds its own copy
        if not self.equal and self.lazy is not None:
            self.detached = True
        self.diff: dict = {}
        self.broken: str | None = None

    @property
    def sa(self):
        return self.st[0]

    @property
    def sb(self):
        return self.st[1]

    def _fold(self, side: int, events) -> None:
        an = self.an[side]
        if an is not None:
            an.feed(events)
            if an.bad is not None and not self.broken:
                self.broken = f"state comparison stopped: {an.bad[1]}"
        else:
            fold(self.st[side], events)

    # -- folding ----------------------------------------------------------------------
    def feed(self, ea: list, eb: list, same: bool) -> bool:
        """Fold a pair's events; returns True when the decoded difference
        may have changed (call ``update`` then)."""
        try:
            if self.equal and same:
                lz = self.lazy
                for side, evs in ((0, ea), (1, eb)):
                    if side != lz or self.detached:
                        self._fold(side, evs)
                return False
            if self.equal and self.lazy is not None and not self.detached:
                lz = self.lazy
                self.st[lz] = self.st[1 - lz].copy()
                self.detached = True
            self.equal = False
            self._fold(0, ea)
            self._fold(1, eb)
        except BadEvent as exc:
            self.broken = f"state comparison stopped: {exc}"
        if self.broken:
            self.diff = {}
            return False
        return True

    def update(self, ea: list, eb: list) -> None:
        if self.broken:
            return
        t = _Touched()
        t.scan(ea)
        t.scan(eb)
        sa, sb, va, vb = self.sa, self.sb, self.va, self.vb
        d = self.diff
        # context entries: touched, already differing, or with a touched DID / table page
        keys = set(t.ctx)
        keys.update(k[1] for k in d if k[0] == "context")
        if t.pages_all:
            keys.update(sa.ctx)
            keys.update(sb.ctx)
        elif t.did_owner or t.pages:
            for st in (sa, sb):
                for key, (lo, hi) in st.ctx.items():
                    if (key[0], (hi >> 8) & 0xFFFF) in t.did_owner or (lo & C.PAGE_MASK_4K) in t.pages:
                        keys.add(key)
        for key in keys:
            self._set(d, ("context", key), _ctx_fields(sa, va, key), _ctx_fields(sb, vb, key))
        keys = set(t.dids)
        keys.update(k[1] for k in d if k[0] == "dids")
        for key in keys:
            self._set(d, ("dids", key), _did_fields(sa, va, key), _did_fields(sb, vb, key))
        keys = set(t.devices)
        keys.update(k[1] for k in d if k[0] == "devices")
        for key in keys:
            self._set(d, ("devices", key), _dev_fields(sa, va, key), _dev_fields(sb, vb, key))
        keys = set(t.idmaps)
        keys.update(k[1] for k in d if k[0] == "idmaps")
        if t.idmaps_all:
            keys.update(sa.idmaps)
            keys.update(sb.idmaps)
        for key in keys:
            self._set(d, ("idmaps", key), _idmap_fields(sa, key), _idmap_fields(sb, key))
        keys = set(t.domains)
        keys.update(k[1] for k in d if k[0] == "domains")
        for key in keys:
            self._set(d, ("domains", key), {"status": sa.domains.get(key)}, {"status": sb.domains.get(key)})
        # caches: only units whose raw cache tables differ
        units = set(t.units)
        units.update(k[1] for k in d if k[0] == "caches")
        if t.did_owner or t.pages or t.pages_all:
            units.update(u for (u, _b, _d) in sa.ctx)
            units.update(u for (u, _b, _d) in sb.ctx)
        if units:
            raw_equal = all(getattr(sa, n) == getattr(sb, n) for n in ("cc", "tlb", "devtlb", "hw", "pending"))
            for u in units:
                if raw_equal and _unit_ctx_equal(sa, sb, u):
                    d.pop(("caches", u), None)
                    continue
                self._set(d, ("caches", u), cache_view(sa, va, u), cache_view(sb, vb, u))

    @staticmethod
    def _set(d, key, a: dict, b: dict) -> None:
        if a == b:
            d.pop(key, None)
            return
        ca = {k: v for k, v in a.items() if b.get(k, _MISS) != v}
        cb = {k: v for k, v in b.items() if a.get(k, _MISS) != v}
        d[key] = (ca, cb)

    def converged(self) -> bool:
        """Equal states again: a lazy side goes back to not folding."""
        if self.equal or self.diff or self.broken:
            return self.equal
        sa, sb = self.st
        if (sa.cm, sa.coherent) == (sb.cm, sb.coherent) and all(getattr(sa, n) == getattr(sb, n) for n in _TABLES) \
                and (sa.open_op, sa.rollback) == (sb.open_op, sb.rollback):
            self.equal = True
            if self.lazy is not None and self.detached:
                self.detached = False
                lz = self.lazy
                self.st[lz] = initial_state({})      # placeholder; refreshed by the copy on divergence
        return self.equal

    # -- rendering --------------------------------------------------------------------
    def changes(self) -> list:
        out = []
        for (section, key), (a, b) in sorted(self.diff.items(), key=_change_order):
            ident = _ident(section, key, self.va, self.vb)
            out.append({"section": section, **ident, "a": _js(a), "b": _js(b)})
        return out


from ..state import TABLES as _TABLES  # noqa: E402


def _change_order(item):
    (section, key), _ = item
    return (SECTIONS.index(section), repr(_sortable(key)))


def _sortable(key):
    if isinstance(key, tuple):
        return tuple(_sortable(k) for k in key)
    return (0, key) if isinstance(key, int) else (1, str(key))


def _ident(section, key, va, vb) -> dict:
    if section == "context":
        u, bus, devfn = key
        return {"iommu": u, "rid": va.rid(u, bus, devfn) if type(bus) is int and type(devfn) is int else str(key)}
    if section == "dids":
        return {"iommu": key[0], "did": key[1]}
    if section == "devices":
        seg, bdf = key
        return {"bdf": fmt_rid(seg, bdf >> 8, bdf & 0xFF) if type(seg) is int and type(bdf) is int else str(key)}
    if section == "idmaps":
        dom, base, end = key
        return {"domain": va.domain_name(dom) if dom in va.names else vb.domain_name(dom),
                "base": hex64(base), "end": hex64(end)}
    if section == "domains":
        return {"domain": va.domain_name(key) if key in va.names else vb.domain_name(key)}
    return {"iommu": key}


def _ctx_fields(st, view, key) -> dict:
    lo, hi = st.ctx.get(key, ZERO)
    try:
        u = key[0]
        return {"present": bool(lo & 1), "did": (hi >> 8) & 0xFFFF, "did_owner": did_owner(st, view, u, lo, hi),
                "pt_owner": pt_owner(st, view, lo), "tt": (lo >> 2) & 3, "aw": hi & 7,
                "lo": hex64(lo), "hi": hex64(hi)}
    except TypeError:
        return {"lo": _js(lo), "hi": _js(hi)}


def _did_fields(st, view, key) -> dict:
    owner = st.did_map.get(key)
    return {"in_use": key in st.did_bits, "owner": view.domain_name(owner) if owner is not None else None}


def _dev_fields(st, view, key) -> dict:
    present = key in st.present
    owner = st.owners.get(key)
    return {"present": present, "owner": view.domain_name(owner) if owner is not None else None}


def _idmap_fields(st, key) -> dict:
    v = st.idmaps.get(key)
    if v is None:
        return {"mapped": False}
    return {"mapped": True, "access": v[0], "refcount": v[1]}


def _unit_ctx_equal(sa, sb, u) -> bool:
    a = {k: v for k, v in sa.ctx.items() if k[0] == u}
    b = {k: v for k, v in sb.ctx.items() if k[0] == u}
    return a == b


# --------------------------------------------------------------------------------
# Findings


FINDING_KEYS = ("kind", "severity", "device", "rid", "iommu", "start", "end", "open_at_end",
                "start_label", "end_label", "detail")


def finding_dict(f) -> dict:
    """A finding (dict or object) as the check --json dict."""
    if hasattr(f, "to_json"):
        f = f.to_json()
    if isinstance(f, dict):
        get = f.get
    else:
        def get(k, default=None):
            return getattr(f, k, default)
    out = {k: get(k) for k in FINDING_KEYS}
    labels = get("labels")
    if isinstance(labels, (list, tuple)) and len(labels) == 2:
        out["start_label"] = out["start_label"] if out["start_label"] is not None else labels[0]
        out["end_label"] = out["end_label"] if out["end_label"] is not None else labels[1]
    if out["open_at_end"] is None:
        out["open_at_end"] = out["end"] is None
    return _js(out)


def _finding_key(f: dict):
    return (f.get("kind"), f.get("device"), f.get("rid"), f.get("start_label"), f.get("end_label"))


def hazard_delta(al: Alignment, findings_a, findings_b) -> list:
    """Findings without a counterpart (same key, same aligned op pair)."""
    groups: dict = {}
    for side, fs in (("a", findings_a), ("b", findings_b)):
        for f in fs or ():
            d = finding_dict(f)
            start = d.get("start")
            pair = al.pair_of_seq(side, start) if type(start) is int else None
            key = (_finding_key(d), pair.index if pair is not None else -1)
            groups.setdefault(key, ([], []))[0 if side == "a" else 1].append(d)
    out = []
    for (fkey, pidx), (fa, fb) in groups.items():
        fa.sort(key=_fstart)
        fb.sort(key=_fstart)
        n = min(len(fa), len(fb))
        for side, rest in (("a", fa[n:]), ("b", fb[n:])):
            for d in rest:
                start = d.get("start")
                row = al.nearest_row(side, start) if type(start) is int else None
                out.append(HazardDelta(side, d, row, pidx if pidx >= 0 else None))
    out.sort(key=lambda h: (h.row if h.row is not None else -1, h.side, _fstart(h.finding),
                            str(h.finding.get("kind")), str(h.finding.get("rid"))))
    return out


def _fstart(d):
    s = d.get("start")
    return s if type(s) is int else -1


# --------------------------------------------------------------------------------
# The pass


def diff_streams(a: Side, b: Side, *, context: int = CONTEXT_EVENTS, detail_rows: int = DETAIL_ROWS,
                 window: int | None = None) -> DiffReport:
    """Compare two traces given as Sides.  Streams both op group by op group."""
    from replay.jsonout import EventPresenter
    from replay.reader import current_schema

    va, vb = PlatformView(a.header), PlatformView(b.header)
    tracker = _Tracker(a.header, b.header, va, vb, a.analysis, b.analysis)
    al = Alignment()
    first = None
    tail: deque = deque(maxlen=max(context, 1))
    budget = detail_rows
    truncated = False
    differing = renumbered = 0
    state_diffs: list = []
    last_reported: list = []
    pres = (EventPresenter(a.schema or current_schema(), a.header),
            EventPresenter(b.schema or current_schema(), b.header))
    seen = [0, 0]      # last seq seen per side

    counter_a, counter_b = _Counter(a.chunks), _Counter(b.chunks)
    kw = {} if window is None else {"window": window}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for ga, gb in pair_groups(op_groups(counter_a), op_groups(counter_b), **kw):
            ea = ga.events if ga is not None else []
            eb = gb.events if gb is not None else []
            same = ga is not None and gb is not None and groups_equal(ea, eb)
            if same:
                pair = OpPair(0, ga, gb, SAME)
                al.add(pair)
                if ga.op != gb.op:
                    renumbered += 1
                    if first is None:
                        first = _first_div(pair, 0, "args", ("op",), ea, eb, tail, pres, context)
                        first["fields"] = ["op"]
                if context:
                    tail.extend(zip(ea[-context:], eb[-context:]))
            else:
                status = "different" if (ga is not None and gb is not None) else (ONLY_A if gb is None else ONLY_B)
                pair = OpPair(0, ga, gb, status)
                pair.rows = align_ops(ga, gb, funcs_a=pres[0].funcs, funcs_b=pres[1].funcs)
                if all(c == C_SAME for c in pair.rows.cls):
                    # Equal payloads that groups_equal could not prove (irregular seqs).
                    pair.status = SAME
                else:
                    differing += 1
                al.add(pair)
                if pair.status != SAME:
                    if budget > 0:
                        pair.events_a, pair.events_b = ea, eb
                        budget -= len(pair.rows)
                    else:
                        truncated = True
                    if first is None:
                        first = _first_from_rows(pair, ea, eb, tail, pres, context, seen)
                if context:
                    tail.extend(_same_tail(pair, ea, eb, context))
            if ga is not None:
                seen[0] = ga.last
            if gb is not None:
                seen[1] = gb.last
            if tracker.feed(ea, eb, same):
                tracker.update(ea, eb)
                changes = tracker.changes()
                if changes != last_reported:
                    row = pair.row_start + pair.n_rows - 1
                    state_diffs.append(StateDiff(pair.index, pair.op_a, pair.op_b, seen[0], seen[1], row, changes))
                    last_reported = changes
                    if first is None and changes:
                        first = _first_state(pair, seen, ea, eb, tail, pres, context)
                tracker.converged()
    finally:
        if gc_was:
            gc.enable()
    a.count, b.count = counter_a.count, counter_b.count
    for side in (a, b):
        if side.analysis is not None and side.findings is None:
            side.findings = side.analysis.finish()
    fa = a.findings
    fb = b.findings
    available = fa is not None and fb is not None
    hz = hazard_delta(al, fa, fb) if available else []
    return DiffReport(a=a.info(), b=b.info(), header_diff=header_diff(a.header, b.header), alignment=al,
                      first_divergence=first, state_diff=state_diffs, hazards=hz, hazards_available=available,
                      differing_pairs=differing, renumbered=renumbered, state_note=tracker.broken,
                      detail_truncated=truncated, presenters=pres)


class _Counter:
    """Counts the events that went through (for Sides without a reader)."""

    def __init__(self, chunks) -> None:
        self._it = iter(chunks)
        self.count = 0

    def __iter__(self):
        for ch in self._it:
            self.count += len(ch)
            yield ch


def _same_tail(pair: OpPair, ea, eb, n: int):
    r = pair.rows
    out = []
    k = len(r) - 1
    while k >= 0 and len(out) < n:
        if r.cls[k] == C_SAME:
            out.append((ea[r.ia[k]], eb[r.ib[k]]))
        k -= 1
    out.reverse()
    return out


def _ev_brief(pres, ev) -> dict:
    """A compact description of an event for context lines."""
    k = pres._kind(ev)
    if k is None:
        return {"seq": _js(ev[1]) if isinstance(ev, list) and len(ev) > 1 else None, "kind": None,
                "text": pres.text_args(ev)}
    return {"seq": ev[1], "kind": k[0].name, "func": pres.func_name(ev[4]), "label": _js(ev[5]),
            "text": pres.text_args(ev)}


def _context(tail: deque, pres, n: int, extra=()) -> list:
    items = list(tail) + list(extra)
    items = items[-n:] if n else []
    out = []
    for ea, eb in items:
        d = _ev_brief(pres[0], ea)
        seq_a = d.pop("seq")
        out.append({"seq_a": seq_a, "seq_b": eb[1] if isinstance(eb, list) and len(eb) > 1 else None, **d})
    return out


def _first_div(pair, k, cls, fields, ea, eb, tail, pres, n) -> dict:
    return {"seq_a": ea[k][1], "seq_b": eb[k][1], "class": cls, "op_a": pair.op_a, "op_b": pair.op_b,
            "context": _context(tail, pres, n)}


def _first_from_rows(pair: OpPair, ea, eb, tail, pres, n, seen) -> dict:
    r = pair.rows
    k = next(i for i, c in enumerate(r.cls) if c != C_SAME)
    prior = [(ea[r.ia[i]], eb[r.ib[i]]) for i in range(max(0, k - n), k) if r.cls[i] == C_SAME]
    cls = CLASSES[r.cls[k]]
    seq_a = r.sa[k] or None
    seq_b = r.sb[k] or None
    if seq_a is None:
        seq_a = _next_seq(r.sa, k, pair.first_a, pair.count_a, seen[0])
    if seq_b is None:
        seq_b = _next_seq(r.sb, k, pair.first_b, pair.count_b, seen[1])
    out = {"seq_a": seq_a, "seq_b": seq_b, "class": cls, "op_a": pair.op_a, "op_b": pair.op_b,
           "context": _context(tail, pres, n, prior)}
    if cls == ARGS:
        out["fields"] = list(r.fields.get(k, ()))
    ia, ib = r.ia[k], r.ib[k]
    out["event_a"] = _ev_brief(pres[0], ea[ia]) if ia >= 0 else None
    out["event_b"] = _ev_brief(pres[1], eb[ib]) if ib >= 0 else None
    return out


def _next_seq(arr, k, first, count, seen_before):
    """Where a missing event would be: the next event of that side after row k."""
    for s in arr[k:]:
        if s:
            return s
    if count:
        return first + count
    return seen_before + 1


def _first_state(pair, seen, ea, eb, tail, pres, n) -> dict:
    return {"seq_a": seen[0], "seq_b": seen[1], "class": "state", "op_a": pair.op_a, "op_b": pair.op_b,
            "context": _context(tail, pres, n)}


# --------------------------------------------------------------------------------
# The file layer


class DiffInputError(Exception):
    """A path that is not a trace (CLI exit 2)."""

    def __init__(self, path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _hazards():
    try:
        from replay import hazards
    except ImportError:
        return None
    return hazards


def cached_findings(path, trace):
    """The findings of a trace from its sidecar, when a fresh entry is there
    (None otherwise, or when this build has no analysers)."""
    hz = _hazards()
    if hz is None:
        return None
    public = getattr(hz, "cached_findings", None)
    try:
        if public is not None:
            got = public(path)
            return None if got is None else got.findings
        # replay.hazards has no public "cached only" call yet: read its entry.
        from replay.hazards import analyse as _an
        from replay.reader import trace_fingerprint
        from replay.sidecar import Sidecar
        with Sidecar.open(path, trace_fingerprint(path)) as sc:
            got = _an._load_cached(sc, trace)
        return None if got is None else got.findings
    except Exception:       # a cache problem is never an error: recompute
        return None


def store_findings(path, trace, analysis, findings) -> None:
    """Put findings computed inline into the trace's sidecar (best effort), as
    findings_for_trace(path, sidecar=True) would have."""
    hz = _hazards()
    if hz is None:
        return
    try:
        public = getattr(hz, "store_findings", None)
        stop = trace.stop
        if analysis.bad is not None and stop is None:
            from replay.reader import StopReport
            stop = StopReport("corrupt", 0, 0, analysis.seq, analysis.bad[1])
        if public is not None:
            public(path, hz.TraceFindings(path, trace.header, findings, analysis.seq, stop is None, stop))
            return
        from replay.hazards import analyse as _an
        from replay.hazards.findings import encode_findings
        from replay.reader import trace_fingerprint
        from replay.sidecar import Sidecar
        with Sidecar.open(path, trace_fingerprint(path)) as sc:
            if sc.writable:
                sc.put(_an.SIDECAR_KEY, {"build": _an._build_key(), "events": analysis.seq,
                                         "stop": list(stop) if stop is not None else None,
                                         "findings": encode_findings(findings)})
                sc.commit()
    except Exception:
        pass


def diff_traces(trace_a, trace_b, *, findings: bool = True, names=None, paths=None, **kw) -> DiffReport:
    """Diff two open reader Traces (their readable prefixes when damaged).

    Findings: from the sidecar when cached there (``paths`` given), else the
    hazard analysers run inline in the same pass (and, with ``paths``, their
    result is cached for next time)."""
    na, nb = names or (None, None)
    sides = []
    hz = _hazards() if findings else None
    for trace, name, path in ((trace_a, na, (paths or (None, None))[0]),
                              (trace_b, nb, (paths or (None, None))[1])):
        fs = analysis = None
        if hz is not None:
            fs = cached_findings(path, trace) if path is not None else None
            if fs is None:
                analysis = hz.Analysis(trace.header)
        sides.append(Side.from_trace(trace, name=name, findings=fs, analysis=analysis))
    report = diff_streams(*sides, **kw)
    if paths is not None:
        for side, path in zip(sides, paths):
            if side.analysis is not None:
                store_findings(path, side.trace, side.analysis, side.findings)
    return report


def diff_files(path_a, path_b, *, findings: bool = True, **kw) -> DiffReport:
    """Open both files and diff them.  Raises DiffInputError for a path that
    is not a trace (exit 2); a damaged trace is diffed on its readable part
    (report.damaged, exit 3)."""
    from replay.reader import NotATrace, open_trace

    try:
        ta = open_trace(path_a)
    except NotATrace as exc:
        raise DiffInputError(path_a, exc.message) from None
    try:
        try:
            tb = open_trace(path_b)
        except NotATrace as exc:
            raise DiffInputError(path_b, exc.message) from None
        with tb:
            return diff_traces(ta, tb, findings=findings, names=(str(path_a), str(path_b)),
                               paths=(path_a, path_b), **kw)
    finally:
        ta.close()
