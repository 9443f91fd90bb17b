"""Deterministic renderings of a DiffReport: readable text and the ``ops``
part of the JSON (docs/CLI.md#diff-json).

Nothing here depends on the machine, the locale or dict/set iteration order
of anything but the report, so the same two traces always print the same
bytes (golden-file tested).

Text markers for rows inside a difference region (a region is a run of
differing rows inside one aligned operation):

    ~ A / B   the same event with other field values (the fields in brackets)
    = A B     the same event, the same values, another step label (the two
              engines name the same step differently: PM4 / MO5); counted
              apart, and left out with ``hide_label_only``
    - A       an event only trace A has
    + B       an event only trace B has
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from replay.codes import Event
from replay.hazards.findings import boundary_label
from replay.jsonout import EventPresenter
from tracer.schema import I_FUNC, I_KIND, I_LABEL

from .align import ARGS, CLASSES, LABEL_ONLY, ONLY_A, ONLY_B, SAME, OpPair, Region, func_name, kind_name
from .hazard_pairs import ChangedHazard
from .report import DiffReport, StateDiff

Write = Callable[[str], None]

# Text limits (JSON is never cut, except where the report itself kept no
# detail -- see report.DETAIL_ROWS).
TEXT_PAIRS = 100        # differing operations shown
TEXT_ROWS = 60          # rows shown per region
TEXT_STATE = 60         # state-difference entries shown
TEXT_CHANGES = 40       # changes shown per state-difference entry


# --------------------------------------------------------------------------------
# Operation descriptions


def op_title(report: DiffReport, pair: OpPair) -> str:
    """'op 1 assign 0000:00:14.0 -> guest' (A's numbering, B's when A lacks it;
    'op 3/4' when the two number it differently)."""
    side = 0 if pair.key_a is not None or pair.op_a is not None else 1
    key = pair.key_a if side == 0 else pair.key_b
    op = pair.op_a if side == 0 else pair.op_b
    num = f"{op}" if pair.op_a is None or pair.op_b is None or pair.op_a == pair.op_b \
        else f"{pair.op_a}/{pair.op_b}"
    pres = report.presenters[side]
    parts = [f"op {num}"]
    if pair.part:
        parts.append(f"(continued, part {pair.part + 1})")
    d = key_desc(key, pres)
    if d:
        parts.append(d)
    return " ".join(parts)


def key_desc(key: Any, pres: EventPresenter) -> str:
    """An op-begin key (verb, seg, bdf, domain) as 'assign 0000:00:14.0 -> guest'."""
    if not key:
        return ""
    verb, seg, bdf, dom = (tuple(key) + (None,) * 4)[:4]
    out = [str(verb)]
    if type(bdf) is int:
        out.append(f"{seg if type(seg) is int else 0:04x}:{(bdf >> 8) & 0xFF:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}")
    if dom is not None and pres is not None:
        name = pres.names.domain(dom)
        out.append(("-> " if verb in ("assign", "quarantine", "add") else "") + str(name))
    return " ".join(out)


def _key_json(key: Any, pres: EventPresenter) -> dict[str, Any]:
    verb, seg, bdf, dom = (tuple(key or ()) + (None,) * 4)[:4]
    dev = None
    if type(bdf) is int:
        dev = f"{seg if type(seg) is int else 0:04x}:{(bdf >> 8) & 0xFF:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"
    return {"verb": verb if isinstance(verb, str) or verb is None else str(verb), "device": dev,
            "domain": pres.names.domain(dom) if dom is not None and pres is not None else None}


def _range(report: DiffReport, side: str, first: int, count: int) -> list[int] | None:
    ts = report.trace_seq
    return [ts(side, first), ts(side, first + count - 1)] if count else None


# --------------------------------------------------------------------------------
# JSON: ops


def ops_json(report: DiffReport) -> list[dict[str, Any]]:
    """The aligned operation pairs that are not identical."""
    out = []
    al = report.alignment
    for pair in al.pairs:
        if pair.status == SAME and pair.op_a == pair.op_b:
            continue
        side = 0 if pair.key_a is not None or pair.count_a else 1
        key = pair.key_a if side == 0 else pair.key_b
        d = {"op_a": pair.op_a, "op_b": pair.op_b, **_key_json(key, report.presenters[side]),
             "status": pair.status if pair.status != SAME else "renumbered",
             "seq_a": _range(report, "a", pair.first_a, pair.count_a),
             "seq_b": _range(report, "b", pair.first_b, pair.count_b),
             "events_a": pair.count_a, "events_b": pair.count_b}
        if pair.key_a != pair.key_b and pair.key_a is not None and pair.key_b is not None:
            d["b"] = _key_json(pair.key_b, report.presenters[1])
        if pair.part:
            d["part"] = pair.part
        if pair.n_ops != 1:
            d["ops"] = pair.n_ops
        d["regions"] = [_region_json(report, pair, al.regions[r]) for r in pair.regions]
        out.append(d)
    return out


def _region_json(report: DiffReport, pair: OpPair, reg: Region) -> dict[str, Any]:
    ts = report.trace_seq
    d = {"seq_a": [ts("a", n) for n in reg.seq_a] if reg.seq_a else None,
         "seq_b": [ts("b", n) for n in reg.seq_b] if reg.seq_b else None,
         "in": list(reg.path), "counts": {c: reg.counts[c] for c in CLASSES if reg.counts.get(c)},
         "label_only": reg.label_only}
    kept = pair.kept_events()
    if kept is None:
        d["rows"] = None
        return d
    events_a, events_b = kept
    rows = []
    pa, pb = report.presenters
    r = pair.rows
    assert r is not None        # a pair with kept events has rows
    for k in range(reg.row_start - pair.row_start, reg.row_end - pair.row_start):
        cls = CLASSES[r.cls[k]]
        ia, ib = r.ia[k], r.ib[k]
        row: dict[str, Any] = {"class": cls, "seq_a": ts("a", r.sa[k]) or None, "seq_b": ts("b", r.sb[k]) or None}
        if cls == ARGS:
            row["fields"] = list(r.fields.get(k, ()))
        row["a"] = _quoted(report, "a", pa.to_json(events_a[ia])) if ia >= 0 else None
        row["b"] = _quoted(report, "b", pb.to_json(events_b[ib])) if ib >= 0 else None
        rows.append(row)
    d["rows"] = rows
    return d


def _quoted(report: DiffReport, side: str, d: dict[str, Any]) -> dict[str, Any]:
    if report.seq_maps is not None and "seq" in d:
        d["seq"] = report.trace_seq(side, d["seq"])
    return d


# --------------------------------------------------------------------------------
# Text


def event_line(pres: EventPresenter, ev: Event, label: bool = True) -> str:
    """'LABEL kind func args' for one event."""
    kind = kind_name(ev[I_KIND])
    if kind is None:
        return pres.text_args(ev)
    func = func_name(ev[I_FUNC])
    head = f"{kind} {func}" if func else kind
    if label:
        head = f"{ev[I_LABEL]:<5} {head}"
    return f"{head} {pres.text_args(ev)}".rstrip()


def _side_desc(info: dict[Any, Any]) -> str:
    bits = [str(info.get("scenario") or "?"), str(info.get("engine") or "?")]
    cx = info.get("cx16")
    if cx is not None:
        bits.append("cx16" if cx else "no-cx16")
    bits.append(f"{info.get('events', 0)} events")
    if not info.get("complete", True):
        bits.append("DAMAGED")
    return ", ".join(bits)


def render_text(report: DiffReport, hide_label_only: bool = False) -> str:
    """The text report; ``hide_label_only`` leaves the rows that differ only
    in their step label out of the listing (they are still counted)."""
    out: list[str] = []
    w = out.append
    a, b = report.a, report.b
    w(f"A: {a['trace']}  ({_side_desc(a)})")
    w(f"B: {b['trace']}  ({_side_desc(b)})")
    for side, info in (("A", a), ("B", b)):
        stop = info.get("stop")
        if stop:
            w(f"   {side} is damaged: {stop['kind']} at byte {stop['offset']} (chunk {stop['chunk']}, "
              f"last good seq {stop['last_good_seq']}): {stop['message']}; comparing its readable part")
    hd = report.header_diff
    if hd:
        w(f"header: {len(hd)} field{'s' if len(hd) != 1 else ''} differ (headers do not count for equivalence)")
        for h in hd[:20]:
            if h["path"] == "schedule.choices":
                # the interleaving: none is the default (run to completion in listed order)
                w(f"  schedule: {h['a'] or 'default'} | {h['b'] or 'default'}")
                continue
            w(f"  {h['path']}: {_short(h['a'])} | {_short(h['b'])}")
        if len(hd) > 20:
            w(f"  ... {len(hd) - 20} more")
    else:
        w("header: identical")
    _projection_text(report, w)
    s = report.summary()
    w("")
    if report.equivalent:
        same = "the same kept events" if report.projection is not None else "the same events"
        w(f"result: EQUIVALENT -- {s['op_pairs']} operations, {same}")
    else:
        parts = []
        if s["ops_different"]:
            parts.append(f"{s['ops_different']} differ")
        if s["ops_only_a"]:
            parts.append(f"{s['ops_only_a']} only in A")
        if s["ops_only_b"]:
            parts.append(f"{s['ops_only_b']} only in B")
        if s["ops_renumbered"]:
            parts.append(f"{s['ops_renumbered']} renumbered")
        w(f"result: DIFFERENT -- {s['op_pairs']} aligned operations: {', '.join(parts)}; "
          f"{s['regions']} difference region{'s' if s['regions'] != 1 else ''} "
          f"({_row_counts(s['rows_args'], s['rows_label_only'], s['rows_only_a'], s['rows_only_b'])})")
    _first_text(report, w)
    _ops_text(report, w, hide_label_only)
    _state_text(report, w)
    _hazard_text(report, w)
    # Names, labels and values come from the traces: one terminal-safe line each.
    from replay.jsonout import safe_text
    return "\n".join(map(safe_text, out)) + "\n"


def _projection_text(report: DiffReport, w: Write) -> None:
    """Real code against a model: what was compared, and how often each
    known recording difference was normalised (projection.py)."""
    p = report.projection
    if p is None:
        return
    a, b = p["a"], p["b"]
    w("")
    w("compared: real code against a model, on what the IOMMU and the DID allocator see")
    w("  kept: stores, DID bookkeeping, flushes, ownership, identity maps, operations,")
    w(f"        return codes ({a['kept']} of A's {a['events']} events, {b['kept']} of B's {b['events']})")
    w("  left out: calls, locks, step labels, page-table allocations, log lines and")
    w("        rollback brackets, each side's own (docs/REALCODE.md#normalisation)")
    w(f"  normalised: a root entry written as two 64-bit stores: A {a['root_stores_merged']}, "
      f"B {b['root_stores_merged']} merged")
    w(f"  normalised: flushes recorded after register_lock was dropped: A {a['flushes_after_lock']}, "
      f"B {b['flushes_after_lock']}")
    w(f"  normalised: DID stores of the value already there: A {a['unchanged_did_stores']}, "
      f"B {b['unchanged_did_stores']} dropped")
    w("  seqs below are each trace's own")


def _short(v: Any) -> str:
    if isinstance(v, str):
        return v
    from replay.jsonout import dumps, json_safe
    return dumps(json_safe(v))


def _first_text(report: DiffReport, w: Write) -> None:
    f = report.first_divergence
    if f is None:
        return
    w("")
    cls = f["class"]
    what = {"only-a": "an event only A has", "only-b": "an event only B has",
            "args": "the same event with other values", "state": "the same events, a different state"}[cls]
    fields = f" [{', '.join(f['fields'])}]" if f.get("fields") else ""
    race = f.get("race")
    if race is not None:
        w(race_text(race))
    w(f"first divergence: A seq {f['seq_a']}, B seq {f['seq_b']} (op {_opnum(f)}): {cls}, {what}{fields}")
    ctx = f.get("context") or []
    if ctx:
        w("  after these common events:")
        for c in ctx:
            w(f"    {c['seq_a']:>7} | {c['seq_b']:<7} {c.get('label') or '':<5} {c.get('kind')} "
              f"{c.get('func') or ''} {c.get('text') or ''}".rstrip())
    for side in ("a", "b"):
        e = f.get(f"event_{side}")
        if e is not None:
            w(f"  {side.upper()} {e['seq']:>7}  {e.get('label') or '':<5} {e.get('kind')} {e.get('func') or ''} "
              f"{e.get('text') or ''}".rstrip())


def race_text(race: dict[str, Any]) -> str:
    """One line naming the racing events of two schedules: "first divergence
    at seq 57: A runs CPU 0 cleanup_domid_map DK4 did-map, B runs CPU 1
    context_set_domain_id MO5 did-map"."""
    at = (f"seq {race['seq_a']}" if race["seq_a"] == race["seq_b"]
          else f"A seq {race['seq_a']}, B seq {race['seq_b']}")
    return f"first divergence at {at}: A runs {_runs(race['a'])}, B runs {_runs(race['b'])}"


