"""The side-by-side diff view, `vtdtrace view A B` (docs/TUI.md).

The model (tui/diff_model.py) is tested on the real S1 reports: the rule
each move follows, for every row and every event, not a few hand-picked
positions.  Pilot tests then drive the app with the keys and check that
both lists, both titles and the detail pane follow the same cursor."""

from __future__ import annotations

import argparse
import sys
import threading

import pytest
from test_tui_support import record_trace, screen_text, settle, trace_copy

from replay.diff import ARGS, ONLY_A, ONLY_B, HazardDelta, diff_files
from tui import diff_app
from tui.diff_app import DiffApp
from tui.diff_list import DiffList
from tui.diff_model import DiffModel
from tui.field_spans import field_spans, split_spans
from tui.model import TraceModel
from tui.screens import HelpScreen

LEGACY = "s1-usb-rmrr.legacy.vtdt"
DIRECT = "s1-usb-rmrr.direct.vtdt"
NOCX16 = "s1-usb-rmrr.direct-nocx16.vtdt"


def _model(tmp_path, a=LEGACY, b=DIRECT) -> DiffModel:
    pa, pb = trace_copy(tmp_path, a, "A-" + a), trace_copy(tmp_path, b, "B-" + b)
    dm = DiffModel(TraceModel(pa), TraceModel(pb))
    dm.attach(diff_files(pa, pb))
    return dm


@pytest.fixture(scope="module")
def s1(tmp_path_factory):
    dm = _model(tmp_path_factory.mktemp("s1diff"))
    yield dm
    for m in dm.models.values():
        m.close()


def _all_rows(dm):
    return dm.rows(0, dm.n_rows)


# --- the model ---------------------------------------------------------------------------------

def test_opens_on_the_first_divergence(s1):
    first = s1.report.first_divergence
    assert s1.row == s1.alignment.regions[0].row_start
    assert s1.cursor == {"a": first["seq_a"], "b": first["seq_b"]}


def test_walking_the_rows_keeps_both_cursors_on_the_alignment(s1):
    """Every row: a side with an event there is at that event; a side with a
    gap stays at its previous step.  So each side's step never goes back and
    every event of both traces is the step of some row."""
    rows = _all_rows(s1)
    assert [r.index for r in rows] == list(range(s1.n_rows))
    assert any(r.seq_a is None for r in rows) and any(r.seq_b is None for r in rows)
    s1.move_row(0)
    last = {"a": 0, "b": 0}
    seen = {"a": set(), "b": set()}
    for r in rows:
        assert s1.row == r.index
        for side, seq in (("a", r.seq_a), ("b", r.seq_b)):
            want = seq if seq is not None else last[side]
            assert s1.seq_at(side) == want
            assert s1.on_gap(side) == (seq is None)
            last[side] = want
            if seq is not None:
                seen[side].add(seq)
        moved = s1.row_step(1)
        assert moved == (r.index + 1 if r.index + 1 < s1.n_rows else None)
    assert seen["a"] == set(range(1, s1.models["a"].count + 1))
    assert seen["b"] == set(range(1, s1.models["b"].count + 1))
    assert s1.row_step(-s1.n_rows * 2) == 0


@pytest.mark.parametrize("side", ["a", "b"])
def test_n_and_p_step_through_the_active_sides_events_in_order(s1, side):
    s1.active = side
    count = s1.models[side].count
    s1.move_row(0)
    visited = [s1.seq_at(side)]
    while s1.step(1) is not None:
        visited.append(s1.seq_at(side))
        assert not s1.on_gap(side)           # rows only the other side has are passed over
    assert visited == list(range(1, count + 1))
    back = []
    while s1.step(-1) is not None:
        back.append(s1.seq_at(side))
    assert back == list(range(count - 1, 0, -1))
    s1.active = "a"


def test_n_from_a_gap_goes_to_the_event_after_it(s1):
    gap = next(r for r in _all_rows(s1) if r.seq_b is None)
    s1.move_row(gap.index)
    s1.active = "b"
    before = s1.seq_at("b")
    assert s1.step(1) is not None and s1.seq_at("b") == before + 1
    s1.move_row(gap.index)
    assert s1.step(-1) is not None and s1.seq_at("b") == before
    s1.active = "a"


