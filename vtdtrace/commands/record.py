"""vtdtrace record SCENARIO --engine legacy|direct|original|final [--cx16|--no-cx16]
[--xsa399-fix|--no-xsa399-fix] [--schedule S] [-o FILE] [--force]"""

from __future__ import annotations

import sys

from ..engine_options import add_engine_options, apply_engine_options
from ..errors import fail
from ..output import open_trace_writer, write_failed

PLANNED: tuple[str, ...] = ()


def add_parser(p) -> None:
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario file or the name of a shipped one")
    add_engine_options(p)
    p.add_argument("--schedule", metavar="S", default="",
                   help="the interleaving to record, as stored in a trace header and printed by explore: "
                        "non-default choices SEQ:KV, e.g. \"41:c1 57:d0\" (docs/ENGINE.md#scheduling); "
                        "default: run to completion in listed order")
    p.add_argument("-o", "--output", metavar="FILE", help="default ./NAME.ENGINE[-nocx16][-pre-xsa399].vtdt")
    p.add_argument("--force", action="store_true", help="overwrite an existing trace")
    p.add_argument("--xen-tree", metavar="PATH",
                   help="with --engine xen-c: the Xen source tree (4.15 ... 4.20, or a patched copy) whose "
                        "VT-d functions are compiled and run (docs/REALCODE.md)")


def run(args) -> int:
    from tracer.engine import VARIANTS
    from tracer.record import default_output, make_header, record
    from tracer.sched import ScheduleError, parse_schedule

    if args.engine == "xen-c" or args.xen_tree is not None:
        return _run_xenc(args)
    if args.engine in PLANNED:
        return fail(None, f"engine variant {args.engine!r} is planned but not implemented yet "
                    f"(available: {', '.join(VARIANTS)})")
    if args.engine not in VARIANTS:
        return fail(None, f"unknown engine variant {args.engine!r} (available: {', '.join(VARIANTS)})")
    platform = _load(args)
    if isinstance(platform, int):
        return platform
    try:
        schedule = parse_schedule(args.schedule)
    except ScheduleError as exc:
        return fail(None, f"--schedule: {exc}")
    out = args.output or default_output(platform, args.engine)
    writer = open_trace_writer(out, make_header(platform, args.engine, schedule), args.force)
    if isinstance(writer, int):
        return writer
    try:
        with writer:
            result = record(platform, args.engine, writer, schedule=schedule)
    except OSError as exc:
        return write_failed(out, writer, exc)
    except ScheduleError as exc:
        writer.discard()
        return fail(None, f"--schedule: {exc} (no trace written)")
    rcs = ", ".join(f"op{i + 1}={rc}" for i, rc in enumerate(result.rcs)) or "no ops"
    cx = "cx16" if platform.knobs.cx16 else "no-cx16"
    if not platform.knobs.xsa399_fix:
        cx += ", no XSA-399 fix"
    print(f"recorded {platform.name} under {args.engine} ({cx}, {platform.knobs.cx16_source}) -> {out}")
    print(f"{result.events} events, {len(platform.ops)} ops; return codes: {rcs}")
    if result.limit:
        print(f"engine stopped: {result.limit}")
    return 0


def _load(args):
    """The scenario with the engine options applied, or the exit code after
    its one-line error."""
    from tracer.scenario import ScenarioError, load_scenario

    try:
        platform = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"vtdtrace: {exc}", file=sys.stderr)
        return 2
    apply_engine_options(platform, args)
    return platform


def _run_xenc(args) -> int:
    """--engine xen-c --xen-tree PATH: the real C of the user's tree."""
    from xenc.build import BuildError
    from xenc.record import default_output, header, prepare, record
    from xenc.runtime import CodeFailure, Unsupported
    from xenc.tree import TreeError

    if args.engine != "xen-c":
        return fail(None, "--xen-tree goes with --engine xen-c")
    if args.xen_tree is None:
        return fail(None, "--engine xen-c needs --xen-tree PATH (a Xen source tree)")
    if args.schedule:
        return fail(None, "--schedule: the xen-c engine runs one CPU in listed order (no schedules)")
    platform = _load(args)
    if isinstance(platform, int):
        return platform
    try:
        tree, built = prepare(args.xen_tree)
    except TreeError as exc:
        return fail(None, str(exc))
    except BuildError as exc:
        return fail(None, f"xen-c: {exc}")
    out = args.output or default_output(platform, tree)
    from xenc.runtime import unsupported_features
    missing = unsupported_features(platform, tree)
    if missing:
        return fail(None, "the xen-c engine does not support " + ", ".join(missing) + " yet")
    writer = open_trace_writer(out, header(platform, tree, built), args.force)
    if isinstance(writer, int):
        return writer
    try:
        with writer:
            result = record(platform, tree, built, writer)
    except OSError as exc:
        return write_failed(out, writer, exc)
    except (Unsupported, CodeFailure) as exc:
        writer.discard()
        return fail(None, f"xen-c: {exc} (no trace written)")
    rcs = ", ".join(f"op{i + 1}={rc}" for i, rc in enumerate(result.rcs)) or "no ops"
    cx = "cx16" if platform.knobs.cx16 else "no-cx16"
    print(f"recorded {platform.name} under xen-c (Xen {tree.version_name}, {cx}, {platform.knobs.cx16_source}) "
          f"-> {out}")
    print(f"{result.events} events, {len(platform.ops)} ops; return codes: {rcs}")
    return 0
