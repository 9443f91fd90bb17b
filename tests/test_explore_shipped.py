"""`vtdtrace explore` on the two shipped concurrency scenarios, as a user runs
it: the XSA-399 race (s9-xsa399-race) and the USB controller + NIC doing DMA
while the controller is reassigned (s13-usb-nic-dma).  Whole bounded spaces
(default bound 2) where the answer is "nothing", so "0 violations" means the
search was complete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_tui_support import settle

from tui.app import VtdtraceApp


def vt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VTDTRACE_RAISE_INTERNAL"}
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def explore(tmp_path: Path, scenario: str, *opts: str, out: str = "out") -> tuple[int, dict]:
    r = vt("explore", scenario, *opts, "-o", out, "--json", cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def kinds(doc: dict) -> set[str]:
    return {v["kind"] for v in doc["violations"]}


# --- XSA-399 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ["legacy", "direct"])
def test_s9_as_shipped_has_no_violation_in_the_whole_bounded_space(tmp_path, engine):
    code, doc = explore(tmp_path, "s9-xsa399-race", "--engine", engine)
    assert code == 0 and doc["violations"] == []
    assert doc["complete"] is True and doc["bound"] == 2 and doc["schedules"] > 1000
    r = vt("explore", "s9-xsa399-race", "--engine", engine, "-o", "text", cwd=tmp_path)
    assert r.returncode == 0 and f"schedules run    {doc['schedules']}" in r.stdout


def test_s9_without_the_fix_finds_the_race_and_the_skipped_flush(tmp_path):
    # Enough runs for every one-preemption schedule that reaches the teardown.
    code, doc = explore(tmp_path, "s9-xsa399-race", "--engine", "legacy", "--no-xsa399-fix",
                        "--max-runs", "150")
    assert code == 1
    found = {v["kind"]: v for v in doc["violations"]}
    # B (guest-b's NIC 00:19.0) is handed A's DID, the slot is then reset
    # (d4), and B's later deassign finds no DID: its flushes are skipped and
    # the stale translations outlive the op.
    assert {"did-incoherent", "stale-context", "stale-iotlb"} <= set(found)
    stale = found["stale-iotlb"]
    assert stale["severity"] == "hazard" and stale["devices"] == ["0000:00:19.0"]
    assert stale["preemptions"] == 1 and stale["schedule"].endswith(":c1")
    trace = tmp_path / "out" / stale["trace"]

    # an ordinary trace: check finds the hazard, record --schedule reproduces it
    r = vt("check", str(trace), "--json", cwd=tmp_path)
    assert r.returncode == 1
    assert any(f["kind"] == "stale-iotlb" and f["severity"] == "hazard" for f in json.loads(r.stdout)["findings"])
    r = vt("record", "s9-xsa399-race", "--engine", "legacy", "--no-xsa399-fix", "--schedule", stale["schedule"],
           "-o", "again.vtdt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "again.vtdt").read_bytes() == trace.read_bytes()

    # diff against the default schedule: the first divergence is the race,
    # and on the default side it is the teardown's lock-free store
    r = vt("record", "s9-xsa399-race", "--engine", "legacy", "--no-xsa399-fix", "-o", "base.vtdt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = vt("diff", str(trace), "base.vtdt", "--json", cwd=tmp_path)
    assert r.returncode == 1
    race = json.loads(r.stdout)["first_divergence"]["race"]
    a, b = race["a"], race["b"]
    assert (b["cpu"], b["func"], b["kind"]) == (0, "cleanup_domid_map", "did-map")
    assert a["cpu"] == 1
    r = vt("diff", str(trace), "base.vtdt", cwd=tmp_path)
    assert "B runs CPU 0 cleanup_domid_map DK4 did-map" in r.stdout


async def test_s9_counterexample_opens_in_view(tmp_path):
    code, doc = explore(tmp_path, "s9-xsa399-race", "--engine", "direct", "--no-xsa399-fix", "--max-runs", "150")
    assert code == 1
    v = next(v for v in doc["violations"] if v["kind"] == "did-incoherent")
    app = VtdtraceApp(tmp_path / "out" / v["trace"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.model.findings is not None
        assert ("did-incoherent", "hazard") in {(f.kind, f.severity) for f in app.model.findings.items}
    app.model.close()


# --- DMA -----------------------------------------------------------------------------------------

def test_s13_legacy_faults_the_rmrr_dma_direct_never_does(tmp_path):
    code, doc = explore(tmp_path, "s13-usb-nic-dma", "--engine", "legacy", out="legacy")
    assert code == 1 and "dma-fault-rmrr" in kinds(doc)
    for opts in (("--cx16",), ("--no-cx16",)):
        code, doc = explore(tmp_path, "s13-usb-nic-dma", "--engine", "direct", *opts, out="direct" + opts[0])
        assert "dma-fault-rmrr" not in kinds(doc) and doc["complete"] is True


def test_s13_nocx16_lets_the_nic_reach_the_guest_through_the_iotlb_cx16_does_not(tmp_path):
    code, doc = explore(tmp_path, "s13-usb-nic-dma", "--engine", "direct", "--no-cx16", out="a")
    assert code == 1
    foreign = [v for v in doc["violations"] if v["kind"] == "dma-foreign"]
    assert foreign and foreign[0]["severity"] == "hazard"
    # the NIC's DMA took an IOTLB entry (t1) that the USB's DMA filled
    assert ":t1" in foreign[0]["schedule"] and ":d" in foreign[0]["schedule"]
    # same command twice: the same bytes, summary and counterexamples
    code2, doc2 = explore(tmp_path, "s13-usb-nic-dma", "--engine", "direct", "--no-cx16", out="b")
    assert doc2 == doc
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    r1 = vt("explore", "s13-usb-nic-dma", "--engine", "direct", "--no-cx16", "-o", "c", "--json", cwd=tmp_path)
    r2 = vt("explore", "s13-usb-nic-dma", "--engine", "direct", "--no-cx16", "-o", "c", "--json", "--force",
            cwd=tmp_path)
    assert r1.stdout == r2.stdout

    code, doc = explore(tmp_path, "s13-usb-nic-dma", "--engine", "direct", "--cx16", out="cx16")
    assert "dma-foreign" not in kinds(doc) and doc["complete"] is True


def test_workers_must_be_positive(tmp_path):
    r = vt("explore", "s9-xsa399-race", "--engine", "legacy", "--workers", "0", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--workers" in r.stderr
