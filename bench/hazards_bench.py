"""Hazard analysis figures (the goal in README.md#performance): `check` -- reader decode, the
state fold and every analyser, i.e. ``replay.hazards.findings_for_trace``
without the sidecar -- against a raw msgpack Unpacker draining the same
chunk payloads, on the same `vtdtrace synth` trace (10^6 events by default),
CPU time measured side by side (bench.interleaved).

Also reported, for context: the fold alone (so the analysers' own share is
visible), check's floor -- the same pass through the analysis driver
(replay.hazards.Analysis: verified read, translation, the fold fed through
its generator) with no hook registered, i.e. what `check` would cost if the
analysers cost nothing, and so how much time the goal leaves them -- and the
number of findings.

Peak RSS of `check` (``findings_for_trace`` without the sidecar, in a fresh
child process: its ``ru_maxrss``, under a small launcher so that this
process's own peak does not count) on the 10^6- and 10^7-event synth traces,
whatever ``--events`` says: memory is what grows with the trace, and 10^7
events (about half a million findings) is the size the goal is set for
(<= 300 MB).  The 10^7 trace is recorded once and cached under bench/.cache
like the others (about half a minute); ``--events`` below 10^6 (a quick run)
skips the 10^7 figure.

Peak RSS of the ``vtdtrace check`` command itself, as a user runs it, on a
copy of the trace in a temporary directory: the first run (computes the
findings and stores them in the new sidecar) and the second (loads them
from it; ``--json``, which writes every finding).  The child's own
``ru_maxrss`` (under the launcher), wall seconds in the note.  At 10^6 events always
(unless ``--events`` is below 10^6), at 10^7 with ``--full`` (the first run
takes a few minutes).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile

from bench import Options, Result, interleaved, peak_rss, section
from bench.replay_bench import REPO, _payloads, _raw_unpack, _replay, synth_trace
from replay.codes import event_translator
from replay.hazards import Analysis, findings_for_trace
from replay.reader import open_trace

RSS_GOAL_MB = 300.0
RSS_EVENTS = (1_000_000, 10_000_000)

_RSS_CHILD = """
import sys
sys.path.insert(0, {repo!r})
from replay.hazards import findings_for_trace
result = findings_for_trace(sys.argv[1])
print(len(result.findings))
"""

def _measured(argv: list[str], keep_output: bool = False) -> tuple[float, float, int, str]:
    """(peak RSS in MB, wall seconds, exit code, stdout) of argv in a child
    process of the launcher (bench.peak_rss)."""
    return peak_rss(argv, keep_output, cwd=str(REPO))


def _check(path) -> None:
    findings_for_trace(path)


class _NoHooks(Analysis):
    """The analysis driver with an empty dispatch table."""

    def _build_dispatch(self) -> None:
        self._hooks = {}


def _check_floor(path) -> None:
    """``findings_for_trace`` (no sidecar) with no hook: what is left of
    `check` when the analysers cost nothing."""
    with open_trace(path) as trace:
        a = _NoHooks(trace.header)
        translate = event_translator(trace.schema)
        for chunk in trace.iter_chunks(folded=True):
            a.feed(translate(chunk) if translate is not None else chunk)
        a.finish()


def peak_rss_mb(path) -> tuple[float, int]:
    """(peak RSS in MB, findings) of `check` on path in a fresh child process."""
    mb, _, code, out = _measured([sys.executable, "-c", _RSS_CHILD.format(repo=str(REPO)), str(path)], True)
    if code:
        raise RuntimeError(f"findings_for_trace child exited {code}")
    return mb, int(out.split()[-1])


def cli_peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of ``vtdtrace ARGS`` in a child process,
    output discarded (exit 0 or 1: findings are not a failure)."""
    mb, seconds, code, _ = _measured([sys.executable, "-m", "vtdtrace", *args])
    if code not in (0, 1):
        raise RuntimeError(f"vtdtrace {' '.join(args)} exited {code}")
    return mb, seconds


