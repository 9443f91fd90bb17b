"""dma-fault-rmrr and dma-foreign: what a device's DMA did, judged from its
``dma`` event and the replayed state; and "observed" for the window kinds a
DMA inside them confirms (docs/HAZARDS.md#dma).

A ``dma`` event records a translation as the hardware did it (the engine's
tracer/engine/dma.py): the requester ID, the context-entry value used, where
it came from (memory, context cache, IOTLB, device-TLB), and the outcome --
the host page reached and the domain that owns it, or a VT-d fault reason.
This module never recomputes the translation; it judges the outcome against
what the trace says about ownership:

* **dma-fault-rmrr** (hazard): the DMA targeted a page of an RMRR of its own
  device (the header's ``rmrrs``) and faulted.  The device must reach its RMRR
  at any time; this is the XSA-400 symptom itself.
* **dma-foreign** (hazard): the DMA reached a page owned by a domain that
  does not own the device (replay state ``owners``).  While an operation
  about the device itself is in flight (``open_ops``: assign, deassign,
  quarantine; or the destruction of the domain that owned it, which releases
  it), the domain it came from (its owner when the operation began) and the
  domain it goes to both count as its owner.  A page of the device's
  own pseudo domain (engine ``final``'s quarantine tree) is its own too.
  Firmware memory (an identity-mapped RMRR page, owner none) is nobody's:
  never foreign.  Xen's heap (``DOMID_XEN``: tables freed under a live entry)
  is always foreign.

A DMA is an instant: its finding starts at the ``dma`` event (step label
``DMA``) and ends at the next event.

**Observed.**  The window kinds describe what *could* go wrong between two
steps; a DMA inside the window shows that it did.  After every analyser has
finished, a post-pass appends "observed: ..." to the detail of each window
finding that a DMA inside ``[start, end)`` confirms:

=================  ======================================================
rmrr-disconnect    a dma-fault-rmrr of the window's device
did-pt-mismatch    a DMA through the window's requester ID on its unit
                   that reached memory from the entry (memory or context
                   cache), i.e. through the mismatched pairing
stale-context      a DMA through the requester ID that used the context cache
stale-iotlb        a DMA on the unit that used the IOTLB
foreign-iotlb      a dma-foreign on the unit that used the IOTLB
stale-devtlb       a DMA of the window's device that used its device-TLB
owner-mismatch     a dma-foreign of the window's device, or a fault of it
=================  ======================================================
"""

from __future__ import annotations

from typing import Any, NamedTuple

from tracer import hostmem
from tracer import schema as S
from tracer.schema import DOMID_IO

from .base import Analyser, Context, Event, Hook, join_names
from .findings import HAZARD, Finding
from .topology import fmt_rid

# The fault reasons of the VT-d specification the dma event uses.
FAULT_REASONS = {
    0x1: "root entry not present",
    0x2: "context entry not present",
    0x3: "invalid context entry",
    0x5: "write to a page without write permission",
    0x6: "read of a page without read permission",
    0xD: "translated request blocked",
}
_REASSIGN_VERBS = ("assign", "deassign", "quarantine")


class Dma(NamedTuple):
    """One dma event, as the post-pass needs it."""

    seq: int
    source: str
    device: str
    rid: str
    iommu: int | None
    via: str
    fault: int
    foreign: bool
    rmrr_fault: bool
    what: str            # "reached guest page 0x100000" / "faulted: context entry not present"


def _fault_text(reason: int) -> str:
    return f"{FAULT_REASONS.get(reason, 'fault')} (fault reason {reason:#x})"


