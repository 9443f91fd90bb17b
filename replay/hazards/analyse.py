"""Run every analyser over one trace, incrementally, alongside the fold.

One ``replay.state.fold()`` call per fed chunk does all the state keeping;
the analysers ride on it: the events reach fold() through a generator that,
when fold() asks for event i+1 (so event i has been applied), runs the hooks
registered for event i's kind.  Every hook thus sees exactly
``state_at(seq)`` of its event, and the cost of riding along is one dict
lookup and one generator step per event -- no second pass, no per-event
fold() call (measured: table dispatch costs little next to the
decode).

Hooks exist only for the kinds that can change what the analysers look at:
context-entry writes, flushes (and cache-syncs on a non-coherent unit), DID
and iommu_bitmap stores, page tables and identity maps, ownership, domain
lifecycle, locks, Xen's warning line and op boundaries.  Calls and returns,
most of a trace, cost nothing beyond the lookup.  The work per hooked event
is proportional to what it touches: a context write re-checks that requester
ID plus the few cache-model entries of its unit; a DID store re-checks the
entries carrying that DID; rare events (page-table frees, domain
destruction) re-check more.

An exception inside a hook surfaces through fold() as a BadEvent for the
event being analysed: like an event the fold cannot apply, it ends the
analysable prefix.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from replay.codes import event_translator
from replay.pseudo import pseudo_domain_name
from replay.state import BadEvent, fold, initial_state
from tracer import schema as S
from tracer.schema import I_CPU, I_KIND, I_SEQ

from .base import F_DOMAIN, Context, Event, Hook
from .devtlb import DevtlbAnalyser
from .did import DidAnalyser, DidIncoherentAnalyser
from .findings import KINDS, Finding, FindingIndex, pack_findings, sort_findings, unpack_findings
from .locks import LockAnalyser
from .mismatch import MismatchAnalyser
from .owner import OwnerAnalyser
from .rmrr import RmrrAnalyser
from .stale import StaleAnalyser

if TYPE_CHECKING:
    from replay.caches import StateTables
    from replay.reader import StopReport, Trace
    from replay.sidecar import Content, Sidecar, TraceIdentity

# Order matters: mismatch before stale (foreign-iotlb reads the mismatch set).
ANALYSERS = (RmrrAnalyser, MismatchAnalyser, StaleAnalyser, DidAnalyser, LockAnalyser, DevtlbAnalyser,
             OwnerAnalyser, DidIncoherentAnalyser)


class Analysis:
    """``Analysis(header)``, then ``feed(events)`` any number of times (events
    in seq order, e.g. one decoded chunk per call), then ``finish()`` -> the
    findings, sorted as ``check --json`` lists them.

    An event the fold cannot apply (replay.state.BadEvent) or an analyser
    cannot read ends the analysable prefix: ``bad`` then holds (seq, message)
    and later events are ignored.  ``seq`` is the last event analysed."""

    def __init__(self, header: object) -> None:
        self.header: dict[str, Any] = header if isinstance(header, dict) else {}
        # the state's tables, as the analysers read them (ReplayState declares
        # them through __slots__, which a type checker cannot see)
        self.st = cast("StateTables", initial_state(self.header))
        self.ctx = Context(self.header, self.st)
        self.analysers = [cls(self.ctx) for cls in ANALYSERS]
        self.seq = 0
        self.bad: tuple[int | None, str] | None = None
        self.done = False
        self._build_dispatch()

    def _build_dispatch(self) -> None:
        ctx = self.ctx
        pre: dict[int, list[Hook]] = {}
        post: dict[int, list[Hook]] = {}

        def add(table: dict[int, list[Hook]], code: int, fn: Hook) -> None:
            table.setdefault(code, []).append(fn)

        add(pre, S.K_CTX_WRITE, ctx.on_ctx_write)
        add(pre, S.K_DID_BITMAP, ctx.on_did_bitmap)
        add(pre, S.K_DID_MAP, ctx.on_did_map)
        add(pre, S.K_OWNER_MOVE, ctx.on_owner_move)
        add(pre, S.K_DEVICE_REMOVE, ctx.on_device_remove)
        add(pre, S.K_DOMAIN_CREATE, self._domain_create)
        add(pre, S.K_PSEUDO_DOMID, self._pseudo_domid)
        add(pre, S.K_DOMAIN_DYING, self._domain_dying)
        add(pre, S.K_DOMAIN_DESTROY, self._domain_destroy)
        add(pre, S.K_OP_BEGIN, ctx.op_begin)
        add(post, S.K_CTX_WRITE, self._clear_warning)
        add(post, S.K_OP_END, ctx.op_end)

        table: dict[int, list[Hook]] = {}
        for code, fns in pre.items():
            table.setdefault(code, []).extend(fns)
        for a in self.analysers:
            for code, fn in a.hooks().items():
                table.setdefault(code, []).append(fn)
        for code, fns in post.items():
            table.setdefault(code, []).extend(fns)
        self._hooks = {code: tuple(fns) for code, fns in table.items()}

    # --- context bookkeeping hooks ------------------------------------------------------

    def _clear_warning(self, ev: Event) -> None:
        # the store the warning announced is its CPU's next one
        if ev[I_CPU] == self.ctx.warning_cpu:
            self.ctx.warning = None

    def _domain_create(self, ev: Event) -> None:
        self.ctx.alive.add(ev[F_DOMAIN])
        self.ctx.dying.discard(ev[F_DOMAIN])

    def _pseudo_domid(self, ev: Event) -> None:
        """A device's pseudo domain ID (engine final): findings name it after
        the device, also once it has been returned."""
        if ev[S.F_PSEUDO_DOMID_VALUE]:
            ctx = self.ctx
            domid = ev[S.F_PSEUDO_DOMID_DOMAIN]
            ctx.topo.names[domid] = pseudo_domain_name(domid, (ev[S.F_PSEUDO_DOMID_SEG], ev[S.F_PSEUDO_DOMID_BDF]))
            ctx.names = tuple(sorted(ctx.topo.names.items()))

    def _domain_dying(self, ev: Event) -> None:
        self.ctx.dying.add(ev[F_DOMAIN])

    def _domain_destroy(self, ev: Event) -> None:
        self.ctx.alive.discard(ev[F_DOMAIN])
        self.ctx.dying.discard(ev[F_DOMAIN])

    # --- the loop ---------------------------------------------------------------------------

    def _drive(self, events: Iterable[Event]) -> Iterator[Event]:
        """Yield the events to fold() one by one; when fold asks for the next
        event, the previous one has been applied, so its hooks run then with
        the state exactly after it.  One fold() call per feed, one dict
        lookup per event."""
        get = self._hooks.get
        ctx = self.ctx
        hs: tuple[Hook, ...] | None = None
        prev: Event = ()
        for ev in events:
            if hs is not None:
                ctx.cpu = prev[I_CPU]       # "the running operation" is this CPU's
                for h in hs:
                    h(prev)
            try:
                hs = get(ev[I_KIND])
            except (TypeError, IndexError, KeyError):
                # An in-memory event that is not an event array (findings_for_events
                # of a hand-built list; decoded traces are validated): no hooks, and
                # fold() reports it as the BadEvent it is, after the last good one
                # (test_hazards_api).
                hs = None
                if prev:
                    self.seq = prev[I_SEQ]
            prev = ev
            yield ev
        if hs is not None:
            ctx.cpu = prev[I_CPU]
            for h in hs:
                h(prev)
        if prev:
            self.seq = prev[I_SEQ]

    def feed(self, events: Iterable[Event]) -> None:
        if self.bad is not None or self.done:
            return
        # No reference cycles are made here; with the collector running, its
        # generation-2 passes over the growing list of findings cost more
        # than the analysis (measured: 20-25 %).  Collections run between
        # chunks instead.
        gc_was = gc.isenabled()
        gc.disable()
        try:
            fold(self.st, self._drive(events))  # type: ignore[arg-type]  # self.st is a ReplayState (above)
        except BadEvent as exc:
            seq = exc.seq if type(exc.seq) is int else None
            self.seq = seq - 1 if seq is not None else self.seq
            self.bad = (seq, str(exc))
        finally:
            if gc_was:
                gc.enable()

    def finish(self) -> list[Finding]:
        """Close the analysis: windows still open become open-at-end
        findings.  Returns every finding, sorted."""
        if not self.done:
            for a in self.analysers:
                a.finish()
            self.done = True
        out = self.ctx.out
        if self.bad is not None:
            # a hook may have run for the bad event itself: clip to the prefix
            last = self.seq
            clipped = []
            for f in out:
                if f.start > last:
                    continue
                if f.end is not None and f.end > last:
                    f.detail = f.detail     # the sentence as the analysers saw the window, before the clip
                    f.end = None
                    f.end_label = None
                clipped.append(f)
            out = clipped
        self.ctx.out = out = sort_findings(out)
        return out


def findings_for_events(header: object, events: Iterable[Event]) -> list[Finding]:
    """Findings of an in-memory event list (e.g. a ListSink's) under header."""
    a = Analysis(header)
    a.feed(events)
    return a.finish()


# --- traces ---------------------------------------------------------------------------------

@dataclass
class TraceFindings:
    """What ``findings_for_trace`` returns."""

    path: object
    header: dict[str, Any]
    findings: list[Finding]
    events: int                 # events analysed (the readable prefix)
    complete: bool              # the whole trace was readable and analysable
    stop: StopReport | None = None      # when not complete
    from_cache: bool = False
    _index: FindingIndex | None = field(default=None, repr=False)

    @property
    def index(self) -> FindingIndex:
        if self._index is None:
            self._index = FindingIndex(self.findings)
        return self._index




SIDECAR_KEY = "hazards/findings"


def _build_key() -> list[Any]:
    """What a cached findings entry depends on besides the trace: the row
    format, the catalogue, the finding kinds and the code that computed it
    (package version + source digest of the fold and every analyser)."""
    from replay.codeid import code_key

    from .findings import FINDINGS_FORMAT
    return [FINDINGS_FORMAT, len(S.KINDS), len(S.FUNCS), list(KINDS), *code_key("hazards")]


def _open_sidecar(path: str | os.PathLike[str], identity: TraceIdentity | None = None) -> Sidecar | None:
    """The trace's sidecar (replay.sidecar: trusted only for the trace as it
    is now), or None when there is none to be had."""
    from replay.sidecar import Sidecar, SidecarError
    try:
        return Sidecar.open(path, identity)
    except (OSError, SidecarError):
        return None


def findings_for_trace(path_or_trace: str | os.PathLike[str] | Trace, *, sidecar: bool = False) -> TraceFindings:
    """Findings of a trace file (a path, or a replay.reader.Trace already
    open).  A damaged trace yields the findings of its readable prefix and
    ``complete`` False with the reader's StopReport (an event the fold
    cannot apply ends the prefix the same way, reported as "corrupt").

    ``sidecar=True`` reads the findings from the trace's sidecar when it is
    trusted for the trace as it is now and holds them for this build, and
    stores them there otherwise (replay.sidecar), computing them under the
    sidecar's writer lock so that concurrent first runs compute once.
    Raises replay.reader.NotATrace for what is not a trace."""
    from replay.reader import Trace, open_trace
    from replay.sidecar import SidecarError, content_of, trace_identity

    if isinstance(path_or_trace, Trace):
        return _compute(path_or_trace)
    path = path_or_trace
    if not sidecar:
        with open_trace(path) as trace:
            return _compute(trace)
    identity = trace_identity(path)
    sc = _open_sidecar(path, identity)
    try:
        if sc is not None:
            cached = _cached_result(sc, path)
            if cached is not None:
                return cached
            try:
                sc.lock()           # one writer: another process may be computing them now
            except SidecarError:
                pass
            else:
                cached = _cached_result(sc, path)
                if cached is not None:
                    return cached
        with open_trace(path) as trace:
            # verify=True: the open was one CRC pass, which is what binds
            # an untrusted sidecar to this content.
            content = content_of(trace)
            result = _compute(trace)
        if sc is not None and sc.writable:
            try:
                _put_entry(sc, result)
                if not sc.trusted:
                    sc.bind(identity, content)
                sc.commit()
            except (OSError, SidecarError):
                pass
        return result
    finally:
        if sc is not None:
            try:
                sc.close()
            except (OSError, SidecarError):
                pass


def _compute(trace: Trace) -> TraceFindings:
    from replay.reader import StopReport

    a = Analysis(trace.header)
    translate = event_translator(trace.schema)
    bad_chunk = 0
    for i, chunk in enumerate(trace.iter_chunks(folded=True)):
        a.feed(translate(chunk) if translate is not None else chunk)
        if a.bad is not None:
            bad_chunk = i
            break
    findings = a.finish()
    stop = trace.stop
    if a.bad is not None and stop is None:
        # (bad_chunk: the chunk the feed that set it was)
        # Where the event sits, as the reader would say it (show does).
        stop = StopReport("corrupt", trace.chunks[bad_chunk][0], bad_chunk, a.seq, a.bad[1])
    return TraceFindings(trace.path, trace.header, findings, a.seq, stop is None, stop)


def _cached_result(sc: Sidecar, path: str | os.PathLike[str]) -> TraceFindings | None:
    """The trusted cached findings with the trace's header (an O(1) open),
    or None."""
    from replay.reader import NotATrace, open_trace

    if not sc.trusted or SIDECAR_KEY not in sc:
        return None
    try:
        with open_trace(path, verify=False) as own:
            return _load_cached(sc, own)
    except NotATrace:
        return None


def cached_findings(path: str | os.PathLike[str], trace: Trace | None = None) -> TraceFindings | None:
    """The findings of the trace at ``path`` from its sidecar, when it is
    trusted for the trace as it is now and holds an entry of this build;
    None otherwise (nothing is computed, and a sidecar that cannot be read
    is a miss).  ``trace``: the trace already open (its header goes into
    the result), else it is opened here."""
    sc = _open_sidecar(path)
    if sc is None:
        return None
    with sc:
        if trace is not None:
            return _load_cached(sc, trace) if sc.trusted else None
        return _cached_result(sc, path)


def cached_finding_rows(path: str | os.PathLike[str]) -> list[Any] | None:
    """The sidecar's findings of the trace at ``path`` as positional rows
    (``Finding.to_row`` order of FINDINGS_FORMAT), without building Finding
    objects: tens of ms for 10^5 findings, where decoding them costs most of
    a second.  None when the entry is absent, untrusted, damaged or of
    another build."""
    import msgpack

    from replay.sidecar import SidecarError

    from .findings import FINDINGS_FORMAT

    sc = _open_sidecar(path)
    if sc is None:
        return None
    with sc:
        try:
            raw = sc.get_raw(SIDECAR_KEY) if sc.trusted else None
        except SidecarError:
            return None
    if raw is None:
        return None
    gc_was = gc.isenabled()
    gc.disable()        # 10^5 fresh lists, no garbage: collections would only walk them
    try:
        entry = msgpack.unpackb(raw, use_list=True, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException):
        # bytes that pass their checksum yet are not a msgpack value (a
        # broken writer; test_hazards_api stores one): a miss, as Sidecar.get
        # reports them (SidecarCorrupt)
        return None
    finally:
        if gc_was:
            gc.enable()
    if not isinstance(entry, dict) or entry.get("build") != _build_key():
        return None
    value = entry.get("findings")       # encode_findings: [FINDINGS_FORMAT, [row, ...]]
    if not (isinstance(value, list) and len(value) == 2 and value[0] == FINDINGS_FORMAT
            and isinstance(value[1], list)):
        return None
    return value[1]


def store_findings(path: str | os.PathLike[str], result: TraceFindings, identity: TraceIdentity | None = None,
                   content: Content | None = None) -> bool:
    """Put findings computed elsewhere (an Analysis run inline, as the diff
    does) into the trace's sidecar, as ``findings_for_trace(path,
    sidecar=True)`` would have.  ``identity`` / ``content``: the trace's
    replay.sidecar identity taken before it was read and its content as the
    CRC pass of its open found it; they bind a sidecar that is not yet
    trusted (without them only a trusted one is written).  Best effort:
    False when not stored."""
    from replay.sidecar import SidecarError

    sc = _open_sidecar(path, identity)
    if sc is None:
        return False
    try:
        if not sc.writable:
            return False
        _put_entry(sc, result)
        if not sc.trusted:
            sc.bind(identity, content)
        return sc.commit()
    except (OSError, SidecarError):
        return False
    finally:
        try:
            sc.close()
        except (OSError, SidecarError):
            pass


def _put_entry(sc: Sidecar, result: TraceFindings) -> None:
    """Write the findings entry: the msgpack map {"build", "events", "stop",
    "findings": encode_findings(...)}, byte for byte what ``sc.put`` of it
    would write, packed a few thousand rows at a time into the sidecar's
    stream (findings.pack_findings) so that neither the rows nor the packed
    entry are ever whole in memory."""
    import msgpack

    stop = result.stop
    pk = msgpack.Packer(use_bin_type=True, autoreset=False)
    pk.pack_map_header(4)
    for k, v in (("build", _build_key()), ("events", result.events),
                 ("stop", list(stop) if stop is not None else None)):
        pk.pack(k)
        pk.pack(v)
    pk.pack("findings")
    with sc.stream(SIDECAR_KEY) as out:
        def flush() -> None:
            out.write(pk.bytes())
            pk.reset()
        pack_findings(pk, result.findings, flush)
        flush()


class _EntryReader:
    """A read-only file over one sidecar entry, for msgpack.Unpacker: every
    piece verified by its blocks' checksums (Sidecar.read) as it is read, so
    the entry never sits whole in memory."""

    def __init__(self, sc: Sidecar, key: str) -> None:
        self._sc = sc
        self._key = key
        self._pos = 0
        self._size = sc.size(key)

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        n = left if n < 0 else min(n, left)
        data = self._sc.read(self._key, self._pos, n)
        self._pos += n
        return data


def _load_cached(sc: Sidecar, trace: Trace) -> TraceFindings | None:
    """The findings entry read a row at a time (findings.unpack_findings):
    at 10^7 events, unpacking the whole entry into tuples and decoding those
    held the entry's bytes, a tuple tree and the Findings at once.  None when
    the entry is absent, untrusted, damaged or not this build's."""
    import msgpack

    from replay.reader import StopReport
    from replay.sidecar import SidecarError

    if not sc.trusted or SIDECAR_KEY not in sc:
        return None
    gc_was = gc.isenabled()
    gc.disable()        # half a million fresh Findings, no garbage: collections would only walk them
    try:
        up = msgpack.Unpacker(_EntryReader(sc, SIDECAR_KEY), use_list=False, strict_map_key=False,
                              read_size=1 << 20)
        entry: dict[Any, Any] = {}
        findings: list[Finding] | None = None
        for _ in range(up.read_map_header()):
            key = up.unpack()
            if key == "findings" and findings is None and "findings" not in entry:
                findings = unpack_findings(up)
            else:
                entry[key] = up.unpack()
        try:
            up.unpack()
        except msgpack.OutOfData:
            pass
        else:
            return None         # more after the entry: not one this build wrote
        if _as_list(entry.get("build")) != _build_key() or findings is None or "findings" in entry:
            return None
        stop = entry.get("stop")
        stop = StopReport(*stop) if stop else None
        events = entry.get("events")
        if type(events) is not int:
            return None
    except (ValueError, TypeError, msgpack.UnpackException, SidecarError):
        # SidecarError: damaged (Sidecar.read); msgpack's errors and
        # ValueError / TypeError: bytes that pass their checksums yet are not
        # a msgpack map (TypeError: a map used as a map key), or rows
        # unpack_findings refuses (test_hazards_api): a miss, recomputed
        return None
    finally:
        if gc_was:
            gc.enable()
    return TraceFindings(trace.path, trace.header, findings, events, stop is None, stop, from_cache=True)


def _as_list(v: object) -> object:
    """msgpack gives tuples back from the sidecar (use_list=False)."""
    if isinstance(v, tuple):
        return [_as_list(x) for x in v]
    if isinstance(v, list):
        return [_as_list(x) for x in v]
    return v
