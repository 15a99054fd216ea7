"""The Prometheus endpoint binds 127.0.0.1 by default and can require HTTP basic auth."""
from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.request

import pytest

from edgesdk.errors import SinkError
from edgesdk.results import Result
from edgesdk.sinks import make_sink
from edgesdk.sinks.prometheus import MetricsServer
from mqttbroker import free_port


def scrape(url: str, auth=None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def _other_address() -> str:
    """A non-loopback address of this machine, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
            return s.getsockname()[0]
        except OSError:
            return ""


def test_default_bind_is_loopback_only():
    with MetricsServer(0) as server:
        assert server.host == "127.0.0.1" and server._httpd.server_address[0] == "127.0.0.1"
        assert scrape(server.url)[0] == 200
        other = _other_address()
        if other and not other.startswith("127."):
            with pytest.raises(OSError):
                socket.create_connection((other, server.port), timeout=1).close()
    sink = make_sink(f"metrics:{free_port()}")
    assert sink.host == "127.0.0.1"


def test_basic_auth_refuses_scrapes_without_the_credentials(monkeypatch):
    port = free_port()
    sink = make_sink(f"prometheus://scraper:s3cret@127.0.0.1:{port}")
    with sink:
        sink.write(None, Result(source_id="cam0", frame_index=1, timestamp=1.0))
        url = f"http://127.0.0.1:{port}/metrics"
        assert scrape(url)[0] == 401
        assert scrape(url, ("scraper", "wrong"))[0] == 401
        status, body = scrape(url, ("scraper", "s3cret"))
        assert status == 200 and 'edgesdk_frames_total{source="cam0"} 1.0' in body
    monkeypatch.setenv("EDGESDK_METRICS_PASSWORD", "fromenv")
    with make_sink(f"prometheus://scraper@127.0.0.1:{port}"):
        assert scrape(f"http://127.0.0.1:{port}/metrics", ("scraper", "fromenv"))[0] == 200
    monkeypatch.delenv("EDGESDK_METRICS_PASSWORD")
    with pytest.raises(SinkError, match="needs a password"):
        make_sink(f"prometheus://scraper@127.0.0.1:{port}")
