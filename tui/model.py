"""The TUI's model: what the screen shows, computed without a single widget.

memray's split (bloomberg/memray's TUI): this module is pure -- no Textual
import, no threads, no clock -- so every navigation rule is testable without a
terminal.  Widgets only render a ``TraceModel``; the loader worker
(tui/loader.py) fills in the replay session and the findings and posts
messages; the app (tui/app.py) turns keys into model calls.

What the model knows and where it comes from:

* the trace itself, opened with the O(1) reader path (``verify=False``: the
  trailer and the index, no pass over the events), so the first frame never
  waits for whole-trace work.  Event rows are decoded chunk by chunk through
  ``Trace.event`` (an 8-chunk LRU in the reader, plus the row cache of the
  event list);
* the ``ReplaySession`` (replay/session.py): state at any step, the seq
  indexes (events per kind, writes per context entry), the sidecar.  It is
  built or read from the sidecar in the loader worker; until it arrives the
  list is navigable and the state pane says it is being built;
* the findings (replay/hazards/), through ``FindingsView``, which only
  adapts the analysers' interval index to the few questions the screen asks;
* the cursor (a seq; 0 is the platform before any event), the selected
  context entry, the filter, the search text and the bookmarks.

Nothing here decides IOMMU semantics: the state, the owners of a DID and of a
page table, and the findings all come from replay.  The model only decides
navigation (which seq a key goes to) and presentation (row text).
"""

from __future__ import annotations

import os
import re
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replay import render
from replay.hazards.findings import SEVERITY_RANK, Finding, FindingIndex
from replay.jsonout import EventPresenter, RidFilter
from replay.reader import open_trace
from replay.state import func_name
from tracer import schema as S
from vtdtrace.positions import decimal

if TYPE_CHECKING:
    from replay.session import ReplaySession

SEQ_TYPECODE = "Q"
STEP_VIEWS = 16
BOOKMARKS_KEY = "tui/bookmarks"
BOOKMARKS_VERSION = 1


# --- filters --------------------------------------------------------------------------

@dataclass(frozen=True)
class Filter:
    """Show only the events that match every non-empty part."""

    kinds: tuple[str, ...] = ()     # event kinds (any of them)
    func: str = ""                  # substring of the Xen function name
    device: str = ""                # a requester ID / BDF, SSSS:BB:DD.F or BB:DD.F
    text: str = ""                  # substring of the row as displayed

    @property
    def empty(self) -> bool:
        return not (self.kinds or self.func or self.device or self.text)

    def describe(self) -> str:
        parts = []
        if self.kinds:
            parts.append("kind=" + ",".join(self.kinds))
        if self.func:
            parts.append(f"function~{self.func}")
        if self.device:
            parts.append(f"device={self.device}")
        if self.text:
            parts.append(f'text~"{self.text}"')
        return " ".join(parts) or "none"


class FilterError(ValueError):
    pass


def parse_device(text: str):
    """'0000:00:14.0' or '00:14.0' -> (seg, bus, devfn); FilterError otherwise."""
    t = text.strip()
    if t.count(":") == 1:
        t = "0000:" + t
    loc = render.parse_bdf(t)
    if loc is None:
        raise FilterError(f"device {text!r} is not a BDF like 0000:00:14.0")
    return loc


def parse_kinds(text: str) -> tuple[str, ...]:
    names = tuple(k for k in re.split(r"[,\s]+", text.strip()) if k)
    bad = [k for k in names if k not in S.KIND_BY_NAME]
    if bad:
        raise FilterError(f"unknown event kind {bad[0]!r}")
    return names


# --- findings ---------------------------------------------------------------------------

TIMELINE_RESOLUTION = 4096
SCAN_CHUNK = 4096        # events read at a time when looking for one CPU's next event


def finding_dict(f: Finding) -> dict:
    """A finding as the docs/CLI.md#check-json dict the panes read."""
    return f.to_json()


def _rank(f: Finding) -> int:
    return SEVERITY_RANK.get(f.severity, 1)


