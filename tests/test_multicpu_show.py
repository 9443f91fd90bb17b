"""show, info and log of a two-CPU trace, run as a user runs them: which CPU
holds which lock, each CPU's stack and open op, a CPU spinning on a lock
(lock-wait until its lock event), the schedule in the header."""

from __future__ import annotations

import json

import pytest
from multicpu_helpers import TWO_CPU, SwitchTo, record_two_cpu

from replay.reader import open_trace
from tracer import schema as S


@pytest.fixture
def contended(tmp_path):
    """CPU 1 runs its assign first; CPU 0 then spins on pcidevs_lock."""
    path = tmp_path / "two.vtdt"
    schedule = record_two_cpu(path, chooser=SwitchTo([1, 0]))
    with open_trace(path) as t:
        events = list(t.events())
    wait = next(ev for ev in events if ev[S.I_KIND] == S.K_LOCK_WAIT)
    got = next(ev for ev in events if ev[S.I_SEQ] > wait[S.I_SEQ] and ev[S.I_KIND] == S.K_LOCK
               and ev[S.I_CPU] == wait[S.I_CPU])
    return path, schedule, events, wait, got


def test_record_schedule_reproduces_the_interleaving(contended, tmp_path, run_cli):
    path, schedule, *_ = contended
    again = tmp_path / "again.vtdt"
    r = run_cli("record", TWO_CPU, "--engine", "direct", "--schedule", schedule, "-o", again)
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == path.read_bytes()


def test_show_names_the_spinning_cpu_and_the_lock_holder(contended, run_cli):
    path, _, events, wait, got = contended
    assert wait[S.I_CPU] == 0 and wait[S.F_LOCK_WAIT_LOCK] == "pcidevs_lock" and wait[S.F_LOCK_WAIT_HOLDER] == 1
    at = wait[S.I_SEQ] + 3
    r = run_cli("show", path, "--at", at, "--json")
    assert r.returncode == 0, r.stderr
    cpus = {c["cpu"]: c for c in json.loads(r.stdout)["cpus"]}
    assert sorted(cpus) == [0, 1]
    assert cpus[0]["waits_for"] == {"lock": "pcidevs_lock", "holder": 1}
    assert cpus[0]["op"] == {"op": 1, "verb": "assign", "bdf": "0000:00:14.0", "domain": "guest"}
    assert cpus[1]["op"] == {"op": 2, "verb": "assign", "bdf": "0000:00:17.0", "domain": "guest"}
    assert "pcidevs_lock" in cpus[1]["locks"] and cpus[0]["locks"] == []
    assert cpus[1]["stack"][:1] == ["assign_device"] and cpus[0]["stack"] == []
    assert cpus[1]["waits_for"] is None

    text = run_cli("show", path, "--at", at).stdout
    section = text[text.index("\nCPUs:\n"):text.index("\nopen findings")]
    assert "  cpu 0  op 1 assign 0000:00:14.0 -> guest\n         spins on pcidevs_lock, held by cpu 1" in section
    assert "  cpu 1  op 2 assign 0000:00:17.0 -> guest\n         holds pcidevs_lock" in section
    assert all(len(line) <= 80 for line in section.splitlines())
    assert "operation: op 2 assign 0000:00:17.0 -> guest (cpu 1)" in text

    # The wait ends with CPU 0's lock event: no CPU spins from then on.
    after = json.loads(run_cli("show", path, "--at", got[S.I_SEQ], "--json").stdout)
    assert all(c["waits_for"] is None for c in after["cpus"])
    assert "pcidevs_lock" in next(c for c in after["cpus"] if c["cpu"] == 0)["locks"]


def test_show_wraps_deep_stacks_at_80_columns(contended, run_cli):
    path, _, events, *_ = contended
    deepest = max(range(len(events)), key=lambda i: sum(1 for e in events[:i + 1] if e[S.I_KIND] == S.K_CALL)
                  - sum(1 for e in events[:i + 1] if e[S.I_KIND] == S.K_RETURN))
    text = run_cli("show", path, "--at", events[deepest][S.I_SEQ]).stdout
    section = text[text.index("\nCPUs:\n"):text.index("\nopen findings")].splitlines()
    assert any(line.strip().startswith("stack ") for line in section)
    assert all(len(line) <= 80 for line in section)
    assert sum(1 for line in section if line.startswith(" " * 15)) >= 1      # a continued stack


def test_info_shows_the_cpus_and_the_schedule(contended, run_cli):
    path, schedule, *_ = contended
    r = run_cli("info", path)
    assert f"schedule   2 CPUs, choices {schedule}\n" in r.stdout
    doc = json.loads(run_cli("info", path, "--json").stdout)
    assert doc["schedule"] == {"version": 1, "cpus": 2, "choices": schedule}
    shipped = run_cli("info", "traces/s1-usb-rmrr.legacy.vtdt").stdout
    assert "schedule   1 CPU, default (run to completion in listed order)\n" in shipped


def test_log_cpu_column(contended, run_cli):
    path, _, events, wait, _ = contended
    lines = run_cli("log", path, "--kind", "lock-wait").stdout.splitlines()
    assert lines[0].split()[:3] == ["seq", "cpu", "op"]
    assert lines[1].split()[:3] == [str(wait[S.I_SEQ]), "0", "1"]


def test_log_shows_a_device_dma_as_dev(write_trace, run_cli):
    from conftest import make_events

    dma = next(ev for ev in make_events(len(S.KINDS)) if ev[S.I_KIND] == S.K_DMA)
    dma[S.I_SEQ], dma[S.I_CPU] = 1, -1
    path = write_trace([dma])
    r = run_cli("log", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].split()[:2] == ["1", "dev"]
