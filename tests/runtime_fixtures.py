"""Fixtures shared by the runtime tests (imported by name into each test module)."""
from __future__ import annotations

import pytest

from runtimes import base


@pytest.fixture
def fresh_warnings(monkeypatch):
    """warn_once remembers messages per process; give each test its own memory."""
    monkeypatch.setattr(base, "_warned", set())


@pytest.fixture(scope="module")
def cls_crops():
    """Real text-line crops as the PP-OCR classifier takes them: upright and turned 180 degrees."""
    from textcrops import page_crops, to_cls_input

    gray = page_crops()
    return {"upright": to_cls_input(gray), "flipped": to_cls_input(gray, rotate180=True)}
