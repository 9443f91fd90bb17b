"""The device-TLB (ATC) of ATS devices: the replay's "may hold" model
(replay/caches.py ``devtlb``) against hand-computed expectations -- the engine
has no notion of what a device caches, so there is no engine state to compare
it with -- the stale-devtlb analyser's severities on hand-built event
sequences, and the finding as `show`, `diff` and the TUI present it.

S11's own rows (every variant) and the absence of stale-devtlb everywhere
else are in tests/test_hazards_table.py; the random-scenario oracle is in
tests/test_hazards_property.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_replay_fold import PT_A, PT_B, PT_C, Events, entry
from test_tui_support import screen_text, settle, trace_copy

from replay import caches
from replay.hazards import findings_for_events, findings_for_trace
from replay.state import ReplayState, decode_state, encode_state, fold, initial_state
from tracer import schema as S

REPO = Path(__file__).resolve().parent.parent
NIC = (0, 0x03, 0x00)          # (iommu, bus, devfn) of 0000:03:00.0
S11 = "s11-ats-stale-devtlb"


def run(events, **kw) -> ReplayState:
    return fold(ReplayState(**kw), events)


# --- the cache model -------------------------------------------------------------------

def test_an_entry_without_ats_enabled_fills_no_device_tlb():
    # With the ats knob every entry gets TT = device-IOTLB; a device without ATS enabled
    # (no capability, as S11's SATA controller) cannot issue Translation Requests.
    e = Events()
    st = run([e("translation-enable", 0), e.write(0, 3, 0, (0, 0), entry(PT_A, 0, tt=1)),
              e.write(0, 3, 0, entry(PT_A, 0, tt=1), entry(PT_B, 1, tt=1))])
    assert st.tlb and st.devtlb == {}
    assert caches.atc_may_hold(st, NIC) == frozenset()


def test_an_ats_device_may_hold_what_its_entries_gave_until_its_own_invalidation():
    e = Events()
    a, b = entry(PT_A, 0, tt=1), entry(PT_B, 1, tt=1)
    st = run([e("translation-enable", 0), e("ats-enable", 0, 0x0300, 1), e.write(0, 3, 0, (0, 0), a)])
    # the current entry can fill it, nothing outlived anything yet
    assert st.devtlb == {} and caches.atc_may_hold(st, NIC) == {(0, PT_A)}
    assert caches.devtlb_may_hold(st, 0) == {}
    fold(st, [e.write(0, 3, 0, a, b)])
    assert st.devtlb == {NIC: frozenset({(0, PT_A)})}
    assert caches.atc_may_hold(st, NIC) == {(0, PT_A), (1, PT_B)}
    assert caches.devtlb_may_hold(st, 0) == {(3, 0): frozenset({(0, PT_A)})}
    # IOTLB flushes, a failed device-TLB flush, another device's flush: all leave it
    fold(st, [e("flush-context", 0, "global", 0, 0, 0, False, 0),
              e("flush-iotlb", 0, "dsi", 0, 0, 0, False, True, 0),
              e("flush-iotlb", 0, "global", 0, 0, 0, False, True, 0),
              e("flush-dev-iotlb", 0, 0x0300, 0, -110),
              e("flush-dev-iotlb", 0, 0x0400, 0, 0)])
    assert st.devtlb == {NIC: frozenset({(0, PT_A)})}
    fold(st, [e("flush-dev-iotlb", 0, 0x0300, 0, 0)])
    assert st.devtlb == {} and caches.atc_may_hold(st, NIC) == {(1, PT_B)}


def test_disabling_ats_does_not_empty_the_device_tlb():
    # UNSURE in the specification: the model keeps what the device could fill up to then,
    # and fills nothing more while ATS is off.
    e = Events()
    a, b, c = entry(PT_A, 0, tt=1), entry(PT_B, 1, tt=1), entry(PT_C, 2, tt=1)
    st = run([e("translation-enable", 0), e("ats-enable", 0, 0x0300, 1), e.write(0, 3, 0, (0, 0), a),
              e("ats-enable", 0, 0x0300, 0)])
    assert st.devtlb == {NIC: frozenset({(0, PT_A)})} and st.ats == {}
    fold(st, [e.write(0, 3, 0, a, b), e("flush-context", 0, "global", 0, 0, 0, False, 0)])
    assert st.devtlb == {NIC: frozenset({(0, PT_A)})}
    assert caches.atc_may_hold(st, NIC) == {(0, PT_A)}
    fold(st, [e("ats-enable", 0, 0x0300, 1), e.write(0, 3, 0, b, c)])
    assert st.devtlb == {NIC: frozenset({(0, PT_A), (1, PT_B)})}


def test_a_value_cached_before_ats_was_enabled_may_still_reach_the_device_tlb():
    # retired from memory into the context cache while ATS was off, answered a Translation
    # Request after ATS came on: it stays in the ATC when the context cache drops it
    e = Events()
    a, b = entry(PT_A, 0, tt=1), entry(PT_B, 1, tt=1)
    st = run([e("translation-enable", 0), e.write(0, 3, 0, (0, 0), a), e.write(0, 3, 0, a, b),
              e("ats-enable", 0, 0x0300, 1)])
    assert st.devtlb == {} and caches.atc_may_hold(st, NIC) == {(0, PT_A), (1, PT_B)}
    fold(st, [e("flush-context", 0, "device", 0, 0x0300, 0, False, 0)])
    assert st.cc == {} and st.devtlb == {NIC: frozenset({(0, PT_A)})}


def test_multi_level_and_pass_through_values_fill_no_device_tlb():
    e = Events()
    st = run([e("translation-enable", 0), e("ats-enable", 0, 0x0300, 1),
              e.write(0, 3, 0, (0, 0), entry(PT_A, 0, tt=0)),
              e.write(0, 3, 0, entry(PT_A, 0, tt=0), entry(0, 0, tt=2)),
              e.write(0, 3, 0, entry(0, 0, tt=2), entry(PT_B, 1, tt=0))])
    assert st.devtlb == {} and caches.atc_may_hold(st, NIC) == frozenset()


def test_the_ats_bit_of_a_device_on_another_segment():
    header = {"platform": {"iommus": [{"id": 0, "segment": 0}, {"id": 1, "segment": 2}]}}
    e = Events()
    evs = [e("translation-enable", 1), e("ats-enable", 0, 0x0300, 1),
           e.write(1, 3, 0, (0, 0), entry(PT_A, 0, tt=1)), e.write(1, 3, 0, entry(PT_A, 0, tt=1), (0, 0))]
    assert fold(initial_state(header), evs).devtlb == {}          # 0000:03:00.0 is not 0002:03:00.0
    e = Events()
    evs = [e("translation-enable", 1), e("ats-enable", 2, 0x0300, 1),
           e.write(1, 3, 0, (0, 0), entry(PT_A, 0, tt=1)), e.write(1, 3, 0, entry(PT_A, 0, tt=1), (0, 0))]
    st = fold(initial_state(header), evs)
    assert st.devtlb == {(1, 3, 0): frozenset({(0, PT_A)})}
    back = decode_state(encode_state(st))
    assert back == st and back.unit_seg == {1: 2}


def test_s11_device_tlb_after_each_operation():
    """Hand-computed from the scenario: dom0's tables at 0x10000000000 (DID 0), the guest's
    at 0x10001000000 (DID 1): each domain's tables start its own region.  The global flush
    at boot (HW3) precedes translation, so nothing is held after boot; each op leaves the
    moved NIC's previous translations."""
    from replay.reader import open_trace
    dom0, guest = (0, 0x100_0000_0000), (1, 0x100_0100_0000)
    for variant in ("legacy", "direct", "direct-nocx16"):
        with open_trace(REPO / "traces" / f"{S11}.{variant}.vtdt") as t:
            st = initial_state(t.header)
            after = {}
            for chunk in t.iter_chunks():
                for ev in chunk:
                    fold(st, [ev])
                    if ev[0] == S.K_OP_END:
                        after[ev[3]] = (dict(st.devtlb), caches.devtlb_may_hold(st, 0),
                                        caches.atc_may_hold(st, NIC), caches.atc_may_hold(st, (0, 4, 0)))
        assert after[0] == ({}, {}, {dom0}, {dom0}), variant
        assert after[1] == ({NIC: frozenset({dom0})}, {(3, 0): frozenset({dom0})}, {dom0, guest}, {dom0}), variant
        # back with dom0: the ATC may hold both; the part its entry does not give is the guest's
        assert after[2] == ({NIC: frozenset({dom0, guest})}, {(3, 0): frozenset({guest})},
                            {dom0, guest}, {dom0}), variant
        # the SATA controller (no ATS) never holds anything
        assert caches.atc_may_hold(st, (0, 0, 0x17 << 3)) == frozenset()


