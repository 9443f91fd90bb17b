"""Replayed state -> what people read: the ``show --json`` dict of
docs/CLI.md#show-json and the equivalent text.

Everything here is presentation: the IOMMU semantics live in replay.state and
replay.caches.  Names come from the trace header (its platform summary), never
from the engine, so a trace recorded elsewhere renders the same.

Conventions (docs/CLI.md#names): requester IDs as ``SSSS:BB:DD.F``; domains by their
scenario name, ``dom_io`` for DOMID_IO, null for DOMID_INVALID; 64-bit values
as ``"0x%016x"``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

from tracer import schema as S
from tracer.platform import fmt_bdf, try_parse_bdf

from . import caches
from .jsonout import TraceNames, safe_text
from .state import ReplayState, func_name

PAGE_MASK_4K = caches.PAGE_MASK_4K
TT_NAMES = {0: "multi-level", 1: "dev-iotlb", 2: "pass-through", 3: "reserved"}
BRIDGES = ("pcie2pci-bridge", "legacy-pci-bridge")


def hex64(v: object) -> str:
    return f"0x{v:016x}" if isinstance(v, int) else str(v)


# Header strings come from an untrusted file: the tolerant parser.
fmt_rid = fmt_bdf
parse_bdf = try_parse_bdf


class Unit(TypedDict):
    """A DRHD unit of the header's platform, as PlatformView keeps it."""

    id: int
    segment: int
    include_all: bool
    levels: int | None
    scope: set[str]


