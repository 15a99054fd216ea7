"""Results at fleet scale against real mosquitto brokers on 127.0.0.1: TLS with generated certificates,
username/password and client-certificate auth, and a device-local broker bridged to a central one
whose queue survives an uplink outage and its own restart on disk (QoS 1 end to end)."""
from __future__ import annotations

import time

import pytest

from certs import CertAuthority, self_signed
from edgesdk.errors import ConfigError, SinkError
from edgesdk.fleet.broker import Uplink, local_broker_config, write_local_broker_config
from edgesdk.sinks import make_sink
from mqttbroker import MosquittoBroker, Subscriber, find_mosquitto, free_port
from test_mqtt_sink import result

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason="mosquitto not installed (tools/install_system_deps.sh)")
FAST = "backoff_min=0.05&backoff_max=0.5"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertAuthority(tmp_path_factory.mktemp("mqtt-ca"))


def send(url: str, ids) -> dict:
    with make_sink(url) as sink:
        for i in ids:
            sink.write(None, result(i))
    return sink.stats


def test_tls_with_username_and_password(ca, tmp_path, monkeypatch):
    with MosquittoBroker(workdir=tmp_path / "b", anonymous=False, tls=(ca.cert, ca.server()),
                         users={"cam": "pw1", "ops": "pw2"}) as b:
        sub = Subscriber(b.port, "fleet/#", ca=ca.cert, username="ops", password="pw2")
        try:
            stats = send(f"mqtts://cam:pw1@127.0.0.1:{b.port}/fleet/cam?ca={ca.cert}", range(50))
            assert stats["written"] == 50 and stats["dropped"] == 0
            monkeypatch.setenv("EDGESDK_MQTT_PASSWORD", "pw1")  # the password kept out of the URL (and ps)
            assert send(f"mqtts://cam@127.0.0.1:{b.port}/fleet/cam?ca={ca.cert}", range(50, 60))["written"] == 10
            assert sub.wait_for(set(range(60))) == set()
        finally:
            sub.close()
        with pytest.raises(SinkError, match="not trusted.*[?]ca="):
            send(f"mqtts://cam:pw1@127.0.0.1:{b.port}/fleet/cam?wait=3", [1])
        other = self_signed(tmp_path)
        with pytest.raises(SinkError, match="not trusted"):
            send(f"mqtts://cam:pw1@127.0.0.1:{b.port}/fleet/cam?wait=3&ca={other.cert}", [1])
        with pytest.raises(SinkError, match="refused the connection"):
            send(f"mqtts://cam:wrong@127.0.0.1:{b.port}/fleet/cam?ca={ca.cert}", [1])


def test_client_certificate_auth(ca, tmp_path):
    cam, ops = ca.client("cam-7"), ca.client("ops")
    with MosquittoBroker(workdir=tmp_path / "b", anonymous=False, tls=(ca.cert, ca.server()),
                         require_certificate=True) as b:
        sub = Subscriber(b.port, "fleet/#", ca=ca.cert, cert=ops.cert, key=ops.key)
        try:
            url = f"mqtts://127.0.0.1:{b.port}/fleet/cam?ca={ca.cert}&cert={cam.cert}&key={cam.key}"
            assert send(url, range(30))["written"] == 30
            assert sub.wait_for(set(range(30))) == set()
        finally:
            sub.close()
        with pytest.raises(SinkError, match="cert=.*key="):  # no client certificate: the hint says what to add
            send(f"mqtts://127.0.0.1:{b.port}/fleet/cam?ca={ca.cert}&wait=3", [1])


def test_bridged_local_broker_keeps_results_on_disk_across_an_uplink_outage(ca, tmp_path):
    """camera -> local broker (loopback, persistence) -> TLS + client-cert bridge -> central broker.

    The central broker goes down; 200 results are published and acknowledged by the local broker,
    which is then killed (SIGKILL) and restarted; the central comes back: every result arrives."""
    bridge, ops = ca.client("bridge-dev1"), ca.client("ops")
    central = MosquittoBroker(workdir=tmp_path / "central", anonymous=False, tls=(ca.cert, ca.server()),
                              require_certificate=True, persistence=True).start()
    local_port = free_port()
    conf = tmp_path / "local" / "mosquitto.conf"
    write_local_broker_config(conf, Uplink("127.0.0.1", central.port, ca=str(ca.cert), cert=str(bridge.cert),
                                           key=str(bridge.key)), "dev1", tmp_path / "local" / "db",
                              listen_port=local_port, run_as="root")
    local = MosquittoBroker(port=local_port, workdir=tmp_path / "local", config=conf.read_text()).start()
    sub = Subscriber(central.port, "edgesdk/#", client_id="ops-1", ca=ca.cert, cert=ops.cert, key=ops.key)
    try:
        url = f"mqtt://127.0.0.1:{local_port}/edgesdk/dev1/results?{FAST}"
        assert send(url, range(20))["written"] == 20
        assert sub.wait_for(set(range(20))) == set()
        central.stop()  # the uplink is down
        assert send(url, range(20, 220))["written"] == 200  # acknowledged by the local broker: on its disk
        time.sleep(0.5)  # autosave_on_changes: the queue is on disk within moments
        local.kill()  # and the device loses power (SIGKILL: nothing saved at exit) before the uplink is back
        local.start()
        central.start()
        assert sub.wait_for(set(range(220)), timeout=30) == set()
    finally:
        sub.close()
        local.close()
        central.close()


def test_local_broker_config_refusals_and_shape(tmp_path):
    text = local_broker_config(Uplink("central.example", 8883, ca="/etc/edgesdk/ca.crt", username="dev1",
                                      password="pw"), "dev1", tmp_path)
    assert "listener 1883 127.0.0.1" in text and "persistence true" in text and "topic edgesdk/# out 1" in text
    assert "cleansession false" in text and "bridge_cafile /etc/edgesdk/ca.crt" in text
    with pytest.raises(ConfigError, match="device id"):
        local_broker_config(Uplink("h"), "bad id", tmp_path)
    with pytest.raises(ConfigError, match="both cert and key"):
        local_broker_config(Uplink("h", cert="/c"), "d", tmp_path)
    with pytest.raises(ConfigError, match="TLS uplink"):
        local_broker_config(Uplink("h", tls=False, ca="/c"), "d", tmp_path)
    with pytest.raises(ConfigError, match="password needs a username"):
        local_broker_config(Uplink("h", password="p"), "d", tmp_path)
    conf = tmp_path / "m.conf"
    assert write_local_broker_config(conf, Uplink("h"), "d", tmp_path / "db")
    assert not write_local_broker_config(conf, Uplink("h"), "d", tmp_path / "db")  # unchanged: not rewritten
    assert conf.stat().st_mode & 0o777 == 0o600
