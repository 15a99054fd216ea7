"""Graph passes word an engine's failure in one line, even when the engine's exception says
nothing (runtimes.errors.first_line), and shapes print one way everywhere (runtimes.dims)."""
from __future__ import annotations

import pytest

from converters.passes import FoldConstants, PassContext, UpgradeOpset, load_onnx
from runtimes.dims import show_dims
from runtimes.errors import ConversionError, first_line
from runtimes.spec import TensorSpec


def test_first_line_of_multiline_blank_and_empty_messages():
    assert first_line(RuntimeError("\n  [ONNXRuntimeError] bad graph \nat line 2")) == "[ONNXRuntimeError] bad graph"
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(ValueError("x" * 500), 20) == "x" * 20


def test_first_line_passes_over_openvino_trace_lines():
    from converters.openvino_ir import OV_TRACE_LINES

    trace = RuntimeError("Exception from src/core/shape.cpp:12:\nCheck 'rank == 4' failed at shape.cpp:12:\n"
                         "Convolution expects a 4-D input, got 3-D\n")
    assert first_line(trace, skip=OV_TRACE_LINES) == "Convolution expects a 4-D input, got 3-D"
    only_trace = RuntimeError("Exception from src/core/shape.cpp:12:\n")
    assert first_line(only_trace, skip=OV_TRACE_LINES) == "Exception from src/core/shape.cpp:12:"
    assert first_line(trace) == "Exception from src/core/shape.cpp:12:"


def test_upgrade_opset_failure_with_an_empty_message_is_a_conversion_error(cls_model, monkeypatch):
    from onnx import version_converter

    def refuse(model, target):
        raise RuntimeError()  # what a bare converter failure looks like: no text at all

    monkeypatch.setattr(version_converter, "convert_version", refuse)
    with pytest.raises(ConversionError, match=r"from opset 11 to 13 .*: RuntimeError; re-export"):
        UpgradeOpset()(load_onnx(cls_model), PassContext())


def test_fold_constants_failure_names_the_engine_error(cls_model, monkeypatch):
    import onnxruntime as ort

    def refuse(*args, **kwargs):
        raise RuntimeError("\n[ONNXRuntimeError] : 10 : INVALID_GRAPH : nope\nmore")

    monkeypatch.setattr(ort, "InferenceSession", refuse)
    with pytest.raises(ConversionError, match=r"constant folding failed .*: \[ONNXRuntimeError\] : 10 : INVALID_GRAPH : nope$"):
        FoldConstants()(load_onnx(cls_model), PassContext())


def test_shapes_print_one_way():
    assert show_dims([1, 3, None, None]) == "1x3x?x?"
    assert str(TensorSpec("x", (None, 3, 48, 192), "float32", "NCHW")) == "x: float32[?x3x48x192] NCHW"


def _onnx_wheel_model(name: str):
    """A model-zoo architecture the onnx wheel ships (backend test data, IR 3, opset 9; weights
    made by ConstantOfShape nodes, every initializer also listed as a graph input)."""
    from pathlib import Path

    import onnx

    path = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"
    assert path.is_file(), f"the onnx wheel no longer ships {path.name}"
    return path


