"""The command palette (ctrl+p): every action of the viewer by name, with
its key, so nothing is reachable only by a key binding someone must remember."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, help, action, key)
ACTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("Next event", "step forward one event", "step(1)", "n ↓"),
    ("Previous event", "step back one event", "step(-1)", "p ↑"),
    ("Step over", "the next call (to its return) or operation (to its op-end) in one step", "step_over", "o"),
    ("Step out", "to the return of the current function, or the end of the operation", "step_out", "u"),
    ("Follow this CPU", "n/p/o/u step through the events of the current event's CPU only (again: every CPU)",
     "follow_cpu", "c"),
    ("Next finding", "to the step that opens the next finding at or above the chosen severity (s)",
     "next_finding", "]"),
    ("Previous finding", "to the step that opens the previous finding at or above the chosen severity (s)",
     "prev_finding", "["),
    ("Next finding of any severity", "also the benign windows an operation closes with its own flush",
     "next_finding_any", ""),
    ("Previous finding of any severity", "also the benign windows", "prev_finding_any", ""),
    ("Lowest severity ] stops at", "cycle: warning (and hazard) -> hazard only -> every finding",
     "cycle_severity", "s"),
    ("Zoom the timeline to this operation", "the strip shows the operation's steps, op-begin to op-end",
     "zoom", "z"),
    ("Timeline: whole trace", "undo the zoom", "unzoom", "Z"),
    ("Go to step", "jump to a step number, +N, -N, op N or end", "goto", "g"),
    ("First step", "the platform before any event", "goto_step(0)", "home"),
    ("Last step", "the end of the readable trace", "goto_step(-1)", "end"),
    ("Next write of the selected entry", "the next ctx-write of the context entry selected in the state pane",
     "next_write", "w"),
    ("Previous write of the selected entry",
     "the previous ctx-write of the context entry selected in the state pane", "prev_write", "W"),
    ("Search", "find an event whose row contains a text", "search", "/"),
    ("Next search match", "repeat the search forward", "search_next", ">"),
    ("Previous search match", "repeat the search backward", "search_prev", "<"),
    ("Filter events", "show only events of a kind, function, device or with a text", "filter", "f"),
    ("Clear filter", "show every event again", "clear_filter", "F"),
    ("Toggle bookmark", "bookmark the current step (or remove its bookmark)", "bookmark", "m"),
    ("Bookmarks", "list the bookmarks and jump to one", "bookmarks", "'"),
    ("Events pane", "focus the event list (again: maximise)", "pane(1)", "1"),
    ("State pane", "focus the IOMMU state (again: maximise)", "pane(2)", "2"),
    ("Call stack pane", "focus the call stack (again: maximise)", "pane(3)", "3"),
    ("Findings pane", "focus the findings (again: maximise)", "pane(4)", "4"),
    ("Help", "keys and how to read the screen", "help", "?"),
    ("Quit", "leave the viewer", "quit", "q ctrl+c"),
)


class TraceCommands(Provider):
    def _hits(self):
        for title, help_text, action, key in ACTIONS:
            keys = f"  (key {key})" if key else ""
            yield title, help_text + keys, partial(self.app.run_action, action)

    async def discover(self) -> Hits:
        for title, help_text, command in self._hits():
            yield DiscoveryHit(title, command, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, command in self._hits():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), command, help=help_text)
