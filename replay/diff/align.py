"""Hierarchical alignment of two traces (docs/CLI.md#diff-json).

Three levels, each aligned on its own so that a local difference never
desynchronises what follows it:

1. **Operations.**  Every event carries its top-level operation id, so a trace
   is a sequence of *op groups* (consecutive events with one op id; the first
   is normally ``op-begin``).  The two sequences are walked in lockstep and
   paired when their keys agree -- (verb, segment, bdf, domain) of the
   ``op-begin`` -- whatever their op ids (an op inserted earlier in one
   scenario shifts the ids of all later ones).  On a mismatch a bounded
   look-ahead (``WINDOW`` groups per side) finds the nearest common key and
   resynchronises there; the groups skipped over are paired when they have
   the same op id and verb (same operation, other arguments), otherwise they
   are reported as present in one trace only.  This is the only level that
   streams: memory is one op group per side plus the look-ahead.

2. **Inside a pair of operations**, the events are parsed into a tree: a
   ``call`` ... ``return`` bracket per function call and a ``lock`` ...
   ``unlock`` bracket per lock-protected section (sections that cross -- a
   lock released after a lock taken inside it, as MO3's ``rcu_domain`` does
   around ``iommu->lock`` -- are flattened into their parent: the lock and
   unlock events stay as plain events).  Sibling lists are aligned level by
   level (``align_seq``) and matched brackets recurse, so a difference inside
   one call or section stays inside it.

3. **Events.**  Two matched events are compared on their payload -- every
   field except ``seq`` (an insertion shifts it) and ``op`` (the operation
   pairing reports renumbering).  A row is ``same``, ``args`` (same event,
   other field values; ``fields`` names them), ``only-a`` or ``only-b``.

Matching uses two keys per item: a *coarse* key (what the event or bracket is:
kind + function + the fields that identify its object, e.g. which context
entry and which half a ``ctx-write`` stores; a call's function; a section's
lock name) and a *fine* key (a hash of the whole payload, of the subtree for
a bracket).  ``align_seq`` is patience-style: common prefix/suffix, anchors
that are unique in both, recursion between anchors; small leftovers get a
weighted LCS (coarse match 2, exact match 3) and large ones a greedy lockstep,
so the cost is O(n log n) on realistic input and never quadratic in trace
length.  Labels are not part of the coarse key (legacy and direct label the
same code differently); they are part of the payload.

The result, ``Alignment``, is what the report and the TUI's side-by-side view
read: op pairs, a global row list with gap rows (rows of identical
operations are implicit, so a 10^6-event alignment costs memory only where
the traces differ), difference regions and seq -> row lookups.
"""

from __future__ import annotations

import gc
from array import array
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import compress, count
from operator import itemgetter, ne
from typing import Any

import msgpack

from replay.codes import Event
from tracer import schema as S

F0 = S.F0
K_OP_BEGIN, K_CALL, K_RETURN = S.K_OP_BEGIN, S.K_CALL, S.K_RETURN
I_KIND, I_SEQ, I_CPU, I_OP, I_FUNC, I_LABEL = S.I_KIND, S.I_SEQ, S.I_CPU, S.I_OP, S.I_FUNC, S.I_LABEL
K_LOCK, K_UNLOCK = S.K_LOCK, S.K_UNLOCK

# Look-ahead at the operation level, in op groups per side.
WINDOW = 64
# Op groups larger than this are split into continuation segments, so one
# pathological operation cannot make the diff hold both traces in memory.
MAX_GROUP_EVENTS = 1 << 16
# Largest n*m a weighted LCS is run on; beyond it, greedy lockstep.
DP_CELLS = 40_000

Keys = list[Any]                              # coarse or fine keys of a sibling list
Out = list[tuple[int | None, int | None]]     # an alignment: (i, j) pairs, None for a gap
GroupPair = tuple["OpGroup | None", "OpGroup | None"]

# Row classes, in the order of their codes.
SAME, ARGS, ONLY_A, ONLY_B = "same", "args", "only-a", "only-b"
CLASSES = (SAME, ARGS, ONLY_A, ONLY_B)
C_SAME, C_ARGS, C_ONLY_A, C_ONLY_B = range(4)
# The differing fields of a row whose events differ only in their step label.
LABEL_ONLY = ("label",)


# --------------------------------------------------------------------------------
# Op groups


class OpGroup:
    """Consecutive events of one trace with the same op id."""

    __slots__ = ("op", "key", "first", "events", "part")

    def __init__(self, op: int, key: Any, first: int, events: list[Event], part: int = 0) -> None:
        self.op = op            # the op id the events carry
        self.key = key          # (verb, seg, bdf, domain) of op-begin; None when it has none
        self.first = first      # seq of the first event
        self.events = events    # the decoded events
        self.part = part        # 0, or n for the n-th continuation of a split group

    @property
    def count(self) -> int:
        return len(self.events)

    @property
    def last(self) -> int:
        return self.first + len(self.events) - 1

    @property
    def verb(self) -> Any:
        return self.key[0] if self.key else None

    def match_key(self) -> Any:
        """What pairs two groups: the op-begin key (or, for a group without
        one, its op id and position)."""
        if self.part:
            return ("continuation", self.op, self.part)
        if self.key is None:
            return ("no-op-begin", self.op)
        return self.key


def freeze(v: Any) -> Any:
    """A hashable, order-preserving copy of a decoded msgpack value."""
    if isinstance(v, list):
        return tuple(freeze(x) for x in v)
    if isinstance(v, dict):
        return ("{}",) + tuple(sorted((repr(k), freeze(x)) for k, x in v.items()))
    if isinstance(v, (bytes, bytearray, memoryview)):
        return ("b", bytes(v))
    return v


def group_key(ev: Event) -> tuple[Any, ...] | None:
    """(verb, seg, bdf, domain) of an op-begin event, None for another kind."""
    if ev[I_KIND] == K_OP_BEGIN:
        return (ev[S.F_OP_BEGIN_VERB], ev[S.F_OP_BEGIN_SEG], ev[S.F_OP_BEGIN_BDF], ev[S.F_OP_BEGIN_DOMAIN])
    return None


_getop = itemgetter(I_OP)


def op_groups(chunks: Iterable[list[Event]]) -> Iterator[OpGroup]:
    """Split a stream of event chunks into op groups (C-speed on the normal
    case: op ids non-decreasing inside a chunk)."""
    stream = EventStream(chunks)
    while (g := stream.next_group()) is not None:
        yield g


# --------------------------------------------------------------------------------
# Event comparison


def same_payload(a: list[Any], b: list[Any]) -> bool:
    """Equal in every field but seq and op."""
    if a is b:
        return True
    return a[I_KIND] == b[I_KIND] and a[I_CPU] == b[I_CPU] and a[I_FUNC:] == b[I_FUNC:]


