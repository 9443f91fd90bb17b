"""Random access into a trace's replayed state: checkpoints, seek and the
seq indexes ("next write of this context entry", "previous event of kind K").

Checkpoints sit at chunk boundaries (state after ``first_seq - 1`` of a chunk),
so a seek restores the nearest one at or before the target and folds the
events of at most a few chunks: cost does not grow with the distance from the
current step or with the trace length (docs/CLI.md#positions).  They are kept in a
``SortedDict`` seq -> locator; a locator is either a state in memory or a slice
of the sidecar's checkpoint entry, decoded on demand through a small LRU, so
memory does not grow with the trace.

How often to checkpoint: at most every chunk (about K = 1024 events), and only
once the trace bytes since the last checkpoint reach what that checkpoint
cost -- the checkpoints then never outweigh the trace (measured with `python -m bench` G6), at the
price of a longer fold per seek on a platform whose state changes a lot.
Persisted checkpoints share unchanged tables with the previous one
(CheckpointWriter), so on most traces a checkpoint costs a few hundred bytes
and there is one per chunk.

The indexes answer "next/previous" with a bisect: sorted seq arrays per
context entry written (SeqIndex), and per event kind the sorted chunks that
hold it plus a one-byte-per-event kind column searched inside one chunk
(KindIndex).

Event access goes through a *chunk source*: ``chunks`` (a list of
``(offset, first_seq, count)``), ``read_chunk(i)`` returning chunk i's events
and ``iter_chunks()`` yielding them all in order (the build pass); it may stop
early at damage.  replay.session adapts the trace reader to it.
"""

from __future__ import annotations

import gc
import io
from array import array
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
from sortedcontainers import SortedDict

from tracer import schema as S

from .state import (
    JOURNALED,
    STATE_FORMAT,
    TABLES,
    BadEvent,
    Event,
    ReplayState,
    assemble,
    decode_table,
    encode_table,
    fold,
    scalars_of,
    set_position,
    table_body,
    table_from_body,
)

# Keep (at least) this many events between two checkpoints.
DEFAULT_MIN_EVENTS = 1000
# Decoded checkpoints and chunks kept for stepping back and forth.
STATE_CACHE = 8
CHUNK_CACHE = 4
# Decoded checkpoint tables shared between restores.
TABLE_CACHE = 256
# Tables at least this big are stored as deltas against a full copy when they change a little.
DELTA_MIN = 512
# Tables of at most this many entries live inside the checkpoint record.
INLINE_MAX = 64


class ChunkSource(Protocol):
    """Event access for seeks and the build pass (see the module docstring)."""

    @property
    def chunks(self) -> Sequence[tuple[int, int, int]]: ...
    def read_chunk(self, i: int) -> Sequence[Event]: ...
    def iter_chunks(self) -> Iterator[Sequence[Event]]: ...


class CheckpointSink(Protocol):
    """Where a build puts checkpoints: ``add(state) -> locator``."""

    def add(self, st: ReplayState) -> Any: ...


class Store(CheckpointSink, Protocol):
    """A sink that also restores: ``load(locator) -> state``."""

    def load(self, locator: Any) -> ReplayState: ...


class ColumnSink(Protocol):
    def write(self, data: bytes, /) -> object: ...


if TYPE_CHECKING:
    # An array("I") or array("Q") of sorted seqs or chunk indices (annotations only:
    # array is not subscriptable at run time before Python 3.12).
    SeqArray = array[int]


def seq_typecode(count: int) -> str:
    return "I" if count < 1 << 32 else "Q"


