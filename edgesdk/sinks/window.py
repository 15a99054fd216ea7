"""`WindowSink`: show annotated frames on screen (one window per source).

Needs a display and an OpenCV built with a GUI. On a headless device (no ``DISPLAY`` /
``WAYLAND_DISPLAY``) or with ``opencv-python-headless``, `open()` raises a `SinkError`
that says so and suggests a video file sink instead. Pressing ``q`` or Esc in a window
sets `quit_requested` (the pipeline may stop on it).
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Union

import cv2

from ..annotate import Annotator, default_annotator
from ..errors import SinkError
from ..results import Frame, Result
from .base import Sink
from .video import _to_bgr


def display_problem() -> Optional[str]:
    """Why no window can be shown here, or None when one probably can."""
    if sys.platform.startswith(("linux", "freebsd")) and not (os.environ.get("DISPLAY")
                                                               or os.environ.get("WAYLAND_DISPLAY")):
        return "no display (neither DISPLAY nor WAYLAND_DISPLAY is set)"
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:") and line.split(":", 1)[1].strip().upper() == "NONE":
            return ("this OpenCV has no GUI support (opencv-python-headless); "
                    "install opencv-python to show windows")
    return None


class WindowSink(Sink):
    def __init__(self, title: str = "EdgeSDK", annotator: Union[Annotator, None, bool] = None) -> None:
        super().__init__(f"window:{title}")
        self.title = title
        self.annotator: Optional[Annotator] = (None if annotator is False
                                               else default_annotator() if annotator in (None, True)
                                               else annotator)  # type: ignore[assignment]
        self.quit_requested = False
        self._windows: set[str] = set()

    def _open_impl(self) -> None:
        problem = display_problem()
        if problem is None:
            try:  # the definitive check: can a window be made?
                probe = f"{self.title} (starting)"
                cv2.namedWindow(probe, cv2.WINDOW_NORMAL)
                cv2.destroyWindow(probe)  # frames open one window per source as they come
            except cv2.error as e:
                problem = f"OpenCV cannot open a window: {str(e).strip().splitlines()[-1]}"
        if problem is not None:
            raise SinkError(f"window sink: {problem}. On a device without a screen use a video file "
                            "sink (--sink out.mp4) or the metrics endpoint instead")

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        if frame is None:
            raise SinkError("window sink needs the frame image; write(frame, result) got no frame")
        img = _to_bgr(frame.image)
        if self.annotator is not None:
            img = self.annotator.annotate(img, result)
        title = self.title if not frame.source_id else f"{self.title} [{frame.source_id}]"
        try:
            cv2.imshow(title, img)
            self._windows.add(title)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error as e:
            raise SinkError(f"window sink: cannot show the frame: {str(e).strip().splitlines()[-1]}") from e
        if key in (ord("q"), 27):
            self.quit_requested = True

    def _close_impl(self) -> None:
        for title in self._windows:
            try:
                cv2.destroyWindow(title)
            except cv2.error:
                pass  # the user closed it already
        self._windows.clear()
