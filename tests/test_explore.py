"""The search of `vtdtrace explore` in process (explore/): breadth-first
order and shortest counterexamples, the preemption bound, pruning against a
brute-force enumeration, the state key, --max-runs and determinism."""

from __future__ import annotations

import re
import sys

import pytest
from explore_scenarios import ASSIGN_DEASSIGN, TWO_ASSIGNS, problem, xsa399_short

from explore.key import UnkeyableLocal, frame_part, stable
from explore.search import RunReport, explore, run_unit
from tracer import schema as S
from tracer.record import record
from tracer.recorder import ListSink
from tracer.sched import Choice


def _all_runs(prob, bound, prune):
    runs: list[RunReport] = []
    summary = explore(prob, bound=bound, prune=prune, on_run=runs.append)
    return summary, runs


def _rank(report: RunReport):
    return (report.preemptions, len(report.prefix))


def test_runs_in_breadth_first_order_and_each_violation_keeps_a_shortest_schedule():
    summary, runs = _all_runs(xsa399_short(fix=False), bound=1, prune=False)
    assert summary.complete and summary.schedules == len(runs) > 100
    assert runs[0].prefix == ()                               # the baseline comes first
    ranks = [_rank(r) for r in runs]
    assert ranks == sorted(ranks)                              # (preemptions, length) never decreases
    assert summary.violations
    for v in summary.violations:
        having = [r for r in runs if v.identity in r.hazards and v.identity not in summary.baseline]
        assert having, v
        # the kept schedule is the first, and a shortest, of every schedule that shows it
        assert v.schedule == having[0].prefix
        assert (v.preemptions, len(v.schedule)) == min(_rank(r) for r in having)
        assert v.run == runs.index(having[0]) + 1


@pytest.mark.parametrize("bound", [0, 1, 2])
def test_no_run_uses_more_preemptions_than_the_bound(bound):
    summary, runs = _all_runs(problem(ASSIGN_DEASSIGN, "direct"), bound=bound, prune=True)
    assert summary.complete
    assert max(r.preemptions for r in runs) == summary.max_preemptions <= bound
    for r in runs:
        # what the run reports is what re-recording its schedule spends
        assert r.preemptions <= bound
    for v in summary.violations:
        assert v.preemptions <= bound
    if bound == 0:
        assert summary.violations == []
        assert summary.over_bound > 0        # preempting alternatives were met and refused


@pytest.mark.parametrize("case,bound", [("two-assigns", 2), ("assign-deassign", 1), ("xsa399-no-fix", 1)])
def test_pruning_finds_what_the_brute_force_enumeration_finds(case, bound):
    def make():
        if case == "xsa399-no-fix":
            return xsa399_short(fix=False)
        return problem(TWO_ASSIGNS if case == "two-assigns" else ASSIGN_DEASSIGN, "legacy")
    pruned, pruned_runs = _all_runs(make(), bound, prune=True)
    brute, brute_runs = _all_runs(make(), bound, prune=False)
    assert pruned.complete and brute.complete
    assert brute.pruned == 0
    # every schedule within the bound, by brute force: each run's children
    # are exactly the alternatives that fit
    assert brute.schedules == 1 + sum(len([a for a in b.alternatives if a[1] <= bound])
                                      for r in brute_runs for b in r.branches)
    assert {v.identity for v in pruned.violations} == {v.identity for v in brute.violations}
    every = set().union(*(r.hazards for r in brute_runs)) - set(brute.baseline)
    assert {v.identity for v in brute.violations} == every
    assert pruned.schedules <= brute.schedules
    assert pruned.states == brute.states          # every state brute force meets, the pruned search met
    if case == "xsa399-no-fix":
        assert pruned.violations and pruned.schedules < brute.schedules
        assert [(v.identity, v.schedule) for v in pruned.violations] == \
            [(v.identity, v.schedule) for v in brute.violations]


def test_pruning_cuts_the_enumeration():
    pruned, _ = _all_runs(problem(ASSIGN_DEASSIGN, "legacy"), 2, prune=True)
    assert pruned.complete and pruned.pruned > 0
    assert 0 < pruned.pruned < pruned.alternatives


