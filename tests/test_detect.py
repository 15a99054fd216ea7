"""Host detection: parsers on recorded /proc samples of real machines, the profile each
sample must get (and why), this very host, and the `edgesdk detect` command."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesdk.cli import cli, main
from edgesdk.errors import ProfileError
from edgesdk.hostinfo import (HostInfo, closest_profile, detect_host, evaluate, is_this_host, parse_cpuinfo,
                              parse_device_tree_model, parse_meminfo, parse_tegra_release, rank_profiles)
from edgesdk.profiles import ENV_VAR, list_profiles, load_profile

ROOT = Path(__file__).resolve().parent.parent
HOSTS = Path(__file__).resolve().parent / "data" / "hosts"


@pytest.fixture(autouse=True)
def _no_env_profiles(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def profiles():
    return list_profiles()


@pytest.fixture(scope="module")
def this_host() -> HostInfo:
    return detect_host()


def sample(name: str) -> HostInfo:
    return detect_host(HOSTS / name)


# ----------------------------------------------------------------------------- parsers

def test_parse_cpuinfo_raspberry_pi_4():
    info = parse_cpuinfo((HOSTS / "raspberry-pi-4/proc/cpuinfo").read_text())
    assert info.processors == 4 and info.arch == "aarch64"
    assert info.parts == ("0xd08",) and info.model == "Cortex-A72" and info.vendor == "ARM"
    assert {"asimd", "neon", "crc32"} <= info.flags and "asimdhp" not in info.flags
    assert info.board == "Raspberry Pi 4 Model B Rev 1.1"


def test_parse_cpuinfo_32bit_kernel_is_armv7():
    info = parse_cpuinfo((HOSTS / "raspberry-pi-4-32bit/proc/cpuinfo").read_text())
    assert info.arch == "armv7l" and info.parts == ("0xd08",) and "neon" in info.flags
    assert info.hardware == "BCM2711"


def test_parse_cpuinfo_x86_flags_and_vendor():
    info = parse_cpuinfo((HOSTS / "xeon-sapphire-rapids/proc/cpuinfo").read_text())
    assert info.processors == 2 and info.arch == "x86_64" and info.vendor == "GenuineIntel"
    assert info.model == "Intel(R) Xeon(R) Platinum 8457C"
    assert {"amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_fp16", "avx512_vnni"} <= info.flags


def test_parse_cpuinfo_flags_are_common_to_all_cores():
    text = ("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: lm avx2 avx512f\n\n"
            "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: lm avx2\n")
    assert parse_cpuinfo(text).flags == frozenset({"lm", "avx2"})
    assert parse_cpuinfo("").processors == 0 and parse_cpuinfo("").flags == frozenset()


def test_parse_small_files():
    assert parse_meminfo("MemTotal:        3977140 kB\nMemFree: 1 kB\n") == 3883
    assert parse_meminfo("garbage") == 0
    assert parse_device_tree_model(b"NVIDIA Jetson AGX Orin Developer Kit\x00") == "NVIDIA Jetson AGX Orin Developer Kit"
    assert parse_tegra_release((HOSTS / "jetson-agx-orin/etc/nv_tegra_release").read_text()) == "R36.4.3"
    assert parse_tegra_release("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref") == "R32.7.1"
    assert parse_tegra_release("") == ""


# ----------------------------------------------------------------------------- recorded hosts

@pytest.mark.parametrize("folder,expected,evidence", [
    ("raspberry-pi-4", "raspberry-pi-4", ["Raspberry Pi 4 Model B Rev 1.1", "0xd08 = Cortex-A72"]),
    ("raspberry-pi-5", "raspberry-pi-5", ["Raspberry Pi 5 Model B Rev 1.0", "Cortex-A76", "asimdhp, asimddp"]),
    ("jetson-agx-orin", "jetson-agx-orin", ["AGX Orin", "Cortex-A78AE", "Jetson Linux R36.4.3"]),
    ("jetson-orin-nano", "jetson-orin-nano", ["Orin Nano", "Jetson Linux R36.4.7", "memory 7620 MiB"]),
    ("xeon-sapphire-rapids", "intel-xeon-amx", ["amx_tile, amx_bf16, avx512_bf16", "GenuineIntel"]),
    ("laptop-i7-8550u", "intel-core-avx2", ["avx2, fma"]),
    ("amd-epyc-zen4-kvm", "amd-epyc-zen4", ["avx512_bf16", "no amx_tile", "not intel-xeon-amx"]),
    ("rpi4-coral-usb", "coral-edgetpu", ["USB device 1a6e:089a", "also fits raspberry-pi-4"]),
])
def test_recorded_host_gets_the_right_profile(profiles, folder, expected, evidence):
    host = sample(folder)
    assert host.backends == () and host.ort_providers == ()      # recorded: engines not asked
    prof, reasons = closest_profile(host, profiles)
    assert prof.name == expected, reasons
    text = "\n".join(reasons)
    for piece in evidence:
        assert piece in text, (piece, reasons)


def test_recorded_host_facts():
    orin = sample("jetson-agx-orin")
    assert (orin.arch, orin.cores, orin.board, orin.tegra_release) == (
        "aarch64", 12, "NVIDIA Jetson AGX Orin Developer Kit", "R36.4.3")
    assert 29 * 1024 < orin.memory_mb < 30 * 1024
    xeon = sample("xeon-sapphire-rapids")
    assert xeon.ml_flags[-3:] == ["amx_tile", "amx_bf16", "amx_int8"] and xeon.board == ""
    assert sample("rpi4-coral-usb").usb_ids == {"1a6e:089a", "1d6b:0002"}


def test_32bit_os_on_a_pi_is_refused_with_the_fix(profiles):
    host = sample("raspberry-pi-4-32bit")
    assert host.arch == "armv7l"
    with pytest.raises(ProfileError) as info:
        closest_profile(host, profiles)
    msg = str(info.value)
    assert "raspberry-pi-4" in msg and "armv7l" in msg and "64-bit OS" in msg


def test_xeon_rules_out_the_amd_profile_and_vice_versa(profiles):
    spr = {m.profile.name: m for m in rank_profiles(sample("xeon-sapphire-rapids"), profiles)}
    assert "amx_tile" in spr["amd-epyc-zen4"].ruled_out
    epyc = {m.profile.name: m for m in rank_profiles(sample("amd-epyc-zen4-kvm"), profiles)}
    assert "amx_tile, amx_bf16" in epyc["intel-xeon-amx"].ruled_out
    assert epyc["jetson-nano"].ruled_out == "needs aarch64, host is x86_64"


def test_memory_tells_the_orin_nano_variants_apart(profiles):
    host = dataclasses.replace(sample("jetson-orin-nano"), memory_mb=3600)
    prof, reasons = closest_profile(host, profiles)
    assert prof.name == "jetson-orin-nano-4gb"
    assert "memory 3600 MiB is close to the profile's 4096 MiB" in reasons


def test_accelerators_found_through_drivers_usb_and_openvino(profiles):
    laptop = sample("laptop-i7-8550u")
    ultra = dataclasses.replace(laptop, cpu_model="Intel(R) Core(TM) Ultra 7 155H",
                                accel_drivers=frozenset({"intel_vpu"}))
    prof, reasons = closest_profile(ultra, profiles)
    assert prof.name == "intel-core-ultra-npu" and "intel_vpu" in reasons[0]
    stick = dataclasses.replace(laptop, usb_ids=frozenset({"03e7:2485"}))
    assert closest_profile(stick, profiles)[0].name == "intel-ncs2-myriadx"
    iris = dataclasses.replace(laptop, openvino_devices=("CPU", "GPU"),
                               openvino_device_names=(("GPU", "Intel(R) Iris(R) Xe Graphics (iGPU)"),))
    prof, reasons = closest_profile(iris, profiles)
    assert prof.name == "intel-iris-xe-igpu" and any("Iris(R) Xe" in r for r in reasons)
    # without any of those the laptop stays a plain AVX2 CPU
    assert closest_profile(laptop, profiles)[0].name == "intel-core-avx2"
    assert "none of its devices is present" in evaluate(load_profile("intel-core-ultra-npu"), laptop).ruled_out
    # a USB Edge TPU works behind any host CPU, so it wins on an x86 laptop too
    assert evaluate(load_profile("coral-edgetpu"), laptop).ruled_out == "needs aarch64, host is x86_64"
    coral = dataclasses.replace(laptop, usb_ids=frozenset({"18d1:9302"}))
    prof, reasons = closest_profile(coral, profiles)
    assert prof.name == "coral-edgetpu" and "USB device 18d1:9302 (Coral Edge TPU (USB))" in reasons[0]


def test_is_this_host_on_recorded_hosts():
    nano = sample("jetson-orin-nano")
    assert is_this_host("jetson-orin-nano", nano)
    assert is_this_host("jetson-orin-nano-4gb", nano)          # a variant of the same board
    assert not is_this_host("jetson-agx-orin", nano)
    assert not is_this_host("raspberry-pi-4", sample("raspberry-pi-4-32bit"))
    assert not is_this_host("generic-x86-64", sample("xeon-sapphire-rapids"))


# ----------------------------------------------------------------------------- this host

def test_this_host_is_probed_once():
    from edgesdk.hostinfo import this_host as cached
    assert cached() is cached()


def test_this_host_facts(this_host):
    assert this_host.arch in ("x86_64", "aarch64")
    assert this_host.cores >= 1 and this_host.memory_mb > 256
    assert this_host.cpu_flags, "no CPU flags read from /proc/cpuinfo"
    assert "onnxruntime" in this_host.backends
    assert "CPUExecutionProvider" in this_host.ort_providers
    if "openvino" in this_host.backends:
        assert "CPU" in this_host.openvino_devices


def test_this_host_gets_the_profile_its_flags_say(this_host, profiles):
    prof, reasons = closest_profile(this_host, profiles)
    flags, text = this_host.cpu_flags, "\n".join(reasons)
    if {"amx_tile", "amx_bf16", "avx512_bf16"} <= flags:
        assert prof.name == "intel-xeon-amx"
        assert "amx_tile, amx_bf16, avx512_bf16" in text
    elif "avx512_bf16" in flags and this_host.vendor == "AuthenticAMD":
        # the build machine: an AMD EPYC (Zen 4) with AVX-512 BF16 but no AMX
        assert prof.name == "amd-epyc-zen4"
        assert "avx512_bf16" in text and "not intel-xeon-amx" in text
    # whatever it is, every flag the chosen profile requires is really there
    assert set(prof.detect.cpu_flags) <= flags
    assert is_this_host(prof, this_host)
    assert not is_this_host("jetson-nano", this_host)


def test_cli_detect_json_matches_library(this_host):
    res = CliRunner().invoke(cli, ["detect", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    expected, reasons = closest_profile(this_host)
    assert out["profile"] == expected.name and out["reasons"] == reasons
    assert out["host"]["cpu_flags"] == sorted(this_host.cpu_flags)
    assert out["runnable_backends"][0]["backend"] in this_host.backends


def test_cli_detect_recorded_host_text():
    res = CliRunner().invoke(cli, ["detect", "--root", str(HOSTS / "jetson-agx-orin")])
    assert res.exit_code == 0, res.output
    assert "board:          NVIDIA Jetson AGX Orin Developer Kit" in res.output
    assert "closest profile: jetson-agx-orin" in res.output
    assert "profile's first choice: tensorrt/GPU int8, fp16, fp32 (NCHW)" in res.output


def test_cli_detect_without_a_fitting_profile_exits_6(capsys):
    with pytest.raises(SystemExit) as info:
        main(["detect", "--root", str(HOSTS / "raspberry-pi-4-32bit")])
    assert info.value.code == 6
    cap = capsys.readouterr()
    assert "arch:           armv7l" in cap.out
    assert cap.err.startswith("error: no device profile fits this host") and "64-bit OS" in cap.err


def test_cli_detect_end_to_end_subprocess(this_host):
    """The installed console entry point, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "edgesdk", "detect"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != ENV_VAR})
    assert proc.returncode == 0, proc.stderr
    name = closest_profile(this_host)[0].name
    assert f"closest profile: {name}" in proc.stdout
    for flag in load_profile(name).detect.cpu_flags:
        assert flag in proc.stdout
