"""vtdtrace info TRACE [--json]

Header (format, tool, engine, scenario, platform), event and chunk counts and
an integrity verdict.  The verdict is established by decoding every chunk, so
"ok" means every event is readable.  Exit 0 when intact, 3 when damaged
(after printing), 2 when the file is not a trace.
"""

from __future__ import annotations

import datetime
import sys

from ..errors import EXIT_DAMAGED, EXIT_OK, fail


def add_parser(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    from replay.jsonout import JSON_SHAPE, dumps, json_safe
    from replay.reader import NotATrace, open_trace

    try:
        trace = open_trace(args.trace)
    except NotATrace as exc:
        return fail(args.trace, exc.message)
    with trace:
        for _ in trace.iter_chunks():   # decode everything: the verdict must be true
            pass
        h = trace.header
        if args.json:
            fmt = h.get("format")
            doc = {
                "shape_version": JSON_SHAPE,
                "trace": args.trace,
                "format": json_safe(fmt) if isinstance(fmt, dict) else None,
                "schema_version": trace.schema.version if trace.format_version else None,
                "tool": json_safe(h.get("tool")),
                "tool_version": json_safe(h.get("tool_version")),
                "engine": json_safe(h.get("engine")),
                "scenario": json_safe(h.get("scenario")),
                "platform": json_safe(h.get("platform")),
                "schedule": json_safe(h.get("schedule")),
                "created": json_safe(h.get("created")),
                "events": trace.count,
                "chunks": len(trace.chunks),
                "bytes": trace.size,
                "complete": trace.complete,
                "integrity": "ok" if trace.stop is None else trace.stop.kind,
                "stop": trace.stop.to_json() if trace.stop else None,
            }
            sys.stdout.write(dumps(doc) + "\n")
        else:
            sys.stdout.write("".join(f"{k:<10} {v}\n" for k, v in _text_lines(args.trace, trace)))
        sys.stdout.flush()
        if trace.stop is not None:
            return fail(args.trace, trace.stop.describe(), EXIT_DAMAGED)
    return EXIT_OK


def _text_lines(path, trace):
    h = trace.header
    yield "trace", path
    if trace.format_version:
        s = trace.schema
        yield "format", (f"vtdtrace {trace.format_version[0]}.{trace.format_version[1]}, schema {s.version} "
                         f"({len(s.kinds)} kinds, {len(s.funcs)} functions)")
    if "tool_version" in h or "tool" in h:
        yield "tool", " ".join(_s(h[k]) for k in ("tool", "tool_version") if k in h)
    if "engine" in h:
        yield "engine", _mapping(h["engine"], first="name")
    sc = h.get("scenario")
    if isinstance(sc, dict):
        line = _s(sc.get("name", "?"))
        if sc.get("file"):
            line += f" ({_s(sc['file'])})"
        if sc.get("description"):
            line += f": {_s(sc['description'])}"
        yield "scenario", line
    elif sc is not None:
        yield "scenario", _s(sc)
    pf = h.get("platform")
    if isinstance(pf, dict):
        yield "platform", _platform(pf)
        if isinstance(pf.get("knobs"), dict):
            yield "knobs", _mapping(pf["knobs"])
    if "schedule" in h:
        yield "schedule", _schedule(h["schedule"])
    if "created" in h:
        c = h["created"]
        when = _s(c)
        if type(c) is int and 0 <= c < 253402300800:
            when = datetime.datetime.fromtimestamp(c, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        yield "created", when
    if trace.format_version:
        span = f" (seq 1..{trace.count})" if trace.count else ""
        chunks = f"{len(trace.chunks)} chunk{'' if len(trace.chunks) == 1 else 's'}"
        yield "events", f"{trace.count}{span} in {chunks}, {trace.size} bytes"
    yield "integrity", "ok" if trace.stop is None else trace.stop.describe()


def _schedule(sched) -> str:
    """The header's ``schedule``: how many CPUs ran and the interleaving as
    ``record --schedule`` takes it (none: run to completion in listed order)."""
    if not isinstance(sched, dict):
        return _s(sched)
    cpus = sched.get("cpus")
    n = f"{_s(cpus)} CPU{'' if cpus == 1 else 's'}"
    choices = sched.get("choices")
    if choices in ("", None):
        return f"{n}, default (run to completion in listed order)"
    return f"{n}, choices {_s(choices)}"


def _platform(pf: dict) -> str:
    def n(key, word):
        items = pf.get(key)
        k = len(items) if isinstance(items, list) else 0
        return f"{k} {word}{'' if k == 1 else 's'}"

    text = ", ".join([n("iommus", "IOMMU"), n("devices", "device"), n("rmrrs", "RMRR"), n("domains", "domain")])
    doms = _domains(pf.get("domains"))
    return text + (f" ({doms})" if doms else "")


SHOWN_DOMAINS = 8       # up to this many are all named; beyond, the first few and the system domains
FIRST_DOMAINS = 4


def _domains(items) -> str:
    """The platform's domains as `name=id`, summarised when there are many (a
    synth platform has thousands of guests): the first few, the system
    domains (dom_io & co., ids from 0x7FF0 up: what a reader looks for), and
    how many more.  `info --json` lists them all."""
    doms = []
    for d in items if isinstance(items, list) else ():
        if isinstance(d, list) and len(d) >= 2:
            hw = " hw" if len(d) > 2 and d[2] is True else ""
            reserved = type(d[0]) is int and d[0] >= 0x7FF0
            # Reserved ids as Xen's headers write them (DOMID_IO is 0x7FF1).
            domid = f"{d[0]:#x}" if reserved else _s(d[0])
            doms.append((f"{_s(d[1])}={domid}{hw}", reserved))
    if len(doms) <= SHOWN_DOMAINS:
        return ", ".join(text for text, _ in doms)
    guests = [text for text, system in doms if not system]
    system = [text for text, system in doms if system]
    shown = guests[:FIRST_DOMAINS]
    more = len(doms) - len(shown) - len(system)
    return ", ".join(shown + [f"... {more} more"] + system) + "; info --json lists all"


def _mapping(value, first=None) -> str:
    if not isinstance(value, dict):
        return _s(value)
    parts = [_s(value[first])] if first and first in value else []
    parts += [f"{_s(k)}={_s(v)}" for k, v in value.items() if k != first]
    return " ".join(parts)


def _s(v) -> str:
    """A header value as one printable line (headers are untrusted input)."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "-"
    if isinstance(v, str):
        s = v
    elif isinstance(v, (int, float)):
        s = str(v)
    else:
        from replay.jsonout import dumps, json_safe
        s = dumps(json_safe(v))
    from replay.jsonout import safe_text
    return safe_text(s)          # escapes newlines and tabs too: one line per value
