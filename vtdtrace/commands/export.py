"""vtdtrace export TRACE --format chrome|jsonl [-o FILE] [--force]

chrome: Chrome Trace Event JSON for ui.perfetto.dev / chrome://tracing (one
process per IOMMU, one thread per requester ID, lock holds and calls as
slices, entry writes and flushes as instants; replay/export_chrome.py).
jsonl: one JSON object per event, the same bytes as `vtdtrace log --jsonl`.
Output goes to stdout unless -o names a file, which is never overwritten
without --force (vtdtrace/output.py has the rule for every writer).  A damaged trace exports its
readable part, then one line on stderr, exit 3.
"""

from __future__ import annotations

import os
import sys

from ..errors import EXIT_DAMAGED, EXIT_OK, fail
from ..output import open_text_output

_BATCH = 4096


def add_parser(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="a .vtdt trace file")
    p.add_argument("--format", required=True, choices=("chrome", "jsonl"), help="output format")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout (- is stdout)")
    p.add_argument("--force", action="store_true", help="overwrite an existing FILE")


def run(args) -> int:
    from replay.reader import NotATrace, open_trace

    try:
        trace = open_trace(args.trace)
    except NotATrace as exc:
        return fail(args.trace, exc.message)
    with trace:
        if args.output not in (None, "-") and _same_file(args.output, args.trace):
            return fail(args.output, "is the trace being exported; choose another file")
        out = open_text_output(args.output, args.force)
        if isinstance(out, int):
            return out
        try:
            if args.format == "jsonl":
                _jsonl(trace, out)
            else:
                _chrome(trace, out, args.trace)
            out.flush()
            if out is not sys.stdout:
                out.close()
        except BrokenPipeError:
            raise
        except OSError as exc:
            if out is sys.stdout:
                raise
            # Disk full or a size limit: no half-written export left behind.
            try:
                out.close()
            except OSError:
                pass
            try:
                os.unlink(args.output)
            except OSError:
                pass
            return fail(args.output, f"cannot write: {exc.strerror or exc} (partial output removed)")
        finally:
            if out is not sys.stdout and not out.closed:
                out.close()
        if trace.stop is not None:
            return fail(args.trace, trace.stop.describe(), EXIT_DAMAGED)
    return EXIT_OK


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _jsonl(trace, out) -> None:
    """Exactly `log --jsonl` with no filters: json_line(ev) + "\\n" per event."""
    from replay.jsonout import EventPresenter

    pres = EventPresenter(trace.schema, trace.header)
    batch: list[str] = []
    for ev in trace.events():
        batch.append(pres.json_line(ev))
        if len(batch) >= _BATCH:
            out.write("\n".join(batch) + "\n")
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")


def _chrome(trace, out, path) -> None:
    from replay.codes import event_translator
    from replay.export_chrome import export_chrome
    from replay.reader import current_schema

    translate = event_translator(trace.schema)
    if translate is None:
        events = trace.events()
    else:
        events = (ev for chunk in trace.iter_chunks() for ev in translate(chunk))
    export_chrome(events, trace.header, current_schema(), out, findings=_findings(path), stop=lambda: trace.stop)


def _findings(path):
    """Hazard windows for the async lanes (cached in the sidecar by
    replay.hazards), when the analysers are available."""
    try:
        from replay.hazards import findings_for_trace
    except ImportError:
        return ()
    return findings_for_trace(path, sidecar=True).findings
