"""The event list: a virtual Line-API view over millions of events.

Toolong's technique (Textualize/toolong): a ``ScrollView`` whose
``virtual_size`` is the number of rows; ``render_line`` decodes only the rows
on screen, through the reader's chunk LRU and an LRU of formatted rows here.
Nothing is proportional to the trace length: 10^7 events cost what 10^3 do.
No ``DataTable``: 100k rows took 12 s to add here (measured).

Row y shows seq y (row 0: the platform before any event); with a filter on,
row y shows the y-th matching event (TraceModel.seq_at_row).  Columns: a
bookmark mark, a hazard mark (a coloured bar when the step lies inside a
finding's window), seq, CPU (one cell, always shown: a trace of one CPU
reads 0 there, which costs two cells and keeps every layout the same; ``d``
marks a device's DMA), op, step label, Xen function, kind, the decoded
arguments.  Column widths follow the widget width and are recomputed on
every width change (a live resize included): the arguments keep at least
``ARGS_MIN`` cells, the function column takes what is left up to the
longest function name of the trace's schema, and a name that does not fit
is drawn by its distinguishing tail (tui/func_names.py), never cut to a
prefix several functions share.

Maximised (``1`` twice) the list takes the whole screen and its last
``PREVIEW`` lines show the event under the cursor in full -- seq, kind,
function and every argument, wrapped between fields -- since even a full
row at 120 columns cannot hold a ctx-write's four halves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from .func_names import fit_name
from .lines import wrap_parts
from .model import TraceModel
from .styles import CachedStyles

if TYPE_CHECKING:
    from .app import VtdtraceApp

ROW_CACHE = 2048
PREVIEW = 4            # lines under a maximised list: a rule and the cursor event in full
ARGS_MIN = 40          # argument cells kept before the function column grows
FUNC_MIN = 12


def _fit(text: str, width: int, right: bool = False) -> str:
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: width - 1] + "…" if width > 1 else text[:width]
    return text.rjust(width) if right else text.ljust(width)


class EventList(CachedStyles, ScrollView, can_focus=True):
    """The virtual list of events; the cursor row is the current step."""

    COMPONENT_CLASSES = {
        "event-list--cursor",
        "event-list--cursor-blur",
        "event-list--seq",
        "event-list--meta",
        "event-list--label",
        "event-list--func",
        "event-list--kind",
        "event-list--args",
        "event-list--start",
        "event-list--hazard",
        "event-list--warning",
        "event-list--info",
        "event-list--bookmark",
        "event-list--window",
    }

    BINDINGS = [
        Binding("down", "app.step(1)", "step", show=False),
        Binding("up", "app.step(-1)", "back", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("home", "app.goto_step(0)", "first", show=False),
        Binding("end", "app.goto_step(-1)", "last", show=False),
    ]

    class RowClicked(Message):
        """A row was clicked: make its event the current step."""

        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(self, model: TraceModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self._rows: LRUCache = LRUCache(ROW_CACHE)        # seq -> formatted parts
        self._strips: LRUCache = LRUCache(ROW_CACHE)      # (seq, look, width, style) -> Strip
        self._layout: tuple = ()
        self._layout_width = -1
        self._cursor_row = 0

    # --- model changes ----------------------------------------------------------------------
    def reset(self) -> None:
        """The rows changed (filter, count, findings, bookmarks): drop caches."""
        self._rows.clear()
        self._strips.clear()
        self._layout_width = -1
        self.virtual_size = Size(self.size.width, self.model.row_count() + self.preview)
        self._cursor_row = self.model.row_of_seq(self.model.cursor)
        self.refresh()

    def grow(self) -> None:
        """More filter matches arrived: the list only got longer."""
        self.virtual_size = Size(self.size.width, self.model.row_count() + self.preview)
        self._cursor_row = self.model.row_of_seq(self.model.cursor)
        self.refresh()

    def invalidate_seq(self, seq: int) -> None:
        """One row changed (a bookmark): re-render the view from the cache."""
        self._rows.discard(seq)
        self._strips.clear()
        self.refresh()

    def show_cursor(self, center: bool = False) -> None:
        """Move the highlighted row to the model's cursor and scroll it into view."""
        old = self._cursor_row
        row = self.model.row_of_seq(self.model.cursor)
        self._cursor_row = row
        height = max(self.rows_height(), 1)
        top = round(self.scroll_y)
        margin = min(2, height // 4)
        if center or abs(row - old) > height:
            new_top = row - height // 2
        elif row < top + margin:
            # jump scroll: a page-third at a time, not a line at a time -- a
            # scroll repaints every row, a cursor move only two
            new_top = row - (2 * height) // 3
        elif row >= top + height - margin:
            new_top = row - height // 3
        else:
            new_top = top
        new_top = max(0, min(new_top, max(self.virtual_size.height - height, 0)))
        if new_top != top:
            self.scroll_to(y=new_top, animate=False, force=True)   # refreshes the whole view
        else:
            self.refresh_line(old)
            self.refresh_line(row)
            if self.preview:
                for y in range(PREVIEW):
                    self.refresh_line(top + height + y)

    def prefetch_rows(self, seq: int) -> None:
        """Idle time: format and draw the rows a centred jump to seq would
        show (the destination of ]/[), so that frame finds them cached."""
        base = self.base_style()
        width = self.scrollable_content_region.width
        height = self.rows_height()
        if width <= 0 or height <= 0:
            return
        row = self.model.row_of_seq(seq)
        top = max(0, min(row - height // 2, max(self.model.row_count() - height, 0)))
        for r in range(top, min(top + height, self.model.row_count())):
            s = self.model.seq_at_row(r)
            look = (2 if self.has_focus else 1) if s == seq else 0
            key = (s, look, width, base)
            if self._strips.get(key) is None:
                self._strips[key] = self._strip(s, look, width, base)

    @property
    def preview(self) -> int:
        """Lines kept for the cursor event in full (maximised only)."""
        return PREVIEW if self.is_maximized and self.size.height > PREVIEW + 4 else 0

    def rows_height(self) -> int:
        return self.scrollable_content_region.height - self.preview

    def maximized_changed(self) -> None:
        self.virtual_size = Size(self.size.width, self.model.row_count() + self.preview)
        self._strips.clear()
        self.refresh()

    def _preview_lines(self, width: int) -> list[str]:
        m = self.model
        ev = m.event(m.cursor)
        if ev is None:
            text = "0: the platform before any event"
        else:
            s, cpu, op, label, func, kind, args = m.row_fields(ev)
            text = f"{s} {kind} {func} {label} (op {op}, cpu {cpu})  {args}"
        rows = [t for parts, _ in wrap_parts(text, width - 1, None, " ", "   ") for t, _ in parts]
        if len(rows) > PREVIEW - 1:
            rows = rows[:PREVIEW - 2] + [rows[PREVIEW - 2][: width - 2] + " …"]
        return rows

    def action_page(self, direction: int) -> None:
        height = max(self.rows_height() - 1, 1)
        row = self.model.row_of_seq(self.model.cursor) + direction * height
        row = max(0, min(row, self.model.row_count() - 1))
        if self.model.row_count():
            cast("VtdtraceApp", self.app).goto_seq(self.model.seq_at_row(row))   # the one-trace view's list

    def on_click(self, event) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = round(self.scroll_y) + offset.y
        if 0 <= row < self.model.row_count():
            self.post_message(self.RowClicked(self.model.seq_at_row(row)))

    def on_resize(self, event) -> None:
        self.virtual_size = Size(self.size.width, self.model.row_count() + self.preview)

    def on_focus(self, event) -> None:
        self.refresh_line(self._cursor_row)

    def on_blur(self, event) -> None:
        self.refresh_line(self._cursor_row)

    # --- layout -----------------------------------------------------------------------------
    def _columns(self, width: int) -> tuple:
        if width == self._layout_width:
            return self._layout
        m = self.model
        wseq = max(len(str(m.count)), 3)
        last = m.event(m.count)
        wop = max(len(str(last[3])) if last else 1, 2)
        kinds = [k.name for k in m.schema.kinds]
        wkind = min(max(map(len, kinds), default=13), 15) if width >= 100 else 13
        fixed = 2 + (wseq + 1) + 2 + (wop + 1) + 6 + (wkind + 1)
        longest = max((len(f) for f in m.schema.funcs if f), default=FUNC_MIN)
        wfunc = max(FUNC_MIN, min(longest, width - fixed - 1 - ARGS_MIN))
        self._layout = (wseq, wop, wfunc, wkind)
        self._layout_width = width
        self._rows.clear()
        self._strips.clear()
        return self._layout

    def _parts(self, seq: int, width: int) -> tuple:
        """(bookmark?, hazard rank, [(text, component)]) for seq, cached."""
        cached = self._rows.get(seq)
        if cached is not None:
            return cached
        wseq, wop, wfunc, wkind = self._columns(width)
        m = self.model
        rank = m.findings.worst_at(seq) if (m.findings is not None and seq > 0) else 0
        if seq == 0:
            parts = [(_fit("0", wseq, True) + " ", "event-list--seq"),
                     ("── the platform before any event ──", "event-list--start")]
        else:
            ev = m.event(seq)
            if ev is None:
                parts = [(_fit(str(seq), wseq, True) + " ", "event-list--seq"),
                         ("(unreadable)", "event-list--start")]
            else:
                s, cpu, op, label, func, kind, args = m.row_fields(ev)
                # one cell, always: CPUs 0-7 (a scenario names at most eight),
                # d for a device's DMA, + for what a crafted trace says
                cell = "d" if cpu == "dev" else cpu if len(cpu) == 1 else "+"
                parts = [
                    (_fit(s, wseq, True) + " ", "event-list--seq"),
                    (cell + " " + _fit(op, wop, True) + " ", "event-list--meta"),
                    (_fit(label, 5) + " ", "event-list--label"),
                    (fit_name(m.schema.funcs, func, wfunc) + " ", "event-list--func"),
                    (_fit(kind, wkind) + " ", "event-list--kind"),
                    (args, "event-list--args"),
                ]
        value = (seq in m.bookmarks, rank, parts)
        self._rows[seq] = value
        return value

    # --- rendering ----------------------------------------------------------------------------
    def render_lines(self, crop):
        # per frame, not per line: the region walks the styles
        self._width = self.scrollable_content_region.width
        self._columns(self._width)          # a resize: new widths, fresh rows
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self._width
        row = round(self.scroll_y) + y
        base = self.base_style()
        preview = self.preview
        if preview:
            rows_h = self.scrollable_content_region.height - preview
            if y >= rows_h:
                k = y - rows_h
                if k == 0:
                    return Strip([Segment("─" * width, base + self.cstyle("event-list--meta"))], width)
                lines = self._preview_lines(width)
                text = lines[k - 1] if k - 1 < len(lines) else ""
                return Strip([Segment(text, base + self.cstyle("event-list--args"))]).adjust_cell_length(width, base)
        if row >= self.model.row_count() or width <= 0:
            return Strip.blank(width, base)
        seq = self.model.seq_at_row(row)
        if row == self._cursor_row and seq == self.model.cursor:
            look = 2 if self.has_focus else 1
        else:
            look = 0
        key = (seq, look, width, base)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strip(seq, look, width, base)
            self._strips[key] = strip
        return strip

    def _strip(self, seq: int, look: int, width: int, base: Style) -> Strip:
        mark, rank, parts = self._parts(seq, width)
        cstyle = self.cstyle
        if look:
            rowbg = self.cstyle_full("event-list--cursor" if look == 2 else "event-list--cursor-blur")
        elif rank:
            rowbg = base + cstyle("event-list--window")
        else:
            rowbg = base
        segs = [Segment("◆" if mark else " ", rowbg + cstyle("event-list--bookmark"))]
        if rank >= 3:
            segs.append(Segment("▌", rowbg + cstyle("event-list--hazard")))
        elif rank == 2:
            segs.append(Segment("▌", rowbg + cstyle("event-list--warning")))
        elif rank == 1:
            segs.append(Segment("▌", rowbg + cstyle("event-list--info")))
        else:
            segs.append(Segment(" ", rowbg))
        for text, comp in parts:
            segs.append(Segment(text, rowbg + cstyle(comp)))
        return Strip(segs).adjust_cell_length(width, rowbg)
