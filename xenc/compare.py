"""Fidelity check: does a real-code trace store, allocate and flush what the
model's trace of the same scenario does?

Both traces are *projected* onto what the hardware and the DID allocator
see -- root-entry and context-entry stores (values and method), DID
allocations and frees, and flushes (context cache, IOTLB, write buffer) --
in order, and the projections are compared.  Everything else (calls, locks,
step labels, log lines) is how one implementation gets there and is left
out.  The projection normalises exactly these differences between recording
real code and recording the model:

1. **Root entries.**  The C sets a root entry's context-table pointer and
   its present bit with two 64-bit stores; the model records one event.
   Consecutive stores to the same root entry are merged into one
   (old of the first, new of the last).
2. **Flush position.**  The model records a flush inside ``register_lock``;
   the real code's flush is recorded by the wrapper around the tree's flush
   function, after it dropped the lock.  Locks are not projected, so the
   flush keeps its place among the stores.
3. **Unchanged DID stores.**  A store of a value that is already there is
   visible in the model (``did-map ... old=dom0 new=dom0``) but not through
   a shadow copy of the real ``domid_map[]``; likewise a ``set_bit`` of a
   DID bit already set.  DID bookkeeping events that change nothing are
   dropped; allocations (bit 0 -> 1) and frees (1 -> 0) and every change
   of a slot remain.

and one more that is not about recording but about memory:

4. **Machine addresses by what they are.**  The model and the real code
   allocate pages in different orders (4.15's boot allocates dom_io's shared
   quarantine tables, 4.17 allocates only the page-table levels the units
   need), so the same table has a different address.  A context-table
   pointer and a page-table root are compared as "the context table of
   IOMMU i, bus b" and "domain d's pgd", from the trace's own root-write
   and pt-alloc events.

A difference that survives the projection is a difference between the two
implementations (or a bug in one of them): that is what the check reports.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer import schema as S
from tracer.schema_fields import (
    F_CTX_WRITE_NEW_LO,
    F_CTX_WRITE_OLD_LO,
    F_DID_BITMAP_DID,
    F_DID_BITMAP_IOMMU,
    F_DID_BITMAP_VALUE,
    F_DID_MAP_NEW,
    F_DID_MAP_OLD,
    F_PT_ALLOC_DOMAIN,
    F_PT_ALLOC_MADDR,
    F_PT_ALLOC_WHAT,
    F_ROOT_WRITE_BUS,
    F_ROOT_WRITE_IOMMU,
    F_ROOT_WRITE_NEW,
    F_ROOT_WRITE_OLD,
)

PAGE = 0xFFF
ADDR_MASK = 0x000F_FFFF_FFFF_F000
# Symbolic addresses become these canonical values in a projected trace:
# SYMBOL_BASE + index of the symbol in sorted order, one page each.
SYMBOL_BASE = 0x7_0000_0000
PROJECTED_KINDS = frozenset({S.K_ROOT_WRITE, S.K_CTX_WRITE, S.K_DID_MAP, S.K_DID_BITMAP, S.K_FLUSH_CONTEXT,
                             S.K_FLUSH_IOTLB, S.K_FLUSH_WRITE_BUFFER, S.K_FLUSH_DEV_IOTLB})

Event = list[Any]
Symbol = tuple[object, ...]


@dataclass
class Comparison:
    a: list[Event]          # projected events of A: [kind, op, *fields] (no seq/cpu/func/label)
    b: list[Event]
    first_difference: int | None   # index into both projections, None when equal

    @property
    def equal(self) -> bool:
        return self.first_difference is None

    def describe(self, names: tuple[str, str] = ("A", "B"), context: int = 3) -> list[str]:
        if self.first_difference is None:
            return [f"{len(self.a)} projected events: the same"]
        i = self.first_difference
        out = [f"projections differ at projected event {i + 1} "
               f"({len(self.a)} in {names[0]}, {len(self.b)} in {names[1]}):"]
        for j in range(max(0, i - context), i):
            out.append(f"  = {_fmt(self.a[j])}")
        for name, side in zip(names, (self.a, self.b)):
            out.append(f"  {name}: {_fmt(side[i]) if i < len(side) else '(end)'}")
        return out


def _fmt(ev: Event) -> str:
    kind = S.KINDS[ev[0]]
    return f"op {ev[1]} {kind.name} " + " ".join(f"{f}={_val(v)}" for f, v in zip(kind.fields, ev[2:]))


def _val(v: object) -> str:
    if isinstance(v, int) and not isinstance(v, bool) and v > 0xFFFF:
        return f"{v:#x}"
    return str(v)


def _symbols(events: Iterable[Sequence[Any]]) -> dict[int, Symbol]:
    """maddr -> what it is, from the trace's own events."""
    sym: dict[int, Symbol] = {}
    for ev in events:
        k = ev[S.I_KIND]
        if k == S.K_ROOT_WRITE and ev[F_ROOT_WRITE_NEW] & ADDR_MASK:
            sym.setdefault(ev[F_ROOT_WRITE_NEW] & ADDR_MASK,
                           ("context-table", ev[F_ROOT_WRITE_IOMMU], ev[F_ROOT_WRITE_BUS]))
        elif k == S.K_PT_ALLOC:
            sym.setdefault(ev[F_PT_ALLOC_MADDR], (ev[F_PT_ALLOC_WHAT], ev[F_PT_ALLOC_DOMAIN]))
    return sym


