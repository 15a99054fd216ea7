"""Label-free quantization-aware fine-tuning (QAT) of a QDQ INT8 model.

The step after post-training INT8 misses the accuracy budget. The student is the quantizer's own
QDQ model (onnxruntime's or NNCF's, weights int8 per channel, activations per tensor): every
QuantizeLinear -> DequantizeLinear pair becomes a fake-quant module whose scale starts at the
calibrated one and is learned (the LSQ gradient: straight-through rounding, so the scale gets the
gradient of the rounding error), every int8 weight becomes a float weight fake-quantized per channel
with its calibrated scale, learned too. The teacher is the fp32 model; the loss is the distance to
its outputs on augmented unlabeled calibration images. The training loop (augmentation, time
budget, progress + ETA, early stop on held-out cosine, checkpoints) is converters.distill's.

The result is written back into the same QDQ graph (same nodes, new weights, scales and int32
biases), so onnxruntime fuses it to QLinearConv and OpenVINO reads it as int8, as it did the PTQ
model; `int8_evidence` checks both, `torch_agreement` that the file computes what was trained.
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np

from .errors import ConversionError

Progress = Callable[[str], None]
DOMAIN = "edgesdk_qat"            # the training graph's fake-quant op (no dots: onnx2torch names modules by it)
#: Adam moves each parameter by ~lr per step; a scale is trained as log(scale) / SCALE_RATE, so
#: its relative step is SCALE_RATE * lr (scales need ~1e-3 relative steps, weights ~1e-5 absolute)
SCALE_RATE = 100.0
#: below this cosine between the written file (onnxruntime) and the trained torch model, say so
AGREEMENT_WARN = 0.99


class QatError(ConversionError):
    """QAT cannot run on this model or data (unconvertible operator, too few images, not QDQ)."""


@dataclass
class QatConfig:
    minutes: float = 4.0            # training time budget (evaluation included)
    lr: float = 2e-5                # weights; scales move SCALE_RATE x faster (relative)
    batch: int = 4
    eval_every_s: float = 20.0      # held-out evaluation + checkpoint interval
    patience: int = 6               # evaluations without improvement before stopping
    target: float = 0.99995         # held-out cosine to the teacher that ends training early
    crop_scale: tuple[float, float] = (0.6, 1.0)
    jitter: float = 0.2
    flip: bool = True
    checkpoint: Optional[Path] = None
    resume: bool = False
    seed: int = 0
    threads: Optional[int] = None
    warmup_steps: int = 0           # QAT starts next to its optimum (the calibrated scales): no ramp needed
    max_steps: Optional[int] = None  # also stop after this many steps (repeatable runs)

    def distill_config(self) -> Any:
        from .distill import DistillConfig

        return DistillConfig(minutes=self.minutes, batch=self.batch, lr=self.lr, eval_every_s=self.eval_every_s,
                             patience=self.patience, target=self.target, feature_weight=0.0,
                             crop_scale=self.crop_scale, jitter=self.jitter, flip=self.flip,
                             checkpoint=self.checkpoint, resume=self.resume, seed=self.seed, threads=self.threads,
                             warmup_steps=self.warmup_steps, max_steps=self.max_steps,
                             # the file's BatchNorm statistics are part of the model the INT8 ranges were
                             # calibrated on, and write_student keeps them
                             recalibrate_bn=False)


@dataclass
class QatReport:
    trained_on: str
    train_images: int
    val_images: int
    augmentation: str
    activation_quantizers: int
    weight_quantizers: int
    start_cosine: float
    best_cosine: float
    minutes: float
    steps: int
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)
    #: cosine between the exported QDQ model on onnxruntime and the torch fake-quant model
    torch_vs_onnxruntime: Optional[float] = None
    int8: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_markdown(self) -> str:
        lines = ["## Quantization-aware fine-tuning (label-free)", "",
                 f"- teacher: the fp32 model; student: the INT8 QDQ model with {self.weight_quantizers} weight and "
                 f"{self.activation_quantizers} activation quantizers (scales learned from the calibrated ones)",
                 f"- trained on: {self.trained_on} ({self.train_images} images, augmented: {self.augmentation})",
                 f"- held-out cosine to fp32 ({self.val_images} images kept out of training): "
                 f"{self.start_cosine:.4f} -> {self.best_cosine:.4f} in {self.steps} steps, "
                 f"{self.minutes:.1f} min; stopped: {self.stopped}"]
        if self.torch_vs_onnxruntime is not None:
            lines.append(f"- exported QDQ on onnxruntime vs the trained fake-quant model: cosine "
                         f"{self.torch_vs_onnxruntime:.5f}")
        for engine, ev in self.int8.items():
            lines.append(f"- {engine}: {ev}")
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ fake quantization

def fake_quantize(x, scale, zero, qmin: int, qmax: int):
    """Quantize-dequantize with straight-through rounding: d/dx is 1 inside the range, and the
    scale gets the gradient of the rounding and clipping error (LSQ)."""
    q = x / scale + zero
    q = (q + (q.round() - q).detach()).clamp(qmin, qmax)
    return (q - zero) * scale


@functools.lru_cache(maxsize=None)
def _modules():
    """torch module classes, defined once on first use (torch is imported lazily)."""
    import torch

    class ActQuant(torch.nn.Module):
        """One QuantizeLinear -> DequantizeLinear pair on an activation: per tensor, or per channel
        along `axis` (NNCF quantizes some depthwise inputs per channel)."""

        def __init__(self, scale: np.ndarray, zero: np.ndarray, axis: int, qmin: int, qmax: int, name: str):
            super().__init__()
            scale, zero = np.asarray(scale, np.float32), np.asarray(zero, np.float32)
            self.register_buffer("scale0", torch.as_tensor(scale.reshape(-1) if scale.size > 1 else scale.reshape(())))
            self.register_buffer("zero", torch.as_tensor(zero.reshape(-1) if zero.size > 1 else zero.reshape(())))
            self.log_scale = torch.nn.Parameter(torch.zeros_like(self.scale0))
            self.axis, self.qmin, self.qmax, self.q_name = axis, qmin, qmax, name

        def scale(self):
            return self.scale0 * torch.exp(self.log_scale * SCALE_RATE)

        def forward(self, x):
            scale, zero = self.scale(), self.zero
            if scale.ndim:
                shape = [1] * x.ndim
                shape[self.axis % x.ndim] = -1
                scale, zero = scale.reshape(shape), (zero.reshape(shape) if zero.ndim else zero)
            return fake_quantize(x, scale, zero, self.qmin, self.qmax)

    class WeightQuant(torch.nn.Module):
        """Parametrization of a weight: fake-quantized along `axis` with a learned per-channel scale."""

        def __init__(self, scale: np.ndarray, zero: np.ndarray, axis: int, ndim: int, qmin: int, qmax: int):
            super().__init__()
            shape = [1] * ndim
            if np.ndim(scale) == 1:
                shape[axis] = -1
            self.shape = shape
            self.register_buffer("scale0", torch.as_tensor(np.asarray(scale, np.float32)).reshape(shape))
            self.register_buffer("zero", torch.as_tensor(np.asarray(zero, np.float32)).reshape(shape))
            self.log_scale = torch.nn.Parameter(torch.zeros_like(self.scale0))
            self.qmin, self.qmax = qmin, qmax

        def scale(self):
            return self.scale0 * torch.exp(self.log_scale * SCALE_RATE)

        def forward(self, w):
            return fake_quantize(w, self.scale(), self.zero, self.qmin, self.qmax)

    return ActQuant, WeightQuant


_REGISTERED = False


def _register_converter() -> None:
    """onnx2torch converter for the training graph's FakeQuant op (x, scale, zero point)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from .distill import import_onnx2torch

    import_onnx2torch()
    from onnx2torch.node_converters.registry import add_converter
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    act_quant, _ = _modules()

    @add_converter(operation_type="FakeQuant", version=1, domain=DOMAIN)
    def _convert(node, graph):
        scale = graph.initializers[node.input_values[1]].to_numpy()
        zero_t = graph.initializers[node.input_values[2]]
        lo, hi = _int_range(zero_t.to_numpy().dtype)
        module = act_quant(scale, zero_t.to_numpy(), node.attributes.get("axis", 1), lo, hi, node.attributes["q_node"])
        return OperationConverterResult(torch_module=module,
                                        onnx_mapping=OnnxMapping(inputs=(node.input_values[0],),
                                                                 outputs=node.output_values))
    _REGISTERED = True


