"""lock-order: lock discipline of the VT-d reassignment code
(docs/MODEL.md#lock-order).

* a context-entry store without ``iommu->lock`` of its unit held by the
  storing CPU;
* a DID allocation (``context_set_domain_id`` setting the bitmap bit or the
  domid_map slot) without ``iommu->lock`` -- Xen ASSERTs it (engine
  ``final``: a pseudo domain ID's DID under ``pcidevs_lock`` is fine, the
  lock that code asserts);
* a DID free (bit cleared, slot set to DOMID_INVALID) without
  ``pcidevs_lock``.  The seed's ``check_cleanup_domid_map`` runs under
  ``pcidevs_lock`` only, which is correct (no finding).  Domain teardown's
  lock-free ``cleanup_domid_map`` (``iommu_domain_teardown``, DK4) is the
  setting of the XSA-399 race: reported with severity ``warning``;
* a lock taken against the order ``pcidevs_lock -> iommu->lock ->
  mapping_lock``, ``iommu->lock -> register_lock``, ``pcidevs_lock ->
  bus2bridge_lock``; two instances of one lock class nested (Xen orders no
  two units' iommu->lock, no two domains' mapping_lock); a spinlock taken
  again by its holder.  RCU domain references are read-side, not ordered.

Several CPUs: the fold's ``locks`` table holds every CPU's locks, so a lock
is judged against the locks *its own CPU* holds (two CPUs each holding one
lock nest nothing); "without X held" means without X held by the storing
CPU.

Windows are points: an unprotected store, or a run of them on one CPU with
nothing else lock-relevant in between (the domid_map and bitmap stores of one
cleanup_domid_map), is ``[first, last + 1)`` with ``end_label`` the label of
the last one; an out-of-order acquisition is ``[seq, seq + 1)``.  The fold
keeps the lock holders, so only acquisitions are hooked (releases cost
nothing).
"""

from __future__ import annotations

from typing import Any

from replay.caches import Key
from tracer import schema as S
from tracer.schema import DOMID_INVALID, FUNC_CODE, is_pseudo_domid

from .base import F_DID_DID, F_DID_UNIT, Analyser, Context, Event, Hook, Window
from .findings import HAZARD, WARNING, Finding

# (outer, inner): outer must be taken first.
ORDER = frozenset({
    ("pcidevs_lock", "iommu->lock"), ("pcidevs_lock", "mapping_lock"), ("pcidevs_lock", "register_lock"),
    ("pcidevs_lock", "bus2bridge_lock"), ("iommu->lock", "mapping_lock"), ("iommu->lock", "register_lock"),
})
NESTABLE = frozenset({"rcu_domain"})
SAME_CLASS = frozenset({"iommu->lock", "mapping_lock", "register_lock", "bus2bridge_lock", "pcidevs_lock"})
# lock -> the lock classes that must not be held (by the same CPU) when it is
# taken: the ones ordered inside it, and its own class (another instance).
BAD = {lock: frozenset({inner for outer, inner in ORDER if outer == lock}
                       | ({lock} if lock in SAME_CLASS else set()))
       for lock in SAME_CLASS}

# (lock class, instance: unit, domid or None)
LockKey = tuple[str, int | None]

F_SET_DID = FUNC_CODE["context_set_domain_id"]
F_TEARDOWN = FUNC_CODE["iommu_domain_teardown"]


