"""The state pane: the IOMMU state after the current step, as replay computes it.

Per IOMMU, every context entry decoded field by field -- present bit, DID,
the domain that owns the DID (through the unit's DID map) next to the domain
whose page tables SLPTPTR points into, translation type, address width and
the raw halves.  When the two owners differ on a present entry the row is red
and carries a "≠": that is XSA-400's did-pt-mismatch, visible at a glance.
An RMRR device (the platform's RMRR list, from the trace header) carries an
``R`` after its RID; when its entry is *not present* while a hazard finding
for that RID on that unit is open at the step (replay's analysers: the
``rmrr-disconnect`` window of the legacy engine) the row is red and carries
"✗" and the finding's kind -- the device whose identity-mapped DMA must keep
working is cut off, which a bare ``-  -  -`` row would hide among
never-mapped devices.
An ``owner-mismatch`` hazard open at the step names the requester ID its
device's DMA uses on the wire (``rid``) and that device (``device``): that
entry's row is red and carries "← <device> <owner> ≠" after the owners it
really has (the owner from the show object's device list), so a guest's
device DMAing through dom0's alias entry is seen on the entry itself.  The
banner above the units names the devices of the open findings where the line
has room.
Below each unit: the DID map and what its caches may still hold; then device
owners, the locks held with their holders and the findings open at the step.
With several CPUs: each CPU's op and the lock it spins on at the top, each
CPU's call stack at the end.

The content is a list of lines built from ``render.show_dict`` (the
``show --json`` object, docs/CLI.md#show-json) -- nothing here computes owners or cache contents.
Rendering is Line API (a ScrollView), so a platform with many devices scrolls
without re-laying out widgets on every step.

The pane has a selection: one context entry, the target of ``w``/``W`` (next
/ previous write of that entry).  It follows the event under the cursor when
that event addresses an entry (ctx-write, cache-sync, a device flush), and
↑/↓ move it while the pane has focus.
"""

from __future__ import annotations

from functools import lru_cache

from textual.binding import Binding
from textual.cache import LRUCache
from textual.message import Message

from replay.render import parse_bdf

from .lines import Line, LinePane, Part
from .model import StepView

OWNER_MISMATCH = "owner-mismatch"
TT_SHORT = {0: "mlvl", 1: "devtlb", 2: "pass", 3: "rsvd"}


def _own(name) -> str:
    return name if name is not None else "-"


@lru_cache(maxsize=4096)
def _key_of(iommu: int, rid: str):
    loc = parse_bdf(rid)
    return (iommu, loc[1], loc[2]) if loc else None


def _short(bdf: str) -> str:
    """``05:01.0`` for ``0000:05:01.0``: segment 0 goes without saying."""
    return bdf[5:] if bdf.startswith("0000:") else bdf


def _who(f: dict) -> str:
    """The device a finding names, short; an owner-mismatch through another
    requester ID adds the entry (``05:01.0 via 05:00.0``)."""
    dev, rid = f.get("device"), f.get("rid")
    if not dev:
        return _short(rid) if rid else ""
    if f.get("kind") == OWNER_MISMATCH and rid and rid != dev:
        return f"{_short(dev)} via {_short(rid)}"
    return _short(dev)


def _banner(findings, width: int) -> list:
    """One line: the kinds open at the step by severity, each severity with
    the devices its findings name where the line has room for them (hazards
    first); the findings pane (4) has them in full."""
    by_sev: dict[str, dict[str, list[str]]] = {}
    for f in findings:
        kinds = by_sev.setdefault(f.get("severity") or "hazard", {})
        who = kinds.setdefault(str(f.get("kind")), [])
        w = _who(f)
        if w and w not in who:
            who.append(w)
    sevs = [sev for sev in ("hazard", "warning", "benign") if sev in by_sev]
    head = ("⚠ open: ", "state-pane--bad" if "hazard" in by_sev else "state-pane--warn")

    def line(named) -> list:
        parts = [head]
        for sev in sevs:
            comp = {"hazard": "state-pane--bad", "warning": "state-pane--warn"}.get(sev, "state-pane--dim")
            kinds = by_sev[sev]
            who = list(dict.fromkeys(w for ws in kinds.values() for w in ws)) if sev in named else []
            parts.append((" ".join(kinds) + (f" ({sev}: {', '.join(who)})  " if who else f" ({sev})  "), comp))
        return parts

    # the most that fits: devices for every severity, for hazards only, none
    for named in (sevs, sevs[:1]):
        parts = line(named)
        if sum(len(t) for t, _ in parts) <= width:
            return parts
    return line(())