def _int_range(dtype: Any) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


# ------------------------------------------------------------------ the student

@dataclass
class Student:
    """The trainable fake-quant model and where its trained values go back in the QDQ graph."""

    module: Any                                   # torch module (fx.GraphModule from onnx2torch)
    graph: Any                                    # converters.qat_graph.TrainingGraph
    weights: dict[str, tuple[Any, bool]] = field(default_factory=dict)  # weight tensor -> (module, transposed)
    biases: dict[str, Any] = field(default_factory=dict)                # bias tensor -> module
    acts: dict[str, Any] = field(default_factory=dict)                  # Q node name -> ActQuant


def _to_torch(model: Any, what: str):
    from .distill import DistillError, onnx_to_torch, unsupported_ops

    missing = unsupported_ops(model)
    if missing:
        raise QatError(f"QAT trains the model in PyTorch (onnx2torch), which has no converter for "
                       f"{', '.join(missing)} in the {what}; QAT cannot run on this model: keep the guard's "
                       "result (or --keep-best), or leave those layers float with --exclude")
    try:
        return onnx_to_torch(model, what)
    except DistillError as e:
        raise QatError(f"QAT cannot convert the {what} to PyTorch: {e}") from None


def build_student(qdq: Any) -> Student:
    """QDQ ModelProto -> Student: FakeQuant modules for activations, weights fake-quantized per
    channel through a parametrization, every other parameter frozen at its value in the file."""
    import torch
    from torch.nn.utils import parametrize

    from .qat_graph import training_graph

    tg = training_graph(qdq)
    _register_converter()   # imports onnx2torch the way converters.distill does (torchvision optional)
    from onnx2torch.onnx_graph import OnnxGraph

    module = _to_torch(tg.model, "INT8 model").requires_grad_(False)
    act_quant, weight_quant = _modules()
    st = Student(module, tg)
    st.acts = {m.q_name: m.requires_grad_(True) for m in module.modules() if isinstance(m, act_quant)}
    children = dict(module.named_children())
    weights = {c.tensor: c for c in tg.weights()}
    inits = {t.name: t for t in tg.model.graph.initializer}
    for node in tg.model.graph.node:
        mod = _weighted_module(children.get(OnnxGraph.generate_node_name(node)))
        slot = weights.get(node.input[1]) if len(node.input) > 1 else None
        if slot is None or mod is None or not isinstance(getattr(mod, "weight", None), torch.Tensor):
            continue  # a layer onnx2torch did not make a module with .weight (alpha != 1 Gemm, ...) stays as is
        shape = tuple(inits[slot.tensor].dims)
        transposed = tuple(mod.weight.shape) != shape
        if transposed and tuple(mod.weight.shape) != shape[::-1]:
            continue
        lo, hi = _int_range(slot.dtype)
        axis = (1 - slot.axis) if transposed else slot.axis
        parametrize.register_parametrization(mod, "weight", weight_quant(slot.scale, slot.zero, axis, len(shape),
                                                                         lo, hi))
        mod.parametrizations.weight.original.requires_grad_(True)
        st.weights[slot.tensor] = (mod, transposed)
        if len(node.input) > 2 and node.input[2] and getattr(mod, "bias", None) is not None:
            mod.bias.requires_grad_(True)
            st.biases[node.input[2]] = mod
    if not st.weights and not st.acts:
        raise QatError("the model holds no QuantizeLinear/DequantizeLinear to train: QAT takes the INT8 QDQ model "
                       "of a static quantization (--precision int8 with --calib)")
    return st


