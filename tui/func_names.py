"""Xen function names that fit a column and stay unambiguous.

The list's function column is narrower than the longest Xen function name
at 80 columns (and when the list shares the screen).  A plain cut drops the
part that tells ``domain_context_mapping_one`` from ``domain_context_unmap_one``
and ``domain_context_mapping``: their *tails* differ, their heads do not.  So
a long name is drawn as ``…`` plus as much of its tail as fits
(``…ext_mapping_one``, ``…ntext_unmap_one``, ``…context_mapping``); when two
names of the trace's schema would still read the same, the colliding ones
keep a few leading characters instead (``do…ping_one``-style, the first split
that is unique).  Names that fit are drawn whole.  The table is computed
once per (schema, width): every name of the schema, not just the ones on
screen, so an abbreviation never means one function here and another there.
"""

from __future__ import annotations

from functools import lru_cache


def _candidates(name: str, width: int):
    """Abbreviations of ``name`` in ``width`` cells, the most tail first."""
    yield "…" + name[len(name) - (width - 1):]
    for head in range(1, width - 2):
        tail = width - 1 - head
        yield name[:head] + "…" + name[len(name) - tail:]
    yield name[: width - 1] + "…"


@lru_cache(maxsize=64)
def abbreviations(names: tuple[str, ...], width: int) -> dict[str, str]:
    """name -> the text drawn in a column of ``width`` cells (unique when
    any unique choice exists)."""
    width = max(width, 4)
    out: dict[str, str] = {}
    taken: dict[str, str] = {}
    for name in names:
        if name and len(name) <= width:
            out[name] = name
            taken[name] = name
    long = sorted({n for n in names if n and len(n) > width})
    # the tail-only form first for everyone; collisions move on to the next
    # candidate, for every name involved in the collision
    gens = {n: _candidates(n, width) for n in long}
    current = {n: next(gens[n]) for n in long}
    for _ in range(width + 2):
        seen: dict[str, list[str]] = {}
        for n, a in current.items():
            seen.setdefault(a, []).append(n)
        clash = [n for a, ns in seen.items() if len(ns) > 1 or a in taken for n in ns]
        if not clash:
            break
        for n in clash:
            nxt = next(gens[n], None)
            if nxt is not None:
                current[n] = nxt
    out.update(current)
    return out


def fit_name(names: tuple[str, ...], name: str, width: int) -> str:
    if len(name) <= width:
        return name.ljust(width)
    return abbreviations(names, width).get(name, name[: width - 1] + "…")
