"""The project's knowledge lives in the project: no citation leads outside the
repository, and the model reference covers what the traces and the hazard
kinds rest on.

* No tracked file mentions the design notes or research notes the project
  was started from (the strings are assembled below so that this file does
  not mention them either); a section sign is allowed only inside a markdown
  link into docs/.  Xen source locations (file, function, commit) are
  citations a reader can follow, and are welcome.  The shipped traces embed
  their scenario files' text, so they are checked too.
* Every step label in the shipped traces, and every label the engine can
  emit, has its row in docs/MODEL.md.
* Every finding kind (replay.hazards.findings.KINDS) has a section in
  docs/HAZARDS.md, and each kind's section links the docs/MODEL.md section
  its definition rests on.
* Every link into docs/ (markdown links, and ``docs/X.md#anchor`` written in
  code and comments) names an anchor that exists.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import REPO

from replay.reader import open_trace

DOCS = REPO / "docs"
SECTION = "\u00a7"
FORBIDDEN = ("shared" + "/", "research" + "/", "DESI" "GN")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
ROW = re.compile(r"^\| \*\*([A-Z][A-Z0-9]*)\*\* \|", re.M)
ANCHOR = re.compile(r'<a id="([^"]+)"></a>')
PATH_ANCHOR = re.compile(r"(?<![\w/.])((?:docs/)?[A-Z]+\.md)#([a-z0-9-]+)")
# A string literal that is a step label, in the engine's source.
LABEL_LITERAL = re.compile(r"""["']((?:[A-Z]{1,4}[0-9]{1,2})|BOOT|DCU)["']""")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):   # an unpacked source tree without .git
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not {".git", ".venv", "__pycache__"} & set(p.relative_to(REPO).parts)]
    assert names, "no files found"
    return [REPO / n for n in names if (REPO / n).is_file()]


def text_of(path: Path) -> str | None:
    raw = path.read_bytes()
    if b"\0" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def into_docs(source: Path, target: str, root: Path = REPO) -> bool:
    """Does a link target written in ``source`` lead into root/docs/?"""
    path = target.split("#", 1)[0]
    if not path or "://" in path:
        return False
    resolved = Path(os.path.normpath(source.parent / path))
    return resolved == root / "docs" or root / "docs" in resolved.parents


# Tracker numbers ("issue" and a number) lead to a tracker the reader may not have;
# the docs say the same thing and live here.
TRACKER = re.compile(r"\bissue #?\d+", re.IGNORECASE)


def bad_citations(path: Path, text: str, root: Path = REPO) -> list[str]:
    bad = []
    rel = path.relative_to(root)
    for n, line in enumerate(text.splitlines(), 1):
        for word in FORBIDDEN:
            if word in line:
                bad.append(f"{rel}:{n}: {word!r}: {line.strip()}")
        if TRACKER.search(line):
            bad.append(f"{rel}:{n}: a tracker issue number (name the doc instead): {line.strip()}")
        if SECTION in line:
            rest = line
            for m in LINK.finditer(line):
                if into_docs(path, m.group(1), root):
                    rest = rest.replace(m.group(0), "")
            if SECTION in rest:
                bad.append(f"{rel}:{n}: section sign outside a link into docs/: {line.strip()}")
    return bad


def slug(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s).replace(" ", "-")
    return s


def anchors(doc: Path) -> set[str]:
    text = doc.read_text(encoding="utf-8")
    found = set(ANCHOR.findall(text))
    seen: dict[str, int] = {}
    in_code = False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = None if in_code else re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            k = seen.get(s, 0)
            found.add(s if k == 0 else f"{s}-{k}")
            seen[s] = k + 1
    return found


def model_labels() -> set[str]:
    return set(ROW.findall((DOCS / "MODEL.md").read_text(encoding="utf-8")))


# --- citations ---------------------------------------------------------------------

def test_the_guard_sees_what_it_must_refuse(tmp_path):
    p = tmp_path / "x.py"
    lines = [f"see {w}x.md" for w in FORBIDDEN] + [f"spec {SECTION}5 a1", f"[MODEL {SECTION}5](../elsewhere.md)"]
    assert len(bad_citations(p, "\n".join(lines), tmp_path)) == len(lines)
    ok = tmp_path / "docs" / "a.md"
    ok.parent.mkdir()
    assert bad_citations(ok, f"[MODEL.md {SECTION}5](MODEL.md#hazards), xen/drivers/passthrough/vtd/iommu.c",
                         tmp_path) == []
    readme = tmp_path / "README.md"
    assert bad_citations(readme, f"[{SECTION}5](docs/MODEL.md#hazards)", tmp_path) == []
    assert len(bad_citations(readme, f"[{SECTION}5](MODEL.md#hazards)", tmp_path)) == 1
    assert len(bad_citations(p, "as issue " + "12 asks; see Issue #" + "7", tmp_path)) == 1


