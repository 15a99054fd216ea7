"""Least-squares refit of the convolutions that read pruned channels (output reconstruction).

After channel pruning, a consumer Conv sees only the kept input channels. Instead of only
folding the removed channels' mean into its bias, its weights over the kept channels (and
its bias) are refit on real data so that its output matches the unpruned layer's output:
    min_W' || conv(X_kept, W') + b' - conv(X, W) - b ||^2 (+ a small ridge)
solved in closed form from the normal equations over sampled output positions (im2col).
The kept channels then also stand in for what the removed ones carried, as far as they
linearly can (He et al. 2017, "Channel pruning for accelerating very deep neural networks").
No training is needed; on the PP-OCRv4 detector pruned by 30% this is what lifts the output
cosine from near 0 to a point distillation can start from.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

Progress = Callable[[str], None]


def conv_geometry(node, weight_shape: Sequence[int]) -> Optional[dict[str, Any]]:
    """Kernel, strides, dilations and (top, left, bottom, right) pads of a 2-D Conv; None when
    the refit does not handle it (auto_pad other than NOTSET/VALID, not 2-D)."""
    from .graphedit import attr

    if len(weight_shape) != 4:
        return None
    auto = attr(node, "auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    if auto not in ("NOTSET", "VALID"):
        return None
    pads = list(attr(node, "pads") or [0, 0, 0, 0]) if auto == "NOTSET" else [0, 0, 0, 0]
    return {"kernel": tuple(int(k) for k in weight_shape[2:]),
            "strides": tuple(int(s) for s in (attr(node, "strides") or [1, 1])),
            "dilations": tuple(int(d) for d in (attr(node, "dilations") or [1, 1])),
            "pads": tuple(int(p) for p in pads)}


def sample_patches(x: np.ndarray, geo: Mapping[str, Any], positions: np.ndarray, out_w: int) -> np.ndarray:
    """im2col at the given flat output positions: x [C, H, W] -> [len(positions), C * kh * kw]."""
    (kh, kw), (sh, sw), (dh, dw) = geo["kernel"], geo["strides"], geo["dilations"]
    pt, pl, pb, pr = geo["pads"]
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr))) if any(geo["pads"]) else x
    oi, oj = positions // out_w, positions % out_w
    rows = oi[:, None] * sh + np.arange(kh)[None, :] * dh          # [S, kh]
    cols = oj[:, None] * sw + np.arange(kw)[None, :] * dw          # [S, kw]
    patch = xp[:, rows[:, :, None], cols[:, None, :]]              # [C, S, kh, kw]
    return np.ascontiguousarray(patch.transpose(1, 0, 2, 3)).reshape(len(positions), -1)


class NormalEquations:
    """Running sums of P^T P and P^T T for one consumer (P: patches of the kept channels + 1)."""

    def __init__(self, dim: int, outputs: int):
        self.a = np.zeros((dim + 1, dim + 1))
        self.b = np.zeros((dim + 1, outputs))
        self.n = 0

    def add(self, patches: np.ndarray, targets: np.ndarray) -> None:
        p = np.concatenate([patches, np.ones((len(patches), 1), patches.dtype)], axis=1).astype(np.float64)
        self.a += p.T @ p
        self.b += p.T @ targets.astype(np.float64)
        self.n += len(p)

    def solve(self, ridge: float) -> np.ndarray:
        """[dim + 1, outputs]: weights over the patch entries, last row the bias."""
        d = self.a.shape[0]
        lam = ridge * np.trace(self.a) / d
        reg = lam * np.eye(d)
        reg[-1, -1] = 0.0   # the bias is not shrunk
        return np.linalg.solve(self.a + reg, self.b)


def refit_pruned(original, pruned, plan: Mapping[str, Sequence[int]], feeds: Sequence[dict[str, np.ndarray]],
                 chunks: Optional[int] = None, positions_per_image: int = 2048, ridge: float = 1e-3, seed: int = 0, samples_per_weight: float = 4.0,
                 progress: Optional[Progress] = None) -> tuple[Any, int]:
    """Refit the convolutions of `pruned` so each output matches `original`'s same-named tensor
    (on the channels `plan` kept) given the inputs the pruned model itself produces.

    2-D group-1 Convs get weights and bias by least squares; the rest (depthwise and transposed
    convolutions, and Convs on maps too small to fit, e.g. squeeze-excitation on 1x1) get their
    bias corrected by the mean error, which removes a systematic shift (a detector's logits
    drifting below its threshold). Layers go in topological order, one at a time (or in `chunks`
    rounds, faster but worse: a layer fit to inputs that an earlier layer of its round then
    changes no longer matches), each seeing the inputs of a model whose earlier layers are
    already refit, so errors do not pile up along the depth. Returns (refit copy of `pruned`, how many were refit or corrected)."""
    from .blas_threads import limit_blas_threads
    from .graphedit import copy_model, remove_unused_initializers

    limit_blas_threads()   # OpenBLAS can spin in the solves once OpenVINO ran in the process (field notes)
    m = copy_model(pruned)
    g = m.graph
    jobs = _refit_jobs(m, original, plan)
    if not jobs:
        return m, 0
    started = time.perf_counter()
    samples = _targets(original, m, jobs, plan, feeds, positions_per_image, seed)
    done = 0
    rounds = np.array_split(np.asarray(sorted(jobs)), max(1, min(chunks or len(jobs), len(jobs))))
    for r, chunk in enumerate(rounds):
        chunk = [int(i) for i in chunk]
        eqs = {i: NormalEquations(int(np.prod(jobs[i][0].shape[1:])), jobs[i][0].shape[0])
               for i in chunk if jobs[i][1] is not None}
        err = {i: 0.0 for i in chunk}
        names = [n for i in chunk for n in (g.node[i].input[0], g.node[i].output[0])]
        for k, acts in enumerate(intermediate_activations(m, names, feeds)):
            for i in chunk:
                pos, width, target = samples[k][i]
                y = acts[g.node[i].output[0]][0]
                err[i] = err[i] + (target - y.reshape(y.shape[0], -1)[:, pos].T).sum(axis=0)
                if i in eqs:
                    eqs[i].add(sample_patches(acts[g.node[i].input[0]][0], jobs[i][1], pos, width), target)
        for i in chunk:
            if i in eqs and eqs[i].n >= samples_per_weight * eqs[i].a.shape[0]:
                _write(m, i, eqs[i].solve(ridge), jobs[i][0])
            else:
                n = sum(len(samples[k][i][0]) for k in range(len(samples)))
                _correct_bias(m, i, err[i] / max(n, 1))
            done += 1
        if progress and (r + 1) % max(1, len(rounds) // 10) == 0:
            spent = time.perf_counter() - started
            progress(f"  least-squares refit: {done} of {len(jobs)} convolutions, {spent:.0f} s, "
                     f"ETA {spent / done * (len(jobs) - done):.0f} s")
    remove_unused_initializers(m)   # the replaced weights would otherwise stay in the file
    return m, done


def _refit_jobs(m, original, plan) -> dict[int, tuple[np.ndarray, Optional[dict[str, Any]]]]:
    """Node index -> (weight, geometry for a full refit or None for a bias correction)."""
    from onnx import numpy_helper

    from .graphedit import attr

    inits = {t.name: t for t in m.graph.initializer}
    orig_w = {n.output[0]: n.input[1] for n in original.graph.node if n.op_type in ("Conv", "ConvTranspose")}
    orig_inits = {t.name: t for t in original.graph.initializer}
    jobs = {}
    for i, node in enumerate(m.graph.node):
        if node.op_type not in ("Conv", "ConvTranspose") or node.input[1] not in inits or node.output[0] not in orig_w:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        group = int(attr(node, "group", 1))
        out_ch = w.shape[0] if node.op_type == "Conv" else w.shape[1] * group
        t = orig_inits.get(orig_w[node.output[0]])
        t_out = None if t is None else (t.dims[0] if node.op_type == "Conv" else t.dims[1] * group)
        if node.name in plan:
            t_out = len(plan[node.name])
        if t_out != out_ch:   # e.g. a depthwise Conv inside a pruned group: which channels it kept is not named
            continue
        full = node.op_type == "Conv" and group == 1
        jobs[i] = (w, conv_geometry(node, w.shape) if full else None)
    return jobs


def _targets(original, m, jobs, plan, feeds, positions_per_image: int, seed: int):
    """Per image: node -> (sampled flat output positions, output width, teacher values [S, O])."""
    rng = np.random.default_rng(seed)
    g = m.graph
    out = []
    for acts in intermediate_activations(original, [g.node[i].output[0] for i in jobs], feeds):
        per = {}
        for i in jobs:
            y = acts[g.node[i].output[0]][0]
            if g.node[i].name in plan:
                y = y[np.asarray(plan[g.node[i].name], np.int64)]
            hw = int(np.prod(y.shape[1:]))
            pos = rng.choice(hw, size=min(hw, positions_per_image), replace=False)
            per[i] = (pos, y.shape[-1], y.reshape(y.shape[0], -1)[:, pos].T.copy())
        out.append(per)
    return out


def _correct_bias(model, ni: int, delta: np.ndarray) -> None:
    from onnx import numpy_helper

    node = model.graph.node[ni]
    inits = {t.name: t for t in model.graph.initializer}
    has_bias = len(node.input) > 2 and node.input[2] in inits
    bias = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if has_bias else np.zeros(len(delta))
    bname = f"{node.name}_refit_bias"
    model.graph.initializer.append(numpy_helper.from_array((bias + delta).astype(np.float32), bname))
    if len(node.input) > 2:
        node.input[2] = bname
    else:
        node.input.append(bname)


def _write(model, ni: int, sol: np.ndarray, w: np.ndarray) -> None:
    """Store a solution ([C*kh*kw + 1, O], last row the bias) as the node's new weight and bias."""
    from onnx import numpy_helper

    node = model.graph.node[ni]
    wname, bname = f"{node.name}_refit_weight", f"{node.name}_refit_bias"
    model.graph.initializer.append(numpy_helper.from_array(sol[:-1].T.reshape(w.shape).astype(w.dtype), wname))
    model.graph.initializer.append(numpy_helper.from_array(sol[-1].astype(w.dtype), bname))
    node.input[1] = wname
    if len(node.input) > 2:
        node.input[2] = bname
    else:
        node.input.append(bname)


def intermediate_activations(model, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]],
                             purpose: str = "refit the pruned layers"):
    """Per feed, {tensor: value} of the named intermediate tensors (one onnxruntime session)."""
    from onnx import helper

    import onnxruntime as ort

    from .errors import ConversionError
    from .graphedit import copy_model

    m = copy_model(model)
    names = list(dict.fromkeys(tensors))
    keep = [o for o in m.graph.output if o.name in names]
    del m.graph.output[:]     # only what is asked for: onnxruntime drops the nodes after it
    m.graph.output.extend(keep)
    for t in names:
        if t not in {o.name for o in keep}:
            m.graph.output.append(helper.ValueInfoProto(name=t))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # engine errors come in many types; say what it was for
        raise ConversionError(f"cannot run the model on onnxruntime to {purpose}: {e}") from e
    for feed in feeds:
        yield dict(zip(names, sess.run(names, feed)))
