"""stale-devtlb: a device's own translation cache (the ATC of an ATS device,
the "device-TLB") may hold translations into the memory of a domain other
than the device's current owner.

The cache model (replay.caches) keeps, per requester ID, the (DID, tables)
pairs an ATS device may have put into its ATC and that the entry values the
IOMMU can use now no longer give: filled while its context entry was present
with TT = device-IOTLB and ATS was enabled on the device, emptied only by a
device-TLB invalidation addressed to it (``flush-dev-iotlb``).  Xen sends
those from dev_invalidate_iotlb() only to the ATS devices whose *current*
context entry carries the flushed DID (device_in_domain(), vtd/x86/ats.c).
A reassignment flushes the previous owner's DID after it rewrote (direct:
MO7) or cleared (legacy: UO3) the moved device's entry, so the moved
device's own ATC is never invalidated: it may keep translating DMA with the
previous owner's page tables.

The condition, per ATS device and per foreign domain: the device is present,
owned by O, and its ATC may hold a translation made from page tables that
are not O's.  Whose memory a held translation reaches is fixed when the
model first holds it: the owner of its tables then (tables freed later keep
pointing at that domain's pages, or at pages reused by anyone).  The window
opens at the event after which that first holds -- usually the
``owner-move`` that hands the device to its new owner -- and closes at the
event after which it no longer does: a device-TLB flush reaching the
device, or the device going back to the domain whose translations it holds.

Re-checks: page-table events need none (the owner is fixed per fill); every
event that can add a fill (a context store or cache-sync, a context-cache
flush, an ATS disable), empty the ATC (a device-TLB flush) or change the
device's owner or presence re-checks that device only, and returns at once
when neither its set in the model (immutable, replaced only when it
changes: an identity test) nor its owner moved.  The translation the current entry gives is not
counted: a device translating through its own entry with another domain's
tables is an ownership mismatch of the entry, not a stale cache.

Severity: ``benign`` when the window closes inside the operation that
opened it (a flush of the operation reaches the device); ``hazard`` when it
outlives that operation, was opened outside any operation, or is still open
when the trace ends.

UNSURE, and read conservatively: whether clearing ATS Enable
(disable_ats_device, which the legacy unmap path calls at DCU) invalidates
the ATC -- the model assumes it does not, and the detail says so when it
matters; V0/V1's unmap-then-map therefore leaves the same stale ATC as
V2's in-place rewrite.
"""

from __future__ import annotations

from typing import Any

from replay import caches
from replay.caches import Key, Translation
from tracer import schema as S

from .base import (
    F_DEV_BDF,
    F_DEV_SEG,
    F_KEY_BUS,
    F_KEY_DEVFN,
    F_KEY_IOMMU,
    Analyser,
    Context,
    Event,
    Hook,
    Window,
    domain_name,
)
from .findings import BENIGN, HAZARD, Finding, renderer