class LockAnalyser(Analyser):
    KINDS = ("lock-order",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        # (signature, window key) of the previous relevant event's violation
        self.last: tuple[tuple[Any, ...], tuple[str, int]] | None = None
        self.n = 0                  # window counter (unique keys)

    def hooks(self) -> dict[int, Hook]:
        # The fold keeps the lock holders (state.locks, state.nest): only
        # acquisitions need looking at, releases do not.
        return {S.K_LOCK: self.on_lock, S.K_CTX_WRITE: self.on_ctx_write,
                S.K_DID_BITMAP: self.on_did, S.K_DID_MAP: self.on_did}

    # --- acquisitions --------------------------------------------------------------------------

    def _name(self, lock: str, target: int | None) -> str:
        if target is None:
            return str(lock)
        if lock in ("mapping_lock", "rcu_domain", "pci_lock"):
            return f"{lock}[{self.ctx.dom(target)}]"
        return f"{lock}[{target}]"

    def on_lock(self, ev: Event) -> None:
        self.last = None
        st = self.ctx.st
        locks = st.locks
        if len(locks) < 2 and not st.nest:
            return          # the only lock held: nothing to be out of order with
        lock = ev[S.F_LOCK_LOCK]
        bad = BAD.get(lock)
        if bad is None:
            return          # RCU read-side references: not ordered
        key = (lock, ev[S.F_LOCK_TARGET])
        cpu = ev[S.I_CPU]
        if key in st.nest:
            # The fold counts a second acquisition as nesting; the locks
            # table keeps the first holder.  The engine spins rather than
            # take a lock another CPU holds, so only a crafted trace has two.
            holder = locks.get(key)
            if holder is None or holder == cpu:
                self._inversion(ev, key, key, "is taken again by the CPU that holds it (self-deadlock)")
            else:
                self._inversion(ev, key, key, f"is taken by CPU {cpu} while CPU {holder} holds it "
                                "(a spin lock held twice)")
            return
        if len(locks) > 1:
            # Only the same CPU's held locks nest: the table holds every CPU's.
            for hk, hcpu in locks.items():
                if hk[0] in bad and hcpu == cpu and hk != key:
                    why = ("nesting two instances of a lock class Xen does not order" if hk[0] == lock
                           else "against the lock order pcidevs_lock -> iommu->lock -> mapping_lock "
                                "(iommu->lock -> register_lock)")
                    self._inversion(ev, key, hk, why)

    def _holds(self, lock: str, target: int | None, cpu: int) -> bool:
        return self.ctx.st.locks.get((lock, target), -1) == cpu

    def _inversion(self, ev: Event, key: LockKey, held_key: LockKey, why: str) -> None:
        u = key[1] if key[0] in ("iommu->lock", "register_lock") else \
            held_key[1] if held_key[0] in ("iommu->lock", "register_lock") else None
        what = f"{self._name(*key)} taken while holding {self._name(*held_key)}: {why}"
        self._point(ev, ("inv", key, held_key), u if type(u) is int else None, None, what, HAZARD)

    # --- protected stores ------------------------------------------------------------------------

    def on_ctx_write(self, ev: Event) -> None:
        u = ev[S.F_CTX_WRITE_IOMMU]
        if self._holds("iommu->lock", u, ev[S.I_CPU]):
            self.last = None
            return
        key = (u, ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN])
        self._point(ev, ("ctx", u, key), u, key,
                    f"context entry of {self.ctx.rid(key)} stored without iommu->lock[{u}] held", HAZARD)

    def on_did(self, ev: Event) -> None:
        ctx = self.ctx
        u, did = ev[F_DID_UNIT], ev[F_DID_DID]
        cpu = ev[S.I_CPU]
        if ev[S.I_KIND] == S.K_DID_BITMAP:
            freeing = not ev[S.F_DID_BITMAP_VALUE]
        else:
            freeing = ev[S.F_DID_MAP_NEW] == DOMID_INVALID
        if freeing:
            if self._holds("pcidevs_lock", None, cpu):
                self.last = None
                return
            teardown = F_TEARDOWN in ctx.st.stack(cpu) or ev[S.I_LABEL] == "DK4"
            if teardown:
                self._point(ev, ("free", u, "teardown"), u, None,
                            "iommu_domain_teardown frees DID {dids} without pcidevs_lock "
                            "(lock-free cleanup_domid_map: the XSA-399 race window with "
                            "a concurrent context_set_domain_id)", WARNING, did=did)
            else:
                self._point(ev, ("free", u, ev[S.I_FUNC]), u, None,
                            "DID {dids} freed without pcidevs_lock held", HAZARD, did=did)
        elif ev[S.I_FUNC] == F_SET_DID:
            # Engine final: the DID of a pseudo domain ID is obtained before
            # any entry, under pcidevs_lock, which is what that code asserts.
            if self._holds("iommu->lock", u, cpu) or (
                    is_pseudo_domid(ctx.st.did_map.get((u, did))) and self._holds("pcidevs_lock", None, cpu)):
                self.last = None
                return
            self._point(ev, ("alloc", u), u, None,
                        "context_set_domain_id sets up DID {dids} without iommu->lock held (Xen ASSERTs it)",
                        HAZARD, did=did)
        else:
            self.last = None

    def _point(self, ev: Event, sig: tuple[Any, ...], u: int | None, key: Key | None, what: str, sev: str,
               did: int | None = None) -> None:
        ctx = self.ctx
        # A run of stores coalesces only on one CPU: another CPU's store in
        # between is another finding.
        sig = (ev[S.I_CPU],) + sig
        if self.last is not None and self.last[0] == sig and self.last[1] in self.open:
            w = self.open[self.last[1]]
            w.info["last"] = (ev[S.I_SEQ], ctx.label(ev))
            if did is not None:
                w.info["dids"].add(did)
            return
        self._flush_points()
        self.n += 1
        wkey = ("pt", self.n)
        self.open_window("lock-order", wkey, ev, device=ctx.op_device if key is None else ctx.device_of(key)
                         or ctx.op_device, rid=ctx.rid(key) if key is not None else None, iommu=u,
                         info={"what": what, "sev": sev, "last": (ev[S.I_SEQ], ctx.label(ev)),
                               "dids": {did} if did is not None else set()})
        self.last = (sig, wkey)

    def _flush_points(self) -> None:
        for wkey in [k for k in self.open if k[0] == "pt" and (self.last is None or k != self.last[1])]:
            w = self.open.pop(wkey)
            seq, lab = w.info["last"]
            self.ctx.out.append(self._point_finding(w, seq + 1, lab))

    def _point_finding(self, w: Window, end: int, end_label: str | None) -> Finding:
        what = w.info["what"].replace("{dids}", ", ".join(map(str, sorted(w.info["dids"]))))
        detail = f"IOMMU {w.iommu}: {what}" if w.iommu is not None else what
        return Finding("lock-order", w.info["sev"], w.device, w.rid, w.iommu, w.start, end,
                       w.start_label, end_label, detail)

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        seq, lab = w.info["last"]
        return self._point_finding(w, seq + 1, lab)

    def finish(self) -> None:
        self.last = None
        super().finish()
