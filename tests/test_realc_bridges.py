"""Bridges, conventional PCI and phantom functions through the real C of
Debian's Xen 4.17.5, against the models, each trace recorded as a user
records it (`vtdtrace record` in a subprocess), with and without cmpxchg16b.

* A device with phantom functions (its DRHD shared with a dom0 device):
  `vtdtrace diff direct REAL` is EQUIVALENT with no hazard delta.
* Conventional PCI behind a PCIe-to-PCI bridge -- an RMRR device (S4), two
  devices behind one bridge (S8), both given to one guest (S10): 4.17.5
  differs from the 4.15 code of `direct` in one place, D1: its
  domain_context_mapping_one() returns 0, not -EFAULT, when a bridge alias
  is already the target domain's, so no P5 rollback clears the aliases.
  Shown two ways: the traces differ exactly there (the model clears an
  alias entry after a -EFAULT no-op; the real code never clears one), and
  a copy of the tree with only that return changed back to 4.15's -EFAULT
  is EQUIVALENT to `direct`, hazards included.
* A phantom device alone on its DRHD: 4.17.5 takes the phantom entry whose
  DID the main function's move freed for dom_io's (the pseudo-DID test of
  the quarantine rework) where the 4.15 code fails with -ESRCH (D3); the
  `final` model has that test and is EQUIVALENT.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realc_helpers import DATA, REPO, events, finding_kinds, record, scratch_tree, vtdtrace, xen_tree  # noqa: F401
from scenario_gen import platform_of

from tracer import schema as S
from tracer.record import record as trecord
from tracer.recorder import ListSink
from xenc import record as xrecord
from xenc.compare import compare
from xenc.runtime import unsupported_features

TRACES = REPO / "traces"
CX = ["--cx16", "--no-cx16"]
BRIDGED = ["s4-legacy-pci-rmrr-bridge", "s8-two-legacy-behind-bridge", "s10-alias-rid-split"]
ALIASES = {(0x00, 0xF0), (0x05, 0x00)}          # 00:1e.0, the bridge; 05:00.0, (secbus, 0)
EFAULT, ESRCH = -14, -3
# 4.17.5's domain_context_mapping_one ends its early exits (the same-owner
# no-op among them) with `return rc`; the 4.15 code returns -EFAULT there.
UNLOCK_4175 = """    unlock:
        spin_unlock(&iommu->lock);
        unmap_vtd_domain_page(context_entries);
        if ( prev_dom )
            rcu_unlock_domain(prev_dom);
        return rc;
