"""Step labels of real-code events.

The model's labels (MO7, UO3 ...) name steps of the 4.15 code; a real tree
has no such names.  An event's label is its C function's name, or, where a
per-version table knows the source line, the model's label for the step
that line performs.  Nothing in the replay depends on labels: they are for
reading a trace and for lining two traces up in `diff`.
"""

from __future__ import annotations

# (function, line) -> label, for trees whose lines are known.  Empty for now:
# the function name is used everywhere (see label_for).
LINE_LABELS: dict[tuple[str, int], str] = {}


def label_for(func: str, line: int) -> str:
    return LINE_LABELS.get((func, line), func)
