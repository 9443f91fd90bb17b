"""Presenting events: field roles, JSON objects, text columns, RID filtering.

`vtdtrace log --jsonl` and `vtdtrace export --format jsonl` both write
``EventPresenter.json_line(ev)`` + "\\n" per event, so they produce the same
bytes by construction.

Events on disk are raw (domids, 16-bit bus<<8|devfn, 64-bit ints; see
tracer/schema.py).  What a reader wants (docs/CLI.md#names) depends on what a
field *means*, which is not always its name: ``old``/``new`` are 64-bit root
entries in ``root-write`` but domids in ``did-map`` and ``owner-move``.  Hence
an explicit role per (kind, field); tests/test_cli_info_log.py fails when the
schema gains a field nobody classified.

JSON conventions (shape version ``JSON_SHAPE``, docs/CLI.md#json-shape): the
schema's field names, except that a requester ID is one string as lspci
prints it -- ``bdf``, ``sid`` and ``source_id`` become "SSSS:BB:DD.F" (the
segment from ``seg`` or from the event's IOMMU), a ``bus``+``devfn`` pair (with
its ``seg``) becomes one ``bdf`` at the pair's place, a lone ``devfn`` becomes
"DD.F"; 64-bit values as "0x%016x" strings; domains by scenario name (``dom_io``
for DOMID_IO, null for DOMID_INVALID, ``d<N>`` for a domid the header does not
name); everything else as stored.  Output is ASCII-only with compact
separators so the bytes do not depend on the locale.

Text conventions: the same, as ``name=value`` pairs, plus the return value of
a function that returns a machine address (``ADDRESS_FUNCS``) in hex.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tracer.platform import ERRNO_NAME, fmt_bdf, fmt_rid
from tracer.schema import (
    ADDRESS_FUNCS,
    DOMID_COW,
    DOMID_IDLE,
    DOMID_INVALID,
    DOMID_IO,
    DOMID_XEN,
    F0,
    I_CPU,
    I_FUNC,
    I_KIND,
    I_LABEL,
    I_OP,
    I_SEQ,
    K_RETURN,
    Kind,
)

if TYPE_CHECKING:
    from .reader import TraceSchema

from .pseudo import is_pseudo_domid, pseudo_domain_name

# Roles
PLAIN, U64, DOMAIN, LOCK_TARGET, BDF, SID, BUS, DEVFN, SEG, RC, ARGS = (
    "plain", "u64", "domain", "lock-target", "bdf", "sid", "bus", "devfn", "seg", "rc", "args")

ROLE_BY_NAME = {
    "lo": U64, "hi": U64, "old_lo": U64, "old_hi": U64, "new_lo": U64, "new_hi": U64,
    "addr": U64, "maddr": U64, "base": U64, "end": U64,
    "iova": U64, "ctx_lo": U64, "ctx_hi": U64, "pt_root": U64, "host": U64, "rid": SID, "owner": DOMAIN,
    "domain": DOMAIN, "bdf": BDF, "sid": SID, "bus": BUS, "devfn": DEVFN, "seg": SEG,
    "rc": RC, "args": ARGS,
    **{name: PLAIN for name in (
        "verb", "iommu", "half", "method", "gran", "did", "fm", "non_present", "order",
        "dev_iotlb", "performed", "value", "what", "access", "refcount", "point", "errno",
        "nth", "depth", "level", "text", "lock", "holder", "source", "write", "via", "fault")},
}
# Names whose meaning depends on the kind: classified per kind, never by name.
AMBIGUOUS_NAMES = frozenset({"old", "new", "target"})
ROLE_BY_KIND = {
    ("root-write", "old"): U64, ("root-write", "new"): U64,
    ("did-map", "old"): DOMAIN, ("did-map", "new"): DOMAIN,
    ("owner-move", "old"): DOMAIN, ("owner-move", "new"): DOMAIN,
    ("lock", "target"): LOCK_TARGET, ("unlock", "target"): LOCK_TARGET,
    ("lock-wait", "target"): LOCK_TARGET,
}
DOMAIN_LOCKS = frozenset({"mapping_lock", "rcu_domain", "pci_lock"})   # their target is a domid

# Version of the JSON shapes of docs/CLI.md (log --jsonl, export jsonl,
# show/check/diff/info --json).  2: requester IDs as "SSSS:BB:DD.F" strings,
# diff's hazard_delta.changed and label_only counts.
JSON_SHAPE = 2

# Call arguments whose meaning depends on the function: struct domain
# pointers that the engine records as domids (reassign_device_ownership's
# source/target; `target` is a lock's instance elsewhere).
ARG_ROLE_BY_FUNC = {
    ("reassign_device_ownership", "source"): DOMAIN,
    ("reassign_device_ownership", "target"): DOMAIN,
}
ARG_ROLE_BY_NAME = {"source_id": SID}

RESERVED_DOMAINS = {DOMID_IO: "dom_io", DOMID_XEN: "dom_xen", DOMID_COW: "dom_cow", DOMID_IDLE: "idle"}
_U64_MAX = (1 << 64) - 1
_SEQ = (list, tuple)      # events and arrays inside them: lists, or tuples (open_trace(tuples=True))


def field_role(kind: str, field: str) -> str:
    """The role of a field; PLAIN for names this build does not know."""
    role = ROLE_BY_KIND.get((kind, field))
    if role is None and field not in AMBIGUOUS_NAMES:
        role = ROLE_BY_NAME.get(field)
    return role or PLAIN


# Deeper arrays/maps than this are replaced by a marker string: json.dumps
# (and any recursive walk) would hit Python's recursion limit near 500
# levels, and msgpack decodes up to 1024.  Nothing the catalogue defines
# nests more than three levels (event, call args, pair).
MAX_DEPTH = 64
TOO_DEEP = f"<nested deeper than {MAX_DEPTH} levels>"


def json_safe(value: Any) -> Any:
    """Any decoded msgpack value as something json.dumps accepts, deterministically.
    (Traces are untrusted: bin, non-finite floats, odd map keys and deep
    nesting must not crash.)  Iterative: an explicit stack, no recursion."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    root: list[Any] = [None]
    # (container to fill, key or index, value to convert, depth)
    stack: list[tuple[Any, Any, Any, int]] = [(root, 0, value, 0)]
    out: Any
    while stack:
        into, at, v, depth = stack.pop()
        if v is None or isinstance(v, (str, bool, int)):
            out = v
        elif isinstance(v, float):
            out = v if v == v and v not in (float("inf"), float("-inf")) else repr(v)
        elif isinstance(v, (bytes, bytearray, memoryview)):
            out = bytes(v).hex()
        elif isinstance(v, (list, tuple, dict)) and depth >= MAX_DEPTH:
            out = TOO_DEEP
        elif isinstance(v, (list, tuple)):
            out = [None] * len(v)
            for i, item in enumerate(v):
                stack.append((out, i, item, depth + 1))
        elif isinstance(v, dict):
            out = {}
            for k, item in v.items():
                key = k if isinstance(k, str) else bytes(k).hex() if isinstance(k, bytes) else repr(k)
                out[key] = None
                stack.append((out, key, item, depth + 1))
        else:
            out = repr(v)
        into[at] = out
    return root[0]


