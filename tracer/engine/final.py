"""Engine variant ``final`` (V3): stable-4.15 b3ee746000, the end of the
XSA-400 series.  ``FinalEngine`` is the ``direct`` engine (V2, d67a72c655)
with exactly the functions whose C differs at b3ee746000 overridden, each
the C function of that commit with its step labels:

* ``domain_context_mapping_one`` takes the DID's domain ID and the page-table
  root from its caller (``DEVICE_DOMID`` / ``DEVICE_PGTABLE``: the device's
  pseudo domain ID and quarantine tables when the target is dom_io); MO3
  resolves a pseudo domain ID to dom_io; the MO14 rollback is skipped under
  ``MAP_ERROR_RECOVERY``, which the nested call carries, so it can no longer
  ping-pong; an unrecoverable ``prev_dom == dom_io && !pdev`` unmaps instead;
  the EILSEQ printk no longer dereferences ``pdev``;
* ``domain_context_unmap_one`` flushes the DID it read from the entry (UO3):
  the UO4 lookup of the caller's DID and its unflushed ``-EINVAL`` are gone;
* ``domain_context_mapping`` allocates the device's pseudo domain ID (DCM2)
  and returns it on failure (DCM3);
* ``check_cleanup_domid_map`` ignores dom_io, ``cleanup_domid_map`` and
  ``context_set_domain_id`` work on a domain ID (the latter may allocate a
  DID without writing an entry);
* ``assign_device`` / ``deassign_device`` call ``iommu_quarantine_dev_init``
  (AD3, DD3); the quarantine tables themselves are in final_quarantine.py;
* boot's ``iommu_quarantine_init`` only initialises dom_io (QI1): no shared
  scratch tree, no IOTLB flush (0bd3ff2551);
* ``intel_iommu_remove_device`` tears the device's quarantine tables down
  and returns its pseudo domain ID (PR3).

Everything else -- reassign_device_ownership, intel_iommu_assign_device, the
flushes, the hardware-domain setup -- is the same C at both commits and is
inherited.  stable-4.15's ``unlock:`` label still returns -EFAULT (D1).
"""

from __future__ import annotations

from typing import Any

from .. import schema as S
from ..platform import CTG_WLAN, ILK_CPT_WLAN, IS_CPT, IS_CTG, IS_ILK
from .context_one import ENOMEM, ESRCH, MAP_OWNER_DYING, MAP_SINGLE_DEVICE, MAP_WITH_RMRR
from .core import PciDev, XenDomain
from .final_quarantine import QuarantineEngine
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
    sid,
)
from .mapping import EINVAL, ENODEV, ENXIO, EOPNOTSUPP, EPERM

ENOSPC = 28

# vtd.h at b3ee746000: MAP_ERROR_RECOVERY takes bit 3, UNMAP_ME_PHANTOM_FUNC moves to bit 4.
MAP_ERROR_RECOVERY = 1 << 3
UNMAP_ME_PHANTOM_FUNC = 1 << 4


