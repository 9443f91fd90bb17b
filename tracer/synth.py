"""Large realistic traces: the real engine driven through a long random but
valid workload (`vtdtrace synth`).

The platform is generated from the seed: several DRHD units (one dedicated
to an IGD), PCIe endpoints (some with RMRRs, some with phantom functions),
legacy PCI devices behind PCIe-to-PCI bridges, a CPT host bridge with an ME
so the WLAN quirk fires, ATS-capable endpoints behind each of three units
with ATS on (`ats=1`: every entry is of type device-IOTLB and the replay
tracks what the ATS devices' device-TLBs may hold), and a pool of guest
domains.  Its size follows the requested length (``sizing``): booting maps
every device and creates every domain, so a short trace gets fewer of both
and is still mostly operations; from 10^6 events it is the full platform
(8 endpoints per unit, three PCI devices, 4000 guests).  Operations
are drawn one at a time from the live state, so every one is valid when it is
issued: assign a dom0/dom_io device to a live guest, deassign a guest's
device, quarantine a dom0 device, destroy a guest.  Now and then a fault is
armed for the next operation (page-table ENOMEM, DID exhaustion, flush and
quirk failures), so error and rollback paths appear too.
"""

from __future__ import annotations

import random
from typing import Any

from .engine import Engine
from .engine.core import XenDomain
from .platform import Device, Domain, Fault, IommuUnit, Knobs, Op, Platform, Rmrr, fmt_bdf
from .record import make_header
from .recorder import Recorder, Sink

GUESTS = 4000           # the pool of a long trace (10^6 events and more)
MIN_GUESTS = 8
EVENTS_PER_GUEST = 250  # booting creates every domain: ~1.3 events each
# Bumped whenever the generated workload changes for the same seed, so that
# caches of synth traces (bench/.cache) are not reused across versions.
# 2: ATS on, two ATS endpoints per unit.  3: the guest pool scales with the length.
SYNTH_VERSION = 3
FAULT_RATE = 0.03


def _dev(seg: int, bus: int, devfn: int, type_: str, vid: int, did: int, **kw: Any) -> Device:
    return Device(fmt_bdf(seg, bus, devfn), seg, bus, devfn, type_, vid, did, **kw)


# The endpoints behind each of the three generic units, by their index k on
# the unit's buses: k == 3 has phantom functions, k in (5, 6) are ATS devices.
ALL_ENDPOINTS = tuple(range(8))
# A short trace keeps a phantom and an ATS endpoint per unit (the plain kind
# is among the fixed devices: WLAN, xHCI, EHCI, IGD): booting
# maps every device for dom0 at ~40 events each, which for the full platform
# (34 devices) is ~1350 events -- all of a 1000-event trace.
FEW_ENDPOINTS = (3, 5)
FULL_PLATFORM_EVENTS = 20_000


