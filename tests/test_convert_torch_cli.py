"""PyTorch input on the CLI: module:factory with --example-shape (the real EfficientNet-Lite0),
TorchScript and ExportedProgram files, bundles named after the model; bad input in one line."""
from __future__ import annotations

import json

import cv2
import pytest

torch = pytest.importorskip("torch")

from clitools import cli as _cli  # noqa: E402
from clitools import convert_args as _convert  # noqa: E402

FLAGS = ["--normalize", "symmetric", "--resize", "crop", "--crop-ratio", "0.875", "--color", "RGB"]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos):
    d = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "chelsea", "astronaut", "rocket"):
        cv2.imwrite(str(d / f"{name}.png"), photos[name])
    return d




class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def test_module_factory_with_example_shape_is_named_after_the_factory(model_paths, photo_dir, tmp_path, capsys):
    out = tmp_path / "b"
    code, _, err = _cli(_convert("fetch_models:efficientnet_lite0", out, photo_dir, "--example-shape", "1,3,224,224",
                                 *FLAGS, "--task", "classification", "--labels", str(model_paths["imagenet_labels.txt"])),
                        capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["name"] == "efficientnet_lite0"
    code, text, _ = _cli(["predict", str(out), str(photo_dir / "coffee.png")], capsys)
    assert code == 0 and "espresso" in text


@pytest.mark.parametrize("kind", ["torchscript", "exported_program"])
def test_torch_files_convert_and_keep_their_name(kind, photo_dir, tmp_path, capsys):
    net = TinyNet().eval()
    example = torch.zeros(1, 3, 32, 32)
    if kind == "torchscript":
        path = tmp_path / "tiny_net.pt"
        torch.jit.save(torch.jit.trace(net, example), str(path))
        extra = ["--example-shape", "1,3,32,32"]
    else:
        path = tmp_path / "tiny_net.pt2"
        torch.export.save(torch.export.export(net, (example,)), str(path))
        extra = []  # the program brings its example input
    out = tmp_path / "b"
    code, _, err = _cli(_convert(path, out, photo_dir, *extra, "--normalize", "unit"), capsys)
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["name"] == "tiny_net"


def test_bad_torch_input_gets_one_line(photo_dir, tmp_path, capsys):
    state = tmp_path / "weights.pth"
    torch.save(TinyNet().state_dict(), str(state))
    cases = [([str(state), "--example-shape", "1,3,32,32"], ["not a TorchScript file", "module:factory"]),
             (["fetch_models:efficientnet_lite0"], ["--example-shape"]),
             (["fetch_models:no_such_factory", "--example-shape", "1,3,8,8"], ["no callable 'no_such_factory'"]),
             (["no_such_module_xyz:make", "--example-shape", "1,3,8,8"], ["cannot import module"])]
    for args, words in cases:
        code, _, err = _cli(_convert(args[0], tmp_path / "b", photo_dir, *args[1:], "--normalize", "unit"), capsys)
        assert code == 8 and len(err.strip().splitlines()) == 1, err
        for word in words:
            assert word in err
    assert not (tmp_path / "b").exists()
