"""Diff figures (the goals in README.md#performance) on two 10^6-event traces that differ in a
handful of places:

* ``diff, findings cached``: end-to-end ``diff_files`` + text rendering when
  both traces' findings are in their sidecars -- goal <= 3 s;
* ``diff first time / (check A + check B)``: the same with no sidecar (the
  hazard analysers run inside the diff's pass) against computing the two
  traces' findings (``findings_for_trace``, the core of ``check``) -- goal
  <= 1.2;
* ``extra per differing region``: (diff of a trace with 200 differing
  regions - diff of a trace with the same events) / 200, both written with
  another chunk size so that neither shares bytes with A, timed interleaved
  -- goal <= 5 ms;
* ``shifted stream``: the extra cost of comparing a trace whose events are
  all shifted by one (an event inserted early) -- informational;
* ``peak RSS``: a diff in a fresh process against a process that merely holds
  one of the two traces decoded -- the diff streams, it never holds both
  (goal <= 0.5).

Workload: A is a cached `vtdtrace synth` trace (bench/.cache/, shared with
the replay section); B0 is A re-written in 1000-event chunks (identical
events, other bytes), B5 is A with 5 edits, B200 A with 200 edits
(re-chunked like B0), spread evenly: a changed flush DID, an inserted log line, a
deleted log line, a context write storing another DID (a state difference
that lasts until the entry is written again), a changed step label.

Times are CPU seconds of this process (bench.clock; the host is a shared VM),
medians over ``--reps``.  Run alone: ``python -m bench.diff_bench`` or as a
section: ``python -m bench diff``.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench import Options, Result, clock, interleaved, section

if TYPE_CHECKING:
    from replay.diff import DiffReport

CACHE = Path(__file__).resolve().parent / ".cache"
REPO = Path(__file__).resolve().parent.parent
SEED = 1
REGIONS = 200       # edits in the per-region measurement (many, so that the signal beats host noise)
EDIT_KINDS = ("did", "insert", "delete", "ctx-did", "label")


def _synth_trace(n: int, seed: int) -> Path:
    try:
        from bench.replay_bench import synth_trace
        return synth_trace(n, seed)
    except ImportError:
        pass
    from replay.reader import open_trace
    from tracer.synth import synth, synth_header
    from tracer.writer import TraceWriter

    CACHE.mkdir(exist_ok=True)
    from tracer.synth import SYNTH_VERSION
    path = CACHE / f"synth-{n}-s{seed}-v{SYNTH_VERSION}-direct.vtdt"
    if path.exists():
        with open_trace(path, verify=False) as t:
            if t.complete and t.count >= n:
                return path
    tmp = path.with_suffix(".tmp")
    with TraceWriter(tmp, synth_header(seed, "direct", True, n), force=True) as w:
        synth(n, seed, w, "direct", True)
    os.replace(tmp, path)
    return path


def _own_copy(src: Path, n: int) -> Path:
    """The diff section's own copy of the shared synth trace (it deletes and
    rebuilds its sidecars; the replay section's stay untouched)."""
    import shutil
    dst = CACHE / f"diff-{n}-a.vtdt"
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        tmp = dst.with_suffix(".tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
        _drop_sidecars(dst)
    return dst


def _edited(a: Path, n_edits: int, chunk_events: int = 1024) -> tuple[Path, list]:
    """A copy of trace a with n_edits edits spread evenly (cached); with no
    edits and another chunk size: the same events in other bytes."""
    from replay.reader import open_trace
    from tracer import schema as S
    from tracer.writer import TraceWriter

    out = CACHE / f"{a.stem}-b{n_edits}{'' if chunk_events == 1024 else f'-c{chunk_events}'}.vtdt"
    meta = out.with_suffix(".json")
    key = {"source": a.name, "size": a.stat().st_size, "edits": n_edits, "kinds": list(EDIT_KINDS), "v": 3,
           "chunk": chunk_events}
    if out.exists() and meta.exists():
        try:
            got = json.loads(meta.read_text())
            if got.get("key") == key:
                return out, got["edits"]
        except (OSError, ValueError):
            pass
    with open_trace(a) as t:
        total = t.count
        targets = [int((k + 0.5) * total / n_edits) for k in range(n_edits)] if n_edits else []
        done: list = []
        pending = list(targets)
        seq = 0
        tmp = out.with_suffix(".tmp")
        with TraceWriter(tmp, t.header, force=True, chunk_events=chunk_events) as w:
            for ev in t.events():
                kind = EDIT_KINDS[len(done) % len(EDIT_KINDS)] if pending else None
                ev = list(ev)
                # a deletion follows its insertion closely (the next log line),
                # so the two traces are shifted for a few hundred events only
                due = pending and (ev[1] >= pending[0] or (kind == "delete" and done and done[-1]["kind"] == "insert"))
                if due and _applies(kind, ev, S):
                    pending.pop(0)
                    done.append({"kind": kind, "seq_a": ev[1]})
                    if kind == "did":
                        ev[S.F0 + 2] += 7
                    elif kind == "insert":
                        seq += 1
                        w.append([ev[0], seq, *ev[2:]])
                        extra = [S.K_LOG, 0, ev[2], ev[3], ev[4], ev[5], "info", "bench: an extra line"]
                        seq += 1
                        extra[1] = seq
                        w.append(extra)
                        continue
                    elif kind == "delete":
                        continue
                    elif kind == "ctx-did":
                        ev[S.F0 + 8] ^= 0x100
                    elif kind == "label":
                        ev[5] = (ev[5] or "") + "x"
                seq += 1
                ev[1] = seq
                w.append(ev)
    os.replace(tmp, out)
    meta.write_text(json.dumps({"key": key, "edits": done}))
    return out, done


def _shifted(a: Path, chunk_events: int) -> Path:
    """A with one extra log line at 10% of the trace (cached)."""
    from replay.reader import open_trace
    from tracer import schema as S
    from tracer.writer import TraceWriter

    out = CACHE / f"{a.stem}-shifted-c{chunk_events}.vtdt"
    if out.exists() and out.stat().st_mtime >= a.stat().st_mtime:
        return out
    tmp = out.with_suffix(".tmp")
    with open_trace(a) as t, TraceWriter(tmp, t.header, force=True, chunk_events=chunk_events) as w:
        at = t.count // 10
        seq = 0
        for ev in t.events():
            ev = list(ev)
            if ev[1] == at:
                seq += 1
                w.append([S.K_LOG, seq, ev[2], ev[3], ev[4], ev[5], "info", "bench: an extra line"])
            seq += 1
            ev[1] = seq
            w.append(ev)
    os.replace(tmp, out)
    return out


def _applies(kind, ev, S) -> bool:
    if kind == "did":
        return ev[0] == S.K_FLUSH_IOTLB
    if kind == "delete":
        return ev[0] == S.K_LOG
    if kind == "ctx-did":
        return ev[0] == S.K_CTX_WRITE and ev[S.F0 + 3] == "full"
    if kind == "label":
        return ev[0] == S.K_CALL
    return True


def _drop_sidecars(*paths) -> None:
    from replay.sidecar import beside_path, user_cache_path
    for p in paths:
        for side in (beside_path(p), user_cache_path(p)):
            try:
                os.remove(side)
            except FileNotFoundError:
                pass


def _diff(a, b) -> DiffReport:
    from replay.diff import diff_files, render_text
    rep = diff_files(a, b)
    render_text(rep)
    return rep


def _check(path) -> None:
    from replay.hazards import findings_for_trace
    findings_for_trace(path)


def _timed(fn, reps: int, before=None) -> float:
    times = []
    for _ in range(reps):
        if before is not None:
            before()
        gc.collect()
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


# The child's own peak: VmHWM belongs to the memory map exec gave it, while
# ru_maxrss also counts what the parent (this bench, hundreds of MB by then)
# had resident when it forked.
_PEAK_KB = """
def peak_kb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
"""
_RSS_DIFF = _PEAK_KB + """
import sys
from replay.diff import diff_files, render_text
rep = diff_files(sys.argv[1], sys.argv[2])
render_text(rep)
print(peak_kb())
"""
_RSS_HOLD = _PEAK_KB + """
import gc, sys
from replay.reader import open_trace
gc.disable()
t = open_trace(sys.argv[1])
events = [ev for chunk in t.iter_chunks() for ev in chunk]
print(peak_kb())
"""


def _rss_kb(script: str, *args) -> int:
    proc = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return int(proc.stdout.split()[-1])


@section("diff", "vtdtrace diff of two 10^6-event traces differing in a few places")
def run(opts: Options) -> list[Result]:
    from replay.session import ReplaySession

    reps = max(1, opts.reps)
    a = _own_copy(_synth_trace(opts.events, SEED), opts.events)
    b0, _ = _edited(a, 0, chunk_events=1000)       # identical events, other bytes
    b5, _ = _edited(a, 5)
    b20, _ = _edited(a, REGIONS, chunk_events=1000)  # many edits, other bytes too
    bsh = _shifted(a, chunk_events=1000)            # one extra event at 10%: 90% shifted

    # first time: no sidecar for either trace; check = findings of each trace
    t_check_a = _timed(lambda: _check(a), reps)
    t_check_b = _timed(lambda: _check(b5), reps)
    t_first = _timed(lambda: _diff(a, b5), reps, before=lambda: _drop_sidecars(a, b5))
    # findings cached (the diff stores them), no checkpoints
    _drop_sidecars(a, b0, b5, b20, bsh)
    for b in (b0, b5, b20):
        _diff(a, b)
    t_cached = _timed(lambda: _diff(a, b5), reps)
    _diff(a, bsh)
    # interleaved: the three are compared with each other, so host noise must hit them alike
    m = interleaved({"b0": lambda: _diff(a, b0), "b20": lambda: _diff(a, b20), "shift": lambda: _diff(a, bsh)},
                    reps)
    t0, t20, t_shift = m["b0"], m["b20"], m["shift"]
    rep5, rep20, rep0 = _diff(a, b5), _diff(a, b20), _diff(a, b0)
    regions20 = len(rep20.alignment.regions)
    per_region_ms = (t20 - t0) / max(1, regions20) * 1000
    # ... and A's checkpoints too (after `vtdtrace show A` or the TUI opened it)
    ReplaySession(a).close()
    t_ckpt = _timed(lambda: _diff(a, b5), reps)

    rss_diff = _rss_kb(_RSS_DIFF, a, b5) / 1024
    rss_hold = _rss_kb(_RSS_HOLD, a) / 1024
    size_mb = (a.stat().st_size + b5.stat().st_size) / (1 << 20)

    s5 = rep5.summary()
    return [
        Result("diff, findings cached (A vs B5)", t_cached, 3.0, "s", t_cached / 3.0, ("<=", 1.0),
               note=f"CPU s against the 3 s goal; {s5['regions']} regions, {s5['ops_different']} differing "
                    f"ops of {s5['op_pairs']}, {len(rep5.hazards)} findings in the hazard delta"),
        Result("diff, findings + A's checkpoints cached", t_ckpt, 3.0, "s", t_ckpt / 3.0, ("<=", 1.0),
               note="A's state comes from its checkpoints: no fold over identical stretches"),
        Result("diff first time / (check A + check B)", t_first, t_check_a + t_check_b, "s",
               t_first / (t_check_a + t_check_b), ("<=", 1.2),
               note=f"check A {t_check_a:.3f} s, check B {t_check_b:.3f} s (findings_for_trace); "
                    "the diff runs both analysers inside its own pass"),
        Result("extra per differing region", per_region_ms, 5.0, "ms", per_region_ms / 5.0, ("<=", 1.0),
               note=f"B{REGIONS} ({regions20} regions, {t20:.3f} s) vs B0 ({t0:.3f} s; "
                    f"{'equivalent' if rep0.equivalent else 'NOT equivalent'}), both re-chunked so that "
                    "no chunk is byte-identical to A's (every event decoded on both sides)"),
        Result("shifted stream, per 10^6 events", (t_shift - t0) / (0.9 * opts.events) * 1e6, None, "s",
               note="one event inserted at 10%: the rest is compared with its seqs renumbered "
                    f"({t_shift:.3f} s vs B0 {t0:.3f} s)"),
        Result("peak RSS of a diff / one trace held decoded", rss_diff, rss_hold, "MB", rss_diff / rss_hold,
               ("<=", 0.5), note=f"both trace files together: {size_mb:.0f} MB"),
    ]


def main(argv=None) -> int:
    import argparse

    from bench.__main__ import _table

    ap = argparse.ArgumentParser(prog="python -m bench.diff_bench")
    ap.add_argument("--events", type=int, default=Options.events)
    ap.add_argument("--reps", type=int, default=Options.reps)
    args = ap.parse_args(argv)
    import time
    opts = Options(events=args.events, reps=args.reps)
    t0 = time.perf_counter()
    results = run(opts)
    print(_table("diff", opts, results, time.perf_counter() - t0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
