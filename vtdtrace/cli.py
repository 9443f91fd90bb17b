"""`vtdtrace` -- argparse front door.  Each subcommand lives in its own module
under ``vtdtrace.commands`` with ``add_parser(sub)`` and ``run(args) -> int``;
modules are imported lazily so `check`/`diff` never pay for Textual.

Exit codes: 0 ok, 1 hazard/difference, 2 usage or I/O error or not a trace,
3 damaged trace.  Every error is one line on stderr.  These contracts, the
position notation (vtdtrace/positions.py) and the writer rule
(vtdtrace/output.py) are written down for users in docs/CLI.md.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

COMMANDS = [
    ("scenarios", "list shipped scenarios"),
    ("record", "run a scenario through an engine variant and write a trace"),
    ("synth", "record a long random valid workload"),
    ("info", "header, counts, integrity"),
    ("log", "events as text or JSON lines"),
    ("show", "IOMMU state after event N"),
    ("check", "hazard findings; exit 1 on a hazard"),
    ("explore", "search the interleavings of a scenario for hazards; exit 1 on a violation"),
    ("diff", "compare two traces; exit 1 if they differ"),
    ("view", "the terminal UI (two traces open the diff view)"),
    ("export", "Chrome Trace Event JSON or JSON lines"),
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"vtdtrace: {message}\n")


DESCRIPTION = "Trace recorder and replay debugger for Xen VT-d device reassignment"
EPILOG = ("Exit codes: 0 ok, 1 a hazard (check) or a difference (diff), 2 usage or I/O error "
          "or not a trace, 3 a damaged trace. Positions are decimal seqs (0 = before any event). "
          "No command overwrites a file without --force. The contracts are in docs/CLI.md; "
          "`vtdtrace COMMAND --help` for a command's options.")


def short_usage() -> str:
    """What a bare `vtdtrace` prints: one usage line and the commands, not
    every option of every command."""
    width = max(len(name) for name, _ in COMMANDS)
    lines = ["usage: vtdtrace COMMAND [ARGS...]   (vtdtrace COMMAND --help for its options)", "",
             DESCRIPTION + ".", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in COMMANDS]
    lines += ["", "Exit codes, positions, output files and JSON shapes: docs/CLI.md"]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vtdtrace", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS:
        try:
            mod = importlib.import_module(f"vtdtrace.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"vtdtrace.commands.{name}":
                raise
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_parser(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    if not (sys.argv[1:] if argv is None else argv):
        sys.stderr.write(short_usage())
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        sys.stderr.write(short_usage())
        return 2
    return run_command(args)


def _quiet_stdout() -> None:
    """The reader went away (`vtdtrace log big.vtdt | head`): not an error.
    Point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


_NOTES_PRINTED: set[tuple[str, str]] = set()


def _print_note(path: object, message: str) -> None:
    """A remark about a trace (e.g. written by a newer vtdtrace), once per file."""
    if (str(path), message) not in _NOTES_PRINTED:
        _NOTES_PRINTED.add((str(path), message))
        from replay.jsonout import safe_text
        print(f"vtdtrace: note: {safe_text(path)}: {message}", file=sys.stderr)


def run_command(args) -> int:
    """The command boundary shared by every subcommand: one line on stderr,
    never a traceback."""
    try:
        if getattr(args, "command", None) != "view":     # stderr under a full-screen UI would garble it
            from replay import reader
            reader.note_handler = _print_note
            # A one-shot answer (scripts and CI gate on it) never rests on
            # the file's identity alone: one CRC pass binds the sidecar to
            # the bytes (the viewer keeps its O(1) open; docs/FORMAT.md 5).
            from replay import sidecar
            sidecar.always_verify()
            try:
                return int(args._run(args) or 0)
            finally:
                sidecar.always_verify(False)    # in-process callers (tests) get the default back
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except OSError as exc:
        # Output that cannot be written (`log ... > full-disk`): the cause, once.
        from .errors import fail
        _quiet_stdout()
        return fail(exc.filename if exc.filename is not None else "stdout",
                    f"cannot write: {exc.strerror or exc}")
    except Exception as exc:
        # A bug: one line and exit 70 for a user, a traceback under the test suite.
        from .errors import EXIT_INTERNAL, RAISE_INTERNAL_ENV, fail
        if os.environ.get(RAISE_INTERNAL_ENV):
            raise
        return fail(getattr(args, "trace", None), f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)
