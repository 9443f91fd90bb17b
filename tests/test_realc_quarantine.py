"""Quarantine through the real C of Debian's Xen 4.17.5 against engine
`final` (b3ee746000, the 4.15 backport of the same per-device design): a
device deassigned with quarantine on goes to dom_io with its own pseudo
domain ID, whose DID was taken when its quarantine page tables were built
(the RMRR identity-mapped into them, one page per level down to a scratch
leaf), and comes back to a guest from there.

`vtdtrace diff MODEL REAL` finds nothing beyond the three recording
differences, the pages of the quarantine tables are where the model puts
them (the pseudo domain ID's region), and `check` reports the same finding
kinds with the pseudo domain IDs named as the replay names them.  Where
4.17 really differs from the 4.15 code of the model -- a device put into
quarantine while quarantine is off -- the test asserts exactly that.

Each trace is recorded as a user records it (`vtdtrace record` in a
subprocess)."""

from __future__ import annotations

import json
import re

import pytest
from realc_helpers import DATA, events, findings, record, scratch_tree, vtdtrace, xen_tree  # noqa: F401

from tracer import schema as S
from tracer.platform import domain_tables_base
from xenc.compare import compare

CASES = [(s, cx) for s in ("usb-rmrr-nic-q", "nic-q", "nic-q-op") for cx in ("--cx16", "--no-cx16")]
FIRST = S.F0                   # an event's first field
PSEUDO = re.compile(r"dom_io/pseudo 0x[0-9a-f]+ \([0-9a-f:.]+\)")


_record, _events, _findings = record, events, findings


def _of_kind(events: list, kind: int) -> list:
    return [ev for ev in events if ev[S.I_KIND] == kind]


