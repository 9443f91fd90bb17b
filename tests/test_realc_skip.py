"""Where the Xen tree cannot be had, the xen-c tests skip with one line --
unless VTDTRACE_REQUIRE_XEN_TREE=1 (.ci/run sets it), which makes that a
failure."""

from __future__ import annotations

import pytest
from realc_helpers import unavailable


def test_skip_without_the_requirement(monkeypatch):
    monkeypatch.delenv("VTDTRACE_REQUIRE_XEN_TREE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Xen tree: offline"):
        unavailable("no Xen tree: offline")


def test_failure_when_required(monkeypatch):
    monkeypatch.setenv("VTDTRACE_REQUIRE_XEN_TREE", "1")
    with pytest.raises(pytest.fail.Exception, match="VTDTRACE_REQUIRE_XEN_TREE=1 but no Xen tree: offline"):
        unavailable("no Xen tree: offline")
