"""The "may hold" model of the IOMMU's caches (docs/MODEL.md#replay-state).

Hardware caching is nondeterministic, so the replay does not guess what the
context cache or the IOTLB *does* hold; it tracks what they *may* hold, which
is what the hazard analysers need ("can a DMA still use the old entry?").

The model keeps only what can no longer be derived from the current memory
entry, because that is the part that makes a hazard:

``cc[(u, bus, devfn)]``  frozenset of entry values ``(lo, hi)`` the context
    cache may still hold for that source-id although memory moved on.
    A value gets here when it stops being usable (overwritten on a coherent
    unit, or replaced at ``cache-sync`` on a non-coherent one) if it was
    cacheable: present, or anything under caching mode (CAP.CM=1, where
    non-present entries are cached tagged with DID 0).
``tlb[(u, did)]``  frozenset of ``(bus, devfn, pt_root)``: IOTLB entries
    tagged ``did`` that may have been filled through that source-id from the
    page tables at ``pt_root``.  The requester is not part of the hardware tag
    -- any device whose entry carries ``did`` may hit them -- but the filler is
    kept because the foreign-fill hazard (c3) needs it.  Address ranges are
    not modelled: a fill covers the whole address space.
``devtlb[(u, bus, devfn)]``  frozenset of ``(did, pt_root)`` an ATS device's
    own translation cache (its ATC, the "device-TLB") may hold although the
    entry values the IOMMU can use now do not give them.  A device can only
    fill its ATC with Translation Requests, which the IOMMU answers from an
    entry with TT = device-IOTLB, and only while ATS is enabled on it: so a
    value gets here when it stops being usable (like the IOTLB fills above)
    if it has TT = device-IOTLB and the device at that requester ID has ATS
    enabled (``ats`` table; ``unit_seg`` gives the unit's PCI segment), and
    when ATS is disabled (``ats-enable`` value 0) every value it could use
    until then is kept: whether clearing ATS Enable empties the ATC is not
    known (PCIe leaves it open), so the model assumes it does not.  Only a
    device-TLB invalidation addressed to the device (``flush-dev-iotlb``,
    rc 0) empties it -- the IOTLB flushes never do, whatever their
    ``dev_iotlb`` flag says, because Xen sends one descriptor per device and
    each one is an event.  Fills through IOTLB entries (a Translation Request
    the IOMMU answers from its IOTLB) are not modelled separately: the IOTLB
    side of such a translation is the stale-/foreign-iotlb model's.
``hw`` / ``pending`` (non-coherent units only, ECAP.C = 0)  ``hw[key]`` is the
    value the IOMMU is known to see (as of the last ``cache-sync``);
    ``pending[key]`` the values written since, each of which may or may not
    be visible yet.

What the hardware may hold in total is the stored part plus what the usable
entry values (memory, or hw + pending) can produce at any moment; the query
functions at the bottom compute that union.

Invalidations remove matching elements when the flush event is recorded with
rc 0 (rc 1 = skipped for a non-present entry, rc < 0 = failed: nothing was
invalidated).  The requested granularity is used even though hardware may do
a coarser one: finer keeps more, which is the conservative side of "may".
A page-selective IOTLB flush removes nothing, because fills are not tracked
per address range (a PSI leaves the rest of the address space cached).

Every stored value is an immutable frozenset or tuple, so a state snapshot is
a shallow ``dict.copy()`` of each table (copying immutable values per event
measured up to 3x slower).
"""

from __future__ import annotations

from typing import Any, Protocol

# A context entry's source-id on a unit, and a 128-bit entry value (lo, hi).
Key = tuple[int, int, int]
Value = tuple[int, int]
# (did, pt_root): what a translation through an entry value is tagged with and walks
Translation = tuple[int, int]


