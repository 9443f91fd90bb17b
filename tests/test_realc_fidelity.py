"""The real C of Debian's Xen 4.17.5 against the `direct` model, scenario by
scenario: the same context-entry stores (values and method, machine
addresses included), DID allocations and frees, and flushes, after the three
normalisations of replay/diff/projection.py; the same finding kinds from
`check`; `vtdtrace diff MODEL REAL` finds nothing beyond the three.

Each trace is recorded as a user records it (`vtdtrace record` in a
subprocess)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from realc_helpers import DATA, build_cache, events, finding_kinds, record, vtdtrace, xen_tree  # noqa: F401

from replay.diff.projection import project
from tracer import schema as S
from tracer.platform import domain_tables_base
from xenc.compare import compare

CASES = [("usb-rmrr-nic", "--cx16"), ("usb-rmrr-nic", "--no-cx16"), ("nic", "--cx16"), ("nic", "--no-cx16")]


def _record(tmp: Path, scenario: str, engine: str, cx: str, tree: Path | None = None) -> Path:
    return record(tmp, DATA / f"{scenario}.toml", engine, cx, tree)


_events, _finding_kinds = events, finding_kinds


@pytest.mark.parametrize("scenario,cx", CASES)
def test_real_code_stores_allocates_and_flushes_as_the_model(scenario, cx, xen_tree, tmp_path):  # noqa: F811
    model = _record(tmp_path, scenario, "direct", cx)
    real = _record(tmp_path, scenario, "xen-c", cx, xen_tree)
    c = compare(_events(model), _events(real))
    assert c.equal, "\n".join(c.describe(("direct", "xen-c")))
    kinds = {ev[0] for ev in c.a}
    # the comparison is not vacuous: it saw stores, DIDs and flushes of every kind
    assert {S.K_ROOT_WRITE, S.K_CTX_WRITE, S.K_DID_BITMAP, S.K_DID_MAP, S.K_FLUSH_CONTEXT,
            S.K_FLUSH_IOTLB} <= kinds
    methods = {ev[2 + 4] for ev in c.a if ev[0] == S.K_CTX_WRITE}
    assert methods == ({"cmpxchg16b"} if cx == "--cx16" else {"plain", "write_atomic"})
    # check: the same finding kinds (and severities)
    assert _finding_kinds(model) == _finding_kinds(real)
    # the same machine addresses, unnormalised: the domains' tables where both allocators put them
    pgds = {ev[2 + 7] & ~0xFFF for ev in c.a if ev[0] == S.K_CTX_WRITE and ev[2 + 7] & 1}
    owners = {(p - domain_tables_base(0)) >> 24 for p in pgds}
    assert pgds and owners <= set(range(8)) and all(p < domain_tables_base(d) + (1 << 24) for p, d in
                                                     zip(sorted(pgds), sorted(owners)))
    # vtdtrace diff MODEL REAL: equivalent, and says what it normalised -- the three, nothing else
    r = vtdtrace("diff", str(model), str(real))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "result: EQUIVALENT" in r.stdout and "hazard delta: none" in r.stdout
    assert "compared: real code against a model" in r.stdout
    out = vtdtrace("diff", "--json", str(model), str(real)).stdout
    assert vtdtrace("diff", "--json", str(model), str(real)).stdout == out      # same input, same bytes
    doc = json.loads(out)
    assert doc["equivalent"] and doc["hazard_delta"] == {"only_a": [], "only_b": [], "changed": []}
    na, nb = doc["projection"]["a"], doc["projection"]["b"]
    roots = sum(1 for ev in c.a if ev[0] == S.K_ROOT_WRITE)
    assert (na["root_stores_merged"], nb["root_stores_merged"]) == (0, roots)     # (1)
    assert na["flushes_after_lock"] == 0 and nb["flushes_after_lock"] > 0          # (2)
    assert na["unchanged_did_stores"] > 0 and nb["unchanged_did_stores"] == 0      # (3)
    assert set(na) == {"root_stores_merged", "flushes_after_lock", "unchanged_did_stores", "events", "kept"}


def test_the_hazard_case_is_found_in_the_real_code(xen_tree, tmp_path):  # noqa: F811
    """S1-like without cx16: 4.17.5 still pairs the guest's tables with dom0's DID
    between its two stores, and warns; check finds it in the real code."""
    real = _record(tmp_path, "usb-rmrr-nic", "xen-c", "--no-cx16", xen_tree)
    kinds = _finding_kinds(real)
    assert ("did-pt-mismatch", "hazard") in kinds
    logs = [ev for ev in _events(real) if ev[0] == S.K_LOG]
    assert any("0000:00:14.0: reassignment may cause d0 data corruption" in ev[S.F0 + 1] for ev in logs)


def test_only_the_known_differences_are_normalised(xen_tree, tmp_path):  # noqa: F811
    """Without the projection the traces do differ, exactly where said: two
    root stores vs one, unchanged DID stores only in the model."""
    model = _events(_record(tmp_path, "usb-rmrr-nic", "direct", "--cx16"))
    real = _events(_record(tmp_path, "usb-rmrr-nic", "xen-c", "--cx16", xen_tree))
    roots_m = [ev for ev in model if ev[0] == S.K_ROOT_WRITE]
    roots_r = [ev for ev in real if ev[0] == S.K_ROOT_WRITE]
    assert len(roots_r) == 2 * len(roots_m)
    assert any(ev[0] == S.K_DID_MAP and ev[S.F0 + 2] == ev[S.F0 + 3] for ev in model)
    assert not any(ev[0] == S.K_DID_MAP and ev[S.F0 + 2] == ev[S.F0 + 3] for ev in real)


def test_the_projection_tells_engines_apart(xen_tree, tmp_path):  # noqa: F811
    """legacy (unmap, then map) does not pass for the real 4.17.5 code."""
    legacy = _events(_record(tmp_path, "usb-rmrr-nic", "legacy", "--cx16"))
    real = _events(_record(tmp_path, "usb-rmrr-nic", "xen-c", "--cx16", xen_tree))
    c = compare(legacy, real)
    assert not c.equal
    i = c.first_difference
    assert i is not None and c.a[i][0] == S.K_CTX_WRITE     # legacy clears the entry first


def test_diff_model_real_reports_what_the_projection_keeps(xen_tree, tmp_path):  # noqa: F811
    """`vtdtrace diff legacy REAL` is DIFFERENT, first at legacy's split
    stores of an entry (where the C writes it with cmpxchg16b); the seqs it
    gives are the traces' own and lead to those stores."""
    legacy = _record(tmp_path, "usb-rmrr-nic", "legacy", "--cx16")
    real = _record(tmp_path, "usb-rmrr-nic", "xen-c", "--cx16", xen_tree)
    r = vtdtrace("diff", "--json", str(legacy), str(real))
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    assert not doc["equivalent"] and doc["projection"] is not None
    first = doc["first_divergence"]
    ev_a = {e[S.I_SEQ]: e for e in _events(legacy)}
    assert ev_a[first["seq_a"]][S.I_KIND] == S.K_CTX_WRITE and first["event_a"]["kind"] == "ctx-write"
    assert first["event_a"]["seq"] == first["seq_a"]
    ev_b = {e[S.I_SEQ]: e for e in _events(real)}
    for op in doc["ops"]:           # ranges and rows in trace seqs too
        for reg in op["regions"]:
            for row in reg["rows"] or ():
                if row["b"] is not None:
                    assert S.KINDS[ev_b[row["seq_b"]][S.I_KIND]].name == row["b"]["kind"]
                if row["a"] is not None:
                    assert S.KINDS[ev_a[row["seq_a"]][S.I_KIND]].name == row["a"]["kind"]
    text = vtdtrace("diff", str(legacy), str(real)).stdout
    assert f"first divergence: A seq {first['seq_a']}, B seq {first['seq_b']}" in text
    # two models: every event is compared, as always
    direct = _record(tmp_path, "usb-rmrr-nic", "direct", "--cx16")
    doc = json.loads(vtdtrace("diff", "--json", str(legacy), str(direct)).stdout)
    assert doc["projection"] is None


