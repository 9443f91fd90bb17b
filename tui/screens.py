"""Modal screens: help, the one-line prompts (go to step, search), the
filter form and the bookmark list.  Each returns its answer through
``dismiss`` and knows nothing about traces; the app acts on the answer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from .model import Filter, FilterError, parse_device, parse_kinds

HELP_TEXT = """\
[b]vtdtrace view[/b] — step through a recorded VT-d reassignment

[b]Moving[/b]
  [b]n[/b] / [b]↓[/b]     next event            [b]p[/b] / [b]↑[/b]     previous event
  [b]o[/b]         step over: a call in one step (to its return), an operation to its op-end
  [b]u[/b]         step out: to the return of the current function (top level: op-end)
            several CPUs: o and u stay on the current event's CPU, other CPUs' events pass
  [b]c[/b]         follow this CPU: n/p/o/u step through its events only (again: every CPU)
  [b]][/b] / [b]\\[[/b]     next / previous finding: the step that opens a window of the chosen severity
  [b]s[/b]         lowest severity ] / \\[ stop at: warning → hazard only → all (benign too)
            (benign windows are the ones an operation closes with its own flush)
  [b]g[/b]         go to step: 200, +10, -5, op 2, end
  [b]w[/b] / [b]W[/b]     next / previous write of the selected context entry
  [b]PgUp PgDn Home End[/b]  page through the list (event list focused)

[b]Finding things[/b]
  [b]/[/b]         search forward (row text, case-insensitive); [b]>[/b] / [b]<[/b] next / previous match
            the prompt offers the last search selected; [b]escape[/b] stops a running search
  [b]f[/b]         filter: show only events of a kind, a function, a device, with a text
  [b]F[/b]         clear the filter
  [b]m[/b]         bookmark the current step (again: remove)
  [b]'[/b]         list bookmarks and jump; they are saved beside the trace

[b]Panes[/b]
  [b]1[/b] events  [b]2[/b] state  [b]3[/b] call stack  [b]4[/b] findings
  a pane's key again maximises it (and restores it); [b]tab[/b] cycles focus
  In the state pane ↑/↓ select the context entry that [b]w[/b]/[b]W[/b] follow.
  Maximised: the list shows the cursor's event in full below it; the findings
  pane lists every finding (↑/↓, [b]enter[/b] goes to its start); ←/→/Home/End
  scroll the state and stack panes sideways.
  [b]z[/b] / [b]Z[/b]     timeline: zoom to the cursor's operation / the whole trace

[b]Elsewhere[/b]
  [b]ctrl+p[/b]    command palette: every action above by name
  [b]?[/b]         this help            [b]q[/b] / [b]ctrl+c[/b]  quit

[b]Reading the screen[/b]
  ▌ left of a row: the step is inside a hazard window (red: hazard, yellow: warning)
  ◆ a bookmark.  In the state pane a red row with ≠ is a present context entry
  whose DID belongs to one domain and whose page tables to another; R marks an
  RMRR device, and a red ✗ row its entry cut off (not present) under a hazard.
  The strip at the bottom is the whole trace: ▁…█ how many finding windows
  cover a cell (colour: the worst severity there), ▼ you, ◆ bookmarks.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss(None)", "close", show=True)]

    def __init__(self, text: str = HELP_TEXT) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(self.text, id="help-text")
            yield Label("escape: close", id="help-close")


class FilterScreen(ModalScreen[Filter | None]):
    """The filter form: kind, function, device, free text.  Every non-empty
    field must match; all empty clears the filter."""

    BINDINGS = [Binding("escape", "dismiss(None)", "cancel")]

    def __init__(self, current: Filter) -> None:
        super().__init__()
        self.current = current

    def compose(self) -> ComposeResult:
        c = self.current
        with Vertical(classes="prompt-box", id="filter-box"):
            yield Label("filter: show only matching events (empty fields match all)", classes="prompt-title")
            yield Label("kind", classes="field-label")
            yield Input(",".join(c.kinds), placeholder="ctx-write,flush-context", id="filter-kind")
            yield Label("function", classes="field-label")
            yield Input(c.func, placeholder="domain_context_mapping_one", id="filter-func")
            yield Label("device", classes="field-label")
            yield Input(c.device, placeholder="0000:00:14.0", id="filter-device")
            yield Label("text", classes="field-label")
            yield Input(c.text, placeholder="any text in the row", id="filter-text")
            yield Label("enter: apply   tab: next field   escape: cancel", classes="prompt-hint",
                        id="filter-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        get = lambda i: self.query_one(f"#filter-{i}", Input).value.strip()  # noqa: E731
        try:
            flt = Filter(kinds=parse_kinds(get("kind")), func=get("func"), device=get("device"),
                         text=get("text"))
            if flt.device:
                parse_device(flt.device)
        except FilterError as exc:
            self.query_one("#filter-hint", Label).update(str(exc))
            return
        self.dismiss(flt)


class BookmarksScreen(ModalScreen[int | None]):
    """The bookmarks, in step order; enter jumps, d deletes."""

    BINDINGS = [Binding("escape", "dismiss(None)", "close"),
                Binding("d,delete", "delete", "delete bookmark")]

    def __init__(self, marks: list[tuple[int, str]], on_delete=None) -> None:
        super().__init__()
        self.marks = list(marks)
        self.on_delete = on_delete

    def compose(self) -> ComposeResult:
        with Vertical(classes="prompt-box", id="bookmarks-box"):
            yield Label("bookmarks — enter: jump   d: delete   escape: close", classes="prompt-title")
            yield OptionList(*self._options(), id="bookmarks-list")

    def _options(self):
        if not self.marks:
            return [Option("no bookmarks yet: press m on a step", id="none", disabled=True)]
        return [Option(f"{seq:>8}  {note}", id=str(seq)) for seq, note in self.marks]

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id and event.option.id != "none":
            self.dismiss(int(event.option.id))

    def action_delete(self) -> None:
        ol = self.query_one(OptionList)
        i = ol.highlighted
        if i is None or not self.marks:
            return
        seq, _ = self.marks.pop(i)
        if self.on_delete is not None:
            self.on_delete(seq)
        ol.clear_options()
        ol.add_options(self._options())
        if self.marks:
            ol.highlighted = min(i, len(self.marks) - 1)
