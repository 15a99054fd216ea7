#!/usr/bin/env bash
# Install the optional ONNX -> TFLite converter (onnx2tf) into a virtual environment.
#
# Usage: tools/install_tflite_converter.sh [PYTHON]   (make tflite passes the venv python)
#
# Why this is not a plain `pip install onnx2tf`:
#   * onnx2tf 2.x needs Python >= 3.12; on 3.11 the 1.29 line is the one that works.
#   * onnx2tf pins exact old versions of everything (tensorflow 2.19, numpy 1.26, onnx 1.19, ...),
#     which would downgrade the SDK's own stack. So its real dependencies are installed first,
#     then onnx2tf itself with --no-deps.
#   * tf-keras depends on the full `tensorflow` wheel (GPU build, ~570 MB more) which would
#     overwrite tensorflow-cpu's files: it is installed --no-deps too.
# About 1.7 GB lands in the environment. It is a build-host tool, never a device dependency.
set -euo pipefail

PY="${1:-python3}"
TF_VERSION="${TF_VERSION:-2.21.*}"
ONNX2TF_VERSION="${ONNX2TF_VERSION:-1.29.*}"

if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "error: $PY is older than Python 3.10; onnx2tf 1.29 needs 3.10 or newer" >&2
    exit 2
fi

echo ">> installing onnx2tf's real dependencies (tensorflow-cpu $TF_VERSION, ...)" >&2
"$PY" -m pip install "tensorflow-cpu==$TF_VERSION" onnx-graphsurgeon sng4onnx psutil onnxsim
echo ">> installing tf-keras and onnx2tf without their pinned dependencies" >&2
"$PY" -m pip install --no-deps "tf-keras==$TF_VERSION"
"$PY" -m pip install --no-deps "onnx2tf==$ONNX2TF_VERSION"

echo ">> checking the installation" >&2
"$PY" - <<'PYEOF'
import importlib.metadata as md
import onnx2tf  # noqa: F401  (fails here, not in the middle of a conversion)
import tensorflow as tf
print(f"onnx2tf {md.version('onnx2tf')}, tensorflow {tf.__version__}: ready")
PYEOF