class PlatformView:
    """The trace header's platform summary, as lookups: domain names, DRHD
    units, declared devices and the requester IDs each one uses."""

    def __init__(self, header: dict[str, Any] | None) -> None:
        plat = (header or {}).get("platform") or {}
        if not isinstance(plat, dict):
            plat = {}
        # Domain names exactly as `log --jsonl` prints them.
        self._names = TraceNames(header if isinstance(header, dict) else {})
        # pseudo domain ID -> (seg, bdf16) of its device, from the state being
        # rendered (show_dict sets it): names a pseudo domain ID's device
        self.pseudo: dict[int, tuple[int, int]] | None = None
        self.names: dict[int, str] = {}
        self.hardware: int | None = None
        for row in plat.get("domains") or ():
            try:
                domid, name, hw = row[0], row[1], row[2]
            except (TypeError, IndexError, KeyError):
                continue
            if isinstance(domid, int) and isinstance(name, str):
                self.names[domid] = name
                if hw and self.hardware is None:
                    self.hardware = domid
        # The CPUs the recording ran on (header ``schedule``; a trace without
        # one ran on CPU 0 alone).
        sched = (header or {}).get("schedule")
        ncpus = sched.get("cpus") if isinstance(sched, dict) else None
        self.cpus = ncpus if isinstance(ncpus, int) and not isinstance(ncpus, bool) and 0 < ncpus <= 64 else 1
        self.iommus: list[Unit] = []
        for u in plat.get("iommus") or ():
            if isinstance(u, dict) and isinstance(u.get("id"), int):
                self.iommus.append({
                    "id": u["id"], "segment": u.get("segment") or 0,
                    "include_all": bool(u.get("include_all")),
                    "levels": u.get("levels") if isinstance(u.get("levels"), int) else None,
                    "scope": {b for b in (u.get("devices") or ()) if isinstance(b, str)},
                })
        self.iommus.sort(key=lambda u: u["id"])
        self.segment = {u["id"]: u["segment"] for u in self.iommus}
        self.devices: list[dict[str, Any]] = []
        for d in plat.get("devices") or ():
            loc = parse_bdf(d.get("bdf")) if isinstance(d, dict) else None
            if loc is None:
                continue
            sec, sub = d.get("secondary"), d.get("subordinate")
            self.devices.append({
                "bdf": d["bdf"], "loc": loc, "type": d.get("type"),
                "phantom_stride": d.get("phantom_stride") or 0,
                "secondary": sec if isinstance(sec, int) else None,
                "subordinate": sub if isinstance(sub, int) else (sec if isinstance(sec, int) else None),
            })
        self._by_loc = {d["loc"]: d for d in self.devices}
        self._rids: dict[int, set[tuple[int, int]]] | None = None
        # RMRRs: (base, end) -> the devices the firmware lists for the range.
        self.rmrrs: dict[tuple[int, int], list[str]] = {}
        for r in plat.get("rmrrs") or ():
            if isinstance(r, dict) and isinstance(r.get("base"), int) and isinstance(r.get("end"), int):
                devs = [b for b in (r.get("devices") or ()) if isinstance(b, str)]
                self.rmrrs.setdefault((r["base"], r["end"]), []).extend(devs)

    # --- names ------------------------------------------------------------

    def domain_name(self, domid: int | None) -> str | None:
        """Scenario name, dom_io for DOMID_IO, None for DOMID_INVALID (and
        for no domain at all), d<N> for an id the header does not name."""
        if domid is None:
            return None
        name: str | None = self._names.domain(domid, self.pseudo)
        return name

    def rid(self, iommu: int, bus: int, devfn: int) -> str:
        return fmt_rid(self.segment.get(iommu, 0), bus, devfn)

    def device_type(self, seg: int, bus: int, devfn: int) -> str | None:
        d = self._by_loc.get((seg, bus, devfn))
        return d["type"] if d else None

    def lock_name(self, lock: str, target: int | None) -> str:
        """Lock with its instance: iommu->lock[0], mapping_lock[guest] ..."""
        if target is None:
            return str(lock)
        if lock in ("mapping_lock", "rcu_domain", "pci_lock"):
            return f"{lock}[{self.domain_name(target)}]"
        if lock == "bus2bridge_lock" and isinstance(target, int):
            return f"{lock}[{target:04x}]"
        return f"{lock}[{target}]"

    # --- topology ---------------------------------------------------------

    def _bridge_for_bus(self, seg: int, bus: int) -> dict[str, Any] | None:
        best: dict[str, Any] | None = None
        for d in self.devices:
            if d["type"] in BRIDGES and d["loc"][0] == seg and d["secondary"] is not None \
                    and d["secondary"] <= bus <= d["subordinate"]:
                if best is None or d["subordinate"] - d["secondary"] < best["subordinate"] - best["secondary"]:
                    best = d
        return best

    def drhd(self, seg: int, bus: int, devfn: int) -> int | None:
        """acpi_find_matched_drhd_unit: explicit device scope, else the unit
        whose scope holds a bridge the bus sits behind, else INCLUDE_PCI_ALL."""
        bdf = fmt_rid(seg, bus, devfn)
        for u in self.iommus:
            if u["segment"] == seg and bdf in u["scope"]:
                return u["id"]
        seen = set()
        b = bus
        while (br := self._bridge_for_bus(seg, b)) is not None and br["bdf"] not in seen:
            seen.add(br["bdf"])
            for u in self.iommus:
                if u["segment"] == seg and br["bdf"] in u["scope"]:
                    return u["id"]
            b = br["loc"][1]
        for u in self.iommus:
            if u["segment"] == seg and u["include_all"]:
                return u["id"]
        return None

    def _upstream(self, seg: int, bus: int) -> tuple[dict[str, Any] | None, int | None]:
        """find_upstream_bridge: the topmost bridge above bus and its secondary bus."""
        top: dict[str, Any] | None = None
        secbus: int | None = None
        seen = set()
        while bus != 0 and (br := self._bridge_for_bus(seg, bus)) is not None and br["bdf"] not in seen:
            seen.add(br["bdf"])
            top, secbus = br, bus
            bus = br["loc"][1]
        return top, secbus

    def declared_rids(self) -> dict[int, set[tuple[int, int]]]:
        """iommu -> {(bus, devfn)}: the requester IDs of every declared device
        (its own, its phantom functions and, for conventional PCI behind a
        bridge, the bridge and (secbus, 0) aliases), on the device's unit."""
        if self._rids is not None:
            return self._rids
        out: dict[int, set[tuple[int, int]]] = {}
        for d in self.devices:
            seg, bus, devfn = d["loc"]
            u = self.drhd(seg, bus, devfn)
            if u is None:
                continue
            rids = out.setdefault(u, set())
            rids.add((bus, devfn))
            stride = d["phantom_stride"]
            if isinstance(stride, int) and stride > 0:
                fn = devfn + stride
                while fn >> 3 == devfn >> 3:
                    rids.add((bus, fn))
                    fn += stride
            if d["type"] == "pci":
                top, secbus = self._upstream(seg, bus)
                if top is not None:
                    assert secbus is not None       # found with the bridge
                    rids.add(top["loc"][1:])
                    if top["type"] == "pcie2pci-bridge" and (secbus != bus or devfn != 0):
                        rids.add((secbus, 0))
        self._rids = out
        return out


