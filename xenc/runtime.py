"""Run a scenario through the real VT-d functions of a Xen tree and record
ordinary vtdtrace events.

The compiled library (xenc/build.py) holds the tree's own functions and the
stand-ins around them; this module is the part of Xen above them -- boot,
the PCI layer's assign, deassign, quarantine and remove -- and the recorder.

**Where events come from.**  The stand-ins report every record through one
ctypes callback, in the order the C code makes them:

* locks and RCU domain references (lock/unlock events);
* stores into root and context tables (root-write, ctx-write) and cache syncs;
* the flush entry points the runtime installs in ``iommu->flush``: one
  flush-context / flush-iotlb event per call, *after* the tree's register
  code returned (the register lock is released by then);
* set_bit/clear_bit on a DID bitmap or a domain's IOMMU bitmap;
* page-table pages, identity maps and printk lines.

Two things the C code changes with plain stores have no hook of their own:
``iommu->domid_map[]`` and ``pdev->domain``.  At every record (and when a
call returns) the runtime compares them with a shadow copy and emits
did-map / owner-move for what changed, before the record's own event.  A
store of an unchanged value is invisible this way: the model's
``did-map ... old=dom0 new=dom0`` for DID 0 has no counterpart here
(docs/REALCODE.md, the normalisation).

**Refusals.**  What the real-code path does not support yet is refused
before anything runs, with one line naming it (``Unsupported``); what the
C code reaches at run time that no stand-in models stops the run the same
way.

**Quarantine** (trees with per-device quarantine, standin/quarantine.c):
the PCI layer's part runs here -- iommu_quarantine_dev_init before a device
leaves the hardware domain or goes to dom_io, the choice of dom_io or the
hardware domain on deassignment (pdev->quarantine is ``quarantined``),
pci_remove_device for hot-unplug -- and the tree's VT-d code does the rest.

**Bridges, conventional PCI and phantom functions**: pci.c's part is a
stand-in (standin/runtime.c): bus2bridge from the scenario's bridges,
find_upstream_bridge and pdev_type answered from it, pci.c's phantom-function
loops; the tree's domain_context_mapping / _unmap do the rest.
"""

from __future__ import annotations

import ctypes
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracer import schema as S
from tracer.platform import (
    CTG_WLAN,
    DEFAULT_ERRNO,
    DOMAIN_TABLES_BASE,
    DOMAIN_TABLES_SHIFT,
    ERRNO,
    ILK_CPT_WLAN,
    IOMMU_TABLES_BASE,
    IS_CPT,
    IS_CTG,
    IS_ILK,
    Device,
    Platform,
    parse_bdf,
)
from tracer.recorder import Recorder, Sink

from .build import Built
from .labels import Labels
from .tree import XenTree, has_nocx16_path, quarantine_init_args

# standin/xenc.h enum xenc_rec
XR_LOCK, XR_UNLOCK, XR_ROOT_STORE, XR_CTX_STORE, XR_CACHE_SYNC = 1, 2, 3, 4, 5
XR_FLUSH_CONTEXT, XR_FLUSH_IOTLB, XR_FLUSH_WB, XR_DID_BIT, XR_IOMMU_BIT = 6, 7, 8, 9, 10
XR_PT_ALLOC, XR_IDMAP, XR_PRINTK, XR_RCU_LOCK, XR_RCU_UNLOCK, XR_HOOK = 11, 12, 13, 14, 15, 16
XR_ASSERT, XR_UNSUPPORTED = 17, 18
XR_PT_FREE, XR_PSEUDO_DOMID = 32, 33        # enum xenc_rec_quarantine (standin/quarantine.c)

_LOCK_NAMES = {0: "pcidevs_lock", 1: "iommu->lock", 2: "mapping_lock", 3: "rcu_domain", 4: "register_lock",
               5: "pci_lock", 6: "bus2bridge_lock"}
