"""PyTorch -> ONNX export and the prune + fine-tune hook (needs torch==2.13.0, CPU build)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from converters import torch_export  # noqa: E402
from converters.errors import ConversionError  # noqa: E402


def _net(torch):
    nn = torch.nn

    class SmallCNN(nn.Module):
        """conv-BN-ReLU, depthwise, pointwise, a residual block, a 1x1 head conv, pooling, linear."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU())
            self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
            self.pw = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
            self.res = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32))
            self.head = nn.Sequential(nn.Conv2d(32, 24, 1), nn.ReLU())
            self.fc = nn.Linear(24, 10)

        def forward(self, x):
            y = self.pw(self.dw(self.stem(x)))
            y = torch.relu(y + self.res(y))
            y = self.head(y)
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))

    torch.manual_seed(0)
    net = SmallCNN()
    for m in net.modules():  # trained-looking BatchNorm statistics, not the identity defaults
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return net.eval()


def _image_batch():
    """Real photographs, 32x32, normalized: (N, 3, 32, 32) float32."""
    import cv2

    from realdata import photos

    imgs = [cv2.resize(p, (32, 32)).astype(np.float32) / 255.0 for p in photos().values()]
    return np.stack([(i - 0.5) / 0.25 for i in imgs]).transpose(0, 3, 1, 2).copy()


def test_export_matches_torch_on_real_images(tmp_path):
    torch = pytest.importorskip("torch")
    net = _net(torch)
    x = _image_batch()
    path = torch_export.export(net, torch.from_numpy(x[:1]), tmp_path / "cnn.onnx")
    assert path.is_file() and not list(tmp_path.glob("*.tmp"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == "N"           # dynamic batch
    got = sess.run(None, {"input": x})[0]                  # batch 10 through a batch-1 trace
    want = net(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not net.training


def test_prune_and_export_fine_tunes_under_masks_and_matches_exactly(tmp_path):
    torch = pytest.importorskip("torch")
    net = _net(torch)
    x = torch.from_numpy(_image_batch())
    calls = []

    def fine_tune(module):
        """A few SGD steps towards the unpruned model's outputs (distillation)."""
        calls.append(module)
        target = _net(torch)
        opt = torch.optim.SGD(module.parameters(), lr=0.01)
        module.train()
        for _ in range(5):
            opt.zero_grad()
            loss = (module(x) - target(x).detach()).pow(2).mean()
            loss.backward()
            opt.step()
        module.eval()

    path, report = torch_export.prune_and_export(net, x[:1], tmp_path / "pruned.onnx", ratio=0.5, fine_tune=fine_tune)
    assert calls == [net]
    assert report.flops_ratio < 0.7 and report.groups
    assert any("Fine-tuned" in n for n in report.notes)
    # after fine-tuning the masks are baked in: the pruned ONNX model computes what the torch module computes
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, net(x).detach().numpy(), rtol=1e-4, atol=1e-4)
    from torch.nn.utils import prune as tprune
    assert not any(tprune.is_pruned(m) for m in net.modules())


def test_prune_and_export_without_fine_tuning(tmp_path):
    torch = pytest.importorskip("torch")
    net = _net(torch)
    x = torch.from_numpy(_image_batch())
    path, report = torch_export.prune_and_export(net, x[:1], tmp_path / "p.onnx", ratio=0.25)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    want = net(x).detach().numpy()
    assert got.shape == want.shape
    print(f"\nsmall CNN 25% pruned without fine-tuning: FLOPs x{report.flops_ratio:.3f}, "
          f"top-1 agreement {(got.argmax(1) == want.argmax(1)).mean():.2f}", file=sys.stderr)


def test_export_errors(tmp_path):
    torch = pytest.importorskip("torch")
    with pytest.raises(ConversionError, match="torch.nn.Module"):
        torch_export.export(object(), torch.zeros(1, 3, 8, 8), tmp_path / "x.onnx")
    with pytest.raises(ConversionError, match="example_input"):
        torch_export.export(_net(torch), np.zeros((1, 3, 8, 8)), tmp_path / "x.onnx")

    class Bad(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eig(x)[0].real  # no ONNX symbolic for eig

    with pytest.raises(ConversionError, match="failed"):
        torch_export.export(Bad(), torch.zeros(1, 4, 4), tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists() and not list(tmp_path.glob("*.tmp"))


def test_missing_torch_gives_the_install_hint(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(ConversionError, match=r"pip install torch==2\.13\.0"):
        torch_export.export(object(), None, tmp_path / "x.onnx")