class FinalEngine(QuarantineEngine):
    """V3.  ``variant`` is "final"; the V2 code paths it inherits test
    ``variant == "direct"`` nowhere that reaches them (every such function is
    overridden here)."""

    # --- DID bookkeeping (vtd/iommu.c; the domid-based helpers are in final_quarantine.py) ------

    def check_cleanup_domid_map(self, d: XenDomain, exclude: PciDev | None, iommu: VtdIommu,
                                label: str) -> None:
        self.enter("check_cleanup_domid_map", label, ("domain", d.domid),
                   ("exclude", str(exclude) if exclude else None), ("iommu", iommu.index))
        if d is self.dom_io:
            # dom_io's DIDs are the per-device pseudo domain IDs' and live as
            # long as the device's quarantine tables (quarantine_teardown).
            self.leave(None)
            return
        if not self.any_pdev_behind_iommu(d, exclude, iommu):
            d.iommu_bitmap.discard(iommu.index)
            self.emit(S.K_IOMMU_BITMAP, label, d.domid, iommu.index, 0)
            self.cleanup_domid_map(d.domid, iommu, label)
        self.leave(None)

    # --- DEVICE_DOMID / DEVICE_PGTABLE ---------------------------------------------------

    def device_domid(self, d: XenDomain, pdev: PciDev) -> int:
        return d.domid if d is not self.dom_io else pdev.pseudo_domid

    def device_pgtable(self, d: XenDomain, pdev: PciDev) -> int:
        if d is not self.dom_io:
            return d.pgd_maddr
        return pdev.qpt.pgd_maddr if pdev.qpt is not None else 0

    def domain_pgd_maddr_v3(self, d: XenDomain, pgd_maddr: int, nr_pt_levels: int, label: str) -> int:
        """domain_pgd_maddr(d, pgd_maddr, nr_pt_levels): a root handed in (a
        device's quarantine tables, or the domain's own) is used as is, else
        the domain's tables, allocated on first use; then the top levels are
        skipped for a unit with fewer levels (pte[0] of each)."""
        self.enter("domain_pgd_maddr", label, ("domain", d.domid), ("pgd_maddr", pgd_maddr),
                   ("nr_pt_levels", nr_pt_levels))
        if pgd_maddr:
            tree = self._tree_of_root(d, pgd_maddr)
        else:
            if not d.pgd_maddr:
                if self.fault("pgd-alloc", label, d) < 0:
                    return int(self.leave(0))
                self._alloc_tree(d, "pgd", label)
            tree = d
        return int(self.leave(self._pgd_for_levels(tree, nr_pt_levels)))

    def _tree_of_root(self, d: XenDomain, root: int) -> XenDomain:
        if root == d.pgd_maddr:
            return d
        return self.qpt_by_root.get(root, d)

    # --- domain_context_mapping_one (MO1-MO15 with the V3 changes) ----------------------

    def domain_context_mapping_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                                   pdev: PciDev | None, mode: int, domid: int | None = None,
                                   pgd_maddr: int = 0) -> int:
        """The C argument order is (domain, iommu, bus, devfn, pdev, domid,
        pgd_maddr, mode); the call event records it so.  domid None stands
        for domain->domain_id (the ME quirk and the inherited callers pass
        none)."""
        if domid is None:
            domid = domain.domid
        self.enter("domain_context_mapping_one", "MO1",
                   ("domain", domain.domid), ("iommu", iommu.index), ("bus", bus), ("devfn", devfn),
                   ("pdev", str(pdev) if pdev else None), ("domid", domid), ("pgd_maddr", pgd_maddr),
                   ("mode", mode))
        seg = iommu.segment
        prev_did = 0
        prev_dom: XenDomain | None = None

        # MO1
        self.lock("MO1", "iommu->lock", iommu.index)
        self.bus_to_context_maddr(iommu, bus, "MO1")
        # MO2
        old = iommu.entry(bus, devfn)
        lo, hi = old

        # MO3: a pseudo domain ID stands for dom_io -- the device's own when
        # pdev is known, any (> DOMID_MASK) for a bridge or ME-phantom entry.
        if context_present(lo):
            prev_did = context_domain_id(hi)
            prev_domid = iommu.domid_map.get(prev_did, 0)
            if prev_domid < S.DOMID_FIRST_RESERVED:
                prev_dom = self.rcu_lock_domain_by_id(prev_domid)
                if prev_dom is not None:
                    self._rcu_lock(prev_dom, "MO3")
            elif (prev_domid == pdev.pseudo_domid) if pdev is not None else prev_domid > S.DOMID_MASK:
                prev_dom = self.dom_io
                self._rcu_lock(prev_dom, "MO3")
            if prev_dom is None:
                self.unlock("MO3", "iommu->lock", iommu.index)
                self.log("MO3", "debug", f"[VT-D]no domain for did {prev_did} (nr_dom {iommu.ndoms})")
                return int(self.leave(-ESRCH))

        # MO4
        if self.knobs.hwdom_passthrough and self.is_hardware_domain(domain):
            lo = context_set_translation_type(lo, CONTEXT_TT_PASS_THRU)
        else:
            self.lock("MO4", "mapping_lock", domain.domid)
            root = self.domain_pgd_maddr_v3(domain, pgd_maddr, iommu.nr_pt_levels, "MO4")
            if not root:
                self.unlock("MO4", "mapping_lock", domain.domid)
                self.unlock("MO4", "iommu->lock", iommu.index)
                if prev_dom is not None:
                    self._rcu_unlock(prev_dom, "MO4")
                return int(self.leave(-ENOMEM))
            lo = context_set_address_root(lo, root)
            tt = CONTEXT_TT_DEV_IOTLB if self.knobs.ats else CONTEXT_TT_MULTI_LEVEL
            lo = context_set_translation_type(lo, tt)
            self.unlock("MO4", "mapping_lock", domain.domid)

        # MO5: the DID of domid (the pseudo domain ID for dom_io)
        rc5, new_hi = self.context_set_domain_id_v3(hi, domid, iommu, "MO5", domain)
        if rc5:
            return self._mo_unlock(iommu, prev_dom, "MO5")
        assert new_hi is not None
        hi = new_hi

        # MO6
        if prev_dom is None:
            hi = context_set_address_width(hi, level_to_agaw(iommu.nr_pt_levels))
            lo = context_set_fault_enable(lo)
            lo = context_set_present(lo)
        elif prev_dom is domain:
            # rc = !!pdev; goto unlock -- which still returns -EFAULT in stable-4.15 (D1)
            return self._mo_unlock(iommu, prev_dom, "MO6")

        # MO7
        if self.cpu_has_cx16:
            if self.fault("cmpxchg", "MO7", domain, pdev) < 0:
                if pdev is not None:
                    self.check_cleanup_domid_map(domain, pdev, iommu, "MO7")
                # 3ecdd44f28: the printk names (seg, bus, devfn), no pdev dereference.
                cur = iommu.entry(bus, devfn)
                self.log("MO7", "err",
                         f"{seg:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}: unexpected context entry "
                         f"{cur[1]:016x}_{cur[0]:016x} (expected {old[1]:016x}_{old[0]:016x})")
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
            rc = self.me_wifi_quirk_v3(domain, bus, devfn, domid, pgd_maddr, mode, "MO13")

        # MO14: no rollback of a rollback (MAP_ERROR_RECOVERY)
        if rc and not (mode & MAP_ERROR_RECOVERY):
            ret = self._mo14_rollback_v3(domain, iommu, bus, devfn, pdev, mode, prev_dom, rc)
            if not ret and pdev is not None and pdev.devfn == devfn:
                self.check_cleanup_domid_map(domain, pdev, iommu, "MO14")

        # MO15
        if prev_dom is not None:
            self._rcu_unlock(prev_dom, "MO15")
        if rc:
            return int(self.leave(rc, "MO15"))
        return int(self.leave(int(pdev is not None and prev_dom is not None), "MO15"))

    def _mo14_rollback_v3(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int,
                          pdev: PciDev | None, mode: int, prev_dom: XenDomain | None, rc: int) -> int:
        if prev_dom is None or (prev_dom is self.dom_io and pdev is None):
            # An entry dom_io held for a bridge or the ME phantom has no pdev
            # to take the pseudo domain ID and tables from: unmapped instead.
            self.emit(S.K_ROLLBACK_BEGIN, "MO14", rc, "MO14 unmap")
            ret = self.domain_context_unmap_one(domain, iommu, bus, devfn)
        else:
            # Re-map the previous owner once; the nested call carries
            # MAP_ERROR_RECOVERY and does not roll back itself.
            self.emit(S.K_ROLLBACK_BEGIN, "MO14", rc, "MO14 remap")
            if pdev is not None:
                p_domid, p_pgd = self.device_domid(prev_dom, pdev), self.device_pgtable(prev_dom, pdev)
            else:
                p_domid, p_pgd = prev_dom.domid, prev_dom.pgd_maddr
            ret = int(self.domain_context_mapping_one(prev_dom, iommu, bus, devfn, pdev,
                                                      (mode & MAP_WITH_RMRR) | MAP_ERROR_RECOVERY,
                                                      p_domid, p_pgd) < 0)
        self.emit(S.K_ROLLBACK_END, "MO14", ret)
        return ret

    # --- domain_context_unmap_one (UO1-UO7; UO4 gone) ---------------------------------------

    def domain_context_unmap_one(self, domain: XenDomain, iommu: VtdIommu, bus: int, devfn: int) -> int:
        self.enter("domain_context_unmap_one", "UO1", ("domain", domain.domid), ("iommu", iommu.index),
                   ("bus", bus), ("devfn", devfn))
        # UO1
        self.lock("UO1", "iommu->lock", iommu.index)
        self.bus_to_context_maddr(iommu, bus, "UO1")
        lo, hi = iommu.entry(bus, devfn)
        # UO2
        if not context_present(lo):
            self.unlock("UO2", "iommu->lock", iommu.index)
            return int(self.leave(0))

        # UO3: a5b52c357c -- the DID to flush is the one the entry held, read
        # before it is cleared; no lookup of the caller's DID, no -EINVAL.
        iommu_domid = context_domain_id(hi)
        self._store(iommu, bus, devfn, "lo", "plain", context_clear_present(lo), hi, "UO3")
        lo, hi = iommu.entry(bus, devfn)
        self._store(iommu, bus, devfn, "lo", "plain", 0, hi, "UO3")
        self._store(iommu, bus, devfn, "hi", "plain", 0, 0, "UO3")
        self.iommu_sync_cache(iommu, bus, devfn, "UO3")

        # UO5
        rc = self.iommu_flush_context_device(iommu, iommu_domid, sid(bus, devfn), 0, False, "UO5", domain)
        ret = self.iommu_flush_iotlb_dsi(iommu, iommu_domid, False, self.find_ats_dev_drhd(iommu), "UO5", domain)
        rc = self.combine_flush_rc(iommu, rc, ret, "UO5")
        self.unlock("UO5", "iommu->lock", iommu.index)

        # UO6
        if not iommu.segment and not rc:
            rc = self.me_wifi_quirk_v3(domain, bus, devfn, S.DOMID_INVALID, 0, UNMAP_ME_PHANTOM_FUNC, "UO6")

        # UO7
        if rc and not self.is_hardware_domain(domain) and domain is not self.dom_io:
            if domain.is_dying:
                self.log("UO7", "err", f"{self.pd(domain)}: error {rc} unmapping "
                         f"{iommu.segment:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}")
                rc = 0
            else:
                self.domain_crash(domain, "UO7")
        return int(self.leave(rc))

    # --- domain_context_mapping (DCM0-DCM3, P1-P5) ------------------------------------------------

    def domain_context_mapping(self, domain: XenDomain, devfn: int, pdev: PciDev) -> int:
        self.enter("domain_context_mapping", "DCM0", ("domain", domain.domid), ("devfn", devfn),
                   ("pdev", str(pdev)))
        pgd_maddr = self.device_pgtable(domain, pdev)
        orig_domid = pdev.pseudo_domid
        seg, bus = pdev.seg, pdev.bus
        iommu = self.acpi_find_matched_drhd_unit(pdev)
        if iommu is None:
            return int(self.leave(-ENODEV, "DCM0"))
        # DCM1: V3 sets no owner flag when the current owner is dom_io.
        mode = 0
        for _ in self.rmrrs_for(pdev.seg, pdev.bus, pdev.devfn):
            mode |= MAP_WITH_RMRR
            break
        if domain is not pdev.domain and pdev.domain is not None and pdev.domain is not self.dom_io:
            if pdev.domain.is_dying:
                mode |= MAP_OWNER_DYING
            elif not self.any_pdev_behind_iommu(pdev.domain, pdev, iommu) and not pdev.phantom_stride:
                mode |= MAP_SINGLE_DEVICE
        ret = 0
        t = pdev.type
        if t == "host-bridge":
            if not self.is_hardware_domain(domain):
                return int(self.leave(-EPERM, "DCM0"))
        elif t in ("pcie2pci-bridge", "legacy-pci-bridge"):
            pass
        elif t in ("pcie-endpoint", "pci"):
            # DCM2: the device's pseudo domain ID, on first mapping
            if self.knobs.quarantine and orig_domid == S.DOMID_INVALID:
                pdev.pseudo_domid = self.iommu_alloc_domid(pdev, iommu, "DCM2")
                if pdev.pseudo_domid == S.DOMID_INVALID:
                    return int(self.leave(-ENOSPC, "DCM2"))
            domid = self.device_domid(domain, pdev)
            if t == "pcie-endpoint":
                ret = self.domain_context_mapping_one(domain, iommu, bus, devfn, pdev, mode, domid, pgd_maddr)
                if ret > 0:
                    ret = 0
                if not ret and devfn == pdev.devfn and self.ats_device(pdev, iommu):
                    self.enable_ats_device(pdev, iommu, "DCM0")
            else:
                ret = self._dcm_pci_v3(domain, iommu, seg, bus, devfn, pdev, mode, domid, pgd_maddr)
        else:
            ret = -EINVAL
        # DCM3: a pseudo domain ID taken by this call goes back on failure
        if ret and orig_domid == S.DOMID_INVALID and pdev.pseudo_domid != S.DOMID_INVALID:
            self.iommu_free_domid(pdev, iommu, "DCM3")
        return int(self.leave(ret))

    def _dcm_pci_v3(self, domain: XenDomain, iommu: VtdIommu, seg: int, bus: int, devfn: int,
                    pdev: PciDev, mode: int, domid: int, pgd_maddr: int) -> int:
        # P1
        ret = self.domain_context_mapping_one(domain, iommu, bus, devfn, pdev, mode, domid, pgd_maddr)
        if ret < 0:
            return ret
        prev_present = bool(ret)
        # P2 (D2: the local bus/devfn become the bridge's)
        ret, bus, devfn, secbus = self.find_upstream_bridge(seg, bus, devfn, "P2")
        if ret < 1:
            if not ret:
                return 0
            ret = -ENXIO
        elif prev_present and (mode & MAP_WITH_RMRR) and domain is not pdev.domain:
            ret = -EOPNOTSUPP
        # P3
        if ret >= 0:
            ret = self.domain_context_mapping_one(domain, iommu, bus, devfn, None, mode, domid, pgd_maddr)
        # P4
        if not ret and self.pdev_type(seg, bus, devfn) == "pcie2pci-bridge" and \
                (secbus != pdev.bus or pdev.devfn != 0):
            assert secbus is not None
            ret = self.domain_context_mapping_one(domain, iommu, secbus, 0, None, mode, domid, pgd_maddr)
        # P5
        if ret:
            r: int | None
            if not prev_present:
                self.emit(S.K_ROLLBACK_BEGIN, "P5", ret, "P5 unmap")
                r = self.domain_context_unmap(domain, devfn, pdev)
            elif pdev.domain is not domain and pdev.domain is not None:
                self.emit(S.K_ROLLBACK_BEGIN, "P5", ret, "P5 remap")
                r = self.domain_context_mapping(pdev.domain, devfn, pdev)
            else:
                r = None
            if r is not None:
                self.emit(S.K_ROLLBACK_END, "P5", r)
        return ret

    # --- the ME WiFi quirk (vtd/quirks.c): domid and pgd_maddr passed through -----------------

    def me_wifi_quirk(self, domain: XenDomain, bus: int, devfn: int, mode: int, label: str) -> int:
        return self.me_wifi_quirk_v3(domain, bus, devfn, domain.domid, domain.pgd_maddr, mode, label)

    def me_wifi_quirk_v3(self, domain: XenDomain, bus: int, devfn: int, domid: int, pgd_maddr: int,
                         mode: int, label: str) -> int:
        me_dev = self._me_dev(bus, devfn)
        if me_dev is None:
            return 0
        self.enter("me_wifi_quirk", label, ("domain", domain.domid), ("bus", bus), ("devfn", devfn),
                   ("domid", domid), ("pgd_maddr", pgd_maddr), ("mode", mode))
        rc = self.fault("quirk", label, domain)
        if rc == 0:
            self.enter("map_me_phantom_function", label, ("domain", domain.domid), ("dev", me_dev),
                       ("domid", domid), ("pgd_maddr", pgd_maddr), ("mode", mode))
            me = self.pci_get_pdev(0, 0, me_dev << 3)
            assert me is not None
            iommu = self.acpi_find_matched_drhd_unit(me)
            assert iommu is not None
            if not (mode & UNMAP_ME_PHANTOM_FUNC):
                rc = self.domain_context_mapping_one(domain, iommu, 0, (me_dev << 3) | 7, None, mode,
                                                     domid, pgd_maddr)
            else:
                rc = self.domain_context_unmap_one(domain, iommu, 0, (me_dev << 3) | 7)
            rc = int(self.leave(rc))
        return int(self.leave(rc))

    # --- vtd/quirks.c: which ME phantom a WLAN device stands for (same C at every commit) ------

    def _me_dev(self, bus: int, devfn: int) -> int | None:
        host = self.conf_read_id(0, 0, 0)
        if host in IS_CTG:
            if self.conf_read_id(0, 0, 3 << 3) != 0xFFFF_FFFF and self.conf_read_id(0, bus, devfn) in CTG_WLAN:
                return 3
        elif host in IS_ILK or host in IS_CPT:
            if self.conf_read_id(0, 0, 22 << 3) != 0xFFFF_FFFF and \
                    self.conf_read_id(0, bus, devfn) in ILK_CPT_WLAN:
                return 22
        return None

    # --- pci.c -----------------------------------------------------------------------------------

    def iommu_quarantine_init(self) -> None:
        """V3 boot: dom_io gets its IOMMU state and nothing else; quarantine
        tables are built per device (iommu_quarantine_dev_init)."""
        self.enter("iommu_quarantine_init", "QI1")
        self.leave(0)

    def assign_device(self, d: XenDomain, seg: int, bus: int, devfn: int, flag: int) -> int:
        self.enter("assign_device", "AD1", ("domain", d.domid), ("seg", seg), ("bus", bus),
                   ("devfn", devfn), ("flag", flag))
        pdev = self.pci_get_pdev(seg, bus, devfn)
        assert pdev is not None
        rc = 0
        # AD3: a device leaving the hardware domain gets its quarantine tables
        # (and their DID) now, before any guest sees it.
        if pdev.domain is not self.dom_io:
            rc = self.iommu_quarantine_dev_init(pdev, "AD3")
        if not rc:
            rc = self.intel_iommu_assign_device(d, devfn, pdev, flag)
            if not rc:
                while pdev.phantom_stride:
                    devfn = (devfn + pdev.phantom_stride) & 0xFF
                    if (devfn >> 3) != (pdev.devfn >> 3):
                        break
                    self.intel_iommu_assign_device(d, devfn, pdev, flag)
                    rc = 0
        if rc:
            self.log("AD2", "warning", f"{self.pd(d)}: assign ({seg:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}) "
                     f"failed ({rc})")
        elif d is self.dom_io:
            pdev.quarantine = True
        return int(self.leave(rc, "AD2"))

    def deassign_device(self, d: XenDomain, seg: int, bus: int, devfn: int) -> int:
        self.enter("deassign_device", "DD1", ("domain", d.domid), ("seg", seg), ("bus", bus), ("devfn", devfn))
        pdev = self.pci_get_pdev(seg, bus, devfn)
        if pdev is None or pdev.domain is not d:
            return int(self.leave(-ENODEV))
        if (pdev.quarantine or self.knobs.quarantine) and pdev.domain is not self.dom_io:
            # DD3: (re)initialise the quarantine tables before going there
            ret = self.iommu_quarantine_dev_init(pdev, "DD3")
            if ret:
                return int(self.leave(ret, "DD3"))
            target = self.dom_io
        else:
            target = self.hardware_domain
        ret = 0
        while pdev.phantom_stride:
            devfn = (devfn + pdev.phantom_stride) & 0xFF
            if (devfn >> 3) != (pdev.devfn >> 3):
                break
            ret = self.reassign_device_ownership(d, target, devfn, pdev)
            if ret:
                break
        if not ret:
            devfn = pdev.devfn
            ret = self.reassign_device_ownership(d, target, devfn, pdev)
            if not ret and pdev.domain is self.hardware_domain:
                pdev.quarantine = False
        if ret:
            self.log("DD2", "err", f"{self.pd(d)}: deassign ({seg:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}) "
                     f"failed ({ret})")
        return int(self.leave(ret, "DD2"))

    def intel_iommu_remove_device(self, devfn: int, pdev: PciDev) -> int:
        self.enter("intel_iommu_remove_device", "PR1", ("devfn", devfn), ("pdev", str(pdev)))
        if pdev.domain is None:
            return int(self.leave(-EINVAL))
        ret = self.domain_context_unmap(pdev.domain, devfn, pdev)
        if ret:
            return int(self.leave(ret))
        # domain_context_unmap() returned the unit it found (ERR_PTR otherwise)
        drhd = self.acpi_find_matched_drhd_unit(pdev)
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            self.iommu_identity_mapping(pdev.domain, "x", r.base, r.end, 0, "PR1")
        # PR3: the device's quarantine tables and pseudo domain ID go
        self.quarantine_teardown(pdev, drhd, "PR3")
        if drhd is not None and pdev.pseudo_domid != S.DOMID_INVALID:
            self.iommu_free_domid(pdev, drhd, "PR3")
        return int(self.leave(0))

    # --- x86/iommu.c: pseudo domain IDs ----------------------------------------------------------

    def iommu_alloc_domid(self, pdev: PciDev, iommu: VtdIommu, label: str) -> int:
        """iommu_alloc_domid(iommu->pseudo_domid_map): the next clear index at
        or after a start shared by every IOMMU (static), wrapping once."""
        limit = 0xFFFF - S.DOMID_MASK      # UINT16_MAX - DOMID_MASK
        used = self.pseudo_domid_maps[iommu.index]
        idx = next((i for i in range(self.pseudo_start, limit) if i not in used), None)
        if idx is None:
            idx = next((i for i in range(limit) if i not in used), None)
        if idx is None:
            return S.DOMID_INVALID
        used.add(idx)
        self.pseudo_start = idx + 1
        domid = idx | (S.DOMID_MASK + 1)
        pdev.pseudo_domid = domid
        self.pseudo_holders[domid] = (pdev.seg, pdev.bdf16)
        self.emit(S.K_PSEUDO_DOMID, label, pdev.seg, pdev.bdf16, iommu.index, domid, 1)
        return domid

    def iommu_free_domid(self, pdev: PciDev, iommu: VtdIommu, label: str) -> None:
        domid = pdev.pseudo_domid
        if domid == S.DOMID_INVALID:
            return
        self.pseudo_domid_maps[iommu.index].discard(domid & S.DOMID_MASK)
        pdev.pseudo_domid = S.DOMID_INVALID
        self.pseudo_holders.pop(domid, None)
        self.emit(S.K_PSEUDO_DOMID, label, pdev.seg, pdev.bdf16, iommu.index, domid, 0)

    # --- live snapshot: the quarantine trees are dom_io's, per device ----------------------------

    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = super().canonical()
        if self.qpt_by_root:
            # as the trace names them: a root per owner name, ranges per (owner, range)
            out["pgd"] = tuple(sorted(out["pgd"] + tuple((d, q.pgd_maddr) for d, q in self.qpt_trees.items())))
            maps = {(q.domid, b, e): (acc, n) for q in self.qpt_by_root.values()
                    for (b, e), (acc, n) in q.identity_maps.items() if n > 0}
            out["idmaps"] = tuple(sorted(out["idmaps"] + tuple(
                (d, b, e, acc, n) for (d, b, e), (acc, n) in maps.items())))
        return out