def _weighted_module(mod: Any) -> Any:
    """The module holding a layer's weight: onnx2torch wraps a Conv with asymmetric padding
    (TF "same", stride 2) in a Sequential(pad, conv)."""
    import torch

    if mod is None or isinstance(getattr(mod, "weight", None), torch.Tensor):
        return mod
    inner = [m for m in mod.modules() if isinstance(getattr(m, "weight", None), torch.Tensor)]
    return inner[0] if len(inner) == 1 else None


def write_student(st: Student, qdq: Any, path: Union[str, Path]) -> Any:
    """The trained student as a QDQ ONNX file (temp file + rename); returns the ModelProto."""
    import onnx

    from .qat_graph import write_back

    consts, scales = {}, {}
    for tensor, (mod, transposed) in st.weights.items():
        w = mod.parametrizations.weight.original.detach().numpy()
        consts[tensor] = w.T if transposed else w
        scales[tensor] = mod.parametrizations.weight[0].scale().detach().numpy().reshape(-1)
    for tensor, mod in st.biases.items():
        consts[tensor] = mod.bias.detach().numpy()
    acts = {name: m.scale().detach().numpy() for name, m in st.acts.items()}
    model = write_back(qdq, st.graph, acts, consts, scales)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.onnx")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return model


# ------------------------------------------------------------------ training

