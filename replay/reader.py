"""The trace reader: validates the container, indexes chunks, decodes events.

Traces are untrusted input (they get attached to bug reports), so:
* every length is checked against the file size and a hard limit before
  anything is allocated or read;
* each chunk is decoded by a fresh ``msgpack.Unpacker`` whose buffer is
  limited to that chunk's payload (no hooks, no ext types);
* damage never raises: everything before it stays readable and ``Trace.stop``
  says where and why reading stopped.

The byte layout is in docs/FORMAT.md.  The constants below repeat
tracer/writer.py's on purpose: replay may import only the schema side of
tracer (README.md#layout), and tests/test_format_roundtrip.py asserts both agree.

Integrity is established in two steps.  ``open_trace`` walks the chunk
headers (and, with ``verify=True``, the payload CRCs), which finds every kind
of accidental damage.  Decoding a chunk re-checks its CRC and then its msgpack
content; a chunk whose CRC is valid but whose content is not (a crafted file
or a writer bug) is only found when decoded: the trace then shrinks to the
chunks before it and ``stop`` is updated.  After a full pass over the events
(``iter_chunks``/``events``) ``count`` and ``stop`` are exact.
"""

from __future__ import annotations

import bisect
import gc
import os
import stat
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack

from tracer.schema import FORMAT_MAJOR, FORMAT_MINOR, FUNCS, KIND_BY_NAME, KINDS, SCHEMA_VERSION, Kind

from .validate import EventCheck, Problem, platform_problem

# What a trace path may be: whatever os.open takes.
PathArg = str | os.PathLike[str]
# A decoded event: a list, or a tuple under open_trace(tuples=True).
Event = Sequence[Any]

MAGIC = b"\x89VTDT\r\n\x1a"
FILE_HEADER = struct.Struct("<8sHHIII")    # magic, major, minor, meta_len, meta_crc, head_crc
CHUNK_HEADER = struct.Struct("<4sIIIQII")  # sync, tag, payload_len, count, first_seq, payload_crc, head_crc
INDEX_ENTRY = struct.Struct("<QQII")       # offset, first_seq, count, payload_crc
TRAILER = struct.Struct("<4sIQQII")        # marker, tag, index_offset, events, index_head_crc, crc
SYNC_EVENTS = b"VTDC"
SYNC_INDEX = b"VTDI"
TRAILER_MARKER = b"VTDE"
MAX_META_BYTES = 16 << 20
MAX_CHUNK_BYTES = 16 << 20
MIN_EVENT_BYTES = 1            # a chunk cannot declare more events than it has bytes

FOLD_CHECKED, FULLY_CHECKED = 1, 2       # how far a decoded chunk's events were checked
_CACHED_CHUNKS = 8


