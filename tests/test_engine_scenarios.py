"""The engine against docs/MODEL.md's step lists, error table and checks
(#step-labels, #errors, #checked) on the
shipped scenarios: event shape at the decisive points and the final state."""

import pytest
from engine_helpers import Run

from tracer import schema as S
from tracer.platform import parse_bdf

USB = (0, 0, 0xA0)        # iommu 0, 00:14.0
GUEST, DOM0 = 1, 0


def ctx_writes(evs, bus, devfn):
    return [e for e in evs if e["kind"] == "ctx-write" and (e["bus"], e["devfn"]) == (bus, devfn)]


def did_of(hi):
    return (hi >> 8) & 0xFFFF


def test_s1_direct_cx16_one_cmpxchg_and_old_did_flushes_after_unlock():
    r = Run("s1-usb-rmrr", "direct", cx16=True)
    assert r.result.rcs == [0, 0]
    op1 = r.op(1)
    w = ctx_writes(op1, 0, 0xA0)
    assert [(e["label"], e["half"], e["method"]) for e in w] == [("MO7", "full", "cmpxchg16b")]
    assert did_of(w[0]["old_hi"]) == 0 and did_of(w[0]["new_hi"]) != 0
    unlock = next(e for e in op1 if e["kind"] == "unlock" and e["lock"] == "iommu->lock" and e["label"] == "MO8")
    fc = next(e for e in op1 if e["kind"] == "flush-context" and e["label"] == "MO9")
    fi = next(e for e in op1 if e["kind"] == "flush-iotlb" and e["label"] == "MO10")
    assert unlock["seq"] < fc["seq"] < fi["seq"]
    # Flushes carry the *old* DID (dom0's 0) as a real DID, not a non-present flush.
    assert (fc["did"], fc["non_present"], fc["rc"]) == (0, False, 0)
    assert (fi["did"], fi["gran"], fi["non_present"], fi["rc"]) == (0, "dsi", False, 0)
    assert not any(e["kind"] == "log" and "data corruption" in e["text"] for e in r.events)
    # Back to dom0 in op 2: one cmpxchg again, flushes with the guest's DID, which RN4 then frees.
    w2 = ctx_writes(r.op(2), 0, 0xA0)
    assert [e["method"] for e in w2] == ["cmpxchg16b"]
    guest_did = did_of(w[0]["new_hi"])
    fc2 = next(e for e in r.op(2) if e["kind"] == "flush-context")
    assert fc2["did"] == guest_did
    free = [e for e in r.op(2) if e["kind"] == "did-map" and e["label"] == "RN4"]
    assert free and free[0]["did"] == guest_did and free[0]["new"] == S.DOMID_INVALID
    lo, hi = r.entry(*USB)
    assert lo & 1 and did_of(hi) == 0
    assert r.engine.pci_get_pdev(0, 0, 0xA0).domain.domid == DOM0


def test_s1_legacy_non_present_window_uo3_to_pm5():
    r = Run("s1-usb-rmrr", "legacy")
    assert r.result.rcs == [0, 0]
    w = ctx_writes(r.op(1), 0, 0xA0)
    labels = [e["label"] for e in w]
    assert labels[:3] == ["UO3", "UO3", "UO3"] and labels[-1] == "PM5"
    assert w[0]["new_lo"] & 1 == 0                      # P cleared first
    assert (w[2]["new_lo"], w[2]["new_hi"]) == (0, 0)    # then lo = hi = 0
    assert w[-1]["new_lo"] & 1 and not w[-2]["new_lo"] & 1   # P set last
    # pdev goes through dom_io (RO4) before the guest (RO8).
    moves = [(e["label"], e["old"], e["new"]) for e in r.op(1) if e["kind"] == "owner-move"]
    assert moves == [("RO4", DOM0, S.DOMID_IO), ("RO8", S.DOMID_IO, GUEST)]
    # PM6/PM7 are non-present flushes: skipped under CM=0, then a write-buffer flush.
    fl = [e for e in r.op(1) if e["kind"] in ("flush-context", "flush-iotlb") and e["label"] in ("PM6", "PM7")]
    assert [(e["did"], e["non_present"], e["rc"]) for e in fl] == [(0, True, 1), (0, True, 1)]
    assert any(e["kind"] == "flush-write-buffer" and e["label"] == "PM7" for e in r.op(1))


