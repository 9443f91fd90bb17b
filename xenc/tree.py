"""A Xen source tree the user points ``--xen-tree`` at: its version, its
identity, and which of the functions the real-code engine needs it has.

The version comes from ``xen/Makefile`` (``XEN_VERSION`` / ``XEN_SUBVERSION``
and ``XEN_EXTRAVERSION`` when it is a plain assignment), then is checked
against the code: a tree's Makefile can be stale in a patched copy, but the
functions it defines cannot.  ``git describe`` names a git checkout; the
digest of the files the build reads names the exact sources either way.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

VTD_DIR = Path("xen/drivers/passthrough/vtd")
# The files of the tree a real-code build reads (the digest covers exactly these).
SOURCES = ("iommu.c", "iommu.h", "dmar.h", "vtd.h", "extern.h")
# Xen releases the stand-in header knows (4.15 ... 4.20).
KNOWN = (415, 416, 417, 418, 419, 420)


class TreeError(Exception):
    """Not a usable Xen tree (one line for the user)."""


@dataclass(frozen=True)
class XenTree:
    root: Path
    major: int
    minor: int
    extra: str            # XEN_EXTRAVERSION's literal part (".5"), "" when there is none
    describe: str | None  # `git describe --always --dirty`, None outside git
    digest: str           # sha256 over SOURCES (name and bytes), hex

    @property
    def version(self) -> int:
        """MAJOR*100+MINOR (4.17 -> 417), the stand-in header's switch."""
        return self.major * 100 + self.minor

    @property
    def version_name(self) -> str:
        return f"{self.major}.{self.minor}{self.extra}"

    def source(self, name: str) -> Path:
        return self.root / VTD_DIR / name

    def read(self, name: str) -> str:
        return self.source(name).read_text(encoding="utf-8", errors="replace")


def open_tree(path: str | Path) -> XenTree:
    root = Path(path)
    if not root.is_dir():
        raise TreeError(f"--xen-tree {path}: not a directory")
    if not (root / "xen" / "Makefile").is_file() and (root.parent / "xen" / "Makefile").is_file() \
            and root.name == "xen":
        root = root.parent            # the user named the xen/ subdirectory
    makefile = root / "xen" / "Makefile"
    if not makefile.is_file():
        raise TreeError(f"--xen-tree {path}: no xen/Makefile (not a Xen source tree)")
    for name in SOURCES:
        if not (root / VTD_DIR / name).is_file():
            raise TreeError(f"--xen-tree {path}: no {VTD_DIR / name} (a tree without VT-d)")
    text = makefile.read_text(encoding="utf-8", errors="replace")
    major = _make_var(text, "XEN_VERSION")
    minor = _make_var(text, "XEN_SUBVERSION")
    if major is None or minor is None or not major.isdigit() or not minor.isdigit():
        raise TreeError(f"--xen-tree {path}: xen/Makefile sets no XEN_VERSION/XEN_SUBVERSION")
    # ".5$(XEN_VENDORVERSION)": the release part, without make expansions
    extra = re.sub(r"\$\([^)]*\)", "", _make_var(text, "XEN_EXTRAVERSION") or "")
    if not re.fullmatch(r"[.0-9A-Za-z_+-]*", extra):
        extra = ""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0")
        h.update((root / VTD_DIR / name).read_bytes())
        h.update(b"\0")
    tree = XenTree(root, int(major), int(minor), extra, _git_describe(root), h.hexdigest())
    if tree.version not in KNOWN:
        raise TreeError(f"--xen-tree {path}: Xen {tree.major}.{tree.minor} is not supported "
                        f"(supported: 4.15 ... 4.20)")
    _check_functions(tree)
    return tree


def _make_var(text: str, name: str) -> str | None:
    m = re.search(rf"^\s*(?:export\s+)?{name}\s*\??=\s*(\S*)", text, re.M)
    return m.group(1) if m else None


def _git_describe(root: Path) -> str | None:
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--tags", "--dirty"],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# Functions whose presence pins the version down where the Makefile could lie
# (a Makefile edited by hand, a backport): name -> first version that has it.
_MARKERS = {
    "check_cleanup_domid_map": 416,   # with (d, exclude, iommu); 4.15's took other arguments
    "domain_context_mapping_one": 415,
    "reassign_device_ownership": 415,
}


def _check_functions(tree: XenTree) -> None:
    src = tree.read("iommu.c")
    for fn in ("domain_context_mapping_one", "domain_context_unmap_one", "reassign_device_ownership",
               "intel_iommu_assign_device", "context_set_domain_id"):
        if not re.search(rf"\b{fn}\s*\(", src):
            raise TreeError(f"--xen-tree {tree.root}: vtd/iommu.c defines no {fn}() "
                            f"(not a VT-d tree of Xen 4.15 ... 4.20)")


def has_function(tree: XenTree, name: str) -> bool:
    return re.search(rf"^[^\n;]*\b{name}\s*\(", tree.read("iommu.c"), re.M) is not None


def has_nocx16_path(tree: XenTree) -> bool:
    """Whether --no-cx16 can run: 4.20 dropped the stores for CPUs without
    cmpxchg16b from domain_context_mapping_one (IOMMU use requires it there);
    trees before the XSA-400 series never use cmpxchg16b, so any CPU runs them."""
    src = tree.read("iommu.c")
    return "cmpxchg16b(" not in src or "write_atomic(&context->" in src


@functools.lru_cache(maxsize=16)     # asked by every run's feature check: the search costs ~2 ms
def quarantine_init_args(tree: XenTree) -> int:
    """How many parameters the tree's per-device intel_iommu_quarantine_init
    takes (1 at b3ee746000, 2 from 4.17: the scratch-page switch), or 0 when
    it has none (before the XSA-400 series one shared dom_io tree was built
    at boot, ``intel_iommu_quarantine_init(struct domain *d)``)."""
    m = re.search(r"\bintel_iommu_quarantine_init\(\s*struct pci_dev \*pdev([^)]*)\)", tree.read("iommu.c"))
    return 0 if m is None else 1 + m.group(1).count(",")
