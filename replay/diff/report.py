"""The diff report: one streaming pass over two traces (docs/CLI.md#diff-json).

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

Cost (``_Pass``): while the traces agree, the *lockstep lane* compares the
next slice of each trace as whole lists (C speed, modulo a constant seq/op
shift), a chunk byte-identical to the other trace's is decoded once for both,
and only one state is folded -- none at all when A's checkpoints are cached
in its sidecar (its state is then fetched at the first difference).  From the
operation holding a mismatch on, the *alignment lane* pairs op groups, aligns
differing ones by call/lock structure and folds both states, comparing them at
every boundary, until a pair is identical again.  While the states differ
over identical stretches both are folded and compared at the end of each
slice.  Findings: the hazard analysers run inside the pass when the sidecar
does not hold them (no second decode), and are stored there for next time.
Memory: one chunk and one operation per side plus the look-ahead, the op pair
table, and the rows of differing operations (their events up to DETAIL_ROWS).
"""

from __future__ import annotations

import gc
import os
from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import compress
from operator import attrgetter, itemgetter

from replay.codes import event_translator
from tracer import schema as S

from .. import caches as C
from ..render import PlatformView, cache_view, did_owner, fmt_rid, hex64, pt_owner
from ..state import ZERO, BadEvent, fold, initial_state
from .align import (
    ARGS,
    C_SAME,
    CLASSES,
    MAX_GROUP_EVENTS,
    ONLY_A,
    ONLY_B,
    SAME,
    Alignment,
    EventStream,
    OpPair,
    Pairer,
    _delta,
    _group_key,
    align_ops,
    groups_equal,
    last_op_start,
    slice_mismatch,
)
from .hazard_pairs import pair_changed

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
                 schema=None, findings=None, analysis=None, trace=None, state_at=None) -> None:
        self.header = header if isinstance(header, dict) else {}
        self.chunks = chunks
        self.name = name
        self.schema = schema
        self.findings = findings    # a list of findings (dicts or Finding objects), or None
        self.analysis = analysis    # or a replay.hazards.Analysis to run inline over the events
        self.trace = trace
        self.state_at = state_at    # optional n -> ReplayState (a copy): lets A skip its fold
        self.count = 0          # events seen by the pass

    @classmethod
    def from_events(cls, header: dict | None, events: Iterable[list], **kw) -> Side:
        """From a flat event iterable (a ListSink's list, a generator)."""
        return cls(header, _batched(events), **kw)

    @classmethod
    def from_trace(cls, trace, *, name=None, findings=None, analysis=None) -> Side:
        """From an open reader Trace (replay.reader.open_trace)."""
        return cls(trace.header, TraceChunks(trace), name=str(trace.path) if name is None else name,
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


class TraceChunks:
    """The chunks of an open reader Trace by index (the EventStream source):
    ``decode(i)`` the events (in this build's codes), ``same_bytes(i, other,
    j)`` whether chunk i's payload is byte-identical to chunk j of another
    source's trace -- then one decoded list serves both."""

    def __init__(self, trace) -> None:
        self.trace = trace
        self.translate = event_translator(trace.schema)
        self._chunks = trace.chunks
        self._fd = None
        try:
            self._fd = os.open(trace.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (OSError, TypeError, ValueError):
            self._fd = None

    @property
    def count(self) -> int:
        return len(self.trace.chunks)

    def decode(self, i: int):
        evs = next(self.trace.iter_chunks(i), None)
        if evs is not None and self.translate is not None:
            evs = self.translate(evs)
        return evs

    def _head(self, i: int):
        from replay.reader import CHUNK_HEADER
        off = self._chunks[i][0]
        head = os.pread(self._fd, CHUNK_HEADER.size, off)
        if len(head) != CHUNK_HEADER.size:
            return None
        _sync, _tag, plen, count, first, pcrc, _hcrc = CHUNK_HEADER.unpack(head)
        return off + CHUNK_HEADER.size, plen, count, first, pcrc

    def same_bytes(self, i: int, other: TraceChunks, j: int) -> bool:
        if self._fd is None or getattr(other, "_fd", None) is None or self.translate or other.translate:
            return False
        try:
            ha, hb = self._head(i), other._head(j)
            if ha is None or hb is None or ha[1:] != hb[1:]:
                return False
            pa = os.pread(self._fd, ha[1], ha[0])
            pb = os.pread(other._fd, hb[1], hb[0])
        except (OSError, IndexError):
            return False
        return len(pa) == ha[1] and pa == pb

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


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
    key: tuple | None = None   # op-begin key of the operation it follows

    def to_json(self) -> dict:
        return {"op_a": self.op_a, "op_b": self.op_b, "seq_a": self.seq_a, "seq_b": self.seq_b,
                "changes": self.changes}


@dataclass
class HazardDelta:
    """A finding present in one trace only, with its position in the alignment
    (one the other trace has with another extent is a hazard_pairs.ChangedHazard)."""

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
    # windows both traces have with other extents (hazard_pairs.ChangedHazard), by row
    changed_hazards: list = field(default_factory=list)

    @property
    def equivalent(self) -> bool:
        """Same event payloads in the same operations (headers aside)."""
        return self.differing_pairs == 0 and self.renumbered == 0

    @property
    def damaged(self) -> bool:
        return not (self.a["complete"] and self.b["complete"])

    @property
    def exit_code(self) -> int:
        """docs/CLI.md#exit-codes: 3 damaged input > 1 different > 0 equivalent."""
        if self.damaged:
            return 3
        return 0 if self.equivalent else 1

    def hazard_delta(self) -> dict:
        out = {"only_a": [h.finding for h in self.hazards if h.side == "a"],
               "only_b": [h.finding for h in self.hazards if h.side == "b"],
               "changed": [c.to_json() for c in self.changed_hazards]}
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
            counts[p.status] += p.n_ops
        rows = {c: 0 for c in CLASSES}
        for reg in al.regions:
            for c, n in reg.counts.items():
                rows[c] += n
        out = {"op_pairs": sum(counts.values()), "ops_same": counts["same"], "ops_different": counts["different"],
               "ops_only_a": counts["only-a"], "ops_only_b": counts["only-b"], "ops_renumbered": self.renumbered,
               "regions": len(al.regions), "rows": al.n_rows,
               "rows_args": rows[ARGS], "rows_only_a": rows[ONLY_A], "rows_only_b": rows[ONLY_B],
               "rows_label_only": sum(reg.label_only for reg in al.regions)}
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
    if type(a) is type(b) and a == b:
        return
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
        code_of = _SCAN_CODE.get
        try:
            # four events in five change nothing scanned here: skip them in C
            events = list(compress(events, map(_RELEVANT.__contains__, map(_getkind, events))))
        except (TypeError, IndexError, KeyError):
            pass
        ctx, units, dids, domains = self.ctx, self.units, self.dids, self.domains
        for ev in events:
            try:
                c = code_of(ev[0])
                if c is None:
                    continue
                if c == 0:
                    domains.add(ev[6])
                elif c == 1:
                    dids.add((ev[6], ev[7]))
                elif c == 2:
                    ctx.add((ev[6], ev[7], ev[8]))
                    units.add(ev[6])
                elif c == 3:
                    units.add(ev[6])
                elif c == 4:
                    self.devices.add((ev[6], ev[7]))
                elif c == 5:
                    dids.add((ev[6], ev[7]))
                    self.did_owner.add((ev[6], ev[7]))
                elif c == 6:
                    self.pages.add(ev[7])
                elif c == 7:
                    self.pages_all = True
                elif c == 8:
                    self.idmaps.add((ev[6], ev[7], ev[8]))
                else:
                    domains.add(ev[6])
                    self.pages_all = self.idmaps_all = True
            except (TypeError, IndexError, KeyError, AttributeError):
                continue


# _Touched.scan's branch per kind, the most frequent kinds first
_SCAN_CODE = {S.K_DOMAIN_CREATE: 0, S.K_DOMAIN_DYING: 0, S.K_DID_BITMAP: 1, S.K_CTX_WRITE: 2,
              **{k: 3 for k in _CACHE_KINDS if k != S.K_CTX_WRITE},
              S.K_OWNER_MOVE: 4, S.K_DEVICE_ADD: 4, S.K_DEVICE_REMOVE: 4, S.K_DID_MAP: 5, S.K_PT_ALLOC: 6,
              S.K_PT_FREE: 7, S.K_IDMAP_ADD: 8, S.K_IDMAP_REMOVE: 8, S.K_DOMAIN_DESTROY: 9}
_RELEVANT = frozenset({S.K_CTX_WRITE, S.K_CACHE_SYNC, S.K_FLUSH_CONTEXT, S.K_FLUSH_IOTLB, S.K_FLUSH_DEV_IOTLB,
                       S.K_TRANSLATION_ENABLE, S.K_DID_BITMAP, S.K_DID_MAP, S.K_PT_ALLOC, S.K_PT_FREE,
                       S.K_OWNER_MOVE, S.K_DEVICE_ADD, S.K_DEVICE_REMOVE, S.K_IDMAP_ADD, S.K_IDMAP_REMOVE,
                       S.K_DOMAIN_CREATE, S.K_DOMAIN_DYING, S.K_DOMAIN_DESTROY})


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
                 analysis_a=None, analysis_b=None, state_at_a=None) -> None:
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
        # A's state from checkpoints (a cached ReplaySession): with no analysis
        # on either side, neither is folded while the states are equal
        self.state_at_a = state_at_a if (analysis_a is None and analysis_b is None) else None
        self.virtual = self.state_at_a is not None and self.equal
        self.diff: dict = {}
        self._sigs: dict = {}
        self.broken: str | None = None
        # equal raw values decode to equal names only when both headers name alike
        self.same_views = name_alike(view_a, view_b)

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
    def feed(self, ea: list, eb: list, same: bool, before_a: int = 0) -> bool:
        """Fold a pair's events (A's follow its event ``before_a``); returns
        True when the decoded difference may have changed (call ``update``)."""
        try:
            if self.virtual:
                if same:
                    return False
                # the states were equal: A's from its checkpoints, B's a copy
                self.st[0] = self.state_at_a(before_a)
                self.st[1] = self.st[0].copy()
                self.virtual = False
                self.detached = True
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

    def update(self, ea: list, eb: list | None) -> bool:
        """Recompute the decoded difference for what the events touched (eb
        None: B's events are identical to ea).  True when it changed."""
        if self.broken:
            return False
        t = _Touched()
        t.scan(ea)
        if eb is not None:
            t.scan(eb)
        sa, sb, va, vb = self.sa, self.sb, self.va, self.vb
        d = self.diff
        before = dict(d)
        listed: dict = {}       # section -> keys differing before
        for sec, key in d:
            listed.setdefault(sec, []).append(key)
        same = self.same_views
        # Where what a context entry's decoding reads is equal on both sides
        # (DID map, table pages), only entries with unequal raw values can
        # get past the check below: look at those alone.
        raw_diff = None
        if same and (t.pages_all or t.did_owner or t.pages) and sa.did_map == sb.did_map \
                and sa.pages == sb.pages:
            raw_diff = _differing_keys(sa.ctx, sb.ctx)
        # context entries: touched, already differing, or with a touched DID / table page
        keys = set(t.ctx)
        keys.update(listed.get("context", ()))
        if t.pages_all:
            if raw_diff is None:
                keys.update(sa.ctx)
                keys.update(sb.ctx)
            else:
                keys.update(raw_diff)
        elif t.did_owner or t.pages:
            for st in (sa, sb):
                ctx = st.ctx
                items = ctx.items() if raw_diff is None else [(k, ctx[k]) for k in raw_diff if k in ctx]
                for key, (lo, hi) in items:
                    if (key[0], (hi >> 8) & 0xFFFF) in t.did_owner or (lo & C.PAGE_MASK_4K) in t.pages:
                        keys.add(key)
        # A key whose raw values (and what its decoding reads) are equal on
        # both sides, and that did not differ before, needs no decoding.
        for key in keys:
            if same and ("context", key) not in d:
                x = sa.ctx.get(key, ZERO)
                if x == sb.ctx.get(key, ZERO):
                    try:
                        dk = (key[0], (x[1] >> 8) & 0xFFFF)
                        page = x[0] & C.PAGE_MASK_4K
                    except TypeError:
                        dk = page = None
                    if sa.did_map.get(dk) == sb.did_map.get(dk) and sa.pages.get(page) == sb.pages.get(page):
                        continue
            self._set(d, ("context", key), _ctx_fields(sa, va, key), _ctx_fields(sb, vb, key))
        keys = set(t.dids)
        keys.update(listed.get("dids", ()))
        for key in keys:
            if same and ("dids", key) not in d and (key in sa.did_bits) == (key in sb.did_bits) \
                    and sa.did_map.get(key) == sb.did_map.get(key):
                continue
            self._set(d, ("dids", key), _did_fields(sa, va, key), _did_fields(sb, vb, key))
        keys = set(t.devices)
        keys.update(listed.get("devices", ()))
        for key in keys:
            if same and ("devices", key) not in d and (key in sa.present) == (key in sb.present) \
                    and sa.owners.get(key) == sb.owners.get(key):
                continue
            self._set(d, ("devices", key), _dev_fields(sa, va, key), _dev_fields(sb, vb, key))
        keys = set(t.idmaps)
        keys.update(listed.get("idmaps", ()))
        if t.idmaps_all:
            keys.update(sa.idmaps)
            keys.update(sb.idmaps)
        for key in keys:
            if ("idmaps", key) not in d and sa.idmaps.get(key) == sb.idmaps.get(key):
                continue
            self._set(d, ("idmaps", key), _idmap_fields(sa, key), _idmap_fields(sb, key))
        keys = set(t.domains)
        keys.update(listed.get("domains", ()))
        for key in keys:
            status_a, status_b = sa.domains.get(key), sb.domains.get(key)
            if status_a == status_b and ("domains", key) not in d:
                continue
            self._set(d, ("domains", key), {"status": status_a}, {"status": status_b})
        # caches (what the IOMMU may still hold): per unit, recomputed only
        # when that unit's raw cache model or its context entries changed
        units = set(t.units)
        units.update(listed.get("caches", ()))
        names_changed = bool(t.did_owner or t.pages or t.pages_all)
        if names_changed:
            units.update(map(_unit_of, sa.ctx))
            units.update(map(_unit_of, sb.ctx))
        if units and same and sa.ctx == sb.ctx and all(
                getattr(sa, n) == getattr(sb, n) for n in ("cc", "tlb", "devtlb", "hw", "pending", "did_map", "pages")):
            for u in units:
                d.pop(("caches", u), None)
                self._sigs.pop(u, None)
            units = ()
        differing = _units_differing(sa, sb) if units else None
        for u in units:
            if differing is not None and u not in differing:
                d.pop(("caches", u), None)
                self._sigs.pop(u, None)
                continue
            sig = (_unit_sig(sa, u), _unit_sig(sb, u))
            if sig[0] == sig[1]:
                d.pop(("caches", u), None)
                self._sigs.pop(u, None)
                continue
            if not names_changed and self._sigs.get(u) == sig and ("caches", u) in d:
                continue
            self._sigs[u] = sig
            self._set(d, ("caches", u), cache_view(sa, va, u), cache_view(sb, vb, u))
        return d != before

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
            if self.state_at_a is not None:
                self.virtual = True
                self.detached = False
                self.st = [None, None]
            elif self.lazy is not None and self.detached:
                self.detached = False
                lz = self.lazy
                self.st[lz] = initial_state({})      # placeholder; refreshed by the copy on divergence
        return self.equal

    # -- rendering --------------------------------------------------------------------
    def changes(self) -> list:
        return change_records(self.diff, self.va, self.vb)


def change_records(diff: dict, va: PlatformView, vb: PlatformView) -> list:
    """``{(section, key): (a_fields, b_fields)}`` as the report's change
    records, in its order (also state_delta's, for the diff view)."""
    out = []
    for (section, key), (a, b) in sorted(diff.items(), key=_change_order):
        out.append({"section": section, **_ident(section, key, va, vb), "a": _js(a), "b": _js(b)})
    return out


def name_alike(va: PlatformView, vb: PlatformView) -> bool:
    """Both headers name domains, segments and devices alike: equal raw
    values then decode to equal fields."""
    return va.names == vb.names and va.segment == vb.segment and va.hardware == vb.hardware


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


_SIG_TABLES = ("cc", "tlb", "devtlb", "hw", "pending", "ctx")
_unit_of = itemgetter(0)        # of a (unit, ...) key


def _differing_keys(x: dict, y: dict):
    """Keys whose values differ or that one dict lacks (C speed); None when
    the values are not hashable."""
    try:
        return {k for k, _v in x.items() ^ y.items()}
    except TypeError:
        return None


def _units_differing(sa, sb):
    """The units whose _unit_sig differs between two states (every other
    unit's is equal), from one C-speed pass over each table instead of a
    pass per unit and side; None when the tables cannot be compared so."""
    out: set = set()
    try:
        for name in _SIG_TABLES:
            x, y = getattr(sa, name), getattr(sb, name)
            if x != y:
                out.update([k[0] for k, _v in x.items() ^ y.items()])
    except (TypeError, IndexError, KeyError):
        return None
    return out


def _unit_sig(st, u):
    """Everything the cache view of unit u depends on, as a comparable value."""
    return (
        {k: v for k, v in st.cc.items() if k[0] == u},
        {k: v for k, v in st.tlb.items() if k[0] == u},
        {k: v for k, v in st.devtlb.items() if k[0] == u},
        {k: v for k, v in st.hw.items() if k[0] == u},
        {k: v for k, v in st.pending.items() if k[0] == u},
        {k: v for k, v in st.ctx.items() if k[0] == u},
    )


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


def _fkey(f):
    """(match key, start) of a finding given as a dict or an object."""
    if isinstance(f, dict):
        get = f.get
        sl, el = get("start_label"), get("end_label")
        if sl is None and el is None and isinstance(get("labels"), (list, tuple)) and len(get("labels")) == 2:
            sl, el = get("labels")
        return (get("kind"), get("device"), get("rid"), sl, el), get("start")
    sl, el = getattr(f, "start_label", None), getattr(f, "end_label", None)
    if sl is None and el is None:
        labels = getattr(f, "labels", None)
        if isinstance(labels, (list, tuple)) and len(labels) == 2:
            sl, el = labels
    return (getattr(f, "kind", None), getattr(f, "device", None), getattr(f, "rid", None), sl, el), \
        getattr(f, "start", None)


def _keyed(al: Alignment, side: str, fs):
    """(keys, pair indexes, starts, findings) of one side's findings: C-speed
    (itemgetter/attrgetter, bisect) for sidecar rows and Finding objects."""
    firsts, idx = al._side[side]
    rows = type(fs) is FindingRows
    fs = fs if rows else list(fs or ())
    try:
        if rows:
            keys = list(map(_ROW_KEY, fs))
            starts = list(map(_ROW_START, fs))
        else:
            keys = list(map(_ATTR_KEY, fs))
            starts = list(map(_ATTR_START, fs))
        if starts and (set(map(type, starts)) != {int} or min(starts) < 1):
            raise TypeError
        last = al.pairs[idx[-1]] if len(idx) else None
        end = (last.first_a + last.count_a if side == "a" else last.first_b + last.count_b) if last else 0
        pidx = [idx[bisect_right(firsts, x) - 1] if x < end else -1 for x in starts] if end else [-1] * len(fs)
        return keys, pidx, starts, fs
    except (AttributeError, TypeError, IndexError, KeyError):
        pass
    keys, pidx, starts, objs = [], [], [], []
    for f in fs:
        if rows:
            f = _row_json(f) if isinstance(f, (list, tuple)) and len(f) == 10 else {"kind": None, "detail": repr(f)}
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


_ATTR_KEY = attrgetter("kind", "device", "rid", "start_label", "end_label")
_ATTR_START = attrgetter("start")


def hazard_delta(al: Alignment, findings_a, findings_b) -> list:
    """Findings without a counterpart: the same kind, device, requester ID
    and step labels, starting in the same aligned operation pair (matched in
    order of start when several).  Only the unmatched ones are converted."""
    ka = _keyed(al, "a", findings_a)
    kb = _keyed(al, "b", findings_b)
    ca = Counter(zip(ka[0], ka[1]))
    cb = Counter(zip(kb[0], kb[1]))
    if ca == cb:
        return []
    out = []
    for side, (keys, pidx, starts, fs), mine, other in (("a", ka, ca, cb), ("b", kb, cb, ca)):
        try:
            # the keys whose counts differ, found in C among 10^5 equal ones
            differ = mine.items() - other.items()
        except TypeError:
            differ = mine.items()
        extra = {k: n - other.get(k, 0) for k, n in differ if n > other.get(k, 0)}
        if not extra:
            continue
        # the last `extra[k]` of each key (in start order) have no counterpart
        by_key: dict = {}
        for i in _candidates(al, side, {k[1] for k in extra}, starts, pidx):
            key = (keys[i], pidx[i])
            if key in extra:
                by_key.setdefault(key, []).append((starts[i], fs[i]))
        for key, lst in by_key.items():
            lst.sort(key=lambda x: x[0])
            for start, f in lst[len(lst) - extra[key]:]:
                d = _row_json(f) if isinstance(f, list) else finding_dict(f)
                row = al.nearest_row(side, start) if start >= 0 else None
                out.append(HazardDelta(side, d, row, key[1] if key[1] >= 0 else None))
    out.sort(key=lambda h: (h.row if h.row is not None else -1, h.side, _fstart(h.finding),
                            str(h.finding.get("kind")), str(h.finding.get("rid"))))
    return out


def _candidates(al: Alignment, side: str, pairs: set, starts: list, pidx: list):
    """Indexes of the findings that start in the given pairs: by bisection
    when the starts are sorted (the check order), else by a scan."""
    n = len(starts)
    try:
        ordered = all(starts[i] <= starts[i + 1] for i in range(0, n - 1, max(1, n // 64))) and \
            starts == sorted(starts)
    except TypeError:
        ordered = False
    if not ordered:
        return [i for i in range(n) if pidx[i] in pairs]
    out = []
    for p in sorted(x for x in pairs if x >= 0):
        pair = al.pairs[p]
        first, count = (pair.first_a, pair.count_a) if side == "a" else (pair.first_b, pair.count_b)
        if not count:
            continue
        out.extend(range(bisect_left(starts, first), bisect_left(starts, first + count)))
    if -1 in pairs:
        out.extend(i for i in range(n) if pidx[i] == -1)
    return out


def _fstart(d):
    s = d.get("start")
    return s if type(s) is int else -1


# --------------------------------------------------------------------------------
# The pass


def diff_streams(a: Side, b: Side, *, context: int = CONTEXT_EVENTS, detail_rows: int = DETAIL_ROWS,
                 window: int | None = None, progress=None) -> DiffReport:
    """Compare two traces given as Sides, in one streaming pass over both.

    ``progress(done, total)``, if given, is called every few thousand events
    with the number of A's events read and A's event count (None when
    unknown); an exception it raises aborts the diff (a TUI's cancel)."""
    return _Pass(a, b, context, detail_rows, window, progress).run()


_getkind = itemgetter(0)


class _Pass:
    """The two lanes of the pass.

    *Lockstep lane* (while the traces agree and their states are equal):
    compare the next slice of each trace as whole lists (C speed, modulo a
    constant seq/op shift), fold, move on.  Events of the operation in
    progress are held back (``pend_*``) until it is known to be identical,
    so runs cover whole operations.  *Alignment lane* (from the operation
    holding a mismatch on): op groups paired by the Pairer, differing pairs
    aligned by call/lock structure, states compared at every boundary --
    until a pair is identical again with equal states and nothing queued."""

    def __init__(self, a: Side, b: Side, context: int, detail_rows: int, window, progress=None) -> None:
        from replay.jsonout import EventPresenter
        from replay.reader import current_schema

        self.a, self.b = a, b
        self.context = context
        self.va, self.vb = PlatformView(a.header), PlatformView(b.header)
        self.tracker = _Tracker(a.header, b.header, self.va, self.vb, a.analysis, b.analysis, a.state_at)
        self.al = Alignment()
        self.first = None
        self.tail: deque = deque(maxlen=max(context, 1))
        self.budget = detail_rows
        self.truncated = False
        self.differing = self.renumbered = 0
        self.state_diffs: list = []
        self.last_reported: list = []
        self.pres = (EventPresenter(a.schema or current_schema(), a.header),
                     EventPresenter(b.schema or current_schema(), b.header))
        self.seen = [0, 0]      # last seq consumed per side
        self.sa, self.sb = EventStream(a.chunks), EventStream(b.chunks)
        self.pairer = Pairer(self.sa, self.sb, **({} if window is None else {"window": window}))
        self.pend_a: list = []
        self.pend_b: list = []
        self.pend_start = 0     # where the operation in progress begins in pend_*
        self.progress = progress
        self._total = a.trace.count if a.trace is not None else None
        self._next_report = 0

    # -- driver -------------------------------------------------------------------------
    def run(self) -> DiffReport:
        gc_was = gc.isenabled()
        gc.disable()
        try:
            fast = True
            while True:
                if self.progress is not None and self.sa.loaded >= self._next_report:
                    self._next_report = self.sa.loaded + 16384
                    self.progress(self.sa.loaded, self._total)
                if fast:
                    if self._lockstep():
                        continue
                    fast = False
                pair = self.pairer.next()
                if pair is None:
                    break
                same = self._pair(*pair)
                fast = same and self.pairer.idle()
            # matching 10^5 findings allocates enough to set off collections
            # that would walk everything the pass holds, for no garbage
            return self._report()
        finally:
            if gc_was:
                gc.enable()

    # -- the lockstep lane ----------------------------------------------------------------
    def _lockstep(self) -> bool:
        """One slice; False when the alignment lane must take over."""
        sa, sb = self.sa, self.sb
        if sb.src is not None and sb.at_chunk_end():
            sb.adopt_from(sa)
        na, nb = sa.available(), sb.available()
        if not na or not nb:
            if not na and not nb:
                self._commit(len(self.pend_a))          # both ended: the last op is whole
                return False
            self._handover()
            return False
        n = min(na, nb)
        xa, xb = sa.peek(n), sb.peek(n)
        m = slice_mismatch(xa, xb)
        sa.advance(m)
        sb.advance(m)
        pa, pb = self.pend_a, self.pend_b
        lo = len(pa)
        if m == n:
            pa.extend(xa)
            pb.extend(xb)
        else:
            pa.extend(xa[:m])
            pb.extend(xb[:m])
        self.pend_start = last_op_start(pa, lo, self.pend_start)
        if m < n:
            self._commit(self.pend_start)
            self._handover()
            return False
        if self.pend_start:
            self._commit(self.pend_start)
        elif len(pa) >= MAX_GROUP_EVENTS:
            # one huge operation: commit it in parts, the rest continues it
            op = _op_of(pa[0])
            self._commit(len(pa))
            self.sa.mark_continued(op, 1)
            self.sb.mark_continued(op, 1)
        return True

    def _handover(self) -> None:
        """The operation in progress goes to the alignment lane."""
        if self.pend_a:
            self.sa.pushback = self.pend_a
            self.sb.pushback = self.pend_b
            self.pend_a, self.pend_b = [], []
        self.pend_start = 0

    def _commit(self, k: int) -> None:
        """pend_*[:k] are whole operations, identical in both traces."""
        if k <= 0:
            return
        pa, pb = self.pend_a, self.pend_b
        ea, eb = (pa, pb) if k == len(pa) else (pa[:k], pb[:k])
        first_a = _seq_of_ev(ea[0], self.seen[0] + 1)
        first_b = _seq_of_ev(eb[0], self.seen[1] + 1)
        op_a, op_b = _op_of(ea[0]), _op_of(eb[0])
        try:
            n_ops = list(map(_getkind, ea)).count(S.K_OP_BEGIN) or 1
        except (TypeError, IndexError, KeyError):
            n_ops = 1
        dop = _delta(op_a, op_b)
        self.al.add_same(first_a, first_b, k, op_a, op_b, _key_of(ea[0]), n_ops, dop)
        if dop:
            self.renumbered += n_ops
            if self.first is None:
                self.first = {"seq_a": first_a, "seq_b": first_b, "class": "args", "op_a": op_a, "op_b": op_b,
                              "context": _context(self.tail, self.pres, self.context), "fields": ["op"]}
        if self.first is None and self.context:
            self.tail.extend(zip(ea[-self.context:], eb[-self.context:]))
        before_a = self.seen[0]
        self.seen[0] = first_a + k - 1
        self.seen[1] = first_b + k - 1
        tr = self.tracker
        if tr.feed(ea, eb, True, before_a):
            # states differ: fold both (done), compare at the end of the run
            if tr.update(ea, None):
                last_op = _last_op_begin(ea)
                self._state_boundary(len(self.al.pairs) - 1, _op_of(ea[-1]), _op_of(eb[-1]),
                                     _key_of(last_op) if last_op is not None else None, ea, eb)
            tr.converged()
        if k == len(pa):
            self.pend_a, self.pend_b = [], []
        else:
            del pa[:k]
            del pb[:k]
        self.pend_start = 0

    # -- the alignment lane ---------------------------------------------------------------
    def _pair(self, ga, gb) -> bool:
        """Record one aligned pair; True when it is identical."""
        before_a = self.seen[0]
        ea = ga.events if ga is not None else []
        eb = gb.events if gb is not None else []
        same = ga is not None and gb is not None and groups_equal(ea, eb)
        ctx = self.context
        if same:
            pair = OpPair(0, ga, gb, SAME)
            self.al.add(pair)
            if ga.op != gb.op:
                self.renumbered += 1
                if self.first is None:
                    self.first = _first_div(pair, 0, "args", ("op",), ea, eb, self.tail, self.pres, ctx)
                    self.first["fields"] = ["op"]
            if self.first is None and ctx:
                self.tail.extend(zip(ea[-ctx:], eb[-ctx:]))
        else:
            status = "different" if (ga is not None and gb is not None) else (ONLY_A if gb is None else ONLY_B)
            pair = OpPair(0, ga, gb, status)
            pair.rows = align_ops(ga, gb, funcs_a=self.pres[0].funcs, funcs_b=self.pres[1].funcs)
            if all(c == C_SAME for c in pair.rows.cls):
                # equal payloads that groups_equal could not prove (irregular seqs)
                pair.status = SAME
            else:
                self.differing += 1
            self.al.add(pair)
            if pair.status != SAME:
                if self.budget > 0 and pair.keep_events(ea, eb):
                    self.budget -= len(pair.rows)
                else:
                    self.truncated = True
                if self.first is None:
                    self.first = _first_from_rows(pair, ea, eb, self.tail, self.pres, ctx, self.seen)
            if self.first is None and ctx:
                self.tail.extend(_same_tail(pair, ea, eb, ctx))
        if ga is not None:
            self.seen[0] = ga.last
        if gb is not None:
            self.seen[1] = gb.last
        tr = self.tracker
        # identical pairs: B's events touch exactly what A's do
        if tr.feed(ea, eb, same, before_a) and tr.update(ea, None if same else eb):
            self._state_boundary(pair.index, pair.op_a, pair.op_b, pair.key_a or pair.key_b, ea, eb)
        tr.converged()
        return same and pair.status == SAME

    def _state_boundary(self, pair_index, op_a, op_b, key, ea, eb) -> None:
        """The state difference after the events just folded changed: record it."""
        changes = self.tracker.changes()
        if changes == self.last_reported:
            return
        row = self.al.n_rows - 1
        sd = StateDiff(pair_index, op_a, op_b, self.seen[0], self.seen[1], row, changes)
        sd.key = key
        self.state_diffs.append(sd)
        self.last_reported = changes
        if self.first is None and changes:
            self.first = {"seq_a": self.seen[0], "seq_b": self.seen[1], "class": "state", "op_a": op_a,
                          "op_b": op_b, "context": _context(self.tail, self.pres, self.context)}

    # -- result -------------------------------------------------------------------------
    def _report(self) -> DiffReport:
        a, b, al = self.a, self.b, self.al
        a.count, b.count = self.sa.loaded, self.sb.loaded
        for side in (a, b):
            if side.analysis is not None and side.findings is None:
                side.findings = side.analysis.finish()
        fa, fb = a.findings, b.findings
        available = fa is not None and fb is not None
        hz, changed = pair_changed(hazard_delta(al, fa, fb)) if available else ([], [])
        return DiffReport(a=a.info(), b=b.info(), header_diff=header_diff(a.header, b.header), alignment=al,
                          first_divergence=self.first, state_diff=self.state_diffs, hazards=hz,
                          hazards_available=available, differing_pairs=self.differing,
                          renumbered=self.renumbered, state_note=self.tracker.broken,
                          detail_truncated=self.truncated, presenters=self.pres, changed_hazards=changed)


def _seq_of_ev(ev, fallback):
    try:
        v = ev[1]
    except (TypeError, IndexError, KeyError):
        return fallback
    return v if type(v) is int else fallback


def _last_op_begin(evs):
    for k in range(len(evs) - 1, -1, -1):
        ev = evs[k]
        if type(ev) is list and ev and ev[0] == S.K_OP_BEGIN:
            return ev
    return None


def _op_of(ev):
    try:
        return ev[3]
    except (TypeError, IndexError, KeyError):
        return None


def _key_of(ev):
    return _group_key(ev)


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


# replay.hazards' positional finding row (Finding.to_row), format 1
_ROW_FIELDS = ("kind", "severity", "device", "rid", "iommu", "start", "end", "start_label", "end_label", "detail")
_ROW_KEY = itemgetter(0, 2, 3, 7, 8)
_ROW_START = itemgetter(5)


class FindingRows(list):
    """Findings as the sidecar stores them: positional rows in
    replay.hazards.Finding.to_row order, matched without building objects."""

    __slots__ = ()


def _row_json(r) -> dict:
    d = dict(zip(_ROW_FIELDS, r))
    d["open_at_end"] = d["end"] is None
    return {k: d[k] for k in FINDING_KEYS}


def _cached_rows(path):
    """The sidecar's finding rows (replay.hazards.analyse.cached_finding_rows)
    when they are in the layout _ROW_FIELDS reads, else None."""
    from replay.hazards import findings as _fi
    from replay.hazards.analyse import cached_finding_rows

    if getattr(_fi, "FINDINGS_FORMAT", None) != 1:
        return None
    rows = cached_finding_rows(path)
    if rows is None:
        return None
    if rows and (type(rows[0]) is not list or len(rows[0]) != len(_ROW_FIELDS)):
        return None
    return FindingRows(rows)    # each row is checked as it is matched (_keyed)


def cached_findings(path, trace):
    """The findings of a trace from its sidecar, when a fresh entry is there
    (None otherwise, or when this build has no analysers)."""
    if _hazards() is None:
        return None
    try:
        rows = _cached_rows(path)
        if rows is not None:
            return rows
    except Exception:
        pass
    try:
        from replay.hazards.analyse import cached_findings as _cached
        got = _cached(path, trace)
        return None if got is None else got.findings
    except Exception:       # a cache problem is never an error: recompute
        return None


def store_findings(path, trace, analysis, findings, binding=None) -> None:
    """Put findings computed inline into the trace's sidecar (best effort), as
    findings_for_trace(path, sidecar=True) would have.  ``binding``: the
    trace's (identity, content) from before the diff read it
    (replay.sidecar), which lets an untrusted sidecar be bound to it."""
    hz = _hazards()
    if hz is None:
        return
    try:
        from replay.hazards.analyse import store_findings as _store
        stop = trace.stop
        if analysis.bad is not None and stop is None:
            from replay.reader import StopReport
            stop = StopReport("corrupt", 0, 0, analysis.seq, analysis.bad[1])
        identity, content = binding if binding is not None else (None, None)
        _store(path, hz.TraceFindings(path, trace.header, findings, analysis.seq, stop is None, stop),
               identity, content)
    except Exception:
        pass


def cached_session(path):
    """A ReplaySession of the trace when its sidecar already holds fresh
    checkpoints (opening it is then O(1)); None otherwise -- the diff never
    builds checkpoints, it folds instead."""
    try:
        from replay.session import ReplaySession
        return ReplaySession.open_cached(path)
    except Exception:       # a cache problem is never an error: fold instead
        return None


def diff_traces(trace_a, trace_b, *, findings: bool = True, names=None, paths=None, bindings=None,
                **kw) -> DiffReport:
    """Diff two open reader Traces (their readable prefixes when damaged).

    Findings: from the sidecar when it is trusted for the trace as it is now
    and holds them (``paths`` given), else the hazard analysers run inline
    in the same pass (and, with ``paths``, their result is cached for next
    time; ``bindings``: each trace's replay.sidecar (identity, content) from
    before it was read, see store_findings)."""
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
    session = None
    if paths is not None and sides[0].analysis is None and sides[1].analysis is None:
        session = cached_session(paths[0])
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
    if paths is not None:
        for side, path, binding in zip(sides, paths, bindings or (None, None)):
            if side.analysis is not None:
                store_findings(path, side.trace, side.analysis, side.findings, binding)
    return report


def diff_files(path_a, path_b, *, findings: bool = True, **kw) -> DiffReport:
    """Open both files and diff them.  Raises DiffInputError for a path that
    is not a trace (exit 2); a damaged trace is diffed on its readable part
    (report.damaged, exit 3)."""
    from replay.reader import NotATrace, open_trace
    from replay.sidecar import content_of, trace_identity

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
