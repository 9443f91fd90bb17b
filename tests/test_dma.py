"""DMA as an actor: the [[dma]] table, the engine's translation (tracer/engine/dma.py,
tracer/hostmem.py), its cache model, and replay == engine with DMAs issued at random
points under random cache choices.  The findings on S13 are in test_dma_findings.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay import caches
from replay.hazards.owner import build_sources
from replay.hazards.topology import Topology
from replay.state import apply, initial_state, to_canonical
from tracer import hostmem
from tracer import schema as S
from tracer.engine import Engine
from tracer.engine.dma import (
    FR_CONTEXT_INVALID,
    FR_CONTEXT_NOT_PRESENT,
    FR_READ,
    FR_ROOT_NOT_PRESENT,
    FR_TRANSLATED_BLOCKED,
    FR_WRITE,
    Fill,
)
from tracer.platform import DmaSource
from tracer.record import make_header, record
from tracer.recorder import ListSink, Recorder
from tracer.scenario import ScenarioError, list_shipped, load_scenario, loads_scenario
from tracer.sched import Point
from tracer.schema import DOMID_IO, DOMID_XEN

S13 = "s13-usb-nic-dma"

BASE = """
name = "t"
[[iommu]]
id = 0
include_all = true
[[device]]
bdf = "0000:00:14.0"
type = "pcie-endpoint"
[[device]]
bdf = "0000:00:1f.6"
type = "pcie-endpoint"
[[device]]
bdf = "0000:00:00.0"
type = "host-bridge"
[[rmrr]]
base = 0xd5d45000
end = 0xd5d46fff
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
"""


# --- the [[dma]] table -------------------------------------------------------------

def test_dma_table_is_parsed_with_defaults_and_short_bdfs():
    p = loads_scenario(BASE + """
