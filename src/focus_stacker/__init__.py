"""The original focus-stacking tool's module name, so its scripts run unchanged.

``from focus_stacker import FocusStacker`` gives napari-focus-stack's drop-in
:class:`~napari_focus_stack.api.FocusStacker`, with the original defaults
(radius 8, smoothing 4, scale factor 2). New code should import from
``napari_focus_stack``. (Installing the original tool beside this package
would shadow one of the two; uninstall it first.)
"""

from napari_focus_stack.api import FocusStacker

__all__ = ["FocusStacker"]