def check_samples(samples: np.ndarray, source: str) -> None:
    """Refuse a calibration set too small to train on, saying how many images it needs."""
    from .distill import MIN_TRAIN_IMAGES, MIN_VAL_IMAGES

    n = len(samples)
    need = MIN_TRAIN_IMAGES + MIN_VAL_IMAGES
    if n - max(MIN_VAL_IMAGES, n // 5) < MIN_TRAIN_IMAGES:
        raise QatError(f"{n} samples from {source} are too few for quantization-aware training: it needs at least "
                       f"{need} ({MIN_TRAIN_IMAGES} to train on, {MIN_VAL_IMAGES} held out for early stopping); "
                       "give --calib a folder of 16 or more real images or a video")
    if np.ndim(samples) != 4:
        raise QatError(f"QAT augments image batches (N x C x H x W); got samples of shape {np.shape(samples)}")


def _qat_words(say: Progress) -> Progress:
    """converters.distill's loop speaks of distillation; this run is QAT."""
    return lambda m: say(m.replace("distilling for", "QAT: training for").replace("distill step", "qat step")
                         .replace("distilled:", "qat:"))


def _batch_one(model: Any) -> bool:
    init = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in init)
    return inp.type.tensor_type.shape.dim[0].dim_value == 1


def qat(teacher: Any, qdq: Any, samples: np.ndarray, path: Union[str, Path], config: Optional[QatConfig] = None,
        progress: Optional[Progress] = None, source: str = "the calibration data") -> tuple[Any, QatReport]:
    """Fine-tune the QDQ INT8 model `qdq` towards the fp32 `teacher` (ONNX paths or ModelProtos)
    on unlabeled `samples`; write the QDQ result to `path`. Returns (ModelProto, QatReport).

    Raises QatError (operator onnx2torch cannot convert, too few samples) and, on Ctrl-C or
    SIGTERM, converters.distill.DistillInterrupted with the best weights in config.checkpoint."""
    from .distill import distill, load_model, per_sample

    cfg = config or QatConfig()
    say = progress or (lambda _m: None)
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    check_samples(samples, source)
    teacher, qdq = load_model(teacher), load_model(qdq)
    st = build_student(qdq)
    t_mod, s_mod = _to_torch(teacher, "fp32 teacher"), st.module
    if _batch_one(qdq):   # a graph baked to batch 1 trains one sample at a time
        t_mod, s_mod = per_sample(t_mod), per_sample(s_mod)
    say(f"QAT: {len(st.weights)} weight and {len(st.acts)} activation quantizers, scales start at the calibrated ones")
    _, drep = distill(t_mod, s_mod, samples, cfg.distill_config(), _qat_words(say), source,
                      n_out=len(teacher.graph.output))
    model = write_student(st, qdq, path)
    rep = QatReport(trained_on=source, train_images=drep.train_images, val_images=drep.val_images,
                    augmentation=drep.augmentation, activation_quantizers=len(st.acts),
                    weight_quantizers=len(st.weights), start_cosine=drep.start_cosine, best_cosine=drep.best_cosine,
                    minutes=drep.seconds / 60, steps=drep.steps, stopped=drep.stopped, history=drep.history)
    from .distill import split_train_val

    rep.torch_vs_onnxruntime = torch_agreement(s_mod, path, split_train_val(samples, source)[1])
    if rep.torch_vs_onnxruntime < AGREEMENT_WARN:
        say(f"WARNING: the exported QDQ model on onnxruntime agrees with the trained fake-quant model only to cosine "
            f"{rep.torch_vs_onnxruntime:.4f} (onnxruntime's integer kernels round differently); the held-out check "
            "judges the file itself")
    return model, rep


