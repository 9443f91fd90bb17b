"""Shared machinery of the analysers: the analysis context (replayed state,
platform topology, incremental indexes every analyser reads) and the window
bookkeeping that turns "the condition started / stopped holding" into
findings.

Positions follow docs/CLI.md#positions: a hook runs right after its event was folded, so
a condition found true in a hook for event ``s`` holds for ``state_at(s)``:
the window opens at ``s`` (``start_label`` = that event's label) and closes at
the first event after which it is false.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from replay import caches
from replay.caches import Key, StateTables
from tracer import schema as S
from tracer.schema import DOMID_INVALID

from .findings import HAZARD, Finding
from .topology import SPECIAL, Topology, fmt_rid

ZERO = (0, 0)

# A decoded event: [kind, seq, cpu, op, func, label, *fields] (tracer.schema)
Event = Sequence[Any]
Hook = Callable[[Event], None]
# (domid, name) pairs of a platform, as deferred details carry them
Names = tuple[tuple[int, str], ...]
# (did, page-table root or None for pass-through) of a present entry in memory
KeyInfo = tuple[int, int | None]

# Hooks registered for several kinds read the fields those kinds have in
# common, at the position they share (checked here, once).
F_KEY_IOMMU, F_KEY_BUS, F_KEY_DEVFN = S.F_CTX_WRITE_IOMMU, S.F_CTX_WRITE_BUS, S.F_CTX_WRITE_DEVFN
assert (S.F_CACHE_SYNC_IOMMU, S.F_CACHE_SYNC_BUS, S.F_CACHE_SYNC_DEVFN) == (F_KEY_IOMMU, F_KEY_BUS, F_KEY_DEVFN)
F_DID_UNIT, F_DID_DID = S.F_DID_MAP_IOMMU, S.F_DID_MAP_DID
assert (S.F_DID_BITMAP_IOMMU, S.F_DID_BITMAP_DID) == (F_DID_UNIT, F_DID_DID)
F_DOMAIN = S.F_DOMAIN_DESTROY_DOMAIN
assert S.F_PT_FREE_DOMAIN == S.F_PT_ALLOC_DOMAIN == S.F_DOMAIN_CREATE_DOMAIN == S.F_DOMAIN_DYING_DOMAIN \
    == S.F_IDMAP_ADD_DOMAIN == S.F_IDMAP_REMOVE_DOMAIN == F_DOMAIN
F_DEV_SEG, F_DEV_BDF = S.F_OWNER_MOVE_SEG, S.F_OWNER_MOVE_BDF
assert (S.F_DEVICE_ADD_SEG, S.F_DEVICE_ADD_BDF) == (S.F_DEVICE_REMOVE_SEG, S.F_DEVICE_REMOVE_BDF) \
    == (S.F_ATS_ENABLE_SEG, S.F_ATS_ENABLE_BDF) == (F_DEV_SEG, F_DEV_BDF)
P_BIT = 1
PAGE_MASK = caches.PAGE_MASK_4K
TT_PT = caches.TT_PASS_THRU


def domain_name(names: Names, domid: int | None) -> str:
    """A domid's name from a Context.names tuple (the scenario's names, in
    a form the garbage collector does not track), as docs/CLI.md#names writes them."""
    if domid is None or domid == DOMID_INVALID:
        return "DOMID_INVALID"
    for d, name in names:
        if d == domid:
            return name
    return SPECIAL.get(domid, f"d{domid}")


def label_of(ev: Event) -> str | None:
    """An event's step label, None for an unlabelled one."""
    return ev[S.I_LABEL] or None


class Window:
    """An open finding under construction."""

    __slots__ = ("kind", "wkey", "device", "rid", "iommu", "start", "start_label", "op", "info")

    def __init__(self, kind: str, wkey: Any, device: str | None, rid: str | None, iommu: int | None,
                 start: int, start_label: str | None, op: int | None, info: dict[str, Any]) -> None:
        self.kind = kind
        self.wkey = wkey
        self.device = device
        self.rid = rid
        self.iommu = iommu
        self.start = start
        self.start_label = start_label
        self.op = op
        self.info = info