def hex64(value: Any) -> Any:
    if type(value) is int and 0 <= value <= _U64_MAX:
        return f"0x{value:016x}"
    return json_safe(value)


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=True, separators=(",", ":"), allow_nan=False)


class TraceNames:
    """Names the trace header gives to raw numbers: domids -> scenario names,
    IOMMU index -> PCI segment."""

    def __init__(self, header: dict[str, Any] | None) -> None:
        self.domains: dict[int, str] = {}
        self.iommu_segment: dict[int, int] = {}
        platform = header.get("platform") if isinstance(header, dict) else None
        if isinstance(platform, dict):
            for item in platform.get("domains") or ():
                if (isinstance(item, list) and len(item) >= 2 and type(item[0]) is int
                        and isinstance(item[1], str)):
                    self.domains[item[0]] = item[1]
            for unit in platform.get("iommus") or ():
                if isinstance(unit, dict) and type(unit.get("id")) is int and type(unit.get("segment")) is int:
                    self.iommu_segment[unit["id"]] = unit["segment"]

    def domain(self, domid: Any, pseudo: Mapping[int, tuple[int, int]] | None = None) -> Any:
        """JSON form: name, None for DOMID_INVALID/None, d<N> for unnamed ids,
        ``dom_io/pseudo 0x8002`` for a pseudo domain ID (with its device when
        ``pseudo``, a replayed state's pseudo table, names one: replay.pseudo)."""
        if type(domid) is not int:
            return json_safe(domid)
        if domid == DOMID_INVALID:
            return None
        name = self.domains.get(domid)
        if name is None:
            if is_pseudo_domid(domid):
                return pseudo_domain_name(domid, pseudo.get(domid) if pseudo else None)
            name = RESERVED_DOMAINS.get(domid, f"d{domid}")
        return name

    def segment(self, iommu: object) -> int:
        return self.iommu_segment.get(iommu, 0) if type(iommu) is int else 0


