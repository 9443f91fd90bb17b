"""`vtdtrace diff` of real code against a model (replay/diff/projection.py),
without a Xen tree: a model's trace relabelled as real code (`engine.name`
`xen-c`) stands for the C, with the real code's two root stores put in where
a test needs them.  The tests over a real tree are tests/test_realc_*.py."""

from __future__ import annotations

import json
from pathlib import Path

from replay.diff.projection import Projector, project
from replay.reader import open_trace
from tracer import schema as S
from tracer.writer import TraceWriter

REPO = Path(__file__).resolve().parent.parent
DIRECT = REPO / "traces" / "s1-usb-rmrr.direct.vtdt"


def _as_real_code(src: Path, dest: Path, split_roots: bool = True, chunk_events: int = 64) -> Path:
    """src's events under a real-code header; with split_roots each root
    store becomes the C's two (the pointer, then the present bit)."""
    with open_trace(src) as t:
        header, events = dict(t.header), [list(e) for e in t.events()]
    header["engine"] = {"name": "xen-c", "xen_version": "4.17.5", "cx16": header["engine"]["cx16"]}
    out = []
    for ev in events:
        if split_roots and ev[S.I_KIND] == S.K_ROOT_WRITE and ev[S.F_ROOT_WRITE_NEW] & 1:
            first = list(ev)
            first[S.F_ROOT_WRITE_NEW] = ev[S.F_ROOT_WRITE_NEW] & ~1
            second = list(ev)
            second[S.F_ROOT_WRITE_OLD] = first[S.F_ROOT_WRITE_NEW]
            out += [first, second]
        else:
            out.append(ev)
    with TraceWriter(dest, header, chunk_events=chunk_events) as w:
        for seq, ev in enumerate(out, 1):
            ev[S.I_SEQ] = seq
            w.append(ev)
    return dest


def test_a_model_against_itself_as_real_code_is_equivalent_on_the_projection(tmp_path, run_cli):
    real = _as_real_code(DIRECT, tmp_path / "real.vtdt")
    model = tmp_path / "model.vtdt"
    model.write_bytes(DIRECT.read_bytes())
    r = run_cli("diff", model, real)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "compared: real code against a model" in r.stdout and "result: EQUIVALENT" in r.stdout
    assert "hazard delta: none" in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.split("result:")[0].split("compared:")[1].splitlines())
    doc = json.loads(run_cli("diff", "--json", model, real).stdout)
    roots = sum(1 for e in open_trace(DIRECT).events() if e[S.I_KIND] == S.K_ROOT_WRITE)
    assert doc["projection"]["b"]["root_stores_merged"] == roots > 0
    assert doc["projection"]["a"]["root_stores_merged"] == 0
    # the second diff reads both traces' findings from their sidecars: the same bytes
    again = run_cli("diff", "--json", model, real).stdout
    assert json.loads(again) == doc and again == run_cli("diff", "--json", model, real).stdout
    # two models (or the same file twice): every event, as always
    assert json.loads(run_cli("diff", "--json", model, model).stdout)["projection"] is None


def test_a_difference_is_shown_at_each_trace_s_own_seq(tmp_path, run_cli):
    """One context store of the real code changed: diff names it at its seq
    in each trace (the real trace has one more event per root entry)."""
    real = _as_real_code(DIRECT, tmp_path / "real.vtdt")
    with open_trace(real) as t:
        header, events = dict(t.header), [list(e) for e in t.events()]
    target = next(e for e in events if e[S.I_KIND] == S.K_CTX_WRITE and e[S.I_OP] == 1)
    target[S.F_CTX_WRITE_NEW_HI] ^= 0x100                 # another DID
    changed = tmp_path / "changed.vtdt"
    with TraceWriter(changed, header) as w:
        for ev in events:
            w.append(ev)
    model = tmp_path / "model.vtdt"
    model.write_bytes(DIRECT.read_bytes())
    r = run_cli("diff", "--json", model, changed)
    assert r.returncode == 1, r.stderr
    first = json.loads(r.stdout)["first_divergence"]
    assert first["seq_b"] == target[S.I_SEQ] and first["fields"] == ["new_hi"]
    a = {e[S.I_SEQ]: e for e in open_trace(DIRECT).events()}[first["seq_a"]]
    assert a[S.I_KIND] == S.K_CTX_WRITE and a[S.F_CTX_WRITE_NEW_HI] == target[S.F_CTX_WRITE_NEW_HI] ^ 0x100
    text = run_cli("diff", model, changed).stdout
    assert f"B {target[S.I_SEQ]:>7}" in text


def test_a_damaged_real_code_trace_is_compared_on_its_readable_part(tmp_path, run_cli):
    real = _as_real_code(DIRECT, tmp_path / "real.vtdt", chunk_events=16)
    data = real.read_bytes()
    real.write_bytes(data[:len(data) // 2])
    model = tmp_path / "model.vtdt"
    model.write_bytes(DIRECT.read_bytes())
    r = run_cli("diff", model, real)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "B is damaged" in r.stdout and "compared: real code against a model" in r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) == 1


def test_positions_of_findings_fall_inside_the_projection():
    p = Projector()
    f = S.FUNC_CODE[""]
    p.feed([[S.K_OP_BEGIN, 1, 0, 0, f, "", "boot", None, None, None],
            [S.K_LOCK, 2, 0, 0, f, "", "pcidevs_lock", None],
            [S.K_OP_END, 3, 0, 0, f, "", 0],
            [S.K_LOCK, 4, 0, 0, f, "", "pcidevs_lock", None]])
    assert p.seq_map == [1, 3]
    assert [p.position(s) for s in (1, 2, 3, 4, 99)] == [1, 2, 2, 2, 2]


def test_only_the_left_out_kinds_are_dropped():
    """Every kind but calls, locks, page-table allocations, logs and the
    model's rollback brackets is kept -- a kind added later is kept too."""
    left_out = {"call", "return", "lock", "unlock", "lock-wait", "pt-alloc", "pt-free", "log",
                "rollback-begin", "rollback-end"}
    f = S.FUNC_CODE[""]
    events = [[k.code, i, 0, 0, f, "L", *([0] * len(k.fields))] for i, k in enumerate(S.KINDS, 1)]
    for ev in events:       # DID stores that change something (normalisation 3 drops the others)
        if ev[S.I_KIND] == S.K_DID_MAP:
            ev[S.F_DID_MAP_NEW] = 1
        elif ev[S.I_KIND] == S.K_DID_BITMAP:
            ev[S.F_DID_BITMAP_VALUE] = 1
    kept, n = project(events)
    assert {S.KINDS[e[S.I_KIND]].name for e in kept} == {k.name for k in S.KINDS} - left_out
    assert all(e[S.I_LABEL] == "" and e[S.I_FUNC] == f for e in kept) and n.events == len(S.KINDS)
