"""The replayed IOMMU state and the fold that builds it from events alone.

``fold(state, events)`` applies events in order; ``apply(state, event)`` is
the one-event form.  Both mutate ``state`` in place and return it: the result
depends on nothing but the state and the events (no I/O, no clock, no engine),
which is what makes the replay event-sourced.  Mutation in place is a
deliberate trade: rebuilding immutable maps per event would cost several times
the decode itself (measured).  Callers that need to keep a state
take ``state.copy()``, which is cheap because every table is a flat dict of
immutable values (ints, strings, tuples, frozensets) -- a shallow
``dict.copy()`` per table is a complete snapshot.

The fold is one if/elif chain on kind codes for the frequent kinds and a table
for the rest; that is the fastest dispatch measured here.  Event layout:
``[kind, seq, cpu, op, func, label, *fields]`` (tracer/schema.py), field i of
a kind at index ``F0 + i`` (F0 = 6).

``to_canonical(state)`` gives the architectural part in the shape of
tracer/canonical.py, which the property test compares with the engine's live
snapshot after every event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import msgpack

from tracer import schema as S
from tracer.canonical import canonical

from . import caches
from .validate import EventCheck

# An event array as decoded: [kind, seq, cpu, op, func, label, *fields].
# Untrusted until the fold's checks pass, hence Any items.
Event = Sequence[Any]
# A call stack as a cons list, innermost first: (parent, func_code).
Stack = tuple["Stack | None", int]

ZERO = (0, 0)
# pt-alloc "what" values that are the root of a domain's tree (the rest are
# lower-level tables and the quarantine scratch page).
ROOT_TABLES = ("pgd", "quarantine")

# Bump when the checkpoint encoding below changes; sidecars built by another
# format are rebuilt.
STATE_FORMAT = 7


class BadEvent(ValueError):
    """An event the fold cannot apply (wrong arity or field types): the trace
    is damaged or was written by a tool that does not follow the schema.

    Every handler checks what it needs before it changes anything, so when
    ``fold`` raises this, the state is exactly the state after the events
    before ``event`` -- except the position scalars (seq, op, label ...),
    which ``set_position`` can bring up to date (tests/test_replay_fold.py
    checks this for every kind against random field values)."""

    def __init__(self, seq: object, message: str, event: object = None) -> None:
        super().__init__(f"event {seq}: {message}")
        self.seq = seq
        self.event = event


# Tables of a state, in checkpoint-encoding order.  Every one is a dict whose
# values are immutable.
TABLES = (
    "ctx",           # (iommu, bus, devfn) -> (lo, hi): every context entry ever written
    "root",          # (iommu, bus) -> lo
    "did_bits",      # (iommu, did) -> 1: set bits of the DID bitmap
    "did_map",       # (iommu, did) -> domid (non-zero slots; the map is zero-filled)
    "iommu_bitmap",  # (domid, iommu) -> 1
    "pgd",           # domid -> root maddr of its I/O page tables (dom_io: quarantine tree)
    "pages",         # maddr -> (domid, what): every live page-table page (SLPTPTR may
                     # point below the root on a unit with fewer levels)
    "idmaps",        # (domid, base, end) -> (access, refcount)
    "present",       # (seg, bdf16) -> 1: pdevs that exist
    "owners",        # (seg, bdf16) -> domid: pdev->domain
    "ats",           # (seg, bdf16) -> 1: ATS enabled
    "domains",       # domid -> 1: created, not yet destroyed
    "dying",         # domid -> 1: is_dying set (a subset of domains)
    "translation",   # iommu -> 1: DMA remapping enabled
    "pseudo",        # pseudo domid -> (seg, bdf16): the device it stands for (engine `final`)
    "locks",         # (lock, target) -> cpu
    "nest",          # (lock, target) -> depth, for re-entered nestable locks (rcu_domain) only
    "stacks",        # cpu -> (parent, func_code): call stack as a cons list, innermost first
    "cc",            # caches.py: context-cache values that may outlive memory
    "tlb",           # caches.py: (iommu, did) -> frozenset of (bus, devfn, pt_root)
    "devtlb",        # caches.py: (iommu, bus, devfn) -> frozenset of (did, pt_root) an ATC may hold
    "hw",            # caches.py: non-coherent units: value as of the last cache-sync
    "pending",       # caches.py: non-coherent units: values written since
    "open_ops",      # cpu -> (op, verb, bdf, domain, seg): the op each CPU is inside
    "waits",         # cpu -> (lock, target): the lock a CPU spins on (lock-wait until its lock event)
)
_SET_TABLES = frozenset(("cc", "tlb", "devtlb", "pending"))


class ReplayState:
    """State after some prefix of a trace.  ``seq`` is the number of events
    applied (0 = the platform before any event); ``op``/``label``/``func``/
    ``kind``/``cpu`` describe the last event applied (None at seq 0)."""

    __slots__ = TABLES + ("seq", "op", "label", "func", "kind", "cpu",
                          "open_op", "op_info", "rollback", "cm", "coherent", "unit_seg", "journal")

    # The slots' types (annotations only: __slots__ makes the attributes).
    ctx: dict[tuple[int, int, int], tuple[int, int]]
    root: dict[tuple[int, int], int]
    did_bits: dict[tuple[int, int], int]
    did_map: dict[tuple[int, int], int]
    iommu_bitmap: dict[tuple[int, int], int]
    pgd: dict[int, int]
    pages: dict[int, tuple[int, str]]
    idmaps: dict[tuple[int, int, int], tuple[str | None, int]]
    present: dict[tuple[int, int], int]
    owners: dict[tuple[int, int], int]
    ats: dict[tuple[int, int], int]
    domains: dict[int, int]
    dying: dict[int, int]
    translation: dict[int, int]
    pseudo: dict[int, tuple[int, int]]
    locks: dict[tuple[str, int | None], int]
    nest: dict[tuple[str, int | None], int]
    stacks: dict[int, Stack]
    cc: dict[Any, frozenset[Any]]
    tlb: dict[Any, frozenset[Any]]
    devtlb: dict[Any, frozenset[Any]]
    hw: dict[Any, Any]
    pending: dict[Any, frozenset[Any]]
    open_ops: dict[int, tuple[Any, ...]]
    waits: dict[int, tuple[str, int | None]]
    seq: int
    op: int | None
    label: str | None
    func: int | None
    kind: int | None
    cpu: int | None
    open_op: int | None
    op_info: tuple[Any, ...] | None
    rollback: int
    cm: bool
    coherent: bool
    unit_seg: dict[int, int]
    journal: list[tuple[str, Any]] | None

    def __init__(self, *, cm: bool = False, coherent: bool = True, unit_seg: dict[int, int] | None = None) -> None:
        for name in TABLES:
            setattr(self, name, {})
        self.seq = 0
        self.op = self.label = self.func = self.kind = self.cpu = None
        self.open_op = None       # the open top-level operation (None when idle)
        self.op_info = None       # its op-begin fields: (verb, bdf, domain, seg)
        self.rollback = 0         # rollback-begin nesting depth
        # Platform knobs the cache model depends on (constant for a trace).
        self.cm = cm
        self.coherent = coherent
        # iommu -> PCI segment (absent: 0): which device's ATS enable bit a
        # requester ID of a unit answers to (the device-TLB model)
        self.unit_seg = dict(unit_seg or {})
        # Not state: (table, key) pairs touched since the owner last cleared
        # it, or None (not tracking).  Never copied or compared.
        self.journal = None

    def copy(self) -> ReplayState:
        new = ReplayState.__new__(ReplayState)
        for name in TABLES:
            setattr(new, name, getattr(self, name).copy())
        for name in ("seq", "op", "label", "func", "kind", "cpu",
                     "open_op", "op_info", "rollback", "cm", "coherent", "unit_seg"):
            setattr(new, name, getattr(self, name))
        new.journal = None
        return new

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ReplayState):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__ if n != "journal")

    __hash__ = None  # type: ignore[assignment]  # mutable: unhashable, as a dict

    # --- convenience views (rendering, analysers) ---------------------------

    def stack(self, cpu: int) -> tuple[int, ...]:
        """Function codes on cpu's call stack, outermost first."""
        out: list[int] = []
        node = self.stacks.get(cpu)
        while node is not None:
            out.append(node[1])
            node = node[0]
        out.reverse()
        return tuple(out)

    def entry(self, iommu: int, bus: int, devfn: int) -> tuple[int, int]:
        return self.ctx.get((iommu, bus, devfn), ZERO)


