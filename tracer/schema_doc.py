"""Generate the event catalogue of docs/FORMAT.md from tracer/schema.py.

    python -m tracer.schema_doc                       print the generated block
    python -m tracer.schema_doc --write docs/FORMAT.md   replace it in place
    python -m tracer.schema_doc --check docs/FORMAT.md   exit 1 if it is stale
    python -m tracer.schema_doc --fields              write tracer/schema_fields.py

The block sits between BEGIN and END marker comments, so the prose around it
is edited by hand and the tables never drift from the schema (a test checks).
"""

from __future__ import annotations

import argparse
import sys

from . import schema as S

BEGIN = "<!-- BEGIN GENERATED CATALOGUE (python -m tracer.schema_doc --write docs/FORMAT.md) -->"
END = "<!-- END GENERATED CATALOGUE -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def catalogue_markdown() -> str:
    prefix = ", ".join(f"{f}: {t}" for f, t in zip(S.PREFIX, S.PREFIX_TYPES))
    lines = [
        f"Schema version {S.SCHEMA_VERSION}, format {S.FORMAT_MAJOR}.{S.FORMAT_MINOR}. "
        f"Every event is `[kind: int, {prefix}, *fields]`; the table lists `fields` "
        "with their types (section 2.1) and the values allowed where a field has a rule (section 2.2).",
        "",
        "| code | kind | fields | values | meaning |",
        "|---:|---|---|---|---|",
    ]
    for k in S.KINDS:
        fields = ", ".join(f"`{f}: {t}`" for f, t in zip(k.fields, k.types)) or "—"
        rules = [(f, S.value_rule(k.name, f, t)) for f, t in zip(k.fields, k.types)]
        values = "; ".join(f"{f}: {r}" for f, r in rules if r) or "—"
        lines.append(f"| {k.code} | `{k.name}` | {fields} | {_cell(values)} | {_cell(k.doc)} |")
    lines += ["", "Function codes (`func`; append-only):", "",
              "| code | function | code | function | code | function |",
              "|---:|---|---:|---|---:|---|"]
    cells = [(i, f"`{name}`" if name else "(none: top-level bookkeeping)") for i, name in enumerate(S.FUNCS)]
    rows = (len(cells) + 2) // 3
    for r in range(rows):
        row = [cells[r + c * rows] if r + c * rows < len(cells) else ("", "") for c in range(3)]
        lines.append("| " + " | ".join(f"{i} | {n}" for i, n in row) + " |")
    return "\n".join(lines) + "\n"


FIELDS_MODULE = "tracer/schema_fields.py"


def _const(name: str) -> str:
    return name.upper().replace("-", "_")


def fields_module() -> str:
    """tracer/schema_fields.py: a name for every kind code and for every field's
    index inside an event array, so readers write ``ev[F_CTX_WRITE_NEW_LO]``
    instead of ``ev[12]``.  Generated, so the names never drift from the
    catalogue (tests/test_format_roundtrip.py checks)."""
    out = ['"""Kind codes and event-array field indices, generated from tracer/schema.py.',
           "",
           "Do not edit: run ``python -m tracer.schema_doc --fields``.  ``K_<KIND>`` is a",
           "kind's code (``ev[I_KIND]``); ``F_<KIND>_<FIELD>`` the index of one of its",
           "fields in the event array ``[kind, seq, cpu, op, func, label, *fields]``.",
           '"""',
           "",
           "from typing import Final",
           ""]
    for k in S.KINDS:
        out.append(f"K_{_const(k.name)}: Final = {k.code}")
    for k in S.KINDS:
        out.append("")
        out.append(f"# {k.name}")
        for i, f in enumerate(k.fields):
            out.append(f"F_{_const(k.name)}_{_const(f)}: Final = {S.F0 + i}")
    return "\n".join(out) + "\n"


def extract(doc: str) -> str | None:
    """The generated block currently in doc (without markers), or None."""
    try:
        start = doc.index(BEGIN) + len(BEGIN)
        end = doc.index(END, start)
    except ValueError:
        return None
    return doc[start:end].lstrip("\n")


def replace(doc: str) -> str:
    start = doc.index(BEGIN) + len(BEGIN)
    end = doc.index(END, start)
    return doc[:start] + "\n" + catalogue_markdown() + doc[end:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tracer.schema_doc", description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="FILE", help="replace the generated block in FILE")
    g.add_argument("--check", metavar="FILE", help="exit 1 if FILE's block is stale")
    g.add_argument("--fields", action="store_true", help=f"regenerate {FIELDS_MODULE}")
    args = ap.parse_args(argv)
    if args.fields:
        with open(FIELDS_MODULE, "w", encoding="utf-8") as f:
            f.write(fields_module())
        return 0
    if not (args.write or args.check):
        sys.stdout.write(catalogue_markdown())
        return 0
    path = args.write or args.check
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    if extract(doc) is None:
        print(f"{path}: no generated-catalogue markers", file=sys.stderr)
        return 2
    if args.check:
        if extract(doc) != catalogue_markdown():
            print(f"{path}: event catalogue is stale; run python -m tracer.schema_doc --write {path}",
                  file=sys.stderr)
            return 1
        return 0
    new = replace(doc)
    if new != doc:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
