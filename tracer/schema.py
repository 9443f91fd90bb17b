"""The event catalogue: every event kind, its fields and their order.

This module is the single source of truth shared by the writer (tracer), the
reader and the fold (replay) and docs/FORMAT.md.  An event on disk is a
positional msgpack array:

    [kind, seq, cpu, op, func, label, *fields]

* ``kind``  -- small int, index into ``KINDS`` (names are kebab-case)
* ``seq``   -- 1-based position in the trace
* ``cpu``   -- simulated CPU (0 until concurrency is modelled)
* ``op``    -- enclosing top-level operation (0 = boot, n = the n-th ``[[op]]``)
* ``func``  -- small int, index into ``FUNCS`` (the Xen function emitting it)
* ``label`` -- the step label (``MO7``, ``UO3``, ``RN4`` ..., docs/MODEL.md#step-labels) or ``""``

Positional arrays, not maps: maps with string keys cost ~3x the bytes and ~7x
the decode time.  The header of every trace carries ``schema_dict()`` so a
reader can decode traces written by another build and upgrade old ones.

Value conventions inside fields:
* domains are raw Xen domids (ints: 0, 1, DOMID_IO = 0x7FF1 ...); the trace
  header maps them to scenario names;
* a requester ID / BDF is the 16-bit ``bus << 8 | devfn`` plus a separate
  ``seg`` where it matters (``iommu`` implies the segment for context entries);
* 64-bit values (``lo``, ``hi``, addresses) are unsigned ints;
* ``None`` stands for "not applicable".

Every field has a type (``FIELD_TYPES``: int, u64, dom, str, bool, args, and
``?`` for "or None"), taken from what the engine emits.  The reader checks
every event of a known kind against them while decoding
(replay/reader.py), so nothing downstream meets a string where the catalogue
says int; the header carries only names, so the types are this build's.
Fields that index state or name a closed set also have value rules (ranges,
the header platform's IOMMUs, segments and domains, FIELD_ENUMS: see below).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FORMAT_NAME = "vtdtrace"
# Bump MAJOR for an incompatible change of the container or of the meaning of
# an existing field; MINOR when kinds or trailing fields are appended.
FORMAT_MAJOR = 1
FORMAT_MINOR = 2
# 1: as first published.  2: the lock name pci_lock (a new word of a closed set,
# which a version-1 reader must not take for damage: it reads a version-2 trace
# as newer, without enforcing the closed sets).  replay.reader upgrades 1 to 2.
SCHEMA_VERSION = 2

PREFIX = ("seq", "cpu", "op", "func", "label")
# Index of the first kind-specific field inside an event array.
F0 = 1 + len(PREFIX)
I_KIND, I_SEQ, I_CPU, I_OP, I_FUNC, I_LABEL = range(6)


@dataclass(frozen=True)
class Kind:
    code: int
    name: str
    fields: tuple[str, ...]
    doc: str
    # FIELD_TYPES names of the fields this build knows, in order: one per field,
    # fewer when a newer trace appended fields, none for a kind unknown here.
    types: tuple[str, ...] = ()


# Field types.  msgpack gives back exactly these Python types, so a type is a
# set of Python types (an exact ``type(v)`` match: ``True`` is not an int, an
# int is not a bool).  ``?`` adds None (not applicable).  ``u64`` and ``dom``
# are integers whose role is display: hex, and a domain name.  ``args`` is the
# call event's argument list: arrays of two, [name, value] with a str name and
# a value of ARG_VALUE_TYPES.
_NONE = type(None)
FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "int?": (int, _NONE),
    "u64": (int,), "u64?": (int, _NONE),
    "dom": (int,), "dom?": (int, _NONE),
    "str": (str,),
    "bool": (bool,),
    "args": (list, tuple),     # tuple when read with open_trace(tuples=True)
}
ARG_VALUE_TYPES: tuple[type, ...] = (int, str, bool, _NONE)
# The prefix after kind: seq, cpu, op, func (codes and counters), label.
PREFIX_TYPES: tuple[str, ...] = ("int", "int", "int", "int", "str")

# (name, ("field:type", ...), doc) per kind, in code order.
_KIND_SPECS: list[tuple[str, tuple[str, ...], str]] = [
    # --- operations and calls -------------------------------------------------
    ("op-begin", ("verb:str", "bdf:int?", "domain:dom?", "seg:int?"),
     "A top-level operation starts: verb is boot|assign|deassign|quarantine|destroy|add|remove; "
     "bdf/seg the device (None for boot/destroy), domain the target or destroyed domain."),
    ("op-end", ("rc:int",),
     "The top-level operation returns rc (0 or -errno)."),
    ("call", ("args:args",),
     "Entry into the Xen function named by func; args is a list of [name, value] pairs in C parameter order."),
    ("return", ("rc:int?",),
     "Return from func with rc (int; None for void functions)."),
    # --- locks ----------------------------------------------------------------
    ("lock", ("lock:str", "target:int?"),
     "Acquire: lock is pcidevs_lock | iommu->lock | mapping_lock | rcu_domain | register_lock | bus2bridge_lock; "
     "target the IOMMU index (iommu->lock, register_lock), the domid (mapping_lock, rcu_domain), "
     "the segment (bus2bridge_lock) or None."),
    ("unlock", ("lock:str", "target:int?"),
     "Release of a lock taken by a matching lock event."),
    # --- hardware structures ----------------------------------------------------
    ("root-write", ("iommu:int", "bus:int", "old:u64", "new:u64"),
     "Root entry of bus written (lo: P | context-table pointer); happens when a context table is allocated."),
    ("ctx-write", ("iommu:int", "bus:int", "devfn:int", "half:str", "method:str",
                   "old_lo:u64", "old_hi:u64", "new_lo:u64", "new_hi:u64"),
     "Store to the in-memory context entry: half is lo|hi|full, method plain|write_atomic|cmpxchg16b; "
     "old_* / new_* the whole 128-bit entry before and after this store."),
    ("cache-sync", ("iommu:int", "bus:int", "devfn:int"),
     "iommu_sync_cache over the context entry: on a non-coherent unit the entry becomes visible to the IOMMU."),
    ("flush-context", ("iommu:int", "gran:str", "did:int", "sid:int", "fm:int", "non_present:bool", "rc:int"),
     "Context-cache invalidation: gran global|domain|device, did, sid (bus<<8|devfn), fm (function mask), "
     "non_present flag; rc 1 = skipped, caller must flush the write buffer; 0 done; <0 error."),
    ("flush-iotlb", ("iommu:int", "gran:str", "did:int", "addr:u64", "order:int", "non_present:bool",
                     "dev_iotlb:bool", "rc:int"),
     "IOTLB invalidation: gran global|dsi|psi, did, addr/order (psi), non_present flag, "
     "dev_iotlb = device-TLBs flushed too; rc as flush-context."),
    ("flush-dev-iotlb", ("iommu:int", "sid:int", "did:int", "rc:int"),
     "Device-TLB (ATS) invalidation sent to the device sid because its current entry has did."),
    ("flush-write-buffer", ("iommu:int", "performed:bool"),
     "iommu_flush_write_buffer: performed is true when CAP.RWBF or the quirk makes it do anything."),
    ("translation-enable", ("iommu:int",),
     "DMA remapping enabled on the unit (GCMD.TE)."),
    # --- DID bookkeeping --------------------------------------------------------
    ("did-bitmap", ("iommu:int", "did:int", "value:int"),
     "iommu->domid_bitmap bit did set (value 1) or cleared (value 0)."),
    ("did-map", ("iommu:int", "did:int", "old:dom", "new:dom"),
     "iommu->domid_map[did] changed from domid old to domid new."),
    ("iommu-bitmap", ("domain:dom", "iommu:int", "value:int"),
     "Bit iommu of the domain's hd->arch.vtd.iommu_bitmap set/cleared."),
    # --- page tables and identity maps -------------------------------------------
    ("pt-alloc", ("domain:dom", "maddr:u64", "what:str"),
     "Page-table page allocated for domain at maddr; what is pgd (the root of the domain's I/O page tables), "
     "pt-l3|pt-l2|pt-l1 (a lower level of them), quarantine|quarantine-l3|quarantine-l2|quarantine-l1 "
     "(dom_io's read-only quarantine tree; under engine `final` one device's quarantine tree, owned by "
     "its pseudo domain ID) or scratch (the tree's scratch leaf page; read/write under `final`)."),
    ("pt-free", ("domain:dom", "maddr:u64"),
     "The domain's page-table tree at maddr freed (domain destruction; under `final` a device's "
     "quarantine tree, with its pseudo domain ID as the domain)."),
    ("idmap-add", ("domain:dom", "base:u64", "end:u64", "access:str", "refcount:int"),
     "Identity (1:1) mapping [base, end] (inclusive, bytes) with access rw|r in the domain's tables; "
     "refcount after the call (a repeat only bumps it)."),
    ("idmap-remove", ("domain:dom", "base:u64", "end:u64", "refcount:int"),
     "Identity mapping dropped (refcount after; 0 = pages unmapped)."),
    # --- devices and domains ----------------------------------------------------
    ("owner-move", ("seg:int", "bdf:int", "old:dom?", "new:dom?"),
     "pdev->domain changes (list_move of the pdev to the new domain's list)."),
    ("device-add", ("seg:int", "bdf:int"),
     "pci_add_device: the pdev exists from now on."),
    ("device-remove", ("seg:int", "bdf:int"),
     "pci_remove_device: the pdev is gone."),
    ("ats-enable", ("seg:int", "bdf:int", "value:int"),
     "enable_ats_device (value 1) / disable_ats_device (value 0)."),
    ("domain-create", ("domain:dom",),
     "The domain exists (scenario domains at boot; dom_io is always there)."),
    ("domain-dying", ("domain:dom",),
     "d->is_dying set: destruction has started."),
    ("domain-destroy", ("domain:dom",),
     "The domain is gone; its domid no longer resolves."),
    # --- control flow and diagnostics ---------------------------------------------
    ("rollback-begin", ("rc:int", "what:str"),
     "An error path starts undoing work (what: MO14 unmap|MO14 remap|P5 unmap|P5 remap|PM9 ...) after rc."),
    ("rollback-end", ("rc:int",),
     "The rollback finished with rc."),
    ("fault-inject", ("point:str", "errno:int", "nth:int"),
     "A scenario-injected failure fires at point "
     "(pgd-alloc|did-alloc|flush-context|flush-iotlb|quirk|cmpxchg|rmrr-map)."),
    ("engine-limit", ("what:str", "depth:int"),
     "The simulator refused to go on (e.g. MO14 rollback ping-pong capped at depth); the C code would loop."),
    ("log", ("level:str", "text:str"),
     "A printk/dprintk line as Xen prints it (level: debug|info|warning|err)."),
    # --- format 1.1 (engine `final`) ----------------------------------------------
    ("pseudo-domid", ("seg:int", "bdf:int", "iommu:int", "domain:dom", "value:int"),
     "The device's per-device pseudo domain ID (pdev->arch.pseudo_domid, 0x8000 | index, in domid_map's "
     "domain-ID space) taken from (value 1) or returned to (value 0) the pseudo-ID bitmap of the IOMMU "
     "iommu: iommu_alloc_domid / iommu_free_domid.  The device's quarantine page tables are recorded "
     "as that domain's (pt-alloc, idmap-add, pt-free)."),
    # --- format 1.2 (several CPUs, DMA) ---------------------------------------------
    ("lock-wait", ("lock:str", "target:int?", "holder:int"),
     "The CPU of this event spins on a lock that CPU holder holds; it runs again (with a lock event) "
     "once the lock is free and it is scheduled."),
    ("dma", ("source:str", "seg:int", "bdf:int", "rid:int", "iommu:int?", "iova:u64", "write:bool",
             "via:str", "ctx_lo:u64", "ctx_hi:u64", "did:int?", "pt_root:u64", "host:u64?", "owner:dom?",
             "fault:int"),
     "A device's DMA, translated as the hardware does (cpu -1: no CPU issued it): source names the "
     "scenario's [[dma]] entry, seg/bdf the device, rid the requester ID on the wire, iommu the unit that "
     "translated it (None: no unit covers it), iova the page, write read/write; via says what gave the "
     "translation (memory|context-cache|iotlb|device-tlb|none), ctx_lo/ctx_hi the context entry used, "
     "did its domain ID, pt_root the page tables walked (0: none); the outcome is host (the host page "
     "reached) and owner (the domain that owns it), or fault (the VT-d fault reason, 0 = none)."),
]

KINDS: tuple[Kind, ...] = tuple(
    Kind(code, name, tuple(f.split(":")[0] for f in fields), doc, tuple(f.split(":")[1] for f in fields))
    for code, (name, fields, doc) in enumerate(_KIND_SPECS)
)
assert all(t in FIELD_TYPES for k in KINDS for t in k.types)
KIND_BY_NAME: dict[str, Kind] = {k.name: k for k in KINDS}
KIND_NAMES: tuple[str, ...] = tuple(k.name for k in KINDS)

# Kind codes (K_CTX_WRITE ...) and field indices (F_CTX_WRITE_NEW_LO ...) as
# module constants, for dispatch and named field access on hot paths.  The
# generated module gives readers and the type checker their names; the loop
# below derives their values from the catalogue itself, so a catalogue edit is
# never read through stale numbers (a test fails until the module is
# regenerated with ``python -m tracer.schema_doc --fields``).
from .schema_fields import *  # noqa: E402, F403

for _k in KINDS:
    _n = _k.name.upper().replace("-", "_")
    globals()["K_" + _n] = _k.code
    for _i, _f in enumerate(_k.fields):
        globals()[f"F_{_n}_{_f.upper()}"] = F0 + _i
del _k, _n, _i, _f

# Xen functions that emit events.  Append only (codes are stored in traces).
FUNCS: tuple[str, ...] = (
    "",  # 0: no function (top-level operation bookkeeping)
    "boot",
    "iommu_quarantine_init",
    "intel_iommu_quarantine_init",
    "intel_iommu_hwdom_init",
    "setup_hwdom_device",
    "setup_hwdom_rmrr",
    "iommu_enable_translation",
    "pci_add_device",
    "pci_remove_device",
    "intel_iommu_add_device",
    "intel_iommu_remove_device",
    "assign_device",
    "deassign_device",
    "pci_release_devices",
    "domain_kill",
    "iommu_domain_destroy",
    "iommu_domain_teardown",
    "intel_iommu_assign_device",
    "reassign_device_ownership",
    "domain_context_mapping",
    "domain_context_unmap",
    "domain_context_mapping_one",
    "domain_context_unmap_one",
    "bus_to_context_maddr",
    "domain_pgd_maddr",
    "context_set_domain_id",
    "domain_iommu_domid",
    "check_cleanup_domid_map",
    "cleanup_domid_map",
    "iommu_flush_context_device",
    "iommu_flush_iotlb_dsi",
    "iommu_flush_write_buffer",
    "iommu_flush_dev_iotlb",
    "iommu_sync_cache",
    "me_wifi_quirk",
    "map_me_phantom_function",
    "find_upstream_bridge",
    "iommu_identity_mapping",
    "rmrr_identity_mapping",
    "enable_ats_device",
    "disable_ats_device",
    "rcu_lock_domain_by_id",
    "vmx_pi_hooks_assign",
    "vmx_pi_hooks_deassign",
    "pci_vtd_quirk",
    "iommu_flush_all",
    "setup_hwdom_pci_devices",
    "iommu_add_device",
    "iommu_remove_device",
    "iommu_clear_root_pgtable",
    # format 1.1 (engine `final`)
    "iommu_quarantine_dev_init",
    "fill_qpt",
    "quarantine_teardown",
    "iommu_identity_map_teardown",
    "get_iommu_did",
    # format 1.2 (several CPUs: domain destruction as Xen splits it)
    "domain_destroy",
    "complete_domain_destroy",
)
FUNC_CODE: dict[str, int] = {name: i for i, name in enumerate(FUNCS)}

# The functions among FUNCS whose return value is a machine address, not an
# error code: bus_to_context_maddr (the bus's context table) and
# domain_pgd_maddr (the root SLPTPTR gets; 0 when allocation failed).
# Readers print their rc in hex; tests/test_xen_notation.py checks that no
# other function returns a value in the engine's page-frame range.
ADDRESS_FUNCS = frozenset({"bus_to_context_maddr", "domain_pgd_maddr"})

# Xen domid constants (public/xen.h).
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOMID_IO = 0x7FF1
DOMID_XEN = 0x7FF2
DOMID_COW = 0x7FF3
DOMID_INVALID = 0x7FF4
DOMID_IDLE = 0x7FFF

# pci_lock: d->pci_lock (4.19+, an rwlock taken for writing around the moves of a
# device between domains' lists); only real-code traces of 4.19+ trees have it.
LOCK_NAMES = ("pcidevs_lock", "iommu->lock", "mapping_lock", "rcu_domain", "register_lock", "bus2bridge_lock",
              "pci_lock")
# Every reserved domid the engine may name (DOMID_IO owns quarantined
# devices, DOMID_INVALID fills unused domid_map slots ...).
DOMID_RESERVED = (DOMID_SELF, DOMID_IO, DOMID_XEN, DOMID_COW, DOMID_INVALID, DOMID_IDLE)
# Per-device pseudo domain IDs (engine `final`, x86 iommu_alloc_domid): DOMID_MASK + 1 + index,
# index < UINT16_MAX - DOMID_MASK.  They share domid_map with real domain IDs and stand for
# dom_io on behalf of one quarantined device.
DOMID_MASK = 0x7FFF
PSEUDO_DOMID_FIRST = DOMID_MASK + 1
PSEUDO_DOMID_LAST = 0xFFFE


def is_pseudo_domid(domid: object) -> bool:
    return type(domid) is int and PSEUDO_DOMID_FIRST <= domid <= PSEUDO_DOMID_LAST

# Field values.  A type says an iommu is an int; these say which ints, since
# the fold indexes its state with them and the renderers print them as
# hardware.  Rules by field name hold in every kind that has the field:
#   u64 fields     0 .. 2**64-1
#   bus, devfn     0 .. 0xff          bdf, sid   0 .. 0xffff
#   iommu          an ``id`` of the header's platform.iommus
#   seg            a segment of the platform (of its IOMMUs, devices, RMRRs)
#   dom fields     a domid of the header's platform.domains, DOMID_RESERVED or a
#                  pseudo domain ID 0x8000..0xfffe (``dom?``: or None)
# and FIELD_ENUMS closes the str fields whose meaning is a fixed set of words
# (the engine's emit sites use nothing else).  Rules that need the platform
# apply only when the header has the list they need.
U64_MAX = (1 << 64) - 1
FIELD_RANGES: dict[str, tuple[int, int]] = {"bus": (0, 0xFF), "devfn": (0, 0xFF), "bdf": (0, 0xFFFF),
                                            "sid": (0, 0xFFFF)}
_VERBS = ("boot", "assign", "deassign", "quarantine", "destroy", "add", "remove")
FIELD_ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    ("op-begin", "verb"): _VERBS,
    ("lock", "lock"): LOCK_NAMES,
    ("unlock", "lock"): LOCK_NAMES,
    ("ctx-write", "half"): ("lo", "hi", "full"),
    ("ctx-write", "method"): ("plain", "write_atomic", "cmpxchg16b"),
    ("flush-context", "gran"): ("global", "domain", "device"),
    ("flush-iotlb", "gran"): ("global", "dsi", "psi"),
    ("pt-alloc", "what"): ("pgd", "pt-l3", "pt-l2", "pt-l1",
                           "quarantine", "quarantine-l3", "quarantine-l2", "quarantine-l1", "scratch"),
    ("idmap-add", "access"): ("rw", "r"),
    ("fault-inject", "point"): ("pgd-alloc", "did-alloc", "flush-context", "flush-iotlb", "quirk", "cmpxchg",
                                "rmrr-map"),
    ("log", "level"): ("debug", "info", "warning", "err"),
    ("lock-wait", "lock"): LOCK_NAMES,
    ("dma", "via"): ("memory", "context-cache", "iotlb", "device-tlb", "none"),
}
assert all(KIND_BY_NAME[k].types[KIND_BY_NAME[k].fields.index(f)] == "str" for k, f in FIELD_ENUMS)


def value_rule(kind: str, field: str, type_: str) -> str | None:
    """The value rule of a field in words (docs/FORMAT.md's table), or None."""
    if (kind, field) in FIELD_ENUMS:
        return "|".join(FIELD_ENUMS[(kind, field)])
    if type_ in ("u64", "u64?"):
        return "0..2^64-1"
    if field in FIELD_RANGES:
        lo, hi = FIELD_RANGES[field]
        return f"{lo}..{hi:#x}"
    if field == "iommu":
        return "platform IOMMU id"
    if field == "seg":
        return "platform segment"
    if type_.startswith("dom"):
        return "header domain, reserved domid or pseudo domain ID"
    return None


def schema_dict() -> dict[str, Any]:
    """The catalogue as stored in every trace header."""
    return {
        "schema_version": SCHEMA_VERSION,
        "prefix": list(PREFIX),
        "kinds": [[k.name, list(k.fields)] for k in KINDS],
        "funcs": list(FUNCS),
    }


def event_to_dict(ev: Sequence[Any], kinds: Sequence[Kind] = KINDS,
                  funcs: Sequence[str] = FUNCS) -> dict[str, Any]:
    """An event array as a dict with the schema's field names (for JSON output)."""
    kind = kinds[ev[I_KIND]]
    out = {
        "seq": ev[I_SEQ],
        "cpu": ev[I_CPU],
        "op": ev[I_OP],
        "func": funcs[ev[I_FUNC]] if 0 <= ev[I_FUNC] < len(funcs) else ev[I_FUNC],
        "label": ev[I_LABEL],
        "kind": kind.name,
    }
    for name, value in zip(kind.fields, ev[F0:]):
        out[name] = value
    return out