def initial_state(header: dict[str, Any] | None = None) -> ReplayState:
    """The state before any event.  Everything architectural is created by
    events (domain-create, device-add, ...), so only the knobs that change
    how the hardware caches behave come from the header."""
    plat = (header or {}).get("platform") or {}
    knobs = plat.get("knobs") or {}
    unit_seg: dict[int, int] = {}
    for u in plat.get("iommus") or ():
        if isinstance(u, dict) and type(u.get("id")) is int and type(u.get("segment")) is int \
                and u["segment"]:
            unit_seg[u["id"]] = u["segment"]
    return ReplayState(cm=bool(knobs.get("caching_mode", False)),
                       coherent=bool(knobs.get("coherent", True)), unit_seg=unit_seg)


# --- the fold -------------------------------------------------------------------

# Tables changed only by the rare kinds' handlers below (through _set/_del)
# and by fold's inline iommu-bitmap and owner-move branches.  When a state
# carries a journal (the build pass sets one), all of those record which keys
# they touched, so a checkpoint writer can
# tell what changed since the last checkpoint without comparing whole tables
# (thousands of domains).  The fast-path tables are small and compared.
JOURNALED = frozenset(("root", "iommu_bitmap", "pgd", "pages", "idmaps", "present", "owners", "ats",
                       "domains", "dying", "translation", "pseudo"))


def _set(st: ReplayState, name: str, key: Any, value: Any) -> None:
    getattr(st, name)[key] = value
    j = st.journal
    if j is not None:
        j.append((name, key))


def _del(st: ReplayState, name: str, key: Any) -> None:
    d = getattr(st, name)
    if key in d:
        del d[key]
        j = st.journal
        if j is not None:
            j.append((name, key))


def _root_write(st: ReplayState, ev: Event) -> None:
    _set(st, "root", (ev[S.F_ROOT_WRITE_IOMMU], ev[S.F_ROOT_WRITE_BUS]), ev[S.F_ROOT_WRITE_NEW])


