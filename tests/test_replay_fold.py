"""The replay fold (replay/state.py) and the may-hold cache model
(replay/caches.py) on hand-built events, plus the final state of every
shipped scenario against the engine's own snapshot."""

from __future__ import annotations

import glob

import pytest

from replay import caches
from replay.state import BadEvent, ReplayState, apply, decode_state, encode_state, fold, initial_state, to_canonical
from tracer import schema as S

P = 1
PT_A, PT_B, PT_C = 0x1_0000_7000, 0x1_0000_B000, 0x1_0000_F000


def entry(pt: int, did: int, *, present: bool = True, tt: int = 0, aw: int = 2) -> tuple[int, int]:
    return (pt | (tt << 2) | (P if present else 0), (did << 8) | aw)


class Events:
    """Builds schema-shaped event arrays with consecutive seqs."""

    def __init__(self) -> None:
        self.seq = 0
        self.op = 0

    def __call__(self, kind: str, *fields, cpu: int = 0, func: str = "", label: str = ""):
        k = S.KIND_BY_NAME[kind]
        assert len(fields) == len(k.fields), (kind, fields)
        self.seq += 1
        return [k.code, self.seq, cpu, self.op, S.FUNC_CODE[func], label, *fields]

    def write(self, u, bus, devfn, old, new, half="full", method="cmpxchg16b"):
        return self("ctx-write", u, bus, devfn, half, method, old[0], old[1], new[0], new[1])


def run(events, *, cm=False, coherent=True) -> ReplayState:
    return fold(ReplayState(cm=cm, coherent=coherent), events)


# --- the architectural state ---------------------------------------------------------

def test_every_kind_folds_into_the_canonical_shape():
    e = Events()
    evs = [
        e("op-begin", "boot", None, None, None),
        e("call", [], func="boot"),
        e("domain-create", 0), e("domain-create", 1), e("domain-create", S.DOMID_IO),
        e("device-add", 0, 0xA0),
        e("owner-move", 0, 0xA0, None, 0),
        e("ats-enable", 0, 0xA0, 1),
        e("pt-alloc", 0, PT_A, "pgd"), e("pt-alloc", 0, PT_A + 0x1000, "pt-l3"),
        e("pt-alloc", S.DOMID_IO, PT_C, "quarantine"),
        e("idmap-add", 0, 0xD5D45000, 0xD5D45FFF, "rw", 1),
        e("lock", "pcidevs_lock", None),
        e("lock", "iommu->lock", 0),
        e("root-write", 0, 0, 0, 0x1_0000_1001),
        e("did-map", 0, 0, 0, 0),
        e("did-bitmap", 0, 0, 1),
        e("did-map", 0, 1, 0, 1),
        e("did-bitmap", 0, 1, 1),
        e.write(0, 0, 0xA0, (0, 0), entry(PT_A, 0)),
        e("iommu-bitmap", 0, 0, 1),
        e("translation-enable", 0),
        e("unlock", "iommu->lock", 0),
        e("log", "info", "hello"),
        e("fault-inject", "pgd-alloc", -12, 1),
        e("rollback-begin", -12, "MO14 remap"),
    ]
    st = run(evs)
    c = to_canonical(st)
    assert c["ctx"] == ((0, 0, 0xA0) + entry(PT_A, 0),)
    assert c["root"] == ((0, 0, 0x1_0000_1001),)
    assert c["did_bitmap"] == ((0, (0, 1)),)
    assert c["did_map"] == ((0, 1, 1),)                 # zero slots are not listed
    assert c["iommu_bitmap"] == ((0, (0,)),)
    assert c["pgd"] == ((0, PT_A), (S.DOMID_IO, PT_C))   # lower levels are not roots
    assert c["idmaps"] == ((0, 0xD5D45000, 0xD5D45FFF, "rw", 1),)
    assert c["owners"] == ((0, 0xA0, 0),)
    assert c["ats"] == ((0, 0xA0),)
    assert c["domains"] == ((0, "alive"), (1, "alive"), (S.DOMID_IO, "alive"))
    assert c["translation"] == (0,)
    assert c["locks"] == (("pcidevs_lock", None, 0),)
    assert c["stacks"] == ((0, ("boot",)),)
    assert c["ops"] == ((0, 0),)
    assert st.pages[PT_A + 0x1000] == (0, "pt-l3")
    assert st.rollback == 1
    assert (st.seq, st.label, st.kind) == (len(evs), "", S.K_ROLLBACK_BEGIN)

    more = [
        e("rollback-end", 0),
        e("domain-dying", 1),
        e("idmap-remove", 0, 0xD5D45000, 0xD5D45FFF, 0),
        e("device-remove", 0, 0xA0),
        e("pt-free", 0, PT_A),
        e("return", None, func="boot"),
        e("op-end", 0),
    ]
    fold(st, more)
    c = to_canonical(st)
    assert c["domains"] == ((0, "alive"), (1, "dying"), (S.DOMID_IO, "alive"))
    assert c["idmaps"] == () and c["owners"] == () and c["ats"] == ()
    assert c["pgd"] == ((S.DOMID_IO, PT_C),) and PT_A + 0x1000 not in st.pages
    assert c["stacks"] == () and c["ops"] == () and st.rollback == 0

    fold(st, [e("iommu-bitmap", 1, 0, 1), e("pt-alloc", 1, PT_B, "pgd"),
              e("idmap-add", 1, 0x1000, 0x1FFF, "rw", 2), e("domain-destroy", 1)])
    c = to_canonical(st)
    # A destroyed domain takes its tables, identity maps and IOMMU bitmap with it.
    assert 1 not in dict(c["domains"]) and 1 not in dict(c["pgd"])
    assert not any(i[0] == 1 for i in c["idmaps"]) and 1 not in dict(c["iommu_bitmap"])


