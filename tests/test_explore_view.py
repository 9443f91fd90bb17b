"""A counterexample written by explore opens in the viewer like any trace,
with the violation among its findings."""

from __future__ import annotations

from explore_scenarios import TWO_ASSIGNS, problem
from test_tui_support import screen_text, settle

from explore.search import explore
from explore.traces import write_counterexample
from tui.app import VtdtraceApp


async def test_a_counterexample_opens_in_view(tmp_path):
    prob = problem(TWO_ASSIGNS, "legacy")
    written = []

    def write(v):
        v.trace = write_counterexample(prob, v, str(tmp_path))
        written.append(v)

    explore(prob, bound=2, on_violation=write)
    v = written[0]
    app = VtdtraceApp(tmp_path / v.trace)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        assert app.model.findings is not None
        kinds = {(f.kind, f.severity, f.device) for f in app.model.findings.items}
        assert (v.identity.kind, "hazard", v.identity.devices[0]) in kinds
        assert "explore-two-cpu" in screen_text(app)
    app.model.close()