# --- decoding -------------------------------------------------------------------

def did_slot_owner(st: ReplayState, view: PlatformView, iommu: int, did: int) -> str | None:
    """The domain domid_map names for DID did: the map is zero-filled, as
    Xen's MO3 reads it, but a slot that was never used (its bitmap bit clear
    and nothing ever written to it) belongs to nobody, not to dom0: None."""
    key = (iommu, did)
    if key not in st.did_bits and key not in st.did_map:
        return None
    return view.domain_name(st.did_map.get(key, 0))


def did_owner(st: ReplayState, view: PlatformView, iommu: int, lo: int, hi: int) -> str | None:
    """The domain the entry's DID belongs to, through the unit's DID map.
    None for an all-zero entry and for a never-used DID slot."""
    if not lo & 1 and hi == 0:
        return None
    return did_slot_owner(st, view, iommu, (hi >> 8) & 0xFFFF)


def slptptr(st: ReplayState, lo: int, hi: int) -> dict[str, Any]:
    """SLPTPTR decoded: the table it points at (bits 63:12 of the low half),
    whose table that is (a domain's root, or a lower level of it on a unit
    with fewer levels than the tree) and the levels AW selects (AW 1, 2, 3:
    3-, 4-, 5-level)."""
    ptr = lo & PAGE_MASK_4K
    page = st.pages.get(ptr)
    aw = hi & 7
    return {"slptptr": hex64(ptr), "table": page[1] if page else None,
            "levels": aw + 2 if 1 <= aw <= 3 else None}


def pt_owner(st: ReplayState, view: PlatformView, lo: int) -> str | None:
    """The domain whose I/O page tables SLPTPTR points into (pass-through
    entries use none)."""
    if (lo >> 2) & 3 == caches.TT_PASS_THRU:
        return None
    page = st.pages.get(lo & PAGE_MASK_4K)
    return view.domain_name(page[0]) if page else None


def _entry(st: ReplayState, view: PlatformView, u: int, bus: int, devfn: int, lo: int, hi: int) -> dict[str, Any]:
    return {
        "rid": view.rid(u, bus, devfn),
        "present": bool(lo & 1),
        "did": (hi >> 8) & 0xFFFF,
        "did_owner": did_owner(st, view, u, lo, hi),
        "pt_owner": pt_owner(st, view, lo),
        "tt": (lo >> 2) & 3,
        "aw": hi & 7,
        **slptptr(st, lo, hi),
        "lo": hex64(lo),
        "hi": hex64(hi),
    }


def page_tables(st: ReplayState, view: PlatformView) -> list[dict[str, Any]]:
    """Every domain's I/O page-table tree: its root (what SLPTPTR of a
    4-level unit holds), the levels it has (its table pages other than the
    quarantine's scratch page) and its pages."""
    out = []
    for domid, root in sorted(st.pgd.items()):
        pages = [what for (d, what) in st.pages.values() if d == domid]
        out.append({"domain": view.domain_name(domid), "root": hex64(root),
                    "table": st.pages.get(root, (None, None))[1],
                    "levels": sum(1 for w in pages if w != "scratch"), "pages": len(pages)})
    return out


