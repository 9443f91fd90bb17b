"""vtdtrace show TRACE [--at N] [--json]

The replayed IOMMU state after event N (default: the last event; 0 = the
platform before any event): context entries decoded one per line with the
domains owning their DID and their page tables, DIDs, what the caches may
still hold, device owners, locks, call stacks and the hazard findings open
at that step.  --json prints the object of docs/CLI.md#show-json.  Exit 2 for a file that is not a trace or a step beyond the end;
3 for a damaged trace, after printing the state of its readable part.
"""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import EXIT_DAMAGED, EXIT_OK, fail


def _step(text: str) -> int:
    try:
        n = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a step number, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"steps start at 0 (the platform before any event), got {n}")
    return n


def add_parser(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--at", type=_step, default=None, metavar="N",
                   help="state after event N (default: the last; 0 = before any event)")
    p.add_argument("--json", action="store_true", help="the show object of docs/CLI.md#show-json")


def run(args) -> int:
    from replay.reader import NotATrace
    from replay.session import ReplaySession

    try:
        session = ReplaySession(args.trace)
    except NotATrace as exc:
        return fail(args.trace, exc.message)
    with session:
        session.findings = _findings(args.trace)
        n = session.count if args.at is None else args.at
        if n > session.count:
            what = "the readable part ends" if session.stop is not None else "the trace ends"
            return fail(args.trace, f"--at {n} is beyond the end: {what} at event {session.count}")
        if args.json:
            sys.stdout.write(json.dumps(session.show_dict(n), indent=2, ensure_ascii=True) + "\n")
        else:
            sys.stdout.write(session.show_text(n))
        sys.stdout.flush()
        if session.stop is not None:
            return fail(args.trace, f"damaged: {session.stop.describe()}", EXIT_DAMAGED)
    return EXIT_OK


def _findings(path):
    """The hazard findings as an index with open_at(n) (cached in the sidecar
    by replay.hazards), or None when the analysers are not available."""
    try:
        from replay.hazards import FindingIndex, findings_for_trace
    except ImportError:
        return None
    return FindingIndex(findings_for_trace(path, sidecar=True).findings)
