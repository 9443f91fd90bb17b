"""The sidecar never outvotes the trace (replay/sidecar.py's three rules):

* a cache built on the intact trace must not hide later damage, and one built
  on a damaged copy must not outlive the repair -- for show, show --at,
  export, the viewer's session and diff;
* every entry is checksummed: a damaged entry is rebuilt, never used;
* a change of the code that computed an entry makes every command recompute;
* concurrent first opens build once; a replaced sidecar gets the mode a new
  file gets;
* a command that cannot write its cache still answers.

Every test works on copies in tmp_path.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

from replay import sidecar
from replay.reader import open_trace
from replay.session import K_CHECKPOINTS, ReplaySession
from vtdtrace.cli import main

EVENTS = 6000
HOUR_NS = 3600 * 10 ** 9


@pytest.fixture(scope="module")
def synth_trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "synth.vtdt"
    assert main(["synth", "--events", str(EVENTS), "-o", str(path)]) == 0
    return path


@pytest.fixture
def trace(synth_trace, tmp_path):
    """A private copy whose mtime is an hour old (so its identity is not
    'racy' and a cache built on it is trusted without a CRC pass)."""
    dst = tmp_path / "t.vtdt"
    shutil.copyfile(synth_trace, dst)
    _age(dst)
    return dst


def _age(path, ns=None):
    st = os.stat(path)
    t = st.st_mtime_ns - HOUR_NS if ns is None else ns
    os.utime(path, ns=(t, t))


def vt(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err, err
    assert err.count("\n") <= 1, err
    return rc, out, err


def flip(path, keep_mtime=False) -> int:
    """Flip one bit in the fifth chunk's payload; returns that chunk's first seq."""
    st = os.stat(path)
    with open_trace(path) as t:
        off, first, _ = t.chunks[4]
    data = bytearray(Path(path).read_bytes())
    data[off + 32 + 100] ^= 0x10
    with open(path, "r+b") as f:           # in place: same inode
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return first


def reference_show(path, at, tmp_path, capsys) -> tuple[int, str]:
    """`show` on a private copy with no sidecar: the trace's own answer."""
    d = tmp_path / f"ref-{at}"
    d.mkdir(exist_ok=True)
    copy = d / "r.vtdt"
    shutil.copyfile(path, copy)
    rc, out, _ = vt(capsys, "show", copy, "--at", at)
    return rc, out


# --- defect 1: the cache must not outvote the trace, in both directions ------------------

def test_cache_built_on_the_intact_trace_does_not_hide_later_damage(trace, tmp_path, capsys):
    other = tmp_path / "o.vtdt"
    shutil.copyfile(trace, other)
    assert vt(capsys, "show", trace)[0] == 0                       # caches built
    assert vt(capsys, "show", trace, "--at", 2500)[0] == 0
    assert vt(capsys, "export", trace, "--format", "chrome", "-o", tmp_path / "x.json")[0] == 0
    assert vt(capsys, "diff", trace, other)[0] == 0
    assert Path(sidecar.beside_path(trace)).exists()
    first_bad = flip(trace)
    rc, out, err = vt(capsys, "show", trace)
    assert rc == 3 and f"last good seq {first_bad - 1}" in err
    assert out.startswith(f"step {first_bad - 1} of {first_bad - 1}:")
    rc, out, err = vt(capsys, "show", trace, "--at", 5500)         # past the damage
    assert rc == 3 and "beyond the readable part" in err and out
    assert out == reference_show(trace, first_bad - 1, tmp_path, capsys)[1]
    rc, out, err = vt(capsys, "show", trace, "--at", 2500)         # before it: the answer, exit 3
    assert rc == 3 and out == reference_show(trace, 2500, tmp_path, capsys)[1]
    assert vt(capsys, "export", trace, "--format", "chrome", "-o", tmp_path / "y.json")[0] == 3
    assert vt(capsys, "diff", trace, other)[0] == 3
    with ReplaySession(trace) as s:                                 # what the viewer loads
        assert s.count == first_bad - 1 and s.stop is not None
    from replay.hazards import findings_for_trace
    f = findings_for_trace(trace, sidecar=True)
    assert not f.complete and f.events == first_bad - 1


