"""Durable file-system steps: fsync files and directories, atomic writes and symlink switches.

A rename is atomic but not durable until the directory holding it is fsynced; a file's data
is not durable until the file is fsynced. Power loss between those steps is what these
helpers guard against.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]


def fsync_dir(path: PathLike) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: PathLike) -> None:
    """fsync every regular file and directory under `root` (links are not followed)."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def atomic_write(path: PathLike, data: Union[bytes, str], mode: int = 0o644) -> None:
    """Write a file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is masked by the umask; a key must be exactly 0600
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def switch_symlink(link: PathLike, target: str) -> None:
    """Point `link` at `target` atomically: a new symlink beside it, renamed over it."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def remove_tree(path: PathLike, trash_dir: PathLike) -> None:
    """Delete a directory so that no half-deleted copy is ever visible under its name.

    It is first renamed into `trash_dir` (atomic), then removed; a crash during the removal
    leaves debris only in `trash_dir`, which the next run clears.
    """
    path, trash_dir = Path(path), Path(trash_dir)
    if not path.exists() and not path.is_symlink():
        return
    trash_dir.mkdir(parents=True, exist_ok=True)
    victim = trash_dir / f"trash-{path.name}-{os.getpid()}-{os.urandom(3).hex()}"
    os.replace(path, victim)
    fsync_dir(path.parent)
    shutil.rmtree(victim, ignore_errors=True)