[[dma]]
device = "00:14.0"
target = "rmrr"
access = "write"
[[dma]]
name = "nic"
device = "0000:00:1f.6"
target = 0x100000
access = "read"
at = {op = 1, step = "MO7"}
""", "t.toml")
    assert p.dma == [DmaSource("dma0", "0000:00:14.0", 0xD5D45000, True, True, None),
                     DmaSource("nic", "0000:00:1f.6", 0x100000, False, False, (1, "MO7"))]
    assert p.to_header()["dma"] == [
        {"name": "dma0", "device": "0000:00:14.0", "iova": 0xD5D45000, "access": "write", "at": None},
        {"name": "nic", "device": "0000:00:1f.6", "iova": 0x100000, "access": "read", "at": [1, "MO7"]}]
    # a scenario without sources keeps the header it had
    assert "dma" not in loads_scenario(BASE, "t.toml").to_header()


@pytest.mark.parametrize("body,message", [
    ('device = "00:14.0"\ntarget = "rmrr"\naccess = "write"\ncolour = 1',
     "t.toml: dma[1].colour: unknown key; expected one of name, device, target, access, at"),
    ('target = "rmrr"\naccess = "write"', "t.toml: dma[1].device: missing; expected the BDF"),
    ('device = "00:99.0"\ntarget = "rmrr"\naccess = "write"',
     "t.toml: dma[1].device: expected a BDF like 0000:00:14.0 or 00:14.0"),
    ('device = "00:15.0"\ntarget = "rmrr"\naccess = "write"', "t.toml: dma[1].device: unknown device '0000:00:15.0'"),
    ('device = "00:00.0"\ntarget = "rmrr"\naccess = "write"',
     "t.toml: dma[1].device: expected a device that issues DMA (pcie-endpoint or pci), "
     "got 0000:00:00.0, a host-bridge"),
    ('device = "00:1f.6"\ntarget = "rmrr"\naccess = "write"',
     't.toml: dma[1].target: "rmrr" needs a device with an RMRR; 0000:00:1f.6 is in no [[rmrr]]'),
    ('device = "00:1f.6"\ntarget = 0x100800\naccess = "write"',
     't.toml: dma[1].target: expected "rmrr" or a 4 KiB-aligned IOVA address below 2^47, got 1050624'),
    ('device = "00:1f.6"\ntarget = "ram"\naccess = "write"', "t.toml: dma[1].target: expected \"rmrr\" or a 4 KiB"),
    ('device = "00:1f.6"\ntarget = 0x1000', "t.toml: dma[1].access: missing; expected read or write"),
    ('device = "00:1f.6"\ntarget = 0x1000\naccess = "rw"', "t.toml: dma[1].access: expected read or write, got 'rw'"),
    ('device = "00:1f.6"\ntarget = 0x1000\naccess = "read"\nat = 3',
     't.toml: dma[1].at: expected a table {op = N, step = "MO7"}, got 3'),
    ('device = "00:1f.6"\ntarget = 0x1000\naccess = "read"\nat = {op = 2, step = "MO7"}',
     "t.toml: dma[1].at.op: expected an op number 1..1, got 2"),
    ('device = "00:1f.6"\ntarget = 0x1000\naccess = "read"\nat = {op = 1}',
     "t.toml: dma[1].at.step: missing; expected a step label"),
    ('device = "00:1f.6"\ntarget = 0x1000\naccess = "read"\nat = {op = 1, step = "M O"}',
     "t.toml: dma[1].at.step: expected a step label like \"MO7\", got 'M O'"),
    ('device = "00:1f.6"\ntarget = 0x1000\naccess = "read"\nat = {op = 1, step = "MO7", cpu = 1}',
     "t.toml: dma[1].at.cpu: unknown key; expected one of op, step"),
    ('name = "a b"\ndevice = "00:1f.6"\ntarget = 0x1000\naccess = "read"', "t.toml: dma[1].name: expected letters"),
])
def test_dma_table_refusals(body, message):
    with pytest.raises(ScenarioError) as exc:
        loads_scenario(BASE + "[[dma]]\n" + body + "\n", "t.toml")
    assert str(exc.value).startswith(message)


def test_dma_names_are_unique():
    two = '[[dma]]\nname = "x"\ndevice = "00:1f.6"\ntarget = 0x1000\naccess = "read"\n'
    with pytest.raises(ScenarioError, match=r"t.toml: dma\[2\].name: expected a name no other \[\[dma\]\] has"):
        loads_scenario(BASE + two + two, "t.toml")
    one = '[[dma]]\ndevice = "00:1f.6"\ntarget = 0x1000\naccess = "read"\n'
    with pytest.raises(ScenarioError, match=r"dma\[2\].name"):
        loads_scenario(BASE + one + '[[dma]]\nname = "dma0"\ndevice = "00:14.0"\ntarget = 0\naccess = "read"\n',
                       "t.toml")


# --- host memory ---------------------------------------------------------------------

def test_host_pages_carry_their_owner():
    assert hostmem.owner_of(hostmem.domain_page(1, 0x100000)) == 1
    assert hostmem.owner_of(hostmem.domain_page(DOMID_XEN, 0x1_0000_5000)) == DOMID_XEN
    assert hostmem.frame_of(hostmem.domain_page(0x7FF1, 0x1_0000_5000)) == 0x1_0000_5000
    assert hostmem.owner_of(0xD5D45000) is None
    idm = [(0xD5D45000, 0xD5D46FFF, "rw"), (0xE0000000, 0xE0000FFF, "r")]
    assert hostmem.domain_leaf(1, 0xD5D46000, idm) == hostmem.Leaf(0xD5D46000, True, True)
    assert hostmem.domain_leaf(1, 0xE0000000, idm) == hostmem.Leaf(0xE0000000, True, False)
    assert hostmem.domain_leaf(1, 0x2000, idm) == hostmem.Leaf(hostmem.domain_page(1, 0x2000), True, True)
    assert hostmem.describe(hostmem.domain_page(1, 0x2000), {1: "guest"}) == "guest page 0x2000"
    assert hostmem.describe(0xD5D45000) == "firmware page 0xd5d45000"


# --- translation ---------------------------------------------------------------------

class Pick:
    """A chooser: issue source `src` at the `k`-th DMA point, take `cache`
    (option index) at every cache choice; everything else default."""

    def __init__(self, plan: dict[int, int], cache: int = 0) -> None:
        self.plan, self.cache, self.n = dict(plan), cache, 0

    def choose(self, p: Point) -> int:
        if p.kind == "d":
            self.n += 1
            src = self.plan.get(self.n)
            return p.options.index(src) if src in p.options else 0
        if p.kind in "xta":
            return min(self.cache, len(p.options) - 1)
        return 0


def _run(text_or_name, variant="direct", cx16=True, chooser=None, schedule=()):
    p = load_scenario(text_or_name) if "\n" not in text_or_name else loads_scenario(text_or_name, "t.toml")
    p.knobs.cx16 = cx16
    sink = ListSink()
    res = record(p, variant, sink, chooser=chooser, schedule=schedule)
    assert res.limit is None
    return p, sink.events, res


def _dmas(events):
    names = S.KINDS[S.K_DMA].fields
    return [dict(zip(names, e[6:]), seq=e[1], cpu=e[2], label=e[5]) for e in events if e[0] == S.K_DMA]


def _at_label(text, op, step, extra=""):
    return text + f"""
