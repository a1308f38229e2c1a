"""The interface every fusion method implements, and what the pipeline hands it per frame.

The pipeline streams frames through a :class:`Fusion` without knowing which
method it is: it calls :meth:`Fusion.update` once per frame with a
:class:`FrameStep`, then either fuses band by band along the final depth
(:meth:`Fusion.band_finisher`) or collapses what the fusion accumulated
(:meth:`Fusion.finish`). Tiling asks the class how far a pixel's result
reaches (:meth:`Fusion.reach`), how much memory it keeps per pixel
(:meth:`Fusion.bytes_per_pixel`) and which multiple tiles must be aligned to
(:meth:`Fusion.tile_multiple`). A new method is a subclass registered in
:data:`napari_focus_stack.engine.fuse.FUSIONS` (docs/ARCHITECTURE.md shows one).
"""

from dataclasses import dataclass
from typing import Any


@dataclass
class FrameStep:
    """What the pipeline knows about one frame when it hands it to a fusion.

    Attributes
    ----------
    frame : array
        The prepared frame (scaled, float or input dtype), ``(Y, X[, C])``.
    score : array
        Its float32 focus scores; a fusion may overwrite them.
    took_best, took_above : array of bool or None
        From :meth:`~napari_focus_stack.engine.depth.SliceSelector.update`:
        where this frame became the best, and where it lies just above the best;
        None when nothing is selected (a fusion without :attr:`Fusion.needs_selection`,
        and no depth wanted).
    uncovered : array of bool or None
        Pixels this (aligned) frame has no real data for.
    floor : float
        The focus energy of the frame's noise (0 without a noise estimate).
    reference : float
        A fixed energy of the stack's scale (1 without a noise estimate).
    borrowed : tuple of arrays or None
        Two float32 frame-sized arrays the caller does not need during the
        update (scratch a fusion may use).
    """

    frame: Any
    score: Any
    took_best: Any
    took_above: Any
    uncovered: Any = None
    floor: float = 0.0
    reference: float = 1.0
    borrowed: tuple | None = None


class Fusion:
    """Base class of the fusion methods: one instance fuses one tile, frame by frame.

    Class attributes
    ----------------
    method : str
        Its name in :data:`~napari_focus_stack.engine.result.METHODS`.
    regularises_depth : bool
        Whether the depth map is regularised by confidence afterwards
        (depth-map fusion follows its own depth exactly, so retouching can
        re-fuse along it: it is not).
    needs_selection : bool
        Whether it reads the depth selection: the masks of
        :class:`FrameStep` (``took_best``, ``took_above``) and the selector
        given to :meth:`band_finisher`. When it does not and the caller wants
        no depth or confidence, the pipeline selects nothing and hands it
        None for them.
    """

    method = ""
    regularises_depth = True
    needs_selection = True

    def __init__(self, be):
        self.be = be

    @classmethod
    def for_image(cls, be, out_shape):
        """An instance for a tile of an image whose output is ``out_shape`` (its levels depend on the whole image)."""
        return cls(be)

    # --- planning ------------------------------------------------------------
    @classmethod
    def reach(cls, out_shape, selection, focus):
        """Output pixels a pixel's result depends on around it.

        ``selection`` is the reach of the depth selection (and of the depth
        regularisation when :attr:`regularises_depth`), ``focus`` that of the
        focus measure alone.
        """
        return selection

    @classmethod
    def bytes_per_pixel(cls, channels, itemsize):
        """Working bytes per output pixel this fusion keeps while a tile streams through."""
        raise NotImplementedError

    @classmethod
    def tile_multiple(cls, out_shape):
        """Tile halos and origins are multiples of this (pyramid levels must line up across tiles)."""
        return 1

    # --- streaming -----------------------------------------------------------
    def update(self, step):
        """Take the next frame (a :class:`FrameStep`)."""
        raise NotImplementedError

    def release_frames(self):
        """Free what only the frame loop needed, before the outputs are made."""

    def band_finisher(self, selector):
        """``fuse_rows(rows, depth)`` giving a band's float32 fused pixels along the final depth, or None
        for a fusion that is collapsed whole by :meth:`finish`."""
        return None

    def finish(self, dtype):
        """The fused image in ``dtype``, for a fusion without a :meth:`band_finisher`."""
        raise NotImplementedError
