"""The one-line widgets of the diff view: the summary bar at the top, each
side's title, and the map of the whole alignment at the bottom.  Drawn as
segments (they change on every move) from the ``DiffModel``."""

from __future__ import annotations

from rich.segment import Segment
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from .diff_model import DiffModel
from .lines import OneLine
from .styles import CachedStyles


class DiffBar(OneLine):
    """'vtdtrace diff · DIFFERENT │ row 57/412 · region 1/10 │ 10 regions · hazards …'."""

    COMPONENT_CLASSES = {"diff-bar--app", "diff-bar--same", "diff-bar--different", "diff-bar--dim",
                         "diff-bar--pos"}

    def __init__(self, dm: DiffModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dm = dm

    def parts(self, width: int) -> list[tuple[str, str | None]]:
        dm = self.dm
        out = [(" vtdtrace diff " if width >= 100 else " diff ", "diff-bar--app"), (" ", None)]
        summary = dm.summary()
        if dm.ready:
            head, _, rest = summary.partition(" · ")
            out.append((head, "diff-bar--same" if dm.rep.equivalent else "diff-bar--different"))
            k, n = dm.region_number()
            reg = dm.region_at()
            where = (f"region {reg.index + 1}/{n}" if reg is not None
                     else (f"before region {k + 1}/{n}" if k < n else "after the last region") if n else "")
            out.append((" │ ", "diff-bar--dim"))
            out.append((f"row {dm.row + 1:,}/{dm.n_rows:,}", "diff-bar--pos"))   # 1-based on screen
            if where:
                out.append((f" · {where}", None))
            if rest:
                out.append((" │ ", "diff-bar--dim"))
                out.append((rest, None))
        else:
            out.append((summary, "diff-bar--dim"))
        return out


class SideTitle(OneLine):
    """One side: 'A step 52 op 0 PM3 │ s1.legacy.vtdt · legacy · 330 ev'."""

    COMPONENT_CLASSES = {"side-title--tag", "side-title--tag-active", "side-title--name", "side-title--bad",
                         "side-title--dim", "side-title--step", "side-title--gap"}

    def __init__(self, dm: DiffModel, side: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dm = dm
        self.side = side

    def parts(self, width: int) -> list[tuple[str, str | None]]:
        dm, side = self.dm, self.side
        m = dm.models[side]
        active = dm.active == side
        out = [(f" {side.upper()} ", "side-title--tag-active" if active else "side-title--tag"), (" ", None)]
        # the step first: half a narrow terminal cuts the end of the line
        if dm.ready:
            seq = dm.seq_at(side)
            out.append((f"step {seq:,}", "side-title--step"))
            if dm.on_gap(side):
                out.append((" (gap)", "side-title--gap"))
            ev = m.event(seq) if seq else None
            if ev is not None:
                out.append((f" op {ev[3]}" + (f" {ev[5]}" if ev[5] else ""), None))
            out.append((" │ ", "side-title--dim"))
        rest = [(f"{m.name} ", "side-title--name"), (f"· {m.engine} ", None)]
        if not m.complete:
            rest.append(("· damaged ", "side-title--bad"))
        count = f"· {m.count:,} ev"
        # the event count goes first when the line is too long (cut, it
        # would read as another number); decided for the longest step text
        # of this trace, so it does not come and go as the cursor moves
        longest = 4 + len(f"step {m.count:,} (gap) op {self._last_op()} XXXXX │ ")
        if longest + sum(len(t) for t, _ in rest) + len(count) <= width:
            rest.append((count, "side-title--dim"))
        return out + rest

    def _last_op(self) -> int:
        m = self.dm.models[self.side]
        ev = m.event(m.count)
        return ev[3] if ev is not None else 0


class DiffMap(CachedStyles, Widget):
    """The whole alignment in one line: difference regions, rows where a
    finding of one trace only starts, the cursor.  Click to jump."""

    COMPONENT_CLASSES = {"diff-map--none", "diff-map--region", "diff-map--hazard", "diff-map--cursor"}

    class Jump(Message):
        def __init__(self, row: int) -> None:
            super().__init__()
            self.row = row

    def __init__(self, dm: DiffModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.dm = dm
        self._cells: tuple = ()
        self._cells_width = -1

    def reset(self) -> None:
        self._cells_width = -1
        self.refresh()

    def cells(self, width: int) -> tuple:
        """Per cell: 0 same, 1 a difference region, 2 a hazard delta."""
        if width == self._cells_width:
            return self._cells
        dm = self.dm
        out = bytearray(width)
        n = dm.n_rows
        if dm.ready and n and width:
            for reg in dm.al.regions:
                lo = reg.row_start * width // n
                hi = max(lo + 1, (reg.row_end * width + n - 1) // n)
                for c in range(lo, min(hi, width)):
                    out[c] = max(out[c], 1)
            for row, _side in dm.hazard_rows():
                out[min(row * width // n, width - 1)] = 2
        self._cells, self._cells_width = tuple(out), width
        return self._cells

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.base_style()
        if y > 0 or not self.dm.ready or not self.dm.n_rows:
            return Strip.blank(width, base)
        cells = self.cells(width)
        cur = min(self.dm.row * width // self.dm.n_rows, width - 1)
        cs = self.cstyle
        glyph = ("─", "█", "▲")
        comp = ("diff-map--none", "diff-map--region", "diff-map--hazard")
        segs = []
        for c, v in enumerate(cells):
            style = base + cs(comp[v])
            if c == cur:
                style = style + cs("diff-map--cursor")
            segs.append(Segment("▼" if c == cur else glyph[v], style))
        return Strip(segs).simplify()

    def on_click(self, event) -> None:
        offset = event.get_content_offset(self)
        width = self.size.width
        if offset is None or not width or not self.dm.ready:
            return
        self.post_message(self.Jump(min(offset.x * self.dm.n_rows // width, self.dm.n_rows - 1)))