[[dma]]
name = "probe"
device = "00:14.0"
target = {extra or '"rmrr"'}
access = "write"
at = {{op = {op}, step = "{step}"}}
"""


def test_the_default_schedule_issues_no_dma():
    _, events, res = _run(S13)
    assert _dmas(events) == [] and res.choices == []


def test_a_dma_is_one_event_on_no_cpu_with_label_DMA():
    _, events, res = _run(S13, chooser=Pick({5: 1}))
    (d,) = _dmas(events)
    assert d["cpu"] == -1 and d["label"] == "DMA" and d["source"] == "usb-guest"
    assert [c.kind for c in res.choices] == ["d"]


def test_rmrr_identity_and_owned_pages():
    # before op 1: dom0's tables; the RMRR page is the firmware page itself
    _, events, _ = _run(BASE + '[[dma]]\ndevice = "00:14.0"\ntarget = "rmrr"\naccess = "write"\n'
                        '[[dma]]\ndevice = "00:14.0"\ntarget = 0x5000\naccess = "read"\n', chooser=Pick({1: 0, 2: 1}))
    rmrr, ram = _dmas(events)
    assert (rmrr["host"], rmrr["owner"], rmrr["fault"], rmrr["via"]) == (0xD5D45000, None, 0, "memory")
    assert (ram["host"], ram["owner"], ram["fault"]) == (hostmem.domain_page(0, 0x5000), 0, 0)
    assert ram["did"] == 0 and ram["pt_root"] != 0


def test_context_entry_not_present_faults_in_legacys_unmap_window():
    _, events, _ = _run(_at_label(BASE, 1, "UO3"), variant="legacy", chooser=Pick({1: 0}))
    (d,) = _dmas(events)
    assert d["fault"] == FR_CONTEXT_NOT_PRESENT and d["host"] is None and d["owner"] is None
    assert d["ctx_lo"] & 1 == 0


def test_root_entry_not_present_faults():
    p = loads_scenario(BASE + '[[dma]]\ndevice = "00:14.0"\ntarget = "rmrr"\naccess = "write"\n', "t.toml")
    eng = Engine(p, Recorder(ListSink()), variant="direct")
    eng.boot()
    u = eng.iommus[0]
    u.root.pop(0)
    pdev = eng.pci_get_pdev(0, 0, 0xA0)
    assert pdev is not None
    out = eng.translate(p.dma[0], pdev, u, 0, 0xA0)
    assert out.fault == FR_ROOT_NOT_PRESENT and out.via == "none"


def test_quarantine_scratch_is_read_only_in_4_15_and_read_write_under_final():
    text = BASE.replace('do = "assign"\ndevice = "0000:00:14.0"\nto = "guest"',
                        'do = "quarantine"\ndevice = "0000:00:1f.6"')
    text = text.replace("[[iommu]]", "[platform]\nquarantine = true\n[[iommu]]", 1)
    src = '[[dma]]\ndevice = "00:1f.6"\ntarget = 0x3000\naccess = "{acc}"\n'
    for variant, write_ok in (("direct", False), ("final", True)):
        for acc in ("read", "write"):
            # at the last point: after the op that quarantined the device
            count = Pick({})
            _run(text + src.format(acc=acc), variant=variant, chooser=count)
            _, events, _ = _run(text + src.format(acc=acc), variant=variant, chooser=Pick({count.n: 0}))
            dmas = _dmas(events)
            assert dmas, (variant, acc)
            d = dmas[-1]
            if acc == "write" and not write_ok:
                assert d["fault"] == FR_WRITE, (variant, d)
                continue
            assert d["fault"] == 0, (variant, acc, d)
            owner = d["owner"]
            if variant == "direct":
                assert owner == DOMID_IO
            else:
                # the device's pseudo domain ID: 0x8000 | index
                assert owner is not None and owner & 0x8000


def test_an_at_label_no_event_has_issues_nothing():
    _, events, _ = _run(_at_label(BASE, 1, "ZZ9"), chooser=Pick({1: 0}))
    assert _dmas(events) == []


def test_pass_through_is_the_hardware_domains_memory():
    text = BASE.replace("[[iommu]]", "[platform]\nhwdom_passthrough = true\n[[iommu]]", 1)
    _, events, _ = _run(text + '[[dma]]\ndevice = "00:1f.6"\ntarget = 0x7000\naccess = "write"\n',
                        chooser=Pick({1: 0}))
    (d,) = _dmas(events)
    assert (d["ctx_lo"] >> 2) & 3 == 2
    assert (d["host"], d["owner"], d["pt_root"], d["fault"]) == (hostmem.domain_page(0, 0x7000), 0, 0, 0)


def test_a_reserved_translation_type_is_an_invalid_context_entry():
    p = loads_scenario(BASE + '[[dma]]\ndevice = "00:14.0"\ntarget = 0x5000\naccess = "read"\n', "t.toml")
    eng = Engine(p, Recorder(ListSink()), variant="direct")
    eng.boot()
    u = eng.iommus[0]
    lo, hi = u.ctx[(0, 0xA0)]
    u.ctx[(0, 0xA0)] = (lo | 0xC, hi)                      # TT = 3
    pdev = eng.pci_get_pdev(0, 0, 0xA0)
    assert pdev is not None
    out = eng.translate(p.dma[0], pdev, u, 0, 0xA0)
    assert out.fault == FR_CONTEXT_INVALID and out.host is None


def test_freed_tables_lead_to_xens_heap():
    p = loads_scenario(BASE + '[[dma]]\ndevice = "00:14.0"\ntarget = 0x5000\naccess = "write"\n', "t.toml")
    eng = Engine(p, Recorder(ListSink()), variant="direct")
    eng.boot()
    u = eng.iommus[0]
    root = eng.hardware_domain.pgd_maddr
    eng.hardware_domain.pt_pages = []          # as DK3 leaves a destroyed domain's
    leaf = eng.walk(root, 0x5000)
    assert hostmem.owner_of(leaf.host) == DOMID_XEN
    pdev = eng.pci_get_pdev(0, 0, 0xA0)
    assert pdev is not None
    out = eng.translate(p.dma[0], pdev, u, 0, 0xA0)
    assert out.owner == DOMID_XEN and out.fault == 0


def test_read_only_identity_map_faults_writes_and_reads_pass():
    p = loads_scenario(BASE + '[[dma]]\ndevice = "00:14.0"\ntarget = "rmrr"\naccess = "write"\n'
                       '[[dma]]\ndevice = "00:14.0"\ntarget = "rmrr"\naccess = "read"\n', "t.toml")
    eng = Engine(p, Recorder(ListSink()), variant="direct")
    eng.boot()
    dom0 = eng.hardware_domain
    for k in dom0.identity_maps:
        dom0.identity_maps[k][0] = "r"
    u = eng.iommus[0]
    pdev = eng.pci_get_pdev(0, 0, 0xA0)
    assert pdev is not None
    assert eng.translate(p.dma[0], pdev, u, 0, 0xA0).fault == FR_WRITE
    eng.iotlb.clear()
    read = eng.translate(p.dma[1], pdev, u, 0, 0xA0)
    assert read.fault == 0 and read.host == 0xD5D45000
    # a page whose leaf is neither readable nor writable
    assert eng._outcome("memory", (1, 0), 0, 0, hostmem.Leaf(0, False, False), False).fault == FR_READ


def test_cache_fills_and_flushes():
    """A DMA loads the context cache and the IOTLB; the engine's own flushes
    empty them with the granularity their events record."""
    p = loads_scenario(BASE + '[[dma]]\ndevice = "00:14.0"\ntarget = 0x5000\naccess = "write"\n', "t.toml")
    eng = Engine(p, Recorder(ListSink()), variant="direct")
    eng.boot()
    u = eng.iommus[0]
    pdev = eng.pci_get_pdev(0, 0, 0xA0)
    assert pdev is not None
    eng.translate(p.dma[0], pdev, u, 0, 0xA0)
    assert eng.cc == {(0, 0, 0xA0): u.entry(0, 0xA0)}
    assert list(eng.iotlb) == [(0, 0, 0x5000)]
    key = eng.dma_state_key()
    assert hash(key) == hash(eng.dma_state_key())
    eng.dma_context_flushed(0, "device", 0, 0xA8, 0)      # another device: kept
    assert eng.cc
    eng.dma_context_flushed(0, "device", 0, 0xA1, 3)      # function mask 3 ignores the function
    assert not eng.cc
    eng.translate(p.dma[0], pdev, u, 0, 0xA0)
    eng.dma_context_flushed(0, "domain", 1, 0, 0)         # another DID: kept
    assert eng.cc
    eng.dma_context_flushed(0, "domain", 0, 0, 0)
    assert not eng.cc
    eng.dma_iotlb_flushed(0, "dsi", 1, 0, 0)
    assert eng.iotlb
    eng.dma_iotlb_flushed(0, "psi", 0, 0x6000, 0)
    assert eng.iotlb
    eng.dma_iotlb_flushed(0, "psi", 0, 0x4000, 1)
    assert not eng.iotlb
    eng.translate(p.dma[0], pdev, u, 0, 0xA0)
    eng.dma_context_flushed(0, "global", 0, 0, 0)
    eng.dma_iotlb_flushed(0, "global", 0, 0, 0)
    assert not eng.cc and not eng.iotlb and eng.dma_state_key() == ((), (), (), ())
    eng.issue_dma(0)
    assert eng.dma_state_key()[0] == (0,) and eng.dma_ready() == []


def test_the_iotlb_choice_is_offered_only_while_the_entry_is_cached():
    """S13 direct --no-cx16: the USB's DMA between W1' and W2' fills dom0's
    DID with the guest's page; the NIC may then use it (t1) until MO10's DSI
    flush of dom0's DID, after which no t choice is asked."""
    _, events, _ = _run(S13, cx16=False)
    w1 = next(e[1] for e in events if e[0] == S.K_CTX_WRITE and e[5] == "MO7" and e[3] == 1)
    mo10 = next(e[1] for e in events if e[0] == S.K_FLUSH_IOTLB and e[5] == "MO10" and e[3] == 1)
    sched = f"{w1}:d1 {w1 + 1}:d2 {w1 + 1}:t1"
    from tracer.sched import parse_schedule
    _, events, res = _run(S13, cx16=False, schedule=parse_schedule(sched))
    usb, nic = _dmas(events)
    assert usb["owner"] == 1 and usb["did"] == 0 and nic["via"] == "iotlb" and nic["owner"] == 1
    # after the flush: the point exists but no IOTLB choice is asked
    late = f"{mo10 + 2}:d1 {mo10 + 3}:d2 {mo10 + 3}:t1"
    with pytest.raises(Exception, match="does not fit|never asked"):
        _run(S13, cx16=False, schedule=parse_schedule(late))


