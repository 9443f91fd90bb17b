"""The sidecar: a small keyed store of data derived from one trace
(checkpoints, indexes, findings, bookmarks), kept beside it as
``TRACE.vtdt-cache`` so the next open is instant.

The trace is the authority; the sidecar only accelerates.  Three rules keep
a cached answer from ever outvoting the trace:

1. **Bound to the bytes it was computed from.**  The table of contents
   records the *identity* of the trace file the entries were verified
   against -- size, mtime in ns, inode, device and the trailer's CRC -- and
   its *content*: the file header's tag, every chunk's (offset, first seq,
   count, payload CRC) and where reading stopped.  When the identity still
   matches, the entries are used without rereading the trace (opening stays
   O(1)).  When anything differs, the whole trace is CRC-verified once
   (``scan_content``) and compared with the recorded content: equal (a copy,
   a ``touch``, a move) and the new identity is recorded; different (damage,
   a repair, another recording) and every entry is dropped.  A trace
   modified within ~2 s of being verified may not show it in its mtime (file
   system clocks are coarse), so such an identity is recorded as *racy* and
   verified again at the next open, as git does for its index.
   The identity shortcut cannot see a bit that rots on disk (size, mtime and
   inode stay), so a process that gives one-shot answers -- every command
   but ``view`` -- calls ``always_verify()``: its opens CRC-verify the whole
   trace against the recorded content before any entry is used (one CRC pass,
   a few hundredths of a fold); the viewer keeps its O(1) open and relies on
   the per-chunk check of every chunk it reads.
2. **Every entry checksummed.**  Each TOC entry carries the CRC-32 of its
   bytes; an entry longer than ``BLOCK`` also has a table of per-block CRCs,
   so a slice (one checkpoint out of megabytes) is verified by reading only
   the blocks under it.  A mismatch raises ``SidecarCorrupt``; callers
   discard the cache and rebuild from the trace, never use the bytes.
3. **One writer at a time.**  Writers serialise on ``flock``; a builder takes
   the lock *before* computing, so a second process opening at the same time
   waits and then reads the first one's entries instead of appending its own
   copy.  Entries are appended where the old TOC was and a new TOC + trailer
   written on ``commit()``; bytes of existing entries never move, so a reader
   that opened earlier keeps reading valid data, and a reader that opens
   later sees only committed entries (it reads the trailer under the lock).
   A stale file is replaced with ``os.replace``, never truncated in place,
   and the replacement is created like any new file (mode from the umask and
   the directory's defaults).

Layout (all integers little-endian)::

    header   8-byte magic, u32 format version, u32 reserved
    entry*   raw bytes, then for an entry longer than BLOCK its u32 CRC per BLOCK bytes
    toc      msgpack {"v", "trust", "entries": {key: [offset, length, crc, sums offset, sums crc]}}
    trailer  8-byte marker, u64 toc offset, u32 toc length, u32 crc32(toc)

Only the trailer at EOF is trusted: a file without a valid trailer (a writer
died, the file was cut) or of another VERSION is rebuilt from scratch.
Values are msgpack (never pickle: a sidecar may come with an untrusted trace).

A sidecar that cannot be written (a full disk, a read-only folder with no
user cache) never stops an answer: writes raise ``SidecarWriteError``, the
file keeps its previous committed state, and callers compute in memory.

Where it lives: beside the trace when that folder is writable (or a
sidecar already sits there), else in the user's cache directory
(``$XDG_CACHE_HOME/vtdtrace`` or ``~/.cache/vtdtrace``), else in an anonymous
temporary file that lasts as long as the process.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import struct
import tempfile
import time
import zlib
from array import array
from typing import IO, TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from .reader import PathArg, Trace

import msgpack

MAGIC = b"VTDTSIDE"
VERSION = 2
HEADER = struct.Struct("<8sII")
TRAILER = struct.Struct("<8sQII")
TRAILER_MARKER = b"VTDTSTOC"
MAX_TOC_BYTES = 64 << 20
# Entries longer than this get per-block CRCs (slices are verified by block).
BLOCK = 4096
# A trace modified less than this before it was verified may change again
# without its mtime showing it: verify it again next time.
RACY_NS = 2_000_000_000
K_CHUNKS = "trust/chunks"
_CHUNK_ROW = struct.Struct("<QQII")      # offset, first_seq, count, payload_crc


class SidecarError(Exception):
    pass


class SidecarCorrupt(SidecarError):
    """An entry's bytes do not match its checksum: discard, rebuild."""


