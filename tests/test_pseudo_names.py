"""Per-device pseudo domain IDs (engine `final`) print with their own names, in text and JSON
(docs/CLI.md#names): `dom_io/pseudo 0x8003`, followed by the device that holds the number
wherever the replayed state says which device that is (`show`, findings); an event field names
the number only.  Run as a user runs the commands, on a private copy of a shipped trace."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from conftest import REPO

from replay.hazards import findings_for_trace

TRACE = "s12-phantom-source-alone.final.vtdt"


def _copy(tmp_path, name=TRACE):
    dst = tmp_path / name
    shutil.copy(REPO / "traces" / name, dst)
    return dst


def vt(*args):
    r = subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=REPO,
                       capture_output=True, text=True)
    assert r.stderr == "" and "Traceback" not in r.stdout
    return r


def test_show_names_the_pseudo_domain_id_and_its_device_in_text_and_json(tmp_path):
    path = _copy(tmp_path)
    doc = json.loads(vt("show", path, "--json").stdout)
    dids = {u["id"]: u["dids"] for u in doc["iommus"]}
    # 03:00.0's DID on its unit stays with its pseudo domain ID while the guest owns it
    assert dids[1]["1"] == "dom_io/pseudo 0x8003 (0000:03:00.0)"
    tables = {t["domain"]: t["table"] for t in doc["page_tables"]}
    assert tables["dom_io/pseudo 0x8003 (0000:03:00.0)"] == "quarantine"
    text = vt("show", path).stdout
    assert "1 dom_io/pseudo 0x8003 (0000:03:00.0)" in text
    assert "d32771" not in text and "d32771" not in json.dumps(doc)


def test_events_name_the_number_and_the_allocation_names_the_device(tmp_path):
    path = _copy(tmp_path)
    lines = [json.loads(ln) for ln in vt("log", path, "--jsonl").stdout.splitlines()]
    alloc = [ev for ev in lines if ev["kind"] == "pseudo-domid" and ev["bdf"] == "0000:03:00.0"]
    assert [(ev["domain"], ev["value"], ev["label"]) for ev in alloc] == [("dom_io/pseudo 0x8003", 1, "DCM2")]
    maps = [ev for ev in lines if ev["kind"] == "did-map" and ev["new"] == "dom_io/pseudo 0x8003"]
    assert [ev["label"] for ev in maps] == ["QD3"]
    text = vt("log", path).stdout
    assert "domain=dom_io/pseudo 0x8003 value=1" in text


def test_findings_name_the_device_in_text_and_json(tmp_path):
    path = _copy(tmp_path, "s7-phantom-quarantine.final.vtdt")
    res = findings_for_trace(path)
    assert any("dom_io/pseudo 0x8002 (0000:02:00.0)'s tables" in f.detail for f in res.findings)
    out = vt("show", path, "--at", str(res.findings[-1].start), "--json").stdout
    assert "dom_io/pseudo 0x8002 (0000:02:00.0)" in json.dumps(json.loads(out)["open_findings"])
