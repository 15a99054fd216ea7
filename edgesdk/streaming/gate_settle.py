"""Settle refresh for the change gate: one fresh inference when a slow change has come to rest.

The gate compares each frame with the last one inferred, so a slow change (a zoom, a pan, a
dimming light) is caught once it adds up to the threshold. One that stops just short of it
leaves the reference lagging what is in view until `max_age_s` forces a fresh inference:
measured on the shake scene (bench/gate.py), a 1.2 % zoom that ends at 0.051 of full scale
(threshold 0.07) re-emitted the pre-zoom result for the next 26 frames while YOLOv8n's answer
had changed. So once the frame holds still (differs from the previous frame by no more than
the source's own noise) and differs from the reference by clearly more than that noise, the
gate infers it once; it is then the reference and the rule is quiet until the next change.

"Still" is relative to a noise floor estimated per source from its own frame-to-frame changes
(sensor noise, codec shimmer; 0.001-0.02 of full scale for noise sigma 2.5-30 grey levels),
so a noisy camera is not refreshed by its noise and a clean one is still when it is.

The cost: a drift too slow to tell from noise frame to frame counts as still, so it is
refreshed each time it passes threshold/4. Measured, a steady pan of 0.2 px a frame at
320x240 (3 px/s; render_shot, 150 frames): 37 inferences instead of 13 (75 % skipped instead
of 91 %); at 0.5 px a frame 39 instead of 30 (coffee) or 39 = 39, at 1 px a frame no change.
Asking stillness against the frame 4 or 8 back as well (a truly settled scene) removed that
cost, but codec drift over 8 frames exceeds the frame-to-frame floor: the refresh then never
fired on the bench's shake scene (4 back: it fired 4 frames later). So it is not done.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

#: the floor falls at once to a lower frame-to-frame change and rises by this share of the gap per
#: frame (a time constant of ~13 s at 15 fps): seconds of motion barely lift it. A faster rise (0.05)
#: followed a zoom up to motion level, and the zoom's own frames counted as still.
FLOOR_RISE = 0.005
STILL_FLOORS = 2.0  # still: the change from the previous frame is at most this many noise floors
DRIFT_FLOORS = 4.0  # drifted: the change from the reference is more than this many noise floors,
DRIFT_SHARE = 0.25  # and at least this share of the gate's threshold (a lag worth an inference)
#: floor of the floor, a hundredth of a percent of full scale: a noiseless synthetic source is still
EPSILON = 1e-4


@dataclass
class SourceNoise:
    """One source's last thumbnail, noise floor and whether it holds still now."""
    prev: Optional[np.ndarray] = None
    floor: Optional[float] = None  # None until two frames were seen
    still: bool = False

    def observe(self, thumb: np.ndarray, measure: Callable[[np.ndarray, np.ndarray], tuple[float, float]]) -> None:
        """Update with the next frame's thumbnail; `measure` is the gate's (local, mean) change."""
        prev, self.prev = self.prev, thumb
        if prev is None or prev.shape != thumb.shape:
            self.floor, self.still = None, False
            return
        step = measure(prev, thumb)[0]
        floor = self.floor
        self.floor = step if floor is None or step < floor else floor + FLOOR_RISE * (step - floor)
        self.still = step <= STILL_FLOORS * self.floor + EPSILON

    def drifted(self, local_vs_ref: float, threshold: float) -> bool:
        """True when the frame holds still but has moved away from the reference by more than noise."""
        return self.still and local_vs_ref > max(DRIFT_SHARE * threshold, DRIFT_FLOORS * (self.floor or 0.0))
