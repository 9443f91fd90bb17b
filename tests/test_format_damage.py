"""Damaged and hostile files: truncation at every byte, every single-bit flip,
absurd length fields, things that are not traces, a SIGKILLed writer.  The
reader must never raise (except NotATrace for non-traces), must yield exactly
the events before the damage, and must say where it stopped."""

from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import zlib

import msgpack
import pytest
from conftest import HEADER, REPO, make_events
from hypothesis import given
from hypothesis import strategies as st

from replay.reader import CHUNK_HEADER, FILE_HEADER, TRAILER, NotATrace, open_trace
from tracer import schema as S
from tracer import writer as W

N_EVENTS, CHUNK = 37, 8        # 5 chunks: 8, 8, 8, 8, 5


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A finished multi-chunk trace and its layout."""
    path = tmp_path_factory.mktemp("small") / "t.vtdt"
    events = make_events(N_EVENTS, seed=11)
    with W.TraceWriter(path, HEADER, chunk_events=CHUNK) as w:
        for ev in events:
            w.append(ev)
    data = path.read_bytes()
    meta_len = FILE_HEADER.unpack_from(data)[3]
    with open_trace(path) as t:
        chunks = t.chunks
    trailer_off = len(data) - TRAILER.size
    index_off = TRAILER.unpack_from(data, trailer_off)[2]
    return dict(path=path, data=data, events=events, chunks=chunks, data_start=FILE_HEADER.size + meta_len,
                index_off=index_off, trailer_off=trailer_off)


def _drain(t):
    """All events the trace yields (which also settles t.stop/t.count)."""
    return list(t.events())


def _flip(path, pos: int, bit: int) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)[0]
        f.seek(pos)
        f.write(bytes([b ^ (1 << bit)]))


def test_truncation_at_every_byte_offset(small, tmp_path):
    data, events, chunks = small["data"], small["events"], small["chunks"]
    starts = [0] + [c[0] for c in chunks] + [small["index_off"], small["trailer_off"]]
    cut_path = tmp_path / "cut.vtdt"
    shutil.copyfile(small["path"], cut_path)
    for cut in range(len(data), -1, -1):
        os.truncate(cut_path, cut)
        if cut < len(W.MAGIC):
            with pytest.raises(NotATrace):
                open_trace(cut_path)
            continue
        for verify in (True, False):
            with open_trace(cut_path, verify=verify) as t:
                got = _drain(t)
                if cut == len(data):
                    assert t.complete and got == events
                    continue
                offset = max(s for s in starts if s <= cut)
                good = [c for c in chunks if c[0] < offset]
                n = sum(c[2] for c in good)
                where = (cut, verify)
                assert got == events[:n], where
                assert t.count == n, where
                assert t.stop is not None and t.stop.kind == "truncated", where
                assert (t.stop.offset, t.stop.chunk_index, t.stop.last_good_seq) == (offset, len(good), n), where


def _check_flips(path, lo, hi, expect):
    for pos in range(lo, hi):
        for bit in range(8):
            _flip(path, pos, bit)
            try:
                for verify in (True, False):
                    with open_trace(path, verify=verify) as t:
                        got = _drain(t)
                        expect(t, got, (pos, bit, verify))
            finally:
                _flip(path, pos, bit)


def test_every_bit_flip_in_the_header_is_a_bad_header(small, tmp_path):
    path = tmp_path / "t.vtdt"
    shutil.copyfile(small["path"], path)

    def expect(t, got, where):
        assert got == [] and t.count == 0, where
        assert t.stop.kind == "bad-header" and t.stop.offset == 0, where

    _check_flips(path, len(W.MAGIC), small["data_start"], expect)


def test_every_bit_flip_in_a_chunk_is_corrupt_at_that_chunk(small, tmp_path):
    path = tmp_path / "t.vtdt"
    shutil.copyfile(small["path"], path)
    k = 2
    off = small["chunks"][k][0]
    end = small["chunks"][k + 1][0]
    before = sum(c[2] for c in small["chunks"][:k])

    def expect(t, got, where):
        assert got == small["events"][:before], where
        assert (t.stop.kind, t.stop.offset, t.stop.chunk_index, t.stop.last_good_seq) == \
            ("corrupt", off, k, before), where

    _check_flips(path, off, end, expect)


@pytest.mark.parametrize("unit", ["index", "trailer"])
def test_every_bit_flip_in_index_or_trailer_is_corrupt_there_with_all_events(small, tmp_path, unit):
    path = tmp_path / "t.vtdt"
    shutil.copyfile(small["path"], path)
    lo, hi = ((small["index_off"], small["trailer_off"]) if unit == "index"
              else (small["trailer_off"], len(small["data"])))

    def expect(t, got, where):
        assert got == small["events"], where
        assert (t.stop.kind, t.stop.offset, t.stop.chunk_index) == ("corrupt", lo, len(small["chunks"])), where

    _check_flips(path, lo, hi, expect)


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 10**6))
def test_random_damage_never_raises_and_yields_a_prefix(small, tmp_path_factory, edits, cut):
    data = bytearray(small["data"])
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = data[:max(1, cut % (len(data) + 1))]
    path = tmp_path_factory.mktemp("rnd") / "t.vtdt"
    path.write_bytes(bytes(data))
    try:
        t = open_trace(path)
    except NotATrace:
        assert data[:8] != W.MAGIC or len(data) < 8
        return
    with t:
        got = _drain(t)
        assert got == small["events"][:len(got)]
        assert t.count == len(got)
        assert t.complete == (bytes(data) == small["data"])


# --- hand-crafted hostile files (valid CRCs, absurd contents) -----------------------------

def _rewrite_chunk_header(data: bytearray, off: int, **fields) -> None:
    names = ("sync", "tag", "payload_len", "count", "first_seq", "payload_crc", "head_crc")
    vals = dict(zip(names, CHUNK_HEADER.unpack_from(data, off)))
    vals.update(fields)
    raw = CHUNK_HEADER.pack(*(vals[n] for n in names))
    raw = raw[:-4] + zlib.crc32(raw[:-4]).to_bytes(4, "little")
    data[off:off + CHUNK_HEADER.size] = raw


def _hostile(small, what: str) -> bytes:
    data = bytearray(small["data"])
    c1 = small["chunks"][1][0]
    if what == "chunk-len-4g":
        _rewrite_chunk_header(data, c1, payload_len=0xFFFFFFFF)
    elif what == "chunk-count-4g":
        _rewrite_chunk_header(data, c1, count=0xFFFFFFFF)
    elif what == "index-len-4g":
        _rewrite_chunk_header(data, small["index_off"], payload_len=0xFFFFFFF0, count=0xFFFFFFF0 // 24)
    elif what == "meta-len-4g":
        fixed = bytearray(data[:FILE_HEADER.size])
        struct.pack_into("<I", fixed, 12, 0xFFFFFFFF)
        struct.pack_into("<I", fixed, 20, zlib.crc32(fixed[:20]))
        data[:FILE_HEADER.size] = fixed
    elif what == "seq-gap":
        _rewrite_chunk_header(data, c1, first_seq=100)
    elif what == "garbage-payload":
        # CRC-valid bytes that are not msgpack events (0xc1 is never valid msgpack).
        start, plen = c1 + CHUNK_HEADER.size, CHUNK_HEADER.unpack_from(data, c1)[2]
        data[start:start + plen] = b"\xc1" * plen
        _rewrite_chunk_header(data, c1, payload_crc=zlib.crc32(b"\xc1" * plen))
    elif what == "deep-nesting":
        start, plen = c1 + CHUNK_HEADER.size, CHUNK_HEADER.unpack_from(data, c1)[2]
        payload = (b"\x91" * (plen - 1) + b"\x00")
        data[start:start + plen] = payload
        _rewrite_chunk_header(data, c1, payload_crc=zlib.crc32(payload))
    elif what == "trailing-garbage":
        data += b"\0" * 100
    else:
        raise AssertionError(what)
    return bytes(data)


@pytest.mark.parametrize("what, kind, offset_key, events", [
    ("chunk-len-4g", "corrupt", "c1", 8),
    ("chunk-count-4g", "corrupt", "c1", 8),
    ("seq-gap", "corrupt", "c1", 8),
    ("garbage-payload", "corrupt", "c1", 8),
    ("deep-nesting", "corrupt", "c1", 8),
    ("index-len-4g", "truncated", "index", N_EVENTS),
    ("meta-len-4g", "bad-header", "zero", 0),
    ("trailing-garbage", "corrupt", "eof", N_EVENTS),
])
def test_hostile_lengths_and_contents(small, tmp_path, what, kind, offset_key, events):
    path = tmp_path / "h.vtdt"
    path.write_bytes(_hostile(small, what))
    offset = {"c1": small["chunks"][1][0], "index": small["index_off"], "zero": 0,
              "eof": len(small["data"])}[offset_key]
    for verify in (True, False):
        with open_trace(path, verify=verify) as t:
            assert _drain(t) == small["events"][:events]
            assert (t.stop.kind, t.stop.offset) == (kind, offset), (verify, t.stop)


def test_foreign_chunk_spliced_from_another_trace(small, tmp_path, write_trace):
    other = write_trace(small["events"], name="other.vtdt", chunk_events=CHUNK,
                        header=dict(HEADER, scenario={"name": "another"}))
    with open_trace(other) as t:
        o1, o2 = t.chunks[1][0], t.chunks[2][0]
    data = small["data"]
    c1, c2 = small["chunks"][1][0], small["chunks"][2][0]
    path = tmp_path / "spliced.vtdt"
    path.write_bytes(data[:c1] + other.read_bytes()[o1:o2] + data[c2:])
    with open_trace(path) as t:
        assert _drain(t) == small["events"][:8]
        assert (t.stop.kind, t.stop.offset, t.stop.chunk_index) == ("foreign-chunk", c1, 1)


def test_unsupported_major_version_is_not_a_trace(small, tmp_path):
    fixed = bytearray(small["data"][:FILE_HEADER.size])
    struct.pack_into("<H", fixed, 8, 99)
    struct.pack_into("<I", fixed, 20, zlib.crc32(fixed[:20]))
    path = tmp_path / "v99.vtdt"
    path.write_bytes(bytes(fixed) + small["data"][FILE_HEADER.size:])
    with pytest.raises(NotATrace, match=f"format version 99.{S.FORMAT_MINOR} is not supported"):
        open_trace(path)


# --- the command line on non-traces and hostile files: exit code, one line, bounded memory ---

MEMORY_LIMIT = 768 << 20     # far below the 4 GiB the hostile headers claim


def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _drop_dac_override():
    """Root reads chmod-000 files through CAP_DAC_OVERRIDE; drop it (and
    CAP_DAC_READ_SEARCH) from the bounding set so the exec'd CLI cannot."""
    _limited()
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):                      # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, cap, 0, 0, 0) != 0:   # PR_CAPBSET_DROP
            os._exit(97)