class EventPresenter:
    """Converts raw events of one trace to JSON objects/lines and text columns."""

    def __init__(self, schema: TraceSchema, header: dict[str, Any] | None) -> None:
        self.schema = schema
        self.names = TraceNames(header)
        self.kinds = schema.kinds
        self.funcs = schema.funcs
        self._roles = [tuple(field_role(k.name, f) for f in k.fields) for k in self.kinds]
        self.func_width = max((len(f) for f in self.funcs), default=4)
        self.kind_width = max((len(k.name) for k in self.kinds), default=4)

    # -- shared helpers -------------------------------------------------------------
    def _kind(self, ev: Any) -> tuple[Kind, tuple[str, ...]] | None:
        """(Kind, roles) for a well-formed event, else None."""
        if type(ev) in _SEQ and len(ev) >= F0 and type(ev[I_KIND]) is int and 0 <= ev[I_KIND] < len(self.kinds):
            return self.kinds[ev[I_KIND]], self._roles[ev[I_KIND]]
        return None

    def func_name(self, code: Any) -> Any:
        if type(code) is int and 0 <= code < len(self.funcs):
            return self.funcs[code]
        return json_safe(code)

    def _json_value(self, role: str, value: Any, ev_fields: dict[str, Any], func: Any = None) -> Any:
        if role == U64:
            return hex64(value)
        if role == DOMAIN:
            return self.names.domain(value)
        if role == LOCK_TARGET and ev_fields.get("lock") in DOMAIN_LOCKS:
            return self.names.domain(value)
        if role == ARGS and type(value) in _SEQ:
            return self._json_args(value, func)
        if role == SID and type(value) is int:
            return fmt_rid(self.names.segment(ev_fields.get("iommu")), value & 0xFFFF)
        if role == DEVFN and type(value) is int:
            return fmt_devfn(value)
        return json_safe(value)

    def _json_args(self, pairs: Sequence[Any], func: Any) -> list[Any]:
        """A call's [name, value] pairs; a requester ID given as seg/bus/devfn
        (or bus/devfn on an IOMMU) becomes one ["bdf", "SSSS:BB:DD.F"] where
        its first part was."""
        named = {p[0]: p[1] for p in pairs if type(p) in _SEQ and len(p) == 2 and isinstance(p[0], str)}
        merged = type(named.get("bus")) is int and type(named.get("devfn")) is int
        if merged:
            seg = named.get("seg")
            seg = seg if type(seg) is int else self.names.segment(named.get("iommu"))
            rid = fmt_bdf(seg, named["bus"] & 0xFF, named["devfn"] & 0xFF)
        out: list[Any] = []
        placed = False
        for pair in pairs:
            if not (type(pair) in _SEQ and len(pair) == 2 and isinstance(pair[0], str)):
                out.append(json_safe(pair))
                continue
            name, v = pair
            if merged and name in ("seg", "bus", "devfn"):
                if not placed:
                    out.append(["bdf", rid])
                    placed = True
                continue
            role = self._arg_role(func, name)
            if role == U64:
                out.append([name, hex64(v)])
            elif role == DOMAIN:
                out.append([name, self.names.domain(v)])
            elif role == SID and type(v) is int:
                out.append([name, fmt_rid(self.names.segment(named.get("iommu")), v & 0xFFFF)])
            elif role == DEVFN and type(v) is int:
                out.append([name, fmt_devfn(v)])
            else:
                out.append(json_safe(pair))
        return out

    def _arg_role(self, func: Any, name: str) -> str | None:
        role = ARG_ROLE_BY_FUNC.get((func, name))
        if role is None:
            role = ARG_ROLE_BY_NAME.get(name)
        if role is None and name not in AMBIGUOUS_NAMES:
            role = ROLE_BY_NAME.get(name)
        return role

    # -- JSON -----------------------------------------------------------------------
    def to_json(self, ev: Any) -> dict[str, Any]:
        """The JSON object for one event (keys in schema order)."""
        k = self._kind(ev)
        if k is None:
            seq = ev[I_SEQ] if type(ev) in _SEQ and len(ev) > I_SEQ else None
            return {"seq": json_safe(seq), "kind": None, "malformed": json_safe(ev)}
        kind, roles = k
        out: dict[str, Any] = {"seq": json_safe(ev[I_SEQ]), "cpu": json_safe(ev[I_CPU]), "op": json_safe(ev[I_OP]),
                               "func": self.func_name(ev[I_FUNC]), "label": json_safe(ev[I_LABEL]),
                               "kind": kind.name}
        values = ev[F0:]
        raw = dict(zip(kind.fields, values))
        func = out["func"]
        merged = BUS in roles and DEVFN in roles
        seg: Any
        for name, role in zip(kind.fields, roles):
            v: Any = raw.get(name)
            if role == SEG and (BDF in roles or merged):
                continue                      # inside bdf
            if role == DEVFN and merged:
                continue                      # inside bdf
            if role == BUS and merged:
                seg = raw.get("seg") if SEG in roles else self.names.segment(raw.get("iommu"))
                out["bdf"] = self._text_rid(seg, v, raw.get("devfn")) if _all_int(seg, v, raw.get("devfn")) \
                    else json_safe([v, raw.get("devfn")])
                continue
            if role == BDF:
                seg = raw.get("seg") if SEG in roles else self.names.segment(raw.get("iommu"))
                out[name] = (fmt_rid(seg, v & 0xFFFF) if _all_int(seg, v)
                             else None if v is None else json_safe(v))
                continue
            out[name] = self._json_value(role, v, raw, func)
        if len(values) > len(kind.fields):
            out["extra"] = json_safe(values[len(kind.fields):])
        return out

    def json_line(self, ev: Any) -> str:
        return dumps(self.to_json(ev))

    # -- text -----------------------------------------------------------------------
    def text_args(self, ev: Any) -> str:
        """Decoded kind-specific fields as `name=value` pairs."""
        k = self._kind(ev)
        if k is None:
            return "malformed " + dumps(json_safe(ev))
        kind, roles = k
        values = ev[F0:]
        raw = dict(zip(kind.fields, values))
        parts = []
        merged_bus = BUS in roles and DEVFN in roles
        for name, role in zip(kind.fields, roles):
            v: Any = raw.get(name)
            if role == SEG and BDF in roles:
                continue                      # shown inside bdf=
            if role == DEVFN and merged_bus:
                continue                      # shown inside bdf=
            if role == BUS and merged_bus:
                parts.append("bdf=" + self._text_rid(self.names.segment(raw.get("iommu")), v, raw.get("devfn")))
                continue
            if role == RC and kind.code == K_RETURN and type(v) is int and v >= 0 \
                    and self.func_name(ev[I_FUNC]) in ADDRESS_FUNCS:
                parts.append(f"rc={v:#x}")    # a machine address, as Xen prints one
                continue
            if role == ARGS and type(v) in _SEQ:
                func = self.func_name(ev[I_FUNC])
                named = {a[0]: a[1] for a in v if type(a) in _SEQ and len(a) == 2 and isinstance(a[0], str)}
                parts.append("args=(" + ", ".join(self._text_arg(a, func, named) for a in v) + ")")
                continue
            parts.append(f"{safe_text(name)}={self._text_value(role, v, raw)}")
        if len(values) > len(kind.fields):
            parts.append("extra=" + dumps(json_safe(values[len(kind.fields):])))
        return " ".join(parts)

    @staticmethod
    def _text_rid(seg: Any, bus: Any, devfn: Any) -> str:
        if type(seg) is int and type(bus) is int and type(devfn) is int:
            return fmt_bdf(seg, bus & 0xFF, devfn & 0xFF)
        return "-"

    def _text_value(self, role: str | None, v: Any, raw: dict[str, Any]) -> str:
        if v is None:
            return "-"
        if role == U64 and type(v) is int and 0 <= v <= _U64_MAX:
            return f"0x{v:016x}"
        if role == DOMAIN or (role == LOCK_TARGET and raw.get("lock") in DOMAIN_LOCKS):
            name = self.names.domain(v)
            return "DOMID_INVALID" if name is None else safe_text(name)
        if role == BDF and type(v) is int:
            seg = raw.get("seg")
            return fmt_rid(seg if type(seg) is int else 0, v & 0xFFFF)
        if role == SID and type(v) is int:
            return fmt_rid(self.names.segment(raw.get("iommu")), v & 0xFFFF)
        if role == BUS and type(v) is int:
            return f"{v:02x}"
        if role == RC and type(v) is int and v < 0 and -v in ERRNO_NAME:
            return f"-{ERRNO_NAME[-v]}"
        if role == ARGS and type(v) in _SEQ:
            return "(" + ", ".join(self._text_arg(a) for a in v) + ")"
        return text_scalar(v)

    def _text_arg(self, pair: Any, func: Any = None, named: dict[str, Any] | None = None) -> str:
        if type(pair) in _SEQ and len(pair) == 2 and isinstance(pair[0], str):
            name, v = pair
            role = self._arg_role(func, name)
            name = safe_text(name)
            if role == SID and type(v) is int:
                return f"{name}={fmt_rid(self.names.segment((named or {}).get('iommu')), v & 0xFFFF)}"
            if role == DOMAIN:
                return f"{name}={self._text_value(DOMAIN, v, {})}"
            if role == U64 and type(v) is int and 0 <= v <= _U64_MAX:
                return f"{name}=0x{v:016x}"
            if role == DEVFN and type(v) is int:
                return f"{name}={v >> 3:02x}.{v & 7}"
            if role == BUS and type(v) is int:
                return f"{name}={v:02x}"
            return f"{name}={text_scalar(v)}"
        return text_scalar(pair)


