"""did-leak, did-dangling, did-reuse, did-incoherent: docs/MODEL.md#hazard-d1 (d1-d4).

* did-leak (d1), per (unit, DID): the DID's bitmap bit is set and its
  domid_map slot names a domain, but no present context entry on the unit
  carries the DID and that domain has no device behind the unit.  Checked at
  operation boundaries: reported only when it still holds when a top-level
  operation returns (the window starts where it began).  DID 0 under
  caching mode is the architectural reservation, not a leak; nor is the DID
  of a device's pseudo domain ID (engine ``final``: allocated with its
  quarantine tables, kept while the device exists, whoever owns it).
* did-dangling (d2), per requester ID: its entry in memory, a value the
  context cache may hold, or an IOTLB fill through it carries a DID whose
  bitmap bit is clear, whose slot says DOMID_INVALID or whose domain is gone;
  or its entry uses a domain's page tables while that domain's iommu_bitmap
  lacks the unit (its later map/unmap flushes skip the unit).  Like d1,
  reported only when it holds when an operation returns (MO7..MO12 and
  similar transients inside one operation are not findings).
* did-reuse (d3), per (requester ID, DID): context_set_domain_id allocates a
  DID (the did-map store before the bit is set) while that requester ID still
  references the number; open until the reference is gone.

* did-incoherent (d4), per (unit, DID): at an operation's end the bit is
  set while the slot names a domain whose tables no entry carrying the DID
  uses -- the XSA-399 race's result; ``DidIncoherentAnalyser`` below.

Severity: a leak is a ``warning`` (no DMA can use it; it only eats the DID
space), dangling, reuse and incoherence are ``hazard``.
"""

from __future__ import annotations

from replay.caches import Key, StateTables
from tracer import schema as S
from tracer.schema import DOMID_INVALID, DOMID_IO

from .base import (
    F_DEV_BDF,
    F_DEV_SEG,
    F_DID_DID,
    F_DID_UNIT,
    F_DOMAIN,
    F_KEY_BUS,
    F_KEY_DEVFN,
    F_KEY_IOMMU,
    PAGE_MASK,
    TT_PT,
    Analyser,
    Context,
    Event,
    Hook,
    Window,
    join_names,
)
from .findings import HAZARD, WARNING, Finding

WHERE = {"entry": "its context entry", "cache": "the context cache", "iotlb": "the IOTLB"}


def _bitmap_domain(st: StateTables, dom: int | None) -> int | None:
    """The domain whose iommu_bitmap covers tables dom owns: a device's
    quarantine tables (its pseudo domain ID's, engine final) are dom_io's."""
    return DOMID_IO if dom in st.pseudo else dom


