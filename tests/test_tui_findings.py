"""Hazards on screen: ]/[ land where replay.hazards says a window opens, the
state pane shows what makes it a hazard, the list and the timeline mark the
windows.  Positions come from the analysers, not from constants."""

from __future__ import annotations

from test_tui_support import screen_text, settle, trace_copy

from replay.hazards import findings_for_trace
from replay.reader import open_trace
from tracer import schema as S
from tui.app import VtdtraceApp
from tui.state_pane import StatePane

USB = (0, 0x00, 0xA0)


def notable_starts(path):
    fs = findings_for_trace(path).findings
    return sorted({f.start for f in fs if f.severity != "benign"}), fs


async def test_next_hazard_lands_on_the_lo_write_that_opens_the_did_pt_mismatch(tmp_path):
    s1 = trace_copy(tmp_path)
    starts, fs = notable_starts(s1)
    mismatch = next(f for f in fs if f.kind == "did-pt-mismatch" and f.severity == "hazard")
    with open_trace(s1) as t:
        ev = S.event_to_dict(t.event(mismatch.start))
    assert (ev["kind"], ev["half"], ev["op"]) == ("ctx-write", "lo", 1)      # the lo store of the assign
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        assert app.model.cursor == mismatch.start == starts[0]
        # the state pane: the entry now points at the guest's new tables but still carries dom0's DID
        pane = app.query_one("#state", StatePane)
        row = next(parts for parts, key in pane.lines if key == USB)
        text = "".join(t for t, _ in row)
        assert "dom0" in text and "guest" in text and "≠" in text
        assert text.index("dom0") < text.index("≠") < text.index("guest")
        assert any(c == "state-pane--bad" for _, c in row)                   # drawn red
        view = app.model.step_view()
        entry = next(e for e in view.show["iommus"][0]["context"] if e["rid"] == "0000:00:14.0")
        assert (entry["did_owner"], entry["pt_owner"]) == ("dom0", "guest")
        assert any(f["kind"] == "did-pt-mismatch" for f in view.open_findings)
        assert "did-pt-mismatch" in screen_text(app)
        # ] again: the next window that is not benign; [ comes back
        await pilot.press("right_square_bracket")
        assert app.model.cursor == starts[1]
        await pilot.press("left_square_bracket")
        assert app.model.cursor == starts[0]
        await pilot.press("left_square_bracket")                             # nothing earlier
        assert app.model.cursor == starts[0]
        app.goto_seq(app.model.count)
        await pilot.press("left_square_bracket")
        assert app.model.cursor == starts[-1]
    app.model.close()


async def test_benign_windows_are_reachable_from_the_palette(tmp_path):
    s1 = trace_copy(tmp_path, "s1-usb-rmrr.direct.vtdt")
    fs = findings_for_trace(s1).findings
    assert fs and all(f.severity == "benign" for f in fs)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")        # no warning/hazard: stays, says so
        assert app.model.cursor == 0
        assert "no later finding" in screen_text(app)
        await app.run_action("next_finding_any")
        await pilot.pause()
        assert app.model.cursor == min(f.start for f in fs)
        await app.run_action("prev_finding_any")
        assert app.model.cursor == min(f.start for f in fs)
    app.model.close()


async def test_legacy_rmrr_disconnect_window_is_marked(tmp_path):
    legacy = trace_copy(tmp_path, "s1-usb-rmrr.legacy.vtdt")
    fs = [f for f in findings_for_trace(legacy).findings if f.kind == "rmrr-disconnect"]
    assert fs
    f = fs[0]
    app = VtdtraceApp(legacy)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        assert app.model.cursor == f.start
        events = app.view.events
        # rows inside the window carry the hazard mark; the row before does not
        assert events._parts(f.start, 90)[1] == 3
        assert events._parts(f.end - 1, 90)[1] == 3
        assert events._parts(f.start - 1, 90)[1] < 3
        strip = events.render_line(events._cursor_row - round(events.scroll_y))
        assert strip.text.startswith(" ▌")
        # the timeline strip has hazard cells and the cursor marker
        tl = app.view.timeline
        assert 3 in tl._strip(tl.size.width)
        assert "▼" in tl.render_line(0).text             # the cursor marker, above the strip
        await pilot.press("4")
        assert "rmrr-disconnect" in screen_text(app)
    app.model.close()


async def test_findings_pane_lists_open_and_neighbouring_findings(tmp_path):
    s1 = trace_copy(tmp_path)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket", "4")
        text = app.view.findings_pane.text()
        assert "open at this step" in text and "did-pt-mismatch" in text and "foreign-iotlb" in text
        assert "all findings: " in text
    app.model.close()