class DmaAnalyser(Analyser):
    KINDS = ("dma-fault-rmrr", "dma-foreign")

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        plat = ctx.header.get("platform")
        knobs = plat.get("knobs") if isinstance(plat, dict) else None
        self.quarantine = isinstance(knobs, dict) and knobs.get("quarantine") is True
        self.sources = isinstance(plat, dict) and bool(plat.get("dma"))
        self.began: dict[Any, Any] = {}           # cpu -> the device's owner when its op began
        self.released: dict[Any, frozenset[tuple[int, int]]] = {}   # cpu -> devices its destroy op releases
        self.pseudo: dict[int, tuple[int, int]] = {}    # pseudo domid -> (seg, bdf) it stands for
        self.dmas: list[Dma] = []
        self.pending: list[Finding] = []          # findings that end at the next event

    def hooks(self) -> dict[int, Hook]:
        hooks: dict[int, Hook] = {S.K_OP_BEGIN: self._op_begin, S.K_PSEUDO_DOMID: self._pseudo,
                                  S.K_DMA: self._dma}
        if self.sources:
            # a DMA's finding ends at the next event, whatever it is: only a
            # trace whose scenario declares DMA sources pays for the hook
            for code in range(len(S.KINDS)):
                if code not in hooks:
                    hooks[code] = self._next
        return hooks

    # --- hooks -------------------------------------------------------------------------

    def _next(self, ev: Event) -> None:
        if self.pending:
            label = self.ctx.label(ev)
            for f in self.pending:
                f.end, f.end_label = ev[S.I_SEQ], label
                self.ctx.out.append(f)
            self.pending = []

    def _op_begin(self, ev: Event) -> None:
        self._next(ev)
        seg, bdf = ev[S.F_OP_BEGIN_SEG], ev[S.F_OP_BEGIN_BDF]
        owners = self.ctx.st.owners
        self.began[ev[S.I_CPU]] = owners.get((seg, bdf)) if bdf is not None else None
        if ev[S.F_OP_BEGIN_VERB] == "destroy":
            # the dying domain's devices are released during the op: each is in flight
            dom = ev[S.F_OP_BEGIN_DOMAIN]
            self.released[ev[S.I_CPU]] = frozenset(k for k, d in owners.items() if d == dom)

    def _pseudo(self, ev: Event) -> None:
        self._next(ev)
        if ev[S.F_PSEUDO_DOMID_VALUE]:
            self.pseudo[ev[S.F_PSEUDO_DOMID_DOMAIN]] = (ev[S.F_PSEUDO_DOMID_SEG], ev[S.F_PSEUDO_DOMID_BDF])

    def _owners(self, seg: int, bdf: int) -> tuple[set[int], str]:
        """The domains that count as the device's owner now, and the
        operation in flight about it (text, empty if none)."""
        st = self.ctx.st
        owners: set[int] = set()
        cur = st.owners.get((seg, bdf))
        if cur is not None:
            owners.add(cur)
        ops = []
        for cpu, (op, verb, obdf, dom, oseg) in sorted(st.open_ops.items()):
            if verb == "destroy" and (seg, bdf) in self.released.get(cpu, ()):
                owners.add(dom)
                to = DOMID_IO if self.quarantine else self.ctx.topo.hardware
                if to is not None:
                    owners.add(to)
                ops.append(f"op {op} (destroy {self.ctx.dom(dom)})")
                continue
            if obdf != bdf or (oseg if oseg is not None else 0) != seg or verb not in _REASSIGN_VERBS:
                continue
            src = self.began.get(cpu)
            if src is not None:
                owners.add(src)
            target: int | None
            if verb == "quarantine" or (verb == "deassign" and self.quarantine):
                target = DOMID_IO
            elif verb == "deassign":
                target = self.ctx.topo.hardware
            else:
                target = dom
            if target is not None:
                owners.add(target)
            ops.append(f"op {op} ({verb}{' to ' + self.ctx.dom(target) if target is not None else ''})")
        return owners, join_names(ops)

    def _dma(self, ev: Event) -> None:
        self._next(ev)
        ctx = self.ctx
        seg, bdf, rid, unit = ev[S.F_DMA_SEG], ev[S.F_DMA_BDF], ev[S.F_DMA_RID], ev[S.F_DMA_IOMMU]
        iova, write, via = ev[S.F_DMA_IOVA], ev[S.F_DMA_WRITE], ev[S.F_DMA_VIA]
        host, owner, fault, source = ev[S.F_DMA_HOST], ev[S.F_DMA_OWNER], ev[S.F_DMA_FAULT], ev[S.F_DMA_SOURCE]
        if not (type(seg) is int and type(bdf) is int and type(rid) is int and type(iova) is int
                and type(fault) is int and (host is None or type(host) is int)
                and (owner is None or type(owner) is int) and (unit is None or type(unit) is int)
                and 0 <= bdf <= 0xFFFF and 0 <= rid <= 0xFFFF):
            raise ValueError("dma event with malformed fields")
        device = fmt_rid(seg, bdf >> 8, bdf & 0xFF)
        rid_s = fmt_rid(seg, rid >> 8, rid & 0xFF)
        access = "write" if write else "read"
        owners, ops = self._owners(seg, bdf)
        during = f"during {ops}" if ops else (f"during op {ev[S.I_OP]}" if ev[S.I_OP] else "between operations")
        head = (f"{device}'s DMA {source} at seq {ev[S.I_SEQ]} ({access} of IOVA {iova:#x}, requester ID {rid_s}, "
                f"via {via})")
        seq = ev[S.I_SEQ]
        label = ctx.label(ev)
        where = f"IOMMU {unit}" if unit is not None else "no IOMMU"

        dev = ctx.topo.by_loc.get((seg, bdf >> 8, bdf & 0xFF))
        rmrrs = dev.rmrrs if dev is not None else ()
        in_rmrr = [r for r in rmrrs if r[0] <= iova <= r[1]]
        rmrr_fault = bool(fault) and bool(in_rmrr)
        foreign = False
        if fault:
            what = f"faulted: {_fault_text(fault)}"
        else:
            # the event's owner field names the owner (the trace is the authority)
            if host is None:
                what = "reached memory"
            elif owner is None:
                what = f"reached firmware page {host:#x}"
            else:
                what = f"reached {ctx.dom(owner)} page {hostmem.frame_of(host):#x}"
            mine = owner is None or owner in owners or self.pseudo.get(owner) == (seg, bdf)
            foreign = not mine
        if rmrr_fault:
            b, e = in_rmrr[0]
            self.pending.append(Finding(
                "dma-fault-rmrr", HAZARD, device, rid_s, unit, seq, None, label, None,
                f"{where}: {head} to its RMRR [{b:#x}, {e:#x}] {what} {during}: the device "
                "lost the identity mapping it must keep while it may DMA (XSA-400)"))
        if foreign:
            mine_s = join_names(sorted(ctx.dom(d) for d in owners)) or "no domain"
            self.pending.append(Finding(
                "dma-foreign", HAZARD, device, rid_s, unit, seq, None, label, None,
                f"{where}: {head} {what}, memory of {ctx.dom(owner)}, which does not own the device "
                f"(owner: {mine_s}) {during}"))
        self.dmas.append(Dma(seq, source, device, rid_s, unit, via, fault, foreign, rmrr_fault, what))

    # --- the end: pending findings, then the observed post-pass ----------------------------

    def finish(self) -> None:
        for f in self.pending:
            self.ctx.out.append(f)
        self.pending = []
        if self.dmas:
            observe(self.ctx.out, self.dmas)