def test_next_and_previous_region_visit_every_region_start(s1):
    starts = [reg.row_start for reg in s1.alignment.regions]
    assert len(starts) == 10
    s1.move_row(0)
    forward = []
    while s1.next_region() is not None:
        forward.append(s1.row)
        assert s1.region_at() is not None and s1.row_at(s1.row).cls != "same"
    assert forward == starts
    backward = []
    while s1.prev_region() is not None:
        backward.append(s1.row)
    assert backward == starts[-2::-1]


def test_prev_region_from_inside_a_region_goes_to_its_start(s1):
    reg = s1.alignment.regions[3]
    s1.move_row(reg.row_start + 2)
    assert s1.prev_region() == reg.row_start
    assert s1.prev_region() == s1.alignment.regions[2].row_start


def test_hazard_keys_visit_every_delta_and_make_its_side_active(s1):
    deltas = [h for h in s1.report.hazards if h.row is not None]
    # legacy's two rmrr-disconnects; the stale windows both have (UO3 -> UO5 against
    # MO7 -> MO9) are "changed", not one-sided, and ]/[ do not stop at them
    assert {h.side for h in deltas} == {"a"} and len(s1.report.changed_hazards) == 4
    s1.move_row(0)
    got = []
    while s1.next_hazard() is not None:
        got.append((s1.row, s1.active))
        assert s1.current_hazard() is not None
    assert got == [(h.row, h.side) for h in deltas]
    rmrr = [h for h in deltas if h.finding["kind"] == "rmrr-disconnect"]
    assert rmrr and {h.side for h in rmrr} == {"a"}        # the legacy window only
    back = []
    while s1.prev_hazard() is not None:
        back.append(s1.row)
    assert back == [h.row for h in deltas][-2::-1]


def test_two_findings_starting_on_one_row_are_both_visited(s1):
    real = s1.report.hazards
    row = s1.alignment.regions[2].row_start
    fake = [HazardDelta("a", {"kind": "x", "start": 1}, row, 0),
            HazardDelta("b", {"kind": "y", "start": 1}, row, 0),
            HazardDelta("a", {"kind": "z", "start": 2}, row + 1, 0)]
    try:
        s1.report.hazards = fake
        s1._hazards = None
        s1.move_row(0)
        assert (s1.next_hazard(), s1.active) == (row, "a")
        assert (s1.next_hazard(), s1.active) == (row, "b")
        assert (s1.next_hazard(), s1.active) == (row + 1, "a")
        assert s1.next_hazard() is None
        assert (s1.prev_hazard(), s1.active) == (row, "b")
        assert (s1.prev_hazard(), s1.active) == (row, "a")
        assert s1.prev_hazard() is None
    finally:
        s1.report.hazards = real
        s1._hazards = None
        s1.active = "a"


def test_state_at_the_cursor(s1):
    from replay.session import ReplaySession

    assert s1.cursor_state() is None                  # before the sessions are open
    s1.attach_sessions({side: ReplaySession(m.path, sidecar=False) for side, m in s1.models.items()})
    try:
        s1.move_row(0)
        a, b, changes = s1.cursor_state()
        assert (a, b) == (s1.seq_at("a"), s1.seq_at("b")) and changes == []     # the same boot so far
        rmrr = next(h for h in s1.report.hazards if h.finding["kind"] == "rmrr-disconnect")
        s1.move_row(rmrr.row)
        a, b, changes = s1.cursor_state()
        assert a == rmrr.finding["start"] and s1.on_gap("b") and b == s1.seq_at("b")
        ctx = next(c for c in changes if c["section"] == "context")
        assert (ctx["rid"], ctx["a"]["present"], ctx["b"]["present"]) == ("0000:00:14.0", False, True)
        assert s1.cursor_state()[2] is changes                                   # cached per cursor
    finally:
        s1.close_sessions()
    assert s1.sessions is None


def test_goto_a_step_of_the_active_side(s1):
    s1.active = "b"
    assert s1.parse_goto("end") == s1.models["b"].count
    assert s1.parse_goto("100") == 100
    with pytest.raises(ValueError, match="outside"):
        s1.parse_goto("100000")
    with pytest.raises(ValueError, match="not a step"):
        s1.parse_goto("op x")
    s1.goto(100)
    assert s1.seq_at("b") == 100 and s1.row_at(s1.row).seq_b == 100
    assert s1.parse_goto("+5") == 105 and s1.parse_goto("-500") == 1
    with pytest.raises(ValueError, match="outside 1.."):
        s1.parse_goto("0")                  # every row shows an event: steps are 1..count here
    s1.goto(1)
    assert s1.row == 0
    s1.active = "a"