class StateTables(Protocol):
    """The tables of a replay.state.ReplayState this model and the hazard
    analysers read and write (replay.state lists them all, with their
    meaning; its class declares them through ``__slots__``, so they are
    spelled out here, typed)."""

    ctx: dict[Key, Value]
    did_bits: dict[tuple[int, int], int]
    did_map: dict[tuple[int, int], int]
    iommu_bitmap: dict[tuple[int, int], int]
    pgd: dict[int, int]
    pages: dict[int, tuple[int, str]]
    idmaps: dict[tuple[int, int, int], tuple[str | None, int]]
    present: dict[tuple[int, int], int]
    owners: dict[tuple[int, int], int]
    ats: dict[tuple[int, int], int]
    translation: dict[int, int]
    pseudo: dict[int, tuple[int, int]]
    locks: dict[tuple[str, int | None], int]
    nest: dict[tuple[str, int | None], int]
    open_ops: dict[int, tuple[Any, ...]]
    cc: dict[Key, frozenset[Value]]
    tlb: dict[tuple[int, int], frozenset[tuple[int, int, int]]]
    devtlb: dict[Key, frozenset[Translation]]
    hw: dict[Key, Value]
    pending: dict[Key, frozenset[Value]]
    cm: bool
    coherent: bool
    unit_seg: dict[int, int]

    def stack(self, cpu: int) -> tuple[int, ...]: ...

# Context-entry layout (VT-d legacy mode; docs/MODEL.md#context-entry).
P_BIT = 1
PAGE_MASK_4K = 0xFFFF_FFFF_FFFF_F000
TT_DEV_IOTLB = 1
TT_PASS_THRU = 2

# Context-cache invalidation function mask: which low SID bits to ignore.
FM_MASK = (0b000, 0b100, 0b110, 0b111)
# ... and the low devfn bits a device-selective flush covers for each: a
# flush is ~2% of a trace, mostly with mask 0, where one key is all there is.
FM_LOWS = tuple(tuple(low for low in range(8) if not low & ~mask) for mask in FM_MASK)

EMPTY: frozenset[Any] = frozenset()      # of any element type: shared by every table


def cache_tag(value: Value) -> int:
    """The DID a cached context entry is tagged with: its own DID when
    present, 0 for a non-present entry cached under caching mode."""
    lo, hi = value
    return (hi >> 8) & 0xFFFF if lo & P_BIT else 0


def translation_of(value: Value) -> Translation | None:
    """(did, pt_root) an entry value lets the IOMMU fill the IOTLB with, or
    None (not present, or pass-through, which translates nothing)."""
    lo, hi = value
    if not lo & P_BIT or (lo >> 2) & 3 == TT_PASS_THRU:
        return None
    return (hi >> 8) & 0xFFFF, lo & PAGE_MASK_4K


# --- state transitions (called from replay.state's fold) ----------------------

def retire(st: StateTables, key: Key, value: Value) -> None:
    """``value`` stops being an entry the IOMMU can read at ``key``: whatever
    it may have put into the caches stays there until invalidated."""
    if key[0] not in st.translation:
        # Remapping is off on this unit: nothing was walked, nothing cached.
        return
    lo, hi = value
    if lo & P_BIT:
        cc = st.cc
        cc[key] = cc.get(key, EMPTY) | {value}
        tt = (lo >> 2) & 3
        if tt != TT_PASS_THRU:
            did = (hi >> 8) & 0xFFFF
            pt = lo & PAGE_MASK_4K
            tlb = st.tlb
            tk = (key[0], did)
            tlb[tk] = tlb.get(tk, EMPTY) | {(key[1], key[2], pt)}
            # ats_on(), inlined: retire runs for most context stores
            if tt == TT_DEV_IOTLB and st.ats and \
                    (st.unit_seg.get(key[0], 0), key[1] << 8 | key[2]) in st.ats:
                devtlb = st.devtlb
                held = devtlb.get(key, EMPTY)
                if (did, pt) not in held:
                    # replaced only when it grows: the analyser tells a
                    # changed set by identity
                    devtlb[key] = held | {(did, pt)}
    elif st.cm:
        cc = st.cc
        cc[key] = cc.get(key, EMPTY) | {value}


def ctx_write(st: StateTables, key: Key, old: Value, new: Value) -> None:
    """A CPU store changed the memory entry at ``key`` from ``old`` to ``new``."""
    if st.coherent:
        if old != new:
            retire(st, key, old)
    else:
        # Not visible until cache-sync, but may be visible any time before.
        pending = st.pending
        pending[key] = pending.get(key, EMPTY) | {new}


