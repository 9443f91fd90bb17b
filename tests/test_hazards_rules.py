"""The analysers' rules that no shipped scenario decides, each pinned by a
deterministic test (no Hypothesis: these hold under every profile).

* A dying domain's DID has no victims (MAP_OWNER_DYING): when the guest is
  destroyed with two devices, the no-cx16 best-effort rewrite of the first one
  pairs the new tables with the dying guest's DID while the second device
  still carries that DID -- a ``warning`` without victims, where the same
  rewrite by a plain deassign (the guest lives on) is a ``hazard`` naming the
  second device.
* Identity maps are reference-counted per (domain, range): an RMRR shared by
  two devices of one guest stays mapped until the last of them leaves, so the
  device that stays keeps its RMRR; the replayed counts follow the engine's
  after every event.
* An RMRR counts as mapped only when one read/write identity map of the
  domain contains the whole range: partial coverage (one page of two, a
  range overlapping it, ranges beside it) and read-only maps leave it
  disconnected.
"""

from __future__ import annotations

import re

import pytest

from replay.hazards import findings_for_events
from replay.state import apply, initial_state, to_canonical
from tracer import schema as S
from tracer.engine import VARIANTS
from tracer.record import apply_cx16, make_header, record
from tracer.recorder import ListSink
from tracer.scenario import loads_scenario, resolve

GUEST = 1


def _record(text: str, variant: str, cx16: bool = True, observe=None):
    """(header, events) of a scenario text recorded in memory."""
    platform = apply_cx16(loads_scenario(text, "rules.toml"), cx16)
    sink = ListSink()
    record(platform, variant, sink, on_event=observe)
    return make_header(platform, variant), sink.events


def _op(do: str, **kw) -> str:
    return "\n[[op]]\n" + f'do = "{do}"\n' + "".join(
        f"{k} = {'true' if v is True else repr(v).replace(chr(39), chr(34))}\n" for k, v in kw.items())


# --- MAP_OWNER_DYING: a dying domain's DID has no victims ------------------------------------

S1 = resolve("s1-usb-rmrr")[0].read_text()
# S1 (00:14.0 to the guest and back), then SATA 00:17.0 and the RMRR controller
# 00:14.0 to the guest; pci_release_devices() takes the last assigned first
TWO_IN_GUEST = S1 + _op("assign", device="0000:00:17.0", to="guest") + \
    _op("assign", device="0000:00:14.0", to="guest")


def _guest_did_windows(text):
    """(events, the did-pt-mismatch and foreign-iotlb findings of the last
    operation whose DID is the guest's) under direct without cx16."""
    header, events = _record(text, "direct", cx16=False)
    last_op = events[-1][S.I_OP]
    fs = [f for f in findings_for_events(header, events)
          if f.kind in ("did-pt-mismatch", "foreign-iotlb") and events[f.start - 1][S.I_OP] == last_op
          and re.search(r"\bDID 1\b", f.detail)]
    return events, fs


def _did_users_at(events, seq, did) -> set:
    """Requester IDs (iommu, bus, devfn) whose entry in memory carries did after event seq."""
    st = initial_state({"platform": None})
    for ev in events[:seq]:
        apply(st, ev)
    return {k for k, (lo, hi) in st.ctx.items() if lo & 1 and (hi >> 8) & 0xFFFF == did}


def test_the_dying_guests_did_has_no_victims():
    events, fs = _guest_did_windows(TWO_IN_GUEST + _op("destroy", domain="guest"))
    assert sorted(f.kind for f in fs) == ["did-pt-mismatch", "foreign-iotlb"]
    for f in fs:
        assert f.device == "0000:00:14.0" and f.start_label == "MO7", f
        # 00:17.0 still carries the guest's DID while the window is open ...
        assert (0, 0, 0xB8) in _did_users_at(events, f.start, GUEST)
        # ... but the guest is dying: the harm stays in it
        assert f.severity == "warning", f
        assert "no other requester ID" in f.detail, f


def test_the_same_rewrite_of_a_living_guests_did_has_victims():
    events, fs = _guest_did_windows(TWO_IN_GUEST + _op("deassign", device="0000:00:14.0"))
    mism = [f for f in fs if f.kind == "did-pt-mismatch"]
    assert len(mism) == 1 and mism[0].severity == "hazard"
    assert "hit by 0000:00:17.0" in mism[0].detail


# --- identity maps shared by several devices ---------------------------------------------------

SHARED = S1.replace('devices = ["0000:00:14.0"]', 'devices = ["0000:00:14.0", "0000:00:17.0"]')
assert SHARED != S1
SHARED_OPS = SHARED.split("\n[[op]]")[0] + "".join((
    _op("assign", device="0000:00:14.0", to="guest", relaxed=True),
    _op("assign", device="0000:00:17.0", to="guest", relaxed=True),
    _op("deassign", device="0000:00:14.0"),
    _op("deassign", device="0000:00:17.0"),
))
RMRR = (0xD5D45000, 0xD5D45FFF)


