"""Xen's notation everywhere, as a user runs the CLI:
addresses and the rc of address-returning functions in hex, source IDs as
BDFs, requester IDs as one "SSSS:BB:DD.F" string in every JSON output
(shape version 2, docs/CLI.md#json-shape), `00:14.0` accepted for
`0000:00:14.0`, and `show` decoding SLPTPTR, the page-table roots, the
identity maps with their reference counts, marking mismatches with ≠.

Expected values are derived from the trace (the headless reader), never
from the outputs under test."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import pytest
from test_tui_support import trace_copy

from replay import render
from replay.reader import open_trace
from replay.state import ReplayState
from tracer import schema as S
from tracer.platform import fmt_bdf, fmt_rid

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "traces"
RID_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
DEVFN_RE = re.compile(r"^[0-9a-f]{2}\.[0-7]$")


@pytest.fixture
def copy(tmp_path):
    return lambda name: trace_copy(tmp_path, f"{name}.vtdt")


def events(path):
    with open_trace(path) as t:
        return [S.event_to_dict(e) for e in t.events()]


# --- text ---------------------------------------------------------------------------------------

def test_log_prints_address_returns_in_hex_and_source_ids_as_bdfs(copy, run_cli):
    path = copy("s1-usb-rmrr.legacy")
    evs = events(path)
    res = run_cli("log", path)
    assert res.returncode == 0, res.stderr
    lines = {int(ln.split()[0]): ln for ln in res.stdout.splitlines()[1:]}
    addr_returns = [e for e in evs if e["kind"] == "return" and e["func"] in S.ADDRESS_FUNCS]
    assert {e["func"] for e in addr_returns} == {"bus_to_context_maddr", "domain_pgd_maddr"}
    for e in addr_returns:
        assert lines[e["seq"]].endswith(f"rc={e['rc']:#x}"), lines[e["seq"]]
    # bus_to_context_maddr returns the context table the root entry just written points at
    root = next(e for e in evs if e["kind"] == "root-write")
    ret = next(e for e in evs if e["kind"] == "return" and e["seq"] > root["seq"])
    assert f"rc={root['new'] & ~0xFFF:#x}" in lines[ret["seq"]]
    # other functions keep their error codes
    assert re.search(r"assign_device +AD2 +return +rc=0$", res.stdout, re.M)
    flushes = [e for e in evs if e["kind"] == "call" and e["func"] == "iommu_flush_context_device"]
    assert flushes
    for e in flushes:
        sid = dict(e["args"])["source_id"]
        assert f"source_id={fmt_rid(0, sid)}," in lines[e["seq"]]
    reassign = next(e for e in evs if e["kind"] == "call" and e["func"] == "reassign_device_ownership")
    assert "source=dom0, target=guest" in lines[reassign["seq"]]


def test_only_the_address_functions_return_addresses():
    """ADDRESS_FUNCS is what the engine does: across every shipped trace, a
    positive rc beyond a small count comes from them and nothing else, and
    each of them returns a page the trace allocated (or 0 on failure)."""
    seen = set()
    for f in sorted(glob.glob(str(TRACES / "*.vtdt"))):
        evs = events(f)
        pages = {e["maddr"] for e in evs if e["kind"] == "pt-alloc"}
        pages |= {e["new"] & ~0xFFF for e in evs if e["kind"] == "root-write"}
        for e in evs:
            if e["kind"] != "return" or not isinstance(e["rc"], int):
                continue
            name = e["func"]
            if name in S.ADDRESS_FUNCS:
                seen.add(name)
                assert e["rc"] == 0 or e["rc"] in pages, (f, e)
            else:
                assert e["rc"] <= 1, (f, e)     # 0/-errno, 1 = "flush the write buffer" / "moved"
    assert seen == set(S.ADDRESS_FUNCS)


# --- JSON ---------------------------------------------------------------------------------------

def _rid_values(obj):
    """Every value of a requester-ID key at any depth (keys and [name, value] args)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("bdf", "sid", "source_id", "rid", "device", "pdev", "exclude") and v is not None:
                yield k, v
            yield from _rid_values(v)
    elif isinstance(obj, list):
        if len(obj) == 2 and isinstance(obj[0], str) and obj[0] in ("bdf", "sid", "source_id", "pdev") \
                and obj[1] is not None:
            yield obj[0], obj[1]
        for v in obj:
            yield from _rid_values(v)


