"""replay.diff.state_delta: the state difference at any two steps (the diff
view's "state at the cursor") agrees with the report's incremental one at
every aligned operation boundary the report lists, for every pair of
engine variants of every shipped scenario."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from replay.diff import diff_files
from replay.diff.state_delta import state_changes
from replay.session import ReplaySession

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = sorted({p.name.split(".")[0] for p in (REPO / "traces").glob("*.vtdt")})
VARIANTS = ("legacy", "direct", "direct-nocx16")


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd")
    for p in (REPO / "traces").glob("*.vtdt"):
        shutil.copyfile(p, tmp / p.name)
    return tmp


PAIRS = [(f"{sc}.{va}", f"{sc}.{vb}") for sc in SCENARIOS for va, vb in itertools.combinations(VARIANTS, 2)]
# two scenarios against each other: far apart, many entries differ
PAIRS += [("s1-usb-rmrr.direct", "s6-enomem.direct"), ("s2-guest-destroy-quarantine.legacy",
                                                      "s8-two-legacy-behind-bridge.direct")]


@pytest.mark.parametrize("pair", PAIRS, ids=["-vs-".join(p) for p in PAIRS])
def test_agrees_with_the_report_at_operation_boundaries(traces, pair):
    a, b = (traces / f"{name}.vtdt" for name in pair)
    report = diff_files(a, b)
    with ReplaySession(a, sidecar=False) as sa, ReplaySession(b, sidecar=False) as sb:
        for sd in report.state_diff:
            got = state_changes(sa.state_at(sd.seq_a), sa.view, sb.state_at(sd.seq_b), sb.view)
            assert got == sd.changes, (sd.seq_a, sd.seq_b)
        # nothing differs from itself; a swap swaps the sides
        for seq in (0, sa.count // 2, sa.count):
            st_a = sa.state_at(seq)
            assert state_changes(st_a, sa.view, st_a, sa.view) == []
            st_b = sb.state_at(min(seq, sb.count))
            fwd = state_changes(st_a, sa.view, st_b, sb.view)
            back = state_changes(st_b, sb.view, st_a, sa.view)
            assert [(c["section"], c["a"], c["b"]) for c in fwd] == [(c["section"], c["b"], c["a"]) for c in back]
    # the variants of S1, S5, S9 and S11 end every operation in the same state
    # (S9 is S5's WLAN there and back, then two reassignments without a race;
    # S11: the same entries, and the same stale device-TLB); all the others
    # differ after some operation (so the comparison above ran)
    if not pair[0].startswith(("s1-", "s5-", "s9-", "s11-")) and pair[0].endswith(".legacy"):
        assert any(sd.changes for sd in report.state_diff)


def test_the_legacy_window_shows_a_non_present_entry(traces):
    a, b = traces / "s1-usb-rmrr.legacy.vtdt", traces / "s1-usb-rmrr.direct.vtdt"
    report = diff_files(a, b)
    rmrr = next(h for h in report.hazards if h.finding["kind"] == "rmrr-disconnect")
    row = report.alignment.row(rmrr.row)
    assert row.seq_a == rmrr.finding["start"] and row.seq_b is None
    with ReplaySession(a, sidecar=False) as sa, ReplaySession(b, sidecar=False) as sb:
        # B's step at that row: its last event before the gap
        b_step = next(r.seq_b for r in reversed(report.alignment.rows(0, rmrr.row)) if r.seq_b is not None)
        changes = state_changes(sa.state_at(row.seq_a), sa.view, sb.state_at(b_step), sb.view)
    ctx = [c for c in changes if c["section"] == "context"]
    assert ctx and ctx[0]["rid"] == "0000:00:14.0"
    assert ctx[0]["a"]["present"] is False and ctx[0]["b"]["present"] is True
