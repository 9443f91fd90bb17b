"""The trace writer: a Sink that frames events into CRC-checked chunks.

Container layout (docs/FORMAT.md has the byte tables; replay/reader.py is the
other half and repeats these constants because replay may not import this
module -- tests/test_format_roundtrip.py checks that both agree):

    file header   magic, format version, meta length + CRC, header CRC, meta
    chunk*        32-byte chunk header (own CRC) + payload of msgpack events
    index chunk   the same 32-byte header + one 24-byte entry per chunk
    trailer       32 bytes at EOF pointing at the index

Why this shape:
* Events are packed into one buffer with one reused Packer and framed per
  chunk of ~1000 events: a CRC per event would cost +36 % bytes and make
  reading 4x slower (measured), a CRC per chunk costs nothing.
* Every chunk is flushed as soon as it is framed, so a SIGKILLed recording
  leaves a readable prefix; the index + trailer only make opening O(1).
* Nothing varies between runs: the meta map is written with sorted keys, the
  per-file chunk tag is the header CRC (not a random salt), and a creation
  time appears only when SOURCE_DATE_EPOCH asks for one.
"""

from __future__ import annotations

import os
import struct
import zlib
from types import TracebackType
from typing import Any, NoReturn

import msgpack

from .schema import FORMAT_MAJOR, FORMAT_MINOR, FORMAT_NAME, schema_dict

MAGIC = b"\x89VTDT\r\n\x1a"        # PNG-style: a high byte and CR/LF catch text-mode damage
FILE_HEADER = struct.Struct("<8sHHIII")   # magic, major, minor, meta_len, meta_crc, head_crc
CHUNK_HEADER = struct.Struct("<4sIIIQII")  # sync, tag, payload_len, count, first_seq, payload_crc, head_crc
INDEX_ENTRY = struct.Struct("<QQII")      # offset, first_seq, count, payload_crc
TRAILER = struct.Struct("<4sIQQII")       # marker, tag, index_offset, events, index_head_crc, crc
SYNC_EVENTS = b"VTDC"
SYNC_INDEX = b"VTDI"
TRAILER_MARKER = b"VTDE"

# Hard limits the reader enforces before allocating anything.
MAX_META_BYTES = 16 << 20
MAX_CHUNK_BYTES = 16 << 20
DEFAULT_CHUNK_EVENTS = 1024
DEFAULT_MAX_CHUNK_BYTES = 1 << 20


def _canonical(obj: Any, where: str = "header") -> Any:
    """A copy of obj with every map's keys sorted, so the header bytes do not
    depend on the order a caller happened to build its dicts in."""
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str):
                raise TypeError(f"{where}: map keys must be strings, got {k!r}")
        return {k: _canonical(obj[k], f"{where}.{k}") for k in sorted(obj)}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v, where) for v in obj]
    if isinstance(obj, (set, frozenset)):
        # Iteration order of a set depends on PYTHONHASHSEED: refuse it.
        raise TypeError(f"{where}: sets have no stable order; pass a sorted list")
    return obj


def encode_header(meta: dict[str, Any]) -> bytes:
    """The complete file header for a meta map, exactly as written (no fields added)."""
    body: bytes = msgpack.packb(_canonical(meta), use_bin_type=True)
    if len(body) > MAX_META_BYTES:
        raise ValueError(f"trace header of {len(body)} bytes exceeds {MAX_META_BYTES}")
    fixed = FILE_HEADER.pack(MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(body), zlib.crc32(body), 0)
    head_crc = zlib.crc32(fixed[:-4])
    return fixed[:-4] + head_crc.to_bytes(4, "little") + body


def file_tag(header_bytes: bytes) -> int:
    """The per-file chunk tag: the header CRC, deterministic yet different for
    different recordings, so a chunk spliced in from another trace is caught."""
    tag: int = FILE_HEADER.unpack_from(header_bytes)[5]
    return tag


def chunk_header(sync: bytes, tag: int, payload: bytes | bytearray, count: int, first_seq: int) -> bytes:
    fixed = CHUNK_HEADER.pack(sync, tag, len(payload), count, first_seq, zlib.crc32(payload), 0)
    return fixed[:-4] + zlib.crc32(fixed[:-4]).to_bytes(4, "little")


def build_meta(header: dict[str, Any]) -> dict[str, Any]:
    """The caller's header plus what the writer owns: format, schema, and
    `created` (only when SOURCE_DATE_EPOCH is set, as reproducible builds do)."""
    meta = dict(header)
    meta["format"] = {"name": FORMAT_NAME, "major": FORMAT_MAJOR, "minor": FORMAT_MINOR}
    meta["schema"] = schema_dict()
    sde = os.environ.get("SOURCE_DATE_EPOCH")
    if sde is not None:
        if not sde.isdigit():
            raise ValueError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {sde!r}")
        meta["created"] = int(sde)
    else:
        meta.pop("created", None)
    return meta


def _refuse_closed(event: object) -> NoReturn:
    raise ValueError("write to a closed TraceWriter")


def _refuse_failed(event: object) -> NoReturn:
    raise OSError("the TraceWriter failed on an earlier write; the trace ends before it")


