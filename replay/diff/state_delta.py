"""The state difference of two traces at any two steps.

The report measures the state difference at aligned operation boundaries,
incrementally, during its single pass.  The side-by-side view also wants it
*at the cursor* -- e.g. inside legacy's unmap/remap window, where A's context
entry is already non-present and B's still maps dom0 -- for any pair of
steps, in any order.  This compares two ``ReplayState``s from scratch, with
the same decoded fields and the same change records (``StateDiff.changes``,
printed by ``text.change_text``) as the report, so both read alike.
"""

from __future__ import annotations

from typing import Any

from ..render import PlatformView, cache_view
from .state_tracker import (
    CACHE_INPUTS,
    State,
    change_records,
    ctx_fields,
    dev_fields,
    did_fields,
    idmap_fields,
    name_alike,
    put_change,
    unit_sig,
)


def state_changes(sa: State, view_a: PlatformView, sb: State, view_b: PlatformView) -> list[dict[str, Any]]:
    """``[{"section", <identity>, "a": {...}, "b": {...}}]``: every entry of
    the two states that decodes differently, only its differing fields, in
    the report's order (context, dids, devices, idmaps, domains, caches)."""
    d: dict[Any, Any] = {}
    put = put_change
    # Equal raw values decode alike when both headers name alike: then only
    # the keys whose raw values differ are decoded (a long trace's state has
    # thousands of entries and the view asks on every key press).
    same = name_alike(view_a, view_b)

    def keys(*tables: str) -> set[Any]:
        out: set[Any] = set()
        for name in tables:
            ta, tb = getattr(sa, name), getattr(sb, name)
            if same and ta == tb:
                continue
            if same:
                out.update(k for k in ta.keys() | tb.keys() if ta.get(k, _MISS) != tb.get(k, _MISS))
            else:
                out.update(ta.keys() | tb.keys())
        return out

    ctx_keys = keys("ctx")
    if not same or sa.did_map != sb.did_map or sa.pages != sb.pages:
        # an entry's DID owner and table owner are looked up through these
        ctx_keys.update(sa.ctx.keys() | sb.ctx.keys())
    for key in ctx_keys:
        put(d, ("context", key), ctx_fields(sa, view_a, key), ctx_fields(sb, view_b, key))
    for key in keys("did_bits", "did_map"):
        put(d, ("dids", key), did_fields(sa, view_a, key), did_fields(sb, view_b, key))
    for key in keys("present", "owners"):
        put(d, ("devices", key), dev_fields(sa, view_a, key), dev_fields(sb, view_b, key))
    for key in keys("idmaps"):
        put(d, ("idmaps", key), idmap_fields(sa, key), idmap_fields(sb, key))
    for key in keys("domains"):
        put(d, ("domains", key), {"status": sa.domains.get(key)}, {"status": sb.domains.get(key)})
    if not same or any(getattr(sa, n) != getattr(sb, n) for n in CACHE_INPUTS):
        for u in {k[0] for k in sa.ctx} | {k[0] for k in sb.ctx}:
            if unit_sig(sa, u) == unit_sig(sb, u):
                continue
            put(d, ("caches", u), cache_view(sa, view_a, u), cache_view(sb, view_b, u))
    return change_records(d, view_a, view_b)


_MISS = object()