def cache_sync(st: StateTables, key: Key, mem: Value) -> None:
    """iommu_sync_cache: on a non-coherent unit memory becomes what the IOMMU
    sees; every other value it may have seen retires."""
    if st.coherent:
        return
    hw = st.hw
    seen = st.pending.pop(key, EMPTY) | {hw.get(key, (0, 0))}
    for value in seen:
        if value != mem:
            retire(st, key, value)
    if mem == (0, 0):
        hw.pop(key, None)
    else:
        hw[key] = mem


def _drop_cc(st: StateTables, key: Key, values: frozenset[Value]) -> None:
    """Context-cache values leave the cache: IOTLB entries they may have
    (re)filled since the last IOTLB flush stay behind."""
    tlb = st.tlb
    u, bus, devfn = key
    atc = bool(st.ats) and ats_on(st, key)
    for value in values:
        tr = translation_of(value)
        if tr is not None:
            tk = (u, tr[0])
            tlb[tk] = tlb.get(tk, EMPTY) | {(bus, devfn, tr[1])}
            if atc and (value[0] >> 2) & 3 == TT_DEV_IOTLB:
                # ... and so do the ATC's (ATS may have been enabled since
                # the value retired from memory into the context cache)
                held = st.devtlb.get(key, EMPTY)
                if tr not in held:
                    st.devtlb[key] = held | {tr}


def flush_context(st: StateTables, u: int, gran: str, did: int, sid: int, fm: int) -> None:
    cc = st.cc
    if gran == "device":
        fm &= 3
        bus, base = sid >> 8, (sid & 0xFF) & ~FM_MASK[fm]
        for low in FM_LOWS[fm]:
            key = (u, bus, base | low)
            values = cc.pop(key, None)
            if values:
                _drop_cc(st, key, values)
        return
    for key in [k for k in cc if k[0] == u]:
        values = cc[key]
        if gran == "global":
            gone = values
        else:  # domain-selective
            gone = frozenset(v for v in values if cache_tag(v) == did)
            if not gone:
                continue
        keep = values - gone
        if keep:
            cc[key] = keep
        else:
            del cc[key]
        _drop_cc(st, key, gone)


def flush_iotlb(st: StateTables, u: int, gran: str, did: int) -> None:
    tlb = st.tlb
    if gran == "dsi":
        tlb.pop((u, did), None)
    elif gran == "global":
        for tk in [k for k in tlb if k[0] == u]:
            del tlb[tk]
    # Device-TLBs are separate: Xen invalidates them with their own
    # descriptors (flush-dev-iotlb events), even when dev_iotlb is set here.
    # psi: fills are not tracked per range, so nothing can be dropped.


def flush_dev_iotlb(st: StateTables, u: int, sid: int) -> None:
    st.devtlb.pop((u, sid >> 8, sid & 0xFF), None)


def ats_on(st: StateTables, key: Key) -> bool:
    """ATS is enabled on the device whose own requester ID is ``key``."""
    u, bus, devfn = key
    return (st.unit_seg.get(u, 0), bus << 8 | devfn) in st.ats


def ats_disable(st: StateTables, seg: int, bdf: int) -> None:
    """disable_ats_device: the device stops issuing Translation Requests, but
    its ATC is not assumed empty (UNSURE), so every translation it could
    fill until now -- from the entry values the IOMMU may use at its
    requester ID -- stays in the model until a device-TLB invalidation."""
    bus, devfn = bdf >> 8, bdf & 0xFF
    for u in st.translation:
        if st.unit_seg.get(u, 0) != seg:
            continue
        key = (u, bus, devfn)
        fills = atc_current(st, key)
        held = st.devtlb.get(key, EMPTY)
        if not fills <= held:
            st.devtlb[key] = held | fills


# --- queries --------------------------------------------------------------------

def usable_values(st: StateTables, key: Key) -> frozenset[Value]:
    """Entry values the IOMMU may read from memory at ``key`` right now."""
    mem = st.ctx.get(key, (0, 0))
    if st.coherent:
        return frozenset((mem,))
    return st.pending.get(key, EMPTY) | {st.hw.get(key, (0, 0))}


