"""The sidecar: a small keyed store of data derived from one trace
(checkpoints, indexes; later findings and bookmarks), kept beside it as
``TRACE.vtdt-cache`` so the next open is instant (docs/CLI.md#sidecar).

Layout (all integers little-endian)::

    header   8-byte magic, u32 format version, u32 reserved
    entry*   raw bytes, each written once and never moved
    toc      msgpack {"v": version, "fp": fingerprint bytes, "entries": {key: [offset, length]}}
    trailer  8-byte marker, u64 toc offset, u32 toc length, u32 crc32(toc)

Only the trailer at EOF is trusted: a file without a valid trailer (a writer
died, the file was cut) or with another trace's fingerprint is stale and is
rebuilt from scratch.  Values are msgpack (never pickle: a sidecar may come
with an untrusted trace).  Entries are read lazily with ``pread`` -- opening
costs one TOC read, and a large entry (the checkpoints) can be read in slices.

Writing appends new entries where the old TOC was and writes a new TOC and
trailer on ``commit()``; bytes of existing entries never move, so a reader that
opened the file earlier keeps reading valid data.  Writers serialise on
``flock``.  A stale file is replaced with ``os.replace``, never truncated in
place, for the same reason.

Where it lives: beside the trace when that folder is writable (or a fresh
sidecar already sits there), else in the user's cache directory
(``$XDG_CACHE_HOME/vtdtrace`` or ``~/.cache/vtdtrace``), else in an anonymous
temporary file that lasts as long as the process.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import tempfile
import zlib

import msgpack

MAGIC = b"VTDTSIDE"
VERSION = 1
HEADER = struct.Struct("<8sII")
TRAILER = struct.Struct("<8sQII")
TRAILER_MARKER = b"VTDTSTOC"
MAX_TOC_BYTES = 64 << 20


class SidecarError(Exception):
    pass


def fingerprint_bytes(fingerprint) -> bytes:
    """Fingerprints are opaque (the reader defines them); compare them as
    their msgpack bytes so tuples and lists round-trip equal."""
    return msgpack.packb(fingerprint, use_bin_type=True)


def beside_path(trace_path) -> str:
    p = os.fspath(trace_path)
    return p + "-cache" if p.endswith(".vtdt") else p + ".vtdt-cache"


def user_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vtdtrace")


def user_cache_path(trace_path) -> str:
    real = os.path.realpath(os.fspath(trace_path))
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(user_cache_dir(), f"{digest}-{os.path.basename(real)}.vtdt-cache")


def _dir_writable(path: str) -> bool:
    return os.access(os.path.dirname(os.path.abspath(path)) or ".", os.W_OK | os.X_OK)


class Sidecar:
    """A keyed store bound to one trace fingerprint.  Use ``Sidecar.open``."""

    def __init__(self, f, path: str | None, fingerprint, *, writable: bool, location: str) -> None:
        self._f = f
        self.path = path
        self.location = location          # "beside" | "user-cache" | "temporary"
        self.writable = writable
        self._fp = fingerprint_bytes(fingerprint)
        self._toc: dict[str, tuple[int, int]] = {}
        self._end = HEADER.size           # where the next entry goes (= current TOC offset)
        self._locked = False
        self._dirty = False
        self.fresh = self._load()         # False: nothing usable was there (new or rebuilt)

    # --- opening -------------------------------------------------------------

    @classmethod
    def open(cls, trace_path, fingerprint) -> "Sidecar":
        beside = beside_path(trace_path)
        fpb = fingerprint_bytes(fingerprint)
        if _dir_writable(beside):
            sc = cls._open_path(beside, fingerprint, fpb, "beside")
            if sc is not None:
                return sc
        elif _valid_file(beside, fpb):
            # Someone built it before the folder went read-only: use as is.
            try:
                return cls(open(beside, "rb"), beside, fingerprint, writable=False, location="beside")
            except OSError:
                pass
        user = user_cache_path(trace_path)
        try:
            os.makedirs(os.path.dirname(user), exist_ok=True)
        except OSError:
            pass
        else:
            sc = cls._open_path(user, fingerprint, fpb, "user-cache")
            if sc is not None:
                return sc
        return cls.temporary(fingerprint)

    @classmethod
    def temporary(cls, fingerprint) -> "Sidecar":
        f = tempfile.TemporaryFile()
        f.write(HEADER.pack(MAGIC, VERSION, 0))
        return cls(f, None, fingerprint, writable=True, location="temporary")

    @classmethod
    def _open_path(cls, path, fingerprint, fpb, location):
        """Open (creating or replacing a stale one) under the file lock, so
        that two processes opening at once end up on the same file and a
        writer in the middle of a build is waited for, not replaced."""
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
                        os.pwrite(f.fileno(), HEADER.pack(MAGIC, VERSION, 0), 0)
                    elif size != HEADER.size and _read_toc(f, fpb) is None:
                        _replace_with_empty(path)   # stale: another trace, or a writer died
                        f.close()
                        continue
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
                    return cls(f, path, fingerprint, writable=True, location=location)
                except BaseException:
                    f.close()
                    raise
            return None
        except OSError:
            return None

    # --- reading -------------------------------------------------------------

    def _read_trailer(self):
        return _read_toc(self._f, self._fp)

    def _load(self) -> bool:
        got = self._read_trailer()
        if got is None:
            self._toc, self._end = {}, HEADER.size
            return False
        self._toc, self._end = got
        return bool(self._toc)

    def __contains__(self, key: str) -> bool:
        return key in self._toc

    def keys(self):
        return list(self._toc)

    def size(self, key: str) -> int:
        return self._toc[key][1]

    def get_raw(self, key: str) -> bytes | None:
        loc = self._toc.get(key)
        if loc is None:
            return None
        return self._pread(loc[0], loc[1])

    def read(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` inside entry ``key``."""
        base, size = self._toc[key]
        if offset < 0 or length < 0 or offset + length > size:
            raise SidecarError(f"read of {key}[{offset}:{offset + length}] outside its {size} bytes")
        return self._pread(base + offset, length)

    def get(self, key: str, default=None):
        data = self.get_raw(key)
        if data is None:
            return default
        return msgpack.unpackb(data, use_list=False, strict_map_key=False)

    def _pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._f.fileno(), length, offset)
        if len(data) != length:
            raise SidecarError("sidecar shorter than its table of contents says")
        return data

    # --- writing -------------------------------------------------------------

    def _begin_write(self) -> None:
        if not self.writable:
            raise SidecarError("sidecar is read-only")
        if self._locked:
            return
        fcntl.flock(self._f.fileno(), fcntl.LOCK_EX)
        self._locked = True
        # Another process may have committed since we read the TOC.
        got = self._read_trailer()
        if got is not None:
            self._toc, self._end = got

    def put_raw(self, key: str, data) -> None:
        self._begin_write()
        os.pwrite(self._f.fileno(), data, self._end)
        self._toc[key] = (self._end, len(data))
        self._end += len(data)
        self._dirty = True

    def put(self, key: str, value) -> None:
        self.put_raw(key, msgpack.packb(value, use_bin_type=True))

    def stream(self, key: str) -> "_Stream":
        """Write one large entry piecewise: ``with sc.stream(k) as s:
        off = s.write(part)`` (offsets are relative to the entry)."""
        self._begin_write()
        return _Stream(self, key)

    def delete(self, key: str) -> None:
        if key in self._toc:
            self._begin_write()
            del self._toc[key]
            self._dirty = True

    def commit(self) -> None:
        """Make the writes since the last commit durable (TOC + trailer)."""
        if not self._locked:
            return
        try:
            if self._dirty:
                toc = msgpack.packb({"v": VERSION, "fp": self._fp,
                                     "entries": {k: list(v) for k, v in self._toc.items()}},
                                    use_bin_type=True)
                trailer = TRAILER.pack(TRAILER_MARKER, self._end, len(toc), zlib.crc32(toc))
                fd = self._f.fileno()
                os.pwrite(fd, toc + trailer, self._end)
                os.ftruncate(fd, self._end + len(toc) + len(trailer))
                self._dirty = False
        finally:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_UN)
            self._locked = False

    def close(self) -> None:
        if self._f is None:
            return
        try:
            self.commit()
        finally:
            self._f.close()
            self._f = None

    def __enter__(self) -> "Sidecar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Stream:
    def __init__(self, sc: Sidecar, key: str) -> None:
        self._sc = sc
        self._key = key
        self._start = sc._end
        self._pos = 0

    def write(self, data) -> int:
        off = self._pos
        os.pwrite(self._sc._f.fileno(), data, self._start + off)
        self._pos += len(data)
        return off

    def __enter__(self) -> "_Stream":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            sc = self._sc
            sc._toc[self._key] = (self._start, self._pos)
            sc._end = self._start + self._pos
            sc._dirty = True