def identity_maps(st: ReplayState, view: PlatformView) -> list[dict[str, Any]]:
    """The identity (1:1) mappings in each domain's tables with their
    reference counts, and the RMRR devices whose range each one is."""
    out = []
    for (domid, base, end), (access, refcount) in sorted(st.idmaps.items(), key=lambda kv: (
            view.domain_name(kv[0][0]) or "", kv[0][1], kv[0][2])):
        out.append({"domain": view.domain_name(domid), "base": hex64(base), "end": hex64(end),
                    "access": access, "refcount": refcount,
                    "rmrr_devices": list(view.rmrrs.get((base, end), ()))})
    return out


def iommu_ids(st: ReplayState, view: PlatformView) -> list[int]:
    ids = {u["id"] for u in view.iommus}
    ids.update(k[0] for k in st.ctx)
    ids.update(k[0] for k in st.did_bits)
    return sorted(ids)


def context_rows(st: ReplayState, view: PlatformView, u: int) -> list[dict[str, Any]]:
    keys = set(view.declared_rids().get(u, ()))
    keys.update((b, df) for (uu, b, df) in st.ctx if uu == u)
    rows = []
    for bus, devfn in sorted(keys):
        lo, hi = st.ctx.get((u, bus, devfn), (0, 0))
        rows.append(_entry(st, view, u, bus, devfn, lo, hi))
    return rows


def cache_view(st: ReplayState, view: PlatformView, u: int) -> dict[str, Any]:
    """What the unit may still use although memory says otherwise."""
    context = []
    for (bus, devfn), values in sorted(caches.stale_context(st, u).items()):
        context.append({
            "rid": view.rid(u, bus, devfn),
            "values": [
                {"present": bool(lo & 1), "did": (hi >> 8) & 0xFFFF,
                 "did_owner": did_owner(st, view, u, lo, hi), "pt_owner": pt_owner(st, view, lo),
                 "lo": hex64(lo), "hi": hex64(hi)}
                for lo, hi in sorted(values)
            ],
        })
    iotlb = []
    for did, bus, devfn, pt in sorted(caches.stale_iotlb(st, u)):
        page = st.pages.get(pt)
        iotlb.append({
            "did": did, "did_owner": did_slot_owner(st, view, u, did),
            "rid": view.rid(u, bus, devfn), "pt": hex64(pt),
            "pt_owner": view.domain_name(page[0]) if page else None,
        })
    dev_iotlb = []
    seg = st.unit_seg.get(u, 0)
    for (bus, devfn), fills in sorted(caches.devtlb_may_hold(st, u).items()):
        dev = (seg, bus << 8 | devfn)
        owner = view.domain_name(st.owners[dev]) if dev in st.owners else None
        for did, pt in sorted(fills):
            page = st.pages.get(pt)
            dev_iotlb.append({
                "rid": view.rid(u, bus, devfn), "owner": owner, "ats": dev in st.ats,
                "did": did, "did_owner": did_slot_owner(st, view, u, did),
                "pt": hex64(pt), "pt_owner": view.domain_name(page[0]) if page else None,
            })
    return {"context": context, "iotlb": iotlb, "dev_iotlb": dev_iotlb}


def op_dict(st: ReplayState, view: PlatformView, info: tuple[Any, ...]) -> dict[str, Any]:
    """An open op (an ``open_ops`` value: op, verb, bdf, domain, seg) as
    show --json writes it."""
    op, verb, bdf, dom, seg = (tuple(info) + (None,) * 5)[:5]
    return {"op": op, "verb": verb if isinstance(verb, str) else None,
            "bdf": fmt_rid(seg or 0, bdf >> 8, bdf & 0xFF) if isinstance(bdf, int) else None,
            "domain": view.domain_name(dom) if isinstance(dom, int) else None}


