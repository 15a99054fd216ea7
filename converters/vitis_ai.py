"""AMD Vitis AI targets (Kria KV260 and other Zynq UltraScale+ boards with a DPUCZDX8G).

The DPU runs INT8 only, with power-of-two scales, so its model must come from the Vitis AI
quantizer for ONNX (`vai_q_onnx`, in the Vitis AI docker on an x86 host); onnxruntime's
Vitis AI execution provider then compiles the DPU subgraphs on the board when the session
starts (`config_file`: the vaip_config.json of the Vitis AI 3.5 target package) and caches
them. Neither tool is installable here, so the converter ships, under `vitis_ai/`:

- `model_fp32.onnx`: the prepared static-shape float model, vai_q_onnx's input;
- `calibration.npy`: real calibration samples, preprocessed exactly as the bundle will;
- `quantize.py`: the vai_q_onnx call for the DPU (QDQ, power-of-two MinMSE, int8, enable_dpu);
- `run_on_dpu.py`: the onnxruntime session with the Vitis AI EP, compared with the CPU model;
- `README.md`: the steps, marked "recipe, not verified here".

The bundle's own model is onnxruntime's INT8 QDQ model, checked here on the CPU: what the
board's Cortex-A53 cores run when the DPU path is not set up yet.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .errors import ConversionError

RECIPE_MARK = "recipe, not verified here"
#: calibration shipped in the bundle: Vitis AI suggests 100-1000 images; capped by size too
MAX_CALIB_SAMPLES = 200
MAX_CALIB_BYTES = 64 * 1024 * 1024
QUANTIZED_NAME = "model_int8_vai.onnx"

_QUANTIZE_PY = '''\
"""Quantize for the Vitis AI DPU with vai_q_onnx (run in the Vitis AI 3.5 docker, from the bundle folder).

{mark}: EdgeSDK wrote this; the arguments follow the DPU settings of the Vitis AI User
Guide (UG1414, vai_q_onnx). Check them against your Vitis AI version.
"""
import numpy as np
import vai_q_onnx
from onnxruntime.quantization import CalibrationDataReader


class Samples(CalibrationDataReader):
    """The calibration samples EdgeSDK preprocessed like the bundle will, one per call."""

    def __init__(self, path, input_name):
        self.samples = iter(np.load(path))
        self.input_name = input_name

    def get_next(self):
        sample = next(self.samples, None)
        return None if sample is None else {{self.input_name: sample[None]}}


vai_q_onnx.quantize_static(
    "vitis_ai/model_fp32.onnx",
    "vitis_ai/{quantized}",
    Samples("vitis_ai/calibration.npy", "{input_name}"),
    quant_format=vai_q_onnx.QuantFormat.QDQ,
    calibrate_method=vai_q_onnx.PowerOfTwoMethod.MinMSE,
    activation_type=vai_q_onnx.QuantType.QInt8,
    weight_type=vai_q_onnx.QuantType.QInt8,
    enable_dpu=True,
    extra_options={{"ActivationSymmetric": True}},
)
print("wrote vitis_ai/{quantized}: copy the bundle to the board and run vitis_ai/run_on_dpu.py there")
'''

_RUN_PY = '''\
"""Run the vai_q_onnx model on the DPU through onnxruntime's Vitis AI EP (on the board).

