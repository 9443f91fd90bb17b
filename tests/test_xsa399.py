"""XSA-399 (CVE-2022-26357) and domain teardown as Xen runs it.

* The race of scenario S9, through the CLI as a user runs it: the
  run-to-completion recording names the teardown's did-bitmap store on the
  ME's unit; ``record --schedule "SEQ:c1" --no-xsa399-fix`` preempts CPU 0
  right after it, guest-b is handed guest's DID and the slot is then zeroed:
  ``check --json`` exits 1 with did-incoherent (d4) and, under the unmap-first
  engines, the skipped flush's stale-context / stale-iotlb hazards; under
  direct / final the owner-mismatch.  The same schedule with the fix (the
  default): exit 0.
* The d4 rule's guards (as tests/test_hazards_rules.py pins rules): the
  finding opens at an op-end, names the entry's device, and disappears when
  the recorded slot store is mutated to name the tables' owner; transient
  incoherence inside an operation and a DID shared with the slot's own
  domain (did-reuse) are not d4.
* Replay == engine after every event on S9 for random choosers, every
  variant, both settings of the fix.
* The grace period: the teardown never runs while another CPU is inside an
  operation that began before the unlink; MO3 of such an operation fails to
  resolve the unlinked domain although its DID's slot still names it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.hazards import findings_for_events
from replay.state import apply, initial_state, to_canonical
from tracer import schema as S
from tracer.engine import VARIANTS
from tracer.record import make_header, record
from tracer.recorder import ListSink
from tracer.scenario import load_scenario, loads_scenario, resolve
from tracer.sched import parse_schedule

S9 = "s9-xsa399-race"
NIC = "0000:00:19.0"
GUEST, GUEST_B = 1, 2


def vt(*args, cwd):
    env = dict(os.environ)
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def _teardown_bitmap_seq(tmp_path: Path, engine: str) -> int:
    """The seq of the teardown's first did-bitmap store on unit 0 in the
    run-to-completion recording without the fix, read as a user would."""
    out = tmp_path / f"rtc-{engine}.vtdt"
    r = vt("record", S9, "--engine", engine, "--no-xsa399-fix", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    log = vt("log", str(out), "--kind", "did-bitmap", "--jsonl", cwd=tmp_path)
    assert log.returncode == 0, log.stderr
    rows = [json.loads(line) for line in log.stdout.splitlines()]
    dk4 = [r for r in rows if r["label"] == "DK4" and r["iommu"] == 0]
    assert [(r["did"], r["value"], r["func"]) for r in dk4] == [(1, 0, "cleanup_domid_map")]
    return int(dk4[0]["seq"])


def _check(tmp_path: Path, engine: str, schedule: str, fix: bool) -> tuple[int, list[dict], str]:
    out = tmp_path / f"race-{engine}-{fix}.vtdt"
    r = vt("record", S9, "--engine", engine, "--xsa399-fix" if fix else "--no-xsa399-fix",
           "--schedule", schedule, "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    c = vt("check", str(out), "--json", "--no-cache", cwd=tmp_path)
    assert c.returncode in (0, 1), c.stderr
    doc = json.loads(c.stdout)
    assert doc["engine"]["xsa399_fix"] is fix
    return c.returncode, doc["findings"], r.stdout


def _hazards(findings: list[dict]) -> list[tuple[str, str | None]]:
    return sorted((f["kind"], f["rid"]) for f in findings if f["severity"] == "hazard")


@pytest.mark.parametrize("engine", ["legacy", "original"])
def test_unmap_first_engines_skip_guest_bs_flush_after_the_race(tmp_path, engine):
    seq = _teardown_bitmap_seq(tmp_path, engine)
    rc, findings, summary = _check(tmp_path, engine, f"{seq}:c1", fix=False)
    assert rc == 1
    # UO4: domain_iommu_domid(guest-b) finds nothing -> -EINVAL, entry cleared, no flush
    assert "op5=-22" in summary
    assert _hazards(findings) == [("did-incoherent", NIC), ("owner-mismatch", NIC),
                                  ("stale-context", NIC), ("stale-iotlb", NIC)]
    d4 = next(f for f in findings if f["kind"] == "did-incoherent")
    assert "DID 1" in d4["detail"] and "names dom0" in d4["detail"] and "guest-b's page tables" in d4["detail"]
    stale = [f for f in findings if f["kind"].startswith("stale-") and f["severity"] == "hazard"]
    assert all(f["start_label"] == "UO3" and f["open_at_end"] for f in stale), stale
    # the same schedule with the fix: guest-b gets DID 2, nothing worse than the baseline
    rc, findings, summary = _check(tmp_path, engine, f"{seq}:c1", fix=True)
    assert rc == 0 and _hazards(findings) == [] and "op5=0" in summary


@pytest.mark.parametrize("engine", ["direct", "final"])
def test_direct_engines_resolve_guest_bs_entry_to_dom0_after_the_race(tmp_path, engine):
    seq = _teardown_bitmap_seq(tmp_path, engine)
    rc, findings, summary = _check(tmp_path, engine, f"{seq}:c1", fix=False)
    assert rc == 1
    # MO3 reads DID 1, whose slot says dom0 -- the deassign's target: the same-owner
    # no-op's -EFAULT (D1), and guest-b keeps the NIC with a DID that reads as dom0's
    assert "op5=-14" in summary
    assert _hazards(findings) == [("did-incoherent", NIC), ("owner-mismatch", NIC)]
    rc, findings, summary = _check(tmp_path, engine, f"{seq}:c1", fix=True)
    assert rc == 0 and _hazards(findings) == [] and "op5=0" in summary


def test_run_to_completion_has_no_hazard_with_or_without_the_fix(tmp_path):
    for engine in VARIANTS:
        for fix in ("--xsa399-fix", "--no-xsa399-fix"):
            out = tmp_path / f"{engine}{fix}.vtdt"
            assert vt("record", S9, "--engine", engine, fix, "-o", str(out), cwd=tmp_path).returncode == 0
            c = vt("check", str(out), "--severity", "hazard", "--no-cache", cwd=tmp_path)
            assert c.returncode == 0, (engine, fix, c.stdout)
            if fix == "--no-xsa399-fix":
                assert "no XSA-399 fix" in c.stdout.splitlines()[0]


def test_the_default_output_name_says_the_fix_is_off(tmp_path):
    r = vt("record", S9, "--engine", "direct", "--no-xsa399-fix", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / f"{S9}.direct-pre-xsa399.vtdt").exists()
    assert "no XSA-399 fix" in r.stdout


# --- the d4 rule ------------------------------------------------------------------------------


def _recorded(engine: str, fix: bool, schedule: str = "", text: str | None = None):
    platform = loads_scenario(text, "x.toml") if text is not None else load_scenario(S9)
    platform.knobs.xsa399_fix = fix
    sink = ListSink()
    res = record(platform, engine, sink, schedule=parse_schedule(schedule))
    return make_header(platform, engine), sink.events, res


def _seq(events, pred) -> int:
    return next(ev[S.I_SEQ] for ev in events if pred(ev))


def _race(engine: str, fix: bool):
    _, rtc, _ = _recorded(engine, False)
    seq = _seq(rtc, lambda ev: ev[S.I_KIND] == S.K_DID_BITMAP and ev[S.I_LABEL] == "DK4")
    return _recorded(engine, fix, f"{seq}:c1")


def test_d4_opens_at_an_op_end_and_goes_with_the_slot_store():
    header, events, _ = _race("direct", False)
    d4 = [f for f in findings_for_events(header, events) if f.kind == "did-incoherent"]
    assert len(d4) == 1 and d4[0].severity == "hazard" and d4[0].rid == NIC and d4[0].device == NIC
    assert events[d4[0].start - 1][S.I_KIND] == S.K_OP_END
    # the state it names: bit 1 set, slot 1 zero (dom0), the NIC's entry with DID 1
    st_ = initial_state({"platform": header["platform"]})
    for ev in events[:d4[0].start]:
        apply(st_, ev)
    assert (0, 1) in st_.did_bits and st_.did_map.get((0, 1), 0) == 0
    assert (st_.ctx[(0, 0x00, 0xC8)][1] >> 8) & 0xFFFF == 1
    # mutation guard: the teardown's slot store naming guest-b instead of 0 leaves it coherent
    zero = next(ev for ev in events if ev[S.I_KIND] == S.K_DID_MAP and ev[S.I_LABEL] == "DK4")
    mutated = [list(ev) for ev in events]
    mutated[zero[S.I_SEQ] - 1][S.F_DID_MAP_NEW] = GUEST_B
    assert not [f for f in findings_for_events(header, mutated) if f.kind == "did-incoherent"]


def test_d4_is_not_the_transient_inside_an_operation_nor_a_shared_did():
    # with the fix, the race schedule passes through slot INVALID / bit set; judged only at op ends
    header, events, _ = _race("legacy", True)
    assert not [f for f in findings_for_events(header, events) if f.kind == "did-incoherent"]
    # S7 legacy: the guest is handed dom_io's freed DID while 02:00.4 keeps the scratch tables --
    # the slot names a domain whose tables an entry carrying it does use: did-reuse, not d4
    platform = load_scenario("s7-phantom-quarantine")
    sink = ListSink()
    record(platform, "legacy", sink)
    kinds = {f.kind for f in findings_for_events(make_header(platform, "legacy"), sink.events)}
    assert "did-reuse" in kinds and "did-incoherent" not in kinds


# --- replay == engine under random schedules --------------------------------------------------


class RandomChooser:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def choose(self, point) -> int:
        return self.rnd.randrange(len(point.options))


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow],
          derandomize=os.environ.get("HYPOTHESIS_PROFILE") == "ci")
@given(st.integers(0, 2**32 - 1))
def test_replay_equals_the_engine_after_every_event_under_random_schedules(seed):
    for engine in sorted(VARIANTS):
        for fix in (True, False):
            platform = load_scenario(S9)
            platform.knobs.xsa399_fix = fix
            st_ = initial_state({"platform": platform.to_header()})
            diffs: list = []

            def observe(eng, ev, st_=st_, diffs=diffs):
                apply(st_, ev)
                if not diffs:
                    got, want = to_canonical(st_), eng.canonical()
                    if got != want:
                        diffs.append((ev, {k: (got[k], want[k]) for k in got if got[k] != want[k]}))

            res = record(platform, engine, ListSink(), on_event=observe, chooser=RandomChooser(seed))
            assert res.limit is None, (engine, fix, res.limit)
            assert not diffs, (engine, fix, diffs[0])


# --- the grace period and MO3 -----------------------------------------------------------------

# S4 under direct leaves 05:01.0's entry with the guest's DID while dom0 owns the device (the P5
# rollback, DERIVED).  Destroying the guest on CPU 0 while CPU 1 assigns 05:01.0 to guest2:
# MO3 of that assign reads the guest's DID.
S4_RACE = resolve("s4-legacy-pci-rmrr-bridge")[0].read_text() + """
[[domain]]
name = "guest2"
id = 2