def test_apply_one_by_one_equals_fold_and_copy_is_a_snapshot():
    e = Events()
    evs = [e("call", [], func="boot"), e("lock", "iommu->lock", 0), e("translation-enable", 0),
           e.write(0, 0, 8, (0, 0), entry(PT_A, 0)), e.write(0, 0, 8, entry(PT_A, 0), entry(PT_B, 1)),
           e("unlock", "iommu->lock", 0), e("return", 0, func="boot")]
    a = run(evs)
    b = ReplayState()
    snaps = []
    for ev in evs:
        snaps.append(b.copy())
        apply(b, ev)
    assert a == b
    # Earlier copies did not move with the state.
    assert snaps[3].ctx == {} and snaps[4].ctx == {(0, 0, 8): entry(PT_A, 0)}
    assert snaps[4].cc == {} and b.cc


def test_nested_rcu_references_and_unbalanced_events_do_not_break_the_state():
    e = Events()
    st = run([e("lock", "rcu_domain", 0), e("lock", "rcu_domain", 0), e("unlock", "rcu_domain", 0)])
    assert to_canonical(st)["locks"] == (("rcu_domain", 0, 0),)
    fold(st, [e("unlock", "rcu_domain", 0)])
    assert to_canonical(st)["locks"] == ()
    # An unlock of nothing and a return on an empty stack are ignored.
    fold(st, [e("unlock", "iommu->lock", 3), e("return", None, func="boot", cpu=1)])
    assert st.locks == {} and st.stacks == {}


def test_call_stacks_per_cpu_are_independent():
    e = Events()
    st = run([e("call", [], func="assign_device"), e("call", [], func="boot", cpu=1),
              e("call", [], func="domain_context_mapping_one")])
    c = to_canonical(st)
    assert c["stacks"] == ((0, ("assign_device", "domain_context_mapping_one")), (1, ("boot",)))


