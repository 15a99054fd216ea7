"""Real sample videos for the streaming tests, examples and benchmark, made from real
photographs (scikit-image): segments of frames with a face (astronaut, cameraman) and segments
of frames without people (coffee, rocket, horse, text page), each frame slightly shifted
and zoomed so consecutive frames differ like a real camera's.

`make_video` writes mp4v with OpenCV; `to_h264` re-encodes with ffmpeg (what the RTSP
server needs). Ground truth per frame: `VideoInfo.labels[i]` (photo name) and
`VideoInfo.has_face[i]`.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from sampledata import photos, square

#: photos with a human face (the astronaut; the cameraman)
FACE_PHOTOS = ("astronaut", "camera")
#: (photo, frames): faces and no people alternating. Not the cat (chelsea) or the motorcycle:
#: BlazeFace scores those 0.45-0.7, a model quirk the tests should not depend on.
DEFAULT_PATTERN: tuple[tuple[str, int], ...] = (
    ("astronaut", 6), ("coffee", 6), ("camera", 6), ("rocket", 6), ("astronaut", 6), ("horse", 6), ("page", 6))


@dataclass
class VideoInfo:
    path: Path
    labels: list[str]
    size: tuple[int, int]  # (width, height)
    fps: float

    @property
    def has_face(self) -> list[bool]:
        return [name in FACE_PHOTOS for name in self.labels]

    def __len__(self) -> int:
        return len(self.labels)


def frame_of(name: str, i: int, size: tuple[int, int]) -> np.ndarray:
    """Photo `name` as frame `i` of a segment: zoomed 0-5 % and shifted a few pixels."""
    img = square(photos()[name])
    s = img.shape[0]
    crop = int(s * (1.0 - 0.01 * (i % 6)))
    off = (s - crop) // 2 + (i % 3) - 1
    off = max(0, min(off, s - crop))
    return cv2.resize(img[off:off + crop, off:off + crop], size, interpolation=cv2.INTER_AREA)


def frames(pattern: Sequence[tuple[str, int]] = DEFAULT_PATTERN, size: tuple[int, int] = (256, 256),
           repeat: int = 1) -> tuple[list[np.ndarray], list[str]]:
    out, labels = [], []
    for _ in range(repeat):
        for name, n in pattern:
            for i in range(n):
                out.append(frame_of(name, i, size))
                labels.append(name)
    return out, labels


def _write_mp4v(path: Path, imgs: Sequence[np.ndarray], fps: float, size: tuple[int, int]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video to {path}")
    for img in imgs:
        writer.write(img)
    writer.release()


def make_video(path: Path, pattern: Sequence[tuple[str, int]] = DEFAULT_PATTERN, size: tuple[int, int] = (256, 256),
               fps: float = 10.0, repeat: int = 1) -> VideoInfo:
    """Write the frames as an mp4v video (OpenCV); returns the ground truth."""
    path = Path(path)
    imgs, labels = frames(pattern, size, repeat)
    _write_mp4v(path, imgs, fps, size)
    return VideoInfo(path, labels, size, fps)


def ffmpeg() -> Optional[str]:
    return shutil.which("ffmpeg")


def to_h264(src: Path, dest: Path, gop: int = 15) -> Path:
    """Re-encode to H.264 (yuv420p, no B-frames, short GOP): what the RTSP server streams."""
    exe = ffmpeg()
    if exe is None:
        raise RuntimeError("ffmpeg is not installed (tools/install_system_deps.sh installs it)")
    subprocess.run([exe, "-v", "error", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "veryfast",
                    "-g", str(gop), "-bf", "0", "-pix_fmt", "yuv420p", str(dest)], check=True, timeout=120)
    return dest


#: words drawn on the OCR sample video: (text, font scale); several per frame, different sizes
OCR_WORDS = (("EDGE", 1.6), ("camera", 1.0), ("Stream", 1.3), ("model", 0.9), ("OCR", 1.8), ("device", 1.1),
             ("Python", 1.2), ("video", 1.0), ("SDK", 1.5), ("frame", 0.9), ("network", 1.0), ("Sensor", 1.4))
OCR_PHOTOS = ("coffee", "rocket", "horse", "astronaut")


def draw_words(img: np.ndarray, words: Sequence[tuple[str, float]]) -> np.ndarray:
    """Words in white with a black outline, one line each, down the left half of the frame."""
    out, y = img.copy(), 10
    for text, scale in words:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        y += th + base + 12
        x = 12 + (y * 7) % max(1, out.shape[1] - tw - 24)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 6, cv2.LINE_AA)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def make_text_video(path: Path, n_frames: int = 8, per_frame: int = 4, size: tuple[int, int] = (480, 360),
                    fps: float = 5.0) -> tuple[VideoInfo, list[list[str]]]:
    """Real photos with `per_frame` words drawn on each frame; returns (video, words per frame)."""
    path, imgs, truth, labels = Path(path), [], [], []
    for i in range(n_frames):
        name = OCR_PHOTOS[i % len(OCR_PHOTOS)]
        words = [OCR_WORDS[(i * per_frame + j) % len(OCR_WORDS)] for j in range(per_frame)]
        img = cv2.resize(frame_of(name, i, (size[1], size[1])), size, interpolation=cv2.INTER_AREA)
        imgs.append(draw_words(img, words))
        truth.append([w for w, _ in words])
        labels.append(name)
    _write_mp4v(path, imgs, fps, size)
    return VideoInfo(path, labels, size, fps), truth