def project(events: Sequence[Sequence[Any]]) -> tuple[list[Event], set[Symbol]]:
    """The projected events ([kind, op, *fields], see the module docstring)
    and the symbols they use."""
    sym = _symbols(events)
    used: set[Symbol] = set()

    def addr(v: int) -> object:
        s = sym.get(v & ADDR_MASK)
        if s is None:
            return v
        used.add(s)
        return (s, v & ~ADDR_MASK)

    out: list[Event] = []
    bits: dict[tuple[int, int], int] = {}
    for ev in events:
        k = ev[S.I_KIND]
        if k not in PROJECTED_KINDS:
            continue
        fields = list(ev[S.F0:])
        if k == S.K_ROOT_WRITE:
            key = (ev[F_ROOT_WRITE_IOMMU], ev[F_ROOT_WRITE_BUS])
            new = addr(ev[F_ROOT_WRITE_NEW])
            prev = out[-1] if out else None
            if prev is not None and prev[0] == S.K_ROOT_WRITE and (prev[2], prev[3]) == key:
                prev[5] = new        # (1) one root entry, two 64-bit stores
                continue
            out.append([k, ev[S.I_OP], key[0], key[1], addr(ev[F_ROOT_WRITE_OLD]), new])
            continue
        if k == S.K_CTX_WRITE:
            fields[F_CTX_WRITE_OLD_LO - S.F0] = addr(ev[F_CTX_WRITE_OLD_LO])
            fields[F_CTX_WRITE_NEW_LO - S.F0] = addr(ev[F_CTX_WRITE_NEW_LO])
        elif k == S.K_DID_MAP:
            if ev[F_DID_MAP_OLD] == ev[F_DID_MAP_NEW]:
                continue             # (3) a store of the value already there
        elif k == S.K_DID_BITMAP:
            key = (ev[F_DID_BITMAP_IOMMU], ev[F_DID_BITMAP_DID])
            if bits.get(key, 0) == ev[F_DID_BITMAP_VALUE]:
                continue             # (3) a bit set (cleared) that already was
            bits[key] = ev[F_DID_BITMAP_VALUE]
        out.append([k, ev[S.I_OP], *fields])
    return out, used


def canonical(projected: list[Event], symbols: set[Symbol]) -> list[Event]:
    """Symbolic addresses as numbers (SYMBOL_BASE + page index of the symbol
    in sorted order), so that a projection can be written as a trace."""
    index = {s: i for i, s in enumerate(sorted(symbols, key=repr))}
    out = []
    for ev in projected:
        out.append([SYMBOL_BASE + index[v[0]] * 0x1000 + v[1] if isinstance(v, tuple) else v for v in ev])
    return out


def compare(a_events: Sequence[Sequence[Any]], b_events: Sequence[Sequence[Any]]) -> Comparison:
    pa, sa = project(a_events)
    pb, sb = project(b_events)
    ca, cb = canonical(pa, sa | sb), canonical(pb, sa | sb)
    first = None
    for i in range(max(len(ca), len(cb))):
        if i >= len(ca) or i >= len(cb) or ca[i] != cb[i]:
            first = i
            break
    return Comparison(ca, cb, first)


def write_projection(header: dict[str, Any], projected: list[Event], path: str | Path) -> None:
    """A canonical projection as an ordinary trace (for `vtdtrace diff`):
    every event on CPU 0, no function, no label."""
    from tracer.writer import TraceWriter

    h = dict(header)
    h["projection"] = "xenc.compare: stores, DID allocations and flushes (docs/REALCODE.md)"
    with TraceWriter(str(path), h, force=True) as w:
        for seq, ev in enumerate(projected, 1):
            w.append([ev[0], seq, 0, ev[1], S.FUNC_CODE[""], "", *ev[2:]])


def main(argv: list[str] | None = None) -> int:
    """python -m xenc.compare MODEL REAL [--write DIR]: exit 0 same, 1 differ, 2 usage."""
    import argparse
    import sys

    from replay.reader import open_trace

    ap = argparse.ArgumentParser(prog="python -m xenc.compare",
                                 description="compare two traces' stores, DID allocations and flushes "
                                             "after the real-code normalisation (docs/REALCODE.md)")
    ap.add_argument("a", metavar="MODEL")
    ap.add_argument("b", metavar="REAL")
    ap.add_argument("--write", metavar="DIR", help="also write both projections as traces into DIR")
    args = ap.parse_args(argv)
    try:
        ta, tb = open_trace(args.a), open_trace(args.b)
        ea, eb = list(ta.events()), list(tb.events())
    except Exception as exc:       # the reader's errors are one line each
        print(f"xenc.compare: {exc}", file=sys.stderr)
        return 2
    c = compare(ea, eb)
    print("\n".join(c.describe((args.a, args.b))))
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        write_projection(ta.header, c.a, out / (Path(args.a).stem + ".projected.vtdt"))
        write_projection(tb.header, c.b, out / (Path(args.b).stem + ".projected.vtdt"))
    return 0 if c.equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