def context_may_hold(st: StateTables, key: Key) -> frozenset[Value]:
    """Every value the IOMMU may use for ``key``: memory (or hw + pending)
    plus what the context cache may still hold."""
    return usable_values(st, key) | st.cc.get(key, EMPTY)


def stale_context(st: StateTables, u: int) -> dict[tuple[int, int], frozenset[Value]]:
    """{(bus, devfn): frozenset of values ≠ the memory entry} that the unit
    may still use from its context cache or (non-coherent) not-yet-synced
    memory.  These are the values behind the stale-context hazard."""
    out = {}
    keys = {k for k in st.cc if k[0] == u}
    if not st.coherent:
        keys.update(k for k in st.pending if k[0] == u)
        keys.update(k for k in st.hw if k[0] == u)
    for key in keys:
        mem = st.ctx.get(key, (0, 0))
        vals = frozenset(v for v in context_may_hold(st, key) if v != mem)
        if vals:
            out[key[1:]] = vals
    return out


def iotlb_may_hold(st: StateTables, u: int) -> frozenset[tuple[int, int, int, int]]:
    """{(did, bus, devfn, pt_root)}: IOTLB entries unit u may hold, filled
    through source-id (bus, devfn)."""
    out: set[tuple[int, int, int, int]] = set()
    for (tu, did), fills in st.tlb.items():
        if tu == u:
            out.update((did, b, df, pt) for b, df, pt in fills)
    keys = {k for k in st.ctx if k[0] == u}
    keys.update(k for k in st.cc if k[0] == u)
    if not st.coherent:
        keys.update(k for k in st.pending if k[0] == u)
    for key in keys:
        for value in context_may_hold(st, key):
            tr = translation_of(value)
            if tr is not None:
                out.add((tr[0], key[1], key[2], tr[1]))
    return frozenset(out)


def stale_iotlb(st: StateTables, u: int) -> frozenset[tuple[int, int, int, int]]:
    """The part of ``iotlb_may_hold`` that the current memory entries cannot
    produce: fills through values that have since been replaced."""
    current = set()
    for key, value in st.ctx.items():
        if key[0] == u:
            tr = translation_of(value)
            if tr is not None:
                current.add((tr[0], key[1], key[2], tr[1]))
    return frozenset(t for t in iotlb_may_hold(st, u) if t not in current)


def atc_current(st: StateTables, key: Key) -> frozenset[Translation]:
    """{(did, pt_root)} the device at ``key`` could put into its ATC right
    now from the entry values the IOMMU may use (memory or hw + pending, the
    context cache) -- the values with TT = device-IOTLB.  Whether ATS is
    enabled is the caller's question."""
    if key[0] not in st.translation:
        return EMPTY
    out: set[Translation] = set()
    for value in context_may_hold(st, key):
        tr = translation_of(value)
        if tr is not None and (value[0] >> 2) & 3 == TT_DEV_IOTLB:
            out.add(tr)
    return frozenset(out)


def atc_may_hold(st: StateTables, key: Key) -> frozenset[Translation]:
    """{(did, pt_root)} the ATC of the ATS device at ``key`` may hold: what
    outlived the entry values (``devtlb``) plus, while ATS is enabled, what
    the current values can fill."""
    held = st.devtlb.get(key, EMPTY)
    if st.ats and ats_on(st, key):
        held = held | atc_current(st, key)
    return held


def devtlb_may_hold(st: StateTables, u: int) -> dict[tuple[int, int], frozenset[Translation]]:
    """{(bus, devfn): frozenset of (did, pt_root)} an ATS device's own
    translation cache may hold beyond what its entry in memory gives."""
    keys = {k for k in st.devtlb if k[0] == u}
    if st.ats:
        keys.update(k for k in st.cc if k[0] == u and ats_on(st, k))
        if not st.coherent:
            keys.update(k for k in st.pending if k[0] == u and ats_on(st, k))
    out = {}
    for key in keys:
        held = atc_may_hold(st, key)
        lo, hi = st.ctx.get(key, (0, 0))
        if lo & P_BIT and (lo >> 2) & 3 == TT_DEV_IOTLB and st.ats and ats_on(st, key):
            held = held - {translation_of((lo, hi))}
        if held:
            out[key[1:]] = held
    return out
