"""`vtdtrace diff` and replay.diff: golden text/JSON on the shipped traces,
exit codes, and the alignment's properties (local differences stay local,
streaming stays bounded, the side-by-side API is consistent).

Golden files live in tests/golden/diff/; regenerate them after an intended
change with ``VTDTRACE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_diff.py``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import given
from hypothesis import strategies as st

from replay.diff import Side, diff_streams, render_text
from replay.diff import align as A
from replay.diff.hazard_match import FindingRows, hazard_delta
from tracer import schema as S

GOLDEN = REPO / "tests" / "golden" / "diff"
UPDATE = os.environ.get("VTDTRACE_UPDATE_GOLDEN") == "1"
T = "traces/"
S1L, S1D, S1N = T + "s1-usb-rmrr.legacy.vtdt", T + "s1-usb-rmrr.direct.vtdt", T + "s1-usb-rmrr.direct-nocx16.vtdt"
S3D = T + "s3-igd-own-drhd.direct.vtdt"


_WORK: Path | None = None


@pytest.fixture(scope="module", autouse=True)
def _private_traces(tmp_path_factory):
    """The commands run in a private copy of traces/: a diff writes the
    traces' sidecars, which must not land in (or be read from) the repository."""
    global _WORK
    _WORK = tmp_path_factory.mktemp("diff-work")
    shutil.copytree(REPO / "traces", _WORK / "traces", ignore=shutil.ignore_patterns("*.vtdt-cache"))
    yield


def vt(*args, cwd=None, env=None):
    cwd = _WORK if cwd is None else cwd
    e = dict(os.environ)
    e.pop("SOURCE_DATE_EPOCH", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=cwd, env=e,
                          capture_output=True, text=True)


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"missing golden {path} (run with VTDTRACE_UPDATE_GOLDEN=1)"
    assert text == path.read_text(encoding="utf-8"), f"output differs from {path}"


def _diff_json(a, b):
    r = vt("diff", a, b, "--json")
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1
    return r, json.loads(r.stdout)


# --------------------------------------------------------------------------------
# Golden files on the shipped traces


CASES = [
    ("s1-legacy-vs-direct", S1L, S1D, 1),
    ("s1-direct-cx16-vs-nocx16", S1D, S1N, 1),
    ("s1-direct-self", S1D, S1D, 0),
    ("s1-direct-vs-s3-direct", S1D, S3D, 1),
]


@pytest.mark.parametrize("name,a,b,code", CASES, ids=[c[0] for c in CASES])
def test_golden_text_and_json(name, a, b, code):
    text = vt("diff", a, b)
    assert text.returncode == code, text.stderr
    assert text.stderr == ""
    golden(name + ".txt", text.stdout)
    r, doc = _diff_json(a, b)
    assert r.returncode == code
    golden(name + ".json", json.dumps(doc, indent=1, sort_keys=False) + "\n")
    assert list(doc)[:7] == ["shape_version", "equivalent", "header_diff", "first_divergence", "ops", "state_diff",
                             "hazard_delta"]
    assert doc["shape_version"] == 2
    assert doc["equivalent"] is (code == 0)
    assert set(doc["hazard_delta"]) >= {"only_a", "only_b"}


