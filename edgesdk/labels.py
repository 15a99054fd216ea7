"""Class names a user states with --labels: one reader for convert (both input routes) and Predictor."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Type, Union

from .errors import EdgeSDKError

LabelsArg = Union[str, Path, Sequence[str]]


def read_labels(labels: LabelsArg, error: Type[EdgeSDKError]) -> list[str]:
    """--labels as given: a list of names, or a file with one class name per line (blank lines ignored)."""
    if not isinstance(labels, (str, Path)):
        return [str(v) for v in labels]
    path = Path(labels)
    if not path.is_file():
        raise error(f"--labels {labels}: no such file (expected one class name per line)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
