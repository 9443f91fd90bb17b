"""vtdtrace show TRACE [--at N] [--json]

The replayed IOMMU state after event N (default: the last event; 0 = the
platform before any event): context entries decoded one per line with the
domains owning their DID and their page tables (a mismatch marked ≠) and
SLPTPTR with the table and levels it selects, DIDs, what the caches may
still hold, device owners, every domain's page-table root, the identity maps
with their reference counts, locks, call stacks and the hazard findings
open at that step.  A trace of several CPUs ends with a CPUs section: each
CPU's op, the locks it holds, the lock it spins on and who holds it, its
call stack (80 columns).  --json prints the object of docs/CLI.md#show-json.  Exit 2 for a file that
is not a trace or a step beyond the end of a complete trace; 3 for a damaged
trace, after printing the state of its readable part (for a step beyond it:
the state after its last readable event).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from ..errors import EXIT_DAMAGED, EXIT_OK, fail
from ..positions import step


def add_parser(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--at", type=step, default=None, metavar="N",
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
        if n > session.count and session.stop is None:
            return fail(args.trace, f"--at {n} is beyond the end: the trace ends at event {session.count}")
        # A damaged trace: at most its readable part.  The answer may find
        # damage the sidecar did not know of (a chunk failing its CRC): the
        # session then replays the readable part again and shrinks.
        shown = min(n, session.count)
        for _ in range(3):
            try:
                out: dict[str, Any] | str = session.show_dict(shown) if args.json else session.show_text(shown)
                break
            except IndexError:
                shown = min(shown, session.count)
        else:
            return fail(args.trace, f"damaged: {session.stop.describe() if session.stop else 'unreadable'}",
                        EXIT_DAMAGED)
        if session.damage_found:
            # Findings cached for the intact file are not this file's.
            session.findings = _findings(args.trace, cached=False)
            out = session.show_dict(shown) if args.json else session.show_text(shown)
        if isinstance(out, dict):
            from replay.jsonout import JSON_SHAPE
            sys.stdout.write(json.dumps({"shape_version": JSON_SHAPE, **out}, indent=2, ensure_ascii=True) + "\n")
        else:
            sys.stdout.write(_encodable(out))
        sys.stdout.flush()
        if session.stop is not None:
            beyond = (f"; --at {n} is beyond the readable part, shown: the state after event {shown}"
                      if shown < n else "")
            return fail(args.trace, f"damaged: {session.stop.describe()}{beyond}", EXIT_DAMAGED)
    return EXIT_OK


def _encodable(text: str) -> str:
    """The text, with the mismatch mark spelt != where stdout's encoding
    has no ≠ (a Latin-1 or ASCII terminal): one line, never a traceback."""
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return text.replace("≠", "!=")
    return text


def _findings(path, cached: bool = True):
    """The hazard findings as an index with open_at(n) (cached in the sidecar
    by replay.hazards), or None when the analysers are not available."""
    try:
        from replay.hazards import FindingIndex, findings_for_trace
    except ImportError:
        return None
    return FindingIndex(findings_for_trace(path, sidecar=cached).findings)