def test_s1_legacy_vs_direct_divergence_inside_the_reassign_operation():
    _, doc = _diff_json(S1L, S1D)
    fd = doc["first_divergence"]
    assert set(fd) >= {"seq_a", "seq_b", "class", "context"}
    assert fd["class"] in ("only-a", "only-b", "args", "state")
    assert len(fd["context"]) == 3
    # the first divergence is at boot: the hardware domain's devices are mapped
    # by PM (legacy) vs MO (direct) code
    assert fd["op_a"] == 0 and fd["class"] == "args" and "label" in fd["fields"]
    ops = {o["op_a"]: o for o in doc["ops"]}
    assign = ops[1]
    assert (assign["verb"], assign["device"], assign["domain"], assign["status"]) == \
        ("assign", "0000:00:14.0", "guest", "different")
    rows = [row for reg in assign["regions"] for row in reg["rows"]]
    only_a = [r["a"] for r in rows if r["class"] == "only-a"]
    only_b = [r["b"] for r in rows if r["class"] == "only-b"]
    # legacy: UO3 clears the present bit of 00:14.0 (the non-present window opens) ...
    clears = [e for e in only_a if e["kind"] == "ctx-write" and e["label"] == "UO3"]
    assert clears and clears[-1]["new_lo"] == "0x0000000000000000"
    # ... and the owner passes through dom_io, PM5 sets P again
    assert any(e["kind"] == "owner-move" and e["new"] == "dom_io" for e in only_a)
    assert any(e["kind"] == "ctx-write" and e["label"] == "PM5" and int(e["new_lo"], 16) & 1 for e in only_a)
    # direct: one cmpxchg16b write of the whole entry
    writes = [e for e in only_b if e["kind"] == "ctx-write"]
    assert len(writes) == 1 and writes[0]["method"] == "cmpxchg16b" and writes[0]["half"] == "full"
    # both inside reassign_device_ownership
    regs = [reg for reg in assign["regions"] if any(r["class"] != "args" for r in reg["rows"])]
    assert all("reassign_device_ownership" in reg["in"] or any(
        (r["a"] or r["b"])["func"] == "reassign_device_ownership" for r in reg["rows"]) for reg in regs)


def test_s1_legacy_vs_direct_hazard_delta():
    _, doc = _diff_json(S1L, S1D)
    hd = doc["hazard_delta"]
    if hd.get("available") is False:
        pytest.skip("the hazard analysers (replay.hazards) are not in this build yet")
    kinds_a = {f["kind"] for f in hd["only_a"]}
    kinds_b = {f["kind"] for f in hd["only_b"]}
    assert "rmrr-disconnect" in kinds_a
    assert "rmrr-disconnect" not in kinds_b
    dis = [f for f in hd["only_a"] if f["kind"] == "rmrr-disconnect"]
    assert all(f["device"] == "0000:00:14.0" or f["rid"] == "0000:00:14.0" for f in dis)
    assert all(isinstance(f["start"], int) for f in dis)


def test_cx16_vs_nocx16_shows_the_two_step_write():
    _, doc = _diff_json(S1D, S1N)
    assert [h["path"] for h in doc["header_diff"]] == ["engine.cx16", "platform.knobs.cx16"]
    op1 = next(o for o in doc["ops"] if o["op_a"] == 1)
    rows = [r for reg in op1["regions"] for r in reg["rows"]]
    a_writes = [r["a"]["method"] for r in rows if r["class"] == "only-a" and r["a"]["kind"] == "ctx-write"]
    assert a_writes == ["cmpxchg16b"]
    b_writes = [(r["b"]["half"], r["b"]["method"])
                for r in rows if r["class"] == "only-b" and r["b"]["kind"] == "ctx-write"]
    assert b_writes == [("lo", "write_atomic"), ("hi", "write_atomic")]
    assert any(r["b"]["kind"] == "log" and "data corruption" in r["b"]["text"] for r in rows if r["class"] == "only-b")


def test_self_diff_is_equivalent():
    r, doc = _diff_json(S1D, S1D)
    assert r.returncode == 0
    assert doc["equivalent"] is True and doc["first_divergence"] is None
    assert doc["ops"] == [] and doc["state_diff"] == [] and doc["header_diff"] == []
    assert doc["hazard_delta"]["only_a"] == [] and doc["hazard_delta"]["only_b"] == []


def test_different_scenarios_clear_report():
    r, doc = _diff_json(S1D, S3D)
    assert r.returncode == 1 and r.stderr == ""
    assert doc["equivalent"] is False
    assert any(h["path"] == "scenario.name" for h in doc["header_diff"])
    # boot pairs with boot; the scenarios' operations do not pair
    statuses = [(o["op_a"], o["op_b"], o["status"]) for o in doc["ops"]]
    assert statuses[0] == (0, 0, "different")
    assert doc["state_diff"], "different platforms leave different states"
    text = vt("diff", S1D, S3D).stdout
    assert "result: DIFFERENT" in text and "Traceback" not in text


