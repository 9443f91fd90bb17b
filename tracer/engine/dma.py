"""DMA as an actor: a scenario's ``[[dma]]`` sources translated the way the
VT-d hardware translates a request, from the engine's state
(docs/MODEL.md#dma-translation).

A source issues at most one DMA per run, at a scheduling point the
scheduler offers it (tracer/sched.py, choice ``d``).  Its translation:

1. **Requester ID on the wire.**  The device's own (bus, devfn); a
   conventional PCI device behind bridges is seen with the ID of the
   topmost bridge (its own for a conventional PCI bridge, the alias
   (secondary bus, 00.0) for a PCIe-to-PCI bridge) -- the definition the
   replay's owner-mismatch analysis uses (replay/hazards/owner.py), tested
   equal.
2. **Unit, root entry.**  The device's DRHD unit; a root entry that is not
   present faults (reason 1).
3. **Context entry** (choice ``x``): the entry in memory, or the value the
   context cache holds for the requester ID.  Not present: fault 2; TT = 3
   (reserved): fault 3; TT = pass-through: the hardware domain's page at the
   IOVA, nothing cached.
4. **Device-TLB** (choice ``a``, devices with ATS enabled): a value the
   device's ATC holds lets it send a *translated* request, which the unit
   accepts only if the entry has TT = device-IOTLB (else fault 0xD).
   Otherwise a device with ATS enabled and TT = device-IOTLB asks the unit
   (a translation request) and caches the answer in its ATC.
5. **IOTLB** (choice ``t``): the translation tagged (DID, IOVA page), or a
   walk of the tables at SLPTPTR (tracer/hostmem.py says which host page and
   whose), cached under the entry's DID.  The event's ``pt_root`` is the
   tables the translation came from: for a cache hit, those it was filled
   from.
6. **Permission**: a write to a page without write permission faults
   (reason 5), a read without read permission (reason 6).

**The cache model.**  The options of a choice are what earlier DMAs of this
run actually loaded into the caches, emptied where the engine's own flushes
invalidate them (tracer/engine/flush.py calls the ``dma_*_flushed`` methods
with the granularity the flush event records, before the event, so a DMA
issued right after it sees the cache as the flush left it).  One value per
tag, as in hardware.  A cached value is offered only when it would give a
different outcome than the lookup without it (equal outcomes make no
different run); not taking it means the cache had evicted it, so a lookup
that does not use a held value drops it (and loads the new one).  This is
a subset of what the replay says a cache *may* hold (replay/caches.py),
which also counts values no modelled DMA loaded.
Paging-structure caches are not modelled: an IOTLB miss walks the tables as
they are now.

The ``dma`` event is emitted directly through the recorder, with no frame
and the step label ``DMA``: it is not part of any Xen function.
"""

from __future__ import annotations

from typing import NamedTuple

from .. import hostmem
from .. import schema as S
from ..platform import DmaSource, parse_bdf
from .core import EngineCore, PciDev, XenDomain
from .hw import (
    CONTEXT_TT_DEV_IOTLB,
    CONTEXT_TT_PASS_THRU,
    VtdIommu,
    context_address_root,
    context_domain_id,
    context_present,
    context_translation_type,
)

# VT-d non-recoverable fault reasons (Intel VT-d specification, "Fault
# Reasons"), the numbering the dma event's `fault` field uses.
FR_ROOT_NOT_PRESENT = 0x1
FR_CONTEXT_NOT_PRESENT = 0x2
FR_CONTEXT_INVALID = 0x3
FR_WRITE = 0x5
FR_READ = 0x6
FR_TRANSLATED_BLOCKED = 0xD
FAULT_REASONS = {
    FR_ROOT_NOT_PRESENT: "root entry not present",
    FR_CONTEXT_NOT_PRESENT: "context entry not present",
    FR_CONTEXT_INVALID: "invalid context entry (reserved translation type)",
    FR_WRITE: "write to a page without write permission",
    FR_READ: "read of a page without read permission",
    FR_TRANSLATED_BLOCKED: "translated request blocked (entry is not TT = device-IOTLB)",
}

PAGE_MASK = hostmem.PAGE_MASK_4K
_TT_RESERVED = 3

# cache keys: context cache (unit, bus, devfn); IOTLB (unit, did, iova page);
# device-TLB (unit, seg, bdf16, iova page)
CcKey = tuple[int, int, int]
TlbKey = tuple[int, int, int]
AtcKey = tuple[int, int, int, int]


class Fill(NamedTuple):
    """A cached translation: the leaf, and the tables it was walked from."""

    leaf: hostmem.Leaf
    root: int


class Outcome(NamedTuple):
    via: str
    ctx: tuple[int, int]
    did: int | None
    pt_root: int
    host: int | None
    owner: int | None
    fault: int


