"""The platform a scenario describes: DRHD units, PCI devices, RMRRs, domains,
knobs, operations and injected faults.  Plain data; the scenario loader
(``tracer.scenario``) builds it from TOML and the engine consumes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .schema import DOMID_IO

DEVICE_TYPES = ("pcie-endpoint", "pci", "pcie2pci-bridge", "legacy-pci-bridge", "host-bridge")
BRIDGE_TYPES = ("pcie2pci-bridge", "legacy-pci-bridge")
OP_VERBS = ("assign", "deassign", "quarantine", "destroy", "add", "remove")
FAULT_POINTS = ("pgd-alloc", "did-alloc", "flush-context", "flush-iotlb", "quirk", "cmpxchg", "rmrr-map")

ERRNO = {
    "EPERM": 1, "ENOENT": 2, "ESRCH": 3, "EIO": 5, "ENXIO": 6, "ENOMEM": 12, "EFAULT": 14,
    "EBUSY": 16, "ENODEV": 19, "EINVAL": 22, "ENOSPC": 28, "EOPNOTSUPP": 95,
    "EADDRINUSE": 98, "ETIMEDOUT": 110, "EILSEQ": 84,
}
ERRNO_NAME = {v: k for k, v in ERRNO.items()}

# What Xen returns at each fault point when the scenario does not say.
DEFAULT_ERRNO = {
    "pgd-alloc": "ENOMEM",
    "did-alloc": "EFAULT",
    "flush-context": "ETIMEDOUT",
    "flush-iotlb": "ETIMEDOUT",
    "quirk": "ENODEV",
    "cmpxchg": "EILSEQ",
    "rmrr-map": "ENOMEM",
}

# Where the simulated allocator hands out 4 KiB pages (deterministic, and the
# same rule as the real-code engine's stand-in allocator (xenc), so that the same
# table has the same address whichever code allocated it): a unit's root and
# context tables from IOMMU_TABLES_BASE in allocation order; the page tables
# of domain (or pseudo domain ID) d from domain_tables_base(d) in allocation
# order -- the domain ID reads in the address: dom0's pgd is 0x10000000000,
# dom_io's first quarantine table 0x17ff1000000.
IOMMU_TABLES_BASE = 0x1_0000_0000
DOMAIN_TABLES_BASE = 0x100_0000_0000
DOMAIN_TABLES_SHIFT = 24          # 16 MiB (4096 pages) per domain


def domain_tables_base(domid: int) -> int:
    return DOMAIN_TABLES_BASE + (domid << DOMAIN_TABLES_SHIFT)


# vtd/quirks.c me_wifi_quirk(): host-bridge ids of 0:0.0 (device << 16 |
# vendor, as pci_conf_read32 returns them) and the WLAN ids whose mapping also
# maps the ME phantom function.  Shared by the engine and the replay topology.
def _intel_ids(*devs: int) -> frozenset[int]:
    return frozenset((d << 16) | 0x8086 for d in devs)


IS_CTG = frozenset({0x2A408086})
IS_ILK = frozenset({0x00408086, 0x00448086, 0x00628086, 0x006A8086})
IS_CPT = frozenset({0x01008086, 0x01048086})
CTG_WLAN = _intel_ids(0x4232, 0x4235, 0x4236, 0x4237, 0x423A, 0x423B, 0x423C, 0x423D)
ILK_CPT_WLAN = _intel_ids(0x0087, 0x0089, 0x0082, 0x0085, 0x008F, 0x0090, 0x0091, 0x4238, 0x422B, 0x422C)

_BDF_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{2}):([0-1][0-9a-fA-F])\.([0-7])$")


def parse_bdf(text: object, *, short_ok: bool = False) -> tuple[int, int, int]:
    """'SSSS:BB:DD.F' -> (seg, bus, devfn); ValueError when malformed.
    short_ok: 'BB:DD.F' too, segment 0 implied (as lspci prints a device of
    segment 0) -- for BDFs a user types; files keep the full form."""
    if short_ok and isinstance(text, str) and text.count(":") == 1:
        text = "0000:" + text
    m = _BDF_RE.match(text) if isinstance(text, str) else None
    if not m:
        like = "0000:00:14.0 or 00:14.0" if short_ok else "0000:00:14.0"
        raise ValueError(f"expected a BDF like {like}, got {text!r}")
    seg, bus, dev = (int(m.group(i), 16) for i in (1, 2, 3))
    fn = int(m.group(4))
    if dev > 0x1F:
        raise ValueError(f"device number {dev:#x} out of range in {text!r}")
    return seg, bus, (dev << 3) | fn


def try_parse_bdf(text: object) -> tuple[int, int, int] | None:
    """Like parse_bdf() but None when malformed, and tolerant of short hex
    fields: for trace headers, which are untrusted input read by replay."""
    if not isinstance(text, str):
        return None
    try:
        seg_s, bus_s, rest = text.split(":")
        dev_s, fn_s = rest.split(".")
        seg, bus, dev, fn = int(seg_s, 16), int(bus_s, 16), int(dev_s, 16), int(fn_s)
    except ValueError:
        return None
    if not (0 <= seg <= 0xFFFF and 0 <= bus <= 0xFF and 0 <= dev <= 0x1F and 0 <= fn <= 7):
        return None
    return seg, bus, (dev << 3) | fn


def fmt_bdf(seg: int, bus: int, devfn: int) -> str:
    return f"{seg:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"


def fmt_rid(seg: int, rid: int) -> str:
    return fmt_bdf(seg, rid >> 8, rid & 0xFF)


@dataclass
class Knobs:
    cx16: bool = True
    cx16_source: str = "default"      # default | scenario | command line
    caching_mode: bool = False        # CAP.CM
    coherent: bool = True             # ECAP.C
    quarantine: bool = False          # iommu_quarantine
    ats: bool = False                 # ats_enabled
    rwbf: bool = False                # CAP.RWBF (or rwbf_quirk)
    hwdom_passthrough: bool = False   # iommu_hwdom_passthrough
    # cleanup_domid_map as fixed by aafd4f1df0 (XSA-399); False: the order
    # before it.  An engine option (--no-xsa399-fix), not a scenario key.
    xsa399_fix: bool = True


@dataclass
class IommuUnit:
    id: int
    segment: int = 0
    include_all: bool = False
    devices: list[str] = field(default_factory=list)   # DRHD device scope (BDF strings)
    nd: int = 2                                        # raw CAP.ND
    levels: int = 4                                    # nr_pt_levels

    @property
    def ndoms(self) -> int:
        return 1 << (4 + 2 * self.nd)


@dataclass
class Device:
    bdf: str
    seg: int
    bus: int
    devfn: int
    type: str
    vendor: int = 0x8086
    device: int = 0
    phantom_stride: int = 0
    ats: bool = False
    owner: str = "dom0"
    present: bool = True
    secondary: int | None = None
    subordinate: int | None = None

    @property
    def bdf16(self) -> int:
        return (self.bus << 8) | self.devfn

    @property
    def id32(self) -> int:
        """Xen's pci_conf_read32(PCI_VENDOR_ID) value: device << 16 | vendor."""
        return (self.device << 16) | self.vendor


