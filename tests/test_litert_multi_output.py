"""A multi-output ONNX model EdgeSDK has no preset for, converted to LiteRT: MTCNN's ONet
(facenet-pytorch's weights; box 4, landmarks 10, face prob 2) on real face photographs (skimage's
LFW subset).

Found by a new-user try (`edgesdk convert onet.onnx -p raspberry-pi-5 --calib faces/ -o onet.bundle`):
- a relative output made onnx2tf look for its config inside its own working directory: every LiteRT
  variant failed with FileNotFoundError;
- onnx2tf's .tflite names the outputs "PartitionedCall:N" in an order of its own (10, 4, 2 wide), the
  comparison paired them by position and refused fp32/fp16 ("output '54' has 10 values ...");
- the INT8 file's signature called them output_0..2;
- XNNPACK cannot prepare the INT8 file; LiteRT's builtin kernels run it.
"""
from __future__ import annotations

import numpy as np
import pytest

from converters.variants import BUILTIN_KERNELS_NOTE
from edgesdk import convert
from edgesdk.preprocess import PreprocessSpec

needs_onnx2tf = pytest.mark.skipif("not __import__('converters.tflite', fromlist=['x']).is_available()",
                                   reason="onnx2tf is not installed (optional extra): run `make tflite`")
MTCNN = PreprocessSpec(size=(48, 48), resize="stretch", color="RGB", scale=1.0, mean=(127.5,) * 3,
                       std=(128.0,) * 3, layout="NCHW")


@pytest.fixture(scope="module")
def onet(model_paths):
    return model_paths["mtcnn_onet.onnx"]


def _lfw(faces: bool) -> np.ndarray:
    """LFW subset crops (25x25 grey: 100 faces, then 100 non-faces) as 48x48 RGB, preprocessed NCHW."""
    import cv2
    from skimage import data

    grey = data.lfw_subset()[:100] if faces else data.lfw_subset()[100:]
    rgb = [cv2.cvtColor(cv2.resize((g * 255).astype(np.uint8), (48, 48), interpolation=cv2.INTER_CUBIC),
                        cv2.COLOR_GRAY2RGB) for g in grey]
    return ((np.stack(rgb).astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy()


def _original(onet, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onet), providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {"face": x[i:i + 1]}) for i in range(len(x))]
    return {o.name: np.concatenate([r[k] for r in outs]) for k, o in enumerate(sess.get_outputs())}


def _run(path, x: np.ndarray) -> tuple[dict[str, np.ndarray], str]:
    import runtimes

    with runtimes.load(path, backend="litert") as rt:
        outs = [rt.infer(np.ascontiguousarray(x[i:i + 1].transpose(0, 2, 3, 1))) for i in range(len(x))]
        return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}, getattr(rt, "kernels", None)


def _agrees(got: dict[str, np.ndarray], want: dict[str, np.ndarray], faces: int) -> float:
    """Share of crops whose face / not-face call (prob[:, 1] > 0.5) is the original's."""
    assert sorted(got) == sorted(want), "the outputs keep the ONNX model's names"
    for name, ref in want.items():
        assert got[name].shape == ref.shape, name
    return float(np.mean((got["prob"][:, 1] > 0.5) == (want["prob"][:, 1] > 0.5)))


@pytest.mark.slow
@pytest.mark.tflite_convert
@needs_onnx2tf
def test_onet_int8_converts_to_litert_from_a_relative_output_with_its_outputs_by_name(onet, tmp_path, monkeypatch):
    faces, others = _lfw(True), _lfw(False)
    monkeypatch.chdir(tmp_path)  # `-o onet_pi`, as a user in their own folder types it
    res = convert(onet, "raspberry-pi-5", "onet_pi", precision="int8", calib=faces[:64], val=faces[64:],
                  backends=["litert"], preprocess=MTCNN, task="raw", progress=None)
    assert res.chosen.backend == "litert" and res.chosen.error is None
    assert res.chosen.comparison.cosine >= 0.98
    model = tmp_path / "onet_pi" / res.bundle.manifest.model
    assert sorted(o.name for o in res.bundle.manifest.outputs) == ["box", "landmarks", "prob"]
    probe = np.concatenate([faces[64:80], others[:16]])
    got, kernels = _run(model, probe)
    assert _agrees(got, _original(onet, probe), 16) >= 0.9
    # whichever kernels ran it here are said in the variant's notes when they are not XNNPACK
    assert (kernels == "builtin") == (BUILTIN_KERNELS_NOTE in res.chosen.notes)


@pytest.mark.slow
@pytest.mark.tflite_convert
@needs_onnx2tf
def test_onet_fp32_tflite_outputs_are_found_by_their_onnx_names(onet, tmp_path):
    from converters.tflite import onnx_to_tflite

    faces, others = _lfw(True), _lfw(False)
    out = onnx_to_tflite(onet, tmp_path / "tfl", "fp32", faces[:8], progress=None)
    probe = np.concatenate([faces[64:80], others[:16]])
    got, kernels = _run(out.path, probe)
    want = _original(onet, probe)
    assert _agrees(got, want, 16) == 1.0 and kernels == "xnnpack"
    for name in want:
        assert np.abs(got[name] - want[name]).max() < 1e-4, name


@pytest.mark.slow
@pytest.mark.tflite_convert
@needs_onnx2tf
def test_the_original_tells_lfw_faces_from_non_faces(onet):
    """The reference the test above compares with does its job on these crops (else agreement means little)."""
    face = _original(onet, _lfw(True)[:32])["prob"][:, 1]
    other = _original(onet, _lfw(False)[:32])["prob"][:, 1]
    assert np.median(face) > 0.5 > np.median(other)
