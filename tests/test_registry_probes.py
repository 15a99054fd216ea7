"""Host probes live in the backend records (runtimes.registry): each record names the function
that lists its engine's devices here, and host detection reads the records, not lists of its own."""
from __future__ import annotations

import dataclasses
import importlib
import sys
import types

import pytest

from runtimes import registry


def test_every_probe_is_a_function_inside_runtimes():
    probed = registry.host_probes()
    assert {"onnxruntime", "openvino"} <= set(probed)
    for name in probed:
        module, _, function = registry.RECORDS[name].devices.partition(":")
        assert module.startswith("runtimes.") and function, name
        assert callable(getattr(importlib.import_module(module), function))


def test_onnxruntime_probe_lists_the_cpu_provider():
    found = registry.probe_devices("onnxruntime")
    assert found.installed and "CPUExecutionProvider" in found.devices and not found.notes


@pytest.mark.skipif(not registry.is_available("openvino"), reason="needs the openvino extra")
def test_openvino_probe_names_its_cpu():
    found = registry.probe_devices("openvino")
    assert "CPU" in found.devices
    assert dict(found.names).get("CPU")  # FULL_DEVICE_NAME, e.g. the CPU model


def _with_record(monkeypatch, rec):
    monkeypatch.setitem(registry.RECORDS, rec.name, rec)


def test_a_missing_engine_is_a_note_naming_the_install(monkeypatch):
    rec = dataclasses.replace(registry.RECORDS["openvino"], name="fakeov", probes=("no_such_engine_module",),
                              extra="edgesdk[fakeov]")
    _with_record(monkeypatch, rec)
    found = registry.probe_devices("fakeov")
    assert not found.installed and found.devices == ()
    assert "pip install 'edgesdk[fakeov]'" in found.notes[0]


def test_a_broken_engine_is_a_note_not_an_exception(monkeypatch):
    fake = types.ModuleType("runtimes._fake_probe")

    def broken():
        raise RuntimeError("driver crashed")

    fake.devices, fake.two = broken, (lambda: [("NPU.0", "Fake NPU"), ("NPU.1", "")])
    monkeypatch.setitem(sys.modules, "runtimes._fake_probe", fake)
    _with_record(monkeypatch, registry.BackendRecord("fakenpu", "", ("numpy",), "fakenpu", (), ("int8",),
                                                     devices="runtimes._fake_probe:devices"))
    found = registry.probe_devices("fakenpu")
    assert found.installed and found.devices == () and "driver crashed" in found.notes[0]
    _with_record(monkeypatch, registry.BackendRecord("fakenpu", "", ("numpy",), "fakenpu", (), ("int8",),
                                                     devices="runtimes._fake_probe:two"))
    found = registry.probe_devices("fakenpu")
    assert found.devices == ("NPU.0", "NPU.1") and found.names == (("NPU.0", "Fake NPU"),)


def test_host_detection_reads_the_records(monkeypatch):
    """A new backend is one record: its probe shows up in detect_host with no change to hostinfo."""
    from edgesdk.hostinfo import detect_host

    fake = types.ModuleType("runtimes._fake_probe2")
    fake.devices = lambda: [("DSP", "Fake DSP v1")]
    monkeypatch.setitem(sys.modules, "runtimes._fake_probe2", fake)
    _with_record(monkeypatch, registry.BackendRecord("fakedsp", "", ("numpy",), "fakedsp", (), ("int8",),
                                                     devices="runtimes._fake_probe2:devices"))
    host = detect_host()
    devices = dict(host.engine_devices)
    assert devices["fakedsp"] == ("DSP",)
    assert "CPUExecutionProvider" in devices["onnxruntime"] and host.ort_providers == devices["onnxruntime"]
    assert host.to_dict()["engine_devices"]["fakedsp"] == ["DSP"]


def test_aliases_come_from_the_records():
    assert registry.ALIASES["ov"] == "openvino" and registry.ALIASES["tflite"] == "litert"
    # names of backends with no local engine are known (profiles use them) but not offered to load
    assert registry.ALL_ALIASES["trt"] == "tensorrt" and "trt" not in registry.ALIASES
    with pytest.raises(registry.BackendUnavailableError, match="unknown backend 'trt'"):
        registry.canonical("trt")
