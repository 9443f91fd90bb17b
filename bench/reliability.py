"""python -m bench.reliability [--trials N] [--seed S] [--json] [--class NAME]...

The reliability table: how the whole command set behaves on damaged, truncated,
crafted and stale-cached input.  Anyone can rerun it; the README quotes its
output.  tests/test_fuzz_cli.py draws from the same mutation classes with
Hypothesis and asserts the same oracle, so the table and the test cannot drift.

Method
------
1. **Corpus.**  Two intact traces are written into a scratch folder: a synth
   trace (several chunks, every kind of operation) and the shipped
   ``s1-usb-rmrr`` trace re-framed into small chunks.  Every command of
   ``COMMANDS`` runs once on each intact trace *without a sidecar*; its exit
   code and stdout are the reference answer.

2. **Mutation classes** (``CLASSES``).  Each builds one damaged file from an
   intact one and says what a correct tool must do with it:

   ``damage``      accidental damage (bit flips, cuts, overwrites, a zeroed
                   page, a bit rotting behind an unchanged size/mtime/inode).
                   Correct: exit 3 (or 2 when the file no longer looks like a
                   trace).  Every byte of a trace is under a CRC and every
                   command but the viewer verifies them all before it
                   answers, so even an answer that reads nothing damaged
                   (``show --at`` before the damage) must say exit 3 -- and a
                   cached intact answer with exit 0 is exactly the silent
                   failure this class looks for.
   ``invalid``     CRC-valid, well-framed, but with content this build's
                   catalogue forbids (a field of the wrong type, a seq outside
                   its chunk's range, absurd nesting, a malformed platform).
                   Correct: exit 3 (2 accepted for a malformed header).
   ``tolerated``   CRC-valid content the format promises to accept (unknown
                   kinds, extra trailing fields, a newer schema version,
                   control characters in names).  Correct: exit 0 or 1, with
                   no raw control characters in text output.
   ``cache``       the trace is intact, the sidecar beside it is damaged or
                   was built on a damaged copy.  Correct: the reference answer
                   with the reference exit code.

   ``damage`` classes run twice, without and with a sidecar built on the
   intact file *before* the damage (the case where a cache could outvote the
   trace).

3. **Oracle** (``judge``), for every command run:
   * ``internal`` -- "internal error", a traceback, a signal, an exit code
     outside {0, 1, 2, 3}, or more than one error line on stderr;
   * ``silent``   -- exit 0 or 1 on a damaged file; exit 0 or 1 with an answer
     different from the reference (invalid/cache classes); raw control
     characters in text output;
   * ``reported`` -- exit 3 (or 2 where accepted);
   * ``same``     -- the reference answer and exit code;
   * ``answered`` -- exit 0/1 on a ``tolerated`` input;
   * ``refused``  -- exit 2/3 on a ``tolerated`` input (a false alarm).
   A class passes when ``internal``, ``silent`` and ``refused`` are all zero.

Commands run in a forked child of this process (the CLI's own ``main``,
stdout/stderr on pipes, cwd = the trial's folder, a private
``XDG_CACHE_HOME``) so thousands of runs cost milliseconds each and no state
leaks from one run to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import shutil
import signal
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack

TRACE = "t.vtdt"
REF = "ref.vtdt"

# (name, argv) -- TRACE is the mutated file, REF an intact copy of the same trace.
COMMANDS: list[tuple[str, list[str]]] = [
    ("info", ["info", TRACE]),
    ("info --json", ["info", "--json", TRACE]),
    ("log", ["log", TRACE]),
    ("log --jsonl", ["log", "--jsonl", TRACE]),
    ("show", ["show", TRACE]),
    ("show --at", ["show", "--at", "{at}", TRACE]),
    ("show --json", ["show", "--json", TRACE]),
    ("check --json", ["check", "--json", TRACE]),
    ("export chrome", ["export", TRACE, "--format", "chrome"]),
    ("export jsonl", ["export", TRACE, "--format", "jsonl"]),
    ("diff", ["diff", TRACE, REF]),
]
TEXT_COMMANDS = {"info", "log", "show", "show --at", "diff"}
CONTROL = bytes(c for c in range(32) if c not in (9, 10)) + b"\x7f"


# -- running a command ---------------------------------------------------------

@dataclass(frozen=True)
class Run:
    code: int
    out: bytes
    err: bytes


def _preload() -> None:
    """Import what every command needs once, in the parent, so each forked
    child starts warm (about 10x faster than importing per run)."""
    import importlib

    from vtdtrace import cli
    for name, _ in cli.COMMANDS:
        if name != "view":
            importlib.import_module(f"vtdtrace.commands.{name}")
    for mod in ("replay.session", "replay.diff", "replay.hazards", "replay.jsonout", "replay.render",
                "replay.export_chrome"):
        importlib.import_module(mod)


def run_cli(argv: list[str], cwd: str, cache_home: str) -> Run:
    """Run `vtdtrace ARGV` in a forked child; returns its exit code (-N for a
    signal), stdout and stderr."""
    _preload()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into the caller
        code = 120
        try:
            os.close(out_r)
            os.close(err_r)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            os.chdir(cwd)
            os.environ["XDG_CACHE_HOME"] = cache_home
            sys.stdout = open(1, "w", encoding="utf-8", errors="surrogateescape", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
            from vtdtrace.cli import main
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException:  # noqa: BLE001 -- a traceback is what the oracle looks for
            import traceback
            traceback.print_exc()
            code = 121
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code & 0xFF)
    os.close(out_w)
    os.close(err_w)
    bufs = {out_r: bytearray(), err_r: bytearray()}
    open_fds = [out_r, err_r]
    while open_fds:
        ready, _, _ = select.select(open_fds, [], [])
        for fd in ready:
            data = os.read(fd, 1 << 16)
            if data:
                bufs[fd] += data
            else:
                open_fds.remove(fd)
                os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return Run(code, bytes(bufs[out_r]), bytes(bufs[err_r]))


# -- the corpus ----------------------------------------------------------------

@dataclass
class Base:
    """One intact trace and the reference answers of every command on it."""
    name: str
    data: bytes
    header: dict
    events: list
    chunk_events: int
    at: int
    layout: dict
    reference: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # Hypothesis prints fixtures: keep it short
        return f"Base({self.name!r}, {len(self.events)} events)"


def frame(header_meta: dict, events: list, chunk_events: int, *, chunk_seq=None) -> bytes:
    """A complete, CRC-valid trace of EVENTS under the meta map HEADER_META,
    written with the project's own framing primitives (no validation: that is
    the point).  chunk_seq optionally overrides each chunk's first_seq."""
    from tracer import writer as W

    head = W.encode_header(header_meta)
    tag = W.file_tag(head)
    out = bytearray(head)
    index = bytearray()
    pack = msgpack.Packer(use_bin_type=True).pack
    seq = 1
    chunks = [events[i:i + chunk_events] for i in range(0, len(events), chunk_events)]
    for k, evs in enumerate(chunks):
        payload = b"".join(pack(e) for e in evs)
        first = chunk_seq[k] if chunk_seq else seq
        offset = len(out)
        out += W.chunk_header(W.SYNC_EVENTS, tag, payload, len(evs), first)
        out += payload
        index += W.INDEX_ENTRY.pack(offset, first, len(evs), __import__("zlib").crc32(payload))
        seq += len(evs)
    index_offset = len(out)
    ihead = W.chunk_header(W.SYNC_INDEX, tag, index, len(chunks), 0)
    out += ihead + index
    trailer = W.TRAILER.pack(W.TRAILER_MARKER, tag, index_offset, len(events),
                             int.from_bytes(ihead[-4:], "little"), 0)
    out += trailer[:-4] + __import__("zlib").crc32(trailer[:-4]).to_bytes(4, "little")
    return bytes(out)


