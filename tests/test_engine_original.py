"""The `original` engine (V0, stable-4.15 aafd4f1df0) against the C at that
commit, where it differs from `legacy` (V1, 7bbcacec42): the ownership check
of an already-present entry (PM2, both of its branches), the RMRR order of
reassign_device_ownership (RO3 before RO1) and intel_iommu_assign_device
(AO1 re-assign, AO2 map, AO3 re-assign back), and the hot-add/remove order
(PA2 context first, PR1 RMRRs first).  docs/ENGINE.md#original."""

from __future__ import annotations

from engine_helpers import Run

from tracer import schema as S
from tracer.record import record
from tracer.recorder import ListSink, Recorder
from tracer.scenario import load_scenario, loads_scenario

EINVAL, ENOMEM = 22, 12
USB = (0, 0xA0)

# S10's topology with the second device behind the bridge hot-added after its sibling went to
# the guest: pci_add_device maps 05:02.0 for dom0 and reaches the bridge aliases 00:1e.0 and
# 05:00.0, which carry the guest's DID since op 1.  05:02.0 has an RMRR, so the add's RMRR
# order shows too.
HOTADD = """
name = "hotadd-behind-guest-bridge"
description = "05:02.0 hot-added behind a bridge whose aliases went to a guest with 05:01.0"
[platform]
cx16 = true
quarantine = false
[[iommu]]
id = 0
include_all = true
nd = 2
levels = 4
[[device]]
bdf = "0000:00:1f.2"
type = "pcie-endpoint"
id = "8086:8c02"
[[device]]
bdf = "0000:00:1e.0"
type = "pcie2pci-bridge"
id = "8086:244e"
secondary = 0x05
[[device]]
bdf = "0000:05:01.0"
type = "pci"
id = "8086:1076"
[[device]]
bdf = "0000:05:02.0"
type = "pci"
id = "1102:0002"
present = false
[[rmrr]]
base = 0xbf7fe000
end = 0xbf7fffff
devices = ["0000:05:02.0"]
[[domain]]
name = "dom0"
id = 0
hardware = true
[[domain]]
name = "guest"
id = 1
[[op]]
do = "assign"
device = "0000:05:01.0"
to = "guest"
[[op]]
do = "add"
device = "0000:05:02.0"
"""


def _run_text(text: str, variant: str):
    platform = loads_scenario(text, "hotadd.toml")
    sink = ListSink()
    engines: list = []
    result = record(platform, variant, sink,
                    on_event=lambda eng, ev: engines.append(eng) if not engines else None)
    return result, [S.event_to_dict(e) for e in sink.events], engines[0]


def _present(engine, bus, devfn) -> bool:
    return bool(engine.iommus[0].entry(bus, devfn)[0] & 1)


def test_pm2_refuses_an_alias_already_mapped_to_another_domain():
    """No pdev (the bridge's own requester ID, P3): context_get_domain_id reads domid_map of
    the entry's DID -> the guest (d1), not dom0 -> an info line and -EINVAL.  P5 then unmaps
    with the devfn find_upstream_bridge overwrote (D2): the clearing walk starts at the
    spurious 05:1e.0 and clears both aliases, which the guest's 05:01.0 DMAs through; the
    device's own entry, mapped at P1, stays.  The add fails before any RMRR map (V0's PA2 maps
    the context first)."""
    result, events, engine = _run_text(HOTADD, "original")
    assert result.rcs == [0, -EINVAL]
    op2 = [e for e in events if e["op"] == 2]
    pm2 = [e for e in op2 if e["kind"] == "log" and e["label"] == "PM2"]
    assert [(e["level"], e["text"]) for e in pm2] == [
        ("info", "[VT-D]d0: 0000:00:1e.0 already mapped to d1")]
    # the refusal leaves the entry alone, releases iommu->lock and returns -EINVAL
    after = op2[op2.index(pm2[0]) + 1:op2.index(pm2[0]) + 3]
    assert [(e["kind"], e.get("lock"), e.get("rc")) for e in after] == [
        ("unlock", "iommu->lock", None), ("return", None, -EINVAL)]
    assert any(e["kind"] == "rollback-begin" and e["label"] == "P5" for e in op2)
    assert not _present(engine, 0, 0xF0) and not _present(engine, 5, 0x00)      # aliases cleared
    assert _present(engine, 5, 0x10)                                           # 05:02.0 stays
    assert not [e for e in op2 if e["kind"] == "idmap-add"]
    logs = [e["text"] for e in op2 if e["kind"] == "log"]
    assert "[VT-D]d0: context mapping failed" in logs