class TraceWriter:
    """Sink writing a framed trace.  Events must arrive with seq 1, 2, 3 ...

    ``close()`` (or leaving the ``with`` block normally) writes the index and
    trailer and fsyncs.  Leaving the block with an exception calls ``abort()``:
    buffered events are framed and flushed but no index/trailer is written, so
    the reader reports the trace as truncated -- the recording did not finish.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any], *, force: bool = False,
                 chunk_events: int = DEFAULT_CHUNK_EVENTS,
                 max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES) -> None:
        if not 1 <= chunk_events <= 1 << 20:
            raise ValueError("chunk_events must be in 1..1048576")
        if not 64 <= max_chunk_bytes <= MAX_CHUNK_BYTES // 2:
            # Half the reader's limit: one event may overshoot max_chunk_bytes.
            raise ValueError(f"max_chunk_bytes must be in 64..{MAX_CHUNK_BYTES // 2}")
        head = encode_header(build_meta(header))
        self.path = path
        self._tag = file_tag(head)
        self._chunk_events = chunk_events
        self._max_bytes = max_chunk_bytes
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._buf = bytearray()
        self._n = 0                 # events in the open chunk
        self._next_seq = 1
        self._index = bytearray()   # INDEX_ENTRY per written chunk
        self._chunks = 0
        self._closed = False
        self._failed = False
        self._file = open(path, "wb" if force else "xb")
        try:
            self._file.write(head)
            self._file.flush()
        except BaseException as exc:
            # Not even the header made it: nothing readable to keep.
            self._failed = True
            self.discard()
            if isinstance(exc, OSError):
                # A marker for vtdtrace/output.py's message: no partial file stays.
                exc.vtdtrace_removed = True  # type: ignore[attr-defined]
            raise
        self._offset = len(head)

    # -- the Sink protocol: this is the recorder's hot path ---------------------
    def append(self, event: list[Any]) -> None:
        if event[1] != self._next_seq:
            raise ValueError(f"event seq {event[1]!r} out of order (expected {self._next_seq})")
        packed = self._pack(event)
        buf = self._buf
        buf += packed
        self._next_seq += 1
        self._n += 1
        if self._n >= self._chunk_events or len(buf) >= self._max_bytes:
            self._flush_chunk(len(packed))

    # -- framing ------------------------------------------------------------------
    def _flush_chunk(self, last_len: int = 0) -> None:
        if len(self._buf) > MAX_CHUNK_BYTES:
            # Only the event just appended can push a chunk over the reader's
            # limit (the previous ones were under max_chunk_bytes <= half of
            # it): keep the others, refuse that one.
            del self._buf[-last_len:]
            self._n -= 1
            self._next_seq -= 1
            self._write_chunk()
            raise ValueError(f"event seq {self._next_seq} packs to {last_len} bytes, "
                             f"more than a chunk may hold ({MAX_CHUNK_BYTES})")
        self._write_chunk()

    def _write_chunk(self) -> None:
        if not self._n:
            return
        payload = self._buf
        first = self._next_seq - self._n
        head = chunk_header(SYNC_EVENTS, self._tag, payload, self._n, first)
        try:
            self._file.write(head)
            self._file.write(payload)
            self._file.flush()
        except BaseException:
            # A partial chunk may be on disk; the reader will stop before it.
            self._failed = True
            self._pack = _refuse_failed
            raise
        self._index += INDEX_ENTRY.pack(self._offset, first, self._n, zlib.crc32(payload))
        self._offset += len(head) + len(payload)
        self._chunks += 1
        self._buf = bytearray()
        self._n = 0

    @property
    def count(self) -> int:
        """Events accepted so far (written or buffered)."""
        return self._next_seq - 1

    @property
    def chunks(self) -> int:
        """Chunks written so far."""
        return self._chunks

    def close(self) -> None:
        """Frame what is buffered, write index + trailer, fsync, close."""
        if self._closed:
            return
        if self._failed:
            self._finish()
            return
        try:
            self._write_chunk()
            index_offset = self._offset
            head = chunk_header(SYNC_INDEX, self._tag, self._index, self._chunks, 0)
            trailer = TRAILER.pack(TRAILER_MARKER, self._tag, index_offset, self.count,
                                   int.from_bytes(head[-4:], "little"), 0)
            trailer = trailer[:-4] + zlib.crc32(trailer[:-4]).to_bytes(4, "little")
            self._file.write(head)
            self._file.write(self._index)
            self._file.write(trailer)
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._finish()

    def abort(self) -> None:
        """Flush buffered events as a last chunk but leave the trace unfinished."""
        if self._closed:
            return
        if self._failed:
            self._finish()
            return
        try:
            self._write_chunk()
            self._file.flush()
            os.fsync(self._file.fileno())
        finally:
            self._finish()

    def discard(self) -> None:
        """Close and delete the file: for a caller whose write failed (disk
        full, file size limit, I/O error), so that the partial trace does
        not stay behind looking like a killed recording."""
        self._closed = True
        self._pack = _refuse_closed if not self._failed else _refuse_failed
        try:
            self._file.close()
        except OSError:
            pass                 # the write that failed may fail again on close
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _finish(self) -> None:
        self._closed = True
        if not self._failed:
            self._pack = _refuse_closed  # append() after close raises, at no cost before
        self._file.close()

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
