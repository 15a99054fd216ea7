"""Semantic versions (semver.org 2.0), compared properly: 1.10.0 > 1.9.0, 1.0.0-rc.1 < 1.0.0."""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from ..errors import PackageError

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")


@functools.total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()
    build: str = ""

    @classmethod
    def parse(cls, text: str) -> "Version":
        m = _SEMVER.match(str(text).strip())
        if not m:
            raise PackageError(
                f"version {text!r} is not a semantic version; expected MAJOR.MINOR.PATCH with an optional "
                "-prerelease and +build, e.g. 1.2.0 or 1.3.0-rc.1")
        pre = tuple(m.group(4).split(".")) if m.group(4) else ()
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)), pre, m.group(5) or "")

    def _key(self) -> tuple:
        # A release ranks above its pre-releases; numeric identifiers rank below alphanumeric ones
        # and compare as numbers; a longer pre-release wins when the shared part is equal.
        pre = (1,) if not self.pre else (0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre))
        return (self.major, self.minor, self.patch, pre)

    def __eq__(self, other: object) -> bool:  # build metadata does not take part in precedence
        return isinstance(other, Version) and self._key() == other._key()

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        s = f"{self.major}.{self.minor}.{self.patch}"
        if self.pre:
            s += "-" + ".".join(self.pre)
        return s + (f"+{self.build}" if self.build else "")
