"""Prometheus endpoint, scraped over HTTP on 127.0.0.1."""
from __future__ import annotations

import socket
import sys
import time
import urllib.error
import urllib.request

import pytest

from edgesdk.errors import SinkError
from edgesdk.results import Frame, Result
from edgesdk.sinks import make_sink
from edgesdk.sinks.prometheus import MetricsServer, PrometheusSink

pytest.importorskip("prometheus_client")


def scrape(url: str) -> dict[str, float]:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def res(i: int, source: str = "cam0", n: int = 2, **meta) -> Result:
    return Result(boxes=[[0, 0, 5, 5]] * n, scores=[0.9] * n, class_ids=[0] * n, source_id=source,
                  frame_index=i, timestamp=time.time() - 0.030, meta=meta)


def test_result_metrics_are_served():
    with MetricsServer(0, "127.0.0.1") as server:
        sink = PrometheusSink(server=server)
        with sink:
            for i in range(6):
                sink.write(None, res(i, infer_ms=4.0, batch_size=4))
            for i in range(3):
                sink.write(Frame("cam1", i, time.time(), None), res(i, source="cam1", n=0, e2e_ms=12.0))
            m = scrape(server.url)
    assert m['edgesdk_frames_total{source="cam0"}'] == 6 and m['edgesdk_frames_total{source="cam1"}'] == 3
    assert m['edgesdk_detections_total{source="cam0"}'] == 12
    assert m["edgesdk_inference_latency_seconds_count"] == 6
    assert m["edgesdk_inference_latency_seconds_sum"] == pytest.approx(0.024)
    assert m['edgesdk_inference_latency_seconds_bucket{le="0.005"}'] == 6
    assert m["edgesdk_e2e_latency_seconds_count"] == 9
    assert m['edgesdk_e2e_latency_seconds_bucket{le="0.02"}'] == 3  # the 12 ms ones; the others ~30 ms
    assert m["edgesdk_batch_size"] == 4 and m["edgesdk_fps"] > 0


def test_pipeline_snapshot_becomes_metrics():
    with MetricsServer(0, "127.0.0.1") as server:
        server.update({"fps_in": 29.5, "frames_total": 120, "dropped": {"cam0": 3, "cam1": 0},
                       "stages": {"infer": {"p50_ms": 4.5, "p99_ms": 9.0}}, "batching": "adaptive",
                       "running": True})
        m = scrape(server.url)
        server.update({"fps_in": 10})
        m2 = scrape(server.url)
    assert m["edgesdk_pipeline_fps_in"] == 29.5 and m["edgesdk_pipeline_frames_total"] == 120
    assert m['edgesdk_pipeline_dropped{key="cam0"}'] == 3
    assert m['edgesdk_pipeline_stages_infer{key="p99_ms"}'] == 9.0
    assert m["edgesdk_pipeline_running"] == 1
    assert not any("batching" in k for k in m)  # text is not a number: skipped
    assert m2["edgesdk_pipeline_fps_in"] == 10 and "edgesdk_pipeline_frames_total" not in m2


def test_port_in_use_is_a_sink_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SinkError, match=f"cannot serve metrics on 127.0.0.1:{port}.*in use"):
            MetricsServer(port, "127.0.0.1")
        with pytest.raises(SinkError, match="in use"):
            make_sink(f"prometheus://127.0.0.1:{port}").open()


def test_shared_server_serves_sink_and_pipeline_on_one_port():
    sink = make_sink("prometheus://127.0.0.1:0")
    sink.open()
    port = sink.server.port
    pipeline = MetricsServer.shared(port, "127.0.0.1")  # what --metrics-port would do
    assert pipeline is sink.server
    sink.write(None, res(0))
    pipeline.update({"fps_out": 5})
    m = scrape(pipeline.url)
    assert m['edgesdk_frames_total{source="cam0"}'] == 1 and m["edgesdk_pipeline_fps_out"] == 5
    sink.close()
    assert scrape(pipeline.url)["edgesdk_pipeline_fps_out"] == 5  # still served: one user left
    pipeline.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_bad_inputs():
    with pytest.raises(SinkError, match="0-65535"):
        MetricsServer(70000)
    with MetricsServer(0, "127.0.0.1") as server:
        with pytest.raises(SinkError, match="dict of stats"):
            server.update([1, 2])  # type: ignore[arg-type]


def test_missing_prometheus_client_is_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(SinkError, match=r"pip install 'edgesdk\[metrics\]'"):
        MetricsServer(0, "127.0.0.1")
