"""vtdtrace synth --events N [--seed S] [--engine NAME] [--cx16|--no-cx16] -o FILE [--force]"""

from __future__ import annotations

from ..errors import fail
from ..output import open_trace_writer, write_failed


def add_parser(p) -> None:
    p.add_argument("--events", type=int, required=True, metavar="N", help="stop after at least N events")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="workload seed (default 1)")
    p.add_argument("--engine", default="direct", metavar="NAME", help="legacy, direct or original (default direct)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cx16", dest="cx16", action="store_true", default=True)
    g.add_argument("--no-cx16", dest="cx16", action="store_false")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace")


def run(args) -> int:
    from tracer.engine import VARIANTS
    from tracer.synth import synth, synth_header

    if args.engine not in VARIANTS:
        return fail(None, f"unknown engine variant {args.engine!r} (available: {', '.join(VARIANTS)})")
    if args.events < 1:
        return fail(None, "--events must be at least 1")
    out = args.output
    writer = open_trace_writer(out, synth_header(args.seed, args.engine, args.cx16, args.events), args.force)
    if isinstance(writer, int):
        return writer
    try:
        with writer:
            events, ops = synth(args.events, args.seed, writer, args.engine, args.cx16)
    except OSError as exc:
        return write_failed(out, writer, exc)
    print(f"synthesised {events} events in {ops} ops (seed {args.seed}, {args.engine}) -> {out}")
    return 0