def _idmap_counts(events) -> list:
    """(op, kind, refcount) of the guest's identity-map events of the shared RMRR."""
    out = []
    for ev in events:
        if ev[S.I_KIND] == S.K_IDMAP_ADD and ev[S.F_IDMAP_ADD_DOMAIN] == GUEST:
            out.append((ev[S.I_OP], "add", ev[S.F_IDMAP_ADD_REFCOUNT]))
        elif ev[S.I_KIND] == S.K_IDMAP_REMOVE and ev[S.F_IDMAP_REMOVE_DOMAIN] == GUEST:
            out.append((ev[S.I_OP], "remove", ev[S.F_IDMAP_REMOVE_REFCOUNT]))
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_shared_rmrr_stays_mapped_until_its_last_device_leaves(variant):
    header, events = _record(SHARED_OPS, variant)
    assert _idmap_counts(events) == [(1, "add", 1), (2, "add", 2), (3, "remove", 1), (4, "remove", 0)]
    # the replayed identity maps after each operation
    st = initial_state(header)
    after = {}
    for ev in events:
        apply(st, ev)
        if ev[S.I_KIND] == S.K_OP_END:
            after[ev[S.I_OP]] = st.idmaps.get((GUEST, *RMRR))
    assert after == {0: None, 1: ("rw", 1), 2: ("rw", 2), 3: ("rw", 1), 4: None}    # op 0: the boot
    # 00:17.0 keeps its RMRR while 00:14.0 leaves (op 3): no window of its own
    # opens there (its own deassign, op 4, cuts it off on the legacy path)
    fs = findings_for_events(header, events)
    op_of = {ev[S.I_SEQ]: ev[S.I_OP] for ev in events}
    late = [f for f in fs if f.kind == "rmrr-disconnect" and f.device == "0000:00:17.0" and op_of[f.start] == 3]
    assert late == []


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_replayed_identity_map_counts_equal_the_engines_after_every_event(variant):
    platform = loads_scenario(SHARED_OPS, "rules.toml")
    st = initial_state({"platform": platform.to_header()})
    diffs = []

    def observe(engine, ev):
        apply(st, ev)
        if not diffs:
            got, want = to_canonical(st)["idmaps"], engine.canonical()["idmaps"]
            if got != want:
                diffs.append((ev, got, want))

    sink = ListSink()
    record(platform, variant, sink, on_event=observe)
    assert not diffs, diffs[0]
    assert any(ev[S.I_KIND] == S.K_IDMAP_REMOVE and ev[S.F_IDMAP_REMOVE_REFCOUNT] > 0 for ev in sink.events)


# --- what covers an RMRR -------------------------------------------------------------------------

PLATFORM = {"platform": {
    "iommus": [{"id": 0, "segment": 0, "include_all": True}],
    "devices": [{"bdf": "0000:00:14.0", "type": "pcie-endpoint"}],
    "rmrrs": [{"base": 0x10000, "end": 0x11FFF, "devices": ["0000:00:14.0"]}],
    "domains": [[0, "dom0", True], [1, "guest", False]],
}}
ROOT = 0x4000_0000


def _events(maps):
    """The device present on a translating unit, the guest's tables with the
    identity maps ``maps`` [(base, end, access)], then the device's entry
    pointing at them (DID 1)."""
    rows = [("device-add", 0, 0xA0), ("translation-enable", 0), ("pt-alloc", GUEST, ROOT, "pgd")]
    rows += [("idmap-add", GUEST, b, e, acc, 1) for b, e, acc in maps]
    rows += [("ctx-write", 0, 0, 0xA0, "full", "cmpxchg16b", 0, 0, ROOT | 1, (GUEST << 8) | 2)]
    return [[S.KIND_BY_NAME[k].code, seq, 0, 1, 0, f"X{seq}", *fields] for seq, (k, *fields) in enumerate(rows, 1)]


@pytest.mark.parametrize("maps,disconnected", [
    pytest.param([(0x10000, 0x11FFF, "rw")], False, id="exactly"),
    pytest.param([(0xF000, 0x12FFF, "rw")], False, id="containing"),
    pytest.param([(0x10000, 0x10FFF, "rw")], True, id="first-page-only"),
    pytest.param([(0x11000, 0x11FFF, "rw")], True, id="last-page-only"),
    pytest.param([(0xF000, 0x10FFF, "rw")], True, id="overlapping-start"),
    pytest.param([(0x11000, 0x12FFF, "rw")], True, id="overlapping-end"),
    pytest.param([(0x1000, 0x1FFF, "rw"), (0x20000, 0x20FFF, "rw")], True, id="beside-not-on"),
    pytest.param([(0x10000, 0x11FFF, "r")], True, id="read-only"),
])
def test_an_rmrr_is_covered_only_by_one_rw_map_containing_it(maps, disconnected):
    events = _events(maps)
    # (before the entry is written it is not present: an a1 window up to the store)
    fs = [f for f in findings_for_events(PLATFORM, events) if f.kind == "rmrr-disconnect" and f.end is None]
    if not disconnected:
        assert fs == []
        return
    assert len(fs) == 1
    f = fs[0]
    assert (f.device, f.start, f.end, f.severity) == ("0000:00:14.0", len(events), None, "hazard")
    assert "guest's page tables, which do not identity-map [0x10000, 0x11fff] read/write (a2)" in f.detail


def test_a_device_with_two_rmrrs_needs_both_mapped():
    two = {"platform": dict(PLATFORM["platform"], rmrrs=[
        {"base": 0x10000, "end": 0x11FFF, "devices": ["0000:00:14.0"]},
        {"base": 0x30000, "end": 0x30FFF, "devices": ["0000:00:14.0"]}])}
    for maps, missing in (([(0x10000, 0x11FFF, "rw")], "[0x30000, 0x30fff]"),
                          ([(0x30000, 0x30FFF, "rw")], "[0x10000, 0x11fff]")):
        fs = [f for f in findings_for_events(two, _events(maps)) if f.kind == "rmrr-disconnect" and f.end is None]
        assert len(fs) == 1 and f"do not identity-map {missing} read/write (a2)" in fs[0].detail
    both = [(0x10000, 0x11FFF, "rw"), (0x30000, 0x30FFF, "rw")]
    assert [f for f in findings_for_events(two, _events(both)) if f.kind == "rmrr-disconnect" and f.end is None] == []
