"""`vtdtrace scenarios`: the shipped scenario files, one per line, then the
engine variants a scenario can be recorded with (text output only; --json
stays the array of scenarios)."""

from __future__ import annotations

import json

from tracer.engine import VARIANTS
from tracer.scenario import ScenarioError, list_shipped, shipped_dir
from vtdtrace.errors import EXIT_OK, fail

# The 4.15 series in commit order: before XSA-400, the seed's parent, the seed, the end.
ENGINE_ORDER = ("original", "legacy", "direct", "final")


def add_parser(p) -> None:
    p.add_argument("--json", action="store_true",
                   help='a JSON array of {"name", "description"} objects')


def run(args) -> int:
    if shipped_dir() is None:
        return fail(None, "no shipped scenarios found (neither tracer/shipped nor traces/ exists)")
    try:
        shipped = list_shipped()
    except ScenarioError as exc:
        return fail(None, str(exc))
    if args.json:
        print(json.dumps([{"name": n, "description": d} for n, d in shipped], indent=2))
        return EXIT_OK
    width = max((len(n) for n, _ in shipped), default=0)
    for name, desc in shipped:
        print(f"{name:<{width}}  {desc}".rstrip())
    print()
    print("engines (vtdtrace record SCENARIO --engine NAME), oldest first:")
    for name in ENGINE_ORDER:
        print(f"  {name:<8}  {VARIANTS[name]}")
    return EXIT_OK
