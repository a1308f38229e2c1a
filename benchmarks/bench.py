"""Benchmark napari-focus-stack against its peers on simulated focal stacks.

Prints markdown tables of

1. quality per simulated case (fused PSNR and SSIM against the true
   all-in-focus texture, depth RMSE on textured pixels) for our two fusion
   methods, the peers (enfuse, focusweave) and two baselines (best single
   frame, mean of frames);
2. speed and memory of whole command-line runs, from JPEG files to written
   outputs (wall time and peak RSS of the child process, median over
   ``--repeat`` interleaved rounds);
3. per-stage costs of our engine at the largest size (decoding, each
   pipeline stage, writing, start-up and imports, memory).

Stacks come from :mod:`napari_focus_stack.synthetic`, written as JPEG
(quality 95) into a cache folder together with their truth, and reused.

Usage::

    python benchmarks/bench.py                  # everything (several minutes)
    python benchmarks/bench.py --quick          # one 1 MP case, once (< 1 min)
    python benchmarks/bench.py --sizes 1mp --repeat 5 --focusweave /path/to/focusweave
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import cv2
import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import ENFUSE_OPTIONS

import napari_focus_stack
from napari_focus_stack import synthetic
from napari_focus_stack.engine.result import DEFAULTS, METHODS
from napari_focus_stack.io import open_stack, save_image

HERE = Path(__file__).resolve().parent
JPEG_QUALITY = 95
NOISE = 0.01
#: Image sizes (Y, X) by the names ``--sizes`` accepts.
SIZES = {"1mp": (864, 1152), "12mp": (3000, 4000)}
#: Central crop (px) on which the shift of an output against the truth is measured.
SHIFT_CROP = 512


# --------------------------------------------------------------------------
# Cases: simulated stacks cached as JPEG frames plus their truth
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One simulated focal stack."""

    size: str
    n_slices: int
    texture: str
    depth: str
    seed: int
    #: Main cases are also timed; the others only scored.
    main: bool = False

    @property
    def name(self):
        return f"{self.size}-{self.texture}-{self.depth}"

    @property
    def shape(self):
        return SIZES[self.size]

    def describe(self):
        height, width = self.shape
        return (
            f"{width}x{height} RGB x {self.n_slices} frames, texture {self.texture!r}, "
            f"depth {self.depth!r}, JPEG q{JPEG_QUALITY}, noise {NOISE}"
        )


CASES = (
    Case("1mp", 16, "mixed", "dome", seed=1, main=True),
    Case("12mp", 10, "mixed", "dome", seed=2, main=True),
    Case("1mp", 16, "noise", "slope", seed=3),
    Case("1mp", 16, "photo", "waves", seed=4),
    Case("1mp", 16, "cells", "steps", seed=5),
)


@dataclass
class CachedCase:
    """Where a case's files are: ``frames/`` (JPEGs only), ``texture.png``, ``depth.npy``."""

    case: Case
    folder: Path

    @property
    def frames_dir(self):
        return self.folder / "frames"

    @property
    def frame_paths(self):
        return sorted(self.frames_dir.glob("frame_*.jpg"))

    def truth(self):
        """The true all-in-focus texture (RGB uint8) and depth (float32 slices)."""
        texture = cv2.cvtColor(cv2.imread(str(self.folder / "texture.png")), cv2.COLOR_BGR2RGB)
        return texture, np.load(self.folder / "depth.npy")


def simulation_params(case):
    """Everything the cached files depend on, stored beside them to detect stale caches."""
    return {
        **asdict(case),
        "shape": list(case.shape),
        "noise": NOISE,
        "jpeg_quality": JPEG_QUALITY,
        "simulator": napari_focus_stack.__version__,
    }


def write_rgb(path, image, params=()):
    """Write an RGB uint8 image with OpenCV (which expects BGR)."""
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), list(params)):
        raise OSError(f"could not write {path}")


