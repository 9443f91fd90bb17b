"""Replay figures (the goals in README.md#performance): the state fold against a raw msgpack
Unpacker over the same file, the first open (fold + checkpoints + indexes)
against one fold pass, the open with a fresh sidecar, seek latency to random
steps, sidecar size, and peak RSS of the replay process.

The workload is a `vtdtrace synth` trace: the real engine driven through a
long random valid workload.  It is cached under bench/.cache/ (keyed by
event count and seed), so a run at 10^7 events pays the recording once:
``python -m bench replay --events 10000000`` (or ``VTDTRACE_BENCH_FULL=1``
for 10^7, which also reports seek(10^7) / seek(10^6)).

Throughput ratios use CPU time measured side by side in one process
(bench.interleaved).  Seek latencies are the CPU time of the seeking thread
per seek, median and p95 over random targets (wall clock, what a user waits
for, is in the note: on the shared 2-vCPU host it mostly measures the other
tenants); peak RSS comes from a fresh child process per scenario (open
only, or open + seeks).
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import time
from collections import deque
from pathlib import Path

import msgpack

from bench import Options, Result, clock, interleaved, peak_rss, section
from replay.reader import CHUNK_HEADER, NotATrace, open_trace
from replay.session import ReplaySession
from replay.sidecar import beside_path, scan_content
from replay.state import fold, initial_state

CACHE = Path(__file__).resolve().parent / ".cache"
REPO = Path(__file__).resolve().parent.parent
SEEKS = 300
FULL_EVENTS = 10_000_000


def synth_trace(n: int, seed: int = 1) -> Path:
    """A cached `vtdtrace synth` trace of at least n events."""
    from tracer.synth import synth, synth_header
    from tracer.writer import TraceWriter

    CACHE.mkdir(exist_ok=True)
    from tracer.synth import SYNTH_VERSION
    path = CACHE / f"synth-{n}-s{seed}-v{SYNTH_VERSION}-direct.vtdt"
    if path.exists():
        try:
            with open_trace(path, verify=False) as t:
                if t.complete and t.count >= n:
                    return path
        except (NotATrace, OSError):
            pass                # a cache file cut short or unreadable: synthesise it again
    tmp = path.with_suffix(".tmp")
    with TraceWriter(tmp, synth_header(seed, "direct", True, n), force=True) as w:
        synth(n, seed, w, "direct", True)
    os.replace(tmp, path)
    return path


def _payloads(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of every chunk payload, from the chunk headers."""
    out = []
    with open_trace(path, verify=False) as t, open(path, "rb") as f:
        for off, _first, _count in t.chunks:
            head = os.pread(f.fileno(), CHUNK_HEADER.size, off)
            plen = CHUNK_HEADER.unpack(head)[2]
            out.append((off + CHUNK_HEADER.size, plen))
    return out


def _raw_unpack(path: Path, payloads) -> None:
    """The baseline: a bare msgpack.Unpacker over the same events, drained."""
    with open(path, "rb") as f:
        fd = f.fileno()
        for off, n in payloads:
            up = msgpack.Unpacker(max_buffer_size=n)
            up.feed(os.pread(fd, n, off))
            deque(up, maxlen=0)


def _replay(path: Path) -> None:
    """One fold pass as the replay runs it (events as tuples, the collector
    frozen, as in replay.seek.build), and nothing else: the session's build
    pass does this plus checkpoints and indexes."""
    with open_trace(path, verify=False, tuples=True) as t:
        st = initial_state(t.header)
        gc.freeze()
        gc.disable()
        try:
            for chunk in t.iter_chunks(folded=True):    # as the session reads them
                fold(st, chunk)
        finally:
            gc.unfreeze()
            gc.enable()


def _build(path: Path) -> None:
    side = Path(beside_path(path))
    if side.exists():
        side.unlink()
    ReplaySession(path).close()


def _warm_open(path: Path) -> None:
    ReplaySession(path).close()


def _seek_latencies(path: Path, count: int, seeks: int = SEEKS) -> tuple[list[float], list[float]]:
    """(CPU seconds, wall seconds) per seek to random steps of a warm session."""
    rnd = random.Random(7)
    targets = [rnd.randrange(count + 1) for _ in range(seeks)]
    cpu, wall = [], []
    with ReplaySession(path) as s:
        for n in targets:
            w0, c0 = time.perf_counter(), time.thread_time()
            s.state_at(n)
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
    return cpu, wall


