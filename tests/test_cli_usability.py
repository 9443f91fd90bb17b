"""The command line on big and small traces, run as a user runs it (a
subprocess): `info` names a few domains and counts the rest (its --json has
them all); `check` opens with a one-screen summary, filters by minimum
severity and reuses the findings cached in the sidecar; a short `synth`
trace is mostly operations; the README's `record` commands reproduce the
shipped traces byte for byte."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
from conftest import HEADER, REPO, make_events


def many_domains_header(n):
    h = copy.deepcopy(HEADER)
    h["platform"]["domains"] = ([[0, "dom0", True]] + [[i, f"guest{i}", False] for i in range(1, n + 1)]
                                + [[0x7FF1, "dom_io", False]])
    return h


def test_info_summarises_thousands_of_domains(run_cli, write_trace):
    t = write_trace(make_events(20, seed=1), header=many_domains_header(4000))
    r = run_cli("info", t)
    assert r.returncode == 0 and r.stderr == ""
    platform = [line for line in r.stdout.splitlines() if line.startswith("platform ")]
    assert platform == ["platform   2 IOMMUs, 1 device, 0 RMRRs, 4002 domains (dom0=0 hw, guest1=1, guest2=2, "
                        "guest3=3, ... 3997 more, dom_io=0x7ff1; info --json lists all)"]
    assert max(len(line) for line in r.stdout.splitlines()) < 200
    doc = json.loads(run_cli("info", t, "--json").stdout)
    assert len(doc["platform"]["domains"]) == 4002
    assert doc["platform"]["domains"][-2] == [4000, "guest4000", False]


def test_info_names_every_domain_of_a_small_platform(run_cli, write_trace):
    t = write_trace(make_events(20, seed=1), header=many_domains_header(5))
    line = [ln for ln in run_cli("info", t).stdout.splitlines() if ln.startswith("platform ")][0]
    assert line.endswith("7 domains (dom0=0 hw, guest1=1, guest2=2, guest3=3, guest4=4, guest5=5, dom_io=0x7ff1)")


# --- check: summary, --severity, the cache -------------------------------------------------

RANK = {"benign": 1, "warning": 2, "hazard": 3}


@pytest.fixture
def private(tmp_path):
    """A private copy of a shipped trace (check writes its sidecar beside it)."""
    def make(name):
        dst = tmp_path / f"{name}.vtdt"
        shutil.copy(REPO / "traces" / f"{name}.vtdt", dst)
        return dst
    return make


def summary_table(text):
    """{section: {name: (hazard, warning, benign, total)}} from check's text summary."""
    table, section = {}, None
    for line in text.splitlines()[2:]:
        if not line:
            break
        if line.startswith("by kind") or line == "by device":
            section = table.setdefault(line.split()[1], {})
        elif line.startswith("  ... "):
            continue
        else:
            name, *cells = line.split()
            section[name] = tuple(map(int, cells))
    return table


@pytest.mark.parametrize("name,code", [("s1-usb-rmrr.legacy", 1), ("s1-usb-rmrr.direct-nocx16", 1),
                                       ("s3-igd-own-drhd.direct-nocx16", 0), ("s8-two-legacy-behind-bridge.direct", 1)])
def test_summary_counts_what_the_json_lists(run_cli, private, name, code):
    t = private(name)
    r = run_cli("check", t, "--no-cache")
    doc = json.loads(run_cli("check", t, "--json", "--no-cache").stdout)
    assert r.returncode == code
    table = summary_table(r.stdout)
    for section, key in (("kind", "kind"), ("device", "device")):
        want = {}
        for f in doc["findings"]:
            row = want.setdefault(f[key] or "(no device)", [0, 0, 0])
            row[("hazard", "warning", "benign").index(f["severity"])] += 1
        assert table[section] == {k: (*v, sum(v)) for k, v in want.items()}


