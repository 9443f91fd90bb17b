"""The call-stack pane -- where the trace is: the current event decoded in
full (the list crops long arguments), the operation in progress and each
CPU's Xen call stack after the step, outermost frame first, the innermost
marked with the step label the event carries (the spec's MO7, RN4 ...
labels), so the trace reads next to the C source."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from .model import StepView


def stack_text(v: StepView | None, label: str | None, event_text: str | None = None,
               placeholder: str = "", width: int = 80) -> Text:
    out = Text(no_wrap=True, overflow="ellipsis")
    if event_text:
        # the whole event, wrapped (the list crops long arguments)
        w = max(width - 2, 20)
        out.append("event ", style="bold")
        first = True
        text = event_text
        while text:
            take = w - 6 if first else w
            out.append(("" if first else "\n  ") + text[:take])
            text = text[take:]
            first = False
        out.append("\n")
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

    def show_step(self, v: StepView | None, label: str | None, event_text: str | None = None,
                  placeholder: str = "") -> None:
        width = self.content_region.width or 80
        self.update(stack_text(v, label, event_text, placeholder, width), layout=False)