class DidAnalyser(Analyser):
    KINDS = ("did-leak", "did-dangling", "did-reuse")
    MARKS_OUTLIVED = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.by_unit: dict[int, set[Key]] = {}     # iommu -> {key with an open d2/d3 window}
        self.d3: dict[Key, set[int]] = {}          # key -> {did with an open did-reuse window}
        self.cached: dict[int, set[Key]] = {}      # iommu -> {key of by_unit referencing a DID from cache or IOTLB}
        self._status: dict[tuple[int, int], str | None] = {}    # (iommu, did) -> why it is dangling, None: not
                                    # (absent: "freed", as every bit starts clear)

    def hooks(self) -> dict[int, Hook]:
        h: dict[int, Hook] = {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_FLUSH_CONTEXT: self.on_flush_context,
            S.K_FLUSH_IOTLB: self.on_flush_iotlb,
            S.K_DID_MAP: self.on_did_map,
            S.K_DID_BITMAP: self.on_did,
            S.K_IOMMU_BITMAP: self.on_iommu_bitmap,
            S.K_OWNER_MOVE: self.on_owner,
            S.K_DEVICE_REMOVE: self.on_owner,
            S.K_DOMAIN_CREATE: self.on_domain,
            S.K_DOMAIN_DESTROY: self.on_domain_destroy,
            S.K_PT_ALLOC: self.on_pt_alloc,
            S.K_PT_FREE: self.on_pt_free,
            S.K_OP_END: self.on_op_end,
        }
        if not self.ctx.st.coherent:
            h[S.K_CACHE_SYNC] = self.on_sync
        return h

    # --- helpers ---------------------------------------------------------------------------

    def dangling(self, u: int, did: int) -> str | None:
        """Why DID did on u is dangling, or None."""
        st = self.ctx.st
        if (u, did) not in st.did_bits:
            return "freed"
        m = st.did_map.get((u, did), 0)
        if m == DOMID_INVALID:
            return "invalid"
        if m not in self.ctx.alive and m not in st.pseudo:
            return "gone"       # (a pseudo domain ID lives while its device has it)
        return None

    def refs(self, key: Key) -> dict[int, set[str]]:
        """{did: {"entry" | "cache" | "iotlb"}}: the DIDs key references."""
        ctx = self.ctx
        st = ctx.st
        out: dict[int, set[str]] = {}
        info = ctx.keyinfo.get(key)
        if info is not None:
            out[info[0]] = {"entry"}
        for lo, hi in st.cc.get(key, ()):
            if lo & 1:
                out.setdefault((hi >> 8) & 0xFFFF, set()).add("cache")
        if st.tlb:
            for did, _ in ctx.fills_by(key):
                out.setdefault(did, set()).add("iotlb")
        return out

    def table_owners(self, key: Key, did: int) -> set[int | None]:
        """Owners of the page tables key's references to did translate with
        (None for pass-through or freed tables)."""
        ctx = self.ctx
        st = ctx.st
        out = set()
        info = ctx.keyinfo.get(key)
        if info is not None and info[0] == did:
            out.add(ctx.pt_owner(info[1]) if info[1] is not None else None)
        for lo, hi in st.cc.get(key, ()):
            if lo & 1 and (hi >> 8) & 0xFFFF == did:
                out.add(None if (lo >> 2) & 3 == TT_PT else ctx.pt_owner(lo & PAGE_MASK))
        u, b, df = key
        for fb, fdf, pt in st.tlb.get((u, did), ()):
            if fb == b and fdf == df:
                out.add(ctx.pt_owner(pt))
        return out

    def keys_referencing(self, u: int, did: int) -> set[Key]:
        ctx = self.ctx
        st = ctx.st
        ks = set(ctx.keys_with_did(u, did))
        for key in ctx.cc_keys_on(u):
            for lo, hi in st.cc[key]:
                if lo & 1 and (hi >> 8) & 0xFFFF == did:
                    ks.add(key)
                    break
        for b, df, _ in st.tlb.get((u, did), ()):
            ks.add((u, b, df))
        return ks

    def _track(self, key: Key, on: bool) -> None:
        s = self.by_unit.setdefault(key[0], set())
        if on:
            s.add(key)

    # --- triggers ----------------------------------------------------------------------------

    def on_ctx_write(self, ev: Event) -> None:
        ctx = self.ctx
        key, old, new = ctx.cur
        u = key[0]
        if old is not None and (new is None or new[0] != old[0]):
            # a leak can only begin when the last entry carrying a DID moves on
            if not ctx.keys_with_did(u, old[0]):
                self.check_leak(u, old[0], ev)
            # ... and only end when an entry takes the DID up again
            if new is not None and ("d1", u, new[0]) in self.open:
                self.check_leak(u, new[0], ev)
        elif new is not None and old is None and ("d1", u, new[0]) in self.open:
            self.check_leak(u, new[0], ev)
        self.check_key(key, ev)

    def on_sync(self, ev: Event) -> None:
        self.check_key((ev[F_KEY_IOMMU], ev[F_KEY_BUS], ev[F_KEY_DEVFN]), ev)

    def on_flush_context(self, ev: Event) -> None:
        # a completed flush only takes cache references away (and may turn
        # them into IOTLB references): only keys it can have touched
        keys = self.cached.get(ev[S.F_FLUSH_CONTEXT_IOMMU])
        if keys and ev[S.F_FLUSH_CONTEXT_RC] == 0:
            targets = self.ctx.flush_targets(ev)
            for key in list(keys if targets is None else keys.intersection(targets)):
                self.check_key(key, ev)

    def on_flush_iotlb(self, ev: Event) -> None:
        keys = self.cached.get(ev[S.F_FLUSH_IOTLB_IOMMU])
        if keys and ev[S.F_FLUSH_IOTLB_RC] == 0:
            for key in list(keys):
                self.check_key(key, ev)

    def on_did_map(self, ev: Event) -> None:
        ctx = self.ctx
        u, did, new = ev[F_DID_UNIT], ev[F_DID_DID], ev[S.F_DID_MAP_NEW]
        if new != DOMID_INVALID and (u, did) not in ctx.st.did_bits:
            # context_set_domain_id allocating did: anything still using it?
            for key in sorted(self.keys_referencing(u, did)):
                wkey = ("d3", key, did)
                if wkey not in self.open and self.table_owners(key, did) != {new}:
                    r = self.refs(key).get(did, set())
                    self.open_window("did-reuse", wkey, ev, device=ctx.device_of(key), rid=ctx.rid(key),
                                     iommu=u, info={"did": did, "new": new, "old": ev[S.F_DID_MAP_OLD],
                                                                "where": set(r)})
                    self.d3.setdefault(key, set()).add(did)
                    self._track(key, True)
        self.on_did(ev)

    def on_did(self, ev: Event) -> None:
        u, did = ev[F_DID_UNIT], ev[F_DID_DID]
        self.check_leak(u, did, ev)
        self._restatus(u, did, ev)

    def _restatus(self, u: int, did: int, ev: Event) -> None:
        """did's dangling status may have changed: re-check its users, unless
        it did not (re-setting a set bit, the common MO5 case)."""
        why = self.dangling(u, did)
        if self._status.get((u, did), "freed") == why:
            return
        if why == "freed":
            self._status.pop((u, did), None)
        else:
            self._status[(u, did)] = why
        for key in self.keys_referencing(u, did):
            self.check_key(key, ev)

    def on_iommu_bitmap(self, ev: Event) -> None:
        ctx = self.ctx
        dom, u = ev[S.F_IOMMU_BITMAP_DOMAIN], ev[S.F_IOMMU_BITMAP_IOMMU]
        if ev[S.F_IOMMU_BITMAP_VALUE]:
            # a bit set can only end "the bitmap lacks the unit" windows
            for key in list(self.by_unit.get(u, ())):
                w = self.open.get(("d2", key))
                if w is not None and w.info["bitmap"] == dom:
                    self.check_key(key, ev)
            return
        for root in list(ctx.dom_roots.get(dom, ())):
            for key in list(ctx.root_keys.get(root, ())):
                if key[0] == u:
                    self.check_key(key, ev)

    def on_owner(self, ev: Event) -> None:
        ctx = self.ctx
        seg, bdf = ev[F_DEV_SEG], ev[F_DEV_BDF]
        dev = ctx.topo.by_loc.get((seg, bdf >> 8, bdf & 0xFF))
        unit = dev.unit if dev is not None else ctx.topo.drhd(seg, bdf >> 8, bdf & 0xFF)
        if unit is None:
            return
        doms = (ev[S.F_OWNER_MOVE_OLD], ev[S.F_OWNER_MOVE_NEW]) if ev[S.I_KIND] == S.K_OWNER_MOVE else None
        if doms is None:
            cands = [(unit, d) for d in ctx.bits_on.get(unit, ())]
        else:
            cands = [ud for dom in doms for ud in ctx.map_dids.get(dom, ()) if ud[0] == unit]
        for u, did in cands:
            self.check_leak(u, did, ev)

    def on_domain(self, ev: Event) -> None:
        """A domain appears or goes: DIDs whose slot names it become (non-)
        dangling and (non-)leaked."""
        for u, did in list(self.ctx.map_dids.get(ev[F_DOMAIN], ())):
            self.check_leak(u, did, ev)
            self._restatus(u, did, ev)

    def on_domain_destroy(self, ev: Event) -> None:
        self.on_domain(ev)
        self.on_pt_free(ev)      # its tables went with it

    def on_pt_alloc(self, ev: Event) -> None:
        for key in list(self.ctx.root_keys.get(ev[S.F_PT_ALLOC_MADDR], ())):
            self.check_key(key, ev)

    def on_pt_free(self, ev: Event) -> None:
        for key in self.ctx.keys_on_tables_of(ev[F_DOMAIN]):
            self.check_key(key, ev)

    def on_op_end(self, ev: Event) -> None:
        # A window outlives its op when that op ends, not when another CPU's op does.
        for w in self.outlived():
            w.info["confirmed"] = True

    # --- d1 ---------------------------------------------------------------------------------------

    def check_leak(self, u: int, did: int, ev: Event) -> None:
        ctx = self.ctx
        st = ctx.st
        leak = None
        if (u, did) in st.did_bits and not (did == 0 and st.cm):
            m = st.did_map.get((u, did), 0)
            # a pseudo domain ID's DID stays while its device exists, by design
            if m != DOMID_INVALID and not ctx.keys_with_did(u, did) and not ctx.pdevs_on.get((m, u)) \
                    and m not in st.pseudo:
                leak = m
        wkey = ("d1", u, did)
        w = self.open.get(wkey)
        if leak is not None:
            if w is not None and w.info["dom"] != leak:
                self.close_window(wkey, ev)
                w = None
            if w is None:
                self.open_window("did-leak", wkey, ev, device=ctx.op_device, rid=None, iommu=u,
                                 info={"did": did, "dom": leak, "op": ctx.op})
        elif w is not None:
            self.close_window(wkey, ev)

    # --- d2 / d3 -------------------------------------------------------------------------------------

    def check_key(self, key: Key, ev: Event) -> None:
        ctx = self.ctx
        u = key[0]
        if ("d2", key) not in self.open and key not in self.d3 and self._clean(key):
            s = self.cached.get(u)
            if s is not None:
                s.discard(key)
            return
        refs = self.refs(key)
        dang = {}
        for did, where in refs.items():
            why = self.dangling(u, did)
            if why is not None:
                dang[did] = (why, where)
        bitmap = None
        info = ctx.keyinfo.get(key)
        if info is not None and info[1] is not None:
            dom = _bitmap_domain(ctx.st, ctx.pt_owner(info[1]))
            if dom is not None and (dom, u) not in ctx.st.iommu_bitmap:
                bitmap = dom
        wkey = ("d2", key)
        w = self.open.get(wkey)
        if dang or bitmap is not None:
            if w is None:
                w = self.open_window("did-dangling", wkey, ev, device=ctx.device_of(key), rid=ctx.rid(key),
                                     iommu=u, info={"dids": {}, "bitmap": None, "confirmed": False})
                self._track(key, True)
            for did, (why, where) in dang.items():
                cur = w.info["dids"].setdefault(did, [why, set()])
                cur[1].update(where)
            if bitmap is not None and w.info["bitmap"] is None:
                w.info["bitmap"] = bitmap
        elif w is not None:
            self.close_window(wkey, ev)
        # d3 windows of this key close when the reference is gone
        reused = self.d3.get(key)
        if reused:
            for did in list(reused):
                if did not in refs:
                    reused.discard(did)
                    self.close_window(("d3", key, did), ev)
                else:
                    self.open[("d3", key, did)].info["where"].update(refs[did])
            if not reused:
                del self.d3[key]
        if ("d2", key) not in self.open and key not in self.d3:
            s = self.by_unit.get(u)
            if s is not None:
                s.discard(key)
            s = self.cached.get(u)
            if s is not None:
                s.discard(key)
        elif any(len(w) > 1 or "entry" not in w for w in refs.values()):
            self.cached.setdefault(u, set()).add(key)
        else:
            s = self.cached.get(u)
            if s is not None:
                s.discard(key)

    def _clean(self, key: Key) -> bool:
        """Fast path of check_key for a key without open windows: nothing it
        references is dangling and its tables' domain flushes the unit."""
        ctx = self.ctx
        st = ctx.st
        u = key[0]
        dangling = self.dangling
        info = ctx.keyinfo.get(key)
        if info is not None:
            if dangling(u, info[0]) is not None:
                return False
            if info[1] is not None:
                dom = _bitmap_domain(st, ctx.pt_owner(info[1]))
                if dom is not None and (dom, u) not in st.iommu_bitmap:
                    return False
        for lo, hi in st.cc.get(key, ()):
            if lo & 1 and dangling(u, (hi >> 8) & 0xFFFF) is not None:
                return False
        if st.tlb:
            for did, _ in ctx.fills_by(key):
                if dangling(u, did) is not None:
                    return False
        return True

    def finish(self) -> None:
        super().finish()
        self.by_unit.clear()
        self.d3.clear()
        self.cached.clear()

    # --- findings ---------------------------------------------------------------------------------------

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        ctx = self.ctx
        if w.kind == "did-leak":
            if not w.info.get("confirmed"):
                return None
            d, did = w.info["dom"], w.info["did"]
            name = ctx.dom(d)
            gone = "" if d in ctx.alive else " (a domain that no longer exists)"
            detail = (f"IOMMU {w.iommu}: DID {did} stays allocated to {name}{gone} although no context "
                      f"entry on the unit carries it and {name} has no device behind the unit (leaked)")
            return Finding("did-leak", WARNING, w.device, None, w.iommu, w.start, end, w.start_label,
                           end_label, detail)
        if w.kind == "did-dangling":
            if not w.info.get("confirmed"):
                return None
            parts = []
            for did, (why, where) in sorted(w.info["dids"].items()):
                reason = {"freed": "freed (bitmap bit clear)", "invalid": "marked DOMID_INVALID in domid_map",
                          "gone": "owned by a domain that no longer exists"}[why]
                places = ", ".join(WHERE[x] for x in ("entry", "cache", "iotlb") if x in where)
                parts.append(f"{places} still use{'s' if len(where) == 1 else ''} DID {did}, which is {reason}, "
                             f"so the next context_set_domain_id may hand that number to another domain")
            dom = w.info["bitmap"]
            if dom is not None:
                parts.append(f"its entry uses {ctx.dom(dom)}'s page tables while {ctx.dom(dom)}'s iommu_bitmap "
                             f"lacks IOMMU {w.iommu}, so {ctx.dom(dom)}'s map/unmap IOTLB flushes skip the unit")
            detail = f"IOMMU {w.iommu}: for {w.rid}, " + "; ".join(parts)
            return Finding("did-dangling", HAZARD, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                           end_label, detail)
        did, new = w.info["did"], w.info["new"]
        places = join_names([WHERE[x] for x in ("entry", "cache", "iotlb") if x in w.info["where"]])
        detail = (f"IOMMU {w.iommu}: context_set_domain_id handed DID {did} to {ctx.dom(new)} while "
                  f"{w.rid} still uses that number (in {places}), so {w.rid}'s DMA shares IOTLB "
                  f"entries with {ctx.dom(new)}")
        return Finding("did-reuse", HAZARD, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, detail)