def cpu_rows(st: ReplayState, view: PlatformView) -> list[dict[str, Any]]:
    """Each CPU of the recording (and any other the events name): the op it
    is inside, its call stack (outermost first), the locks it holds and the
    lock it spins on, with the CPU holding that lock."""
    cpus = set(range(view.cpus)) | set(st.stacks) | set(st.open_ops) | set(st.waits)
    cpus |= {c for c in st.locks.values() if isinstance(c, int)}
    cpus.discard(-1)                        # a device's DMA runs on no CPU
    rows = []
    for cpu in sorted(c for c in cpus if isinstance(c, int)):
        info = st.open_ops.get(cpu)
        wait = st.waits.get(cpu)
        waits_for = None
        if wait is not None:
            holder = st.locks.get((wait[0], wait[1]))
            waits_for = {"lock": view.lock_name(wait[0], wait[1]), "holder": holder}
        rows.append({
            "cpu": cpu,
            "op": op_dict(st, view, info) if info is not None else None,
            "stack": [func_name(f) for f in st.stack(cpu)],
            "locks": [view.lock_name(lock, target) for (lock, target), c in st.locks.items() if c == cpu],
            "waits_for": waits_for,
        })
    return rows


def show_dict(st: ReplayState, view: PlatformView, open_findings: Iterable[Any] = ()) -> dict[str, Any]:
    """The ``show --json`` object (docs/CLI.md#show-json) for ``st``.  ``open_findings`` is
    the list of finding dicts open at ``st.seq`` (from the hazard analysers,
    through ReplaySession.open_findings)."""
    view.pseudo = st.pseudo
    iommus = []
    for u in iommu_ids(st, view):
        dids = {str(did): view.domain_name(st.did_map.get((uu, did), 0))
                for (uu, did) in sorted(st.did_bits) if uu == u}
        iommus.append({
            "id": u,
            "levels": next((x["levels"] for x in view.iommus if x["id"] == u), None),
            "context": context_rows(st, view, u),
            "dids": dids,
            "caches": cache_view(st, view, u),
        })
    devices = [{"bdf": fmt_rid(seg, bdf >> 8, bdf & 0xFF), "owner": view.domain_name(st.owners.get((seg, bdf)))}
               for seg, bdf in sorted(st.present)]
    locks = [{"lock": view.lock_name(lock, target), "cpu": cpu} for (lock, target), cpu in st.locks.items()]
    stacks = {str(cpu): [func_name(f) for f in st.stack(cpu)] for cpu in sorted(st.stacks)}
    return {
        "seq": st.seq,
        "op": st.op,
        "label": st.label,
        "iommus": iommus,
        "devices": devices,
        "page_tables": page_tables(st, view),
        "identity_maps": identity_maps(st, view),
        "locks": locks,
        "stacks": stacks,
        "cpus": cpu_rows(st, view),
        "open_findings": list(open_findings),
    }


# --- text -----------------------------------------------------------------------

def _owner(name: str | None) -> str:
    return name if name is not None else "-"


def _mismatch(e: dict[str, Any]) -> bool:
    """A present entry (or cached value) whose DID belongs to another domain
    than its page tables: the state pane's ≠."""
    return bool(e.get("present")) and e.get("pt_owner") is not None and e.get("did_owner") != e.get("pt_owner")


def op_text(st: ReplayState, view: PlatformView, cpu: int | None = None) -> str:
    """The open op in words: the one CPU ``cpu`` is inside when given, else
    the state's open op (with one CPU: the op)."""
    if cpu is not None:
        info = st.open_ops.get(cpu)
        if info is None:
            return "idle"
        op, rest = info[0], tuple(info[1:])
    else:
        op, rest = st.open_op, tuple(st.op_info or ())
    if op is None or not rest:
        return "idle" if op is None else f"op {op}"
    verb, bdf, dom, seg = (rest + (None,) * 4)[:4]
    parts = [f"op {op} {verb}"]
    if isinstance(bdf, int):
        parts.append(fmt_rid(seg or 0, bdf >> 8, bdf & 0xFF))
    if dom is not None:
        parts.append(("-> " if verb in ("assign", "quarantine") else "") + _owner(view.domain_name(dom)))
    return " ".join(parts)


TEXT_WIDTH = 80


