"""The state key: what two points of two runs must share for the search to
treat them as the same state, so that alternatives from the second are not
explored again (explore/search.py prunes on it).

A point's key is a tuple of

* the replayed state (``replay.state.ReplayState``, folded from the run's
  own events -- the replay, not the engine's canonical snapshot): every
  table, including the cache "may hold" tables (context cache, IOTLB,
  device-TLB, pending writes of a non-coherent unit), and the scalars that
  are state rather than position (the open op, rollback depth);
* each CPU's position: next op, inside an op or not, done, what it waits
  for, its RCU quiescent count, the per-CPU engine attributes the scheduler
  swaps (call stack with step labels, current device, open op, MO14 depth)
  and every engine frame's function and line;
* each CPU's *live locals*: the Python locals of its engine frames (minus
  ``self``).  They hold what the C keeps in registers and on the stack --
  ``prev_did``, an old entry read before a store, the result of
  ``domain_iommu_domid`` -- values read earlier that no event shows and that
  decide what the CPU writes next;
* what the engine keeps outside both: its domains, devices and units field
  by field, with the order of their lists (a domain's pdev list decides the
  order of later work and no event shows it), its page allocator cursor,
  the fault injection counters, ``dma_state_key()`` (DMA caches no event
  shows) and the DMA sources already issued;
* the question asked: its kind, its options and what each costs in
  preemptions, and which CPU is running (the same state can be met at an
  op's end, where switching is free, and inside an op, where it is a
  preemption).

The preemptions used are the search's second coordinate (a state seen with
fewer preemptions left cannot be pruned against one seen with more).

Anything less makes pruning unsound: two points that agree on the replayed
state but not on a CPU's locals continue differently (a CPU that read DID 5
before another CPU freed it writes 5 whatever the map says now).  Engine
objects are mapped to stable values (a domain to its domid, a device to
(seg, bdf), a unit to its index, an op to its index, a CPU to its number,
the engine and the scheduler to a constant -- their state is keyed on its
own), immutable records (NamedTuples) by value, a local function by its code
and the values it closes over; a local of any other
type raises ``UnkeyableLocal`` rather than hashing an ``id()``, so a new
engine type cannot silently make two different states look equal or the
same state look different.

Cost: one sort per replay table and a walk of the CPUs' frames, computed
only at points past the run's prefix that have alternatives.  Sets are kept
as sorted tuples, so the key's ``repr`` is canonical and the search keeps
only its 128-bit digest (``digest``): the same in every process, which is
what lets workers on other machines key states the coordinator compares.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import fields
from types import FrameType, FunctionType
from typing import TYPE_CHECKING, Any

from replay.state import TABLES, ReplayState
from tracer.engine.core import EngineCore, PciDev, XenDomain, _Frame
from tracer.engine.hw import VtdIommu
from tracer.platform import DmaSource, Op, Rmrr
from tracer.sched import Cpu, Scheduler

if TYPE_CHECKING:
    from tracer.engine import Engine
    from tracer.sched import Point

Key = tuple[Any, ...]


class UnkeyableLocal(TypeError):
    """A live local of a type the key does not know how to map to a stable value."""


# Values that are their own stable value (bool is not: True == 1).
_PLAIN = frozenset((int, str, bytes, float, type(None)))


def _stable_domain(v: Any) -> Any:
    return ("dom", v.domid)


def _stable_pdev(v: Any) -> Any:
    return ("pdev", v.seg, v.bdf16)


def _stable_iommu(v: Any) -> Any:
    return ("iommu", v.index)


def _stable_op(v: Any) -> Any:
    return ("op", v.index)


def _stable_rmrr(v: Any) -> Any:
    return ("rmrr", v.segment, v.base, v.end)


def _stable_frame(v: Any) -> Any:
    return ("frame", v.func, v.label)


def _stable_bool(v: Any) -> Any:
    return ("bool", v)


def _stable_seq(v: Any) -> Any:
    return (type(v).__name__, tuple(stable(x) for x in v))


def _stable_dict(v: Any) -> Any:
    # in insertion order: the engine iterates its dicts, and order can decide what it does next
    return ("dict", tuple((stable(k), stable(x)) for k, x in v.items()))


def _sorted(values: Any) -> tuple[Any, ...]:
    """Members of a set in a fixed order: by ``repr``, which never fails on
    mixed types (None beside ints) and gives the same order in every process
    (a frozenset's own order depends on string hashing).  Equal sets give
    equal tuples; values that compare equal but print differently (1 and
    True) would not, which can only cost pruning, never soundness."""
    return tuple(sorted(values, key=repr))


def _stable_set(v: Any) -> Any:
    return ("set", _sorted(stable(x) for x in v))


_CONVERT: dict[type, Callable[[Any], Any]] = {
    XenDomain: _stable_domain, PciDev: _stable_pdev, VtdIommu: _stable_iommu, Op: _stable_op,
    Rmrr: _stable_rmrr, _Frame: _stable_frame, bool: _stable_bool, tuple: _stable_seq, list: _stable_seq,
    dict: _stable_dict, set: _stable_set, frozenset: _stable_set,
}


def _stable_dma_source(v: Any) -> Any:
    return ("dma-source", v.name, v.device, v.iova, v.rmrr, v.write, v.at)


_CONVERT[DmaSource] = _stable_dma_source


def _stable_record(v: Any) -> Any:
    """A NamedTuple (an immutable record, e.g. a translation's outcome): by value."""
    return (type(v).__name__, tuple(stable(x) for x in v))


def _stable_function(v: Any) -> Any:
    """A local function (e.g. a wait predicate closing over what a CPU read):
    its code and the values it closes over and defaults to."""
    code = v.__code__
    cells = tuple(_cell(c, code.co_qualname) for c in v.__closure__ or ())
    defaults = stable(v.__defaults__ or (), f"{code.co_qualname}: defaults")
    return ("function", _file(code.co_filename), code.co_qualname, code.co_firstlineno, cells, defaults)


def _cell(c: Any, where: str) -> Any:
    try:
        value = c.cell_contents
    except ValueError:           # not assigned yet
        return ("empty-cell",)
    return stable(value, f"{where}: closure")


def _stable_engine(v: Any) -> Any:
    return ("engine",)          # one per run; its state is keyed on its own


def _stable_scheduler(v: Any) -> Any:
    return ("scheduler",)       # likewise


def _stable_cpu(v: Any) -> Any:
    return ("cpu", v.index)     # its position and frames are keyed in cpus_part


_CONVERT[FunctionType] = _stable_function
_CONVERT[Scheduler] = _stable_scheduler
_CONVERT[Cpu] = _stable_cpu


def _converter(t: type) -> Callable[[Any], Any] | None:
    conv = _CONVERT.get(t)
    if conv is None:
        if issubclass(t, tuple) and hasattr(t, "_fields"):
            conv = _CONVERT[t] = _stable_record
        elif issubclass(t, EngineCore):
            conv = _CONVERT[t] = _stable_engine
    return conv


def stable(value: Any, where: str = "") -> Any:
    """``value`` as a hashable value that is equal for equal engine states
    in two runs (never an identity)."""
    t = type(value)
    if t in _PLAIN:
        return value
    conv = _converter(t)
    if conv is None:
        raise UnkeyableLocal(f"{where or 'a local'}: no stable value for a {t.__module__}.{t.__qualname__}")
    return conv(value)


def replay_part(st: ReplayState) -> Key:
    """The replayed state without its position (seq, last event): each table
    as its canonical text (``_table_text``)."""
    return (tuple([_table_text(tuple(getattr(st, name).items())) for name in TABLES]), st.open_op, st.op_info,
            st.rollback)


_TEXTS: dict[tuple[Any, ...], str] = {}
_TEXTS_MAX = 1 << 16


def _table_text(items: tuple[Any, ...]) -> str:
    """A table's items as text in ``repr`` order, its sets of possible values
    (the cache tables) sorted likewise: equal tables give equal text in every
    process.  Consecutive keys of a run mostly meet tables unchanged since
    the last key, so texts are kept by the items in their insertion order.
    Sound as long as the replayed tables hold what they hold today -- ints,
    strings, None, tuples of them, and one level of frozensets (the cache
    tables): a cached text then belongs to exactly one value (no 1 beside
    True, no set inside a set's member).  tests/test_explore_parallel.py
    checks the digests across processes."""
    text = _TEXTS.get(items)
    if text is None:
        if len(_TEXTS) >= _TEXTS_MAX:
            _TEXTS.clear()
        text = _TEXTS[items] = "{" + ",".join(sorted([
            repr((k, _sorted(v))) if type(v) is frozenset else repr((k, v)) for k, v in items])) + "}"
    return text


def _file(path: str) -> str:
    """A source file by its name under tracer/engine/, not its absolute
    path: keys compare equal across processes and machines."""
    return os.path.basename(path)


def frame_part(frames: list[FrameType]) -> Key:
    """Each frame's function, line and locals (minus ``self``).  f_locals
    lists a function's locals in the code's own order, so equal contents
    give equal tuples without sorting."""
    out = []
    plain, convert = _PLAIN, _CONVERT
    for f in frames:
        code = f.f_code
        loc = []
        for k, v in f.f_locals.items():
            t = type(v)
            if t in plain:
                loc.append((k, v))
            elif k != "self":
                conv = convert.get(t) or _converter(t)
                if conv is None:
                    stable(v, f"{code.co_qualname}: local {k}")     # raises UnkeyableLocal
                else:
                    try:
                        loc.append((k, conv(v)))
                    except UnkeyableLocal as exc:
                        raise UnkeyableLocal(f"{code.co_qualname}: local {k}: {exc}") from None
        out.append((_file(code.co_filename), code.co_qualname, f.f_lineno, tuple(loc)))
    return tuple(out)


def cpus_part(engine: Engine, sched: Scheduler) -> Key:
    out = []
    for c in sched.cpus:
        if c is sched.current:
            stack, pdev, depth = engine.stack, engine.cur_pdev, engine.mo14_depth
        else:
            saved = c.saved
            stack, pdev, depth = saved.get("stack", []), saved.get("cur_pdev"), saved.get("mo14_depth", 0)
        op_open = engine.open_ops.get(c.index)
        out.append((c.index, c.next_op, c.in_op, c.done, c.wait is not None, c.waiting_for, c.quiescent,
                    stable(stack, "call stack"), stable(pdev, "current device"), op_open, depth,
                    frame_part(sched.frames(c))))
    return tuple(out)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _record(obj: Any) -> Key:
    """Every field of an engine dataclass (a domain, a device, a unit), with
    references to other engine objects by their stable names."""
    t = type(obj)
    names = _FIELDS.get(t)
    if names is None:
        names = _FIELDS[t] = tuple(f.name for f in fields(obj))
    return tuple(stable(getattr(obj, n), f"{t.__name__}.{n}") for n in names)


def engine_part(engine: Engine) -> Key:
    """What the engine keeps besides the replayed state: its domains, devices
    and units field by field -- including the order of their lists (a
    domain's pdev list, its page-table pages), which no event shows and
    which decides the order of later work -- the page allocator, the fault
    counters, the DMA caches and the DMA sources issued (dma_state_key)."""
    return (tuple(_record(d) for d in engine.domains.values()),
            tuple(_record(p) for p in engine.pdevs.values()),
            tuple(_record(u) for u in engine.iommus),
            tuple(engine.pseudo_holders.items()),
            engine._next_page, tuple(sorted(engine._next_pt_page.items())),
            tuple(sorted(engine._fault_counts.items())), engine.dma_state_key())


def state_key(st: ReplayState, engine: Engine, sched: Scheduler, point: Point) -> Key:
    """The key of the state at ``point`` (module docstring)."""
    current = sched.current.index if sched.current is not None else None
    return (point.kind, point.options, point.costs, current, replay_part(st), cpus_part(engine, sched),
            engine_part(engine))



# --- the digest ---------------------------------------------------------------------

def digest(key: Key) -> bytes:
    """A 128-bit BLAKE2b digest of the key's ``repr``: what the search
    stores and what workers send back instead of the whole key (a few
    kilobytes).  The key holds only ints, strings, bytes, None and tuples of
    them -- every set is already a sorted tuple (``_sorted``) -- so its
    ``repr`` is the same text in every process and on every machine.  Two
    different keys share a digest with probability about n^2 / 2^129 for n
    states: below 10^-20 for a billion states."""
    return hashlib.blake2b(repr(key).encode(), digest_size=16).digest()
