"""Model-aware canary: the new release runs in shadow beside the current one on live frames and is
committed only when the two agree by the task's metric.

    report = canary_install("cls-1.1.0.edgepkg", root, source="rtsp://cam/1", policy=CanaryPolicy(frames=50))

1. The package is verified, extracted and health-checked into a scratch root beside the device's
   (`edgesdk install` into `<root>/canary/`): the device's `current` is not touched.
2. Frames from `source` (any `edgesdk run` source: camera, RTSP, video file, image folder) go
   through both releases, for `frames` frames or `seconds` seconds, whichever ends first.
3. Agreement per frame by `edgesdk.fleet.agreement` (top-1 / box F1 / cosine, as the task asks);
   the mean is held against `threshold`.
4. Pass: the package is installed for real (verify, switch, health check, commit). Fail: the
   scratch copy is removed and the current release stays as it was ("rolled back" without ever
   having been switched). Either way a `CanaryReport` says what was measured.

Agreement with the current release is the question a canary can answer on unlabelled live
data: "does the new model still say what the trusted one says". A release meant to change
answers (a better model) needs a threshold that allows it, or labelled data (the converter's
eval function) instead.
"""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from ..errors import ConfigError, PackageError, SourceError
from ..provision.fsutil import atomic_write
from .agreement import agreement, metric_for

PathLike = Union[str, Path]
Progress = Callable[[str], None]


@dataclass
class CanaryPolicy:
    frames: int = 50
    seconds: Optional[float] = 60.0
    metric: Optional[str] = None  # None: the task's own (top1 / box_f1 / cosine)
    threshold: float = 0.95
    min_frames: int = 10  # fewer frames than this compared: no decision (refused, current kept)

    def check(self) -> "CanaryPolicy":
        if self.frames < 1 or (self.seconds is not None and self.seconds <= 0):
            raise ConfigError(f"canary: need frames >= 1 and seconds > 0, got {self.frames}, {self.seconds}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"canary: threshold must be within 0..1, got {self.threshold}")
        if not 1 <= self.min_frames <= self.frames:
            raise ConfigError(f"canary: min_frames must be within 1..frames ({self.frames}), got {self.min_frames}")
        return self


@dataclass
class CanaryReport:
    decision: str  # "commit" or "rollback"
    metric: str
    agreement: float
    threshold: float
    frames: int
    seconds: float
    worst: float
    current: Optional[str]
    candidate: str
    task: str
    reason: str
    install_message: str = ""
    per_frame: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.decision == "commit"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _infer(predictor: Any, image: np.ndarray) -> tuple[dict, Any]:
    batch, transforms = predictor.preprocess([image])
    outputs = predictor.runtime.infer(predictor.feeds(batch))
    return outputs, predictor.decode(outputs, transforms)[0]


def shadow_compare(current_bundle: PathLike, candidate_bundle: PathLike, source: Any, policy: CanaryPolicy,
                   progress: Progress = lambda _m: None) -> tuple[str, str, list[float], float]:
    """Run both bundles on the same frames; (metric, task, per-frame agreement, seconds)."""
    from ..predictor import Predictor
    from ..streaming.sources import make_source

    src = make_source(source)
    with Predictor(current_bundle) as cur, Predictor(candidate_bundle) as cand:
        if cur.task != cand.task:
            raise PackageError(f"canary: the candidate's task {cand.task!r} differs from the current "
                               f"{cur.task!r}; the two cannot be compared")
        metric = metric_for(cur.task, policy.metric)
        scores: list[float] = []
        src.open()
        t0 = time.monotonic()
        try:
            while len(scores) < policy.frames and (policy.seconds is None or time.monotonic() - t0 < policy.seconds):
                image = src.read()
                if image is None:
                    break  # end of a file/folder, or a dropped stream: decide on what was seen
                (oa, ra), (ob, rb) = _infer(cur, image), _infer(cand, image)
                scores.append(agreement(metric, cur.task, ra, rb, oa, ob))
                if len(scores) % 10 == 0:
                    progress(f"canary: {len(scores)}/{policy.frames} frames, {metric} {np.mean(scores):.3f}")
        finally:
            src.close()
    return metric, cur.task, scores, time.monotonic() - t0


def _bundle_dir(root: Path) -> Optional[Path]:
    from ..provision.install import status
    try:
        cur = status(root, verify=False, progress=lambda _m: None)["current"]
    except PackageError:
        return None
    if not cur or not cur.get("path"):
        return None
    from ..provision.store import Store
    return Path(cur["path"]) / Store(root).manifest(cur["release"]).bundle


def canary_install(package: PathLike, root: PathLike, source: Any, policy: CanaryPolicy = CanaryPolicy(),
                   trusted_keys: Optional[PathLike] = None, profile: Optional[str] = None,
                   report_path: Optional[PathLike] = None, progress: Progress = lambda _m: None,
                   **install_options: Any) -> CanaryReport:
    """Shadow-run `package` beside `root`'s current release; install it only if they agree."""
    from ..provision.install import install

    policy.check()
    root = Path(root)
    current = _bundle_dir(root)
    if current is None:
        raise PackageError(f"canary: {root} has no current release to compare with; install the first release "
                           "with `edgesdk install`")
    scratch = root.parent / f".{root.name}.canary"
    shutil.rmtree(scratch, ignore_errors=True)
    try:  # verify + extract + health-check beside the device's root: `current` is not touched
        shadow = install(package, scratch, trusted_keys=trusted_keys, profile=profile, progress=progress,
                         **install_options)
        metric, task, scores, seconds = shadow_compare(current, _bundle_dir(scratch), source, policy, progress)
        report = _decide(policy, metric, task, scores, seconds, current.parent.name, shadow.release)
        if report.passed:
            r = install(package, root, trusted_keys=trusted_keys, profile=profile, progress=progress, **install_options)
            report.install_message = r.message
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if report_path is not None:
        atomic_write(report_path, json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _decide(policy: CanaryPolicy, metric: str, task: str, scores: list[float], seconds: float,
            current: str, candidate: str) -> CanaryReport:
    if len(scores) < policy.min_frames:
        raise SourceError(f"canary: only {len(scores)} frames could be compared (need {policy.min_frames}); the "
                          "source ended or dropped. Nothing was installed; check the source or lower --min-frames")
    mean = float(np.mean(scores))
    ok = mean >= policy.threshold
    reason = (f"{metric} {mean:.3f} {'>=' if ok else '<'} threshold {policy.threshold:.3f} over {len(scores)} "
              f"frames in {seconds:.1f} s")
    return CanaryReport("commit" if ok else "rollback", metric, round(mean, 6), policy.threshold, len(scores),
                        round(seconds, 3), round(float(min(scores)), 6), current, candidate, task, reason,
                        per_frame=[round(s, 4) for s in scores])


__all__ = ["CanaryPolicy", "CanaryReport", "canary_install", "shadow_compare"]
