"""DID exhaustion through the real code: a unit with 16 domain IDs (CAP.ND
= 0), dom0 holding one, sixteen guests each given a NIC of their own.  The
sixteenth assignment finds no free DID; 4.17.5 returns -EBUSY where the 4.15
model (`direct`) returns -EFAULT -- the one difference `vtdtrace diff MODEL
REAL` reports -- and otherwise stores, allocates and flushes exactly as the
model does."""

from __future__ import annotations

import json
from pathlib import Path

from realc_helpers import vtdtrace, xen_tree  # noqa: F401

from replay.reader import open_trace
from tracer import schema as S
from xenc.compare import compare

GUESTS = 16


def _scenario(path: Path) -> Path:
    lines = ['name = "did-exhaustion"', 'description = "16 DIDs, dom0 and 16 guests with a NIC each"',
             "[platform]", "cx16 = true", "quarantine = false",
             "[[iommu]]", "id = 0", "include_all = true", "nd = 0", "levels = 4",
             "[[device]]", 'bdf = "0000:00:00.0"', 'type = "host-bridge"', 'id = "8086:191f"',
             "[[domain]]", 'name = "dom0"', "id = 0", "hardware = true"]
    for g in range(1, GUESTS + 1):
        lines += ["[[device]]", f'bdf = "0000:{g:02x}:00.0"', 'type = "pcie-endpoint"', 'id = "8086:1533"',
                  "[[domain]]", f'name = "guest{g}"', f"id = {g}"]
    for g in range(1, GUESTS + 1):
        lines += ["[[op]]", 'do = "assign"', f'device = "0000:{g:02x}:00.0"', f'to = "guest{g}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def _rcs(stdout: str) -> list[int]:
    tail = stdout.split("return codes: ", 1)[1].strip()
    return [int(part.split("=")[1]) for part in tail.split(", ")]


def test_did_exhaustion(xen_tree, tmp_path):  # noqa: F811
    scen = _scenario(tmp_path / "did.toml")
    real, model = tmp_path / "real.vtdt", tmp_path / "model.vtdt"
    r = vtdtrace("record", str(scen), "--engine", "xen-c", "--xen-tree", str(xen_tree), "--cx16", "-o", str(real))
    assert r.returncode == 0, r.stderr
    m = vtdtrace("record", str(scen), "--engine", "direct", "--cx16", "-o", str(model))
    assert m.returncode == 0, m.stderr
    real_rcs, model_rcs = _rcs(r.stdout), _rcs(m.stdout)
    assert real_rcs[:15] == model_rcs[:15] == [0] * 15
    assert real_rcs[15] == -16          # -EBUSY ("IOMMU: no free domain id")
    assert model_rcs[15] == -14         # -EFAULT in the 4.15 code the model follows
    ev = list(open_trace(real).events())
    assert any(e[0] == S.K_LOG and "no free domain id" in e[S.F0 + 1] for e in ev)
    c = compare(list(open_trace(model).events()), ev)
    i = c.first_difference
    assert i is not None, "the return code of the 16th assignment differs"
    assert c.a[i] == [S.K_OP_END, 16, -14] and c.b[i] == [S.K_OP_END, 16, -16], "\n".join(c.describe())
    assert c.a[:i] == c.b[:i] and c.a[i + 1:] == c.b[i + 1:]
    d = vtdtrace("diff", "--json", str(model), str(real))
    doc = json.loads(d.stdout)
    assert d.returncode == 1 and doc["summary"]["ops_different"] == 1 and doc["summary"]["rows_args"] == 1
    assert doc["first_divergence"]["fields"] == ["rc"]
