"""Fetch Debian's Xen 4.17.5 source into a cache outside the repository.

``apt-get`` runs with private state: its own sources list, lists and cache
directories under the cache, ``Dir::Etc::SourceParts`` switched off -- so
nothing under ``/etc/apt`` or ``/var/lib/apt`` is read for sources or
written.  The ``deb-src`` lines are built from the Debian archive URIs the
machine's own apt sources already use (``deb.debian.org`` when it has none),
for the suites it names.

Only the files a real-code build reads are unpacked from the upstream
tarball (``xen/Makefile``, ``xen/drivers/passthrough/vtd/``); none of
Debian's patches of this version touch them, so the tree is the release as
Debian ships it.  The tree lands in ``CACHE/xen-4.17.5/`` and is reused; a
``.complete`` marker written last means a half-unpacked tree is never used.

    python -m xenc.fetch            # prints the tree's path (fetches once)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

DEBIAN_VERSION = "4.17.5"
MEMBERS = ("xen/Makefile", "xen/drivers/passthrough/vtd/")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class FetchError(Exception):
    """The tree cannot be had here (one line)."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vtdtrace" / "xen-src"


def debian_tree(cache: Path | None = None) -> Path:
    """The Debian 4.17.5 tree, fetched on first use."""
    root = (cache or cache_root())
    tree = root / f"xen-{DEBIAN_VERSION}"
    if (tree / ".complete").is_file():
        return tree
    if not shutil.which("apt-get"):
        raise FetchError("no apt-get on this machine: cannot fetch Debian's Xen source "
                         "(point --xen-tree at a Xen tree instead)")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="apt-", dir=root) as tmp:
        work = Path(tmp)
        opts = _apt_options(work)
        _run(["apt-get", *opts, "update"], "apt-get update")
        version = _source_version(opts)
        dl = work / "dl"
        dl.mkdir()
        _run(["apt-get", *opts, "source", "--download-only", f"xen={version}"], "apt-get source", cwd=dl)
        orig = sorted(dl.glob("xen_*.orig.tar.*"))
        if not orig:
            raise FetchError("apt-get source left no xen_*.orig.tar.* behind")
        staging = work / "tree"
        _unpack(orig[0], staging)
        if tree.exists():
            shutil.rmtree(tree)
        os.replace(staging, tree)
        (tree / ".complete").write_text(f"debian xen {version}\n", encoding="utf-8")
    return tree


def _apt_options(work: Path) -> list[str]:
    for d in ("lists/partial", "cache/archives/partial"):
        (work / d).mkdir(parents=True, exist_ok=True)
    sources = work / "sources.list"
    sources.write_text("".join(_deb_src_lines()), encoding="utf-8")
    return ["-q", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=-",
            "-o", f"Dir::State::Lists={work / 'lists'}", "-o", f"Dir::Cache={work / 'cache'}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=" + _user()]


def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return "root"


def _deb_src_lines() -> list[str]:
    """deb-src lines for the Debian archives the machine's apt sources name."""
    pairs: list[tuple[str, str]] = []
    texts = []
    for p in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(p.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    for text in texts:
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.findall(r"^URIs:\s*(.+)$", stanza, re.M)
            suites = re.findall(r"^Suites:\s*(.+)$", stanza, re.M)
            for u in (uris[0].split() if uris else []):
                for s in (suites[0].split() if suites else []):
                    pairs.append((u, s))
        for m in re.finditer(r"^deb(?:-src)?\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            pairs.append((m.group(1), m.group(2)))
    debian = [(u.rstrip("/"), s) for u, s in pairs if re.search(r"debian(-security)?/?$", u)]
    if not debian:
        debian = [("http://deb.debian.org/debian", "bookworm"),
                  ("http://deb.debian.org/debian-security", "bookworm-security")]
    signed = f"[signed-by={KEYRING}] " if Path(KEYRING).is_file() else ""
    seen = set()
    lines = []
    for u, s in debian:
        if (u, s) not in seen:
            seen.add((u, s))
            lines.append(f"deb-src {signed}{u} {s} main\n")
    return lines


def _source_version(opts: list[str]) -> str:
    out = _run(["apt-cache", *opts, "showsrc", "xen"], "apt-cache showsrc xen")
    versions: list[str] = re.findall(r"^Version:\s*(\S+)", out, re.M)
    for v in versions:
        if v.startswith(DEBIAN_VERSION):
            return v
    raise FetchError(f"Debian's archive offers no xen {DEBIAN_VERSION} source here "
                     f"(found: {', '.join(versions) or 'none'})")


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FetchError(f"{what}: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise FetchError(f"{what} failed: {last}")
    return str(proc.stdout)


def _unpack(tarball: Path, dest: Path) -> None:
    """Only MEMBERS, with the tarball's top directory stripped; no member may
    leave dest."""
    dest.mkdir(parents=True)
    with tarfile.open(tarball) as tf:
        for m in tf:
            parts = m.name.split("/", 1)
            if len(parts) != 2 or not (m.isfile() or m.isdir()):
                continue
            rel = parts[1]
            if not any(rel == w or rel.startswith(w) for w in MEMBERS) or ".." in rel.split("/"):
                continue
            target = dest / rel
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            if src is not None:
                with src, open(target, "wb") as f:
                    shutil.copyfileobj(src, f)


def main() -> int:
    try:
        print(debian_tree())
    except FetchError as exc:
        print(f"xenc.fetch: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
