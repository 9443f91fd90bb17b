"""``vtdtrace view A B``: two traces side by side, cursors synchronised by
the diff alignment.

The screen is drawn at once (each list shows its trace's first events,
dimmed, until the rows are aligned); a worker thread computes the diff
(``replay.diff.diff_files``: findings from the sidecars when cached, else
the analysers run inside the diff's pass) and posts progress and then the
report.  From then on every key is a move of the
``DiffModel`` (tui/diff_model.py, pure) followed by a redraw: both lists
show the same rows of the alignment, so they scroll together by
construction.

Keys: n/p the active side's next/previous event, ↓/↑ next/previous aligned
row (gaps included), }/{ next/previous difference region, ]/[ next/previous
finding only one trace has, e to the end of its window, tab switch the
active side, g go to a step of the active side, J/K scroll the lower pane,
PgUp/PgDn/Home/End, ? help, q quit.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual.worker import get_current_worker

from .command_line import CommandLine
from .diff_bars import DiffBar, DiffMap, SideTitle
from .diff_detail import DiffDetail
from .diff_list import DiffList
from .diff_model import SIDES, DiffModel
from .key_routing import KeyRouting
from .model import TraceModel
from .progress import Progress
from .screens import HelpScreen

PROGRESS_INTERVAL = 0.1

DIFF_HELP_TEXT = """\
[b]vtdtrace view A B[/b] — two traces side by side, aligned by operation

Rows are the diff's alignment: row by row, A's event on the left and B's on
the right.  A gap [b]╌[/b] is a row where only the other trace has an event; that
side's step stays at its last event before the gap.

