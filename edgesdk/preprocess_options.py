"""Preprocessing stated by the user, read from the model, or known from a preset: one spec, with
where each fact came from.

`PreprocessOptions` holds what the user said (`--normalize`, `--mean`, `--std`, `--scale`,
`--color`, `--resize`, `--pad-value`, `--layout`); `resolve_preprocess` merges, field by field,
options > model metadata > preset > the model's input shape > defaults, and returns the
`PreprocessSpec` plus ``sources`` ({field: "option --mean" | "model metadata 'mean'" |
"preset X" | "model input shape" | "default (assumed)"}) for the manifest. Contradictions
(a layout the model's shape rules out, 3 channels for a 1-channel input, --normalize and
--mean disagreeing) raise `ConfigError` naming the option.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional, Sequence

from runtimes.dims import show_dims

from .errors import ConfigError
from .preprocess import INTERPOLATIONS, RESIZE_MODES, PreprocessSpec

#: --normalize NAME -> (scale, mean, std) with mean/std in scaled units: (x * scale - mean) / std
NORMALIZATIONS: dict[str, tuple[float, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "unit": (1 / 255, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "symmetric": (1 / 255, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "raw": (1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
COLORS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW", "NHWC")
#: the CLI spells fit_height with a dash
RESIZE_CHOICES = ("stretch", "letterbox", "crop", "fit-height", "none")
FLAG = {"normalize": "--normalize", "mean": "--mean", "std": "--std", "scale": "--scale", "color": "--color",
        "resize": "--resize", "pad_value": "--pad-value", "layout": "--layout", "crop_ratio": "--crop-ratio",
        "interpolation": "--interpolation"}


def parse_triple(option: str, text: Optional[str]) -> Optional[tuple[float, ...]]:
    """'R,G,B' (or one value for a gray input) -> floats; errors name the option."""
    if text is None or text == "":
        return None
    parts = [p for p in str(text).replace(" ", ",").split(",") if p]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} takes numbers like 0.485,0.456,0.406, got {text!r}") from None
    if len(values) not in (1, 3):
        raise ConfigError(f"{option} takes 3 values R,G,B (or 1 for a 1-channel input), got {len(values)}: {text!r}")
    return values


@dataclass(frozen=True)
class PreprocessOptions:
    """What the user stated; None means 'not stated'."""

    normalize: Optional[str] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    scale: Optional[float] = None
    color: Optional[str] = None
    resize: Optional[str] = None
    pad_value: Optional[int] = None
    layout: Optional[str] = None
    crop_ratio: Optional[float] = None
    interpolation: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, parse_triple(FLAG[name], value))
            elif value is not None:
                object.__setattr__(self, name, parse_triple(FLAG[name], ",".join(str(v) for v in value)))
        if self.normalize is not None and self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"--normalize must be one of {', '.join(NORMALIZATIONS)}, got {self.normalize!r}")
        if self.color is not None:
            object.__setattr__(self, "color", self.color.upper())
            if self.color not in COLORS:
                raise ConfigError(f"--color must be RGB, BGR or GRAY, got {self.color!r}")
        if self.layout is not None:
            object.__setattr__(self, "layout", self.layout.upper())
            if self.layout not in LAYOUTS:
                raise ConfigError(f"--layout must be NCHW or NHWC, got {self.layout!r}")
        if self.resize is not None:
            object.__setattr__(self, "resize", self.resize.replace("-", "_"))
            if self.resize not in RESIZE_MODES:
                raise ConfigError(f"--resize must be one of {', '.join(RESIZE_CHOICES)}, got {self.resize!r}")
        if self.std is not None and any(s == 0 for s in self.std):
            raise ConfigError(f"--std must not contain 0, got {self.std}")
        if self.scale is not None and not float(self.scale) > 0:
            raise ConfigError(f"--scale must be > 0, got {self.scale}")
        if self.pad_value is not None and not 0 <= int(self.pad_value) <= 255:
            raise ConfigError(f"--pad-value is a pixel value in 0..255, got {self.pad_value}")
        if self.crop_ratio is not None and not 0.0 < float(self.crop_ratio) <= 1.0:
            raise ConfigError(f"--crop-ratio is the crop's share of the short side, in (0, 1], got {self.crop_ratio}")
        if self.interpolation is not None:
            object.__setattr__(self, "interpolation", self.interpolation.lower())
            if self.interpolation not in INTERPOLATIONS:
                raise ConfigError(f"--interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}")
        self._check_normalize_agrees()

    def _check_normalize_agrees(self) -> None:
        if self.normalize is None:
            return
        scale, mean, std = NORMALIZATIONS[self.normalize]
        for name, stated, implied in (("mean", self.mean, mean), ("std", self.std, std), ("scale", self.scale, scale)):
            if stated is None:
                continue
            a = stated if isinstance(stated, tuple) else (stated,)
            b = implied if isinstance(implied, tuple) else (implied,)
            if len(a) == 1:
                a = a * len(b)
            if any(abs(x - y) > 1e-6 * max(1.0, abs(y)) for x, y in zip(a, b)):
                raise ConfigError(
                    f"--normalize {self.normalize} means {FLAG[name]} {','.join(f'{v:g}' for v in b)}, but "
                    f"{FLAG[name]} {','.join(f'{v:g}' for v in a)} was given: state one of them")

    def stated(self) -> dict[str, Any]:
        """The fields the user gave, expanded: --normalize becomes scale/mean/std."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}
        norm = out.pop("normalize", None)
        if norm is not None:
            scale, mean, std = NORMALIZATIONS[norm]
            out.setdefault("scale", scale)
            out.setdefault("mean", mean)
            out.setdefault("std", std)
        elif "mean" in out and "scale" not in out and max(out["mean"]) > 1.5:
            # mean in 0-255 pixel units (123.675,...) only makes sense unscaled
            out["scale"] = 1.0
        return out

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def describe(self) -> str:
        return " ".join(f"{FLAG[k]} {_show(v)}" for k, v in
                        ((f.name, getattr(self, f.name)) for f in fields(self)) if v is not None)


