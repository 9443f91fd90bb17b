"""`vtdtrace scenarios`: the shipped scenario files, one per line."""

from __future__ import annotations

import json

from tracer.scenario import ScenarioError, list_shipped, shipped_dir
from vtdtrace.errors import EXIT_OK, fail


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
    return EXIT_OK
