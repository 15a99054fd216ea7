"""Input shapes with dynamic dims: `--input-shape 1,3,48,-1` keeps the width dynamic.

One home for what a stated shape means:
- parsing (`-1` or `?` keeps a dim dynamic; the batch dim stays a number: a batch-1 model is
  looped over a batch by the runtime),
- which targets can keep a dim dynamic: a backend record's `static_shapes` / `static_devices`
  (runtimes.registry RECORDS) say which cannot (TFLite/LiteRT, Edge TPU, TensorRT, Vitis AI,
  OpenVINO on an NPU); those are skipped with a reason, or refused when nothing else is left,
- the preprocessing that fills the dynamic dims per image (`spec_for_shape`): a dynamic width
  with ``--resize fit-height`` follows each image's aspect (text lines), dynamic height and width
  follow the image size; both rounded up to a multiple the model can take and capped,
- the shape `bench` feeds (`feed_shape`): stated, else the bundle's or the preset's size, else the
  model's static dims; never a made-up default.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Optional, Sequence, Union

from runtimes.dims import merge_stated_dims, show_dims

from .errors import ConfigError, ConversionError
from .preprocess import PreprocessSpec

Dims = list[Optional[int]]
#: what a dynamic dim is written as in --input-shape
DYNAMIC_TOKENS = ("-1", "?")
#: a dynamic dim is rounded up to this multiple when no preset says (the usual total CNN stride)
DEFAULT_MULTIPLE = 32
#: calibration and held-out samples never exceed this many pixels along a dynamic dim
MAX_DYNAMIC_SIDE = 2048


def parse_input_shape(value: Union[str, Sequence[Any], None], option: str = "--input-shape") -> Optional[Dims]:
    """'1,3,48,-1' / '1x3x48x?' / [1, 3, 48, -1] -> [1, 3, 48, None]; errors name `option`."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    # commas separate dims when there are any ("1,3,x,5" is a typo, not 1x3x5); else x or spaces
    sep = r"\s*,\s*" if isinstance(value, str) and "," in value else r"[x\s]+"
    parts = re.split(sep, value.strip()) if isinstance(value, str) else list(value)
    parts = [p for p in parts if p != ""]
    dims: Dims = []
    for p in parts:
        text = str(p).strip()
        if p is None or text in DYNAMIC_TOKENS:
            dims.append(None)
            continue
        try:
            d = int(text)
        except ValueError:
            raise ConversionError(f"{option} takes integers like 1,3,640,640 or 1x3x640x640 (-1 or ? keeps a dim "
                                  f"dynamic), got {value!r}") from None
        if d < 1:
            raise ConversionError(f"{option} dims must be >= 1, or -1 to keep a dim dynamic, got {value!r}")
        dims.append(d)
    if not dims:
        raise ConversionError(f"{option} is empty; give every dim, e.g. 1,3,640,640")
    if dims[0] is None:
        raise ConversionError(f"{option} {value}: the batch dim must be a number (bundles are built for batch 1 and "
                              "the runtime loops over bigger batches); -1 keeps other dims dynamic, e.g. 1,3,48,-1")
    return dims


show = show_dims  # '1x3x?x?'


def dynamic_axes(shape: Optional[Sequence[Optional[int]]]) -> list[int]:
    return [i for i, d in enumerate(shape or ()) if d is None]


def needs_static(backend: str, device: str = "CPU") -> bool:
    """True when `backend` on `device` takes only fully static input shapes (its record says)."""
    from runtimes.registry import RECORDS

    rec = RECORDS.get(backend)
    return rec is not None and (rec.static_shapes or device.upper() in rec.static_devices)


def _why(backend: str, device: str) -> str:
    return f"{backend}{'' if device.upper() == 'CPU' else ' on ' + device} needs static input shapes"


def _fixed_hint(shape: Sequence[Optional[int]], example: Optional[Sequence[Optional[int]]]) -> str:
    filled = [d if d is not None else (example[i] if example and i < len(example) and example[i] else None)
              for i, d in enumerate(shape)]
    text = ",".join(str(d) if d is not None else "N" for d in filled)
    return f"--input-shape {text}" + (" (N: the size your inputs have)" if None in filled else "")


def dynamic_targets(profile: Any, backends: Optional[Sequence[str]], shape: Optional[Sequence[Optional[int]]],
                    example: Optional[Sequence[Optional[int]]] = None) -> tuple[Optional[list[str]], list[str]]:
    """(backend names to build, notes) for a profile when `shape` keeps dims dynamic: backends
    whose every listed device needs static shapes are left out (a note says why); refused in
    one line naming --input-shape when nothing is left. A static shape changes nothing."""
    if not dynamic_axes(shape):
        return (list(backends) if backends else None), []
    prefs = [p for p in profile.backends if not backends or p.backend in backends]
    keep = [p.backend for p in prefs if not needs_static(p.backend, p.device)]
    skipped = sorted({f"{_why(p.backend, p.device)}" for p in prefs if needs_static(p.backend, p.device)})
    if not keep:
        names = ", ".join(dict.fromkeys(p.backend for p in prefs)) or "none"
        raise ConversionError(
            f"--input-shape {show(shape)} keeps axis {', '.join(map(str, dynamic_axes(shape)))} dynamic, but profile "
            f"{profile.name} builds only for {names} ({'; '.join(skipped)}): pass {_fixed_hint(shape, example)}, or "
            "a profile or --backend with onnxruntime or openvino, which keep dynamic dims")
    notes = [f"skipped: {s} and --input-shape {show(shape)} keeps axis "
             f"{', '.join(map(str, dynamic_axes(shape)))} dynamic; pass {_fixed_hint(shape, example)} to build it"
             for s in skipped]
    return list(dict.fromkeys(keep)), notes


