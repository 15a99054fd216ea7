"""Tiny ONNX models built with onnx.helper, for unit tests of plumbing (never as the only evidence)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np


class TinyModels:
    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def _save(self, graph, name: str, opset: int = 13) -> Path:
        import onnx
        from onnx import helper

        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = self.folder / f"{name}.onnx"
        onnx.save(model, str(path))
        return path

    def add_one(self, shape: Sequence[Optional[int]] = (None, 3, 4, 4), name: str = "add_one",
                dtype=np.float32) -> Path:
        """y = x + 1; batch dim dynamic unless given."""
        from onnx import TensorProto, helper, numpy_helper

        elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        dims = ["N" if d is None else d for d in shape]
        x = helper.make_tensor_value_info("x", elem, dims)
        y = helper.make_tensor_value_info("y", elem, dims)
        one = numpy_helper.from_array(np.ones([1], dtype=dtype), "one")
        node = helper.make_node("Add", ["x", "one"], ["y"], name="add")
        return self._save(helper.make_graph([node], name, [x], [y], [one]), name)

    def two_inputs(self, name: str = "two_inputs") -> Path:
        """z = a * b with a, b of shape [N, 4]."""
        from onnx import TensorProto, helper

        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4])
        b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])
        z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])
        node = helper.make_node("Mul", ["a", "b"], ["z"], name="mul")
        return self._save(helper.make_graph([node], name, [a, b], [z]), name)

    def conv_net(self, name: str = "conv_net", batch: Optional[int] = None, size: int = 16,
                 channels: Sequence[int] = (8, 16), seed: int = 0) -> Path:
        """Conv-BN-Relu stack -> global pool -> Gemm(10): a small classifier."""
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(seed)
        nodes, inits = [], []
        prev, cin = "x", 3
        for i, cout in enumerate(channels):
            w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.2).astype(np.float32), f"w{i}")
            b = numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")
            inits += [w, b]
            nodes.append(helper.make_node("Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
            prev, cin = f"r{i}", cout
        nodes.append(helper.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"))
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"))
        wf = numpy_helper.from_array((rng.standard_normal((10, cin)) * 0.2).astype(np.float32), "wf")
        bf = numpy_helper.from_array(np.zeros(10, np.float32), "bf")
        inits += [wf, bf]
        nodes.append(helper.make_node("Gemm", ["flat", "wf", "bf"], ["logits"], transB=1, name="fc"))
        n = "N" if batch is None else batch
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, 3, size, size])
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [n, 10])
        return self._save(helper.make_graph(nodes, name, [x], [y], inits), name)