def groups_equal(ga: list[Any], gb: list[Any]) -> bool:
    """Two event lists equal but for seq (and op)?  C-speed on the common
    cases: seqs and op ids equal (no shift), or shifted by a constant."""
    if len(ga) != len(gb):
        return False
    if ga == gb:
        return True
    seq, op = I_SEQ, I_OP       # locals: the loops below run once per event
    d = gb[0][seq] - ga[0][seq]
    do = gb[0][op] != ga[0][op]
    if not d and not do:
        return False          # same seqs and op ids yet unequal
    if _shares(ga, gb):
        return all(map(same_payload, ga, gb))
    # Renumber B's events in place to A's numbering, compare, restore.
    oa = ga[0][op]
    saved = [(ev[seq], ev[op]) for ev in gb]
    for ev in gb:
        ev[seq] -= d
        ev[op] = oa
    try:
        return ga == gb
    finally:
        for ev, (s, o) in zip(gb, saved):
            ev[seq] = s
            ev[op] = o


def _field_names(kind_code: int) -> tuple[Any, ...]:
    if kind_code < len(S.KINDS):
        return S.KINDS[kind_code].fields
    return ()       # a kind this build does not know (replay.codes.UNKNOWN_KIND)


def kind_name(kind_code: int) -> str | None:
    """The name of a kind of this build's catalogue, None for a kind it does
    not know (replay.codes.UNKNOWN_KIND: a newer trace's)."""
    if kind_code < len(S.KINDS):
        return S.KINDS[kind_code].name
    return None


def differing_fields(a: list[Any], b: list[Any]) -> tuple[Any, ...]:
    """Names of the fields in which two events of the same kind differ
    (``args.NAME`` for a call argument); () when their payloads are equal."""
    if same_payload(a, b):
        return ()
    out = []
    if a[I_KIND] != b[I_KIND]:
        out.append("kind")
    if a[I_CPU] != b[I_CPU]:
        out.append("cpu")
    if a[I_FUNC] != b[I_FUNC]:
        out.append("func")
    if a[I_LABEL] != b[I_LABEL]:
        out.append("label")
    names = _field_names(a[I_KIND]) if a[I_KIND] == b[I_KIND] else ()
    n = max(len(a), len(b)) - F0
    for i in range(n):
        va = a[F0 + i] if F0 + i < len(a) else _MISSING
        vb = b[F0 + i] if F0 + i < len(b) else _MISSING
        if va == vb:
            continue
        name = names[i] if i < len(names) else f"field{i}"
        if name == "args" and isinstance(va, list) and isinstance(vb, list):
            out.extend("args." + x for x in _arg_diff(va, vb))
        else:
            out.append(name)
    return tuple(out) or ("event",)


_MISSING = object()


def _args_map(args: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for i, pair in enumerate(args):
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str):
            out.setdefault(pair[0], pair[1])
        else:
            out.setdefault(f"#{i}", pair)
    return out


def _arg_diff(va: list[Any], vb: list[Any]) -> list[str]:
    ma, mb = _args_map(va), _args_map(vb)
    names = list(ma)
    names.extend(k for k in mb if k not in ma)
    diff = [k for k in names if ma.get(k, _MISSING) != mb.get(k, _MISSING)]
    return diff or ["order"]


# --------------------------------------------------------------------------------
# Keys

# Kind-specific fields that identify *what* an event acts on (indices into the
# kind's fields); the rest of the payload is "arguments".
_IDENT_FIELDS = {
    "op-begin": ("verb",),
    "lock": ("lock",), "unlock": ("lock",),
    "root-write": ("iommu", "bus"),
    "ctx-write": ("iommu", "bus", "devfn", "half", "method"),
    "cache-sync": ("iommu", "bus", "devfn"),
    "flush-context": ("iommu", "gran"),
    "flush-iotlb": ("iommu", "gran"),
    "flush-dev-iotlb": ("iommu", "sid"),
    "flush-write-buffer": ("iommu",),
    "translation-enable": ("iommu",),
    "did-bitmap": ("iommu", "did"),
    "did-map": ("iommu", "did"),
    "iommu-bitmap": ("domain", "iommu"),
    "pt-alloc": ("domain", "what"),
    "pt-free": ("domain",),
    "idmap-add": ("domain", "base", "end"),
    "idmap-remove": ("domain", "base", "end"),
    "owner-move": ("seg", "bdf"),
    "device-add": ("seg", "bdf"),
    "device-remove": ("seg", "bdf"),
    "ats-enable": ("seg", "bdf"),
    "domain-create": ("domain",), "domain-dying": ("domain",), "domain-destroy": ("domain",),
    "rollback-begin": ("what",),
    "fault-inject": ("point",),
    "engine-limit": ("what",),
    "log": ("level",),
}
_IDENT_IDX = tuple(
    tuple(F0 + k.fields.index(f) for f in _IDENT_FIELDS.get(k.name, ())) for k in S.KINDS
)


def coarse_key(ev: Event) -> tuple[Any, ...]:
    """What an event is, for matching: kind, function and identifying fields."""
    k = ev[I_KIND]
    idx = _IDENT_IDX[k] if k < len(_IDENT_IDX) else ()     # none for a kind this build does not know
    return (k, ev[I_FUNC]) + tuple(freeze(ev[i]) for i in idx)


_packb = msgpack.Packer(use_bin_type=True, autoreset=True).pack
_packb_full = msgpack.Packer(use_bin_type=True, autoreset=True).pack


_get_kind, _get_cpu, _payload = itemgetter(I_KIND), itemgetter(I_CPU), itemgetter(slice(I_FUNC, None))


def fine_keys(events: list[Any]) -> list[Any]:
    """A hash of each event's payload (all but seq and op): msgpack bytes of
    the rest, hashed (C speed; equal payloads give equal keys on any hash
    seed; every decoded msgpack value packs again)."""
    return list(map(hash, zip(map(_get_kind, events), map(_get_cpu, events), map(_packb, map(_payload, events)))))


# --------------------------------------------------------------------------------
# The call/lock tree of one operation


class Bracket:
    """A call ... return or lock ... unlock section (indices into the op's
    event list); ``close`` is None when the trace ends inside it."""

    __slots__ = ("open", "close", "children", "is_call", "coarse", "fine")

    def __init__(self, open_idx: int, is_call: bool, coarse: tuple[Any, ...]) -> None:
        self.open = open_idx
        self.close: int | None = None
        self.children: list[Any] = []
        self.is_call = is_call
        self.coarse = coarse
        self.fine: int | None = None