def keep_dynamic_candidates(candidates: list[Any], shape: Sequence[Optional[int]],
                            profile_name: str = "") -> tuple[list[Any], list[str]]:
    """convert()'s candidates (with .backend and .device) that can keep `shape`'s dynamic dims,
    and notes on the ones skipped; refused in one line naming --input-shape when none is left."""
    if not dynamic_axes(shape):
        return candidates, []
    keep = [c for c in candidates if not needs_static(c.backend, c.device)]
    skipped = [c for c in candidates if needs_static(c.backend, c.device)]
    axes = ", ".join(map(str, dynamic_axes(shape)))
    if not keep:
        why = "; ".join(sorted({_why(c.backend, c.device) for c in skipped}))
        raise ConversionError(f"--input-shape {show(shape)} keeps axis {axes} dynamic, but every target of profile "
                              f"{profile_name or '?'} needs static shapes ({why}): pass {_fixed_hint(shape, None)}")
    notes = [f"skipped {c.backend} {c.precision}: {_why(c.backend, c.device)} (axis {axes} is dynamic)"
             for c in skipped]
    return keep, notes


# --------------------------------------------------------------------------- preprocessing


def spatial_axes(layout: str) -> tuple[int, int]:
    return (2, 3) if layout == "NCHW" else (1, 2)


