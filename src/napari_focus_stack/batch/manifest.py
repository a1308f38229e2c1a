"""Manifests: what makes a stack complete, and which folders hold our results.

A stack counts as finished only when its manifest (``<name>.json``, written
atomically after all its images) exists and records the same parameters,
inputs and outputs (:func:`is_complete`).
"""

import json
import os
from pathlib import Path

from .. import __version__
from ..io import TIFF_EXTENSIONS, read_metadata, write_atomically


def input_fingerprints(stack):
    """Name, size and modification time of each input frame."""
    prints = []
    for path in stack.paths:
        status = os.stat(path)
        prints.append({"name": Path(path).name, "bytes": status.st_size, "mtime_ns": status.st_mtime_ns})
    return prints


def manifest_record(stack, outputs, options, inputs, sizes=None):
    """The manifest of a finished stack; ``inputs`` from :func:`input_fingerprints`
    taken before the frames were read; ``sizes`` (``{role: bytes}``) of the
    images, by default read from the files."""
    if sizes is None:
        sizes = {role: path.stat().st_size for role, path in outputs.images().items()}
    return {
        "software": "napari-focus-stack",
        "version": __version__,
        "stack": stack.name,
        "parameters": options.recorded(),
        "inputs": inputs,
        "outputs": {role: {"file": path.name, "bytes": sizes[role]} for role, path in outputs.images().items()},
    }


def write_manifest(path, record):
    """Write ``record`` as JSON, atomically (a temporary file renamed into place)."""
    data = json.dumps(record, indent=1).encode()
    write_atomically(Path(path), lambda file: file.write(data))


def read_manifest(path):
    """The manifest at ``path`` as a dict; None when missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_complete(stack, outputs, options):
    """True when a previous run finished ``stack`` with these options and inputs.

    Its manifest must exist and record the same parameters and input frames
    (names, sizes, modification times), and every image asked for must be
    recorded and still be there with the recorded size. Images are renamed
    into place before the manifest is written, so a run interrupted at any
    point leaves a stack that is either complete or redone.
    """
    record = read_manifest(outputs.manifest)
    if record is None or record.get("parameters") != options.recorded():
        return False
    try:
        if record.get("inputs") != input_fingerprints(stack):
            return False
    except OSError:
        return False
    recorded = record.get("outputs") or {}
    for role, path in outputs.images().items():
        entry = recorded.get(role) or {}
        if entry.get("file") != path.name or not _has_size(path, entry.get("bytes")):
            return False
    return True


def _has_size(path, size):
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def holds_batch_outputs(folder, *, fused_images=False):
    """True for a folder of our results (see :func:`batch_outputs_reason`)."""
    return batch_outputs_reason(folder, fused_images=fused_images) is not None


def batch_outputs_reason(folder, *, fused_images=False):
    """Why ``folder`` is taken for a folder of our results, not a stack; None when it is not.

    It is when it holds a batch manifest of ours, or a depth or confidence
    map we wrote (an interrupted batch may leave maps without a manifest;
    maps are never frames). Fused images we wrote count only with
    ``fused_images`` (an output folder: where else would they come from);
    otherwise they are frames like any other, for a new stack.
    """
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        if (read_manifest(path) or {}).get("software") == "napari-focus-stack":
            return f"holds the results of an earlier batch ({path.name} is a napari-focus-stack manifest)"
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in TIFF_EXTENSIONS and not path.name.startswith("."):
            content = _ours(path, fused_images)
            if content is not None:
                return f"holds results of an earlier run ({path.name} is a {content} napari-focus-stack wrote)"
    return None


def _ours(path, fused_images):
    """What ``path`` is (``"depth map"``...) when we wrote it and it counts as a result, else None."""
    try:
        metadata = read_metadata(path)
    except Exception:
        return None
    if metadata.get("software") != "napari-focus-stack":
        return None
    content = metadata.get("content", "fused image")
    return content if content in ("depth map", "confidence map") or fused_images else None
