"""vtd/quirks.c: the ME WiFi phantom-function quirk
(docs/MODEL.md#me-wifi-quirk).  Mapping a Centrino WLAN device also maps the ME's phantom function
0:3.7 (Cantiga) or 0:22.7 (Ironlake / Cougar Point) into the same domain,
on the IOMMU of the real ME device 0:dev.0."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..platform import CTG_WLAN, ILK_CPT_WLAN, IS_CPT, IS_CTG, IS_ILK
from .core import EngineCore, PciDev, XenDomain
from .hw import VtdIommu

# The quirk maps through the per-RID workers, which in turn call the quirk
# (MO13/UO6): the two modules depend on each other.  The constant is Xen's
# (vtd/extern.h); context_one imports it from here to avoid the import cycle.
UNMAP_ME_PHANTOM_FUNC = 1 << 3


class QuirksMixin(EngineCore):

    if TYPE_CHECKING:
        # Defined by ContextOneMixin (context_one.py), which inherits this
        # class; declared so the quirk type-checks against their signatures.
        def domain_context_mapping_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                                       pdev: PciDev | None, mode: int) -> int: ...

        def domain_context_unmap_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int) -> int: ...

    def me_wifi_quirk(self, domain: XenDomain, bus: int, devfn: int, mode: int, label: str) -> int:
        host = self.conf_read_id(0, 0, 0)
        me_dev = None
        if host in IS_CTG:
            if self.conf_read_id(0, 0, 3 << 3) != 0xFFFF_FFFF and self.conf_read_id(0, bus, devfn) in CTG_WLAN:
                me_dev = 3
        elif host in IS_ILK or host in IS_CPT:
            if self.conf_read_id(0, 0, 22 << 3) != 0xFFFF_FFFF and \
                    self.conf_read_id(0, bus, devfn) in ILK_CPT_WLAN:
                me_dev = 22
        if me_dev is None:
            return 0
        self.enter("me_wifi_quirk", label, ("domain", domain.domid), ("bus", bus), ("devfn", devfn),
                   ("mode", mode))
        rc = self.fault("quirk", label, domain)
        if rc == 0:
            rc = self.map_me_phantom_function(domain, me_dev, mode, label)
        return self.leave(rc)

    def map_me_phantom_function(self, domain: XenDomain, dev: int, mode: int, label: str) -> int:
        self.enter("map_me_phantom_function", label, ("domain", domain.domid), ("dev", dev), ("mode", mode))
        me = self.pci_get_pdev(0, 0, dev << 3)
        # me_wifi_quirk() checked that the ME device answers, so it exists and
        # lies in some DRHD's scope (Xen passes both on unchecked).
        assert me is not None
        iommu = self.acpi_find_matched_drhd_unit(me)
        assert iommu is not None
        if self.variant == "direct":
            unmap = bool(mode & UNMAP_ME_PHANTOM_FUNC)
        else:
            unmap = mode == 0   # V1: map = MAP_ME_PHANTOM_FUNC (1) / UNMAP (0)
        if not unmap:
            rc = self.domain_context_mapping_one(domain, iommu, 0, (dev << 3) | 7, None, mode)
        else:
            rc = self.domain_context_unmap_one(domain, iommu, 0, (dev << 3) | 7)
        return self.leave(rc)
