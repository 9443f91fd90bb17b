"""CRC-valid crafted traces and hostile inputs: damage (exit 3, readable part
shown, the stop report naming chunk, byte and event) or a clean one-line
refusal -- never "internal error", never raw control characters on a
terminal.  And write errors: one line naming the file and the cause, exit 2,
no partial output left behind.

The traces are written with the project's writer (so every CRC is valid);
where the writer would refuse the content (a seq out of order, nesting deeper
than msgpack's packer allows) the event's bytes are packed by hand and
handed to the writer's framing."""

from __future__ import annotations

import copy
import errno
import io
import os
import resource
import subprocess
import sys

import msgpack
import pytest
from conftest import HEADER, REPO
from hypothesis import given
from hypothesis import strategies as st

from replay.reader import open_trace
from tracer import schema as S
from tracer.writer import TraceWriter

CHUNK = 8


def ev(kind: str, seq: int, *fields, func: int = 0, label: str = "") -> list:
    return [S.KIND_BY_NAME[kind].code, seq, 0, 1, func, label, *fields]


def good_events(n: int) -> list:
    """n well-typed events: a domain, locks, DID bits (so show has state)."""
    out = [ev("domain-create", 1, 1)]
    while len(out) < n:
        seq = len(out) + 1
        k = seq % 3
        if k == 0:
            out.append(ev("lock", seq, "pcidevs_lock", None))
        elif k == 1:
            out.append(ev("unlock", seq, "pcidevs_lock", None))
        else:
            out.append(ev("did-bitmap", seq, 0, seq, 1))
    return out


def write(path, events, header=None, raw: dict | None = None) -> None:
    """A finished trace of `events`; raw maps a seq to the bytes to store for
    that event instead of packing it (the writer frames them as usual)."""
    with TraceWriter(path, HEADER if header is None else header, chunk_events=CHUNK) as w:
        pack = w._pack
        for e in events:
            if raw and e[1] in raw:
                w._pack = lambda _e, b=raw[e[1]]: b
            w.append(e)
            w._pack = pack


def chunk_offset(path, index: int) -> int:
    with open_trace(path, verify=False) as t:
        return t.chunks[index][0]


def run(run_cli, *args):
    r = run_cli(*args)
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    return r


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- msgpack nesting deeper than Python's recursion ----------------------------------------

@pytest.mark.parametrize("depth", [500, 1000])
def test_deeply_nested_extra_field_is_shown_raw_not_a_recursion_error(tmp_path, run_cli, depth):
    """An extra trailing field (tolerated, shown raw) nested 500-1000 deep:
    log, log --jsonl, export (both formats) and diff answer, with the deep
    part replaced by a marker."""
    events = good_events(20)
    deep = ev("log", 12, "info", "deep")
    body = b"".join(msgpack.packb(x) for x in deep) + b"\x91" * depth + b"\xc0"
    raw = bytes([0x90 + len(deep) + 1]) + body
    path = tmp_path / "deep.vtdt"
    write(path, events[:11] + [deep] + events[12:], raw={12: raw})
    for args in (["log"], ["log", "--jsonl"], ["export", "--format", "jsonl"], ["export", "--format", "chrome"]):
        r = run(run_cli, *args, path)
        assert r.returncode == 0 and r.stderr == "", (args, r.stderr)
        assert "nested deeper than" in r.stdout
    other = tmp_path / "plain.vtdt"
    write(other, events)
    r = run(run_cli, "diff", path, other)
    assert r.returncode in (0, 1) and r.stderr == ""


# --- field types ------------------------------------------------------------------------------

def test_lock_name_that_is_an_array_is_damage_in_log(tmp_path, run_cli):
    events = good_events(30)
    events[19] = ev("lock", 20, ["pcidevs_lock"], None)
    path = tmp_path / "lock.vtdt"
    write(path, events)
    r = run(run_cli, "log", path)
    assert r.returncode == 3
    line = one_line(r.stderr)
    off = chunk_offset(path, 2)
    assert f"corrupt at byte {off} (chunk 2, last good seq 19)" in line
    assert "event 20: " in line and "lock field lock is an array, expected str" in line
    assert len(r.stdout.splitlines()) == 1 + 19          # header line + the readable part


