"""Recording overhead: the engine driven by `synth` into the trace writer vs
into a null sink, same workload, same process (goal: writer <= 1.5x, README.md#performance)."""

from __future__ import annotations

import os
import tempfile

from bench import Result, interleaved, section


@section("record", "engine with the file writer vs with a null sink")
def run(opts) -> list[Result]:
    from tracer.recorder import NullSink
    from tracer.synth import synth, synth_header
    from tracer.writer import TraceWriter

    n = min(opts.events, 300_000)   # the engine is the cost here; 3e5 events is stable
    tmp = tempfile.mkdtemp(prefix="vtdtrace-bench-")
    path = os.path.join(tmp, "rec.vtdt")

    def null():
        synth(n, 11, NullSink())

    def file():
        with TraceWriter(path, synth_header(11, "direct", True, n), force=True) as w:
            synth(n, 11, w)

    t = interleaved({"null": null, "file": file}, max(3, opts.reps))
    size = os.path.getsize(path)
    os.unlink(path)
    os.rmdir(tmp)
    return [
        Result("record, file writer vs null sink", n / t["file"], n / t["null"], "ev/s",
               ratio=t["file"] / t["null"], goal=("<=", 1.5),
               note=f"{n:,} synth events (seed 11, direct), trace {size / n:.1f} B/event"),
    ]
