"""replay.hazards' public pieces beyond the analysers: the interval index
(open at n, next / previous), the sidecar round trip of findings_for_trace,
the Chrome async events, and the platform topology computed from a header.
"""

from __future__ import annotations

import json
import random

import pytest

from replay.hazards import Finding, FindingIndex, decode_findings, encode_findings, findings_for_trace
from replay.hazards.chrome import chrome_hazard_events, track
from replay.hazards.topology import Topology


def _f(start, end, kind="stale-context", rid="0000:00:14.0", iommu=0, sev="benign"):
    return Finding(kind, sev, "0000:00:14.0", rid, iommu, start, end, "MO7", None if end is None else "MO9",
                   f"IOMMU {iommu}: test")


def test_index_open_at_matches_a_scan():
    rnd = random.Random(5)
    fs = []
    for _i in range(400):
        s = rnd.randrange(1, 1000)
        e = None if rnd.random() < 0.1 else s + rnd.randrange(1, 80)
        fs.append(_f(s, e, kind=rnd.choice(("stale-context", "stale-iotlb", "rmrr-disconnect")),
                     rid=f"0000:00:{rnd.randrange(32):02x}.0", iommu=rnd.randrange(3)))
    idx = FindingIndex(fs)
    order = sorted(fs, key=Finding.sort_key)
    assert list(idx) == order
    for n in list(range(0, 1100, 7)) + [f.start for f in fs] + [f.end for f in fs if f.end]:
        want = [f for f in order if f.start <= n and (f.end is None or n < f.end)]
        assert idx.open_at(n) == want, n
        nxt = [f for f in order if f.start > n]
        assert idx.next_after(n) == (nxt[0] if nxt else None)
        prv = [f for f in order if f.start < n]
        assert idx.previous_before(n) == (prv[-1] if prv else None)
        assert idx.starting_at(n) == [f for f in order if f.start == n]


def test_index_edges():
    idx = FindingIndex([])
    assert idx.open_at(5) == [] and idx.next_after(0) is None and idx.previous_before(9) is None
    idx = FindingIndex([_f(3, 4), _f(3, None, sev="hazard")])
    assert [f.end for f in idx.open_at(3)] == [None, 4]      # check order: open ones first on a tie
    assert [f.end for f in idx.open_at(4)] == [None]
    assert idx.open_at(2) == [] and idx.worst_at(3) == "hazard" and idx.worst_at(2) is None


def test_findings_encode_decode_round_trip():
    fs = [_f(1, 2), _f(5, None, kind="did-leak", rid=None, iommu=None, sev="warning")]
    import msgpack
    blob = msgpack.packb(encode_findings(fs))
    assert decode_findings(msgpack.unpackb(blob)) == fs
    with pytest.raises(ValueError):
        decode_findings([99, []])
    with pytest.raises(ValueError):
        decode_findings([1, [["nope", "hazard", None, None, None, 1, 2, "", "", ""]]])


def test_sidecar_caches_findings_and_returns_the_same(tmp_path):
    import shutil
    src = "traces/s1-usb-rmrr.direct-nocx16.vtdt"
    path = tmp_path / "t.vtdt"
    shutil.copy(src, path)
    first = findings_for_trace(path, sidecar=True)
    assert not first.from_cache
    again = findings_for_trace(path, sidecar=True)
    assert again.from_cache and again.findings == first.findings
    assert (again.events, again.complete) == (first.events, first.complete)
    assert findings_for_trace(path).findings == first.findings
    # a different trace at the same path invalidates the cache
    shutil.copy("traces/s1-usb-rmrr.legacy.vtdt", path)
    third = findings_for_trace(path, sidecar=True)
    assert not third.from_cache and third.findings == findings_for_trace(path).findings