class DevtlbAnalyser(Analyser):
    KINDS = ("stale-devtlb",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # key -> {foreign domid or None: open window key}
        self.by_key: dict[Key, dict[int | None, tuple[str, Key, int | None]]] = {}
        # key -> {did: (label, why)}: the first DSI flush of a held DID that skipped it
        self.missed: dict[Key, dict[int, tuple[str, str]]] = {}
        self.ats_off: dict[Key, str] = {}     # key -> label of the ATS disable since its ATC was last emptied
        # key -> {(did, pt): owner of the tables when first seen held}
        self.fill_owner: dict[Key, dict[Translation, int | None]] = {}
        # key -> (fills, present, owner) as of its last check
        self.seen: dict[Key, tuple[frozenset[Translation] | None, bool, int | None]] = {}
        self.held: dict[tuple[int, int], set[Key]] = {}     # (iommu, did) -> {key whose ATC may hold did}
        self.dev_keys: dict[tuple[int, int], set[Key]] = {}     # (seg, bdf) -> {key in seen}: owner moves re-check
        # the tables the hooks read, bound once (the fold mutates them in place)
        st = ctx.st
        self._devtlb, self._ats, self._ctxt = st.devtlb, st.ats, st.ctx
        self._unit_seg, self._present, self._owners = st.unit_seg, st.present, st.owners

    def hooks(self) -> dict[int, Hook]:
        h: dict[int, Hook] = {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_FLUSH_CONTEXT: self.on_flush_context,
            S.K_FLUSH_IOTLB: self.on_flush_iotlb,
            S.K_FLUSH_DEV_IOTLB: self.on_flush_dev_iotlb,
            S.K_OWNER_MOVE: self.on_device,
            S.K_DEVICE_ADD: self.on_device,
            S.K_DEVICE_REMOVE: self.on_device,
            S.K_ATS_ENABLE: self.on_ats,
        }
        if not self.ctx.st.coherent:
            h[S.K_CACHE_SYNC] = self.on_sync
        return h

    # --- triggers: only the keys an event can have changed ----------------------------------

    def on_ctx_write(self, ev: Event) -> None:
        key = self.ctx.cur[0]
        if key in self._devtlb or key in self.by_key:
            self.check(key, ev)

    def on_sync(self, ev: Event) -> None:
        key = (ev[F_KEY_IOMMU], ev[F_KEY_BUS], ev[F_KEY_DEVFN])
        if key in self.ctx.st.devtlb or key in self.by_key:
            self.check(key, ev)

    def on_flush_context(self, ev: Event) -> None:
        # values leaving the context cache may have been filled into an ATC;
        # the model's sets are replaced when they change, so an identity test
        # finds the devices whose ATC did
        if ev[S.F_FLUSH_CONTEXT_RC] != 0 or not self._ats:
            return
        u = ev[S.F_FLUSH_CONTEXT_IOMMU]
        devtlb = self._devtlb
        if ev[S.F_FLUSH_CONTEXT_GRAN] == "device" and not ev[S.F_FLUSH_CONTEXT_FM]:
            # the frequent case (MO9, UO4): one source-id
            if not devtlb:
                return
            sid = ev[S.F_FLUSH_CONTEXT_SID]
            key = (u, sid >> 8, sid & 0xFF)
            fills = devtlb.get(key)
            if fills is not None:
                last = self.seen.get(key)
                if last is None or last[0] is not fills:
                    self.check(key, ev)
            return
        seen = self.seen
        changed = [k for k, fills in devtlb.items()
                   if k[0] == u and (k not in seen or seen[k][0] is not fills)]
        for key in changed:
            self.check(key, ev)

    def on_flush_iotlb(self, ev: Event) -> None:
        """Remember, for the detail, the DSI flush of a DID an ATC holds that
        device_in_domain() keeps from reaching the device."""
        held = self.held
        if not held:
            return
        u, did = ev[S.F_FLUSH_IOTLB_IOMMU], ev[S.F_FLUSH_IOTLB_DID]
        keys = held.get((u, did))
        if not keys or ev[S.F_FLUSH_IOTLB_GRAN] != "dsi" or ev[S.F_FLUSH_IOTLB_RC] != 0 \
                or not ev[S.F_FLUSH_IOTLB_DEV_IOTLB]:
            return
        ctxt, missed = self._ctxt, self.missed
        for key in keys:
            m = missed.get(key)
            if m is not None and did in m:
                continue        # only the first one is told
            # device_in_domain(): the DID and TT of the entry in memory (not P)
            lo, hi = ctxt.get(key, (0, 0))
            if (hi >> 8) & 0xFFFF != did:
                why = f"its context entry carries DID {(hi >> 8) & 0xFFFF} by then"
            elif (lo >> 2) & 3 != caches.TT_DEV_IOTLB:
                why = ("its context entry is cleared by then" if (lo, hi) == (0, 0)
                       else "its context entry is not of type device-IOTLB by then")
            else:
                continue
            if m is None:
                m = missed[key] = {}
            m[did] = (self.ctx.label(ev) or f"seq {ev[S.I_SEQ]}", why)

    def on_flush_dev_iotlb(self, ev: Event) -> None:
        seen = self.seen
        if not seen:
            # nothing held, no window open: missed / ats_off are empty too
            return
        sid = ev[S.F_FLUSH_DEV_IOTLB_SID]
        key = (ev[S.F_FLUSH_DEV_IOTLB_IOMMU], sid >> 8, sid & 0xFF)
        if ev[S.F_FLUSH_DEV_IOTLB_RC] == 0:
            self.missed.pop(key, None)
            self.ats_off.pop(key, None)
        if key in seen:
            self.check(key, ev)

    def on_device(self, ev: Event) -> None:
        # every key the model holds fills for has been checked (each way in
        # is a hooked event), so dev_keys knows them all
        dk = self.dev_keys
        keys = dk.get((ev[F_DEV_SEG], ev[F_DEV_BDF])) if dk else None
        if keys:
            for key in sorted(keys):
                self.check(key, ev)

    def on_ats(self, ev: Event) -> None:
        seg, bdf = ev[S.F_ATS_ENABLE_SEG], ev[S.F_ATS_ENABLE_BDF]
        for key in self._keys_of(seg, bdf):
            if not ev[S.F_ATS_ENABLE_VALUE] and key in self.ctx.st.devtlb:
                self.ats_off.setdefault(key, self.ctx.label(ev) or f"seq {ev[S.I_SEQ]}")
            self.check(key, ev)

    def _keys_of(self, seg: int, bdf: int) -> list[Key]:
        """Keys of the device (seg, bdf) the model or an open window holds."""
        st = self.ctx.st
        bus, devfn = bdf >> 8, bdf & 0xFF
        out = []
        for keys in (st.devtlb, self.by_key):
            for key in keys:
                if key[1] == bus and key[2] == devfn and key not in out \
                        and st.unit_seg.get(key[0], 0) == seg:
                    out.append(key)
        return sorted(out)

    # --- the condition --------------------------------------------------------------------------

    def check(self, key: Key, ev: Event) -> None:
        ctx = self.ctx
        u, bus, devfn = key
        dev = (self._unit_seg.get(u, 0), bus << 8 | devfn)
        fills = self._devtlb.get(key)
        present = dev in self._present
        owner = self._owners.get(dev) if present else None
        # the model's sets are immutable and replaced when they change: an
        # unchanged one with the same owner changes nothing
        last = self.seen.get(key)
        if last is not None and last[0] is fills and last[1] == present and last[2] == owner:
            return
        if last is None or last[0] is not fills:
            self._index(key, last[0] if last is not None else None, fills)
        if fills is None and key not in self.by_key:
            self._forget(key, dev)
            return
        if last is None:
            self.dev_keys.setdefault(dev, set()).add(key)
        self.seen[key] = (fills, present, owner)
        foreign: dict[int | None, set[Translation]] = {}
        if fills:
            # whose memory a held translation reaches: the tables' owner when
            # the model first held it (tables freed later still map that
            # domain's pages, or pages reused by anyone)
            known = self.fill_owner.get(key)
            if known is None:
                known = self.fill_owner[key] = {}
            for fill in fills:
                if fill not in known:
                    known[fill] = ctx.pt_owner(fill[1])
            if len(known) > len(fills):
                for fill in [f for f in known if f not in fills]:
                    del known[fill]
            if present:
                for fill in fills:
                    po = known[fill]
                    if po != owner:
                        foreign.setdefault(po, set()).add(fill)
        else:
            self.fill_owner.pop(key, None)
            self.missed.pop(key, None)
            self.ats_off.pop(key, None)
        opened = self.by_key.get(key)
        for dom, pairs in foreign.items():
            wkey = ("devtlb", key, dom)
            w = self.open.get(wkey)
            if w is None:
                w = self.open_window("stale-devtlb", wkey, ev, device=ctx.device_of(key) or ctx.rid(key),
                                     rid=ctx.rid(key), iommu=u,
                                     info={"owners": [owner], "dom": dom, "fills": set(), "missed": {}})
                if opened is None:
                    opened = self.by_key[key] = {}
                opened[dom] = wkey
            info = w.info
            if info["owners"][-1] != owner:
                info["owners"].append(owner)
            info["fills"].update(pairs)
            missed = self.missed.get(key)
            if missed:
                for did, _ in pairs:
                    if did in missed:
                        info["missed"].setdefault(did, missed[did])
            if key in self.ats_off:
                info.setdefault("ats_off", self.ats_off[key])
        if opened:
            for dom in [d for d in opened if d not in foreign]:
                wkey = opened.pop(dom)
                w = self.open.get(wkey)
                if w is not None:
                    w.info["closed_by"] = S.KINDS[ev[S.I_KIND]].name
                self.close_window(wkey, ev)
            if not opened:
                del self.by_key[key]
                if fills is None:
                    self._forget(key, dev)

    def _forget(self, key: Key, dev: tuple[int, int]) -> None:
        """The device's ATC is empty and no window is open: drop what the
        analyser kept about it."""
        if self.seen.pop(key, None) is not None:
            keys = self.dev_keys.get(dev)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.dev_keys[dev]
        self.fill_owner.pop(key, None)
        self.missed.pop(key, None)
        self.ats_off.pop(key, None)

    def _index(self, key: Key, old: frozenset[Translation] | None, new: frozenset[Translation] | None) -> None:
        """Keep ``held`` (which DIDs each ATC may hold) in step with the model."""
        u = key[0]
        held = self.held
        if old:
            keep = {d for d, _ in new} if new else ()
            for did, _ in old:
                if did not in keep:
                    keys = held.get((u, did))
                    if keys is not None:
                        keys.discard(key)
                        if not keys:
                            del held[(u, did)]
        if new:
            for did, _ in new:
                keys = held.get((u, did))
                if keys is None:
                    held[(u, did)] = {key}
                else:
                    keys.add(key)

    def finish(self) -> None:
        super().finish()
        self.held.clear()
        self.dev_keys.clear()
        self.by_key.clear()
        self.missed.clear()
        self.ats_off.clear()
        self.fill_owner.clear()
        self.seen.clear()

    # --- findings ---------------------------------------------------------------------------------

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        ctx = self.ctx
        info = w.info
        # an operation's events carry its number: a window ended by an event
        # of another operation, or still open after its operation returned,
        # outlived it -- unless that operation still runs on another CPU
        if ev is not None:
            outlived = w.op if ev[S.I_OP] != w.op and not ctx.op_running(w.op) else None
        else:
            outlived = w.op if ctx.op != w.op and not ctx.op_running(w.op) else None
        sev = BENIGN if end is not None and outlived is None and w.op is not None else HAZARD
        # the facts now, the sentence when somebody reads it (Finding.detail)
        detail = (RENDER, ctx.names, tuple(info["owners"]), info["dom"], tuple(sorted(info["fills"])),
                  tuple(sorted(info["missed"].items())), info.get("ats_off"), info.get("closed_by"), outlived)
        return Finding("stale-devtlb", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, detail)


def _render(f: Finding, d: tuple[Any, ...]) -> str:
    _, names, owners, dom, fills, missed, ats_off, closed_by, outlived = d
    u, rid, end, end_label = f.iommu, f.rid, f.end, f.end_label
    whose = f"{domain_name(names, dom)}'s" if dom is not None else "freed"
    dids = "/".join(str(d) for d in sorted({d for d, _ in fills}))
    tables = ", ".join(f"{pt:#x}" for pt in sorted({pt for _, pt in fills}))
    text = (f"IOMMU {u}: {rid}, owned by {', then '.join(domain_name(names, o) for o in owners)}, "
            f"may still translate DMA with {whose} page tables ({tables}, DID {dids}) cached in its device-TLB")
    for did, (label, why) in missed:
        text += (f"; the IOTLB flush of DID {did} at {label} did not invalidate its device-TLB: "
                 f"{why} (device_in_domain() tests the current entry)")
    if ats_off is not None:
        text += (f"; ATS was disabled at {ats_off}, which the model assumes does not empty "
                 f"the device-TLB (UNSURE)")
    where = end_label or (f"seq {end}" if end is not None else None)
    if end is None:
        if outlived is not None:
            text += f"; no device-TLB invalidation reached it before op {outlived} returned, nor later"
        else:
            text += "; the trace ends before any device-TLB invalidation reached it"
    elif closed_by == "flush-dev-iotlb":
        if outlived is not None:
            text += f"; op {outlived} returned without invalidating it, which only came at {where}"
        else:
            text += f", until the device-TLB invalidation at {where} in the same operation"
    else:
        how = "the device went back to that domain" if closed_by == "owner-move" else "that changed"
        text += (f"; op {outlived} returned with it, until {how} at {where}" if outlived is not None
                 else f", until {how} at {where} in the same operation")
    return text


RENDER = renderer(_render)
