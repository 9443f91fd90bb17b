"""SVG snapshots of `vtdtrace view` (pytest-textual-snapshot).

Deterministic by construction: a fixed terminal size, traces copied under a
fixed file name (only the base name is ever drawn), no clock on screen, no
notifications, animations off, the loader finished before the picture, no
text input focused (no blinking cursor).  Update with
`pytest tests/test_tui_snapshots.py --snapshot-update` and read the diff."""

from __future__ import annotations

from test_tui_support import record_trace, settle, trace_copy

from tui.app import VtdtraceApp
from tui.model import Filter


def _app(path):
    return VtdtraceApp(path)


def _at_hazard(snap_compare, tmp_path, size, *keys, name=None):
    app = _app(trace_copy(tmp_path, *(name,) if name else ()))

    async def run_before(pilot):
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        for k in keys:
            await pilot.press(k)
        await pilot.pause()

    ok = snap_compare(app, terminal_size=size, run_before=run_before)
    app.model.close()
    return ok


# The layout at the three sizes a Xen developer works at: stacked
# at 80 and 120 columns, side by side at 200.
def test_main_screen_at_a_hazard(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (80, 24))


def test_main_screen_at_a_hazard_120(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (120, 35))


def test_main_screen_at_a_hazard_wide(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (200, 50))


def test_maximised_event_list_120(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (120, 35), "1")


def test_maximised_event_list_80(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (80, 24), "1")


def test_maximised_event_list_wide(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (200, 50), "1")


def test_stack_pane_maximised_120(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (120, 35), "3", "3")


def test_findings_list_maximised_120(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (120, 35), "4", "4")


def test_legacy_rmrr_entry_cut_off_80(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (80, 24), name="s1-usb-rmrr.legacy.vtdt")


def test_legacy_rmrr_entry_cut_off_120(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (120, 35), name="s1-usb-rmrr.legacy.vtdt")


def test_legacy_rmrr_entry_cut_off_wide(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (200, 50), name="s1-usb-rmrr.legacy.vtdt")


def test_timeline_zoomed_to_the_operation_120(snap_compare, tmp_path):
    assert _at_hazard(snap_compare, tmp_path, (120, 35), "z")


def test_search_and_filter_state(snap_compare, tmp_path):
    app = _app(trace_copy(tmp_path))

    async def run_before(pilot):
        await settle(app, pilot)
        app.apply_filter(Filter(kinds=("ctx-write", "flush-context"), device="0000:00:14.0"))
        await settle(app, pilot)
        app.model.search_text = "half=hi"
        await pilot.press("greater_than_sign")
        await settle(app, pilot)

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)
    app.model.close()


def test_damaged_trace_banner(snap_compare, tmp_path):
    path = record_trace(tmp_path / "s1-cut.vtdt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])
    app = _app(path)

    async def run_before(pilot):
        await settle(app, pilot)
        await pilot.press("end")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)
    app.model.close()


def test_help_screen(snap_compare, tmp_path):
    app = _app(trace_copy(tmp_path))

    async def run_before(pilot):
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 40), run_before=run_before)
    app.model.close()
