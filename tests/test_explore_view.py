"""A counterexample written by explore opens in the viewer like any trace,
with the violation among its findings."""

from __future__ import annotations

from explore_scenarios import xsa399_short
from test_tui_support import screen_text, settle

from explore.search import explore
from explore.traces import write_counterexample
from tui.app import VtdtraceApp


async def test_a_counterexample_opens_in_view(tmp_path):
    prob = xsa399_short(fix=False)
    written = []

    def write(v):
        v.trace = write_counterexample(prob, v, str(tmp_path))
        written.append(v)

    explore(prob, bound=1, on_violation=write)
    v = written[0]
    app = VtdtraceApp(tmp_path / v.trace)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.model.findings is not None
        kinds = {(f.kind, f.severity, f.device) for f in app.model.findings.items}
        assert (v.identity.kind, "hazard", v.identity.devices[0]) in kinds
        assert "xsa399-short" in screen_text(app)
    app.model.close()