def torch_agreement(module: Any, path: Union[str, Path], samples: np.ndarray) -> float:
    """Mean cosine of the first output between the torch fake-quant model and the QDQ file on onnxruntime."""
    import onnxruntime as ort
    import torch

    from .compare import cosine

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    vals = []
    with torch.no_grad():
        for x in samples:
            ours = module(torch.from_numpy(x[None]))
            ours = (ours[0] if isinstance(ours, (tuple, list)) else ours).numpy()
            vals.append(cosine(ours, sess.run(None, {name: x[None]})[0]))
    return float(np.mean(vals))


# ------------------------------------------------------------------ is it really int8?

#: onnxruntime kernels that compute in integers (after its QDQ fusion)
ORT_INT8_KERNELS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "QLinearAdd",
                    "QLinearMul", "QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearLeakyRelu")


def ort_int8_kernels(path: Union[str, Path], work: Union[str, Path]) -> dict[str, int]:
    """{kernel: count} of the graph onnxruntime actually runs (its optimized graph, saved to `work`)."""
    import onnx
    import onnxruntime as ort

    opt = Path(work) / (Path(path).stem + ".ort_optimized.onnx")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(opt)
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for n in onnx.load(str(opt)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    opt.unlink(missing_ok=True)
    return counts


def openvino_int8_layers(path: Union[str, Path]) -> tuple[int, int]:
    """(convolutions/matmuls OpenVINO's CPU plugin runs in int8, all of them) for a QDQ ONNX file."""
    from . import engine_telemetry

    engine_telemetry.disable()
    import openvino as ov

    compiled = ov.Core().compile_model(str(path), "CPU")
    int8 = total = 0
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" not in info or info["layerType"].astype(str) not in OV_WEIGHTED_LAYERS:
            continue
        total += 1
        int8 += "runtimePrecision" in info and info["runtimePrecision"].astype(str).lower() in ("i8", "u8")
    return int8, total


#: OpenVINO CPU plugin layer types that carry weights
OV_WEIGHTED_LAYERS = ("Convolution", "FullyConnected", "MatMul", "GroupConvolution", "Deconvolution")


def int8_counts(path: Union[str, Path], work: Union[str, Path]) -> dict[str, tuple[int, int]]:
    """{engine: (weighted layers it runs in int8, weighted layers)} for onnxruntime and OpenVINO."""
    import onnx

    from .onnx_quant import WEIGHTED_OPS

    layers = sum(n.op_type in WEIGHTED_OPS for n in onnx.load(str(path)).graph.node)
    kernels = ort_int8_kernels(path, work)
    n_int = sum(kernels.get(k, 0) for k in ORT_INT8_KERNELS if k not in ("QLinearAdd", "QLinearMul",
                                                                         "QLinearGlobalAveragePool",
                                                                         "QLinearSigmoid", "QLinearLeakyRelu"))
    return {"onnxruntime": (n_int, layers), "openvino": openvino_int8_layers(path)}


def int8_evidence(path: Union[str, Path], work: Union[str, Path], source: Union[str, Path]) -> dict[str, str]:
    """What each engine runs the QAT file as, against the post-training `source` it came from, in
    words. Raises QatError when an engine runs fewer layers in int8 than it did the source.

    onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv; a Conv whose
    output is not quantized (NNCF's QDQ placement) runs in float on dequantized int8 weights."""
    ours, before = int8_counts(path, work), int8_counts(source, work)
    out = {}
    for engine, (n, total) in ours.items():
        out[engine] = (f"{n} of {total} weighted layers run in int8 (post-training INT8 model: "
                       f"{before[engine][0]} of {before[engine][1]})")
        if n < before[engine][0]:
            raise QatError(f"the QAT model {Path(path).name} runs fewer layers in int8 on {engine} than the "
                           f"post-training one: {out[engine]}")
    return out
