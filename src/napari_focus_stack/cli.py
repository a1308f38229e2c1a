"""Command line: ``napari-focus-stack FRAMES... -o FUSED [--depth D] [--confidence C]``.

Imports nothing of napari or Qt: start-up time counts in every run.
"""

import argparse
import re
import sys
from pathlib import Path

from .engine.result import DEFAULTS, DEVICES, METHODS, RANGES

PROG = "napari-focus-stack"


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit 2."""


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse a focal stack (z-stack) into one all-in-focus image, "
        "with optional depth and confidence maps.",
        epilog="Example: napari-focus-stack frames/ -o fused.tif --depth depth.tif",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a folder of frames, a multi-page TIFF, a glob pattern, or several image files",
    )
    p.add_argument("-o", "--output", required=True, metavar="FUSED", help="fused image (.tif, .png, .jpg)")
    p.add_argument("--depth", metavar="DEPTH.tif", help="also write the depth map (float32 TIFF, slices)")
    p.add_argument("--confidence", metavar="CONF.tif", help="also write the confidence map (float32 TIFF, 0-1)")

    def ranged(name):
        lo, hi = RANGES[name]
        flag = "--" + name.replace("_", "-")
        return flag, dict(type=int, default=DEFAULTS[name], metavar="N", help=f"{lo}-{hi} (default {DEFAULTS[name]})")

    for name, text in (
        ("radius", "half-size of the sharpness window in pixels"),
        ("smoothing", "smoothing of the sharpness maps"),
        ("scale_factor", "process and write at N times the input resolution"),
    ):
        flag, kwargs = ranged(name)
        kwargs["help"] = f"{text}, {kwargs['help']}"
        p.add_argument(flag, **kwargs)
    p.add_argument("--method", choices=METHODS, default=DEFAULTS["method"], help="fusion method (default %(default)s)")
    p.add_argument(
        "--device", default=DEFAULTS["device"], metavar="{" + ",".join(DEVICES) + ",gpu:N}",
        help="where to compute (default %(default)s)",
    )
    p.add_argument(
        "--max-memory", type=parse_size, metavar="SIZE",
        help="working-memory budget, e.g. 2GB or 512MB (default: half the free memory); "
        "larger images are processed in tiles, with the same result",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
               "g": 2**30, "gb": 2**30, "gib": 2**30}


def parse_size(text):
    """Bytes from a size such as ``2GB``, ``512MiB`` or ``1000000``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*", text.lower())
    if match is None or match[2] not in _SIZE_UNITS or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (for example 2GB or 512MB)")
    return int(float(match[1]) * _SIZE_UNITS[match[2]])


def output_paths(args):
    """The outputs as ``(role, Path)``; refuses overwriting an input or writing twice."""
    outputs = [("fused image", Path(args.output))]
    if args.depth:
        outputs.append(("depth map", Path(args.depth)))
    if args.confidence:
        outputs.append(("confidence map", Path(args.confidence)))
    seen = {}
    for role, path in outputs:
        resolved = path.resolve()
        if resolved in seen:
            raise UsageError(f"the {role} and the {seen[resolved]} would both be written to {path}")
        seen[resolved] = role
        if not resolved.parent.is_dir():
            raise UsageError(f"cannot write the {role}: folder {path.parent} does not exist")
    return outputs


def check_not_inputs(outputs, frames):
    """Refuse any output path that is one of the input files."""
    inputs = {Path(p).resolve() for p in frames.metadata.get("paths") or []}
    for role, path in outputs:
        if path.resolve() in inputs:
            raise UsageError(f"refusing to overwrite input file {path} with the {role}")


def run(args):
    from .engine.backend import get_backends
    from .engine.pipeline import run_pipeline
    from .engine.result import StackParams
    from .io import SAVE_EXTENSIONS, open_stack, save_image

    try:
        params = StackParams(args.radius, args.smoothing, args.scale_factor, args.method, "none", args.device)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    outputs = output_paths(args)
    if outputs[0][1].suffix.lower() not in SAVE_EXTENSIONS:
        raise UsageError(
            f"cannot write {outputs[0][1].name}: the fused image can be saved as {', '.join(SAVE_EXTENSIONS)}"
        )
    for role, path in outputs[1:]:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise UsageError(f"the {role} is written as float32 TIFF: use a .tif name, not {path.name}")
    source = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    frames = open_stack(source)
    check_not_inputs(outputs, frames)
    backends = get_backends(params.device)

    steps = run_pipeline(frames, params, backends, metadata=frames.metadata, max_memory=args.max_memory)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=len(frames), unit="frame", desc="Stacking", file=sys.stderr, leave=False)
    try:
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result = done.value
                break
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    info = result.provenance()
    save_image(result.fused, outputs[0][1], metadata=info)
    for role, path in outputs[1:]:
        image = result.depth if role == "depth map" else result.confidence
        save_image(image, path, metadata={**info, "content": role})
    if not args.quiet:
        size = "x".join(str(s) for s in result.fused.shape[:2][::-1])
        print(f"{PROG}: fused {len(frames)} frames into {outputs[0][1]} ({size}, {result.device})", file=sys.stderr)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    from .engine.backend import DeviceUnavailableError
    from .engine.tiling import MemoryBudgetError
    from .io import StackReadError

    try:
        return run(args)
    except (UsageError, StackReadError, DeviceUnavailableError, MemoryBudgetError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{PROG}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: cancelled; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