def test_string_typed_numeric_field_is_damage_in_show(tmp_path, run_cli):
    events = good_events(30)
    events[21] = ev("did-bitmap", 22, "0", 22, 1)          # iommu as a string
    path = tmp_path / "str.vtdt"
    write(path, events)
    for args in (["show"], ["show", "--json"], ["show", "--at", "10"]):
        r = run(run_cli, *args, path)
        assert r.returncode == 3, (args, r.stderr)
        line = one_line(r.stderr)
        assert f"at byte {chunk_offset(path, 2)} (chunk 2" in line and "event 22: " in line
        assert "did-bitmap field iommu is a str, expected int" in line
    r = run(run_cli, "show", path)
    assert "step 21 of 21" in r.stdout                      # the readable part's last state


def test_string_typed_field_check_and_show_name_the_same_place(tmp_path, run_cli):
    """check used to report a fold failure "at byte 0 (chunk 0)"."""
    events = good_events(40)
    events[29] = ev("iommu-bitmap", 30, 1, "0", 1)
    path = tmp_path / "where.vtdt"
    write(path, events)
    where = f"corrupt at byte {chunk_offset(path, 3)} (chunk 3, last good seq 29): event 30: "
    for args in (["check"], ["check", "--json"], ["show"], ["info"], ["log"]):
        r = run(run_cli, *args, path)
        assert r.returncode == 3, (args, r.stderr)
        assert where in one_line(r.stderr), (args, r.stderr)


def test_header_platform_with_a_string_segment_is_a_bad_header(tmp_path, run_cli):
    header = copy.deepcopy(HEADER)
    header["platform"]["iommus"][0]["segment"] = "x"
    path = tmp_path / "seg.vtdt"
    write(path, good_events(10), header=header)
    for args in (["show"], ["show", "--json"], ["export", "--format", "chrome"], ["export", "--format", "jsonl"],
                 ["info"], ["check"]):
        r = run(run_cli, *args, path)
        assert r.returncode == 3, (args, r.stderr)
        line = one_line(r.stderr)
        assert "bad header at byte 0" in line and "platform.iommus[0].segment is a str, expected int" in line


# --- seq ----------------------------------------------------------------------------------------

def test_event_seqs_inside_a_chunk_are_checked(tmp_path, run_cli):
    """A chunk whose first and last events carry the right seqs but whose
    events in between say 5 and 10**12 is damage, not "integrity ok"."""
    events = good_events(40)
    lies = {19: 5, 21: 10 ** 12}                 # chunk 2 holds seqs 17..24
    raw = {}
    for seq, lie in lies.items():
        fake = list(events[seq - 1])
        fake[1] = lie
        raw[seq] = msgpack.packb(fake)
    path = tmp_path / "seq.vtdt"
    write(path, events, raw=raw)
    r = run(run_cli, "info", path)
    assert r.returncode == 3 and "integrity ok" not in r.stdout
    line = one_line(r.stderr)
    assert f"corrupt at byte {chunk_offset(path, 2)} (chunk 2, last good seq 18)" in line
    assert "event 19: " in line and "carries seq 5, expected 19" in line
    r = run(run_cli, "info", "--json", path)
    assert r.returncode == 3


# --- control characters -------------------------------------------------------------------------