def test_jsonl_names_every_requester_id_as_one_string(copy, run_cli):
    for name in ("s1-usb-rmrr.legacy", "s7-phantom-quarantine.direct", "s4-legacy-pci-rmrr-bridge.direct",
                 "s11-ats-stale-devtlb.direct"):
        path = copy(name)
        res = run_cli("log", path, "--jsonl")
        exported = run_cli("export", path, "--format", "jsonl")
        assert res.returncode == 0 and exported.stdout == res.stdout
        objs = [json.loads(x) for x in res.stdout.splitlines()]
        raw = events(path)
        assert len(objs) == len(raw)
        for obj, ev in zip(objs, raw):
            assert "seg" not in obj and "bus" not in obj or ev["kind"] == "root-write"
            for k, v in _rid_values(obj):
                assert RID_RE.match(v), (k, v, obj)
            for pair in obj.get("args") or ():
                assert pair[0] not in ("seg",) and not (pair[0] == "bus" and "devfn" in dict(ev["args"]))
                if pair[0] == "devfn":
                    assert DEVFN_RE.match(pair[1]), obj
            # the strings say what the raw numbers said
            if ev["kind"] in ("ctx-write", "cache-sync"):
                assert obj["bdf"] == fmt_bdf(0, ev["bus"], ev["devfn"])   # every shipped unit is on segment 0
            if ev["kind"] in ("owner-move", "device-add", "device-remove", "ats-enable"):
                assert obj["bdf"] == fmt_rid(ev["seg"], ev["bdf"])
            if ev["kind"] in ("flush-context", "flush-dev-iotlb"):
                assert obj["sid"] == fmt_rid(0, ev["sid"])
            if ev["kind"] == "op-begin":
                assert obj["bdf"] == (fmt_rid(ev["seg"], ev["bdf"]) if ev["bdf"] is not None else None)
            if ev["kind"] == "call":
                a = dict(ev["args"])
                if "bus" in a and "devfn" in a:
                    assert ["bdf", fmt_bdf(a.get("seg", 0), a["bus"], a["devfn"])] in obj["args"]
            if ev["kind"] == "return":
                assert obj["rc"] == ev["rc"]           # values stay as they are


def test_a_jq_filter_on_what_lspci_prints_finds_the_rid_filters_events(copy, run_cli):
    path = copy("s1-usb-rmrr.direct-nocx16")
    objs = [json.loads(x) for x in run_cli("log", path, "--jsonl").stdout.splitlines()]
    by_string = {o["seq"] for o in objs if "0000:00:14.0" in {v for _, v in _rid_values(o)}}
    filtered = run_cli("log", path, "--jsonl", "--rid", "00:14.0")
    assert filtered.returncode == 0, filtered.stderr
    by_rid = {json.loads(x)["seq"] for x in filtered.stdout.splitlines()}
    assert by_rid and by_rid <= by_string


@pytest.mark.parametrize("cmd", [("show", "--json"), ("check", "--json"), ("info", "--json")])
def test_json_documents_carry_shape_version_2(copy, run_cli, cmd):
    path = copy("s1-usb-rmrr.direct-nocx16")
    res = run_cli(cmd[0], path, *cmd[1:])
    assert res.returncode in (0, 1), res.stderr
    doc = json.loads(res.stdout)
    assert next(iter(doc)) == "shape_version" and doc["shape_version"] == 2
    for k, v in _rid_values(doc):
        assert RID_RE.match(v), (k, v)


