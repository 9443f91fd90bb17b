"""The one Hypothesis generator of random scenarios (TOML text), shared by the
replay properties (replayed state == engine state) and the hazard properties
(incremental windows == brute force, owner-mismatch == show).

A platform: knobs (cx16, caching mode, coherency, quarantine, ATS, RWBF,
hardware-domain pass-through), a host bridge (optionally the ILK/CPT one of
the ME WiFi quirk, with the ME and a WLAN device that matches it), one to four
PCIe endpoints (phantom functions, ATS), optionally legacy PCI devices behind
a PCIe-to-PCI or legacy bridge and a device absent at boot, one or two DRHD
units.  RMRRs: up to two, each naming one endpoint or -- Xen refcounts the
identity maps of an RMRR per domain -- two of them (a shared RMRR, which only
an assignment with XEN_DOMCTL_DEV_RDM_RELAXED may hand to a domU).  Then one
to six operations drawn against the scenario as it evolves (assign, deassign,
quarantine, destroy, hot add and remove) and up to two injected faults.
``scenarios(max_cpus=N)`` puts each op on a random CPU 0..N-1 (all ops on
CPU 0 when N is 1, the default): the CPUs interleave at the engine's
scheduling points, under whatever schedule the test draws.

Mostly valid by construction; the scenario loader has the last word
(``platform_of`` assumes invalid ones away).
"""

from __future__ import annotations

from hypothesis import assume
from hypothesis import strategies as st

ENDPOINT_IDS = ("8086:a12f", "8086:1502", "8086:0087", "10ec:8168", "8086:0126")
OWNERS = ("dom0", "dom0", "dom0", "dom_io", "guest1")
FAULT_POINTS = ("pgd-alloc", "did-alloc", "flush-context", "flush-iotlb", "quirk", "cmpxchg", "rmrr-map")
ME_WLAN_ID = "8086:0087"        # a WLAN id of me_wifi_quirk's ILK/CPT branch


def _b(v: bool) -> str:
    return "true" if v else "false"