def build_lines(v: StepView, selected, width: int) -> list[Line]:
    """The pane's lines for one step."""
    lines: list[Line] = []
    add = lines.append
    head: list[Part] = [(f"step {v.seq}/{v.count}", "state-pane--title")]
    if v.op_text:
        head.append(("  " + v.op_text, "state-pane--dim"))
    if v.rollback:
        head.append((f"  rollback depth {v.rollback}", "state-pane--warn"))
    add((head, None))
    if v.open_findings:
        add((_banner(v.open_findings, width), None))
    show = v.show
    cpus = show.get("cpus") or []
    if len(cpus) > 1:
        # Several CPUs, first thing: each one's op and the lock it spins on
        # (their call stacks close the pane, after the locks)
        for r in cpus:
            row: list[Part] = [(f"CPU {r['cpu']}  ", "state-pane--label"), (cpu_op_text(r["op"]), None)]
            w = r["waits_for"]
            if w is not None:
                holder = f"held by cpu {w['holder']}" if w["holder"] is not None else "free now"
                row.append((f"  spins on {w['lock']} ({holder})", "state-pane--warn"))
            add((row, None))
    owners = {d["bdf"]: d["owner"] for d in show["devices"]}
    for u in show["iommus"]:
        add(([], None))
        on = "translation on" if u["id"] in v.translation else "translation off"
        add(([(f"IOMMU {u['id']}", "state-pane--title"), (f"  {on}", "state-pane--dim")], None))
        add(([("   RID          R P  DID  DID owner    PT owner   TT     AW  lo                  hi",
               "state-pane--header")], None))
        # hazards open at the step, by the entry they name (replay's findings)
        hazards: dict[str, str] = {}
        # owner-mismatch hazards by the requester ID they name: the DMA
        # sources that use that entry while it is not their owner's
        wire: dict[str, list[str]] = {}
        for f in v.open_findings:
            if f.get("severity") == "hazard" and f.get("rid") and f.get("iommu") in (None, u["id"]):
                hazards.setdefault(f["rid"], str(f.get("kind")))
                if f.get("kind") == OWNER_MISMATCH and f.get("device"):
                    src = f"{_short(f['device'])} {_own(owners.get(f['device']))}"
                    if src not in wire.setdefault(f["rid"], []):
                        wire[f["rid"]].append(src)
        for e in u["context"]:
            key = _key_of(u["id"], e["rid"])
            sel = key is not None and key == selected
            mark: Part = ("▸ ", "state-pane--select") if sel else ("  ", None)
            rmrr = e["rid"] in v.rmrr
            rid = (f" {e['rid']} ", "state-pane--rid")
            flag: Part = ("R ", "state-pane--rmrr") if rmrr else ("  ", None)
            tail: list[Part] = [(f"{TT_SHORT.get(e['tt'], e['tt']):<6} {e['aw']:<3} {e['lo']}  {e['hi']}",
                                 "state-pane--dim")]
            users = wire.get(e["rid"])
            # the DMA sources an owner-mismatch finding says use this entry, not their owner's
            used: list[Part] = [(f"← {', '.join(users)} ≠ ", "state-pane--bad")] if users else []
            if e["present"]:
                did_o, pt_o = e["did_owner"], e["pt_owner"]
                mismatch = pt_o is not None and did_o != pt_o
                ocomp = "state-pane--bad" if mismatch or users else "state-pane--owner"
                parts = [mark, rid, flag, ("P  ", "state-pane--bad" if users else "state-pane--present"),
                         (f"{e['did']:>4}  ", "state-pane--bad" if users else "state-pane--did"),
                         (f"{_own(did_o):<10}", ocomp), ("≠ " if mismatch else "  ", ocomp),
                         (f"{_own(pt_o):<10} ", ocomp)] + used + tail
            elif rmrr and e["rid"] in hazards:
                # an RMRR device cut off while a hazard about it is open
                parts = [mark, rid, flag, ("-  ", "state-pane--bad"),
                         (f"{e['did']:>4}  " if (e['did'] or e['did_owner']) else "   -  ", "state-pane--bad"),
                         (f"✗ {hazards[e['rid']]:<20} ", "state-pane--bad")] + tail
            else:
                acomp = "state-pane--bad" if users else "state-pane--absent"
                parts = [mark, rid, flag, ("-  ", acomp),
                         (f"{e['did']:>4}  " if (e['did'] or e['did_owner']) else "   -  ", acomp),
                         (f"{_own(e['did_owner']):<10}  {_own(e['pt_owner']):<10} ", acomp)] + used + tail
            add((parts, key))
        if not u["context"]:
            add(([("   (no context entries)", "state-pane--dim")], None))
        if any(e["rid"] in v.rmrr for e in u["context"]):
            add(([("   R: RMRR device (identity-mapped memory it must always reach)", "state-pane--dim")], None))
        dids = " · ".join(f"{k} {_own(o)}" for k, o in u["dids"].items()) or "none in use"
        add(([("   DID map: ", "state-pane--label"), (dids, None)], None))
        c = u["caches"]
        if c["context"] or c["iotlb"] or c["dev_iotlb"]:
            add(([("   caches may still hold (not yet invalidated):", "state-pane--warn")], None))
            for ce in c["context"]:
                for val in ce["values"]:
                    if val["present"]:
                        mism = val["pt_owner"] is not None and val["did_owner"] != val["pt_owner"]
                        desc = (f"did {val['did']} {_own(val['did_owner'])}"
                                f"{' ≠ ' if mism else ' / '}pt {_own(val['pt_owner'])}")
                    else:
                        desc = "not present"
                        mism = False
                    add(([("     context  ", "state-pane--label"), (f"{ce['rid']}  ", "state-pane--rid"),
                          (desc, "state-pane--bad" if mism else None),
                          (f"  lo {val['lo']} hi {val['hi']}", "state-pane--dim")], None))
            for t in c["iotlb"]:
                mism = t["pt_owner"] is not None and t["did_owner"] != t["pt_owner"]
                add(([("     iotlb    ", "state-pane--label"),
                      (f"did {t['did']} {_own(t['did_owner'])}", "state-pane--bad" if mism else None),
                      (f" via {t['rid']}: tables {_own(t['pt_owner'])} {t['pt']}",
                       "state-pane--bad" if mism else "state-pane--dim")], None))
            for t in c["dev_iotlb"]:
                # another domain's translations in the ATC of a device it does not own: stale-devtlb
                mism = t["pt_owner"] != t["owner"]
                add(([("     dev-tlb  ", "state-pane--label"), (f"{t['rid']}  ", "state-pane--rid"),
                      (f"owner {_own(t['owner'])}{' ≠ ' if mism else ' / '}tables {_own(t['pt_owner'])}",
                       "state-pane--bad" if mism else None),
                      (f"  did {t['did']} {_own(t['did_owner'])} {t['pt']}", "state-pane--dim")], None))
    add(([], None))
    devs = show["devices"]
    add(([("Devices: ", "state-pane--label"),
          (" · ".join(f"{d['bdf']} {_own(d['owner'])}" for d in devs) or "none", None)], None))
    locks = show["locks"]
    add(([("Locks:   ", "state-pane--label"),
          (" · ".join(f"{x['lock']} held by cpu {x['cpu']}" for x in locks) or "none held",
           "state-pane--lock" if locks else "state-pane--dim")], None))
    if len(cpus) > 1:
        for r in cpus:
            if r["stack"]:
                add(([(f"Stack {r['cpu']}: ", "state-pane--label"), (" > ".join(r["stack"]), "state-pane--dim")],
                     None))
    return lines