class DidIncoherentAnalyser(Analyser):
    """did-incoherent (d4), per (unit, DID): when an operation ends, the DID's
    bitmap bit is set and its domid_map slot names a domain (DOMID_INVALID
    counts as one) whose page tables no present entry carrying the DID uses,
    while some entry carrying it translates through another domain's tables.

    That is what the XSA-399 race leaves behind: context_set_domain_id on one
    CPU takes a number the lock-free cleanup_domid_map of another has just
    cleared the bit of, and the cleanup then zeroes the slot.  From then on
    domain_iommu_domid of the tables' owner finds no DID (its flushes on the
    unit are skipped) and MO3 resolves the entries to the slot's domain.
    A DID shared by two domains' tables, one of them the slot's, is did-reuse
    (d3), not this; entries through freed tables are did-dangling's.

    Judged at every op-end event, on the whole replayed state (with several
    CPUs another CPU may be inside an operation: its half-done cleanup is
    judged too, which is the point).  Only DIDs something touched since the
    previous op-end, and those with an open window, are judged: a DID store,
    a context store (the DIDs before and after), a page-table allocation or
    free.  A window opens at the op-end and closes at the first event after
    which the DID is coherent again; the next op-end judges anew."""

    KINDS = ("did-incoherent",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.dirty: set[tuple[int, int]] = set()

    def hooks(self) -> dict[int, Hook]:
        return {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_DID_MAP: self.on_did,
            S.K_DID_BITMAP: self.on_did,
            S.K_PT_ALLOC: self.on_tables,
            S.K_PT_FREE: self.on_tables,
            S.K_DOMAIN_DESTROY: self.on_tables,
            S.K_OP_END: self.on_op_end,
        }

    def on_ctx_write(self, ev: Event) -> None:
        key, old, new = self.ctx.cur
        for info in (old, new):
            if info is not None:
                self._touch((key[0], info[0]), ev)

    def on_did(self, ev: Event) -> None:
        self._touch((ev[F_DID_UNIT], ev[F_DID_DID]), ev)

    def on_tables(self, ev: Event) -> None:
        ctx = self.ctx
        for key in ctx.keys_on_tables_of(ev[F_DOMAIN]):
            info = ctx.keyinfo.get(key)
            if info is not None:
                self._touch((key[0], info[0]), ev)

    def _touch(self, ud: tuple[int, int], ev: Event) -> None:
        self.dirty.add(ud)
        if ("d4", ud) in self.open and self.judge(ud) is None:
            self.close_window(("d4", ud), ev)

    def on_op_end(self, ev: Event) -> None:
        ctx = self.ctx
        # With several CPUs, judged only at the op end that leaves the machine
        # quiet: another CPU's half-done write (e.g. between W1' and W2') is
        # not a verdict; the DIDs touched meanwhile stay dirty until then.
        if len(ctx.ops) > 1:
            return
        for ud in sorted(self.dirty):
            wkey = ("d4", ud)
            why = self.judge(ud)
            w = self.open.get(wkey)
            if w is not None and (why is None or w.info["why"] != why):
                self.close_window(wkey, ev)
                w = None
            if why is not None and w is None:
                key = why[2][0]
                self.open_window("did-incoherent", wkey, ev, device=ctx.device_of(key), rid=ctx.rid(key),
                                 iommu=ud[0], info={"why": why, "did": ud[1]})
        self.dirty.clear()

    def judge(self, ud: tuple[int, int]) -> tuple[int, int, tuple[Key, ...]] | None:
        """(slot's domid, the tables' owner, the entries using that owner's
        tables), or None when the DID is coherent."""
        ctx = self.ctx
        st = ctx.st
        if ud not in st.did_bits:
            return None
        slot = st.did_map.get(ud, 0)
        users: dict[int, list[Key]] = {}
        for key in ctx.keys_with_did(*ud):
            info = ctx.keyinfo.get(key)
            if info is None:
                continue
            # a pass-through entry translates for the hardware domain
            owner = ctx.topo.hardware if info[1] is None else ctx.pt_owner(info[1])
            if owner is not None:
                users.setdefault(owner, []).append(key)
        if not users or slot in users:
            return None
        owner = min(users)
        return slot, owner, tuple(sorted(users[owner]))

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        ctx = self.ctx
        slot, owner, keys = w.info["why"]
        rids = join_names(ctx.rid(k) for k in keys)
        slot_name = "DOMID_INVALID" if slot == DOMID_INVALID else ctx.dom(slot)
        detail = (f"IOMMU {w.iommu}: DID {w.info['did']} is allocated (bitmap bit set) but its domid_map slot "
                  f"names {slot_name}, while {rids} carr{'ies' if len(keys) == 1 else 'y'} it with "
                  f"{ctx.dom(owner)}'s page tables: domain_iommu_domid({ctx.dom(owner)}) finds no DID on the "
                  f"unit, so {ctx.dom(owner)}'s flushes there are skipped, and MO3 resolves the entries to "
                  f"{slot_name} (map/bitmap incoherence, d4)")
        return Finding("did-incoherent", HAZARD, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, detail)