def test_device_tlb_translated_request_and_blocked():
    """An ATS device caches its translation (TT = device-IOTLB) in its ATC; a
    translated request with an entry that is not TT = device-IOTLB is blocked."""
    text = BASE.replace("[[iommu]]", "[platform]\nats = true\n[[iommu]]", 1).replace(
        'bdf = "0000:00:1f.6"\ntype = "pcie-endpoint"', 'bdf = "0000:00:1f.6"\ntype = "pcie-endpoint"\nats = true')
    p = loads_scenario(text + '[[dma]]\ndevice = "00:1f.6"\ntarget = 0x5000\naccess = "write"\n', "t.toml")
    eng = Engine(p, Recorder(ListSink()), variant="direct")
    eng.boot()
    u = eng.iommus[0]
    pdev = eng.pci_get_pdev(0, 0, 0xFE)
    assert pdev is not None and pdev.ats_enabled
    first = eng.translate(p.dma[0], pdev, u, 0, 0xFE)
    assert first.fault == 0 and eng.atc == {(0, 0, 0xFE, 0x5000): Fill(hostmem.Leaf(first.host, True, True),
                                                                       first.pt_root)}

    class Take:
        def cache_choice(self, kind, n):
            return 1
    eng.sched = Take()   # type: ignore[assignment]
    lo, hi = u.ctx[(0, 0xFE)]
    u.ctx[(0, 0xFE)] = (lo & ~0xC, hi)                    # TT = multi-level now
    eng.cc.clear()
    out = eng.translate(p.dma[0], pdev, u, 0, 0xFE)
    assert out.via == "device-tlb" and out.fault == FR_TRANSLATED_BLOCKED
    eng.dma_dev_iotlb_flushed(0, pdev)
    assert not eng.atc


