"""How an owner-mismatch shows: the state pane marks the context entry a DMA
source uses while that entry is not its owner's (s10, the direct engine
leaves the guest's 05:01.0 behind bridge 00:1e.0 on dom0's alias 05:00.0),
the banner names the device, and check and diff name a window boundary
without a step label ``op-end`` alike."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_tui_support import REPO, screen_text, settle, trace_copy

from replay.hazards import findings_for_trace
from tui.app import VtdtraceApp

S10_DIRECT = "s10-alias-rid-split.direct.vtdt"
S10_LEGACY = "s10-alias-rid-split.legacy.vtdt"
WIRE = "0000:05:00.0"
VTDTRACE = Path(sys.executable).with_name("vtdtrace")


def _row(text: str, rid: str) -> str:
    return next(ln for ln in text.splitlines() if ln.lstrip(" ▸").startswith(rid))


def _hazard_window(path):
    """The direct engine's open owner-mismatch hazard of 05:01.0 through 05:00.0."""
    fs = [f for f in findings_for_trace(path).findings
          if f.kind == "owner-mismatch" and f.severity == "hazard" and f.device == "0000:05:01.0"]
    assert len(fs) == 1 and fs[0].rid == WIRE and fs[0].end is None
    return fs[0]


@pytest.mark.parametrize("size", [(80, 24), (120, 35)])
async def test_wire_entry_of_an_owner_mismatch_is_marked(tmp_path, size):
    path = trace_copy(tmp_path, S10_DIRECT)
    f = _hazard_window(path)
    app = VtdtraceApp(path)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        # before the window opens the entry carries no mark
        app.goto_seq(f.start - 1)
        await settle(app, pilot)
        assert "←" not in _row(app.view.state_pane.text(), WIRE)
        app.goto_seq(f.start)
        await settle(app, pilot)
        row = _row(app.view.state_pane.text(), WIRE)
        assert "← 05:01.0 guest ≠" in row                      # the DMA source and its owner
        assert " dom0 " in row                                 # whose entry it really is
        assert "←" not in _row(app.view.state_pane.text(), "0000:05:01.0")
        # drawn red: every owner part of the row is state-pane--bad
        line = next(parts for parts, key in app.view.state_pane.lines
                    if any(WIRE in t for t, _ in parts))
        assert [c for t, c in line if t.startswith("←")] == ["state-pane--bad"]
        assert all(c == "state-pane--bad" for t, c in line if t.strip() in ("dom0", "P"))
        # the banner names the device and the entry it uses, at either size
        assert "owner-mismatch (hazard: 05:01.0 via 05:00.0)" in screen_text(app)
        # select the entry (pane 2, ↓) so its row is on screen at 80x24 too
        await pilot.press("2")
        for _ in range(12):
            if "▸  " + WIRE in screen_text(app):
                break
            await pilot.press("down")
            await pilot.pause()
        shown = next(ln for ln in screen_text(app).splitlines() if "▸  " + WIRE in ln)
        assert "← 05:01.0 guest ≠" in shown
    app.model.close()


async def test_split_other_way_round_marks_the_dom0_device(tmp_path):
    """Earlier (seq 347..456) the alias entry is the guest's while dom0's
    05:02.0 uses it: the mark follows the finding, not a fixed device."""
    path = trace_copy(tmp_path, S10_DIRECT)
    fs = [f for f in findings_for_trace(path).findings
          if f.kind == "owner-mismatch" and f.severity == "hazard" and f.device == "0000:05:02.0"]
    assert len(fs) == 1 and fs[0].rid == WIRE
    app = VtdtraceApp(path)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        app.goto_seq(fs[0].start)
        await settle(app, pilot)
        row = _row(app.view.state_pane.text(), WIRE)
        assert "← 05:02.0 dom0 ≠" in row and " guest " in row
        app.goto_seq(fs[0].end)
        await settle(app, pilot)
        assert "← 05:02.0" not in _row(app.view.state_pane.text(), WIRE)
    app.model.close()


def _cli(*args):
    return subprocess.run([str(VTDTRACE), *map(str, args)], cwd=REPO, capture_output=True, text=True)


def test_diff_and_check_name_an_unlabelled_boundary_op_end(tmp_path):
    a, b = trace_copy(tmp_path, S10_LEGACY), trace_copy(tmp_path, S10_DIRECT)
    out = _cli("diff", a, b)
    assert out.returncode == 1, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if "owner-mismatch" in ln]
    assert lines
    assert not any(" ? " in ln or "?" in ln.split("(")[0] for ln in lines), lines
    assert any("[480, end) op-end -> open (hazard)" in ln for ln in lines)
    assert any("[255, 347) op-end -> op-end (warning)" in ln for ln in lines)
    assert any("[255, 342) op-end -> RN5 (warning)" in ln for ln in lines)
    # check prints the same labels for the same windows (the same rule)
    chk = _cli("check", "--no-cache", b, "--kind", "owner-mismatch")
    assert chk.returncode == 1, chk.stderr
    assert "seq 480 op-end -> open at end rid 0000:05:00.0" in chk.stdout
    assert "seq 255 op-end -> 347 op-end rid" in chk.stdout
    assert "seq 255 op-end -> 342 RN5 rid" in chk.stdout
    # every unlabelled boundary check --json reports is an op-end event
    doc = json.loads(_cli("check", "--json", "--no-cache", b).stdout)
    from replay.reader import open_trace
    t = open_trace(b, verify=False)
    kinds = t.schema.kinds
    unlabelled = {f["start"] for f in doc["findings"] if not f["start_label"]} | \
        {f["end"] for f in doc["findings"] if f["end"] is not None and not f["end_label"]}
    assert unlabelled
    for n in unlabelled:
        assert kinds[t.event(n)[0]].name == "op-end"
