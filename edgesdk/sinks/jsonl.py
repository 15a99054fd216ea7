"""`JsonlSink`: one JSON line per result (``result.to_dict()``), flushed as it comes.

JSONL output is usually followed live (``tail -f``, log shippers), so it is written to
the final path directly rather than to a temporary file renamed at the end. Each line
goes out in a single ``write(2)`` on an ``O_APPEND`` descriptor with no user-space
buffer: a reader never sees half a line (short of a crash in the middle of that one
system call), and every result is in the file as soon as `write` returns.

`open()` only checks that the file can be written; the file is created (or emptied) at the
first result, or at `close()`. A run that fails before it produced anything (a source that
cannot be opened, a model that does not load) calls `abort()`: the file a previous run left
there keeps its results and no empty file appears.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

from ..errors import SinkError
from ..results import Frame, Result
from .base import Sink, encode_result


class JsonlSink(Sink):
    """Append results as JSON lines to ``path``.

    Args:
        path: output file; missing parent folders are created.
        append: keep what the file holds (default: start it empty).
        fsync: also ``fsync`` at close (survives a power cut; costs a little at the end).
    """

    def __init__(self, path: Union[str, Path], append: bool = False, fsync: bool = False) -> None:
        super().__init__(str(path))
        self.path = Path(path)
        self.append = append
        self.fsync = fsync
        self._fd: Optional[int] = None

    def _open_impl(self) -> None:
        problem = _unwritable(self.path)
        if problem:
            raise SinkError(f"cannot open JSONL output {str(self.path)!r}: {problem}; "
                            "pass a writable file path (e.g. out/results.jsonl)")

    def _create(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self.append else os.O_TRUNC)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise SinkError(f"cannot open JSONL output {str(self.path)!r}: {e.strerror or e}; "
                            "pass a writable file path (e.g. out/results.jsonl)") from e
        return self._fd

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        data = (encode_result(result) + "\n").encode("utf-8")
        if self._fd is None:
            self._create()
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:  # a regular file takes it in one call; loop for pipes and signals
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            raise SinkError(f"cannot write to JSONL output {str(self.path)!r}: {e.strerror or e}") from e

    def _abort_impl(self) -> None:
        if self._fd is not None:  # results already out stay (readers may have seen them)
            self._close_impl()

    def _close_impl(self) -> None:
        if self._fd is None:
            self._create()  # a finished run with no results leaves an empty file, not an old one
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.fsync:
                os.fsync(fd)
        except OSError as e:
            raise SinkError(f"cannot sync JSONL output {str(self.path)!r}: {e.strerror or e}") from e
        finally:
            os.close(fd)


def _unwritable(path: Path) -> str:
    """Why `path` could not be created or written ("" if it can), without touching anything."""
    if path.is_dir():
        return "it is a folder"
    if path.exists():
        return "" if os.access(path, os.W_OK) else "the file is not writable by this user"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{str(parent)!r} is not a folder"
    return "" if os.access(parent, os.W_OK | os.X_OK) else f"the folder {str(parent)!r} is not writable by this user"