def _cache_sync(st: ReplayState, ev: Event) -> None:
    key = (ev[S.F_CACHE_SYNC_IOMMU], ev[S.F_CACHE_SYNC_BUS], ev[S.F_CACHE_SYNC_DEVFN])
    caches.cache_sync(st, key, st.ctx.get(key, ZERO))


def _flush_dev_iotlb(st: ReplayState, ev: Event) -> None:
    if ev[S.F_FLUSH_DEV_IOTLB_RC] == 0:
        caches.flush_dev_iotlb(st, ev[S.F_FLUSH_DEV_IOTLB_IOMMU], ev[S.F_FLUSH_DEV_IOTLB_SID])


def _translation_enable(st: ReplayState, ev: Event) -> None:
    _set(st, "translation", ev[S.F_TRANSLATION_ENABLE_IOMMU], 1)


def _pt_alloc(st: ReplayState, ev: Event) -> None:
    dom, maddr, what = ev[S.F_PT_ALLOC_DOMAIN], ev[S.F_PT_ALLOC_MADDR], ev[S.F_PT_ALLOC_WHAT]
    hash(dom)                   # the pgd update below must not be the one to fail
    _set(st, "pages", maddr, (dom, what))
    if what in ROOT_TABLES:
        _set(st, "pgd", dom, maddr)


def _drop_tables(st: ReplayState, dom: int) -> None:
    _del(st, "pgd", dom)
    for maddr in [m for m, (d, _) in st.pages.items() if d == dom]:
        _del(st, "pages", maddr)


def _pt_free(st: ReplayState, ev: Event) -> None:
    _drop_tables(st, ev[S.F_PT_FREE_DOMAIN])


def _idmap_add(st: ReplayState, ev: Event) -> None:
    _set(st, "idmaps", (ev[S.F_IDMAP_ADD_DOMAIN], ev[S.F_IDMAP_ADD_BASE], ev[S.F_IDMAP_ADD_END]),
         (ev[S.F_IDMAP_ADD_ACCESS], ev[S.F_IDMAP_ADD_REFCOUNT]))


def _idmap_remove(st: ReplayState, ev: Event) -> None:
    key = (ev[S.F_IDMAP_REMOVE_DOMAIN], ev[S.F_IDMAP_REMOVE_BASE], ev[S.F_IDMAP_REMOVE_END])
    rc = ev[S.F_IDMAP_REMOVE_REFCOUNT]
    if rc > 0:
        old = st.idmaps.get(key)
        _set(st, "idmaps", key, (old[0] if old else None, rc))
    else:
        _del(st, "idmaps", key)


def _device_add(st: ReplayState, ev: Event) -> None:
    _set(st, "present", (ev[S.F_DEVICE_ADD_SEG], ev[S.F_DEVICE_ADD_BDF]), 1)


def _device_remove(st: ReplayState, ev: Event) -> None:
    key = (ev[S.F_DEVICE_REMOVE_SEG], ev[S.F_DEVICE_REMOVE_BDF])
    _del(st, "present", key)
    _del(st, "owners", key)
    _del(st, "ats", key)


def _ats_enable(st: ReplayState, ev: Event) -> None:
    key = (ev[S.F_ATS_ENABLE_SEG], ev[S.F_ATS_ENABLE_BDF])
    if ev[S.F_ATS_ENABLE_VALUE]:
        _set(st, "ats", key, 1)
    elif key in st.ats:
        caches.ats_disable(st, *key)
        _del(st, "ats", key)


def _domain_create(st: ReplayState, ev: Event) -> None:
    _set(st, "domains", ev[S.F_DOMAIN_CREATE_DOMAIN], 1)


def _domain_dying(st: ReplayState, ev: Event) -> None:
    dom = ev[S.F_DOMAIN_DYING_DOMAIN]
    if dom in st.domains:
        _set(st, "dying", dom, 1)


def _domain_destroy(st: ReplayState, ev: Event) -> None:
    # A destroyed domain's tables, identity maps and IOMMU bitmap go with it
    # (struct domain is freed), whatever events preceded.
    dom = ev[S.F_DOMAIN_DESTROY_DOMAIN]
    _del(st, "domains", dom)
    _del(st, "dying", dom)
    _drop_tables(st, dom)
    for key in [k for k in st.idmaps if k[0] == dom]:
        _del(st, "idmaps", key)
    for bkey in [k for k in st.iommu_bitmap if k[0] == dom]:
        _del(st, "iommu_bitmap", bkey)


def _pseudo_domid(st: ReplayState, ev: Event) -> None:
    # the device's pseudo domain ID taken (value 1) or returned (value 0)
    dom = ev[S.F_PSEUDO_DOMID_DOMAIN]
    if ev[S.F_PSEUDO_DOMID_VALUE]:
        _set(st, "pseudo", dom, (ev[S.F_PSEUDO_DOMID_SEG], ev[S.F_PSEUDO_DOMID_BDF]))
    else:
        _del(st, "pseudo", dom)


def _rollback_begin(st: ReplayState, ev: Event) -> None:
    st.rollback += 1


def _rollback_end(st: ReplayState, ev: Event) -> None:
    if st.rollback:
        st.rollback -= 1


