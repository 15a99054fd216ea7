"""Label-free distillation (converters.distill): a pruned real model trained back towards its
original, the PyTorch-student path, checkpoints/resume after an interrupt, and every error path."""
from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from converters import distill as kd  # noqa: E402

try:  # onnx2torch imports torchvision; converters.distill copes with a missing/broken one
    kd.import_onnx2torch()
except ImportError:
    pytest.skip("onnx2torch is not installed (pip install '.[torch]')", allow_module_level=True)
from converters import pruning  # noqa: E402
from convdata import cls_samples  # noqa: E402
from edgesdk.errors import EdgeSDKError  # noqa: E402

QUICK = dict(eval_every_s=3.0, patience=50, target=2.0, batch=4)


def _ort(model, x):
    import onnxruntime as ort

    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name  # one sample at a time: pruned models may be static batch 1
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _cos(a, b):
    return float(np.mean([kd.cosine(x, y) for x, y in zip(a, b)]))


@pytest.fixture(scope="module")
def cls_pair(cls_model):
    """The real PP-OCR direction classifier and its 50%-pruned version (output far from the original)."""
    model = onnx.load(str(cls_model))
    samples = cls_samples("calibration")
    pruned, _ = pruning.channel_prune(model, 0.5, input_shapes={"x": [1, *samples.shape[1:]]})
    return model, pruned, samples, cls_samples("heldout")


@pytest.mark.xfail(strict=False, reason="open (issue 14): with converters.distill.RECIPE (load ~4) the 0.6 min "
                   "budget now runs 364 steps (was 6 at load ~10 before the thread probe backed off), yet the cosine "
                   "on crops never trained on goes 0.782 -> 0.649 (needs > 0.891): the student fits its own split, "
                   "not these crops")
def test_pruned_classifier_recovers_on_held_out_real_crops(cls_pair, tmp_path):
    model, pruned, samples, held = cls_pair
    lines = []
    cfg = kd.recipe_config(minutes=0.6, checkpoint=tmp_path / "ck.pt", **QUICK)   # what convert uses
    proto, rep = kd.distill_onnx(model, pruned, samples, tmp_path / "student.onnx", cfg, lines.append)
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == [o.name for o in model.graph.output]
    ref = _ort(model, held)
    before, after = _cos(ref, _ort(pruned, held)), _cos(ref, _ort(tmp_path / "student.onnx", held))
    print(f"\ncls pruned 50%: held-out cosine {before:.4f} -> {after:.4f} in {rep.steps} steps", file=sys.stderr)
    assert after > before + 0.5 * (1 - before)  # at least half of the gap closed, on crops never trained on
    assert rep.best_cosine >= rep.start_cosine and len(rep.history) >= 2 and rep.steps > 0
    assert any("ETA" in m for m in lines)
    assert rep.plot(tmp_path / "curve.png") and (tmp_path / "curve.png").stat().st_size > 1000
    md = rep.to_markdown()
    assert "held-out cosine" in md and "random crops" in md and str(rep.train_images) in md


@pytest.mark.xfail(strict=False, reason="open (issue 14): passed once with converters.distill.RECIPE (load ~10), "
                   "earlier a 15 s budget on a loaded box ended with no held-out improvement (287 steps); not "
                   "shown stable yet")
def test_user_nn_module_student_learns_from_an_onnx_teacher(cls_model):
    model = onnx.load(str(cls_model))
    samples = cls_samples("calibration")
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                  torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2),
                                  torch.nn.Softmax(dim=1))
    module, rep = kd.distill(model, student, samples, kd.recipe_config(minutes=0.25, lr=1e-2, **QUICK))
    assert module is student and rep.student == "user nn.Module"
    assert rep.best_cosine > rep.start_cosine


