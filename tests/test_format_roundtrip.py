"""The trace container round-trips: bytes -> events identical, under msgpack's
C extension and its pure-Python fallback; reproducible bytes; writer rules."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import msgpack
import pytest
from conftest import HEADER, REPO, make_events
from hypothesis import given
from hypothesis import strategies as st

from replay import reader as R
from replay.reader import open_trace, trace_fingerprint
from tracer import schema as S
from tracer import writer as W
from tracer.writer import TraceWriter


def test_reader_and_writer_agree_on_the_layout():
    # replay may not import tracer.writer (README.md#layout), so the layout is
    # written down twice; this is what keeps the copies equal.
    for name in ("MAGIC", "SYNC_EVENTS", "SYNC_INDEX", "TRAILER_MARKER", "MAX_META_BYTES", "MAX_CHUNK_BYTES"):
        assert getattr(R, name) == getattr(W, name), name
    for name in ("FILE_HEADER", "CHUNK_HEADER", "INDEX_ENTRY", "TRAILER"):
        assert getattr(R, name).format == getattr(W, name).format, name
    assert (R.FILE_HEADER.size, R.CHUNK_HEADER.size, R.INDEX_ENTRY.size, R.TRAILER.size) == (24, 32, 24, 32)


@pytest.mark.parametrize("chunk_events", [1, 8, 1024])
def test_every_kind_round_trips(write_trace, chunk_events):
    events = make_events(3 * len(S.KINDS) + 5)
    assert {e[0] for e in events} == set(range(len(S.KINDS)))
    path = write_trace(events, chunk_events=chunk_events)
    for verify in (True, False):
        with open_trace(path, verify=verify) as t:
            assert t.complete and t.stop is None
            assert t.count == len(events)
            assert list(t.events()) == events
            assert [e for c in t.iter_chunks() for e in c] == events
            assert [t.event(n) for n in range(1, len(events) + 1)] == events
            assert [c[1:] for c in t.chunks] == [(s, min(chunk_events, len(events) - s + 1))
                                                 for s in range(1, len(events) + 1, chunk_events)]
            assert t.header["engine"] == HEADER["engine"]
            assert t.header["schema"] == S.schema_dict()
            assert t.header["format"] == {"name": "vtdtrace", "major": S.FORMAT_MAJOR, "minor": S.FORMAT_MINOR}
            assert "created" not in t.header
            assert t.schema.is_current and t.schema.kinds == S.KINDS


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def test_tuples_option_decodes_the_same_events_as_tuples(write_trace):
    events = make_events(2 * len(S.KINDS) + 3)
    with open_trace(write_trace(events), tuples=True) as t:
        got = list(t.events())
        assert got == [_tuples(e) for e in events]
        assert all(type(e) is tuple for e in got) and t.event(5) == _tuples(events[4])
        assert [e for c in t.iter_chunks() for e in c] == got


def test_event_slices_and_random_access(write_trace):
    events = make_events(100)
    with open_trace(write_trace(events, chunk_events=7)) as t:
        for start, stop in [(1, None), (1, 101), (7, 8), (8, 15), (50, 64), (99, 200), (100, None), (0, 3)]:
            want = [e for e in events if start <= e[1] < (stop or 10**9)]
            assert list(t.events(start, stop)) == want
        assert list(t.events(101)) == [] and list(t.events(5, 5)) == []
        for n in (100, 1, 50, 7, 8, 1, 100):
            assert t.event(n) == events[n - 1]
        for bad in (0, 101, -1):
            with pytest.raises(IndexError):
                t.event(bad)
    with pytest.raises(ValueError, match="closed"):
        list(t.events())


# Values msgpack can carry inside an event field.
_scalars = (st.none() | st.booleans() | st.integers(-(1 << 63), (1 << 64) - 1) | st.text(max_size=20)
            | st.binary(max_size=8))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@given(st.lists(st.tuples(st.integers(0, len(S.KINDS) - 1), st.lists(_values, max_size=5)), max_size=20),
       st.integers(1, 9))
def test_arbitrary_field_values_round_trip(tmp_path_factory, raw, chunk_events):
    """The container carries any msgpack value; the reader hands out exactly
    the events before the first one off the catalogue's types, and reports
    its chunk as corrupt (docs/FORMAT.md section 2.2)."""
    events = [[k, i, 0, 1, 2, "L", *fields] for i, (k, fields) in enumerate(raw, 1)]
    path = tmp_path_factory.mktemp("h") / "t.vtdt"
    with mock.patch("tracer.writer.os.fsync"):     # durability is not what this test is about
        with TraceWriter(path, HEADER, chunk_events=chunk_events) as w:
            for ev in events:
                w.append(ev)
    bad = next((i for i, ev in enumerate(events) if not _conforms(ev)), None)
    with open_trace(path) as t:
        got = list(t.events())
        if bad is None:
            assert t.complete and got == events
        else:
            assert got == events[:bad]
            assert t.stop.kind == "corrupt" and t.stop.chunk_index == bad // chunk_events
            assert t.count == bad == t.stop.last_good_seq
            assert f"event {bad + 1}: " in t.stop.message


def _conforms(ev) -> bool:
    """The catalogue's type and value rules (docs/FORMAT.md sections 2.1,
    2.2), written out independently of replay.validate, for HEADER's platform."""
    kind = S.KINDS[ev[0]]
    fields = ev[S.F0:]
    if len(fields) < len(kind.fields):
        return False
    for name, typ, v in zip(kind.fields, kind.types, fields):
        if type(v) not in S.FIELD_TYPES[typ]:
            return False
        if typ == "args" and not all(type(p) is list and len(p) == 2 and type(p[0]) is str
                                     and type(p[1]) in (int, str, bool, type(None)) for p in v):
            return False
        if not _value_ok(kind.name, name, typ, v):
            return False
    return True


