"""rmrr-disconnect: docs/MODEL.md#hazard-a.

At step t, for a present device D with RMRR ranges R on a translating unit,
and a requester ID ``rid`` in RIDs(D) (own, phantom, bridge aliases, ME
phantom), some entry value the IOMMU may use for ``rid`` -- memory, or what
the context cache may still hold (replay.caches.context_may_hold) --

* (a1) is not present: the RMRR DMA faults; or
* (a2) is present, not pass-through, and its page tables do not identity-map
  every page of R read/write (a domU's tables before its RMRR map or after its
  removal, dom_io's read-only scratch tables, freed tables).

(a3) is not a separate kind: a window still open when its top-level operation
returns is marked persistent in the detail.  One finding per (D, rid, a1|a2)
window; every rmrr-disconnect is severity ``hazard`` (the device must see its
RMRR continuously, XSA-400).

Cost: a ctx-write or cache-sync costs one dict lookup unless it touches a
tracked requester ID; flushes, identity-map and page-table events re-check the
few tracked IDs.
"""

from __future__ import annotations

from collections.abc import Iterable

from replay import caches
from replay.caches import Key, Value
from tracer import schema as S
from tracer.schema import DOMID_IO

from .base import (
    F_DEV_BDF,
    F_DEV_SEG,
    F_DOMAIN,
    F_KEY_BUS,
    F_KEY_DEVFN,
    F_KEY_IOMMU,
    P_BIT,
    PAGE_MASK,
    TT_PT,
    ZERO,
    Analyser,
    Context,
    Event,
    Hook,
    Window,
    ranges_str,
)
from .findings import HAZARD, Finding
from .topology import Device, Range


