"""Opening a new trace for `record` and `synth`: refuse a directory or an
existing file (unless --force) with one line and exit 2, before any work."""

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
    except OSError as exc:
        return fail(out, f"cannot write: {exc.strerror or exc}")
