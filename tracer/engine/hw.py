"""VT-d hardware structures: legacy root and context entries with the real
bit layout (Intel VT-d specification, root and context entries; Xen
vtd/iommu.h; docs/MODEL.md#context-entry), and one DRHD unit's state.

Context entry (128 bits, two u64 halves as in Xen's ``struct context_entry``):

    lo[0]      P        present
    lo[1]      FPD      fault processing disable
    lo[3:2]    TT       0 multi-level, 1 device-IOTLB, 2 pass-through
    lo[63:12]  SLPTPTR  second-level page-table pointer
    hi[2:0]    AW       address width (AGAW = levels - 2)
    hi[23:8]   DID      domain identifier
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import PciDev

PAGE_MASK_4K = 0xFFFF_FFFF_FFFF_F000
U64 = 0xFFFF_FFFF_FFFF_FFFF

CONTEXT_TT_MULTI_LEVEL = 0
CONTEXT_TT_DEV_IOTLB = 1
CONTEXT_TT_PASS_THRU = 2

DID_FIELD_WIDTH = 16
DID_HIGH_OFFSET = 8
DID_MASK = ((1 << DID_FIELD_WIDTH) - 1) << DID_HIGH_OFFSET


# --- accessors (Xen's macros, on (lo, hi) tuples) ------------------------------

def context_present(lo: int) -> bool:
    return bool(lo & 1)


def context_fault_disable(lo: int) -> int:
    return (lo >> 1) & 1


def context_translation_type(lo: int) -> int:
    return (lo >> 2) & 3


def context_address_root(lo: int) -> int:
    return lo & PAGE_MASK_4K


def context_address_width(hi: int) -> int:
    return hi & 7


def context_domain_id(hi: int) -> int:
    return (hi >> DID_HIGH_OFFSET) & ((1 << DID_FIELD_WIDTH) - 1)


# --- setters: return the new half ---------------------------------------------

def context_set_present(lo: int) -> int:
    return lo | 1


def context_clear_present(lo: int) -> int:
    return lo & ~1 & U64


def context_set_fault_enable(lo: int) -> int:
    # Xen: (c).lo &= (((u64)-1) << 2) | 1  -- clears FPD (bit 1)
    return lo & (((U64 << 2) & U64) | 1)


def context_set_translation_type(lo: int, tt: int) -> int:
    return (lo & ~0xC & U64) | ((tt & 3) << 2)


def context_set_address_root(lo: int, maddr: int) -> int:
    return (lo & 0xFFF) | (maddr & PAGE_MASK_4K)


def context_set_address_width(hi: int, agaw: int) -> int:
    # Xen: (c).hi &= 0xfffffff8; (c).hi |= (val) & 7 -- the AND with a 32-bit
    # constant also zeroes hi[63:32] (reserved, so harmless).
    return (hi & 0xFFFF_FFF8) | (agaw & 7)


def context_set_did(hi: int, did: int, clear_first: bool) -> int:
    """The DID store of context_set_domain_id(); the seed added the clear."""
    if clear_first:
        hi &= ~DID_MASK & U64
    return hi | ((did & ((1 << DID_FIELD_WIDTH) - 1)) << DID_HIGH_OFFSET)


def level_to_agaw(levels: int) -> int:
    return levels - 2


def root_entry(ctp: int) -> int:
    """Root entry lo: P | context-table pointer."""
    return (ctp & PAGE_MASK_4K) | 1


def sid(bus: int, devfn: int) -> int:
    """PCI_BDF2(bus, devfn): the source-id used by flushes."""
    return ((bus & 0xFF) << 8) | (devfn & 0xFF)


@dataclass
class VtdIommu:
    """struct vtd_iommu: one DRHD unit."""

    index: int
    segment: int
    nr_pt_levels: int
    ndoms: int
    caching_mode: bool
    rwbf: bool
    coherent: bool
    root_maddr: int
    # root[bus] -> lo; ctx[(bus, devfn)] -> (lo, hi); only entries ever written
    root: dict[int, int] = field(default_factory=dict)
    ctx_table: dict[int, int] = field(default_factory=dict)   # bus -> context-table maddr
    ctx: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    domid_bitmap: set[int] = field(default_factory=set)
    domid_map: dict[int, int] = field(default_factory=dict)   # did -> domid; absent = 0 (zero-filled)
    ats_devices: list[PciDev] = field(default_factory=list)  # pdevs with ATS enabled, newest first (list_add)
    # On ats_dev_drhd_units: added by ats_device() and never removed, which is
    # what find_ats_dev_drhd() (flush_dev_iotlb for every flush) tests.
    ats_unit: bool = False
    translation_enabled: bool = False

    def entry(self, bus: int, devfn: int) -> tuple[int, int]:
        return self.ctx.get((bus, devfn), (0, 0))
