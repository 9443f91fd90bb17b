"""Loading: the first frame never waits for whole-trace work, the UI answers
keys while the loader runs, a damaged trace opens with its readable prefix
and a banner, and `vtdtrace view` refuses what is not a trace before any
screen (and before Textual is even imported)."""

from __future__ import annotations

import subprocess
import sys
import threading

from test_tui_support import REPO, record_trace, screen_text, settle, trace_copy

import tui.loader as loader
from replay.reader import open_trace
from tui.app import VtdtraceApp


async def test_first_frame_and_keys_before_the_loader_finishes(tmp_path, monkeypatch):
    s1 = trace_copy(tmp_path)
    gate = threading.Event()
    started = threading.Event()
    real = loader.load

    def slow_load(model, post, cancelled=lambda: False, **kw):
        started.set()
        gate.wait(10)
        real(model, post, cancelled, **kw)

    monkeypatch.setattr(loader, "load", slow_load)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert started.wait(5)                      # the loader runs, after the first refresh
        text = screen_text(app)
        assert "the platform before any event" in text and " 1 0  0" in text.replace("   ", " ")
        assert app.model.session is None
        assert "the state appears when the index is built" in text
        await pilot.press("n", "n")                 # keys work while loading
        assert app.model.cursor == 2
        assert "step 2" in screen_text(app)
        gate.set()
        await settle(app, pilot)
        assert app.model.session is not None and app.model.findings is not None
        assert "step 2/" in app.view.state_pane.text()
        assert "━" not in screen_text(app).splitlines()[-3]     # the progress bar made way for the strip
    app.model.close()


async def test_progress_messages_drive_the_timeline_bar(tmp_path):
    s1 = trace_copy(tmp_path)
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        tl = app.view.timeline
        app.model.findings, saved = None, app.model.findings
        app.post_message(loader.LoadProgress("indexing", 0.42))
        await pilot.pause()
        line = tl.render_line(1).text                    # the strip (the markers are above it)
        assert "indexing  42%" in line and "━" in line
        app.post_message(loader.FindingsLoaded(saved))
        await pilot.pause()
        assert "indexing" not in tl.render_line(1).text
    app.model.close()


def _truncate(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


async def test_damaged_trace_opens_with_its_readable_prefix_and_a_banner(tmp_path):
    s1 = record_trace(tmp_path / "cut.vtdt")
    _truncate(s1, 0.6)
    with open_trace(s1) as t:
        readable, stop = t.count, t.stop
    assert stop is not None and 0 < readable
    app = VtdtraceApp(s1)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert app.model.count == readable
        text = screen_text(app)
        assert "damaged trace: truncated at byte" in text
        assert f"{readable} events" in text and "damaged" in text.splitlines()[0]
        await pilot.press("end")
        assert app.model.cursor == readable
        assert f"step {readable}/{readable}" in app.view.state_pane.text()
    app.model.close()


def test_view_refuses_missing_and_non_trace_files_before_any_screen(run_cli, tmp_path):
    missing = run_cli("view", tmp_path / "nope.vtdt")
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "nope.vtdt: no such file" in missing.stderr
    assert missing.stdout == ""                   # no escape sequence, no screen
    junk = tmp_path / "junk.vtdt"
    junk.write_bytes(b"not a trace at all, just bytes\n")
    r = run_cli("view", junk)
    assert r.returncode == 2 and "not a vtdtrace trace" in r.stderr and r.stdout == ""
    empty = tmp_path / "empty.vtdt"
    empty.write_bytes(b"")
    r = run_cli("view", empty)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    r = run_cli("view", tmp_path)
    assert r.returncode == 2 and "is a directory" in r.stderr


def test_view_without_a_terminal_says_so(run_cli, tmp_path):
    s1 = trace_copy(tmp_path)
    r = run_cli("view", s1, stdin=subprocess.DEVNULL)
    assert r.returncode == 2 and "needs a terminal" in r.stderr and r.stderr.count("\n") == 1


def test_textual_is_imported_only_by_the_view_command():
    script = (
        "import sys\n"
        "from vtdtrace.cli import main\n"
        "rc = main(['view', '/nonexistent/x.vtdt'])\n"
        "import tui.model\n"
        "print(rc, any(m == 'textual' or m.startswith('textual.') for m in sys.modules))\n"
    )
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert r.stdout.split() == ["2", "False"], r.stderr


def test_view_exit_status_after_the_viewer_closes(tmp_path, monkeypatch):
    """0 for a complete trace, 3 for a damaged one (docs/CLI.md#exit-codes), once the
    viewer has run (the app is replaced by a stub that records its model)."""
    import argparse
    import sys as _sys

    import tui.app
    from vtdtrace.commands import view

    ran = []
    monkeypatch.setattr(tui.app.VtdtraceApp, "run", lambda self: ran.append(self.model.count))
    monkeypatch.setattr(_sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(_sys.stdout, "isatty", lambda: True, raising=False)
    whole = trace_copy(tmp_path)
    cut = record_trace(tmp_path / "cut.vtdt")
    _truncate(cut, 0.6)
    args = lambda p: argparse.Namespace(trace=str(p), trace2=None, no_sidecar=True)  # noqa: E731
    assert view.run(args(whole)) == 0
    assert view.run(args(cut)) == 3
    assert len(ran) == 2 and ran[1] < ran[0]
