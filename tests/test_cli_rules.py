"""The command-line rules every command follows, run as a user runs them (a
subprocess): one notation for positions, one rule for positions past the end,
one rule for writers, and what a bare `vtdtrace` prints.  The rules are
written down for users in docs/CLI.md."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO, make_events

SHIPPED = REPO / "traces" / "s1-usb-rmrr.direct.vtdt"
COUNT = 268          # events in the shipped s1 direct trace


@pytest.fixture
def DIRECT(tmp_path):   # noqa: N802 -- reads like the constant it replaces
    """A private copy of the shipped s1 direct trace: show and export write a
    sidecar beside the trace they read, never beside the shipped ones."""
    dst = tmp_path / "s1-usb-rmrr.direct.vtdt"
    shutil.copy(SHIPPED, dst)
    return dst


def run_in(cwd, *args):
    """`python -m vtdtrace ARGS` run from `cwd` (where a stray file named - would land)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "vtdtrace", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env)


def one_line(r, code):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("vtdtrace: "), r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr


# --- positions ---------------------------------------------------------------------------

def test_leading_zeros_are_decimal(run_cli, DIRECT):
    seven = run_cli("show", DIRECT, "--at", "7")
    assert seven.returncode == 0 and seven.stdout.startswith("step 7 of 268")
    assert run_cli("show", DIRECT, "--at", "007").stdout == seven.stdout
    assert run_cli("show", DIRECT, "--at", "00").stdout.startswith("step 0 of 268")
    log = run_cli("log", DIRECT, "--jsonl", "--from", "007", "--to", "0010")
    assert log.returncode == 0
    assert [line.split('"seq":')[1].split(",")[0] for line in log.stdout.splitlines()] == ["7", "8", "9", "10"]


@pytest.mark.parametrize("text,says", [
    ("0x10", "expected a decimal step number, got '0x10' (positions are decimal, as log prints them)"),
    ("1_0", "expected a decimal step number, got '1_0'"),
    ("+5", "expected a decimal step number, got '+5'"),
    ("5.0", "expected a decimal step number, got '5.0'"),
    ("-1", "steps start at 0, got -1"),
])
def test_other_notations_are_refused_with_one_line(run_cli, text, says, DIRECT):
    err = one_line(run_cli("show", DIRECT, f"--at={text}"), 2)
    assert err == f"vtdtrace: argument --at: {says}\n"
    err = one_line(run_cli("log", DIRECT, f"--from={text}"), 2)
    assert "--from" in err and ("decimal event number" in err or "events start at 1" in err)


@pytest.mark.parametrize("args,option,n", [
    (["show", "--at", str(COUNT + 1)], "--at", COUNT + 1),
    (["log", "--from", str(COUNT + 1)], "--from", COUNT + 1),
    (["log", "--to", "100000"], "--to", 100000),
    (["log", "--jsonl", "--from", "5", "--to", str(COUNT + 1)], "--to", COUNT + 1),
])
def test_a_step_past_the_end_is_exit_2_with_one_line(run_cli, args, option, n, DIRECT):
    r = run_cli(args[0], DIRECT, *args[1:])
    assert r.stdout == ""
    assert one_line(r, 2) == f"vtdtrace: {DIRECT}: {option} {n} is beyond the end: the trace ends at event {COUNT}\n"


def test_the_last_step_is_inside(run_cli, DIRECT):
    assert run_cli("show", DIRECT, "--at", str(COUNT)).returncode == 0
    r = run_cli("log", DIRECT, "--jsonl", "--from", str(COUNT), "--to", str(COUNT))
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1


