"""Property: the replay rebuilds exactly the engine's architectural state.

Random scenarios (tests/scenario_gen.py: devices, bridges, phantom functions,
RMRRs -- shared ones too --, knobs, op sequences, injected faults; sizes bounded) are recorded under every engine
variant.  The fold of the recorded events is compared with the engine's own
live snapshot (``Engine.canonical()``, taken by the recorder's observer), and
``state_at(n)`` through checkpoints and the sidecar with the fold from event 0.

No wall-clock limits (``deadline=None``); under CI (HYPOTHESIS_PROFILE=ci,
set by .ci/run) examples are derandomized so a run is reproducible.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scenario_gen import choosers, platform_of, scenarios  # noqa: F401 (scenarios: also test_stale_devtlb's)

from replay.session import ReplaySession
from replay.state import apply, initial_state, to_canonical
from tracer.schema import I_CPU

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
SETTINGS = settings(deadline=None, derandomize=CI, suppress_health_check=[HealthCheck.too_slow])

_platform = platform_of


def _record(platform, variant, observe, chooser=None):
    """Record with ``observe(engine, event)`` after every event; returns the events."""
    from tracer.record import record
    from tracer.recorder import ListSink

    sink = ListSink()
    record(platform, variant, sink, on_event=observe, chooser=chooser)
    return sink.events


def _variants():
    from tracer.engine import VARIANTS
    return sorted(VARIANTS)


@SETTINGS
@given(scenarios())
def test_replay_equals_the_engine_after_every_event(text):
    platform = _platform(text)
    for variant in _variants():
        st_ = initial_state({"platform": platform.to_header()})
        diffs = []

        def observe(engine, ev, st_=st_, diffs=diffs, variant=variant):  # called before the loop moves on
            apply(st_, ev)
            if not diffs:
                got, want = to_canonical(st_), engine.canonical()
                if got != want:
                    diffs.append((variant, ev, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))

        _record(platform, variant, observe)
        assert not diffs, diffs[0]


@SETTINGS
@given(scenarios(max_cpus=3), choosers())
def test_replay_equals_the_engine_after_every_event_on_several_cpus(text, make_chooser):
    """The same on one to three CPUs under a random schedule: the per-CPU
    stacks, open ops, lock waits and the locks each CPU holds are folded
    from the events alone (canonical ``ops``/``waits``/``stacks``)."""
    platform = _platform(text)
    interleaved = 0
    for variant in _variants():
        st_ = initial_state({"platform": platform.to_header()})
        diffs = []
        cpus_seen = set()

        def observe(engine, ev, st_=st_, diffs=diffs, variant=variant, cpus_seen=cpus_seen):
            apply(st_, ev)
            cpus_seen.add(ev[I_CPU])
            if not diffs:
                got, want = to_canonical(st_), engine.canonical()
                if got != want:
                    diffs.append((variant, ev, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))

        _record(platform, variant, observe, make_chooser())
        assert not diffs, diffs[0]
        interleaved += len(cpus_seen - {-1}) > 1
    # every variant runs the scenario's ops on the same CPUs
    assert interleaved in (0, len(_variants()))
    event("CPUs that ran: " + ("several" if interleaved else "one"))


@SETTINGS
@given(scenarios(), st.integers(2, 9), st.integers(1, 40))
def test_state_at_through_checkpoints_equals_the_fold_from_zero(text, chunk_events, min_events):
    from tracer.record import make_header
    from tracer.writer import TraceWriter

    platform = _platform(text)
    variant = _variants()[len(text) % len(_variants())]
    states = []
    header = make_header(platform, variant)
    st_ = initial_state(header)
    states.append(st_.copy())

    def observe(engine, ev):
        apply(st_, ev)
        states.append(st_.copy())

    events = _record(platform, variant, observe)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.vtdt"
        with TraceWriter(path, header, chunk_events=chunk_events) as w:
            for ev in events:
                w.append(ev)
        for _ in range(2):      # built, then from the sidecar
            with ReplaySession(path, min_events=min_events) as s:
                assert s.count == len(events)
                for n in list(range(0, s.count + 1, 3)) + [s.count] + list(range(s.count, -1, -7)):
                    assert s.state_at(n) == states[n], n


def test_a_re_added_device_starts_without_ats():
    """Found by the property above: pci_remove_device frees the pdev and
    pci_add_device allocates a fresh one, so after remove + add no ATS is
    enabled until an ats-enable event says so, in the engine as in the replay."""
    platform = _platform(
        'name = "ats-readd"\ndescription = "x"\n[platform]\ncx16 = false\nats = true\n'
        '[[iommu]]\nid = 0\ninclude_all = true\nnd = 1\nlevels = 3\n'
        '[[device]]\nbdf = "0000:00:02.0"\ntype = "pcie-endpoint"\nid = "8086:a12f"\n'
        'phantom_stride = 1\nats = true\n'
        '[[device]]\nbdf = "0000:00:19.0"\ntype = "pcie-endpoint"\nid = "8086:1502"\npresent = false\n'
        '[[domain]]\nname = "dom0"\nid = 0\nhardware = true\n[[domain]]\nname = "guest"\nid = 1\n'
        '[[op]]\ndo = "add"\ndevice = "0000:00:19.0"\n'
        '[[op]]\ndo = "assign"\ndevice = "0000:00:02.0"\nto = "guest"\n'
        '[[op]]\ndo = "deassign"\ndevice = "0000:00:02.0"\n'
        '[[op]]\ndo = "remove"\ndevice = "0000:00:02.0"\n[[op]]\ndo = "add"\ndevice = "0000:00:02.0"\n')
    for variant in _variants():
        st_ = initial_state({"platform": platform.to_header()})
        diffs = []

        def observe(engine, ev, st_=st_, diffs=diffs, variant=variant):  # called before the loop moves on
            apply(st_, ev)
            got, want = to_canonical(st_), engine.canonical()
            if got != want and not diffs:
                diffs.append((variant, ev, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))

        _record(platform, variant, observe)
        assert not diffs, diffs[0]