def test_legacy_accepts_the_same_alias_silently():
    """The same add under legacy: PM2 returns 0 for the guest's aliases, the RMRR is mapped
    before the context (3d65d2fa8b), and the add succeeds, leaving the aliases the guest's."""
    result, events, engine = _run_text(HOTADD, "legacy")
    assert result.rcs == [0, 0]
    op2 = [e for e in events if e["op"] == 2]
    assert not [e for e in op2 if e["kind"] == "log" and e["label"] == "PM2"]
    first_add = next(e["seq"] for e in op2 if e["kind"] == "idmap-add")
    first_write = next(e["seq"] for e in op2 if e["kind"] == "ctx-write")
    assert first_add < first_write
    assert _present(engine, 0, 0xF0) and _present(engine, 5, 0x00)


def _booted(name: str):
    platform = load_scenario(name)
    from tracer.engine import Engine
    engine = Engine(platform, Recorder(ListSink()), variant="original")
    engine.boot()
    return engine


def test_pm2_with_a_pdev_compares_its_owner():
    """With a pdev, PM2 asks pdev->domain: mapping dom0's present USB entry for the guest is
    refused ("owned by d0"), for dom0 accepted -- and either way the entry is untouched and
    iommu->lock released."""
    engine = _booted("s1-usb-rmrr")
    iommu = engine.iommus[0]
    pdev = engine.pci_get_pdev(0, *USB)
    before = iommu.entry(*USB)
    guest, dom0 = engine.domain("guest"), engine.domain("dom0")
    seen: list = []
    engine.rec = Recorder(ListSink(), lambda ev: seen.append(S.event_to_dict(ev)))
    assert engine.domain_context_mapping_one(guest, iommu, 0, 0xA0, pdev, 0) == -EINVAL
    assert [e["text"] for e in seen if e["kind"] == "log"] == ["[VT-D]d1: 0000:00:14.0 owned by d0"]
    assert engine.domain_context_mapping_one(dom0, iommu, 0, 0xA0, pdev, 0) == 0
    assert iommu.entry(*USB) == before and not engine.locks and not engine.stack


def test_pm2_without_a_pdev_reads_the_did_slot_without_the_bitmap():
    """Without a pdev, PM2 reads domid_map[DID] as context_get_domain_id does, bitmap or not:
    dom0's DID 0 -> accepted for dom0, refused for the guest; a slot freed by
    cleanup_domid_map reads DOMID_INVALID -> "already mapped to d32756"."""
    engine = _booted("s1-usb-rmrr")
    iommu = engine.iommus[0]
    guest, dom0 = engine.domain("guest"), engine.domain("dom0")
    seen: list = []
    engine.rec = Recorder(ListSink(), lambda ev: seen.append(S.event_to_dict(ev)))
    assert engine.domain_context_mapping_one(dom0, iommu, 0, 0xA0, None, 0) == 0
    assert engine.domain_context_mapping_one(guest, iommu, 0, 0xA0, None, 0) == -EINVAL
    engine.cleanup_domid_map(dom0, iommu, "DK4")          # slot 0 := DOMID_INVALID, bit cleared
    assert engine.domain_context_mapping_one(dom0, iommu, 0, 0xA0, None, 0) == -EINVAL
    logs = [e["text"] for e in seen if e["kind"] == "log" and e["label"] == "PM2"]
    assert logs == ["[VT-D]d1: 0000:00:14.0 already mapped to d0",
                    f"[VT-D]d0: 0000:00:14.0 already mapped to d{S.DOMID_INVALID}"]


def test_reassign_removes_the_source_rmrr_before_the_unmap():
    """S1 op 2 (guest -> dom0): RO3's idmap-remove precedes RO1's first UO3 store; legacy has
    them the other way round."""
    def order(variant):
        r = Run("s1-usb-rmrr", variant)
        op2 = r.op(2)
        remove = next(e["seq"] for e in op2 if e["kind"] == "idmap-remove")
        clear = next(e["seq"] for e in op2 if e["kind"] == "ctx-write" and e["label"] == "UO3")
        return remove < clear
    assert order("original") and not order("legacy")


def test_assign_reassigns_first_and_maps_the_rmrr_after():
    """S1 op 1: the PM5 store that makes the entry present with the guest's tables comes
    before AO2's idmap-add; legacy maps the RMRR (AS3) before it unmaps anything."""
    r = Run("s1-usb-rmrr", "original")
    op1 = r.op(1)
    p_set = next(e["seq"] for e in op1 if e["kind"] == "ctx-write" and e["label"] == "PM5"
                 and e["new_lo"] & 1)
    add = next(e for e in op1 if e["kind"] == "idmap-add")
    assert add["label"] == "AO2" and add["domain"] == 1 and p_set < add["seq"]
    r = Run("s1-usb-rmrr", "legacy")
    add = next(e for e in r.op(1) if e["kind"] == "idmap-add")
    first = next(e["seq"] for e in r.op(1) if e["kind"] == "ctx-write")
    assert add["label"] == "AS3" and add["seq"] < first


