"""Scenario loader: a TOML file (docs/SCENARIOS.md) -> ``Platform``.

Everything that can be checked without running the engine is checked here, so a
bad scenario is refused before any event is recorded.  Every refusal is one
``ScenarioError`` whose text is one line ``<file>: <key>: <what was expected>``;
``<key>`` is a dotted path with 1-based table indices (``device[2].bdf``), so
``op[n]`` is op n of the trace.  The first problem found is reported.

The DRHD lookup (``drhd_for``) follows Xen's ``acpi_find_matched_drhd_unit``:
an explicit device-scope entry wins, then a bridge in some unit's scope claims
the buses behind it, then the segment's INCLUDE_PCI_ALL unit.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, overload

from .hostmem import IOVA_LIMIT
from .platform import (
    BRIDGE_TYPES,
    DEFAULT_ERRNO,
    DEVICE_TYPES,
    ERRNO,
    FAULT_POINTS,
    OP_VERBS,
    Device,
    DmaSource,
    Domain,
    Fault,
    IommuUnit,
    Knobs,
    Op,
    Platform,
    Rmrr,
    fmt_bdf,
    parse_bdf,
)
from .schema import DOMID_FIRST_RESERVED

# The closed key lists of docs/SCENARIOS.md.  `relaxed` on an op is the one addition:
# it is XEN_DOMCTL_DEV_RDM_RELAXED, the only way to assign a device whose RMRR is
# shared (Op.relaxed exists in the platform model for it).
TOP_KEYS = ("name", "description", "platform", "iommu", "device", "rmrr", "domain", "op", "fault", "dma")
PLATFORM_KEYS = ("cx16", "caching_mode", "coherent", "quarantine", "ats", "rwbf", "hwdom_passthrough")
IOMMU_KEYS = ("id", "segment", "include_all", "devices", "nd", "levels")
DEVICE_KEYS = ("bdf", "type", "id", "phantom_stride", "ats", "owner", "present", "secondary", "subordinate")
RMRR_KEYS = ("base", "end", "devices")
DOMAIN_KEYS = ("name", "id", "hardware")
OP_KEYS = ("do", "device", "to", "domain", "relaxed", "cpu")
# Ops name their CPU (default 0); a scenario may use CPUs 0 .. MAX_CPUS - 1.
MAX_CPUS = 8
FAULT_KEYS = ("at", "domain", "device", "nth", "errno")
DMA_KEYS = ("name", "device", "target", "access", "at")
DMA_AT_KEYS = ("op", "step")
DMA_ACCESS = ("read", "write")

# Keys each verb needs and the optional ones it accepts besides `do`.
OP_SHAPE = {
    "assign": (("device", "to"), ("relaxed",)),
    "deassign": (("device",), ()),
    "quarantine": (("device",), ("relaxed",)),
    "destroy": (("domain",), ()),
    "add": (("device",), ()),
    "remove": (("device",), ()),
}
assert set(OP_SHAPE) == set(OP_VERBS)

# Names of Xen's special domains: a scenario domain may not take them, because
# traces resolve domids to names and these would be ambiguous.
RESERVED_DOMAIN_NAMES = ("dom_io", "dom_xen", "dom_cow", "dom_idle")

ND_RESERVED = 7          # CAP.ND = 7 is reserved (refused by 4.15's e73ab4e84b)
PHANTOM_STRIDES = (0, 1, 2, 4)
PAGE = 0x1000

# The name ends up in the default output file name (./NAME.ENGINE.vtdt).
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DOMAIN_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_ID_RE = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})$")


class ScenarioError(Exception):
    """A refused scenario.  ``str()`` is the one-line message; the parts are
    kept so a caller can print them its own way (``file`` is the path as given,
    or the shipped file name; ``key`` may be None for file-level problems)."""

    def __init__(self, file: str, key: str | None, expected: str):
        self.file, self.key, self.expected = file, key, " ".join(str(expected).split())
        text = f"{file}: {key}: {self.expected}" if key else f"{file}: {self.expected}"
        super().__init__(text)


# --------------------------------------------------------------------------- lookup

def shipped_dir() -> Path | None:
    """Where the shipped scenarios live: the copy installed in the wheel
    (pyproject force-includes ``traces`` as ``tracer/shipped``), else the
    repository's ``traces/``; None if neither exists."""
    here = Path(__file__).resolve().parent
    for cand in (here / "shipped", here.parent / "traces"):
        if cand.is_dir():
            return cand
    return None


def _natural(path: Path) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.stem)]


def list_shipped() -> list[tuple[str, str]]:
    """[(name, description)] of the shipped scenarios, sorted by name with
    numbers compared as numbers (s2 before s11).  The name is the file stem,
    which is what ``load_scenario`` looks up."""
    d = shipped_dir()
    if d is None:
        return []
    out = []
    for path in sorted(d.glob("*.toml"), key=_natural):
        data = _parse_toml(path, path.name)
        desc = data.get("description", "")
        out.append((path.stem, desc if isinstance(desc, str) else ""))
    return out