def test_max_runs_stops_the_search_incomplete():
    s = explore(problem(ASSIGN_DEASSIGN, "legacy"), bound=2, max_runs=7)
    assert s.schedules == 7 and not s.complete and not s.interrupted and s.frontier > 0
    whole = explore(problem(ASSIGN_DEASSIGN, "legacy"), bound=2, max_runs=10_000)
    assert whole.complete and whole.frontier == 0


def test_the_same_search_twice_gives_the_same_summary():
    def facts(s):
        return (s.schedules, s.states, s.pruned, s.alternatives, s.over_bound, sorted(s.baseline),
                [(v.number, v.identity, v.severity, v.schedule, v.run) for v in s.violations])
    a = explore(problem(ASSIGN_DEASSIGN, "direct"), bound=2)
    b = explore(problem(ASSIGN_DEASSIGN, "direct"), bound=2)
    assert facts(a) == facts(b)


def test_a_counterexample_schedule_re_records_the_violation():
    prob = xsa399_short(fix=False)
    s = explore(prob, bound=1)
    assert [v.identity.kind for v in s.violations] == ["did-incoherent", "owner-mismatch"]
    v = s.violations[0]
    report = run_unit(prob, v.schedule)
    assert v.identity in report.hazards
    sink = ListSink()
    result = record(prob.platform, prob.variant, sink, schedule=v.schedule)
    assert result.choices == list(v.schedule)


def test_a_preemption_makes_the_other_cpu_spin_on_pcidevs_lock():
    """The scenarios have a lock-contended path: some explored schedule has a lock-wait."""
    prob = problem(TWO_ASSIGNS, "direct")
    s, runs = _all_runs(prob, 1, prune=True)
    waits = 0
    for r in runs:
        sink = ListSink()
        record(prob.platform, prob.variant, sink, schedule=r.prefix)
        waits += sum(1 for ev in sink.events if ev[S.I_KIND] == S.K_LOCK_WAIT)
    assert waits > 0


# --- the state key ------------------------------------------------------------------

def test_stable_values_of_engine_objects_are_their_identities_in_xen_terms():
    from tracer.engine.core import PciDev, XenDomain
    from tracer.engine.hw import VtdIommu
    from tracer.platform import Op

    d = XenDomain(7, "guest")
    p = PciDev(0, 0x14, 0x00, "pcie-endpoint", 0, 0, False)
    u = VtdIommu(2, 0, 4, 256, False, False, True, 0x1000)
    op = Op(3, "assign")
    assert stable(d) == ("dom", 7) == stable(XenDomain(7, "other name"))
    assert stable(p) == ("pdev", 0, 0x14 << 8)
    assert stable(u) == ("iommu", 2)
    assert stable(op) == ("op", 3)
    assert stable([d, (p, {1: [u, op]})]) == stable([XenDomain(7, "x"), (p, {1: [u, op]})])
    assert stable(True) != stable(1)


def test_an_unknown_local_is_refused_not_hashed_by_identity():
    with pytest.raises(UnkeyableLocal, match="object"):
        stable(object())
    with pytest.raises(UnkeyableLocal):
        stable([1, (2, {3: object()})])

    def frame_with(value):
        return sys._getframe()

    with pytest.raises(UnkeyableLocal, match="value"):
        frame_part([frame_with(value=object())])
    a = frame_part([frame_with(value=5)])
    b = frame_part([frame_with(value=6)])
    assert a != b                               # a local that differs makes the keys differ
    assert a == frame_part([frame_with(value=5)])


def test_keys_differ_where_the_live_locals_differ(monkeypatch):
    """Two points with one replayed state but different CPU locals get
    different keys: the key reads the frames, not only the replay.  (The
    search keeps digests; here the branches keep the keys themselves.)"""
    import explore.key as keymod

    monkeypatch.setattr(keymod, "digest", lambda k: k)
    prob = problem(TWO_ASSIGNS, "legacy")
    report = run_unit(prob, ())
    keys = [b.key for b in report.branches]
    assert all(k is not None for k in keys)
    by_replay: dict = {}
    for k in keys:
        by_replay.setdefault(k[4], set()).add(k[5])
    # somewhere a CPU moved on (new frames/locals) without an event changing the replayed state
    assert any(len(cpu_parts) > 1 for cpu_parts in by_replay.values())


