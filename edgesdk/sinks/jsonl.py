"""`JsonlSink`: one JSON line per result (``result.to_dict()``), flushed as it comes.

JSONL output is usually followed live (``tail -f``, log shippers), so it is written to
the final path directly rather than to a temporary file renamed at the end. Each line
goes out in a single ``write(2)`` on an ``O_APPEND`` descriptor with no user-space
buffer: a reader never sees half a line (short of a crash in the middle of that one
system call), and every result is in the file as soon as `write` returns.
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
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if self.append else os.O_TRUNC)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as e:
            raise SinkError(f"cannot open JSONL output {str(self.path)!r}: {e.strerror or e}; "
                            "pass a writable file path (e.g. out/results.jsonl)") from e

    def _write_impl(self, frame: Optional[Frame], result: Result) -> None:
        data = (encode_result(result) + "\n").encode("utf-8")
        assert self._fd is not None
        try:
            view = memoryview(data)
            while view:  # a regular file takes it in one call; loop for pipes and signals
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            raise SinkError(f"cannot write to JSONL output {str(self.path)!r}: {e.strerror or e}") from e

    def _close_impl(self) -> None:
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
