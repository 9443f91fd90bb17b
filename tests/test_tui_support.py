"""Helpers shared by the TUI tests (imported as a module; it holds one
self-check so pytest has something to collect here)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

REPO = Path(__file__).resolve().parent.parent
S1_NOCX16 = "s1-usb-rmrr.direct-nocx16.vtdt"


def trace_copy(tmp_path: Path, name: str = S1_NOCX16, as_name: str | None = None) -> Path:
    """A shipped trace copied into tmp_path, so its sidecar (bookmarks,
    index) is written there and not beside the repository's file."""
    dst = tmp_path / (as_name or name)
    shutil.copyfile(REPO / "traces" / name, dst)
    return dst


def record_trace(path: Path, scenario: str = "s1-usb-rmrr", engine: str = "direct", cx16: bool = False,
                 chunk_events: int = 32) -> Path:
    """Record a shipped scenario with small chunks (so a cut leaves a
    readable prefix of several chunks)."""
    from tracer.record import apply_cx16, make_header, record
    from tracer.scenario import load_scenario
    from tracer.writer import TraceWriter

    platform = apply_cx16(load_scenario(scenario), cx16)
    with TraceWriter(path, make_header(platform, engine), chunk_events=chunk_events) as w:
        record(platform, engine, w)
    return path


async def settle(app, pilot) -> None:
    """Wait for the loader (and search/filter workers) and the resulting redraws."""
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def screen_text(app) -> str:
    """The current screen as plain text, one line per terminal row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def test_trace_copy(tmp_path):
    p = trace_copy(tmp_path)
    assert p.read_bytes() == (REPO / "traces" / S1_NOCX16).read_bytes()


def decoded(path) -> list[dict]:
    """Every event of the trace at ``path`` as the catalogue's named dict."""
    from replay.reader import open_trace
    from tracer import schema as S

    with open_trace(path) as t:
        return [S.event_to_dict(e) for e in t.events()]
