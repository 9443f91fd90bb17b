"""The header difference of two traces: every differing leaf of the two
header maps, as ``[{"path", "a", "b"}]``.

Headers never count for equivalence (two recordings of one scenario differ
in the file name and the tool's version); they are listed so that a reader
sees why two traces' states may differ although their events agree (a
platform knob).  The walk recurses through maps (keys in str order) and
lists (by index) -- except the writer's catalogue (``schema.kinds`` /
``schema.funcs``), which is compared whole.  A value of another type is a
difference even when it compares equal (``1`` against ``True``).  Long
strings are summarised by length and digest, long lists by length.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .report import jsonable


def header_diff(ha: dict[Any, Any], hb: dict[Any, Any]) -> list[Any]:
    """[{"path", "a", "b"}] for every differing leaf (the writer's format and
    schema maps included; long strings summarised)."""
    out: list[Any] = []
    _hdiff(ha, hb, "", out)
    return out


_MISS = object()


def _hdiff(a: Any, b: Any, path: str, out: list[dict[str, Any]]) -> None:
    if type(a) is type(b) and a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            _hdiff(a.get(k, _MISS), b.get(k, _MISS), f"{path}.{k}" if path else str(k), out)
        return
    if isinstance(a, list) and isinstance(b, list) and path not in ("schema.kinds", "schema.funcs"):
        for i in range(max(len(a), len(b))):
            _hdiff(a[i] if i < len(a) else _MISS, b[i] if i < len(b) else _MISS, f"{path}[{i}]", out)
        return
    out.append({"path": path, "a": _hval(a), "b": _hval(b)})     # the first test: they differ


def _hval(v: Any) -> Any:
    if v is _MISS:
        return None
    if isinstance(v, str) and (len(v) > 80 or "\n" in v):
        return f"<{len(v)} chars, sha256 {hashlib.sha256(v.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}>"
    if isinstance(v, list) and len(jsonable(v).__repr__()) > 200:
        return f"<list of {len(v)}>"
    return jsonable(v)


