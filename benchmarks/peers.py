"""Other focus-stacking tools ("peers"), run side by side with ours by ``quality.py``.

Each peer runs as a subprocess in its own environment, with its own defaults
(no tuning), its alignment off where it has such an option (the simulated
stacks are aligned) and the output kept at the input's size. None of them is
a dependency of this project: they live outside the checkout, by default
under ``/root/peers`` (``$FOCUS_PEERS``).

Installing them (the exact commands used; Debian, Python 3.11 as ``python3``,
Python 3.12 from pyenv)::

    mkdir -p /root/peers && cd /root/peers
    # focusweave 2.0.0 (PyPI): a CLI, Laplacian-pyramid fusion
    python3 -m venv focusweave && focusweave/bin/pip install focusweave
    # OpenFocus 1.72.0 (PyPI): a CLI; pulls in torch (with CUDA wheels, ~3 GB)
    # for its neural methods, which are not run here
    python3 -m venv openfocus && openfocus/bin/pip install openfocus
    # shinestacker 1.17.4 (PyPI): needs Python >= 3.12; used headless through
    # its shinestacker.algorithms API (PySide6 gets installed but not imported)
    /root/.pyenv/versions/3.12.1/bin/python3.12 -m venv shinestacker
    shinestacker/bin/pip install shinestacker
    # enfuse 4.2 (Debian package "enblend-enfuse")
    apt-get install enblend-enfuse

Paths can be overridden one by one: ``$FOCUSWEAVE`` (the ``focusweave``
executable), ``$OPENFOCUS`` (the ``openfocus`` executable),
``$SHINESTACKER_PYTHON`` (a Python with shinestacker installed), ``$ENFUSE``.

What each one does here (from their ``--help`` and installed sources):

============================  ======  =========  ==================================================
peer                          16-bit  depth map  call
============================  ======  =========  ==================================================
focusweave                    yes     no         ``focusweave DIR --output f.tif --no-align --keep-size``
openfocus-b (depth map)       yes     yes        ``openfocus -i FILES -o f.tif -m openfocus_b -a none
                                                 -D d.png --depth-colormap gray``
openfocus-c (pyramid)         yes     yes [1]_   same with ``-m openfocus_c``
shinestacker-pyramid          yes     no         ``FocusStack(..., PyramidStack())`` in a ``StackJob``
shinestacker-depthmap         yes     yes [2]_   ``FocusStack(..., DepthMapStack(plot_depth_map=True))``
enfuse                        yes     no [3]_    ``enfuse --exposure-weight=0 --saturation-weight=0
                                                 --contrast-weight=1 --hard-mask -o f.png FILES``
============================  ======  =========  ==================================================

.. [1] OpenFocus's "focus-position" map of method C: per-pixel argmax of the
   finest band-pass energy (``core/depth_map.py``), written as an 8-bit image
   (0..255 = first..last frame); it is computed in a second pass by the same
   command, so its time is included.
.. [2] shinestacker writes its depth map only as a plot (8-bit PNG of the
   weight-averaged frame index, ``DepthMapStack.save_depth_map_plot``); the
   driver below takes the same formula unrounded, from the same weights.
.. [3] enfuse can save per-image blend masks (``--save-masks``), not a depth map.

Inputs each peer cannot read are converted before the clock starts, and the
conversion is stated in the peer's ``note``: shinestacker's depth-map and
pyramid code call ``cvtColor(BGR2GRAY)`` on every frame, so grey stacks are
given to it as 3-channel copies (same bit depth). All four read 16-bit
TIFF, so no 8-bit copies are needed today; a peer with ``reads_16bit =
False`` would get 8-bit PNG copies. Outputs are brought back to the input's
layout (grey outputs of a grey stack: the mean of the channels; alpha
dropped; another bit depth rescaled), noted too.

Times are wall seconds of the whole subprocess (interpreter start-up, reading
and writing files included).
"""

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from napari_focus_stack.engine.dtypes import full_scale

#: enfuse as a focus stacker (its documented recipe): contrast only, each
#: pixel from one frame. bench.py runs it the same way.
ENFUSE_OPTIONS = ("--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask")

#: Where the peers' environments are, one folder per peer.
PEERS_ROOT = Path(os.environ.get("FOCUS_PEERS", "/root/peers"))
#: Longest a peer may run on one stack (s).
TIMEOUT_S = float(os.environ.get("FOCUS_PEERS_TIMEOUT", "900"))

IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


class PeerError(RuntimeError):
    """A peer failed on a stack; the message says why."""


