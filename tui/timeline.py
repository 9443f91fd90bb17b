"""The hazard timeline: the whole trace in one strip, one cell per
``count / width`` steps, coloured by the worst finding whose window touches
the cell, with the cursor (▲) and bookmarks (◆) on the line below.

While the loader is still building the index and running the analysers the
strip is a progress bar; it fills in when the findings arrive.  The strip is
computed once per width (FindingsView.buckets, linear in the number of
findings); moving the cursor re-renders only the marker line.
"""

from __future__ import annotations

from rich.segment import Segment
from textual.events import Click
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from .model import TraceModel
from .styles import CachedStyles


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
        self._buckets: list[int] | None = None
        self._bucket_key = None
        self._marker_key = None
        self._marker_strip = None

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
        self.refresh()

    def cursor_moved(self) -> None:
        self.refresh(Region(0, 1, self.size.width, 1))     # the marker line only

    def _cell_of(self, seq: int, width: int) -> int:
        total = max(self.model.count, 1)
        return min(max(seq - 1, 0) * width // total, width - 1)

    def _strip(self, width: int) -> list[int]:
        key = (width, self.model.count, id(self.model.findings))
        if self._buckets is None or self._bucket_key != key:
            f = self.model.findings
            self._buckets = f.buckets(width, self.model.count) if f is not None else [0] * width
            self._bucket_key = key
        return self._buckets

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style()
        cs = self.cstyle
        if width <= 0:
            return Strip.blank(0)
        if y == 0:
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
            cells = self._strip(width)
            styles = (cs("timeline--none"), cs("timeline--info"),
                      cs("timeline--warning"), cs("timeline--hazard"))
            segs = []
            run_rank, run_len = None, 0
            for rank in cells:
                if rank == run_rank:
                    run_len += 1
                    continue
                if run_len:
                    segs.append(Segment(("█" if run_rank else "─") * run_len, base + styles[run_rank]))
                run_rank, run_len = rank, 1
            if run_len:
                segs.append(Segment(("█" if run_rank else "─") * run_len, base + styles[run_rank]))
            return Strip(segs).adjust_cell_length(width, base)
        if y == 1:
            marks = {self._cell_of(seq, width): ("◆", "timeline--bookmark") for seq in self.model.bookmarks}
            marks[self._cell_of(self.model.cursor, width)] = ("▲", "timeline--cursor")
            key = (width, base, tuple(sorted(marks.items())))
            if key == self._marker_key:
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
            self._marker_key, self._marker_strip = key, Strip(segs, width)
            return self._marker_strip
        return Strip.blank(width, base)

    def on_click(self, event: Click) -> None:
        width = self.size.width
        if width > 0 and self.model.count:
            seq = 1 + event.x * self.model.count // width
            self.post_message(self.Jump(min(seq, self.model.count)))
