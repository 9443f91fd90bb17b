"""One-line user-facing errors with their exit codes (docs/CLI.md#exit-codes)."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_FINDING, EXIT_USAGE, EXIT_DAMAGED = 0, 1, 2, 3
# A bug in vtdtrace, not a problem with the input (sysexits.h EX_SOFTWARE).
EXIT_INTERNAL = 70
# Set (by the test suite) to let an internal error propagate as a traceback
# instead of the one-line exit 70, so that no test passes through it unnoticed.
RAISE_INTERNAL_ENV = "VTDTRACE_RAISE_INTERNAL"


def fail(path, message: str, code: int = EXIT_USAGE) -> int:
    where = f"{path}: " if path is not None else ""
    print(f"vtdtrace: {where}{message}", file=sys.stderr)
    return code
