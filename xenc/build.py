"""Build the real-code engine: extract, assemble one translation unit, compile
it with the system C compiler into a cache outside the repository.

The translation unit is, in order:

1. ``#define XENC_XEN_VERSION 417`` (the tree's version) and the stand-in
   header ``standin/xenc.h`` (types, lists, locks, bit operations, memory,
   registers, domains and PCI devices -- vtdtrace's own code);
2. the tree's VT-d private headers (``vtd/iommu.h``, ``dmar.h``, ``vtd.h``,
   ``extern.h``) with their ``#include`` lines removed and the entry store
   macros renamed ``xenc_orig_NAME`` (so the tree's own bit manipulation
   runs, and ``standin/xenc_post.h`` decides whether the store is visible);
3. ``standin/xenc_post.h`` (logging stores, flush wrappers, layout guards);
4. the functions extracted from the tree's ``vtd/iommu.c`` (xenc/extract.py);
5. ``standin/runtime.c``: stand-in implementations and the entry points the
   Python runtime calls;
6. ``standin/quarantine.c``: the stand-ins of per-device quarantine (pseudo
   domain IDs, the quarantine tables' pages) and its entry points.

The cache key is a hash of everything that goes into the compiler -- the
tree's files (xenc/tree.py's digest), the generated sources, the stand-in files, the
compiler's path and flags -- so an edit to any of them rebuilds, and a
second record of the same tree reuses the library.  Cache directory:
``$XDG_CACHE_HOME/vtdtrace/xenc`` or ``~/.cache/vtdtrace/xenc`` (``cache_dir``
overrides it).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .extract import extract
from .tree import XenTree, quarantine_init_args

STANDIN = Path(__file__).with_name("standin")

# What the runtime drives, by name; their same-file callees come along.
WANTED = ["intel_iommu_assign_device", "reassign_device_ownership", "domain_context_mapping",
          "domain_context_unmap", "iommu_flush_all"]
# Per-device quarantine (the XSA-400 design: b3ee746000, 4.17+), where the tree has
# it: the tables are built by the first, and go with the device (hot-unplug) by the second.
QUARANTINE_WANTED = ["intel_iommu_quarantine_init", "intel_iommu_remove_device"]
# The register-based flush functions: vtd_flush_*_reg from 4.16, static flush_*_reg in 4.15.
FLUSH_NAMES = (("vtd_flush_context_reg", "flush_context_reg"), ("vtd_flush_iotlb_reg", "flush_iotlb_reg"))
# Implemented by the stand-ins instead (see standin/runtime.c).
PROVIDED = frozenset({"addr_to_dma_page_maddr", "sync_cache"})
# Kept, but reached through a stand-in wrapper that logs the call.
WRAPPED = frozenset({"iommu_flush_write_buffer"})
# The entry store macros of vtd/iommu.h that xenc_post.h turns into logged stores.
STORE_MACROS = ("context_set_present", "context_clear_present", "context_set_fault_enable",
                "context_set_translation_type", "context_set_address_root", "context_set_address_width",
                "context_clear_entry", "set_root_present", "set_root_value")
HEADERS = ("iommu.h", "dmar.h", "vtd.h", "extern.h")
CFLAGS = ("-std=gnu11", "-O1", "-g", "-fPIC", "-shared", "-Wall", "-Wno-unused-function",
          "-Wno-unused-variable", "-Wno-unused-but-set-variable", "-Wno-address",
          "-Werror=incompatible-pointer-types", "-Werror=int-conversion", "-Werror=implicit-function-declaration",
          "-Werror=return-type", "-Wl,-z,defs")


class BuildError(Exception):
    """The build failed; the message is one line, ``log`` holds the compiler's output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass(frozen=True)
class Built:
    library: Path
    source_digest: str      # sha256 of the generated translation unit
    functions: tuple[str, ...]
    cached: bool


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vtdtrace" / "xenc"


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise BuildError("no C compiler found (set CC or install cc)")
    return cc


def _header_text(tree: XenTree, name: str) -> str:
    text = tree.read(name)
    text = re.sub(r"^\s*#\s*include\b.*$", "/* include removed by vtdtrace */", text, flags=re.M)
    for macro in STORE_MACROS:
        text = re.sub(rf"(#\s*define\s+){macro}\(", rf"\1xenc_orig_{macro}(", text)
    return f'#line 1 "{tree.source(name)}"\n{text}\n'


