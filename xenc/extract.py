"""Pull named functions out of a Xen C file, with everything of that file they need.

Xen's own user-space tests (tools/tests/vpci, tools/tests/vhpet) compile a
hypervisor file against a small header of stand-ins.  iommu.c is too large for
that (interrupts, faults, suspend ... would need the whole include tree), so we
take only what the reassignment path runs:

1. **Scan** the file once at brace depth 0, splitting it into top-level items:
   function definitions (a ``NAME(...)`` followed by ``{``), ``#define``s (with
   their continuation lines) and other statements ending in ``;`` (file-scope
   variables and prototypes).  Comments and string literals are skipped by the
   scanner so that a brace inside them does not count.
2. **Close over callees.**  Starting from the requested names, every
   identifier in a taken function's body that names another function defined
   in the file is taken too -- unless the caller provides it (``provided``:
   the stand-in header implements it, e.g. the page-table walker) or wraps it
   (``wrapped``: the definition is kept under ``xenc_real_NAME`` and the
   stand-in's ``NAME`` calls it, so a call is observable even when the
   function returns early).
3. **Emit** the file's ``#define``s, the file-scope variables the taken
   functions name (each once: its first declaration), one prototype per taken function (static functions call
   each other in any order), then the functions in file order -- each preceded
   by ``#line N "FILE"`` so compiler errors and debuggers point into the
   user's tree, not into the generated file.

Nothing here understands C beyond braces, parentheses, comments and literals;
an item the scanner cannot classify is left out (and the build says so if it
was needed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CALLED = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_C_WORDS = frozenset({"if", "for", "while", "switch", "return", "sizeof", "do", "else", "case",
                      "typeof", "__typeof__", "defined"})


class ExtractError(Exception):
    """A requested function is not defined in the file."""


@dataclass
class Item:
    kind: str          # "func", "define", "decl"
    name: str          # function / macro / variable name ("" if unknown)
    line: int          # 1-based first line
    text: str
    body_start: int = 0   # offset of the function's "{" within text


@dataclass
class Extracted:
    source: str                      # the generated C text
    functions: list[str] = field(default_factory=list)   # taken, in file order
    missing: list[str] = field(default_factory=list)     # requested but absent


def _skip_comment_or_literal(src: str, i: int) -> int:
    """If src[i:] opens a comment or literal, the offset just past it; else i."""
    c = src[i]
    if c == "/" and src.startswith("/*", i):
        end = src.find("*/", i + 2)
        return len(src) if end < 0 else end + 2
    if c == "/" and src.startswith("//", i):
        end = src.find("\n", i)
        return len(src) if end < 0 else end
    if c in "\"'":
        j = i + 1
        while j < len(src) and src[j] != c:
            j += 2 if src[j] == "\\" else 1
        return j + 1
    return i


def scan(src: str) -> list[Item]:
    """The file's top-level items, in order."""
    items: list[Item] = []
    i, n = 0, len(src)
    start = 0          # offset where the current top-level item began
    depth = 0
    paren = 0
    body = -1

    def line_of(off: int) -> int:
        return src.count("\n", 0, off) + 1

    def flush_decl(end: int) -> None:
        text = src[start:end].strip()
        if not text:
            return
        first = start + (len(src[start:end]) - len(src[start:end].lstrip()))
        if body >= 0:
            m = None
            head = _COMMENT.sub(lambda c: " " * len(c.group()), src[first:body])
            for m in _CALLED.finditer(head):
                if m.group(1) not in _C_WORDS and "=" not in head[:m.start()]:
                    break
            name = m.group(1) if m else ""
            items.append(Item("func", name, line_of(first), src[first:end], body - first))
        else:
            items.append(Item("decl", _decl_name(text), line_of(first), src[first:end]))

    while i < n:
        j = _skip_comment_or_literal(src, i)
        if j != i:
            i = j
            continue
        c = src[i]
        if depth == 0 and paren == 0 and c == "#" and src[start:i].strip() == "":
            # a preprocessor line (with continuations) at top level
            end = i
            while True:
                nl = src.find("\n", end)
                if nl < 0:
                    nl = n
                if src[end:nl].rstrip().endswith("\\") and nl < n:
                    end = nl + 1
                    continue
                break
            text = src[i:nl]
            m = re.match(r"#\s*define\s+([A-Za-z_][A-Za-z0-9_]*)", text)
            if m:
                items.append(Item("define", m.group(1), line_of(i), text))
            i = start = nl
            continue
        if c == "(":
            paren += 1
        elif c == ")":
            paren -= 1
        elif c == "{":
            if depth == 0 and paren == 0 and body < 0:
                head = _COMMENT.sub(" ", src[start:i])
                if ")" in head and "=" not in head:
                    body = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0 and body >= 0:
                flush_decl(i + 1)
                body = -1
                start = i + 1
        elif c == ";" and depth == 0 and paren == 0:
            flush_decl(i + 1)
            start = i + 1
        i += 1
    return items


