"""vtdtrace check TRACE [--json] [--kind K]...

The hazard findings of a trace (replay.hazards; docs/HAZARDS.md).  Text: one
line per finding, grouped by device, with the seq range and the Xen step
labels at both ends.  --json: the object of docs/CLI.md#check-json

    {"trace", "engine", "events", "complete",
     "findings": [{"kind", "severity", "device", "rid", "iommu", "start", "end",
                   "open_at_end", "start_label", "end_label", "detail"}],
     "counts": {KIND: N for every kind}}

findings sorted by (start, kind, iommu, rid); ``counts`` counts the findings
listed (with --kind, the kinds not asked for are 0).

Exit: 0 when no finding of severity ``hazard`` among the kinds asked for, 1
when there is one, 3 when the trace is damaged (after reporting the findings
of its readable part; 3 wins over 1), 2 for usage errors and files that are
not traces.  The findings are computed from the trace every time (no sidecar
cache): a CI gate should not trust a stale cache.
"""

from __future__ import annotations

import sys

from ..errors import EXIT_DAMAGED, EXIT_FINDING, EXIT_OK, EXIT_USAGE, fail


def add_parser(p) -> None:
    from replay.hazards.findings import KINDS

    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--json", action="store_true", help="the check object of docs/CLI.md#check-json")
    p.add_argument("--kind", action="append", default=None, metavar="K",
                   help=f"only findings of kind K (repeatable, or comma-separated): {', '.join(KINDS)}")


def parse_kinds(values):
    """--kind values -> tuple of kinds in catalogue order; ValueError naming
    the first unknown one."""
    from replay.hazards.findings import KINDS

    if not values:
        return KINDS
    asked = set()
    for v in values:
        for k in v.split(","):
            k = k.strip()
            if not k:
                continue
            if k not in KINDS:
                raise ValueError(f"unknown finding kind {k!r} (expected one of: {', '.join(KINDS)})")
            asked.add(k)
    if not asked:
        raise ValueError("--kind needs a finding kind")
    return tuple(k for k in KINDS if k in asked)


def run(args) -> int:
    """Broken pipes and internal errors are the front door's (vtdtrace.cli.run_command)."""
    from replay.hazards import HAZARD, counts, findings_for_trace
    from replay.jsonout import dumps, json_safe
    from replay.reader import NotATrace

    try:
        kinds = parse_kinds(args.kind)
    except ValueError as exc:
        return fail(None, str(exc), EXIT_USAGE)
    try:
        result = findings_for_trace(args.trace)
    except NotATrace as exc:
        return fail(args.trace, exc.message)
    findings = [f for f in result.findings if f.kind in kinds]
    header = result.header if isinstance(result.header, dict) else {}
    if args.json:
        doc = {
            "trace": args.trace,
            "engine": json_safe(header.get("engine")),
            "events": result.events,
            "complete": result.complete,
            "findings": [f.to_json() for f in findings],
            "counts": counts(findings),
        }
        sys.stdout.write(dumps(doc) + "\n")
    else:
        sys.stdout.write(text_report(args.trace, header, result, findings, kinds))
    sys.stdout.flush()
    if not result.complete:
        stop = result.stop
        what = stop.describe() if hasattr(stop, "describe") else str(stop)
        return fail(args.trace, f"damaged: {what}; findings cover events 1..{result.events}", EXIT_DAMAGED)
    return EXIT_FINDING if any(f.severity == HAZARD for f in findings) else EXIT_OK


def _engine(header) -> str:
    eng = header.get("engine")
    if not isinstance(eng, dict):
        return "engine ?"
    name = eng.get("name")
    text = f"engine {name if isinstance(name, str) else '?'}"
    if eng.get("cx16") is False:
        text += " (no cx16)"
    elif eng.get("cx16") is True:
        text += " (cx16)"
    return text


def _clean(s) -> str:
    """Trace-derived text on one printable line."""
    s = " ".join(str(s).split())
    return "".join(c if c.isprintable() else "?" for c in s)


def _range(f) -> str:
    start = f"{f.start} {f.start_label}" if f.start_label else f"{f.start}"
    if f.end is None:
        return f"seq {start} -> open at end"
    end = f"{f.end} {f.end_label}" if f.end_label else f"{f.end}"
    return f"seq {start} -> {end}"


def text_report(path, header, result, findings, kinds) -> str:
    from replay.hazards import BENIGN, HAZARD, WARNING

    out = []
    scen = header.get("scenario")
    name = scen.get("name") if isinstance(scen, dict) else None
    state = "complete" if result.complete else f"damaged, readable part {result.events} events"
    head = f"{path}: {_clean(name) + ', ' if isinstance(name, str) else ''}{_engine(header)}, "
    head += f"{result.events} events ({state})"
    out.append(_clean(head))
    groups: dict = {}
    for f in findings:
        groups.setdefault(f.device, []).append(f)
    for dev in sorted(groups, key=lambda d: (d is None, d or "")):
        out.append("")
        out.append(_clean(dev) if dev is not None else "(no device)")
        for f in groups[dev]:
            rid = f" rid {_clean(f.rid)}" if f.rid and f.rid != dev else ""
            out.append(f"  {f.severity:<7} {f.kind:<15} {_range(f)}{rid}: {_clean(f.detail)}")
    n = {s: sum(1 for f in findings if f.severity == s) for s in (HAZARD, WARNING, BENIGN)}
    out.append("")
    which = "" if len(kinds) == len(set(kinds)) and set(kinds) == set(_all_kinds()) else \
        f" (kinds: {', '.join(kinds)})"
    if findings:
        out.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}{which}: "
                   f"{n[HAZARD]} hazard, {n[WARNING]} warning, {n[BENIGN]} benign")
    else:
        out.append(f"no findings{which}")
    return "\n".join(out) + "\n"


def _all_kinds():
    from replay.hazards.findings import KINDS
    return KINDS
