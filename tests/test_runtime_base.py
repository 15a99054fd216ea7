"""The Runtime base contract, on the onnxruntime backend with tiny models."""
from __future__ import annotations

import numpy as np
import pytest

import runtimes
from runtimes import InputMismatchError, ModelLoadError


def test_infer_single_array_and_dict(tiny_models):
    path = tiny_models.add_one()
    with runtimes.load(path) as rt:
        x = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
        np.testing.assert_array_equal(rt.infer(x)["y"], x + 1)
        np.testing.assert_array_equal(rt.infer({"x": x})["y"], x + 1)
        assert rt.inputs[0].shape == (None, 3, 4, 4)
        assert rt.inputs[0].layout == "NCHW"


def test_fixed_batch_one_is_looped(tiny_models):
    path = tiny_models.add_one(shape=(1, 3, 4, 4))
    with runtimes.load(path) as rt:
        assert rt.max_batch == 1
        x = np.random.default_rng(0).random((5, 3, 4, 4), dtype=np.float32)
        out = rt.infer(x)["y"]
        assert out.shape == (5, 3, 4, 4)
        np.testing.assert_allclose(out, x + 1)
        np.testing.assert_allclose(rt.submit(x).result()["y"], x + 1)


def test_submit_returns_future(tiny_models):
    with runtimes.load(tiny_models.add_one()) as rt:
        x = np.zeros((3, 3, 4, 4), np.float32)
        futures = [rt.submit(x + i) for i in range(4)]
        for i, f in enumerate(futures):
            np.testing.assert_array_equal(f.result(timeout=10)["y"], x + i + 1)


@pytest.mark.parametrize("feeds, needle", [
    ({"nope": np.zeros((1, 3, 4, 4), np.float32)}, "missing ['x']"),
    (np.zeros((1, 3, 4, 4), np.float64), "expects dtype float32, got float64"),
    (np.zeros((1, 3, 4), np.float32), "expects rank 4"),
    (np.zeros((1, 3, 5, 4), np.float32), "axis 2: 4 != 5"),
    (np.zeros((0, 3, 4, 4), np.float32), "empty batch"),
    ([1, 2, 3], "numpy array or a dict"),
])
def test_bad_feeds_are_refused_before_the_backend(tiny_models, feeds, needle):
    with runtimes.load(tiny_models.add_one()) as rt:
        with pytest.raises(InputMismatchError) as err:
            rt.infer(feeds)
        assert needle in str(err.value)
        with pytest.raises(InputMismatchError):
            rt.submit(feeds)


def test_two_inputs_need_a_dict(tiny_models):
    with runtimes.load(tiny_models.two_inputs()) as rt:
        with pytest.raises(InputMismatchError, match="pass a dict"):
            rt.infer(np.zeros((1, 4), np.float32))
        with pytest.raises(InputMismatchError, match="disagree on batch size"):
            rt.infer({"a": np.zeros((1, 4), np.float32), "b": np.zeros((2, 4), np.float32)})
        out = rt.infer({"a": np.full((2, 4), 2, np.float32), "b": np.full((2, 4), 3, np.float32)})
        np.testing.assert_array_equal(out["z"], 6)


def test_missing_and_corrupt_model_files(tmp_path, tiny_models):
    with pytest.raises(ModelLoadError, match="does not exist"):
        runtimes.load(tmp_path / "missing.onnx")
    good = tiny_models.add_one().read_bytes()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(ModelLoadError, match="could not load"):
        runtimes.load(bad).activate()
    with pytest.raises(ModelLoadError, match="cannot tell the model format"):
        (tmp_path / "model.bin2").write_bytes(b"x")
        runtimes.load(tmp_path / "model.bin2")


def test_unknown_backend_name(tiny_models):
    with pytest.raises(runtimes.BackendUnavailableError, match="unknown backend"):
        runtimes.load(tiny_models.add_one(), backend="tensorrtx")


def test_real_classifier_runs(cls_model, photos):
    with runtimes.load(cls_model) as rt:
        assert [s.name for s in rt.inputs] == ["x"]
        assert rt.inputs[0].shape[1] == 3  # H, W are dynamic in this export; 48x192 by its config
        out = rt.infer(np.zeros((2, 3, 48, 192), np.float32))
        probs = next(iter(out.values()))
        assert probs.shape == (2, 2)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_fast_check_path_agrees_with_the_explaining_path(tiny_models):
    """check_feeds has a fast path for good feeds; anything it rejects is explained by the slow path."""
    from types import MappingProxyType

    with runtimes.load(tiny_models.two_inputs()) as rt:
        a, b = np.ones((2, 4), np.float32), np.full((2, 4), 2, np.float32)
        feeds = {"a": a, "b": b}
        checked = rt.check_feeds(MappingProxyType(feeds))  # any Mapping, returned as a new dict
        assert type(checked) is dict and checked is not feeds and checked["a"] is a
        with pytest.raises(InputMismatchError, match=r"missing \['b'\]; unknown \['c'\]"):
            rt.check_feeds({"a": a, "c": b})  # right count, wrong name
        with pytest.raises(InputMismatchError, match="axis 1: 4 != 5"):
            rt.check_feeds({"a": a, "b": np.ones((2, 5), np.float32)})
        with pytest.raises(InputMismatchError, match="empty batch"):
            rt.check_feeds({"a": a[:0], "b": b[:0]})
    with runtimes.load(tiny_models.add_one(shape=(1, 3, 4, 4))) as looped:
        assert looped.check_feeds(np.zeros((7, 3, 4, 4), np.float32))["x"].shape[0] == 7


def test_submit_copies_the_callers_dict(tiny_models):
    with runtimes.load(tiny_models.add_one()) as rt:
        x = np.zeros((2, 3, 4, 4), np.float32)
        feeds = {"x": x}
        future = rt.submit(feeds)
        feeds["x"] = np.full_like(x, 5)  # the caller reuses its dict at once
        np.testing.assert_array_equal(future.result(timeout=10)["y"], x + 1)


def test_submit_with_one_thread(tiny_models):
    # ORT's run_async needs an intra-op pool, which threads=1 does not have
    with runtimes.load(tiny_models.add_one(), threads=1) as rt:
        x = np.zeros((2, 3, 4, 4), np.float32)
        np.testing.assert_array_equal(rt.submit(x).result(timeout=10)["y"], x + 1)
