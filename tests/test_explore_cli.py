"""`vtdtrace explore` as a user runs it (subprocess): the summary and its
JSON, counterexample files that `check`, `diff` and `record --schedule`
treat as ordinary traces, determinism, --max-runs, exit codes and Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from explore_scenarios import ASSIGN_DEASSIGN, TWO_ASSIGNS, write_scenario, write_xsa399_short

ROOT = Path(__file__).resolve().parent.parent
JSON_KEYS = {"scenario", "engine", "bound", "schedules", "states", "pruned", "complete", "violations"}
VIOLATION_KEYS = {"kind", "severity", "devices", "ops", "schedule", "trace"}


def vt(*args, cwd):
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def _bytes(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


NO_FIX = ("--engine", "legacy", "--no-xsa399-fix", "--preemptions", "1")


def test_json_summary_counterexamples_and_determinism(tmp_path):
    scen = write_xsa399_short(tmp_path)
    runs = []
    for out in ("a", "b"):
        r = vt("explore", scen, *NO_FIX, "-o", out, "--json", cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        runs.append(r)
        assert "schedules" in r.stderr                    # progress / elapsed: stderr only
    a, b = runs
    assert a.stdout == b.stdout                            # byte-identical summary
    assert _bytes(tmp_path / "a") == _bytes(tmp_path / "b")  # byte-identical counterexamples
    doc = json.loads(a.stdout)
    assert JSON_KEYS <= set(doc)
    assert doc["scenario"] == "xsa399-short" and doc["engine"] == "legacy" and doc["bound"] == 1
    assert doc["complete"] is True and doc["schedules"] > 1 and doc["states"] > 0
    assert "elapsed" not in a.stdout
    names = []
    for i, v in enumerate(doc["violations"], 1):
        assert VIOLATION_KEYS <= set(v)
        assert v["severity"] == "hazard" and v["preemptions"] <= 1
        assert v["trace"] == f"explore-{i:03d}-{v['kind']}.vtdt"       # relative to -o DIR
        assert all(isinstance(d, str) and d.count(":") == 2 for d in v["devices"])
        names.append(v["trace"])
    assert sorted(names) == sorted(os.listdir(tmp_path / "a"))
    # the XSA-399 race: one preemption right after the teardown's bit store
    assert [(v["kind"], v["schedule"], v["preemptions"]) for v in doc["violations"]] == [
        ("did-incoherent", "490:c1", 1), ("owner-mismatch", "490:c1", 1)]


def test_counterexample_is_an_ordinary_trace_that_record_reproduces(tmp_path):
    scen = write_xsa399_short(tmp_path)
    r = vt("explore", scen, *NO_FIX, "-o", "out", "--json", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    v = json.loads(r.stdout)["violations"][0]
    trace = tmp_path / "out" / v["trace"]
    again = vt("record", scen, "--engine", "legacy", "--no-xsa399-fix", "--schedule", v["schedule"],
               "-o", "again.vtdt", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.vtdt").read_bytes() == trace.read_bytes()
    chk = vt("check", trace, "--json", "--no-cache", cwd=tmp_path)
    assert chk.returncode == 1, chk.stderr
    found = json.loads(chk.stdout)["findings"]
    assert any(f["kind"] == v["kind"] and f["severity"] == "hazard" and f["device"] in v["devices"]
               for f in found)
    info = vt("info", trace, cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    base = vt("record", scen, "--engine", "legacy", "--no-xsa399-fix", "-o", "base.vtdt", cwd=tmp_path)
    assert base.returncode == 0, base.stderr
    d = vt("diff", "base.vtdt", trace, cwd=tmp_path)
    assert d.returncode == 1, d.stderr                      # the schedules differ
    # ... first where CPU 0's teardown would store the DID map slot and CPU 1 runs instead
    assert "first divergence" in d.stdout and "cleanup_domid_map" in d.stdout


def test_no_violation_exits_0_and_all_lists_the_baseline(tmp_path):
    scen = write_scenario(tmp_path, TWO_ASSIGNS)
    r = vt("explore", scen, "--engine", "legacy", "--preemptions", "1", "--all", "--json", "-o", "o",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["violations"] == [] and doc["complete"] is True
    # legacy's own UO3..PM5 window is the baseline's, not a violation
    assert [b["kind"] for b in doc["baseline"]] == ["rmrr-disconnect"]
    assert os.listdir(tmp_path / "o") == []
    text = vt("explore", scen, "--engine", "legacy", "--preemptions", "1", "--all", "-o", "o", cwd=tmp_path)
    assert text.returncode == 0
    assert "violations: none" in text.stdout and "baseline" in text.stdout and "rmrr-disconnect" in text.stdout
    assert f"schedules run    {doc['schedules']}" in text.stdout


def test_max_runs_gives_an_incomplete_summary(tmp_path):
    scen = write_scenario(tmp_path, ASSIGN_DEASSIGN)
    r = vt("explore", scen, "--engine", "direct", "--max-runs", "5", "--json", "-o", "o", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["schedules"] == 5 and doc["complete"] is False and doc["max_runs"] == 5
    text = vt("explore", scen, "--engine", "direct", "--max-runs", "5", "-o", "p", cwd=tmp_path)
    assert "stopped at --max-runs 5" in text.stdout


@pytest.mark.parametrize("args,needle", [
    (["nonexistent.toml", "--engine", "legacy"], "nonexistent"),
    (["SCEN", "--engine", "bogus"], "unknown engine variant"),
    (["SCEN", "--engine", "legacy", "--preemptions", "-1"], "--preemptions"),
    (["SCEN", "--engine", "legacy", "--max-runs", "0"], "--max-runs"),
    (["SCEN", "--engine", "legacy", "-o", "afile"], "not a directory"),
    (["SCEN", "--engine", "legacy", "-o", "no/such/dir"], "cannot create"),
    (["SCEN", "--engine", "legacy", "--preemptions", "two"], "invalid int"),
    (["SCEN"], "--engine"),
])
def test_usage_errors_are_one_line_exit_2(tmp_path, args, needle):
    scen = write_scenario(tmp_path, TWO_ASSIGNS)
    (tmp_path / "afile").write_text("x")
    r = vt("explore", *[str(scen) if a == "SCEN" else a for a in args], cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and needle in r.stderr and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_earlier_counterexamples_are_refused_without_force(tmp_path):
    scen = write_xsa399_short(tmp_path)
    first = vt("explore", scen, *NO_FIX, "-o", "o", cwd=tmp_path)
    assert first.returncode == 1
    before = _bytes(tmp_path / "o")
    assert before
    again = vt("explore", scen, *NO_FIX, "-o", "o", cwd=tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--force" in again.stderr
    assert _bytes(tmp_path / "o") == before
    (tmp_path / "o" / "explore-999-stale-iotlb.vtdt").write_bytes(b"left over")
    forced = vt("explore", scen, *NO_FIX, "-o", "o", "--force", cwd=tmp_path)
    assert forced.returncode == 1
    assert _bytes(tmp_path / "o") == before                 # the leftover is gone, the rest identical


def test_ctrl_c_prints_the_partial_summary_and_keeps_the_files(tmp_path):
    """SIGINT in the middle of a search (the shipped XSA-399 race without the
    fix at K = 2, ~2,500 schedules; the race's one-preemption counterexamples
    come within the first few hundred): the summary so far on stdout, exit
    130, every counterexample written so far complete and listed."""
    out = tmp_path / "o"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "vtdtrace", "explore", "s9-xsa399-race", "--engine", "legacy",
                             "--no-xsa399-fix", "-o", str(out), "--json"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait (no time limit) until the first counterexample is in place
    while proc.poll() is None and not (out.exists() and any(n.endswith(".vtdt") for n in os.listdir(out))):
        time.sleep(0.05)          # a poll interval, not a limit
    assert proc.poll() is None, "the search ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    doc = json.loads(stdout)
    assert doc["complete"] is False and doc["interrupted"] is True
    listed = [v["trace"] for v in doc["violations"] if v["trace"]]
    assert listed
    files = sorted(os.listdir(out))
    assert not [n for n in files if n.endswith(".part")]
    assert sorted(listed) == files
    for name in listed:
        chk = vt("check", out / name, "--no-cache", cwd=tmp_path)
        assert chk.returncode == 1, chk.stderr                 # complete, readable, with its hazard


def test_a_one_cpu_scenario_has_one_schedule(tmp_path):
    """Nothing to interleave: the baseline is the whole space (shipped name, no DMA)."""
    r = vt("explore", "s1-usb-rmrr", "--engine", "direct", "--json", "-o", "o", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["schedules"], doc["states"], doc["complete"], doc["violations"]) == (1, 0, True, [])
