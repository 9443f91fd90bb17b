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
    taken: dict[str, str] = {}          # text -> the name it stands for
    for name in names:
        if name and len(name) <= width:
            out[name] = name
            taken[name] = name
    long = sorted({n for n in names if n and len(n) > width})
    # the tail-only form wherever it is unique; the others, in name order,
    # take their first candidate nobody holds yet
    first = {n: next(_candidates(n, width)) for n in long}
    uses: dict[str, int] = {}
    for a in first.values():
        uses[a] = uses.get(a, 0) + 1
    for n in long:
        if uses[first[n]] == 1 and first[n] not in taken:
            out[n] = taken[first[n]] = first[n]
    for n in long:
        if n in out:
            continue
        for cand in _candidates(n, width):
            if cand not in taken and uses.get(cand, 0) <= (1 if cand == first[n] else 0):
                out[n] = taken[cand] = cand
                break
        else:
            out[n] = name_cut = n[: width - 1] + "…"
            taken[name_cut] = n
    return out


def fit_name(names: tuple[str, ...], name: str, width: int) -> str:
    if len(name) <= width:
        return name.ljust(width)
    return abbreviations(names, width).get(name, name[: width - 1] + "…")
