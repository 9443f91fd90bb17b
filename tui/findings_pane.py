"""The findings pane: the hazard windows open at the current step in full
(kind, severity, device, requester ID, [start, end), the step labels that
open and close the window, detail), then the neighbouring findings of the
whole trace around the cursor, so ``]``/``[`` have a visible destination.

Maximised (``4`` twice) the pane is the list of *every* finding of the
trace, one per line in check order (start, kind, severity, requester ID,
window, step labels): ↑/↓, PgUp/PgDn, Home/End select one, Enter goes to
the step that opens its window.  The selection starts at the finding
nearest the cursor.  A 10^6-event trace has tens of thousands of findings;
the lines are formatted once per list (records, no dict per finding)."""

from __future__ import annotations

from bisect import bisect_left
from typing import TYPE_CHECKING, Any, cast

from textual.binding import Binding
from textual.message import Message

from replay.hazards.findings import SEVERITY_RANK, boundary_label

from .lines import Line, LinePane, wrap_parts
from .model import FindingsView

if TYPE_CHECKING:
    from .app import VtdtraceApp

NEIGHBOURS = 6
OPEN_LISTED = 12         # open findings listed one per line
DETAILED = 3             # of which this many with their detail (plus all opening here)
SEV_COMP = {"hazard": "findings-pane--hazard", "warning": "findings-pane--warning",
            "benign": "findings-pane--benign"}


def _span(f: dict) -> str:
    end = f.get("end")
    return f"[{f.get('start')}, {'end' if end is None else end})"


def _labels(f: dict) -> str:
    end = f.get("end")
    return f"{boundary_label(f.get('start_label'))} → {'open' if end is None else boundary_label(f.get('end_label'))}"


def findings_lines(findings: FindingsView | None, seq: int, loading: str = "", width: int = 80) -> list[Line]:
    lines: list[Line] = []
    add = lines.append
    if findings is None:
        add(([(loading or "analysing…", "findings-pane--dim")], None))
        return lines
    open_now = findings.open_at(seq)
    add(([("open at this step: ", "findings-pane--label"),
          (str(len(open_now)) if open_now else "none", "findings-pane--dim" if not open_now else None)], None))
    # the windows that open here first (where ]/[ land), then by severity,
    # the most recent first; details for the first few only (a long trace
    # can have dozens of long windows open at once)
    order = sorted(open_now, key=lambda f: (f.get("start") != seq, -SEVERITY_RANK.get(f.get("severity") or "", 0),
                                            -(f.get("start") or 0)))
    for i, f in enumerate(order[:OPEN_LISTED]):
        sev = f.get("severity") or "hazard"
        add(([("⚠ " + str(f.get("kind")), SEV_COMP.get(sev)),
              (f"  {sev}  {f.get('rid') or f.get('device') or '-'}  {_span(f)}  {_labels(f)}", None)], None))
        if f.get("detail") and (i < DETAILED or f.get("start") == seq):
            lines.extend(wrap_parts(str(f["detail"]), width, "findings-pane--dim", "    ", "    "))
    if len(order) > OPEN_LISTED:
        add(([(f"  … {len(order) - OPEN_LISTED} more open", "findings-pane--dim")], None))
    sev = ", ".join(f"{n} {k}" for k, n in sorted(findings.by_severity.items(),
                                                  key=lambda kv: -SEVERITY_RANK.get(kv[0], 0)))
    add(([], None))
    add(([(f"all findings: {len(findings)}", "findings-pane--label"),
          (f" ({sev})" if sev else "", "findings-pane--dim")], None))
    if not len(findings):
        return lines
    lo, near = findings.around(seq, NEIGHBOURS)
    hi = lo + len(near)
    if lo > 0:
        add(([(f"  … {lo} earlier", "findings-pane--dim")], None))
    open_keys = {(f.get("kind"), f.get("rid"), f.get("start")) for f in open_now}
    for f in near:
        sev = f.get("severity") or "hazard"
        here = (f.get("kind"), f.get("rid"), f.get("start")) in open_keys
        add(([("▶ " if here else "  ", "findings-pane--here"),
              (f"{f.get('start'):>8} ", "findings-pane--label" if here else None),
              (f"{f.get('kind'):<16}", SEV_COMP.get(sev)),
              (f" {f.get('rid') or '-'}  {_span(f)}", None)], None))
    if hi < len(findings):
        add(([(f"  … {len(findings) - hi} later", "findings-pane--dim")], None))
    return lines


LIST_HEAD = 2            # header lines above the first finding in the list


def _field(f, name):
    return f.get(name) if isinstance(f, dict) else getattr(f, name, None)


