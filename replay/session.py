"""``ReplaySession(path)``: one open trace with its replay machinery -- the
facade the CLI and the TUI use.

Opening reads the trace header and, when the sidecar beside the trace is
trusted for the trace as it is now (replay.sidecar: same identity, or the
same content after one CRC pass), only the sidecar's table of contents:
checkpoints and indexes are loaded lazily.  Otherwise one pass over the trace
folds every event, writes a checkpoint every chunk or so into the sidecar and
builds the seq indexes (replay.seek.build), so later opens are instant.  A
builder holds the sidecar's writer lock from before the pass: a second
process opening at the same time waits and reuses the result.

A damaged trace replays up to its last good event; ``stop`` says where reading
stopped (the reader's StopReport).  An event the fold cannot apply (a chunk
with a valid CRC but events that do not follow the schema) ends the readable
part the same way.

The cache never outvotes the trace.  Every chunk an answer reads is
CRC-checked as it is read (replay.reader); when one fails although the
sidecar vouched for it (the file was changed behind an identical identity),
the session drops the sidecar, replays the readable part from the trace
again and reports the damage (``damage_found``) -- an answer past it raises
IndexError like any step beyond the end.  A sidecar entry that fails its
checksum or does not decode is dropped and rebuilt the same way, never used.
A sidecar that cannot be written (full disk) leaves the data in memory.
"""

from __future__ import annotations

import io
from array import array
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgpack

from replay.codes import Translate, event_translator
from tracer import schema as S

from . import render
from .codeid import code_key
from .reader import PathArg, StopReport, Trace, open_trace
from .seek import (
    DEFAULT_MIN_EVENTS,
    CheckpointReader,
    Checkpoints,
    CheckpointWriter,
    KindIndex,
    Seeker,
    SeqIndex,
    build,
    seq_typecode,
)
from .sidecar import Sidecar, SidecarCorrupt, SidecarError, SidecarWriteError, content_of, scan_content, trace_identity
from .state import STATE_FORMAT, Event, ReplayState, initial_state

if TYPE_CHECKING:
    from .seek import SeqArray

# Bump when what the session stores in the sidecar changes shape or meaning.
SESSION_FORMAT = 1
K_META = "replay/meta"
K_CHECKPOINTS = "replay/checkpoints"
K_CTX = "replay/ctx"
K_KIND_CHUNKS = "replay/kind-chunks"
K_KIND_COLUMN = "replay/kind-column"


_T = TypeVar("_T")
Progress = Callable[[int, int], object]


class _Findings(Protocol):
    """What ``ReplaySession.findings`` holds (replay.hazards.FindingIndex)."""

    def open_at(self, n: int) -> Sequence[Any]: ...


def _build_key() -> list[Any]:
    """What a sidecar's derived data depends on besides the trace bytes."""
    return [SESSION_FORMAT, STATE_FORMAT, len(S.KINDS), len(S.FUNCS), *code_key("fold")]


class ChunkUnreadable(IndexError):
    """A chunk the index said was readable failed its checks when read."""




class _Source:
    """The chunk source protocol of replay.seek over a reader Trace."""

    def __init__(self, trace: Trace, translate: Translate | None, count: int) -> None:
        self.trace = trace
        self.translate = translate
        self.chunks = [c for c in trace.chunks if c[1] <= count]
        self._count = count

    def _fix(self, evs: Sequence[Event]) -> Sequence[Event]:
        if self.translate is not None:
            evs = self.translate(evs)
        if evs and evs[-1][S.I_SEQ] > self._count:
            # The readable trace ends inside this chunk (an event the fold
            # could not apply): positions, not seq fields, decide.
            evs = evs[:max(0, self._count - evs[0][S.I_SEQ] + 1)]
        return evs

    def read_chunk(self, i: int) -> Sequence[Event]:
        evs = next(self.trace.iter_chunks(i, folded=True), None)
        if evs is None:
            raise ChunkUnreadable(f"chunk {i} is unreadable: "
                                  f"{self.trace.stop.describe() if self.trace.stop else 'damaged'}")
        return self._fix(evs)

    def iter_chunks(self) -> Iterator[Sequence[Event]]:
        for evs in self.trace.iter_chunks(folded=True):
            yield self._fix(evs)


