"""`backend="auto"`: the first installed backend that loads the model, then an opset conversion.

Order: every installed backend that takes the file's suffix, the suffix's own first
(onnxruntime for .onnx); then, for an ONNX model one of them refused over an operator or
opset, the model converted with onnx.version_converter (imported lazily; onnx is not on
devices) to a few nearby opsets, on each backend again. Each fallback is logged once per
model and process. The converted model is written next to nothing of the user's: into the
temp folder, named by the source's hash, through a temp file and rename.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from .base import Runtime, warn_once
from .errors import BackendUnavailableError, ModelLoadError

#: how far from the model's own opset a conversion goes, nearest first
OPSET_STEPS = (-1, +1, -2, +2, -4, +4)
#: the lowest opset tried: older ones lack the ops today's exporters write
MIN_OPSET = 7


def load_auto(path: Path, **kwargs: Any) -> Runtime:
    """An *activated* runtime for `path` on the first backend that loads it (see the module doc)."""
    from .registry import SUFFIX_BACKEND, available_backends, backend_class

    suffix = path.suffix.lower()
    names = [n for n in available_backends() if suffix in backend_class(n).suffixes]
    names.sort(key=lambda n: n != SUFFIX_BACKEND.get(suffix))
    if not names:
        raise BackendUnavailableError(
            f"no installed backend runs {suffix or 'suffix-less'} files ({path.name}); "
            "install one: pip install onnxruntime, 'edgesdk[openvino]' or 'edgesdk[litert]'")
    failures: list[str] = []
    refused: list[dict[str, str]] = []
    for name in names:
        runtime = _try(backend_class(name), path, kwargs, failures, refused, name)
        if runtime is not None:
            _say_fallback(path, names[0], name, failures)
            return runtime
    if suffix == ".onnx" and any("operator" in r or "opset" in r for r in refused):
        for target, converted in _opset_conversions(path, failures):
            for name in names:
                runtime = _try(backend_class(name), converted, kwargs, failures, [], f"{name} at opset {target}")
                if runtime is not None:
                    _say_fallback(path, names[0], f"{name}, after converting it to opset {target}", failures)
                    runtime.converted_from = path  # type: ignore[attr-defined]
                    return runtime
    raise ModelLoadError(
        f"no installed backend loads {path.name} ({', '.join(names)} tried"
        + (", and opset conversions" if suffix == ".onnx" else "") + "). "
        + " | ".join(failures))


def _try(cls: type, path: Path, kwargs: dict, failures: list, refused: list, label: str) -> Optional[Runtime]:
    try:
        runtime = cls(path, **kwargs)
    except ModelLoadError:
        raise  # the file itself is missing: no backend will do better
    try:
        return runtime.activate()
    except (ModelLoadError, BackendUnavailableError) as exc:
        failures.append(f"{label}: {exc}")
        refused.append(getattr(exc, "refused", {}))
        return None


def _say_fallback(path: Path, first: str, used: str, failures: list[str]) -> None:
    if failures:
        reason = failures[0].split(": ", 1)[-1].split(". What to do")[0]  # less the "label: "
        warn_once(f"{path.name}: {reason[:300]}; running it on {used} instead (backend='auto')")


def _opset_conversions(path: Path, failures: list[str]) -> Iterator[tuple[int, Path]]:
    """(opset, converted model file) for the opsets near the model's own that convert."""
    try:
        import onnx
        from onnx import version_converter
    except ImportError:
        failures.append("opset conversion: needs the onnx package (pip install onnx)")
        return
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx's DecodeError and friends: the engines said it already
        failures.append(f"opset conversion: onnx cannot parse the file ({type(exc).__name__})")
        return
    own = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if own is None:
        return
    newest = onnx.defs.onnx_opset_version()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    for target in (own + step for step in OPSET_STEPS):
        if not MIN_OPSET <= target <= newest:
            continue
        try:
            converted = version_converter.convert_version(model, target)
        except Exception as exc:  # the converter has no adapter for some op at that step
            failures.append(f"conversion to opset {target}: {' '.join(str(exc).split())[:120]}")
            continue
        yield target, _write_converted(converted, f"{path.stem}-{digest}-opset{target}.onnx")


def _write_converted(model: Any, name: str) -> Path:
    import onnx

    folder = Path(tempfile.gettempdir()) / "edgesdk-opset-converted"
    folder.mkdir(exist_ok=True)
    target = folder / name
    if not target.is_file():
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(fd)
        onnx.save(model, tmp)
        os.replace(tmp, target)
    return target
