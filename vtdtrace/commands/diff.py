"""vtdtrace diff A B [--json] [--hide-label-only]

Aligns two traces by operation, then by call structure and lock-protected
sections, and reports the first divergence, what differs in each aligned
operation, the state difference at aligned operation boundaries and the
hazard windows one trace has and the other lacks, or has with another extent
(replay/diff).  Rows that differ only in their step label -- the two engines
name the same step PMx / MOx -- are counted apart from rows whose values
differ and marked ``=``; --hide-label-only leaves them out of the listing.

Exit 0 when the traces are equivalent (the same event payloads; header-only
differences do not count), 1 when they differ (two different scenarios
included), 2 for a usage error or a file that is not a trace, 3 when either
trace is damaged (after reporting the comparison of the readable parts).
"""

from __future__ import annotations

import sys

from ..errors import EXIT_DAMAGED, fail


def add_parser(p) -> None:
    p.add_argument("a", metavar="A", help="the first trace (.vtdt)")
    p.add_argument("b", metavar="B", help="the second trace (.vtdt)")
    p.add_argument("--json", action="store_true", help="machine-readable output (docs/CLI.md)")
    p.add_argument("--hide-label-only", action="store_true",
                   help="leave out of the listing the rows that differ only in their step label "
                        "(PM4 / MO5: the same values); they are still counted, and still a difference")


def run(args) -> int:
    # A closed pipe, an output that cannot be written and a bug are
    # answered by the command boundary (vtdtrace.cli.main), one line each.
    from replay.diff import DiffInputError, diff_files, render_text
    from replay.jsonout import JSON_SHAPE, dumps

    try:
        report = diff_files(args.a, args.b)
    except DiffInputError as exc:
        return fail(exc.path, exc.message)
    out = sys.stdout
    if args.json:
        out.write(dumps({"shape_version": JSON_SHAPE, **report.to_json()}) + "\n")
    else:
        out.write(render_text(report, hide_label_only=args.hide_label_only))
    out.flush()
    code = report.exit_code
    if code == EXIT_DAMAGED:
        for path, info in ((args.a, report.a), (args.b, report.b)):
            stop = info.get("stop")
            if stop:
                return fail(path, f"{stop['kind']} at byte {stop['offset']} (chunk {stop['chunk']}, "
                                  f"last good seq {stop['last_good_seq']}): {stop['message']}", EXIT_DAMAGED)
    return code
