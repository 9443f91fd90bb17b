"""did-pt-mismatch: docs/MODEL.md#hazard-b.

A present, translating context entry *in memory* whose DID does not belong to
the domain whose page tables its SLPTPTR points at: ``domid_map[DID]``
(zero-filled, as MO3 reads it) differs from the owner of the table page, or
the DID's bitmap bit is clear (freed), or the slot says DOMID_INVALID, or the
tables were freed.  The classic window is the non-cx16 best-effort path of
the seed: W1' stores lo (new SLPTPTR, old DID), W2' stores hi (new DID).  The
mixed value may still be cached after W2'; that is the stale-context
finding's business, not this one's.

Victims: every *other* requester ID on the unit whose entry carries the same
DID while the window is open -- the IOTLB is tagged by DID only, so they can
hit translations filled from the wrong tables.  A DID of a dying domain has no
victims (MAP_OWNER_DYING: the harm stays in the dying domain).  With victims
the finding is a ``hazard``, without (MAP_SINGLE_DEVICE and the like) a
``warning``.  When Xen printed its own "reassignment may cause ... data
corruption" line right before the store that opened the window, the detail
quotes it.
"""

from __future__ import annotations

from replay.caches import Key
from tracer import schema as S
from tracer.schema import DOMID_INVALID

from .base import F_DID_DID, F_DID_UNIT, F_DOMAIN, Analyser, Context, Event, Hook, Window, join_names
from .findings import HAZARD, WARNING, Finding


