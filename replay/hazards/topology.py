"""What the analysers need to know about the platform, computed from the
trace header alone (``header["platform"]``, tracer/platform.py
``Platform.to_header``) -- never from the engine, so a trace recorded by
another tool analyses the same.

* the DRHD unit of each device (``acpi_find_matched_drhd_unit``: an explicit
  device scope naming the device or a bridge above it, else the segment's
  INCLUDE_PCI_ALL unit);
* ``RIDs(pdev)`` (docs/MODEL.md#rids): its own (bus, devfn), its phantom
  functions, for conventional PCI behind a PCIe-to-PCI or legacy bridge the
  topmost bridge's (bus, devfn) and, for PCIe-to-PCI, (secbus, 0); for a WLAN
  device matching the ME quirk (vtd/quirks.c), the ME's phantom function
  0:3.7 / 0:22.7 on the ME's unit;
* which device a requester ID belongs to (findings are grouped by device);
* RMRR ranges per device, domain names.

The header is untrusted input: malformed entries are skipped, never fatal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

from replay.caches import Key
from tracer.platform import CTG_WLAN, ILK_CPT_WLAN, IS_CPT, IS_CTG, IS_ILK, fmt_bdf, try_parse_bdf
from tracer.schema import DOMID_COW, DOMID_INVALID, DOMID_IO, DOMID_XEN

BRIDGES = ("pcie2pci-bridge", "legacy-pci-bridge")
SPECIAL = {DOMID_IO: "dom_io", DOMID_XEN: "dom_xen", DOMID_COW: "dom_cow"}

IS_ILK_CPT = IS_ILK | IS_CPT


fmt_rid = fmt_bdf
parse_bdf = try_parse_bdf   # the header is untrusted: None when malformed


# (segment, bus, devfn) of a device
Loc = tuple[int, int, int]
# an RMRR's [base, end], inclusive bytes
Range = tuple[int, int]


def _int(v: object, default: int | None = None) -> int | None:
    return v if type(v) is int else default


class Unit(NamedTuple):
    """A DRHD unit of the header: its id, segment, INCLUDE_PCI_ALL flag and
    device scope (BDF strings)."""

    id: int
    segment: int
    include_all: bool
    scope: frozenset[str]


class Device:
    __slots__ = ("bdf", "loc", "type", "id32", "stride", "secondary", "subordinate", "unit", "rids",
                 "rmrrs")

    def __init__(self, bdf: str, loc: Loc, type_: object, id32: int, stride: int, secondary: int | None,
                 subordinate: int | None) -> None:
        self.bdf = bdf
        self.loc = loc
        self.type = type_
        self.id32 = id32
        self.stride = stride
        self.secondary = secondary
        self.subordinate = subordinate
        self.unit: int | None = None
        self.rids: tuple[Key, ...] = ()     # own first
        self.rmrrs: tuple[Range, ...] = ()


class Topology:
    def __init__(self, header: object) -> None:
        plat = header.get("platform") if isinstance(header, dict) else None
        if not isinstance(plat, dict):
            plat = {}

        # --- domains
        self.names: dict[int, str] = {}
        self.hardware = None
        for row in plat.get("domains") or ():
            if isinstance(row, (list, tuple)) and len(row) >= 2 and type(row[0]) is int \
                    and isinstance(row[1], str):
                self.names[row[0]] = row[1]
                if len(row) > 2 and row[2] is True and self.hardware is None:
                    self.hardware = row[0]

        # --- DRHD units
        self.units: list[Unit] = []
        for u in plat.get("iommus") or ():
            if isinstance(u, dict) and type(u.get("id")) is int:
                scope = u["devices"] if isinstance(u.get("devices"), list) else []
                seg = u.get("segment")
                self.units.append(Unit(u["id"], seg if type(seg) is int else 0, u.get("include_all") is True,
                                       frozenset(b for b in scope if isinstance(b, str))))
        self.segment = {u.id: u.segment for u in self.units}

        # --- devices
        self.devices: list[Device] = []
        self.by_loc: dict[Loc, Device] = {}
        for d in plat.get("devices") or ():
            if not isinstance(d, dict):
                continue
            loc = parse_bdf(d.get("bdf"))
            if loc is None or loc in self.by_loc:
                continue
            id32 = 0
            ids = d.get("id")
            if isinstance(ids, str) and ":" in ids:
                try:
                    v, dv = ids.split(":")
                    id32 = (int(dv, 16) << 16) | int(v, 16)
                except ValueError:
                    id32 = 0
            stride = d.get("phantom_stride")
            sec = _int(d.get("secondary"))
            sub = _int(d.get("subordinate"), sec)
            dev = Device(fmt_rid(*loc), loc, d.get("type"), id32, stride if type(stride) is int and stride > 0 else 0,
                         sec, sub)
            self.devices.append(dev)
            self.by_loc[loc] = dev
        # bus2bridge as Xen's alloc_pdev() fills it (later bridges overwrite).
        self.bus2bridge: dict[tuple[int, int], tuple[int, int]] = {}
        for dev in self.devices:
            if dev.type in BRIDGES and dev.secondary is not None:
                sub = dev.subordinate if dev.subordinate is not None else dev.secondary
                for b in range(max(dev.secondary, 0), min(sub, 255) + 1):
                    self.bus2bridge[(dev.loc[0], b)] = dev.loc[1:]
        for dev in self.devices:
            dev.unit = self.drhd(*dev.loc)

        # --- RMRRs
        self.rmrrs: list[Range] = []
        per_dev: dict[Loc, list[Range]] = {}
        for r in plat.get("rmrrs") or ():
            if not isinstance(r, dict) or type(r.get("base")) is not int or type(r.get("end")) is not int:
                continue
            rng = (r["base"], r["end"])
            self.rmrrs.append(rng)
            for b in r.get("devices") or ():
                loc = parse_bdf(b)
                if loc is not None:
                    per_dev.setdefault(loc, []).append(rng)
        for loc, rngs in per_dev.items():
            rdev = self.by_loc.get(loc)
            if rdev is not None:
                rdev.rmrrs = tuple(sorted(set(rngs)))

        # --- requester IDs
        self.rid_owner: dict[Key, Device] = {}      # requester ID -> device it belongs to
        self._me = self._me_quirk()
        for dev in self.devices:
            dev.rids = tuple(self._rids(dev))
        for dev in self.devices:
            if dev.unit is not None:
                self.rid_owner[(dev.unit, dev.loc[1], dev.loc[2])] = dev
        for dev in self.devices:
            for key in dev.rids:
                self.rid_owner.setdefault(key, self._alias_owner(dev, key))

    # --- names ------------------------------------------------------------------

    def domain_name(self, domid: int | None) -> str | None:
        if domid is None or domid == DOMID_INVALID:
            return None
        name = self.names.get(domid)
        if name is not None:
            return name
        if domid in SPECIAL:
            return SPECIAL[domid]
        return f"d{domid}"

    def rid(self, iommu: int, bus: int, devfn: int) -> str:
        return fmt_rid(self.segment.get(iommu, 0), bus, devfn)

    def key_str(self, key: Key) -> str:
        return self.rid(*key)

    def device_of(self, key: Key) -> str | None:
        dev = self.rid_owner.get(key)
        return dev.bdf if dev is not None else None

    def devices_str(self, keys: Iterable[Key]) -> str:
        """'0000:00:16.0, 0000:00:17.0' -- the devices behind requester IDs,
        each once (RIDs no declared device owns by their own number)."""
        seen = []
        for key in keys:
            name = self.device_of(key) or self.key_str(key)
            if name not in seen:
                seen.append(name)
        return ", ".join(sorted(seen))

    # --- Xen lookups ---------------------------------------------------------------

    def drhd(self, seg: int, bus: int, devfn: int) -> int | None:
        """acpi_find_matched_drhd_unit for a device at (seg, bus, devfn)."""
        chain = [fmt_rid(seg, bus, devfn)]
        b, seen = bus, 0
        while (seg, b) in self.bus2bridge and seen < 256:
            bb, bdf = self.bus2bridge[(seg, b)]
            chain.append(fmt_rid(seg, bb, bdf))
            b = bb
            seen += 1
        for u in self.units:
            if any(x in u.scope for x in chain):
                return u.id
        for u in self.units:
            if u.segment == seg and u.include_all:
                return u.id
        return None

    def upstream_bridge(self, seg: int, bus: int) -> tuple[tuple[int, int], int] | None:
        """find_upstream_bridge: ((bridge bus, bridge devfn), secbus) of the
        topmost bridge above bus, or None."""
        if bus == 0 or (seg, bus) not in self.bus2bridge:
            return None
        secbus, n = bus, 0
        loc = self.bus2bridge[(seg, bus)]
        while (seg, bus) in self.bus2bridge and n <= 256:
            secbus = bus
            loc = self.bus2bridge[(seg, bus)]
            bus = loc[0]
            n += 1
        return loc, secbus

    def _me_quirk(self) -> tuple[frozenset[int], int] | None:
        """(WLAN id set, ME device number) when me_wifi_quirk() can fire on this
        platform, else None."""
        host = self.by_loc.get((0, 0, 0))
        if host is None:
            return None
        if host.id32 in IS_CTG and (0, 0, 3 << 3) in self.by_loc:
            return CTG_WLAN, 3
        if host.id32 in IS_ILK_CPT and (0, 0, 22 << 3) in self.by_loc:
            return ILK_CPT_WLAN, 22
        return None

    def _rids(self, dev: Device) -> Iterator[Key]:
        seg, bus, devfn = dev.loc
        u = dev.unit
        if u is None:
            return
        yield (u, bus, devfn)
        if dev.stride:
            fn = devfn + dev.stride
            while fn >> 3 == devfn >> 3 and fn <= 0xFF:
                yield (u, bus, fn)
                fn += dev.stride
        if dev.type == "pci":
            up = self.upstream_bridge(seg, bus)
            if up is not None:
                (bbus, bdevfn), secbus = up
                yield (u, bbus, bdevfn)
                top = self.by_loc.get((seg, bbus, bdevfn))
                if top is not None and top.type == "pcie2pci-bridge" and (secbus != bus or devfn != 0):
                    yield (u, secbus, 0)
        if self._me is not None and seg == 0 and dev.id32 in self._me[0]:
            me = self._me[1]
            mu = self.drhd(0, 0, me << 3)
            if mu is not None:
                yield (mu, 0, (me << 3) | 7)

    def _alias_owner(self, dev: Device, key: Key) -> Device:
        """The device a requester ID no device owns by number belongs to: a
        phantom function to its device, the ME phantom to the ME, (secbus, 0)
        to the bridge that uses it for its secondary bus."""
        u, bus, devfn = key
        slot_dev = self.by_loc.get((self.segment.get(u, 0), bus, devfn & 0xF8))
        if slot_dev is not None:
            return slot_dev
        if dev.type == "pci":
            up = self.upstream_bridge(dev.loc[0], dev.loc[1])
            if up is not None:
                br = self.by_loc.get((dev.loc[0],) + up[0])
                if br is not None:
                    return br
        return dev

    # --- RMRR coverage -----------------------------------------------------------

    def rmrr_devices(self) -> list[Device]:
        return [d for d in self.devices if d.rmrrs and d.unit is not None]
