"""vtdtrace log TRACE [--from N] [--to M] [--kind K]... [--rid RID] [--jsonl]

Events as aligned text columns (seq, cpu -- "dev" for a device's DMA --, op,
func, label, kind, decoded args) or one JSON object per line (the same bytes as `export --format
jsonl`).  --from/--to are inclusive decimal seqs, refused (exit 2) past the
end of a complete trace, as `show --at` is; --kind is repeatable and takes
comma-separated lists; --rid SSSS:BB:DD.F (or BB:DD.F) keeps the events about that
requester ID.  A damaged trace prints what is readable, then one line on
stderr, exit 3.
"""

from __future__ import annotations

import sys

from ..errors import EXIT_DAMAGED, EXIT_OK, fail
from ..positions import beyond_end, event_seq

_BATCH = 4096   # lines per write: printing is the cost at millions of events


def add_parser(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--from", dest="start", type=event_seq, default=1, metavar="N",
                   help="first event (seq, inclusive; default 1)")
    p.add_argument("--to", dest="end", type=event_seq, default=None, metavar="M",
                   help="last event (seq, inclusive; default the last)")
    p.add_argument("--kind", action="append", default=[], metavar="K",
                   help="only these event kinds (repeatable, comma-separated)")
    p.add_argument("--rid", metavar="RID", help="only events about requester ID SSSS:BB:DD.F (or BB:DD.F: segment 0)")
    p.add_argument("--jsonl", action="store_true", help="one JSON object per line")


def run(args) -> int:
    from replay.jsonout import EventPresenter, RidFilter
    from replay.reader import NotATrace, open_trace
    from tracer.platform import parse_bdf
    from tracer.schema import I_KIND

    if args.end is not None and args.end < args.start:
        return fail(None, f"--to {args.end} is before --from {args.start}")
    rid = None
    if args.rid is not None:
        try:
            rid = parse_bdf(args.rid, short_ok=True)
        except ValueError as exc:
            return fail(None, f"--rid: {exc}")
    try:
        trace = open_trace(args.trace)
    except NotATrace as exc:
        return fail(args.trace, exc.message)
    with trace:
        # Past the end of a complete trace: a usage error (vtdtrace/positions.py).
        # Of a damaged one: what is readable in the range (perhaps nothing), then
        # exit 3.  The default --from 1 of an empty trace is no position asked for.
        for option, n in (("--from", args.start), ("--to", args.end)):
            past = None if n is None or trace.stop is not None else beyond_end(option, n, trace.count)
            if past and not (option == "--from" and n == 1):
                return fail(args.trace, past)
        codes = None
        if args.kind:
            names = [n.strip() for arg in args.kind for n in arg.split(",") if n.strip()]
            by_name = trace.schema.kind_by_name
            unknown = [n for n in names if n not in by_name]
            if unknown:
                known = ", ".join(trace.schema.kind_names)
                return fail(args.trace, f"unknown event kind {unknown[0]!r} (known: {known})")
            codes = frozenset(by_name[n].code for n in names)
        pres = EventPresenter(trace.schema, trace.header)
        keep = RidFilter(pres, *rid) if rid else None
        stop = None if args.end is None else args.end + 1
        out = sys.stdout
        if args.jsonl:
            render = pres.json_line
        else:
            render, header = _text_renderer(pres, trace.count)
            out.write(header + "\n")
        batch: list[str] = []
        for ev in trace.events(args.start, stop):
            if codes is not None and (not isinstance(ev, (list, tuple)) or ev[I_KIND] not in codes):
                continue
            if keep is not None and not keep(ev):
                continue
            batch.append(render(ev))
            if len(batch) >= _BATCH:
                out.write("\n".join(batch) + "\n")
                batch.clear()
        if batch:
            out.write("\n".join(batch) + "\n")
        out.flush()
        if trace.stop is not None:
            return fail(args.trace, trace.stop.describe(), EXIT_DAMAGED)
    return EXIT_OK


def _text_renderer(pres, count: int):
    from replay.jsonout import safe_text
    from tracer.schema import I_CPU, I_FUNC, I_LABEL, I_OP, I_SEQ

    sw = max(3, len(str(count)))
    fw, kw = min(pres.func_width, 32), pres.kind_width
    header = f"{'seq':>{sw}} {'cpu':>3} {'op':>3} {'func':<{fw}} {'label':<6} {'kind':<{kw}} args"

    def render(ev) -> str:
        k = pres._kind(ev)
        if k is None:
            return f"{'?':>{sw}} {'':>3} {'':>3} {'':<{fw}} {'':<6} {'?':<{kw}} {pres.text_args(ev)}"
        # A device's DMA runs on no CPU: cpu -1 in the event, "dev" here.
        cpu = "dev" if ev[I_CPU] == -1 else _cell(ev[I_CPU])
        line = (f"{_cell(ev[I_SEQ]):>{sw}} {cpu:>3} {_cell(ev[I_OP]):>3} "
                f"{_cell(pres.func_name(ev[I_FUNC])):<{fw}} {_cell(ev[I_LABEL]):<6} {safe_text(k[0].name):<{kw}} "
                f"{pres.text_args(ev)}")
        return line.rstrip()

    return render, header


def _cell(v) -> str:
    from replay.jsonout import safe_text

    if isinstance(v, (int, str)) and not isinstance(v, bool):
        return safe_text(str(v))
    return safe_text(repr(v))
