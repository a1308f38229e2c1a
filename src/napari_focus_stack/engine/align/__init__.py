"""Frame alignment (engine/align.py moved here whole, to be split by concern)."""

from .pairwise import *  # noqa: F403
from .pairwise import ALIGN_MODES  # noqa: F401