[b]Moving[/b]
  [b]n[/b] / [b]p[/b]     the active side's next / previous event (the other side follows)
  [b]↓[/b] / [b]↑[/b]     next / previous aligned row, gap rows included
  [b]}[/b] / [b]{[/b]     next / previous difference region
  [b]][/b] / [b]\\[[/b]     next / previous finding that only one trace has (its side becomes active)
  [b]e[/b]         to the end of the window of that finding (the step that closes it)
  [b]tab[/b] / [b]shift+tab[/b]  switch the active side (A / B)
  [b]g[/b]         go to a step of the active side: 200, +10, -5, end
  (no search here: open one trace alone, [b]vtdtrace view A[/b], for / and the filter)
  [b]PgUp PgDn Home End[/b]  page through the rows
  [b]J[/b] / [b]K[/b]     scroll the lower pane (also shift+↓ / shift+↑)

[b]Reading the screen[/b]
  [b]~[/b] the same event with other values (the differing fields are highlighted)
  [b]-[/b] an event only A has      [b]+[/b] an event only B has
  [b]![/b] a finding only this trace has starts at this event, [b]▌[/b] the event is inside its window
  The lower pane explains the row: both events, each differing field with A's and
  B's value, the state at the cursor (how the state after A's step differs from the
  state after B's step), the findings only one trace has, the state difference after
  the operation, and the headers that differ.
  The bottom strip is the whole alignment: █ difference regions, ▲ findings of one
  trace only, ▼ you.  Click it (or a row) to jump.

  [b]?[/b] this help     [b]q[/b] quit     The full report: [b]vtdtrace diff A B[/b] (--json)
"""


class DiffProgress(Progress):
    pass


class DiffReady(Message):
    def __init__(self, report) -> None:
        super().__init__()
        self.report = report


class DiffFailed(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class SessionProgress(Message):
    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, SessionProgress)


class SessionsReady(Message):
    def __init__(self, sessions: dict) -> None:
        super().__init__()
        self.sessions = sessions


class _Cancelled(Exception):
    pass


def compute_diff(path_a, path_b, *, use_sidecar: bool, progress=None):
    """The worker body: the report of ``vtdtrace diff``, every event compared
    (the lists show each trace's own events by step; real code against a
    model is compared on projections by the command alone, and the banner
    says so).  Without the sidecar nothing is read from or written beside
    the traces (findings are then computed in the diff's pass)."""
    from replay.diff import diff_files, diff_traces
    from replay.reader import open_trace

    if use_sidecar:
        return diff_files(path_a, path_b, progress=progress, projection=False)
    with open_trace(path_a) as ta, open_trace(path_b) as tb:
        return diff_traces(ta, tb, names=(str(path_a), str(path_b)), progress=progress, projection=False)


class DiffScreen(Screen):
    """The main screen: tab switches the side (a Screen binds it to focus
    cycling, and nothing here takes the focus).  Modal screens keep theirs."""

    BINDINGS = [
        Binding("tab", "app.switch_side", "switch side"),
        Binding("shift+tab", "app.switch_side", "switch side", show=False),
        Binding("ctrl+c,super+c", "screen.copy_text", "Copy selected text", show=False),
    ]


class DiffApp(KeyRouting, App):
    CSS_PATH = [Path(__file__).parent / "diff.tcss", Path(__file__).parent / "screens.tcss"]
    TITLE = "vtdtrace diff"

    BINDINGS = [
        Binding("n", "step(1)", "next"),
        Binding("p", "step(-1)", "prev"),
        Binding("down", "row(1)", "row", show=False),
        Binding("up", "row(-1)", "row", show=False),
        Binding("right_curly_bracket", "next_region", "difference", key_display="}"),
        Binding("left_curly_bracket", "prev_region", "prev difference", key_display="{", show=False),
        Binding("right_square_bracket", "next_hazard", "hazard delta", key_display="]"),
        Binding("left_square_bracket", "prev_hazard", "prev hazard delta", key_display="[", show=False),
        Binding("e", "window_end", "window end", show=False),
        Binding("J,shift+down", "scroll_detail(1)", "scroll the lower pane", show=False),
        Binding("K,shift+up", "scroll_detail(-1)", "scroll the lower pane back", show=False),
        Binding("g", "goto", "go to"),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("home", "first", "first", show=False),
        Binding("end", "last", "last", show=False),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("q", "quit", "quit"),
    ]

    def __init__(self, path_a, path_b, *, model_a: TraceModel | None = None, model_b: TraceModel | None = None,
                 use_sidecar: bool = True) -> None:
        super().__init__()
        self.paths = (path_a, path_b)
        self.dm = DiffModel(model_a if model_a is not None else TraceModel(path_a),
                            model_b if model_b is not None else TraceModel(path_b))
        self.use_sidecar = use_sidecar
        self.loaded = False               # the diff is in (or failed)
        self.sessions_loaded = False      # ... and both replay indexes
        self._top = 0

    # --- composition ------------------------------------------------------------------------
    def get_default_screen(self) -> Screen:
        return DiffScreen(id="_default")

    def compose(self) -> ComposeResult:
        dm = self.dm
        yield DiffBar(dm, id="diff-bar")
        banner = Static(self._damage_text() or "", id="banner")
        banner.display = bool(self._damage_text())
        yield banner
        with Horizontal(id="sides"):
            for side in SIDES:
                with Vertical(id=f"side-{side}", classes="side"):
                    yield SideTitle(dm, side, id=f"title-{side}")
                    yield DiffList(dm, side, id=f"list-{side}")
        detail = DiffDetail(id="detail")
        detail.border_title = "difference at the cursor"
        yield detail
        yield DiffMap(dm, id="diff-map")
        yield CommandLine(id="command")
        yield Footer()

    def _damage_text(self) -> str | None:
        texts = [f"{side.upper()}: {self.dm.models[side].damage_text()}" for side in SIDES
                 if self.dm.models[side].damage_text()]
        if self.dm.implementations_differ:
            texts.append("real code against a model: this view compares every event; `vtdtrace diff` compares "
                         "what the IOMMU sees (docs/REALCODE.md#normalisation)")
        return "  ".join(texts) or None

    def lists(self) -> list[DiffList]:
        return [self.screen_stack[0].query_one(f"#list-{s}", DiffList) for s in SIDES]

    @property
    def detail(self) -> DiffDetail:
        return self.screen_stack[0].query_one("#detail", DiffDetail)

    def on_mount(self) -> None:
        a, b = (self.dm.models[s].name for s in SIDES)
        self.title = f"vtdtrace diff {a} {b}"
        self.detail.show(self.dm)
        self.call_after_refresh(self._diff_worker)
        self.gc_start()

    # --- the diff in a worker -------------------------------------------------------------------
    @work(thread=True, group="diff", exclusive=True, exit_on_error=False)
    def _diff_worker(self) -> None:
        from replay.diff import DiffInputError
        from replay.reader import NotATrace

        worker = get_current_worker()

        def throttled(post):
            last = [0.0]

            def progress(done: int, total: int) -> None:
                if worker.is_cancelled:
                    raise _Cancelled()
                now = time.monotonic()
                if now - last[0] >= PROGRESS_INTERVAL:
                    last[0] = now
                    post(done / total if total else 1.0)
            return progress

        try:
            report = compute_diff(*self.paths, use_sidecar=self.use_sidecar,
                                  progress=throttled(lambda f: self.post_message(DiffProgress(f))))
        except _Cancelled:
            return
        except (DiffInputError, NotATrace, OSError) as exc:     # a path that holds no (readable) trace
            self.post_message(DiffFailed(f"cannot diff: {getattr(exc, 'message', None) or exc}"))
            return
        except Exception as exc:       # the worker's boundary: a bug, still one line on screen, never a traceback
            self.post_message(DiffFailed(f"cannot diff: internal error: {type(exc).__name__}: {exc}"))
            return
        if worker.is_cancelled:
            return
        self.post_message(DiffReady(report))
        # then each side's replay index (from its sidecar when cached there),
        # for the state at the cursor; the keys already work meanwhile
        from replay.session import ReplaySession

        sessions: dict = {}
        try:
            for side, path in zip(SIDES, self.paths):
                name = side.upper()
                sessions[side] = ReplaySession(path, sidecar=self.use_sidecar, progress=throttled(
                    lambda f, n=name: self.post_message(SessionProgress(f"indexing {n}… {f * 100:.0f}%"))))
        except Exception as exc:
            for v in sessions.values():
                v.close()
            if not isinstance(exc, _Cancelled):
                self.post_message(SessionProgress(f"not available: {exc}"))
            return
        if worker.is_cancelled:
            for v in sessions.values():
                v.close()
            return
        self.post_message(SessionsReady(sessions))

    def on_diff_progress(self, message: DiffProgress) -> None:
        self.dm.fraction = message.fraction
        self._redraw_all()

    def on_diff_ready(self, message: DiffReady) -> None:
        self.dm.attach(message.report)
        self.loaded = True
        for lst in self.lists():
            lst.reset()
        self.query_one(DiffMap).reset()
        self._top = -1
        self._moved(self.dm.row, center=True)

    def on_session_progress(self, message: SessionProgress) -> None:
        self.dm.session_note = message.text
        self.detail.show(self.dm)

    def on_sessions_ready(self, message: SessionsReady) -> None:
        if getattr(self, "_closing", False):
            for v in message.sessions.values():
                v.close()
            return
        self.dm.attach_sessions(message.sessions)
        self.sessions_loaded = True
        self.detail.show(self.dm)
        self.call_after_refresh(self.gc_settle)

    def on_diff_failed(self, message: DiffFailed) -> None:
        self.dm.error = message.text
        self.loaded = True
        self.settled = True
        self._redraw_all()
        self.bell()

    def _redraw_all(self) -> None:
        for lst in self.lists():
            lst.refresh()
        self._refresh_bars()
        self.detail.show(self.dm)

    def _refresh_bars(self) -> None:
        """The one-line widgets that show the cursor: summary bar, titles."""
        self.query_one(DiffBar).refresh()
        for t in self.screen_stack[0].query(SideTitle):
            t.refresh()

    def _clamp_top(self, top: int, height: int) -> int:
        return max(0, min(top, max(self.dm.n_rows - height, 0)))

    # --- moving -------------------------------------------------------------------------------
    def _moved(self, result, what: str = "", center: bool = False, status=None) -> None:
        if result is None:
            # a move with nothing to say still ends the previous message
            self.command_line.set_status(what)
            self.bell()
            return
        self.command_line.set_status(status() if status is not None else "")
        lists = self.lists()
        height = lists[0].page_height
        row, top = self.dm.row, self._top
        margin = min(2, height // 4)
        if center or top < 0 or abs(row - top) > 2 * height:
            new_top = row - height // 2
        elif row < top + margin:
            # a third of a page at a time: a scroll repaints every row of
            # both lists, a cursor move four lines
            new_top = row - height // 3
        elif row >= top + height - margin:
            new_top = row - (2 * height) // 3
        else:
            new_top = top
        new_top = self._clamp_top(new_top, height)
        self._top = new_top
        for lst in lists:
            lst.show_cursor(new_top)
        self._refresh_bars()
        self.query_one(DiffMap).refresh()
        self.detail.show(self.dm)
        self._schedule_prefetch()

    # --- idle prefetch ------------------------------------------------------------------------
    PREFETCH_DELAY = 0.05

    def _schedule_prefetch(self) -> None:
        timer = getattr(self, "_prefetch_timer", None)
        if timer is not None:
            timer.stop()
        self._prefetch_timer = self.set_timer(self.PREFETCH_DELAY, self._prefetch, name="prefetch")

    def _prefetch(self) -> None:
        """No key for a moment: prepare where }/{ and ]/[ go (their rows in
        both lists, the state at the cursor there), so a jump draws from
        caches -- a jump otherwise rebuilds every visible row of both lists."""
        if getattr(self, "_closing", False) or not self.dm.ready:
            return
        lists = self.lists()
        height = lists[0].page_height
        dm = self.dm
        for row, active in dm.destinations():
            top = self._clamp_top(row - height // 2, height)    # where _moved centres a jump
            for lst in lists:
                lst.prefetch(row, top, active)
            if dm.sessions is not None:
                dm.state_changes(dm.seq_at("a", row), dm.seq_at("b", row))

    def on_diff_list_resized(self, message: DiffList.Resized) -> None:
        # the lists' height changed (terminal resized): keep the cursor row in view
        if self.dm.ready and self.dm.n_rows:
            self._moved(self.dm.row)

    def _not_ready(self) -> bool:
        if self.dm.ready:
            return False
        self._moved(None, self.dm.error or "the traces are still being aligned")
        return True

    def action_step(self, delta: int) -> None:
        if not self._not_ready():
            side = self.dm.active.upper()
            self._moved(self.dm.step(delta), f"no {'later' if delta > 0 else 'earlier'} event in {side}")

    def action_row(self, delta: int) -> None:
        if not self._not_ready():
            self._moved(self.dm.row_step(delta))

    def action_page(self, direction: int) -> None:
        if not self._not_ready():
            height = max(self.lists()[0].page_height - 1, 1)
            self._moved(self.dm.row_step(direction * height))

    def action_first(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.move_row(0))

    def action_last(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.move_row(self.dm.n_rows - 1))

    def action_next_region(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.next_region(), "no later difference", center=True)

    def action_prev_region(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.prev_region(), "no earlier difference", center=True)

    def action_next_hazard(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.next_hazard(), self._hazard_miss("later"), center=True,
                        status=self.dm.hazard_status)

    def action_prev_hazard(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.prev_hazard(), self._hazard_miss("earlier"), center=True,
                        status=self.dm.hazard_status)

    def action_window_end(self) -> None:
        if not self._not_ready():
            self._moved(self.dm.window_end(), "e goes to the end of the window of the finding ]/[ landed on",
                        center=True)

    def action_scroll_detail(self, direction: int) -> None:
        d = self.detail
        d.scroll_to(y=max(0, round(d.scroll_y) + direction * max(d.scrollable_content_region.height - 1, 1)),
                    animate=False)

    def _hazard_miss(self, which: str) -> str:
        if not self.dm.rep.hazards_available:
            return "the hazard delta was not computed"
        return f"no {which} finding that only one trace has"

    def action_switch_side(self) -> None:
        if self.command_line.asking:
            return
        self.dm.switch_side()
        self._moved(self.dm.row)

    def action_goto(self) -> None:
        if self._not_ready():
            return
        dm = self.dm
        side = dm.active

        def done(seq):
            if seq is not None:
                self._moved(dm.goto(seq), center=True)
        self.command_line.ask(f"go to step of {side.upper()} (1..{dm.models[side].count:,})", "",
                              "200, +10, -5, end   enter: go   escape: cancel", check=dm.parse_goto, done=done)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(DIFF_HELP_TEXT))

    # --- mouse ----------------------------------------------------------------------------------
    def on_diff_list_row_clicked(self, message: DiffList.RowClicked) -> None:
        self.dm.active = message.side
        self._moved(self.dm.move_row(message.row))

    def on_diff_map_jump(self, message: DiffMap.Jump) -> None:
        if self.dm.ready:
            self._moved(self.dm.move_row(message.row), center=True)

    def on_unmount(self) -> None:
        self._closing = True
        timer = getattr(self, "_prefetch_timer", None)
        if timer is not None:
            timer.stop()
        self.workers.cancel_all()
        self.dm.close_sessions()
        self.gc_stop()
