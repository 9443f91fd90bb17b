"""Checking decoded events against the catalogue: field types and seq range.

The CRCs prove a chunk is what the writer wrote, not that the writer (or
whoever crafted the file) followed the catalogue.  So after a chunk is
decoded, every event in it is checked before anyone sees it:

* it is an array (list, or tuple with ``open_trace(tuples=True)``) of at
  least the six prefix items;
* ``kind`` is an int code of the trace's own catalogue and ``func`` an int
  code of its function table;
* seq, cpu, op are ints and label a str; the events' seqs run exactly
  ``first_seq .. first_seq + count - 1`` of the chunk header;
* every field of a kind this build knows has its catalogue type
  (tracer.schema.FIELD_TYPES; an exact type match, so True is no int);
  ``args`` of ``call`` holds [str, scalar] pairs.

Kinds this build does not know (appended by a newer minor) and fields after
the ones it knows are tolerated, unchecked, and shown raw.

The check must cost little next to the decode, because the fold reads every
event through it.  Each rule is therefore one pass in C over the chunk
(``map``/``zip``/``set`` over ``operator.itemgetter`` and ``type``), and the
type rule is decided per *signature*: ``(kind, tuple of the item types)``.
A chunk has a handful of distinct signatures, each decided once per trace
and remembered, so the Python-level work per event is nil.  Only when a
rule fails does ``first_problem`` walk the chunk event by event in Python,
to name the first bad event and what is wrong with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import chain, compress, product, repeat
from operator import eq, is_not, itemgetter
from typing import Any, Protocol

from tracer.schema import (
    ARG_VALUE_TYPES,
    DOMID_RESERVED,
    F0,
    FIELD_ENUMS,
    FIELD_RANGES,
    FIELD_TYPES,
    I_FUNC,
    I_KIND,
    I_SEQ,
    KINDS,
    PREFIX,
    PREFIX_TYPES,
    PSEUDO_DOMID_FIRST,
    PSEUDO_DOMID_LAST,
    SCHEMA_VERSION,
    U64_MAX,
    Kind,
)

_KIND, _SEQ, _FUNC = itemgetter(I_KIND), itemgetter(I_SEQ), itemgetter(I_FUNC)
_ARGS = itemgetter(F0)
_NAME, _VALUE = itemgetter(0), itemgetter(1)
_ARG_VALUE_TYPES = frozenset(ARG_VALUE_TYPES)
_NONE = type(None)
_PREFIX = tuple(FIELD_TYPES[t] for t in PREFIX_TYPES)
_MAX_REMEMBERED = 4096      # signatures decided per trace, beyond the catalogue's own
_MAX_VALUE_KEYS = 1 << 16   # value keys decided per trace (a synth trace of 1e6 events has ~10k)
_TAIL_LEN = 5               # value rules in the first fields are decided per key
_TAIL = itemgetter(slice(F0, F0 + _TAIL_LEN))
# Value rules replay.state.fold applies inline, as it dispatches these kinds
# (one comparison each there, against a pass of their own here): a folding
# reader leaves them to the fold.  Only rules that need no platform.
FOLD_VALUE_RULES = frozenset({("lock", "lock"), ("unlock", "lock"), ("ctx-write", "old_lo"),
                              ("ctx-write", "old_hi"), ("ctx-write", "new_lo"), ("ctx-write", "new_hi")})


class _IntOrNone:
    """Equal to the types an optional int field may hold (int, NoneType)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return other is int or other is _NONE

    __hash__ = None  # type: ignore[assignment]  # compares equal to two types: unhashable


_INT_OR_NONE = _IntOrNone()
assert all(t in ((int,), (int, _NONE)) or len(t) == 1 or t == (list, tuple) for t in FIELD_TYPES.values())


_TYPE_NAMES = {list: "array", tuple: "array", dict: "map", str: "str", bytes: "bin", bool: "bool",
               int: "int", float: "float", type(None): "nil"}


def _type_name(v: object) -> str:
    return _TYPE_NAMES.get(type(v), type(v).__name__)


def _a(t: type) -> str:
    """'an array', 'a str', 'nil': the msgpack name of a Python type, for messages."""
    name = _TYPE_NAMES.get(t, t.__name__)
    return name if name == "nil" else ("an " if name[0] in "aeiou" else "a ") + name


