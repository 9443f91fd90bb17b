"""The call-stack pane: the operation in progress and each CPU's Xen call
stack after the current step, outermost frame first, the innermost marked
with the step label the event carries (the spec's MO7, RN4 ... labels), so
the trace reads next to the C source."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .model import StepView


def stack_text(v: StepView | None, label: str | None, placeholder: str = "") -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    if v is None:
        out.append(placeholder, style="dim")
        return out
    out.append("operation: ", style="bold")
    out.append(v.op_text or "idle")
    if v.rollback:
        out.append(f"  (rolling back, depth {v.rollback})", style="yellow")
    if not v.stacks:
        out.append("\n\nno function on any CPU's stack", style="dim")
        return out
    for cpu, frames in v.stacks.items():
        out.append(f"\n\ncpu {cpu}", style="bold")
        for depth, name in enumerate(frames):
            last = depth == len(frames) - 1
            out.append("\n" + " " * min(depth, 12))
            out.append(name, style="bold cyan" if last else "")
            if last and label:
                out.append(f"  {label}", style="magenta")
    return out


class StackPane(Static, can_focus=True):
    """Static text: a stack is a handful of lines."""

    def show_step(self, v: StepView | None, label: str | None, placeholder: str = "") -> None:
        self.update(stack_text(v, label, placeholder))