_HEADER_IOMMUS = {u["id"] for u in HEADER["platform"]["iommus"]}
_HEADER_SEGS = {u["segment"] for u in HEADER["platform"]["iommus"]} | {0}   # devices: 0000:..
_HEADER_DOMS = {d[0] for d in HEADER["platform"]["domains"]} | set(S.DOMID_RESERVED)


def _value_ok(kind: str, name: str, typ: str, v) -> bool:
    if v is None and typ.endswith("?"):
        return True
    if (kind, name) in S.FIELD_ENUMS:
        return v in S.FIELD_ENUMS[(kind, name)]
    if typ == "u64":
        return 0 <= v < 1 << 64
    if name in ("bus", "devfn"):
        return 0 <= v <= 0xFF
    if name in ("bdf", "sid"):
        return 0 <= v <= 0xFFFF
    if name == "iommu":
        return v in _HEADER_IOMMUS
    if name == "seg":
        return v in _HEADER_SEGS
    if typ.startswith("dom"):
        return v in _HEADER_DOMS or 0x8000 <= v <= 0xFFFE      # or a per-device pseudo domain ID
    return True


_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
    import msgpack
    from conftest import HEADER, make_events
    from tracer.writer import TraceWriter
    from replay.reader import open_trace
    out, other = sys.argv[1], sys.argv[2]
    with TraceWriter(out, HEADER, chunk_events=8) as w:
        for ev in make_events(200, seed=7):
            w.append(ev)
    with open_trace(other) as t:
        got = list(t.events())
    print(json.dumps({{"impl": msgpack.Packer.__module__, "count": t.count, "complete": t.complete,
                      "digest": hashlib.sha256(repr(got).encode()).hexdigest()}}))
