"""The command line: one row above the footer, like less's or vim's.

It shows status (filter, search result, why a key did nothing) and, when a
key asks for input (``g`` go to step, ``/`` search), becomes a one-line
prompt with its own small editor.  It is a single Line-API widget that never
changes size or appears/disappears, so asking, typing and answering never
re-lay out the screen: the frame after Enter costs what the jump costs and no
more (a modal screen's dismissal repaints everything under it).

Editing keys: printable characters, ←/→, Home/End, Backspace/Delete,
ctrl+u (clear), Enter (answer), Escape (cancel).  A prompt can open with
its old answer *selected* (``/`` offers the last search): Enter takes it,
typing replaces it, Backspace clears it, an arrow key keeps it for editing.  While it asks, the app
hands it every key (``take_key``) before any binding sees it.  It never
takes the focus: a focus change makes Textual rebuild the footer's key list
(tens of widgets, their CSS) -- that alone cost ~100 ms a prompt here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import events

from .lines import OneLine, Part


@dataclass
class _Ask:
    title: str
    buffer: str
    pos: int
    hint: str
    check: Callable | None
    done: Callable | None
    error: str = ""
    selected: bool = False          # the whole buffer is selected: typing replaces it
    typed: Callable | None = None   # told the text after each edit that changed it


class CommandLine(OneLine, can_focus=False):
    COMPONENT_CLASSES = {"command-line--status", "command-line--prompt", "command-line--text",
                         "command-line--cursor", "command-line--hint", "command-line--error"}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.status = ""
        self._ask: _Ask | None = None

    # --- API --------------------------------------------------------------------------------
    @property
    def asking(self) -> bool:
        return self._ask is not None

    @property
    def value(self) -> str:
        return self._ask.buffer if self._ask else ""

    def set_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.refresh()

    def ask(self, title: str, value: str = "", hint: str = "", check: Callable | None = None,
            done: Callable | None = None, select: bool = False, typed: Callable | None = None) -> None:
        """Prompt; ``check(text)`` turns the answer into the result or raises
        ValueError (shown, the prompt stays); ``done(result)`` receives it
        (None when cancelled).  ``select``: ``value`` starts selected.
        ``typed(text)``: called after every edit that changed the text (the
        go-to prompt prepares the step being typed while the user types)."""
        self._ask = _Ask(title, value, len(value), hint, check, done, selected=bool(select and value),
                         typed=typed)
        self.refresh()


    # --- editing ------------------------------------------------------------------------------
    def _finish(self, result, cancelled: bool) -> None:
        ask = self._ask
        assert ask is not None          # only a prompt finishes
        self._ask = None
        self.refresh()
        if ask.done is not None:
            ask.done(None if cancelled else result)

    # Not Widget.handle_key (a coroutine Textual awaits on a focused widget):
    # this one is called by the key routing, synchronously.
    def take_key(self, event: events.Key) -> bool:
        """Edit with ``event``; False when not asking (the key is not ours)."""
        ask = self._ask
        if ask is None:
            return False
        key, b, p = event.key, ask.buffer, ask.pos
        if ask.selected and key not in ("enter", "escape"):
            ask.selected = False
            if key in ("backspace", "delete", "ctrl+u") or (event.is_printable and event.character):
                b, p = ask.buffer, ask.pos = "", 0           # replaced by what is typed
                if key in ("backspace", "delete", "ctrl+u"):
                    self.refresh()
                    return True
        if key == "enter":
            try:
                result = ask.check(b) if ask.check is not None else b
            except ValueError as exc:
                ask.error = str(exc)
            else:
                self._finish(result, False)
                return True
        elif key == "escape":
            self._finish(None, True)
            return True
        elif key == "backspace":
            if p > 0:
                ask.buffer, ask.pos = b[:p - 1] + b[p:], p - 1
        elif key == "delete":
            ask.buffer = b[:p] + b[p + 1:]
        elif key == "left":
            ask.pos = max(0, p - 1)
        elif key == "right":
            ask.pos = min(len(b), p + 1)
        elif key in ("home", "ctrl+a"):
            ask.pos = 0
        elif key in ("end", "ctrl+e"):
            ask.pos = len(b)
        elif key == "ctrl+u":
            ask.buffer, ask.pos = "", 0
        elif event.is_printable and event.character:
            ask.buffer, ask.pos = b[:p] + event.character + b[p:], p + 1
            ask.error = ""
        self.refresh()
        if ask.typed is not None and ask.buffer != b:
            ask.typed(ask.buffer)
        return True

    def cancel(self) -> None:
        if self._ask is not None:
            self._finish(None, True)

    # --- drawing ------------------------------------------------------------------------------
    def parts(self, width: int = 0) -> list[tuple[str, str | None]]:
        ask = self._ask
        if ask is None:
            return [(" " + self.status if self.status else "", "command-line--status")]
        b, p = ask.buffer, ask.pos
        if ask.selected:
            return [(f" {ask.title}: ", "command-line--prompt"), (b, "command-line--cursor"),
                    ("   " + ask.hint if ask.hint else "", "command-line--hint")]
        parts: list[Part] = [(f" {ask.title}: ", "command-line--prompt"), (b[:p], "command-line--text"),
                 (b[p:p + 1] or " ", "command-line--cursor"), (b[p + 1:], "command-line--text")]
        if ask.error:
            parts.append(("   " + ask.error, "command-line--error"))
        elif ask.hint:
            parts.append(("   " + ask.hint, "command-line--hint"))
        return parts