class _Rule:
    """The value rule of one field of one kind: ``lo <= v <= hi`` (allowed
    None) or ``v in allowed``; ``optional``: None passes too."""

    __slots__ = ("index", "get", "field", "lo", "hi", "allowed", "optional", "expected", "pseudo")

    def __init__(self, index: int, field: str, lo: int = 0, hi: int = 0, allowed: frozenset[Any] | None = None,
                 optional: bool = False, expected: str = "", pseudo: bool = False) -> None:
        self.index, self.get, self.field = index, itemgetter(index), field
        self.lo, self.hi, self.allowed, self.optional, self.expected = lo, hi, allowed, optional, expected
        # a domain field: a per-device pseudo domain ID (engine `final`) passes too
        self.pseudo = pseudo

    def ok(self, v: Any) -> bool:
        if self.allowed is not None:
            return v in self.allowed or (self.pseudo and type(v) is int and
                                         PSEUDO_DOMID_FIRST <= v <= PSEUDO_DOMID_LAST)
        return bool((self.optional and v is None) or self.lo <= v <= self.hi)

    def column_ok(self, events: Iterable[Sequence[Any]]) -> bool:
        """Every event's value passes: C-level passes over the column."""
        col = list(map(self.get, events))
        if self.allowed is not None:
            if self.allowed.issuperset(col):
                return True
            return self.pseudo and all(map(self.ok, col))
        if self.optional:
            col = list(compress(col, map(is_not, col, repeat(None))))
        return not col or bool(self.lo <= min(col) and max(col) <= self.hi)


_PlatformSets = tuple[frozenset[int] | None, frozenset[int] | None, frozenset[int] | None]


def _platform_sets(platform: object) -> _PlatformSets:
    """(IOMMU ids, segments, domids) the header's platform declares; None
    for what it does not say (a hand-made header without the list).  The
    header passed platform_problem, so the types are right."""
    if type(platform) is not dict:
        return None, None, None
    iommus: frozenset[int] | None = None
    segs: frozenset[int] | None = None
    doms: frozenset[int] | None = None
    units = platform.get("iommus")
    if units is not None:
        iommus = frozenset(u["id"] for u in units)
        if all("segment" in u for u in units):
            seg_set = {u["segment"] for u in units}
            seg_set.update(int(d["bdf"][:4], 16) for d in platform.get("devices") or ())
            seg_set.update(r["segment"] for r in platform.get("rmrrs") or () if "segment" in r)
            segs = frozenset(seg_set)
    if platform.get("domains") is not None:
        doms = frozenset(chain((row[0] for row in platform["domains"]), DOMID_RESERVED))
    return iommus, segs, doms


def _value_rules(kind: Kind, platform_sets: _PlatformSets, enums: bool) -> list[_Rule]:
    """The value rules of a kind this build knows (tracer.schema)."""
    iommus, segs, doms = platform_sets
    rules = []
    for i, (field, t) in enumerate(zip(kind.fields, kind.types), F0):
        opt = t.endswith("?")
        if enums and (kind.name, field) in FIELD_ENUMS:
            words = FIELD_ENUMS[(kind.name, field)]
            rules.append(_Rule(i, field, allowed=frozenset(words), expected="expected one of " + "|".join(words)))
        elif t in ("u64", "u64?"):
            rules.append(_Rule(i, field, 0, U64_MAX, optional=opt, expected="expected 0..2^64-1"))
        elif field in FIELD_RANGES:
            lo, hi = FIELD_RANGES[field]
            rules.append(_Rule(i, field, lo, hi, optional=opt, expected=f"expected {lo}..{hi:#x}"))
        elif field == "iommu" and iommus is not None:
            rules.append(_Rule(i, field, allowed=iommus, expected="not an IOMMU of the header's platform (ids "
                               + (", ".join(map(str, sorted(iommus))) or "none") + ")"))
        elif field == "seg" and segs is not None:
            rules.append(_Rule(i, field, allowed=segs | {None} if opt else segs,
                               expected="not a segment of the header's platform ("
                               + ", ".join(f"{s:04x}" for s in sorted(segs)) + ")"))
        elif t.startswith("dom") and doms is not None:
            rules.append(_Rule(i, field, allowed=doms | {None} if opt else doms, pseudo=True,
                               expected="not a domain of the header nor a reserved domid"))
    return rules


class _Schema(Protocol):
    """What EventCheck reads of a trace's catalogue (replay.reader.TraceSchema)."""

    @property
    def kinds(self) -> Sequence[Any]: ...
    @property
    def funcs(self) -> Sequence[str]: ...
    @property
    def to_current(self) -> Sequence[int]: ...


