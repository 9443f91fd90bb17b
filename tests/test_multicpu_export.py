"""Exporters of a two-CPU trace: Chrome trace with one track per CPU
("CPU n", its ops, calls and lock waits), a "device DMA" track for events of
no CPU, slices still nested per thread; jsonl keeps each event's cpu."""

from __future__ import annotations

import io
import json

from multicpu_helpers import SwitchTo, record_two_cpu
from test_show_export import validate_chrome

from replay.export_chrome import TID_CPU0, TID_DMA, export_chrome
from replay.reader import open_trace
from tracer import schema as S


def _chrome(run_cli, path):
    r = run_cli("export", path, "--format", "chrome")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    validate_chrome(doc)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "thread_name"}
    return doc, names


def test_one_track_per_cpu_with_its_ops_calls_and_waits(tmp_path, run_cli):
    path = tmp_path / "two.vtdt"
    record_two_cpu(path, chooser=SwitchTo([1, 0]))
    doc, names = _chrome(run_cli, path)
    assert names[(0, TID_CPU0)] == "CPU 0" and names[(0, TID_CPU0 + 1)] == "CPU 1"
    on = {tid: [e for e in doc["traceEvents"] if e["pid"] == 0 and e["tid"] == tid and e["ph"] != "M"]
          for tid in (TID_CPU0, TID_CPU0 + 1)}
    # each CPU's ops are slices on its own track, its calls nested in them
    ops = {tid: [e["name"] for e in evs if e["ph"] == "B" and e.get("cat") == "op"] for tid, evs in on.items()}
    assert ops[TID_CPU0] == ["op 0 boot", "op 1 assign 0000:00:14.0 guest", "op 3 deassign 0000:00:14.0"]
    assert ops[TID_CPU0 + 1] == ["op 2 assign 0000:00:17.0 guest", "op 4 deassign 0000:00:17.0"]
    assert any(e["cat"] == "call" for e in on[TID_CPU0 + 1] if e["ph"] == "B")
    # the ops overlap in time: CPU 0's op 1 begins before CPU 1's op 2 ends
    b1 = next(e["ts"] for e in on[TID_CPU0] if e["ph"] == "B" and e["name"].startswith("op 1 "))
    e2 = next(e["ts"] for e in on[TID_CPU0 + 1] if e["ph"] == "E" and e.get("args", {}).get("rc") is not None)
    assert b1 < e2
    (wait,) = [e for e in on[TID_CPU0] if e["ph"] == "i"]
    assert wait["name"] == "spins on pcidevs_lock" and wait["args"]["holder"] == 1
    assert "operations" not in names.values()       # nothing else went there in this trace
    # the lock holds say which CPU took them
    holds = [e for e in doc["traceEvents"] if e.get("cat") == "lock" and e["ph"] == "B"]
    assert {e["args"]["cpu"] for e in holds} == {0, 1}


def test_a_single_cpu_trace_keeps_its_operations_thread(tmp_path, run_cli):
    import shutil

    shutil.copy("traces/s1-usb-rmrr.direct.vtdt", tmp_path / "s1.vtdt")
    _, names = _chrome(run_cli, tmp_path / "s1.vtdt")
    assert names[(0, 0)] == "operations" and names[(0, TID_CPU0)] == "CPU 0"
    assert (0, TID_CPU0 + 1) not in names and (0, TID_DMA) not in names


def test_device_dma_has_its_own_track(tmp_path):
    from conftest import HEADER, make_events

    from replay.reader import current_schema

    dma = next(ev for ev in make_events(len(S.KINDS)) if ev[S.I_KIND] == S.K_DMA)
    dma[S.I_SEQ], dma[S.I_CPU] = 1, -1
    buf = io.StringIO()
    export_chrome([dma], dict(HEADER, schedule={"version": 1, "cpus": 2, "choices": ""}), current_schema(), buf)
    doc = json.loads(buf.getvalue())
    validate_chrome(doc)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"] if e.get("name") == "thread_name"}
    assert names == {(0, TID_DMA): "device DMA"}
    (i,) = [e for e in doc["traceEvents"] if e["ph"] == "i"]
    assert i["name"] == "dma" and i["tid"] == TID_DMA and i["args"]["seq"] == 1


def test_jsonl_keeps_the_cpu(tmp_path, run_cli):
    path = tmp_path / "two.vtdt"
    record_two_cpu(path, chooser=SwitchTo([1, 0]))
    r = run_cli("export", path, "--format", "jsonl")
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    with open_trace(path) as t:
        cpus = [ev[S.I_CPU] for ev in t.events()]
    assert [row["cpu"] for row in rows] == cpus and set(cpus) == {0, 1}
