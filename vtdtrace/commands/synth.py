"""vtdtrace synth --events N [--seed S] [--engine NAME] [--cx16|--no-cx16] -o FILE [--force]"""

from __future__ import annotations

import os

from ..errors import fail


def add_parser(p) -> None:
    p.add_argument("--events", type=int, required=True, metavar="N", help="stop after at least N events")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="workload seed (default 1)")
    p.add_argument("--engine", default="direct", metavar="NAME", help="legacy or direct (default direct)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--cx16", dest="cx16", action="store_true", default=True)
    g.add_argument("--no-cx16", dest="cx16", action="store_false")
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace")


def run(args) -> int:
    from tracer.engine import VARIANTS
    from tracer.synth import synth, synth_header
    from tracer.writer import TraceWriter

    if args.engine not in VARIANTS:
        return fail(None, f"unknown engine variant {args.engine!r} (available: {', '.join(VARIANTS)})")
    if args.events < 1:
        return fail(None, "--events must be at least 1")
    out = args.output
    if os.path.isdir(out):
        return fail(out, "is a directory")
    if os.path.exists(out) and not args.force:
        return fail(out, "exists (use --force to overwrite)")
    header = synth_header(args.seed, args.engine, args.cx16, args.events)
    try:
        writer = TraceWriter(out, header, force=args.force)
    except OSError as exc:
        return fail(out, f"cannot write: {exc.strerror or exc}")
    with writer:
        events, ops = synth(args.events, args.seed, writer, args.engine, args.cx16)
    print(f"synthesised {events} events in {ops} ops (seed {args.seed}, {args.engine}) -> {out}")
    return 0