def spec_for_shape(spec: Optional[PreprocessSpec], shape: Sequence[Optional[int]],
                   multiple: Optional[int] = None) -> tuple[Optional[PreprocessSpec], list[str]]:
    """The preprocessing for a 4-D input `shape` whose spatial dims may be dynamic (None), and
    notes saying what fills each dynamic dim. Static dims fix the size (as before); a dynamic
    width needs ``resize fit_height`` (the width then follows each image's aspect, at least the
    spec's width); dynamic height and width follow each image's size. `multiple` (default: the
    spec's size_multiple when > 1, else DEFAULT_MULTIPLE, stated in the notes) rounds them up."""
    if spec is None or len(shape) != 4:
        return spec, []
    ah, aw = spatial_axes(spec.layout)
    h, w = shape[ah], shape[aw]
    if None not in shape:
        return _static_spec(spec, (int(h), int(w))), []
    for axis, d in enumerate(shape):
        if d is None and axis not in (ah, aw):
            raise ConversionError(f"--input-shape {show(shape)}: axis {axis} cannot be dynamic (only the image height "
                                  f"and width of a {spec.layout} input can); give its size")
    stated = multiple or (spec.size_multiple if spec.size_multiple > 1 else None)
    m = stated or DEFAULT_MULTIPLE
    how = (f"rounded {'up ' if w is None and h is not None else ''}to a multiple of {m}"
           + ("" if stated else " (assumed: the usual CNN stride; a preset states its own)"))
    if h is not None and w is None:
        if spec.resize != "fit_height":
            raise ConversionError(
                f"--input-shape {show(shape)} keeps the width dynamic, which follows each image's aspect only with "
                f"--resize fit-height (text lines); pass --resize fit-height, or give the width in --input-shape")
        min_w = spec.size[1] if spec.size is not None and spec.dynamic_width else m
        min_w = int(-(-min_w // m) * m)
        new = replace(spec, size=(int(h), min_w), dynamic_width=True, size_multiple=m, limit_side_len=None)
        return new, [f"width (axis {aw}) kept dynamic: each image's own width at height {h} (its aspect kept), "
                     f"at least {min_w}, {how}; calibration and held-out samples capped at {MAX_DYNAMIC_SIDE}"]
    if h is None and w is not None:
        raise ConversionError(f"--input-shape {show(shape)} keeps only the height dynamic, which no resize mode fills; "
                              "give the height too, or keep both height and width dynamic (-1,-1)")
    if h is None and w is None:
        new = replace(spec, size=None, size_multiple=m, dynamic_width=False,
                      resize="stretch" if spec.resize == "fit_height" else spec.resize)
        limit = (f", scaled so the {'longest' if spec.limit_type == 'max' else 'shortest'} side meets "
                 f"{spec.limit_side_len}" if spec.limit_side_len else "")
        return new, [f"height and width (axes {ah}, {aw}) kept dynamic: each image's own size{limit}, {how}; "
                     f"calibration and held-out samples capped at {MAX_DYNAMIC_SIDE} per side"]
    return spec, []


def _static_spec(spec: PreprocessSpec, hw: tuple[int, int]) -> PreprocessSpec:
    """The preprocessing with the size fixed to a static input's height and width."""
    changes: dict[str, Any] = {"size": hw}
    if spec.resize == "none":
        changes["resize"] = "stretch"
    # the size is fixed now: drop the dynamic-size rounding
    if spec.limit_side_len is not None:
        changes["limit_side_len"] = None
    if spec.size_multiple != 1:
        changes["size_multiple"] = 1
    if spec.dynamic_width:
        changes["dynamic_width"] = False  # a static model takes exactly its width (padded)
    return replace(spec, **changes)


def fill_dims(model_shape: Sequence[Optional[int]], stated: Optional[Sequence[Optional[int]]],
              name: str = "input") -> Dims:
    """The model's dims with `stated` applied; a stated dim that contradicts a fixed one is an error
    (the batch may differ: the runtime loops a batch-1 model over a bigger batch)."""
    if stated is None:
        return list(model_shape)
    return merge_stated_dims(model_shape, stated, name, error=ConfigError, free_axes=(0,))


def feed_shape(model_shape: Sequence[Optional[int]], layout: str, stated: Optional[Sequence[Optional[int]]],
               size: Optional[tuple[int, int]], size_from: str, name: str = "input") -> tuple[Dims, str]:
    """The shape `bench` feeds and where it came from: `stated` (--input-shape), else the
    spatial `size` of the bundle or preset (`size_from` says which), else the model's static dims.
    The batch dim stays as given (bench sets it); unresolved dims stay None."""
    dims = fill_dims(model_shape, stated, name)
    origin = "--input-shape" if stated is not None else "the model"
    if len(dims) == 4 and size and layout in ("NCHW", "NHWC") and None in dims[1:]:
        for axis, value in zip(spatial_axes(layout), size):
            if dims[axis] is None:
                dims[axis] = int(value)
                origin = f"{origin} and {size_from}" if stated is not None else size_from
    return dims, origin


def unresolved_error(name: str, model_shape: Sequence[Optional[int]], dims: Sequence[Optional[int]],
                     what: str = "bench") -> ConfigError:
    axes = [i for i, d in enumerate(dims) if d is None and i != 0]
    example = ",".join(str(d) if d is not None else ("1" if i == 0 else "N") for i, d in enumerate(dims))
    return ConfigError(f"input {name!r} {show(model_shape)} has dynamic dims (axis {', '.join(map(str, axes))}) and "
                       f"no bundle, preset or --input-shape says their size, so {what} cannot make inputs: pass "
                       f"--input-shape {example} with N the size to {'time' if what == 'bench' else 'feed'}")


# --------------------------------------------------------------------------- convert's model facts


def shape_for_resolve(dims: Optional[Sequence[Optional[int]]], stated: Optional[Sequence[Any]],
                      options: Any) -> Optional[Dims]:
    """The input shape `resolve_preprocess` reads size and layout from: the model's dims, with a
    stated shape that keeps dims dynamic applied (a dynamic fit-height width gets a placeholder
    so the spec has a height; `spec_for_shape` then makes the width per image)."""
    parsed = parse_input_shape(stated) if stated is not None else None
    if dims is None or parsed is None or None not in parsed or len(parsed) != len(dims):
        return list(dims) if dims is not None else None
    merged = [want if want is not None else have for want, have in zip(parsed, dims)]
    if len(merged) == 4 and getattr(options, "resize", None) == "fit_height":
        from runtimes.spec import guess_layout

        layout = getattr(options, "layout", None) or guess_layout(merged) or "NCHW"
        ah, aw = spatial_axes(layout)
        if merged[ah] is not None and merged[aw] is None:
            merged[aw] = DEFAULT_MULTIPLE
    return merged


def dynamic_notes(name: str, shape: Sequence[Optional[int]], spec: Optional[PreprocessSpec],
                  sources: dict[str, str]) -> list[str]:
    """Report lines for the dims a conversion keeps dynamic (none for a static shape); `sources`
    (where each preprocessing field came from) gets the size's real origin."""
    axes = dynamic_axes(shape)
    if not axes:
        return []
    from runtimes.registry import RECORDS

    static = [r.name for r in RECORDS.values() if r.static_shapes]
    static += [f"{r.name} on {d}" for r in RECORDS.values() for d in r.static_devices]
    notes = [f"input {name} {show(shape)}: axis {', '.join(map(str, axes))} {'stay' if len(axes) > 1 else 'stays'} "
             "dynamic in the bundle "
             f"(onnxruntime and OpenVINO keep it; {', '.join(static)} need static shapes and are not built for it)"]
    if spec is not None and len(shape) == 4:
        notes += spec_for_shape(spec, shape)[1]
        sources["size"] = f"option --input-shape {show(shape)} (dynamic dims per image)"
    return notes
