"""PyTorch module -> ONNX, and channel pruning with a fine-tuning hook for torch users.

torch is optional: install the CPU build with `pip install torch==2.13.0` (a plain
`pip install torch` pulls a multi-GB CUDA build). Export uses the TorchScript exporter
(`torch.onnx.export(..., dynamo=False)`), which needs no extra packages.

`prune_and_export` is the fine-tuning hook: it plans the channel pruning on the exported
graph (dependency-aware, see converters.pruning), masks the pruned channels inside the torch
module so that the module computes exactly what the pruned network will, calls your
`fine_tune(module)` to recover accuracy under those masks, then exports again and removes the
channels for real. The masks live on the *consumer* convolutions (their input channels), which
is what removing a channel means, so BatchNorm shifts and residual ties are respected.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from .errors import ConversionError

TORCH_HINT = ("PyTorch is not installed; install the CPU build with `pip install torch==2.13.0` "
              "(never a plain `pip install torch`: it pulls a multi-GB CUDA build)")


def _torch():
    try:
        import torch
    except ImportError as e:
        raise ConversionError(TORCH_HINT) from e
    return torch


def _as_tuple(example_input: Any) -> tuple:
    return tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)


def export(module, example_input, path: Union[str, os.PathLike], opset: int = 17, dynamic_batch: bool = True,
           input_names: Optional[Sequence[str]] = None, output_names: Optional[Sequence[str]] = None) -> Path:
    """Export `module` (evaluated in eval mode) to ONNX at `path`, atomically.

    example_input: a tensor or a tuple of tensors with the shapes to trace.
    dynamic_batch: make axis 0 of every input and output dynamic ("N").
    input_names / output_names: default "input" / "output" (numbered when there are several).
    """
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(module).__name__}")
    args = _as_tuple(example_input)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise ConversionError("example_input must be a torch.Tensor or a tuple of tensors")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ins = list(input_names) if input_names else (["input"] if len(args) == 1 else [f"input{i}" for i in range(len(args))])
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            outs = module(*args)
        n_out = len(outs) if isinstance(outs, (tuple, list)) else 1
        outs_names = list(output_names) if output_names else (["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)])
        dyn = {n: {0: "N"} for n in ins + outs_names} if dynamic_batch else None
        fd, tmp = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
        os.close(fd)
        try:
            with torch.no_grad():
                torch.onnx.export(module, args, tmp, opset_version=int(opset), dynamo=False, input_names=ins,
                                  output_names=outs_names, dynamic_axes=dyn, do_constant_folding=True)
            import onnx

            onnx.checker.check_model(onnx.load(tmp))
            os.replace(tmp, path)
        except ConversionError:
            raise
        except Exception as e:  # the exporter raises many kinds (tracing, unsupported op, checker)
            raise ConversionError(f"exporting {type(module).__name__} to ONNX (opset {opset}) failed: {e}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    finally:
        module.train(was_training)
    return path


def _match_modules(torch, module, masks) -> list[tuple[Any, Any]]:
    """Pair each ONNX consumer mask with the torch conv whose weight it is (up to the per-output-
    channel scale that BatchNorm folding applies). Raises if one cannot be found."""
    convs = [m for m in module.modules()
             if isinstance(m, (torch.nn.modules.conv._ConvNd,))]
    used: set[int] = set()
    pairs = []
    for cm in masks:
        best, best_score = None, 0.0
        for m in convs:
            if id(m) in used:
                continue
            w = m.weight.detach().cpu().numpy().astype(np.float64)
            if tuple(w.shape) != tuple(cm.weight.shape):
                continue
            out_axis = 1 if isinstance(m, torch.nn.modules.conv._ConvTransposeNd) else 0
            a = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
            b = np.moveaxis(cm.weight.astype(np.float64), out_axis, 0).reshape(w.shape[out_axis], -1)
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            ok = (na > 0) & (nb > 0)
            if not ok.any():
                continue
            cos = np.abs((a[ok] * b[ok]).sum(axis=1) / (na[ok] * nb[ok]))
            score = float(cos.min())
            if score > best_score:
                best, best_score = m, score
        if best is None or best_score < 0.999:
            raise ConversionError(f"cannot find the torch layer behind ONNX node {cm.node} to mask it for fine-tuning; "
                                  f"prune without fine_tune or exclude that layer")
        used.add(id(best))
        pairs.append((cm, best))
    return pairs


def prune_and_export(module, example_input, path: Union[str, os.PathLike], ratio: float = 0.3,
                     criterion: str = "l1", fine_tune: Optional[Callable[[Any], Any]] = None,
                     opset: int = 17, dynamic_batch: bool = True, **prune_kw):
    """Channel-prune a torch module, optionally fine-tune it under the pruning masks, export the
    pruned network to ONNX at `path`. Returns (path, PruneReport).

    fine_tune(module) -> module | None: your training loop. It is called with the module whose
        pruned channels are masked (torch.nn.utils.prune reparametrization: gradients flow only to
        the kept weights), so whatever it learns carries over exactly to the pruned ONNX model.
        Without it, the pruned model is exported as is (expect an accuracy drop).
    prune_kw: passed to converters.pruning.channel_prune (min_channels, multiple_of, exclude, calib).
    """
    import onnx

    from .pruning import channel_prune, consumer_masks

    torch = _torch()
    args = _as_tuple(example_input)
    shapes = {("input" if len(args) == 1 else f"input{i}"): list(a.shape) for i, a in enumerate(args)}
    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        first = export(module, example_input, Path(tmp) / "full.onnx", opset=opset, dynamic_batch=dynamic_batch)
        full = onnx.load(str(first))
        pruned, report = channel_prune(full, ratio, criterion=criterion, input_shapes=shapes, **prune_kw)
        if fine_tune is not None and report.plan:
            from torch.nn.utils import prune as tprune

            pairs = _match_modules(torch, module, consumer_masks(full, report.plan, input_shapes=shapes))
            for cm, m in pairs:
                mask = torch.ones_like(m.weight)
                idx = [slice(None)] * mask.dim()
                idx[cm.axis] = torch.as_tensor(cm.removed, dtype=torch.long)
                mask[tuple(idx)] = 0
                if tprune.is_pruned(m):
                    raise ConversionError(f"{type(m).__name__} already carries torch pruning masks; remove them first")
                tprune.custom_from_mask(m, "weight", mask)
            try:
                tuned = fine_tune(module)
            finally:
                for _, m in pairs:
                    if tprune.is_pruned(m):
                        tprune.remove(m, "weight")  # make the masked weights permanent
            if tuned is not None:
                module = tuned
            again = export(module, example_input, Path(tmp) / "tuned.onnx", opset=opset, dynamic_batch=dynamic_batch)
            tuned_onnx = onnx.load(str(again))
            kw = {k: v for k, v in prune_kw.items() if k != "calib"}  # the plan fixes the channels
            pruned, report = channel_prune(tuned_onnx, ratio, criterion=criterion, input_shapes=shapes,
                                           plan=report.plan, **kw)
            report.notes.append(f"Fine-tuned under the pruning masks by {getattr(fine_tune, '__name__', 'fine_tune')}; "
                                "the exported pruned model computes what the masked module computed.")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_out = tempfile.mkstemp(suffix=".onnx.tmp", dir=path.parent)
        os.close(fd)
        try:
            onnx.save(pruned, tmp_out)
            os.replace(tmp_out, path)
        finally:
            if os.path.exists(tmp_out):
                os.unlink(tmp_out)
    return path, report
