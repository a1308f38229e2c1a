"""CPU profile of the whole command, stage by stage: where a run's wall and CPU seconds go.

Prints a markdown table of one ``napari-focus-stack FRAMES/ -o fused.tif`` run
(default settings) on the CPU, per stage: decode (JPEG decoding, full frames
and the reduced ones alignment reads), grey (luminance), focus (the focus
measure, and the smoothing of its scores for depth selection), select
(running arg-max, depth and confidence, depth regularisation and fill), fuse,
align (estimation, and warping when there is motion), write, noise (the noise
estimate of every frame), setup (opening headers, picking the backend,
reserving the outputs) and idle. Each with its wall seconds (time during which
the stage ran on at least one thread: decoding runs beside the frame loop, so
stage walls overlap and add up to more than the total), its CPU seconds (all
threads) and CPU / wall (about how many cores it kept busy). Idle is wall time
in which no stage ran on any thread; its CPU is everything outside the stages
(interpreter, glue, progress bars). Totals: wall, CPU seconds
(``time.process_time``), peak RSS (``ru_maxrss``), and how long the process
kept 0, 1 or 2+ cores busy. A second table breaks each stage down by function.

The input is the 12 MP x 10 JPEG stack of ``benchmarks/bench.py`` (simulated
into ``benchmarks/_cache/12mp-mixed-dome`` on first use, shared with it).

How: every run is a child process (this script with ``--child``) that imports
the command line and calls :func:`napari_focus_stack.cli.main` in-process. In
instrumented runs the functions implementing each stage are wrapped first
(monkeypatched, in that child only: nothing under src/ changes). Each call
records its thread, ``perf_counter`` and ``thread_time`` at start and end;
nested calls are attributed to the innermost stage (children subtracted).
Work handed to a thread pool from inside a stage counts to that stage.
OpenCV's own worker threads are invisible to ``thread_time``: a sampler
thread reads their CPU clocks every few ms and gives it to the stages that
were inside an OpenCV call at that moment (shared evenly when several were).
Plain runs (no wrappers) alternate with instrumented ones after one warm-up
run; the fused files of all runs are compared byte for byte and the wall
times of both kinds printed, so the instrumentation's overhead is visible.
The table is the instrumented run with the median wall time.

Usage::

    python benchmarks/profile_stages.py                          # 12 MP x 10, 3 rounds (~1 min)
    python benchmarks/profile_stages.py --frames 10 --size 12mp --repeat 3
    python benchmarks/profile_stages.py --size 1mp --repeat 1    # a quick look
    python benchmarks/profile_stages.py --cli-args "--method pyramid"
"""

import argparse
import functools
import hashlib
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The stages of the table, in order, and what each one holds.
STAGES = {
    "decode": "JPEG decoding: full frames (read-ahead thread), reduced ones for alignment",
    "grey": "luminance of every frame (`OpenCVBackend.luminance`)",
    "focus": "focus measure (`FocusMeasure`), scores smoothed for depth selection",
    "select": "running arg-max, depth + confidence, depth regularisation and fill",
    "fuse": "fusion updates per frame and the final collapse",
    "align": "registration images, transforms, gains, warp and coverage",
    "write": "TIFF encoding and writing, rename into place",
    "noise": "noise estimate of every frame (`frame_statistics`); not in the brief's list",
    "setup": "open_stack headers, get_backends (device auto), output checks",
}