def ensure_case(case, cache_dir):
    """Simulate ``case`` into ``cache_dir`` unless an up-to-date copy is there."""
    cached = CachedCase(case, Path(cache_dir) / case.name)
    params = simulation_params(case)
    stamp = cached.folder / "params.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return cached
    log(f"simulating {case.name} ({case.describe()}) into {cached.folder}")
    shutil.rmtree(cached.folder, ignore_errors=True)
    cached.frames_dir.mkdir(parents=True)
    sim = synthetic.simulate_stack(
        case.shape,
        case.n_slices,
        texture=case.texture,
        depth=case.depth,
        rgb=True,
        dtype="uint8",
        noise=NOISE,
        seed=case.seed,
    )
    for k, frame in enumerate(sim.frames):
        write_rgb(cached.frames_dir / f"frame_{k:02d}.jpg", frame, (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
    write_rgb(cached.folder / "texture.png", sim.texture)
    np.save(cached.folder / "depth.npy", sim.depth)
    stamp.write_text(json.dumps(params, indent=1))  # written last: marks a complete case
    return cached


# --------------------------------------------------------------------------
# Tools: our command line and the peers, as subprocesses
# --------------------------------------------------------------------------


@dataclass
class Tool:
    """A command that fuses a folder of frames into ``fused.tif`` (and maybe more)."""

    name: str
    executable: list
    kind: str  # "ours-<method>" for each of METHODS, "enfuse", "focusweave"
    version: str = ""

    @property
    def ours(self):
        return self.kind.startswith("ours")

    def command(self, cached, out_dir):
        """The argument list that fuses ``cached`` into ``out_dir``."""
        fused = str(out_dir / "fused.tif")
        if self.ours:
            return self.executable + [
                str(cached.frames_dir),
                "-o",
                fused,
                "--depth",
                str(out_dir / "depth.tif"),
                "--confidence",
                str(out_dir / "confidence.tif"),
                "--radius",
                str(DEFAULTS["radius"]),
                "--smoothing",
                str(DEFAULTS["smoothing"]),
                "--scale-factor",
                "1",
                "--method",
                self.kind.split("-")[1],
                "--device",
                "cpu",
                "-q",
            ]
        if self.kind == "enfuse":
            return [*self.executable, *ENFUSE_OPTIONS, "-o", fused, *map(str, cached.frame_paths)]
        return self.executable + [str(cached.frames_dir), "--output", fused, "--no-align", "--keep-size"]


def our_cli():
    """Our console script beside this interpreter, else ``python -m``."""
    script = Path(sys.executable).parent / "napari-focus-stack"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "napari_focus_stack.cli"]


def find_peer(option, name):
    """Path of a peer from its option or PATH; None when absent."""
    candidate = option or shutil.which(name)
    if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    if option:
        log(f"warning: {name} not found at {option}")
    return None


def first_line(argv):
    """First non-empty output line of a version command, or "?"."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "?"
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else "?"


def make_tools(args):
    """Our methods (the default first) and the peers found; names of the peers that are missing."""
    tools = [Tool(f"ours ({m})", our_cli(), f"ours-{m}", napari_focus_stack.__version__) for m in METHODS]
    missing = []
    for name, option, version_flag in (
        ("enfuse", args.enfuse, "--version"),
        ("focusweave", args.focusweave, "--version"),
    ):
        path = find_peer(option, name)
        if path is None:
            missing.append(name)
            continue
        tools.append(Tool(name, [path], name, first_line([path, version_flag])))
    return tools, missing


@dataclass
class Run:
    """One subprocess run: exit status, wall and CPU seconds, peak RSS (MiB)."""

    returncode: int
    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    stderr_tail: str = ""

    @property
    def ok(self):
        return self.returncode == 0


#: Spawns a command and reports its exit code, wall and CPU seconds and
#: ru_maxrss (KiB) from os.wait4. It runs as a small separate interpreter
#: because Linux carries the RSS of the process that spawns (vfork) or forks a
#: child into that child's ru_maxrss: spawned from this process, which holds
#: images and libraries, every child would report at least our own RSS.
LAUNCHER = """
import os, sys, time
null = os.open(os.devnull, os.O_WRONLY)
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, null, 1)])
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
print(os.waitstatus_to_exitcode(status), wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def run_measured(argv):
    """Run ``argv`` (stdout discarded); wall time and the child's rusage from ``os.wait4``.

    Wall time runs from the spawn to the exit of the command, without the
    launcher's own start-up.
    """
    with tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [sys.executable, "-S", "-c", LAUNCHER, *map(str, argv)], stdout=subprocess.PIPE, stderr=err
        )
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
    try:
        code, wall, cpu, maxrss_kib = done.stdout.split()
    except ValueError:
        return Run(done.returncode or 1, float("nan"), float("nan"), float("nan"), tail)
    # Linux reports ru_maxrss in KiB.
    return Run(int(code), float(wall), float(cpu), int(maxrss_kib) / 1024, tail)