def list_lines(findings: FindingsView) -> list[Line]:
    """Every finding, one line each; line key = its index in check order."""
    sev = ", ".join(f"{n} {k}" for k, n in sorted(findings.by_severity.items(),
                                                  key=lambda kv: -SEVERITY_RANK.get(kv[0], 0)))
    lines: list[Line] = [
        ([(f"all findings: {len(findings):,}", "findings-pane--label"), (f" ({sev})" if sev else "",
                                                                           "findings-pane--dim"),
          ("   ↑/↓ PgUp/PgDn Home/End: select   enter: go to its start   4: restore", "findings-pane--dim")],
         None),
        ([("   start  kind              severity  requester ID  window              labels",
           "findings-pane--dim")], None)]
    for i, f in enumerate(findings.items):
        sv = _field(f, "severity") or "hazard"
        end = _field(f, "end")
        span = f"[{_field(f, 'start')}, {'end' if end is None else end})"
        labels = (f"{boundary_label(_field(f, 'start_label'))} → "
                  f"{'open' if end is None else boundary_label(_field(f, 'end_label'))}")
        lines.append(([(f"{_field(f, 'start'):>8}  ", None), (f"{_field(f, 'kind'):<16}  ", SEV_COMP.get(sv)),
                       (f"{sv:<8}  {_field(f, 'rid') or _field(f, 'device') or '-':<12}  {span:<18}  {labels}",
                        None)], i))
    return lines


class FindingsPane(LinePane):
    COMPONENT_CLASSES = {"findings-pane--dim", "findings-pane--label", "findings-pane--hazard",
                         "findings-pane--warning", "findings-pane--benign", "findings-pane--here",
                         "findings-pane--selected-row"}
    SELECTED_ROW = "findings-pane--selected-row"

    BINDINGS = [
        Binding("down", "select(1)", "next finding", show=False),
        Binding("up", "select(-1)", "previous finding", show=False),
        Binding("pagedown", "select_page(1)", "page down", show=False),
        Binding("pageup", "select_page(-1)", "page up", show=False),
        Binding("home", "select_edge(0)", "first", show=False),
        Binding("end", "select_edge(1)", "last", show=False),
        Binding("enter", "go", "go to its start", show=False),
    ]

    class Go(Message):
        """Enter on a finding of the list: go to the step that opens it."""

        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._key: tuple[Any, ...] | None = None
        self.listing = False
        self._findings: FindingsView | None = None
        self._list_of: FindingsView | None = None

    @property
    def _app(self) -> VtdtraceApp:
        # The pane lives in the one-trace view only.
        return cast("VtdtraceApp", self.app)

    # --- the list (maximised) ----------------------------------------------------------------
    def set_listing(self, on: bool, findings: FindingsView | None, seq: int) -> None:
        """Switch between the step's summary and the list of every finding."""
        self.listing = on
        self._key = None
        if not on:
            self.selected = None
            self._list_of = None
            self.show_step(findings, seq)
            return
        if findings is None:
            self.set_lines([([("findings are still being computed", "findings-pane--dim")], None)])
            return
        self._findings = findings
        if self._list_of is not findings:
            self._build = None
            self.set_lines(list_lines(findings))
            self._list_of = findings
        i = min(max(bisect_left(findings.starts, seq), 0), max(len(findings) - 1, 0))
        self._select(i if len(findings) else None)

    def _select(self, i) -> None:
        self.selected = i
        self.refresh()
        if i is not None:
            self.scroll_line_into_view(LIST_HEAD + i)
            if i == 0:
                self.scroll_to(y=0, animate=False, force=True)

    def _listed(self) -> FindingsView | None:
        """The findings the list shows, or None (and a message) when there is no list."""
        if not self.listing or self._findings is None or not len(self._findings):
            self._app.say("maximise the findings pane (4 again) for the list of every finding"
                          if not self.listing else "no findings in this trace")
            self.app.bell()
            return None
        return self._findings

    def action_select(self, delta: int) -> None:
        if not self.listing:
            self._app.action_step(delta)        # as everywhere outside the list: ↓/↑ step
            return
        findings = self._listed()
        if findings is None:
            return
        n = len(findings)
        i = (self.selected or 0) + delta
        if not 0 <= i < n:
            self._app.say("at the last finding" if delta > 0 else "at the first finding")
            self.app.bell()
            return
        self._select(i)

    def action_select_page(self, direction: int) -> None:
        findings = self._listed()
        if findings is None:
            return
        n = len(findings)
        step = max(self.scrollable_content_region.height - 1, 1)
        self._select(max(0, min((self.selected or 0) + direction * step, n - 1)))

    def action_select_edge(self, end: int) -> None:
        findings = self._listed()
        if findings is None:
            return
        self._select(len(findings) - 1 if end else 0)

    def action_go(self) -> None:
        findings = self._listed()
        if findings is None or self.selected is None:
            return
        start = findings.starts[self.selected]
        self.post_message(self.Go(int(start)))

    def show_step(self, findings: FindingsView | None, seq: int, loading: str = "") -> None:
        if self.listing:
            if findings is not None and self._list_of is not findings:
                self.set_listing(True, findings, seq)
            return
        # the content only changes when the open set or the neighbourhood does
        key: tuple[Any, ...]
        if findings is not None:
            lo = findings.around(seq, NEIGHBOURS)[0]
            key = (id(findings), tuple((f.get("kind"), f.get("rid"), f.get("start"))
                                       for f in findings.open_at(seq)), lo, self.content_width())
        else:
            key = (None, loading, self.content_width())
        if key == self._key:
            return
        self._key = key
        self.build(lambda width: findings_lines(findings, seq, loading, width))