# --- the analyser on hand-built sequences ---------------------------------------------------

HEADER = {"platform": {
    "knobs": {"ats": True},
    "iommus": [{"id": 0, "segment": 0, "include_all": True, "devices": []}],
    "devices": [{"bdf": "0000:03:00.0", "type": "pcie-endpoint", "id": "8086:1572", "ats": True}],
    "domains": [[0, "dom0", True], [1, "guest", False]],
}}


class Labelled(Events):
    """Events whose context stores carry a step label too."""

    def write(self, u, bus, devfn, old, new, half="full", method="cmpxchg16b", label=""):
        return self("ctx-write", u, bus, devfn, half, method, old[0], old[1], new[0], new[1], label=label)


def _boot_and_move(e):
    a, b = entry(PT_A, 0, tt=1), entry(PT_B, 1, tt=1)
    e.op = 0
    evs = [e("op-begin", "boot", None, None, None), e("domain-create", 0), e("domain-create", 1),
           e("device-add", 0, 0x0300), e("owner-move", 0, 0x0300, None, 0),
           e("pt-alloc", 0, PT_A, "pgd"), e("pt-alloc", 1, PT_B, "pgd"),
           e("did-map", 0, 1, 0, 1), e("did-bitmap", 0, 0, 1), e("did-bitmap", 0, 1, 1),
           e("translation-enable", 0), e.write(0, 3, 0, (0, 0), a), e("ats-enable", 0, 0x0300, 1),
           e("op-end", 0)]
    e.op = 1
    evs += [e("op-begin", "assign", 0x0300, 1, 0), e.write(0, 3, 0, a, b, label="MO7"),
            e("flush-iotlb", 0, "dsi", 0, 0, 0, False, True, 0, label="MO10"),
            e("owner-move", 0, 0x0300, 0, 1, label="RN5")]
    return evs