class NotATrace(Exception):
    """The path is not a readable vtdtrace trace (missing, unreadable, not a
    regular file, too short, wrong magic, unsupported version): CLI exit 2."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class StopReport(NamedTuple):
    """Where and why reading stopped.  offset is the byte offset of the damaged
    or incomplete unit (0 for the file header), chunk_index the number of good
    chunks before it, last_good_seq the seq of the last readable event (0 if
    none)."""

    kind: str
    offset: int
    chunk_index: int
    last_good_seq: int
    message: str

    def describe(self) -> str:
        what = {"truncated": "truncated", "corrupt": "corrupt", "foreign-chunk": "foreign chunk",
                "bad-header": "bad header"}[self.kind]
        return (f"{what} at byte {self.offset} (chunk {self.chunk_index}, "
                f"last good seq {self.last_good_seq}): {self.message}")

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "offset": self.offset, "chunk": self.chunk_index,
                "last_good_seq": self.last_good_seq, "message": self.message}


class ChunkRef(NamedTuple):
    offset: int          # of the chunk header
    first_seq: int
    count: int  # type: ignore[assignment]  # the chunk header's word; hides tuple.count(), unused here
    payload_len: int
    payload_crc: int


# ---------------------------------------------------------------------------
# Schema carried by the header, with an upgrade path for older versions.

# schema_version -> function(schema dict of that version) -> schema dict of the
# next version, so that old traces keep loading.


def _upgrade_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    # 2 adds the lock name pci_lock to a closed set of words: a version-1
    # trace never uses it, and its kinds and fields are version 2's.
    return {**d, "schema_version": 2}


SCHEMA_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _upgrade_1_to_2}


@dataclass(frozen=True)
class TraceSchema:
    version: int
    kinds: tuple[Kind, ...]  # indexed by the codes used in this trace
    funcs: tuple[str, ...]
    # file kind code -> current tracer.schema code (-1: unknown to this build)
    to_current: tuple[int, ...]

    @property
    def kind_by_name(self) -> dict[str, Kind]:
        return {k.name: k for k in self.kinds}

    @property
    def kind_names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.kinds)

    @property
    def is_current(self) -> bool:
        """True when kind codes and function codes mean what tracer.schema says."""
        return (self.to_current == tuple(range(len(KINDS))) and len(self.kinds) == len(KINDS)
                and all(a.fields == b.fields for a, b in zip(self.kinds, KINDS))
                and self.funcs[:len(FUNCS)] == FUNCS)


def current_schema() -> TraceSchema:
    return TraceSchema(SCHEMA_VERSION, KINDS, FUNCS, tuple(range(len(KINDS))))


def load_schema(d: object) -> TraceSchema:
    """Build a TraceSchema from a header's ``schema`` map; ValueError if malformed."""
    if not isinstance(d, dict):
        raise ValueError("no schema map")
    version = d.get("schema_version")
    if type(version) is not int or version < 0:
        raise ValueError("schema_version missing or not a non-negative integer")
    while version < SCHEMA_VERSION:
        if version not in SCHEMA_UPGRADES:
            raise ValueError(f"no upgrade from schema version {version}")
        d = SCHEMA_UPGRADES[version](d)
        version = d["schema_version"]
    kinds_raw, funcs_raw = d.get("kinds"), d.get("funcs")
    if not isinstance(kinds_raw, list) or not isinstance(funcs_raw, list):
        raise ValueError("schema without kinds/funcs lists")
    kinds = []
    for code, item in enumerate(kinds_raw):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], list) or not all(isinstance(f, str) for f in item[1])):
            raise ValueError(f"schema kind #{code} malformed")
        known = KIND_BY_NAME.get(item[0])
        if known is not None and tuple(item[1][:len(known.fields)]) != known.fields:
            # A newer minor may append fields, never change the ones this build reads.
            raise ValueError(f"schema kind {item[0]!r} has fields {item[1]!r}, "
                             f"which do not extend this build's {list(known.fields)!r}")
        kinds.append(Kind(code, item[0], tuple(item[1]), known.doc if known else "",
                          known.types if known else ()))
    if not all(isinstance(f, str) for f in funcs_raw):
        raise ValueError("schema funcs must be strings")
    to_current = tuple(KIND_BY_NAME[k.name].code if k.name in KIND_BY_NAME else -1 for k in kinds)
    return TraceSchema(version, tuple(kinds), tuple(funcs_raw), to_current)


# ---------------------------------------------------------------------------


class _Damage(Exception):
    def __init__(self, kind: str, offset: int, message: str) -> None:
        super().__init__(message)
        self.kind, self.offset, self.message = kind, offset, message


def _unpacker(limit: int, use_list: bool = True) -> msgpack.Unpacker:
    # A fresh, bounded Unpacker per blob: reusing one after an error is unsafe
    # (GHSA-6v7p-g79w-8964) and its buffer limit also bounds every declared
    # container length.  max_ext_len=0: the format has no ext types.
    return msgpack.Unpacker(None, max_buffer_size=max(limit, 1), raw=False, use_list=use_list,
                            strict_map_key=True, max_ext_len=0)


