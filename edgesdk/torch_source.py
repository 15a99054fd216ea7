"""PyTorch models named on the command line: a TorchScript file (.pt/.pth saved with
`torch.jit.save`), an ExportedProgram (.pt2, `torch.export.save`), or ``module:factory`` (a
function or class in an importable module that returns an `nn.Module`; the current directory
is importable). Each becomes (module, example input, name) for the ONNX export `convert` does.
"""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .errors import ConversionError

TORCH_SUFFIXES = (".pt", ".pth", ".pt2")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_torch_source(model: Any) -> bool:
    if not isinstance(model, (str, Path)):
        return False
    text = str(model)
    return Path(text).suffix.lower() in TORCH_SUFFIXES or (bool(_FACTORY.match(text)) and not Path(text).exists())


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConversionError("PyTorch input needs torch: pip install torch==2.13.0 (the CPU build)") from None
    return torch


def load_torch_source(model: str, example_shape: Optional[Sequence[int]]) -> tuple[Any, Any, str]:
    """(nn.Module, example tensor, bundle name) for a PyTorch file or ``module:factory``."""
    torch = _torch()
    text = str(model)
    if _FACTORY.match(text) and not Path(text).exists():
        module, name = _from_factory(text), text.split(":")[1]
    else:
        module, name = _from_file(torch, Path(text)), Path(text).stem
    example = None
    if example_shape is not None:
        example = torch.zeros(*[int(d) for d in example_shape])
    elif isinstance(module, tuple):  # an ExportedProgram brings its own example
        module, example = module
    if example is None:
        raise ConversionError(f"{text}: PyTorch input needs the input shape to trace with: pass --example-shape, "
                              "e.g. --example-shape 1,3,224,224")
    if isinstance(module, tuple):
        module = module[0]
    return module, example, _name(name)


def _from_factory(text: str) -> Any:
    mod_name, attr = text.split(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # `module:factory` names a module in the current directory too
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConversionError(f"{text}: cannot import module {mod_name!r} ({exc}); put it on PYTHONPATH") from None
    factory = getattr(mod, attr, None)
    if factory is None or not callable(factory):
        raise ConversionError(f"{text}: module {mod_name!r} has no callable {attr!r}")
    try:
        module = factory()
    except Exception as exc:  # the user's code: any failure is theirs to see, in one line
        raise ConversionError(f"{text}: calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(f"{text}: {attr}() returned {type(module).__name__}, not a torch.nn.Module")
    return module


def _from_file(torch: Any, path: Path) -> Any:
    if not path.is_file():
        raise ConversionError(f"model {str(path)!r} does not exist")
    if path.suffix.lower() == ".pt2":
        try:
            program = torch.export.load(str(path))
        except Exception as exc:
            raise ConversionError(f"{path.name} is not a torch.export ExportedProgram ({exc})") from exc
        example = program.example_inputs[0][0] if program.example_inputs and program.example_inputs[0] else None
        return _ProgramModule.wrap(torch, program.module()), example
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception:
        raise ConversionError(
            f"{path.name} is not a TorchScript file (a state dict or pickled module cannot be rebuilt without its "
            "code): save it with torch.jit.save(torch.jit.script(model), ...), or pass module:factory with "
            "--example-shape") from None


class _ProgramModule:
    """An ExportedProgram's module refuses .eval()/.train() (which the ONNX export calls): hold it
    unregistered inside a plain module so the exporter traces straight through it."""

    @staticmethod
    def wrap(torch: Any, graph_module: Any) -> Any:
        for param in graph_module.parameters():
            param.requires_grad_(False)  # traced as constants

        class Program(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                object.__setattr__(self, "_program", graph_module)  # not a child: eval() skips it

            def forward(self, *args: Any) -> Any:
                return self._program(*args)

        return Program()


def _name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_") or "model"
