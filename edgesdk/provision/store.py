"""The release store on a device: what lives under `--root`.

    ROOT/
      .edgesdk-root          marks the directory as ours (uninstall refuses other directories)
      .lock                  fcntl.flock: one install/rollback/uninstall at a time
      current -> releases/1.2.0-3f2a9c1b0d4e     the release the service runs
      previous -> releases/1.1.0-...             the rollback target
      releases/<version>-<id>/                   complete releases only (renamed in from staging)
          edgepkg.json  edgepkg.sig  bundle/  health/   (from the package)
          release.json                           install time, signer, package sha256, health
      staging/               partial extractions and trash; emptied by the next locked command
      downloads/             fetched packages (with .part files while resuming)
      pending.json           present only while a switch is on trial (see install.py)
      history.jsonl          one line per install/rollback/uninstall with the reason

Invariants: a directory under releases/ is complete (it is renamed there after extraction
and fsync); `current` and `previous` change only by an atomic rename of a symlink; nothing
is deleted in place (it is first renamed into staging/).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from ..errors import PackageError
from .fsutil import atomic_write, fsync_dir, remove_tree, switch_symlink
from .package import MANIFEST_NAME, PackageManifest

PathLike = Union[str, Path]
MARKER = ".edgesdk-root"
RELEASE_STATE = "release.json"


class Store:
    def __init__(self, root: PathLike) -> None:
        self.root = Path(root).absolute()
        self.releases = self.root / "releases"
        self.staging = self.root / "staging"
        self.downloads = self.root / "downloads"
        self.pending_path = self.root / "pending.json"
        self.history_path = self.root / "history.jsonl"
        self.lock_path = self.root / ".lock"

    # ------------------------------------------------------------------ layout
    def init(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise PackageError(f"--root {self.root} exists and is not a directory")
        if self.root.is_dir() and not (self.root / MARKER).exists() and any(self.root.iterdir()):
            raise PackageError(f"--root {self.root} is not empty and is not an EdgeSDK install root; "
                               "choose an empty or new directory")
        for d in (self.root, self.releases, self.staging, self.downloads):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.root / MARKER).exists():
            atomic_write(self.root / MARKER, "EdgeSDK install root; managed by `edgesdk install`\n")

    def is_store(self) -> bool:
        return (self.root / MARKER).is_file()

    def release_path(self, name: str) -> Path:
        return self.releases / name

    def link(self, which: str) -> Optional[str]:
        """The release name `current`/`previous` points to, or None."""
        p = self.root / which
        if not p.is_symlink():
            return None
        return Path(os.readlink(p)).name

    def set_link(self, which: str, release: Optional[str]) -> None:
        p = self.root / which
        if release is None:
            if p.is_symlink():
                p.unlink()
                fsync_dir(self.root)
            return
        switch_symlink(p, f"releases/{release}")

    def release_names(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if p.is_dir() and not p.is_symlink())

    def manifest(self, name: str) -> PackageManifest:
        path = self.release_path(name) / MANIFEST_NAME
        try:
            return PackageManifest.from_bytes(path.read_bytes(), str(path))
        except OSError as exc:
            raise PackageError(f"release {name}: cannot read {MANIFEST_NAME}: {exc.strerror}") from exc

    def state(self, name: str) -> dict:
        try:
            return json.loads((self.release_path(name) / RELEASE_STATE).read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, release: Union[str, Path], state: dict) -> None:
        """Write a release's release.json (`release`: a name under releases/, or a staging path)."""
        folder = release if isinstance(release, Path) else self.release_path(release)
        atomic_write(folder / RELEASE_STATE, json.dumps(state, indent=2, sort_keys=True) + "\n")

    def remove_release(self, name: str) -> None:
        remove_tree(self.release_path(name), self.staging)

    def new_staging(self, label: str) -> Path:
        return self.staging / f"{label}.{os.getpid()}.{os.urandom(4).hex()}"

    # ------------------------------------------------------------------ pending switch
    def pending(self) -> Optional[dict]:
        try:
            return json.loads(self.pending_path.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # atomic_write never leaves half a file; treat garbage as "undo"

    def set_pending(self, record: Optional[dict]) -> None:
        if record is None:
            if self.pending_path.exists():
                self.pending_path.unlink()
                fsync_dir(self.root)
        else:
            atomic_write(self.pending_path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ history
    def log(self, event: str, **details: object) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **details}) + "\n"
        fd = os.open(self.history_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self, last: int = 10) -> list[dict]:
        try:
            lines = self.history_path.read_text().splitlines()
        except OSError:
            return []
        out = []
        for line in lines[-last:]:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by power loss
        return out

    # ------------------------------------------------------------------ locking
    @contextmanager
    def lock(self, wait: bool = True, timeout: Optional[float] = None,
             on_wait: Optional[Callable[[str], None]] = None) -> Iterator[bool]:
        """Hold the root's lock (serializes installs). Yields True once held; with wait=False,
        yields False at once when another process holds it. `on_wait` hears the holder's pid."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                if not wait:
                    yield False
                    return
                if not told and on_wait is not None:
                    on_wait(self._holder(fd))
                    told = True
                if deadline is not None and time.monotonic() > deadline:
                    raise PackageError(f"another EdgeSDK command (pid {self._holder(fd)}) holds {self.lock_path}; "
                                       f"gave up after {timeout:g} s")
                time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield True
        finally:
            os.close(fd)  # closing releases the flock; the kernel releases it for a killed process too

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            return os.pread(fd, 32, 0).decode().strip() or "?"
        except OSError:
            return "?"

    # ------------------------------------------------------------------ cleanup
    def clean_staging(self) -> list[str]:
        """Remove what an interrupted run left: partial extractions, trash, temp symlinks. Lock held."""
        removed = []
        if self.staging.is_dir():
            for p in sorted(self.staging.iterdir()):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        for p in self.root.glob(".*.tmp-*"):
            if p.is_symlink() or p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p.name)
        for p in self.downloads.glob("*.tmp-*") if self.downloads.is_dir() else ():
            p.unlink(missing_ok=True)
        if removed:
            fsync_dir(self.root)
        return removed