{mark}. Usage: python3 vitis_ai/run_on_dpu.py /path/to/vaip_config.json
The first session start compiles the DPU subgraphs (minutes) and caches them.
"""
import sys

import numpy as np
import onnxruntime as ort

config = sys.argv[1] if len(sys.argv) > 1 else "vaip_config.json"
x = np.load("vitis_ai/calibration.npy")[:1]
dpu = ort.InferenceSession("vitis_ai/{quantized}", providers=["VitisAIExecutionProvider"],
                           provider_options=[{{"config_file": config}}])
cpu = ort.InferenceSession("{cpu_model}", providers=["CPUExecutionProvider"])
got = dpu.run(None, {{"{input_name}": x}})
want = cpu.run(None, {{"{input_name}": x}})
for g, w in zip(got, want):
    cos = float(np.dot(g.ravel(), w.ravel()) / (np.linalg.norm(g) * np.linalg.norm(w) + 1e-12))
    print(f"output {{g.shape}}: cosine vs the CPU INT8 model {{cos:.4f}}")
print("providers:", dpu.get_providers())
'''


def calibration_subset(samples: np.ndarray) -> tuple[np.ndarray, Optional[str]]:
    """The samples to ship (all that fit the caps) and a note when some were left out."""
    if samples is None or len(samples) == 0:
        raise ConversionError("Vitis AI INT8 needs calibration data: pass --calib with real images")
    per = max(1, samples[0].nbytes)
    keep = int(min(len(samples), MAX_CALIB_SAMPLES, max(1, MAX_CALIB_BYTES // per)))
    note = None
    if keep < len(samples):
        note = (f"vitis_ai/calibration.npy holds {keep} of {len(samples)} calibration samples (capped at "
                f"{MAX_CALIB_SAMPLES} samples / {MAX_CALIB_BYTES // 2**20} MiB); Vitis AI suggests 100-1000")
    return np.ascontiguousarray(samples[:keep]), note


def write_recipe(folder: Path, prepared: Path, samples: np.ndarray, input_name: str,
                 cpu_model: str) -> tuple[dict[str, Path], list[str]]:
    """Write vitis_ai/ (see the module docstring); returns {bundle-relative name: path} and notes."""
    import shutil

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shipped, note = calibration_subset(samples)
    np.save(folder / "calibration.npy", shipped)
    shutil.copyfile(prepared, folder / "model_fp32.onnx")
    fields = {"mark": RECIPE_MARK, "quantized": QUANTIZED_NAME, "input_name": input_name, "cpu_model": cpu_model}
    (folder / "quantize.py").write_text(_QUANTIZE_PY.format(**fields))
    (folder / "run_on_dpu.py").write_text(_RUN_PY.format(**fields))
    (folder / "README.md").write_text(readme(cpu_model))
    names = ("model_fp32.onnx", "calibration.npy", "quantize.py", "run_on_dpu.py", "README.md")
    return {f"vitis_ai/{n}": folder / n for n in names}, [note] if note else []


def readme(cpu_model: str) -> str:
    return f"""# Vitis AI DPU ({RECIPE_MARK})

EdgeSDK had no Vitis AI tools or KV260 board: these are the steps, not a checked result.

1. On an x86 host, in the Vitis AI 3.5 docker (it has `vai_q_onnx`), from the bundle folder:

       python3 vitis_ai/quantize.py

   writes `vitis_ai/{QUANTIZED_NAME}`: INT8 QDQ with power-of-two scales (what the DPU takes),
   from `vitis_ai/model_fp32.onnx` and the real calibration samples in `vitis_ai/calibration.npy`.
2. On the board (Vitis AI 3.5 target image with onnxruntime's Vitis AI EP):

       python3 vitis_ai/run_on_dpu.py /path/to/vaip_config.json

   `config_file` is required (vaip_config.json ships in the Vitis AI 3.5 target package); the first
   session start compiles the DPU subgraphs and caches them (cacheDir, default /tmp/$USER/vaip/.cache).
   The script prints each output's cosine against `{cpu_model}`, the CPU INT8 model EdgeSDK checked.
3. The bundle's own model, `{cpu_model}` (onnxruntime's INT8 QDQ, float scales), runs on the
   Cortex-A53 cores meanwhile; EdgeSDK falls back to it, with one warning, when the EP is absent.

Models from Vitis AI's PyTorch/TensorFlow quantizers take the XIR path instead:
`vai_c_xir -x quantized.xmodel -a <arch.json of your DPU> -o out -n model` (arch.json files lie in
/opt/vitis_ai/compiler/arch in the docker; the board's overlay decides which).
"""
