"""Two-CPU traces for the tests of everything downstream of the engine
(tests/test_multicpu*.py): tests/data/two-cpu.toml recorded under a chooser,
written with the schedule it took in the header, as ``record --schedule``
writes it."""

from __future__ import annotations

from pathlib import Path

from tracer.record import make_header, record
from tracer.recorder import ListSink
from tracer.scenario import load_scenario
from tracer.writer import TraceWriter

TWO_CPU = Path(__file__).resolve().parent / "data" / "two-cpu.toml"


class SwitchTo:
    """At each CPU choice, switch to the next CPU of ``wanted`` as soon as
    it is offered and is not the default; the default once all were taken.
    ``SwitchTo([1, 0])`` runs CPU 1's first op before CPU 0's, then hands
    back to CPU 0 at its first chance: CPU 0 then spins on the lock CPU 1
    holds (pcidevs_lock)."""

    def __init__(self, wanted: list[int]) -> None:
        self.wanted = list(wanted)

    def choose(self, point) -> int:
        if point.kind == "c" and self.wanted and self.wanted[0] in point.options[1:]:
            return point.options.index(self.wanted.pop(0))
        return 0


def record_two_cpu(path: Path, variant: str = "direct", chooser=None, scenario: Path = TWO_CPU) -> str:
    """Record the scenario into ``path``; returns the schedule (its text form)."""
    from tracer.sched import format_schedule

    platform = load_scenario(str(scenario))
    sink = ListSink()
    result = record(platform, variant, sink, chooser=chooser)
    with TraceWriter(path, make_header(platform, variant, result.choices)) as w:
        for ev in sink.events:
            w.append(ev)
    return format_schedule(result.choices)


def record_preempted(path: Path, variant: str = "direct") -> str:
    """CPU 1's assign runs first and is preempted inside
    domain_context_mapping_one (after it took iommu->lock): CPU 0 begins its
    assign there and spins on pcidevs_lock, and CPU 1 goes on.  So CPU 1's
    calls enclose CPU 0's events.  Returns the schedule."""
    from tracer import schema as S
    from tracer.sched import format_schedule, parse_schedule

    platform = load_scenario(str(TWO_CPU))
    sink = ListSink()
    first = record(platform, variant, sink, chooser=SwitchTo([1]))
    at = next(ev[S.I_SEQ] for ev in sink.events if ev[S.I_CPU] == 1 and ev[S.I_KIND] == S.K_LOCK
              and ev[S.F_LOCK_LOCK] == "iommu->lock")
    schedule = parse_schedule(f"{format_schedule(first.choices)} {at}:c0")
    sink = ListSink()
    result = record(load_scenario(str(TWO_CPU)), variant, sink, schedule=schedule)
    with TraceWriter(path, make_header(platform, variant, result.choices)) as w:
        for ev in sink.events:
            w.append(ev)
    return format_schedule(result.choices)