@pytest.mark.parametrize("severity", ["hazard", "warning", "benign"])
def test_severity_is_the_least_listed_and_never_changes_the_exit_status(run_cli, private, severity):
    for name, code in (("s1-usb-rmrr.direct-nocx16", 1), ("s3-igd-own-drhd.direct-nocx16", 0)):
        t = private(name)
        every = json.loads(run_cli("check", t, "--json").stdout)["findings"]
        r = run_cli("check", t, "--json", "--severity", severity)
        assert r.returncode == code and r.stderr == ""
        doc = json.loads(r.stdout)
        assert doc["findings"] == [f for f in every if RANK[f["severity"]] >= RANK[severity]]
        assert sum(doc["counts"].values()) == len(doc["findings"])
        text = run_cli("check", t, "--severity", severity)
        assert text.returncode == code
        listed = [ln for ln in text.stdout.splitlines() if ln.startswith("  ") and ": " in ln and " seq " in ln]
        assert len(listed) == len(doc["findings"])
        assert summary_table(text.stdout) == summary_table(run_cli("check", t).stdout)   # the summary counts all


def test_severity_and_summary_text(run_cli, private):
    t = private("s1-usb-rmrr.direct-nocx16")
    r = run_cli("check", t, "--severity", "hazard")
    assert r.stdout.splitlines()[-1] == "8 findings: 2 hazard, 2 warning, 4 benign; listed: 2 of severity hazard"
    r = run_cli("check", t, "--severity", "warning")
    assert r.stdout.splitlines()[-1].endswith("; listed: 4 of severity warning or worse")
    s = run_cli("check", t, "--summary")
    assert s.returncode == 1
    assert " seq " not in s.stdout and s.stdout.splitlines()[-1].endswith("; listed: none (--summary)")
    assert run_cli("check", t, "--severity", "loud").returncode == 2


def test_the_device_rows_fit_one_screen(run_cli, write_trace):
    """Thirty devices with findings: the ten worst are named, then one line for the rest."""
    from replay.hazards import Finding
    from vtdtrace.finding_summary import MAX_DEVICES, summary_lines

    fs = [Finding(kind="stale-context", severity="benign", device=f"0000:{b:02x}:00.0", rid=None, iommu=0,
                  start=b + 1, end=b + 2, start_label="", end_label="", detail="")
          for b in range(30)]
    fs.append(Finding(kind="rmrr-disconnect", severity="hazard", device="0000:1d:00.0", rid=None, iommu=0,
                      start=1, end=None, start_label="", end_label="", detail=""))
    lines = summary_lines(fs, ("rmrr-disconnect", "stale-context"), str)
    devices = lines[lines.index("by device") + 1:]
    assert len(devices) == MAX_DEVICES + 1 and len(lines) < 24
    assert devices[0].split() == ["0000:1d:00.0", "1", "0", "1", "2"]       # the hazard first
    assert devices[-1] == "  ... 20 more devices with 20 findings"


def test_check_reuses_the_cached_findings(private, monkeypatch, capsys):
    """The second check reads the sidecar the first one wrote: with the
    analysers broken in between, it still answers, byte for byte."""
    from replay.hazards import analyse
    from replay.hazards.analyse import cached_findings
    from vtdtrace.cli import main

    t = private("s1-usb-rmrr.legacy")
    assert main(["check", str(t)]) == 1
    first = capsys.readouterr().out
    assert cached_findings(t) is not None

    class Broken:
        def __init__(self, *a, **k):
            raise AssertionError("check recomputed the findings")

    monkeypatch.setattr(analyse, "Analysis", Broken)
    assert main(["check", str(t)]) == 1
    assert capsys.readouterr().out == first
    # --no-cache computes: here, an internal error -- a traceback under the
    # test suite, one line and exit 70 for a user.
    with pytest.raises(AssertionError, match="check recomputed the findings"):
        main(["check", str(t), "--no-cache"])
    monkeypatch.delenv("VTDTRACE_RAISE_INTERNAL")
    assert main(["check", str(t), "--no-cache"]) == 70
    assert "internal error: AssertionError: check recomputed the findings" in capsys.readouterr().err


def test_check_reuses_what_the_viewer_cached(private, monkeypatch, capsys):
    """`view` (tui/loader.py) and `show` cache the findings with
    findings_for_trace(path, sidecar=True): check answers from there."""
    from replay.hazards import analyse, findings_for_trace
    from vtdtrace.cli import main

    t = private("s1-usb-rmrr.direct-nocx16")
    assert main(["check", str(t), "--no-cache"]) == 1
    want = capsys.readouterr().out
    findings_for_trace(str(t), sidecar=True)                     # what the viewer's loader does

    class Broken:
        def __init__(self, *a, **k):
            raise AssertionError("check recomputed the findings")

    monkeypatch.setattr(analyse, "Analysis", Broken)
    assert main(["check", str(t)]) == 1
    assert capsys.readouterr().out == want


