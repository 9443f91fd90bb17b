"""diff of two schedules of one scenario: the header comparison lists the
schedule difference and the first divergence names the racing events --
what each trace ran, on which CPU, where they parted -- in text, JSON and
the TUI's diff view."""

from __future__ import annotations

import json

import pytest
from multicpu_helpers import TWO_CPU, SwitchTo, record_two_cpu
from test_tui_support import screen_text, settle

from replay.diff import Side, diff_streams, render_text
from tracer import schema as S
from tracer.record import make_header, record
from tracer.recorder import ListSink
from tracer.scenario import load_scenario


@pytest.fixture
def two(tmp_path):
    a, b = tmp_path / "default.vtdt", tmp_path / "cpu1-first.vtdt"
    record_two_cpu(a)
    schedule = record_two_cpu(b, chooser=SwitchTo([1]))
    return a, b, schedule


def test_text_and_json_name_the_racing_events(two, run_cli):
    a, b, schedule = two
    r = run_cli("diff", a, b)
    assert r.returncode == 1, r.stderr
    assert f"  schedule: default | {schedule}\n" in r.stdout
    seq = int(schedule.split(":")[0]) + 1
    assert (f"first divergence at seq {seq}: A runs CPU 0 op 1 op-begin verb=assign bdf=0000:00:14.0 "
            f"domain=guest, B runs CPU 1 op 2 op-begin verb=assign bdf=0000:00:17.0 domain=guest\n") in r.stdout
    doc = json.loads(run_cli("diff", a, b, "--json").stdout)
    race = doc["first_divergence"]["race"]
    assert race["seq_a"] == race["seq_b"] == seq
    assert race["a"]["cpu"] == 0 and race["b"]["cpu"] == 1
    assert race["a"]["kind"] == race["b"]["kind"] == "op-begin"
    assert {"path": "schedule.choices", "a": "", "b": schedule} in doc["header_diff"]


def test_a_race_inside_ops_names_function_label_and_kind():
    """Two event streams that part at a DID-map store of CPU 0 against an
    event of CPU 1 (as a pre-XSA-399 teardown racing an assign would): the
    line reads like the brief of the race."""
    platform = load_scenario(str(TWO_CPU))
    sink = ListSink()
    record(platform, "direct", sink)
    ea = [list(ev) for ev in sink.events]
    k = next(i for i, ev in enumerate(ea) if ev[S.I_KIND] == S.K_DID_MAP and ev[S.I_OP] == 1)
    other = list(ea[k])
    other[S.I_CPU], other[S.I_OP], other[S.I_LABEL] = 1, 2, "DK4"
    other[S.I_FUNC] = S.FUNC_CODE["cleanup_domid_map"]
    eb = [list(ev) for ev in ea[:k]] + [other] + [list(ev) for ev in ea[k:]]
    for i, ev in enumerate(eb):
        ev[S.I_SEQ] = i + 1
    ha = make_header(platform, "direct")
    hb = make_header(platform, "direct")
    hb["schedule"]["choices"] = f"{k}:c1"
    report = diff_streams(Side.from_events(ha, ea), Side.from_events(hb, eb))
    text = render_text(report)
    assert (f"first divergence at seq {k + 1}: A runs CPU 0 context_set_domain_id MO5 did-map, "
            f"B runs CPU 1 cleanup_domid_map DK4 did-map\n") in text


def test_the_same_schedule_names_no_race(two):
    a, _, _ = two
    from replay.diff import diff_files

    report = diff_files(a, a)
    assert report.first_divergence is None
    # other knobs, the same default schedule: a divergence without a race
    platform = load_scenario(str(TWO_CPU))
    sink = ListSink()
    record(platform, "direct", sink)
    sink2 = ListSink()
    record(load_scenario(str(TWO_CPU)), "legacy", sink2)
    rep = diff_streams(Side.from_events(make_header(platform, "direct"), sink.events),
                       Side.from_events(make_header(platform, "legacy"), sink2.events))
    assert rep.first_divergence is not None and "race" not in rep.first_divergence


async def test_the_tui_diff_view_names_the_race(two, tmp_path):
    from tui.diff_app import DiffApp
    from tui.diff_detail import detail_lines

    a, b, schedule = two
    app = DiffApp(a, b)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        text = screen_text(app)
        # the detail pane, whole (the header difference is at its end)
        detail = "\n".join("".join(part for part, _ in line[0]) for line in detail_lines(app.dm, 200))
        for m in app.dm.models.values():
            m.close()
    # the view opens on the first divergence, and names the race there
    assert "first divergence at seq" in text and "A runs CPU 0 op 1 op-begin" in text
    assert f'schedule.choices: "" | {schedule}' in detail
