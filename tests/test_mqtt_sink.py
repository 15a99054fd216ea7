"""MQTT sink against a real mosquitto on a free loopback port (tests/mqttbroker.py).

Every message carries its frame_index as id; the subscriber counts them all.
"""
from __future__ import annotations

import sys
import threading
import time

import pytest

from edgesdk.errors import SinkError
from edgesdk.results import Result
from edgesdk.sinks import make_sink
from edgesdk.sinks.mqtt import MqttSink
from mqttbroker import MosquittoBroker, Subscriber, find_mosquitto, free_port

needs_broker = pytest.mark.skipif(find_mosquitto() is None,
                                  reason="mosquitto not installed (tools/install_system_deps.sh)")
FAST = "backoff_min=0.05&backoff_max=0.5"  # reconnect quickly in tests


def result(i: int, source: str = "cam0") -> Result:
    return Result(boxes=[[i, 2, i + 10, 20]], scores=[0.5], class_ids=[i % 3], labels=["face"],
                  source_id=source, frame_index=i, timestamp=1000.0 + i, meta={"infer_ms": 1.5})


@pytest.fixture
def broker(tmp_path):
    with MosquittoBroker(workdir=tmp_path / "broker") as b:
        yield b


@pytest.fixture
def persistent_broker(tmp_path):
    """Keeps the subscriber's session across restarts, as a deployed broker does."""
    with MosquittoBroker(persistence=True, workdir=tmp_path / "broker") as b:
        yield b


@needs_broker
def test_subscriber_receives_every_result_as_json(broker):
    sub = Subscriber(broker.port, "cams/#")
    sink = make_sink(f"mqtt://127.0.0.1:{broker.port}/cams/{{source_id}}/results?qos=1&client_id=edge-1")
    assert isinstance(sink, MqttSink) and sink.client_id == "edge-1"
    sent = [result(i, source=f"cam{i % 2}") for i in range(200)]
    with sink:
        for r in sent:
            sink.write(None, r)
    try:
        assert sub.wait_for(set(range(200))) == set()
        got = {m["frame_index"]: m for m in sub.messages}
        assert got[7] == sent[7].to_dict() and got[8]["source_id"] == "cam0"
        assert sorted(sub.ids()) == list(range(200))  # none twice on a healthy connection
        # results of one source arrive in order
        cam1 = [i for i in sub.ids() if i % 2]
        assert cam1 == sorted(cam1)
    finally:
        sub.close()
    stats = sink.stats
    assert stats["written"] == 200 and stats["dropped"] == 0 and stats["pending"] == 0


@needs_broker
def test_broker_restarted_mid_run_loses_nothing(persistent_broker):
    """Publishing goes on at a steady pace while the broker stops (SIGTERM) and restarts on
    the same port; every id arrives and every one is acknowledged."""
    broker = persistent_broker
    sub = Subscriber(broker.port, "run/results")
    sink = make_sink(f"mqtt://127.0.0.1:{broker.port}/run/results?queue=1000&{FAST}")
    n = 300
    phase = {"down": threading.Event(), "back": threading.Event()}
    states = []

    def produce():
        for i in range(n):
            if i == 100:
                phase["down"].wait(10)
            if i == 200:  # no further until the broker is back
                phase["back"].wait(10)
            sink.write(None, result(i))
            time.sleep(0.002)

    try:
        sink.open()
        producer = threading.Thread(target=produce)
        producer.start()
        while sink.stats["written"] < 100 and producer.is_alive():
            time.sleep(0.01)
        phase["down"].set()  # publishing goes on while the broker shuts down
        broker.stop()
        states.append(sink.stats)
        time.sleep(0.5)  # and while it is gone
        states.append(sink.stats)
        broker.start()
        phase["back"].set()
        producer.join(30)
        sink.close()
        missing = sub.wait_for(set(range(n)))
    finally:
        sub.close()
        sink.abort()
    assert missing == set(), f"lost {len(missing)} results: {sorted(missing)[:20]}"
    stats = sink.stats
    assert stats["written"] == n and stats["dropped"] == 0 and stats["errors"] == 0
    assert stats["connects"] >= 2  # it really reconnected
    assert not states[1]["connected"] and states[1]["pending"] > 0  # results queued while down


