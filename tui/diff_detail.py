"""The diff view's lower pane: what differs at the cursor row.

Where the row is (row, aligned operation and its status, difference region
with its counts and call path), both events in full, each differing field
with A's and B's value, the state difference the diff measured after this
operation (only changed fields), and the findings of this operation that
only one trace has.  All of it comes from the ``DiffReport``; the texts are
the ones ``vtdtrace diff`` prints, so the screen and the report read alike.
"""

from __future__ import annotations

from typing import Any

from replay.diff import ARGS, ONLY_A, ONLY_B
from replay.diff.text import (
    PAIR_STATUS,
    change_text,
    event_line,
    finding_text,
    key_desc,
    op_title,
    race_text,
    region_counts,
)
from replay.jsonout import text_scalar

from .diff_model import DiffModel
from .lines import Line, LinePane, wrap_parts

CLASS_TEXT = {ARGS: "the same event with other values", ONLY_A: "an event only A has",
              ONLY_B: "an event only B has"}
RUN_BACK = 4096          # events walked back to find the op-begin of a row in a run
STATE_SHOWN = 12
HAZARDS_SHOWN = 6
HEADER_SHOWN = 6
RID_PARTS = ("seg", "bus", "devfn")


def _field_value(pres, ev, name: str) -> str:
    """A field's decoded value as the JSON output shows it ('-' if absent)."""
    if ev is None:
        return "-"
    d = pres.to_json(ev)
    if name.startswith("args."):
        arg = name[5:]
        pairs = {p[0]: p[1] for p in d.get("args") or () if isinstance(p, list) and len(p) == 2}
        if arg not in pairs and arg in RID_PARTS:
            arg = "bdf"               # seg/bus/devfn are one requester ID in the JSON form
        return text_scalar(pairs[arg]) if arg in pairs else "-"
    if name == "event":
        return event_line(pres, ev)
    if name not in d and name in RID_PARTS:
        name = "bdf"
    return text_scalar(d.get(name))


def _run_op_title(dm: DiffModel, row) -> str:
    """'op 7 assign 0000:00:14.0 -> guest' for a row inside a run of
    identical operations (the run's pair names only its first one)."""
    m = dm.models["a"]
    ev = m.event(row.seq_a) if row.seq_a is not None else None
    if ev is None:
        return "op ?"
    op, seq = ev[3], row.seq_a
    for _ in range(RUN_BACK):
        e = m.event(seq)
        if e is None or e[3] != op:
            break
        if m.kind_name(e) == "op-begin" and len(e) > 9:
            return f"op {op} {key_desc((e[6], e[9], e[7], e[8]), m.presenter)}"
        seq -= 1
    return f"op {op}"


