"""python -m bench [SECTION ...] [--events N] [--reps R] [--json]"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
import time

import bench
from bench import SECTIONS, Options


def _discover() -> None:
    for mod in pkgutil.iter_modules(bench.__path__):
        if mod.name.endswith("_bench"):
            importlib.import_module(f"bench.{mod.name}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _table(name: str, opts: Options, results: list, seconds: float) -> str:
    rows = [("metric", "vtdtrace", "baseline", "unit", "ratio", "goal", "")]
    for r in results:
        goal = f"{r.goal[0]} {r.goal[1]:g}" if r.goal else ""
        ratio = f"{r.ratio:.3f}x" if r.ratio is not None else ""
        rows.append((r.metric, _fmt(r.ours), _fmt(r.baseline), r.unit, ratio, goal, r.verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"== {name}: {opts.events:,} events, {opts.reps} reps, medians ({seconds:.1f} s)"]
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i in (0, 3, 6) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [f"  {r.metric}: {r.note}" for r in results if r.note]
    return "\n".join(lines + (["notes:"] + notes if notes else []))


def main(argv=None) -> int:
    _discover()
    ap = argparse.ArgumentParser(prog="python -m bench", description="vtdtrace benchmarks (same-run ratios)")
    ap.add_argument("sections", nargs="*", metavar="SECTION",
                    help=f"which to run (default all): {', '.join(SECTIONS)}")
    ap.add_argument("--events", type=int, default=Options.events, help="events per workload (default 1e6)")
    ap.add_argument("--reps", type=int, default=Options.reps, help="repetitions per measurement (median)")
    ap.add_argument("--json", action="store_true", help="print results as JSON")
    ap.add_argument("--full", action="store_true",
                    help="also the 10^7-event figures (reusing a cached synth trace)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section {unknown[0]!r} (available: {', '.join(SECTIONS)})")
    opts = Options(events=args.events, reps=args.reps, extra={"full": args.full})
    report = {}
    for name in args.sections or list(SECTIONS):
        t0 = time.perf_counter()
        results = SECTIONS[name].run(opts)
        seconds = time.perf_counter() - t0
        if args.json:
            report[name] = [r.to_json() for r in results]
        else:
            print(_table(name, opts, results, seconds), flush=True)
    if args.json:
        json.dump({"events": opts.events, "reps": opts.reps, "sections": report}, sys.stdout, indent=1)
        print()
    # Figures are informational (the host is noisy): a missed goal is reported, not an error.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