def _runs(e: dict[str, Any]) -> str:
    who = "a device's DMA" if e.get("cpu") == -1 else f"CPU {e.get('cpu')}"
    func = e.get("func") if e.get("func") not in ("", None) else None
    parts = [who, f"op {e.get('op')}" if e.get("kind") in ("op-begin", "op-end") else None,
             func, e.get("label") or None, e.get("kind")]
    if e.get("kind") in ("op-begin", "op-end", "lock", "unlock", "lock-wait"):
        parts.append(e.get("text") or None)
    return " ".join(str(p) for p in parts if p is not None)


def _opnum(f: dict[str, Any]) -> str:
    if f.get("op_a") == f.get("op_b") or f.get("op_b") is None:
        return str(f.get("op_a"))
    if f.get("op_a") is None:
        return str(f.get("op_b"))
    return f"{f['op_a']}/{f['op_b']}"


def _ops_text(report: DiffReport, w: Write, hide_label_only: bool = False) -> None:
    al = report.alignment
    shown = 0
    hidden = 0
    same = 0
    header = False
    for pair in al.pairs:
        if pair.status == SAME and pair.op_a == pair.op_b:
            same += pair.n_ops
            continue
        if not header:
            w("")
            w("operations")
            header = True
        if shown >= TEXT_PAIRS:
            hidden += 1
            continue
        shown += 1
        _pair_text(report, pair, w, hide_label_only)
    if hidden:
        w(f"  ... {hidden} more differing operations (see --json)")
    if header and same:
        w(f"  ({same} identical operation{'s' if same != 1 else ''} not shown)")


