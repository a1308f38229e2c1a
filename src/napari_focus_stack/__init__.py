"""Focus stacking (extended depth of field) for napari, Python and the command line.

>>> from napari_focus_stack import focus_stack, simulate_stack
>>> sim = simulate_stack(shape=(64, 64), n_slices=6)
>>> result = focus_stack(sim.frames)
>>> result.fused.shape, result.depth.shape
((64, 64), (64, 64))
"""

__version__ = "0.1.0"

# Public names and the module each lives in. Imported on first use, so that
# `import napari_focus_stack` (and the command line) stays fast.
_EXPORTS = {
    "focus_stack": "api",
    "iter_focus_stack": "api",
    "FocusStacker": "api",
    "fuse_from_depth": "api",
    "focus_stack_channels": "channels",
    "MissingDataWarning": "api",
    "StackResult": "engine.result",
    "StackParams": "engine.result",
    "StackCancelled": "engine.result",
    "Progress": "engine.result",
    "read_stack": "io",
    "read_image": "io",
    "open_stack": "io",
    "open_hyperstack": "io",
    "Hyperstack": "io",
    "save_image": "io",
    "split_into_stacks": "io",
    "StackReadError": "io",
    "StackWriteError": "io",
    "simulate_stack": "synthetic",
    "stack_many": "distributed",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
