"""xen-c's build: the extractor, tree detection, the build cache, and the
layout guards that make a wrong stand-in type fail the build, not the run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from realc_helpers import build_cache, scratch_tree, xen_tree  # noqa: F401

from xenc.build import STANDIN, BuildError, build, translation_unit
from xenc.extract import extract, scan
from xenc.tree import TreeError, open_tree

SAMPLE = """\
#include <xen/sched.h>
#define TWICE(x) ((x) * 2)
#define LONG_ONE(a, \\
                 b) ((a) + (b))
static unsigned int counter = 1;
static int unused_var;
/* a comment with { braces } and x = y */
static int helper(int v)
{
    const char *s = "}{";
    return TWICE(v) + s[0] + counter;
}

static int cf_check leaf(void) { return '}'; }

int __must_check entry(int a)
{
    if ( a == 0 )
        return leaf();
    return helper(a);
}

static int never_called(void)
{
    return entry(1);
}
"""


def test_scan_finds_functions_defines_and_variables_past_braces_in_comments_and_literals():
    items = scan(SAMPLE)
    funcs = [it.name for it in items if it.kind == "func"]
    assert funcs == ["helper", "leaf", "entry", "never_called"]
    assert [it.name for it in items if it.kind == "define"] == ["TWICE", "LONG_ONE"]
    assert {it.name for it in items if it.kind == "decl"} >= {"counter", "unused_var"}


def test_extract_takes_callees_variables_and_line_directives():
    ex = extract(SAMPLE, "/t/x.c", ["entry"])
    assert ex.functions == ["helper", "leaf", "entry"]
    assert "never_called" not in ex.source and "unused_var" not in ex.source
    assert "static unsigned int counter = 1;" in ex.source
    assert '#line 16 "/t/x.c"\nint __must_check entry(int a)' in ex.source
    assert "#include" not in ex.source
    # prototypes first, so static functions may call each other in any order
    assert ex.source.index("static int helper(int v);") < ex.source.index("int __must_check entry(int a)\n{")


def test_extract_provided_and_wrapped():
    ex = extract(SAMPLE, "x.c", ["entry"], provided=frozenset({"helper"}), wrapped=frozenset({"leaf"}))
    assert ex.functions == ["leaf", "entry"]
    assert "static int cf_check xenc_real_leaf(void)" in ex.source
    assert "return leaf();" in ex.source          # calls still go through the wrapper


def test_extract_reports_missing_functions():
    assert extract(SAMPLE, "x.c", ["entry", "nope"]).missing == ["nope"]


def test_tree_detection(xen_tree):  # noqa: F811
    t = open_tree(xen_tree)
    assert (t.major, t.minor, t.version_name) == (4, 17, "4.17.5")
    assert len(t.digest) == 64
    assert open_tree(xen_tree / "xen").root == t.root       # the xen/ subdirectory is accepted too


@pytest.mark.parametrize("make,message", [
    (None, "no xen/Makefile"),
    ("export XEN_VERSION = 4\nexport XEN_SUBVERSION = 13\n", "Xen 4.13 is not supported"),
    ("nothing here\n", "sets no XEN_VERSION"),
])
def test_not_a_usable_tree(tmp_path, xen_tree, make, message):  # noqa: F811
    t = scratch_tree(xen_tree, tmp_path / "t")
    if make is None:
        (t / "xen" / "Makefile").unlink()
    else:
        (t / "xen" / "Makefile").write_text(make)
    with pytest.raises(TreeError, match=message):
        open_tree(t)


def test_build_is_cached_by_content(xen_tree, tmp_path):  # noqa: F811
    t = scratch_tree(xen_tree, tmp_path / "t")
    first = build(open_tree(t), tmp_path / "cache")
    again = build(open_tree(t), tmp_path / "cache")
    assert not first.cached and again.cached and again.library == first.library
    c = t / "xen/drivers/passthrough/vtd/iommu.c"
    c.write_text(c.read_text() + "\n/* patched */\n")
    patched = build(open_tree(t), tmp_path / "cache")
    assert not patched.cached and patched.library != first.library
    assert "domain_context_mapping_one" in first.functions


def _standin_copy(tmp_path: Path) -> Path:
    d = tmp_path / "standin"
    shutil.copytree(STANDIN, d)
    return d


def test_layout_trap_a_wrong_field_type_fails_the_build(xen_tree, tmp_path):  # noqa: F811
    """pseudo_domid as unsigned int compiles everywhere it is used (integer
    conversions are silent) and would shift every field after it; the guard
    stops the build."""
    standin = _standin_copy(tmp_path)
    h = standin / "xenc.h"
    text = h.read_text()
    assert "        domid_t pseudo_domid;" in text
    h.write_text(text.replace("        domid_t pseudo_domid;", "        unsigned int pseudo_domid;"))
    with pytest.raises(BuildError, match=r"stand-in layout: struct pci_dev\.arch\.pseudo_domid must be domid_t"):
        build(open_tree(xen_tree), tmp_path / "cache", standin=standin)
    # ... and without the guard the same mistake builds: the guard is what catches it
    post = standin / "xenc_post.h"
    post.write_text(post.read_text().replace("XENC_FIELD_IS(struct pci_dev, arch.pseudo_domid, domid_t);", ""))
    assert not build(open_tree(xen_tree), tmp_path / "cache", standin=standin).cached


def test_layout_trap_the_415_iommu_bitmap(xen_tree, tmp_path):  # noqa: F811
    """4.15 kept iommu_bitmap inline, 4.16+ a pointer: the 4.15 layout in a
    4.17 build is refused by the guard, first thing."""
    standin = _standin_copy(tmp_path)
    h = standin / "xenc.h"
    h.write_text(h.read_text().replace("#if XENC_XEN_VERSION >= 416\n        unsigned long *iommu_bitmap;",
                                       "#if 0\n        unsigned long *iommu_bitmap;"))
    with pytest.raises(BuildError, match=r"stand-in layout: struct arch_iommu\.vtd\.iommu_bitmap must be unsigned "
                                         r"long \*"):
        build(open_tree(xen_tree), tmp_path / "cache", standin=standin)


def test_translation_unit_points_into_the_tree(xen_tree):  # noqa: F811
    src, funcs = translation_unit(open_tree(xen_tree))
    assert f'#line 1481 "{xen_tree / "xen/drivers/passthrough/vtd/iommu.c"}"' in src or \
        any(f'"{xen_tree / "xen/drivers/passthrough/vtd/iommu.c"}"' in line for line in src.splitlines())
    assert "xenc_orig_context_set_present(" in src      # the tree's own macro, renamed
    assert "reassign_device_ownership" in funcs