"""

D1_415 = (UNLOCK_4175, UNLOCK_4175.replace("return rc;", "return -EFAULT;"))
# eb19326a32 (4.16.6 and 4.17): domain_context_unmap cleans the domain's DID
# up only when it unmapped the device's own devfn; the 4.15 code does it for
# any devfn -- a P5 rollback's, clobbered to the bridge's (D2), included.
CLEANUP_415 = ("    if ( !ret && pdev->devfn == devfn &&\n"
               "         !QUARANTINE_SKIP(domain, pdev->arch.vtd.pgd_maddr) )\n"
               "        check_cleanup_domid_map(domain, pdev, iommu);\n",
               "    if ( !ret )\n        check_cleanup_domid_map(domain, pdev, iommu);\n")


def _scenario(name: str) -> Path:
    return TRACES / f"{name}.toml" if name in BRIDGED else DATA / f"{name}.toml"


def _record(tmp: Path, name: str, engine: str, cx: str, tree: Path | None = None, tag: str = "") -> Path:
    return record(tmp, _scenario(name), engine, cx, tree, tag)


_events, _finding_kinds = events, finding_kinds


def _rcs(path: Path) -> list[int]:
    return [ev[S.F_OP_END_RC] for ev in _events(path) if ev[0] == S.K_OP_END]


def _assert_equivalent(model: Path, real: Path) -> dict:
    r = vtdtrace("diff", str(model), str(real))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "result: EQUIVALENT" in r.stdout and "hazard delta: none" in r.stdout
    assert "compared: real code against a model" in r.stdout
    doc = json.loads(vtdtrace("diff", "--json", str(model), str(real)).stdout)
    assert doc["equivalent"] and doc["hazard_delta"] == {"only_a": [], "only_b": [], "changed": []}
    assert _finding_kinds(model) == _finding_kinds(real)
    return doc


def _alias_clears(events: list) -> list:
    """Unmaps of a bridge alias entry (not the clear-present of a
    reassignment without cmpxchg16b, which the next stores undo)."""
    return [ev for ev in events if ev[0] == S.K_CTX_WRITE
            and S.FUNCS[ev[S.I_FUNC]] == "domain_context_unmap_one"
            and (ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN]) in ALIASES
            and ev[S.F_CTX_WRITE_OLD_LO] & 1 and not ev[S.F_CTX_WRITE_NEW_LO] & 1]


def _ctx_stores(events: list, bus: int, devfn: int) -> list:
    return [ev for ev in events if ev[0] == S.K_CTX_WRITE
            and (ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN]) == (bus, devfn)]


def _patched(src_tree: Path, dest: Path, *changes: tuple[str, str]) -> Path:
    tree = scratch_tree(src_tree, dest)
    src = tree / "xen" / "drivers" / "passthrough" / "vtd" / "iommu.c"
    text = src.read_text()
    for old, new in changes:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    src.write_text(text)
    return tree


@pytest.fixture(scope="module")
def d1_tree(xen_tree, tmp_path_factory) -> Path:  # noqa: F811
    """4.17.5 with the one return of domain_context_mapping_one's early exits
    put back to the 4.15 code's -EFAULT."""
    return _patched(xen_tree, tmp_path_factory.mktemp("d1") / "xen", D1_415)


@pytest.fixture(scope="module")
def tree_415_forms(xen_tree, tmp_path_factory) -> Path:  # noqa: F811
    """4.17.5 with both of its changes to the 4.15 code on these paths put
    back: D1's return, and domain_context_unmap's DID cleanup for any devfn."""
    return _patched(xen_tree, tmp_path_factory.mktemp("f415") / "xen", D1_415, CLEANUP_415)


@pytest.mark.parametrize("cx", CX)
def test_phantom_functions_as_the_model(cx, xen_tree, tmp_path):  # noqa: F811
    model = _record(tmp_path, "phantom", "direct", cx)
    real = _record(tmp_path, "phantom", "xen-c", cx, xen_tree)
    doc = _assert_equivalent(model, real)
    assert doc["projection"]["b"]["root_stores_merged"] > 0
    ev = _events(real)
    assert _rcs(real) == [0, 0, 0]
    # not vacuous: the phantom function's entry moved to the guest's DID and back, as the device's did
    for devfn in (0x00, 0x04):
        dids = [(ev_[S.F_CTX_WRITE_NEW_HI] >> 8) & 0xFFFF for ev_ in _ctx_stores(ev, 0x02, devfn)
                if ev_[S.F_CTX_WRITE_NEW_LO] & 1]
        assert dids[0] == 0 and 1 in dids and dids[-1] == 0, (devfn, dids)