class SeqIndex:
    """Sorted seq arrays per key, with next/previous queries."""

    def __init__(self, arrays: dict[Any, SeqArray] | None = None,
                 loader: Callable[[Any], SeqArray | None] | None = None) -> None:
        self._arrays = dict(arrays or {})
        self._loader = loader       # key -> array or None, for lazily loaded keys

    def seqs(self, key: Any) -> SeqArray | None:
        arr = self._arrays.get(key)
        if arr is None and self._loader is not None:
            arr = self._loader(key)
            if arr is not None:
                self._arrays[key] = arr
        return arr

    def next_after(self, key: Any, seq: int) -> int | None:
        """The first seq > ``seq`` under ``key``, or None."""
        arr = self.seqs(key)
        if not arr:
            return None
        i = bisect_right(arr, seq)
        return arr[i] if i < len(arr) else None

    def prev_before(self, key: Any, seq: int) -> int | None:
        """The last seq < ``seq`` under ``key``, or None."""
        arr = self.seqs(key)
        if not arr:
            return None
        i = bisect_left(arr, seq)
        return arr[i - 1] if i > 0 else None

    def count(self, key: Any) -> int:
        arr = self.seqs(key)
        return len(arr) if arr else 0


class KindIndex:
    """"Next/previous event of kind K" in O(log n).

    Per kind, the sorted list of chunk indices holding at least one event of
    that kind; plus the trace's kind column (one byte per event, byte
    ``seq - 1``), read a chunk at a time.  A query bisects the kind's chunk
    list and finds the event inside one chunk's column with bytes.find --
    one byte per event and a cheap build pass, where per-kind seq lists
    would cost 4 bytes per event and a Python append per event to build.

    ``read_column(start, length)`` returns ``length`` bytes of the column
    from event index ``start`` (= seq - 1)."""

    def __init__(self, firsts: list[int], counts: list[int], kind_chunks: dict[int, SeqArray],
                 read_column: Callable[[int, int], bytes]) -> None:
        self._firsts = firsts
        self._counts = counts
        self._chunks = kind_chunks            # kind code -> array of chunk indices
        self._read = read_column
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._seqs: dict[int, SeqArray] = {}

    def _column(self, i: int) -> bytes:
        col = self._cache.get(i)
        if col is None:
            col = self._read(self._firsts[i] - 1, self._counts[i])
            self._cache[i] = col
            if len(self._cache) > CHUNK_CACHE * 4:
                self._cache.popitem(last=False)
        return col

    def _chunk_of(self, seq: int) -> int:
        return bisect_right(self._firsts, seq) - 1

    def next_after(self, kind: int, seq: int) -> int | None:
        arr = self._chunks.get(kind)
        if not arr or not 0 <= kind < 256:
            return None
        b = bytes((kind,))
        start = max(seq + 1, 1)
        i = self._chunk_of(start)
        if i >= 0:
            j = self._column(i).find(b, start - self._firsts[i])
            if j >= 0:
                return self._firsts[i] + j
        k = bisect_right(arr, i)
        if k == len(arr):
            return None
        c = arr[k]
        return self._firsts[c] + self._column(c).find(b)

    def prev_before(self, kind: int, seq: int) -> int | None:
        arr = self._chunks.get(kind)
        if not arr or not 0 <= kind < 256 or seq <= 1:
            return None
        b = bytes((kind,))
        last = seq - 1
        i = self._chunk_of(last)
        if i < 0:
            return None
        if i < len(self._firsts):
            j = self._column(i).rfind(b, 0, last - self._firsts[i] + 1)
            if j >= 0:
                return self._firsts[i] + j
        k = bisect_left(arr, i) - 1
        if k < 0:
            return None
        c = arr[k]
        return self._firsts[c] + self._column(c).rfind(b)

    def seqs(self, kind: int) -> SeqArray:
        """Every seq of ``kind`` as a sorted array (built on first request from
        the column, then kept): for rare kinds such as op-begin."""
        arr = self._seqs.get(kind)
        if arr is None:
            arr = array("Q")
            chunks = self._chunks.get(kind)
            if chunks and 0 <= kind < 256:
                b = bytes((kind,))
                for c in chunks:
                    col, first = self._column(c), self._firsts[c]
                    j = col.find(b)
                    while j >= 0:
                        arr.append(first + j)
                        j = col.find(b, j + 1)
            self._seqs[kind] = arr
        return arr

    def count(self, kind: int) -> int:
        return len(self.seqs(kind))