def rss_floor():
    """Peak RSS (MiB) reported for a trivial command: the launcher's own share."""
    return run_measured(["true"]).peak_rss_mib


def run_tool(tool, cached, out_root):
    """Run ``tool`` on ``cached`` into a fresh output folder; the run and the folder."""
    out_dir = Path(out_root) / cached.case.name / tool.kind
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    run = run_measured(tool.command(cached, out_dir))
    if not run.ok:
        log(f"  {tool.name} failed on {cached.case.name} (exit {run.returncode}):\n{run.stderr_tail}")
    return run, out_dir


# --------------------------------------------------------------------------
# 1. Quality
# --------------------------------------------------------------------------


@dataclass
class Score:
    """Quality of one fused image (and depth map) against the truth."""

    method: str
    psnr: float = float("nan")
    ssim: float = float("nan")
    depth_rmse: float = float("nan")
    shift_px: float = float("nan")
    notes: list = field(default_factory=list)


def read_output(path, notes):
    """A written image as RGB (alpha dropped), noting anything unusual in ``notes``."""
    image = read_tiff(path)
    if image.ndim == 3 and image.shape[-1] == 4:
        notes.append("RGBA output, alpha dropped")
        image = image[..., :3]
    if image.dtype != np.uint8:
        notes.append(f"{image.dtype.name} output, scaled to 8 bits")
        image = np.clip(np.round(image.astype(np.float64) * 255 / np.iinfo(image.dtype).max), 0, 255).astype(np.uint8)
    return image


def read_tiff(path):
    """A TIFF as an array; through OpenCV's libtiff where tifffile lacks the codec (LZW)."""
    try:
        return tifffile.imread(path)
    except ValueError:  # e.g. LZW without the optional imagecodecs package
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise
        if image.ndim == 3:
            code = cv2.COLOR_BGRA2RGBA if image.shape[-1] == 4 else cv2.COLOR_BGR2RGB
            image = cv2.cvtColor(image, code)
        return image


def at_input_size(image, shape, notes):
    """``image`` compared at the input's ``shape``: centre-cropped if larger, None if smaller."""
    height, width = shape
    if image.shape[:2] == (height, width):
        return image
    notes.append(f"output {image.shape[1]}x{image.shape[0]}, input {width}x{height}")
    if image.shape[0] < height or image.shape[1] < width:
        return None
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    notes.append("centre-cropped")
    return image[top : top + height, left : left + width]