def _wrapped(head: str, items: list[str], sep: str, indent: int) -> list[str]:
    """``head`` then the items joined by ``sep``, broken into lines of at
    most TEXT_WIDTH columns (an item longer than a line stands alone)."""
    lines, line, fresh = [], head, False
    for i, item in enumerate(items):
        piece = item + (sep.rstrip() if i < len(items) - 1 else "")
        if not fresh and line != head and len(line) + 1 + len(piece) > TEXT_WIDTH:
            lines.append(line)
            line, fresh = " " * indent, True
        line += ("" if fresh else " ") + piece
        fresh = False
    lines.append(line)
    return lines


def cpus_text(rows: list[dict[str, Any]]) -> list[str]:
    """The CPUs section of show's text: per CPU its op, the lock it spins
    on, the locks it holds and its call stack, at most 80 columns."""
    out = ["CPUs:"]
    for r in rows:
        op = r["op"]
        if op is None:
            what = "idle"
        else:
            what = f"op {op['op']} {op['verb'] or ''}".rstrip()
            if op["bdf"]:
                what += f" {op['bdf']}"
            if op["domain"] is not None:
                what += (" -> " if op["verb"] in ("assign", "quarantine") else " ") + op["domain"]
        head = f"  cpu {r['cpu']:<2} "
        out.append(head + what)
        pad = " " * len(head)
        if r["waits_for"] is not None:
            w = r["waits_for"]
            holder = f"held by cpu {w['holder']}" if w["holder"] is not None else "free now"
            out.append(f"{pad}spins on {w['lock']}, {holder}")
        if r["locks"]:
            out += _wrapped(pad + "holds", r["locks"], ", ", len(pad) + 6)
        if r["stack"]:
            out += _wrapped(pad + "stack", r["stack"], " >", len(pad) + 6)
    return out


def _text_safe(obj: Any) -> Any:
    """show_dict's object with every string escaped for a terminal (names
    and labels come from the trace)."""
    if isinstance(obj, str):
        return safe_text(obj)
    if isinstance(obj, dict):
        return {k: _text_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_text_safe(v) for v in obj]
    return obj


