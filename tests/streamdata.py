"""Real test videos for the streaming tests: see tools/samplevideo.py (shared with the
examples and bench/stream.py)."""
from samplevideo import (DEFAULT_PATTERN, FACE_PHOTOS, VideoInfo, ffmpeg, frame_of, frames,  # noqa: F401
                         make_video, to_h264)


# --- scenes for the change gate: a still photo, real photo crops that move, appear or stay, a camera
# that shakes or zooms, a light ramp and sensor noise. Each frame's `state` is the geometry of what is
# in view (camera and objects, rounded to a pixel): two frames with equal states differ only by light and
# noise, which is how the gate bench tells detector flicker from a change the gate missed.

import math as _math  # noqa: E402
from dataclasses import dataclass as _dataclass  # noqa: E402
from pathlib import Path as _Path  # noqa: E402
from typing import Callable as _Callable  # noqa: E402

import cv2 as _cv2  # noqa: E402
import numpy as _np  # noqa: E402

from sampledata import photos as _photos, square as _square  # noqa: E402
from samplevideo import _write_mp4v, draw_words  # noqa: E402

#: object crops of real photos: (photo, (y0, y1, x0, x1) or None for all of it, words drawn on it or (), size
#: factor). "closeup" is the face drawn 1.6x larger: BlazeFace short-range finds no face under ~40 % of the
#: frame's height (measured on these backgrounds: none at 30 % off-centre, 0.66-0.94 at 40-60 %).
SPRITES = {"face": ("astronaut", (30, 250, 120, 330), (), 1.0), "person": ("astronaut", None, (), 1.0),
           "closeup": ("astronaut", (30, 250, 120, 330), (), 1.6),
           "text": ("coffee", (0, 150, 0, 300), (("EDGE", 1.6), ("camera", 1.2)), 1.0)}


@_dataclass
class Shot:
    """What one frame shows: objects [(sprite, centre x, centre y, height) as fractions of the frame],
    the camera (shift x/y in pixels, zoom factor), the light (gain) and the sensor noise (sigma, 0-255)."""
    background: str
    objects: tuple = ()
    shift: tuple = (0.0, 0.0)
    zoom: float = 1.0
    gain: float = 1.0
    noise: float = 2.5


@_dataclass
class SceneVideo:
    path: _Path
    name: str
    states: list  # per frame: the geometry in view (equal: only light and noise differ)
    size: tuple
    fps: float

    def __len__(self) -> int:
        return len(self.states)


def _sprite(name: str, height_px: int) -> _np.ndarray:
    photo, box, words, factor = SPRITES[name]
    height_px = round(height_px * factor)
    img = _photos()[photo]
    if box is not None:
        img = img[box[0]:box[1], box[2]:box[3]]
    if words:  # a sign: crisp words on a real photo, which the text detector finds steadily
        img = draw_words(img, words)
    width = max(1, round(img.shape[1] * height_px / img.shape[0]))
    return _cv2.resize(img, (width, max(1, height_px)), interpolation=_cv2.INTER_AREA)


def _paste(canvas: _np.ndarray, sprite: _np.ndarray, cx: float, cy: float) -> None:
    h, w = sprite.shape[:2]
    x0, y0 = round(cx - w / 2), round(cy - h / 2)
    cx0, cy0 = max(0, x0), max(0, y0)
    cx1, cy1 = min(canvas.shape[1], x0 + w), min(canvas.shape[0], y0 + h)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = sprite[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]


def _state(shot: Shot, size: tuple) -> tuple:
    w, h = size
    objs = tuple((n, round(x * w), round(y * h), round(s * h)) for n, x, y, s in shot.objects)
    return shot.background, objs, round(shot.shift[0]), round(shot.shift[1]), round(shot.zoom * max(size))