@pytest.mark.parametrize("cx", CX)
@pytest.mark.parametrize("name", BRIDGED)
def test_bridged_pci_differs_from_the_model_by_d1_only(name, cx, xen_tree, d1_tree, tmp_path):  # noqa: F811
    model = _record(tmp_path, name, "direct", cx)
    real = _record(tmp_path, name, "xen-c", cx, xen_tree)
    # the one change of 4.15's code put into 4.17.5: then the real code is the model, hazards included
    _assert_equivalent(model, _record(tmp_path, name, "xen-c", cx, d1_tree, "-d1"))

    # and without it the traces differ exactly by D1's effects
    m, r = _events(model), _events(real)
    noops = [ev for ev in m if ev[0] == S.K_RETURN and S.FUNCS[ev[S.I_FUNC]] == "domain_context_mapping_one"
             and ev[S.F_RETURN_RC] == EFAULT]
    assert noops, "the model's same-owner no-op on an alias returns -EFAULT (D1)"
    assert _alias_clears(m), "... and its rollback clears the bridge aliases"
    assert not _alias_clears(r), "4.17.5 returns 0 there: no alias entry is ever cleared"
    c = compare(m, r)
    assert not c.equal
    # check finds the same kinds and severities (on other devices and operations, the hazard delta says)
    assert _finding_kinds(model) == _finding_kinds(real)
    rcs_m, rcs_r = _rcs(model), _rcs(real)
    if name == "s4-legacy-pci-rmrr-bridge":
        # -EOPNOTSUPP either way (the RMRR device changing owner); 4.17.5's P5
        # remap of dom0 finds the aliases dom0's and leaves them mapped
        assert rcs_m == rcs_r == [0, -95]
    elif name == "s8-two-legacy-behind-bridge":
        # the boot-time no-op no longer rolls back: 05:01.0's aliases stay dom0's
        assert rcs_m == rcs_r == [0, 0, 0]
        boot = [ev for ev in r if ev[S.I_OP] == 0]
        assert not _alias_clears(boot) and _alias_clears([ev for ev in m if ev[S.I_OP] == 0])
    else:
        # the second device joins its sibling in the guest: 0 where the model fails with -EFAULT
        assert rcs_m == [0, 0, EFAULT] and rcs_r == [0, 0, 0]
        moved = [[ev[S.F_OWNER_MOVE_BDF], ev[S.F_OWNER_MOVE_NEW]] for ev in r
                 if ev[0] == S.K_OWNER_MOVE and ev[S.I_OP] == 2]
        assert moved == [[0x0510, 1]]
        assert not [ev for ev in m if ev[0] == S.K_OWNER_MOVE and ev[S.I_OP] == 2]


@pytest.mark.parametrize("cx", CX)
def test_phantom_alone_on_its_unit_is_the_final_model(cx, xen_tree, tmp_path):  # noqa: F811
    """D3: the direct model's phantom entry keeps dom0's freed DID and the
    deassign fails with -ESRCH; 4.17.5 (like `final`) moves it."""
    real = _record(tmp_path, "phantom-alone", "xen-c", cx, xen_tree)
    _assert_equivalent(_record(tmp_path, "phantom-alone", "final", cx), real)
    direct = _record(tmp_path, "phantom-alone", "direct", cx)
    assert _rcs(direct) == [0, 0, ESRCH] and _rcs(real) == [0, 0, 0]
    assert ("did-dangling", "hazard") in _finding_kinds(direct)
    assert ("did-dangling", "hazard") not in _finding_kinds(real)
    r = _events(real)
    phantom = [ev for ev in _ctx_stores(r, 0x02, 0x04) if ev[S.I_OP] == 1 and ev[S.F_CTX_WRITE_NEW_LO] & 1]
    assert phantom and (phantom[-1][S.F_CTX_WRITE_NEW_HI] >> 8) & 0xFFFF == 1   # the guest's DID
    assert not _ctx_stores([ev for ev in _events(direct) if ev[S.I_OP] == 1], 0x02, 0x04)