@pytest.mark.parametrize("bad", [
    ["ctx-write", 0, 0, 8, "full", "cmpxchg16b", 0, 0, None, 0],      # lo is not a number
    ["lock", ["not", "hashable"], None],
])
def test_an_event_the_fold_cannot_apply_raises_bad_event(bad):
    k = S.KIND_BY_NAME[bad[0]]
    ev = [k.code, 7, 0, 0, 0, "", *bad[1:]]
    st = ReplayState()
    fold(st, [[S.K_TRANSLATION_ENABLE, 6, 0, 0, 0, "", 0]])
    with pytest.raises(BadEvent) as exc:
        fold(st, [ev])
    assert exc.value.seq == 7 and "event 7" in str(exc.value)


def test_short_event_raises_bad_event_and_unknown_kinds_are_skipped():
    with pytest.raises(BadEvent):
        fold(ReplayState(), [[S.K_CTX_WRITE, 1, 0, 0, 0, "", 0, 0]])
    st = fold(ReplayState(), [[len(S.KINDS) + 5, 1, 0, 0, 0, "", "from a newer schema"]])
    assert st.seq == 1 and to_canonical(st) == to_canonical(ReplayState())


def test_checkpoint_encoding_round_trips_every_table():
    e = Events()
    evs = [e("translation-enable", 0), e("domain-create", 0), e("domain-create", 7), e("domain-dying", 7),
           e("call", [], func="boot"), e("call", [], func="assign_device"),
           e("lock", "pcidevs_lock", None), e("lock", "rcu_domain", 0), e("lock", "rcu_domain", 0),
           e("pt-alloc", 0, PT_A, "pgd"), e("did-bitmap", 0, 0, 1), e("iommu-bitmap", 0, 0, 1),
           e("device-add", 0, 8), e("owner-move", 0, 8, None, 0), e("ats-enable", 0, 8, 1),
           e("idmap-add", 0, 1, 2, "rw", 1), e("root-write", 0, 0, 0, 0x2001),
           e.write(0, 0, 8, (0, 0), entry(PT_A, 0, tt=1)), e("cache-sync", 0, 0, 8),
           e.write(0, 0, 8, entry(PT_A, 0, tt=1), entry(PT_B, 1)), e("cache-sync", 0, 0, 8),
           e.write(0, 0, 8, entry(PT_B, 1), entry(PT_C, 2)),
           e("op-begin", "assign", 8, 1, 0)]
    for coherent in (True, False):
        st = run(evs, coherent=coherent, cm=not coherent)
        assert st.cc and st.tlb and st.devtlb and (coherent or st.pending and st.hw)
        back = decode_state(encode_state(st))
        assert back == st and to_canonical(back) == to_canonical(st)
        assert back.stack(0) == st.stack(0) and back.nest == st.nest


def test_initial_state_takes_the_cache_knobs_from_the_header():
    st = initial_state({"platform": {"knobs": {"caching_mode": True, "coherent": False}}})
    assert st.cm and not st.coherent and st.seq == 0 and st.op is None
    st = initial_state(None)
    assert not st.cm and st.coherent and st.unit_seg == {}
    st = initial_state({"platform": {"iommus": [{"id": 0, "segment": 0}, {"id": 3, "segment": 2}, "junk"]}})
    assert st.unit_seg == {3: 2}


# --- the may-hold cache model ----------------------------------------------------------

def _switch(e, *, sid=(0, 0xA0), old=None, new=None):
    old = old or entry(PT_A, 0)
    new = new or entry(PT_B, 1)
    return [e("translation-enable", 0), e.write(0, *sid, (0, 0), old), e.write(0, *sid, old, new)]