@dataclass
class PeerOutput:
    """What a peer produced on one stack, in the input's layout and dtype."""

    fused: np.ndarray
    #: (Y, X) float32 in the peer's own units (slices where it says so), or None.
    depth: np.ndarray
    seconds: float
    note: str = ""


# --------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------


def read_image(path):
    """An image file as an array, RGB order (not OpenCV's BGR), alpha kept."""
    path = Path(path)
    image = None
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            # the first page, not the series: enfuse copies the input's "shaped"
            # description, which no longer matches its output (alpha added)
            with tifffile.TiffFile(path) as tif:
                image = tif.pages[0].asarray()
        except ValueError:  # a codec tifffile lacks here (LZW without imagecodecs)
            image = None
        if image is not None and image.ndim == 3 and image.shape[0] in (2, 3, 4) and image.shape[-1] > 4:
            image = np.moveaxis(image, 0, -1)  # planar
    if image is None:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise PeerError(f"cannot read {path}")
        if image.ndim == 3 and image.shape[-1] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        elif image.ndim == 3 and image.shape[-1] == 4:
            image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def write_image(path, image):
    """Write an RGB or grey array: PNG through OpenCV, TIFF through tifffile."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        tifffile.imwrite(path, image, photometric="rgb" if image.ndim == 3 else "minisblack")
        return
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), bgr):
        raise PeerError(f"cannot write {path}")


def conform(image, like, notes):
    """``image`` in the layout and dtype of a frame ``like``; what changed goes to ``notes``."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (2, 4):
        image = image[..., :-1]  # alpha (grey+alpha or RGBA)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if like.ndim == 2 and image.ndim == 3:
        dtype = image.dtype
        image = image.astype(np.float64).mean(axis=-1)
        image = np.round(image).astype(dtype) if np.issubdtype(dtype, np.integer) else image.astype(dtype)
    elif like.ndim == 3 and image.ndim == 2:
        notes.append("grey output of a colour stack, replicated")
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[:2] != like.shape[:2]:
        raise PeerError(f"output is {image.shape[1]}x{image.shape[0]}, input {like.shape[1]}x{like.shape[0]}")
    if image.dtype != like.dtype:
        notes.append(f"{image.dtype.name} output scaled to {like.dtype.name}")
        image = _rescale(image, like.dtype)
    return image


def _rescale(image, dtype):
    scaled = image.astype(np.float64) * (full_scale(dtype) / full_scale(image.dtype))
    if np.issubdtype(dtype, np.integer):
        scaled = np.clip(np.round(scaled), 0, full_scale(dtype))
    return scaled.astype(dtype)


def _converted_copies(frame_paths, folder, *, to_8bit=False, to_rgb=False):
    """Copies of the frames that a peer can read: 8-bit PNG and/or 3 channels."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in frame_paths:
        image = read_image(path)
        if to_8bit and image.dtype != np.uint8:
            image = _rescale(image, np.uint8)
        if to_rgb and image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=-1)
        suffix = ".png" if image.dtype == np.uint8 else ".tif"
        copy = folder / (Path(path).stem + suffix)
        write_image(copy, image)
        copies.append(copy)
    return copies


def _frames_only_folder(frames_dir, frame_paths, scratch):
    """A folder holding exactly the frames (a peer that takes a folder reads all of it)."""
    frames_dir = Path(frames_dir)
    present = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if present == sorted(Path(p) for p in frame_paths) and all(Path(p).parent == frames_dir for p in frame_paths):
        return frames_dir
    scratch.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(frame_paths):
        (scratch / f"frame_{k:04d}{Path(path).suffix}").symlink_to(Path(path).resolve())
    return scratch


def _run(argv, *, cwd=None):
    """Run a peer's command; its wall time (s). Raises PeerError with the output's tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S
        )
    except subprocess.TimeoutExpired as error:
        raise PeerError(f"timed out after {TIMEOUT_S:.0f} s") from error
    except OSError as error:
        raise PeerError(f"could not start: {error}") from error
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise PeerError(f"exit {done.returncode}: {' | '.join(tail)[-300:]}")
    return seconds


# --------------------------------------------------------------------------
# The peers
# --------------------------------------------------------------------------


