"""The findings pane: the hazard windows open at the current step in full
(kind, severity, device, requester ID, [start, end), the step labels that
open and close the window, detail), then the neighbouring findings of the
whole trace around the cursor, so ``]``/``[`` have a visible destination."""

from __future__ import annotations

from .lines import Line, LinePane, wrap_parts
from .model import SEVERITY_RANK, FindingsView

NEIGHBOURS = 6
OPEN_LISTED = 12         # open findings listed one per line
DETAILED = 3             # of which this many with their detail (plus all opening here)
SEV_COMP = {"hazard": "findings-pane--hazard", "warning": "findings-pane--warning",
            "benign": "findings-pane--benign"}


def _span(f: dict) -> str:
    end = f.get("end")
    return f"[{f.get('start')}, {'end' if end is None else end})"


def _labels(f: dict) -> str:
    a, b = f.get("start_label") or "", f.get("end_label") or ""
    if a or b:
        return f"{a or '?'} → {b or ('open' if f.get('end') is None else '?')}"
    return ""


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
    order = sorted(open_now, key=lambda f: (f.get("start") != seq, -SEVERITY_RANK.get(f.get("severity"), 0),
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


class FindingsPane(LinePane):
    COMPONENT_CLASSES = {"findings-pane--dim", "findings-pane--label", "findings-pane--hazard",
                         "findings-pane--warning", "findings-pane--benign", "findings-pane--here"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._key = None

    def show_step(self, findings: FindingsView | None, seq: int, loading: str = "") -> None:
        # the content only changes when the open set or the neighbourhood does
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