def show_text(st: ReplayState, view: PlatformView, *, count: int | None = None,
              open_findings: Iterable[Any] = ()) -> str:
    """The state as readable text: context entries one per line, decoded,
    with the domains that own their DID and their page tables."""
    d = _text_safe(show_dict(st, view, open_findings))
    out = []
    of = f" of {count}" if count is not None else ""
    if st.seq == 0:
        out.append(f"step 0{of}: the platform before any event")
    else:
        kind = S.KINDS[st.kind].name if isinstance(st.kind, int) and 0 <= st.kind < len(S.KINDS) else st.kind
        where = safe_text(" ".join(x for x in (st.label or "", func_name(st.func) if st.func else "") if x))
        out.append(f"step {st.seq}{of}: {kind}" + (f" at {where}" if where else "") + f"  (op {st.op})")
    several = len(d["cpus"]) > 1
    cpu = st.cpu if several and isinstance(st.cpu, int) and st.cpu >= 0 else None
    on_cpu = f" (cpu {cpu})" if cpu is not None else ""
    out.append(f"operation: {safe_text(op_text(st, view, cpu) if several else op_text(st, view))}{on_cpu}"
               + (f", rollback depth {st.rollback}" if st.rollback else ""))
    for u in d["iommus"]:
        on = "translation on" if u["id"] in st.translation else "translation off"
        out.append("")
        levels = f", {u['levels']}-level page tables" if u["levels"] else ""
        out.append(f"IOMMU {u['id']}  ({on}{levels})")
        out.append("  context entries")
        width = max((len(e["rid"]) for e in u["context"]), default=12)
        rows = []
        for e in u["context"]:
            if e["present"]:
                # The TUI's mark: a DID of one domain with another's tables.
                mism = "≠" if _mismatch(e) else " "
                levels = f"{e['levels']}-level" if e["levels"] else "reserved"
                ptr = f"{int(e['slptptr'], 16):#x}" if e["slptptr"].startswith("0x") else e["slptptr"]
                desc = (f"P  did {e['did']:<4} {_owner(e['did_owner']):<8} {mism} pt {_owner(e['pt_owner']):<8}  "
                        f"tt {e['tt']} ({TT_NAMES[e['tt']]})  aw {e['aw']} ({levels})  "
                        f"slptptr {ptr} {_owner(e['table'])}")
            else:
                desc = "-  not present"
                if e["did_owner"] is not None or e["pt_owner"] is not None:
                    desc += f" (did {e['did']} {_owner(e['did_owner'])}, pt {_owner(e['pt_owner'])})"
            rows.append((e, desc))
        pad = max((len(desc) for _, desc in rows), default=0)
        for e, desc in rows:
            out.append(f"    {e['rid']:<{width}}  {desc:<{pad}}  lo {e['lo']} hi {e['hi']}")
        if not u["context"]:
            out.append("    (none)")
        dids = ", ".join(f"{k} {_owner(v)}" for k, v in u["dids"].items()) or "none"
        out.append(f"  DIDs in use: {dids}")
        c = u["caches"]
        if c["context"] or c["iotlb"] or c["dev_iotlb"]:
            out.append("  may still be used (not yet invalidated):")
            for e in c["context"]:
                for v in e["values"]:
                    sep = " ≠ " if _mismatch(v) else ", "
                    state = (f"did {v['did']} {_owner(v['did_owner'])}{sep}pt {_owner(v['pt_owner'])}"
                             if v["present"] else "not present")
                    out.append(f"    context {e['rid']}: {state}  lo {v['lo']} hi {v['hi']}")
            for t in c["iotlb"]:
                out.append(f"    iotlb did {t['did']} {_owner(t['did_owner'])} via {t['rid']}: "
                           f"tables {_owner(t['pt_owner'])} {t['pt']}")
            for t in c["dev_iotlb"]:
                ats = "on" if t["ats"] else "off"
                out.append(f"    device-tlb {t['rid']} (owner {_owner(t['owner'])}, ATS {ats}): "
                           f"did {t['did']} {_owner(t['did_owner'])}, tables {_owner(t['pt_owner'])} {t['pt']}")
    out.append("")
    devs = ", ".join(f"{x['bdf']} {_owner(x['owner'])}" for x in d["devices"]) or "none"
    out.append(f"devices: {devs}")
    if d["page_tables"]:
        out.append("page tables:")
        for t in d["page_tables"]:
            out.append(f"  {_owner(t['domain']):<10} root {t['root']} ({_owner(t['table'])}), "
                       f"{t['levels']} levels, {t['pages']} pages")
    else:
        out.append("page tables: none")
    if d["identity_maps"]:
        out.append("identity maps:")
        for m in d["identity_maps"]:
            rmrr = (" RMRR of " + ", ".join(m["rmrr_devices"])) if m["rmrr_devices"] else ""
            out.append(f"  {_owner(m['domain']):<10} [{m['base']}, {m['end']}] {_owner(m['access'])} "
                       f"refcount {m['refcount']}{rmrr}")
    else:
        out.append("identity maps: none")
    locks = ", ".join(f"{x['lock']} (cpu {x['cpu']})" for x in d["locks"]) or "none held"
    out.append(f"locks: {locks}")
    if several:
        out += cpus_text(d["cpus"])
    else:
        for cpu, frames in d["stacks"].items():
            out.append(f"stack cpu {cpu}: " + " > ".join(frames))
    if d["open_findings"]:
        out.append("open findings:")
        for f in d["open_findings"]:
            where = " ".join(str(x) for x in (f.get("rid") or f.get("device"), f"iommu {f.get('iommu')}"
                                               if f.get("iommu") is not None else None) if x)
            since = f"since {f.get('start')}" + (f" ({f.get('start_label')})" if f.get("start_label") else "")
            out.append(f"  [{f.get('severity')}] {f.get('kind')} {where} {since}: {f.get('detail') or ''}")
    else:
        out.append("open findings: none")
    return "\n".join(out) + "\n"