#: ``(module, attribute path, stage, label, top_only)``: the functions wrapped in
#: instrumented runs. ``top_only`` wrappers record only calls made outside any
#: stage (a backend filter called by a stage belongs to that stage). Targets that
#: are missing (code being edited) are skipped and listed in the report.
TARGETS = [
    ("napari_focus_stack.io.frames", "FrameSequence.decoded", "decode", "full frames (FrameSequence.decoded)", False),
    ("napari_focus_stack.io.frames", "FrameSequence.reduced", "decode", "reduced, for alignment (.reduced)", False),
    ("napari_focus_stack.engine.backend.opencv", "OpenCVBackend.luminance", "grey", "OpenCVBackend.luminance", True),
    ("napari_focus_stack.engine.backend.base", "NdimageBackend.luminance", "grey", "NdimageBackend.luminance", True),
    ("napari_focus_stack.engine.focus", "FocusMeasure.__call__", "focus", "focus measure (FocusMeasure)", False),
    (
        "napari_focus_stack.engine.backend.base",
        "NdimageBackend.gaussian",
        "focus",
        "scores smoothed for depth (be.gaussian in stack_tile)",
        True,
    ),
    ("napari_focus_stack.engine.depth", "SliceSelector.update", "select", "arg-max (SliceSelector.update)", False),
    ("napari_focus_stack.engine.depth", "SliceSelector.finish", "select", "depth + confidence (.finish)", False),
    ("napari_focus_stack.engine.pipeline", "finish_in_bands", "select", "finish_in_bands (rest)", False),
    ("napari_focus_stack.engine.pipeline", "regularise_depth", "select", "regularise_depth", False),
    ("napari_focus_stack.engine.pipeline", "fill_unsupported_depth", "select", "fill_unsupported_depth", False),
    ("napari_focus_stack.engine.align.policy", "registration_image", "align", "registration_image", False),
    ("napari_focus_stack.engine.align.policy", "shrink", "align", "exposure thumbnails (shrink)", False),
    ("napari_focus_stack.engine.align.estimate", "_recheck_steps", "align", "step checks (_recheck_steps)", False),
    ("napari_focus_stack.engine.align.policy", "estimate_gains", "align", "estimate_gains", False),
    ("napari_focus_stack.engine.align.estimate", "_Pyramids.build", "align", "registration pyramids", False),
    ("napari_focus_stack.engine.align.estimate", "_register", "align", "pairwise registration (_register)", False),
    ("napari_focus_stack.engine.align.estimate", "distant_agreement", "align", "distant_agreement check", False),
    ("napari_focus_stack.engine.align.frames", "AlignedFrames.warp_region", "align", "warp (warp_region)", False),
    ("napari_focus_stack.engine.align.frames", "AlignedFrames.coverage", "align", "coverage masks", False),
    ("napari_focus_stack.engine.align.frames", "AlignedFrames.partial_coverage", "align", "partial coverage", False),
    ("napari_focus_stack.io.writing", "OutputSet.write_image", "write", "encode + write (write_image)", False),
    ("napari_focus_stack.io.writing", "OutputSet.commit", "write", "rename into place (commit)", False),
    ("napari_focus_stack.engine.noise", "frame_statistics", "noise", "frame_statistics", False),
    ("napari_focus_stack.engine.noise", "noise_energy_gain", "noise", "noise_energy_gain (cached)", False),
    ("napari_focus_stack.io", "open_stack", "setup", "open_stack (headers)", False),
    ("napari_focus_stack.engine.backend", "get_backends", "setup", "get_backends", False),
    ("napari_focus_stack.io.writing", "OutputSet.__init__", "setup", "outputs checked (OutputSet)", False),
]

#: OpenCV functions the engine calls that may use OpenCV's worker threads; a
#: thread inside one of them is where the workers' CPU time is attributed.
#: (``imdecode`` is left out: libjpeg decodes on the calling thread alone.)
CV2_PARALLEL = (
    *("resize", "GaussianBlur", "transform", "pyrUp", "pyrDown", "warpAffine", "cvtColor", "remap"),
    *("filter2D", "dilate", "blur", "Laplacian", "split", "sepFilter2D", "copyTo"),
)

#: Seconds between two samples of the OpenCV workers' CPU clocks.
SAMPLE_INTERVAL = 0.005
#: Samples between two listings of the process's threads (OpenCV starts its workers once).
REFRESH_EVERY = 20


# --------------------------------------------------------------------------
# The profiler (instrumented child runs)
# --------------------------------------------------------------------------


def fusion_targets():
    """Targets for the per-frame update and the finishing of every fusion method (:data:`FUSIONS`)."""
    try:
        from napari_focus_stack.engine.fuse import FUSIONS
    except ImportError:
        return []
    return [
        (cls.__module__, f"{cls.__name__}.{name}", "fuse", f"{cls.__name__}.{name}", False)
        for cls in FUSIONS.values()
        for name in ("update", "finish", "finish_rows")
        if name in cls.__dict__
    ]


def thread_clock(tid):
    """The clock id of Linux thread ``tid``'s CPU time (``MAKE_THREAD_CPUCLOCK(tid, CPUCLOCK_SCHED)``)."""
    return ((~tid) << 3) | 6


