"""`ConvertOptions`: every setting of a conversion, validated once, recorded in the report.

`edgesdk.convert(model, profile, output, **settings)` builds one from its keyword arguments;
pass ``options=ConvertOptions(...)`` to prepare (and validate) them ahead. Each check names the
CLI option a user would change.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import ConversionError
from .preprocess import PreprocessSpec
from .preprocess_options import PreprocessOptions

PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16", "int8")
TASK_CHOICES = ("classification", "detection", "segmentation", "text_recognition", "text_detection", "raw")
DEFAULT_MAX_DROP = 0.02


@dataclass(frozen=True)
class ConvertOptions:
    precision: str = "auto"
    calib: Union[str, Path, np.ndarray, None] = None
    max_accuracy_drop: Optional[float] = None
    input_shape: Optional[Sequence[int]] = None
    #: inputs baked in as constants ({name: values}; --freeze-input NAME=V1,V2): the bundle takes the rest
    freeze_inputs: Optional[Mapping[str, Sequence[float]]] = None
    preset: Optional[str] = None
    preprocess: Optional[PreprocessSpec] = None
    preprocess_options: Optional[PreprocessOptions] = None
    assume_preprocess: bool = False
    task: Optional[str] = None
    labels: Union[str, Path, Sequence[str], None] = None
    #: decoder stated by the user ({"type": "yolo", "layout": "v8"}; --decoder, --decoder-layout)
    decoder: Optional[Mapping[str, Any]] = None
    calib_size: int = 64
    val: Union[str, Path, np.ndarray, None] = None
    holdout: float = 0.25
    calib_method: str = "minmax"
    exclude: Sequence[str] = ()
    eval_fn: Union[str, Callable[[Any], float], None] = None
    prune: Optional[float] = None
    prune_criterion: str = "l1"
    #: leave the groups that hurt most per FLOP saved whole while FLOPs stay <= this share of the original
    prune_max_flops: Optional[float] = None
    #: ... and onnxruntime's activation elements (memory traffic) <= this share
    prune_max_activations: Optional[float] = None
    #: least-squares refit of the pruned convolutions on --calib; None: on when pruning with --calib
    refit: Optional[bool] = None
    lowrank: Optional[float] = None
    distill: Any = False
    distill_minutes: float = 10.0
    resume: bool = False
    qat: bool = False               # quantization-aware fine-tuning of INT8 that misses the budget
    qat_minutes: float = 4.0
    backends: Optional[Sequence[str]] = None
    measure: Optional[bool] = None
    accuracy_control: str = "edgesdk"
    guard_steps: int = 8
    threads: Optional[int] = None
    bench_seconds: float = 1.0
    name: Optional[str] = None
    force: bool = False
    torch_example: Any = None
    example_shape: Optional[Sequence[int]] = None
    profiles_dirs: Optional[Sequence[Union[str, Path]]] = field(default=None)
    metric: Optional[str] = None
    keep_best: bool = False

    def __post_init__(self) -> None:
        from converters.onnx_quant import CALIBRATION_METHODS

        _one_of("--precision", self.precision, PRECISION_CHOICES)
        _one_of("--calib-method", self.calib_method, CALIBRATION_METHODS)
        _one_of("--accuracy-control", self.accuracy_control, ("edgesdk", "nncf"))
        if self.task is not None:
            _one_of("--task", self.task, TASK_CHOICES)
        if not 0.0 <= self.budget < 1.0:
            raise ConversionError(f"--max-accuracy-drop must be in [0, 1), got {self.budget}")
        if int(self.calib_size) < 1:
            raise ConversionError(f"--calib-size must be >= 1, got {self.calib_size}")
        if not 0.0 < float(self.holdout) < 1.0:
            raise ConversionError(f"holdout must be a fraction in (0, 1), got {self.holdout}")
        if self.prune is not None and not 0.0 < float(self.prune) < 1.0:
            raise ConversionError(f"--prune is a ratio in (0, 1), got {self.prune}")
        self._check_prune_budgets()
        if self.refit and self.prune is None:
            raise ConversionError("--refit refits the convolutions that pruning cut: add --prune RATIO, or drop --refit")
        if self.refit and self.calib is None:
            raise ConversionError("--refit fits the pruned convolutions on real inputs: add --calib FOLDER "
                                  "(images, a video or .npy), or use --no-refit")
        if int(self.guard_steps) < 0:
            raise ConversionError(f"--guard-steps must be >= 0, got {self.guard_steps}")
        if self.threads is not None and int(self.threads) < 1:
            raise ConversionError(f"--threads must be >= 1, got {self.threads}")
        if self.lowrank is not None and not 0.0 < float(self.lowrank) <= 1.0:
            raise ConversionError(f"--lowrank is the energy share to keep, in (0, 1], got {self.lowrank}")
        if float(self.distill_minutes) <= 0:
            raise ConversionError(f"--distill-minutes must be > 0, got {self.distill_minutes}")
        if float(self.qat_minutes) <= 0:
            raise ConversionError(f"--qat-minutes must be > 0, got {self.qat_minutes}")
        if self.qat and self.precision not in ("int8", "auto"):
            raise ConversionError(f"--qat fine-tunes INT8 models, but --precision is {self.precision}: use "
                                  "--precision int8 (or auto), or drop --qat")
        if self.freeze_inputs is not None:
            object.__setattr__(self, "freeze_inputs", _freeze_values(self.freeze_inputs))  # frozen dataclass
        if self.backends:
            object.__setattr__(self, "backends", [_backend_name(b) for b in self.backends])  # frozen
        if float(self.bench_seconds) <= 0:
            raise ConversionError(f"--bench-seconds must be > 0, got {self.bench_seconds}")

    def _check_prune_budgets(self) -> None:
        for opt, v in (("--prune-max-flops", self.prune_max_flops), ("--prune-max-activations", self.prune_max_activations)):
            if v is None:
                continue
            if not 0.0 < float(v) <= 1.0:
                raise ConversionError(f"{opt} is a share of the original model's cost, in (0, 1], got {v}")
            if self.prune is None:
                raise ConversionError(f"{opt} chooses which groups --prune leaves whole: add --prune RATIO (e.g. 0.3)")
            if self.calib is None:
                raise ConversionError(f"{opt} measures each group's damage on real inputs: add --calib FOLDER "
                                      "(images, a video or .npy)")
        if self.prune_max_activations is not None and self.prune_max_flops is None:
            raise ConversionError("--prune-max-activations refines --prune-max-flops: add --prune-max-flops SHARE "
                                  "(e.g. 0.6)")

    @property
    def budget(self) -> float:
        return DEFAULT_MAX_DROP if self.max_accuracy_drop is None else float(self.max_accuracy_drop)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the report records them (arrays and callables by kind)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = f"array {list(v.shape)} {v.dtype}"
            elif callable(v) or f.name in ("torch_example", "distill") and v is not None and not isinstance(v, bool):
                v = type(v).__name__
            elif isinstance(v, PreprocessOptions):
                v = v.describe()
            elif isinstance(v, PreprocessSpec):
                v = v.to_dict()
            elif isinstance(v, (Path, tuple)):
                v = str(v) if isinstance(v, Path) else list(v)
            out[f.name] = v
        return out


def _backend_name(name: str) -> str:
    """A --backend value as the backend records name it (aliases such as ov, ort, tflite resolved)."""
    from runtimes.registry import ALL_ALIASES, RECORDS

    key = ALL_ALIASES.get(str(name).lower(), str(name).lower())
    if key not in RECORDS:
        raise ConversionError(f"--backend {name!r} is no backend convert builds for; choose one of "
                              f"{', '.join(RECORDS)} (aliases: {', '.join(sorted(ALL_ALIASES))})")
    return key


def _freeze_values(values: Any) -> dict[str, list[float]]:
    """{input name: values} with every value a number (a scalar is one value)."""
    if not isinstance(values, Mapping):
        raise ConversionError(f"freeze_inputs maps input names to values ({{'scale_factor': [1, 1]}}), got "
                              f"{type(values).__name__}")
    out: dict[str, list[float]] = {}
    for name, vals in values.items():
        vals = list(np.ravel(np.asarray(vals, dtype=object)))
        try:
            out[str(name)] = [float(v) for v in vals]
        except (TypeError, ValueError):
            raise ConversionError(f"--freeze-input {name}: the values must be numbers, got {vals!r}") from None
        if not vals:
            raise ConversionError(f"--freeze-input {name}: no values given")
    return out


def _one_of(option: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ConversionError(f"{option} must be one of {', '.join(choices)}, got {value!r}")
