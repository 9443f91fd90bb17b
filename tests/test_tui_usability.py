"""Pilot tests of the trace view as a Xen developer uses it (docs/TUI.md):
layout by what fits, readable function names, maximised panes, the
findings list, search, the status line, footer and title, live resize, the
RMRR marks, the timeline's density and zoom, one meaning per symbol.

The layout items are also pinned as SVG snapshots at 80x24, 120x35 and
200x50 (tests/test_tui_snapshots.py).  Expected steps are looked up in the
trace or in replay's findings, not hard-coded."""

from __future__ import annotations

import threading

import pytest
from test_tui_support import decoded, screen_text, settle, trace_copy

from replay.hazards import findings_for_trace
from tracer import schema as S
from tui.app import VtdtraceApp
from tui.command_line import CommandLine
from tui.func_names import abbreviations, fit_name
from tui.model import FindingsView
from tui.screens import BookmarksScreen

SIZES = [(80, 24), (120, 35), (200, 50)]


@pytest.fixture
def s1(tmp_path):
    return trace_copy(tmp_path)


@pytest.fixture
def legacy(tmp_path):
    return trace_copy(tmp_path, "s1-usb-rmrr.legacy.vtdt")


@pytest.fixture
def synth_trace(tmp_path):
    """A synthesised trace with hundreds of findings (more than any pane
    has rows)."""
    from tracer.synth import synth, synth_header
    from tracer.writer import TraceWriter

    path = tmp_path / "synth.vtdt"
    with TraceWriter(path, synth_header(7, "direct", False, 20_000)) as w:
        synth(20_000, 7, w, "direct", False)
    return path


def footer_line(app) -> str:
    return screen_text(app).splitlines()[-1]


def status_line(app) -> str:
    return app.query_one(CommandLine).text()


# --- 1. layout and function names ---------------------------------------------------------

def test_function_abbreviations_are_unambiguous_and_keep_the_tail():
    names = tuple(S.FUNCS)
    for width in range(10, 28):           # the column is never below FUNC_MIN (12)
        table = abbreviations(names, width)
        shown = [table[n] for n in names if n]
        assert len(set(shown)) == len(shown), width          # one text, one function
        assert all(len(t) <= width for t in shown)
    table = abbreviations(names, 16)
    ones = {n: table[n] for n in ("domain_context_mapping_one", "domain_context_unmap_one",
                                  "domain_context_mapping")}
    assert len(set(ones.values())) == 3
    assert ones["domain_context_mapping_one"].endswith("mapping_one")
    assert ones["domain_context_unmap_one"].endswith("unmap_one")
    assert fit_name(names, "boot", 12) == "boot".ljust(12)


@pytest.mark.parametrize("size", SIZES)
async def test_layout_by_what_fits(s1, size):
    app = VtdtraceApp(s1)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        view = app.view
        width = size[0]
        # side by side only when the list and the state pane both have room
        assert view.has_class("-wide") == (width >= 200)
        text = screen_text(app)
        rows = [ln for ln in text.splitlines() if " ctx-write " in ln]
        assert rows
        func_col = view.events._columns(view.events.scrollable_content_region.width)[2]
        if width >= 120:
            # the whole name at 120 stacked; its tail wherever it is cut
            assert "domain_context_mapping_one" in text or "…ain_context_mapping_one" in text
            assert func_col >= 24
        else:
            assert "…mapping_one" in text
        # the state pane's decoded fields always; the whole row (both raw
        # halves) from 120 columns (below, the pane scrolls sideways to them)
        assert "0000:00:14.0 R P     0  dom0      ≠ guest" in text
        if width >= 120:
            assert "0x0000010001000001  0x0000000000000002" in text
        # arguments get their room after the kind column
        from tui.event_list import ARGS_MIN
        wseq, wop, wfunc, wkind = view.events._columns(view.events.scrollable_content_region.width)
        used = 2 + wseq + 1 + 2 + wop + 1 + 6 + wfunc + 1 + wkind + 1
        # (at 80 columns the function column's floor leaves a little less)
        assert view.events.scrollable_content_region.width - used >= (ARGS_MIN if width >= 120 else 32)
    app.model.close()


# --- 2. maximised event list ---------------------------------------------------------------

@pytest.mark.parametrize("size", [(120, 35), (200, 50)])
async def test_maximised_event_list_uses_the_full_width_and_shows_the_event_in_full(s1, size):
    app = VtdtraceApp(s1)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket", "1")
        await pilot.pause()
        events = app.view.events
        assert app.screen.maximized is events
        assert events.region.width == size[0]
        text = screen_text(app)
        assert "╱" not in text
        # the cursor's ctx-write with every field, the new halves included
        for field in ("old_lo=0x0000010000000001", "new_lo=0x0000010001000001", "new_hi=0x0000000000000002"):
            assert field in text
        await pilot.press("n")
        await pilot.pause()
        assert "half=hi" in "".join(events._preview_lines(events.size.width))
        await pilot.press("1")
        assert app.screen.maximized is None
    app.model.close()