# --- the requester ID on the wire: the engine's and the replay's answer -----------------

def test_wire_requester_id_equals_the_replays_for_every_shipped_device():
    checked = 0
    for name, _ in list_shipped():
        p = load_scenario(name)
        eng = Engine(p, Recorder(ListSink()), variant="direct")
        for (seg, bus, devfn), (_dev, pd) in eng._declared.items():
            eng.pdevs[(seg, bus, devfn)] = pd
        topo = Topology(make_header(p, "direct"))
        for src in build_sources(topo):
            seg, bus, devfn = src.dev.loc
            if src.pkey[1] != (bus << 8) | devfn or src.how.startswith(("its phantom", "the ME")):
                continue
            pdev = eng.pci_get_pdev(seg, bus, devfn)
            assert pdev is not None
            assert (src.wire[1], src.wire[2]) == eng.wire_rid(pdev), (name, src.dev.bdf)
            checked += 1
    assert checked > 20


# --- replay == engine after every event, with DMAs ----------------------------------------

class RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def choose(self, p: Point) -> int:
        if p.kind == "d":
            return self.rnd.randrange(len(p.options)) if self.rnd.random() < 0.15 else 0
        return self.rnd.randrange(len(p.options))


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(("legacy", "direct", "original", "final")),
       cx16=st.booleans())