_HALF = {0: "lo", 1: "hi", 2: "full"}
_METHOD = {0: "plain", 1: "write_atomic", 2: "cmpxchg16b"}
_CTX_GRAN = {0: "global", 1: "domain", 2: "device"}
_TLB_GRAN = {0: "global", 1: "dsi", 2: "psi"}
# Flush records come from the stand-in entry points; the model names the
# Xen function that called them.
_FLUSH_FUNC = {("ctx", "global"): "iommu_flush_all", ("ctx", "device"): "iommu_flush_context_device",
               ("ctx", "domain"): "iommu_flush_context_device",
               ("tlb", "global"): "iommu_flush_all", ("tlb", "dsi"): "iommu_flush_iotlb_dsi",
               ("tlb", "psi"): "iommu_flush_iotlb_dsi"}
_PT_WHAT = {4: "pgd", 3: "pt-l3", 2: "pt-l2", 1: "pt-l1"}
# a device's quarantine tables (standin/quarantine.c): the root, fill_qpt()'s levels, the scratch leaf
_QPT_WHAT = {0x20: "quarantine", 0x13: "quarantine-l3", 0x12: "quarantine-l2", 0x11: "quarantine-l1",
             0x10: "scratch"}
# iommu_quarantine: the scenario's quarantine is the per-device design with a
# scratch page (b3ee746000 always fills; 4.17 does with iommu=quarantine=scratch-page)
QUARANTINE_SCRATCH_PAGE = 2
# standin/xenc.h enum pdev_type (Xen's order)
_DEV_TYPE = {"host-bridge": 0, "pcie-endpoint": 1, "pcie2pci-bridge": 3, "legacy-pci-bridge": 4, "pci": 5}
_BRIDGES = ("pcie2pci-bridge", "legacy-pci-bridge")
_PRINTK_LEVEL = {"3": "err", "4": "warning", "6": "info", "7": "debug"}
# standin/runtime.c's table sizes
MAX_DOMAINS, MAX_PDEVS, MAX_IOMMUS, MAX_RMRRS = 256, 256, 8, 16
DOMID_IO = S.DOMID_IO

_FAULT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
_FAULT_POINTS = {0: "flush-context", 1: "flush-iotlb", 2: "cmpxchg"}
_LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                           ctypes.POINTER(ctypes.c_uint64))


class Unsupported(Exception):
    """A scenario feature the real-code engine does not run (one line)."""


class CodeFailure(Exception):
    """The C code hit an assertion or a path no stand-in models."""


@dataclass
class RunResult:
    events: int
    rcs: list[int]


def unsupported_features(platform: Platform, tree: XenTree | None = None) -> list[str]:
    """What the scenario asks for that the real-code path cannot run yet."""
    out: list[str] = []
    k = platform.knobs
    for flag, name in ((k.caching_mode, "platform.caching_mode"), (k.ats, "platform.ats"),
                       (k.hwdom_passthrough, "platform.hwdom_passthrough"),
                       (not k.xsa399_fix, "--no-xsa399-fix")):
        if flag:
            out.append(name)
    for dev in platform.devices:
        if dev.type not in _DEV_TYPE:
            out.append(f"device {dev.bdf} of type {dev.type}")
        out += _bridge_unsupported(dev)
        if dev.ats:
            out.append(f"ATS of {dev.bdf}")
        if not dev.present:
            out.append(f"hot-plugged device {dev.bdf}")
        if dev.owner != next(d.name for d in platform.domains if d.hardware):
            out.append(f"device {dev.bdf} owned by {dev.owner} at boot")
        if dev.id32 in CTG_WLAN | ILK_CPT_WLAN and _host_bridge_id(platform) in IS_CTG | IS_ILK | IS_CPT:
            out.append(f"the ME WiFi quirk of {dev.bdf}")
    out += _unsupported_quarantine(platform, tree)
    verbs: tuple[str, ...] = ("assign", "deassign", "quarantine")
    if tree is not None and quarantine_init_args(tree):
        verbs += ("remove",)        # intel_iommu_remove_device is taken with per-device quarantine
    for op in platform.ops:
        if op.do not in verbs:
            out.append(f"op {op.index} `{op.do}`")
        if op.cpu:
            out.append(f"op {op.index} on CPU {op.cpu}")
    for f in platform.faults:
        if f.at not in _FAULT_POINTS.values():
            out.append(f"[[fault]] at {f.at!r} (xen-c injects flush-context, flush-iotlb and cmpxchg)")
        elif f.domain is not None:
            out.append(f"[[fault]] at {f.at!r} for a domain (xen-c counts per device or overall)")
    if platform.dma:
        out.append("[[dma]] sources")
    if tree is not None and not k.cx16 and not has_nocx16_path(tree):
        out.append(f"--no-cx16 (Xen {tree.version_name} has no path without cmpxchg16b)")
    return out