def test_summary_and_equivalent_traces(s1, tmp_path):
    assert s1.summary() == "DIFFERENT · only-A findings 2, only-B 0, changed 4 · 10 regions"
    # the headers differ too (engine name and commit): said, not counted
    from tui.diff_detail import detail_lines
    text = "\n".join("".join(t for t, _ in parts) for parts, _ in detail_lines(s1, 200))
    assert "headers differ (not counted as a difference): engine.name: legacy | direct" in text
    same = _model(tmp_path, DIRECT, DIRECT)
    assert same.report.equivalent and same.summary() == "EQUIVALENT · only-A findings 0, only-B 0 · 0 regions"
    assert same.row == 0 and same.next_region() is None and same.next_hazard() is None
    for side in ("a", "b"):
        same.models[side].close()


def test_field_spans_mark_the_differing_fields():
    text = "iommu=0 bdf=0000:00:14.0 half=full method=cmpxchg16b did=3"
    assert [text[s:e] for s, e in field_spans(text, ("method", "did"))] == ["method=cmpxchg16b", "did=3"]
    assert [text[s:e] for s, e in field_spans(text, ("devfn",))] == ["bdf=0000:00:14.0"]
    call = "args=(domain=dom0, iommu=0, bus=00, devfn=14.0, mode=1)"
    assert [call[s:e] for s, e in field_spans(call, ("args.mode", "args.domain"))] == ["domain=dom0", "mode=1"]
    assert field_spans(call, ("iommu",)) == []           # a top-level name does not match inside args=()
    assert field_spans(text, ()) == []
    pieces = split_spans(text, field_spans(text, ("did",)))
    assert "".join(p for p, _ in pieces) == text and pieces[-1] == ("did=3", True)


# --- the app -----------------------------------------------------------------------------------

def _app(tmp_path, a=LEGACY, b=DIRECT, **kw):
    return DiffApp(trace_copy(tmp_path, a, "A-" + a), trace_copy(tmp_path, b, "B-" + b), **kw)


def _close(app):
    for m in app.dm.models.values():
        m.close()


def _lists(app):
    return {lst.side: lst for lst in app.query(DiffList)}


def _title(app, side):
    return app.query_one(f"#title-{side}").text()


def _painted_cursor_lines(app, lst) -> list[int]:
    """Screen lines of the list that are painted with a cursor background
    (what the compositor has on screen, not what render_line would say)."""
    cursor = {lst.cstyle_full(c).bgcolor for c in ("diff-list--cursor", "diff-list--cursor-other")}
    region = lst.content_region
    strips = app.screen._compositor.render_strips()
    out = []
    for y in range(region.y, region.y + region.height):
        cells = strips[y].crop(region.x + 3, region.x + 8)      # the seq column, under any mark
        if any(seg.style is not None and seg.style.bgcolor in cursor for seg in cells):
            out.append(y - region.y)
    return out


def _assert_synchronised(app):
    """Both lists show the same rows with the cursor on the model's row --
    painted there on screen, on the same line of both -- and each title shows
    that side's step at the row."""
    lists = _lists(app)
    dm = app.dm
    assert lists["a"].scroll_y == lists["b"].scroll_y
    top = round(lists["a"].scroll_y)
    assert top <= dm.row < top + lists["a"].page_height
    for side in ("a", "b"):
        assert lists[side]._cursor_row == dm.row
        assert _painted_cursor_lines(app, lists[side]) == [dm.row - top]
        assert f"step {dm.seq_at(side):,}" in _title(app, side)
        assert ("(gap)" in _title(app, side)) == dm.on_gap(side)