class ReplaySession:
    """An open trace: header, events, ``state_at(n)`` and index queries.

    ``sidecar=False`` keeps everything in a temporary store (tests, one-off
    runs).  Raises reader.NotATrace for what is not a trace."""

    # Set by _open (close() copes with an open that failed before).
    sidecar: Sidecar
    count: int
    stop: StopReport | None
    checkpoints: Checkpoints
    ctx_index: SeqIndex
    findings: _Findings | None

    def __init__(self, path: PathArg, *, sidecar: bool = True, min_events: int = DEFAULT_MIN_EVENTS,
                 progress: Progress | None = None) -> None:
        self.path = path
        # The identity first: data read after it is bound to it, and a file
        # replaced meanwhile makes the commit refuse (replay.sidecar).
        self.identity = trace_identity(path)
        # verify=False: the O(1) open; every chunk's CRC is still checked when
        # it is decoded, and the first open decodes them all.  Events as
        # tuples: one allocation less per event to make and to free, which
        # is most of what a seek costs besides the fold.
        self.trace = open_trace(path, verify=False, tuples=True)
        self._min_events = min_events
        self.damage_found = False   # a chunk failed its CRC behind a sidecar that vouched for it
        try:
            self._open(sidecar, progress)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open_cached(cls, path: PathArg) -> ReplaySession | None:
        """The session when the trace's sidecar already holds trusted
        checkpoints of this build, so that opening is O(1) (or one CRC pass
        when the trace's identity changed); None otherwise (it never folds
        the trace to build them).  Raises reader.NotATrace like the
        constructor."""
        try:
            with Sidecar.open(path) as sc:
                meta = sc.get(K_META) if sc.trusted else None
                ok = (isinstance(meta, dict) and list(meta.get("build") or ()) == _build_key()
                      and K_CHECKPOINTS in sc)
        except (OSError, SidecarError):
            return None
        if not ok:
            return None
        session = cls(path)
        if session.built:       # the sidecar changed in between: it had to build after all
            session.close()
            return None
        return session

    def _open(self, use_sidecar: bool, progress: Progress | None) -> None:
        trace = self.trace
        self.header = trace.header
        self.view = render.PlatformView(self.header)
        self.initial = initial_state(self.header)
        self._translate = event_translator(trace.schema)
        if use_sidecar:
            self.sidecar = Sidecar.open(self.path, self.identity)
        else:
            self.sidecar = Sidecar.temporary(self.path, self.identity)
        self.built = False          # True when this open had to fold the whole trace
        self.findings = None        # hook: an object with open_at(n) -> [finding dict]
        if not self._try_load():
            self._build_shared(progress)
        self._attach()

    def _attach(self) -> None:
        self.source = _Source(self.trace, self._translate, self.count)
        self.seeker = Seeker(self.source, self.checkpoints, self.count)

    # --- index: load or build ------------------------------------------------

    def _try_load(self) -> bool:
        self._kinds: KindIndex | None = None
        self._kind_chunks: dict[int, SeqArray] | None = None
        self._ctx_all: dict[tuple[int, int, int], SeqArray] | None = None
        if not self.sidecar.trusted:
            return False
        try:
            meta = self.sidecar.get(K_META)
            return isinstance(meta, dict) and self._load(meta)
        except SidecarError:
            return False

    def _load(self, meta: dict[str, Any]) -> bool:
        if list(meta.get("build") or ()) != _build_key() or K_CHECKPOINTS not in self.sidecar:
            return False
        try:
            count = meta["count"]
            tc = meta["typecode"]
            seqs, offs, lens = (array("Q", b) for b in meta["checkpoints"])
            stop = meta.get("stop")
            stop = StopReport(*stop) if stop else None
            if type(count) is not int or tc not in ("I", "Q") or not len(seqs) == len(offs) == len(lens):
                return False
        except (KeyError, TypeError, ValueError):
            return False
        if count > self.trace.count or not len(seqs):
            return False
        self.count = count
        self.stop = stop if stop is not None else self.trace.stop
        self._tc = tc
        self.checkpoints = Checkpoints(self._reader().load)
        for s, o, n in zip(seqs, offs, lens):
            self.checkpoints.add(s, (o, n))
        self.ctx_index = SeqIndex(loader=self._load_ctx)
        return True

    def _reader(self) -> CheckpointReader:
        sc = self.sidecar
        reader = CheckpointReader(lambda off, n: sc.read(K_CHECKPOINTS, off, n))
        load = reader.load

        def checked(locator: tuple[int, int]) -> ReplayState:
            # The bytes passed their block CRCs; a record that still does not
            # decode (a sidecar crafted or written by a build with the same
            # key but other shapes) is a bad entry all the same: rebuild,
            # never raise.  msgpack and the shape checks of
            # CheckpointReader/assemble raise these on such bytes; anything
            # else is a bug and propagates.
            try:
                return load(locator)
            except (msgpack.UnpackException, ValueError, TypeError, IndexError, KeyError) as exc:
                raise SidecarCorrupt(f"checkpoint does not decode: {type(exc).__name__}") from None
        reader.load = checked  # type: ignore[method-assign]  # the checked loader replaces the bare one
        return reader

    @property
    def kinds(self) -> KindIndex:
        """The per-kind index: next_after / prev_before / seqs(code)."""
        return self._kind_index()

    def _kind_index(self) -> KindIndex:
        """Built on first use: the per-kind chunk lists are read then."""
        if self._kinds is None:
            chunks = self._kind_chunks
            if chunks is None:
                raw = self.sidecar.get(K_KIND_CHUNKS) or {}
                chunks = {}
                try:
                    # A crafted entry: not a map, names or bytes of other types.
                    for name, b in raw.items():
                        kind = S.KIND_BY_NAME.get(name)
                        if kind is not None:
                            arr = array("I")
                            arr.frombytes(b)
                            chunks[kind.code] = arr
                except (AttributeError, TypeError, ValueError):
                    raise SidecarCorrupt("kind index does not decode") from None
            src = self.source.chunks
            sc = self.sidecar
            self._kinds = KindIndex([c[1] for c in src], [c[2] for c in src], chunks,
                                    lambda start, n: sc.read(K_KIND_COLUMN, start, n))
        return self._kinds

    def _load_ctx(self, key: tuple[int, int, int]) -> SeqArray | None:
        # All context-entry lists come in one entry (they are few and small).
        if self._ctx_all is None:
            raw = self.sidecar.get(K_CTX) or {}
            ctx: dict[tuple[int, int, int], SeqArray] = {}
            try:
                # A crafted entry: not a map, keys or bytes of other types.
                for k, b in zip(raw.get("keys", ()), raw.get("seqs", ())):
                    arr = array(self._tc)
                    arr.frombytes(b)
                    ctx[tuple(k)] = arr
            except (AttributeError, TypeError, ValueError):
                raise SidecarCorrupt("context-entry index does not decode") from None
            self._ctx_all = ctx
        return self._ctx_all.get(key)

    def _build_shared(self, progress: Progress | None) -> None:
        """Build under the sidecar's writer lock -- unless another process
        built it while we waited for the lock -- falling back to a private
        store when the sidecar cannot be written."""
        sc = self.sidecar
        try:
            sc.lock()
        except SidecarWriteError:
            self._private_build(progress)
            return
        if self._try_load():
            sc.commit()             # nothing written: releases the lock
            return
        try:
            self._build(progress)
        except SidecarWriteError:
            self._private_build(progress)

    def _private_build(self, progress: Progress | None) -> None:
        try:
            self.sidecar.close()
        except OSError:
            pass
        self.sidecar = Sidecar.memory(self.path, self.identity)
        self._build(progress)

    def _build(self, progress: Progress | None) -> None:
        sc = self.sidecar
        self._kinds = None
        source = _Source(self.trace, self._translate, self.trace.count)
        column = io.BytesIO()
        with sc.stream(K_CHECKPOINTS) as out:
            result = build(source, self.initial, CheckpointWriter(out.write), column,
                           min_events=self._min_events, progress=progress)
        # The kind column (1 byte/event) was kept in memory: the sidecar
        # takes one stream at a time.
        sc.put_raw(K_KIND_COLUMN, column.getbuffer())
        result.column = None
        self.count = result.final.seq
        self.stop = self.trace.stop
        if result.error is not None:
            # The fold found an event it cannot apply in a chunk whose CRC was
            # fine: the readable trace ends before it, like after damage.
            assert result.error_chunk is not None     # set with the error
            i, offset = result.error_chunk
            self.stop = StopReport("corrupt", offset, i, self.count, str(result.error))
        self._tc = seq_typecode(self.count)
        seqs = array("Q", (s for s, _ in result.checkpoints))
        offs = array("Q", (loc[0] for _, loc in result.checkpoints))
        lens = array("Q", (loc[1] for _, loc in result.checkpoints))
        sc.put(K_KIND_CHUNKS, {S.KINDS[code].name: arr.tobytes() for code, arr in result.kinds.items() if arr})
        keys = list(result.ctx)
        sc.put(K_CTX, {"keys": [list(k) for k in keys], "seqs": [result.ctx[k].tobytes() for k in keys]})
        sc.put(K_META, {
            "build": _build_key(), "count": self.count, "typecode": self._tc,
            "checkpoints": [seqs.tobytes(), offs.tobytes(), lens.tobytes()],
            "stop": list(self.stop) if self.stop is not None else None,
        })
        if not sc.trusted and sc.path is not None:
            # Every chunk was decoded (and CRC-checked) by the pass unless it
            # ended early; then one CRC pass says what the file holds.
            clean = result.error is None and self.trace.stop is None
            sc.bind(self.identity, content_of(self.trace) if clean else scan_content(self.path))
        sc.commit()
        self.built = True
        self.checkpoints = Checkpoints(self._reader().load)
        for (s, loc) in result.checkpoints:
            self.checkpoints.add(s, loc)
        self._kind_chunks = result.kinds
        self.ctx_index = SeqIndex(result.ctx)
        self._ctx_all = result.ctx

    # --- when the cache and the trace disagree -------------------------------------

    def _answer(self, fn: Callable[[], _T]) -> _T:
        """fn() -- after dropping and rebuilding the cache when it turns out
        unusable: a bad sidecar entry, or a chunk that fails its CRC although
        the sidecar vouched for the file."""
        for _ in range(3):
            try:
                return fn()
            except ChunkUnreadable:
                self.damage_found = True
                self._rebuild()
            except SidecarError:
                self._rebuild()
        return fn()

    def _rebuild(self) -> None:
        """Drop everything the sidecar holds and replay the readable part of
        the trace again (the reader has already cut it at the bad chunk)."""
        sc = self.sidecar
        sc.reset()
        if not sc.writable:
            self._private_build(None)
        else:
            try:
                sc.lock()
                self._build(None)
            except SidecarWriteError:
                self._private_build(None)
        self._attach()

    # --- the public surface -----------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.stop is None

    def state_at(self, n: int) -> ReplayState:
        """The state after n events (0 = the platform before any event).
        IndexError outside 0..count.  The caller owns the returned state."""
        return self._answer(lambda: self.seeker.state_at(n))

    def event(self, n: int) -> list[Any]:
        """Event n (1-based) as a list, in this build's kind/func codes."""
        return list(self._answer(lambda: self.seeker.event(n)))

    def events(self, start: int = 1, stop: int | None = None) -> Iterator[list[Any]]:
        """Events (lists) with start <= seq < stop."""
        stop = self.count + 1 if stop is None else stop
        seq = start
        while True:
            try:
                for ev in self.seeker.events(seq, min(stop, self.count + 1)):
                    yield list(ev)
                    seq += 1
                return
            except ChunkUnreadable:
                self.damage_found = True
                self._rebuild()
            except SidecarError:
                self._rebuild()

    @staticmethod
    def kind_code(kind: str | int) -> int:
        if isinstance(kind, str):
            return S.KIND_BY_NAME[kind].code
        return kind

    def next_of_kind(self, kind: str | int, after: int) -> int | None:
        """The first event of ``kind`` (name or code) with seq > after, or None."""
        return self._answer(lambda: self._kind_index().next_after(self.kind_code(kind), after))

    def prev_of_kind(self, kind: str | int, before: int) -> int | None:
        """The last event of ``kind`` with seq < before, or None."""
        return self._answer(lambda: self._kind_index().prev_before(self.kind_code(kind), before))

    def next_ctx_write(self, iommu: int, bus: int, devfn: int, after: int) -> int | None:
        """The first ctx-write of entry (iommu, bus, devfn) with seq > after."""
        return self._answer(lambda: self.ctx_index.next_after((iommu, bus, devfn), after))

    def prev_ctx_write(self, iommu: int, bus: int, devfn: int, before: int) -> int | None:
        """The last ctx-write of entry (iommu, bus, devfn) with seq < before."""
        return self._answer(lambda: self.ctx_index.prev_before((iommu, bus, devfn), before))

    def open_findings(self, n: int) -> list[Any]:
        """Findings open at step n as finding dicts (docs/CLI.md#check-json).  The hazard
        analysers plug in by setting ``session.findings`` to an object with
        ``open_at(n)`` (replay.hazards.FindingIndex); until one is set there
        are none."""
        if self.findings is None:
            return []
        return [f.to_json() if hasattr(f, "to_json") else f for f in self.findings.open_at(n)]

    def show_dict(self, n: int) -> dict[str, Any]:
        return render.show_dict(self.state_at(n), self.view, self.open_findings(n))

    def show_text(self, n: int) -> str:
        return render.show_text(self.state_at(n), self.view, count=self.count,
                                open_findings=self.open_findings(n))

    def close(self) -> None:
        try:
            sc = getattr(self, "sidecar", None)    # absent when opening failed early
            if sc is not None:
                sc.close()
        finally:
            self.trace.close()

    def __enter__(self) -> ReplaySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