def test_a_device_tlb_flush_in_the_same_operation_makes_it_benign():
    e = Labelled()
    evs = _boot_and_move(e)
    evs += [e("flush-dev-iotlb", 0, 0x0300, 1, 0, label="XX1"), e("op-end", 0)]
    (f,) = [f for f in findings_for_events(HEADER, evs) if f.kind == "stale-devtlb"]
    assert (f.severity, f.device, f.start_label, f.end_label) == ("benign", "0000:03:00.0", "RN5", "XX1")
    assert f.detail.startswith("IOMMU 0: 0000:03:00.0, owned by guest, may still translate DMA with dom0's")
    assert "the IOTLB flush of DID 0 at MO10 did not invalidate its device-TLB: its context entry " \
           "carries DID 1 by then" in f.detail
    assert f.detail.endswith("until the device-TLB invalidation at XX1 in the same operation")


def test_a_device_tlb_flush_only_in_a_later_operation_is_a_hazard():
    e = Labelled()
    evs = _boot_and_move(e) + [e("op-end", 0)]
    e.op = 2
    evs += [e("op-begin", "assign", 0x0400, 1, 0), e("flush-dev-iotlb", 0, 0x0300, 1, 0, label="XX2"),
            e("op-end", 0)]
    (f,) = [f for f in findings_for_events(HEADER, evs) if f.kind == "stale-devtlb"]
    assert (f.severity, f.start_label, f.end_label) == ("hazard", "RN5", "XX2")
    assert "op 1 returned without invalidating it, which only came at XX2" in f.detail