# A failed check: (index of the event in the chunk, what is wrong).
Problem = tuple[int, str]


class EventCheck:
    """The catalogue rules compiled for one trace's schema (a TraceSchema)
    and, for the value rules that need one, its header's platform."""

    def __init__(self, schema: _Schema, platform: object = None) -> None:
        self.kinds = schema.kinds
        self.nkinds = len(schema.kinds)
        self.nfuncs = len(schema.funcs)
        # file kind code -> per-field allowed Python types (kinds this build knows)
        self.fields: dict[int, tuple[tuple[str, tuple[type, ...], str], ...]] = {}
        self.call: int | None = None
        for code in range(len(schema.kinds)):
            cur = schema.to_current[code] if code < len(schema.to_current) else -1
            if cur >= 0:
                ours = KINDS[cur]
                self.fields[code] = tuple(zip(ours.fields, (FIELD_TYPES[t] for t in ours.types), ours.types))
                if ours.name == "call":
                    self.call = code
        # Value rules per file kind code.  Under a newer schema the closed
        # sets of words are not enforced (a newer build may add words); the
        # ranges and the platform's lists still are.
        sets = _platform_sets(platform)
        enums = getattr(schema, "version", SCHEMA_VERSION) <= SCHEMA_VERSION
        self.values: dict[int, list[_Rule]] = {}
        for code in self.fields:
            rules = _value_rules(KINDS[schema.to_current[code]], sets, enums)
            if rules:
                self.values[code] = rules
        self._value_kinds = frozenset(self.values)
        # The kinds a folding reader checks (check_seq): those with a rule
        # the fold does not apply itself.
        name = {code: KINDS[schema.to_current[code]].name for code in self.values}
        self._seq_value_kinds = frozenset(code for code, rules in self.values.items()
                                          if any((name[code], r.field) not in FOLD_VALUE_RULES for r in rules))
        self._values_seen: set[tuple[int, tuple[Any, ...]]] = set()
        # Rules past the first _TAIL_LEN fields, per kind: the plain ranges
        # sharing one (lo, hi) as one multi-column getter, the rest singly.
        self._wide: list[tuple[int, Any, int, int, list[_Rule], bool]] = []
        for code, rules in self.values.items():
            wide = [r for r in rules if r.index - F0 >= _TAIL_LEN]
            folded = all((name[code], r.field) in FOLD_VALUE_RULES for r in wide)
            if not wide:
                continue
            plain = [r for r in wide
                     if r.allowed is None and not r.optional and (r.lo, r.hi) == (wide[0].lo, wide[0].hi)]
            get = itemgetter(*(r.index for r in plain)) if len(plain) > 1 else None
            singles = [r for r in wide if get is None or r not in plain]
            self._wide.append((code, get, wide[0].lo, wide[0].hi, singles, folded))
        # Signatures known good: every exact combination for the known kinds
        # (args may be a list or a tuple), then whatever _signature_problem
        # accepts later (unknown kinds, extra trailing fields).
        # A signature is (kind, (type(kind), type(seq), ..., type(label), *field types)).
        self.ok: set[tuple[Any, tuple[type, ...]]] = {(code, sig) for code, fields in self.fields.items()
                        for sig in product((int,), *_PREFIX, *(types for _, types, _ in fields))}
        self._verdicts: dict[tuple[Any, tuple[type, ...]], str | None] = {}
        self._kind_codes = frozenset(range(self.nkinds))
        self._func_codes = frozenset(range(self.nfuncs))
        # For _types_ok, per array type: kind -> the item types expected,
        # kind -> item count.
        self._flat: dict[type, tuple[dict[int, tuple[Any, ...]], dict[int, int]]] = {}
        array: type
        for array in (list, tuple):
            exp: dict[int, tuple[Any, ...]] = {}
            lens: dict[int, int] = {}
            for code, fields in self.fields.items():
                types = [(int,)] + list(_PREFIX) + [t if t != (list, tuple) else (array,)
                                                    for _, t, _ in fields]
                exp[code] = tuple(t[0] if len(t) == 1 else _INT_OR_NONE for t in types)
                lens[code] = len(types)
            self._flat[array] = (exp, lens)

    # -- the fast path ---------------------------------------------------------------
    def check(self, events: Sequence[Any], first: int, array: type) -> Problem | None:
        """None when every event passes; else (index in the chunk, message)
        of the first event that does not."""
        try:
            kinds = self._types_ok(events, array)
            if kinds is not None and list(map(_SEQ, events)) == list(range(first, first + len(events))):
                funcs = list(map(_FUNC, events))
                if (0 <= min(funcs) and max(funcs) < self.nfuncs and self._args_ok(events, kinds, array)
                        and self._values_ok(events, kinds)):
                    return None
        except (TypeError, ValueError, IndexError, KeyError):
            # Events odd enough to break a C pass (no array, too short, a
            # value of another type in a comparison, an unhashable item, an
            # empty min()): the Python walk below names the first of them.
            pass
        return self.first_problem(events, first, array)

    def check_seq(self, events: Sequence[Any], first: int, array: type) -> Problem | None:
        """The container rules: every event an array, seqs running
        ``first ..``, kind and func codes within the trace's tables.  For
        consumers that fold every event they read: the fold checks the rest
        (prefix and field types, call args) as it applies each event
        (replay.state.fold), which costs less than a pass of its own.  A
        chunk failing here gets ``check``'s message."""
        # Events that are no arrays fail here or in the fold (ev[0] of a map,
        # a str's characters ...); a seq 5.0 equals 5 here, the fold checks
        # that seqs are ints; a float code 2.0 is in the code set, the fold
        # checks that codes are ints.
        try:
            kinds = list(map(_KIND, events))
            if (list(map(_SEQ, events)) == list(range(first, first + len(events)))
                    and set(kinds) <= self._kind_codes and set(map(_FUNC, events)) <= self._func_codes
                    and self._values_ok(events, kinds, folding=True)):
                return None
        except (TypeError, ValueError, IndexError, KeyError):
            # Events odd enough to break a C pass (no array, too short, a
            # value of another type in a comparison, an unhashable item, an
            # empty min()): the Python walk below names the first of them.
            pass
        return self.first_problem(events, first, array)

    def _types_ok(self, events: Sequence[Any], array: type) -> list[Any] | None:
        """Every item of every event has a type its kind allows.

        The common case in one comparison: the item types of the whole chunk,
        flattened, against the types the events' kinds expect, after the item
        counts matched.  An optional field expects _IntOrNone, which compares
        equal to both (list equality tries identity first, so only those
        items cost a Python-level comparison).  Kinds unknown here or extra
        trailing fields make the counts differ: then per-event signatures
        (slower, still C-level) decide."""
        exp, lens = self._flat[array]
        if set(map(type, events)) != {array}:
            return None
        kinds = list(map(_KIND, events))
        try:
            if list(map(len, events)) != list(map(lens.__getitem__, kinds)):
                return kinds if self._signatures_ok(events, kinds) else None
        except (KeyError, TypeError):        # a kind code this build does not know, or no code at all
            return kinds if self._signatures_ok(events, kinds) else None
        if list(map(type, chain.from_iterable(events))) == list(chain.from_iterable(map(exp.__getitem__, kinds))):
            return kinds
        return None
    def _signatures_ok(self, events: Sequence[Any], kinds: list[Any]) -> bool:
        keys = set(zip(kinds, map(tuple, map(map, repeat(type), events))))
        for key in keys - self.ok:
            if self._signature_problem(key) is not None:
                return False
            if len(self.ok) < _MAX_REMEMBERED:
                self.ok.add(key)
        return True

    def _values_ok(self, events: Sequence[Any], kinds: list[Any], folding: bool = False) -> bool:
        """Every field with a value rule holds an allowed value.

        The rules sit almost all in an event's first five fields, and those
        take few distinct values in a trace (IOMMU, bus, devfn, words,
        domids, a lock's target ...).  So, like the types, they are decided
        per key: (kind, first five fields) of every event with rules, one
        set built in C, and only keys not seen before in this trace are
        decided in Python.  The rules past the fifth field (ctx-write's
        128-bit entries, whose values never repeat) are min/max passes over
        the columns of that kind.  A value of the wrong type raises: the
        caller's slow path names it.  folding: the events go on to the
        fold, which applies FOLD_VALUE_RULES itself."""
        vk = self._seq_value_kinds if folding else self._value_kinds
        mask = list(map(vk.__contains__, kinds))
        keys = set(zip(compress(kinds, mask), map(tuple, map(_TAIL, compress(events, mask)))))
        known = self._values_seen
        if not keys <= known:
            for key in keys - known:
                if not self._tail_ok(key):
                    return False
                if len(known) < _MAX_VALUE_KEYS:
                    known.add(key)
        for code, get, lo, hi, singles, folded in self._wide:
            if folding and folded:
                continue
            group = list(compress(events, map(eq, kinds, repeat(code))))
            if not group:
                continue
            if get is not None:
                col = list(chain.from_iterable(map(get, group)))
                if min(col) < lo or max(col) > hi:
                    return False
            for rule in singles:
                if not rule.column_ok(group):
                    return False
        return True

    def _tail_ok(self, key: tuple[int, tuple[Any, ...]]) -> bool:
        code, tail = key
        for rule in self.values[code]:
            i = rule.index - F0
            if i >= _TAIL_LEN:
                break
            if i >= len(tail) or not rule.ok(tail[i]):
                return False
        return True

    def value_problem(self, ev: Sequence[Any]) -> str | None:
        """What is wrong with the values of ``ev`` (item types already
        right), or None."""
        for rule in self.values.get(ev[I_KIND], ()):
            v = ev[rule.index]
            if not rule.ok(v):
                return f"{self.kinds[ev[I_KIND]].name} field {rule.field} is {v!r}, {rule.expected}"
        return None

    def _args_ok(self, events: Sequence[Any], kinds: list[Any], array: type) -> bool:
        """call args: arrays of two, a str name and a scalar value."""
        if self.call is None:
            return True
        calls = compress(events, map(eq, kinds, repeat(self.call)))
        pairs = list(chain.from_iterable(map(_ARGS, calls)))
        if not pairs:
            return True
        if set(map(type, pairs)) != {array} or set(map(len, pairs)) != {2}:
            return False
        types = list(map(type, chain.from_iterable(pairs)))
        return set(types[0::2]) == {str} and set(types[1::2]) <= _ARG_VALUE_TYPES

    def _signature_problem(self, key: tuple[Any, tuple[type, ...]]) -> str | None:
        """What is wrong with every event of this signature (None: nothing)."""
        if key in self._verdicts:
            return self._verdicts[key]
        code, sig = key
        msg: str | None = None
        if len(sig) < F0:
            msg = f"has {len(sig)} items, an event has at least {F0}"
        elif sig[0] is not int or not 0 <= code < self.nkinds:
            msg = (f"kind {code!r} is not a code of the trace's catalogue ({self.nkinds} kinds)"
                   if sig[0] is int else f"kind is {_a(sig[0])}, not an int")
        else:
            for name, types, t in zip(PREFIX, _PREFIX, sig[1:F0]):
                if t not in types:
                    msg = f"{name} is {_a(t)}, expected {PREFIX_TYPES[PREFIX.index(name)]}"
                    break
            fields = self.fields.get(code)
            if msg is None and fields is not None:
                kind = self.kinds[code].name
                if len(sig) - F0 < len(fields):
                    msg = f"{kind} has {len(sig) - F0} fields, expected {len(fields)}"
                else:
                    for (name, types, tname), t in zip(fields, sig[F0:]):
                        if t not in types:
                            msg = f"{kind} field {name} is {_a(t)}, expected {tname}"
                            break
        if len(self._verdicts) < _MAX_REMEMBERED:   # a crafted file may hold many
            self._verdicts[key] = msg
        return msg

    # -- the slow path: name the first bad event -------------------------------------
    def first_problem(self, events: Sequence[Any], first: int, array: type) -> Problem | None:
        for i, ev in enumerate(events):
            msg = self.problem(ev, first + i, array)
            if msg is not None:
                return i, msg
        return None

    def fields_problem(self, ev: Sequence[Any]) -> str | None:
        """What is wrong with the item types of ``ev`` (an array); decided
        per signature and remembered, so cheap for the kinds that repeat."""
        return self._signature_problem((ev[I_KIND], tuple(map(type, ev))))

    def problem(self, ev: Any, seq: object, array: type = list, codes: bool = True, values: bool = True) -> str | None:
        """What is wrong with ``ev`` as the event numbered ``seq`` (None:
        nothing).  codes=False: func codes are not looked up (the fold's
        caller, the reader, checked them against the trace's own table).
        values=False: only the type rules, the ones the fold applies itself
        (the reader applies the value rules per chunk on every path)."""
        expected: Any = array         # (as Any, so that mypy does not narrow ev to object)
        if type(ev) is not expected:
            return f"is {_a(type(ev))}, not an event array"
        try:
            key = (ev[I_KIND] if len(ev) else None, tuple(map(type, ev)))
            hash(key)
        except TypeError:
            return f"kind is {_a(type(ev[I_KIND]))}, not an int"
        msg = self._signature_problem(key)
        if msg is not None:
            return msg
        if ev[I_SEQ] != seq:
            return f"carries seq {ev[I_SEQ]}, expected {seq}"
        if codes and not 0 <= ev[I_FUNC] < self.nfuncs:
            return f"func {ev[I_FUNC]} is not a code of the trace's function table ({self.nfuncs})"
        if ev[I_KIND] == self.call:
            for j, pair in enumerate(ev[F0]):
                if type(pair) is not expected or len(pair) != 2:
                    return f"call argument {j} is {_a(type(pair))}, expected an array [name, value]"
                if type(pair[0]) is not str or type(pair[1]) not in ARG_VALUE_TYPES:
                    return (f"call argument {j} is [{_type_name(pair[0])}, {_type_name(pair[1])}], "
                            "expected [str, int|str|bool|nil]")
        return self.value_problem(ev) if values else None


