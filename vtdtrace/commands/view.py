"""vtdtrace view TRACE [TRACE2] -- the terminal UI.

The trace is opened (and rejected with one line and exit 2 when it is
missing or not a trace) before Textual is imported or any screen is drawn.
A damaged trace opens with its readable prefix and a banner saying where it
stops; the exit status is then 3 (docs/CLI.md#exit-codes) after the viewer closes.
Two traces open the side-by-side diff view (tui/diff_app.py); its exit
status is 0, or 3 when either trace is damaged -- like `view`, not like
`diff` (the viewer reports no verdict; `vtdtrace diff` does).
Textual is imported here and only here, lazily: `check`, `diff` and the rest
of the command line never pay for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.app import App

from ..errors import EXIT_DAMAGED, EXIT_OK, fail


def add_parser(p) -> None:
    p.add_argument("trace", metavar="TRACE", help="a trace file (.vtdt)")
    p.add_argument("trace2", metavar="TRACE2", nargs="?",
                   help="a second trace: open both side by side (the diff view)")
    p.add_argument("--no-sidecar", action="store_true",
                   help="do not read or write the sidecar cache beside the trace (bookmarks are then not kept)")


def run(args) -> int:
    from replay.reader import NotATrace
    from tui.model import TraceModel

    models = []
    try:
        for path in (args.trace, args.trace2):
            if path is None:
                continue
            try:
                models.append(TraceModel(path))
            except NotATrace as exc:
                return fail(exc.path, exc.message)
            except OSError as exc:
                return fail(path, f"cannot read: {exc.strerror or exc}")
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            return fail(None, "view needs a terminal (stdin and stdout must be a tty); "
                        "for scripts use `vtdtrace show`/`log`")
        import tui

        tui.prepare_environment()          # before Textual is imported
        app: App[Any]
        if len(models) == 2:
            from tui.diff_app import DiffApp

            app = DiffApp(args.trace, args.trace2, model_a=models[0], model_b=models[1],
                          use_sidecar=not args.no_sidecar)
        else:
            from tui.app import VtdtraceApp

            app = VtdtraceApp(args.trace, model=models[0], use_sidecar=not args.no_sidecar)
        app.run()
        return EXIT_OK if all(m.complete for m in models) else EXIT_DAMAGED
    finally:
        for m in models:
            m.close()
