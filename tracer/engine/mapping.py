"""Per-device-type mapping: domain_context_mapping (DCM0/DCM1, P1-P5) and
domain_context_unmap (DCU), find_upstream_bridge.  docs/MODEL.md#dcm.
"""

from __future__ import annotations

from .. import schema as S
from .context_one import MAP_OWNER_DYING, MAP_SINGLE_DEVICE, MAP_WITH_RMRR, ContextOneMixin
from .core import PciDev, XenDomain
from .did import DidMixin
from .hw import VtdIommu

ENODEV, EPERM, ENXIO, EOPNOTSUPP, EINVAL = 19, 1, 6, 95, 22


class MappingMixin(ContextOneMixin, DidMixin):

    def find_upstream_bridge(self, seg: int, bus: int, devfn: int,
                             label: str) -> tuple[int, int, int, int | None]:
        """Returns (ret, bus, devfn, secbus) -- Xen overwrites the caller's
        bus/devfn through pointers; callers that pass their own locals get
        them clobbered (D2)."""
        if bus == 0 or (seg, bus) not in self.bus2bridge:
            return 0, bus, devfn, None
        self.lock(label, "bus2bridge_lock", seg)
        found = self.upstream_walk(seg, bus, devfn)
        self.unlock(label, "bus2bridge_lock", seg)
        return found

    def _dcm_mode(self, domain: XenDomain, pdev: PciDev, iommu: VtdIommu | None) -> int:
        """DCM1 (V2): MAP_WITH_RMRR from the *main* BDF, owner flags."""
        mode = 0
        for _ in self.rmrrs_for(pdev.seg, pdev.bus, pdev.devfn):
            mode |= MAP_WITH_RMRR
            break
        if domain is not pdev.domain and pdev.domain is not None:
            if pdev.domain.is_dying:
                mode |= MAP_OWNER_DYING
            elif iommu is not None and not self.any_pdev_behind_iommu(pdev.domain, pdev, iommu) \
                    and not pdev.phantom_stride:
                mode |= MAP_SINGLE_DEVICE
        return mode

    def domain_context_mapping(self, domain: XenDomain, devfn: int, pdev: PciDev) -> int:
        direct = self.variant == "direct"
        self.enter("domain_context_mapping", "DCM0", ("domain", domain.domid), ("devfn", devfn),
                   ("pdev", str(pdev)))
        seg, bus = pdev.seg, pdev.bus
        iommu = self.acpi_find_matched_drhd_unit(pdev)
        if iommu is None:
            return self.leave(-ENODEV, "DCM0")
        mode = 0
        if direct:
            mode = self._dcm_mode(domain, pdev, iommu)
        ret = 0
        t = pdev.type
        if t == "host-bridge":
            if not self.is_hardware_domain(domain):
                return self.leave(-EPERM, "DCM0")
        elif t in ("pcie2pci-bridge", "legacy-pci-bridge"):
            pass   # bridges get mapped only through the devices behind them
        elif t == "pcie-endpoint":
            ret = self.domain_context_mapping_one(domain, iommu, bus, devfn, pdev, mode)
            if ret > 0:
                ret = 0
            if not ret and devfn == pdev.devfn and self.ats_device(pdev, iommu):
                self.enable_ats_device(pdev, iommu, "DCM0")
        elif t == "pci":
            ret = self._dcm_pci(domain, iommu, seg, bus, devfn, pdev, mode, direct)
        else:
            ret = -EINVAL
        return self.leave(ret)

    def _dcm_pci(self, domain: XenDomain, iommu: VtdIommu, seg: int, bus: int, devfn: int, pdev: PciDev,
                 mode: int, direct: bool) -> int:
        # P1
        ret = self.domain_context_mapping_one(domain, iommu, bus, devfn, pdev, mode)
        if ret < 0 or (not direct and ret):
            return ret
        prev_present = bool(ret) if direct else False

        # P2: clobbers the local bus/devfn with the bridge's (D2).
        ret, bus, devfn, secbus = self.find_upstream_bridge(seg, bus, devfn, "P2")
        if ret < 1:
            if not ret:
                return 0
            ret = -ENXIO
        elif direct and prev_present and (mode & MAP_WITH_RMRR) and domain is not pdev.domain:
            ret = -EOPNOTSUPP

        # P3: the bridge itself, with pdev = NULL.
        if ret >= 0:
            ret = self.domain_context_mapping_one(domain, iommu, bus, devfn, None, mode)

        # P4: the (secbus, 0) alias behind a PCIe-to-PCI bridge.
        if not ret and self.pdev_type(seg, bus, devfn) == "pcie2pci-bridge" and \
                (secbus != pdev.bus or pdev.devfn != 0):
            # ret == 0 here means P2 found a bridge, so secbus is set.
            assert secbus is not None
            ret = self.domain_context_mapping_one(domain, iommu, secbus, 0, None, mode)

        # P5: undo -- with the bridge's devfn, not the device's (D2, DERIVED).
        if ret:
            if not direct or not prev_present:
                self.emit(S.K_ROLLBACK_BEGIN, "P5", ret, "P5 unmap")
                r = self.domain_context_unmap(domain, devfn, pdev)
            elif pdev.domain is not domain:
                # prev_present: the device is mapped, so it has an owner.
                assert pdev.domain is not None
                self.emit(S.K_ROLLBACK_BEGIN, "P5", ret, "P5 remap")
                r = self.domain_context_mapping(pdev.domain, devfn, pdev)
            else:
                r = None
            if r is not None:
                self.emit(S.K_ROLLBACK_END, "P5", r)
        return ret

    def domain_context_unmap(self, domain: XenDomain, devfn: int, pdev: PciDev) -> int:
        self.enter("domain_context_unmap", "DCU", ("domain", domain.domid), ("devfn", devfn),
                   ("pdev", str(pdev)))
        seg, bus = pdev.seg, pdev.bus
        iommu = self.acpi_find_matched_drhd_unit(pdev)
        if iommu is None:
            return self.leave(-ENODEV)
        t = pdev.type
        if t == "host-bridge":
            if not self.is_hardware_domain(domain):
                return self.leave(-EPERM)
            return self.leave(0)
        if t in ("pcie2pci-bridge", "legacy-pci-bridge"):
            return self.leave(0)
        if t == "pcie-endpoint":
            ret = self.domain_context_unmap_one(domain, iommu, bus, devfn)
            if not ret and devfn == pdev.devfn and self.ats_device(pdev, iommu):
                self.disable_ats_device(pdev, iommu, "DCU")
        elif t == "pci":
            ret = self.domain_context_unmap_one(domain, iommu, bus, devfn)
            if not ret:
                # Here Xen walks on copies (tmp_bus/tmp_devfn): no clobbering.
                r, tmp_bus, tmp_devfn, secbus = self.find_upstream_bridge(seg, bus, devfn, "DCU")
                if r < 1:
                    if r:
                        ret = -ENXIO
                        if not domain.is_dying and not self.is_hardware_domain(domain) \
                                and domain is not self.dom_io:
                            self.domain_crash(domain, "DCU")
                            ret = 0
                    return self.leave(ret) if ret else self._dcu_done(domain, pdev, iommu)
                if self.pdev_type(seg, tmp_bus, tmp_devfn) == "pcie2pci-bridge":
                    ret = self.domain_context_unmap_one(domain, iommu, tmp_bus, tmp_devfn)
                    if not ret:
                        assert secbus is not None   # r >= 1: a bridge was found
                        ret = self.domain_context_unmap_one(domain, iommu, secbus, 0)
                else:
                    ret = self.domain_context_unmap_one(domain, iommu, tmp_bus, tmp_devfn)
        else:
            return self.leave(-EINVAL)
        if not ret:
            return self._dcu_done(domain, pdev, iommu)
        return self.leave(ret)

    def _dcu_done(self, domain: XenDomain, pdev: PciDev, iommu: VtdIommu) -> int:
        self.check_cleanup_domid_map(domain, pdev, iommu, "DCU")
        return self.leave(0)

    # --- ATS ------------------------------------------------------------------

    def ats_device(self, pdev: PciDev, iommu: VtdIommu) -> bool:
        """ats_device(): the `ats` knob stands for ats_enabled with QI, ECAP.DT
        and an ATSR covering the unit.  Registers the unit for device-TLB flushes."""
        if self.knobs.ats and pdev.ats:
            iommu.ats_unit = True
            return True
        return False

    def enable_ats_device(self, pdev: PciDev, iommu: VtdIommu, label: str) -> None:
        if not pdev.ats_enabled:
            pdev.ats_enabled = True
            # list_add(): at the head of iommu->ats_devices, which
            # dev_invalidate_iotlb() walks from the head -- the device enabled
            # last is invalidated first.
            iommu.ats_devices.insert(0, pdev)
            self.emit(S.K_ATS_ENABLE, label, pdev.seg, pdev.bdf16, 1)

    def disable_ats_device(self, pdev: PciDev, iommu: VtdIommu, label: str) -> None:
        if pdev.ats_enabled:
            pdev.ats_enabled = False
            if pdev in iommu.ats_devices:
                iommu.ats_devices.remove(pdev)
            self.emit(S.K_ATS_ENABLE, label, pdev.seg, pdev.bdf16, 0)
