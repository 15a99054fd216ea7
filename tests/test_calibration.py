"""Calibration data: folders, videos and .npy files of real images, preprocessed exactly as the
bundle preprocesses at run time; every malformed source is a clear ConversionError."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from convdata import cls_crops, text_scenes, write_images
from edgesdk.calibration import CalibrationSet, load_calibration
from edgesdk.errors import ConversionError
from edgesdk.preprocess import PreprocessSpec, Preprocessor
from edgesdk.presets import get_preset

DET_SPEC = PreprocessSpec(size=(96, 128), resize="stretch", color="BGR", scale=1 / 255, mean=(0.5,) * 3,
                          std=(0.5,) * 3, layout="NCHW")


@pytest.fixture(scope="module")
def scenes():
    return text_scenes("calibration", 6, size=(120, 160))


def test_folder_is_preprocessed_like_the_bundle(tmp_path, scenes):
    folder = write_images(scenes, tmp_path / "imgs")
    (folder / "notes.txt").write_text("not an image")  # ignored
    calls = []
    cs = load_calibration(folder, DET_SPEC, size=None, progress=lambda d, t, w: calls.append((d, t)))
    assert cs.kind == "images" and len(cs) == 6 and cs.samples.shape == (6, 3, 96, 128)
    expected, _ = Preprocessor(DET_SPEC)([cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))])
    np.testing.assert_array_equal(cs.samples, expected)
    assert calls[-1] == (6, 6)


def test_folder_larger_than_size_is_sampled_evenly(tmp_path, scenes):
    folder = write_images(scenes, tmp_path / "imgs")
    cs = load_calibration(folder, DET_SPEC, size=3, progress=None)
    assert cs.names == ["0000.png", "0002.png", "0005.png"]


def test_classifier_crops_use_the_preset_preprocessing(tmp_path):
    spec = get_preset("ppocr_cls").preprocess
    crops = cls_crops("calibration")
    narrow = next(c for c in crops if c.shape[1] * 48 / c.shape[0] < 150)  # leaves padding at height 48
    folder = write_images([narrow] + crops[:3], tmp_path / "crops")
    cs = load_calibration(folder, spec, progress=None, input_shape=[None, 3, 48, 192], input_dtype="float32")
    assert cs.samples.shape == (4, 3, 48, 192) and cs.samples.dtype == np.float32
    # fit_height pads on the right with the preset's pad value: (128/255 - 0.5) / 0.5
    assert np.allclose(cs.samples[0, :, :, -1], (128 / 255 - 0.5) / 0.5, atol=1e-6)


def test_video_frames_are_sampled_evenly(tmp_path, scenes):
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    for i in range(30):
        writer.write(scenes[i % len(scenes)])
    writer.release()
    cs = load_calibration(path, DET_SPEC, size=4, progress=None)
    assert cs.kind == "video" and len(cs) == 4
    assert cs.names == ["frame 0", "frame 10", "frame 19", "frame 29"]
    assert cs.samples.shape == (4, 3, 96, 128)


def test_npy_images_and_tensors(tmp_path, scenes):
    imgs = np.stack(scenes)  # N,H,W,3 uint8 BGR
    np.save(tmp_path / "imgs.npy", imgs)
    cs = load_calibration(tmp_path / "imgs.npy", DET_SPEC, progress=None)
    assert cs.kind == "npy-images" and cs.samples.shape == (6, 3, 96, 128)
    tensors = cs.samples.copy()
    np.save(tmp_path / "t.npy", tensors)
    ct = load_calibration(tmp_path / "t.npy", None, input_shape=[None, 3, 96, 128], progress=None)
    assert ct.kind == "npy-tensors"
    np.testing.assert_array_equal(ct.samples, tensors)


def test_split_holds_out_disjoint_samples_across_the_set(scenes):
    samples = np.arange(8 * 2, dtype=np.float32).reshape(8, 2)
    fit, held = CalibrationSet(samples, "s", "npy-tensors").split(0.25)
    assert len(fit) == 6 and len(held) == 2
    assert not set(fit.samples[:, 0]) & set(held.samples[:, 0])
    assert held.samples[0, 0] > 0 and held.samples[-1, 0] < samples[-1, 0]  # from inside, not one end
    with pytest.raises(ConversionError, match="too few"):
        CalibrationSet(samples[:2], "s", "npy-tensors").split(0.25)


@pytest.mark.parametrize("case, match", [
    ("empty_folder", "is empty"),
    ("no_images", "holds no images"),
    ("corrupt_image", "cannot be read"),
    ("single_image", "single image"),
    ("missing", "does not exist"),
    ("empty_npy", "empty"),
    ("wrong_size_npy", "does not match|input takes"),
    ("int_tensors", "float"),
    ("nan_tensors", "NaN"),
    ("no_size", "fixed model input size"),
    ("no_spec", "no preprocessing"),
    ("bad_video", "cannot be opened"),
    ("bad_size", ">= 1"),
    ("unknown_kind", "neither a folder"),
])
def test_bad_calibration_data_is_a_clear_error(tmp_path, scenes, case, match):
    spec, kw = DET_SPEC, {"progress": None}
    if case == "empty_folder":
        src = tmp_path / "empty"
        src.mkdir()
    elif case == "no_images":
        src = tmp_path / "docs"
        src.mkdir()
        (src / "a.txt").write_text("x")
    elif case == "corrupt_image":
        src = write_images(scenes[:2], tmp_path / "imgs")
        (src / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    elif case == "single_image":
        src = write_images(scenes[:1], tmp_path / "one") / "0000.png"
    elif case == "missing":
        src = tmp_path / "nope"
    elif case == "empty_npy":
        src = tmp_path / "e.npy"
        np.save(src, np.zeros((0, 3, 96, 128), np.float32))
    elif case == "wrong_size_npy":
        src = tmp_path / "w.npy"
        np.save(src, np.zeros((4, 3, 64, 64), np.float32))
        kw["input_shape"] = [None, 3, 96, 128]
    elif case == "int_tensors":
        src = tmp_path / "i.npy"
        np.save(src, np.zeros((4, 3, 96, 128), np.int32))
    elif case == "nan_tensors":
        src = tmp_path / "n.npy"
        a = np.zeros((4, 3, 96, 128), np.float32)
        a[1, 0, 0, 0] = np.nan
        np.save(src, a)
    elif case == "no_size":
        src = write_images(scenes[:2], tmp_path / "imgs")
        spec = PreprocessSpec(size=None, size_multiple=32)
    elif case == "no_spec":
        src = write_images(scenes[:2], tmp_path / "imgs")
        spec = None
    elif case == "bad_video":
        src = tmp_path / "v.mp4"
        src.write_bytes(b"\x00" * 100)
    elif case == "bad_size":
        src = write_images(scenes[:2], tmp_path / "imgs")
        kw["size"] = 0
    else:
        src = tmp_path / "data.csv"
        src.write_text("1,2,3")
    with pytest.raises(ConversionError, match=match):
        load_calibration(src, spec, **kw)


def test_images_that_preprocess_to_the_wrong_shape_are_refused(tmp_path, scenes):
    folder = write_images(scenes[:2], tmp_path / "imgs")
    with pytest.raises(ConversionError, match="does not match the model"):
        load_calibration(folder, DET_SPEC, input_shape=[None, 3, 64, 64], progress=None)
