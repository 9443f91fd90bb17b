"""Small two-CPU scenarios for the explore tests, written into tmp_path:
the platform of traces/s1-usb-rmrr.toml (one IOMMU, an RMRR device and
three other dom0 devices) with ops spread over CPUs 0 and 1.  Every op takes
pcidevs_lock, so a preemption inside an op makes the other CPU spin on it
(the lock-contended path)."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO

USB, SATA = "0000:00:14.0", "0000:00:17.0"

# op 1 on CPU 0 and op 2 on CPU 1: two assigns that race on one IOMMU
TWO_ASSIGNS = [("assign", USB, "guest", 0), ("assign", SATA, "guest2", 1)]
# ... and the USB controller back to dom0 on CPU 0
ASSIGN_DEASSIGN = TWO_ASSIGNS + [("deassign", USB, None, 0)]
# ... and the SATA controller back on CPU 1
FOUR_OPS = ASSIGN_DEASSIGN + [("deassign", SATA, None, 1)]


def scenario_text(ops, name: str = "explore-two-cpu") -> str:
    base = (REPO / "traces" / "s1-usb-rmrr.toml").read_text(encoding="utf-8")
    base = base[:base.index("[[op]]")].replace('name = "s1-usb-rmrr"', f'name = "{name}"')
    text = base + '[[domain]]\nname = "guest2"\nid = 2\n\n'
    for verb, dev, to, cpu in ops:
        text += f'[[op]]\ndo = "{verb}"\ndevice = "{dev}"\n'
        if to:
            text += f'to = "{to}"\n'
        text += f"cpu = {cpu}\n\n"
    return text


def write_scenario(dirpath: Path, ops, name: str = "explore-two-cpu") -> Path:
    path = dirpath / f"{name}.toml"
    path.write_text(scenario_text(ops, name), encoding="utf-8")
    return path


def problem(ops, variant: str, name: str = "explore-two-cpu"):
    from explore.search import Problem
    from tracer.scenario import loads_scenario

    return Problem(loads_scenario(scenario_text(ops, name), f"{name}.toml"), variant)


def xsa399_short_text() -> str:
    """The shipped XSA-399 race without its last op (guest-b's deassign):
    guest's leaked DID freed by the lock-free teardown on CPU 0 while CPU 1
    assigns guest-b's NIC on that unit.  Under --no-xsa399-fix one
    preemption right after the teardown's bit store hands guest-b that DID
    and then zeroes its slot (did-incoherent); small enough to enumerate."""
    text = (REPO / "traces" / "s9-xsa399-race.toml").read_text(encoding="utf-8")
    text = text[:text.index("[[op]]                   # op 5")]
    return text.replace('name = "s9-xsa399-race"', 'name = "xsa399-short"')


def write_xsa399_short(dirpath: Path) -> Path:
    path = dirpath / "xsa399-short.toml"
    path.write_text(xsa399_short_text(), encoding="utf-8")
    return path


def xsa399_short(fix: bool = False, variant: str = "legacy"):
    from explore.search import Problem
    from tracer.scenario import loads_scenario

    platform = loads_scenario(xsa399_short_text(), "xsa399-short.toml")
    platform.knobs.xsa399_fix = fix
    return Problem(platform, variant)
