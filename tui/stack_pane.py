"""The call-stack pane -- where the trace is: the current event decoded in
full (the list crops long arguments), the operation in progress and each
CPU's Xen call stack after the step, outermost frame first, the innermost
marked with the step label the event carries (MO7, RN4 ...,
docs/MODEL.md#step-labels), so the trace reads next to the C source."""

from __future__ import annotations

from .lines import Line, LinePane, wrap_parts
from .model import StepView


def stack_lines(v: StepView | None, label: str | None, event_text: str | None = None,
                placeholder: str = "", width: int = 80) -> list[Line]:
    lines: list[Line] = []
    add = lines.append
    if event_text:
        lines.extend(wrap_parts("event " + event_text, width, "stack-pane--event"))
    if v is None:
        add(([(placeholder, "stack-pane--dim")], None))
        return lines
    op = [("operation: ", "stack-pane--label"), (v.op_text or "idle", None)]
    if v.rollback:
        op.append((f"  (rolling back, depth {v.rollback})", "stack-pane--warn"))
    add((op, None))
    if not v.stacks:
        add(([("no function on any CPU's stack", "stack-pane--dim")], None))
        return lines
    for cpu, frames in v.stacks.items():
        add(([(f"cpu {cpu}", "stack-pane--label")], None))
        for depth, name in enumerate(frames):
            last = depth == len(frames) - 1
            parts = [(" " * min(depth, 12), None), (name, "stack-pane--top" if last else "stack-pane--frame")]
            if last and label:
                parts.append((f"  {label}", "stack-pane--step"))
            add((parts, None))
    return lines


class StackPane(LinePane):
    COMPONENT_CLASSES = {"stack-pane--event", "stack-pane--dim", "stack-pane--label", "stack-pane--warn",
                         "stack-pane--frame", "stack-pane--top", "stack-pane--step"}

    def show_step(self, v: StepView | None, label: str | None, event_text: str | None = None,
                  placeholder: str = "") -> None:
        self.build(lambda width: stack_lines(v, label, event_text, placeholder, width))
