"""Width-aware confidence for the depth regularisation: a study (issue 11, cells3d speckle).

    python benchmarks/width_confidence.py            # every variant, 4 real stacks, 13 families (~6 min, 2 cores)
    python benchmarks/width_confidence.py --quick    # baseline and the two streamable caps only

Each stack is run once through the defaults (real stacks as ``quality.py``
reads them, with alignment; the suite's families at 384 px x 14 slices, seed
0, ``align="none"``) while the selection scores handed to
:class:`~napari_focus_stack.engine.depth.SliceSelector` are recorded. Every
variant then re-finishes depth and confidence from those scores and runs the
engine's own ``regularise_depth`` and ``fill_unsupported_depth``; variant B,
which the engine adopted, reproduces the pipeline's depth to 1e-3 slice
(checked); the baseline is the engine before it. The default
fusion (``weighted``) does not read depth or confidence, so PSNR and SSIM are
the same for every variant. Prints markdown: speckle of the real stacks and
the worst change of any family's depth RMSE (all scored pixels, and within
3 px of occlusion boundaries), then the per-family RMSEs.

Widths, per pixel, from the selection scores ``s_k`` and their maximum ``b``:

* ``W_p = sum_k (s_k / b)^p``, the effective number of slices near the peak
  (1 for one sharp slice); streamable in one float32 plane (rescaled by
  ``(b_old / b_new)^p`` when a new best arrives; checked against the
  whole-stack sum to 1e-6);
* ``n_half``, the count of slices with ``s_k >= b / 2`` (not streamable:
  it needs the final ``b``; a reference only).
"""

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import quality  # noqa: E402

from napari_focus_stack import focus_stack  # noqa: E402
from napari_focus_stack.engine import depth as selection  # noqa: E402
from napari_focus_stack.engine.backend import get_backend  # noqa: E402
from napari_focus_stack.synthetic import SCENE_FAMILIES, depth_rmse  # noqa: E402

BE = get_backend("cpu")


def record(run):
    """``run()``'s result and the selection scores (Z, Y, X) and noise floor its selector saw."""
    seen = {"scores": []}
    update, finish = selection.SliceSelector.update, selection.SliceSelector.finish

    def recording_update(self, score):
        seen["scores"].append(np.array(score, np.float32))
        return update(self, score)

    def recording_finish(self, rows=slice(None), floor=0.0):
        seen["floor"] = floor
        return finish(self, rows, floor)

    selection.SliceSelector.update, selection.SliceSelector.finish = recording_update, recording_finish
    try:
        result = run()
    finally:
        selection.SliceSelector.update, selection.SliceSelector.finish = update, finish
    if result.metadata["tiles"] != 1:
        raise RuntimeError("the study replays one tile; raise the memory budget")
    return result, np.stack(seen["scores"]), seen["floor"]


def stacks(families):
    """(name, result, scores, floor, scene or None) for the real stacks and the families."""
    for folder in sorted(quality.REAL_STACKS.iterdir()) if quality.REAL_STACKS.is_dir() else ():
        frames = quality.load_real(folder)[0]
        yield (folder.name, *record(lambda frames=frames: focus_stack(frames)), None)
    for family in families:
        scene = quality.render(quality.simulator()[1], family, (384, 384), 14, 0)
        yield (family, *record(lambda scene=scene: focus_stack(scene.frames, align="none")), scene)


def _smoothstep(x):
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


class Curves:
    """One stack's selection scores and the width measures of its pixels (cached)."""

    def __init__(self, scores, floor):
        self.scores, self.floor, self._cache = scores, floor, {}
        chosen = selection.SliceSelector(BE)
        for score in scores:
            chosen.update(score.copy())
        self.depth, self.confidence = chosen.finish(slice(None), floor)

    def moments(self, p):
        """(``W_p``, centroid of ``(s / b)^p`` in slices), float32."""
        if p not in self._cache:
            ratio = (self.scores / np.maximum(self.scores.max(0), 1e-30)).astype(np.float64) ** p
            slices = np.arange(len(self.scores), dtype=np.float64)[:, None, None]
            total = ratio.sum(0)
            self._cache[p] = total.astype(np.float32), ((ratio * slices).sum(0) / total).astype(np.float32)
        return self._cache[p]

    def half_count(self):
        if "half" not in self._cache:
            self._cache["half"] = (self.scores >= 0.5 * self.scores.max(0)).sum(0).astype(np.float32)
        return self._cache["half"]


# A variant: curves -> (depth, confidence for the regularisation, confidence for the far fill).
def baseline(c):
    return c.depth, c.confidence, c.confidence


def times_width(p, w0, q):
    """``c · min(1, (w0 / W_p)^q)`` for both the regularisation and the fill (the issue's proposal)."""

    def variant(c):
        capped = (c.confidence * np.minimum(1, (w0 / c.moments(p)[0]) ** q)).astype(np.float32)
        return c.depth, capped, capped

    return variant


