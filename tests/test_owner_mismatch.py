"""owner-mismatch (docs/HAZARDS.md): a device whose DMA translates for
another domain than its owner.

* Property, both ways: on random scenarios under every engine variant, at
  every judged point (each top-level op-end), an independent recomputation
  from the ``show --json`` object of that step -- the owner of every DMA
  source against the DID owner and the page-table owner of the requester ID
  its DMA carries -- finds a mismatch exactly where ``check`` reports an
  owner-mismatch hazard.  The recomputation uses only the show object and the
  header's device list (replay.render's PlatformView for the DRHD unit and
  the bridge walk), not replay.hazards.
* s10 on the command line: `check` exits 1 for direct and names the breach;
  `diff` of s10 legacy vs direct carries it in the hazard delta.
* The TUI: ]/[ reach it, the timeline marks it, the findings pane lists it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO
from hypothesis import given
from test_hazards_property import SETTINGS, _recordings, scenarios
from test_tui_support import screen_text, settle, trace_copy

from replay.hazards import findings_for_events, findings_for_trace
from replay.render import PlatformView, show_dict
from replay.state import apply, initial_state
from tracer import schema as S

# me_wifi_quirk's ILK/CPT branch as the random platforms use it: host bridge 8086:0104,
# the ME at 0:22.0, WLAN ids of that branch (vtd/quirks.c)
ME_HOSTS = {0x0104}
ME_WLAN = {0x0087, 0x0089, 0x0082, 0x0085, 0x008F, 0x0090, 0x0091, 0x4238, 0x422B, 0x422C}


def _wire_sources(header, view: PlatformView):
    """[(device bdf, iommu, wire rid string)] for every DMA source the header declares."""
    devs = {d["bdf"]: d for d in header["platform"]["devices"]}
    host = devs.get("0000:00:00.0", {}).get("id", "")
    me_on = host.lower() == "8086:0104" and "0000:00:16.0" in devs
    out = []
    for d in view.devices:
        if d["type"] not in ("pcie-endpoint", "pci"):
            continue
        seg, bus, devfn = d["loc"]
        u = view.drhd(seg, bus, devfn)
        if u is None:
            continue
        wire = (bus, devfn)
        if d["type"] == "pci":
            top, secbus = view._upstream(seg, bus)
            if top is not None:
                wire = (secbus, 0) if top["type"] == "pcie2pci-bridge" else top["loc"][1:]
        out.append((d["bdf"], u, view.rid(u, *wire)))
        stride = d["phantom_stride"]
        if stride:
            fn = devfn + stride
            while fn >> 3 == devfn >> 3:
                out.append((d["bdf"], u, view.rid(u, bus, fn)))
                fn += stride
        did = int(devs[d["bdf"]].get("id", "0:0").split(":")[1], 16)
        if me_on and seg == 0 and devs[d["bdf"]].get("id", "").lower().startswith("8086:") and did in ME_WLAN:
            mu = view.drhd(0, 0, 22 << 3)
            out.append((d["bdf"], mu, view.rid(mu, 0, (22 << 3) | 7)))
    return out


def mismatches(show: dict, sources, hwdom: str) -> set:
    """{(device, wire rid)} whose DMA reaches another domain's memory, or that share
    their wire requester ID with a device of another owner without their own entry."""
    owner = {d["bdf"]: d["owner"] for d in show["devices"]}
    rows = {}
    for u in show["iommus"]:
        for e in u["context"]:
            rows[(u["id"], e["rid"])] = (e, u["dids"])
    out = set()
    for bdf, u, rid in sources:
        o = owner.get(bdf)
        if o is None:
            continue
        split = any(b != bdf and owner.get(b) not in (None, o) for b, uu, r in sources if (uu, r) == (u, rid))
        e, dids = rows.get((u, rid), (None, {}))
        present = e is not None and e["present"]
        if present:
            did_owner = dids.get(str(e["did"]))             # None: the DID's bit is clear
            if e["tt"] == 2:                                # pass-through: the hardware domain's
                ok = o == hwdom and did_owner == hwdom
            elif o == "dom_io" and did_owner == e["pt_owner"] and str(did_owner).startswith("dom_io/pseudo "):
                ok = True                                   # engine final: a device's own quarantine tables
            else:
                ok = did_owner == o and e["pt_owner"] == o
            if not ok:
                out.add((bdf, rid))
        elif split:
            out.add((bdf, rid))
    return out


def _hazards_at(findings, t) -> set:
    return {(f.device, f.rid) for f in findings
            if f.kind == "owner-mismatch" and f.severity == "hazard" and f.holds_at(t)}


def check_against_show(header, events, findings) -> int:
    view = PlatformView(header)
    sources = _wire_sources(header, view)
    hwdom = view.domain_name(view.hardware)
    st_ = initial_state(header)
    judged = 0
    for ev in events:
        apply(st_, ev)
        if ev[0] == S.K_OP_END:
            show = show_dict(st_, view)
            assert mismatches(show, sources, hwdom) == _hazards_at(findings, ev[1]), ev[1]
            judged += 1
    return judged


@SETTINGS
@given(scenarios())
def test_check_reports_an_owner_mismatch_hazard_exactly_where_show_has_one(text):
    for name, header, events in _recordings(text):
        findings = findings_for_events(header, events)
        assert check_against_show(header, events, findings) >= 1, name


def test_every_shipped_trace_agrees_with_show():
    for path in sorted((REPO / "traces").glob("*.vtdt")):
        from replay.reader import open_trace
        with open_trace(path) as t:
            events = [ev for chunk in t.iter_chunks() for ev in chunk]
            header = t.header
        res = findings_for_trace(path)
        assert check_against_show(header, events, res.findings) >= 1, path.name


# Paths the shipped traces do not take: a failed assign that leaves the shared aliases cleared
# while the devices behind the bridge belong to different domains (split, entry not present);
# the second device given first; one of them quarantined.
S10_PLUS = [
    '[[fault]]\nat = "pgd-alloc"\ndomain = "guest"\nnth = 1\n',
    '[[op]]\ndo = "quarantine"\ndevice = "0000:05:02.0"\n',
    '[[op]]\ndo = "deassign"\ndevice = "0000:05:01.0"\n',
]


def test_s10_variations_agree_with_show():
    from tracer.scenario import resolve
    text = resolve("s10-alias-rid-split")[0].read_text()
    seen = set()
    for extra in S10_PLUS:
        for name, header, events in _recordings(text + "\n" + extra):
            findings = findings_for_events(header, events)
            assert check_against_show(header, events, findings) >= 1, (name, extra)
            seen.update((f.severity, "split" if "assigned together" in f.detail else "", "not present" in f.detail)
                        for f in findings if f.kind == "owner-mismatch")
    # the split rule is exercised with a non-present wire entry too
    assert ("hazard", "split", True) in seen


# --- s10 on the command line --------------------------------------------------------------

@pytest.fixture
def s10_copy(tmp_path):
    """A folder holding traces/s10-* copies: commands may write their cache there."""
    (tmp_path / "traces").mkdir()
    for p in (REPO / "traces").glob("s10-alias-rid-split.*.vtdt"):
        shutil.copyfile(p, tmp_path / "traces" / p.name)
    return tmp_path


def vt(cwd, *args):
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], cwd=cwd, capture_output=True,
                          text=True, env=env)


def test_check_s10_direct_names_the_guest_device_dmaing_into_dom0(s10_copy):
    r = vt(s10_copy, "check", "traces/s10-alias-rid-split.direct.vtdt", "--kind", "owner-mismatch", "--json")
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    open_hz = [f for f in doc["findings"] if f["severity"] == "hazard" and f["open_at_end"]]
    assert [(f["device"], f["rid"]) for f in open_hz] == [("0000:05:01.0", "0000:05:00.0")]
    d = open_hz[0]["detail"]
    assert "owned by guest" in d and "reaches dom0's memory" in d and "assigned together" in d
    assert d.count("\n") == 0
    # the orphan entry of the P5 rollback, charged to the op's device
    orphan = [f for f in doc["findings"] if f["rid"] == "0000:05:1e.0"]
    assert [(f["severity"], f["device"], f["open_at_end"]) for f in orphan] == [("warning", "0000:05:02.0", True)]
    # legacy ends consistent: every owner-mismatch window is closed
    r = vt(s10_copy, "check", "traces/s10-alias-rid-split.legacy.vtdt", "--kind", "owner-mismatch", "--json")
    assert all(not f["open_at_end"] for f in json.loads(r.stdout)["findings"])


def test_diff_s10_legacy_vs_direct_carries_the_breach_in_the_hazard_delta(s10_copy):
    legacy, direct = "traces/s10-alias-rid-split.legacy.vtdt", "traces/s10-alias-rid-split.direct.vtdt"
    r = vt(s10_copy, "diff", legacy, direct, "--json")
    assert r.returncode == 1, r.stderr
    hd = json.loads(r.stdout)["hazard_delta"]
    only_b = [(f["kind"], f["severity"], f["device"], f["rid"], f["open_at_end"]) for f in hd["only_b"]
              if f["kind"] == "owner-mismatch"]
    assert ("owner-mismatch", "hazard", "0000:05:01.0", "0000:05:00.0", True) in only_b
    # the split after op 1 is in both, only its end differs (RO8 vs MO7): "changed", not one-sided
    changed = [(c["a"]["kind"], c["a"]["device"], c["a"]["rid"], c["a"]["end_label"], c["b"]["end_label"])
               for c in hd["changed"] if c["a"]["kind"] == "owner-mismatch"]
    assert ("owner-mismatch", "0000:05:02.0", "0000:05:00.0", "RO8", "MO7") in changed
    assert not [f for f in hd["only_a"] if f["kind"] == "owner-mismatch"]
    text = vt(s10_copy, "diff", legacy, direct).stdout
    assert "owner-mismatch" in text


# --- the TUI ------------------------------------------------------------------------------

async def test_tui_reaches_marks_and_lists_the_owner_mismatch(tmp_path):
    from tui.app import VtdtraceApp

    path = trace_copy(tmp_path, "s10-alias-rid-split.direct.vtdt")
    fs = findings_for_trace(path).findings
    notable = sorted({f.start for f in fs if f.severity != "benign"})
    final = next(f for f in fs if f.kind == "owner-mismatch" and f.severity == "hazard" and f.end is None)
    app = VtdtraceApp(path)
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(app, pilot)
        for _ in notable:
            await pilot.press("right_square_bracket")
        assert app.model.cursor == notable[-1] == final.start
        view = app.model.step_view()
        assert any(f["kind"] == "owner-mismatch" and f["rid"] == "0000:05:00.0" for f in view.open_findings)
        tl = app.view.timeline
        assert 3 in tl._strip(tl.size.width)                  # hazard cells on the timeline
        await pilot.press("4")
        text = app.view.findings_pane.text()
        assert "owner-mismatch" in text and "0000:05:00.0" in text
        assert "owner-mismatch" in screen_text(app)
        await pilot.press("left_square_bracket")
        assert app.model.cursor == notable[-2]
    app.model.close()