def _read_intact(path: str) -> tuple[dict, list, dict]:
    from replay.reader import open_trace

    with open_trace(path) as t:
        header = dict(t.header)
        events = [list(e) for e in t.events()]
        layout = {"chunks": [tuple(c) for c in t.chunks]}
    return header, events, layout


def build_corpus(root: str, synth_events: int = 3000) -> list[Base]:
    """The intact traces, written under ROOT, with their reference answers."""
    from tracer.schema import schema_dict  # noqa: F401 -- the corpus is this build's

    os.makedirs(root, exist_ok=True)
    bases = []
    synth_path = os.path.join(root, "synth.vtdt")
    r = run_cli(["synth", "--events", str(synth_events), "--seed", "3", "-o", synth_path, "--force"],
                root, os.path.join(root, "xdg"))
    if r.code != 0:
        raise RuntimeError(f"synth failed: {r.err.decode(errors='replace')}")
    header, events, layout = _read_intact(synth_path)
    with open(synth_path, "rb") as f:
        data = f.read()
    bases.append(Base("synth", data, header, events, 1024, len(events) // 2, layout))

    from pathlib import Path
    shipped = Path(__file__).resolve().parent.parent / "traces" / "s1-usb-rmrr.direct-nocx16.vtdt"
    header, events, _ = _read_intact(str(shipped))
    data = frame(header, events, 64)
    bases.append(Base("s1", data, header, events, 64, 150, {}))
    for b in bases:
        b.layout = _layout(b.data)
        b.reference = references(b, os.path.join(root, f"ref-{b.name}"))
    return bases


def _layout(data: bytes) -> dict:
    """Byte ranges of the header, each chunk's payload, index and trailer."""
    from tracer import writer as W

    meta_len = W.FILE_HEADER.unpack_from(data)[3]
    pos = W.FILE_HEADER.size + meta_len
    payloads = []
    trailer_off = len(data) - W.TRAILER.size
    index_off = W.TRAILER.unpack_from(data, trailer_off)[2]
    while pos < index_off:
        plen = W.CHUNK_HEADER.unpack_from(data, pos)[2]
        payloads.append((pos + W.CHUNK_HEADER.size, pos + W.CHUNK_HEADER.size + plen))
        pos += W.CHUNK_HEADER.size + plen
    return {"header_end": W.FILE_HEADER.size + meta_len, "payloads": payloads,
            "index": index_off, "trailer": trailer_off}


def _argv(argv: list[str], base: Base) -> list[str]:
    return [a.replace("{at}", str(base.at)) for a in argv]


def references(base: Base, folder: str) -> dict:
    """Every command's answer on the intact trace, without a sidecar."""
    _fresh(folder)
    _write(folder, TRACE, base.data)
    _write(folder, REF, base.data)
    ref = {}
    for name, argv in COMMANDS:
        _drop_sidecars(folder)
        r = run_cli(_argv(argv, base), folder, os.path.join(folder, "xdg"))
        if r.code not in (0, 1):
            raise RuntimeError(f"{name} on the intact {base.name} trace exited {r.code}: {r.err!r}")
        ref[name] = r
    _drop_sidecars(folder)
    return ref


def _fresh(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(os.path.join(folder, "xdg"))


def _write(folder: str, name: str, data: bytes) -> None:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def _overwrite_in_place(path: str, data: bytes) -> None:
    """Replace a file's bytes keeping its inode (as an editor or a disk would)."""
    with open(path, "r+b") as f:
        f.write(data)
        f.truncate(len(data))


def _drop_sidecars(folder: str) -> None:
    for n in os.listdir(folder):
        if n.endswith("-cache"):
            os.unlink(os.path.join(folder, n))
    shutil.rmtree(os.path.join(folder, "xdg"), ignore_errors=True)
    os.makedirs(os.path.join(folder, "xdg"))


# -- mutation classes ----------------------------------------------------------
# Each returns the new trace bytes, or None when the draw does not apply.

def _flip(data: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


def m_bit_flip(rng: random.Random, base: Base):
    return _flip(base.data, rng.randrange(len(base.data)), rng.randrange(8))


def m_payload_flip(rng: random.Random, base: Base):
    """A bit of a later chunk's payload: neither index nor trailer changes."""
    lo, hi = rng.choice(base.layout["payloads"][1:] or base.layout["payloads"])
    return _flip(base.data, rng.randrange(lo, hi), rng.randrange(8))


def m_truncate(rng: random.Random, base: Base):
    return base.data[:rng.randrange(len(base.data))]


def m_overwrite(rng: random.Random, base: Base):
    n = rng.randint(1, 64)
    pos = rng.randrange(len(base.data) - n)
    b = bytearray(base.data)
    b[pos:pos + n] = rng.randbytes(n)
    return None if bytes(b) == base.data else bytes(b)


def m_zero_page(rng: random.Random, base: Base):
    pages = max(1, len(base.data) // 4096)
    pos = rng.randrange(pages) * 4096
    b = bytearray(base.data)
    end = min(len(b), pos + 4096)
    b[pos:end] = bytes(end - pos)
    return None if bytes(b) == base.data else bytes(b)


def _nest(depth: int):
    v: object = 0
    for _ in range(depth):
        v = [v]
    return v


_BAD_VALUES = [lambda r: "x" * r.randint(0, 20), lambda r: [1, [2]], lambda r: {"k": 1},
               lambda r: 1.5, lambda r: b"\x00\xff", lambda r: -(1 << 63), lambda r: (1 << 64) - 1,
               lambda r: True, lambda r: ["lock", ["nested"]], lambda r: {"\x1b[2J": None}]


def _crafted(base: Base, events: list, header: dict | None = None, **kw) -> bytes:
    return frame(header if header is not None else base.header, events, base.chunk_events, **kw)


def _retype(rng: random.Random, base: Base, positions) -> bytes | None:
    """One item of one event, at one of POSITIONS(event), replaced by a value
    of another type (a str for a list or a list for a str counts as another)."""
    evs = [list(e) for e in base.events]
    ev = evs[rng.randrange(len(evs))]
    choices = positions(ev)
    if not choices:
        return None
    j = rng.choice(choices)
    new = rng.choice(_BAD_VALUES)(rng)
    if type(new) is type(ev[j]) or (isinstance(ev[j], (list, str)) and isinstance(new, type(ev[j]))):
        return None
    ev[j] = new
    return _crafted(base, evs)


def m_field_type(rng: random.Random, base: Base):
    """One field of one event replaced by a value of another type."""
    return _retype(rng, base, lambda ev: range(6, len(ev)))


def m_header_field_type(rng: random.Random, base: Base):
    """Event header items (kind, cpu, op, func, label) of the wrong type."""
    return _retype(rng, base, lambda ev: (0, 2, 3, 4, 5))


def m_deep_nesting(rng: random.Random, base: Base):
    evs = [list(e) for e in base.events]
    ev = evs[rng.randrange(len(evs))]
    j = rng.randrange(6, len(ev)) if len(ev) > 6 else 5
    ev[j] = _nest(rng.randint(400, 510))  # msgpack packs at most 511 levels
    return _crafted(base, evs)


def m_seq_range(rng: random.Random, base: Base):
    """An event's seq outside its chunk's range (the chunk header still says
    first_seq and count correctly)."""
    evs = [list(e) for e in base.events]
    i = rng.randrange(len(evs))
    evs[i][1] = rng.choice((0, evs[i][1] + 1, evs[i][1] + 10_000, 10 ** 12, -1))
    return _crafted(base, evs)


def m_short_event(rng: random.Random, base: Base):
    evs = [list(e) for e in base.events]
    i = rng.randrange(len(evs))
    cut = rng.randrange(0, len(evs[i]))
    evs[i] = evs[i][:cut]
    return _crafted(base, evs)


def m_platform(rng: random.Random, base: Base):
    """A malformed platform description in an otherwise valid header."""
    h = json.loads(json.dumps(base.header, default=lambda o: o.hex() if isinstance(o, bytes) else str(o)))
    plat = h.get("platform", {})
    choice = rng.randrange(6)
    if choice == 0 and plat.get("iommus"):
        plat["iommus"][0]["segment"] = "x"
    elif choice == 1 and plat.get("devices"):
        plat["devices"][0]["bdf"] = rng.choice(["zz:zz.z", 7, None, "0000:00:00.9"])
    elif choice == 2:
        plat["domains"] = rng.choice(["dom0", [[0]], [["x", "dom0", True]], {"a": 1}])
    elif choice == 3:
        h["platform"] = rng.choice([None, [], "platform"])
    elif choice == 4 and plat.get("rmrrs") is not None:
        plat["rmrrs"] = [{"base": "low", "end": -1}]
    elif choice == 5:
        plat["knobs"] = [1, 2]
    else:
        return None
    return _crafted(base, base.events, h)


def m_value(rng: random.Random, base: Base):
    """One index-like field of one event set out of its range, with the
    right type: an IOMMU or segment the platform lacks, a bus or devfn
    beyond 0xff, a BDF beyond 0xffff, a negative u64, a word outside a
    closed set, a domid the header does not name."""
    from tracer import schema as S
    from tracer.schema import FIELD_ENUMS, FIELD_RANGES
    names = [k[0] for k in base.header["schema"]["kinds"]]
    fields = {n: f for n, f in base.header["schema"]["kinds"]}
    types = {k.name: dict(zip(k.fields, k.types)) for k in S.KINDS}
    evs = [list(e) for e in base.events]
    picks = []
    for i, e in enumerate(evs):
        kind = names[e[0]]
        for j, f in enumerate(fields.get(kind, ()), 6):
            t = types.get(kind, {}).get(f, "")
            if j < len(e) and ((kind, f) in FIELD_ENUMS or f in FIELD_RANGES or f in ("iommu", "seg")
                               or t == "u64" or t.startswith("dom")):
                picks.append((i, j, kind, f, t))
    if not picks:
        return None
    i, j, kind, f, t = rng.choice(picks)
    new: str | int
    if (kind, f) in FIELD_ENUMS:
        new = rng.choice(["zzz", "middle", "", "LO"])
    elif t == "u64":
        new = -rng.randint(1, 1 << 63)
    elif f in FIELD_RANGES:
        new = rng.choice([-1, FIELD_RANGES[f][1] + 1, FIELD_RANGES[f][1] + rng.randint(2, 1 << 20)])
    elif f in ("iommu", "seg"):
        new = rng.choice([-1, 99, 0x7777])
    else:
        new = rng.choice([123456, -5, 0x7FEF, 65536])
    evs[i][j] = new
    return _crafted(base, evs)


def m_unknown_kind(rng: random.Random, base: Base):
    """A kind code this build does not know, inserted as a whole event: the
    seqs after it shift, as a newer writer would have numbered them."""
    evs = [list(e) for e in base.events]
    i = rng.randrange(len(evs))
    kinds = len(base.header["schema"]["kinds"])
    new = [kinds + rng.randrange(3), 0, 0, evs[i][3], 0, "", rng.randrange(10), "extra"]
    evs.insert(i, new)
    for k, e in enumerate(evs):
        e[1] = k + 1
    h = dict(base.header)
    schema = dict(h["schema"])
    schema["kinds"] = list(schema["kinds"]) + [[f"future-kind-{n}", ["a", "b"]] for n in range(3)]
    h["schema"] = schema
    return _crafted(base, evs, h)


def m_extra_fields(rng: random.Random, base: Base):
    evs = [list(e) for e in base.events]
    for _ in range(rng.randint(1, 5)):
        evs[rng.randrange(len(evs))].extend(rng.choice([[1], ["x", None], [{"k": [1]}]]))
    return _crafted(base, evs)


def m_newer_schema(rng: random.Random, base: Base):
    h = dict(base.header)
    schema = dict(h["schema"])
    schema["schema_version"] = schema["schema_version"] + rng.randint(1, 5)
    h["schema"] = schema
    return _crafted(base, base.events, h)


def m_control_names(rng: random.Random, base: Base):
    """Names with ESC, BEL, newline and C1 controls: shown escaped, never raw."""
    h = json.loads(json.dumps(base.header, default=str))
    nasty = rng.choice(["\x1b[2J\x1b[31mevil", "a\x07b", "line\nbreak", "cr\rhere", "\x9b1;31m", "nul\x00"])
    doms = h["platform"]["domains"]
    k = rng.randrange(len(doms))
    doms[k][1] = doms[k][1] + nasty
    h["scenario"] = dict(h.get("scenario") or {}, description="desc" + nasty)
    evs = [list(e) for e in base.events]
    log_kind = next((c for c, (n, _) in enumerate(h["schema"]["kinds"]) if n == "log"), None)
    for ev in evs:
        if ev[0] == log_kind:
            ev[7] = ev[7] + nasty
            break
    return _crafted(base, evs, h)


@dataclass(frozen=True)
class MutationClass:
    name: str
    kind: str          # damage | invalid | tolerated | cache
    make: Callable[..., Any] | str   # a mutation function, or the name of a cache scenario
    bases: tuple[str, ...] = ("synth", "s1")
    keep_identity: bool = False   # damage in place with the mtime put back (bit rot)


CLASSES = [
    MutationClass("bit flip", "damage", m_bit_flip),
    MutationClass("payload bit flip", "damage", m_payload_flip),
    MutationClass("truncation", "damage", m_truncate),
    MutationClass("overwrite 1-64 bytes", "damage", m_overwrite),
    MutationClass("zeroed 4 KiB page", "damage", m_zero_page, ("synth",)),
    MutationClass("bit rot (size, mtime, inode kept)", "damage", m_payload_flip, keep_identity=True),
    MutationClass("field of the wrong type", "invalid", m_field_type, ("s1",)),
    MutationClass("event header of the wrong type", "invalid", m_header_field_type, ("s1",)),
    MutationClass("nesting 400-510 deep", "invalid", m_deep_nesting, ("s1",)),
    MutationClass("seq outside its chunk", "invalid", m_seq_range, ("s1",)),
    MutationClass("event cut short", "invalid", m_short_event, ("s1",)),
    MutationClass("malformed platform", "invalid", m_platform, ("s1",)),
    MutationClass("value out of range", "invalid", m_value, ("s1",)),
    MutationClass("unknown kind", "tolerated", m_unknown_kind, ("s1",)),
    MutationClass("extra trailing fields", "tolerated", m_extra_fields, ("s1",)),
    MutationClass("newer schema version", "tolerated", m_newer_schema, ("s1",)),
    MutationClass("control characters in names", "tolerated", m_control_names, ("s1",)),
    MutationClass("sidecar bit flip", "cache", "sidecar-flip", ("synth",)),
    MutationClass("sidecar cut", "cache", "sidecar-cut", ("synth",)),
    MutationClass("sidecar built on a damaged copy", "cache", "repaired", ("synth",)),
]
CLASS_BY_NAME = {c.name: c for c in CLASSES}


# -- the oracle ----------------------------------------------------------------

def judge(cls: MutationClass, cmd: str, got: Run, ref: Run) -> str:
    err = got.err.decode("utf-8", "replace")
    lines = [ln for ln in err.splitlines() if ln.strip()]
    problems = [ln for ln in lines if not ln.startswith("vtdtrace: note:")]
    if (got.code not in (0, 1, 2, 3) or "internal error" in err or "Traceback" in err
            or len(problems) > 1 or any(not ln.startswith("vtdtrace") for ln in lines)):
        return "internal"
    if cmd in TEXT_COMMANDS and any(c in got.out for c in CONTROL):
        return "silent"
    if cls.kind == "tolerated":
        return "answered" if got.code in (0, 1) else "refused"
    if got.code == 3 or (got.code == 2 and cls.kind in ("damage", "invalid")):
        if cls.kind == "cache":
            return "silent" if ref.code != got.code else "same"
        return "reported"
    if cls.kind != "damage" and got.code == ref.code and got.out == ref.out:
        return "same"
    return "silent"


BAD = ("internal", "silent", "refused")


def trial(cls: MutationClass, base: Base, rng: random.Random, folder: str, with_sidecar: bool) -> dict | None:
    """One mutated file, every command.  Returns {command: (outcome, run)}
    or None when the draw does not apply to this base."""
    _fresh(folder)
    xdg = os.path.join(folder, "xdg")
    path = os.path.join(folder, TRACE)
    _write(folder, REF, base.data)
    if cls.kind == "cache":
        _write(folder, TRACE, base.data)
        _age(path)
        if cls.make == "repaired":
            damaged = m_payload_flip(rng, base)
            _overwrite_in_place(path, damaged)
            _warm(folder, xdg, base)
            _overwrite_in_place(path, base.data)
        else:
            _warm(folder, xdg, base)
            side = path + "-cache"
            if not os.path.exists(side):
                return None
            with open(side, "rb") as f:
                sdata = f.read()
            if cls.make == "sidecar-flip":
                sdata = _flip(sdata, rng.randrange(len(sdata)), rng.randrange(8))
            else:
                sdata = sdata[:rng.randrange(len(sdata))]
            with open(side, "wb") as f:
                f.write(sdata)
    else:
        assert callable(cls.make)
        data = cls.make(rng, base)
        if data is None:
            return None
        if with_sidecar:
            _write(folder, TRACE, base.data)
            _age(path)
            _warm(folder, xdg, base)
            st = os.stat(path)
            _overwrite_in_place(path, data)
            if cls.keep_identity:
                os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        else:
            _write(folder, TRACE, data)
    results = {}
    for name, argv in COMMANDS:
        if not with_sidecar and cls.kind != "cache":
            _drop_sidecars(folder)
        got = run_cli(_argv(argv, base), folder, xdg)
        results[name] = (judge(cls, name, got, base.reference[name]), got)
    return results


def _age(path: str) -> None:
    """An hour-old mtime: a cache built now is bound to the identity without
    the 'recently written' re-verification, as for any trace that sat on a
    disk for a while."""
    old = os.stat(path).st_mtime_ns - 3600 * 10**9
    os.utime(path, ns=(old, old))


def _warm(folder: str, xdg: str, base: Base) -> None:
    """Build the sidecar the way a user does: open the trace with the
    commands that fill it."""
    for argv in (["show", TRACE], ["check", "--json", TRACE], ["show", "--at", str(base.at), TRACE]):
        run_cli(argv, folder, xdg)


# -- the table -----------------------------------------------------------------

OUTCOMES = ("reported", "same", "answered", "silent", "refused", "internal")


def measure(trials: int, seed: int, only: list[str] | None = None, root: str | None = None) -> dict:
    own = root is None
    root = root or tempfile.mkdtemp(prefix="vtdtrace-reliability-")
    try:
        bases = {b.name: b for b in build_corpus(os.path.join(root, "corpus"))}
        rows = {}
        examples: dict[tuple[str, str, str], list[Any]] = {}
        for cls in CLASSES:
            if only and cls.name not in only:
                continue
            rng = random.Random(f"{seed}:{cls.name}")
            counts: Counter = Counter()
            files = 0
            modes = (False, True) if cls.kind == "damage" else (cls.kind == "cache",)
            attempts = 0
            while files < trials and attempts < trials * 20:
                attempts += 1
                base = bases[rng.choice(cls.bases)]
                for with_sidecar in modes:
                    res = trial(cls, base, random.Random(rng.random()), os.path.join(root, "trial"), with_sidecar)
                    if res is None:
                        break
                    for cmd, (outcome, run) in res.items():
                        counts[outcome] += 1
                        if outcome in BAD:
                            ex = examples.setdefault((cls.name, outcome, cmd),
                                                     [0, run.code, run.err.decode("utf-8", "replace")[-300:]])
                            ex[0] += 1
                else:
                    files += 1
            rows[cls.name] = {"kind": cls.kind, "files": files, **{o: counts[o] for o in OUTCOMES}}
        return {"seed": seed, "trials": trials, "commands": [c for c, _ in COMMANDS], "rows": rows,
                "examples": [{"class": c, "outcome": o, "command": cmd, "runs": n, "exit": code, "stderr": e}
                             for (c, o, cmd), (n, code, e) in sorted(examples.items())]}
    finally:
        if own:
            shutil.rmtree(root, ignore_errors=True)


def render(result: dict) -> str:
    head = ("class", "kind", "files", "runs", "reported", "same", "answered", "silent", "refused", "internal")
    rows = [head]
    for name, r in result["rows"].items():
        runs = sum(r[o] for o in OUTCOMES)
        rows.append((name, r["kind"], str(r["files"]), str(runs), *(str(r[o]) for o in OUTCOMES)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = [f"reliability: {len(result['commands'])} commands per file ({', '.join(result['commands'])}); "
           f"damage classes run without and with a sidecar; seed {result['seed']}"]
    for k, row in enumerate(rows):
        out.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    for ex in result["examples"]:
        last = ex["stderr"].strip().splitlines()[-1] if ex["stderr"].strip() else "(nothing on stderr)"
        out.append(f"  {ex['outcome']}: {ex['class']} / {ex['command']} ({ex['runs']} runs), "
                   f"e.g. exit {ex['exit']}: {last}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=40, help="mutated files per class (default 40)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--class", dest="classes", action="append", metavar="NAME",
                    help=f"only this class (repeatable): {'; '.join(CLASS_BY_NAME)}")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    for c in args.classes or ():
        if c not in CLASS_BY_NAME:
            ap.error(f"unknown class {c!r}")
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    result = measure(args.trials, args.seed, args.classes)
    print(json.dumps(result, indent=1, sort_keys=True) if args.json else render(result))
    bad = sum(r[o] for r in result["rows"].values() for o in BAD)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
