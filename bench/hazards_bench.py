"""Hazard analysis figures (the goal in README.md#performance): `check` -- reader decode, the
state fold and every analyser, i.e. ``replay.hazards.findings_for_trace``
without the sidecar -- against a raw msgpack Unpacker draining the same
chunk payloads, on the same `vtdtrace synth` trace (10^6 events by default),
CPU time measured side by side (bench.interleaved).

Also reported, for context: the fold alone (so the analysers' own share is
visible) and the number of findings.
"""

from __future__ import annotations

import gc

from bench import Options, Result, interleaved, section
from bench.replay_bench import _payloads, _raw_unpack, _replay, synth_trace
from replay.hazards import findings_for_trace
from replay.reader import open_trace


def _check(path) -> None:
    findings_for_trace(path)


@section("hazards", "check (decode + fold + all analysers) vs raw unpack of the same trace")
def run(opts: Options) -> list[Result]:
    path = synth_trace(opts.events)
    with open_trace(path, verify=False) as t:
        count = t.count
    payloads = _payloads(path)
    gc.collect()
    t = interleaved({"raw": lambda: _raw_unpack(path, payloads),
                     "replay": lambda: _replay(path),
                     "check": lambda: _check(path)}, opts.reps)
    result = findings_for_trace(path)
    sev = {}
    for f in result.findings:
        sev[f.severity] = sev.get(f.severity, 0) + 1

    def rate(seconds: float) -> float:
        return count / seconds / 1e6

    return [
        Result("check (decode + fold + analysers)", rate(t["check"]), rate(t["raw"]), "M ev/s",
               t["raw"] / t["check"], (">=", 0.15),
               note=f"synth trace of {count:,} events; replay.hazards.findings_for_trace (no sidecar) vs "
                    f"a bare msgpack.Unpacker draining the same chunk payloads (CPU time)"),
        Result("analysers' share", t["check"] - t["replay"], t["replay"], "s",
               (t["check"] - t["replay"]) / t["replay"], None,
               note="CPU seconds the analysers add to one decode + fold pass"),
        Result("findings", float(len(result.findings)), None, "",
               None, None, note=", ".join(f"{k} {v}" for k, v in sorted(sev.items()))),
    ]
