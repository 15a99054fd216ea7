"""The variants worth building for a profile: its backend preferences (formats and precisions) in
order, filtered by what is installed and what EdgeSDK's converters produce (the backend records)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from runtimes.registry import record

from ..errors import ConversionError


@dataclass
class Candidate:
    backend: str
    precision: str      # what VariantBuilder.build takes (incl. "bf16", "int8+bf16")
    device: str
    layout: str
    rank: int           # position in the profile's preference order
    listed: bool = True


def candidates(profile: Any, precision: str, backends: Optional[Sequence[str]], measure: bool,
               available: Sequence[str], tflite_ok: bool) -> tuple[list[Candidate], list[str]]:
    """Variants to build, in the profile's preference order, and notes on what was skipped."""
    notes: list[str] = []
    out: list[Candidate] = []
    seen: set[tuple[str, str]] = set()

    def add(c: Candidate) -> None:
        if (c.backend, c.precision) not in seen:
            seen.add((c.backend, c.precision))
            out.append(c)

    for rank, pref in enumerate(profile.backends):
        if backends and pref.backend not in backends:
            continue
        rec = record(pref.backend)
        if rec.engine and pref.backend not in available and measure:
            notes.append(f"{pref.backend} is not installed here: its variants were not built")
            continue
        if rec.needs == "onnx2tf" and not tflite_ok:
            notes.append(f"{pref.backend}: the ONNX -> TFLite converter (onnx2tf) is not installed (make tflite)")
            continue
        wanted = list(pref.precisions) if precision == "auto" else [p for p in pref.precisions if p == precision]
        for p in wanted:
            if p not in rec.precisions:
                notes.append(f"{pref.backend} {p}: no converter for it")
                continue
            add(Candidate(pref.backend, p, pref.device, pref.layout, rank))
        for extra, needs in rec.measured_extras if measure else ():
            if all(p in wanted for p in needs):
                add(Candidate(pref.backend, extra, pref.device, pref.layout, rank))
    if precision != "auto" and not out:
        _unlisted(profile, precision, backends, tflite_ok, add, notes)
    if not out:
        raise ConversionError(
            f"profile {profile.name} offers nothing this converter can build"
            + (f" with precision {precision}" if precision != "auto" else "")
            + (f" on backends {', '.join(backends)}" if backends else "")
            + (": " + "; ".join(notes) if notes else ""))
    return out, notes


def _unlisted(profile: Any, precision: str, backends: Optional[Sequence[str]], tflite_ok: bool,
              add: Any, notes: list[str]) -> None:
    """The profile does not list the asked precision: build it with the first backend that can."""
    for rank, pref in enumerate(profile.backends):
        rec = record(pref.backend)
        if (not backends or pref.backend in backends) and precision in rec.precisions:
            if rec.needs == "onnx2tf" and not tflite_ok:
                continue
            add(Candidate(pref.backend, precision, pref.device, pref.layout, rank, listed=False))
            notes.append(f"the profile lists no {precision} variant; built {pref.backend} {precision} as asked")
            return
