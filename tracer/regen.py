"""Regenerate the shipped traces: every traces/*.toml under `legacy`,
`direct` and `final` (each with cx16 and without) and `original` (V0 never
reads cx16, so it ships with --cx16 only, as `legacy` does) ->
traces/NAME.ENGINE[-nocx16].vtdt.

    python -m tracer.regen          (or: make traces)
    python -m tracer.regen --check  exit 1 if a committed trace differs

Recordings are byte-reproducible, so --check compares bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .record import apply_cx16, default_output, make_header, record
from .scenario import load_scenario
from .writer import TraceWriter

COMBOS = (("legacy", True), ("direct", True), ("direct", False),
          ("original", True), ("final", True), ("final", False))


def shipped_traces(traces_dir: Path) -> Iterator[tuple[Path, str, bool, Path]]:
    """(scenario path, variant, cx16, trace path) for every shipped combination."""
    for toml in sorted(traces_dir.glob("*.toml")):
        platform = load_scenario(toml)
        for variant, cx16 in COMBOS:
            apply_cx16(platform, cx16)
            yield toml, variant, cx16, traces_dir / default_output(platform, variant)


def record_bytes(toml: Path, variant: str, cx16: bool) -> bytes:
    platform = apply_cx16(load_scenario(toml), cx16)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "t.vtdt"
        with TraceWriter(str(out), make_header(platform, variant)) as w:
            record(platform, variant, w)
        return out.read_bytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracer.regen")
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parent.parent / "traces"))
    args = ap.parse_args(argv)
    os.environ.pop("SOURCE_DATE_EPOCH", None)   # shipped traces carry no timestamp
    bad = 0
    for toml, variant, cx16, path in shipped_traces(Path(args.dir)):
        data = record_bytes(toml, variant, cx16)
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"{path.name}: differs from what the engine records now", file=sys.stderr)
                bad += 1
        else:
            path.write_bytes(data)
            print(f"wrote {path.name} ({len(data)} bytes)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