@dataclass
class Rmrr:
    base: int
    end: int            # inclusive
    segment: int = 0
    devices: list[str] = field(default_factory=list)


@dataclass
class Domain:
    name: str
    id: int
    hardware: bool = False


@dataclass
class Op:
    index: int          # 1-based, the op id in events
    do: str
    device: str | None = None
    to: str | None = None
    domain: str | None = None
    relaxed: bool = False   # XEN_DOMCTL_DEV_RDM_RELAXED
    cpu: int = 0            # the CPU that issues it (ops on one CPU run in listed order)


@dataclass
class Fault:
    at: str
    domain: str | None = None
    device: str | None = None
    nth: int = 1
    errno: str = ""


@dataclass
class DmaSource:
    """One ``[[dma]]`` of a scenario: a device that may issue one DMA.
    ``iova`` is the page it touches (its RMRR's first page when the
    scenario says ``rmrr``); ``at`` None lets the explorer issue it at any
    scheduling point, else only after the event with that (op, step label)."""

    name: str
    device: str                       # canonical BDF
    iova: int
    rmrr: bool                        # the scenario said target = "rmrr"
    write: bool
    at: tuple[int, str] | None = None

    @property
    def access(self) -> str:
        return "write" if self.write else "read"

    def to_header(self) -> dict[str, Any]:
        """The header's ``platform.dma`` entry: at is [op, step] or None."""
        return {"name": self.name, "device": self.device, "iova": self.iova, "access": self.access,
                "at": list(self.at) if self.at is not None else None}


@dataclass
class Platform:
    name: str
    description: str
    knobs: Knobs
    iommus: list[IommuUnit]
    devices: list[Device]
    rmrrs: list[Rmrr]
    domains: list[Domain]
    ops: list[Op]
    faults: list[Fault]
    dma: list[DmaSource] = field(default_factory=list)   # devices that DMA ([[dma]])
    source_name: str = ""       # file name of the scenario (no directory)
    source_text: str = ""       # the scenario file's content, verbatim

    @property
    def cpus(self) -> int:
        """How many CPUs the scenario uses (1 + the highest op cpu)."""
        return 1 + max((op.cpu for op in self.ops), default=0)

    def device_by_bdf(self, bdf: str) -> Device:
        for d in self.devices:
            if d.bdf == bdf:
                return d
        raise KeyError(bdf)

    def to_header(self) -> dict[str, Any]:
        """A platform summary for the trace header (deterministic, msgpack-able)."""
        out = {
            "knobs": {
                "cx16": self.knobs.cx16, "cx16_source": self.knobs.cx16_source,
                "caching_mode": self.knobs.caching_mode, "coherent": self.knobs.coherent,
                "quarantine": self.knobs.quarantine, "ats": self.knobs.ats,
                "rwbf": self.knobs.rwbf, "hwdom_passthrough": self.knobs.hwdom_passthrough,
            },
            "iommus": [
                {"id": u.id, "segment": u.segment, "include_all": u.include_all,
                 "devices": list(u.devices), "nd": u.nd, "ndoms": u.ndoms, "levels": u.levels}
                for u in self.iommus
            ],
            "devices": [
                {"bdf": d.bdf, "type": d.type, "id": f"{d.vendor:04x}:{d.device:04x}",
                 "phantom_stride": d.phantom_stride, "ats": d.ats, "owner": d.owner,
                 "present": d.present, "secondary": d.secondary, "subordinate": d.subordinate}
                for d in self.devices
            ],
            "rmrrs": [
                {"base": r.base, "end": r.end, "segment": r.segment, "devices": list(r.devices)}
                for r in self.rmrrs
            ],
            "domains": [[d.id, d.name, d.hardware] for d in self.domains] + [[DOMID_IO, "dom_io", False]],
        }
        # Only a scenario with [[dma]] has the entry: the headers of the
        # others stay as they were (absent = no DMA sources).
        if self.dma:
            out["dma"] = [s.to_header() for s in self.dma]
        return out