class Checkpoints:
    """seq -> state after that many events.  Values are locators resolved by
    ``load`` (a MemoryStore's state, a CheckpointReader's (offset, length))."""

    def __init__(self, load: Callable[[Any], ReplayState]) -> None:
        self.map = SortedDict()
        self._load = load
        self._cache: OrderedDict[int, ReplayState] = OrderedDict()

    def add(self, seq: int, value: Any) -> None:
        self.map[seq] = value

    def __len__(self) -> int:
        return len(self.map)

    def floor(self, n: int) -> int:
        """The greatest checkpoint seq <= n."""
        i = self.map.bisect_right(n) - 1
        if i < 0:
            raise KeyError(n)
        seq: int = self.map.peekitem(i)[0]
        return seq

    def state(self, seq: int) -> ReplayState:
        """The checkpoint's state -- shared, callers copy before folding."""
        st = self._cache.get(seq)
        if st is not None:
            self._cache.move_to_end(seq)
            return st
        st = self._load(self.map[seq])
        self._cache[seq] = st
        if len(self._cache) > STATE_CACHE:
            self._cache.popitem(last=False)
        return st


class Seeker:
    """state_at(n) over a chunk source and its checkpoints; keeps the last
    state so stepping forward folds one event, not a chunk."""

    def __init__(self, source: ChunkSource, checkpoints: Checkpoints, count: int) -> None:
        self.source = source
        self.checkpoints = checkpoints
        self.count = count
        self._first = [c[1] for c in source.chunks]
        self._chunk_cache: OrderedDict[int, Sequence[Event]] = OrderedDict()
        self._cur: ReplayState | None = None

    def chunk(self, i: int) -> Sequence[Event]:
        evs = self._chunk_cache.get(i)
        if evs is None:
            evs = self.source.read_chunk(i)
            self._chunk_cache[i] = evs
            if len(self._chunk_cache) > CHUNK_CACHE:
                self._chunk_cache.popitem(last=False)
        else:
            self._chunk_cache.move_to_end(i)
        return evs

    def chunk_of(self, seq: int) -> int:
        return bisect_right(self._first, seq) - 1

    def event(self, seq: int) -> Event:
        if not 1 <= seq <= self.count:
            raise IndexError(seq)
        i = self.chunk_of(seq)
        return self.chunk(i)[seq - self._first[i]]

    def events(self, start: int, stop: int) -> Iterator[Event]:
        """Events start..stop-1 (seq), read chunk by chunk."""
        seq = max(start, 1)
        stop = min(stop, self.count + 1)
        while seq < stop:
            i = self.chunk_of(seq)
            evs = self.chunk(i)
            first = self._first[i]
            part = evs[seq - first: stop - first]
            yield from part
            seq = first + len(evs)

    def _fold_to(self, st: ReplayState, n: int) -> ReplayState:
        seq = st.seq
        while seq < n:
            i = self.chunk_of(seq + 1)
            evs = self.chunk(i)
            first = self._first[i]
            lo, hi = seq + 1 - first, min(n + 1 - first, len(evs))
            if hi <= lo:        # a chunk that does not hold the seqs it claims
                raise IndexError(f"event {seq + 1} missing from chunk {i}")
            fold(st, evs[lo:hi] if (lo or hi != len(evs)) else evs)
            # Positions, not the events' own seq fields, say where we are.
            seq = st.seq = seq + hi - lo
        return st

    def state_at(self, n: int) -> ReplayState:
        """The state after n events (0 = before any).  The caller owns the
        returned object."""
        if not 0 <= n <= self.count:
            raise IndexError(f"step {n} outside 0..{self.count}")
        # A seek decodes a chunk (thousands of small lists) and folds: cyclic
        # GC passes over that garbage-free allocation burst cost up to 40 %.
        was = gc.isenabled()
        gc.disable()
        try:
            return self._state_at(n)
        finally:
            if was:
                gc.enable()

    def _state_at(self, n: int) -> ReplayState:
        cur = self._cur
        base = self.checkpoints.floor(n)
        # Continue from the current state when it is on the way and no farther
        # from n than the checkpoint (stepping forward: one event).
        if cur is None or not base <= cur.seq <= n:
            cur = self.checkpoints.state(base).copy()
        self._cur = self._fold_to(cur, n)
        return self._cur.copy()


