"""`vtdtrace diff` as a user runs it (a subprocess, on private copies of the
shipped traces): rows that differ only in their step label are counted and
shown apart and can be hidden; windows both traces have with other extents
are "changed"; state values read in the text notation, never Python reprs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.fixture
def pair(tmp_path):
    def make(a, b):
        out = []
        for name in (a, b):
            dst = tmp_path / f"{name}.vtdt"
            if not dst.exists():
                shutil.copy(REPO / "traces" / f"{name}.vtdt", dst)
            out.append(dst)
        return out
    return make


def diff(*args):
    return subprocess.run([sys.executable, "-m", "vtdtrace", "diff", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True)


def test_label_only_rows_are_counted_and_shown_apart(pair):
    a, b = pair("s1-usb-rmrr.legacy", "s1-usb-rmrr.direct")
    doc = json.loads(diff(a, b, "--json").stdout)
    rows = [r for op in doc["ops"] for reg in op["regions"] for r in reg["rows"] or ()]
    label_only = [r for r in rows if r["class"] == "args" and r["fields"] == ["label"]]
    values = [r for r in rows if r["class"] == "args" and r["fields"] != ["label"]]
    s = doc["summary"]
    assert s["rows_label_only"] == len(label_only) == 117 and s["rows_args"] == len(label_only) + len(values)
    for r in label_only:            # the same values indeed, only the labels differ
        ea, eb = dict(r["a"]), dict(r["b"])
        assert ea.pop("label") != eb.pop("label") and ea.pop("seq") and eb.pop("seq")
        assert ea == eb or {k for k in ea if ea[k] != eb.get(k)} <= {"op", "cpu"}
    for op in doc["ops"]:
        for reg in op["regions"]:
            assert reg["label_only"] == sum(1 for r in reg["rows"] if r["class"] == "args" and r["fields"] == ["label"])

    r = diff(a, b)
    assert r.returncode == 1
    assert (f"({len(values)} changed, 117 only in step labels, {s['rows_only_a']} only in A, "
            f"{s['rows_only_b']} only in B)") in r.stdout
    eq = [ln for ln in r.stdout.splitlines() if ln.startswith("      = ")]
    tilde = [ln for ln in r.stdout.splitlines() if ln.startswith("      ~ ")]
    assert len(eq) == 117 and len(tilde) == len(values)
    assert all(re.match(r"      = A +\d+  B \d+ +\w+/\w+ ", ln) for ln in eq)
    assert not any(ln.endswith("[label]") for ln in tilde)

    h = diff(a, b, "--hide-label-only")
    assert h.returncode == 1                     # still a difference
    lines = h.stdout.splitlines()
    assert not any(ln.startswith("      = ") for ln in lines)
    assert [ln for ln in lines if ln.startswith("      ~ ")] == tilde
    assert [ln for ln in lines if ln.startswith("result:")] == [ln for ln in r.stdout.splitlines()
                                                                 if ln.startswith("result:")]
    hidden = sum(int(m.group(1)) for m in re.finditer(r"\((\d+) rows? differing only in step labels not shown\)",
                                                      h.stdout))
    assert hidden == 117


def test_windows_both_traces_have_with_other_extents_are_changed(pair):
    a, b = pair("s1-usb-rmrr.legacy", "s1-usb-rmrr.direct")
    hd = json.loads(diff(a, b, "--json").stdout)["hazard_delta"]
    assert [f["kind"] for f in hd["only_a"]] == ["rmrr-disconnect", "rmrr-disconnect"]
    assert hd["only_b"] == []
    assert len(hd["changed"]) == 4
    for c in hd["changed"]:
        fa, fb = c["a"], c["b"]
        assert fa["kind"] == fb["kind"] in ("stale-context", "stale-iotlb")
        assert fa["severity"] == fb["severity"] == "benign" and fa["device"] == fb["device"] == "0000:00:14.0"
        assert (fa["start_label"], fb["start_label"]) == ("UO3", "MO7")
    text = diff(a, b).stdout
    block = text[text.index("hazard delta"):].splitlines()
    assert "  only in A: 2" in block and "  only in B: none" in block
    assert "  changed (both traces, another extent): 4" in block
    assert "    stale-context 0000:00:14.0 (benign): A [200, 206) UO3 -> UO5 | B [195, 200) MO7 -> MO9" in block


def test_a_hazard_is_never_paired_with_a_milder_window():
    """Severity is part of the key: a benign window in A and a hazard in B of
    the same kind and device stay one "only in A" and one "only in B"."""
    from replay.diff.hazard_pairs import pair_changed
    from replay.diff.report import HazardDelta

    def h(side, sev, start, label):
        return HazardDelta(side, {"kind": "foreign-iotlb", "severity": sev, "device": "0000:00:14.0",
                                  "rid": "0000:00:14.0", "iommu": 0, "start": start, "start_label": label}, start, 1)

    rest, changed = pair_changed([h("a", "benign", 10, "UO3"), h("b", "hazard", 12, "MO7")])
    assert changed == [] and [x.side for x in rest] == ["a", "b"]
    rest, changed = pair_changed([h("a", "hazard", 10, "UO3"), h("b", "hazard", 12, "MO7"),
                                  h("b", "hazard", 30, "MO7")])
    assert [(c.a.finding["start"], c.b.finding["start"]) for c in changed] == [(10, 12)]
    assert [x.finding["start"] for x in rest] == [30]
    other_op = HazardDelta("b", dict(rest[0].finding), 30, 2)
    assert pair_changed([h("a", "hazard", 10, "UO3"), other_op])[1] == []


def test_state_values_read_in_the_text_notation():
    """What `diff` and the diff view's lower pane print for a state change
    (replay.diff.text.change_text): yes/no and -, never True/False/None."""
    from replay.diff.text import change_text

    c = {"section": "caches", "iommu": 0,
         "a": {"context": [{"rid": "0000:00:14.0", "values": [{"present": True, "did": 0, "did_owner": "dom0",
                                                               "pt_owner": None, "lo": "0x0000000100007001"}]}],
               "in_use": False},
         "b": {"context": [], "in_use": True}}
    text = change_text(c)
    assert text == ("caches of iommu 0: A context=[rid=0000:00:14.0 values=[present=yes did=0 did_owner=dom0 "
                    "pt_owner=- lo=0x0000000100007001]] in_use=no | B context=[] in_use=yes")
    assert not re.search(r"True|False|None|'", text)


def test_the_diff_views_lower_pane_prints_no_python_reprs(pair):
    """Every row of legacy against direct no-cx16 (the RMRR window, the
    mismatch window, their caches): the lower pane's text, at any row, has
    no True/False/None and no quoted Python strings."""
    from replay.diff import diff_files
    from tui.diff_detail import detail_lines
    from tui.diff_model import DiffModel
    from tui.model import TraceModel

    a, b = pair("s1-usb-rmrr.legacy", "s1-usb-rmrr.direct-nocx16")
    dm = DiffModel(TraceModel(a), TraceModel(b))
    try:
        dm.attach(diff_files(a, b))
        seen_state = False
        for row in range(dm.n_rows):
            dm.move_row(row)
            text = "\n".join("".join(t for t, _ in parts) for parts, _ in detail_lines(dm, 200))
            seen_state |= "present=" in text
            assert not re.search(r"\b(True|False|None)\b|'[^']*'(?!s)", text.replace("dom0's", "").replace(
                "guest's", "")), (row, text)
        assert seen_state          # state differences were printed, so their notation was checked
    finally:
        for m in dm.models.values():
            m.close()


def test_diff_into_a_closed_pipe_is_quiet(pair, monkeypatch, capsys):
    """`vtdtrace diff A B | head`: the write that finds the reader gone is
    answered by the command boundary (vtdtrace.cli), exit 0, nothing on
    stderr.  (In-process: a pipe closed by a subprocess's reader does not
    reliably fail the writer on every kernel this suite runs on.)"""
    import io

    from vtdtrace.cli import main

    class ClosedPipe(io.StringIO):
        def write(self, s):
            raise BrokenPipeError(32, "Broken pipe")

    a, b = pair("s1-usb-rmrr.direct", "s3-igd-own-drhd.direct")
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["diff", str(a), str(b)]) == 0
    assert capsys.readouterr().err == ""
def test_direct_against_final_s7_did_dangling_only_in_a(pair):
    """The end of the XSA-400 series closes D3 for dom_io: diffing S7 under `direct` and under
    `final` reports the phantom's did-dangling as only in A, nothing of the kind in B, and the
    first divergence is boot's shared quarantine tree, which `final` no longer builds."""
    a, b = pair("s7-phantom-quarantine.direct", "s7-phantom-quarantine.final")
    r = diff(a, b)
    assert r.returncode == 1 and r.stderr == ""
    text = r.stdout
    only_a = text[text.index("hazard delta"):].split("only in A:")[1].split("only in B:")[0]
    assert re.search(r"^\s+did-dangling 0000:02:00\.0 \[\d+, end\) RN4 -> open \(hazard\)", only_a, re.M)
    j = json.loads(diff("--json", a, b).stdout)
    delta = j["hazard_delta"]
    assert [(f["kind"], f["rid"]) for f in delta["only_a"] if f["kind"] == "did-dangling"] == \
        [("did-dangling", "0000:02:00.4")]
    assert not [f for f in delta["only_b"] + delta["changed"] if "did-dangling" in json.dumps(f)]
    first = j["first_divergence"]
    assert (first["class"], first["event_a"]["func"], first["event_b"]) == \
        ("only-a", "intel_iommu_quarantine_init", None)
    # B names the device's pseudo domain ID after the device
    assert "dom_io/pseudo 0x8002 (0000:02:00.0)" in json.dumps(delta["only_b"])