def test_diff_json_events_name_requester_ids_as_strings(copy, run_cli):
    res = run_cli("diff", copy("s1-usb-rmrr.legacy"), copy("s1-usb-rmrr.direct"), "--json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["shape_version"] == 2
    rows = [r for op in doc["ops"] for reg in op["regions"] for r in reg["rows"] or ()]
    ctx = [r["a"] for r in rows if r["a"] and r["a"]["kind"] == "ctx-write"]
    assert ctx and all(RID_RE.match(e["bdf"]) and "devfn" not in e for e in ctx)
    for k, v in _rid_values(doc):
        assert RID_RE.match(v), (k, v)


# --- BDF arguments ------------------------------------------------------------------------------

def test_rid_accepts_the_short_form(copy, run_cli):
    path = copy("s1-usb-rmrr.legacy")
    full = run_cli("log", path, "--rid", "0000:00:14.0")
    short = run_cli("log", path, "--rid", "00:14.0")
    assert full.returncode == short.returncode == 0 and full.stdout == short.stdout and full.stdout.count("\n") > 10
    bad = run_cli("log", path, "--rid", "14.0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "00:14.0" in bad.stderr


# --- show ---------------------------------------------------------------------------------------

def test_show_marks_the_mismatch_and_decodes_slptptr(copy, run_cli):
    path = copy("s1-usb-rmrr.direct-nocx16")
    evs = events(path)
    # the lo store of the in-place reassignment: guest's tables, dom0's DID
    w = next(e for e in evs if e["kind"] == "ctx-write" and e["op"] == 1 and e["half"] == "lo"
             and (e["bus"], e["devfn"]) == (0, 0xA0))
    guest_pgd = next(e["maddr"] for e in evs if e["kind"] == "pt-alloc" and e["what"] == "pgd" and e["domain"] == 1)
    res = run_cli("show", path, "--at", w["seq"])
    rows = {ln.split()[0]: ln for ln in res.stdout.splitlines() if ln.startswith("    0000:")}
    usb = rows["0000:00:14.0"]
    assert re.search(r"did 0 +dom0 +≠ pt guest", usb), usb
    assert f"slptptr {guest_pgd:#x} pgd" in usb and "aw 2 (4-level)" in usb
    assert "≠" not in rows["0000:00:16.0"]
    doc = json.loads(run_cli("show", path, "--at", w["seq"], "--json").stdout)
    e = next(x for x in doc["iommus"][0]["context"] if x["rid"] == "0000:00:14.0")
    assert (e["slptptr"], e["table"], e["levels"]) == (f"0x{guest_pgd:016x}", "pgd", 4)
    roots = {t["domain"]: t for t in doc["page_tables"]}
    assert roots["guest"]["root"] == f"0x{guest_pgd:016x}" and roots["guest"]["levels"] == 4
    assert roots["dom_io"]["table"] == "quarantine"


def test_show_lists_identity_maps_with_refcounts(copy, run_cli):
    path = copy("s1-usb-rmrr.legacy")
    evs = events(path)
    with open_trace(path) as t:
        rmrr = t.header["platform"]["rmrrs"][0]
    adds = [e for e in evs if e["kind"] in ("idmap-add", "idmap-remove")]
    # the state after the last identity-map event of op 1 (assign): guest and dom0 hold it
    last = [e for e in adds if e["op"] == 1][-1]
    want = {}
    for e in adds:
        if e["seq"] <= last["seq"]:
            want[e["domain"]] = e["refcount"]
    want = {d: r for d, r in want.items() if r > 0}
    doc = json.loads(run_cli("show", path, "--at", last["seq"], "--json").stdout)
    names = {0: "dom0", 1: "guest"}
    got = {m["domain"]: m for m in doc["identity_maps"]}
    assert set(got) == {names[d] for d in want}
    for d, r in want.items():
        m = got[names[d]]
        assert m["refcount"] == r and m["rmrr_devices"] == rmrr["devices"]
        assert (int(m["base"], 16), int(m["end"], 16)) == (rmrr["base"], rmrr["end"])
    text = run_cli("show", path, "--at", last["seq"]).stdout
    assert f"[0x{rmrr['base']:016x}, 0x{rmrr['end']:016x}] rw refcount" in text
    assert "RMRR of 0000:00:14.0" in text


def test_rmrr_finding_names_the_device_once(copy, run_cli):
    path = copy("s1-usb-rmrr.legacy")
    text = run_cli("show", path, "--at", 200).stdout
    assert "IOMMU 0: RMRR device 0000:00:14.0 ([0xd5d45000, 0xd5d45fff]) has a non-present" in text
    assert "0000:00:14.0 of RMRR device" not in text


def test_a_never_used_did_slot_is_owned_by_nobody():
    """domid_map is zero-filled, but DID 5 never allocated nor written is not dom0's."""
    st = ReplayState()
    view = render.PlatformView({"platform": {"domains": [[0, "dom0", True], [1, "guest", False]]}})
    st.did_bits[(0, 0)] = 1                 # DID 0: allocated, map slot 0 -> dom0
    st.did_map[(0, 3)] = 1                  # DID 3: written, bit since cleared
    lo, hi = 0x100007001, 0x2
    assert render.did_owner(st, view, 0, lo, hi | (0 << 8)) == "dom0"
    assert render.did_owner(st, view, 0, lo, hi | (3 << 8)) == "guest"
    assert render.did_owner(st, view, 0, lo, hi | (5 << 8)) is None
    assert render.did_slot_owner(st, view, 0, 5) is None


def test_show_text_keeps_to_ascii_where_the_terminal_has_no_mismatch_mark(copy, run_cli):
    path = copy("s1-usb-rmrr.direct-nocx16")
    w = next(e for e in events(path) if e["kind"] == "ctx-write" and e["op"] == 1 and e["half"] == "lo"
             and (e["bus"], e["devfn"]) == (0, 0xA0))
    res = run_cli("show", path, "--at", w["seq"], env={"PYTHONIOENCODING": "ascii"})
    assert res.returncode == 0 and res.stderr == "" and re.search(r"dom0 +!= pt guest", res.stdout)
