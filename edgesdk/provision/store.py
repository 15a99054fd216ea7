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
import re
import shutil
import stat
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

from ..errors import PackageError
from .fsutil import atomic_write, fsync_dir, remove_tree, switch_symlink
from .jsonsafe import loads_bounded
from .package import MANIFEST_NAME, PackageManifest

PathLike = Union[str, Path]
MARKER = ".edgesdk-root"
RELEASE_STATE = "release.json"


ENTRIES = {MARKER: "file", ".lock": "file", "pending.json": "file", "history.jsonl": "file",
           "releases": "dir", "staging": "dir", "downloads": "dir", "current": "link", "previous": "link"}
_TEMP = re.compile(r"^\.(?:current|previous|pending\.json|\.edgesdk-root)\.tmp-\d+$")  # atomic_write: .NAME.tmp-PID
_INIT_MADE = {".lock", "releases", "staging", "downloads"}
RELEASE_NAME = re.compile(r"^[0-9][0-9A-Za-z.+-]*-[0-9a-f]{12}(?:~[0-9]+)?$")
_KIND_WORDS = {"file": "regular file", "dir": "directory", "link": "symlink"}
_STATE_MAX = 1 << 20


def _kind(st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return "link"
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    return "file" if stat.S_ISREG(st.st_mode) else "special file"


class Store:
    def __init__(self, root: PathLike) -> None:
        self.root = Path(root).absolute()
        self.releases = self.root / "releases"
        self.staging = self.root / "staging"
        self.downloads = self.root / "downloads"
        self.pending_path = self.root / "pending.json"
        self.history_path = self.root / "history.jsonl"
        self.lock_path = self.root / ".lock"
        #: set by `lock()` when the root cannot be written (read-only mount, or not ours to write)
        self.read_only = False

    # ------------------------------------------------------------------ layout
    def _root_fd(self) -> int:
        """The root directory, opened without following a symlink planted in its place."""
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise PackageError(f"--root {self.root} does not exist") from exc
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PackageError(f"--root {self.root} is a symlink or not a directory; pass the real directory "
                                   "(EdgeSDK does not follow links in an install root)") from exc
            raise

    def prepare(self) -> None:
        """Create the root directory if needed; refuse a foreign one (before anything is written in it)."""
        if self.root.is_symlink() or (self.root.exists() and not self.root.is_dir()):
            raise PackageError(f"--root {self.root} exists and is not a directory (or is a symlink); pass a real "
                               "directory")
        if not self.root.exists():
            with private_umask():
                self.root.mkdir(mode=0o755, parents=True, exist_ok=True)  # another installer may win the race
        self._refuse_foreign()

    def _refuse_foreign(self) -> None:
        if self.is_store():
            return
        # what `init_locked` creates before the marker: another installer may be half way through it
        extra = [n for n in os.listdir(self.root) if n not in _INIT_MADE and not _TEMP.match(n)]
        if extra:
            raise PackageError(f"--root {self.root} is not empty and is not an EdgeSDK install root; "
                               "choose an empty or new directory")

    def init(self) -> None:
        """Make the root an EdgeSDK store (takes the lock; `install` calls `init_locked` under its own)."""
        self.prepare()
        with self.lock():
            self.init_locked()

    def init_locked(self) -> None:
        """Create the layout (lock held): the check for a foreign root and the creation are one step."""
        self._refuse_foreign()
        fd = self._root_fd()
        try:
            for d in ("releases", "staging", "downloads"):
                try:
                    os.mkdir(d, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
        finally:
            os.close(fd)
        if not self.is_store():
            atomic_write(self.root / MARKER, "EdgeSDK install root; managed by `edgesdk install`\n")
        self.check_layout()

    def is_store(self) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.root / MARKER).st_mode) and not self.root.is_symlink()
        except OSError:
            return False

    def check_layout(self) -> None:
        """Refuse a root whose entries are not what EdgeSDK made: wrong types, links where files or
        directories belong, `current` pointing anywhere but releases/, entries others may write."""
        self._check_ancestors()
        fd = self._root_fd()
        try:
            self._check_owner(os.fstat(fd), str(self.root))
            for name in sorted(os.listdir(fd)):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                where = str(self.root / name)
                want = ENTRIES.get(name, "file" if _TEMP.match(name) else None)
                if want is None:
                    continue  # not ours: never opened, followed or removed (uninstall leaves it)
                if _kind(st) != want and not (_TEMP.match(name) and _kind(st) == "link"):
                    raise PackageError(f"{where} is a {_KIND_WORDS.get(_kind(st), _kind(st))}, not the "
                                       f"{_KIND_WORDS[want]} EdgeSDK keeps there: something replaced it. Move it "
                                       "aside (and find out who did), then run the command again")
                self._check_owner(st, where)
                if want == "link" and not _TEMP.match(name):
                    self._link_target(name, fd)
            self._check_releases(fd)
        finally:
            os.close(fd)

    def _check_releases(self, fd: int) -> None:
        try:
            rfd = os.open("releases", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except FileNotFoundError:
            return
        try:
            for name in os.listdir(rfd):
                st = os.stat(name, dir_fd=rfd, follow_symlinks=False)
                where = str(self.releases / name)
                if not stat.S_ISDIR(st.st_mode) or not RELEASE_NAME.match(name):
                    kind = _KIND_WORDS.get(_kind(st), _kind(st))
                    raise PackageError(f"{where} is not a release EdgeSDK made (a {kind} named {name!r}); move "
                                       "it out of releases/ and run again")
                self._check_owner(st, where)
        finally:
            os.close(rfd)

    def _check_ancestors(self) -> None:
        """Whoever may rename entries in a folder above the root can swap the root itself: each one must
        belong to this user or root and be writable by no one else (sticky folders like /tmp excepted)."""
        for folder in self.root.parents:
            st = os.stat(folder)
            sticky = bool(st.st_mode & stat.S_ISVTX)
            if st.st_uid not in (os.geteuid(), 0) or (st.st_mode & 0o022 and not sticky):
                raise PackageError(f"{folder}, a folder above the install root {self.root}, is owned by uid "
                                   f"{st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: another user could swap "
                                   f"the root. Make it belong to root (or uid {os.geteuid()}) and `chmod go-w` it, "
                                   "or choose a root elsewhere")

    @staticmethod
    def _check_owner(st: os.stat_result, where: str) -> None:
        """Only this user (or root) may own and write what the installer trusts; the service user
        in particular must not, or it could plant links that root's next install writes through."""
        if st.st_uid not in (os.geteuid(), 0):
            raise PackageError(f"{where} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()}) or root; "
                               "an install root must be written only by its installer. `chown -R` it to the "
                               "installing user (the service needs only read access)")
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o022:
            raise PackageError(f"{where} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
                               f"run `chmod go-w {where}` (the service needs only read access)")
        if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
            raise PackageError(f"{where} has {st.st_nlink} hard links: it may be another file of the system "
                               "linked in. Remove it (EdgeSDK makes it again) and run the command again")

    def _link_target(self, which: str, fd: Optional[int] = None) -> Optional[str]:
        """The release `current`/`previous` names, checked to be exactly `releases/<release name>`."""
        try:
            target = os.readlink(which, dir_fd=fd) if fd is not None else os.readlink(self.root / which)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not a symlink
                raise PackageError(f"{self.root / which} is not the symlink EdgeSDK keeps there: something "
                                   "replaced it. Move it aside, then run the command again") from exc
            raise
        head, _, name = target.partition("/")
        if head != "releases" or not RELEASE_NAME.match(name):
            raise PackageError(f"{self.root / which} points to {target!r}, not to a release under releases/: it was "
                               "changed by hand or planted. Remove it (`edgesdk rollback` or a new install sets it "
                               "again)")
        return name

    def release_path(self, name: str) -> Path:
        return self.releases / name

    def link(self, which: str) -> Optional[str]:
        """The release name `current`/`previous` points to, or None (PackageError if not EdgeSDK's link)."""
        return self._link_target(which)

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
            return PackageManifest.from_bytes(self._read_small(path, 4 << 20), str(path))
        except OSError as exc:
            raise PackageError(f"release {name}: cannot read {MANIFEST_NAME}: {exc.strerror}") from exc

    def _read_small(self, path: Path, limit: int = _STATE_MAX) -> bytes:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise PackageError(f"{path} is not a regular file")
            return f.read(limit + 1)

    def _json_object(self, path: Path) -> Optional[dict]:
        """A small JSON object file: None when absent, {} when unreadable or not an object."""
        try:
            value = loads_bounded(self._read_small(path), str(path), _STATE_MAX)
        except FileNotFoundError:
            return None
        except (OSError, PackageError):
            return {}
        return value if isinstance(value, dict) else {}

    def state(self, name: str) -> dict:
        return self._json_object(self.release_path(name) / RELEASE_STATE) or {}

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
        """The trial on record; {} when the marker is unreadable or malformed (treated as "undo")."""
        record = self._json_object(self.pending_path)
        if not record:
            return record
        names_ok = all(record.get(k) is None or (isinstance(record[k], str) and RELEASE_NAME.match(record[k]))
                       for k in ("restore_current", "restore_previous"))
        release = record.get("release")
        if not (isinstance(release, str) and RELEASE_NAME.match(release)) or not names_ok \
                or not isinstance(record.get("reason", ""), str):
            return {}
        return record

    def set_pending(self, record: Optional[dict]) -> None:
        if record is None:
            if self.pending_path.exists() or self.pending_path.is_symlink():
                self.pending_path.unlink()
                fsync_dir(self.root)
        else:
            atomic_write(self.pending_path, json.dumps(record, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ history
    def log(self, event: str, **details: object) -> None:
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "event": event, **details}) + "\n"
        fd = os.open(self.history_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PackageError(f"{self.history_path} is not a regular file; move it aside")
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def history(self, last: int = 10) -> list[dict]:
        try:
            lines = self._read_small(self.history_path, 8 << 20)[-(64 << 10):].decode("utf-8", "replace").splitlines()
        except (OSError, PackageError):
            return []
        out = []
        for line in lines[-last:]:
            try:
                entry = loads_bounded(line, "history line", 1 << 16, 4)
            except PackageError:
                continue  # a line cut short by power loss
            if isinstance(entry, dict):
                out.append(entry)
        return out

    # ------------------------------------------------------------------ locking
    @contextmanager
    def lock(self, wait: bool = True, timeout: Optional[float] = None,
             on_wait: Optional[Callable[[str], None]] = None) -> Iterator[bool]:
        """Hold the root's lock (serializes installs). Yields True once held; with wait=False,
        yields False at once when another process holds it. `on_wait` hears the holder's pid."""
        fd = -1
        umask = os.umask(0)
        os.umask(umask | 0o022)  # what the lock holder creates must pass check_layout (see private_umask)
        try:
            fd = self._open_lock()
            deadline = None if timeout is None else time.monotonic() + timeout
            told = False
            while fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if self._lock_is_current(fd):
                        break
                    # an uninstall removed the file we waited on: lock the one that exists now
                    os.close(fd)
                    fd = -1
                    fd = self._open_lock()
                    continue
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
            if not self.read_only:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.check_layout()  # with the lock held, so no EdgeSDK command changes it meanwhile
            yield True
        finally:
            os.umask(umask)
            if fd >= 0:
                os.close(fd)  # closing releases the flock; the kernel releases it for a killed process too

    def _lock_is_current(self, fd: int) -> bool:
        try:
            st = os.stat(self.lock_path, follow_symlinks=False)
        except FileNotFoundError:
            return self.read_only  # nothing to lock on a read-only root
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def _open_lock(self) -> int:
        """The lock file, never through a symlink or a fifo; read-only when the root cannot be written
        (flock works on a read-only descriptor), -1 when there is none and none can be made."""
        flags = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        self.read_only = _read_only_mount(self.root)
        fd = -1
        try:
            if not self.read_only:
                fd = os.open(self.lock_path, flags | os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise self._lock_error(exc) from exc
            self.read_only = True
        if fd < 0:
            try:
                fd = os.open(self.lock_path, flags | os.O_RDONLY)
            except FileNotFoundError:
                return -1
            except OSError as exc:
                raise self._lock_error(exc) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise PackageError(f"{self.lock_path} is not a regular file; move it aside and run again")
        return fd

    def _lock_error(self, exc: OSError) -> PackageError:
        if exc.errno == errno.ELOOP:
            return PackageError(f"{self.lock_path} is a symlink; EdgeSDK does not follow links in an install root. "
                                "Remove it (and find out who planted it), then run again")
        return PackageError(f"cannot open {self.lock_path}: {exc.strerror}")

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



@contextmanager
def private_umask() -> Iterator[None]:
    """Add 022 to the umask: nothing EdgeSDK creates in a root may be group- or world-writable."""
    umask = os.umask(0)
    os.umask(umask | 0o022)
    try:
        yield
    finally:
        os.umask(umask)


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY) or not os.access(path, os.W_OK)
    except OSError:
        return False


_ADVICE = {
    errno.ENOSPC: "the file system is full: free space there (or use a larger one) and run the command again",
    errno.EDQUOT: "the disk quota is used up: free space and run the command again",
    errno.EROFS: "the file system is mounted read-only: remount it read-write to change releases "
                 "(`edgesdk status` still works read-only)",
    errno.EACCES: "permission denied: run the command as the user that owns the install root",
    errno.EPERM: "operation not permitted: run the command as the user that owns the install root",
    errno.ENOTDIR: "a path component is not a directory: something replaced part of the root; move it aside",
    errno.EISDIR: "a directory stands where a file belongs: something replaced part of the root; move it aside",
    errno.ELOOP: "a symlink stands where EdgeSDK keeps a file: remove it (and find out who planted it)",
}


@contextmanager
def fs_errors(root: Optional[PathLike], doing: str) -> Iterator[None]:
    """Turn a file-system fault (full disk, read-only mount, a replaced entry) into one paragraph
    (`root`: the install root the command works on, or None for commands outside one)."""
    try:
        yield
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, "error")
        where = f" at {exc.filename}" if exc.filename else ""
        advice = _ADVICE.get(exc.errno or 0, "fix the file system problem and run the command again")
        tail = ("" if root is None else " The release the device runs was not replaced by a partial one: an "
                "interrupted step is finished or undone by the next command that takes the lock")
        raise PackageError(f"{doing}{'' if root is None else f' in {root}'} failed: {exc.strerror or exc} ({name})"
                           f"{where}; {advice}.{tail}") from exc