""")


@pytest.mark.parametrize("pure", [False, True], ids=["c-ext", "pure-python"])
def test_round_trip_under_both_msgpack_implementations(tmp_path, pure):
    """A trace written in this process is read back in a subprocess running
    either implementation, which also writes its own copy: same bytes, same events."""
    events = make_events(200, seed=7)
    here = tmp_path / "here.vtdt"
    with TraceWriter(here, HEADER, chunk_events=8) as w:
        for ev in events:
            w.append(ev)
    env = dict(os.environ)
    env.pop("MSGPACK_PUREPYTHON", None)
    if pure:
        env["MSGPACK_PUREPYTHON"] = "1"
    there = tmp_path / "there.vtdt"
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(repo=str(REPO)), str(there), str(here)],
                          capture_output=True, text=True, env=env, check=True)
    report = json.loads(proc.stdout)
    assert report["impl"] == ("msgpack.fallback" if pure else "msgpack._cmsgpack")
    assert report["count"] == len(events) and report["complete"]
    assert report["digest"] == hashlib.sha256(repr(events).encode()).hexdigest()
    assert there.read_bytes() == here.read_bytes()
    with open_trace(there) as t:
        assert list(t.events()) == events


_SEED_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {repo!r} + "/tests")
    from conftest import HEADER, make_events
    from tracer.writer import TraceWriter
    # A header whose dict insertion order follows set iteration, i.e. the hash seed.
    header = dict(HEADER, extra={{k: len(k) for k in {{"alpha", "beta", "gamma", "delta", "epsilon"}}}})
    with TraceWriter(sys.argv[1], header, chunk_events=16) as w:
        for ev in make_events(300, seed=3):
            w.append(ev)
""")


def test_same_events_same_bytes_across_hash_seeds(tmp_path):
    outs = []
    for seed in ("1", "2", "12345"):
        out = tmp_path / f"seed{seed}.vtdt"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        env.pop("SOURCE_DATE_EPOCH", None)
        subprocess.run([sys.executable, "-c", _SEED_SCRIPT.format(repo=str(REPO)), str(out)],
                       check=True, env=env)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def test_header_has_no_clock_unless_source_date_epoch(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    TraceWriter(tmp_path / "a.vtdt", HEADER).close()
    TraceWriter(tmp_path / "b.vtdt", HEADER).close()
    assert (tmp_path / "a.vtdt").read_bytes() == (tmp_path / "b.vtdt").read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    TraceWriter(tmp_path / "c.vtdt", HEADER).close()
    with open_trace(tmp_path / "c.vtdt") as t:
        assert t.header["created"] == 1700000000
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError, match="SOURCE_DATE_EPOCH"):
        TraceWriter(tmp_path / "d.vtdt", HEADER)
    assert not (tmp_path / "d.vtdt").exists()


def test_header_refuses_unordered_or_odd_values(tmp_path):
    with pytest.raises(TypeError, match="sets"):
        TraceWriter(tmp_path / "s.vtdt", dict(HEADER, bad={1, 2}))
    with pytest.raises(TypeError, match="keys must be strings"):
        TraceWriter(tmp_path / "k.vtdt", dict(HEADER, bad={1: 2}))


def test_existing_file_is_refused_without_force(tmp_path):
    path = tmp_path / "t.vtdt"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        TraceWriter(path, HEADER)
    assert path.read_bytes() == b"precious"
    with TraceWriter(path, HEADER, force=True) as w:
        w.append(make_events(1)[0])
    with open_trace(path) as t:
        assert t.complete and t.count == 1


def test_writer_rejects_misuse(tmp_path):
    w = TraceWriter(tmp_path / "t.vtdt", HEADER, chunk_events=4)
    events = make_events(6)
    with pytest.raises(ValueError, match="out of order"):
        w.append(events[1])
    for ev in events:
        w.append(ev)
    assert (w.count, w.chunks) == (6, 1)
    w.close()
    w.close()   # idempotent
    with pytest.raises(ValueError, match="closed"):
        w.append(make_events(7)[6])
    with pytest.raises(ValueError):
        TraceWriter(tmp_path / "x.vtdt", HEADER, chunk_events=0)


def test_oversized_event_is_refused_and_the_rest_kept(tmp_path):
    path = tmp_path / "t.vtdt"
    events = make_events(3)
    huge = [S.K_LOG, 4, 0, 0, 0, "", "info", "x" * W.MAX_CHUNK_BYTES]
    with TraceWriter(path, HEADER) as w:
        for ev in events:
            w.append(ev)
        with pytest.raises(ValueError, match="more than a chunk may hold"):
            w.append(huge)
        w.append(huge[:7] + ["fits"])
    with open_trace(path) as t:
        assert list(t.events()) == events + [huge[:7] + ["fits"]]


