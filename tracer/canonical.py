"""The canonical architectural state: one shape that both the engine's live
snapshot and the replay fold produce, so "replay == engine after every event"
is a plain ``==``.  Everything but the modelled caches (context cache, IOTLB),
which exist only in the replay's "may hold" model.

``canonical(...)`` takes the pieces as plain mappings/iterables and returns a
dict of sorted tuples, so insertion order never matters:

    ctx          ((iommu, bus, devfn, lo, hi), ...)   every entry ever written
    root         ((iommu, bus, lo), ...)              every root entry ever written
    did_bitmap   ((iommu, (did, ...)), ...)           set bits per IOMMU
    did_map      ((iommu, did, domid), ...)           non-zero map slots (the map is zero-filled)
    iommu_bitmap ((domid, (iommu, ...)), ...)         hd->arch.vtd.iommu_bitmap, non-empty only
    pgd          ((domid, maddr), ...)                page-table roots (dom_io: quarantine tree)
    idmaps       ((domid, base, end, access, refcount), ...)
    owners       ((seg, bdf16, domid), ...)           pdev->domain for present pdevs
    ats          ((seg, bdf16), ...)                  ATS enabled
    domains      ((domid, "alive"|"dying"), ...)      existing domains
    translation  (iommu, ...)                         units with DMA remapping enabled
    pseudo       ((domid, seg, bdf16), ...)           pdev->arch.pseudo_domid of present pdevs
    locks        ((lock, target, cpu), ...)           held locks
    stacks       ((cpu, (func, ...)), ...)            call stacks, outermost first
    ops          ((cpu, op), ...)                     each CPU's open top-level op
    waits        ((cpu, lock, target), ...)           CPUs spinning on a lock
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def _t(x: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(sorted(x))


def canonical(*, ctx: Mapping[tuple[int, int, int], tuple[int, int]],
              root: Mapping[tuple[int, int], int],
              did_bitmap: Mapping[int, Iterable[int]],
              did_map: Mapping[tuple[int, int], int],
              iommu_bitmap: Mapping[int, Iterable[int]],
              pgd: Mapping[int, int],
              idmaps: Mapping[tuple[int, int, int], tuple[str | None, int]],
              owners: Mapping[tuple[int, int], int],
              ats: Iterable[tuple[int, int]],
              domains: Mapping[int, str],
              translation: Iterable[int],
              locks: Mapping[tuple[str, Any], int],
              stacks: Mapping[int, Iterable[str]],
              ops: Mapping[int, int],
              waits: Mapping[int, tuple[str, Any]] | None = None,
              pseudo: Mapping[int, tuple[int, int]] | None = None) -> dict[str, Any]:
    return {
        "ctx": _t((u, b, df, lo, hi) for (u, b, df), (lo, hi) in ctx.items()),
        "root": _t((u, b, lo) for (u, b), lo in root.items()),
        "did_bitmap": _t((u, _t(bits)) for u, bits in did_bitmap.items() if bits),
        "did_map": _t((u, did, dom) for (u, did), dom in did_map.items() if dom != 0),
        "iommu_bitmap": _t((d, _t(us)) for d, us in iommu_bitmap.items() if us),
        "pgd": _t(pgd.items()),
        "idmaps": _t((d, b, e, acc, rc) for (d, b, e), (acc, rc) in idmaps.items() if rc > 0),
        "owners": _t((s, bdf, d) for (s, bdf), d in owners.items()),
        "ats": _t(ats),
        "domains": _t(domains.items()),
        "translation": _t(translation),
        "pseudo": _t((d, s, bdf) for d, (s, bdf) in (pseudo or {}).items()),
        "locks": _t((lk, tgt, cpu) for (lk, tgt), cpu in locks.items()),
        "stacks": _t((cpu, tuple(st)) for cpu, st in stacks.items() if st),
        "ops": _t(ops.items()),
        "waits": _t((cpu, lk, tgt) for cpu, (lk, tgt) in (waits or {}).items()),
    }
