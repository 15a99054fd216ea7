"""Real test videos for the streaming tests: see tools/samplevideo.py (shared with the
examples and bench/stream.py)."""
from samplevideo import (DEFAULT_PATTERN, FACE_PHOTOS, VideoInfo, ffmpeg, frame_of, frames,  # noqa: F401
                         make_video, to_h264)
