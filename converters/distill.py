"""Label-free knowledge distillation: train a compressed student back towards its fp32 teacher.

The teacher is the original model, the student its pruned (converters.pruning) or low-rank
(converters.lowrank) version, or a smaller `torch.nn.Module` of the user's choosing. No labels:
the loss is the distance between the student's and the teacher's outputs on augmented real
inputs (random crops, horizontal flips, colour jitter, so a small folder is enough), plus feature
matching on intermediate tensors both graphs name alike and shape alike (pruning keeps node names;
channel counts that changed are skipped). Training runs on the CPU for a time budget, shows progress
and ETA, stops early when the held-out cosine to the teacher stops improving, and checkpoints at
every evaluation so Ctrl-C or a kill keeps the best weights and `resume=True` continues.

ONNX models become torch modules with onnx2torch; the trained student goes back to ONNX with
torch.onnx.export(dynamo=False) under the original input/output names.
"""
from __future__ import annotations

import math
import os
import signal
import sys
import time
import types
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from .compare import INFORMATIVE_NORM, cosine
from .distill_augment import describe as describe_augmentation
from .errors import ConversionError
from .torch_threads import thread_note

Progress = Callable[[str], None]
MIN_TRAIN_IMAGES = 4      # below this even heavy augmentation only memorises a few frames
MIN_VAL_IMAGES = 1


class DistillError(ConversionError):
    """Distillation cannot run (unsupported operator, too little data, bad checkpoint)."""


class DistillInterrupted(DistillError):
    """Ctrl-C / SIGTERM during training; the best weights so far are in the checkpoint."""


@dataclass
class DistillConfig:
    minutes: float = 10.0           # training time budget (evaluation included)
    batch: int = 4
    lr: float = 1e-3                # Adam peak, reached after `warmup`, then cosine-decayed over the time budget
    warmup_steps: int = 30          # linear learning-rate ramp: Adam's first steps are noisy (counted in steps,
                                    # not time: a loaded box runs fewer steps per second)
    eval_every_s: float = 20.0      # held-out evaluation + checkpoint interval
    patience: int = 8               # evaluations without improvement before stopping
    target: float = 0.9995          # stop as soon as the held-out cosine reaches this
    feature_weight: float = 0.5     # weight of intermediate feature matching vs the output loss
    max_features: int = 12          # intermediate tensors matched at most (evenly spaced in the graph)
    recalibrate_bn: bool = True     # re-estimate the student's BatchNorm statistics first (pruning shifts them);
                                    # False keeps the file's (QAT: its INT8 ranges were calibrated on them)
    crop_scale: tuple[float, float] = (0.6, 1.0)
    train_size: Optional[int] = None  # train on crops of this many pixels (fully convolutional models)
    auto_train_size: Optional[int] = None  # without train_size: train on views of this many pixels when the
                                    # input is at least 1.5x as large and both models run at that size (views_fit)
    jitter: float = 0.2             # brightness/contrast/per-channel gain amplitude
    flip: bool = True
    rotate: float = 0.0             # max rotation in degrees (converters.distill_augment)
    perspective: float = 0.0        # max corner shift, share of the side
    mosaic: float = 0.0             # probability of a 2x2 mosaic of four images
    grayscale: float = 0.0          # probability of a grayscale input
    degrade: float = 0.0            # probability of each of blur, noise, JPEG
    ema: float = 0.0                # decay of an exponential moving average of the weights (0: off); the
                                    # average is what is evaluated, kept and exported
    checkpoint: Optional[Path] = None
    resume: bool = False
    seed: int = 0
    threads: Optional[int] = None
    adapt_threads: bool = True      # time steps on 1 thread against `threads` now and then and train on the faster:
                                    # on a busy 2-core box 2 threads ran a step 5x slower than 1 (OpenMP waits)
    max_steps: Optional[int] = None  # also stop after this many steps; the decay then runs over steps, not
                                     # time, so a run is repeatable on a busy machine (tests, comparisons)


#: The recipe for a compressed student (pruned, factorized), chosen by A/B runs of
#: bench/compress.py on the pruned PP-OCRv4 detector (issue 14; numbers in README.md): what
#: `edgesdk convert --prune/--lowrank --distill` and the bench use. Fields not named keep
#: DistillConfig's defaults; recipe_config(**overrides) changes any of them.
RECIPE: dict[str, Any] = dict(
    lr=3e-4, ema=0.995, crop_scale=(0.5, 2.0), rotate=10.0, perspective=0.08, mosaic=0.5, degrade=0.3,
    grayscale=0.1, eval_every_s=60.0, patience=6, auto_train_size=384, batch=2)


#: Changes to RECIPE for a model's task (edgesdk.presets.Preset.task / ModelFacts.task). A text
#: recognizer reads one upright line, left to right: a mirrored line is no text, a 2x2 mosaic puts
#: two half-height lines in one input, and a zoom of 2 or a 10-degree turn cuts the characters it
#: must read; its views stay close to the whole line (the teacher still labels every view).
#: Its factorized student (activation-aware SVD) starts close to the teacher, and training at the
#: detector's lr only lost that: PP-OCRv4 rec at energy 0.9, 5 min, 48 held-out lines of other
#: sources, start 0.9656-0.9686: at lr 3e-4 and 1e-4 training never beat the start (early stopping
#: kept it, or it fell to 0.955-0.959), also without feature matching and BatchNorm re-estimation;
#: at lr 3e-5 without BatchNorm re-estimation (on 160 augmented lines it moves statistics the
#: factors hardly shifted) 0.9702, its early-stopping set 0.9688 -> 0.9773 (bench/compress.py,
#: one run each, load about 1).
TASK_RECIPE: dict[str, dict[str, Any]] = {
    "text_recognition": dict(flip=False, mosaic=0.0, rotate=2.0, perspective=0.03, crop_scale=(0.95, 1.15),
                             lr=3e-5, recalibrate_bn=False),
}


def recipe_config(task: Optional[str] = None, **overrides: Any) -> DistillConfig:
    """DistillConfig of `RECIPE`, changed for `task` (TASK_RECIPE), with `overrides` (minutes, checkpoint,
    train_size, ...)."""
    return DistillConfig(**{**RECIPE, **TASK_RECIPE.get(task or "", {}), **overrides})