def _decl_name(text: str) -> str:
    """The declared name of a file-scope variable (the identifier before
    ``=``, ``[`` or ``;``); "" for prototypes and type declarations."""
    head = re.split(r"=|;", text, maxsplit=1)[0]
    head = re.sub(r"/\*.*?\*/", " ", head, flags=re.S)
    if "(" in head and "=" not in text.split("(")[0]:
        return ""
    head = head.split("[")[0]
    words = _IDENT.findall(head)
    return words[-1] if words else ""


def _signature(item: Item) -> str:
    sig = item.text[:item.body_start].rstrip()
    return sig + ";"


def extract(src: str, path: str, wanted: list[str], provided: frozenset[str] = frozenset(),
            wrapped: frozenset[str] = frozenset()) -> Extracted:
    """The C text for ``wanted`` and their same-file callees (see the module docstring)."""
    items = scan(src)
    funcs = {it.name: it for it in items if it.kind == "func" and it.name}
    missing = [w for w in wanted if w not in funcs and w not in provided]
    take: set[str] = set()
    todo = [w for w in wanted if w in funcs and w not in provided]
    while todo:
        name = todo.pop()
        if name in take:
            continue
        take.add(name)
        body = funcs[name].text[funcs[name].body_start:]
        for ident in set(_IDENT.findall(body)):
            if ident in funcs and ident not in take and ident not in provided:
                todo.append(ident)
    taken = [it for it in items if it.kind == "func" and it.name in take]
    used = set()
    for it in taken:
        used.update(_IDENT.findall(it.text))
    out: list[str] = [f"/* extracted from {path} by xenc.extract */"]
    for it in items:
        if it.kind == "define":
            out.append(f'#line {it.line} "{path}"\n{it.text}')
    # A variable declared twice (a tentative definition early, the initialised
    # one at the end of the file, as 4.15's vtd_ops) is taken once, the first
    # time: the initialiser would name functions that were not taken.
    seen: set[str] = set()
    for it in items:
        if it.kind == "decl" and it.name and it.name in used and it.name not in funcs \
                and it.name not in provided and it.name not in seen:
            seen.add(it.name)
            out.append(f'#line {it.line} "{path}"\n{it.text}')
    for it in taken:
        out.append(_rename(_signature(it), it.name, wrapped))
    for it in taken:
        out.append(f'#line {it.line} "{path}"\n{_rename(it.text, it.name, wrapped)}')
    return Extracted("\n".join(out) + "\n", [it.name for it in taken], missing)


def _rename(text: str, name: str, wrapped: frozenset[str]) -> str:
    """A wrapped function's definition is kept as xenc_real_NAME (its first
    occurrence only: recursive calls inside still go through the wrapper)."""
    if name not in wrapped:
        return text
    return re.sub(rf"\b{re.escape(name)}\b", f"xenc_real_{name}", text, count=1)
