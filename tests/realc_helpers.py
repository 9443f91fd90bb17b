"""The Xen tree and build the xen-c tests share (tests/test_realc_*.py).

The tree is Debian's Xen 4.17.5, fetched once into the user's cache
(xenc/fetch.py) -- the cache directory is taken when this module is
imported, before tests/conftest.py points XDG_CACHE_HOME at a private
directory for the session, so `make test` fetches it only the first time.
``VTDTRACE_XEN_TREE`` names a tree to use instead.  Where the tree or a C
compiler cannot be had, the tests skip with one line -- unless
``VTDTRACE_REQUIRE_XEN_TREE=1`` (.ci/run sets it), which turns the skip
into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replay.reader import open_trace
from xenc import fetch

USER_SRC_CACHE = fetch.cache_root()
REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data" / "realc"


def unavailable(reason: str) -> None:
    if os.environ.get("VTDTRACE_REQUIRE_XEN_TREE") == "1":
        pytest.fail(f"VTDTRACE_REQUIRE_XEN_TREE=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def xen_tree() -> Path:
    if not (os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")):
        unavailable("no C compiler: the xen-c engine cannot build")
    named = os.environ.get("VTDTRACE_XEN_TREE")
    if named:
        return Path(named)
    try:
        return fetch.debian_tree(USER_SRC_CACHE)
    except fetch.FetchError as exc:
        unavailable(f"no Xen tree: {exc}")
    raise AssertionError("unreachable")


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("xenc-build")


def vtdtrace(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, check=False)


def scratch_tree(src: Path, dest: Path) -> Path:
    """A copy of the files a build reads (for patching in a test)."""
    for rel in ("xen/Makefile", "xen/drivers/passthrough/vtd"):
        s, d = src / rel, dest / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copyfile(s, d)
    return dest


def record(tmp: Path, scenario: Path, engine: str, cx: str, tree: Path | None = None, tag: str = "") -> Path:
    """`vtdtrace record SCENARIO --engine ENGINE CX [--xen-tree TREE]` as a
    user runs it, into tmp/NAME.ENGINE[TAG]CX.vtdt."""
    out = tmp / f"{scenario.stem}.{engine}{tag}{cx}.vtdt"
    args = ["record", str(scenario), "--engine", engine, cx, "-o", str(out)]
    if tree is not None:
        args += ["--xen-tree", str(tree)]
    r = vtdtrace(*args)
    assert r.returncode == 0, r.stderr
    return out


def events(path: Path) -> list:
    with open_trace(path) as t:
        return list(t.events())


def findings(path: Path) -> list[dict]:
    """`vtdtrace check --json --no-cache PATH`'s findings."""
    r = vtdtrace("check", "--json", "--no-cache", str(path))
    assert r.returncode in (0, 1), r.stderr
    return list(json.loads(r.stdout)["findings"])


def finding_kinds(path: Path) -> list[tuple[str, str]]:
    return sorted({(f["kind"], f["severity"]) for f in findings(path)})
