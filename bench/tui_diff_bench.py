"""`vtdtrace view A B` in a real pseudo-terminal: first frame, time until
the alignment and the state at the cursor are there, key -> frame written.

The same harness as the single-trace view (bench/tui_bench.py: the app in a
child process on a pty, a probe inside pairing each key with the first
frame written that shows its effect), on the diff section's workload: A, a
10^6-event synth trace, against B, A with 200 edits spread evenly (200
difference regions; bench/diff_bench.py builds and caches both).  Both are
copied to a temporary directory and their sidecars warmed there first (the
findings by a `vtdtrace diff`, the replay indexes by opening them), so
"ready" is reached in seconds; the cold time is reported.

Keys: `n` (the active side's next event), `↓` (next row), `}` (next
difference region), `]` (next finding of one trace only), `tab` (switch
side), `g` N `enter` (go to a step).  Goals are the single view's: a key
within a 60 Hz frame at the median (17 ms), two at p95 (33 ms).

    python -m bench tui-diff [--events N]
    python -m bench.tui_diff_bench --diff-child A:B OUT.json READY   (internal)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import Options, Result, section
from bench.tui_bench import JUMP_GAP, REPO, SIZE, Probe, Terminal, first_frame, key_rows, samples_by_key

SEP = os.pathsep
EDITS = 200


def diff_child_main(traces: str, out: str, ready: str) -> int:
    import tui
    tui.prepare_environment()           # as `vtdtrace view` does, before Textual loads
    from tui.diff_app import DiffApp

    a, b = traces.split(SEP)
    probe = Probe()
    t0 = time.monotonic()

    class BenchApp(DiffApp):
        diff_seconds = None

        def on_diff_ready(self, message) -> None:
            super().on_diff_ready(message)
            self.diff_seconds = time.monotonic() - t0

        def on_diff_failed(self, message) -> None:
            super().on_diff_failed(message)
            self._write_ready()

        def on_sessions_ready(self, message) -> None:
            super().on_sessions_ready(message)
            self._ready_timer = self.set_interval(0.05, self._bench_ready)

        def _bench_ready(self) -> None:
            # loading finished, including the collection that follows it
            if self.settled and not Path(ready).exists():
                self._ready_timer.stop()
                self._write_ready()

        def _write_ready(self) -> None:
            dm = self.dm
            Path(ready).write_text(json.dumps({
                "load_seconds": time.monotonic() - t0, "diff_seconds": self.diff_seconds,
                "rows": dm.n_rows, "regions": len(dm.al.regions) if dm.ready else 0,
                "hazards": len(dm.hazard_rows()), "count": dm.models["a"].count, "error": dm.error}))

    app = BenchApp(a, b)
    app.latency_probe = probe
    app.run()
    Path(out).write_text(json.dumps({"first_frame_wall": probe.first_frame_wall,
                                     "samples": probe.samples, "cpu": probe.cpu, "keys": probe.keys}))
    for m in app.dm.models.values():
        m.close()
    return 0


def _workload(n: int) -> tuple[Path, Path, float]:
    """Private copies of the diff section's A and B200 with warm sidecars,
    and the time the warming took (the cold diff + index builds)."""
    from bench.diff_bench import SEED, _edited, _own_copy, _synth_trace

    a = _own_copy(_synth_trace(n, SEED), n)
    b, _ = _edited(a, EDITS, 1000)
    tmp = Path(tempfile.mkdtemp(prefix="vtdt-tui-diff-bench-"))
    pa, pb = tmp / "A.vtdt", tmp / "B.vtdt"
    shutil.copyfile(a, pa)
    shutil.copyfile(b, pb)
    script = ("import sys, time\n"
              "from replay.diff import diff_files\n"
              "from replay.session import ReplaySession\n"
              "t = time.perf_counter()\n"
              "diff_files(sys.argv[1], sys.argv[2])\n"
              "for p in sys.argv[1:]: ReplaySession(p).close()\n"
              "print(time.perf_counter() - t)\n")
    r = subprocess.run([sys.executable, "-c", script, str(pa), str(pb)], cwd=REPO, check=True,
                       capture_output=True, text=True)
    return pa, pb, float(r.stdout.strip())


def latencies(traces: str, steps: int, jumps: int) -> tuple[dict, dict]:
    term = Terminal(traces, mode="--diff-child", module="bench.tui_diff_bench")
    info = term.wait_ready(timeout=3600)
    time.sleep(0.5)
    rnd = random.Random(1)
    press = term.press
    for _ in range(steps):
        press(b"n")
    for _ in range(steps):
        press(b"\x1b[B")                     # down
    press(b"\x1b[H", 0.3)                    # home
    for _ in range(jumps):
        press(b"}", JUMP_GAP)
    press(b"\x1b[H", 0.3)
    for _ in range(jumps):
        press(b"]", JUMP_GAP)
    for _ in range(20):
        press(b"\t", JUMP_GAP)
    for _ in range(jumps):
        press(b"g", 0.3)
        press(str(rnd.randrange(1, info["count"] + 1)).encode(), 0.1)
        press(b"\r", JUMP_GAP)
    by_key = samples_by_key(term.quit())
    named = {"step the active side (n)": by_key.get("n", []),
             "next row (down)": by_key.get("down", []),
             "next difference (})": by_key.get("right_curly_bracket", []),
             "next hazard delta (])": by_key.get("right_square_bracket", []),
             "switch side (tab)": by_key.get("tab", []),
             "go to step (g N enter)": by_key.get("enter", [])}
    return named, info


@section("tui-diff", "vtdtrace view A B in a pty: first frame, ready, key -> frame written")
def run(opts: Options) -> list[Result]:
    reps = max(3, min(opts.reps, 5))
    a, b, cold = _workload(opts.events)
    traces = f"{a}{SEP}{b}"
    ff = first_frame(traces, reps, mode="--diff-child", module="bench.tui_diff_bench")
    results = [Result(f"first frame, 2 x {opts.events:,} events", ff, unit="s", ratio=ff, goal=("<=", 1.5))]
    steps, jumps = max(60, 20 * reps), max(30, 8 * reps)
    named, info = latencies(traces, steps, jumps)
    results.append(Result("alignment on screen (findings cached)", info["diff_seconds"] or float("nan"), unit="s",
                          note=f"{info['rows']:,} rows, {info['regions']} regions, {info['hazards']} hazard deltas"))
    results.append(Result("state at the cursor available (indexes cached)", info["load_seconds"], unit="s",
                          note="the keys work from the line above on"))
    results.append(Result("cold: diff + both indexes built, no sidecar", cold, unit="s",
                          note="once per pair of traces; the view shows progress meanwhile"))
    for name, pairs in named.items():
        results += key_rows(name, pairs, f"{len(pairs)} keys, pty {SIZE[0]}x{SIZE[1]}")
    return results


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--diff-child":
        raise SystemExit(diff_child_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    from bench.__main__ import main
    raise SystemExit(main(["tui-diff", *sys.argv[1:]]))