class Trace:
    """An open trace.  Use as a context manager or call close()."""

    def __init__(self, path: PathArg, fd: int, size: int, tuples: bool = False) -> None:
        self.path = path
        self.tuples = tuples
        self.size = size
        self.header: dict[str, Any] = {}
        self.schema: TraceSchema = current_schema()
        self._check = EventCheck(self.schema)
        self._checked: dict[int, int] = {}   # chunk index -> level of the checks its events passed
        self._partial: tuple[int, int] | None = None   # (chunk index, header count) of a chunk cut by a bad event
        self.format_version: tuple[int, int] | None = None
        self.stop: StopReport | None = None
        self.notes: list[str] = []       # one-line remarks for the user (a newer writer ...)
        self.tag = 0
        self._fd = fd
        self._refs: list[ChunkRef] = []
        self._firsts: list[int] = []
        self._chunks: list[tuple[int, int, int]] | None = None
        self._cache: OrderedDict[int, list[Event]] = OrderedDict()
        self.count = 0

    # -- public view -----------------------------------------------------------------
    @property
    def complete(self) -> bool:
        return self.stop is None

    @property
    def chunks(self) -> list[tuple[int, int, int]]:
        """[(offset, first_seq, count)] of the readable chunks (shared: do not mutate)."""
        if self._chunks is None or len(self._chunks) != len(self._refs):
            self._chunks = [(r.offset, r.first_seq, r.count) for r in self._refs]
        return self._chunks

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._cache.clear()

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except OSError:
            pass            # a descriptor gone bad under us: nothing left to release

    # -- events ------------------------------------------------------------------------
    def iter_chunks(self, first: int = 0, *, folded: bool = False) -> Iterator[list[Event]]:
        """Decoded chunks (lists of event lists) from chunk index `first`, in
        order, stopping before any damage.  The fast path for folds.

        folded=True: the caller passes every event to replay.state.fold,
        which checks prefix and field types as it applies them, so the reader
        checks only that events are arrays with the chunk's seqs (cheaper:
        docs/FORMAT.md section 2.2).  An event the fold rejects is then
        reported by the caller, as BadEvent."""
        i = first
        while i < len(self._refs):
            chunk = self._decode(i, FOLD_CHECKED if folded else FULLY_CHECKED)
            if chunk is None:
                return
            yield chunk
            i += 1

    def events(self, start: int = 1, stop: int | None = None) -> Iterator[Event]:
        """Events with start <= seq < stop (stop None: to the end), decoded
        chunk by chunk from the chunk holding `start` (no decode from seq 1)."""
        start = max(start, 1)
        if stop is None:
            stop = self.count + 1
        if start >= stop or start > self.count:
            return
        i = bisect.bisect_right(self._firsts, start) - 1
        while i < len(self._refs):
            ref = self._refs[i]
            if ref.first_seq >= stop:
                return
            chunk = self._decode(i)
            if chunk is None:
                return
            lo = start - ref.first_seq if start > ref.first_seq else 0
            hi = stop - ref.first_seq
            if lo == 0 and hi >= ref.count:
                yield from chunk
            else:
                yield from chunk[lo:hi]
            i += 1

    def event(self, n: int) -> Event:
        """Event with seq n, decoding only its chunk (kept in a small LRU).
        IndexError when n is outside 1..count (or its chunk turns out damaged).
        The returned list is shared with the cache: do not mutate it."""
        if not 1 <= n <= self.count:
            raise IndexError(f"seq {n} is outside 1..{self.count}")
        i = bisect.bisect_right(self._firsts, n) - 1
        chunk = self._cache.get(i)
        if chunk is None:
            chunk = self._decode(i)
            if chunk is None or n > self.count:
                stop = self.stop.describe() if self.stop is not None else "damaged"
                raise IndexError(f"seq {n} is beyond the readable part: {stop}")
            self._cache[i] = chunk
            if len(self._cache) > _CACHED_CHUNKS:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(i)
        return chunk[n - self._refs[i].first_seq]

    # -- decoding ----------------------------------------------------------------------
    def _decode(self, i: int, level: int = 2) -> list[Event] | None:
        """Chunk i's events, or None after recording the damage found in it.
        level: FULLY_CHECKED (every rule of replay.validate) or FOLD_CHECKED
        (arrays, seqs and codes; the fold checks the rest).  An event that
        breaks a rule ends the readable trace just before it: the events of
        its chunk before it are returned (and stay readable)."""
        ref = self._refs[i]
        if self._fd < 0:
            raise ValueError("read from a closed Trace")
        # The chunk the trace ends inside keeps the header's count on disk.
        count = self._partial[1] if self._partial is not None and self._partial[0] == i else ref.count
        try:
            blob = os.pread(self._fd, CHUNK_HEADER.size + ref.payload_len, ref.offset)
        except OSError as exc:
            self._damaged(i, "truncated", ref.offset, f"read error: {exc.strerror or exc}")
            return None
        try:
            if len(blob) != CHUNK_HEADER.size + ref.payload_len:
                raise _Damage("truncated", ref.offset, "file shrank while open")
            head = _check_chunk_header(blob, ref.offset, self.tag)
            if head != (SYNC_EVENTS, ref.payload_len, count, ref.first_seq, ref.payload_crc):
                raise _Damage("corrupt", ref.offset, "chunk header disagrees with the index")
            payload = memoryview(blob)[CHUNK_HEADER.size:]
            if zlib.crc32(payload) != ref.payload_crc:
                raise _Damage("corrupt", ref.offset, "chunk payload checksum mismatch")
            # A chunk's events are checked once per open trace: a re-decode
            # (seeks) has just matched the same CRC, so the same events.
            done = self._checked.get(i, 0)
            check = None if done >= level else self._check.check if level == FULLY_CHECKED else self._check.check_seq
            events, bad = _decode_payload(payload, ref._replace(count=count), check, not self.tuples)
        except _Damage as d:
            self._damaged(i, d.kind, d.offset, d.message)
            return None
        if done < level:
            self._checked[i] = level
        if bad is not None:
            j, msg = bad
            self._damaged(i, "corrupt", ref.offset, f"event {ref.first_seq + j}: {msg}", keep=j)
            return events[:j] or None
        return events if count == ref.count else events[:ref.count]

    def _damaged(self, i: int, kind: str, offset: int, message: str, keep: int = 0) -> None:
        """The trace now ends inside chunk i, after its first `keep` events
        (0: before the chunk)."""
        if keep:
            ref = self._refs[i]
            self._partial = (i, self._partial[1] if self._partial and self._partial[0] == i else ref.count)
            self._refs[i] = ref._replace(count=keep)
            i += 1
        del self._refs[i:]
        del self._firsts[i:]
        for k in [k for k in self._cache if k >= i - (1 if keep else 0)]:
            del self._cache[k]
        self.count = self._refs[-1].first_seq + self._refs[-1].count - 1 if self._refs else 0
        self.stop = StopReport(kind, offset, i - (1 if keep else 0), self.count, message)


