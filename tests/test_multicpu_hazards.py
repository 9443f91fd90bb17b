"""The analysers on several CPUs (replay/hazards): what one CPU does is
judged against that CPU's locks and that CPU's op.

* Lock nesting is per CPU: the fold's ``locks`` table holds every CPU's
  locks, and a lock taken while *another* CPU holds one ordered inside it is
  no inversion; the same CPU doing it is.
* "The running operation" is the event's CPU's: an op that begins and ends on
  another CPU in the middle of a window neither outlives the window's op
  (stale-context/-iotlb, stale-devtlb, rmrr-disconnect's persistence) nor is
  a point where no op is in flight (owner-mismatch), and does not lend its
  device to another CPU's findings.  Pinned by a strong check: inserting an
  idle op of CPU 1 anywhere into a single-CPU trace changes no finding.
* Xen's warning line announces the next store of the CPU that printed it.
* Windows opened by one CPU may be closed by another (the flush that ends a
  stale window is the IOMMU's, whoever issues it): a real two-CPU recording
  gives the same stale windows as the listed order.
"""

from __future__ import annotations

import pytest
from multicpu_helpers import TWO_CPU, SwitchTo

from replay.hazards import findings_for_events
from tracer import schema as S
from tracer.engine import VARIANTS
from tracer.record import apply_cx16, make_header, record
from tracer.recorder import ListSink
from tracer.scenario import load_scenario


def _record(name: str, variant: str, cx16: bool = True, chooser=None):
    platform = apply_cx16(load_scenario(name), cx16)
    sink = ListSink()
    result = record(platform, variant, sink, chooser=chooser)
    return make_header(platform, variant, result.choices), sink.events


def _ev(kind: int, seq: int, cpu: int, op: int, **fields):
    k = S.KINDS[kind]
    return [kind, seq, cpu, op, 0, ""] + [fields.get(f) for f in k.fields]


# The DID analyser (replay/hazards/did.py) belongs to the XSA-399 work of
# this release and is audited there: its op-end confirmation is not yet per
# CPU, so its kinds are left out of the idle-op comparison below.
NOT_AUDITED_HERE: frozenset[str] = frozenset()


def _facts(fs):
    return sorted((f.kind, f.severity, f.device, f.rid, f.iommu, f.start, f.end, f.start_label, f.end_label,
                   f.detail) for f in fs if f.kind not in NOT_AUDITED_HERE)


# --- lock nesting per CPU -------------------------------------------------------------------------

def _lock_findings(holder_cpu: int):
    header, _ = _record(str(TWO_CPU), "direct")
    events = [
        _ev(S.K_LOCK, 1, holder_cpu, 1, lock="mapping_lock", target=1),
        _ev(S.K_LOCK, 2, 0, 2, lock="iommu->lock", target=0),     # iommu->lock -> mapping_lock is the order
        _ev(S.K_UNLOCK, 3, 0, 2, lock="iommu->lock", target=0),
        _ev(S.K_UNLOCK, 4, holder_cpu, 1, lock="mapping_lock", target=1),
    ]
    return [f for f in findings_for_events(header, events) if f.kind == "lock-order"]


def test_a_lock_another_cpu_holds_nests_nothing():
    assert _lock_findings(holder_cpu=1) == []


def test_the_same_cpu_taking_locks_against_the_order_is_an_inversion():
    (f,) = _lock_findings(holder_cpu=0)
    assert f.severity == "hazard" and "iommu->lock[0] taken while holding mapping_lock[guest]" in f.detail


def test_a_spin_lock_held_by_two_cpus_names_both():
    header, _ = _record(str(TWO_CPU), "direct")
    events = [_ev(S.K_LOCK, 1, 1, 1, lock="iommu->lock", target=0),
              _ev(S.K_LOCK, 2, 0, 2, lock="iommu->lock", target=0)]
    (f,) = [f for f in findings_for_events(header, events) if f.kind == "lock-order"]
    assert "taken by CPU 0 while CPU 1 holds it" in f.detail


# --- the running operation is the event's CPU's ---------------------------------------------------

