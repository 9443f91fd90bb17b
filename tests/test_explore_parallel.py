"""`vtdtrace explore` across processes and on Dask distributed: the same
summary and the same counterexample bytes whatever runs the work units --
in process (--workers 1), a process pool (--workers 2), a LocalCluster
(--scheduler local) or a running scheduler with a worker killed mid-run --
and one line, never a traceback, when a worker runs other code or the
cluster cannot be had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from explore.search import Problem, explore
from explore.units import UNIT_RUNS, UNITS_PER_LEVEL, code_identity, cut, unit_size
from tracer.scenario import load_scenario
from tracer.sched import parse_schedule


def vt(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "VTDTRACE_RAISE_INTERNAL"}
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], cwd=cwd, capture_output=True, text=True,
                          env={**base, **(env or {})})


# Both must-show scenarios, each where it finds something: the XSA-399 race
# without the fix (capped: its one-preemption counterexamples come within
# the first few hundred schedules) and the DMA scenario whose IOTLB lets the
# NIC reach the guest (the whole bounded space).
CASES = {
    "xsa399": ("s9-xsa399-race", "--engine", "legacy", "--no-xsa399-fix", "--max-runs", "400"),
    "dma": ("s13-usb-nic-dma", "--engine", "direct", "--no-cx16"),
}
BACKENDS = {
    "workers-1": ("--workers", "1"),
    "workers-2": ("--workers", "2"),
    "dask-local": ("--scheduler", "local", "--workers", "2"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_backend_gives_the_same_bytes(tmp_path, case):
    outs: dict[str, str] = {}
    for name, opts in BACKENDS.items():
        r = vt("explore", *CASES[case], *opts, "-o", name, "--json", cwd=tmp_path)
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr
        outs[name] = r.stdout
    doc = json.loads(outs["workers-1"])
    assert doc["violations"] and doc["units"] > 10
    assert outs["workers-2"] == outs["workers-1"]
    assert outs["dask-local"] == outs["workers-1"]
    names = sorted(p.name for p in (tmp_path / "workers-1").iterdir())
    assert names == sorted(v["trace"] for v in doc["violations"])
    for other in ("workers-2", "dask-local"):
        assert sorted(p.name for p in (tmp_path / other).iterdir()) == names
        for n in names:
            assert (tmp_path / other / n).read_bytes() == (tmp_path / "workers-1" / n).read_bytes(), (other, n)


def _result(s) -> tuple:
    return (s.schedules, s.states, s.pruned, s.alternatives, s.over_bound, s.limits, s.max_preemptions,
            s.complete, s.units, [(v.number, v.identity, v.schedule, v.preemptions, v.run) for v in s.violations])


@pytest.fixture
def cluster():
    distributed = pytest.importorskip("distributed")
    import logging

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as c, distributed.Client(c) as client:
        client.wait_for_workers(2)
        yield c, client


def _dma_problem() -> Problem:
    platform = load_scenario("s13-usb-nic-dma")
    platform.knobs.cx16 = False
    return Problem(platform, "direct")


def _kill_one_mid_run(pids, **backend) -> None:
    """Run S13's search on ``backend`` and SIGKILL the lowest of ``pids()``
    after the 20th unit, in the middle of a level with units in flight: the
    result must be the in-process search's."""
    problem = _dma_problem()
    want = _result(explore(problem, bound=2))
    killed: list[int] = []

    def on_progress(s) -> None:
        if not killed and s.units >= 20 and s.level_done < s.level_units - 2:
            victim = sorted(pids())[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)

    got = explore(problem, bound=2, on_progress=on_progress, **backend)
    assert killed, "no level had units in flight to kill a worker under"
    assert _result(got) == want


def test_a_worker_killed_mid_run_changes_nothing(cluster):
    """SIGKILL one of the LocalCluster's two worker processes while units are
    in flight: the scheduler resubmits its units."""
    c, client = cluster
    _kill_one_mid_run(lambda: client.run(os.getpid).values(), scheduler=c.scheduler_address)


def test_a_pool_worker_killed_mid_run_changes_nothing():
    """The OOM killer takes one of the pool's processes: the pool is
    restarted and the units in flight sent again."""
    import multiprocessing

    _kill_one_mid_run(lambda: [p.pid for p in multiprocessing.active_children() if p.pid is not None], workers=2)