# --- the header's platform description -------------------------------------------------
# What tracer.platform.Platform.to_header writes, as (key, allowed types)
# per list entry.  Keys may be absent (older or hand-made headers); present
# ones must have these types, since the renderers compute with them
# (segments and buses into requester IDs, domids into names).
_S, _I, _B, _N, _L = str, int, bool, type(None), list
_PLATFORM_ROWS: dict[str, dict[str, tuple[type, ...]]] = {
    "iommus": {"id": (_I,), "segment": (_I,), "include_all": (_B,), "devices": (_L,),
               "nd": (_I,), "ndoms": (_I,), "levels": (_I,)},
    "devices": {"bdf": (_S,), "type": (_S, _N), "id": (_S, _N), "phantom_stride": (_I,), "ats": (_B,),
                "owner": (_S, _N), "present": (_B,), "secondary": (_I, _N), "subordinate": (_I, _N)},
    "rmrrs": {"base": (_I,), "end": (_I,), "segment": (_I,), "devices": (_L,)},
}
_REQUIRED = {"iommus": ("id",), "devices": ("bdf",), "rmrrs": ()}
# A device as the header names it: SSSS:BB:DD.F (device 0-1f, function 0-7).
# The renderers turn these into requester IDs, so "zz:zz.z" or a function 9
# is a damaged header, not a device.
_BDF = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]")
_SCALARS = (_S, _I, _B, _N)


