"""Which code computed a cached answer: the package version plus a digest of
the source files of the modules that produced it.

A sidecar entry is only as right as the code that computed it.  A format
number bumped by hand catches the changes someone remembered to flag; a
fixed analyser, a corrected fold handler or a new cache-model rule usually
changes no format at all, and the old answer would keep being served.  So
every derived entry is keyed on ``code_key(group)``: the version of the
installed package and a BLAKE2b digest over the bytes of every source file
of the group, in a fixed order, with their module names.  Editing any of
them -- or installing another release -- changes the key, and every command
recomputes instead of reading the old entry.

Groups (what each kind of entry depends on):

``fold``     the state fold, its cache model, checkpoints and seek, the
             session that stores them, the reader and the event catalogue
             (the ``replay/*`` entries of a sidecar);
``hazards``  ``fold`` plus every analyser (the findings entry).

The diff stores no alignment of its own: it reads findings (``hazards``) and
checkpoints (``fold``) through those two keys.

Cost: one read of some 20 small files per process and group, computed on
first use and kept (a few hundred kB hashed, about a millisecond).  A source
that cannot be read (a frozen or stripped install) makes the key unique to
this process: nothing is then served from a cache another build wrote.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from collections.abc import Iterable

FOLD_MODULES = ("tracer.schema", "replay.reader", "replay.validate", "replay.state", "replay.caches",
                "replay.seek", "replay.session")
HAZARD_PACKAGES = ("replay.hazards",)

_keys: dict[str, list[str]] = {}


def package_version() -> str:
    # The installed distribution's version (replay does not import the
    # record side of tracer, where __version__ lives).
    from importlib import metadata
    try:
        return metadata.version("vtdtrace")
    except metadata.PackageNotFoundError:
        return "unknown"


def package_modules(package: str) -> list[str]:
    """Every ``.py`` module of a package directory, sorted by file name."""
    pkg = importlib.import_module(package)
    assert pkg.__file__ is not None     # a package directory, not a namespace package
    d = os.path.dirname(pkg.__file__)
    names = sorted(n for n in os.listdir(d) if n.endswith(".py"))
    return [package if n == "__init__.py" else f"{package}.{n[:-3]}" for n in names]


def group_modules(group: str) -> list[str]:
    if group == "fold":
        return list(FOLD_MODULES)
    if group == "hazards":
        mods = list(FOLD_MODULES)
        for p in HAZARD_PACKAGES:
            mods += package_modules(p)
        return mods
    raise ValueError(f"unknown code group {group!r}")


def source_digest(modules: Iterable[str]) -> str:
    """BLAKE2b-128 over (module name, source bytes) of each module in order."""
    h = hashlib.blake2b(digest_size=16)
    for name in modules:
        spec = importlib.util.find_spec(name)
        origin = getattr(spec, "origin", None) if spec is not None else None
        try:
            if origin is None:
                raise TypeError("no source file")
            with open(origin, "rb") as f:
                data = f.read()
        except (OSError, TypeError):
            # Unreadable source: a key nobody else can have.
            data = os.urandom(16)
        h.update(name.encode())
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def code_key(group: str) -> list[str]:
    """[package version, source digest of the group]: part of every cache key."""
    key = _keys.get(group)
    if key is None:
        key = _keys[group] = [package_version(), source_digest(group_modules(group))]
    return list(key)