class _Thread:
    """One thread's stack of active stage calls and whether it is inside OpenCV."""

    __slots__ = ("in_cv2", "native", "stack")

    def __init__(self):
        self.stack = []  # [key, start wall, start CPU, children's wall, children's CPU, segment start]
        self.in_cv2 = 0
        self.native = threading.get_native_id()


class Profiler:
    """Wraps the stage functions and records every call; samples OpenCV's workers."""

    def __init__(self, interval=SAMPLE_INTERVAL):
        self.interval = interval
        self.threads = {}
        self.segments = []  # (key, start, end): wall during which key was a thread's innermost stage
        self.calls = defaultdict(lambda: [0, 0.0])  # key -> [calls, exclusive CPU on Python threads]
        self.sampled = defaultdict(float)  # key (None: no stage active) -> CPU of OpenCV's workers
        self.cores = [0.0, 0.0, 0.0]  # wall with about 0, 1, 2+ cores busy
        self.sampler_cpu = 0.0
        self.missing = []
        self._patches = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = None

    # --- per-call records ---------------------------------------------------
    def _state(self):
        state = self.threads.get(threading.get_ident())
        if state is None:
            state = self.threads[threading.get_ident()] = _Thread()
        return state

    def _enter(self, state, key):
        now = time.perf_counter()
        stack = state.stack
        if stack:
            parent = stack[-1]
            self.segments.append((parent[0], parent[5], now))
        stack.append([key, now, time.thread_time(), 0.0, 0.0, now])

    def _exit(self, state):
        cpu = time.thread_time()
        now = time.perf_counter()
        stack = state.stack
        key, start, start_cpu, child_wall, child_cpu, segment = stack.pop()
        self.segments.append((key, segment, now))
        used = cpu - start_cpu
        with self._lock:
            record = self.calls[key]
            record[0] += 1
            record[1] += used - child_cpu
        if stack:
            parent = stack[-1]
            parent[3] += now - start
            parent[4] += used
            parent[5] = now

    def _run(self, key, function, args, kwargs):
        state = self._state()
        self._enter(state, key)
        try:
            return function(*args, **kwargs)
        finally:
            self._exit(state)

    def wrap(self, function, key, top_only=False):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            if top_only:
                state = self.threads.get(threading.get_ident())
                if state is not None and state.stack:
                    return function(*args, **kwargs)
            return self._run(key, function, args, kwargs)

        return wrapper

    def wrap_cv2(self, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            state = self._state()
            state.in_cv2 += 1
            try:
                return function(*args, **kwargs)
            finally:
                state.in_cv2 -= 1

        return wrapper

    # --- installing -----------------------------------------------------------
    def _patch(self, owner, name, replacement):
        self._patches.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, replacement)

    def install(self):
        import importlib

        import cv2

        for module_name, path, stage, label, top_only in [*TARGETS, *fusion_targets()]:
            try:
                owner = importlib.import_module(module_name)
                *outer, name = path.split(".")
                for part in outer:
                    owner = getattr(owner, part)
                if isinstance(owner, type) and name not in owner.__dict__:
                    raise AttributeError(name)
                original = getattr(owner, name)
            except (ImportError, AttributeError):
                self.missing.append(f"{module_name}.{path}")
                continue
            self._patch(owner, name, self.wrap(original, f"{stage}|{label}", top_only))
        for name in CV2_PARALLEL:
            if hasattr(cv2, name):
                self._patch(cv2, name, self.wrap_cv2(getattr(cv2, name)))
        # work handed to a thread pool from inside a stage counts to that stage
        submit = ThreadPoolExecutor.submit

        def submit_in_stage(pool, function, /, *args, **kwargs):
            state = self.threads.get(threading.get_ident())
            if state is None or not state.stack:
                return submit(pool, function, *args, **kwargs)
            return submit(pool, self._run, state.stack[-1][0], function, args, kwargs)

        self._patch(ThreadPoolExecutor, "submit", submit_in_stage)

    def uninstall(self):
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._patches.clear()

    # --- sampling OpenCV's worker threads -------------------------------------
    def start(self):
        self._python = {t.native_id for t in threading.enumerate()}
        self._tids = self._other_threads()
        self._last = {tid: self._cpu_ns(tid) for tid in self._tids}
        self._sampler = threading.Thread(target=self._sample_loop, name="profile-sampler", daemon=True)
        self._sampler.start()

    def stop(self):
        self._stop.set()
        self._sampler.join()

    def _other_threads(self):
        """Native ids of this process's threads that Python did not start (OpenCV's workers)."""
        self._python.update(t.native_id for t in threading.enumerate())
        try:
            tids = [int(t) for t in os.listdir("/proc/self/task")]
        except OSError:
            return []
        return [tid for tid in tids if tid not in self._python]

    @staticmethod
    def _cpu_ns(tid):
        try:
            return time.clock_gettime_ns(thread_clock(tid))
        except OSError:  # the thread ended
            return None

    def _sample(self, previous_wall, previous_cpu, refresh):
        now, cpu = time.perf_counter(), time.process_time()
        busy = (cpu - previous_cpu) / max(now - previous_wall, 1e-9)
        self.cores[0 if busy < 0.5 else 1 if busy < 1.5 else 2] += now - previous_wall
        if refresh:
            self._tids = self._other_threads()
        delta = 0
        for tid in self._tids:
            value = self._cpu_ns(tid)
            if value is None:
                continue
            delta += value - (self._last.get(tid) or 0)
            self._last[tid] = value
        if delta:
            inside, active = [], []
            for state in list(self.threads.values()):
                try:
                    key = state.stack[-1][0]
                except IndexError:
                    continue
                active.append(key)
                if state.in_cv2:
                    inside.append(key)
            keys = inside or active or [None]
            for key in keys:
                self.sampled[key] += delta / 1e9 / len(keys)
        return now, cpu

    def _sample_loop(self):
        wall, cpu, count = time.perf_counter(), time.process_time(), 0
        while not self._stop.wait(self.interval):
            count += 1
            wall, cpu = self._sample(wall, cpu, count % REFRESH_EVERY == 0)
        self._sample(wall, cpu, True)
        self.sampler_cpu = time.thread_time()

    # --- summary ----------------------------------------------------------------
    def summary(self, start, end):
        """Per key: calls, wall (union over threads), CPU on Python threads, CPU of OpenCV's workers."""
        segments = [(key, max(a, start), min(b, end)) for key, a, b in self.segments if b > start and a < end]
        by_key, by_stage = defaultdict(list), defaultdict(list)
        for key, a, b in segments:
            by_key[key].append((a, b))
            by_stage[key.split("|")[0]].append((a, b))
        keys = sorted(set(self.calls) | set(by_key) | {k for k in self.sampled if k is not None})
        detail = {
            key: {
                "calls": self.calls[key][0] if key in self.calls else 0,
                "wall": union_length(by_key.get(key, [])),
                "cpu_threads": self.calls[key][1] if key in self.calls else 0.0,
                "cpu_opencv": self.sampled.get(key, 0.0),
            }
            for key in keys
        }
        stages = {stage: union_length(intervals) for stage, intervals in by_stage.items()}
        return {
            "detail": detail,
            "stage_wall": stages,
            "busy_wall": union_length([(a, b) for _, a, b in segments]),
            "opencv_outside_stages": self.sampled.get(None, 0.0),
            "sampler_cpu": self.sampler_cpu,
            "cores": self.cores,
            "missing": self.missing,
        }


