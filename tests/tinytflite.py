"""Tiny .tflite models written with the TFLite flatbuffer schema (no TensorFlow needed).

For unit tests of plumbing only (dynamic batch, quantized tensors); real-model evidence uses
BlazeFace.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import flatbuffers
from ai_edge_litert import schema_py_generated as S


def _tensor(name: str, shape: Sequence[int], ttype: int, buffer: int,
            signature: Optional[Sequence[int]] = None,
            quant: Optional[tuple[float, int]] = None) -> "S.TensorT":
    t = S.TensorT()
    t.name, t.shape, t.type, t.buffer = name, list(shape), ttype, buffer
    if signature is not None:
        t.shapeSignature = list(signature)
    if quant is not None:
        q = S.QuantizationParametersT()
        q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
        t.quantization = q
    return t


def _op_code(builtin: int) -> "S.OperatorCodeT":
    code = S.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 1
    return code


def _save(path: Path, tensors, ops, codes, inputs, outputs) -> Path:
    graph = S.SubGraphT()
    graph.tensors, graph.operators, graph.inputs, graph.outputs = tensors, ops, inputs, outputs
    graph.name = "main"
    model = S.ModelT()
    model.version = 3
    model.operatorCodes = codes
    model.subgraphs = [graph]
    model.buffers = [S.BufferT() for _ in range(len(tensors) + 1)]  # buffer 0 is the empty one
    model.description = "edgesdk test model"
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    return path


def double(folder: Path, dynamic_batch: bool = True, width: int = 4) -> Path:
    """y = x + x on float32 [N, width]; N is dynamic (shape_signature -1) unless told otherwise."""
    sig = [-1, width] if dynamic_batch else [1, width]
    tensors = [_tensor("x", [1, width], S.TensorType.FLOAT32, 1, sig),
               _tensor("y", [1, width], S.TensorType.FLOAT32, 2, sig)]
    op = S.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    op.builtinOptionsType = S.BuiltinOptions.AddOptions
    op.builtinOptions = S.AddOptionsT()
    name = "double_dyn.tflite" if dynamic_batch else "double_b1.tflite"
    return _save(Path(folder) / name, tensors, [op], [_op_code(S.BuiltinOperator.ADD)], [0], [1])


IN_QUANT = (0.5, 128)   # uint8 input: real = 0.5 * (q - 128)
OUT_QUANT = (0.25, 0)   # int8 output: real = 0.25 * q


def requantize(folder: Path, width: int = 4) -> Path:
    """uint8 [1, width] -> dequantize -> quantize -> int8 [1, width]: integer in, integer out."""
    tensors = [_tensor("q_in", [1, width], S.TensorType.UINT8, 1, quant=IN_QUANT),
               _tensor("real", [1, width], S.TensorType.FLOAT32, 2),
               _tensor("q_out", [1, width], S.TensorType.INT8, 3, quant=OUT_QUANT)]
    deq = S.OperatorT()
    deq.opcodeIndex, deq.inputs, deq.outputs = 0, [0], [1]
    qua = S.OperatorT()
    qua.opcodeIndex, qua.inputs, qua.outputs = 1, [1], [2]
    codes = [_op_code(S.BuiltinOperator.DEQUANTIZE), _op_code(S.BuiltinOperator.QUANTIZE)]
    return _save(Path(folder) / "requantize.tflite", tensors, [deq, qua], codes, [0], [2])