@pytest.mark.parametrize("name", ["squeezenet", "resnet50"])
def test_ir3_models_keep_one_real_input_through_the_passes(name):
    """onnxruntime's folding kept the input entries of the initializers it folded away: the
    prepared model then asked for 18 (squeezenet) or 213 (resnet50) inputs."""
    import numpy as np
    import onnxruntime as ort

    from converters.passes import default_passes, graph_inputs, run_passes

    original = load_onnx(_onnx_wheel_model(name))
    assert original.ir_version == 3 and len(original.graph.input) > 1
    feed = graph_inputs(original)[0].name
    model, records = run_passes(load_onnx(_onnx_wheel_model(name)), default_passes(),
                                PassContext(input_shapes={feed: [1, 3, 224, 224]}))
    assert [i.name for i in model.graph.input] == [feed] and model.ir_version >= 4
    done = {r.name: r.changes for r in records}
    assert any("no longer listed as graph inputs" in c for c in done["initializers_not_inputs"])
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    want = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {feed: x})
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {feed: x})
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    # its weights are ConstantOfShape outputs: folding them stored 102 MB (resnet50) from 80 KB
    assert model.ByteSize() < 1_000_000 and "ConstantOfShape node(s) kept unfolded" in "; ".join(done["fold_constants"])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_an_ir3_model_zoo_model_converts_via_the_cli(precision, photos, tmp_path, capsys):
    import cv2

    from clitools import cli

    calib = tmp_path / "calib"
    calib.mkdir()
    for key, img in photos.items():
        cv2.imwrite(str(calib / f"{key}.png"), img)
    out = tmp_path / "b"
    code, stdout, stderr = cli(["convert", str(_onnx_wheel_model("squeezenet")), "-p", "generic-x86-64",
                                "--precision", precision, "--backend", "onnxruntime", "--calib", str(calib),
                                "--normalize", "imagenet", "--color", "RGB", "--resize", "stretch",
                                "--no-measure", "-o", str(out), "-q"], capsys)
    assert code == 0, stdout + stderr
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["precision"] == precision and [i["name"] for i in manifest["inputs"]] == ["data_0"]
    report = json.loads((out / "report.json").read_text())
    assert not any("bundle's model files" in w for w in report["warnings"])  # 0.5-1 MB from 15 KB: under 1 MB more
    if precision == "int8":  # the weights the model builds at run time are folded for the quantizer, and int8
        import onnx

        model = onnx.load(str(out / manifest["model"]))
        made_by = {o: n.op_type for n in model.graph.node for o in n.output}
        assert {made_by.get(n.input[1]) for n in model.graph.node if n.op_type == "Conv"} == {"DequantizeLinear"}
        assert any("INT8 quantizes stored weights only" in note for note in report["chosen"]["notes"])


def test_a_pooled_n_c_1_1_output_reads_as_nchw():
    """squeezenet/densenet121 end in [1, 1000, 1, 1]: `info` called it NHWC (1000 rows of 1 pixel)."""
    from runtimes.spec import guess_layout

    assert guess_layout([1, 1000, 1, 1]) == "NCHW"
    assert guess_layout([1, 224, 224, 3]) == "NHWC" and guess_layout([1, 3, 224, 224]) == "NCHW"
    assert guess_layout([1, 1, 1, 3]) == "NCHW"  # unchanged: channels first wins a tie


