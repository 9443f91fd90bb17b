"""Writing a new trace for `record` and `synth`: refuse a directory or an
existing file (unless --force) with one line and exit 2, before any work;
a write that fails on the way (disk full, file size limit, I/O error) is
one line naming the file and the cause, exit 2, and the partial file is
removed so that a retry is not refused as "exists".  (A recording that is
killed keeps its readable prefix: only a failed write discards.)"""

from __future__ import annotations

import os

from .errors import fail


def open_trace_writer(out: str, header: dict, force: bool):
    """A TraceWriter for `out`, or the exit code after a one-line error."""
    from tracer.writer import TraceWriter

    if os.path.isdir(out):
        return fail(out, "is a directory")
    if os.path.exists(out) and not force:
        return fail(out, "exists (use --force to overwrite)")
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