def describe_recipe(cfg: DistillConfig) -> str:
    """One line: learning rate, weight averaging, augmentation, feature matching, training size."""
    return (f"Adam lr {cfg.lr:g} (warm-up {cfg.warmup_steps} steps, cosine decay), "
            + (f"weight average (EMA {cfg.ema:g}), " if cfg.ema else "no weight average, ")
            + f"feature weight {cfg.feature_weight:g}, augmentation: {describe_augmentation(cfg)}"
            + (f", {cfg.train_size}-pixel training views" if cfg.train_size else ""))


@dataclass
class DistillReport:
    student: str
    trained_on: str
    train_images: int
    val_images: int
    augmentation: str
    features_matched: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)   # seconds, step, loss, cosine
    start_cosine: float = float("nan")
    best_cosine: float = float("nan")
    seconds: float = 0.0
    steps: int = 0
    stopped: str = ""
    resumed: bool = False
    checkpoint: Optional[str] = None
    threads: str = ""       # step times per torch thread count measured, and the count trained on

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = ["## Distillation (label-free)", "",
                 f"- student: {self.student}",
                 f"- trained on: {self.trained_on} ({self.train_images} images, augmented: {self.augmentation})",
                 f"- early stop on {self.val_images} images held out of training (cosine to the teacher)",
                 f"- features matched: {len(self.features_matched)}"
                 + (f" ({', '.join(self.features_matched[:6])}{', ...' if len(self.features_matched) > 6 else ''})"
                    if self.features_matched else ""),
                 f"- held-out cosine {self.start_cosine:.4f} -> {self.best_cosine:.4f} in {self.steps} steps, "
                 f"{self.seconds / 60:.1f} min{' (resumed)' if self.resumed else ''}; stopped: {self.stopped}"]
        if self.threads:
            lines.append(f"- threads (measured, the faster kept): {self.threads}")
        if self.checkpoint:
            lines.append(f"- checkpoint: `{self.checkpoint}` (resume continues from it)")
        return "\n".join(lines) + "\n"

    def plot(self, path: Union[str, Path]) -> bool:
        """Held-out cosine against training time as a PNG; False when matplotlib is missing."""
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return False
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([h["seconds"] / 60 for h in self.history], [h["cosine"] for h in self.history], marker=".")
        ax.set_xlabel("training time (min)")
        ax.set_ylabel("held-out cosine to teacher")
        ax.set_title(f"distillation: {self.student}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        tmp = Path(str(path) + ".tmp.png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        return True


# ------------------------------------------------------------------ ONNX <-> torch

def import_onnx2torch():
    """onnx2torch imports torchvision at module level, only for its NMS/RoiAlign converters.
    Where torchvision is missing or broken (the PyPI wheel is a CUDA build that fails to load
    with the CPU torch), a stand-in raising a clear error is used during the import only."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")

        def missing(*_a, **_k):
            raise DistillError("this model needs torchvision (NonMaxSuppression/RoiAlign) for onnx2torch; "
                               "install a torchvision build matching torch, or use the PyTorch path")
        ops.nms = ops.box_convert = ops.roi_align = missing
        stub.ops = ops
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
        try:
            import onnx2torch
        finally:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
        return _quiet(onnx2torch)
    import onnx2torch
    return _quiet(onnx2torch)


def _quiet(onnx2torch):
    """onnx2torch's converters warn at every forward pass (Slice indexing, deprecated in torch 2.9) and
    the ONNX export repeats tracer warnings: pages of noise in a convert log, about its code, not the user's."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"onnx2torch(\.|$)")
    return onnx2torch


def load_model(model: Any) -> Any:
    """An ONNX path loaded, or the ModelProto itself."""
    import onnx

    return onnx.load(str(model)) if isinstance(model, (str, os.PathLike)) else model


def unsupported_ops(model: Any) -> list[str]:
    """Operators of `model` onnx2torch has no converter for ("Op (opset N)")."""
    o2t = import_onnx2torch()
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription

    model = load_model(model)
    versions = {o.domain or "": o.version for o in model.opset_import}
    missing = []
    for node in model.graph.node:
        domain = node.domain or ""
        known = any(OperationDescription(domain=domain, operation_type=node.op_type, version=v) in _CONVERTER_REGISTRY
                    for v in range(1, versions.get(domain, 1) + 1))
        if not known and f"{node.op_type} (opset {versions.get(domain)})" not in missing:
            missing.append(f"{node.op_type} (opset {versions.get(domain)})")
    del o2t
    return missing


def constants_as_initializers(model: Any) -> Any:
    """Constant-node weights (exporters like Paddle's write them) as initializers: onnx2torch
    reads Conv/Gemm weights from initializers only."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = []
    for node in out.graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is not None and attr.name == "value" and not node.domain:
            t = onnx.TensorProto()
            t.CopyFrom(attr.t)
            t.name = node.output[0]
            out.graph.initializer.append(t)
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def onnx_to_torch(model: Any, what: str = "model"):
    """ONNX -> torch.nn.Module (onnx2torch), with every float initializer trainable."""
    import onnx
    import torch

    model = constants_as_initializers(load_model(model))
    missing = unsupported_ops(model)
    if missing:
        raise DistillError(
            f"onnx2torch cannot convert the {what}: no converter for {', '.join(missing)}. Distill on the "
            "PyTorch path instead: converters.distill.distill(teacher, student=your_nn_Module, ...) with the "
            "original torch model, or compress a model without these operators")
    o2t = import_onnx2torch()
    try:  # some converters (BatchNormalization) need the input's rank, which graphs often omit
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # an inference failure only loses that hint; conversion says what is wrong
        pass
    try:
        module = o2t.convert(model)
    except Exception as e:  # onnx2torch's own errors name the node; keep them readable
        raise DistillError(f"onnx2torch could not convert the {what}: {type(e).__name__}: {e}. Use the PyTorch "
                           "path (student=nn.Module) instead") from None
    for sub in module.modules():
        for name, buf in list(sub.named_buffers(recurse=False)):
            if buf.is_floating_point() and buf.ndim >= 1 and not name.startswith(("running_", "num_batches")):
                delattr(sub, name)
                sub.register_parameter(name, torch.nn.Parameter(buf.clone()))
    return module.eval()


def _with_outputs(model, names: Sequence[str], shapes: dict[str, list[int]]):
    import onnx
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    for n in names:
        out.graph.output.append(helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, shapes[n]))
    return out


SHAPE_ONLY_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")


def output_logits(model) -> list[list[str]]:
    """For each graph output computed by a Sigmoid/Softmax, possibly followed by shape-only ops
    (exporters and opset conversion put Flatten/Reshape around a Softmax on a non-last axis): its
    logits, as the chain of tensors holding them, earliest layout first (Softmax input last)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    chains = []
    for out in model.graph.output:
        node = producer.get(out.name)
        while node is not None and node.op_type in SHAPE_ONLY_OPS:
            node = producer.get(node.input[0])
        if node is None or node.op_type not in ("Sigmoid", "Softmax"):
            continue
        chain = [node.input[0]]
        before = producer.get(chain[0])
        while before is not None and before.op_type in SHAPE_ONLY_OPS:
            chain.insert(0, before.input[0])
            before = producer.get(chain[0])
        chains.append(chain)
    return chains


def output_views(model) -> set[str]:
    """Graph outputs and the tensors they are reshaped from (matching those repeats the output loss)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    views = set()
    for out in model.graph.output:
        name = out.name
        views.add(name)
        while name in producer and producer[name].op_type in SHAPE_ONLY_OPS:
            name = producer[name].input[0]
            views.add(name)
    return views


def input_dependent(model) -> set[str]:
    """Tensors that change with the graph inputs (a detector's anchor grids and strides do not:
    matching them teaches nothing)."""
    inits = {t.name for t in model.graph.initializer}
    live = {i.name for i in model.graph.input if i.name not in inits}
    for node in model.graph.node:  # ONNX nodes are in topological order
        if any(i in live for i in node.input):
            live.update(node.output)
    return live


def matching_features(teacher, student, input_shapes: dict[str, list[int]], limit: int = 12) -> list[str]:
    """Intermediate tensors that depend on the input, with the same name and shape in both graphs, evenly
    spaced, deepest last."""
    from .flops import infer_shapes

    ts, ss = infer_shapes(teacher, input_shapes), infer_shapes(student, input_shapes)
    graph_out = output_views(teacher)
    # onnx2torch returns all outputs of a multi-output node (Split, TopK) as one tuple wherever one is
    # asked for: only single-output nodes' tensors can be matched
    student_made = {n.output[0] for n in student.graph.node if len(n.output) == 1}
    live = input_dependent(teacher)
    single = [n.output[0] for n in teacher.graph.node if len(n.output) == 1 and n.output[0] in live]
    names = [o for o in single if o in student_made and o not in graph_out and ts.get(o) and ts.get(o) == ss.get(o)
             and len(ts[o]) >= 2]
    # a saturated Sigmoid/Softmax output has almost no gradient: always match its logits too
    logits = [next(t for t in chain if t in names) for chain in output_logits(student)
              if any(t in names for t in chain)]
    rest = [n for n in names if n not in logits]
    if len(rest) > limit:
        rest = [rest[int(i)] for i in np.linspace(0, len(rest) - 1, limit).round()]
    return logits + rest


def pruned_features(teacher, student, plan: dict[str, Sequence[int]], limit: int = 12) -> dict[str, list[int]]:
    """Outputs of pruned convolutions (`plan`: producer node -> kept channels, PruneReport.plan)
    named alike in both graphs -> the teacher channels the student's channels descend from.

    Matching these keeps each surviving channel close to what it computed before pruning,
    the strongest signal a pruned student has; evenly spaced, at most `limit`."""
    made = {o for n in teacher.graph.node for o in n.output}
    pairs = {}   # by output tensor: the student's node names may be ones prepare() gave it
    for node in student.graph.node:
        if node.name in plan and node.output and node.output[0] in made:
            pairs[node.output[0]] = sorted(int(i) for i in plan[node.name])
    names = list(pairs)
    if len(names) > limit:
        names = [names[int(i)] for i in np.linspace(0, len(names) - 1, limit).round()]
    return {n: pairs[n] for n in names}


def _teacher_channels(module, n_out: int, channels: Sequence[Optional[Sequence[int]]]):
    """Wrap a teacher returning outputs + features: feature k keeps only channels[k] (None: all)."""
    import torch

    index = [None if c is None else torch.as_tensor(list(c), dtype=torch.long) for c in channels]

    class _Select(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            outs = _as_list(self.inner(x))
            feats = [o if i is None else o.index_select(1, i) for o, i in zip(outs[n_out:], index)]
            return tuple(outs[:n_out] + feats)

    return _Select(module)


def export_onnx(module, example: np.ndarray, path: Union[str, Path], input_name: str,
                output_names: Sequence[str], opset: int = 17, dynamic_batch: bool = False):
    """Write `module`'s first len(output_names) outputs to ONNX (temp file + rename); returns the proto."""
    import onnx
    import torch

    class _Head(torch.nn.Module):
        def __init__(self, inner, n):
            super().__init__()
            self.inner, self.n = inner, n

        def forward(self, x):
            return tuple(_as_list(self.inner(x))[: self.n])

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(_Head(module, len(output_names)).eval(), (torch.from_numpy(example[:1]),), str(tmp),
                          input_names=[input_name], output_names=list(output_names), opset_version=opset,
                          dynamo=False, dynamic_axes={n: {0: "N"} for n in [input_name, *output_names]}
                          if dynamic_batch else None)
    os.replace(tmp, path)
    return onnx.load(str(path))


def per_sample(module: Any) -> Any:
    """A module for a graph baked to batch 1 (Reshape to [1, ...]): runs a batch one sample at a time."""
    import torch

    class _PerSample(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            outs = [_as_list(self.inner(x[i:i + 1])) for i in range(x.shape[0])]
            return tuple(torch.cat([o[k] for o in outs]) for k in range(len(outs[0])))

    return _PerSample(module)


def _as_list(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


# ------------------------------------------------------------------ training pieces

def _crop_box(h: int, w: int, gen, cfg: DistillConfig) -> tuple[int, int, int, int, tuple[int, int]]:
    """(top, left, crop h, crop w, output size) of one random crop.

    Without `train_size` a crop of `crop_scale` of the sample, resized back to the full size.
    With it, a region about train_size pixels wide (zoomed by `crop_scale`, so objects keep
    roughly the scale they have at run time) resized to train_size: fully convolutional
    models train on cheap small inputs and are evaluated at the full size."""
    import torch

    s = float(torch.empty(1).uniform_(*cfg.crop_scale, generator=gen))
    if cfg.train_size:
        out = (min(h, cfg.train_size), min(w, cfg.train_size))
        ch, cw = min(h, max(2, int(out[0] / s))), min(w, max(2, int(out[1] / s)))
    else:
        out = (h, w)
        ch, cw = max(2, int(h * s)), max(2, int(w * s))
    top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    return top, left, ch, cw, out


def augment(x, gen, cfg: DistillConfig, pool=None):
    """Random resized crop (or, with rotate/perspective/mosaic, a random view or a mosaic of
    `pool` images), horizontal flip, colour jitter and degradations of an NCHW float batch
    (converters.distill_augment).

    Works in the model's normalised input space (brightness/contrast relative to each sample's
    own mean/std), so it needs no knowledge of the preprocessing."""
    from . import distill_augment as aug

    if aug.uses_views(cfg):
        return aug.views(x, gen, cfg, pool)
    return aug.colour(aug.degrade_batch(_crops(x, gen, cfg), gen, cfg), gen, cfg)


def _pool_for(cfg: DistillConfig, train: np.ndarray) -> Optional[list]:
    """The training images as HWC arrays, converted once, when mosaics draw from all of them."""
    from . import distill_augment as aug

    return aug.hwc_pool(train) if cfg.mosaic else None


def _crops(x, gen, cfg: DistillConfig):
    """Random resized crops and horizontal flips of an NCHW batch."""
    import torch
    import torch.nn.functional as F

    n, c, h, w = x.shape
    out = []
    for i in range(n):
        top, left, ch, cw, size = _crop_box(h, w, gen, cfg)
        xi = x[i:i + 1, :, top:top + ch, left:left + cw]
        xi = F.interpolate(xi, size=size, mode="bilinear", align_corners=False) if (ch, cw) != size else xi
        if cfg.flip and float(torch.rand(1, generator=gen)) < 0.5:
            xi = xi.flip(-1)
        out.append(xi)
    return torch.cat(out)


def _distance(s, t):
    """MSE normalised by the teacher's variance over the whole batch, plus (1 - cosine) over the
    batch: a crop where the teacher's output is ~constant (no text in a text detector's crop)
    cannot blow the loss up the way a per-sample normalisation does."""
    import torch

    s, t = s.flatten(1).float(), t.flatten(1).float()
    mse = ((s - t) ** 2).mean() / (t.var() + 1e-6)
    cos = torch.nn.functional.cosine_similarity(s.flatten(), t.flatten(), dim=0, eps=1e-8)
    return mse + (1 - cos)


def _output_distance(s, t):
    """`_distance`; where the teacher's output is a Softmax over its last axis, `_distribution_distance`;
    a detection head's raw output (score_channels): its scores as probabilities, plus each other
    channel's squared error over that channel's variance;
    where it is another probability map (values in [0, 1], e.g. a
    text detector's sigmoid map that boxes are thresholded from) binary cross-entropy plus plain
    MSE instead: the range is fixed, so no normalisation is needed (a batch of crops without
    text has a ~0 map of ~0 variance), and errors near the threshold weigh more than saturated
    background."""
    import torch

    if _is_distribution(t):
        return _distribution_distance(s, t)
    if t.numel() > 1 and t.dim() >= 3 and float(t.min()) >= 0.0 and float(t.max()) <= 1.0:
        return _probability_distance(s, t)
    split = score_channels(t)
    if split is not None:
        axis, scores = split
        s, t = s.movedim(axis, -1).float(), t.movedim(axis, -1).float()
        rest_s, rest_t = s[..., ~scores], t[..., ~scores]
        per_channel = ((rest_s - rest_t) ** 2).mean(dim=(0, 1)) / (rest_t.var(dim=(0, 1)) + 1e-6)
        return _probability_distance(s[..., scores], t[..., scores]) + per_channel.mean()
    return _distance(s, t)


def _probability_distance(s, t):
    import torch

    s, t = s.float(), t.float()
    return torch.nn.functional.binary_cross_entropy(s.clamp(1e-6, 1 - 1e-6), t) + ((s - t) ** 2).mean()


def score_channels(t) -> Optional[tuple[int, Any]]:
    """A detection head's raw output, [N, C, A] or [N, A, C] (YOLOv8 / YOLOv5 layouts), whose channels
    mix box coordinates in pixels with scores in [0, 1] -> (channel axis, mask of the score channels);
    None for any other output. Judged as one tensor, the pixel coordinates outweigh the scores
    ~10^4 to 1 and the scores, what a detector keeps or drops boxes by, go untrained."""
    import torch

    t = torch.as_tensor(t)
    if t.dim() != 3:
        return None
    axis = 1 if t.shape[1] <= t.shape[2] else 2
    if 4 * t.shape[axis] > t.shape[3 - axis]:  # a head has many more anchors than channels; a map does not
        return None
    per = t.movedim(axis, -1).reshape(-1, t.shape[axis])
    scores = (per.min(0).values >= 0) & (per.max(0).values <= 1)
    return (axis, scores) if bool(scores.any()) and not bool(scores.all()) else None


def output_cosine(out: np.ndarray, ref: np.ndarray, split: Optional[tuple[int, Any]] = None) -> float:
    """Cosine of one sample's output to the reference; with `split` (score_channels of the
    reference) the mean of the scores' and the other channels' cosines."""
    if split is None:
        return cosine(out, ref)
    axis, scores = split
    mask = np.asarray(scores)
    out, ref = np.moveaxis(out, axis - 1, -1), np.moveaxis(ref, axis - 1, -1)
    return float(np.mean([cosine(out[..., mask], ref[..., mask]), cosine(out[..., ~mask], ref[..., ~mask])]))


def _is_distribution(t) -> bool:
    """The teacher's output is a Softmax over its last axis (a classifier's scores, a CTC
    recognizer's per-step character probabilities): non-negative, summing to 1 over that axis."""
    if t.dim() < 2 or t.shape[-1] < 2 or float(t.min()) < 0.0:
        return False
    return bool(((t.float().sum(-1) - 1).abs() < 1e-3).all())


def _distribution_distance(s, t):
    """KL(teacher || student) plus the squared error, both summed over the classes and averaged over
    the positions: a mean over all elements (as for a probability map) would divide the loss by the
    class count (6625 for the PP-OCRv4 recognizer), leaving the output almost untrained."""
    s, t = s.float(), t.float()
    log_s, log_t = s.clamp_min(1e-8).log(), t.clamp_min(1e-8).log()
    kl = (t * (log_t - log_s)).sum(-1).mean()
    return kl + ((s - t) ** 2).sum(-1).mean()


def _loss(s_outs: list, t_outs: list, n_out: int, feature_weight: float):
    loss = sum(_output_distance(s, t) for s, t in zip(s_outs[:n_out], t_outs[:n_out])) / n_out
    feats = list(zip(s_outs[n_out:], t_outs[n_out:]))
    if feats and feature_weight > 0:
        loss = loss + feature_weight * sum(_distance(s, t) for s, t in feats) / len(feats)
    return loss


def held_out_cosine(module, samples: np.ndarray, reference: list[list[np.ndarray]], n_out: int,
                    batch: int = 4) -> float:
    """Mean over informative samples of the cosine between the module's and the reference outputs.

    A sample whose reference output is ~0 (a detector's map on a crop without text) gives any
    cosine at all; like the Comparator (compare.INFORMATIVE_NORM) it is left out, else early
    stopping and the kept checkpoint follow noise (PP-OCRv4 det: 4 of 9 held-out scenes)."""
    import torch

    vals, norms = [], []
    splits = [score_channels(torch.from_numpy(np.asarray(r))) for r in reference]
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            outs = [o.numpy() for o in _as_list(module(torch.from_numpy(samples[i:i + batch])))[:n_out]]
            for k in range(outs[0].shape[0]):
                vals.append(np.mean([output_cosine(o[k], r[i + k], sp) for o, r, sp in zip(outs, reference, splits)]))
                norms.append(min(float(np.linalg.norm(r[i + k])) for r in reference))
    norms_a = np.asarray(norms)
    keep = norms_a >= INFORMATIVE_NORM * norms_a.max() if norms_a.max() > 0 else np.ones(len(vals), bool)
    return float(np.mean(np.asarray(vals)[keep]))


def _reference(module, samples: np.ndarray, n_out: int, batch: int = 4) -> list[np.ndarray]:
    import torch

    parts: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            for k, o in enumerate(_as_list(module(torch.from_numpy(samples[i:i + batch])))[:n_out]):
                parts[k].append(o.numpy())
    return [np.concatenate(p) for p in parts]


def _fmt(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ------------------------------------------------------------------ checkpoints

def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)   # a kill mid-save leaves the previous checkpoint whole


def _load_checkpoint(path: Path, fingerprint: str) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise DistillError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); delete it or run "
                           "without --resume to start over") from None
    if state.get("fingerprint") != fingerprint:
        raise DistillError(f"checkpoint {path} belongs to another student (different model or compression "
                           "settings); delete it or run without --resume to start over")
    return state


def _fingerprint(module) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(p.shape)).encode())
    return h.hexdigest()[:16]


