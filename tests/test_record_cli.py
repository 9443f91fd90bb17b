"""`vtdtrace record` as a user runs it: outputs, refusals, determinism, and the
shipped traces being exactly what the engine records now."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def vt(*args, cwd, env=None):
    e = dict(os.environ)
    e.pop("SOURCE_DATE_EPOCH", None)
    if env:
        e.update(env)
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], cwd=cwd, env=e,
                          capture_output=True, text=True)


def test_record_default_name_summary_and_refusal_to_overwrite(tmp_path):
    r = vt("record", "s1-usb-rmrr", "--engine", "direct", "--no-cx16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s1-usb-rmrr.direct-nocx16.vtdt"
    assert out.exists()
    assert "s1-usb-rmrr.direct-nocx16.vtdt" in r.stdout
    assert "return codes: op1=0, op2=0" in r.stdout
    again = vt("record", "s1-usb-rmrr", "--engine", "direct", "--no-cx16", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "exists" in again.stderr
    forced = vt("record", "s1-usb-rmrr", "--engine", "direct", "--no-cx16", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr


@pytest.mark.parametrize("engine", ["bogus"])
def test_planned_or_unknown_variant_exit_2(tmp_path, engine):
    r = vt("record", "s1-usb-rmrr", "--engine", engine, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_engine_is_required(tmp_path):
    r = vt("record", "s1-usb-rmrr", cwd=tmp_path)
    assert r.returncode == 2 and "--engine" in r.stderr


def _scenario(tmp_path, text, name="bad.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


S1 = (ROOT / "traces" / "s1-usb-rmrr.toml").read_text()


@pytest.mark.parametrize("mutate,expect", [
    (lambda t: t + "\nbogus = 1\n", "bogus"),
    (lambda t: t.replace('bdf = "0000:00:14.0"', 'bdf = "00:14.0"', 1), "expected a BDF"),
    (lambda t: t.replace('to = "guest"', 'to = "nobody"', 1), "nobody"),
    (lambda t: t.replace('type = "pcie-endpoint"', 'type = "usb"', 1), "usb"),
])
def test_bad_scenario_one_line_exit_2_no_trace(tmp_path, mutate, expect):
    p = _scenario(tmp_path, mutate(S1))
    out = tmp_path / "out.vtdt"
    r = vt("record", str(p), "--engine", "direct", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 2, r.stdout
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert "bad.toml" in r.stderr and expect in r.stderr
    assert not out.exists()


def test_missing_scenario(tmp_path):
    r = vt("record", str(tmp_path / "nope.toml"), "--engine", "direct", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_byte_identical_across_processes_and_hash_seeds(tmp_path):
    a, b = tmp_path / "a.vtdt", tmp_path / "b.vtdt"
    r1 = vt("record", "s5-me-wifi-phantom", "--engine", "direct", "-o", str(a), cwd=tmp_path,
            env={"PYTHONHASHSEED": "1"})
    r2 = vt("record", "s5-me-wifi-phantom", "--engine", "direct", "-o", str(b), cwd=tmp_path,
            env={"PYTHONHASHSEED": "4242"})
    assert r1.returncode == r2.returncode == 0
    assert a.read_bytes() == b.read_bytes()


def test_header_names_engine_commit_and_cx16_source(tmp_path):
    from replay.reader import open_trace
    out = tmp_path / "t.vtdt"
    assert vt("record", "s1-usb-rmrr", "--engine", "legacy", "--cx16", "-o", str(out), cwd=tmp_path).returncode == 0
    h = open_trace(str(out)).header
    assert h["engine"]["name"] == "legacy" and h["engine"]["xen_commit"] == "7bbcacec42"
    assert h["engine"]["cx16"] is True and h["engine"]["cx16_source"] == "command line"
    assert h["scenario"]["file"] == "s1-usb-rmrr.toml"
    assert str(tmp_path) not in repr(h)


def test_shipped_traces_are_what_the_engine_records_now():
    from tracer.regen import record_bytes, shipped_traces
    n = 0
    for toml, variant, cx16, path in shipped_traces(ROOT / "traces"):
        assert path.exists(), f"{path.name} missing: run `make traces`"
        assert path.read_bytes() == record_bytes(toml, variant, cx16), \
            f"{path.name} is stale: run `make traces`"
        n += 1
    from tracer.regen import COMBOS
    from tracer.scenario import list_shipped
    # legacy, direct, direct-nocx16, original, final, final-nocx16 of every shipped scenario
    assert {v for v, _ in COMBOS} >= {"legacy", "direct", "original", "final"}
    assert n == len(COMBOS) * len(list_shipped()) >= 66


def test_original_is_shipped_for_every_scenario_and_record_reproduces_it(tmp_path):
    """`original` (V0) ships as NAME.original.vtdt for every scenario; the
    command line a user types gives the same bytes; the header names the
    commit and branch."""
    from replay.reader import open_trace
    from tracer.scenario import list_shipped
    for name, _ in list_shipped():
        path = ROOT / "traces" / f"{name}.original.vtdt"
        assert path.exists(), path.name
        engine = open_trace(str(path)).header["engine"]
        assert (engine["name"], engine["xen_commit"], engine["xen_branch"]) == \
            ("original", "aafd4f1df0", "stable-4.15")
    r = vt("record", "s1-usb-rmrr", "--engine", "original", "--cx16", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "under original" in r.stdout
    assert (tmp_path / "s1-usb-rmrr.original.vtdt").read_bytes() == \
        (ROOT / "traces" / "s1-usb-rmrr.original.vtdt").read_bytes()


def test_original_never_reads_cx16():
    """aafd4f1df0's reassignment code has no cmpxchg16b path (its one
    cpu_has_cx16 is for posted interrupts): --no-cx16 changes the header's
    cx16 and nothing else, as for `legacy`."""
    from tracer.record import apply_cx16, record
    from tracer.recorder import ListSink
    from tracer.scenario import list_shipped, load_scenario
    for name, _ in list_shipped():
        streams = []
        for cx16 in (True, False):
            sink = ListSink()
            record(apply_cx16(load_scenario(name), cx16), "original", sink)
            streams.append(sink.events)
        assert streams[0] == streams[1], name


from test_scenario import CASES  # noqa: E402  (one refusal class per case)


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_refusal_class_exit_2_one_line_no_trace(tmp_path, monkeypatch, capsys, text, expected):
    from vtdtrace.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.toml").write_text(text)
    rc = main(["record", "s.toml", "--engine", "direct", "-o", "out.vtdt"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"vtdtrace: {expected}\n"
    assert not (tmp_path / "out.vtdt").exists()


@pytest.mark.parametrize("flag,suffix", [("--cx16", ""), ("--no-cx16", "-nocx16")])
def test_final_records_the_shipped_trace_byte_for_byte(tmp_path, flag, suffix):
    """`record --engine final` (V3, b3ee746000): the header names the variant, its commit and
    branch, and an explicit --cx16/--no-cx16 reproduces the shipped trace."""
    from conftest import REPO

    from replay.reader import open_trace

    r = vt("record", "s12-phantom-source-alone", "--engine", "final", flag, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / f"s12-phantom-source-alone.final{suffix}.vtdt"
    assert out.read_bytes() == (REPO / "traces" / out.name).read_bytes()
    with open_trace(str(out)) as t:
        assert {k: t.header["engine"][k] for k in ("name", "xen_commit", "xen_branch")} == \
            {"name": "final", "xen_commit": "b3ee746000", "xen_branch": "stable-4.15"}