# --- checkpoint storage -------------------------------------------------------------

class MemoryStore:
    """Checkpoints as state copies in memory (small traces, tests)."""

    def add(self, st: ReplayState) -> ReplayState:
        return st.copy()

    def load(self, locator: ReplayState) -> ReplayState:
        return locator


# Ref tags in a checkpoint record.
INLINE, BLOB, DELTA = 0, 1, 2
# msgpack array headers: the 3-element record and its list of per-table refs.
_RECORD_HEAD = b"\x93"
_REFS_HEAD = b"\xdc" + len(TABLES).to_bytes(2, "big")


class CheckpointWriter:
    """Checkpoints streamed into a byte store, sharing what did not change.

    A checkpoint is one record ``[STATE_FORMAT, scalars, refs]`` with one ref
    per table: ``[INLINE, body]`` -- the table itself, for small ones (up to
    INLINE_MAX entries: no extra read, one msgpack call for the record) --
    ``[BLOB, offset, length]`` of a table written on its own, or ``[DELTA,
    offset, length, base offset, base length]``: ``[[(key, value) ...],
    [removed keys]]`` against a full blob.

    A table unchanged since the previous checkpoint reuses that checkpoint's
    ref.  "Unchanged" comes from the state's journal for the tables the rare
    handlers own (replay.state JOURNALED: no need to compare thousands of
    domains) and from a dict comparison for the small fast-path tables.  A
    large journaled table that changed a little becomes a delta.  So a
    checkpoint costs the tables that moved, and restoring one decodes only
    what is not already in the reader's cache.

    ``write(data) -> offset``; a checkpoint's locator is the (offset, length)
    of its record."""

    def __init__(self, write: Callable[[bytes], int]) -> None:
        self._write = write
        # table name -> (copy of the table or None, its packed ref)
        self._prev: dict[str, tuple[dict[Any, Any] | None, bytes]] = {}
        # journaled table name -> (blob ref, keys touched since)
        self._base: dict[str, tuple[tuple[Any, ...], set[Any]]] = {}
        self.bytes = 0

    def _put(self, data: bytes) -> tuple[int, int]:
        self.bytes += len(data)
        return (self._write(data), len(data))

    def _full(self, name: str, d: dict[Any, Any]) -> tuple[Any, ...]:
        if len(d) <= INLINE_MAX:
            self._base.pop(name, None)
            return (INLINE, table_body(name, d))
        ref = (BLOB,) + self._put(encode_table(name, d))
        if name in JOURNALED and len(d) >= DELTA_MIN:
            self._base[name] = (ref, set())
        return ref

    def _changed(self, name: str, d: dict[Any, Any], keys: set[Any]) -> tuple[Any, ...]:
        base = self._base.get(name)
        if base is not None:
            ref, pending = base
            pending |= keys
            # A delta costs its keys; past 1/16 of the table a full copy is
            # as cheap to write and cheaper to read.
            if len(pending) * 16 <= len(d):
                changed = [(k, d[k]) for k in pending if k in d]
                removed = [k for k in pending if k not in d]
                return (DELTA,) + self._put(msgpack.packb([changed, removed])) + ref[1:]
        return self._full(name, d)

    def add(self, st: ReplayState) -> tuple[int, int]:
        journal = st.journal
        touched: dict[str, set[Any]] | None = None
        if journal is not None:
            if self._prev:
                touched = {}
                for name, key in journal:
                    touched.setdefault(name, set()).add(key)
            journal.clear()
        prev = self._prev
        parts: list[bytes] = []
        for name in TABLES:
            d = getattr(st, name)
            p = prev.get(name)
            if name in JOURNALED:
                if touched is not None and p is not None:
                    keys = touched.get(name)
                    if not keys:
                        parts.append(p[1])
                        continue
                    ref = self._changed(name, d, keys)
                else:
                    # No journal to go by: write it whole, start a new base.
                    self._base.pop(name, None)
                    ref = self._full(name, d)
                p = prev[name] = (None, msgpack.packb(ref))
            elif p is None or p[0] != d:
                p = prev[name] = (d.copy(), msgpack.packb(self._full(name, d)))
            parts.append(p[1])
        # The record, assembled from refs packed once when they were made:
        # re-packing unchanged inline tables for every checkpoint was most
        # of its cost.
        record = b"".join((_RECORD_HEAD, msgpack.packb(STATE_FORMAT), msgpack.packb(scalars_of(st)),
                           _REFS_HEAD, *parts))
        return self._put(record)