class _StopSignals:
    """SIGTERM behaves like Ctrl-C while training, so a kill also ends with the best weights saved."""

    def __enter__(self):
        self.old = None
        try:
            self.old = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        except ValueError:   # not the main thread: leave signals alone
            pass
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGTERM, self.old)
        return False


# ------------------------------------------------------------------ the training loop

class ThreadChooser:
    """Picks the faster torch thread count for training steps, by measurement.

    On a shared machine the best count changes with the load: with 4 other busy processes on 2
    cores a PP-OCRv4 det step took 2.4 s on 2 threads and 0.48 s on 1 (OpenMP threads wait for
    each other), on a quiet box 2 threads are faster. So every `every_s` seconds the next
    `probe` steps alternate between the candidates and training goes on with the faster one
    (the median step time). The probe steps are ordinary training steps.

    A probe ends after one step of each count when one is over `clear` times slower (at load 5
    a 2-thread step took 19 s against 1.1 s on 1: three of them per probe cost a minute), and
    while the same count keeps winning the wait to the next probe doubles (up to 16x every_s)."""

    def __init__(self, threads: int, every_s: float = 60.0, probe: int = 6, clear: float = 2.0):
        self.candidates = sorted({1, max(1, threads)})
        self.current, self.every_s, self.probe, self.clear = max(1, threads), every_s, probe, clear
        self.wait_s = every_s
        self.times: dict[int, list[float]] = {c: [] for c in self.candidates}
        self.next_probe = 0.0   # seconds into training
        self.probing = len(self.candidates) > 1
        self.note = ""

    def threads_for(self, step: int) -> int:
        """The thread count for this step (alternating while probing)."""
        return self.candidates[step % 2] if self.probing else self.current

    def record(self, threads: int, seconds: float, elapsed: float) -> None:
        if not self.probing:
            if len(self.candidates) > 1 and elapsed >= self.next_probe:
                self.probing, self.times = True, {c: [] for c in self.candidates}
            return
        self.times[threads].append(seconds)
        fewest = min(len(t) for t in self.times.values())
        med = {c: float(np.median(t)) for c, t in self.times.items()} if fewest else {}
        clear = fewest and max(med.values()) > self.clear * min(med.values())
        if not clear and fewest * len(self.candidates) < self.probe:
            return
        best = min(med, key=med.get)
        same = best == self.current and bool(self.note)   # not the first probe, and no change
        if not same:
            self.note = (f"{', '.join(f'{c} thread(s) {m:.2f} s/step' for c, m in sorted(med.items()))}: "
                         f"training on {best}")
        self.wait_s = min(16 * self.every_s, 2 * self.wait_s) if same else self.every_s
        self.current, self.probing, self.next_probe = best, False, elapsed + self.wait_s