def test_exception_leaves_an_unfinished_but_readable_trace(tmp_path):
    path = tmp_path / "t.vtdt"
    events = make_events(20)
    with pytest.raises(RuntimeError):
        with TraceWriter(path, HEADER, chunk_events=8) as w:
            for ev in events:
                w.append(ev)
            raise RuntimeError("engine crashed")
    with open_trace(path) as t:
        assert list(t.events()) == events
        assert t.stop.kind == "truncated" and "did not finish" in t.stop.message


def test_verify_false_uses_the_index_and_checks_chunks_when_decoded(write_trace):
    events = make_events(40)
    path = write_trace(events, chunk_events=8)
    with open_trace(path) as t:
        second = t.chunks[1][0]
    data = bytearray(path.read_bytes())
    data[second + 40] ^= 0x01          # inside chunk 1's payload
    path.write_bytes(data)
    with open_trace(path, verify=False) as t:
        assert t.complete and t.count == 40      # the index is trusted at open ...
        assert list(t.events()) == events[:8]    # ... and the chunk CRC checked when read
        assert t.stop.kind == "corrupt" and t.stop.offset == second and t.count == 8
    with open_trace(path) as t:                  # verify=True finds it at open
        assert t.stop.kind == "corrupt" and t.count == 8


def test_fingerprint_tracks_content(write_trace, tmp_path):
    path = write_trace(make_events(30))
    fp = trace_fingerprint(path)
    assert fp == trace_fingerprint(path) and fp.startswith(f"{path.stat().st_size}-")
    other = write_trace(make_events(30, seed=1), name="o.vtdt")
    assert trace_fingerprint(other) != fp
    cut = tmp_path / "cut.vtdt"
    cut.write_bytes(path.read_bytes()[:-10])
    assert trace_fingerprint(cut) != fp
    with pytest.raises(R.NotATrace):
        trace_fingerprint(tmp_path / "missing.vtdt")


def test_old_schema_versions_go_through_the_upgrade_hook(tmp_path, monkeypatch):
    """A trace whose header carries another catalogue (older version, other kind
    order) is decoded by its own header, and maps onto the current codes."""
    old = {"schema_version": 0, "prefix": list(S.PREFIX), "funcs": ["", "boot"],
           "kinds": [["log", ["level", "text"]], ["op-begin", ["verb", "bdf", "domain", "seg"]]]}
    meta = dict(HEADER, format={"name": "vtdtrace", "major": 1, "minor": 0}, schema=old)
    head = W.encode_header(meta)
    tag = W.file_tag(head)
    payload = msgpack.packb([0, 1, 0, 0, 1, "", "info", "hello"])
    body = W.chunk_header(W.SYNC_EVENTS, tag, payload, 1, 1) + payload
    path = tmp_path / "old.vtdt"
    path.write_bytes(head + body)
    with open_trace(path) as t:
        assert t.stop.kind == "bad-header" and "no upgrade from schema version 0" in t.stop.message

    def upgrade(d):
        return dict(d, schema_version=1)

    monkeypatch.setitem(R.SCHEMA_UPGRADES, 0, upgrade)
    with open_trace(path) as t:
        assert t.stop.kind == "truncated" and t.count == 1     # no index: unfinished
        assert t.schema.kind_names == ("log", "op-begin") and not t.schema.is_current
        assert t.schema.to_current == (S.K_LOG, S.K_OP_BEGIN)
        assert S.event_to_dict(t.event(1), t.schema.kinds, t.schema.funcs)["text"] == "hello"


def test_format_doc_catalogue_is_up_to_date():
    from tracer.schema_doc import catalogue_markdown, extract

    doc = (REPO / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    assert extract(doc) == catalogue_markdown(), "run: python -m tracer.schema_doc --write docs/FORMAT.md"


def test_generated_field_names_are_up_to_date():
    """tracer/schema_fields.py names every kind code and field index; a
    catalogue edit must regenerate it (the runtime values come from the
    catalogue either way, but readers and the type checker see this file)."""
    from tracer.schema_doc import FIELDS_MODULE, fields_module

    assert (REPO / FIELDS_MODULE).read_text(encoding="utf-8") == fields_module(), \
        "run: python -m tracer.schema_doc --fields"
    assert S.F_CTX_WRITE_NEW_LO == S.F0 + S.KIND_BY_NAME["ctx-write"].fields.index("new_lo")