def test_replay_equals_the_engine_after_every_event_on_s13(seed, variant, cx16):
    p = load_scenario(S13)
    p.knobs.cx16 = cx16
    st_ = initial_state({"platform": p.to_header()})
    diffs = []

    def observe(engine, ev):
        apply(st_, ev)
        if not diffs:
            got, want = to_canonical(st_), engine.canonical()
            if got != want:
                diffs.append((ev[1], got, want))

    sink = ListSink()
    res = record(p, variant, sink, on_event=observe, chooser=RandomChooser(seed))
    assert res.limit is None
    assert diffs == []


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), variant=st.sampled_from(("legacy", "direct", "original", "final")),
       cx16=st.booleans())
def test_what_a_dma_took_from_a_cache_the_replay_says_it_may_hold(seed, variant, cx16):
    """The engine's cache model is a subset of the replay's "may hold": a
    context-cache value or an IOTLB entry a DMA used is one the replay,
    from the events alone, says the cache may hold at that point."""
    p = load_scenario(S13)
    p.knobs.cx16 = cx16
    st_ = initial_state({"platform": p.to_header()})
    used: list[str] = []
    problems: list[object] = []

    def observe(engine, ev):
        if ev[0] == S.K_DMA:
            d = dict(zip(S.KINDS[S.K_DMA].fields, ev[6:]))
            key = (d["iommu"], d["rid"] >> 8, d["rid"] & 0xFF)
            if d["via"] == "context-cache":
                used.append("x")
                if (d["ctx_lo"], d["ctx_hi"]) not in caches.context_may_hold(st_, key):
                    problems.append(ev)
            elif d["via"] == "iotlb":
                used.append("t")
                if not any(did == d["did"] and pt == d["pt_root"]
                           for did, _b, _df, pt in caches.iotlb_may_hold(st_, d["iommu"])):
                    problems.append(ev)
        apply(st_, ev)

    record(p, variant, ListSink(), on_event=observe, chooser=RandomChooser(seed))
    assert problems == []


def test_the_cache_subset_check_sees_both_caches_used():
    from tracer.sched import parse_schedule
    _, events, _ = _run(S13, cx16=False)
    w1 = next(e[1] for e in events if e[0] == S.K_CTX_WRITE and e[5] == "MO7" and e[3] == 1)
    from tracer.sched import SHARED_KINDS
    before = max(e[1] for e in events if e[0] in SHARED_KINDS and e[1] < w1)
    # the USB's DMA before W1' loads its context cache; after W1' it may use it (x1)
    _, events, _ = _run(S13, cx16=False, schedule=parse_schedule(f"{before}:d1 {w1 + 1}:d0 {w1 + 1}:x1"))
    usb, rmrr = _dmas(events)
    assert rmrr["via"] == "context-cache" and (rmrr["ctx_lo"], rmrr["ctx_hi"]) == (usb["ctx_lo"], usb["ctx_hi"])
