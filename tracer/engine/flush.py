"""Cache maintenance: iommu_sync_cache, context-cache and IOTLB invalidation,
device-TLB invalidation and the write-buffer flush, with Xen's return
convention (1 = "nothing done for a non-present entry, flush the write
buffer"; 0 = done; <0 error -- only reachable here through injected faults,
since 4.15's waits cannot fail)."""

from __future__ import annotations

from .. import schema as S
from .core import XenDomain
from .dma import DmaMixin
from .hw import CONTEXT_TT_DEV_IOTLB, VtdIommu, context_domain_id, context_translation_type


class FlushMixin(DmaMixin):
    # Each completed invalidation also empties the engine's DMA cache model
    # (engine/dma.py), before its event: a DMA issued at the scheduling point
    # right after the event sees the cache as the flush left it.

    def iommu_sync_cache(self, iommu: VtdIommu, bus: int, devfn: int, label: str) -> None:
        self.emit(S.K_CACHE_SYNC, label, iommu.index, bus, devfn)

    def _flush_context(self, iommu: VtdIommu, did: int, sid: int, fm: int, gran: str, non_present: bool,
                       label: str, domain: XenDomain | None = None) -> int:
        """iommu->flush.context (register or QI form; same semantics)."""
        if non_present:
            if not iommu.caching_mode:
                self.emit(S.K_FLUSH_CONTEXT, label, iommu.index, gran, did, sid, fm, True, 1)
                return 1
            did = 0   # CM=1: non-present entries are cached tagged with DID 0
        rc = self.fault("flush-context", label, domain)
        self.lock(label, "register_lock", iommu.index)
        if not rc:
            self.dma_context_flushed(iommu.index, gran, did, sid, fm)
        self.emit(S.K_FLUSH_CONTEXT, label, iommu.index, gran, did, sid, fm, bool(non_present), rc)
        self.unlock(label, "register_lock", iommu.index)
        return rc

    def iommu_flush_context_device(self, iommu: VtdIommu, did: int, sid: int, fm: int, non_present: bool,
                                   label: str, domain: XenDomain | None = None) -> int:
        self.enter("iommu_flush_context_device", label, ("iommu", iommu.index), ("did", did),
                   ("source_id", sid), ("function_mask", fm), ("non_present", bool(non_present)))
        rc = self._flush_context(iommu, did, sid, fm, "device", non_present, label, domain)
        return self.leave(rc)

    def iommu_flush_context_global(self, iommu: VtdIommu, non_present: bool, label: str) -> int:
        return self._flush_context(iommu, 0, 0, 0, "global", non_present, label)

    def _flush_iotlb(self, iommu: VtdIommu, did: int, gran: str, non_present: bool, dev_iotlb: bool,
                     label: str, domain: XenDomain | None = None) -> int:
        if non_present:
            if not iommu.caching_mode:
                self.emit(S.K_FLUSH_IOTLB, label, iommu.index, gran, did, 0, 0, True, bool(dev_iotlb), 1)
                return 1
            # 4.15 keeps DID 0 here although the entry's real DID is meant
            # (c5c84e9766 fixed it in 4.16).
            did = 0
        rc = self.fault("flush-iotlb", label, domain)
        self.lock(label, "register_lock", iommu.index)
        if not rc:
            self.dma_iotlb_flushed(iommu.index, gran, did, 0, 0)
        self.emit(S.K_FLUSH_IOTLB, label, iommu.index, gran, did, 0, 0, bool(non_present), bool(dev_iotlb), rc)
        self.unlock(label, "register_lock", iommu.index)
        if dev_iotlb:
            # flush_iotlb_qi(): device-TLBs are invalidated whatever the IOTLB
            # invalidation returned; the first error wins.
            dev_rc = self._dev_invalidate_iotlb(iommu, did, gran, label)
            if not rc:
                rc = dev_rc
        return rc

    def _dev_invalidate_iotlb(self, iommu: VtdIommu, did: int, gran: str, label: str) -> int:
        """Device-TLB flushes go to ATS devices whose *current* entry carries
        the DID with TT = device-IOTLB (device_in_domain(), which looks at the
        root entry but not at the context entry's P bit; D4)."""
        # list_for_each_entry_safe from the head: newest first.
        for pdev in iommu.ats_devices:
            lo, hi = iommu.entry(pdev.bus, pdev.devfn)
            if gran != "global":
                if pdev.bus not in iommu.root or context_domain_id(hi) != did \
                        or context_translation_type(lo) != CONTEXT_TT_DEV_IOTLB:
                    continue
            self.dma_dev_iotlb_flushed(iommu.index, pdev)
            self.emit(S.K_FLUSH_DEV_IOTLB, label, iommu.index, pdev.bdf16, did, 0)
        return 0

    def iommu_flush_iotlb_dsi(self, iommu: VtdIommu, did: int, non_present: bool, dev_iotlb: bool,
                              label: str, domain: XenDomain | None = None) -> int:
        self.enter("iommu_flush_iotlb_dsi", label, ("iommu", iommu.index), ("did", did),
                   ("non_present", bool(non_present)), ("flush_dev_iotlb", bool(dev_iotlb)))
        rc = self._flush_iotlb(iommu, did, "dsi", non_present, dev_iotlb, label, domain)
        return self.leave(rc)

    def iommu_flush_write_buffer(self, iommu: VtdIommu, label: str) -> None:
        performed = bool(iommu.rwbf)
        if performed:
            self.lock(label, "register_lock", iommu.index)
        self.emit(S.K_FLUSH_WRITE_BUFFER, label, iommu.index, performed)
        if performed:
            self.unlock(label, "register_lock", iommu.index)

    def find_ats_dev_drhd(self, iommu: VtdIommu) -> bool:
        return iommu.ats_unit

    def combine_flush_rc(self, iommu: VtdIommu, rc: int, ret: int, label: str) -> int:
        """The caller-side convention shared by MO11/UO5/PM6."""
        if rc > 0 or ret > 0:
            self.iommu_flush_write_buffer(iommu, label)
        if rc >= 0:
            rc = ret
        if rc > 0:
            rc = 0
        return rc

    def iommu_flush_all(self, label: str) -> int:
        self.enter("iommu_flush_all", label)
        rc = 0
        for iommu in self.iommus:
            context_rc = self.iommu_flush_context_global(iommu, False, label)
            iotlb_rc = self._flush_iotlb(iommu, 0, "global", False, self.find_ats_dev_drhd(iommu), label)
            if context_rc > 0 or iotlb_rc > 0:
                self.iommu_flush_write_buffer(iommu, label)
            if rc >= 0:
                rc = context_rc
            if rc >= 0:
                rc = iotlb_rc
        if rc > 0:
            rc = 0
        return self.leave(rc)
