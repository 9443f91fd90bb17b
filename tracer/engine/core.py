"""The engine's shared machinery: Xen's software state (domains, pdevs, DRHD
units), event emission with call frames and step labels, locks, the page
allocator and fault injection.  The Xen functions themselves live in the
sibling modules, one per concern, mixed into ``Engine`` (engine/__init__.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .. import schema as S
from ..canonical import canonical
from ..platform import (
    DEFAULT_ERRNO,
    ERRNO,
    IOMMU_TABLES_BASE,
    Device,
    Platform,
    Rmrr,
    domain_tables_base,
    fmt_bdf,
    parse_bdf,
)
from ..recorder import Recorder
from .hw import VtdIommu

if TYPE_CHECKING:
    from ..sched import Scheduler


# MO14 can ping-pong between two domains forever in the seed (fixed later by
# MAP_ERROR_RECOVERY).  The simulator stops the recursion at this depth.
MO14_DEPTH_CAP = 8

# RCU read-side domain references nest (the nested MO of the ME quirk takes
# the same domain again); spinlocks do not.
NESTABLE_LOCKS = ("rcu_domain",)

# What a lock is taken on: a domid, an IOMMU index, a segment, or nothing
# (the global pcidevs_lock).
LockTarget = int | None

_RC = TypeVar("_RC")


class EngineLimit(Exception):
    pass


@dataclass
class XenDomain:
    """struct domain + dom_iommu(d)."""

    domid: int
    name: str
    hardware: bool = False
    created: bool = False
    is_dying: bool = False
    unlinked: bool = False                  # domain_destroy took it off the domain list and hash
    destroyed: bool = False
    pgd_maddr: int = 0                      # hd->arch.vtd.pgd_maddr
    pt_pages: list[int] = field(default_factory=list)   # every page of its I/O tables
    iommu_bitmap: set[int] = field(default_factory=set)  # hd->arch.vtd.iommu_bitmap
    # (base, end) -> [access, count]; a list because the count is bumped in place.
    identity_maps: dict[tuple[int, int], list[Any]] = field(default_factory=dict)
    pdevs: list[PciDev] = field(default_factory=list)      # d->pdev_list (order matters)


@dataclass(eq=False)
class PciDev:
    """struct pci_dev."""

    seg: int
    bus: int
    devfn: int
    type: str
    id32: int
    phantom_stride: int
    ats: bool
    domain: XenDomain | None = None
    quarantine: bool = False
    ats_enabled: bool = False
    # pdev->arch (engine `final`): the pseudo domain ID and the quarantine page tables
    pseudo_domid: int = S.DOMID_INVALID
    qpt: XenDomain | None = None

    @property
    def bdf16(self) -> int:
        return (self.bus << 8) | self.devfn

    def __str__(self) -> str:
        return fmt_bdf(self.seg, self.bus, self.devfn)


@dataclass
class _Frame:
    func: str
    label: str


class EngineCore:
    """State and plumbing; see the mixins for the Xen functions."""

    variant = "?"

    def __init__(self, platform: Platform, recorder: Recorder, *, cx16: bool | None = None) -> None:
        self.platform = platform
        self.rec = recorder
        self.knobs = platform.knobs
        self.cpu_has_cx16 = platform.knobs.cx16 if cx16 is None else cx16
        self._next_page = IOMMU_TABLES_BASE
        # domain (pseudo domain ID) -> its next page-table page
        self._next_pt_page: dict[int, int] = {}
        self.stack: list[_Frame] = []
        self.locks: dict[tuple[str, LockTarget], int] = {}
        self._nest: dict[tuple[str, LockTarget], int] = {}
        # Several CPUs (tracer/sched.py): the scheduler swaps the per-CPU
        # attributes (sched.PER_CPU) when it switches CPU; these two are the
        # machine's view of every CPU.
        self.sched: Scheduler | None = None
        self.open_ops: dict[int, int] = {}                  # cpu -> its open op
        self.waits: dict[int, tuple[str, LockTarget]] = {}   # cpu -> the lock it spins on
        self._fault_counts: dict[int, int] = {}
        self.cur_pdev: PciDev | None = None     # the device the current op is about
        self.mo14_depth = 0
        # pseudo domain ID -> (seg, bdf16) of the device it was allocated for,
        # until it is returned (engine `final`; it outlives a pdev whose
        # removal failed, as the pseudo-ID bitmap bit does)
        self.pseudo_holders: dict[int, tuple[int, int]] = {}

        # Domains: scenario domains plus dom_io (dom_xen owns hidden devices; none here).
        self.domains: dict[int, XenDomain] = {}
        for d in platform.domains:
            self.domains[d.id] = XenDomain(d.id, d.name, hardware=d.hardware)
        self.dom_io = XenDomain(S.DOMID_IO, "dom_io")
        self.domains[S.DOMID_IO] = self.dom_io
        self.hardware_domain = next(d for d in self.domains.values() if d.hardware)
        self._domain_by_name = {d.name: d for d in self.domains.values()}

        # DRHD units.
        self.iommus: list[VtdIommu] = []
        for u in platform.iommus:
            self.iommus.append(VtdIommu(
                index=u.id, segment=u.segment, nr_pt_levels=u.levels, ndoms=u.ndoms,
                caching_mode=platform.knobs.caching_mode, rwbf=platform.knobs.rwbf,
                coherent=platform.knobs.coherent, root_maddr=self.alloc_page()))
        self._iommu_by_id = {u.index: u for u in self.iommus}
        self._drhd_scope = {u.id: set(u.devices) for u in platform.iommus}
        self._drhd_all = {u.segment: u.id for u in platform.iommus if u.include_all}

        # PCI devices (all declared ones; `present` ones exist from boot).
        self.pdevs: dict[tuple[int, int, int], PciDev] = {}
        self._declared: dict[tuple[int, int, int], tuple[Device, PciDev]] = {}
        for dev in platform.devices:
            pd = PciDev(dev.seg, dev.bus, dev.devfn, dev.type, dev.id32, dev.phantom_stride, dev.ats)
            self._declared[(dev.seg, dev.bus, dev.devfn)] = (dev, pd)
        # bus2bridge: secondary..subordinate bus -> the bridge's (bus, devfn)
        self.bus2bridge: dict[tuple[int, int], tuple[int, int]] = {}
        for dev in platform.devices:
            if dev.type in ("pcie2pci-bridge", "legacy-pci-bridge") and dev.secondary is not None:
                sub = dev.subordinate if dev.subordinate is not None else dev.secondary
                for b in range(dev.secondary, sub + 1):
                    self.bus2bridge[(dev.seg, b)] = (dev.bus, dev.devfn)
        self.rmrrs = platform.rmrrs
        self._rmrr_scope = [
            (r, [parse_bdf(b) for b in r.devices]) for r in platform.rmrrs
        ]

    # --- lookups ------------------------------------------------------------

    def domain(self, name: str) -> XenDomain:
        return self._domain_by_name[name]

    def is_hardware_domain(self, d: XenDomain | None) -> bool:
        return d is self.hardware_domain

    def pci_get_pdev(self, seg: int, bus: int, devfn: int) -> PciDev | None:
        return self.pdevs.get((seg, bus, devfn))

    def acpi_find_matched_drhd_unit(self, pdev: PciDev) -> VtdIommu | None:
        """DRHD whose device scope lists the device (or the bridge above it),
        else the segment's INCLUDE_PCI_ALL unit."""
        bdfs = [fmt_bdf(pdev.seg, pdev.bus, pdev.devfn)]
        bus = pdev.bus
        seen = 0
        while (pdev.seg, bus) in self.bus2bridge and seen < 256:
            bbus, bdevfn = self.bus2bridge[(pdev.seg, bus)]
            bdfs.append(fmt_bdf(pdev.seg, bbus, bdevfn))
            bus = bbus
            seen += 1
        for uid, scope in self._drhd_scope.items():
            if any(b in scope for b in bdfs):
                return self._iommu_by_id[uid]
        all_uid = self._drhd_all.get(pdev.seg)
        return self._iommu_by_id[all_uid] if all_uid is not None else None

    def upstream_walk(self, seg: int, bus: int, devfn: int) -> tuple[int, int, int, int | None]:
        """find_upstream_bridge's walk up bus2bridge, without its lock or
        any event: (1, bridge bus, bridge devfn, its secondary bus), or -1
        after 256 steps (a loop), or (0, bus, devfn, None) with no bridge."""
        secbus = None
        ret = 0
        cnt = 0
        while (seg, bus) in self.bus2bridge:
            ret = 1
            secbus = bus
            bus, devfn = self.bus2bridge[(seg, bus)]
            cnt += 1
            if cnt > 256:
                ret = -1
                break
        return ret, bus, devfn, secbus

    def conf_read_id(self, seg: int, bus: int, devfn: int) -> int:
        """pci_conf_read32(sbdf, 0): 0xffffffff where nothing answers."""
        entry = self._declared.get((seg, bus, devfn))
        if entry is None or (seg, bus, devfn) not in self.pdevs:
            return 0xFFFF_FFFF
        return entry[1].id32

    def pdev_type(self, seg: int, bus: int, devfn: int) -> str | None:
        entry = self._declared.get((seg, bus, devfn))
        return entry[1].type if entry else None

    def rmrrs_for(self, seg: int, bus: int, devfn: int) -> Iterator[tuple[Rmrr, int]]:
        """for_each_rmrr_device() filtered on (seg, bus, devfn)."""
        for r, scope in self._rmrr_scope:
            for s, b, df in scope:
                if r.segment == seg and s == seg and b == bus and df == devfn:
                    yield r, len(scope)

    def any_pdev_behind_iommu(self, d: XenDomain, exclude: PciDev | None, iommu: VtdIommu) -> bool:
        for pdev in d.pdevs:
            if pdev is exclude:
                continue
            if self.acpi_find_matched_drhd_unit(pdev) is iommu:
                return True
        return False

    def has_arch_pdevs(self, d: XenDomain) -> bool:
        return bool(d.pdevs)

    def alloc_page(self, owner: int | None = None) -> int:
        """A 4 KiB page: a unit's table (owner None) or a page table of
        domain/pseudo domain ID `owner` (see IOMMU_TABLES_BASE)."""
        if owner is None:
            maddr = self._next_page
            self._next_page += 0x1000
            return maddr
        maddr = self._next_pt_page.get(owner, domain_tables_base(owner))
        self._next_pt_page[owner] = maddr + 0x1000
        return maddr

    # --- events -------------------------------------------------------------

    @property
    def func(self) -> str:
        return self.stack[-1].func if self.stack else ""

    def emit(self, kind: int, label: str, *fields: object) -> None:
        if self.stack:
            self.stack[-1].label = label
            func = self.stack[-1].func
        else:
            func = ""
        self.rec.emit(kind, func, label, *fields)

    def enter(self, func: str, label: str, *args: tuple[str, object]) -> None:
        """Function entry: args as (name, value) pairs in C parameter order."""
        self.stack.append(_Frame(func, label))
        self.rec.emit(S.K_CALL, func, label, [list(a) for a in args])

    def leave(self, rc: _RC, label: str | None = None) -> _RC:
        # Pop first: the live state after the `return` event has the frame gone,
        # exactly as the replay sees it.
        frame = self.stack.pop()
        lab = label if label is not None else frame.label
        self.rec.emit(S.K_RETURN, frame.func, lab, rc)
        return rc

    def log(self, label: str, level: str, text: str) -> None:
        self.emit(S.K_LOG, label, level, text)

    def lock(self, label: str, name: str, target: LockTarget) -> None:
        key = (name, target)
        holder = self.locks.get(key)
        if holder is not None and holder != self.rec.cpu and name not in NESTABLE_LOCKS:
            # Another CPU holds the spin lock: spin (visible as lock-wait) until it is free.
            if self.sched is None:
                raise EngineLimit(f"{name} {target} held by CPU {holder}")
            self.waits[self.rec.cpu] = key
            self.emit(S.K_LOCK_WAIT, label, name, target, holder)
            self.sched.wait_until(lambda: key not in self.locks, f"{name} {target} (held by CPU {holder})")
            del self.waits[self.rec.cpu]
        if key in self.locks:
            if name not in NESTABLE_LOCKS:
                # Xen spinlocks are not recursive: this would deadlock.
                raise EngineLimit(f"recursive acquisition of {name} {target}")
            self._nest[key] += 1
        else:
            self.locks[key] = self.rec.cpu
            self._nest[key] = 1
        self.emit(S.K_LOCK, label, name, target)

    def unlock(self, label: str, name: str, target: LockTarget) -> None:
        key = (name, target)
        self._nest[key] -= 1
        if not self._nest[key]:
            del self.locks[key]
            del self._nest[key]
        self.emit(S.K_UNLOCK, label, name, target)

    def cpu_stacks(self) -> dict[int, list[str]]:
        """Every CPU's call stack (function names, outermost first)."""
        if self.sched is None:
            return {self.rec.cpu: [f.func for f in self.stack]}
        out = {}
        for c in self.sched.cpus:
            frames = self.stack if c is self.sched.current else c.saved.get("stack", [])
            out[c.index] = [f.func for f in frames]
        return out

    # --- DMA (the scenario's [[dma]] sources; engine/dma.py) ---------------

    def dma_ready(self) -> list[int]:
        """Indices of the DMA sources that may be issued at this point."""
        return []

    def issue_dma(self, index: int) -> None:
        raise EngineLimit(f"DMA source {index} cannot be issued by this engine")

    def dma_state_key(self) -> object:
        """What the engine keeps for DMA that no event shows (its cache
        contents): hashable, for the explorer's state key."""
        return ()

    def pcidevs_locked(self) -> bool:
        return ("pcidevs_lock", None) in self.locks

    # --- fault injection ----------------------------------------------------

    def fault(self, point: str, label: str, domain: XenDomain | None = None,
              pdev: PciDev | None = None) -> int:
        """0, or the -errno a scenario [[fault]] injects at this occurrence."""
        pdev = pdev if pdev is not None else self.cur_pdev
        dev_bdf = str(pdev) if pdev is not None else None
        fired = None
        for i, f in enumerate(self.platform.faults):
            if f.at != point:
                continue
            if f.domain is not None and (domain is None or domain.name != f.domain):
                continue
            if f.device is not None and f.device != dev_bdf:
                continue
            # Every matching [[fault]] counts this occurrence, fired or not.
            n = self._fault_counts.get(i, 0) + 1
            self._fault_counts[i] = n
            if n == f.nth and fired is None:
                fired = (ERRNO[f.errno or DEFAULT_ERRNO[point]], n)
        if fired is not None:
            self.emit(S.K_FAULT_INJECT, label, point, -fired[0], fired[1])
            return -fired[0]
        return 0

    # --- live snapshot ------------------------------------------------------

    def canonical(self) -> dict[str, Any]:
        ctx: dict[tuple[int, int, int], tuple[int, int]] = {}
        root: dict[tuple[int, int], int] = {}
        bitmap: dict[int, set[int]] = {}
        dmap: dict[tuple[int, int], int] = {}
        for u in self.iommus:
            for (b, df), v in u.ctx.items():
                ctx[(u.index, b, df)] = v
            for b, lo in u.root.items():
                root[(u.index, b)] = lo
            bitmap[u.index] = u.domid_bitmap
            for did, dom in u.domid_map.items():
                dmap[(u.index, did)] = dom
        live = [d for d in self.domains.values() if not d.destroyed]
        idmaps: dict[tuple[int, int, int], tuple[str, int]] = {}
        for d in live:
            for (b, e), (acc, cnt) in d.identity_maps.items():
                idmaps[(d.domid, b, e)] = (acc, cnt)
        return canonical(
            ctx=ctx, root=root, did_bitmap=bitmap, did_map=dmap,
            iommu_bitmap={d.domid: d.iommu_bitmap for d in live},
            pgd={d.domid: d.pgd_maddr for d in live if d.pgd_maddr},
            idmaps=idmaps,
            owners={(p.seg, p.bdf16): p.domain.domid for p in self.pdevs.values() if p.domain},
            ats=[(p.seg, p.bdf16) for p in self.pdevs.values() if p.ats_enabled],
            domains={d.domid: ("dying" if d.is_dying else "alive") for d in live if d.created},
            translation=[u.index for u in self.iommus if u.translation_enabled],
            pseudo=self.pseudo_holders,
            locks=self.locks,
            stacks=self.cpu_stacks(),
            ops=self.open_ops,
            waits=self.waits,
        )
