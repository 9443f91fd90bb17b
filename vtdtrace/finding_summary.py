"""The one-screen summary `vtdtrace check` prints before its findings.

A 10^6-event trace has tens of thousands of findings, nearly all of them
benign windows the operation closes itself; the question a reader brings is
"which kinds, on which devices, how bad".  So the findings are counted by
kind (every kind that occurs, in catalogue order) and by device, each row
split by severity.  Devices are ranked by how bad they are -- hazards first,
then warnings, then how many findings -- and cut after ``MAX_DEVICES`` rows
with one line saying what was left out, so the summary fits a terminal
whatever the trace.  The counts cover every finding of the kinds asked for,
including those ``--severity`` leaves out of the list below: the summary is
where a reader sees what the filter hid.
"""

from __future__ import annotations

MAX_DEVICES = 10
COLUMNS = ("hazard", "warning", "benign")


def _row(name: str, width: int, c: dict) -> str:
    cells = " ".join(f"{c.get(s, 0):>7}" for s in COLUMNS)
    return f"  {name:<{width}} {cells} {sum(c.values()):>7}"


def summary_lines(findings, kinds, clean) -> list[str]:
    """The summary of `findings` (Finding records) as text lines; `kinds` the
    catalogue order, `clean` the one-printable-line filter for device names."""
    by_kind: dict = {}
    by_dev: dict = {}
    for f in findings:
        k = by_kind.setdefault(f.kind, {})
        k[f.severity] = k.get(f.severity, 0) + 1
        d = by_dev.setdefault(f.device, {})
        d[f.severity] = d.get(f.severity, 0) + 1
    devices = sorted(by_dev, key=lambda d: (-by_dev[d].get("hazard", 0), -by_dev[d].get("warning", 0),
                                            -sum(by_dev[d].values()), d is None, d or ""))
    names = {d: clean(d) if d is not None else "(no device)" for d in devices[:MAX_DEVICES]}
    width = max([len(k) for k in by_kind] + [len(n) for n in names.values()])
    out = [f"{'by kind':<{width + 2}} " + " ".join(f"{s:>7}" for s in COLUMNS) + f" {'total':>7}"]
    out += [_row(k, width, by_kind[k]) for k in kinds if k in by_kind]
    out.append("by device")
    out += [_row(names[d], width, by_dev[d]) for d in devices[:MAX_DEVICES]]
    rest = devices[MAX_DEVICES:]
    if rest:
        n = sum(sum(by_dev[d].values()) for d in rest)
        out.append(f"  ... {len(rest)} more device{'s' if len(rest) != 1 else ''} with {n} "
                   f"finding{'s' if n != 1 else ''}")
    return out
