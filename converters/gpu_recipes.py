"""OpenCL GPU targets: what to run on the device to use (and check) its GPU.

Two paths, both run by engines EdgeSDK already drives, with a GPU this machine lacks:
- Intel integrated GPUs through OpenVINO's GPU plugin (OpenCL via Intel's compute runtime):
  the bundle's IR is the artifact; the plugin needs intel-opencl-icd and the render group.
- Arm Mali / Qualcomm Adreno GPUs through LiteRT's GPU delegate (OpenCL, OpenGL ES 3.1 as
  fallback): the bundle's .tflite is the artifact; Linux needs libtensorflowlite_gpu_delegate.so
  built from the TensorFlow sources (the ai-edge-litert wheels do not carry it).

The variant was checked here on the CPU (same file, CPU plugin / XNNPACK); `gpu/README.md`
and `gpu/check_gpu.sh` say how to run and compare it on the GPU: a recipe, not verified here.
"""
from __future__ import annotations

from pathlib import Path

RECIPE_MARK = "recipe, not verified here"

_OPENVINO = """#!/bin/sh
# Run the IR on the Intel GPU through OpenVINO's GPU plugin ({mark}).
set -e
python3 -c "import openvino as ov; d = ov.Core().available_devices; print('OpenVINO devices:', d); \\
assert 'GPU' in d, 'no GPU device: install intel-opencl-icd (Intel compute runtime), add the user to the render group'"
# the bundle on the GPU, compared with the CPU plugin on one input (fp32 hint: no fp16 drift in the comparison)
python3 - <<'EOF'
import numpy as np, openvino as ov
core = ov.Core()
model = core.read_model("{model}")
x = np.random.default_rng(0).random(tuple(model.inputs[0].shape), dtype=np.float32)
gpu = core.compile_model(model, "GPU", {{"INFERENCE_PRECISION_HINT": "f32"}})
cpu = core.compile_model(model, "CPU")
g, c = gpu(x)[0], cpu(x)[0]
print("max abs difference GPU vs CPU:", float(np.abs(g - c).max()))
EOF
benchmark_app -m {model} -d GPU -hint latency -t 10 || echo "benchmark_app is in the openvino-dev tools"
"""

_LITERT = """#!/bin/sh
# Run the TFLite model on the Mali/Adreno GPU through LiteRT's GPU delegate ({mark}).
set -e
command -v clinfo >/dev/null && clinfo -l || echo "clinfo not installed: cannot list OpenCL devices"
DELEGATE=${{EDGESDK_GPU_DELEGATE:-libtensorflowlite_gpu_delegate.so}}
python3 - "$DELEGATE" <<'EOF'
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter, load_delegate
delegate = load_delegate(sys.argv[1])   # fails here if the library is not on the loader path
gpu = Interpreter(model_path="{model}", experimental_delegates=[delegate])
cpu = Interpreter(model_path="{model}")
for it in (gpu, cpu):
    it.allocate_tensors()
d = gpu.get_input_details()[0]
x = np.random.default_rng(0).random(d["shape"], dtype=np.float32).astype(d["dtype"])
out = []
for it in (gpu, cpu):
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    out.append(it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float32))
print("max abs difference GPU vs CPU:", float(np.abs(out[0] - out[1]).max()))
EOF
"""

_README = {
    "openvino": """# Intel iGPU through OpenVINO's GPU plugin ({mark})

No Intel GPU was here: `{model}` was checked with OpenVINO's CPU plugin only.
On the device: install Intel's compute runtime (`intel-opencl-icd`, Level Zero), add the user
to the `render` group, then run `sh gpu/check_gpu.sh` from the bundle folder: it lists the
OpenVINO devices, compares GPU and CPU outputs on one input, and times the GPU. The first
compile for the GPU takes seconds; the profile's `cache_dir` option keeps the compiled blob.
""",
    "litert": """# Mali / Adreno GPU through LiteRT's GPU delegate ({mark})

No Mali or Adreno GPU was here: `{model}` was checked with LiteRT's CPU kernels only.
On the device: the vendor's OpenCL driver (`clinfo` lists the GPU), and
`libtensorflowlite_gpu_delegate.so` for aarch64, built from the TensorFlow sources:

    bazel build -c opt --config=elinux_aarch64 //tensorflow/lite/delegates/gpu:libtensorflowlite_gpu_delegate.so

(the ai-edge-litert wheels ship no GPU delegate). Then `sh gpu/check_gpu.sh` (set
EDGESDK_GPU_DELEGATE to the library's path) compares GPU and CPU outputs on one input.
The delegate computes in fp16 when allowed; INT8 models run dequantized (smaller, not faster).
""",
}


def write_recipe(folder: Path, backend: str, model: str) -> dict[str, Path]:
    """gpu/check_gpu.sh and gpu/README.md for `backend` (openvino or litert); {bundle name: path}."""
    if backend not in _README:
        return {}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "check_gpu.sh"
    script.write_text((_OPENVINO if backend == "openvino" else _LITERT).format(mark=RECIPE_MARK, model=model))
    script.chmod(0o755)
    readme = folder / "README.md"
    readme.write_text(_README[backend].format(mark=RECIPE_MARK, model=model))
    return {"gpu/check_gpu.sh": script, "gpu/README.md": readme}


def not_verified(backend: str) -> str:
    engine = "OpenVINO's GPU plugin" if backend == "openvino" else "LiteRT's GPU delegate"
    return (f"{RECIPE_MARK}: running on the GPU through {engine} (no such GPU here; checked on the CPU with "
            "the same file); gpu/check_gpu.sh runs and compares it on the device")
