"""Coral Edge TPU: a full-integer TFLite model and the `edgetpu_compiler` step.

The Edge TPU only runs fully int8-quantized TFLite models compiled with `edgetpu_compiler`
(x86-64 Debian/Ubuntu only). The full-integer model comes from `converters.tflite`
(onnx2tf); when the compiler is on PATH it runs here, otherwise the bundle carries the
command to run, and the report says the compile step was not done.
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConversionError

COMPILER = "edgetpu_compiler"


@dataclass
class EdgeTPUResult:
    model: Path                  # the file the bundle runs (compiled if the compiler ran)
    compiled: bool
    command: str
    log: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.name, "compiled": self.compiled, "command": self.command, "notes": self.notes}


def compile_model(tflite_path: Path, out_dir: Path, compiler: Optional[str] = None,
                  timeout: float = 600.0) -> EdgeTPUResult:
    tflite_path = Path(tflite_path)
    command = f"{COMPILER} -s -o . {tflite_path.name}"
    exe = compiler or shutil.which(COMPILER)
    if exe is None:
        return EdgeTPUResult(tflite_path, False, command, notes=[
            f"{COMPILER} is not installed here (it runs on x86-64 Debian/Ubuntu: "
            "apt-get install edgetpu-compiler from packages.cloud.google.com); run the command above next "
            "to the model and use the *_edgetpu.tflite it writes"])
    try:
        proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(tflite_path)], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConversionError(f"{COMPILER} failed to run: {exc}") from exc
    compiled = Path(out_dir) / (tflite_path.stem + "_edgetpu.tflite")
    if proc.returncode != 0 or not compiled.is_file():
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise ConversionError(f"{COMPILER} could not compile {tflite_path.name}: {' | '.join(tail)}")
    return EdgeTPUResult(compiled, True, command, proc.stdout,
                         ["ops the compiler could not map run on the host CPU; see the compiler log in the report"])


def write_recipe(folder: Path, result: EdgeTPUResult, source_name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "compile.sh"
    script.write_text("#!/bin/sh\n# Compile the full-integer model for the Edge TPU (x86-64 Debian/Ubuntu host).\nset -e\n"
                      f"{COMPILER} -s -o . {source_name}\n")
    script.chmod(0o755)
    readme = folder / "README.md"
    readme.write_text("# Edge TPU compile step\n\n" + f"    {COMPILER} -s -o . {source_name}\n\n"
                      + "\n".join(f"- {n}" for n in result.notes) + "\n")
    return [script, readme]
