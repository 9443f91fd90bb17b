"""owner-mismatch: a device whose DMA translates through another domain's
context entry -- judged where no operation is in flight.

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
through page tables the owner owns (``dom_io``: its quarantine tables; a
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
another).  To stay cheap, an operation end re-judges only the sources the
operation touched: the requester IDs it stored, the devices it moved, the
entries carrying a DID it changed, the tables it allocated or freed.
"""

from __future__ import annotations

from tracer import schema as S

from .base import PAGE_MASK, TT_PT, Analyser
from .findings import HAZARD, WARNING, Finding
from .topology import fmt_rid

ZERO = (0, 0)
SOURCE_TYPES = ("pcie-endpoint", "pci")


class Source:
    """One DMA source: a device (or a phantom function of it) and the
    requester IDs Xen maps for it."""

    __slots__ = ("dev", "pkey", "wire", "how", "shadows")

    def __init__(self, dev, wire, how, shadows) -> None:
        self.dev = dev
        self.pkey = (dev.loc[0], (dev.loc[1] << 8) | dev.loc[2])     # st.present / st.owners key
        self.wire = wire            # (iommu, bus, devfn) its DMA carries
        self.how = how              # how that requester ID comes about, for the detail
        self.shadows = shadows      # ((key, what), ...): other entries Xen maps for it