class RmrrAnalyser(Analyser):
    KINDS = ("rmrr-disconnect",)
    MARKS_OUTLIVED = True

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        topo = ctx.topo
        self.tracked: dict[Key, list[Device]] = {}      # key -> [Device with an RMRR and key in RIDs]
        self.by_unit: dict[int, list[Key]] = {}
        self.dev_keys: dict[tuple[int, int], list[Key]] = {}      # (seg, bdf16) -> its keys
        for dev in topo.rmrr_devices():
            seg, bus, devfn = dev.loc
            for key in dev.rids:
                self.tracked.setdefault(key, []).append(dev)
                self.dev_keys.setdefault((seg, (bus << 8) | devfn), []).append(key)
        for key in self.tracked:
            self.by_unit.setdefault(key[0], []).append(key)
        self._cov: dict[int, tuple[Range, ...]] = {}      # domid -> its rw identity-mapped ranges

    def hooks(self) -> dict[int, Hook]:
        if not self.tracked:
            return {S.K_OP_END: self.on_op_end}
        h: dict[int, Hook] = {
            S.K_CTX_WRITE: self.on_key_event,
            # flushes, new page-table pages and new identity maps can only
            # take values away or add coverage: they only close windows
            S.K_FLUSH_CONTEXT: self.on_flush,
            S.K_PT_ALLOC: self.on_shrink,
            S.K_IDMAP_ADD: self.on_idmap_add,
            # these can open windows anywhere
            S.K_TRANSLATION_ENABLE: self.on_unit_event,
            S.K_IDMAP_REMOVE: self.on_idmap_remove,
            S.K_PT_FREE: self.on_idmap_remove,
            S.K_DOMAIN_DESTROY: self.on_idmap_remove,
            S.K_DEVICE_ADD: self.on_device,
            S.K_DEVICE_REMOVE: self.on_device,
            S.K_OP_END: self.on_op_end,
        }
        if not self.ctx.st.coherent:
            h[S.K_CACHE_SYNC] = self.on_key_event
        return h

    # --- triggers ----------------------------------------------------------------------

    def on_key_event(self, ev: Event) -> None:
        key = (ev[F_KEY_IOMMU], ev[F_KEY_BUS], ev[F_KEY_DEVFN])
        if key in self.tracked:
            self.check(key, ev)

    def on_unit_event(self, ev: Event) -> None:
        for key in self.by_unit.get(ev[S.F_TRANSLATION_ENABLE_IOMMU], ()):
            self.check(key, ev)

    def on_flush(self, ev: Event) -> None:
        if self.open and ev[S.F_FLUSH_CONTEXT_RC] == 0:
            u = ev[S.F_FLUSH_CONTEXT_IOMMU]
            if ev[S.F_FLUSH_CONTEXT_GRAN] == "device" and not ev[S.F_FLUSH_CONTEXT_FM]:
                # device-selective, no function mask: one requester ID
                sid = ev[S.F_FLUSH_CONTEXT_SID]
                key = (u, sid >> 8, sid & 0xFF)
                if key in self.tracked:
                    self.check(key, ev)
                return
            keys = {w.wkey[2] for w in self.open.values() if w.iommu == u}
            targets = self.ctx.flush_targets(ev)
            for key in keys if targets is None else keys.intersection(targets):
                self.check(key, ev)

    def on_shrink(self, ev: Event) -> None:
        if self.open:
            for key in {w.wkey[2] for w in self.open.values()}:
                self.check(key, ev)

    def on_idmap_add(self, ev: Event) -> None:
        self._cov.pop(ev[F_DOMAIN], None)
        self.on_shrink(ev)

    def on_idmap_remove(self, ev: Event) -> None:
        """dom lost an identity map (or was destroyed): only requester IDs
        that may use dom's tables can lose their RMRR."""
        dom = ev[F_DOMAIN]
        self._cov.pop(dom, None)
        ctx = self.ctx
        st = ctx.st
        for key in self.tracked:
            info = ctx.keyinfo.get(key)
            if (info is not None and info[1] is not None and ctx.pt_owner(info[1]) in (dom, None)) \
                    or key in st.cc or not st.coherent:
                self.check(key, ev)

    def on_device(self, ev: Event) -> None:
        for key in self.dev_keys.get((ev[F_DEV_SEG], ev[F_DEV_BDF]), ()):
            self.check(key, ev)

    def on_op_end(self, ev: Event) -> None:
        op = self.ctx.op
        for w in self.outlived():
            w.info.setdefault("persistent", op)

    # --- the condition --------------------------------------------------------------------

    def _covered(self, domid: int) -> tuple[Range, ...]:
        cov = self._cov.get(domid)
        if cov is None:
            cov = tuple((b, e) for (d, b, e), (acc, n) in self.ctx.st.idmaps.items()
                        if d == domid and acc == "rw" and n)
            self._cov[domid] = cov
        return cov

    def _missing(self, domid: int, ranges: tuple[Range, ...]) -> tuple[Range, ...]:
        cov = self._covered(domid)
        return tuple(r for r in ranges if not any(b <= r[0] and r[1] <= e for b, e in cov))

    def check(self, key: Key, ev: Event) -> None:
        st = self.ctx.st
        u = key[0]
        live = u in st.translation
        values: Iterable[Value]
        if not live:
            values = ()
        elif st.coherent:
            cached = st.cc.get(key)
            mem = st.ctx.get(key, ZERO)
            values = (mem, *cached) if cached else (mem,)
        else:
            values = caches.context_may_hold(st, key)
        for dev in self.tracked[key]:
            a1: bool | None = None
            a2: tuple[str, int | None, tuple[Range, ...]] | None = None
            seg, bus, devfn = dev.loc
            if live and (seg, (bus << 8) | devfn) in st.present:
                for lo, _hi in values:
                    if not lo & P_BIT:
                        a1 = True
                    elif (lo >> 2) & 3 != TT_PT:
                        page = st.pages.get(lo & PAGE_MASK)
                        if page is None:
                            a2 = a2 or ("freed", None, dev.rmrrs)
                        else:
                            missing = self._missing(page[0], dev.rmrrs)
                            if missing:
                                a2 = a2 or ("tables", page[0], missing)
            self._update(("a1", dev.bdf, key), a1, dev, key, ev, None)
            self._update(("a2", dev.bdf, key), a2, dev, key, ev, a2)

    def _update(self, wkey: tuple[str, str, Key], holds: object, dev: Device, key: Key, ev: Event,
                cause: tuple[str, int | None, tuple[Range, ...]] | None) -> None:
        w = self.open.get(wkey)
        if holds:
            if w is None:
                info = {"dev": dev, "causes": []}
                w = self.open_window("rmrr-disconnect", wkey, ev, device=dev.bdf, rid=self.ctx.rid(key),
                                     iommu=key[0], info=info)
            if cause is not None:
                causes = w.info["causes"]
                if not causes or (causes[-1][:2] != cause[:2] and cause[:2] not in [c[:2] for c in causes]):
                    causes.append(cause)
        elif w is not None:
            self.close_window(wkey, ev)

    # --- findings ---------------------------------------------------------------------------

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        ctx = self.ctx
        dev = w.info["dev"]
        own = w.rid == dev.bdf
        # The requester ID is the device's own: name the device once.
        who = (f"RMRR device {dev.bdf} ({ranges_str(dev.rmrrs)})" if own else
               f"{w.rid}, a requester ID of RMRR device {dev.bdf} ({ranges_str(dev.rmrrs)}),")
        if w.wkey[0] == "a1":
            what = "has a non-present context entry, so its DMA to the RMRR faults"
            tag = "a1"
        else:
            parts = []
            for kind, domid, missing in w.info["causes"]:
                if kind == "freed":
                    parts.append("points at freed page tables")
                elif domid == DOMID_IO:
                    parts.append("is translated by dom_io's quarantine scratch tables, "
                                 "which do not map the RMRR read/write")
                else:
                    parts.append(f"is translated by {ctx.dom(domid)}'s page tables, "
                                 f"which do not identity-map {ranges_str(missing)} read/write")
            what = ", then ".join(parts) or "is translated by tables lacking the RMRR"
            tag = "a2"
        persistent = w.info.get("persistent")
        tail = f"; still open when op {persistent} returned (a3)" if persistent is not None else ""
        detail = f"IOMMU {w.iommu}: {who} {what} ({tag}){tail}"
        return Finding("rmrr-disconnect", HAZARD, w.device, w.rid, w.iommu, w.start, end,
                       w.start_label, end_label, detail)
