"""JSON read from a package or an install root, with its size and nesting bounded first.

`json.loads` recurses once per nesting level: 200,000 `[` end in a RecursionError traceback
instead of a refusal. The depth is measured here in one linear pass (strings removed by a
regular expression, then a running count of brackets), before the parser sees the text.
"""
from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Union

from ..errors import PackageError

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN, _CLOSE = frozenset(b"[{"), frozenset(b"]}")
_NOT_BRACKET = bytes(b for b in range(256) if b not in _OPEN | _CLOSE)


def nesting_depth(data: bytes) -> int:
    """The deepest nesting of [ and { outside strings (an upper bound for malformed text)."""
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    return max(accumulate(1 if b in _OPEN else -1 for b in brackets), default=0)


def loads_bounded(data: Union[bytes, str], what: str, max_bytes: int = 4 << 20, max_depth: int = 16) -> Any:
    """Parse JSON of at most `max_bytes` and `max_depth` levels; PackageError says what is wrong."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise PackageError(f"{what} is larger than {max_bytes} bytes; refusing it")
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise PackageError(f"{what} nests deeper than {max_depth} levels ({depth}); refusing it")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise PackageError(f"{what} is not valid JSON: {str(exc)[:200]}") from exc
