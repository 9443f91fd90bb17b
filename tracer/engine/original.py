"""The ``original`` engine: V0, stable-4.15 ``aafd4f1df0`` ("VT-d: correct
ordering of operations in cleanup_domid_map()", the XSA-399 fix), the last
commit before the XSA-400 series.

Like ``legacy`` (V1, ``7bbcacec42``) it re-assigns a device by unmapping its
context entry and mapping it again through ``dom_io``; the four commits
between the two (``1427c846e4``, ``3d65d2fa8b``, ``74b8d7c04d``,
``7bbcacec42``) change only the functions overridden here, each one the C
function as it stands at ``aafd4f1df0``:

* ``domain_context_mapping_one`` -- V1's PM1-PM9 with the ownership check
  V1 dropped: an already-present entry is accepted only when it belongs to
  the domain being mapped (``pdev->domain`` when there is a ``pdev``, else
  the DID's ``domid_map`` slot, read as ``context_get_domain_id`` reads it);
  anything else is ``-EINVAL`` (PM2).  Hook: ``_pm2_present``.
* ``reassign_device_ownership`` -- the source's RMRR identity maps are
  removed (RO3) *before* the context unmap (RO1), so a guest's RMRR device
  loses its 1:1 mapping while its entry still points at the guest's tables.
* ``intel_iommu_assign_device`` -- the device is re-assigned first (AO1) and
  the target's RMRR identity maps are added only afterwards (AO2); an RMRR
  failure re-assigns the device back to its previous owner (AO3), crashing
  the target when that fails too.
* ``intel_iommu_add_device`` / ``intel_iommu_remove_device`` -- context map
  before the RMRR maps on add, RMRR removal before the context unmap on
  remove (PA2 / PR1).

Everything else -- ``domain_context_mapping`` with V1's P5, the unmap path
UO1-UO7, the DID bookkeeping in the post-XSA-399 order, the ME quirk's
``MAP_ME_PHANTOM_FUNC`` (1) / 0 argument, quarantine and boot -- is the same
C at both commits and is inherited.  V0 never reads ``cpu_has_cx16`` in these
paths (its only use in ``vtd/iommu.c`` is posted interrupts), so
``--cx16/--no-cx16`` changes the header and nothing else, as for ``legacy``.
docs/ENGINE.md#original says which labels are new.
"""

from __future__ import annotations

from ..platform import fmt_bdf
from . import Engine
from .core import PciDev, XenDomain
from .hw import VtdIommu, context_domain_id
from .reassign import ENODEV, EPERM

EINVAL = 22