@dataclass
class _Run:
    teacher: Any
    student: Any
    train: np.ndarray
    val: np.ndarray
    val_ref: list
    n_out: int
    cfg: DistillConfig
    report: DistillReport
    progress: Progress


def recalibrate_batchnorm(module, samples: np.ndarray, batch: int = 4) -> int:
    """Re-estimate BatchNorm running statistics on real samples (pruning shifts every activation
    after it, so the stored statistics saturate ReLU6/HardSwish and stall training). Returns the count."""
    import torch

    bns = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None   # cumulative average over all batches
        bn.train()
    with torch.no_grad():
        for i in range(0, len(samples), batch):
            module(torch.from_numpy(samples[i:i + batch]))
    for bn in bns:
        bn.eval()
    return len(bns)


def lr_factor(frac: float, step: int, warmup_steps: int) -> float:
    """Share of the peak learning rate at `frac` of the time budget and `step`: a linear ramp over
    the first `warmup_steps` steps times a cosine decay over the budget down to 5% of the peak."""
    ramp = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return ramp * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, frac)))))


class WeightAverage:
    """Exponential moving average of a module's float weights (and BatchNorm statistics).

    The average of the last few hundred steps generalises better than the last step's weights
    (the noise of small augmented batches averages out), so with `DistillConfig.ema` it is what
    held-out evaluation sees and what is kept. The decay ramps up over the first steps
    (min(decay, (1 + step) / (10 + step))) so early averages do not hold on to the start."""

    def __init__(self, module, decay: float):
        self.decay = decay
        self.live = {k: v for k, v in module.state_dict().items() if v.is_floating_point()}
        self.shadow = {k: v.detach().clone() for k, v in self.live.items()}

    def update(self, step: int) -> None:
        import torch

        d = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in self.live.items():
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)

    def swap(self) -> None:
        """Exchange the live weights and the average (call twice to undo)."""
        import torch

        with torch.no_grad():
            for k, v in self.live.items():
                tmp = v.detach().clone()
                v.copy_(self.shadow[k])
                self.shadow[k] = tmp


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _begin(run: _Run, opt, fp: str, ema: Optional[WeightAverage]) -> tuple[int, float, dict]:
    """Resume from the checkpoint, or recalibrate BatchNorm and measure the start: (step, seconds, best state)."""
    cfg, rep = run.cfg, run.report
    if cfg.resume and cfg.checkpoint and Path(cfg.checkpoint).exists():
        ck = _load_checkpoint(Path(cfg.checkpoint), fp)
        run.student.load_state_dict(ck.get("live", ck["best"]))
        opt.load_state_dict(ck["optim"])
        if ema is not None and ck.get("ema"):
            ema.shadow = ck["ema"]
        rep.history, rep.best_cosine = ck["history"], ck["best_cosine"]
        rep.start_cosine, rep.resumed = ck["start_cosine"], True
        run.progress(f"  resumed from {cfg.checkpoint}: step {ck['step']}, best held-out cosine {rep.best_cosine:.4f}")
        return ck["step"], ck["seconds"], ck["best"]
    if cfg.recalibrate_bn:
        recalibrate_batchnorm(run.student, run.train)
        if ema is not None:
            ema.shadow = {k: v.detach().clone() for k, v in ema.live.items()}
    rep.start_cosine = rep.best_cosine = held_out_cosine(run.student, run.val, run.val_ref, run.n_out)
    rep.history.append({"seconds": 0.0, "step": 0, "loss": float("nan"), "cosine": rep.start_cosine})
    return 0, 0.0, _state(run.student)