def test_chrome_events_on_the_device_track():
    r = findings_for_trace("traces/s4-legacy-pci-rmrr-bridge.direct.vtdt")
    end_ts = r.events + 1
    evs = chrome_hazard_events(r.findings, end_ts=end_ts)
    json.dumps(evs)
    pairs = {}
    for e in evs:
        if e["ph"] in "be":
            pairs.setdefault(e["id"], []).append(e)
    assert len(pairs) == len(r.findings)
    for (b, e) in pairs.values():
        assert (b["ph"], e["ph"]) == ("b", "e") and b["ts"] < e["ts"] <= end_ts
        assert (b["pid"], b["tid"], b["cat"]) == (e["pid"], e["tid"], e["cat"])
    # the alias windows of 05:01.0 sit on 05:01.0's own track of IOMMU 0
    rd = [e for e in evs if e["ph"] == "b" and e["args"]["kind"] == "rmrr-disconnect"]
    assert rd and all((e["pid"], e["tid"]) == (1, 0x0508 + 1) for e in rd)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in evs if e["ph"] == "M"}
    assert names[(1, 0x0509)] == "0000:05:01.0"
    assert track({"iommu": None, "rid": None}) == (0, 0)


def test_topology_rids_from_the_header():
    from tracer.record import make_header
    from tracer.scenario import load_scenario

    topo = Topology(make_header(load_scenario("s4-legacy-pci-rmrr-bridge"), "direct"))
    nic = topo.by_loc[(0, 5, 0x08)]
    assert nic.rids == ((0, 5, 0x08), (0, 0, 0xF0), (0, 5, 0x00))
    assert nic.rmrrs == ((0xBF7FE000, 0xBF7FFFFF),)
    assert topo.device_of((0, 5, 0x00)) == "0000:00:1e.0"
    topo = Topology(make_header(load_scenario("s5-me-wifi-phantom"), "direct"))
    wlan = topo.by_loc[(0, 3, 0)]
    assert wlan.unit == 1 and (0, 0, (22 << 3) | 7) in wlan.rids
    assert topo.device_of((0, 0, (22 << 3) | 7)) == "0000:00:16.0"
    topo = Topology(make_header(load_scenario("s7-phantom-quarantine"), "direct"))
    assert topo.by_loc[(0, 2, 0)].rids == ((0, 2, 0), (0, 2, 4))
    # a hostile header does not break it
    Topology({"platform": {"devices": [{"bdf": 5}, "x", {"bdf": "zz"}], "iommus": [None, {"id": "a"}],
                           "rmrrs": [{"base": "x"}], "domains": [[1], "y"]}})
    Topology(None)


def test_findings_for_an_open_trace_object():
    from replay.reader import open_trace
    with open_trace("traces/s6-enomem.legacy.vtdt") as t:
        r = findings_for_trace(t)
        assert t.count == r.events           # the caller's trace stays open and usable
    assert r.findings == findings_for_trace("traces/s6-enomem.legacy.vtdt").findings
    assert [f.kind for f in r.findings if f.severity == "hazard"] == ["rmrr-disconnect"]
    assert r.index.open_at(r.events)[0].open_at_end


def _events():
    from tracer import schema as S

    class E:
        def __init__(self):
            self.seq = 0
            self.evs = []

        def __call__(self, kind, *fields, func="", label=""):
            self.seq += 1
            self.evs.append([S.KIND_BY_NAME[kind].code, self.seq, 0, 1, S.FUNC_CODE[func], label, *fields])
    return E()


def test_lock_order_findings_from_hand_built_events():
    from replay.hazards import findings_for_events
    header = {"platform": {"iommus": [{"id": 0, "segment": 0, "include_all": True}],
                           "devices": [{"bdf": "0000:00:14.0", "type": "pcie-endpoint"}],
                           "domains": [[0, "dom0", True], [1, "guest", False]]}}
    e = _events()
    e("op-begin", "assign", 0xA0, 1, 0)
    e("lock", "iommu->lock", 0, label="MO1")
    e("lock", "pcidevs_lock", None, label="X1")                       # inverted
    e("unlock", "pcidevs_lock", None)
    e("unlock", "iommu->lock", 0)
    e("ctx-write", 0, 0, 0xA0, "full", "cmpxchg16b", 0, 0, 0x1000_0001, 0x102, label="MO7")  # unlocked
    e("did-map", 0, 1, 0, 1, func="context_set_domain_id", label="MO5")                      # unlocked
    e("did-bitmap", 0, 1, 1, func="context_set_domain_id", label="MO5")
    e("lock", "pcidevs_lock", None)
    e("did-map", 0, 1, 1, 0x7FF4, func="cleanup_domid_map", label="RN4")                    # fine
    e("unlock", "pcidevs_lock", None)
    e("did-bitmap", 0, 1, 0, func="cleanup_domid_map", label="DK4")                         # XSA-399
    e("op-end", 0)
    fs = [f for f in findings_for_events(header, e.evs) if f.kind == "lock-order"]
    got = [(f.start, f.end, f.severity, f.start_label, f.end_label) for f in fs]
    assert got == [(3, 4, "hazard", "X1", "X1"), (6, 7, "hazard", "MO7", "MO7"),
                   (7, 9, "hazard", "MO5", "MO5"), (12, 13, "warning", "DK4", "DK4")]
    assert "pcidevs_lock taken while holding iommu->lock[0]" in fs[0].detail
    assert "stored without iommu->lock[0]" in fs[1].detail and fs[1].rid == "0000:00:14.0"
    assert "DID 1" in fs[2].detail and "XSA-399" in fs[3].detail