# --- 3. stack pane -------------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES)
async def test_stack_pane_wraps_between_fields(s1, size):
    app = VtdtraceApp(s1)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket", "3")
        await pilot.pause()
        pane = app.view.stack_pane
        for maximised in (False, True):
            lines = pane.text().splitlines()
            tokens = [t for ln in lines for t in ln.split()]
            for field in ("old_lo=0x0000010000000001", "old_hi=0x0000000000000002",
                          "new_lo=0x0000010001000001", "new_hi=0x0000000000000002"):
                assert field in tokens               # whole, on one line
            if not maximised:
                await pilot.press("3")
                await pilot.pause()
                assert app.screen.maximized is pane
    app.model.close()


async def test_stack_pane_scrolls_sideways_to_a_field_wider_than_it(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("3")
        pane = app.view.stack_pane
        wide = "text=" + "x" * 150 + "END"
        pane.show_step(None, None, f"1 log {wide}", "")
        await pilot.pause()
        assert wide in pane.text().split()           # not cut into pieces
        assert "END" not in screen_text(app)
        await pilot.press("end")
        await pilot.pause()
        assert pane.scroll_x > 0 and "END" in screen_text(app)
        await pilot.press("home")
        await pilot.pause()
        assert pane.scroll_x == 0
        await pilot.press("right")
        await pilot.pause()
        assert pane.scroll_x == 8
    app.model.close()


# --- 4. findings pane maximised: a list, Enter goes there ------------------------------------

async def test_maximised_findings_pane_lists_every_finding_and_enter_jumps(synth_trace):
    fs = findings_for_trace(synth_trace).findings
    starts = sorted(f.start for f in fs)
    app = VtdtraceApp(synth_trace, use_sidecar=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert len(fs) > 30                          # more than the pane has rows
        await pilot.press("4", "4")
        await pilot.pause()
        pane = app.view.findings_pane
        assert app.screen.maximized is pane and pane.listing
        assert len(pane.lines) == len(fs) + 2        # every finding, plus two header lines
        assert "later" not in pane.text()
        await pilot.press("end")
        await pilot.pause()
        assert pane.selected == len(fs) - 1 and pane.scroll_y > 0
        await pilot.press("home", "down", "down", "enter")
        await settle(app, pilot)
        assert app.model.cursor == starts[2]
        assert f"opens at step {starts[2]:,}" in status_line(app)
        await pilot.press("pagedown")
        await pilot.pause()
        assert pane.selected > 2
        await pilot.press("4")
        await pilot.pause()
        assert app.screen.maximized is None and not pane.listing
        assert "open at this step" in pane.text()
    app.model.close()


# --- 5. search -----------------------------------------------------------------------------

async def test_search_prompt_offers_the_old_text_selected(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        line = app.query_one(CommandLine)
        await pilot.press("slash")
        assert line.asking and line.value == ""      # the first search opens empty
        await pilot.press(*"cleanup_domid_map", "enter")
        await settle(app, pilot)
        first = app.model.cursor
        await pilot.press("slash")
        assert line.value == "cleanup_domid_map" and line._ask.selected
        await pilot.press(*"half=hi")                 # typing replaces the selection
        assert line.value == "half=hi"
        await pilot.press("escape")
        await pilot.press("slash", "enter")           # Enter repeats the old search
        await settle(app, pilot)
        assert app.model.search_text == "cleanup_domid_map" and app.model.cursor > first
        await pilot.press("slash", "backspace")       # Backspace clears the selection
        assert line.value == ""
        await pilot.press("escape")
    app.model.close()


async def test_escape_cancels_a_running_search(s1, monkeypatch):
    app = VtdtraceApp(s1)
    released = threading.Event()
    stopped = threading.Event()

    def endless(text, start, forward=True, chunk=4096, trace=None):
        # a search over a very long trace: progress, never a result, until
        # the worker stops asking (cancelled) -- bounded so a bug cannot hang
        for i in range(100_000):
            yield ("progress", i)
            released.wait(0.01)
        stopped.set()
        yield ("none", None)

    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        monkeypatch.setattr(app.model, "search_iter", endless)
        start = app.model.cursor
        await pilot.press("slash", *"zzznotthere", "enter")
        await pilot.pause(0.1)
        assert "searching" in status_line(app) and "escape" in status_line(app)
        await pilot.press("escape")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not stopped.is_set()                  # the worker stopped at the cancel, not at the end
        assert "cancelled" in status_line(app)
        assert app.model.cursor == start
        await pilot.press("n")
        assert "cancelled" not in status_line(app)
    app.model.close()


# --- 6. the status line --------------------------------------------------------------------

async def test_every_key_that_does_nothing_says_why_and_the_next_key_clears_it(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.model.cursor == 0
        await pilot.press("p")
        assert "nothing before it" in status_line(app)
        await pilot.press("n")
        assert status_line(app).strip() == ""
        await pilot.press("end")
        await pilot.pause()
        for key in ("n", "o", "u"):
            await pilot.press(key)
            assert "last step" in status_line(app), key
            assert app.model.cursor == app.model.count
        await pilot.press("greater_than_sign")
        assert "nothing searched yet" in status_line(app)
        await pilot.press("F")
        assert "no filter" in status_line(app)
        await pilot.press("Z")
        assert "whole trace" in status_line(app)
        await pilot.press("home")
        await pilot.pause()
        await pilot.press("home")
        assert "already at step 0" in status_line(app)
    app.model.close()


async def test_filter_clear_and_bookmark_delete_leave_no_stale_message(s1):
    from tui.model import Filter
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.apply_filter(Filter(kinds=("ctx-write",)))
        await settle(app, pilot)
        assert "filter kind=ctx-write" in status_line(app)
        await pilot.press("F")
        await settle(app, pilot)
        assert "filter kind" not in status_line(app) and "cleared" in status_line(app)
        await pilot.press("m")
        assert "bookmark set" in status_line(app)
        await pilot.press("apostrophe")
        await pilot.pause()
        assert isinstance(app.screen, BookmarksScreen)
        await pilot.press("d")
        await pilot.pause()
        assert "deleted" in status_line(app) and "bookmark set" not in status_line(app)
        await pilot.press("escape")                   # the next key: the message goes
        await pilot.pause()
        assert "deleted" not in status_line(app)
        await pilot.press("n")
        assert status_line(app).strip() == ""
    app.model.close()


async def test_messages_show_while_a_pane_is_maximised(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        await pilot.press("2", "2")
        await pilot.pause()
        assert app.screen.maximized is app.view.state_pane
        await pilot.press("left_square_bracket")
        await pilot.pause()
        text = screen_text(app)
        assert "no earlier finding" in text
        assert "? help" in text.splitlines()[-1]
    app.model.close()


# --- 7. footer and title -------------------------------------------------------------------

@pytest.mark.parametrize("size", SIZES + [(60, 20)])
async def test_footer_keeps_help_and_quit_and_the_title_keeps_the_step(s1, size):
    app = VtdtraceApp(s1)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        seq = app.model.cursor
        lines = screen_text(app).splitlines()
        assert lines[-1].rstrip().endswith("? help  q quit")
        assert f"step {seq}" in lines[0]
        assert len(lines[0].rstrip()) <= size[0]
        if size[0] >= 120:
            assert "next warn/hazard" in lines[-1]
    app.model.close()


@pytest.mark.parametrize("before", [(), ("g", "1"), ("question_mark",)])
async def test_ctrl_c_quits(s1, before):
    """From the main screen, from inside a prompt, from the help screen."""
    app = VtdtraceApp(s1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press(*before)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running and app.return_code == 0
    app.model.close()


# --- 8. live resize ------------------------------------------------------------------------

async def test_live_resize_recomputes_the_columns(s1):
    fresh = {}
    for size in ((80, 24), (120, 35)):
        app = VtdtraceApp(s1)
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            fresh[size] = app.view.events._layout
        app.model.close()
    assert fresh[(80, 24)] != fresh[(120, 35)]
    app = VtdtraceApp(s1)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        assert app.view.events._layout == fresh[(120, 35)]
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        assert app.view.events._layout == fresh[(80, 24)]
        assert "…mapping_one" in screen_text(app)
        await pilot.resize_terminal(120, 35)
        await pilot.pause()
        await pilot.pause()
        assert app.view.events._layout == fresh[(120, 35)]
    app.model.close()


# --- 9. RMRR devices -----------------------------------------------------------------------

def _row(text: str, rid: str) -> str:
    return next(ln for ln in text.splitlines() if rid in ln and (" P " in ln or " - " in ln))


async def test_rmrr_device_marked_and_its_cut_off_entry_is_a_hazard(legacy):
    fs = [f for f in findings_for_trace(legacy).findings if f.kind == "rmrr-disconnect"]
    assert fs
    app = VtdtraceApp(legacy)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        assert app.model.rmrr_rids == frozenset({fs[0].rid})     # the header's RMRR list
        text = app.view.state_pane.text()
        assert "0000:00:14.0 R " in _row(text, "0000:00:14.0")
        assert "✗" not in text
        await pilot.press("right_square_bracket")
        await pilot.pause()
        assert app.model.cursor == fs[0].start
        text = app.view.state_pane.text()
        usb = _row(text, "0000:00:14.0")
        bridge = _row(text, "0000:00:00.0")
        assert "✗ rmrr-disconnect" in usb
        assert "✗" not in bridge and " R " not in bridge      # never mapped, not an RMRR device
        # the row is drawn red, like a ≠ mismatch
        y = next(i for i, (parts, _) in enumerate(app.view.state_pane.lines)
                 if any("✗" in t for t, _ in parts))
        assert any(c == "state-pane--bad" for _, c in app.view.state_pane.lines[y][0])
        # after the window closes the entry is present again: no mark
        app.goto_seq(fs[0].end)
        await pilot.pause()
        assert "✗" not in _row(app.view.state_pane.text(), "0000:00:14.0")
    app.model.close()


# --- 10. timeline density and zoom ---------------------------------------------------------

def test_density_counts_windows_by_severity():
    fv = FindingsView([
        {"kind": "a", "severity": "benign", "start": 1, "end": 51, "rid": "x"},
        {"kind": "b", "severity": "benign", "start": 1, "end": 11, "rid": "y"},
        {"kind": "c", "severity": "hazard", "start": 62, "end": 71, "rid": "x"},
        {"kind": "d", "severity": "warning", "start": 80, "end": 91, "rid": "x"},
    ], count=100)
    cells = fv.density(10)
    assert cells[0] == (1, 2)          # two benign windows over steps 1..10
    assert cells[1] == (1, 1)
    assert cells[5] == (0, 0)
    assert cells[6] == (3, 1)
    assert cells[8] == (2, 1)
    # a span counted exactly
    zoomed = fv.density(5, (1, 11))
    assert zoomed == [(1, 2)] * 5
    assert fv.density(4, (55, 75))[2] == (3, 1)


async def test_timeline_shows_density_and_zooms_to_the_operation(synth_trace, s1):
    app = VtdtraceApp(synth_trace, use_sidecar=False)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        tl = app.view.timeline
        strip = tl.render_line(1).text
        assert len(set(strip) - {"─"}) >= 2          # not one solid block: heights differ
    app.model.close()
    evs = decoded(s1)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        await pilot.pause()
        op = app.model.event(app.model.cursor)[3]
        begin = next(e["seq"] for e in evs if e["kind"] == "op-begin" and e["op"] == op)
        end = next(e["seq"] for e in evs if e["kind"] == "op-end" and e["op"] == op)
        await pilot.press("z")
        await pilot.pause()
        assert app.model.zoom == (begin, end + 1)
        tl = app.view.timeline
        assert f"steps {begin:,}–{end:,}" in tl.render_line(0).text
        assert "▼" in tl.render_line(0).text
        # the hazard window [208, 219) now spans many cells
        assert sum(1 for r in tl._strip(tl.size.width) if r == 3) > 10
        await pilot.press("Z")
        await pilot.pause()
        assert app.model.zoom is None
        await pilot.press("home")
        await pilot.press("z")
        assert app.model.zoom is None and "not inside an operation" in status_line(app)
    app.model.close()


# --- 11. symbols, the ] key, ctrl+c --------------------------------------------------------

async def test_one_meaning_per_symbol_and_the_severity_floor_of_next_finding(s1):
    fs = findings_for_trace(s1).findings
    hazards = sorted({f.start for f in fs if f.severity == "hazard"})
    warnings = sorted({f.start for f in fs if f.severity == "warning"} - set(hazards))
    benign_only = sorted({f.start for f in fs} - set(hazards) - set(warnings))
    app = VtdtraceApp(s1)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        text = screen_text(app)
        assert "▼" in text and "▲" not in text       # ▼ is the cursor, as in the diff view
        assert "] next warn/hazard" in footer_line(app)
        await pilot.press("right_square_bracket")
        assert app.model.cursor == min(hazards + warnings)
        # s: hazards only -> ] passes the warnings by
        await pilot.press("s")
        assert "hazards only" in status_line(app)
        assert "] next hazard" in footer_line(app)
        await pilot.press("right_square_bracket")
        later = [h for h in hazards if h > min(hazards + warnings)]
        assert app.model.cursor == (later[0] if later else min(hazards + warnings))
        if not later:
            assert "no later finding of severity hazard" in status_line(app)
        # s again: every finding, benign windows included
        await pilot.press("s")
        assert "] next finding" in footer_line(app)
        await pilot.press("home", "right_square_bracket")
        assert app.model.cursor == min(hazards + warnings + benign_only)
        await pilot.press("s")
        assert app.model.min_rank == 2
    app.model.close()


async def test_arrows_on_the_findings_pane_step_until_it_is_the_list(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        await pilot.press("4", "down", "down")
        assert app.model.cursor == 2
        await pilot.press("enter")
        assert "maximise the findings pane" in status_line(app)
    app.model.close()
