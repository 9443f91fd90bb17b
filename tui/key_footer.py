"""The footer: the main keys in one row, ``?`` and ``q`` always visible.

Textual's own footer cuts its row at the right edge -- at 120 columns
"quit" was lost, at 80 neither ``?`` nor ``q`` showed -- and rebuilds its
widgets on every focus change.  This is one Line-API row: the keys in order
of importance, ``? help`` and ``q quit`` pinned at the right end, and the
keys that do not fit dropped from the least important up (the palette,
``ctrl+p``, lists them all).  A label can change with the state (the ``]``
key names the lowest severity it stops at).  A click on a key runs it.
"""

from __future__ import annotations

from .lines import OneLine, Part

PINNED = 2          # the last entries (help, quit) are never dropped


class KeyFooter(OneLine):
    COMPONENT_CLASSES = {"key-footer--key", "key-footer--label"}

    def __init__(self, entries, *, id: str | None = None) -> None:
        """``entries()`` -> [(key shown, label, action)], most important
        first, the pinned ones last."""
        super().__init__(id=id)
        self.entries = entries
        self._spans: list[tuple[int, int, str]] = []

    def _fit(self, width: int) -> list[tuple[str, str, str]]:
        items = list(self.entries())
        head, tail = items[:-PINNED], items[-PINNED:]
        cost = lambda its: sum(len(k) + len(lab) + 3 for k, lab, _ in its) + 1    # noqa: E731
        while head and cost(head + tail) > width:
            head.pop()
        return head + tail

    def parts(self, width: int) -> list[tuple[str, str | None]]:
        out: list[Part] = []
        spans: list[tuple[int, int, str]] = []
        x = 0
        items = self._fit(width)
        for i, (key, label, action) in enumerate(items):
            if i == len(items) - PINNED:
                # pinned keys flush right
                used = sum(len(k) + len(lab) + 3 for k, lab, _ in items) + 1
                pad = max(width - used, 0)
                if pad:
                    out.append((" " * pad, None))
                    x += pad
            out.append((f" {key} ", "key-footer--key"))
            out.append((f"{label} ", "key-footer--label"))
            spans.append((x, x + len(key) + len(label) + 3, action))
            x += len(key) + len(label) + 3
        self._spans = spans
        return out

    def refresh_labels(self) -> None:
        self._line_key = None
        self.refresh()

    def on_click(self, event) -> None:
        for a, b, action in self._spans:
            if a <= event.x < b:
                self.app.call_later(self.app.run_action, action)
                return
