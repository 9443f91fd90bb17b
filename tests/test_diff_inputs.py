"""replay.diff at the edges of its input: what still reaches each of its few
remaining ``except`` clauses, a trace written under another catalogue, and
the module layout (no module imports another's private names)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from replay.diff import Side, diff_streams, diff_traces, render_text
from replay.diff.inputs import TraceChunks
from replay.hazards import Analysis
from replay.reader import open_trace
from tracer import schema as S

S1L, S1N = REPO / "traces" / "s1-usb-rmrr.legacy.vtdt", REPO / "traces" / "s1-usb-rmrr.direct-nocx16.vtdt"


def _events(path):
    with open_trace(path) as t:
        return t.header, [list(ev) for chunk in t.iter_chunks() for ev in chunk]


# --------------------------------------------------------------------------------
# StateTracker.feed's `except BadEvent`: events handed to diff_streams directly


def _with_a_bad_ctx_write():
    h, ev = _events(S1N)
    bad = [list(e) for e in ev]
    i = next(k for k, e in enumerate(bad) if e[S.I_KIND] == S.K_CTX_WRITE)
    bad[i][S.F_CTX_WRITE_NEW_LO] = "not a number"      # the fold refuses it: BadEvent
    return h, ev, bad, i


@pytest.mark.parametrize("inline_analysis", [False, True], ids=["fold", "analysis"])
def test_an_event_the_fold_refuses_stops_the_state_comparison_not_the_diff(inline_analysis):
    h, ev, bad, i = _with_a_bad_ctx_write()
    kw = {"analysis": Analysis(h)} if inline_analysis else {}
    rep = diff_streams(Side.from_events(h, ev, name="A"), Side.from_events(h, bad, name="B", **kw))
    assert rep.state_note is not None and rep.state_note.startswith("state comparison stopped: ")
    assert f"{i + 1}" in rep.state_note                 # names the event
    assert rep.state_diff == []
    # the events are still compared: the bad write is the one differing row
    assert [r.counts for r in rep.alignment.regions] == [{"args": 1}]
    assert rep.first_divergence["seq_b"] == i + 1
    assert "(state comparison stopped: " in render_text(rep)


# --------------------------------------------------------------------------------
# TraceChunks' `except OSError`: the trace file is gone after the reader opened it


def test_a_trace_removed_after_it_was_opened_is_still_diffed(tmp_path):
    gone = tmp_path / "gone.vtdt"
    shutil.copyfile(S1N, gone)
    kept = tmp_path / "kept.vtdt"
    shutil.copyfile(S1N, kept)
    with open_trace(gone) as tg, open_trace(kept) as tk:
        os.remove(gone)
        chunks = TraceChunks(tg)
        assert not chunks.same_bytes(0, TraceChunks(tk), 0)     # no descriptor: decoded, not compared
        assert chunks.decode(0) == next(tk.iter_chunks())
        chunks.close()
        rep = diff_traces(tk, tg)
    assert rep.equivalent and rep.exit_code == 0


# --------------------------------------------------------------------------------
# Events are presented with this build's catalogue


def _permuted(tmp_path, monkeypatch):
    """S1 (direct, no cx16) written under a catalogue with every kind and
    function code reversed."""
    from tracer import writer as W
    from tracer.writer import TraceWriter

    cat = S.schema_dict()
    cat["kinds"] = [list(k) for k in cat["kinds"]][::-1]
    cat["funcs"] = list(cat["funcs"])[::-1]
    monkeypatch.setattr(W, "schema_dict", lambda: cat)
    header, events = _events(S1N)
    header = dict(header)
    header.pop("schema", None)
    path = tmp_path / "permuted.vtdt"
    with TraceWriter(path, header) as w:
        for ev in events:
            ev[S.I_KIND] = len(S.KINDS) - 1 - ev[S.I_KIND]
            ev[S.I_FUNC] = len(S.FUNCS) - 1 - ev[S.I_FUNC]
            w.append(ev)
    return path


def test_a_trace_under_another_catalogue_diffs_as_under_this_one(tmp_path, monkeypatch):
    permuted = _permuted(tmp_path, monkeypatch)
    original = tmp_path / "original.vtdt"
    shutil.copyfile(S1N, original)
    legacy = tmp_path / "legacy.vtdt"
    shutil.copyfile(S1L, legacy)

    def body(b):
        r = subprocess.run([sys.executable, "-m", "vtdtrace", "diff", legacy, b], cwd=tmp_path,
                           capture_output=True, text=True)
        assert r.returncode == 1, r.stderr
        # the listing after the header lines (the file name and the catalogue differ there)
        return r.stdout[r.stdout.index("\nfirst divergence"):]

    got = body(permuted)
    assert got == body(original)
    assert "call domain_context_mapping_one" in got


# --------------------------------------------------------------------------------
# Module layout


def test_no_module_of_replay_imports_another_ones_private_names():
    """`from .x import _name` across replay/ is a private name used as a
    public surface: each module offers what others need under a public name."""
    offenders = []
    for path in sorted((REPO / "replay").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports {alias.name} "
                                         f"from {'.' * node.level}{node.module or ''}")
    assert offenders == []


def test_the_diff_modules_use_no_private_attribute_of_another_module():
    """Inside replay/diff, `obj._name` only on objects of the module's own
    classes (self, or another instance of the same class)."""
    offenders = []
    for path in sorted((REPO / "replay" / "diff").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        own = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)] + [tree]:
            for node in ast.walk(cls):
                if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                        and not node.attr.startswith("__")):
                    base = node.value
                    if isinstance(base, ast.Name) and (base.id in ("self", "cls", "other") or base.id in own):
                        continue
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
    assert sorted(set(offenders)) == []
