"""The per-requester-ID workers: domain_context_mapping_one (V2 seed, step
labels MO1-MO15; V1 parent, PM1-PM9), domain_context_unmap_one (UO1-UO7),
bus_to_context_maddr and domain_pgd_maddr.  docs/MODEL.md#mo, #pm, #uo.
"""

from __future__ import annotations

from .. import schema as S
from .core import MO14_DEPTH_CAP, PciDev, XenDomain
from .did import DidMixin
from .flush import FlushMixin
from .hw import (
    CONTEXT_TT_DEV_IOTLB,
    CONTEXT_TT_MULTI_LEVEL,
    CONTEXT_TT_PASS_THRU,
    VtdIommu,
    context_clear_present,
    context_domain_id,
    context_present,
    context_set_address_root,
    context_set_address_width,
    context_set_fault_enable,
    context_set_present,
    context_set_translation_type,
    level_to_agaw,
    root_entry,
    sid,
)
from .quirks import UNMAP_ME_PHANTOM_FUNC, QuirksMixin

EFAULT, ENOMEM, ESRCH, EILSEQ, EINVAL = 14, 12, 3, 84, 22

MAP_WITH_RMRR = 1 << 0
MAP_OWNER_DYING = 1 << 1
MAP_SINGLE_DEVICE = 1 << 2
# V1 (parent) quirk argument values.
V1_MAP_ME_PHANTOM_FUNC = 1
V1_UNMAP_ME_PHANTOM_FUNC = 0


