"""Step labels of real-code events.

The model's labels (MO7, UO3 ... docs/MODEL.md#step-labels) name steps of
the VT-d code.  A real-code event carries the C function and the source line
it came from (``#line`` keeps the tree's own numbering); its label is the
model's label for the step that line performs when the table below knows
the line, else the function's name.  The table is keyed by function and the
line's *text* (whitespace-insensitive), not its number, so it holds across
releases and patches that move code around; a line a patch rewrote simply
falls back to the function name.  Nothing in the replay depends on labels:
they are for reading a trace and for lining it up against a model trace.
"""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")


def _key(text: str) -> str:
    return _WS.sub("", text)


# (function, a line's text) -> label.  Only lines whose step is unambiguous.
_TABLE: dict[tuple[str, str], str] = {(f, _key(t)): lab for f, t, lab in (
    ("domain_context_mapping_one", "spin_lock(&iommu->lock);", "MO1"),
    ("domain_context_mapping_one", "prev_dom = rcu_lock_domain_by_id(domid);", "MO3"),
    ("domain_context_mapping_one", "prev_dom = rcu_lock_domain(dom_io);", "MO3"),
    ("domain_context_mapping_one", "spin_lock(&hd->arch.mapping_lock);", "MO4"),
    ("domain_context_mapping_one", "spin_unlock(&hd->arch.mapping_lock);", "MO4"),
    ("domain_context_mapping_one", "__uint128_t res = cmpxchg16b(context, &old, &lctxt.full);", "MO7"),
    ("domain_context_mapping_one", "context_clear_present(*context);", "MO7"),
    ("domain_context_mapping_one", "write_atomic(&context->hi, lctxt.hi);", "MO7"),
    ("domain_context_mapping_one", "write_atomic(&context->lo, lctxt.lo);", "MO7"),
    ("domain_context_mapping_one", "iommu_sync_cache(context, sizeof(struct context_entry));", "MO8"),
    ("domain_context_mapping_one", "set_bit(iommu->index, hd->arch.vtd.iommu_bitmap);", "MO12"),
    ("domain_context_mapping_one", "rcu_unlock_domain(prev_dom);", "MO15"),
    ("context_set_domain_id", "set_bit(i, iommu->domid_bitmap);", "MO5"),
    ("domain_context_unmap_one", "spin_lock(&iommu->lock);", "UO1"),
    ("domain_context_unmap_one", "context_clear_present(*context);", "UO3"),
    ("domain_context_unmap_one", "context_clear_entry(*context);", "UO3"),
    ("domain_context_unmap_one", "iommu_sync_cache(context, sizeof(struct context_entry));", "UO3"),
    ("check_cleanup_domid_map", "clear_bit(iommu->index, dom_iommu(d)->arch.vtd.iommu_bitmap);", "RN4"),
    ("cleanup_domid_map", "clear_bit(iommu_domid, iommu->domid_bitmap);", "RN4"),
)}


class Labels:
    """Labels for the events of one tree: ``lines`` are its iommu.c lines."""

    def __init__(self, lines: list[str] | None = None) -> None:
        self.lines = lines or []
        self._cache: dict[tuple[str, int], str] = {}

    def label(self, func: str, line: int) -> str:
        got = self._cache.get((func, line))
        if got is None:
            text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
            got = _TABLE.get((func, _key(text)), func)
            self._cache[(func, line)] = got
        return got


def table_size() -> int:
    return len(_TABLE)