def test_s1_direct_nocx16_best_effort_lo_then_hi_with_warning():
    r = Run("s1-usb-rmrr", "direct", cx16=False)
    op1 = r.op(1)
    w = ctx_writes(op1, 0, 0xA0)
    assert [(e["label"], e["half"], e["method"]) for e in w] == [
        ("MO7", "lo", "write_atomic"), ("MO7", "hi", "write_atomic")]
    # W1': new tables with the old DID; W2': the new DID.
    assert did_of(w[0]["new_hi"]) == 0 and w[0]["new_lo"] != w[0]["old_lo"]
    assert did_of(w[1]["new_hi"]) != 0
    warn = [e for e in op1 if e["kind"] == "log" and e["level"] == "warning"]
    assert warn and warn[0]["text"] == "[VT-D] 0000:00:14.0: reassignment may cause d0 data corruption"
    assert warn[0]["seq"] < w[0]["seq"]


def test_nocx16_plain_path_for_first_mapping_at_boot():
    r = Run("s1-usb-rmrr", "direct", cx16=False)
    w = ctx_writes(r.op(0), 0, 0xA0)
    assert [(e["half"], e["method"]) for e in w] == [
        ("lo", "plain"), ("hi", "write_atomic"), ("lo", "write_atomic")]
    syncs = [e for e in r.op(0) if e["kind"] == "cache-sync" and e["label"] == "MO7"]
    assert syncs and w[0]["seq"] < syncs[0]["seq"] < w[1]["seq"]


def test_s3_igd_single_device_no_warning_and_dom0_did_freed():
    r = Run("s3-igd-own-drhd", "direct", cx16=False)
    assert r.result.rcs == [0]
    assert not any(e["kind"] == "log" and "data corruption" in e.get("text", "") for e in r.events)
    mo = next(e for e in r.op(1) if e["kind"] == "call" and e["func"] == "domain_context_mapping_one")
    assert dict(mo["args"])["mode"] & 4   # MAP_SINGLE_DEVICE
    assert any(e["kind"] == "did-bitmap" and e["label"] == "RN4" and e["value"] == 0 for e in r.op(1))


def test_s4_direct_eopnotsupp_and_clobbered_devfn_rollback():
    r = Run("s4-legacy-pci-rmrr-bridge", "direct")
    assert r.result.rcs == [-95]
    op1 = r.op(1)
    rb = [e["what"] for e in op1 if e["kind"] == "rollback-begin"]
    assert rb == ["P5 remap", "P5 unmap"]
    # The rollback maps a spurious (secbus 05, bridge devfn 0xf0) entry ...
    spurious = ctx_writes(op1, 5, 0xF0)
    assert spurious[0]["new_lo"] & 1 and spurious[-1]["new_lo"] == 0
    # ... and finally the aliases are cleared while 05:01.0 stays on the guest's tables.
    assert not r.entry(0, 0, 0xF0)[0] & 1 and not r.entry(0, 5, 0)[0] & 1
    lo, hi = r.entry(0, 5, 0x08)
    assert lo & 1 and r.engine.iommus[0].domid_map.get(did_of(hi)) == GUEST
    assert r.engine.pci_get_pdev(0, 5, 0x08).domain.domid == DOM0


def test_s4_legacy_aliases_owned_by_guest():
    r = Run("s4-legacy-pci-rmrr-bridge", "legacy")
    assert r.result.rcs == [0]
    for bus, devfn in ((5, 0x08), (0, 0xF0), (5, 0)):
        lo, hi = r.entry(0, bus, devfn)
        assert lo & 1 and r.engine.iommus[0].domid_map.get(did_of(hi)) == GUEST