def test_interrupt_keeps_the_best_and_resume_continues(cls_pair, tmp_path):
    model, pruned, samples, _ = cls_pair
    ck = tmp_path / "ck.pt"
    calls = []

    def ctrl_c_on_second_eval(msg):
        calls.append(msg)
        if sum("distill step" in m for m in calls) == 2:
            raise KeyboardInterrupt

    cfg = kd.DistillConfig(minutes=1.0, checkpoint=ck, **QUICK)
    with pytest.raises(kd.DistillInterrupted, match="--resume") as exc:
        kd.distill_onnx(model, pruned, samples, tmp_path / "s.onnx", cfg, ctrl_c_on_second_eval)
    assert isinstance(exc.value, EdgeSDKError) and ck.exists() and not (tmp_path / "s.onnx").exists()
    saved = torch.load(ck, weights_only=False)
    assert saved["step"] > 0 and len(saved["history"]) >= 2
    cfg2 = kd.DistillConfig(minutes=0.1, checkpoint=ck, resume=True, **QUICK)
    lines = []
    _, rep = kd.distill_onnx(model, pruned, samples, tmp_path / "s.onnx", cfg2, lines.append)
    assert rep.resumed and rep.steps > saved["step"] and rep.best_cosine >= saved["best_cosine"]
    assert any("resumed from" in m for m in lines) and (tmp_path / "s.onnx").exists()


def test_resume_from_another_students_checkpoint_is_refused(cls_pair, tmp_path):
    model, pruned, samples, _ = cls_pair
    ck = tmp_path / "ck.pt"
    kd._save_checkpoint(ck, {"fingerprint": "someone-else"})
    with pytest.raises(kd.DistillError, match="another student"):
        kd.distill_onnx(model, pruned, samples, tmp_path / "s.onnx",
                        kd.DistillConfig(minutes=0.1, checkpoint=ck, resume=True), None)
    ck.write_bytes(b"not a checkpoint")
    with pytest.raises(kd.DistillError, match="cannot be read"):
        kd.distill_onnx(model, pruned, samples, tmp_path / "s.onnx",
                        kd.DistillConfig(minutes=0.1, checkpoint=ck, resume=True), None)


def test_too_few_images_says_how_many(cls_pair):
    model, pruned, samples, _ = cls_pair
    with pytest.raises(kd.DistillError, match=r"3 samples from my folder are too few.*at least 4"):
        kd.distill(model, pruned, samples[:3], kd.DistillConfig(minutes=0.1), source="my folder")


def test_operator_onnx2torch_cannot_convert_is_named(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("FancyOp", ["x"], ["y"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    with pytest.raises(kd.DistillError, match=r"FancyOp.*PyTorch path"):
        kd.onnx_to_torch(model, "teacher")


def test_non_image_samples_are_refused(cls_pair):
    model, pruned, _, _ = cls_pair
    with pytest.raises(kd.DistillError, match="N x C x H x W"):
        kd.distill(model, pruned, np.zeros((8, 10), np.float32))


def test_distill_without_compression_or_calibration_is_refused(cls_model, tmp_path):
    model = onnx.load(str(cls_model))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    common = dict(input_shapes={"x": [1, 3, 48, 192]}, config=kd.DistillConfig(), source="x", progress=print)
    with pytest.raises(kd.DistillError, match="--prune RATIO.*--lowrank ENERGY"):
        kd.compress_for_convert(model, path, pruned=False, lowrank=None, distill_student=True,
                                fit=cls_samples("calibration"), **common)
    with pytest.raises(kd.DistillError, match="--calib"):
        kd.compress_for_convert(model, path, pruned=True, lowrank=None, distill_student=True, fit=None, **common)
    assert onnx.load(str(path)).graph == model.graph  # nothing rewritten


def test_cli_distill_without_prune_exits_with_the_message(cls_model, tmp_path, capsys):
    from convdata import cls_crops, write_images
    from edgesdk.cli import main
    from edgesdk.hostinfo import closest_profile

    images = write_images(cls_crops("calibration"), tmp_path / "imgs")
    out = tmp_path / "b"
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(cls_model), "-p", closest_profile()[0].name, "--calib", str(images), "-o", str(out),
              "--precision", "fp32", "--distill", "-q"])
    assert exc.value.code != 0
    assert "--prune RATIO" in capsys.readouterr().err and not out.exists()


def test_training_crops_have_the_train_size_and_the_loss_stays_finite_on_empty_crops():
    cfg = kd.DistillConfig(train_size=32, crop_scale=(0.8, 1.25))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 64, 96)
    assert tuple(kd.augment(x, gen, cfg).shape) == (3, 3, 32, 32)
    assert tuple(kd.augment(x, gen, kd.DistillConfig()).shape) == (3, 3, 64, 96)  # no train_size: full size
    # a teacher map that is ~0 everywhere (a crop without text): per-sample normalisation blew up here
    t = torch.full((2, 1, 32, 32), 1e-7)
    s = torch.full((2, 1, 32, 32), 0.05, requires_grad=True)
    loss = kd._output_distance(s, t)
    loss.backward()
    assert torch.isfinite(loss) and float(loss) < 10 and float(s.grad.abs().sum()) > 0