def _pair_text(report: DiffReport, pair: OpPair, w: Write, hide_label_only: bool = False) -> None:
    ts = report.trace_seq
    ra = f"A {ts('a', pair.first_a)}..{ts('a', pair.last_a)}" if pair.count_a else "A -"
    rb = f"B {ts('b', pair.first_b)}..{ts('b', pair.last_b)}" if pair.count_b else "B -"
    status = PAIR_STATUS[pair.status]
    title = op_title(report, pair)
    if pair.key_a != pair.key_b and pair.key_a is not None and pair.key_b is not None:
        title += f"  (B: {key_desc(pair.key_b, report.presenters[1])})"
    w(f"  {title}: {status}  [{ra}, {rb}]")
    al = report.alignment
    pa, pb = report.presenters
    labels_only = 0         # regions left out whole: every row differs only in its step label
    for n, ri in enumerate(pair.regions, 1):
        reg = al.regions[ri]
        if hide_label_only and reg.label_only == reg.row_end - reg.row_start:
            labels_only += 1
            continue
        sa = f"A {ts('a', reg.seq_a[0])}..{ts('a', reg.seq_a[1])}" if reg.seq_a else "A -"
        sb = f"B {ts('b', reg.seq_b[0])}..{ts('b', reg.seq_b[1])}" if reg.seq_b else "B -"
        where = f" in {' > '.join(reg.path)}" if reg.path else ""
        counts = region_counts(reg)
        w(f"    region {n}: {sa}, {sb}{where} ({counts})")
        kept = pair.kept_events()
        if kept is None:
            w("      (rows not kept: too many differences; see the counts)")
            continue
        events_a, events_b = kept
        r = pair.rows
        assert r is not None        # a pair with kept events has rows
        k0 = reg.row_start - pair.row_start
        k1 = reg.row_end - pair.row_start
        listed = 0
        for k in range(k0, k1):
            cls = CLASSES[r.cls[k]]
            ia, ib = r.ia[k], r.ib[k]
            if cls == ARGS and hide_label_only and r.fields.get(k) == LABEL_ONLY:
                continue
            if listed >= TEXT_ROWS:
                break
            listed += 1
            if cls == ARGS:
                fields = r.fields.get(k, ())
                eva, evb = events_a[ia], events_b[ib]
                if fields == LABEL_ONLY:
                    # The same values under another step label: one line, both labels.
                    w(f"      = A {ts('a', r.sa[k]):>7}  B {ts('b', r.sb[k]):<7} {eva[I_LABEL]}/{evb[I_LABEL]} "
                      f"{event_line(pa, eva, label=False)}")
                    continue
                w(f"      ~ A {ts('a', r.sa[k]):>7}  {event_line(pa, eva)}")
                w(f"        B {ts('b', r.sb[k]):>7}  {event_line(pb, evb)}  [{', '.join(fields)}]")
            elif cls == ONLY_A:
                w(f"      - A {ts('a', r.sa[k]):>7}  {event_line(pa, events_a[ia])}")
            elif cls == ONLY_B:
                w(f"      + B {ts('b', r.sb[k]):>7}  {event_line(pb, events_b[ib])}")
        more = k1 - k0 - (reg.label_only if hide_label_only else 0) - listed
        if more > 0:
            w(f"      ... {more} more rows")
        if hide_label_only and reg.label_only:
            w(f"      ({_n(reg.label_only, 'row')} differing only in step labels not shown)")
    if labels_only:
        w(f"    ({_n(labels_only, 'region')} differing only in step labels not shown)")


