"""The whole command set on mutated traces, with and without a sidecar.

Hypothesis draws a mutation class of bench/reliability.py (accidental damage,
CRC-valid crafted content, tolerated newer-format content, damaged or stale
caches) and a seed; every command then runs on the mutated file as a user
runs it (the CLI's own ``main`` in a forked child, its own cwd and cache
directory) and the reliability table's oracle judges each run:

* the exit code is one of 0, 1, 2, 3, and never "internal error" or a traceback;
* at most one error line on stderr;
* damage and forbidden content give exit 3 from every command (exit 0 or 1
  on a damaged file is a silent failure, even with the intact answer: that is
  what a cache outvoting the trace would print); a damaged or stale sidecar
  beside an intact trace changes nothing (the intact answer, its exit code);
* content the format promises to tolerate is answered (exit 0/1), with no raw
  control characters in text output.

``python -m bench.reliability`` runs the same classes many more times and
prints the README's reliability table.
"""

from __future__ import annotations

import random
import sys

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(REPO))
from bench import reliability as R  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-corpus")
    return {b.name: b for b in R.build_corpus(str(root), synth_events=2200)}


def _verdicts(res: dict) -> str:
    lines = []
    for cmd, (outcome, run) in res.items():
        if outcome in R.BAD:
            err = run.err.decode("utf-8", "replace").strip().splitlines()
            lines.append(f"{cmd}: {outcome}, exit {run.code}: {err[-1] if err else '(no stderr)'}")
    return "\n".join(lines)


# Each example runs eleven commands (twenty-two for damage classes): fewer
# examples than the profile's default keep the suite in minutes on 2 cores;
# the reliability script is where thousands of files are tried.
_EXAMPLES = min(settings.default.max_examples, 50)


@settings(max_examples=_EXAMPLES, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.too_slow])
@given(cls=st.sampled_from(R.CLASSES), seed=st.integers(0, 2 ** 32 - 1), data=st.data())
def test_every_command_on_mutated_traces(corpus, tmp_path_factory, cls, seed, data):
    base = corpus[data.draw(st.sampled_from(cls.bases), label="base")]
    modes = (False, True) if cls.kind == "damage" else (cls.kind == "cache",)
    folder = str(tmp_path_factory.mktemp("trial"))
    for with_sidecar in modes:
        res = R.trial(cls, base, random.Random(seed), folder, with_sidecar)
        if res is None:
            continue
        bad = _verdicts(res)
        assert not bad, f"{cls.name} on {base.name} (seed {seed}, sidecar {with_sidecar}):\n{bad}"


def test_reference_answers_are_clean(corpus):
    """The oracle's baseline: every command answers the intact traces with
    exit 0 or 1 and nothing on stderr but notes."""
    for base in corpus.values():
        for cmd, run in base.reference.items():
            assert run.code in (0, 1), (base.name, cmd, run.err)
            assert b"internal error" not in run.err


def test_oracle_flags_a_silent_wrong_answer(corpus):
    """The oracle itself: a different answer with exit 0 on a damaged file is
    'silent', exit 3 is 'reported', an internal error is 'internal'."""
    cls = R.CLASS_BY_NAME["payload bit flip"]
    ref = corpus["synth"].reference["show"]
    assert R.judge(cls, "show", R.Run(0, ref.out + b"x", b""), ref) == "silent"
    # on a damaged file even the intact answer is silent: it is what a cache outvoting the trace gives
    assert R.judge(cls, "show", R.Run(0, ref.out, b""), ref) == "silent"
    cache = R.CLASS_BY_NAME["sidecar bit flip"]
    assert R.judge(cache, "show", R.Run(0, ref.out, b""), ref) == "same"
    assert R.judge(cache, "show", R.Run(3, b"", b"vtdtrace: t.vtdt: damaged\n"), ref) == "silent"
    assert R.judge(cls, "show", R.Run(3, b"", b"vtdtrace: t.vtdt: damaged\n"), ref) == "reported"
    assert R.judge(cls, "show", R.Run(2, b"", b"vtdtrace: t.vtdt: internal error: X\n"), ref) == "internal"
    assert R.judge(cls, "show", R.Run(3, b"", b"vtdtrace: a\nvtdtrace: b\n"), ref) == "internal"
    tol = R.CLASS_BY_NAME["control characters in names"]
    assert R.judge(tol, "log", R.Run(0, b"dom\x1b[2J\n", b""), ref) == "silent"
    assert R.judge(tol, "log", R.Run(3, b"", b"vtdtrace: t.vtdt: damaged\n"), ref) == "refused"