def test_projection_merges_only_the_pointer_then_present_pair_of_real_code():
    f = S.FUNC_CODE["bus_to_context_maddr"]
    ev = [[S.K_ROOT_WRITE, 1, 0, 0, f, "MO1", 0, 3, 0, 0x5000],          # pointer, not present
          [S.K_ROOT_WRITE, 2, 0, 0, f, "MO1", 0, 3, 0x5000, 0x5001],     # ... then present: merged
          [S.K_ROOT_WRITE, 3, 0, 0, f, "MO1", 0, 4, 0, 0x6001],          # one store
          [S.K_ROOT_WRITE, 5, 0, 0, f, "MO1", 0, 4, 0x6001, 0x7001],     # another value: kept
          [S.K_ROOT_WRITE, 6, 0, 0, f, "MO1", 0, 5, 0, 0x8000],          # pointer ...
          [S.K_CTX_WRITE, 7, 0, 0, f, "MO1", 0, 5, 0, "full", "cmpxchg16b", 0, 0, 1, 2],
          [S.K_ROOT_WRITE, 8, 0, 0, f, "MO1", 0, 5, 0x8000, 0x8001]]     # ... present after a store: kept
    p, n = project(ev, real_code=True)
    none = S.FUNC_CODE[""]
    assert p[0] == [S.K_ROOT_WRITE, 1, 0, 0, none, "", 0, 3, 0, 0x5001]
    assert [e[S.I_KIND] for e in p] == [S.K_ROOT_WRITE] * 4 + [S.K_CTX_WRITE, S.K_ROOT_WRITE]
    assert n.root_stores_merged == 1 and n.kept == 6 and n.events == 7
    # a model's trace: nothing merged
    p, n = project(ev)
    assert n.root_stores_merged == 0 and len(p) == 7