def test_pruned_features_map_student_channels_to_the_teacher_channels_they_kept(cls_model):
    model = onnx.load(str(cls_model))
    pruned, rep = pruning.channel_prune(model, 0.5, input_shapes={"x": [1, 3, 48, 192]})
    feats = kd.pruned_features(model, pruned, rep.plan, limit=50)
    assert feats and all(n in {o for nd in model.graph.node for o in nd.output} for n in feats)
    x = cls_samples("heldout")[:2]
    t = kd._teacher_channels(kd.onnx_to_torch(kd._with_outputs(model, list(feats), {n: None for n in feats})), 1,
                             list(feats.values()))
    s = kd.onnx_to_torch(kd._with_outputs(pruned, list(feats), {n: None for n in feats}))
    with torch.no_grad():
        t_out, s_out = t(torch.from_numpy(x)), s(torch.from_numpy(x))
    first = next(iter(feats))  # the first pruned conv reads the unpruned input: its kept channels are exact
    k = list(feats).index(first) + 1
    assert t_out[k].shape == s_out[k].shape
    np.testing.assert_allclose(s_out[k].numpy(), t_out[k].numpy(), rtol=1e-4, atol=1e-4)


def test_learning_rate_ramps_up_over_the_warmup_steps_then_decays_to_five_percent():
    assert kd.lr_factor(0.0, 0, 30) == pytest.approx(1 / 30)
    assert kd.lr_factor(0.0, 14, 30) == pytest.approx(0.5)
    assert kd.lr_factor(0.0, 100, 30) == pytest.approx(1.0)
    assert kd.lr_factor(0.5, 100, 30) == pytest.approx(0.525)
    assert kd.lr_factor(1.0, 100, 30) == pytest.approx(0.05) and kd.lr_factor(2.0, 100, 30) == pytest.approx(0.05)
    assert kd.lr_factor(0.0, 0, 0) == pytest.approx(1.0)   # no warmup


