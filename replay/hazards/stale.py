"""stale-context, stale-iotlb, foreign-iotlb: docs/MODEL.md#hazard-c1 (c1-c3),
over the "may hold" cache model of replay.caches.

* stale-context (c1), per requester ID: the context cache may hold a value
  other than the entry in memory (on a non-coherent unit also a value not yet
  made visible by iommu_sync_cache), from the CPU write until a context flush
  that matches the source-id completes.
* stale-iotlb (c2), per requester ID and DID: the IOTLB may hold translations filled
  through this requester ID under a (DID, tables) pair its entry in memory no
  longer gives, until an IOTLB flush of that DID completes.
* foreign-iotlb (c3), per requester ID: a translation tagged DID X may be
  filled through this requester ID from page tables that are not those of
  X's owner -- from the entry in memory (the W1'..W2' value of the non-cx16
  best-effort path), from the context cache, or already in the IOTLB -- so
  every *other* requester ID whose entry carries X can hit it.  Those are
  the victims, named in the detail.

Severity: c1/c2 are ``benign`` when the operation that opened them closes
them (MO9/MO10, UO5); ``hazard`` when they outlive it (a skipped flush: UO4
-EINVAL, a failed flush) or when the flush that ended them named another DID
than the cached entry's.  c3 is a ``hazard`` with victims and a ``warning``
without (MAP_SINGLE_DEVICE, a dying owner's DID).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from replay import caches
from replay.caches import Key, Value
from tracer import schema as S

from .base import (
    F_DID_DID,
    F_DID_UNIT,
    F_KEY_BUS,
    F_KEY_DEVFN,
    F_KEY_IOMMU,
    PAGE_MASK,
    ZERO,
    Analyser,
    Context,
    Event,
    Hook,
    Names,
    Window,
    domain_name,
    join_names,
)
from .findings import BENIGN, HAZARD, WARNING, Finding, renderer

translation_of = caches.translation_of


class StaleAnalyser(Analyser):
    KINDS = ("stale-context", "stale-iotlb", "foreign-iotlb")
    MARKS_OUTLIVED = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.c1_keys: dict[int, set[Key]] = {}     # iommu -> {key with an open stale-context window}
        self.c2_keys: dict[int, set[tuple[Key, int]]] = {}  # iommu -> {(key, did) with an open stale-iotlb window}
        self.c2_did: dict[tuple[int, int], set[Key]] = {}  # (iommu, did) -> {key with an open window for did}
        self.c2_of: dict[Key, set[int]] = {}       # key -> {did with an open stale-iotlb window}
        self.c3_keys: dict[int, set[Key]] = {}     # iommu -> {key with an open foreign-iotlb window}

    def hooks(self) -> dict[int, Hook]:
        h: dict[int, Hook] = {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_FLUSH_CONTEXT: self.on_flush_context,
            S.K_FLUSH_IOTLB: self.on_flush_iotlb,
            S.K_DID_BITMAP: self.on_did,
            S.K_DID_MAP: self.on_did,
            S.K_PT_ALLOC: self.on_all,
            S.K_PT_FREE: self.on_all,
            S.K_DOMAIN_DESTROY: self.on_all,
            S.K_OP_END: self.on_op_end,
        }
        if not self.ctx.st.coherent:
            h[S.K_CACHE_SYNC] = self.on_sync
        return h

    # --- triggers ---------------------------------------------------------------------------
    #
    # Everything is re-derived per requester ID, and only for the IDs an event
    # can have changed: its own store; the IDs whose cached values a flush took
    # away or whose windows are open; the users of a DID whose ownership moved.

    def on_ctx_write(self, ev: Event) -> None:
        ctx = self.ctx
        key, old, new = ctx.cur
        u = key[0]
        self.check_c1(key, ev)
        # c2: the retired value's fill, and the windows the new value may end
        dids = set(self.c2_of.get(key, ()))
        if old is not None:
            dids.add(old[0])
        if ev[S.F_CTX_WRITE_OLD_LO] & caches.P_BIT:
            dids.add((ev[S.F_CTX_WRITE_OLD_HI] >> 8) & 0xFFFF)
        for did in dids:
            self.check_c2(key, did, ev)
        c3 = self.c3_keys.get(u)
        mism = ctx.mismatch_keys.get(u)
        if (c3 and key in c3) or (mism and key in mism):
            self.check_c3(key, ev)
        if new is not None and c3:
            # key now carries DID new[0]: a victim of foreign fills tagged with it
            for k in c3:
                w = self.open[("c3", k)]
                if k != key and any(d == new[0] for d, _ in w.info["fills"]) \
                        and not self._owner_dying(w, new[0]):
                    w.info["victims"].add(key)

    def on_sync(self, ev: Event) -> None:
        key = (ev[F_KEY_IOMMU], ev[F_KEY_BUS], ev[F_KEY_DEVFN])
        self.check_c1(key, ev)
        self._recheck((key,), ev)

    def on_flush_context(self, ev: Event) -> None:
        if ev[S.F_FLUSH_CONTEXT_RC] != 0:
            return                      # skipped (non-present, CM = 0) or failed: nothing dropped
        ctx = self.ctx
        u = ev[S.F_FLUSH_CONTEXT_IOMMU]
        targets = ctx.flush_targets(ev)
        c1 = self.c1_keys.get(u)
        if c1:
            for key in list(c1 if targets is None else c1.intersection(targets)):
                self.check_c1(key, ev)
        # values that left the context cache leave their fills in the IOTLB
        if self.ctx.st.tlb:
            fillers = ctx.fillers_on(u)
            self._recheck(fillers if targets is None else fillers.intersection(targets), ev, c3=False)
        c3 = self.c3_keys.get(u)
        if c3:
            for key in list(c3):
                self.check_c3(key, ev)

    def on_flush_iotlb(self, ev: Event) -> None:
        u = ev[S.F_FLUSH_IOTLB_IOMMU]
        if ev[S.F_FLUSH_IOTLB_RC] != 0:
            return                      # failed or skipped: nothing was invalidated
        gran, did = ev[S.F_FLUSH_IOTLB_GRAN], ev[S.F_FLUSH_IOTLB_DID]
        if gran == "dsi":
            for key in list(self.c2_did.get((u, did), ())):
                self.check_c2(key, did, ev)
        elif gran == "global":
            for key, d in list(self.c2_keys.get(u, ())):
                self.check_c2(key, d, ev)
        # windows that survived an IOTLB flush of another DID remember it
        for wid in self.c2_keys.get(u, ()):
            self.open[("c2", wid)].info["flushed"].add((gran, did))
        c3 = self.c3_keys.get(u)
        if c3:
            for key in list(c3):
                self.check_c3(key, ev)

    def on_did(self, ev: Event) -> None:
        """DID ownership changed: cached translations tagged with it may have
        become foreign (or stopped being so)."""
        ctx = self.ctx
        st = ctx.st
        u, did = ev[F_DID_UNIT], ev[F_DID_DID]
        keys = set(self.c3_keys.get(u, ()))
        mism = ctx.mismatch_keys.get(u)
        if mism:
            keys.update(mism)
        for b, df, _ in st.tlb.get((u, did), ()):
            keys.add((u, b, df))
        cc = st.cc
        for key in ctx.cc_keys_on(u):
            for lo, hi in cc[key]:
                if lo & 1 and (hi >> 8) & 0xFFFF == did:
                    keys.add(key)
                    break
        for key in keys:
            self.check_c3(key, ev)

    def on_all(self, ev: Event) -> None:
        """Page tables came or went: re-derive every foreign-iotlb candidate."""
        ctx = self.ctx
        st = ctx.st
        keys = set()
        for ks in self.c3_keys.values():
            keys.update(ks)
        for ks in ctx.mismatch_keys.values():
            keys.update(ks)
        for (u, _did), fills in st.tlb.items():
            keys.update((u, b, df) for b, df, _ in fills)
        keys.update(st.cc)
        for key in sorted(keys):
            self.check_c3(key, ev)

    def on_op_end(self, ev: Event) -> None:
        op = self.ctx.op
        for w in self.outlived():
            if w.kind != "foreign-iotlb":
                w.info.setdefault("outlived", op)

    def _recheck(self, keys: Iterable[Key], ev: Event, c3: bool = True) -> None:
        """Keys whose cached values may have turned into IOTLB fills.  A fill
        can only add to a stale-iotlb window that is not open yet (an IOTLB
        flush emptied it while the value sat in the context cache); a
        foreign value that leaves the context cache already has its
        foreign-iotlb window open (re-checked by the caller)."""
        ctx = self.ctx
        opened = self.c2_of
        for key in keys:
            have = opened.get(key, ())
            for did in {d for d, _ in ctx.fills_by(key)}:
                if did not in have:
                    self.check_c2(key, did, ev)
            if c3:
                self.check_c3(key, ev)

    # --- c1 -------------------------------------------------------------------------------------

    def check_c1(self, key: Key, ev: Event) -> None:
        st = self.ctx.st
        mem = st.ctx.get(key, ZERO)
        if st.coherent:
            vals = st.cc.get(key)
            stale = [v for v in vals if v != mem] if vals else None
        else:
            stale = [v for v in caches.context_may_hold(st, key) if v != mem]
        wkey = ("c1", key)
        w = self.open.get(wkey)
        u = key[0]
        if stale:
            if w is None:
                w = self.open_window("stale-context", wkey, ev, device=self.ctx.device_of(key),
                                     rid=self.ctx.rid(key), iommu=u,
                                     info={"values": set(), "mem": mem})
                self.c1_keys.setdefault(u, set()).add(key)
            w.info["values"].update(stale)
        elif w is not None:
            flush = ev[S.I_KIND] == S.K_FLUSH_CONTEXT
            if flush and ev[S.F_FLUSH_CONTEXT_GRAN] == "device":
                tags = {caches.cache_tag(v) for v in w.info["values"] if v[0] & 1}
                if tags and ev[S.F_FLUSH_CONTEXT_DID] not in tags:
                    w.info["wrong_did"] = (ev[S.F_FLUSH_CONTEXT_DID], tags)
            if flush:
                w.info["flushed"] = True
            self.c1_keys[u].discard(key)
            self.close_window(wkey, ev)

    # --- c2 ---------------------------------------------------------------------------------------

    def check_c2(self, key: Key, did: int, ev: Event) -> None:
        """stale-iotlb for (key, did): IOTLB fills through key tagged did
        that its entry in memory does not give."""
        u, b, df = key
        cur = self.ctx.keyinfo.get(key)
        stale = None
        for fb, fdf, pt in self.ctx.st.tlb.get((u, did), ()):
            if fb == b and fdf == df and cur != (did, pt):
                if stale is None:
                    stale = [pt]
                else:
                    stale.append(pt)
        wid = (key, did)
        wkey = ("c2", wid)
        w = self.open.get(wkey)
        if stale:
            if w is None:
                ctx = self.ctx
                w = self.open_window("stale-iotlb", wkey, ev, device=ctx.device_of(key), rid=ctx.rid(key),
                                     iommu=u, info={"fills": {}, "flushed": set()})
                self.c2_keys.setdefault(u, set()).add(wid)
                self.c2_did.setdefault((u, did), set()).add(key)
                self.c2_of.setdefault(key, set()).add(did)
            fills = w.info["fills"]
            for pt in stale:
                if (did, pt) not in fills:
                    fills[(did, pt)] = self.ctx.did_owner(u, did)
        elif w is not None:
            self.c2_keys[u].discard(wid)
            self.c2_did[(u, did)].discard(key)
            self.c2_of[key].discard(did)
            self.close_window(wkey, ev)

    # --- c3 ---------------------------------------------------------------------------------------

    def _foreign(self, u: int, did: int, pt: int) -> tuple[int, int] | None:
        """(owner of did, owner of pt) when a translation tagged did through
        tables pt is foreign to did's owner, else None."""
        ctx = self.ctx
        owner = ctx.did_owner(u, did)
        if owner is None:
            return None
        po = ctx.pt_owner(pt)
        if po is None or po == owner:
            return None
        return owner, po

    def _owner_dying(self, w: Window, did: int) -> bool:
        """A foreign fill tagged did was made while did's owner was dying
        (Context.owner_dying: no victims)."""
        owner_dying = self.ctx.owner_dying
        return any(d == did and owner_dying(owner) for (d, _), (owner, _) in w.info["fills"].items())

    def check_c3(self, key: Key, ev: Event) -> None:
        """foreign-iotlb for key: a translation it may use or have filled --
        its entry in memory, a cached value, an IOTLB fill -- is tagged with a
        DID whose owner does not own the tables."""
        ctx = self.ctx
        st = ctx.st
        u, b, df = key
        found: dict[tuple[int, int], tuple[int, int]] = {}
        _foreign = self._foreign
        mism = ctx.mismatch_keys.get(u)
        if mism and key in mism:
            ki = ctx.keyinfo.get(key)
            if ki is not None and ki[1] is not None:
                fo = _foreign(u, ki[0], ki[1])
                if fo is not None:
                    found[(ki[0], ki[1])] = fo
        for v in st.cc.get(key, ()):
            tr = translation_of(v)
            if tr is not None:
                fo = _foreign(u, *tr)
                if fo is not None:
                    found[tr] = fo
        if st.tlb:
            for did, pt in ctx.fills_by(key):
                fo = _foreign(u, did, pt)
                if fo is not None:
                    found[(did, pt)] = fo
        wkey = ("c3", key)
        w = self.open.get(wkey)
        if found:
            if w is None:
                info: dict[str, Any] = {"fills": {}, "victims": set(),
                        "warning": ctx.warning_of(ev)}
                w = self.open_window("foreign-iotlb", wkey, ev, device=ctx.device_of(key), rid=ctx.rid(key),
                                     iommu=u, info=info)
                self.c3_keys.setdefault(u, set()).add(key)
            for tr, fo in found.items():
                w.info["fills"].setdefault(tr, fo)
                if ctx.owner_dying(fo[0]):
                    continue
                for other in ctx.keys_with_did(u, tr[0]):
                    if other != key:
                        w.info["victims"].add(other)
        elif w is not None:
            self.c3_keys[u].discard(key)
            self.close_window(wkey, ev)

    def finish(self) -> None:
        super().finish()
        for d in (self.c1_keys, self.c2_keys, self.c2_did, self.c2_of, self.c3_keys):
            d.clear()

    # --- findings ------------------------------------------------------------------------------------

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        if w.kind == "stale-context":
            return self._fin_c1(w, end, end_label)
        if w.kind == "stale-iotlb":
            return self._fin_c2(w, end, end_label, ev)
        return self._fin_c3(w, end, end_label)

    # The two frequent kinds decide their severity now and capture the facts
    # the sentence needs (table owners may change later); the sentence itself
    # is written when somebody reads it (Finding.detail).

    def _fin_c1(self, w: Window, end: int | None, end_label: str | None) -> Finding:
        info = w.info
        outlived = info.get("outlived")
        wrong = info.get("wrong_did")
        sev = HAZARD if (end is None or outlived is not None or wrong is not None) else BENIGN
        pt_owner = self.ctx.pt_owner
        if wrong is not None:
            wrong = (wrong[0], tuple(sorted(wrong[1])))
        # owners now (tables may be freed later), names when written; the
        # values flat: (lo, hi, owner of lo's tables) per value
        facts = [RENDER_C1, self.ctx.names, outlived, wrong, "flushed" in info]
        for v in info["values"]:
            facts += (v[0], v[1], pt_owner(v[0] & PAGE_MASK))
        return Finding("stale-context", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, tuple(facts))

    def _fin_c2(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding:
        info = w.info
        outlived = info.get("outlived")
        sev = HAZARD if (end is None or outlived is not None) else BENIGN
        pt_owner = self.ctx.pt_owner
        restored = ev is not None and ev[S.I_KIND] != S.K_FLUSH_IOTLB
        flushed = info["flushed"]
        flushed = tuple(sorted({d for g, d in flushed if g == "dsi"})) if flushed else ()
        # the fills flat: (did, tables, owner of did, owner of the tables) per fill
        facts = [RENDER_C2, self.ctx.names, outlived, flushed, restored]
        for (did, pt), owner in info["fills"].items():
            facts += (did, pt, owner, pt_owner(pt))
        return Finding("stale-iotlb", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, tuple(facts))

    def _fin_c3(self, w: Window, end: int | None, end_label: str | None) -> Finding:
        ctx = self.ctx
        fills = w.info["fills"]
        (did, pt), (owner, po) = sorted(fills.items())[0]
        victims = sorted(w.info["victims"])
        what = (f"IOTLB entries tagged DID {did} ({ctx.dom(owner)}) may be filled through {w.rid} "
                f"from {ctx.dom(po)}'s page tables")
        if victims:
            names = ctx.topo.devices_str(victims).split(", ")
            what += (f"; {join_names(names)}, using DID {did}, can hit them "
                     f"{'until the IOTLB flush at ' + end_label if end_label else 'from then on'}")
            sev = HAZARD
        else:
            what += "; no other requester ID uses that DID"
            sev = WARNING
        warn = w.info.get("warning")
        if warn:
            what += f' (Xen warned: "{warn}")'
        return Finding("foreign-iotlb", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, f"IOMMU {w.iommu}: {what}")


def _tail(end: int | None, end_label: str | None, outlived: int | None, what_flush: str) -> str:
    if end is None:
        if outlived is not None:
            return f"; no {what_flush} followed before op {outlived} returned, nor later"
        return f"; the trace ends before any {what_flush}"
    if outlived is not None:
        return (f"; op {outlived} returned without the {what_flush}, "
                f"which only came at {end_label or 'seq ' + str(end)}")
    return f", until the {what_flush} at {end_label or 'seq ' + str(end)} in the same operation"


def _tables(names: Names, lo: int, po: int | None) -> str:
    if lo & 1 and (lo >> 2) & 3 == caches.TT_PASS_THRU:
        return "pass-through"
    return f"{domain_name(names, po)}'s tables" if po is not None else "freed tables"


def _value(names: Names, v: Value, po: int | None) -> str:
    lo, hi = v
    if not lo & 1:
        return "a non-present entry"
    return f"DID {(hi >> 8) & 0xFFFF} with {_tables(names, lo, po)}"


def _render_c1(f: Finding, d: tuple[Any, ...]) -> str:
    _, names, outlived, wrong, flushed = d[:5]
    u, rid, end, end_label = f.iommu, f.rid, f.end, f.end_label
    values = sorted((((d[i], d[i + 1]), d[i + 2]) for i in range(5, len(d), 3)), key=lambda x: x[0])
    vals = " / ".join(_value(names, v, po) for v, po in values)
    tail = _tail(end, end_label, outlived, "context-cache flush for it")
    if wrong is not None:
        tail += (f"; that device-selective flush named DID {wrong[0]} while the cached entry carries "
                 f"DID {', '.join(str(t) for t in wrong[1])}")
    elif end is not None and not flushed and outlived is None:
        tail = ", until its entry in memory was written back to the cached value"
    return f"IOMMU {u}: the context cache may still hold {vals} for {rid} after its entry in memory changed{tail}"


def _render_c2(f: Finding, d: tuple[Any, ...]) -> str:
    _, names, outlived, flushed, restored = d[:5]
    u, rid, end, end_label = f.iommu, f.rid, f.end, f.end_label
    fills = sorted((((d[i], d[i + 1]), d[i + 2], d[i + 3]) for i in range(5, len(d), 4)), key=lambda x: x[0])
    dids = sorted({tr[0] for tr, _, _ in fills})
    parts = []
    for (did, _pt), owner, po in fills:
        tables = f"{domain_name(names, po)}'s tables" if po is not None else "freed tables"
        who = domain_name(names, owner) if owner is not None else "freed"
        parts.append(f"DID {did} ({who}) from {tables}")
    what = "; ".join(dict.fromkeys(parts))
    hazard = end is None or outlived is not None
    tail = _tail(end, end_label, outlived, f"IOTLB flush of DID {'/'.join(map(str, dids))}")
    other = [d for d in flushed if d not in dids]
    if hazard and other:
        tail += f" (the IOTLB was flushed for DID {', '.join(map(str, other))} instead)"
    if restored and not hazard:
        tail = f", until its entry gave that translation again at {end_label or 'seq ' + str(end)} (rollback)"
    return (f"IOMMU {u}: IOTLB entries filled through {rid} ({what}) stay usable after its context entry "
            f"moved on{tail}")


RENDER_C1 = renderer(_render_c1)
RENDER_C2 = renderer(_render_c2)