def test_a_removed_device_reports_nothing_while_absent():
    e = Labelled()
    evs = _boot_and_move(e) + [e("device-remove", 0, 0x0300, label="PR1"), e("op-end", 0)]
    (f,) = [f for f in findings_for_events(HEADER, evs) if f.kind == "stale-devtlb"]
    assert (f.severity, f.end_label) == ("benign", "PR1")


# --- show, diff, the TUI -----------------------------------------------------------------------------

def test_show_lists_the_device_tlb_with_owners(run_cli, tmp_path):
    # on a copy: show writes the trace's sidecar beside it
    trace = tmp_path / f"{S11}.direct.vtdt"
    shutil.copyfile(REPO / "traces" / trace.name, trace)
    p = run_cli("show", trace, "--at", "197", "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["iommus"][0]["caches"]["dev_iotlb"] == [{
        "rid": "0000:03:00.0", "owner": "guest", "ats": True, "did": 0, "did_owner": "dom0",
        "pt": "0x0000010000000000", "pt_owner": "dom0"}]
    assert any(f["kind"] == "stale-devtlb" for f in d["open_findings"])
    p = run_cli("show", trace, "--at", "197")
    assert "device-tlb 0000:03:00.0 (owner guest, ATS on): did 0 dom0, tables dom0 0x0000010000000000" \
        in p.stdout


def test_diff_reports_stale_devtlb_in_the_hazard_delta(tmp_path, run_cli):
    """The same scenario with ATS off (A) and on (B): B alone has the two windows."""
    text = (REPO / "traces" / f"{S11}.toml").read_text()
    off = tmp_path / "s11-off.toml"
    off.write_text(text.replace("ats = true               # ats=1", "ats = false              # ats=0"))
    a, b = tmp_path / "a.vtdt", tmp_path / "b.vtdt"
    assert run_cli("record", off, "--engine", "direct", "-o", a).returncode == 0
    shutil.copyfile(REPO / "traces" / f"{S11}.direct.vtdt", b)
    p = run_cli("diff", a, b, "--json")
    assert p.returncode == 1, p.stderr
    delta = json.loads(p.stdout)["hazard_delta"]
    assert delta["only_a"] == []
    assert [(f["kind"], f["severity"], f["device"], f["start_label"], f["end_label"]) for f in delta["only_b"]] \
        == [("stale-devtlb", "hazard", "0000:03:00.0", "RN5", "RN5"),
            ("stale-devtlb", "hazard", "0000:03:00.0", "RN5", None)]
    p = run_cli("diff", a, b)
    assert "only in B: 2" in p.stdout and p.stdout.count("stale-devtlb 0000:03:00.0") == 2


async def test_tui_jumps_to_the_stale_devtlb_window_and_lists_it(tmp_path):
    from tui.app import VtdtraceApp
    from tui.state_pane import StatePane
    path = trace_copy(tmp_path, f"{S11}.direct.vtdt")
    fs = [f for f in findings_for_trace(path).findings if f.severity != "benign"]
    assert [f.kind for f in fs] == ["stale-devtlb", "stale-devtlb"]
    app = VtdtraceApp(path)
    async with app.run_test(size=(110, 34)) as pilot:
        await settle(app, pilot)
        await pilot.press("right_square_bracket")
        assert app.model.cursor == fs[0].start
        # the event list and the timeline mark the window as a hazard
        events = app.view.events
        assert events._parts(fs[0].start, 90)[1] == 3
        assert events._parts(fs[0].start - 1, 90)[1] < 3
        assert 3 in app.view.timeline._strip(app.view.timeline.size.width)
        view = app.model.step_view()
        assert [t["rid"] for t in view.show["iommus"][0]["caches"]["dev_iotlb"]] == ["0000:03:00.0"]
        assert any(f["kind"] == "stale-devtlb" for f in view.open_findings)
        # the state pane: the NIC's device-TLB row, the guest owning it, dom0's tables in it, red
        pane = app.query_one("#state", StatePane)
        row = next(parts for parts, _ in pane.lines if any("dev-tlb" in t for t, _ in parts))
        text = "".join(t for t, _ in row)
        assert "0000:03:00.0" in text and "owner guest ≠ tables dom0" in text
        assert any(c == "state-pane--bad" for _, c in row)
        await pilot.press("right_square_bracket")
        assert app.model.cursor == fs[1].start
        await pilot.press("left_square_bracket")
        assert app.model.cursor == fs[0].start
        await pilot.press("4")
        text = app.view.findings_pane.text()
        assert "open at this step" in text and "stale-devtlb" in text
        assert "stale-devtlb" in screen_text(app)
    app.model.close()


