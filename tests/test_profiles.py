"""Device profiles: every shipped profile validates and states true facts; every
validation error names the file and the key; extends, search path and CLI work."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from edgesdk.cli import cli, main
from edgesdk.errors import ProfileError
from edgesdk.profiles import (ENV_VAR, PRECISIONS, list_profiles, load_profile, profile_names, search_path,
                              shipped_dir)

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "device_profiles"

REQUIRED = ["jetson-nano", "jetson-xavier-nx", "jetson-orin-nano", "jetson-agx-orin", "intel-core-avx2",
            "intel-xeon-avx512-vnni", "intel-xeon-amx", "intel-iris-xe-igpu", "intel-core-ultra-npu",
            "intel-ncs2-myriadx", "raspberry-pi-4", "raspberry-pi-5", "coral-edgetpu", "generic-arm64",
            "generic-x86-64"]


@pytest.fixture(autouse=True)
def _no_env_profiles(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def shipped():
    return {p.name: p for p in list_profiles()}


def write(folder: Path, name: str, data) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def minimal(**over) -> dict:
    data = {"description": "test device", "arch": "aarch64", "cpu": "4x Cortex-A53", "cores": 4,
            "memory_mb": 1024, "threads": 4, "max_batch": 4, "batch_sizes": [1, 2, 4],
            "backends": [{"backend": "litert", "device": "CPU", "precisions": ["int8", "fp32"], "layout": "NHWC"}]}
    data.update(over)
    return data


def error_of(name_or_path, dirs=None) -> str:
    with pytest.raises(ProfileError) as info:
        load_profile(name_or_path, dirs)
    return str(info.value)


# ----------------------------------------------------------------------------- shipped profiles

def test_every_shipped_profile_validates(shipped):
    files = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
    assert sorted(shipped) == files
    assert set(REQUIRED) <= set(shipped)
    for p in shipped.values():
        assert p.backends, p.name
        assert p.source == (SHIPPED / f"{p.name}.yaml").resolve()
        for b in p.backends:
            assert set(b.precisions) <= set(PRECISIONS)
            # the layout each engine really uses
            assert b.layout == ("NHWC" if b.backend in ("litert", "edgetpu") else "NCHW"), (p.name, b)
        assert all(size <= p.max_batch for size in p.batch_sizes)


def test_specific_profiles_cite_sources(shipped):
    for name, p in shipped.items():
        if not name.startswith("generic-"):
            assert p.sources, f"{name} states device facts without a sources: list"


def test_jetson_nano_facts(shipped):
    nano = shipped["jetson-nano"]
    trt = [b for b in nano.backends if b.backend == "tensorrt"]
    assert trt and trt[0].device == "GPU" and trt[0].precisions[0] == "fp16"
    gpu = [b for b in nano.backends if b.device == "GPU"]
    assert all("int8" not in b.precisions for b in gpu), "Maxwell (sm_53) has no INT8 in TensorRT"
    assert "128 CUDA cores" in nano.accelerators[0] and "Maxwell" in nano.accelerators[0]
    assert nano.memory_mb == 4096
    soft = dict(nano.software)
    assert soft["tensorrt"] == "8.2.1" and soft["jetpack"].startswith("4.6")


def test_orin_and_xavier_dla_facts(shipped):
    agx, nx, nano = shipped["jetson-agx-orin"], shipped["jetson-xavier-nx"], shipped["jetson-orin-nano"]
    for p in (agx, nx):
        dla = [b for b in p.backends if b.backend == "tensorrt" and b.device == "NPU"]
        assert dla and dla[0].precisions == ("int8", "fp16") and dla[0].option("dla_core") == 0
        assert p.best.backend == "tensorrt" and p.best.precisions[0] == "int8"
    assert not [b for b in nano.backends if b.device == "NPU"], "Orin Nano has no DLA"
    assert "Ampere" in agx.accelerators[0] and "2048 CUDA cores" in agx.accelerators[0]


def test_arm_board_precision_facts(shipped):
    pi4, pi5 = shipped["raspberry-pi-4"], shipped["raspberry-pi-5"]
    assert all("fp16" not in b.precisions for b in pi4.backends), "Cortex-A72 has no FP16 arithmetic"
    assert pi4.best.backend == "litert" and pi4.best.layout == "NHWC" and pi4.cores == 4
    assert "fp16" in pi5.precisions_for("litert") and "A76" in pi5.cpu
    assert "asimdhp" in pi5.detect.cpu_flags


def test_accelerator_profile_facts(shipped):
    coral = shipped["coral-edgetpu"]
    assert coral.best.backend == "edgetpu" and coral.best.precisions == ("int8",) and coral.best.layout == "NHWC"
    assert coral.max_batch == 1 and "4 TOPS" in coral.accelerators[0]
    assert any("edgetpu_compiler" in n for n in coral.notes)
    ncs2 = shipped["intel-ncs2-myriadx"]
    assert ncs2.best.precisions == ("fp16",) and ncs2.best.option("openvino_device") == "MYRIAD"
    assert any("2022.3" in n for n in ncs2.notes), "must say which toolkit still supports the NCS2"
    npu = shipped["intel-core-ultra-npu"]
    assert npu.best.device == "NPU" and npu.best.backend == "openvino"
    amx = shipped["intel-xeon-amx"]
    assert amx.best.backend == "openvino" and amx.best.precisions[0] == "bf16"
    assert set(amx.detect.cpu_flags) == {"amx_tile", "amx_bf16", "avx512_bf16"}


def test_extends_variant_deep_merges(shipped):
    small, base = shipped["jetson-orin-nano-4gb"], shipped["jetson-orin-nano"]
    assert small.chain == ("jetson-orin-nano-4gb", "jetson-orin-nano")
    assert small.extends == "jetson-orin-nano"
    assert small.memory_mb == 4096 and base.memory_mb == 8192
    assert small.backends == base.backends and small.software == base.software
    assert small.detect == base.detect
    assert "512 CUDA cores" in small.accelerators[0]
    assert set(base.sources) <= set(small.sources)


def test_runnable_backends_keeps_profile_order(shipped):
    p = shipped["intel-iris-xe-igpu"]
    got = p.runnable_backends(["ort", "openvino"])
    assert [(b.backend, b.device) for b in got] == [("openvino", "GPU"), ("openvino", "CPU"), ("onnxruntime", "CPU")]
    assert shipped["coral-edgetpu"].runnable_backends(["onnxruntime"]) == []


def test_to_dict_round_trips_through_json(shipped):
    d = json.loads(json.dumps(shipped["jetson-agx-orin"].to_dict()))
    assert d["backends"][1]["options"] == {"dla_core": 0, "allow_gpu_fallback": True}
    assert d["chain"] == ["jetson-agx-orin"]


# ----------------------------------------------------------------------------- search path

def test_extra_dir_profile_extends_shipped_and_deep_merges(tmp_path):
    write(tmp_path, "pi4-8gb", {"extends": "raspberry-pi-4", "description": "Pi 4 with 8 GB",
                                "memory_mb": 8192, "software": {"os": "Raspberry Pi OS bookworm 64-bit"},
                                "detect": {"cpu_model": ["Cortex-A72"]}})
    p = load_profile("pi4-8gb", [tmp_path])
    base = load_profile("raspberry-pi-4")
    assert p.memory_mb == 8192 and p.cores == base.cores and p.backends == base.backends
    assert dict(p.software) == {"os": "Raspberry Pi OS bookworm 64-bit"}
    # nested mappings merge key by key: board and cpu_parts come from the parent
    assert p.detect.board == base.detect.board and p.detect.cpu_parts == ("0xd08",)
    assert p.detect.cpu_model == ("Cortex-A72",)
    assert "pi4-8gb" in profile_names([tmp_path])


def test_env_var_adds_folders_and_overrides_shipped(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, "my-board", minimal())
    write(b, "generic-arm64", minimal(description="site-specific generic arm64"))
    monkeypatch.setenv(ENV_VAR, os.pathsep.join([str(a), str(b)]))
    names = [p.name for p in list_profiles()]
    assert "my-board" in names and names.count("generic-arm64") == 1
    assert load_profile("generic-arm64").description == "site-specific generic arm64"
    assert [src for _, src in search_path()][:2] == [ENV_VAR, ENV_VAR]


def test_user_file_may_extend_the_shipped_profile_it_shadows(tmp_path):
    write(tmp_path, "raspberry-pi-4", {"extends": "raspberry-pi-4", "memory_mb": 8192})
    p = load_profile("raspberry-pi-4", [tmp_path])
    assert p.memory_mb == 8192 and p.source == (tmp_path / "raspberry-pi-4.yaml").resolve()
    assert p.backends == load_profile("raspberry-pi-4").backends
    assert p.chain == ("raspberry-pi-4", "raspberry-pi-4")


def test_cli_dir_comes_before_env(tmp_path, monkeypatch):
    write(tmp_path / "env", "dup", minimal(description="from env"))
    write(tmp_path / "cli", "dup", minimal(description="from flag"))
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert load_profile("dup", [tmp_path / "cli"]).description == "from flag"


def test_load_by_path_resolves_extends_next_to_it(tmp_path):
    write(tmp_path, "base-x", minimal())
    path = write(tmp_path, "child-x", {"extends": "base-x", "max_batch": 8, "batch_sizes": [1, 8]})
    p = load_profile(path)
    assert p.name == "child-x" and p.max_batch == 8 and p.chain == ("child-x", "base-x")


def test_shipped_dir_found_from_an_installed_package(tmp_path):
    """A wheel carries the YAML as package data in edgesdk/device_profiles/ (no repo around)."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "edgesdk", site / "edgesdk", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "runtimes", site / "runtimes", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SHIPPED, site / "edgesdk" / "device_profiles")
    code = ("import edgesdk.profiles as p; d = p.shipped_dir(); "
            "print(d); print(len(p.list_profiles()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)}, timeout=60)
    assert out.returncode == 0, out.stderr
    folder, count = out.stdout.split()
    assert Path(folder) == site / "edgesdk" / "device_profiles"
    assert int(count) == len(list(SHIPPED.glob("*.yaml")))


def test_source_checkout_uses_repo_folder():
    assert shipped_dir() == SHIPPED.resolve()


# ----------------------------------------------------------------------------- error paths

def test_unknown_profile_name_lists_known_names():
    msg = error_of("jetson-nan")
    assert "unknown device profile 'jetson-nan'" in msg
    assert "Did you mean jetson-nano" in msg
    for name in REQUIRED:
        assert name in msg


def test_unknown_key_names_file_and_key(tmp_path):
    write(tmp_path, "bad", minimal(batchsize=4))
    msg = error_of("bad", [tmp_path])
    assert msg.startswith(str(tmp_path / "bad.yaml")) and ": batchsize: unknown key" in msg
    assert "did you mean 'batch_sizes'" in msg


def test_unknown_key_inside_backend(tmp_path):
    data = minimal()
    data["backends"].append({"backend": "onnxruntime", "device": "CPU", "precisions": ["fp32"],
                             "layout": "NCHW", "thread": 2})
    write(tmp_path, "bad", data)
    assert "bad.yaml: backends[1].thread: unknown key" in error_of("bad", [tmp_path])


def test_bad_precision_names_file_key_and_choices(tmp_path):
    data = minimal()
    data["backends"].append({"backend": "onnxruntime", "device": "CPU", "precisions": ["fp32", "int4"],
                             "layout": "NCHW"})
    write(tmp_path, "x", data)
    assert ("x.yaml: backends[1].precisions[1]: 'int4' is not one of fp32, fp16, bf16, int8"
            in error_of("x", [tmp_path]))


@pytest.mark.parametrize("key,value,expect", [
    ("cores", "four", "cores: expected a positive integer, got a string 'four'"),
    ("cores", True, "cores: expected a positive integer, got a boolean True"),
    ("memory_mb", 0, "memory_mb: expected a positive integer, got 0"),
    ("arch", "riscv64", "arch: 'riscv64' is not one of x86_64, aarch64, armv7l"),
    ("backends", {"backend": "litert"}, "backends: expected a list, got a mapping"),
    ("notes", [["nested"]], "notes[0]: expected a non-empty string, got a list"),
])
def test_bad_type_names_key(tmp_path, key, value, expect):
    write(tmp_path, "t", minimal(**{key: value}))
    assert f"t.yaml: {expect}" in error_of("t", [tmp_path])


def test_bad_backend_device_and_layout(tmp_path):
    data = minimal()
    data["backends"][0]["device"] = "TPU"
    write(tmp_path, "d", data)
    assert "d.yaml: backends[0].device: 'TPU' is not one of CPU, GPU, NPU" in error_of("d", [tmp_path])
    data["backends"][0].update(device="CPU", backend="tflite-gpu")
    write(tmp_path, "d", data)
    assert "backends[0].backend: 'tflite-gpu' is not one of onnxruntime, openvino" in error_of("d", [tmp_path])


def test_missing_required_key(tmp_path):
    data = minimal()
    del data["backends"]
    write(tmp_path, "m", data)
    assert "m.yaml: backends: missing required key" in error_of("m", [tmp_path])


def test_missing_key_in_variant_says_merged_chain(tmp_path):
    data = minimal()
    del data["threads"]
    write(tmp_path, "parent", data)
    write(tmp_path, "kid", {"extends": "parent"})
    msg = error_of("kid", [tmp_path])
    assert "kid.yaml: threads: missing required key (merged with parent)" in msg


def test_extends_cycle(tmp_path):
    write(tmp_path, "a", minimal(extends="b"))
    write(tmp_path, "b", minimal(extends="c"))
    write(tmp_path, "c", minimal(extends="a"))
    msg = error_of("a", [tmp_path])
    assert "extends: cycle a -> b -> c -> a" in msg


def test_extends_cycle_through_a_relative_folder(tmp_path, monkeypatch):
    write(tmp_path / "rel", "p", minimal(extends="q"))
    write(tmp_path / "rel", "q", minimal(extends="p"))
    monkeypatch.chdir(tmp_path)
    msg = error_of("p", ["rel"])
    assert msg.startswith(f"rel{os.sep}q.yaml: extends: cycle p -> q -> p")


def test_extends_itself(tmp_path):
    write(tmp_path, "loop", minimal(extends="loop"))
    assert "loop.yaml: extends: cycle loop -> loop" in error_of("loop", [tmp_path])


def test_unknown_extends(tmp_path):
    write(tmp_path, "orphan", minimal(extends="jetson-nanoo"))
    msg = error_of("orphan", [tmp_path])
    assert "orphan.yaml: extends: unknown device profile 'jetson-nanoo'" in msg and "jetson-nano" in msg


def test_name_must_match_file(tmp_path):
    write(tmp_path, "file-name", minimal(name="other-name"))
    assert "file-name.yaml: name: 'other-name' does not match the file name" in error_of("file-name", [tmp_path])


def test_non_mapping(tmp_path):  # YAML syntax errors: tests/test_yamlfile.py
    write(tmp_path, "listy", "- just\n- a list\n")
    assert "listy.yaml: a profile must be a YAML mapping" in error_of("listy", [tmp_path])


def test_cross_key_rules(tmp_path):
    write(tmp_path, "big", minimal(batch_sizes=[1, 8]))
    assert "big.yaml: batch_sizes[1]: 8 is larger than max_batch (4)" in error_of("big", [tmp_path])
    write(tmp_path, "order", minimal(batch_sizes=[4, 1]))
    assert "order.yaml: batch_sizes: must be ascending" in error_of("order", [tmp_path])
    data = minimal()
    data["backends"].append(dict(data["backends"][0]))
    write(tmp_path, "twice", data)
    assert "twice.yaml: backends[1]: litert/CPU is listed twice" in error_of("twice", [tmp_path])
    data = minimal()
    data["backends"][0]["precisions"] = ["fp32", "fp32"]
    write(tmp_path, "dup", data)
    assert "dup.yaml: backends[0].precisions[1]: 'fp32' is listed twice" in error_of("dup", [tmp_path])


def test_missing_folders_and_files(tmp_path, monkeypatch):
    with pytest.raises(ProfileError, match="from --profiles-dir"):
        load_profile("generic-arm64", [tmp_path / "nope"])
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(ProfileError, match=f"from \\${ENV_VAR}"):
        list_profiles()
    monkeypatch.delenv(ENV_VAR)
    assert "does not exist" in error_of(str(tmp_path / "missing.yaml"))


def test_one_bad_profile_fails_the_listing_with_its_name(tmp_path):
    write(tmp_path, "ok", minimal())
    write(tmp_path, "bad", minimal(threads=-1))
    with pytest.raises(ProfileError, match=r"bad\.yaml: threads: expected a positive integer, got -1"):
        list_profiles([tmp_path])


# ----------------------------------------------------------------------------- CLI

def test_cli_profiles_list_table():
    res = CliRunner().invoke(cli, ["profiles", "list"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0].split()[:3] == ["NAME", "ARCH", "BEST"]
    for name in REQUIRED:
        assert f"\n{name} " in res.output
    assert "jetson-nano             aarch64  tensorrt/GPU     fp16,fp32" in res.output


def test_cli_profiles_list_json_with_extra_dir(tmp_path):
    write(tmp_path, "lab-board", minimal())
    res = CliRunner().invoke(cli, ["profiles", "--profiles-dir", str(tmp_path), "list", "--json"])
    assert res.exit_code == 0, res.output
    names = [p["name"] for p in json.loads(res.output)]
    assert "lab-board" in names and "coral-edgetpu" in names


def test_cli_profiles_show_text_and_json():
    res = CliRunner().invoke(cli, ["profiles", "show", "jetson-orin-nano-4gb"])
    assert res.exit_code == 0, res.output
    assert "extends:      jetson-orin-nano" in res.output
    assert "1. tensorrt/GPU  precisions int8, fp16, fp32  layout NCHW" in res.output
    res = CliRunner().invoke(cli, ["profiles", "show", "raspberry-pi-5", "--json"])
    assert res.exit_code == 0
    assert json.loads(res.output) == json.loads(json.dumps(load_profile("raspberry-pi-5").to_dict()))


def test_cli_show_unknown_exits_6_with_message(capsys):
    with pytest.raises(SystemExit) as info:
        main(["profiles", "show", "rasberry-pi-5"])
    assert info.value.code == 6
    err = capsys.readouterr().err
    assert err.startswith("error: unknown device profile 'rasberry-pi-5'") and "raspberry-pi-5" in err


def test_cli_invalid_profile_exits_6_naming_file_and_key(tmp_path, capsys):
    data = minimal()
    data["backends"][0]["precisions"] = ["int4"]
    path = write(tmp_path, "x", data)
    with pytest.raises(SystemExit) as info:
        main(["profiles", "--profiles-dir", str(tmp_path), "list"])
    assert info.value.code == 6
    assert f"error: {path}: backends[0].precisions[0]: 'int4' is not one of fp32, fp16, bf16, int8" \
        in capsys.readouterr().err
