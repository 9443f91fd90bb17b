"""Shared helpers for the engine tests: record a shipped scenario into memory."""

from __future__ import annotations

from tracer import schema as S
from tracer.record import apply_cx16, record
from tracer.recorder import ListSink
from tracer.scenario import load_scenario


class Run:
    def __init__(self, name: str, variant: str, cx16: bool = True):
        self.platform = apply_cx16(load_scenario(name), cx16)
        self.sink = ListSink()
        self.engines = []
        self.result = record(self.platform, variant, self.sink,
                             on_event=lambda eng, ev: self.engines.append(eng) if not self.engines else None)
        self.engine = self.engines[0]
        self.events = [S.event_to_dict(e) for e in self.sink.events]

    def op(self, n: int):
        return [e for e in self.events if e["op"] == n]

    def kinds(self, evs, *kinds):
        return [e for e in evs if e["kind"] in kinds]

    def entry(self, iommu: int, bus: int, devfn: int):
        return self.engine.iommus[iommu].entry(bus, devfn)