def resolve(path_or_name: str | os.PathLike[str]) -> tuple[Path, str]:
    """(file to read, name to report it by).  An existing file wins; otherwise
    a bare name (with or without .toml) is looked up among the shipped ones."""
    given = os.fspath(path_or_name)
    path = Path(given)
    if path.is_file():
        return path, given
    bare = os.sep not in given and (os.altsep is None or os.altsep not in given)
    d = shipped_dir()
    if bare and d is not None:
        stem = given[:-5] if given.endswith(".toml") else given
        cand = d / f"{stem}.toml"
        if stem and cand.is_file():
            return cand, cand.name
    if path.exists():
        raise ScenarioError(given, None, "expected a scenario file, got a directory or special file")
    if not bare:
        raise ScenarioError(given, None, "no such file")
    names = ", ".join(n for n, _ in list_shipped()) or "none"
    raise ScenarioError(given, None, f"no such file, and no shipped scenario of that name (shipped: {names})")


def _parse_toml(path: Path, shown: str) -> dict[str, Any]:
    text = _read_text(path, shown)
    return _loads(text, shown)


def _read_text(path: Path, shown: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(shown, None, f"cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(shown, None,
                            f"expected UTF-8 text, got byte {raw[exc.start]:#04x} at offset {exc.start}") from None


_TOML_POS = re.compile(r"^(.*?)\s*\(at (line \d+, column \d+|end of document)\)$")


# Arrays and inline tables nested deeper than this are refused before
# parsing: tomllib parses them recursively (a RecursionError near 1000
# levels), and no scenario value nests more than three.
MAX_NESTING = 32


def _check_nesting(text: str, shown: str) -> None:
    """Refuse values nested deeper than MAX_NESTING, naming the key and the
    line, in one pass over the text that skips strings and comments."""
    depth = line = 0
    line = 1
    key, key_line = None, 1
    i, n = 0, len(text)
    line_start = 0
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            line_start = i + 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        elif c == '"' or c == "'":
            triple = text.startswith(c * 3, i)
            quote = c * 3 if triple else c
            j = i + len(quote)
            while j < n and not text.startswith(quote, j):
                if c == '"' and text[j] == "\\":
                    j += 1
                elif text[j] == "\n":
                    if not triple:
                        break          # unterminated: tomllib will say so
                    line += 1
                    line_start = j + 1
                j += 1
            i = j + len(quote)
            continue
        elif c == "[" or c == "{":
            if depth == 0:
                before = text[line_start:i]
                key = before.split("=", 1)[0].strip() if "=" in before else None
                key_line = line
            depth += 1
            if depth > MAX_NESTING:
                where = f"{key} (line {key_line})" if key else f"line {line}"
                raise ScenarioError(shown, where, f"expected arrays and inline tables nested at most "
                                                  f"{MAX_NESTING} deep, found deeper nesting at line {line}")
        elif c == "]" or c == "}":
            depth = max(0, depth - 1)
        i += 1


def _loads(text: str, shown: str) -> dict[str, Any]:
    _check_nesting(text, shown)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ScenarioError(shown, None, "expected a scenario, got values nested too deeply to read") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _TOML_POS.match(msg)
        where, what = (m.group(2), m.group(1)) if m else ("TOML", msg)
        raise ScenarioError(shown, where, f"expected valid TOML: {what}") from None


# --------------------------------------------------------------------------- values

def _show(value: object) -> str:
    """A value as the error message shows it (TOML-ish, one line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass
class _Loader:
    file: str

    def fail(self, key: str | None, expected: str) -> NoReturn:
        raise ScenarioError(self.file, key, expected)

    # -- structure ----------------------------------------------------------

    def keys(self, table: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        for k in table:
            if k not in allowed:
                self.fail(f"{where}.{k}" if where else k,
                          f"unknown key{_suggest(k, allowed)}; expected one of {', '.join(allowed)}")

    def array_of_tables(self, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
        value = data.get(key, [])
        if isinstance(value, dict):
            self.fail(key, f"expected an array of tables ([[{key}]]), got a table ([{key}])")
        if not isinstance(value, list):
            self.fail(key, f"expected an array of tables ([[{key}]]), got {_show(value)}")
        for i, item in enumerate(value, 1):
            if not isinstance(item, dict):
                self.fail(f"{key}[{i}]", f"expected a table, got {_show(item)}")
        return value

    # -- scalars -------------------------------------------------------------

    def boolean(self, t: dict[str, Any], where: str, key: str, default: bool) -> bool:
        if key not in t:
            return default
        v = t[key]
        if not isinstance(v, bool):
            self.fail(f"{where}.{key}", f"expected true or false, got {_show(v)}")
        return v

    @overload
    def integer(self, t: dict[str, Any], where: str, key: str, default: int, lo: int, hi: int,
                what: str = "") -> int: ...

    @overload
    def integer(self, t: dict[str, Any], where: str, key: str, default: None, lo: int, hi: int,
                what: str = "") -> int | None: ...

    def integer(self, t: dict[str, Any], where: str, key: str, default: int | None, lo: int, hi: int,
                what: str = "") -> int | None:
        if key not in t:
            return default
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            rng = what or f"an integer in {lo}..{hi}"
            self.fail(f"{where}.{key}", f"expected {rng}, got {_show(v)}")
        return v

    @overload
    def string(self, t: dict[str, Any], where: str, key: str, default: str) -> str: ...

    @overload
    def string(self, t: dict[str, Any], where: str, key: str, default: None = None) -> str | None: ...

    def string(self, t: dict[str, Any], where: str, key: str, default: str | None = None) -> str | None:
        if key not in t:
            return default
        v = t[key]
        if not isinstance(v, str):
            self.fail(f"{where}.{key}" if where else key, f"expected a string, got {_show(v)}")
        return v

    def required(self, t: dict[str, Any], where: str, key: str, expected: str) -> None:
        if key not in t:
            self.fail(f"{where}.{key}", f"missing; expected {expected}")

    # For a key the caller made sure is there (required(), or `key in t`).
    def present_string(self, t: dict[str, Any], where: str, key: str) -> str:
        v = self.string(t, where, key)
        assert v is not None
        return v

    def present_integer(self, t: dict[str, Any], where: str, key: str, lo: int, hi: int, what: str = "") -> int:
        v = self.integer(t, where, key, None, lo, hi, what)
        assert v is not None
        return v

    def bdf(self, value: object, key: str) -> tuple[str, int, int, int]:
        """A BDF -> (canonical lowercase text, seg, bus, devfn)."""
        try:
            seg, bus, devfn = parse_bdf(value)
        except ValueError as exc:
            self.fail(key, str(exc) if isinstance(value, str) else
                      f"expected a BDF like 0000:00:14.0, got {_show(value)}")
        return fmt_bdf(seg, bus, devfn), seg, bus, devfn

    def bdf_list(self, t: dict[str, Any], where: str, key: str) -> list[tuple[str, int, int, int]]:
        v = t.get(key, [])
        if not isinstance(v, list):
            self.fail(f"{where}.{key}", f"expected an array of BDF strings, got {_show(v)}")
        return [self.bdf(x, f"{where}.{key}[{i}]") for i, x in enumerate(v, 1)]


def _known(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


# --------------------------------------------------------------------------- DRHD

def _bus_range(bridge: Device) -> tuple[int, int]:
    """(secondary, subordinate) of a bridge; the loader sets both on every bridge."""
    assert bridge.secondary is not None and bridge.subordinate is not None
    return bridge.secondary, bridge.subordinate


def _bridge_for_bus(devices: list[Device], seg: int, bus: int) -> Device | None:
    """The innermost declared bridge whose secondary..subordinate holds `bus`
    (Xen's bus2bridge[] entry; nested ranges are checked by the loader)."""
    best = None
    best_width = 0
    for d in devices:
        if d.seg != seg or d.type not in BRIDGE_TYPES:
            continue
        sec, sub = _bus_range(d)
        if sec <= bus <= sub and (best is None or sub - sec < best_width):
            best, best_width = d, sub - sec
    return best


def drhd_for(platform: Platform, seg: int, bus: int, devfn: int) -> IommuUnit | None:
    """The IOMMU unit translating requests from (seg, bus, devfn), as
    acpi_find_matched_drhd_unit picks it: explicit device scope, else the unit
    whose scope holds the bridge the bus sits behind, else INCLUDE_PCI_ALL."""
    return _drhd(platform.iommus, platform.devices, seg, bus, devfn)


def _drhd(iommus: list[IommuUnit], devices: list[Device], seg: int, bus: int, devfn: int) -> IommuUnit | None:
    bdf = fmt_bdf(seg, bus, devfn)
    for unit in iommus:
        if unit.segment == seg and bdf in unit.devices:
            return unit
    seen = set()
    b = bus
    while (bridge := _bridge_for_bus(devices, seg, b)) is not None and bridge.bdf not in seen:
        seen.add(bridge.bdf)
        for unit in iommus:
            if unit.segment == seg and bridge.bdf in unit.devices:
                return unit
        b = bridge.bus
    for unit in iommus:
        if unit.segment == seg and unit.include_all:
            return unit
    return None


# --------------------------------------------------------------------------- loader

def load_scenario(path_or_name: str | os.PathLike[str]) -> Platform:
    """Load and validate a scenario file, or a shipped scenario by name."""
    path, shown = resolve(path_or_name)
    text = _read_text(path, shown)
    data = _loads(text, shown)
    try:
        platform = _build(_Loader(shown), data, path.stem)
    except RecursionError:
        raise ScenarioError(shown, None, "expected a scenario, got values nested too deeply to read") from None
    platform.source_name = path.name
    platform.source_text = text
    return platform


def loads_scenario(text: str, file: str = "<string>") -> Platform:
    """Validate scenario text that is not in a file (tests, generators);
    ``file`` names it in messages and becomes ``source_name``."""
    data = _loads(text, file)
    try:
        platform = _build(_Loader(file), data, Path(file).stem)
    except RecursionError:
        raise ScenarioError(file, None, "expected a scenario, got values nested too deeply to read") from None
    platform.source_name = Path(file).name
    platform.source_text = text
    return platform


def _build(ld: _Loader, data: dict[str, Any], stem: str) -> Platform:
    ld.keys(data, "", TOP_KEYS)

    name = ld.string(data, "", "name", stem)
    if not _NAME_RE.match(name):
        origin = "" if "name" in data else " (taken from the file name; set name = \"...\")"
        ld.fail("name", f"expected letters, digits, '.', '_' or '-' (it names the output file), got {name!r}{origin}")
    description = ld.string(data, "", "description", "")
    if "\n" in description or "\r" in description:
        ld.fail("description", "expected one line")

    knobs = _knobs(ld, data)
    domains = _domains(ld, data)
    hwdom = next(d for d in domains if d.hardware)
    iommus = _iommus(ld, data)
    devices = _devices(ld, data, domains, hwdom)
    _bridges(ld, devices)
    _scopes(ld, iommus, devices)
    for i, dev in enumerate(devices, 1):
        if _drhd(iommus, devices, dev.seg, dev.bus, dev.devfn) is None:
            ld.fail(f"device[{i}].bdf",
                    f"{dev.bdf} is on no IOMMU; expected an [[iommu]] in segment {dev.seg:04x} "
                    "with include_all = true, or one listing it (or its bridge) in devices")
    rmrrs = _rmrrs(ld, data, devices)
    ops = _ops(ld, data, domains, hwdom, devices)
    faults = _faults(ld, data, domains, devices)
    dma = _dma(ld, data, devices, rmrrs, len(ops))

    return Platform(name=name, description=description, knobs=knobs, iommus=iommus,
                    devices=devices, rmrrs=rmrrs, domains=domains, ops=ops, faults=faults, dma=dma)


def _knobs(ld: _Loader, data: dict[str, Any]) -> Knobs:
    t = data.get("platform", {})
    if not isinstance(t, dict):
        ld.fail("platform", f"expected a table ([platform]), got {_show(t)}")
    ld.keys(t, "platform", PLATFORM_KEYS)
    k = Knobs()
    for key in PLATFORM_KEYS:
        setattr(k, key, ld.boolean(t, "platform", key, getattr(k, key)))
    k.cx16_source = "scenario" if "cx16" in t else "default"
    return k


def _domains(ld: _Loader, data: dict[str, Any]) -> list[Domain]:
    out: list[Domain] = []
    for i, t in enumerate(ld.array_of_tables(data, "domain"), 1):
        w = f"domain[{i}]"
        ld.keys(t, w, DOMAIN_KEYS)
        ld.required(t, w, "name", "the domain's name")
        ld.required(t, w, "id", "its domid")
        name = ld.present_string(t, w, "name")
        if name in RESERVED_DOMAIN_NAMES:
            ld.fail(f"{w}.name", f"{name!r} is one of Xen's special domains; expected another name")
        if not _DOMAIN_NAME_RE.match(name):
            ld.fail(f"{w}.name", f"expected a name of letters, digits, '_', '.' or '-', got {name!r}")
        domid = ld.present_integer(t, w, "id", 0, DOMID_FIRST_RESERVED - 1,
                           f"a domid in 0..{DOMID_FIRST_RESERVED - 1:#x} (0x7ff0 and up are reserved)")
        hardware = ld.boolean(t, w, "hardware", False)
        for j, other in enumerate(out, 1):
            if other.name == name:
                ld.fail(f"{w}.name", f"duplicate domain name {name!r} (also domain[{j}])")
            if other.id == domid:
                ld.fail(f"{w}.id", f"duplicate domid {domid} (also domain[{j}] {other.name!r})")
        if hardware and domid != 0:
            # Xen's hardware domain is d0 (no late hwdom is modelled).
            ld.fail(f"{w}.id", f"expected 0 for the hardware domain, got {domid}")
        if hardware and any(d.hardware for d in out):
            ld.fail(f"{w}.hardware", "expected exactly one hardware domain; "
                    f"{next(d.name for d in out if d.hardware)!r} already is")
        out.append(Domain(name=name, id=domid, hardware=hardware))
    if not any(d.hardware for d in out):
        ld.fail("domain", "expected a hardware domain ([[domain]] with hardware = true and id = 0)")
    return out


def _iommus(ld: _Loader, data: dict[str, Any]) -> list[IommuUnit]:
    out: list[IommuUnit] = []
    tables = ld.array_of_tables(data, "iommu")
    if not tables:
        ld.fail("iommu", "expected at least one [[iommu]] (a DRHD unit)")
    for i, t in enumerate(tables, 1):
        w = f"iommu[{i}]"
        ld.keys(t, w, IOMMU_KEYS)
        uid = ld.integer(t, w, "id", i - 1, 0, 0xFFFF)
        seg = ld.integer(t, w, "segment", 0, 0, 0xFFFF)
        include_all = ld.boolean(t, w, "include_all", False)
        scope = ld.bdf_list(t, w, "devices")
        nd = ld.integer(t, w, "nd", 2, 0, ND_RESERVED - 1,
                        "the CAP.ND field 0..6 (7 is reserved)")
        levels = ld.integer(t, w, "levels", 4, 2, 4, "2, 3 or 4 page-table levels")
        if include_all and scope:
            ld.fail(f"{w}.devices", "expected no devices on an include_all unit (it covers the whole segment)")
        if not include_all and not scope:
            ld.fail(f"{w}", "expected include_all = true or a non-empty devices list")
        for j, other in enumerate(out, 1):
            if other.id == uid:
                ld.fail(f"{w}.id", f"duplicate IOMMU id {uid} (also iommu[{j}])")
            if include_all and other.include_all and other.segment == seg:
                ld.fail(f"{w}.include_all", f"expected at most one include_all unit per segment; "
                        f"iommu[{j}] already covers segment {seg:04x}")
        for k, (bdf, bseg, _, _) in enumerate(scope, 1):
            if bseg != seg:
                ld.fail(f"{w}.devices[{k}]", f"expected a device in the unit's segment {seg:04x}, got {bdf!r}")
            if [s[0] for s in scope].index(bdf) != k - 1:
                ld.fail(f"{w}.devices[{k}]", f"duplicate device {bdf!r}")
        out.append(IommuUnit(id=uid, segment=seg, include_all=include_all,
                             devices=[s[0] for s in scope], nd=nd, levels=levels))
    return out


def _devices(ld: _Loader, data: dict[str, Any], domains: list[Domain], hwdom: Domain) -> list[Device]:
    out: list[Device] = []
    owners = [d.name for d in domains] + ["dom_io"]
    for i, t in enumerate(ld.array_of_tables(data, "device"), 1):
        w = f"device[{i}]"
        ld.keys(t, w, DEVICE_KEYS)
        ld.required(t, w, "bdf", "a BDF like 0000:00:14.0")
        ld.required(t, w, "type", f"one of {', '.join(DEVICE_TYPES)}")
        bdf, seg, bus, devfn = ld.bdf(t["bdf"], f"{w}.bdf")
        for j, other in enumerate(out, 1):
            if other.bdf == bdf:
                ld.fail(f"{w}.bdf", f"duplicate device {bdf!r} (also device[{j}])")
        dtype = ld.present_string(t, w, "type")
        if dtype not in DEVICE_TYPES:
            ld.fail(f"{w}.type",
                    f"expected one of {', '.join(DEVICE_TYPES)}, got {dtype!r}{_suggest(dtype, DEVICE_TYPES)}")
        vendor, device = 0x8086, 0
        if "id" in t:
            ident = ld.present_string(t, w, "id")
            m = _ID_RE.match(ident)
            if not m:
                ld.fail(f"{w}.id", f"expected vendor:device in hex like 8086:a12f, got {ident!r}")
            vendor, device = int(m.group(1), 16), int(m.group(2), 16)
            if vendor == 0xFFFF:
                ld.fail(f"{w}.id", "expected a real vendor id (ffff reads as 'no device')")
        stride = ld.integer(t, w, "phantom_stride", 0, 0, 4, "a phantom stride of 0, 1, 2 or 4")
        if stride not in PHANTOM_STRIDES:
            ld.fail(f"{w}.phantom_stride", f"expected a phantom stride of 0, 1, 2 or 4, got {stride}")
        if stride and dtype != "pcie-endpoint":
            # alloc_pdev() reads the phantom-function capability of PCIe endpoints only.
            ld.fail(f"{w}.phantom_stride", f"expected 0 for a {dtype} (only a pcie-endpoint has phantom functions)")
        if stride and (devfn & 7) >= stride:
            # alloc_pdev() drops the stride in that case; refuse rather than ignore.
            ld.fail(f"{w}.phantom_stride",
                    f"expected a function number below the stride {stride}, got function {devfn & 7}")
        ats = ld.boolean(t, w, "ats", False)
        present = ld.boolean(t, w, "present", True)
        owner = ld.string(t, w, "owner", hwdom.name)
        if owner not in owners:
            ld.fail(f"{w}.owner", f"unknown domain {owner!r} (known: {_known(owners)})")
        if not present and owner != hwdom.name:
            # pci_add_device() hands a new device to the hardware domain.
            ld.fail(f"{w}.owner", f"expected the hardware domain {hwdom.name!r} for a device that is "
                    f"added later (present = false), got {owner!r}")
        secondary: int | None = None
        subordinate: int | None = None
        if dtype in BRIDGE_TYPES:
            ld.required(t, w, "secondary", "the bridge's secondary bus number")
            secondary = ld.present_integer(t, w, "secondary", 0, 0xFF, "a bus number 0..255 (0xff max)")
            if secondary <= bus:
                ld.fail(f"{w}.secondary",
                        f"expected a bus number above the bridge's own bus {bus:#04x}, got {secondary:#04x}")
            subordinate = ld.integer(t, w, "subordinate", secondary, secondary, 0xFF,
                                     f"a bus number in secondary..255 ({secondary:#04x}..0xff)")
        else:
            for key in ("secondary", "subordinate"):
                if key in t:
                    ld.fail(f"{w}.{key}", f"expected only on a bridge ({', '.join(BRIDGE_TYPES)}), not on a {dtype}")
        out.append(Device(bdf=bdf, seg=seg, bus=bus, devfn=devfn, type=dtype, vendor=vendor,
                          device=device, phantom_stride=stride, ats=ats, owner=owner,
                          present=present, secondary=secondary, subordinate=subordinate))
    # A phantom requester ID that is also a real device would be ambiguous
    # (pci_get_real_pdev() would pick the real one).
    by_bdf = {d.bdf: j for j, d in enumerate(out, 1)}
    for i, dev in enumerate(out, 1):
        fn = dev.devfn
        while dev.phantom_stride and ((fn + dev.phantom_stride) >> 3) == (dev.devfn >> 3):
            fn += dev.phantom_stride
            rid = fmt_bdf(dev.seg, dev.bus, fn)
            if rid in by_bdf:
                ld.fail(f"device[{i}].phantom_stride",
                        f"phantom function {rid} is also device[{by_bdf[rid]}]; expected a free function")
    return out


def _scopes(ld: _Loader, iommus: list[IommuUnit], devices: list[Device]) -> None:
    """DRHD device scopes name declared devices, each in one unit only."""
    known = [d.bdf for d in devices]
    claimed: dict[str, int] = {}
    for i, unit in enumerate(iommus, 1):
        for k, bdf in enumerate(unit.devices, 1):
            if bdf not in known:
                ld.fail(f"iommu[{i}].devices[{k}]", f"unknown device {bdf!r} (known: {_known(known)})")
            if bdf in claimed:
                ld.fail(f"iommu[{i}].devices[{k}]", f"{bdf} is already in the scope of iommu[{claimed[bdf]}]; "
                        "expected each device in one DRHD")
            claimed[bdf] = i


def _bridges(ld: _Loader, devices: list[Device]) -> None:
    """Bridge bus ranges nest or are disjoint, as a real PCI hierarchy's do."""
    idx = {id(d): i for i, d in enumerate(devices, 1)}
    bridges = [d for d in devices if d.type in BRIDGE_TYPES]
    for a_pos, a in enumerate(bridges):
        a_sec, a_sub = _bus_range(a)
        for b in bridges[:a_pos]:
            b_sec, b_sub = _bus_range(b)
            if a.seg != b.seg or a_sub < b_sec or b_sub < a_sec:
                continue
            a_in_b = b_sec <= a.bus <= b_sub and b_sec <= a_sec and a_sub <= b_sub
            b_in_a = a_sec <= b.bus <= a_sub and a_sec <= b_sec and b_sub <= a_sub
            if not (a_in_b or b_in_a):
                ld.fail(f"device[{idx[id(a)]}].secondary",
                        f"buses {a_sec:#04x}..{a_sub:#04x} overlap device[{idx[id(b)]}]'s "
                        f"{b_sec:#04x}..{b_sub:#04x}; expected disjoint or nested bridge ranges")


def _rmrrs(ld: _Loader, data: dict[str, Any], devices: list[Device]) -> list[Rmrr]:
    out: list[Rmrr] = []
    known = [d.bdf for d in devices]
    for i, t in enumerate(ld.array_of_tables(data, "rmrr"), 1):
        w = f"rmrr[{i}]"
        ld.keys(t, w, RMRR_KEYS)
        ld.required(t, w, "base", "the first byte's address (4 KiB aligned)")
        ld.required(t, w, "end", "the last byte's address, inclusive (end + 1 4 KiB aligned)")
        base = ld.present_integer(t, w, "base", 0, (1 << 63) - 1, "an address (integer)")
        end = ld.present_integer(t, w, "end", 0, (1 << 63) - 1, "an address (integer)")
        if base % PAGE:
            ld.fail(f"{w}.base", f"expected a 4 KiB aligned address, got {base:#x}")
        if (end + 1) % PAGE:
            ld.fail(f"{w}.end", f"expected the last byte of a 4 KiB page (end + 1 aligned), got {end:#x}")
        if end < base:
            ld.fail(f"{w}.end", f"expected end >= base {base:#x}, got {end:#x}")
        scope = ld.bdf_list(t, w, "devices")
        if not scope:
            # Xen ignores an RMRR with an empty scope; a scenario means something by it.
            ld.fail(f"{w}.devices", "expected at least one device")
        seg = scope[0][1]
        for k, (bdf, bseg, _, _) in enumerate(scope, 1):
            if bdf not in known:
                ld.fail(f"{w}.devices[{k}]", f"unknown device {bdf!r} (known: {_known(known)})")
            if bseg != seg:
                ld.fail(f"{w}.devices[{k}]",
                        f"expected a device in segment {seg:04x} (an RMRR has one segment), got {bdf!r}")
            if [s[0] for s in scope].index(bdf) != k - 1:
                ld.fail(f"{w}.devices[{k}]", f"duplicate device {bdf!r}")
        # acpi_parse_one_rmrr() refuses overlaps across all segments (-EEXIST).
        for j, other in enumerate(out, 1):
            if base <= other.end and other.base <= end:
                ld.fail(w, f"[{base:#x}, {end:#x}] overlaps rmrr[{j}] [{other.base:#x}, {other.end:#x}]; "
                        "expected disjoint RMRRs")
        out.append(Rmrr(base=base, end=end, segment=seg, devices=[s[0] for s in scope]))
    return out


def _ops(ld: _Loader, data: dict[str, Any], domains: list[Domain], hwdom: Domain,
         devices: list[Device]) -> list[Op]:
    out: list[Op] = []
    names = [d.name for d in domains]
    known = [d.bdf for d in devices]
    present = {d.bdf for d in devices if d.present}
    destroyed: dict[str, int] = {}     # domain name -> op that destroys it
    for i, t in enumerate(ld.array_of_tables(data, "op"), 1):
        w = f"op[{i}]"
        ld.keys(t, w, OP_KEYS)
        ld.required(t, w, "do", f"one of {', '.join(OP_VERBS)}")
        verb = ld.present_string(t, w, "do")
        if verb not in OP_SHAPE:
            ld.fail(f"{w}.do", f"expected one of {', '.join(OP_VERBS)}, got {verb!r}{_suggest(verb, OP_VERBS)}")
        needs, optional = OP_SHAPE[verb]
        for key in needs:
            ld.required(t, w, key, _OP_KEY_MEANING[key])
        for key in t:
            if key not in ("do", "cpu") and key not in needs and key not in optional:
                accepted = ", ".join(("do",) + needs + optional + ("cpu",))
                ld.fail(f"{w}.{key}", f"not used by do = {verb!r}; expected only {accepted}")
        op = Op(index=i, do=verb, relaxed=ld.boolean(t, w, "relaxed", False),
                cpu=ld.integer(t, w, "cpu", 0, 0, MAX_CPUS - 1, f"a CPU number 0..{MAX_CPUS - 1}"))

        if "device" in t:
            bdf = ld.bdf(t["device"], f"{w}.device")[0]
            if bdf not in known:
                ld.fail(f"{w}.device", f"unknown device {bdf!r} (known: {_known(known)})")
            # Presence is followed statically, assuming every add/remove succeeds.
            if verb == "add" and bdf in present:
                ld.fail(f"{w}.device", f"expected a device that is not present at this point "
                        f"(declared with present = false, or removed earlier), got {bdf}")
            if verb != "add" and bdf not in present:
                ld.fail(f"{w}.device", f"expected a device present at this point; {bdf} "
                        "is declared present = false or removed earlier (add it first)")
            if verb == "add":
                present.add(bdf)
            elif verb == "remove":
                present.discard(bdf)
            op.device = bdf

        for key in ("to", "domain"):
            if key not in t:
                continue
            name = ld.present_string(t, w, key)
            if key == "to" and name == "dom_io":
                ld.fail(f"{w}.to", "expected a domain; use do = \"quarantine\" to assign to dom_io")
            if name not in names:
                ld.fail(f"{w}.{key}", f"unknown domain {name!r} (known: {_known(names)})")
            if name in destroyed:
                ld.fail(f"{w}.{key}", f"expected a live domain; {name!r} is destroyed by op[{destroyed[name]}]")
            setattr(op, key, name)

        if verb == "destroy":
            if op.domain == hwdom.name:
                ld.fail(f"{w}.domain", f"expected a guest; the hardware domain {hwdom.name!r} cannot be destroyed")
            assert op.domain is not None   # OP_SHAPE: destroy needs a domain
            destroyed[op.domain] = i
        out.append(op)
    return out


_OP_KEY_MEANING = {
    "device": "the device's BDF",
    "to": "the target domain's name",
    "domain": "the domain's name",
}


def _faults(ld: _Loader, data: dict[str, Any], domains: list[Domain], devices: list[Device]) -> list[Fault]:
    out: list[Fault] = []
    names = [d.name for d in domains] + ["dom_io"]
    known = [d.bdf for d in devices]
    for i, t in enumerate(ld.array_of_tables(data, "fault"), 1):
        w = f"fault[{i}]"
        ld.keys(t, w, FAULT_KEYS)
        ld.required(t, w, "at", f"one of {', '.join(FAULT_POINTS)}")
        at = ld.present_string(t, w, "at")
        if at not in FAULT_POINTS:
            ld.fail(f"{w}.at", f"expected one of {', '.join(FAULT_POINTS)}, got {at!r}{_suggest(at, FAULT_POINTS)}")
        if "domain" in t and "device" in t:
            ld.fail(f"{w}.device", "expected domain or device, not both")
        fault = Fault(at=at)
        if "domain" in t:
            name = ld.present_string(t, w, "domain")
            if name not in names:
                ld.fail(f"{w}.domain", f"unknown domain {name!r} (known: {_known(names)})")
            fault.domain = name
        if "device" in t:
            bdf = ld.bdf(t["device"], f"{w}.device")[0]
            if bdf not in known:
                ld.fail(f"{w}.device", f"unknown device {bdf!r} (known: {_known(known)})")
            fault.device = bdf
        fault.nth = ld.integer(t, w, "nth", 1, 1, 1 << 62, "an occurrence number >= 1")
        errno = ld.string(t, w, "errno", DEFAULT_ERRNO[at])
        if errno not in ERRNO:
            ld.fail(f"{w}.errno", f"expected one of {', '.join(sorted(ERRNO))}, got {errno!r}{_suggest(errno, ERRNO)}")
        fault.errno = errno
        out.append(fault)
    return out


_STEP_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_']*$")
_DMA_TYPES = ("pcie-endpoint", "pci")


def _dma(ld: _Loader, data: dict[str, Any], devices: list[Device], rmrrs: list[Rmrr],
         nops: int) -> list[DmaSource]:
    """[[dma]]: devices that may issue one DMA each (docs/SCENARIOS.md#dma)."""
    out: list[DmaSource] = []
    by_bdf = {d.bdf: d for d in devices}
    for i, t in enumerate(ld.array_of_tables(data, "dma"), 1):
        # dma[N] counts from 1 like every table of the file; the default name
        # counts from 0, as the schedule's `d` choices do (dma0 is d0)
        w = f"dma[{i}]"
        ld.keys(t, w, DMA_KEYS)
        name = ld.string(t, w, "name", f"dma{i - 1}")
        if not _NAME_RE.match(name):
            ld.fail(f"{w}.name", f"expected letters, digits, '.', '_' or '-', got {name!r}")
        if any(s.name == name for s in out):
            ld.fail(f"{w}.name", f"expected a name no other [[dma]] has, got {name!r}")
        ld.required(t, w, "device", "the BDF of the device that issues the DMA")
        try:
            seg, bus, devfn = parse_bdf(t["device"], short_ok=True)
        except ValueError as exc:
            ld.fail(f"{w}.device", str(exc))
        bdf = fmt_bdf(seg, bus, devfn)
        dev = by_bdf.get(bdf)
        if dev is None:
            ld.fail(f"{w}.device", f"unknown device {bdf!r} (known: {_known(list(by_bdf))})")
        if dev.type not in _DMA_TYPES:
            ld.fail(f"{w}.device", f"expected a device that issues DMA ({' or '.join(_DMA_TYPES)}), "
                    f"got {bdf}, a {dev.type}")
        ld.required(t, w, "target", '"rmrr" or a 4 KiB-aligned IOVA address')
        target = t["target"]
        rmrr = target == "rmrr"
        if rmrr:
            own = [r for r in rmrrs if r.segment == seg and bdf in r.devices]
            if not own:
                ld.fail(f"{w}.target", f'"rmrr" needs a device with an RMRR; {bdf} is in no [[rmrr]]')
            iova = own[0].base & ~(PAGE - 1)
        elif isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < IOVA_LIMIT \
                or target % PAGE:
            ld.fail(f"{w}.target", f'expected "rmrr" or a 4 KiB-aligned IOVA address below 2^47, '
                    f"got {_show(target)}")
        else:
            iova = target
        ld.required(t, w, "access", "read or write")
        access = ld.present_string(t, w, "access")
        if access not in DMA_ACCESS:
            ld.fail(f"{w}.access", f"expected read or write, got {access!r}")
        at = None
        if "at" in t:
            a = t["at"]
            if not isinstance(a, dict):
                ld.fail(f"{w}.at", f'expected a table {{op = N, step = "MO7"}}, got {_show(a)}')
            ld.keys(a, f"{w}.at", DMA_AT_KEYS)
            ld.required(a, f"{w}.at", "op", f"an op number 1..{nops}")
            ld.required(a, f"{w}.at", "step", 'a step label like "MO7"')
            if nops < 1:
                ld.fail(f"{w}.at.op", "expected an op number, but the scenario has no [[op]]")
            op = ld.present_integer(a, f"{w}.at", "op", 1, nops, f"an op number 1..{nops}")
            step = ld.present_string(a, f"{w}.at", "step")
            if not _STEP_RE.match(step):
                ld.fail(f"{w}.at.step", f'expected a step label like "MO7", got {step!r}')
            at = (op, step)
        out.append(DmaSource(name=name, device=bdf, iova=iova, rmrr=rmrr, write=access == "write", at=at))
    return out
