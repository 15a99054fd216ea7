"""A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on a free loopback
port, filesystem storage in the test's folder, optionally TLS and htpasswd basic auth.

    with DockerRegistry(tmp_path / "reg") as reg:              # plain HTTP
        reg.host                                               # "127.0.0.1:PORT"
    DockerRegistry(folder, tls=ca.server(), users={"ci": "pw"}) # https + basic auth

`find_registry()` is None without the package (tools/install_system_deps.sh installs it); basic
auth needs `htpasswd` (apache2-utils) to write the bcrypt password file.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from mqttbroker import free_port, port_open


def find_registry() -> Optional[str]:
    return shutil.which("docker-registry")


def find_htpasswd() -> Optional[str]:
    return shutil.which("htpasswd")


class DockerRegistry:
    def __init__(self, folder: Path, tls: Any = None, users: Optional[dict] = None, port: Optional[int] = None) -> None:
        exe = find_registry()
        if exe is None:
            raise RuntimeError("docker-registry is not installed (run tools/install_system_deps.sh)")
        self.exe, self.folder, self.port = exe, Path(folder), port or free_port()
        self.storage = self.folder / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        lines = ["version: 0.1", "log:", "  level: warn", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: 127.0.0.1:{self.port}", "  secret: edgesdk-test-secret"]
        if tls is not None:
            lines += ["  tls:", f"    certificate: {tls.cert}", f"    key: {tls.key}"]
        if users:
            lines += ["auth:", "  htpasswd:", "    realm: edgesdk-test", f"    path: {self._htpasswd(users)}"]
        self.config = self.folder / "config.yml"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = self.folder / "registry.log"
        self.proc: Optional[subprocess.Popen] = None

    def _htpasswd(self, users: dict) -> Path:
        tool = find_htpasswd()
        if tool is None:
            raise RuntimeError("htpasswd is not installed (apache2-utils; tools/install_system_deps.sh)")
        path = self.folder / "htpasswd"
        for i, (user, password) in enumerate(users.items()):
            subprocess.run([tool, "-bB" + ("c" if i == 0 else ""), str(path), user, password], check=True,
                           capture_output=True)
        return path

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> "DockerRegistry":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.exe, "serve", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not listen on {self.host} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def blob_file(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob (to corrupt it in a test)."""
        hexd = digest.split(":")[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"

    def __enter__(self) -> "DockerRegistry":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