def capped_by_width(p, w0, q, centroid=None):
    """``min(c, (w0 / W_p)^q)`` for the regularisation only; with ``centroid=(p, lo, hi)`` the depth
    moves to the centroid of ``(s / b)^p`` as ``W_p`` grows from ``lo`` to ``hi``."""

    def variant(c):
        depth = c.depth
        if centroid is not None:
            width, middle = c.moments(centroid[0])
            share = _smoothstep((width - centroid[1]) / (centroid[2] - centroid[1])).astype(np.float32)
            depth = (depth + share * (middle - depth)).astype(np.float32)
        capped = np.minimum(c.confidence, (w0 / c.moments(p)[0]) ** q).astype(np.float32)
        return depth, capped, c.confidence

    return variant


def capped_by_half_count(w0):
    def variant(c):
        return c.depth, np.minimum(c.confidence, np.minimum(1, w0 / c.half_count())).astype(np.float32), c.confidence

    return variant


def centroid_only(p, lo, hi):
    def variant(c):
        width, middle = c.moments(p)
        share = _smoothstep((width - lo) / (hi - lo)).astype(np.float32)
        return (c.depth + share * (middle - c.depth)).astype(np.float32), c.confidence, c.confidence

    return variant


def smooth_everything(c):
    return c.depth, np.full_like(c.confidence, 0.01), c.confidence


VARIANTS = {
    "baseline": baseline,
    "A: c·min(1, 2/W₄), regularisation and fill": times_width(4, 2, 1),
    "B: min(c, (2/W₄)²), regularisation only": capped_by_width(4, 2, 2),
    "B': min(c, (2/W₄)³), regularisation only": capped_by_width(4, 2, 3),
    "H: min(c, 2/n½), not streamable": capped_by_half_count(2),
    "D: depth → centroid of (s/b)⁸ as W₈ goes 1.2 → 2": centroid_only(8, 1.2, 2),
    "B' + D": capped_by_width(4, 2, 3, centroid=(8, 1.2, 2)),
    "E: c = 0.01 everywhere (the σ 8 px weighted mean)": smooth_everything,
}
#: The variant the engine adopted (engine/depth.py, WIDTH_REFERENCE): the
#: pipeline streams the width in float32, so the replay matches it to 1e-3 slice.
DEFAULT = "B: min(c, (2/W₄)²), regularisation only"
QUICK = ("baseline", "B: min(c, (2/W₄)²), regularisation only", "B': min(c, (2/W₄)³), regularisation only")


def finished(variant, curves):
    depth, for_regularise, for_fill = variant(curves)
    depth = np.ascontiguousarray(selection.regularise_depth(depth, for_regularise, BE, selection.REGULARISE_SIGMA))
    return selection.fill_unsupported_depth(depth, for_fill)


def scored(depth, scene):
    """Speckle for a real stack; (depth RMSE, boundary RMSE or NaN) for a family."""
    if scene is None:
        return quality.speckle(depth)[0]
    edge = float("nan")
    if scene.boundary is not None and (scene.boundary & scene.mask).any():
        edge = depth_rmse(depth, scene.depth, scene.boundary & scene.mask)
    return depth_rmse(depth, scene.depth, scene.mask), edge


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="baseline and the two streamable caps only")
    args = parser.parse_args(argv)
    variants = {name: VARIANTS[name] for name in (QUICK if args.quick else VARIANTS)}
    real, families, scores = [], [], {name: {} for name in variants}
    for name, result, recorded, floor, scene in stacks(SCENE_FAMILIES):
        curves = Curves(recorded, floor)
        (real if scene is None else families).append(name)
        for label, variant in variants.items():
            depth = finished(variant, curves)
            if label == DEFAULT and not np.allclose(depth, result.depth, atol=1e-3):
                raise RuntimeError(f"{name}: the replay does not reproduce the pipeline's depth")
            scores[label][name] = scored(depth, scene)
        print(f"{name} done", file=sys.stderr, flush=True)
    before = scores["baseline"]
    head = "| variant | " + " | ".join(real) + " | worst Δ depth RMSE | worst Δ boundary RMSE |"
    print(head + "\n|---|" + "---:|" * (len(real) + 2))
    for label, row in scores.items():
        delta = {f: row[f][0] - before[f][0] for f in families}
        edge = {f: row[f][1] - before[f][1] for f in families if np.isfinite(before[f][1])}
        worst, worst_edge = max(delta, key=delta.get), max(edge, key=edge.get)
        cells = " | ".join(f"{row[r]:.2%}" for r in real)
        print(f"| {label} | {cells} | {delta[worst]:+.3f} ({worst}) | {edge[worst_edge]:+.3f} ({worst_edge}) |")
    print("\n| family | " + " | ".join(label.split(":")[0] for label in scores) + " |")
    print("|---|" + "---:|" * len(scores))
    for f in families:
        cells = (
            f"{row[f][0]:.3f}" + (f" / {row[f][1]:.2f}" if np.isfinite(row[f][1]) else "") for row in scores.values()
        )
        print(f"| {f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