class SidecarWriteError(SidecarError):
    """The sidecar could not be written (full disk, I/O error, lost race)."""


# --- the trace's identity and content --------------------------------------------------

class TraceIdentity(NamedTuple):
    size: int
    mtime_ns: int
    ino: int
    dev: int
    tail_crc: int       # the trailer's CRC, or the CRC of the last 4 KiB without one


def trace_identity(path: PathArg) -> TraceIdentity | None:
    """The identity of the file at ``path`` now, or None when it cannot be
    stat'ed or read (no cache is used then)."""
    from .reader import TRAILER as T
    from .reader import TRAILER_MARKER as TM
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        tail = os.pread(fd, min(st.st_size, 4096), max(0, st.st_size - 4096))
    except OSError:
        return None
    finally:
        os.close(fd)
    tr = tail[-T.size:]
    if len(tr) == T.size and tr[:4] == TM and zlib.crc32(tr[:-4]) == T.unpack(tr)[5]:
        crc = T.unpack(tr)[5]
    else:
        crc = zlib.crc32(tail)
    return TraceIdentity(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, crc)


class Content(NamedTuple):
    """What a full CRC pass over a trace establishes: the header's tag, the
    readable chunks (packed _CHUNK_ROW rows) and the stop report (a list, or
    None for a complete trace)."""
    tag: int
    chunks: bytes
    stop: list[Any] | None


def _pack_chunks(trace: Trace) -> bytes:
    # The reader's chunk refs carry each chunk's payload CRC (replay.reader.ChunkRef).
    return b"".join(_CHUNK_ROW.pack(r.offset, r.first_seq, r.count, r.payload_crc) for r in trace._refs)


def content_of(trace: Trace) -> Content:
    """The content of a trace every chunk of which has just been decoded
    (each decode checks the chunk's CRC), so no second pass is needed."""
    return Content(trace.tag, _pack_chunks(trace), list(trace.stop) if trace.stop is not None else None)


def scan_content(path: PathArg) -> Content | None:
    """One CRC pass over the whole trace (no decoding); None when it is not a trace."""
    from .reader import NotATrace, open_trace
    try:
        with open_trace(path, verify=True) as t:
            return content_of(t)
    except (NotATrace, OSError):
        return None


_ALWAYS_VERIFY = False
# Under always_verify, what one CRC pass found, by (path, identity): a command
# opens the sidecar more than once (the session, then the findings) and the
# file has not changed in between unless its identity did.
_VERIFIED: dict[tuple[str, TraceIdentity], Content | None] = {}


def always_verify(on: bool = True) -> None:
    """Never trust a sidecar on the trace's identity alone in this process:
    verify the trace's content at every open (see the module docstring)."""
    global _ALWAYS_VERIFY
    _ALWAYS_VERIFY = on
    _VERIFIED.clear()


def _content_now(path: PathArg, identity: TraceIdentity | None) -> Content | None:
    """scan_content, done once per identity while always_verify is on."""
    if not _ALWAYS_VERIFY or identity is None:
        return scan_content(path)
    key = (os.fspath(path), identity)
    if key not in _VERIFIED:
        _VERIFIED[key] = scan_content(path)
    return _VERIFIED[key]


