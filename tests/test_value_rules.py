"""Value rules: CRC-valid traces whose events have the right types but
impossible values (an IOMMU the platform does not have, a bus 300, a
domain the header never names, a word outside a closed set) are damage --
exit 3 with the readable part shown and one line naming chunk, byte, event
and what is wrong -- in every command, exactly as a type error is.  And
nothing the engine records trips them."""

from __future__ import annotations

import copy
import glob

import pytest
from conftest import HEADER, REPO, make_events
from hypothesis import given
from hypothesis import strategies as st
from test_crafted_input import chunk_offset, ev, good_events, one_line, run, write

from replay.reader import current_schema, open_trace
from replay.state import BadEvent, ReplayState, fold
from replay.validate import EventCheck
from tracer import schema as S

# One IOMMU (id 0, segment 0): the reviewer's platform.
ONE_IOMMU = copy.deepcopy(HEADER)
ONE_IOMMU["platform"]["iommus"] = [{"id": 0, "segment": 0}]
CTX = dict(iommu=0, bus=0, devfn=0xa0, half="full", method="cmpxchg16b",
           old_lo=0, old_hi=0, new_lo=0x1003, new_hi=0x102)


def ctx(**kw):
    f = dict(CTX, **kw)
    return ("ctx-write", *(f[k] for k in S.KIND_BY_NAME["ctx-write"].fields))


# (id, the bad event's kind and fields, words the error line must hold)
CASES = [
    ("iommu-99", ctx(iommu=99), "ctx-write field iommu is 99, not an IOMMU of the header's platform (ids 0)"),
    ("bus-300", ctx(bus=300), "ctx-write field bus is 300, expected 0..0xff"),
    ("devfn-neg", ctx(devfn=-1), "ctx-write field devfn is -1, expected 0..0xff"),
    ("new-hi-neg", ctx(new_hi=-1), "ctx-write field new_hi is -1, expected 0..2^64-1"),
    ("u64-int64-min", ctx(old_lo=-(1 << 63)), "ctx-write field old_lo is -9223372036854775808, expected 0..2^64-1"),
    ("half-middle", ctx(half="middle"), "ctx-write field half is 'middle', expected one of lo|hi|full"),
    ("method-zzz", ctx(method="zzz"), "ctx-write field method is 'zzz', expected one of plain|write_atomic|"),
    ("unlock-unknown", ("unlock", "no_such_lock", None), "unlock field lock is 'no_such_lock', expected one of"),
    ("owner-new-123456", ("owner-move", 0, 0xa0, 1, 123456),
     "owner-move field new is 123456, not a domain of the header nor a reserved domid"),
    ("owner-bdf-2^20", ("owner-move", 0, 1 << 20, 1, 0), "owner-move field bdf is 1048576, expected 0..0xffff"),
    ("seg-7", ("owner-move", 7, 0xa0, 1, 0), "owner-move field seg is 7, not a segment of the header's platform"),
    ("device-add-seg-7", ("device-add", 7, 0xa0), "device-add field seg is 7, not a segment"),
    ("cache-sync-iommu-1", ("cache-sync", 1, 0, 0xa0), "cache-sync field iommu is 1, not an IOMMU"),
    ("iommu-bitmap-iommu", ("iommu-bitmap", 1, 5, 1), "iommu-bitmap field iommu is 5, not an IOMMU"),
    ("did-map-dom", ("did-map", 0, 1, 0, 42), "did-map field new is 42, not a domain of the header"),
    # pseudo domain IDs (engine final) are 0x8000..0xfffe; 0xffff is none
    ("did-map-pseudo-ffff", ("did-map", 0, 1, 0, 0xFFFF), "did-map field new is 65535, not a domain of the header"),
    ("flush-context-gran", ("flush-context", 0, "page", 1, 0xa0, 0, False, 0),
     "flush-context field gran is 'page', expected one of global|domain|device"),
    ("flush-context-sid", ("flush-context", 0, "device", 1, 0x10000, 0, False, 0),
     "flush-context field sid is 65536, expected 0..0xffff"),
    ("flush-iotlb-addr", ("flush-iotlb", 0, "dsi", 1, -4096, 0, False, False, 0),
     "flush-iotlb field addr is -4096, expected 0..2^64-1"),
    ("pt-alloc-what", ("pt-alloc", 1, 0x1000, "lots"), "pt-alloc field what is 'lots', expected one of pgd|"),
    ("idmap-access", ("idmap-add", 0, 0x1000, 0x1fff, "rwx", 1), "idmap-add field access is 'rwx'"),
    ("fault-point", ("fault-inject", "nowhere", -12, 1), "fault-inject field point is 'nowhere'"),
    ("log-level", ("log", "loud", "x"), "log field level is 'loud', expected one of debug|info|warning|err"),
    ("op-verb", ("op-begin", "steal", 0xa0, 1, 0), "op-begin field verb is 'steal'"),
    ("op-domain", ("op-begin", "assign", 0xa0, 9, 0), "op-begin field domain is 9, not a domain of the header"),
    ("domain-create", ("domain-create", 77), "domain-create field domain is 77, not a domain"),
]