def platform_problem(platform: Any, present: bool = False) -> str | None:
    """What is wrong with a header's ``platform`` map (None: nothing).
    ``present``: the header has the key, so nil is not "no platform" (the
    writer never writes one) but damage."""
    if platform is None and not present:
        return None
    if type(platform) is not dict:
        return f"platform is {_a(type(platform))}, expected a map"
    knobs = platform.get("knobs")
    if knobs is not None and (type(knobs) is not dict or not all(type(v) in _SCALARS for v in knobs.values())):
        return "platform.knobs must be a map of scalars"
    for section, fields in _PLATFORM_ROWS.items():
        rows = platform.get(section)
        if rows is None:
            continue
        if type(rows) is not list:
            return f"platform.{section} is {_a(type(rows))}, expected an array"
        for i, row in enumerate(rows):
            where = f"platform.{section}[{i}]"
            if type(row) is not dict:
                return f"{where} is {_a(type(row))}, expected a map"
            for key in _REQUIRED[section]:
                if key not in row:
                    return f"{where} has no {key}"
            for key, types in fields.items():
                if key in row and type(row[key]) not in types:
                    return (f"{where}.{key} is {_a(type(row[key]))}, expected "
                            + " or ".join(_TYPE_NAMES[t] for t in types))
            if "devices" in fields and "devices" in row and not all(
                    type(b) is str and _BDF.fullmatch(b) for b in row["devices"]):
                return f"{where}.devices must hold BDFs (SSSS:BB:DD.F)"
            if section == "devices" and not _BDF.fullmatch(row["bdf"]):
                return f"{where}.bdf is {row['bdf']!r}, expected SSSS:BB:DD.F"
    domains = platform.get("domains")
    if domains is not None:
        if type(domains) is not list:
            return f"platform.domains is {_a(type(domains))}, expected an array"
        for i, row in enumerate(domains):
            if (type(row) is not list or not 2 <= len(row) <= 3 or type(row[0]) is not int
                    or type(row[1]) is not str or (len(row) == 3 and type(row[2]) is not bool)):
                return f"platform.domains[{i}] must be [domid, name, hardware]"
    return None
