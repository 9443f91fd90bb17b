"""owner-mismatch: a device whose DMA translates through another domain's
context entry -- judged where no operation is in flight (on any CPU: the
end of an op while another CPU is inside one is not such a point).

Xen records who owns a device (``pdev->domain``) and, separately, writes the
context entries its DMA will be translated by.  The two can disagree when an
operation fails half-way (stable-4.15's -EFAULT for the "already this
domain's" no-op of domain_context_mapping_one, and domain_context_mapping's
P5 rollback working on the devfn find_upstream_bridge overwrote), or when
devices that share a requester ID are split between domains.  This module
compares them.

**DMA sources.**  Every present endpoint (``pcie-endpoint``, ``pci``), each
of its phantom functions, and the ME WiFi phantom function (0:3.7 / 0:22.7,
``me_wifi_quirk``) on behalf of the WLAN device it stands for.  Bridges and
host bridges issue no DMA of their own; their entries are what Xen maps for
the devices behind them.

**The requester ID on the wire.**  A PCIe endpoint and a device on a root
bus: its own.  A conventional PCI device behind a PCIe-to-PCI bridge: the
alias (secondary bus, 00.0) of the topmost such bridge (find_upstream_bridge
picks the topmost, as the bridge closest to the root complex is the one that
re-issues the request); behind a conventional PCI bridge, that bridge's own
requester ID.  Phantom functions: their own.  The other entries Xen maps for
a device (its own number behind a bridge, the bridge's own number behind a
PCIe-to-PCI bridge) are **shadow** entries: no DMA of this device uses them.

**Consistent** means: the entry in memory is present and translates with a
DID whose bitmap bit is set and whose ``domid_map`` slot names the owner,
through page tables the owner owns (``dom_io``: its quarantine tables, or
-- engine ``final`` -- the device's own pseudo domain ID and its tables; a
pass-through entry counts as the hardware domain's); or it is not present
and the owner has no I/O page tables at all (``dom_io`` without quarantine
tables, for instance).

**Findings**, per (source, requester ID):

* wire entry present but not the owner's: ``hazard`` -- the device reaches
  the memory of the domain whose DID or tables the entry carries;
* sources sharing one wire requester ID (devices behind one bridge) owned by
  different domains: every one of them whose wire entry is not its owner's
  is a ``hazard``, whatever the entry holds -- whichever domain Xen maps it
  for, the other's device reaches that domain's memory, and Xen expects such
  devices to be assigned together;
* otherwise a wire entry not present while the owner has tables (the DMA
  faults), and any shadow entry that disagrees with the owner: ``warning``;
* a present entry of a requester ID that no declared device, phantom or
  alias has (the spurious (secbus, bridge devfn) entry of the P5 rollback):
  ``warning``, charged to the device of the operation that left it.

**When.**  Inside an operation the transient entries are what
did-pt-mismatch and rmrr-disconnect describe; owner-mismatch is judged only
when a top-level operation ends (one CPU: nothing else is in flight then),
so the window opens at that op-end event (which has no step label).  It
stays open until an event -- a context store, an ownership move, a DID or
page-table change -- makes the pair consistent again, and is judged afresh
at the next operation end (a different mismatch there closes it and opens
another).  An orphan entry's window lasts until the entry is stored again
(cleared, or rewritten: then judged afresh).  To stay cheap, an operation end re-judges only the sources the
operation touched: the requester IDs it stored, the devices it moved, the
entries carrying a DID it changed, the tables it allocated or freed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from replay.caches import Key
from replay.state import ROOT_TABLES
from tracer import schema as S
from tracer.schema import DOMID_IO

from .base import (
    F_DEV_BDF,
    F_DEV_SEG,
    F_DID_DID,
    F_DID_UNIT,
    F_DOMAIN,
    PAGE_MASK,
    TT_PT,
    Analyser,
    Context,
    Event,
    Hook,
    Names,
    Window,
    domain_name,
)
from .findings import HAZARD, WARNING, Finding, renderer
from .topology import Device, Topology, fmt_rid

ZERO = (0, 0)
SOURCE_TYPES = ("pcie-endpoint", "pci")

# (seg, bdf16): a device as st.present / st.owners key it
Pkey = tuple[int, int]
# a requester ID's entry in memory: None (not present), or (did, DID owner,
# tables owner, pass-through)
Entry = tuple[int, int | None, int | None, bool] | None
# a window key: ("src", source index, requester ID) or ("orphan", requester ID)
WKey = tuple[Any, ...]
# (severity, facts): facts as the deferred detail carries them
Verdict = tuple[str, tuple[Any, ...]]


class Source:
    """One DMA source: a device (or a phantom function of it) and the
    requester IDs Xen maps for it."""

    __slots__ = ("dev", "pkey", "wire", "how", "shadows", "judged")

    def __init__(self, dev: Device, wire: Key, how: str, shadows: tuple[tuple[Key, str], ...]) -> None:
        self.dev = dev
        self.pkey: Pkey = (dev.loc[0], (dev.loc[1] << 8) | dev.loc[2])
        self.wire = wire            # the requester ID its DMA carries
        self.how = how              # how that requester ID comes about, for the detail
        self.shadows = shadows      # ((key, what), ...): other entries Xen maps for it
        self.judged: tuple[tuple[WKey, Key], ...] = ()     # (window key, requester ID), set by the analyser


def build_sources(topo: Topology) -> list[Source]:
    """Every DMA source of the platform, from the trace header's topology."""
    out: list[Source] = []
    for dev in topo.devices:
        if dev.type not in SOURCE_TYPES or dev.unit is None:
            continue
        seg, bus, devfn = dev.loc
        u = dev.unit
        own = (u, bus, devfn)
        wire, how, shadows = own, "its own requester ID", []
        up = topo.upstream_bridge(seg, bus) if dev.type == "pci" else None
        if up is not None:
            (bbus, bdevfn), secbus = up
            bridge = topo.by_loc.get((seg, bbus, bdevfn))
            bname = fmt_rid(seg, bbus, bdevfn)
            bkey = (u, bbus, bdevfn)
            if bridge is not None and bridge.type == "pcie2pci-bridge":
                wire = (u, secbus, 0)
                how = f"the alias PCIe-to-PCI bridge {bname} gives the requests it forwards"
                shadows = [(k, w) for k, w in ((own, "its own requester ID"),
                                               (bkey, f"bridge {bname}'s own requester ID")) if k != wire]
            else:
                wire = bkey
                how = f"the requester ID of PCI bridge {bname}, which issues its requests"
                shadows = [(own, "its own requester ID")]
        out.append(Source(dev, wire, how, tuple(shadows)))
        if dev.stride:
            fn = devfn + dev.stride
            while fn >> 3 == devfn >> 3 and fn <= 0xFF:
                out.append(Source(dev, (u, bus, fn), f"its phantom function {fmt_rid(seg, bus, fn)}", ()))
                fn += dev.stride
        me = topo._me
        if me is not None and seg == 0 and dev.id32 in me[0]:
            mu = topo.drhd(0, 0, me[1] << 3)
            if mu is not None:
                rid = fmt_rid(0, 0, (me[1] << 3) | 7)
                out.append(Source(dev, (mu, 0, (me[1] << 3) | 7),
                                  f"the ME phantom function {rid} (me_wifi_quirk)", ()))
    return out


