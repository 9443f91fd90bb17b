"""The scenario loader: every refusal class gives one exact line naming the
file, the key and what was expected; the shipped scenarios load; name lookup."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracer.platform import ERRNO
from tracer.scenario import ScenarioError, drhd_for, list_shipped, load_scenario, loads_scenario, shipped_dir

REPO = Path(__file__).resolve().parent.parent

BASE = """\
name = "t"
description = "test platform"

[platform]
cx16 = true

[[iommu]]
id = 0
include_all = true

[[device]]
bdf = "0000:00:14.0"
type = "pcie-endpoint"
id = "8086:a12f"

[[device]]
bdf = "0000:00:1e.0"
type = "pcie2pci-bridge"
secondary = 5

[[device]]
bdf = "0000:05:01.0"
type = "pci"

[[rmrr]]
base = 0xd5d45000
end = 0xd5d45fff
devices = ["0000:00:14.0"]

[[domain]]
name = "dom0"
id = 0
hardware = true

[[domain]]
name = "guest"
id = 1

[[op]]
do = "assign"
device = "0000:00:14.0"
to = "guest"

[[op]]
do = "deassign"
device = "0000:00:14.0"

[[fault]]
at = "pgd-alloc"
domain = "guest"
"""


@pytest.fixture
def scen(tmp_path, monkeypatch):
    """Write scenario text to ./s.toml and return the refusal message."""
    monkeypatch.chdir(tmp_path)

    def refuse(text: str) -> str:
        Path("s.toml").write_text(text)
        with pytest.raises(ScenarioError) as info:
            load_scenario("s.toml")
        msg = str(info.value)
        assert "\n" not in msg
        return msg

    return refuse


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_base_loads(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(BASE)
    p = load_scenario(str(path))
    assert p.name == "t" and p.description == "test platform"
    assert p.source_name == "s.toml" and p.source_text == BASE
    assert p.knobs.cx16 is True and p.knobs.cx16_source == "scenario"
    assert [d.bdf for d in p.devices] == ["0000:00:14.0", "0000:00:1e.0", "0000:05:01.0"]
    assert p.devices[1].secondary == 5 and p.devices[1].subordinate == 5
    assert p.devices[0].owner == "dom0" and p.devices[0].present
    assert (p.devices[0].vendor, p.devices[0].device) == (0x8086, 0xA12F)
    assert [(o.index, o.do, o.device, o.to) for o in p.ops] == [
        (1, "assign", "0000:00:14.0", "guest"), (2, "deassign", "0000:00:14.0", None)]
    assert p.faults[0].errno == "ENOMEM" and p.faults[0].nth == 1
    assert p.rmrrs[0].segment == 0 and p.iommus[0].ndoms == 256


def test_defaults_and_normalisation():
    text = edit("[platform]\ncx16 = true\n", "")
    text = edit('id = "8086:a12f"', 'id = "8086:a12f"\nphantom_stride = 2', text)
    text = edit('device = "0000:00:14.0"\nto', 'device = "0000:00:14.0"\nrelaxed = true\nto', text)
    p = loads_scenario(text, "x.toml")
    assert p.knobs.cx16 is True and p.knobs.cx16_source == "default"
    assert p.knobs.quarantine is False
    assert p.ops[0].relaxed is True and p.ops[1].relaxed is False
    assert p.devices[0].phantom_stride == 2
    assert (p.devices[2].vendor, p.devices[2].device) == (0x8086, 0)
    assert (p.iommus[0].nd, p.iommus[0].levels, p.iommus[0].segment) == (2, 4, 0)
    assert p.source_name == "x.toml"
    # Upper-case hex BDFs are accepted and stored (and looked up) in canonical form.
    p = loads_scenario(BASE.replace("0000:00:1e.0", "0000:00:1E.0"), "x.toml")
    assert p.devices[1].bdf == "0000:00:1e.0"
    # name defaults to the file stem.
    assert loads_scenario(edit('name = "t"\n', ""), "dir/my-plat.toml").name == "my-plat"


# --- one test per refusal class: (id, text, exact message) ----------------------

CASES = [
    ("toml-syntax", edit("id = 1\n", "id = = 1\n"),
     "s.toml: line 37, column 6: expected valid TOML: Invalid value"),
    ("unknown-top-key", "colour = 1\n" + BASE,
     "s.toml: colour: unknown key; expected one of name, description, platform, iommu, device, rmrr, domain, op, "
     "fault"),
    ("unknown-platform-key", edit("cx16 = true", "cx16 = true\nquarantin = true"),
     "s.toml: platform.quarantin: unknown key (did you mean 'quarantine'?); expected one of "
     "cx16, caching_mode, coherent, quarantine, ats, rwbf, hwdom_passthrough"),
    ("unknown-iommu-key", edit("include_all = true", "include_all = true\nrmrr = 1"),
     "s.toml: iommu[1].rmrr: unknown key; expected one of id, segment, include_all, devices, nd, levels"),
    ("unknown-device-key", edit('type = "pci"', 'type = "pci"\nvendor = "8086"'),
     "s.toml: device[3].vendor: unknown key; expected one of "
     "bdf, type, id, phantom_stride, ats, owner, present, secondary, subordinate"),
    ("unknown-rmrr-key", edit("end = 0xd5d45fff", "end = 0xd5d45fff\nsize = 4096"),
     "s.toml: rmrr[1].size: unknown key; expected one of base, end, devices"),
    ("unknown-domain-key", edit("id = 1\n", "id = 1\nhvm = true\n"),
     "s.toml: domain[2].hvm: unknown key; expected one of name, id, hardware"),
    ("unknown-op-key", edit('do = "deassign"', 'do = "deassign"\nforce = true'),
     "s.toml: op[2].force: unknown key; expected one of do, device, to, domain, relaxed, cpu"),
    ("unknown-fault-key", edit('at = "pgd-alloc"', 'at = "pgd-alloc"\nonce = true'),
     "s.toml: fault[1].once: unknown key; expected one of at, domain, device, nth, errno"),
    ("not-array-of-tables", edit("[[iommu]]", "[iommu]"),
     "s.toml: iommu: expected an array of tables ([[iommu]]), got a table ([iommu])"),
    ("bad-bool", edit("cx16 = true", 'cx16 = "yes"'),
     "s.toml: platform.cx16: expected true or false, got 'yes'"),
    ("int-for-bool", edit("include_all = true", "include_all = 1"),
     "s.toml: iommu[1].include_all: expected true or false, got 1"),
    ("malformed-bdf", edit('bdf = "0000:05:01.0"', 'bdf = "05:01.0"'),
     "s.toml: device[3].bdf: expected a BDF like 0000:00:14.0, got '05:01.0'"),
    ("bdf-not-string", edit('bdf = "0000:05:01.0"', "bdf = 5"),
     "s.toml: device[3].bdf: expected a BDF like 0000:00:14.0, got 5"),
    ("duplicate-bdf", edit('bdf = "0000:05:01.0"', 'bdf = "0000:00:14.0"'),
     "s.toml: device[3].bdf: duplicate device '0000:00:14.0' (also device[1])"),
    ("bad-device-type", edit('type = "pci"', 'type = "pcie"'),
     "s.toml: device[3].type: expected one of pcie-endpoint, pci, pcie2pci-bridge, legacy-pci-bridge, "
     "host-bridge, got 'pcie' (did you mean 'pci'?)"),
    ("missing-type", edit('type = "pci"\n', ""),
     "s.toml: device[3].type: missing; expected one of pcie-endpoint, pci, pcie2pci-bridge, "
     "legacy-pci-bridge, host-bridge"),
    ("bad-id", edit('id = "8086:a12f"', 'id = "0x8086a12f"'),
     "s.toml: device[1].id: expected vendor:device in hex like 8086:a12f, got '0x8086a12f'"),
    ("bad-nd", edit("include_all = true", "include_all = true\nnd = 7"),
     "s.toml: iommu[1].nd: expected the CAP.ND field 0..6 (7 is reserved), got 7"),
    ("bad-levels", edit("include_all = true", "include_all = true\nlevels = 5"),
     "s.toml: iommu[1].levels: expected 2, 3 or 4 page-table levels, got 5"),
    ("bad-phantom-stride", edit('id = "8086:a12f"', 'id = "8086:a12f"\nphantom_stride = 3'),
     "s.toml: device[1].phantom_stride: expected a phantom stride of 0, 1, 2 or 4, got 3"),
    ("phantom-on-pci", edit('type = "pci"', 'type = "pci"\nphantom_stride = 4'),
     "s.toml: device[3].phantom_stride: expected 0 for a pci (only a pcie-endpoint has phantom functions)"),
    ("phantom-collides", edit('bdf = "0000:00:14.0"', 'bdf = "0000:00:14.0"\nphantom_stride = 2')
     + '[[device]]\nbdf = "0000:00:14.2"\ntype = "pcie-endpoint"\n',
     "s.toml: device[1].phantom_stride: phantom function 0000:00:14.2 is also device[4]; expected a free function"),
    ("secondary-on-endpoint", edit('id = "8086:a12f"', 'id = "8086:a12f"\nsecondary = 3'),
     "s.toml: device[1].secondary: expected only on a bridge (pcie2pci-bridge, legacy-pci-bridge), "
     "not on a pcie-endpoint"),
    ("bridge-without-secondary", edit("secondary = 5\n", ""),
     "s.toml: device[2].secondary: missing; expected the bridge's secondary bus number"),
    ("bridge-ranges-overlap", BASE + '[[device]]\nbdf = "0000:00:1c.0"\ntype = "legacy-pci-bridge"\n'
     'secondary = 4\nsubordinate = 6\n',
     "s.toml: device[4].secondary: buses 0x04..0x06 overlap device[2]'s 0x05..0x05; "
     "expected disjoint or nested bridge ranges"),
    ("unknown-owner", edit('type = "pci"', 'type = "pci"\nowner = "gues"'),
     "s.toml: device[3].owner: unknown domain 'gues' (known: dom0, guest, dom_io)"),
    ("device-on-no-iommu", BASE + '[[device]]\nbdf = "0001:00:02.0"\ntype = "pcie-endpoint"\n',
     "s.toml: device[4].bdf: 0001:00:02.0 is on no IOMMU; expected an [[iommu]] in segment 0001 with "
     "include_all = true, or one listing it (or its bridge) in devices"),
    ("two-include-all", edit("include_all = true\n", "include_all = true\n\n[[iommu]]\nid = 1\ninclude_all = true\n"),
     "s.toml: iommu[2].include_all: expected at most one include_all unit per segment; "
     "iommu[1] already covers segment 0000"),
    ("duplicate-iommu-id",
     edit("include_all = true\n", 'include_all = true\n\n[[iommu]]\nid = 0\ndevices = ["0000:00:14.0"]\n'),
     "s.toml: iommu[2].id: duplicate IOMMU id 0 (also iommu[1])"),
    ("drhd-scope-unknown-device",
     edit("include_all = true\n", 'include_all = true\n\n[[iommu]]\nid = 1\ndevices = ["0000:00:02.0"]\n'),
     "s.toml: iommu[2].devices[1]: unknown device '0000:00:02.0' (known: 0000:00:14.0, 0000:00:1e.0, 0000:05:01.0)"),
    ("drhd-empty-scope", edit("include_all = true\n", "include_all = false\n"),
     "s.toml: iommu[1]: expected include_all = true or a non-empty devices list"),
    ("rmrr-overlap", BASE + "[[rmrr]]\nbase = 0xd5d40000\nend = 0xd5d45fff\ndevices = [\"0000:05:01.0\"]\n",
     "s.toml: rmrr[2]: [0xd5d40000, 0xd5d45fff] overlaps rmrr[1] [0xd5d45000, 0xd5d45fff]; expected disjoint RMRRs"),
    ("rmrr-unaligned-base", edit("base = 0xd5d45000", "base = 0xd5d45100"),
     "s.toml: rmrr[1].base: expected a 4 KiB aligned address, got 0xd5d45100"),
    ("rmrr-unaligned-end", edit("end = 0xd5d45fff", "end = 0xd5d45ffe"),
     "s.toml: rmrr[1].end: expected the last byte of a 4 KiB page (end + 1 aligned), got 0xd5d45ffe"),
    ("rmrr-end-before-base", edit("end = 0xd5d45fff", "end = 0xd5d43fff"),
     "s.toml: rmrr[1].end: expected end >= base 0xd5d45000, got 0xd5d43fff"),
    ("rmrr-unknown-device", edit('devices = ["0000:00:14.0"]', 'devices = ["0000:00:14.1"]'),
     "s.toml: rmrr[1].devices[1]: unknown device '0000:00:14.1' "
     "(known: 0000:00:14.0, 0000:00:1e.0, 0000:05:01.0)"),
    ("rmrr-no-devices", edit('devices = ["0000:00:14.0"]', "devices = []"),
     "s.toml: rmrr[1].devices: expected at least one device"),
    ("no-hardware-domain", edit("hardware = true\n", ""),
     "s.toml: domain: expected a hardware domain ([[domain]] with hardware = true and id = 0)"),
    ("two-hardware-domains", edit("id = 1\n", "id = 1\nhardware = true\n"),
     "s.toml: domain[2].id: expected 0 for the hardware domain, got 1"),
    ("duplicate-domain-name", edit('name = "guest"', 'name = "dom0"'),
     "s.toml: domain[2].name: duplicate domain name 'dom0' (also domain[1])"),
    ("duplicate-domid", edit("id = 1\n", "id = 0\n"),
     "s.toml: domain[2].id: duplicate domid 0 (also domain[1] 'dom0')"),
    ("reserved-domain-name", edit('name = "guest"', 'name = "dom_io"'),
     "s.toml: domain[2].name: 'dom_io' is one of Xen's special domains; expected another name"),
    ("reserved-domid", edit("id = 1\n", "id = 0x7ff1\n"),
     "s.toml: domain[2].id: expected a domid in 0..0x7fef (0x7ff0 and up are reserved), got 32753"),
    ("unknown-op-verb", edit('do = "deassign"', 'do = "detach"'),
     "s.toml: op[2].do: expected one of assign, deassign, quarantine, destroy, add, remove, got 'detach'"),
    ("op-missing-key", edit('to = "guest"\n', ""),
     "s.toml: op[1].to: missing; expected the target domain's name"),
    ("op-key-not-for-verb", edit('do = "deassign"', 'do = "deassign"\nto = "dom0"'),
     "s.toml: op[2].to: not used by do = 'deassign'; expected only do, device, cpu"),
    ("op-unknown-domain", edit('to = "guest"', 'to = "gues"'),
     "s.toml: op[1].to: unknown domain 'gues' (known: dom0, guest)"),
    ("op-unknown-device", edit('do = "deassign"\ndevice = "0000:00:14.0"', 'do = "deassign"\ndevice = "0000:00:15.0"'),
     "s.toml: op[2].device: unknown device '0000:00:15.0' (known: 0000:00:14.0, 0000:00:1e.0, 0000:05:01.0)"),
    ("op-assign-to-dom-io", edit('to = "guest"', 'to = "dom_io"'),
     "s.toml: op[1].to: expected a domain; use do = \"quarantine\" to assign to dom_io"),
    ("destroy-hwdom", BASE + '[[op]]\ndo = "destroy"\ndomain = "dom0"\n',
     "s.toml: op[3].domain: expected a guest; the hardware domain 'dom0' cannot be destroyed"),
    ("use-after-destroy", BASE + '[[op]]\ndo = "destroy"\ndomain = "guest"\n'
     '[[op]]\ndo = "assign"\ndevice = "0000:05:01.0"\nto = "guest"\n',
     "s.toml: op[4].to: expected a live domain; 'guest' is destroyed by op[3]"),
    ("add-present-device", BASE + '[[op]]\ndo = "add"\ndevice = "0000:05:01.0"\n',
     "s.toml: op[3].device: expected a device that is not present at this point "
     "(declared with present = false, or removed earlier), got 0000:05:01.0"),
    ("op-on-absent-device", edit('type = "pci"', 'type = "pci"\npresent = false')
     + '[[op]]\ndo = "assign"\ndevice = "0000:05:01.0"\nto = "guest"\n',
     "s.toml: op[3].device: expected a device present at this point; 0000:05:01.0 is declared "
     "present = false or removed earlier (add it first)"),
    ("absent-device-owner", edit('type = "pci"', 'type = "pci"\npresent = false\nowner = "guest"'),
     "s.toml: device[3].owner: expected the hardware domain 'dom0' for a device that is added later "
     "(present = false), got 'guest'"),
    ("fault-bad-point", edit('at = "pgd-alloc"', 'at = "pgd"'),
     "s.toml: fault[1].at: expected one of pgd-alloc, did-alloc, flush-context, flush-iotlb, quirk, "
     "cmpxchg, rmrr-map, got 'pgd'"),
    ("fault-bad-nth", edit('at = "pgd-alloc"', 'at = "pgd-alloc"\nnth = 0'),
     "s.toml: fault[1].nth: expected an occurrence number >= 1, got 0"),
    ("fault-bad-errno", edit('at = "pgd-alloc"', 'at = "pgd-alloc"\nerrno = "ENOMEN"'),
     "s.toml: fault[1].errno: expected one of " + ", ".join(sorted(ERRNO)) + ", got 'ENOMEN' (did you mean 'ENOMEM'?)"),
    ("fault-unknown-domain", edit('domain = "guest"', 'domain = "domU"'),
     "s.toml: fault[1].domain: unknown domain 'domU' (known: dom0, guest, dom_io)"),
    ("fault-domain-and-device", edit('domain = "guest"', 'domain = "guest"\ndevice = "0000:00:14.0"'),
     "s.toml: fault[1].device: expected domain or device, not both"),
    ("bad-name", edit('name = "t"', 'name = "../t"'),
     "s.toml: name: expected letters, digits, '.', '_' or '-' (it names the output file), got '../t'"),
    ("multiline-description", edit('description = "test platform"', 'description = """a\nb"""'),
     "s.toml: description: expected one line"),
]


@pytest.mark.parametrize("text,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refusal(scen, text, expected):
    assert scen(text) == expected


def test_refusal_names_the_path_as_given(tmp_path):
    path = tmp_path / "sub" / "bad.toml"
    path.parent.mkdir()
    path.write_text(edit('bdf = "0000:05:01.0"', 'bdf = "00:14"'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: device[3].bdf: expected a BDF like 0000:00:14.0, got '00:14'"
    assert (info.value.file, info.value.key) == (str(path), "device[3].bdf")


def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScenarioError) as info:
        load_scenario("nosuch.toml")
    msg = str(info.value)
    assert msg.startswith("nosuch.toml: no such file, and no shipped scenario of that name (shipped: s1-usb-rmrr,")
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(tmp_path / "a" / "s1-usb-rmrr"))    # a path is never looked up as a name
    assert str(info.value) == f"{tmp_path / 'a' / 's1-usb-rmrr'}: no such file"


def test_not_utf8(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("s.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario("s.toml")
    assert str(info.value) == "s.toml: expected UTF-8 text, got byte 0xff at offset 8"


# --- DRHD resolution --------------------------------------------------------------

def test_drhd_explicit_scope_bridge_and_include_all():
    text = edit("[[iommu]]\nid = 0\ninclude_all = true\n",
                "[[iommu]]\nid = 0\ninclude_all = true\n\n[[iommu]]\nid = 7\n"
                'devices = ["0000:00:14.0", "0000:00:1e.0"]\n')
    p = loads_scenario(text, "x.toml")
    assert drhd_for(p, 0, 0x00, 0xA0).id == 7          # 00:14.0 explicit
    assert drhd_for(p, 0, 0x05, 0x08).id == 7          # 05:01.0 behind the scoped bridge
    assert drhd_for(p, 0, 0x05, 0x00).id == 7          # the (secbus, 0) alias too
    assert drhd_for(p, 0, 0x00, 0xB0).id == 0          # 00:16.0: include_all
    assert drhd_for(p, 1, 0x00, 0x00) is None          # no unit in segment 1


def test_device_behind_scoped_bridge_needs_no_include_all():
    text = edit("[[iommu]]\nid = 0\ninclude_all = true\n",
                '[[iommu]]\nid = 0\ndevices = ["0000:00:14.0", "0000:00:1e.0"]\n')
    p = loads_scenario(text, "x.toml")
    assert drhd_for(p, 0, 5, 0x08).id == 0


# --- shipped scenarios ------------------------------------------------------------

SHIPPED = [
    "s1-usb-rmrr", "s2-guest-destroy-quarantine", "s3-igd-own-drhd", "s4-legacy-pci-rmrr-bridge",
    "s5-me-wifi-phantom", "s6-enomem", "s7-phantom-quarantine", "s8-two-legacy-behind-bridge",
    "s9-xsa399-race", "s10-alias-rid-split", "s11-ats-stale-devtlb", "s12-phantom-source-alone",
]


def test_shipped_dir_is_the_repo_traces():
    assert shipped_dir() == REPO / "traces"


def test_list_shipped():
    shipped = list_shipped()
    assert [n for n, _ in shipped] == SHIPPED
    assert all(d and "\n" not in d for _, d in shipped)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_loads_by_name(name):
    p = load_scenario(name)
    assert p.name == name
    assert p.source_name == f"{name}.toml"
    assert p.source_text == (REPO / "traces" / f"{name}.toml").read_text()
    assert load_scenario(f"{name}.toml").source_text == p.source_text
    hw = [d for d in p.domains if d.hardware]
    assert [(d.name, d.id) for d in hw] == [("dom0", 0)]
    assert ("guest", 1) in [(d.name, d.id) for d in p.domains]
    assert p.ops and p.knobs.cx16_source == "scenario"


def test_local_file_wins_over_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("s1-usb-rmrr.toml").write_text(BASE)
    assert load_scenario("s1-usb-rmrr.toml").name == "t"
    assert load_scenario("s1-usb-rmrr").name == "s1-usb-rmrr"


def test_shipped_scenario_contents():
    s1 = load_scenario("s1-usb-rmrr")
    usb = s1.device_by_bdf("0000:00:14.0")
    assert (usb.type, usb.vendor, usb.device) == ("pcie-endpoint", 0x8086, 0xA12F)
    assert [(r.base, r.end, r.devices) for r in s1.rmrrs] == [(0xD5D45000, 0xD5D45FFF, ["0000:00:14.0"])]
    assert not s1.knobs.quarantine and len(s1.iommus) == 1 and s1.iommus[0].include_all
    assert sum(1 for d in s1.devices if d.owner == "dom0" and d.bdf != usb.bdf and d.type != "host-bridge") >= 2
    assert "0000:00:02.0" not in [d.bdf for d in s1.devices]
    assert [(o.do, o.to) for o in s1.ops] == [("assign", "guest"), ("deassign", None)]

    s3 = load_scenario("s3-igd-own-drhd")
    igd = s3.device_by_bdf("0000:00:02.0")
    assert (igd.vendor, igd.device) == (0x8086, 0x3E92)
    assert drhd_for(s3, 0, 0, igd.devfn).devices == ["0000:00:02.0"]

    s5 = load_scenario("s5-me-wifi-phantom")
    host = s5.device_by_bdf("0000:00:00.0")
    assert host.id32 in (0x01008086, 0x01048086, 0x00408086, 0x00448086, 0x00628086, 0x006A8086)
    me, wlan = s5.device_by_bdf("0000:00:16.0"), s5.device_by_bdf("0000:03:00.0")
    assert wlan.id32 == 0x00878086
    assert drhd_for(s5, 0, 0, me.devfn).devices == ["0000:00:16.0"]
    assert drhd_for(s5, 0, 3, 0).include_all

    s6 = load_scenario("s6-enomem")
    assert [(f.at, f.domain, f.nth, f.errno) for f in s6.faults] == [("pgd-alloc", "guest", 1, "ENOMEM")]

    s7 = load_scenario("s7-phantom-quarantine")
    ph = s7.device_by_bdf("0000:02:00.0")
    assert (ph.phantom_stride, ph.owner, s7.knobs.quarantine) == (4, "dom_io", True)
    unit = drhd_for(s7, 0, 2, 0)
    assert not unit.include_all and [d.owner for d in s7.devices if d.bdf in unit.devices] == ["dom0", "dom_io"]

    s8 = load_scenario("s8-two-legacy-behind-bridge")
    assert [d.bdf for d in s8.devices if d.type == "pci"] == ["0000:05:01.0", "0000:05:02.0"]
    assert s8.device_by_bdf("0000:00:1e.0").secondary == 5


# --- CLI ------------------------------------------------------------------------

def test_cli_scenarios():
    out = subprocess.run([sys.executable, "-m", "vtdtrace", "scenarios"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    lines, _, engines = out.stdout.partition("\n\n")
    lines = lines.splitlines()
    assert [ln.split()[0] for ln in lines] == SHIPPED
    engines = engines.splitlines()
    assert engines[0].startswith("engines (vtdtrace record SCENARIO --engine NAME)")
    assert [ln.split()[0] for ln in engines[1:]] == ["original", "legacy", "direct", "final"]
    assert "aafd4f1df0" in engines[1] and "b3ee746000" in engines[4]
    width = max(len(n) for n in SHIPPED)
    for line, (name, desc) in zip(lines, list_shipped()):
        assert line == f"{name:<{width}}  {desc}"
    assert out.stderr == ""


def test_cli_scenarios_json():
    out = subprocess.run([sys.executable, "-m", "vtdtrace", "scenarios", "--json"], cwd=REPO,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [{"name": n, "description": d} for n, d in list_shipped()]


def test_nested_bridges_are_accepted_and_resolve_upwards():
    text = edit("secondary = 5\n", "secondary = 5\nsubordinate = 6\n") + (
        '[[device]]\nbdf = "0000:05:03.0"\ntype = "legacy-pci-bridge"\nsecondary = 6\n'
        '[[device]]\nbdf = "0000:06:00.0"\ntype = "pci"\n'
        '[[iommu]]\nid = 3\ndevices = ["0000:00:1e.0"]\n')
    p = loads_scenario(text, "x.toml")
    assert drhd_for(p, 0, 6, 0).id == 3                # behind 05:03.0, itself behind 00:1e.0


def test_bridge_secondary_must_be_downstream(scen):
    assert scen(edit("secondary = 5", "secondary = 0")) == (
        "s.toml: device[2].secondary: expected a bus number above the bridge's own bus 0x00, got 0x00")
