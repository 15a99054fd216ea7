"""Byte counts as people read them, one way everywhere (pass records, convert's size notes)."""
from __future__ import annotations


def show_bytes(n: int) -> str:
    """'812 B', '79.9 KB', '102.2 MB', '1.50 GB' (powers of 1000, as file managers show sizes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GB" else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