def _evaluated(run: _Run, ema: Optional[WeightAverage]) -> tuple[float, Optional[dict]]:
    """Held-out cosine of the weights that would be kept (the average with `ema`) and, for a new
    best, a copy of them."""
    if ema is not None:
        ema.swap()
    try:
        cos = held_out_cosine(run.student, run.val, run.val_ref, run.n_out)
        return cos, (_state(run.student) if cos > run.report.best_cosine else None)
    finally:
        if ema is not None:
            ema.swap()


def _train(run: _Run) -> None:
    import torch

    cfg, rep = run.cfg, run.report
    params = [p for p in run.student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    fp = _fingerprint(run.student)
    ema = WeightAverage(run.student, cfg.ema) if cfg.ema else None
    step, done_s, best_state = _begin(run, opt, fp, ema)
    threads0 = torch.get_num_threads()
    chooser = ThreadChooser(threads0 if cfg.adapt_threads else 1)
    if not cfg.adapt_threads:
        chooser.candidates, chooser.current, chooser.probing = [threads0], threads0, False
    gen = torch.Generator().manual_seed(cfg.seed + step)
    pool = _pool_for(cfg, run.train)
    budget = cfg.minutes * 60
    t0 = time.monotonic()
    last_eval, stale, rep.stopped = t0, 0, "time budget"

    def checkpoint() -> None:
        if cfg.checkpoint:
            _save_checkpoint(Path(cfg.checkpoint), {
                "fingerprint": fp, "best": best_state, "live": _state(run.student), "optim": opt.state_dict(),
                "ema": ema.shadow if ema is not None else None, "step": step,
                "seconds": done_s + time.monotonic() - t0, "history": rep.history,
                "best_cosine": rep.best_cosine, "start_cosine": rep.start_cosine})

    losses: list[float] = []
    try:
        with _StopSignals():
            while time.monotonic() - t0 < budget and not _step_limit_reached(cfg, step):
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * lr_factor(_progress_fraction(cfg, step, time.monotonic() - t0), step,
                                                 cfg.warmup_steps)
                threads = chooser.threads_for(step)
                torch.set_num_threads(threads)
                began = time.monotonic()
                idx = torch.randint(0, len(run.train), (min(cfg.batch, len(run.train)),), generator=gen)
                x = augment(torch.from_numpy(run.train[idx.numpy()]), gen, cfg, pool)
                with torch.no_grad():
                    t_outs = _as_list(run.teacher(x))
                loss = _loss(_as_list(run.student(x)), t_outs, run.n_out, cfg.feature_weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if ema is not None:
                    ema.update(step)
                losses.append(loss.item())
                now = time.monotonic()
                chooser.record(threads, now - began, now - t0)
                if now - last_eval < cfg.eval_every_s and now - t0 < budget and not _step_limit_reached(cfg, step):
                    continue
                last_eval = now
                cos, better = _evaluated(run, ema)
                rep.history.append({"seconds": done_s + now - t0, "step": step,
                                    "loss": float(np.mean(losses)), "cosine": cos})
                losses = []
                if better is not None:
                    rep.best_cosine, stale, best_state = cos, 0, better
                else:
                    stale += 1
                checkpoint()
                run.progress(f"  distill step {step}: loss {rep.history[-1]['loss']:.4f}, held-out cosine {cos:.4f} "
                             f"(best {rep.best_cosine:.4f}), {_fmt(now - t0)} elapsed, ETA {_fmt(budget - (now - t0))}"
                             + (f"; {chooser.note}" if chooser.note != rep.threads else ""))
                rep.threads = chooser.note or rep.threads
                if rep.best_cosine >= cfg.target:
                    rep.stopped = f"reached the target cosine {cfg.target}"
                    break
                if stale >= cfg.patience:
                    rep.stopped = f"no improvement in {cfg.patience} evaluations"
                    break
    except KeyboardInterrupt:
        checkpoint()
        run.student.load_state_dict(best_state)
        where = f" in {cfg.checkpoint}" if cfg.checkpoint else " (no checkpoint path was given, so nothing is saved)"
        raise DistillInterrupted(
            f"distillation interrupted at step {step}; the best weights (held-out cosine {rep.best_cosine:.4f}) "
            f"are kept{where}. Run the same command with --resume (resume=True) to continue") from None
    run.student.load_state_dict(best_state)
    torch.set_num_threads(threads0)
    if _step_limit_reached(cfg, step) and rep.stopped == "time budget":
        rep.stopped = f"step limit ({cfg.max_steps} steps)"
    rep.steps, rep.seconds = step, done_s + time.monotonic() - t0
    checkpoint()


def _step_limit_reached(cfg: DistillConfig, step: int) -> bool:
    return cfg.max_steps is not None and step >= cfg.max_steps


def _progress_fraction(cfg: DistillConfig, step: int, elapsed_s: float) -> float:
    """Where the learning-rate decay stands: by steps when a step limit is set, else by time."""
    if cfg.max_steps:
        return step / cfg.max_steps
    return elapsed_s / (cfg.minutes * 60)


# ------------------------------------------------------------------ public entry points

def split_train_val(samples: np.ndarray, source: str = "the calibration data",
                    groups: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
    """About every 5th sample (at least 1) is held out of training for early stopping.

    With `groups` (per sample: the photo or video segment it came from, CalibrationSet.sources)
    whole groups are held out, spread over the set: neighbouring video frames or crops of one
    photo on both sides would make early stopping reward memorising, not generalising."""
    n = len(samples)
    k = max(MIN_VAL_IMAGES, n // 5)
    if n - k < MIN_TRAIN_IMAGES:
        raise DistillError(
            f"{n} samples from {source} are too few to distill on: training needs at least {MIN_TRAIN_IMAGES} "
            f"plus {MIN_VAL_IMAGES} held out for early stopping ({MIN_TRAIN_IMAGES + MIN_VAL_IMAGES}); "
            "give a folder of 16 or more real images or a video (augmentation stretches a small set, "
            "it cannot replace one)")
    held = _whole_groups_held(list(groups), k) if groups is not None and len(groups) == n else None
    if held is None or held.all() or not held.any() or n - held.sum() < MIN_TRAIN_IMAGES:
        held = np.zeros(n, bool)
        held[np.linspace(0, n - 1, k + 2)[1:-1].round().astype(int)] = True
    return samples[~held], samples[held]


def _whole_groups_held(groups: list[str], k: int) -> Optional[np.ndarray]:
    """Mask of whole groups, evenly spread in order of appearance, holding >= k samples; None
    with fewer than 3 groups (one held-out group would be a third or more of the data)."""
    order = list(dict.fromkeys(groups))
    if len(order) < 3:
        return None
    for want in range(1, len(order) - 1):
        picks = {order[int(i)] for i in np.linspace(0, len(order) - 1, want + 2)[1:-1].round()}
        mask = np.array([g in picks for g in groups], bool)
        if mask.sum() >= k:
            return mask
    return mask


def views_fit(teacher, student, sample: np.ndarray, size: int, say: Progress, n_out: int = 1) -> Optional[int]:
    """`size` when training on size x size views of `sample`-shaped inputs is sound: the input is
    at least 1.5x that size and both modules run on it, every output scaling with the input (a fully
    convolutional model, e.g. a detector); else None (train at the full size). Says which."""
    import torch

    h, w = sample.shape[2:]
    if min(h, w) < 1.5 * size:
        return None
    try:
        with torch.no_grad():
            full = [o.shape for o in _as_list(teacher(torch.from_numpy(sample[:1])))[:n_out]]
            small = torch.from_numpy(np.ascontiguousarray(sample[:1, :, :size, :size]))
            outs = [[o.shape for o in _as_list(m(small))[:n_out]] for m in (teacher, student)]
    except Exception:  # a graph baked to its size (Reshape constants) fails at another: train at full size
        outs = None
    ok = outs is not None and outs[0] == outs[1] and all(
        len(f) == len(o) == 4 and o[:2] == f[:2] and (o[2], o[3]) == (f[2] * size // h, f[3] * size // w)
        for f, o in zip(full, outs[0]))
    say(f"training on {size}x{size} views of the {h}x{w} inputs (the models are fully convolutional: their "
        f"outputs scale with the input; DistillConfig(train_size=...) sets another size)" if ok else
        f"training at the full {h}x{w} size (the models do not run on {size}x{size} views alike)")
    return size if ok else None


def distill(teacher: Any, student: Any, samples: np.ndarray, config: Optional[DistillConfig] = None,
            progress: Optional[Progress] = None, source: str = "the calibration data",
            feature_names: Sequence[str] = (), n_out: Optional[int] = None,
            groups: Optional[Sequence[str]] = None):
    """Train `student` (nn.Module, ONNX path or ModelProto) towards `teacher` on unlabeled samples.

    Both modules must take one input batch (N x C x H x W float32 for the augmentation) and return
    the same outputs in the same order; with `feature_names`, ONNX teacher/student also return those
    intermediate tensors, matched by the loss. `groups`: per sample, the photo or video segment it
    came from; early stopping then holds whole groups out. Returns (trained torch student, DistillReport).
    Raises DistillInterrupted (best weights saved to config.checkpoint) on Ctrl-C / SIGTERM."""
    import torch

    cfg = config or DistillConfig()
    say = progress or (lambda _m: None)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    if samples.ndim != 4:
        raise DistillError(f"distillation augments image batches (N x C x H x W); got samples of shape "
                           f"{samples.shape}. Pass preprocessed images, or a model whose input is an image")
    train, val = split_train_val(samples, source, groups)
    kind = "user nn.Module"
    if not isinstance(student, torch.nn.Module):
        student, kind = onnx_to_torch(student, "student"), "ONNX student (onnx2torch)"
    if not isinstance(teacher, torch.nn.Module):
        teacher = onnx_to_torch(teacher, "teacher")
    teacher.eval().requires_grad_(False)
    student.eval()  # BatchNorm keeps its statistics: small batches must not rewrite them
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    say(thread_note(torch.get_num_threads()))
    n_out = n_out or len(_as_list(teacher(torch.from_numpy(val[:1])))) - len(feature_names)
    if cfg.train_size is None and cfg.auto_train_size:
        cfg = replace(cfg, train_size=views_fit(teacher, student, val[:1], cfg.auto_train_size, say, n_out))
    report = DistillReport(student=kind, trained_on=source, train_images=len(train), val_images=len(val),
                           augmentation=describe_augmentation(cfg),
                           features_matched=list(feature_names),
                           checkpoint=str(cfg.checkpoint) if cfg.checkpoint else None)
    say(f"distilling for at most {cfg.minutes:g} min on {len(train)} images ({report.augmentation}), early stop "
        f"on {len(val)} held out; {len(feature_names)} intermediate features matched")
    val_ref = _reference(teacher, val, n_out)
    run = _Run(teacher, student, train, val, val_ref, n_out, cfg, report, say)
    _train(run)
    say(f"  distilled: held-out cosine {report.start_cosine:.4f} -> {report.best_cosine:.4f} "
        f"({report.steps} steps, {_fmt(report.seconds)}; {report.stopped})")
    return student, report


def distill_onnx(teacher: Any, student: Any, samples: np.ndarray, path: Union[str, Path],
                 config: Optional[DistillConfig] = None, progress: Optional[Progress] = None,
                 source: str = "the calibration data", plan: Optional[dict[str, Sequence[int]]] = None,
                 groups: Optional[Sequence[str]] = None):
    """ONNX teacher + ONNX student -> distilled ONNX student written to `path` (ModelProto, report).

    Intermediate tensors named and shaped alike in both graphs are matched too; with `plan`
    (PruneReport.plan of a pruned student) so are the pruned convolutions' outputs, against the
    teacher channels they kept."""
    from .flops import infer_shapes

    teacher, student = load_model(teacher), load_model(student)
    input_name = next(i.name for i in student.graph.input
                      if i.name not in {t.name for t in student.graph.initializer})
    shapes = {input_name: [1, *[int(d) for d in np.asarray(samples).shape[1:]]]}
    cfg = config or DistillConfig()
    same = matching_features(teacher, student, shapes, cfg.max_features)
    pruned = pruned_features(teacher, student, plan or {}, cfg.max_features)
    feats = same + [n for n in pruned if n not in same]
    tshapes, sshapes = infer_shapes(teacher, shapes), infer_shapes(student, shapes)
    outputs = [o.name for o in student.graph.output]
    t_mod = _teacher_channels(onnx_to_torch(_with_outputs(teacher, feats, tshapes), "teacher"), len(outputs),
                              [pruned.get(n) for n in feats])
    s_mod = onnx_to_torch(_with_outputs(student, feats, sshapes), "student")
    dim0 = next(i for i in student.graph.input if i.name == input_name).type.tensor_type.shape.dim[0]
    if dim0.dim_value == 1:
        t_mod, s_mod = per_sample(t_mod), per_sample(s_mod)
    module, report = distill(t_mod, s_mod, samples, cfg, progress, source, feature_names=feats, n_out=len(outputs),
                             groups=groups)
    report.student = "ONNX student (onnx2torch)"
    proto = export_onnx(module, np.asarray(samples, np.float32), path, input_name, outputs,
                        dynamic_batch=not dim0.dim_value)
    return proto, report


def checkpoint_path_for(output: Union[str, Path]) -> Path:
    """Where `edgesdk convert` keeps a distillation checkpoint: beside the bundle, so --resume finds it."""
    output = Path(output)
    return output.with_name(output.name + ".distill.pt")


def compress_for_convert(teacher, prepared: Path, *, pruned: bool, lowrank: Optional[float],
                         distill_student: Any, fit: Optional[np.ndarray], input_shapes: dict[str, list[int]],
                         config: DistillConfig, source: str, progress: Progress,
                         plan: Optional[dict[str, Sequence[int]]] = None,
                         groups: Optional[Sequence[str]] = None) -> Optional[dict[str, Any]]:
    """`edgesdk convert`'s step after pruning: factorize (lowrank=ENERGY) and/or distill the
    model at `prepared` (rewritten in place) from `teacher`, the unpruned prepared model.

    distill_student: False, True (the compressed ONNX model is the student) or an nn.Module.
    plan: PruneReport.plan of the pruning step, so pruned layers' outputs are matched too.
    Returns the report section {"lowrank": ..., "distillation": ..., "markdown": ...}."""
    import onnx

    info: dict[str, Any] = {"markdown": ""}
    if distill_student is True and not pruned and not lowrank:
        raise DistillError("--distill trains a compressed model back to the original, but nothing was "
                           "compressed: add --prune RATIO (e.g. 0.3) or --lowrank ENERGY (e.g. 0.9), or pass "
                           "distill=your_nn_Module as the student on the Python API")
    if lowrank:
        from .lowrank import factorize

        progress(f"low-rank factorization, energy {lowrank}")
        # factors fitted to the calibration inputs: same ranks, far closer outputs (PP-OCRv4 rec cosine
        # on held-out lines 0.76 -> 0.97 before any training)
        fact, lrep = factorize(onnx.load(str(prepared)), float(lowrank), input_shapes=input_shapes, calib=fit)
        onnx.save(fact, str(prepared))
        info["lowrank"] = lrep.to_dict()
        info["markdown"] += lrep.to_markdown() + "\n"
    if distill_student is False or distill_student is None:
        return info if lowrank else None
    if fit is None:
        raise DistillError("distillation trains on real inputs: pass --calib with a folder of real images or "
                           "a video (no labels needed)")
    student = onnx.load(str(prepared)) if distill_student is True else distill_student
    tmp = prepared.with_name("distilled.onnx")
    if distill_student is True:
        _, rep = distill_onnx(teacher, student, fit, tmp, config, progress, source, plan=plan, groups=groups)
    else:
        module, rep = distill(teacher, student, fit, config, progress, source, groups=groups)
        input_name = next(iter(input_shapes))
        export_onnx(module, np.asarray(fit, np.float32), tmp, input_name, [o.name for o in teacher.graph.output])
    os.replace(tmp, prepared)
    plot = prepared.parent / "distill_curve.png"
    info["distillation"] = rep.to_dict()
    info["plot"] = str(plot) if rep.plot(plot) else None
    info["markdown"] += rep.to_markdown()
    if info["plot"]:
        info["markdown"] += "\n![held-out cosine against training time](distill_curve.png)\n"
    return info