class CheckpointReader:
    """Restores checkpoints written by CheckpointWriter.  Tables read from
    blobs are shared through an LRU keyed by their ref: they are never
    mutated (Seeker copies a checkpoint before folding on)."""

    def __init__(self, read: Callable[[int, int], bytes], cache_tables: int = TABLE_CACHE) -> None:
        self._read = read           # (offset, length) -> bytes
        self._tables: OrderedDict[Any, dict[Any, Any]] = OrderedDict()
        self._max = cache_tables

    def _cached(self, key: Any) -> dict[Any, Any] | None:
        cache = self._tables
        d = cache.get(key)
        if d is not None:
            cache.move_to_end(key)
        return d

    def _remember(self, key: Any, d: dict[Any, Any]) -> None:
        cache = self._tables
        cache[key] = d
        if len(cache) > self._max:
            cache.popitem(last=False)

    def _blob(self, name: str, off: int, n: int) -> dict[Any, Any]:
        d = self._cached((off, n))
        if d is None:
            d = decode_table(name, self._read(off, n))
            self._remember((off, n), d)
        return d

    def _table(self, name: str, ref: Any) -> dict[Any, Any]:
        tag = ref[0]
        if tag == INLINE:
            return table_from_body(name, ref[1])
        if tag == BLOB:
            return self._blob(name, ref[1], ref[2])
        d = self._cached(ref)
        if d is None:
            base = self._blob(name, ref[3], ref[4])
            changed, removed = msgpack.unpackb(self._read(ref[1], ref[2]), use_list=False,
                                               strict_map_key=False)
            d = base.copy()
            d.update(changed)
            for k in removed:
                d.pop(k, None)
            self._remember(ref, d)
        return d

    def load(self, locator: tuple[int, int]) -> ReplayState:
        fmt, scalars, refs = msgpack.unpackb(self._read(*locator), use_list=False, strict_map_key=False)
        if fmt != STATE_FORMAT or len(refs) != len(TABLES):
            raise ValueError(f"checkpoint format {fmt}, expected {STATE_FORMAT}")
        return assemble(scalars, [self._table(name, ref) for name, ref in zip(TABLES, refs)])


# --- building ---------------------------------------------------------------------

class BuildResult:
    __slots__ = ("final", "kinds", "ctx", "checkpoints", "error", "error_chunk", "column")

    def __init__(self, final: ReplayState, kinds: dict[int, SeqArray], ctx: dict[tuple[int, int, int], SeqArray],
                 checkpoints: list[tuple[int, Any]], error: BadEvent | None = None,
                 error_chunk: tuple[int, int] | None = None, column: ColumnSink | None = None) -> None:
        self.column = column            # the kind column sink given to build()
        self.final = final              # state after the last event folded
        self.kinds = kinds              # kind code -> array of chunk indices (KindIndex)
        self.ctx = ctx                  # (iommu, bus, devfn) -> array of seqs
        self.checkpoints = checkpoints  # [(seq, locator)]
        self.error = error              # BadEvent that ended the pass early, or None
        self.error_chunk = error_chunk  # (chunk index, chunk offset) of that event