def test_projection_drops_only_did_stores_that_change_nothing():
    f = S.FUNC_CODE["context_set_domain_id"]
    ev = [[S.K_DID_MAP, 1, 0, 0, f, "MO5", 0, 0, 0, 0],
          [S.K_DID_BITMAP, 2, 0, 0, f, "MO5", 0, 0, 1],
          [S.K_DID_BITMAP, 3, 0, 0, f, "MO5", 0, 0, 1],
          [S.K_DID_MAP, 4, 0, 0, f, "MO5", 0, 0, 0, 1],
          [S.K_DID_BITMAP, 5, 0, 0, f, "MO5", 0, 0, 0]]
    p, n = project(ev)
    assert [e[0] for e in p] == [S.K_DID_BITMAP, S.K_DID_MAP, S.K_DID_BITMAP]
    assert n.unchanged_did_stores == 2


def test_step_labels_from_the_line_table(xen_tree, tmp_path):  # noqa: F811
    """The entry stores of domain_context_mapping_one carry the model's MO7,
    found by the text of the tree's line; lines the table does not know keep
    the function's name."""
    real = _events(_record(tmp_path, "usb-rmrr-nic", "xen-c", "--no-cx16", xen_tree))
    funcs = S.FUNCS
    stores = [ev for ev in real if ev[0] == S.K_CTX_WRITE and funcs[ev[S.I_FUNC]] == "domain_context_mapping_one"]
    assert stores and {ev[S.I_LABEL] for ev in stores} == {"MO7"}
    clears = [ev for ev in real if ev[0] == S.K_CTX_WRITE and funcs[ev[S.I_FUNC]] == "domain_context_unmap_one"]
    assert {ev[S.I_LABEL] for ev in clears} <= {"UO3"}
    assert any(ev[S.I_LABEL] == "domain_pgd_maddr" for ev in real if ev[0] == S.K_PT_ALLOC)


async def test_the_diff_view_of_model_and_real_code_says_what_it_compares(xen_tree, tmp_path):  # noqa: F811
    """`vtdtrace view MODEL REAL` lists every event of each trace at its own
    step (so it compares every event), and its banner says that `vtdtrace
    diff` compares what the IOMMU sees instead."""
    from test_tui_support import settle

    from tui.diff_app import DiffApp

    model = _record(tmp_path, "usb-rmrr-nic", "direct", "--cx16")
    real = _record(tmp_path, "usb-rmrr-nic", "xen-c", "--cx16", xen_tree)
    app = DiffApp(model, real)
    try:
        async with app.run_test(size=(120, 35)) as pilot:
            await settle(app, pilot)
            banner = str(app.query_one("#banner").render())
            assert "real code against a model: this view compares every event" in banner
            assert "DIFFERENT" in app.query_one("#diff-bar").text()
            assert app.dm.report.projection is None
    finally:
        for m in app.dm.models.values():
            m.close()