@st.composite
def scenarios(draw, max_cpus: int = 1) -> str:
    knobs = {k: draw(st.booleans()) for k in ("cx16", "caching_mode", "coherent", "quarantine", "ats",
                                              "rwbf", "hwdom_passthrough")}
    knobs["caching_mode"] = knobs["caching_mode"] and draw(st.booleans())
    knobs["coherent"] = knobs["coherent"] or draw(st.booleans())       # mostly coherent
    knobs["hwdom_passthrough"] = knobs["hwdom_passthrough"] and draw(st.booleans())
    lines = ['name = "prop"', 'description = "hypothesis"', "", "[platform]"]
    lines += [f"{k} = {_b(v)}" for k, v in knobs.items()]

    devices = []          # (bdf, type, extra lines)
    me = draw(st.booleans())
    if me or draw(st.booleans()):
        devices.append(("0000:00:00.0", "host-bridge", ['id = "8086:0104"' if me else 'id = "8086:0c00"']))
    if me:
        devices.append(("0000:00:16.0", "pcie-endpoint", ['id = "8086:1c3a"']))
        devices.append(("0000:03:00.0", "pcie-endpoint", [f'id = "{ME_WLAN_ID}"',
                                                          f'owner = "{draw(st.sampled_from(OWNERS))}"']))
    slots = draw(st.lists(st.sampled_from([0x02, 0x14, 0x17, 0x1a, 0x1f]), min_size=1, max_size=4, unique=True))
    for slot in slots:
        stride = draw(st.sampled_from((0, 0, 0, 1, 2, 4)))
        devices.append((f"0000:00:{slot:02x}.0", "pcie-endpoint",
                        [f'id = "{draw(st.sampled_from(ENDPOINT_IDS))}"', f"phantom_stride = {stride}",
                         f"ats = {_b(draw(st.booleans()))}", f'owner = "{draw(st.sampled_from(OWNERS))}"']))
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

    lines += ["", "[[iommu]]", "id = 0", "include_all = true", f"nd = {draw(st.sampled_from((1, 2)))}",
              f"levels = {draw(st.sampled_from((3, 4)))}"]
    if draw(st.booleans()) and len(bdfs) > 1:
        mine = draw(st.sampled_from([b for b in bdfs if not b.startswith("0000:05") and b != "0000:00:00.0"]))
        lines += ["", "[[iommu]]", "id = 1", f'devices = ["{mine}"]', "nd = 1", "levels = 4"]
    for bdf, dtype, extra in devices:
        lines += ["", "[[device]]", f'bdf = "{bdf}"', f'type = "{dtype}"', *extra]

    endpoints = [b for b, t, _ in devices if t in ("pcie-endpoint", "pci")]
    shared = set()
    for i in range(draw(st.integers(0, 2))):
        scope = draw(st.lists(st.sampled_from(endpoints), min_size=1, max_size=2, unique=True))
        if len(scope) > 1:
            shared.update(scope)
        base = 0xD5D40000 + i * 0x10000
        lines += ["", "[[rmrr]]", f"base = {base:#x}", f"end = {base + 0xFFF:#x}",
                  "devices = [" + ", ".join(f'"{d}"' for d in scope) + "]"]

    lines += ["", "[[domain]]", 'name = "dom0"', "id = 0", "hardware = true",
              "", "[[domain]]", 'name = "guest1"', "id = 1", "", "[[domain]]", 'name = "guest2"', "id = 2"]

    # Ops drawn against the scenario as it evolves, so the loader accepts them.
    present = [b for b in endpoints if b != late]
    absent = [late] if late else []
    live = ["guest1", "guest2"]
    ncpus = draw(st.integers(1, max_cpus))
    first_op = len(lines)
    for _ in range(draw(st.integers(1, 6))):
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
            dev = draw(st.sampled_from(present))
            lines += ["", "[[op]]", 'do = "assign"', f'device = "{dev}"', f'to = "{draw(st.sampled_from(live))}"']
            if dev in shared and draw(st.integers(0, 3)):
                lines.append("relaxed = true")      # mostly: a shared RMRR is otherwise refused (-EPERM)
        elif verb in ("deassign", "quarantine") and present:
            lines += ["", "[[op]]", f'do = "{verb}"', f'device = "{draw(st.sampled_from(present))}"']
    if ncpus > 1:
        # Ops were drawn in listed order, as CPU 0 alone would run them; on
        # several CPUs they race, so some may fail (-ENODEV ...): as in Xen.
        for i in [i for i in range(first_op, len(lines)) if lines[i] == "[[op]]"]:
            lines[i] = f"[[op]]\ncpu = {draw(st.integers(0, ncpus - 1))}"

    for _ in range(draw(st.integers(0, 2))):
        lines += ["", "[[fault]]", f'at = "{draw(st.sampled_from(FAULT_POINTS))}"',
                  f"nth = {draw(st.integers(1, 3))}"]
        if draw(st.booleans()):
            lines.append(f'domain = "{draw(st.sampled_from(("dom0", "guest1", "guest2")))}"')
    return "\n".join(lines) + "\n"


def platform_of(text: str):
    """The scenario's platform; an invalid one is assumed away."""
    from tracer.scenario import ScenarioError, loads_scenario
    try:
        return loads_scenario(text, "prop.toml")
    except ScenarioError:
        assume(False)


class SeededChooser:
    """A random schedule: at each scheduling point of tracer/sched.py, the
    default with probability ``stay``, else any option, from a seeded
    generator (Hypothesis draws the seed, so a failure shrinks and replays).
    Points where the scheduler has a free choice are answered the same way."""

    def __init__(self, seed: int, stay: float = 0.6) -> None:
        import random
        self.rng = random.Random(seed)
        self.stay = stay

    def choose(self, point) -> int:
        if self.rng.random() < self.stay:
            return 0
        return self.rng.randrange(len(point.options))


def choosers():
    """A strategy: a fresh SeededChooser factory (one chooser per recording)."""
    return st.tuples(st.integers(0, 2**32 - 1), st.sampled_from((0.3, 0.6, 0.9))).map(
        lambda a: (lambda: SeededChooser(a[0], a[1])))
