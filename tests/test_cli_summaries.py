"""Summaries that keep a big trace's output readable, run as a user runs them
(a subprocess): `info` names a few domains and counts the rest (its --json
has them all); `check` opens with a one-screen summary, filters by minimum
severity and reuses the findings cached in the sidecar."""

from __future__ import annotations

import copy
import json

from conftest import HEADER, make_events


def many_domains_header(n):
    h = copy.deepcopy(HEADER)
    h["platform"]["domains"] = ([[0, "dom0", True]] + [[i, f"guest{i}", False] for i in range(1, n + 1)]
                                + [[0x7FF1, "dom_io", False]])
    return h


def test_info_summarises_thousands_of_domains(run_cli, write_trace):
    t = write_trace(make_events(20, seed=1), header=many_domains_header(4000))
    r = run_cli("info", t)
    assert r.returncode == 0 and r.stderr == ""
    platform = [line for line in r.stdout.splitlines() if line.startswith("platform ")]
    assert platform == ["platform   2 IOMMUs, 1 device, 0 RMRRs, 4002 domains (dom0=0 hw, guest1=1, guest2=2, "
                        "guest3=3, ... 3997 more, dom_io=32753; info --json lists all)"]
    assert max(len(line) for line in r.stdout.splitlines()) < 200
    doc = json.loads(run_cli("info", t, "--json").stdout)
    assert len(doc["platform"]["domains"]) == 4002
    assert doc["platform"]["domains"][-2] == [4000, "guest4000", False]


def test_info_names_every_domain_of_a_small_platform(run_cli, write_trace):
    t = write_trace(make_events(20, seed=1), header=many_domains_header(5))
    line = [ln for ln in run_cli("info", t).stdout.splitlines() if ln.startswith("platform ")][0]
    assert line.endswith("7 domains (dom0=0 hw, guest1=1, guest2=2, guest3=3, guest4=4, guest5=5, dom_io=32753)")
