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
        # inputs are checked against their own declared shapes only: [1, 4] * [2, 4] broadcasts
        # in the engine, as it does on raw onnxruntime
        out = rt.infer({"a": np.ones((1, 4), np.float32), "b": np.full((2, 4), 3, np.float32)})
        np.testing.assert_array_equal(out["z"], np.full((2, 4), 3))
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
        assert rt.check_feeds({"a": a[:0], "b": b[:0]})["a"].shape == (0, 4)  # 0-size: the engine's call
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


# ---------------------------------------------------------------- each input against its own spec
def _graph_model(tmp_path, name, nodes, inputs, outputs, opset=17):
    import onnx
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs),
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _vi(name, elem, shape):
    from onnx import helper
    return helper.make_tensor_value_info(name, elem, shape)


def test_inputs_with_unrelated_axis_0_run_as_on_the_raw_engine(tmp_path):
    """X [N, 4] next to shape [k], and matmul [3, 4] x [4, 2]: axis 0 is no shared batch."""
    import onnxruntime as ort
    from onnx import TensorProto as T, helper

    reshape = _graph_model(tmp_path, "reshape", [helper.make_node("Reshape", ["X", "shape"], ["Y"])],
                           [_vi("X", T.FLOAT, ["N", 4]), _vi("shape", T.INT64, [2])], [_vi("Y", T.FLOAT, None)])
    matmul = _graph_model(tmp_path, "matmul", [helper.make_node("MatMul", ["A", "B"], ["C"])],
                          [_vi("A", T.FLOAT, [3, 4]), _vi("B", T.FLOAT, [4, 2])], [_vi("C", T.FLOAT, [3, 2])])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    cases = [(reshape, {"X": x, "shape": np.array([2, 6], np.int64)}),
             (matmul, {"A": x, "B": np.ones((4, 2), np.float32)})]
    for path, feeds in cases:
        raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
        with runtimes.load(path) as rt:
            ours = list(rt.infer(feeds).values())
        np.testing.assert_array_equal(ours[0], raw[0])
    assert ours[0].shape == (3, 2)


@pytest.mark.parametrize("elem, value", [
    ("FLOAT", np.zeros((0, 3), np.float32)),          # 0-size batch
    ("FLOAT", np.array(2.5, np.float32)),             # scalar (rank 0)
    ("INT64", np.array([[2**40, -3]], np.int64)),
    ("BOOL", np.array([True, False])),
    ("STRING", np.array(["a", "bc"], dtype=object)),
    ("STRING", np.array(["a", "bc"])),                # numpy str_, which onnxruntime also takes
])
def test_scalar_empty_int64_bool_string_inputs_pass_through(tmp_path, elem, value):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    t = getattr(TensorProto, elem)
    dims = [None] * value.ndim  # fully dynamic dims, the rank fixed
    path = _graph_model(tmp_path, f"ident_{elem.lower()}", [helper.make_node("Identity", ["x"], ["y"])],
                        [_vi("x", t, dims)], [_vi("y", t, dims)])
    raw = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": value})[0]
    with runtimes.load(path) as rt:
        ours = rt.infer(value)["y"]
    assert ours.shape == raw.shape == value.shape
    assert ours.tolist() == raw.tolist()


def test_batch_one_model_loops_only_a_shared_axis_0(tmp_path):
    from onnx import TensorProto as T, helper

    path = _graph_model(tmp_path, "add1", [helper.make_node("Add", ["a", "b"], ["c"])],
                        [_vi("a", T.FLOAT, [1, 4]), _vi("b", T.FLOAT, [1, 4])], [_vi("c", T.FLOAT, [1, 4])])
    with runtimes.load(path) as rt:
        a, b = np.ones((5, 4), np.float32), np.arange(20, dtype=np.float32).reshape(5, 4)
        np.testing.assert_array_equal(rt.infer({"a": a, "b": b})["c"], a + b)  # looped 5 times
        with pytest.raises(InputMismatchError, match=r"axis 0: 1 != 5\).*same axis 0"):
            rt.infer({"a": a[:1], "b": b})
        with pytest.raises(InputMismatchError, match=r"axis 0: 1 != 0"):
            rt.infer({"a": a[:0], "b": b[:0]})  # nothing to loop: the engine would refuse it too
