"""S13 (USB controller with an RMRR + dom0 NIC, both doing DMA): dma-fault-rmrr and
dma-foreign as a user finds them (`record --schedule`, `check --json`, subprocesses),
"observed" in the window they confirm, and the absence of both under the fixed
engines for every placement of the DMAs (in process, every scheduling point)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
from conftest import REPO

from replay.hazards import findings_for_events
from tracer import schema as S
from tracer.record import make_header, record
from tracer.recorder import ListSink
from tracer.scenario import load_scenario
from tracer.sched import Point

S13 = "s13-usb-nic-dma"
USB_RMRR, USB_GUEST, NIC = 0, 1, 2


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vtdtrace", *args], capture_output=True, text=True,
                          cwd=cwd or REPO)


def _record_check(tmp_path, engine: str, cx16: bool, schedule: str) -> tuple[int, dict]:
    out = tmp_path / "t.vtdt"
    r = _cli("record", S13, "--engine", engine, "--cx16" if cx16 else "--no-cx16", "--schedule", schedule,
             "-o", str(out), "--force")
    assert r.returncode == 0, r.stderr
    c = _cli("check", str(out), "--json")
    assert c.stderr == ""
    return c.returncode, json.loads(c.stdout)


def _events(engine: str, cx16: bool) -> list:
    p = load_scenario(S13)
    p.knobs.cx16 = cx16
    sink = ListSink()
    record(p, engine, sink)
    return sink.events


def _seq(events, kind: int, label: str, op: int, nth: int = 0) -> int:
    return [e[1] for e in events if e[0] == kind and e[5] == label and e[3] == op][nth]


# --- as a user runs it ------------------------------------------------------------------

def test_legacy_rmrr_dma_in_the_unmap_window_is_dma_fault_rmrr(tmp_path):
    ev = _events("legacy", True)
    uo3 = _seq(ev, S.K_CTX_WRITE, "UO3", 1)
    code, doc = _record_check(tmp_path, "legacy", True, f"{uo3}:d{USB_RMRR}")
    assert code == 1
    (f,) = [f for f in doc["findings"] if f["kind"] == "dma-fault-rmrr"]
    assert f["severity"] == "hazard" and f["device"] == "0000:00:14.0" and f["start"] == uo3 + 1
    assert f["start_label"] == "DMA"
    assert "context entry not present (fault reason 0x2)" in f["detail"] and "op 1 (assign to guest)" in f["detail"]
    assert f"at seq {uo3 + 1}" in f["detail"]
    # the rmrr-disconnect window it landed in says so
    (w,) = [w for w in doc["findings"] if w["kind"] == "rmrr-disconnect" and w["start"] <= uo3 < (w["end"] or 1e9)]
    assert f"observed: seq {uo3 + 1}, 0000:00:14.0's DMA usb-rmrr via memory faulted" in w["detail"]
    assert doc["counts"]["dma-fault-rmrr"] == 1 and doc["counts"]["dma-foreign"] == 0


def test_direct_nocx16_nic_through_the_iotlb_filled_between_w1_and_w2_is_dma_foreign(tmp_path):
    ev = _events("direct", False)
    w1 = _seq(ev, S.K_CTX_WRITE, "MO7", 1)          # W1': lo = the guest's tables, DID still dom0's
    code, doc = _record_check(tmp_path, "direct", False, f"{w1}:d{USB_GUEST} {w1 + 1}:d{NIC} {w1 + 1}:t1")
    assert code == 1
    (f,) = [f for f in doc["findings"] if f["kind"] == "dma-foreign"]
    assert f["device"] == "0000:00:1f.6" and f["start"] == w1 + 2 and f["severity"] == "hazard"
    assert "via iotlb) reached guest page 0x100000, memory of guest, which does not own the device (owner: dom0)" \
        in f["detail"]
    # the USB's own DMA reached the guest's page while its move to the guest was in flight: not foreign
    assert doc["counts"]["dma-foreign"] == 1
    (w,) = [w for w in doc["findings"] if w["kind"] == "foreign-iotlb" and w["severity"] == "hazard"]
    assert f"observed: seq {w1 + 2}, 0000:00:1f.6's DMA nic via iotlb reached guest page 0x100000" in w["detail"]
    # without the IOTLB entry (t0: a walk of dom0's tables) the NIC reaches dom0's page
    code, doc = _record_check(tmp_path, "direct", False, f"{w1}:d{USB_GUEST} {w1 + 1}:d{NIC}")
    assert doc["counts"]["dma-foreign"] == 0


@pytest.mark.parametrize("engine,cx16", [("legacy", True), ("direct", True), ("direct", False),
                                         ("original", True), ("final", True), ("final", False)])
def test_the_shipped_run_to_completion_traces_issue_no_dma(tmp_path, engine, cx16):
    name = f"{S13}.{engine}{'' if cx16 else '-nocx16'}.vtdt"
    shutil.copy(REPO / "traces" / name, tmp_path / name)
    c = _cli("check", str(tmp_path / name), "--json")
    doc = json.loads(c.stdout)
    assert doc["counts"]["dma-fault-rmrr"] == 0 and doc["counts"]["dma-foreign"] == 0
    assert all("observed" not in f["detail"] for f in doc["findings"])


# --- every placement, in process -------------------------------------------------------

class Tree:
    """Follows ``path`` (an option index at each choice point it is asked
    about: DMA points for the allowed sources, cache choices), default
    after; records how many options each such point had."""

    def __init__(self, path: list[int], sources: set[int]) -> None:
        self.path, self.sources, self.i, self.widths = path, sources, 0, []

    def choose(self, p: Point) -> int:
        if p.kind == "c":
            return 0
        opts = [j for j, v in enumerate(p.options) if p.kind != "d" or j == 0 or v in self.sources]
        if len(opts) <= 1:
            return 0
        pick = self.path[self.i] if self.i < len(self.path) else 0
        self.widths.append(len(opts))
        self.i += 1
        return opts[pick]


def every_run(engine: str, cx16: bool, sources: set[int]) -> Iterator[tuple[list, dict]]:
    """Every run the DMA placements of ``sources`` and every cache choice
    give (depth-first over the choice tree): (events, header)."""
    todo: list[list[int]] = [[]]
    while todo:
        path = todo.pop()
        p = load_scenario(S13)
        p.knobs.cx16 = cx16
        sink = ListSink()
        tree = Tree(path, sources)
        res = record(p, engine, sink, chooser=tree)
        assert res.limit is None
        yield sink.events, make_header(p, engine, res.choices)
        for i in range(len(path), len(tree.widths)):
            for alt in range(1, tree.widths[i]):
                todo.append(path + [0] * (i - len(path)) + [alt])


def _kinds(engine: str, cx16: bool, sources: set[int]) -> tuple[int, dict[str, int]]:
    runs, seen = 0, {"dma-fault-rmrr": 0, "dma-foreign": 0, "dmas": 0}
    for events, header in every_run(engine, cx16, sources):
        runs += 1
        seen["dmas"] += sum(1 for e in events if e[0] == S.K_DMA)
        for f in findings_for_events(header, events):
            if f.kind in seen:
                seen[f.kind] += 1
    return runs, seen


@pytest.mark.parametrize("cx16", [True, False])
def test_direct_never_faults_the_rmrr_dma_wherever_it_lands(cx16):
    runs, seen = _kinds("direct", cx16, {USB_RMRR})
    assert runs > 40 and seen["dmas"] >= runs - 1       # every point, plus the run that issues none
    assert seen["dma-fault-rmrr"] == 0 and seen["dma-foreign"] == 0     # the RMRR page is firmware memory


def test_legacy_faults_it_somewhere():
    runs, seen = _kinds("legacy", True, {USB_RMRR})
    assert seen["dma-fault-rmrr"] > 0


def test_direct_cx16_never_lets_a_dma_reach_foreign_memory():
    runs, seen = _kinds("direct", True, {USB_GUEST, NIC})
    assert runs > 1000
    assert seen["dma-foreign"] == 0


def test_direct_nocx16_does_for_some_placements():
    runs, seen = _kinds("direct", False, {USB_GUEST, NIC})
    assert seen["dma-foreign"] > 0


# --- a guest destroyed with its device (pci_release_devices inside the destroy op) ---------

_DESTROY = """
name = "destroy-dma"
[platform]
quarantine = {q}
[[iommu]]
id = 0
include_all = true
[[device]]
bdf = "0000:00:14.0"
type = "pcie-endpoint"
[[rmrr]]
base = 0xd5d45000
end = 0xd5d45fff
devices = ["0000:00:14.0"]
[[domain]]
name = "dom0"
id = 0
hardware = true
[[domain]]
name = "guest"
id = 1
[[op]]
do = "assign"
device = "0000:00:14.0"
to = "guest"
[[op]]
do = "destroy"
domain = "guest"
[[dma]]
name = "ram"
device = "00:14.0"
target = 0x5000
access = "write"
[[dma]]
name = "rmrr"
device = "00:14.0"
target = "rmrr"
access = "write"
"""


def _placements(text: str, engine: str, src: int) -> dict[str, int]:
    """Findings per DMA kind over every placement of one source."""
    from tracer.scenario import loads_scenario

    class Nth:
        def __init__(self, k: int) -> None:
            self.k, self.n = k, 0

        def choose(self, p: Point) -> int:
            if p.kind == "d":
                self.n += 1
                if self.n == self.k and src in p.options:
                    return p.options.index(src)
            return 0

    seen = {"dma-fault-rmrr": 0, "dma-foreign": 0, "runs": 0}
    k = 0
    while True:
        k += 1
        p = loads_scenario(text, "destroy-dma.toml")
        sink = ListSink()
        ch = Nth(k)
        res = record(p, engine, sink, chooser=ch)
        if ch.n < k:
            return seen
        seen["runs"] += 1
        for f in findings_for_events(make_header(p, engine, res.choices), sink.events):
            if f.kind in seen:
                seen[f.kind] += 1


@pytest.mark.parametrize("engine", ["direct", "final"])
@pytest.mark.parametrize("quarantine", [False, True])
def test_a_released_device_dmaing_while_its_guest_is_destroyed_is_not_foreign(engine, quarantine):
    text = _DESTROY.format(q="true" if quarantine else "false")
    ram = _placements(text, engine, 0)
    assert ram["runs"] > 30 and ram["dma-foreign"] == 0
    rmrr = _placements(text, engine, 1)
    # 4.15's shared quarantine tree maps the RMRR nowhere and its scratch page
    # read-only: once quarantined, the RMRR write faults (the a3 symptom);
    # final's per-device tree maps the RMRR
    assert (rmrr["dma-fault-rmrr"] > 0) == (quarantine and engine == "direct")


async def test_view_opens_a_trace_with_a_dma_and_its_findings_pane_names_dma_foreign(tmp_path):
    from test_tui_support import settle

    from tui.app import VtdtraceApp

    ev = _events("direct", False)
    w1 = _seq(ev, S.K_CTX_WRITE, "MO7", 1)
    out = tmp_path / "t.vtdt"
    r = _cli("record", S13, "--engine", "direct", "--no-cx16", "--schedule",
             f"{w1}:d{USB_GUEST} {w1 + 1}:d{NIC} {w1 + 1}:t1", "-o", str(out))
    assert r.returncode == 0, r.stderr
    app = VtdtraceApp(out)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(app, pilot)
        app.goto_seq(w1 + 2)
        await pilot.press("4")
        await settle(app, pilot)
        text = app.view.findings_pane.text()
        assert "dma-foreign" in text and "observed" in text
    app.model.close()


def test_a_dma_event_with_a_requester_id_out_of_range_is_a_damaged_trace_not_a_traceback(write_trace, run_cli):
    """check on a crafted trace: the analysable prefix ends at the bad dma event."""
    p = load_scenario(S13)
    sink = ListSink()
    record(p, "direct", sink)
    header = make_header(p, "direct")
    events = [list(e) for e in sink.events[:60]]
    fields = [S.KINDS[S.K_DMA].fields.index(f) for f in ("source", "seg", "bdf", "rid")]
    dma = [S.K_DMA, 61, -1, 0, 0, "DMA", "nic", 0, 0xFE, 0x1FFFF, 0, 0x1000, True, "memory", 0, 0, None, 0,
           None, None, 2]
    assert [dma[6 + i] for i in fields] == ["nic", 0, 0xFE, 0x1FFFF]
    path = write_trace(events + [dma], header=header)
    r = run_cli("check", path)
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
