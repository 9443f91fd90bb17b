"""``ReplaySession(path)``: one open trace with its replay machinery -- the
facade the CLI and the TUI use.

Opening reads the trace header and, when the sidecar beside the trace is
fresh, only the sidecar's table of contents: checkpoints and indexes are
loaded lazily.  Otherwise one pass over the trace folds every event, writes a
checkpoint every chunk or so into the sidecar and builds the seq indexes
(replay.seek.build), so later opens are instant.

A damaged trace replays up to its last good event; ``stop`` says where reading
stopped (the reader's StopReport).  An event the fold cannot apply (a chunk
with a valid CRC but events that do not follow the schema) ends the readable
part the same way.
"""

from __future__ import annotations

from array import array

from tracer import schema as S

from . import render
from .reader import StopReport, open_trace, trace_fingerprint
from .seek import (DEFAULT_MIN_EVENTS, CheckpointReader, Checkpoints, CheckpointWriter, KindIndex, Seeker,
                   SeqIndex, build, seq_typecode)
from .sidecar import Sidecar
from .state import STATE_FORMAT, ReplayState, initial_state

# Bump when what the session stores in the sidecar changes shape or meaning.
SESSION_FORMAT = 1
K_META = "replay/meta"
K_CHECKPOINTS = "replay/checkpoints"
K_CTX = "replay/ctx"
K_KIND_CHUNKS = "replay/kind-chunks"
K_KIND_COLUMN = "replay/kind-column"


def _build_key() -> list:
    """What a sidecar's derived data depends on besides the trace bytes."""
    return [SESSION_FORMAT, STATE_FORMAT, len(S.KINDS), len(S.FUNCS)]


def event_translator(schema):
    """A function rewriting a chunk's events to this build's kind and function
    codes, or None when the trace uses them already (the common case)."""
    if schema.is_current:
        return None
    unknown = len(S.KINDS)      # the fold skips codes it does not know
    kmap = [c if c >= 0 else unknown for c in schema.to_current]
    fmap = [S.FUNC_CODE.get(name, len(S.FUNCS) + i) for i, name in enumerate(schema.funcs)]

    def translate(evs):
        out = []
        for ev in evs:
            ev = list(ev)
            k = ev[0]
            ev[0] = kmap[k] if isinstance(k, int) and 0 <= k < len(kmap) else unknown
            f = ev[4] if len(ev) > 4 else None
            if isinstance(f, int) and 0 <= f < len(fmap):
                ev[4] = fmap[f]
            out.append(ev)
        return out
    return translate


class _Source:
    """The chunk source protocol of replay.seek over a reader Trace."""

    def __init__(self, trace, translate, count: int) -> None:
        self.trace = trace
        self.translate = translate
        self.chunks = [c for c in trace.chunks if c[1] <= count]
        self._count = count

    def _fix(self, evs):
        if self.translate is not None:
            evs = self.translate(evs)
        if evs and evs[-1][1] > self._count:
            # The readable trace ends inside this chunk (an event the fold
            # could not apply): positions, not seq fields, decide.
            evs = evs[:max(0, self._count - evs[0][1] + 1)]
        return evs

    def read_chunk(self, i: int) -> list:
        evs = next(self.trace.iter_chunks(i), None)
        if evs is None:
            raise IndexError(f"chunk {i} is unreadable: "
                             f"{self.trace.stop.describe() if self.trace.stop else 'damaged'}")
        return self._fix(evs)

    def iter_chunks(self):
        for evs in self.trace.iter_chunks():
            yield self._fix(evs)


