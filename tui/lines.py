"""A pane of prepared lines, drawn with the Line API.

The detail panes change on every step, so they must not go through Rich
``Text`` -> Textual ``Content`` conversion and a widget re-layout each time
(that alone cost more than the rest of a step here).  Their builders produce
lines as lists of ``(text, component class)`` parts; this base class draws
them with styles from the .tcss (``COMPONENT_CLASSES``), scrolls both ways,
and has an optional selected line (``selected`` is the key of the line to
highlight).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

from rich.segment import Segment
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from .styles import CachedStyles

# A part of a line: (text, component class or None).
Part = tuple[str, str | None]
# A line: ([part, ...], key or None)
Line = tuple[list[Part], Any]


def wrap_parts(text: str, width: int, comp: str | None, first_indent: str = "", indent: str = "  ") -> list[Line]:
    """A long text as several lines of at most width cells, broken at
    spaces -- between ``name=value`` fields, never inside one: a field
    longer than the width stays whole on its own line and the pane scrolls
    sideways to it (``old`` / ``_lo=0x…`` read as two fields)."""
    rows = textwrap.wrap(text, max(width, 20), initial_indent=first_indent, subsequent_indent=indent,
                         break_on_hyphens=False, break_long_words=False) or [first_indent]
    return [([(row, comp)], None) for row in rows]


def set_virtual_size(widget, size: Size) -> None:
    """Change a scroll view's virtual size without a screen-wide layout.

    ``Widget.virtual_size`` is a reactive with ``layout=True``: every change
    re-lays out the whole screen, which cost more than everything else in a
    step here (the detail panes change their line count on most steps).  When
    the change does not show or hide a scrollbar the widget's own geometry
    is unchanged, so the value is set without the watcher and only the
    scrollbars are updated; otherwise the normal (layout) path is taken.

    The update uses public API only (each scrollbar's window sizes, the
    scroll offsets re-validated), which is what Textual's own private
    ``_scroll_update`` does once the scrollbars' visibility is known not to
    change; calling that private method tied the code to one Textual minor."""
    old = widget.virtual_size
    if size == old:
        return
    cw, ch = widget.container_size
    styles = widget.styles
    flips = ((styles.overflow_y == "auto" and (size.height > ch) != (old.height > ch))
             or (styles.overflow_x == "auto" and (size.width > cw) != (old.width > cw)))
    if not widget.is_mounted or not cw or not ch or flips:
        widget.virtual_size = size
        return
    widget.set_reactive(Widget.virtual_size, size)
    if widget.show_vertical_scrollbar and styles.scrollbar_size_vertical:
        bar = widget.vertical_scrollbar
        bar.window_virtual_size = size.height
        bar.window_size = ch - widget.scrollbar_size_horizontal
        bar.refresh()
    if widget.show_horizontal_scrollbar and styles.scrollbar_size_horizontal:
        bar = widget.horizontal_scrollbar
        bar.window_virtual_size = size.width
        bar.window_size = cw - widget.scrollbar_size_vertical
        bar.refresh()
    widget.scroll_x = widget.validate_scroll_x(widget.scroll_x)
    widget.scroll_y = widget.validate_scroll_y(widget.scroll_y)


class LinePane(CachedStyles, ScrollView, can_focus=True):
    """Draws ``self.lines``; subclasses fill them with ``set_lines``.
    ←/→ scroll sideways a field's width, Home/End to either edge (a pane
    without lines wider than itself does not move)."""

    BINDINGS = [
        Binding("right", "scroll_side(8)", "scroll right", show=False),
        Binding("left", "scroll_side(-8)", "scroll left", show=False),
        Binding("end", "scroll_side(1000000)", "right edge", show=False),
        Binding("home", "scroll_side(-1000000)", "left edge", show=False),
    ]

    SELECTED_ROW = ""           # component class for the selected line's background

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._lines: list[Line] = []
        self._build: Callable[[int], list[Line]] | None = None   # re-run when the width changes
        self._built_width: int | None = None
        self._strips: LRUCache = LRUCache(1024)
        self.selected = None

    @property
    def lines(self) -> list[Line]:
        return self._lines

    def text(self) -> str:
        """The pane as plain text (tests, the real-terminal check)."""
        return "\n".join("".join(t for t, _ in parts) for parts, _ in self._lines)

    def build(self, builder) -> None:
        """Fill the pane from ``builder(width)`` (kept for resizes)."""
        self._build = builder
        self._built_width = self.content_width()
        self.set_lines(builder(self._built_width))

    def on_resize(self, event) -> None:
        if self._build is not None and self.content_width() != self._built_width:
            self.build(self._build)

    def set_lines(self, lines: list[Line]) -> None:
        """Show ``lines``; only the lines that differ are redrawn (from one
        step to the next most of a pane stays the same, and the compositor's
        per-line work is what a frame costs)."""
        old = self._lines
        self._lines = lines
        w = max((sum(len(t) for t, _ in parts) for parts, _ in lines), default=0)
        size = Size(w, len(lines))
        if size != self.virtual_size:
            set_virtual_size(self, size)
            self.refresh()
            return
        top = round(self.scroll_y)
        height = self.scrollable_content_region.height
        changed = [y for y in range(top, min(len(lines), top + height)) if y >= len(old) or old[y] != lines[y]]
        if len(changed) > 4:
            self.refresh()                 # one repaint request, not one per line
        else:
            for y in changed:
                self.refresh_line(y)

    def action_scroll_side(self, delta: int) -> None:
        widest = self.virtual_size.width
        room = self.scrollable_content_region.width
        x = max(0, min(round(self.scroll_x) + delta, max(widest - room, 0)))
        if x != round(self.scroll_x):
            self.scroll_to(x=x, animate=False, force=True)
        else:
            self.app.bell()

    def content_width(self) -> int:
        return max(self.scrollable_content_region.width, 20)

    def scroll_line_into_view(self, y: int) -> None:
        height = self.scrollable_content_region.height
        top = round(self.scroll_y)
        if y < top:
            self.scroll_to(y=y, animate=False, force=True)
        elif height and y >= top + height:
            self.scroll_to(y=y - height + 1, animate=False, force=True)

    def render_lines(self, crop):
        # per frame, not per line: the region walks the styles
        self._width = self.scrollable_content_region.width
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self._width
        row = round(self.scroll_y) + y
        base = self.base_style()
        if row >= len(self._lines):
            return Strip.blank(width, base)
        parts, key = self._lines[row]
        sel = bool(self.SELECTED_ROW and key is not None and key == self.selected and self.has_focus)
        return self._strip_for(parts, sel, round(self.scroll_x), width, base)

    def _strip_for(self, parts, sel: bool, x: int, width: int, base) -> Strip:
        # lines repeat from step to step (most context entries do not
        # change): strips are cached by content
        ckey = (tuple(parts), sel, x, width, base)
        strip = self._strips.get(ckey)
        if strip is None:
            cs = self.cstyle
            if sel:
                base = base + cs(self.SELECTED_ROW)
            strip = Strip([Segment(t, base + cs(c) if c else base) for t, c in parts if t])
            strip = strip.crop_extend(x, x + width, base)
            self._strips[ckey] = strip
        return strip

    def warm(self, lines: list[Line], top: int, selected=None) -> None:
        """Prefetch: build the strips of ``lines`` rows top.. that a later
        show would draw (idle time, so the frame after the key is cheaper)."""
        base = self.base_style()
        width = self.scrollable_content_region.width
        if width <= 0:
            return
        x = round(self.scroll_x)
        for parts, key in lines[top: top + self.scrollable_content_region.height]:
            sel = bool(self.SELECTED_ROW and key is not None and key == selected and self.has_focus)
            self._strip_for(parts, sel, x, width, base)

    def on_focus(self, event) -> None:
        self.refresh()

    def on_blur(self, event) -> None:
        self.refresh()


class OneLine(CachedStyles, Widget):
    """A one-row widget drawn from ``parts(width)``, ``[(text, component
    class or None)]`` -- title bars, the command line.  The strip is kept
    while the parts are the same (most frames change nothing here)."""

    _line_key = None
    _line_strip = None

    def parts(self, width: int) -> list[tuple[str, str | None]]:
        raise NotImplementedError

    def text(self) -> str:
        """The line as plain text (tests, the real-terminal check)."""
        return "".join(t for t, _ in self.parts(self.size.width))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style()
        if y > 0:
            return Strip.blank(width, base)
        parts = tuple(self.parts(width))
        key = (parts, width, base)
        if key != self._line_key:
            cs = self.cstyle
            strip = Strip([Segment(t, base + cs(c) if c else base) for t, c in parts if t])
            self._line_key, self._line_strip = key, strip.crop_extend(0, width, base)
        return self._line_strip
