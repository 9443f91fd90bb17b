"""The hazard timeline: the whole trace in one strip, one cell per
``count / width`` steps, with the cursor (▼) and bookmarks (◆) on the line
above it.

A cell shows the density of finding windows, by severity: its colour is the
worst severity whose window touches the cell, its height (▁ … █) how many
windows of that severity cover it, on a log scale relative to the busiest
cell on screen -- at 10^6 events, where some window touches every cell, the
strip still shows where they pile up and where hazards are.  ``z`` zooms the
strip to the operation the cursor is in (its op-begin .. op-end, counted
exactly from the windows, FindingsView.density), ``Z`` goes back to the whole
trace; the marker line then names the span.  ▼ is the cursor everywhere
(the diff view's strip uses it too); ◀ / ▶ say it lies left / right of a
zoomed span.

While the loader is still building the index and running the analysers the
strip is a progress bar; it fills in when the findings arrive.  The strip is
computed once per width and span (linear in the number of findings, or in
the windows of the span); moving the cursor re-renders only the marker line.
"""

from __future__ import annotations

from math import log2
from typing import Any

from rich.segment import Segment
from textual.events import Click
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from .model import TraceModel
from .styles import CachedStyles

LEVELS = "▁▂▃▄▅▆▇█"
STRIP_Y, MARKER_Y = 1, 0