def _trace(tmp_path, fields):
    """40 good events with event 20 (chunk 2, seqs 17..24) replaced."""
    events = good_events(40)
    events[19] = ev(fields[0], 20, *fields[1:])
    path = tmp_path / "bad.vtdt"
    write(path, events, header=ONE_IOMMU)
    return path


@pytest.mark.parametrize("fields, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_impossible_value_is_damage_in_every_command(tmp_path, run_cli, fields, words):
    path = _trace(tmp_path, fields)
    where = f"corrupt at byte {chunk_offset(path, 2)} (chunk 2, last good seq 19): event 20: "
    for args in (["info"], ["log"], ["show"], ["show", "--json"], ["check"], ["check", "--json"],
                 ["export", "--format", "jsonl"]):
        r = run(run_cli, *args, path)
        assert r.returncode == 3, (args, r.returncode, r.stderr)
        line = one_line(r.stderr)
        assert where in line and words in line, (args, line)
        if args == ["info"]:
            assert "integrity  ok" not in r.stdout
        if args == ["log"]:
            assert len(r.stdout.splitlines()) == 1 + 19         # header line + the readable part
        if args == ["show"]:
            assert "step 19 of 19" in r.stdout and "IOMMU 99" not in r.stdout


def test_the_same_events_on_the_platform_they_name_are_fine(tmp_path, run_cli):
    """The rules follow the header: IOMMU 1, segment 1 and domain 1 exist in
    the two-IOMMU header, so the same kinds of event pass there."""
    events = good_events(40)
    events[19] = ev("cache-sync", 20, 1, 0, 0xa0)
    events[20] = ev("owner-move", 21, 1, 0xa0, None, 1)
    events[21] = ev("did-map", 22, 1, 3, 0, S.DOMID_INVALID)
    events[22] = ev("did-map", 23, 1, 4, 0, 0x8001)          # a pseudo domain ID (engine final)
    path = tmp_path / "fine.vtdt"
    write(path, events)
    r = run(run_cli, "info", path)
    assert r.returncode == 0 and "integrity  ok" in r.stdout, r.stderr


def test_every_shipped_trace_keeps_to_the_value_rules():
    paths = sorted(glob.glob(str(REPO / "traces" / "*.vtdt")))
    assert paths
    for path in paths:
        with open_trace(path) as t:
            n = sum(len(c) for c in t.iter_chunks())
            assert t.stop is None and n == t.count, (path, t.stop)


@pytest.mark.parametrize("engine", ["direct", "legacy", "final"])
def test_a_synth_trace_is_integrity_ok(tmp_path, run_cli, engine):
    path = tmp_path / "synth.vtdt"
    r = run(run_cli, "synth", "--events", "30000", "--engine", engine, "--seed", "3", "-o", path)
    assert r.returncode == 0, r.stderr
    r = run(run_cli, "info", path)
    assert r.returncode == 0 and "integrity  ok" in r.stdout, r.stderr
    r = run(run_cli, "check", path)                 # the folding reader's path
    assert r.returncode in (0, 1), r.stderr


_ODD = (-1, 256, 0x10000, -(1 << 63), 99, 7, 123456, "middle", "zzz", "")


@given(st.integers(0, 10 ** 6), st.integers(0, 63), st.integers(0, 14), st.sampled_from(_ODD))
def test_the_chunk_passes_and_the_event_walk_agree(seed, which, field, value):
    """The vectorised per-chunk rules (fast path, both reader levels) find
    a bad value exactly when the event-by-event walk does, and the walk
    names the first bad event; what the folding level leaves to the fold
    (FOLD_VALUE_RULES), the fold rejects with the same words."""
    events = make_events(64, seed)
    e = events[which]
    i = S.F0 + field % (len(e) - S.F0)
    if e[0] != S.K_CALL and (type(value) is type(e[i]) or (e[i] is None and type(value) is int)):
        e[i] = value                            # a well-typed value, maybe out of its range
    check = EventCheck(current_schema(), HEADER["platform"])
    walk = check.first_problem(events, 1, list)
    assert check.check(events, 1, list) == walk
    seq_says = check.check_seq(events, 1, list)
    if seq_says is None and walk is not None:
        with pytest.raises(BadEvent) as exc:
            fold(ReplayState(), events)
        assert str(exc.value) == f"event {walk[0] + 1}: {walk[1]}"
    else:
        assert seq_says == walk