@pytest.mark.parametrize("cx16", [True, False])
def test_s6_enomem_direct_leaves_entry_untouched(cx16):
    r = Run("s6-enomem", "direct", cx16=cx16)
    assert r.result.rcs == [-12]
    assert not ctx_writes(r.op(1), 0, 0xA0)
    assert any(e["kind"] == "fault-inject" and e["point"] == "pgd-alloc" for e in r.op(1))
    lo, hi = r.entry(*USB)
    assert lo & 1 and did_of(hi) == 0
    assert not any(e["kind"] == "did-map" for e in r.op(1))   # no DID for the guest
    # The assign wrapper removes the guest's RMRR map again (AS5).
    assert any(e["kind"] == "idmap-remove" and e["label"] == "AS5" and e["domain"] == GUEST for e in r.op(1))
    assert r.engine.pci_get_pdev(0, 0, 0xA0).domain.domid == DOM0


def test_s6_enomem_legacy_leaves_entry_zero_owned_by_dom_io():
    r = Run("s6-enomem", "legacy")
    assert r.result.rcs == [-12]
    assert r.entry(*USB) == (0, 0)
    assert r.engine.pci_get_pdev(0, 0, 0xA0).domain.domid == S.DOMID_IO


def test_d1_same_owner_noop_returns_efault_after_resetting_did_bit():
    r = Run("s8-two-legacy-behind-bridge", "direct")
    boot = r.op(0)
    # The second device's bridge alias MO finds the entry already dom0's (D1).
    d1 = [e for e in boot if e["kind"] == "return" and e["func"] == "domain_context_mapping_one"
          and e["label"] == "MO6"]
    assert d1 and all(e["rc"] == -14 for e in d1)
    before = boot[boot.index(d1[0]) - 1::-1]
    assert any(e["kind"] == "did-bitmap" and e["value"] == 1 for e in before[:6])


def test_s8_direct_rollback_clears_shared_aliases_but_not_the_device():
    r = Run("s8-two-legacy-behind-bridge", "direct")
    # After boot: 05:02.0's own entry present, the shared aliases cleared.
    assert r.entry(0, 5, 0x10)[0] & 1
    boot_writes = ctx_writes(r.op(0), 0, 0xF0)
    assert boot_writes[-1]["new_lo"] == 0 and boot_writes[-1]["label"] == "UO3"


@pytest.mark.parametrize("cx16", [True, False])
def test_s10_direct_d1_on_the_guest_alias_then_d2_rollback_with_the_bridge_devfn(cx16):
    """The alias-RID breach of s10 (docs/HAZARDS.md, owner-mismatch), as
    domain_context_mapping{,_one} of d67a72c655 do it: assigning 05:02.0 to
    the guest that already holds the shared aliases."""
    r = Run("s10-alias-rid-split", "direct", cx16)
    op2 = r.op(2)
    # P1 moves 05:02.0 itself to the guest (a present entry: MO returns 1 -> prev_present)
    p1 = ctx_writes(op2, 5, 0x10)
    assert p1 and did_of(p1[-1]["new_hi"]) == did_of(r.entry(0, 5, 0x08)[1]) != 0
    # P3: the bridge 00:1e.0 is already the guest's -> the no-op returns -EFAULT (D1)
    calls = [e for e in op2 if e["kind"] in ("call", "return") and e["func"] == "domain_context_mapping_one"]
    bridge = next(i for i, e in enumerate(calls) if e["kind"] == "call" and dict(e["args"])["devfn"] == 0xF0
                  and dict(e["args"])["bus"] == 0)
    assert calls[bridge + 1]["kind"] == "return" and calls[bridge + 1]["rc"] == -14
    assert calls[bridge + 1]["label"] == "MO6"
    # P5: prev_present and pdev->domain (dom0) != guest -> domain_context_mapping(dom0) with
    # the clobbered devfn 0xf0 (D2): it maps (05, 1e.0), then moves both aliases to dom0
    rb = [e for e in op2 if e["kind"] == "rollback-begin"]
    assert [e["label"] for e in rb] == ["P5"] and "remap" in rb[0]["what"]
    dcm = [e for e in op2 if e["kind"] == "call" and e["func"] == "domain_context_mapping"]
    assert dict(dcm[-1]["args"])["devfn"] == 0xF0 and dict(dcm[-1]["args"])["domain"] == DOM0
    assert r.result.rcs == [0, -14]
    dom0_did = did_of(r.entry(0, 0, 0xFA)[1])                 # dom0's SATA 00:1f.2
    for bus, devfn in ((5, 0xF0), (0, 0xF0), (5, 0x00)):      # 05:1e.0, 00:1e.0, 05:00.0
        lo, hi = r.entry(0, bus, devfn)
        assert lo & 1 and did_of(hi) == dom0_did
    # 05:01.0 and 05:02.0 keep the guest's DID; 05:02.0 stays dom0's, 05:01.0 the guest's
    assert did_of(r.entry(0, 5, 0x08)[1]) == did_of(r.entry(0, 5, 0x10)[1]) != dom0_did
    assert r.engine.pci_get_pdev(0, 5, 0x10).domain.domid == DOM0
    assert r.engine.pci_get_pdev(0, 5, 0x08).domain.domid == GUEST


