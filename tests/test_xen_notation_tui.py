"""The viewer's go-to prompts follow the command line's position rule
(vtdtrace.positions.decimal): decimal digits, leading zeros allowed, no hex
and no underscores; a sign makes the step relative to the cursor."""

from __future__ import annotations

import pytest
from test_tui_support import settle, trace_copy

from tui.app import VtdtraceApp
from tui.command_line import CommandLine
from tui.model import TraceModel


@pytest.fixture
def model(tmp_path):
    m = TraceModel(str(trace_copy(tmp_path)))
    yield m
    m.close()


def test_goto_accepts_leading_zeros_and_refuses_hex_and_underscores(model):
    assert model.parse_goto("007") == 7
    assert model.parse_goto("0010") == 10
    for bad in ("1_0", "0x10", "1e2", "5.0", "+1_0"):
        with pytest.raises(ValueError, match="expected a decimal step number"):
            model.parse_goto(bad)
    with pytest.raises(ValueError, match=r"positions are decimal"):
        model.parse_goto("0x10")
    model.cursor = 20
    assert model.parse_goto("+05") == 25 and model.parse_goto("- 5") == 15


async def test_goto_prompt_refuses_1_0(tmp_path):
    app = VtdtraceApp(trace_copy(tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        line = app.query_one(CommandLine)
        await pilot.press("g", *"1_0", "enter")
        await pilot.pause()
        assert line.asking and "expected a decimal step number, got '1_0'" in line.text()
        assert app.model.cursor == 0
        await pilot.press("ctrl+u", *"010", "enter")
        await pilot.pause()
        assert not line.asking and app.model.cursor == 10


def test_readme_key_summary_names_every_key_of_the_trace_view():
    """README's `view` paragraph names every binding of the trace view
    (arrows, `<`/`>` match stepping and `F` are in docs/TUI.md)."""
    from conftest import REPO
    text = (REPO / "README.md").read_text()
    para = text[text.index("### `vtdtrace view TRACE [TRACE2]`"):text.index("`vtdtrace view A B` puts")]
    skip = {"down", "up", "greater_than_sign", "less_than_sign", "F"}
    for b in VtdtraceApp.BINDINGS:
        if b.key in skip:
            continue
        shown = b.key_display or b.key
        shown = {"1": "1`–`4", "2": "1`–`4", "3": "1`–`4", "4": "1`–`4"}.get(shown, shown)
        assert f"`{shown}`" in para or f"/`{shown}`" in para, f"README lacks the key {shown!r}"


def test_diff_view_shows_a_differing_devfn_as_the_requester_id(tmp_path):
    """The lower pane reads values from the JSON form; there seg/bus/devfn
    are one `bdf` (shape 2), so a row differing in devfn shows both BDFs."""
    from replay.jsonout import EventPresenter
    from replay.reader import open_trace
    from tracer import schema as S
    from tui.diff_detail import _field_value
    with open_trace(trace_copy(tmp_path)) as t:
        pres = EventPresenter(t.schema, t.header)
        evs = list(t.events())
    ctx = next(e for e in evs if e[0] == S.K_CTX_WRITE and e[8] == 0xA0)
    assert _field_value(pres, ctx, "devfn") == "0000:00:14.0"
    assert _field_value(pres, ctx, "half") == ctx[9]
    call = next(e for e in evs if e[0] == S.K_CALL and S.FUNCS[e[4]] == "domain_context_mapping_one"
                and dict(e[6]).get("devfn") == 0xA0)
    assert _field_value(pres, call, "args.devfn") == "0000:00:14.0"
    assert _field_value(pres, call, "args.domain") == "dom0"
    lone = next(e for e in evs if e[0] == S.K_CALL and S.FUNCS[e[4]] == "domain_context_mapping"
                and dict(e[6]).get("devfn") == 0xA0)
    assert _field_value(pres, lone, "args.devfn") == "14.0"