def _cli(args, preexec=_limited):
    return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, preexec_fn=preexec)


def _one_line_error(proc, path, code):
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"vtdtrace: {path}: "), proc.stderr


@pytest.mark.parametrize("case, message", [
    ("empty", "empty file"),
    ("text", "wrong magic"),
    ("short", "too short"),
    ("directory", "is a directory"),
    ("missing", "no such file"),
])
@pytest.mark.parametrize("command", ["info", "log"])
def test_not_a_trace_is_exit_2_with_one_line(tmp_path, case, message, command):
    path = tmp_path / f"{case}.vtdt"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("name = 'a scenario, not a trace'\n" * 50)
    elif case == "short":
        path.write_bytes(W.MAGIC[:5])
    elif case == "directory":
        path.mkdir()
    proc = _cli([command, path])
    _one_line_error(proc, path, 2)
    assert message in proc.stderr and proc.stdout == ""


def test_unreadable_file_is_exit_2(tmp_path, small):
    path = tmp_path / "secret.vtdt"
    path.write_bytes(small["data"])
    path.chmod(0)
    preexec = _limited
    if os.geteuid() == 0:
        preexec = _drop_dac_override    # else root would simply read it
    proc = _cli(["info", path], preexec=preexec)
    if proc.returncode == 97:
        pytest.skip("running as root without CAP_SETPCAP: cannot make a file unreadable to root")
    _one_line_error(proc, path, 2)
    assert "permission denied" in proc.stderr