def test_an_rmrr_failure_reassigns_back_to_the_previous_owner():
    """AO3: the guest's RMRR map fails after AO1 moved the controller; it is re-assigned to
    dom0 (the guest has no map to remove: -ENOENT, ignored), the error line is printed and the
    RMRR error returned.  The controller ends dom0's, mapped with dom0's tables."""
    text = load_scenario("s1-usb-rmrr").source_text + \
        '\n[[fault]]\nat = "rmrr-map"\ndomain = "guest"\nnth = 1\n'
    platform = loads_scenario(text, "s1-rmrr-fails.toml")
    sink = ListSink()
    engines: list = []
    result = record(platform, "original", sink,
                    on_event=lambda eng, ev: engines.append(eng) if not engines else None)
    engine = engines[0]
    events = [S.event_to_dict(e) for e in sink.events]
    op1 = [e for e in events if e["op"] == 1]
    assert result.rcs[0] < 0
    calls = [(e["args"][0][1], e["args"][1][1]) for e in op1
             if e["kind"] == "call" and e["func"] == "reassign_device_ownership"]
    assert calls == [(0, 1), (1, 0)]                          # dom0 -> guest, then back
    back = [e for e in op1 if e["kind"] == "call" and e["func"] == "reassign_device_ownership"][1]
    assert back["seq"] > next(e["seq"] for e in op1 if e["kind"] == "fault-inject")
    ret = next(e for e in op1 if e["kind"] == "return" and e["func"] == "intel_iommu_assign_device")
    assert (ret["label"], ret["rc"]) == ("AO3", result.rcs[0])
    logs = [e["text"] for e in op1 if e["kind"] == "log" and e["label"] == "AO3"]
    assert logs == [f"[VT-D] cannot map reserved region (d5d45000,d5d45fff] for Dom1 ({result.rcs[0]})"]
    pdev = engine.pci_get_pdev(0, *USB)
    assert pdev.domain is engine.domain("dom0")
    lo, hi = engine.iommus[0].entry(*USB)
    assert lo & 1 and (lo & ~0xFFF) == engine.domain("dom0").pt_pages[0] and (hi >> 8) & 0xFFFF == 0


def test_enomem_leaves_no_rmrr_map_to_undo():
    """S6: -ENOMEM at PM3 after RO1 unmapped dom0's entry (as legacy); AO1 returns the error
    before AO2, so the guest never got the RMRR map and nothing is removed again (legacy
    maps it at AS3 and removes it at AS5)."""
    r = Run("s6-enomem", "original")
    assert r.result.rcs == [-ENOMEM]
    op1 = r.op(1)
    assert not [e for e in op1 if e["kind"] in ("idmap-add", "idmap-remove")]
    ret = [e for e in op1 if e["kind"] == "return" and e["func"] == "intel_iommu_assign_device"]
    assert [(e["label"], e["rc"]) for e in ret] == [("AO1", -ENOMEM)]
    assert not r.entry(0, *USB)[0] & 1
    assert r.engine.pci_get_pdev(0, *USB).domain is r.engine.dom_io


def test_remove_drops_the_rmrr_before_the_unmap_and_add_maps_it_after():
    """PR1/PA2 at aafd4f1df0: remove takes dom0's RMRR identity map away before
    domain_context_unmap; add maps the context before the RMRR (3d65d2fa8b reversed both)."""
    text = load_scenario("s1-usb-rmrr").source_text + \
        '\n[[op]]\ndo = "remove"\ndevice = "0000:00:14.0"\n[[op]]\ndo = "add"\ndevice = "0000:00:14.0"\n'
    for variant, rmrr_first_on_remove in (("original", True), ("legacy", False)):
        sink = ListSink()
        result = record(loads_scenario(text, "s1-remove-add.toml"), variant, sink)
        assert result.rcs == [0, 0, 0, 0]
        events = [S.event_to_dict(e) for e in sink.events]
        for op, idmap in ((3, "idmap-remove"), (4, "idmap-add")):
            evs = [e for e in events if e["op"] == op]
            rmrr = next(e["seq"] for e in evs if e["kind"] == idmap)
            ctx = next(e["seq"] for e in evs if e["kind"] == "ctx-write")
            # V0: remove RMRR-then-context, add context-then-RMRR; V1 the reverse of each
            assert (rmrr < ctx) == (rmrr_first_on_remove if op == 3 else not rmrr_first_on_remove)