def render_shot(shot: Shot, size: tuple, seed: int) -> _np.ndarray:
    """The frame: background photo filling the frame, objects pasted, camera applied, light, noise."""
    w, h = size
    bg = _square(_photos()[shot.background])
    canvas = _cv2.resize(bg, (max(w, h), max(w, h)), interpolation=_cv2.INTER_AREA)
    canvas = _np.ascontiguousarray(canvas[(canvas.shape[0] - h) // 2:][:h, (canvas.shape[1] - w) // 2:][:, :w])
    for name, x, y, s in shot.objects:
        _paste(canvas, _sprite(name, round(s * h)), x * w, y * h)
    if shot.zoom != 1.0 or shot.shift != (0.0, 0.0):
        m = _cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, shot.zoom)
        m[:, 2] += shot.shift
        canvas = _cv2.warpAffine(canvas, m, (w, h), flags=_cv2.INTER_LINEAR, borderMode=_cv2.BORDER_REFLECT)
    img = canvas.astype(_np.float32) * shot.gain
    if shot.noise > 0:
        img += _np.random.default_rng(seed).normal(0.0, shot.noise, img.shape).astype(_np.float32)
    return _np.clip(img + 0.5, 0, 255).astype(_np.uint8)


def _ramp(t: float, keys: list) -> float:
    """Piecewise-linear value at t from [(t, value)] keys (held outside them)."""
    for (t0, v0), (t1, v1) in zip(keys, keys[1:]):
        if t0 <= t <= t1:
            return v0 + (v1 - v0) * (t - t0) / max(t1 - t0, 1e-9)
    return keys[0][1] if t < keys[0][0] else keys[-1][1]


def _walk(t: float, kind: str) -> Shot:
    """A small object holds, walks to the middle, holds, walks on across a still photo."""
    x = _ramp(t, [(0.15, 0.2), (0.35, 0.5), (0.6, 0.5), (0.8, 0.8)])
    y = _ramp(t, [(0.15, 0.4), (0.35, 0.6), (0.6, 0.6), (0.8, 0.45)])
    return Shot("coffee", ((kind, x, y, 0.3 if kind != "text" else 0.45),))


def _enter_leave(t: float, kind: str) -> Shot:
    """A person-size object (most of the frame's height) enters from the left, stands, leaves right."""
    x = _ramp(t, [(0.2, -0.45), (0.35, 0.45), (0.65, 0.45), (0.8, 1.45)])
    sprite = "person" if kind in ("face", "closeup") else kind
    return Shot("rocket", ((sprite, x, 0.5, 0.8 if kind != "text" else 0.6),))


def _shake(t: float, kind: str) -> Shot:
    """A still scene with an object; the camera shakes (a burst of jitter), holds, zooms in slowly."""
    burst = 0.25 <= t < 0.4
    rng = _np.random.default_rng(int(t * 1e6))
    shift = tuple(float(v) for v in rng.uniform(-4, 4, 2)) if burst else (0.0, 0.0)
    zoom = _ramp(t, [(0.6, 1.0), (0.8, 1.08)])
    return Shot("motorcycle_left", ((kind, 0.4, 0.45, 0.4 if kind != "text" else 0.45),), shift, zoom)


def _light(t: float, kind: str) -> Shot:
    """Nothing moves: the light dims to 60 % and comes back, with more sensor noise."""
    gain = 0.8 + 0.2 * _math.cos(2 * _math.pi * t)
    return Shot("coffee", ((kind, 0.5, 0.5, 0.4 if kind != "text" else 0.45),), gain=gain, noise=4.0)


def _corner(t: float, kind: str) -> Shot:
    """A still scene where a small object appears in a corner, stays, and goes: a small change that matters."""
    objs = ((kind, 0.8, 0.78, 0.35 if kind != "text" else 0.4),) \
        if 0.3 <= t < 0.7 else ()
    return Shot("rocket", objs)


SCENES: dict[str, _Callable[[float, str], Shot]] = {
    "walk": _walk, "enter_leave": _enter_leave, "shake": _shake, "light": _light, "corner": _corner}


def scene_frames(name: str, kind: str = "face", n: int = 150, size: tuple = (320, 240)) -> tuple[list, list]:
    """The frames and per-frame states of scene `name` (objects: a SPRITES key), `n` frames."""
    shots = [SCENES[name](i / n, kind) for i in range(n)]
    return [render_shot(s, size, seed=i) for i, s in enumerate(shots)], [_state(s, size) for s in shots]


def make_scene_video(path, name: str, kind: str = "face", n: int = 150, size: tuple = (320, 240),
                     fps: float = 15.0) -> SceneVideo:
    """Write scene `name` as an mp4v video (OpenCV, so codec noise is on top of the sensor noise)."""
    imgs, states = scene_frames(name, kind, n, size)
    _write_mp4v(_Path(path), imgs, fps, size)
    return SceneVideo(_Path(path), f"{name}/{kind}", states, size, fps)


def same_result(a, b) -> bool:
    """The gate's match test: the same number of boxes, each paired one-to-one with IoU >= 0.5."""
    from converters.compare import box_matches
    if len(a.boxes) != len(b.boxes):
        return False
    return box_matches(a.boxes, b.boxes, 0.5)[0] == len(a.boxes)


#: the original gate test video: photos held for a second, zoomed 0-5 % and shifted a pixel frame to frame.
#: Its sixth photo was skimage's horse, which a bug in sampledata drew all black (a free still stretch);
#: drawn right it is a binary mask, not a photograph, and SILHOUETTE_PATTERN keeps it in bench/gate.py
STATIC_PATTERN = (("astronaut", 15), ("coffee", 15), ("page", 15), ("camera", 15), ("rocket", 15), ("coins", 15),
                  ("page", 15))
#: a crisp black-and-white mask under the same jitter: each 1 % zoom step moves its edges by a
#: fraction of a thumbnail pixel, which the gate reads as change (measured: 0 of 15 frames skipped)
SILHOUETTE_PATTERN = (("horse", 15),)


def static_states(pattern=STATIC_PATTERN) -> list:
    """Per-frame geometry of make_video(pattern): the photo segment and its zoom step (frame_of: i % 6)."""
    return [(seg, i % 6) for seg, (_, n) in enumerate(pattern) for i in range(n)]
