"""The side-by-side diff view's model: two traces, one alignment, one cursor.

Pure (no Textual): built from two ``TraceModel``s and, once the diff worker
is done, a ``replay.diff.DiffReport``.  The widgets only render what it says.

The cursor is a row of the alignment (``report.alignment``).  Each side has
its own step: the event that side shows on that row, or -- on a gap row,
where that side has no event -- the side's last event before the gap (its
state is still the state after that event).  So both cursors always follow
the alignment, and a gap never moves the side that lacks the event.

Moves:
* ``step(±1)`` (``n``/``p``): the *active* side's next/previous event; the
  other side follows through the alignment.  Rows only the other trace has
  are passed over, so stepping through A reads A's events in order.
* ``row_step(±k)`` (``↓``/``↑``, pages): the next/previous aligned row, gap
  rows included.
* ``next_region``/``prev_region`` (``}``/``{``): the first row of the
  next/previous difference region.
* ``next_hazard``/``prev_hazard`` (``]``/``[``): the start of the next or
  previous finding present in one trace only; the active side becomes that
  trace (the finding is its).
* ``switch_side`` (``tab``), ``goto(seq)`` on the active side (``g``).
Every move returns the new row, or None when there is nowhere to go.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from typing import TYPE_CHECKING

from vtdtrace.positions import decimal

if TYPE_CHECKING:       # replay.diff is imported by the worker that computes the diff, not at start-up
    from replay.diff import Alignment, DiffReport

SIDES = ("a", "b")
OTHER = {"a": "b", "b": "a"}


class DiffModel:
    def __init__(self, model_a, model_b) -> None:
        self.models = {"a": model_a, "b": model_b}
        self.report: DiffReport | None = None
        self.alignment: Alignment | None = None
        self.error: str | None = None
        self.phase = "aligning"
        self.fraction: float | None = 0.0
        self.row = 0
        self.active = "a"
        self._state_by_pair: dict | None = None
        self._hazards_by_pair: dict | None = None
        self._hazards: list | None = None
        self._hazard_at: int | None = None
        self._windows: dict = {}
        # each side's ReplaySession (index + checkpoints), for the state at
        # the cursor; opened by the app's worker after the diff
        self.sessions: dict | None = None
        self.session_note = "the replay index is being opened"
        from replay.diff.projection import implementations_differ
        # real code against a model: the view compares every event, `vtdtrace diff` projections
        self.implementations_differ = implementations_differ(getattr(model_a, "header", None),
                                                             getattr(model_b, "header", None))
        self._states: OrderedDict = OrderedDict()     # (seq_a, seq_b) -> changes, recent first out

    # --- the report arrives ---------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.report is not None

    @property
    def rep(self) -> DiffReport:
        """The report, once attached (every caller checks ``ready`` first)."""
        assert self.report is not None
        return self.report

    @property
    def al(self) -> Alignment:
        """The report's alignment, once attached."""
        assert self.alignment is not None
        return self.alignment

    def attach(self, report: DiffReport) -> None:
        self.report = report
        self.alignment = report.alignment
        self.row = 0
        self._state_by_pair = {s.pair: s for s in report.state_diff}
        hz: dict = {}
        for h in report.hazards:
            hz.setdefault(h.pair, []).append(h)
        self._hazards_by_pair = hz
        # open on the first difference: that is what the view is for
        first = self.al.next_region(-1)
        if first is not None:
            self.row = first.row_start

    @property
    def n_rows(self) -> int:
        return self.alignment.n_rows if self.alignment is not None else 0

    # --- rows and the two cursors ---------------------------------------------------------
    def row_at(self, row: int):
        return self.al.row(row)

    def rows(self, start: int, stop: int) -> list:
        return self.alignment.rows(start, stop) if self.alignment is not None else []

    def seq_at(self, side: str, row: int | None = None) -> int:
        """The side's step at a row: its event there, else its last event
        before the row (0: before its first event)."""
        if self.alignment is None:
            return 0
        row = self.row if row is None else row
        if not 0 <= row < self.n_rows:
            return 0
        r = self.al.row(row)
        seq = r.seq_a if side == "a" else r.seq_b
        if seq is not None:
            return seq
        return self._seq_before(side, row)

    def _seq_before(self, side: str, row: int) -> int:
        al = self.al
        pair = al.pair_at_row(row)
        k = row - pair.row_start
        if pair.rows is not None:
            # gap runs live inside differing pairs: scan that pair's row array
            arr = pair.rows.sa if side == "a" else pair.rows.sb
            for i in range(k - 1, -1, -1):
                if arr[i]:
                    return arr[i]
        for p in range(pair.index - 1, -1, -1):
            q = al.pairs[p]
            last = q.last_a if side == "a" else q.last_b
            if last is not None:
                return last
        return 0

    @property
    def cursor(self) -> dict:
        return {s: self.seq_at(s) for s in SIDES}

    def on_gap(self, side: str, row: int | None = None) -> bool:
        if not self.n_rows:
            return False
        r = self.al.row(self.row if row is None else row)
        return (r.seq_a if side == "a" else r.seq_b) is None

    # --- moves --------------------------------------------------------------------------
    def move_row(self, row: int):
        if not self.ready or self.n_rows == 0:
            return None
        row = max(0, min(row, self.n_rows - 1))
        self.row = row
        return row

    def row_step(self, delta: int):
        if not self.ready or not self.n_rows:
            return None
        target = self.row + delta
        if not 0 <= target < self.n_rows:
            if (delta > 0 and self.row == self.n_rows - 1) or (delta < 0 and self.row == 0):
                return None
        return self.move_row(target)

    def step(self, delta: int):
        """The active side's next (+1) or previous (-1) event."""
        if not self.ready or not self.n_rows:
            return None
        side = self.active
        count = self.models[side].count
        here = self.al.row(self.row)
        seq = here.seq_a if side == "a" else here.seq_b
        if seq is None:
            # on a gap of this side: its next event is after the gap, its
            # previous one is the one the gap follows
            before = self._seq_before(side, self.row)
            target = before + 1 if delta > 0 else before
        else:
            target = seq + delta
        if not 1 <= target <= count:
            return None
        return self._move_to_seq(side, target)

    def _move_to_seq(self, side: str, seq: int):
        """To the row showing the side's event seq (or the nearest before)."""
        row = self.al.row_of(side, seq)
        if row is None:
            row = self.al.nearest_row(side, seq)
        return None if row is None else self.move_row(row)

    def next_region(self):
        if not self.ready:
            return None
        reg = self.al.next_region(self.row)
        return None if reg is None else self.move_row(reg.row_start)

    def prev_region(self):
        if not self.ready:
            return None
        # from inside a region, { goes to its start first
        cur = self.al.region_at(self.row)
        if cur is not None and cur.row_start < self.row:
            return self.move_row(cur.row_start)
        reg = self.al.prev_region(self.row)
        return None if reg is None else self.move_row(reg.row_start)

    def _hazard_list(self) -> list:
        if self._hazards is None:
            self._hazards = [h for h in self.rep.hazards if h.row is not None]   # sorted by row
            self._hazard_rows = [h.row for h in self._hazards]
        return self._hazards

    def _hazard_index(self) -> int:
        """Where the cursor is in the hazard list: the index of the finding a
        ]/[ landed on while the cursor has not moved since (two findings may
        start on one row), else a position between entries (-0.5 steps)."""
        if self.current_hazard() is not None:
            assert self._hazard_at is not None       # current_hazard() is the finding at it
            return 2 * self._hazard_at
        hs = self._hazard_list()
        below = bisect_left(self._hazard_rows, self.row)      # findings starting above the cursor
        if below < len(hs) and hs[below].row == self.row:
            return 2 * below
        return 2 * below - 1

    def _hazard_move(self, k: int):
        hs = self._hazard_list()
        if not 0 <= k < len(hs):
            return None
        self.active = hs[k].side
        row = self.move_row(hs[k].row)
        self._hazard_at = k
        return row

    def next_hazard(self):
        if not self.ready:
            return None
        pos = self._hazard_index()
        return self._hazard_move(pos // 2 + 1)

    def prev_hazard(self):
        if not self.ready:
            return None
        pos = self._hazard_index()
        return self._hazard_move((pos + 1) // 2 - 1)

    def hazard_status(self) -> str:
        """'finding 3/10 · only A · stale-context [200, 206)' for the finding
        ]/[ landed on (several can start on one row: the line says which)."""
        h = self.current_hazard()
        if h is None:
            return ""
        assert self._hazard_at is not None
        f = h.finding
        end = f.get("end")
        dev = f.get("rid") or f.get("device")
        return (f"finding {self._hazard_at + 1:,}/{len(self._hazard_list()):,} · only {h.side.upper()} · "
                f"{f.get('kind')}{f' {dev}' if dev else ''} [{f.get('start')}, {'end' if end is None else end})"
                f"   e: its end")

    def window_end(self):
        """To the step that closes the window of the finding ]/[ landed on
        (its side's event ``end``; the last event when it stays open)."""
        h = self.current_hazard()
        if h is None:
            return None
        end = h.finding.get("end")
        count = self.models[h.side].count
        seq = count if end is None else min(int(end), count)
        self.active = h.side
        return self._move_to_seq(h.side, seq)

    def windows(self, side: str) -> list[tuple[int, int]]:
        """[start, end) steps of the findings only this side has (merged,
        sorted; an open window runs to the last event)."""
        if not self.ready:
            return []
        cached = self._windows.get(side)
        if cached is None:
            count = self.models[side].count
            spans = sorted((int(h.finding["start"]), int(h.finding["end"]) if h.finding.get("end") is not None
                            else count + 1)
                           for h in self.rep.hazards
                           if h.side == side and isinstance(h.finding.get("start"), int))
            merged: list = []
            for a, b in spans:
                if merged and a <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], b))
                else:
                    merged.append((a, b))
            cached = self._windows[side] = merged
        return cached

    def current_hazard(self):
        """The finding ]/[ landed on, while the cursor stays on its row."""
        k = self._hazard_at
        hs = self._hazard_list() if self.ready else []
        if k is not None and k < len(hs) and hs[k].row == self.row:
            return hs[k]
        return None

    def switch_side(self) -> str:
        self.active = OTHER[self.active]
        return self.active

    def goto(self, seq: int):
        """The active side's event seq (the row that shows it)."""
        if not self.ready or not self.n_rows:
            return None
        side = self.active
        return self._move_to_seq(side, max(1, min(seq, self.models[side].count)))

    def parse_goto(self, text: str) -> int:
        """'208', '+10', '-5', 'end' on the active side (its events are
        1..count: every row shows an event); ValueError with a message for
        anything else."""
        t = text.strip().lower()
        count = self.models[self.active].count
        here = self.seq_at(self.active)
        if t in ("end", "$"):
            return count
        # The command line's position rule (vtdtrace.positions), a sign
        # making it relative.
        sign, digits = (t[0], t[1:].strip()) if t[:1] in "+-" else ("", t)
        try:
            n = decimal(digits)
        except ValueError as exc:
            raise ValueError(f"not a step: {exc} (a number, +N, -N or end)") from None
        if sign:
            return max(1, min(here + (n if sign == "+" else -n), count))
        if not 1 <= n <= count:
            raise ValueError(f"step {n} is outside 1..{count} of {self.active.upper()}")
        return n

    # --- the state at the cursor ----------------------------------------------------------------
    def attach_sessions(self, sessions: dict) -> None:
        self.sessions = sessions
        self._states.clear()

    def close_sessions(self) -> None:
        sessions, self.sessions = self.sessions, None
        for s in (sessions or {}).values():
            s.close()

    STATES_KEPT = 16

    def cursor_state(self):
        """(seq_a, seq_b, changes): how the two states differ after each
        side's step at the cursor (replay.diff.state_delta), or None while
        the sessions are not open."""
        if self.sessions is None or not self.ready:
            return None
        key = (self.seq_at("a"), self.seq_at("b"))
        return (*key, self.state_changes(*key))

    def state_changes(self, seq_a: int, seq_b: int) -> list:
        """The state difference after A's step seq_a and B's seq_b, kept for
        the last few pairs (idle time prepares where the jump keys go)."""
        key = (seq_a, seq_b)
        changes = self._states.get(key)
        if changes is None:
            from replay.diff.state_delta import state_changes
            assert self.sessions is not None        # the caller checked that they are open
            sa, sb = self.sessions["a"], self.sessions["b"]
            changes = state_changes(sa.state_at(seq_a), sa.view, sb.state_at(seq_b), sb.view)
            self._states[key] = changes
            if len(self._states) > self.STATES_KEPT:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return changes

    def destinations(self) -> list[tuple[int, str]]:
        """(row, active side) where }, {, ] and [ would go from here, the
        cursor left where it is."""
        if not self.ready or not self.n_rows:
            return []
        saved = (self.row, self.active, self._hazard_at)
        out = []
        for move in (self.next_region, self.next_hazard, self.prev_region, self.prev_hazard):
            row = move()
            if row is not None:
                out.append((row, self.active))
            self.row, self.active, self._hazard_at = saved
        return out

    # --- what the row means ----------------------------------------------------------------
    def region_at(self, row: int | None = None):
        return self.al.region_at(self.row if row is None else row) if self.ready else None

    def region_number(self, row: int | None = None) -> tuple[int, int]:
        """(k, n): the cursor is in or after region k (1-based; 0 before the
        first) of n."""
        if not self.ready:
            return 0, 0
        regs = self.al.regions
        row = self.row if row is None else row
        nxt = self.al.next_region(row)
        k = nxt.index if nxt is not None else len(regs)
        return k, len(regs)

    def pair_at(self, row: int | None = None):
        return self.al.pair_at_row(self.row if row is None else row)

    def state_diff_of(self, pair_index: int):
        return self._state_by_pair.get(pair_index) if self._state_by_pair is not None else None

    def hazards_of(self, pair_index: int) -> list:
        return self._hazards_by_pair.get(pair_index, []) if self._hazards_by_pair is not None else []

    def hazard_rows(self) -> list[tuple[int, str]]:
        """(row, side) of every hazard delta with a position."""
        if not self.ready:
            return []
        return [(h.row, h.side) for h in self.rep.hazards if h.row is not None]

    def summary(self) -> str:
        """'DIFFERENT · only-A findings 2, only-B 0, changed 4 · 10 regions'
        (the numbers first: a narrow top bar cuts the end; "changed": windows
        both traces have with other extents, which ]/[ do not visit)."""
        if self.error:
            return "diff failed"
        if not self.ready:
            pct = "" if self.fraction is None else f" {self.fraction * 100:.0f}%"
            return f"{self.phase}…{pct}"
        r = self.rep
        head = "EQUIVALENT" if r.equivalent else "DIFFERENT"
        if r.damaged:
            head += " (damaged input: readable prefixes)"
        bits = [head]
        if r.hazards_available:
            ha = sum(1 for h in r.hazards if h.side == "a")
            changed = len(getattr(r, "changed_hazards", ()))
            bits.append(f"only-A findings {ha:,}, only-B {len(r.hazards) - ha:,}"
                        + (f", changed {changed:,}" if changed else ""))
        n_regions = len(self.al.regions)
        bits.append(f"{n_regions:,} region{'s' if n_regions != 1 else ''}")
        return " · ".join(bits)
