"""How per-device pseudo domain IDs print (engine ``final``).

From the end of the XSA-400 series on, a quarantined device's context entry
carries a DID allocated to the device's own *pseudo domain ID* -- a number
``0x8000 | index`` in domid_map's domain-ID space, above every real domain
ID -- and points at page tables built for that device alone.  Both stand
for dom_io on behalf of that one device, so they print as
``dom_io/pseudo 0x8002``, with the device when the replayed state says which
device holds the number: ``dom_io/pseudo 0x8002 (0000:02:00.0)``.  The
``pseudo-domid`` events (tracer/schema.py) are where the state learns it.
"""

from __future__ import annotations

from tracer.platform import fmt_bdf
from tracer.schema import is_pseudo_domid

__all__ = ["is_pseudo_domid", "pseudo_domain_name"]


def pseudo_domain_name(domid: int, holder: tuple[int, int] | None = None) -> str:
    """``dom_io/pseudo 0x8002``, plus `` (SSSS:BB:DD.F)`` when ``holder`` --
    the (segment, bus << 8 | devfn) of the device that holds it -- is known."""
    name = f"dom_io/pseudo {domid:#x}"
    if holder is not None:
        seg, bdf = holder
        name += f" ({fmt_bdf(seg, bdf >> 8, bdf & 0xFF)})"
    return name
