"""Garbage collection off the key path, for both apps (one trace, diff).

With a long trace loaded (findings, their index, the replay session; in the
diff view an alignment of 10^6 rows and two sessions) a young-generation
collection took ~10 ms and a full one up to 0.5 s here, landing in the
middle of a key's frame.  Almost everything is freed by reference counting;
the collector only finds cycles.  So: automatic collection is off while the
app runs, it runs when no key came for a while, and what loading built is
moved out of its sight (``gc.freeze``) once loading is done.
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.app import App

    _AppBase = App[Any]
else:
    _AppBase = object       # a mixin: App comes later in the app class's bases


class IdleGC(_AppBase):
    """Mix into an App: ``gc_start()`` on mount, ``gc_key()`` on every key,
    ``gc_settle()`` when loading is done, ``gc_stop()`` on unmount."""

    GC_IDLE = 0.4          # seconds without a key before collecting
    GC_FULL_EVERY = 20     # idle ticks between full collections

    _last_key = 0.0
    settled = False

    def gc_start(self) -> None:
        self._gc_was_enabled = gc.isenabled()
        self._last_key = time.monotonic()
        self._gc_ticks = 0
        gc.disable()
        self.set_interval(0.5, self._gc_idle, name="idle-gc")

    def gc_key(self) -> None:
        self._last_key = time.monotonic()

    def _gc_idle(self) -> None:
        if time.monotonic() - self._last_key < self.GC_IDLE:
            return
        self._gc_ticks += 1
        gc.collect(2 if self._gc_ticks % self.GC_FULL_EVERY == 0 else 1)

    def gc_settle(self) -> None:
        """Loading built long-lived structures: collect once, then freeze them."""
        gc.collect()
        gc.freeze()
        self.settled = True

    def gc_stop(self) -> None:
        gc.unfreeze()
        if getattr(self, "_gc_was_enabled", True):
            gc.enable()
