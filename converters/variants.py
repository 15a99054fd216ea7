"""Build, check and measure the variants a conversion considers.

A variant is one (backend, file precision, runtime precision) a device profile allows:
"onnxruntime int8 (static QDQ)", "openvino fp32 IR run with bf16 hint", "litert fp16",
"tensorrt int8 recipe", ... `VariantBuilder.build(backend, precision)` makes its files from
the prepared fp32 ONNX model; `check` compares it with the original on held-out samples
(through the runtime interface only) and, when the host is the target, measures latency.
Every INT8 quantizer starts from the prepared model with its weights rounded on the calibration
data (converters.weight_rounding; `weight_rounding=False` turns it off). INT8 variants over the
accuracy budget go through the sensitivity guard, which keeps the most sensitive layers float
(onnxruntime QDQ, OpenVINO, LiteRT: converters.tflite_guard keeps TFLite ops float). The Edge
TPU's full-integer model cannot keep layers float.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .compare import Comparator, Comparison
from .errors import ConversionError, EdgeSDKError
from .samples import batch_of_one
from .guard import Verdict, judge
from .sensitivity import GuardReport, bisect_float_layers

from runtimes.registry import RECORDS

#: backends that run on this machine through `runtimes` (from the backend records)
LOCAL_BACKENDS = tuple(r.name for r in RECORDS.values() if r.engine)
#: backends whose artifacts are built for a device we cannot run here
RECIPE_BACKENDS = tuple(r.name for r in RECORDS.values() if not r.engine)


#: said of a LiteRT variant that XNNPACK refused (runtimes.litert falls back to the builtin kernels)
BUILTIN_KERNELS_NOTE = ("XNNPACK could not prepare this model: LiteRT runs it on its builtin kernels (slower), here "
                        "and on the device")


@dataclass
class Variant:
    """One candidate: its files, what it is, and what was measured about it."""

    key: str                         # short id, e.g. "openvino-int8+bf16"
    name: str                        # words for the report
    backend: str                     # backend the bundle names (onnxruntime/openvino/litert/tensorrt/edgetpu)
    precision: str                   # what the file holds: fp32|fp16|int8|mixed
    model: str = ""                  # entry file (bundle-relative)
    files: dict[str, Path] = field(default_factory=dict)
    runtime_precision: Optional[str] = None  # what to ask the runtime for (the bf16 hint)
    device: str = "CPU"
    layout: str = "NCHW"
    #: how to run it here for checking: (backend, file) or None when it cannot run here
    check_with: Optional[tuple[str, Path]] = None
    comparison: Optional[Comparison] = None
    latency: Optional[dict[str, Any]] = None
    guard: Optional[GuardReport] = None
    verified: list[str] = field(default_factory=list)
    not_verified: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: Optional[str] = None
    build_seconds: float = 0.0
    ran_precision: Optional[str] = None  # what the runtime said it ran
    #: integer-input models (Edge TPU): the input dtype and (scale, zero_point) the device feeds
    input_dtype: Optional[str] = None
    input_quantization: Optional[tuple[float, int]] = None
    checked: bool = False
    #: the drop against the budget with its bootstrap interval (converters.guard)
    verdict: Optional[Verdict] = None

    @property
    def size_bytes(self) -> int:
        """Size of the model files (recipes and caches not counted)."""
        return sum(p.stat().st_size for rel, p in self.files.items()
                   if p.is_file() and Path(rel).suffix in (".onnx", ".xml", ".bin", ".tflite")
                   and not rel.startswith("vitis_ai/"))  # vai_q_onnx's input, not what runs

    @property
    def ok(self) -> bool:
        return self.error is None

    def within(self, budget: float) -> Optional[bool]:
        if self.comparison is None:
            return None
        return self.comparison.drop <= budget + 1e-12

    def to_dict(self, budget: Optional[float] = None, baseline: Optional["Variant"] = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "key": self.key, "name": self.name, "backend": self.backend, "precision": self.precision,
            "runtime_precision": self.runtime_precision, "ran_precision": self.ran_precision,
            "device": self.device, "layout": self.layout, "model": self.model,
            "files": sorted(self.files), "size_bytes": self.size_bytes if self.ok else None,
            "accuracy": self.comparison.to_dict() if self.comparison else None,
            "latency": self.latency, "guard": self.guard.to_dict() if self.guard else None,
            "verified": self.verified, "not_verified": self.not_verified, "notes": self.notes,
            "error": self.error, "build_seconds": round(self.build_seconds, 2),
            "verdict": self.verdict.to_dict() if self.verdict else None,
        }
        if budget is not None:
            d["within_budget"] = self.within(budget)
        if baseline is not None and self.ok and baseline.ok and baseline.size_bytes:
            d["size_ratio"] = round(self.size_bytes / baseline.size_bytes, 4)
            if self.latency and baseline.latency:
                d["speedup"] = round(baseline.latency["p50_ms"] / self.latency["p50_ms"], 3)
        return d


#: what an openvino-bf16 variant is, said on every route that builds one
BF16_HINT_NOTE = ("bf16 is a runtime precision: the fp32 IR with INFERENCE_PRECISION_HINT=bf16 (AMX / AVX-512 BF16 "
                  "CPUs); the manifest's runtime.precision asks for it")


@dataclass
class BuildSettings:
    prepared: Path                          # prepared fp32 ONNX (static, named, folded)
    work: Path                              # scratch folder for variant files
    input_name: str
    input_shape: list[int]
    calib: Optional[np.ndarray] = None      # calibration samples (model-ready)
    comparator: Optional[Comparator] = None  # held-out comparison against the original
    budget: float = 0.02
    calib_method: str = "nncf"
    exclude: Sequence[str] = ()
    guard_steps: int = 8
    ranking_samples: int = 4
    accuracy_control: str = "edgesdk"       # edgesdk | nncf (OpenVINO INT8)
    #: INT8 weights rounded on the calibration data before any backend quantizes them
    #: (converters.weight_rounding); False: nearest rounding, each quantizer's own
    weight_rounding: bool = True
    threads: Optional[int] = None
    measure: bool = False
    bench_seconds: float = 1.0
    trt_version: str = "10.3.0"
    dla_core: Optional[int] = None
    progress: Callable[[str], None] = lambda msg: None
    model_name: Optional[str] = None        # the user's file name, for messages


class VariantBuilder:
    """Builds variants from one prepared model; remembers measurements between variants."""

    def __init__(self, settings: BuildSettings) -> None:
        self.s = settings
        self.s.work.mkdir(parents=True, exist_ok=True)
        self._ov_float: Any = None
        self._ov_int8: Any = None
        self._ov_int8_guard: Optional[GuardReport] = None
        self._float_best_ms: Optional[float] = None
        self._subset: Optional[Comparator] = None
        self._quantizer: Any = None
        self._rounded: Optional[Path] = None
        self._quant_base_path: Optional[Path] = None
        self._quant_base_note: Optional[str] = None
        self._rounding_note: Optional[str] = None
        self._ov_rounded: Any = None
        self._ov_aligned: Any = None
        #: the held-out scores behind the weight-rounding choice (`_pick_rounding`), for reports
        self.rounding_choice: Optional[dict[str, Any]] = None

    # ----------------------------------------------------------------- public
    def build(self, backend: str, precision: str) -> Variant:
        """Build (and check) one variant; a failure is recorded on the variant, not raised,
        unless it is a usage error that every variant would hit."""
        start = time.perf_counter()
        builder = BUILDERS.get(backend)
        if builder is None:
            raise ConversionError(f"no converter for backend {backend!r}; converters exist for {', '.join(BUILDERS)}")
        from runtimes.registry import RECORDS

        if None in list(self.s.input_shape) and getattr(RECORDS.get(backend), "static_shapes", False):
            return Variant(f"{backend}-{precision}", f"{backend} {precision}", backend, precision,
                           error=f"skipped: {backend} needs static input shapes; pass --input-shape with every dim "
                                 f"fixed to build it (the input {self.s.input_shape} keeps dims dynamic)")
        try:
            variant = builder(self, precision)
        except ConversionError as exc:
            variant = Variant(f"{backend}-{precision}", f"{backend} {precision}", backend, precision, error=str(exc))
        variant.build_seconds = time.perf_counter() - start
        if variant.ok and variant.check_with is not None and not variant.checked:
            self.check(variant)
        return variant

    def check(self, v: Variant) -> None:
        """Compare with the original on held-out samples; measure latency when asked."""
        import runtimes

        backend, path = v.check_with
        v.checked = True
        kw: dict[str, Any] = {"precision": v.runtime_precision}
        if self.s.threads:
            kw["threads"] = self.s.threads
        try:
            rt = runtimes.load(path, backend=backend, **kw)
            with rt:
                v.ran_precision = rt.precision
                # (a variant made from another, as the guard's, may have inherited the note)
                v.notes = [n for n in v.notes if n != BUILTIN_KERNELS_NOTE]
                if getattr(rt, "kernels", None) == "builtin":
                    v.notes.append(BUILTIN_KERNELS_NOTE)
                if self.s.comparator is not None and v.comparison is None:
                    v.comparison = self.s.comparator.compare(rt)
                    v.verdict = judge(v.comparison, self.s.budget)
                    v.verified.append(f"outputs compared with the original on {v.comparison.samples} held-out "
                                      f"samples with {backend} on this machine: {v.comparison.summary()}; "
                                      f"{v.verdict.summary()}")
                if self.s.measure:
                    v.latency = self._latency(rt)
        except EdgeSDKError as exc:
            v.error = f"could not run the converted model with {backend}: {exc}"
            return
        if self.s.comparator is None:
            v.not_verified.append("accuracy: no held-out samples (give --calib with real images)")
        if (v.precision in ("fp32", "fp16") and v.latency and v.within(self.s.budget) is not False
                and (self._float_best_ms is None or v.latency["p50_ms"] < self._float_best_ms)):
            self._float_best_ms = v.latency["p50_ms"]

    def remeasure(self, variants: Sequence[Variant], rounds: int = 3, max_rounds: int = 9,
                  target_spread: float = 0.05) -> list[str]:
        """Time the variants again, interleaved: round after round, each variant in turn, until
        every variant's round medians agree within `target_spread` (relative: (max - min) /
        median) or `max_rounds` rounds ran. A busy machine slows whatever runs at that moment;
        interleaving spreads that over all variants. Latency = median of the round medians;
        `spread` is printed with it. Returns warnings (busy machine, spread not reached)."""
        import runtimes

        live = []
        try:
            for v in variants:
                if not v.ok or v.check_with is None:
                    continue
                backend, path = v.check_with
                try:
                    rt = runtimes.load(path, backend=backend, precision=v.runtime_precision,
                                       **({"threads": self.s.threads} if self.s.threads else {}))
                    rt.activate()
                except EdgeSDKError as exc:  # an engine gone since the check: keep the others' timing
                    v.notes.append(f"not timed again: {exc}")
                    continue
                live.append((v, rt, self._sample(rt), []))
            per_round = max(0.2, self.s.bench_seconds / max(1, rounds))
            done = 0
            while done < max_rounds:
                self._timing_round(live, per_round, first=done == 0)
                done += 1
                if done >= rounds and all(_spread(stats) <= target_spread for _, _, _, stats in live):
                    break
            for v, _, _, stats in live:
                v.latency = _round_latency(stats, done)
        finally:
            for _, rt, _, _ in live:
                rt.deactivate()
        timed = [v for v, _, _, _ in live]
        return _timing_warnings(timed, target_spread, max_rounds) + note_slower_than_float(timed)

    @staticmethod
    def _timing_round(live: list, seconds: float, first: bool) -> None:
        from runtimes.timing import measure

        for _, rt, feed, stats in live:
            stats.append(measure(rt, feed, warmup=2 if first else 1, iterations=5, seconds=seconds))

    # ----------------------------------------------------------------- helpers
    def _say(self, msg: str) -> None:
        self.s.progress(msg)

    def _latency(self, rt: Any) -> dict[str, Any]:
        from runtimes.timing import measure

        feed = self._sample(rt)
        stats = measure(rt, feed, warmup=3, iterations=10, seconds=self.s.bench_seconds)
        return stats.to_dict()

    def _sample(self, rt: Any) -> np.ndarray:
        cmp = self.s.comparator
        if cmp is not None and isinstance(cmp.samples, np.ndarray):
            x = cmp.samples[:1]
        elif self.s.calib is not None:
            x = batch_of_one(self.s.calib, 0)  # a real sample: with dynamic dims, its own shape
        else:
            x = np.zeros([1] + list(self.s.input_shape[1:]), np.float32)
        return Comparator._adapt(x, rt)

    def _file(self, name: str) -> Path:
        return self.s.work / name

    def _need_calib(self, what: str) -> np.ndarray:
        if self.s.calib is None or len(self.s.calib) == 0:
            raise ConversionError(f"{what} needs calibration data: pass --calib with a folder of real images, a video "
                                  "or a .npy (never random noise)")
        return self.s.calib

    def _subset_comparator(self) -> Optional[Comparator]:
        """A comparator on the first few held-out samples, for ranking layers quickly."""
        cmp = self.s.comparator
        if cmp is None:
            return None
        if self._subset is None:
            self._subset = cmp.subset(self.s.ranking_samples)
        return self._subset

    def _drop(self, comparator: Comparator, backend: str, path: Path, precision: Optional[str] = None) -> float:
        return comparator.compare(path, backend=backend, precision=precision,
                                  **({"threads": self.s.threads} if self.s.threads else {})).drop

    # ----------------------------------------------------------------- onnxruntime
    def _build_onnxruntime(self, precision: str) -> Variant:
        from . import onnx_quant

        s = self.s
        if precision == "fp32":
            path = self._file("model.onnx")
            shutil.copyfile(s.prepared, path)
            v = Variant("onnxruntime-fp32", "onnxruntime fp32", "onnxruntime", "fp32")
        elif precision == "fp16":
            path = self._file("model_fp16.onnx")
            notes = onnx_quant.to_fp16(s.prepared, path)
            v = Variant("onnxruntime-fp16", "onnxruntime fp16", "onnxruntime", "fp16", notes=notes)
        elif precision == "int8":
            if s.calib is None:
                path = self._file("model_int8_dynamic.onnx")
                notes = onnx_quant.quantize_dynamic(self._quant_base(), path)
                v = Variant("onnxruntime-int8-dynamic", "onnxruntime int8 (dynamic)", "onnxruntime", "int8", notes=notes)
                self._int8_notes(v)
            else:
                return self._ort_static(precision)
        else:
            raise ConversionError(f"onnxruntime has no {precision} conversion (it takes fp32, fp16, int8)")
        v.model, v.files, v.check_with = path.name, {path.name: path}, ("onnxruntime", path)
        return v

    def _int8_source(self) -> Path:
        """The float model every INT8 quantizer starts from: with `weight_rounding`, the prepared
        model with its Conv/Gemm weights rounded to int8 steps on the calibration data (made once),
        unless nearest rounding does better on the held-out samples (`_pick_rounding`)."""
        from . import weight_rounding

        if not self.s.weight_rounding:
            return self._quant_base()
        if self._rounded is None:
            calib = self._need_calib("INT8")
            self._say("int8: data-aware weight rounding (GPTQ-style) on the calibration samples")
            path = self._file("prepared_rounded.onnx")
            report = weight_rounding.round_weights(self._quant_base(), path, self.s.input_name, calib,
                                                   progress=self._say)
            note = report.summary() + f" ({report.seconds:.0f} s"
            self._rounded, choice = self._pick_rounding(path)
            self._rounding_note = note + "; " + choice + ")"
            self._say(self._rounding_note)
        return self._rounded

    def _pick_rounding(self, rounded: Path) -> tuple[Path, str]:
        """Data-aware or nearest weight rounding, whichever keeps the held-out metric closer to
        the original with only the weights on the int8 grid (activations float: the part the
        rounding changes; both are float models, so two onnxruntime passes over the held-out
        samples decide). Without held-out samples the data-aware rounding stays, unjudged."""
        from . import weight_rounding

        cmp = self.s.comparator
        if cmp is None:
            return rounded, "not judged on held-out data: no held-out samples; build setting weight_rounding=False " \
                            "keeps each quantizer's nearest rounding"
        nearest = self._file("prepared_nearest.onnx")
        weight_rounding.nearest_weights(self._quant_base(), nearest)
        try:
            kw = {"threads": self.s.threads} if self.s.threads else {}
            ours = cmp.compare(rounded, backend="onnxruntime", **kw)
            near = cmp.compare(nearest, backend="onnxruntime", **kw)
        finally:
            nearest.unlink(missing_ok=True)
        scores = (f"int8 weights only, held-out {ours.kind} drop: data-aware {ours.drop:.4f} (cosine "
                  f"{ours.cosine:.4f}), nearest {near.drop:.4f} (cosine {near.cosine:.4f})")
        self.rounding_choice = {"data_aware_drop": ours.drop, "nearest_drop": near.drop,
                                "data_aware_cosine": ours.cosine, "nearest_cosine": near.cosine}
        if (near.drop, -near.cosine) < (ours.drop, -ours.cosine):
            self.rounding_choice["kept"] = "nearest"
            rounded.unlink(missing_ok=True)
            return self._quant_base(), f"{scores}: nearest kept (each quantizer rounds to nearest itself)"
        self.rounding_choice["kept"] = "data-aware"
        return rounded, f"{scores}: data-aware kept; build setting weight_rounding=False forces nearest"

    def _quant_base(self) -> Path:
        """The float model the INT8 quantizers start from: the prepared model, with the large
        constants the graph passes left for the engine to build (converters.large_constants)
        folded, since quantizers quantize stored weights only (made once; the INT8 notes say so)."""
        if self._quant_base_path is None:
            from .large_constants import fold_expansions

            self._quant_base_path, self._quant_base_note = fold_expansions(
                self.s.prepared, self._file("prepared_weights_stored.onnx"))
        return self._quant_base_path

    def _int8_notes(self, v: Variant) -> None:
        if self._quant_base_note:
            v.notes.append(self._quant_base_note)
        if self._rounding_note:
            v.notes.append(self._rounding_note)

    def _static_quantizer(self) -> Any:
        """One StaticQuantizer per conversion: calibration runs once, ranges are cached."""
        from . import onnx_quant

        if self._quantizer is None:
            calib = self._need_calib("static INT8")
            src, base = self._int8_source(), self._quant_base()
            self._say(f"int8 QDQ: calibrating on {len(calib)} samples ({self.s.calib_method})")
            self._quantizer = onnx_quant.StaticQuantizer(src, self.s.input_name, calib, method=self.s.calib_method,
                                                         work_dir=self.s.work,
                                                         float_src=base if src != base else None)
        return self._quantizer

    def close(self) -> None:
        if self._quantizer is not None:
            self._quantizer.close()
            self._quantizer = None

    def _ort_static(self, precision: str, run: str = "onnxruntime") -> Variant:
        """Static QDQ INT8 (onnxruntime's quantizer); `run` is the engine that runs the file:
        onnxruntime, or OpenVINO (which reads QDQ ONNX and runs it in int8)."""
        import onnx

        from . import onnx_quant

        s = self.s
        quantizer = self._static_quantizer()
        hint = "int8" if run == "openvino" else None
        tag = "" if run == "onnxruntime" else "-ov"
        stem = f"model_int8{tag.replace('-', '_')}"
        path = quantizer.quantize(self._file(f"{stem}.onnx"), exclude=s.exclude)
        if run == "onnxruntime":
            v = Variant("onnxruntime-int8", f"onnxruntime int8 (static QDQ, per-channel, {s.calib_method})",
                        "onnxruntime", "int8")
        else:
            v = Variant("openvino-int8-qdq", f"openvino int8 (static QDQ ONNX, {s.calib_method})", "openvino", "int8",
                        runtime_precision=hint)
        v.model, v.files, v.check_with = path.name, {path.name: path}, (run, path)
        if s.exclude:
            v.notes.append(f"kept float by request: {', '.join(s.exclude)}")
        v.notes.append(f"calibrated on {len(quantizer.calib)} samples ({s.calib_method}); int8 inputs for "
                       f"{'layers with weights' if quantizer.scope == 'weighted' else 'all supported ops'}")
        self._int8_notes(v)
        if s.comparator is None:
            return v
        self.check(v)
        if v.within(s.budget) or not v.ok or self._guard_off(v):
            return v
        # the guard: rank on a keep-activations QDQ model by surgery, step with real re-quantization
        float_model = onnx.load(str(self._quant_base()))
        scratch_files = [self._file(f"ranking_qdq{tag}.onnx"), self._file(f"ranking_trial{tag}.onnx"),
                         self._file(f"guard_trial{tag}.onnx")]
        keep_path, scratch, trial = scratch_files
        try:
            quantizer.quantize(keep_path, exclude=s.exclude, keep_activations=True)
            ranking_model = onnx.load(str(keep_path))
            candidates = [n for n in onnx_quant.quantized_layers(ranking_model) if n not in s.exclude]
            sub = self._subset_comparator()

            def rank_eval(excluded: Sequence[str]) -> float:
                # ranked with onnxruntime whatever runs the file: same QDQ semantics, and a session
                # is ~10x cheaper to create than an OpenVINO compile; the steps use `run`
                onnx.save(onnx_quant.revert_layers(ranking_model, float_model, excluded), str(scratch))
                return self._drop(sub, "onnxruntime", scratch)

            def evaluate(excluded: Sequence[str]) -> float:
                if not excluded:
                    return v.comparison.drop
                quantizer.quantize(trial, exclude=list(s.exclude) + list(excluded))
                return self._drop(s.comparator, run, trial, hint)

            latency = None
            if s.measure:
                def latency(excluded: Sequence[str]) -> float:
                    import runtimes

                    quantizer.quantize(trial, exclude=list(s.exclude) + list(excluded))
                    with runtimes.load(trial, backend=run, precision=hint, threads=s.threads) as rt:
                        return self._latency(rt)["p50_ms"]

            guard = bisect_float_layers(candidates, evaluate, s.budget, rank_evaluate=rank_eval, latency=latency,
                                        progress=self._say)
        finally:
            for f in scratch_files:
                f.unlink(missing_ok=True)
        v.guard = guard
        if not guard.excluded:
            return v
        final = quantizer.quantize(self._file(f"{stem}_mixed.onnx"), exclude=list(s.exclude) + guard.excluded)
        path.unlink()
        mixed = Variant(v.key + "-mixed", v.name + f" with {len(guard.excluded)} layers float", v.backend, "mixed",
                        model=final.name, files={final.name: final}, check_with=(run, final), guard=guard,
                        runtime_precision=hint, notes=list(v.notes))
        mixed.notes.append(f"kept float by the accuracy guard: {', '.join(guard.excluded)}")
        self.check(mixed)
        return mixed

    # ----------------------------------------------------------------- openvino
    def _ov_model(self) -> Any:
        from . import openvino_ir

        if self._ov_float is None:
            self._ov_float = openvino_ir.read_onnx(self.s.prepared, self.s.model_name)
        return self._ov_float

    def _build_openvino(self, precision: str) -> Variant:
        from . import openvino_ir

        if precision in ("fp32", "bf16"):
            xml = self._file("model.xml")
            if not xml.is_file():
                openvino_ir.save_ir(self._ov_model(), xml)
            if precision == "fp32":
                v = Variant("openvino-fp32", "openvino fp32 IR", "openvino", "fp32", runtime_precision="fp32")
            else:
                v = Variant("openvino-bf16", "openvino fp32 IR run with bf16 hint", "openvino", "fp32",
                            runtime_precision="bf16", notes=[BF16_HINT_NOTE])
        elif precision == "fp16":
            xml = self._file("model_fp16.xml")
            openvino_ir.save_ir(self._ov_model(), xml, compress_to_fp16=True)
            v = Variant("openvino-fp16", "openvino fp16 IR (fp16 weights)", "openvino", "fp16", runtime_precision="fp16")
        elif precision in ("int8", "int8+bf16"):
            return self._ov_int8_variant(precision)
        elif precision == "int8-qdq":
            return self._ort_static("int8", run="openvino")
        else:
            raise ConversionError(f"OpenVINO has no {precision} conversion (it takes fp32, fp16, bf16, int8)")
        v.model = xml.name
        v.files = {xml.name: xml, xml.with_suffix(".bin").name: xml.with_suffix(".bin")}
        v.check_with = ("openvino", xml)
        return v

    def _ov_int8_variant(self, precision: str) -> Variant:
        """NNCF INT8 (built once); "int8+bf16" runs the same IR with a bf16 hint for its float parts."""
        from . import openvino_ir

        s = self.s
        hint = "bf16" if precision == "int8+bf16" else "int8"
        if self._ov_int8 is None:
            calib = self._need_calib("OpenVINO INT8")
            src = self._int8_source()
            if self._ov_rounded is None:
                self._ov_rounded = (self._ov_model() if src == s.prepared
                                    else openvino_ir.read_onnx(src, s.model_name))
            self._say(f"openvino int8: NNCF on {len(calib)} samples")
            q = openvino_ir.quantize(self._ov_rounded, calib, ignored=s.exclude)
            xml = openvino_ir.save_ir(q, self._file("model_int8.xml"))
            self._ov_int8 = (q, xml)
        q, xml = self._ov_int8
        suffix = " run with bf16 hint (float parts in bf16)" if hint == "bf16" else ""
        key = "openvino-int8" + ("+bf16" if hint == "bf16" else "")
        v = Variant(key, "openvino int8 IR (NNCF)" + suffix, "openvino", "int8", runtime_precision=hint)
        v.notes.append(f"NNCF post-training quantization on {len(s.calib)} samples")
        self._int8_notes(v)
        self._ov_files(v, xml)
        if s.comparator is None:
            return v
        self.check(v)
        if v.within(s.budget) or not v.ok or self._guard_off(v):
            return v
        if self._ov_int8_guard is not None:  # the same IR was guarded already (other hint)
            return self._ov_mixed(v, self._ov_int8_guard, hint)
        if s.accuracy_control == "nncf":
            guard_xml = self._ov_nncf_control(v)
            if guard_xml is None:
                return v
            return self._ov_from_file(v, guard_xml, hint, "NNCF accuracy control")
        float_model = self._ov_revert_source()
        candidates = [n for n in openvino_ir.quantized_layers(q) if n not in s.exclude]
        sub = self._subset_comparator()
        scratch = self._file("ov_trial.xml")

        def trial_drop(comparator: Comparator, excluded: Sequence[str]) -> float:
            openvino_ir.save_ir(openvino_ir.revert_layers(q, excluded, float_model), scratch)
            return self._drop(comparator, "openvino", scratch, hint)

        def evaluate(excluded: Sequence[str]) -> float:
            return v.comparison.drop if not excluded else trial_drop(s.comparator, excluded)

        latency = None
        if s.measure:
            def latency(excluded: Sequence[str]) -> float:
                import runtimes

                openvino_ir.save_ir(openvino_ir.revert_layers(q, excluded, float_model), scratch)
                with runtimes.load(scratch, backend="openvino", precision=hint, threads=s.threads) as rt:
                    return self._latency(rt)["p50_ms"]

        try:
            guard = bisect_float_layers(candidates, evaluate, s.budget, rank_evaluate=lambda ex: trial_drop(sub, ex),
                                        latency=latency, progress=self._say)
        finally:
            for f in (scratch, scratch.with_suffix(".bin")):
                f.unlink(missing_ok=True)
        self._ov_int8_guard = guard
        v.guard = guard
        return self._ov_mixed(v, guard, hint)

    def _ov_revert_source(self) -> Any:
        """The float model whose weights and biases layers kept float get back, with op names
        matching the INT8 source's (openvino_ir.align_names: the rounded model is another read)."""
        from . import openvino_ir

        if self._ov_rounded is None or self._ov_rounded is self._ov_model():
            return self._ov_model()
        if self._ov_aligned is None:
            self._ov_aligned, renamed = openvino_ir.align_names(self._ov_model(), self._ov_rounded)
            if not renamed and self._ov_aligned.get_ordered_ops()[-1].get_friendly_name() != \
                    self._ov_rounded.get_ordered_ops()[-1].get_friendly_name():
                self._say("openvino int8: the float and rounded graphs differ; layers kept float keep rounded weights")
        return self._ov_aligned

    def _ov_files(self, v: Variant, xml: Path) -> None:
        v.model = xml.name
        v.files = {xml.name: xml, xml.with_suffix(".bin").name: xml.with_suffix(".bin")}
        v.check_with = ("openvino", xml)

    def _ov_mixed(self, v: Variant, guard: GuardReport, hint: str) -> Variant:
        from . import openvino_ir

        v.guard = guard
        if not guard.excluded:
            return v
        xml = self._file("model_int8_mixed.xml")
        if not xml.is_file():
            q, _ = self._ov_int8
            openvino_ir.save_ir(openvino_ir.revert_layers(q, guard.excluded, self._ov_revert_source()), xml)
        return self._ov_from_file(v, xml, hint, "the accuracy guard", guard.excluded)

    def _ov_from_file(self, v: Variant, xml: Path, hint: str, by: str, layers: Sequence[str] = ()) -> Variant:
        mixed = Variant(v.key + "-mixed", v.name + (f" with {len(layers)} layers float" if layers else f" ({by})"),
                        "openvino", "mixed", runtime_precision=hint, guard=v.guard, notes=list(v.notes))
        if layers:
            mixed.notes.append(f"kept float by {by}: {', '.join(layers)}")
        self._ov_files(mixed, xml)
        self.check(mixed)
        return mixed

    def _guard_off(self, v: Variant) -> bool:
        """guard_steps 0 (`--guard-steps 0`): an over-budget INT8 variant stays as it is, said in its notes."""
        if self.s.guard_steps > 0:
            return False
        v.notes.append("accuracy guard off (--guard-steps 0): over budget, no layer was kept float")
        return True

    def _ov_nncf_control(self, v: Variant) -> Optional[Path]:
        from . import openvino_ir
        from .compare import cosine

        s = self.s
        cmp = s.comparator
        if not isinstance(cmp.samples, np.ndarray):
            v.notes.append("NNCF accuracy control needs array samples; skipped")
            return None
        refs = [next(iter(r.values())) for r in cmp.reference_outputs]

        def validate(compiled: Any, data: Any) -> float:
            outs = [compiled(x)[0] for x in data]
            if cmp.task == "classification":
                return float(np.mean([np.argmax(o) == np.argmax(r) for o, r in zip(outs, refs)]))
            return float(np.mean([cosine(o, r) for o, r in zip(outs, refs)]))

        self._say("openvino int8: NNCF accuracy-controlled quantization (slow: ranks every quantizer)")
        q = openvino_ir.quantize_with_accuracy_control(self._ov_model(), s.calib, cmp.samples, validate, s.budget,
                                                       max_steps=s.guard_steps, ranking_samples=s.ranking_samples)
        return openvino_ir.save_ir(q, self._file("model_int8_nncf_ac.xml"))

    # ----------------------------------------------------------------- litert
    def _build_litert(self, precision: str, *, full_integer: bool = False) -> Variant:
        from . import tflite

        s = self.s
        if precision not in tflite.PRECISIONS:
            raise ConversionError(f"TFLite has no {precision} conversion (it takes {', '.join(tflite.PRECISIONS)})")
        calib = s.calib if s.calib is not None else None
        if calib is None:
            if precision == "int8":
                self._need_calib("TFLite INT8")
            raise ConversionError("TFLite conversion (onnx2tf) needs real samples for its own output check and the "
                                  "input shape: pass --calib with real images")
        from . import tflite_guard

        if precision == "int8" and not full_integer:
            return tflite_guard.build_int8(self)  # calibrated by us, through the accuracy guard
        out = s.work / f"tflite_{precision}"
        self._say(f"litert {precision}: onnx2tf (about a minute)")
        if precision == "fp32":  # its SavedModel is kept for the INT8 variant
            result = tflite_guard.saved_model(self, s.prepared)
            out.mkdir(parents=True, exist_ok=True)
        else:
            src = self._int8_source() if precision == "int8" else s.prepared
            result = tflite.onnx_to_tflite(src, out, precision, tflite_guard.spread(calib, 32),
                                           progress=lambda line: None)
        path = Path(shutil.copy2(result.path, out / f"model_{precision}.tflite"))
        v = Variant(f"litert-{precision}", f"litert {precision} (onnx2tf)", "litert", precision, layout="NHWC",
                    notes=["TFLite models are NHWC: the bundle's preprocessing says layout NHWC"] + list(result.changes))
        if precision == "int8":  # the Edge TPU's full-integer model: onnx2tf's INT8, no layer can stay float
            self._int8_notes(v)
            v.notes.append("full-integer INT8 for the Edge TPU: every layer int8 (no layer kept float); "
                           f"onnx2tf calibrated on {min(len(calib), 32)} samples spread over the set")
        if full_integer:
            full = result.variants.get("full_integer_quant")
            if full is None:
                raise ConversionError("onnx2tf made no full-integer model (needed for the Edge TPU)")
            full = full.rename(out / "model_full_integer_quant.tflite")
            v.files = {full.name: full, path.name: path}
            v.model = full.name
            v.input_dtype, v.input_quantization = _tflite_input_quantization(full)
        else:
            v.files, v.model = {path.name: path}, path.name
        v.check_with = ("litert", path)
        return v

    # ----------------------------------------------------------------- recipes
    def _build_tensorrt(self, precision: str) -> Variant:
        from . import tensorrt

        s = self.s
        folder = s.work / "tensorrt"
        model = self._file("model.onnx")
        if not model.is_file():
            shutil.copyfile(s.prepared, model)
        cache = None
        files = {model.name: model}
        if precision == "int8":
            calib = self._need_calib("TensorRT INT8 (calibration cache)")
            self._say(f"tensorrt int8: calibration cache from {len(calib)} samples")
            amax = tensorrt.tensor_ranges(s.prepared, calib, s.input_name)
            folder.mkdir(parents=True, exist_ok=True)
            cache_path = tensorrt.write_calibration_cache(folder / "calibration.cache", amax, s.trt_version)
            cache = "tensorrt/calibration.cache"
            files[cache] = cache_path
        rec = tensorrt.recipe(model.name, precision, input_name=s.input_name, input_shape=s.input_shape,
                              calibration_cache=cache, dla_core=s.dla_core, trt_version=s.trt_version)
        for p in tensorrt.write_recipe(folder, rec):
            files[f"tensorrt/{p.name}"] = p
        v = Variant(f"tensorrt-{precision}", f"tensorrt {precision} (engine built on the device)", "tensorrt",
                    "fp32", model=model.name, files=files, runtime_precision=precision, device="GPU",
                    check_with=("onnxruntime", model), notes=rec.notes)
        v.not_verified.append(f"the TensorRT {precision} engine: TensorRT is not on this machine; build it with "
                              "tensorrt/build_engine.sh on the device and compare there")
        if precision == "int8":
            v.not_verified.append("INT8 accuracy under TensorRT's calibration (the cache's ranges are max-abs over "
                                  "the calibration samples)")
        return v

    def _build_edgetpu(self, precision: str) -> Variant:
        from . import edgetpu

        if precision != "int8":
            raise ConversionError(f"the Edge TPU runs only full-integer int8 models, not {precision}")
        v = self._build_litert("int8", full_integer=True)
        full = v.files[v.model]
        result = edgetpu.compile_model(full, full.parent)
        folder = self.s.work / "edgetpu"
        recipe_files = edgetpu.write_recipe(folder, result, full.name)
        v.key, v.name, v.backend, v.device = "edgetpu-int8", "edgetpu int8 (full-integer TFLite)", "edgetpu", "NPU"
        if result.compiled:
            v.files[result.model.name] = result.model
            v.model = result.model.name
            v.verified.append(f"compiled with edgetpu_compiler ({result.model.name})")
        else:
            v.not_verified.append("edgetpu_compiler step (not installed here): run edgetpu/compile.sh")
        for p in recipe_files:
            v.files[f"edgetpu/{p.name}"] = p
        v.not_verified.append("running on the Edge TPU; accuracy checked on the CPU with the integer-quantized "
                              "TFLite (same weights and ranges, float input/output)")
        v.notes.extend(result.notes)
        return v


    def _build_vitis_ai(self, precision: str) -> Variant:
        """onnxruntime's INT8 QDQ (checked here, the board's CPU model) plus the vai_q_onnx recipe."""
        from . import vitis_ai

        if precision != "int8":
            raise ConversionError(f"the Vitis AI DPU runs only INT8 models, not {precision}")
        calib = self._need_calib("Vitis AI INT8 (the vai_q_onnx calibration samples)")
        v = self._ort_static("int8")
        files, notes = vitis_ai.write_recipe(self.s.work / "vitis_ai", self.s.prepared, calib, self.s.input_name,
                                             v.model)
        v.key, v.name, v.device = "vitis_ai-int8", "vitis_ai int8 (vai_q_onnx recipe; onnxruntime QDQ on the CPU)", "NPU"
        v.files.update(files)
        v.notes.extend(notes + ["on the board without the Vitis AI EP, onnxruntime falls back to the CPU (one warning)"])
        v.not_verified.append(f"{vitis_ai.RECIPE_MARK}: the DPU model (vai_q_onnx, power-of-two scales) and its run "
                              "through the Vitis AI EP: no Vitis AI tools or KV260 here; see vitis_ai/README.md")
        return v


def _spread(stats: Sequence[Any]) -> float:
    """Relative spread of the round medians: (max - min) / median."""
    p50s = np.array([st.p50 for st in stats], np.float64)
    return float((p50s.max() - p50s.min()) / max(np.median(p50s), 1e-9)) if len(p50s) else 0.0


def _round_latency(stats: Sequence[Any], rounds: int) -> dict[str, Any]:
    from runtimes.timing import LatencyStats

    d = LatencyStats.from_samples(np.concatenate([st.samples_ms for st in stats]), stats[0].batch).to_dict()
    d["p50_ms"] = float(np.median([st.p50 for st in stats]))
    d["rounds"] = rounds
    d["spread"] = round(_spread(stats), 4)
    return d


def _timing_warnings(timed: Sequence[Variant], target_spread: float, max_rounds: int) -> list[str]:
    """A busy machine (load above the core count) or spreads that never settled: say so."""
    out = []
    cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not on every platform
        load = 0.0
    if load > cores:
        out.append(f"the machine was busy while timing (load {load:.1f} on {cores} cores): latencies are noisy; "
                   "compare ratios within this run, or re-run on an idle machine")
    wide = [v.key for v in timed if v.latency and v.latency["spread"] > target_spread]
    if wide:
        out.append(f"timing did not settle within {target_spread:.0%} after {max_rounds} interleaved rounds for "
                   f"{', '.join(wide)}: treat their latency as +-{max(v.latency['spread'] for v in timed if v.latency):.0%}")
    return out


def note_slower_than_float(timed: Sequence[Variant]) -> list[str]:
    """INT8/mixed variants slower than their own backend's fp32 (on onnxruntime, float layers
    between QDQ pairs break the int8 kernel fusions): a note on the variant and a warning line."""
    fp32 = {v.backend: v.latency["p50_ms"] for v in timed if v.precision == "fp32" and v.latency}
    out = []
    for v in timed:
        base = fp32.get(v.backend)
        if v.precision not in ("int8", "mixed") or not v.latency or base is None or v.latency["p50_ms"] <= base:
            continue
        floats = len(v.guard.excluded) if v.guard else 0
        line = (f"{v.key} ({floats} layers kept float) is slower than {v.backend} fp32: {v.latency['p50_ms']:.2f} vs "
                f"{base:.2f} ms p50; the fp32 variant is the faster choice on this machine")
        v.notes.append(line)
        out.append(line)
    return out


def _tflite_input_quantization(path: Path) -> tuple[Optional[str], Optional[tuple[float, int]]]:
    """Input dtype and (scale, zero_point) of a TFLite model (full-integer models take int8/uint8)."""
    try:
        from runtimes.litert import import_interpreter

        interpreter_cls, _, _ = import_interpreter()
        detail = interpreter_cls(model_path=str(path)).get_input_details()[0]
    except (ImportError, ValueError, RuntimeError, EdgeSDKError):
        return None, None
    dtype = np.dtype(detail["dtype"]).name
    scale, zero = detail.get("quantization", (0.0, 0))
    return dtype, ((float(scale), int(zero)) if scale else None)


def cleanup(paths: Sequence[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            os.unlink(p)


#: backend name (a runtimes.registry record) -> the builder of its variants; every precision the
#: record lists goes through it
BUILDERS: dict[str, Callable[[VariantBuilder, str], Variant]] = {
    "onnxruntime": VariantBuilder._build_onnxruntime,
    "openvino": VariantBuilder._build_openvino,
    "litert": VariantBuilder._build_litert,
    "tensorrt": VariantBuilder._build_tensorrt,
    "edgetpu": VariantBuilder._build_edgetpu,
    "vitis_ai": VariantBuilder._build_vitis_ai,
}