def test_control_characters_in_names_never_reach_the_terminal(tmp_path, run_cli):
    header = copy.deepcopy(HEADER)
    evil = "gu\x1b[2Jest\x07\nforged line\x9b\u202e"
    header["platform"]["domains"] = [[0, "dom0", True], [1, evil, False]]
    events = good_events(12)
    events[5] = ev("did-map", 6, 0, 6, 0, 1)                # names domain 1
    events[6] = ev("log", 7, "info", "text with \x1b]0;title\x07 in it")
    events[7] = ev("rollback-begin", 8, -12, "MO14\x1b[1m unmap")   # verbs are a closed set: a free text
    path = tmp_path / "ctl.vtdt"
    write(path, events, header=header)
    for args in (["log"], ["show"], ["show", "--at", "8"], ["check"], ["info"]):
        r = run(run_cli, *args, path)
        assert r.returncode in (0, 1), (args, r.stderr)
        for line in r.stdout.splitlines():
            assert all(c.isprintable() for c in line), (args, line)
        assert "forged line" not in "\n".join(x for x in r.stdout.splitlines() if x.startswith("forged"))
    other = tmp_path / "plain.vtdt"
    write(other, good_events(12))
    r = run(run_cli, "diff", path, other)
    assert r.returncode == 1 and all(all(c.isprintable() for c in line) for line in r.stdout.splitlines())
    r = run(run_cli, "log", path)
    assert "gu\\x1b[2Jest\\x07\\x0aforged line\\x9b\\u202e" in r.stdout


# --- newer writers --------------------------------------------------------------------------------

def test_a_version_1_trace_is_upgraded_on_load(tmp_path, run_cli, monkeypatch):
    """Schema 2 only added a lock name: a trace written as version 1 reads as
    version 2, unchanged and without a note; pci_lock (what version 2 adds)
    is a lock name of this build."""
    from replay.reader import open_trace
    from tracer import writer as W

    events = good_events(12)
    new = tmp_path / "v2.vtdt"
    write(new, events)
    old = S.schema_dict()
    old["schema_version"] = 1
    monkeypatch.setattr(W, "schema_dict", lambda: old)
    path = tmp_path / "v1.vtdt"
    write(path, events)
    with open_trace(path) as t, open_trace(new) as t2:
        assert t.schema.version == 2 and t.notes == [] and list(t.events()) == list(t2.events())
    for args in (["log"], ["info"], ["check"]):
        r = run(run_cli, *args, path)
        assert r.returncode in (0, 1) and r.stderr == "", (args, r.stderr)
    monkeypatch.undo()
    events[2] = ev("lock", 3, "pci_lock", 1)
    events[3] = ev("unlock", 4, "pci_lock", 1)
    lock = tmp_path / "pci-lock.vtdt"
    write(lock, events)
    r = run(run_cli, "log", "--kind", "lock,unlock", lock)
    assert r.returncode == 0 and "lock=pci_lock target=" in r.stdout, r.stdout + r.stderr


def test_a_newer_schema_version_is_read_with_a_note(tmp_path, run_cli, monkeypatch):
    """A trace claiming schema version 2, with a kind this build does not know
    and an extra trailing field on a known one: read under the same rules,
    the unknown parts shown raw, one note on stderr."""
    from tracer import writer as W

    newer = S.schema_dict()
    newer["schema_version"] = S.SCHEMA_VERSION + 1
    newer["kinds"] = [list(k) for k in newer["kinds"]] + [["iotlb-walk", ["iommu", "path"]]]
    newer["kinds"][S.K_LOG] = ["log", ["level", "text", "facility"]]
    monkeypatch.setattr(W, "schema_dict", lambda: newer)
    events = good_events(12)
    events[3] = [len(S.KINDS), 4, 0, 1, 0, "", 0, [1, "two", None]]
    events[4] = ev("log", 5, "info", "hello", "xen")
    path = tmp_path / "newer.vtdt"
    write(path, events)
    for args in (["log"], ["log", "--jsonl"], ["info"], ["show"], ["check"], ["export", "--format", "chrome"]):
        r = run(run_cli, *args, path)
        assert r.returncode in ((0, 1) if args == ["check"] else (0,)), (args, r.stderr)
        line = one_line(r.stderr)
        assert line == (f"vtdtrace: note: {path}: event schema version {S.SCHEMA_VERSION + 1} is newer than "
                        f"this build's {S.SCHEMA_VERSION}: event kinds and fields it does not know are shown raw")
    r = run(run_cli, "log", "--jsonl", path)
    lines = r.stdout.splitlines()
    assert '"kind":"iotlb-walk","iommu":0,"path":[1,"two",null]' in lines[3]
    assert lines[4].endswith('"level":"info","text":"hello","facility":"xen"}')


