"""A pipeline described as data (a provisioning spec's ``stream`` section, a JSON file):
what `Pipeline.from_spec` reads. Sources are strings (``"cam0=0"``) or tables
``{"id": ..., "uri": ..., "weight": ...}``; everything else is a `Pipeline` keyword.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..yamlfile import read_yaml
from .sources.base import Source

SOURCE_KEYS = {"id", "uri", "weight"}


def _source(entry: Any, i: int, weights: dict[str, float]) -> Any:
    if isinstance(entry, (str, int, Source)):
        return entry  # a built Source (Python API) is taken as it is
    if not isinstance(entry, dict):
        raise ConfigError(f"stream spec: sources[{i}] must be a string or a table with uri (and id, weight), "
                          f"got {type(entry).__name__}")
    extra = set(entry) - SOURCE_KEYS
    if extra or "uri" not in entry:
        raise ConfigError(f"stream spec: sources[{i}] needs 'uri' and may have only {sorted(SOURCE_KEYS)}; "
                          f"got {sorted(entry)}")
    uri = str(entry["uri"])
    if "id" in entry:
        uri = f"{entry['id']}={uri}"
        if "weight" in entry:
            weights[str(entry["id"])] = entry["weight"]
    elif "weight" in entry:
        raise ConfigError(f"stream spec: sources[{i}] has a weight but no id; name it so the weight can apply")
    return uri


def parse_spec(spec: dict[str, Any]) -> tuple[Any, list[Any], list[Any], dict[str, Any]]:
    """(model, sources, sinks, keyword arguments) from a stream description."""
    if not isinstance(spec, dict):
        raise ConfigError(f"stream spec must be a table (dict), got {type(spec).__name__}")
    rest = dict(spec)
    if "model" not in rest:
        raise ConfigError("stream spec: 'model' (a bundle directory or model file) is missing")
    model = rest.pop("model")
    raw_sources = rest.pop("sources", None)
    if not raw_sources or not isinstance(raw_sources, list):
        raise ConfigError("stream spec: 'sources' must be a non-empty list")
    weights: dict[str, float] = dict(rest.pop("weights", {}) or {})
    sources = [_source(e, i, weights) for i, e in enumerate(raw_sources)]
    sinks = list(rest.pop("sinks", []) or [])
    _check_keys(rest)
    if weights:
        rest["weights"] = weights
    return model, sources, sinks, rest


def known_keys() -> set[str]:
    """Every key a stream spec may carry beyond model/sources/sinks/weights: the keyword
    options of `Pipeline`, `Predictor` and `Runtime`, and the engine options some runtime reads."""
    import inspect

    from runtimes.base import Runtime
    from runtimes.registry import ENGINE_OPTIONS

    from ..predictor import Predictor
    from .pipeline import Pipeline

    keys = set(ENGINE_OPTIONS)
    for fn in (Pipeline.__init__, Predictor.__init__, Runtime.__init__):
        keys |= {name for name, p in inspect.signature(fn).parameters.items()
                 if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)}
    return keys - {"sources", "sinks", "model", "model_path", "bundle_or_path", "on_result", "observers", "weights"}


def _check_keys(rest: dict[str, Any]) -> None:
    """A misspelt key would otherwise reach the engine as an option nobody reads, silently."""
    import difflib

    known = known_keys()
    for key in rest:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"stream spec: unknown key {key!r}{hint}; known keys: model, sources, sinks, weights, "
                              f"{', '.join(sorted(known))}")


def _near(base: Path, text: str) -> str:
    """A relative file path taken relative to the spec file; URLs, camera indices, devices as they are."""
    if "://" in text or text.isdigit() or text.startswith("/") or text.startswith("~"):
        return text
    return str(base / text)


def load_spec_file(path: Any) -> dict[str, Any]:
    """A stream description from a YAML or JSON file (JSON is YAML). Relative model and
    then paths in it are relative to the file, not to the directory
    the service happens to start in; sources and sinks are read as written, as `--source`/`--sink`
    take them (a provisioned spec carries them verbatim). `ConfigError` naming the file when it
    cannot be read."""
    p = Path(path)
    data = read_yaml(p, "the stream spec")
    if not isinstance(data, dict):
        raise ConfigError(f"stream spec {p} must be a table with model, sources (and sinks, batching...), "
                          f"got {type(data).__name__}")
    model = data.get("model")
    base = p.parent.resolve()
    if isinstance(model, str) and not Path(model).is_absolute():
        data["model"] = str((p.parent / model).resolve())
    if isinstance(data.get("then"), list):
        data["then"] = [_near(base, t) if isinstance(t, str) else t for t in data["then"]]
    return data
