"""pci.c and the top level: boot (quarantine init, hardware-domain setup,
translation enable), the domctl assign/deassign paths, pci_release_devices
on domain destruction, pci_add_device / pci_remove_device."""

from __future__ import annotations

from .. import schema as S
from ..platform import Op, parse_bdf
from .context_one import ContextOneMixin
from .core import PciDev, XenDomain
from .did import DidMixin
from .flush import FlushMixin
from .mapping import MappingMixin
from .reassign import ReassignMixin

EINVAL, ENODEV, EBUSY = 22, 19, 16

# What a CPU waiting in domain_destroy waits for (Cpu.waiting_for).
RCU_GRACE = "an RCU grace period"


class PciMixin(ReassignMixin, MappingMixin, ContextOneMixin, FlushMixin, DidMixin):

    # --- boot (op 0) ------------------------------------------------------------

    def boot(self) -> None:
        self._op_begin(0, "boot", None, None)
        self.enter("boot", "BOOT")
        for d in sorted(self.domains.values(), key=lambda d: d.domid):
            d.created = True
            self.emit(S.K_DOMAIN_CREATE, "BOOT", d.domid)
        for dev in self.platform.devices:
            if dev.present:
                self._pdev_alloc(dev.seg, dev.bus, dev.devfn, "BOOT")
        if self.knobs.caching_mode:
            # CM=1: DID 0 is reserved -- bit 0 pre-set, map[0] left 0 (b111a41acd not in 4.15).
            for u in self.iommus:
                self._did_bit(u, 0, 1, "BOOT")
        # init_vtd_hw() ends with iommu_flush_all(), before quarantine init.
        if self.iommu_flush_all("BOOT"):
            self.log("BOOT", "warning", "[VT-D] IOMMU flush all failed")
        self.iommu_quarantine_init()
        self.intel_iommu_hwdom_init(self.hardware_domain)
        # Xen hands every device to the hardware domain first.  Devices the
        # scenario declares with another owner then move there the way the
        # toolstack does it, still within boot: dom_io by `xl
        # pci-assignable-add` (an assign to DOMID_IO), a guest by an assign.
        for dev in self.platform.devices:
            if dev.present and dev.owner != self.hardware_domain.name:
                pdev = self.pci_get_pdev(dev.seg, dev.bus, dev.devfn)
                assert pdev is not None   # present devices were allocated above
                self.cur_pdev = pdev
                self.lock("BOOT", "pcidevs_lock", None)
                self.assign_device(self.domain(dev.owner), pdev.seg, pdev.bus, pdev.devfn, 0)
                self.unlock("BOOT", "pcidevs_lock", None)
                self.cur_pdev = None
        self.leave(None)
        self._op_end(0)

    def _pdev_alloc(self, seg: int, bus: int, devfn: int, label: str) -> PciDev:
        """alloc_pdev(): a fresh struct pci_dev every time (a removed device
        that comes back starts without ATS, owner or quarantine mark)."""
        dev, _ = self._declared[(seg, bus, devfn)]
        pd = PciDev(dev.seg, dev.bus, dev.devfn, dev.type, dev.id32, dev.phantom_stride, dev.ats)
        self.pdevs[(seg, bus, devfn)] = pd
        self.emit(S.K_DEVICE_ADD, label, seg, (bus << 8) | devfn)
        return pd

    def iommu_quarantine_init(self) -> None:
        """Runs whatever iommu_quarantine says (4.15): dom_io's single
        read-only scratch tree."""
        self.enter("iommu_quarantine_init", "QI1")
        self.enter("intel_iommu_quarantine_init", "QI1", ("domain", S.DOMID_IO))
        self.lock("QI1", "mapping_lock", S.DOMID_IO)
        self._alloc_tree(self.dom_io, "quarantine", "QI1")
        self.unlock("QI1", "mapping_lock", S.DOMID_IO)
        # iommu_flush_iotlb_all(dom_io): no IOMMU in its iommu_bitmap yet -> nothing.
        self.leave(0)
        self.leave(0)

    def intel_iommu_hwdom_init(self, d: XenDomain) -> None:
        self.enter("intel_iommu_hwdom_init", "HW1", ("domain", d.domid))
        # setup_hwdom_pci_devices(): devices in the scenario's order.
        self.lock("HW1", "pcidevs_lock", None)
        for dev in self.platform.devices:
            if not dev.present:
                continue
            pdev = self.pci_get_pdev(dev.seg, dev.bus, dev.devfn)
            assert pdev is not None   # present devices were allocated at boot
            self.cur_pdev = pdev
            self._move_pdev(pdev, d, "HW1")
            self._setup_one_hwdom_device(d, pdev)
        self.cur_pdev = None
        self.unlock("HW1", "pcidevs_lock", None)
        self.setup_hwdom_rmrr(d)
        if self.iommu_flush_all("HW3"):
            self.log("HW3", "warning", "[VT-D] IOMMU flush all failed for hardware domain")
        for u in self.iommus:
            u.translation_enabled = True
            self.emit(S.K_TRANSLATION_ENABLE, "HW4", u.index)
        self.leave(None)

    def _setup_one_hwdom_device(self, d: XenDomain, pdev: PciDev) -> None:
        assert pdev.domain is not None   # _move_pdev() just made d its owner
        devfn = pdev.devfn
        while True:
            self.enter("setup_hwdom_device", "HW1", ("devfn", devfn), ("pdev", str(pdev)))
            err = self.leave(self.domain_context_mapping(pdev.domain, devfn, pdev))
            if err:
                self.log("HW1", "err", f"setup {pdev} for d{d.domid} failed ({err})")
                if devfn == pdev.devfn:
                    return
            devfn = (devfn + pdev.phantom_stride) & 0xFF
            if devfn == pdev.devfn or (devfn >> 3) != (pdev.devfn >> 3):
                break

    def setup_hwdom_rmrr(self, d: XenDomain) -> None:
        self.enter("setup_hwdom_rmrr", "HW2", ("domain", d.domid))
        self.lock("HW2", "pcidevs_lock", None)
        for r, scope in self._rmrr_scope:
            for _ in scope:   # for_each_rmrr_device visits every (rmrr, bdf) pair
                if self.iommu_identity_mapping(d, "rw", r.base, r.end, 0, "HW2"):
                    self.log("HW2", "err", "[VT-D]IOMMU: mapping reserved region failed")
        self.unlock("HW2", "pcidevs_lock", None)
        self.leave(None)

    # --- operations -----------------------------------------------------------

    def run_op(self, op: Op) -> int:
        self._op_begin(op.index, op.do, op.device, op.to or op.domain)
        try:
            rc: int = getattr(self, "op_" + op.do)(op)
        finally:
            self.cur_pdev = None
        self._op_end(rc)
        return rc

    def _op_begin(self, index: int, verb: str, device: str | None, domain: str | None) -> None:
        self.rec.op = index
        self.open_ops[self.rec.cpu] = index
        bdf: int | None
        sg: int | None
        if device:
            seg, bus, devfn = parse_bdf(device)
            bdf, sg = (bus << 8) | devfn, seg
        else:
            bdf = sg = None
        dom = self.domain(domain).domid if domain else None
        self.emit(S.K_OP_BEGIN, "", verb, bdf, dom, sg)

    def _op_end(self, rc: int) -> None:
        self.open_ops.pop(self.rec.cpu, None)
        self.emit(S.K_OP_END, "", rc)

    def _op_pdev(self, op: Op) -> tuple[PciDev | None, tuple[int, int, int]]:
        assert op.device is not None   # the scenario loader requires it for this verb
        seg, bus, devfn = parse_bdf(op.device)
        return self.pci_get_pdev(seg, bus, devfn), (seg, bus, devfn)

    def op_assign(self, op: Op) -> int:
        """XEN_DOMCTL_assign_device for `to`."""
        assert op.to is not None   # the scenario loader requires it for this verb
        d = self.domain(op.to)
        pdev, (seg, bus, devfn) = self._op_pdev(op)
        self.cur_pdev = pdev
        if d is self.hardware_domain:
            # The domctl refuses self-assignment; dom0 gets devices back by deassign.
            self.log("", "err", f"{self.pd(d)}: self-assignment of {op.device} refused")
            return -EINVAL
        if d.is_dying or d.destroyed:
            return -EINVAL
        self.lock("", "pcidevs_lock", None)
        # device_assigned()
        if pdev is None:
            rc = -ENODEV
        elif pdev.domain is not self.hardware_domain and pdev.domain is not self.dom_io:
            rc = -EBUSY
        else:
            rc = self.assign_device(d, seg, bus, devfn, 1 if op.relaxed else 0)
        self.unlock("", "pcidevs_lock", None)
        return rc

    def op_quarantine(self, op: Op) -> int:
        """`xl pci-assignable-add` with quarantine: assign to dom_io."""
        pdev, (seg, bus, devfn) = self._op_pdev(op)
        self.cur_pdev = pdev
        self.lock("", "pcidevs_lock", None)
        if pdev is None:
            rc = -ENODEV
        elif pdev.domain is not self.hardware_domain and pdev.domain is not self.dom_io:
            rc = -EBUSY
        else:
            rc = self.assign_device(self.dom_io, seg, bus, devfn, 0)
        self.unlock("", "pcidevs_lock", None)
        return rc

    def op_deassign(self, op: Op) -> int:
        """XEN_DOMCTL_deassign_device on the device's current owner."""
        pdev, (seg, bus, devfn) = self._op_pdev(op)
        self.cur_pdev = pdev
        if pdev is None or pdev.domain is None:
            return -ENODEV
        if pdev.domain is self.hardware_domain:
            # "Don't support self-deassignment of devices": the domctl is
            # issued by dom0, so d == current->domain.
            return -EINVAL
        self.lock("", "pcidevs_lock", None)
        rc = self.deassign_device(pdev.domain, seg, bus, devfn)
        self.unlock("", "pcidevs_lock", None)
        return rc

    def assign_device(self, d: XenDomain, seg: int, bus: int, devfn: int, flag: int) -> int:
        self.enter("assign_device", "AD1", ("domain", d.domid), ("seg", seg), ("bus", bus),
                   ("devfn", devfn), ("flag", flag))
        pdev = self.pci_get_pdev(seg, bus, devfn)
        assert pdev is not None   # every caller checked the device exists
        rc = self.intel_iommu_assign_device(d, devfn, pdev, flag)
        if not rc:
            # Phantom functions: `for ( ; stride; rc = 0 )` discards their errors (DERIVED).
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
        return self.leave(rc, "AD2")

    def deassign_device(self, d: XenDomain, seg: int, bus: int, devfn: int) -> int:
        self.enter("deassign_device", "DD1", ("domain", d.domid), ("seg", seg), ("bus", bus), ("devfn", devfn))
        pdev = self.pci_get_pdev(seg, bus, devfn)
        if pdev is None or pdev.domain is not d:
            return self.leave(-ENODEV)
        target = self.dom_io if ((pdev.quarantine or self.knobs.quarantine) and pdev.domain is not self.dom_io) \
            else self.hardware_domain
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
        return self.leave(ret, "DD2")

    def op_destroy(self, op: Op) -> int:
        """`xl destroy`: domain_kill (DK1-DK3), then, once the last
        reference is gone, domain_destroy, whose RCU callback
        complete_domain_destroy tears the IOMMU state down (DK4, DK5)."""
        assert op.domain is not None   # the scenario loader requires it for this verb
        d = self.domain(op.domain)
        if d.is_dying or d.destroyed or d is self.hardware_domain:
            return -EINVAL
        ret = self.domain_kill(d)
        self.domain_destroy(d)
        return ret

    def domain_kill(self, d: XenDomain) -> int:
        """DK1 is_dying; DK2 pci_release_devices; DK3 iommu_clear_root_pgtable.
        Like every C function above the VT-d code, it has no call event."""
        d.is_dying = True
        self.emit(S.K_DOMAIN_DYING, "DK1", d.domid)
        self.enter("pci_release_devices", "DK2", ("domain", d.domid))
        self.lock("DK2", "pcidevs_lock", None)
        ret = 0
        for pdev in list(d.pdevs):
            self.cur_pdev = pdev
            ret = self.deassign_device(d, pdev.seg, pdev.bus, pdev.devfn) or ret
        self.cur_pdev = None
        self.unlock("DK2", "pcidevs_lock", None)
        self.leave(ret)
        # iommu_clear_root_pgtable(): the tables go; entries still naming them stay.
        self.lock("DK3", "mapping_lock", d.domid)
        if d.pgd_maddr:
            maddr, d.pgd_maddr, d.pt_pages = d.pgd_maddr, 0, []
            self.emit(S.K_PT_FREE, "DK3", d.domid, maddr)
        self.unlock("DK3", "mapping_lock", d.domid)
        return ret

    def domain_destroy(self, d: XenDomain) -> None:
        """Unlink the domain from the domain list and hash (from here on
        rcu_lock_domain_by_id, MO3's lookup, fails for it), then
        call_rcu(complete_domain_destroy).

        The unlink is engine state only: no event, so a one-CPU trace is what
        it was before the split.  The callback runs on this CPU, as Xen runs
        an RCU callback on the CPU that queued it, once every other CPU has
        passed a quiescent state since the unlink: a CPU that is inside an
        operation begun before it may still hold a reference found by the
        lookup (MO3 to MO15).  The model runs it before this operation ends,
        so the teardown stays inside the destroy operation; with one CPU
        there is nobody to wait for."""
        d.unlinked = True
        if self.sched is not None:
            self._rcu_grace_period()
        self.complete_domain_destroy(d)

    def _rcu_grace_period(self) -> None:
        """Wait (spinning, not schedulable, a free switch) until every other
        CPU has been outside an operation since now: it has no op open, has
        no ops left, ended an op since, or itself waits for a grace period
        (in Xen its destroy hypercall has returned: a quiescent state)."""
        sched = self.sched
        assert sched is not None
        me = sched.current
        since = {c.index: c.quiescent for c in sched.cpus if c is not me}

        def passed() -> bool:
            return all(c.done or not c.in_op or c.quiescent > since[c.index] or c.waiting_for == RCU_GRACE
                       for c in sched.cpus if c is not me)

        if not passed():
            sched.wait_until(passed, RCU_GRACE)

    def complete_domain_destroy(self, d: XenDomain) -> None:
        """The RCU callback: arch_domain_destroy -> iommu_domain_destroy ->
        iommu_domain_teardown (DK4: identity maps dropped, cleanup_domid_map
        on every unit without any lock -- the XSA-399 setting); DK5 gone.
        With several CPUs its call event marks where the grace period ended."""
        if self.sched is not None:
            self.enter("complete_domain_destroy", "DK4", ("domain", d.domid))
        self.enter("iommu_domain_teardown", "DK4", ("domain", d.domid))
        for (b, e) in list(d.identity_maps):
            del d.identity_maps[(b, e)]
            self.emit(S.K_IDMAP_REMOVE, "DK4", d.domid, b, e, 0)
        for u in self.iommus:
            self.cleanup_domid_map(d, u, "DK4")
        self.leave(None)
        if self.sched is not None:
            self.leave(None)
        d.destroyed = True
        self.emit(S.K_DOMAIN_DESTROY, "DK5", d.domid)

    def op_add(self, op: Op) -> int:
        assert op.device is not None   # the scenario loader requires it for this verb
        seg, bus, devfn = parse_bdf(op.device)
        self.enter("pci_add_device", "PA1", ("seg", seg), ("bus", bus), ("devfn", devfn))
        self.lock("PA1", "pcidevs_lock", None)
        if (seg, bus, devfn) in self.pdevs:
            pdev = self.pdevs[(seg, bus, devfn)]
        else:
            pdev = self._pdev_alloc(seg, bus, devfn, "PA1")
        self.cur_pdev = pdev
        ret = 0
        if pdev.domain is None:
            # pdev->domain = hardware_domain before iommu_add_device(); the
            # list_add to its pdev list only after success.
            hw = self.hardware_domain
            pdev.domain = hw
            self.emit(S.K_OWNER_MOVE, "PA1", seg, pdev.bdf16, None, hw.domid)
            ret = self.iommu_add_device(pdev)
            if ret:
                pdev.domain = None
                self.emit(S.K_OWNER_MOVE, "PA2", seg, pdev.bdf16, hw.domid, None)
            else:
                hw.pdevs.insert(0, pdev)   # list_add: at the head
        self.unlock("PA1", "pcidevs_lock", None)
        return self.leave(ret)

    def iommu_add_device(self, pdev: PciDev) -> int:
        rc = self.intel_iommu_add_device(pdev.devfn, pdev)
        if rc or not pdev.phantom_stride:
            return rc
        devfn = pdev.devfn
        while True:
            devfn = (devfn + pdev.phantom_stride) & 0xFF
            if (devfn >> 3) != (pdev.devfn >> 3):
                return 0
            rc = self.intel_iommu_add_device(devfn, pdev)
            if rc:
                self.log("PA2", "warning", f"IOMMU: add {pdev} failed ({rc})")

    def intel_iommu_add_device(self, devfn: int, pdev: PciDev) -> int:
        self.enter("intel_iommu_add_device", "PA2", ("devfn", devfn), ("pdev", str(pdev)))
        assert pdev.domain is not None   # op_add() set the owner first
        # V1 and V2 both carry 3d65d2fa8b: RMRRs first, then the context.
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            if self.iommu_identity_mapping(pdev.domain, "rw", r.base, r.end, 0, "PA2"):
                self.log("PA2", "err", f"[VT-D]{self.pd(pdev.domain)}: RMRR mapping failed")
        ret = self.domain_context_mapping(pdev.domain, devfn, pdev)
        if ret:
            self.log("PA2", "err", f"[VT-D]{self.pd(pdev.domain)}: context mapping failed")
        return self.leave(ret)

    def op_remove(self, op: Op) -> int:
        assert op.device is not None   # the scenario loader requires it for this verb
        seg, bus, devfn = parse_bdf(op.device)
        self.enter("pci_remove_device", "PR1", ("seg", seg), ("bus", bus), ("devfn", devfn))
        self.lock("PR1", "pcidevs_lock", None)
        pdev = self.pdevs.get((seg, bus, devfn))
        ret = -ENODEV
        if pdev is not None:
            self.cur_pdev = pdev
            ret = self.iommu_remove_device(pdev) if pdev.domain is not None else -EINVAL
            if pdev.domain is not None:
                old = pdev.domain
                old.pdevs.remove(pdev)
                pdev.domain = None
                self.emit(S.K_OWNER_MOVE, "PR2", seg, pdev.bdf16, old.domid, None)
            del self.pdevs[(seg, bus, devfn)]
            self.emit(S.K_DEVICE_REMOVE, "PR2", seg, pdev.bdf16)
        self.unlock("PR1", "pcidevs_lock", None)
        return self.leave(ret)

    def iommu_remove_device(self, pdev: PciDev) -> int:
        devfn = pdev.devfn
        while pdev.phantom_stride:
            devfn = (devfn + pdev.phantom_stride) & 0xFF
            if (devfn >> 3) != (pdev.devfn >> 3):
                break
            rc = self.intel_iommu_remove_device(devfn, pdev)
            if rc:
                self.log("PR1", "err", f"IOMMU: remove {pdev} failed ({rc})")
                return rc
        return self.intel_iommu_remove_device(pdev.devfn, pdev)

    def intel_iommu_remove_device(self, devfn: int, pdev: PciDev) -> int:
        self.enter("intel_iommu_remove_device", "PR1", ("devfn", devfn), ("pdev", str(pdev)))
        assert pdev.domain is not None   # op_remove() calls it for owned devices only
        ret = self.domain_context_unmap(pdev.domain, devfn, pdev)
        if ret:
            return self.leave(ret)
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, devfn):
            self.iommu_identity_mapping(pdev.domain, "x", r.base, r.end, 0, "PR1")
        return self.leave(0)