def test_no_tracked_file_cites_a_document_outside_the_repository():
    bad = []
    for path in tracked_files():
        text = text_of(path)
        if text is not None:
            bad += bad_citations(path, text)
        else:
            raw = path.read_bytes()
            bad += [f"{path.relative_to(REPO)}: binary file contains {w!r}"
                    for w in FORBIDDEN + (SECTION,) if w.encode() in raw]
    assert not bad, "citations leading outside the repository:\n" + "\n".join(bad)


# --- step labels ---------------------------------------------------------------------

def shipped_traces() -> list[Path]:
    traces = sorted((REPO / "traces").glob("*.vtdt"))
    assert traces, "no shipped traces"
    return traces


def test_every_step_label_in_the_shipped_traces_is_defined_in_model_md():
    defined = model_labels()
    used: dict[str, str] = {}
    for path in shipped_traces():
        with open_trace(path) as t:
            assert t.complete, path
            for ev in t.events():
                used.setdefault(ev[5], path.name)
    used.pop("", None)
    assert {"MO7", "UO3", "PM5", "RN4", "HW4"} <= set(used)    # the collection works
    missing = sorted(f"{label} (first in {name})" for label, name in used.items() if label not in defined)
    assert not missing, "step labels without a row in docs/MODEL.md: " + ", ".join(missing)


def test_every_label_the_engine_can_emit_is_defined_in_model_md():
    defined = model_labels()
    emitted = set()
    for path in sorted((REPO / "tracer" / "engine").glob("*.py")):
        emitted |= set(LABEL_LITERAL.findall(path.read_text(encoding="utf-8")))
    assert {"MO1", "MO15", "UO7", "PM9", "P5", "DCU"} <= emitted
    assert sorted(emitted - defined) == []


def test_model_md_defines_each_label_once_and_with_a_xen_location():
    text = (DOCS / "MODEL.md").read_text(encoding="utf-8")
    rows = ROW.findall(text)
    assert len(rows) == len(set(rows)), sorted(r for r in rows if rows.count(r) > 1)
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 3 and cells[1] and len(cells[2]) > 20, line


# --- hazard kinds -------------------------------------------------------------------

def kind_sections() -> dict[str, str]:
    text = (DOCS / "HAZARDS.md").read_text(encoding="utf-8")
    start = text.index("\n## The kinds")
    end = text.find("\n## ", start + 1)
    body = text[start:end if end >= 0 else len(text)]
    parts = re.split(r"^### `([a-z-]+)`[^\n]*\n", body, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_every_finding_kind_has_a_section_in_hazards_md():
    from replay.hazards.findings import KINDS
    sections = kind_sections()
    assert set(KINDS) <= set(sections), sorted(set(KINDS) - set(sections))


def test_every_kind_in_hazards_md_links_the_model_section_it_rests_on():
    model = anchors(DOCS / "MODEL.md")
    sections = kind_sections()
    assert len(sections) >= 9
    for kind, body in sections.items():
        targets = [m.group(1) for m in LINK.finditer(body) if m.group(1).startswith("MODEL.md#")]
        assert targets, f"HAZARDS.md: `{kind}` does not link a MODEL.md section"
        for t in targets:
            assert t.split("#", 1)[1] in model, f"HAZARDS.md: `{kind}` links {t}, which MODEL.md lacks"


@pytest.mark.parametrize("kind, anchor", [("owner-mismatch", "hazard-e"), ("stale-devtlb", "hazard-c4")])
def test_model_md_defines_the_kinds_being_added(kind, anchor):
    text = (DOCS / "MODEL.md").read_text(encoding="utf-8")
    assert anchor in anchors(DOCS / "MODEL.md")
    assert re.search(rf"\| `{kind}` \| [^\n]*\(#{anchor}\)", text), kind


# --- links into docs/ ----------------------------------------------------------------

def test_every_link_into_docs_names_an_existing_anchor():
    cache: dict[Path, set[str]] = {}
    bad = []
    for path in tracked_files():
        if path.suffix not in (".md", ".py", ".toml") or path == Path(__file__):
            continue
        text = path.read_text(encoding="utf-8")
        refs = []
        if path.suffix == ".md":
            for m in LINK.finditer(text):
                target = m.group(1)
                if "://" in target:
                    continue
                file_part, _, anchor = target.partition("#")
                doc = Path(os.path.normpath(path.parent / file_part)) if file_part else path
                if doc.suffix == ".md":
                    refs.append((doc, anchor, target))
        else:
            for m in PATH_ANCHOR.finditer(text):
                refs.append((REPO / m.group(1), m.group(2), m.group(0)))
        for doc, anchor, shown in refs:
            if not doc.is_file():
                bad.append(f"{path.relative_to(REPO)}: {shown}: no such file")
            elif anchor:
                if doc not in cache:
                    cache[doc] = anchors(doc)
                if anchor not in cache[doc]:
                    bad.append(f"{path.relative_to(REPO)}: {shown}: no such anchor")
    assert not bad, "\n".join(bad)
