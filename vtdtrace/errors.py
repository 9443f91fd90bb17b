"""One-line user-facing errors with their exit codes (docs/CLI.md#exit-codes)."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_DAMAGED = 0, 1, 2, 3


def fail(path, message: str, code: int = EXIT_USAGE) -> int:
    where = f"{path}: " if path is not None else ""
    print(f"vtdtrace: {where}{message}", file=sys.stderr)
    return code
