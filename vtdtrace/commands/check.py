"""vtdtrace check TRACE [--json] [--kind K]... [--severity S] [--summary] [--no-cache]

The hazard findings of a trace (replay.hazards; docs/HAZARDS.md).  Text: a
one-screen summary by kind and by device (vtdtrace/finding_summary.py), then
one line per finding, grouped by device, with the seq range and the Xen step
labels at both ends (--summary stops after the summary).  --severity S lists
only findings of severity S or worse (benign < warning < hazard); the summary
still counts them all.  --json: the object

    {"trace", "engine", "events", "complete",
     "findings": [{"kind", "severity", "device", "rid", "iommu", "start", "end",
                   "open_at_end", "start_label", "end_label", "detail"}],
     "counts": {KIND: N for every kind}}

findings sorted by (start, kind, iommu, rid); ``counts`` counts the findings
listed (with --kind or --severity, what is not asked for is 0).

Exit: 0 when no finding of severity ``hazard`` among the kinds asked for, 1
when there is one, 3 when the trace is damaged (after reporting the findings
of its readable part; 3 wins over 1), 2 for usage errors and files that are
not traces.  --severity never changes the exit status (hazards are listed at
every level).  The findings come from the trace's sidecar when it holds them
for this trace as it is now and for this build (what `view`, `show` and
`diff` leave there), and are computed and stored there otherwise
(replay.hazards.findings_for_trace, under the sidecar's trust rules);
--no-cache computes them from the trace and neither reads nor writes it.
"""

from __future__ import annotations

import sys

from ..errors import EXIT_DAMAGED, EXIT_FINDING, EXIT_OK, EXIT_USAGE, fail


def add_parser(p) -> None:
    from replay.hazards.findings import KINDS

    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--json", action="store_true", help="the check object (docs/CLI.md)")
    p.add_argument("--kind", action="append", default=None, metavar="K",
                   help=f"only findings of kind K (repeatable, or comma-separated): {', '.join(KINDS)}")
    p.add_argument("--severity", choices=("hazard", "warning", "benign"), default="benign", metavar="S",
                   help="list only findings of severity S or worse: hazard, warning or benign (the default: "
                        "all); the summary and the exit status still count every finding")
    p.add_argument("--summary", action="store_true",
                   help="text: print the summary by kind and device, not the findings one by one")
    p.add_argument("--no-cache", action="store_true",
                   help="compute the findings from the trace; neither read nor write its sidecar")


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
    from replay.hazards import HAZARD, SEVERITY_RANK, counts, findings_for_trace
    from replay.jsonout import JSON_SHAPE, dumps, json_safe
    from replay.reader import NotATrace

    try:
        kinds = parse_kinds(args.kind)
    except ValueError as exc:
        return fail(None, str(exc), EXIT_USAGE)
    try:
        result = findings_for_trace(args.trace, sidecar=not args.no_cache)
    except NotATrace as exc:
        return fail(args.trace, exc.message)
    findings = [f for f in result.findings if f.kind in kinds]
    least = SEVERITY_RANK[args.severity]
    listed = [f for f in findings if SEVERITY_RANK[f.severity] >= least]
    header = result.header if isinstance(result.header, dict) else {}
    out = sys.stdout
    if args.json:
        # Written finding by finding: the object `dumps` would give for the
        # whole document, byte for byte, without holding ~5*10^5 finding
        # dicts (and their detail sentences) at once on a 10^7-event trace.
        head = {
            "shape_version": JSON_SHAPE,
            "trace": args.trace,
            "engine": json_safe(header.get("engine")),
            "events": result.events,
            "complete": result.complete,
        }
        out.write(dumps(head)[:-1] + ',"findings":[')
        for i, f in enumerate(listed):
            out.write(("," if i else "") + dumps(f.to_json(keep=False)))
        out.write('],"counts":' + dumps(counts(listed)) + "}\n")
    else:
        for line in text_report_lines(args.trace, header, result, findings, kinds,
                                      listed=None if args.summary else listed, severity=args.severity):
            out.write(line + "\n")
    sys.stdout.flush()
    if not result.complete:
        stop = result.stop
        what = stop.describe() if stop is not None else "the trace ends early"
        return fail(args.trace, f"damaged: {what}; findings cover events 1..{result.events}", EXIT_DAMAGED)
    return EXIT_FINDING if any(f.severity == HAZARD for f in findings) else EXIT_OK