def build_sources(topo) -> list:
    """Every DMA source of the platform, from the trace header's topology."""
    out = []
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

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        topo = ctx.topo
        knobs = ((ctx.header.get("platform") or {}).get("knobs") or {}) \
            if isinstance(ctx.header.get("platform"), dict) else {}
        self.hwdom = topo.hardware
        self.hwdom_pt = isinstance(knobs, dict) and knobs.get("hwdom_passthrough") is True
        self.sources = build_sources(topo)
        self.by_key: dict = {}      # key -> {source index} using it (wire or shadow)
        self.by_dev: dict = {}      # st.owners key -> [source index]
        self.groups: dict = {}      # wire key -> [source index] sharing it
        for i, s in enumerate(self.sources):
            self.by_key.setdefault(s.wire, set()).add(i)
            for k, _ in s.shadows:
                self.by_key.setdefault(k, set()).add(i)
            self.by_dev.setdefault(s.pkey, []).append(i)
            self.groups.setdefault(s.wire, []).append(i)
        self.declared = set(topo.rid_owner)
        # what changed since the last judgement
        self.dirty_keys: set = set()
        self.dirty_devs: set = set()
        self.dirty_dids: set = set()
        self.dirty_doms: set = set()
        self.open_keys: dict = {}   # key -> number of open windows on it

    def hooks(self) -> dict:
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

    # --- what changed ------------------------------------------------------------------

    def on_ctx_write(self, ev):
        key = self.ctx.cur[0]
        self.dirty_keys.add(key)
        if key in self.open_keys:
            self._recheck(ev, key)

    def on_device(self, ev):
        self.dirty_devs.add((ev[6], ev[7]))
        if self.open:
            self._recheck(ev)

    def on_did(self, ev):
        self.dirty_dids.add((ev[6], ev[7]))
        if self.open:
            self._recheck(ev)

    def on_pt_alloc(self, ev):
        dom, maddr, what = ev[6], ev[7], ev[8]
        if what in ("pgd", "quarantine"):
            self.dirty_doms.add(dom)        # the owner now has tables
        keys = self.ctx.root_keys.get(maddr)
        if keys:
            self.dirty_keys.update(keys)
        if self.open:
            self._recheck(ev)

    def on_tables_gone(self, ev):
        dom = ev[6]
        self.dirty_doms.add(dom)
        self.dirty_keys.update(self.ctx.keys_on_tables_of(dom))
        if self.open:
            self._recheck(ev)

    # --- the verdict -----------------------------------------------------------------------

    def owner_of(self, s):
        st = self.ctx.st
        if s.pkey not in st.present:
            return None
        o = st.owners.get(s.pkey)
        return o if type(o) is int else None

    def has_tables(self, dom) -> bool:
        return dom in self.ctx.st.pgd or (dom == self.hwdom and self.hwdom_pt)

    def entry(self, key):
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

    def split_with(self, i, owner) -> tuple:
        """The other sources on i's wire requester ID owned by another domain."""
        out = []
        for j in self.groups[self.sources[i].wire]:
            if j != i:
                oj = self.owner_of(self.sources[j])
                if oj is not None and oj != owner and self.sources[j].dev is not self.sources[i].dev:
                    out.append((self.sources[j].dev.bdf, oj))
        return tuple(sorted(set(out)))

    def verdict(self, i, key):
        """None when consistent, else (severity, facts) for source i at key
        (its wire requester ID or one of its shadows)."""
        s = self.sources[i]
        owner = self.owner_of(s)
        if owner is None:
            return None
        e = self.entry(key)
        if e is not None and e[1] == owner and e[2] == owner:
            return None
        if e is None and not self.has_tables(owner):
            return None
        if key != s.wire:
            return WARNING, ("shadow", owner, e)
        split = self.split_with(i, owner)
        sev = HAZARD if (e is not None or split) else WARNING
        return sev, ("wire", owner, e, split)

    def orphan_verdict(self, key):
        e = self.entry(key)
        return None if e is None else (WARNING, ("orphan", None, e))

    # --- windows -----------------------------------------------------------------------------

    def _verdict_of(self, wkey):
        return self.orphan_verdict(wkey[1]) if wkey[0] == "orphan" else self.verdict(wkey[1], wkey[2])

    def _open(self, wkey, key, v, ev, device):
        ctx = self.ctx
        self.open_window("owner-mismatch", wkey, ev, device=device, rid=ctx.rid(key), iommu=key[0],
                         info={"v": v, "key": key, "src": wkey[1] if wkey[0] == "src" else None})
        self.open_keys[key] = self.open_keys.get(key, 0) + 1

    def _close(self, wkey, ev):
        w = self.open.get(wkey)
        if w is None:
            return
        key = w.info["key"]
        n = self.open_keys.get(key, 0) - 1
        if n > 0:
            self.open_keys[key] = n
        else:
            self.open_keys.pop(key, None)
        self.close_window(wkey, ev)

    def _recheck(self, ev, key=None):
        """An event may have fixed open windows (of one requester ID, or any)."""
        for wkey in list(self.open):
            if key is not None and self.open[wkey].info["key"] != key:
                continue
            if self._verdict_of(wkey) is None:
                self._close(wkey, ev)

    def _judge(self, wkey, key, ev, device):
        v = self._verdict_of(wkey)
        w = self.open.get(wkey)
        if w is not None:
            if v == w.info["v"]:
                return
            self._close(wkey, ev)
        if v is not None:
            self._open(wkey, key, v, ev, device)

    def on_op_end(self, ev):
        """A top-level operation returned: judge every source it may have
        changed, and every undeclared requester ID it stored."""
        ctx = self.ctx
        if not (self.dirty_keys or self.dirty_devs or self.dirty_dids or self.dirty_doms):
            return
        keys = self.dirty_keys
        for ud in self.dirty_dids:
            keys.update(ctx.keys_with_did(*ud))
        todo = set()
        by_key = self.by_key
        for key in keys:
            idx = by_key.get(key)
            if idx is not None:
                todo.update(idx)
        if self.dirty_devs or self.dirty_doms:
            for i, s in enumerate(self.sources):
                if s.pkey in self.dirty_devs or self.owner_of(s) in self.dirty_doms:
                    todo.add(i)
        # a source's split status follows its siblings' owners
        for i in list(todo):
            todo.update(self.groups[self.sources[i].wire])
        for i in sorted(todo):
            s = self.sources[i]
            self._judge(("src", i, s.wire), s.wire, ev, s.dev.bdf)
            for k, _ in s.shadows:
                self._judge(("src", i, k), k, ev, s.dev.bdf)
        for key in sorted(k for k in keys if k not in self.declared):
            self._judge(("orphan", key), key, ev, ctx.op_device)
        self.dirty_keys = set()
        self.dirty_devs.clear()
        self.dirty_dids.clear()
        self.dirty_doms.clear()

    def finish(self) -> None:
        super().finish()
        self.open_keys.clear()

    # --- findings ------------------------------------------------------------------------------

    def finalize(self, w, end, end_label, ev):
        return Finding("owner-mismatch", w.info["v"][0], w.device, w.rid, w.iommu, w.start, end,
                       w.start_label, end_label, self.detail(w))

    def _entry_str(self, e) -> str:
        did, downer, towner, pt = e
        dom = self.ctx.dom
        d = f"DID {did} ({dom(downer) if downer is not None else 'not allocated'})"
        if pt:
            return f"passes DMA through untranslated (pass-through) with {d}"
        return f"translates with {d} and {dom(towner) + chr(39) + 's' if towner is not None else 'freed'} page tables"

    def detail(self, w) -> str:
        ctx = self.ctx
        dom = ctx.dom
        sev, facts = w.info["v"]
        head = f"IOMMU {w.iommu}: "
        if facts[0] == "orphan":
            return (head + f"{w.rid} has a present context entry that {self._entry_str(facts[2])}, although no "
                    f"device, phantom function or bridge alias of the platform has that requester ID")
        s = self.sources[w.info["src"]]
        owner = facts[1]
        e = facts[2]
        if facts[0] == "shadow":
            what = dict(s.shadows)[w.info["key"]]
            state = "is not present" if e is None else self._entry_str(e) + f", not {dom(owner)}'s"
            return (head + f"{s.dev.bdf}, owned by {dom(owner)}, does not DMA through {w.rid} ({what}), but Xen "
                    f"maps that entry for it, and the entry {state}")
        split = facts[3]
        if e is None:
            text = (f"{s.dev.bdf}, owned by {dom(owner)}, DMAs through {w.rid} ({s.how}), whose context entry is "
                    f"not present: its DMA faults instead of reaching {dom(owner)}'s memory")
        else:
            reach = []
            did, downer, towner, _ = e
            if towner != owner:
                reach.append(f"{dom(towner)}'s memory" if towner is not None else "freed page tables")
            if downer != owner:
                name = (f"{dom(downer)}'s memory (through IOTLB entries tagged DID {did})" if downer is not None
                        else f"whatever domain DID {did} is handed to next")
                if towner != downer or towner is None:
                    reach.append(name)
            text = (f"{s.dev.bdf}, owned by {dom(owner)}, DMAs through {w.rid} ({s.how}), whose context entry "
                    f"{self._entry_str(e)}: the device reaches {' and '.join(reach)}")
        if split:
            others = ", ".join(f"{b} ({dom(o)})" for b, o in split)
            text += (f"; {others} share{'s' if len(split) == 1 else ''} that requester ID under another owner, "
                     f"and Xen expects devices behind one bridge to be assigned together")
        return head + text