def test_s5_me_phantom_nested_mapping():
    r = Run("s5-me-wifi-phantom", "direct")
    assert r.result.rcs == [0]
    nested = [e for e in r.op(1) if e["kind"] == "call" and e["func"] == "domain_context_mapping_one"
              and dict(e["args"])["devfn"] == (22 << 3) | 7]
    assert nested, "the ME phantom 0:22.7 must be switched by a nested MO"
    assert dict(nested[0]["args"])["pdev"] is None
    w = ctx_writes(r.op(1), 0, (22 << 3) | 7)
    assert w and w[-1]["new_lo"] & 1


def test_mo14_rollback_ping_pong_is_capped():
    """A flush failure on every attempt makes MO14 alternate between the two
    domains; the engine stops at the cap with an engine-limit event."""
    from tracer.platform import Fault
    from tracer.record import record
    from tracer.recorder import ListSink
    from tracer.scenario import load_scenario
    p = load_scenario("s1-usb-rmrr")
    p.ops = p.ops[:1]
    p.faults = [Fault(at="flush-context", domain=None, device="0000:00:14.0", nth=n, errno="ETIMEDOUT")
                for n in range(1, 40)]
    sink = ListSink()
    res = record(p, "direct", sink)
    evs = [S.event_to_dict(e) for e in sink.events]
    lim = [e for e in evs if e["kind"] == "engine-limit"]
    assert lim and "MO14" in lim[0]["what"]
    assert sum(e["kind"] == "rollback-begin" for e in evs) >= 8
    assert res.rcs and res.rcs[0] < 0


@pytest.mark.parametrize("name", ["s1-usb-rmrr", "s2-guest-destroy-quarantine", "s7-phantom-quarantine"])
@pytest.mark.parametrize("variant", ["legacy", "direct"])
def test_deterministic_event_stream(name, variant):
    a = Run(name, variant).sink.events
    b = Run(name, variant).sink.events
    assert a == b


@pytest.mark.parametrize("variant", ["legacy", "direct"])
@pytest.mark.parametrize("cx16", [True, False])
def test_locks_balanced_and_stack_empty_after_every_op(variant, cx16):
    from tracer.scenario import list_shipped
    for name, _ in list_shipped():
        r = Run(name, variant, cx16)
        assert r.engine.locks == {}, name
        assert r.engine.stack == [], name
        calls = sum(e["kind"] == "call" for e in r.events)
        rets = sum(e["kind"] == "return" for e in r.events)
        assert calls == rets, name