@needs_broker
def test_unacknowledged_messages_are_resent_after_reconnect(persistent_broker):
    """A frozen broker (SIGSTOP) takes the bytes but never acknowledges; it is then killed.
    Those results must not count as written, and must be re-sent to the new broker."""
    broker = persistent_broker
    sub = Subscriber(broker.port, "x/res")
    broker.save()  # the subscription survives the kill below
    sink = MqttSink("127.0.0.1", broker.port, "x/res", backoff_min=0.05, backoff_max=0.5)
    try:
        sink.open()
        for i in range(50):
            sink.write(None, result(i))
        assert sub.wait_for(set(range(50))) == set()
        broker.pause()
        for i in range(50, 120):  # on the wire, never acknowledged
            sink.write(None, result(i))
        time.sleep(0.3)
        frozen = sink.stats
        broker.kill()
        for i in range(120, 150):  # while there is no broker at all
            sink.write(None, result(i))
        broker.start()
        sink.close()
        missing = sub.wait_for(set(range(150)))
    finally:
        sub.close()
        sink.abort()
    assert frozen["written"] == 50 and frozen["pending"] == 70
    assert missing == set(), f"lost {sorted(missing)[:20]}"
    assert sink.stats["written"] == 150 and sink.stats["dropped"] == 0


@needs_broker
def test_offline_queue_is_bounded_and_drops_are_counted(persistent_broker, caplog):
    """wait=0: the sink starts with no broker and queues; past the bound it drops (counted);
    exactly the queued results arrive once the broker is up."""
    broker = persistent_broker
    sub = Subscriber(broker.port, "q/res")
    broker.stop()  # saves the subscriber's session
    sink = make_sink(f"mqtt://127.0.0.1:{broker.port}/q/res?wait=0&queue=50&{FAST}")
    try:
        sink.open()
        for i in range(80):
            sink.write(None, result(i))
        offline = sink.stats
        broker.start()
        sink.close()
        missing = sub.wait_for(set(range(50)))
        time.sleep(0.3)  # anything beyond the bound would arrive now
        ids = set(sub.ids())
    finally:
        sub.close()
        sink.abort()
    assert offline["dropped"] == 30 and offline["pending"] == 50 and not offline["connected"]
    full = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(full) == 1 and "unreachable" in full[0].getMessage()  # said once, not 30 times
    assert missing == set() and ids == set(range(50))  # the oldest kept, the newest refused
    assert sink.stats["written"] == 50 and sink.stats["dropped"] == 30