def level_glyph(n: int, peak: int) -> str:
    """A count as one of eight heights, log-scaled to the busiest cell."""
    if n <= 0:
        return "─"
    if peak <= 1:
        return LEVELS[-1]
    k = -(-len(LEVELS) * log2(1 + n) // log2(1 + peak))
    return LEVELS[max(1, min(int(k), len(LEVELS))) - 1]


class Timeline(CachedStyles, Widget):
    COMPONENT_CLASSES = {
        "timeline--none", "timeline--hazard", "timeline--warning", "timeline--info",
        "timeline--cursor", "timeline--bookmark", "timeline--progress", "timeline--progress-bg",
        "timeline--text",
    }

    class Jump(Message):
        def __init__(self, seq: int) -> None:
            super().__init__()
            self.seq = seq

    def __init__(self, model: TraceModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.progress: tuple[str, float] | None = ("opening", 0.0)
        self._buckets: list[tuple[int, int]] | None = None
        self._bucket_key: tuple[Any, ...] | None = None
        self._strip_key: tuple[Any, ...] | None = None
        self._strip_strip: Strip | None = None
        self._marker_key: tuple[Any, ...] | None = None
        self._marker_strip: Strip | None = None

    def set_progress(self, what: str, fraction: float | None, busy: bool = False) -> None:
        """A phase with a known fraction, or (``busy``) one that reports none;
        ``fraction`` None and not busy: loading is over."""
        if busy:
            self.progress = (what, -1.0)
        else:
            self.progress = None if fraction is None else (what, max(0.0, min(fraction, 1.0)))
        self.refresh()

    def reset(self) -> None:
        self._buckets = None
        self._strip_key = None
        self.refresh()

    def cursor_moved(self) -> None:
        self.refresh(Region(0, MARKER_Y, self.size.width, 1))     # the marker line only

    def _range(self) -> tuple[int, int]:
        """[a, b) of steps the strip spans (the whole trace: 1 .. count)."""
        z = self.model.zoom
        return z if z is not None else (1, max(self.model.count, 1) + 1)

    def _cell_of(self, seq: int, width: int):
        """The cell of seq; -1 / width when it lies left / right of a zoom."""
        a, b = self._range()
        if self.model.zoom is None:
            seq = max(seq, 1)
        if seq < a:
            return -1
        if seq >= b:
            return width
        return min((seq - a) * width // max(b - a, 1), width - 1)

    def _strip(self, width: int) -> list[int]:
        """The worst severity rank per cell (0: none)."""
        return [rank for rank, _ in self._cells(width)]

    def _cells(self, width: int) -> list[tuple[int, int]]:
        """Per cell: (worst severity rank, windows of that severity)."""
        key = (width, self.model.count, id(self.model.findings), self.model.zoom)
        if self._buckets is None or self._bucket_key != key:
            f = self.model.findings
            self._buckets = (f.density(width, self.model.zoom) if f is not None else [(0, 0)] * width)
            self._bucket_key = key
        return self._buckets

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style()
        cs = self.cstyle
        if width <= 0:
            return Strip.blank(0)
        if y == STRIP_Y:
            if self.progress is not None and self.model.findings is None:
                what, frac = self.progress
                if frac < 0:            # a phase without progress reports
                    label = f" {what}… "
                    return Strip([Segment(label, base + cs("timeline--text")),
                                  Segment("╌" * max(width - len(label), 0),
                                          base + cs("timeline--progress-bg"))]
                                 ).adjust_cell_length(width, base)
                label = f" {what} {frac * 100:3.0f}% "
                bar_w = max(width - len(label), 1)
                done = int(bar_w * frac)
                return Strip([Segment(label, base + cs("timeline--text")),
                              Segment("━" * done, base + cs("timeline--progress")),
                              Segment("━" * (bar_w - done), base + cs("timeline--progress-bg"))]
                             ).adjust_cell_length(width, base)
            cells = self._cells(width)
            skey = (self._bucket_key, base)
            if skey == self._strip_key and self._strip_strip is not None:
                return self._strip_strip
            styles = (cs("timeline--none"), cs("timeline--info"),
                      cs("timeline--warning"), cs("timeline--hazard"))
            peak = {r: max((n for rk, n in cells if rk == r), default=0) for r in (1, 2, 3)}
            segs = []
            run_rank = 0
            run: list[str] = []
            for rank, n in cells:
                if rank != run_rank and run:
                    segs.append(Segment("".join(run), base + styles[run_rank]))
                    run = []
                run_rank = rank
                run.append(level_glyph(n, peak.get(rank, 0)) if rank else "─")
            if run:
                segs.append(Segment("".join(run), base + styles[run_rank]))
            strip = Strip(segs).adjust_cell_length(width, base)
            self._strip_key, self._strip_strip = skey, strip
            return strip
        if y == MARKER_Y:
            marks: dict[int, tuple[str, str]] = {}
            for seq in self.model.bookmarks:
                c = self._cell_of(seq, width)
                if 0 <= c < width:
                    marks[c] = ("◆", "timeline--bookmark")
            c = self._cell_of(self.model.cursor, width)
            marks[max(0, min(c, width - 1))] = ("◀" if c < 0 else "▶" if c >= width else "▼", "timeline--cursor")
            label = ""
            if self.model.zoom is not None:
                a, b = self.model.zoom
                label = f" steps {a:,}–{b - 1:,}  Z: whole trace "
            key = (width, base, label, tuple(sorted(marks.items())))
            if key == self._marker_key and self._marker_strip is not None:
                return self._marker_strip
            segs, pos = [], 0
            for c in sorted(marks):
                ch, comp = marks[c]
                if c > pos:
                    segs.append(Segment(" " * (c - pos), base))
                segs.append(Segment(ch, base + cs(comp)))
                pos = c + 1
            if pos < width:
                segs.append(Segment(" " * (width - pos), base))
            strip = Strip(segs, width)
            if label and len(label) < width:
                # the span's name at the right, unless a mark is there
                at = width - len(label)
                if all(c < at for c in marks):
                    strip = Strip.join([strip.crop(0, at),
                                        Strip([Segment(label, base + cs("timeline--text"))])])
            self._marker_key, self._marker_strip = key, strip
            return strip
        return Strip.blank(width, base)

    def on_click(self, event: Click) -> None:
        width = self.size.width
        if width > 0 and self.model.count:
            a, b = self._range()
            seq = a + event.x * (b - a) // width
            self.post_message(self.Jump(max(1, min(seq, b - 1, self.model.count))))