@pytest.mark.parametrize("cx16", [True, False])
def test_s2_destroy_into_quarantine_owner_dying(cx16):
    r = Run("s2-guest-destroy-quarantine", "direct", cx16=cx16)
    assert r.result.rcs == [0, 0]
    op2 = r.op(2)
    kinds = [e["kind"] for e in op2]
    assert kinds.index("domain-dying") < kinds.index("pt-free") < kinds.index("domain-destroy")
    mo = next(e for e in op2 if e["kind"] == "call" and e["func"] == "domain_context_mapping_one")
    assert dict(mo["args"])["domain"] == S.DOMID_IO and dict(mo["args"])["mode"] & 2   # MAP_OWNER_DYING
    w = ctx_writes(op2, 0, 0xA0)
    if cx16:
        assert [e["method"] for e in w] == ["cmpxchg16b"]
    else:
        # Best effort without the warning: the owner is dying.
        assert [(e["half"], e["method"]) for e in w] == [("lo", "write_atomic"), ("hi", "write_atomic")]
        assert not any(e["kind"] == "log" and "data corruption" in e["text"] for e in op2)
    # The USB controller ends on dom_io's read-only scratch tree with dom_io's DID.
    lo, hi = r.entry(*USB)
    assert lo & ~0xFFF == r.engine.dom_io.pt_pages[0]
    assert r.engine.iommus[0].domid_map[did_of(hi)] == S.DOMID_IO
    assert r.engine.pci_get_pdev(0, 0, 0xA0).domain is r.engine.dom_io
    # Teardown's cleanup_domid_map runs without any lock held (the XSA-399 setting).
    td = [e for e in op2 if e["label"] == "DK4" and e["kind"] in ("did-map", "did-bitmap")]
    held = set()
    for e in op2:
        if e["kind"] == "lock":
            held.add((e["lock"], e["target"]))
        elif e["kind"] == "unlock":
            held.discard((e["lock"], e["target"]))
        elif e in td:
            assert not held


def test_s2_legacy_window_through_dom_io():
    r = Run("s2-guest-destroy-quarantine", "legacy")
    assert r.result.rcs == [0, 0]
    w = ctx_writes(r.op(2), 0, 0xA0)
    assert w[0]["label"] == "UO3" and w[-1]["label"] == "PM5"
    assert r.engine.pci_get_pdev(0, 0, 0xA0).domain is r.engine.dom_io


def test_s7_phantom_keeps_freed_did_after_esrch():
    """D3: RN4 frees dom_io's DID while 02:00.4 still carries it; the phantom's
    MO3 then finds DOMID_INVALID (-ESRCH), which assign_device's loop swallows."""
    r = Run("s7-phantom-quarantine", "direct")
    assert r.result.rcs == [0]
    op1 = r.op(1)
    freed = next(e for e in op1 if e["kind"] == "did-map" and e["label"] == "RN4")
    assert freed["old"] == S.DOMID_IO and freed["new"] == S.DOMID_INVALID
    esrch = [e for e in op1 if e["kind"] == "return" and e["func"] == "domain_context_mapping_one"
             and e["rc"] == -3]
    assert esrch and any(e["kind"] == "log" and e["text"].startswith("[VT-D]no domain for did") for e in op1)
    lo, hi = r.entry(0, 2, 4)
    assert lo & 1 and did_of(hi) == freed["did"]
    assert freed["did"] not in r.engine.iommus[0].domid_bitmap
    assert lo & ~0xFFF == r.engine.dom_io.pt_pages[0]   # still the scratch tables


def test_s7_legacy_unmaps_phantom_with_the_wrong_did():
    r = Run("s7-phantom-quarantine", "legacy")
    assert r.result.rcs == [0]
    uo = [e for e in r.op(1) if e["kind"] == "flush-context" and e["label"] == "UO5" and e["sid"] == 0x0204]
    assert uo, "the phantom's entry is cleared and flushed"