# a row class and an op pair's status as the text says them (the diff view too)
CLASS_NAMES = {ARGS: "changed", ONLY_A: "only in A", ONLY_B: "only in B", SAME: "same"}
PAIR_STATUS = {"different": "different", "only-a": "only in A", "only-b": "only in B",
               "same": "same events, renumbered"}


def region_counts(reg: Region) -> str:
    """'1 changed, 27 only in step labels, 6 only in A, 1 only in B'."""
    return _row_counts(reg.counts.get(ARGS, 0), reg.label_only, reg.counts.get(ONLY_A, 0),
                       reg.counts.get(ONLY_B, 0))


def _row_counts(args: int, label_only: int, only_a: int, only_b: int) -> str:
    """Row counts by class, the rows differing only in step labels apart
    from those whose values differ; zero counts left out."""
    parts = [(args - label_only, CLASS_NAMES[ARGS]), (label_only, "only in step labels"),
             (only_a, CLASS_NAMES[ONLY_A]), (only_b, CLASS_NAMES[ONLY_B])]
    return ", ".join(f"{n} {what}" for n, what in parts if n) or "none"


def _n(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _state_text(report: DiffReport, w: Write) -> None:
    sd = report.state_diff
    w("")
    if not sd:
        note = f" ({report.state_note})" if report.state_note else ""
        w(f"state: the same at every aligned operation boundary{note}")
        return
    w("state difference at aligned operation boundaries (listed where it changes)")
    for n, s in enumerate(sd):
        if n >= TEXT_STATE:
            w(f"  ... {len(sd) - TEXT_STATE} more (see --json)")
            break
        title = _boundary_title(report, s)
        if not s.changes:
            w(f"  after {title} (A seq {s.seq_a}, B seq {s.seq_b}): the same again")
            continue
        w(f"  after {title} (A seq {s.seq_a}, B seq {s.seq_b}): {len(s.changes)} difference"
          f"{'s' if len(s.changes) != 1 else ''}")
        for c in s.changes[:TEXT_CHANGES]:
            w(f"    {change_text(c)}")
        if len(s.changes) > TEXT_CHANGES:
            w(f"    ... {len(s.changes) - TEXT_CHANGES} more")
    if report.state_note:
        w(f"  ({report.state_note})")


def _boundary_title(report: DiffReport, s: StateDiff) -> str:
    num = f"{s.op_a}" if s.op_a == s.op_b or s.op_b is None else f"{s.op_a}/{s.op_b}"
    desc = key_desc(s.key, report.presenters[0]) if s.key else ""
    return f"op {num} {desc}".rstrip()


def change_text(c: dict[Any, Any]) -> str:
    """One state change as one line (also the diff view's detail pane)."""
    sec = c["section"]
    if sec == "context":
        what = f"context {c['rid']} (iommu {c['iommu']})"
    elif sec == "dids":
        what = f"DID {c['did']} (iommu {c['iommu']})"
    elif sec == "devices":
        what = f"device {c['bdf']}"
    elif sec == "idmaps":
        what = f"identity map {c['domain']} {c['base']}..{c['end']}"
    elif sec == "domains":
        what = f"domain {c['domain']}"
    else:
        what = f"caches of iommu {c['iommu']}"
    return f"{what}: A {_fields_text(c['a'])} | B {_fields_text(c['b'])}"


def _fields_text(d: dict[Any, Any]) -> str:
    if not d:
        return "-"
    parts = []
    for k, v in d.items():
        if isinstance(v, list):
            v = "[" + "; ".join(_item_text(x) for x in v) + "]"
        else:
            v = _item_text(v)
        parts.append(f"{k}={v}")
    return " ".join(parts)


def _item_text(x: Any) -> str:
    """A value at any depth in the notation of the rest of the text (yes/no,
    - for none; addresses are already hex strings), never a Python repr."""
    if isinstance(x, dict):
        return " ".join(f"{k}={_item_text(v)}" for k, v in x.items())
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_item_text(v) for v in x) + "]"
    if x is None:
        return "-"
    if x is True:
        return "yes"
    if x is False:
        return "no"
    return str(x)