class Peer:
    """A focus-stacking tool run as a subprocess."""

    name = ""
    #: Can it read 16-bit frames? If not, it is fed 8-bit PNG copies.
    reads_16bit = True
    #: Can it read single-channel frames? If not, it is fed 3-channel copies.
    reads_grey = True
    #: Does it output a depth map?
    gives_depth = False

    def executable(self):
        """Path of the program (or Python) that runs it."""
        raise NotImplementedError

    def available(self):
        exe = self.executable()
        return exe is not None and Path(exe).is_file() and os.access(exe, os.X_OK)

    def version(self):
        return ""

    def run(self, frames_dir, frame_paths, out_dir, bit_depth):
        """Fuse the frames ``frame_paths`` (all in ``frames_dir``), working in ``out_dir``."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        frame_paths = [Path(p) for p in frame_paths]
        first = read_image(frame_paths[0])
        notes = []
        to_8bit = bit_depth > 8 and not self.reads_16bit
        to_rgb = first.ndim == 2 and not self.reads_grey
        if to_8bit or to_rgb:
            frame_paths = _converted_copies(frame_paths, out_dir / "input", to_8bit=to_8bit, to_rgb=to_rgb)
            frames_dir = out_dir / "input"
            if to_8bit:
                notes.append(f"fed 8-bit PNG copies of the {bit_depth}-bit frames")
            if to_rgb:
                notes.append("fed 3-channel copies of the grey frames")
        fused_path, depth, seconds = self._fuse(Path(frames_dir), frame_paths, out_dir, len(frame_paths))
        fused = conform(read_image(fused_path), first, notes)
        if depth is not None:
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != first.shape[:2]:
                notes.append(f"depth map {depth.shape}, input {first.shape[:2]}: dropped")
                depth = None
        return PeerOutput(fused, depth, seconds, "; ".join(notes))

    def _fuse(self, frames_dir, frame_paths, out_dir, n_frames):
        """Run the tool; (fused image path, depth in slices or None, seconds)."""
        raise NotImplementedError


class FocusWeave(Peer):
    name = "focusweave"

    def executable(self):
        return os.environ.get("FOCUSWEAVE") or str(PEERS_ROOT / "focusweave" / "bin" / "focusweave")

    def version(self):
        return _first_line([self.executable(), "--version"])

    def _fuse(self, frames_dir, frame_paths, out_dir, n_frames):
        folder = _frames_only_folder(frames_dir, frame_paths, out_dir / "frames")
        fused = out_dir / "fused.tif"
        seconds = _run([self.executable(), folder, "--output", fused, "--no-align", "--keep-size"])
        return fused, None, seconds


class OpenFocus(Peer):
    """OpenFocus's own family: ``openfocus_b`` (variance depth-map pick) or ``openfocus_c`` (Laplacian pyramid)."""

    gives_depth = True

    def __init__(self, method, label):
        self.method = method
        self.name = f"openfocus-{method[-1]} ({label})"

    def executable(self):
        return os.environ.get("OPENFOCUS") or str(PEERS_ROOT / "openfocus" / "bin" / "openfocus")

    def version(self):
        exe = Path(self.executable())
        pip = exe.parent / "pip"
        return _pip_version(pip, "openfocus") if pip.is_file() else ""

    def _fuse(self, frames_dir, frame_paths, out_dir, n_frames):
        fused, depth_png = out_dir / "fused.tif", out_dir / "depth.png"
        argv = [
            self.executable(),
            "--input",
            *frame_paths,
            "--output",
            fused,
            "--method",
            self.method,
            "--align",
            "none",
            "--depth-map",
            depth_png,
            "--depth-colormap",
            "gray",
        ]
        seconds = _run(argv, cwd=out_dir)
        index = read_image(depth_png)
        index = index[..., 0] if index.ndim == 3 else index
        # 0..255 = first..last frame (core/depth_map.py, utils/colormap.py)
        return fused, index.astype(np.float32) * ((n_frames - 1) / 255.0), seconds


#: Runs shinestacker headless: argv = frames folder, output folder, "pyramid" | "depthmap", frame files.
SHINESTACKER_DRIVER = r"""
import os, sys
import numpy as np
from shinestacker.algorithms import StackJob, FocusStack, PyramidStack, DepthMapStack

frames_dir, out_dir, method = sys.argv[1:4]
names = sys.argv[4:]
depth = {}
if method == "depthmap":
    class Stack(DepthMapStack):
        # Its depth map is only written as an 8-bit plot; the same formula
        # (weight-averaged frame index), unrounded.
        def save_depth_map_plot(self, weights):
            w = np.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float64)
            total = w.sum(axis=0)
            index = np.tensordot(np.arange(w.shape[0], dtype=np.float64), w, axes=1)
            depth["map"] = np.where(total > 1e-10, index / np.maximum(total, 1e-10), np.nan).astype(np.float32)
    algo = Stack(plot_depth_map=True)
else:
    algo = PyramidStack()
job = StackJob("job", out_dir, input_path=frames_dir, input_filepaths=list(names))
job.add_action(FocusStack("stack", algo, output_path="fused", plot_stack=False))
job.run()
outputs = sorted(os.listdir(os.path.join(out_dir, "fused")))
if len(outputs) != 1:
    sys.exit(f"expected one output in {out_dir}/fused, found {outputs}")
os.replace(os.path.join(out_dir, "fused", outputs[0]), os.path.join(out_dir, "result" + os.path.splitext(outputs[0])[1]))
if method == "depthmap":
    if "map" not in depth:
        sys.exit("no depth map was made")
    np.save(os.path.join(out_dir, "depth.npy"), depth["map"])
"""