def build_tree(events: list[Any]) -> list[Any]:
    """The op's events as a list of items: an int (a plain event's index) or
    a Bracket.  Any nesting is accepted: unmatched returns/unlocks are plain
    events, unclosed brackets stay open (a trace cut inside an operation)."""
    root: list[Any] = []
    stack: list[Bracket] = []
    children = root
    for idx, k in enumerate(map(_get_kind, events)):
        if k == K_CALL:
            br = Bracket(idx, True, ("call", events[idx][I_FUNC]))
            children.append(br)
            stack.append(br)
            children = br.children
        elif k == K_LOCK:
            ev = events[idx]
            br = Bracket(idx, False, ("lock", ev[S.F_LOCK_LOCK], ev[S.F_LOCK_TARGET]))
            children.append(br)
            stack.append(br)
            children = br.children
        elif k == K_RETURN:
            if stack and stack[-1].is_call:         # the usual case: the innermost bracket
                stack.pop().close = idx
            else:
                pos = _find(stack, _is_call)
                if pos is None:
                    children.append(idx)
                    continue
                _close(stack, pos, idx)
            children = stack[-1].children if stack else root
        elif k == K_UNLOCK:
            ev = events[idx]
            want = ("lock", ev[S.F_UNLOCK_LOCK], ev[S.F_UNLOCK_TARGET])
            pos = None
            for p in range(len(stack) - 1, -1, -1):
                b = stack[p]
                if b.is_call:
                    break           # a section never closes across a call boundary
                if b.coarse == want:
                    pos = p
                    break
            if pos is None:
                children.append(idx)
            else:
                _close(stack, pos, idx)
                children = stack[-1].children if stack else root
        else:
            children.append(idx)
    return root


def _is_call(b: Bracket) -> bool:
    return b.is_call


def _find(stack: list[Bracket], pred: Callable[[Bracket], bool]) -> int | None:
    for p in range(len(stack) - 1, -1, -1):
        if pred(stack[p]):
            return p
    return None


def _close(stack: list[Any], pos: int, idx: int) -> None:
    """Close stack[pos] at event idx; open sections above it cross its end:
    flatten them (their lock event and children move into their parent)."""
    while len(stack) - 1 > pos:
        inner = stack.pop()
        parent = stack[-1].children
        assert parent[-1] is inner
        parent.pop()
        parent.append(inner.open)
        parent.extend(inner.children)
    stack[pos].close = idx
    stack.pop()


def _lock_coarse_name(coarse: tuple[Any, ...]) -> tuple[Any, ...]:
    # A section's coarse key for matching: the lock's name, not its instance
    # (an instance difference is an argument difference of the lock event).
    return coarse[:2]


def annotate(items: list[Any], events: list[Any], fks: list[Any] | None = None) -> tuple[list[Any], list[Any]]:
    """(coarse keys, fine keys) of a sibling list; brackets get their subtree
    fine key computed bottom-up and cached.  ``fks``: fine_keys(events), when
    the caller already has them."""
    if fks is None:
        fks = fine_keys(events)
    ck, fk = [], []
    for it in items:
        if type(it) is int:
            ck.append(coarse_key(events[it]))
            fk.append(fks[it])
        else:
            if it.fine is None:
                _subtree_fine(it, fks)
            ck.append(it.coarse if it.is_call else _lock_coarse_name(it.coarse))
            fk.append(it.fine)
    return ck, fk


def _subtree_fine(br: Bracket, fks: list[Any]) -> int:
    # a subtree's identity needs only fine keys: no coarse key below the
    # level being aligned is ever looked at
    sub = [fks[c] if type(c) is int else (c.fine if c.fine is not None else _subtree_fine(c, fks))
           for c in br.children]
    br.fine = hash((fks[br.open], tuple(sub), fks[br.close] if br.close is not None else None))
    return br.fine


# --------------------------------------------------------------------------------
# Sequence alignment


def align_seq(ka: list[Any], kb: list[Any], fa: list[Any], fb: list[Any]) -> list[tuple[int | None, int | None]]:
    """Align two sequences.  ka/kb: coarse keys (only equal ones may pair);
    fa/fb: fine keys (equal = identical).  Returns (i, j) pairs in order, with
    None for a gap; gaps between two pairs list A's items before B's."""
    out: list[tuple[int | None, int | None]] = []
    _align(ka, kb, fa, fb, 0, len(ka), 0, len(kb), out, 0)
    return out


def _align(ka: Keys, kb: Keys, fa: Keys, fb: Keys, a0: int, a1: int, b0: int, b1: int, out: Out,
           depth: int) -> None:
    # common prefix
    while a0 < a1 and b0 < b1 and fa[a0] == fb[b0] and ka[a0] == kb[b0]:
        out.append((a0, b0))
        a0 += 1
        b0 += 1
    # common suffix (emitted after the middle)
    tail = []
    while a1 > a0 and b1 > b0 and fa[a1 - 1] == fb[b1 - 1] and ka[a1 - 1] == kb[b1 - 1]:
        a1 -= 1
        b1 -= 1
        tail.append((a1, b1))
    if a0 == a1 or b0 == b1:
        out.extend((i, None) for i in range(a0, a1))
        out.extend((None, j) for j in range(b0, b1))
    else:
        anchors = _unique_anchors(fa, fb, a0, a1, b0, b1, ka, kb) if depth < 64 else []
        if not anchors and depth < 64:
            anchors = _unique_anchors(ka, kb, a0, a1, b0, b1, ka, kb)
        if anchors:
            pa, pb = a0, b0
            for i, j in anchors:
                _align(ka, kb, fa, fb, pa, i, pb, j, out, depth + 1)
                out.append((i, j))
                pa, pb = i + 1, j + 1
            _align(ka, kb, fa, fb, pa, a1, pb, b1, out, depth + 1)
        elif (a1 - a0) * (b1 - b0) <= DP_CELLS:
            _dp(ka, kb, fa, fb, a0, a1, b0, b1, out)
        else:
            _greedy(ka, kb, a0, a1, b0, b1, out)
    out.extend(reversed(tail))


def _unique_anchors(xa: Keys, xb: Keys, a0: int, a1: int, b0: int, b1: int, ka: Keys,
                    kb: Keys) -> list[tuple[int, int]]:
    """Patience anchors: keys occurring exactly once in each range, in an
    increasing (longest) order on both sides."""
    ca: dict[Any, Any] = {}
    for i in range(a0, a1):
        k = xa[i]
        ca[k] = -1 if k in ca else i
    cb: dict[Any, Any] = {}
    for j in range(b0, b1):
        k = xb[j]
        cb[k] = -1 if k in cb else j
    cand = []
    for k, i in ca.items():
        if i >= 0:
            j = cb.get(k, -1)
            if j >= 0 and ka[i] == kb[j]:
                cand.append((i, j))
    if not cand:
        return []
    cand.sort()
    return _lis(cand)


