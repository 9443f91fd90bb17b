"""Dependency rules of README.md#layout, enforced (as Harlequin does for its imports):
tracer and replay work headless (no textual), and replay rebuilds state from
events alone (it never imports the engine, only the schema side of tracer)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

# The schema side of tracer: plain data and pure functions, no engine.
REPLAY_MAY_IMPORT = {"tracer", "tracer.schema", "tracer.canonical", "tracer.platform", "tracer.hostmem"}


def _modules(package: str) -> list[str]:
    root = REPO / package
    mods = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__":
            continue      # running it is not importing it
        mods.append(".".join(parts))
    return mods


def test_tracer_and_replay_never_load_textual():
    mods = _modules("tracer") + _modules("replay")
    assert "replay.reader" in mods and "tracer.writer" in mods
    script = (
        "import importlib, json, sys\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def _imports(path: Path, module: str) -> set[str]:
    """Absolute names of every module `module` (at `path`) imports, at any depth of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from tracer import engine` imports the submodule tracer.engine.
            found.update(f"{prefix}.{a.name}" for a in node.names)
    return found


def test_replay_imports_only_the_schema_side_of_tracer():
    offenders = []
    for module in _modules("replay"):
        rel = Path(*module.split("."))
        path = REPO / (rel / "__init__.py" if (REPO / rel).is_dir() else rel.with_suffix(".py"))
        for name in _imports(path, module):
            if name == "tracer" or name.startswith("tracer."):
                # `from tracer.schema import KINDS` yields "tracer.schema.KINDS": judge the module part.
                mod = name if name in REPLAY_MAY_IMPORT else ".".join(name.split(".")[:2])
                if mod not in REPLAY_MAY_IMPORT:
                    offenders.append(f"{module} imports {name}")
    assert offenders == []


def test_the_import_checker_sees_through_import_styles(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import tracer.engine\nfrom tracer import engine\nfrom ..tracer import writer\n"
                   "def f():\n    from tracer.engine.core import Engine\n")
    names = _imports(src, "replay.sub.m")
    assert {"tracer.engine", "tracer.engine.core", "replay.tracer.writer"} <= names


def _package_imports(package: str) -> dict[str, set[str]]:
    out = {}
    for module in _modules(package):
        rel = Path(*module.split("."))
        path = REPO / (rel / "__init__.py" if (REPO / rel).is_dir() else rel.with_suffix(".py"))
        out[module] = _imports(path, module)
    return out


def test_explore_imports_tracer_and_replay_never_the_ui_or_the_cli():
    assert "explore.search" in _modules("explore")
    offenders = [f"{m} imports {n}" for m, names in _package_imports("explore").items() for n in names
                 if n.split(".")[0] in ("tui", "vtdtrace", "textual", "bench")]
    assert offenders == []


def test_nothing_but_the_explore_command_imports_explore():
    offenders = []
    for package in ("tracer", "replay", "tui", "vtdtrace", "bench"):
        for module, names in _package_imports(package).items():
            if module == "vtdtrace.commands.explore" or (
                    package == "bench" and module in ("bench.explore_bench", "bench.explore_parallel_bench")):
                continue
            offenders += [f"{module} imports {n}" for n in names if n == "explore" or n.startswith("explore.")]
    assert offenders == []
