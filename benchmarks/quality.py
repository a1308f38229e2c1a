"""Quality suite: our defaults against every peer, on every scene family of the simulator.

    python benchmarks/quality.py                      # every family, 384x384 x 14 slices, real stacks
    python benchmarks/quality.py --quick              # 4 families, 128x128 x 8, no real stacks (< 1 min)
    python benchmarks/quality.py --families bristles,clutter --size 256 --out report.md

For each family it renders one stack (``napari_focus_stack.synthetic.simulate_scene``),
writes its frames to a temporary folder (8-bit: PNG, 16-bit: TIFF) and runs

* ours, through the Python API with its defaults (``align="none"``: the stacks
  are aligned), and our other methods;
* two baselines: the best single frame (by PSNR) and a naive per-pixel argmax
  of Laplacian energy over a 5x5 window (2 px radius), no smoothing;
* every peer of ``peers.py`` whose environment is installed (see there how).

It prints markdown: one table of fused PSNR / SSIM against the true
all-in-focus image and depth RMSE (all scored pixels, and within 3 px of
occlusion boundaries) per family and tool; the time of each tool on each
stack; a summary against the targets of issue 11 (PSNR >= best peer + 0.5 dB,
SSIM >= best peer, our raw depth RMSE <= the best peer's after an affine
fit); and, for the real stacks under ``../shared/data/stacks`` (read in
place, skipped when absent), the speckle and coverage of our depth maps.

Peers' failures are reported, never fatal. Nothing is cached: every run
simulates afresh (the simulator is deterministic in its seed).
"""

import argparse
import datetime
import inspect
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from skimage import color, util

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers as peer_registry  # noqa: E402

import napari_focus_stack  # noqa: E402
from napari_focus_stack import focus_stack  # noqa: E402
from napari_focus_stack.engine.result import DEFAULTS, METHODS  # noqa: E402
from napari_focus_stack.io import open_stack  # noqa: E402
from napari_focus_stack.synthetic import (  # noqa: E402
    SCENE_FAMILIES,
    depth_rmse,
    depth_speckle,
    psnr,
    simulate_scene,
    ssim,
    textured_mask,
)

REAL_STACKS = HERE.parent.parent / "shared" / "data" / "stacks"
#: Real stacks larger than this (pixels per frame) are downscaled to about it
#: first (``--real-mp``): the 20 MP algae stack is, pcb_aimonen (3.1 MP) is not,
#: so its speckle compares with the issue's full-resolution figure.
REAL_MAX_PIXELS = 3_500_000
#: Speckle: depth more than this many slices from the median of a window of this size.
SPECKLE_SLICES, SPECKLE_WINDOW = 2.0, 15
#: The naive baseline's window half-size (px).
NAIVE_RADIUS = 2
OURS = "ours"


# --------------------------------------------------------------------------
# Scenes: the simulator's families
# --------------------------------------------------------------------------


@dataclass
class Scene:
    """One rendered stack and its truth."""

    family: str
    frames: np.ndarray
    texture: np.ndarray
    depth: np.ndarray
    #: Pixels scored for depth.
    mask: np.ndarray
    #: Pixels within 3 px of an occlusion boundary, or None.
    boundary: np.ndarray = None
    #: PSNR/SSIM value range; None: the dtype's.
    data_range: float = None
    seconds: float = 0.0

    @property
    def bit_depth(self):
        return 16 if self.frames.dtype == np.uint16 else 8


def simulator():
    """(family names, simulate(family, shape, n_slices, seed), description)."""

    def simulate(family, shape, n_slices, seed):
        return simulate_scene(family, shape=shape, n_slices=n_slices, seed=seed)

    return tuple(SCENE_FAMILIES), simulate, "napari_focus_stack.synthetic.simulate_scene"


def render(simulate, family, shape, n_slices, seed):
    start = time.perf_counter()
    sim = simulate(family, shape, n_slices, seed)
    seconds = time.perf_counter() - start
    mask = getattr(sim, "mask", None)
    if mask is None:
        mask = textured_mask(sim.texture)
    return Scene(
        family,
        np.asarray(sim.frames),
        np.asarray(sim.texture),
        np.asarray(sim.depth, np.float32),
        np.asarray(mask, bool),
        getattr(sim, "boundary", None),
        getattr(sim, "data_range", None),
        seconds,
    )


