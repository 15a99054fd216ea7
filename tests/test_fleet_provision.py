"""`edgesdk provision` with the fleet sections: it writes the device-local broker's config (which a
real mosquitto then runs, bridged to a central one) and the Mender update module; idempotent, drift."""
from __future__ import annotations

import json

import pytest
import yaml

from edgesdk.errors import ConfigError
from edgesdk.fleet.mender import MODULE_NAME
from edgesdk.provision.spec import load_spec
from mqttbroker import MosquittoBroker, Subscriber, find_mosquitto, free_port
from provisiondata import art, edgesdk  # noqa: F401 (fixture)
from test_fleet_mqtt import send
from test_provision import write_spec


def fleet_spec(tmp_path, art, central_port: int, local_port: int, **extra):
    path = write_spec(tmp_path, art)
    spec = yaml.safe_load(path.read_text())
    spec["broker"] = {"config": "etc/mosquitto/edgesdk.conf", "persistence": "var/mosquitto", "device_id": "cam-07",
                      "listen_port": local_port, "run_as": "root", "service": None,
                      "uplink": {"host": "127.0.0.1", "port": central_port, "tls": False}}
    spec["mender"] = {"package": "ocr-cls", "modules_dir": "modules", "config": "etc/edgesdk/mender.json"}
    spec.update(extra)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto not installed (tools/install_system_deps.sh)")
def test_provision_writes_a_working_bridged_broker_config_and_the_mender_module(art, tmp_path):
    central = MosquittoBroker(workdir=tmp_path / "central", persistence=True).start()
    local_port = free_port()
    spec_path = fleet_spec(tmp_path, art, central.port, local_port)
    r = edgesdk("provision", spec_path)
    assert r.returncode == 0, r.stderr
    conf = tmp_path / "etc" / "mosquitto" / "edgesdk.conf"
    assert f"wrote {conf}" in r.stdout and conf.stat().st_mode & 0o777 == 0o600
    module = tmp_path / "modules" / MODULE_NAME
    assert module.stat().st_mode & 0o111 and "edgesdk.fleet.mender_module" in module.read_text()
    cfg = json.loads((tmp_path / "etc" / "edgesdk" / "mender.json").read_text())
    assert cfg["root"] == str(tmp_path / "device" / "ocr-cls") and cfg["trusted_keys"] == str(art.trusted)
    again = edgesdk("provision", spec_path)
    assert again.returncode == 0 and again.stdout.strip() == "no changes"
    assert edgesdk("provision", spec_path, "--check").returncode == 0
    # the config provision wrote runs: results published on the device reach the central broker
    local = MosquittoBroker(port=local_port, workdir=tmp_path / "localrun", config=conf.read_text()).start()
    sub = Subscriber(central.port, "edgesdk/#", client_id="ops")
    try:
        assert send(f"mqtt://127.0.0.1:{local_port}/edgesdk/cam-07/results", range(25))["written"] == 25
        assert sub.wait_for(set(range(25))) == set()
    finally:
        sub.close()
        local.close()
        central.close()
    conf.write_text(conf.read_text().replace("cleansession false", "cleansession true"))
    drift = edgesdk("provision", spec_path, "--check")
    assert drift.returncode == 3 and f"{conf} differs from the spec" in drift.stdout


@pytest.mark.parametrize("change, message", [
    ({"broker": {"config": "c", "persistence": "p", "device_id": "d"}}, r"broker.uplink must be a mapping"),
    ({"broker": {"config": "c", "persistence": "p", "device_id": "bad id", "uplink": {"host": "h"}}}, "device id"),
    ({"broker": {"config": "c", "persistence": "p", "device_id": "d", "uplink": {"host": "h", "pw": 1}}},
     r"broker.uplink.pw: unknown key"),
    ({"broker": {"config": "c", "persistence": "p", "device_id": "d", "uplink": {"host": "h",
                                                                               "password_file": "/no/file"}}},
     "password_file /no/file"),
    ({"mender": {"package": "other"}}, "not one of the spec's packages"),
    ({"mender": {"package": "ocr-cls", "x": 1}}, r"mender.x: unknown key"),
])
def test_fleet_section_errors_name_the_file_and_key(art, tmp_path, change, message):
    path = write_spec(tmp_path, art)
    spec = {**yaml.safe_load(path.read_text()), **change}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)