class MismatchAnalyser(Analyser):
    KINDS = ("did-pt-mismatch",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.by_did: dict[tuple[int, int], set[Key]] = {}   # (iommu, did) -> {key with an open window}
        self._status: dict[tuple[int, int], tuple[bool, int]] = {}  # (iommu, did) -> (bit set, slot) last seen

    def hooks(self) -> dict[int, Hook]:
        return {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_DID_BITMAP: self.on_did,
            S.K_DID_MAP: self.on_did,
            S.K_PT_ALLOC: self.on_pt_alloc,
            S.K_PT_FREE: self.on_tables_gone,
            S.K_DOMAIN_DESTROY: self.on_tables_gone,
            S.K_LOG: self.on_log,
        }

    # --- triggers ------------------------------------------------------------------------

    def on_log(self, ev: Event) -> None:
        text = ev[S.F_LOG_TEXT]
        if ev[S.F_LOG_LEVEL] == "warning" and "data corruption" in text:
            self.ctx.warning = text
            self.ctx.warning_cpu = ev[S.I_CPU]

    def on_ctx_write(self, ev: Event) -> None:
        key, old, new = self.ctx.cur
        self.check(key, ev)
        if new is not None:
            # key now uses DID new[0]: a victim of open windows on that DID
            for other in self.by_did.get((key[0], new[0]), ()):
                if other != key:
                    self._victims(self.open[("b", other)], key)

    def on_did(self, ev: Event) -> None:
        u, did = ev[F_DID_UNIT], ev[F_DID_DID]
        st = self.ctx.st
        status = ((u, did) in st.did_bits, st.did_map.get((u, did), 0))
        if self._status.get((u, did)) == status:
            return      # e.g. MO5 setting an already-set bit: nothing changed
        self._status[(u, did)] = status
        for key in list(self.ctx.keys_with_did(u, did)):
            self.check(key, ev)

    def on_pt_alloc(self, ev: Event) -> None:
        for key in list(self.ctx.root_keys.get(ev[S.F_PT_ALLOC_MADDR], ())):
            self.check(key, ev)

    def on_tables_gone(self, ev: Event) -> None:
        for key in self.ctx.keys_on_tables_of(ev[F_DOMAIN]):
            self.check(key, ev)

    # --- the condition ----------------------------------------------------------------------

    def check(self, key: Key, ev: Event) -> None:
        ctx = self.ctx
        info = ctx.keyinfo.get(key)
        cause = None
        if info is not None and info[1] is not None:
            did, root = info[0], info[1]
            u = key[0]
            st = ctx.st
            m = st.did_map.get((u, did), 0)
            po = ctx.pt_owner(root)
            if (u, did) not in st.did_bits:
                cause = ("freed", did, m, po)
            elif m == DOMID_INVALID:
                cause = ("invalid", did, m, po)
            elif po is None:
                cause = ("no-tables", did, m, po)
            elif po != m:
                cause = ("mismatch", did, m, po)
        wkey = ("b", key)
        w = self.open.get(wkey)
        u = key[0]
        mk = ctx.mismatch_keys.setdefault(u, set())
        if cause is not None and cause[0] == "mismatch":
            mk.add(key)
        else:
            mk.discard(key)
        if cause is not None:
            if w is not None and w.info["cause"][1] != cause[1]:
                self._drop(w)
                self.close_window(wkey, ev)
                w = None
            if w is None:
                w = self.open_window("did-pt-mismatch", wkey, ev, device=ctx.device_of(key),
                                     rid=ctx.rid(key), iommu=u,
                                     info={"cause": cause, "causes": [cause], "victims": set(),
                                           "warning": ctx.warning_of(ev)})
                self.by_did.setdefault((u, cause[1]), set()).add(key)
            elif cause[0] != w.info["causes"][-1][0] or cause[3] != w.info["causes"][-1][3]:
                w.info["causes"].append(cause)
            for other in ctx.keys_with_did(u, cause[1]):
                if other != key:
                    self._victims(w, other)
        elif w is not None:
            self._drop(w)
            self.close_window(wkey, ev)

    def _victims(self, w: Window, other: Key) -> None:
        if self.ctx.owner_dying(w.info["cause"][2]):
            return
        w.info["victims"].add(other)

    def _drop(self, w: Window) -> None:
        key = w.wkey[1]
        ud = (key[0], w.info["cause"][1])
        s = self.by_did.get(ud)
        if s is not None:
            s.discard(key)
            if not s:
                del self.by_did[ud]

    def finish(self) -> None:
        for w in self.open.values():
            self._drop(w)
        super().finish()

    # --- findings -------------------------------------------------------------------------------

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        ctx = self.ctx
        kind, did, m, po = w.info["cause"]
        tables = f"{ctx.dom(po)}'s page tables" if po is not None else "freed page tables"
        if kind == "freed":
            what = f"pairs {tables} with DID {did}, which is no longer allocated (its bitmap bit is clear)"
        elif kind == "invalid":
            what = f"pairs {tables} with DID {did}, whose domid_map slot says DOMID_INVALID"
        elif kind == "no-tables":
            what = f"pairs DID {did} of {ctx.dom(m)} with page tables that are no longer allocated"
        else:
            what = f"pairs {tables} with DID {did}, which belongs to {ctx.dom(m)}"
        later = [c for c in w.info["causes"][1:]]
        if later:
            c = later[-1]
            if c[0] == "mismatch":
                what += f" (later {ctx.dom(c[2])}'s DID {c[1]} with {ctx.dom(c[3])}'s tables)"
        victims = sorted(w.info["victims"])
        freed = any(c[0] == "no-tables" for c in w.info["causes"])
        if freed:
            # DMA translated through page-table pages that were freed (and
            # may be reused): a use-after-free whoever else shares the DID
            what += " (DMA walks freed page-table pages)"
        if victims:
            what += (f", so IOTLB entries tagged DID {did} may be filled from the wrong tables and hit by "
                     f"{join_names(ctx.topo.devices_str(victims).split(', '))}")
            sev = HAZARD
        else:
            what += ", with no other requester ID using that DID"
            sev = HAZARD if freed else WARNING
        warn = w.info.get("warning")
        if warn:
            what += f' (Xen warned: "{warn}")'
        detail = f"IOMMU {w.iommu}: the context entry of {w.rid} in memory {what}"
        return Finding("did-pt-mismatch", sev, w.device, w.rid, w.iommu, w.start, end,
                       w.start_label, end_label, detail)
