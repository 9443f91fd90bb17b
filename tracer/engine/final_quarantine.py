"""Per-device quarantine page tables of engine ``final`` (V3, b3ee746000;
26361 / aaa6102880 "IOMMU/x86: use per-device page tables for
quarantining"): iommu_quarantine_dev_init, intel_iommu_quarantine_init,
fill_qpt and quarantine_teardown.

Before the series dom_io had one quarantine tree, built at boot, whose every
slot led to one read-only scratch page, and it mapped no RMRR.  At
b3ee746000 each device that leaves the hardware domain gets its own tree
when it is assigned (or deassigned towards quarantine), built under
pcidevs_lock:

1. QD1 -- the tree exists already: the scratch leaf is cleared (whatever the
   device wrote to it while quarantined) and nothing else happens;
2. QD2 -- the root table is allocated;
3. QD3 -- ``context_set_domain_id(NULL, pseudo_domid, iommu)`` allocates the
   hardware DID of the device's pseudo domain ID up front: the DID stays
   allocated while the device exists, whoever owns it (only
   quarantine_teardown returns it);
4. QD4 -- with the root transiently installed as dom_io's, every RMRR of the
   device is identity-mapped read/write into it; the identity-map bookkeeping
   is then torn down (the mappings stay in the tables);
5. QD5 -- ``fill_qpt`` points every empty slot of every level at one shared
   next-level page (allocated once per level), ending at one read/write
   scratch leaf;
6. QD6 -- on failure the tables are torn down again.

The model records the tree as the pseudo domain ID's (pt-alloc, idmap-add,
pt-free carry it as the domain): that is the number its DID's domid_map slot
names, so the replay can tell one device's quarantine tables from another's
without knowing the engine.  The tables an RMRR identity map needs below the
root are not recorded as pages (as for every domain's identity maps here),
so on a unit with fewer than four levels the entry is modelled as using the
fill pages below pte[0] (DERIVED: with an RMRR below 512 GiB the C uses the
identity map's own table there).
"""

from __future__ import annotations

from typing import Any

from .. import schema as S
from . import Engine
from .context_one import EFAULT
from .core import PciDev, XenDomain
from .hw import VtdIommu, context_set_did

ENODEV, ENOMEM = 19, 12

# agaw_to_level(width_to_agaw(DEFAULT_DOMAIN_ADDRESS_WIDTH)) - 1: fill_qpt's first level
QPT_TOP_LEVEL = 3
_LEVEL_WHAT = {3: "quarantine-l3", 2: "quarantine-l2", 1: "quarantine-l1", 0: "scratch"}


