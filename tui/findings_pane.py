"""The findings pane: the hazard windows open at the current step in full
(kind, severity, device, requester ID, [start, end), the step labels that
open and close the window, detail), then the neighbouring findings of the
whole trace around the cursor, so ``]``/``[`` have a visible destination."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .model import SEVERITY_RANK, FindingsView

NEIGHBOURS = 6
SEV_STYLE = {"hazard": "bold red", "warning": "yellow", "benign": "cyan"}


def _span(f: dict) -> str:
    end = f.get("end")
    return f"[{f.get('start')}, {'end' if end is None else end})"


def _labels(f: dict) -> str:
    a, b = f.get("start_label") or "", f.get("end_label") or ""
    if a or b:
        return f"{a or '?'} → {b or ('open' if f.get('end') is None else '?')}"
    return ""


def findings_text(findings: FindingsView | None, seq: int, loading: str = "") -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    if findings is None:
        out.append(loading or "analysing…", style="dim")
        return out
    open_now = findings.open_at(seq)
    out.append(f"open at step {seq}: ", style="bold")
    if not open_now:
        out.append("none", style="dim")
    for f in open_now:
        sev = f.get("severity") or "hazard"
        out.append("\n⚠ ", style=SEV_STYLE.get(sev, ""))
        out.append(f"{f.get('kind')}", style=SEV_STYLE.get(sev, ""))
        out.append(f"  {sev}  {f.get('rid') or f.get('device') or '-'}  {_span(f)}  {_labels(f)}")
        if f.get("detail"):
            out.append(f"\n    {f['detail']}", style="dim")
    sev = ", ".join(f"{n} {k}" for k, n in sorted(findings.by_severity.items(),
                                                      key=lambda kv: -SEVERITY_RANK.get(kv[0], 0)))
    out.append(f"\n\nall findings: {len(findings)}", style="bold")
    if sev:
        out.append(f" ({sev})", style="dim")
    if not len(findings):
        return out
    lo, near = findings.around(seq, NEIGHBOURS)
    hi = lo + len(near)
    if lo > 0:
        out.append(f"\n  … {lo} earlier", style="dim")
    for f in near:
        sev = f.get("severity") or "hazard"
        here = f in open_now
        out.append("\n" + ("▶ " if here else "  "))
        out.append(f"{f.get('start'):>7} ", style="bold" if here else "")
        out.append(f"{f.get('kind'):<16}", style=SEV_STYLE.get(sev, ""))
        out.append(f" {f.get('rid') or '-'}  {_span(f)}")
    if hi < len(findings):
        out.append(f"\n  … {len(findings) - hi} later", style="dim")
    return out


class FindingsPane(Static, can_focus=True):
    def show_step(self, findings: FindingsView | None, seq: int, loading: str = "") -> None:
        self.update(findings_text(findings, seq, loading), layout=False)