# --- file helpers -------------------------------------------------------------------

def _read_toc(f, fpb: bytes):
    """(toc, data end) from a sidecar file object, or None when it is not a
    complete sidecar of this version for this fingerprint."""
    try:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        if size < HEADER.size + TRAILER.size:
            return None
        magic, version, _ = HEADER.unpack(os.pread(fd, HEADER.size, 0))
        if magic != MAGIC or version != VERSION:
            return None
        marker, toc_off, toc_len, crc = TRAILER.unpack(os.pread(fd, TRAILER.size, size - TRAILER.size))
        if marker != TRAILER_MARKER or toc_len > MAX_TOC_BYTES \
                or toc_off < HEADER.size or toc_off + toc_len + TRAILER.size != size:
            return None
        raw = os.pread(fd, toc_len, toc_off)
        if len(raw) != toc_len or zlib.crc32(raw) != crc:
            return None
        toc = msgpack.unpackb(raw, use_list=False)
        if not isinstance(toc, dict) or toc.get("v") != VERSION or toc.get("fp") != fpb:
            return None
        entries = {}
        for key, loc in toc.get("entries", {}).items():
            off, length = loc
            if not (isinstance(key, str) and HEADER.size <= off and off + length <= toc_off):
                return None
            entries[key] = (off, length)
        return entries, toc_off
    except (OSError, ValueError, TypeError, msgpack.UnpackException, struct.error):
        return None


def _valid_file(path: str, fpb: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return _read_toc(f, fpb) is not None
    except OSError:
        return False


def _same_file(f, path: str) -> bool:
    try:
        a, b = os.fstat(f.fileno()), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _replace_with_empty(path: str) -> None:
    """A new, empty sidecar at ``path``; readers of the old file keep its inode."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".vtdt-cache.", dir=d)
    try:
        os.write(fd, HEADER.pack(MAGIC, VERSION, 0))
        os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