def test_a_worker_running_other_code_is_refused_with_one_line(cluster, tmp_path):
    """A worker whose vtdtrace differs from the coordinator's (another
    version or other sources: here, made to report another identity) refuses
    its first unit; the coordinator says so in one line and exits 2."""
    c, client = cluster

    def pretend_other_release() -> None:
        import explore.units as units
        units._identity = ("0.0.9", "0123456789abcdef0123456789abcdef")

    client.run(pretend_other_release)
    r = vt("explore", "s13-usb-nic-dma", "--engine", "direct", "--scheduler", c.scheduler_address, "-o", "o",
           cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    version, digest = code_identity()
    assert "runs vtdtrace 0.0.9 (code 0123456789ab)" in r.stderr
    assert f"the coordinator vtdtrace {version} (code {digest[:12]})" in r.stderr
    assert "install the same vtdtrace on every worker" in r.stderr
    assert not list((tmp_path / "o").iterdir())


def test_scheduler_without_the_cluster_extra_is_one_line(tmp_path):
    shadow = tmp_path / "shadow" / "distributed"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'distributed'\")\n")
    r = vt("explore", "s13-usb-nic-dma", "--engine", "direct", "--scheduler", "local", "-o", "o", cwd=tmp_path,
           env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "pip install 'vtdtrace[cluster]'" in r.stderr


@pytest.mark.parametrize("addr, needle", [
    ("tcp://127.0.0.1:9", "cannot reach the scheduler"),
    ("http://example.org", "expected tcp://HOST:PORT or local"),
])
def test_a_bad_scheduler_is_one_line(tmp_path, addr, needle):
    pytest.importorskip("distributed")
    r = vt("explore", "s13-usb-nic-dma", "--engine", "direct", "--scheduler", addr, "-o", "o", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_units_are_cut_from_the_level_alone():
    """The decomposition: consecutive prefixes of one level, UNIT_RUNS at a
    time in a big level, fewer in a small one so that it still spreads;
    nothing about workers goes in."""
    big = [tuple(parse_schedule(f"{100 + i}:c1")) for i in range(UNIT_RUNS * UNITS_PER_LEVEL + 3)]
    units = cut((1, 1), big, ("v", "d"))
    assert [len(u.prefixes) for u in units] == [UNIT_RUNS] * UNITS_PER_LEVEL + [3]
    assert [p for u in units for p in u.prefixes] == big
    assert [u.index for u in units] == list(range(UNITS_PER_LEVEL + 1))
    small = big[:18]
    assert [len(u.prefixes) for u in cut((1, 1), small, ("v", "d"))] == [1] * 18
    assert [unit_size(n) for n in (1, 32, 33, 64, 65, 256, 257, 10**6)] == [1, 1, 2, 2, 3, 8, 8, 8]


def test_state_digests_are_the_same_in_another_process():
    """A worker elsewhere must digest a state as the coordinator does: no set
    order, no string hash, no address goes into a key."""
    script = (
        "from explore.search import Problem, run_unit\n"
        "from tracer.scenario import load_scenario\n"
        "r = run_unit(Problem(load_scenario('s13-usb-nic-dma'), 'direct'), ())\n"
        "print(' '.join(b.key.hex() for b in r.branches if b.key is not None))\n")
    outs = set()
    for seed in ("1", "2", "12345"):
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr
        outs.add(r.stdout)
    assert len(outs) == 1 and len(outs.pop().split()) > 5



def test_ctrl_c_on_a_local_cluster_is_quiet(tmp_path):
    """SIGINT to the whole process group (a Ctrl-C at the terminal) while a
    LocalCluster runs the units: the partial summary, exit 130, and no
    worker's traceback on stderr."""
    import time

    pytest.importorskip("distributed")
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "vtdtrace", "explore", "s9-xsa399-race", "--engine", "legacy",
                             "--no-xsa399-fix", "--scheduler", "local", "--workers", "2", "-o", str(out), "--json"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    while proc.poll() is None and not (out.exists() and any(n.endswith(".vtdt") for n in os.listdir(out))):
        time.sleep(0.05)          # a poll interval, not a limit
    assert proc.poll() is None, "the search ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    doc = json.loads(stdout)
    assert doc["interrupted"] is True and doc["violations"]