def test_a_replaced_entry_may_stay_cached_until_the_flushes_that_match_it():
    e = Events()
    st = run(_switch(e))
    old = entry(PT_A, 0)
    assert caches.stale_context(st, 0) == {(0, 0xA0): frozenset({old})}
    assert caches.stale_iotlb(st, 0) == {(0, 0, 0xA0, PT_A)}
    # A skipped (rc 1) or failed flush invalidates nothing.
    fold(st, [e("flush-context", 0, "device", 0, 0xA0, 0, True, 1),
              e("flush-context", 0, "device", 0, 0xA0, 0, False, -110)])
    assert caches.stale_context(st, 0)
    # Another source-id or another DID does not match.
    fold(st, [e("flush-context", 0, "device", 0, 0xA8, 0, False, 0),
              e("flush-iotlb", 0, "dsi", 5, 0, 0, False, False, 0)])
    assert caches.stale_context(st, 0) and caches.stale_iotlb(st, 0)
    fold(st, [e("flush-context", 0, "device", 0, 0xA0, 0, False, 0)])
    assert caches.stale_context(st, 0) == {}
    # Context cache gone; the IOTLB entry it may have refilled stays until DSI(old DID).
    assert caches.stale_iotlb(st, 0) == {(0, 0, 0xA0, PT_A)}
    fold(st, [e("flush-iotlb", 0, "dsi", 0, 0, 0, False, False, 0)])
    assert caches.stale_iotlb(st, 0) == frozenset()
    assert st.cc == {} and st.tlb == {}


def test_iotlb_flushed_before_the_context_cache_can_be_refilled_from_it():
    e = Events()
    st = run(_switch(e) + [e("flush-iotlb", 0, "dsi", 0, 0, 0, False, False, 0)])
    # The context cache still holds the old entry: it can refill the IOTLB.
    assert caches.stale_iotlb(st, 0) == {(0, 0, 0xA0, PT_A)}
    fold(st, [e("flush-context", 0, "device", 0, 0xA0, 0, False, 0)])
    assert caches.stale_iotlb(st, 0) == {(0, 0, 0xA0, PT_A)}
    fold(st, [e("flush-iotlb", 0, "dsi", 0, 0, 0, False, False, 0)])
    assert caches.stale_iotlb(st, 0) == frozenset()


def test_nothing_is_cached_before_translation_is_enabled():
    e = Events()
    st = run([e.write(0, 0, 8, (0, 0), entry(PT_A, 0)), e.write(0, 0, 8, entry(PT_A, 0), entry(PT_B, 1))])
    assert st.cc == {} and st.tlb == {}


@pytest.mark.parametrize("fm,gone", [(0, {0xA0}), (1, {0xA0, 0xA4}), (2, {0xA0, 0xA2, 0xA4, 0xA6}),
                                     (3, set(range(0xA0, 0xA8)))])
def test_function_mask_widens_a_device_selective_flush(fm, gone):
    e = Events()
    evs = [e("translation-enable", 0)]
    for devfn in range(0xA0, 0xA9):
        evs += [e.write(0, 0, devfn, (0, 0), entry(PT_A, 0)), e.write(0, 0, devfn, entry(PT_A, 0), (0, 0))]
    st = run(evs + [e("flush-context", 0, "device", 0, 0xA0, fm, False, 0)])
    left = {k[2] for k in st.cc}
    assert left == set(range(0xA0, 0xA9)) - gone


def test_domain_and_global_context_flushes():
    e = Events()
    evs = [e("translation-enable", 0), e("translation-enable", 1),
           e.write(0, 0, 8, (0, 0), entry(PT_A, 3)), e.write(0, 0, 8, entry(PT_A, 3), (0, 0)),
           e.write(0, 0, 16, (0, 0), entry(PT_A, 4)), e.write(0, 0, 16, entry(PT_A, 4), (0, 0)),
           e.write(1, 0, 8, (0, 0), entry(PT_A, 3)), e.write(1, 0, 8, entry(PT_A, 3), (0, 0))]
    st = run(evs + [e("flush-context", 0, "domain", 3, 0, 0, False, 0)])
    assert set(st.cc) == {(0, 0, 16), (1, 0, 8)}
    fold(st, [e("flush-context", 0, "global", 0, 0, 0, False, 0)])
    assert set(st.cc) == {(1, 0, 8)}
    fold(st, [e("flush-iotlb", 0, "global", 0, 0, 0, False, False, 0)])
    assert all(k[0] == 1 for k in st.tlb)
    # A page-selective flush cannot drop a whole-address-space fill.
    fold(st, [e("flush-iotlb", 1, "psi", 3, 0x1000, 0, False, False, 0)])
    assert (1, 3) in st.tlb


