"""replay/codes.py: one translator from a trace's own kind/function codes to
this build's, checked end to end with a trace written under a catalogue
whose codes all differ from today's."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO

from replay.codes import UNKNOWN_KIND, event_translator
from replay.reader import current_schema, load_schema, open_trace
from tracer import schema as S

SHIPPED = REPO / "traces" / "s1-usb-rmrr.direct-nocx16.vtdt"


def _permuted_catalogue() -> tuple[dict, list[int], list[int]]:
    """Today's catalogue with kinds and functions in reverse order, plus one
    kind and one function this build does not know; and the maps from
    today's codes to the permuted ones."""
    cat = S.schema_dict()
    kinds = [list(k) for k in cat["kinds"]][::-1] + [["future-kind", ["x"]]]
    funcs = list(cat["funcs"])[::-1] + ["future_function"]
    cat["kinds"], cat["funcs"] = kinds, funcs
    kcode = [len(S.KINDS) - 1 - c for c in range(len(S.KINDS))]
    fcode = [len(S.FUNCS) - 1 - c for c in range(len(S.FUNCS))]
    return cat, kcode, fcode


def test_the_current_catalogue_needs_no_translation():
    assert event_translator(current_schema()) is None
    assert event_translator(None) is None


def test_codes_map_back_and_unknown_ones_stay_distinct():
    cat, kcode, fcode = _permuted_catalogue()
    schema = load_schema(cat)
    translate = event_translator(schema)
    assert translate is not None
    ev = [kcode[S.K_CTX_WRITE], 7, 0, 1, fcode[S.FUNC_CODE["domain_context_mapping_one"]], "MO7", 1, 2]
    out = translate([ev, tuple(ev)])
    assert out[0] == out[1] == [S.K_CTX_WRITE, 7, 0, 1, S.FUNC_CODE["domain_context_mapping_one"], "MO7", 1, 2]
    assert ev[0] == kcode[S.K_CTX_WRITE], "the input is not modified"
    future = [len(S.KINDS), 8, 0, 1, len(S.FUNCS), ""]
    # future_function is the permuted table's last entry: a code past FUNCS, one per name.
    assert translate([future])[0][:5] == [UNKNOWN_KIND, 8, 0, 1, len(S.FUNCS) + len(S.FUNCS)]
    # A code of the wrong type is left for the fold to refuse, never read as another kind.
    assert translate([[True, 9, 0, 1, 2.0, ""]])[0][:5] == [True, 9, 0, 1, 2.0]


@pytest.fixture
def permuted_trace(tmp_path, monkeypatch):
    """The shipped S1 trace rewritten under the permuted catalogue."""
    from tracer import writer as W
    from tracer.writer import TraceWriter

    cat, kcode, fcode = _permuted_catalogue()
    with open_trace(SHIPPED) as t:
        header = dict(t.header)
        events = [list(ev) for chunk in t.iter_chunks() for ev in chunk]
    header.pop("schema", None)
    monkeypatch.setattr(W, "schema_dict", lambda: cat)
    path = tmp_path / "permuted.vtdt"
    with TraceWriter(path, header) as w:
        for ev in events:
            ev = list(ev)
            ev[S.I_KIND], ev[S.I_FUNC] = kcode[ev[S.I_KIND]], fcode[ev[S.I_FUNC]]
            w.append(ev)
    with open_trace(path) as t:
        assert not t.schema.is_current
    original = tmp_path / "original.vtdt"
    shutil.copyfile(SHIPPED, original)
    return original, path


@pytest.mark.parametrize("args", [["check", "--json"], ["show", "--json"], ["log", "--jsonl"]])
def test_a_trace_under_another_catalogue_reads_the_same(permuted_trace, run_cli, args):
    """Fold, analysers and the event log see the same trace whatever codes
    its catalogue used (only the header's echo of the file name differs)."""
    original, permuted = permuted_trace
    a = run_cli(*args, original)
    b = run_cli(*args, permuted)
    assert a.returncode == b.returncode and a.returncode in (0, 1), (a.stderr, b.stderr)
    assert b.stderr == ""
    assert a.stdout.replace(str(original), "T") == b.stdout.replace(str(permuted), "T")
    if args[0] == "check":
        assert json.loads(a.stdout)["findings"], "S1 under direct-nocx16 has findings to compare"


def test_diff_of_the_two_catalogues_is_equivalent(permuted_trace, run_cli):
    original, permuted = permuted_trace
    r = run_cli("diff", original, permuted)
    assert r.returncode == 0, r.stdout + r.stderr
