"""One trace on screen: title line, damage banner, status line, the event
list, the detail panes (state, call stack, findings) and the hazard timeline.

The app holds one ``TraceView`` per open trace; the side-by-side diff view
puts two of them next to each other and drives both cursors from
the alignment, which is why everything about one trace lives here and the
app only routes keys and messages.

Layout follows what fits: the list sits above one detail pane at a time
(2/3/4 pick it) until the terminal is wide enough for the list *and* a
detail column side by side with each readable -- the list with its full
function names and ``ARGS_MIN`` argument cells (LIST_MIN), the state pane
with a whole context-entry row (DETAILS_WIDTH) -- and only then is the list
on the left and all detail panes on the right (the ``-wide`` class, set on
resize; the rules are in app.tcss).  Side by side at 120 columns left the
list ~54 cells: 10 characters of arguments and cut function names.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Container, Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

from tracer import schema as S

from .event_list import EventList
from .findings_pane import FindingsPane
from .lines import OneLine, Part
from .model import TraceModel
from .stack_pane import StackPane
from .state_pane import StatePane
from .timeline import Timeline

DETAILS_WIDTH = 100      # app.tcss `TraceView.-wide #details`: a state-pane row and its border
LIST_MIN = 100           # seq, cpu, op, label, a ~24-cell function, kind and 40 cells of arguments
WIDE = DETAILS_WIDTH + LIST_MIN
DETAILS = ("state", "stack", "findings")


class TitleBar(OneLine):
    """Trace name, scenario, engine variant, integrity, position (one line,
    drawn as segments: it changes on every step)."""

    COMPONENT_CLASSES = {"title-bar--app", "title-bar--name", "title-bar--ok", "title-bar--bad",
                         "title-bar--dim", "title-bar--step"}

    def __init__(self, model: TraceModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model

    def parts(self, width: int) -> list[tuple[str, str | None]]:
        """The position (step, op, label) is never cut: what does not fit
        goes first -- the scenario, the kind, the event count, the
        integrity when complete -- and then the file name loses its middle."""
        m = self.model
        ev = m.event(m.cursor)
        step: list[Part] = [(" │ ", "title-bar--dim"), (f"step {m.cursor:,}", "title-bar--step")]
        if ev is not None:
            step.append((f" op {ev[S.I_OP]}" + (f" {ev[S.I_LABEL]}" if ev[S.I_LABEL] else ""), None))
            if m.cpus > 1:
                cpu = ev[S.I_CPU]
                step.append((" dev" if cpu == -1 else f" cpu {cpu}", None))
        if m.follow_cpu is not None:
            step.append((f" [CPU {m.follow_cpu} only]", "title-bar--step"))
        kind: list[Part] = [(f" {m.kind_name(ev)}", None)] if ev is not None else []
        integ = m.integrity()
        scen: list[Part] = [(f"· {m.scenario} ", None)] if m.scenario not in m.name else []
        count: list[Part] = [(f" · {m.count:,} ev", None)]
        integ_part: list[Part] = [("· ", None), (integ, "title-bar--bad" if integ == "damaged" else "title-bar--ok")]
        head: list[Part] = [(" vtdtrace ", "title-bar--app")]
        name = m.name
        eng: list[Part] = [(f"· {m.engine} ", None)]
        # drop in this order until it fits (a damaged trace keeps saying so)
        order = ("scen", "kind", "count", "integ", "eng")
        parts: dict[str, list[Part]] = {"scen": scen, "kind": kind, "count": count,
                 "integ": integ_part if integ != "damaged" else [], "eng": eng}
        damaged = integ_part if integ == "damaged" else []
        for n in range(len(order) + 1):
            dropped = order[:n]
            p = {k: ([] if k in dropped else v) for k, v in parts.items()}
            out = (head + [(f" {name} ", "title-bar--name")] + p["scen"] + p["eng"] + p["integ"] + damaged
                   + p["count"] + step + p["kind"])
            if sum(len(t) for t, _ in out) <= width:
                return out
        # still too long: the file name gives up its middle
        rest = sum(len(t) for t, _ in out) - len(name) - 2
        room = max(width - rest - 2, 5)
        if len(name) > room:
            half = (room - 1) // 2
            name = name[:half] + "…" + name[len(name) - (room - 1 - half):]
        out[1] = (f" {name} ", "title-bar--name")
        return out


class TraceView(Vertical):
    """Everything about one trace; ``refresh_step`` redraws after a move."""

    def __init__(self, model: TraceModel, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="trace-view")
        self.model = model
        self.active_detail = "state"
        self.status_text = ""
        self.search_status = ""
        self.load_phase = "opening"

    def compose(self) -> ComposeResult:
        m = self.model
        yield TitleBar(m, id="title")
        banner = Static(m.damage_text() or "", id="banner")
        banner.display = m.damage_text() is not None
        yield banner
        with Container(id="main"):
            events = EventList(m, id="events")
            events.border_title = "1 events"
            yield events
            with Vertical(id="details"):
                state = StatePane(id="state")
                state.border_title = "2 state"
                yield state
                with Horizontal(id="lower"):
                    stack = StackPane(id="stack")
                    stack.border_title = "3 stack"
                    yield stack
                    findings = FindingsPane(id="findings")
                    findings.border_title = "4 findings"
                    yield findings
        yield Timeline(m, id="timeline")

    def on_mount(self) -> None:
        self.events.reset()
        self.apply_layout(self.app.size.width)
        self.refresh_step(center=True)

    # --- children -----------------------------------------------------------------------------
    @property
    def events(self) -> EventList:
        return self.query_one("#events", EventList)

    @property
    def state_pane(self) -> StatePane:
        return self.query_one("#state", StatePane)

    @property
    def stack_pane(self) -> StackPane:
        return self.query_one("#stack", StackPane)

    @property
    def findings_pane(self) -> FindingsPane:
        return self.query_one("#findings", FindingsPane)

    @property
    def timeline(self) -> Timeline:
        return self.query_one("#timeline", Timeline)

    def pane(self, n: int) -> Widget:
        return (self.events, self.state_pane, self.stack_pane, self.findings_pane)[n - 1]

    # --- layout ---------------------------------------------------------------------------------
    def apply_layout(self, width: int) -> None:
        wide = width >= WIDE
        changed = wide != self.has_class("-wide")
        self.set_class(wide, "-wide")
        self._show_details(wide)
        if changed and self.is_mounted:
            self.refresh_details()

    def _show_details(self, wide: bool) -> None:
        for name in DETAILS:
            w = self.query_one(f"#{name}")
            w.display = wide or name == self.active_detail
        self.query_one("#lower").display = wide or self.active_detail in ("stack", "findings")

    def show_detail(self, name: str) -> None:
        self.active_detail = name
        self._show_details(self.has_class("-wide"))
        self.refresh_details()

    def _visible(self, name: str) -> bool:
        return self.has_class("-wide") or name == self.active_detail

    # --- redraws --------------------------------------------------------------------------------
    def refresh_step(self, center: bool = False) -> None:
        """The cursor moved: list cursor, panes, timeline marker, title."""
        self.events.show_cursor(center=center)
        self.query_one(TitleBar).refresh()
        self.timeline.cursor_moved()
        self.refresh_details()

    def refresh_details(self) -> None:
        """The detail panes for the cursor; hidden ones (one detail pane at a
        time below 120 columns) are skipped and drawn when shown."""
        m = self.model
        ev = m.event(m.cursor)
        label = ev[S.I_LABEL] if ev is not None else None
        event_text = (f"{ev[S.I_SEQ]} {m.kind_name(ev)} {m.presenter.text_args(ev)}" if ev is not None
                      else "0: the platform before any event")
        if m.session is None:
            wait = m.load_error or f"{self.load_phase}… the state appears when the index is built"
            self.state_pane.show_placeholder(wait)
            self.stack_pane.show_step(None, None, event_text, wait)
            self.findings_pane.show_step(None, m.cursor, wait)
            return
        if self._visible("state") or self._visible("stack"):
            view = m.step_view()
            assert view is not None, "step_view is None only before the session exists"
            if self._visible("state"):
                self.state_pane.show_step(view, m.selected)
            if self._visible("stack"):
                self.stack_pane.show_step(view, label, event_text)
        if self._visible("findings"):
            wait = m.load_error or f"{self.load_phase}… findings appear when the analysers finish"
            self.findings_pane.show_step(m.findings, m.cursor, wait)

    def set_status(self, text: str) -> None:
        self.status_text = text
        self._update_status()

    def set_search_status(self, text: str) -> None:
        self.search_status = text
        self._update_status()

    def _update_status(self) -> None:
        """Status goes to the app's command line (one fixed row)."""
        from .command_line import CommandLine
        parts = [p for p in (self.status_text, self.search_status) if p]
        for line in self.screen.query(CommandLine):
            line.set_status("   ".join(parts))

    def set_banner(self, text: str | None) -> None:
        banner = self.query_one("#banner", Static)
        banner.update(text or "")
        banner.display = bool(text)

    def rows_changed(self) -> None:
        self.events.reset()
        self.timeline.reset()
        self.refresh_step(center=True)