def detail_lines(dm: DiffModel, width: int) -> list[Line]:
    lines: list[Line] = []
    add = lines.append
    if dm.error:
        lines.extend(wrap_parts(dm.error, width, "diff-detail--bad"))
        return lines
    if not dm.ready:
        add(([(dm.summary(), "diff-detail--dim")], None))
        add(([("the two traces are being aligned; the keys work when they are", "diff-detail--dim")], None))
        return lines
    report = dm.rep
    if not dm.n_rows:
        add(([("neither trace has a readable event: nothing to align", "diff-detail--dim")], None))
        return lines
    row = dm.row_at(dm.row)
    pair = dm.pair_at(dm.row)
    k, n = dm.region_number()
    if pair.n_ops > 1:
        title = f"{_run_op_title(dm, row)}: the same in both traces (one of a run of {pair.n_ops:,})"
    else:
        title = f"{op_title(report, pair)}: {PAIR_STATUS.get(pair.status, pair.status)}"
    add(([(f"row {dm.row + 1:,} of {dm.n_rows:,}", "diff-detail--label"), (f"  {title}", None)], None))
    reg = dm.region_at()
    if reg is not None:
        counts = region_counts(reg)
        # `vtdtrace diff` numbers regions inside each operation (the same regions
        # unless it compared the projections of real code and a model)
        local = f" (region {pair.regions.index(reg.index) + 1} of this operation in `vtdtrace diff`)" \
            if reg.index in pair.regions and not dm.implementations_differ else ""
        lines.extend(wrap_parts(f"region {reg.index + 1} of {n}{local}: {counts}", width, "diff-detail--region"))
    elif n:
        nxt = dm.al.next_region(dm.row)
        where = f"next difference: region {nxt.index + 1} at row {nxt.row_start + 1:,} (}})" if nxt else \
            "no difference after this row"
        add(([(f"no difference here · {where}", "diff-detail--dim")], None))
    else:
        add(([("the two traces have the same events", "diff-detail--dim")], None))
    # Two schedules of one scenario: what each ran where they parted; up
    # here in the first region (where the view opens), else at the end.
    race = (report.first_divergence or {}).get("race")
    race_first = race is not None and reg is not None and reg.index == 0
    if race is not None and race_first:
        lines.extend(wrap_parts(race_text(race), width, "diff-detail--label"))

    # the two events
    evs: dict[str, list[Any] | None] = {}
    for side in ("a", "b"):
        m = dm.models[side]
        seq = row.seq_a if side == "a" else row.seq_b
        tag = side.upper()
        if seq is None:
            at = dm.seq_at(side)
            add(([(f"{tag} ", "diff-detail--side"),
                  (f"gap: no event here; {tag} stays at step {at:,}", "diff-detail--dim")], None))
            evs[side] = None
            continue
        ev = m.event(seq)
        evs[side] = ev
        text = event_line(m.presenter, ev) if ev is not None else "(unreadable)"
        comp = {ONLY_A: "diff-detail--removed", ONLY_B: "diff-detail--added"}.get(row.cls)
        first = wrap_parts(f"{seq:>7}  {text}", width - 2, comp, "", "           ")
        first[0] = ([(f"{tag} ", "diff-detail--side")] + first[0][0], None)
        lines.extend(first)
    if row.cls in CLASS_TEXT:
        add(([(CLASS_TEXT[row.cls], "diff-detail--label")], None))
    if row.cls == ARGS and row.fields:
        pa, pb = dm.models["a"].presenter, dm.models["b"].presenter
        for f in row.fields:
            add(([(f"  {f}: ", "diff-detail--field"),
                  (f"A {_field_value(pa, evs['a'], f)}", None), ("  |  ", "diff-detail--dim"),
                  (f"B {_field_value(pb, evs['b'], f)}", None)], None))

    # the state after each side's step at the cursor
    cur = dm.cursor_state()
    if cur is None:
        add(([("state at the cursor: ", "diff-detail--label"), (dm.session_note, "diff-detail--dim")], None))
    else:
        sa, sb, changes = cur
        head = f"state at the cursor (A after step {sa:,}, B after step {sb:,}): "
        if not changes:
            add(([(head, "diff-detail--label"), ("the same", "diff-detail--dim")], None))
        else:
            add(([(head, "diff-detail--label"),
                  (f"{len(changes)} difference{'s' if len(changes) != 1 else ''}", "diff-detail--field")], None))
            for c in changes[:STATE_SHOWN]:
                lines.extend(wrap_parts(change_text(c), width, None, "  ", "      "))
            if len(changes) > STATE_SHOWN:
                add(([(f"  … {len(changes) - STATE_SHOWN} more (vtdtrace show A/B --at N)", "diff-detail--dim")],
                     None))

    # findings one trace has and the other lacks, in this operation
    hz = dm.hazards_of(pair.index)
    if hz:
        add(([(f"findings in this operation only one trace has: {len(hz)}", "diff-detail--label")], None))
        here = dm.current_hazard()
        if here in hz:                      # where ]/[ landed: first, so it is in view
            hz = [here] + [h for h in hz if h is not here]
        for h in hz[:HAZARDS_SHOWN]:
            comp = "diff-detail--hazard-here" if h is here else "diff-detail--hazard"
            lines.extend(wrap_parts(f"only {h.side.upper()}: {finding_text(h.finding)}", width, comp, "  ", "      "))
        if len(hz) > HAZARDS_SHOWN:
            add(([(f"  … {len(hz) - HAZARDS_SHOWN} more", "diff-detail--dim")], None))
    elif not report.hazards_available:
        add(([("hazard delta not computed", "diff-detail--dim")], None))
    # where the region sits in the call structure: long, so after the rows' own facts and findings
    if reg is not None and reg.path:
        lines.extend(wrap_parts("region in " + " > ".join(str(p) for p in reg.path), width, "diff-detail--region"))

    # state after this operation, as the diff measured it
    sd = dm.state_diff_of(pair.index)
    if sd is not None:
        if sd.changes:
            add(([(f"state after this operation (A step {sd.seq_a:,}, B step {sd.seq_b:,}): "
                   f"{len(sd.changes)} difference{'s' if len(sd.changes) != 1 else ''}", "diff-detail--label")],
                 None))
            for c in sd.changes[:STATE_SHOWN]:
                lines.extend(wrap_parts(change_text(c), width, None, "  ", "      "))
            if len(sd.changes) > STATE_SHOWN:
                add(([(f"  … {len(sd.changes) - STATE_SHOWN} more (vtdtrace diff --json)", "diff-detail--dim")],
                     None))
        else:
            add(([(f"state after this operation (A step {sd.seq_a:,}, B step {sd.seq_b:,}): the same again",
                   "diff-detail--label")], None))

    if race is not None and not race_first:
        lines.extend(wrap_parts(race_text(race), width, "diff-detail--label"))
    if report.header_diff:
        hd = report.header_diff
        # values as the trace view prints them (true, -, JSON), not Python reprs
        text = "; ".join(f"{d.get('path')}: {text_scalar(d.get('a'))} | {text_scalar(d.get('b'))}"
                         if isinstance(d, dict) else text_scalar(d) for d in hd[:HEADER_SHOWN])
        more = f"; … {len(hd) - HEADER_SHOWN} more" if len(hd) > HEADER_SHOWN else ""
        lines.extend(wrap_parts(f"headers differ (not counted as a difference): {text}{more}", width,
                                "diff-detail--dim"))
    return lines


class DiffDetail(LinePane, can_focus=False):
    """Never focused (the mouse wheel scrolls it): every key is the app's."""

    COMPONENT_CLASSES = {"diff-detail--label", "diff-detail--dim", "diff-detail--region", "diff-detail--side",
                         "diff-detail--removed", "diff-detail--added", "diff-detail--field", "diff-detail--hazard",
                         "diff-detail--hazard-here", "diff-detail--bad"}

    def show(self, dm: DiffModel) -> None:
        """The row under the cursor, from its first line (J/K scrolled the
        previous row's text)."""
        if self.scroll_y:
            self.scroll_to(y=0, animate=False, force=True)
        self.build(lambda width: detail_lines(dm, width))
