"""The diff report: what one diff of two traces found (docs/CLI.md#diff-json).

``DiffReport`` is the result of the streaming pass (streaming.py) and the
input of every rendering (text.py, the JSON, the TUI's side-by-side view):

* ``first_divergence`` -- the first row (in alignment order) that is not the
  same on both sides: its seq in each trace, its class (``only-a`` /
  ``only-b``: an event one trace has and the other lacks; ``args``: the same
  event with other field values; ``state``: the same events leaving a
  different state, which only happens when the platform knobs in the headers
  differ) and the last common events before it.  For a one-sided event the
  other seq is where the missing event would be (the next event of that
  trace).
* ``alignment`` -- every aligned operation pair (align.py); the ones that
  are not identical carry their difference regions and rows.
* ``state_diff`` -- ``StateDiff``s: the state difference at the end of
  aligned operations, listed where it *changes* (appears, changes,
  disappears): the difference at any boundary is the last entry at or
  before it.  Sections: context entries (decoded: present, did, did_owner,
  pt_owner, tt, aw, lo, hi), DIDs (in use, owner), devices (present, owner),
  identity maps, domains, caches (what the IOMMU may still hold); only
  changed fields.
* ``hazards`` -- ``HazardDelta``s: findings of one trace without a
  counterpart in the other (hazard_match.py), and ``changed_hazards``:
  windows both traces have with other extents (hazard_pairs.py).

``jsonable`` turns the values a trace or a header may hold into what JSON
can say (every value the report carries went through it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .align import ARGS, CLASSES, ONLY_A, ONLY_B, Alignment


def jsonable(v: Any) -> Any:
    """A value of a trace or header as JSON can say it: containers copied
    with str keys, scalars as they are, anything else as its repr."""
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return repr(v)


@dataclass
class StateDiff:
    """The state difference after an aligned operation pair, where it changes."""

    pair: int
    op_a: int | None
    op_b: int | None
    seq_a: int            # state_at(seq_a) of A ...
    seq_b: int            # ... against state_at(seq_b) of B
    row: int              # last row of the pair
    changes: list[Any]         # [{"section", <identity>, "a": {...}, "b": {...}}]
    key: tuple[Any, ...] | None = None   # op-begin key of the operation it follows

    def to_json(self) -> dict[Any, Any]:
        return {"op_a": self.op_a, "op_b": self.op_b, "seq_a": self.seq_a, "seq_b": self.seq_b,
                "changes": self.changes}


@dataclass
class HazardDelta:
    """A finding present in one trace only, with its position in the alignment
    (one the other trace has with another extent is a hazard_pairs.ChangedHazard)."""

    side: str            # "a" | "b"
    finding: dict[Any, Any]
    row: int | None      # the row of its start event
    pair: int | None


@dataclass
class DiffReport:
    a: dict[Any, Any]
    b: dict[Any, Any]
    header_diff: list[Any]
    alignment: Alignment
    first_divergence: dict[Any, Any] | None
    state_diff: list[Any]
    hazards: list[HazardDelta]          # sorted by row
    hazards_available: bool
    differing_pairs: int = 0
    renumbered: int = 0
    state_note: str | None = None       # why the state comparison stopped early
    detail_truncated: bool = False
    presenters: tuple[Any, ...] = field(default=(None, None), repr=False)
    # windows both traces have with other extents (hazard_pairs.ChangedHazard), by row
    changed_hazards: list[Any] = field(default_factory=list)
    # real code against a model: what each side's projection normalised (projection.py)
    projection: dict[str, Any] | None = None
    # ... and each side's trace seq of the projection's event n at n - 1: the
    # alignment numbers kept events, what is shown are trace seqs (trace_seq)
    seq_maps: tuple[list[int], list[int]] | None = field(default=None, repr=False)

    def trace_seq(self, side: str, n: Any) -> Any:
        """The trace seq of the alignment's event ``n`` of side "a"/"b" (the
        same number unless projections were compared; None and 0 pass)."""
        if self.seq_maps is None or type(n) is not int or n <= 0:
            return n
        m = self.seq_maps[0 if side == "a" else 1]
        return m[n - 1] if n <= len(m) else n

    @property
    def equivalent(self) -> bool:
        """Same event payloads in the same operations (headers aside)."""
        return self.differing_pairs == 0 and self.renumbered == 0

    @property
    def damaged(self) -> bool:
        return not (self.a["complete"] and self.b["complete"])

    @property
    def exit_code(self) -> int:
        """docs/CLI.md#exit-codes: 3 damaged input > 1 different > 0 equivalent."""
        if self.damaged:
            return 3
        return 0 if self.equivalent else 1

    def hazard_delta(self) -> dict[Any, Any]:
        out: dict[str, Any] = {"only_a": [h.finding for h in self.hazards if h.side == "a"],
               "only_b": [h.finding for h in self.hazards if h.side == "b"],
               "changed": [c.to_json() for c in self.changed_hazards]}
        if not self.hazards_available:
            out["available"] = False
        return out

    # -- positions for the side-by-side view ----------------------------------------
    def next_hazard(self, row: int) -> HazardDelta | None:
        for h in self.hazards:
            if h.row is not None and h.row > row:
                return h
        return None

    def prev_hazard(self, row: int) -> HazardDelta | None:
        for h in reversed(self.hazards):
            if h.row is not None and h.row < row:
                return h
        return None

    def to_json(self) -> dict[Any, Any]:
        from .text import ops_json
        return {
            "equivalent": self.equivalent,
            "header_diff": self.header_diff,
            "first_divergence": self.first_divergence,
            "ops": ops_json(self),
            "state_diff": [s.to_json() for s in self.state_diff],
            "hazard_delta": self.hazard_delta(),
            "a": self.a,
            "b": self.b,
            "summary": self.summary(),
            "projection": self.projection,
        }

    def summary(self) -> dict[Any, Any]:
        al = self.alignment
        counts = {"same": 0, "different": 0, "only-a": 0, "only-b": 0}
        for p in al.pairs:
            counts[p.status] += p.n_ops
        rows = {c: 0 for c in CLASSES}
        for reg in al.regions:
            for c, n in reg.counts.items():
                rows[c] += n
        out: dict[str, Any] = {
            "op_pairs": sum(counts.values()), "ops_same": counts["same"], "ops_different": counts["different"],
            "ops_only_a": counts["only-a"], "ops_only_b": counts["only-b"], "ops_renumbered": self.renumbered,
            "regions": len(al.regions), "rows": al.n_rows,
            "rows_args": rows[ARGS], "rows_only_a": rows[ONLY_A], "rows_only_b": rows[ONLY_B],
            "rows_label_only": sum(reg.label_only for reg in al.regions)}
        if self.state_note:
            out["state_note"] = self.state_note
        if self.detail_truncated:
            out["detail_truncated"] = True
        return out