@pytest.mark.parametrize("scenario,cx", CASES)
def test_quarantine_equivalent_to_final(scenario, cx, xen_tree, tmp_path):  # noqa: F811
    toml = DATA / f"{scenario}.toml"
    model = _record(tmp_path, toml, "final", cx)
    real = _record(tmp_path, toml, "xen-c", cx, xen_tree)
    c = compare(_events(model), _events(real))
    assert c.equal, "\n".join(c.describe(("final", "xen-c")))

    r = vtdtrace("diff", str(model), str(real))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "result: EQUIVALENT" in r.stdout and "hazard delta: none" in r.stdout
    doc = json.loads(vtdtrace("diff", "--json", str(model), str(real)).stdout)
    assert doc["equivalent"] and doc["hazard_delta"] == {"only_a": [], "only_b": [], "changed": []}

    # not vacuous: the device went to dom_io, pointed at its own quarantine
    # tables with its pseudo domain ID's DID, and came back from there
    ev_m, ev_r = _events(model), _events(real)
    moves = [(ev[S.F_OWNER_MOVE_OLD], ev[S.F_OWNER_MOVE_NEW]) for ev in _of_kind(ev_r, S.K_OWNER_MOVE)]
    assert any(new == S.DOMID_IO for _, new in moves) and any(old == S.DOMID_IO for old, _ in moves)
    pseudo_r = _of_kind(ev_r, S.K_PSEUDO_DOMID)
    assert [ev[FIRST:] for ev in pseudo_r] == \
        [ev[FIRST:] for ev in _of_kind(ev_m, S.K_PSEUDO_DOMID)]
    pseudo = {ev[S.F_PSEUDO_DOMID_DOMAIN] for ev in pseudo_r}
    assert pseudo and all(S.is_pseudo_domid(d) for d in pseudo)
    assert any(ev[S.F_DID_MAP_NEW] in pseudo for ev in _of_kind(ev_r, S.K_DID_MAP))

    # the quarantine tables: the same pages, kinds and owners as the model's,
    # in the pseudo domain ID's region, and a context entry pointing at them
    def qpt(events: list) -> list:
        return [ev[FIRST:] for ev in _of_kind(events, S.K_PT_ALLOC)
                if str(ev[S.F_PT_ALLOC_WHAT]).startswith(("quarantine", "scratch"))]
    q = qpt(ev_r)
    assert q == qpt(ev_m)
    assert {w for _, _, w in q} == {"quarantine", "quarantine-l3", "quarantine-l2", "quarantine-l1", "scratch"}
    assert all(domain_tables_base(d) <= m < domain_tables_base(d) + (1 << 24) for d, m, _ in q)
    roots = {m for _, m, w in q if w == "quarantine"}
    assert any(ev[S.F_CTX_WRITE_NEW_LO] & ~0xFFF in roots and ev[S.F_CTX_WRITE_NEW_LO] & 1
               for ev in _of_kind(ev_r, S.K_CTX_WRITE)) or \
        any(ev[S.F_CTX_WRITE_NEW_LO] & ~0xFFF in {p + 0x1000 for p in roots}   # a 3-level unit skips a level
            for ev in _of_kind(ev_r, S.K_CTX_WRITE))
    if scenario == "usb-rmrr-nic-q":
        # the RMRR identity-mapped into the device's quarantine tables, named by its pseudo domain ID
        idmaps = [ev[FIRST:] for ev in _of_kind(ev_r, S.K_IDMAP_ADD) if ev[S.F_IDMAP_ADD_DOMAIN] in pseudo]
        assert idmaps and idmaps == [ev[FIRST:] for ev in _of_kind(ev_m, S.K_IDMAP_ADD)
                                     if ev[S.F_IDMAP_ADD_DOMAIN] in pseudo]
        # hot-unplug (intel_iommu_remove_device): the quarantine tables, their
        # identity map and both pseudo domain IDs go, as in the model
        for kind in (S.K_IDMAP_REMOVE, S.K_PT_FREE, S.K_DEVICE_REMOVE):
            gone = [ev[FIRST:] for ev in _of_kind(ev_r, kind)]
            assert gone and gone == [ev[FIRST:] for ev in _of_kind(ev_m, kind)]
        assert {ev[S.F_PT_FREE_DOMAIN] for ev in _of_kind(ev_r, S.K_PT_FREE)} <= pseudo
        assert sorted(ev[S.F_PSEUDO_DOMID_DOMAIN] for ev in pseudo_r if not ev[S.F_PSEUDO_DOMID_VALUE]) == \
            sorted(pseudo)

    # check: the same finding kinds and severities, pseudo domain IDs named alike
    fm, fr = _findings(model), _findings(real)
    assert sorted({(f["kind"], f["severity"]) for f in fm}) == sorted({(f["kind"], f["severity"]) for f in fr})
    names_m = {n for f in fm for n in PSEUDO.findall(f["detail"])}
    names_r = {n for f in fr for n in PSEUDO.findall(f["detail"])}
    assert names_m == names_r
    if scenario == "usb-rmrr-nic-q":
        assert names_r      # the reassignments out of and into quarantine are in the findings


def test_quarantine_op_with_quarantine_off_is_the_version_difference(xen_tree, tmp_path):  # noqa: F811
    """With quarantine off, `quarantine` (assign to dom_io) finds no tables
    for the device.  4.17 (QUARANTINE_SKIP, from 980d6acf15 "make DMA
    containment of quarantined devices optional", a 4.16 change the 4.15
    backport does not have) unmaps its context entry; b3ee746000 maps it to
    dom_io's own, empty tables with DEVICE_DOMID(dom_io) = DOMID_INVALID's
    DID.  `diff` reports exactly that in the quarantine op: the model's
    DID for DOMID_INVALID and one store of a present entry into dom_io's
    region, against the real code's stores clearing the entry."""
    toml = tmp_path / "nic-q-op-off.toml"
    toml.write_text((DATA / "nic-q-op.toml").read_text().replace("quarantine = true", "quarantine = false"))
    model = _record(tmp_path, toml, "final", "--cx16")
    real = _record(tmp_path, toml, "xen-c", "--cx16", xen_tree)
    r = vtdtrace("diff", str(model), str(real))
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(vtdtrace("diff", "--json", str(model), str(real)).stdout)
    assert not doc["equivalent"]
    ev_m, ev_r = _events(model), _events(real)

    def op1(events: list, kind: int) -> list:
        return [ev for ev in events if ev[S.I_OP] == 1 and ev[S.I_KIND] == kind]
    # the model takes a DID for DOMID_INVALID and maps the entry to dom_io's tables ...
    dm_m, dm_r = op1(ev_m, S.K_DID_MAP), op1(ev_r, S.K_DID_MAP)
    assert dm_m[0][S.F_DID_MAP_NEW] == S.DOMID_INVALID and dm_m[0][S.F_DID_MAP_OLD] != S.DOMID_INVALID
    cw_m, cw_r = op1(ev_m, S.K_CTX_WRITE), op1(ev_r, S.K_CTX_WRITE)
    assert len(cw_m) == 1 and cw_m[0][S.F_CTX_WRITE_NEW_LO] & 1
    assert cw_m[0][S.F_CTX_WRITE_NEW_LO] & ~0xFFF == domain_tables_base(S.DOMID_IO) + 0x1000
    # ... the real code clears it; the rest of the op (dom0's DID freed, the owner move) is the same
    assert cw_r and (cw_r[-1][S.F_CTX_WRITE_NEW_LO], cw_r[-1][S.F_CTX_WRITE_NEW_HI]) == (0, 0)
    assert [ev[FIRST:] for ev in dm_m[1:]] == [ev[FIRST:] for ev in dm_r] and dm_r
    assert [ev[FIRST:] for ev in op1(ev_m, S.K_OWNER_MOVE)] == [ev[FIRST:] for ev in op1(ev_r, S.K_OWNER_MOVE)]
    # until the quarantine op the two agree
    c = compare(ev_m, ev_r)
    assert c.first_difference is not None and c.a[c.first_difference][1] == 1
    assert c.a[:c.first_difference] == c.b[:c.first_difference]


