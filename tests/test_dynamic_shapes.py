"""Dynamic input dims (`--input-shape 1,3,48,-1`): parsed, kept by onnxruntime/OpenVINO, skipped or
refused for targets that need static shapes (their backend record says which), calibrated and
checked on each real text line at its own width, and `bench` picking its shape from the bundle,
the preset or the stated shape, never 640x640."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from clitools import cli
from edgesdk.errors import ConversionError
from edgesdk.shapes import MAX_DYNAMIC_SIDE, dynamic_targets, keep_dynamic_candidates, parse_input_shape

TRUTH = ("Region-based segmentation", "Let us first determine markers of the coins and the",
         "background.These markers are pixels that we can label")


@pytest.fixture(scope="module")
def lines(photos):
    """Real text lines of scikit-image's scanned page, BGR, widths 242-376 px at heights 17-27."""
    from test_rec_ctc import _page_lines

    found = _page_lines(photos["page"])
    # the first three are single printed lines; the sixth is a code line (the others are blocks)
    return [found[0], found[1], found[2], found[5]]


@pytest.fixture(scope="module")
def calib_dir(photos, tmp_path_factory):
    """Every text line of the page, whole and in pieces (different widths), named per line so the
    held-out split keeps a line's pieces together."""
    from test_rec_ctc import _page_lines

    d = tmp_path_factory.mktemp("lines")
    for i, line in enumerate(_page_lines(photos["page"])):
        w = line.shape[1]
        for k, (a, b) in enumerate([(0, w), (0, w // 2), (w // 2, w), (0, 2 * w // 3), (w // 3, w)]):
            cv2.imwrite(str(d / f"line{'abcdefgh'[i]}_{k}.png"), line[:, a:b])
    return d


def test_input_shape_parsing():
    assert parse_input_shape("1,3,48,-1") == [1, 3, 48, None]
    assert parse_input_shape("1x3x48x?") == [1, 3, 48, None]
    assert parse_input_shape([1, 3, None, -1]) == [1, 3, None, None]
    assert parse_input_shape(None) is None
    for bad, needle in [("1,3,x,5", "integers"), ("-1,3,48,320", "batch dim"), ("1,3,0,5", ">= 1"),
                        ("1,3,-2,5", ">= 1")]:
        with pytest.raises(ConversionError, match=needle):
            parse_input_shape(bad)


@pytest.mark.parametrize("stated,wording", [
    ([1, 4, 48, 192], "--input-shape 1x4x48x192: input 'x' axis 1 is fixed at 3 in the model (?x3x?x?); give 3 there"),
    ([1, 3, 48], "--input-shape 1x3x48 has rank 3, the model input 'x' has rank 4 (?x3x?x?)"),
])
def test_one_checker_words_a_contradicting_shape_alike_in_convert_and_bench(cls_model, stated, wording):
    """MakeStatic (convert) and fill_dims (bench, predict) both check through runtimes.dims."""
    import onnx

    from converters.passes import MakeStatic, PassContext
    from edgesdk.errors import ConfigError
    from edgesdk.shapes import fill_dims

    with pytest.raises(ConversionError) as in_convert:
        MakeStatic()(onnx.load(str(cls_model)), PassContext(input_shapes={"x": stated}))
    with pytest.raises(ConfigError) as in_bench:
        fill_dims([None, 3, None, None], stated, "x")
    assert str(in_convert.value) == str(in_bench.value) == wording


def test_bench_may_feed_another_batch_but_convert_cannot_change_a_fixed_one(cls_model):
    import onnx

    from converters.passes import MakeStatic, PassContext
    from edgesdk.shapes import fill_dims

    assert fill_dims([1, 3, 48, 192], [8, 3, 48, 192], "x") == [8, 3, 48, 192]  # the runtime loops batch 1
    assert fill_dims([None, 3, None, None], [1, 3, 48, None], "x") == [1, 3, 48, None]
    model = onnx.load(str(cls_model))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    with pytest.raises(ConversionError, match="axis 0 is fixed at 1 in the model"):
        MakeStatic()(model, PassContext(input_shapes={"x": [8, 3, 48, 192]}))
    fixed = MakeStatic()(model, PassContext(input_shapes={"x": [1, 3, 48, 192]}))
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 48, 192]


def test_a_contradicting_shape_is_one_line_from_convert_and_predict(cls_model, photos, tmp_path, capsys):
    photo = tmp_path / "coffee.png"
    cv2.imwrite(str(photo), photos["coffee"])
    code, out, err = cli(["convert", str(cls_model), "-p", "amd-epyc-zen4", "--precision", "fp32", "--backend",
                          "onnxruntime", "--input-shape", "1,4,48,192", "-o", str(tmp_path / "b"), "-q"], capsys)
    assert code == 8 and "input 'x' axis 1 is fixed at 3 in the model" in err and "Traceback" not in err
    code, out, err = cli(["predict", str(cls_model), str(photo), "--input-shape", "1,4,48,192"], capsys)
    assert code == 2 and "input 'x' axis 1 is fixed at 3 in the model" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_static_targets_are_skipped_or_refused_from_their_records():
    from edgesdk.convert import _candidates
    from edgesdk.profiles import load_profile

    shape = [1, 3, 48, None]
    names, notes = dynamic_targets(load_profile("raspberry-pi-4"), None, shape)
    assert names == ["onnxruntime", "openvino"]
    assert any("litert needs static input shapes" in n and "--input-shape" in n for n in notes)
    assert dynamic_targets(load_profile("raspberry-pi-4"), None, [1, 3, 48, 320]) == (None, [])
    for profile, backends in (("coral-edgetpu", None), ("raspberry-pi-4", ["litert"]), ("jetson-orin-nano", ["tensorrt"])):
        with pytest.raises(ConversionError, match="--input-shape 1,3,48,N"):
            dynamic_targets(load_profile(profile), backends, shape)
    # the NPU of an OpenVINO profile needs static shapes, its GPU and CPU do not
    npu = load_profile("intel-core-ultra-npu")
    cands, _ = _candidates(npu, "auto", None, False, ["onnxruntime", "openvino"], False)
    kept, notes = keep_dynamic_candidates(cands, shape, npu.name)
    assert {c.device for c in cands} >= {"NPU", "GPU", "CPU"} and "NPU" not in {c.device for c in kept}
    assert notes and all("openvino on NPU needs static input shapes" in n for n in notes)


def test_the_python_api_skips_static_targets_in_the_variant_table(model_paths, tmp_path):
    from converters.variants import BuildSettings, VariantBuilder

    builder = VariantBuilder(BuildSettings(prepared=model_paths["ppocrv4_rec.onnx"], work=tmp_path, input_name="x",
                                           input_shape=[1, 3, 48, None]))
    for backend in ("litert", "edgetpu", "tensorrt"):
        v = builder.build(backend, "int8" if backend == "edgetpu" else "fp32")
        assert not v.ok and "needs static input shapes" in v.error and "--input-shape" in v.error


def test_calibration_keeps_each_line_its_own_width(calib_dir, model_paths, tmp_path):
    from edgesdk.calibration import load_calibration
    from edgesdk.presets import get_preset
    from edgesdk.shapes import spec_for_shape

    spec, notes = spec_for_shape(get_preset("ppocrv4_rec").preprocess, [1, 3, 48, None])
    assert spec.dynamic_width and spec.size == (48, 320) and "multiple of 8" in notes[0]
    data = load_calibration(calib_dir, spec, None, input_shape=[1, 3, 48, None], progress=None)
    widths = sorted({s.shape[-1] for s in data.samples})
    assert isinstance(data.samples, list) and len(widths) >= 5, widths
    assert all(w % 8 == 0 and 320 <= w <= MAX_DYNAMIC_SIDE for w in widths)
    assert all(s.shape[:2] == (3, 48) and s.dtype == np.float32 for s in data.samples)
    fit, held = data.split(0.25)
    assert len(fit) + len(held) == len(data) and isinstance(held.samples, list)
    assert not set(n.split("_")[0] for n in fit.names) & set(n.split("_")[0] for n in held.names)
    # one line tiled 8 times is wider than the cap: squeezed to it, and said so
    wide = cv2.imread(str(calib_dir / "linea_0.png"))
    (tmp_path / "wide").mkdir()
    cv2.imwrite(str(tmp_path / "wide" / "wide.png"), np.tile(wide, (1, 8, 1)))
    capped = load_calibration(tmp_path / "wide", spec, None, input_shape=[1, 3, 48, None], progress=None)
    assert capped.samples.shape[-1] <= MAX_DYNAMIC_SIDE and "brought down" in capped.notes[0]


def test_comparator_and_quantizer_readers_take_per_sample_shapes(calib_dir, model_paths):
    from converters.compare import Comparator
    from converters.onnx_quant import _Reader
    from edgesdk.calibration import load_calibration
    from edgesdk.presets import get_preset
    from edgesdk.shapes import spec_for_shape

    spec = spec_for_shape(get_preset("ppocrv4_rec").preprocess, [1, 3, 48, None])[0]
    samples = load_calibration(calib_dir, spec, 6, input_shape=[1, 3, 48, None], progress=None).samples
    rec = model_paths["ppocrv4_rec.onnx"]
    cmp = Comparator(rec, samples, task="text_recognition", reference_backend="onnxruntime")
    steps = [next(iter(o.values())).shape[1] for o in cmp.reference_outputs]
    assert len(set(steps)) > 1  # the CTC sequence length follows each line's width
    same = cmp.compare(rec, backend="openvino", precision="fp32")
    assert same.samples == len(samples) and same.cosine > 0.999
    reader = _Reader("x", samples)
    feeds = [reader.get_next() for _ in samples]
    assert reader.get_next() is None and [f["x"].shape for f in feeds] == [(1,) + s.shape for s in samples]


def _read(bundle, images):
    from edgesdk.predictor import Predictor

    with Predictor(bundle) as p:
        return [r.meta["text"] for r in p.predict(images)], p.manifest


def test_dynamic_width_bundle_reads_real_lines_at_their_widths(model_paths, calib_dir, lines, tmp_path, capsys):
    """fp32 convert with --input-shape 1,3,48,-1, then predict reads each line at its own width."""
    out = tmp_path / "rec.bundle"
    code, _, err = cli(["convert", str(model_paths["ppocrv4_rec.onnx"]), "-p", "amd-epyc-zen4", "--precision", "fp32",
                        "--input-shape", "1,3,48,-1", "--calib", str(calib_dir), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    texts, manifest = _read(out, lines)
    assert manifest.inputs[0].shape == (1, 3, 48, None) and manifest.preprocess.dynamic_width
    assert manifest.provenance["preprocess_sources"]["dynamic_axes"] == [3]
    assert "axis 3 stays dynamic" in (out / "report.md").read_text()
    assert tuple(texts[:3]) == TRUTH, texts
    bare, _ = _read(model_paths["ppocrv4_rec.onnx"], lines)
    assert texts == bare  # the same reading as the original model at the same widths
    # the CLI says the same per image; bench times the bundle at its own size, not 640x640
    code, stdout, err = cli(["predict", str(out)] + [str(_write(tmp_path, i, x)) for i, x in enumerate(lines)], capsys)
    assert code == 0 and all(t in stdout for t in TRUTH), stdout + err
    code, stdout, err = cli(["bench", str(out), "--iterations", "2", "--warmup", "0", "--json"], capsys)
    assert code == 0, err
    assert {tuple(r["input_shape"]) for r in json.loads(stdout)["rows"]} == {(1, 3, 48, 320)}
    assert "from the bundle's preprocess size" in err
    code, stdout, _ = cli(["info", str(out)], capsys)
    assert code == 0 and "x: float32[1x3x48x?]" in stdout and "each image's width, at least 320" in stdout


def _write(folder, i, img):
    path = folder / f"line{i}.png"
    cv2.imwrite(str(path), img)
    return path


def test_int8_with_dynamic_width_reads_most_lines_like_fp32(model_paths, calib_dir, lines, tmp_path, capsys):
    out = tmp_path / "rec8.bundle"
    code, _, err = cli(["convert", str(model_paths["ppocrv4_rec.onnx"]), "-p", "amd-epyc-zen4", "--precision", "int8",
                        "--backend", "openvino", "--input-shape", "1,3,48,-1", "--calib", str(calib_dir),
                        "--guard-steps", "0", "--max-accuracy-drop", "0.1", "-o", str(out), "-q"], capsys)
    assert code == 0, err
    texts, manifest = _read(out, lines)
    assert manifest.precision == "int8" and manifest.inputs[0].shape[3] is None
    fp32, _ = _read(model_paths["ppocrv4_rec.onnx"], lines)
    same = np.mean([a == b for a, b in zip(texts, fp32)])
    print(f"int8 dynamic-width bundle reads {same:.0%} of {len(lines)} real lines exactly as fp32: {texts}")
    assert same >= 0.75 and texts[0] == TRUTH[0]


def test_tflite_first_profile_says_why_and_keeps_dynamic_on_the_others(model_paths, calib_dir, tmp_path, capsys):
    out = tmp_path / "pi.bundle"
    code, _, err = cli(["convert", str(model_paths["ppocrv4_rec.onnx"]), "-p", "raspberry-pi-4", "--precision", "fp32",
                        "--input-shape", "1,3,48,-1", "--calib", str(calib_dir), "-o", str(out), "-q"], capsys)
    assert code == 0, err
    assert "litert needs static input shapes" in err and "--input-shape 1,3,48,N" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "onnxruntime" and manifest["inputs"][0]["shape"] == [1, 3, 48, None]
    code, _, err = cli(["convert", str(model_paths["ppocrv4_rec.onnx"]), "-p", "raspberry-pi-4", "--backend", "litert",
                        "--input-shape", "1,3,48,-1", "-o", str(tmp_path / "no.bundle"), "-q"], capsys)
    assert code != 0 and "--input-shape" in err and not (tmp_path / "no.bundle").exists()


def test_bench_and_predict_pick_a_stated_or_known_shape(model_paths, lines, tmp_path, capsys):
    import onnx

    rec = model_paths["ppocrv4_rec.onnx"]
    code, stdout, err = cli(["bench", str(rec), "--backend", "onnxruntime", "--iterations", "2", "--warmup", "0",
                             "--input-shape", "1,3,48,640", "--json"], capsys)
    assert code == 0 and json.loads(stdout)["rows"][0]["input_shape"] == [1, 3, 48, 640], err
    assert "from --input-shape" in err
    # the same recognizer without its preset (another hash and name): nothing says its size
    model = onnx.load(str(rec))
    model.metadata_props.add(key="copied", value="yes")
    unknown = tmp_path / "textlines.onnx"
    onnx.save(model, str(unknown))
    for argv in (["bench", str(unknown), "--iterations", "1"], ["predict", str(unknown), str(_write(tmp_path, 0, lines[0]))]):
        code, _, err = cli(argv, capsys)
        assert code == 2 and "--input-shape" in err and "640" not in err, err
    code, stdout, err = cli(["predict", str(unknown), str(_write(tmp_path, 1, lines[1])), "--input-shape", "1,3,48,-1",
                             "--resize", "fit-height", "--normalize", "symmetric", "--color", "BGR", "--json"], capsys)
    assert code == 0, err
    steps = json.loads(stdout)["outputs"]
    assert next(iter(steps.values()))["shape"][0] > 40  # its own width (/8 time steps), not 320


def test_detector_keeps_height_and_width_dynamic(det_model, photos, tmp_path, capsys):
    """--input-shape 1,3,-1,-1: each photo at its own size (the preset's side limit), the same
    text boxes as the original model."""
    from sampledata import calibration_images

    from edgesdk.predictor import Predictor

    out = tmp_path / "det.bundle"
    code, _, err = cli(["convert", str(det_model), "-p", "amd-epyc-zen4", "--precision", "fp32", "--backend",
                        "onnxruntime", "--input-shape", "1,3,-1,-1", "--calib", str(calibration_images(tmp_path / "c", 8)),
                        "-o", str(out), "-q"], capsys)
    assert code == 0, err
    page = photos["page"]
    with Predictor(out) as p:
        assert p.manifest.inputs[0].shape == (1, 3, None, None) and p.manifest.preprocess.size is None
        got = p.predict([page])[0]
    with Predictor(det_model) as bare:
        want = bare.predict([page])[0]
    assert len(got) == len(want) >= 3 and np.allclose(got.boxes, want.boxes, atol=2)