def test_the_key_is_built_from_plain_values_only(monkeypatch):
    """No key holds an engine object, a frame, a code object or a set: only
    ints, strings, bytes, None, bools and tuples of them, so its repr -- what
    the digest hashes -- is the same text in every process (work units run
    elsewhere; test_explore_parallel checks the digests across processes)."""
    import explore.key as keymod

    monkeypatch.setattr(keymod, "digest", lambda k: k)
    plain = (int, str, bytes, type(None), bool)

    def walk(v) -> None:
        if type(v) is tuple:
            for x in v:
                walk(x)
        else:
            assert type(v) in plain, type(v)

    for text in (ASSIGN_DEASSIGN, TWO_ASSIGNS):
        report = run_unit(problem(text, "direct"), ())
        assert report.branches
        for b in report.branches:
            walk(b.key)


def test_the_xsa399_fix_leaves_no_violation():
    s = explore(xsa399_short(fix=True), bound=1)
    assert s.complete and s.schedules > 100 and s.violations == []


def test_schedules_of_violations_are_written_in_the_record_notation():
    s = explore(xsa399_short(fix=False), bound=1)
    assert s.violations
    from tracer.sched import format_schedule, parse_schedule
    for v in s.violations:
        text = format_schedule(v.schedule)
        assert re.fullmatch(r"\d+:[cdxta]\d+( \d+:[cdxta]\d+)*", text)
        assert parse_schedule(text) == v.schedule
        assert all(isinstance(c, Choice) for c in v.schedule)


def _on_two_cpus(text: str) -> str:
    """Every second op of a shipped scenario moved to CPU 1."""
    n = 0

    def move(m: re.Match) -> str:
        nonlocal n
        n += 1
        return m.group(0) + ("cpu = 1\n" if n % 2 == 0 else "")
    return re.sub(r"^\[\[op\]\][^\n]*\n", move, text, flags=re.M)


@pytest.mark.parametrize("name", ["s2-guest-destroy-quarantine", "s8-two-legacy-behind-bridge",
                                  "s10-alias-rid-split", "s11-ats-stale-devtlb", "s12-phantom-source-alone"])
@pytest.mark.parametrize("variant", ["original", "legacy", "direct", "final"])
def test_explore_runs_on_shipped_scenarios_spread_over_two_cpus(name, variant):
    """Robust on any scenario: every engine path these reach keys its locals
    (an unknown local type would raise UnkeyableLocal) and is judged."""
    from conftest import REPO

    from explore.search import Problem
    from tracer.scenario import loads_scenario

    text = _on_two_cpus((REPO / "traces" / f"{name}.toml").read_text(encoding="utf-8"))
    platform = loads_scenario(text, f"{name}.toml")
    assert platform.cpus == 2
    s = explore(Problem(platform, variant), bound=1, max_runs=25)
    assert s.schedules >= 2 and s.states > 0


def test_immutable_records_are_keyed_by_value():
    from typing import NamedTuple

    from tracer.platform import DmaSource

    class Outcome(NamedTuple):
        host: int
        owner: int

    assert stable(Outcome(0x1000, 1)) == stable(Outcome(0x1000, 1)) != stable(Outcome(0x1000, 2))
    src = DmaSource("usb", "0000:00:14.0", 0xd5d45000, True, False)
    assert stable(src) == stable(DmaSource("usb", "0000:00:14.0", 0xd5d45000, True, False))


def test_a_local_function_is_keyed_by_its_code_and_what_it_closes_over():
    def predicate_for(since):
        def passed():
            return since
        return passed

    assert stable(predicate_for({1: 2})) == stable(predicate_for({1: 2}))
    assert stable(predicate_for({1: 2})) != stable(predicate_for({1: 3}))
    with pytest.raises(UnkeyableLocal):
        stable(predicate_for(object()))