def shift_against(image, truth):
    """Sub-pixel translation (px) of ``image`` against ``truth``, on a central crop."""
    from skimage.registration import phase_cross_correlation

    def crop(a):
        gray = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY).astype(np.float32)
        top, left = [max(0, (n - SHIFT_CROP) // 2) for n in gray.shape]
        return gray[top : top + SHIFT_CROP, left : left + SHIFT_CROP]

    shift, _, _ = phase_cross_correlation(crop(truth), crop(image), upsample_factor=20)
    return float(np.hypot(*shift))


def score_image(method, image, texture, notes=None):
    """PSNR, SSIM and shift of an RGB uint8 ``image`` against the true ``texture``."""
    score = Score(method, notes=list(notes or []))
    image = at_input_size(image, texture.shape[:2], score.notes)
    if image is None:
        return score
    score.psnr = synthetic.psnr(image, texture)
    score.ssim = synthetic.ssim(image, texture)
    score.shift_px = shift_against(image, texture)
    return score


def score_tool(tool, run, out_dir, texture, depth, mask):
    """Score what ``tool`` wrote into ``out_dir``."""
    if not run.ok:
        return Score(tool.name, notes=[f"failed (exit {run.returncode})"])
    notes = []
    score = score_image(tool.name, read_output(out_dir / "fused.tif", notes), texture, notes)
    depth_path = out_dir / "depth.tif"
    if tool.ours and depth_path.is_file():
        estimate = read_tiff(depth_path)
        if estimate.shape == depth.shape:
            score.depth_rmse = synthetic.depth_rmse(estimate, depth, mask)
        else:
            score.notes.append(f"depth map {estimate.shape}, truth {depth.shape}")
    return score


def baseline_scores(cached, texture):
    """Best single frame (highest PSNR) and the mean of all frames."""
    frames = open_stack(str(cached.frames_dir))
    total = np.zeros(frames.shape[1:], np.float32)
    best = (-np.inf, None, None)
    for k in range(len(frames)):
        frame = frames[k]
        total += frame
        value = synthetic.psnr(frame, texture)
        if value > best[0]:
            best = (value, k, frame)
    mean = np.clip(np.round(total / len(frames)), 0, 255).astype(np.uint8)
    _, index, frame = best
    return [
        score_image(f"best single frame (#{index})", frame, texture),
        score_image("mean of frames", mean, texture),
    ]


def quality_of_case(cached, tools, out_root):
    """Scores of every tool and baseline on one case, and the fraction of textured pixels.

    These runs also warm the page cache and the tools up for the timed runs.
    """
    texture, depth = cached.truth()
    mask = synthetic.textured_mask(texture)
    scores = []
    for tool in tools:
        log(f"  quality: {tool.name} on {cached.case.name}")
        run, out_dir = run_tool(tool, cached, out_root)
        scores.append(score_tool(tool, run, out_dir, texture, depth, mask))
    scores.extend(baseline_scores(cached, texture))
    return scores, float(mask.mean())


def quality_table(scores):
    """Markdown table of one case's scores."""
    rows = [
        [
            s.method,
            fmt(s.psnr, ".2f"),
            fmt(s.ssim, ".4f"),
            fmt(s.depth_rmse, ".3f"),
            fmt(s.shift_px, ".2f"),
            "; ".join(s.notes),
        ]
        for s in scores
    ]
    return md_table(["method", "PSNR (dB)", "SSIM", "depth RMSE (slices)", "shift (px)", "notes"], rows, "lrrrrl")


def quality_summary(case_scores):
    """Markdown table: PSNR / SSIM of each method (rows) on each case (columns)."""
    names = list(case_scores)
    methods = []
    for scores in case_scores.values():
        for s in scores:
            key = strip_index(s.method)
            if key not in methods:
                methods.append(key)
    rows = []
    for method in methods:
        row = [method]
        for name in names:
            match = [s for s in case_scores[name] if strip_index(s.method) == method]
            row.append(f"{fmt(match[0].psnr, '.2f')} / {fmt(match[0].ssim, '.3f')}" if match else "—")
        rows.append(row)
    return md_table(["PSNR dB / SSIM"] + names, rows, "l" + "r" * len(names))


def strip_index(method):
    """'best single frame (#7)' -> 'best single frame', to line methods up across cases."""
    return method.split(" (#")[0]


# --------------------------------------------------------------------------
# 2. Speed and memory of whole commands
# --------------------------------------------------------------------------


def time_tools(cached, tools, out_root, repeat):
    """``repeat`` interleaved rounds of every tool; runs per tool name.

    Each round starts with a different tool, so that drifts in machine load
    are spread over all of them.
    """
    runs = {tool.name: [] for tool in tools}
    for round_index in range(repeat):
        shift = round_index % len(tools)
        for tool in tools[shift:] + tools[:shift]:
            log(f"  speed: round {round_index + 1}/{repeat}, {tool.name} on {cached.case.name}")
            run, _ = run_tool(tool, cached, out_root)
            runs[tool.name].append(run)
    return runs


@dataclass
class Timing:
    """Medians over a tool's runs."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    spread: str
    failures: int


def summarise(runs):
    """Median wall/CPU/RSS of the successful runs and the wall-time range."""
    good = [r for r in runs if r.ok]
    if not good:
        return Timing(float("nan"), float("nan"), float("nan"), "", len(runs))
    walls = [r.wall_s for r in good]
    spread = f"{min(walls):.2f}–{max(walls):.2f}" if len(walls) > 1 else ""
    return Timing(
        statistics.median(walls),
        statistics.median(r.cpu_s for r in good),
        statistics.median(r.peak_rss_mib for r in good),
        spread,
        len(runs) - len(good),
    )


def speed_table(timings, reference, missing):
    """Markdown table of medians, with ratios to ``reference`` (our default method)."""
    ref = timings[reference]
    rows = []
    for name, t in timings.items():
        rows.append(
            [
                name,
                fmt(t.wall_s, ".2f"),
                t.spread,
                fmt(t.cpu_s, ".2f"),
                fmt(t.peak_rss_mib, ".0f"),
                fmt(t.wall_s / ref.wall_s, ".2f"),
                fmt(t.peak_rss_mib / ref.peak_rss_mib, ".2f"),
                f"{t.failures} failed" if t.failures else "",
            ]
        )
    rows += [[name, "not installed", "", "", "", "", "", ""] for name in missing]
    headers = ["command", "wall (s)", "range (s)", "CPU (s)", "peak RSS (MiB)", "time / ours", "RSS / ours", "notes"]
    return md_table(headers, rows, "lrrrrrrl")


# --------------------------------------------------------------------------
# 3. Per-stage costs of our engine
# --------------------------------------------------------------------------


def timed(function):
    """Wall and CPU seconds (all threads of this process) of one call, and its value."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = function()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def medians(samples):
    """Per-key medians of a list of dicts with the same keys."""
    return {key: statistics.median(sample[key] for sample in samples) for key in samples[0]}


def decode_all(folder, workers):
    """Decode every frame of ``folder`` through our reader, with ``workers`` threads."""
    frames = open_stack(str(folder))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(frames.__getitem__, range(len(frames))):
            pass


def decode_costs(cached, repeat):
    """Median wall and CPU seconds to decode all frames, on 1 and on 2 threads."""
    n = len(cached.frame_paths)
    rows = {}
    for workers in (1, 2):
        samples = []
        for _ in range(repeat):
            wall, cpu, _ = timed(lambda workers=workers: decode_all(cached.frames_dir, workers))
            samples.append({"wall": wall, "cpu": cpu})
        m = medians(samples)
        label = f"decode {n} JPEGs, {'sequential' if workers == 1 else f'{workers} threads'}"
        rows[label] = m["wall"]
        rows[f"{label}, CPU"] = m["cpu"]
    return rows


def pipeline_stages(cached, method, repeat):
    """Median seconds per stage of in-process ``focus_stack`` runs, and the last result.

    Stages are whatever ``StackResult.timings`` reports (``total``, when it
    is there, is the pipeline's own total); ``other`` is the wall time of the
    call outside the pipeline (opening the stack, picking the backend,
    planning tiles).
    """
    samples, result = [], None
    for _ in range(repeat):
        result = None  # free the previous run's outputs first
        wall, cpu, result = timed(
            lambda: napari_focus_stack.focus_stack(str(cached.frames_dir), scale_factor=1, method=method, device="cpu")
        )
        stages = {f"pipeline: {k}": v for k, v in result.timings.items() if k != "total"}
        inside = result.timings.get("total", sum(stages.values()))
        stages["pipeline: total"] = inside
        stages["other (open, backend, set-up)"] = wall - inside
        stages["focus_stack() call, wall"] = wall
        stages["focus_stack() call, CPU (all threads)"] = cpu
        samples.append(stages)
    return medians(samples), result


def write_costs(result, out_dir, repeat):
    """Median seconds to write each output as TIFF with :func:`save_image`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    info = result.provenance()
    outputs = {"fused": result.fused, "depth": result.depth, "confidence": result.confidence}
    costs = {}
    for name, image in outputs.items():
        path = out_dir / f"{name}.tif"
        costs[f"write {name} TIFF ({image.nbytes / 2**20:.0f} MiB)"] = statistics.median(
            timed(lambda image=image, path=path: save_image(image, path, metadata=info))[0] for _ in range(repeat)
        )
    return costs


def startup_costs(repeat):
    """Median wall seconds of a bare interpreter and of importing the CLI (and a run's imports)."""
    commands = {
        "Python start-up (`python -c pass`)": "pass",
        "start-up + `import napari_focus_stack.cli`": "import napari_focus_stack.cli",
        "start-up + imports of a CLI run (cli, engine, io)": (
            "import napari_focus_stack.cli, napari_focus_stack.engine.pipeline, "
            "napari_focus_stack.engine.backend, napari_focus_stack.io"
        ),
    }
    return {
        label: statistics.median(run_measured([sys.executable, "-c", code]).wall_s for _ in range(repeat))
        for label, code in commands.items()
    }


def stage_tables(cached, repeat, out_root, cli_runs):
    """Markdown tables of our per-stage costs on ``cached``, beside ``cli_runs`` (name: Timing)."""
    log(f"  stages: decoding {cached.case.name}")
    decode = decode_costs(cached, repeat)
    stages, tiles = {}, {}
    for method in METHODS:
        log(f"  stages: in-process focus_stack, {method}, on {cached.case.name}")
        stages[method], result = pipeline_stages(cached, method, repeat)
        tiles[method] = result.metadata.get("tiles", 1)
        if method == METHODS[0]:
            writes = write_costs(result, Path(out_root) / cached.case.name / "stage-writes", repeat)
        result = None
    startup = startup_costs(max(5, repeat))

    blank = [""] * (len(METHODS) - 1)
    rows = [[label, fmt(seconds, ".3f"), *blank] for label, seconds in decode.items()]
    for stage in dict.fromkeys(name for m in METHODS for name in stages[m]):
        rows.append([stage] + [fmt(stages[m].get(stage), ".3f") for m in METHODS])
    rows.append(["tiles used by the pipeline"] + [str(tiles[m]) for m in METHODS])
    rows += [[label, fmt(seconds, ".3f"), *blank] for label, seconds in {**writes, **startup}.items()]
    if cli_runs:
        walls = [cli_runs.get(f"ours ({m})") for m in METHODS]
        rows.append(["whole CLI run (speed table median)"] + [fmt(t.wall_s if t else None, ".3f") for t in walls])
    timing = md_table(["step"] + [f"seconds ({m})" for m in METHODS], rows, "l" + "r" * len(METHODS))
    return timing + "\n\n" + memory_table(cached, cli_runs)


def memory_table(cached, cli_runs):
    """Peak RSS of our CLI runs beside the sizes of the data they handle."""
    height, width = cached.case.shape
    n = cached.case.n_slices
    mib = 2**20
    rows = [
        ["one frame, uint8 RGB", f"{height * width * 3 / mib:.0f}"],
        [f"whole stack ({n} frames), uint8", f"{n * height * width * 3 / mib:.0f}"],
        [f"whole stack ({n} frames), float32", f"{n * height * width * 3 * 4 / mib:.0f}"],
        ["one float32 map (Y, X)", f"{height * width * 4 / mib:.0f}"],
    ]
    for name, timing in (cli_runs or {}).items():
        rows.append([f"peak RSS, whole CLI run, {name}", fmt(timing.peak_rss_mib, ".0f")])
    return md_table(["memory", "MiB"], rows, "lr")


# --------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------


def cpu_model():
    """CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def ram_gib():
    """Total RAM in GiB from /proc/meminfo."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError):
        pass
    return float("nan")


def load_average():
    """The 1/5/15-minute load averages as text."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def package_version(name):
    try:
        return importlib_metadata.version(name)
    except importlib_metadata.PackageNotFoundError:
        return "?"


def machine_table(tools, missing):
    """Markdown table: date, machine, load, versions."""
    rows = [
        ["date", datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")],
        ["CPU", cpu_model()],
        ["cores (os.cpu_count)", str(os.cpu_count())],
        ["RAM", f"{ram_gib():.1f} GiB"],
        ["OS", platform.platform()],
        ["load average at start (1/5/15 min)", load_average()],
        ["Python", platform.python_version()],
        ["napari-focus-stack", napari_focus_stack.__version__],
        ["numpy", np.__version__],
        ["opencv", cv2.__version__],
        ["scikit-image", package_version("scikit-image")],
        ["tifffile", tifffile.__version__],
    ]
    for tool in tools:
        if not tool.ours:
            rows.append([tool.name, f"{tool.version} ({tool.executable[0]})"])
    rows += [[name, "not installed"] for name in missing]
    return md_table(["item", "value"], rows, "ll")


# --------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------


def fmt(value, spec):
    """Format a number; NaN and None as an em dash."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    return format(value, spec)


def md_table(headers, rows, align):
    """A markdown table; ``align`` has one of ``l``/``r`` per column."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    widths = [max(w, 3) for w in widths]

    def line(cells):
        padded = [str(c).rjust(w) if a == "r" else str(c).ljust(w) for c, w, a in zip(cells, widths, align)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else ("-" * (w + 2)) for w, a in zip(widths, align)) + "|"
    return "\n".join([line(headers), rule] + [line(row) for row in rows])


def log(message):
    """Progress goes to stderr, tables to stdout."""
    print(message, file=sys.stderr, flush=True)


class Report:
    """Prints markdown as it is produced and keeps it for ``--markdown``."""

    def __init__(self):
        self.parts = []

    def add(self, text=""):
        print(text, flush=True)
        self.parts.append(text)

    def save(self, path):
        Path(path).write_text("\n".join(self.parts) + "\n")


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="one 1 MP case, once: a smoke test (< 1 min)")
    p.add_argument(
        "--repeat", type=int, default=3, metavar="N", help="timed runs per command (default 3; 1 with --quick)"
    )
    p.add_argument("--sizes", default="1mp,12mp", help=f"comma-separated sizes out of {','.join(SIZES)} (default all)")
    p.add_argument("--cache", type=Path, default=HERE / "_cache", help="simulated stacks (default benchmarks/_cache)")
    p.add_argument("--out", type=Path, default=HERE / "_out", help="outputs of the runs (default benchmarks/_out)")
    p.add_argument("--enfuse", metavar="PATH", help="enfuse executable (default: from PATH)")
    p.add_argument("--focusweave", metavar="PATH", help="focusweave executable (default: from PATH)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="also write the report to FILE")
    args = p.parse_args(argv)
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown or not sizes:
        p.error(f"--sizes takes {', '.join(SIZES)}; got {args.sizes!r}")
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    if args.quick:
        sizes, args.repeat = ["1mp"], 1
    args.sizes = sizes
    return args


def selected_cases(args):
    """Cases of the chosen sizes; with ``--quick`` only the main 1 MP case."""
    cases = [c for c in CASES if c.size in args.sizes]
    return [c for c in cases if c.main] if args.quick else cases


def machine_section(report, tools, missing):
    report.add("## Machine\n")
    report.add(machine_table(tools, missing))
    report.add(
        f"\nOur command: `napari-focus-stack FRAMES/ -o fused.tif --depth depth.tif --confidence conf.tif "
        f"--radius {DEFAULTS['radius']} --smoothing {DEFAULTS['smoothing']} --scale-factor 1 --method M --device cpu -q`; "
        "enfuse: `--exposure-weight=0 --saturation-weight=0 --contrast-weight=1 --hard-mask`; "
        "focusweave: `--no-align --keep-size`."
    )


def quality_section(report, cases, tools, missing, out_root):
    report.add("\n## 1. Quality against the simulated truth\n")
    report.add(
        "Fused image against the true all-in-focus texture (PSNR, SSIM over RGB, 8-bit range); "
        "depth RMSE in slices on textured pixels (ours only: the peers write no depth map); "
        f"shift = translation of the output against the truth (phase correlation, central {SHIFT_CROP} px)."
    )
    case_scores = {}
    for cached in cases:
        scores, textured = quality_of_case(cached, tools, out_root)
        case_scores[cached.case.name] = scores
        report.add(f"\n### {cached.case.name}: {cached.case.describe()} ({textured:.0%} of pixels textured)\n")
        report.add(quality_table(scores))
    if missing:
        report.add(f"\nNot installed: {', '.join(missing)}.")
    if len(case_scores) > 1:
        report.add("\n### Summary (PSNR dB / SSIM)\n")
        report.add(quality_summary(case_scores))


def speed_section(report, cases, tools, missing, out_root, repeat):
    """Speed tables of the main cases; our CLI timings per case name."""
    report.add("\n## 2. Speed and memory: whole command, files to written outputs\n")
    report.add(
        f"Median of {repeat} interleaved run(s) after one warm-up (the quality run); wall time from "
        "start to exit, CPU = user + system of the child, peak RSS = `ru_maxrss` from `os.wait4`, spawned "
        f"from a small launcher (a trivial command reports {rss_floor():.0f} MiB). "
        "Ours writes fused + depth + confidence; the peers write the fused TIFF. "
        f"Ratios are to ours ({METHODS[0]}, the default): above 1 means the other command is slower / bigger."
    )
    ours = {}
    for cached in cases:
        report.add(f"\n### {cached.case.name}: {cached.case.describe()} — load average now {load_average()}\n")
        timings = {name: summarise(runs) for name, runs in time_tools(cached, tools, out_root, repeat).items()}
        ours[cached.case.name] = {name: t for name, t in timings.items() if name.startswith("ours")}
        report.add(speed_table(timings, tools[0].name, missing))
    return ours


def stage_section(report, cached, out_root, repeat, cli_runs):
    report.add(f"\n## 3. Our costs per stage: {cached.case.name} ({cached.case.describe()})\n")
    report.add(
        f"Median of {repeat} run(s); load average now {load_average()}. Pipeline stages from "
        "`StackResult.timings` of an in-process `focus_stack(folder)`: `read` is time spent waiting "
        "for the decoder thread (decoding overlaps computing), `finish` is depth, confidence and "
        "the final blend. Start-up rows: median of at least 5 runs.\n"
    )
    report.add(stage_tables(cached, repeat, out_root, cli_runs))


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    report = Report()
    tools, missing = make_tools(args)
    cases = [ensure_case(case, args.cache) for case in selected_cases(args)]
    main_cases = [c for c in cases if c.case.main]

    machine_section(report, tools, missing)
    quality_section(report, cases, tools, missing, args.out)
    cli_runs = speed_section(report, main_cases, tools, missing, args.out, args.repeat)
    largest = max(main_cases, key=lambda c: np.prod(c.case.shape))
    stage_section(report, largest, args.out, args.repeat, cli_runs.get(largest.case.name, {}))
    report.add(f"\nLoad average at the end: {load_average()}; benchmark took {time.perf_counter() - started:.0f} s.")
    if args.markdown:
        report.save(args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
