"""The luminance weighting of the engine: one grey value from RGB.

Decisions made on a grey image while every colour channel is carried
(registration images, noise estimates, focus measures on colour frames) all
weigh R, G and B by :data:`LUMA_WEIGHTS`, the Rec. 601 weights that most
cameras and OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)`` use. The backends
apply them as float32 products (NumPy, CuPy, or OpenCV's ``transform``).
"""

#: Luminance weights (Rec. 601, as most cameras and OpenCV use) for decisions
#: made on a grey image while every colour channel is carried.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