def cpu_op_text(op: dict | None) -> str:
    """A show --json ``cpus[].op`` in words: "op 1 assign 0000:00:14.0 -> guest"."""
    if op is None:
        return "idle"
    text = f"op {op['op']} {op['verb'] or ''}".rstrip()
    if op["bdf"]:
        text += f" {op['bdf']}"
    if op["domain"] is not None:
        text += (" -> " if op["verb"] in ("assign", "quarantine") else " ") + op["domain"]
    return text


class StatePane(LinePane):
    """The IOMMU state; ↑/↓ move the selected context entry while focused."""

    COMPONENT_CLASSES = {
        "state-pane--title", "state-pane--dim", "state-pane--warn", "state-pane--bad",
        "state-pane--header", "state-pane--select", "state-pane--selected-row",
        "state-pane--rid", "state-pane--present", "state-pane--absent", "state-pane--did",
        "state-pane--owner", "state-pane--label", "state-pane--lock", "state-pane--rmrr",
    }
    SELECTED_ROW = "state-pane--selected-row"

    BINDINGS = [
        Binding("down", "select(1)", "next entry", show=False),
        Binding("up", "select(-1)", "previous entry", show=False),
    ]

    class EntrySelected(Message):
        def __init__(self, key) -> None:
            super().__init__()
            self.key = key

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._view: StepView | None = None
        self._memo: LRUCache = LRUCache(16)

    def show_placeholder(self, text: str) -> None:
        self._view = None
        self._build = None
        self.set_lines([([(text, "state-pane--dim")], None)])

    def show_step(self, view: StepView, selected) -> None:
        self._view, self.selected = view, selected
        self._rebuild()
        for y, (_, key) in enumerate(self._lines):
            if key is not None and key == selected:
                self.scroll_line_into_view(y)
                break

    def _lines_for(self, view: StepView, selected, width: int) -> list:
        key = (view.key, selected, width)
        lines = self._memo.get(key)
        if lines is None:
            lines = build_lines(view, selected, width)
            self._memo[key] = lines
        return lines

    def _rebuild(self) -> None:
        if self._view is not None:
            view, selected = self._view, self.selected
            self.build(lambda width: self._lines_for(view, selected, width))

    def prefetch(self, view: StepView, selected) -> None:
        """Idle time: the lines (and their strips) a show of ``view`` would draw."""
        lines = self._lines_for(view, selected, self.content_width())
        top = round(self.scroll_y)
        height = self.scrollable_content_region.height
        for y, (_, key) in enumerate(lines):
            if key is not None and key == selected:
                if y < top or y >= top + height:
                    top = max(0, y - height + 1) if y >= top + height else y
                break
        self.warm(lines, top, selected)

    def entry_keys(self) -> list:
        return [key for _, key in self._lines if key is not None]

    def action_select(self, delta: int) -> None:
        keys = self.entry_keys()
        if not keys:
            return
        try:
            i = keys.index(self.selected) + delta
        except ValueError:
            i = 0 if delta > 0 else len(keys) - 1
        i = max(0, min(i, len(keys) - 1))
        self.post_message(self.EntrySelected(keys[i]))
