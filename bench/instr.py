"""Instruction counts (callgrind) of the replay's hot paths, start-up subtracted.

    python -m bench.instr [fold|check|diff|record|record-null ...] [--events N] [--seed S]

Wall-clock ratios on this shared machine move by 10-20 % from run to run;
instruction counts move by well under 1 %, so a change that must not cost more
than a few per cent (a refactor of the fold, an analyser, the diff) is judged
by these.  Each workload runs twice under ``valgrind --tool=callgrind`` in a
fresh interpreter: once to the point just before the measured call (imports,
trace open) and once through it; the difference is what the call costs.

Workloads, on the cached `vtdtrace synth` trace of N events (default 10^5,
seed 1, no sidecar read or written):

* ``fold``   -- decode + fold (``replay.session`` path: every event checked and applied)
* ``check``  -- decode + fold + every analyser (``replay.hazards.findings_for_trace``)
* ``diff``   -- ``replay.diff.diff_files`` of the trace against a copy with 16 edits, rendered as text
* ``record`` -- the engine writing the same workload to a trace file
* ``record-null`` -- the same engine run into a null sink (tracer.recorder.NullSink):
  ``record`` / ``record-null`` is the recording overhead of README.md#performance
  counted in instructions, which host load cannot move (printed when both run)
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_SETUP = {
    "fold": "from replay.codes import event_translator\nfrom replay.reader import open_trace\n"
            "from replay.state import fold, initial_state\n"
            "def _w(a):\n    with open_trace(a, verify=False) as t:\n"
            "        st, tr = initial_state(t.header.get('platform')), event_translator(t.schema)\n"
            "        for chunk in t.iter_chunks(folded=True):\n"
            "            fold(st, tr(chunk) if tr else chunk)\n",
    "check": "from replay.hazards import findings_for_trace as _w\n",
    "diff": "from replay.diff import diff_files, render_text\n"
            "def _w(a, b=B):\n    render_text(diff_files(a, b))\n",
    "record": "from tracer.synth import synth, synth_header\nfrom tracer.writer import TraceWriter\n"
              "def _w(a):\n    with TraceWriter(a + '.rec', synth_header(SEED, 'direct', True, N), force=True) as w:\n"
              "        synth(N, SEED, w, 'direct', True)\n",
    "record-null": "from tracer.recorder import NullSink\nfrom tracer.synth import synth\n"
                   "def _w(a):\n    synth(N, SEED, NullSink(), 'direct', True)\n",
}


def _collected(script: str) -> int:
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c",
                        script], capture_output=True, text=True, check=False)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or m is None:
        raise SystemExit(f"bench.instr: callgrind run failed:\n{r.stderr[-2000:]}")
    return int(m.group(1))


def measure(workload: str, events: int, seed: int, tmp: Path) -> tuple[int, int]:
    """(instructions of the call, events in the trace)."""
    from bench.diff_bench import _edited
    from bench.replay_bench import synth_trace
    from replay.reader import open_trace

    src = synth_trace(events, seed)
    a = tmp / "a.vtdt"
    shutil.copyfile(src, a)
    b = ""
    if workload == "diff":
        b = str(tmp / "b.vtdt")
        shutil.copyfile(_edited(src, 16)[0], b)
    with open_trace(a, verify=False) as t:
        count = t.count
    head = (f"import sys\nsys.path.insert(0, {str(Path.cwd())!r})\nN, SEED, B = {events}, {seed}, {b!r}\n"
            + _SETUP[workload])
    base = _collected(head)
    full = _collected(head + f"_w({str(a)!r})\n")
    return full - base, count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.instr", description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                    help="fold, check, diff, record, record-null (default: fold check)")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    unknown = [w for w in args.workloads if w not in _SETUP]
    if unknown:
        ap.error(f"unknown workload {unknown[0]!r} (expected one of: {', '.join(_SETUP)})")
    workloads = args.workloads or ["fold", "check"]
    if shutil.which("valgrind") is None:
        print("bench.instr: valgrind is not installed", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="vtdtrace-instr-") as d:
        for w in workloads:
            n, count = measure(w, args.events, args.seed, Path(d))
            counts[w] = n
            print(f"{w:11s} {n / 1e6:10.1f} M instructions  {n / max(count, 1):8.0f} per event  ({count:,} events)")
    if "record" in counts and counts.get("record-null"):
        print(f"record, file writer vs null sink: {counts['record'] / counts['record-null']:.3f}x instructions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