def _unsupported_quarantine(platform: Platform, tree: XenTree | None) -> list[str]:
    """Quarantine runs where the tree has per-device quarantine tables (the
    XSA-400 design); a tree from before it built one shared dom_io tree at
    boot, which no stand-in models."""
    wants = platform.knobs.quarantine or any(op.do == "quarantine" for op in platform.ops)
    if not wants or tree is None or quarantine_init_args(tree):
        return []
    return [f"quarantine on Xen {tree.version_name} (no per-device quarantine page tables in this tree)"]


# --- bridges, conventional PCI and phantom functions -------------------------
# pci.c's part of them is a stand-in (standin/runtime.c, the section on
# bridges): bus2bridge filled from the scenario's bridges, find_upstream_bridge
# and pdev_type answered from it, the phantom-function loops of pci.c.


def _bridge_unsupported(dev: Device) -> list[str]:
    """The one topology the stand-in cannot hold: it keeps a single
    bus2bridge table, segment 0's."""
    if dev.type in _BRIDGES and dev.secondary is not None and dev.seg != 0:
        return [f"bridge {dev.bdf} on segment {dev.seg:04x} (bridges on segment 0 only)"]
    return []


def _add_bridge_and_phantoms(lib: ctypes.CDLL, dev: Device, idx: int) -> None:
    if dev.type in _BRIDGES and dev.secondary is not None:
        sub = dev.subordinate if dev.subordinate is not None else dev.secondary
        if lib.xenc_add_bridge(ctypes.c_uint(dev.bus), ctypes.c_uint(dev.devfn), ctypes.c_uint(dev.secondary),
                               ctypes.c_uint(sub)):
            raise Unsupported(f"the xen-c engine does not support the bus range {dev.secondary:#x}-{sub:#x} "
                              f"of bridge {dev.bdf} yet")
    if dev.phantom_stride:
        lib.xenc_set_phantom_stride(ctypes.c_int(idx), ctypes.c_uint(dev.phantom_stride))


def _host_bridge_id(platform: Platform) -> int | None:
    for dev in platform.devices:
        if (dev.seg, dev.bus, dev.devfn) == (0, 0, 0):
            return dev.id32
    return None