def _show(v: Any) -> str:
    return ",".join(f"{x:g}" for x in v) if isinstance(v, tuple) else str(v)


#: resize modes that pad (the pad value then matters)
PADDING_RESIZES = ("fit_height", "letterbox")


def assumed_flags(spec: Any, names: Sequence[str]) -> str:
    """The assumed fields of `spec` as the options that would state them: '--color RGB, --scale 0.003922'."""
    def show(v: Any) -> str:
        if isinstance(v, (tuple, list)):
            return ",".join(f"{x:.4g}" for x in v)
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("_", "-")

    return ", ".join(f"{FLAG.get(k, k)} {show(getattr(spec, k))}" for k in names if hasattr(spec, k))


@dataclass(frozen=True)
class ResolvedPreprocess:
    spec: PreprocessSpec
    sources: dict[str, str]

    @property
    def assumed(self) -> list[str]:
        """Fields nobody stated (defaults)."""
        return [k for k, v in self.sources.items() if v.startswith("default")]

    @property
    def normalization_stated(self) -> bool:
        return not {"scale", "mean", "std"} <= set(self.assumed)

    def assumed_text(self) -> str:
        """'layout=NCHW, color=RGB, scale=0.003922': the assumed fields with the values used."""
        return ", ".join(f"{k}={_short(getattr(self.spec, k))}" for k in self.assumed)

    def to_dict(self) -> dict[str, Any]:
        return {"sources": dict(self.sources), "assumed": self.assumed}


def _short(v: Any) -> str:
    return ",".join(f"{x:.4g}" for x in v) if isinstance(v, tuple) else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _channels(color: str) -> int:
    return 1 if color == "GRAY" else 3


def _model_layout(shape: Optional[Sequence[Optional[int]]]) -> str:
    from runtimes.spec import guess_layout

    return guess_layout(list(shape)) if shape is not None and len(shape) == 4 else ""


def _model_channels(shape: Sequence[Optional[int]], layout: str) -> Optional[int]:
    return shape[1] if layout == "NCHW" else shape[3]