@pytest.mark.parametrize("what", ["chunk-len-4g", "chunk-count-4g", "index-len-4g", "meta-len-4g"])
@pytest.mark.parametrize("command", ["info", "log"])
def test_lengths_claiming_4gib_are_exit_3_in_bounded_memory(small, tmp_path, what, command):
    path = tmp_path / f"{what}.vtdt"
    path.write_bytes(_hostile(small, what))
    proc = _cli([command, path])
    _one_line_error(proc, path, 3)


# --- a recording killed with SIGKILL ------------------------------------------------------

_KILLED_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
    from conftest import HEADER, make_events
    from tracer.writer import TraceWriter
    w = TraceWriter(sys.argv[1], HEADER, chunk_events=8)
    for ev in make_events(8 * 6 + 3, seed=5):   # six chunks flushed, three events buffered
        w.append(ev)
    print("ready", flush=True)
    sys.stdin.read()                             # wait to be killed
""")


def test_sigkilled_writer_leaves_its_flushed_prefix(tmp_path):
    path = tmp_path / "killed.vtdt"
    child = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER.format(repo=str(REPO)), str(path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    events = make_events(8 * 6 + 3, seed=5)[:48]
    with open_trace(path) as t:
        assert _drain(t) == events
        assert (t.stop.kind, t.stop.offset, t.stop.last_good_seq) == ("truncated", path.stat().st_size, 48)
    proc = _cli(["log", path, "--jsonl"])
    assert proc.returncode == 3 and len(proc.stdout.splitlines()) == 48
    assert proc.stderr.count("\n") == 1 and "truncated" in proc.stderr


def test_unknown_msgpack_ext_types_are_corrupt(small, tmp_path):
    """The format has no ext types; a CRC-valid chunk holding one is refused."""
    data = bytearray(small["data"])
    c1, c2 = small["chunks"][1][0], small["chunks"][2][0]
    events = [[0, 9 + i, 0, 0, 0, "", msgpack.ExtType(5, b"x")] for i in range(8)]
    payload = b"".join(msgpack.packb(e) for e in events)
    tag = CHUNK_HEADER.unpack_from(data, c1)[1]
    path = tmp_path / "ext.vtdt"
    path.write_bytes(bytes(data[:c1]) + W.chunk_header(W.SYNC_EVENTS, tag, payload, 8, 9) + payload
                     + bytes(data[c2:]))
    with open_trace(path) as t:
        assert _drain(t) == small["events"][:8]
        assert (t.stop.kind, t.stop.offset) == ("corrupt", c1)