class OriginalEngine(Engine):
    """V0 overrides; see the module docstring."""

    # --- domain_context_mapping_one (PM1-PM9 with V0's PM2) ------------------------

    def domain_context_mapping_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                                   pdev: PciDev | None, mode: int) -> int:
        # V0 has no `mode`: the quirk passes MAP_ME_PHANTOM_FUNC to me_wifi_quirk
        # itself, and the rest of the body is V1's.
        rc: int = self.domain_context_mapping_one_v1(domain, iommu, bus, devfn, pdev)
        return rc

    def _pm2_present(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                     pdev: PciDev | None, hi: int) -> int:
        """PM2, V0: whose is the present entry?  With a pdev its owner says;
        without one (bridge aliases, the ME phantom) the entry's DID is looked
        up in domid_map with no bitmap check, as context_get_domain_id does:
        a freed slot reads DOMID_INVALID, a never-used one 0 (dom0).  Printed
        with iommu->lock held, then unlocked."""
        where = fmt_bdf(iommu.segment, bus, devfn)
        res = 0
        if pdev is not None:
            if pdev.domain is not domain:
                self.log("PM2", "info", f"[VT-D]{self.pd(domain)}: {where} owned by {self.pd(pdev.domain)}")
                res = -EINVAL
        else:
            did = context_domain_id(hi)
            cdomain = iommu.domid_map.get(did, 0) if did < iommu.ndoms else -1
            if cdomain < 0:
                self.log("PM2", "debug", f"[VT-D]dom_index {did} exceeds nr_dom {iommu.ndoms} "
                         "or iommu has no domid_map")
                self.log("PM2", "warning", f"[VT-D]{self.pd(domain)}: {where} mapped, but can't find owner")
                res = -EINVAL
            elif cdomain != domain.domid:
                self.log("PM2", "info", f"[VT-D]{self.pd(domain)}: {where} already mapped to d{cdomain}")
                res = -EINVAL
        self.unlock("PM2", "iommu->lock", iommu.index)
        rc: int = self.leave(res)
        return rc

    # --- reassign_device_ownership (RO2, RO3, RO1, RO4-RO8) ----------------------------

    def reassign_device_ownership(self, source: XenDomain, target: XenDomain, devfn: int,
                                  pdev: PciDev) -> int:
        self.enter("reassign_device_ownership", "RO2", ("source", source.domid), ("target", target.domid),
                   ("devfn", devfn), ("pdev", str(pdev)))
        # RO2: untrusted_msi (not modelled).
        # RO3 comes first in V0: the source's RMRR maps go while its entry still
        # points at its tables -- the a2 window opens before the unmap does.
        ret: int = self._remove_source_rmrrs(source, pdev, devfn, "RO3")
        if ret:
            rc: int = self.leave(ret, "RO3")
            return rc
        # RO1: then the unmap (a1 from UO3 on).
        ret = self.domain_context_unmap(source, devfn, pdev)
        if ret:
            rc = self.leave(ret, "RO1")
            return rc
        # RO4: dom_io as the owner in between.
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
            rc = self.leave(ret, "RO7")
            return rc
        # RO8
        if devfn == pdev.devfn and pdev.domain is not target:
            self._move_pdev(pdev, target, "RO8")
        rc = self.leave(ret, "RO8")
        return rc

    # --- intel_iommu_assign_device (AS1, AO1-AO3) --------------------------------------

    def intel_iommu_assign_device(self, d: XenDomain, devfn: int, pdev: PciDev, flag: int) -> int:
        self.enter("intel_iommu_assign_device", "AS1", ("domain", d.domid), ("devfn", devfn),
                   ("pdev", str(pdev)), ("flag", flag))
        s = pdev.domain
        assert s is not None    # assign_device's callers own the device (dom0 or dom_io)
        rc: int
        if not self.iommus:
            rc = self.leave(-ENODEV)
            return rc
        # AS1: the shared-RMRR check, as in V1.
        relaxed = bool(flag & 1)
        for r, count in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            if count > 1:
                self.log("AS1", "warning" if relaxed else "err",
                         f"[VT-D] It's {'risky' if relaxed else 'disallowed'} to assign "
                         f"{fmt_bdf(pdev.seg, pdev.bus, devfn)} with shared RMRR at "
                         f"{r.base:x} for {self.pd(d)}.")
                if not relaxed:
                    rc = self.leave(-EPERM)
                    return rc
        # AO1: re-assign first; an error, or dom_io as the target (no RMRR maps
        # for quarantine before V3), returns here.
        ret: int = self.reassign_device_ownership(s, d, devfn, pdev)
        if ret or d is self.dom_io:
            rc = self.leave(ret, "AO1")
            return rc
        # AO2: only now the target's RMRR identity maps -- the device has been
        # translating through the target's tables without them since PM5.
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            ret = self.iommu_identity_mapping(d, "rw", r.base, r.end, flag, "AO2")
            if ret:
                # AO3: hand the device back, then report; crash the target if
                # the device cannot be reclaimed.
                back: int = self.reassign_device_ownership(d, s, devfn, pdev)
                self.log("AO3", "err", f"[VT-D] cannot map reserved region ({r.base:x},{r.end:x}] "
                         f"for Dom{d.domid} ({ret})")
                if back:
                    self.log("AO3", "err", f"[VT-D] failed to reclaim {fmt_bdf(pdev.seg, pdev.bus, devfn)} "
                             f"from {self.pd(d)} ({back})")
                    self.domain_crash(d, "AO3")
                rc = self.leave(ret, "AO3")
                return rc
        rc = self.leave(ret, "AO2")
        return rc

    # --- intel_iommu_add_device / intel_iommu_remove_device (PA2, PR1) -------------

    def intel_iommu_add_device(self, devfn: int, pdev: PciDev) -> int:
        self.enter("intel_iommu_add_device", "PA2", ("devfn", devfn), ("pdev", str(pdev)))
        owner = pdev.domain
        assert owner is not None    # pci_add_device sets it first
        # V0: the context first; a failure returns before any RMRR is mapped.
        ret: int = self.domain_context_mapping(owner, devfn, pdev)
        rc: int
        if ret:
            self.log("PA2", "err", f"[VT-D]d{owner.domid}: context mapping failed")
            rc = self.leave(ret)
            return rc
        # Then the RMRRs: between the two the device translates through the
        # hardware domain's tables before its RMRR is identity-mapped there
        # (a failure is only logged).
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            if self.iommu_identity_mapping(owner, "rw", r.base, r.end, 0, "PA2"):
                self.log("PA2", "err", f"[VT-D]d{owner.domid}: RMRR mapping failed")
        rc = self.leave(0)
        return rc

    def intel_iommu_remove_device(self, devfn: int, pdev: PciDev) -> int:
        self.enter("intel_iommu_remove_device", "PR1", ("devfn", devfn), ("pdev", str(pdev)))
        owner = pdev.domain
        assert owner is not None    # pci_remove_device checks it first
        # V0: the RMRR identity maps go first (results ignored), then the context.
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            self.iommu_identity_mapping(owner, "x", r.base, r.end, 0, "PR1")
        rc: int = self.leave(self.domain_context_unmap(owner, devfn, pdev))
        return rc