def _identity_suffices(recorded: TraceIdentity, identity: TraceIdentity, racy: bool) -> bool:
    return recorded == identity and not racy and not _ALWAYS_VERIFY


def is_racy(identity: TraceIdentity) -> bool:
    return time.time_ns() - identity.mtime_ns < RACY_NS


# --- where it lives ---------------------------------------------------------------------

def beside_path(trace_path: PathArg) -> str:
    p = os.fspath(trace_path)
    return p + "-cache" if p.endswith(".vtdt") else p + ".vtdt-cache"


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vtdtrace")


def user_cache_path(trace_path: PathArg) -> str:
    real = os.path.realpath(os.fspath(trace_path))
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(user_cache_dir(), f"{digest}-{os.path.basename(real)}.vtdt-cache")


def _dir_writable(path: str) -> bool:
    return os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK | os.X_OK)


# --- storage backends: a file (locked with flock) or memory --------------------------

class _FileStore:
    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.fd = f.fileno()

    def pread(self, n: int, off: int) -> bytes:
        return os.pread(self.fd, n, off)

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            n = os.pwrite(self.fd, view, off)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, off = view[n:], off + n

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def truncate(self, n: int) -> None:
        os.ftruncate(self.fd, n)

    def lock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def unlock(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.f.close()


class _MemStore:
    """The last resort when no file can be written (a full disk)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def pread(self, n: int, off: int) -> bytes:
        return bytes(self.buf[off:off + n])

    def pwrite(self, data: bytes | bytearray | memoryview, off: int) -> None:
        data = bytes(data)
        if len(self.buf) < off:
            self.buf.extend(bytes(off - len(self.buf)))
        self.buf[off:off + len(data)] = data

    def size(self) -> int:
        return len(self.buf)

    def truncate(self, n: int) -> None:
        del self.buf[n:]

    def lock(self) -> None:
        pass

    unlock = lock

    def close(self) -> None:
        self.buf = bytearray()


class _Entry(NamedTuple):
    offset: int
    length: int
    crc: int
    sums_offset: int        # 0: no block table (length <= BLOCK)
    sums_crc: int


# --- the store ----------------------------------------------------------------------------

class Sidecar:
    """A keyed store bound to one trace.  Use ``Sidecar.open``.

    ``trusted``: the entries were computed from the trace as it is now (see
    the module docstring); entries of an untrusted sidecar must not be used.
    A writer that computed its data from the trace calls ``bind(identity,
    content)`` before ``commit()`` when the sidecar was not trusted."""

    def __init__(self, store: _FileStore | _MemStore, path: str | None, *, writable: bool, location: str,
                 trace_path: PathArg | None = None, identity: TraceIdentity | None = None) -> None:
        self._s: _FileStore | _MemStore | None = store
        self.path = path
        self.location = location          # "beside" | "user-cache" | "temporary" | "memory"
        self.writable = writable
        self.trace_path = trace_path
        self.identity = identity          # of the trace as this process saw it
        self._toc: dict[str, _Entry] = {}
        self._trust: dict[str, Any] | None = None
        self._end = HEADER.size           # where the next entry goes (= current TOC offset)
        self._locked = False
        self._dirty = False
        self._bound: tuple[TraceIdentity | None, Content | None] | None = None   # to record at commit
        self._saved: tuple[int, bytes] | None = None   # (end, old TOC + trailer) to restore on a failed write
        self._sums: dict[str, array[int]] = {}
        self.trusted = False
        self._load()

    # --- opening -------------------------------------------------------------

    @property
    def _st(self) -> _FileStore | _MemStore:
        """The open store (a closed Sidecar has none: using it is a bug)."""
        if self._s is None:
            raise ValueError("use of a closed Sidecar")
        return self._s

    @classmethod
    def open(cls, trace_path: PathArg, identity: TraceIdentity | None = None) -> Sidecar:
        """The sidecar of the trace at ``trace_path``.  ``identity``: the
        trace's identity as the caller saw it before reading it (taken here
        when None).  When the recorded identity differs, the trace is
        CRC-verified here (see the module docstring); ``trusted`` says
        whether the entries may be used."""
        if identity is None:
            identity = trace_identity(trace_path)
        if identity is None:
            return cls.temporary(trace_path, None)
        beside = beside_path(trace_path)
        sc: Sidecar | None = None
        if _dir_writable(beside):
            sc = cls._open_path(beside, "beside", trace_path, identity)
        elif os.path.exists(beside):
            # Built before the folder went read-only: readable, not writable.
            store: _FileStore | None
            try:
                store = _FileStore(open(beside, "rb"))
            except OSError:
                store = None
            if store is not None:
                sc = cls(store, beside, writable=False, location="beside", trace_path=trace_path,
                         identity=identity)
                if sc._trust is None:
                    sc.close()
                    sc = None
        if sc is None:
            user = user_cache_path(trace_path)
            try:
                os.makedirs(os.path.dirname(user), exist_ok=True)
            except OSError:
                pass
            else:
                sc = cls._open_path(user, "user-cache", trace_path, identity)
        if sc is None:
            return cls.temporary(trace_path, identity)
        sc._establish_trust()
        return sc

    @classmethod
    def temporary(cls, trace_path: PathArg | None = None, identity: TraceIdentity | None = None) -> Sidecar:
        """An anonymous store for this process only (``sidecar=False``)."""
        store: _FileStore | _MemStore
        try:
            store = _FileStore(tempfile.TemporaryFile())
            store.pwrite(HEADER.pack(MAGIC, VERSION, 0), 0)
            location = "temporary"
        except OSError:
            store = _MemStore()
            store.pwrite(HEADER.pack(MAGIC, VERSION, 0), 0)
            location = "memory"
        return cls(store, None, writable=True, location=location, trace_path=trace_path, identity=identity)

    @classmethod
    def memory(cls, trace_path: PathArg | None = None, identity: TraceIdentity | None = None) -> Sidecar:
        """A store in memory: the fallback when no file can be written."""
        store = _MemStore()
        store.pwrite(HEADER.pack(MAGIC, VERSION, 0), 0)
        return cls(store, None, writable=True, location="memory", trace_path=trace_path, identity=identity)

    @classmethod
    def _open_path(cls, path: str, location: str, trace_path: PathArg,
                   identity: TraceIdentity) -> Sidecar | None:
        """Open (creating, or replacing an unreadable one) under the file
        lock, so that two processes opening at once end up on the same file
        and a writer in the middle of a commit is waited for."""
        try:
            for _ in range(8):
                f = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+b")
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                    if not _same_file(f, path):
                        f.close()        # replaced while we waited: take the new one
                        continue
                    size = os.fstat(f.fileno()).st_size
                    if size == 0:
                        _FileStore(f).pwrite(HEADER.pack(MAGIC, VERSION, 0), 0)
                    elif size != HEADER.size and _read_toc(_FileStore(f)) is None:
                        _replace_with_empty(path)   # another version, or a writer died
                        f.close()
                        continue
                    sc = cls(_FileStore(f), path, writable=True, location=location, trace_path=trace_path,
                             identity=identity)
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                    return sc
                except BaseException:
                    f.close()
                    raise
            return None
        except OSError:
            return None

    # --- trust -----------------------------------------------------------------

    def _establish_trust(self) -> None:
        """Decide whether the entries describe the trace as it is now; verify
        the trace when the identity differs (or was racy), drop every entry
        when the content differs."""
        trust = self._trust
        self.trusted = False
        if trust is None or self.identity is None:
            return
        recorded = TraceIdentity(*trust["id"])
        if _identity_suffices(recorded, self.identity, trust["racy"]):
            self.trusted = True
            return
        assert self.trace_path is not None     # an identity was taken from it
        content = _content_now(self.trace_path, self.identity)
        if content is None or not self._recorded_content_is(content):
            self.reset()
            return
        self.trusted = True
        # The same bytes under a new identity (a copy, a touch) or no longer
        # racy: record it so that the next open is O(1) again.  Best effort.
        if self.writable and (recorded != self.identity or (trust["racy"] and not is_racy(self.identity))):
            try:
                self.lock()
                if self.trusted:
                    self.bind(self.identity, content)
                    self.commit()
                else:
                    self.abort()
            except SidecarError:
                pass

    def _recorded_content_is(self, content: Content) -> bool:
        trust = self._trust
        if trust is None:
            return False
        try:
            chunks = self.get_raw(K_CHUNKS)
        except SidecarError:
            return False
        return (trust.get("tag") == content.tag and chunks == content.chunks
                and _plain(trust.get("stop")) == _plain(content.stop))

    def _decide(self, verified: dict[str, Any] | None) -> bool:
        """After re-reading the TOC under the lock: are its entries still
        for the trace as this process sees it?  ``verified``: the trust
        record this process verified before, if any.  Entries of another
        content are dropped from the TOC this writer will commit."""
        t = self._trust
        if t is None or self.identity is None:
            return False
        if _identity_suffices(TraceIdentity(*t["id"]), self.identity, t["racy"]):
            return True
        if verified is not None and _plain(verified) == _plain(t):
            return True
        assert self.trace_path is not None     # an identity was taken from it
        content = _content_now(self.trace_path, self.identity)
        if content is not None and self._recorded_content_is(content):
            return True
        self._toc, self._trust = {}, None
        return False

    def bind(self, identity: TraceIdentity | None, content: Content | None) -> None:
        """Record at the next commit that the entries were computed from the
        trace with ``identity`` and ``content`` (a writer on an untrusted
        sidecar).  Without an identity nothing will be published."""
        self._bound = (identity, content)
        self._dirty = True

    def reset(self) -> None:
        """Drop every entry: replace the file with an empty one (readers that
        opened the old file keep it)."""
        self.trusted = False
        self._sums.clear()
        if not self.writable or self.path is None:
            self._toc, self._trust, self._end = {}, None, HEADER.size
            return
        try:
            self.lock()
            _replace_with_empty(self.path)
            self._release()
            self._reopen()
        except (OSError, SidecarError):
            if self._locked:
                self._release()
            self._toc, self._trust, self._end = {}, None, HEADER.size
            self.writable = False
        self.trusted = False

    def _reopen(self) -> None:
        assert self.path is not None           # only a sidecar file is reopened
        f = open(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666), "r+b")
        self._st.close()
        self._s = _FileStore(f)
        self._load()

    # --- reading -------------------------------------------------------------

    def _load(self) -> None:
        got = _read_toc(self._st)
        if got is None:
            self._toc, self._trust, self._end = {}, None, HEADER.size
        else:
            self._toc, self._trust, self._end = got
        self._sums.clear()

    def __contains__(self, key: str) -> bool:
        return key in self._toc

    def keys(self) -> list[str]:
        return list(self._toc)

    def size(self, key: str) -> int:
        return self._toc[key].length

    def get_raw(self, key: str) -> bytes | None:
        """The entry's bytes, verified; None when absent.  SidecarCorrupt
        when they do not match their checksum."""
        e = self._toc.get(key)
        if e is None:
            return None
        data = self._pread(e.offset, e.length)
        if zlib.crc32(data) != e.crc:
            raise SidecarCorrupt(f"sidecar entry {key} fails its checksum")
        return data

    def read(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` inside entry ``key``, verified by
        the blocks under them."""
        e = self._toc.get(key)
        if e is None:
            raise SidecarCorrupt(f"sidecar entry {key} is missing")
        if offset < 0 or length < 0 or offset + length > e.length:
            raise SidecarCorrupt(f"read of {key}[{offset}:{offset + length}] outside its {e.length} bytes")
        if not e.sums_offset:
            whole = self.get_raw(key)
            assert whole is not None           # e is in the TOC
            return whole[offset:offset + length]
        if not length:
            return b""
        sums = self._block_sums(key, e)
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        start = first * BLOCK
        data = self._pread(e.offset + start, min(e.length, (last + 1) * BLOCK) - start)
        view = memoryview(data)
        for b in range(first, last + 1):
            if zlib.crc32(view[(b - first) * BLOCK:(b - first + 1) * BLOCK]) != sums[b]:
                raise SidecarCorrupt(f"sidecar entry {key} fails its checksum at block {b}")
        return data[offset - start:offset - start + length]

    def _block_sums(self, key: str, e: _Entry) -> array[int]:
        sums = self._sums.get(key)
        if sums is None:
            raw = self._pread(e.sums_offset, 4 * -(-e.length // BLOCK))
            if zlib.crc32(raw) != e.sums_crc:
                raise SidecarCorrupt(f"sidecar entry {key}: block checksums damaged")
            sums = array("I")
            sums.frombytes(raw)
            self._sums[key] = sums
        return sums

    def get(self, key: str, default: Any = None) -> Any:
        """The entry decoded (msgpack, tuples for arrays); SidecarCorrupt
        when it fails its checksum or does not decode."""
        data = self.get_raw(key)
        if data is None:
            return default
        try:
            return msgpack.unpackb(data, use_list=False, strict_map_key=False)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            # An entry that passes its CRC but does not decode (another
            # build's, or crafted): msgpack's errors; TypeError for a map
            # used as a map key (unhashable).
            raise SidecarCorrupt(f"sidecar entry {key} does not decode: {type(exc).__name__}") from None

    def _pread(self, offset: int, length: int) -> bytes:
        try:
            data = self._st.pread(length, offset)
        except OSError as exc:
            raise SidecarCorrupt(f"sidecar unreadable: {exc.strerror or exc}") from None
        if len(data) != length:
            raise SidecarCorrupt("sidecar shorter than its table of contents says")
        return data

    # --- writing -------------------------------------------------------------

    def lock(self) -> None:
        """Take the writer lock and re-read the TOC: another process may have
        committed meanwhile (a builder that waited here then finds the
        entries built and uses them instead of appending its own copy)."""
        if not self.writable:
            raise SidecarWriteError("sidecar is read-only")
        if self._locked:
            return
        verified = self._trust if self.trusted else None
        try:
            st = self._st
            if self.path is not None and isinstance(st, _FileStore) and not _same_file(st.f, self.path):
                self._reopen()              # replaced since we opened it
            self._st.lock()
            self._locked = True
            if self.path is not None:
                self._load()
                self.trusted = self._decide(verified)
            self._saved = (self._end, self._st.pread(self._st.size() - self._end, self._end))
        except OSError as exc:
            if self._locked:
                self._release()
            raise SidecarWriteError(f"cannot lock the sidecar: {exc.strerror or exc}") from None

    def _write(self, data: bytes | bytearray | memoryview, offset: int) -> None:
        try:
            self._st.pwrite(data, offset)
        except OSError as exc:
            self.abort()
            raise SidecarWriteError(f"cannot write the sidecar: {exc.strerror or exc}") from None

    def put_raw(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self.lock()
        data = bytes(data)
        off = self._end
        sums_off = sums_crc = 0
        self._write(data, off)
        end = off + len(data)
        if len(data) > BLOCK:
            view = memoryview(data)
            sums = array("I", (zlib.crc32(view[i:i + BLOCK]) for i in range(0, len(data), BLOCK))).tobytes()
            self._write(sums, end)
            sums_off, sums_crc = end, zlib.crc32(sums)
            end += len(sums)
        self._toc[key] = _Entry(off, len(data), zlib.crc32(data), sums_off, sums_crc)
        self._sums.pop(key, None)
        self._end = end
        self._dirty = True

    def put(self, key: str, value: Any) -> None:
        self.put_raw(key, msgpack.packb(value, use_bin_type=True))

    def stream(self, key: str) -> _Stream:
        """Write one large entry piecewise: ``with sc.stream(k) as s:
        off = s.write(part)`` (offsets are relative to the entry)."""
        self.lock()
        return _Stream(self, key)

    def delete(self, key: str) -> None:
        if key in self._toc:
            self.lock()
            self._toc.pop(key, None)
            self._dirty = True

    def commit(self) -> bool:
        """Publish the writes since the lock was taken (TOC + trailer) and
        release the lock.  Nothing is published (False; the entries stay
        usable by this process) when the trace changed since this process
        saw it, or when nothing says which trace the entries belong to."""
        if not self._locked:
            return False
        try:
            if not self._dirty:
                return True
            if self.path is None:           # a private store: nothing to publish
                self._dirty, self._bound = False, None
                return True
            trust = self._trust if self.trusted else None
            if self._bound is not None:
                identity, content = self._bound
                if (identity is None or content is None or self.trace_path is None
                        or identity != trace_identity(self.trace_path)):
                    return self._refuse()
                try:
                    same = self.get_raw(K_CHUNKS) == content.chunks
                except SidecarError:
                    same = False
                if not same:
                    self.put_raw(K_CHUNKS, content.chunks)
                trust = {"id": list(identity), "racy": is_racy(identity), "tag": content.tag,
                         "stop": content.stop}
            if trust is None:
                return self._refuse()
            toc = msgpack.packb({"v": VERSION, "trust": trust,
                                 "entries": {k: list(v) for k, v in self._toc.items()}},
                                use_bin_type=True)
            trailer = TRAILER.pack(TRAILER_MARKER, self._end, len(toc), zlib.crc32(toc))
            self._write(toc + trailer, self._end)
            try:
                self._st.truncate(self._end + len(toc) + len(trailer))
            except OSError:
                pass
            self._trust = trust
            self._dirty, self._bound = False, None
            self.trusted = True
            return True
        finally:
            if self._locked:
                self._release()

    def _refuse(self) -> bool:
        """Publish nothing.  The entries written stay readable by this
        process; on disk the old TOC may be overwritten, which the next
        opener sees as a sidecar to rebuild."""
        self._dirty, self._bound = False, None
        self.trusted = False
        return False

    def abort(self) -> None:
        """Forget the writes since the lock was taken: the file gets its last
        committed TOC back (best effort) and the lock is released."""
        if not self._locked:
            return
        try:
            if self._saved is not None:
                end, tail = self._saved
                try:
                    self._st.pwrite(tail, end)
                    self._st.truncate(end + len(tail))
                except OSError:
                    pass
        finally:
            self._dirty, self._bound = False, None
            self._release()
            try:
                self._load()
            except OSError:
                pass
            if self._trust is None:
                self.trusted = False

    def _release(self) -> None:
        self._locked = False
        self._saved = None
        try:
            self._st.unlock()
        except OSError:
            pass

    def close(self) -> None:
        if self._s is None:
            return
        try:
            try:
                self.commit()
            except SidecarError:
                pass
        finally:
            self._s.close()
            self._s = None

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Stream:
    """One entry written piecewise, with its whole and per-block CRCs kept
    as it goes."""

    def __init__(self, sc: Sidecar, key: str) -> None:
        self._sc = sc
        self._key = key
        self._start = sc._end
        self._pos = 0
        self._crc = 0
        self._sums = array("I")
        self._block = 0         # running CRC of the current, unfinished block

    def write(self, data: bytes | bytearray | memoryview) -> int:
        off = self._pos
        self._sc._write(data, self._start + off)
        view = memoryview(data).cast("B")
        self._crc = zlib.crc32(view, self._crc)
        pos = off
        while len(view):
            room = BLOCK - pos % BLOCK
            part = view[:room]
            self._block = zlib.crc32(part, self._block)
            pos += len(part)
            view = view[len(part):]
            if pos % BLOCK == 0:
                self._sums.append(self._block)
                self._block = 0
        self._pos = pos
        return off

    def __enter__(self) -> _Stream:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None:
            return
        sc = self._sc
        end = self._start + self._pos
        sums_off = sums_crc = 0
        if self._pos > BLOCK:
            if self._pos % BLOCK:
                self._sums.append(self._block)
            raw = self._sums.tobytes()
            sc._write(raw, end)
            sums_off, sums_crc = end, zlib.crc32(raw)
            end += len(raw)
        sc._toc[self._key] = _Entry(self._start, self._pos, self._crc, sums_off, sums_crc)
        sc._sums.pop(self._key, None)
        sc._end = end
        sc._dirty = True


# --- file helpers -------------------------------------------------------------------

def _plain(v: Any) -> Any:
    """Tuples (msgpack, use_list=False) and lists compare alike."""
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _read_toc(store: _FileStore | _MemStore) -> tuple[dict[str, _Entry], dict[str, Any] | None, int] | None:
    """(entries, trust, data end) from a sidecar store, or None when it is
    not a complete sidecar of this version."""
    try:
        size = store.size()
        if size < HEADER.size + TRAILER.size:
            return None
        magic, version, _ = HEADER.unpack(store.pread(HEADER.size, 0))
        if magic != MAGIC or version != VERSION:
            return None
        marker, toc_off, toc_len, crc = TRAILER.unpack(store.pread(TRAILER.size, size - TRAILER.size))
        if marker != TRAILER_MARKER or toc_len > MAX_TOC_BYTES \
                or toc_off < HEADER.size or toc_off + toc_len + TRAILER.size != size:
            return None
        raw = store.pread(toc_len, toc_off)
        if len(raw) != toc_len or zlib.crc32(raw) != crc:
            return None
        toc = msgpack.unpackb(raw, use_list=False)
        if not isinstance(toc, dict) or toc.get("v") != VERSION:
            return None
        entries: dict[str, _Entry] = {}
        for key, loc in toc.get("entries", {}).items():
            e = _Entry(*loc)
            if not (isinstance(key, str) and all(type(x) is int for x in e)
                    and HEADER.size <= e.offset and e.offset + e.length <= toc_off and e.length >= 0
                    and (e.sums_offset == 0 or HEADER.size <= e.sums_offset
                         and e.sums_offset + 4 * -(-e.length // BLOCK) <= toc_off)):
                return None
            entries[key] = e
        trust = toc.get("trust")
        if trust is not None:
            ident = trust.get("id") if isinstance(trust, dict) else None
            if not (isinstance(ident, (list, tuple)) and len(ident) == len(TraceIdentity._fields)
                    and all(type(x) is int for x in ident) and type(trust.get("racy")) is bool
                    and type(trust.get("tag")) is int and K_CHUNKS in entries):
                return None
            trust = dict(trust)
        return entries, trust, toc_off
    except (OSError, ValueError, TypeError, AttributeError, msgpack.UnpackException, struct.error):
        return None


def _same_file(f: IO[bytes], path: str) -> bool:
    try:
        a, b = os.fstat(f.fileno()), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _replace_with_empty(path: str) -> None:
    """A new, empty sidecar at ``path``; readers of the old file keep its
    inode.  Created with mode 0666 so the umask and the folder's default ACL
    apply, as for any new file (mkstemp would force 0600)."""
    d = os.path.dirname(os.path.abspath(path))
    for _ in range(100):
        tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{os.urandom(4).hex()}")
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, "no temporary name for the sidecar")
    try:
        os.write(fd, HEADER.pack(MAGIC, VERSION, 0))
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
