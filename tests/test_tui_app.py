"""Pilot tests of every binding of `vtdtrace view`, on the shipped S1 trace
under the XSA-400 engine without cmpxchg16b (the did-pt-mismatch case).

Expected positions are looked up in the trace with the headless reader, not
hard-coded, so a regenerated trace keeps the tests meaningful; what the
tests pin is the *rule* each key follows."""

from __future__ import annotations

import pytest
from test_tui_support import decoded, screen_text, settle, trace_copy

from tui.app import VtdtraceApp
from tui.command_line import CommandLine
from tui.event_list import EventList
from tui.model import Filter
from tui.screens import BookmarksScreen, FilterScreen, HelpScreen
from tui.state_pane import StatePane

USB = (0, 0x00, 0xA0)          # IOMMU 0, 0000:00:14.0 (devfn 0xa0)


@pytest.fixture
def s1(tmp_path):
    return trace_copy(tmp_path)


@pytest.fixture
def evs(s1):
    return decoded(s1)


def ctx_writes(evs, key=USB):
    return [e["seq"] for e in evs if e["kind"] == "ctx-write" and (e["iommu"], e["bus"], e["devfn"]) == key]


def lo_write_of_assign(evs):
    """The lo store of the in-place reassignment (op 1): new page tables, old DID."""
    return next(e["seq"] for e in evs if e["kind"] == "ctx-write" and e["op"] == 1 and e["half"] == "lo"
                and (e["iommu"], e["bus"], e["devfn"]) == USB)