_Check = Callable[[Sequence[Any], int, type], Problem | None]


def _decode_payload(payload: memoryview, ref: ChunkRef, check: _Check | None,
                    use_list: bool = True) -> tuple[list[Event], Problem | None]:
    """(events, None), or (events, (index, message)) of the first event that
    fails ``check``; raises _Damage for what is not `count` events at all."""
    up = _unpacker(ref.payload_len, use_list)
    up.feed(payload)
    # Materialising ~1000 lists at once sets off the cyclic GC several times
    # per chunk, each pass walking the young lists: ~25 % of the read rate
    # (bench/format_bench.py).  Events hold no cycles, so collect at most once
    # per chunk, after it.  (Process-global; a caller that disabled the GC
    # itself, like replay.seek's build pass, is left alone.)
    gc_was = gc.isenabled()
    if gc_was:
        gc.disable()
    try:
        try:
            events = list(up)
        except (msgpack.UnpackException, ValueError) as exc:
            # Bytes that pass their CRC but are no msgpack this format allows
            # (crafted, or written by a broken tool): msgpack raises these
            # (FormatError, StackError, ExtraData, OutOfData, a non-str map
            # key, an ext type, invalid UTF-8).
            raise _Damage("corrupt", ref.offset, f"undecodable event data ({type(exc).__name__})") from None
        if len(events) != ref.count or up.tell() != ref.payload_len:
            raise _Damage("corrupt", ref.offset,
                          f"chunk declares {ref.count} events, holds {len(events)}")
        # Every event against the catalogue's types and the chunk's seq range
        # (replay/validate.py: a few C-level passes, no Python per event).
        bad = check(events, ref.first_seq, list if use_list else tuple) if check is not None else None
    finally:
        if gc_was:
            gc.enable()
    return events, bad


def _check_chunk_header(blob: bytes, offset: int, tag: int) -> tuple[bytes, int, int, int, int]:
    """Parse and validate a chunk header; returns the unpacked fields."""
    head = CHUNK_HEADER.unpack_from(blob)
    if zlib.crc32(memoryview(blob)[:CHUNK_HEADER.size - 4]) != head[6]:
        raise _Damage("corrupt", offset, "chunk header checksum mismatch")
    if head[0] not in (SYNC_EVENTS, SYNC_INDEX):
        raise _Damage("corrupt", offset, f"unknown chunk type {head[0]!r}")
    if head[1] != tag:
        raise _Damage("foreign-chunk", offset,
                      f"chunk tag {head[1]:08x} is not this trace's {tag:08x} (spliced from another trace?)")
    return head[0], head[2], head[3], head[4], head[5]


