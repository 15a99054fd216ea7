# Two commands matter: `make demo` and `make test`. Everything they need is installed here.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
TFLITE  := $(VENV)/.tflite
MODELS  := .cache/models/.fetched
PYTEST_ARGS ?=

.PHONY: demo test bench venv models system-deps tflite clean help arm64-check

help:
	@echo "make demo    - set up, fetch real models, convert + run the main job end to end"
	@echo "make test    - set up and run the test suite"
	@echo "make bench   - benchmarks (ratios measured in one run)"
	@echo "make tflite  - add the optional ONNX->TFLite converter (onnx2tf, ~1.7 GB)"
	@echo "make arm64-check - the device path on an emulated arm64 Debian (root, qemu-user-static; ~30 min first time)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -c constraints.txt -e '.[all,torch]'
	$(PYTHON) -m pip install -q --no-deps -c constraints.txt onnx2torch
	touch $@

venv: $(STAMP)

$(MODELS): tools/fetch_models.py $(STAMP)
	$(PYTHON) tools/fetch_models.py
	touch $@

models: $(MODELS)

system-deps:
	@bash tools/install_system_deps.sh

# the tests cover every converter, so they install the optional TFLite one too
test: venv models system-deps tflite
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

demo: venv models system-deps tflite
	$(PYTHON) examples/demo.py

# ratios measured in one run each; tables also land in out/bench_*.md
bench: venv models tflite system-deps
	mkdir -p out
	$(PYTHON) bench/runtime_overhead.py --markdown out/bench_runtime.md
	$(PYTHON) bench/convert.py --models cls,det --markdown out/bench_convert.md
	$(PYTHON) bench/stream.py --markdown out/bench_stream.md
	$(PYTHON) bench/fleet.py --devices 50 --parallel 2 --markdown out/bench_fleet.md

$(TFLITE): tools/install_tflite_converter.sh $(STAMP)
	bash tools/install_tflite_converter.sh $(PYTHON) >/dev/null
	touch $@

tflite: $(TFLITE)

clean:
	rm -rf $(VENV) .pytest_cache out

# The device path on a Debian bookworm arm64 userland under qemu-user-static (root; not part of
# `make test`: building the userland takes ~30 min once, the check ~15 min). The userland is
# cached in $(ARM64_DIR); tools/arm64/need_tools.sh says what to install when tools are missing.
ARM64_DIR ?= .cache/arm64
arm64-check: venv models
	ARM64=1 bash tools/install_system_deps.sh
	bash tools/arm64/build_userland.sh $(ARM64_DIR)/rootfs
	$(PYTHON) tools/arm64_check.py --rootfs $(ARM64_DIR)/rootfs
