"""napari glue: reader, dock widget, layer building, menu commands and sample data.

Only :mod:`.widget`, :mod:`.tasks`, :mod:`.actions` and :mod:`.reader` import
napari; :mod:`.stacking` and :mod:`.layers` are plain array code.
"""