# Final state of every shipped scenario under every variant: op return codes and
# where each scenario's main device ends up (pdev->domain).
FINAL = {
    ("s1-usb-rmrr", "legacy"): ([0, 0], "0000:00:14.0", "dom0"),
    ("s1-usb-rmrr", "direct"): ([0, 0], "0000:00:14.0", "dom0"),
    ("s2-guest-destroy-quarantine", "legacy"): ([0, 0], "0000:00:14.0", "dom_io"),
    ("s2-guest-destroy-quarantine", "direct"): ([0, 0], "0000:00:14.0", "dom_io"),
    ("s3-igd-own-drhd", "legacy"): ([0], "0000:00:02.0", "guest"),
    ("s3-igd-own-drhd", "direct"): ([0], "0000:00:02.0", "guest"),
    ("s4-legacy-pci-rmrr-bridge", "legacy"): ([0], "0000:05:01.0", "guest"),
    ("s4-legacy-pci-rmrr-bridge", "direct"): ([-95], "0000:05:01.0", "dom0"),
    ("s5-me-wifi-phantom", "legacy"): ([0], "0000:03:00.0", "guest"),
    ("s5-me-wifi-phantom", "direct"): ([0], "0000:03:00.0", "guest"),
    ("s6-enomem", "legacy"): ([-12], "0000:00:14.0", "dom_io"),
    ("s6-enomem", "direct"): ([-12], "0000:00:14.0", "dom0"),
    ("s7-phantom-quarantine", "legacy"): ([0], "0000:02:00.0", "guest"),
    ("s7-phantom-quarantine", "direct"): ([0], "0000:02:00.0", "guest"),
    ("s8-two-legacy-behind-bridge", "legacy"): ([0, 0], "0000:05:02.0", "dom0"),
    ("s8-two-legacy-behind-bridge", "direct"): ([0, 0], "0000:05:02.0", "dom0"),
    # D1: the second device's bridge MO finds the aliases already the guest's -> -EFAULT
    ("s10-alias-rid-split", "legacy"): ([0, 0], "0000:05:02.0", "guest"),
    ("s10-alias-rid-split", "direct"): ([0, -14], "0000:05:02.0", "dom0"),
    # run to completion: guest's teardown before guest-b's assign; the NIC ends with dom0
    ("s9-xsa399-race", "legacy"): ([0, 0, 0, 0, 0], "0000:00:19.0", "dom0"),
    ("s9-xsa399-race", "direct"): ([0, 0, 0, 0, 0], "0000:00:19.0", "dom0"),
}


@pytest.mark.parametrize("cx16", [True, False])
@pytest.mark.parametrize("key", sorted(FINAL))
def test_final_return_codes_and_owner(key, cx16):
    name, variant = key
    rcs, bdf, owner = FINAL[key]
    r = Run(name, variant, cx16)
    assert r.result.rcs == rcs
    pdev = r.engine.pci_get_pdev(*parse_bdf(bdf))
    assert pdev.domain.name == owner
    # Every present entry's DID resolves through the map on its unit, except
    # the stale-DID cases docs/MODEL.md#d3 predicts (D3 in S7 direct).
    for u in r.engine.iommus:
        for (bus, devfn), (lo, hi) in u.ctx.items():
            if lo & 1 and not (name.startswith("s7") and variant == "direct"):
                assert did_of(hi) in u.domid_bitmap, (bus, devfn)


def _platform_with_ops(name, ops):
    from tracer.platform import Op
    from tracer.scenario import load_scenario
    p = load_scenario(name)
    p.ops = [Op(i + 1, *o) for i, o in enumerate(ops)]
    return p


def test_self_deassign_of_a_dom0_device_is_refused_without_events():
    from tracer.record import record
    from tracer.recorder import ListSink
    p = _platform_with_ops("s1-usb-rmrr", [("deassign", "0000:00:17.0")])
    sink = ListSink()
    res = record(p, "direct", sink)
    assert res.rcs == [-22]
    op1 = [S.event_to_dict(e) for e in sink.events if e[S.I_OP] == 1]
    assert [e["kind"] for e in op1] == ["op-begin", "op-end"]


def test_pci_release_devices_releases_newest_first():
    """list_move() inserts at the head of d->pdev_list, so domain destruction
    deassigns the most recently assigned device first."""
    from tracer.record import record
    from tracer.recorder import ListSink
    p = _platform_with_ops("s1-usb-rmrr", [("assign", "0000:00:14.0", "guest"),
                                           ("assign", "0000:00:17.0", "guest"),
                                           ("destroy", None, None, "guest")])
    sink = ListSink()
    assert record(p, "direct", sink).rcs == [0, 0, 0]
    op3 = [S.event_to_dict(e) for e in sink.events if e[S.I_OP] == 3]
    order = [e["args"][3][1] for e in op3 if e["kind"] == "call" and e["func"] == "deassign_device"]
    assert order == [0x17 << 3, 0x14 << 3]