def _no_state(st: ReplayState, ev: Event) -> None:
    """Kinds that record what happened without changing replayed state
    (log lines, injected faults, engine limits, write-buffer flushes)."""


def _lock_wait(st: ReplayState, ev: Event) -> None:
    _set(st, "waits", ev[S.I_CPU], (ev[S.F_LOCK_WAIT_LOCK], ev[S.F_LOCK_WAIT_TARGET]))


_RARE = {
    S.K_LOCK_WAIT: _lock_wait,
    S.K_DMA: _no_state,
    S.K_ROOT_WRITE: _root_write,
    S.K_FLUSH_DEV_IOTLB: _flush_dev_iotlb,
    S.K_FLUSH_WRITE_BUFFER: _no_state,
    S.K_TRANSLATION_ENABLE: _translation_enable,
    S.K_PT_ALLOC: _pt_alloc,
    S.K_PT_FREE: _pt_free,
    S.K_IDMAP_ADD: _idmap_add,
    S.K_IDMAP_REMOVE: _idmap_remove,
    S.K_DEVICE_ADD: _device_add,
    S.K_DEVICE_REMOVE: _device_remove,
    S.K_ATS_ENABLE: _ats_enable,
    S.K_DOMAIN_CREATE: _domain_create,
    S.K_DOMAIN_DYING: _domain_dying,
    S.K_DOMAIN_DESTROY: _domain_destroy,
    S.K_ROLLBACK_BEGIN: _rollback_begin,
    S.K_ROLLBACK_END: _rollback_end,
    S.K_FAULT_INJECT: _no_state,
    S.K_ENGINE_LIMIT: _no_state,
    S.K_LOG: _no_state,
    S.K_PSEUDO_DOMID: _pseudo_domid,
}
# This build's catalogue, for the fold's checks of the rare kinds and the
# wording of every BadEvent (the reader's words: replay/validate.py).
_CHECK = EventCheck(SimpleNamespace(kinds=S.KINDS, funcs=S.FUNCS, to_current=tuple(range(len(S.KINDS)))))

# Every kind of the catalogue has a handler; an unknown code (a newer schema
# appending kinds) is skipped, so old readers replay what they understand.
assert set(_RARE) | {S.K_CALL, S.K_RETURN, S.K_LOCK, S.K_UNLOCK, S.K_CTX_WRITE, S.K_DID_BITMAP,
                     S.K_DID_MAP, S.K_OP_BEGIN, S.K_OP_END, S.K_IOMMU_BITMAP, S.K_OWNER_MOVE,
                     S.K_FLUSH_CONTEXT, S.K_FLUSH_IOTLB, S.K_CACHE_SYNC} == set(range(len(S.KINDS)))
# What the fold dispatches to: kinds without state effect are not called at
# all.  About 3% of a synth trace takes this path.
_DISPATCH = {k: h for k, h in _RARE.items() if h is not _no_state}