def union_length(intervals):
    """Total length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, None
    for a, b in sorted(intervals):
        if reach is None or a > reach:
            total += b - a
            reach = b
        elif b > reach:
            total += b - reach
            reach = b
    return total


def machine_busy_seconds():
    """CPU seconds all processes of the machine have used since boot (/proc/stat), or None."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait
    busy = sum(int(v) for i, v in enumerate(fields[:8]) if i not in (3, 4))
    return busy / os.sysconf("SC_CLK_TCK")


def source_fingerprint():
    """A hash of the package's source files: tells whether src/ was edited between two runs."""
    import napari_focus_stack

    digest = hashlib.sha256()
    root = Path(napari_focus_stack.__file__).parent
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def peak_hwm_mib():
    """VmHWM of this process (MiB) from /proc/self/status, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def child(args):
    """One run of the command line in this process, instrumented or not; the facts as JSON."""
    started = time.perf_counter()
    import napari_focus_stack.cli as cli
    import napari_focus_stack.engine.align.policy
    import napari_focus_stack.engine.backend
    import napari_focus_stack.engine.pipeline
    import napari_focus_stack.io  # noqa: F401  (what the command imports when it runs, imported before the clock starts)
    from napari_focus_stack.io import read_metadata

    imports = time.perf_counter() - started
    source = source_fingerprint()
    profiler = Profiler() if args.child == "instrumented" else None
    if profiler is not None:
        profiler.install()
    out = Path(args.out_dir)
    fused = out / "fused.tif"
    argv = [str(args.frames_dir), "-o", str(fused), *shlex.split(args.cli_args)]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    machine = machine_busy_seconds()
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.start()
    code = cli.main(argv)
    end = time.perf_counter()
    cpu = time.process_time() - cpu
    if machine is not None:
        machine = machine_busy_seconds() - machine
    if profiler is not None:
        profiler.stop()
        profiler.uninstall()
    after = resource.getrusage(resource.RUSAGE_SELF)
    facts = {
        "mode": args.child,
        "argv": argv,
        "returncode": code,
        "imports": imports,
        "wall": end - wall,
        "cpu": cpu,
        "user": after.ru_utime - usage.ru_utime,
        "system": after.ru_stime - usage.ru_stime,
        "maxrss_mib": after.ru_maxrss / 1024,  # Linux: KiB
        "hwm_mib": peak_hwm_mib(),
        # CPU the other processes of the machine used meanwhile (a shared machine's cores are not all ours)
        "others_cpu": None if machine is None else max(0.0, machine - cpu),
        "outputs": {},
        "source": source,
    }
    if code == 0:
        import tifffile

        for path in sorted(out.iterdir()):
            pixels = tifffile.imread(path)
            facts["outputs"][path.name] = {
                "file": hashlib.sha256(path.read_bytes()).hexdigest(),
                "pixels": hashlib.sha256(f"{pixels.dtype}{pixels.shape}".encode() + pixels.tobytes()).hexdigest(),
                "metadata": read_metadata(path),
            }
        facts["device"] = read_metadata(fused).get("device")
    if profiler is not None:
        facts["profile"] = profiler.summary(wall, end)
    Path(args.report).write_text(json.dumps(facts, indent=1))
    return 0 if code == 0 else 1


# --------------------------------------------------------------------------
# The parent: runs, checks, tables
# --------------------------------------------------------------------------


def pick_case(bench, size, frames, cache):
    """bench.py's case of ``size`` with ``frames`` frames ("mixed" texture on a "dome"), and its cache folder.

    A frame count bench.py does not use is cached in a folder of its own, so
    that bench.py's cached stack stays as it is.
    """
    for case in bench.CASES:
        if (case.size, case.n_slices, case.texture, case.depth) == (size, frames, "mixed", "dome"):
            return case, cache
    seed = next(c.seed for c in bench.CASES if c.size == size and c.main)
    return bench.Case(size, frames, "mixed", "dome", seed=seed, main=True), cache / f"profile-{frames}-frames"


def run_child(bench, mode, cached, out_root, name, cli_args):
    """Run this script as a ``mode`` child on ``cached``; its facts (dict)."""
    out_dir = out_root / name
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    report = out_root / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode]
    command += ["--frames-dir", str(cached.frames_dir), "--out-dir", str(out_dir), "--report", str(report)]
    command += ["--cli-args", cli_args]
    # through bench.py's small launcher: a child spawned from this process would
    # report this process's RSS (it holds bench.py's imports) as its ru_maxrss
    with open(out_root / f"{name}.stderr", "wb") as err:
        done = subprocess.run(
            [sys.executable, "-S", "-c", bench.LAUNCHER, *command], stdout=subprocess.PIPE, stderr=err
        )
    try:
        code, _, _, maxrss_kib = done.stdout.split()
    except ValueError:
        code, maxrss_kib = done.returncode or 1, 0
    if int(code) != 0:
        tail = (out_root / f"{name}.stderr").read_text(errors="replace")[-3000:]
        raise SystemExit(f"{name} ({mode}) failed with exit {code}:\n{tail}")
    facts = json.loads(report.read_text())
    facts["launcher_maxrss_mib"] = int(maxrss_kib) / 1024  # os.wait4's, for the whole child process
    shutil.rmtree(out_dir, ignore_errors=True)  # the hashes are kept; 12 MP outputs are not
    return facts


def stage_cpu(facts):
    """CPU seconds per stage of an instrumented run (Python threads and OpenCV's workers)."""
    cpu = defaultdict(float)
    for key, d in facts["profile"]["detail"].items():
        cpu[key.split("|")[0]] += d["cpu_threads"] + d["cpu_opencv"]
    return cpu


def stage_rows(bench, facts):
    """Rows of the per-stage table of one instrumented run."""
    fmt = bench.fmt
    profile = facts["profile"]
    stage_wall = profile["stage_wall"]
    total_cpu, total_wall = facts["cpu"], facts["wall"]
    cpu = stage_cpu(facts)
    rows = []
    for stage, what in STAGES.items():
        wall = stage_wall.get(stage, 0.0)
        ratio = cpu[stage] / wall if wall > 0.005 else None
        rows.append(
            [stage, fmt(wall, ".2f"), fmt(cpu[stage], ".2f"), fmt(ratio, ".2f"), f"{cpu[stage] / total_cpu:.0%}", what]
        )
    idle_wall = total_wall - profile["busy_wall"]
    outside = total_cpu - sum(cpu.values()) - profile["sampler_cpu"]
    rows.append(
        [
            "idle",
            fmt(idle_wall, ".2f"),
            fmt(outside, ".2f"),
            "",
            f"{outside / total_cpu:.0%}",
            "wall: no stage on any thread; CPU: all CPU outside the stages (interpreter, glue, progress bars)",
        ]
    )
    rows.append(
        [
            "profiler",
            "",
            fmt(profile["sampler_cpu"], ".2f"),
            "",
            f"{profile['sampler_cpu'] / total_cpu:.0%}",
            "this script's sampler thread (absent from plain runs)",
        ]
    )
    rows.append(
        [
            "**total**",
            f"**{total_wall:.2f}**",
            f"**{total_cpu:.2f}**",
            f"**{total_cpu / total_wall:.2f}**",
            "100%",
            f"user {facts['user']:.2f} + system {facts['system']:.2f} s; peak RSS {facts['maxrss_mib']:.0f} MiB "
            f"(ru_maxrss; VmHWM {fmt(facts['hwm_mib'], '.0f')} MiB)",
        ]
    )
    return rows


def detail_rows(bench, facts):
    """Rows of the per-function table: every instrumented function that ran, by stage, largest CPU first."""
    fmt = bench.fmt
    detail = facts["profile"]["detail"]
    order = {stage: i for i, stage in enumerate(STAGES)}
    rows = []
    for key, d in sorted(
        detail.items(), key=lambda kv: (order.get(kv[0].split("|")[0], 99), -kv[1]["cpu_threads"] - kv[1]["cpu_opencv"])
    ):
        stage, label = key.split("|", 1)
        total = d["cpu_threads"] + d["cpu_opencv"]
        if d["calls"] == 0 and total < 0.005:
            continue
        rows.append(
            [
                stage,
                label,
                str(d["calls"]),
                fmt(d["wall"], ".3f"),
                fmt(d["cpu_threads"], ".3f"),
                fmt(d["cpu_opencv"], ".3f"),
                fmt(total, ".3f"),
            ]
        )
    opencv_idle = facts["profile"]["opencv_outside_stages"]
    if opencv_idle >= 0.0005:
        rows.append(["idle", "OpenCV workers while no stage ran", "", "", "", fmt(opencv_idle, ".3f"), ""])
    return rows


def print_report(bench, cached, load_start, plain, instrumented, cli_args, startup):
    fmt, md_table = bench.fmt, bench.md_table
    walls_i = [r["wall"] for r in instrumented]
    walls_p = [r["wall"] for r in plain]
    shown = sorted(instrumented, key=lambda r: r["wall"])[(len(instrumented) - 1) // 2]
    command = " ".join(["napari-focus-stack", "FRAMES/", "-o", "fused.tif", *shlex.split(cli_args)])
    print(f"## CPU profile: `{command}` on {cached.case.name} ({cached.case.describe()})\n")
    print(
        f"{bench.cpu_model()}, {os.cpu_count()} cores; load average at start {load_start}, "
        f"at end {bench.load_average()}. Device used: {shown.get('device')}. In-process `cli.main`, a child "
        f"process per run; {len(plain)} plain and {len(instrumented)} instrumented run(s) after one plain warm-up; "
        f"the instrumented run with the median wall time is shown.\n"
    )
    headers = ["stage", "wall (s)", "CPU (s)", "CPU / wall", "share of CPU", "what"]
    print(md_table(headers, stage_rows(bench, shown), "lrrrrl"))
    cpu = stage_cpu(shown)
    measured = shown["cpu"] - shown["profile"]["sampler_cpu"]
    outside = measured - cpu["decode"] - cpu["focus"] - cpu["write"]
    print(
        f"\nOutside decode, focus and write: {outside:.2f} CPU-s of {measured:.2f} ({outside / measured:.0%}; "
        f"the profiler's sampler left out), of which fuse {cpu['fuse']:.2f}, select {cpu['select']:.2f}, "
        f"align {cpu['align']:.2f}, setup {cpu['setup']:.2f}, grey {cpu['grey']:.2f}, noise {cpu['noise']:.2f}, "
        f"outside every stage {outside - sum(cpu[s] for s in STAGES if s not in ('decode', 'focus', 'write')):.2f}."
    )
    cores = shown["profile"]["cores"]
    total = sum(cores) or 1.0
    print(
        f"\nCores busy (process CPU sampled every {SAMPLE_INTERVAL * 1000:.0f} ms): about 0 for "
        f"{cores[0]:.2f} s ({cores[0] / total:.0%}), 1 for {cores[1]:.2f} s ({cores[1] / total:.0%}), "
        f"2 or more for {cores[2]:.2f} s ({cores[2] / total:.0%}) of the wall time. Stage walls overlap "
        "(decoding runs on the read-ahead thread beside the frame loop), so they add up to more than the total."
    )
    print(
        f"\nNot in the table: imports of the command line and engine in the child, before the clock starts: "
        f"{fmt(statistics.median(r['imports'] for r in plain), '.2f')} s (median of the plain runs)"
        + "".join(f"; {label}: {seconds:.2f} s" for label, seconds in startup.items())
        + "."
    )
    print("\n### By function\n")
    print(
        "CPU on Python threads is `thread_time` (children subtracted); CPU of OpenCV's workers is sampled and "
        "given to the stages inside an OpenCV call at the time. Wall: while it was a thread's innermost stage.\n"
    )
    headers = ["stage", "function", "calls", "wall (s)", "CPU threads (s)", "CPU OpenCV workers (s)", "CPU (s)"]
    print(md_table(headers, detail_rows(bench, shown), "llrrrrr"))
    missing = shown["profile"]["missing"]
    if missing:
        print(f"\nNot found, so not instrumented: {', '.join(missing)}.")
    print("\n### Checks\n")
    print_identity(plain, instrumented)
    overhead = statistics.median(walls_i) / statistics.median(walls_p) - 1
    print(
        f"Wall time, plain runs: median {statistics.median(walls_p):.2f} s ({', '.join(f'{w:.2f}' for w in walls_p)}); "
        f"instrumented: median {statistics.median(walls_i):.2f} s ({', '.join(f'{w:.2f}' for w in walls_i)}); "
        f"overhead {overhead:+.1%}. CPU, plain: median {statistics.median(r['cpu'] for r in plain):.2f} s; "
        f"instrumented: {statistics.median(r['cpu'] for r in instrumented):.2f} s. Peak RSS, plain: median "
        f"{statistics.median(r['maxrss_mib'] for r in plain):.0f} MiB; instrumented: "
        f"{statistics.median(r['maxrss_mib'] for r in instrumented):.0f} MiB."
    )
    others = [r.get("others_cpu") for r in [*plain, *instrumented]]
    if None not in others:
        print(
            f"Other processes on the machine used {shown['others_cpu']:.2f} CPU-s during the run shown "
            f"({shown['others_cpu'] / shown['wall']:.2f} cores on average; all runs: "
            f"{', '.join(f'{o:.1f}' for o in others)} CPU-s, plain first)."
        )
        if shown["others_cpu"] > 0.2 * shown["wall"]:
            print(
                "WARNING: the machine was busy during the run shown: fewer cores were ours, so its wall time, "
                "CPU / wall and cores busy understate what the command does on an idle machine; rerun when it is quiet."
            )
    if shown.get("device") != "cpu":
        print(f"\nWARNING: the run used {shown.get('device')!r}, not the CPU: pass --cli-args '--device cpu'.")


def output_difference(a, b):
    """How the outputs of two runs differ, in words; None when they are byte-identical."""
    if a["outputs"].keys() != b["outputs"].keys():
        return f"different files ({sorted(a['outputs'])} vs {sorted(b['outputs'])})"
    problems = []
    for name, x in a["outputs"].items():
        y = b["outputs"][name]
        if x["file"] == y["file"]:
            continue
        if x["pixels"] != y["pixels"]:
            problems.append(f"{name}: pixels differ")
            continue
        keys = sorted(k for k in {*x["metadata"], *y["metadata"]} if x["metadata"].get(k) != y["metadata"].get(k))
        problems.append(f"{name}: same pixels, metadata differs ({', '.join(keys) or 'layout'})")
    if not problems:
        return None
    edited = " (src/ was edited between the two runs)" if a["source"] != b["source"] else ""
    return "; ".join(problems) + edited


def print_identity(plain, instrumented):
    """Say whether every instrumented run's outputs are byte-identical to the plain run of its round."""
    rounds = list(zip(plain, instrumented))
    different = [(i + 1, output_difference(p, q)) for i, (p, q) in enumerate(rounds)]
    different = [(i, text) for i, text in different if text is not None]
    everything = [*plain, *instrumented]
    if not different:
        same = all(output_difference(everything[0], r) is None for r in everything[1:])
        extra = f"; so are all {len(everything)} runs" if same else "; runs of different rounds differ (src/ edited?)"
        print(
            f"Instrumented outputs are byte-identical to the uninstrumented run of their round in all "
            f"{len(rounds)} round(s){extra}."
        )
    for i, text in different:
        print(f"WARNING: round {i}: the instrumented run's outputs are not byte-identical to the plain run's: {text}.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", type=int, default=10, help="frames in the stack (default 10)")
    p.add_argument("--size", default="12mp", help="image size, as bench.py names them (default 12mp)")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="rounds of a plain and an instrumented run")
    p.add_argument("--cli-args", default="", metavar="ARGS", help="more options for the command (default none)")
    p.add_argument("--cache", type=Path, default=HERE / "_cache", help="simulated stacks (default benchmarks/_cache)")
    p.add_argument("--out", type=Path, default=HERE / "_out", help="outputs of the runs (default benchmarks/_out)")
    p.add_argument("--no-startup", action="store_true", help="skip timing interpreter start-up and imports")
    # a run of the command in this process (what the parent starts)
    p.add_argument("--child", choices=("plain", "instrumented"), help=argparse.SUPPRESS)
    p.add_argument("--frames-dir", help=argparse.SUPPRESS)
    p.add_argument("--out-dir", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.frames < 2:
        p.error("--frames must be at least 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child(args)
    sys.path.insert(0, str(HERE))
    import bench

    if args.size not in bench.SIZES:
        raise SystemExit(f"--size takes {', '.join(bench.SIZES)}, not {args.size!r}")
    case, cache = pick_case(bench, args.size, args.frames, args.cache)
    cached = bench.ensure_case(case, cache)
    out_root = args.out / "profile_stages"
    out_root.mkdir(parents=True, exist_ok=True)
    load_start = bench.load_average()
    bench.log(f"warm-up: plain run on {case.name} ({case.describe()})")
    run_child(bench, "plain", cached, out_root, "warm-up", args.cli_args)
    plain, instrumented = [], []
    for i in range(args.repeat):
        order = ("plain", "instrumented") if i % 2 == 0 else ("instrumented", "plain")
        for mode in order:
            bench.log(f"round {i + 1}/{args.repeat}: {mode}")
            facts = run_child(bench, mode, cached, out_root, f"{mode}-{i + 1}", args.cli_args)
            (plain if mode == "plain" else instrumented).append(facts)
            bench.log(f"  {facts['wall']:.2f} s wall, {facts['cpu']:.2f} s CPU")
    startup = {} if args.no_startup else bench.startup_costs(3)
    print_report(bench, cached, load_start, plain, instrumented, args.cli_args, startup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