def test_refused_where_the_tree_has_no_per_device_quarantine(xen_tree, tmp_path):  # noqa: F811
    """Before the XSA-400 series dom_io had one quarantine tree built at boot
    (intel_iommu_quarantine_init took the domain): no stand-in models that,
    so a scenario with quarantine is refused with one line naming it (here:
    the 4.17.5 tree with the per-device hook's parameter changed back)."""
    t = scratch_tree(xen_tree, tmp_path / "t")
    c = t / "xen/drivers/passthrough/vtd/iommu.c"
    c.write_text(c.read_text().replace("intel_iommu_quarantine_init(struct pci_dev *pdev,",
                                       "intel_iommu_quarantine_init(struct domain *d,"))
    r = vtdtrace("record", str(DATA / "nic-q.toml"), "--engine", "xen-c", "--xen-tree", str(t), cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "the xen-c engine does not support quarantine on Xen 4.17.5" in lines[0]
    assert "no per-device quarantine page tables" in lines[0] and "Traceback" not in r.stderr
    assert not list(tmp_path.glob("*.vtdt"))


def test_remove_is_refused_where_the_tree_has_no_per_device_quarantine(xen_tree, tmp_path):  # noqa: F811
    """intel_iommu_remove_device is taken with the per-device quarantine
    code; before the series hot-unplug is refused with one line."""
    t = scratch_tree(xen_tree, tmp_path / "t")
    c = t / "xen/drivers/passthrough/vtd/iommu.c"
    c.write_text(c.read_text().replace("intel_iommu_quarantine_init(struct pci_dev *pdev,",
                                       "intel_iommu_quarantine_init(struct domain *d,"))
    toml = tmp_path / "rm.toml"
    toml.write_text((DATA / "nic.toml").read_text() + '\n[[op]]\ndo = "remove"\ndevice = "0000:03:00.0"\n')
    r = vtdtrace("record", str(toml), "--engine", "xen-c", "--xen-tree", str(t), cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "the xen-c engine does not support op 5 `remove`" in lines[0]


@pytest.mark.parametrize("edit,named", [
    (lambda s: s + '\n[[op]]\ndo = "destroy"\ndomain = "guest-b"\n', "op 5 `destroy`"),
    (lambda s: s.replace("quarantine = true", "quarantine = true\ncaching_mode = true"), "platform.caching_mode"),
])
def test_what_is_still_unsupported_is_refused_with_quarantine_on(edit, named, xen_tree, tmp_path):  # noqa: F811
    toml = tmp_path / "q.toml"
    toml.write_text(edit((DATA / "nic-q.toml").read_text()))
    r = vtdtrace("record", str(toml), "--engine", "xen-c", "--xen-tree", str(xen_tree), cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "the xen-c engine does not support" in lines[0] and named in lines[0]
    assert "quarantine" not in lines[0].split("support", 1)[1]
