"""The Textual app: views only; everything shown is computed by replay.

``prepare_environment()`` must run before Textual is imported (the command
line does it in vtdtrace/commands/view.py): Textual reads its frame-rate cap
at import.  The viewer repaints only on demand (a key, a loader message), so
a higher cap costs nothing while idle and takes up to 8 ms of frame pacing
off every key -> frame."""

import os

FRAME_RATE = 120


def prepare_environment() -> None:
    os.environ.setdefault("TEXTUAL_FPS", str(FRAME_RATE))
