"""`vtdtrace record --engine xen-c --xen-tree PATH` as a user runs it: usage
errors and refusals are one line, the output is deterministic and named after
the tree's version, a patched tree shows up in `diff` and `check`."""

from __future__ import annotations

import json
import re

import pytest
from realc_helpers import DATA, scratch_tree, vtdtrace, xen_tree  # noqa: F401

from replay.reader import open_trace

IOMMU_C = "xen/drivers/passthrough/vtd/iommu.c"


def _one_line_error(r) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vtdtrace: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def test_xen_tree_without_engine_xen_c_is_a_usage_error(tmp_path):
    line = _one_line_error(vtdtrace("record", "s1-usb-rmrr", "--engine", "direct", "--xen-tree", str(tmp_path),
                                    cwd=tmp_path))
    assert "--xen-tree goes with --engine xen-c" in line


def test_engine_xen_c_without_a_tree_is_a_usage_error(tmp_path):
    line = _one_line_error(vtdtrace("record", "s1-usb-rmrr", "--engine", "xen-c", cwd=tmp_path))
    assert "needs --xen-tree" in line


def test_not_a_tree(tmp_path):
    line = _one_line_error(vtdtrace("record", "s1-usb-rmrr", "--engine", "xen-c", "--xen-tree", str(tmp_path),
                                    cwd=tmp_path))
    assert "not a Xen source tree" in line
    assert not list(tmp_path.glob("*.vtdt"))


def test_explore_refuses_xen_c(tmp_path):
    line = _one_line_error(vtdtrace("explore", "s1-usb-rmrr", "--engine", "xen-c", cwd=tmp_path))
    assert "explore does not run the xen-c engine" in line


@pytest.mark.parametrize("scenario,named", [
    ("s2-guest-destroy-quarantine", "op 2 `destroy`"),
    ("s5-me-wifi-phantom", "the ME WiFi quirk of 0000:03:00.0"),
    ("s9-xsa399-race", "op 3 `destroy`"),
])
def test_unsupported_features_are_refused_by_name(scenario, named, xen_tree, tmp_path):  # noqa: F811
    line = _one_line_error(vtdtrace("record", scenario, "--engine", "xen-c", "--xen-tree", str(xen_tree),
                                    cwd=tmp_path))
    assert "the xen-c engine does not support" in line and named in line
    assert not list(tmp_path.glob("*.vtdt"))


def test_no_cx16_refused_on_a_tree_without_that_path(xen_tree, tmp_path):  # noqa: F811
    """4.20 dropped the stores for CPUs without cmpxchg16b; a tree whose
    domain_context_mapping_one has no write_atomic() of the entry cannot run
    --no-cx16 (here: the 4.17.5 tree with those stores taken out)."""
    t = scratch_tree(xen_tree, tmp_path / "t")
    c = t / IOMMU_C
    c.write_text(re.sub(r"write_atomic\(&context->(lo|hi), lctxt\.(lo|hi)\);", "/* gone */", c.read_text()))
    line = _one_line_error(vtdtrace("record", str(DATA / "nic.toml"), "--engine", "xen-c", "--xen-tree", str(t),
                                    "--no-cx16", cwd=tmp_path))
    assert "--no-cx16" in line and "no path without cmpxchg16b" in line
    r = vtdtrace("record", str(DATA / "nic.toml"), "--engine", "xen-c", "--xen-tree", str(t), "--cx16",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_default_name_header_and_same_bytes(xen_tree, tmp_path):  # noqa: F811
    r = vtdtrace("record", "s1-usb-rmrr", "--engine", "xen-c", "--xen-tree", str(xen_tree), "--no-cx16",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "s1-usb-rmrr.xen-c-4.17.5-nocx16.vtdt"
    assert out.is_file() and "Xen 4.17.5" in r.stdout
    h = open_trace(out).header
    eng = h["engine"]
    assert eng["name"] == "xen-c" and eng["xen_version"] == "4.17.5" and eng["cx16"] is False
    assert len(eng["tree_digest"]) == 64 and len(eng["source_digest"]) == 64
    assert str(xen_tree) not in json.dumps(h)            # no absolute path in a trace
    again = tmp_path / "again.vtdt"
    assert vtdtrace("record", "s1-usb-rmrr", "--engine", "xen-c", "--xen-tree", str(xen_tree), "--no-cx16",
                    "-o", str(again), cwd=tmp_path).returncode == 0
    assert again.read_bytes() == out.read_bytes()
    # refuses to overwrite
    _one_line_error(vtdtrace("record", "s1-usb-rmrr", "--engine", "xen-c", "--xen-tree", str(xen_tree),
                             "--no-cx16", cwd=tmp_path))


def test_a_patched_tree_shows_in_diff_and_check(xen_tree, tmp_path):  # noqa: F811
    """The worked example of docs/REALCODE.md: a one-line change to
    domain_context_mapping_one -- flush the context cache with the new DID
    instead of the old one -- is a difference for `diff` and a hazard for
    `check`."""
    t = scratch_tree(xen_tree, tmp_path / "patched")
    c = t / IOMMU_C
    text = c.read_text()
    old = "rc = iommu_flush_context_device(iommu, prev_did, PCI_BDF(bus, devfn),"
    assert text.count(old) == 1
    c.write_text(text.replace(old, "rc = iommu_flush_context_device(iommu, context_domain_id(lctxt), "
                                   "PCI_BDF(bus, devfn),"))
    for name, tree in (("orig.vtdt", xen_tree), ("patched.vtdt", t)):
        r = vtdtrace("record", "s1-usb-rmrr", "--engine", "xen-c", "--xen-tree", str(tree), "--cx16",
                     "-o", name, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    d = vtdtrace("diff", "orig.vtdt", "patched.vtdt", cwd=tmp_path)
    assert d.returncode == 1
    assert "flush-context" in d.stdout and "[did]" in d.stdout
    # the hazard delta: the two benign windows of the original are hazards in the patched tree
    delta = json.loads(vtdtrace("diff", "--json", "orig.vtdt", "patched.vtdt", cwd=tmp_path).stdout)["hazard_delta"]
    assert [(f["kind"], f["severity"]) for f in delta["only_a"]] == [("stale-context", "benign")] * 2
    assert [(f["kind"], f["severity"]) for f in delta["only_b"]] == [("stale-context", "hazard")] * 2
    assert vtdtrace("check", "orig.vtdt", cwd=tmp_path).returncode == 0
    chk = vtdtrace("check", "patched.vtdt", cwd=tmp_path)
    assert chk.returncode == 1 and "hazard  stale-context" in chk.stdout