def resolve_preprocess(options: Optional[PreprocessOptions] = None, *, model_facts: Optional[dict] = None,
                       preset: Optional[PreprocessSpec] = None, preset_name: str = "",
                       input_shape: Optional[Sequence[Optional[int]]] = None, input_name: str = "input",
                       dtype: str = "float32") -> ResolvedPreprocess:
    """Merge options > model metadata > preset > model shape > defaults, and check them against the model."""
    options = options or PreprocessOptions()
    layers: list[tuple[str, dict[str, Any]]] = []
    stated = options.stated()
    layers.append(("option", stated))
    meta = dict((model_facts or {}).get("preprocess") or {})
    if "normalize" in meta:
        scale, mean, std = NORMALIZATIONS[str(meta.pop("normalize")).lower()]
        meta = {"scale": scale, "mean": mean, "std": std, **meta}
    layers.append((str((model_facts or {}).get("preprocess_origin") or "model metadata"), meta))
    if preset is not None:
        layers.append((f"preset {preset_name}".strip(), preset.to_dict()))
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for origin, layer in layers:
        for key, value in layer.items():
            if key in values or value is None or key not in PreprocessSpec.__dataclass_fields__:
                continue
            values[key] = tuple(value) if isinstance(value, list) else value
            sources[key] = _option_source(key, options) if origin == "option" else origin
    _from_shape(values, sources, input_shape, input_name, options)
    defaults = PreprocessSpec()
    for key in ("resize", "color", "scale", "mean", "std", "layout", "pad_value"):
        if key not in values:
            values[key] = getattr(defaults, key)
            sources[key] = "default (assumed)"
    if sources["pad_value"].startswith("default") and values["resize"] not in PADDING_RESIZES:
        sources["pad_value"] = f"unused (resize {values['resize']} does not pad)"  # no guess to warn about
    values.setdefault("dtype", dtype)
    _check_channels(values, sources, input_shape, input_name)
    return ResolvedPreprocess(PreprocessSpec.from_dict({k: (list(v) if isinstance(v, tuple) else v)
                                                        for k, v in values.items()}), sources)


def _option_source(key: str, options: PreprocessOptions) -> str:
    if getattr(options, key, None) is not None:
        return f"option {FLAG[key]}"
    if options.normalize is not None:
        return f"option --normalize {options.normalize}"
    return "option --mean (given in 0-255 pixel units, so --scale 1)"


def _from_shape(values: dict[str, Any], sources: dict[str, str], shape: Optional[Sequence[Optional[int]]],
                name: str, options: PreprocessOptions) -> None:
    """Layout and size from the model input; a stated layout the shape rules out is an error."""
    model_layout = _model_layout(shape)
    clear = bool(model_layout) and shape is not None and (
        (shape[1] in (1, 3, 4)) != (shape[3] in (1, 3, 4)))
    if clear:
        if options.layout and options.layout != model_layout:
            raise ConfigError(f"--layout {options.layout} contradicts the model: input {name!r} is "
                              f"{show_dims(shape, bracketed=True)}, "
                              f"channels-{'first' if model_layout == 'NCHW' else 'last'} "
                              f"({model_layout}); drop --layout or pass --layout {model_layout}")
        if values.get("layout") != model_layout:
            values["layout"] = model_layout
            sources["layout"] = "model input shape"
    if shape is None or len(shape) != 4 or "layout" not in values and not model_layout:
        return
    layout = values.get("layout") or model_layout
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if h and w and "size" not in values:
        values["size"] = (int(h), int(w))
        sources["size"] = "model input shape"


def _check_channels(values: dict[str, Any], sources: dict[str, str], shape: Optional[Sequence[Optional[int]]],
                    name: str) -> None:
    if shape is None or len(shape) != 4:
        return
    c = _model_channels(shape, values["layout"])
    if c is None:
        return
    if sources.get("color", "").startswith("default") and c == 1:
        values["color"] = "GRAY"
        sources["color"] = "model input shape (1 channel)"
    want = _channels(values["color"])
    if want != c:
        where = sources.get("color", "")
        raise ConfigError(f"{'--color ' + values['color'] if where.startswith('option') else 'color ' + values['color'] + ' (' + where + ')'}"
                          f" means {want} channels, but input {name!r} {show_dims(shape, bracketed=True)} has {c}: "
                          f"{'pass --color GRAY' if c == 1 else 'pass --color RGB or BGR'}")
    for key in ("mean", "std"):
        vals = values.get(key)
        if vals is not None and len(vals) == 1:
            values[key] = tuple(vals) * want
        elif vals is not None and len(vals) != want:
            if want == 1 and sources[key] != f"option {FLAG[key]}":
                values[key] = tuple(vals[:1])  # a named normalization or a default, for a gray input
                continue
            raise ConfigError(f"{FLAG[key]} has {len(vals)} values but input {name!r} "
                              f"{show_dims(shape, bracketed=True)} has {c} "
                              f"channel{'s' if c != 1 else ''}: give {c} value{'s' if c != 1 else ''}")


def with_layout(resolved: ResolvedPreprocess, layout: str, why: str) -> ResolvedPreprocess:
    if resolved.spec.layout == layout:
        return resolved
    return ResolvedPreprocess(replace(resolved.spec, layout=layout), {**resolved.sources, "layout": why})