def fold(st: ReplayState, events: Iterable[Event]) -> ReplayState:
    """Apply ``events`` (an iterable of event arrays) to ``st`` in order.

    Every event is checked against the catalogue as it is applied: prefix
    types and each field's type (tracer.schema), with the same rules and
    words as replay.validate; the reader leaves these to the fold when asked
    to (``Trace.iter_chunks(folded=True)``; it still checks arrays, seqs and
    the kind and func codes), so they cost one test per field here instead
    of a pass of their own.  Likewise the value rules of the hottest kinds
    (replay.validate.FOLD_VALUE_RULES: lock names, context entries >= 0);
    the reader applies the others per chunk."""
    # Locals: attribute and global lookups inside the loop cost more than the
    # work of most handlers.  Field indices too: ``ev[F_CTX_WRITE_NEW_LO]``
    # with a local index costs what ``ev[13]`` did (a LOAD_FAST for the
    # LOAD_CONST), a global or attribute load per access would not.
    K_CALL, K_RETURN, K_LOCK, K_UNLOCK = S.K_CALL, S.K_RETURN, S.K_LOCK, S.K_UNLOCK
    K_CTX_WRITE, K_DID_BITMAP, K_DID_MAP = S.K_CTX_WRITE, S.K_DID_BITMAP, S.K_DID_MAP
    K_OP_BEGIN, K_OP_END, K_IOMMU_BITMAP, K_OWNER_MOVE = S.K_OP_BEGIN, S.K_OP_END, S.K_IOMMU_BITMAP, S.K_OWNER_MOVE
    K_FLUSH_CONTEXT, K_FLUSH_IOTLB, K_CACHE_SYNC = S.K_FLUSH_CONTEXT, S.K_FLUSH_IOTLB, S.K_CACHE_SYNC
    I_KIND, I_SEQ, I_CPU, I_OP, I_FUNC, I_LABEL = S.I_KIND, S.I_SEQ, S.I_CPU, S.I_OP, S.I_FUNC, S.I_LABEL
    F_CALL_ARGS, F_RETURN_RC, F_OP_END_RC = S.F_CALL_ARGS, S.F_RETURN_RC, S.F_OP_END_RC
    F_LOCK_LOCK, F_LOCK_TARGET = S.F_LOCK_LOCK, S.F_LOCK_TARGET
    F_UNLOCK_LOCK, F_UNLOCK_TARGET = S.F_UNLOCK_LOCK, S.F_UNLOCK_TARGET
    F_DID_BITMAP_IOMMU, F_DID_BITMAP_DID, F_DID_BITMAP_VALUE = (
        S.F_DID_BITMAP_IOMMU, S.F_DID_BITMAP_DID, S.F_DID_BITMAP_VALUE)
    F_IOMMU_BITMAP_DOMAIN, F_IOMMU_BITMAP_IOMMU, F_IOMMU_BITMAP_VALUE = (
        S.F_IOMMU_BITMAP_DOMAIN, S.F_IOMMU_BITMAP_IOMMU, S.F_IOMMU_BITMAP_VALUE)
    F_OP_BEGIN_VERB, F_OP_BEGIN_END = S.F_OP_BEGIN_VERB, S.F_OP_BEGIN_SEG + 1
    F_FLUSH_CONTEXT_IOMMU, F_FLUSH_CONTEXT_GRAN, F_FLUSH_CONTEXT_DID = (
        S.F_FLUSH_CONTEXT_IOMMU, S.F_FLUSH_CONTEXT_GRAN, S.F_FLUSH_CONTEXT_DID)
    F_FLUSH_CONTEXT_SID, F_FLUSH_CONTEXT_FM, F_FLUSH_CONTEXT_NON_PRESENT, F_FLUSH_CONTEXT_RC = (
        S.F_FLUSH_CONTEXT_SID, S.F_FLUSH_CONTEXT_FM, S.F_FLUSH_CONTEXT_NON_PRESENT, S.F_FLUSH_CONTEXT_RC)
    F_FLUSH_IOTLB_IOMMU, F_FLUSH_IOTLB_GRAN, F_FLUSH_IOTLB_DID, F_FLUSH_IOTLB_ADDR = (
        S.F_FLUSH_IOTLB_IOMMU, S.F_FLUSH_IOTLB_GRAN, S.F_FLUSH_IOTLB_DID, S.F_FLUSH_IOTLB_ADDR)
    F_FLUSH_IOTLB_ORDER, F_FLUSH_IOTLB_NON_PRESENT, F_FLUSH_IOTLB_DEV_IOTLB, F_FLUSH_IOTLB_RC = (
        S.F_FLUSH_IOTLB_ORDER, S.F_FLUSH_IOTLB_NON_PRESENT, S.F_FLUSH_IOTLB_DEV_IOTLB, S.F_FLUSH_IOTLB_RC)
    F_CTX_WRITE_IOMMU, F_CTX_WRITE_BUS, F_CTX_WRITE_DEVFN = S.F_CTX_WRITE_IOMMU, S.F_CTX_WRITE_BUS, S.F_CTX_WRITE_DEVFN
    F_CTX_WRITE_HALF, F_CTX_WRITE_METHOD = S.F_CTX_WRITE_HALF, S.F_CTX_WRITE_METHOD
    F_CTX_WRITE_OLD_LO, F_CTX_WRITE_OLD_HI = S.F_CTX_WRITE_OLD_LO, S.F_CTX_WRITE_OLD_HI
    F_CTX_WRITE_NEW_LO, F_CTX_WRITE_NEW_HI = S.F_CTX_WRITE_NEW_LO, S.F_CTX_WRITE_NEW_HI
    F_CACHE_SYNC_IOMMU, F_CACHE_SYNC_BUS, F_CACHE_SYNC_DEVFN = (
        S.F_CACHE_SYNC_IOMMU, S.F_CACHE_SYNC_BUS, S.F_CACHE_SYNC_DEVFN)
    F_OWNER_MOVE_SEG, F_OWNER_MOVE_BDF, F_OWNER_MOVE_OLD, F_OWNER_MOVE_NEW = (
        S.F_OWNER_MOVE_SEG, S.F_OWNER_MOVE_BDF, S.F_OWNER_MOVE_OLD, S.F_OWNER_MOVE_NEW)
    F_DID_MAP_IOMMU, F_DID_MAP_DID, F_DID_MAP_OLD, F_DID_MAP_NEW = (
        S.F_DID_MAP_IOMMU, S.F_DID_MAP_DID, S.F_DID_MAP_OLD, S.F_DID_MAP_NEW)
    stacks, locks, nest, ctx = st.stacks, st.locks, st.nest, st.ctx
    did_bits, did_map, iommu_bitmap, owners = st.did_bits, st.did_map, st.iommu_bitmap, st.owners
    coherent, cm, translation = st.coherent, st.cm, st.translation
    rare = _DISPATCH.get
    retire, ctx_write = caches.retire, caches.ctx_write
    flush_context, flush_iotlb = caches.flush_context, caches.flush_iotlb
    arrays, scalars, none = _ARRAYS, _ARG_VALUES, None
    nkinds = len(S.KINDS)
    lock_names = _LOCK_NAMES
    ev: Any = None
    key: Any            # a table key; its shape depends on the kind
    try:
        # Branches in order of frequency (synth workload, and the stretches
        # the diff folds): every kind of more than ~1% is handled here, since
        # a handler call through the table costs more than ten comparisons.
        # Inlined handlers keep the order of their checks, so a bad event
        # still fails before it changes anything (BadEvent); each starts
        # with its fields' type checks (raise _Bad: the except clause below
        # words the message).
        for ev in events:
            k = ev[I_KIND]
            f = ev[I_FUNC]
            if (type(k) is not int or type(ev[I_SEQ]) is not int or type(ev[I_CPU]) is not int
                    or type(ev[I_OP]) is not int or type(f) is not int or type(ev[I_LABEL]) is not str):
                raise _Bad
            if k == K_CALL:
                a = ev[F_CALL_ARGS]
                if type(a) not in arrays:
                    raise _Bad
                for p in a:
                    if type(p) not in arrays or len(p) != 2 or type(p[0]) is not str or type(p[1]) not in scalars:
                        raise _Bad
                cpu = ev[I_CPU]
                stacks[cpu] = (stacks.get(cpu), f)
            elif k == K_RETURN:
                if ev[F_RETURN_RC] is not none and type(ev[F_RETURN_RC]) is not int:
                    raise _Bad
                cpu = ev[I_CPU]
                top = stacks.get(cpu)
                if top is not None:
                    if top[0] is None:
                        del stacks[cpu]
                    else:
                        stacks[cpu] = top[0]
            elif k == K_LOCK:
                key = (ev[F_LOCK_LOCK], ev[F_LOCK_TARGET])
                if (type(key[0]) is not str or key[1] is not none and type(key[1]) is not int
                        or key[0] not in lock_names):
                    raise _Bad
                if key in locks:
                    # RCU read-side references nest; spinlocks cannot, but a
                    # damaged trace must not break the count either.
                    nest[key] = nest.get(key, 1) + 1
                else:
                    locks[key] = ev[I_CPU]
                if st.waits and ev[I_CPU] in st.waits:
                    _del(st, "waits", ev[I_CPU])
            elif k == K_UNLOCK:
                key = (ev[F_UNLOCK_LOCK], ev[F_UNLOCK_TARGET])
                if (type(key[0]) is not str or key[1] is not none and type(key[1]) is not int
                        or key[0] not in lock_names):
                    raise _Bad
                depth = nest.get(key) if nest else None
                if depth is None:
                    locks.pop(key, None)
                elif depth == 2:
                    del nest[key]
                else:
                    nest[key] = depth - 1
            elif k == K_DID_BITMAP:
                key = (ev[F_DID_BITMAP_IOMMU], ev[F_DID_BITMAP_DID])
                if type(key[0]) is not int or type(key[1]) is not int or type(ev[F_DID_BITMAP_VALUE]) is not int:
                    raise _Bad
                if ev[F_DID_BITMAP_VALUE]:
                    did_bits[key] = 1
                else:
                    did_bits.pop(key, None)
            elif k == K_IOMMU_BITMAP:
                key = (ev[F_IOMMU_BITMAP_DOMAIN], ev[F_IOMMU_BITMAP_IOMMU])
                if type(key[0]) is not int or type(key[1]) is not int or type(ev[F_IOMMU_BITMAP_VALUE]) is not int:
                    raise _Bad
                if ev[F_IOMMU_BITMAP_VALUE]:
                    iommu_bitmap[key] = 1
                    if st.journal is not None:
                        st.journal.append(("iommu_bitmap", key))
                elif key in iommu_bitmap:
                    del iommu_bitmap[key]
                    if st.journal is not None:
                        st.journal.append(("iommu_bitmap", key))
            elif k == K_OP_BEGIN:
                info = tuple(ev[F_OP_BEGIN_VERB:F_OP_BEGIN_END])     # verb, bdf, domain, seg
                if (len(info) != 4 or type(info[0]) is not str or any(v is not none and type(v) is not int
                                                                       for v in info[1:])):
                    raise _Bad
                st.open_op = ev[I_OP]
                st.op_info = info
                _set(st, "open_ops", ev[I_CPU], (ev[I_OP],) + info)
            elif k == K_OP_END:
                if type(ev[F_OP_END_RC]) is not int:
                    raise _Bad
                _del(st, "open_ops", ev[I_CPU])
                if st.open_ops:
                    # another CPU is still inside an op: the lowest-numbered one's is "the" open op
                    rest = st.open_ops[min(st.open_ops)]
                    st.open_op, st.op_info = rest[0], rest[1:]
                else:
                    st.open_op = None
                    st.op_info = None
            elif k == K_FLUSH_CONTEXT:
                if (type(ev[F_FLUSH_CONTEXT_IOMMU]) is not int or type(ev[F_FLUSH_CONTEXT_GRAN]) is not str
                        or type(ev[F_FLUSH_CONTEXT_DID]) is not int or type(ev[F_FLUSH_CONTEXT_SID]) is not int
                        or type(ev[F_FLUSH_CONTEXT_FM]) is not int or type(ev[F_FLUSH_CONTEXT_NON_PRESENT]) is not bool
                        or type(ev[F_FLUSH_CONTEXT_RC]) is not int):
                    raise _Bad
                if ev[F_FLUSH_CONTEXT_RC] == 0:         # only rc 0 invalidated anything
                    flush_context(st, ev[F_FLUSH_CONTEXT_IOMMU], ev[F_FLUSH_CONTEXT_GRAN], ev[F_FLUSH_CONTEXT_DID],
                                  ev[F_FLUSH_CONTEXT_SID], ev[F_FLUSH_CONTEXT_FM])
            elif k == K_FLUSH_IOTLB:
                if (type(ev[F_FLUSH_IOTLB_IOMMU]) is not int or type(ev[F_FLUSH_IOTLB_GRAN]) is not str
                        or type(ev[F_FLUSH_IOTLB_DID]) is not int or type(ev[F_FLUSH_IOTLB_ADDR]) is not int
                        or type(ev[F_FLUSH_IOTLB_ORDER]) is not int or type(ev[F_FLUSH_IOTLB_NON_PRESENT]) is not bool
                        or type(ev[F_FLUSH_IOTLB_DEV_IOTLB]) is not bool or type(ev[F_FLUSH_IOTLB_RC]) is not int):
                    raise _Bad
                if ev[F_FLUSH_IOTLB_RC] == 0:
                    flush_iotlb(st, ev[F_FLUSH_IOTLB_IOMMU], ev[F_FLUSH_IOTLB_GRAN], ev[F_FLUSH_IOTLB_DID])
            elif k == K_CTX_WRITE:
                key = (ev[F_CTX_WRITE_IOMMU], ev[F_CTX_WRITE_BUS], ev[F_CTX_WRITE_DEVFN])
                new = (ev[F_CTX_WRITE_NEW_LO], ev[F_CTX_WRITE_NEW_HI])
                if (type(new[0]) is not int or type(new[1]) is not int or type(key[0]) is not int
                        or type(key[1]) is not int or type(key[2]) is not int
                        or type(ev[F_CTX_WRITE_HALF]) is not str or type(ev[F_CTX_WRITE_METHOD]) is not str
                        or type(ev[F_CTX_WRITE_OLD_LO]) is not int or type(ev[F_CTX_WRITE_OLD_HI]) is not int):
                    # Everything downstream does bit arithmetic on entries.
                    raise _Bad
                if new[0] < 0 or new[1] < 0 or ev[F_CTX_WRITE_OLD_LO] < 0 or ev[F_CTX_WRITE_OLD_HI] < 0:
                    raise _Bad          # u64 (msgpack holds nothing above 2**64-1)
                old = ctx.get(key, ZERO)
                ctx[key] = new
                if coherent:
                    # Inline fast path of caches.ctx_write: only a cacheable
                    # value on a translating unit can leave anything behind.
                    if old != new and (old[0] & 1 or cm) and key[0] in translation:
                        retire(st, key, old)
                else:
                    ctx_write(st, key, old, new)
            elif k == K_CACHE_SYNC:
                if (type(ev[F_CACHE_SYNC_IOMMU]) is not int or type(ev[F_CACHE_SYNC_BUS]) is not int
                        or type(ev[F_CACHE_SYNC_DEVFN]) is not int):
                    raise _Bad
                # A coherent unit sees every store at once: nothing to sync.
                if not coherent:
                    _cache_sync(st, ev)
            elif k == K_OWNER_MOVE:
                key = (ev[F_OWNER_MOVE_SEG], ev[F_OWNER_MOVE_BDF])
                owner = ev[F_OWNER_MOVE_NEW]
                if (type(key[0]) is not int or type(key[1]) is not int
                        or ev[F_OWNER_MOVE_OLD] is not none and type(ev[F_OWNER_MOVE_OLD]) is not int
                        or owner is not none and type(owner) is not int):
                    raise _Bad
                if owner is None:
                    if key in owners:
                        del owners[key]
                        if st.journal is not None:
                            st.journal.append(("owners", key))
                else:
                    owners[key] = owner
                    if st.journal is not None:
                        st.journal.append(("owners", key))
            elif k == K_DID_MAP:
                key = (ev[F_DID_MAP_IOMMU], ev[F_DID_MAP_DID])
                if (type(key[0]) is not int or type(key[1]) is not int or type(ev[F_DID_MAP_OLD]) is not int
                        or type(ev[F_DID_MAP_NEW]) is not int):
                    raise _Bad
                if ev[F_DID_MAP_NEW]:
                    did_map[key] = ev[F_DID_MAP_NEW]
                else:
                    did_map.pop(key, None)
            elif not 0 <= k < nkinds:
                # A kind this build does not know, from a newer catalogue (the
                # translators give them -1 or len(KINDS); the reader has
                # checked the code against the trace's own table): tolerated.
                pass
            else:
                # The rare kinds: the generic check, then their handler.
                if _CHECK.fields_problem(ev) is not None:
                    raise _Bad
                h = rare(k)
                if h is not None:
                    h(st, ev)
        if ev is not None:
            set_position(st, ev)
    except (_Bad, TypeError, IndexError, KeyError, ValueError, AttributeError) as exc:
        seq = ev[I_SEQ] if isinstance(ev, (list, tuple)) and len(ev) > I_SEQ else "?"
        why = (_CHECK.problem(ev, seq, type(ev), codes=False) if isinstance(ev, (list, tuple))
               else "is not an event array")
        raise BadEvent(seq, why or f"cannot apply {_kind_name(ev)}: {exc}", ev) from None
    return st