def test_caching_mode_caches_non_present_entries_tagged_did_0():
    e = Events()
    nonpresent = entry(PT_A, 5, present=False)
    evs = [e("translation-enable", 0), e.write(0, 0, 8, (0, 0), nonpresent),
           e.write(0, 0, 8, nonpresent, entry(PT_A, 5))]
    assert run(evs, cm=False).cc == {}
    st = run(evs, cm=True)
    # Under CM even the zeroed entry before the first write may be cached.
    assert st.cc == {(0, 0, 8): frozenset({(0, 0), nonpresent})}
    assert caches.cache_tag(nonpresent) == 0
    fold(st, [e("flush-context", 0, "domain", 5, 0, 0, False, 0)])
    assert st.cc                                      # tagged 0, not 5
    fold(st, [e("flush-context", 0, "domain", 0, 0, 0, False, 0)])
    assert st.cc == {}


def test_non_coherent_writes_are_pending_until_cache_sync():
    e = Events()
    a, b = entry(PT_A, 0), entry(PT_B, 1)
    st = run([e("translation-enable", 0), e.write(0, 0, 8, (0, 0), a), e("cache-sync", 0, 0, 8)],
             coherent=False)
    assert st.hw == {(0, 0, 8): a} and st.pending == {}
    # W1 (clear P), W2, W3 without a sync in between: every value may be seen.
    w1 = (a[0] & ~1, a[1])
    fold(st, [e.write(0, 0, 8, a, w1, "lo", "write_atomic"), e.write(0, 0, 8, w1, (w1[0], b[1]), "hi"),
              e.write(0, 0, 8, (w1[0], b[1]), b, "lo")])
    assert caches.usable_values(st, (0, 0, 8)) == {a, w1, (w1[0], b[1]), b}
    assert caches.stale_context(st, 0)[(0, 8)] == {a, w1, (w1[0], b[1])}
    assert st.cc == {}
    fold(st, [e("cache-sync", 0, 0, 8)])
    assert st.hw == {(0, 0, 8): b} and st.pending == {}
    assert st.cc == {(0, 0, 8): frozenset({a})}       # only the present values could be cached
    fold(st, [e("flush-context", 0, "device", 0, 8, 0, False, 0)])
    assert caches.stale_context(st, 0) == {}


def test_device_tlb_of_an_ats_entry_until_its_own_invalidation():
    e = Events()
    st = run([e("ats-enable", 0, 0xA0, 1)] + _switch(e, old=entry(PT_A, 0, tt=1)))
    assert caches.devtlb_may_hold(st, 0) == {(0, 0xA0): frozenset({(0, PT_A)})}
    fold(st, [e("flush-iotlb", 0, "global", 0, 0, 0, False, True, 0)])
    assert st.devtlb                                  # device-TLBs have their own descriptors
    fold(st, [e("flush-dev-iotlb", 0, 0xA0, 0, 0)])
    assert st.devtlb == {}


def test_pass_through_entries_fill_no_iotlb():
    e = Events()
    st = run(_switch(e, old=entry(0, 0, tt=2)))
    assert st.cc and st.tlb == {}
    assert caches.translation_of(entry(0, 0, tt=2)) is None


# --- against the engine ------------------------------------------------------------------

SCENARIOS = sorted(glob.glob(str(__import__("pathlib").Path(__file__).resolve().parent.parent / "traces" / "*.toml")))