def test_a_known_kind_whose_fields_changed_is_a_bad_header(tmp_path, run_cli, monkeypatch):
    from tracer import writer as W

    other = S.schema_dict()
    other["kinds"] = [list(k) for k in other["kinds"]]
    other["kinds"][S.K_LOCK] = ["lock", ["target", "lock"]]
    monkeypatch.setattr(W, "schema_dict", lambda: other)
    path = tmp_path / "swapped.vtdt"
    write(path, good_events(5))
    r = run(run_cli, "log", path)
    assert r.returncode == 3 and "bad header" in one_line(r.stderr) and "'lock'" in r.stderr


# --- write errors ---------------------------------------------------------------------------------

def _limited(limit: int):
    def set_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def _cli(*args, limit=None):
    return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, preexec_fn=_limited(limit) if limit else None)


@pytest.mark.parametrize("command, limit", [
    (["synth", "--events", "20000"], 65845 + 50_000),               # header + ~1.5 chunks
    (["record", "s1-usb-rmrr", "--engine", "direct"], 6556 + 2000),  # header + part of its chunk
])
def test_a_file_size_limit_mid_recording_is_one_line_and_no_partial_file(tmp_path, command, limit):
    out = tmp_path / "out.vtdt"
    r = _cli(*command, "-o", out, limit=limit)
    assert r.returncode == 2
    assert one_line(r.stderr) == f"vtdtrace: {out}: cannot write: File too large (partial output removed)"
    assert not out.exists()
    r = _cli(*command, "-o", out)                       # the retry is not refused as "exists"
    assert r.returncode == 0, r.stderr
    with open_trace(out) as t:
        assert t.complete


class _FullDisk(io.RawIOBase):
    """A file that takes `room` bytes, then fails as a full disk does."""

    def __init__(self, path, room: int) -> None:
        self._f = open(path, "wb")
        self.room = room

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self._f.write(b)

    def fileno(self) -> int:
        return self._f.fileno()

    def close(self) -> None:
        self._f.close()
        super().close()