def cli_check_rss(n: int) -> list[Result]:
    """`vtdtrace check` peak RSS, first run (store) and cached run (load),
    on a copy of the n-event synth trace with no sidecar yet."""
    src = synth_trace(n)
    goal = RSS_GOAL_MB if n == RSS_EVENTS[-1] else None
    out = []
    with tempfile.TemporaryDirectory(prefix="vtdtrace-bench-") as tmp:
        path = os.path.join(tmp, "t.vtdt")
        shutil.copyfile(src, path)
        for what, args in (("first run, stores findings", ["check", path]),
                           ("cached run, loads findings", ["check", "--json", path])):
            mb, seconds = cli_peak_rss_mb(args)
            out.append(Result(f"`vtdtrace check` peak RSS at {n:.0e} events, {what}", mb, goal, "MB",
                              mb / goal if goal else None, ("<=", 1.0) if goal else None,
                              note=f"`vtdtrace {' '.join(a if a != path else 'TRACE' for a in args)}` in a "
                                   f"child process (ru_maxrss), {seconds:.1f} s wall"))
    return out


@section("hazards", "check (decode + fold + all analysers) vs raw unpack of the same trace")
def run(opts: Options) -> list[Result]:
    path = synth_trace(opts.events)
    with open_trace(path, verify=False) as trace:
        count = trace.count
    payloads = _payloads(path)
    gc.collect()
    t = interleaved({"raw": lambda: _raw_unpack(path, payloads),
                     "replay": lambda: _replay(path),
                     "check": lambda: _check(path),
                     "floor": lambda: _check_floor(path)}, opts.reps)
    result = findings_for_trace(path)
    sev: dict[str, int] = {}
    for f in result.findings:
        sev[f.severity] = sev.get(f.severity, 0) + 1

    def rate(seconds: float) -> float:
        return count / seconds / 1e6

    rss = []
    for n in RSS_EVENTS:
        if n > 1_000_000 and opts.events < 1_000_000:
            continue
        mb, nf = peak_rss_mb(synth_trace(n))
        rss.append(Result(f"check peak RSS at {n:.0e} events", mb, RSS_GOAL_MB if n == RSS_EVENTS[-1] else None,
                          "MB", mb / RSS_GOAL_MB if n == RSS_EVENTS[-1] else None,
                          ("<=", 1.0) if n == RSS_EVENTS[-1] else None,
                          note=f"findings_for_trace in a fresh child process (ru_maxrss); {nf:,} findings"))
    for n in RSS_EVENTS:
        if opts.events < 1_000_000 or (n > 1_000_000 and not opts.extra.get("full")):
            continue
        rss.extend(cli_check_rss(n))
    return [
        Result("check (decode + fold + analysers)", rate(t["check"]), rate(t["raw"]), "M ev/s",
               t["raw"] / t["check"], (">=", 0.15),
               note=f"synth trace of {count:,} events; replay.hazards.findings_for_trace (no sidecar) vs "
                    f"a bare msgpack.Unpacker draining the same chunk payloads (CPU time)"),
        Result("analysers' share", t["check"] - t["replay"], t["replay"], "s",
               (t["check"] - t["replay"]) / t["replay"], None,
               note="CPU seconds the analysers add to one decode + fold pass"),
        Result("check's floor (no analyser hook)", rate(t["floor"]), rate(t["raw"]), "M ev/s",
               t["raw"] / t["floor"], None,
               note=f"the analysis driver with an empty dispatch table; at the 0.15x goal the hooks would have "
                    f"{max(t['raw'] / 0.15 - t['floor'], 0.0):.3f} s, they take {t['check'] - t['floor']:.3f} s"),
        Result("findings", float(len(result.findings)), None, "",
               None, None, note=", ".join(f"{k} {v}" for k, v in sorted(sev.items()))),
        *rss,
    ]
