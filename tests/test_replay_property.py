"""Property: the replay rebuilds exactly the engine's architectural state.

Random scenarios (devices, bridges, phantom functions, RMRRs, knobs, op
sequences, injected faults; sizes bounded) are recorded under every engine
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

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from replay.session import ReplaySession
from replay.state import apply, initial_state, to_canonical

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
SETTINGS = settings(deadline=None, derandomize=CI, suppress_health_check=[HealthCheck.too_slow])

ENDPOINT_IDS = ("8086:a12f", "8086:1502", "8086:0087", "10ec:8168", "8086:0126")
OWNERS = ("dom0", "dom0", "dom0", "dom_io", "guest1")


@st.composite
def scenarios(draw) -> str:
    """A scenario file (TOML text).  Mostly valid by construction; the loader
    has the last word (invalid ones are assumed away)."""
    knobs = {k: draw(st.booleans()) for k in ("cx16", "caching_mode", "coherent", "quarantine", "ats",
                                              "rwbf", "hwdom_passthrough")}
    knobs["coherent"] = knobs["coherent"] or draw(st.booleans())       # mostly coherent
    knobs["hwdom_passthrough"] = knobs["hwdom_passthrough"] and draw(st.booleans())
    lines = ['name = "prop"', 'description = "hypothesis"', "", "[platform]"]
    lines += [f"{k} = {'true' if v else 'false'}" for k, v in knobs.items()]

    devices = []          # (bdf, type, extra lines)
    if draw(st.booleans()):
        devices.append(("0000:00:00.0", "host-bridge", ['id = "8086:0c00"']))
    slots = draw(st.lists(st.sampled_from([0x02, 0x14, 0x16, 0x17, 0x1a, 0x1f]), min_size=1, max_size=4,
                          unique=True))
    for slot in slots:
        stride = draw(st.sampled_from((0, 0, 0, 1, 2, 4)))
        ats = draw(st.booleans())
        extra = [f'id = "{draw(st.sampled_from(ENDPOINT_IDS))}"', f"phantom_stride = {stride}",
                 f"ats = {'true' if ats else 'false'}",
                 f'owner = "{draw(st.sampled_from(OWNERS))}"']
        devices.append((f"0000:00:{slot:02x}.0", "pcie-endpoint", extra))
    if draw(st.booleans()):
        btype = draw(st.sampled_from(("pcie2pci-bridge", "legacy-pci-bridge")))
        devices.append(("0000:00:1e.0", btype, ['id = "8086:244e"', "secondary = 0x05"]))
        for fn in draw(st.lists(st.sampled_from([0x08, 0x10, 0x00]), min_size=1, max_size=2, unique=True)):
            devices.append((f"0000:05:{fn >> 3:02x}.0", "pci", ['id = "10ec:8139"',
                                                                f'owner = "{draw(st.sampled_from(OWNERS))}"']))
    late = None
    if draw(st.booleans()):
        late = "0000:00:19.0"
        devices.append((late, "pcie-endpoint", ['id = "8086:1502"', "present = false"]))
    bdfs = [d[0] for d in devices]

    two_units = draw(st.booleans()) and len(bdfs) > 1
    lines += ["", "[[iommu]]", "id = 0", "include_all = true", f"nd = {draw(st.sampled_from((1, 2)))}",
              f"levels = {draw(st.sampled_from((3, 4)))}"]
    if two_units:
        mine = draw(st.sampled_from([b for b in bdfs if not b.startswith("0000:05")]))
        lines += ["", "[[iommu]]", "id = 1", f'devices = ["{mine}"]', "nd = 1", "levels = 4"]
    for bdf, dtype, extra in devices:
        lines += ["", "[[device]]", f'bdf = "{bdf}"', f'type = "{dtype}"', *extra]

    endpoints = [b for b, t, _ in devices if t in ("pcie-endpoint", "pci")]
    for i, dev in enumerate(draw(st.lists(st.sampled_from(endpoints), max_size=2, unique=True))):
        base = 0xD5D40000 + i * 0x10000
        lines += ["", "[[rmrr]]", f"base = {base:#x}", f"end = {base + 0xFFF:#x}", f'devices = ["{dev}"]']

    lines += ["", "[[domain]]", 'name = "dom0"', "id = 0", "hardware = true",
              "", "[[domain]]", 'name = "guest1"', "id = 1", "", "[[domain]]", 'name = "guest2"', "id = 2"]

    # Ops drawn against the scenario as it evolves, so the loader accepts them.
    present = [b for b in endpoints if b != late]
    absent = [late] if late else []
    live = ["guest1", "guest2"]
    for _ in range(draw(st.integers(1, 5))):
        verb = draw(st.sampled_from(("assign", "assign", "deassign", "quarantine", "destroy", "add", "remove")))
        if verb == "add" and absent:
            dev = absent.pop()
            present.append(dev)
            lines += ["", "[[op]]", 'do = "add"', f'device = "{dev}"']
        elif verb == "remove" and len(present) > 1:
            dev = draw(st.sampled_from(present))
            present.remove(dev)
            absent.append(dev)
            lines += ["", "[[op]]", 'do = "remove"', f'device = "{dev}"']
        elif verb == "destroy" and live:
            dom = draw(st.sampled_from(live))
            live.remove(dom)
            lines += ["", "[[op]]", 'do = "destroy"', f'domain = "{dom}"']
        elif verb == "assign" and live and present:
            lines += ["", "[[op]]", 'do = "assign"', f'device = "{draw(st.sampled_from(present))}"',
                      f'to = "{draw(st.sampled_from(live))}"']
        elif verb in ("deassign", "quarantine") and present:
            lines += ["", "[[op]]", f'do = "{verb}"', f'device = "{draw(st.sampled_from(present))}"']

    points = ("pgd-alloc", "did-alloc", "flush-context", "flush-iotlb", "quirk", "cmpxchg", "rmrr-map")
    for _ in range(draw(st.integers(0, 2))):
        lines += ["", "[[fault]]", f'at = "{draw(st.sampled_from(points))}"', f"nth = {draw(st.integers(1, 3))}"]
        if draw(st.booleans()):
            lines.append(f'domain = "{draw(st.sampled_from(("dom0", "guest1", "guest2")))}"')
    return "\n".join(lines) + "\n"


def _platform(text: str):
    from tracer.scenario import ScenarioError, loads_scenario
    try:
        return loads_scenario(text, "prop.toml")
    except ScenarioError:
        assume(False)


def _record(platform, variant, observe):
    """Record with ``observe(engine, event)`` after every event; returns the events."""
    from tracer.record import record
    from tracer.recorder import ListSink

    sink = ListSink()
    record(platform, variant, sink, on_event=observe)
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

        def observe(engine, ev, st_=st_, diffs=diffs, variant=variant):
            apply(st_, ev)
            if not diffs:
                got, want = to_canonical(st_), engine.canonical()
                if got != want:
                    diffs.append((variant, ev, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))

        _record(platform, variant, observe)
        assert not diffs, diffs[0]


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

        def observe(engine, ev, st_=st_, diffs=diffs, variant=variant):
            apply(st_, ev)
            got, want = to_canonical(st_), engine.canonical()
            if got != want and not diffs:
                diffs.append((variant, ev, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))

        _record(platform, variant, observe)
        assert not diffs, diffs[0]


def test_the_properties_run_over_every_engine_variant():
    """The properties above take their variants from tracer.engine.VARIANTS: a new engine
    (original, V0) is covered by registering it, with nothing to add here."""
    assert {"legacy", "direct", "original"} <= set(_variants())