@pytest.mark.parametrize("variant", ["legacy", "direct", "original"])
@pytest.mark.parametrize("cx16", [True, False])
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.rsplit("/", 1)[-1][:-5])
def test_final_state_of_shipped_scenarios_equals_the_engine(path, variant, cx16):
    from tracer.engine import Engine
    from tracer.record import make_header
    from tracer.recorder import ListSink, Recorder
    from tracer.scenario import load_scenario

    platform = load_scenario(path)
    platform.knobs.cx16 = cx16
    sink = ListSink()
    engine = Engine(platform, Recorder(sink), variant=variant)
    try:
        engine.run()
    except Exception as exc:     # an engine limit still leaves a consistent state
        if type(exc).__name__ != "EngineLimit":
            raise
    st = fold(initial_state(make_header(platform, variant)), sink.events)
    assert to_canonical(st) == engine.canonical()


# --- BadEvent leaves the state untouched -------------------------------------------------

def _prefix_state():
    """A state with something in every table (S1 direct, cut mid-operation)."""
    from replay.reader import open_trace
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    with open_trace(root / "traces" / "s1-usb-rmrr.direct-nocx16.vtdt") as t:
        evs = list(t.events())
    n = next(ev[1] for ev in evs if ev[0] == S.K_CTX_WRITE and ev[3] == 1) + 3
    st = initial_state(t.header)
    return fold(st, evs[:n])


GARBAGE = [None, -1, 0, 1, 3, 0xFFFF, (1 << 64) - 1, 1 << 70, "x", "device", "domain", "global", "dsi", "",
           "pgd", "quarantine", "pcidevs_lock", [], [1, 2], {}, {"a": 1}, b"\x00", 1.5, True, False]


def _examples() -> dict:
    """A real event of every kind from the shipped traces (synthetic ones
    for kinds the scenarios never produce)."""
    from replay.reader import open_trace
    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    out: dict = {}
    for path in sorted((root / "traces").glob("*.vtdt")):
        with open_trace(path) as t:
            for ev in t.events():
                out.setdefault(ev[0], ev)
    fallback = {
        "flush-dev-iotlb": [0, 0xA0, 1, 0], "ats-enable": [0, 0xA0, 1], "engine-limit": ["MO14 depth", 8],
        "device-remove": [0, 0xA0], "pt-free": [1, 0x1000], "domain-dying": [1], "domain-destroy": [1],
        "idmap-remove": [1, 0x1000, 0x1FFF, 0], "fault-inject": ["pgd-alloc", -12, 1],
        "rollback-begin": [-12, "MO14 remap"], "rollback-end": [0], "flush-write-buffer": [0, True],
        "lock-wait": ["iommu->lock", 0, 1],
        "dma": ["usb", 0, 0xA0, 0xA0, 0, 0xd5d45000, True, "memory", 0x1001, 0x201, 1, 0x1000, 0xd5d45000,
                None, 0],
    }
    for k in S.KINDS:
        if k.code not in out:
            out[k.code] = [k.code, 1, 0, 1, 0, "", *fallback[k.name]]
    return out


@pytest.mark.parametrize("kind", [k.name for k in S.KINDS])
def test_a_failing_event_changes_nothing(kind):
    """BadEvent's contract: handlers check before they change anything, so
    the build pass can cut a trace before a bad event without a copy.
    Every field of a real event of the kind is replaced by every garbage
    value in turn, then random combinations are tried."""
    from hypothesis import given, settings
    from hypothesis import strategies as hst

    base = _prefix_state()
    k = S.KIND_BY_NAME[kind]
    example = list(_examples()[k.code])

    def check(ev):
        st = base.copy()
        try:
            fold(st, [ev])
        except BadEvent as exc:
            assert exc.event is ev
            assert st == base, f"{kind} {ev!r} changed the state before failing"

    for i in range(1, len(example)):
        for g in GARBAGE:
            ev = list(example)
            ev[i] = g
            check(ev)
    check(example[:-1])
    check(example + [0])

    @settings(deadline=None, max_examples=100, derandomize=True)
    @given(hst.lists(hst.sampled_from(GARBAGE), min_size=len(k.fields), max_size=len(k.fields) + 1))
    def random_fields(fields):
        check([k.code, base.seq + 1, 0, 1, 0, "MO7", *fields])

    random_fields()
