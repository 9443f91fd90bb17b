"""Opening output files, under one rule for every command that writes one:

  * an existing file is never overwritten without ``--force`` (``record``,
    ``synth``, ``export -o``), and a directory never is;
  * ``-`` is not a file name: ``export -o -`` writes to stdout (as without
    ``-o``); ``record``/``synth -o -`` are refused, because a trace is a
    binary file whose index is written last and must be seekable.

Every refusal is one line and exit 2, before any work is done.  A write
that fails on the way (disk full, file size limit, I/O error) is one line
naming the file and the cause, exit 2, and the partial file is removed so
that a retry is not refused as "exists".  (A recording that is killed keeps
its readable prefix: only a failed write discards.)
"""

from __future__ import annotations

import os

from .errors import fail


def open_trace_writer(out: str, header: dict, force: bool):
    """A TraceWriter for `out`, or the exit code after a one-line error."""
    from tracer.writer import TraceWriter

    if out == "-":
        return fail(None, "-o -: a trace cannot be written to stdout (it is binary and written with seeks); "
                          "name a file")
    refused = refuse_overwrite(out, force)
    if refused is not None:
        return refused
    try:
        return TraceWriter(out, header, force=force)
    except FileExistsError:
        return fail(out, "exists (use --force to overwrite)")
    except OSError as exc:
        # The writer removes a file it created but could not write the header into.
        removed = " (partial output removed)" if getattr(exc, "vtdtrace_removed", False) else ""
        return fail(out, f"cannot write: {exc.strerror or exc}{removed}")


def write_failed(out: str, writer, exc: OSError) -> int:
    """The one-line report of a failed write into ``writer``; removes its file."""
    writer.discard()
    return fail(out, f"cannot write: {exc.strerror or exc} (partial output removed)")


def refuse_overwrite(out: str, force: bool) -> int | None:
    """The exit code after a one-line refusal to write `out`, or None when
    it may be written."""
    if os.path.isdir(out):
        return fail(out, "is a directory")
    if os.path.exists(out) and not force:
        return fail(out, "exists (use --force to overwrite)")
    return None


def open_text_output(out: str | None, force: bool):
    """stdout for no -o or ``-o -``; else a new text file, or the exit code
    after a one-line refusal.  The caller closes what is not sys.stdout."""
    import sys

    if out is None or out == "-":
        return sys.stdout
    refused = refuse_overwrite(out, force)
    if refused is not None:
        return refused
    try:
        return open(out, "w", encoding="ascii", newline="\n")
    except OSError as exc:
        return fail(out, f"cannot write: {exc.strerror or exc}")