class Context:
    """What all analysers share.  ``st`` is the replayed state (replay.state),
    updated by the driver before any hook runs for an event."""

    def __init__(self, header: object, st: StateTables) -> None:
        self.header: dict[str, Any] = header if isinstance(header, dict) else {}
        self.topo = Topology(self.header)
        # (domid, name) pairs: what deferred details name domains with
        self.names: Names = tuple(sorted(self.topo.names.items()))
        self.st = st
        self.out: list[Finding] = []
        # The top-level operation each CPU is inside: cpu -> [op, seg, bdf,
        # device name or _UNNAMED (formatted on first use)].  ``cpu`` is the
        # CPU of the event whose hooks run (the driver sets it before them),
        # so ``op`` and ``op_device`` are that CPU's: with several CPUs,
        # another CPU's op is not "the running operation".
        self.cpu = 0
        self.ops: dict[int, list[Any]] = {}
        # domain lifecycle, from domain-create / -dying / -destroy
        self.alive: set[int] = set()
        self.dying: set[int] = set()
        # present context entries in memory: key -> (did, root or None)
        # (root None: pass-through, which translates nothing)
        self.keyinfo: dict[Key, KeyInfo] = {}
        self.did_keys: dict[tuple[int, int], set[Key]] = {}    # (iommu, did) -> present entries carrying did
        self.root_keys: dict[int, set[Key]] = {}    # root maddr -> translating entries using it
        self.dom_roots: dict[int, set[int]] = {}    # domid -> {root maddr in root_keys owned by it}
        self.root_owner: dict[int, int] = {}        # root maddr in root_keys -> its owner when first used
        self.bits_on: dict[int, set[int]] = {}      # iommu -> {did}: set DID-bitmap bits
        self.map_dids: dict[int, set[tuple[int, int]]] = {}     # domid -> {(iommu, did)} whose slot names it
        self.pdevs_on: dict[tuple[int, int], int] = {}  # (domid, iommu) -> number of pdevs of domid behind iommu
        self.owner_unit: dict[tuple[int, int], tuple[int, int]] = {}   # (seg, bdf16) -> (owner, unit) as last seen
        self.mismatch_keys: dict[int, set[Key]] = {}    # iommu -> entries pairing a DID with another's tables
        # the Xen warning line of the non-cx16 best-effort path, until the
        # store it announces (the next ctx-write of the CPU that printed it)
        self.warning: str | None = None
        self.warning_cpu = 0
        # per ctx-write: (key, old info, new info)
        self.cur: tuple[Key, KeyInfo | None, KeyInfo | None] = ((0, 0, 0), None, None)
        self._rids: dict[Key, str] = {}
        # one string object per step label: every event decodes its own copy,
        # and a finding keeps two of them for as long as it lives
        self._labels: dict[str, str] = {}

    # --- names ---------------------------------------------------------------------

    def dom(self, domid: int | None) -> str:
        name = self.topo.domain_name(domid)
        return name if name is not None else "DOMID_INVALID"

    def rid(self, key: Key) -> str:
        r = self._rids.get(key)
        if r is None:
            r = self._rids[key] = self.topo.key_str(key)
        return r

    def label(self, ev: Event) -> str | None:
        """``label_of(ev)``, interned: findings share one object per label."""
        lab = ev[S.I_LABEL]
        if not lab:
            return None
        return self._labels.setdefault(lab, lab)

    def device_of(self, key: Key) -> str | None:
        """The device a requester ID belongs to; a requester ID no declared
        device uses (e.g. the spurious (secbus, bridge devfn) entry of the
        S4 rollback) is charged to the device of the running operation."""
        return self.topo.device_of(key) or self.op_device

    # --- resolution ------------------------------------------------------------------

    def did_owner(self, u: int, did: int) -> int | None:
        """The domid domid_map gives DID did on unit u (the map is zero-filled),
        None when the bitmap bit is clear or the slot says DOMID_INVALID."""
        if (u, did) not in self.st.did_bits:
            return None
        m = self.st.did_map.get((u, did), 0)
        return None if m == DOMID_INVALID else m

    def pt_owner(self, root: int) -> int | None:
        page = self.st.pages.get(root)
        return page[0] if page is not None else None

    def keys_on_tables_of(self, dom: int) -> list[Key]:
        """Keys whose entry in memory uses tables dom owned when first used."""
        out: list[Key] = []
        for root in self.dom_roots.get(dom, ()):
            out.extend(self.root_keys.get(root, ()))
        return out

    def keys_with_did(self, u: int, did: int) -> Iterable[Key]:
        return self.did_keys.get((u, did), ())

    def owner_dying(self, domid: int | None) -> bool:
        """The one home of MAP_OWNER_DYING's rule: a DID of a dying domain has
        no victims.  Whatever a wrong pairing under it fills into the IOTLB
        can only be hit by the dying domain's own devices, whose DMA Xen is
        tearing down: did-pt-mismatch and foreign-iotlb name no other
        requester ID for it (and are a ``warning`` without victims)."""
        return domid in self.dying

    # --- index maintenance (driver calls these before the analysers) -------------------

    def warning_of(self, ev: Event) -> str | None:
        """The warning line a ctx-write was announced by: the CPU's own."""
        if ev[S.I_KIND] == S.K_CTX_WRITE and ev[S.I_CPU] == self.warning_cpu:
            return self.warning
        return None

    def on_ctx_write(self, ev: Event) -> None:
        key = (ev[S.F_CTX_WRITE_IOMMU], ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN])
        lo, hi = ev[S.F_CTX_WRITE_NEW_LO], ev[S.F_CTX_WRITE_NEW_HI]
        keyinfo = self.keyinfo
        new: KeyInfo | None
        if lo & P_BIT:
            new = ((hi >> 8) & 0xFFFF, None if (lo >> 2) & 3 == TT_PT else lo & PAGE_MASK)
        else:
            new = None
        old = keyinfo.get(key)
        if old == new:
            # a store that changes neither the DID nor the tables in use
            # (P cleared and set again, AW/FPD, a half written back)
            self.cur = (key, old, new)
            return
        if old is not None:
            del keyinfo[key]
            s = self.did_keys.get((key[0], old[0]))
            if s is not None:
                s.discard(key)
                if not s:
                    del self.did_keys[(key[0], old[0])]
            if old[1] is not None:
                s = self.root_keys.get(old[1])
                if s is not None:
                    s.discard(key)
                    if not s:
                        del self.root_keys[old[1]]
                        owner = self.root_owner.pop(old[1], None)
                        roots = self.dom_roots.get(owner) if owner is not None else None
                        if owner is not None and roots is not None:
                            roots.discard(old[1])
                            if not roots:
                                del self.dom_roots[owner]
        if new is not None:
            did, root = new
            keyinfo[key] = new
            dk = (key[0], did)
            s = self.did_keys.get(dk)
            if s is None:
                self.did_keys[dk] = {key}
            else:
                s.add(key)
            if root is not None:
                s = self.root_keys.get(root)
                if s is None:
                    self.root_keys[root] = {key}
                    page = self.st.pages.get(root)
                    if page is not None:
                        self.root_owner[root] = page[0]
                        self.dom_roots.setdefault(page[0], set()).add(root)
                else:
                    s.add(key)
        self.cur = (key, old, new)

    # --- the cache model, scanned directly (it only holds what outlived memory:
    # a handful of entries between a store and its flush) ------------------------------

    def cc_keys_on(self, u: int) -> list[Key]:
        """Keys of unit u the context-cache model holds values for."""
        return [k for k in self.st.cc if k[0] == u]

    def fills_by(self, key: Key) -> list[tuple[int, int]]:
        """[(did, pt)]: IOTLB fills through key the cache model holds."""
        u, b, df = key
        out: list[tuple[int, int]] = []
        for (tu, did), fills in self.st.tlb.items():
            if tu == u:
                for fb, fdf, pt in fills:
                    if fb == b and fdf == df:
                        out.append((did, pt))
        return out

    def fillers_on(self, u: int) -> set[Key]:
        """Keys of unit u with IOTLB fills in the cache model."""
        return {(u, b, df) for (tu, _), fills in self.st.tlb.items() if tu == u for b, df, _ in fills}

    @staticmethod
    def flush_targets(ev: Event) -> list[Key] | None:
        """Keys a completed context flush can have emptied: the (bus, devfn)
        a device-selective flush names (with its function mask), or None for
        a domain-selective or global one (any key of the unit)."""
        if ev[S.F_FLUSH_CONTEXT_GRAN] != "device":
            return None
        u, sid, fm = ev[S.F_FLUSH_CONTEXT_IOMMU], ev[S.F_FLUSH_CONTEXT_SID], ev[S.F_FLUSH_CONTEXT_FM]
        mask = caches.FM_MASK[fm & 3]
        bus, base = sid >> 8, (sid & 0xFF) & ~mask
        return [(u, bus, base | low) for low in range(8) if not low & ~mask]

    def on_did_map(self, ev: Event) -> None:
        u, did, old, new = ev[F_DID_UNIT], ev[F_DID_DID], ev[S.F_DID_MAP_OLD], ev[S.F_DID_MAP_NEW]
        s = self.map_dids.get(old)
        if s is not None:
            s.discard((u, did))
        self.map_dids.setdefault(new, set()).add((u, did))

    def on_did_bitmap(self, ev: Event) -> None:
        u, did = ev[F_DID_UNIT], ev[F_DID_DID]
        if ev[S.F_DID_BITMAP_VALUE]:
            self.bits_on.setdefault(u, set()).add(did)
            if (u, did) not in self.st.did_map:
                # a slot never written reads 0 (dom0's domid): e.g. the
                # caching-mode reservation of DID 0
                self.map_dids.setdefault(0, set()).add((u, did))
        else:
            s = self.bits_on.get(u)
            if s is not None:
                s.discard(did)

    def on_owner_move(self, ev: Event) -> None:
        seg, bdf = ev[F_DEV_SEG], ev[F_DEV_BDF]
        dev = self.topo.by_loc.get((seg, bdf >> 8, bdf & 0xFF))
        unit = dev.unit if dev is not None else self.topo.drhd(seg, bdf >> 8, bdf & 0xFF)
        prev = self.owner_unit.pop((seg, bdf), None)
        if prev is not None:
            k = prev
            n = self.pdevs_on.get(k, 0) - 1
            if n > 0:
                self.pdevs_on[k] = n
            else:
                self.pdevs_on.pop(k, None)
        new = ev[S.F_OWNER_MOVE_NEW]
        if new is not None and unit is not None:
            k = (new, unit)
            self.owner_unit[(seg, bdf)] = k
            self.pdevs_on[k] = self.pdevs_on.get(k, 0) + 1

    def on_device_remove(self, ev: Event) -> None:
        prev = self.owner_unit.pop((ev[F_DEV_SEG], ev[F_DEV_BDF]), None)
        if prev is not None:
            n = self.pdevs_on.get(prev, 0) - 1
            if n > 0:
                self.pdevs_on[prev] = n
            else:
                self.pdevs_on.pop(prev, None)

    def op_begin(self, ev: Event) -> None:
        self.ops[ev[S.I_CPU]] = [ev[S.I_OP], ev[S.F_OP_BEGIN_SEG], ev[S.F_OP_BEGIN_BDF], _UNNAMED]

    @property
    def op(self) -> int | None:
        """The running operation (of the CPU of the event being looked at)."""
        o = self.ops.get(self.cpu)
        return o[0] if o is not None else None

    @property
    def op_device(self) -> str | None:
        """The running operation's device as 'SSSS:BB:DD.F' (or None),
        formatted on first use."""
        o = self.ops.get(self.cpu)
        if o is None:
            return None
        if o[3] is _UNNAMED:
            d = None
            seg, bdf = o[1], o[2]
            if bdf is not None and 0 <= bdf <= 0xFFFF:
                d = fmt_rid(seg if seg is not None else 0, bdf >> 8, bdf & 0xFF)
            o[3] = d
        name: str | None = o[3]
        return name

    def op_running(self, op: int | None) -> bool:
        """Whether operation ``op`` has begun and not ended (on any CPU)."""
        return op is not None and any(o[0] == op for o in self.ops.values())

    def op_end(self, ev: Event) -> None:
        self.ops.pop(ev[S.I_CPU], None)


