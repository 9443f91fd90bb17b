"""Positions on the command line: one notation and one rule for every command.

A position is a step: ``seq`` N names event N (seqs start at 1) and "the
state at N" is the state after event N, with 0 the platform before any event.
Every command prints seqs in decimal, so a position is read the same way:

  * decimal digits, leading zeros allowed (``007`` is 7: what a user copies
    out of a zero-padded column);
  * nothing else -- not ``0x10`` (a seq is never printed in hex, and a hex
    position next to the hex addresses of the same output would be read as an
    address), not ``1_0`` or ``+5`` or `` 5`` (Python's literal syntax is not a
    notation anyone reads a seq in).

Both refusals are one line and exit 2 (argparse's usage error, through
``cli._Parser.error``).  A position past the last event of a complete trace
is refused the same way, once the trace is open: ``beyond_end`` words that
line for ``show --at`` and ``log --from/--to`` alike.  Past the readable end
of a damaged trace is not a usage error: the command shows what is readable
and exits 3 with the damage line.
"""

from __future__ import annotations

import argparse


def decimal(text: str, noun: str = "step", first: int = 0) -> int:
    """The position rule itself, for every caller (the CLI's options and the
    viewer's go-to prompt): decimal digits, leading zeros allowed; ValueError
    with the one-line reason otherwise."""
    if text.isascii() and text.isdigit():
        return int(text, 10)
    if text[:1] == "-" and text[1:].isascii() and text[1:].isdigit():
        raise ValueError(f"{noun}s start at {first}, got {text}")
    hint = " (positions are decimal, as log prints them)" if text.lower().startswith("0x") else ""
    raise ValueError(f"expected a decimal {noun} number, got {text!r}{hint}")


def _decimal(text: str, noun: str, first: int) -> int:
    try:
        return decimal(text, noun, first)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def event_seq(text: str) -> int:
    """An event's seq (``log --from/--to``): decimal, at least 1."""
    n = _decimal(text, "event", 1)
    if n < 1:
        raise argparse.ArgumentTypeError(f"events start at 1, got {text}")
    return n


def step(text: str) -> int:
    """A step (``show --at``): decimal, 0 (before any event) or more."""
    return _decimal(text, "step", 0)


def beyond_end(option: str, n: int, count: int) -> str | None:
    """The one-line refusal for a position past the end of a complete trace
    of `count` events, or None when n is inside it."""
    if n <= count:
        return None
    return f"{option} {n} is beyond the end: the trace ends at event {count}"