class XencEngine:
    """One run: the library loaded, the platform built in C, events out."""

    def __init__(self, built: Built, platform: Platform, sink: Sink, tree: XenTree | None = None) -> None:
        self.platform = platform
        # Events from the extracted code carry the tree's own line numbers
        # (#line); stand-in records carry line 0 and get the function name.
        self.labels = Labels(tree.read("iommu.c").splitlines() if tree is not None else None)
        self.rec = Recorder(sink)
        self.lib = _fresh_library(built.library)
        self._cb = _LOG_FN(self._on_record)
        self._fault_cb = _FAULT_FN(self._on_fault)
        self._fault_counts: dict[int, int] = {}
        self.cur_device: str | None = None      # the BDF of the op that runs (a [[fault]]'s `device`)
        self.frames: list[str] = []
        self.failure: str | None = None
        self.domains = {d.name: d.id for d in platform.domains}
        self.domains["dom_io"] = DOMID_IO
        self.pdev_index: dict[tuple[int, int, int], int] = {}
        self.owner_shadow: dict[int, int] = {}
        self.quarantined: set[int] = set()       # pdev->quarantine: assigned to dom_io by an op
        # pci.c calls iommu_quarantine_dev_init() only from the XSA-400 series on
        self.per_device_quarantine = "intel_iommu_quarantine_init" in built.functions
        self.did_shadow: list[list[int]] = []
        self._did_views: list[tuple[int, int]] = []      # (address, bytes) of each unit's domid_map
        self._did_raw: list[bytes] = []

    # --- events -----------------------------------------------------------

    def _func(self, cfunc: str) -> str:
        if cfunc in S.FUNC_CODE:
            return cfunc
        return self.frames[-1] if self.frames else ""

    def emit(self, kind: int, cfunc: str, line: int, *fields: object) -> None:
        self.rec.emit(kind, self._func(cfunc), self.labels.label(cfunc, line), *fields)

    def enter(self, func: str, *args: tuple[str, object]) -> None:
        self.frames.append(func)
        self.rec.emit(S.K_CALL, func, func, [list(a) for a in args])

    def leave(self, rc: object) -> None:
        self.shadow_check("")
        func = self.frames.pop()
        self.rec.emit(S.K_RETURN, func, func, rc)

    def shadow_check(self, cfunc: str) -> None:
        """did-map and owner-move for plain stores since the last record."""
        for u, (addr, size) in enumerate(self._did_views):
            raw = ctypes.string_at(addr, size)          # one copy; decoded only when it changed
            if raw != self._did_raw[u]:
                now = list(memoryview(raw).cast("H"))
                old = self.did_shadow[u]
                for did, (a, b) in enumerate(zip(old, now)):
                    if a != b:
                        self.emit(S.K_DID_MAP, cfunc, 0, self.platform.iommus[u].id, did, a, b)
                self.did_shadow[u], self._did_raw[u] = now, raw
        for key, idx in self.pdev_index.items():
            owner = int(self.lib.xenc_pdev_owner(idx))
            if owner != self.owner_shadow[idx]:
                old_owner = self.owner_shadow[idx]
                self.emit(S.K_OWNER_MOVE, cfunc, 0, key[0], (key[1] << 8) | key[2],
                          None if old_owner < 0 else old_owner, None if owner < 0 else owner)
                self.owner_shadow[idx] = owner

    def _on_record(self, rec: int, cfunc_b: bytes | None, line: int, n: int, argp: Any) -> None:
        try:
            self._record(rec, (cfunc_b or b"").decode("utf-8", "replace"), line, [argp[i] for i in range(n)])
        except Exception as exc:        # an exception must not unwind through C frames
            if self.failure is None:
                self.failure = f"runtime: {exc.__class__.__name__}: {exc}"

    def _record(self, rec: int, cfunc: str, line: int, a: list[int]) -> None:
        if self.failure is not None:
            return
        if rec in (XR_ASSERT, XR_UNSUPPORTED):
            self.failure = cfunc if rec == XR_ASSERT else f"the code reached {cfunc}, which xen-c does not model"
            return
        self.shadow_check(cfunc)
        if rec == XR_LOCK or rec == XR_UNLOCK:
            self.emit(S.K_LOCK if rec == XR_LOCK else S.K_UNLOCK, cfunc, line, _LOCK_NAMES[a[0]], a[1])
        elif rec == XR_RCU_LOCK or rec == XR_RCU_UNLOCK:
            self.emit(S.K_LOCK if rec == XR_RCU_LOCK else S.K_UNLOCK, cfunc, line, "rcu_domain", a[0])
        elif rec == XR_ROOT_STORE:
            self.emit(S.K_ROOT_WRITE, cfunc, line, self._iommu_id(a[0]), a[1], a[2], a[3])
        elif rec == XR_CTX_STORE:
            self.emit(S.K_CTX_WRITE, cfunc, line, self._iommu_id(a[0]), a[1], a[2], _HALF[a[3]], _METHOD[a[4]],
                      a[5], a[6], a[7], a[8])
        elif rec == XR_CACHE_SYNC:
            self.emit(S.K_CACHE_SYNC, cfunc, line, self._iommu_id(a[0]), a[1], a[2])
        elif rec == XR_FLUSH_CONTEXT:
            gran = _CTX_GRAN[a[1]]
            self.emit(S.K_FLUSH_CONTEXT, _FLUSH_FUNC[("ctx", gran)], line, a[0], gran, a[2], a[3], a[4],
                      bool(a[5]), _signed(a[6]))
        elif rec == XR_FLUSH_IOTLB:
            gran = _TLB_GRAN[a[1]]
            self.emit(S.K_FLUSH_IOTLB, _FLUSH_FUNC[("tlb", gran)], line, a[0], gran, a[2], a[3], a[4],
                      bool(a[5]), bool(a[6]), _signed(a[7]))
        elif rec == XR_FLUSH_WB:
            self.emit(S.K_FLUSH_WRITE_BUFFER, cfunc, line, a[0], bool(a[1]))
        elif rec == XR_DID_BIT:
            self.emit(S.K_DID_BITMAP, cfunc, line, self._iommu_id(a[0]), a[1], a[2])
        elif rec == XR_IOMMU_BIT:
            self.emit(S.K_IOMMU_BITMAP, cfunc, line, a[0], a[1], a[2])
        elif rec == XR_PT_ALLOC:
            if a[2] in _QPT_WHAT:
                self.emit(S.K_PT_ALLOC, cfunc, line, a[0], a[1], _QPT_WHAT[a[2]])
            else:
                self.emit(S.K_PT_ALLOC, "domain_pgd_maddr", line, a[0], a[1], _PT_WHAT[a[2]])
        elif rec == XR_PT_FREE:
            self.emit(S.K_PT_FREE, cfunc, line, a[0], a[1])
        elif rec == XR_PSEUDO_DOMID:
            # the device of the running operation (bridges, whose mapping
            # could take another device's, are refused)
            assert self.cur_device is not None
            seg, bus, devfn = parse_bdf(self.cur_device)
            self.emit(S.K_PSEUDO_DOMID, cfunc, line, seg, (bus << 8) | devfn, a[0], a[1], a[2])
        elif rec == XR_IDMAP:
            if a[3]:
                self.emit(S.K_IDMAP_ADD, cfunc, line, a[0], a[1], a[2], "rw", a[4])
            else:
                self.emit(S.K_IDMAP_REMOVE, cfunc, line, a[0], a[1], a[2], a[4])
        elif rec == XR_PRINTK:
            where = ctypes.cast(ctypes.c_void_p(a[0]), ctypes.c_char_p).value or b""
            level, text = _printk_level(cfunc)
            self.emit(S.K_LOG, where.decode("utf-8", "replace"), line, level, text)

    def _on_fault(self, point: int, cfunc_b: bytes | None, line: int) -> int:
        """0, or the -errno a scenario [[fault]] injects at this occurrence:
        every matching [[fault]] counts it, the first whose nth it is fires
        (the model's rule, tracer/engine/core.py)."""
        try:
            name = _FAULT_POINTS[point]
            cfunc = (cfunc_b or b"").decode("utf-8", "replace")
            fired: tuple[int, int] | None = None
            for i, f in enumerate(self.platform.faults):
                if f.at != name or (f.device is not None and f.device != self.cur_device):
                    continue
                n = self._fault_counts.get(i, 0) + 1
                self._fault_counts[i] = n
                if n == f.nth and fired is None:
                    fired = (ERRNO[f.errno or DEFAULT_ERRNO[name]], n)
            if fired is None:
                return 0
            self.shadow_check(cfunc)
            self.emit(S.K_FAULT_INJECT, cfunc, line, name, -fired[0], fired[1])
            return -fired[0]
        except Exception as exc:        # must not unwind through C frames
            if self.failure is None:
                self.failure = f"runtime: {exc.__class__.__name__}: {exc}"
            return 0

    def _iommu_id(self, index: int) -> int:
        return index       # the runtime adds units with their scenario id as index

    def check(self) -> None:
        if self.failure is not None:
            raise CodeFailure(self.failure)

    # --- the machine ------------------------------------------------------

    def setup(self) -> None:
        p = self.platform
        lib = self.lib
        lib.xenc_set_sink(self._cb, ctypes.c_uint64(IOMMU_TABLES_BASE), ctypes.c_uint64(DOMAIN_TABLES_BASE),
                          ctypes.c_uint(DOMAIN_TABLES_SHIFT), ctypes.c_int(1 if p.knobs.cx16 else 0))
        lib.xenc_set_fault(self._fault_cb)
        # dom_xen owns hidden devices (none in a scenario); the code asks it anyway
        for domid, hw in [(d.id, d.hardware) for d in sorted(p.domains, key=lambda d: d.id)] + \
                [(DOMID_IO, False), (S.DOMID_XEN, False)]:
            if lib.xenc_add_domain(ctypes.c_uint(domid), ctypes.c_int(1 if hw else 0)) < 0:
                raise Unsupported(f"the xen-c engine does not support more than {MAX_DOMAINS - 2} domains yet")
        lib.xenc_did_map_addr.restype = ctypes.c_uint64
        for u in p.iommus:
            rc = lib.xenc_add_iommu(ctypes.c_uint(u.id), ctypes.c_uint(u.segment), ctypes.c_int(int(u.include_all)),
                                    ctypes.c_uint(u.nd), ctypes.c_uint(u.levels),
                                    ctypes.c_int(int(p.knobs.caching_mode)), ctypes.c_int(int(p.knobs.rwbf)),
                                    ctypes.c_int(int(p.knobs.coherent)))
            if rc:
                raise Unsupported(f"the xen-c engine does not support more than {MAX_IOMMUS} IOMMUs yet")
            for bdf in u.devices:
                _, bus, devfn = parse_bdf(bdf)
                if lib.xenc_add_drhd_device(ctypes.c_uint(len(self._did_views)), ctypes.c_uint((bus << 8) | devfn)):
                    raise Unsupported(f"the xen-c engine does not support more than {MAX_PDEVS} devices "
                                      f"in a DRHD scope yet")
            addr = lib.xenc_did_map_addr(ctypes.c_uint(len(self._did_views)))
            raw = ctypes.string_at(addr, 2 * u.ndoms)
            self._did_views.append((addr, 2 * u.ndoms))
            self._did_raw.append(raw)
            self.did_shadow.append(list(memoryview(raw).cast("H")))
        for r in p.rmrrs:
            bdfs = [(parse_bdf(b)[1] << 8) | parse_bdf(b)[2] for b in r.devices]
            arr = (ctypes.c_uint16 * max(1, len(bdfs)))(*bdfs)
            if lib.xenc_add_rmrr(ctypes.c_uint(r.segment), ctypes.c_uint64(r.base), ctypes.c_uint64(r.end),
                                 ctypes.c_uint(len(bdfs)), arr):
                raise Unsupported(f"the xen-c engine does not support more than {MAX_RMRRS} RMRRs or 8 devices "
                                  f"in one RMRR's scope yet")
        for dev in p.devices:
            idx = lib.xenc_add_pdev(ctypes.c_uint(dev.seg), ctypes.c_uint(dev.bus), ctypes.c_uint(dev.devfn),
                                    ctypes.c_int(_DEV_TYPE[dev.type]))
            if idx < 0:
                raise Unsupported(f"the xen-c engine does not support more than {MAX_PDEVS} devices yet")
            self.pdev_index[(dev.seg, dev.bus, dev.devfn)] = idx
            self.owner_shadow[idx] = -1
            _add_bridge_and_phantoms(lib, dev, idx)
        lib.xenc_quarantine_setup()
        lib.xenc_set_quarantine(ctypes.c_uint(QUARANTINE_SCRATCH_PAGE if p.knobs.quarantine else 0))

    def call(self, fn: Callable[..., int], *args: object) -> int:
        rc = int(fn(*args))
        self.check()
        self.shadow_check("")
        return rc

    def boot(self) -> None:
        p, lib = self.platform, self.lib
        hw = next(d for d in p.domains if d.hardware)
        self.rec.op = 0
        self.rec.emit(S.K_OP_BEGIN, "", "", "boot", None, None, None)
        self.enter("boot")
        for domid in sorted([d.id for d in p.domains] + [DOMID_IO]):
            self.rec.emit(S.K_DOMAIN_CREATE, "boot", "boot", domid)
        for dev in p.devices:
            self.rec.emit(S.K_DEVICE_ADD, "boot", "boot", dev.seg, dev.bdf16)
        # init_vtd_hw() ends with iommu_flush_all()
        self.enter("iommu_flush_all")
        self.leave(self.call(lib.xenc_op_flush_all))
        self.enter("intel_iommu_hwdom_init", ("domain", hw.id))
        self.rec.emit(S.K_LOCK, "intel_iommu_hwdom_init", "intel_iommu_hwdom_init", "pcidevs_lock", None)
        for dev in p.devices:
            idx = self.pdev_index[(dev.seg, dev.bus, dev.devfn)]
            self.cur_device = dev.bdf
            self.enter("setup_hwdom_device", ("devfn", dev.devfn), ("pdev", dev.bdf))
            rc = self.call(lib.xenc_op_hwdom_setup, ctypes.c_int(idx))     # with its phantom functions
            self.leave(rc)
            self.cur_device = None
        self.rec.emit(S.K_UNLOCK, "intel_iommu_hwdom_init", "intel_iommu_hwdom_init", "pcidevs_lock", None)
        self.enter("setup_hwdom_rmrr", ("domain", hw.id))
        self.rec.emit(S.K_LOCK, "setup_hwdom_rmrr", "setup_hwdom_rmrr", "pcidevs_lock", None)
        for r in p.rmrrs:
            for _ in r.devices:
                self.call(lib.xenc_op_identity, ctypes.c_uint(hw.id), ctypes.c_uint64(r.base),
                          ctypes.c_uint64(r.end))
        self.rec.emit(S.K_UNLOCK, "setup_hwdom_rmrr", "setup_hwdom_rmrr", "pcidevs_lock", None)
        self.leave(None)
        self.enter("iommu_flush_all")
        self.leave(self.call(lib.xenc_op_flush_all))
        for u in p.iommus:
            self.rec.emit(S.K_TRANSLATION_ENABLE, "intel_iommu_hwdom_init", "intel_iommu_hwdom_init", u.id)
        self.leave(None)
        self.leave(None)
        self.rec.emit(S.K_OP_END, "", "", 0)

    def run_ops(self) -> list[int]:
        rcs = []
        hw = next(d for d in self.platform.domains if d.hardware)
        for op in self.platform.ops:
            self.rec.op = op.index
            assert op.device is not None
            seg, bus, devfn = parse_bdf(op.device)
            target = op.to if op.do == "assign" else None
            self.rec.emit(S.K_OP_BEGIN, "", "", op.do, (bus << 8) | devfn,
                          self.domains[target] if target else None, seg)
            if op.do == "quarantine":      # `xl pci-assignable-add` with quarantine: to dom_io
                target = "dom_io"
            idx = self.pdev_index.get((seg, bus, devfn))
            self.cur_device = op.device
            owner = self.owner_shadow.get(idx, -1) if idx is not None else -1
            if idx is None:
                rc = -S_ENODEV
            elif op.do == "remove":
                rc = self._remove(idx, seg, bus, devfn)
            elif op.do in ("assign", "quarantine"):
                rc = self._assign(idx, owner, self.domains[target or ""], hw.id, seg, bus, devfn, op.relaxed)
            else:
                rc = self._deassign(idx, owner, hw.id, seg, bus, devfn)
            self.cur_device = None
            self.rec.emit(S.K_OP_END, "", "", rc)
            rcs.append(rc)
        return rcs

    def _assign(self, idx: int, owner: int, domid: int, hw: int, seg: int, bus: int, devfn: int,
                relaxed: bool) -> int:
        if domid == hw:
            self.rec.emit(S.K_LOG, "", "", "err", f"d{hw}: self-assignment of "
                          f"{seg:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7} refused")
            return -22
        if owner not in (hw, DOMID_IO):
            return -16
        self.rec.emit(S.K_LOCK, "", "", "pcidevs_lock", None)
        self.enter("assign_device", ("domain", domid), ("seg", seg), ("bus", bus), ("devfn", devfn),
                   ("flag", 1 if relaxed else 0))
        # pci.c: a device leaving the hardware domain gets its quarantine tables first
        rc = self._quarantine_dev_init(idx) if owner != DOMID_IO else 0
        if not rc:
            rc = self.call(self.lib.xenc_op_assign_all, ctypes.c_int(idx), ctypes.c_uint(domid),
                           ctypes.c_uint(1 if relaxed else 0))     # with its phantom functions
        if not rc and domid == DOMID_IO:
            self.quarantined.add(idx)
        self.leave(rc)
        self.rec.emit(S.K_UNLOCK, "", "", "pcidevs_lock", None)
        return rc

    def _deassign(self, idx: int, owner: int, hw: int, seg: int, bus: int, devfn: int) -> int:
        if owner < 0:
            return -S_ENODEV
        if owner == hw:
            return -22
        self.rec.emit(S.K_LOCK, "", "", "pcidevs_lock", None)
        self.enter("deassign_device", ("domain", owner), ("seg", seg), ("bus", bus), ("devfn", devfn))
        # pci.c: with quarantine (or a device that was quarantined) to dom_io,
        # its quarantine tables (re)initialised first; else, and from dom_io,
        # back to the hardware domain
        target, rc = hw, 0
        if (idx in self.quarantined or self.platform.knobs.quarantine) and owner != DOMID_IO:
            target, rc = DOMID_IO, self._quarantine_dev_init(idx)
        if not rc:
            rc = self.call(self.lib.xenc_op_reassign_all, ctypes.c_int(idx), ctypes.c_uint(owner),
                           ctypes.c_uint(target))     # phantom functions first, as pci.c does
        if not rc and self.owner_shadow[idx] == hw:
            self.quarantined.discard(idx)
        self.leave(rc)
        self.rec.emit(S.K_UNLOCK, "", "", "pcidevs_lock", None)
        return rc

    def _remove(self, idx: int, seg: int, bus: int, devfn: int) -> int:
        """pci_remove_device() (hot-unplug): the VT-d code lets go of the
        device -- its context entry, its RMRRs' identity maps, its quarantine
        tables and pseudo domain ID -- and the PCI layer frees it."""
        self.enter("pci_remove_device", ("seg", seg), ("bus", bus), ("devfn", devfn))
        self.rec.emit(S.K_LOCK, "pci_remove_device", "pci_remove_device", "pcidevs_lock", None)
        rc = self.call(self.lib.xenc_op_remove, ctypes.c_int(idx))
        self.rec.emit(S.K_DEVICE_REMOVE, "pci_remove_device", "pci_remove_device", seg, (bus << 8) | devfn)
        del self.pdev_index[(seg, bus, devfn)]
        del self.owner_shadow[idx]
        self.quarantined.discard(idx)
        self.rec.emit(S.K_UNLOCK, "pci_remove_device", "pci_remove_device", "pcidevs_lock", None)
        self.leave(rc)
        return rc

    def _quarantine_dev_init(self, idx: int) -> int:
        """iommu_quarantine_dev_init(): the unit's quarantine_init hook
        (nothing when quarantine is off; no such call before the series)."""
        if not self.per_device_quarantine:
            return 0
        self.enter("iommu_quarantine_dev_init", ("dev", self.cur_device))
        rc = self.call(self.lib.xenc_op_quarantine_init, ctypes.c_int(idx))
        self.leave(rc)
        return rc


