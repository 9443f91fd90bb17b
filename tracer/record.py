"""Recording: scenario + engine variant -> a trace file (or any sink).

The header holds only what is the same on every machine and run (docs/FORMAT.md, file header):
no wall clock (the writer adds `created` only under SOURCE_DATE_EPOCH), no
absolute path, no Python version.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import __version__
from .engine import XEN_COMMITS, Engine, EngineLimit
from .platform import Platform
from .recorder import Event, Recorder, Sink
from .sched import CHOICE_KINDS, Choice, Chooser, FollowSchedule, ScheduleError, schedule_header


@dataclass
class RecordResult:
    events: int
    rcs: list[int]
    limit: str | None = None
    choices: list[Choice] = field(default_factory=list)   # the non-default choices taken


def make_header(platform: Platform, variant: str, schedule: Sequence[Choice] = ()) -> dict[str, Any]:
    return {
        "tool": "vtdtrace",
        "tool_version": __version__,
        "engine": {
            "name": variant,
            "xen_commit": XEN_COMMITS[variant],
            "xen_branch": "stable-4.15",
            "cx16": platform.knobs.cx16,
            "cx16_source": platform.knobs.cx16_source,
            "xsa399_fix": platform.knobs.xsa399_fix,
        },
        "platform": platform.to_header(),
        "schedule": schedule_header(platform.cpus, schedule),
        "scenario": {
            "name": platform.name,
            "description": platform.description,
            "file": platform.source_name,
            "content": platform.source_text,
        },
    }


def apply_cx16(platform: Platform, cx16: bool | None) -> Platform:
    """--cx16/--no-cx16 override the scenario's platform.cx16."""
    if cx16 is not None:
        platform.knobs.cx16 = cx16
        platform.knobs.cx16_source = "command line"
    return platform


def record(platform: Platform, variant: str, sink: Sink,
           on_event: Callable[[Engine, Event], None] | None = None,
           schedule: Sequence[Choice] = (), chooser: Chooser | None = None) -> RecordResult:
    """on_event(engine, event), called after every event, lets the replay
    property test take the engine's live snapshot (engine.canonical()).
    ``schedule`` (tracer/sched.py) picks the interleaving; a choice the run
    never met raises ScheduleError after the run.  ``chooser`` replaces it
    (the explorer's)."""
    holder: list[Engine] = []
    observer: Callable[[Event], None] | None = None
    if on_event is not None:
        hook = on_event
        observer = lambda ev: hook(holder[0], ev)  # noqa: E731
    rec = Recorder(sink, observer)
    follow = FollowSchedule(schedule) if schedule else None
    engine = Engine(platform, rec, variant=variant, chooser=chooser or follow)
    holder.append(engine)
    try:
        rcs = engine.run()
        result = RecordResult(rec.seq, rcs)
    except EngineLimit as exc:
        result = RecordResult(rec.seq, [], limit=str(exc))
    if follow is not None and follow.unused():
        first = follow.unused()[0]
        raise ScheduleError(f"choice {first} does not fit: the run never asked for a "
                            f"{CHOICE_KINDS[first.kind]} choice after event {first.seq}")
    result.choices = list(engine.sched.choices) if engine.sched is not None else []
    return result


def default_output(platform: Platform, variant: str) -> str:
    suffix = "" if platform.knobs.cx16 else "-nocx16"
    if not platform.knobs.xsa399_fix:
        suffix += "-pre-xsa399"
    return f"{platform.name}.{variant}{suffix}.vtdt"