class ReplaySession:
    """An open trace: header, events, ``state_at(n)`` and index queries.

    ``sidecar=False`` keeps everything in a temporary store (tests, one-off
    runs).  Raises reader.NotATrace for what is not a trace."""

    def __init__(self, path, *, sidecar: bool = True, min_events: int = DEFAULT_MIN_EVENTS,
                 progress=None) -> None:
        self.path = path
        # verify=False: the O(1) open; every chunk's CRC is still checked when
        # it is decoded, and the first open decodes them all.  Events as
        # tuples: one allocation less per event to make and to free, which
        # is most of what a seek costs besides the fold.
        self.trace = open_trace(path, verify=False, tuples=True)
        try:
            self._open(sidecar, min_events, progress)
        except BaseException:
            self.trace.close()
            raise

    @classmethod
    def open_cached(cls, path) -> "ReplaySession | None":
        """The session when the trace's sidecar already holds fresh
        checkpoints of this build, so that opening is O(1); None otherwise
        (it never folds the trace to build them).  Raises reader.NotATrace
        like the constructor."""
        try:
            with Sidecar.open(path, trace_fingerprint(path)) as sc:
                meta = sc.get(K_META) if sc.fresh else None
                ok = (isinstance(meta, dict) and list(meta.get("build") or ()) == _build_key()
                      and K_CHECKPOINTS in sc)
        except OSError:
            return None
        if not ok:
            return None
        session = cls(path)
        if session.built:       # the sidecar changed in between: it had to build after all
            session.close()
            return None
        return session

    def _open(self, use_sidecar, min_events, progress) -> None:
        trace = self.trace
        self.header = trace.header
        self.view = render.PlatformView(self.header)
        self.initial = initial_state(self.header)
        self._translate = event_translator(trace.schema)
        fp = trace_fingerprint(self.path)
        self.sidecar = Sidecar.open(self.path, fp) if use_sidecar else Sidecar.temporary(fp)
        self.built = False          # True when this open had to fold the whole trace
        self.findings = None        # hook: an object with open_at(n) -> [finding dict]
        self._kinds = None
        self._kind_chunks = None
        self._ctx_all = None
        meta = self.sidecar.get(K_META) if self.sidecar.fresh else None
        if not (isinstance(meta, dict) and self._load(meta)):
            self._build(min_events, progress)
        self.source = _Source(trace, self._translate, self.count)
        self.seeker = Seeker(self.source, self.checkpoints, self.count)

    # --- index: load or build ------------------------------------------------

    def _load(self, meta: dict) -> bool:
        if list(meta.get("build") or ()) != _build_key() or K_CHECKPOINTS not in self.sidecar:
            return False
        try:
            count = meta["count"]
            tc = meta["typecode"]
            seqs, offs, lens = (array("Q", b) for b in meta["checkpoints"])
            stop = meta.get("stop")
            stop = StopReport(*stop) if stop else None
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
        return CheckpointReader(lambda off, n: sc.read(K_CHECKPOINTS, off, n))

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
                for name, b in raw.items():
                    kind = S.KIND_BY_NAME.get(name)
                    if kind is not None:
                        arr = array("I")
                        arr.frombytes(b)
                        chunks[kind.code] = arr
            src = self.source.chunks
            sc = self.sidecar
            self._kinds = KindIndex([c[1] for c in src], [c[2] for c in src], chunks,
                                    lambda start, n: sc.read(K_KIND_COLUMN, start, n))
        return self._kinds

    def _load_ctx(self, key):
        # All context-entry lists come in one entry (they are few and small).
        if self._ctx_all is None:
            raw = self.sidecar.get(K_CTX) or {}
            self._ctx_all = {}
            for k, b in zip(raw.get("keys", ()), raw.get("seqs", ())):
                arr = array(self._tc)
                arr.frombytes(b)
                self._ctx_all[tuple(k)] = arr
        return self._ctx_all.get(key)

    def _build(self, min_events, progress) -> None:
        sc = self.sidecar
        source = _Source(self.trace, self._translate, self.trace.count)
        with sc.stream(K_CHECKPOINTS) as out:
            result = build(source, self.initial, CheckpointWriter(out.write), min_events=min_events,
                           progress=progress)
        # The kind column (1 byte/event) was kept in memory: the sidecar
        # takes one stream at a time.
        sc.put_raw(K_KIND_COLUMN, result.column.getbuffer())
        result.column = None
        self.count = result.final.seq
        self.stop = self.trace.stop
        if result.error is not None:
            # The fold found an event it cannot apply in a chunk whose CRC was
            # fine: the readable trace ends before it, like after damage.
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
        sc.commit()
        self.built = True
        self.checkpoints = Checkpoints(self._reader().load)
        for (s, loc) in result.checkpoints:
            self.checkpoints.add(s, loc)
        self._kind_chunks = result.kinds
        self.ctx_index = SeqIndex(result.ctx)
        self._ctx_all = result.ctx

    # --- the public surface -----------------------------------------------------

    @property
    def complete(self) -> bool:
        return self.stop is None

    def state_at(self, n: int) -> ReplayState:
        """The state after n events (0 = the platform before any event).
        IndexError outside 0..count.  The caller owns the returned state."""
        return self.seeker.state_at(n)

    def event(self, n: int) -> list:
        """Event n (1-based) as a list, in this build's kind/func codes."""
        return list(self.seeker.event(n))

    def events(self, start: int = 1, stop: int | None = None):
        """Events (lists) with start <= seq < stop."""
        return map(list, self.seeker.events(start, self.count + 1 if stop is None else stop))

    @staticmethod
    def kind_code(kind) -> int:
        if isinstance(kind, str):
            return S.KIND_BY_NAME[kind].code
        return kind

    def next_of_kind(self, kind, after: int):
        """The first event of ``kind`` (name or code) with seq > after, or None."""
        return self._kind_index().next_after(self.kind_code(kind), after)

    def prev_of_kind(self, kind, before: int):
        """The last event of ``kind`` with seq < before, or None."""
        return self._kind_index().prev_before(self.kind_code(kind), before)

    def next_ctx_write(self, iommu: int, bus: int, devfn: int, after: int):
        """The first ctx-write of entry (iommu, bus, devfn) with seq > after."""
        return self.ctx_index.next_after((iommu, bus, devfn), after)

    def prev_ctx_write(self, iommu: int, bus: int, devfn: int, before: int):
        """The last ctx-write of entry (iommu, bus, devfn) with seq < before."""
        return self.ctx_index.prev_before((iommu, bus, devfn), before)

    def open_findings(self, n: int) -> list:
        """Findings open at step n as finding dicts (docs/CLI.md#check-json).  The hazard
        analysers plug in by setting ``session.findings`` to an object with
        ``open_at(n)`` (replay.hazards.FindingIndex); until one is set there
        are none."""
        if self.findings is None:
            return []
        return [f.to_json() if hasattr(f, "to_json") else f for f in self.findings.open_at(n)]

    def show_dict(self, n: int) -> dict:
        return render.show_dict(self.state_at(n), self.view, self.open_findings(n))

    def show_text(self, n: int) -> str:
        return render.show_text(self.state_at(n), self.view, count=self.count,
                                open_findings=self.open_findings(n))

    def close(self) -> None:
        try:
            self.sidecar.close()
        finally:
            self.trace.close()

    def __enter__(self) -> "ReplaySession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