def _lis(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Longest subsequence increasing in the second coordinate (patience sort)."""
    tails: list[Any] = []       # b values
    tail_idx: list[Any] = []
    prev = [-1] * len(pairs)
    for n, (_, j) in enumerate(pairs):
        p = bisect_left(tails, j)
        if p == len(tails):
            tails.append(j)
            tail_idx.append(n)
        else:
            tails[p] = j
            tail_idx[p] = n
        prev[n] = tail_idx[p - 1] if p else -1
    res = []
    n = tail_idx[-1]
    while n >= 0:
        res.append(pairs[n])
        n = prev[n]
    res.reverse()
    return res


def _dp(ka: Keys, kb: Keys, fa: Keys, fb: Keys, a0: int, a1: int, b0: int, b1: int, out: Out) -> None:
    """Weighted LCS: a coarse match scores 2, an identical one 3."""
    n, m = a1 - a0, b1 - b0
    w = m + 1
    score = [0] * ((n + 1) * w)
    for i in range(n - 1, -1, -1):
        ki, fi = ka[a0 + i], fa[a0 + i]
        row, nxt = i * w, (i + 1) * w
        for j in range(m - 1, -1, -1):
            best = score[nxt + j]
            s = score[row + j + 1]
            if s > best:
                best = s
            if ki == kb[b0 + j]:
                s = score[nxt + j + 1] + (3 if fi == fb[b0 + j] else 2)
                if s > best:
                    best = s
            score[row + j] = best
    i = j = 0
    ga: list[Any] = []
    gb: list[Any] = []
    while i < n and j < m:
        cur = score[i * w + j]
        if ka[a0 + i] == kb[b0 + j] and cur == score[(i + 1) * w + j + 1] + (3 if fa[a0 + i] == fb[b0 + j] else 2):
            out.extend((x, None) for x in ga)
            out.extend((None, y) for y in gb)
            ga, gb = [], []
            out.append((a0 + i, b0 + j))
            i += 1
            j += 1
        elif cur == score[(i + 1) * w + j]:
            ga.append(a0 + i)
            i += 1
        else:
            gb.append(b0 + j)
            j += 1
    ga.extend(range(a0 + i, a1))
    gb.extend(range(b0 + j, b1))
    out.extend((x, None) for x in ga)
    out.extend((None, y) for y in gb)


def _greedy(ka: Keys, kb: Keys, a0: int, a1: int, b0: int, b1: int, out: Out, look: int = 32, run: int = 8) -> None:
    """Lockstep with a small look-ahead: linear, for large unanchored ranges.
    At a mismatch, take the cheapest of: substitute (both advance), skip d
    items of A, skip d items of B -- scored by how many items match right
    after it."""
    i, j = a0, b0
    while i < a1 and j < b1:
        if ka[i] == kb[j]:
            out.append((i, j))
            i += 1
            j += 1
            continue
        best, best_score = (1, 1), _run(ka, kb, i + 1, j + 1, a1, b1, run) - 1
        for d in range(1, look):
            if best_score >= run - 1:
                break
            if j + d < b1 and ka[i] == kb[j + d]:
                sc = _run(ka, kb, i, j + d, a1, b1, run) - d
                if sc > best_score:
                    best, best_score = (0, d), sc
            if i + d < a1 and ka[i + d] == kb[j]:
                sc = _run(ka, kb, i + d, j, a1, b1, run) - d
                if sc > best_score:
                    best, best_score = (d, 0), sc
        di, dj = best
        out.extend((x, None) for x in range(i, i + di))
        out.extend((None, y) for y in range(j, j + dj))
        i += di
        j += dj
    out.extend((x, None) for x in range(i, a1))
    out.extend((None, y) for y in range(j, b1))


def _run(ka: Keys, kb: Keys, i: int, j: int, a1: int, b1: int, limit: int) -> int:
    n = 0
    while n < limit and i + n < a1 and j + n < b1 and ka[i + n] == kb[j + n]:
        n += 1
    return n


# --------------------------------------------------------------------------------
# Rows of one pair of operations


class RowSink:
    """Collects the rows of one differing op pair: seqs (0 = gap), class
    codes, differing field names, the nesting path at each region start."""

    __slots__ = ("sa", "sb", "cls", "fields", "paths", "ia", "ib")

    def __init__(self) -> None:
        self.sa = array("q")
        self.sb = array("q")
        self.cls = bytearray()
        self.fields: dict[Any, Any] = {}
        self.paths: dict[Any, Any] = {}          # row -> tuple of enclosing function names
        self.ia = array("l")           # event index in the op group (-1 = gap)
        self.ib = array("l")

    def __len__(self) -> int:
        return len(self.cls)

    def add(self, ia: int, ib: int, seq_a: int, seq_b: int, code: int, fields: tuple[str, ...],
            path: tuple[str, ...]) -> None:
        n = len(self.cls)
        self.sa.append(seq_a)
        self.sb.append(seq_b)
        self.cls.append(code)
        self.ia.append(ia)
        self.ib.append(ib)
        if fields:
            self.fields[n] = fields
        if code != C_SAME and (n == 0 or self.cls[n - 1] == C_SAME):
            self.paths[n] = path

    def add_run(self, ia: Iterable[int], ib: Iterable[int], seq_a: Sequence[int], seq_b: Sequence[int], code: int,
                path: tuple[str, ...] = ()) -> None:
        """Rows of one class without differing fields, in bulk: what add()
        would record for each in turn."""
        k = len(seq_a)
        if not k:
            return
        n = len(self.cls)
        if code != C_SAME and (n == 0 or self.cls[n - 1] == C_SAME):
            self.paths[n] = path
        self.sa.extend(seq_a)
        self.sb.extend(seq_b)
        self.cls.extend(bytes((code,)) * k)
        self.ia.extend(ia)
        self.ib.extend(ib)


_get_seq = itemgetter(I_SEQ)


def func_name(code: int) -> str:
    """A function of this build's table by code; the bare number for one it
    does not know (replay.codes: a newer trace's)."""
    return S.FUNCS[code] if code < len(S.FUNCS) else str(code)


# Op groups larger than this (both sides together) get their common prefix
# and suffix matched event by event (C speed) before the tree alignment of
# what lies between -- the cost of a local difference in a huge operation
# (a boot creating thousands of domains) stays local.
TRIM_OVER = 600


def align_ops(ga: OpGroup | None, gb: OpGroup | None) -> RowSink:
    """Rows for a pair of op groups (either may be None: one-sided)."""
    sink = RowSink()
    ea = ga.events if ga is not None else []
    eb = gb.events if gb is not None else []
    seq_a = list(map(_get_seq, ea))
    seq_b = list(map(_get_seq, eb))
    if not eb:
        sink.add_run(range(len(ea)), [-1] * len(ea), seq_a, [0] * len(ea), C_ONLY_A)
        return sink
    if not ea:
        sink.add_run([-1] * len(eb), range(len(eb)), [0] * len(eb), seq_b, C_ONLY_B)
        return sink
    na, nb = len(ea), len(eb)
    p = q = 0
    if na + nb > TRIM_OVER:
        p = slice_mismatch(ea[:min(na, nb)], eb[:min(na, nb)])
        k = min(na, nb) - p
        if k > 0:
            q = slice_mismatch(ea[na - k:][::-1], eb[nb - k:][::-1])
    sink.add_run(range(p), range(p), seq_a[:p], seq_b[:p], C_SAME)
    path = _open_path(ea[:p]) if p else ()
    ctx = _Ctx(ea[p:na - q], eb[p:nb - q], seq_a[p:na - q], seq_b[p:nb - q], sink, p, p)
    ctx.items(build_tree(ctx.ea), build_tree(ctx.eb), path)
    if q:
        sink.add_run(range(na - q, na), range(nb - q, nb), seq_a[na - q:], seq_b[nb - q:], C_SAME)
    return sink


def _open_path(events: list[Event]) -> tuple[str, ...]:
    """Functions and sections still open after events (for a region's path)."""
    stack: list[Any] = []
    for ev in events:
        k = ev[I_KIND]
        if k == K_CALL:
            stack.append(func_name(ev[I_FUNC]))
        elif k == K_LOCK:
            stack.append(ev[S.F_LOCK_LOCK])
        elif k in (K_RETURN, K_UNLOCK) and stack:
            stack.pop()
    return tuple(stack)


class _Ctx:
    """The tree alignment of one pair of op groups (or of what lies between
    their common prefix and suffix), writing rows into ``sink``."""

    __slots__ = ("ea", "eb", "sa", "sb", "sink", "oa", "ob", "fka", "fkb")

    def __init__(self, ea: list[Event], eb: list[Event], sa: list[int], sb: list[int], sink: RowSink, oa: int,
                 ob: int) -> None:
        self.ea, self.eb, self.sa, self.sb, self.sink = ea, eb, sa, sb, sink
        self.oa, self.ob = oa, ob     # index of ea[0] / eb[0] in the op group
        self.fka, self.fkb = fine_keys(ea), fine_keys(eb)

    def pair(self, i: int, j: int, path: tuple[str, ...]) -> None:
        f = differing_fields(self.ea[i], self.eb[j])
        self.sink.add(i + self.oa, j + self.ob, self.sa[i], self.sb[j], C_ARGS if f else C_SAME, f, path)

    def only(self, side: int, item: int | Bracket, path: tuple[str, ...]) -> None:
        idxs: list[Any] = []
        _flatten(item, idxs)
        idxs.sort()
        n = len(idxs)
        if side == 0:
            self.sink.add_run(_shifted(idxs, self.oa), [-1] * n, list(map(self.sa.__getitem__, idxs)), [0] * n,
                              C_ONLY_A, path)
        else:
            self.sink.add_run([-1] * n, _shifted(idxs, self.ob), [0] * n, list(map(self.sb.__getitem__, idxs)),
                              C_ONLY_B, path)

    def items(self, ia: list[Any], ib: list[Any], path: tuple[str, ...]) -> None:
        ka, fa = annotate(ia, self.ea, self.fka)
        kb, fb = annotate(ib, self.eb, self.fkb)
        for i, j in align_seq(ka, kb, fa, fb):
            if j is None:
                assert i is not None        # align_seq never pairs two gaps
                self.only(0, ia[i], path)
            elif i is None:
                self.only(1, ib[j], path)
            else:
                x, y = ia[i], ib[j]
                if type(x) is int:
                    self.pair(x, y, path)
                elif fa[i] == fb[j] and self._same_subtree(x, y):
                    pass
                else:
                    self.pair(x.open, y.open, path)
                    opener = self.ea[x.open]
                    sub = path + ((func_name(opener[I_FUNC]),) if x.is_call else (opener[S.F_LOCK_LOCK],))
                    self.items(x.children, y.children, sub)
                    if x.close is not None and y.close is not None:
                        self.pair(x.close, y.close, path)
                    elif x.close is not None:
                        self.sink.add(x.close + self.oa, -1, self.sa[x.close], 0, C_ONLY_A, (), path)
                    elif y.close is not None:
                        self.sink.add(-1, y.close + self.ob, 0, self.sb[y.close], C_ONLY_B, (), path)

    def _same_subtree(self, x: Bracket, y: Bracket) -> bool:
        """When the two subtrees' events are equal pairwise: their rows, and True."""
        a: list[Any] = []
        b: list[Any] = []
        _flatten(x, a)
        _flatten(y, b)
        if len(a) != len(b):
            return False
        a.sort()
        b.sort()
        if not all(map(same_payload, map(self.ea.__getitem__, a), map(self.eb.__getitem__, b))):
            return False
        self.sink.add_run(_shifted(a, self.oa), _shifted(b, self.ob), list(map(self.sa.__getitem__, a)),
                          list(map(self.sb.__getitem__, b)), C_SAME)
        return True


def _shifted(idxs: list[Any], by: int) -> list[Any]:
    return [i + by for i in idxs] if by else idxs


def _flatten(item: int | Bracket, out: list[int]) -> None:
    if isinstance(item, int):
        out.append(item)
        return
    out.append(item.open)
    for c in item.children:
        _flatten(c, out)
    if item.close is not None:
        out.append(item.close)


# --------------------------------------------------------------------------------
# The alignment as the report and the TUI read it


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the side-by-side view.  A gap has seq None on that side.
    ``fields`` names what differs for an ``args`` row."""

    index: int
    seq_a: int | None
    seq_b: int | None
    cls: str
    fields: tuple[Any, ...]
    pair: int


@dataclass(slots=True)
class Region:
    """A maximal run of differing rows inside one op pair."""

    index: int
    pair: int
    row_start: int           # global row index, inclusive
    row_end: int             # exclusive
    seq_a: tuple[Any, ...] | None      # (first, last) seqs of A's events in it, None if none
    seq_b: tuple[Any, ...] | None
    counts: dict[Any, Any]             # class -> number of rows
    path: tuple[Any, ...]              # enclosing functions / sections at its start
    # of counts["args"], the rows that differ only in their step label (the
    # engines name the same step PMx / MOx): the same values, counted apart
    label_only: int = 0

    @property
    def classes(self) -> tuple[Any, ...]:
        return tuple(c for c in CLASSES if self.counts.get(c))


class OpPair:
    """Two aligned op groups (or one, when the other trace lacks it), or a
    *run*: consecutive operations identical in both traces (``n_ops`` of
    them), whose rows are implicit."""

    __slots__ = ("index", "op_a", "op_b", "key_a", "key_b", "first_a", "count_a", "first_b",
                 "count_b", "status", "row_start", "n_rows", "rows", "regions", "_packed",
                 "_unpacked", "part", "n_ops", "_seq_rows")

    def __init__(self, index: int, ga: OpGroup | None, gb: OpGroup | None, status: str) -> None:
        self.index = index
        self.op_a: Any = ga.op if ga is not None else None
        self.op_b: Any = gb.op if gb is not None else None
        self.key_a = ga.key if ga is not None else None
        self.key_b = gb.key if gb is not None else None
        self.first_a = ga.first if ga is not None else 0      # read only with count_a > 0
        self.count_a = ga.count if ga is not None else 0
        self.first_b = gb.first if gb is not None else 0
        self.count_b = gb.count if gb is not None else 0
        g = ga if ga is not None else gb
        self.part = g.part if g is not None else 0
        self.status = status          # "same" | "different" | "only-a" | "only-b"
        self.row_start = 0
        self.n_rows = 0
        self.rows: RowSink | None = None
        self.regions: list[int] = []
        self._packed: bytes | None = None     # differing pairs: both groups' events as msgpack bytes
        self._unpacked: tuple[list[Event], list[Event]] | None = None
        self.n_ops = 1
        # lazily: ({seq_a: k}, {seq_b: k}) for big differing pairs
        self._seq_rows: tuple[dict[int, int], dict[int, int]] | None = None

    def keep_events(self, ea: list[Any], eb: list[Any]) -> None:
        """Keep the events of a differing pair for rendering, packed (one
        bytes object per pair, not thousands of small objects)."""
        self._packed = _packb_full([ea, eb])

    def kept_events(self) -> tuple[list[Event], list[Event]] | None:
        """Both groups' events of a differing pair, None when not kept
        (keep_events: only the first DETAIL_ROWS rows of a diff are)."""
        if self._packed is None:
            return None
        if self._unpacked is None:
            gc_was = gc.isenabled()
            gc.disable()        # thousands of fresh lists and no garbage: a collection only walks them
            try:
                ea, eb = msgpack.unpackb(self._packed, raw=False, strict_map_key=False)
                self._unpacked = (ea, eb)
            finally:
                if gc_was:
                    gc.enable()
        return self._unpacked

    @classmethod
    def run(cls, first_a: int, first_b: int, count: int, op_a: int, op_b: int, key: Any, n_ops: int) -> OpPair:
        p = cls(0, None, None, SAME)
        p.first_a, p.first_b, p.count_a, p.count_b = first_a, first_b, count, count
        p.op_a, p.op_b, p.key_a, p.key_b, p.n_ops = op_a, op_b, key, key, n_ops
        return p

    @property
    def last_a(self) -> int | None:
        return self.first_a + self.count_a - 1 if self.count_a else None

    @property
    def last_b(self) -> int | None:
        return self.first_b + self.count_b - 1 if self.count_b else None

    def row(self, k: int) -> Row:
        """The k-th row of this pair (0-based)."""
        g = self.row_start + k
        r = self.rows
        if r is None:
            return Row(g, self.first_a + k, self.first_b + k, SAME, (), self.index)
        sa, sb = r.sa[k], r.sb[k]
        return Row(g, sa if sa else None, sb if sb else None, CLASSES[r.cls[k]],
                   r.fields.get(k, ()), self.index)

    def row_of(self, side: str, seq: int) -> int | None:
        """Local row index of the event with this seq on side 'a' or 'b'."""
        first, count = (self.first_a, self.count_a) if side == "a" else (self.first_b, self.count_b)
        if not count or not first <= seq < first + count:
            return None
        if self.rows is None:
            return seq - first
        arr = self.rows.sa if side == "a" else self.rows.sb
        if len(arr) <= 64:
            for k, s in enumerate(arr):
                if s == seq:
                    return k
            return None
        if self._seq_rows is None:
            self._seq_rows = ({s: k for k, s in enumerate(self.rows.sa) if s},
                              {s: k for k, s in enumerate(self.rows.sb) if s})
        return self._seq_rows[0 if side == "a" else 1].get(seq)


class Alignment:
    """The whole alignment: op pairs in order, rows numbered globally.

    For the side-by-side view: ``n_rows``, ``rows(start, stop)`` (gap rows
    have seq None on the missing side), ``row_of(side, seq)`` to follow a
    cursor, ``regions`` with ``next_region``/``prev_region`` for the
    next/previous-difference keys."""

    def __init__(self) -> None:
        self.pairs: list[OpPair] = []
        self.regions: list[Region] = []
        self.n_rows = 0
        self._starts = array("q")         # row_start per pair
        self._side = {"a": (array("q"), array("l")), "b": (array("q"), array("l"))}
        self._region_starts = array("q")

    # -- building (the report's streaming pass) -----------------------------------------
    def add(self, pair: OpPair) -> None:
        pair.index = len(self.pairs)
        pair.row_start = self.n_rows
        if pair.rows is None:
            pair.n_rows = pair.count_a
        else:
            pair.n_rows = len(pair.rows)
        self.pairs.append(pair)
        self._starts.append(pair.row_start)
        for side, first, n in (("a", pair.first_a, pair.count_a), ("b", pair.first_b, pair.count_b)):
            if n:
                firsts, idx = self._side[side]
                firsts.append(first)
                idx.append(pair.index)
        if pair.rows is not None:
            self._add_regions(pair)
        self.n_rows += pair.n_rows

    def add_same(self, first_a: int, first_b: int, count: int, op_a: int, op_b: int, key: Any, n_ops: int,
                 delta: int) -> None:
        """Identical events (whole operations) in both traces: extend the last
        run when it continues it, else start one."""
        last = self.pairs[-1] if self.pairs else None
        if (last is not None and last.rows is None and last.status == SAME
                and last.first_a + last.count_a == first_a and last.first_b + last.count_b == first_b
                and op_delta(last.op_a, last.op_b) == delta):
            last.count_a += count
            last.count_b += count
            last.n_rows += count
            last.n_ops += n_ops
            self.n_rows += count
            return
        self.add(OpPair.run(first_a, first_b, count, op_a, op_b, key, n_ops))

    def _add_regions(self, pair: OpPair) -> None:
        r = pair.rows
        assert r is not None
        cls = r.cls
        n = len(cls)
        k = 0
        while k < n:
            if cls[k] == C_SAME:
                k += 1
                continue
            start = k
            counts: dict[Any, Any] = {}
            labels = 0
            fa = la = fb = lb = None
            while k < n and cls[k] != C_SAME:
                c = CLASSES[cls[k]]
                counts[c] = counts.get(c, 0) + 1
                if c == ARGS and r.fields.get(k) == LABEL_ONLY:
                    labels += 1
                if r.sa[k]:
                    fa = r.sa[k] if fa is None else fa
                    la = r.sa[k]
                if r.sb[k]:
                    fb = r.sb[k] if fb is None else fb
                    lb = r.sb[k]
                k += 1
            reg = Region(len(self.regions), pair.index, pair.row_start + start, pair.row_start + k,
                         (fa, la) if fa is not None else None, (fb, lb) if fb is not None else None,
                         counts, r.paths.get(start, ()), labels)
            pair.regions.append(reg.index)
            self.regions.append(reg)
            self._region_starts.append(reg.row_start)

    # -- queries ----------------------------------------------------------------------
    def pair_at_row(self, row: int) -> OpPair:
        if not 0 <= row < self.n_rows:
            raise IndexError(f"row {row} outside 0..{self.n_rows - 1}")
        p = bisect_right(self._starts, row) - 1
        # skip empty pairs (cannot happen for groups, kept for safety)
        while self.pairs[p].n_rows == 0 or row >= self.pairs[p].row_start + self.pairs[p].n_rows:
            p += 1
        return self.pairs[p]

    def row(self, row: int) -> Row:
        pair = self.pair_at_row(row)
        return pair.row(row - pair.row_start)

    def rows(self, start: int, stop: int) -> list[Row]:
        """Rows start <= index < stop (clipped to the alignment)."""
        start = max(start, 0)
        stop = min(stop, self.n_rows)
        out: list[Row] = []
        if start >= stop:
            return out
        pair = self.pair_at_row(start)
        p = pair.index
        k = start - pair.row_start
        while len(out) < stop - start:
            pair = self.pairs[p]
            while k < pair.n_rows and len(out) < stop - start:
                out.append(pair.row(k))
                k += 1
            p += 1
            k = 0
        return out

    def pair_of_seq(self, side: str, seq: int) -> OpPair | None:
        """The op pair holding event seq of trace side ('a' or 'b')."""
        firsts, idx = self._side[side]
        p = bisect_right(firsts, seq) - 1
        if p < 0:
            return None
        pair = self.pairs[idx[p]]
        count = pair.count_a if side == "a" else pair.count_b
        first = pair.first_a if side == "a" else pair.first_b
        return pair if first <= seq < first + count else None

    def pair_indexes(self, side: str, seqs: list[Any]) -> list[Any]:
        """The index of the pair holding each event seq of side 'a' or 'b'
        (seqs >= 1), -1 for one past the side's last event (C-speed bisection,
        for the 10^5 findings of a long trace)."""
        firsts, idx = self._side[side]
        if not idx:
            return [-1] * len(seqs)
        last = self.pairs[idx[-1]]
        end = last.first_a + last.count_a if side == "a" else last.first_b + last.count_b
        return [idx[bisect_right(firsts, x) - 1] if x < end else -1 for x in seqs]

    def row_of(self, side: str, seq: int) -> int | None:
        """Global row of event seq of side 'a' or 'b' (None if outside)."""
        pair = self.pair_of_seq(side, seq)
        if pair is None:
            return None
        k = pair.row_of(side, seq)
        return None if k is None else pair.row_start + k

    def nearest_row(self, side: str, seq: int) -> int | None:
        """row_of, or the row of the closest event before seq (for a finding
        or cursor position between events); None before the first."""
        firsts, idx = self._side[side]
        p = bisect_right(firsts, seq) - 1
        if p < 0:
            return None
        pair = self.pairs[idx[p]]
        first = pair.first_a if side == "a" else pair.first_b
        count = pair.count_a if side == "a" else pair.count_b
        seq = min(seq, first + count - 1)
        k = pair.row_of(side, seq)
        return pair.row_start + (k if k is not None else pair.n_rows - 1)

    def next_region(self, row: int) -> Region | None:
        """First region starting after row."""
        i = bisect_right(self._region_starts, row)
        return self.regions[i] if i < len(self.regions) else None

    def prev_region(self, row: int) -> Region | None:
        """Last region starting before row."""
        i = bisect_left(self._region_starts, row) - 1
        return self.regions[i] if i >= 0 else None

    def region_at(self, row: int) -> Region | None:
        i = bisect_right(self._region_starts, row) - 1
        if i >= 0 and self.regions[i].row_start <= row < self.regions[i].row_end:
            return self.regions[i]
        return None


# --------------------------------------------------------------------------------
# Streaming op pairing


def op_delta(a: int, b: int) -> int:
    """How much B's op ids are ahead of A's (a run of identical operations
    continues only under the same shift)."""
    return b - a


class EventStream:
    """A cursor over one trace's chunk stream: slices for the lockstep lane,
    whole op groups for the alignment lane.  Consumes only what is asked
    for, so the two lanes can take turns.

    ``chunks`` is an iterable of event lists, or a *chunk source* with
    ``count``, ``decode(i)`` and ``same_bytes(i, other, j)`` (TraceChunks),
    which lets the lockstep lane take a chunk byte-identical to the other
    trace's without decoding it (``adopt``)."""

    __slots__ = ("_it", "src", "ci", "buf", "pos", "_ops", "done", "pushback", "_cont", "loaded")

    def __init__(self, chunks: Any) -> None:
        self.src: Any = chunks if hasattr(chunks, "decode") else None
        self._it: Iterator[list[Event]] = iter(chunks) if self.src is None else iter(())
        self.ci = 0                          # next chunk index (sources)
        self.buf: list[Any] = []
        self.pos = 0
        self._ops: list[int] | None = None
        self.done = False
        self.pushback: list[Any] | None = None    # events to put in front of the next group
        self._cont: tuple[int, int] | None = None     # (op, part): the next group continues a cut one
        self.loaded = 0                      # events taken from the trace so far

    def _next_chunk(self) -> list[Event] | None:
        if self.src is None:
            return next(self._it, None)
        if self.ci >= self.src.count:
            return None
        ch: list[Event] | None = self.src.decode(self.ci)
        self.ci += 1
        return ch

    def _load(self) -> bool:
        while self.pos >= len(self.buf):
            if self.done:
                return False
            ch = self._next_chunk()
            if ch is None:
                self.done = True
                self.buf, self.pos, self._ops = [], 0, None
                return False
            self.buf = ch if type(ch) is list else list(ch)
            self.pos = 0
            self._ops = None
            self.loaded += len(self.buf)
        return True

    def at_chunk_end(self) -> bool:
        return self.pos >= len(self.buf) and not self.done and self.src is not None

    def adopt_from(self, other: EventStream) -> bool:
        """When both are at a chunk boundary and this trace's next chunk is
        byte-identical to the one ``other`` is about to load: load other's
        (decoding it once) and take the same decoded list without decoding
        ours.  True when done."""
        if not (self.at_chunk_end() and other.at_chunk_end()):
            return False
        if self.ci >= self.src.count or other.ci >= other.src.count:
            return False
        if not other.src.same_bytes(other.ci, self.src, self.ci):
            return False
        if not other._load():
            return False
        self.ci += 1
        self.buf, self.pos, self._ops = other.buf, 0, None
        self.loaded += len(self.buf)
        return True

    def available(self) -> int:
        """Events left in the current chunk (loading the next when empty)."""
        return len(self.buf) - self.pos if self._load() else 0

    def peek(self, n: int) -> list[Any]:
        return self.buf[self.pos:self.pos + n]

    def advance(self, n: int) -> None:
        self.pos += n


    def mark_continued(self, op: int, part: int) -> None:
        """The events of op so far were consumed elsewhere (a cut group)."""
        self._cont = (op, part)

    def _chunk_ops(self) -> list[Any]:
        ops = self._ops
        if ops is None:
            ops = self._ops = list(map(_getop, self.buf))
        return ops

    def next_group(self) -> OpGroup | None:
        events: list[Any] = self.pushback or []
        self.pushback = None
        if events:
            op = events[0][I_OP]
        else:
            if not self._load():
                return None
            op = self._chunk_ops()[self.pos]
        while len(events) < MAX_GROUP_EVENTS and self._load():
            ops = self._chunk_ops()
            i = self.pos
            if ops[i] != op:
                break
            j = _run_end(ops, i, op)
            j = min(j, i + MAX_GROUP_EVENTS - len(events))
            events.extend(self.buf[i:j])
            self.pos = j
            if j < len(self.buf):
                break
        cont = self._cont
        part = cont[1] if cont is not None and cont[0] == op else 0
        self._cont = (op, part + 1) if len(events) >= MAX_GROUP_EVENTS else None
        first = events[0][I_SEQ]
        return OpGroup(op, group_key(events[0]) if not part else None, first, events, part)


def _run_end(ops: list[int], i: int, o: int) -> int:
    """End of the run of value o starting at ops[i] (bisect when sorted)."""
    n = len(ops)
    j = bisect_right(ops, o, i)
    if j <= i:
        j = i + 1
    if j - i > 1 and ops[i:j] != [o] * (j - i):
        j = i + 1
    while j < n and ops[j] == o:
        j += 1
    return j


class _IterSource:
    """next_group() over an iterator of OpGroups (pair_groups' input)."""

    def __init__(self, it: Iterable[OpGroup]) -> None:
        self._it = iter(it)

    def next_group(self) -> OpGroup | None:
        return next(self._it, None)


class Pairer:
    """The operation-level alignment, one pair at a time: lockstep on the
    op-begin keys, a bounded look-ahead to resynchronise."""

    def __init__(self, src_a: Any, src_b: Any, window: int = WINDOW) -> None:
        self.sa, self.sb = src_a, src_b
        self.qa: deque[OpGroup] = deque()
        self.qb: deque[OpGroup] = deque()
        self.out: deque[GroupPair] = deque()
        self.window = window

    def _fill(self, q: deque[OpGroup], src: Any, n: int) -> int:
        while len(q) < n:
            g = src.next_group()
            if g is None:
                break
            q.append(g)
        return len(q)

    def idle(self) -> bool:
        return not (self.qa or self.qb or self.out)

    def next(self) -> GroupPair | None:
        """(group_a | None, group_b | None), or None when both are done."""
        if self.out:
            return self.out.popleft()
        qa, qb = self.qa, self.qb
        na, nb = self._fill(qa, self.sa, 1), self._fill(qb, self.sb, 1)
        if not na and not nb:
            return None
        if not nb:
            return qa.popleft(), None
        if not na:
            return None, qb.popleft()
        a, b = qa[0], qb[0]
        if a.match_key() == b.match_key():
            qa.popleft()
            qb.popleft()
            return a, b
        self._fill(qa, self.sa, self.window)
        self._fill(qb, self.sb, self.window)
        anchor = _resync(qa, qb)
        if anchor is None:
            # No common key ahead: same op id and verb still means "the same
            # operation with other arguments"; otherwise one-sided.
            qa.popleft()
            qb.popleft()
            if a.op == b.op and a.verb == b.verb and a.part == b.part:
                return a, b
            self.out.append((None, b))
            return a, None
        i, j = anchor
        gap_a = [qa.popleft() for _ in range(i)]
        gap_b = [qb.popleft() for _ in range(j)]
        self.out.extend(_pair_gap(gap_a, gap_b))
        return self.out.popleft()


def pair_groups(groups_a: Iterator[OpGroup], groups_b: Iterator[OpGroup],
                window: int = WINDOW) -> Iterator[GroupPair]:
    """Yield (group_a | None, group_b | None) in alignment order."""
    p = Pairer(_IterSource(groups_a), _IterSource(groups_b), window)
    while (pair := p.next()) is not None:
        yield pair


# --------------------------------------------------------------------------------
# The lockstep lane


def slice_mismatch(xa: list[Any], xb: list[Any]) -> int:
    """Index of the first event of xb that differs from xa's (modulo a
    constant seq and op shift taken at the first event), len when none.
    C-speed list comparison; xb's events are renumbered in place and
    restored."""
    n = len(xa)
    if xa == xb:
        return n
    seq, op = I_SEQ, I_OP       # locals: the loops below run once per event
    d = xb[0][seq] - xa[0][seq]
    dop = xb[0][op] - xa[0][op]
    if not d and not dop:
        return _first_unequal(xa, xb)
    if _shares(xa, xb):
        return _mismatch_slow(xa, xb)
    for ev in xb:
        ev[seq] -= d
        ev[op] -= dop
    try:
        return n if xa == xb else _first_unequal(xa, xb)
    finally:
        for ev in xb:
            ev[seq] += d
            ev[op] += dop


def _shares(xa: list[Event], xb: list[Event]) -> bool:
    """Do the two lists hold any event object in common (a chunk decoded once
    for both traces)?  Then nothing may be renumbered in place."""
    return not set(map(id, xa)).isdisjoint(map(id, xb))


def _first_unequal(xa: list[Event], xb: list[Event]) -> int:
    # the first True of map(ne, ...), found without a Python-level loop
    i = next(compress(count(), map(ne, xa, xb)), None)
    return min(len(xa), len(xb)) if i is None else i


def _mismatch_slow(xa: list[Event], xb: list[Event]) -> int:
    for i, (x, y) in enumerate(zip(xa, xb)):
        if not same_payload(x, y):
            return i
    return min(len(xa), len(xb))


def last_op_start(evs: list[Any], lo: int, start: int) -> int:
    """Index in evs where its last operation begins, knowing that evs[:lo]
    (lo > 0) had its last operation begin at ``start`` and that evs begins
    an operation."""
    n = len(evs)
    if n == lo:
        return start if lo else 0
    k = n - 1
    while k > lo:
        if evs[k - 1][I_OP] != evs[k][I_OP]:
            return k
        k -= 1
    if lo == 0:
        return 0
    return lo if evs[lo - 1][I_OP] != evs[lo][I_OP] else start


def _resync(qa: deque[OpGroup], qb: deque[OpGroup]) -> tuple[int, int] | None:
    """Nearest (i, j) with equal keys (ties: same op id), or None."""
    first_b: dict[Any, list[int]] = {}
    for j, g in enumerate(qb):
        first_b.setdefault(g.match_key(), []).append(j)
    best: tuple[int, int] | None = None
    best_score: float | None = None
    for i, g in enumerate(qa):
        if best_score is not None and i >= best_score:
            break
        for j in first_b.get(g.match_key(), ()):
            score = i + j + (0 if g.op == qb[j].op else 0.5)
            if best_score is None or score < best_score:
                best, best_score = (i, j), score
            break
    return best


def _pair_gap(gap_a: list[OpGroup], gap_b: list[OpGroup]) -> Iterator[GroupPair]:
    """Groups skipped by a resync: pair those with the same op id and verb,
    in order; the rest are one-sided (A's before B's at each step)."""
    j = 0
    for g in gap_a:
        hit: int | None = None
        for k in range(j, len(gap_b)):
            if gap_b[k].op == g.op and gap_b[k].verb == g.verb:
                hit = k
                break
        if hit is None:
            yield g, None
            continue
        for k in range(j, hit):
            yield None, gap_b[k]
        yield g, gap_b[hit]
        j = hit + 1
    for k in range(j, len(gap_b)):
        yield None, gap_b[k]