class QuarantineEngine(Engine):
    """The V3 domain-ID helpers the quarantine tables need, and the tables;
    FinalEngine (final.py) builds on it."""

    def __init__(self, platform: Any, recorder: Any, *, variant: str, cx16: bool | None = None,
                 chooser: Any = None) -> None:
        super().__init__(platform, recorder, variant=variant, cx16=cx16, chooser=chooser)
        # iommu->pseudo_domid_map per unit (set indexes); iommu_alloc_domid's static start
        self.pseudo_domid_maps: dict[int, set[int]] = {u.index: set() for u in self.iommus}
        self.pseudo_start = 0
        # root maddr -> quarantine tree, from QD2 until quarantine_teardown (a
        # device whose removal failed leaves its tree behind, as in Xen)
        self.qpt_by_root: dict[int, XenDomain] = {}
        # the trees as the trace names them: by owner, the pseudo domain ID.  A
        # device whose pseudo domain ID was returned (its first mapping failed)
        # builds its tree as DOMID_INVALID's, as the C does; a second such tree
        # takes that name over, and freeing either drops the name.
        self.qpt_trees: dict[int, XenDomain] = {}

    # --- DID bookkeeping by domain ID (vtd/iommu.c at b3ee746000) -----------------------

    def get_iommu_did(self, domid: int, iommu: VtdIommu) -> int:
        """First set bitmap bit whose map slot is domid, else -1.  Callers in
        this model pass warn = false (cleanup_domid_map), so nothing is logged."""
        for i in sorted(iommu.domid_bitmap):
            if iommu.domid_map.get(i, 0) == domid:
                return int(i)
        return -1

    def context_set_domain_id_v3(self, hi: int | None, domid: int, iommu: VtdIommu, label: str,
                                 fault_domain: XenDomain) -> tuple[int, int | None]:
        """context_set_domain_id(context, domid, iommu): reuses domid's DID or
        takes the first clear bit; with context == NULL (hi None) it only
        obtains the DID.  Xen asserts pcidevs_locked() here (iommu->lock before)."""
        self.enter("context_set_domain_id", label, ("context", hi is not None), ("domid", domid),
                   ("iommu", iommu.index))
        found = self.get_iommu_did(domid, iommu)
        if found < 0:
            i = next((n for n in range(iommu.ndoms) if n not in iommu.domid_bitmap), None)
            if i is None or self.fault("did-alloc", label, fault_domain) < 0:
                self.log(label, "err", "[VT-D]IOMMU: no free domain ids")
                return self.leave(-EFAULT), hi
            self._did_map(iommu, i, domid, label)
        else:
            i = found
        self._did_bit(iommu, i, 1, label)
        if hi is not None:
            hi = context_set_did(hi, i, clear_first=True)
        self.leave(0)
        return 0, hi

    def cleanup_domid_map(self, d: XenDomain | int, iommu: VtdIommu, label: str) -> None:
        """cleanup_domid_map(domid, iommu): callers with a domain pass
        d->domain_id.  get_iommu_did(.., false): no log when nothing is found."""
        domid = d if isinstance(d, int) else d.domid
        self.enter("cleanup_domid_map", label, ("domid", domid), ("iommu", iommu.index))
        did = self.get_iommu_did(domid, iommu)
        if did >= 0:
            self._free_did(iommu, did, label)
        self.leave(None)

    # --- per-device quarantine page tables ---------------------------------------------------


    def iommu_quarantine_dev_init(self, pdev: PciDev, label: str) -> int:
        self.enter("iommu_quarantine_dev_init", label, ("dev", str(pdev)))
        if not self.knobs.quarantine:
            return int(self.leave(0))
        return int(self.leave(self.intel_iommu_quarantine_init(pdev)))

    def intel_iommu_quarantine_init(self, pdev: PciDev) -> int:
        self.enter("intel_iommu_quarantine_init", "QD1", ("pdev", str(pdev)))
        if pdev.qpt is not None:
            # QD1: clear_domain_page(leaf_mfn) -- memory contents, not modelled
            return int(self.leave(0, "QD1"))
        iommu = self.acpi_find_matched_drhd_unit(pdev)
        if iommu is None:
            return int(self.leave(-ENODEV, "QD1"))
        # QD2: the root (iommu_alloc_pgtable; the pgd-alloc fault point of dom_io)
        if self.fault("pgd-alloc", "QD2", self.dom_io, pdev) < 0:
            return int(self.leave(-ENOMEM, "QD2"))
        tree = XenDomain(pdev.pseudo_domid, "dom_io", created=True)
        self._qpt_page(pdev, tree, "quarantine", "QD2")
        # QD3: the pseudo domain ID's DID, without a context entry
        rc, _ = self.context_set_domain_id_v3(None, pdev.pseudo_domid, iommu, "QD3", self.dom_io)
        # QD4: RMRRs, read/write, through the transiently installed root
        for r, _ in self.rmrrs_for(pdev.seg, pdev.bus, pdev.devfn):
            if rc:
                break
            rc = self.iommu_identity_mapping(tree, "rw", r.base, r.end, 0, "QD4")
            if rc:
                self.log("QD4", "err", f"[VT-D]{pdev}: RMRR quarantine mapping failed")
        self.enter("iommu_identity_map_teardown", "QD4", ("domain", S.DOMID_IO))
        self.leave(None)
        # QD5
        if not rc:
            self.lock("QD5", "mapping_lock", S.DOMID_IO)
            pgs: dict[int, int] = {}
            rc = self.fill_qpt(pdev, tree, QPT_TOP_LEVEL, pgs)
            self.unlock("QD5", "mapping_lock", S.DOMID_IO)
        # QD6
        if rc:
            self.quarantine_teardown(pdev, iommu, "QD6")
        return int(self.leave(rc, "QD6" if rc else "QD5"))

    def _qpt_page(self, pdev: PciDev, tree: XenDomain, what: str, label: str) -> int:
        maddr = self.alloc_page(tree.domid)
        tree.pt_pages.append(maddr)
        if what == "quarantine":
            tree.pgd_maddr = maddr
            pdev.qpt = tree
            self.qpt_by_root[maddr] = tree
            self.qpt_trees[tree.domid] = tree
        self.emit(S.K_PT_ALLOC, label, tree.domid, maddr, what)
        return maddr

    def fill_qpt(self, pdev: PciDev, tree: XenDomain, level: int, pgs: dict[int, int]) -> int:
        """Every empty slot of the table at this level gets pgs[level] (read/
        write), allocated and filled on first need; slots already present (an
        RMRR identity map's tables) are descended into, which allocates
        nothing new."""
        self.enter("fill_qpt", "QD5", ("level", level))
        rc = 0
        if level not in pgs:
            pgs[level] = self._qpt_page(pdev, tree, _LEVEL_WHAT[level], "QD5")
            if level:
                rc = self.fill_qpt(pdev, tree, level - 1, pgs)
        return int(self.leave(rc))

    def quarantine_teardown(self, pdev: PciDev, iommu: VtdIommu | None, label: str) -> None:
        self.enter("quarantine_teardown", label, ("pdev", str(pdev)),
                   ("drhd", iommu.index if iommu is not None else None))
        tree = pdev.qpt
        if tree is None:
            self.leave(None)
            return
        # iommu_free_pgtables(): the pages, and the identity maps they held, go
        for (b, e) in list(tree.identity_maps):
            del tree.identity_maps[(b, e)]
            # the trace names the range by owner: a tree sharing the name
            # (DOMID_INVALID's) no longer shows it either
            for other in self.qpt_by_root.values():
                if other.domid == tree.domid:
                    other.identity_maps.pop((b, e), None)
            self.emit(S.K_IDMAP_REMOVE, label, tree.domid, b, e, 0)
        pdev.qpt = None
        del self.qpt_by_root[tree.pgd_maddr]
        self.qpt_trees.pop(tree.domid, None)
        self.emit(S.K_PT_FREE, label, tree.domid, tree.pgd_maddr)
        if iommu is not None:
            self.cleanup_domid_map(pdev.pseudo_domid, iommu, label)
        self.leave(None)

