"""`vtdtrace record --engine xen-c --xen-tree PATH`: tree -> build -> run -> trace.

The header is an ordinary vtdtrace header (tracer/record.py) whose engine
names the tree instead of a commit the model follows:
``{"name": "xen-c", "xen_version", "git_describe", "tree_digest",
"source_digest", "cx16", "cx16_source", "xsa399_fix"}`` -- the tree's version,
``git describe`` when it is a git checkout, a sha256 of the tree files the
build read and of the generated translation unit.  No absolute path: the
same tree gives the same bytes wherever it lies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tracer.platform import Platform
from tracer.record import default_output as tracer_default_output
from tracer.record import make_header
from tracer.recorder import Sink

from .build import Built, build
from .runtime import RunResult, run
from .tree import XenTree, open_tree

ENGINE = "xen-c"


def header(platform: Platform, tree: XenTree, built: Built) -> dict[str, Any]:
    h = make_header(platform, "direct")
    h["engine"] = {
        "name": ENGINE,
        "xen_version": tree.version_name,
        "git_describe": tree.describe,
        "tree_digest": tree.digest,
        "source_digest": built.source_digest,
        "cx16": platform.knobs.cx16,
        "cx16_source": platform.knobs.cx16_source,
        "xsa399_fix": platform.knobs.xsa399_fix,
    }
    return h


def default_output(platform: Platform, tree: XenTree) -> str:
    """``NAME.xen-c-VERSION[-nocx16].vtdt``: the models' naming with the
    tree's version as the engine (the runtime refuses --no-xsa399-fix, so
    that suffix never appears)."""
    return tracer_default_output(platform, f"{ENGINE}-{tree.version_name}")


def prepare(path: str | Path, cache_dir: Path | None = None) -> tuple[XenTree, Built]:
    tree = open_tree(path)
    return tree, build(tree, cache_dir)


def record(platform: Platform, tree: XenTree, built: Built, sink: Sink) -> RunResult:
    return run(built, platform, sink, tree)