def _expanding_model():
    """y = x + Tile(small) + Expand(row) + ConstantOfShape(Concat(...)) on a 512x256 input: three
    1/2 MB constants built from a few bytes (one shape computed from Constant nodes), and one Tile
    small enough to fold."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    def const(name, value):
        return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value), name + "_v"))

    inits = [numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16), "small"),
             numpy_helper.from_array(np.array([512, 16], np.int64), "reps"),
             numpy_helper.from_array(np.linspace(-1, 1, 256, dtype=np.float32).reshape(1, 256), "row"),
             numpy_helper.from_array(np.array([512, 256], np.int64), "full"),
             numpy_helper.from_array(np.array([1, 2], np.int64), "twice")]
    nodes = [helper.make_node("Tile", ["small", "reps"], ["tiled"]),
             helper.make_node("Expand", ["row", "full"], ["expanded"]),
             const("rows", np.array([512], np.int64)), const("cols", np.array([256], np.int64)),
             helper.make_node("Concat", ["rows", "cols"], ["shape"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["filled"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32), "half")),
             helper.make_node("Tile", ["small", "twice"], ["tiny_tile"]),  # 128 B: folded as before
             helper.make_node("Add", ["x", "tiled"], ["a"]), helper.make_node("Add", ["a", "expanded"], ["b"]),
             helper.make_node("Add", ["b", "filled"], ["c"]),
             helper.make_node("Reshape", ["tiny_tile", "flat"], ["tt"]),
             helper.make_node("ReduceSum", ["tt"], ["s"], keepdims=1), helper.make_node("Add", ["c", "s"], ["y"])]
    inits.append(numpy_helper.from_array(np.array([1, 32], np.int64), "flat"))
    graph = helper.make_graph(nodes, "expanding", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, None])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_folding_keeps_large_constants_built_from_small_ones_as_nodes():
    import numpy as np
    import onnx
    import onnxruntime as ort

    from converters.passes import default_passes, run_passes

    original = _expanding_model()
    onnx.checker.check_model(original)
    model, records = run_passes(_expanding_model(), default_passes(), PassContext(input_shapes={"x": [512, 256]}))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Tile") == 1 and "Expand" in ops and "ConstantOfShape" in ops  # the small Tile folded away
    assert model.ByteSize() < 20_000 and [i.name for i in model.graph.input] == ["x"]
    fold = next(r for r in records if r.name == "fold_constants")
    assert fold.unfolded_bytes == 3 * 512 * 256 * 4
    assert "3 ConstantOfShape/Expand/Tile node(s) kept unfolded: folding would store 1.6 MB" in fold.changes[-1]
    x = np.random.default_rng(0).normal(size=(512, 256)).astype(np.float32)

    def run(m):
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]

    np.testing.assert_allclose(run(model), run(original), rtol=1e-6)


def test_int8_gets_the_kept_constants_folded_into_stored_weights(tmp_path):
    """Quantizers quantize stored weights only: the INT8 source has the expansions folded."""
    import onnx

    from converters.large_constants import fold_expansions
    from converters.passes import default_passes, run_passes

    model, _ = run_passes(_expanding_model(), default_passes(), PassContext(input_shapes={"x": [512, 256]}))
    prepared = tmp_path / "prepared.onnx"
    onnx.save(model, str(prepared))
    path, note = fold_expansions(prepared, tmp_path / "stored.onnx")
    folded = onnx.load(str(path))
    assert path != prepared and not {"Tile", "Expand", "ConstantOfShape"} & {n.op_type for n in folded.graph.node}
    assert "the 3 constants the model builds at run time (ConstantOfShape/Expand/Tile, 1.6 MB in float)" in note
    assert fold_expansions(path, tmp_path / "again.onnx") == (path, None)  # nothing left to fold: the file as is


def test_a_bundle_much_larger_than_its_input_says_why(photos, tmp_path, capsys):
    """light_resnet50 (80 KB) builds its weights with ConstantOfShape; OpenVINO's converter stores them."""
    import json

    import cv2

    from clitools import cli

    calib = tmp_path / "calib"
    calib.mkdir()
    for key in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(calib / f"{key}.png"), photos[key])
    out = tmp_path / "b"
    code, stdout, stderr = cli(["convert", str(_onnx_wheel_model("resnet50")), "-p", "generic-x86-64",
                                "--precision", "fp32", "--backend", "openvino", "--calib", str(calib),
                                "--normalize", "imagenet", "--color", "RGB", "--resize", "stretch",
                                "--no-measure", "-o", str(out), "-q"], capsys)
    assert code == 0, stdout + stderr
    line = next(w for w in stdout.splitlines() if "the bundle's model files" in w)
    assert line.startswith("WARNING:") and "x the input light_resnet50.onnx (79.8 KB)" in line
    assert "openvino-fp32 stores them: the openvino converter folds them" in line and "--backend onnxruntime" in line
    assert line[len("WARNING: "):] in json.loads((out / "report.json").read_text())["warnings"]
    assert line[len("WARNING: "):] in (out / "report.md").read_text()


def test_growth_warning_names_a_pass_that_grew_the_graph_or_says_the_cause_is_unknown():
    from types import SimpleNamespace

    from edgesdk.conversion.growth import growth_warning

    v = SimpleNamespace(key="onnxruntime-fp32", backend="onnxruntime", precision="fp32")
    assert growth_warning("m.onnx", 1_000_000, 2_900_000, v) is None  # under 3x
    assert growth_warning("m.onnx", 100_000, 900_000, v) is None      # 9x, but under 1 MB more
    grew = [{"name": "fp16_to_fp32", "bytes_before": 1_000_000, "bytes_after": 4_000_000}]
    line = growth_warning("m.onnx", 1_000_000, 4_000_000, v, grew)
    assert line == ("the bundle's model files (4.0 MB) are 4x the input m.onnx (1.0 MB): the fp16_to_fp32 pass grew "
                    "the graph 1.0 MB -> 4.0 MB")
    assert "the onnxruntime fp32 converter wrote the larger file" in growth_warning("m.onnx", 1_000_000, 4_000_000, v)
