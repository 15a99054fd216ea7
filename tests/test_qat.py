"""Quantization-aware fine-tuning (converters.qat): on the real EfficientNet-Lite0 a short label-free
run beats post-training INT8 of the same quantizer on crops of other photos, the exported file is
QDQ, runs INT8 on onnxruntime and OpenVINO and computes what was trained; every error path."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from converters import distill as kd  # noqa: E402

try:  # onnx2torch imports torchvision; converters.distill copes with a missing/broken one
    kd.import_onnx2torch()
except ImportError:
    pytest.skip("onnx2torch is not installed (pip install '.[torch]')", allow_module_level=True)

from converters import qat as q  # noqa: E402
from converters.compare import Comparator  # noqa: E402
from converters.onnx_quant import StaticQuantizer  # noqa: E402

CALIB_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "horse", "hubble_deep_field", "immunohistochemistry")
HELD_PHOTOS = ("camera", "coins", "motorcycle_left", "cat")


def _crops(names, per_photo: int) -> np.ndarray:
    """Real scikit-image photos cut into overlapping square crops, preprocessed for
    EfficientNet-Lite0 (RGB, (x - 127) / 128, 224 x 224)."""
    from edgesdk.preprocess import PreprocessSpec, Preprocessor
    from sampledata import _to_bgr
    from skimage import data

    spec = PreprocessSpec(size=(224, 224), resize="stretch", color="RGB", scale=1.0, mean=(127.0,) * 3,
                          std=(128.0,) * 3, layout="NCHW")
    crops = []
    for name in names:
        img = _to_bgr(data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)())
        h, w = img.shape[:2]
        for k in range(per_photo):
            s = int(min(h, w) * (1.0 - 0.4 * k / max(1, per_photo - 1)))
            top, left = (h - s) * (k % 3) // 2, (w - s) * ((k // 3) % 3) // 2
            crops.append(np.ascontiguousarray(img[top:top + s, left:left + s]))
    return Preprocessor(spec)(crops)[0]


@pytest.fixture(scope="module")
def lite0(model_paths, tmp_path_factory):
    """Prepared EfficientNet-Lite0, its onnxruntime (minmax) QDQ INT8 and real crops of disjoint photos."""
    from converters.passes import PassContext, default_passes, load_onnx, run_passes

    work = tmp_path_factory.mktemp("qat")
    source = load_onnx(model_paths["efficientnet_lite0.onnx"])
    model, _ = run_passes(source, default_passes(), PassContext(input_shapes={"image": [1, 3, 224, 224]}))
    prepared = work / "prepared.onnx"
    onnx.save(model, str(prepared))
    fit, held = _crops(CALIB_PHOTOS, 6), _crops(HELD_PHOTOS, 9)
    quantizer = StaticQuantizer(prepared, "image", fit, method="minmax", work_dir=work)
    ptq = quantizer.quantize(work / "ptq.onnx")
    return prepared, ptq, fit, held, work


def test_short_qat_beats_post_training_int8_on_other_photos(lite0):
    prepared, ptq, fit, held, work = lite0
    lines: list[str] = []
    out = work / "qat.onnx"
    # a step limit, one thread and one evaluation at the end: the same run on a quiet or a busy machine
    cfg = q.QatConfig(minutes=5, max_steps=10, eval_every_s=1e9, patience=50, threads=1)
    proto, rep = q.qat(prepared, ptq, fit, out, cfg, progress=lines.append, source="real photo crops")
    cmp = Comparator(prepared, held, task="classification", metric="top1")
    before, after = cmp.compare(ptq, backend="onnxruntime"), cmp.compare(out, backend="onnxruntime")
    print(f"\nEfficientNet-Lite0 minmax INT8 on {len(held)} held-out crops: {before.summary()} -> {after.summary()} "
          f"({rep.steps} steps)")
    assert rep.steps == 10 and "step limit" in rep.stopped and any("ETA" in line for line in lines)
    # cosine is the continuous measure; top-1 over 36 crops moves by single crops in half a minute of
    # training (bench/qat.py: 4 min take this quantizer from 18% to 42% top-1 on 55 crops)
    assert after.cosine > before.cosine + 0.003          # same quantizer, same file structure, trained (+0.007 in 7-10 steps)
    assert after.top1_agreement >= before.top1_agreement - 1.5 / len(held)
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and q.DOMAIN not in {n.domain for n in proto.graph.node}
    assert rep.torch_vs_onnxruntime > 0.99               # the file computes what was trained
    evidence = q.int8_counts(out, work)
    assert evidence["onnxruntime"][0] == evidence["onnxruntime"][1] > 40    # every Conv/Gemm a QLinear kernel
    assert evidence["openvino"][0] == evidence["openvino"][1] > 40          # OpenVINO reads it as int8


def test_untrained_student_is_the_post_training_model(lite0):
    """Converted to torch and written back without training, the QDQ file is unchanged in what it computes."""
    prepared, ptq, _, held, work = lite0
    st = q.build_student(onnx.load(str(ptq)))
    back = work / "roundtrip.onnx"
    q.write_student(st, onnx.load(str(ptq)), back)
    cmp = Comparator(ptq, held[::6], task="classification", metric="cosine")
    assert cmp.compare(back, backend="onnxruntime").cosine > 0.99999
    assert q.torch_agreement(st.module, ptq, held[:4]) > 0.99


def test_too_few_calibration_images_says_how_many(lite0, tmp_path):
    prepared, ptq, fit, _, _ = lite0
    with pytest.raises(q.QatError, match=r"3 samples .* at least 5"):
        q.qat(prepared, ptq, fit[:3], tmp_path / "x.onnx", q.QatConfig(minutes=0.1))
    assert not (tmp_path / "x.onnx").exists()


def test_operator_onnx2torch_cannot_convert_is_named(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("Flatten", ["c"], ["f"], name="flat"),
             helper.make_node("Hardmax", ["f"], ["y"], name="hardmax")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 144])], [w])
    src = tmp_path / "hardmax.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    samples = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)  # the error comes before any training
    ptq = StaticQuantizer(src, "x", samples, method="minmax", work_dir=tmp_path).quantize(tmp_path / "q.onnx")
    with pytest.raises(q.QatError, match="Hardmax"):
        q.qat(src, ptq, samples, tmp_path / "out.onnx", q.QatConfig(minutes=0.1))


def test_a_model_without_qdq_is_refused(lite0):
    prepared = lite0[0]
    with pytest.raises(q.QatError, match="QuantizeLinear/DequantizeLinear"):
        q.build_student(onnx.load(str(prepared)))


def test_a_miss_after_the_guard_names_qat_as_the_next_step():
    from types import SimpleNamespace

    from converters.variants import Variant
    from edgesdk.conversion import qat as stage

    over = Variant("onnxruntime-int8-mixed", "onnxruntime int8 with 8 layers float", "onnxruntime", "mixed",
                   comparison=SimpleNamespace(drop=0.21))
    fine = Variant("openvino-fp32", "openvino fp32", "openvino", "fp32", comparison=SimpleNamespace(drop=0.0))
    line = stage.next_step([over, fine], 0.02)
    assert "--qat" in line and "onnxruntime-int8-mixed" in line and "0.2100" in line and "\n" not in line
    assert stage.next_step([fine], 0.02) is None


@pytest.mark.parametrize("recalibrate", [True, False])
def test_batchnorm_statistics_are_reestimated_only_when_asked(recalibrate):
    """QAT keeps the file's BatchNorm statistics (its INT8 ranges were calibrated on them) through
    distill's recalibrate_bn=False; a pruned student gets them re-estimated (the default)."""
    torch.manual_seed(0)

    def net():
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU()).eval()

    teacher, student = net(), net()
    before = student[1].running_mean.clone()
    samples = (np.random.default_rng(0).standard_normal((8, 3, 12, 12)) * 3 + 1).astype(np.float32)
    cfg = kd.DistillConfig(minutes=1, max_steps=1, eval_every_s=1e9, threads=1, recalibrate_bn=recalibrate)
    kd.distill(teacher, student, samples, cfg)
    assert torch.equal(student[1].running_mean, before) is not recalibrate
    assert q.QatConfig().distill_config().recalibrate_bn is False