def test_cache_built_on_a_damaged_copy_does_not_outlive_the_repair(trace, tmp_path, capsys):
    good = Path(trace).read_bytes()
    with open_trace(trace) as t:
        total = t.count
    other = tmp_path / "o.vtdt"
    shutil.copyfile(trace, other)
    first_bad = flip(trace)
    assert vt(capsys, "show", trace)[0] == 3
    assert vt(capsys, "show", trace, "--at", 5500)[0] == 3
    assert vt(capsys, "export", trace, "--format", "jsonl", "-o", tmp_path / "x.jsonl")[0] == 3
    assert vt(capsys, "diff", trace, other)[0] == 3
    with open(trace, "r+b") as f:                                  # repaired in place
        f.write(good)
    rc, out, err = vt(capsys, "show", trace, "--at", 5500)
    assert (rc, err) == (0, "") and out == reference_show(trace, 5500, tmp_path, capsys)[1]
    assert vt(capsys, "show", trace)[0] == 0
    assert vt(capsys, "export", trace, "--format", "chrome", "-o", tmp_path / "y.json")[0] == 0
    assert vt(capsys, "diff", trace, other)[0] == 0
    with ReplaySession(trace) as s:
        assert s.count == total > first_bad and s.stop is None


def test_damage_behind_an_identical_identity_is_found_when_read(trace, tmp_path, capsys):
    """A bit flipped with the mtime put back: the identity matches, so the
    cache is used without a CRC pass -- until an answer reads the bad chunk,
    which is CRC-checked as it is read: damage, exit 3, never an
    'internal error: IndexError'."""
    assert vt(capsys, "show", trace)[0] == 0
    first_bad = flip(trace, keep_mtime=True)
    rc, out, err = vt(capsys, "show", trace, "--at", first_bad + 100)
    assert rc == 3 and "checksum" in err and out
    assert out == reference_show(trace, first_bad - 1, tmp_path, capsys)[1]
    # the sidecar now records the damage: later answers know it from the start
    rc, out, err = vt(capsys, "show", trace)
    assert rc == 3 and f"last good seq {first_bad - 1}" in err


def test_bit_rot_behind_an_unchanged_identity_never_gets_a_cached_answer(trace, tmp_path, run_cli):
    """A bit that rots on disk keeps size, mtime and inode.  The one-shot
    commands verify the content before any cached answer (exit 3, as with
    no sidecar at all); only the viewer trusts the identity, and it finds
    the damage in the chunk it reads."""
    for args in (("show",), ("check", "--json"), ("show", "--at", 2500)):
        assert run_cli(*args, trace).returncode in (0, 1)           # caches built, not racy
    assert Path(sidecar.beside_path(trace)).exists()
    flip(trace, keep_mtime=True)
    nocache = tmp_path / "nocache"
    nocache.mkdir()
    ref = nocache / "r.vtdt"
    shutil.copyfile(trace, ref)
    want = run_cli("check", "--json", "--no-cache", ref)
    assert want.returncode == 3
    for args in (("show",), ("show", "--json"), ("check", "--json"), ("export", "--format", "jsonl")):
        r = run_cli(*args, trace)
        assert r.returncode == 3 and "checksum" in r.stderr, (args, r.returncode, r.stderr)
    got = run_cli("check", "--json", trace)
    assert json.loads(got.stdout)["findings"] == json.loads(want.stdout)["findings"]
    assert run_cli("diff", trace, ref).returncode == 3


# --- defect 2: every entry checksummed ----------------------------------------------------------

def _entry_span(path, key):
    with ReplaySession(path) as s:
        e = s.sidecar._toc[key]
        return e[0], e[1]