def test_a_full_disk_in_synth_is_one_line_and_no_partial_file(tmp_path, monkeypatch, capsys):
    from tracer import writer as W
    from vtdtrace.cli import main

    out = tmp_path / "full.vtdt"
    monkeypatch.setattr(W, "open", lambda path, mode: io.BufferedWriter(_FullDisk(path, 200_000)), raising=False)
    assert main(["synth", "--events", "20000", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert one_line(err) == f"vtdtrace: {out}: cannot write: No space left on device (partial output removed)"
    assert not out.exists()


def test_a_killed_recording_keeps_its_readable_prefix(tmp_path):
    """Only a failed write discards: a recording killed by a signal while
    the engine runs keeps what it flushed (docs/FORMAT.md)."""
    out = tmp_path / "killed.vtdt"
    script = ("import os, signal, sys; sys.argv = ['vtdtrace', 'synth', '--events', '50000', '-o', sys.argv[1]];"
              "import tracer.writer as W; orig = W.TraceWriter._write_chunk\n"
              "def once(self, n=[0]):\n"
              "    orig(self); n[0] += 1\n"
              "    if n[0] == 5: os.kill(os.getpid(), signal.SIGKILL)\n"
              "W.TraceWriter._write_chunk = once\n"
              "from vtdtrace.cli import main; main(sys.argv[1:])")
    r = subprocess.run([sys.executable, "-c", script, str(out)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == -9
    with open_trace(out) as t:
        assert t.stop.kind == "truncated" and t.count == 5 * 1024 and len(list(t.events())) == t.count


def test_export_to_a_file_that_cannot_grow_is_one_line_and_no_partial_file(tmp_path):
    trace = tmp_path / "t.vtdt"
    assert _cli("synth", "--events", "3000", "-o", trace).returncode == 0
    out = tmp_path / "out.json"
    for fmt in ("jsonl", "chrome"):
        r = _cli("export", trace, "--format", fmt, "-o", out, limit=trace.stat().st_size + 8192)
        assert r.returncode == 2
        assert one_line(r.stderr) == f"vtdtrace: {out}: cannot write: File too large (partial output removed)"
        assert not out.exists()


# --- scenarios --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["[" * 5000 + "]" * 5000, "{ a = " * 5000 + "1" + " }" * 5000],
                         ids=["arrays", "inline-tables"])
def test_a_scenario_nested_5000_deep_is_one_line_naming_file_and_key(tmp_path, value):
    path = tmp_path / "deep.toml"
    path.write_text(f'name = "deep"\n\n[[op]]\nverb = "assign"\nweird = {value}\n')
    r = _cli("record", path, "--engine", "direct", "-o", tmp_path / "x.vtdt")
    assert r.returncode == 2
    assert one_line(r.stderr) == (f"vtdtrace: {path}: weird (line 5): expected arrays and inline tables nested "
                                  "at most 32 deep, found deeper nesting at line 5")
    assert not (tmp_path / "x.vtdt").exists()


# --- the fold's inline checks and the reader's agree ------------------------------------------

_ODD_VALUES = (None, True, 0, -1, 1 << 63, 1.5, "x", b"x", [], [1, 2], ["a", 1], {"a": 1})


@given(st.integers(0, 10 ** 6), st.integers(0, len(S.KINDS) - 1), st.integers(0, 20), st.sampled_from(_ODD_VALUES),
       st.booleans())
def test_fold_and_reader_apply_the_same_rules(seed, kind, where, value, as_tuples):
    """The two places that check events (replay.validate for readers that
    show events, replay.state.fold for the folding ones) accept and reject
    the same events, with the same words."""
    from conftest import make_events

    from replay.reader import current_schema
    from replay.state import BadEvent, ReplayState, fold
    from replay.validate import EventCheck

    ev = next(e for e in make_events(len(S.KINDS) * 2, seed) if e[0] == kind)
    ev = list(ev)
    i = where % len(ev)
    if i == 0:
        i = 1 + where % (len(ev) - 1)            # the kind itself picks the rules; vary the rest
    if i == 1:
        i = 2
    ev[i] = value
    if where > 15:
        ev = ev[:S.F0 + where % 3]              # some too short
    if where == 7 and kind == S.K_CALL:
        ev[S.F0] = [["ok", 1], value]
    if as_tuples:
        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, list) else v
        ev = tup(ev)
    check = EventCheck(current_schema())
    # codes: the reader's, in both paths.  Value rules: the reader applies
    # them per chunk on both paths, the fold some of them inline
    # (replay.validate.FOLD_VALUE_RULES); whatever it rejects, it words as
    # the reader does.
    types_say = check.problem(ev, ev[1], type(ev), codes=False, values=False)
    reader_says = check.problem(ev, ev[1], type(ev), codes=False)
    try:
        fold(ReplayState(), [ev])
        fold_says = None
    except BadEvent as exc:
        fold_says = str(exc)
    if types_say is not None:
        assert fold_says == f"event {ev[1]}: {types_say}"
    elif fold_says is not None:
        assert reader_says is not None and fold_says == f"event {ev[1]}: {reader_says}"


@pytest.mark.parametrize("mutate", [
    lambda p: p["devices"][0].update(bdf="zz:zz.z"),
    lambda p: p["devices"][0].update(bdf="0000:00:00.9"),
    lambda p: p["rmrrs"].append({"base": 0, "end": 4095, "segment": 0, "devices": ["00:14"]}),
], ids=["bdf-junk", "function-9", "rmrr-device-junk"])
def test_a_header_device_that_is_not_a_bdf_is_a_bad_header(mutate):
    from replay.validate import platform_problem

    platform = {"iommus": [{"id": 0, "segment": 0}], "rmrrs": [],
                "devices": [{"bdf": "0000:00:14.0", "type": "pcie-endpoint"}]}
    assert platform_problem(platform, present=True) is None
    mutate(platform)
    assert "SSSS:BB:DD.F" in platform_problem(platform, present=True)


def test_a_header_whose_platform_is_nil_is_a_bad_header():
    from replay.validate import platform_problem

    assert platform_problem(None) is None                       # no platform key: a hand-made header
    assert "expected a map" in platform_problem(None, present=True)
