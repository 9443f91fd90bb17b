"""Checkpoints, seek, the seq indexes, the sidecar and ReplaySession:
state_at(n) through checkpoints equals the fold from event 0 at every step,
queries equal brute force, damage ends the replay cleanly."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from replay import seek, sidecar
from replay.reader import open_trace
from replay.seek import CheckpointReader, CheckpointWriter
from replay.session import ReplaySession
from replay.state import ReplayState, fold, initial_state, to_canonical
from tracer import schema as S

REPO = Path(__file__).resolve().parent.parent


def record(tmp_path, scenario="s1-usb-rmrr", variant="direct", cx16=True, chunk_events=7, name=None):
    from tracer.record import make_header
    from tracer.record import record as rec
    from tracer.scenario import load_scenario
    from tracer.writer import TraceWriter

    platform = load_scenario(REPO / "traces" / f"{scenario}.toml")
    platform.knobs.cx16 = cx16
    path = tmp_path / (name or f"{scenario}.{variant}.vtdt")
    with TraceWriter(path, make_header(platform, variant), chunk_events=chunk_events, force=True) as w:
        rec(platform, variant, w)
    return path


def reference_states(path):
    """Every state 0..count by a plain fold from event 0."""
    with open_trace(path) as t:
        st = initial_state(t.header)
        out = [st.copy()]
        for ev in t.events():
            fold(st, (ev,))
            out.append(st.copy())
    return out


@pytest.fixture(params=[("s1-usb-rmrr", "direct", True), ("s5-me-wifi-phantom", "legacy", True),
                        ("s8-two-legacy-behind-bridge", "direct", False)],
                ids=lambda p: f"{p[0]}-{p[1]}{'' if p[2] else '-nocx16'}")
def traced(request, tmp_path):
    path = record(tmp_path, *request.param)
    return path, reference_states(path)


def test_state_at_every_step_equals_the_fold_from_zero(traced):
    path, ref = traced
    with ReplaySession(path, min_events=10) as s:
        assert s.built and s.count == len(ref) - 1 and s.complete
        assert len(s.checkpoints) > 5
        for n in range(s.count + 1):                  # forward steps
            assert s.state_at(n) == ref[n], n
        for n in range(s.count, -1, -1):              # reverse steps: seek(n - 1)
            st = s.state_at(n)
            assert to_canonical(st) == to_canonical(ref[n]) and st == ref[n], n
        rnd = random.Random(4)
        for n in (rnd.randrange(s.count + 1) for _ in range(200)):
            assert s.state_at(n) == ref[n], n
        with pytest.raises(IndexError):
            s.state_at(s.count + 1)


def test_returned_states_are_the_callers(traced):
    path, ref = traced
    with ReplaySession(path, min_events=10) as s:
        st = s.state_at(40)
        st.ctx.clear()
        st.domains[12345] = 1
        assert s.state_at(40) == ref[40] and s.state_at(41) == ref[41]


def test_a_fresh_sidecar_is_reused_and_gives_the_same_answers(traced):
    path, ref = traced
    with ReplaySession(path, min_events=10) as s:
        first = [s.next_of_kind("ctx-write", n) for n in range(0, s.count, 17)]
        assert s.sidecar.location == "beside" and Path(s.sidecar.path).name == path.name + "-cache"
    with ReplaySession(path) as s:
        assert not s.built
        assert [s.next_of_kind("ctx-write", n) for n in range(0, s.count, 17)] == first
        for n in range(0, s.count + 1, 5):
            assert s.state_at(n) == ref[n], n


def test_a_changed_trace_rebuilds_its_sidecar(tmp_path):
    path = record(tmp_path, "s1-usb-rmrr", "direct", name="t.vtdt")
    with ReplaySession(path) as s:
        assert s.built
        count = s.count
    record(tmp_path, "s1-usb-rmrr", "legacy", name="t.vtdt")
    with ReplaySession(path) as s:
        assert s.built and s.count != count
        assert s.state_at(s.count) == reference_states(path)[-1]


def test_a_damaged_sidecar_is_rebuilt(tmp_path):
    path = record(tmp_path)
    with ReplaySession(path) as s:
        cache = s.sidecar.path
    data = bytearray(Path(cache).read_bytes())
    for i in range(0, len(data), 97):
        data[i] ^= 0x5A
    Path(cache).write_bytes(bytes(data))
    with ReplaySession(path) as s:
        assert s.built
        assert s.state_at(s.count) == reference_states(path)[-1]


def test_read_only_folder_falls_back_to_the_user_cache(tmp_path, monkeypatch):
    path = record(tmp_path)
    monkeypatch.setattr(sidecar, "_dir_writable", lambda p: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with ReplaySession(path) as s:
        assert s.sidecar.location == "user-cache"
        assert Path(s.sidecar.path).parent == tmp_path / "xdg" / "vtdtrace"
        assert not (tmp_path / (path.name + "-cache")).exists()
    with ReplaySession(path) as s:
        assert not s.built and s.sidecar.location == "user-cache"


def test_nowhere_to_write_uses_a_temporary_store(tmp_path, monkeypatch):
    path = record(tmp_path)
    monkeypatch.setattr(sidecar, "_dir_writable", lambda p: False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    with ReplaySession(path) as s:
        assert s.sidecar.location == "temporary" and s.sidecar.path is None
        assert s.state_at(s.count) == reference_states(path)[-1]


def test_a_fresh_sidecar_in_a_read_only_folder_is_used_read_only(tmp_path, monkeypatch):
    path = record(tmp_path)
    ReplaySession(path).close()
    monkeypatch.setattr(sidecar, "_dir_writable", lambda p: False)
    with ReplaySession(path) as s:
        assert not s.built and s.sidecar.location == "beside" and not s.sidecar.writable


# --- the indexes -------------------------------------------------------------------------

def test_kind_and_context_queries_equal_brute_force(traced):
    path, _ = traced
    with open_trace(path) as t:
        evs = list(t.events())
    with ReplaySession(path, min_events=10) as s:
        n = s.count
        for code, kind in enumerate(S.KINDS):
            seqs = [ev[1] for ev in evs if ev[0] == code]
            assert list(s.kinds.seqs(code)) == seqs, kind.name
            for at in range(0, n + 2):
                nxt = next((q for q in seqs if q > at), None)
                prv = next((q for q in reversed(seqs) if q < at), None)
                assert s.next_of_kind(kind.name, at) == nxt, (kind.name, at)
                assert s.prev_of_kind(code, at) == prv, (kind.name, at)
        keys = {(ev[6], ev[7], ev[8]) for ev in evs if ev[0] == S.K_CTX_WRITE}
        assert keys
        for key in keys | {(9, 9, 9)}:
            seqs = [ev[1] for ev in evs if ev[0] == S.K_CTX_WRITE and (ev[6], ev[7], ev[8]) == key]
            for at in range(0, n + 2, 3):
                assert s.next_ctx_write(*key, at) == next((q for q in seqs if q > at), None)
                assert s.prev_ctx_write(*key, at) == next((q for q in reversed(seqs) if q < at), None)


def test_index_queries_after_reopening_from_the_sidecar(traced):
    path, _ = traced
    with ReplaySession(path, min_events=10) as s:
        want = [(s.next_of_kind("op-begin", q), s.prev_ctx_write(0, 0, 0xA0, q)) for q in range(0, s.count, 11)]
    with ReplaySession(path) as s:
        assert not s.built
        assert [(s.next_of_kind("op-begin", q), s.prev_ctx_write(0, 0, 0xA0, q))
                for q in range(0, s.count, 11)] == want


# --- damage ------------------------------------------------------------------------------

def test_truncated_trace_replays_to_its_last_good_event(tmp_path):
    path = record(tmp_path, chunk_events=16)
    ref = reference_states(path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size * 2 // 3)
    with ReplaySession(path, min_events=10) as s:
        assert not s.complete and s.stop.kind == "truncated"
        assert 0 < s.count < len(ref) - 1 and s.stop.last_good_seq == s.count
        for n in range(0, s.count + 1, 7):
            assert s.state_at(n) == ref[n]
        assert s.state_at(s.count) == ref[s.count]
        with pytest.raises(IndexError):
            s.state_at(s.count + 1)
    with ReplaySession(path) as s:                 # from the sidecar: same verdict
        assert not s.built and s.stop.kind == "truncated" and s.stop.last_good_seq == s.count


def test_an_event_off_the_catalogue_ends_the_readable_trace(tmp_path, write_trace):
    """A ctx-write whose new_lo is a string: the readable trace ends just
    before it, and the stop report names its chunk, byte offset and seq."""
    from test_replay_fold import Events, entry

    e = Events()
    good = [e("translation-enable", 0)]
    for i in range(30):
        good.append(e.write(0, 0, 8 + i, (0, 0), entry(0x1000 * (i + 1), i)))
    bad = [S.K_CTX_WRITE, e.seq + 1, 0, 0, 0, "", 0, 0, 8, "full", "plain", 0, 0, "x", None]
    after = [[S.K_LOG, e.seq + 2, 0, 0, 0, "", "info", "after"]]
    path = write_trace(good + [bad] + after, chunk_events=8)
    with ReplaySession(path, min_events=4) as s:
        assert s.count == len(good) and s.stop.kind == "corrupt"
        assert s.stop.chunk_index == len(good) // 8 and s.stop.offset == s.trace.chunks[len(good) // 8][0]
        assert s.stop.message == f"event {len(good) + 1}: ctx-write field new_lo is a str, expected u64"
        assert s.state_at(s.count) == fold(initial_state(s.header), good)
        assert s.next_of_kind("log", 0) is None
    with ReplaySession(path) as s:
        assert not s.built and s.count == len(good) and s.stop.kind == "corrupt"


def test_schema_shaped_garbage_never_raises(write_trace, events_factory):
    for seed in range(4):
        evs = events_factory(300, seed)
        path = write_trace(evs, name=f"g{seed}.vtdt", chunk_events=16)
        with ReplaySession(path, min_events=8) as s:
            assert s.count <= 300 and (s.count == 300) == (s.stop is None)
            for n in range(0, s.count + 1, 13):
                s.state_at(n)


# --- the building blocks -------------------------------------------------------------------

def test_checkpoint_writer_shares_tables_and_stores_big_ones_as_deltas():
    blob = bytearray()

    def write(data):
        off = len(blob)
        blob.extend(data)
        return off

    w = CheckpointWriter(write)
    st = ReplayState()
    st.journal = []
    for d in range(2000):
        st.domains[d] = 1
    fold(st, [[S.K_DOMAIN_CREATE, 1, 0, 0, 0, "", 5000]])
    locs, states = [], []
    for step in range(6):
        locs.append(w.add(st))
        states.append(st.copy())
        size_before = len(blob)
        fold(st, [[S.K_DOMAIN_DESTROY, step + 2, 0, 0, 0, "", step],
                  [S.K_LOCK, step + 2, 0, 0, 0, "", "pcidevs_lock", None]])
    # The 2000 domains were written once; later checkpoints are deltas of a few bytes.
    assert len(blob) - size_before < 200
    r = CheckpointReader(lambda off, n: bytes(blob[off:off + n]))
    for loc, want in zip(locs, states):
        assert r.load(loc) == want
    # Without a journal every table is compared or rewritten, never missed.
    st.journal = None
    fold(st, [[S.K_DOMAIN_CREATE, 99, 0, 0, 0, "", 7000]])
    loc = w.add(st)
    assert CheckpointReader(lambda off, n: bytes(blob[off:off + n])).load(loc) == st


def test_build_in_memory_and_seek():
    from test_replay_fold import Events, entry

    e = Events()
    evs = [e("translation-enable", 0)] + [e.write(0, 0, i % 16, (0, 0), entry(0x1000 * (i + 1), i)) for i in range(100)]

    class Source:
        chunks = [(i * 100, i * 10 + 1, 10) for i in range(10)]

        def read_chunk(self, i):
            return evs[i * 10:(i + 1) * 10] if i < 10 else []

        def iter_chunks(self):
            for i in range(10):
                yield self.read_chunk(i)

    evs = evs[:100]
    result = seek.build(Source(), ReplayState(), min_events=20)
    assert result.final == fold(ReplayState(), evs)
    sk = seek.Seeker(Source(), seek.checkpoints_from(result), 100)
    for n in (0, 1, 55, 100, 3, 99):
        assert sk.state_at(n) == fold(ReplayState(), evs[:n])
    assert [e_[1] for e_ in sk.events(5, 9)] == [5, 6, 7, 8] and sk.event(42)[1] == 42


def test_sidecar_store_round_trip_and_concurrent_commit(tmp_path):
    trace = record(tmp_path, name="x.vtdt")
    ident, content = sidecar.trace_identity(trace), sidecar.scan_content(trace)
    a = sidecar.Sidecar.open(trace)
    b = sidecar.Sidecar.open(trace)
    assert not a.trusted and a.keys() == []
    a.put("one", {"k": [1, 2]})
    a.bind(ident, content)
    assert a.commit()
    b.put("two", 2)          # b re-reads the TOC under the lock: a's entry survives
    assert b.commit()
    a.close()
    b.close()
    c = sidecar.Sidecar.open(trace)
    assert c.trusted and sorted(c.keys()) == ["one", sidecar.K_CHUNKS, "two"] and c.get("one") == {"k": (1, 2)}
    big = bytes(range(256)) * 100            # several checksum blocks
    with c.stream("big") as out:
        assert out.write(b"abc") == 0 and out.write(big) == 3
    c.commit()
    whole = b"abc" + big
    assert c.read("big", 2, 3) == whole[2:5] and c.read("big", 5000, 9000) == whole[5000:14000]
    assert c.get_raw("big") == whole
    c.close()
    record(tmp_path, "s1-usb-rmrr", "legacy", name="x.vtdt")   # another trace: nothing carried over
    d = sidecar.Sidecar.open(trace)
    assert not d.trusted and d.keys() == []
    d.close()
    assert sorted(os.listdir(tmp_path)) == ["x.vtdt", "x.vtdt-cache"]     # no temporary files left


def test_event_seq_fields_do_not_steer_the_seek(tmp_path):
    """Every event's seq is checked against its chunk's range: a bogus seq
    field ends the readable trace just before that event, and never moves
    the replay's position."""
    from conftest import HEADER
    from test_replay_fold import Events, entry

    from tracer.writer import TraceWriter

    e = Events()
    evs = [e("translation-enable", 0)] + [e.write(0, 0, i, (0, 0), entry(0x1000 * (i + 1), i)) for i in range(40)]
    lies = {10: 3, 21: 10 ** 9}              # inside chunks of 8
    path = tmp_path / "lies.vtdt"
    with TraceWriter(path, HEADER, chunk_events=8) as w:
        for i, ev in enumerate(evs):
            if i in lies:
                w._next_seq = lies[i]        # the writer refuses such traces; a crafted one is not so polite
                w.append([ev[0], lies[i], *ev[2:]])
                w._next_seq = ev[1] + 1
            else:
                w.append(ev)
    with ReplaySession(path, min_events=8) as s:
        assert s.count == 10 and s.stop.kind == "corrupt" and s.stop.chunk_index == 1
        assert s.stop.message == "event 11: carries seq 3, expected 11"
        for n in range(0, 11):
            st = s.state_at(n)
            assert st.seq == n and len(st.ctx) == max(0, n - 1)
