"""Reading a YAML (or JSON: JSON is YAML) file that a person wrote: one `ConfigError` line
naming the file and, for a syntax error, the line and column, never a parser traceback."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Type, Union

from .errors import ConfigError, EdgeSDKError


def read_yaml(path: Union[str, Path], what: str, error: Type[EdgeSDKError] = ConfigError) -> Any:
    """The parsed content of `path`. `what` names the file in errors ("the stream spec",
    "deployment spec"): ``cannot read the stream spec X: No such file or directory`` or
    ``the stream spec X is not valid YAML/JSON (line 2, column 10): ...; fix the file and
    run again``, raised as `error` (a device profile's: ProfileError, its own exit code)."""
    import yaml  # only callers that read files need it

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {p} is not UTF-8 text (byte {exc.start}); save it as UTF-8 and run again") \
            from None
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{what} {p} is not valid YAML/JSON{where}: {problem}; fix the file and run again") \
            from None