S_ENODEV = 19


def _fresh_library(path: Path) -> ctypes.CDLL:
    """The library's globals are the machine (memory, units, domains, the
    tree's own file-scope variables), and the dynamic loader hands out one
    instance per file: every run loads its own copy, so a second run in the
    same process starts from a clean machine."""
    with tempfile.TemporaryDirectory(prefix="xenc-run-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        try:
            return ctypes.CDLL(str(copy), mode=ctypes.RTLD_LOCAL)   # stays mapped after the unlink
        except OSError as exc:
            raise CodeFailure(f"cannot load the build of the tree: {exc}") from exc


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _printk_level(text: str) -> tuple[str, str]:
    """Xen's "<N>" level prefix (XENLOG_*), then the message."""
    level = "info"
    while text.startswith("<") and len(text) > 2 and text[2] == ">":
        level = _PRINTK_LEVEL.get(text[1], level)
        text = text[3:]
    return level, text.rstrip("\n")


def run(built: Built, platform: Platform, sink: Sink, tree: XenTree | None = None) -> RunResult:
    """Boot and every op of the scenario through the real code."""
    missing = unsupported_features(platform, tree)
    if missing:
        raise Unsupported("the xen-c engine does not support " + ", ".join(missing) + " yet")
    eng = XencEngine(built, platform, sink, tree)
    eng.setup()
    eng.boot()
    rcs = eng.run_ops()
    return RunResult(eng.rec.seq, rcs)