def test_held_out_cosine_leaves_out_samples_whose_reference_is_empty():
    """A ~0 reference (a detector's map on a crop without text) says nothing: it must not pull the
    early-stopping metric down (PP-OCRv4 det: 4 of 9 held-out scenes gave cosine ~0 to a good student)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    reference = [np.stack([x[0], rng.standard_normal((1, 4, 4)).astype(np.float32) * 1e-6])]
    assert kd.held_out_cosine(torch.nn.Identity(), x, reference, 1) == pytest.approx(1.0)
    informative = [np.stack([x[0], -x[1]])]   # both informative: both count
    assert kd.held_out_cosine(torch.nn.Identity(), x, informative, 1) == pytest.approx(0.0, abs=1e-6)


STRONG = dict(train_size=48, crop_scale=(0.5, 2.0), rotate=10, perspective=0.08, mosaic=0.5, degrade=0.3,
              grayscale=0.1)


def test_strong_augmentation_gives_train_size_views_of_real_pixels_and_says_what_it_did():
    from converters import distill_augment as aug
    from convdata import det_samples

    x = det_samples("calibration", 6, 96)
    cfg = kd.DistillConfig(**STRONG)
    gen = torch.Generator().manual_seed(0)
    y = kd.augment(torch.from_numpy(x[:4]), gen, cfg, aug.hwc_pool(x))
    assert tuple(y.shape) == (4, 3, 48, 48) and torch.isfinite(y).all()
    lo, hi = float(x.min()), float(x.max())   # views sample real pixels (reflection, no padding value)
    assert float(y.min()) > lo - 1.0 and float(y.max()) < hi + 1.0 and float(y.std()) > 0.05
    again = kd.augment(torch.from_numpy(x[:4]), torch.Generator().manual_seed(0), cfg, aug.hwc_pool(x))
    assert torch.equal(y, again)   # one seed, one batch: runs repeat
    text = kd.describe_augmentation(cfg)
    assert all(w in text for w in ("rotation +-10 deg", "perspective 8%", "mosaics", "grayscale", "blur/noise/JPEG"))
    assert kd.describe_augmentation(kd.DistillConfig()) == "random crops 60%-100%, horizontal flips, colour jitter +-20%"


def test_each_augmentation_step_changes_the_input_the_way_it_says():
    from converters import distill_augment as aug
    from convdata import det_samples

    img = np.ascontiguousarray(det_samples("calibration", 1, 96)[0].transpose(1, 2, 0))
    gen = torch.Generator().manual_seed(1)
    gray = aug.colour_one(img, gen, kd.DistillConfig(grayscale=1.0, jitter=0.0))
    assert np.allclose(gray[..., 0], gray[..., 1]) and np.allclose(gray[..., 1], gray[..., 2])
    assert not np.allclose(img[..., 0], img[..., 1])
    blurred = aug._blur(img, gen)
    assert blurred.shape == img.shape and np.abs(np.diff(blurred, axis=1)).mean() < np.abs(np.diff(img, axis=1)).mean()
    jpeg = aug._jpeg(img, gen)
    assert jpeg.shape == img.shape and 0 < np.abs(jpeg - img).mean() < 0.2 * (img.max() - img.min())
    # no rotation, perspective, zoom or flip: the view is the image itself
    same = aug.view(img, gen, kd.DistillConfig(crop_scale=(1.0, 1.0), flip=False, rotate=0), (96, 96), None)
    np.testing.assert_allclose(same, img, atol=1e-4)
    turned = aug.view(img, gen, kd.DistillConfig(crop_scale=(1.0, 1.0), flip=False, rotate=30), (96, 96), None)
    assert np.abs(turned - img).mean() > 0.05


def test_weight_average_lags_the_live_weights_and_swaps_back():
    lin = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(0.0)
    ema = kd.WeightAverage(lin, 0.9)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    for step in range(1, 200):
        ema.update(step)
    avg = float(ema.shadow["weight"][0, 0])
    assert 0.99 < avg <= 1.0     # it followed the new weights
    with torch.no_grad():
        lin.weight.fill_(2.0)
    ema.update(200)
    assert float(ema.shadow["weight"][0, 0]) == pytest.approx(avg * 0.9 + 0.2)   # one step moves it 10%
    ema.swap()
    assert float(lin.weight[0, 0]) == pytest.approx(avg * 0.9 + 0.2)
    ema.swap()
    assert float(lin.weight[0, 0]) == 2.0


def test_early_stopping_holds_out_whole_photos_or_video_segments():
    samples = np.arange(40, dtype=np.float32).reshape(40, 1, 1, 1)
    groups = [f"segment {i // 5}" for i in range(40)]          # 8 segments of 5 neighbouring frames
    train, val = kd.split_train_val(samples, groups=groups)
    held = {groups[int(v)] for v in val.ravel()}
    assert len(val) >= 8 and all(groups[int(t)] not in held for t in train.ravel())
    train, val = kd.split_train_val(samples, groups=["a"] * 20 + ["b"] * 20)   # 2 groups: every 5th sample
    assert len(val) == 8 and len(train) == 32


def test_thread_chooser_trains_on_the_faster_count_and_measures_again_later():
    ch = kd.ThreadChooser(2, every_s=60.0, probe=6)
    assert ch.candidates == [1, 2] and ch.probing
    for step in range(6):                  # a busy box: 2 threads 5x slower
        th = ch.threads_for(step)
        ch.record(th, 2.4 if th == 2 else 0.5, elapsed=step)
    assert not ch.probing and ch.current == 1 and ch.threads_for(7) == 1
    assert "1 thread(s) 0.50 s/step" in ch.note and "training on 1" in ch.note
    ch.record(1, 0.5, elapsed=30.0)
    assert not ch.probing                  # not yet time to measure again
    ch.record(1, 0.5, elapsed=66.0)   # 60 s after the first measurement ended (at 5 s)
    assert ch.probing
    for step in range(6):                  # the box went quiet: 2 threads faster
        th = ch.threads_for(step)
        ch.record(th, 0.2 if th == 2 else 0.35, elapsed=67.0 + step)
    assert ch.current == 2 and "training on 2" in ch.note
    assert kd.ThreadChooser(1).candidates == [1] and not kd.ThreadChooser(1).probing


def test_thread_chooser_ends_a_probe_early_on_a_clear_loser_and_waits_longer_while_it_keeps_losing():
    ch = kd.ThreadChooser(2, every_s=60.0, probe=6)
    ch.record(ch.threads_for(0), 1.1, elapsed=1.0)       # 1 thread
    assert ch.probing
    ch.record(ch.threads_for(1), 19.4, elapsed=20.0)     # 2 threads, 18x slower: no third slow step
    assert not ch.probing and ch.current == 1 and ch.next_probe == 80.0
    waits = []
    for k in range(6):                                    # 2 threads keep losing: probes get rarer
        at = ch.next_probe
        ch.record(1, 1.1, elapsed=at)
        assert ch.probing
        ch.record(ch.threads_for(0), 1.1, elapsed=at + 1)
        ch.record(ch.threads_for(1), 19.4, elapsed=at + 20)
        waits.append(ch.next_probe - (at + 20))
    assert waits == [120.0, 240.0, 480.0, 960.0, 960.0, 960.0] and ch.current == 1
    ch.record(1, 1.1, elapsed=ch.next_probe)
    for step in range(6):                                 # the box went quiet: a close call, full probe
        th = ch.threads_for(step)
        ch.record(th, 0.2 if th == 2 else 0.3, elapsed=5000.0 + step)
    assert ch.current == 2 and "training on 2" in ch.note and ch.next_probe == 5005.0 + 60.0


def test_training_views_only_for_models_whose_outputs_scale_with_the_input():
    conv = torch.nn.Conv2d(3, 1, 3, padding=1)
    x = np.zeros((1, 3, 128, 128), np.float32)
    said = []
    assert kd.views_fit(conv, conv, x, 32, said.append) == 32 and "32x32 views of the 128x128" in said[-1]
    head = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(2 * 128 * 128, 2))
    assert kd.views_fit(head, head, x, 32, said.append) is None and "full 128x128" in said[-1]
    assert kd.views_fit(conv, conv, x, 100, said.append) is None      # the input is not twice the view size


def _mirrored_views(cfg, samples) -> int:
    """How many of 16 augmented views of upright text lines are closer to the mirrored line than to the line."""
    gen = torch.Generator().manual_seed(0)
    mirrored = 0
    for _ in range(4):
        views = kd.augment(torch.from_numpy(samples[:4]), gen, cfg).numpy()
        for v, x in zip(views, samples[:4]):
            same, flipped = (float(np.corrcoef(v.ravel(), ref.ravel())[0, 1]) for ref in (x, x[..., ::-1]))
            mirrored += flipped > same
    return mirrored


def test_text_recognizer_recipe_never_mirrors_or_tiles_its_text_lines():
    from convdata import rec_samples

    lines = rec_samples("calibration", 8)
    generic, rec = kd.recipe_config(), kd.recipe_config(task="text_recognition")
    assert generic.flip and generic.mosaic > 0   # what a detector trains on: mirrored scenes, mosaics
    assert _mirrored_views(generic, lines) > 0   # ... so the check below can fail
    assert not rec.flip and rec.mosaic == 0 and rec.ema == generic.ema
    # its factorized student starts close to the teacher: fine-tuned gently, BatchNorm statistics kept
    assert rec.lr < generic.lr and not rec.recalibrate_bn and generic.recalibrate_bn
    assert _mirrored_views(rec, lines) == 0
    assert "flips" not in kd.describe_recipe(rec) and "mosaic" not in kd.describe_recipe(rec)
    assert kd.recipe_config(task="text_detection") == generic   # other tasks keep the generic recipe
    assert kd.recipe_config(task="text_recognition", flip=True).flip   # overrides still win


def test_softmax_output_loss_is_not_diluted_by_the_class_count():
    gen = torch.Generator().manual_seed(0)
    for classes in (10, 6625):   # 6625: the PP-OCRv4 recognizer's characters per step
        t = torch.softmax(torch.randn(2, 40, classes, generator=gen) * 8, -1)
        s = torch.softmax(torch.randn(2, 40, classes, generator=gen) * 8, -1)
        assert kd._is_distribution(t)
        assert float(kd._output_distance(s, t)) > 1.0            # a wrong character per step costs as much
        assert float(kd._output_distance(t.clone(), t)) < 1e-4
    prob_map = torch.rand(2, 1, 16, 16, generator=gen)            # a detector's sigmoid map: not a distribution
    assert not kd._is_distribution(prob_map)
    other = prob_map.flip(-1)
    bce = torch.nn.functional.binary_cross_entropy(other, prob_map) + ((other - prob_map) ** 2).mean()
    assert float(kd._output_distance(other, prob_map)) == pytest.approx(float(bce), rel=1e-5)


# --- a detector the recipe was not written around: YOLOv8n (NudeNet 320n, no preset) ----------

@pytest.fixture(scope="module")
def yolo_pair(model_paths):
    """NudeNet's YOLOv8n at batch 1, its 30%-pruned version, and real photos letterboxed to 320."""
    import cv2
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    from realdata import photos

    model = update_inputs_outputs_dims(onnx.load(str(model_paths["nudenet_320n.onnx"])),
                                       {"images": [1, 3, 320, 320]}, {"output0": [1, 22, 2100]})
    pruned, rep = pruning.channel_prune(model, 0.3, input_shapes={"images": [1, 3, 320, 320]})
    x = np.stack([cv2.resize(p, (320, 320))[..., ::-1].transpose(2, 0, 1) for p in photos().values()])
    return model, pruned, rep, x.astype(np.float32) / 255