def translation_unit(tree: XenTree, standin: Path = STANDIN) -> tuple[str, tuple[str, ...]]:
    """The generated C source and the functions extracted into it."""
    src = tree.read("iommu.c")
    flush = [next((n for n in names if re.search(rf"^[^;\n]*\b{n}\(", src, re.M)), names[0])
             for names in FLUSH_NAMES]
    qargs = quarantine_init_args(tree)
    ex = extract(src, str(tree.source("iommu.c")), WANTED + flush + (QUARANTINE_WANTED if qargs else []),
                 PROVIDED, WRAPPED)
    if ex.missing:
        raise BuildError(f"vtd/iommu.c of {tree.root} defines no {', '.join(ex.missing)}")
    quirk = re.search(r"me_wifi_quirk\(([^)]*)\)", tree.read("extern.h"))
    walker = re.search(r"addr_to_dma_page_maddr\(([^)]*)\)", src)
    parts = [f"/* generated by vtdtrace (xenc/build.py) for Xen {tree.version_name} */",
             f"#define XENC_XEN_VERSION {tree.version}",
             f"#define XENC_FLUSH_CONTEXT_REG {flush[0]}",
             f"#define XENC_FLUSH_IOTLB_REG {flush[1]}",
             f"#define XENC_WALKER_ARGS {walker.group(1).count(',') + 1 if walker else 5}",
             "struct domain;",
             f'#include "{standin / "xenc.h"}"']
    parts += [_header_text(tree, h) for h in HEADERS]
    parts.append(f'#include "{standin / "xenc_post.h"}"')
    parts.append(ex.source)
    # iommu_alloc() (not extracted) keeps min_pt_levels, the fewest levels of
    # any unit; the runtime sets it when it adds a unit, if this tree has it.
    if re.search(r"\bmin_pt_levels\b", ex.source):
        parts.append("#define XENC_HAS_MIN_PT_LEVELS 1")
    if qargs:
        parts.append(f"#define XENC_QUARANTINE_ARGS {qargs}")
    if "pseudo_domid_map" in tree.read("iommu.h"):
        parts.append("#define XENC_HAS_PSEUDO_DOMID_MAP 1")
    parts.append(f'#include "{standin / "runtime.c"}"')
    parts.append(f'#include "{standin / "quarantine.c"}"')
    # me_wifi_quirk() (vtd/quirks.c, not extracted) with the tree's own
    # parameters: it does nothing, since scenarios that reach it are refused.
    params = quirk.group(1) if quirk else "struct domain *d, uint8_t bus, uint8_t devfn, int map"
    parts.append(f"int me_wifi_quirk({params})\n{{\n    return 0;\n}}")
    return "\n".join(parts), tuple(ex.functions)


def build(tree: XenTree, cache_dir: Path | None = None, standin: Path = STANDIN) -> Built:
    cc = compiler()
    source, functions = translation_unit(tree, standin)
    h = hashlib.sha256(source.encode())
    h.update(tree.digest.encode())       # the tree's files themselves, not only what was taken
    for f in sorted(standin.iterdir()):
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(cc.encode() + "\0".join(CFLAGS).encode())
    key = h.hexdigest()[:32]
    cache = cache_dir or default_cache_dir()
    lib = cache / f"xenc-{tree.version}-{key}.so"
    src_digest = hashlib.sha256(source.encode()).hexdigest()
    if lib.is_file():
        return Built(lib, src_digest, functions, True)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BuildError(f"cannot create the build cache {cache}: {exc.strerror}") from exc
    with tempfile.TemporaryDirectory(prefix="xenc-build-") as tmp:
        c_file = Path(tmp) / f"xenc-{tree.version}.c"
        c_file.write_text(source, encoding="utf-8")
        out = Path(tmp) / "lib.so"
        proc = subprocess.run([cc, *CFLAGS, "-o", str(out), str(c_file)], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise BuildError(_first_error(proc.stderr) or f"{cc} failed (exit {proc.returncode})", proc.stderr)
        tmp_lib = lib.with_suffix(f".{os.getpid()}.tmp")
        shutil.copyfile(out, tmp_lib)
        os.replace(tmp_lib, lib)        # atomic: a concurrent build never sees half a library
    return Built(lib, src_digest, functions, False)


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error:" in line:
            return "build failed: " + line.strip()
    return ""