class DmaMixin(EngineCore):

    def _dma_init(self) -> None:
        self.cc: dict[CcKey, tuple[int, int]] = {}
        self.iotlb: dict[TlbKey, Fill] = {}
        self.atc: dict[AtcKey, Fill] = {}
        self.dma_issued: set[int] = set()      # sources issued so far (one DMA each per run)

    # --- the scheduler's hooks ------------------------------------------------

    def dma_ready(self) -> list[int]:
        """Sources not issued yet whose device is present, on a unit with
        translation enabled, and whose `at` (if any) names the last event's
        op and step."""
        out = []
        last = (self.rec.last_op, self.rec.last_label)
        for i, src in enumerate(self.platform.dma):
            if i in self.dma_issued or (src.at is not None and src.at != last):
                continue
            pdev = self.pci_get_pdev(*parse_bdf(src.device))
            if pdev is None:
                continue
            iommu = self.acpi_find_matched_drhd_unit(pdev)
            if iommu is None or not iommu.translation_enabled:
                continue
            out.append(i)
        return out

    def dma_state_key(self) -> object:
        """The sources issued and the cache model: two runs that agree on it
        (and on everything the events show) translate every later DMA alike."""
        return (tuple(sorted(self.dma_issued)), tuple(sorted(self.cc.items())),
                tuple(sorted(self.iotlb.items())), tuple(sorted(self.atc.items())))

    def issue_dma(self, index: int) -> None:
        src = self.platform.dma[index]
        self.dma_issued.add(index)
        pdev = self.pci_get_pdev(*parse_bdf(src.device))
        assert pdev is not None        # dma_ready() checked it
        iommu = self.acpi_find_matched_drhd_unit(pdev)
        assert iommu is not None
        bus, devfn = self.wire_rid(pdev)
        out = self.translate(src, pdev, iommu, bus, devfn)
        last = (self.rec.last_op, self.rec.last_label)
        self.rec.emit(S.K_DMA, "", "DMA", src.name, pdev.seg, pdev.bdf16, (bus << 8) | devfn, iommu.index,
                      src.iova, src.write, out.via, out.ctx[0], out.ctx[1], out.did, out.pt_root, out.host,
                      out.owner, out.fault)
        # a source's `at` names an engine step, not the DMA: another source
        # waiting for the same step may still go at this point
        self.rec.last_op, self.rec.last_label = last

    # --- translation ---------------------------------------------------------------

    def wire_rid(self, pdev: PciDev) -> tuple[int, int]:
        """(bus, devfn) the device's requests carry (find_upstream_bridge's
        walk, without its lock: nothing is recorded)."""
        if pdev.type != "pci" or pdev.bus == 0:
            return pdev.bus, pdev.devfn
        _, bus, devfn, secbus = self.upstream_walk(pdev.seg, pdev.bus, pdev.devfn)
        if secbus is None:
            return pdev.bus, pdev.devfn
        if self.pdev_type(pdev.seg, bus, devfn) == "pcie2pci-bridge":
            return secbus, 0
        return bus, devfn

    def _choose(self, kind: str, n: int) -> int:
        return self.sched.cache_choice(kind, n) if self.sched is not None and n > 1 else 0

    def translate(self, src: DmaSource, pdev: PciDev, iommu: VtdIommu, bus: int, devfn: int) -> Outcome:
        u = iommu.index
        iova = src.iova & PAGE_MASK
        if not iommu.root.get(bus, 0) & 1:
            return Outcome("none", (0, 0), None, 0, None, None, FR_ROOT_NOT_PRESENT)
        # 3. the context entry
        mem = iommu.entry(bus, devfn)
        cached = self.cc.get((u, bus, devfn))
        via = "memory"
        lo, hi = mem
        if cached is not None and cached != mem:
            if self._choose("x", 2):
                lo, hi = cached
                via = "context-cache"
            else:
                # a unit that holds a value uses it: not using it means it was evicted
                del self.cc[(u, bus, devfn)]
        if not context_present(lo):
            return Outcome(via, (lo, hi), None, 0, None, None, FR_CONTEXT_NOT_PRESENT)
        # Present entries are what the unit caches (CM = 0 never caches a
        # not-present one; under CM = 1 the fault is the same either way).
        self.cc[(u, bus, devfn)] = (lo, hi)
        did = context_domain_id(hi)
        tt = context_translation_type(lo)
        if tt == _TT_RESERVED:
            return Outcome(via, (lo, hi), did, 0, None, None, FR_CONTEXT_INVALID)
        if tt == CONTEXT_TT_PASS_THRU:
            leaf = hostmem.passthrough_leaf(self.hardware_domain.domid, iova)
            return self._outcome(via, (lo, hi), did, 0, leaf, src.write)
        root = context_address_root(lo)
        # 4. the device's own ATC
        akey = (u, pdev.seg, pdev.bdf16, iova)
        ats = pdev.ats_enabled and tt == CONTEXT_TT_DEV_IOTLB
        held = self.atc.get(akey)
        if held is not None:
            blocked = tt != CONTEXT_TT_DEV_IOTLB
            if blocked or held.leaf != self.walk(root, iova):
                if self._choose("a", 2):
                    if blocked:
                        return Outcome("device-tlb", (lo, hi), did, held.root, None, None, FR_TRANSLATED_BLOCKED)
                    return self._outcome("device-tlb", (lo, hi), did, held.root, held.leaf, src.write)
                del self.atc[akey]      # not used: evicted (refilled below if the device may)
        # 5./6. the IOTLB, or a walk
        fill, hit = self._lookup(u, did, root, iova)
        if ats:
            self.atc[akey] = fill
        return self._outcome("iotlb" if hit else via, (lo, hi), did, fill.root, fill.leaf, src.write)

    def _lookup(self, u: int, did: int, root: int, iova: int) -> tuple[Fill, bool]:
        tag = (u, did, iova)
        walked = Fill(self.walk(root, iova), root)
        held = self.iotlb.get(tag)
        if held is not None and held.leaf != walked.leaf and self._choose("t", 2):
            return held, True
        self.iotlb[tag] = walked
        return walked, False

    @staticmethod
    def _outcome(via: str, ctx: tuple[int, int], did: int, root: int, leaf: hostmem.Leaf, write: bool) -> Outcome:
        if write and not leaf.write:
            return Outcome(via, ctx, did, root, None, None, FR_WRITE)
        if not write and not leaf.read:
            return Outcome(via, ctx, did, root, None, None, FR_READ)
        return Outcome(via, ctx, did, root, leaf.host, hostmem.owner_of(leaf.host), 0)

    def _trees(self) -> list[tuple[XenDomain, bool]]:
        """Every live page-table tree, with whether it is a quarantine tree."""
        out = [(d, d is self.dom_io) for d in self.domains.values() if d.pt_pages]
        qpt = getattr(self, "qpt_trees", None)      # engine `final`: per-device trees
        if qpt:
            out.extend((t, True) for t in qpt.values() if t.pt_pages)
        return out

    def walk(self, root: int, iova: int) -> hostmem.Leaf:
        """The tables at SLPTPTR root, for one IOVA page (tracer/hostmem.py)."""
        for tree, quarantine in self._trees():
            if root not in tree.pt_pages:
                continue
            idmaps = [(b, e, acc) for (b, e), (acc, _n) in tree.identity_maps.items()]
            if quarantine:
                # 4.15's shared dom_io tree is read-only; final's per-device
                # trees map their scratch page read/write
                return hostmem.quarantine_leaf(tree.domid, tree.pt_pages[-1], tree is not self.dom_io,
                                               iova, idmaps)
            return hostmem.domain_leaf(tree.domid, iova, idmaps)
        return hostmem.freed_leaf(root)

    # --- invalidation (called by tracer/engine/flush.py before its event) ----------

    def dma_context_flushed(self, u: int, gran: str, did: int, sid: int, fm: int) -> None:
        if gran == "global":
            drop = [k for k in self.cc if k[0] == u]
        elif gran == "domain":
            drop = [k for k, (_lo, hi) in self.cc.items() if k[0] == u and context_domain_id(hi) == did]
        else:
            # the function mask ignores the low 0-3 bits of the function number
            mask = (0, 1, 3, 7)[fm & 3]
            drop = [k for k in self.cc if k[0] == u and k[1] == sid >> 8 and (k[2] & ~mask) == (sid & 0xFF & ~mask)]
        for k in drop:
            del self.cc[k]

    def dma_iotlb_flushed(self, u: int, gran: str, did: int, addr: int, order: int) -> None:
        if gran == "global":
            drop = [k for k in self.iotlb if k[0] == u]
        elif gran == "dsi":
            drop = [k for k in self.iotlb if k[0] == u and k[1] == did]
        else:
            lo, hi = addr & PAGE_MASK, (addr & PAGE_MASK) + (0x1000 << order)
            drop = [k for k in self.iotlb if k[0] == u and k[1] == did and lo <= k[2] < hi]
        for k in drop:
            del self.iotlb[k]

    def dma_dev_iotlb_flushed(self, u: int, pdev: PciDev) -> None:
        for k in [k for k in self.atc if k[0] == u and k[1] == pdev.seg and k[2] == pdev.bdf16]:
            del self.atc[k]