def test_features_matched_are_single_output_and_depend_on_the_input(yolo_pair):
    """onnx2torch hands back a Split's outputs as one tuple (convert --prune --distill crashed with
    'expected Tensor ... got tuple' on YOLOv8n); anchor grids and weights teach nothing."""
    model, pruned, _, _ = yolo_pair
    feats = kd.matching_features(model, pruned, {"images": [1, 3, 320, 320]}, limit=200)
    producer = {o: n for n in model.graph.node for o in n.output}
    live = kd.input_dependent(model)
    assert feats and all(len(producer[f].output) == 1 and f in live for f in feats)
    splits = [n for n in model.graph.node if n.op_type == "Split"]
    assert splits and not {o for n in splits for o in n.output} & set(feats)
    assert "/model.22/Mul_5_output_0" in live and "/model.22/Constant_output_0" not in live


def test_yolo_head_scores_weigh_in_the_loss_and_in_the_held_out_cosine(yolo_pair):
    """[1, 22, 2100]: 4 box rows in pixels, 18 class-score rows in [0, 1]. As one tensor, losing every
    score cost 1/400 of a one-pixel box shift and kept the cosine at 0.99999998."""
    model, _, _, x = yolo_pair
    t = torch.from_numpy(_ort(model, x[:2]))
    axis, scores = kd.score_channels(t)
    assert axis == 1 and int(scores.sum()) == 18 and not bool(scores[:4].any())
    no_scores, shifted = t.clone(), t.clone()
    no_scores[:, 4:] = 0
    shifted[:, :4] += 1
    assert float(kd._output_distance(no_scores, t)) > 2 * float(kd._output_distance(shifted, t))
    assert kd.output_cosine(no_scores[0].numpy(), t[0].numpy(), (axis, scores)) < 0.6
    assert kd.score_channels(torch.rand(2, 1, 40, 40)) is None  # a probability map is not a head
    assert kd.score_channels(torch.softmax(torch.randn(2, 40, 97), -1)) is None  # all channels in [0, 1]
    depth = torch.rand(2, 64, 64) * 5
    depth[:, :10] /= 5
    assert kd.score_channels(depth) is None  # a map with some rows in [0, 1] is no head either


def test_pruned_yolo_detector_distills_and_exports(yolo_pair, tmp_path):
    model, pruned, rep, x = yolo_pair
    cfg = kd.DistillConfig(minutes=2, max_steps=2, batch=2, eval_every_s=0.0, adapt_threads=False)
    proto, report = kd.distill_onnx(model, pruned, x, tmp_path / "student.onnx", cfg, plan=rep.plan)
    assert report.steps == 2 and np.isfinite(report.best_cosine)
    out = _ort(proto, x[:2])
    assert out.shape == (2, 22, 2100) and np.isfinite(out).all()