def _with_idle_op(events, at: int):
    """``events`` with an op of CPU 1 that does nothing inserted after the
    first ``at`` events; seqs renumbered."""
    op = max(ev[S.I_OP] for ev in events) + 1
    begin = next(ev for ev in events if ev[S.I_KIND] == S.K_OP_BEGIN and ev[S.F_OP_BEGIN_BDF] is not None)
    idle = [list(begin), _ev(S.K_OP_END, 0, 1, op, rc=0)]
    idle[0][S.I_CPU], idle[0][S.I_OP] = 1, op
    out = [list(ev) for ev in events[:at]] + idle + [list(ev) for ev in events[at:]]
    for i, ev in enumerate(out):
        ev[S.I_SEQ] = i + 1
    return out


def _back(fs, at: int):
    """Findings of the trace with the idle op, in the original's seqs."""
    def m(s):
        return s if s is None or s <= at else s - 2
    for f in fs:
        f.start, f.end = m(f.start), m(f.end)
    return fs


CASES = [("s1-usb-rmrr", v, cx16) for v in sorted(VARIANTS) for cx16 in (True, False)] + [
    ("s11-ats-stale-devtlb", "direct", True), ("s4-legacy-pci-rmrr-bridge", "legacy", True),
    ("s8-two-legacy-behind-bridge", "direct", False)]


@pytest.mark.parametrize(("name", "variant", "cx16"), CASES)
def test_an_idle_op_on_another_cpu_changes_no_finding(name, variant, cx16):
    header, events = _record(name, variant, cx16)
    header["schedule"]["cpus"] = 2
    want = _facts(findings_for_events(header, events))
    assert want
    # inside ops (where windows are open), every few events
    positions = [i for i in range(1, len(events)) if events[i - 1][S.I_KIND] != S.K_OP_END][::3]
    for at in positions:
        got = _facts(_back(findings_for_events(header, _with_idle_op(events, at)), at))
        assert got == want, at


def test_windows_opened_by_one_cpu_are_closed_by_another():
    """A real interleaving: CPU 1's assign runs first, CPU 0's waits for
    pcidevs_lock.  Every window closes, the same kinds and severities as
    the listed order."""
    header, events = _record(str(TWO_CPU), "direct", cx16=False)
    header2, events2 = _record(str(TWO_CPU), "direct", cx16=False, chooser=SwitchTo([1, 0]))
    assert any(ev[S.I_KIND] == S.K_LOCK_WAIT for ev in events2)
    one = findings_for_events(header, events)
    two = findings_for_events(header2, events2)
    assert sorted((f.kind, f.severity, f.device) for f in one) == sorted((f.kind, f.severity, f.device) for f in two)
    assert all(f.end is not None for f in two if f.severity != "hazard")


def test_xens_warning_announces_its_own_cpus_store():
    """The non-cx16 path's "may cause data corruption" line announces the
    next store *of the CPU that printed it*: another CPU's store in between
    neither takes the warning nor clears it."""
    header, events = _record("s1-usb-rmrr", "direct", cx16=False)
    header["schedule"]["cpus"] = 2
    want = [f for f in findings_for_events(header, events) if f.kind == "did-pt-mismatch" and "corruption" in f.detail]
    assert want
    log = next(i for i, ev in enumerate(events) if ev[S.I_KIND] == S.K_LOG and "corruption" in ev[S.F_LOG_TEXT])
    assert events[log + 1][S.I_KIND] == S.K_CTX_WRITE       # the store it announces
    # CPU 1 stores another entry's present value again (changes nothing) right after the line
    other = next(ev for ev in events[:log] if ev[S.I_KIND] == S.K_CTX_WRITE
                 and ev[S.F_CTX_WRITE_DEVFN] != events[log + 1][S.F_CTX_WRITE_DEVFN]
                 and ev[S.F_CTX_WRITE_NEW_LO] & 1)
    store = list(other)
    store[S.I_CPU], store[S.I_OP] = 1, max(ev[S.I_OP] for ev in events) + 1
    store[S.F_CTX_WRITE_OLD_LO], store[S.F_CTX_WRITE_OLD_HI] = store[S.F_CTX_WRITE_NEW_LO], store[S.F_CTX_WRITE_NEW_HI]
    evs = [list(ev) for ev in events[:log + 1]] + [store] + [list(ev) for ev in events[log + 1:]]
    for i, ev in enumerate(evs):
        ev[S.I_SEQ] = i + 1
    got = [f for f in findings_for_events(header, evs) if f.kind == "did-pt-mismatch" and "corruption" in f.detail]
    assert len(got) == len(want)
