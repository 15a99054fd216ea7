"""What a model file says about itself: ONNX ``metadata_props`` read into plain facts.

Exporters write these under different names; we read the common ones:

- ``edgesdk.preprocess``: a JSON object of `PreprocessSpec` fields (what `edgesdk convert` writes);
- ``mean``, ``std``, ``scale``, ``normalize``, ``color`` (or ``color_format``), ``layout``,
  ``resize``: single preprocessing facts ("0.5,0.5,0.5" or a JSON list);
- ``labels`` / ``names`` / ``classes``: class names (a JSON list, a JSON or Python dict of
  index -> name as Ultralytics writes, or one name per line);
- ``character``: a CTC recognizer's dictionary, one character per line (PaddleOCR exports);
- ``task``;
- Ultralytics exports (``author`` Ultralytics, or ``imgsz`` + ``stride`` + ``names``): ``task``
  (detect -> detection, classify -> classification; segment/pose/obb are kept as named, which
  convert refuses), ``imgsz`` (the input size for dynamic dims), ``stride``, ``names`` and the
  preprocessing Ultralytics' own predictor applies (see `ultralytics_facts`), recorded as coming
  from "ultralytics metadata".

Nothing here guesses: a key that is absent is absent.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Optional, Union

from .errors import ConfigError

PREPROCESS_KEYS = ("mean", "std", "scale", "normalize", "color", "color_format", "layout", "resize")
LABEL_KEYS = ("labels", "names", "classes")


def onnx_metadata(path: Union[str, Path]) -> dict[str, str]:
    """The raw ``metadata_props`` of an ONNX file ({} for other files or when onnx is missing)."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return {}
    try:
        import onnx
    except ImportError:
        return {}
    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def _floats(value: str) -> tuple[float, ...]:
    text = value.strip()
    items = json.loads(text) if text.startswith("[") else [v for v in text.replace(" ", ",").split(",") if v]
    return tuple(float(v) for v in items)


def parse_labels(value: str) -> list[str]:
    """Class names from a metadata value: JSON list, dict of index -> name, or one per line."""
    text = value.strip()
    if text[:1] in "[{":
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            obj = ast.literal_eval(text)  # Ultralytics writes str(dict): {0: 'person', ...}
        if isinstance(obj, dict):
            return [str(obj[k]) for k in sorted(obj, key=lambda k: int(k))]
        return [str(v) for v in obj]
    return text.splitlines()


def read_model_facts(path: Union[str, Path], props: Optional[dict[str, str]] = None) -> dict[str, Any]:
    """Preprocessing fields, labels, task and a CTC dictionary a model file carries.

    Returns {"preprocess": {field: value}, "labels": [...]?, "task": str?, "character": [...]?,
    "keys": [metadata keys used]}.
    """
    props = onnx_metadata(path) if props is None else props
    pre: dict[str, Any] = {}
    used: list[str] = []
    if "edgesdk.preprocess" in props:
        pre.update(json.loads(props["edgesdk.preprocess"]))
        used.append("edgesdk.preprocess")
    for key in PREPROCESS_KEYS:
        if key not in props:
            continue
        value = props[key]
        field = "color" if key == "color_format" else key
        if key in ("mean", "std"):
            pre[field] = _floats(value)
        elif key == "scale":
            pre[field] = float(value)
        else:
            pre[field] = value.strip().upper() if key in ("color", "color_format", "layout") else value.strip()
        used.append(key)
    facts: dict[str, Any] = {"preprocess": pre, "keys": used}
    for key in LABEL_KEYS:
        if key in props:
            try:
                facts["labels"] = parse_labels(props[key])
            except (ValueError, SyntaxError, TypeError, KeyError):
                raise ConfigError(f"the model's metadata {key!r} is not a list or an index -> name dict of class "
                                  f"names ({props[key][:60]!r}); fix the model's metadata_props") from None
            used.append(key)
            break
    if "character" in props:
        facts["character"] = props["character"].splitlines()
        used.append("character")
    if "task" in props:
        facts["task"] = props["task"].strip()
        used.append("task")
    if is_ultralytics(props):
        _merge_ultralytics(facts, ultralytics_facts(props), props)
    return facts


#: Ultralytics task names -> ours; the others (segment, pose, obb) have no decoder here yet
ULTRALYTICS_TASKS = {"detect": "detection", "classify": "classification"}
#: what Ultralytics' predictor feeds every model: RGB, x/255, no mean/std; detect/segment/pose/obb
#: letterbox the image centered with gray 114 (ultralytics.data.augment.LetterBox), classify
#: resizes the short side and center-crops (classify_transforms, crop_fraction 1.0)
ULTRALYTICS_PREPROCESS = {"color": "RGB", "scale": 1.0 / 255.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
ULTRALYTICS_ORIGIN = "ultralytics metadata"


def is_ultralytics(props: dict[str, str]) -> bool:
    """An Ultralytics export: its author says so, or it carries the keys only its exporter writes."""
    return props.get("author", "").strip().lower() == "ultralytics" or {"imgsz", "stride", "names"} <= set(props)


def _size(value: str) -> Optional[tuple[int, int]]:
    obj = ast.literal_eval(value.strip())  # "[320, 320]" or "640": literals only, never eval
    if isinstance(obj, int):
        return obj, obj
    if isinstance(obj, (list, tuple)) and len(obj) == 2 and all(isinstance(v, int) for v in obj):
        return int(obj[0]), int(obj[1])
    return None


def ultralytics_facts(props: dict[str, str]) -> dict[str, Any]:
    """Task, input size, stride and preprocessing of an Ultralytics export."""
    task = props.get("task", "detect").strip()
    pre: dict[str, Any] = dict(ULTRALYTICS_PREPROCESS)
    if task == "classify":
        pre.update(resize="crop", crop_ratio=1.0)
    else:
        pre.update(resize="letterbox", pad_value=114)
    out: dict[str, Any] = {"task": ULTRALYTICS_TASKS.get(task, task), "ultralytics_task": task, "preprocess": pre}
    try:
        size = _size(props["imgsz"]) if "imgsz" in props else None
    except (ValueError, SyntaxError):
        size = None
    if size is not None:
        pre["size"] = size
    if props.get("stride", "").strip().isdigit():
        out["stride"] = int(props["stride"])
    if props.get("version"):
        out["ultralytics_version"] = props["version"].strip()
    return out


def _merge_ultralytics(facts: dict[str, Any], ultra: dict[str, Any], props: dict[str, str]) -> None:
    """Ultralytics facts under what the model states explicitly (edgesdk.preprocess, mean, ...)."""
    facts["preprocess"] = {**ultra.pop("preprocess"), **facts["preprocess"]}
    facts["preprocess_origin"] = ULTRALYTICS_ORIGIN
    facts.update(ultra)
    facts["keys"].extend(k for k in ("imgsz", "stride", "author", "version") if k in props)
