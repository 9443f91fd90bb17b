"""``vtdtrace view``: the Textual app.

The app routes keys to the model (tui/model.py, pure) and redraws the trace
view (tui/trace_view.py); whole-trace work runs in thread workers that post
messages (tui/loader.py).  Startup order matters for the first frame: the
model opens the trace in O(1) (trailer + index), the screen is composed and
drawn, and only after that first refresh does the loader start.

Keys (help screen, footer and command palette list the same set):
n/p/↓/↑ step, o/u step over/out (within the current event's CPU), c follow
one CPU (n/p/o/u stay on its events; again: stop), ]/[ next/previous finding (s: the lowest
severity they stop at), g go to step, w/W next/previous write of the
selected context entry, / search (>/< repeat, escape cancels a running one),
f filter (F clears), m/' bookmarks, z/Z timeline zoom to the operation /
whole trace, 1-4 panes, ctrl+p palette, ? help, q or ctrl+c quit.

The command line under the panes carries two things: the filter (a state,
shown while it is on) and a *message* (a search result, why a key did
nothing, a bookmark set).  A message lasts until the next key: every key
clears it first, and the action then says what it did or why it did
nothing.  The command line and the footer stay on screen while a pane is
maximised (``ALLOW_IN_MAXIMIZED_VIEW``).
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.worker import get_current_worker

from replay.sidecar import SidecarError
from tracer import schema as S

from . import loader
from .command_line import CommandLine
from .commands import TraceCommands
from .event_list import EventList
from .key_footer import KeyFooter
from .key_routing import KeyRouting
from .model import Filter, TraceModel
from .progress import Progress
from .screens import BookmarksScreen, FilterScreen, HelpScreen
from .state_pane import StatePane
from .timeline import Timeline
from .trace_view import TraceView


class SearchProgress(Progress):
    pass


class SearchDone(Message):
    def __init__(self, text: str, seq: int | None, forward: bool) -> None:
        super().__init__()
        self.text, self.seq, self.forward = text, seq, forward


class FilterBatch(Message):
    def __init__(self, generation: int, scanned: int, seqs: list, done: bool) -> None:
        super().__init__()
        self.generation, self.scanned, self.seqs, self.done = generation, scanned, seqs, done


class VtdtraceApp(KeyRouting, App):
    """One trace; ``use_sidecar=False`` keeps derived data in a temporary
    store (tests that must not write beside a shipped trace)."""

    # absolute: Textual resolves relative paths against a subclass's module
    CSS_PATH = [Path(__file__).parent / "app.tcss", Path(__file__).parent / "screens.tcss"]
    TITLE = "vtdtrace"
    COMMANDS = App.COMMANDS | {TraceCommands}
    ENABLE_COMMAND_PALETTE = True
    # the status / prompt line and the keys stay visible over a maximised pane
    ALLOW_IN_MAXIMIZED_VIEW = "KeyFooter, CommandLine"

    BINDINGS = [
        Binding("n", "step(1)", "next"),
        Binding("p", "step(-1)", "prev"),
        Binding("down", "step(1)", "next", show=False),
        Binding("up", "step(-1)", "prev", show=False),
        Binding("o", "step_over", "over"),
        Binding("u", "step_out", "out"),
        Binding("c", "follow_cpu", "follow cpu"),
        Binding("right_square_bracket", "next_finding", "next finding", key_display="]"),
        Binding("left_square_bracket", "prev_finding", "previous finding", key_display="[", show=False),
        Binding("s", "cycle_severity", "stop at", show=False),
        Binding("g", "goto", "go to"),
        Binding("w", "next_write", "write"),
        Binding("W", "prev_write", "prev write", show=False),
        Binding("slash", "search", "search", key_display="/"),
        Binding("greater_than_sign", "search_next", "next match", show=False, key_display=">"),
        Binding("less_than_sign", "search_prev", "prev match", show=False, key_display="<"),
        Binding("f", "filter", "filter"),
        Binding("F", "clear_filter", "clear filter", show=False),
        Binding("m", "bookmark", "mark"),
        Binding("apostrophe", "bookmarks", "marks", key_display="'"),
        Binding("z", "zoom", "zoom op", show=False),
        Binding("Z", "unzoom", "whole trace", show=False),
        Binding("1", "pane(1)", "events", show=False),
        Binding("2", "pane(2)", "state", show=False),
        Binding("3", "pane(3)", "stack", show=False),
        Binding("4", "pane(4)", "findings", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
        # as in every terminal program (Textual's own ctrl+c copies text)
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
    ]

    SEVERITY_NAMES = {3: "hazard", 2: "warning", 1: "benign"}

    def footer_entries(self):
        """The footer's keys, most important first; help and quit last
        (pinned).  ``]`` names the lowest severity it stops at."""
        m = self.model
        floor = m.min_rank
        stop = {3: "next hazard", 2: "next warn/hazard", 1: "next finding"}[floor]
        # Several CPUs: c, labelled with the CPU followed (the footer is the status)
        follow = [("c", "follow cpu" if m.follow_cpu is None else f"CPU {m.follow_cpu} only", "follow_cpu")] \
            if m.cpus > 1 or m.follow_cpu is not None else []
        return [("n", "next", "step(1)"), ("p", "prev", "step(-1)"), ("]", stop, "next_finding"),
                *follow, ("g", "go to", "goto"), ("/", "search", "search"), ("o", "over", "step_over"),
                ("u", "out", "step_out"), ("s", f"stop≥{self.SEVERITY_NAMES[floor]}", "cycle_severity"),
                ("w", "write", "next_write"), ("f", "filter", "filter"), ("m", "mark", "bookmark"),
                ("z", "zoom op", "zoom"), ("1-4", "panes", "pane(1)"), ("^p", "palette", "command_palette"),
                ("?", "help", "help"), ("q", "quit", "quit")]

    def __init__(self, path, *, use_sidecar: bool = True, model: TraceModel | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else TraceModel(path)
        self.use_sidecar = use_sidecar
        self._filter_generation = 0
        self._bookmarks_dirty = False
        self._said = False                # a message is on the command line (the next key clears it)
        self.loaded = False               # session and findings both in (or failed)
        self.settled = False              # ... and the post-load collection done

    # --- composition ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield TraceView(self.model, id="trace")
        yield CommandLine(id="command")
        yield KeyFooter(self.footer_entries, id="footer")

    @property
    def view(self) -> TraceView:
        # the main screen's, also while a modal screen (help, palette) is on top
        return self.screen_stack[0].query_one("#trace", TraceView)

    def on_mount(self) -> None:
        self.title = f"vtdtrace {Path(self.model.path).name}"
        self.query_one("#events", EventList).focus()
        # The loader starts after the first frame has been written.
        self.call_after_refresh(self._start_loader)
        self.gc_start()
        self.watch(self.screen, "maximized", self._maximized_changed, init=False)

    def _maximized_changed(self, widget) -> None:
        """The findings pane is the list of every finding while maximised
        (whichever key maximised or restored it: 4, Escape)."""
        view = self.view
        view.events.maximized_changed()
        pane = view.findings_pane
        listing = widget is pane
        if listing != pane.listing:
            pane.set_listing(listing, self.model.findings, self.model.cursor)

    def on_resize(self, event) -> None:
        self.view.apply_layout(event.size.width)

    def _start_loader(self) -> None:
        self._load()

    @work(thread=True, group="load", exclusive=True, exit_on_error=False)
    def _load(self) -> None:
        worker = get_current_worker()
        loader.load(self.model, self.post_message, lambda: worker.is_cancelled,
                    use_sidecar=self.use_sidecar)

    # --- loader messages ------------------------------------------------------------------------
    def view_of(self, model) -> TraceView:
        """The TraceView showing ``model`` (a message names its trace; the
        diff view has two)."""
        for view in self.screen_stack[0].query(TraceView):
            if model is None or view.model is model:
                return view
        return self.view

    def on_load_progress(self, message: loader.LoadProgress) -> None:
        view = self.view_of(message.model)
        view.load_phase = message.phase
        view.timeline.set_progress(message.phase, message.fraction)

    def on_session_loaded(self, message: loader.SessionLoaded) -> None:
        view = self.view_of(message.model)
        m = view.model
        before = m.count
        m.attach_session(message.session)
        m.load_bookmarks(message.bookmarks)
        if m.bookmarks and self._bookmarks_dirty:
            self._save_bookmarks()
        view.load_phase = "analysing"
        # the analysers report no progress: an indeterminate bar
        view.timeline.set_progress("analysing hazards", None, busy=True)
        view.set_banner(m.damage_text())
        if m.count != before:
            view.rows_changed()
        else:
            view.events.reset()
            view.refresh_step()

    def on_findings_loaded(self, message: loader.FindingsLoaded) -> None:
        view = self.view_of(message.model)
        view.model.attach_findings(message.findings)
        self.loaded = True
        self.call_after_refresh(self.gc_settle)
        view.timeline.set_progress("", None)
        view.events.reset()
        view.timeline.reset()
        view.refresh_step()

    def on_load_failed(self, message: loader.LoadFailed) -> None:
        view = self.view_of(message.model)
        view.model.load_error = message.text
        self.loaded = True
        self.settled = True
        view.timeline.set_progress("", None)
        view.set_banner("  ".join(t for t in (view.model.damage_text(), message.text) if t))
        view.refresh_step()

    # --- moving ---------------------------------------------------------------------------------
    def say(self, text: str) -> None:
        """A message on the command line, until the next key."""
        self.view.set_search_status(text)
        self._said = bool(text)

    def key_pressed(self, event) -> None:
        """Every key (KeyRouting): a message from the last action goes."""
        if self._said:
            self._said = False
            self.view.set_search_status("")

    def _moved(self, result, what: str = "", center: bool = False) -> None:
        if result is None:
            if what:
                self.say(what)
            self.bell()
            return
        self.view.refresh_step(center=center)
        self._schedule_prefetch()

    # --- idle prefetch ------------------------------------------------------------------------
    PREFETCH_DELAY = 0.05

    def _live(self) -> bool:
        """Not shutting down (timers may still fire while screens go)."""
        return bool(self.screen_stack) and self.is_running and not getattr(self, "_closing", False)

    def _schedule_prefetch(self) -> None:
        timer = getattr(self, "_prefetch_timer", None)
        if timer is not None:
            timer.stop()
        self._prefetch_timer = self.set_timer(self.PREFETCH_DELAY, self._prefetch, name="prefetch")

    def _prefetch(self) -> None:
        """No key for a moment: prepare where ]/[ go next (their step views,
        state lines, list rows), and the step a go-to prompt names so far,
        so the likely next jump draws from caches."""
        if time.monotonic() - self._last_key < self.PREFETCH_DELAY or not self._live():
            return
        m = self.model
        target, self._goto_target = self._goto_target, None
        if target is not None and self.command_line.asking and m.prefetch_step(target):
            self._prefetch_seq(target)
        for seq in m.prefetch():
            self._prefetch_seq(seq)

    def _prefetch_seq(self, seq: int) -> None:
        """The list rows and state lines a centred jump to seq draws (its step
        view already prepared)."""
        m, view = self.model, self.view
        view.events.prefetch_rows(seq)
        sv = m.step_view(seq)
        if view.state_pane.display and sv is not None:
            view.state_pane.prefetch(sv, m.selection_at(seq))

    # The step the go-to prompt's text names, prepared at the next idle
    # prefetch: unlike ]/[, its destination is known only while it is typed.
    _goto_target: int | None = None

    def _goto_typed(self, text: str) -> None:
        if text.strip().lower().startswith("op"):
            return          # may have to search the trace for the op: not idle work
        try:
            seq = self.model.parse_goto(text)
        except ValueError:
            return
        self._goto_target = seq
        self._schedule_prefetch()

    def goto_seq(self, seq: int, center: bool = False) -> None:
        if seq == self.model.cursor:
            self.say(f"already at step {seq:,}")
            self.view.refresh_step(center=center)
            return
        self._moved(self.model.move_to(seq), center=center)

    def _edge(self, forward: bool) -> str:
        """Why a step in that direction goes nowhere."""
        m = self.model
        if m.follow_cpu is not None:
            return f"no {'later' if forward else 'earlier'} event of CPU {m.follow_cpu} (c: every CPU)"
        if m.filter_seqs is not None:
            return f"no {'later' if forward else 'earlier'} event matches the filter ({m.filter.describe()})"
        if forward:
            return f"at the last step ({m.count:,}): nothing after it"
        return "at step 0, the platform before any event: nothing before it"

    def action_step(self, delta: int) -> None:
        self._moved(self.model.step(delta), self._edge(delta > 0))

    def action_step_over(self) -> None:
        self._moved(self.model.step_over(), self._edge(True))

    def action_step_out(self) -> None:
        m = self.model
        why = (self._edge(True) if m.cursor >= m.count
               else "nothing to step out to: the readable trace ends inside this function")
        self._moved(m.step_out(), why)

    def _finding_miss(self, which: str) -> str:
        floor = self.SEVERITY_NAMES[self.model.min_rank]
        sev = "finding" if floor == "benign" else f"finding of severity {floor} or worse"
        return f"no {which} {sev}  (s: the lowest severity ] and [ stop at)"

    def action_follow_cpu(self) -> None:
        """c: n/p/o/u stay on the events of the cursor event's CPU; again: all CPUs."""
        m = self.model
        if m.follow_cpu is None and m.cpus < 2:
            return self._moved(None, "this trace ran on one CPU: nothing else to leave out")
        cpu = m.toggle_follow()
        self.query_one(KeyFooter).refresh_labels()
        self.view.refresh_step()
        self.say(f"following CPU {cpu}: n/p/o/u step through its events only (c: every CPU)"
                 if cpu is not None else "every CPU's events again")

    def action_next_finding(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.next_finding(), self._finding_miss("later"), center=True)

    def action_prev_finding(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.prev_finding(), self._finding_miss("earlier"), center=True)

    def action_next_finding_any(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.next_finding(benign=True), "no later finding", center=True)

    def action_prev_finding_any(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.prev_finding(benign=True), "no earlier finding", center=True)

    def action_cycle_severity(self) -> None:
        """s: the lowest severity ]/[ stop at: warning -> hazard -> benign -> warning."""
        m = self.model
        m.min_rank = {2: 3, 3: 1, 1: 2}[m.min_rank]
        self.query_one(KeyFooter).refresh_labels()
        what = {3: "hazards only", 2: "warnings and hazards", 1: "every finding, benign windows included"}
        self.say(f"] and [ stop at {what[m.min_rank]}")
        self._schedule_prefetch()

    # --- the timeline's zoom ------------------------------------------------------------------
    def action_zoom(self) -> None:
        m = self.model
        if m.session is None:
            return self._moved(None, "the index is still being built")
        span = m.op_span()
        if span is None:
            return self._moved(None, f"step {m.cursor:,} is not inside an operation: nothing to zoom to")
        m.zoom = span
        self.view.timeline.reset()
        ev = m.event(span[0])
        self.say(f"timeline: op {ev[S.I_OP] if ev else '?'}, steps {span[0]:,}–{span[1] - 1:,}   Z: whole trace")

    def action_unzoom(self) -> None:
        m = self.model
        if m.zoom is None:
            return self._moved(None, "the timeline already shows the whole trace")
        m.zoom = None
        self.view.timeline.reset()
        self.say("timeline: the whole trace")

    def action_next_write(self) -> None:
        self._moved(self.model.next_write(), self._write_miss("later"), center=True)

    def action_prev_write(self) -> None:
        self._moved(self.model.prev_write(), self._write_miss("earlier"), center=True)

    def _write_miss(self, which: str) -> str:
        m = self.model
        if m.session is None:
            return "the index is still being built"
        if m.selected is None:
            return "select a context entry in the state pane first (2, then ↑/↓)"
        return f"no {which} write of that context entry"

    def action_goto_step(self, seq: int) -> None:
        self.goto_seq(self.model.count if seq < 0 else seq, center=True)

    def action_goto(self) -> None:
        def done(seq):
            if seq is not None:
                self.goto_seq(seq, center=True)
        self.command_line.ask(f"go to step (0..{self.model.count:,})", "",
                              "200, +10, -5, op 2, end   enter: go   escape: cancel",
                              check=self.model.parse_goto, done=done, typed=self._goto_typed)

    # --- search ---------------------------------------------------------------------------------
    def action_search(self) -> None:
        def done(text):
            if text:
                self.model.search_text = text
                self._search(text, True)
        # opens with the last search selected: Enter repeats it, typing replaces it
        self.command_line.ask("search forward", self.model.search_text,
                              "enter: search   escape: cancel   > / <: next / previous match", done=done,
                              select=True)

    def action_search_next(self) -> None:
        if self.model.search_text:
            self._search(self.model.search_text, True)
        else:
            self._moved(None, "nothing searched yet: / to search")

    def action_search_prev(self) -> None:
        if self.model.search_text:
            self._search(self.model.search_text, False)
        else:
            self._moved(None, "nothing searched yet: / to search")

    def _search(self, text: str, forward: bool) -> None:
        self._searching = True
        self.view.set_search_status(f'searching "{text}"…   escape: cancel')
        self._search_worker(text, forward, self.model.cursor)

    def cancel_search(self) -> bool:
        """Escape while a search runs: stop it (True when one ran)."""
        if not getattr(self, "_searching", False):
            return False
        self._searching = False
        self.workers.cancel_group(self, "search")
        self.say(f'search for "{self.model.search_text}" cancelled; the cursor stays at step {self.model.cursor:,}')
        return True

    @work(thread=True, group="search", exclusive=True, exit_on_error=False)
    def _search_worker(self, text: str, forward: bool, start: int) -> None:
        worker = get_current_worker()
        m = self.model
        span = (m.count - start) if forward else start
        reader = m.reader()
        try:
            for what, value in m.search_iter(text, start, forward, trace=reader):
                if worker.is_cancelled:
                    return
                if what == "progress":
                    self.post_message(SearchProgress(value / span if span else 1.0))
                else:
                    self.post_message(SearchDone(text, value, forward))
                    return
        finally:
            reader.close()

    def on_search_progress(self, message: SearchProgress) -> None:
        if getattr(self, "_searching", False):
            self.view.set_search_status(f'searching "{self.model.search_text}"… '
                                        f'{message.fraction * 100:.0f}%   escape: cancel')

    def on_search_done(self, message: SearchDone) -> None:
        if not getattr(self, "_searching", False):
            return                                   # cancelled meanwhile
        self._searching = False
        if message.seq is None:
            self.say(f'"{message.text}": no {"later" if message.forward else "earlier"} match')
            self.bell()
            return
        self._moved(self.model.move_to(message.seq), center=True)
        self.say(f'"{message.text}" at step {message.seq}')

    # --- filter ---------------------------------------------------------------------------------
    def action_filter(self) -> None:
        def done(flt):
            if flt is not None:
                self.apply_filter(flt)
        self.push_screen(FilterScreen(self.model.filter), done)

    def action_clear_filter(self) -> None:
        if self.model.filter.empty:
            return self._moved(None, "no filter to clear")
        self.apply_filter(Filter())
        self.say("filter cleared: every event is shown")

    def apply_filter(self, flt: Filter) -> None:
        m = self.model
        self._filter_generation += 1
        self.workers.cancel_group(self, "filter")
        m.begin_filter(flt)
        view = self.view
        if flt.empty:
            view.set_status("")
        else:
            view.set_status(f"filter {flt.describe()}: scanning…")
            self._filter_worker(flt, self._filter_generation)
        view.rows_changed()

    @work(thread=True, group="filter", exclusive=True, exit_on_error=False)
    def _filter_worker(self, flt: Filter, generation: int) -> None:
        worker = get_current_worker()
        m = self.model
        reader = m.reader()
        pending: list = []
        last = time.monotonic()
        try:
            scanned = 0
            for scanned, seqs in m.filter_iter(flt, trace=reader):
                if worker.is_cancelled:
                    return
                pending.extend(seqs)
                now = time.monotonic()
                if now - last >= 0.1:
                    self.post_message(FilterBatch(generation, scanned, pending, False))
                    pending, last = [], now
            self.post_message(FilterBatch(generation, scanned, pending, True))
        finally:
            reader.close()

    def on_filter_batch(self, message: FilterBatch) -> None:
        m = self.model
        if message.generation != self._filter_generation or m.filter_seqs is None:
            return
        first = len(m.filter_seqs) == 0
        m.add_filter_matches(message.seqs)
        n = len(m.filter_seqs)
        scanned = f"{message.scanned * 100 // max(m.count, 1)}%" if not message.done else "all"
        self.view.set_status(f"filter {m.filter.describe()}: {n:,} of {m.count:,} events"
                             + ("" if message.done else f" (scanned {scanned})") + "   F: clear")
        if first and n:
            # land on the first match at or after the cursor
            row = m.row_of_seq(m.cursor)
            m.move_to(m.seq_at_row(row))
            self.view.events.grow()
            self.view.refresh_step(center=True)
        else:
            self.view.events.grow()
            self.view.events.show_cursor()

    # --- bookmarks ------------------------------------------------------------------------------
    def action_bookmark(self) -> None:
        m = self.model
        added = m.toggle_bookmark()
        self.view.events.invalidate_seq(m.cursor)
        self.view.timeline.cursor_moved()
        self.say(f"bookmark {'set' if added else 'removed'} at step {m.cursor}")
        self._save_bookmarks()

    def _save_bookmarks(self) -> None:
        """Into the sidecar now when no worker holds it, else after loading."""
        m = self.model
        if m.session is None or not loader.SIDECAR_LOCK.acquire(blocking=False):
            self._bookmarks_dirty = True
            return
        try:
            m.session.sidecar.put(loader.BOOKMARKS_KEY, m.bookmarks_payload())
            m.session.sidecar.commit()
            self._bookmarks_dirty = False
        except SidecarError as exc:         # a read-only folder, a full disk
            self.say(f"cannot save bookmarks: {exc}")
        finally:
            loader.SIDECAR_LOCK.release()

    def action_bookmarks(self) -> None:
        m = self.model

        def delete(seq):
            m.bookmarks.pop(seq, None)
            self.view.events.invalidate_seq(seq)
            self.view.timeline.cursor_moved()
            self._save_bookmarks()
            self.say(f"bookmark at step {seq} deleted")

        def done(seq):
            if seq is not None:
                self.goto_seq(seq, center=True)
        self.push_screen(BookmarksScreen(m.bookmarks_sorted(), delete), done)

    # --- panes, help ----------------------------------------------------------------------------
    def action_pane(self, n: int) -> None:
        view = self.view
        widget = view.pane(n)
        if n > 1:
            view.show_detail(("state", "stack", "findings")[n - 2])
        if widget.has_focus:
            if self.screen.maximized is widget:
                self.screen.minimize()
            else:
                self.screen.maximize(widget)
        else:
            if self.screen.maximized is not None:
                self.screen.minimize()
            widget.focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # --- messages from the widgets ------------------------------------------------------------
    def on_event_list_row_clicked(self, message: EventList.RowClicked) -> None:
        self.goto_seq(message.seq)

    def on_findings_pane_go(self, message) -> None:
        self.goto_seq(message.seq, center=True)
        f = self.model.findings
        if f is not None and self.view.findings_pane.selected is not None:
            it = f.items[self.view.findings_pane.selected]
            kind = it.get("kind") if isinstance(it, dict) else it.kind
            self.say(f"{kind} opens at step {message.seq:,}   4: back to the panes")

    def on_timeline_jump(self, message: Timeline.Jump) -> None:
        self.goto_seq(message.seq, center=True)

    def on_state_pane_entry_selected(self, message: StatePane.EntrySelected) -> None:
        self.model.selected = message.key
        self.view.refresh_step()

    async def action_quit(self) -> None:
        if self._bookmarks_dirty:
            self._save_bookmarks()
        self.exit()

    def on_unmount(self) -> None:
        self._closing = True
        timer = getattr(self, "_prefetch_timer", None)
        if timer is not None:
            timer.stop()
        self.workers.cancel_all()
        self.gc_stop()