class ShineStacker(Peer):
    """shinestacker's pyramid or depth-map stacking, through ``shinestacker.algorithms``."""

    reads_grey = False  # img_bw() is cvtColor(BGR2GRAY) on every frame

    def __init__(self, method):
        self.method = method
        self.name = f"shinestacker-{method}"
        self.gives_depth = method == "depthmap"

    def executable(self):
        return os.environ.get("SHINESTACKER_PYTHON") or str(PEERS_ROOT / "shinestacker" / "bin" / "python")

    def version(self):
        pip = Path(self.executable()).parent / "pip"
        return _pip_version(pip, "shinestacker") if pip.is_file() else ""

    def _fuse(self, frames_dir, frame_paths, out_dir, n_frames):
        names = [p.name for p in frame_paths]
        if any(p.parent != frames_dir for p in frame_paths):
            frames_dir = _frames_only_folder(frames_dir, frame_paths, out_dir / "frames")
            names = sorted(p.name for p in frames_dir.iterdir())
        work = out_dir / "work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", MPLBACKEND="Agg")
        argv = [self.executable(), "-c", SHINESTACKER_DRIVER, frames_dir.resolve(), work, self.method, *names]
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [str(a) for a in argv],
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as error:
            raise PeerError(f"timed out after {TIMEOUT_S:.0f} s") from error
        seconds = time.perf_counter() - start
        results = sorted(work.glob("result.*"))
        if done.returncode != 0 or not results:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise PeerError(f"exit {done.returncode}: {' | '.join(tail)[-300:]}")
        depth = np.load(work / "depth.npy") if self.method == "depthmap" else None
        return results[0], depth, seconds


class Enfuse(Peer):
    """enfuse with focus-stacking weights (contrast only, hard mask), as in bench.py."""

    name = "enfuse"

    def executable(self):
        return os.environ.get("ENFUSE") or shutil.which("enfuse")

    def version(self):
        return _first_line([self.executable(), "--version"])

    def _fuse(self, frames_dir, frame_paths, out_dir, n_frames):
        # PNG, not TIFF: enfuse 4.2 writes LZW TIFFs whatever --compression says,
        # which tifffile cannot read without imagecodecs, and OpenCV misreads
        # their grey + alpha
        fused = out_dir / "fused.png"
        argv = [self.executable(), *ENFUSE_OPTIONS, "-o", fused, *frame_paths]
        return fused, None, _run(argv, cwd=out_dir)


#: Every peer, in the order of the tables.
PEERS = (
    FocusWeave(),
    OpenFocus("openfocus_b", "depth map"),
    OpenFocus("openfocus_c", "pyramid"),
    ShineStacker("pyramid"),
    ShineStacker("depthmap"),
    Enfuse(),
)


def available_peers(names=None):
    """(available peers, {name: why not} for the others); ``names`` filters by prefix."""
    chosen = [p for p in PEERS if names is None or any(p.name.startswith(n) for n in names)]
    found, missing = [], {}
    for peer in chosen:
        if peer.available():
            found.append(peer)
        else:
            missing[peer.name] = f"not found at {peer.executable()}"
    return found, missing


def run_peer(peer, frames_dir, frame_paths, out_dir, bit_depth):
    """``peer.run``, catching every failure: (PeerOutput or None, reason or "")."""
    try:
        return peer.run(frames_dir, frame_paths, out_dir, bit_depth), ""
    except Exception as error:  # a peer must never stop the suite
        return None, f"{type(error).__name__}: {error}"


def _first_line(argv):
    try:
        done = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError, TypeError):
        return ""
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _pip_version(pip, package):
    try:
        done = subprocess.run([str(pip), "show", package], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    for line in done.stdout.splitlines():
        if line.startswith("Version:"):
            return f"{package} {line.split(':', 1)[1].strip()}"
    return ""