[[op]]
do = "destroy"
domain = "guest"
cpu = 0

[[op]]
do = "assign"
device = "0000:05:01.0"
to = "guest2"
cpu = 1
"""


def _s4_inside_schedule():
    """CPU 0 preempted after DK3 (pcidevs_lock already dropped); CPU 1 begins its assign and is
    preempted right after taking pcidevs_lock; CPU 0 unlinks the guest and must wait."""
    _, events, _ = _recorded("direct", True, text=S4_RACE)
    dk3 = _seq(events, lambda ev: ev[S.I_KIND] == S.K_UNLOCK and ev[S.I_LABEL] == "DK3")
    _, events, _ = _recorded("direct", True, f"{dk3}:c1", text=S4_RACE)
    first = _seq(events, lambda ev: ev[S.I_CPU] == 1 and ev[S.I_KIND] == S.K_LOCK)
    return f"{dk3}:c1 {first}:c0"


def test_teardown_waits_for_the_op_that_began_before_the_unlink():
    header, events, res = _recorded("direct", True, _s4_inside_schedule(), text=S4_RACE)
    assert res.limit is None and [str(c) for c in res.choices] == _s4_inside_schedule().split()
    op_end_cpu1 = _seq(events, lambda ev: ev[S.I_CPU] == 1 and ev[S.I_KIND] == S.K_OP_END)
    cdd = S.FUNC_CODE["complete_domain_destroy"]
    teardown = _seq(events, lambda ev: ev[S.I_KIND] == S.K_CALL and ev[S.I_FUNC] == cdd)
    assert teardown > op_end_cpu1
    # the one-CPU path has no such call event (its payloads are what they were)
    _, rtc, _ = _recorded("direct", True, text=resolve("s2-guest-destroy-quarantine")[0].read_text())
    assert not [ev for ev in rtc if ev[S.I_KIND] == S.K_CALL and ev[S.I_FUNC] == cdd]


def test_mo3_fails_to_resolve_the_unlinked_domain_whose_slot_still_names_it():
    header, events, res = _recorded("direct", True, _s4_inside_schedule(), text=S4_RACE)
    st_ = initial_state({"platform": header["platform"]})
    mo3 = None
    for ev in events:
        if ev[S.I_CPU] == 1 and ev[S.I_KIND] == S.K_LOG and ev[S.I_LABEL] == "MO3":
            mo3 = ev
            break
        apply(st_, ev)
    assert mo3 is not None and "no domain for did" in mo3[S.F_LOG_TEXT]
    did = int(mo3[S.F_LOG_TEXT].split("did ")[1].split()[0])
    # not torn down yet: the slot still names the guest, whose domain-destroy comes later
    assert st_.did_map.get((0, did)) == GUEST and (0, did) in st_.did_bits
    assert mo3[S.I_SEQ] < _seq(events, lambda ev: ev[S.I_KIND] == S.K_DOMAIN_DESTROY)
    assert res.rcs[-1] == -3    # -ESRCH from the assign


def test_two_cpus_destroying_at_once_do_not_wait_for_each_other():
    text = resolve("s2-guest-destroy-quarantine")[0].read_text() + """
[[domain]]
name = "guest2"
id = 2

[[op]]
do = "assign"
device = "0000:00:17.0"
to = "guest2"

[[op]]
do = "destroy"
domain = "guest2"
cpu = 1
"""
    for seed in range(20):
        platform = loads_scenario(text, "x.toml")
        res = record(platform, "direct", ListSink(), chooser=RandomChooser(seed))
        # op 3 may come after guest2's destroy (-EINVAL); the destroys themselves end
        assert res.limit is None and res.rcs[1] == 0 and res.rcs[3] == 0, (seed, res)
