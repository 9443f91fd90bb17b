"""Loading in the background: the IO/compute side of the TUI.

memray's UpdateThread pattern (bloomberg/memray's TUI): a worker thread
does the whole-trace work and *posts messages*; it never touches a widget.
The app starts it after the first frame, so the first frame never waits for
anything proportional to the trace length.

1. ``ReplaySession(path)``: reads the index and checkpoints from the
   sidecar, or builds them in one pass (posting ``LoadProgress`` as chunks
   are folded);
2. the findings: ``replay.hazards.findings_for_trace`` (its own pass over
   the trace, cached in the sidecar by the analysers), wrapped in a
   ``FindingsView`` here, off the UI thread;
3. the bookmarks saved in the sidecar.

Each phase posts its result as soon as it is there: the state pane works as
soon as the session is ready, the timeline fills in when the findings arrive.
Errors become a ``LoadFailed`` message with one line of text, never a crash:
the event list keeps working on what the reader could open.
"""

from __future__ import annotations

import threading
import time

from textual.message import Message

from .model import BOOKMARKS_KEY, FindingsView, TraceModel

PROGRESS_INTERVAL = 0.1     # seconds between two progress messages


class LoadProgress(Message):
    """Part of the whole-trace work is done (``fraction`` of ``phase``)."""

    def __init__(self, phase: str, fraction: float, model=None) -> None:
        super().__init__()
        self.phase = phase
        self.fraction = fraction
        self.model = model          # which trace (the diff view loads two)

    def can_replace(self, message: Message) -> bool:
        # a flood of progress updates collapses to the latest (Toolong)
        return isinstance(message, LoadProgress) and message.model is self.model


class SessionLoaded(Message):
    def __init__(self, session, bookmarks, model=None) -> None:
        super().__init__()
        self.session = session
        self.bookmarks = bookmarks
        self.model = model


class FindingsLoaded(Message):
    def __init__(self, findings: FindingsView, model=None) -> None:
        super().__init__()
        self.findings = findings
        self.model = model


class LoadFailed(Message):
    def __init__(self, phase: str, text: str, model=None) -> None:
        super().__init__()
        self.phase = phase
        self.text = text
        self.model = model


# One lock per process for writes to sidecars: the loader (session build,
# findings cache) and bookmark saves run in different worker threads and a
# Sidecar object is not thread-safe.
SIDECAR_LOCK = threading.Lock()


class _Throttle:
    def __init__(self, post, phase: str, model) -> None:
        self.post, self.phase, self.model, self.last = post, phase, model, 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL or done >= total:
            self.last = now
            self.post(LoadProgress(self.phase, done / total if total else 1.0, self.model))


def compute_findings(path, use_sidecar: bool):
    """(findings, interval index) from replay.hazards, read from the sidecar
    when an earlier run stored them there."""
    from replay.hazards import findings_for_trace
    result = findings_for_trace(path, sidecar=use_sidecar)
    return result.findings, result.index


def load(model: TraceModel, post, cancelled=lambda: False, *, use_sidecar: bool = True) -> None:
    """The worker body.  ``post`` is the app's thread-safe post_message."""
    from replay.reader import NotATrace
    from replay.session import ReplaySession
    from replay.sidecar import SidecarError

    try:
        with SIDECAR_LOCK:
            session = ReplaySession(model.path, sidecar=use_sidecar,
                                    progress=_Throttle(post, "indexing", model))
            marks = None
            try:
                marks = session.sidecar.get(BOOKMARKS_KEY)
            except SidecarError:
                marks = None        # a bookmarks entry that fails its checksum: open without them
    except (NotATrace, OSError) as exc:            # the viewer stays up and says why
        post(LoadFailed("index", f"cannot replay: {exc}", model))
        return
    if cancelled():
        session.close()
        return
    post(SessionLoaded(session, marks, model))
    try:
        with SIDECAR_LOCK:
            findings, index = compute_findings(model.path, use_sidecar)
        view = FindingsView(findings, index, session.count)
    except (NotATrace, OSError) as exc:
        # The file was replaced or became unreadable since the session opened it.
        post(LoadFailed("findings", f"hazard analysis failed: {exc}", model))
        return
    if cancelled():
        return
    post(FindingsLoaded(view, model))