def _all_int(*values: object) -> bool:
    return all(type(v) is int for v in values)


def fmt_devfn(devfn: int) -> str:
    """A lone devfn as Xen prints one: DD.F."""
    devfn &= 0xFF
    return f"{devfn >> 3:02x}.{devfn & 7}"


def safe_text(s: object) -> str:
    """Trace-derived text for a terminal: every character that is not
    printable (C0/C1 controls such as ESC and BEL, newlines, tabs, DEL,
    bidirectional overrides, ...) as a Python-style escape (\\x1b, \\u202e).
    The one helper every text renderer uses for names and strings from a
    trace; JSON output escapes by itself."""
    s = s if isinstance(s, str) else str(s)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else _escape(c) for c in s)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def text_scalar(v: Any) -> str:
    """A value as the text columns show it: - for none, bare names and numbers, JSON otherwise."""
    if v is None:
        return "-"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return v if v and all(c.isprintable() and not c.isspace() and c not in '"=' for c in v) else dumps(v)
    if isinstance(v, int):
        return str(v)
    return dumps(json_safe(v))


class RidFilter:
    """Matches events that concern one requester ID (seg, bus, devfn): fields
    bus+devfn (segment of the event's IOMMU), sid (idem), bdf (+ seg), and
    call events whose args name bus and devfn (segment from their iommu arg)."""

    def __init__(self, presenter: EventPresenter, seg: int, bus: int, devfn: int) -> None:
        self.p = presenter
        self.seg, self.rid = seg, (bus << 8) | devfn
        self.bus, self.devfn = bus, devfn
        self._plans: list[dict[str, str]] = []
        for k in presenter.kinds:
            roles = dict(zip(k.fields, (field_role(k.name, f) for f in k.fields)))
            inv: dict[str, str] = {}
            for name, role in roles.items():
                inv.setdefault(role, name)
            self._plans.append(inv)

    def __call__(self, ev: Any) -> bool:
        k = self.p._kind(ev)
        if k is None:
            return False
        kind, _ = k
        inv = self._plans[kind.code]
        raw = dict(zip(kind.fields, ev[F0:]))
        seg = self.p.names.segment(raw.get("iommu"))
        if BUS in inv and DEVFN in inv:
            if raw.get(inv[BUS]) == self.bus and raw.get(inv[DEVFN]) == self.devfn and seg == self.seg:
                return True
        if SID in inv and raw.get(inv[SID]) == self.rid and seg == self.seg:
            return True
        if BDF in inv and raw.get(inv[BDF]) == self.rid:
            s = raw.get(inv[SEG]) if SEG in inv else seg
            if s == self.seg:
                return True
        if ARGS in inv and type(raw.get(inv[ARGS])) in _SEQ:
            args = {a[0]: a[1] for a in raw[inv[ARGS]]
                    if type(a) in _SEQ and len(a) == 2 and isinstance(a[0], str)}
            if args.get("bus") == self.bus and args.get("devfn") == self.devfn:
                s = args.get("seg", self.p.names.segment(args.get("iommu")))
                if s == self.seg:
                    return True
        return False