# --- the engine's device-TLB flushes, against Xen's rule computed from the replay ----------------

from hypothesis import given  # noqa: E402
from test_replay_property import SETTINGS, _platform, scenarios  # noqa: E402


def _expected_dev_flushes(st_, topo, order, u, gran, did) -> list:
    """dev_invalidate_iotlb(): the unit's ATS devices from the head of its list (the device
    enabled last first); for a DSI only those device_in_domain() accepts -- the root entry
    of their bus present, their entry in memory carrying the DID with TT = device-IOTLB."""
    out = []
    for _seg, bdf, _gone in order.get(u, ()):
        if gran != "global":
            bus, devfn = bdf >> 8, bdf & 0xFF
            lo, hi = st_.ctx.get((u, bus, devfn), (0, 0))
            if (u, bus) not in st_.root or (hi >> 8) & 0xFFFF != did or (lo >> 2) & 3 != caches.TT_DEV_IOTLB:
                continue
        out.append(bdf)
    return out


@SETTINGS
@given(scenarios())
def test_device_tlb_flushes_follow_device_in_domain_newest_first(text):
    """On random platforms (ATS devices, the ats knob, phantoms, bridges, faults) under
    every variant: after each IOTLB flush that carries the device-TLB flag, the engine's
    flush-dev-iotlb events name exactly the devices Xen's rule picks, in its order --
    including the entry of a device removed while its own unmap failed: ATS was never
    disabled, so the freed pdev stays on the unit's list and is invalidated again (twice,
    once it is added back and enabled)."""
    from replay.hazards.topology import Topology
    from tracer.record import make_header, record
    from tracer.recorder import ListSink

    for variant in ("legacy", "direct"):
        platform = _platform(text)
        sink = ListSink()
        record(platform, variant, sink)
        header = make_header(platform, variant)
        topo = Topology(header)
        st_ = initial_state(header)
        # unit -> [(seg, bdf, gone)], newest first; gone: the pdev was freed with ATS
        # still enabled (pci_remove_device after its own unmap failed: disable_ats_device
        # never ran), so its entry stays on the list and is walked like any other
        order: dict = {}
        events = sink.events
        for i, ev in enumerate(events):
            fold(st_, [ev])
            if ev[0] == S.K_ATS_ENABLE:
                dev = topo.by_loc[(ev[6], ev[7] >> 8, ev[7] & 0xFF)]
                lst = order.setdefault(dev.unit, [])
                if (ev[6], ev[7], False) in lst:
                    lst.remove((ev[6], ev[7], False))
                if ev[8]:
                    lst.insert(0, (ev[6], ev[7], False))
            elif ev[0] == S.K_DEVICE_REMOVE:
                for lst in order.values():
                    if (ev[6], ev[7], False) in lst:
                        lst[lst.index((ev[6], ev[7], False))] = (ev[6], ev[7], True)
            elif ev[0] == S.K_FLUSH_IOTLB and ev[12]:
                u, gran, did, non_present, rc = ev[6], ev[7], ev[8], ev[11], ev[13]
                if non_present and rc == 1:
                    want = []            # skipped for a non-present entry: nothing is sent
                else:
                    want = _expected_dev_flushes(st_, topo, order, u, gran, did)
                got = []
                for later in events[i + 1:]:
                    if later[0] == S.K_FLUSH_DEV_IOTLB:
                        assert later[6] == u and later[8] == did, later
                        got.append(later[7])
                    elif later[0] not in (S.K_UNLOCK,):
                        break
                assert got == want, (variant, ev[1], got, want)
