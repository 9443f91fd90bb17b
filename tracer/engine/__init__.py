"""The simulated Xen 4.15 VT-d device-(re)assignment engine.

``Engine(platform, recorder, variant=..., cx16=...)`` runs a scenario:
``boot()`` (op 0), then ``run_op(op)`` per ``[[op]]``.  Variants:

* ``legacy`` -- V1, stable-4.15 7bbcacec42 (the seed's parent): unmap, then
  map through dom_io;
* ``direct`` -- V2, stable-4.15 d67a72c655 (the seed, XSA-400 / CVE-2022-26359):
  in-place re-assignment with cmpxchg16b or the two non-cx16 write paths;
* ``original`` -- V0, stable-4.15 aafd4f1df0 (before XSA-400): unmap then map,
  RMRR maps removed before the unmap and added after the map (original.py);
* ``final`` -- V3, stable-4.15 b3ee746000 (end of the XSA-400 series):
  per-device pseudo domain IDs and quarantine page tables (final.py,
  final_quarantine.py).

``OriginalEngine`` and ``FinalEngine`` override the functions whose C differs
at their commits; ``Engine(..., variant=...)`` constructs them
(``ENGINE_CLASSES``).  ``canonical()`` is the live snapshot the replay
property test compares against.
"""

from __future__ import annotations

from .. import schema as S
from ..platform import Platform
from ..recorder import Recorder
from ..sched import SHARED_KINDS, Chooser, Deadlock, FollowSchedule, Scheduler
from .context_one import ContextOneMixin
from .core import EngineCore, EngineLimit
from .did import DidMixin
from .flush import FlushMixin
from .mapping import MappingMixin
from .pci import PciMixin
from .quirks import QuirksMixin
from .reassign import ReassignMixin

VARIANTS = {
    "legacy": "V1: stable-4.15 7bbcacec42, unmap then map via dom_io",
    "direct": "V2: stable-4.15 d67a72c655, direct re-assignment (XSA-400)",
    "original": "V0: stable-4.15 aafd4f1df0, before XSA-400: RMRR maps removed before the unmap",
    "final": "V3: stable-4.15 b3ee746000, end of the XSA-400 series (per-device quarantine)",
}
PLANNED_VARIANTS: dict[str, str] = {}
XEN_COMMITS = {"legacy": "7bbcacec42", "direct": "d67a72c655", "original": "aafd4f1df0", "final": "b3ee746000"}


class Engine(PciMixin, ReassignMixin, MappingMixin, ContextOneMixin, QuirksMixin,
             FlushMixin, DidMixin, EngineCore):

    def __new__(cls, platform: Platform, recorder: Recorder, *, variant: str,
                cx16: bool | None = None, chooser: Chooser | None = None) -> Engine:
        # A variant with code of its own is a subclass (ENGINE_CLASSES, below).
        sub = ENGINE_CLASSES.get(variant) if cls is Engine else None
        return object.__new__(sub if sub is not None else cls)

    def __init__(self, platform: Platform, recorder: Recorder, *, variant: str, cx16: bool | None = None,
                 chooser: Chooser | None = None) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown engine variant {variant!r}")
        self.variant = variant
        super().__init__(platform, recorder, cx16=cx16)
        self.chooser = chooser
        self._dma_init()

    def run(self) -> list[int]:
        """Boot, then every op; the return codes of the ops in listed order.
        One CPU and no DMA: the ops one after the other.  Otherwise the
        scheduler (tracer/sched.py) runs them on their CPUs under the
        chooser (default: run to completion in listed order)."""
        rcs = []
        try:
            self.boot()
            if self.platform.cpus == 1 and not self.platform.dma and self.chooser is None:
                for op in self.platform.ops:
                    rcs.append(self.run_op(op))
            else:
                self.sched = Scheduler(self, self.chooser or FollowSchedule(), self.platform.ops,
                                       self.platform.cpus)
                self.rec.sched, self.rec.shared = self.sched, SHARED_KINDS
                rcs = self.sched.run()
        except (EngineLimit, Deadlock) as exc:
            self.emit(S.K_ENGINE_LIMIT, "", str(exc), len(self.stack))
            if isinstance(exc, Deadlock):
                raise EngineLimit(str(exc)) from exc
            raise
        finally:
            self.rec.sched = None
        return rcs


# The subclasses import Engine: registered after it exists.  One line per variant.
from .final import FinalEngine  # noqa: E402
from .original import OriginalEngine  # noqa: E402

ENGINE_CLASSES: dict[str, type[Engine]] = {
    "original": OriginalEngine,
    "final": FinalEngine,
}

__all__ = ["Engine", "EngineLimit", "VARIANTS", "PLANNED_VARIANTS", "XEN_COMMITS"]