def guests_for(n_events: int) -> int:
    """The guest pool for a trace of n_events: one guest per 250 events,
    between 8 and 4000.  A short trace is then mostly operations, not the
    boot of thousands of domains it never uses (a workload creates a guest
    only when fewer than six are live, so a 10^5-event trace uses ~120 and
    a 10^6-event one stays well inside its 4000, the fixed pool it had)."""
    return max(MIN_GUESTS, min(GUESTS, n_events // EVENTS_PER_GUEST))


def sizing(n_events: int) -> dict[str, Any]:
    """synth_platform's size arguments for a trace of n_events: fewer
    guests and endpoints for a short trace, so that most of it is operations
    (every device kind and fault still appears); from FULL_PLATFORM_EVENTS
    on, every endpoint, and from 10^6 events the platform of SYNTH_VERSION 2."""
    full = n_events >= FULL_PLATFORM_EVENTS
    return {"guests": guests_for(n_events), "endpoints": ALL_ENDPOINTS if full else FEW_ENDPOINTS,
            "pci_slots": 3 if full else 1}


def synth_platform(seed: int, cx16: bool = True, guests: int = GUESTS, endpoints: tuple[int, ...] = ALL_ENDPOINTS,
                   pci_slots: int = 3) -> Platform:
    rng = random.Random(seed)
    devices = [
        _dev(0, 0, 0, "host-bridge", 0x8086, 0x0104),           # Cougar Point host bridge
        _dev(0, 0, 2 << 3, "pcie-endpoint", 0x8086, 0x0126),    # IGD, own DRHD
        _dev(0, 0, 22 << 3, "pcie-endpoint", 0x8086, 0x1C3A),   # ME
        _dev(0, 0, 0x14 << 3, "pcie-endpoint", 0x8086, 0x1E31),  # xHCI, RMRR
        _dev(0, 0, 0x1A << 3, "pcie-endpoint", 0x8086, 0x1E2D),  # EHCI, RMRR
        _dev(0, 0, 0x1E << 3, "pcie2pci-bridge", 0x8086, 0x244E, secondary=0x10),
        _dev(0, 3, 0, "pcie-endpoint", 0x8086, 0x0087),          # Kilmer Peak WLAN
    ]
    for slot in range(1, pci_slots + 1):
        devices.append(_dev(0, 0x10, slot << 3, "pci", 0x10EC, 0x8139))
    units = [IommuUnit(0, devices=["0000:00:02.0"], nd=2), IommuUnit(1, devices=["0000:00:16.0"], nd=1)]
    for u in range(2, 5):
        bus0 = 0x20 + (u - 2) * 0x10
        units.append(IommuUnit(u, devices=[], nd=rng.choice((1, 2)), levels=rng.choice((3, 4))))
        for k in endpoints:
            bus = bus0 + k
            stride = 4 if k == 3 else 0
            dev = _dev(0, bus, 0, "pcie-endpoint", 0x8086, 0x1500 + k, phantom_stride=stride,
                       ats=k in (5, 6))
            devices.append(dev)
            units[-1].devices.append(dev.bdf)
    units.append(IommuUnit(5, include_all=True, nd=2))
    rmrrs = [
        Rmrr(0xD5D45000, 0xD5D45FFF, devices=["0000:00:14.0"]),
        Rmrr(0xD5D46000, 0xD5D46FFF, devices=["0000:00:1a.0"]),
        Rmrr(0x8B800000, 0x8FFFFFFF, devices=["0000:00:02.0"]),
        Rmrr(0xE0000000, 0xE0000FFF, devices=["0000:10:01.0"]),
    ]
    domains = [Domain("dom0", 0, True)] + [Domain(f"guest{i}", i) for i in range(1, guests + 1)]
    return Platform(
        name=f"synth-{seed}",
        description=f"random valid workload, seed {seed}",
        knobs=Knobs(cx16=cx16, cx16_source="command line", quarantine=False, ats=True),
        iommus=units, devices=devices, rmrrs=rmrrs, domains=domains, ops=[], faults=[],
        source_name="", source_text=f"# generated by vtdtrace synth --seed {seed}\n",
    )


class _Workload:
    def __init__(self, engine: Engine, rng: random.Random, guests: int = GUESTS) -> None:
        self.e = engine
        self.rng = rng
        self.guests = guests
        self.next_guest = 1
        self.live: list[XenDomain] = []
        self.movable = [p for p in engine.pdevs.values()
                        if p.type in ("pcie-endpoint", "pci") and p.devfn != (22 << 3)]

    def _guest(self) -> XenDomain | None:
        if not self.live or (len(self.live) < 6 and self.rng.random() < 0.3):
            if self.next_guest <= self.guests:
                d = self.e.domain(f"guest{self.next_guest}")
                self.next_guest += 1
                self.live.append(d)
        return self.rng.choice(self.live) if self.live else None

    def next_op(self, index: int) -> Op | None:
        rng, e = self.rng, self.e
        r = rng.random()
        if r < 0.06 and len(self.live) > 2:
            d = self.live.pop(rng.randrange(len(self.live)))
            return Op(index, "destroy", domain=d.name)
        pdev = rng.choice(self.movable)
        bdf = str(pdev)
        owner = pdev.domain
        if owner is e.hardware_domain:
            if r < 0.15:
                return Op(index, "quarantine", device=bdf)
            g = self._guest()
            return Op(index, "assign", device=bdf, to=g.name) if g else None
        if owner is e.dom_io:
            g = self._guest()
            if r < 0.5 and g is not None:
                return Op(index, "assign", device=bdf, to=g.name)
            return Op(index, "deassign", device=bdf)
        if owner is not None:
            return Op(index, "deassign", device=bdf)
        return None

    def arm_fault(self, op: Op) -> None:
        point = self.rng.choice(("pgd-alloc", "did-alloc", "flush-context", "flush-iotlb", "cmpxchg", "rmrr-map"))
        kw = {"domain": op.to} if op.to and point in ("pgd-alloc", "did-alloc", "rmrr-map") else {}
        self.e.platform.faults = [Fault(at=point, nth=1, errno="", **kw)]
        self.e._fault_counts.clear()


def synth(n_events: int, seed: int, sink: Sink, variant: str = "direct", cx16: bool = True) -> tuple[int, int]:
    """Run until at least n_events were emitted; returns (events, ops)."""
    size = sizing(n_events)
    platform = synth_platform(seed, cx16, **size)
    rng = random.Random(seed ^ 0x5EED)
    rec = Recorder(sink)
    engine = Engine(platform, rec, variant=variant)
    engine.boot()
    work = _Workload(engine, rng, size["guests"])
    index = 0
    while rec.seq < n_events:
        op = work.next_op(index + 1)
        if op is None:
            continue
        index += 1
        if rng.random() < FAULT_RATE:
            work.arm_fault(op)
        engine.run_op(op)
        platform.faults = []
        engine._fault_counts.clear()
    return rec.seq, index


def synth_header(seed: int, variant: str, cx16: bool, n_events: int) -> dict[str, Any]:
    platform = synth_platform(seed, cx16, **sizing(n_events))
    header = make_header(platform, variant)
    header["scenario"]["synth"] = {"seed": seed, "events": n_events}
    return header