class _Bad(Exception):
    """An event off the catalogue, found by fold's inline checks."""


_ARRAYS = (list, tuple)
_ARG_VALUES = S.ARG_VALUE_TYPES
_LOCK_NAMES = frozenset(S.LOCK_NAMES)


def set_position(st: ReplayState, ev: Event) -> None:
    """Record ``ev`` as the last event applied (seq, cpu, op, func, label, kind)."""
    seq, cpu, op, func, label = ev[S.I_SEQ], ev[S.I_CPU], ev[S.I_OP], ev[S.I_FUNC], ev[S.I_LABEL]
    st.seq, st.cpu, st.op, st.func, st.label, st.kind = seq, cpu, op, func, label, ev[S.I_KIND]


def apply(st: ReplayState, event: Event) -> ReplayState:
    """Apply one event (see ``fold``)."""
    return fold(st, (event,))


def _kind_name(ev: Any) -> str:
    try:
        name: str = S.KINDS[ev[S.I_KIND]].name
        return name
    except (TypeError, IndexError, KeyError):
        return "event"


# --- the canonical architectural state -----------------------------------------

def _group(flat: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for a, b in flat:
        out.setdefault(a, []).append(b)
    return out


def func_name(code: object) -> str:
    return S.FUNCS[code] if isinstance(code, int) and 0 <= code < len(S.FUNCS) else str(code)


def to_canonical(st: ReplayState) -> dict[str, Any]:
    """The architectural part of ``st`` in tracer/canonical.py's shape."""
    return canonical(
        ctx=st.ctx, root=st.root,
        did_bitmap=_group(st.did_bits), did_map=st.did_map,
        iommu_bitmap=_group(st.iommu_bitmap),
        pgd=st.pgd, idmaps=st.idmaps, owners=st.owners, ats=st.ats.keys(),
        domains={d: "dying" if d in st.dying else "alive" for d in st.domains},
        translation=st.translation.keys(), pseudo=st.pseudo, locks=st.locks,
        stacks={cpu: [func_name(f) for f in st.stack(cpu)] for cpu in st.stacks},
        ops={cpu: v[0] for cpu, v in st.open_ops.items()},
        waits=st.waits,
    )


# --- checkpoint encoding ----------------------------------------------------------

_SCALARS = ("seq", "op", "label", "func", "kind", "cpu", "open_op", "op_info", "rollback",
            "cm", "coherent", "unit_seg")


# How each table is stored in a checkpoint.  Tables whose values are all 1
# (sets, really) store only their keys: encoding and decoding them is C-level
# list()/dict.fromkeys, and a delta between two versions is a key-set
# difference -- that matters for ``domains``, which can hold thousands.
# Tables are encoded one by one so that a checkpoint can share the bytes of a
# table that did not change since the previous one (replay.seek).
KEYS_ONLY = frozenset(("did_bits", "iommu_bitmap", "present", "ats", "domains", "dying", "translation"))


def table_body(name: str, d: dict[Any, Any]) -> list[Any]:
    """One table as msgpack-ready lists: key and value lists, not a map --
    maps with array keys would not round-trip."""
    if name in KEYS_ONLY:
        return list(d)
    if name == "stacks":
        return [list(d), [_unwind(node) for node in d.values()]]
    if name in _SET_TABLES:
        return [list(d), [tuple(v) for v in d.values()]]
    return [list(d), list(d.values())]


def table_from_body(name: str, body: Any) -> dict[Any, Any]:
    """The inverse of table_body, from what msgpack gives back (tuples)."""
    if name in KEYS_ONLY:
        return dict.fromkeys(body, 1)
    if name == "stacks":
        d: dict[int, Stack | None] = {}
        for cpu, funcs in zip(*body):
            node: Stack | None = None
            for f in funcs:
                node = (node, f)
            d[cpu] = node
        return d
    if name in _SET_TABLES:
        return dict(zip(body[0], map(frozenset, body[1])))
    return dict(zip(*body))


def encode_table(name: str, d: dict[Any, Any]) -> bytes:
    data: bytes = msgpack.packb(table_body(name, d))
    return data


def decode_table(name: str, data: bytes) -> dict[Any, Any]:
    return table_from_body(name, msgpack.unpackb(data, use_list=False, strict_map_key=False))


def _unwind(node: Stack | None) -> tuple[int, ...]:
    out = []
    while node is not None:
        out.append(node[1])
        node = node[0]
    out.reverse()
    return tuple(out)


def scalars_of(st: ReplayState) -> list[Any]:
    return [getattr(st, n) for n in _SCALARS]


def assemble(scalars: Iterable[Any], tables: Iterable[dict[Any, Any]]) -> ReplayState:
    """A state from its scalars and its tables (in TABLES order).  The tables
    are used as given, not copied."""
    st = ReplayState.__new__(ReplayState)
    st.journal = None
    for name, value in zip(_SCALARS, scalars):
        setattr(st, name, value)
    for name, d in zip(TABLES, tables):
        setattr(st, name, d)
    return st


def encode_state(st: ReplayState) -> bytes:
    """A whole state as one msgpack blob."""
    data: bytes = msgpack.packb([STATE_FORMAT, scalars_of(st), [encode_table(n, getattr(st, n)) for n in TABLES]])
    return data


def decode_state(data: bytes) -> ReplayState:
    fmt, scalars, tables = msgpack.unpackb(data, use_list=False, strict_map_key=False)
    if fmt != STATE_FORMAT:
        raise ValueError(f"checkpoint format {fmt}, expected {STATE_FORMAT}")
    return assemble(scalars, [decode_table(n, b) for n, b in zip(TABLES, tables)])
