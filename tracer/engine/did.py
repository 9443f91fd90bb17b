"""Domain-ID bookkeeping (vtd/iommu.c): domain_iommu_domid,
context_set_domain_id, cleanup_domid_map, check_cleanup_domid_map."""

from __future__ import annotations

from .. import schema as S
from .core import EngineCore, PciDev, XenDomain
from .hw import VtdIommu, context_set_did


class DidMixin(EngineCore):

    def _did_bit(self, iommu: VtdIommu, did: int, value: int, label: str) -> None:
        if value:
            iommu.domid_bitmap.add(did)
        else:
            iommu.domid_bitmap.discard(did)
        self.emit(S.K_DID_BITMAP, label, iommu.index, did, value)

    def _did_map(self, iommu: VtdIommu, did: int, domid: int, label: str) -> None:
        old = iommu.domid_map.get(did, 0)
        if domid == 0:
            iommu.domid_map.pop(did, None)
        else:
            iommu.domid_map[did] = domid
        self.emit(S.K_DID_MAP, label, iommu.index, did, old, domid)

    def domain_iommu_domid(self, d: XenDomain, iommu: VtdIommu, label: str) -> int:
        """First set bitmap bit whose map slot is d's domid, else -1."""
        for i in sorted(iommu.domid_bitmap):
            if iommu.domid_map.get(i, 0) == d.domid:
                return i
        if not d.is_dying:
            self.log(label, "err", f"[VT-D]Cannot get valid iommu {iommu.index} domid: {self.pd(d)}")
        return -1

    def context_set_domain_id(self, hi: int, d: XenDomain, iommu: VtdIommu, label: str) -> tuple[int, int]:
        """Returns (rc, new hi).  Reuses d's DID or takes the first clear bit.
        Xen asserts iommu->lock here."""
        self.enter("context_set_domain_id", label, ("domain", d.domid), ("iommu", iommu.index))
        found = self.domain_iommu_domid_quiet(d, iommu)
        if found is None:
            i = next((n for n in range(iommu.ndoms) if n not in iommu.domid_bitmap), None)
            if i is None or self.fault("did-alloc", label, d) < 0:
                self.log(label, "err", "[VT-D]IOMMU: no free domain ids")
                return self.leave(-14), hi
            self._did_map(iommu, i, d.domid, label)
        else:
            i = found
        # set_bit() runs even when the bit is already set (D1 path re-sets it).
        self._did_bit(iommu, i, 1, label)
        hi = context_set_did(hi, i, clear_first=self.variant == "direct")
        self.leave(0)
        return 0, hi

    def domain_iommu_domid_quiet(self, d: XenDomain, iommu: VtdIommu) -> int | None:
        for i in sorted(iommu.domid_bitmap):
            if iommu.domid_map.get(i, 0) == d.domid:
                return i
        return None

    def cleanup_domid_map(self, d: XenDomain, iommu: VtdIommu, label: str) -> None:
        self.enter("cleanup_domid_map", label, ("domain", d.domid), ("iommu", iommu.index))
        did = self.domain_iommu_domid(d, iommu, label)
        if did >= 0:
            self._free_did(iommu, did, label)
        self.leave(None)

    def _free_did(self, iommu: VtdIommu, did: int, label: str) -> None:
        """The two stores of cleanup_domid_map, in the order of the knob.

        With the XSA-399 fix (aafd4f1df0, in every commit the variants
        model): slot := DOMID_INVALID, then clear the bit, so a
        context_set_domain_id on another CPU either finds the bit still set
        or writes its own slot after ours.  Without it (--no-xsa399-fix, the
        code before aafd4f1df0): clear the bit, then zero the slot -- a
        concurrent context_set_domain_id can take the number in between and
        have its slot zeroed behind it (CVE-2022-26357)."""
        if self.knobs.xsa399_fix:
            self._did_map(iommu, did, S.DOMID_INVALID, label)
            self._did_bit(iommu, did, 0, label)
        else:
            self._did_bit(iommu, did, 0, label)
            self._did_map(iommu, did, 0, label)

    def check_cleanup_domid_map(self, d: XenDomain, exclude: PciDev | None, iommu: VtdIommu, label: str) -> None:
        self.enter("check_cleanup_domid_map", label, ("domain", d.domid),
                   ("exclude", str(exclude) if exclude else None), ("iommu", iommu.index))
        found = self.any_pdev_behind_iommu(d, exclude, iommu)
        # dom_xen (hidden devices usable by hwdom) holds no pdevs in our model.
        if not found:
            d.iommu_bitmap.discard(iommu.index)
            self.emit(S.K_IOMMU_BITMAP, label, d.domid, iommu.index, 0)
            self.cleanup_domid_map(d, iommu, label)
        self.leave(None)

    def set_iommu_bitmap(self, d: XenDomain, iommu: VtdIommu, label: str) -> None:
        d.iommu_bitmap.add(iommu.index)
        self.emit(S.K_IOMMU_BITMAP, label, d.domid, iommu.index, 1)

    def pd(self, d: XenDomain | None) -> str:
        """Xen's %pd."""
        if d is None:
            return "(NULL)"
        if d.domid == S.DOMID_IO:
            return "d[IO]"
        return f"d{d.domid}"
