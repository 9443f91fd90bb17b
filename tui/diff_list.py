"""One side of the diff view: the alignment's rows as that trace shows them.

Both sides are ``DiffList``s over the same rows (row y of A's list and row y
of B's are one aligned pair), so their scroll positions are always equal and
the cursor is on the same row in both: synchronisation is by construction,
not by copying one list's offset to the other.

A row of one side shows its event (seq, step label, kind, function, decoded
arguments), or a gap (``╌``) where only the other trace has an event.  The
first column says how the row differs: ``~`` same event, other values (the
differing fields are highlighted), ``-`` only in A, ``+`` only in B.  The
second column: ``!`` a finding of this trace only starts at this event,
``▌`` the event is inside the window of one.
Like the event list it is a Line-API view: only visible rows are built.
"""

from __future__ import annotations

from bisect import bisect_right

from rich.segment import Segment
from rich.style import Style
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from replay.diff import ARGS, ONLY_A, ONLY_B

from .diff_model import DiffModel
from .event_list import _fit
from .field_spans import field_spans, split_spans
from .styles import CachedStyles

ROW_CACHE = 2048
SIGN = {ARGS: "~", ONLY_A: "-", ONLY_B: "+"}


class DiffList(CachedStyles, ScrollView, can_focus=False):
    """Never focused: the app routes every key (a focus change would rebuild
    the footer); which side is active is drawn from the model."""

    COMPONENT_CLASSES = {
        "diff-list--cursor", "diff-list--cursor-other", "diff-list--seq", "diff-list--label",
        "diff-list--func", "diff-list--kind", "diff-list--args", "diff-list--gap",
        "diff-list--changed", "diff-list--removed", "diff-list--added", "diff-list--field",
        "diff-list--sign", "diff-list--hazard", "diff-list--placeholder",
    }

    class RowClicked(Message):
        def __init__(self, side: str, row: int) -> None:
            super().__init__()
            self.side, self.row = side, row

    def __init__(self, dm: DiffModel, side: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dm = dm
        self.side = side
        self.model = dm.models[side]
        self._strips: LRUCache = LRUCache(ROW_CACHE)
        self._hazard_rows: frozenset = frozenset()
        self._cursor_row = 0
        self._width = 0
        self._frame_rows: dict = {}

    # --- model changes ----------------------------------------------------------------------
    def reset(self) -> None:
        """The alignment arrived (or failed): rows, caches, scroll."""
        self._strips.clear()
        self._hazard_rows = frozenset(r for r, s in self.dm.hazard_rows() if s == self.side)
        self.virtual_size = Size(self.size.width, max(self.dm.n_rows, 1))
        self._cursor_row = self.dm.row
        self.refresh()

    def show_cursor(self, top: int) -> None:
        """The cursor row moved or the side switched; ``top`` is the first
        visible row, chosen by the app for both sides."""
        old = self._cursor_row
        self._cursor_row = self.dm.row
        if top != round(self.scroll_y):
            self.scroll_to(y=top, animate=False, force=True)
        else:
            # rows of the whole list: ScrollView.refresh_line takes off the scroll offset
            self.refresh_line(old)
            self.refresh_line(self._cursor_row)

    def prefetch(self, row: int, top: int, active: str) -> None:
        """Idle time: build the strips a jump to ``row`` (scrolled to
        ``top``, ``active`` the active side then) would draw."""
        base = self.base_style()
        width = self.scrollable_content_region.width
        if width <= 0 or not self.dm.ready:
            return
        for r in self.dm.rows(top, top + self.page_height):
            self._cached_strip(r, self._look(r.index, row, active), width, base)

    @property
    def page_height(self) -> int:
        return max(self.scrollable_content_region.height, 1)

    def on_click(self, event) -> None:
        offset = event.get_content_offset(self)
        if offset is None or not self.dm.ready:
            return
        row = round(self.scroll_y) + offset.y
        if 0 <= row < self.dm.n_rows:
            self.post_message(self.RowClicked(self.side, row))

    class Resized(Message):
        """The list's height changed: the app keeps the cursor row in view."""

    def on_resize(self, event) -> None:
        self.virtual_size = Size(self.size.width, max(self.dm.n_rows, 1))
        self._strips.clear()
        if self.side == "a":                # one message for the pair
            self.post_message(self.Resized())

    def _in_window(self, seq: int) -> bool:
        """Inside the [start, end) window of a finding only this trace has."""
        wins = self.dm.windows(self.side)
        i = bisect_right(wins, (seq, float("inf"))) - 1
        return i >= 0 and wins[i][0] <= seq < wins[i][1]

    # --- rendering ------------------------------------------------------------------------------
    def render_lines(self, crop):
        self._width = self.scrollable_content_region.width
        top = round(self.scroll_y)
        # one alignment lookup for the frame, not one per line
        self._frame_rows = {r.index: r for r in self.dm.rows(top, top + crop.bottom + 1)}
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self._width
        base = self.base_style()
        dm = self.dm
        row = round(self.scroll_y) + y
        if not dm.ready:
            return self._unaligned(y, width, base)
        if row >= dm.n_rows or width <= 0:
            return Strip.blank(width, base)
        r = self._frame_rows.get(row) or dm.row_at(row)
        return self._cached_strip(r, self._look(row, dm.row, dm.active), width, base)

    def _look(self, row: int, cursor: int, active: str) -> int:
        """0 a plain row, 2 the cursor on the active side, 1 on the other."""
        if row != cursor:
            return 0
        return 2 if active == self.side else 1

    def _cached_strip(self, r, look: int, width: int, base: Style) -> Strip:
        key = (r.index, r.seq_a, r.seq_b, look, width, base)
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._strip(r, look, width, base)
        return strip

    def _unaligned(self, y: int, width: int, base: Style) -> Strip:
        """Before the alignment is there: the first line says why, then this
        trace's first events as they are (dimmed: not aligned yet)."""
        dm = self.dm
        if y == 0:
            text = f" {dm.error}" if dm.error else f" {dm.summary()} (the rows are not aligned yet)"
            return Strip([Segment(text, base + self.cstyle("diff-list--placeholder"))]).crop_extend(0, width, base)
        ev = self.model.event(y) if not dm.error else None
        if ev is None:
            return Strip.blank(width, base)
        s, _cpu, _op, label, _func, kind, args = self.model.row_fields(ev)
        wseq = max(len(str(self.model.count)), 3)
        text = f"  {_fit(s, wseq, True)} {_fit(label, 5)} {_fit(kind, 13)} {args}"
        return Strip([Segment(text, base + self.cstyle("diff-list--placeholder"))]).crop_extend(0, width, base)

    def _strip(self, r, look: int, width: int, base: Style) -> Strip:
        cs = self.cstyle
        seq = r.seq_a if self.side == "a" else r.seq_b
        if look:
            rowbg = self.cstyle_full("diff-list--cursor" if look == 2 else "diff-list--cursor-other")
        elif seq is None:
            rowbg = base + cs("diff-list--gap")
        elif r.cls == ARGS:
            rowbg = base + cs("diff-list--changed")
        elif r.cls == ONLY_A:
            rowbg = base + cs("diff-list--removed")
        elif r.cls == ONLY_B:
            rowbg = base + cs("diff-list--added")
        else:
            rowbg = base
        sign = SIGN.get(r.cls, " ") if seq is not None else " "
        if seq is None:
            hz = " "
        elif r.index in self._hazard_rows:
            hz = "!"                       # a finding of this trace only starts here
        else:
            hz = "▌" if self._in_window(seq) else " "
        segs = [Segment(sign, rowbg + cs("diff-list--sign")), Segment(hz, rowbg + cs("diff-list--hazard"))]
        if seq is None:
            gap = cs("diff-list--gap")
            if look:                        # the cursor's background, the gap's dashes
                gap = Style(color=gap.color)
            segs.append(Segment("╌" * max(width - 2, 0), rowbg + gap))
            return Strip(segs).adjust_cell_length(width, rowbg)
        ev = self.model.event(seq)
        wseq = max(len(str(self.model.count)), 3)
        if ev is None:
            segs.append(Segment(_fit(str(seq), wseq, True) + " (unreadable)", rowbg + cs("diff-list--seq")))
            return Strip(segs).adjust_cell_length(width, rowbg)
        s, _cpu, _op, label, func, kind, args = self.model.row_fields(ev)
        fields = set(r.fields) if r.cls == ARGS else set()
        hl = rowbg + cs("diff-list--field")
        rest = width - 2 - (wseq + 1) - 6
        wkind = 13 if rest >= 40 else 10
        # half a narrow terminal: the arguments say more than a cut function
        # name, and a call or return names its function in front of them
        wfunc = max(8, min(26, (rest - wkind) // 3)) if rest >= 60 else 0
        if not wfunc and kind in ("call", "return") and func:
            args = f"{func} {args}"

        def col(text, comp, field):
            return Segment(text, hl if field in fields else rowbg + cs(comp))

        segs.append(Segment(_fit(s, wseq, True) + " ", rowbg + cs("diff-list--seq")))
        segs.append(col(_fit(label, 5) + " ", "diff-list--label", "label"))
        segs.append(col(_fit(kind, wkind) + " ", "diff-list--kind", "kind"))
        if wfunc:
            segs.append(col(_fit(func, wfunc) + " ", "diff-list--func", "func"))
        if "event" in fields:
            segs.append(Segment(args, hl))
        else:
            spans = field_spans(args, fields)
            room = width - sum(seg.cell_length for seg in segs)
            if spans and spans[0][1] > room:
                # the first differing field would be cut off: start the
                # arguments a little before it instead
                cut = max(0, min(spans[0][0] - 8, spans[0][1] - room + 1))
                if cut > 0:
                    args = "…" + args[cut + 1:]
                    spans = [(max(1, s - cut), e - cut) for s, e in spans]
            for text, on in split_spans(args, spans):
                segs.append(Segment(text, hl if on else rowbg + cs("diff-list--args")))
        return Strip(segs).adjust_cell_length(width, rowbg)