async def test_step_keys_n_p_down_up(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.model.cursor == 0
        await pilot.press("n")
        assert app.model.cursor == 1
        await pilot.press("down", "down")
        assert app.model.cursor == 3
        await pilot.press("p")
        assert app.model.cursor == 2
        await pilot.press("up", "up")
        assert app.model.cursor == 0
        await pilot.press("up")                  # nothing before step 0
        assert app.model.cursor == 0
        await pilot.press("n")
        await pilot.pause()
        assert "step 1/" in app.view.state_pane.text()
        assert app.view.events._cursor_row == 1


async def test_end_home_and_pages(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("end")
        assert app.model.cursor == app.model.count
        await pilot.press("home")
        assert app.model.cursor == 0
        await pilot.press("pagedown")
        assert app.model.cursor > 5
        await pilot.press("pageup")
        assert app.model.cursor == 0


async def test_step_over_a_call_lands_on_its_return(s1, evs):
    # the call to domain_context_mapping inside the assign operation
    call = next(e for e in evs if e["kind"] == "call" and e["func"] == "domain_context_mapping" and e["op"] == 1)
    ret = next(e for e in evs if e["seq"] > call["seq"] and e["kind"] == "return"
               and e["func"] == "domain_context_mapping")
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.goto_seq(call["seq"] - 1)
        await pilot.press("o")
        assert app.model.cursor == ret["seq"]
        # a plain event is stepped over like n
        lo = lo_write_of_assign(evs)
        assert evs[lo - 1]["kind"] == "ctx-write"
        app.goto_seq(lo - 1)
        await pilot.press("o")
        assert app.model.cursor == lo


async def test_step_over_an_operation_and_step_out(s1, evs):
    op1 = next(e for e in evs if e["kind"] == "op-begin" and e["op"] == 1)
    end1 = next(e for e in evs if e["kind"] == "op-end" and e["op"] == 1)
    lo = lo_write_of_assign(evs)
    # innermost function at the lo write: domain_context_mapping_one; its return
    ret = next(e for e in evs if e["seq"] > lo and e["kind"] == "return"
               and e["func"] == "domain_context_mapping_one")
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.goto_seq(op1["seq"] - 1)
        await pilot.press("o")
        assert app.model.cursor == end1["seq"]
        app.goto_seq(lo)
        await pilot.press("u")
        assert app.model.cursor == ret["seq"]
        # top level of the operation (no function on the stack): out = op-end
        app.goto_seq(op1["seq"] + 1)
        await pilot.press("u")
        assert app.model.cursor == end1["seq"]


async def test_goto_prompt(s1, evs):
    lo = lo_write_of_assign(evs)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        line = app.query_one(CommandLine)
        await pilot.press("g")
        assert line.asking and isinstance(app.focused, EventList) and "go to step" in line.text()
        await pilot.press(*str(lo))
        assert app.model.cursor == 0                    # digits go to the prompt, not to the panes
        await pilot.press("enter")
        await pilot.pause()
        assert not line.asking and isinstance(app.focused, EventList)
        assert app.model.cursor == lo
        await pilot.press("g", "plus", "5", "enter")
        assert app.model.cursor == lo + 5
        await pilot.press("g", *"op 2", "enter")
        assert app.model.cursor == next(e["seq"] for e in evs if e["kind"] == "op-begin" and e["op"] == 2)
        # a bad step keeps the prompt open with the reason; escape cancels
        await pilot.press("g", *"99999", "enter")
        assert line.asking and "outside" in line.text()
        await pilot.press("backspace", "left", "ctrl+u")
        assert line.value == ""
        await pilot.press("escape")
        assert not line.asking
        assert app.model.cursor == next(e["seq"] for e in evs if e["kind"] == "op-begin" and e["op"] == 2)


async def test_goto_prepares_the_typed_step_in_idle_time(s1, evs):
    """While a step is typed into the go-to prompt, the idle prefetch prepares
    it (step view, list rows) and re-seats the replay at the cursor; Enter
    then draws the same screen as a go-to nothing prepared."""
    lo = lo_write_of_assign(evs)
    cold = VtdtraceApp(s1)
    async with cold.run_test(size=(100, 30)) as pilot:
        await settle(cold, pilot)
        cold._goto_typed = lambda text: None         # nothing prepared: the reference screen
        await pilot.press("g", *str(lo), "enter")
        await pilot.pause()
        assert cold.model.cursor == lo
        want = screen_text(cold)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        m = app.model
        assert (lo, id(m.findings)) not in m._views
        await pilot.press("g", *str(lo))
        assert m.cursor == 0
        app._last_key = 0.0                          # the user paused: the idle timer's condition
        app._prefetch()                              # (unless its timer already ran)
        assert app._goto_target is None
        assert (lo, id(m.findings)) in m._views      # prepared before Enter
        assert m.session is not None and m.session.state_at(0) is not None
        await pilot.press("enter")
        await pilot.pause()
        assert m.cursor == lo
        assert screen_text(app) == want
        # text that names no step, or an op (which may search the trace), prepares nothing
        await pilot.press("g", *"op 2")
        assert app._goto_target is None
        await pilot.press("ctrl+u", *"99999")
        assert app._goto_target is None
        await pilot.press("escape")


async def test_next_and_previous_write_of_the_selected_entry(s1, evs):
    writes = ctx_writes(evs)
    lo = lo_write_of_assign(evs)
    i = writes.index(lo)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.goto_seq(lo)
        assert app.model.selected == USB             # the cursor's ctx-write selects its entry
        await pilot.press("W")
        assert app.model.cursor == writes[i - 1]
        await pilot.press("w", "w")
        assert app.model.cursor == writes[i + 1]
        app.goto_seq(writes[-1])
        await pilot.press("w")                        # no later write: stays
        assert app.model.cursor == writes[-1]


async def test_state_pane_selection_drives_w(s1, evs):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        assert isinstance(app.focused, StatePane)
        app.goto_seq(0)
        keys = app.view.state_pane.entry_keys()
        assert USB in keys and len(keys) >= 2
        # choose the entry after 00:14.0 with ↓ from it
        app.model.selected = USB
        app.view.refresh_step()
        await pilot.press("down")
        other = keys[keys.index(USB) + 1]
        assert app.model.selected == other
        await pilot.press("w")
        assert app.model.cursor == ctx_writes(evs, other)[0]


async def test_search_and_repeat(s1, evs):
    app = VtdtraceApp(s1)
    hits = [i + 1 for i, _ in enumerate(evs) if "cleanup_domid_map" in app.model.row_text(
        app.model.event(i + 1)).lower()]
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("slash")
        assert app.query_one(CommandLine).asking
        await pilot.press(*"cleanup_domid_map", "enter")
        await settle(app, pilot)
        assert app.model.cursor == hits[0]
        await pilot.press("greater_than_sign")
        await settle(app, pilot)
        assert app.model.cursor == hits[1]
        await pilot.press("less_than_sign")
        await settle(app, pilot)
        assert app.model.cursor == hits[0]
        assert f"at step {hits[0]}" in screen_text(app)
        # not found: the cursor stays, the status line says so
        await pilot.press("slash", *"no-such-text-anywhere", "enter")
        await settle(app, pilot)
        assert app.model.cursor == hits[0]
        assert "no later match" in screen_text(app)


async def test_filter_by_kind_function_device_text(s1, evs):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f")
        assert isinstance(app.screen, FilterScreen)
        await pilot.press(*"ctx-write", "enter")
        await settle(app, pilot)
        want = [e["seq"] for e in evs if e["kind"] == "ctx-write"]
        assert list(app.model.filter_seqs) == want
        assert app.model.cursor == want[0]
        await pilot.press("n")
        assert app.model.cursor == want[1]
        await pilot.press("p", "p")
        assert app.model.cursor == want[0]
        text = screen_text(app)
        assert f"{len(want)} of {len(evs)} events" in text
        assert "ctx-write" in text and "did-map" not in text.split("2 state")[0]
        # F clears
        await pilot.press("F")
        await settle(app, pilot)
        assert app.model.filter_seqs is None
        await pilot.press("n")
        assert app.model.cursor == want[0] + 1
        # function + device together
        app.apply_filter(Filter(func="flush", device="00:14.0"))
        await settle(app, pilot)
        got = list(app.model.filter_seqs)
        assert got and all("flush" in evs[s - 1]["func"] for s in got)
        # free text
        app.apply_filter(Filter(text="reassignment may cause"))
        await settle(app, pilot)
        assert [evs[s - 1]["kind"] for s in app.model.filter_seqs] == ["log"] * len(app.model.filter_seqs)


async def test_filter_form_rejects_bad_input(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f", *"no-such-kind", "enter")
        assert isinstance(app.screen, FilterScreen)
        assert "unknown event kind" in str(app.screen.query_one("#filter-hint").render())
        await pilot.press("escape")
        assert app.model.filter_seqs is None


async def test_bookmarks_set_list_jump_and_survive_a_restart(s1, evs):
    lo = lo_write_of_assign(evs)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.goto_seq(lo)
        await pilot.press("m")
        app.goto_seq(5)
        await pilot.press("m")
        assert sorted(app.model.bookmarks) == [5, lo]
        assert "◆" in screen_text(app)
        await pilot.press("end", "apostrophe")
        assert isinstance(app.screen, BookmarksScreen)
        await pilot.press("down", "enter")      # second bookmark in step order
        await pilot.pause()
        assert app.model.cursor == lo
        await pilot.press("q")
    app.model.close()
    # a new process-like start on the same file: the sidecar has them
    app2 = VtdtraceApp(s1)
    async with app2.run_test(size=(100, 30)) as pilot:
        await settle(app2, pilot)
        assert sorted(app2.model.bookmarks) == [5, lo]
        assert "reassignment" not in app2.model.bookmarks[lo]
        assert "ctx-write" in app2.model.bookmarks[lo]
        # m on a bookmarked step removes it, and that is saved too
        app2.goto_seq(5)
        await pilot.press("m")
        await pilot.press("q")
    app2.model.close()
    app3 = VtdtraceApp(s1)
    async with app3.run_test(size=(100, 30)) as pilot:
        await settle(app3, pilot)
        assert sorted(app3.model.bookmarks) == [lo]
    app3.model.close()


async def test_panes_1_to_4_focus_and_maximise(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        view = app.view
        assert isinstance(app.focused, EventList)
        await pilot.press("2")
        assert app.focused is view.state_pane and view.state_pane.display
        await pilot.press("3")
        assert app.focused is view.stack_pane
        assert view.stack_pane.display and not view.state_pane.display   # 80 columns: one detail pane
        await pilot.press("4")
        assert app.focused is view.findings_pane and view.findings_pane.display
        await pilot.press("4")
        assert app.screen.maximized is view.findings_pane
        await pilot.press("4")
        assert app.screen.maximized is None
        await pilot.press("1")
        assert app.focused is view.events
        await pilot.press("1")
        assert app.screen.maximized is view.events
        await pilot.press("2")
        assert app.screen.maximized is None and app.focused is view.state_pane
    app.model.close()


async def test_wide_terminal_shows_every_pane(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(app, pilot)
        view = app.view
        assert view.has_class("-wide")
        assert all(w.display for w in (view.state_pane, view.stack_pane, view.findings_pane))
        assert view.events.region.x < view.state_pane.region.x
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert not view.has_class("-wide")
    app.model.close()


async def test_command_palette_runs_actions(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"last step")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.model.cursor == app.model.count
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to step")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert app.query_one(CommandLine).asking
        await pilot.press("1", "0", "enter")
        assert app.model.cursor == 10
    app.model.close()


def test_palette_lists_every_binding():
    from tui.commands import ACTIONS

    actions = {a for _, _, a, _ in ACTIONS}
    bound = {b.action for b in VtdtraceApp.BINDINGS}
    assert bound - {"quit"} <= actions | {"quit"}
    for needed in ("step(1)", "step(-1)", "step_over", "step_out", "next_finding", "prev_finding", "goto",
                   "next_write", "prev_write", "search", "filter", "bookmark", "bookmarks", "pane(1)",
                   "pane(2)", "pane(3)", "pane(4)", "help", "quit"):
        assert needed in actions


async def test_help_screen_and_quit(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "next / previous finding" in screen_text(app)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.is_running
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running and app.return_code == 0
    app.model.close()


async def test_row_click_moves_the_cursor(s1):
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        events = app.view.events
        await pilot.click(EventList, offset=(10, 4))    # border-top is row 0 -> row 3 of the list
        await pilot.pause()
        assert app.model.cursor == round(events.scroll_y) + 3
    app.model.close()


async def test_filter_keeps_the_cursor_row_in_view(s1, evs):
    lo = lo_write_of_assign(evs)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        app.goto_seq(lo)
        app.apply_filter(Filter(kinds=("ctx-write",)))
        await settle(app, pilot)
        events = app.view.events
        row = app.model.row_of_seq(lo)
        assert app.model.cursor == lo and app.model.seq_at_row(row) == lo
        top, height = round(events.scroll_y), events.scrollable_content_region.height
        assert top <= row < top + height
        assert f"{lo} 0  1 MO7" in screen_text(app)
    app.model.close()
