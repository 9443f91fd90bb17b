"""`vtdtrace info` and `vtdtrace log`: output contracts (docs/CLI.md), exit codes,
one-line errors, and the JSON conversion shared with `export --format jsonl`."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import HEADER, REPO, make_events
from hypothesis import given, settings
from hypothesis import strategies as st

from replay.jsonout import AMBIGUOUS_NAMES, ROLE_BY_KIND, ROLE_BY_NAME, EventPresenter, field_role
from replay.reader import current_schema, open_trace
from tracer import schema as S
from vtdtrace.cli import main

HEX64 = re.compile(r"^0x[0-9a-f]{16}$")


def cli(capsys, *args):
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:     # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _ev(kind, seq, *fields, op=1, func="domain_context_mapping_one", label="MO7"):
    return [S.KIND_BY_NAME[kind].code, seq, 0, op, S.FUNC_CODE[func], label, *fields]


def handmade():
    """A few events with known RIDs, domains and 64-bit values."""
    return [
        _ev("op-begin", 1, "assign", 0x00A0, 1, 0, func="", label=""),
        _ev("call", 2, [["domain", 1], ["iommu", 0], ["bus", 0], ["devfn", 0xA0]]),
        _ev("ctx-write", 3, 0, 0, 0xA0, "full", "cmpxchg16b", 0, 0, 0x0000000100007001, 0x102),
        _ev("ctx-write", 4, 1, 0, 0xA0, "lo", "write_atomic", 0, 0, 0xFFFFFFFFFFFFF001, 0),   # segment 1
        _ev("flush-context", 5, 0, "device", 1, 0x00A0, 0, True, 0),
        _ev("did-map", 6, 0, 1, S.DOMID_INVALID, 1),
        _ev("owner-move", 7, 0, 0x00A0, 0, 1, func="reassign_device_ownership"),
        _ev("lock", 8, "mapping_lock", 1),
        _ev("lock", 9, "iommu->lock", 0),
        _ev("return", 10, -12),
        _ev("pt-alloc", 11, S.DOMID_IO, 0x100001000, "quarantine"),
        _ev("op-end", 12, 0, func="", label=""),
    ]


@pytest.fixture
def trace(write_trace):
    return write_trace(handmade(), chunk_events=4)


@pytest.fixture
def big(write_trace):
    return write_trace(make_events(500, seed=2), name="big.vtdt", chunk_events=16)


# --- info ---------------------------------------------------------------------------------

def test_info_text(capsys, trace):
    code, out, err = cli(capsys, "info", trace)
    assert code == 0 and err == ""
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["trace"] == str(trace)
    assert fields["format"].startswith(f"vtdtrace {S.FORMAT_MAJOR}.{S.FORMAT_MINOR}, schema {S.SCHEMA_VERSION}")
    assert fields["engine"].startswith("direct ") and "xen_commit=d67a72c655" in fields["engine"]
    assert fields["scenario"] == "unit (unit.toml): test"
    assert fields["platform"] == "2 IOMMUs, 1 device, 0 RMRRs, 3 domains (dom0=0 hw, guest=1, dom_io=0x7ff1)"
    assert fields["events"] == f"12 (seq 1..12) in 3 chunks, {trace.stat().st_size} bytes"
    assert fields["integrity"] == "ok"


def test_info_json(capsys, trace):
    code, out, err = cli(capsys, "info", trace, "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert doc["shape_version"] == 2 and list(doc) == [
        "shape_version", "trace", "format", "schema_version", "tool", "tool_version", "engine", "scenario",
        "platform", "schedule", "created", "events", "chunks", "bytes", "complete", "integrity", "stop"]
    assert doc["events"] == 12 and doc["chunks"] == 3 and doc["complete"] is True
    assert doc["integrity"] == "ok" and doc["stop"] is None and doc["created"] is None
    assert doc["engine"] == HEADER["engine"] and doc["platform"] == HEADER["platform"]


def test_info_on_damaged_traces_prints_then_exits_3(capsys, trace, tmp_path):
    cut = tmp_path / "cut.vtdt"
    cut.write_bytes(trace.read_bytes()[:-60])
    code, out, err = cli(capsys, "info", cut)
    assert code == 3 and "integrity  truncated at byte" in out
    assert err.count("\n") == 1 and err.startswith(f"vtdtrace: {cut}: truncated at byte")
    code, out, err = cli(capsys, "info", cut, "--json")
    doc = json.loads(out)
    assert code == 3 and doc["integrity"] == "truncated" and doc["complete"] is False
    assert doc["stop"]["kind"] == "truncated" and doc["events"] == doc["stop"]["last_good_seq"]

    bad = tmp_path / "bad.vtdt"
    data = bytearray(trace.read_bytes())
    data[100] ^= 4                          # inside the header metadata
    bad.write_bytes(data)
    code, out, err = cli(capsys, "info", bad, "--json")
    doc = json.loads(out)
    assert code == 3 and doc["integrity"] == "bad-header" and doc["events"] == 0 and doc["engine"] is None
    assert err.count("\n") == 1 and "bad header at byte 0" in err


# --- log: text ------------------------------------------------------------------------------

def test_log_text_columns_are_aligned(capsys, big):
    code, out, err = cli(capsys, "log", big)
    assert code == 0 and err == ""
    lines = out.splitlines()
    head, rows = lines[0], lines[1:]
    assert head.split() == ["seq", "cpu", "op", "func", "label", "kind", "args"]
    assert len(rows) == 500
    col = {name: head.index(name) for name in ("seq", "func", "label", "kind", "args")}
    kinds = set(S.KIND_NAMES)
    for n, row in enumerate(rows, 1):
        assert row[:col["seq"] + 3].strip() == str(n)
        assert row[col["kind"]:col["args"]].strip() in kinds, row
        assert row[col["args"] - 1] == " "


def test_log_text_decodes_arguments(capsys, trace):
    code, out, _ = cli(capsys, "log", trace)
    rows = out.splitlines()[1:]
    assert code == 0
    assert rows[0].endswith("op-begin           verb=assign bdf=0000:00:14.0 domain=guest")
    assert "args=(domain=guest, iommu=0, bus=00, devfn=14.0)" in rows[1]
    assert ("iommu=0 bdf=0000:00:14.0 half=full method=cmpxchg16b old_lo=0x0000000000000000 "
            "old_hi=0x0000000000000000 new_lo=0x0000000100007001 new_hi=0x0000000000000102") in rows[2]
    assert "iommu=1 bdf=0001:00:14.0 half=lo" in rows[3] and "new_lo=0xfffffffffffff001" in rows[3]
    assert "sid=0000:00:14.0" in rows[4]
    assert rows[5].endswith("did-map            iommu=0 did=1 old=DOMID_INVALID new=guest")
    assert rows[6].endswith("bdf=0000:00:14.0 old=dom0 new=guest")
    assert rows[7].endswith("lock=mapping_lock target=guest") and rows[8].endswith("lock=iommu->lock target=0")
    assert rows[9].endswith("rc=-ENOMEM")
    assert rows[10].endswith("domain=dom_io maddr=0x0000000100001000 what=quarantine")


# --- log: JSON lines --------------------------------------------------------------------------

def test_log_jsonl_schema_names_hex_and_domain_names(capsys, trace):
    code, out, err = cli(capsys, "log", trace, "--jsonl")
    assert code == 0 and err == ""
    objs = [json.loads(line) for line in out.splitlines()]
    assert len(objs) == 12
    for obj, ev in zip(objs, handmade()):
        kind = S.KINDS[ev[0]]
        # shape 2: a requester ID is one "SSSS:BB:DD.F" string (seg/bus/devfn merged into bdf)
        merged = [f for f in kind.fields if f not in ("seg", "devfn")]
        merged = ["bdf" if f == "bus" and "devfn" in kind.fields else f for f in merged]
        assert list(obj) == ["seq", "cpu", "op", "func", "label", "kind", *merged]
        assert obj["seq"] == ev[1] and obj["kind"] == kind.name
    assert objs[0] == {"seq": 1, "cpu": 0, "op": 1, "func": "", "label": "", "kind": "op-begin",
                       "verb": "assign", "bdf": "0000:00:14.0", "domain": "guest"}
    assert objs[1]["args"] == [["domain", "guest"], ["iommu", 0], ["bdf", "0000:00:14.0"]]
    assert objs[2]["new_lo"] == "0x0000000100007001" and objs[2]["bdf"] == "0000:00:14.0"
    assert all(HEX64.match(objs[2][f]) for f in ("old_lo", "old_hi", "new_lo", "new_hi"))
    assert objs[5]["old"] is None and objs[5]["new"] == "guest"          # DOMID_INVALID -> null
    assert (objs[6]["old"], objs[6]["new"]) == ("dom0", "guest")
    assert objs[7]["target"] == "guest" and objs[8]["target"] == 0
    assert objs[10]["domain"] == "dom_io" and objs[10]["maddr"] == "0x0000000100001000"


def test_jsonl_bytes_are_the_shared_presenter_output(capsys, big):
    """`export --format jsonl` must write the same bytes: both use EventPresenter.json_line."""
    code, out, _ = cli(capsys, "log", big, "--jsonl")
    with open_trace(big) as t:
        pres = EventPresenter(t.schema, t.header)
        expected = "".join(pres.json_line(ev) + "\n" for ev in t.events())
    assert code == 0 and out == expected
    assert out.isascii()


def test_presenter_output_is_the_same_for_tuple_events(trace):
    with open_trace(trace) as lists, open_trace(trace, tuples=True) as tuples:
        pres = EventPresenter(lists.schema, lists.header)
        for a, b in zip(lists.events(), tuples.events(), strict=True):
            assert type(b) is tuple
            assert pres.json_line(a) == pres.json_line(b) and pres.text_args(a) == pres.text_args(b)


def test_every_schema_field_has_an_explicit_role():
    """A new field (or a new kind reusing an ambiguous name) must be classified
    in replay/jsonout.py, or JSON output would silently show raw numbers."""
    for kind in S.KINDS:
        for f in kind.fields:
            if f in AMBIGUOUS_NAMES:
                assert (kind.name, f) in ROLE_BY_KIND, (kind.name, f)
            else:
                assert f in ROLE_BY_NAME, (kind.name, f)
    assert field_role("root-write", "old") == "u64" and field_role("did-map", "old") == "domain"


def test_presenter_survives_malformed_events():
    pres = EventPresenter(current_schema(), {"platform": "not a map"})
    odd = [[999, 1, 0, 0, 0, ""], "text", [S.K_LOG, 2, 0, 0, 10**9, b"\xff", "info", "x", "surplus"],
           [S.K_CTX_WRITE, 3, 0, 0, 0, "", None, "bus", 1.5, b"\x00", float("nan"), -1, 2**70, {b"k": 1}, None]]
    for ev in odd:
        json.loads(pres.json_line(ev))
        assert isinstance(pres.text_args(ev), str)
    assert json.loads(pres.json_line(odd[2]))["extra"] == ["surplus"]


# --- log: selection ---------------------------------------------------------------------------

def _seqs(out):
    return [json.loads(line)["seq"] for line in out.splitlines()]


def test_from_to_are_inclusive_and_seek(capsys, big):
    assert _seqs(cli(capsys, "log", big, "--jsonl", "--from", 17, "--to", 33)[1]) == list(range(17, 34))
    assert _seqs(cli(capsys, "log", big, "--jsonl", "--from", 498)[1]) == [498, 499, 500]
    assert _seqs(cli(capsys, "log", big, "--jsonl", "--to", 2)[1]) == [1, 2]
    code, out, err = cli(capsys, "log", big, "--jsonl", "--from", 600)     # past the end: as show --at
    assert (code, out, err.count("\n")) == (2, "", 1) and "--from 600 is beyond the end" in err
    code, _, err = cli(capsys, "log", big, "--from", 9, "--to", 3)
    assert code == 2 and err.count("\n") == 1
    code, _, err = cli(capsys, "log", big, "--from", 0)
    assert code == 2 and err.count("\n") == 1 and "start at 1" in err


def test_kind_filter_repeatable_and_comma_separated(capsys, big):
    code, out, _ = cli(capsys, "log", big, "--jsonl", "--kind", "ctx-write,lock", "--kind", "did-map")
    kinds = {json.loads(line)["kind"] for line in out.splitlines()}
    assert code == 0 and kinds == {"ctx-write", "lock", "did-map"}
    events = make_events(500, seed=2)
    want = [e[1] for e in events if S.KINDS[e[0]].name in kinds]
    assert _seqs(out) == want
    code, out, err = cli(capsys, "log", big, "--kind", "ctx-write,no-such-kind")
    assert code == 2 and out == "" and err.count("\n") == 1 and "unknown event kind 'no-such-kind'" in err


def test_rid_filter(capsys, trace):
    code, out, _ = cli(capsys, "log", trace, "--jsonl", "--rid", "0000:00:14.0")
    # op-begin (bdf+seg), call (bus/devfn args), ctx-write on iommu 0, flush-context sid, owner-move;
    # not the ctx-write on iommu 1, which is segment 1.
    assert code == 0 and _seqs(out) == [1, 2, 3, 5, 7]
    assert _seqs(cli(capsys, "log", trace, "--jsonl", "--rid", "0001:00:14.0")[1]) == [4]
    assert _seqs(cli(capsys, "log", trace, "--jsonl", "--rid", "0000:00:14.0", "--kind", "ctx-write")[1]) == [3]
    # BB:DD.F is accepted, segment 0 implied (Xen's notation); a bare DD.F is not a BDF
    code, short, _ = cli(capsys, "log", trace, "--jsonl", "--rid", "00:14.0")
    assert code == 0 and _seqs(short) == [1, 2, 3, 5, 7]
    code, _, err = cli(capsys, "log", trace, "--rid", "14.0")
    assert code == 2 and err.count("\n") == 1 and "--rid" in err
    # the segment of the event's IOMMU is in the JSON requester ID (shape 2)
    seg1 = json.loads(cli(capsys, "log", trace, "--jsonl", "--rid", "0001:00:14.0")[1])
    assert seg1["bdf"] == "0001:00:14.0" and "devfn" not in seg1


def test_log_on_a_damaged_trace_prints_the_readable_part_then_exits_3(capsys, big, tmp_path):
    data = bytearray(big.read_bytes())
    with open_trace(big) as t:
        off = t.chunks[3][0]
    data[off + 50] ^= 0x10
    bad = tmp_path / "bad.vtdt"
    bad.write_bytes(data)
    code, out, err = cli(capsys, "log", bad, "--jsonl")
    assert code == 3 and _seqs(out) == list(range(1, 49))
    assert err == (f"vtdtrace: {bad}: corrupt at byte {off} (chunk 3, last good seq 48): "
                   "chunk payload checksum mismatch\n")


@settings(max_examples=60)      # four CLI runs per example
@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_exit_2_or_3_and_one_line(tmp_path_factory, blob):
    """In-process, so Hypothesis can try many files: never an exception out of main()."""
    from replay.reader import MAGIC

    path = tmp_path_factory.mktemp("b") / "x.vtdt"
    for data in (blob, MAGIC + blob):
        path.write_bytes(data)
        for argv in (["info", str(path)], ["log", str(path), "--jsonl"]):
            import contextlib
            import io

            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = main(argv)
            assert code in (2, 3) and err.getvalue().count("\n") == 1, (data, argv, err.getvalue())


def test_log_into_a_closed_pipe_is_quiet(write_trace):
    # Far more output than a pipe buffers, so the writer must hit EPIPE.
    path = write_trace(make_events(5000), name="huge.vtdt", chunk_events=256)
    proc = subprocess.Popen([sys.executable, "-m", "vtdtrace", "log", str(path)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate()
    assert proc.returncode == 0 and err == b""


def test_subprocess_contract(run_cli, trace, tmp_path):
    ok = run_cli("log", trace, "--jsonl", "--kind", "ctx-write")
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 2 and ok.stderr == ""
    missing = run_cli("info", tmp_path / "nope.vtdt")
    assert missing.returncode == 2 and missing.stderr == f"vtdtrace: {tmp_path / 'nope.vtdt'}: no such file\n"