def test_header_only_difference_is_equivalent(tmp_path):
    from replay.reader import open_trace
    from tracer.writer import TraceWriter

    src = open_trace(REPO / S1D)
    header = dict(src.header)
    header["scenario"] = dict(header["scenario"], description="another description")
    out = tmp_path / "copy.vtdt"
    with TraceWriter(out, header) as w:
        for ev in src.events():
            w.append(ev)
    r, doc = _diff_json(_WORK / S1D, out)
    assert r.returncode == 0 and doc["equivalent"] is True
    assert [h["path"] for h in doc["header_diff"]] == ["scenario.description"]


def test_text_output_independent_of_hash_seed():
    outs = {vt("diff", S1L, S1D, env={"PYTHONHASHSEED": seed}).stdout for seed in ("0", "1", "12345")}
    assert len(outs) == 1


# --------------------------------------------------------------------------------
# Exit codes 2 and 3


def test_exit_2_for_missing_or_not_a_trace(tmp_path):
    junk = tmp_path / "junk.vtdt"
    junk.write_bytes(b"not a trace at all, certainly not")
    empty = tmp_path / "empty.vtdt"
    empty.write_bytes(b"")
    for a, b, bad in ((tmp_path / "nope.vtdt", S1D, "nope.vtdt"), (S1D, junk, "junk.vtdt"),
                      (empty, S1D, "empty.vtdt"), (S1D, tmp_path, str(tmp_path))):
        r = vt("diff", a, b)
        assert r.returncode == 2, (a, b, r.stderr)
        assert r.stdout == ""
        assert r.stderr.count("\n") == 1 and bad in r.stderr and "Traceback" not in r.stderr
    r = vt("diff", S1D)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_exit_3_damaged_compares_readable_prefix(tmp_path):
    from replay.reader import open_trace
    from tracer.writer import TraceWriter

    src = open_trace(REPO / S1L)
    whole = tmp_path / "whole.vtdt"
    with TraceWriter(whole, src.header, chunk_events=32) as w:     # several chunks
        for ev in src.events():
            w.append(ev)
    data = whole.read_bytes()
    cut = tmp_path / "cut.vtdt"
    cut.write_bytes(data[: len(data) * 2 // 3])
    S1L_ = whole
    r = vt("diff", S1L_, cut)
    assert r.returncode == 3
    assert "B is damaged" in r.stdout and "result: DIFFERENT" in r.stdout
    assert r.stderr.count("\n") == 1 and "cut.vtdt" in r.stderr and "truncated" in r.stderr
    r, doc = _diff_json(S1L_, cut)
    assert r.returncode == 3
    assert doc["b"]["complete"] is False and doc["b"]["stop"]["kind"] == "truncated"
    n = doc["b"]["events"]
    assert 0 < n < doc["a"]["events"]
    # the readable prefix is identical: the only difference is what B lacks
    assert doc["first_divergence"]["class"] == "only-a"
    assert doc["first_divergence"]["seq_a"] == n + 1
    # a damaged trace against itself: equivalent, still exit 3 (3 > 1 > 0)
    r, doc = _diff_json(cut, cut)
    assert r.returncode == 3 and doc["equivalent"] is True


# --------------------------------------------------------------------------------
# Core: event lists (ListSink + make_header), injected differences


def _record(scenario="s1-usb-rmrr", variant="direct", cx16=True):
    from tracer.record import apply_cx16, make_header, record
    from tracer.recorder import ListSink
    from tracer.scenario import load_scenario

    p = apply_cx16(load_scenario(scenario), cx16)
    sink = ListSink()
    record(p, variant, sink)
    return make_header(p, variant), sink.events


@pytest.fixture(scope="module")
def synth_events():
    from tracer.recorder import ListSink
    from tracer.synth import synth, synth_header

    sink = ListSink()
    synth(30_000, 11, sink)
    return synth_header(11, "direct", True, 30_000), sink.events


def _renumber(events):
    out = []
    for i, ev in enumerate(events, 1):
        ev = list(ev)
        ev[1] = i
        out.append(ev)
    return out


def _diff(ha, ea, hb, eb, **kw):
    return diff_streams(Side.from_events(ha, ea, name="A"), Side.from_events(hb, eb, name="B"), **kw)


def test_event_lists_api_matches_files():
    ha, ea = _record(variant="legacy")
    hb, eb = _record(variant="direct")
    rep = _diff(ha, ea, hb, eb)
    assert not rep.equivalent and rep.exit_code == 1
    # the first mapping of a hardware-domain device: PM (legacy) vs MO (direct) code
    first_map = next(e for e in ea if e[0] == S.K_CALL and e[4] == S.FUNC_CODE["domain_context_mapping_one"])
    assert rep.first_divergence["seq_a"] == first_map[1]
    txt = render_text(rep)
    assert "op 1 assign 0000:00:14.0 -> guest: different" in txt


def _find(events, pred, start=0):
    return next(i for i in range(start, len(events)) if pred(events[i]))


def test_one_changed_value_is_one_region(synth_events):
    h, ev = synth_events
    b = [list(e) for e in ev]
    i = _find(b, lambda e: e[0] == S.K_FLUSH_IOTLB, len(b) // 2)
    b[i][S.F0 + 2] += 7          # the flush's did
    rep = _diff(h, ev, h, b)
    al = rep.alignment
    assert len(al.regions) == 1
    reg = al.regions[0]
    assert reg.counts == {"args": 1} and reg.seq_a == (i + 1, i + 1) == reg.seq_b
    assert rep.first_divergence["class"] == "args" and rep.first_divergence["fields"] == ["did"]
    assert rep.summary()["ops_different"] == 1
    assert al.n_rows == len(ev)
    row = al.row(reg.row_start)
    assert (row.seq_a, row.seq_b, row.cls, row.fields) == (i + 1, i + 1, "args", ("did",))


def test_inserted_and_deleted_events_do_not_desynchronise(synth_events):
    h, ev = synth_events
    b = [list(e) for e in ev]
    k1 = _find(b, lambda e: e[0] == S.K_CACHE_SYNC, len(b) // 4)
    extra = list(b[k1])
    extra[0] = S.K_LOG
    extra[S.F0:] = ["info", "an extra line"]
    b.insert(k1 + 1, extra)
    k2 = _find(b, lambda e: e[0] == S.K_LOG, 3 * len(b) // 4)
    del b[k2]
    b = _renumber(b)
    rep = _diff(h, ev, h, b)
    al = rep.alignment
    assert [reg.classes for reg in al.regions] == [("only-b",), ("only-a",)]
    assert al.regions[0].seq_b == (k1 + 2, k1 + 2)
    assert al.regions[1].seq_a == (k2, k2)            # b's k2 was a's k2 - 1 + 1 (insert) ...
    assert rep.summary()["ops_different"] == 2
    # everything else is the same, row by row
    assert al.n_rows == len(ev) + 1
    assert sum(1 for p in al.pairs if p.status == "same") == len(al.pairs) - 2
    assert rep.first_divergence["class"] == "only-b" and rep.first_divergence["seq_b"] == k1 + 2
    assert rep.first_divergence["seq_a"] == k1 + 2       # where A would have it


def test_inserted_operation_pairs_the_rest_by_key(synth_events):
    h, ev = synth_events
    groups = list(A.op_groups([ev]))
    mid = len(groups) // 2
    g = groups[mid]
    # B: another operation (op 5's events, under an op id of its own) inserted before op `mid`
    extra = [list(e) for e in groups[5].events]
    for e in extra:
        e[3] = 99_999
    b = _renumber([list(e) for e in ev[: g.first - 1]] + extra + [list(e) for e in ev[g.first - 1:]])
    rep = _diff(h, ev, h, b)
    st = rep.summary()
    assert (st["ops_only_b"], st["ops_different"], st["ops_only_a"], st["ops_renumbered"]) == (1, 0, 0, 0)
    assert len(rep.alignment.regions) == 1
    only = next(p for p in rep.alignment.pairs if p.status == "only-b")
    assert (only.op_b, only.first_b, only.count_b) == (99_999, g.first, len(extra))


def test_deleted_operation(synth_events):
    h, ev = synth_events
    groups = list(A.op_groups([ev]))
    g = groups[len(groups) // 3]
    b = _renumber(ev[: g.first - 1] + ev[g.last:])
    rep = _diff(h, ev, h, b)
    st = rep.summary()
    assert st["ops_only_a"] == 1 and st["ops_different"] == 0
    # the deletion changes state; the state difference is reported and converges or persists
    assert rep.first_divergence["class"] == "only-a" and rep.first_divergence["seq_a"] == g.first


def test_state_difference_appears_and_converges(synth_events):
    h, ev = synth_events
    b = [list(e) for e in ev]
    # a ctx-write that sets a different DID in the entry's hi half
    i = _find(b, lambda e: e[0] == S.K_CTX_WRITE and e[S.F0 + 3] == "full", len(b) // 2)
    b[i][S.F0 + 8] ^= 0x100        # new_hi: DID + 1
    rep = _diff(h, ev, h, b)
    sd = rep.state_diff
    assert sd and sd[0].changes
    ch = [c for c in sd[0].changes if c["section"] == "context"]
    assert ch and set(ch[0]["a"]) >= {"did", "hi"} and ch[0]["a"]["did"] != ch[0]["b"]["did"]
    assert sd[0].seq_a >= i + 1
    # once the entry is written again the states agree again
    assert sd[-1].changes == []
    assert rep.first_divergence["class"] == "args"


def test_knob_difference_alone_is_a_state_divergence_but_equivalent():
    ha, ea = _record()
    hb = json.loads(json.dumps(ha))
    hb["platform"]["knobs"]["caching_mode"] = True
    rep = _diff(ha, ea, hb, [list(e) for e in ea])
    assert rep.equivalent and rep.exit_code == 0
    if rep.state_diff:
        assert rep.first_divergence["class"] == "state"


def test_op_ids_renumbered_is_not_equivalent():
    ha, ea = _record()
    eb = [list(e) for e in ea]
    for e in eb:
        e[3] += 5
    rep = _diff(ha, ea, ha, eb)
    assert not rep.equivalent and rep.exit_code == 1
    assert rep.summary()["ops_renumbered"] == rep.summary()["op_pairs"] == 3
    assert rep.first_divergence["fields"] == ["op"]


def test_two_different_synth_workloads_no_crash():
    from tracer.recorder import ListSink
    from tracer.synth import synth, synth_header

    out = []
    for seed in (1, 2):
        sink = ListSink()
        synth(4000, seed, sink)
        out.append((synth_header(seed, "direct", True, 4000), sink.events))
    rep = _diff(*out[0], *out[1])
    assert not rep.equivalent
    txt = render_text(rep)
    assert "result: DIFFERENT" in txt
    json.dumps(rep.to_json())
    _check_alignment(rep.alignment, out[0][1], out[1][1])


def _check_alignment(al, ea, eb):
    """Every event of each side appears exactly once, in order; same/args rows
    pair events of the same kind."""
    rows = al.rows(0, al.n_rows)
    assert len(rows) == al.n_rows
    sa = [r.seq_a for r in rows if r.seq_a is not None]
    sb = [r.seq_b for r in rows if r.seq_b is not None]
    assert sa == list(range(1, len(ea) + 1))
    assert sb == list(range(1, len(eb) + 1))
    for r in rows:
        assert r.index == rows.index(r) if r.index < 50 else True
        if r.cls in ("same", "args"):
            assert ea[r.seq_a - 1][0] == eb[r.seq_b - 1][0]
            if r.cls == "same":
                assert A.same_payload(ea[r.seq_a - 1], eb[r.seq_b - 1])
        elif r.cls == "only-a":
            assert r.seq_b is None
        else:
            assert r.seq_a is None
    for r in rows[:: max(1, len(rows) // 500)]:
        if r.seq_a is not None:
            assert al.row_of("a", r.seq_a) == r.index
        if r.seq_b is not None:
            assert al.row_of("b", r.seq_b) == r.index


# --------------------------------------------------------------------------------
# The side-by-side API


def test_alignment_api_for_the_side_by_side_view():
    ha, ea = _record(variant="legacy")
    hb, eb = _record(variant="direct")
    rep = _diff(ha, ea, hb, eb)
    al = rep.alignment
    _check_alignment(al, ea, eb)
    # gap rows are visible
    rows = al.rows(0, al.n_rows)
    assert any(r.seq_b is None for r in rows) and any(r.seq_a is None for r in rows)
    # next/previous region walk every region once, in order
    seen, row = [], -1
    while (reg := al.next_region(row)) is not None:
        seen.append(reg.index)
        row = reg.row_start
        assert al.region_at(row) is reg
        assert all(x.cls != "same" for x in al.rows(reg.row_start, reg.row_end))
    assert seen == list(range(len(al.regions)))
    back, row = [], al.n_rows
    while (reg := al.prev_region(row)) is not None:
        back.append(reg.index)
        row = reg.row_start
    assert back == seen[::-1]
    # rows of one pair are contiguous and the pair knows its regions
    for p in al.pairs:
        for ri in p.regions:
            reg = al.regions[ri]
            assert p.row_start <= reg.row_start < reg.row_end <= p.row_start + p.n_rows
    # differing field names are on args rows only
    assert all(bool(r.fields) == (r.cls == "args") for r in rows)
    assert al.row_of("a", 10**9) is None and al.rows(al.n_rows, al.n_rows + 5) == []


def test_hazard_delta_matching_and_positions():
    ha, ea = _record(variant="legacy")
    hb, eb = _record(variant="direct")
    fa = [
        {"kind": "rmrr-disconnect", "device": "0000:00:14.0", "rid": "0000:00:14.0", "iommu": 0,
         "start": 193, "end": 234, "start_label": "UO3", "end_label": "PM5", "severity": "hazard"},
        {"kind": "stale-context", "device": "0000:00:14.0", "rid": "0000:00:14.0", "iommu": 0,
         "start": 170, "end": 175, "start_label": "X1", "end_label": "X2", "severity": "benign"},
    ]
    fb = [{"kind": "stale-context", "device": "0000:00:14.0", "rid": "0000:00:14.0", "iommu": 0,
           "start": 150, "end": 151, "start_label": "X1", "end_label": "X2", "severity": "benign"}]
    rep = diff_streams(Side.from_events(ha, ea, findings=fa), Side.from_events(hb, eb, findings=fb))
    hd = rep.hazard_delta()
    assert [f["kind"] for f in hd["only_a"]] == ["rmrr-disconnect"] and hd["only_b"] == []
    h = rep.hazards[0]
    assert h.side == "a" and h.row == rep.alignment.row_of("a", 193)
    assert rep.next_hazard(-1) is h and rep.next_hazard(h.row) is None and rep.prev_hazard(h.row + 1) is h
    # without findings on either side: not available, empty lists
    rep2 = _diff(ha, ea, hb, eb)
    assert rep2.hazard_delta() == {"only_a": [], "only_b": [], "changed": [], "available": False}
    # finding objects (attributes, labels pair) work too
    class F:
        kind, device, rid, iommu, start, end, labels, severity = ("did-leak", "d", "r", 0, 5, None,
                                                                  ("A", None), "warning")
    out = hazard_delta(rep.alignment, [F()], [])
    assert out[0].finding["start_label"] == "A" and out[0].finding["open_at_end"] is True


def test_a_window_whose_severity_changed_is_in_the_hazard_delta():
    """The same window, benign in A and a hazard in B (a patch that breaks a
    flush): matched on severity too, so it is never "none" -- one-sided on
    each side, as docs/CLI.md says, for every form findings come in."""
    h, ev = _record(variant="direct")
    w = {"kind": "stale-context", "device": "0000:00:14.0", "rid": "0000:00:14.0", "iommu": 0,
         "start": 150, "end": 155, "start_label": "MO7", "end_label": "MO9"}
    fa, fb = [dict(w, severity="benign")], [dict(w, severity="hazard")]
    rep = diff_streams(Side.from_events(h, ev, findings=fa), Side.from_events(h, ev, findings=fb))
    hd = rep.hazard_delta()
    assert [f["severity"] for f in hd["only_a"]] == ["benign"]
    assert [f["severity"] for f in hd["only_b"]] == ["hazard"] and hd["changed"] == []
    rows = FindingRows([[w["kind"], sev, w["device"], w["rid"], 0, 150, 155, "MO7", "MO9", ""]
                        for sev in ("benign", "hazard")])
    out = hazard_delta(rep.alignment, FindingRows(rows[:1]), FindingRows(rows[1:]))
    assert sorted((d.side, d.finding["severity"]) for d in out) == [("a", "benign"), ("b", "hazard")]
    # the same severity on both sides: no delta
    same = diff_streams(Side.from_events(h, ev, findings=fa), Side.from_events(h, ev, findings=list(fa)))
    assert same.hazard_delta() == {"only_a": [], "only_b": [], "changed": []}


# --------------------------------------------------------------------------------
# align.py units


@given(st.lists(st.integers(0, 5), max_size=40), st.lists(st.integers(0, 5), max_size=40),
       st.randoms(use_true_random=False))
def test_align_seq_is_a_valid_alignment(xa, xb, rnd):
    ka = [x % 3 for x in xa]
    kb = [x % 3 for x in xb]
    pairs = A.align_seq(ka, kb, xa, xb)
    ia = [i for i, _ in pairs if i is not None]
    ib = [j for _, j in pairs if j is not None]
    assert ia == list(range(len(xa))) and ib == list(range(len(xb)))
    for i, j in pairs:
        if i is not None and j is not None:
            assert ka[i] == kb[j]
    if xa == xb:
        assert all(i == j for i, j in pairs)


def test_align_seq_large_ranges_stay_linear():
    rnd = random.Random(3)
    xa = [rnd.randrange(4) for _ in range(30_000)]
    xb = list(xa)
    for k in range(0, 30_000, 3000):
        xb[k] = 9
    pairs = A.align_seq(xa, xb, xa, xb)
    assert sum(1 for i, j in pairs if i is not None and j is not None) >= 29_990


def _ev(kind, seq, func="domain_context_mapping_one", label="", *fields, op=1):
    return [S.KIND_BY_NAME[kind].code, seq, 0, op, S.FUNC_CODE[func], label, *fields]


def test_build_tree_crossing_sections_are_flattened():
    evs = [
        _ev("call", 1, "domain_context_mapping_one", "MO1", []),
        _ev("lock", 2, "domain_context_mapping_one", "MO1", "iommu->lock", 0),
        _ev("lock", 3, "domain_context_mapping_one", "MO3", "rcu_domain", 1),
        _ev("unlock", 4, "domain_context_mapping_one", "MO8", "iommu->lock", 0),
        _ev("unlock", 5, "domain_context_mapping_one", "MO15", "rcu_domain", 1),
        _ev("return", 6, "domain_context_mapping_one", "MO15", 0),
    ]
    tree = A.build_tree(evs)
    assert len(tree) == 1 and tree[0].is_call and tree[0].close == 5
    lock = tree[0].children[0]
    assert isinstance(lock, A.Bracket) and (lock.open, lock.close) == (1, 3)
    assert lock.children == [2]                  # the crossing rcu lock: a plain event
    assert tree[0].children[1:] == [4]          # its unlock too


def test_build_tree_accepts_any_nesting():
    """Unmatched returns/unlocks are plain events, an unclosed call stays
    open (a trace cut inside an operation)."""
    evs = [_ev("return", 1, "boot", "", 0), _ev("unlock", 2, "boot", "", "pcidevs_lock", None),
           _ev("log", 3, "boot", "", "info", "x"), _ev("call", 4, "boot", "", [])]
    tree = A.build_tree(evs)
    assert tree[:3] == [0, 1, 2] and tree[3].is_call and tree[3].close is None


def test_op_groups_across_chunks_and_split():
    evs = [_ev("op-begin", i + 1, "", "", "assign", 160, 1, 0, op=i // 5) for i in range(23)]
    chunks = [evs[0:3], evs[3:11], [], evs[11:23]]
    groups = list(A.op_groups(chunks))
    assert [(g.op, g.first, g.count) for g in groups] == [(0, 1, 5), (1, 6, 5), (2, 11, 5), (3, 16, 5), (4, 21, 3)]
    # non-monotonic op ids inside a chunk
    odd = [_ev("log", i + 1, "boot", "", "info", "x", op=o) for i, o in enumerate([1, 1, 0, 0, 1, 2, 2])]
    assert [(g.op, g.count) for g in A.op_groups([odd])] == [(1, 2), (0, 2), (1, 1), (2, 2)]


def test_groups_equal_restores_the_events():
    a = [_ev("log", 10 + i, "boot", "", "info", "x", op=3) for i in range(4)]
    b = [_ev("log", 20 + i, "boot", "", "info", "x", op=4) for i in range(4)]
    before = json.dumps(b)
    assert A.groups_equal(a, b)
    assert json.dumps(b) == before
    b[2][S.F0 + 1] = "y"
    assert not A.groups_equal(a, b)
    assert json.dumps(b[0]) == json.dumps(_ev("log", 20, "boot", "", "info", "x", op=4))


def test_pairing_streams_with_bounded_lookahead():
    """The op-level pass never holds more than the look-ahead window."""
    ha, ea = _record()
    hb, eb = _record(variant="legacy")
    pulled = {"a": 0, "b": 0}
    emitted = {"a": 0, "b": 0}
    peak = [0]

    def counted(side, groups):
        for g in groups:
            pulled[side] += 1
            peak[0] = max(peak[0], pulled[side] - emitted[side])
            yield g

    big = ea * 1          # the scenario's ops
    for ga, gb in A.pair_groups(counted("a", A.op_groups([big])), counted("b", A.op_groups([eb])), window=2):
        emitted["a"] += ga is not None
        emitted["b"] += gb is not None
    assert peak[0] <= 3


def test_replay_diff_does_not_import_the_engine():
    script = ("import sys, replay.diff, vtdtrace.commands.diff\n"
              "print(sorted(m for m in sys.modules if m.startswith('tracer.engine') or m == 'textual'))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_difference_inside_a_huge_operation_stays_local(synth_events):
    h, ev = synth_events
    boot = next(A.op_groups([ev]))
    assert boot.count > A.TRIM_OVER            # synth boot creates thousands of domains
    b = [list(e) for e in ev]
    k = boot.count // 2
    b[k][5] = "XX9"                            # a label in the middle of boot
    del b[k + 10]                              # and one event fewer a little later
    b = _renumber(b)
    rep = _diff(h, ev, h, b)
    al = rep.alignment
    assert rep.summary()["ops_different"] == 1
    assert [r.counts for r in al.regions] == [{"args": 1}, {"only-a": 1}]
    assert al.regions[0].seq_a == (k + 1, k + 1)
    _check_alignment(al, ev, b)


def test_progress_callback_and_abort(synth_events):
    h, ev = synth_events
    calls = []
    _diff(h, ev, h, [list(e) for e in ev], progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[0][0] == 0 and all(t is None for _, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)

    class Stop(Exception):
        pass

    def stop(done, total):
        if done > 10_000:
            raise Stop

    with pytest.raises(Stop):
        _diff(h, ev, h, [list(e) for e in ev], progress=stop)
