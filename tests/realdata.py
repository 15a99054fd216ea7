"""Real photographs for tests: see tools/sampledata.py (shared with the demo and benchmarks)."""
from sampledata import PHOTO_NAMES, _to_bgr, faces, no_faces, photos  # noqa: F401
