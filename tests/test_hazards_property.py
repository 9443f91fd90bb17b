"""Properties of the hazard analysers on random scenarios.

Random scenarios (tests/scenario_gen.py: RMRR devices and shared RMRRs,
legacy PCI behind PCIe-to-PCI / legacy bridges, phantom functions, the ME
WiFi quirk, one or two DRHD units, the knobs, operation sequences with
injected faults) run under every engine variant.  For every recording:

* no analyser crashes and the whole trace is analysable;
* every finding is a well-formed window inside the trace, with the step
  labels of its end events, a known kind and severity;
* the incremental windows agree, at every step, with a brute-force
  recomputation from the folded state of that step (did-pt-mismatch,
  stale-context, rmrr-disconnect, stale-devtlb);
* ``findings_for_trace`` on a trace file cut anywhere reports exactly the
  findings of its readable prefix.

``deadline=None``; under CI (HYPOTHESIS_PROFILE=ci) examples are
derandomized so a run is reproducible.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scenario_gen import choosers, platform_of, scenarios  # noqa: F401 (scenarios: also test_owner_mismatch's)

from replay import caches
from replay.hazards import KINDS, SEVERITIES, Analysis, findings_for_events, findings_for_trace
from replay.hazards.topology import Topology
from replay.state import apply, initial_state
from tracer import schema as S

CI = os.environ.get("HYPOTHESIS_PROFILE") == "ci"
SETTINGS = settings(deadline=None, derandomize=CI, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=max(10, SETTINGS.max_examples // 4))

_platform = platform_of


def _recordings(text, make_chooser=None):
    """[(name, header, events)] under legacy, direct cx16, direct no-cx16 and
    original; under a fresh chooser from ``make_chooser`` each (a random
    schedule, for scenarios of several CPUs)."""
    from tracer.record import apply_cx16, make_header, record
    from tracer.recorder import ListSink

    out = []
    for variant, cx16 in (("legacy", True), ("direct", True), ("direct", False), ("original", True)):
        platform = apply_cx16(_platform(text), cx16)
        sink = ListSink()
        res = record(platform, variant, sink, chooser=make_chooser() if make_chooser else None)
        out.append((f"{variant}{'' if cx16 else '-nocx16'}", make_header(platform, variant, res.choices),
                    sink.events))
    return out


def _label(ev):
    return ev[5] or None


def check_well_formed(findings, events) -> None:
    last = events[-1][1] if events else 0
    by_seq = {ev[1]: ev for ev in events}
    for f in findings:
        assert f.kind in KINDS and f.severity in SEVERITIES, f
        assert 1 <= f.start <= last, f
        assert f.end is None or f.start < f.end <= last, f
        assert f.open_at_end == (f.end is None) and (f.end is not None or f.end_label is None), f
        assert f.start_label == _label(by_seq[f.start]), f
        if f.end is not None:
            # lock-order windows are points: their end_label is their last store's
            ref = by_seq[f.end - 1] if f.kind == "lock-order" else by_seq[f.end]
            assert f.end_label == _label(ref), f
        assert isinstance(f.detail, str) and f.detail and "\n" not in f.detail, f
        assert f.iommu is None or isinstance(f.iommu, int), f
        d = f.to_json()
        assert list(d) == ["kind", "severity", "device", "rid", "iommu", "start", "end", "open_at_end",
                           "start_label", "end_label", "detail"]


def _open_sets(findings, kind, last, key):
    """{t: {key(f)}} of the findings of one kind holding at every step t."""
    out = {t: set() for t in range(0, last + 1)}
    for f in findings:
        if f.kind != kind:
            continue
        for t in range(f.start, (f.end if f.end is not None else last + 1)):
            out[t].add(key(f))
    return out


def _oracle(header, events):
    """Brute force, from the folded state after every event:
    {t: ({(iommu, rid) mismatched in memory}, {(iommu, rid) with a stale cached context},
         {(device, rid) disconnected from an RMRR},
         {(iommu, rid) of a present device whose ATC may hold another domain's translations})}."""
    topo = Topology(header)
    st_ = initial_state(header)
    rmrr_devs = topo.rmrr_devices()
    out = {}
    seen_owner = {}     # (key, did, pt) -> owner of pt when the model first held it
    for ev in events:
        apply(st_, ev)
        mism, stale, disc, atc = set(), set(), set(), set()
        held = {(key, fill) for key, fills in st_.devtlb.items() for fill in fills}
        for gone in [k for k in seen_owner if k not in held]:
            del seen_owner[gone]
        for key, fill in sorted(held):
            if (key, fill) not in seen_owner:
                page = st_.pages.get(fill[1])
                seen_owner[(key, fill)] = page[0] if page else None
            dev = (st_.unit_seg.get(key[0], 0), key[1] << 8 | key[2])
            if dev in st_.present and seen_owner[(key, fill)] != st_.owners.get(dev):
                atc.add((key[0], topo.rid(*key)))
        for (u, bus, devfn), (lo, hi) in st_.ctx.items():
            if not lo & 1 or (lo >> 2) & 3 == caches.TT_PASS_THRU:
                continue
            did = (hi >> 8) & 0xFFFF
            m = st_.did_map.get((u, did), 0)
            page = st_.pages.get(lo & caches.PAGE_MASK_4K)
            if (u, did) not in st_.did_bits or m == S.DOMID_INVALID or page is None or page[0] != m:
                mism.add((u, topo.rid(u, bus, devfn)))
        for u in {k[0] for k in st_.cc} | {k[0] for k in st_.pending} | {k[0] for k in st_.hw}:
            for (bus, devfn) in caches.stale_context(st_, u):
                stale.add((u, topo.rid(u, bus, devfn)))
        for dev in rmrr_devs:
            seg, bus, devfn = dev.loc
            if (seg, (bus << 8) | devfn) not in st_.present:
                continue
            for key in dev.rids:
                if key[0] not in st_.translation:
                    continue
                for lo, _hi in caches.context_may_hold(st_, key):
                    bad = not lo & 1
                    if lo & 1 and (lo >> 2) & 3 != caches.TT_PASS_THRU:
                        page = st_.pages.get(lo & caches.PAGE_MASK_4K)
                        cov = [(b, e) for (d, b, e), (acc, n) in st_.idmaps.items()
                               if page is not None and d == page[0] and acc == "rw" and n]
                        bad = page is None or not all(any(b <= r[0] and r[1] <= e for b, e in cov)
                                                      for r in dev.rmrrs)
                    if bad:
                        disc.add((dev.bdf, topo.rid(*key)))
        out[ev[1]] = (mism, stale, disc, atc)
    return out


@SETTINGS
@given(scenarios())
def test_analysers_never_crash_and_windows_are_well_formed(text):
    for name, header, events in _recordings(text):
        a = Analysis(header)
        a.feed(events)
        findings = a.finish()
        assert a.bad is None, (name, a.bad)
        assert a.seq == (events[-1][1] if events else 0)
        check_well_formed(findings, events)
        # feeding in pieces gives the same answer as feeding all at once
        b = Analysis(header)
        for i in range(0, len(events), 7):
            b.feed(events[i:i + 7])
        assert b.finish() == findings, name


def _check_against_oracle(text, make_chooser=None):
    for name, header, events in _recordings(text, make_chooser):
        findings = findings_for_events(header, events)
        oracle = _oracle(header, events)
        last = events[-1][1]
        mism = _open_sets(findings, "did-pt-mismatch", last, lambda f: (f.iommu, f.rid))
        stale = _open_sets(findings, "stale-context", last, lambda f: (f.iommu, f.rid))
        disc = _open_sets(findings, "rmrr-disconnect", last, lambda f: (f.device, f.rid))
        atc = _open_sets(findings, "stale-devtlb", last, lambda f: (f.iommu, f.rid))
        if not header["platform"]["knobs"]["ats"]:
            assert not any(f.kind == "stale-devtlb" for f in findings), name
        for t in range(1, last + 1):
            want_m, want_s, want_d, want_a = oracle[t]
            assert atc[t] == want_a, (name, t, atc[t], want_a)
            assert mism[t] == want_m, (name, t, mism[t], want_m)
            assert stale[t] == want_s, (name, t, stale[t], want_s)
            assert disc[t] == want_d, (name, t, disc[t], want_d)


@SETTINGS
@given(scenarios())
def test_incremental_windows_match_a_brute_force_recomputation(text):
    _check_against_oracle(text)


@FEW
@given(scenarios(max_cpus=3), choosers())
def test_on_several_cpus_under_random_schedules(text, make_chooser):
    """The same two properties with ops on one to three CPUs interleaved
    by a random schedule: the windows are the state's, whoever ran."""
    for name, header, events in _recordings(text, make_chooser):
        a = Analysis(header)
        a.feed(events)
        findings = a.finish()
        assert a.bad is None, (name, a.bad)
        check_well_formed(findings, events)
    _check_against_oracle(text, make_chooser)


SHIPPED_PLUS = [
    ("s4-legacy-pci-rmrr-bridge", '[[op]]\ndo = "destroy"\ndomain = "guest"\n'),
    ("s1-usb-rmrr", '[[fault]]\nat = "flush-iotlb"\ndomain = "guest"\nnth = 1\n'),
    ("s5-me-wifi-phantom", '[[op]]\ndo = "deassign"\ndevice = "0000:03:00.0"\n'),
    ("s7-phantom-quarantine", '[[op]]\ndo = "deassign"\ndevice = "0000:02:00.0"\n'),
    ("s2-guest-destroy-quarantine", '[[op]]\ndo = "deassign"\ndevice = "0000:00:14.0"\n'),
]


@pytest.mark.parametrize("name,extra", [(n, "") for n in (
    "s1-usb-rmrr", "s2-guest-destroy-quarantine", "s3-igd-own-drhd", "s4-legacy-pci-rmrr-bridge",
    "s5-me-wifi-phantom", "s6-enomem", "s7-phantom-quarantine", "s8-two-legacy-behind-bridge",
    "s9-xsa399-race", "s10-alias-rid-split", "s11-ats-stale-devtlb")] + SHIPPED_PLUS)
def test_shipped_scenarios_match_the_brute_force_recomputation(name, extra):
    from tracer.scenario import resolve
    _check_against_oracle(resolve(name)[0].read_text() + "\n" + extra)


@FEW
@given(scenarios(), st.integers(2, 9), st.data())
def test_a_cut_trace_reports_the_findings_of_its_readable_prefix(tmp_path_factory, text, chunk, data):
    from tracer.writer import TraceWriter

    name, header, events = data.draw(st.sampled_from(_recordings(text)), label="recording")
    path = tmp_path_factory.mktemp("cut") / "t.vtdt"
    with TraceWriter(path, header, chunk_events=chunk) as w:
        for ev in events:
            w.append(ev)
    blob = path.read_bytes()
    cut = data.draw(st.integers(0, len(blob)), label="cut")
    path.write_bytes(blob[:cut])
    from replay.reader import NotATrace
    try:
        result = findings_for_trace(path)
    except NotATrace:
        assume(False)
    prefix = events[:result.events]
    assert result.events == len(prefix) and result.complete == (cut == len(blob))
    assert result.findings == findings_for_events(header, prefix), (name, cut)
    check_well_formed(result.findings, prefix)
