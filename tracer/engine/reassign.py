"""reassign_device_ownership (V1: RO1-RO8, unmap then map through dom_io;
V2: RN1-RN7, in place), intel_iommu_assign_device and the RMRR identity
maps (iommu_identity_mapping).  docs/MODEL.md#reassign, #assign."""

from __future__ import annotations

from .. import schema as S
from .context_one import ContextOneMixin
from .core import PciDev, XenDomain
from .did import DidMixin
from .mapping import MappingMixin

ENODEV, EPERM, ENOENT, EADDRINUSE = 19, 1, 2, 98


class ReassignMixin(MappingMixin, ContextOneMixin, DidMixin):

    # --- identity maps (x86/iommu.c) -------------------------------------------

    def iommu_identity_mapping(self, d: XenDomain, access: str, base: int, end: int, flag: int, label: str) -> int:
        """access 'rw' maps (refcounted per (base, end)); 'x' unmaps.
        Xen asserts pcidevs_locked() here."""
        self.enter("iommu_identity_mapping", label, ("domain", d.domid), ("p2ma", access),
                   ("base", base), ("end", end), ("flag", flag))
        m = d.identity_maps.get((base, end))
        if m is not None:
            if access != "x":
                if m[0] != access:
                    return self.leave(-EADDRINUSE)
                m[1] += 1
                self.emit(S.K_IDMAP_ADD, label, d.domid, base, end, access, m[1])
                return self.leave(0)
            m[1] -= 1
            if m[1]:
                self.emit(S.K_IDMAP_REMOVE, label, d.domid, base, end, m[1])
                return self.leave(0)
            del d.identity_maps[(base, end)]
            self.emit(S.K_IDMAP_REMOVE, label, d.domid, base, end, 0)
            return self.leave(0)
        for (b, e) in d.identity_maps:
            if end >= b and e >= base:
                return self.leave(-EADDRINUSE)
        if access == "x":
            return self.leave(-ENOENT)
        rc = self.fault("rmrr-map", label, d)
        if rc:
            return self.leave(rc)
        d.identity_maps[(base, end)] = [access, 1]
        self.emit(S.K_IDMAP_ADD, label, d.domid, base, end, access, 1)
        return self.leave(0)

    def _remove_source_rmrrs(self, source: XenDomain, pdev: PciDev, devfn: int, label: str) -> int:
        """RO3 / RN7: drop the source's RMRR maps for (bus, devfn)."""
        if self.is_hardware_domain(source):
            return 0
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            ret = self.iommu_identity_mapping(source, "x", r.base, r.end, 0, label)
            if ret and ret != -ENOENT:
                return ret
        return 0

    def _pi_hook(self, func: str, d: XenDomain, label: str) -> None:
        self.enter(func, label, ("domain", d.domid))
        self.leave(None)

    def _move_pdev(self, pdev: PciDev, target: XenDomain, label: str) -> None:
        old = pdev.domain
        if old is not None and pdev in old.pdevs:
            old.pdevs.remove(pdev)
        target.pdevs.insert(0, pdev)   # list_move/list_add insert at the head
        pdev.domain = target
        self.emit(S.K_OWNER_MOVE, label, pdev.seg, pdev.bdf16,
                  old.domid if old else None, target.domid)

    # --- reassign_device_ownership ------------------------------------------------

    def reassign_device_ownership(self, source: XenDomain, target: XenDomain, devfn: int, pdev: PciDev) -> int:
        if self.variant == "legacy":
            return self._reassign_v1(source, target, devfn, pdev)
        self.enter("reassign_device_ownership", "RN1", ("source", source.domid), ("target", target.domid),
                   ("devfn", devfn), ("pdev", str(pdev)))
        # RN1
        if not self.has_arch_pdevs(target):
            self._pi_hook("vmx_pi_hooks_assign", target, "RN1")
        # RN2: untrusted_msi -- interrupt remapping is not modelled.
        # RN3
        ret = self.domain_context_mapping(target, devfn, pdev)
        if ret:
            if not self.has_arch_pdevs(target):
                self._pi_hook("vmx_pi_hooks_deassign", target, "RN3")
            return self.leave(ret, "RN3")
        # RN4
        if pdev.devfn == devfn:
            iommu = self.acpi_find_matched_drhd_unit(pdev)
            if iommu is not None:
                self.check_cleanup_domid_map(source, pdev, iommu, "RN4")
        # RN5
        if devfn == pdev.devfn and pdev.domain is not target:
            self._move_pdev(pdev, target, "RN5")
        # RN6
        if not self.has_arch_pdevs(source):
            self._pi_hook("vmx_pi_hooks_deassign", source, "RN6")
        # RN7: after ownership moved -- an error here leaves the move done.
        ret = self._remove_source_rmrrs(source, pdev, devfn, "RN7")
        return self.leave(ret, "RN7")

    def _reassign_v1(self, source: XenDomain, target: XenDomain, devfn: int, pdev: PciDev) -> int:
        self.enter("reassign_device_ownership", "RO1", ("source", source.domid), ("target", target.domid),
                   ("devfn", devfn), ("pdev", str(pdev)))
        # RO1: unmap from the source first -- the XSA-400 window opens here.
        ret = self.domain_context_unmap(source, devfn, pdev)
        if ret:
            return self.leave(ret, "RO1")
        # RO2: untrusted_msi (not modelled).  RO3
        ret = self._remove_source_rmrrs(source, pdev, devfn, "RO3")
        if ret:
            return self.leave(ret, "RO3")
        # RO4: dom_io as the intermediate owner.
        if devfn == pdev.devfn and pdev.domain is not self.dom_io:
            self._move_pdev(pdev, self.dom_io, "RO4")
        # RO5/RO6
        if not self.has_arch_pdevs(source):
            self._pi_hook("vmx_pi_hooks_deassign", source, "RO5")
        if not self.has_arch_pdevs(target):
            self._pi_hook("vmx_pi_hooks_assign", target, "RO6")
        # RO7
        ret = self.domain_context_mapping(target, devfn, pdev)
        if ret:
            if not self.has_arch_pdevs(target):
                self._pi_hook("vmx_pi_hooks_deassign", target, "RO7")
            return self.leave(ret, "RO7")
        # RO8
        if devfn == pdev.devfn and pdev.domain is not target:
            self._move_pdev(pdev, target, "RO8")
        return self.leave(ret, "RO8")

    # --- intel_iommu_assign_device -------------------------------------------------

    def intel_iommu_assign_device(self, d: XenDomain, devfn: int, pdev: PciDev, flag: int) -> int:
        self.enter("intel_iommu_assign_device", "AS1", ("domain", d.domid), ("devfn", devfn),
                   ("pdev", str(pdev)), ("flag", flag))
        s = pdev.domain
        if not self.iommus:
            return self.leave(-ENODEV)
        # Callers assign only owned devices (hardware domain or dom_io; device_assigned()).
        assert s is not None
        relaxed = bool(flag & 1)
        for r, count in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            if count > 1:
                self.log("AS1", "warning" if relaxed else "err",
                         f"[VT-D] It's {'risky' if relaxed else 'disallowed'} to assign "
                         f"{pdev.seg:04x}:{pdev.bus:02x}:{devfn >> 3:02x}.{devfn & 7} with shared RMRR at "
                         f"{r.base:x} for {self.pd(d)}.")
                if not relaxed:
                    return self.leave(-EPERM)
        if d is self.dom_io:
            # No RMRR maps for dom_io in any 4.15 variant before V3.
            return self.leave(self.reassign_device_ownership(s, d, devfn, pdev), "AS2")
        # AS3: RMRRs into the target first (CVE-2022-26358 ordering).
        ret = 0
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            ret = self.iommu_identity_mapping(d, "rw", r.base, r.end, flag, "AS3")
            if ret:
                self.log("AS3", "err", f"[VT-D]{self.pd(d)}: cannot map reserved region "
                         f"[{r.base:x},{r.end:x}]: {ret}")
                break
        if not ret:
            ret = self.reassign_device_ownership(s, d, devfn, pdev)
        if not ret or self.is_hardware_domain(d):
            return self.leave(ret, "AS4")
        # AS5: undo the target's RMRR maps.
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            rc = self.iommu_identity_mapping(d, "x", r.base, r.end, 0, "AS5")
            if rc and rc != -ENOENT:
                self.log("AS5", "err", f"[VT-D]{self.pd(d)}: cannot unmap reserved region "
                         f"[{r.base:x},{r.end:x}]: {rc}")
                self.domain_crash(d, "AS5")
                break
        return self.leave(ret, "AS5")