async def test_arrow_keys_move_both_sides_through_gap_rows(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        dm = app.dm
        _assert_synchronised(app)
        # down to the first row only A has (the legacy two-step writes)
        target = next(r for r in dm.rows(dm.row, dm.n_rows) if r.cls == ONLY_A)
        b_before = None
        while dm.row < target.index:
            b_before = dm.seq_at("b")
            await pilot.press("down")
            _assert_synchronised(app)
        assert dm.on_gap("b") and dm.seq_at("b") == b_before       # B stays where it was
        assert dm.seq_at("a") == target.seq_a
        assert "╌╌╌" in screen_text(app)
        await pilot.press("up")
        _assert_synchronised(app)
        assert dm.row == target.index - 1
    _close(app)


async def test_n_steps_the_active_side_and_tab_switches_it(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        dm = app.dm
        only_b = next(r for r in dm.rows(0, dm.n_rows) if r.cls == ONLY_B)
        await pilot.press("g", *str(only_b.seq_b - 1), "enter")      # A is active: A's step
        assert dm.active == "a"
        await pilot.press("tab")
        assert dm.active == "b" and " B " in _title(app, "b")
        await pilot.press("g", *str(only_b.seq_b - 1), "enter")
        assert dm.seq_at("b") == only_b.seq_b - 1
        await pilot.press("n")                     # B's next event: the one A lacks
        _assert_synchronised(app)
        assert dm.row == only_b.index and dm.on_gap("a")
        a_here = dm.seq_at("a")
        await pilot.press("tab", "n")              # A's next event is after the gap
        _assert_synchronised(app)
        assert dm.active == "a" and dm.seq_at("a") == a_here + 1
        await pilot.press("p")
        assert dm.seq_at("a") == a_here
        await pilot.press("shift+tab")
        assert dm.active == "b"
    _close(app)


async def test_next_and_previous_difference_keys(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        dm = app.dm
        regions = dm.alignment.regions
        bar = app.query_one("#diff-bar")
        assert dm.row == regions[0].row_start and "region 1/10" in bar.text()
        for k in range(1, len(regions)):
            await pilot.press("right_curly_bracket")
            assert dm.row == regions[k].row_start
            assert f"region {k + 1}/10" in bar.text()
            _assert_synchronised(app)
            # the row under the cursor is a differing one, drawn with its sign
            assert dm.row_at(dm.row).cls in (ARGS, ONLY_A, ONLY_B)
            assert f"region {k + 1} of 10" in app.detail.text()
        await pilot.press("right_curly_bracket")
        assert dm.row == regions[-1].row_start
        assert "no later difference" in app.command_line.text()
        await pilot.press("left_curly_bracket")
        assert dm.row == regions[-2].row_start and app.command_line.text().strip() == ""
        await pilot.press("home", "left_curly_bracket")
        assert dm.row == 0 and "no earlier difference" in app.command_line.text()
    _close(app)


async def test_changed_fields_are_named_with_both_values(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        # the first divergence: domain_context_mapping_one gained a mode argument
        detail = app.detail.text()
        assert "the same event with other values" in detail
        assert "label: A PM1  |  B MO1" in detail and "args.mode: A -  |  B 1" in detail
        lst = _lists(app)["b"]
        strip = lst.render_line(app.dm.row - round(lst.scroll_y))
        field_style = lst.cstyle("diff-list--field")
        marked = [seg.text for seg in strip if field_style.bgcolor is not None
                  and seg.style is not None and seg.style.bgcolor == field_style.bgcolor]
        assert any("MO1" in t for t in marked) and any("mode=1" in t for t in marked)
    _close(app)


async def test_hazard_delta_keys_land_on_findings_of_one_trace(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        dm = app.dm
        deltas = [h for h in dm.report.hazards if h.row is not None]
        await pilot.press("home")
        for h in deltas:
            await pilot.press("right_square_bracket")
            assert (dm.row, dm.active) == (h.row, h.side)
            _assert_synchronised(app)
            assert f"only {h.side.upper()}: {h.finding['kind']}" in app.detail.text()
        await pilot.press("right_square_bracket")
        assert "no later finding that only one trace has" in app.command_line.text()
        await pilot.press("left_square_bracket")
        assert dm.row == deltas[-2].row
        # the legacy RMRR window: its start row carries the ! mark on A's side
        rmrr = next(h for h in deltas if h.finding["kind"] == "rmrr-disconnect")
        dm.move_row(0)
        app._moved(dm.row)
        while dm.row != rmrr.row:
            await pilot.press("right_square_bracket")
        lst = _lists(app)["a"]
        line = lst.render_line(dm.row - round(lst.scroll_y)).text
        assert line.startswith("-!") and f"{rmrr.finding['start']}" in line
        # ... and the state at the cursor says why: A's entry is gone, B's is not
        assert app.sessions_loaded
        detail = app.detail.text()
        assert f"state at the cursor (A after step {dm.seq_at('a')}, B after step {dm.seq_at('b')})" in detail
        assert "context 0000:00:14.0 (iommu 0): A present=no" in detail and "| B present=yes" in detail
    _close(app)


async def test_equivalent_traces_say_so(tmp_path):
    app = _app(tmp_path, DIRECT, DIRECT)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert "EQUIVALENT" in app.query_one("#diff-bar").text()
        assert "the two traces have the same events" in app.detail.text()
        await pilot.press("right_curly_bracket")
        assert "no later difference" in app.command_line.text()
        await pilot.press("n", "n")
        _assert_synchronised(app)
        assert app.dm.cursor == {"a": 3, "b": 3}
    _close(app)


async def test_keys_wait_for_the_alignment_and_progress_is_shown(tmp_path, monkeypatch):
    gate = threading.Event()
    real = diff_app.compute_diff

    def slow(a, b, *, use_sidecar, progress=None):
        progress(1, 4)
        gate.wait(10)
        return real(a, b, use_sidecar=use_sidecar, progress=progress)

    monkeypatch.setattr(diff_app, "compute_diff", slow)
    monkeypatch.setattr(diff_app, "PROGRESS_INTERVAL", 0.0)
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(50):
            await pilot.pause(0.02)
            if app.dm.fraction:
                break
        assert "aligning… 25%" in app.query_one("#diff-bar").text()
        # meanwhile each list shows its own trace's first events, not aligned
        lst = _lists(app)["a"]
        assert "not aligned yet" in lst.render_line(0).text
        assert "op-begin" in lst.render_line(1).text
        await pilot.press("right_curly_bracket")
        assert "still being aligned" in app.command_line.text()
        gate.set()
        await settle(app, pilot)
        assert app.dm.ready and app.dm.row == app.dm.alignment.regions[0].row_start
    _close(app)


async def test_a_cancelled_diff_ends_quietly(tmp_path, monkeypatch):
    """The worker's `except _Cancelled`: the diff worker is cancelled (the
    view leaving) while the diff is being computed; the next progress call
    raises, and the worker ends without a message."""
    started, ended = threading.Event(), threading.Event()
    seen: list = []

    def endless(a, b, *, use_sidecar, progress=None):
        started.set()
        try:
            while True:
                progress(1, 4)
                ended.wait(0.01)
        except BaseException as exc:
            seen.append(exc)
            ended.set()
            raise

    monkeypatch.setattr(diff_app, "compute_diff", endless)
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(500):        # the worker starts after the first refresh
            if started.is_set():
                break
            await pilot.pause(0.02)
        assert started.is_set()
        app.workers.cancel_group(app, "diff")
        for _ in range(500):
            if ended.is_set():
                break
            await pilot.pause(0.02)
        await pilot.pause(0.1)
        assert [type(e).__name__ for e in seen] == ["_Cancelled"]
        assert "cannot diff" not in app.detail.text() and not app.dm.ready
    _close(app)


@pytest.mark.parametrize("error,line", [(OSError("boom"), "cannot diff: boom"),
                                         (ValueError("boom"), "cannot diff: internal error: ValueError: boom")],
                         ids=["io-error", "bug"])
async def test_a_failing_diff_is_one_line_on_screen(tmp_path, monkeypatch, error, line):
    def broken(a, b, *, use_sidecar, progress=None):
        raise error

    monkeypatch.setattr(diff_app, "compute_diff", broken)
    app = _app(tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert line in app.detail.text()
        await pilot.press("n")
        assert line in app.command_line.text()
    _close(app)


async def test_without_sidecar_nothing_is_written_beside_the_traces(tmp_path):
    app = _app(tmp_path, use_sidecar=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.dm.ready and len(app.dm.alignment.regions) == 10
    _close(app)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A-" + LEGACY, "B-" + DIRECT]


async def test_click_a_row_and_the_map_help_and_quit(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        dm = app.dm
        top = round(_lists(app)["b"].scroll_y)
        await pilot.click("#list-b", offset=(10, 3))
        assert dm.row == top + 3 and dm.active == "b"
        _assert_synchronised(app)
        width = app.query_one("#diff-map").size.width
        await pilot.click("#diff-map", offset=(width - 1, 0))
        assert dm.row == (width - 1) * dm.n_rows // width
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape", "q")
    assert app.return_code == 0
    _close(app)


async def test_damaged_second_trace_banner(tmp_path):
    cut = record_trace(tmp_path / "cut.vtdt", engine="direct", cx16=True)
    data = cut.read_bytes()
    cut.write_bytes(data[: int(len(data) * 0.6)])
    a = trace_copy(tmp_path, DIRECT, "A.vtdt")
    app = DiffApp(a, cut)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        assert "B: damaged trace" in screen_text(app)
        assert "damaged" in _title(app, "b")
        assert app.dm.ready and app.dm.report.damaged
        assert "DIFFERENT (damaged input: readable prefixes)" in app.query_one("#diff-bar").text()
    _close(app)


async def test_translucent_colours_are_blended_not_solid(tmp_path):
    """A component colour such as `$error 18%` or `$text-muted` is drawn as
    Textual resolves it over the widget's background, not as the opaque
    colour underneath (a solid red row, white 'muted' text)."""
    from tui.diff_bars import DiffBar, DiffMap, SideTitle
    from tui.diff_detail import DiffDetail

    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        checked = 0
        for cls in (DiffList, DiffDetail, DiffBar, SideTitle, DiffMap):
            w = app.query(cls).first()
            for comp in sorted(w.COMPONENT_CLASSES):
                full = w.get_component_rich_style(comp)
                got = w.cstyle(comp)
                if got.bgcolor is not None:
                    assert got.bgcolor == full.bgcolor, comp
                    checked += 1
                if got.color is not None:
                    assert got.color == full.color, comp
                    checked += 1
        assert checked > 20
        lst = _lists(app)["a"]
        removed = lst.cstyle("diff-list--removed").bgcolor.triplet
        assert max(removed) < 96            # a dark tint of red, not the solid error red
    _close(app)


async def test_two_traces_without_a_readable_event(tmp_path):
    """Both cut inside the first chunk: nothing to align, no crash."""
    a = record_trace(tmp_path / "a.vtdt", chunk_events=4096)
    a.write_bytes(a.read_bytes()[:1200])
    b = tmp_path / "b.vtdt"
    b.write_bytes(a.read_bytes())
    app = DiffApp(a, b)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.dm.ready and app.dm.n_rows == 0
        assert "neither trace has a readable event" in app.detail.text()
        await pilot.press("n", "down", "right_curly_bracket", "right_square_bracket", "tab", "end", "e")
        assert "step 0" in _title(app, "a")
    _close(app)


async def test_tab_does_nothing_behind_the_help_screen(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark", "tab")
        assert isinstance(app.screen, HelpScreen) and app.dm.active == "a"
        await pilot.press("escape", "tab")
        assert app.dm.active == "b"
    _close(app)


async def test_resize_keeps_the_cursor_in_view(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(160, 45)) as pilot:
        await settle(app, pilot)
        for _ in range(14):
            await pilot.press("down")
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        await pilot.pause()
        _assert_synchronised(app)
        # the event count is left out of a title too narrow for it
        assert " ev" not in _title(app, "a") and "legacy" in _title(app, "a")
    _close(app)


async def test_finding_status_window_marks_and_window_end(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        dm = app.dm
        rmrr = next(h for h in dm.report.hazards if h.finding["kind"] == "rmrr-disconnect")
        k = [h for h in dm.report.hazards if h.row is not None].index(rmrr)
        await pilot.press("home")
        for _ in range(k + 1):
            await pilot.press("right_square_bracket")
        start, end = rmrr.finding["start"], rmrr.finding["end"]
        n = len([h for h in dm.report.hazards if h.row is not None])
        assert (f"finding {k + 1}/{n} · only A · rmrr-disconnect 0000:00:14.0 [{start}, {end})"
                in app.command_line.text())
        # where ]/[ landed is listed first in the lower pane
        assert app.detail.text().split("only one trace has:")[1].split("\n")[1].strip().startswith(
            "only A: rmrr-disconnect")
        # the rows inside A's window carry the window mark
        lst = _lists(app)["a"]
        await pilot.press("down")
        line = lst.render_line(dm.row - round(lst.scroll_y)).text
        assert line[1] == "▌" and start < dm.seq_at("a") < end
        await pilot.press("up", "e")
        assert dm.active == "a" and dm.seq_at("a") == end
        _assert_synchronised(app)
        await pilot.press("e")
        assert "e goes to the end of the window" in app.command_line.text()
    _close(app)


async def test_lower_pane_scrolls_from_the_keyboard(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        d = app.detail
        assert d.virtual_size.height > d.scrollable_content_region.height   # more than fits at 80x24
        await pilot.press("J")
        assert d.scroll_y > 0
        await pilot.press("K")
        assert d.scroll_y == 0
        await pilot.press("shift+down")
        assert d.scroll_y > 0
        # a move shows the new row's text from its first line
        await pilot.press("n")
        assert d.scroll_y == 0 and d.text().startswith(f"row {app.dm.row + 1} of")
        # a failed move with nothing to say clears the last message
        await pilot.press("home", "left_curly_bracket")
        assert "no earlier difference" in app.command_line.text()
        await pilot.press("up")
        assert app.command_line.text().strip() == ""
    _close(app)


async def test_rows_of_identical_operations_name_their_own_operation(tmp_path):
    app = _app(tmp_path, DIRECT, DIRECT)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        await pilot.press("end")
        detail = app.detail.text()
        assert "op 2 deassign 0000:00:14.0: the same in both traces (one of a run of 3)" in detail
        await pilot.press("g", "2", "0", "0", "enter")
        assert "op 1 assign 0000:00:14.0 -> guest: the same in both traces" in app.detail.text()
    _close(app)


async def test_region_numbers_also_as_vtdtrace_diff_counts_them(tmp_path):
    app = _app(tmp_path)
    async with app.run_test(size=(120, 34)) as pilot:
        await settle(app, pilot)
        for _ in range(4):
            await pilot.press("right_curly_bracket")
        # region 5 overall is the first of op 1 (assign) in the text report
        assert "region 5 of 10 (region 1 of this operation in `vtdtrace diff`)" in app.detail.text()
    _close(app)


# --- the command line ----------------------------------------------------------------------------

def test_view_two_traces_without_a_terminal_says_so(run_cli, tmp_path):
    import subprocess
    a, b = trace_copy(tmp_path, LEGACY), trace_copy(tmp_path, DIRECT)
    r = run_cli("view", a, b, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "needs a terminal" in r.stderr and r.stderr.count("\n") == 1
    junk = tmp_path / "junk.vtdt"
    junk.write_bytes(b"nothing here")
    r = run_cli("view", a, junk)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "junk.vtdt" in r.stderr and r.stdout == ""
    r = run_cli("view", a, tmp_path / "missing.vtdt")
    assert r.returncode == 2 and "missing.vtdt: no such file" in r.stderr


def test_view_two_traces_exit_status(tmp_path, monkeypatch):
    """The viewer's status: 0, or 3 when either trace is damaged."""
    from vtdtrace.commands import view

    ran = []
    monkeypatch.setattr(DiffApp, "run", lambda self: ran.append(tuple(m.count for m in self.dm.models.values())))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    a, b = trace_copy(tmp_path, LEGACY), trace_copy(tmp_path, NOCX16)
    cut = record_trace(tmp_path / "cut.vtdt")
    cut.write_bytes(cut.read_bytes()[:2000])
    ns = lambda x, y: argparse.Namespace(trace=str(x), trace2=str(y), no_sidecar=True)  # noqa: E731
    assert view.run(ns(a, b)) == 0
    assert view.run(ns(a, cut)) == 3
    assert len(ran) == 2


# --- SVG snapshots (pytest-textual-snapshot; update with --snapshot-update) ------------------------

def test_snapshot_legacy_against_direct_at_the_rmrr_window(snap_compare, tmp_path):
    """XSA-400 side by side: the legacy unmap/remap on the left (its
    rmrr-disconnect window marked), the direct single write on the right."""
    app = _app(tmp_path)

    async def run_before(pilot):
        await settle(app, pilot)
        rmrr = next(h for h in app.dm.report.hazards if h.finding["kind"] == "rmrr-disconnect")
        while app.dm.row != rmrr.row:
            await pilot.press("right_square_bracket")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(130, 36), run_before=run_before)
    _close(app)


def test_snapshot_cx16_against_no_cx16_narrow(snap_compare, tmp_path):
    """The two write paths of the patched engine at 80x24: the first
    difference, where the cmpxchg16b store becomes the two-step write."""
    app = _app(tmp_path, DIRECT, NOCX16)

    async def run_before(pilot):
        await settle(app, pilot)
        while app.dm.row_at(app.dm.row).cls == ARGS:
            await pilot.press("down")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)
    _close(app)