def test_damaged_checkpoints_are_rebuilt_never_used(trace, tmp_path):
    with ReplaySession(trace, sidecar=False, min_events=200) as ref:
        steps = sorted({0, 1, ref.count} | {min(ref.count, k * 613) for k in range(1, 11)})
        want = {n: ref.state_at(n) for n in steps}
    with ReplaySession(trace, min_events=200):
        pass
    cache = Path(sidecar.beside_path(trace))
    pristine = cache.read_bytes()
    off, length = _entry_span(trace, K_CHECKPOINTS)
    for k in range(40):
        data = bytearray(pristine)
        data[off + (k * 7919) % length] ^= 1 << (k % 8)
        cache.write_bytes(bytes(data))
        with ReplaySession(trace) as s:
            for n in steps:
                assert s.state_at(n) == want[n], (k, n)
        with ReplaySession(trace) as s:       # rebuilt: the next open reads a good entry
            assert not s.built
            assert s.state_at(steps[-2]) == want[steps[-2]]


def test_damaged_findings_entry_is_rebuilt(trace, capsys):
    from replay.hazards import findings_for_trace
    from replay.hazards.analyse import SIDECAR_KEY

    want = findings_for_trace(trace).findings
    findings_for_trace(trace, sidecar=True)
    cache = Path(sidecar.beside_path(trace))
    pristine = cache.read_bytes()
    off, length = _entry_span(trace, SIDECAR_KEY)
    for k in range(0, length, max(1, length // 25)):
        data = bytearray(pristine)
        data[off + k] ^= 0x40
        cache.write_bytes(bytes(data))
        got = findings_for_trace(trace, sidecar=True)
        assert not got.from_cache and got.findings == want
        assert findings_for_trace(trace, sidecar=True).from_cache


def test_an_old_version_sidecar_is_rebuilt(trace):
    cache = Path(sidecar.beside_path(trace))
    cache.write_bytes(sidecar.HEADER.pack(sidecar.MAGIC, 1, 0) + b"\0" * 64)
    with ReplaySession(trace) as s:
        assert s.built
    with ReplaySession(trace) as s:
        assert not s.built and cache.read_bytes()[8:12] == sidecar.VERSION.to_bytes(4, "little")


# --- the trust rules themselves -----------------------------------------------------------------

def test_same_content_under_a_new_identity_is_verified_once_then_trusted(trace, monkeypatch):
    with ReplaySession(trace):
        pass
    scans = []
    real = sidecar.scan_content
    monkeypatch.setattr(sidecar, "scan_content", lambda p: scans.append(p) or real(p))
    with ReplaySession(trace) as s:               # same identity: no CRC pass
        assert not s.built and s.sidecar.trusted
    assert scans == []
    _age(trace, os.stat(trace).st_mtime_ns - HOUR_NS)   # touched: same bytes
    with ReplaySession(trace) as s:
        assert not s.built and s.sidecar.trusted
    assert len(scans) == 1
    with ReplaySession(trace) as s:               # the new identity was recorded
        assert not s.built
    assert len(scans) == 1


def test_a_just_written_trace_is_verified_until_it_is_old_enough(trace, monkeypatch):
    """An mtime within RACY_NS of the verification (here: in the future, so
    it stays that close however slow the host) is not trusted on its own."""
    now = time.time_ns()
    _age(trace, now + HOUR_NS)
    with ReplaySession(trace):
        pass
    scans = []
    real = sidecar.scan_content
    monkeypatch.setattr(sidecar, "scan_content", lambda p: scans.append(p) or real(p))
    for n in (1, 2):
        with ReplaySession(trace) as s:
            assert not s.built and s.sidecar.trusted
        assert len(scans) == n                    # racy: verified every time, still used
    _age(trace, now - HOUR_NS)                    # an hour old: verified once more, then trusted
    for _ in range(2):
        with ReplaySession(trace) as s:
            assert not s.built
    assert len(scans) == 3


# --- defect 3: the code that computed an entry is part of its key --------------------------------

def test_code_key_is_deterministic_and_follows_the_sources(tmp_path, monkeypatch):
    from replay import codeid

    probe = tmp_path / "zz_codeid_probe.py"
    probe.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    one = codeid.source_digest(["zz_codeid_probe"])
    assert codeid.source_digest(["zz_codeid_probe"]) == one
    probe.write_text("X = 2\n")
    assert codeid.source_digest(["zz_codeid_probe"]) != one
    key = codeid.code_key("hazards")
    from tracer import __version__
    assert key[0] == __version__ and len(key[1]) == 32
    code = "from replay.codeid import code_key; print(code_key('hazards'), code_key('fold'))"
    runs = {subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout for _ in range(2)}
    assert len(runs) == 1


def test_a_code_change_makes_every_command_recompute(trace, tmp_path, capsys, monkeypatch):
    """Caches built by one build of the analysers; then an analyser changes
    (here: reports one extra hazard) and so does the code digest: show,
    export, check, the viewer's findings and diff all give the new answer."""
    from replay import codeid
    from replay.hazards import analyse
    from replay.hazards.findings import Finding
    from tui import loader

    other = tmp_path / "o.vtdt"
    shutil.copyfile(trace, other)
    assert vt(capsys, "show", trace, "--at", 10, "--json")[0] == 0
    assert vt(capsys, "export", trace, "--format", "chrome", "-o", tmp_path / "x.json")[0] == 0
    vt(capsys, "diff", trace, other)
    loader.compute_findings(trace, True)
    with ReplaySession(trace) as s:
        assert not s.built

    real_finish = analyse.Analysis.finish

    def finish(self):
        extra = Finding("lock-order", "hazard", None, None, None, 5, 20, "", "", "FIXED-ANALYSER")
        return real_finish(self) + [extra]
    monkeypatch.setattr(analyse.Analysis, "finish", finish)
    # The same code digest: the cached answers stand (what the digest is for).
    rc, out, _ = vt(capsys, "show", trace, "--at", 10, "--json")
    assert "FIXED-ANALYSER" not in out

    monkeypatch.setattr(codeid, "_keys", {g: [k[0], "changed-" + k[1]] for g, k in
                                          (("fold", codeid.code_key("fold")), ("hazards", codeid.code_key("hazards")))})
    with ReplaySession(trace) as s:                # the fold's entries are recomputed too
        assert s.built
    rc, out, _ = vt(capsys, "show", trace, "--at", 10, "--json")
    assert "FIXED-ANALYSER" in out
    vt(capsys, "export", trace, "--format", "chrome", "-o", tmp_path / "y.json")
    assert "FIXED-ANALYSER" in (tmp_path / "y.json").read_text()
    rc, out, _ = vt(capsys, "check", trace, "--json")
    assert rc == 1 and "FIXED-ANALYSER" in out
    findings, _ = loader.compute_findings(trace, True)
    assert any(f.detail == "FIXED-ANALYSER" for f in findings)
    # diff: B's findings were cached by the old code; served stale, the
    # extra finding would be a hazard only A has
    rc, out, _ = vt(capsys, "diff", trace, other, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["equivalent"]


# --- defect 4: one writer, readers never see a partial entry, the mode of a new file --------------

# Runs `vtdtrace show TRACE` once told to on stdin.  The fold and the
# analysers are slowed down so that concurrent runs overlap for sure.
_SLOW_SHOW = """
import sys, time
from replay import session
from replay.hazards import analyse
from vtdtrace.cli import main
build, finish = session.build, analyse.Analysis.finish
def slow_build(*a, **k):
    time.sleep(0.3)
    return build(*a, **k)
def slow_finish(self):
    time.sleep(0.3)
    return finish(self)
session.build, analyse.Analysis.finish = slow_build, slow_finish
print("ready", flush=True)
sys.stdin.readline()
sys.exit(main(["show", sys.argv[1]]))
"""


def _shows(path, n):
    procs = [subprocess.Popen([sys.executable, "-c", _SLOW_SHOW, str(path)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline() == "ready\n"
    for p in procs:                 # all at once
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return outs


def test_concurrent_first_opens_build_one_copy(synth_trace, tmp_path):
    solo = tmp_path / "solo"
    solo.mkdir()
    shutil.copyfile(synth_trace, solo / "t.vtdt")
    want = _shows(solo / "t.vtdt", 1)[0]
    one = os.path.getsize(sidecar.beside_path(solo / "t.vtdt"))
    path = tmp_path / "t.vtdt"
    shutil.copyfile(synth_trace, path)
    assert _shows(path, 4) == [want] * 4
    size = os.path.getsize(sidecar.beside_path(path))
    assert size <= one * 1.1, (size, one)
    with ReplaySession(path) as s:
        assert not s.built


def test_a_reader_keeps_reading_while_another_process_writes(trace):
    with ReplaySession(trace) as s:
        want = s.state_at(3000)
    with ReplaySession(trace) as reader:
        with sidecar.Sidecar.open(trace) as writer:
            writer.lock()
            writer.put_raw("junk", os.urandom(50000))
            writer.commit()
        assert reader.state_at(3000) == want and not reader.built


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_a_new_or_replaced_sidecar_gets_the_mode_of_a_new_file(trace, umask):
    old = os.umask(umask)
    try:
        cache = Path(sidecar.beside_path(trace))
        ReplaySession(trace).close()
        assert stat.S_IMODE(cache.stat().st_mode) == 0o666 & ~umask
        cache.write_bytes(b"VTDTSIDE" + b"\xff" * 100)       # unreadable: replaced
        ReplaySession(trace).close()
        assert stat.S_IMODE(cache.stat().st_mode) == 0o666 & ~umask
        flip(trace)                                          # another content: replaced
        ReplaySession(trace).close()
        assert stat.S_IMODE(cache.stat().st_mode) == 0o666 & ~umask
    finally:
        os.umask(old)


# --- no room for the cache: the command still answers ----------------------------------------------

def test_show_with_no_room_for_its_cache_still_answers(trace, tmp_path, capsys, monkeypatch):
    want = reference_show(trace, 4000, tmp_path, capsys)
    real = os.pwrite

    def full(fd, data, off):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "pwrite", full)
    rc, out, err = vt(capsys, "show", trace, "--at", 4000)
    assert (rc, out, err) == (want[0], want[1], "")
    rc, out, err = vt(capsys, "export", trace, "--format", "jsonl", "-o", tmp_path / "x.jsonl")
    assert (rc, err) == (0, "")
    monkeypatch.setattr(os, "pwrite", real)
    rc, out, err = vt(capsys, "show", trace, "--at", 4000)       # and the cache works again
    assert (rc, out) == want


def test_show_with_nowhere_to_put_a_cache_still_answers(trace, tmp_path, capsys, monkeypatch):
    want = reference_show(trace, 4000, tmp_path, capsys)
    monkeypatch.setattr(sidecar, "_dir_writable", lambda p: False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))

    def no_tmp(*a, **k):
        raise OSError(errno.ENOSPC, "no space")
    monkeypatch.setattr(sidecar.tempfile, "TemporaryFile", no_tmp)
    rc, out, err = vt(capsys, "show", trace, "--at", 4000)
    assert (rc, out, err) == (want[0], want[1], "")
    assert not Path(sidecar.beside_path(trace)).exists()


def test_the_viewer_finds_damage_behind_an_identical_identity(trace):
    from tui.model import TraceModel

    ReplaySession(trace).close()
    first_bad = flip(trace, keep_mtime=True)
    m = TraceModel(trace)
    s = ReplaySession(trace)
    try:
        m.attach_session(s)
        assert m.stop is None                      # the sidecar vouched for the file
        view = m.step_view(first_bad + 100)
        assert view.seq == first_bad - 1 and m.count == first_bad - 1
        assert m.stop is not None and "checksum" in m.damage_text()
    finally:
        s.close()


def test_the_issue_repro_as_a_user_runs_it(synth_trace, tmp_path, run_cli):
    """`show` once, flip one payload bit of a later chunk, `show` and
    `show --at` again: damage and exit 3 as `check` reports it, never the
    cached intact state, never an internal error."""
    path = tmp_path / "t.vtdt"
    shutil.copyfile(synth_trace, path)
    assert run_cli("show", path).returncode == 0
    first_bad = flip(path)
    check = run_cli("check", path)
    assert check.returncode == 3
    damage = check.stderr.split("damaged: ", 1)[1].split("; findings", 1)[0]
    for args in ((), ("--at", 2500), ("--at", first_bad + 500), ("--json",)):
        r = run_cli("show", path, *args)
        assert r.returncode == 3 and r.stderr.count("\n") == 1, (args, r.stderr)
        assert damage in r.stderr and "internal error" not in r.stderr and r.stdout
