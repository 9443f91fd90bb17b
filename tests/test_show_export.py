"""`vtdtrace show` and `vtdtrace export`: the docs/CLI.md contracts.

Golden files under tests/golden/show/ hold the text and JSON of `show` at
chosen steps of the shipped traces; regenerate them after an intended change
with ``VTDTRACE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_show_export.py``.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

import pytest
from test_tui_support import trace_copy

from replay.reader import open_trace
from tracer import schema as S
from vtdtrace.cli import main

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "traces"
GOLDEN = Path(__file__).resolve().parent / "golden" / "show"
UPDATE = os.environ.get("VTDTRACE_UPDATE_GOLDEN") == "1"

RID_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
U64_RE = re.compile(r"^0x[0-9a-f]{16}$")


@pytest.fixture
def trace(tmp_path):
    """A shipped trace copied into tmp_path (the sidecar goes beside it, not into the repo)."""
    return lambda name: trace_copy(tmp_path, f"{name}.vtdt")


def cli(capsys, *args) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def first_ctx_write(path, op: int = 1) -> int:
    with open_trace(path) as t:
        return next(ev[1] for ev in t.events() if ev[0] == S.K_CTX_WRITE and ev[3] == op)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with VTDTRACE_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from its golden file"


def entry_of(show: dict, rid: str) -> dict:
    for u in show["iommus"]:
        for e in u["context"]:
            if e["rid"] == rid:
                return e
    raise KeyError(rid)


# --- S1 at the cmpxchg16b step ------------------------------------------------------------

def test_s1_direct_at_the_cmpxchg16b_write_names_the_new_owner(trace, capsys):
    path = trace("s1-usb-rmrr.direct")
    n = first_ctx_write(path)
    with open_trace(path) as t:
        assert t.event(n)[S.F0 + 4] == "cmpxchg16b"
    rc, out, _ = cli(capsys, "show", path, "--at", n, "--json")
    assert rc == 0
    check_golden("s1-usb-rmrr.direct.cmpxchg16b.json", out)
    doc = json.loads(out)
    e = entry_of(doc, "0000:00:14.0")
    assert e["present"] and e["did_owner"] == "guest" and e["pt_owner"] == "guest"
    assert doc["seq"] == n and doc["label"] == "MO7"

    rc, text, _ = cli(capsys, "show", path, "--at", n)
    assert rc == 0
    check_golden("s1-usb-rmrr.direct.cmpxchg16b.txt", text)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("0000:00:14.0"))
    assert re.search(r"\bP\s+did \d+\s+guest\s+pt guest\b", line), line


def test_s1_legacy_at_the_same_point_shows_the_entry_non_present(trace, capsys):
    path = trace("s1-usb-rmrr.legacy")
    n = first_ctx_write(path)          # UO3: the unmap clears P first
    rc, out, _ = cli(capsys, "show", path, "--at", n, "--json")
    assert rc == 0
    check_golden("s1-usb-rmrr.legacy.first-write.json", out)
    doc = json.loads(out)
    assert entry_of(doc, "0000:00:14.0")["present"] is False
    # ... which is the RMRR disconnection window, open from this step.
    assert any(f["kind"] == "rmrr-disconnect" and f["rid"] == "0000:00:14.0" and f["start"] == n
               for f in doc["open_findings"])
    rc, text, _ = cli(capsys, "show", path, "--at", n)
    check_golden("s1-usb-rmrr.legacy.first-write.txt", text)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("0000:00:14.0"))
    assert "not present" in line


def test_s1_nocx16_rmrr_path_shows_the_mixed_entry(trace, capsys):
    """W1': new page tables with the old DID -- the did-pt-mismatch window."""
    path = trace("s1-usb-rmrr.direct-nocx16")
    n = first_ctx_write(path)
    rc, out, _ = cli(capsys, "show", path, "--at", n, "--json")
    assert rc == 0
    check_golden("s1-usb-rmrr.direct-nocx16.w1.json", out)
    e = entry_of(json.loads(out), "0000:00:14.0")
    assert e["present"] and e["did_owner"] == "dom0" and e["pt_owner"] == "guest"