_UNNAMED = object()


class Analyser:
    """One family of hazards.  Subclasses declare ``KINDS`` and return their
    hooks from ``hooks()`` (kind code -> method(ev)); ``op_end(ev)`` and
    ``finish()`` are called by the driver.

    An analyser whose windows learn, at the first op end that outlives them,
    that they outlived their operation sets ``MARKS_OUTLIVED`` and calls
    ``outlived()`` at op ends: it yields each open window once, at the first
    op end that outlives it, instead of every open window at every op end
    (a did-leak window stays open across many operations)."""

    KINDS: tuple[str, ...] = ()
    MARKS_OUTLIVED = False

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.open: dict[Any, Window] = {}
        # open windows no op end has outlived yet (MARKS_OUTLIVED), in opening order
        self.unmarked: dict[Any, Window] = {}

    def hooks(self) -> dict[int, Hook]:
        return {}

    # --- windows ---------------------------------------------------------------------

    def open_window(self, kind: str, wkey: Any, ev: Event, *, device: str | None = None, rid: str | None = None,
                    iommu: int | None = None, info: dict[str, Any] | None = None) -> Window:
        w = Window(kind, wkey, device, rid, iommu, ev[S.I_SEQ], self.ctx.label(ev), self.ctx.op,
                   info if info is not None else {})
        self.open[wkey] = w
        if self.MARKS_OUTLIVED:
            self.unmarked[wkey] = w
        return w

    def close_window(self, wkey: Any, ev: Event) -> None:
        w = self.open.pop(wkey, None)
        if w is not None:
            if self.MARKS_OUTLIVED:
                self.unmarked.pop(wkey, None)
            f = self.finalize(w, ev[S.I_SEQ], self.ctx.label(ev), ev)
            if f is not None:
                self.ctx.out.append(f)

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        """Turn a window into a Finding (None: drop it).  end None = still
        open when the trace ends."""
        return Finding(w.kind, HAZARD, w.device, w.rid, w.iommu, w.start, end, w.start_label,
                       end_label, w.info.get("detail", w.kind))

    def op_end(self, ev: Event) -> None:
        pass

    def outlived(self) -> list[Window]:
        """At an op end: the open windows it is the first to outlive -- the
        window's own operation ended (this CPU's op) or is no longer running
        on any CPU (another CPU's op still running is not outlived by this
        one's end).  Each window is returned once; the rest stay pending."""
        unmarked = self.unmarked
        if not unmarked:
            return []
        ctx = self.ctx
        op = ctx.op
        running = {o[0] for o in ctx.ops.values()}
        out = [w for w in unmarked.values() if w.op == op or w.op is None or w.op not in running]
        for w in out:
            del unmarked[w.wkey]
        return out

    def finish(self) -> None:
        self.unmarked.clear()
        for wkey in list(self.open):
            w = self.open.pop(wkey)
            f = self.finalize(w, None, None, None)
            if f is not None:
                self.ctx.out.append(f)


def ranges_str(ranges: Iterable[tuple[int, int]]) -> str:
    return ", ".join(f"[{b:#x}, {e:#x}]" for b, e in ranges)


def join_names(names_: Iterable[str]) -> str:
    names = list(names_)
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]