# ---------------------------------------------------------------------------
# Opening


def open_trace(path: PathArg, *, verify: bool = True, tuples: bool = False) -> Trace:
    """Open and validate a trace.

    verify=True walks every chunk header and checks every payload CRC (one
    sequential read, no decoding): ``stop`` then reflects all accidental
    damage.  verify=False trusts a valid trailer + index (O(1) in the number
    of events) and checks each chunk when it is decoded.

    tuples=True decodes events (and arrays inside them) as tuples instead of
    lists: ~15 % faster to read (one allocation per event instead of two, see
    bench/format_bench.py), immutable and hashable -- for folds that only index.

    Raises NotATrace for what is not a trace; never for a damaged one.
    """
    fd, size = _open_regular(path)
    trace = Trace(path, fd, size, tuples)
    try:
        _read(trace, verify)
    except BaseException:
        trace.close()
        raise
    if trace.notes and note_handler is not None:
        for note in trace.notes:
            note_handler(path, note)
    return trace


# Called as note_handler(path, message) for each of a trace's notes when it
# is opened; the command line prints them (once per file) on stderr, a
# library user may set its own.  None: notes stay in Trace.notes only.
note_handler: Callable[[PathArg, str], None] | None = None


def _open_regular(path: PathArg) -> tuple[int, int]:
    try:
        # O_NONBLOCK: opening a FIFO must not hang waiting for a writer.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise NotATrace(path, "no such file") from None
    except IsADirectoryError:
        raise NotATrace(path, "is a directory") from None
    except PermissionError:
        raise NotATrace(path, "permission denied") from None
    except (OSError, ValueError) as exc:
        raise NotATrace(path, f"cannot open: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise NotATrace(path, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise NotATrace(path, "is not a regular file")
        size = st.st_size
        if size == 0:
            raise NotATrace(path, "empty file, not a vtdtrace trace")
        try:
            magic = os.pread(fd, len(MAGIC), 0)
        except OSError as exc:
            raise NotATrace(path, f"cannot read: {exc.strerror or exc}") from None
        if len(magic) < len(MAGIC):
            raise NotATrace(path, f"too short to be a vtdtrace trace ({size} bytes)")
        if magic != MAGIC:
            raise NotATrace(path, "not a vtdtrace trace (wrong magic)")
    except BaseException:
        os.close(fd)
        raise
    return fd, size


def _pread(trace: Trace, n: int, offset: int) -> bytes:
    try:
        data = os.pread(trace._fd, n, offset)
    except OSError as exc:
        raise _Damage("truncated", offset, f"read error: {exc.strerror or exc}") from None
    if len(data) != n:
        raise _Damage("truncated", offset, "file ends early")
    return data


def _read(trace: Trace, verify: bool) -> None:
    try:
        data_start = _read_header(trace)
    except _Damage as d:
        kind = "truncated" if d.kind == "truncated" else "bad-header"
        trace.stop = StopReport(kind, 0, 0, 0, d.message)
        return
    if not verify and _load_index(trace, data_start):
        return
    _scan(trace, data_start, verify)


def _read_header(trace: Trace) -> int:
    size = trace.size
    if size < FILE_HEADER.size:
        raise _Damage("truncated", 0, f"file ends inside the {FILE_HEADER.size}-byte header")
    fixed = _pread(trace, FILE_HEADER.size, 0)
    major: int
    minor: int
    meta_len: int
    meta_crc: int
    head_crc: int
    _, major, minor, meta_len, meta_crc, head_crc = FILE_HEADER.unpack(fixed)
    if zlib.crc32(fixed[:-4]) != head_crc:
        raise _Damage("bad-header", 0, "header checksum mismatch")
    if major != FORMAT_MAJOR:
        raise NotATrace(trace.path, f"format version {major}.{minor} is not supported "
                                    f"(this vtdtrace reads {FORMAT_MAJOR}.x)")
    if meta_len > MAX_META_BYTES:
        raise _Damage("bad-header", 0, f"header claims {meta_len} bytes of metadata (limit {MAX_META_BYTES})")
    end = FILE_HEADER.size + meta_len
    if end > size:
        raise _Damage("truncated", 0, f"file ends inside the header ({meta_len} bytes of metadata declared)")
    body = _pread(trace, meta_len, FILE_HEADER.size)
    if zlib.crc32(body) != meta_crc:
        raise _Damage("bad-header", 0, "header metadata checksum mismatch")
    try:
        up = _unpacker(meta_len)
        up.feed(body)
        meta = up.unpack()
        if up.tell() != meta_len:
            raise ValueError("trailing bytes")
        if not isinstance(meta, dict):
            raise ValueError("not a map")
        schema = load_schema(meta.get("schema"))
        # Absent is a hand-made header; present, it must be a platform map.
        problem = platform_problem(meta["platform"], present=True) if "platform" in meta else None
        if problem is not None:
            raise ValueError(problem)
    except (msgpack.UnpackException, ValueError) as exc:
        # A header that passes its CRC but is no valid metadata map (crafted,
        # or another tool's): msgpack's errors, or load_schema's and
        # platform_problem's ValueError naming what is wrong.
        raise _Damage("bad-header", 0, f"header metadata unreadable: {exc}") from None
    trace.header = meta
    trace.schema = schema
    trace._check = EventCheck(schema, meta.get("platform"))
    # Newer writers only append (kinds, trailing fields, functions): read
    # under the same rules, shown raw where this build knows nothing, and
    # say so once (docs/FORMAT.md, "Newer traces").
    if schema.version > SCHEMA_VERSION:
        trace.notes.append(f"event schema version {schema.version} is newer than this build's "
                           f"{SCHEMA_VERSION}: event kinds and fields it does not know are shown raw")
    elif minor > FORMAT_MINOR:
        trace.notes.append(f"format version {major}.{minor} is newer than this build's "
                           f"{FORMAT_MAJOR}.{FORMAT_MINOR}: what it does not know is shown raw")
    trace.format_version = (major, minor)
    trace.tag = head_crc
    return end


def _set_chunks(trace: Trace, refs: list[ChunkRef]) -> None:
    trace._refs = refs
    trace._firsts = [r.first_seq for r in refs]
    trace.count = refs[-1].first_seq + refs[-1].count - 1 if refs else 0


def _scan(trace: Trace, data_start: int, verify: bool) -> None:
    """Walk the chunks from the front; the only way to open an unfinished trace."""
    refs: list[ChunkRef] = []
    off, expect, size = data_start, 1, trace.size
    try:
        while True:
            rest = size - off
            if rest == 0:
                raise _Damage("truncated", off, f"ends after {len(refs)} chunks without an index "
                                                "(the recording did not finish)")
            if rest < CHUNK_HEADER.size:
                raise _Damage("truncated", off, "file ends inside a chunk header")
            blob = _pread(trace, CHUNK_HEADER.size, off)
            sync, plen, count, first, pcrc = _check_chunk_header(blob, off, trace.tag)
            if sync == SYNC_INDEX:
                _check_tail(trace, off, plen, count, pcrc, blob, refs)
                break
            if plen > MAX_CHUNK_BYTES:
                raise _Damage("corrupt", off, f"chunk claims {plen} bytes (limit {MAX_CHUNK_BYTES})")
            if count == 0 or count * MIN_EVENT_BYTES > plen:
                raise _Damage("corrupt", off, f"chunk claims {count} events in {plen} bytes")
            if first != expect:
                raise _Damage("corrupt", off, f"chunk starts at seq {first}, expected {expect}")
            end = off + CHUNK_HEADER.size + plen
            if end > size:
                raise _Damage("truncated", off, f"file ends inside chunk {len(refs)}")
            if verify and zlib.crc32(_pread(trace, plen, off + CHUNK_HEADER.size)) != pcrc:
                raise _Damage("corrupt", off, "chunk payload checksum mismatch")
            refs.append(ChunkRef(off, first, count, plen, pcrc))
            expect += count
            off = end
    except _Damage as d:
        trace.stop = StopReport(d.kind, d.offset, len(refs), expect - 1, d.message)
    _set_chunks(trace, refs)


def _check_tail(trace: Trace, off: int, plen: int, count: int, pcrc: int, head: bytes,
                refs: list[ChunkRef]) -> None:
    """The index chunk at off and the trailer after it must match the chunks scanned."""
    if plen != count * INDEX_ENTRY.size:
        raise _Damage("corrupt", off, f"index of {count} entries cannot be {plen} bytes")
    end = off + CHUNK_HEADER.size + plen
    if end > trace.size:
        raise _Damage("truncated", off, "file ends inside the index")
    payload = _pread(trace, plen, off + CHUNK_HEADER.size)
    if zlib.crc32(payload) != pcrc:
        raise _Damage("corrupt", off, "index checksum mismatch")
    if list(INDEX_ENTRY.iter_unpack(payload)) != [(r.offset, r.first_seq, r.count, r.payload_crc)
                                                  for r in refs]:
        raise _Damage("corrupt", off, "index disagrees with the chunks")
    rest = trace.size - end
    if rest < TRAILER.size:
        raise _Damage("truncated", end, "file ends inside the trailer")
    tr = _pread(trace, TRAILER.size, end)
    marker, tag, index_offset, events, index_crc, crc = TRAILER.unpack(tr)
    total = refs[-1].first_seq + refs[-1].count - 1 if refs else 0
    if zlib.crc32(tr[:-4]) != crc or marker != TRAILER_MARKER:
        raise _Damage("corrupt", end, "trailer checksum mismatch")
    if (tag, index_offset, events, index_crc) != (trace.tag, off, total,
                                                  int.from_bytes(head[-4:], "little")):
        raise _Damage("corrupt", end, "trailer disagrees with the index")
    if rest > TRAILER.size:
        raise _Damage("corrupt", end + TRAILER.size, f"{rest - TRAILER.size} unexpected bytes after the trailer")


def _load_index(trace: Trace, data_start: int) -> bool:
    """The O(1) path: trailer -> index chunk -> chunk table.  False (and no
    state change) when any of it is missing or inconsistent; the caller then
    scans."""
    size = trace.size
    if size < data_start + CHUNK_HEADER.size + TRAILER.size:
        return False
    try:
        tr = _pread(trace, TRAILER.size, size - TRAILER.size)
        marker, tag, index_offset, events, index_crc, crc = TRAILER.unpack(tr)
        if zlib.crc32(tr[:-4]) != crc or marker != TRAILER_MARKER or tag != trace.tag:
            return False
        if not data_start <= index_offset <= size - TRAILER.size - CHUNK_HEADER.size:
            return False
        head = _pread(trace, CHUNK_HEADER.size, index_offset)
        sync, plen, count, _, pcrc = _check_chunk_header(head, index_offset, trace.tag)
        if (sync != SYNC_INDEX or int.from_bytes(head[-4:], "little") != index_crc
                or plen != count * INDEX_ENTRY.size
                or index_offset + CHUNK_HEADER.size + plen != size - TRAILER.size):
            return False
        payload = _pread(trace, plen, index_offset + CHUNK_HEADER.size)
        if zlib.crc32(payload) != pcrc:
            return False
    except _Damage:
        return False
    refs: list[ChunkRef] = []
    expect, off = 1, data_start
    entries = list(INDEX_ENTRY.iter_unpack(payload))
    for k, (offset, first, n, ccrc) in enumerate(entries):
        nxt = entries[k + 1][0] if k + 1 < len(entries) else index_offset
        plen = nxt - offset - CHUNK_HEADER.size
        if (offset != off or first != expect or n == 0 or not n * MIN_EVENT_BYTES <= plen <= MAX_CHUNK_BYTES):
            return False
        refs.append(ChunkRef(offset, first, n, plen, ccrc))
        expect += n
        off = nxt
    if off != index_offset or expect - 1 != events:
        return False
    _set_chunks(trace, refs)
    return True


def trace_fingerprint(path: PathArg) -> str:
    """A cheap identity for sidecar caches: "SIZE-CRC".  For a finished trace
    the CRC is the trailer's, which transitively covers every chunk CRC (via
    the index); otherwise it is the CRC of the last 4 KiB.  Raises NotATrace."""
    fd, size = _open_regular(path)
    try:
        tail = os.pread(fd, min(size, 4096), max(0, size - 4096))
    except OSError as exc:
        raise NotATrace(path, f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    tr = tail[-TRAILER.size:]
    if len(tr) == TRAILER.size and tr[:4] == TRAILER_MARKER and zlib.crc32(tr[:-4]) == TRAILER.unpack(tr)[5]:
        return f"{size}-{TRAILER.unpack(tr)[5]:08x}"
    return f"{size}-{zlib.crc32(tail):08x}"
