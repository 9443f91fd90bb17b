"""stale-context, stale-iotlb, foreign-iotlb: research/vtd-model.md §5 (c1-c3),
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

from replay import caches
from tracer import schema as S

from .base import ZERO, Analyser, join_names
from .findings import BENIGN, HAZARD, WARNING, Finding

translation_of = caches.translation_of
# events after which a cached translation may have become foreign without any
# entry in memory being a mismatch
OWNERSHIP_EVENTS = frozenset({S.K_DID_MAP, S.K_DID_BITMAP, S.K_PT_ALLOC, S.K_PT_FREE, S.K_DOMAIN_DESTROY})


class StaleAnalyser(Analyser):
    KINDS = ("stale-context", "stale-iotlb", "foreign-iotlb")

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        self.c1_keys: dict = {}     # iommu -> {key with an open stale-context window}
        self.c2_keys: dict = {}     # iommu -> {(key, did) with an open stale-iotlb window}
        self.c3_keys: dict = {}     # iommu -> {key with an open foreign-iotlb window}

    def hooks(self) -> dict:
        h = {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_FLUSH_CONTEXT: self.on_flush_context,
            S.K_FLUSH_IOTLB: self.on_flush_iotlb,
            S.K_DID_BITMAP: self.on_unit,
            S.K_DID_MAP: self.on_unit,
            S.K_PT_ALLOC: self.on_all,
            S.K_PT_FREE: self.on_all,
            S.K_DOMAIN_DESTROY: self.on_all,
            S.K_OP_END: self.on_op_end,
        }
        if not self.ctx.st.coherent:
            h[S.K_CACHE_SYNC] = self.on_ctx_write
        return h

    # --- triggers ---------------------------------------------------------------------------

    def on_ctx_write(self, ev):
        key = (ev[6], ev[7], ev[8])
        self.check_c1(key, ev)
        self.check_unit(key[0], ev)

    def on_flush_context(self, ev):
        u = ev[6]
        for key in list(self.c1_keys.get(u, ())):
            self.check_c1(key, ev)
        self.check_unit(u, ev)

    def on_flush_iotlb(self, ev):
        u = ev[6]
        self.check_unit(u, ev)
        # windows that survived an IOTLB flush of another DID remember it
        if ev[13] == 0:
            for wid in self.c2_keys.get(u, ()):
                w = self.open[("c2", wid)]
                w.info["flushed"].add((ev[7], ev[8]))

    def on_unit(self, ev):
        self.check_unit(ev[6], ev, iotlb=False)

    def on_all(self, ev):
        ctx = self.ctx
        units = set(ctx.tlb_dids) | set(ctx.cc_keys) | set(ctx.mismatch_keys) | set(self.c3_keys)
        for u in sorted(units):
            self.check_unit(u, ev, iotlb=False)

    def on_op_end(self, ev):
        op = self.ctx.op
        for w in self.open.values():
            if w.kind != "foreign-iotlb":
                w.info.setdefault("outlived", op)

    # --- c1 -------------------------------------------------------------------------------------

    def check_c1(self, key, ev) -> None:
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
            if ev[0] == S.K_FLUSH_CONTEXT and ev[7] == "device":
                tags = {caches.cache_tag(v) for v in w.info["values"] if v[0] & 1}
                if tags and ev[8] not in tags:
                    w.info["wrong_did"] = (ev[8], tags)
            if ev[0] == S.K_FLUSH_CONTEXT:
                w.info["flushed"] = True
            self.c1_keys[u].discard(key)
            self.close_window(wkey, ev)

    # --- c2 and c3 ---------------------------------------------------------------------------------

    def _foreign(self, u, did, pt):
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

    def check_unit(self, u, ev, iotlb: bool = True) -> None:
        """Re-derive the stale-iotlb (when the IOTLB or the entries of u
        may have changed: ``iotlb``) and foreign-iotlb windows of unit u.

        A translation can only be foreign if it was so when an entry in
        memory held it (then the mismatch analyser lists that entry), or if
        DID ownership or page tables changed since: foreign-iotlb is only
        re-derived in those cases, or while one of its windows is open."""
        ctx = self.ctx
        mism = ctx.mismatch_keys.get(u)
        c3_open = self.c3_keys.get(u)
        foreign = bool(mism or c3_open or ev[0] in OWNERSHIP_EVENTS)
        tdids = ctx.tlb_dids.get(u)
        if not foreign and not (iotlb and (tdids or self.c2_keys.get(u))):
            return
        st = ctx.st
        keyinfo = ctx.keyinfo
        c2: dict = {}
        c3: dict = {}
        tlb = st.tlb
        _foreign = self._foreign
        if tdids:
            for did in tdids:
                fills = tlb.get((u, did))
                if not fills:
                    continue
                for b, df, pt in fills:
                    key = (u, b, df)
                    if iotlb and keyinfo.get(key) != (did, pt):
                        c2.setdefault((key, did), set()).add((did, pt))
                    if foreign:
                        fo = _foreign(u, did, pt)
                        if fo is not None:
                            c3.setdefault(key, {})[(did, pt)] = fo
        if foreign:
            cc = st.cc
            for key in ctx.cc_keys.get(u, ()):
                for v in cc.get(key, ()):
                    tr = translation_of(v)
                    if tr is not None:
                        fo = _foreign(u, *tr)
                        if fo is not None:
                            c3.setdefault(key, {})[tr] = fo
            for key in mism or ():
                tr = keyinfo.get(key)
                if tr is not None and tr[1] is not None:
                    fo = _foreign(u, *tr)
                    if fo is not None:
                        c3.setdefault(key, {})[tr] = fo
            self._sync("c3", "foreign-iotlb", self.c3_keys, u, c3, ev)
        if iotlb:
            self._sync("c2", "stale-iotlb", self.c2_keys, u, c2, ev)

    def _sync(self, tag, kind, index, u, now: dict, ev) -> None:
        """Open / close the windows of one unit to match ``now``: {wid: what}
        where wid is the filler key (c3) or (filler key, did) (c2)."""
        ctx = self.ctx
        openk = index.get(u)
        if openk is None:
            if not now:
                return
            openk = index[u] = set()
        for wid in [k for k in openk if k not in now]:
            openk.discard(wid)
            self.close_window((tag, wid), ev)
        for wid, what in now.items():
            key = wid[0] if tag == "c2" else wid
            w = self.open.get((tag, wid))
            if w is None:
                info = {"fills": {}, "flushed": set(), "victims": set(),
                        "warning": ctx.warning if ev[0] == S.K_CTX_WRITE else None}
                w = self.open_window(kind, (tag, wid), ev, device=ctx.device_of(key), rid=ctx.rid(key),
                                     iommu=u, info=info)
                openk.add(wid)
            if tag == "c2":
                for tr in what:
                    w.info["fills"].setdefault(tr, ctx.did_owner(u, tr[0]))
            else:
                for tr, fo in what.items():
                    w.info["fills"].setdefault(tr, fo)
                    if fo[0] in ctx.dying:
                        continue
                    for other in ctx.keys_with_did(u, tr[0]):
                        if other != key:
                            w.info["victims"].add(other)

    def finish(self) -> None:
        super().finish()
        self.c1_keys.clear()
        self.c2_keys.clear()
        self.c3_keys.clear()

    # --- findings ------------------------------------------------------------------------------------

    def _value(self, v, u) -> str:
        lo, hi = v
        if not lo & 1:
            return "a non-present entry"
        did = (hi >> 8) & 0xFFFF
        ctx = self.ctx
        po = ctx.pt_owner(lo & caches.PAGE_MASK_4K)
        tables = "pass-through" if (lo >> 2) & 3 == caches.TT_PASS_THRU else \
            (f"{ctx.dom(po)}'s tables" if po is not None else "freed tables")
        return f"DID {did} with {tables}"

    def finalize(self, w, end, end_label, ev):
        if w.kind == "stale-context":
            return self._fin_c1(w, end, end_label)
        if w.kind == "stale-iotlb":
            return self._fin_c2(w, end, end_label, ev)
        return self._fin_c3(w, end, end_label)

    def _tail(self, w, end, end_label, what_flush) -> tuple:
        outlived = w.info.get("outlived")
        if end is None:
            if outlived is not None:
                return HAZARD, f"; no {what_flush} followed before op {outlived} returned, nor later"
            return HAZARD, f"; the trace ends before any {what_flush}"
        if outlived is not None:
            return HAZARD, (f"; op {outlived} returned without the {what_flush}, "
                            f"which only came at {end_label or 'seq ' + str(end)}")
        return BENIGN, f", until the {what_flush} at {end_label or 'seq ' + str(end)} in the same operation"

    def _fin_c1(self, w, end, end_label):
        u = w.iommu
        vals = " / ".join(self._value(v, u) for v in sorted(w.info["values"]))
        sev, tail = self._tail(w, end, end_label, "context-cache flush for it")
        wrong = w.info.get("wrong_did")
        if wrong is not None:
            sev = HAZARD
            tail += (f"; that device-selective flush named DID {wrong[0]} while the cached entry carries "
                     f"DID {', '.join(str(t) for t in sorted(wrong[1]))}")
        elif end is not None and not w.info.get("flushed") and sev == BENIGN:
            tail = ", until its entry in memory was written back to the cached value"
        detail = (f"IOMMU {u}: the context cache may still hold {vals} for {w.rid} after its entry "
                  f"in memory changed{tail}")
        return Finding("stale-context", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, detail)

    def _fin_c2(self, w, end, end_label, ev):
        ctx = self.ctx
        fills = w.info["fills"]
        dids = sorted({d for d, _ in fills})
        parts = []
        for (did, pt), owner in sorted(fills.items()):
            po = ctx.pt_owner(pt)
            tables = f"{ctx.dom(po)}'s tables" if po is not None else "freed tables"
            who = ctx.dom(owner) if owner is not None else "freed"
            parts.append(f"DID {did} ({who}) from {tables}")
        what = "; ".join(dict.fromkeys(parts))
        sev, tail = self._tail(w, end, end_label, f"IOTLB flush of DID {'/'.join(map(str, dids))}")
        other = sorted(d for g, d in w.info["flushed"] if g == "dsi" and d not in dids)
        if sev == HAZARD and other:
            tail += f" (the IOTLB was flushed for DID {', '.join(map(str, other))} instead)"
        if ev is not None and ev[0] != S.K_FLUSH_IOTLB and sev == BENIGN:
            tail = (f", until its entry gave that translation again at {end_label or 'seq ' + str(end)} "
                    f"(rollback)")
        detail = (f"IOMMU {w.iommu}: IOTLB entries filled through {w.rid} ({what}) stay usable after "
                  f"its context entry moved on{tail}")
        return Finding("stale-iotlb", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, detail)

    def _fin_c3(self, w, end, end_label):
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