def _p(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


_RSS_CHILD = r"""
import sys, random, os
sys.path.insert(0, {repo!r})
from replay.session import ReplaySession
from replay.sidecar import beside_path
path, mode = sys.argv[1], sys.argv[2]
if mode == "cold" and os.path.exists(beside_path(path)):
    os.unlink(beside_path(path))
with ReplaySession(path) as s:
    if mode == "seek":
        rnd = random.Random(3)
        for _ in range(200):
            s.state_at(rnd.randrange(s.count + 1))
"""


def _peak_rss_mb(path: Path, mode: str) -> float:
    """The child's peak under bench.peak_rss's launcher: its own ru_maxrss
    would start at this process's peak (a section run before this one may
    have held a decoded trace)."""
    mb, _, code, _ = peak_rss([sys.executable, "-c", _RSS_CHILD.format(repo=str(REPO)), str(path), mode])
    if code:
        raise RuntimeError(f"replay peak-RSS child exited {code}")
    return mb


def _figures(path: Path, reps: int) -> dict:
    with open_trace(path, verify=False) as t:
        count = t.count
        size = t.size
    payloads = _payloads(path)
    gc.collect()
    # Fold vs raw unpack, and the first open vs a fold pass, side by side.
    times = interleaved({"raw": lambda: _raw_unpack(path, payloads),
                         "replay": lambda: _replay(path),
                         "build": lambda: _build(path),
                         "verify": lambda: scan_content(path)}, reps)
    warm = []
    for _ in range(max(3, reps)):
        t0 = time.perf_counter()
        _warm_open(path)
        warm.append(time.perf_counter() - t0)
    t0 = clock()
    _build(path)                     # leave a fresh sidecar for the seeks
    side = os.path.getsize(beside_path(path))
    lat, wall = _seek_latencies(path, count)
    return {"count": count, "size": size, "t": times, "warm": statistics.median(warm), "sidecar": side,
            "seek_med": statistics.median(lat), "seek_p95": _p(lat, 0.95), "seek_max": max(lat),
            "wall_med": statistics.median(wall), "wall_p95": _p(wall, 0.95),
            "rss_cold": _peak_rss_mb(path, "cold"), "rss_seek": _peak_rss_mb(path, "seek")}


@section("replay", "state fold vs raw unpack, first/warm open, seek latency, sidecar size, peak RSS")
def run(opts: Options) -> list[Result]:
    full = bool(os.environ.get("VTDTRACE_BENCH_FULL")) or bool(opts.extra.get("full"))
    n = FULL_EVENTS if full else opts.events
    path = synth_trace(n)
    f = _figures(path, opts.reps)
    count, t = f["count"], f["t"]

    def rate(seconds: float) -> float:
        return count / seconds / 1e6

    results = [
        Result("fold (decode + fold)", rate(t["replay"]), rate(t["raw"]), "M ev/s", t["raw"] / t["replay"],
               (">=", 0.30), note=f"synth trace of {count:,} events ({f['size'] / count:.1f} B/event): reader "
                                  "decode (tuples) + replay.state.fold, GC frozen as in the replay, vs a bare "
                                  "msgpack.Unpacker draining the same chunk payloads (CPU time)"),
        Result("first open (build)", t["build"], t["replay"], "s", t["build"] / t["replay"], ("<=", 1.3),
               note="ReplaySession with no sidecar: fold + checkpoints + kind/ctx indexes + sidecar write, "
                    "vs one fold pass (CPU time)"),
        Result("re-verify (identity changed)", t["verify"], t["replay"], "s", t["verify"] / t["replay"],
               ("<=", 0.15), note="one CRC-32 pass over every chunk (replay.sidecar.scan_content): what an open "
                                  "pays, once, before trusting a sidecar whose trace was copied, touched or "
                                  "changed, vs one fold pass (CPU time)"),
        Result("warm open", f["warm"], None, "s", f["warm"], ("<=", 0.5),
               note="ReplaySession with a fresh sidecar, until any step can be shown (wall)"),
        Result("seek median", f["seek_med"] * 1e3, None, "ms", f["seek_med"] * 1e3, ("<=", 2.0),
               note=f"{SEEKS} random steps, state_at(n) on a warm session, CPU time of the seeking "
                    f"thread (max {f['seek_max'] * 1e3:.2f} ms); wall clock median "
                    f"{f['wall_med'] * 1e3:.2f} ms, p95 {f['wall_p95'] * 1e3:.2f} ms on this host"),
        Result("seek p95", f["seek_p95"] * 1e3, None, "ms", f["seek_p95"] * 1e3, ("<=", 5.0)),
        Result("sidecar size", f["sidecar"] / 1e6, f["size"] / 1e6, "MB", f["sidecar"] / f["size"], ("<=", 1.0),
               note="checkpoints + indexes beside the trace, vs the trace"),
        Result("peak RSS, first open", f["rss_cold"], None, "MB", f["rss_cold"], ("<=", 300)),
        Result("peak RSS, open + 200 seeks", f["rss_seek"], None, "MB", f["rss_seek"], ("<=", 300)),
    ]
    if full:
        small = synth_trace(1_000_000)
        with ReplaySession(small) as s:
            small_count = s.count
        base = statistics.median(_seek_latencies(small, small_count)[0])
        results.append(Result("seek median 10^7 / 10^6", f["seek_med"] * 1e3, base * 1e3, "ms",
                              f["seek_med"] / base, ("<=", 1.5)))
    return results