def test_an_undecodable_or_refused_findings_entry_is_a_miss(tmp_path):
    """Sidecar entries that pass their checksum but are not findings of this
    build (bytes that are not msgpack, rows decode_findings refuses) are
    recomputed, by check and by the diff's row reader alike."""
    import shutil

    from replay.hazards.analyse import SIDECAR_KEY, _build_key, cached_finding_rows
    from replay.sidecar import Sidecar

    path = tmp_path / "t.vtdt"
    shutil.copy("traces/s1-usb-rmrr.direct-nocx16.vtdt", path)
    want = findings_for_trace(path, sidecar=True)
    assert cached_finding_rows(path) is not None
    bad_rows = {"build": _build_key(), "events": want.events, "stop": None,
                "findings": [1, [["nope", "hazard", None, None, None, 1, 2, "", "", ""]]]}
    for put in (lambda sc: sc.put_raw(SIDECAR_KEY, b"\xc1\xc1 not msgpack"), lambda sc: sc.put(SIDECAR_KEY, bad_rows)):
        with Sidecar.open(path) as sc:
            put(sc)
            assert sc.commit()
        rows = cached_finding_rows(path)
        assert rows is None or rows[0][0] == "nope"      # the diff checks each row as it matches it
        got = findings_for_trace(path, sidecar=True)
        assert not got.from_cache and got.findings == want.findings
        assert findings_for_trace(path, sidecar=True).from_cache


def test_an_event_that_is_not_an_array_ends_the_analysable_prefix():
    from replay.hazards import Analysis

    header = {"platform": {"iommus": [{"id": 0, "segment": 0, "include_all": True}], "domains": [[0, "dom0", True]]}}
    e = _events()
    e("op-begin", "boot", None, None, None)
    for bad in (7, [], {"kind": 0}):
        a = Analysis(header)
        a.feed([*e.evs, bad])
        assert a.finish() == [] and a.seq == 1 and a.bad is not None and a.bad[0] is None, (bad, a.bad)


def test_the_findings_entry_is_written_and_read_a_row_at_a_time_as_one_msgpack_map(tmp_path):
    """The sidecar entry streamed row by row is byte for byte msgpack.packb
    of the whole entry (the format the diff's row reader also reads); read
    back, the findings equal the computed ones with their repeating strings
    shared; bytes after the map make the entry a miss."""
    import shutil

    import msgpack

    from replay.hazards.analyse import SIDECAR_KEY, _build_key
    from replay.sidecar import Sidecar

    path = tmp_path / "t.vtdt"
    shutil.copy("traces/s1-usb-rmrr.direct-nocx16.vtdt", path)
    want = findings_for_trace(path)
    assert len(want.findings) > 1
    assert not findings_for_trace(path, sidecar=True).from_cache
    with Sidecar.open(path) as sc:
        raw = sc.get_raw(SIDECAR_KEY)
    entry = {"build": _build_key(), "events": want.events, "stop": None, "findings": encode_findings(want.findings)}
    assert raw == msgpack.packb(entry, use_bin_type=True)
    got = findings_for_trace(path, sidecar=True)
    assert got.from_cache and got.findings == want.findings and got.events == want.events
    kinds = {f.kind: f.kind for f in got.findings}
    assert all(f.kind is kinds[f.kind] for f in got.findings)
    with Sidecar.open(path) as sc:
        sc.put_raw(SIDECAR_KEY, raw + msgpack.packb(0))
        assert sc.commit()
    got = findings_for_trace(path, sidecar=True)
    assert not got.from_cache and got.findings == want.findings
    assert findings_for_trace(path, sidecar=True).from_cache
