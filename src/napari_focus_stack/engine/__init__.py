"""Pure array code: focus measures, depth selection and fusion.

Nothing in this sub-package imports Qt, napari or does file I/O; every stage
takes a :class:`~napari_focus_stack.engine.backend.Backend` so that the same
code runs on NumPy/SciPy/OpenCV and on CuPy.
"""