def test_what_is_still_unsupported_is_refused_with_one_line(xen_tree, tmp_path):  # noqa: F811
    """A device that starts in dom_io (s7's phantom device) and a bridge off
    segment 0 are refused before anything runs, each named on one line."""
    r = vtdtrace("record", str(TRACES / "s7-phantom-quarantine.toml"), "--engine", "xen-c", "--xen-tree",
                 str(xen_tree), "-o", str(tmp_path / "s7.vtdt"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "owned by dom_io at boot" in r.stderr and "phantom" not in r.stderr
    assert not (tmp_path / "s7.vtdt").exists()
    seg1 = (TRACES / "s4-legacy-pci-rmrr-bridge.toml").read_text() + "\n".join([
        "[[iommu]]", "id = 1", "segment = 1", "include_all = true", "nd = 2", "levels = 4",
        "[[device]]", 'bdf = "0001:00:1e.0"', 'type = "pcie2pci-bridge"', 'id = "8086:244e"', "secondary = 0x05",
        ""])
    (tmp_path / "seg1.toml").write_text(seg1)
    r = vtdtrace("record", str(tmp_path / "seg1.toml"), "--engine", "xen-c", "--xen-tree", str(xen_tree),
                 "-o", str(tmp_path / "seg1.vtdt"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "bridge 0001:00:1e.0 on segment 0001" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("cx", CX)
def test_nested_bridges_and_a_stride_2_device(cx, xen_tree, d1_tree, tmp_path):  # noqa: F811
    """A legacy bridge behind a PCIe-to-PCI bridge (the walk goes up two
    levels; the unit is found through the bridge in its scope) and four
    requester IDs of one phantom device: with 4.15's return, the model."""
    model = _record(tmp_path, "nested-bridges", "direct", cx)
    _assert_equivalent(model, _record(tmp_path, "nested-bridges", "xen-c", cx, d1_tree, "-d1"))
    r = _events(_record(tmp_path, "nested-bridges", "xen-c", cx, xen_tree))
    # the unit of the bridge's scope (0) maps 06:01.0, the bridge's secondary-bus alias and the bridge
    assert {(ev[S.F_CTX_WRITE_BUS], ev[S.F_CTX_WRITE_DEVFN]) for ev in r if ev[0] == S.K_CTX_WRITE
            and ev[S.F_CTX_WRITE_IOMMU] == 0} >= {(0x06, 0x08), (0x05, 0x00), (0x00, 0xF0)}
    assert {ev[S.F_CTX_WRITE_DEVFN] for ev in r if ev[0] == S.K_CTX_WRITE and ev[S.F_CTX_WRITE_BUS] == 0x03} \
        == {0, 2, 4, 6}


# --- random topologies ---------------------------------------------------------

@st.composite
def _topologies(draw) -> str:
    """Bridges (PCIe-to-PCI or legacy, possibly a legacy one behind), legacy
    PCI devices behind them, endpoints with phantom functions, RMRRs, one or
    two units, and assignments back and forth: what the xen-c engine runs."""
    lines = ['name = "topo"', 'description = "hypothesis"', "[platform]",
             f"cx16 = {'true' if draw(st.booleans()) else 'false'}", "quarantine = false",
             "[[iommu]]", "id = 0", "include_all = true", f"nd = {draw(st.sampled_from((1, 2)))}",
             f"levels = {draw(st.sampled_from((3, 4)))}"]
    devs = [("0000:00:00.0", "host-bridge", ['id = "8086:0c00"'])]
    for slot in draw(st.lists(st.sampled_from((0x02, 0x14, 0x1f)), max_size=2, unique=True)):
        devs.append((f"0000:00:{slot:02x}.0", "pcie-endpoint",
                     ['id = "8086:1502"', f"phantom_stride = {draw(st.sampled_from((0, 0, 1, 2, 4)))}"]))
    if draw(st.booleans()):
        nested = draw(st.booleans())
        devs.append(("0000:00:1e.0", draw(st.sampled_from(("pcie2pci-bridge", "legacy-pci-bridge"))),
                     ['id = "8086:244e"', "secondary = 0x05", f"subordinate = {6 if nested else 5}"]))
        if nested:
            devs.append(("0000:05:03.0", "legacy-pci-bridge", ['id = "104c:ac28"', "secondary = 0x06"]))
        for bdf in draw(st.lists(st.sampled_from(["0000:05:00.0", "0000:05:01.0", "0000:05:02.0"]
                                                 + (["0000:06:01.0", "0000:06:00.0"] if nested else [])),
                                 min_size=1, max_size=3, unique=True)):
            devs.append((bdf, "pci", ['id = "10ec:8139"']))
    movable = [b for b, t, _ in devs if t in ("pcie-endpoint", "pci")]
    if draw(st.booleans()) and len(devs) > 1:
        # a unit of its own for an endpoint, or for the bridge and what is behind it
        mine = draw(st.sampled_from([b for b, _, _ in devs if b.startswith("0000:00:") and b != "0000:00:00.0"]))
        lines += ["[[iommu]]", "id = 1", f'devices = ["{mine}"]', "nd = 2", "levels = 4"]
    for bdf, t, extra in devs:
        lines += ["[[device]]", f'bdf = "{bdf}"', f'type = "{t}"', *extra]
    shared: set[str] = set()
    if movable:
        for i in range(draw(st.integers(0, 2))):
            scope = draw(st.lists(st.sampled_from(movable), min_size=1, max_size=2, unique=True))
            if len(scope) > 1:
                shared.update(scope)
            lines += ["[[rmrr]]", f"base = {0xD5D40000 + i * 0x10000:#x}", f"end = {0xD5D40FFF + i * 0x10000:#x}",
                      "devices = [" + ", ".join(f'"{d}"' for d in scope) + "]"]
    lines += ["[[domain]]", 'name = "dom0"', "id = 0", "hardware = true",
              "[[domain]]", 'name = "guest1"', "id = 1", "[[domain]]", 'name = "guest2"', "id = 2"]
    for _ in range(draw(st.integers(1, 5)) if movable else 0):
        dev = draw(st.sampled_from(movable))
        if draw(st.integers(0, 2)):
            lines += ["[[op]]", 'do = "assign"', f'device = "{dev}"',
                      f'to = "{draw(st.sampled_from(("guest1", "guest2")))}"']
            if dev in shared:
                lines.append("relaxed = true")
        else:
            lines += ["[[op]]", 'do = "deassign"', f'device = "{dev}"']
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def build_415_forms(tree_415_forms, tmp_path_factory):
    return xrecord.prepare(tree_415_forms, tmp_path_factory.mktemp("f415-build"))


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(text=_topologies())
def test_random_topologies_as_the_final_model(text, build_415_forms):
    """Whatever the topology, 4.17.5 with the 4.15 forms of its two changes
    on these paths (D1's return; the DID cleanup after an unmap of another
    devfn than the device's, reached by a P5 rollback that failed on D1)
    stores, allocates and flushes as `final` (the 4.15 code that already
    has the pseudo-DID test of the lone phantom device), return codes
    included."""
    platform = platform_of(text)
    assert unsupported_features(platform) == []
    model, real = ListSink(), ListSink()
    trecord(platform, "final", model)
    tree, built = build_415_forms
    xrecord.record(platform_of(text), tree, built, real)
    c = compare(model.events, real.events)
    assert c.equal, text + "\n".join(c.describe(("final", "xen-c")))


@pytest.mark.parametrize("cx", CX)
@pytest.mark.parametrize("name", BRIDGED + ["phantom"])
def test_bridges_and_phantoms_in_quarantine_as_the_final_model(name, cx, xen_tree, tree_415_forms,  # noqa: F811
                                                               tmp_path):
    """Bridges, aliases and phantom functions composed with per-device
    quarantine (the two stand-in families together): with quarantine on, the
    tree with the 4.15 forms put back is EQUIVALENT to `final`, pseudo domain
    IDs and quarantine tables included; the phantom device is EQUIVALENT on
    the unpatched tree (D1 and the DID cleanup never come into play there)."""
    scen = tmp_path / f"{name}-q.toml"
    scen.write_text(_scenario(name).read_text().replace("quarantine = false", "quarantine = true"))
    assert "quarantine = true" in scen.read_text()
    out = []
    for engine, tree in (("final", None), ("xen-c", xen_tree if name == "phantom" else tree_415_forms)):
        path = tmp_path / f"{name}-q.{engine}{cx}.vtdt"
        args = ["record", str(scen), "--engine", engine, cx, "-o", str(path)]
        r = vtdtrace(*(args + ["--xen-tree", str(tree)] if tree is not None else args))
        assert r.returncode == 0, r.stderr
        out.append(path)
    _assert_equivalent(*out)
    assert any(ev[0] == S.K_PSEUDO_DOMID for ev in _events(out[1])), "quarantine ran"