def test_no_cache_neither_reads_nor_writes_the_sidecar(run_cli, private):
    from replay.sidecar import beside_path, user_cache_path

    t = private("s1-usb-rmrr.legacy")
    r = run_cli("check", t, "--no-cache")
    assert r.returncode == 1
    assert not (REPO / beside_path(t)).exists() and not (REPO / user_cache_path(t)).exists()
    assert run_cli("check", t).returncode == 1
    assert (REPO / beside_path(t)).exists()


# --- synth: the platform scales with the length ---------------------------------------------

def test_a_short_synth_trace_is_mostly_operations(run_cli, tmp_path):
    out = tmp_path / "s.vtdt"
    r = run_cli("synth", "--events", "1000", "-o", out)
    assert r.returncode == 0 and r.stderr == ""
    ops = [json.loads(line) for line in run_cli("log", out, "--jsonl", "--kind", "op-begin").stdout.splitlines()]
    assert ops[0]["verb"] == "boot" and len(ops) >= 6
    assert {op["verb"] for op in ops[1:]} >= {"assign", "deassign"}
    assert ops[1]["seq"] < 700                                   # the boot is under 70 % of the trace
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert 1000 <= info["events"] < 1100
    assert len(info["platform"]["domains"]) < 20
    assert r.stdout == f"synthesised {info['events']} events in {len(ops) - 1} ops (seed 1, direct) -> {out}\n"


def test_long_synth_traces_keep_the_full_platform():
    from tracer.record import make_header
    from tracer.synth import GUESTS, sizing, synth_platform

    for n in (10 ** 6, 10 ** 7):
        assert make_header(synth_platform(3, True, **sizing(n)), "direct") == \
            make_header(synth_platform(3, True), "direct")
    assert sizing(10 ** 6)["guests"] == GUESTS
    small, mid = synth_platform(3, True, **sizing(1000)), synth_platform(3, True, **sizing(10 ** 5))
    assert len(small.devices) < len(mid.devices) == len(synth_platform(3).devices)
    assert len(small.domains) < len(mid.domains) < len(synth_platform(3).domains)
    # every device kind the workload exercises is still there
    assert any(d.ats for d in small.devices) and any(d.phantom_stride for d in small.devices)
    assert any(d.type == "pci" for d in small.devices) and small.rmrrs == mid.rmrrs


# --- record: the README's commands reproduce the shipped traces -----------------------------

@pytest.mark.parametrize("flags,name", [
    (["--engine", "legacy", "--cx16"], "s1-usb-rmrr.legacy.vtdt"),
    (["--engine", "direct", "--cx16"], "s1-usb-rmrr.direct.vtdt"),
    (["--engine", "direct", "--no-cx16"], "s1-usb-rmrr.direct-nocx16.vtdt"),
    (["--engine", "original", "--cx16"], "s1-usb-rmrr.original.vtdt"),
])
def test_record_with_an_explicit_cx16_flag_reproduces_the_shipped_trace(tmp_path, flags, name):
    """Shipped traces are recorded with --cx16 or --no-cx16 (the header says
    `cx16_source=command line`); README and docs/CLI.md say so."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    env["PYTHONPATH"] = str(REPO)
    r = subprocess.run([sys.executable, "-m", "vtdtrace", "record", "s1-usb-rmrr", *flags], cwd=tmp_path,
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / name).read_bytes() == (REPO / "traces" / name).read_bytes()
    # without the flag, the scenario's own cx16 = true: same events, but the header names its source
    if "--cx16" in flags:
        bare = [f for f in flags if f != "--cx16"]
        r = subprocess.run([sys.executable, "-m", "vtdtrace", "record", "s1-usb-rmrr", *bare, "-o", "bare.vtdt"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
        assert r.returncode == 0 and "(cx16, scenario)" in r.stdout
        assert (tmp_path / "bare.vtdt").read_bytes() != (REPO / "traces" / name).read_bytes()
