"""The streaming pass: one pass over two traces that builds the DiffReport.

``diff_streams(a, b)`` walks both traces op group by op group (align.py),
aligns what differs, folds each trace's state alongside and compares the
states at every aligned operation boundary (state_tracker.py), then matches
the two traces' hazard findings (hazard_match.py, hazard_pairs.py).  It
takes a header and an event stream per side (inputs.py ``Side``), so tests
and other tools can diff event lists directly; files.py opens traces.

Input contract: events are this build's event arrays ``[kind, seq, cpu, op,
func, label, *fields]`` with int prefix fields and a str label -- what the
reader yields (every event checked against the catalogue as it is decoded,
replay/validate.py, then rewritten to this build's codes, replay/codes.py)
and what the engine records.  A kind this build does not know has the code
``len(KINDS)`` and is compared field by field like any other.

Cost: while the traces agree, the *lockstep lane* compares the next slice
of each trace as whole lists (C speed, modulo a constant seq/op shift), a
chunk byte-identical to the other trace's is decoded once for both, and
only one state is folded -- none at all when A's checkpoints are cached in
its sidecar (its state is then fetched at the first difference).  From the
operation holding a mismatch on, the *alignment lane* pairs op groups,
aligns differing ones by call/lock structure and folds both states,
comparing them at every boundary, until a pair is identical again.  While
the states differ over identical stretches both are folded and compared at
the end of each slice.  Findings: the hazard analysers run inside the pass
when the sidecar does not hold them (no second decode).  Memory: one chunk
and one operation per side plus the look-ahead, the op pair table, and the
rows of differing operations (their events up to DETAIL_ROWS).
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from operator import itemgetter
from typing import Any

from tracer.schema import FUNCS, I_CPU, I_FUNC, I_KIND, I_LABEL, I_OP, I_SEQ, K_OP_BEGIN

from ..codes import Event
from ..jsonout import EventPresenter
from ..reader import current_schema
from ..render import PlatformView
from .align import (
    ARGS,
    C_SAME,
    CLASSES,
    MAX_GROUP_EVENTS,
    ONLY_A,
    ONLY_B,
    SAME,
    Alignment,
    EventStream,
    OpGroup,
    OpPair,
    Pairer,
    align_ops,
    group_key,
    groups_equal,
    kind_name,
    last_op_start,
    op_delta,
    slice_mismatch,
)
from .hazard_match import hazard_delta
from .hazard_pairs import pair_changed
from .header import header_diff
from .inputs import Side
from .report import DiffReport, StateDiff
from .state_tracker import StateTracker

Progress = Callable[[int, int | None], None]
Presenters = tuple[EventPresenter, EventPresenter]

CONTEXT_EVENTS = 3
# Detail kept for the report: events of at most this many differing rows
# (over all pairs) are kept for rendering; counts are always exact.
DETAIL_ROWS = 20_000


def diff_streams(a: Side, b: Side, *, context: int = CONTEXT_EVENTS, detail_rows: int = DETAIL_ROWS,
                 window: int | None = None, progress: Progress | None = None) -> DiffReport:
    """Compare two traces given as Sides, in one streaming pass over both.

    ``progress(done, total)``, if given, is called every few thousand events
    with the number of A's events read and A's event count (None when
    unknown); an exception it raises aborts the diff (a TUI's cancel)."""
    return _Pass(a, b, context, detail_rows, window, progress).run()


_getkind = itemgetter(I_KIND)


class _Pass:
    """The two lanes of the pass.

    *Lockstep lane* (while the traces agree and their states are equal):
    compare the next slice of each trace as whole lists (C speed, modulo a
    constant seq/op shift), fold, move on.  Events of the operation in
    progress are held back (``pend_*``) until it is known to be identical,
    so runs cover whole operations.  *Alignment lane* (from the operation
    holding a mismatch on): op groups paired by the Pairer, differing pairs
    aligned by call/lock structure, states compared at every boundary --
    until a pair is identical again with equal states and nothing queued."""

    def __init__(self, a: Side, b: Side, context: int, detail_rows: int, window: int | None,
                 progress: Progress | None = None) -> None:
        self.a, self.b = a, b
        self.context = context
        self.va, self.vb = PlatformView(a.header), PlatformView(b.header)
        self.tracker = StateTracker(a.header, b.header, self.va, self.vb, a.analysis, b.analysis, a.state_at)
        self.al = Alignment()
        self.first: dict[str, Any] | None = None
        # Two recordings of one scenario under other schedules (header
        # ``schedule``) agree event for event up to the first choice they
        # took differently: the two events there are the race, what each
        # trace ran next (see _race).
        ha, hb = a.header, b.header
        self.schedules_differ = (isinstance(ha, dict) and isinstance(hb, dict)
                                 and ha.get("schedule") != hb.get("schedule"))
        self.race: dict[str, Any] | None = None
        self.tail: deque[tuple[Event, Event]] = deque(maxlen=max(context, 1))
        self.budget = detail_rows
        self.truncated = False
        self.differing = self.renumbered = 0
        self.state_diffs: list[Any] = []
        self.last_reported: list[Any] = []
        # The events are in this build's codes (replay.codes), whatever
        # catalogue each trace was written with: present them with this
        # build's (the header names domains and devices).
        schema = current_schema()
        self.pres = (EventPresenter(schema, a.header), EventPresenter(schema, b.header))
        self.seen = [0, 0]      # last seq consumed per side
        self.sa, self.sb = EventStream(a.chunks), EventStream(b.chunks)
        self.pairer = Pairer(self.sa, self.sb, **({} if window is None else {"window": window}))
        self.pend_a: list[Any] = []
        self.pend_b: list[Any] = []
        self.pend_start = 0     # where the operation in progress begins in pend_*
        self.progress = progress
        self._total = a.trace.count if a.trace is not None else None
        self._next_report = 0

    # -- driver -------------------------------------------------------------------------
    def run(self) -> DiffReport:
        gc_was = gc.isenabled()
        gc.disable()
        try:
            fast = True
            while True:
                if self.progress is not None and self.sa.loaded >= self._next_report:
                    self._next_report = self.sa.loaded + 16384
                    self.progress(self.sa.loaded, self._total)
                if fast:
                    if self._lockstep():
                        continue
                    fast = False
                pair = self.pairer.next()
                if pair is None:
                    break
                same = self._pair(*pair)
                fast = same and self.pairer.idle()
            # matching 10^5 findings allocates enough to set off collections
            # that would walk everything the pass holds, for no garbage
            return self._report()
        finally:
            if gc_was:
                gc.enable()

    # -- the lockstep lane ----------------------------------------------------------------
    def _lockstep(self) -> bool:
        """One slice; False when the alignment lane must take over."""
        sa, sb = self.sa, self.sb
        if sb.src is not None and sb.at_chunk_end():
            sb.adopt_from(sa)
        na, nb = sa.available(), sb.available()
        if not na or not nb:
            if not na and not nb:
                self._commit(len(self.pend_a))          # both ended: the last op is whole
                return False
            self._handover()
            return False
        n = min(na, nb)
        xa, xb = sa.peek(n), sb.peek(n)
        m = slice_mismatch(xa, xb)
        sa.advance(m)
        sb.advance(m)
        pa, pb = self.pend_a, self.pend_b
        lo = len(pa)
        if m == n:
            pa.extend(xa)
            pb.extend(xb)
        else:
            pa.extend(xa[:m])
            pb.extend(xb[:m])
        self.pend_start = last_op_start(pa, lo, self.pend_start)
        if m < n:
            if self.race is None and self.first is None and self.schedules_differ:
                self.race = _race(self.pres, xa[m], xb[m])
            self._commit(self.pend_start)
            self._handover()
            return False
        if self.pend_start:
            self._commit(self.pend_start)
        elif len(pa) >= MAX_GROUP_EVENTS:
            # one huge operation: commit it in parts, the rest continues it
            op = pa[0][I_OP]
            self._commit(len(pa))
            self.sa.mark_continued(op, 1)
            self.sb.mark_continued(op, 1)
        return True

    def _handover(self) -> None:
        """The operation in progress goes to the alignment lane."""
        if self.pend_a:
            self.sa.pushback = self.pend_a
            self.sb.pushback = self.pend_b
            self.pend_a, self.pend_b = [], []
        self.pend_start = 0

    def _commit(self, k: int) -> None:
        """pend_*[:k] are whole operations, identical in both traces."""
        if k <= 0:
            return
        pa, pb = self.pend_a, self.pend_b
        ea, eb = (pa, pb) if k == len(pa) else (pa[:k], pb[:k])
        first_a, first_b = ea[0][I_SEQ], eb[0][I_SEQ]
        op_a, op_b = ea[0][I_OP], eb[0][I_OP]
        n_ops = list(map(_getkind, ea)).count(K_OP_BEGIN) or 1
        dop = op_delta(op_a, op_b)
        self.al.add_same(first_a, first_b, k, op_a, op_b, group_key(ea[0]), n_ops, dop)
        if dop:
            self.renumbered += n_ops
            if self.first is None:
                self.first = {"seq_a": first_a, "seq_b": first_b, "class": "args", "op_a": op_a, "op_b": op_b,
                              "context": _context(self.tail, self.pres, self.context), "fields": ["op"]}
        if self.first is None and self.context:
            self.tail.extend(zip(ea[-self.context:], eb[-self.context:]))
        before_a = self.seen[0]
        self.seen[0] = first_a + k - 1
        self.seen[1] = first_b + k - 1
        tr = self.tracker
        if tr.feed(ea, eb, True, before_a):
            # states differ: fold both (done), compare at the end of the run
            if tr.update(ea, None):
                last_op = _last_op_begin(ea)
                self._state_boundary(len(self.al.pairs) - 1, ea[-1][I_OP], eb[-1][I_OP],
                                     group_key(last_op) if last_op is not None else None)
            tr.converged()
        if k == len(pa):
            self.pend_a, self.pend_b = [], []
        else:
            del pa[:k]
            del pb[:k]
        self.pend_start = 0

    # -- the alignment lane ---------------------------------------------------------------
    def _pair(self, ga: OpGroup | None, gb: OpGroup | None) -> bool:
        """Record one aligned pair; True when it is identical."""
        before_a = self.seen[0]
        ea = ga.events if ga is not None else []
        eb = gb.events if gb is not None else []
        same = ga is not None and gb is not None and groups_equal(ea, eb)
        ctx = self.context
        if same:
            pair = OpPair(0, ga, gb, SAME)
            self.al.add(pair)
            if pair.op_a != pair.op_b:
                self.renumbered += 1
                if self.first is None:
                    self.first = _first_renumbered(pair, ea, eb, self.tail, self.pres, ctx)
            if self.first is None and ctx:
                self.tail.extend(zip(ea[-ctx:], eb[-ctx:]))
        else:
            status = "different" if (ga is not None and gb is not None) else (ONLY_A if gb is None else ONLY_B)
            pair = OpPair(0, ga, gb, status)
            pair.rows = align_ops(ga, gb)
            if all(c == C_SAME for c in pair.rows.cls):
                # equal payloads that groups_equal could not prove (irregular seqs)
                pair.status = SAME
            else:
                self.differing += 1
            self.al.add(pair)
            if pair.status != SAME:
                if self.budget > 0:
                    pair.keep_events(ea, eb)
                    self.budget -= len(pair.rows)
                else:
                    self.truncated = True
                if self.first is None:
                    self.first = _first_from_rows(pair, ea, eb, self.tail, self.pres, ctx, self.seen)
            if self.first is None and ctx:
                self.tail.extend(_same_tail(pair, ea, eb, ctx))
        if ga is not None:
            self.seen[0] = ga.last
        if gb is not None:
            self.seen[1] = gb.last
        tr = self.tracker
        # identical pairs: B's events touch exactly what A's do
        if tr.feed(ea, eb, same, before_a) and tr.update(ea, None if same else eb):
            self._state_boundary(pair.index, pair.op_a, pair.op_b, pair.key_a or pair.key_b)
        tr.converged()
        return same and pair.status == SAME

    def _state_boundary(self, pair_index: int, op_a: int | None, op_b: int | None, key: Any) -> None:
        """The state difference after the events just folded changed: record it."""
        changes = self.tracker.changes()
        if changes == self.last_reported:
            return
        row = self.al.n_rows - 1
        sd = StateDiff(pair_index, op_a, op_b, self.seen[0], self.seen[1], row, changes)
        sd.key = key
        self.state_diffs.append(sd)
        self.last_reported = changes
        if self.first is None and changes:
            self.first = {"seq_a": self.seen[0], "seq_b": self.seen[1], "class": "state", "op_a": op_a,
                          "op_b": op_b, "context": _context(self.tail, self.pres, self.context)}

    # -- result -------------------------------------------------------------------------
    def _report(self) -> DiffReport:
        a, b, al = self.a, self.b, self.al
        a.count, b.count = self.sa.loaded, self.sb.loaded
        for side in (a, b):
            if side.analysis is not None and side.findings is None:
                side.findings = side.analysis.finish()
        fa, fb = a.findings, b.findings
        available = fa is not None and fb is not None
        hz, changed = pair_changed(hazard_delta(al, fa, fb)) if available else ([], [])
        if self.first is not None and self.race is not None:
            self.first["race"] = self.race
        return DiffReport(a=a.info(), b=b.info(), header_diff=header_diff(a.header, b.header), alignment=al,
                          first_divergence=self.first, state_diff=self.state_diffs, hazards=hz,
                          hazards_available=available, differing_pairs=self.differing,
                          renumbered=self.renumbered, state_note=self.tracker.broken,
                          detail_truncated=self.truncated, presenters=self.pres, changed_hazards=changed)


def _last_op_begin(evs: list[Event]) -> Event | None:
    for k in range(len(evs) - 1, -1, -1):
        ev = evs[k]
        if ev[I_KIND] == K_OP_BEGIN:
            return ev
    return None


def _same_tail(pair: OpPair, ea: list[Event], eb: list[Event], n: int) -> list[tuple[Event, Event]]:
    r = pair.rows
    assert r is not None
    out: list[tuple[Event, Event]] = []
    k = len(r) - 1
    while k >= 0 and len(out) < n:
        if r.cls[k] == C_SAME:
            out.append((ea[r.ia[k]], eb[r.ib[k]]))
        k -= 1
    out.reverse()
    return out


def _ev_brief(pres: EventPresenter, ev: Event) -> dict[str, Any]:
    """A compact description of an event for context lines."""
    name = kind_name(ev[I_KIND])
    if name is None:
        return {"seq": ev[I_SEQ], "kind": None, "text": pres.text_args(ev)}
    func = ev[I_FUNC]       # a code past FUNCS: a function this build does not know, as its number
    return {"seq": ev[I_SEQ], "kind": name, "func": FUNCS[func] if func < len(FUNCS) else func,
            "label": ev[I_LABEL], "text": pres.text_args(ev)}


def _race(pres: Presenters, ea: Event, eb: Event) -> dict[str, Any]:
    """The first events two traces of other schedules disagree on, each with
    the CPU that ran it (-1: a device's DMA): before them every event was
    the same, so these are what the schedules raced."""
    out: dict[str, Any] = {"seq_a": ea[I_SEQ], "seq_b": eb[I_SEQ]}
    for side, ev, p in (("a", ea, pres[0]), ("b", eb, pres[1])):
        d = _ev_brief(p, ev)
        del d["seq"]
        out[side] = {"cpu": ev[I_CPU], "op": ev[I_OP], **d}
    return out


def _context(tail: deque[tuple[Event, Event]], pres: Presenters, n: int,
             extra: Iterable[tuple[Event, Event]] = ()) -> list[dict[str, Any]]:
    items = list(tail) + list(extra)
    items = items[-n:] if n else []
    out = []
    for ea, eb in items:
        d = _ev_brief(pres[0], ea)
        seq_a = d.pop("seq")
        out.append({"seq_a": seq_a, "seq_b": eb[I_SEQ], **d})
    return out


def _first_renumbered(pair: OpPair, ea: list[Event], eb: list[Event], tail: deque[tuple[Event, Event]],
                      pres: Presenters, n: int) -> dict[str, Any]:
    """The first divergence when it is an identical operation under another op id."""
    return {"seq_a": ea[0][I_SEQ], "seq_b": eb[0][I_SEQ], "class": ARGS, "op_a": pair.op_a, "op_b": pair.op_b,
            "context": _context(tail, pres, n), "fields": ["op"]}


def _first_from_rows(pair: OpPair, ea: list[Event], eb: list[Event], tail: deque[tuple[Event, Event]],
                     pres: Presenters, n: int, seen: list[int]) -> dict[str, Any]:
    r = pair.rows
    assert r is not None
    k = next(i for i, c in enumerate(r.cls) if c != C_SAME)
    prior = [(ea[r.ia[i]], eb[r.ib[i]]) for i in range(max(0, k - n), k) if r.cls[i] == C_SAME]
    cls = CLASSES[r.cls[k]]
    seq_a = r.sa[k] or None
    seq_b = r.sb[k] or None
    if seq_a is None:
        seq_a = _next_seq(r.sa, k, pair.first_a, pair.count_a, seen[0])
    if seq_b is None:
        seq_b = _next_seq(r.sb, k, pair.first_b, pair.count_b, seen[1])
    out: dict[str, Any] = {"seq_a": seq_a, "seq_b": seq_b, "class": cls, "op_a": pair.op_a, "op_b": pair.op_b,
           "context": _context(tail, pres, n, prior)}
    if cls == ARGS:
        out["fields"] = list(r.fields.get(k, ()))
    ia, ib = r.ia[k], r.ib[k]
    out["event_a"] = _ev_brief(pres[0], ea[ia]) if ia >= 0 else None
    out["event_b"] = _ev_brief(pres[1], eb[ib]) if ib >= 0 else None
    return out


def _next_seq(arr: Sequence[int], k: int, first: int, count: int, seen_before: int) -> int:
    """Where a missing event would be: the next event of that side after row k."""
    for s in arr[k:]:
        if s:
            return s
    if count:
        return first + count
    return seen_before + 1


