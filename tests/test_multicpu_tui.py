"""`vtdtrace view` of a two-CPU trace: the CPU column, o/u within the
current event's CPU, c to follow one CPU, each CPU's op, stack and lock
wait in the state and stack panes; SVG snapshots at 80 and 120 columns.

The trace (tests/multicpu_helpers.record_preempted): CPU 1's assign is
preempted inside domain_context_mapping_one, CPU 0 begins its assign and
spins on pcidevs_lock, CPU 1 goes on -- so CPU 1's calls enclose CPU 0's
op-begin and lock-wait.  Positions are looked up in the trace, not
hard-coded."""

from __future__ import annotations

import pytest
from multicpu_helpers import record_preempted
from test_tui_support import decoded, screen_text, settle

from tui.app import VtdtraceApp
from tui.key_footer import KeyFooter


@pytest.fixture
def two(tmp_path):
    path = tmp_path / "two-cpu.vtdt"        # a fixed base name: it is drawn in the title
    record_preempted(path)
    return path


@pytest.fixture
def evs(two):
    return decoded(two)


def _wait(evs):
    return next(e for e in evs if e["kind"] == "lock-wait")


def _enclosing_call(evs, wait):
    """CPU 1's domain_context_mapping_one call around CPU 0's lock-wait, and its return."""
    call = max((e for e in evs if e["seq"] < wait["seq"] and e["cpu"] == 1 and e["kind"] == "call"
                and e["func"] == "domain_context_mapping_one"), key=lambda e: e["seq"])
    ret = next(e for e in evs if e["seq"] > call["seq"] and e["cpu"] == 1 and e["kind"] == "return"
               and e["func"] == "domain_context_mapping_one")
    assert call["seq"] < wait["seq"] < ret["seq"]
    return call, ret


async def test_step_over_a_call_passes_other_cpus_events(two, evs):
    wait = _wait(evs)
    call, ret = _enclosing_call(evs, wait)
    app = VtdtraceApp(two)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        app.goto_seq(call["seq"] - 1)
        await pilot.press("o")                      # the whole call, CPU 0's events inside included
        assert app.model.cursor == ret["seq"]
        # on CPU 1's event just before CPU 0's op-begin: o is CPU 1's next event, not CPU 0's op
        begin = evs[wait["seq"] - 2]
        assert begin["kind"] == "op-begin" and begin["cpu"] == 0
        app.goto_seq(begin["seq"] - 1)
        await pilot.press("o")
        nxt = next(e for e in evs if e["seq"] > begin["seq"] and e["cpu"] == 1)
        assert app.model.cursor == nxt["seq"]
        app.model.close()


async def test_step_over_an_op_goes_to_its_own_op_end(two, evs):
    wait = _wait(evs)
    begin = evs[wait["seq"] - 2]
    end = next(e for e in evs if e["kind"] == "op-end" and e["op"] == begin["op"])
    boot_end = next(e for e in evs if e["kind"] == "op-end" and e["op"] == 0)
    other_end = next(e for e in evs if e["kind"] == "op-end" and e["cpu"] == 1)
    assert other_end["seq"] < end["seq"]            # CPU 1's op ends first: o must not stop there
    app = VtdtraceApp(two)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        app.goto_seq(boot_end["seq"])              # CPU 0's event: its next one is op 1's op-begin
        await pilot.press("o")
        assert app.model.cursor == end["seq"]
        # u from CPU 0's lock-wait (top level of its op): op 1's op-end, not CPU 1's return
        app.goto_seq(wait["seq"])
        await pilot.press("u")
        assert app.model.cursor == end["seq"]
        app.model.close()


async def test_follow_a_cpu(two, evs):
    wait = _wait(evs)
    app = VtdtraceApp(two)
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        start = wait["seq"] - 3                     # a CPU 1 event
        assert evs[start - 1]["cpu"] == 1
        app.goto_seq(start)
        await pilot.press("c")
        assert app.model.follow_cpu == 1
        assert "CPU 1 only" in screen_text(app)     # title and footer say so
        assert any("CPU 1 only" in label for _, label, _ in app.query_one(KeyFooter).entries())
        seen = []
        for _ in range(6):
            await pilot.press("n")
            seen.append(app.model.cursor)
        cpu1 = [e["seq"] for e in evs if e["seq"] > start and e["cpu"] == 1][:6]
        assert seen == cpu1                        # CPU 0's op-begin and lock-wait passed over
        await pilot.press("p")
        assert app.model.cursor == cpu1[-2]
        await pilot.press("c")
        assert app.model.follow_cpu is None
        await pilot.press("n")
        assert app.model.cursor == cpu1[-2] + 1
        app.model.close()


async def test_state_and_stack_panes_show_each_cpu(two, evs):
    wait = _wait(evs)
    app = VtdtraceApp(two)
    async with app.run_test(size=(120, 50)) as pilot:
        await settle(app, pilot)
        app.goto_seq(wait["seq"])
        await pilot.pause()
        state = app.view.state_pane.text()
        lines = state.splitlines()
        # each CPU's op and wait first (right under the step line), stacks at the end
        assert lines[1] == "CPU 0  op 1 assign 0000:00:14.0 -> guest  spins on pcidevs_lock (held by cpu 1)"
        assert lines[2] == "CPU 1  op 2 assign 0000:00:17.0 -> guest"
        assert "Stack 1: assign_device > intel_iommu_assign_device > reassign_device_ownership" in state
        assert "Stack 0" not in state
        await pilot.press("3")
        await pilot.pause()
        stack = app.view.stack_pane.text()
        assert "operation: op 1 assign 0000:00:14.0 -> guest" in stack     # the event's CPU's op
        assert "cpu 0  op 1 assign 0000:00:14.0 -> guest  spins on pcidevs_lock (held by cpu 1)" in stack
        assert "cpu 1  op 2 assign 0000:00:17.0 -> guest" in stack
        app.model.close()


async def test_one_cpu_has_nothing_to_follow(tmp_path):
    from test_tui_support import trace_copy

    app = VtdtraceApp(trace_copy(tmp_path))
    async with app.run_test(size=(120, 35)) as pilot:
        await settle(app, pilot)
        await pilot.press("c")
        assert app.model.follow_cpu is None
        assert "ran on one CPU" in screen_text(app)
        assert not any(key == "c" for key, _, _ in app.query_one(KeyFooter).entries())
        app.model.close()


def _at_wait(snap_compare, two, evs, size):
    app = VtdtraceApp(two)

    async def run_before(pilot):
        await settle(app, pilot)
        app.goto_seq(_wait(evs)["seq"])
        await pilot.pause()

    ok = snap_compare(app, terminal_size=size, run_before=run_before)
    app.model.close()
    return ok


def test_snapshot_two_cpus_80(snap_compare, two, evs):
    assert _at_wait(snap_compare, two, evs, (80, 24))


def test_snapshot_two_cpus_120(snap_compare, two, evs):
    assert _at_wait(snap_compare, two, evs, (120, 35))