def build(source: ChunkSource, initial: ReplayState, store: CheckpointSink | None = None,
          column: ColumnSink | None = None, *, min_events: int = DEFAULT_MIN_EVENTS,
          progress: Callable[[int, int], object] | None = None) -> BuildResult:
    """One pass over every chunk: fold, checkpoint, index.

    ``store.add(state) -> locator`` keeps each checkpoint (MemoryStore by
    default, CheckpointWriter for the sidecar); ``column.write(bytes)``
    receives the kind column chunk by chunk (an io.BytesIO by default, see
    KindIndex).  A checkpoint is taken at a
    chunk start once ``min_events`` events and as many trace bytes as the
    last checkpoint cost went by.  The garbage collector is frozen for the
    pass: the fold allocates many small long-lived tuples and collecting
    over them is pure overhead (measured up to 3x)."""
    store = store if store is not None else MemoryStore()
    column = column if column is not None else io.BytesIO()
    chunks = list(source.chunks)
    count = sum(c[2] for c in chunks)
    tc = seq_typecode(count)
    nk = len(S.KINDS)
    kind_chunks = {code: array("I") for code in range(nk)}
    ctx: dict[tuple[int, int, int], SeqArray] = {}
    ctx_byte = bytes((S.K_CTX_WRITE,))
    F_IOMMU, F_BUS, F_DEVFN = S.F_CTX_WRITE_IOMMU, S.F_CTX_WRITE_BUS, S.F_CTX_WRITE_DEVFN
    kind_of = itemgetter(0)
    st = initial.copy()
    st.journal = []             # lets the checkpoint writer skip unchanged tables
    cps: list[tuple[int, Any]] = []
    since_events = since_bytes = 0
    cost = 0
    offsets = [c[0] for c in chunks] + [None]
    gc_was = gc.isenabled()
    gc.freeze()
    gc.disable()
    error: BadEvent | None = None
    error_chunk: tuple[int, int] | None = None
    try:
        for i, evs in enumerate(source.iter_chunks()):
            off, first, cnt = chunks[i]
            if i == 0 or (since_events >= min_events and since_bytes >= cost):
                before_bytes = getattr(store, "bytes", 0)
                cps.append((st.seq, store.add(st)))
                cost = getattr(store, "bytes", 0) - before_bytes
                since_events = since_bytes = 0
            try:
                fold(st, evs)
                st.seq = first + len(evs) - 1     # by position (see Seeker._fold_to)
            except BadEvent as exc:
                # The fold changed nothing for the bad event (BadEvent's
                # contract): the trace ends just before it.
                j = next((n for n, e in enumerate(evs) if e is exc.event), len(evs))
                evs = evs[:j]
                if evs:
                    set_position(st, evs[-1])
                    st.seq = first + len(evs) - 1
                error, error_chunk = exc, (i, off)
            # The kind column, built at C speed; seqs come from positions (the
            # reader vouches for a chunk's first seq and count, not for each
            # event's own seq field).
            try:
                col = bytes(map(kind_of, evs))
            except (TypeError, ValueError):      # kinds that are no byte: unknown
                col = bytes(k if type(k) is int and 0 <= k < 256 else 255 for k in map(kind_of, evs))
            column.write(col)
            for k in set(col):
                if k < nk:
                    kind_chunks[k].append(i)
            j = col.find(ctx_byte)
            while j >= 0:
                ev = evs[j]
                key = (ev[F_IOMMU], ev[F_BUS], ev[F_DEVFN])
                a = ctx.get(key)
                if a is None:
                    a = ctx[key] = array(tc)
                a.append(first + j)
                j = col.find(ctx_byte, j + 1)
            since_events += cnt
            nxt = offsets[i + 1]
            since_bytes += (nxt - off) if nxt is not None else 0
            if progress is not None:
                progress(st.seq, count)
            if error is not None:
                break
        # The end of the trace is where `show` looks by default: make it free.
        if not cps or cps[-1][0] != st.seq:
            cps.append((st.seq, store.add(st)))
    finally:
        gc.unfreeze()
        if gc_was:
            gc.enable()
    return BuildResult(st, kind_chunks, ctx, cps, error, error_chunk, column)


def checkpoints_from(result: BuildResult, store: Store | CheckpointReader | None = None) -> Checkpoints:
    """The Checkpoints of a build, loading through ``store`` (MemoryStore
    when the build kept states, CheckpointReader for the sidecar)."""
    store = store if store is not None else MemoryStore()
    cp = Checkpoints(store.load)
    for seq, locator in result.checkpoints:
        cp.add(seq, locator)
    return cp
