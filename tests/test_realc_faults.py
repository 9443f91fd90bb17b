"""[[fault]] injection through the xen-c stand-ins: a failing context-cache or
IOTLB flush (what queued invalidation could return; the register code
cannot fail) and a cmpxchg16b that finds the entry changed.  The real 4.17.5
code then stores, allocates and flushes what the `direct` model does; the
return codes agree (the projection compares them too), except that 4.17.5 returns -EILSEQ for the failed
cmpxchg16b where the 4.15 code of the model returns -EFAULT."""

from __future__ import annotations

import pytest
from realc_helpers import DATA, vtdtrace, xen_tree  # noqa: F401

from replay.reader import open_trace
from tracer import schema as S
from xenc.compare import compare


def _scenario(tmp_path, at: str, nth: int):
    path = tmp_path / "fault.toml"
    path.write_text((DATA / "usb-rmrr-nic.toml").read_text()
                    + f'\n[[fault]]\nat = "{at}"\ndevice = "0000:00:14.0"\nnth = {nth}\n')
    return path


def _record(tmp_path, scen, engine, cx, tree=None):
    out = tmp_path / f"{engine}.vtdt"
    args = ["record", str(scen), "--engine", engine, cx, "-o", str(out), "--force"]
    if tree is not None:
        args += ["--xen-tree", str(tree)]
    r = vtdtrace(*args)
    assert r.returncode == 0, r.stderr
    rcs = [int(p.split("=")[1]) for p in r.stdout.split("return codes: ", 1)[1].strip().split(", ")]
    return list(open_trace(out).events()), rcs


@pytest.mark.parametrize("at,nth,cx,real_rcs,model_rcs", [
    ("flush-context", 1, "--cx16", [-110, -22], [-110, -22]),
    ("flush-iotlb", 1, "--no-cx16", [-110, -22], [-110, -22]),
    ("flush-context", 2, "--no-cx16", [0, -110], [0, -110]),
    ("cmpxchg", 2, "--cx16", [-84, -22], [-14, -22]),
])
def test_injected_faults(at, nth, cx, real_rcs, model_rcs, xen_tree, tmp_path):  # noqa: F811
    scen = _scenario(tmp_path, at, nth)
    real, rr = _record(tmp_path, scen, "xen-c", cx, xen_tree)
    model, mr = _record(tmp_path, scen, "direct", cx)
    assert (rr, mr) == (real_rcs, model_rcs)
    fired = [ev for ev in real if ev[0] == S.K_FAULT_INJECT]
    assert [(ev[S.F0], ev[S.F0 + 2]) for ev in fired] == [(at, nth)]
    c = compare(model, real)
    # the projections differ only in the operations' return codes the versions disagree on
    assert len(c.a) == len(c.b), "\n".join(c.describe(("direct", "xen-c")))
    diffs = [(a, b) for a, b in zip(c.a, c.b) if a != b]
    assert all(a[0] == b[0] == S.K_OP_END and a[1] == b[1] for a, b in diffs), "\n".join(c.describe())
    assert [(a[2], b[2]) for a, b in diffs] == [(m, r) for m, r in zip(model_rcs, real_rcs) if m != r]


def test_a_fault_for_a_domain_is_refused(xen_tree, tmp_path):  # noqa: F811
    path = tmp_path / "f.toml"
    path.write_text((DATA / "usb-rmrr-nic.toml").read_text() + '\n[[fault]]\nat = "flush-iotlb"\ndomain = "guest"\n')
    r = vtdtrace("record", str(path), "--engine", "xen-c", "--xen-tree", str(xen_tree), cwd=tmp_path)
    assert r.returncode == 2 and "[[fault]] at 'flush-iotlb' for a domain" in r.stderr
