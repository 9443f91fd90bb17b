"""The real-code engine (xen-c): extract + build time of Debian's Xen 4.17.5
tree, and events per second of a real-code run beside the Python engine's
on the same scenario (docs/REALCODE.md).

Build time is wall time (the compiler is another process); the runs are CPU
time of this process, interleaved, medians.  Both engines record into a null
sink: the writer's cost is the `record` section's.  The tree is fetched into
the user's cache the first time (xenc/fetch.py); without it (no apt-get, no
network, no C compiler) the section reports why and measures nothing."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench import Result, interleaved, section

SCENARIO = "s1-usb-rmrr"


@section("realc", "xen-c: extract + build time, events/s of a real-code run vs the Python engine")
def run(opts) -> list[Result]:
    from tracer.record import record
    from tracer.recorder import ListSink, NullSink
    from tracer.scenario import load_scenario
    from xenc import fetch
    from xenc.build import BuildError, build
    from xenc.runtime import run as run_real
    from xenc.tree import open_tree

    try:
        tree = open_tree(fetch.debian_tree())
    except (fetch.FetchError, OSError) as exc:
        return [Result("xen-c", 0.0, note=f"not measured: {exc}")]

    builds = []
    built = None
    with tempfile.TemporaryDirectory(prefix="xenc-bench-") as tmp:
        for i in range(max(3, opts.reps)):
            t0 = time.perf_counter()
            try:
                built = build(tree, Path(tmp) / f"c{i}")        # a fresh cache: a real build each time
            except BuildError as exc:
                return [Result("xen-c", 0.0, note=f"not measured: {exc}")]
            builds.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        build(tree, Path(tmp) / "c0")
        cached = time.perf_counter() - t0
        assert built is not None

        platform = load_scenario(SCENARIO)
        platform.knobs.cx16 = True
        probe = ListSink()
        run_real(built, platform, probe, tree)
        n_real = len(probe.events)
        probe = ListSink()
        record(load_scenario(SCENARIO), "direct", probe)
        n_model = len(probe.events)
        reps = 20        # one run is tens of milliseconds: repeat for a stable median

        def real() -> None:
            for _ in range(reps):
                run_real(built, load_scenario(SCENARIO), NullSink(), tree)

        def model() -> None:
            for _ in range(reps):
                record(load_scenario(SCENARIO), "direct", NullSink())

        t = interleaved({"real": real, "model": model}, max(3, opts.reps))
    real_rate = n_real * reps / t["real"]
    model_rate = n_model * reps / t["model"]
    return [
        Result("extract + build (Debian 4.17.5)", statistics.median(builds), None, "s",
               note=f"wall time, {len(built.functions)} functions extracted, cache hit {cached * 1000:.0f} ms"),
        Result(f"run {SCENARIO}, xen-c vs direct", real_rate, model_rate, "ev/s", ratio=real_rate / model_rate,
               note=f"{n_real} events (xen-c) / {n_model} (direct) per run, null sink; a run's time "
                    f"{t['real'] / reps * 1000:.1f} ms vs {t['model'] / reps * 1000:.1f} ms"),
    ]
