"""``vtdtrace view``: the Textual app.

The app routes keys to the model (tui/model.py, pure) and redraws the trace
view (tui/trace_view.py); whole-trace work runs in thread workers that post
messages (tui/loader.py).  Startup order matters for the first frame: the
model opens the trace in O(1) (trailer + index), the screen is composed and
drawn, and only after that first refresh does the loader start.

Keys (help screen, footer and command palette list the same set):
n/p/↓/↑ step, o/u step over/out, ]/[ next/previous finding, g go to step,
w/W next/previous write of the selected context entry, / search (>/< repeat),
f filter (F clears), m/' bookmarks, 1-4 panes, ctrl+p palette, ? help, q quit.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Footer
from textual.worker import get_current_worker

from . import loader
from .commands import TraceCommands
from .event_list import EventList
from .key_routing import KeyRouting
from .model import Filter, TraceModel
from .command_line import CommandLine
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

    BINDINGS = [
        Binding("n", "step(1)", "next"),
        Binding("p", "step(-1)", "prev"),
        Binding("down", "step(1)", "next", show=False),
        Binding("up", "step(-1)", "prev", show=False),
        Binding("o", "step_over", "over"),
        Binding("u", "step_out", "out"),
        Binding("right_square_bracket", "next_finding", "hazard", key_display="]"),
        Binding("left_square_bracket", "prev_finding", "hazard", key_display="[", show=False),
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
        Binding("1", "pane(1)", "events", show=False),
        Binding("2", "pane(2)", "state", show=False),
        Binding("3", "pane(3)", "stack", show=False),
        Binding("4", "pane(4)", "findings", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, path, *, use_sidecar: bool = True, model: TraceModel | None = None) -> None:
        super().__init__()
        self.model = model if model is not None else TraceModel(path)
        self.use_sidecar = use_sidecar
        self._filter_generation = 0
        self._bookmarks_dirty = False
        self._transient_status = False
        self.loaded = False               # session and findings both in (or failed)
        self.settled = False              # ... and the post-load collection done

    # --- composition ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield TraceView(self.model, id="trace")
        yield CommandLine(id="command")
        yield Footer()

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
    def _moved(self, result, what: str = "", center: bool = False) -> None:
        if result is None:
            if what:
                self.view.set_search_status(what)
                self._transient_status = True
            self.bell()
            return
        if self._transient_status:               # "no later finding" is stale now
            self._transient_status = False
            self.view.set_search_status("")
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
        state lines, list rows), so the likely next jump draws from caches."""
        if time.monotonic() - self._last_key < self.PREFETCH_DELAY or not self._live():
            return
        m, view = self.model, self.view
        for seq in m.prefetch():
            view.events.prefetch_rows(seq)
            if view.state_pane.display:
                view.state_pane.prefetch(m.step_view(seq), m.selection_at(seq))

    def goto_seq(self, seq: int, center: bool = False) -> None:
        self._moved(self.model.move_to(seq), center=center)

    def action_step(self, delta: int) -> None:
        self._moved(self.model.step(delta))

    def action_step_over(self) -> None:
        self._moved(self.model.step_over())

    def action_step_out(self) -> None:
        self._moved(self.model.step_out())

    def action_next_finding(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.next_finding(), "no later finding", center=True)

    def action_prev_finding(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.prev_finding(), "no earlier finding", center=True)

    def action_next_finding_any(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.next_finding(benign=True), "no later finding", center=True)

    def action_prev_finding_any(self) -> None:
        if self.model.findings is None:
            return self._moved(None, "findings are still being computed")
        self._moved(self.model.prev_finding(benign=True), "no earlier finding", center=True)

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
                              check=self.model.parse_goto, done=done)

    # --- search ---------------------------------------------------------------------------------
    def action_search(self) -> None:
        def done(text):
            if text:
                self.model.search_text = text
                self._search(text, True)
        self.command_line.ask("search forward", self.model.search_text,
                              "enter: search   escape: cancel   > / <: next / previous match", done=done)

    def action_search_next(self) -> None:
        if self.model.search_text:
            self._search(self.model.search_text, True)

    def action_search_prev(self) -> None:
        if self.model.search_text:
            self._search(self.model.search_text, False)

    def _search(self, text: str, forward: bool) -> None:
        self.view.set_search_status(f'searching "{text}"…')
        self._search_worker(text, forward, self.model.cursor)

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
        self.view.set_search_status(f'searching "{self.model.search_text}"… {message.fraction * 100:.0f}%')

    def on_search_done(self, message: SearchDone) -> None:
        if message.seq is None:
            self.view.set_search_status(f'"{message.text}": no {"later" if message.forward else "earlier"} match')
            self.bell()
            return
        self.view.set_search_status(f'"{message.text}" at step {message.seq}')
        self.goto_seq(message.seq, center=True)

    # --- filter ---------------------------------------------------------------------------------
    def action_filter(self) -> None:
        def done(flt):
            if flt is not None:
                self.apply_filter(flt)
        self.push_screen(FilterScreen(self.model.filter), done)

    def action_clear_filter(self) -> None:
        self.apply_filter(Filter())

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
        m.filter_done = message.done
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
        self.view.set_search_status(f"bookmark {'set' if added else 'removed'} at step {m.cursor}")
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
        except Exception as exc:
            self.view.set_search_status(f"cannot save bookmarks: {exc}")
        finally:
            loader.SIDECAR_LOCK.release()

    def action_bookmarks(self) -> None:
        m = self.model

        def delete(seq):
            m.bookmarks.pop(seq, None)
            self.view.events.invalidate_seq(seq)
            self.view.timeline.cursor_moved()
            self._save_bookmarks()

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