def test_past_the_readable_end_of_a_damaged_trace(run_cli, write_trace, tmp_path):
    t = write_trace(make_events(500, seed=2), chunk_events=16)
    cut = tmp_path / "cut.vtdt"
    cut.write_bytes(t.read_bytes()[: t.stat().st_size // 2])
    r = run_cli("log", cut, "--jsonl", "--from", "400")
    # not a usage error: what is readable from there (nothing), then the damage line, exit 3
    assert r.stdout == "" and "is beyond the end" not in one_line(r, 3)
    r = run_cli("log", cut, "--jsonl", "--from", "5", "--to", "400")
    assert one_line(r, 3) and r.stdout.splitlines()[0].startswith('{"seq":5,')
    assert 5 < len(r.stdout.splitlines()) < 396


# --- writers -----------------------------------------------------------------------------

def test_record_and_synth_refuse_dash(run_cli, tmp_path):
    for args in (["record", "s1-usb-rmrr", "--engine", "direct", "-o", "-"],
                 ["synth", "--events", "10", "-o", "-"]):
        r = run_in(tmp_path, *args)
        assert one_line(r, 2) == ("vtdtrace: -o -: a trace cannot be written to stdout "
                                  "(it is binary and written with seeks); name a file\n")
        assert r.stdout == "" and not (tmp_path / "-").exists()


def test_export_never_overwrites_without_force(run_cli, tmp_path, DIRECT):
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n")
    for fmt in ("jsonl", "chrome"):
        r = run_cli("export", DIRECT, "--format", fmt, "-o", out)
        assert one_line(r, 2) == f"vtdtrace: {out}: exists (use --force to overwrite)\n"
        assert out.read_text() == "keep me\n"
    r = run_cli("export", DIRECT, "--format", "jsonl", "-o", out, "--force")
    assert r.returncode == 0 and r.stderr == ""
    assert out.read_text() == run_cli("log", DIRECT, "--jsonl").stdout


def test_export_dash_is_stdout_and_a_directory_is_refused(run_cli, tmp_path, DIRECT):
    r = run_in(tmp_path, "export", DIRECT, "--format", "jsonl", "-o", "-")
    assert r.returncode == 0 and r.stdout == run_cli("log", DIRECT, "--jsonl").stdout
    assert not (tmp_path / "-").exists()
    assert one_line(run_cli("export", DIRECT, "--format", "jsonl", "-o", tmp_path), 2) == \
        f"vtdtrace: {tmp_path}: is a directory\n"


def test_export_over_its_own_trace_is_refused_even_with_force(run_cli, tmp_path, DIRECT):
    t = tmp_path / "t.vtdt"
    shutil.copy(DIRECT, t)
    r = run_cli("export", t, "--format", "jsonl", "-o", t, "--force")
    assert one_line(r, 2) == f"vtdtrace: {t}: is the trace being exported; choose another file\n"
    assert t.read_bytes() == SHIPPED.read_bytes()


@pytest.mark.parametrize("args", [["record", "s1-usb-rmrr", "--engine", "direct"],
                                  ["synth", "--events", "10"]])
def test_trace_writers_never_overwrite_without_force(run_cli, tmp_path, args):
    out = tmp_path / "t.vtdt"
    out.write_bytes(b"precious")
    r = run_cli(*args, "-o", out)
    assert one_line(r, 2) == f"vtdtrace: {out}: exists (use --force to overwrite)\n"
    assert out.read_bytes() == b"precious"
    assert run_cli(*args, "-o", out, "--force").returncode == 0
    assert out.read_bytes()[:8] != b"precious"


# --- a bare vtdtrace ---------------------------------------------------------------------

def test_bare_vtdtrace_prints_a_short_usage_and_the_commands(run_cli):
    from vtdtrace.cli import COMMANDS

    r = run_cli()
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.splitlines()
    assert lines[0].startswith("usage: vtdtrace COMMAND")
    assert len(lines) <= 24                         # one screen
    for name, text in COMMANDS:
        assert any(line.split()[:1] == [name] and text in line for line in lines), name
    assert "--engine" not in r.stderr and "--json" not in r.stderr    # no per-command options
    assert "docs/CLI.md" in r.stderr


def test_help_points_at_the_cli_contracts(run_cli):
    r = run_cli("--help")
    assert r.returncode == 0 and "docs/CLI.md" in r.stdout
