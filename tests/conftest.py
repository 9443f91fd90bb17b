"""Shared fixtures.  Keep this small: helpers used by one test file live there."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

REPO = Path(__file__).resolve().parent.parent

# `.ci/run` exports HYPOTHESIS_PROFILE=ci: more examples, derandomized so a
# CI run is reproducible, no deadline (a shared 2-vCPU box must not turn
# slowness into failures).
settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session", autouse=True)
def _private_user_cache(tmp_path_factory):
    """Sidecars that fall back to the user's cache directory go to a private
    one (inherited by the CLI subprocesses), never to ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="session", autouse=True)
def _internal_errors_raise():
    """An internal error (a bug) raises instead of becoming the CLI's one-line
    exit 70, in-process and in the CLI subprocesses (they inherit it): no
    test passes through the catch-all unnoticed."""
    from vtdtrace.errors import RAISE_INTERNAL_ENV
    os.environ[RAISE_INTERNAL_ENV] = "1"
    yield
    os.environ.pop(RAISE_INTERNAL_ENV, None)


def _repo_sidecars() -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in (REPO / "traces").glob("*.vtdt-cache")}


@pytest.fixture(autouse=True)
def _no_sidecar_in_the_repository(request):
    """No test may write a sidecar beside the shipped traces: a later run
    would read what this one left (tests work on copies in tmp_path, or with
    the sidecar off)."""
    before = _repo_sidecars()
    yield
    after = _repo_sidecars()
    changed = sorted(str(p.relative_to(REPO)) for p in after if before.get(p) != after[p])
    assert not changed, f"{request.node.nodeid} wrote {changed}: work on a copy in tmp_path"


def make_events(n: int, seed: int = 0) -> list[list]:
    """n events of the catalogue's types cycling through every kind, with edge
    values (u64 extremes, DOMID_INVALID, None where a field is optional,
    negative ints, non-ASCII text, call args of every value type) that keep
    to the catalogue's value rules for HEADER's platform (IOMMUs and
    segments 0 and 1, its domains, the closed sets of words)."""
    from tracer import schema as S

    rnd = random.Random(seed)
    u64 = (0, 1, 0xFFFF_FFFF, 0x1_0000_0000, (1 << 64) - 1, 0x0000_0001_0000_7001)
    doms = (0, 1, S.DOMID_IO, S.DOMID_INVALID, None)

    def value(kind: str, field: str, typ: str):
        if (kind, field) in S.FIELD_ENUMS:
            return rnd.choice(S.FIELD_ENUMS[(kind, field)])
        if field in ("iommu", "seg"):
            return rnd.choice((0, 1))
        if field in S.FIELD_RANGES:
            return rnd.choice((0, 1, S.FIELD_RANGES[field][1]) + ((None,) if typ == "int?" else ()))
        # One generator per catalogue type (tracer.schema.FIELD_TYPES): the
        # reader rejects anything else as damage.
        if typ in ("u64", "u64?"):
            return rnd.choice(u64 + (rnd.getrandbits(64),) + ((None,) if typ == "u64?" else ()))
        if typ in ("dom", "dom?"):
            return rnd.choice(doms if typ == "dom?" else doms[:-1])
        if typ == "args":
            return [["domain", rnd.choice(doms)], ["bus", rnd.randrange(256)], ["devfn", rnd.randrange(256)],
                    ["pdev", "0000:00:14.0"], ["non_present", rnd.choice((True, False))]]
        if typ == "str":
            return rnd.choice(["", "lo", "write_atomic", "pcidevs_lock", "mapping_lock", "Ünïcode ✓", "x" * 40])
        if typ == "bool":
            return rnd.choice((True, False))
        return rnd.choice((0, 1, 255, 0xFFFF, -12) + ((None,) if typ == "int?" else ()))

    events = []
    for seq in range(1, n + 1):
        kind = S.KINDS[(seq - 1) % len(S.KINDS)]
        label = rnd.choice(("", "MO7", "UO3", "RN4"))
        events.append([kind.code, seq, 0, rnd.randrange(4), rnd.randrange(len(S.FUNCS)), label,
                       *(value(kind.name, f, t) for f, t in zip(kind.fields, kind.types))])
    return events


HEADER = {
    "tool": "vtdtrace",
    "tool_version": "0.0.test",
    "engine": {"name": "direct", "xen_commit": "d67a72c655", "cx16": True},
    "scenario": {"name": "unit", "file": "unit.toml", "description": "test", "content": "name = 'unit'\n"},
    "platform": {
        "iommus": [{"id": 0, "segment": 0}, {"id": 1, "segment": 1}],
        "devices": [{"bdf": "0000:00:14.0"}],
        "rmrrs": [],
        "domains": [[0, "dom0", True], [1, "guest", False], [0x7FF1, "dom_io", False]],
    },
}


@pytest.fixture
def events_factory():
    return make_events


@pytest.fixture
def write_trace(tmp_path):
    """write_trace(events, name="t.vtdt", chunk_events=8, header=HEADER) -> Path of a finished trace."""
    from tracer.writer import TraceWriter

    def write(events, name="t.vtdt", chunk_events=8, header=None):
        path = tmp_path / name
        with TraceWriter(path, HEADER if header is None else header, chunk_events=chunk_events) as w:
            for ev in events:
                w.append(ev)
        return path

    return write


@pytest.fixture
def run_cli():
    """run_cli(*args, env=None, **kw) -> CompletedProcess of `python -m vtdtrace ...` (text mode)."""

    def run(*args, env=None, **kw):
        full_env = dict(os.environ, **(env or {}))
        return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=REPO,
                              capture_output=True, text=True, env=full_env, **kw)

    return run