def _hazard_text(report: DiffReport, w: Write) -> None:
    w("")
    if not report.hazards_available:
        w("hazard delta: not computed (this build has no hazard analysers)")
        return
    ha = [h for h in report.hazards if h.side == "a"]
    hb = [h for h in report.hazards if h.side == "b"]
    changed = report.changed_hazards
    if not ha and not hb and not changed:
        w("hazard delta: none (the same findings in the same operations)")
        return
    w("hazard delta")
    for label, items in (("only in A", ha), ("only in B", hb)):
        w(f"  {label}: {len(items) if items else 'none'}")
        for h in items:
            w(f"    {finding_text(h.finding)}")
    if changed:
        w(f"  changed (both traces, another extent): {len(changed)}")
        for c in changed:
            w(f"    {changed_text(c)}")


def changed_text(c: ChangedHazard) -> str:
    """A window both traces have with other extents, as one line."""
    a, b = c.a.finding, c.b.finding
    dev = a.get("device") or a.get("rid") or "-"
    return f"{a.get('kind')} {dev} ({a.get('severity') or '-'}): A {_extent(a)} | B {_extent(b)}"


def _extent(f: dict[Any, Any]) -> str:
    end = f.get("end")
    return f"[{f.get('start')}, {end if end is not None else 'end'}) {_labels(f)}"


def _labels(f: dict[Any, Any]) -> str:
    """``start -> end`` by step label; an unlabelled boundary is an op-end
    event (replay.hazards.findings.boundary_label: the rule check uses)."""
    end = f.get("end")
    return (f"{boundary_label(f.get('start_label'))} -> "
            f"{'open' if end is None else boundary_label(f.get('end_label'))}")


def finding_text(f: dict[Any, Any]) -> str:
    """One finding as one line (also the diff view's detail pane)."""
    end = f.get("end")
    rng = f"[{f.get('start')}, {end if end is not None else 'end'})"
    labels = _labels(f)
    dev = f.get("device") or f.get("rid") or "-"
    sev = f.get("severity") or "-"
    detail = f"  {f['detail']}" if f.get("detail") else ""
    return f"{f.get('kind')} {dev} {rng} {labels} ({sev}){detail}"