def _confirms(f: Finding, d: Dma) -> bool:
    k = f.kind
    if k == "rmrr-disconnect":
        return d.rmrr_fault and d.device == f.device
    if k == "did-pt-mismatch":
        return d.rid == f.rid and d.iommu == f.iommu and not d.fault and d.via in ("memory", "context-cache")
    if k == "stale-context":
        return d.rid == f.rid and d.iommu == f.iommu and d.via == "context-cache"
    if k == "stale-iotlb":
        return d.iommu == f.iommu and d.via == "iotlb"
    if k == "foreign-iotlb":
        return d.iommu == f.iommu and d.via == "iotlb" and d.foreign
    if k == "stale-devtlb":
        return d.device == f.device and d.via == "device-tlb"
    if k == "owner-mismatch":
        return d.device == f.device and (d.foreign or bool(d.fault))
    return False


def observe(findings: list[Finding], dmas: list[Dma]) -> None:
    """Append "observed: ..." to every window finding a DMA inside it
    confirms (the first such DMA, and how many more)."""
    for f in findings:
        if f.kind in DmaAnalyser.KINDS:
            continue
        hits = [d for d in dmas if f.start <= d.seq and (f.end is None or d.seq < f.end) and _confirms(f, d)]
        if hits:
            d = hits[0]
            more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
            f.detail = (f"{f.detail} -- observed: seq {d.seq}, {d.device}'s DMA {d.source} via {d.via} "
                        f"{d.what}{more}")


__all__ = ["DmaAnalyser", "observe"]