class FindingsView:
    """The screen's questions about findings.

    ``findings`` are replay.hazards ``Finding`` records (or their
    docs/CLI.md#check-json dicts, read with ``Finding.from_json``);
    ``index`` is the analysers' ``FindingIndex`` of them for "open at step
    n" (logarithmic) and the check order, built here when not given.  Built
    once in the loader thread; kept compact because a long trace has a benign
    stale-context window per reassignment: records stay records (converted
    to dicts only for the few on screen), starts are typed arrays, and the
    timeline reads a histogram of fixed resolution computed here, not the
    findings.

    ``next_start``/``prev_start`` skip benign windows (the ones the operation
    closes itself with its own flush) unless ``benign=True``."""

    def __init__(self, findings, index: FindingIndex | None = None, count: int = 0) -> None:
        if index is None:
            index = FindingIndex(Finding.from_json(f) if isinstance(f, dict) else f for f in findings)
        items = list(index)                  # the analysers' check order
        self.items = items
        self.count = count
        self._index = index
        # columns, extracted once
        starts = [f.start for f in items]
        ends = [f.end for f in items]
        sevs = [f.severity for f in items]
        kinds = [f.kind for f in items]
        rank_of = SEVERITY_RANK.get
        ranks = bytes(min(max(rank_of(sv, 1), 1), 3) for sv in sevs)
        end_max = count + 1
        ends = [end_max if e is None else e for e in ends]
        self.starts = array(SEQ_TYPECODE, starts)
        self._ranks = ranks
        # per lowest severity rank: (indexes, their starts) of the findings
        # at or above it, for ]/[ with a chosen floor
        self._at_least = {}
        for floor in (2, 3):
            idx = [i for i, r in enumerate(ranks) if r >= floor]
            self._at_least[floor] = (array(SEQ_TYPECODE, idx), array(SEQ_TYPECODE, (starts[i] for i in idx)))
        self._cover = {r: self._merge((st, en) for st, en, rk in zip(starts, ends, ranks) if rk == r)
                       for r in (1, 2, 3)}
        self.resolution = max(1, min(TIMELINE_RESOLUTION, count))
        self.counts = self._histogram(self.resolution, starts, ends, ranks)
        self.by_kind: dict[str, int] = {}
        for k in kinds:
            self.by_kind[k] = self.by_kind.get(k, 0) + 1
        self.by_severity: dict[str, int] = {}
        for sv in sevs:
            self.by_severity[sv] = self.by_severity.get(sv, 0) + 1

    def _end(self, f: Finding) -> int:
        return self.count + 1 if f.end is None else f.end

    def __len__(self) -> int:
        return len(self.items)

    def open_at(self, n: int) -> list[dict]:
        """Findings with start <= n < end (end None: open to the end), as dicts."""
        return [finding_dict(f) for f in self._index.open_at(n)]

    def worst_at(self, n: int) -> int:
        """Severity rank of the worst finding open at n (0: none): one bisect
        per rank in the merged windows (asked for every row on screen)."""
        for rank in (3, 2, 1):
            starts, ends = self._cover[rank]
            i = bisect_right(starts, n) - 1
            if i >= 0 and n < ends[i]:
                return rank
        return 0

    @staticmethod
    def _merge(windows) -> tuple:
        """Sorted, merged [start, end) windows as two arrays."""
        starts, ends = array(SEQ_TYPECODE), array(SEQ_TYPECODE)
        for a, b in sorted(windows):
            if b <= a:
                continue
            if ends and a <= ends[-1]:
                if b > ends[-1]:
                    ends[-1] = b
            else:
                starts.append(a)
                ends.append(b)
        return starts, ends

    def next_start(self, n: int, benign: bool = False, min_rank: int | None = None):
        """The first finding starting after step n (as a dict), or None;
        only findings of rank >= ``min_rank`` (default: warnings and
        hazards, or everything with ``benign``)."""
        floor = 1 if benign else (2 if min_rank is None else min_rank)
        if floor <= 1:
            i = bisect_right(self.starts, n)
            return finding_dict(self.items[i]) if i < len(self.items) else None
        idx, starts = self._at_least[min(floor, 3)]
        j = bisect_right(starts, n)
        return finding_dict(self.items[idx[j]]) if j < len(idx) else None

    def prev_start(self, n: int, benign: bool = False, min_rank: int | None = None):
        """The last finding starting before step n (as a dict), or None."""
        floor = 1 if benign else (2 if min_rank is None else min_rank)
        if floor <= 1:
            i = bisect_left(self.starts, n)
            return finding_dict(self.items[i - 1]) if i > 0 else None
        idx, starts = self._at_least[min(floor, 3)]
        j = bisect_left(starts, n)
        return finding_dict(self.items[idx[j - 1]]) if j > 0 else None

    def around(self, n: int, k: int) -> tuple[int, list[dict]]:
        """(index of the first, up to k findings as dicts) around step n."""
        i = bisect_left(self.starts, n)
        lo = max(0, i - k // 2)
        hi = min(len(self.items), lo + k)
        lo = max(0, hi - k)
        return lo, [finding_dict(f) for f in self.items[lo:hi]]

    def _histogram(self, cells: int, starts, ends, ranks) -> dict[int, array]:
        """{severity rank: windows of that rank covering each cell}; cell c
        covers steps [1 + c*count/cells, 1 + (c+1)*count/cells).  Linear in
        findings + cells (a difference array per rank: windows left open to
        the end of the trace span every cell)."""
        total = self.count
        if total <= 0:
            return {r: array("I", bytes(4 * cells)) for r in (1, 2, 3)}
        diffs = {r: [0] * (cells + 1) for r in (1, 2, 3)}
        last_cell = cells - 1
        for start, end, rank in zip(starts, ends, ranks):
            if start < 1:
                start = 1
            last = end - 1 if end - 1 < total else total
            if last < start:
                last = start
            c0 = (start - 1) * cells // total
            c1 = (last - 1) * cells // total
            d = diffs[rank]
            d[c0 if c0 < last_cell else last_cell] += 1
            d[(c1 if c1 < last_cell else last_cell) + 1] -= 1
        counts = {}
        for rank in (1, 2, 3):
            run = 0
            d = diffs[rank]
            cnt = array("I", bytes(4 * cells))
            for c in range(cells):
                run += d[c]
                cnt[c] = run
            counts[rank] = cnt
        return counts

    def buckets(self, width: int, total: int | None = None) -> list[int]:
        """Worst severity rank per timeline cell, from the histogram."""
        return [rank for rank, _ in self.density(width)]

    def density(self, width: int, span: tuple[int, int] | None = None) -> list[tuple[int, int]]:
        """Per timeline cell: (worst severity rank, how many windows of
        that severity cover the cell at most).  The whole trace comes from
        the fixed-resolution histogram; a ``span`` [a, b) of steps (the
        timeline zoomed to an operation) is counted exactly from the
        windows open at ``a`` and those starting inside the span."""
        if width <= 0:
            return []
        if span is not None:
            return self._span_density(width, *span)
        res = self.resolution
        out = []
        c1, c2, c3 = self.counts[1], self.counts[2], self.counts[3]
        for c in range(width):
            a = c * res // width
            b = max((c + 1) * res // width, a + 1)
            if a >= res:
                out.append((0, 0))
                continue
            n3 = max(c3[a:b])
            if n3:
                out.append((3, n3))
                continue
            n2 = max(c2[a:b])
            if n2:
                out.append((2, n2))
                continue
            n1 = max(c1[a:b])
            out.append((1, n1) if n1 else (0, 0))
        return out

    def _span_density(self, width: int, a: int, b: int) -> list[tuple[int, int]]:
        b = max(b, a + 1)
        total = b - a
        windows = [(f.start, self._end(f), _rank(f)) for f in self._index.open_at(a)]
        i = bisect_right(self.starts, a)
        j = bisect_left(self.starts, b)
        windows += [(self.starts[k], self._end(self.items[k]), self._ranks[k]) for k in range(i, j)]
        counts = {r: [0] * (width + 1) for r in (1, 2, 3)}
        for st, en, rk in windows:
            st, en = max(st, a), min(en, b)
            if en <= st:
                continue
            c0 = (st - a) * width // total
            c1 = min((en - 1 - a) * width // total, width - 1)
            d = counts[rk]
            d[c0] += 1
            d[c1 + 1] -= 1
        runs = {r: 0 for r in (1, 2, 3)}
        out = []
        for c in range(width):
            best = (0, 0)
            for r in (1, 2, 3):
                runs[r] += counts[r][c]
                if runs[r] > 0:
                    best = (r, runs[r])
            out.append(best)
        return out


# --- what a step looks like ----------------------------------------------------------------

@dataclass
class StepView:
    """Everything the panes show for one cursor position."""

    seq: int
    count: int
    show: dict                      # render.show_dict: docs/CLI.md#show-json
    op_text: str
    rollback: int
    stacks: dict                    # cpu -> [function names], outermost first
    translation: frozenset          # IOMMU ids with DMA remapping on
    open_findings: list = field(default_factory=list)
    key: tuple = ()                 # (seq, findings identity): what the view depends on
    rmrr: frozenset = frozenset()   # RIDs of RMRR devices (the platform's RMRR list, from the header)


# --- the model -----------------------------------------------------------------------------

class TraceModel:
    """One trace as the TUI sees it.  Raises reader.NotATrace on open."""

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self.trace = open_trace(self.path, verify=False)
        self.header = self.trace.header if isinstance(self.trace.header, dict) else {}
        self.schema = self.trace.schema
        self.presenter = EventPresenter(self.schema, self.header)
        self.view = render.PlatformView(self.header)
        self.rmrr_rids = self._rmrr_rids()
        self.count = self.trace.count
        self.stop = self.trace.stop
        self.session: ReplaySession | None = None
        self._shared = False
        self._views: OrderedDict = OrderedDict()
        self.findings: FindingsView | None = None
        self.load_error: str | None = None
        self.cursor = 0
        self.selected: tuple[int, int, int] | None = None
        self.filter = Filter()
        self.filter_seqs: array | None = None    # matching seqs (sorted) while a filter is on
        self.search_text = ""
        self.min_rank = 2                # ]/[ stop at findings of this severity rank or worse
        self.zoom: tuple[int, int] | None = None   # the timeline's span of steps, None: the whole trace
        self.bookmarks: dict[int, str] = {}
        self.follow_cpu: int | None = None   # c: n/p step through this CPU's events only
        self._by_name = {k.name: k.code for k in self.schema.kinds}
        self._k_call = self._by_name.get("call")
        self._k_return = self._by_name.get("return")
        self._k_op_begin = self._by_name.get("op-begin")
        self._k_op_end = self._by_name.get("op-end")
        self._k_entry = {self._by_name.get(n) for n in ("ctx-write", "cache-sync")} - {None}
        self._k_flush_ctx = self._by_name.get("flush-context")

    # --- header facts -----------------------------------------------------------------
    @property
    def engine(self) -> str:
        eng = self.header.get("engine")
        if not isinstance(eng, dict):
            eng = {}
        name = str(eng.get("name", "?"))
        if eng.get("cx16") is False:
            name += " (no cx16)"
        return name

    @property
    def scenario(self) -> str:
        sc = self.header.get("scenario")
        if isinstance(sc, dict) and isinstance(sc.get("name"), str):
            return sc["name"]
        return "?"

    def _rmrr_rids(self) -> frozenset:
        """The devices the platform's RMRRs name (header ``platform.rmrrs``),
        as the state pane writes RIDs; a malformed header gives none."""
        plat = self.header.get("platform")
        rids = set()
        for r in (plat.get("rmrrs") if isinstance(plat, dict) else None) or ():
            if isinstance(r, dict):
                for d in r.get("devices") or ():
                    if isinstance(d, str):
                        loc = render.parse_bdf(d if d.count(":") == 2 else "0000:" + d)
                        if loc is not None:
                            rids.add(render.fmt_rid(*loc))
        return frozenset(rids)

    @property
    def complete(self) -> bool:
        return self.stop is None

    def integrity(self) -> str:
        if self.stop is None:
            return "complete" if self.session is not None else "trailer ok"
        return "damaged"

    def damage_text(self) -> str | None:
        if self.stop is None:
            return None
        return (f"damaged trace: {self.stop.describe()} -- showing the readable prefix, "
                f"{self.count:,} events")

    # --- the session and the findings arrive -------------------------------------------
    def attach_session(self, session) -> None:
        """The loader built (or read) the index: the readable part is now
        exactly known (a corrupt chunk found while folding shortens it)."""
        self.session = session
        self._shared = bool(self.schema.is_current)
        self._views.clear()
        if session.count < self.count or session.stop is not None:
            self.count = session.count
            self.stop = session.stop
        self.cursor = min(self.cursor, self.count)

    def attach_findings(self, findings: FindingsView) -> None:
        self.findings = findings

    # --- events and rows --------------------------------------------------------------------
    def event(self, seq: int):
        """Event seq as stored (the trace's own codes), or None when it is
        not readable.  Once the session is there and the trace uses this
        build's codes, events come through the session's chunk cache, which
        state_at uses too: a jump decodes its chunk once, not twice."""
        if not 1 <= seq <= self.count:
            return None
        try:
            if self._shared:
                return self._live().event(seq)
            return self.trace.event(seq)
        except IndexError:
            return None

    def events(self, start: int, stop: int):
        """Events start <= seq < stop, chunk by chunk (UI thread only)."""
        if self._shared:
            return self._live().events(start, stop)
        return self.trace.events(start, stop)

    def kind_name(self, ev) -> str:
        k = ev[0]
        return self.schema.kinds[k].name if isinstance(k, int) and 0 <= k < len(self.schema.kinds) else "?"

    def row_fields(self, ev) -> tuple:
        """(seq, cpu, op, label, func, kind, args) as display strings; the
        cpu of a device's DMA (-1) is ``dev``."""
        return (str(ev[1]), "dev" if ev[2] == -1 else str(ev[2]), str(ev[3]), str(ev[5] or ""),
                str(self.presenter.func_name(ev[4]) or ""), self.kind_name(ev),
                self.presenter.text_args(ev))

    def row_text(self, ev) -> str:
        return " ".join(x for x in self.row_fields(ev) if x)

    def entry_of(self, ev):
        """The context entry (iommu, bus, devfn) an event addresses, or None."""
        # (the trace's own kind codes; decoding checked the event's fields)
        k = ev[S.I_KIND]
        if k in self._k_entry:
            return (ev[S.F_CTX_WRITE_IOMMU], ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN])
        if k == self._k_flush_ctx and ev[S.F_FLUSH_CONTEXT_GRAN] == "device":
            sid = ev[S.F_FLUSH_CONTEXT_SID]
            return (ev[S.F_FLUSH_CONTEXT_IOMMU], sid >> 8, sid & 0xFF)
        return None

    # --- rows of the list (the filter maps rows to seqs) --------------------------------------
    def row_count(self) -> int:
        if self.filter_seqs is not None:
            return len(self.filter_seqs)
        return self.count + 1          # row 0: the platform before any event

    def seq_at_row(self, row: int) -> int:
        if self.filter_seqs is not None:
            return self.filter_seqs[row]
        return row

    def row_of_seq(self, seq: int) -> int:
        """The row showing seq; with a filter, the first matching row at or
        after it (the cursor may sit on an event the filter hides)."""
        if self.filter_seqs is not None:
            i = bisect_left(self.filter_seqs, seq)
            return min(i, max(len(self.filter_seqs) - 1, 0))
        return seq

    # --- cursor moves: each returns the new cursor (or None when there is nowhere to go) -------
    def move_to(self, seq: int) -> int:
        seq = max(0, min(seq, self.count))
        self.cursor = seq
        self.selected = self.selection_at(seq)
        return seq

    def selection_at(self, seq: int):
        """The context entry selected once the cursor is at seq: the one the
        event addresses, else the current selection."""
        ev = self.event(seq)
        key = self.entry_of(ev) if ev is not None else None
        return key if key is not None else self.selected

    def step(self, delta: int):
        """n/p: the next/previous event (the next/previous matching one under
        a filter; of the followed CPU only while one is followed)."""
        if self.follow_cpu is not None:
            return self._step_cpu(delta, self.follow_cpu)
        if self.filter_seqs is not None:
            seqs = self.filter_seqs
            if delta > 0:
                i = bisect_right(seqs, self.cursor) + delta - 1
                if i >= len(seqs):
                    return None
            else:
                i = bisect_left(seqs, self.cursor) + delta
                if i < 0:
                    return None
            return self.move_to(seqs[i])
        target = self.cursor + delta
        if not 0 <= target <= self.count:
            return None
        return self.move_to(target)

    # --- several CPUs ------------------------------------------------------------------------
    @property
    def cpus(self) -> int:
        """How many CPUs the recording ran on (header ``schedule``)."""
        return self.view.cpus

    def cpu_at(self, seq: int) -> int:
        """The CPU whose events o/u stay on from step seq: the followed one,
        else the CPU of the event at seq (step 0 and a device's DMA: CPU 0's
        ops are the listing's first)."""
        if self.follow_cpu is not None:
            return self.follow_cpu
        ev = self.event(seq) if seq > 0 else None
        cpu = ev[2] if ev is not None else 0
        return cpu if isinstance(cpu, int) and cpu >= 0 else 0

    def _next_on_cpu(self, after: int, cpu: int):
        """The first event of cpu after step ``after`` (None: none readable)."""
        start = after + 1
        while start <= self.count:
            stop = min(start + SCAN_CHUNK, self.count + 1)
            for ev in self.events(start, stop):
                if ev[2] == cpu:
                    return ev
            start = stop
        return None

    def _prev_on_cpu(self, before: int, cpu: int):
        stop = before
        while stop > 1:
            start = max(1, stop - SCAN_CHUNK)
            for ev in reversed(list(self.events(start, stop))):
                if ev[2] == cpu:
                    return ev
            stop = start
        return None

    def _step_cpu(self, delta: int, cpu: int):
        """n/p while following a CPU: its next/previous event (matching the
        filter when one is on)."""
        ok = self.filter_predicate(self.filter) if self.filter_seqs is not None else None
        seq = self.cursor
        for _ in range(abs(delta)):
            while True:
                ev = self._next_on_cpu(seq, cpu) if delta > 0 else self._prev_on_cpu(seq, cpu)
                if ev is None:
                    return None
                seq = ev[1]
                if ok is None or ok(ev):
                    break
        return self.move_to(seq)

    def toggle_follow(self) -> int | None:
        """c: follow the CPU of the event under the cursor (n/p, o, u stay on
        its events); again: stop.  Returns the CPU followed now."""
        if self.follow_cpu is not None:
            self.follow_cpu = None
        else:
            self.follow_cpu = self.cpu_at(self.cursor)
        return self.follow_cpu

    def _matching_return(self, after: int, cpu) -> int | None:
        """The first return at depth 0 on cpu after step ``after`` (calls and
        returns balance in between), or the op-end that closes cpu's
        operation, or None at the end of the readable trace.  Other CPUs'
        events in between are passed over."""
        depth = 0
        kc, kr, ke = self._k_call, self._k_return, self._k_op_end
        for ev in self.events(after + 1, self.count + 1):
            if ev[2] != cpu:
                continue
            k = ev[0]
            if k == ke:
                return ev[1]
            if k == kc:
                depth += 1
            elif k == kr:
                if depth == 0:
                    return ev[1]
                depth -= 1
        return None

    def step_over(self):
        """o: the next event of the current CPU (cpu_at: one CPU, the next
        event); when it is a call, the matching return (the whole call in
        one step); when it begins an operation, its op-end."""
        cpu = self.cpu_at(self.cursor)
        if self.cpus > 1 or self.follow_cpu is not None:
            ev = self._next_on_cpu(self.cursor, cpu)
        else:
            ev = self.event(self.cursor + 1)
        if ev is None:
            return None
        nxt = ev[1]
        if ev[0] == self._k_call:
            target = self._matching_return(nxt, ev[2])
        elif ev[0] == self._k_op_begin:
            target = self._op_end_after(nxt, ev[3])
        else:
            target = nxt
        return self.move_to(target if target is not None else self.count)

    def step_out(self):
        """u: to the return of the function the cursor is in (the innermost
        frame after the cursor's event); at top level, to the op-end of the
        current operation."""
        ev = self.event(self.cursor)
        cpu = self.cpu_at(self.cursor)
        if ev is not None and ev[0] == self._k_op_end and ev[2] == cpu:
            return None if self.cursor >= self.count else self.step_over()
        target = self._matching_return(self.cursor, cpu)
        if target is None:
            return None
        return self.move_to(target)

    def _op_end_after(self, seq: int, op=None):
        """The op-end of operation ``op`` (any operation's when None) after
        seq: with several CPUs the next op-end may be another CPU's."""
        if self.session is not None and self._k_op_end is not None:
            nxt = self.session.next_of_kind("op-end", seq)
            while nxt is not None and nxt <= self.count:
                ev = self.event(nxt)
                if op is None or ev is None or ev[3] == op:
                    return nxt
                nxt = self.session.next_of_kind("op-end", nxt)
        for ev in self.events(seq + 1, self.count + 1):
            if ev[0] == self._k_op_end and (op is None or ev[3] == op):
                return ev[1]
        return None

    def next_finding(self, benign: bool = False):
        """]: the step that opens the next finding (benign windows only with
        ``benign``: a long trace has one per reassignment)."""
        if self.findings is None:
            return None
        f = self.findings.next_start(self.cursor, benign, self.min_rank)
        return None if f is None or f["start"] > self.count else self.move_to(f["start"])

    def prev_finding(self, benign: bool = False):
        """[: the step that opens the previous finding."""
        if self.findings is None:
            return None
        f = self.findings.prev_start(self.cursor, benign, self.min_rank)
        return None if f is None else self.move_to(f["start"])

    def op_span(self, seq: int | None = None):
        """[op-begin, op-end + 1) of the operation step seq lies in (default:
        the cursor), from the session's kind index; None outside any
        operation or before the index is built."""
        s = self.session
        seq = self.cursor if seq is None else seq
        if s is None or seq < 1:
            return None
        begins = s.kinds.seqs(s.kind_code("op-begin"))
        ends = s.kinds.seqs(s.kind_code("op-end"))
        if not begins:
            return None
        i = bisect_right(begins, seq) - 1
        if i < 0:
            return None
        b = begins[i]
        j = bisect_left(ends, b) if ends else 0
        e = ends[j] if ends is not None and j < len(ends) else self.count
        if e < seq:
            return None
        return (b, min(e, self.count) + 1)

    def next_write(self):
        """w: the next ctx-write of the selected context entry."""
        if self.session is None or self.selected is None:
            return None
        nxt = self.session.next_ctx_write(*self.selected, self.cursor)
        return None if nxt is None or nxt > self.count else self.move_to(nxt)

    def prev_write(self):
        """W: the previous ctx-write of the selected context entry."""
        if self.session is None or self.selected is None:
            return None
        prv = self.session.prev_ctx_write(*self.selected, self.cursor)
        return None if prv is None else self.move_to(prv)

    def parse_goto(self, text: str) -> int:
        """'N', '+N', '-N', 'end'/'$', 'op N' -> a seq; ValueError with a message."""
        t = text.strip().lower()
        if t in ("end", "$", "last"):
            return self.count
        if t in ("start", "^", "0"):
            return 0
        m = re.fullmatch(r"op\s*(\d+)", t)
        if m:
            want = int(m.group(1))
            seq = self._op_begin_seq(want)
            if seq is None:
                raise ValueError(f"no operation {want} in the readable trace")
            return seq
        # The command line's position rule (vtdtrace.positions): decimal
        # digits, leading zeros allowed; no hex, no 1_0.  A sign makes the
        # step relative to the cursor.
        sign, digits = (t[0], t[1:].strip()) if t[:1] in "+-" and t else ("", t)
        try:
            n = decimal(digits)
        except ValueError as exc:
            raise ValueError(f"{exc} (try 200, +10, -5, op 1, end)") from None
        if sign == "+":
            n = self.cursor + n
        elif sign == "-":
            n = self.cursor - n
        if not 0 <= n <= self.count:
            raise ValueError(f"step {n} is outside 0..{self.count}")
        return n

    def _op_begin_seq(self, op: int):
        if self.session is not None:
            arr = self.session.kinds.seqs(self.session.kind_code("op-begin"))
            if arr is not None and 0 <= op < len(arr) and arr[op] <= self.count:
                ev = self.event(arr[op])
                if ev is not None and ev[3] == op:
                    return arr[op]
        for ev in self.events(1, self.count + 1):
            if ev[0] == self._k_op_begin and ev[3] == op:
                return ev[1]
        return None

    # --- the state at the cursor -------------------------------------------------------------
    def step_view(self, seq: int | None = None) -> StepView | None:
        """The panes' content for step seq (default: the cursor); None until
        the session is loaded.  Kept in a small LRU: stepping back and forth
        and the prefetched destination of ]/[ cost nothing."""
        s = self.session
        if s is None:
            return None
        seq = self.cursor if seq is None else seq
        key = (seq, id(self.findings))
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        view = self._step_view(seq)
        self._views[key] = view
        if len(self._views) > STEP_VIEWS:
            self._views.popitem(last=False)
        return view

    def prefetch(self) -> list[int]:
        """Idle work after a move: the step views of where ]/[ and w/W would
        go, then the replay state re-seated at the cursor (so n/p stay
        one-event folds).  Returns the seqs prepared."""
        if self.session is None:
            return []
        targets = []
        if self.findings is not None:
            for f in (self.findings.next_start(self.cursor, min_rank=self.min_rank),
                      self.findings.prev_start(self.cursor, min_rank=self.min_rank)):
                if f is not None:
                    targets.append(f["start"])
        if self.selected is not None:
            targets.append(self.session.prev_ctx_write(*self.selected, self.cursor))
            targets.append(self.session.next_ctx_write(*self.selected, self.cursor))
        done, computed = [], False
        for seq in targets:
            if seq is None or not 0 <= seq <= self.count or seq in done:
                continue
            computed |= (seq, id(self.findings)) not in self._views
            self.step_view(seq)
            done.append(seq)
        if computed:
            self.session.state_at(self.cursor)
        return done

    def prefetch_step(self, seq: int) -> bool:
        """Idle work while a go-to is typed: the step view of seq, then the
        replay state re-seated at the cursor (as prefetch()).  False when
        there is nothing to prepare (no session yet, seq out of range)."""
        if self.session is None or not 0 <= seq <= self.count:
            return False
        if (seq, id(self.findings)) not in self._views:
            self.step_view(seq)
            self.session.state_at(self.cursor)
        return True

    def _live(self) -> ReplaySession:
        """The attached session (what needs it runs only once it is)."""
        assert self.session is not None
        return self.session

    def _step_view(self, seq: int) -> StepView:
        s = self._live()
        st: Any      # a ReplayState, whose tables its __slots__ declare
        try:
            st = s.state_at(seq)
        except IndexError:
            # A chunk failed its CRC although the sidecar vouched for the
            # file: the session replayed the readable part again and it is
            # shorter now (replay.session).  Show its end, say it is damaged.
            if s.count >= self.count:
                raise
            st = s.state_at(s.count)
            seq = s.count
        if s.count < self.count or (s.stop is not None and self.stop is None):
            self.count, self.stop = s.count, s.stop
            self.cursor = min(self.cursor, self.count)
        open_f = self.findings.open_at(seq) if self.findings is not None else []
        show = render.show_dict(st, s.view, open_f)
        stacks = {cpu: [func_name(f) for f in st.stack(cpu)] for cpu in sorted(st.stacks)}
        # several CPUs: "the operation" is the one of the event's CPU
        cpu = st.cpu if len(show["cpus"]) > 1 and isinstance(st.cpu, int) and st.cpu >= 0 else None
        return StepView(seq=seq, count=self.count, show=show, op_text=render.op_text(st, s.view, cpu),
                        rollback=st.rollback, stacks=stacks, translation=frozenset(st.translation),
                        open_findings=open_f, key=(seq, self.count, id(self.findings)), rmrr=self.rmrr_rids)

    # --- search -------------------------------------------------------------------------------
    def reader(self):
        """A second reader on the same file for worker threads (the reader's
        chunk cache is not shared across threads)."""
        return open_trace(self.path, verify=False)

    def search_iter(self, text: str, start: int, forward: bool = True, chunk: int = 4096,
                    trace=None):
        """Scan for the first event whose row text contains ``text``
        (case-insensitive) after (before) step ``start``.  A generator: it
        yields ("progress", scanned) every ``chunk`` events so a worker can
        report and be cancelled, and finally ("found", seq) or ("none", None)."""
        needle = text.lower()
        total = self.count
        tr = trace if trace is not None else self.trace
        if forward:
            pos = start + 1
            while pos <= total:
                stop = min(pos + chunk, total + 1)
                for ev in tr.events(pos, stop):
                    if needle in self.row_text(ev).lower():
                        yield ("found", ev[1])
                        return
                pos = stop
                yield ("progress", pos - start - 1)
        else:
            pos = start - 1
            while pos >= 1:
                lo = max(1, pos - chunk + 1)
                evs = list(tr.events(lo, pos + 1))
                for ev in reversed(evs):
                    if needle in self.row_text(ev).lower():
                        yield ("found", ev[1])
                        return
                pos = lo - 1
                yield ("progress", start - 1 - pos)
        yield ("none", None)

    # --- filter ---------------------------------------------------------------------------------
    def filter_predicate(self, flt: Filter):
        """A function event -> bool for flt (FilterError on bad input)."""
        tests: list[Callable[[Any], bool]] = []
        if flt.kinds:
            kinds = frozenset(self._by_name[k] for k in flt.kinds if k in self._by_name)
            tests.append(lambda ev: ev[S.I_KIND] in kinds)
        if flt.func:
            fsub = flt.func.lower()
            funcs = frozenset(i for i, name in enumerate(self.schema.funcs) if fsub in name.lower())
            tests.append(lambda ev: ev[S.I_FUNC] in funcs)
        if flt.device:
            seg, bus, devfn = parse_device(flt.device)
            rf = RidFilter(self.presenter, seg, bus, devfn)
            tests.append(rf)
        if flt.text:
            tsub = flt.text.lower()
            tests.append(lambda ev: tsub in self.row_text(ev).lower())
        if not tests:
            return lambda ev: True
        if len(tests) == 1:
            return tests[0]
        return lambda ev: all(t(ev) for t in tests)

    def filter_iter(self, flt: Filter, chunk: int = 16384, trace=None):
        """The seqs matching flt, in batches: yields (scanned, [seqs]).
        A kind-only filter over one kind is answered from the session's
        kind index in one batch."""
        if (self.session is not None and flt.kinds and not (flt.func or flt.device or flt.text)
                and self.schema.is_current):
            arrays = [self.session.kinds.seqs(self.session.kind_code(k)) for k in flt.kinds]
            arrays = [a for a in arrays if a]
            if len(arrays) <= 1:
                seqs = [s for s in (arrays[0] if arrays else ()) if s <= self.count]
                yield (self.count, seqs)
                return
        pred = self.filter_predicate(flt)
        tr = trace if trace is not None else self.trace
        pos = 1
        total = self.count
        while pos <= total:
            stop = min(pos + chunk, total + 1)
            yield (stop - 1, [ev[1] for ev in tr.events(pos, stop) if pred(ev)])
            pos = stop

    def begin_filter(self, flt: Filter) -> None:
        self.filter_predicate(flt)          # validate before anything changes
        self.filter = flt
        self.filter_seqs = None if flt.empty else array(SEQ_TYPECODE)

    def add_filter_matches(self, seqs) -> None:
        if self.filter_seqs is not None:
            self.filter_seqs.extend(seqs)

    def clear_filter(self) -> None:
        self.begin_filter(Filter())

    # --- bookmarks ------------------------------------------------------------------------------
    def bookmark_note(self, seq: int) -> str:
        ev = self.event(seq)
        if ev is None:
            return "platform before any event" if seq == 0 else ""
        f = self.row_fields(ev)
        return " ".join(x for x in (f[3], f[4], f[5]) if x)

    def toggle_bookmark(self, seq: int | None = None) -> bool:
        """m: set (True) or clear (False) a bookmark at seq (default: the cursor)."""
        seq = self.cursor if seq is None else seq
        if seq in self.bookmarks:
            del self.bookmarks[seq]
            return False
        self.bookmarks[seq] = self.bookmark_note(seq)
        return True

    def bookmarks_sorted(self) -> list[tuple[int, str]]:
        return sorted(self.bookmarks.items())

    def bookmarks_payload(self) -> dict:
        return {"v": BOOKMARKS_VERSION, "marks": [[s, n] for s, n in self.bookmarks_sorted()]}

    def load_bookmarks(self, payload) -> None:
        """Merge bookmarks stored in the sidecar (untrusted: checked)."""
        if not isinstance(payload, dict) or payload.get("v") != BOOKMARKS_VERSION:
            return
        for item in payload.get("marks") or ():
            try:
                seq, note = item
            except (TypeError, ValueError):
                continue
            if type(seq) is int and 0 <= seq <= self.count and isinstance(note, str):
                self.bookmarks.setdefault(seq, note[:200])

    def close(self) -> None:
        try:
            if self.session is not None:
                self.session.close()
        finally:
            self.trace.close()
