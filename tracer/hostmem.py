"""Symbolic host memory: which host page a DMA reaches, and whose it is
(docs/MODEL.md#dma-translation).

The engine models page tables as whole trees, not entry by entry, so the
pages behind them are symbolic.  Every domain's I/O page tables map every
IOVA page to a host page *of that domain*; the page number carries its owner,
so "whose memory did this DMA reach" is a function of the page alone:

    host = HOST_OWNED | domid << 47 | frame          (an owned page)
    host = iova                                       (firmware memory)

``frame`` is the IOVA page for a domain's ordinary memory (an identity
guest-physical layout is enough to tell pages of one domain apart), and the
scratch page's machine address for a quarantine tree; a domid takes 16 bits
(engine ``final``'s pseudo domain IDs have bit 15 set), so frames keep 47
bits and a scenario's IOVAs stay below 2^47.  Bit 63 is never set in an
IOVA, so the two forms cannot collide.

The cases, for a page walked through tables owned by ``owner``:

* an identity map of that domain (an RMRR, ``idmap-add``) covering the IOVA:
  the host page *is* the IOVA, firmware-reserved memory that belongs to no
  domain (owner None), readable, writable only if mapped ``rw``;
* a quarantine tree: its scratch page -- 4.15's shared ``dom_io`` tree
  maps it read-only (a write faults), engine ``final``'s per-device tree
  read/write, owned by the device's pseudo domain;
* tables that were freed (``pt-free``) went back to Xen's heap: whatever a
  walk through them reaches is Xen's (``DOMID_XEN``);
* anything else: the owner's page at that IOVA, read/write.

A pass-through entry (TT = 2) translates nothing: the IOVA is the hardware
domain's own address, its page at that IOVA.

Pure functions of their arguments: the engine (tracer/engine/dma.py) and
the replay (replay/hazards/dma.py) share them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .schema import DOMID_XEN

HOST_OWNED = 1 << 63
_DOMID_SHIFT = 47
_DOMID_MASK = 0xFFFF
IOVA_LIMIT = 1 << _DOMID_SHIFT
_FRAME_MASK = (1 << _DOMID_SHIFT) - 1
PAGE_MASK_4K = 0xFFFF_FFFF_FFFF_F000


class Leaf(NamedTuple):
    """What a walk of the tables gives for one IOVA page."""

    host: int
    read: bool
    write: bool


def domain_page(domid: int, frame: int) -> int:
    """The host page ``frame`` of domain ``domid``."""
    return HOST_OWNED | (domid & _DOMID_MASK) << _DOMID_SHIFT | (frame & _FRAME_MASK & PAGE_MASK_4K)


def owner_of(host: int) -> int | None:
    """The domid that owns a host page; None for firmware memory (an
    identity-mapped RMRR page)."""
    if host & HOST_OWNED:
        return (host >> _DOMID_SHIFT) & _DOMID_MASK
    return None


def frame_of(host: int) -> int:
    """The page within its owner (the IOVA of an identity-mapped page)."""
    return host & _FRAME_MASK


def identity(iova: int, idmaps: Iterable[tuple[int, int, str | None]]) -> Leaf | None:
    """The identity map (base, end inclusive, access "rw"|"r") covering iova, if any."""
    for base, end, access in idmaps:
        if base <= iova <= end:
            return Leaf(iova & PAGE_MASK_4K, True, access != "r")
    return None


def domain_leaf(owner: int, iova: int, idmaps: Iterable[tuple[int, int, str | None]]) -> Leaf:
    """A walk of domain ``owner``'s tables."""
    hit = identity(iova, idmaps)
    if hit is not None:
        return hit
    return Leaf(domain_page(owner, iova), True, True)


def quarantine_leaf(owner: int, scratch: int, writable: bool, iova: int,
                    idmaps: Iterable[tuple[int, int, str | None]]) -> Leaf:
    """A walk of a quarantine tree: its identity maps (engine ``final``
    maps the device's RMRRs into its tree), else the scratch page."""
    hit = identity(iova, idmaps)
    if hit is not None:
        return hit
    return Leaf(domain_page(owner, scratch), True, writable)


def freed_leaf(root: int) -> Leaf:
    """A walk of freed tables: a page of Xen's heap (named after the root)."""
    return Leaf(domain_page(DOMID_XEN, root), True, True)


def passthrough_leaf(hwdom: int, iova: int) -> Leaf:
    """TT = pass-through: the hardware domain's page at the IOVA."""
    return Leaf(domain_page(hwdom, iova), True, True)


def describe(host: int, name_of: dict[int, str] | None = None) -> str:
    """'guest page 0x1000' / 'firmware page 0xd5d45000' for a detail sentence."""
    owner = owner_of(host)
    if owner is None:
        return f"firmware page {frame_of(host):#x}"
    name = (name_of or {}).get(owner, f"d{owner}")
    return f"{name} page {frame_of(host):#x}"