class ContextOneMixin(QuirksMixin, FlushMixin, DidMixin):

    # --- helpers ------------------------------------------------------------

    def _store(self, iommu: VtdIommu, bus: int, devfn: int, half: str, method: str, new_lo: int, new_hi: int,
               label: str) -> None:
        """A store to the in-memory context entry the IOMMU walks."""
        old_lo, old_hi = iommu.entry(bus, devfn)
        iommu.ctx[(bus, devfn)] = (new_lo, new_hi)
        self.emit(S.K_CTX_WRITE, label, iommu.index, bus, devfn, half, method,
                  old_lo, old_hi, new_lo, new_hi)

    def bus_to_context_maddr(self, iommu: VtdIommu, bus: int, label: str) -> int:
        """Allocates the bus's context table on first use.  An allocation
        failure (unchecked in 4.15, fixed in ef5b718cf8) is not modelled."""
        if bus not in iommu.ctx_table:
            self.enter("bus_to_context_maddr", label, ("iommu", iommu.index), ("bus", bus))
            maddr = self.alloc_page()
            iommu.ctx_table[bus] = maddr
            old = iommu.root.get(bus, 0)
            iommu.root[bus] = root_entry(maddr)
            self.emit(S.K_ROOT_WRITE, label, iommu.index, bus, old, iommu.root[bus])
            self.leave(maddr)
        return iommu.ctx_table[bus]

    def domain_pgd_maddr(self, d: XenDomain, nr_pt_levels: int, label: str) -> int:
        """The root SLPTPTR must hold for a unit with nr_pt_levels levels;
        0 (-> -ENOMEM at the caller) when allocation fails.  Domains always
        get 4-level tables; shallower units skip the top levels via pte[0]."""
        self.enter("domain_pgd_maddr", label, ("domain", d.domid), ("nr_pt_levels", nr_pt_levels))
        if not d.pgd_maddr:
            # addr_to_dma_page_maddr(d, 0, 1): tables down to the leaf for dfn 0.
            if self.fault("pgd-alloc", label, d) < 0:
                return self.leave(0)
            self._alloc_tree(d, "pgd", label)
        return self.leave(self._pgd_for_levels(d, nr_pt_levels))

    def _alloc_tree(self, d: XenDomain, kind: str, label: str) -> None:
        names = ("pgd", "pt-l3", "pt-l2", "pt-l1") if kind == "pgd" else \
            ("quarantine", "quarantine-l3", "quarantine-l2", "quarantine-l1", "scratch")
        # State first, event second, so the live snapshot after each pt-alloc
        # matches what the replay has folded.
        d.pt_pages = []
        for what in names:
            maddr = self.alloc_page(d.domid)
            d.pt_pages.append(maddr)
            if len(d.pt_pages) == 1:
                d.pgd_maddr = maddr
            self.emit(S.K_PT_ALLOC, label, d.domid, maddr, what)

    def _pgd_for_levels(self, d: XenDomain, nr_pt_levels: int) -> int:
        # pages[0] is the 4-level root; pages[k] the table pte[0] of level 4-k points to.
        skip = 4 - nr_pt_levels
        return d.pt_pages[skip] if skip < len(d.pt_pages) else 0

    def rcu_lock_domain_by_id(self, domid: int) -> XenDomain | None:
        """The domain-hash lookup of rcu_lock_domain_by_id (common/domain.c):
        a domain is found from its creation until domain_destroy unlinks it
        -- before its RCU teardown has run, so another CPU's MO3 can fail to
        resolve a DID whose slot still names it.  The read-side reference
        itself is _rcu_lock (an event); the lookup is not."""
        d = self.domains.get(domid)
        return d if d is not None and d.created and not d.unlinked else None

    def _rcu_lock(self, d: XenDomain, label: str) -> None:
        self.lock(label, "rcu_domain", d.domid)

    def _rcu_unlock(self, d: XenDomain, label: str) -> None:
        self.unlock(label, "rcu_domain", d.domid)

    def _mo_args(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int, pdev: PciDev | None,
                 mode: int | None = None) -> list[tuple[str, object]]:
        args: list[tuple[str, object]] = [("domain", domain.domid), ("iommu", iommu.index), ("bus", bus),
                                          ("devfn", devfn), ("pdev", str(pdev) if pdev else None)]
        if mode is not None:
            args.append(("mode", mode))
        return args

    # --- V2: the seed ---------------------------------------------------------

    def domain_context_mapping_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                                   pdev: PciDev | None, mode: int) -> int:
        if self.variant == "legacy":
            return self.domain_context_mapping_one_v1(domain, iommu, bus, devfn, pdev)
        self.enter("domain_context_mapping_one", "MO1", *self._mo_args(domain, iommu, bus, devfn, pdev, mode))
        seg = iommu.segment
        prev_did = 0
        prev_dom = None

        # MO1
        self.lock("MO1", "iommu->lock", iommu.index)
        self.bus_to_context_maddr(iommu, bus, "MO1")
        # MO2: old = lctxt = *context
        old = iommu.entry(bus, devfn)
        lo, hi = old

        # MO3
        if context_present(lo):
            prev_did = context_domain_id(hi)
            # No check against the bitmap: a freed slot reads DOMID_INVALID.
            domid = iommu.domid_map.get(prev_did, 0)
            if domid < S.DOMID_FIRST_RESERVED:
                prev_dom = self.rcu_lock_domain_by_id(domid)
                if prev_dom is not None:
                    self._rcu_lock(prev_dom, "MO3")
            elif domid == S.DOMID_IO:
                prev_dom = self.dom_io
                self._rcu_lock(prev_dom, "MO3")
            if prev_dom is None:
                self.unlock("MO3", "iommu->lock", iommu.index)
                self.log("MO3", "debug", f"[VT-D]no domain for did {prev_did} (nr_dom {iommu.ndoms})")
                return self.leave(-ESRCH)

        # MO4
        if self.knobs.hwdom_passthrough and self.is_hardware_domain(domain):
            lo = context_set_translation_type(lo, CONTEXT_TT_PASS_THRU)
        else:
            self.lock("MO4", "mapping_lock", domain.domid)
            pgd_maddr = self.domain_pgd_maddr(domain, iommu.nr_pt_levels, "MO4")
            if not pgd_maddr:
                self.unlock("MO4", "mapping_lock", domain.domid)
                self.unlock("MO4", "iommu->lock", iommu.index)
                if prev_dom is not None:
                    self._rcu_unlock(prev_dom, "MO4")
                return self.leave(-ENOMEM)
            lo = context_set_address_root(lo, pgd_maddr)
            tt = CONTEXT_TT_DEV_IOTLB if self.knobs.ats else CONTEXT_TT_MULTI_LEVEL
            lo = context_set_translation_type(lo, tt)
            self.unlock("MO4", "mapping_lock", domain.domid)

        # MO5
        rc5, hi = self.context_set_domain_id(hi, domain, iommu, "MO5")
        if rc5:
            return self._mo_unlock(iommu, prev_dom, "MO5")

        # MO6
        if prev_dom is None:
            hi = context_set_address_width(hi, level_to_agaw(iommu.nr_pt_levels))
            lo = context_set_fault_enable(lo)
            lo = context_set_present(lo)
        elif prev_dom is domain:
            # Same owner: nothing to write.  Master returns !!pdev here; the
            # stable-4.15 `unlock:` label returns -EFAULT (D1).
            return self._mo_unlock(iommu, prev_dom, "MO6")
        # else: Xen ASSERTs AW and FPD are what a fresh mapping sets (debug
        # builds only); every entry this engine writes satisfies it.  The new
        # entry is (lo, hi) from here on.

        # MO7
        if self.cpu_has_cx16:
            if self.fault("cmpxchg", "MO7", domain, pdev) < 0:
                # The entry changed behind our back: res != old, nothing stored.
                if pdev is not None:
                    self.check_cleanup_domid_map(domain, pdev, iommu, "MO7")
                if pdev is None:
                    # The seed's printk dereferences pdev->seg with pdev == NULL
                    # (Coverity 1503784, fixed by 3ecdd44f28): Xen would crash.
                    self.emit(S.K_ENGINE_LIMIT, "MO7", "NULL pdev dereference in the EILSEQ printk", 0)
                    seg_, bus_ = seg, bus
                else:
                    seg_, bus_ = pdev.seg, pdev.bus
                cur = iommu.entry(bus, devfn)
                self.log("MO7", "err",
                         f"{seg_:04x}:{bus_:02x}:{devfn >> 3:02x}.{devfn & 7}: unexpected context entry "
                         f"{cur[1]:016x}_{cur[0]:016x} (expected {old[1]:016x}_{old[0]:016x})")
                # rc = -EILSEQ; goto unlock -> -EFAULT in stable-4.15 (D1).
                return self._mo_unlock(iommu, prev_dom, "MO7")
            self._store(iommu, bus, devfn, "full", "cmpxchg16b", lo, hi, "MO7")
        else:
            self._mo7_without_cx16(iommu, seg, bus, devfn, lo, hi, prev_dom, mode)

        # MO8
        self.iommu_sync_cache(iommu, bus, devfn, "MO8")
        self.unlock("MO8", "iommu->lock", iommu.index)

        # MO9-MO11
        rc = self.iommu_flush_context_device(iommu, prev_did, sid(bus, devfn), 0, prev_dom is None, "MO9", domain)
        ret = self.iommu_flush_iotlb_dsi(iommu, prev_did, prev_dom is None,
                                         self.find_ats_dev_drhd(iommu), "MO10", domain)
        rc = self.combine_flush_rc(iommu, rc, ret, "MO11")

        # MO12
        self.set_iommu_bitmap(domain, iommu, "MO12")

        # MO13
        if not seg and not rc:
            rc = self.me_wifi_quirk(domain, bus, devfn, mode, "MO13")

        # MO14
        if rc:
            ret = self._mo14_rollback(domain, iommu, bus, devfn, pdev, mode, prev_dom, rc)
            if not ret and pdev is not None and pdev.devfn == devfn:
                self.check_cleanup_domid_map(domain, pdev, iommu, "MO14")

        # MO15
        if prev_dom is not None:
            self._rcu_unlock(prev_dom, "MO15")
        if rc:
            return self.leave(rc, "MO15")
        return self.leave(int(pdev is not None and prev_dom is not None), "MO15")

    def _mo7_without_cx16(self, iommu: VtdIommu, seg: int, bus: int, devfn: int, lo: int, hi: int,
                          prev_dom: XenDomain | None, mode: int) -> None:
        """MO7 without cmpxchg16b: the two write paths, the same C from the
        seed (d67a72c655) to the end of the series (b3ee746000)."""
        if prev_dom is None or not (mode & MAP_WITH_RMRR):
            # W1: clear P, sync; W2: hi; W3: lo (P set again).
            cur_lo, cur_hi = iommu.entry(bus, devfn)
            self._store(iommu, bus, devfn, "lo", "plain", context_clear_present(cur_lo), cur_hi, "MO7")
            self.iommu_sync_cache(iommu, bus, devfn, "MO7")
            cur_lo, _ = iommu.entry(bus, devfn)
            self._store(iommu, bus, devfn, "hi", "write_atomic", cur_lo, hi, "MO7")
            self._store(iommu, bus, devfn, "lo", "write_atomic", lo, hi, "MO7")
        else:
            # Best effort, DID last: W1' (new tables, old DID), W2' (new DID).
            if not (mode & (MAP_OWNER_DYING | MAP_SINGLE_DEVICE)):
                self.log("MO7", "warning",
                         f"[VT-D] {seg:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}: "
                         f"reassignment may cause {self.pd(prev_dom)} data corruption")
            _, cur_hi = iommu.entry(bus, devfn)
            self._store(iommu, bus, devfn, "lo", "write_atomic", lo, cur_hi, "MO7")
            self._store(iommu, bus, devfn, "hi", "write_atomic", lo, hi, "MO7")

    def _mo_unlock(self, iommu: VtdIommu, prev_dom: XenDomain | None, label: str) -> int:
        """The `unlock:` label: stable-4.15 returns -EFAULT from every path
        that jumps here (D1), whatever rc held."""
        self.unlock(label, "iommu->lock", iommu.index)
        if prev_dom is not None:
            self._rcu_unlock(prev_dom, label)
        return self.leave(-EFAULT, label)

    def _mo14_rollback(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int, pdev: PciDev | None,
                       mode: int, prev_dom: XenDomain | None, rc: int) -> int:
        if prev_dom is None:
            self.emit(S.K_ROLLBACK_BEGIN, "MO14", rc, "MO14 unmap")
            ret = self.domain_context_unmap_one(domain, iommu, bus, devfn)
        elif prev_dom is not domain:
            # The seed's "avoid infinite recursion" guard is dead: the entry
            # already holds the new DID, so the nested call's prev_dom is this
            # call's target, and a second failure ping-pongs back.
            if self.mo14_depth >= MO14_DEPTH_CAP:
                self.emit(S.K_ENGINE_LIMIT, "MO14",
                          "MO14 rollback recursion between two domains (unbounded in the seed)",
                          self.mo14_depth)
                return 1
            self.emit(S.K_ROLLBACK_BEGIN, "MO14", rc, "MO14 remap")
            self.mo14_depth += 1
            try:
                ret = int(self.domain_context_mapping_one(prev_dom, iommu, bus, devfn, pdev,
                                                          mode & MAP_WITH_RMRR) < 0)
            finally:
                self.mo14_depth -= 1
        else:
            self.emit(S.K_ROLLBACK_BEGIN, "MO14", rc, "MO14 none")
            ret = 1   # dead code in the seed
        self.emit(S.K_ROLLBACK_END, "MO14", ret)
        return ret

    # --- V1: the seed's parent --------------------------------------------------

    def domain_context_mapping_one_v1(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                                      pdev: PciDev | None) -> int:
        self.enter("domain_context_mapping_one", "PM1", *self._mo_args(domain, iommu, bus, devfn, pdev))
        seg = iommu.segment
        # PM1
        self.lock("PM1", "iommu->lock", iommu.index)
        self.bus_to_context_maddr(iommu, bus, "PM1")
        lo, hi = iommu.entry(bus, devfn)
        # PM2: already present -> silently succeed (ownership check dropped in 7bbcacec42).
        if context_present(lo):
            return self._pm2_present(domain, iommu, bus, devfn, pdev, hi)

        # PM3: SLPTPTR and TT straight into the live (non-present) entry.
        if self.knobs.hwdom_passthrough and self.is_hardware_domain(domain):
            self._store(iommu, bus, devfn, "lo", "plain",
                        context_set_translation_type(lo, CONTEXT_TT_PASS_THRU), hi, "PM3")
        else:
            self.lock("PM3", "mapping_lock", domain.domid)
            pgd_maddr = self.domain_pgd_maddr(domain, iommu.nr_pt_levels, "PM3")
            if not pgd_maddr:
                self.unlock("PM3", "mapping_lock", domain.domid)
                self.unlock("PM3", "iommu->lock", iommu.index)
                return self.leave(-ENOMEM)
            lo, hi = iommu.entry(bus, devfn)
            self._store(iommu, bus, devfn, "lo", "plain", context_set_address_root(lo, pgd_maddr), hi, "PM3")
            lo, hi = iommu.entry(bus, devfn)
            tt = CONTEXT_TT_DEV_IOTLB if self.knobs.ats else CONTEXT_TT_MULTI_LEVEL
            self._store(iommu, bus, devfn, "lo", "plain", context_set_translation_type(lo, tt), hi, "PM3")
            self.unlock("PM3", "mapping_lock", domain.domid)

        # PM4: the DID, ORed into hi (no clear before the seed).  On -EFAULT
        # the PM3 bytes stay in the non-present entry.
        lo, hi = iommu.entry(bus, devfn)
        rc4, new_hi = self.context_set_domain_id(hi, domain, iommu, "PM4")
        if rc4:
            self.unlock("PM4", "iommu->lock", iommu.index)
            return self.leave(-EFAULT)
        self._store(iommu, bus, devfn, "hi", "plain", lo, new_hi, "PM4")

        # PM5: AW, FPD, then P last.
        lo, hi = iommu.entry(bus, devfn)
        self._store(iommu, bus, devfn, "hi", "plain", lo,
                    context_set_address_width(hi, level_to_agaw(iommu.nr_pt_levels)), "PM5")
        lo, hi = iommu.entry(bus, devfn)
        self._store(iommu, bus, devfn, "lo", "plain", context_set_fault_enable(lo), hi, "PM5")
        lo, hi = iommu.entry(bus, devfn)
        self._store(iommu, bus, devfn, "lo", "plain", context_set_present(lo), hi, "PM5")
        self.iommu_sync_cache(iommu, bus, devfn, "PM5")
        self.unlock("PM5", "iommu->lock", iommu.index)

        # PM6/PM7: "previously non-present (with domid 0)" flushes.
        rc = self.iommu_flush_context_device(iommu, 0, sid(bus, devfn), 0, True, "PM6", domain)
        ret = self.iommu_flush_iotlb_dsi(iommu, 0, True, self.find_ats_dev_drhd(iommu), "PM7", domain)
        rc = self.combine_flush_rc(iommu, rc, ret, "PM7")

        # PM8
        self.set_iommu_bitmap(domain, iommu, "PM8")
        if not seg and not rc:
            rc = self.me_wifi_quirk(domain, bus, devfn, V1_MAP_ME_PHANTOM_FUNC, "PM8")

        # PM9
        if rc:
            self.emit(S.K_ROLLBACK_BEGIN, "PM9", rc, "PM9 unmap")
            ret = self.domain_context_unmap_one(domain, iommu, bus, devfn)
            if not ret and pdev is not None and pdev.devfn == devfn:
                self.check_cleanup_domid_map(domain, pdev, iommu, "PM9")
            self.emit(S.K_ROLLBACK_END, "PM9", ret)
        return self.leave(rc, "PM9" if rc else None)

    def _pm2_present(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                     pdev: PciDev | None, hi: int) -> int:
        """PM2 of V1: a present entry is accepted whoever owns it (the
        `original` engine checks ownership here)."""
        self.unlock("PM2", "iommu->lock", iommu.index)
        return self.leave(0)

    # --- unmap (V1 and V2 identical) ------------------------------------------------

    def domain_context_unmap_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int) -> int:
        self.enter("domain_context_unmap_one", "UO1", ("domain", domain.domid), ("iommu", iommu.index),
                   ("bus", bus), ("devfn", devfn))
        # UO1
        self.lock("UO1", "iommu->lock", iommu.index)
        self.bus_to_context_maddr(iommu, bus, "UO1")
        lo, hi = iommu.entry(bus, devfn)
        # UO2: no ownership check -- whatever is present gets cleared.
        if not context_present(lo):
            self.unlock("UO2", "iommu->lock", iommu.index)
            return self.leave(0)

        # UO3: clear P, then the whole entry; sync.
        self._store(iommu, bus, devfn, "lo", "plain", context_clear_present(lo), hi, "UO3")
        lo, hi = iommu.entry(bus, devfn)
        self._store(iommu, bus, devfn, "lo", "plain", 0, hi, "UO3")
        self._store(iommu, bus, devfn, "hi", "plain", 0, 0, "UO3")
        self.iommu_sync_cache(iommu, bus, devfn, "UO3")

        # UO4: the *caller's* DID, not the one the entry held.
        iommu_domid = self.domain_iommu_domid(domain, iommu, "UO4")
        if iommu_domid == -1:
            # Entry cleared but never flushed (fixed by a5b52c357c).
            self.unlock("UO4", "iommu->lock", iommu.index)
            return self.leave(-EINVAL)

        # UO5: flushes with iommu->lock held.
        rc = self.iommu_flush_context_device(iommu, iommu_domid, sid(bus, devfn), 0, False, "UO5", domain)
        ret = self.iommu_flush_iotlb_dsi(iommu, iommu_domid, False, self.find_ats_dev_drhd(iommu), "UO5", domain)
        rc = self.combine_flush_rc(iommu, rc, ret, "UO5")
        self.unlock("UO5", "iommu->lock", iommu.index)

        # UO6
        if not iommu.segment and not rc:
            mode = UNMAP_ME_PHANTOM_FUNC if self.variant == "direct" else V1_UNMAP_ME_PHANTOM_FUNC
            rc = self.me_wifi_quirk(domain, bus, devfn, mode, "UO6")

        # UO7
        if rc and not self.is_hardware_domain(domain) and domain is not self.dom_io:
            if domain.is_dying:
                self.log("UO7", "err", f"{self.pd(domain)}: error {rc} unmapping "
                         f"{iommu.segment:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}")
                rc = 0
            else:
                self.domain_crash(domain, "UO7")
        return self.leave(rc)

    def domain_crash(self, d: XenDomain, label: str) -> None:
        self.log(label, "err", f"domain_crash called from {self.func}")
        self.log(label, "info", f"{self.pd(d)} crashed")