class OwnerAnalyser(Analyser):
    KINDS = ("owner-mismatch",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        topo = ctx.topo
        plat = ctx.header.get("platform")
        knobs = plat.get("knobs") if isinstance(plat, dict) else None
        self.hwdom = topo.hardware
        self.hwdom_pt = isinstance(knobs, dict) and knobs.get("hwdom_passthrough") is True
        self.sources = build_sources(topo)
        by_key: dict[Key, list[int]] = {}
        by_pkey: dict[Pkey, list[int]] = {}
        groups: dict[Key, list[int]] = {}
        for i, s in enumerate(self.sources):
            s.judged = tuple((("src", i, k), k) for k in (s.wire,) + tuple(k for k, _ in s.shadows))
            for k in (s.wire,) + tuple(k for k, _ in s.shadows):
                by_key.setdefault(k, []).append(i)
            by_pkey.setdefault(s.pkey, []).append(i)
            groups.setdefault(s.wire, []).append(i)
        self.by_key = {k: tuple(v) for k, v in by_key.items()}       # key -> sources using it
        self.by_pkey = {k: tuple(v) for k, v in by_pkey.items()}     # device -> its sources
        # sources sharing a wire requester ID with another device (split candidates)
        self.group = [tuple(groups[s.wire]) if len(groups[s.wire]) > 1 else () for s in self.sources]
        self.any_group = any(self.group)
        self.grouped = frozenset(i for i, g in enumerate(self.group) if g)
        self.st = st = ctx.st
        # the tables the hooks read, bound once (the fold mutates them in place)
        self._ctx, self._did_bits, self._did_map, self._pages = st.ctx, st.did_bits, st.did_map, st.pages
        self._owners, self._present = st.owners, st.present
        self._did_keys, self._root_keys = ctx.did_keys, ctx.root_keys
        self.declared = set(topo.rid_owner)
        # ownership as the events give it: device -> owner while present, owner -> sources
        self.owner_map: dict[Pkey, int] = {}
        self.owned: dict[int, set[int]] = {}
        self.did_seen: dict[tuple[int, int], int | None] = {}    # (iommu, did) -> what it resolved to when last seen
        # what changed since the last judgement: the sources a store or an
        # ownership move touched, undeclared requester IDs stored, DIDs that
        # resolve anew, domains whose tables came or went
        self.todo: set[int] = set()
        self.orphans: set[Key] = set()
        self.dirty_dids: set[tuple[int, int]] = set()
        self.dirty_doms: set[int] = set()
        # open windows by requester ID and by source
        self.open_by_key: dict[Key, set[WKey]] = {}
        self.open_by_src: dict[int, set[WKey]] = {}
        self.open_devs: dict[Pkey, int] = {}       # device -> how many of its sources' windows are open

    def hooks(self) -> dict[int, Hook]:
        return {
            S.K_CTX_WRITE: self.on_ctx_write,
            S.K_OWNER_MOVE: self.on_device,
            S.K_DEVICE_ADD: self.on_device,
            S.K_DEVICE_REMOVE: self.on_device,
            S.K_DID_MAP: self.on_did,
            S.K_DID_BITMAP: self.on_did,
            S.K_PT_ALLOC: self.on_pt_alloc,
            S.K_PT_FREE: self.on_tables_gone,
            S.K_DOMAIN_DESTROY: self.on_tables_gone,
            S.K_OP_END: self.on_op_end,
        }

    # --- what changed (and which open windows an event may have closed) ------------------

    def on_ctx_write(self, ev: Event) -> None:
        key = self.ctx.cur[0]
        idx = self.by_key.get(key)
        if idx is not None:
            self.todo.update(idx)
        elif key not in self.declared:
            self.orphans.add(key)
        ws = self.open_by_key.get(key)
        if ws:
            self._recheck(ws, ev)

    def on_device(self, ev: Event) -> None:
        pkey = (ev[F_DEV_SEG], ev[F_DEV_BDF])
        idx = self.by_pkey.get(pkey)
        if idx is None:
            return
        o = self._owners.get(pkey) if pkey in self._present else None
        if type(o) is not int:
            o = None
        om = self.owner_map
        old = om.get(pkey)
        if o == old:
            return
        owned = self.owned
        if old is not None:
            owned[old].difference_update(idx)
        if o is None:
            del om[pkey]
        else:
            om[pkey] = o
            s = owned.get(o)
            if s is None:
                owned[o] = set(idx)
            else:
                s.update(idx)
        self.todo.update(idx)
        if pkey in self.open_devs:
            # consistency is the device's own affair (a sibling's move changes only
            # the severity, which the next op-end judges)
            obs = self.open_by_src
            for i in idx:
                ws = obs.get(i)
                if ws:
                    self._recheck(ws, ev)

    def on_did(self, ev: Event) -> None:
        ud = (ev[F_DID_UNIT], ev[F_DID_DID])
        keys = self._did_keys.get(ud)
        if not keys:
            # No entry carries the DID (a fresh allocation, a DID already let
            # go): what it resolves to matters to the entries that store it
            # later, and those stores mark them.  Forget what it resolved to,
            # so the next store of it while an entry carries it counts as a
            # change.
            self.did_seen.pop(ud, None)
            return
        now = self._did_map.get(ud, 0) if ud in self._did_bits else None
        seen = self.did_seen
        if seen.get(ud, -1) == now:
            return          # re-setting a set bit, the common MO5 case: nothing resolves anew
        seen[ud] = now
        self.dirty_dids.add(ud)
        obk = self.open_by_key
        if obk:
            for key in keys:
                ws = obk.get(key)
                if ws:
                    self._recheck(ws, ev)

    def on_pt_alloc(self, ev: Event) -> None:
        if ev[S.F_PT_ALLOC_WHAT] in ROOT_TABLES:
            self.dirty_doms.add(ev[F_DOMAIN])      # the owner has tables now
        keys = self._root_keys.get(ev[S.F_PT_ALLOC_MADDR])
        if keys:
            self._mark_keys(keys)
            if self.open_by_key:
                for key in keys:
                    ws = self.open_by_key.get(key)
                    if ws:
                        self._recheck(ws, ev)

    def on_tables_gone(self, ev: Event) -> None:
        dom = ev[F_DOMAIN]
        self.dirty_doms.add(dom)
        self._mark_keys(self.ctx.keys_on_tables_of(dom))
        if self.open_by_src:
            # an owner without tables makes its non-present entries consistent
            for i in [i for i in self.open_by_src if self.owner_now(self.sources[i].pkey) == dom]:
                ws = self.open_by_src.get(i)
                if ws:
                    self._recheck(ws, ev)

    def _mark_keys(self, keys: Iterable[Key]) -> None:
        by_key, todo = self.by_key, self.todo
        for key in keys:
            idx = by_key.get(key)
            if idx is not None:
                todo.update(idx)
            elif key not in self.declared:
                self.orphans.add(key)

    def owner_now(self, pkey: Pkey) -> int | None:
        """The device's owner in the replayed state (None: absent)."""
        o = self._owners.get(pkey) if pkey in self._present else None
        return o if type(o) is int else None

    # --- the verdict -----------------------------------------------------------------------

    def has_tables(self, dom: int) -> bool:
        return dom in self.ctx.st.pgd or (dom == self.hwdom and self.hwdom_pt)

    def entry(self, key: Key) -> Entry:
        """None (not present), or (did, DID owner, tables owner, pass-through)."""
        ctx = self.ctx
        lo, hi = ctx.st.ctx.get(key, ZERO)
        if not lo & 1:
            return None
        did = (hi >> 8) & 0xFFFF
        downer = ctx.did_owner(key[0], did)
        if (lo >> 2) & 3 == TT_PT:
            return did, downer, self.hwdom, True
        return did, downer, ctx.pt_owner(lo & PAGE_MASK), False

    def split_with(self, i: int, owner: int) -> tuple[tuple[str, int], ...]:
        """The devices sharing i's wire requester ID under another owner."""
        out: set[tuple[str, int]] = set()
        om = self.owner_map
        dev = self.sources[i].dev
        for j in self.group[i]:
            sj = self.sources[j]
            if sj.dev is not dev:
                oj = om.get(sj.pkey)
                if oj is not None and oj != owner:
                    out.add((sj.dev.bdf, oj))
        return tuple(sorted(out))

    def consistent(self, owner: int, key: Key) -> bool:
        """Whether key's entry in memory is owner's: present with a DID
        allocated to owner and owner's tables (pass-through: the hardware
        domain's), or not present while owner has no tables."""
        lo, hi = self._ctx.get(key, ZERO)
        if not lo & 1:
            return not self.has_tables(owner)
        ud = (key[0], (hi >> 8) & 0xFFFF)
        if ud not in self._did_bits:
            return False
        m = self._did_map.get(ud, 0)
        if m != owner:
            # a quarantined device's entry names its pseudo domain ID (engine
            # final): dom_io's, if the tables are that pseudo domain ID's too
            if owner != DOMID_IO or m not in self.st.pseudo:
                return False
            owner = m
        if (lo >> 2) & 3 == TT_PT:
            return owner == self.hwdom
        page = self._pages.get(lo & PAGE_MASK)
        return page is not None and page[0] == owner

    def verdict(self, i: int, key: Key) -> Verdict | None:
        """None when consistent, else (severity, facts) for source i at key
        (its wire requester ID or one of its shadows)."""
        s = self.sources[i]
        owner = self.owner_map.get(s.pkey)
        if owner is None or self.consistent(owner, key):
            return None
        e = self.entry(key)
        if key != s.wire:
            return WARNING, ("shadow", owner, e)
        split = self.split_with(i, owner) if self.group[i] else ()
        sev = HAZARD if (e is not None or split) else WARNING
        return sev, ("wire", owner, e, split)

    def orphan_verdict(self, key: Key) -> Verdict | None:
        e = self.entry(key)
        return None if e is None else (WARNING, ("orphan", None, e))

    # --- windows -----------------------------------------------------------------------------

    def _open(self, wkey: WKey, key: Key, v: Verdict, ev: Event, device: str | None) -> None:
        src = wkey[1] if wkey[0] == "src" else None
        self.open_window("owner-mismatch", wkey, ev, device=device, rid=self.ctx.rid(key), iommu=key[0],
                         info={"v": v, "key": key, "src": src})
        self.open_by_key.setdefault(key, set()).add(wkey)
        if src is not None:
            self.open_by_src.setdefault(src, set()).add(wkey)
            pkey = self.sources[src].pkey
            self.open_devs[pkey] = self.open_devs.get(pkey, 0) + 1

    def _close(self, wkey: WKey, ev: Event) -> None:
        w = self.open.get(wkey)
        if w is None:
            return
        for index, k in ((self.open_by_key, w.info["key"]), (self.open_by_src, w.info["src"])):
            ws = index.get(k)
            if ws is not None:
                ws.discard(wkey)
                if not ws:
                    del index[k]
        src = w.info["src"]
        if src is not None:
            pkey = self.sources[src].pkey
            n = self.open_devs[pkey] - 1
            if n:
                self.open_devs[pkey] = n
            else:
                del self.open_devs[pkey]
        self.close_window(wkey, ev)

    def _recheck(self, wkeys: Iterable[WKey], ev: Event) -> None:
        """An event may have made these open windows' pairs consistent."""
        for wkey in list(wkeys):
            if wkey[0] == "orphan":
                fixed = not self.st.ctx.get(wkey[1], ZERO)[0] & 1
            else:
                owner = self.owner_now(self.sources[wkey[1]].pkey)
                fixed = owner is None or self.consistent(owner, wkey[2])
            if fixed:
                self._close(wkey, ev)

    def _judge(self, wkey: WKey, key: Key, v: Verdict | None, ev: Event, device: str | None) -> None:
        w = self.open.get(wkey)
        if w is not None:
            if v == w.info["v"]:
                return
            self._close(wkey, ev)
        if v is not None:
            self._open(wkey, key, v, ev, device)

    def on_op_end(self, ev: Event) -> None:
        """A top-level operation returned: judge every source it may have
        changed, and every undeclared requester ID it stored.  With several
        CPUs, only when no other CPU is inside an op: its half-done work is
        not a verdict; what changed is judged at the op end that leaves the
        machine quiet."""
        if len(self.ctx.ops) > 1:
            return
        todo, dids, doms = self.todo, self.dirty_dids, self.dirty_doms
        if dids:
            by_key, did_keys = self.by_key, self._did_keys
            for ud in dids:
                keys = did_keys.get(ud)
                if keys:
                    for key in keys:
                        idx = by_key.get(key)
                        if idx is not None:
                            todo.update(idx)
            dids.clear()
        if doms:
            for dom in doms:
                todo.update(self.owned.get(dom, ()))
            doms.clear()
        orphans = self.orphans
        if not todo:
            if orphans:
                self._judge_orphans(ev)
            return
        if self.any_group and not todo.isdisjoint(self.grouped):
            group = self.group
            for i in list(todo):
                if group[i]:
                    todo.update(group[i])       # a split follows the siblings' owners
        open_ = self.open
        owner_get = self.owner_map.get
        sources = self.sources
        ctxt, did_bits, did_map, pages = self._ctx, self._did_bits, self._did_map, self._pages
        for i in todo:
            s = sources[i]
            owner = owner_get(s.pkey)
            for wkey, key in s.judged:
                if owner is not None:
                    # consistent(owner, key), inlined: this loop runs at every op end
                    lo, hi = ctxt.get(key, ZERO)
                    if not lo & 1:
                        ok = not self.has_tables(owner)
                    else:
                        ud = (key[0], (hi >> 8) & 0xFFFF)
                        if ud not in did_bits or did_map.get(ud, 0) != owner:
                            ok = False
                        elif (lo >> 2) & 3 == TT_PT:
                            ok = owner == self.hwdom
                        else:
                            page = pages.get(lo & PAGE_MASK)
                            ok = page is not None and page[0] == owner
                    if not ok:
                        v = self.verdict(i, key)
                        if v is not None or wkey in open_:
                            self._judge(wkey, key, v, ev, s.dev.bdf)
                        continue
                if wkey in open_:
                    self._judge(wkey, key, None, ev, None)
        todo.clear()
        if orphans:
            self._judge_orphans(ev)

    def _judge_orphans(self, ev: Event) -> None:
        open_ = self.open
        for key in sorted(self.orphans):
            wkey = ("orphan", key)
            v = self.orphan_verdict(key)
            if v is not None or wkey in open_:
                self._judge(wkey, key, v, ev, self.ctx.op_device)
        self.orphans.clear()

    def finish(self) -> None:
        super().finish()
        self.open_by_key.clear()
        self.open_by_src.clear()
        self.open_devs.clear()

    # --- findings ------------------------------------------------------------------------------

    def finalize(self, w: Window, end: int | None, end_label: str | None, ev: Event | None) -> Finding | None:
        sev, facts = w.info["v"]
        src = w.info["src"]
        if facts[0] == "orphan":
            text = None
        elif facts[0] == "shadow":
            text = dict(self.sources[src].shadows)[w.info["key"]]
        else:
            text = self.sources[src].how
        detail = (RENDER, self.ctx.names, text, *facts)
        return Finding("owner-mismatch", sev, w.device, w.rid, w.iommu, w.start, end, w.start_label, end_label,
                       detail)


def _entry_str(names: Names, e: tuple[int, int | None, int | None, bool]) -> str:
    did, downer, towner, pt = e
    d = f"DID {did} ({domain_name(names, downer) if downer is not None else 'not allocated'})"
    if pt:
        return f"passes DMA through untranslated (pass-through) with {d}"
    tables = f"{domain_name(names, towner)}'s" if towner is not None else "freed"
    return f"translates with {d} and {tables} page tables"


def _render(f: Finding, d: tuple[Any, ...]) -> str:
    """The one-sentence detail: which device, owned by whom, DMAs through
    which requester ID into whose memory."""
    _, names, text, what, owner, e = d[:6]
    iommu, rid, device = f.iommu, f.rid, f.device
    head = f"IOMMU {iommu}: "
    if what == "orphan":
        return (head + f"{rid} has a present context entry that {_entry_str(names, e)}, although no device, "
                f"phantom function or bridge alias of the platform has that requester ID")
    own = domain_name(names, owner)
    if what == "shadow":
        state = "is not present" if e is None else _entry_str(names, e) + f", not {own}'s"
        return (head + f"{device}, owned by {own}, does not DMA through {rid} ({text}), but Xen maps that "
                f"entry for it, and the entry {state}")
    split = d[6]
    if e is None:
        out = (f"{device}, owned by {own}, DMAs through {rid} ({text}), whose context entry is not present: "
               f"its DMA faults instead of reaching {own}'s memory")
    else:
        reach = []
        did, downer, towner, _ = e
        if towner != owner:
            reach.append(f"{domain_name(names, towner)}'s memory" if towner is not None else "freed page tables")
        if downer != owner and (towner != downer or towner is None):
            reach.append(f"{domain_name(names, downer)}'s memory (through IOTLB entries tagged DID {did})"
                         if downer is not None else f"whatever domain DID {did} is handed to next")
        out = (f"{device}, owned by {own}, DMAs through {rid} ({text}), whose context entry "
               f"{_entry_str(names, e)}: the device reaches {' and '.join(reach)}")
    if split:
        others = ", ".join(f"{b} ({domain_name(names, o)})" for b, o in split)
        out += (f"; {others} share{'s' if len(split) == 1 else ''} that requester ID under another owner, and "
                f"Xen expects devices behind one bridge to be assigned together")
    return head + out


RENDER = renderer(_render)