@needs_broker
def test_close_counts_unacknowledged_results_as_dropped(broker):
    sink = MqttSink("127.0.0.1", broker.port, "c/res", close_timeout=0.3, backoff_min=5, backoff_max=5)
    sink.open()
    sink.write(None, result(0))
    deadline = time.monotonic() + 5
    while sink.stats["written"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker.kill()
    for i in range(1, 6):
        sink.write(None, result(i))
    sink.close()
    assert sink.stats["written"] == 1 and sink.stats["dropped"] == 5


def test_unreachable_broker_at_open_is_a_clear_error():
    port = free_port()  # nothing listens there
    sink = make_sink(f"mqtt://127.0.0.1:{port}/t?wait=0.5")
    with pytest.raises(SinkError, match=rf"127\.0\.0\.1:{port}.*wait=0"):
        sink.open()
    assert sink.stats["pending"] == 0


@needs_broker
def test_broker_refusing_the_client_fails_at_once(tmp_path):
    with MosquittoBroker(workdir=tmp_path / "b", anonymous=False) as b:
        sink = make_sink(f"mqtt://127.0.0.1:{b.port}/t?wait=10")
        t0 = time.monotonic()
        with pytest.raises(SinkError, match="refused"):
            sink.open()
        assert time.monotonic() - t0 < 9  # refused, not timed out


@pytest.mark.parametrize("url, match", [
    ("mqtt://127.0.0.1:1883/", "needs a host and a topic"),
    ("mqtt://127.0.0.1:1883/a/#", "wildcards"),
    ("mqtt://127.0.0.1:1883/a/+/b", "wildcards"),
    ("mqtt://127.0.0.1:1883/a?qos=3", "qos must be"),
    ("mqtt://127.0.0.1:1883/a?qos=one", "not valid"),
    ("mqtt://127.0.0.1:1883/a?speed=9", "unknown option"),
    ("mqtt://127.0.0.1:99999/a", "bad port"),
    ("mqtt://127.0.0.1/a/{camera}", "placeholder"),
    ("mqtt://127.0.0.1/a?queue=0", "queue must be"),
    ("mqtt://127.0.0.1/a?queue=70000", "queue must be within 1-65535"),
    ("mqtt://127.0.0.1/a?queue=10&inflight=11", "inflight must be within 1 and queue"),
    ("mqtt://127.0.0.1/a?backoff_min=5&backoff_max=1", "backoff"),
    ("mqtt://127.0.0.1/a?wait=-1", "wait and close_timeout"),
    ("ws://127.0.0.1/a", "websockets is not supported"),
    ("mqtt://127.0.0.1/a?ca=/etc/hostname", "TLS options; use mqtts://"),
    ("mqtts://127.0.0.1/a?cert=/etc/hostname", "needs both cert= and key="),
    ("mqtts://127.0.0.1/a?ca=/no/such/ca.crt", "no such file"),
])
def test_bad_mqtt_urls_are_refused(url, match):
    with pytest.raises(SinkError, match=match):
        make_sink(url)


def test_bad_constructor_arguments():
    with pytest.raises(SinkError, match="port within 1-65535"):
        MqttSink("127.0.0.1", 0, "t")
    with pytest.raises(SinkError, match="port within 1-65535"):
        MqttSink("", 1883, "t")
    with pytest.raises(SinkError, match="not an mqtt:// URL"):
        MqttSink.from_url("http://127.0.0.1/t")


def test_publish_failure_other_than_a_full_queue_is_a_sink_error(monkeypatch):
    """paho reports other failures as return codes; none occurs on a healthy client, so one is injected."""
    import paho.mqtt.client as mqtt

    sink = MqttSink("127.0.0.1", free_port(), "t", wait=0)
    sink.open()
    try:
        failed = mqtt.MQTTMessageInfo(1)
        failed.rc = mqtt.MQTT_ERR_PROTOCOL
        monkeypatch.setattr(sink._client, "publish", lambda *a, **k: failed)
        with pytest.raises(SinkError, match="publish failed: .*[Pp]rotocol"):
            sink.write(None, result(0))
        assert sink.stats["errors"] == 1
    finally:
        sink.abort()


def test_url_options_reach_the_sink():
    s = make_sink("mqtt://user:p%40ss@broker.local:1884/a%2Fb?qos=0&queue=7&wait=0&retain=1&keepalive=9")
    assert (s.host, s.port, s.topic, s.qos, s.queue, s.wait, s.retain, s.keepalive) == \
        ("broker.local", 1884, "a/b", 0, 7, 0.0, True, 9)
    assert (s.username, s.password, s.inflight) == ("user", "p@ss", 7)
    assert make_sink("mqtt://h/t?inflight=50").inflight == 50


def test_missing_paho_is_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(SinkError, match=r"pip install 'edgesdk\[mqtt\]'"):
        MqttSink("127.0.0.1", free_port(), "t", wait=0).open()
