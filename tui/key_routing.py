"""How a key reaches both apps (one trace, diff): the command line first,
the idle collector and the latency probe see it, then the bindings.

A prompt in the command line (``g``, ``/``) gets every key before any
binding, on the main screen only (modal screens keep theirs); a click
anywhere cancels it.  Before that the app's ``key_pressed`` (if it has one)
sees every key -- the one-trace view clears the last message there -- and
Escape stops a running search (``cancel_search``) before anything else
takes it (Textual's own Escape would un-maximise a pane).  ``latency_probe`` is bench/tui_bench.py's hook: it
pairs a key with the first frame written after it.
"""

from __future__ import annotations

from typing import Any, Protocol

from textual import events

from .command_line import CommandLine
from .idle_gc import IdleGC


class LatencyProbe(Protocol):
    """bench/tui_bench.py's Probe: sees every key and every frame written."""

    def event(self, event: events.Event, app: Any = None) -> None: ...
    def displayed(self, app: Any, renderable: Any) -> None: ...


class KeyRouting(IdleGC):
    """Mix into an App whose main screen has a CommandLine ``#command``,
    before App."""

    latency_probe: LatencyProbe | None = None

    @property
    def command_line(self) -> CommandLine:
        # the main screen's, also while a modal screen is on top
        return self.screen_stack[0].query_one("#command", CommandLine)

    async def on_event(self, event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded:
            self.gc_key()
            probe = self.latency_probe
            if probe is not None:
                probe.event(event, self)
            pressed = getattr(self, "key_pressed", None)
            if pressed is not None:
                pressed(event)
            main = self.screen is self.screen_stack[0]
            if main and event.key == "escape" and not self.command_line.asking:
                cancel = getattr(self, "cancel_search", None)
                if cancel is not None and cancel():
                    return
            # ctrl+c quits from a prompt too (the prompt would swallow it)
            if main and event.key != "ctrl+c" and self.command_line.take_key(event):
                return
        elif isinstance(event, events.MouseDown) and self.screen_stack:
            self.command_line.cancel()
        await super().on_event(event)

    def _display(self, screen, renderable) -> None:
        super()._display(screen, renderable)
        probe = self.latency_probe
        if probe is not None and renderable is not None:
            probe.displayed(self, renderable)
