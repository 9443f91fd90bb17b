"""`vtdtrace view` in a real pseudo-terminal: first frame and key -> frame.

The app runs in a child process on a pty (the real Linux driver, ANSI encoded
and written to the terminal), with a probe inside it (tui/app.py
``latency_probe``):

* **first frame**: from just before the parent spawns the child (wall clock)
  to the return of the child's first ``App._display`` with a frame -- so it
  includes interpreter start, imports and opening the trace.  Measured on a
  shipped trace (hundreds of events) and on synthesised traces up to
  ``--events``: the goal is <= 1.5 s and no growth with the length.
* **key -> frame written**: from the Key event's timestamp (taken by the
  driver's input thread when the key arrives) to the return of the first
  ``App._display`` after it (frame encoded and handed to the terminal
  writer), for: step (``n``), next hazard (``]``), go to step (``g`` N
  enter, timed from enter) and previous write (``W``).  Only after loading
  has finished (the loader shares the GIL); the parent spaces keys so none
  queues behind another.  Keys that draw nothing (nowhere to go) are not
  counted.  The Pilot's own wall time includes harness sleeps and is not
  used.

Large traces come from ``python -m vtdtrace synth`` into bench/.cache/ and are
reused; their sidecar is warmed in a separate process first so "loading
finished" is reached in seconds (the cold load time is reported too).

    python -m bench tui --events 10000000
    python -m bench.tui_bench --child TRACE OUT.json READY   (internal)
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

from bench import Options, Result, section

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "bench" / ".cache"
SHIPPED = REPO / "traces" / "s1-usb-rmrr.direct-nocx16.vtdt"
SIZE = (120, 40)
KEY_GAP = 0.06          # seconds between steps: longer than any expected frame
JUMP_GAP = 0.2          # between jumps: a user reads the screen before the next one


# --- the child: the app with a probe ---------------------------------------------------------

class Probe:
    """Pairs each key with the first frame written after it that shows its
    effect: the cursor moved (a go-to's enter first closes the prompt; the
    frame that counts is the one with the new step).  Keys that move
    nothing are not counted."""

    def __init__(self) -> None:
        self.pending: tuple[str, float, float, Any] | None = None
        self.samples: list[tuple[str, float]] = []
        self.cpu: list[float] = []          # main-thread CPU seconds of each sample
        self.first_frame_wall: float | None = None
        self.keys: list = []                # every key seen, with the cursor then (diagnosis)

    def event(self, event, app=None) -> None:
        from textual import events
        if isinstance(event, events.Key):
            cursor = app_cursor(app)
            self.keys.append((event.key, cursor))
            self.pending = (event.key, event.time, time.thread_time(), cursor)

    def displayed(self, app, renderable) -> None:
        now = time.monotonic()
        if self.first_frame_wall is None:
            self.first_frame_wall = time.time()
        if self.pending is not None:
            key, t0, c0, cursor = self.pending
            if cursor is not None and app_cursor(app) == cursor:
                return                       # this frame is not the key's effect (yet)
            self.pending = None
            self.samples.append((key, now - t0))
            self.cpu.append(time.thread_time() - c0)


def app_cursor(app):
    """What a key moves: the trace view's step, the diff view's row and
    active side; None for an app with neither (the bare list: every frame
    after a key counts)."""
    model = getattr(app, "model", None)
    if model is not None:
        return model.cursor
    dm = getattr(app, "dm", None)
    if dm is not None:
        return (dm.row, dm.active)
    return None


def child_main(trace: str, out: str, ready: str) -> int:
    import tui
    tui.prepare_environment()           # as `vtdtrace view` does, before Textual loads
    from tui.app import VtdtraceApp
    from tui.loader import FindingsLoaded, LoadFailed

    probe = Probe()
    t_load = time.monotonic()

    class BenchApp(VtdtraceApp):
        def on_findings_loaded(self, message: FindingsLoaded) -> None:
            self._ready_timer = self.set_interval(0.05, self._bench_ready)

        def on_load_failed(self, message: LoadFailed) -> None:
            self._ready_timer = self.set_interval(0.05, self._bench_ready)

        def _bench_ready(self) -> None:
            # loading finished, including the collection that follows it
            if not self.settled or Path(ready).exists():
                return
            self._ready_timer.stop()
            Path(ready).write_text(json.dumps({"load_seconds": time.monotonic() - t_load,
                                               "count": self.model.count,
                                               "error": self.model.load_error}))

    app = BenchApp(trace)
    app.latency_probe = probe
    prof = os.environ.get("VTDT_BENCH_PROFILE")
    if prof:                                 # diagnosis: cProfile the whole child
        import cProfile
        cProfile.runctx("app.run()", globals(), {"app": app}, prof)
    else:
        app.run()
    Path(out).write_text(json.dumps({"first_frame_wall": probe.first_frame_wall,
                                     "samples": probe.samples, "cpu": probe.cpu, "keys": probe.keys}))
    app.model.close()
    return 0


def bare_child_main(rows: str, out: str, ready: str) -> int:
    """The same-run baseline (docs/TUI.md#latency-what-was-done-and-what-it-measures): a bare Line-API list of
    ``rows`` rows with a cursor, n moving it one row (scrolling by one at the
    edge), nothing else on screen."""
    import tui
    tui.prepare_environment()
    from rich.segment import Segment
    from rich.style import Style
    from textual.app import App
    from textual.binding import Binding
    from textual.geometry import Size
    from textual.scroll_view import ScrollView
    from textual.strip import Strip

    n_rows = int(rows)
    probe = Probe()

    class Bare(ScrollView, can_focus=True):
        cursor = 0

        def on_mount(self) -> None:
            self.virtual_size = Size(0, n_rows)

        def render_line(self, y: int) -> Strip:
            row = round(self.scroll_y) + y
            style = Style(reverse=True) if row == self.cursor else Style()
            return Strip([Segment(f"{row:>9} 0  1 MO7   domain_context_mapping_one ctx-write     "
                                  f"iommu=0 bdf=0000:00:14.0 half=lo", style)]).adjust_cell_length(
                self.size.width, style)

    class BareApp(App):
        BINDINGS = [Binding("n", "down", "down"), Binding("q", "quit", "quit")]

        def compose(self):
            yield Bare()

        def on_mount(self) -> None:
            self.call_after_refresh(lambda: Path(ready).write_text(json.dumps({"load_seconds": 0,
                                                                                 "count": n_rows})))

        def action_down(self) -> None:
            b = self.query_one(Bare)
            old = b.cursor
            b.cursor += 1
            top, height = round(b.scroll_y), b.size.height
            if b.cursor >= top + height:
                b.scroll_to(y=b.cursor - height + 1, animate=False)
            else:
                b.refresh_line(old)
                b.refresh_line(b.cursor)

        async def on_event(self, event) -> None:
            probe.event(event)
            await super().on_event(event)

        def _display(self, screen, renderable) -> None:
            super()._display(screen, renderable)
            if renderable is not None:
                probe.displayed(self, renderable)

    BareApp().run()
    Path(out).write_text(json.dumps({"first_frame_wall": probe.first_frame_wall, "samples": probe.samples,
                                     "cpu": probe.cpu}))
    return 0


# --- the parent: a pty, keys, timing -------------------------------------------------------------

class Terminal:
    """The child on a pseudo-terminal of a fixed size; its output is drained."""

    def __init__(self, trace, size=SIZE, mode: str = "--child", module: str = "bench.tui_bench") -> None:
        self.dir = tempfile.mkdtemp(prefix="vtdt-tui-bench-")
        self.out = os.path.join(self.dir, "out.json")
        self.ready = os.path.join(self.dir, "ready.json")
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = dict(os.environ, TERM="xterm-256color", TEXTUAL_ANIMATIONS="none", COLUMNS=str(size[0]),
                   LINES=str(size[1]))
        self.master = master
        self.spawn_wall = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", module, mode, str(trace),
                                      self.out, self.ready],
                                     stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env,
                                     start_new_session=True)
        os.close(slave)
        self.bytes = 0
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def press(self, keys: bytes, gap: float = KEY_GAP) -> None:
        """Send keys, then leave the app ``gap`` seconds to draw (so no key
        queues behind another)."""
        self.send(keys)
        time.sleep(gap)

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if os.path.exists(self.ready):
                try:
                    return json.loads(Path(self.ready).read_text())
                except ValueError:
                    pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited early ({self.proc.returncode})")
            time.sleep(0.05)
        raise TimeoutError("the app did not finish loading")

    def wait_output(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while self.bytes == 0 and time.time() < deadline:
            time.sleep(0.01)

    def quit(self, timeout: float = 30.0) -> dict:
        self.send(b"\x1b")            # close a modal left open, if any
        time.sleep(0.4)
        self.send(b"q")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        os.close(self.master)
        return json.loads(Path(self.out).read_text())


def synth_trace(events: int) -> Path:
    """A synthesised trace of at least ``events`` events, cached under bench/.cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"synth-{events}.vtdt"
    if not path.exists():
        tmp = path.with_suffix(".part")
        subprocess.run([sys.executable, "-m", "vtdtrace", "synth", "--events", str(events), "-o", str(tmp),
                        "--force"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        os.replace(tmp, path)
    return path


def warm_sidecar(path: Path) -> float:
    """Build the index, checkpoints and findings into the sidecar in a separate
    process; returns its wall time (0 when the sidecar was already fresh)."""
    script = ("import sys, time\n"
              "from replay.session import ReplaySession\n"
              "from replay.hazards import findings_for_trace\n"
              "t = time.perf_counter()\n"
              "s = ReplaySession(sys.argv[1]); built = s.built; s.close()\n"
              "f = findings_for_trace(sys.argv[1], sidecar=True)\n"
              "print(0.0 if (not built and f.from_cache) else time.perf_counter() - t)\n")
    r = subprocess.run([sys.executable, "-c", script, str(path)], cwd=REPO, check=True, capture_output=True,
                       text=True)
    return float(r.stdout.strip() or 0)


def first_frame(trace, reps: int, **child) -> float:
    """Median wall time from spawning the child to its first frame
    (``child``: Terminal's mode/module, for another app)."""
    times = []
    for _ in range(reps):
        term = Terminal(trace, **child)
        term.wait_output()
        time.sleep(0.3)
        res = term.quit()
        times.append(res["first_frame_wall"] - term.spawn_wall)
    return statistics.median(times)


def latencies(trace: Path, steps: int, jumps: int) -> tuple[dict, dict]:
    term = Terminal(trace)
    info = term.wait_ready(timeout=3600)
    count = info["count"]
    time.sleep(0.5)
    rnd = random.Random(1)
    press = term.press
    for _ in range(steps):
        press(b"n")
    press(b"g", 0.3)
    press(b"1", 0.1)
    press(b"\r", 0.3)                       # back to the start for the hazards
    for _ in range(jumps):
        press(b"]", JUMP_GAP)
    for _ in range(jumps):
        press(b"g", 0.3)                   # the prompt must be up before the digits
        press(str(rnd.randrange(1, count + 1)).encode(), 0.1)
        press(b"\r", JUMP_GAP)
    # previous write: select a context entry (search for the first ctx-write,
    # whose entry the cursor then selects), go to the end, walk back
    press(b"g", 0.3)
    press(b"1", 0.1)
    press(b"\r", 0.3)
    press(b"/", 0.3)
    press(b"ctx-write", 0.1)
    press(b"\r", 2.0)
    press(b"g", 0.3)
    press(b"end", 0.1)
    press(b"\r", 0.5)
    for _ in range(jumps):
        press(b"W", JUMP_GAP)
    by_key = samples_by_key(term.quit())
    named = {"step (n)": by_key.get("n", [])[:steps],
             "next hazard (])": by_key.get("right_square_bracket", []),
             "go to step (g N enter)": by_key.get("enter", [])[1:1 + jumps],   # not the set-up ones
             "previous write (W)": by_key.get("W", [])}
    return named, info


def samples_by_key(res: dict) -> dict[str, list[tuple[float, float]]]:
    """The child's samples as key -> [(key->frame ms, UI-thread CPU ms)]."""
    by_key: dict[str, list[tuple[float, float]]] = {}
    for (key, seconds), cpu in zip(res["samples"], res["cpu"]):
        by_key.setdefault(key, []).append((seconds * 1000, cpu * 1000))
    return by_key


def key_rows(name: str, pairs: list, note: str, baseline: tuple = (None, None)) -> list[Result]:
    """Median, p95 (goals: a 60 Hz frame, two) and UI-thread CPU of one key;
    ``baseline``: the bare list's (median, p95) from the same run."""
    vals = [w for w, _ in pairs]
    cpu = [c for _, c in pairs]
    med, p95 = statistics.median(vals) if vals else float("nan"), _pct(vals, 0.95)
    base_med, base_p95 = baseline
    if base_med:
        note += f"; {med / base_med:.2f}x the bare list"
    return [
        Result(f"key->frame {name} median", med, base_med, unit="ms", ratio=med, goal=("<=", 17), note=note),
        Result(f"key->frame {name} p95", p95, base_p95, unit="ms", ratio=p95, goal=("<=", 33)),
        Result(f"  main-thread CPU {name} median", statistics.median(cpu) if cpu else float("nan"), unit="ms",
               note="key received -> frame written, CPU of the UI thread only: "
                    "the part that does not depend on other tenants of the host"),
    ]


def bare_latency(steps: int) -> list[float]:
    term = Terminal(10_000_000, mode="--bare")
    term.wait_ready(timeout=60)
    time.sleep(0.5)
    for _ in range(steps):
        term.press(b"n")
    res = term.quit()
    return [ms * 1000 for key, ms in res["samples"] if key == "n"]


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


@section("tui", "vtdtrace view in a pty: first frame vs length, key -> frame written")
def run(opts: Options) -> list[Result]:
    reps = max(3, min(opts.reps, 5))
    big = synth_trace(opts.events)
    mid_n = max(opts.events // 100, 10_000)
    mid = synth_trace(mid_n)
    cold = warm_sidecar(big)
    warm_sidecar(mid)
    from replay.reader import open_trace
    with open_trace(SHIPPED, verify=False) as t:
        small_n = t.count
    with open_trace(big, verify=False) as t:
        big_n = t.count
    tmp = Path(tempfile.mkdtemp(prefix="vtdt-tui-bench-"))
    small = tmp / SHIPPED.name
    small.write_bytes(SHIPPED.read_bytes())
    ff_small = first_frame(small, reps)
    ff_mid = first_frame(mid, reps)
    ff_big = first_frame(big, reps)
    results = [
        Result(f"first frame, {small_n:,} events (S1)", ff_small, unit="s", ratio=ff_small, goal=("<=", 1.5)),
        Result(f"first frame, {mid_n:,} events", ff_mid, unit="s", ratio=ff_mid, goal=("<=", 1.5)),
        Result(f"first frame, {big_n:,} events", ff_big, unit="s", ratio=ff_big, goal=("<=", 1.5)),
        Result(f"first frame {big_n:,} / {small_n:,} events", ff_big, ff_small, unit="s",
               ratio=ff_big / ff_small, goal=("<=", 1.25),
               note="independent of length: same-run ratio (noise ~25% on this host)"),
    ]
    steps, jumps = max(100, 40 * reps), max(40, 12 * reps)
    bare = bare_latency(steps)
    bare_med, bare_p95 = statistics.median(bare), _pct(bare, 0.95)
    results.append(Result("key->frame bare Line-API list (baseline) median", bare_med, unit="ms",
                          note="same run, same pty: a list with a cursor and nothing else"))
    results.append(Result("key->frame bare Line-API list (baseline) p95", bare_p95, unit="ms"))
    named, info = latencies(big, steps=steps, jumps=jumps)
    for name, pairs in named.items():
        results += key_rows(name, pairs, f"{len(pairs)} keys at {big_n:,} events, pty {SIZE[0]}x{SIZE[1]}",
                            (bare_med, bare_p95))
    results.append(Result(f"load from a warm sidecar, {big_n:,} events", info["load_seconds"], unit="s",
                          note="index + checkpoints + findings read back; the UI answers keys meanwhile"))
    if cold:
        results.append(Result(f"cold load (build sidecar), {big_n:,} events", cold, unit="s",
                              note="session build + hazard analysis, once per trace"))
    return results


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        raise SystemExit(child_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    if len(sys.argv) == 5 and sys.argv[1] == "--bare":
        raise SystemExit(bare_child_main(sys.argv[2], sys.argv[3], sys.argv[4]))
    from bench.__main__ import main
    raise SystemExit(main(["tui", *sys.argv[1:]]))
