"""The call-stack pane -- where the trace is: the current event decoded in
full (the list crops long arguments), the operation in progress and each
CPU's Xen call stack after the step, outermost frame first, the innermost
marked with the step label the event carries (MO7, RN4 ...,
docs/MODEL.md#step-labels), so the trace reads next to the C source."""

from __future__ import annotations

from .lines import Line, LinePane, wrap_parts
from .model import StepView
from .state_pane import cpu_op_text


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
    rows = {r["cpu"]: r for r in v.show.get("cpus") or ()}
    several = len(rows) > 1
    if not v.stacks and not several:
        add(([("no function on any CPU's stack", "stack-pane--dim")], None))
        return lines
    # several CPUs: every one, also a CPU between ops or spinning before its first call
    stacks = {cpu: v.stacks.get(cpu, []) for cpu in sorted(rows)} if several else v.stacks
    for cpu, frames in stacks.items():
        head: list[tuple[str, str | None]] = [(f"cpu {cpu}", "stack-pane--label")]
        r = rows.get(cpu)
        if several and r is not None:
            # whose op this stack serves, and a spin on a lock another CPU holds
            head.append((f"  {cpu_op_text(r['op'])}", None))
            w = r["waits_for"]
            if w is not None:
                holder = f"held by cpu {w['holder']}" if w["holder"] is not None else "free now"
                head.append((f"  spins on {w['lock']} ({holder})", "stack-pane--warn"))
        add((head, None))
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