def write_frames(frames, folder):
    """Frames as files our tool and the peers read: 8-bit PNG, 16-bit TIFF."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(frames):
        if frame.dtype == np.uint8:
            path = folder / f"frame_{k:02d}.png"
            peer_registry.write_image(path, frame)
        elif frame.dtype == np.uint16:
            path = folder / f"frame_{k:02d}.tif"
            tifffile.imwrite(path, frame, photometric="rgb" if frame.ndim == 3 else "minisblack")
        else:
            raise ValueError(f"frames of dtype {frame.dtype} have no file format here")
        paths.append(path)
    return paths


# --------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------

_TAKES_RANGE = "data_range" in inspect.signature(psnr).parameters


def image_scores(image, scene):
    """(PSNR, SSIM) of ``image`` against the true all-in-focus image."""
    extra = {"data_range": scene.data_range} if (_TAKES_RANGE and scene.data_range) else {}
    return psnr(image, scene.texture, **extra), ssim(image, scene.texture, **extra)


def affine_fit(estimate, truth, mask):
    """``a * estimate + b`` closest to ``truth`` on ``mask`` (least squares)."""
    x = estimate[mask].astype(np.float64)
    y = truth[mask].astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    return (a * estimate.astype(np.float64) + b).astype(np.float32)


def depth_scores(estimate, scene, *, fit, notes):
    """Depth RMSE (slices) on the scored pixels and within 3 px of boundaries; NaN where none."""
    if estimate is None:
        return float("nan"), float("nan")
    finite = np.isfinite(estimate)
    mask = scene.mask & finite
    if finite.mean() < 1:
        notes.append(f"depth given on {finite.mean():.1%} of pixels (scored there)")
    if not mask.any():
        return float("nan"), float("nan")
    if fit:
        estimate = affine_fit(np.where(finite, estimate, 0), scene.depth, mask)
    overall = depth_rmse(estimate, scene.depth, mask)
    edge = float("nan")
    if scene.boundary is not None and (scene.boundary & mask).any():
        edge = depth_rmse(estimate, scene.depth, scene.boundary & mask)
    return overall, edge


@dataclass
class Score:
    """One tool on one stack."""

    tool: str
    psnr: float = float("nan")
    ssim: float = float("nan")
    depth: float = float("nan")
    edge: float = float("nan")
    #: our depth after the same affine fit as the peers', for a like-for-like look
    depth_fitted: float = float("nan")
    seconds: float = float("nan")
    error: str = ""
    notes: list = field(default_factory=list)

    @property
    def ok(self):
        return not self.error


def score(tool, fused, depth, scene, seconds, *, fit, notes=()):
    result = Score(tool, seconds=seconds, notes=[n for n in notes if n])
    if fused.shape != scene.texture.shape:
        result.error = f"output {fused.shape}, truth {scene.texture.shape}"
        return result
    result.psnr, result.ssim = image_scores(fused, scene)
    if depth is not None and depth.shape != scene.depth.shape:
        result.notes.append(f"depth {depth.shape}, truth {scene.depth.shape}: not scored")
        depth = None
    result.depth, result.edge = depth_scores(depth, scene, fit=fit, notes=result.notes)
    if not fit:
        result.depth_fitted = depth_scores(depth, scene, fit=True, notes=[])[0]
    return result


# --------------------------------------------------------------------------
# Tools: ours, baselines, peers
# --------------------------------------------------------------------------


def our_methods():
    """Our default method first, then the others."""
    default = DEFAULTS["method"]
    return [default] + [m for m in METHODS if m != default]


def our_name(method):
    return OURS if method == DEFAULTS["method"] else f"ours-{method}"


def warm_up():
    """One tiny run per method, so that first-call costs (imports, caches) are not timed."""
    rng = np.random.default_rng(0)
    frames = (rng.random((4, 48, 48, 3)) * 255).astype(np.uint8)
    for method in our_methods():
        focus_stack(frames, method=method, align="none")


def run_ours(method, frame_paths, scene):
    start = time.perf_counter()
    try:
        result = focus_stack([str(p) for p in frame_paths], method=method, align="none")
    except Exception as error:  # report, go on with the others
        return Score(our_name(method), error=f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - start
    return score(our_name(method), result.fused, result.depth, scene, seconds, fit=False)


def luminance(frame):
    """Luminance (float32, [0, 1] units) of one frame ``(Y, X[, 3])``, as scikit-image computes it."""
    frame = util.img_as_float32(np.asarray(frame))
    return color.rgb2gray(frame).astype(np.float32) if frame.ndim == 3 else frame


def naive_argmax(frames, radius=NAIVE_RADIUS):
    """Per pixel, the frame of highest Laplacian energy over a (2r+1)^2 window: (fused, index)."""
    size = (2 * radius + 1, 2 * radius + 1)
    best = np.full(frames.shape[1:3], -np.inf, np.float32)
    index = np.zeros(frames.shape[1:3], np.int64)
    for k in range(len(frames)):
        laplacian = cv2.Laplacian(luminance(frames[k]), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
        energy = cv2.blur(laplacian * laplacian, size, borderType=cv2.BORDER_REFLECT)
        better = energy > best
        best[better] = energy[better]
        index[better] = k
    rows, cols = np.indices(index.shape)
    return frames[index, rows, cols], index.astype(np.float32)


def run_baselines(scene):
    start = time.perf_counter()
    values = [image_scores(frame, scene)[0] for frame in scene.frames]
    k = int(np.argmax(values))
    best = score(
        "best frame", scene.frames[k], None, scene, time.perf_counter() - start, fit=False, notes=[f"frame {k}"]
    )
    start = time.perf_counter()
    fused, index = naive_argmax(scene.frames)
    naive = score("argmax-lap", fused, index, scene, time.perf_counter() - start, fit=False)
    return [best, naive]


def peer_label(peer):
    return peer.name.split(" (")[0]


def run_peer(peer, folder, frame_paths, scene, work):
    output, error = peer_registry.run_peer(peer, folder, frame_paths, work / peer_label(peer), scene.bit_depth)
    if output is None:
        return Score(peer_label(peer), error=error)
    return score(peer_label(peer), output.fused, output.depth, scene, output.seconds, fit=True, notes=[output.note])


def run_family(simulate, family, args, peers, log):
    scene = render(simulate, family, (args.size, args.size), args.slices, args.seed)
    log(f"{family}: {scene.frames.shape} {scene.frames.dtype.name}, rendered in {scene.seconds:.1f} s")
    scores = []
    with tempfile.TemporaryDirectory(prefix=f"quality-{family}-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "frames"
        frame_paths = write_frames(scene.frames, folder)
        for method in our_methods():
            scores.append(run_ours(method, frame_paths, scene))
            log(f"  {scores[-1].tool}: {brief(scores[-1])}")
        scores.extend(run_baselines(scene))
        for peer in peers:
            scores.append(run_peer(peer, folder, frame_paths, scene, tmp / "peers"))
            log(f"  {scores[-1].tool}: {brief(scores[-1])}")
    return scene, scores


def brief(s):
    if not s.ok:
        return f"failed: {s.error}"
    return f"{s.psnr:.2f} dB, SSIM {s.ssim:.4f}, depth {s.depth:.3f}, edge {s.edge:.3f}, {s.seconds:.2f} s"


# --------------------------------------------------------------------------
# Real stacks: speckle and coverage of our depth maps
# --------------------------------------------------------------------------


def speckle(depth):
    """(:func:`~napari_focus_stack.synthetic.depth_speckle`, share of pixels with a finite depth)."""
    finite = np.isfinite(depth)
    if not finite.any():
        return float("nan"), 0.0
    return depth_speckle(depth, window=SPECKLE_WINDOW, slices=SPECKLE_SLICES), float(finite.mean())


def load_real(folder, max_pixels=REAL_MAX_PIXELS):
    """Frames of a real stack as an array, downscaled to about ``max_pixels``; (array, original shape, factor)."""
    frames = open_stack(str(folder))
    height, width = frames.shape[1:3]
    factor = min(1.0, (max_pixels / (height * width)) ** 0.5)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    out = []
    for k in range(len(frames)):
        frame = np.asarray(frames[k])
        out.append(frame if factor == 1.0 else cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    return np.stack(out), tuple(frames.shape), factor


@dataclass
class RealScore:
    name: str
    frames: tuple = ()
    used: tuple = ()
    seconds: float = float("nan")
    speckle: float = float("nan")
    coverage: float = float("nan")
    error: str = ""


def run_real(folder, log, max_pixels=REAL_MAX_PIXELS):
    try:
        frames, original, factor = load_real(folder, max_pixels)
        start = time.perf_counter()
        result = focus_stack(frames)  # every default, alignment too: real stacks move
        seconds = time.perf_counter() - start
        value, coverage = speckle(result.depth)
        out = RealScore(folder.name, original, frames.shape, seconds, value, coverage)
    except Exception as error:
        out = RealScore(folder.name, error=f"{type(error).__name__}: {error}")
    log(f"real {folder.name}: {out}")
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def fmt(value, spec):
    return "—" if value is None or not np.isfinite(value) else format(value, spec)


def md_table(header, rows, align=None):
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": "---", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def cell(s):
    if s is None:
        return "—"
    if not s.ok:
        return "failed"
    return f"{fmt(s.psnr, '.2f')} / {fmt(s.ssim, '.3f')} / {fmt(s.depth, '.2f')} / {fmt(s.edge, '.2f')}"


def quality_table(results, tools):
    rows = []
    for scene, scores in results:
        by_tool = {s.tool: s for s in scores}
        rows.append([scene.family] + [cell(by_tool.get(t)) for t in tools])
    return md_table(["family"] + tools, rows)


def time_table(results, tools):
    rows = []
    for scene, scores in results:
        by_tool = {s.tool: s for s in scores}
        row = [scene.family, f"{scene.seconds:.1f}"]
        for t in tools:
            s = by_tool.get(t)
            row.append("—" if s is None or not s.ok else f"{s.seconds:.2f}")
        rows.append(row)
    return md_table(["family", "render"] + tools, rows)


def best_of(scores, attribute, *, lowest=False):
    values = [(getattr(s, attribute), s.tool) for s in scores if s.ok and np.isfinite(getattr(s, attribute))]
    if not values:
        return float("nan"), "—"
    return min(values) if lowest else max(values)


def summary_table(results, peer_tools):
    rows = []
    met_all = 0
    for scene, scores in results:
        ours = next((s for s in scores if s.tool == OURS), None)
        peers = [s for s in scores if s.tool in peer_tools]
        p_best, p_name = best_of(peers, "psnr")
        s_best, s_name = best_of(peers, "ssim")
        d_best, d_name = best_of(peers, "depth", lowest=True)
        if ours is None or not ours.ok or not np.isfinite(p_best):
            rows.append([scene.family, p_name, "—", s_name, "—", d_name, "—", "—", "—", "—", "n/a"])
            continue
        dp, ds = ours.psnr - p_best, ours.ssim - s_best
        checks = [dp >= 0.5, ds >= 0]
        depth_ok = "—"
        if np.isfinite(d_best) and np.isfinite(ours.depth):
            checks.append(ours.depth <= d_best)
            depth_ok = "yes" if checks[-1] else "no"
        met = all(checks)
        met_all += met
        rows.append(
            [
                scene.family,
                f"{p_name} {p_best:.2f}",
                f"{dp:+.2f}",
                f"{s_name} {s_best:.3f}",
                f"{ds:+.3f}",
                f"{d_name} {fmt(d_best, '.2f')}",
                fmt(ours.depth, ".2f"),
                fmt(ours.depth_fitted, ".2f"),
                "yes" if checks[0] else "no",
                "yes" if checks[1] else "no",
                depth_ok,
                "**yes**" if met else "no",
            ]
        )
    header = [
        "family",
        "best peer PSNR",
        "ours − best",
        "best peer SSIM",
        "ours − best",
        "best peer depth (fitted)",
        "ours depth (raw)",
        "ours depth (fitted)",
        "PSNR ≥ +0.5",
        "SSIM ≥",
        "depth ≤",
        "target met",
    ]
    return md_table(header, rows, "l" + "r" * 7 + "c" * 4), met_all


def real_table(reals):
    rows = []
    for r in reals:
        if r.error:
            rows.append([r.name, "—", "—", "—", "—", "—", f"failed: {r.error}"])
            continue
        z, h, w = r.frames[:3]
        used = f"{r.used[2]}x{r.used[1]}" + (" (downscaled)" if r.used[1:3] != r.frames[1:3] else "")
        rows.append(
            [
                r.name,
                f"{z} x {w}x{h}",
                used,
                f"{r.seconds:.1f}",
                f"{r.speckle:.2%}",
                f"{r.coverage:.1%}",
                "≤ 1 %: " + ("yes" if r.speckle <= 0.01 else "no"),
            ]
        )
    return md_table(["stack", "frames", "processed at", "ours (s)", "speckle", "depth given", "target"], rows)


def code_state():
    """The commit measured, and whether the engine had uncommitted changes (others edit the same checkout)."""
    root = HERE.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=30
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "commit unknown"
    if not head:
        return "commit unknown"
    return f"commit {head}" + (" with uncommitted changes in src/" if dirty else "")


def report(args, results, reals, tools, peers, missing, source, total_s, skipped=()):
    peer_tools = [peer_label(p) for p in peers]
    lines = [
        f"# Quality suite — {datetime.date.today().isoformat()}",
        "",
        f"napari-focus-stack {napari_focus_stack.__version__} ({code_state()}), defaults {DEFAULTS}; "
        f"scenes from {source}; "
        f"{args.size}x{args.size} x {args.slices} slices, seed {args.seed}; "
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}.",
        "",
        "Peers: "
        + (", ".join(f"{p.name} ({p.version() or '?'})" for p in peers) or "none installed")
        + ("; missing: " + ", ".join(f"{k} ({v})" for k, v in missing.items()) if missing else "")
        + ".",
        "",
        "## Quality: PSNR (dB) / SSIM / depth RMSE (slices) / depth RMSE within 3 px of occlusion boundaries",
        "",
        quality_table(results, tools),
        "",
        f"- `{OURS}` is our default (`method={DEFAULTS['method']!r}`, `align='none'`); `ours-<method>` our other "
        "methods, defaults otherwise. `best frame`: the single frame of highest PSNR. `argmax-lap`: per pixel the "
        f"frame of highest Laplacian energy over a {2 * NAIVE_RADIUS + 1}x{2 * NAIVE_RADIUS + 1} window, no smoothing.",
        "- Depth RMSE: ours and `argmax-lap` as output, in slices, **no fitting**; peers **after a best affine fit** "
        "(least squares `a·d + b` to the truth on the scored pixels), since their depth units are arbitrary "
        "(OpenFocus: 8-bit focus-position maps; shinestacker: weight-averaged frame index). "
        "Peers without a depth map: —.",
        "- Scored depth pixels: the scene's own mask where it gives one (fluorescence: where in-focus light stands out of the haze), "
        "else `textured_mask` of the true image; the boundary column uses the scene's boundary mask (layered "
        "scenes; pixels within 3 px of an occlusion boundary) within those.",
        "- PSNR and SSIM use the scene's `data_range` where it gives one (dim 16-bit fluorescence: the span of its "
        "signal), else the dtype's full range.",
    ]
    notes = sorted(
        {f"`{s.tool}`: {n}" for _, scores in results for s in scores for n in s.notes if s.tool in peer_tools}
    )
    failures = [f"`{s.tool}` on {scene.family}: {s.error}" for scene, scores in results for s in scores if not s.ok]
    if notes:
        lines += ["- Peer notes: " + "; ".join(notes) + "."]
    if failures:
        lines += ["", "Failures (left out of those rows):", ""] + [f"- {f}" for f in failures]
    if skipped:
        lines += ["", "Families that could not be rendered (left out):", ""] + [f"- {f}" for f in skipped]
    table, met = summary_table(results, peer_tools)
    lines += [
        "",
        "## Time (s) per tool per stack",
        "",
        time_table(results, tools),
        "",
        "Ours: in-process `focus_stack` on the frame files (reading included), after a warm-up run. Peers: wall time "
        "of their whole subprocess (interpreter start-up, reading and writing files included). Baselines: in memory.",
        "",
        f"## Against the targets of issue 11 (ours = `{OURS}`, best of {len(peers)} peers per metric)",
        "",
        table,
        "",
        f"Target met on **{met} of {len(results)}** families (PSNR ≥ best peer + 0.5 dB, SSIM ≥ best peer, and "
        "where any peer gives depth, our raw depth RMSE ≤ the best peer's affine-fitted RMSE).",
        "",
        "## Real stacks (ours only, defaults)",
        "",
    ]
    if reals is None:
        lines += ["Skipped (--quick or --no-real)."]
    elif not reals:
        lines += [f"None found under {REAL_STACKS} — skipped."]
    else:
        lines += [
            real_table(reals),
            "",
            f"Speckle: share of pixels (with a finite depth) more than {SPECKLE_SLICES:g} slices from the "
            f"{SPECKLE_WINDOW}x{SPECKLE_WINDOW} median of the depth map; target ≤ 1 %. Depth given: share of pixels "
            f"with a finite depth. Frames over {args.real_mp:g} MP are downscaled to about that first "
            "(area averaging), to keep the run short; our defaults include alignment (these stacks are not all "
            f"aligned). Read in place from `{os.path.relpath(REAL_STACKS, HERE.parent)}`.",
        ]
    lines += ["", f"Total run time: {total_s / 60:.1f} min."]
    return "\n".join(lines)


# --------------------------------------------------------------------------


QUICK_FAMILIES = 4


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", help="comma-separated families (default: all)")
    parser.add_argument("--size", type=int, help="image side in px (default 384; --quick 128)")
    parser.add_argument("--slices", type=int, help="slices per stack (default 14; --quick 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peers", help="comma-separated peer name prefixes (default: every installed peer)")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_FAMILIES} families, small, no real stacks")
    parser.add_argument("--no-real", action="store_true", help="skip the real stacks")
    parser.add_argument(
        "--real-mp",
        type=float,
        default=REAL_MAX_PIXELS / 1e6,
        help="downscale real stacks to about this many megapixels (default %(default)g)",
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    args.size = args.size or (128 if args.quick else 384)
    args.slices = args.slices or (8 if args.quick else 14)
    return args


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()

    def log(message):
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    families, simulate, source = simulator()
    if args.families:
        chosen = [f.strip() for f in args.families.split(",") if f.strip()]
        unknown = [f for f in chosen if f not in families]
        if unknown:
            sys.exit(f"unknown families {unknown}; known: {', '.join(families)}")
        families = tuple(chosen)
    elif args.quick:  # spread over the list: first and last, kinds in between
        picks = np.linspace(0, len(families) - 1, min(QUICK_FAMILIES, len(families))).round().astype(int)
        families = tuple(families[i] for i in dict.fromkeys(picks))
    peers, missing = peer_registry.available_peers(args.peers.split(",") if args.peers else None)
    for name, why in missing.items():
        log(f"peer {name} left out: {why}")
    warm_up()
    results, skipped = [], []
    for family in families:
        try:
            results.append(run_family(simulate, family, args, peers, log))
        except Exception as error:  # the simulator failed on this family
            skipped.append(f"{family} ({type(error).__name__}: {error})")
            log(f"{family}: could not be rendered; skipped: {skipped[-1]}")
    tools = [our_name(m) for m in our_methods()] + ["best frame", "argmax-lap"] + [peer_label(p) for p in peers]
    reals = None
    if not (args.quick or args.no_real):
        folders = sorted(p for p in REAL_STACKS.iterdir() if p.is_dir()) if REAL_STACKS.is_dir() else []
        reals = [run_real(folder, log, args.real_mp * 1e6) for folder in folders]
    text = report(args, results, reals, tools, peers, missing, source, time.perf_counter() - start, skipped)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
