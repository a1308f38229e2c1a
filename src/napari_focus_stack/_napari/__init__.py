"""napari glue: reader, dock widgets, layer building, menu commands and sample data.

Free of Qt and napari (tests/napari/test_layers.py checks it): :mod:`.stacking`,
:mod:`.layers` (plain array code), :mod:`.batch_view` (the batch widget's
model) and :mod:`.sample_data`. The Qt side: :mod:`.controls` (the engine
controls both widgets share), :mod:`.widget`, :mod:`.batch_widget`,
:mod:`.actions`, :mod:`.reader`, and :mod:`.tasks`, the one way workers are
started (:func:`.tasks.start_worker`).
"""