@pytest.mark.parametrize("name,at", [("s1-usb-rmrr.direct", "0"), ("s4-legacy-pci-rmrr-bridge.direct", None),
                                     ("s7-phantom-quarantine.direct", None)])
def test_show_golden_states(trace, capsys, name, at):
    path = trace(name)
    extra = ["--at", at] if at is not None else []
    rc, text, _ = cli(capsys, "show", path, *extra)
    assert rc == 0
    check_golden(f"{name}.{at or 'end'}.txt", text)
    rc, out, _ = cli(capsys, "show", path, *extra, "--json")
    assert rc == 0
    check_golden(f"{name}.{at or 'end'}.json", out)


# --- the JSON contract ---------------------------------------------------------------------

def test_show_json_has_the_contract_shape(trace, capsys):
    path = trace("s4-legacy-pci-rmrr-bridge.direct")
    with open_trace(path) as t:
        count = t.count
        header = t.header
    for n in (0, count // 2, count):
        rc, out, _ = cli(capsys, "show", path, "--at", n, "--json")
        assert rc == 0
        doc = json.loads(out)
        assert list(doc) == ["shape_version", "seq", "op", "label", "iommus", "devices", "page_tables",
                             "identity_maps", "locks", "stacks", "cpus", "open_findings"]
        assert doc["shape_version"] == 2
        for c in doc["cpus"]:
            assert list(c) == ["cpu", "op", "stack", "locks", "waits_for"]
        assert doc["seq"] == n
        for f in doc["open_findings"]:      # check --json finding objects, open at n
            assert list(f) == ["kind", "severity", "device", "rid", "iommu", "start", "end", "open_at_end",
                               "start_label", "end_label", "detail"]
            assert f["start"] <= n and (f["end"] is None or n < f["end"]) and f["open_at_end"] == (f["end"] is None)
        if n == 0:
            assert doc["op"] is None and doc["devices"] == [] and doc["locks"] == []
        for u in doc["iommus"]:
            assert list(u) == ["id", "levels", "context", "dids", "caches"]
            assert u["levels"] == next(x["levels"] for x in header["platform"]["iommus"] if x["id"] == u["id"])
            assert set(u["caches"]) == {"context", "iotlb", "dev_iotlb"}
            for e in u["context"]:
                assert list(e) == ["rid", "present", "did", "did_owner", "pt_owner", "tt", "aw",
                                   "slptptr", "table", "levels", "lo", "hi"]
                assert RID_RE.match(e["rid"]) and U64_RE.match(e["lo"]) and U64_RE.match(e["hi"])
                assert U64_RE.match(e["slptptr"]) and int(e["slptptr"], 16) == int(e["lo"], 16) & ~0xFFF
                assert e["levels"] == ((int(e["hi"], 16) & 7) + 2 if 1 <= int(e["hi"], 16) & 7 <= 3 else None)
            assert all(k.isdigit() for k in u["dids"])
        for d in doc["devices"]:
            assert list(d) == ["bdf", "owner"] and RID_RE.match(d["bdf"])
        for t in doc["page_tables"]:
            assert list(t) == ["domain", "root", "table", "levels", "pages"] and U64_RE.match(t["root"])
        for m in doc["identity_maps"]:
            assert list(m) == ["domain", "base", "end", "access", "refcount", "rmrr_devices"]
            assert all(RID_RE.match(b) for b in m["rmrr_devices"])
        for lk in doc["locks"]:
            assert list(lk) == ["lock", "cpu"]
    # Every requester ID of a declared device is listed, present or not -- at step 0 too.
    rc, out, _ = cli(capsys, "show", path, "--at", 0, "--json")
    rids = {e["rid"] for u in json.loads(out)["iommus"] for e in u["context"]}
    declared = {d["bdf"] for d in header["platform"]["devices"]}
    assert declared <= rids
    assert {"0000:05:00.0", "0000:00:1e.0"} <= rids          # the bridge aliases of 05:01.0


def test_domains_by_name_dom_io_and_null_for_invalid(trace, capsys):
    path = trace("s7-phantom-quarantine.direct")
    rc, out, _ = cli(capsys, "show", path, "--at", 0, "--json")
    assert rc == 0
    # Boot quarantines the phantom device: dom_io appears as a DID owner somewhere in the run.
    with open_trace(path) as t:
        seen = set()
        for n in range(0, t.count + 1, max(1, t.count // 25)):
            rc, out, _ = cli(capsys, "show", path, "--at", n, "--json")
            doc = json.loads(out)
            seen |= {v for u in doc["iommus"] for v in u["dids"].values()}
            seen |= {e["did_owner"] for u in doc["iommus"] for e in u["context"]}
    assert "dom_io" in seen and all(v is None or isinstance(v, str) for v in seen)


# --- exit codes ----------------------------------------------------------------------------

def test_exit_codes_and_one_line_errors(tmp_path, trace, capsys):
    rc, out, err = cli(capsys, "show", tmp_path / "missing.vtdt")
    assert rc == 2 and out == "" and err.count("\n") == 1 and "missing.vtdt" in err
    notatrace = tmp_path / "x.vtdt"
    notatrace.write_text("hello, not a trace\n")
    rc, out, err = cli(capsys, "show", notatrace)
    assert rc == 2 and err.count("\n") == 1
    path = trace("s1-usb-rmrr.direct")
    rc, out, err = cli(capsys, "show", path, "--at", 10 ** 9)
    assert rc == 2 and out == "" and err.count("\n") == 1 and "beyond the end" in err
    with pytest.raises(SystemExit) as exc:
        main(["show", str(path), "--at", "-1"])
    assert exc.value.code == 2
    capsys.readouterr()


def small_chunks(tmp_path, scenario="s1-usb-rmrr", variant="direct") -> Path:
    """The scenario recorded with 16-event chunks, so a cut leaves a prefix."""
    from test_replay_seek import record
    return record(tmp_path, scenario, variant, chunk_events=16)


def test_damaged_trace_prints_the_readable_state_then_exits_3(tmp_path, capsys):
    path = small_chunks(tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 600)
    rc, out, err = cli(capsys, "show", path, "--json")
    assert rc == 3 and err.count("\n") == 1 and "damaged" in err and "last good seq" in err
    doc = json.loads(out)
    assert doc["seq"] > 0 and doc["iommus"]
    rc, out, err = cli(capsys, "export", path, "--format", "chrome")
    assert rc == 3 and err.count("\n") == 1
    validate_chrome(json.loads(out))


# --- export --------------------------------------------------------------------------------

def validate_chrome(doc: dict) -> dict:
    """Structural validation: valid object form, every B has its E on its
    thread (nesting), ts non-decreasing per thread.  Returns per-phase counts."""
    assert isinstance(doc["traceEvents"], list)
    stacks: dict = defaultdict(list)
    last: dict = {}
    phases: dict = defaultdict(int)
    for ev in doc["traceEvents"]:
        ph = ev["ph"]
        phases[ph] += 1
        assert isinstance(ev["pid"], int) and isinstance(ev["tid"], int)
        if ph == "M":
            continue
        key = (ev["pid"], ev["tid"])
        assert ev["ts"] >= last.get(key, 0), ev
        last[key] = ev["ts"]
        if ph == "B":
            stacks[key].append(ev["name"])
        elif ph == "E":
            assert stacks[key], f"E without B on {key}: {ev}"
            stacks[key].pop()
    assert not any(stacks.values()), {k: v for k, v in stacks.items() if v}
    return phases


@pytest.mark.parametrize("name", ["s1-usb-rmrr.direct", "s4-legacy-pci-rmrr-bridge.direct",
                                  "s5-me-wifi-phantom.legacy", "s8-two-legacy-behind-bridge.direct-nocx16"])
def test_chrome_export_is_valid_nested_and_deterministic(trace, capsys, tmp_path, name):
    path = trace(name)
    rc, out, err = cli(capsys, "export", path, "--format", "chrome")
    assert rc == 0 and err == ""
    doc = json.loads(out)
    phases = validate_chrome(doc)
    assert phases["B"] == phases["E"] > 0 and phases["i"] > 0
    names = {(e["pid"], e["args"]["name"]) for e in doc["traceEvents"]
             if e["ph"] == "M" and e["name"] in ("process_name", "thread_name")}
    assert any(n.startswith("IOMMU 0") for _, n in names)
    assert any(n.startswith("0000:00:") for pid, n in names if pid == 1)
    assert doc["otherData"]["complete"] is True
    with open_trace(path) as t:
        assert doc["otherData"]["events"] == t.count
    rc, _, _ = cli(capsys, "export", path, "--format", "chrome", "-o", tmp_path / "again.json")
    assert rc == 0 and (tmp_path / "again.json").read_text() == out


def test_chrome_export_closes_slices_of_a_truncated_trace(tmp_path, capsys):
    path = small_chunks(tmp_path, "s1-usb-rmrr", "legacy")
    with open_trace(path) as t:
        chunks = t.chunks
    with open(path, "r+b") as f:       # cut inside the event chunks: an op is left open
        f.truncate(chunks[len(chunks) // 2][0] + 40)
    rc, out, err = cli(capsys, "export", path, "--format", "chrome")
    assert rc == 3
    doc = json.loads(out)
    validate_chrome(doc)
    assert doc["otherData"]["events"] > 0 and doc["otherData"]["complete"] is False
    assert doc["otherData"]["stop"]["kind"] == "truncated"
    assert any(e.get("args", {}).get("closed_at_end") for e in doc["traceEvents"] if e["ph"] == "E")


def test_findings_become_async_windows():
    import io

    from replay.export_chrome import export_chrome
    from replay.reader import current_schema

    path = TRACES / "s1-usb-rmrr.direct.vtdt"
    with open_trace(path) as t:
        events = list(t.events())
        header = t.header
    findings = [{"kind": "stale-context", "severity": "benign", "rid": "0000:00:14.0", "iommu": 0,
                 "start": 10, "end": 20, "start_label": "MO7", "end_label": "MO9", "detail": "x"},
                {"kind": "rmrr-disconnect", "severity": "hazard", "rid": "0000:00:14.0", "iommu": 0,
                 "start": 15, "end": None, "start_label": "UO3", "end_label": None, "detail": "y"}]
    buf = io.StringIO()
    export_chrome(events, header, current_schema(), buf, findings=findings)
    doc = json.loads(buf.getvalue())
    validate_chrome(doc)
    asyncs = [(e["ph"], e["id"], e["ts"]) for e in doc["traceEvents"] if e["ph"] in "be"]
    assert sorted(asyncs) == sorted([("b", "hz0", 10), ("e", "hz0", 20), ("b", "hz1", 15),
                                     ("e", "hz1", len(events) + 1)])
    # On the device's track (IOMMU 0 = pid 1, 00:14.0 = tid 0xa0 + 1), which has its thread name.
    assert {(e["pid"], e["tid"]) for e in doc["traceEvents"] if e["ph"] in "be"} == {(1, 0xA1)}
    assert any(e["ph"] == "M" and e["name"] == "thread_name" and (e["pid"], e["tid"]) == (1, 0xA1)
               for e in doc["traceEvents"])


def test_jsonl_export_is_byte_identical_to_log_jsonl(trace, capsys, tmp_path):
    for name in ("s1-usb-rmrr.direct", "s5-me-wifi-phantom.direct-nocx16"):
        path = trace(name)
        rc, log_out, _ = cli(capsys, "log", path, "--jsonl")
        assert rc == 0
        rc, exp_out, _ = cli(capsys, "export", path, "--format", "jsonl")
        assert rc == 0 and exp_out == log_out and exp_out.endswith("\n")
        # the second round overwrites the first round's file: --force (no writer overwrites without it)
        rc, _, _ = cli(capsys, "export", path, "--format", "jsonl", "-o", tmp_path / "e.jsonl", "--force")
        assert rc == 0 and (tmp_path / "e.jsonl").read_bytes() == log_out.encode("ascii")
