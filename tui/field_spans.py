"""Where a differing field shows in a row's argument text.

The diff names what differs in an ``args`` row by schema field
(``replay.diff.align.differing_fields``: ``did``, ``method``, ``args.mode``
for a call argument); a row draws its arguments as one
``EventPresenter.text_args`` string.  These map one to the other, so the
side-by-side view can highlight exactly the differing ``name=value``.
"""

from __future__ import annotations

import re

# bus/devfn/seg are drawn inside bdf=
_MERGED = {"bus": "bdf", "devfn": "bdf", "seg": "bdf"}

_NAME_AT = re.compile(r"(?:^|(?<=[ (,]))([A-Za-z_][\w.]*)=")


def field_spans(text: str, fields) -> list[tuple[int, int]]:
    """Character spans of ``text`` (an ``EventPresenter.text_args`` string,
    ``name=value`` pairs, call arguments inside ``args=(a=1, b=2)``) that show
    the differing ``fields``: ``did`` marks ``did=...``, ``args.mode`` marks
    ``mode=...`` inside ``args=(...)``, ``bus``/``devfn``/``seg`` mark ``bdf=``.
    Sorted, not overlapping."""
    if not fields or not text:
        return []
    top: set = set()
    inner: set = set()
    for f in fields:
        if f.startswith("args."):
            inner.add(f[5:])
        else:
            top.add(_MERGED.get(f, f))
    spans = []
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        m = _NAME_AT.match(text, i) if (i == 0 or text[i - 1] in " (,") else None
        if m is not None:
            name = m.group(1)
            want = (depth == 0 and name in top) or (depth == 1 and name in inner)
            if want:
                end = _value_end(text, m.end(), depth)
                spans.append((i, end))
                i = end
                continue
        i += 1
    return spans


def _value_end(text: str, i: int, depth: int) -> int:
    """End of the value that starts at i (a top-level value runs to the next
    space outside parentheses, a call argument to the next ',' or ')')."""
    d = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "(":
            d += 1
        elif ch == ")":
            if d == 0:
                return i
            d -= 1
        elif d == 0 and ((depth == 0 and ch == " ") or (depth > 0 and ch == ",")):
            return i
        i += 1
    return n


def split_spans(text: str, spans) -> list[tuple[str, bool]]:
    """text cut into (piece, highlighted) by spans."""
    out = []
    pos = 0
    for s, e in spans:
        if s > pos:
            out.append((text[pos:s], False))
        out.append((text[s:e], True))
        pos = e
    if pos < len(text):
        out.append((text[pos:], False))
    return out
