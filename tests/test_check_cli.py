"""`vtdtrace check` as a subprocess: golden text/JSON for shipped traces, the
docs/CLI.md#check-json contract, --kind, and the exit codes (0 no hazard, 1 hazard,
2 usage / not a trace, 3 damaged -- after reporting the readable part's
findings, and winning over 1).

Regenerate the golden files after an intended change with
``VTDTRACE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_check_cli.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replay.hazards import KINDS, findings_for_events

REPO = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden" / "check"
UPDATE = os.environ.get("VTDTRACE_UPDATE_GOLDEN") == "1"

FIELDS = ["kind", "severity", "device", "rid", "iommu", "start", "end", "open_at_end", "start_label",
          "end_label", "detail"]

GOLDENS = [
    # (golden file, args, exit code)
    ("s1-usb-rmrr.legacy.txt", ["traces/s1-usb-rmrr.legacy.vtdt"], 1),
    ("s1-usb-rmrr.legacy.json", ["traces/s1-usb-rmrr.legacy.vtdt", "--json"], 1),
    ("s1-usb-rmrr.direct.json", ["traces/s1-usb-rmrr.direct.vtdt", "--json"], 0),
    ("s1-usb-rmrr.direct-nocx16.txt", ["traces/s1-usb-rmrr.direct-nocx16.vtdt"], 1),
    ("s1-usb-rmrr.direct-nocx16.json", ["traces/s1-usb-rmrr.direct-nocx16.vtdt", "--json"], 1),
    ("s1-usb-rmrr.direct-nocx16.kinds.json",
     ["traces/s1-usb-rmrr.direct-nocx16.vtdt", "--json", "--kind", "foreign-iotlb", "--kind", "stale-context"], 1),
    ("s1-usb-rmrr.direct-nocx16.summary.txt", ["traces/s1-usb-rmrr.direct-nocx16.vtdt", "--summary"], 1),
    ("s1-usb-rmrr.direct-nocx16.warning.txt",
     ["traces/s1-usb-rmrr.direct-nocx16.vtdt", "--severity", "warning"], 1),
    ("s1-usb-rmrr.direct-nocx16.hazard.json",
     ["traces/s1-usb-rmrr.direct-nocx16.vtdt", "--json", "--severity", "hazard"], 1),
    ("s6-enomem.legacy.txt", ["traces/s6-enomem.legacy.vtdt"], 1),
    ("s6-enomem.direct.txt", ["traces/s6-enomem.direct.vtdt"], 0),
    ("s7-phantom-quarantine.direct.json", ["traces/s7-phantom-quarantine.direct.vtdt", "--json"], 1),
    ("s8-two-legacy-behind-bridge.direct.txt", ["traces/s8-two-legacy-behind-bridge.direct.vtdt"], 1),
]


@pytest.fixture
def run_cli(tmp_path):
    """`python -m vtdtrace ARGS` run in a private copy of traces/ (check reads
    and writes the sidecar beside a trace: no test may leave one in the
    repository, nor read one an earlier test left)."""
    shutil.copytree(REPO / "traces", tmp_path / "traces")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=tmp_path,
                              capture_output=True, text=True, env=env)

    return run


@pytest.mark.parametrize("golden,args,code", GOLDENS, ids=[g[0] for g in GOLDENS])
def test_golden_output(run_cli, golden, args, code):
    r = run_cli("check", *args)
    assert r.returncode == code, r.stderr
    assert r.stderr == ""
    path = GOLDEN / golden
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(r.stdout)
    assert path.exists(), f"missing golden {path}; run with VTDTRACE_UPDATE_GOLDEN=1"
    assert r.stdout == path.read_text()


def test_json_contract(run_cli):
    r = run_cli("check", "traces/s1-usb-rmrr.direct-nocx16.vtdt", "--json")
    doc = json.loads(r.stdout)
    assert list(doc) == ["shape_version", "trace", "engine", "events", "complete", "findings", "counts"]
    assert doc["shape_version"] == 2
    assert doc["trace"] == "traces/s1-usb-rmrr.direct-nocx16.vtdt"
    assert doc["engine"]["name"] == "direct" and doc["engine"]["cx16"] is False
    assert doc["complete"] is True and doc["events"] > 0
    assert list(doc["counts"]) == list(KINDS)
    assert sum(doc["counts"].values()) == len(doc["findings"])
    keys = []
    for f in doc["findings"]:
        assert list(f) == FIELDS
        assert f["open_at_end"] == (f["end"] is None)
        assert f["severity"] in ("benign", "warning", "hazard")
        assert f["kind"] in KINDS
        keys.append((f["start"], f["kind"], f["iommu"], f["rid"]))
    assert keys == sorted(keys)
    assert r.stdout.endswith("\n") and r.stdout.count("\n") == 1


def test_kind_filter_changes_the_exit_code(run_cli):
    # S1 legacy: the rmrr-disconnects are the hazards; the stale windows are benign
    assert run_cli("check", "traces/s1-usb-rmrr.legacy.vtdt").returncode == 1
    r = run_cli("check", "traces/s1-usb-rmrr.legacy.vtdt", "--kind", "stale-context,stale-iotlb", "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert {f["kind"] for f in doc["findings"]} == {"stale-context", "stale-iotlb"}
    assert doc["counts"]["rmrr-disconnect"] == 0 and doc["counts"]["stale-context"] == 2
    r = run_cli("check", "traces/s1-usb-rmrr.legacy.vtdt", "--kind", "rmrr-disconnect")
    assert r.returncode == 1 and "stale-context" not in r.stdout


def test_warnings_alone_exit_0(run_cli):
    # S3 without cx16: the best-effort window has no victim (MAP_SINGLE_DEVICE)
    r = run_cli("check", "traces/s3-igd-own-drhd.direct-nocx16.vtdt", "--json")
    doc = json.loads(r.stdout)
    assert {f["severity"] for f in doc["findings"]} == {"warning", "benign"}
    assert r.returncode == 0


@pytest.mark.parametrize("args,message", [
    (["does-not-exist.vtdt"], "does-not-exist.vtdt"),
    (["traces/s1-usb-rmrr.toml"], "not a vtdtrace trace"),
    (["traces/s1-usb-rmrr.legacy.vtdt", "--kind", "nonsense"], "unknown finding kind 'nonsense'"),
    (["traces/s1-usb-rmrr.legacy.vtdt", "--kind", ","], "--kind needs a finding kind"),
    ([], "the following arguments are required"),
])
def test_usage_and_not_a_trace_exit_2(run_cli, args, message):
    r = run_cli("check", *args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def _multi_chunk_trace(tmp_path, scenario="s1-usb-rmrr", variant="legacy", chunk=50):
    """A trace of a shipped scenario written in small chunks, and its events."""
    from tracer.record import make_header, record
    from tracer.recorder import ListSink
    from tracer.scenario import load_scenario
    from tracer.writer import TraceWriter

    platform = load_scenario(scenario)
    sink = ListSink()
    record(platform, variant, sink)
    header = make_header(platform, variant)
    path = tmp_path / f"{scenario}.{variant}.vtdt"
    with TraceWriter(path, header, chunk_events=chunk) as w:
        for ev in sink.events:
            w.append(ev)
    return path, header, sink.events


def _chunk_offsets(path):
    from replay.reader import open_trace
    with open_trace(path) as t:
        return [off for off, _, _ in t.chunks]


def test_truncated_trace_reports_its_readable_prefix_and_exits_3(tmp_path, run_cli):
    path, header, events = _multi_chunk_trace(tmp_path)
    offs = _chunk_offsets(path)
    # cut inside the chunk holding events 251..300: 1..250 stay readable, and they hold
    # S1 legacy's first rmrr-disconnect (a hazard), so exit 1 would apply -- 3 wins
    data = path.read_bytes()
    path.write_bytes(data[:offs[5] + 40])
    r = run_cli("check", path, "--json")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["complete"] is False and doc["events"] == 250
    want = [f.to_json() for f in findings_for_events(header, events[:250])]
    assert doc["findings"] == want
    assert any(f["severity"] == "hazard" for f in doc["findings"])
    assert r.stderr.count("\n") == 1 and "truncated" in r.stderr and "Traceback" not in r.stderr
    # text mode says the same and exits the same way
    t = run_cli("check", path)
    assert t.returncode == 3 and "damaged, readable part 250 events" in t.stdout
    assert "rmrr-disconnect" in t.stdout


def test_corrupt_chunk_exits_3_with_the_findings_before_it(tmp_path, run_cli):
    path, header, events = _multi_chunk_trace(tmp_path)
    offs = _chunk_offsets(path)
    data = bytearray(path.read_bytes())
    data[offs[3] + 100] ^= 0x40          # a payload byte of the chunk holding 151..200
    path.write_bytes(bytes(data))
    r = run_cli("check", path, "--json")
    assert r.returncode == 3
    doc = json.loads(r.stdout)
    assert doc["events"] == 150 and doc["complete"] is False
    assert doc["findings"] == [f.to_json() for f in findings_for_events(header, events[:150])]
    assert "corrupt" in r.stderr


def test_complete_multi_chunk_trace_equals_the_in_memory_analysis(tmp_path, run_cli):
    path, header, events = _multi_chunk_trace(tmp_path, "s7-phantom-quarantine", "legacy", chunk=7)
    r = run_cli("check", path, "--json")
    doc = json.loads(r.stdout)
    assert doc["complete"] is True and doc["events"] == len(events)
    assert doc["findings"] == [f.to_json() for f in findings_for_events(header, events)]
    assert r.returncode == 1


def test_empty_trace_has_no_findings(tmp_path, run_cli):
    from tracer.writer import TraceWriter
    path = tmp_path / "empty.vtdt"
    with TraceWriter(path, {"tool": "vtdtrace", "engine": {"name": "direct"}}):
        pass
    r = run_cli("check", path, "--json")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["findings"] == [] and doc["events"] == 0 and doc["complete"] is True
