"""The state tracker: both traces' replayed states and their decoded
difference, kept up to date as the streaming pass folds events.

The report compares the two states at every aligned operation boundary.
Decoding both states whole at each boundary would cost O(state) per
operation; instead the tracker looks only at what the events just folded
*touched* (``Touched.scan``: context entries, DIDs, table pages, devices,
identity maps, domains, IOMMU units) plus what differed before, decodes
those entries on both sides and keeps ``diff``:
``{(section, key): (a_fields, b_fields)}`` with only the differing fields.

Sections, in the report's order (``SECTIONS``): context entries (decoded:
present, did, did_owner, pt_owner, tt, aw, lo, hi), DIDs (in use, owner),
devices (present, owner), identity maps, domains, caches (what the IOMMU
may still hold, per unit).

Shortcuts that keep the cost where the traces differ:

* while the two states are equal, a side without an inline hazard analysis
  is not folded at all (*lazy*: its state would be the other side's); it
  gets a copy on the first difference and is folded until the states agree
  again (``converged``).  With A's checkpoints at hand (``state_at_a``)
  neither side is folded over identical stretches (*virtual*);
* when both headers name domains, segments and devices alike
  (``name_alike``), equal raw values decode to equal fields, so an entry
  whose raw values (and what its decoding reads) are equal is not decoded;
* the cache view of a unit is recomputed only when that unit's raw cache
  model or its context entries changed (``unit_sig``).

The field decoders (``ctx_fields`` ...), ``put_change`` and
``change_records`` are shared with state_delta.py, which compares two
states from scratch for the side-by-side view.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress
from operator import itemgetter
from typing import Any

from tracer import schema as S
from tracer.schema import (
    I_KIND,
    K_CTX_WRITE,
    K_DID_BITMAP,
    K_DID_MAP,
    K_DOMAIN_CREATE,
    K_DOMAIN_DYING,
    K_IDMAP_ADD,
    K_IDMAP_REMOVE,
    K_PT_ALLOC,
    K_PT_FREE,
)

from .. import caches as C
from ..codes import Event
from ..render import PlatformView, cache_view, did_owner, fmt_rid, hex64, pt_owner
from ..state import TABLES, ZERO, BadEvent, fold, initial_state
from .report import jsonable

SECTIONS = ("context", "dids", "devices", "idmaps", "domains", "caches")
# what a unit's cache view reads (unit_sig, render.cache_view)
CACHE_INPUTS = ("cc", "tlb", "devtlb", "hw", "pending", "ctx", "did_map", "pages")
_getkind = itemgetter(I_KIND)
# A replay.state.ReplayState (its tables are set per name, so mypy sees no
# attributes on it; typed as what it is once replay/state.py declares them).
State = Any
# {(section, key): (a_fields, b_fields)}: the decoded difference, differing fields only
Diff = dict[tuple[str, Any], tuple[dict[str, Any], dict[str, Any]]]
_MISS = object()


class Touched:
    """What a run of events touched, by section: the keys whose decoded
    entries may have changed (``*_all``: every key of that kind)."""

    __slots__ = ("ctx", "dids", "did_owner", "pages", "pages_all", "devices", "idmaps", "idmaps_all",
                 "domains", "units")

    def __init__(self) -> None:
        self.ctx: set[Any] = set()           # (unit, bus, devfn) of context entries written
        self.dids: set[Any] = set()          # (unit, did) whose bit or owner changed
        self.did_owner: set[Any] = set()     # (unit, did) whose owner changed: entries naming it decode anew
        self.pages: set[Any] = set()         # table pages allocated: entries pointing there decode anew
        self.pages_all = False          # a table page was freed (or a domain destroyed)
        self.devices: set[Any] = set()       # (seg, bdf)
        self.idmaps: set[Any] = set()        # (domain, base, end)
        self.idmaps_all = False
        self.domains: set[Any] = set()
        self.units: set[Any] = set()         # IOMMU units whose cache model may have changed

    def scan(self, events: list[Event]) -> None:
        ctx, units, dids, domains = self.ctx, self.units, self.dids, self.domains
        # four events in five change nothing scanned here: skip them in C
        for ev in compress(events, map(_RELEVANT.__contains__, map(_getkind, events))):
            k = ev[I_KIND]
            if k == K_DOMAIN_CREATE:
                domains.add(ev[S.F_DOMAIN_CREATE_DOMAIN])
            elif k == K_DOMAIN_DYING:
                domains.add(ev[S.F_DOMAIN_DYING_DOMAIN])
            elif k == K_DID_BITMAP:
                dids.add((ev[S.F_DID_BITMAP_IOMMU], ev[S.F_DID_BITMAP_DID]))
            elif k == K_CTX_WRITE:
                unit = ev[S.F_CTX_WRITE_IOMMU]
                ctx.add((unit, ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN]))
                units.add(unit)
            elif k in _UNIT_FIELD:
                units.add(ev[_UNIT_FIELD[k]])
            elif k in _DEVICE_FIELDS:
                seg, bdf = _DEVICE_FIELDS[k]
                self.devices.add((ev[seg], ev[bdf]))
            elif k == K_DID_MAP:
                key = (ev[S.F_DID_MAP_IOMMU], ev[S.F_DID_MAP_DID])
                dids.add(key)
                self.did_owner.add(key)
            elif k == K_PT_ALLOC:
                self.pages.add(ev[S.F_PT_ALLOC_MADDR])
            elif k == K_PT_FREE:
                self.pages_all = True
            elif k == K_IDMAP_ADD:
                self.idmaps.add((ev[S.F_IDMAP_ADD_DOMAIN], ev[S.F_IDMAP_ADD_BASE], ev[S.F_IDMAP_ADD_END]))
            elif k == K_IDMAP_REMOVE:
                self.idmaps.add((ev[S.F_IDMAP_REMOVE_DOMAIN], ev[S.F_IDMAP_REMOVE_BASE], ev[S.F_IDMAP_REMOVE_END]))
            else:       # domain-destroy: its tables and identity maps go
                domains.add(ev[S.F_DOMAIN_DESTROY_DOMAIN])
                self.pages_all = self.idmaps_all = True


# The kinds besides ctx-write that change a unit's cache model, with the
# field naming the unit.
_UNIT_FIELD = {S.K_CACHE_SYNC: S.F_CACHE_SYNC_IOMMU, S.K_FLUSH_CONTEXT: S.F_FLUSH_CONTEXT_IOMMU,
               S.K_FLUSH_IOTLB: S.F_FLUSH_IOTLB_IOMMU, S.K_FLUSH_DEV_IOTLB: S.F_FLUSH_DEV_IOTLB_IOMMU,
               S.K_TRANSLATION_ENABLE: S.F_TRANSLATION_ENABLE_IOMMU}
# The kinds that change a device's presence or owner, with its (seg, bdf) fields.
_DEVICE_FIELDS = {S.K_OWNER_MOVE: (S.F_OWNER_MOVE_SEG, S.F_OWNER_MOVE_BDF),
                  S.K_DEVICE_ADD: (S.F_DEVICE_ADD_SEG, S.F_DEVICE_ADD_BDF),
                  S.K_DEVICE_REMOVE: (S.F_DEVICE_REMOVE_SEG, S.F_DEVICE_REMOVE_BDF)}
_RELEVANT = frozenset({K_DOMAIN_CREATE, K_DOMAIN_DYING, K_DID_BITMAP, K_CTX_WRITE, *_UNIT_FIELD, *_DEVICE_FIELDS,
                       K_DID_MAP, K_PT_ALLOC, K_PT_FREE, K_IDMAP_ADD, K_IDMAP_REMOVE, S.K_DOMAIN_DESTROY})


class StateTracker:
    """Keeps both traces' states and their decoded difference.

    A side with a hazard ``Analysis`` running inline is fed every event (the
    analysis folds its own state, ``analysis.st``, which is used as is).  A
    side without one folds its own state -- lazily: while the two states are
    equal, a lazy side is not folded at all (its state would be the other
    side's); on the first difference it gets a copy and is folded until the
    states are equal again.  With no analysis on either side only A is folded
    over identical stretches."""

    def __init__(self, ha: dict[Any, Any], hb: dict[Any, Any], view_a: PlatformView, view_b: PlatformView,
                 analysis_a: Any = None, analysis_b: Any = None,
                 state_at_a: Callable[[int], State] | None = None) -> None:
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
        self.diff: dict[Any, Any] = {}
        self._sigs: dict[Any, Any] = {}
        self.broken: str | None = None
        # equal raw values decode to equal names only when both headers name alike
        self.same_views = name_alike(view_a, view_b)

    @property
    def sa(self) -> State:
        return self.st[0]

    @property
    def sb(self) -> State:
        return self.st[1]

    def _fold(self, side: int, events: list[Event]) -> None:
        an = self.an[side]
        if an is not None:
            an.feed(events)
            if an.bad is not None and not self.broken:
                self.broken = f"state comparison stopped: {an.bad[1]}"
        else:
            fold(self.st[side], events)

    # -- folding ----------------------------------------------------------------------
    def feed(self, ea: list[Any], eb: list[Any], same: bool, before_a: int = 0) -> bool:
        """Fold a pair's events (A's follow its event ``before_a``); returns
        True when the decoded difference may have changed (call ``update``)."""
        try:
            if self.virtual:
                if same:
                    return False
                # the states were equal: A's from its checkpoints, B's a copy
                assert self.state_at_a is not None      # virtual only with it
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
            # An event the fold cannot apply: only in events handed to
            # diff_streams directly (Side.from_events), since the reader
            # checks every event of a trace as it decodes it.  The
            # comparison of events goes on; the states' stops here.
            self.broken = f"state comparison stopped: {exc}"
        if self.broken:
            self.diff = {}
            return False
        return True

    def update(self, ea: list[Any], eb: list[Any] | None) -> bool:
        """Recompute the decoded difference for what the events touched (eb
        None: B's events are identical to ea).  True when it changed."""
        if self.broken:
            return False
        t = Touched()
        t.scan(ea)
        if eb is not None:
            t.scan(eb)
        sa, sb, va, vb = self.sa, self.sb, self.va, self.vb
        d = self.diff
        before = dict(d)
        listed: dict[Any, Any] = {}       # section -> keys differing before
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
                    if (key[0], ctx_did(hi)) in t.did_owner or (lo & C.PAGE_MASK_4K) in t.pages:
                        keys.add(key)
        # A key whose raw values (and what its decoding reads) are equal on
        # both sides, and that did not differ before, needs no decoding.
        for key in keys:
            if same and ("context", key) not in d:
                lo, hi = sa.ctx.get(key, ZERO)
                if (lo, hi) == sb.ctx.get(key, ZERO):
                    dk = (key[0], ctx_did(hi))
                    page = lo & C.PAGE_MASK_4K
                    if sa.did_map.get(dk) == sb.did_map.get(dk) and sa.pages.get(page) == sb.pages.get(page):
                        continue
            put_change(d, ("context", key), ctx_fields(sa, va, key), ctx_fields(sb, vb, key))
        keys = set(t.dids)
        keys.update(listed.get("dids", ()))
        for key in keys:
            if same and ("dids", key) not in d and (key in sa.did_bits) == (key in sb.did_bits) \
                    and sa.did_map.get(key) == sb.did_map.get(key):
                continue
            put_change(d, ("dids", key), did_fields(sa, va, key), did_fields(sb, vb, key))
        keys = set(t.devices)
        keys.update(listed.get("devices", ()))
        for key in keys:
            if same and ("devices", key) not in d and (key in sa.present) == (key in sb.present) \
                    and sa.owners.get(key) == sb.owners.get(key):
                continue
            put_change(d, ("devices", key), dev_fields(sa, va, key), dev_fields(sb, vb, key))
        keys = set(t.idmaps)
        keys.update(listed.get("idmaps", ()))
        if t.idmaps_all:
            keys.update(sa.idmaps)
            keys.update(sb.idmaps)
        for key in keys:
            if ("idmaps", key) not in d and sa.idmaps.get(key) == sb.idmaps.get(key):
                continue
            put_change(d, ("idmaps", key), idmap_fields(sa, key), idmap_fields(sb, key))
        keys = set(t.domains)
        keys.update(listed.get("domains", ()))
        for key in keys:
            status_a, status_b = sa.domains.get(key), sb.domains.get(key)
            if status_a == status_b and ("domains", key) not in d:
                continue
            put_change(d, ("domains", key), {"status": status_a}, {"status": status_b})
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
            units = set()
        differing = _units_differing(sa, sb) if units else None
        for u in units:
            if differing is not None and u not in differing:
                d.pop(("caches", u), None)
                self._sigs.pop(u, None)
                continue
            sig = (unit_sig(sa, u), unit_sig(sb, u))
            if sig[0] == sig[1]:
                d.pop(("caches", u), None)
                self._sigs.pop(u, None)
                continue
            if not names_changed and self._sigs.get(u) == sig and ("caches", u) in d:
                continue
            self._sigs[u] = sig
            put_change(d, ("caches", u), cache_view(sa, va, u), cache_view(sb, vb, u))
        return d != before

    def converged(self) -> bool:
        """Equal states again: a lazy side goes back to not folding."""
        if self.equal or self.diff or self.broken:
            return self.equal
        sa, sb = self.st
        if (sa.cm, sa.coherent) == (sb.cm, sb.coherent) and all(getattr(sa, n) == getattr(sb, n) for n in TABLES) \
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
    def changes(self) -> list[Any]:
        return change_records(self.diff, self.va, self.vb)


def put_change(d: Diff, key: tuple[str, Any], a: dict[str, Any], b: dict[str, Any]) -> None:
    """Record in ``d`` the decoded fields a and b of one entry as its
    difference (only the differing fields), or drop it when they are equal."""
    if a == b:
        d.pop(key, None)
        return
    ca = {k: v for k, v in a.items() if b.get(k, _MISS) != v}
    cb = {k: v for k, v in b.items() if a.get(k, _MISS) != v}
    d[key] = (ca, cb)


def change_records(diff: dict[Any, Any], va: PlatformView, vb: PlatformView) -> list[Any]:
    """``{(section, key): (a_fields, b_fields)}`` as the report's change
    records, in its order (also state_delta's, for the diff view)."""
    out = []
    for (section, key), (a, b) in sorted(diff.items(), key=_change_order):
        out.append({"section": section, **_ident(section, key, va, vb), "a": jsonable(a), "b": jsonable(b)})
    return out


def name_alike(va: PlatformView, vb: PlatformView) -> bool:
    """Both headers name domains, segments and devices alike: equal raw
    values then decode to equal fields."""
    return va.names == vb.names and va.segment == vb.segment and va.hardware == vb.hardware




def _change_order(item: tuple[tuple[str, Any], Any]) -> tuple[int, str]:
    (section, key), _ = item
    return (SECTIONS.index(section), repr(_sortable(key)))


def _sortable(key: Any) -> Any:
    if isinstance(key, tuple):
        return tuple(_sortable(k) for k in key)
    return (0, key) if isinstance(key, int) else (1, str(key))


def _ident(section: str, key: Any, va: PlatformView, vb: PlatformView) -> dict[str, Any]:
    if section == "context":
        u, bus, devfn = key
        return {"iommu": u, "rid": va.rid(u, bus, devfn)}
    if section == "dids":
        return {"iommu": key[0], "did": key[1]}
    if section == "devices":
        seg, bdf = key
        return {"bdf": fmt_rid(seg, bdf >> 8, bdf & 0xFF)}
    if section == "idmaps":
        dom, base, end = key
        return {"domain": va.domain_name(dom) if dom in va.names else vb.domain_name(dom),
                "base": hex64(base), "end": hex64(end)}
    if section == "domains":
        return {"domain": va.domain_name(key) if key in va.names else vb.domain_name(key)}
    return {"iommu": key}


def ctx_did(hi: int) -> int:
    """The domain ID of a context entry (its high word's bits 8..23)."""
    return (hi >> 8) & 0xFFFF


def ctx_fields(st: State, view: PlatformView, key: tuple[int, int, int]) -> dict[str, Any]:
    """A context entry decoded: present (P, bit 0 of lo), did, the DID's and
    the page tables' owners, tt (lo bits 2..3), aw (hi bits 0..2), raw words."""
    lo, hi = st.ctx.get(key, ZERO)
    return {"present": bool(lo & 1), "did": ctx_did(hi), "did_owner": did_owner(st, view, key[0], lo, hi),
            "pt_owner": pt_owner(st, view, lo), "tt": (lo >> 2) & 3, "aw": hi & 7,
            "lo": hex64(lo), "hi": hex64(hi)}


def did_fields(st: State, view: PlatformView, key: tuple[int, int]) -> dict[str, Any]:
    owner = st.did_map.get(key)
    return {"in_use": key in st.did_bits, "owner": view.domain_name(owner) if owner is not None else None}


def dev_fields(st: State, view: PlatformView, key: tuple[int, int]) -> dict[str, Any]:
    present = key in st.present
    owner = st.owners.get(key)
    return {"present": present, "owner": view.domain_name(owner) if owner is not None else None}


def idmap_fields(st: State, key: tuple[int, int, int]) -> dict[str, Any]:
    v = st.idmaps.get(key)
    if v is None:
        return {"mapped": False}
    return {"mapped": True, "access": v[0], "refcount": v[1]}


_SIG_TABLES = ("cc", "tlb", "devtlb", "hw", "pending", "ctx")
_unit_of = itemgetter(0)        # of a (unit, ...) key


def _differing_keys(x: dict[Any, Any], y: dict[Any, Any]) -> set[Any]:
    """Keys whose values differ or that one dict lacks (C speed: the state
    tables hold hashable values)."""
    return {k for k, _v in x.items() ^ y.items()}


def _units_differing(sa: State, sb: State) -> set[int]:
    """The units whose unit_sig differs between two states (every other
    unit's is equal), from one C-speed pass over each table instead of a
    pass per unit and side."""
    out: set[Any] = set()
    for name in _SIG_TABLES:
        x, y = getattr(sa, name), getattr(sb, name)
        if x != y:
            out.update([k[0] for k, _v in x.items() ^ y.items()])
    return out


def unit_sig(st: State, u: int) -> tuple[dict[Any, Any], ...]:
    """Everything the cache view of unit u depends on, as a comparable value."""
    return (
        {k: v for k, v in st.cc.items() if k[0] == u},
        {k: v for k, v in st.tlb.items() if k[0] == u},
        {k: v for k, v in st.devtlb.items() if k[0] == u},
        {k: v for k, v in st.hw.items() if k[0] == u},
        {k: v for k, v in st.pending.items() if k[0] == u},
        {k: v for k, v in st.ctx.items() if k[0] == u},
    )