def _engine(header) -> str:
    eng = header.get("engine")
    if not isinstance(eng, dict):
        return "engine ?"
    name = eng.get("name")
    text = f"engine {name if isinstance(name, str) else '?'}"
    opts = []
    if eng.get("cx16") is False:
        opts.append("no cx16")
    elif eng.get("cx16") is True:
        opts.append("cx16")
    if eng.get("xsa399_fix") is False:
        opts.append("no XSA-399 fix")
    if opts:
        text += f" ({', '.join(opts)})"
    return text


def _clean(s) -> str:
    """Trace-derived text on one printable line."""
    from replay.jsonout import safe_text
    return safe_text(s)


def _range(f) -> str:
    from replay.hazards.findings import boundary_label
    start = f"{f.start} {boundary_label(f.start_label)}"
    if f.end is None:
        return f"seq {start} -> open at end"
    return f"seq {start} -> {f.end} {boundary_label(f.end_label)}"


def text_report(path, header, result, findings, kinds, listed=(), severity="benign") -> str:
    """The text report as one string (text_report_lines)."""
    return "\n".join(text_report_lines(path, header, result, findings, kinds, listed, severity)) + "\n"


def text_report_lines(path, header, result, findings, kinds, listed=(), severity="benign"):
    """The text report, line by line: head line, summary, the `listed`
    findings by device (None: the summary only), the closing count of all
    `findings`.  A generator, so `check` writes a long trace's report as it
    goes instead of building it whole."""
    from replay.hazards import BENIGN, HAZARD, WARNING

    from ..finding_summary import summary_lines

    if listed == ():
        listed = findings
    out: list[str] = []
    scen = header.get("scenario")
    name = scen.get("name") if isinstance(scen, dict) else None
    state = "complete" if result.complete else f"damaged, readable part {result.events} events"
    head = f"{path}: {_clean(name) + ', ' if isinstance(name, str) else ''}{_engine(header)}, "
    head += f"{result.events} events ({state})"
    out.append(_clean(head))
    if findings:
        out.append("")
        out += summary_lines(findings, _all_kinds(), _clean)
    groups: dict = {}
    for f in listed or ():
        groups.setdefault(f.device, []).append(f)
    for dev in sorted(groups, key=lambda d: (d is None, d or "")):
        out.append("")
        out.append(_clean(dev) if dev is not None else "(no device)")
        yield from out
        out.clear()
        for f in groups[dev]:
            rid = f" rid {_clean(f.rid)}" if f.rid and f.rid != dev else ""
            yield f"  {f.severity:<7} {f.kind:<15} {_range(f)}{rid}: {_clean(f.detail_once())}"
    n = {s: sum(1 for f in findings if f.severity == s) for s in (HAZARD, WARNING, BENIGN)}
    out.append("")
    which = "" if len(kinds) == len(set(kinds)) and set(kinds) == set(_all_kinds()) else \
        f" (kinds: {', '.join(kinds)})"
    if findings:
        shown = ""
        if listed is None:
            shown = "; listed: none (--summary)"
        elif len(listed) != len(findings):
            shown = f"; listed: {len(listed)} of severity {severity}{' or worse' if severity != HAZARD else ''}"
        out.append(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}{which}: "
                   f"{n[HAZARD]} hazard, {n[WARNING]} warning, {n[BENIGN]} benign{shown}")
    else:
        out.append(f"no findings{which}")
    yield from out


def _all_kinds():
    from replay.hazards.findings import KINDS
    return KINDS
